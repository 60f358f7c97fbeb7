//! The dead-letter table: events a subscription could not handle, with their errors
//! (`parked_events`, migration 0010).
//!
//! The runner parks an event that keeps failing (see `failure`), re-handles the parked events
//! an operator asked to retry (`framegate projections retry`), and deletes each row once its
//! event went through. Status, readiness and the command line read the table.

use chrono::{DateTime, Utc};
use sqlx::{FromRow, PgConnection, PgPool};
use uuid::Uuid;

use crate::log::{Reads, StoredEvent};
use crate::subscription::HandlerError;

/// The channel a retry request is announced on (payload: the subscription's name).
pub const CONTROL_CHANNEL: &str = "framegate_subscriptions";

/// One parked event.
#[derive(Debug, Clone, PartialEq, Eq, FromRow)]
pub struct Parked {
    pub subscription: String,
    pub global_position: i64,
    pub event_id: Uuid,
    pub event_type: String,
    pub aggregate_type: String,
    pub aggregate_id: String,
    pub sequence: i64,
    pub error: String,
    pub attempts: i32,
    /// The subscription stopped before this event and waits for it to be retried.
    pub blocking: bool,
    pub parked_at: DateTime<Utc>,
    pub last_attempt_at: DateTime<Utc>,
    pub retry_requested_at: Option<DateTime<Utc>>,
}

const COLUMNS: &str = "subscription, global_position, event_id, event_type, aggregate_type,
    aggregate_id, sequence, error, attempts, blocking, parked_at, last_attempt_at,
    retry_requested_at";

/// Records that `subscription` failed on the event `failure` names: a new row, or one more
/// attempt on the row it has.
pub async fn park(
    conn: &mut PgConnection,
    subscription: &str,
    failure: &HandlerError,
    blocking: bool,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO parked_events (subscription, global_position, event_id, event_type,
                                    aggregate_type, aggregate_id, sequence, error, blocking)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
         ON CONFLICT (subscription, global_position) DO UPDATE
            SET error = EXCLUDED.error, blocking = EXCLUDED.blocking,
                attempts = parked_events.attempts + 1, last_attempt_at = now(),
                retry_requested_at = NULL",
    )
    .bind(subscription)
    .bind(failure.global_position)
    .bind(failure.event_id)
    .bind(&failure.event_type)
    .bind(&failure.aggregate_type)
    .bind(&failure.aggregate_id)
    .bind(failure.sequence)
    .bind(failure.source.to_string())
    .bind(blocking)
    .execute(conn)
    .await?;
    Ok(())
}

/// The parked events of `subscription` an operator asked to retry, oldest first, with the
/// events themselves, read as its batches read them (`reads`): a retry sees no more than the
/// live read did, so it cannot pass where the live read failed for want of a body.
pub async fn requested(
    pool: &PgPool,
    subscription: &str,
    reads: &Reads,
) -> Result<Vec<(Parked, Option<StoredEvent>)>, sqlx::Error> {
    let parked: Vec<Parked> = sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM parked_events
          WHERE subscription = $1 AND retry_requested_at IS NOT NULL
          ORDER BY global_position"
    ))
    .bind(subscription)
    .fetch_all(pool)
    .await?;
    let mut found = Vec::with_capacity(parked.len());
    for row in parked {
        let mut event = sqlx::query_as::<_, StoredEvent>(&format!(
            "SELECT {} FROM events WHERE global_position = $1",
            crate::log::columns("$2", reads.opening)
        ))
        .bind(row.global_position)
        .bind(&reads.bodies_of)
        .fetch_optional(pool)
        .await?;
        if let Some(event) = event.as_mut() {
            let mut conn = pool.acquire().await?;
            crate::log::open(&mut conn, std::slice::from_mut(event), reads).await?;
        }
        found.push((row, event));
    }
    Ok(found)
}

/// The event went through: its row goes.
pub async fn resolve(
    conn: &mut PgConnection,
    subscription: &str,
    global_position: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query("DELETE FROM parked_events WHERE subscription = $1 AND global_position = $2")
        .bind(subscription)
        .bind(global_position)
        .execute(conn)
        .await?;
    Ok(())
}

/// Forgets a retry request without handling it (a blocking event: the runner reads it again
/// from its checkpoint instead).
pub async fn clear_request(
    pool: &PgPool,
    subscription: &str,
    global_position: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE parked_events SET retry_requested_at = NULL
          WHERE subscription = $1 AND global_position = $2",
    )
    .bind(subscription)
    .bind(global_position)
    .execute(pool)
    .await?;
    Ok(())
}

/// Deletes the blocking rows a subscription has now moved past.
pub async fn resolve_passed(
    conn: &mut PgConnection,
    subscription: &str,
    global_position: i64,
) -> Result<u64, sqlx::Error> {
    let done = sqlx::query(
        "DELETE FROM parked_events
          WHERE subscription = $1 AND blocking AND global_position <= $2",
    )
    .bind(subscription)
    .bind(global_position)
    .execute(conn)
    .await?;
    Ok(done.rows_affected())
}

/// The position of the parked event `subscription` stopped at, if it stopped at one.
pub async fn blocking_position(
    pool: &PgPool,
    subscription: &str,
) -> Result<Option<i64>, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT min(global_position) FROM parked_events WHERE subscription = $1 AND blocking",
    )
    .bind(subscription)
    .fetch_one(pool)
    .await
}

/// Every parked event, by subscription and position.
pub async fn list(pool: &PgPool) -> Result<Vec<Parked>, sqlx::Error> {
    sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM parked_events ORDER BY subscription, global_position"
    ))
    .fetch_all(pool)
    .await
}

/// Asks the running `subscription` to re-handle its parked events (only the one at
/// `position`, if given) and announces it; returns how many rows were asked for.
pub async fn request_retry(
    pool: &PgPool,
    subscription: &str,
    position: Option<i64>,
) -> Result<u64, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let asked = sqlx::query(
        "UPDATE parked_events SET retry_requested_at = now()
          WHERE subscription = $1 AND ($2::bigint IS NULL OR global_position = $2)",
    )
    .bind(subscription)
    .bind(position)
    .execute(&mut *tx)
    .await?
    .rows_affected();
    sqlx::query("SELECT pg_notify($1, $2)")
        .bind(CONTROL_CHANNEL)
        .bind(subscription)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(asked)
}
