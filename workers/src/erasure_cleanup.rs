//! What an erasure leaves to a worker: the process manager that follows `UserErased`.
//!
//! The erasure itself (`framegate_commands::erasure`) commits the event, cancels the user's
//! unfinished videos, destroys the data key and scrubs the tables in one transaction; the blob
//! store is not part of it, so this subscription deletes every video (MP4, poster, thumbnail)
//! and every uploaded image (original, thumbnail) the user ever had. Their videos stay in the
//! log and the read models as anonymous accounting facts, without files.
//!
//! Work that was in flight can outlive both: a render may upload its files after this
//! subscription cleaned up. So it also follows what comes after, for owners already erased:
//! a video's files are deleted again once it stores them or ends (`VideoStored`,
//! `VideoCompleted`, `VideoFailed`, `VideoCancelled`: a delivery refused by a cancellation
//! leaves its upload behind), and an `ImageUploaded` has its files deleted. A request
//! authenticated before the erasure that reaches the store after it is refused there
//! (`CommandError::AccountErased`); a `VideoRequested` of an erased owner that a process from
//! before that refusal recorded (during a rolling upgrade) is cancelled here, as the erasure
//! cancels, billed by the usual rules. Removing a missing blob succeeds and a cancellation
//! refused as finished is ignored, so handling an event twice does no harm; a storage failure
//! is retried briefly and then stops the subscription naming the event
//! (docs/adr/0043-crypto-shredding.md).

use async_trait::async_trait;
use cqrs_es::Aggregate as _;
use framegate_commands::blobs::{video_keys, BlobKey, Blobs};
use framegate_commands::erasure::CANCEL_REASON;
use framegate_commands::{Actor, CommandError, CommandMetadata, EventStore};
use framegate_domain::{Image, User, Video, VideoCommand, VideoError, VideoId, VideoStatus};
use framegate_projections::subscription::BoxError;
use framegate_projections::{EventHandler, StoredEvent};
use serde_json::Value;
use sqlx::PgConnection;
use tracing::{info, instrument};
use uuid::Uuid;

use crate::image_cleanup::remove;

pub const SUBSCRIPTION: &str = "process.erasure_cleanup";

/// Video events after which a video's files exist or will never be written again.
const VIDEO_FILES_SETTLED: [&str; 4] = [
    "VideoStored",
    "VideoCompleted",
    "VideoFailed",
    "VideoCancelled",
];

pub struct ErasureCleanup {
    blobs: Blobs,
    store: EventStore,
}

impl ErasureCleanup {
    pub fn new(blobs: Blobs, store: EventStore) -> Self {
        Self { blobs, store }
    }

    async fn remove_all(&self, keys: &[BlobKey]) -> Result<(), BoxError> {
        for key in keys {
            remove(&self.blobs, key).await?;
        }
        Ok(())
    }

    /// Cancels `video` as the erasure does; a video that finished or is being cancelled
    /// already is left alone.
    async fn cancel(&self, video: Uuid, event: &StoredEvent) -> Result<(), BoxError> {
        let correlation = event
            .meta("correlation_id")
            .and_then(|c| c.parse().ok())
            .unwrap_or_else(Uuid::now_v7);
        let metadata = CommandMetadata::caused_by_event(Actor::System, correlation, event.event_id);
        let cancel = VideoCommand::RequestCancel {
            reason: CANCEL_REASON.to_owned(),
        };
        match self
            .store
            .videos()
            .execute(&video.to_string(), cancel, &metadata)
            .await
        {
            Ok(_)
            | Err(CommandError::Domain(
                VideoError::AlreadyTerminal { .. } | VideoError::AlreadyCancelRequested,
            )) => Ok(()),
            Err(error) => Err(error.into()),
        }
    }
}

#[async_trait]
impl EventHandler for ErasureCleanup {
    #[instrument(skip_all, fields(subscription = SUBSCRIPTION, aggregate = %event.aggregate_id, event_id = %event.event_id))]
    async fn handle(&self, conn: &mut PgConnection, event: &StoredEvent) -> Result<(), BoxError> {
        match (event.aggregate_type.as_str(), event.event_type.as_str()) {
            (User::TYPE, "UserErased") => {
                let owner: Uuid = event.aggregate_id.parse()?;
                // Whatever the erasure's transaction could not see (a request that committed
                // after it read the user's videos).
                for video in unfinished_videos(conn, owner).await? {
                    self.cancel(video, event).await?;
                }
                let keys = user_blobs(conn, &event.aggregate_id).await?;
                self.remove_all(&keys).await?;
                info!(blobs = keys.len(), "erased user's blobs removed");
            }
            (Video::TYPE, "VideoRequested") => {
                let owner = event
                    .payload
                    .pointer("/VideoRequested/spec/owner")
                    .and_then(Value::as_str)
                    .ok_or("a video request without an owner")?;
                if is_erased(conn, owner).await? {
                    self.cancel(event.aggregate_id.parse()?, event).await?;
                    info!("a video requested by an erased user was cancelled");
                }
            }
            (Video::TYPE, settled) if VIDEO_FILES_SETTLED.contains(&settled) => {
                let video: Uuid = event.aggregate_id.parse()?;
                if video_owner_erased(conn, video).await? {
                    let keys = video_keys(VideoId::from_uuid(video))?;
                    self.remove_all(&[keys.video, keys.poster, keys.thumbnail])
                        .await?;
                    info!("an erased user's late video files were removed");
                }
            }
            (Image::TYPE, "ImageUploaded") => {
                let body = event.payload.get("ImageUploaded");
                let owner = body
                    .and_then(|b| b.get("owner"))
                    .and_then(Value::as_str)
                    .ok_or("an image upload without an owner")?;
                if is_erased(conn, owner).await? {
                    let keys = [
                        body.and_then(|b| b.get("blob_key")),
                        body.and_then(|b| b.get("thumbnail_key")),
                    ];
                    let keys = keys
                        .into_iter()
                        .flatten()
                        .filter_map(Value::as_str)
                        .map(|key| BlobKey::new(key.to_owned()))
                        .collect::<Result<Vec<_>, _>>()?;
                    self.remove_all(&keys).await?;
                    info!("an erased user's late image upload was removed");
                }
            }
            _ => {}
        }
        Ok(())
    }
}

/// Whether `user` was erased (their data key is a tombstone).
async fn is_erased(conn: &mut PgConnection, user: &str) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM data_keys WHERE user_id = $1 AND erased_at IS NOT NULL)",
    )
    .bind(user)
    .fetch_one(conn)
    .await
}

/// Whether `video`'s owner was erased (the owner from the inline videos read model).
async fn video_owner_erased(conn: &mut PgConnection, video: Uuid) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM videos v JOIN data_keys d ON d.user_id = v.owner_id::text
                         WHERE v.id = $1 AND d.erased_at IS NOT NULL)",
    )
    .bind(video)
    .fetch_one(conn)
    .await
}

/// `owner`'s videos neither finished nor being cancelled.
async fn unfinished_videos(conn: &mut PgConnection, owner: Uuid) -> Result<Vec<Uuid>, BoxError> {
    let settled: Vec<&str> = VideoStatus::ALL
        .into_iter()
        .filter(|status| status.is_terminal() || *status == VideoStatus::CancelRequested)
        .map(VideoStatus::as_str)
        .collect();
    Ok(sqlx::query_scalar(
        "SELECT id FROM videos WHERE owner_id = $1 AND status <> ALL($2) ORDER BY id",
    )
    .bind(owner)
    .bind(&settled)
    .fetch_all(conn)
    .await?)
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
