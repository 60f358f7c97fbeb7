//! The `images` read model: one row per image stream with its latest upload attempt, for the
//! API's image endpoints and for checking the `image_id` of a video request.
//!
//! Every upload attempt (`ImageUploaded` or `ImageRejected`) overwrites the row, because an
//! image id stands for one owner's content and a re-upload after deletion or a changed
//! moderation verdict continues the same stream. `ImageDeleted` only marks the row: its keys
//! stay, and the API hides it. Since an attempt overwrites everything, a batch folds each
//! image to its last attempt (and any deletion after it) and writes one upsert (`fold`).

mod fold;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use cqrs_es::Aggregate as _;
use framegate_domain::{Image, ImageEvent, ImageExif, ModerationDecision, UserId};
use serde::Serialize;
use sqlx::types::Json;
use sqlx::{FromRow, PgConnection, PgPool};
use uuid::Uuid;

use super::versioned::{self, Versioned, VersionedModel, Writer};
use super::{aggregate_uuid, decode, expect_row};
use crate::log::{Reads, StoredEvent};
use crate::subscription::{BoxError, EventHandler, HandlerError};

pub const SUBSCRIPTION: &str = "read_model.images";

/// `status` of an image that may be shown and used.
pub const AVAILABLE: &str = "available";
/// `status` of an image whose latest upload moderation refused.
pub const REJECTED: &str = "rejected";
/// `status` of an image its owner deleted.
pub const DELETED: &str = "deleted";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, FromRow)]
pub struct ImageRow {
    pub id: Uuid,
    pub owner_id: Uuid,
    /// `available`, `rejected` or `deleted`.
    pub status: String,
    pub sha256: String,
    pub content_type: String,
    pub bytes: i64,
    pub width: i32,
    pub height: i32,
    /// The EXIF orientation of the original; `None` for a rejected upload.
    pub orientation: Option<i16>,
    /// Never location: `ImageExif` has no place for it. `None` for a rejected upload.
    pub exif: Option<Json<ImageExif>>,
    pub blob_key: Option<String>,
    pub thumbnail_key: Option<String>,
    pub moderation: Json<ModerationDecision>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub deleted_at: Option<DateTime<Utc>>,
}

impl ImageRow {
    pub fn is_available(&self) -> bool {
        self.status == AVAILABLE
    }
}

pub struct ImagesProjector;

#[async_trait]
impl EventHandler for ImagesProjector {
    /// Its own aggregate's bodies; nothing personal of metadata.
    fn reads(&self) -> Reads {
        Reads::bodies_of(&[Image::TYPE])
    }

    async fn handle(&self, conn: &mut PgConnection, event: &StoredEvent) -> Result<(), BoxError> {
        if event.aggregate_type != Image::TYPE {
            return Ok(());
        }
        versioned::apply::<Self>(conn, event, Writer::Projector).await
    }

    async fn handle_batch(
        &self,
        conn: &mut PgConnection,
        events: &[StoredEvent],
    ) -> Result<(), HandlerError> {
        versioned::handle_batch(self, conn, events).await
    }
}

/// Rows carry the sequence of the last event they reflect: the table is also written inline.
impl VersionedModel for ImagesProjector {
    const VERSIONS: Versioned = Versioned {
        aggregate_type: Image::TYPE,
        table: "images",
        key: "id",
    };

    async fn project_one(conn: &mut PgConnection, event: &StoredEvent) -> Result<(), BoxError> {
        let id = aggregate_uuid(event)?;
        let at = event.recorded_at;
        match Attempt::of(decode::<ImageEvent>(event)?) {
            Some(attempt) => attempt.row()?.upsert(conn, id, at).await?,
            None => {
                let result = sqlx::query(
                    "UPDATE images SET status = 'deleted', deleted_at = $2, updated_at = $2
                      WHERE id = $1",
                )
                .bind(id)
                .bind(at)
                .execute(&mut *conn)
                .await?;
                expect_row(&result, || format!("image {id} has no row"))?;
            }
        }
        Ok(())
    }
}

/// The facts of one upload attempt, accepted or rejected, as the event has them.
struct Attempt {
    owner: UserId,
    status: &'static str,
    sha256: String,
    content_type: &'static str,
    bytes: u64,
    width: u32,
    height: u32,
    orientation: Option<u16>,
    exif: Option<ImageExif>,
    keys: Option<(String, String)>,
    moderation: ModerationDecision,
}

