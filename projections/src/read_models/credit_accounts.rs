//! The `credit_accounts` read model: each user's balance and reserved credits, for the
//! account endpoint and the quick "can this user afford it" display.
//!
//! Written from `CreditAccount` events as signed deltas (the events carry amounts, not
//! totals), inline in the transaction that appends them (`inline`) and by
//! [`CreditAccountsProjector`] from the log. Each row records the sequence of the last event it
//! reflects (`versioned`), so whichever writer comes second skips the event and no delta is
//! counted twice. The authoritative figures for decisions are the aggregate's, not these. In a batch each
//! account's deltas are summed: the accounts the batch opens are inserted at their sums, the
//! others take the sums in one update.

use std::collections::{HashMap, HashSet};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use cqrs_es::Aggregate as _;
use framegate_domain::{CreditAccount, CreditEvent, UserId};
use serde::Serialize;
use sqlx::{FromRow, PgConnection, PgPool};
use uuid::Uuid;

use super::batch::{decode_all, expect_rows, SetBased};
use super::versioned::{self, Versioned, VersionedModel, Writer};
use super::{aggregate_uuid, decode, expect_row, ProjectionError};
use crate::log::{Reads, StoredEvent};
use crate::subscription::{BoxError, EventHandler, HandlerError};

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
        CreditEvent::CreditsRevoked { revoked, .. } => (-revoked.value(), 0),
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
    /// Its own aggregate's bodies; nothing personal of metadata.
    fn reads(&self) -> Reads {
        Reads::bodies_of(&[CreditAccount::TYPE])
    }

    async fn handle(&self, conn: &mut PgConnection, event: &StoredEvent) -> Result<(), BoxError> {
        if event.aggregate_type != CreditAccount::TYPE {
            return Ok(());
        }
        versioned::apply::<Self>(conn, event, Writer::Projector).await
    }

    async fn handle_batch(
        &self,
        conn: &mut PgConnection,
        events: &[StoredEvent],
    ) -> Result<(), HandlerError> {
        versioned::handle_batch(self, conn, events).await
    }
}

/// Rows carry the sequence of the last event they reflect: the table is also written inline.
impl VersionedModel for CreditAccountsProjector {
    const VERSIONS: Versioned = Versioned {
        aggregate_type: CreditAccount::TYPE,
        table: "credit_accounts",
        key: "user_id",
    };

    async fn project_one(conn: &mut PgConnection, event: &StoredEvent) -> Result<(), BoxError> {
        project(conn, event).await?;
        Ok(())
    }

    /// Every event moves an account that exists by its deltas, in one guarded update; the
    /// first one of an account (no row yet) goes the general way.
    async fn apply_guarded(
        conn: &mut PgConnection,
        event: &StoredEvent,
    ) -> Result<Option<bool>, BoxError> {
        let user_id = aggregate_uuid(event)?;
        let (balance_change, reserved_change) = deltas(&decode::<CreditEvent>(event)?);
        let result = sqlx::query(
            "UPDATE credit_accounts
                SET balance = balance + $2, reserved = reserved + $3,
                    updated_at = GREATEST(updated_at, $4), version = $5
              WHERE user_id = $1 AND version = $5 - 1",
        )
        .bind(user_id)
        .bind(balance_change)
        .bind(reserved_change)
        .bind(event.recorded_at)
        .bind(event.sequence)
        .execute(&mut *conn)
        .await
        .map_err(ProjectionError::from)?;
        Ok(Some(result.rows_affected() == 1))
    }
}

#[async_trait]
impl SetBased for CreditAccountsProjector {
    const AGGREGATE_TYPE: &'static str = CreditAccount::TYPE;

    async fn project_set(
        &self,
        conn: &mut PgConnection,
        events: &[StoredEvent],
    ) -> Result<(), BoxError> {
        let mut sums: Vec<AccountSum> = Vec::new();
        let mut index: HashMap<Uuid, usize> = HashMap::new();
        for event in decode_all::<CreditEvent>(events, CreditAccount::TYPE)? {
            let at = event.event.recorded_at;
            let slot = *index.entry(event.id).or_insert_with(|| {
                sums.push(AccountSum::new(event.id, at));
                sums.len() - 1
            });
            sums[slot]
                .add(deltas(&event.body), at)
                .ok_or("credit deltas overflow")?;
        }
        write_sums(conn, &sums).await?;
        Ok(())
    }
}

/// One account's events of a batch, summed. The table's CHECK holds after every event one
/// by one, so the lowest running totals are kept: the sums alone could pass where a step
/// in between fails.
struct AccountSum {
    user_id: Uuid,
    /// The first event's time: a row that has to start at zero starts there.
    first_at: DateTime<Utc>,
    last_at: DateTime<Utc>,
    balance: i64,
    reserved: i64,
    /// The lowest running total of reserved changes.
    lowest_reserved: i64,
    /// The lowest running total of available (balance − reserved) changes.
    lowest_available: i64,
}

