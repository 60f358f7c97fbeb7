//! Read-your-writes: a write waits, bounded, until the read models show it.
//!
//! Commands return the log position they wrote. Before answering, the handler waits until the
//! projectors it reads from have passed that position, so a client that reads right after a
//! write sees it. If they do not catch up in time the response says so in a header rather
//! than failing the write that already happened.

use axum::http::{HeaderName, HeaderValue};
use axum::response::{IntoResponse, Response};
use framegate_commands::LogPosition;
use framegate_projections::read_models;

use crate::state::AppState;

/// `Framegate-Consistency: stale` marks a response whose read models may not show the write.
pub const CONSISTENCY_HEADER: HeaderName = HeaderName::from_static("framegate-consistency");

/// The read models an account write shows up in.
pub const ACCOUNT_MODELS: &[&str] = &[
    read_models::users::SUBSCRIPTION,
    read_models::api_keys::SUBSCRIPTION,
    read_models::credit_accounts::SUBSCRIPTION,
    read_models::credit_ledger::SUBSCRIPTION,
];

/// The read models an image upload or deletion shows up in.
pub const IMAGE_MODELS: &[&str] = &[read_models::images::SUBSCRIPTION];

/// Whether the write is visible: true when caught up (or nothing was written).
pub async fn settle(state: &AppState, position: Option<LogPosition>, models: &[&str]) -> bool {
    let Some(position) = position else {
        return true;
    };
    match read_models::wait_for(
        &state.pool,
        models,
        position,
        state.config.consistency_timeout,
    )
    .await
    {
        Ok(caught_up) => caught_up,
        Err(error) => {
            tracing::warn!(%error, "could not check read-model progress");
            false
        }
    }
}

/// Adds the staleness header to `response` when the write was not yet visible.
pub fn mark(response: impl IntoResponse, visible: bool) -> Response {
    let mut response = response.into_response();
    if !visible {
        response
            .headers_mut()
            .insert(CONSISTENCY_HEADER, HeaderValue::from_static("stale"));
    }
    response
}
