//! What a verified Stripe event does (`POST /v1/billing/stripe/webhook`).
//!
//! - `checkout.session.completed` (and `checkout.session.async_payment_succeeded`), paid:
//!   one `Purchase` on the buyer's credit account, referenced by the Checkout Session id, so
//!   every event about one session (redeliveries, the completed and the async-succeeded
//!   event) credits once whatever their order.
//! - `charge.refunded`: the refunded total is kept per PaymentIntent (`stripe_refunds`),
//!   then the purchase that PaymentIntent paid for, if it is recorded, gets a
//!   `RevokePurchase` with that total. A purchase recorded later looks for a kept refund the
//!   same way, so a refund delivered before its purchase is not lost: each side writes its own
//!   fact before reading the other's, so at least one of them sees both.
//! - `charge.dispute.closed`, lost (a chargeback the buyer won): the disputed amount is kept
//!   beside the refunded total (`stripe_refunds.amount_disputed`) and the purchase is revoked
//!   for their sum, exactly as a refund of that much. A won dispute takes nothing.
//! - Anything else is acknowledged and ignored.
//!
//! Every effect is idempotent on its own (the account decides per reference and refunded
//! total), and an event handled once is recorded by id (`stripe_events`) so a redelivery is
//! answered without work. A failure to store (the database away) is a 5xx: Stripe delivers
//! the event again later. An event that claims to be ours but cannot be credited is a 422:
//! Stripe keeps retrying and its dashboard shows the failure to the operator.

use std::collections::HashMap;

use framegate_commands::CommandMetadata;
use framegate_domain::{CreditCommand, Credits, PaymentDetails, PaymentProvider, UserId};
use framegate_projections::read_models::{credit_purchases, users};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::error::ApiError;
use crate::state::AppState;

/// The envelope of every Stripe event.
#[derive(Debug, Deserialize)]
pub struct Event {
    pub id: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub data: EventData,
}

#[derive(Debug, Deserialize)]
pub struct EventData {
    pub object: serde_json::Value,
}

/// What became of an event (the response body says it, for logs and tests).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Processed,
    /// Handled before (same event id).
    Duplicate,
    /// Not an event billing acts on.
    Ignored,
}

/// A reference to another object: its id, or the object itself when expanded.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Reference {
    Id(String),
    Object { id: String },
}

impl Reference {
    fn id(self) -> String {
        match self {
            Reference::Id(id) | Reference::Object { id } => id,
        }
    }
}

/// The fields of a Checkout Session billing reads.
#[derive(Debug, Deserialize)]
struct Session {
    id: String,
    mode: Option<String>,
    payment_status: Option<String>,
    amount_total: Option<i64>,
    currency: Option<String>,
    payment_intent: Option<Reference>,
    #[serde(default)]
    metadata: HashMap<String, String>,
}

/// The fields of a Charge billing reads.
#[derive(Debug, Deserialize)]
struct Charge {
    id: String,
    payment_intent: Option<Reference>,
    amount_refunded: i64,
    currency: String,
}

/// The fields of a Dispute billing reads.
#[derive(Debug, Deserialize)]
struct Dispute {
    id: String,
    charge: Reference,
    payment_intent: Option<Reference>,
    amount: i64,
    currency: String,
    status: String,
}

fn malformed(message: impl Into<String>) -> ApiError {
    ApiError::BadRequest {
        status: axum::http::StatusCode::BAD_REQUEST,
        code: "malformed_event",
        message: message.into(),
    }
}

fn unusable(message: impl Into<String>) -> ApiError {
    ApiError::Unprocessable {
        code: "unusable_event",
        message: message.into(),
    }
}

/// Parses the (verified) body of a webhook request.
pub fn parse(body: &[u8]) -> Result<Event, ApiError> {
    let event: Event = serde_json::from_slice(body)
        .map_err(|e| malformed(format!("the body is not a Stripe event: {e}")))?;
    stripe_id("id", &event.id)?;
    Ok(event)
}

/// Stripe ids are short visible ASCII; anything else is not from Stripe.
fn stripe_id<'a>(field: &str, id: &'a str) -> Result<&'a str, ApiError> {
    if id.is_empty() || id.len() > 255 || !id.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(malformed(format!("{field} is not a Stripe id")));
    }
    Ok(id)
}

