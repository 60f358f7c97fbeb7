//! The process's one watcher of the videos its event streams follow.
//!
//! A stream registers interest in a video ([`VideoWatch::watch`]) and receives the video's
//! row whenever it changes, through a `tokio::sync::watch` channel per video that every
//! stream of that video shares. The watcher's task ([`VideoWatch::run`]) wakes when the
//! process's shared listener hears that events were appended (`framegate_events`, which the
//! event store's trigger sends after the commit that also wrote the inline `videos` rows), and
//! reads, in one query, the rows of all watched videos whose `version` moved past what it
//! holds. How many streams follow a video, or how many videos are followed, does not change
//! how many queries it runs: at most one per `min_interval` while woken, and one per
//! `recheck` otherwise, which covers the writers the trigger did not let notify and the
//! changes only a projector writes (docs/adr/0026-video-event-streams.md).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use framegate_projections::notify::{Event, Heard};
use framegate_projections::read_models::videos::COLUMNS;
use framegate_projections::read_models::VideoRow;
use framegate_projections::subscription::NOTIFY_CHANNEL;
use sqlx::PgPool;
use tokio::sync::watch;
use tokio::time::Instant;
use uuid::Uuid;

use super::StreamConfig;

/// A video's row and its `version`: the sequence of the last event it reflects, which grows
/// with every change and is what a stream's event ids are.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct Snapshot {
    #[sqlx(flatten)]
    pub row: VideoRow,
    pub version: i64,
}

/// What a stream holds of its video: `None` until the video was first read.
pub type Watching = watch::Receiver<Option<Arc<Snapshot>>>;

type Sender = watch::Sender<Option<Arc<Snapshot>>>;

#[derive(Default)]
pub struct VideoWatch {
    videos: Mutex<HashMap<Uuid, Sender>>,
    running: AtomicBool,
    /// Reads of all watched videos at once, since start (for tests and operators).
    looks: AtomicU64,
}

impl VideoWatch {
    /// Whether [`VideoWatch::run`] is running: without it nothing is delivered.
    pub fn is_running(&self) -> bool {
        self.running.load(Ordering::Acquire)
    }

    /// How many times the watched videos were read together, since start.
    pub fn looks(&self) -> u64 {
        self.looks.load(Ordering::Relaxed)
    }

    /// Starts watching `id`. Registered before the first read ([`VideoWatch::current`]), so
    /// that a change committed after that read is found by the next look.
    pub fn watch(&self, id: Uuid) -> Watching {
        let mut videos = self.videos.lock().unwrap_or_else(PoisonError::into_inner);
        videos
            .entry(id)
            .or_insert_with(|| watch::channel(None).0)
            .subscribe()
    }

    /// The video's current state for a stream that has just started watching it, read now
    /// (as `GET /v1/videos/{id}` would: a row the watcher holds may lag a commit whose
    /// notification it has not answered yet) and handed to the watcher, or the watcher's if a
    /// look found a newer one meanwhile. `None`: no such video.
    pub async fn current(
        &self,
        pool: &PgPool,
        id: Uuid,
        watching: &mut Watching,
    ) -> Result<Option<Arc<Snapshot>>, sqlx::Error> {
        let read: Option<Snapshot> = sqlx::query_as(&format!(
            "SELECT {COLUMNS}, version FROM videos WHERE id = $1"
        ))
        .bind(id)
        .fetch_optional(pool)
        .await?;
        let Some(read) = read else {
            return Ok(None);
        };
        self.offer(Arc::new(read));
        Ok(watching.borrow_and_update().clone())
    }

    /// Hands `snapshot` to the video's streams unless they hold a newer one.
    fn offer(&self, snapshot: Arc<Snapshot>) {
        let videos = self.videos.lock().unwrap_or_else(PoisonError::into_inner);
        let Some(sender) = videos.get(&snapshot.row.id) else {
            return;
        };
        sender.send_if_modified(|held| {
            if held.as_ref().is_some_and(|h| h.version >= snapshot.version) {
                return false;
            }
            *held = Some(snapshot);
            true
        });
    }

    /// Reads every watched video whose row moved past the version held, in one query, and
    /// hands the new rows to their streams. Videos nobody watches any more are dropped first.
    async fn look(&self, pool: &PgPool) -> Result<(), sqlx::Error> {
        let (ids, seen): (Vec<Uuid>, Vec<i64>) = {
            let mut videos = self.videos.lock().unwrap_or_else(PoisonError::into_inner);
            videos.retain(|_, sender| sender.receiver_count() > 0);
            videos
                .iter()
                .map(|(id, sender)| (*id, sender.borrow().as_ref().map_or(-1, |s| s.version)))
                .unzip()
        };
        if ids.is_empty() {
            return Ok(());
        }
        self.looks.fetch_add(1, Ordering::Relaxed);
        let changed: Vec<Snapshot> = sqlx::query_as(&format!(
            "SELECT {COLUMNS}, version
               FROM unnest($1::uuid[], $2::bigint[]) AS w(watched, seen)
               JOIN videos ON videos.id = w.watched
              WHERE videos.version > w.seen"
        ))
        .bind(&ids)
        .bind(&seen)
        .fetch_all(pool)
        .await?;
        for snapshot in changed {
            self.offer(Arc::new(snapshot));
        }
        Ok(())
    }

    /// Follows the watched videos until `shutdown` flips, woken by what `heard` hears; then
    /// lets go of every video, which ends their streams. Counts as running from this call.
    pub fn run(
        self: Arc<Self>,
        pool: PgPool,
        heard: Heard,
        config: StreamConfig,
        shutdown: watch::Receiver<bool>,
    ) -> impl std::future::Future<Output = ()> + Send + 'static {
        self.running.store(true, Ordering::Release);
        self.follow(pool, heard, config, shutdown)
    }

    async fn follow(
        self: Arc<Self>,
        pool: PgPool,
        mut heard: Heard,
        config: StreamConfig,
        mut shutdown: watch::Receiver<bool>,
    ) {
        let mut recheck = tokio::time::interval(config.recheck);
        recheck.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_look: Option<Instant> = None;
        loop {
            tokio::select! {
                event = heard.recv() => match event {
                    Event::Notification { channel, .. } if channel == NOTIFY_CHANNEL => {}
                    // Notifications may have been missed: look.
                    Event::Missed => {}
                    // Other channels; and while the listener is down, the recheck goes on.
                    Event::Notification { .. } | Event::Down => continue,
                },
                _ = recheck.tick() => {}
                _ = shutdown.wait_for(|stop| *stop) => break,
            }
            // Whatever arrives until the look starts is answered by it.
            if let Some(due) = last_look.map(|at| at + config.min_interval) {
                tokio::select! {
                    () = tokio::time::sleep_until(due) => {}
                    _ = shutdown.wait_for(|stop| *stop) => break,
                }
            }
            heard.clear();
            last_look = Some(Instant::now());
            if let Err(error) = self.look(&pool).await {
                tracing::warn!(%error, "video watch: could not read the watched videos");
            }
        }
        self.running.store(false, Ordering::Release);
        self.videos
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
    }
}
