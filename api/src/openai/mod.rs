//! The OpenAI-compatible Videos API: a second door onto the same video commands, under
//! `FRAMEGATE_OPENAI_PREFIX` (default `/openai/v1`), so clients written for OpenAI's Videos
//! API (the official SDKs pointed at `base_url`) work against Framegate unchanged.
//!
//! Nothing here decides anything about a video: a request goes through
//! `crate::video_requests` (pricing, the reservation and the request in one transaction,
//! the Idempotency-Key answer stored with the commit), reads come from the `videos` read
//! model, auth is the caller's API key as a bearer token with its scopes applied as to
//! `/v1/videos`. What this module owns is the translation: `mapping` (model, seconds and size
//! to provider, model, duration, aspect ratio and resolution), `object` (the video, list and
//! deletion objects of docs/specs/openai-videos.openapi.json), `errors` (every problem
//! document of the API as OpenAI's `{"error": {message, type, param, code}}`), and the
//! handlers in `create`, `routes` and `content` (docs/adr/0039-openai-compatible-videos-api.md).

pub mod content;
pub mod create;
pub mod errors;
pub mod mapping;
pub mod object;
pub mod routes;

use axum::extract::DefaultBodyLimit;
use axum::routing::get;
use axum::Router;

use crate::state::AppState;

pub const DEFAULT_PREFIX: &str = "/openai/v1";

/// The routes, to be nested under the configured prefix.
pub fn router(upload_limit: usize) -> Router<AppState> {
    Router::new()
        .route(
            "/videos",
            get(routes::list)
                .post(create::create)
                .layer(DefaultBodyLimit::max(upload_limit)),
        )
        .route(
            "/videos/{video_id}",
            get(routes::retrieve).delete(routes::delete),
        )
        .route("/videos/{video_id}/content", get(content::content))
}

/// Whether `path` is this door's video request, whose body may carry an image (the
/// idempotency layer reads such bodies up to the upload limit).
pub fn takes_upload(state: &AppState, path: &str) -> bool {
    path.strip_prefix(state.config.openai_prefix.as_str()) == Some("/videos")
}

/// Whether `path` is under `prefix` (the prefix itself or below it, by whole segments).
pub fn is_under(prefix: &str, path: &str) -> bool {
    path.strip_prefix(prefix)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
}

/// Checks a configured prefix: `/` and one or more segments of letters, digits, `.`, `_` or
/// `-`, no trailing slash, and not a path the API serves itself.
pub fn parse_prefix(value: &str) -> Result<String, String> {
    let segments: Vec<&str> = value
        .strip_prefix('/')
        .map_or_else(Vec::new, |rest| rest.split('/').collect());
    let valid = !segments.is_empty()
        && segments.iter().all(|segment| {
            !segment.is_empty()
                && segment
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
        });
    if !valid {
        return Err(format!(
            "{value:?} is not a path prefix: expected `/` and segments of letters, digits, `.`, `_` or `-`, without a trailing slash (e.g. {DEFAULT_PREFIX})"
        ));
    }
    const TAKEN: &[&str] = &[
        "v1",
        "health",
        "openapi.json",
        "docs",
        "metrics",
        "console",
        "verify-email",
        "reset-password",
    ];
    if TAKEN.contains(&segments[0]) {
        return Err(format!(
            "{value:?} is under /{}, which the API serves itself",
            segments[0]
        ));
    }
    Ok(value.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_are_whole_segments_outside_the_apis_own_paths() {
        assert_eq!(parse_prefix("/openai/v1").as_deref(), Ok("/openai/v1"));
        assert_eq!(parse_prefix("/compat").as_deref(), Ok("/compat"));
        for bad in [
            "",
            "/",
            "openai",
            "/openai/",
            "/a//b",
            "/v1",
            "/v1/openai",
            "/docs",
            "/a b",
            "/health/x",
        ] {
            assert!(parse_prefix(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn a_path_is_under_a_prefix_by_whole_segments() {
        assert!(is_under("/openai/v1", "/openai/v1/videos"));
        assert!(is_under("/openai/v1", "/openai/v1"));
        assert!(!is_under("/openai/v1", "/openai/v10/videos"));
        assert!(!is_under("/openai/v1", "/v1/videos"));
    }
}
