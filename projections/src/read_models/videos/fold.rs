//! The videos projector's set-based path: a batch's events are folded per video into the
//! row a `VideoRequested` inserts and one net change (a `Patch`) of everything after it,
//! written with a statement or two for the whole batch (`write`).
//!
//! Every update event sets columns to values, except three: `VideoProgressed` only raises
//! `progress`, `SubmissionStarted` appends to `attempts`, and `SubmissionFailed` edits the
//! attempt it names inside `attempts`. The first two fold (a raise after a set is a set; the
//! appends concatenate); the third is rare (a provider refusing a submission) and goes one by
//! one, after everything folded before it has been written.

use std::collections::HashMap;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use cqrs_es::Aggregate as _;
use framegate_domain::{Video, VideoEvent, VideoSpec, VideoStatus};
use serde_json::Value;
use sqlx::PgConnection;
use uuid::Uuid;

use super::write::{NewRows, Updates};
use super::{project, VideosProjector};
use crate::log::StoredEvent;
use crate::read_models::batch::{decode_all, SetBased};
use crate::read_models::ProjectionError;
use crate::subscription::BoxError;

#[async_trait]
impl SetBased for VideosProjector {
    const AGGREGATE_TYPE: &'static str = Video::TYPE;

    async fn project_set(
        &self,
        conn: &mut PgConnection,
        events: &[StoredEvent],
    ) -> Result<(), BoxError> {
        let mut pending = Pending::default();
        for event in decode_all::<VideoEvent>(events, Video::TYPE)? {
            let at = event.event.recorded_at;
            // Rare, and neither sets the columns every other event sets (a deletion leaves
            // the status as it was): one by one, after what folded before them.
            if let VideoEvent::SubmissionFailed { .. } | VideoEvent::VideoDeleted {} = event.body {
                std::mem::take(&mut pending).write(conn).await?;
                project(conn, event.event).await?;
                continue;
            }
            let fold = pending.fold(event.id);
            if let VideoEvent::VideoRequested { spec, .. } = event.body {
                // Only a request before any other event of the video can insert: after one,
                // the row exists (the insert does nothing) or that event failed.
                if fold.insert.is_none() && fold.patch.is_none() {
                    fold.insert = Some(Requested { spec, at });
                }
                continue;
            }
            fold.patch
                .get_or_insert_with(|| Patch::new(at))
                .apply(event.body, at);
        }
        pending.write(conn).await?;
        Ok(())
    }
}

/// The videos of a batch not yet written, in order of first appearance.
#[derive(Default)]
struct Pending {
    folds: Vec<VideoFold>,
    index: HashMap<Uuid, usize>,
}

struct VideoFold {
    id: Uuid,
    insert: Option<Requested>,
    patch: Option<Patch>,
}

impl Pending {
    fn fold(&mut self, id: Uuid) -> &mut VideoFold {
        let slot = *self.index.entry(id).or_insert_with(|| {
            self.folds.push(VideoFold {
                id,
                insert: None,
                patch: None,
            });
            self.folds.len() - 1
        });
        &mut self.folds[slot]
    }

    /// New videos go in with their later events applied already (their end state is known);
    /// the rest, and any whose request found its row there already, take one update.
    async fn write(self, conn: &mut PgConnection) -> Result<(), ProjectionError> {
        let mut rows = NewRows::default();
        for fold in &self.folds {
            if let Some(requested) = &fold.insert {
                rows.push(fold.id, requested, fold.patch.as_ref());
            }
        }
        let inserted = rows.insert(conn).await?;
        let mut updates = Updates::default();
        for fold in self.folds {
            match fold.patch {
                Some(patch) if !inserted.contains(&fold.id) => updates.push(fold.id, patch),
                _ => {}
            }
        }
        updates.write(conn).await
    }
}

/// The row a `VideoRequested` inserts.
pub(super) struct Requested {
    pub spec: VideoSpec,
    pub at: DateTime<Utc>,
}

/// How `progress` ends up: untouched, raised to at least a value, or set.
#[derive(Clone, Copy)]
pub(super) enum Progress {
    Unchanged,
    AtLeast(i16),
    Set(i16),
}

