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
use cqrs_es::{Aggregate, DomainEvent};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::credits::Credits;
use crate::ids::{ImageId, UserId, VideoId};
pub use crate::provider::{ProviderKind, ProviderPreference, UnknownProvider};
use crate::services::Services;

mod failure;
mod status;
pub use failure::public_message;
pub use status::{PublicStatus, VideoStatus};

pub const MAX_PROMPT_CHARS: usize = 4000;

/// Everything fixed at request time. Stored whole in `VideoRequested` so the event alone
/// says what was asked for and what it was estimated to cost.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct VideoSpec {
    pub owner: UserId,
    pub prompt: String,
    pub negative_prompt: Option<String>,
    pub provider: ProviderPreference,
    pub model: Option<String>,
    pub duration_seconds: u32,
    pub aspect_ratio: String,
    pub resolution: String,
    pub image_id: Option<ImageId>,
    pub seed: Option<u64>,
    pub estimated_cost: Credits,
    /// Whether the video has a soundtrack (`VideoRequested` 2.0; 1.0 events upcast to false).
    pub generate_audio: bool,
    /// The caller's own reference for the request, if it gave one.
    pub external_id: Option<String>,
    /// Where this video's webhook events also go (the request's `webhook_url`), signed with
    /// the owner's default secret. Absent in events recorded before per-request webhooks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook: Option<VideoWebhook>,
}

/// A per-request webhook: a URL (checked like an endpoint's, `webhook::validate_url`) and the
/// video event types it receives.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct VideoWebhook {
    pub url: String,
    /// Event types as in a delivery's `type` (`video.completed`, ...).
    pub events: Vec<String>,
}

