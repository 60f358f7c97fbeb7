//! Named subscriptions on the ordered log, each with a checkpoint row.
//!
//! A subscription handles one batch per transaction: it takes its advisory lock (so two
//! runners of one subscription never interleave), reads the batch after its checkpoint,
//! hands it to the handler together with the transaction, then moves the checkpoint in that
//! same transaction. A handler that writes its effects through the transaction therefore has
//! them exactly once, whatever crashes; a handler with outside effects (Kafka) sees each event
//! at least once.
//!
//! A failed batch is rolled back. A passing failure (see `failure`: the database away, a
//! broker down, whatever a handler wraps in [`Transient`]) is retried with capped backoff for
//! as long as it lasts, skipping nothing. An event that keeps failing otherwise is parked in
//! the dead-letter table (`parking`) and, per the subscription's [`OnPoison`] policy, either
//! passed over so the rest keeps flowing or kept as the place the subscription stops until an
//! operator retries it (`framegate projections retry`). The runner lives in `runner`.

mod runner;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use framegate_commands::metrics;
use framegate_commands::trace_context::{self, TraceContext};
use sqlx::{PgConnection, PgPool};
use tokio::sync::OnceCell;
use tracing::{debug, error, instrument, Instrument as _};
use uuid::Uuid;

use crate::log::{read_batch, LogPosition, Reads, StoredEvent};
use crate::notify::Notifications;
use crate::{failure, parking};

