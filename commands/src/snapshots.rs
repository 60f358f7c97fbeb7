//! Verified snapshots of our own (docs/adr/0021-credit-account-snapshots.md).
//!
//! A credit account's stream grows by two events per video for as long as its user stays, and
//! every video request loads the account. [`SnapshotStore`] is the cqrs-es event store the
//! frameworks run on: for an aggregate type given a [`SnapshotPolicy`], a load starts from the
//! row in `aggregate_snapshots` (if there is one of the policy's version) and applies only
//! the events after it. Without a policy it is postgres-es's event-store mode, unchanged.
//!
//! Snapshots are written from committed events only: a load that applied `every` events or
//! more past the snapshot stores the state it just rebuilt, outside any command's
//! transaction (never the state a command is about to commit, which is what makes the 0.5
//! snapshot modes of cqrs-es count events twice). A snapshot is a cache: deleting any or all
//! rows is always safe, and one that does not decode, or is of another version, is ignored.
//!
//! Given a [`StateCache`], a load first takes the state this process's last command on the
//! aggregate committed, and a commit returns the state its events led to: no read at all
//! while one process keeps working on an account (`cache`).

use std::collections::HashMap;
use std::sync::Arc;

use cqrs_es::persist::{
    EventStoreAggregateContext, PersistedEventRepository, PersistedEventStore, PersistenceError,
    SerializedEvent,
};
use cqrs_es::{Aggregate, AggregateError, EventEnvelope, EventStore};
use sqlx::PgPool;
use tracing::warn;

use crate::cache::StateCache;
use crate::repository::EventRepository;

/// When an aggregate type is snapshotted, and which shape of its state a snapshot holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SnapshotPolicy {
    /// A load that applied this many events past the snapshot writes a new one.
    pub every: usize,
    /// The aggregate's state version (bumped when its fields or their meaning change):
    /// snapshots of any other version are ignored.
    pub version: i32,
}

/// A stored snapshot, not decoded yet.
struct Snapshot {
    sequence: usize,
    state: serde_json::Value,
}

/// A row of [`SnapshotStore::read`]: the snapshot (first, if any) or an event after it.
#[derive(sqlx::FromRow)]
struct Row {
    snapshot: bool,
    sequence: i64,
    event_type: String,
    event_version: String,
    payload: serde_json::Value,
    metadata: serde_json::Value,
}

/// The event store of one aggregate type.
pub struct SnapshotStore<A: Aggregate> {
    events: PersistedEventStore<EventRepository, A>,
    repository: EventRepository,
    pool: PgPool,
    policy: Option<SnapshotPolicy>,
    /// States committed by this process, handed from one command to the next (`cache`).
    cache: Option<Arc<StateCache<A>>>,
}

impl<A: Aggregate> SnapshotStore<A> {
    /// `repository` makes the repositories it reads and appends through.
    pub fn new(
        pool: PgPool,
        repository: impl Fn() -> EventRepository,
        policy: Option<SnapshotPolicy>,
        cache: Option<Arc<StateCache<A>>>,
    ) -> Self {
        Self {
            events: PersistedEventStore::new_event_store(repository())
                .with_upcasters(crate::upcasting::DomainUpcasters::boxed()),
            repository: repository(),
            pool,
            policy,
            cache,
        }
    }

    /// Keeps `state`, committed at `sequence`, for the next command on `aggregate_id`.
    pub fn remember(&self, aggregate_id: &str, state: A, sequence: usize) {
        if let Some(cache) = &self.cache {
            cache.put(aggregate_id, state, sequence);
        }
    }

    /// The current state from the store, leaving the cache alone (for readers that do not
    /// hold the aggregate's lock).
    pub async fn load_stored(
        &self,
        aggregate_id: &str,
    ) -> Result<EventStoreAggregateContext<A>, AggregateError<A::Error>> {
        let Some(policy) = self.policy else {
            return self.events.load_aggregate(aggregate_id).await;
        };
        self.load_from_snapshot(aggregate_id, policy).await
    }

    /// The aggregate rebuilt from every event, ignoring snapshots: what a snapshot must equal.
    pub async fn replay(
        &self,
        aggregate_id: &str,
    ) -> Result<EventStoreAggregateContext<A>, AggregateError<A::Error>> {
        self.events.load_aggregate(aggregate_id).await
    }

