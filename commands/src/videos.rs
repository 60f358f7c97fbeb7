//! Requesting a video: reserve the estimated cost, then record the request.
//!
//! The reservation comes first so that credits can never be overspent: 50 concurrent
//! requests against credits for 10 get exactly 10 reservations. If recording the request
//! then fails, the reservation is released at once. A crash between the two leaves a
//! reservation without a video, which the settlement worker releases after a grace period.

use framegate_domain::{CreditCommand, CreditError, VideoCommand, VideoError, VideoId, VideoSpec};

use crate::error::CommandError;
use crate::metadata::CommandMetadata;
use crate::position::LogPosition;
use crate::store::EventStore;

#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    #[error(transparent)]
    Credits(CommandError<CreditError>),
    #[error(transparent)]
    Video(CommandError<VideoError>),
}

/// Reserves `spec.estimated_cost` on the owner's account and records the request.
pub async fn request_video(
    store: &EventStore,
    video_id: VideoId,
    spec: VideoSpec,
    metadata: &CommandMetadata,
) -> Result<Option<LogPosition>, RequestError> {
    let account = spec.owner.to_string();
    let reserve = CreditCommand::Reserve {
        video_id,
        amount: spec.estimated_cost,
    };
    let reserved = store
        .credits()
        .execute(&account, reserve, metadata)
        .await
        .map_err(RequestError::Credits)?;
    let request = VideoCommand::Request { video_id, spec };
    match store
        .videos()
        .execute(&video_id.to_string(), request, metadata)
        .await
    {
        Ok(position) => Ok(position.max(reserved)),
        Err(error) => {
            let release = CreditCommand::Release { video_id };
            if let Err(release_error) = store.credits().execute(&account, release, metadata).await {
                tracing::error!(%video_id, error = %release_error, "could not release the reservation of a refused request");
            }
            Err(RequestError::Video(error))
        }
    }
}