/// The net change of a video's update events, in the order they came.
pub(super) struct Patch {
    pub status: &'static str,
    /// Every update event sets it (not raises it): the last one's time.
    pub updated_at: DateTime<Utc>,
    pub attempt: Option<i32>,
    pub provider: Option<String>,
    pub model: Option<String>,
    /// `Some(None)` clears the job id.
    pub provider_job_id: Option<Option<String>>,
    pub progress: Progress,
    pub clear_next_attempt: bool,
    /// Entries appended to `attempts`.
    pub attempts: Vec<Value>,
    pub stored: Option<Stored>,
    pub completed_at: Option<DateTime<Utc>>,
    pub final_cost: Option<i64>,
    pub failure: Option<Failure>,
    /// `VideoCancelled.charged`, once cancelled.
    pub cancel_charged: Option<bool>,
}

pub(super) struct Stored {
    pub blob_key: String,
    pub bytes: i64,
    pub sha256: String,
    pub duration_ms: i64,
    pub width: i32,
    pub height: i32,
}

pub(super) struct Failure {
    pub code: String,
    pub message: String,
    pub retryable: bool,
    pub charged: bool,
}

impl Patch {
    fn new(at: DateTime<Utc>) -> Self {
        Self {
            status: VideoStatus::Queued.as_str(),
            updated_at: at,
            attempt: None,
            provider: None,
            model: None,
            provider_job_id: None,
            progress: Progress::Unchanged,
            clear_next_attempt: false,
            attempts: Vec::new(),
            stored: None,
            completed_at: None,
            final_cost: None,
            failure: None,
            cancel_charged: None,
        }
    }

    /// Folds one update event in, with the same column values its own statement writes
    /// (`super::project`). `VideoRequested` and `SubmissionFailed` never get here.
    fn apply(&mut self, event: VideoEvent, at: DateTime<Utc>) {
        self.updated_at = at;
        self.status = match event {
            VideoEvent::SubmissionStarted {
                attempt,
                provider,
                model,
            } => {
                self.attempts.push(serde_json::json!({
                    "attempt": attempt,
                    "provider": provider.to_string(),
                    "model": model,
                    "started_at": at,
                }));
                self.attempt = Some(attempt as i32);
                self.provider = Some(provider.to_string());
                self.model = Some(model);
                self.provider_job_id = Some(None);
                self.progress = Progress::Set(0);
                self.clear_next_attempt = true;
                VideoStatus::Submitting.as_str()
            }
            VideoEvent::VideoSubmitted { provider_job_id } => {
                self.provider_job_id = Some(Some(provider_job_id));
                VideoStatus::Submitted.as_str()
            }
            VideoEvent::VideoProgressed { percent } => {
                let percent = i16::from(percent);
                self.progress = match self.progress {
                    Progress::Unchanged => Progress::AtLeast(percent),
                    Progress::AtLeast(before) => Progress::AtLeast(before.max(percent)),
                    Progress::Set(before) => Progress::Set(before.max(percent)),
                };
                VideoStatus::Running.as_str()
            }
            VideoEvent::VideoGenerated {} => {
                self.progress = Progress::Set(100);
                VideoStatus::Generated.as_str()
            }
            VideoEvent::VideoStored {
                blob_key,
                bytes,
                sha256,
                duration_ms,
                width,
                height,
            } => {
                self.stored = Some(Stored {
                    blob_key,
                    bytes: bytes as i64,
                    sha256,
                    duration_ms: duration_ms as i64,
                    width: width as i32,
                    height: height as i32,
                });
                VideoStatus::Stored.as_str()
            }
            VideoEvent::VideoCompleted { final_cost } => {
                self.completed_at = Some(at);
                self.final_cost = Some(final_cost.value());
                self.progress = Progress::Set(100);
                VideoStatus::Completed.as_str()
            }
            VideoEvent::VideoFailed {
                code,
                message,
                retryable,
                charged,
            } => {
                self.completed_at = Some(at);
                self.failure = Some(Failure {
                    code,
                    message,
                    retryable,
                    charged,
                });
                VideoStatus::Failed.as_str()
            }
            VideoEvent::CancelRequested { .. } => VideoStatus::CancelRequested.as_str(),
            VideoEvent::VideoCancelled { charged } => {
                self.completed_at = Some(at);
                self.cancel_charged = Some(charged);
                VideoStatus::Cancelled.as_str()
            }
            VideoEvent::VideoRequested { .. }
            | VideoEvent::SubmissionFailed { .. }
            | VideoEvent::VideoDeleted {} => self.status,
        };
    }
}
