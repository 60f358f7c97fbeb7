//! What can be asked of a `Video`.

use chrono::{DateTime, Utc};

use super::VideoSpec;
use crate::credits::Credits;
use crate::ids::VideoId;
use crate::provider::ProviderKind;

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
