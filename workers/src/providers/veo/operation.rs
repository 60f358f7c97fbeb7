//! Veo's long-running operations and error bodies, read into our error model. Pure: no I/O,
//! so every mapping is unit-tested from the JSON Google documents.
//!
//! Both APIs answer with a `google.longrunning.Operation`; they differ only in where the
//! result sits (Gemini: `response.generateVideoResponse.generatedSamples[].video.uri`; Vertex:
//! `response.videos[].gcsUri` or `bytesBase64Encoded`), so one permissive reader serves both.

use std::time::Duration;

use serde::Deserialize;
use serde_json::Value;

use crate::provider::{codes, ProviderFailure};

use super::config::is_model_id;

/// A provider job id: the operation name Veo returned, verbatim.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OperationName<'a> {
    /// `models/{model}/operations/{id}`
    Gemini { name: &'a str },
    /// `projects/{p}/locations/{l}/publishers/google/models/{model}/operations/{id}`; `model`
    /// is everything before `/operations/`, the resource `fetchPredictOperation` is called on.
    Vertex { name: &'a str, model: &'a str },
}

impl<'a> OperationName<'a> {
    /// Only the two documented shapes, with path-safe segments: the name is appended to our
    /// base URL and the request carries our credentials.
    pub fn parse(name: &'a str) -> Option<Self> {
        let segments: Vec<&str> = name.split('/').collect();
        if !segments.iter().all(|s| is_model_id(s)) {
            return None;
        }
        match segments.as_slice() {
            ["models", _, "operations", _] => Some(Self::Gemini { name }),
            ["projects", _, "locations", _, "publishers", "google", "models", _, "operations", _] =>
            {
                let model = name.rsplit_once("/operations/")?.0;
                Some(Self::Vertex { name, model })
            }
            _ => None,
        }
    }
}

#[derive(Debug, Deserialize)]
pub struct Operation {
    #[serde(default)]
    pub done: bool,
    pub error: Option<Status>,
    pub response: Option<VideoResponse>,
}

/// `google.rpc.Status`, as in operations and (with `status`) in HTTP error bodies.
#[derive(Debug, Default, Deserialize)]
pub struct Status {
    pub code: Option<i64>,
    #[serde(default)]
    pub message: String,
    pub status: Option<String>,
    #[serde(default)]
    pub details: Vec<Value>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VideoResponse {
    /// Gemini API nesting; Vertex puts the fields below at the top level.
    generate_video_response: Option<Box<VideoResponse>>,
    #[serde(default)]
    generated_samples: Vec<Sample>,
    #[serde(default)]
    videos: Vec<Video>,
    /// A number, though int64 fields may arrive as strings in Google's JSON mapping.
    rai_media_filtered_count: Option<Value>,
    #[serde(default)]
    rai_media_filtered_reasons: Vec<String>,
}

#[derive(Debug, Deserialize)]
struct Sample {
    video: Option<Video>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Video {
    uri: Option<String>,
    gcs_uri: Option<String>,
    bytes_base64_encoded: Option<String>,
}

/// Where a finished video is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VideoSource {
    /// An https URL (Gemini's file download).
    Url(String),
    /// `gs://bucket/object` (Vertex with an output bucket).
    Gcs { bucket: String, object: String },
    /// The video itself, base64 (Vertex without an output bucket).
    Inline(String),
}

/// What an operation says about the job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Running,
    Done(VideoSource),
    Failed(ProviderFailure),
}

impl Operation {
    pub fn outcome(self) -> Outcome {
        if !self.done {
            return Outcome::Running;
        }
        if let Some(error) = self.error {
            return Outcome::Failed(operation_failure(&error));
        }
        let mut response = self.response.unwrap_or_default();
        if let Some(inner) = response.generate_video_response.take() {
            response = *inner;
        }
        let videos = response
            .generated_samples
            .into_iter()
            .filter_map(|s| s.video)
            .chain(response.videos);
        for video in videos {
            if let Some(source) = video_source(video) {
                return Outcome::Done(source);
            }
        }
        let filtered = match &response.rai_media_filtered_count {
            Some(Value::Number(n)) => n.as_u64().unwrap_or(0),
            Some(Value::String(s)) => s.parse().unwrap_or(0),
            _ => 0,
        };
        if filtered > 0 || !response.rai_media_filtered_reasons.is_empty() {
            let reasons = if response.rai_media_filtered_reasons.is_empty() {
                "no reason given".to_owned()
            } else {
                response.rai_media_filtered_reasons.join("; ")
            };
            // Google does not bill filtered generations.
            return Outcome::Failed(ProviderFailure::new(
                codes::MODERATED,
                format!("Veo's safety filters withheld the video: {reasons}"),
                false,
                false,
            ));
        }
        Outcome::Failed(ProviderFailure::new(
            codes::GENERATION_FAILED,
            "Veo finished the operation without a video",
            true,
            false,
        ))
    }
}

