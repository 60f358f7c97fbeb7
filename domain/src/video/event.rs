//! What happened to a `Video`: its events, as stored.

use chrono::{DateTime, Utc};
use cqrs_es::DomainEvent;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::VideoSpec;
use crate::credits::Credits;
use crate::ids::VideoId;
use crate::provider::ProviderKind;

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
