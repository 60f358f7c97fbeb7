//! The `credit_accounts` read model: each user's balance and reserved credits, for the
//! account endpoint and the quick "can this user afford it" display.
//!
//! Written only by [`CreditAccountsProjector`] from `CreditAccount` events, as signed deltas
//! (the events carry amounts, not totals). The table has no per-account position, so unlike
//! the other read models a re-delivered event would be counted twice: exactly-once rests on
//! the subscription committing the delta and its checkpoint in one transaction. The
//! authoritative figures for decisions are the aggregate's, not these.

use async_trait::async_trait;
use cqrs_es::Aggregate as _;
use framegate_domain::{CreditAccount, CreditEvent, UserId};
use serde::Serialize;
use sqlx::{FromRow, PgConnection, PgPool};
use uuid::Uuid;

use super::{aggregate_uuid, decode, expect_row, ProjectionError};
use crate::log::StoredEvent;
use crate::subscription::{BoxError, EventHandler};

/// The subscription name of the credit accounts projector.
pub const SUBSCRIPTION: &str = "read_model.credit_accounts";

/// A user's credits; `available` = `balance` − `reserved`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, FromRow)]
pub struct CreditAccountRow {
    pub user_id: Uuid,
    pub balance: i64,
    pub reserved: i64,
    pub available: i64,
}

/// How one credit event moves an account: `(balance change, reserved change)`. Shared with
/// the ledger so the two read models cannot disagree.
pub(crate) fn deltas(event: &CreditEvent) -> (i64, i64) {
    match event {
        CreditEvent::CreditsGranted { amount, .. }
        | CreditEvent::CreditsPurchased { amount, .. } => (amount.value(), 0),
        CreditEvent::CreditsReserved { amount, .. } => (0, amount.value()),
        CreditEvent::ReservationCaptured {
            reserved, captured, ..
        } => (-captured.value(), -reserved.value()),
        CreditEvent::ReservationReleased { amount, .. } => (0, -amount.value()),
    }
}

/// Projects `CreditAccount` events into `credit_accounts`.
#[derive(Debug, Clone, Copy, Default)]
pub struct CreditAccountsProjector;

#[async_trait]
impl EventHandler for CreditAccountsProjector {
    async fn handle(&self, conn: &mut PgConnection, event: &StoredEvent) -> Result<(), BoxError> {
        if event.aggregate_type != CreditAccount::TYPE {
            return Ok(());
        }
        project(conn, event).await?;
        Ok(())
    }
}

async fn project(conn: &mut PgConnection, event: &StoredEvent) -> Result<(), ProjectionError> {
    let user_id = aggregate_uuid(event)?;
    let (balance_change, reserved_change) = deltas(&decode::<CreditEvent>(event)?);
    // The row starts at zero and the deltas apply in a separate statement: the table's CHECK
    // is evaluated on the row an upsert proposes, which a negative delta alone would fail.
    sqlx::query(
        "INSERT INTO credit_accounts (user_id, balance, reserved, updated_at)
         VALUES ($1, 0, 0, $2)
         ON CONFLICT (user_id) DO NOTHING",
    )
    .bind(user_id)
    .bind(event.recorded_at)
    .execute(&mut *conn)
    .await?;
    let result = sqlx::query(
        "UPDATE credit_accounts
            SET balance = balance + $2, reserved = reserved + $3,
                updated_at = GREATEST(updated_at, $4)
          WHERE user_id = $1",
    )
    .bind(user_id)
    .bind(balance_change)
    .bind(reserved_change)
    .bind(event.recorded_at)
    .execute(&mut *conn)
    .await?;
    expect_row(&result, || format!("no credit account row for {user_id}"))
}

/// A user's credits, all zero when nothing has happened on the account yet.
pub async fn account(pool: &PgPool, user_id: UserId) -> Result<CreditAccountRow, sqlx::Error> {
    let row: Option<CreditAccountRow> = sqlx::query_as(
        "SELECT user_id, balance, reserved, balance - reserved AS available
           FROM credit_accounts WHERE user_id = $1",
    )
    .bind(user_id.as_uuid())
    .fetch_optional(pool)
    .await?;
    Ok(row.unwrap_or(CreditAccountRow {
        user_id: user_id.as_uuid(),
        balance: 0,
        reserved: 0,
        available: 0,
    }))
}
