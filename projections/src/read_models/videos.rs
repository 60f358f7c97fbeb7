//! The `videos` read model: one row per video with its current status, for the API's
//! listings and the workers' "what is in flight" queries.
//!
//! Written from `Video` events inline, in the transaction that appends them (`inline`), and by
//! [`VideosProjector`] from the log; each row records the sequence of the last event it
//! reflects, so the second writer skips it (`versioned`). A batch is folded per video
//! (`fold`) and written with one insert and one update statement for the whole batch (`write`).

pub mod as_of;
mod erasure;
mod fold;
mod write;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use cqrs_es::Aggregate as _;
use framegate_domain::{UserId, Video, VideoEvent, VideoId, VideoSpec, VideoStatus};
use serde::Serialize;
use sqlx::{FromRow, PgConnection, PgPool};
use uuid::Uuid;

use super::versioned::{self, Versioned, VersionedModel, Writer};
use super::{aggregate_uuid, decode, expect_row, ProjectionError};
use crate::log::{Reads, StoredEvent};
use crate::subscription::{BoxError, EventHandler, HandlerError};
use erasure::{forget_prompts, is_erasure};

pub const SUBSCRIPTION: &str = "read_model.videos";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, FromRow)]
pub struct VideoRow {
    pub id: Uuid,
    pub owner_id: Uuid,
    pub status: String,
    pub progress: i16,
    pub provider_preference: String,
    pub provider: Option<String>,
    pub model: Option<String>,
    pub attempt: i32,
    pub provider_job_id: Option<String>,
    pub prompt: String,
    pub negative_prompt: Option<String>,
    pub duration_seconds: i32,
    pub aspect_ratio: String,
    pub resolution: String,
    pub image_id: Option<Uuid>,
    pub seed: Option<i64>,
    pub external_id: Option<String>,
    pub estimated_cost: i64,
    pub final_cost: Option<i64>,
    pub error_code: Option<String>,
    pub error_message: Option<String>,
    pub error_retryable: Option<bool>,
    pub error_charged: Option<bool>,
    pub blob_key: Option<String>,
    pub bytes: Option<i64>,
    pub sha256: Option<String>,
    pub duration_ms: Option<i64>,
    pub width: Option<i32>,
    pub height: Option<i32>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub completed_at: Option<DateTime<Utc>>,
    /// When a queued video that a provider did not accept is due for another attempt.
    pub next_attempt_at: Option<DateTime<Utc>>,
    /// Every submission attempt: `{attempt, provider, model, started_at, error?}`.
    pub attempts: sqlx::types::Json<Vec<serde_json::Value>>,
    /// Once cancelled: whether the cancellation is billed (the provider could not stop it).
    pub cancel_charged: Option<bool>,
    /// When its owner deleted it (`VideoDeleted`): reads of the API no longer show it.
    pub deleted_at: Option<DateTime<Utc>>,
    /// Asked for with a soundtrack (`VideoRequested` 2.0).
    pub generate_audio: bool,
}

pub struct VideosProjector;

#[async_trait]
impl EventHandler for VideosProjector {
    /// Video bodies; an erasure by its header alone; nothing personal of metadata.
    fn reads(&self) -> Reads {
        Reads::bodies_of(&[Video::TYPE])
    }

    async fn handle(&self, conn: &mut PgConnection, event: &StoredEvent) -> Result<(), BoxError> {
        if is_erasure(event) {
            return Ok(forget_prompts(conn, aggregate_uuid(event)?).await?);
        }
        if event.aggregate_type != Video::TYPE {
            return Ok(());
        }
        versioned::apply::<Self>(conn, event, Writer::Projector).await
    }

    async fn handle_batch(
        &self,
        conn: &mut PgConnection,
        events: &[StoredEvent],
    ) -> Result<(), HandlerError> {
        versioned::handle_batch(self, conn, events).await?;
        // After the batch's video events: any of the user's among them were opened after the
        // erasure committed (it was in the log when the batch was read), so they read
        // `[erased]` already; this catches the rows of requests projected before it.
        for event in events.iter().filter(|event| is_erasure(event)) {
            let owner = aggregate_uuid(event).map_err(|e| HandlerError::at(event, e))?;
            forget_prompts(conn, owner)
                .await
                .map_err(|e| HandlerError::at(event, e))?;
        }
        Ok(())
    }
}