/// The channel the events table's insert trigger notifies.
pub const NOTIFY_CHANNEL: &str = "framegate_events";

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
    /// Whether the failure is worth waiting out (see `failure::is_transient`).
    pub fn is_transient(&self) -> bool {
        failure::is_transient(self.source.as_ref())
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

    /// What the handler reads of its events: the batch fetches and opens no more (events
    /// whose bodies it does not read come with a `null` payload). Everything unless it says
    /// less.
    fn reads(&self) -> Reads {
        Reads::EVERYTHING
    }

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
    /// A database outage or a handler's passing failure: worth trying again.
    pub fn is_transient(&self) -> bool {
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
    on_poison: OnPoison,
    /// How long to let events gather after a wake-up before reading them.
    gather: Duration,
}

/// What a subscription does with an event it can never handle, once it is parked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OnPoison {
    /// Pass over it: the rest of the log keeps flowing (read models, workers).
    #[default]
    Skip,
    /// Stop before it until it is retried (a feed whose order is its contract: the relay).
    Stop,
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
            on_poison: OnPoison::Skip,
            gather: Duration::ZERO,
        }
    }

    /// After a wake-up, lets events gather for `gather` before reading them, so a busy log
    /// is handled in fewer, larger transactions (default: none, read at once). For
    /// subscriptions nobody waits on, such as projectors whose tables are also written
    /// inline: every event each wakes them for costs a transaction of their own.
    pub fn gathering(mut self, gather: Duration) -> Self {
        self.gather = gather;
        self
    }

    /// What to do with an event that can never be handled (default: skip it once parked).
    pub fn on_poison(mut self, policy: OnPoison) -> Self {
        self.on_poison = policy;
        self
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
    #[instrument(name = "subscription.poll", skip_all, fields(subscription = %self.name))]
    pub async fn step(&self, handler: &dyn EventHandler) -> Result<usize, SubscriptionError> {
        self.ensure_checkpoint_row().await?;
        let started = std::time::Instant::now();
        let mut tx = self.pool.begin().await?;
        // An advisory lock assigns no transaction id, so the batch read below still sees
        // everything that committed before it (see log::read_batch).
        begin_batch(&mut tx, &self.name).await?;
        let after = load_checkpoint(&mut tx, &self.name)
            .await?
            .unwrap_or(LogPosition::START);
        let events = read_batch(&mut tx, after, self.batch_size, &handler.reads()).await?;
        let Some(last) = events.last().map(StoredEvent::position) else {
            tx.rollback().await?;
            return Ok(0);
        };
        let batch = batch_span(&self.name, &events);
        async {
            handler
                .handle_batch(&mut tx, &events)
                .await
                .map_err(|source| SubscriptionError::Handler {
                    subscription: self.name.clone(),
                    source,
                })?;
            advance(&mut tx, &self.name, last, events.len()).await?;
            tx.commit().await?;
            metrics::subscription_batch(&self.name, events.len(), started.elapsed());
            debug!(
                events = events.len(),
                position = last.global_position,
                "batch handled"
            );
            Ok(events.len())
        }
        .instrument(batch)
        .await
    }

    /// Parks the event `failure` names and moves past it: in one transaction, handles the
    /// events of the batch before it, records it in `parked_events` and moves the checkpoint
    /// onto it. Does nothing if the subscription is no longer before that event.
    pub(crate) async fn park_and_skip(
        &self,
        handler: &dyn EventHandler,
        failure: &HandlerError,
    ) -> Result<(), SubscriptionError> {
        let started = std::time::Instant::now();
        let mut tx = self.pool.begin().await?;
        begin_batch(&mut tx, &self.name).await?;
        let after = load_checkpoint(&mut tx, &self.name)
            .await?
            .unwrap_or(LogPosition::START);
        let events = read_batch(&mut tx, after, self.batch_size, &handler.reads()).await?;
        let Some(index) = events
            .iter()
            .position(|event| event.global_position == failure.global_position)
        else {
            tx.rollback().await?;
            return Ok(());
        };
        let before = &events[..index];
        if !before.is_empty() {
            handler
                .handle_batch(&mut tx, before)
                .await
                .map_err(|source| SubscriptionError::Handler {
                    subscription: self.name.clone(),
                    source,
                })?;
        }
        parking::park(&mut tx, &self.name, failure, false).await?;
        let parked = events[index].position();
        advance(&mut tx, &self.name, parked, before.len()).await?;
        tx.commit().await?;
        metrics::subscription_batch(&self.name, before.len(), started.elapsed());
        error!(
            subscription = %self.name,
            error = %failure,
            "event parked; the subscription goes on (framegate projections retry {})",
            self.name
        );
        Ok(())
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

/// The spans of a subscription's loop, kept out of traces: `subscription.run` lasts as long
/// as the process, `subscription.poll` starts every time the subscription looks for events,
/// found or not. What a subscription does with events it found is `subscription.batch`.
pub const LOOP_SPANS: [&str; 2] = ["subscription.run", "subscription.poll"];

/// Links to at most this many traces per batch: a replay-sized batch is one span, not
/// thousands of links.
const MAX_BATCH_LINKS: usize = 32;

/// The span of one batch: linked to the traces of its events (a batch serves many requests,
/// so it can be the child of none), which handlers continue one event at a time where they
/// act on one (`TraceContext::adopt`). The links are read only when spans are exported.
fn batch_span(subscription: &str, events: &[StoredEvent]) -> tracing::Span {
    let span = tracing::info_span!(
        "subscription.batch",
        subscription = %subscription,
        events = events.len(),
        first_position = events.first().map_or(0, |event| event.global_position),
    );
    if trace_context::exporting() {
        let mut linked: Vec<TraceContext> = Vec::new();
        for context in events.iter().filter_map(StoredEvent::trace_context) {
            if linked.len() == MAX_BATCH_LINKS {
                break;
            }
            // The events of one command share its context.
            if !linked.contains(&context) {
                context.link(&span);
                linked.push(context);
            }
        }
    }
    span
}

/// Starts a batch in `tx`: takes the subscription's advisory lock (held until the transaction
/// ends), and has every statement of the transaction planned for its own arguments.
///
/// The handlers' set-based statements (`= ANY($1)`, `UPDATE ... FROM unnest(...)`) take arrays
/// whose length changes from batch to batch, on tables that may grow from empty (a read model
/// reset and caught up again). A prepared statement's cached generic plan is built for no
/// particular arguments, at whatever size the table had then: planned over a table just
/// emptied, it scans the whole table for every batch once the table has grown, which halved the
/// rate of a second catch-up (ADR 0043, stop-31 addendum). A custom plan costs a planning pass
/// per statement, small next to a batch. One statement, so no round trip is added.
pub(crate) async fn begin_batch(tx: &mut PgConnection, name: &str) -> Result<(), sqlx::Error> {
    sqlx::query(
        "SELECT pg_advisory_xact_lock(hashtextextended($1, 0)),
                set_config('plan_cache_mode', 'force_custom_plan', true)",
    )
    .bind(lock_key(name))
    .execute(tx)
    .await?;
    Ok(())
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

/// Moves the checkpoint of `name` to `position`, `handled` more events handled, in the
/// transaction that handled them.
async fn advance(
    tx: &mut PgConnection,
    name: &str,
    position: LogPosition,
    handled: usize,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE subscription_checkpoints
            SET last_tx_id = $2::bigint::text::xid8, last_position = $3,
                events_handled = events_handled + $4, updated_at = now()
          WHERE name = $1",
    )
    .bind(name)
    .bind(position.tx_id)
    .bind(position.global_position)
    .bind(i64::try_from(handled).unwrap_or(i64::MAX))
    .execute(tx)
    .await?;
    Ok(())
}
