//! Kling's answers: the `{code, message, request_id, data}` envelope, the task it carries,
//! and the mapping of every refusal onto our error model.

use std::time::Duration;

use reqwest::header::HeaderMap;
use reqwest::StatusCode;
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::Value;

use super::PROVIDER;
use crate::provider::{codes, JobState, ProviderFailure};
use crate::providers::http;

/// What the progress estimate takes a render to last.
const EXPECTED_RENDER_MS: i64 = 300_000;
/// Kling asks for at least a second between attempts after 1302/1303.
const MIN_BACKOFF: Duration = Duration::from_secs(1);

/// An answer other than success, kept whole so a lookup can tell "not found" from the rest.
#[derive(Debug)]
pub(super) enum Refusal {
    /// Nothing was answered (or no request could be made).
    Failed(ProviderFailure),
    Answered {
        status: StatusCode,
        headers: HeaderMap,
        /// Kling's envelope code; `None` when the body was not an envelope.
        code: Option<i64>,
        message: String,
    },
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refusal::Failed(failure) => write!(f, "{failure}"),
            Refusal::Answered {
                status,
                code,
                message,
                ..
            } => {
                write!(f, "{status} code {code:?}: {message}")
            }
        }
    }
}

impl Refusal {
    /// Kling's documented "the requested resource does not exist": HTTP 404 with code 1203.
    pub(super) fn is_not_found(&self) -> bool {
        let Refusal::Answered { status, code, .. } = self else {
            return false;
        };
        *status == StatusCode::NOT_FOUND && *code == Some(1203)
    }

    /// Whether a failed creation may nonetheless have created the task.
    pub(super) fn may_have_created(&self) -> bool {
        match self {
            Refusal::Failed(failure) => failure.retryable,
            Refusal::Answered {
                status,
                code,
                message,
                ..
            } => {
                status.is_server_error()
                    || (*code == Some(1201)
                        && message.to_ascii_lowercase().contains("external_task_id"))
            }
        }
    }

    pub(super) fn into_failure(self) -> ProviderFailure {
        match self {
            Refusal::Failed(failure) => failure,
            Refusal::Answered {
                status,
                headers,
                code,
                message,
            } => failure_for(status, &headers, code, &message),
        }
    }
}

/// Kling's envelope codes (and bare HTTP statuses) onto our error model. Kling charges
/// nothing for a refused request.
pub(super) fn failure_for(
    status: StatusCode,
    headers: &HeaderMap,
    code: Option<i64>,
    message: &str,
) -> ProviderFailure {
    let Some(code) = code else {
        if status.is_success() {
            let message = format!("kling answered {status} with an unreadable body: {message}");
            return ProviderFailure::new(codes::UPSTREAM_UNAVAILABLE, message, true, false);
        }
        return http::status_failure(PROVIDER, status, headers, message);
    };
    let retry_after = http::retry_after(headers);
    let backoff = Some(retry_after.unwrap_or(MIN_BACKOFF).max(MIN_BACKOFF));
    let (kind, retryable, wait) = match code {
        1301 => (codes::MODERATED, false, None),
        1302 | 1303 => (codes::RATE_LIMITED, true, backoff),
        1100..=1102 => (codes::QUOTA_EXHAUSTED, false, None),
        1000..=1004 | 1103 | 1304 => (codes::AUTH_FAILED, false, None),
        1203 => (codes::NOT_FOUND, false, None),
        1200..=1202 | 1300 => (codes::INVALID_REQUEST, false, None),
        5000..=5002 => (codes::UPSTREAM_UNAVAILABLE, true, retry_after),
        _ if status == StatusCode::TOO_MANY_REQUESTS => (codes::RATE_LIMITED, true, backoff),
        _ => (
            codes::UPSTREAM_UNAVAILABLE,
            status.is_server_error(),
            retry_after,
        ),
    };
    let message = format!("kling answered {status} code {code}: {message}");
    ProviderFailure::new(kind, message, retryable, false).with_retry_after(wait)
}

#[derive(Deserialize)]
pub(super) struct Envelope {
    pub(super) code: i64,
    #[serde(default)]
    pub(super) message: String,
    #[serde(default)]
    pub(super) request_id: Option<String>,
    #[serde(default)]
    pub(super) data: Option<Value>,
}

