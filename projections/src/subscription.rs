//! Named subscriptions on the ordered log, each with a checkpoint row.
//!
//! A subscription handles one batch per transaction: it takes its advisory lock (so two
//! runners of one subscription never interleave), reads the batch after its checkpoint,
//! hands it to the handler together with the transaction, then moves the checkpoint in that
//! same transaction. A handler that writes its effects through the transaction therefore has
//! them exactly once, whatever crashes; a handler with outside effects (Kafka) sees each event
//! at least once. A handler error stops the subscription naming the event: nothing is skipped.
//! A handler whose failure is a passing outage (a Kafka broker away) wraps it in [`Transient`]:
//! the runner then rolls the batch back and tries it again with backoff, still skipping nothing.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::postgres::PgListener;
use sqlx::{PgConnection, PgPool};
use tokio::sync::OnceCell;
use tracing::{debug, info, instrument, warn};
use uuid::Uuid;

use crate::log::{read_batch, LogPosition, StoredEvent};
use crate::notify::{Event, Heard, Notifications};

/// The channel the events table's insert trigger notifies.
pub const NOTIFY_CHANNEL: &str = "framegate_events";

/// How soon to look again while transactions are in progress (doubling up to the poll interval).
const BUSY_RECHECK: Duration = Duration::from_millis(10);
/// The longest such wait: a busy cluster always has transactions in progress.
const MAX_BUSY_RECHECK: Duration = Duration::from_millis(250);

pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// A handler's refusal of one event.
#[derive(Debug, thiserror::Error)]
#[error("event #{global_position} ({aggregate_type}:{aggregate_id} seq {sequence}, {event_type}, id {event_id}) failed: {source}")]
pub struct HandlerError {
    pub global_position: i64,
    pub event_id: Uuid,
    pub event_type: String,
    pub aggregate_type: String,
    pub aggregate_id: String,
    pub sequence: i64,
    #[source]
    pub source: BoxError,
}

impl HandlerError {
    /// Whether the handler marked the failure as passing (see [`Transient`]).
    pub fn is_transient(&self) -> bool {
        self.source.is::<Transient>()
    }

    pub fn at(event: &StoredEvent, source: impl Into<BoxError>) -> Self {
        Self {
            global_position: event.global_position,
            event_id: event.event_id,
            event_type: event.event_type.clone(),
            aggregate_type: event.aggregate_type.clone(),
            aggregate_id: event.aggregate_id.clone(),
            sequence: event.sequence,
            source: source.into(),
        }
    }
}

/// A failure worth waiting out: the runner retries the batch with backoff instead of stopping.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Transient(pub BoxError);

/// What a subscription does with its events.
#[async_trait]
pub trait EventHandler: Send + Sync {
    /// Handles one event. Database effects go through `conn`, the subscription's transaction.
    async fn handle(&self, conn: &mut PgConnection, event: &StoredEvent) -> Result<(), BoxError>;