/// Handles one verified event; `meta` is the request's, caused by the event.
pub async fn handle(
    state: &AppState,
    event: Event,
    meta: &CommandMetadata,
) -> Result<Outcome, ApiError> {
    let seen: Option<i32> = sqlx::query_scalar("SELECT 1 FROM stripe_events WHERE id = $1")
        .bind(&event.id)
        .fetch_optional(&state.pool)
        .await?;
    if seen.is_some() {
        return Ok(Outcome::Duplicate);
    }
    let outcome = match event.kind.as_str() {
        "checkout.session.completed" | "checkout.session.async_payment_succeeded" => {
            let session: Session = serde_json::from_value(event.data.object)
                .map_err(|e| malformed(format!("data.object is not a Checkout Session: {e}")))?;
            checkout_paid(state, session, meta).await?
        }
        "charge.refunded" => {
            let charge: Charge = serde_json::from_value(event.data.object)
                .map_err(|e| malformed(format!("data.object is not a Charge: {e}")))?;
            charge_refunded(state, charge, meta).await?
        }
        "charge.dispute.closed" => {
            let dispute: Dispute = serde_json::from_value(event.data.object)
                .map_err(|e| malformed(format!("data.object is not a Dispute: {e}")))?;
            dispute_closed(state, dispute, meta).await?
        }
        _ => Outcome::Ignored,
    };
    if outcome == Outcome::Processed {
        sqlx::query("INSERT INTO stripe_events (id, type) VALUES ($1, $2) ON CONFLICT DO NOTHING")
            .bind(&event.id)
            .bind(&event.kind)
            .execute(&state.pool)
            .await?;
    }
    Ok(outcome)
}

/// A paid Checkout Session of ours: its credits, once per session.
async fn checkout_paid(
    state: &AppState,
    session: Session,
    meta: &CommandMetadata,
) -> Result<Outcome, ApiError> {
    if session.mode.as_deref() != Some("payment")
        || session.payment_status.as_deref() != Some("paid")
    {
        // Unpaid (a delayed payment method): `async_payment_succeeded` follows if it clears.
        return Ok(Outcome::Ignored);
    }
    let Some(user) = session.metadata.get("user_id") else {
        // Not a checkout this API opened (another product on the same Stripe account).
        return Ok(Outcome::Ignored);
    };
    let user_id = user
        .parse::<Uuid>()
        .map(UserId::from_uuid)
        .map_err(|_| unusable("metadata.user_id is not a user id"))?;
    let credits = session
        .metadata
        .get("credits")
        .and_then(|c| c.parse::<i64>().ok())
        .filter(|c| *c > 0)
        .ok_or_else(|| unusable("metadata.credits is not a positive number of credits"))?;
    let pack = session
        .metadata
        .get("pack")
        .cloned()
        .ok_or_else(|| unusable("metadata.pack is missing"))?;
    let (Some(amount_paid), Some(currency)) = (session.amount_total, session.currency) else {
        return Err(unusable("a paid session without amount_total and currency"));
    };
    if currency.len() != 3 || !currency.bytes().all(|b| b.is_ascii_lowercase()) {
        return Err(unusable("currency is not an ISO 4217 code"));
    }
    let payment_intent = session.payment_intent.map(Reference::id);
    stripe_id("data.object.id", &session.id)?;
    if let Some(intent) = &payment_intent {
        stripe_id("data.object.payment_intent", intent)?;
    }
    if users::get(&state.pool, user_id).await?.is_none() {
        return Err(unusable(format!("no user {user_id} to credit")));
    }
    let command = CreditCommand::Purchase {
        amount: Credits::new(credits),
        payment_reference: session.id.clone(),
        payment: Some(PaymentDetails {
            provider: PaymentProvider::Stripe,
            checkout_session: session.id,
            payment_intent: payment_intent.clone(),
            pack,
            amount_paid,
            currency,
        }),
    };
    state
        .store
        .credits()
        .execute(&user_id.to_string(), command, meta)
        .await?;
    if let Some(intent) = payment_intent {
        revoke_refunded(state, &intent, meta).await?;
    }
    Ok(Outcome::Processed)
}

