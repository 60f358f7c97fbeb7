//! [`Pii::seal`] and [`Pii::open`] over the row types the crates pass around: cqrs-es's
//! `SerializedEvent` (appends, aggregate loading) and our [`StoredEvent`] (the log).

use cqrs_es::persist::SerializedEvent;
use sqlx::PgConnection;

use super::{current, EmailClaim, EventParts, ForErased, Opening, PiiError};
use crate::stored::StoredEvent;

fn serialized_parts(event: &mut SerializedEvent) -> EventParts<'_> {
    EventParts {
        aggregate_type: &event.aggregate_type,
        aggregate_id: &event.aggregate_id,
        sequence: event.sequence as i64,
        event_type: &event.event_type,
        payload: &mut event.payload,
        metadata: &mut event.metadata,
    }
}

fn stored_parts(event: &mut StoredEvent) -> EventParts<'_> {
    EventParts {
        aggregate_type: &event.aggregate_type,
        aggregate_id: &event.aggregate_id,
        sequence: event.sequence,
        event_type: &event.event_type,
        payload: &mut event.payload,
        metadata: &mut event.metadata,
    }
}

/// Seals events about to be appended (see [`super::Pii::seal`]); refuses new personal data
/// of an erased user.
pub async fn seal_serialized(
    conn: &mut PgConnection,
    events: &mut [SerializedEvent],
) -> Result<Vec<EmailClaim>, PiiError> {
    let mut parts: Vec<EventParts<'_>> = events.iter_mut().map(serialized_parts).collect();
    current().seal(conn, &mut parts, ForErased::Refuse).await
}

/// Opens events read for an aggregate (see [`super::Pii::open`]).
pub async fn open_serialized<'c>(
    db: impl sqlx::PgExecutor<'c>,
    events: &mut [SerializedEvent],
) -> Result<(), PiiError> {
    let mut parts: Vec<EventParts<'_>> = events.iter_mut().map(serialized_parts).collect();
    current().open(db, &mut parts, Opening::Everything).await
}

/// Opens events read from the log (see [`super::Pii::open`]): every reader of stored rows
/// calls this (or [`open_serialized`], or [`open_stored_as`]) before `StoredEvent::decode`.
pub async fn open_stored<'c>(
    db: impl sqlx::PgExecutor<'c>,
    events: &mut [StoredEvent],
) -> Result<(), PiiError> {
    open_stored_as(db, events, Opening::Everything).await
}

/// [`open_stored`], opening only what `opening` says.
pub async fn open_stored_as<'c>(
    db: impl sqlx::PgExecutor<'c>,
    events: &mut [StoredEvent],
    opening: Opening,
) -> Result<(), PiiError> {
    let mut parts: Vec<EventParts<'_>> = events.iter_mut().map(stored_parts).collect();
    current().open(db, &mut parts, opening).await
}