fn video_source(video: Video) -> Option<VideoSource> {
    if let Some(data) = video.bytes_base64_encoded.filter(|d| !d.is_empty()) {
        return Some(VideoSource::Inline(data));
    }
    let uri = video.uri.or(video.gcs_uri)?;
    match uri.strip_prefix("gs://") {
        Some(path) => {
            let (bucket, object) = path.split_once('/')?;
            (!bucket.is_empty() && !object.is_empty()).then(|| VideoSource::Gcs {
                bucket: bucket.to_owned(),
                object: object.to_owned(),
            })
        }
        None => Some(VideoSource::Url(uri)),
    }
}

/// A failed operation (`error` is a `google.rpc.Status`: numeric code, usually no `status`).
/// Google charges only for delivered videos, so none of these is charged.
pub fn operation_failure(error: &Status) -> ProviderFailure {
    let status = error
        .status
        .clone()
        .or_else(|| error.code.and_then(rpc_status_name).map(str::to_owned))
        .unwrap_or_else(|| "UNKNOWN".to_owned());
    let message = format!("Veo failed the job ({status}): {}", error.message);
    let (code, retryable) = match status.as_str() {
        // Vertex refuses prompts and images under its usage guidelines as INVALID_ARGUMENT
        // with a "support code"; those are moderation, not a malformed request.
        "INVALID_ARGUMENT" if mentions_policy(&error.message) => (codes::MODERATED, false),
        "INVALID_ARGUMENT" | "FAILED_PRECONDITION" | "OUT_OF_RANGE" => {
            (codes::INVALID_REQUEST, false)
        }
        "PERMISSION_DENIED" | "UNAUTHENTICATED" => (codes::AUTH_FAILED, false),
        "RESOURCE_EXHAUSTED" => (codes::RATE_LIMITED, true),
        "DEADLINE_EXCEEDED" => (codes::UPSTREAM_TIMEOUT, true),
        _ => (codes::GENERATION_FAILED, true),
    };
    ProviderFailure::new(code, message, retryable, false)
}

fn mentions_policy(message: &str) -> bool {
    let message = message.to_ascii_lowercase();
    message.contains("usage guidelines") || message.contains("responsible ai")
}

/// The names of `google.rpc.Code`.
fn rpc_status_name(code: i64) -> Option<&'static str> {
    Some(match code {
        1 => "CANCELLED",
        2 => "UNKNOWN",
        3 => "INVALID_ARGUMENT",
        4 => "DEADLINE_EXCEEDED",
        5 => "NOT_FOUND",
        6 => "ALREADY_EXISTS",
        7 => "PERMISSION_DENIED",
        8 => "RESOURCE_EXHAUSTED",
        9 => "FAILED_PRECONDITION",
        10 => "ABORTED",
        11 => "OUT_OF_RANGE",
        12 => "UNIMPLEMENTED",
        13 => "INTERNAL",
        14 => "UNAVAILABLE",
        15 => "DATA_LOSS",
        16 => "UNAUTHENTICATED",
        _ => return None,
    })
}

/// An HTTP error body, `{"error": {code, message, status, details}}`, if it is one.
pub fn error_body(body: &str) -> Option<Status> {
    #[derive(Deserialize)]
    struct Envelope {
        error: Status,
    }
    serde_json::from_str::<Envelope>(body).ok().map(|e| e.error)
}

impl Status {
    /// `ErrorInfo.reason` values, e.g. `API_KEY_INVALID`.
    pub fn reasons(&self) -> impl Iterator<Item = &str> {
        self.details
            .iter()
            .filter_map(|d| d.get("reason").and_then(Value::as_str))
    }

