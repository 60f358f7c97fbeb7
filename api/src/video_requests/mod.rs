//! Requesting a video, shared by the doors that take requests: `POST /v1/videos` and the
//! OpenAI-compatible `POST {FRAMEGATE_OPENAI_PREFIX}/videos`. What a request may ask for and
//! what it costs is `pricing`; a request's own webhook is `webhook`; [`submit`] runs the one
//! command (`framegate_commands::videos::request_video`: the reservation and the request in
//! one transaction) and builds the door's answer inside that transaction, from the appended
//! `VideoRequested`, storing it there for the request's Idempotency-Key. There is no other
//! path to a reservation.

pub mod pricing;
pub mod webhook;

use axum::http::{header, StatusCode};
use axum::response::{IntoResponse as _, Response};
use framegate_commands::error::BoxError;
use framegate_commands::videos::{request_video, RequestError, WithinRequest};
use framegate_commands::{CommandError, CommandMetadata, StoredEvent};
use framegate_domain::{CreditError, VideoId, VideoSpec};
use framegate_projections::read_models::{videos, VideoRow};

pub use pricing::{price, unhealthy_providers, usable_image, VideoRequestBody, MAX_PROMPT};

use crate::error::ApiError;
use crate::idempotency::{store_with_commit, StoredWithCommit};
use crate::state::AppState;

/// How a door shows the video it just requested: the JSON body, from the read model's row.
pub type Render = fn(VideoRow) -> Result<Vec<u8>, BoxError>;

/// Requests video `video_id` as `spec` (reserving `spec.estimated_cost`) and answers
/// `status` with `render`'s body, stored for the request's Idempotency-Key in the same
/// transaction (the response then carries [`StoredWithCommit`]).
pub async fn submit(
    state: &AppState,
    video_id: VideoId,
    spec: VideoSpec,
    meta: &CommandMetadata,
    status: StatusCode,
    render: Render,
) -> Result<Response, ApiError> {
    let respond = RespondWithin {
        video_id,
        status,
        render,
        seal: state.response_seal.clone(),
        body: std::sync::Mutex::new(None),
    };
    request_video(&state.store, video_id, spec, meta, Some(&respond))
        .await
        .map_err(|error| match error {
            RequestError::Credits(CommandError::Domain(CreditError::InsufficientCredits {
                requested,
                available,
            })) => ApiError::InsufficientCredits {
                requested: requested.value(),
                available: available.value(),
            },
            RequestError::Credits(other) => other.into(),
            RequestError::Video(other) => other.into(),
        })?;
    let (body, stored) = respond
        .body
        .into_inner()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .ok_or_else(|| ApiError::internal("the request committed without its response"))?;
    let mut response = (status, [(header::CONTENT_TYPE, "application/json")], body).into_response();
    if stored {
        response.extensions_mut().insert(StoredWithCommit);
    }
    Ok(response)
}

/// Builds the response of a video request inside its transaction, from the `VideoRequested`
/// just appended, as the row the inline projection wrote from it (what a read of the video
/// shows), and stores it for the request's Idempotency-Key there too: a failure after the
/// commit can only replay it.
struct RespondWithin {
    video_id: VideoId,
    status: StatusCode,
    render: Render,
    seal: crate::idempotency::ResponseSeal,
    /// The JSON body, and whether it was stored for a key.
    body: std::sync::Mutex<Option<(Vec<u8>, bool)>>,
}

#[async_trait::async_trait]
impl WithinRequest for RespondWithin {
    async fn run(
        &self,
        conn: &mut sqlx::PgConnection,
        written: &[StoredEvent],
    ) -> Result<bool, BoxError> {
        let video = self.video_id.as_uuid().to_string();
        let mut rows = written.iter().filter(|e| e.aggregate_id == video);
        let row = rows
            .find_map(|event| videos::requested_row(event).transpose())
            .ok_or("the request committed no VideoRequested")??;
        let body = (self.render)(row)?;
        let stored = store_with_commit(conn, &self.seal, self.status, &body).await?;
        *self
            .body
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some((body, stored));
        Ok(stored)
    }
}
