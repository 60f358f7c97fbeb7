//! The event repository behind cqrs-es: postgres-es for reading, one statement for writing.
//!
//! Loading delegates to postgres-es's `PostgresEventRepository` (event-store mode: the whole
//! stream is replayed), then opens the personal fields (`crate::pii`). Appending is ours:
//! postgres-es opens a transaction and inserts event by event (BEGIN, INSERT per event,
//! COMMIT); we append all of a command's events with a single multi-row
//! `INSERT ... SELECT FROM unnest(...)`, atomic on its own, which also returns the events as
//! stored. When inline read models follow the aggregate, or the request holds an
//! Idempotency-Key, the append runs in a unit of work so that they commit with it
//! (docs/adr/0001-event-store-mode-only.md, docs/adr/0015-one-transaction-video-request.md).

use std::cell::Cell;
use std::sync::Arc;

use cqrs_es::persist::{
    PersistedEventRepository, PersistenceError, ReplayStream, SerializedEvent, SerializedSnapshot,
};
use cqrs_es::Aggregate;
use postgres_es::PostgresEventRepository;
use serde_json::Value;
use sqlx::PgPool;

use crate::idempotency;
use crate::inline::InlineProjection;
use crate::position::LogPosition;
use crate::stored::StoredEvent;
use crate::unit::{self, AppendError, UnitOfWork};

tokio::task_local! {
    /// Where `persist` reports the position of the last event it appended, for the command
    /// executing in this task (see `store::Aggregates::execute`).
    pub(crate) static WRITTEN: Cell<Option<LogPosition>>;
}

pub struct EventRepository {
    pool: PgPool,
    reader: PostgresEventRepository,
    inline: Option<Arc<dyn InlineProjection>>,
}

impl EventRepository {
    pub fn new(pool: PgPool, inline: Option<Arc<dyn InlineProjection>>) -> Self {
        Self {
            reader: PostgresEventRepository::new(pool.clone()),
            pool,
            inline,
        }
    }

    /// Appends one command's events. Alone when nothing else must commit with them; in a
    /// unit of work when an inline read model follows their aggregate type or the request
    /// holds an Idempotency-Key (whose record must say, atomically, that it took effect).
    async fn append<A: Aggregate>(
        &self,
        events: &[SerializedEvent],
    ) -> Result<Option<LogPosition>, AppendError> {
        if events.is_empty() {
            return Ok(None);
        }
        let inline = self
            .inline
            .as_ref()
            .filter(|inline| inline.follows(A::TYPE));
        let written = if inline.is_some() || idempotency::current().is_some() {
            let mut unit = UnitOfWork::begin(&self.pool, inline.cloned()).await?;
            unit.append_serialized(events).await?;
            unit.commit().await?
        } else {
            let mut conn = self.pool.acquire().await?;
            let written = unit::insert(&mut conn, events).await?;
            crate::metrics::committed(&written);
            written
        };
        Ok(written.iter().map(StoredEvent::position).max())
    }

    /// Events read for an aggregate with their personal data opened (`crate::pii`).
    async fn open(
        &self,
        mut events: Vec<SerializedEvent>,
    ) -> Result<Vec<SerializedEvent>, PersistenceError> {
        crate::pii::open_serialized(&self.pool, &mut events)
            .await
            .map_err(|error| PersistenceError::UnknownError(Box::new(error)))?;
        Ok(events)
    }
}

/// How postgres-es classifies errors, kept: a unique violation (another command appended the
/// same sequence first, or the email index) is an optimistic-lock conflict.
fn persistence_error(error: AppendError) -> PersistenceError {
    match error {
        AppendError::Conflict => PersistenceError::OptimisticLockError,
        AppendError::Database(
            error @ (sqlx::Error::Io(_) | sqlx::Error::Tls(_) | sqlx::Error::PoolTimedOut),
        ) => PersistenceError::ConnectionError(Box::new(error)),
        other => PersistenceError::UnknownError(Box::new(other)),
    }
}

impl PersistedEventRepository for EventRepository {
    async fn get_events<A: Aggregate>(
        &self,
        aggregate_id: &str,
    ) -> Result<Vec<SerializedEvent>, PersistenceError> {
        let events = self.reader.get_events::<A>(aggregate_id).await?;
        self.open(events).await
    }

    async fn get_last_events<A: Aggregate>(
        &self,
        aggregate_id: &str,
        last_sequence: usize,
    ) -> Result<Vec<SerializedEvent>, PersistenceError> {
        let events = self
            .reader
            .get_last_events::<A>(aggregate_id, last_sequence)
            .await?;
        self.open(events).await
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