/// A refund (full, partial, or a further partial one): its total is kept, then applied to
/// the purchase if that is recorded.
async fn charge_refunded(
    state: &AppState,
    charge: Charge,
    meta: &CommandMetadata,
) -> Result<Outcome, ApiError> {
    let Some(intent) = charge.payment_intent.map(Reference::id) else {
        return Ok(Outcome::Ignored);
    };
    stripe_id("data.object.payment_intent", &intent)?;
    stripe_id("data.object.id", &charge.id)?;
    if charge.amount_refunded <= 0 {
        return Ok(Outcome::Ignored);
    }
    // The highest total wins: refund events may arrive out of order.
    sqlx::query(
        "INSERT INTO stripe_refunds (payment_intent, charge, amount_refunded, currency)
         VALUES ($1, $2, $3, $4)
         ON CONFLICT (payment_intent) DO UPDATE
            SET amount_refunded = GREATEST(stripe_refunds.amount_refunded,
                                           EXCLUDED.amount_refunded),
                charge = EXCLUDED.charge, updated_at = now()",
    )
    .bind(&intent)
    .bind(&charge.id)
    .bind(charge.amount_refunded)
    .bind(&charge.currency)
    .execute(&state.pool)
    .await?;
    revoke_refunded(state, &intent, meta).await?;
    Ok(Outcome::Processed)
}

/// A closed dispute: if it was lost, the disputed amount counts as taken back, like a
/// refund (kept per PaymentIntent, the highest amount winning), then applied to the purchase.
async fn dispute_closed(
    state: &AppState,
    dispute: Dispute,
    meta: &CommandMetadata,
) -> Result<Outcome, ApiError> {
    if dispute.status != "lost" || dispute.amount <= 0 {
        return Ok(Outcome::Ignored);
    }
    let Some(intent) = dispute.payment_intent.map(Reference::id) else {
        return Ok(Outcome::Ignored);
    };
    stripe_id("data.object.payment_intent", &intent)?;
    stripe_id("data.object.id", &dispute.id)?;
    let charge = dispute.charge.id();
    stripe_id("data.object.charge", &charge)?;
    sqlx::query(
        "INSERT INTO stripe_refunds (payment_intent, charge, amount_refunded, amount_disputed,
                                     currency)
         VALUES ($1, $2, 0, $3, $4)
         ON CONFLICT (payment_intent) DO UPDATE
            SET amount_disputed = GREATEST(stripe_refunds.amount_disputed,
                                           EXCLUDED.amount_disputed),
                updated_at = now()",
    )
    .bind(&intent)
    .bind(&charge)
    .bind(dispute.amount)
    .bind(&dispute.currency)
    .execute(&state.pool)
    .await?;
    revoke_refunded(state, &intent, meta).await?;
    Ok(Outcome::Processed)
}

/// Applies the total taken back for `payment_intent` (refunded plus lost in disputes) to its
/// purchase, when both are known. The account takes back only what that total adds, so calling this again (or from
/// both sides at once) changes nothing.
async fn revoke_refunded(
    state: &AppState,
    payment_intent: &str,
    meta: &CommandMetadata,
) -> Result<(), ApiError> {
    let refunded: Option<i64> = sqlx::query_scalar(
        "SELECT amount_refunded + amount_disputed FROM stripe_refunds WHERE payment_intent = $1",
    )
    .bind(payment_intent)
    .fetch_optional(&state.pool)
    .await?;
    let Some(refunded) = refunded.filter(|r| *r > 0) else {
        return Ok(());
    };
    let Some(purchase) = credit_purchases::by_payment_intent(&state.pool, payment_intent).await?
    else {
        // The purchase has not been delivered yet; it will apply the refund when it is.
        return Ok(());
    };
    let command = CreditCommand::RevokePurchase {
        payment_reference: purchase.payment_reference,
        refunded,
    };
    state
        .store
        .credits()
        .execute(&purchase.user_id.to_string(), command, meta)
        .await?;
    Ok(())
}
