//! Running a subscription until shutdown: catching up, waiting for commits, waiting out
//! outages, parking what can never be handled, and re-handling what an operator retries.

use std::future::Future;
use std::time::Duration;

use framegate_commands::metrics;
use sqlx::postgres::PgListener;
use tracing::{error, info, instrument, warn};

use super::NOTIFY_CHANNEL;
use super::{begin_batch, EventHandler, HandlerError, OnPoison, Subscription, SubscriptionError};
use crate::failure::PERMANENT_AFTER;
use crate::notify::{Event, Heard};
use crate::parking::{self, CONTROL_CHANNEL};

/// How soon to look again while transactions are in progress (doubling up to the poll interval).
const BUSY_RECHECK: Duration = Duration::from_millis(10);
/// The longest such wait: a busy cluster always has transactions in progress.
const MAX_BUSY_RECHECK: Duration = Duration::from_millis(250);
/// The first wait after a failed batch, doubled up to the subscription's `max_backoff`.
const FIRST_BACKOFF: Duration = Duration::from_millis(100);

/// The runner's explicit states.
enum State {
    /// Events may be waiting: read batches until one comes back short.
    CatchingUp,
    /// Up to date: wait for a notification, `timeout` or shutdown.
    Waiting { timeout: Duration },
    /// Woken: letting more events gather (`Subscription::gathering`) before reading.
    Gathering,
    /// A batch failed: wait, then try again.
    BackingOff(Duration),
    /// Stopped before a parked event (policy [`OnPoison::Stop`]) until it is retried.
    Halted,
}

/// What woke a waiting runner.
enum Wake {
    /// New events may have been committed.
    Events,
    /// An operator asked this subscription to retry its parked events.
    Control,
    /// The listener was down: anything, events or retry requests, may have been missed.
    Missed,
}

impl Subscription {
    /// Runs until `shutdown` resolves. Passing failures are waited out with capped backoff,
    /// an event that keeps failing is parked (see [`OnPoison`]); nothing ends the run but
    /// `shutdown`, so an `Err` means the runner itself could not go on.
    #[instrument(name = "subscription.run", skip_all, fields(subscription = %self.name))]
    pub async fn run(
        &self,
        handler: &dyn EventHandler,
        shutdown: impl Future<Output = ()> + Send,
    ) -> Result<(), SubscriptionError> {
        tokio::pin!(shutdown);
        let mut runner = Runner {
            subscription: self,
            handler,
            wakeup: match &self.notifications {
                Some(shared) => Wakeup::Shared(shared.subscribe()),
                None => Wakeup::Own(None),
            },
            recheck: None,
            backoff: None,
            strikes: None,
            blocked_at: None,
            control_due: true,
        };
        let mut state = State::CatchingUp;
        info!("subscription started");
        loop {
            if runner.control_due {
                runner.control_due = false;
                match runner.control().await {
                    Ok(true) => state = State::CatchingUp,
                    Ok(false) => {}
                    Err(error) => {
                        warn!(%error, "cannot read retry requests; looking again later");
                        runner.control_due = true;
                    }
                }
            }
            state = match state {
                State::CatchingUp => {
                    if runner.wakeup.prepare(self).await {
                        runner.control_due = true;
                    }
                    let outcome = self.step(handler).await;
                    runner.after_step(outcome).await
                }
                State::Waiting { timeout } => {
                    tokio::select! {
                        () = &mut shutdown => break,
                        wake = runner.wakeup.wait(&self.name) => {
                            // New events: start rechecking from the shortest wait again.
                            runner.recheck = None;
                            if !matches!(wake, Wake::Events) {
                                runner.control_due = true;
                            }
                            State::Gathering
                        }
                        () = tokio::time::sleep(timeout) => State::CatchingUp,
                    }
                }
                State::Gathering => {
                    if !self.gather.is_zero() {
                        tokio::select! {
                            () = &mut shutdown => break,
                            () = tokio::time::sleep(self.gather) => {}
                        }
                    }
                    State::CatchingUp
                }
                State::BackingOff(delay) => {
                    tokio::select! {
                        () = &mut shutdown => break,
                        () = tokio::time::sleep(delay) => {}
                    }
                    let outcome = self.step(handler).await;
                    runner.after_step(outcome).await
                }
                State::Halted => {
                    tokio::select! {
                        () = &mut shutdown => break,
                        wake = runner.wakeup.wait(&self.name) => {
                            if !matches!(wake, Wake::Events) {
                                runner.control_due = true;
                            }
                        }
                        () = tokio::time::sleep(self.poll_interval) => runner.control_due = true,
                    }
                    State::Halted
                }
            };
        }
        info!("subscription stopped");
        Ok(())
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

    async fn listen(&self) -> Result<PgListener, sqlx::Error> {
        let mut listener = PgListener::connect_with(&self.pool).await?;
        listener
            .listen_all([NOTIFY_CHANNEL, CONTROL_CHANNEL])
            .await?;
        Ok(listener)
    }
}

/// One run's memory between states.
struct Runner<'a> {
    subscription: &'a Subscription,
    handler: &'a dyn EventHandler,
    wakeup: Wakeup,
    /// The last wait after an empty read, so consecutive empty reads back off.
    recheck: Option<Duration>,
    /// The last wait after a failed batch, so consecutive failures back off.
    backoff: Option<Duration>,
    /// The event that failed with a non-passing error, and how many times in a row.
    strikes: Option<(i64, u32)>,
    /// The parked event the subscription stopped at, until it is passed.
    blocked_at: Option<i64>,
    /// Retry requests may be waiting.
    control_due: bool,
}

