//! The event repository behind cqrs-es: postgres-es for reading, one statement for writing.
//!
//! Loading delegates to postgres-es's `PostgresEventRepository` (event-store mode: the whole
//! stream is replayed). Appending is ours: postgres-es opens a transaction and inserts event by
//! event (BEGIN, INSERT per event, COMMIT); we append all of a command's events with a single
//! multi-row `INSERT ... SELECT FROM unnest(...)`, atomic on its own, which also returns the
//! log positions written. That halves the round trips of a command and gives callers the
//! position they need for read-your-writes (docs/adr/0001-event-store-mode-only.md).

use std::cell::Cell;

use cqrs_es::persist::{
    PersistedEventRepository, PersistenceError, ReplayStream, SerializedEvent, SerializedSnapshot,
};
use cqrs_es::Aggregate;
use postgres_es::PostgresEventRepository;
use serde_json::Value;
use sqlx::PgPool;

use crate::position::LogPosition;

tokio::task_local! {
    /// Where `persist` reports the position of the last event it appended, for the command
    /// executing in this task (see `store::Aggregates::execute`).
    pub(crate) static WRITTEN: Cell<Option<LogPosition>>;
}

/// The common case, one event: the simplest statement for Postgres to plan and run.
const APPEND_ONE: &str = "
INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata)
VALUES ($1, $2, $3, $4, $5, $6, $7)
RETURNING tx_id::text::bigint, global_position";

const APPEND: &str = "
INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata)
SELECT $1, $2, e.sequence, e.event_type, e.event_version, e.payload, e.metadata
  FROM unnest($3::bigint[], $4::text[], $5::text[], $6::jsonb[], $7::jsonb[])
       AS e(sequence, event_type, event_version, payload, metadata)
RETURNING tx_id::text::bigint, global_position";

pub struct EventRepository {
    pool: PgPool,
    reader: PostgresEventRepository,
}

impl EventRepository {
    pub fn new(pool: PgPool) -> Self {
        Self {
            reader: PostgresEventRepository::new(pool.clone()),
            pool,
        }
    }

    async fn append<A: Aggregate>(
        &self,
        events: &[SerializedEvent],
    ) -> Result<Option<LogPosition>, sqlx::Error> {
        let Some(first) = events.first() else {
            return Ok(None);
        };
        if let [event] = events {
            let (tx_id, global_position) = sqlx::query_as(APPEND_ONE)
                .bind(A::TYPE)
                .bind(&event.aggregate_id)
                .bind(event.sequence as i64)
                .bind(&event.event_type)
                .bind(&event.event_version)
                .bind(&event.payload)
                .bind(&event.metadata)
                .fetch_one(&self.pool)
                .await?;
            return Ok(Some(LogPosition {
                tx_id,
                global_position,
            }));
        }
        let rows: Vec<(i64, i64)> = sqlx::query_as(APPEND)
            .bind(A::TYPE)
            .bind(&first.aggregate_id)
            .bind(events.iter().map(|e| e.sequence as i64).collect::<Vec<_>>())
            .bind(
                events
                    .iter()
                    .map(|e| e.event_type.clone())
                    .collect::<Vec<_>>(),
            )
            .bind(
                events
                    .iter()
                    .map(|e| e.event_version.clone())
                    .collect::<Vec<_>>(),
            )
            .bind(events.iter().map(|e| e.payload.clone()).collect::<Vec<_>>())
            .bind(
                events
                    .iter()
                    .map(|e| e.metadata.clone())
                    .collect::<Vec<_>>(),
            )
            .fetch_all(&self.pool)
            .await?;
        Ok(rows
            .into_iter()
            .map(|(tx_id, global_position)| LogPosition {
                tx_id,
                global_position,
            })
            .max())
    }
}

/// How postgres-es classifies errors, kept identical: a unique violation (another command
/// appended the same sequence first, or the email index) is an optimistic-lock conflict.
fn persistence_error(error: sqlx::Error) -> PersistenceError {
    match &error {
        sqlx::Error::Database(db) if db.code().as_deref() == Some("23505") => {
            PersistenceError::OptimisticLockError
        }
        sqlx::Error::Io(_) | sqlx::Error::Tls(_) | sqlx::Error::PoolTimedOut => {
            PersistenceError::ConnectionError(Box::new(error))
        }
        _ => PersistenceError::UnknownError(Box::new(error)),
    }
}

impl PersistedEventRepository for EventRepository {
    async fn get_events<A: Aggregate>(
        &self,
        aggregate_id: &str,
    ) -> Result<Vec<SerializedEvent>, PersistenceError> {
        self.reader.get_events::<A>(aggregate_id).await
    }

    async fn get_last_events<A: Aggregate>(
        &self,
        aggregate_id: &str,
        last_sequence: usize,
    ) -> Result<Vec<SerializedEvent>, PersistenceError> {
        self.reader
            .get_last_events::<A>(aggregate_id, last_sequence)
            .await
    }

    async fn get_snapshot<A: Aggregate>(
        &self,
        _aggregate_id: &str,
    ) -> Result<Option<SerializedSnapshot>, PersistenceError> {
        // Event-store mode never asks; there is no snapshot table to read.
        Ok(None)
    }

    async fn persist<A: Aggregate>(
        &self,
        events: &[SerializedEvent],
        snapshot_update: Option<(String, Value, usize)>,
    ) -> Result<(), PersistenceError> {
        if snapshot_update.is_some() {
            return Err(PersistenceError::UnknownError(
                "snapshots are disabled (docs/adr/0001-event-store-mode-only.md)".into(),
            ));
        }
        let written = self.append::<A>(events).await.map_err(persistence_error)?;
        let _ = WRITTEN.try_with(|cell| cell.set(written));
        Ok(())
    }

    async fn stream_events<A: Aggregate>(
        &self,
        aggregate_id: &str,
    ) -> Result<ReplayStream, PersistenceError> {
        self.reader.stream_events::<A>(aggregate_id).await
    }

    async fn stream_all_events<A: Aggregate>(&self) -> Result<ReplayStream, PersistenceError> {
        self.reader.stream_all_events::<A>().await
    }
}