impl Attempt {
    /// The attempt an event records; `None` for a deletion.
    fn of(event: ImageEvent) -> Option<Self> {
        match event {
            ImageEvent::ImageUploaded {
                owner,
                sha256,
                content_type,
                bytes,
                width,
                height,
                orientation,
                exif,
                blob_key,
                thumbnail_key,
                moderation,
                ..
            } => Some(Attempt {
                owner,
                status: AVAILABLE,
                sha256,
                content_type: content_type.as_str(),
                bytes,
                width,
                height,
                orientation: Some(orientation),
                exif: Some(exif),
                keys: Some((blob_key, thumbnail_key)),
                moderation,
            }),
            ImageEvent::ImageRejected {
                owner,
                sha256,
                content_type,
                bytes,
                width,
                height,
                moderation,
                ..
            } => Some(Attempt {
                owner,
                status: REJECTED,
                sha256,
                content_type: content_type.as_str(),
                bytes,
                width,
                height,
                orientation: None,
                exif: None,
                keys: None,
                moderation,
            }),
            ImageEvent::ImageDeleted {} => None,
        }
    }

    /// The column values; fails on a size the columns cannot hold.
    fn row(self) -> Result<Row, BoxError> {
        let (blob_key, thumbnail_key) = self.keys.unzip();
        Ok(Row {
            owner_id: self.owner.as_uuid(),
            status: self.status,
            sha256: self.sha256,
            content_type: self.content_type,
            bytes: i64::try_from(self.bytes)?,
            width: i32::try_from(self.width)?,
            height: i32::try_from(self.height)?,
            orientation: self.orientation.map(i16::try_from).transpose()?,
            exif: self.exif.map(Json),
            blob_key,
            thumbnail_key,
            moderation: Json(self.moderation),
        })
    }
}

/// An upload attempt as the row stores it (besides id and times).
struct Row {
    owner_id: Uuid,
    status: &'static str,
    sha256: String,
    content_type: &'static str,
    bytes: i64,
    width: i32,
    height: i32,
    orientation: Option<i16>,
    exif: Option<Json<ImageExif>>,
    blob_key: Option<String>,
    thumbnail_key: Option<String>,
    moderation: Json<ModerationDecision>,
}

impl Row {
    /// Every attempt overwrites the whole row: the stream continues with the latest one.
    async fn upsert(
        self,
        conn: &mut PgConnection,
        id: Uuid,
        at: DateTime<Utc>,
    ) -> Result<(), sqlx::Error> {
        sqlx::query(
            "INSERT INTO images (id, owner_id, status, sha256, content_type, bytes, width, height,
                 orientation, exif, blob_key, thumbnail_key, moderation, created_at, updated_at,
                 deleted_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $14, NULL)
             ON CONFLICT (id) DO UPDATE SET
                 owner_id = EXCLUDED.owner_id, status = EXCLUDED.status,
                 sha256 = EXCLUDED.sha256, content_type = EXCLUDED.content_type,
                 bytes = EXCLUDED.bytes, width = EXCLUDED.width, height = EXCLUDED.height,
                 orientation = EXCLUDED.orientation, exif = EXCLUDED.exif,
                 blob_key = EXCLUDED.blob_key, thumbnail_key = EXCLUDED.thumbnail_key,
                 moderation = EXCLUDED.moderation, created_at = EXCLUDED.created_at,
                 updated_at = EXCLUDED.updated_at, deleted_at = NULL",
        )
        .bind(id)
        .bind(self.owner_id)
        .bind(self.status)
        .bind(self.sha256)
        .bind(self.content_type)
        .bind(self.bytes)
        .bind(self.width)
        .bind(self.height)
        .bind(self.orientation)
        .bind(self.exif)
        .bind(self.blob_key)
        .bind(self.thumbnail_key)
        .bind(self.moderation)
        .bind(at)
        .execute(conn)
        .await?;
        Ok(())
    }
}

const COLUMNS: &str = "id, owner_id, status, sha256, content_type, bytes, width, height,
    orientation, exif, blob_key, thumbnail_key, moderation, created_at, updated_at, deleted_at";

/// The image `id` in whatever state, deleted included: callers check owner and status.
pub async fn get(pool: &PgPool, id: Uuid) -> Result<Option<ImageRow>, sqlx::Error> {
    sqlx::query_as(&format!("SELECT {COLUMNS} FROM images WHERE id = $1"))
        .bind(id)
        .fetch_optional(pool)
        .await
}

/// An owner's images that are not deleted (available and rejected), newest first, strictly
/// older than the `before` cursor (created_at, id) when given.
pub async fn list(
    pool: &PgPool,
    owner: UserId,
    before: Option<(DateTime<Utc>, Uuid)>,
    limit: i64,
) -> Result<Vec<ImageRow>, sqlx::Error> {
    let (before_at, before_id) = before.unzip();
    sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM images
          WHERE owner_id = $1 AND status <> 'deleted'
            AND ($2::timestamptz IS NULL OR (created_at, id) < ($2, $3))
          ORDER BY created_at DESC, id DESC
          LIMIT $4"
    ))
    .bind(owner.as_uuid())
    .bind(before_at)
    .bind(before_id)
    .bind(limit)
    .fetch_all(pool)
    .await
}
