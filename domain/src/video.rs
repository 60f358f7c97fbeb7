//! The `Video` aggregate: one generation request from the moment it is queued until it is
//! delivered, fails, or is cancelled.
//!
//! It owns the lifecycle state machine so that workers, provider callbacks and user
//! requests racing on the same video cannot drive it into an impossible state (progress
//! after completion, a second completion, a cancel that undoes a delivery). Credits are
//! not touched here: the saga that watches these events reserves, captures and releases on
//! the `CreditAccount`, which is why `VideoFailed` records whether the attempt was charged.

use chrono::{DateTime, Utc};
use cqrs_es::event_sink::EventSink;
use cqrs_es::Aggregate;
use serde::{Deserialize, Serialize};

use crate::credits::Credits;
use crate::ids::{UserId, VideoId};
pub use crate::provider::{ProviderKind, ProviderPreference, UnknownProvider};
use crate::services::Services;

mod command;
mod decide;
mod error;
mod event;
mod failure;
mod spec;
mod status;
pub use command::VideoCommand;
pub use error::VideoError;
pub use event::VideoEvent;
pub use failure::public_message;
pub use spec::{VideoSpec, VideoWebhook, MAX_PROMPT_CHARS};
pub use status::{PublicStatus, VideoStatus};

/// Where the finished file lives and what it is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredArtifact {
    pub blob_key: String,
    pub bytes: u64,
    pub sha256: String,
    pub duration_ms: u64,
    pub width: u32,
    pub height: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VideoFailure {
    pub code: String,
    pub message: String,
    pub retryable: bool,
    pub charged: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Video {
    video_id: Option<VideoId>,
    spec: Option<VideoSpec>,
    /// `None` until requested.
    status: Option<VideoStatus>,
    /// 0 until the first submission starts.
    attempt: u32,
    provider: Option<ProviderKind>,
    model: Option<String>,
    provider_job_id: Option<String>,
    progress: u8,
    artifact: Option<StoredArtifact>,
    final_cost: Option<Credits>,
    failure: Option<VideoFailure>,
    cancel_reason: Option<String>,
    /// Between `SubmissionStarted` and its outcome (`VideoSubmitted` or `SubmissionFailed`).
    #[serde(default)]
    submission_open: bool,
    /// When a queued video that failed a submission may be tried again.
    retry_at: Option<DateTime<Utc>>,
    failed_attempts: Vec<FailedAttempt>,
    /// Deleted by its owner (`VideoDeleted`); still in its final status.
    #[serde(default)]
    deleted: bool,
}

/// A submission attempt that the provider never accepted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FailedAttempt {
    pub attempt: u32,
    pub provider: ProviderKind,
    pub code: String,
}

impl Video {
    pub fn video_id(&self) -> Option<VideoId> {
        self.video_id
    }

    pub fn is_requested(&self) -> bool {
        self.status.is_some()
    }

    pub fn status(&self) -> Option<VideoStatus> {
        self.status
    }

    pub fn spec(&self) -> Option<&VideoSpec> {
        self.spec.as_ref()
    }

    pub fn owner(&self) -> Option<UserId> {
        self.spec.as_ref().map(|spec| spec.owner)
    }

    /// The provider of the latest submission attempt.
    pub fn provider(&self) -> Option<ProviderKind> {
        self.provider
    }

    pub fn model(&self) -> Option<&str> {
        self.model.as_deref()
    }

    pub fn attempt(&self) -> u32 {
        self.attempt
    }

    /// When the next submission attempt is due, after a failed one.
    pub fn retry_at(&self) -> Option<DateTime<Utc>> {
        self.retry_at
    }

    /// The attempts providers never accepted, oldest first.
    pub fn failed_attempts(&self) -> &[FailedAttempt] {
        &self.failed_attempts
    }

    pub fn provider_job_id(&self) -> Option<&str> {
        self.provider_job_id.as_deref()
    }

    pub fn progress(&self) -> u8 {
        self.progress
    }

    pub fn artifact(&self) -> Option<&StoredArtifact> {
        self.artifact.as_ref()
    }

    pub fn final_cost(&self) -> Option<Credits> {
        self.final_cost
    }

    pub fn failure(&self) -> Option<&VideoFailure> {
        self.failure.as_ref()
    }

    /// A submission was started and its outcome is not recorded yet.
    pub fn submission_open(&self) -> bool {
        self.submission_open
    }

    pub fn cancel_reason(&self) -> Option<&str> {
        self.cancel_reason.as_deref()
    }

    pub fn is_deleted(&self) -> bool {
        self.deleted
    }
}

impl Aggregate for Video {
    const TYPE: &'static str = "Video";
    type Command = VideoCommand;
    type Event = VideoEvent;
    type Error = VideoError;
    type Services = Services;

    async fn handle(
        &mut self,
        command: Self::Command,
        _services: &Self::Services,
        sink: &EventSink<Self>,
    ) -> Result<(), Self::Error> {
        for event in self.decide(command)? {
            sink.write(event, self).await;
        }
        Ok(())
    }

    fn apply(&mut self, event: Self::Event) {
        match event {
            VideoEvent::VideoRequested { video_id, spec } => {
                self.video_id = Some(video_id);
                self.spec = Some(spec);
                self.status = Some(VideoStatus::Queued);
            }
            VideoEvent::SubmissionStarted {
                attempt,
                provider,
                model,
            } => {
                self.status = Some(VideoStatus::Submitting);
                self.attempt = attempt;
                self.provider = Some(provider);
                self.model = Some(model);
                // A retry starts from scratch at its provider.
                self.provider_job_id = None;
                self.progress = 0;
                self.submission_open = true;
            }
            VideoEvent::VideoSubmitted { provider_job_id } => {
                self.status = Some(VideoStatus::Submitted);
                self.provider_job_id = Some(provider_job_id);
                self.submission_open = false;
            }
            VideoEvent::SubmissionFailed {
                attempt,
                provider,
                code,
                retry_at,
                ..
            } => {
                self.status = Some(VideoStatus::Queued);
                self.provider_job_id = None;
                self.submission_open = false;
                self.retry_at = Some(retry_at);
                self.failed_attempts.push(FailedAttempt {
                    attempt,
                    provider,
                    code,
                });
            }
            VideoEvent::VideoProgressed { percent } => {
                self.status = Some(VideoStatus::Running);
                self.progress = percent;
            }
            VideoEvent::VideoGenerated {} => {
                self.status = Some(VideoStatus::Generated);
                self.progress = 100;
            }
            VideoEvent::VideoStored {
                blob_key,
                bytes,
                sha256,
                duration_ms,
                width,
                height,
            } => {
                self.status = Some(VideoStatus::Stored);
                self.artifact = Some(StoredArtifact {
                    blob_key,
                    bytes,
                    sha256,
                    duration_ms,
                    width,
                    height,
                });
            }
            VideoEvent::VideoCompleted { final_cost } => {
                self.status = Some(VideoStatus::Completed);
                self.final_cost = Some(final_cost);
            }
            VideoEvent::VideoFailed {
                code,
                message,
                retryable,
                charged,
            } => {
                self.status = Some(VideoStatus::Failed);
                self.failure = Some(VideoFailure {
                    code,
                    message,
                    retryable,
                    charged,
                });
            }
            VideoEvent::CancelRequested { reason } => {
                self.status = Some(VideoStatus::CancelRequested);
                self.cancel_reason = Some(reason);
            }
            VideoEvent::VideoCancelled { .. } => self.status = Some(VideoStatus::Cancelled),
            VideoEvent::VideoDeleted {} => self.deleted = true,
        }
    }
}
