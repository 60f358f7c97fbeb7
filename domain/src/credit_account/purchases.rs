//! What a credit account remembers of each purchase, and how a refund turns into credits taken
//! back.
//!
//! A purchase paid through a payment provider records what was paid; a refund (possibly one
//! of several partial ones, reported as the cumulative amount refunded) asks back the same
//! share of the purchase's credits. The account keeps the refunded total and the credits
//! already asked back, so a redelivered refund asks nothing twice and a larger one asks only
//! the difference. The credits actually taken are capped by what is available: spent or
//! reserved credits stay where they are and the rest is recorded as a shortfall.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::CreditError;
use crate::credits::Credits;

/// Who took the payment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum PaymentProvider {
    Stripe,
}

/// The payment behind a purchase, as the provider reported it: enough to explain the charge
/// from the events alone.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct PaymentDetails {
    pub provider: PaymentProvider,
    /// The provider's checkout (a Stripe Checkout Session, `cs_...`).
    pub checkout_session: String,
    /// The payment refunds name (a Stripe PaymentIntent, `pi_...`), when there is one.
    pub payment_intent: Option<String>,
    /// The credit pack bought.
    pub pack: String,
    /// What was paid, in the currency's smallest unit (cents for USD).
    pub amount_paid: i64,
    /// ISO 4217 code in lower case, as Stripe writes it (`usd`).
    pub currency: String,
}

/// One purchase as the account keeps it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PurchaseRecord {
    /// The credits it added.
    pub credits: Credits,
    /// What was paid (smallest currency unit); `None` for a purchase recorded without
    /// payment details, which cannot be refunded in proportion.
    pub amount_paid: Option<i64>,
    /// Everything refunded so far (smallest currency unit).
    pub refunded: i64,
    /// The credits refunds have asked back so far (taken back plus shortfall).
    pub revocation_requested: Credits,
}

impl PurchaseRecord {
    pub fn new(credits: Credits, payment: Option<&PaymentDetails>) -> Self {
        Self {
            credits,
            amount_paid: payment.map(|p| p.amount_paid),
            refunded: 0,
            revocation_requested: Credits::ZERO,
        }
    }

    /// The credits a cumulative refund of `refunded` stands for: the same share of the
    /// purchase's credits, rounded down (a full refund is all of them), with `refunded`
    /// capped at what was paid. `None` when nothing was paid.
    pub fn credits_for_refund(&self, refunded: i64) -> Option<Credits> {
        let paid = self.amount_paid.filter(|paid| *paid > 0)?;
        let refunded = refunded.clamp(0, paid);
        let share = i128::from(self.credits.value()) * i128::from(refunded) / i128::from(paid);
        // At most `credits`, so it fits.
        Some(Credits::new(i64::try_from(share).ok()?))
    }

    /// What a refunded total of `refunded` takes back, given `available` credits on the
    /// account: its share of the credits less what earlier refunds asked, as far as it is
    /// available. `None` when it is no more than the total already recorded (a redelivered
    /// or out-of-date refund).
    pub fn revocation(
        &self,
        refunded: i64,
        available: Credits,
    ) -> Result<Option<Revocation>, CreditError> {
        if refunded <= 0 {
            return Err(CreditError::NonPositiveAmount);
        }
        let paid = self
            .amount_paid
            .filter(|paid| *paid > 0)
            .ok_or(CreditError::PurchaseWithoutPayment)?;
        // A provider never refunds more than was paid; if one said so it would mean all of
        // it, and the capped total is what a redelivery is compared with.
        let refunded = refunded.min(paid);
        if refunded <= self.refunded {
            return Ok(None);
        }
        let share = self
            .credits_for_refund(refunded)
            .ok_or(CreditError::PurchaseWithoutPayment)?;
        let requested = share
            .checked_sub(self.revocation_requested)
            .ok_or(CreditError::Overflow)?
            .max(Credits::ZERO);
        let revoked = requested.min(available.max(Credits::ZERO));
        let shortfall = requested
            .checked_sub(revoked)
            .ok_or(CreditError::Overflow)?;
        Ok(Some(Revocation {
            refunded,
            requested,
            revoked,
            shortfall,
        }))
    }
}

/// The figures of a `CreditsRevoked` event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Revocation {
    pub refunded: i64,
    pub requested: Credits,
    pub revoked: Credits,
    pub shortfall: Credits,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(credits: i64, paid: Option<i64>) -> PurchaseRecord {
        PurchaseRecord {
            credits: Credits::new(credits),
            amount_paid: paid,
            refunded: 0,
            revocation_requested: Credits::ZERO,
        }
    }

    #[test]
    fn a_refund_stands_for_its_share_of_the_credits_rounded_down() {
        let pack = record(1000, Some(1000));
        assert_eq!(pack.credits_for_refund(1000), Some(Credits::new(1000)));
        assert_eq!(pack.credits_for_refund(250), Some(Credits::new(250)));
        let odd = record(1000, Some(3000));
        assert_eq!(odd.credits_for_refund(1000), Some(Credits::new(333)));
        assert_eq!(odd.credits_for_refund(3000), Some(Credits::new(1000)));
        // More than was paid counts as a full refund.
        assert_eq!(odd.credits_for_refund(9000), Some(Credits::new(1000)));
    }

    #[test]
    fn huge_figures_do_not_overflow() {
        let big = record(i64::MAX, Some(i64::MAX));
        assert_eq!(
            big.credits_for_refund(i64::MAX / 2),
            Some(Credits::new(i64::MAX / 2))
        );
    }

    #[test]
    fn nothing_paid_has_no_share() {
        assert_eq!(record(100, None).credits_for_refund(10), None);
        assert_eq!(record(100, Some(0)).credits_for_refund(10), None);
    }
}
