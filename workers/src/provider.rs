//! The port every video provider adapter implements.
//!
//! Adapters speak one provider's API; the pipeline speaks only this trait. A job is submitted
//! once and then followed by polling; `find` recovers a job whose submission outcome is
//! unknown after a crash (the provider was told our video id), so nothing is sent twice.

use std::path::Path;

use async_trait::async_trait;
use framegate_domain::{ProviderKind, VideoId};

/// What a provider is asked to render.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Job {
    pub video_id: VideoId,
    pub model: String,
    pub prompt: String,
    pub negative_prompt: Option<String>,
    pub duration_seconds: u32,
    pub aspect_ratio: String,
    pub resolution: String,
    pub seed: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobState {
    Queued,
    Running { progress: u8 },
    Succeeded,
    Failed(ProviderFailure),
}

/// A provider's refusal or failure, in our error model.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct ProviderFailure {
    /// Stable code: moderated, invalid_request, upstream_unavailable, ...
    pub code: String,
    pub message: String,
    pub retryable: bool,
    pub charged: bool,
}

impl ProviderFailure {
    pub fn new(code: &str, message: impl Into<String>, retryable: bool, charged: bool) -> Self {
        Self {
            code: code.to_owned(),
            message: message.into(),
            retryable,
            charged,
        }
    }
}

#[async_trait]
pub trait VideoProvider: Send + Sync {
    fn kind(&self) -> ProviderKind;
    /// Submits the job; returns the provider's job id.
    async fn submit(&self, job: &Job) -> Result<String, ProviderFailure>;
    /// The job submitted for `video_id`, if the provider has one.
    async fn find(&self, video_id: VideoId) -> Result<Option<String>, ProviderFailure>;
    async fn poll(&self, job_id: &str) -> Result<JobState, ProviderFailure>;
    /// Downloads a finished job's video to `destination`.
    async fn fetch(&self, job_id: &str, destination: &Path) -> Result<(), ProviderFailure>;
    async fn cancel(&self, job_id: &str) -> Result<(), ProviderFailure>;
}
