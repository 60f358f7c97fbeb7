//! The `credit_ledger` read model: one row per credit movement, for the user's statement
//! and for support to explain a balance.
//!
//! Written from `CreditAccount` events inline, in the transaction that appends them
//! (`inline`), and by [`CreditLedgerProjector`] from the log. Each row is keyed by the global
//! position of the event that made it, so seeing an event twice (inline and from the log, or
//! a replay from zero) adds nothing. The deltas are the same as `credit_accounts` applies, so an account's
//! balance is the sum of its ledger's balance changes. A batch is one multi-row insert.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use cqrs_es::Aggregate as _;
use framegate_domain::{CreditAccount, CreditEvent, UserId};
use serde::Serialize;
use sqlx::{FromRow, PgConnection, PgPool};
use uuid::Uuid;

use super::batch::{self, decode_all, SetBased};
use super::credit_accounts::deltas;
use super::{aggregate_uuid, decode, ProjectionError};
use crate::log::{Reads, StoredEvent};
use crate::subscription::{BoxError, EventHandler, HandlerError};

/// The subscription name of the credit ledger projector.
pub const SUBSCRIPTION: &str = "read_model.credit_ledger";

/// One credit movement.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, FromRow)]
pub struct LedgerEntry {
    /// The global position of the event; also the pagination cursor.
    pub position: i64,
    /// `granted`, `purchased`, `revoked` (a refund took credits back), `reserved`,
    /// `captured` or `released`.
    pub kind: String,
    pub balance_change: i64,
    pub reserved_change: i64,
    pub video_id: Option<Uuid>,
    /// Why credits were granted.
    pub reason: Option<String>,
    pub payment_reference: Option<String>,
    /// Who caused it: `user:<uuid>` or `system`.
    pub actor: String,
    pub recorded_at: DateTime<Utc>,
}

/// Projects `CreditAccount` events into `credit_ledger`.
#[derive(Debug, Clone, Copy, Default)]
pub struct CreditLedgerProjector;

#[async_trait]
impl EventHandler for CreditLedgerProjector {
    /// Its own aggregate's bodies; nothing personal of metadata.
    fn reads(&self) -> Reads {
        Reads::bodies_of(&[CreditAccount::TYPE])
    }

    async fn handle(&self, conn: &mut PgConnection, event: &StoredEvent) -> Result<(), BoxError> {
        if event.aggregate_type != CreditAccount::TYPE {
            return Ok(());
        }
        project(conn, event).await?;
        Ok(())
    }

    async fn handle_batch(
        &self,
        conn: &mut PgConnection,
        events: &[StoredEvent],
    ) -> Result<(), HandlerError> {
        batch::handle_batch(self, conn, events).await
    }
}

/// Projects one `CreditAccount` event; seeing it again (inline, then from the log) adds nothing.
pub(crate) async fn project(
    conn: &mut PgConnection,
    event: &StoredEvent,
) -> Result<(), ProjectionError> {
    let user_id = aggregate_uuid(event)?;
    let entry = Entry::new(event, decode::<CreditEvent>(event)?);
    sqlx::query(
        "INSERT INTO credit_ledger (global_position, user_id, kind, balance_change,
                                    reserved_change, video_id, reason, payment_reference,
                                    actor, recorded_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
         ON CONFLICT (global_position) DO NOTHING",
    )
    .bind(event.global_position)
    .bind(user_id)
    .bind(entry.kind)
    .bind(entry.balance_change)
    .bind(entry.reserved_change)
    .bind(entry.video_id)
    .bind(entry.reason)
    .bind(entry.payment_reference)
    .bind(entry.actor)
    .bind(event.recorded_at)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// The columns one credit event gives its ledger row, besides position, user and time.
struct Entry<'e> {
    kind: &'static str,
    balance_change: i64,
    reserved_change: i64,
    video_id: Option<Uuid>,
    reason: Option<String>,
    payment_reference: Option<String>,
    actor: &'e str,
}