impl AccountSum {
    fn new(user_id: Uuid, at: DateTime<Utc>) -> Self {
        Self {
            user_id,
            first_at: at,
            last_at: at,
            balance: 0,
            reserved: 0,
            lowest_reserved: i64::MAX,
            lowest_available: i64::MAX,
        }
    }

    /// `None` on overflow.
    fn add(&mut self, (balance, reserved): (i64, i64), at: DateTime<Utc>) -> Option<()> {
        self.balance = self.balance.checked_add(balance)?;
        self.reserved = self.reserved.checked_add(reserved)?;
        let available = self.balance.checked_sub(self.reserved)?;
        self.lowest_reserved = self.lowest_reserved.min(self.reserved);
        self.lowest_available = self.lowest_available.min(available);
        self.last_at = self.last_at.max(at);
        Some(())
    }
}

async fn write_sums(conn: &mut PgConnection, sums: &[AccountSum]) -> Result<(), ProjectionError> {
    // An account the batch opens ends at its sums if every step from zero keeps the CHECK:
    // such rows go in with their end state at once, and RETURNING says which were new.
    let opening: Vec<&AccountSum> = sums
        .iter()
        .filter(|s| s.lowest_reserved >= 0 && s.lowest_available >= 0)
        .collect();
    let inserted: HashSet<Uuid> = if opening.is_empty() {
        HashSet::new()
    } else {
        let opened: Vec<Uuid> = sqlx::query_scalar(
            "INSERT INTO credit_accounts (user_id, balance, reserved, updated_at)
             SELECT * FROM unnest($1::uuid[], $2::int8[], $3::int8[], $4::timestamptz[])
             ON CONFLICT (user_id) DO NOTHING
             RETURNING user_id",
        )
        .bind(opening.iter().map(|s| s.user_id).collect::<Vec<_>>())
        .bind(opening.iter().map(|s| s.balance).collect::<Vec<_>>())
        .bind(opening.iter().map(|s| s.reserved).collect::<Vec<_>>())
        .bind(opening.iter().map(|s| s.last_at).collect::<Vec<_>>())
        .fetch_all(&mut *conn)
        .await?;
        opened.into_iter().collect()
    };
    let rest: Vec<&AccountSum> = sums
        .iter()
        .filter(|s| !inserted.contains(&s.user_id))
        .collect();
    if rest.is_empty() {
        return Ok(());
    }
    // As one by one: a missing row starts at zero, then the deltas apply in a separate
    // statement (the CHECK is evaluated on the row an upsert proposes). Only an account
    // whose steps break the CHECK from zero can still be missing here.
    let unopened: Vec<&AccountSum> = rest
        .iter()
        .copied()
        .filter(|s| s.lowest_reserved < 0 || s.lowest_available < 0)
        .collect();
    if !unopened.is_empty() {
        sqlx::query(
            "INSERT INTO credit_accounts (user_id, balance, reserved, updated_at)
             SELECT id, 0, 0, at FROM unnest($1::uuid[], $2::timestamptz[]) AS a(id, at)
             ON CONFLICT (user_id) DO NOTHING",
        )
        .bind(unopened.iter().map(|s| s.user_id).collect::<Vec<_>>())
        .bind(unopened.iter().map(|s| s.first_at).collect::<Vec<_>>())
        .execute(&mut *conn)
        .await?;
    }
    // A row whose running totals would break the CHECK on the way is left alone and the
    // count comes up short: the per-event path then fails on the very event.
    let result = sqlx::query(
        "UPDATE credit_accounts c
            SET balance = c.balance + d.balance, reserved = c.reserved + d.reserved,
                updated_at = GREATEST(c.updated_at, d.at)
           FROM unnest($1::uuid[], $2::int8[], $3::int8[], $4::int8[], $5::int8[],
                       $6::timestamptz[])
                AS d(id, balance, reserved, lowest_reserved, lowest_available, at)
          WHERE c.user_id = d.id
            AND c.reserved + d.lowest_reserved >= 0
            AND c.balance - c.reserved + d.lowest_available >= 0",
    )
    .bind(rest.iter().map(|s| s.user_id).collect::<Vec<_>>())
    .bind(rest.iter().map(|s| s.balance).collect::<Vec<_>>())
    .bind(rest.iter().map(|s| s.reserved).collect::<Vec<_>>())
    .bind(rest.iter().map(|s| s.lowest_reserved).collect::<Vec<_>>())
    .bind(rest.iter().map(|s| s.lowest_available).collect::<Vec<_>>())
    .bind(rest.iter().map(|s| s.last_at).collect::<Vec<_>>())
    .execute(&mut *conn)
    .await?;
    expect_rows(&result, rest.len(), "credit accounts updated by a batch")
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