    /// The snapshot of `aggregate_id` in `policy`'s version, if any, and the events after it,
    /// in one round trip (a load costs what a snapshot-less one does).
    async fn read(
        &self,
        aggregate_id: &str,
        policy: SnapshotPolicy,
    ) -> Result<(Option<Snapshot>, Vec<SerializedEvent>), sqlx::Error> {
        let rows: Vec<Row> = sqlx::query_as(
            "WITH s AS (SELECT sequence, state FROM aggregate_snapshots
                         WHERE aggregate_type = $1 AND aggregate_id = $2 AND version = $3)
             SELECT true AS snapshot, sequence, '' AS event_type, '' AS event_version,
                    state AS payload, '{}'::jsonb AS metadata
               FROM s
             UNION ALL
             SELECT false, e.sequence, e.event_type, e.event_version, e.payload, e.metadata
               FROM events e
              WHERE e.aggregate_type = $1 AND e.aggregate_id = $2
                AND e.sequence > COALESCE((SELECT sequence FROM s), 0)
             ORDER BY snapshot DESC, sequence",
        )
        .bind(A::TYPE)
        .bind(aggregate_id)
        .bind(policy.version)
        .fetch_all(&self.pool)
        .await?;
        let mut snapshot = None;
        let mut events = Vec::with_capacity(rows.len());
        for row in rows {
            let sequence = usize::try_from(row.sequence).unwrap_or_default();
            if row.snapshot {
                snapshot = Some(Snapshot {
                    sequence,
                    state: row.payload,
                });
            } else {
                events.push(SerializedEvent {
                    aggregate_id: aggregate_id.to_owned(),
                    sequence,
                    aggregate_type: A::TYPE.to_owned(),
                    event_type: row.event_type,
                    event_version: row.event_version,
                    payload: row.payload,
                    metadata: row.metadata,
                });
            }
        }
        Ok((snapshot, events))
    }

    /// Stores `context` (rebuilt from committed events) unless a newer snapshot is there;
    /// `replace`: over one that did not decode, whatever its sequence.
    async fn store(
        &self,
        context: &EventStoreAggregateContext<A>,
        policy: SnapshotPolicy,
        replace: bool,
    ) {
        let state = match serde_json::to_value(&context.aggregate) {
            Ok(state) => state,
            Err(error) => {
                warn!(aggregate = A::TYPE, %error, "state does not serialise; no snapshot");
                return;
            }
        };
        let stored = sqlx::query(
            "INSERT INTO aggregate_snapshots (aggregate_type, aggregate_id, sequence, version, state)
             VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (aggregate_type, aggregate_id) DO UPDATE
                SET sequence = EXCLUDED.sequence, version = EXCLUDED.version,
                    state = EXCLUDED.state, taken_at = now()
              WHERE $6
                 OR aggregate_snapshots.sequence < EXCLUDED.sequence
                 OR aggregate_snapshots.version <> EXCLUDED.version",
        )
        .bind(A::TYPE)
        .bind(&context.aggregate_id)
        .bind(context.current_sequence as i64)
        .bind(policy.version)
        .bind(state)
        .bind(replace)
        .execute(&self.pool)
        .await;
        if let Err(error) = stored {
            // Only a cache: the next load tries again.
            warn!(aggregate = A::TYPE, aggregate_id = %context.aggregate_id, %error, "could not store a snapshot");
        }
    }
}

impl<A: Aggregate> EventStore<A> for SnapshotStore<A> {
    type AC = EventStoreAggregateContext<A>;

    async fn load_events(
        &self,
        aggregate_id: &str,
    ) -> Result<Vec<EventEnvelope<A>>, AggregateError<A::Error>> {
        self.events.load_events(aggregate_id).await
    }

    /// Takes the state this process committed last from the cache if it is there (the caller
    /// holds the aggregate's lock and returns it after its commit), else reads the store.
    async fn load_aggregate(
        &self,
        aggregate_id: &str,
    ) -> Result<Self::AC, AggregateError<A::Error>> {
        if let Some((aggregate, current_sequence)) = self
            .cache
            .as_ref()
            .and_then(|cache| cache.take(aggregate_id))
        {
            return Ok(EventStoreAggregateContext {
                aggregate_id: aggregate_id.to_owned(),
                aggregate,
                current_sequence,
                current_snapshot: None,
            });
        }
        self.load_stored(aggregate_id).await
    }

    async fn commit(
        &self,
        events: Vec<A::Event>,
        mut context: Self::AC,
        metadata: HashMap<String, String>,
    ) -> Result<Vec<EventEnvelope<A>>, AggregateError<A::Error>> {
        // cqrs-es hands over the state with the command's events applied (its sink applies
        // them as they are written): once they commit, it is the state at the new sequence.
        let Some(cache) = &self.cache else {
            return self.events.commit(events, context, metadata).await;
        };
        let sequence = context.current_sequence + events.len();
        let id = context.aggregate_id.clone();
        let state = std::mem::take(&mut context.aggregate);
        let committed = self.events.commit(events, context, metadata).await?;
        cache.put(&id, state, sequence);
        Ok(committed)
    }
}

impl<A: Aggregate> SnapshotStore<A> {
    async fn load_from_snapshot(
        &self,
        aggregate_id: &str,
        policy: SnapshotPolicy,
    ) -> Result<EventStoreAggregateContext<A>, AggregateError<A::Error>> {
        let (snapshot, tail) = self
            .read(aggregate_id, policy)
            .await
            .map_err(|error| AggregateError::DatabaseConnectionError(Box::new(error)))?;
        let mut context = EventStoreAggregateContext {
            aggregate_id: aggregate_id.to_owned(),
            aggregate: A::default(),
            current_sequence: 0,
            current_snapshot: None,
        };
        let mut replace = false;
        let tail = match snapshot.map(|s| (s.sequence, serde_json::from_value::<A>(s.state))) {
            None => tail,
            Some((sequence, Ok(aggregate))) => {
                context.aggregate = aggregate;
                context.current_sequence = sequence;
                tail
            }
            Some((_, Err(error))) => {
                // The tail read starts after it: read everything instead, and replace it.
                warn!(aggregate = A::TYPE, aggregate_id, %error, "snapshot does not decode; replaying");
                replace = true;
                self.repository.get_events::<A>(aggregate_id).await?
            }
        };
        let applied = tail.len();
        for event in tail {
            let envelope: EventEnvelope<A> = crate::upcasting::upcast(event)
                .try_into()
                .map_err(|error: PersistenceError| AggregateError::from(error))?;
            context.current_sequence = envelope.sequence;
            context.aggregate.apply(envelope.payload);
        }
        if applied >= policy.every || replace {
            self.store(&context, policy, replace).await;
        }
        Ok(context)
    }
}
