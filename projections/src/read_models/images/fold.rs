//! The images projector's set-based path. An upload attempt overwrites every column, so an
//! image's events in a batch come down to its last attempt and the deletions after it; the
//! deletions before its first attempt only need the row to exist already (one by one they
//! would fail on a missing row) and are applied first, to be overwritten. Two statements per
//! batch: one `UPDATE ... FROM unnest(...)` for those deletions, one multi-row upsert.

use std::collections::HashMap;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use cqrs_es::Aggregate as _;
use framegate_domain::{Image, ImageEvent, ImageExif, ModerationDecision};
use sqlx::types::Json;
use sqlx::PgConnection;
use uuid::Uuid;

use super::{Attempt, ImagesProjector, Row, DELETED};
use crate::log::StoredEvent;
use crate::read_models::batch::{decode_all, expect_rows, SetBased};
use crate::subscription::BoxError;

#[async_trait]
impl SetBased for ImagesProjector {
    const AGGREGATE_TYPE: &'static str = Image::TYPE;

    async fn project_set(
        &self,
        conn: &mut PgConnection,
        events: &[StoredEvent],
    ) -> Result<(), BoxError> {
        let mut folds: Vec<ImageFold> = Vec::new();
        let mut index: HashMap<Uuid, usize> = HashMap::new();
        for event in decode_all::<ImageEvent>(events, Image::TYPE)? {
            let at = event.event.recorded_at;
            let slot = *index.entry(event.id).or_insert_with(|| {
                folds.push(ImageFold {
                    id: event.id,
                    deleted_before: None,
                    last_attempt: None,
                    deleted_after: None,
                });
                folds.len() - 1
            });
            let fold = &mut folds[slot];
            match Attempt::of(event.body) {
                Some(attempt) => {
                    fold.last_attempt = Some((attempt.row()?, at));
                    fold.deleted_after = None;
                }
                None if fold.last_attempt.is_none() => fold.deleted_before = Some(at),
                None => fold.deleted_after = Some(at),
            }
        }
        delete_existing(conn, &folds).await?;
        upsert(conn, folds).await?;
        Ok(())
    }
}

/// One image's events of a batch.
struct ImageFold {
    id: Uuid,
    /// The last deletion before the first attempt: it needs the row to exist already.
    deleted_before: Option<DateTime<Utc>>,
    /// The last attempt and its time.
    last_attempt: Option<(Row, DateTime<Utc>)>,
    /// The last deletion after the last attempt.
    deleted_after: Option<DateTime<Utc>>,
}

async fn delete_existing(conn: &mut PgConnection, folds: &[ImageFold]) -> Result<(), BoxError> {
    let (ids, at): (Vec<Uuid>, Vec<DateTime<Utc>>) = folds
        .iter()
        .filter_map(|fold| Some((fold.id, fold.deleted_before?)))
        .unzip();
    if ids.is_empty() {
        return Ok(());
    }
    let result = sqlx::query(
        "UPDATE images i SET status = 'deleted', deleted_at = d.at, updated_at = d.at
           FROM unnest($1::uuid[], $2::timestamptz[]) AS d(id, at)
          WHERE i.id = d.id",
    )
    .bind(&ids)
    .bind(&at)
    .execute(&mut *conn)
    .await?;
    expect_rows(&result, ids.len(), "images deleted by a batch")?;
    Ok(())
}

/// The final rows of the images with an attempt in the batch, as columns.
#[derive(Default)]
struct Rows {
    ids: Vec<Uuid>,
    owners: Vec<Uuid>,
    statuses: Vec<&'static str>,
    sha256s: Vec<String>,
    content_types: Vec<&'static str>,
    bytes: Vec<i64>,
    widths: Vec<i32>,
    heights: Vec<i32>,
    orientations: Vec<Option<i16>>,
    exifs: Vec<Option<Json<ImageExif>>>,
    blob_keys: Vec<Option<String>>,
    thumbnail_keys: Vec<Option<String>>,
    moderations: Vec<Json<ModerationDecision>>,
    created_at: Vec<DateTime<Utc>>,
    updated_at: Vec<DateTime<Utc>>,
    deleted_at: Vec<Option<DateTime<Utc>>>,
}

async fn upsert(conn: &mut PgConnection, folds: Vec<ImageFold>) -> Result<(), BoxError> {
    let mut rows = Rows::default();
    for fold in folds {
        let Some((row, at)) = fold.last_attempt else {
            continue;
        };
        // A deletion after the attempt changes what a deletion changes, nothing else.
        let (status, updated_at) = match fold.deleted_after {
            Some(deleted) => (DELETED, deleted),
            None => (row.status, at),
        };
        rows.ids.push(fold.id);
        rows.owners.push(row.owner_id);
        rows.statuses.push(status);
        rows.sha256s.push(row.sha256);
        rows.content_types.push(row.content_type);
        rows.bytes.push(row.bytes);
        rows.widths.push(row.width);
        rows.heights.push(row.height);
        rows.orientations.push(row.orientation);
        rows.exifs.push(row.exif);
        rows.blob_keys.push(row.blob_key);
        rows.thumbnail_keys.push(row.thumbnail_key);
        rows.moderations.push(row.moderation);
        rows.created_at.push(at);
        rows.updated_at.push(updated_at);
        rows.deleted_at.push(fold.deleted_after);
    }
    if rows.ids.is_empty() {
        return Ok(());
    }
    sqlx::query(
        "INSERT INTO images (id, owner_id, status, sha256, content_type, bytes, width, height,
             orientation, exif, blob_key, thumbnail_key, moderation, created_at, updated_at,
             deleted_at)
         SELECT * FROM unnest($1::uuid[], $2::uuid[], $3::text[], $4::text[], $5::text[],
                              $6::int8[], $7::int4[], $8::int4[], $9::int2[], $10::jsonb[],
                              $11::text[], $12::text[], $13::jsonb[], $14::timestamptz[],
                              $15::timestamptz[], $16::timestamptz[])
         ON CONFLICT (id) DO UPDATE SET
             owner_id = EXCLUDED.owner_id, status = EXCLUDED.status,
             sha256 = EXCLUDED.sha256, content_type = EXCLUDED.content_type,
             bytes = EXCLUDED.bytes, width = EXCLUDED.width, height = EXCLUDED.height,
             orientation = EXCLUDED.orientation, exif = EXCLUDED.exif,
             blob_key = EXCLUDED.blob_key, thumbnail_key = EXCLUDED.thumbnail_key,
             moderation = EXCLUDED.moderation, created_at = EXCLUDED.created_at,
             updated_at = EXCLUDED.updated_at, deleted_at = EXCLUDED.deleted_at",
    )
    .bind(&rows.ids)
    .bind(&rows.owners)
    .bind(&rows.statuses)
    .bind(&rows.sha256s)
    .bind(&rows.content_types)
    .bind(&rows.bytes)
    .bind(&rows.widths)
    .bind(&rows.heights)
    .bind(&rows.orientations)
    .bind(&rows.exifs)
    .bind(&rows.blob_keys)
    .bind(&rows.thumbnail_keys)
    .bind(&rows.moderations)
    .bind(&rows.created_at)
    .bind(&rows.updated_at)
    .bind(&rows.deleted_at)
    .execute(conn)
    .await?;
    Ok(())
}