impl<'e> Entry<'e> {
    fn new(event: &'e StoredEvent, credit_event: CreditEvent) -> Self {
        let (balance_change, reserved_change) = deltas(&credit_event);
        let (kind, video_id, reason, payment_reference) = match credit_event {
            CreditEvent::CreditsGranted { reason, .. } => ("granted", None, Some(reason), None),
            CreditEvent::CreditsPurchased {
                payment_reference, ..
            } => ("purchased", None, None, Some(payment_reference)),
            CreditEvent::CreditsRevoked {
                payment_reference, ..
            } => ("revoked", None, None, Some(payment_reference)),
            CreditEvent::CreditsReserved { video_id, .. } => {
                ("reserved", Some(video_id), None, None)
            }
            CreditEvent::ReservationCaptured { video_id, .. } => {
                ("captured", Some(video_id), None, None)
            }
            CreditEvent::ReservationReleased { video_id, .. } => {
                ("released", Some(video_id), None, None)
            }
        };
        Self {
            kind,
            balance_change,
            reserved_change,
            video_id: video_id.map(|id| id.as_uuid()),
            reason,
            payment_reference,
            actor: event.meta("actor").unwrap_or("system"),
        }
    }
}

#[async_trait]
impl SetBased for CreditLedgerProjector {
    const AGGREGATE_TYPE: &'static str = CreditAccount::TYPE;

    async fn project_set(
        &self,
        conn: &mut PgConnection,
        events: &[StoredEvent],
    ) -> Result<(), BoxError> {
        let decoded = decode_all::<CreditEvent>(events, CreditAccount::TYPE)?;
        let mut rows = Rows::default();
        for event in decoded {
            let entry = Entry::new(event.event, event.body);
            rows.positions.push(event.event.global_position);
            rows.user_ids.push(event.id);
            rows.kinds.push(entry.kind);
            rows.balance_changes.push(entry.balance_change);
            rows.reserved_changes.push(entry.reserved_change);
            rows.video_ids.push(entry.video_id);
            rows.reasons.push(entry.reason);
            rows.payment_references.push(entry.payment_reference);
            rows.actors.push(entry.actor);
            rows.recorded_at.push(event.event.recorded_at);
        }
        if rows.positions.is_empty() {
            return Ok(());
        }
        // Positions are unique in the log, so no two rows of one batch conflict.
        sqlx::query(
            "INSERT INTO credit_ledger (global_position, user_id, kind, balance_change,
                                        reserved_change, video_id, reason, payment_reference,
                                        actor, recorded_at)
             SELECT * FROM unnest($1::int8[], $2::uuid[], $3::text[], $4::int8[], $5::int8[],
                                  $6::uuid[], $7::text[], $8::text[], $9::text[],
                                  $10::timestamptz[])
             ON CONFLICT (global_position) DO NOTHING",
        )
        .bind(&rows.positions)
        .bind(&rows.user_ids)
        .bind(&rows.kinds)
        .bind(&rows.balance_changes)
        .bind(&rows.reserved_changes)
        .bind(&rows.video_ids)
        .bind(&rows.reasons)
        .bind(&rows.payment_references)
        .bind(&rows.actors)
        .bind(&rows.recorded_at)
        .execute(conn)
        .await?;
        Ok(())
    }
}

/// A batch's ledger rows as columns.
#[derive(Default)]
struct Rows<'e> {
    positions: Vec<i64>,
    user_ids: Vec<Uuid>,
    kinds: Vec<&'static str>,
    balance_changes: Vec<i64>,
    reserved_changes: Vec<i64>,
    video_ids: Vec<Option<Uuid>>,
    reasons: Vec<Option<String>>,
    payment_references: Vec<Option<String>>,
    actors: Vec<&'e str>,
    recorded_at: Vec<DateTime<Utc>>,
}

/// Up to `limit` movements of a user's account, newest first, older than position `before`
/// (the `position` of the last entry of the previous page) when given.
pub async fn ledger(
    pool: &PgPool,
    user_id: UserId,
    before: Option<i64>,
    limit: i64,
) -> Result<Vec<LedgerEntry>, sqlx::Error> {
    sqlx::query_as(
        "SELECT global_position AS position, kind, balance_change, reserved_change, video_id,
                reason, payment_reference, actor, recorded_at
           FROM credit_ledger
          WHERE user_id = $1 AND global_position < $2
          ORDER BY global_position DESC
          LIMIT $3",
    )
    .bind(user_id.as_uuid())
    .bind(before.unwrap_or(i64::MAX))
    .bind(limit)
    .fetch_all(pool)
    .await
}
