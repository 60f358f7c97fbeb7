//! A video as the API shows it. The object itself is `framegate_projections::video_object`
//! (webhooks carry the same one); here it gets the API's download links.

use framegate_domain::VideoStatus;
use framegate_projections::read_models::VideoRow;
pub use framegate_projections::video_object::{
    DownloadLink, Variant, VideoCancellation, VideoFailure, VideoResponse,
};

use crate::error::ApiError;
use crate::state::AppState;

pub(super) use framegate_projections::video_object::public_status;

/// The signed link to one file of a completed video; `None` before completion.
pub(super) async fn link(
    state: &AppState,
    row: &VideoRow,
    variant: Variant,
) -> Result<Option<DownloadLink>, ApiError> {
    if row.status != VideoStatus::Completed.as_str() {
        return Ok(None);
    }
    framegate_projections::video_object::link(
        &state.blobs,
        row.id,
        variant,
        state.config.download_ttl,
    )
    .await
    .map(Some)
    .map_err(ApiError::internal)
}

/// The response for `row`, with download links when it is completed.
pub(super) async fn respond(state: &AppState, row: VideoRow) -> Result<VideoResponse, ApiError> {
    VideoResponse::from(row)
        .with_links(&state.blobs, state.config.download_ttl)
        .await
        .map_err(ApiError::internal)
}

pub(super) fn is_terminal(status: &str) -> bool {
    status
        .parse::<VideoStatus>()
        .is_ok_and(VideoStatus::is_terminal)
}
