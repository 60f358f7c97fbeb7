//! The `credit_purchases` read model: one row per purchase with what was bought and paid and
//! what refunds took back, for `GET /v1/billing/purchases` and for finding the purchase a
//! payment provider's refund names (by PaymentIntent).
//!
//! Written from `CreditsPurchased` and `CreditsRevoked` inline, in the transaction that
//! appends them (`inline`), and by [`CreditPurchasesProjector`] from the log. Both writes are
//! idempotent without a version column: a purchase row is inserted once (its key is the
//! aggregate's), and a revocation carries the purchase's refunded total after it, which only
//! grows, so it applies only to a row whose total is still below it. A batch inserts its
//! purchases in one statement and then applies its revocations (rare) in log order.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use cqrs_es::Aggregate as _;
use framegate_domain::{CreditAccount, CreditEvent, PaymentDetails, PaymentProvider, UserId};
use serde::Serialize;
use sqlx::{FromRow, PgConnection, PgPool};
use uuid::Uuid;

use super::batch::{self, SetBased};
use super::{aggregate_uuid, decode, ProjectionError};
use crate::log::{Reads, StoredEvent};
use crate::subscription::{BoxError, EventHandler, HandlerError};

/// The subscription name of the credit purchases projector.
pub const SUBSCRIPTION: &str = "read_model.credit_purchases";

/// The event types this model follows; the others are skipped before decoding.
const FOLLOWED: [&str; 2] = ["CreditsPurchased", "CreditsRevoked"];

/// One purchase.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, FromRow)]
pub struct PurchaseRow {
    /// The global position of the purchase event; also the pagination cursor.
    pub position: i64,
    pub user_id: Uuid,
    pub payment_reference: String,
    pub credits: i64,
    /// `stripe`, or none for a purchase recorded without payment details.
    pub provider: Option<String>,
    pub checkout_session: Option<String>,
    pub payment_intent: Option<String>,
    pub pack: Option<String>,
    /// Smallest currency unit.
    pub amount_paid: Option<i64>,
    pub currency: Option<String>,
    /// Refunded so far, smallest currency unit.
    pub refunded: i64,
    pub credits_revoked: i64,
    /// Credits refunds asked back that were already spent or reserved.
    pub revocation_shortfall: i64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// Projects `CreditAccount` purchases and revocations into `credit_purchases`.
#[derive(Debug, Clone, Copy, Default)]
pub struct CreditPurchasesProjector;

#[async_trait]
impl EventHandler for CreditPurchasesProjector {
    /// Its own aggregate's bodies; nothing personal of metadata.
    fn reads(&self) -> Reads {
        Reads::bodies_of(&[CreditAccount::TYPE])
    }

    async fn handle(&self, conn: &mut PgConnection, event: &StoredEvent) -> Result<(), BoxError> {
        project(conn, event).await?;
        Ok(())
    }

    async fn handle_batch(
        &self,
        conn: &mut PgConnection,
        events: &[StoredEvent],
    ) -> Result<(), HandlerError> {
        // Most batches hold no purchase at all: nothing to open a savepoint for.
        if !events.iter().any(followed) {
            return Ok(());
        }
        batch::handle_batch(self, conn, events).await
    }
}

fn followed(event: &StoredEvent) -> bool {
    event.aggregate_type == CreditAccount::TYPE && FOLLOWED.contains(&event.event_type.as_str())
}

/// Projects one event (any type; only purchases and revocations touch the table). Seeing it
/// again (inline, then from the log) changes nothing.
pub(crate) async fn project(
    conn: &mut PgConnection,
    event: &StoredEvent,
) -> Result<(), ProjectionError> {
    if !followed(event) {
        return Ok(());
    }
    let user_id = aggregate_uuid(event)?;
    match decode::<CreditEvent>(event)? {
        CreditEvent::CreditsPurchased {
            amount,
            payment_reference,
            payment,
        } => {
            let mut rows = Purchases::default();
            rows.push(event, user_id, amount.value(), payment_reference, payment);
            rows.insert(conn).await
        }
        CreditEvent::CreditsRevoked {
            payment_reference,
            refunded,
            revoked,
            shortfall,
            ..
        } => {
            let revocation = Revocation {
                user_id,
                payment_reference,
                refunded,
                revoked: revoked.value(),
                shortfall: shortfall.value(),
                at: event.recorded_at,
            };
            revocation.apply(conn).await
        }
        _ => Ok(()),
    }
}

#[async_trait]
impl SetBased for CreditPurchasesProjector {
    const AGGREGATE_TYPE: &'static str = CreditAccount::TYPE;

