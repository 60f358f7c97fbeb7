//! What bounds the video event streams (`GET /v1/videos/{id}/events`) of one API process.
//!
//! Streams do not query Postgres themselves. One [`VideoWatch`] per process reads the
//! videos its streams follow when the shared listener hears that events were appended, one
//! query for all of them, and hands each change to every stream of the video; one
//! [`CredentialWatch`] tells a user's streams when an announcement says the user's keys or
//! account changed, and they authenticate again. [`StreamSlots`] caps the streams per user
//! and per process. The stream itself (lifetime, event ids, resumption) is the handler's:
//! `handlers/videos/event_stream.rs` (docs/adr/0026-video-event-streams.md).

mod config;
pub mod credential_watch;
pub mod slots;
pub mod video_watch;

use std::sync::Arc;

use framegate_projections::notify::Notifications;
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub use config::StreamConfig;
pub use credential_watch::CredentialWatch;
pub use slots::{Refusal, Slot, StreamSlots};
pub use video_watch::{Snapshot, VideoWatch, Watching};

/// The process's streams: who watches what, and how many are open.
pub struct Streams {
    pub videos: Arc<VideoWatch>,
    pub credentials: Arc<CredentialWatch>,
    pub slots: Arc<StreamSlots>,
}

impl Streams {
    pub fn new(config: &StreamConfig) -> Self {
        Self {
            videos: Arc::default(),
            credentials: Arc::default(),
            slots: StreamSlots::new(config.max_per_user, config.max_total),
        }
    }
}

/// Runs the process's video and credential watchers on `notifications` until `shutdown`
/// flips. Without them `GET /v1/videos/{id}/events` answers 503.
pub fn spawn(
    state: &crate::AppState,
    notifications: &Notifications,
    shutdown: watch::Receiver<bool>,
) -> JoinHandle<()> {
    let streams = &state.streams;
    // Subscribed before the task starts: nothing heard from now on is lost.
    let videos = streams.videos.clone().run(
        state.pool.clone(),
        notifications.subscribe(),
        state.config.streams,
        shutdown.clone(),
    );
    let credentials = streams.credentials.clone().run(
        state.credentials.clone(),
        notifications.subscribe(),
        shutdown,
    );
    tokio::spawn(async move {
        tokio::join!(videos, credentials);
    })
}
