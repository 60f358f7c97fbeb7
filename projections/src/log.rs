//! Reading the event log in commit-safe order.
//!
//! `global_position` is assigned at insert but becomes visible at commit, out of order: a
//! reader that remembers "the highest position seen" skips events of transactions that were
//! still open. We read in `(tx_id, global_position)` order and only below
//! `pg_snapshot_xmin(pg_current_snapshot())`, the oldest transaction still running: every
//! transaction below it has ended, so nothing can later appear behind the checkpoint
//! (docs/adr/0002-ordered-event-log.md).

use sqlx::PgConnection;

pub use framegate_commands::{LogPosition, StoredEvent};

/// Reads up to `limit` events after `after` that no running transaction can still precede.
///
/// Run it before the calling transaction writes anything: a transaction that holds an xid
/// counts itself in the snapshot's xmin and would hold its own reads back.
pub async fn read_batch(
    conn: &mut PgConnection,
    after: LogPosition,
    limit: i64,
) -> Result<Vec<StoredEvent>, sqlx::Error> {
    let mut events = sqlx::query_as::<_, StoredEvent>(
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
    .fetch_all(&mut *conn)
    .await?;
    // Personal fields opened (or `[erased]`) for the whole batch with one key lookup.
    framegate_commands::pii::open_stored(&mut *conn, &mut events)
        .await
        .map_err(pii_error)?;
    Ok(events)
}

/// A key store failure as the error readers of the log already handle.
pub fn pii_error(error: framegate_commands::pii::PiiError) -> sqlx::Error {
    match error {
        framegate_commands::pii::PiiError::Database(error) => error,
        other => sqlx::Error::Configuration(Box::new(other)),
    }
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