    /// `RetryInfo.retryDelay` (`"37s"`, `"1.5s"`), Google's in-body Retry-After.
    pub fn retry_delay(&self) -> Option<Duration> {
        let delay = self
            .details
            .iter()
            .find_map(|d| d.get("retryDelay").and_then(Value::as_str))?;
        let seconds: f64 = delay.strip_suffix('s')?.parse().ok()?;
        (seconds.is_finite() && seconds >= 0.0).then(|| Duration::from_secs_f64(seconds.min(600.0)))
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn outcome(operation: Value) -> Outcome {
        serde_json::from_value::<Operation>(operation)
            .expect("operation")
            .outcome()
    }

    fn failure(outcome: Outcome) -> ProviderFailure {
        match outcome {
            Outcome::Failed(failure) => failure,
            other => panic!("expected a failure, got {other:?}"),
        }
    }

    #[test]
    fn only_documented_operation_names_are_job_ids() {
        let gemini = "models/veo-3.1-generate-001/operations/abc123";
        assert_eq!(
            OperationName::parse(gemini),
            Some(OperationName::Gemini { name: gemini })
        );
        let vertex = "projects/p-1/locations/us-central1/publishers/google/models/veo-3.1-generate-001/operations/0f1e";
        assert_eq!(
            OperationName::parse(vertex),
            Some(OperationName::Vertex {
                name: vertex,
                model: "projects/p-1/locations/us-central1/publishers/google/models/veo-3.1-generate-001",
            })
        );
        for bad in [
            "",
            "abc123",
            "models/veo/operations/",
            "models/../operations/x",
            "models/veo/operations/x?alt=media",
            "models/veo/operations/x/../../files",
            "https://evil.example/models/veo/operations/x",
        ] {
            assert_eq!(OperationName::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn an_unfinished_operation_is_running() {
        assert_eq!(
            outcome(json!({"name": "models/m/operations/o"})),
            Outcome::Running
        );
        assert_eq!(outcome(json!({"done": false})), Outcome::Running);
    }

    #[test]
    fn results_are_found_in_both_response_shapes() {
        let gemini = json!({"done": true, "response": {"generateVideoResponse": {
            "generatedSamples": [{"video": {"uri": "https://g.example/v1beta/files/f:download?alt=media"}}]
        }}});
        assert_eq!(
            outcome(gemini),
            Outcome::Done(VideoSource::Url(
                "https://g.example/v1beta/files/f:download?alt=media".into()
            ))
        );
        let gcs = json!({"done": true, "response": {"videos": [
            {"gcsUri": "gs://bucket/out/a b/sample_0.mp4", "mimeType": "video/mp4"}
        ]}});
        assert_eq!(
            outcome(gcs),
            Outcome::Done(VideoSource::Gcs {
                bucket: "bucket".into(),
                object: "out/a b/sample_0.mp4".into()
            })
        );
        let inline = json!({"done": true, "response": {"videos": [
            {"bytesBase64Encoded": "AAAA", "mimeType": "video/mp4"}
        ]}});
        assert_eq!(
            outcome(inline),
            Outcome::Done(VideoSource::Inline("AAAA".into()))
        );
    }

    #[test]
    fn safety_filtered_results_are_uncharged_final_moderation() {
        for response in [
            json!({"generateVideoResponse": {"raiMediaFilteredCount": 1,
                "raiMediaFilteredReasons": ["The prompt contains sensitive words."]}}),
            json!({"raiMediaFilteredCount": "1", "raiMediaFilteredReasons": ["Child safety."]}),
        ] {
            let failure = failure(outcome(json!({"done": true, "response": response})));
            assert_eq!(failure.code, codes::MODERATED);
            assert!(!failure.retryable && !failure.charged);
            assert!(failure.message.contains('.'), "{}", failure.message);
        }
    }

    #[test]
    fn a_finished_operation_without_a_video_is_a_retryable_generation_failure() {
        let failure = failure(outcome(json!({"done": true, "response": {}})));
        assert_eq!(failure.code, codes::GENERATION_FAILED);
        assert!(failure.retryable && !failure.charged);
    }

    #[test]
    fn operation_errors_map_by_their_rpc_code() {
        let cases = [
            (3, "bad aspect ratio", codes::INVALID_REQUEST, false),
            (
                3,
                "The input image violates Vertex AI's usage guidelines. Support codes: 17301594",
                codes::MODERATED,
                false,
            ),
            (7, "denied", codes::AUTH_FAILED, false),
            (8, "quota", codes::RATE_LIMITED, true),
            (4, "slow", codes::UPSTREAM_TIMEOUT, true),
            (13, "internal", codes::GENERATION_FAILED, true),
            (99, "new code", codes::GENERATION_FAILED, true),
        ];
        for (code, message, expected, retryable) in cases {
            let op = json!({"done": true, "error": {"code": code, "message": message}});
            let failure = failure(outcome(op));
            assert_eq!(
                (failure.code.as_str(), failure.retryable),
                (expected, retryable)
            );
            assert!(!failure.charged);
            assert!(failure.message.contains(message));
        }
    }

    #[test]
    fn error_bodies_yield_reasons_and_retry_delays() {
        let body = json!({"error": {"code": 429, "message": "slow down", "status": "RESOURCE_EXHAUSTED",
        "details": [
            {"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "RATE_LIMIT_EXCEEDED"},
            {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "37s"}
        ]}});
        let status = error_body(&body.to_string()).expect("error body");
        assert_eq!(status.status.as_deref(), Some("RESOURCE_EXHAUSTED"));
        assert_eq!(
            status.reasons().collect::<Vec<_>>(),
            ["RATE_LIMIT_EXCEEDED"]
        );
        assert_eq!(status.retry_delay(), Some(Duration::from_secs(37)));
        assert!(error_body("<html>bad gateway</html>").is_none());
    }
}
