//! Removing an erased user's files: the process manager that follows `UserErased`.
//!
//! The erasure itself (`framegate_commands::erasure`) commits the event, destroys the data key
//! and scrubs the tables in one transaction; the blob store is not part of it, so this
//! subscription deletes every video (MP4, poster, thumbnail) and every uploaded image
//! (original, thumbnail) the user ever had. Their videos stay in the log and the read models
//! as anonymous accounting facts, without files. Removing a missing blob succeeds, so
//! handling the event twice does no harm; a storage failure is retried briefly and then
//! stops the subscription naming the event (docs/adr/0043-crypto-shredding.md).

use async_trait::async_trait;
use cqrs_es::Aggregate as _;
use framegate_commands::blobs::{video_keys, BlobKey, Blobs};
use framegate_domain::{User, VideoId};
use framegate_projections::subscription::BoxError;
use framegate_projections::{EventHandler, StoredEvent};
use sqlx::PgConnection;
use tracing::{info, instrument};
use uuid::Uuid;

use crate::image_cleanup::remove;

pub const SUBSCRIPTION: &str = "process.erasure_cleanup";

pub struct ErasureCleanup {
    blobs: Blobs,
}

impl ErasureCleanup {
    pub fn new(blobs: Blobs) -> Self {
        Self { blobs }
    }
}

#[async_trait]
impl EventHandler for ErasureCleanup {
    #[instrument(skip_all, fields(subscription = SUBSCRIPTION, user_id = %event.aggregate_id, event_id = %event.event_id))]
    async fn handle(&self, conn: &mut PgConnection, event: &StoredEvent) -> Result<(), BoxError> {
        if event.aggregate_type != User::TYPE || event.event_type != "UserErased" {
            return Ok(());
        }
        let keys = user_blobs(conn, &event.aggregate_id).await?;
        for key in &keys {
            remove(&self.blobs, key).await?;
        }
        info!(blobs = keys.len(), "erased user's blobs removed");
        Ok(())
    }
}

/// Every blob key of `user`'s videos and image uploads.
async fn user_blobs(conn: &mut PgConnection, user: &str) -> Result<Vec<BlobKey>, BoxError> {
    let owner: Uuid = user.parse()?;
    let videos: Vec<Uuid> = sqlx::query_scalar("SELECT id FROM videos WHERE owner_id = $1")
        .bind(owner)
        .fetch_all(&mut *conn)
        .await?;
    let images: Vec<(Option<String>, Option<String>)> = sqlx::query_as(
        "SELECT payload -> 'ImageUploaded' ->> 'blob_key',
                payload -> 'ImageUploaded' ->> 'thumbnail_key'
           FROM events
          WHERE aggregate_type = 'Image' AND event_type = 'ImageUploaded'
            AND payload -> 'ImageUploaded' ->> 'owner' = $1",
    )
    .bind(user)
    .fetch_all(&mut *conn)
    .await?;
    let mut keys = Vec::new();
    for video in videos {
        let video = video_keys(VideoId::from_uuid(video))?;
        keys.extend([video.video, video.poster, video.thumbnail]);
    }
    for key in images.into_iter().flat_map(|(a, b)| [a, b]).flatten() {
        keys.push(BlobKey::new(key)?);
    }
    Ok(keys)
}
