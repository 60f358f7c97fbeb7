//! Why a `Video` refused a command, with the stable codes the API shows.

use super::{VideoStatus, MAX_PROMPT_CHARS};

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