    async fn project_set(
        &self,
        conn: &mut PgConnection,
        events: &[StoredEvent],
    ) -> Result<(), BoxError> {
        let mut purchases = Purchases::default();
        let mut revocations = Vec::new();
        for event in events.iter().filter(|e| followed(e)) {
            let user_id = aggregate_uuid(event)?;
            match decode::<CreditEvent>(event)? {
                CreditEvent::CreditsPurchased {
                    amount,
                    payment_reference,
                    payment,
                } => purchases.push(event, user_id, amount.value(), payment_reference, payment),
                CreditEvent::CreditsRevoked {
                    payment_reference,
                    refunded,
                    revoked,
                    shortfall,
                    ..
                } => revocations.push(Revocation {
                    user_id,
                    payment_reference,
                    refunded,
                    revoked: revoked.value(),
                    shortfall: shortfall.value(),
                    at: event.recorded_at,
                }),
                _ => {}
            }
        }
        // A revocation only ever follows its purchase, so inserting every purchase first
        // and then revoking in log order gives the rows the events one by one give.
        purchases.insert(conn).await?;
        for revocation in revocations {
            revocation.apply(conn).await?;
        }
        Ok(())
    }
}

/// Purchase rows as columns.
#[derive(Default)]
struct Purchases {
    positions: Vec<i64>,
    user_ids: Vec<Uuid>,
    references: Vec<String>,
    credits: Vec<i64>,
    providers: Vec<Option<&'static str>>,
    sessions: Vec<Option<String>>,
    intents: Vec<Option<String>>,
    packs: Vec<Option<String>>,
    paid: Vec<Option<i64>>,
    currencies: Vec<Option<String>>,
    at: Vec<DateTime<Utc>>,
}

impl Purchases {
    fn push(
        &mut self,
        event: &StoredEvent,
        user_id: Uuid,
        credits: i64,
        reference: String,
        payment: Option<PaymentDetails>,
    ) {
        self.positions.push(event.global_position);
        self.user_ids.push(user_id);
        self.references.push(reference);
        self.credits.push(credits);
        self.at.push(event.recorded_at);
        let payment = payment.map(|p| {
            let provider = match p.provider {
                PaymentProvider::Stripe => "stripe",
            };
            (provider, p)
        });
        let (provider, payment) = payment.map_or((None, None), |(n, p)| (Some(n), Some(p)));
        self.providers.push(provider);
        self.sessions
            .push(payment.as_ref().map(|p| p.checkout_session.clone()));
        self.intents
            .push(payment.as_ref().and_then(|p| p.payment_intent.clone()));
        self.packs.push(payment.as_ref().map(|p| p.pack.clone()));
        self.paid.push(payment.as_ref().map(|p| p.amount_paid));
        self.currencies.push(payment.map(|p| p.currency));
    }

