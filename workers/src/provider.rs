//! The port every video provider adapter implements.
//!
//! Adapters speak one provider's API; the pipeline speaks only this trait. A job is submitted
//! once and then followed by polling. The dispatcher records its intent before `submit`, so
//! after a crash it knows a submission may have happened and asks `find` instead of
//! submitting again; an adapter that cannot tell answers [`Lookup::Unknown`] and the video
//! fails uncharged rather than risk a second upstream job.

use std::path::Path;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use framegate_domain::{ProviderKind, VideoId};

/// What a provider is asked to render.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Job {
    pub video_id: VideoId,
    pub model: String,
    pub prompt: String,
    pub negative_prompt: Option<String>,
    pub duration_seconds: u32,
    /// `16:9`, `9:16` or `1:1`.
    pub aspect_ratio: String,
    /// `480p`, `720p`, `1080p` or `4k`.
    pub resolution: String,
    pub seed: Option<u64>,
    /// Image-to-video: the uploaded start image, re-encoded upright without metadata.
    pub image: Option<JobImage>,
}

/// A start image as the adapters send it upstream.
#[derive(Clone, PartialEq, Eq)]
pub struct JobImage {
    pub bytes: bytes::Bytes,
    /// `image/jpeg` or `image/png`.
    pub content_type: String,
}

impl std::fmt::Debug for JobImage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JobImage")
            .field("bytes", &self.bytes.len())
            .field("content_type", &self.content_type)
            .finish()
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobState {
    Queued,
    Running { progress: u8 },
    Succeeded,
    Failed(ProviderFailure),
}

/// What became of a submission whose outcome was lost in a crash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup {
    /// The provider has the job: follow it.
    Found(String),
    /// The provider certainly never accepted it: submitting is safe.
    NotSubmitted,
    /// The provider cannot be asked (no way to look a job up by our id).
    Unknown,
}

/// Stable failure codes shared by every adapter.
pub use framegate_domain::retry::codes;

/// A provider's refusal or failure, in our error model.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct ProviderFailure {
    /// Stable code: see [`codes`].
    pub code: String,
    pub message: String,
    /// Whether the same call may succeed later (after `retry_after`, if given).
    pub retryable: bool,
    /// Whether the provider charges for the failed job (the user is then charged too).
    pub charged: bool,
    /// How long the provider asked us to wait (Retry-After, poll-after hints).
    pub retry_after: Option<Duration>,
}

impl ProviderFailure {
    pub fn new(code: &str, message: impl Into<String>, retryable: bool, charged: bool) -> Self {
        Self {
            code: code.to_owned(),
            message: message.into(),
            retryable,
            charged,
            retry_after: None,
        }
    }

    pub fn with_retry_after(mut self, retry_after: Option<Duration>) -> Self {
        self.retry_after = retry_after;
        self
    }
}

#[async_trait]
pub trait VideoProvider: Send + Sync {
    fn kind(&self) -> ProviderKind;
    /// Submits the job; returns the provider's job id.
    async fn submit(&self, job: &Job) -> Result<String, ProviderFailure>;
    /// The job submitted for `job.video_id` at or after `since`, if the provider can tell.
    async fn find(&self, job: &Job, since: DateTime<Utc>) -> Result<Lookup, ProviderFailure>;
    async fn poll(&self, job_id: &str) -> Result<JobState, ProviderFailure>;
    /// How long the provider asked us to wait before polling `job_id` again, if it did.
    fn poll_after(&self, _job_id: &str) -> Option<Duration> {
        None
    }
    /// Downloads a finished job's video to `destination`.
    async fn fetch(&self, job_id: &str, destination: &Path) -> Result<(), ProviderFailure>;
    /// Asks the provider to stop `job_id`, if its API can.
    async fn cancel(&self, job_id: &str) -> Result<Cancellation, ProviderFailure>;
}

/// What a cancellation did at the provider.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cancellation {
    /// The provider stopped the job and does not bill it.
    Stopped,
    /// The provider has no way to stop an accepted job: it renders (and bills) it anyway; we
    /// only stop following it.
    Unsupported,
}