impl Runner<'_> {
    async fn after_step(&mut self, outcome: Result<usize, SubscriptionError>) -> State {
        let subscription = self.subscription;
        match outcome {
            Ok(handled) => {
                self.backoff = None;
                self.strikes = None;
                if handled > 0 {
                    self.recheck = None;
                    self.passed_block().await;
                }
                if handled as i64 == subscription.batch_size {
                    return State::CatchingUp;
                }
                let timeout = subscription.next_wait(self.recheck).await;
                self.recheck = Some(timeout);
                State::Waiting { timeout }
            }
            Err(error) if error.is_transient() => {
                metrics::subscription_retry(&subscription.name, true);
                let delay = self.next_backoff();
                warn!(%error, delay_ms = delay.as_millis() as u64, "batch failed; backing off");
                State::BackingOff(delay)
            }
            Err(SubscriptionError::Handler { source, .. }) => self.strike(source).await,
            Err(error) => {
                metrics::subscription_retry(&subscription.name, true);
                let delay = self.next_backoff();
                warn!(%error, "batch failed; backing off");
                State::BackingOff(delay)
            }
        }
    }

    /// A non-passing failure: tried again a few times, then parked.
    async fn strike(&mut self, failure: HandlerError) -> State {
        let count = match self.strikes {
            Some((position, count)) if position == failure.global_position => count + 1,
            _ => 1,
        };
        self.strikes = Some((failure.global_position, count));
        if count < PERMANENT_AFTER {
            metrics::subscription_retry(&self.subscription.name, false);
            let delay = self.next_backoff();
            warn!(error = %failure, attempt = count, "event failed; trying again");
            return State::BackingOff(delay);
        }
        self.strikes = None;
        let subscription = self.subscription;
        match subscription.on_poison {
            OnPoison::Skip => match subscription.park_and_skip(self.handler, &failure).await {
                Ok(()) => {
                    metrics::subscription_parked(&subscription.name);
                    self.backoff = None;
                    State::CatchingUp
                }
                Err(error) => {
                    warn!(%error, "cannot park the failing event; backing off");
                    State::BackingOff(self.next_backoff())
                }
            },
            OnPoison::Stop => {
                let parked = async {
                    let mut conn = subscription.pool.acquire().await?;
                    parking::park(&mut conn, &subscription.name, &failure, true).await
                };
                if let Err(error) = parked.await {
                    warn!(%error, "cannot park the failing event; backing off");
                    return State::BackingOff(self.next_backoff());
                }
                metrics::subscription_parked(&subscription.name);
                error!(
                    error = %failure,
                    "subscription stopped at a parked event (framegate projections retry {})",
                    subscription.name
                );
                self.blocked_at = Some(failure.global_position);
                State::Halted
            }
        }
    }

    fn next_backoff(&mut self) -> Duration {
        let delay = self
            .backoff
            .map_or(FIRST_BACKOFF, |delay| delay * 2)
            .min(self.subscription.max_backoff);
        self.backoff = Some(delay);
        delay
    }

    /// After a successful batch: the event the subscription had stopped at went through.
    async fn passed_block(&mut self) {
        let Some(blocked) = self.blocked_at else {
            return;
        };
        let subscription = self.subscription;
        let resolved = async {
            let position = subscription.checkpoint().await?.global_position;
            let mut conn = subscription.pool.acquire().await?;
            parking::resolve_passed(&mut conn, &subscription.name, position).await
        };
        match resolved.await {
            Ok(0) => {}
            Ok(_) => {
                info!(
                    position = blocked,
                    "the event the subscription stopped at went through"
                );
                self.blocked_at = None;
            }
            Err(error) => warn!(%error, "cannot clear the parked event"),
        }
    }

    /// Re-handles the parked events an operator asked to retry; true if the subscription
    /// stopped at one of them and should read from its checkpoint again.
    async fn control(&mut self) -> Result<bool, sqlx::Error> {
        let subscription = self.subscription;
        let pool = &subscription.pool;
        let name = subscription.name.as_str();
        if self.blocked_at.is_none() {
            self.blocked_at = parking::blocking_position(pool, name).await?;
        }
        let mut resume = false;
        let reads = self.handler.reads();
        for (parked, event) in parking::requested(pool, name, &reads).await? {
            let position = parked.global_position;
            if parked.blocking {
                parking::clear_request(pool, name, position).await?;
                info!(position, "retrying the event the subscription stopped at");
                resume = true;
                continue;
            }
            let Some(event) = event else {
                let mut conn = pool.acquire().await?;
                parking::resolve(&mut conn, name, position).await?;
                continue;
            };
            let mut tx = pool.begin().await?;
            begin_batch(&mut tx, name).await?;
            match self
                .handler
                .handle_batch(&mut tx, std::slice::from_ref(&event))
                .await
            {
                Ok(()) => {
                    parking::resolve(&mut tx, name, position).await?;
                    tx.commit().await?;
                    metrics::subscription_handled(name, 1);
                    info!(position, "parked event handled on retry");
                }
                Err(failure) => {
                    tx.rollback().await?;
                    let mut conn = pool.acquire().await?;
                    parking::park(&mut conn, name, &failure, false).await?;
                    warn!(error = %failure, "parked event failed again; it stays parked");
                }
            }
        }
        Ok(resume)
    }
}

