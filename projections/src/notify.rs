//! One LISTEN connection per process, shared by everything in it that waits on Postgres
//! notifications: the subscriptions (new events) and the API's credential cache (revocations).
//!
//! A `PgListener` holds a pooled connection for as long as it lives, so one per subscription
//! made a process's connection count grow with its subscriptions. [`Notifications`] listens on
//! every channel the project uses over one connection and fans what it hears out to any number
//! of [`Heard`] receivers. It also watches that the connection still delivers: it notifies
//! itself every heartbeat, and a ping that does not come back within three intervals (a
//! connection can die without closing: a partition, a frozen server) counts as a lost
//! connection. Receivers are told when the connection goes down and when it is back, since
//! anything sent in between was missed.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use sqlx::postgres::PgListener;
use sqlx::PgPool;
use tokio::sync::{broadcast, watch};
use tokio::task::JoinHandle;
use uuid::Uuid;

pub use framegate_commands::webhook_deliveries::WEBHOOK_CHANNEL;

use crate::parking::CONTROL_CHANNEL;
use crate::read_models::CREDENTIALS_CHANNEL;
use crate::subscription::NOTIFY_CHANNEL;

/// The channel the listener pings itself on.
pub const PING_CHANNEL: &str = "framegate_ping";

/// How often the listener checks, by notifying itself, that its connection still delivers.
pub const HEARTBEAT: Duration = Duration::from_secs(5);

/// The channel on which a row added to the API's mail outbox is announced.
pub const MAIL_CHANNEL: &str = "framegate_mail";

/// Every channel the shared listener subscribes to.
pub const CHANNELS: [&str; 6] = [
    NOTIFY_CHANNEL,
    CREDENTIALS_CHANNEL,
    CONTROL_CHANNEL,
    MAIL_CHANNEL,
    WEBHOOK_CHANNEL,
    PING_CHANNEL,
];

const MAX_RECONNECT_DELAY: Duration = Duration::from_secs(5);

/// How many notices a slow receiver may fall behind before it is told it missed some.
const CAPACITY: usize = 1024;

#[derive(Debug, Clone)]
enum Notice {
    Up,
    Down,
    Notification {
        channel: Arc<str>,
        payload: Arc<str>,
    },
}

/// What a receiver hears next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A notification on one of [`CHANNELS`] (never a ping).
    Notification { channel: String, payload: String },
    /// The listener is subscribed (again): notifications sent before may have been missed.
    Missed,
    /// The connection is lost: nothing is heard until the next [`Event::Missed`].
    Down,
}

/// The process's shared listener; cheap to clone.
#[derive(Clone)]
pub struct Notifications {
    sender: broadcast::Sender<Notice>,
    live: Arc<AtomicBool>,
}

impl Notifications {
    /// Starts listening on [`CHANNELS`] over one connection of `pool` until `shutdown` flips.
    pub fn spawn(pool: PgPool, shutdown: watch::Receiver<bool>) -> (Self, JoinHandle<()>) {
        Self::spawn_with_heartbeat(pool, HEARTBEAT, shutdown)
    }

    /// [`Notifications::spawn`] with the heartbeat interval as a parameter (tests shorten it).
    pub fn spawn_with_heartbeat(
        pool: PgPool,
        heartbeat: Duration,
        shutdown: watch::Receiver<bool>,
    ) -> (Self, JoinHandle<()>) {
        let (sender, _) = broadcast::channel(CAPACITY);
        let hub = Self {
            sender,
            live: Arc::new(AtomicBool::new(false)),
        };
        let task = tokio::spawn(hub.clone().run(pool, heartbeat, shutdown));
        (hub, task)
    }

    /// A receiver of everything heard from now on.
    pub fn subscribe(&self) -> Heard {
        Heard {
            receiver: self.sender.subscribe(),
            live: self.live.clone(),
            closed: false,
        }
    }

    /// Whether the listener is subscribed and its heartbeats come back.
    pub fn is_live(&self) -> bool {
        self.live.load(Ordering::Acquire)
    }

    fn up(&self) {
        self.live.store(true, Ordering::Release);
        let _ = self.sender.send(Notice::Up);
    }

    fn down(&self) {
        if self.live.swap(false, Ordering::AcqRel) {
            let _ = self.sender.send(Notice::Down);
        }
    }

