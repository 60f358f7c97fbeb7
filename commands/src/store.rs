//! The event store: one cqrs-es framework per aggregate over postgres-es.
//!
//! Event-store mode only (`new_event_store`): never the snapshot and aggregate-store modes of
//! postgres-es 0.5, which re-apply committed events before saving the snapshot, so reloaded
//! aggregates would be wrong (docs/architecture.md). Credit accounts load from verified
//! snapshots of our own (`snapshots`); every other aggregate replays its events.

use std::sync::Arc;

use std::cell::Cell;
use std::collections::HashMap;
use std::sync::Weak;

use cqrs_es::event_sink::EventSink;
use cqrs_es::persist::SerializedEvent;
use cqrs_es::{Aggregate, CqrsFramework, EventStore as _};
use framegate_domain::{CreditAccount, Image, Services, SystemClock, User, Video, WebhookEndpoint};
use sqlx::PgPool;
use tracing::{debug, warn};

use crate::cache::StateCache;
use crate::error::CommandError;
use crate::inline::InlineProjection;
use crate::metadata::CommandMetadata;
use crate::metrics::{self, CommandOutcome};
use crate::position::LogPosition;
use crate::repository::{EventRepository, WRITTEN};
use crate::retry::{conflict_backoff, count_retried_conflict, RetryPolicy, MAX_CONFLICT_RETRIES};
use crate::snapshots::{SnapshotPolicy, SnapshotStore};
use crate::unit::{AppendError, UnitOfWork};

/// A credit account load that applies this many events past its snapshot takes a new one.
pub const SNAPSHOT_EVERY: usize = 64;

/// Executes commands of one aggregate type, retrying conflicts where that is safe.
pub struct Aggregates<A: Aggregate> {
    framework: CqrsFramework<A, SnapshotStore<A>>,
    loader: SnapshotStore<A>,
    /// Commands on one aggregate queue here within this process instead of racing to a
    /// conflict; across processes the optimistic check and the retries still decide.
    locks: KeyedLocks,
    services: Services,
}

/// What a command decided, not yet stored.
pub struct Decision<A: Aggregate> {
    pub events: Vec<A::Event>,
    /// The aggregate's sequence the events follow (their optimistic check).
    pub current_sequence: usize,
    /// The aggregate with the events applied.
    pub state: A,
}

/// One async mutex per key, dropped when nobody holds or waits for it.
#[derive(Default)]
struct KeyedLocks {
    locks: std::sync::Mutex<HashMap<String, Weak<tokio::sync::Mutex<()>>>>,
}

impl KeyedLocks {
    fn get(&self, key: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut locks = match self.locks.lock() {
            Ok(locks) => locks,
            Err(poisoned) => poisoned.into_inner(),
        };
        if let Some(lock) = locks.get(key).and_then(Weak::upgrade) {
            return lock;
        }
        if locks.len() > 1024 {
            locks.retain(|_, lock| lock.strong_count() > 0);
        }
        let lock = Arc::new(tokio::sync::Mutex::new(()));
        locks.insert(key.to_owned(), Arc::downgrade(&lock));
        lock
    }
}

