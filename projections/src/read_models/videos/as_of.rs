//! A video's row as it stood right after one of its events, built in memory from its stream.
//!
//! The `videos` table holds the latest state only; a webhook for an event read from the log a
//! moment (or a day) later must still describe the video as that event left it: a
//! `video.queued` delivery says `queued` even when the video finished meanwhile. So the
//! delivery subscription folds the stream up to the event with [`apply`], the in-memory twin
//! of the projector's SQL (`project`): the test `a_fold_matches_the_read_model` keeps the two
//! equal.

use chrono::{DateTime, Utc};
use framegate_domain::{VideoEvent, VideoId, VideoSpec, VideoStatus};
use sqlx::PgConnection;

use super::{requested_row, VideoRow, REQUESTED};
use crate::log::StoredEvent;
use crate::read_models::{decode, ProjectionError};
use crate::subscription::BoxError;

/// The video `id` right after its event number `sequence`, and what was requested; `None` if
/// the stream has no request.
pub async fn as_of(
    conn: &mut PgConnection,
    id: VideoId,
    sequence: i64,
) -> Result<Option<(VideoRow, VideoSpec)>, BoxError> {
    let mut events: Vec<StoredEvent> = sqlx::query_as(
        "SELECT global_position, tx_id::text::bigint AS tx_id, event_id, recorded_at,
                aggregate_type, aggregate_id, sequence, event_type, event_version,
                payload, metadata
           FROM events
          WHERE aggregate_type = 'Video' AND aggregate_id = $1 AND sequence <= $2
          ORDER BY sequence",
    )
    .bind(id.to_string())
    .bind(sequence)
    .fetch_all(&mut *conn)
    .await?;
    framegate_commands::pii::open_stored(&mut *conn, &mut events).await?;
    Ok(fold(&events)?)
}

/// The row after `events` (a stream from its start, in order) and the request.
pub fn fold(events: &[StoredEvent]) -> Result<Option<(VideoRow, VideoSpec)>, ProjectionError> {
    let Some(first) = events.first().filter(|e| e.event_type == REQUESTED) else {
        return Ok(None);
    };
    let VideoEvent::VideoRequested { spec, .. } = decode::<VideoEvent>(first)? else {
        return Ok(None);
    };
    let Some(mut row) = requested_row(first)? else {
        return Ok(None);
    };
    for event in &events[1..] {
        apply(&mut row, decode::<VideoEvent>(event)?, event.recorded_at);
    }
    Ok(Some((row, spec)))
}

/// What the projector's statement for `event` does to `row`.
pub fn apply(row: &mut VideoRow, event: VideoEvent, at: DateTime<Utc>) {
    let status = match event {
        VideoEvent::VideoRequested { .. } => return,
        VideoEvent::SubmissionStarted {
            attempt,
            provider,
            model,
        } => {
            row.attempts.0.push(serde_json::json!({
                "attempt": attempt,
                "provider": provider.to_string(),
                "model": model,
                "started_at": at,
            }));
            row.attempt = attempt as i32;
            row.provider = Some(provider.to_string());
            row.model = Some(model);
            row.provider_job_id = None;
            row.progress = 0;
            row.next_attempt_at = None;
            VideoStatus::Submitting
        }
        VideoEvent::SubmissionFailed {
            attempt,
            code,
            message,
            retry_at,
            ..
        } => {
            for entry in row.attempts.0.iter_mut() {
                let number = entry.get("attempt").and_then(serde_json::Value::as_i64);
                if number == Some(i64::from(attempt)) {
                    if let Some(object) = entry.as_object_mut() {
                        object.insert(
                            "error".to_owned(),
                            serde_json::json!({ "code": code, "message": message }),
                        );
                    }
                }
            }
            row.provider_job_id = None;
            row.next_attempt_at = Some(retry_at);
            VideoStatus::Queued
        }
        VideoEvent::VideoSubmitted { provider_job_id } => {
            row.provider_job_id = Some(provider_job_id);
            VideoStatus::Submitted
        }
        VideoEvent::VideoProgressed { percent } => {
            row.progress = row.progress.max(i16::from(percent));
            VideoStatus::Running
        }
        VideoEvent::VideoGenerated {} => {
            row.progress = 100;
            VideoStatus::Generated
        }
        VideoEvent::VideoStored {
            blob_key,
            bytes,
            sha256,
            duration_ms,
            width,
            height,
        } => {
            row.blob_key = Some(blob_key);
            row.bytes = Some(bytes as i64);
            row.sha256 = Some(sha256);
            row.duration_ms = Some(duration_ms as i64);
            row.width = Some(width as i32);
            row.height = Some(height as i32);
            VideoStatus::Stored
        }
        VideoEvent::VideoCompleted { final_cost } => {
            row.completed_at = Some(at);
            row.final_cost = Some(final_cost.value());
            row.progress = 100;
            VideoStatus::Completed
        }
        VideoEvent::VideoFailed {
            code,
            message,
            retryable,
            charged,
        } => {
            row.completed_at = Some(at);
            row.error_code = Some(code);
            row.error_message = Some(message);
            row.error_retryable = Some(retryable);
            row.error_charged = Some(charged);
            VideoStatus::Failed
        }
        VideoEvent::CancelRequested { .. } => VideoStatus::CancelRequested,
        VideoEvent::VideoDeleted {} => {
            row.deleted_at = Some(at);
            row.updated_at = at;
            return;
        }
        VideoEvent::VideoCancelled { charged } => {
            row.cancel_charged = Some(charged);
            row.completed_at = Some(at);
            VideoStatus::Cancelled
        }
    };
    row.status = status.as_str().to_owned();
    row.updated_at = at;
}
