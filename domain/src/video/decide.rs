//! The `Video` state machine's decisions: which events a command produces from the current
//! state, or why it is refused.

use super::{Video, VideoCommand, VideoError, VideoEvent, VideoStatus};

impl Video {
    /// The status of a requested, unfinished video: the guard of every command but
    /// `Request`.
    fn live_status(&self) -> Result<VideoStatus, VideoError> {
        let status = self.status.ok_or(VideoError::NotRequested)?;
        if status.is_terminal() {
            return Err(VideoError::AlreadyTerminal { status });
        }
        Ok(status)
    }

    pub(super) fn decide(&self, command: VideoCommand) -> Result<Vec<VideoEvent>, VideoError> {
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