impl<A> Aggregates<A>
where
    A: Aggregate<Services = Services>,
    A::Command: Clone + RetryPolicy,
{
    fn new(
        pool: &PgPool,
        services: Services,
        inline: Option<Arc<dyn InlineProjection>>,
        snapshots: Option<SnapshotPolicy>,
        cache: Option<Arc<StateCache<A>>>,
    ) -> Self {
        let repository = || EventRepository::new(pool.clone(), inline.clone());
        Self {
            // No cqrs-es queries: their callbacks run after commit and swallow errors, so
            // read models are built from the ordered log (or inline) instead.
            framework: CqrsFramework::new(
                SnapshotStore::new(pool.clone(), repository, snapshots, cache.clone()),
                Vec::new(),
                services.clone(),
            ),
            loader: SnapshotStore::new(pool.clone(), repository, snapshots, cache),
            locks: KeyedLocks::default(),
            services,
        }
    }

    /// Decides `command` against the current state of aggregate `id` without storing
    /// anything: the events it would append, the sequence they follow, and the state after
    /// them. For a [`UnitOfWork`] that appends to several streams at once. The caller holds
    /// [`Aggregates::lock`] on `id`, and hands the state back with
    /// [`Aggregates::remember`] once the events committed.
    pub async fn decide(
        &self,
        id: &str,
        command: A::Command,
    ) -> Result<Decision<A>, CommandError<A::Error>> {
        let context = self.loader.load_aggregate(id).await?;
        self.decide_from(context.aggregate, context.current_sequence, command)
            .await
    }

    /// [`Aggregates::decide`] for an aggregate whose id was just made (a UUIDv7 of this
    /// process), without reading its empty stream: should the id exist after all, the
    /// append's optimistic check refuses it.
    pub async fn decide_new(
        &self,
        command: A::Command,
    ) -> Result<Decision<A>, CommandError<A::Error>> {
        self.decide_from(A::default(), 0, command).await
    }

    /// Keeps the state a [`Decision`] led to, now committed at `sequence`, for the next
    /// command on `id` in this process (aggregate types without a cache ignore it).
    pub fn remember(&self, id: &str, state: A, sequence: usize) {
        self.loader.remember(id, state, sequence);
    }

    async fn decide_from(
        &self,
        mut aggregate: A,
        current_sequence: usize,
        command: A::Command,
    ) -> Result<Decision<A>, CommandError<A::Error>> {
        let sink = EventSink::default();
        aggregate
            .handle(command, &self.services, &sink)
            .await
            .map_err(CommandError::Domain)?;
        Ok(Decision {
            events: sink.collect().await,
            current_sequence,
            state: aggregate,
        })
    }

    /// Holds this process's lock on aggregate `id` until the guard drops: commands on it
    /// from this process wait instead of racing to a conflict.
    pub async fn lock(&self, id: &str) -> tokio::sync::OwnedMutexGuard<()> {
        self.locks.get(id).lock_owned().await
    }

    /// Executes `command` on aggregate `id` and stores the resulting events with `metadata`.
    /// Returns the log position of the last event written, or `None` when the command was
    /// accepted without changing anything (an idempotent repeat).
    #[tracing::instrument(name = "command", skip_all, fields(aggregate = A::TYPE, id = %id))]
    pub async fn execute(
        &self,
        id: &str,
        command: A::Command,
        metadata: &CommandMetadata,
    ) -> Result<Option<LogPosition>, CommandError<A::Error>> {
        let started = std::time::Instant::now();
        let result = self.execute_serialised(id, command, metadata).await;
        let outcome = match &result {
            Ok(_) => CommandOutcome::Ok,
            Err(
                CommandError::Domain(_) | CommandError::EmailTaken | CommandError::AccountErased,
            ) => CommandOutcome::Rejected,
            Err(CommandError::Conflict) => CommandOutcome::Conflict,
            Err(_) => CommandOutcome::Error,
        };
        metrics::command(A::TYPE, outcome, started.elapsed());
        result
    }

    async fn execute_serialised(
        &self,
        id: &str,
        command: A::Command,
        metadata: &CommandMetadata,
    ) -> Result<Option<LogPosition>, CommandError<A::Error>> {
        let retry = command.retry_on_conflict();
        let lock = self.locks.get(id);
        let _serialised = lock.lock().await;
        let mut attempt = 0;
        loop {
            let result = WRITTEN
                .scope(Cell::new(None), async {
                    self.framework
                        .execute_with_metadata(id, command.clone(), metadata.to_map())
                        .await
                        .map(|()| WRITTEN.with(Cell::get))
                })
                .await;
            match result.map_err(CommandError::from).map_err(append_refusal) {
                Err(CommandError::Conflict) if retry && attempt < MAX_CONFLICT_RETRIES => {
                    attempt += 1;
                    count_retried_conflict();
                    metrics::command_conflict(A::TYPE.into(), true);
                    debug!(
                        aggregate = A::TYPE,
                        id, attempt, "conflict, retrying command"
                    );
                    tokio::time::sleep(conflict_backoff(attempt)).await;
                }
                Err(CommandError::Conflict) => {
                    metrics::command_conflict(A::TYPE.into(), false);
                    if !retry {
                        return Err(CommandError::Conflict);
                    }
                    warn!(
                        aggregate = A::TYPE,
                        id, attempt, "conflict retries exhausted"
                    );
                    return Err(CommandError::Conflict);
                }
                other => return other,
            }
        }
    }

    /// Loads the current state of aggregate `id` (the default state if it has no events).
    pub async fn load(&self, id: &str) -> Result<A, CommandError<A::Error>> {
        Ok(self.loader.load_stored(id).await?.aggregate)
    }

    /// Rebuilds aggregate `id` from all its events, ignoring snapshots, with its sequence:
    /// what a snapshot-based load must equal.
    pub async fn replay(&self, id: &str) -> Result<(A, usize), CommandError<A::Error>> {
        let context = self.loader.replay(id).await?;
        Ok((context.aggregate, context.current_sequence))
    }
}

/// What an append refused, as the command's error, where cqrs-es passed it on as unexpected:
/// a request whose Idempotency-Key was taken over must not retry its command (a conflict:
/// 409, not stored, and the request that holds the key now decides), and a write of an
/// erased user's data is `AccountErased`.
fn append_refusal<E: std::error::Error>(error: CommandError<E>) -> CommandError<E> {
    match error {
        CommandError::Internal(cause) => match cause.downcast_ref::<AppendError>() {
            Some(AppendError::LeaseLost(_)) => CommandError::Conflict,
            Some(AppendError::Pii(crate::pii::PiiError::Erased(_))) => CommandError::AccountErased,
            _ => CommandError::Internal(cause),
        },
        other => other,
    }
}