/// Rows carry the sequence of the last event they reflect: the table is also written inline.
impl VersionedModel for VideosProjector {
    const VERSIONS: Versioned = Versioned {
        aggregate_type: Video::TYPE,
        table: "videos",
        key: "id",
    };

    async fn project_one(conn: &mut PgConnection, event: &StoredEvent) -> Result<(), BoxError> {
        project(conn, event).await?;
        Ok(())
    }

    /// A request inserts its row at its own sequence, unless the row is there.
    async fn apply_guarded(
        conn: &mut PgConnection,
        event: &StoredEvent,
    ) -> Result<Option<bool>, BoxError> {
        if event.event_type != REQUESTED {
            return Ok(None);
        }
        let VideoEvent::VideoRequested { spec, .. } = decode::<VideoEvent>(event)? else {
            return Ok(None);
        };
        let id = aggregate_uuid(event)?;
        let inserted = insert_requested(conn, id, &spec, event.recorded_at, event.sequence).await?;
        Ok(Some(inserted))
    }
}

/// The event type of a video request.
const REQUESTED: &str = "VideoRequested";

/// Inserts the row of a requested video at `version`; false when it is there already.
async fn insert_requested(
    conn: &mut PgConnection,
    id: Uuid,
    spec: &VideoSpec,
    at: DateTime<Utc>,
    version: i64,
) -> Result<bool, sqlx::Error> {
    let result = sqlx::query(
        "INSERT INTO videos (id, owner_id, status, provider_preference, model, prompt,
             negative_prompt, duration_seconds, aspect_ratio, resolution, image_id, seed,
             external_id, estimated_cost, created_at, updated_at, version, generate_audio)
         VALUES ($1, $2, $15, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $14, $16,
                 $17)
         ON CONFLICT (id) DO NOTHING",
    )
    .bind(id)
    .bind(spec.owner.as_uuid())
    .bind(spec.provider.to_string())
    .bind(&spec.model)
    .bind(&spec.prompt)
    .bind(&spec.negative_prompt)
    .bind(spec.duration_seconds as i32)
    .bind(&spec.aspect_ratio)
    .bind(&spec.resolution)
    .bind(spec.image_id.map(|i| i.as_uuid()))
    .bind(spec.seed.map(|s| s as i64))
    .bind(&spec.external_id)
    .bind(spec.estimated_cost.value())
    .bind(at)
    .bind(VideoStatus::Queued.as_str())
    .bind(version)
    .bind(spec.generate_audio)
    .execute(conn)
    .await?;
    Ok(result.rows_affected() == 1)
}

/// The row `insert_requested` writes for a `VideoRequested` event, built in memory: what
/// `GET /v1/videos/{id}` shows of a video just requested, for the response of the request
/// itself. `None` for any other event.
pub fn requested_row(event: &StoredEvent) -> Result<Option<VideoRow>, ProjectionError> {
    if event.event_type != REQUESTED {
        return Ok(None);
    }
    let VideoEvent::VideoRequested { spec, .. } = decode::<VideoEvent>(event)? else {
        return Ok(None);
    };
    Ok(Some(VideoRow {
        id: aggregate_uuid(event)?,
        owner_id: spec.owner.as_uuid(),
        status: VideoStatus::Queued.as_str().to_owned(),
        progress: 0,
        provider_preference: spec.provider.to_string(),
        provider: None,
        model: spec.model,
        attempt: 0,
        provider_job_id: None,
        prompt: spec.prompt,
        negative_prompt: spec.negative_prompt,
        duration_seconds: spec.duration_seconds as i32,
        aspect_ratio: spec.aspect_ratio,
        resolution: spec.resolution,
        image_id: spec.image_id.map(|i| i.as_uuid()),
        seed: spec.seed.map(|s| s as i64),
        external_id: spec.external_id,
        estimated_cost: spec.estimated_cost.value(),
        final_cost: None,
        error_code: None,
        error_message: None,
        error_retryable: None,
        error_charged: None,
        blob_key: None,
        bytes: None,
        sha256: None,
        duration_ms: None,
        width: None,
        height: None,
        created_at: event.recorded_at,
        updated_at: event.recorded_at,
        completed_at: None,
        next_attempt_at: None,
        attempts: sqlx::types::Json(Vec::new()),
        cancel_charged: None,
        deleted_at: None,
        generate_audio: spec.generate_audio,
    }))
}