    async fn run(self, pool: PgPool, heartbeat: Duration, mut shutdown: watch::Receiver<bool>) {
        let mut delay = Duration::from_millis(100);
        loop {
            let went_live = AtomicBool::new(false);
            tokio::select! {
                outcome = self.listen(&pool, heartbeat, &went_live) => {
                    self.down();
                    match outcome {
                        Ok(()) => tracing::warn!("notification listener lost its connection; reconnecting"),
                        Err(error) => tracing::warn!(%error, "notification listener failed; reconnecting"),
                    }
                }
                _ = shutdown.wait_for(|stop| *stop) => {
                    self.down();
                    return;
                }
            }
            // A subscription that worked starts the backoff over.
            if went_live.load(Ordering::Acquire) {
                delay = Duration::from_millis(100);
            }
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = shutdown.wait_for(|stop| *stop) => return,
            }
            delay = (delay * 2).min(MAX_RECONNECT_DELAY);
        }
    }

    /// One connection: returns when it is lost or stops delivering.
    async fn listen(
        &self,
        pool: &PgPool,
        heartbeat: Duration,
        went_live: &AtomicBool,
    ) -> Result<(), sqlx::Error> {
        let mut listener = PgListener::connect_with(pool).await?;
        // A lost connection ends this subscription (`try_recv` says so with `None`); the
        // caller connects afresh and tells receivers only once subscribed again.
        listener.eager_reconnect(false);
        listener.listen_all(CHANNELS).await?;
        self.up();
        went_live.store(true, Ordering::Release);
        let ping = Uuid::new_v4().to_string();
        let started = Instant::now();
        // Milliseconds after `started` when our own ping last came back.
        let last_pong = AtomicU64::new(0);
        let receive = async {
            while let Some(notification) = listener.try_recv().await? {
                let channel = notification.channel();
                if channel == PING_CHANNEL {
                    if notification.payload() == ping {
                        let now = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
                        last_pong.store(now, Ordering::Release);
                    }
                    continue;
                }
                let _ = self.sender.send(Notice::Notification {
                    channel: channel.into(),
                    payload: notification.payload().into(),
                });
            }
            Ok::<(), sqlx::Error>(())
        };
        let watch = async {
            let mut tick = tokio::time::interval(heartbeat);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let silent_for = started
                    .elapsed()
                    .saturating_sub(Duration::from_millis(last_pong.load(Ordering::Acquire)));
                if silent_for > heartbeat * 3 {
                    tracing::warn!(?silent_for, "notification listener hears nothing back");
                    return Ok::<(), sqlx::Error>(());
                }
                sqlx::query("SELECT pg_notify($1, $2)")
                    .bind(PING_CHANNEL)
                    .bind(&ping)
                    .execute(pool)
                    .await?;
            }
        };
        // Whichever ends first ends the subscription; the listener is dropped with it.
        tokio::select! {
            outcome = receive => outcome,
            outcome = watch => outcome,
        }
    }
}

/// One receiver of the shared listener.
pub struct Heard {
    receiver: broadcast::Receiver<Notice>,
    live: Arc<AtomicBool>,
    closed: bool,
}

impl Heard {
    /// Whether the shared listener is subscribed right now. A receiver asks once after
    /// [`Notifications::subscribe`]; later changes arrive as [`Event::Down`] and
    /// [`Event::Missed`].
    pub fn is_live(&self) -> bool {
        !self.closed && self.live.load(Ordering::Acquire)
    }

    /// Waits for what is heard next. A receiver that fell behind hears [`Event::Missed`] (or
    /// [`Event::Down`] if the connection is down); once the listener has stopped for good it
    /// hears [`Event::Down`] once, then nothing.
    pub async fn recv(&mut self) -> Event {
        if self.closed {
            return std::future::pending().await;
        }
        match self.receiver.recv().await {
            Ok(Notice::Up) => Event::Missed,
            Ok(Notice::Down) => Event::Down,
            Ok(Notice::Notification { channel, payload }) => Event::Notification {
                channel: channel.to_string(),
                payload: payload.to_string(),
            },
            Err(broadcast::error::RecvError::Lagged(_)) => {
                if self.is_live() {
                    Event::Missed
                } else {
                    Event::Down
                }
            }
            Err(broadcast::error::RecvError::Closed) => {
                self.closed = true;
                Event::Down
            }
        }
    }

    /// Drops what was heard so far without waiting.
    pub fn clear(&mut self) {
        use broadcast::error::TryRecvError;
        loop {
            match self.receiver.try_recv() {
                Ok(_) | Err(TryRecvError::Lagged(_)) => {}
                Err(TryRecvError::Empty | TryRecvError::Closed) => return,
            }
        }
    }
}