    /// Handles a batch in log order. Override to batch outside work (e.g. one Kafka flush).
    async fn handle_batch(
        &self,
        conn: &mut PgConnection,
        events: &[StoredEvent],
    ) -> Result<(), HandlerError> {
        for event in events {
            self.handle(conn, event)
                .await
                .map_err(|source| HandlerError::at(event, source))?;
        }
        Ok(())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SubscriptionError {
    #[error("subscription {subscription} stopped: {source}")]
    Handler {
        subscription: String,
        #[source]
        source: HandlerError,
    },
    #[error("subscription database error: {0}")]
    Database(#[from] sqlx::Error),
}

impl SubscriptionError {
    /// A database outage or a handler's [`Transient`] failure: worth trying again.
    fn is_transient(&self) -> bool {
        match self {
            SubscriptionError::Database(_) => true,
            SubscriptionError::Handler { source, .. } => source.is_transient(),
        }
    }
}

/// A named reader of the log.
#[derive(Clone)]
pub struct Subscription {
    name: String,
    pool: PgPool,
    batch_size: i64,
    poll_interval: Duration,
    max_backoff: Duration,
    /// Set once the checkpoint row is known to exist.
    registered: Arc<OnceCell<()>>,
    /// The process's shared listener; without it the runner listens on a connection of its own.
    notifications: Option<Notifications>,
}

/// The runner's explicit states (see `run`).
enum State {
    /// Events may be waiting: read batches until one comes back short.
    CatchingUp,
    /// Up to date: wait for a notification, `timeout` or shutdown.
    Waiting { timeout: Duration },
    /// The database failed: wait, then try again.
    BackingOff(Duration),
}

impl Subscription {
    pub fn new(name: impl Into<String>, pool: PgPool) -> Self {
        Self {
            name: name.into(),
            pool,
            batch_size: 1000,
            poll_interval: Duration::from_secs(1),
            max_backoff: Duration::from_secs(30),
            registered: Arc::new(OnceCell::new()),
            notifications: None,
        }
    }

    /// Wakes on the process's shared listener instead of holding a connection of its own.
    pub fn with_notifications(mut self, notifications: Notifications) -> Self {
        self.notifications = Some(notifications);
        self
    }

    /// Events per transaction (default 1000).
    pub fn with_batch_size(mut self, batch_size: i64) -> Self {
        self.batch_size = batch_size.max(1);
        self
    }

    /// How often to look for events when no notification arrives (default 1 s). The fallback
    /// matters: notifications are lost while the listening connection is down.
    pub fn with_poll_interval(mut self, interval: Duration) -> Self {
        self.poll_interval = interval;
        self
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The longest wait between retries after a database outage or a transient handler
    /// failure (default 30 s).
    pub fn with_max_backoff(mut self, max_backoff: Duration) -> Self {
        self.max_backoff = max_backoff;
        self
    }

    /// The last position this subscription has fully handled.
    pub async fn checkpoint(&self) -> Result<LogPosition, sqlx::Error> {
        let mut conn = self.pool.acquire().await?;
        Ok(load_checkpoint(&mut conn, &self.name)
            .await?
            .unwrap_or(LogPosition::START))
    }

    /// Handles one batch in one transaction; returns how many events it handled.
    #[instrument(skip_all, fields(subscription = %self.name))]
    pub async fn step(&self, handler: &dyn EventHandler) -> Result<usize, SubscriptionError> {
        self.ensure_checkpoint_row().await?;
        let mut tx = self.pool.begin().await?;
        // An advisory lock assigns no transaction id, so the batch read below still sees
        // everything that committed before it (see log::read_batch).
        sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))")
            .bind(lock_key(&self.name))
            .execute(&mut *tx)
            .await?;
        let after = load_checkpoint(&mut tx, &self.name)
            .await?
            .unwrap_or(LogPosition::START);
        let events = read_batch(&mut tx, after, self.batch_size).await?;
        let Some(last) = events.last().map(StoredEvent::position) else {
            tx.rollback().await?;
            return Ok(0);
        };
        handler
            .handle_batch(&mut tx, &events)
            .await
            .map_err(|source| SubscriptionError::Handler {
                subscription: self.name.clone(),
                source,
            })?;
        sqlx::query(
            "UPDATE subscription_checkpoints
                SET last_tx_id = $2::bigint::text::xid8, last_position = $3,
                    events_handled = events_handled + $4, updated_at = now()
              WHERE name = $1",
        )
        .bind(&self.name)
        .bind(last.tx_id)
        .bind(last.global_position)
        .bind(events.len() as i64)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        debug!(
            events = events.len(),
            position = last.global_position,
            "batch handled"
        );
        Ok(events.len())
    }

    /// After a short batch: how long to wait before looking again. Look again soon (backing
    /// off towards the poll interval) while any transaction is in progress — it may be a
    /// writer that did not notify (the trigger lets one writer at a time notify) — or while
    /// committed events wait past the checkpoint: they were held back below the xmin horizon
    /// by a transaction that may have ended since, and its end sends no notification. Only
    /// with neither can nothing but a new commit bring events, and that commit notifies.
    async fn next_wait(&self, previous: Option<Duration>) -> Duration {
        match self.more_may_come_soon().await {
            Ok(false) => self.poll_interval,
            Ok(true) | Err(_) => previous
                .map_or(BUSY_RECHECK, |wait| wait * 2)
                .min(MAX_BUSY_RECHECK)
                .min(self.poll_interval),
        }
    }

    async fn more_may_come_soon(&self) -> Result<bool, sqlx::Error> {
        sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM pg_snapshot_xip(pg_current_snapshot()))
                 OR EXISTS (SELECT 1 FROM events e JOIN subscription_checkpoints c ON c.name = $1
                             WHERE (e.tx_id, e.global_position) > (c.last_tx_id, c.last_position))",
        )
        .bind(&self.name)
        .fetch_one(&self.pool)
        .await
    }

    /// Handles batches until nothing more is readable; returns how many events it handled.
    /// It stops at the oldest transaction running anywhere in the cluster; `drain` does not.
    pub async fn catch_up(&self, handler: &dyn EventHandler) -> Result<u64, SubscriptionError> {
        let mut total = 0u64;
        loop {
            let handled = self.step(handler).await?;
            if handled == 0 {
                return Ok(total);
            }
            total += handled as u64;
        }
    }