impl VideoSpec {
    fn validate(&self) -> Result<(), VideoError> {
        if self.prompt.trim().is_empty() {
            return Err(VideoError::EmptyPrompt);
        }
        // Providers count characters, and a byte limit would punish non-Latin scripts.
        if self.prompt.chars().count() > MAX_PROMPT_CHARS {
            return Err(VideoError::PromptTooLong);
        }
        if self.duration_seconds == 0 {
            return Err(VideoError::InvalidDuration);
        }
        if self.estimated_cost.is_negative() {
            return Err(VideoError::NegativeCost);
        }
        Ok(())
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VideoCommand {
    Request {
        video_id: VideoId,
        spec: VideoSpec,
    },
    /// A worker is about to call a provider; a higher `attempt` retries a submission that
    /// never reached `MarkSubmitted`.
    StartSubmission {
        attempt: u32,
        provider: ProviderKind,
        model: String,
    },
    MarkSubmitted {
        provider_job_id: String,
    },
    /// The provider never accepted the current attempt; the video waits for another one
    /// (the same provider after `retry_at`, or the next provider at once).
    RecordSubmissionFailure {
        code: String,
        message: String,
        retry_at: DateTime<Utc>,
    },
    /// A percentage that is not above the last one is ignored: pollers and callbacks
    /// arrive out of order.
    RecordProgress {
        percent: u8,
    },
    MarkGenerated,
    RecordStored {
        blob_key: String,
        bytes: u64,
        sha256: String,
        duration_ms: u64,
        width: u32,
        height: u32,
    },
    Complete {
        final_cost: Credits,
    },
    /// Generated, stored and completed in one step (one append): the worker has the stored
    /// output in hand. Steps the video already passed are skipped.
    Deliver {
        blob_key: String,
        bytes: u64,
        sha256: String,
        duration_ms: u64,
        width: u32,
        height: u32,
        final_cost: Credits,
    },
    Fail {
        code: String,
        message: String,
        retryable: bool,
        /// Whether the provider billed us, so that the credit saga captures instead of
        /// releasing.
        charged: bool,
    },
    RequestCancel {
        reason: String,
    },
    /// Ends a cancellation. `charged`: the provider had accepted the job and bills it (it
    /// could not be stopped), so the reservation is captured rather than released.
    Cancel {
        charged: bool,
    },
    /// Hides a finished video from every read and has its files removed (the OpenAI-compatible
    /// `DELETE /videos/{id}`). Its credits are already settled by its final event, which the
    /// deletion does not change (docs/adr/0039-openai-compatible-videos-api.md).
    Delete,
}

impl VideoCommand {
    /// The stable snake_case name used in `VideoError::InvalidTransition`.
    pub const fn name(&self) -> &'static str {
        match self {
            VideoCommand::Request { .. } => "request",
            VideoCommand::StartSubmission { .. } => "start_submission",
            VideoCommand::MarkSubmitted { .. } => "mark_submitted",
            VideoCommand::RecordSubmissionFailure { .. } => "record_submission_failure",
            VideoCommand::RecordProgress { .. } => "record_progress",
            VideoCommand::MarkGenerated => "mark_generated",
            VideoCommand::RecordStored { .. } => "record_stored",
            VideoCommand::Complete { .. } => "complete",
            VideoCommand::Deliver { .. } => "deliver",
            VideoCommand::Fail { .. } => "fail",
            VideoCommand::RequestCancel { .. } => "request_cancel",
            VideoCommand::Cancel { .. } => "cancel",
            VideoCommand::Delete => "delete",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum VideoEvent {
    VideoRequested {
        video_id: VideoId,
        spec: VideoSpec,
    },
    SubmissionStarted {
        attempt: u32,
        provider: ProviderKind,
        model: String,
    },
    VideoSubmitted {
        provider_job_id: String,
    },
    /// Attempt `attempt` at `provider` was never accepted; back in the queue until `retry_at`.
    SubmissionFailed {
        attempt: u32,
        provider: ProviderKind,
        code: String,
        message: String,
        retry_at: DateTime<Utc>,
    },
    VideoProgressed {
        percent: u8,
    },
    VideoGenerated {},
    VideoStored {
        blob_key: String,
        bytes: u64,
        sha256: String,
        duration_ms: u64,
        width: u32,
        height: u32,
    },
    VideoCompleted {
        final_cost: Credits,
    },
    VideoFailed {
        code: String,
        message: String,
        retryable: bool,
        charged: bool,
    },
    CancelRequested {
        reason: String,
    },
    VideoCancelled {
        /// The provider bills the job although it was cancelled (absent in events recorded
        /// before cancellations could be charged: false).
        #[serde(default)]
        charged: bool,
    },
    /// The owner deleted the finished video: reads no longer show it and its files are
    /// removed. Its history stays in the log.
    VideoDeleted {},
}

impl DomainEvent for VideoEvent {
    fn event_type(&self) -> String {
        let name = match self {
            VideoEvent::VideoRequested { .. } => "VideoRequested",
            VideoEvent::SubmissionStarted { .. } => "SubmissionStarted",
            VideoEvent::VideoSubmitted { .. } => "VideoSubmitted",
            VideoEvent::SubmissionFailed { .. } => "SubmissionFailed",
            VideoEvent::VideoProgressed { .. } => "VideoProgressed",
            VideoEvent::VideoGenerated {} => "VideoGenerated",
            VideoEvent::VideoStored { .. } => "VideoStored",
            VideoEvent::VideoCompleted { .. } => "VideoCompleted",
            VideoEvent::VideoFailed { .. } => "VideoFailed",
            VideoEvent::CancelRequested { .. } => "CancelRequested",
            VideoEvent::VideoCancelled { .. } => "VideoCancelled",
            VideoEvent::VideoDeleted {} => "VideoDeleted",
        };
        name.to_string()
    }

    fn event_version(&self) -> String {
        crate::versions::current_version(&self.event_type()).to_string()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VideoError {
    #[error("the video has not been requested")]
    NotRequested,
    #[error("the video has already been requested")]
    AlreadyRequested,
    #[error("the prompt is empty")]
    EmptyPrompt,
    #[error("the prompt is longer than {MAX_PROMPT_CHARS} characters")]
    PromptTooLong,
    #[error("the duration must be positive")]
    InvalidDuration,
    #[error("a cost cannot be negative")]
    NegativeCost,
    #[error("cannot {command} a video that is {from}")]
    InvalidTransition {
        from: VideoStatus,
        command: &'static str,
    },
    #[error("the video is already {status}")]
    AlreadyTerminal { status: VideoStatus },
    #[error("cancellation has already been requested")]
    AlreadyCancelRequested,
    #[error("the video is {status}; only a finished video can be deleted")]
    NotFinished { status: VideoStatus },
    #[error("the video has already been deleted")]
    AlreadyDeleted,
    #[error("submission attempt {requested} does not follow attempt {current}")]
    AttemptNotIncreasing { current: u32, requested: u32 },
    #[error("progress {percent}% is out of range")]
    ProgressOutOfRange { percent: u8 },
    #[error("the stored blob key is empty")]
    EmptyBlobKey,
    #[error("the checksum is not a hex SHA-256 digest")]
    InvalidSha256,
}

impl VideoError {
    pub fn code(&self) -> &'static str {
        match self {
            VideoError::NotRequested => "not_requested",
            VideoError::AlreadyRequested => "already_requested",
            VideoError::EmptyPrompt => "empty_prompt",
            VideoError::PromptTooLong => "prompt_too_long",
            VideoError::InvalidDuration => "invalid_duration",
            VideoError::NegativeCost => "negative_cost",
            VideoError::InvalidTransition { .. } => "invalid_transition",
            VideoError::AlreadyTerminal { .. } => "already_terminal",
            VideoError::AlreadyCancelRequested => "already_cancel_requested",
            VideoError::NotFinished { .. } => "video_not_finished",
            VideoError::AlreadyDeleted => "already_deleted",
            VideoError::AttemptNotIncreasing { .. } => "attempt_not_increasing",
            VideoError::ProgressOutOfRange { .. } => "progress_out_of_range",
            VideoError::EmptyBlobKey => "empty_blob_key",
            VideoError::InvalidSha256 => "invalid_sha256",
        }
    }
}

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

    /// The status of a requested, unfinished video: the guard of every command but
    /// `Request`.
    fn live_status(&self) -> Result<VideoStatus, VideoError> {
        let status = self.status.ok_or(VideoError::NotRequested)?;
        if status.is_terminal() {
            return Err(VideoError::AlreadyTerminal { status });
        }
        Ok(status)
    }

    fn decide(&self, command: VideoCommand) -> Result<Vec<VideoEvent>, VideoError> {
        if let VideoCommand::Request { video_id, spec } = command {
            if self.is_requested() {
                return Err(VideoError::AlreadyRequested);
            }
            spec.validate()?;
            return Ok(vec![VideoEvent::VideoRequested { video_id, spec }]);
        }
        if let VideoCommand::Delete = command {
            let status = self.status.ok_or(VideoError::NotRequested)?;
            if self.deleted {
                return Err(VideoError::AlreadyDeleted);
            }
            // A video still running holds a reservation that its final event settles; it
            // must end (or be cancelled) first, so the deletion never touches credits.
            if !status.is_terminal() {
                return Err(VideoError::NotFinished { status });
            }
            return Ok(vec![VideoEvent::VideoDeleted {}]);
        }

        let status = self.live_status()?;
        let invalid = VideoError::InvalidTransition {
            from: status,
            command: command.name(),
        };
        let event = match command {
            // Decided above; kept so that this match stays exhaustive over the commands.
            VideoCommand::Request { .. } => return Err(VideoError::AlreadyRequested),
            VideoCommand::Delete => return Err(VideoError::AlreadyTerminal { status }),
            VideoCommand::StartSubmission {
                attempt,
                provider,
                model,
            } => {
                if !matches!(status, VideoStatus::Queued | VideoStatus::Submitting) {
                    return Err(invalid);
                }
                if attempt <= self.attempt {
                    return Err(VideoError::AttemptNotIncreasing {
                        current: self.attempt,
                        requested: attempt,
                    });
                }
                VideoEvent::SubmissionStarted {
                    attempt,
                    provider,
                    model,
                }
            }
            VideoCommand::MarkSubmitted { provider_job_id } => {
                // Cancelled while the provider was being asked: the job exists upstream, so
                // it is recorded (its id is what cancelling or billing it needs) and the
                // cancellation stands, re-stated after it.
                if status == VideoStatus::CancelRequested && self.submission_open() {
                    return Ok(vec![
                        VideoEvent::VideoSubmitted { provider_job_id },
                        VideoEvent::CancelRequested {
                            reason: self.cancel_reason.clone().unwrap_or_default(),
                        },
                    ]);
                }
                if status != VideoStatus::Submitting {
                    return Err(invalid);
                }
                VideoEvent::VideoSubmitted { provider_job_id }
            }
            VideoCommand::RecordSubmissionFailure {
                code,
                message,
                retry_at,
            } => {
                // Cancelled while the provider was being asked, and it never took the job.
                if status == VideoStatus::CancelRequested && self.submission_open() {
                    return Ok(vec![VideoEvent::VideoCancelled { charged: false }]);
                }
                let Some(provider) = self.provider.filter(|_| status == VideoStatus::Submitting)
                else {
                    return Err(invalid);
                };
                VideoEvent::SubmissionFailed {
                    attempt: self.attempt,
                    provider,
                    code,
                    message,
                    retry_at,
                }
            }
            VideoCommand::RecordProgress { percent } => {
                if percent > 100 {
                    return Err(VideoError::ProgressOutOfRange { percent });
                }
                match status {
                    // The first report moves the video to Running, whatever it says.
                    VideoStatus::Submitted => VideoEvent::VideoProgressed { percent },
                    VideoStatus::Running if percent > self.progress => {
                        VideoEvent::VideoProgressed { percent }
                    }
                    VideoStatus::Running => return Ok(Vec::new()),
                    _ => return Err(invalid),
                }
            }
            VideoCommand::MarkGenerated => {
                // Fast providers may finish before anyone saw progress.
                if !matches!(status, VideoStatus::Submitted | VideoStatus::Running) {
                    return Err(invalid);
                }
                VideoEvent::VideoGenerated {}
            }
            VideoCommand::RecordStored {
                blob_key,
                bytes,
                sha256,
                duration_ms,
                width,
                height,
            } => {
                if status != VideoStatus::Generated {
                    return Err(invalid);
                }
                stored(blob_key, bytes, sha256, duration_ms, width, height)?
            }
            VideoCommand::Deliver {
                blob_key,
                bytes,
                sha256,
                duration_ms,
                width,
                height,
                final_cost,
            } => {
                let mut events = Vec::new();
                let mut at = status;
                if matches!(at, VideoStatus::Submitted | VideoStatus::Running) {
                    events.push(VideoEvent::VideoGenerated {});
                    at = VideoStatus::Generated;
                }
                if at == VideoStatus::Generated {
                    events.push(stored(blob_key, bytes, sha256, duration_ms, width, height)?);
                    at = VideoStatus::Stored;
                }
                if at != VideoStatus::Stored {
                    return Err(invalid);
                }
                if final_cost.is_negative() {
                    return Err(VideoError::NegativeCost);
                }
                events.push(VideoEvent::VideoCompleted { final_cost });
                return Ok(events);
            }
            VideoCommand::Complete { final_cost } => {
                if status != VideoStatus::Stored {
                    return Err(invalid);
                }
                if final_cost.is_negative() {
                    return Err(VideoError::NegativeCost);
                }
                VideoEvent::VideoCompleted { final_cost }
            }
            VideoCommand::Fail {
                code,
                message,
                retryable,
                charged,
            } => VideoEvent::VideoFailed {
                code,
                message,
                retryable,
                charged,
            },
            VideoCommand::RequestCancel { reason } => {
                if status == VideoStatus::CancelRequested {
                    return Err(VideoError::AlreadyCancelRequested);
                }
                // No provider has the job (none was asked, or the last one refused it):
                // nothing runs anywhere, so the cancellation completes at once. Decided
                // here, on the aggregate, never on a read model that may lag behind.
                if status == VideoStatus::Queued {
                    return Ok(vec![
                        VideoEvent::CancelRequested { reason },
                        VideoEvent::VideoCancelled { charged: false },
                    ]);
                }
                VideoEvent::CancelRequested { reason }
            }
            VideoCommand::Cancel { charged } => {
                if status != VideoStatus::CancelRequested {
                    return Err(invalid);
                }
                // Nothing reached a provider: nothing to bill, whatever the caller says.
                let charged = charged && self.provider_job_id.is_some();
                VideoEvent::VideoCancelled { charged }
            }
        };
        Ok(vec![event])
    }
}

/// `VideoStored`, once its fields are checked.
fn stored(
    blob_key: String,
    bytes: u64,
    sha256: String,
    duration_ms: u64,
    width: u32,
    height: u32,
) -> Result<VideoEvent, VideoError> {
    if blob_key.trim().is_empty() {
        return Err(VideoError::EmptyBlobKey);
    }
    if sha256.len() != 64 || !sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(VideoError::InvalidSha256);
    }
    Ok(VideoEvent::VideoStored {
        blob_key,
        bytes,
        sha256: sha256.to_ascii_lowercase(),
        duration_ms,
        width,
        height,
    })
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