/// Projects one `Video` event.
async fn project(conn: &mut PgConnection, event: &StoredEvent) -> Result<(), BoxError> {
    let id = aggregate_uuid(event)?;
    let at = event.recorded_at;
    // Every statement sets `status` ($3) from `VideoStatus`, the one list of statuses.
    let update = |status: VideoStatus, sql: &'static str| {
        sqlx::query(sql).bind(id).bind(at).bind(status.as_str())
    };
    let result = match decode::<VideoEvent>(event)? {
        VideoEvent::VideoRequested { spec, .. } => {
            insert_requested(conn, id, &spec, at, 0).await?;
            return Ok(());
        }
        VideoEvent::SubmissionStarted { attempt, provider, model } => {
            let entry = serde_json::json!({
                "attempt": attempt,
                "provider": provider.to_string(),
                "model": model,
                "started_at": at,
            });
            update(VideoStatus::Submitting, "UPDATE videos SET status = $3, updated_at = $2, attempt = $4,
                           provider = $5, model = $6, provider_job_id = NULL, progress = 0,
                           next_attempt_at = NULL, attempts = attempts || jsonb_build_array($7::jsonb)
                     WHERE id = $1")
                .bind(attempt as i32)
                .bind(provider.to_string())
                .bind(model)
                .bind(entry)
                .execute(&mut *conn)
                .await?
        }
        VideoEvent::SubmissionFailed { attempt, code, message, retry_at, .. } => {
            // The failure belongs to the attempt of the same number (the last one).
            update(VideoStatus::Queued, "UPDATE videos SET status = $3, updated_at = $2, provider_job_id = NULL,
                           next_attempt_at = $4,
                           attempts = (SELECT COALESCE(jsonb_agg(CASE WHEN (a ->> 'attempt')::int = $5
                                               THEN a || jsonb_build_object('error', jsonb_build_object('code', $6::text, 'message', $7::text))
                                               ELSE a END ORDER BY n), '[]'::jsonb)
                                         FROM jsonb_array_elements(attempts) WITH ORDINALITY AS e(a, n))
                     WHERE id = $1")
                .bind(retry_at)
                .bind(attempt as i32)
                .bind(code)
                .bind(message)
                .execute(&mut *conn)
                .await?
        }
        VideoEvent::VideoSubmitted { provider_job_id } => {
            update(VideoStatus::Submitted, "UPDATE videos SET status = $3, updated_at = $2, provider_job_id = $4 WHERE id = $1")
                .bind(provider_job_id)
                .execute(&mut *conn)
                .await?
        }
        VideoEvent::VideoProgressed { percent } => {
            update(VideoStatus::Running, "UPDATE videos SET status = $3, updated_at = $2, progress = GREATEST(progress, $4) WHERE id = $1")
                .bind(i16::from(percent))
                .execute(&mut *conn)
                .await?
        }
        VideoEvent::VideoGenerated {} => {
            update(VideoStatus::Generated, "UPDATE videos SET status = $3, updated_at = $2, progress = 100 WHERE id = $1")
                .execute(&mut *conn)
                .await?
        }
        VideoEvent::VideoStored { blob_key, bytes, sha256, duration_ms, width, height } => {
            update(VideoStatus::Stored, "UPDATE videos SET status = $3, updated_at = $2, blob_key = $4, bytes = $5,
                           sha256 = $6, duration_ms = $7, width = $8, height = $9 WHERE id = $1")
                .bind(blob_key)
                .bind(bytes as i64)
                .bind(sha256)
                .bind(duration_ms as i64)
                .bind(width as i32)
                .bind(height as i32)
                .execute(&mut *conn)
                .await?
        }
        VideoEvent::VideoCompleted { final_cost } => {
            update(VideoStatus::Completed, "UPDATE videos SET status = $3, updated_at = $2, completed_at = $2,
                           final_cost = $4, progress = 100 WHERE id = $1")
                .bind(final_cost.value())
                .execute(&mut *conn)
                .await?
        }
        VideoEvent::VideoFailed { code, message, retryable, charged } => {
            update(VideoStatus::Failed, "UPDATE videos SET status = $3, updated_at = $2, completed_at = $2,
                           error_code = $4, error_message = $5, error_retryable = $6,
                           error_charged = $7 WHERE id = $1")
                .bind(code)
                .bind(message)
                .bind(retryable)
                .bind(charged)
                .execute(&mut *conn)
                .await?
        }
        VideoEvent::CancelRequested { .. } => {
            update(VideoStatus::CancelRequested, "UPDATE videos SET status = $3, updated_at = $2 WHERE id = $1")
                .execute(&mut *conn)
                .await?
        }
        VideoEvent::VideoDeleted {} => {
            // The status stays the final one; settlement and audit still read the row.
            sqlx::query("UPDATE videos SET deleted_at = $2, updated_at = $2 WHERE id = $1")
                .bind(id)
                .bind(at)
                .execute(&mut *conn)
                .await?
        }
        VideoEvent::VideoCancelled { charged } => {
            update(
                VideoStatus::Cancelled, "UPDATE videos SET status = $3, cancel_charged = $4, updated_at = $2,
                        completed_at = $2
                  WHERE id = $1",
            )
            .bind(charged)
            .execute(&mut *conn)
            .await?
        }
    };
    expect_row(&result, || format!("video {id} has no row"))?;
    Ok(())
}

/// `statuses` as a SQL list of string literals: `'completed', 'failed'`.
pub fn sql_list(statuses: impl IntoIterator<Item = VideoStatus>) -> String {
    statuses
        .into_iter()
        .map(|status| format!("'{}'", status.as_str()))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The columns of a [`VideoRow`], for queries that join `videos` with a table of their own.
pub const COLUMNS: &str =
    "id, owner_id, status, progress, provider_preference, provider, model, attempt,
    provider_job_id, prompt, negative_prompt, duration_seconds, aspect_ratio, resolution, image_id,
    seed, external_id, estimated_cost, final_cost, error_code, error_message, error_retryable,
    error_charged, blob_key, bytes, sha256, duration_ms, width, height, created_at, updated_at,
    completed_at, next_attempt_at, attempts, cancel_charged, deleted_at, generate_audio";

/// One video, through a pool or inside a transaction (the one that just requested it).
pub async fn get<'e>(
    executor: impl sqlx::PgExecutor<'e>,
    id: VideoId,
) -> Result<Option<VideoRow>, sqlx::Error> {
    sqlx::query_as(&format!("SELECT {COLUMNS} FROM videos WHERE id = $1"))
        .bind(id.as_uuid())
        .fetch_optional(executor)
        .await
}

/// Filters of a listing.
#[derive(Debug, Default, Clone)]
pub struct VideoFilter {
    pub status: Option<String>,
    pub provider: Option<String>,
    /// Cursor: rows strictly older than this (created_at, id).
    pub before: Option<(DateTime<Utc>, Uuid)>,
}

/// An owner's videos, newest first; deleted ones are left out.
pub async fn list(
    pool: &PgPool,
    owner: UserId,
    filter: &VideoFilter,
    limit: i64,
) -> Result<Vec<VideoRow>, sqlx::Error> {
    let (before_at, before_id) = filter.before.unzip();
    sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM videos
          WHERE owner_id = $1 AND deleted_at IS NULL
            AND ($2::text IS NULL OR status = $2)
            AND ($3::text IS NULL OR provider = $3)
            AND ($4::timestamptz IS NULL OR (created_at, id) < ($4, $5))
          ORDER BY created_at DESC, id DESC
          LIMIT $6"
    ))
    .bind(owner.as_uuid())
    .bind(&filter.status)
    .bind(&filter.provider)
    .bind(before_at)
    .bind(before_id)
    .bind(limit)
    .fetch_all(pool)
    .await
}

/// A page of an owner's live videos in creation order (`ascending`, or newest first), after
/// the position `after` (created_at, id) of the last one of the previous page.
pub async fn page(
    pool: &PgPool,
    owner: UserId,
    after: Option<(DateTime<Utc>, Uuid)>,
    ascending: bool,
    limit: i64,
) -> Result<Vec<VideoRow>, sqlx::Error> {
    let (after_at, after_id) = after.unzip();
    let (direction, beyond) = if ascending {
        ("ASC", ">")
    } else {
        ("DESC", "<")
    };
    sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM videos
          WHERE owner_id = $1 AND deleted_at IS NULL
            AND ($2::timestamptz IS NULL OR (created_at, id) {beyond} ($2, $3))
          ORDER BY created_at {direction}, id {direction}
          LIMIT $4"
    ))
    .bind(owner.as_uuid())
    .bind(after_at)
    .bind(after_id)
    .bind(limit)
    .fetch_all(pool)
    .await
}

