//! The Videos API's JSON as the adapter reads it, and its failures in our error model.

use reqwest::header::HeaderMap;
use reqwest::StatusCode;
use serde::Deserialize;

use crate::provider::{codes, ProviderFailure};
use crate::providers::http;

/// Maps an error answer: the body's `error.code` refines what the status alone says.
pub(super) fn upstream_failure(
    status: StatusCode,
    headers: &HeaderMap,
    body: &str,
) -> ProviderFailure {
    let error = serde_json::from_str::<ErrorEnvelope>(body)
        .map(|envelope| envelope.error)
        .unwrap_or_default();
    let code = error.code.as_deref().unwrap_or_default();
    let detail = match (&error.message, code) {
        (Some(message), "") => message.clone(),
        (Some(message), code) => format!("{message} ({code})"),
        (None, _) => body.chars().take(300).collect(),
    };
    if status == StatusCode::TOO_MANY_REQUESTS
        && [Some(code), error.kind.as_deref()].contains(&Some("insufficient_quota"))
    {
        return ProviderFailure::new(
            codes::QUOTA_EXHAUSTED,
            format!("sora quota exhausted: {detail}"),
            false,
            false,
        );
    }
    if is_moderation(code) {
        return ProviderFailure::new(codes::MODERATED, detail, false, false);
    }
    http::status_failure(super::PROVIDER, status, headers, &detail)
}

/// A `failed` video: refused by moderation or failed in generation, neither charged.
pub(super) fn generation_failure(error: Option<VideoError>) -> ProviderFailure {
    let error = error.unwrap_or_default();
    let code = error.code.unwrap_or_default();
    let message = error
        .message
        .unwrap_or_else(|| "the video generation failed".to_owned());
    let failure = if is_moderation(&code) {
        codes::MODERATED
    } else {
        codes::GENERATION_FAILED
    };
    let message = if code.is_empty() {
        message
    } else {
        format!("{message} ({code})")
    };
    ProviderFailure::new(failure, message, false, false)
}

fn is_moderation(code: &str) -> bool {
    let code = code.to_ascii_lowercase();
    ["moderation", "policy", "content_filter", "safety"]
        .iter()
        .any(|marker| code.contains(marker))
}

/// `seconds` is a string in the spec; tolerate gateways that send a number.
pub(super) fn wire_string(value: &serde_json::Value) -> Option<String> {
    match value {
        serde_json::Value::String(s) => Some(s.clone()),
        serde_json::Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// The parts of the spec's `VideoResource` the adapter reads.
#[derive(Debug, Deserialize)]
pub(super) struct VideoObject {
    pub(super) id: String,
    #[serde(default)]
    pub(super) status: String,
    #[serde(default)]
    pub(super) progress: Option<i64>,
    #[serde(default)]
    pub(super) created_at: i64,
    #[serde(default)]
    pub(super) model: Option<String>,
    #[serde(default)]
    pub(super) prompt: Option<String>,
    #[serde(default)]
    pub(super) size: Option<String>,
    #[serde(default)]
    pub(super) seconds: Option<serde_json::Value>,
    #[serde(default)]
    pub(super) error: Option<VideoError>,
}

#[derive(Debug, Default, Deserialize)]
pub(super) struct VideoError {
    code: Option<String>,
    message: Option<String>,
}

#[derive(Debug, Deserialize)]
pub(super) struct VideoList {
    pub(super) data: Vec<VideoObject>,
    #[serde(default)]
    pub(super) has_more: bool,
    #[serde(default)]
    pub(super) last_id: Option<String>,
}

#[derive(Debug, Deserialize)]
struct ErrorEnvelope {
    error: ApiError,
}

#[derive(Debug, Default, Deserialize)]
struct ApiError {
    message: Option<String>,
    #[serde(rename = "type")]
    kind: Option<String>,
    code: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn moderation_codes_are_recognised_by_their_wording() {
        for code in [
            "moderation_blocked",
            "content_policy_violation",
            "Input_Moderation",
            "safety_filter",
        ] {
            assert!(is_moderation(code), "{code}");
        }
        for code in ["internal_error", "invalid_value", "rate_limit_exceeded", ""] {
            assert!(!is_moderation(code), "{code}");
        }
    }

    #[test]
    fn an_error_without_a_json_body_still_maps_by_status() {
        let failure = upstream_failure(StatusCode::BAD_GATEWAY, &HeaderMap::new(), "<html>");
        assert_eq!(
            (failure.code.as_str(), failure.retryable),
            (codes::UPSTREAM_UNAVAILABLE, true)
        );
        assert!(failure.message.contains("<html>"));
    }
}
