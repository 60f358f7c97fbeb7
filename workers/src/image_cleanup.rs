//! Removing a deleted image's files: the process manager that follows `ImageDeleted`.
//!
//! The API records a deletion and answers at once; this subscription then deletes the
//! original and the thumbnail of the upload that the deletion ended. Their keys come from the
//! `ImageUploaded` that precedes the deletion in the image's own stream, not from the
//! aggregate's or the read model's current state: a re-upload of the same content continues
//! the same stream under new keys, and a lagging subscription must never remove those
//! (docs/adr/0006-images.md). Removing a missing blob succeeds, so handling an event twice (a
//! crash before the checkpoint moved) does no harm. A storage failure is retried briefly and
//! then stops the subscription naming the event: skipping it would keep the owner's file for
//! good.

use std::time::Duration;

use async_trait::async_trait;
use cqrs_es::{Aggregate as _, DomainEvent as _};
use framegate_commands::blobs::{BlobError, BlobKey, Blobs};
use framegate_domain::{Image, ImageEvent};
use framegate_projections::subscription::BoxError;
use framegate_projections::{EventHandler, StoredEvent};
use sqlx::PgConnection;
use tracing::{info, instrument, warn};

pub const SUBSCRIPTION: &str = "process.image_cleanup";

/// Attempts per blob before the subscription stops. Short on purpose: the subscription's
/// transaction stays open while it waits.
const ATTEMPTS: u32 = 3;
const FIRST_RETRY: Duration = Duration::from_millis(50);

pub struct ImageCleanup {
    blobs: Blobs,
}

impl ImageCleanup {
    pub fn new(blobs: Blobs) -> Self {
        Self { blobs }
    }
}

/// Removes one blob of something deleted, retrying a storage failure briefly (shared with
/// `video_cleanup`).
pub(crate) async fn remove(blobs: &Blobs, key: &BlobKey) -> Result<(), BlobError> {
    let mut pause = FIRST_RETRY;
    let mut attempt = 1;
    loop {
        match blobs.delete(key).await {
            Ok(()) => return Ok(()),
            Err(error) if attempt < ATTEMPTS => {
                warn!(%error, %key, attempt, "could not remove a deleted blob; retrying");
                tokio::time::sleep(pause).await;
                pause *= 4;
                attempt += 1;
            }
            Err(error) => return Err(error),
        }
    }
}

#[async_trait]
impl EventHandler for ImageCleanup {
    #[instrument(skip_all, fields(subscription = SUBSCRIPTION, image_id = %event.aggregate_id, event_id = %event.event_id))]
    async fn handle(&self, conn: &mut PgConnection, event: &StoredEvent) -> Result<(), BoxError> {
        if event.aggregate_type != Image::TYPE || event.event_type != "ImageDeleted" {
            return Ok(());
        }
        for key in uploaded_keys(conn, event).await? {
            remove(&self.blobs, &key).await?;
        }
        info!("deleted image's blobs removed");
        Ok(())
    }
}

/// The original's and the thumbnail's keys of the upload that `deleted` ended: those of the
/// last `ImageUploaded` before it in the same stream.
async fn uploaded_keys(
    conn: &mut PgConnection,
    deleted: &StoredEvent,
) -> Result<[BlobKey; 2], BoxError> {
    let row: Option<(String, serde_json::Value)> = sqlx::query_as(
        "SELECT event_version, payload FROM events
          WHERE aggregate_type = $1 AND aggregate_id = $2 AND sequence < $3
            AND event_type = 'ImageUploaded'
          ORDER BY sequence DESC
          LIMIT 1",
    )
    .bind(Image::TYPE)
    .bind(&deleted.aggregate_id)
    .bind(deleted.sequence)
    .fetch_optional(&mut *conn)
    .await?;
    let Some((version, payload)) = row else {
        return Err(format!(
            "image {} was deleted but no upload precedes the deletion",
            deleted.aggregate_id
        )
        .into());
    };
    match framegate_domain::versions::decode::<ImageEvent>("ImageUploaded", &version, &payload)? {
        ImageEvent::ImageUploaded {
            blob_key,
            thumbnail_key,
            ..
        } => Ok([BlobKey::new(blob_key)?, BlobKey::new(thumbnail_key)?]),
        other => Err(format!("an ImageUploaded row decoded as {}", other.event_type()).into()),
    }
}