/// What wakes a waiting runner: the process's shared listener, or a connection of its own.
enum Wakeup {
    Shared(Heard),
    Own(Option<PgListener>),
}

impl Wakeup {
    /// Called before each read: connects an own listener that is missing, and forgets what
    /// the shared one said about commits this read will see. True if it (re)connected, so
    /// retry requests may have been missed.
    async fn prepare(&mut self, subscription: &Subscription) -> bool {
        match self {
            Self::Shared(heard) => {
                heard.clear();
                false
            }
            Self::Own(listener @ None) => {
                *listener = subscription.listen().await.ok();
                listener.is_some()
            }
            Self::Own(Some(_)) => false,
        }
    }

    /// Resolves when new events may have been committed or `name` was asked to retry; pends
    /// while no listener works (the runner's timeout then looks again).
    async fn wait(&mut self, name: &str) -> Wake {
        match self {
            Self::Shared(heard) => loop {
                match heard.recv().await {
                    Event::Notification { channel, .. } if channel == NOTIFY_CHANNEL => {
                        return Wake::Events
                    }
                    Event::Notification { channel, payload }
                        if channel == CONTROL_CHANNEL && payload == name =>
                    {
                        return Wake::Control
                    }
                    Event::Missed => return Wake::Missed,
                    Event::Notification { .. } | Event::Down => {}
                }
            },
            Self::Own(Some(listener)) => loop {
                match listener.recv().await {
                    Ok(notification) if notification.channel() == NOTIFY_CHANNEL => {
                        return Wake::Events
                    }
                    Ok(notification) if notification.payload() == name => return Wake::Control,
                    Ok(_) => {}
                    Err(_) => {
                        *self = Self::Own(None);
                        return Wake::Missed;
                    }
                }
            },
            Self::Own(None) => std::future::pending().await,
        }
    }
}
