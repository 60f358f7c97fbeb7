//! The `CreditAccount` aggregate: one user's credit balance and the holds placed on it by
//! videos in flight.
//!
//! It exists so that spending can never exceed what was granted or bought, even when many
//! videos are requested at once: a video first *reserves* its estimated cost, which stops
//! the amount being spent twice, and later *captures* what it really cost or *releases*
//! the hold. Settlement is idempotent per video because the sagas that drive it retry, and
//! purchases are idempotent per payment reference because payment webhooks are redelivered.
//! A refunded purchase gives back what is left of its credits (`purchases`).
//! The aggregate id is the owner's `UserId`; the account springs into existence with its
//! first event, so there is no "open account" command to forget.

use std::collections::BTreeMap;

use cqrs_es::event_sink::EventSink;
use cqrs_es::{Aggregate, DomainEvent};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::credits::Credits;
use crate::ids::VideoId;
use crate::services::Services;

mod purchases;

pub use purchases::{PaymentDetails, PaymentProvider, PurchaseRecord, Revocation};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CreditCommand {
    /// Free credits given by an admin or a promotion.
    Grant {
        amount: Credits,
        reason: String,
        granted_by: String,
    },
    /// The sign-up credits, once per account whenever it is asked (at registration or at
    /// email verification): an account that has them already is left alone.
    GrantSignup {
        amount: Credits,
    },
    /// Credits paid for; a repeat with the same reference and amount changes nothing.
    Purchase {
        amount: Credits,
        payment_reference: String,
        payment: Option<PaymentDetails>,
    },
    /// The purchase `payment_reference` was refunded up to `refunded` in all (smallest
    /// currency unit, cumulative as payment providers report it): its share of the credits
    /// not asked back yet is taken back as far as it is available.
    RevokePurchase {
        payment_reference: String,
        refunded: i64,
    },
    Reserve {
        video_id: VideoId,
        amount: Credits,
    },
    /// Charges `amount` of the video's reservation, at most all of it, and returns the rest
    /// to the balance.
    Capture {
        video_id: VideoId,
        amount: Credits,
    },
    Release {
        video_id: VideoId,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum CreditEvent {
    CreditsGranted {
        amount: Credits,
        reason: String,
        granted_by: String,
    },
    CreditsPurchased {
        amount: Credits,
        payment_reference: String,
        /// What was paid and through which checkout; absent on purchases recorded without
        /// (and on every one stored before it existed).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        payment: Option<PaymentDetails>,
    },
    /// A refund of a purchase took credits back. `requested` is the refund's share of the
    /// purchase's credits beyond what earlier refunds asked; `revoked` of it came off the
    /// balance (no more than was available) and `shortfall` = `requested` − `revoked` was
    /// already spent or reserved. `refunded` is the purchase's refunded total after it.
    CreditsRevoked {
        payment_reference: String,
        refunded: i64,
        requested: Credits,
        revoked: Credits,
        shortfall: Credits,
    },
    CreditsReserved {
        video_id: VideoId,
        amount: Credits,
    },
    /// `reserved` = `captured` + `released`, recorded in full so projections need no state.
    ReservationCaptured {
        video_id: VideoId,
        reserved: Credits,
        captured: Credits,
        released: Credits,
    },
    ReservationReleased {
        video_id: VideoId,
        amount: Credits,
    },
}

impl DomainEvent for CreditEvent {
    fn event_type(&self) -> String {
        let name = match self {
            CreditEvent::CreditsGranted { .. } => "CreditsGranted",
            CreditEvent::CreditsPurchased { .. } => "CreditsPurchased",
            CreditEvent::CreditsRevoked { .. } => "CreditsRevoked",
            CreditEvent::CreditsReserved { .. } => "CreditsReserved",
            CreditEvent::ReservationCaptured { .. } => "ReservationCaptured",
            CreditEvent::ReservationReleased { .. } => "ReservationReleased",
        };
        name.to_string()
    }

    fn event_version(&self) -> String {
        crate::versions::current_version(&self.event_type()).to_string()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CreditError {
    #[error("the amount must be positive")]
    NonPositiveAmount,
    /// Also returned for a purchase without a payment reference, which is its reason.
    #[error("a reason is required")]
    MissingReason,
    #[error("this payment reference was already used for a different amount")]
    PaymentReferenceConflict,
    #[error("insufficient credits: {requested} requested, {available} available")]
    InsufficientCredits {
        requested: Credits,
        available: Credits,
    },
    #[error("this video already has a different reservation")]
    ReservationExists,
    #[error("this video has no reservation")]
    UnknownReservation,
    #[error("the balance would overflow")]
    Overflow,
    #[error("no purchase has this payment reference")]
    UnknownPurchase,
    #[error("this purchase was recorded without what was paid, so a refund has no share")]
    PurchaseWithoutPayment,
}

impl CreditError {
    pub fn code(&self) -> &'static str {
        match self {
            CreditError::NonPositiveAmount => "non_positive_amount",
            CreditError::MissingReason => "missing_reason",
            CreditError::PaymentReferenceConflict => "payment_reference_conflict",
            CreditError::InsufficientCredits { .. } => "insufficient_credits",
            CreditError::ReservationExists => "reservation_exists",
            CreditError::UnknownReservation => "unknown_reservation",
            CreditError::Overflow => "overflow",
            CreditError::UnknownPurchase => "unknown_purchase",
            CreditError::PurchaseWithoutPayment => "purchase_without_payment",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReservationState {
    Open,
    Captured { captured: Credits },
    Released,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reservation {
    pub amount: Credits,
    pub state: ReservationState,
}

impl Reservation {
    pub fn is_open(&self) -> bool {
        self.state == ReservationState::Open
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreditAccount {
    balance: Credits,
    /// Sum of the open reservations, kept so `available` needs no scan.
    reserved: Credits,
    /// Settled reservations stay forever: they are what makes a late retry a no-op.
    reservations: BTreeMap<VideoId, Reservation>,
    /// By payment reference: what makes a redelivered purchase or refund a no-op.
    purchases: BTreeMap<String, PurchaseRecord>,
    /// Whether the sign-up credits were granted (a `CreditsGranted` for [`SIGNUP_REASON`] by
    /// `system`, as registration has always recorded them).
    signup_granted: bool,
}

/// The reason and grantor a sign-up grant is recorded with.
pub const SIGNUP_REASON: &str = "sign-up grant";
pub const SIGNUP_GRANTED_BY: &str = "system";

impl CreditAccount {
    /// The version of this struct's shape as snapshots store it (serde): bump it whenever a
    /// field is added, removed or changes meaning, and older snapshots are ignored.
    pub const STATE_VERSION: i32 = 3;

    /// Everything granted or bought minus everything captured; includes reserved credits.
    pub fn balance(&self) -> Credits {
        self.balance
    }

    pub fn reserved(&self) -> Credits {
        self.reserved
    }

    /// What a new reservation may take. Never negative: reservations are bounded by it and
    /// captures by their reservation.
    pub fn available(&self) -> Credits {
        Credits::new(
            self.balance
                .value()
                .saturating_sub(self.reserved.value())
                .max(0),
        )
    }

    pub fn reservation(&self, video_id: VideoId) -> Option<&Reservation> {
        self.reservations.get(&video_id)
    }

    /// The amount a payment reference was credited with, if it was.
    pub fn purchase(&self, payment_reference: &str) -> Option<Credits> {
        self.purchases.get(payment_reference).map(|p| p.credits)
    }

    /// What the account keeps of a purchase: paid, refunded, asked back.
    pub fn purchase_record(&self, payment_reference: &str) -> Option<&PurchaseRecord> {
        self.purchases.get(payment_reference)
    }

    fn ensure_room_for(&self, amount: Credits) -> Result<(), CreditError> {
        self.balance
            .checked_add(amount)
            .map(|_| ())
            .ok_or(CreditError::Overflow)
    }

    /// The open reservation to settle, `None` when it is already settled (a no-op), or an
    /// error when the video never reserved here.
    fn open_reservation(&self, video_id: VideoId) -> Result<Option<Credits>, CreditError> {
        let reservation = self
            .reservations
            .get(&video_id)
            .ok_or(CreditError::UnknownReservation)?;
        Ok(reservation.is_open().then_some(reservation.amount))
    }

    /// `RevokePurchase` (see [`PurchaseRecord::revocation`]).
    fn decide_revocation(
        &self,
        payment_reference: String,
        refunded: i64,
    ) -> Result<Option<CreditEvent>, CreditError> {
        let purchase = self
            .purchases
            .get(&payment_reference)
            .ok_or(CreditError::UnknownPurchase)?;
        Ok(purchase
            .revocation(refunded, self.available())?
            .map(|r| CreditEvent::CreditsRevoked {
                payment_reference,
                refunded: r.refunded,
                requested: r.requested,
                revoked: r.revoked,
                shortfall: r.shortfall,
            }))
    }

    fn decide(&self, command: CreditCommand) -> Result<Option<CreditEvent>, CreditError> {
        let event = match command {
            CreditCommand::Grant {
                amount,
                reason,
                granted_by,
            } => {
                if !amount.is_positive() {
                    return Err(CreditError::NonPositiveAmount);
                }
                if reason.trim().is_empty() {
                    return Err(CreditError::MissingReason);
                }
                self.ensure_room_for(amount)?;
                CreditEvent::CreditsGranted {
                    amount,
                    reason,
                    granted_by,
                }
            }
            CreditCommand::GrantSignup { amount } => {
                if self.signup_granted || !amount.is_positive() {
                    return Ok(None);
                }
                self.ensure_room_for(amount)?;
                CreditEvent::CreditsGranted {
                    amount,
                    reason: SIGNUP_REASON.to_owned(),
                    granted_by: SIGNUP_GRANTED_BY.to_owned(),
                }
            }
            CreditCommand::Purchase {
                amount,
                payment_reference,
                payment,
            } => {
                if !amount.is_positive() || payment.as_ref().is_some_and(|p| p.amount_paid < 0) {
                    return Err(CreditError::NonPositiveAmount);
                }
                if payment_reference.trim().is_empty() {
                    return Err(CreditError::MissingReason);
                }
                match self.purchase(&payment_reference) {
                    Some(credited) if credited == amount => return Ok(None),
                    Some(_) => return Err(CreditError::PaymentReferenceConflict),
                    None => {}
                }
                self.ensure_room_for(amount)?;
                CreditEvent::CreditsPurchased {
                    amount,
                    payment_reference,
                    payment,
                }
            }
            CreditCommand::RevokePurchase {
                payment_reference,
                refunded,
            } => return self.decide_revocation(payment_reference, refunded),
            CreditCommand::Reserve { video_id, amount } => {
                if !amount.is_positive() {
                    return Err(CreditError::NonPositiveAmount);
                }
                if let Some(existing) = self.reservations.get(&video_id) {
                    // A retried reserve of the same hold is harmless; anything else would
                    // hide a bug in whoever sized the reservation.
                    if existing.is_open() && existing.amount == amount {
                        return Ok(None);
                    }
                    return Err(CreditError::ReservationExists);
                }
                let available = self.available();
                if amount > available {
                    return Err(CreditError::InsufficientCredits {
                        requested: amount,
                        available,
                    });
                }
                CreditEvent::CreditsReserved { video_id, amount }
            }
            CreditCommand::Capture { video_id, amount } => {
                if amount.is_negative() {
                    return Err(CreditError::NonPositiveAmount);
                }
                let Some(reserved) = self.open_reservation(video_id)? else {
                    return Ok(None);
                };
                // Never more than was reserved: the user agreed to the estimate.
                let captured = amount.min(reserved);
                let released = reserved
                    .checked_sub(captured)
                    .ok_or(CreditError::Overflow)?;
                CreditEvent::ReservationCaptured {
                    video_id,
                    reserved,
                    captured,
                    released,
                }
            }
            CreditCommand::Release { video_id } => {
                let Some(amount) = self.open_reservation(video_id)? else {
                    return Ok(None);
                };
                CreditEvent::ReservationReleased { video_id, amount }
            }
        };
        Ok(Some(event))
    }
}

impl Aggregate for CreditAccount {
    const TYPE: &'static str = "CreditAccount";
    type Command = CreditCommand;
    type Event = CreditEvent;
    type Error = CreditError;
    type Services = Services;

    async fn handle(
        &mut self,
        command: Self::Command,
        _services: &Self::Services,
        sink: &EventSink<Self>,
    ) -> Result<(), Self::Error> {
        if let Some(event) = self.decide(command)? {
            sink.write(event, self).await;
        }
        Ok(())
    }

    /// Arithmetic saturates instead of failing because `apply` cannot refuse a stored fact;
    /// `decide` has already proven each event keeps the figures in range.
    fn apply(&mut self, event: Self::Event) {
        match event {
            CreditEvent::CreditsGranted {
                amount,
                reason,
                granted_by,
            } => {
                self.balance = saturating_add(self.balance, amount);
                self.signup_granted |= reason == SIGNUP_REASON && granted_by == SIGNUP_GRANTED_BY;
            }
            CreditEvent::CreditsPurchased {
                amount,
                payment_reference,
                payment,
            } => {
                self.balance = saturating_add(self.balance, amount);
                self.purchases.insert(
                    payment_reference,
                    PurchaseRecord::new(amount, payment.as_ref()),
                );
            }
            CreditEvent::CreditsRevoked {
                payment_reference,
                refunded,
                requested,
                revoked,
                ..
            } => {
                self.balance = saturating_sub(self.balance, revoked);
                if let Some(purchase) = self.purchases.get_mut(&payment_reference) {
                    purchase.refunded = purchase.refunded.max(refunded);
                    purchase.revocation_requested =
                        saturating_add(purchase.revocation_requested, requested);
                }
            }
            CreditEvent::CreditsReserved { video_id, amount } => {
                self.reserved = saturating_add(self.reserved, amount);
                self.reservations.insert(
                    video_id,
                    Reservation {
                        amount,
                        state: ReservationState::Open,
                    },
                );
            }
            CreditEvent::ReservationCaptured {
                video_id,
                reserved,
                captured,
                ..
            } => {
                self.reserved = saturating_sub(self.reserved, reserved);
                self.balance = saturating_sub(self.balance, captured);
                self.reservations.insert(
                    video_id,
                    Reservation {
                        amount: reserved,
                        state: ReservationState::Captured { captured },
                    },
                );
            }
            CreditEvent::ReservationReleased { video_id, amount } => {
                self.reserved = saturating_sub(self.reserved, amount);
                self.reservations.insert(
                    video_id,
                    Reservation {
                        amount,
                        state: ReservationState::Released,
                    },
                );
            }
        }
    }
}

fn saturating_add(a: Credits, b: Credits) -> Credits {
    Credits::new(a.value().saturating_add(b.value()))
}

fn saturating_sub(a: Credits, b: Credits) -> Credits {
    Credits::new(a.value().saturating_sub(b.value()))
}
