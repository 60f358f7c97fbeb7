//! Removing a deleted video's files: the process manager that follows `VideoDeleted`.
//!
//! The API records the deletion of a finished video and answers at once (the OpenAI-compatible
//! `DELETE /videos/{id}`, docs/adr/0039-openai-compatible-videos-api.md); this subscription
//! then deletes its MP4, poster and thumbnail. Their keys are fixed by the video id
//! (`video_keys`), and a video is deleted only once it is final; a worker whose download was
//! under way when it ended removes what it uploads itself, once `Deliver` is refused
//! (`pipeline::finishing`). Removing a missing blob succeeds (a failed or cancelled video has none),
//! so handling an event twice does no harm. A storage failure is retried briefly and then
//! stops the subscription naming the event, as for images: skipping it would keep the owner's
//! files for good.

use async_trait::async_trait;
use cqrs_es::Aggregate as _;
use framegate_commands::blobs::{video_keys, Blobs};
use framegate_domain::{Video, VideoId};
use framegate_projections::subscription::BoxError;
use framegate_projections::{EventHandler, StoredEvent};
use sqlx::PgConnection;
use tracing::{info, instrument};

use crate::image_cleanup::remove;

pub const SUBSCRIPTION: &str = "process.video_cleanup";

pub struct VideoCleanup {
    blobs: Blobs,
}

impl VideoCleanup {
    pub fn new(blobs: Blobs) -> Self {
        Self { blobs }
    }
}

#[async_trait]
impl EventHandler for VideoCleanup {
    #[instrument(skip_all, fields(subscription = SUBSCRIPTION, video_id = %event.aggregate_id, event_id = %event.event_id))]
    async fn handle(&self, _conn: &mut PgConnection, event: &StoredEvent) -> Result<(), BoxError> {
        if event.aggregate_type != Video::TYPE || event.event_type != "VideoDeleted" {
            return Ok(());
        }
        let id: uuid::Uuid = event.aggregate_id.parse()?;
        let keys = video_keys(VideoId::from_uuid(id))?;
        for key in [&keys.video, &keys.poster, &keys.thumbnail] {
            remove(&self.blobs, key).await?;
        }
        info!("deleted video's blobs removed");
        Ok(())
    }
}