    /// Handles everything committed before the call, however long other transactions hold
    /// the horizon back; returns how many events it handled. `catch_up` stops at the oldest
    /// transaction running anywhere in the cluster (another process's, another database's),
    /// so it is no reliable "drain the log"; this is. Do not call it from a transaction that
    /// has written: that transaction holds the horizon back until it ends.
    pub async fn drain(&self, handler: &dyn EventHandler) -> Result<u64, SubscriptionError> {
        let target: Option<(i64, i64)> = sqlx::query_as(
            "SELECT tx_id::text::bigint, global_position FROM events
              ORDER BY tx_id DESC, global_position DESC LIMIT 1",
        )
        .fetch_optional(&self.pool)
        .await?;
        let mut total = self.catch_up(handler).await?;
        let Some((tx_id, global_position)) = target else {
            return Ok(total);
        };
        let target = LogPosition {
            tx_id,
            global_position,
        };
        let mut pause = Duration::from_millis(2);
        while self.checkpoint().await? < target {
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_millis(50));
            total += self.catch_up(handler).await?;
        }
        Ok(total)
    }

    /// Runs until `shutdown` resolves (Ok) or the handler fails (Err). Database outages are
    /// waited out with exponential backoff; they never skip events.
    #[instrument(skip_all, fields(subscription = %self.name))]
    pub async fn run(
        &self,
        handler: &dyn EventHandler,
        shutdown: impl Future<Output = ()> + Send,
    ) -> Result<(), SubscriptionError> {
        tokio::pin!(shutdown);
        let mut wakeup = match &self.notifications {
            Some(shared) => Wakeup::Shared(shared.subscribe()),
            None => Wakeup::Own(None),
        };
        let mut state = State::CatchingUp;
        // The last wait after an empty read, so consecutive empty reads back off.
        let mut recheck: Option<Duration> = None;
        info!("subscription started");
        loop {
            state = match state {
                State::CatchingUp => {
                    // Listen before reading so a commit between the read and the wait still
                    // wakes us.
                    wakeup.prepare(self).await;
                    match self.step(handler).await {
                        Ok(n) if n as i64 == self.batch_size => State::CatchingUp,
                        Ok(n) => {
                            if n > 0 {
                                recheck = None;
                            }
                            let timeout = self.next_wait(recheck).await;
                            recheck = Some(timeout);
                            State::Waiting { timeout }
                        }
                        Err(error) if error.is_transient() => {
                            warn!(%error, "batch failed; backing off");
                            State::BackingOff(Duration::from_millis(100).min(self.max_backoff))
                        }
                        Err(handler_error) => return Err(handler_error),
                    }
                }
                State::Waiting { timeout } => {
                    tokio::select! {
                        () = &mut shutdown => break,
                        () = wakeup.wait() => {
                            // New events: start rechecking from the shortest wait again.
                            recheck = None;
                            State::CatchingUp
                        }
                        () = tokio::time::sleep(timeout) => State::CatchingUp,
                    }
                }
                State::BackingOff(delay) => {
                    tokio::select! {
                        () = &mut shutdown => break,
                        () = tokio::time::sleep(delay) => {}
                    }
                    match self.step(handler).await {
                        Ok(_) => State::CatchingUp,
                        Err(error) if error.is_transient() => {
                            warn!(%error, "batch failed again; backing off");
                            State::BackingOff((delay * 2).min(self.max_backoff))
                        }
                        Err(handler_error) => return Err(handler_error),
                    }
                }
            };
        }
        info!("subscription stopped");
        Ok(())
    }

    async fn listen(&self) -> Result<PgListener, sqlx::Error> {
        let mut listener = PgListener::connect_with(&self.pool).await?;
        listener.listen(NOTIFY_CHANNEL).await?;
        Ok(listener)
    }

    async fn ensure_checkpoint_row(&self) -> Result<(), sqlx::Error> {
        self.registered
            .get_or_try_init(|| async {
                sqlx::query(
                    "INSERT INTO subscription_checkpoints (name) VALUES ($1)
                     ON CONFLICT DO NOTHING",
                )
                .bind(&self.name)
                .execute(&self.pool)
                .await
                .map(|_| ())
            })
            .await?;
        Ok(())
    }
}

/// What wakes a waiting runner: the process's shared listener, or a connection of its own.
enum Wakeup {
    Shared(Heard),
    Own(Option<PgListener>),
}

impl Wakeup {
    /// Called before each read: connects an own listener that is missing, and forgets what
    /// the shared one said about commits this read will see.
    async fn prepare(&mut self, subscription: &Subscription) {
        match self {
            Self::Shared(heard) => heard.clear(),
            Self::Own(listener @ None) => *listener = subscription.listen().await.ok(),
            Self::Own(Some(_)) => {}
        }
    }

    /// Resolves when new events may have been committed; pends while no listener works
    /// (the runner's timeout then looks again).
    async fn wait(&mut self) {
        match self {
            Self::Shared(heard) => loop {
                match heard.recv().await {
                    Event::Notification { channel, .. } if channel == NOTIFY_CHANNEL => return,
                    Event::Missed => return,
                    Event::Notification { .. } | Event::Down => {}
                }
            },
            Self::Own(Some(listener)) => {
                if listener.recv().await.is_err() {
                    *self = Self::Own(None);
                }
            }
            Self::Own(None) => std::future::pending().await,
        }
    }
}

/// The advisory lock a subscription holds while it handles a batch; a replay takes it to
/// pause the live projector for its swap.
pub(crate) fn lock_key(name: &str) -> String {
    format!("framegate.subscription:{name}")
}

async fn load_checkpoint(
    conn: &mut PgConnection,
    name: &str,
) -> Result<Option<LogPosition>, sqlx::Error> {
    let row: Option<(i64, i64)> = sqlx::query_as(
        "SELECT last_tx_id::text::bigint, last_position
           FROM subscription_checkpoints WHERE name = $1",
    )
    .bind(name)
    .fetch_optional(conn)
    .await?;
    Ok(row.map(|(tx_id, global_position)| LogPosition {
        tx_id,
        global_position,
    }))
}