/// Videos no provider holds a job for yet that were requested more than `max_age` ago,
/// oldest first: waiting jobs past their deadline.
pub async fn overdue_waiting(
    pool: &PgPool,
    max_age: std::time::Duration,
    limit: i64,
) -> Result<Vec<VideoRow>, sqlx::Error> {
    sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM videos
          WHERE status NOT IN ({terminal}) AND provider_job_id IS NULL
            AND created_at < now() - make_interval(secs => $1)
          ORDER BY created_at LIMIT $2",
        terminal = sql_list(VideoStatus::ALL.into_iter().filter(|s| s.is_terminal()))
    ))
    .bind(max_age.as_secs_f64())
    .bind(limit)
    .fetch_all(pool)
    .await
}

/// Videos the dispatcher's sweep should look at: queued ones due for a (re)submission (after
/// a failed attempt once `next_attempt_at` has passed; first attempts that waited
/// `fresh_grace` for their `VideoRequested` to be handled, e.g. held back by a provider at its
/// limit), and ones left `submitting` for a while (or cancelled while submitting, no job id
/// recorded) — a worker died between recording the attempt and its outcome, and nothing else
/// would bring them back. The dispatcher's
/// per-video lock tells a live submission from an abandoned one.
pub async fn queued_due(
    pool: &PgPool,
    limit: i64,
    fresh_grace: std::time::Duration,
) -> Result<Vec<VideoRow>, sqlx::Error> {
    sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM videos
          WHERE (status = {queued}
                 AND (next_attempt_at <= now()
                      OR (next_attempt_at IS NULL
                          AND updated_at < now() - make_interval(secs => $2))))
             OR (status = {submitting} AND updated_at < now() - interval '10 seconds')
             OR (status = {cancel_requested} AND provider_job_id IS NULL
                 AND updated_at < now() - interval '10 seconds')
          ORDER BY next_attempt_at NULLS FIRST, created_at
          LIMIT $1",
        queued = sql_list([VideoStatus::Queued]),
        submitting = sql_list([VideoStatus::Submitting]),
        cancel_requested = sql_list([VideoStatus::CancelRequested]),
    ))
    .bind(limit)
    .bind(fresh_grace.as_secs_f64())
    .fetch_all(pool)
    .await
}

/// Videos submitted or being submitted to `provider` and not finished there.
pub async fn count_in_flight(pool: &PgPool, provider: &str) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar("SELECT count(*) FROM videos WHERE provider = $1 AND status = ANY($2)")
        .bind(provider)
        .bind(VideoStatus::names(&VideoStatus::AT_PROVIDER))
        .fetch_one(pool)
        .await
}