/// The metrics label of a unit's conflict: its streams' aggregate types, `CreditAccount+Video`
/// for a video request (a bounded set: one per kind of unit).
fn aggregate_types(events: &[SerializedEvent]) -> std::borrow::Cow<'static, str> {
    let mut types: Vec<&str> = events.iter().map(|e| e.aggregate_type.as_str()).collect();
    types.sort_unstable();
    types.dedup();
    types.join("+").into()
}

/// The write side of the platform.
#[derive(Clone)]
pub struct EventStore {
    inner: Arc<Inner>,
}

struct Inner {
    pool: PgPool,
    inline: Option<Arc<dyn InlineProjection>>,
    users: Aggregates<User>,
    credits: Aggregates<CreditAccount>,
    videos: Aggregates<Video>,
    images: Aggregates<Image>,
    webhooks: Aggregates<WebhookEndpoint>,
}

impl EventStore {
    pub fn new(pool: PgPool) -> Self {
        Self::with_services(pool, Arc::new(SystemClock))
    }

    pub fn with_services(pool: PgPool, services: Services) -> Self {
        Self::with_parts(pool, services, None)
    }

    /// A store whose appends also update `inline`'s read models in their transaction.
    pub fn with_inline(pool: PgPool, inline: Arc<dyn InlineProjection>) -> Self {
        Self::with_parts(pool, Arc::new(SystemClock), Some(inline))
    }

    pub fn with_parts(
        pool: PgPool,
        services: Services,
        inline: Option<Arc<dyn InlineProjection>>,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                // Only accounts: their streams grow with every video for as long as the user
                // stays, and the others hold secrets or personal data a snapshot would copy.
                users: Aggregates::new(&pool, services.clone(), inline.clone(), None, None),
                // Accounts are loaded by every video request: their states are also kept in
                // memory from one command to the next (`cache`).
                credits: Aggregates::new(
                    &pool,
                    services.clone(),
                    inline.clone(),
                    Some(SnapshotPolicy {
                        every: SNAPSHOT_EVERY,
                        version: CreditAccount::STATE_VERSION,
                    }),
                    Some(Arc::default()),
                ),
                videos: Aggregates::new(&pool, services.clone(), inline.clone(), None, None),
                images: Aggregates::new(&pool, services.clone(), inline.clone(), None, None),
                webhooks: Aggregates::new(&pool, services, inline.clone(), None, None),
                inline,
                pool,
            }),
        }
    }

    /// Starts a unit of work: appends to several streams that commit together, with the
    /// inline read models.
    pub async fn begin(&self) -> Result<UnitOfWork, sqlx::Error> {
        UnitOfWork::begin(&self.inner.pool, self.inner.inline.clone()).await
    }

    /// Begins a unit and appends `events` (decided against the streams' states, several
    /// streams at once). A stream that moved since is a conflict: while `attempt` is below
    /// the limit it counts it, waits the backoff and answers `None`, and the caller decides
    /// again; past the limit the conflict is the answer.
    pub async fn append_or_retry(
        &self,
        events: &[SerializedEvent],
        attempt: &mut u32,
    ) -> Result<Option<UnitOfWork>, AppendError> {
        let mut unit = self.begin().await.map_err(AppendError::from)?;
        match unit.append_serialized(events).await {
            Ok(_) => Ok(Some(unit)),
            Err(AppendError::Conflict) if *attempt < MAX_CONFLICT_RETRIES => {
                drop(unit);
                *attempt += 1;
                count_retried_conflict();
                metrics::command_conflict(aggregate_types(events), true);
                tokio::time::sleep(conflict_backoff(*attempt)).await;
                Ok(None)
            }
            Err(error) => {
                if matches!(error, AppendError::Conflict) {
                    metrics::command_conflict(aggregate_types(events), false);
                }
                Err(error)
            }
        }
    }

    pub fn pool(&self) -> &PgPool {
        &self.inner.pool
    }

    pub fn users(&self) -> &Aggregates<User> {
        &self.inner.users
    }

    pub fn credits(&self) -> &Aggregates<CreditAccount> {
        &self.inner.credits
    }

    pub fn videos(&self) -> &Aggregates<Video> {
        &self.inner.videos
    }

    pub fn images(&self) -> &Aggregates<Image> {
        &self.inner.images
    }

    pub fn webhooks(&self) -> &Aggregates<WebhookEndpoint> {
        &self.inner.webhooks
    }
}