#[derive(Deserialize)]
pub(super) struct Created {
    pub(super) task_id: String,
}

#[derive(Deserialize)]
pub(super) struct Task {
    pub(super) task_id: String,
    pub(super) task_status: String,
    #[serde(default)]
    pub(super) task_status_msg: Option<String>,
    #[serde(default)]
    pub(super) task_info: Option<TaskInfo>,
    #[serde(default)]
    pub(super) task_result: Option<TaskResult>,
    /// Unix milliseconds.
    #[serde(default)]
    pub(super) created_at: Option<i64>,
}

#[derive(Deserialize)]
pub(super) struct TaskInfo {
    #[serde(default)]
    pub(super) external_task_id: Option<String>,
}

#[derive(Deserialize)]
pub(super) struct TaskResult {
    #[serde(default)]
    pub(super) videos: Vec<ResultVideo>,
}

#[derive(Deserialize)]
pub(super) struct ResultVideo {
    pub(super) url: String,
}

impl Task {
    pub(super) fn state(&self, now_ms: i64) -> Result<JobState, ProviderFailure> {
        match self.task_status.as_str() {
            "submitted" => Ok(JobState::Queued),
            "processing" => Ok(JobState::Running {
                progress: estimate_progress(self.created_at, now_ms),
            }),
            "succeed" => Ok(JobState::Succeeded),
            "failed" => {
                let message = self.task_status_msg.clone().unwrap_or_default();
                let code = if looks_moderated(&message) {
                    codes::MODERATED
                } else {
                    codes::GENERATION_FAILED
                };
                let message = format!("kling task {} failed: {message}", self.task_id);
                Ok(JobState::Failed(ProviderFailure::new(
                    code, message, false, false,
                )))
            }
            other => Err(ProviderFailure::new(
                codes::UPSTREAM_UNAVAILABLE,
                format!(
                    "kling task {} has an unknown status {other:?}",
                    self.task_id
                ),
                true,
                false,
            )),
        }
    }
}

/// 10 % at creation, rising linearly over [`EXPECTED_RENDER_MS`], held at 95 % after.
pub(super) fn estimate_progress(created_at_ms: Option<i64>, now_ms: i64) -> u8 {
    let Some(created_at) = created_at_ms else {
        return 50;
    };
    let elapsed = now_ms
        .saturating_sub(created_at)
        .clamp(0, EXPECTED_RENDER_MS);
    let progress = 10 + 85 * elapsed / EXPECTED_RENDER_MS;
    u8::try_from(progress).unwrap_or(95)
}

/// Kling's failure messages are free text; these words mark a content refusal.
pub(super) fn looks_moderated(message: &str) -> bool {
    let message = message.to_ascii_lowercase();
    [
        "risk control",
        "moderation",
        "content security",
        "content policy",
        "sensitive",
        "violat",
        "inappropriate",
        "safety",
    ]
    .iter()
    .any(|word| message.contains(word))
}

pub(super) fn parse<T: DeserializeOwned>(data: Value) -> Result<T, ProviderFailure> {
    serde_json::from_value(data).map_err(|e| {
        ProviderFailure::new(
            codes::UPSTREAM_UNAVAILABLE,
            format!("kling answered an unexpected shape: {e}"),
            true,
            false,
        )
    })
}

#[cfg(test)]
mod tests {
    use reqwest::header::{HeaderValue, RETRY_AFTER};

    use super::*;

    #[test]
    fn envelope_codes_map_onto_the_error_model() {
        let none = HeaderMap::new();
        let cases = [
            (400, 1301, codes::MODERATED, false),
            (429, 1302, codes::RATE_LIMITED, true),
            (429, 1303, codes::RATE_LIMITED, true),
            (429, 1102, codes::QUOTA_EXHAUSTED, false),
            (429, 1101, codes::QUOTA_EXHAUSTED, false),
            (400, 1200, codes::INVALID_REQUEST, false),
            (400, 1201, codes::INVALID_REQUEST, false),
            (404, 1203, codes::NOT_FOUND, false),
            (401, 1000, codes::AUTH_FAILED, false),
            (401, 1004, codes::AUTH_FAILED, false),
            (403, 1103, codes::AUTH_FAILED, false),
            (500, 5000, codes::UPSTREAM_UNAVAILABLE, true),
            (503, 5001, codes::UPSTREAM_UNAVAILABLE, true),
            (504, 5002, codes::UPSTREAM_UNAVAILABLE, true),
            (429, 9999, codes::RATE_LIMITED, true),
            (502, 9999, codes::UPSTREAM_UNAVAILABLE, true),
            (400, 9999, codes::UPSTREAM_UNAVAILABLE, false),
        ];
        for (status, code, expected, retryable) in cases {
            let status = StatusCode::from_u16(status).expect("status");
            let failure = failure_for(status, &none, Some(code), "x");
            assert_eq!(
                (failure.code.as_str(), failure.retryable, failure.charged),
                (expected, retryable, false),
                "{status} {code}"
            );
        }
    }