    async fn insert(self, conn: &mut PgConnection) -> Result<(), ProjectionError> {
        if self.positions.is_empty() {
            return Ok(());
        }
        // References are unique per account in the aggregate, so no two rows of one batch
        // conflict; a row already there (the other writer) is kept.
        sqlx::query(
            "INSERT INTO credit_purchases (global_position, user_id, payment_reference, credits,
                                           provider, checkout_session, payment_intent, pack,
                                           amount_paid, currency, created_at, updated_at)
             SELECT p, u, r, c, pr, s, i, k, a, cu, t, t
               FROM unnest($1::int8[], $2::uuid[], $3::text[], $4::int8[], $5::text[],
                           $6::text[], $7::text[], $8::text[], $9::int8[], $10::text[],
                           $11::timestamptz[]) AS x(p, u, r, c, pr, s, i, k, a, cu, t)
             ON CONFLICT (user_id, payment_reference) DO NOTHING",
        )
        .bind(&self.positions)
        .bind(&self.user_ids)
        .bind(&self.references)
        .bind(&self.credits)
        .bind(&self.providers)
        .bind(&self.sessions)
        .bind(&self.intents)
        .bind(&self.packs)
        .bind(&self.paid)
        .bind(&self.currencies)
        .bind(&self.at)
        .execute(&mut *conn)
        .await?;
        Ok(())
    }
}

/// One `CreditsRevoked`.
struct Revocation {
    user_id: Uuid,
    payment_reference: String,
    refunded: i64,
    revoked: i64,
    shortfall: i64,
    at: DateTime<Utc>,
}

impl Revocation {
    /// Applies the revocation unless the row's refunded total shows it applied already; a
    /// missing purchase row is an inconsistency (the purchase event comes first).
    async fn apply(&self, conn: &mut PgConnection) -> Result<(), ProjectionError> {
        let refunded: Option<i64> = sqlx::query_scalar(
            "WITH updated AS (
                 UPDATE credit_purchases
                    SET refunded = $3,
                        credits_revoked = credits_revoked + $4,
                        revocation_shortfall = revocation_shortfall + $5,
                        updated_at = GREATEST(updated_at, $6)
                  WHERE user_id = $1 AND payment_reference = $2 AND refunded < $3
              RETURNING refunded)
             SELECT refunded FROM updated
             UNION ALL
             SELECT refunded FROM credit_purchases
              WHERE user_id = $1 AND payment_reference = $2
                AND NOT EXISTS (SELECT 1 FROM updated)",
        )
        .bind(self.user_id)
        .bind(&self.payment_reference)
        .bind(self.refunded)
        .bind(self.revoked)
        .bind(self.shortfall)
        .bind(self.at)
        .fetch_optional(&mut *conn)
        .await?;
        match refunded {
            Some(_) => Ok(()),
            None => Err(ProjectionError::Inconsistent(format!(
                "a revocation of {} for {} without its purchase",
                self.payment_reference, self.user_id
            ))),
        }
    }
}

const COLUMNS: &str = "global_position AS position, user_id, payment_reference, credits, provider,
     checkout_session, payment_intent, pack, amount_paid, currency, refunded, credits_revoked,
     revocation_shortfall, created_at, updated_at";

/// Up to `limit` purchases of a user, newest first, older than position `before` (the
/// `position` of the last one of the previous page) when given.
pub async fn list(
    pool: &PgPool,
    user_id: UserId,
    before: Option<i64>,
    limit: i64,
) -> Result<Vec<PurchaseRow>, sqlx::Error> {
    sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM credit_purchases
          WHERE user_id = $1 AND global_position < $2
          ORDER BY global_position DESC
          LIMIT $3"
    ))
    .bind(user_id.as_uuid())
    .bind(before.unwrap_or(i64::MAX))
    .bind(limit)
    .fetch_all(pool)
    .await
}

/// The purchase a payment provider's PaymentIntent paid for, if it is recorded.
pub async fn by_payment_intent(
    pool: &PgPool,
    payment_intent: &str,
) -> Result<Option<PurchaseRow>, sqlx::Error> {
    sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM credit_purchases WHERE payment_intent = $1
          ORDER BY global_position LIMIT 1"
    ))
    .bind(payment_intent)
    .fetch_optional(pool)
    .await
}
