//! The set-based `handle_batch` every projector shares.
//!
//! Projecting a replay or a backlog one statement per event is bound by round trips, so each
//! projector also has a set-based path: decode the batch's events first, fold consecutive
//! events of one row in memory, and write the result with a few multi-row statements. That path
//! is an optimisation, never a second semantics: it runs inside a savepoint, and whenever it
//! cannot vouch for the exact per-event outcome (a payload that does not decode, a row an event
//! needs that is missing, a constraint an intermediate state would break, any database error) it
//! declines, the savepoint is rolled back, and the batch is projected event by event. That path
//! then stops at the first failing event and names it exactly as it always did, so nothing is
//! skipped and errors do not depend on how the log was cut into batches.

use async_trait::async_trait;
use serde::de::DeserializeOwned;
use sqlx::{Connection as _, PgConnection};
use tracing::debug;
use uuid::Uuid;

use super::{aggregate_uuid, decode, ProjectionError};
use crate::log::StoredEvent;
use crate::subscription::{BoxError, EventHandler, HandlerError};

/// Below this many events of the projector's aggregate type a batch goes event by event: the
/// savepoint and the multi-row statements would cost more round trips than they save.
const SET_BASED_FROM: usize = 2;

/// A projector with a set-based path for whole batches.
#[async_trait]
pub(crate) trait SetBased: EventHandler {
    /// The aggregate type whose events the projector follows; it ignores all others.
    const AGGREGATE_TYPE: &'static str;

    /// Projects `events` (all types, in log order) with the same result as `handle` on each
    /// in turn, or returns why it cannot; the caller then rolls back whatever it wrote.
    async fn project_set(
        &self,
        conn: &mut PgConnection,
        events: &[StoredEvent],
    ) -> Result<(), BoxError>;
}

/// `EventHandler::handle_batch` for a set-based projector: the set-based path in a savepoint,
/// the per-event path when it declines.
pub(crate) async fn handle_batch<P: SetBased>(
    projector: &P,
    conn: &mut PgConnection,
    events: &[StoredEvent],
) -> Result<(), HandlerError> {
    let mut followed = events
        .iter()
        .filter(|event| event.aggregate_type == P::AGGREGATE_TYPE);
    let Some(first) = followed.next() else {
        return Ok(());
    };
    if followed.count() + 1 < SET_BASED_FROM {
        return one_by_one(projector, conn, events).await;
    }
    // A savepoint inside the caller's transaction (a transaction of its own without one).
    let mut savepoint = conn
        .begin()
        .await
        .map_err(|source| HandlerError::at(first, source))?;
    match projector.project_set(&mut savepoint, events).await {
        Ok(()) => {
            return savepoint
                .commit()
                .await
                .map_err(|source| HandlerError::at(first, source));
        }
        Err(reason) => {
            debug!(%reason, events = events.len(), "set-based projection declined the batch");
            savepoint
                .rollback()
                .await
                .map_err(|source| HandlerError::at(first, source))?;
        }
    }
    one_by_one(projector, conn, events).await
}

/// The per-event path: `handle` on each event in log order, stopping at the first failure.
async fn one_by_one<P: EventHandler>(
    projector: &P,
    conn: &mut PgConnection,
    events: &[StoredEvent],
) -> Result<(), HandlerError> {
    for event in events {
        projector
            .handle(conn, event)
            .await
            .map_err(|source| HandlerError::at(event, source))?;
    }
    Ok(())
}

/// One event of the followed aggregate type, decoded.
pub(crate) struct Decoded<'e, E> {
    pub event: &'e StoredEvent,
    /// The aggregate id as a UUID.
    pub id: Uuid,
    pub body: E,
}

/// Decodes every event of `aggregate_type` in `events`, in order, the way `handle` does; the
/// first that fails fails the whole (the per-event path then names it).
pub(crate) fn decode_all<'e, E: DeserializeOwned>(
    events: &'e [StoredEvent],
    aggregate_type: &str,
) -> Result<Vec<Decoded<'e, E>>, ProjectionError> {
    events
        .iter()
        .filter(|event| event.aggregate_type == aggregate_type)
        .map(|event| {
            Ok(Decoded {
                event,
                id: aggregate_uuid(event)?,
                body: decode(event)?,
            })
        })
        .collect()
}

/// Fails unless an `UPDATE ... FROM unnest(...)` found a row for each of its `expected`
/// (distinct) keys: a missing row is an event the per-event path refuses.
pub(crate) fn expect_rows(
    result: &sqlx::postgres::PgQueryResult,
    expected: usize,
    what: &str,
) -> Result<(), ProjectionError> {
    if result.rows_affected() != expected as u64 {
        return Err(ProjectionError::Inconsistent(format!(
            "{what}: {} of {expected} rows updated",
            result.rows_affected()
        )));
    }
    Ok(())
}
