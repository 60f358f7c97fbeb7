//! Errors in OpenAI's shape: `{"error": {"message", "type", "param", "code"}}`.
//!
//! Every part of the API answers failures with a problem document (`crate::error`): the
//! extractors, the rate limits, the Idempotency-Key layer, the body deadline, the handlers.
//! Rather than teach each of them a second format, [`layer`] wraps every request under the
//! prefix and rewrites a problem document on its way out: `code` stays our stable code (the
//! field's code for a validation error, whose field becomes `param`), `type` is OpenAI's
//! category for the status, and 422 becomes 400, the status OpenAI and its SDKs use for a
//! request that names a bad parameter (`BadRequestError`). Every other status is kept.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse as _, Response};
use http_body_util::BodyExt as _;
use serde::{Deserialize, Serialize};

use crate::auth::MountedAt;
use crate::error::{FieldError, PROBLEM_JSON};

/// The error object of the spec (`Error`), inside `{"error": ...}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OpenAiError {
    pub message: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub param: Option<String>,
    pub code: Option<String>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct ErrorResponse {
    pub error: OpenAiError,
}

/// What the layer reads of a problem document.
#[derive(Debug, Deserialize)]
struct Problem {
    status: u16,
    detail: String,
    code: String,
    #[serde(default)]
    errors: Vec<FieldError>,
}

/// OpenAI's `type` for an HTTP status.
pub fn kind(status: StatusCode) -> &'static str {
    match status.as_u16() {
        401 => "authentication_error",
        402 => "insufficient_quota",
        403 => "permission_error",
        429 => "rate_limit_error",
        500.. => "server_error",
        _ => "invalid_request_error",
    }
}

/// The status OpenAI answers where we answer `status`: 422 is 400, the rest the same.
pub fn status(status: StatusCode) -> StatusCode {
    if status == StatusCode::UNPROCESSABLE_ENTITY {
        StatusCode::BAD_REQUEST
    } else {
        status
    }
}

/// The OpenAI error for a problem document with `status`.
fn translate(problem: Problem, status: StatusCode) -> OpenAiError {
    let (message, param, code) = match problem.errors.as_slice() {
        [] => (problem.detail, None, problem.code),
        [first, ..] => {
            let message = if problem.errors.len() == 1 {
                first.message.clone()
            } else {
                problem
                    .errors
                    .iter()
                    .map(|e| format!("{}: {}", e.field, e.message))
                    .collect::<Vec<_>>()
                    .join("; ")
            };
            (message, Some(first.field.clone()), first.code.clone())
        }
    };
    let message = match &param {
        Some(param) if !message.contains(param.as_str()) => format!("{param}: {message}"),
        _ => message,
    };
    OpenAiError {
        message,
        kind: kind(status).to_owned(),
        param,
        code: Some(code),
    }
}

/// Middleware (`from_fn_with_state`, the prefix as state), outside every layer that may
/// refuse a request: marks requests under the prefix as this door's ([`MountedAt`], so
/// scopes apply as to `/v1`) and rewrites their problem documents.
pub async fn layer(State(prefix): State<Arc<str>>, mut request: Request, next: Next) -> Response {
    if !super::is_under(&prefix, request.uri().path()) {
        return next.run(request).await;
    }
    request.extensions_mut().insert(MountedAt(prefix));
    let response = next.run(request).await;
    let is_problem = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes() == PROBLEM_JSON.as_bytes());
    if !is_problem {
        return response;
    }
    let (mut parts, body) = response.into_parts();
    let bytes = match body.collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(_) => return StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    };
    let Ok(problem) = serde_json::from_slice::<Problem>(&bytes) else {
        tracing::error!("a problem document under the OpenAI prefix could not be read");
        return Response::from_parts(parts, Body::from(bytes));
    };
    let original = StatusCode::from_u16(problem.status).unwrap_or(parts.status);
    let error = translate(problem, original);
    let Ok(body) = serde_json::to_vec(&ErrorResponse { error }) else {
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    };
    parts.status = status(parts.status);
    parts.headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    parts.headers.remove(header::CONTENT_LENGTH);
    Response::from_parts(parts, Body::from(body))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problem(status: u16, code: &str, errors: Vec<FieldError>) -> Problem {
        Problem {
            status,
            detail: "the detail".to_owned(),
            code: code.to_owned(),
            errors,
        }
    }

    #[test]
    fn a_validation_error_names_its_param_and_code_and_is_a_400() {
        let error = translate(
            problem(
                422,
                "validation_failed",
                vec![FieldError::new(
                    "seconds",
                    "unsupported_duration",
                    "sora-2 supports durations of 4, 8, 12 seconds",
                )],
            ),
            StatusCode::UNPROCESSABLE_ENTITY,
        );
        assert_eq!(error.param.as_deref(), Some("seconds"));
        assert_eq!(error.code.as_deref(), Some("unsupported_duration"));
        assert_eq!(error.kind, "invalid_request_error");
        assert!(error.message.contains("4, 8, 12"), "{}", error.message);
        assert_eq!(
            status(StatusCode::UNPROCESSABLE_ENTITY),
            StatusCode::BAD_REQUEST
        );
    }

    #[test]
    fn other_errors_keep_their_status_and_code_with_openais_type() {
        let cases = [
            (401, "unauthenticated", "authentication_error"),
            (402, "insufficient_credits", "insufficient_quota"),
            (403, "insufficient_scope", "permission_error"),
            (404, "not_found", "invalid_request_error"),
            (409, "video_not_finished", "invalid_request_error"),
            (429, "rate_limited", "rate_limit_error"),
            (503, "dependency_unavailable", "server_error"),
        ];
        for (code_number, code, kind) in cases {
            let http = StatusCode::from_u16(code_number).expect("status");
            let error = translate(problem(code_number, code, Vec::new()), http);
            assert_eq!(error.kind, kind, "{code}");
            assert_eq!(error.code.as_deref(), Some(code));
            assert_eq!(error.param, None);
            assert_eq!(error.message, "the detail");
            assert_eq!(status(http), http);
        }
    }
}