    #[test]
    fn rate_limits_wait_at_least_a_second_or_as_long_as_asked() {
        let mut headers = HeaderMap::new();
        let failure = failure_for(StatusCode::TOO_MANY_REQUESTS, &headers, Some(1303), "x");
        assert_eq!(failure.retry_after, Some(MIN_BACKOFF));
        headers.insert(RETRY_AFTER, HeaderValue::from_static("0"));
        let failure = failure_for(StatusCode::TOO_MANY_REQUESTS, &headers, Some(1302), "x");
        assert_eq!(failure.retry_after, Some(MIN_BACKOFF));
        headers.insert(RETRY_AFTER, HeaderValue::from_static("12"));
        let failure = failure_for(StatusCode::TOO_MANY_REQUESTS, &headers, Some(1302), "x");
        assert_eq!(failure.retry_after, Some(Duration::from_secs(12)));
    }

    #[test]
    fn bodies_without_an_envelope_fall_back_to_the_http_status() {
        let none = HeaderMap::new();
        let failure = failure_for(StatusCode::BAD_GATEWAY, &none, None, "<html>");
        assert_eq!(
            (failure.code.as_str(), failure.retryable),
            (codes::UPSTREAM_UNAVAILABLE, true)
        );
        let failure = failure_for(StatusCode::NOT_FOUND, &none, None, "nope");
        assert_eq!(failure.code, codes::NOT_FOUND);
        let failure = failure_for(StatusCode::OK, &none, None, "garbage");
        assert_eq!(
            (failure.code.as_str(), failure.retryable),
            (codes::UPSTREAM_UNAVAILABLE, true)
        );
    }

    #[test]
    fn only_a_404_with_code_1203_means_not_found() {
        let answered = |status: u16, code: Option<i64>| Refusal::Answered {
            status: StatusCode::from_u16(status).expect("status"),
            headers: HeaderMap::new(),
            code,
            message: "task not found".into(),
        };
        assert!(answered(404, Some(1203)).is_not_found());
        assert!(!answered(404, None).is_not_found());
        assert!(!answered(400, Some(1203)).is_not_found());
        assert!(!answered(404, Some(1202)).is_not_found());
        assert!(!answered(400, Some(1201)).is_not_found());
    }

    #[test]
    fn progress_grows_with_the_tasks_age_and_stays_below_done() {
        let created = 1_000_000;
        assert_eq!(estimate_progress(None, created), 50);
        assert_eq!(estimate_progress(Some(created), created - 5_000), 10);
        assert_eq!(estimate_progress(Some(created), created), 10);
        assert_eq!(
            estimate_progress(Some(created), created + EXPECTED_RENDER_MS / 2),
            52
        );
        assert_eq!(
            estimate_progress(Some(created), created + 10 * EXPECTED_RENDER_MS),
            95
        );
    }

    #[test]
    fn failed_tasks_tell_moderation_from_other_failures() {
        let task = |message: &str| Task {
            task_id: "1".into(),
            task_status: "failed".into(),
            task_status_msg: Some(message.into()),
            task_info: None,
            task_result: None,
            created_at: None,
        };
        let code = |message: &str| match task(message).state(0) {
            Ok(JobState::Failed(failure)) => (failure.code, failure.retryable, failure.charged),
            other => panic!("not a failure: {other:?}"),
        };
        let moderated = (codes::MODERATED.to_owned(), false, false);
        assert_eq!(code("Failure to pass the risk control system"), moderated);
        assert_eq!(code("content security policy triggered"), moderated);
        let failed = (codes::GENERATION_FAILED.to_owned(), false, false);
        assert_eq!(code("internal render error"), failed);
    }
}
