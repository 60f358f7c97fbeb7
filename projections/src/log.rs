//! Reading the event log in commit-safe order.
//!
//! `global_position` is assigned at insert but becomes visible at commit, out of order: a
//! reader that remembers "the highest position seen" skips events of transactions that were
//! still open. We read in `(tx_id, global_position)` order and only below
//! `pg_snapshot_xmin(pg_current_snapshot())`, the oldest transaction still running: every
//! transaction below it has ended, so nothing can later appear behind the checkpoint
//! (docs/adr/0002-ordered-event-log.md).

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::{FromRow, PgConnection};
use uuid::Uuid;

pub use framegate_commands::LogPosition;

/// One event as stored, with the columns the log adds to what postgres-es writes.
#[derive(Debug, Clone, PartialEq, FromRow)]
pub struct StoredEvent {
    pub global_position: i64,
    pub tx_id: i64,
    pub event_id: Uuid,
    pub recorded_at: DateTime<Utc>,
    pub aggregate_type: String,
    pub aggregate_id: String,
    pub sequence: i64,
    pub event_type: String,
    pub event_version: String,
    pub payload: Value,
    pub metadata: Value,
}

impl StoredEvent {
    pub fn position(&self) -> LogPosition {
        LogPosition {
            tx_id: self.tx_id,
            global_position: self.global_position,
        }
    }

    /// A metadata entry (actor, correlation_id, ...), if present.
    pub fn meta(&self, key: &str) -> Option<&str> {
        self.metadata.get(key).and_then(Value::as_str)
    }
}

/// Reads up to `limit` events after `after` that no running transaction can still precede.
///
/// Run it before the calling transaction writes anything: a transaction that holds an xid
/// counts itself in the snapshot's xmin and would hold its own reads back.
pub async fn read_batch(
    conn: &mut PgConnection,
    after: LogPosition,
    limit: i64,
) -> Result<Vec<StoredEvent>, sqlx::Error> {
    sqlx::query_as::<_, StoredEvent>(
        "SELECT global_position, tx_id::text::bigint AS tx_id, event_id, recorded_at,
                aggregate_type, aggregate_id, sequence, event_type, event_version,
                payload, metadata
           FROM events
          WHERE (tx_id, global_position) > ($1::bigint::text::xid8, $2)
            AND tx_id < pg_snapshot_xmin(pg_current_snapshot())
          ORDER BY events.tx_id, events.global_position -- the columns, not the output alias
          LIMIT $3",
    )
    .bind(after.tx_id)
    .bind(after.global_position)
    .bind(limit)
    .fetch_all(conn)
    .await
}

/// Events that exist after `after` but are not yet readable or not yet read: how far a
/// subscription at `after` lags behind the store.
pub async fn lag(conn: &mut PgConnection, after: LogPosition) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT count(*) FROM events
          WHERE (tx_id, global_position) > ($1::bigint::text::xid8, $2)",
    )
    .bind(after.tx_id)
    .bind(after.global_position)
    .fetch_one(conn)
    .await
}
