//! The Veo adapter against a local fake of Google's APIs (tests/veo/fake.rs), in both modes:
//! the Gemini API with a key and Vertex AI with a bearer token. The fake enforces the
//! documented request format, so a successful submission is itself an assertion on it.

#[path = "veo/fake.rs"]
mod fake;

use std::path::PathBuf;
use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;
use chrono::Utc;
use fake::{Fake, Finish, Reply, Route, LOCATION, PROJECT};
use framegate_domain::{ProviderKind, VideoId};
use framegate_workers::provider::{
    codes, Job, JobImage, JobState, Lookup, ProviderFailure, VideoProvider,
};
use framegate_workers::providers::veo::{Veo, VeoConfig, MAX_ESTIMATE};
use serde_json::json;
use tempfile::TempDir;
use uuid::Uuid;

fn config(pairs: &[(&str, String)]) -> VeoConfig {
    VeoConfig::from_lookup(|name| {
        pairs
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.clone())
    })
    .expect("valid configuration")
    .expect("Veo configured")
}

fn gemini(fake: &Fake) -> Veo {
    Veo::new(config(&[
        ("FRAMEGATE_VEO_API_KEY", "test-api-key".into()),
        ("FRAMEGATE_VEO_BASE_URL", format!("{}/v1beta", fake.base)),
    ]))
}

fn vertex_config(fake: &Fake, extra: &[(&'static str, String)]) -> VeoConfig {
    let mut pairs = vec![
        ("FRAMEGATE_VEO_VERTEX_PROJECT", PROJECT.to_owned()),
        ("FRAMEGATE_VEO_VERTEX_LOCATION", LOCATION.to_owned()),
        ("FRAMEGATE_VEO_VERTEX_BASE_URL", format!("{}/v1", fake.base)),
        (
            "FRAMEGATE_VEO_STORAGE_BASE_URL",
            format!("{}/storage/v1", fake.base),
        ),
    ];
    pairs.extend_from_slice(extra);
    config(&pairs)
}

fn vertex(fake: &Fake) -> Veo {
    Veo::new(vertex_config(
        fake,
        &[("FRAMEGATE_VEO_VERTEX_ACCESS_TOKEN", "token-1".into())],
    ))
}

fn job() -> Job {
    Job {
        video_id: VideoId::from_uuid(Uuid::now_v7()),
        model: String::new(),
        prompt: "a red fox running through snow".into(),
        negative_prompt: None,
        duration_seconds: 8,
        aspect_ratio: "16:9".into(),
        resolution: "1080p".into(),
        seed: None,
        image: None,
    }
}

fn destination() -> (TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("video.mp4");
    (dir, path)
}

fn failed(state: JobState) -> ProviderFailure {
    match state {
        JobState::Failed(failure) => failure,
        other => panic!("expected a failed job, got {other:?}"),
    }
}

/// Polls until the job leaves `Running`, checking the progress estimate on the way.
async fn poll_to_end(veo: &Veo, job_id: &str) -> JobState {
    for _ in 0..10 {
        match veo.poll(job_id).await.expect("poll") {
            JobState::Running { progress } => assert!(progress <= MAX_ESTIMATE, "{progress}"),
            JobState::Queued => panic!("Veo jobs are reported running"),
            end => return end,
        }
    }
    panic!("the operation never finished");
}

#[tokio::test]
async fn a_gemini_text_to_video_job_is_submitted_polled_and_downloaded_with_the_key() {
    let fake = Fake::start().await;
    fake.state().pending_polls = 2;
    let veo = gemini(&fake);
    assert_eq!(veo.kind(), ProviderKind::Veo);
    let job = Job {
        negative_prompt: Some("blurry".into()),
        seed: Some(4_000_000_000),
        ..job()
    };

    let job_id = veo.submit(&job).await.expect("submitted");
    assert_eq!(job_id, "models/veo-3.1-generate-001/operations/op-1");
    assert_eq!(
        veo.poll(&job_id).await.expect("poll"),
        JobState::Running { progress: 0 }
    );
    assert_eq!(poll_to_end(&veo, &job_id).await, JobState::Succeeded);
    let (_dir, path) = destination();
    veo.fetch(&job_id, &path).await.expect("fetched");
    assert_eq!(std::fs::read(&path).expect("video"), fake.state().video);

    let submit = &fake.seen(Route::Submit)[0];
    assert_eq!(
        submit.path,
        "/v1beta/models/veo-3.1-generate-001:predictLongRunning"
    );
    assert_eq!(submit.header("content-type"), Some("application/json"));
    assert_eq!(
        submit.body,
        Some(json!({
            "instances": [{"prompt": "a red fox running through snow"}],
            "parameters": {"aspectRatio": "16:9", "resolution": "1080p", "durationSeconds": 8,
                "sampleCount": 1, "negativePrompt": "blurry", "seed": 4_000_000_000u32}
        }))
    );
    let polls = fake.seen(Route::Poll);
    assert_eq!(polls.len(), 4, "three polls and the fetch's look-up");
    for seen in fake.state().requests.iter() {
        assert_eq!(
            seen.header("x-goog-api-key"),
            Some("test-api-key"),
            "{}",
            seen.path
        );
        assert_eq!(seen.header("authorization"), None, "{}", seen.path);
    }
    for poll in &polls {
        assert_eq!(poll.method, "GET");
        assert_eq!(
            poll.path,
            "/v1beta/models/veo-3.1-generate-001/operations/op-1"
        );
        assert_eq!(poll.body, None);
    }
    assert_eq!(fake.seen(Route::Download).len(), 1);
}

#[tokio::test]
async fn image_to_video_sends_the_image_as_standard_base64_with_its_type() {
    let fake = Fake::start().await;
    let veo = gemini(&fake);
    // Bytes whose base64 uses `+` and `/` and needs padding: URL-safe or unpadded fails.
    let bytes = Bytes::from_static(&[0xfb, 0xff, 0xbf, 0xfe]);
    for content_type in ["image/jpeg", "image/png"] {
        let job = Job {
            model: "veo-3.1-fast-generate-001".into(),
            resolution: "720p".into(),
            duration_seconds: 6,
            aspect_ratio: "9:16".into(),
            image: Some(JobImage {
                bytes: bytes.clone(),
                content_type: content_type.into(),
            }),
            ..job()
        };
        let job_id = veo.submit(&job).await.expect("submitted");
        assert!(job_id.starts_with("models/veo-3.1-fast-generate-001/operations/"));
        let seen = fake.seen(Route::Submit).pop().expect("submission");
        let image = &seen.body.expect("body")["instances"][0]["image"];
        assert_eq!(image["mimeType"], content_type);
        assert_eq!(image["bytesBase64Encoded"], "+/+//g==");
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(image["bytesBase64Encoded"].as_str().expect("string"))
            .expect("base64");
        assert_eq!(decoded, bytes);
    }
}

#[tokio::test]
async fn an_unsupported_image_type_is_refused_before_anything_is_sent() {
    let fake = Fake::start().await;
    let job = Job {
        image: Some(JobImage {
            bytes: Bytes::from_static(b"RIFF....WEBP"),
            content_type: "image/webp".into(),
        }),
        ..job()
    };
    let failure = gemini(&fake).submit(&job).await.expect_err("refused");
    assert_eq!(failure.code, codes::INVALID_REQUEST);
    assert!(!failure.retryable && !failure.charged);
    assert_eq!(fake.request_count(), 0);
}

#[tokio::test]
async fn a_safety_filtered_result_is_a_final_uncharged_moderation_failure() {
    let fake = Fake::start().await;
    fake.state().finish = Finish::Filtered(vec!["Prompt violates the usage policy.".into()]);
    let veo = gemini(&fake);
    let job_id = veo.submit(&job()).await.expect("submitted");
    let failure = failed(poll_to_end(&veo, &job_id).await);
    assert_eq!(failure.code, codes::MODERATED);
    assert!(!failure.retryable && !failure.charged);
    assert!(failure
        .message
        .contains("Prompt violates the usage policy."));
    let (_dir, path) = destination();
    let failure = veo
        .fetch(&job_id, &path)
        .await
        .expect_err("nothing to fetch");
    assert_eq!(failure.code, codes::MODERATED);
    assert_eq!(fake.seen(Route::Download).len(), 0);
}

#[tokio::test]
async fn a_failed_operation_maps_by_its_rpc_code() {
    let cases = [
        (
            3,
            "durationSeconds out of range",
            codes::INVALID_REQUEST,
            false,
        ),
        (
            13,
            "Internal error encountered.",
            codes::GENERATION_FAILED,
            true,
        ),
        (8, "Resource has been exhausted.", codes::RATE_LIMITED, true),
    ];
    for (code, message, expected, retryable) in cases {
        let fake = Fake::start().await;
        fake.state().finish = Finish::Error {
            code,
            message: message.into(),
        };
        let veo = gemini(&fake);
        let job_id = veo.submit(&job()).await.expect("submitted");
        let failure = failed(poll_to_end(&veo, &job_id).await);
        assert_eq!(
            (failure.code.as_str(), failure.retryable),
            (expected, retryable)
        );
        assert!(!failure.charged);
        assert!(failure.message.contains(message), "{}", failure.message);
    }
}

#[tokio::test]
async fn a_rate_limited_submission_is_retryable_after_the_advertised_delay() {
    let fake = Fake::start().await;
    fake.inject(
        Route::Submit,
        Reply::error(429, "RESOURCE_EXHAUSTED", "Quota exceeded.").with_header("retry-after", "17"),
    );
    let mut in_body = Reply::error(429, "RESOURCE_EXHAUSTED", "Quota exceeded.");
    in_body.body["error"]["details"] = json!([
        {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "37s"}
    ]);
    fake.inject(Route::Submit, in_body);
    let veo = gemini(&fake);
    for expected in [17, 37] {
        let failure = veo.submit(&job()).await.expect_err("rate limited");
        assert_eq!(failure.code, codes::RATE_LIMITED);
        assert!(failure.retryable && !failure.charged);
        assert_eq!(failure.retry_after, Some(Duration::from_secs(expected)));
    }
    veo.submit(&job())
        .await
        .expect("accepted once the limit passes");
}

#[tokio::test]
async fn server_errors_while_polling_are_retryable_and_the_job_is_still_followed() {
    let fake = Fake::start().await;
    let veo = gemini(&fake);
    let job_id = veo.submit(&job()).await.expect("submitted");
    fake.inject(
        Route::Poll,
        Reply::error(503, "UNAVAILABLE", "The service is currently unavailable."),
    );
    fake.inject(
        Route::Poll,
        Reply::error(500, "INTERNAL", "Internal error encountered."),
    );
    for _ in 0..2 {
        let failure = veo.poll(&job_id).await.expect_err("server error");
        assert_eq!(failure.code, codes::UPSTREAM_UNAVAILABLE);
        assert!(failure.retryable && !failure.charged);
    }
    assert_eq!(veo.poll(&job_id).await.expect("poll"), JobState::Succeeded);
}

#[tokio::test]
async fn a_refused_api_key_is_a_final_auth_failure() {
    let fake = Fake::start().await;
    fake.state().api_key = "another-key".into();
    let failure = gemini(&fake).submit(&job()).await.expect_err("refused");
    assert_eq!(failure.code, codes::AUTH_FAILED);
    assert!(!failure.retryable && !failure.charged);
}

#[tokio::test]
async fn an_unknown_or_retired_model_is_an_invalid_request() {
    let fake = Fake::start().await;
    let job = Job {
        model: "veo-3.0-generate-001".into(),
        ..job()
    };
    let failure = gemini(&fake).submit(&job).await.expect_err("refused");
    assert_eq!(failure.code, codes::INVALID_REQUEST);
    assert!(!failure.retryable && !failure.charged);
    assert!(
        failure.message.contains("veo-3.0-generate-001"),
        "{}",
        failure.message
    );
}

#[tokio::test]
async fn an_expired_result_is_a_final_result_expired_failure() {
    let fake = Fake::start().await;
    let veo = gemini(&fake);
    let job_id = veo.submit(&job()).await.expect("submitted");
    assert_eq!(veo.poll(&job_id).await.expect("poll"), JobState::Succeeded);
    fake.state().result_gone = true;
    let (_dir, path) = destination();
    let failure = veo.fetch(&job_id, &path).await.expect_err("gone");
    assert_eq!(failure.code, codes::RESULT_EXPIRED);
    assert!(!failure.retryable && !failure.charged);
    assert!(!path.exists(), "no partial file is left behind");
}

#[tokio::test]
async fn redirected_downloads_keep_the_key_at_google_and_reach_private_hosts_only_if_allowed() {
    let fake = Fake::start().await;
    fake.state().redirect_results = true;
    let veo = gemini(&fake);
    let job_id = veo.submit(&job()).await.expect("submitted");
    let (_dir, path) = destination();
    veo.fetch(&job_id, &path)
        .await
        .expect("fetched through a relative redirect");
    assert_eq!(std::fs::read(&path).expect("video"), fake.state().video);
    let download = fake.seen(Route::Download).pop().expect("download");
    assert_eq!(download.path, "/v1beta/files/op-1:download");
    assert_eq!(download.header("x-goog-api-key"), Some("test-api-key"));

    // Another host, here on loopback: refused unless private upstreams are allowed.
    let elsewhere = Fake::start().await;
    fake.state().redirect_target = Some(format!("{}/elsewhere/signed-video.mp4", elsewhere.base));
    let refused = veo
        .fetch(&job_id, &path)
        .await
        .expect_err("a loopback host");
    assert_eq!(
        (refused.code.as_str(), refused.retryable),
        (codes::INVALID_OUTPUT, false)
    );
    assert!(elsewhere.seen(Route::Elsewhere).is_empty());
    let veo = Veo::new(config(&[
        ("FRAMEGATE_VEO_API_KEY", "test-api-key".into()),
        ("FRAMEGATE_VEO_BASE_URL", format!("{}/v1beta", fake.base)),
        ("FRAMEGATE_ALLOW_PRIVATE_UPSTREAMS", "true".into()),
    ]));
    veo.fetch(&job_id, &path)
        .await
        .expect("fetched from another host");
    assert_eq!(
        std::fs::read(&path).expect("video"),
        elsewhere.state().video
    );
    let foreign = elsewhere
        .seen(Route::Elsewhere)
        .pop()
        .expect("foreign download");
    assert_eq!(foreign.header("x-goog-api-key"), None);
    assert_eq!(foreign.header("authorization"), None);
}

#[tokio::test]
async fn vertex_jobs_are_polled_with_fetch_predict_operation_and_inline_results_decoded() {
    let fake = Fake::start().await;
    fake.state().pending_polls = 1;
    let veo = vertex(&fake);
    let job_id = veo.submit(&job()).await.expect("submitted");
    let resource = format!(
        "projects/{PROJECT}/locations/{LOCATION}/publishers/google/models/veo-3.1-generate-001"
    );
    assert_eq!(job_id, format!("{resource}/operations/op-1"));
    assert_eq!(poll_to_end(&veo, &job_id).await, JobState::Succeeded);
    let (_dir, path) = destination();
    veo.fetch(&job_id, &path).await.expect("fetched");
    assert_eq!(std::fs::read(&path).expect("video"), fake.state().video);

    let submit = &fake.seen(Route::Submit)[0];
    assert_eq!(submit.path, format!("/v1/{resource}:predictLongRunning"));
    let polls = fake.seen(Route::Poll);
    assert_eq!(polls.len(), 3, "two polls and the fetch's look-up");
    for poll in &polls {
        assert_eq!(poll.method, "POST");
        assert_eq!(poll.path, format!("/v1/{resource}:fetchPredictOperation"));
        assert_eq!(poll.body, Some(json!({"operationName": job_id})));
    }
    for seen in fake.state().requests.iter() {
        assert_eq!(seen.header("authorization"), Some("Bearer token-1"));
        assert_eq!(seen.header("x-goog-api-key"), None);
    }
}

#[tokio::test]
async fn vertex_results_in_cloud_storage_are_read_with_the_token() {
    let fake = Fake::start().await;
    let config = vertex_config(
        &fake,
        &[
            ("FRAMEGATE_VEO_VERTEX_ACCESS_TOKEN", "token-1".into()),
            (
                "FRAMEGATE_VEO_VERTEX_OUTPUT_URI",
                "gs://fake-bucket/veo out/".into(),
            ),
        ],
    );
    let veo = Veo::new(config);
    let job_id = veo.submit(&job()).await.expect("submitted");
    let submit = &fake.seen(Route::Submit)[0];
    assert_eq!(
        submit.body.as_ref().expect("body")["parameters"]["storageUri"],
        "gs://fake-bucket/veo out/"
    );
    assert_eq!(veo.poll(&job_id).await.expect("poll"), JobState::Succeeded);
    let (_dir, path) = destination();
    veo.fetch(&job_id, &path).await.expect("fetched");
    assert_eq!(std::fs::read(&path).expect("video"), fake.state().video);
    let download = fake.seen(Route::Storage).pop().expect("storage read");
    assert_eq!(
        download.path,
        "/storage/v1/b/fake-bucket/o/veo%20out%2Fop-1%20dir%2Fsample_0.mp4"
    );
    assert_eq!(download.header("authorization"), Some("Bearer token-1"));
}

#[tokio::test]
async fn an_expired_vertex_token_is_renewed_by_the_command_and_the_call_retried_once() {
    let fake = Fake::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let counter = dir.path().join("runs");
    let command = format!(
        "n=$(cat '{0}' 2>/dev/null || echo 0); n=$((n+1)); echo $n > '{0}'; echo token-$n",
        counter.display()
    );
    let veo = Veo::new(vertex_config(
        &fake,
        &[("FRAMEGATE_VEO_VERTEX_TOKEN_COMMAND", command)],
    ));
    let job_id = veo.submit(&job()).await.expect("submitted with token-1");

    // token-1 expires; the command would now print token-2.
    fake.state().valid_token = "token-2".into();
    veo.poll(&job_id)
        .await
        .expect("polled after renewing the token");
    let seen: Vec<_> = fake
        .state()
        .requests
        .iter()
        .map(|s| (s.route, s.header("authorization").unwrap_or("").to_owned()))
        .collect();
    assert_eq!(
        seen,
        [
            (Route::Submit, "Bearer token-1".to_owned()),
            (Route::Poll, "Bearer token-1".to_owned()),
            (Route::Poll, "Bearer token-2".to_owned()),
        ]
    );
    assert_eq!(std::fs::read_to_string(&counter).expect("runs").trim(), "2");

    // A renewed token that is refused too is not retried in a loop.
    fake.state().valid_token = "token-9".into();
    let failure = veo.submit(&job()).await.expect_err("refused twice");
    assert_eq!(failure.code, codes::AUTH_FAILED);
    assert!(failure.retryable, "the next call runs the command again");
    assert_eq!(fake.seen(Route::Submit).len(), 3);
}

#[tokio::test]
async fn an_expired_static_vertex_token_fails_submissions_but_not_jobs_in_flight() {
    let fake = Fake::start().await;
    let veo = vertex(&fake);
    let job_id = veo.submit(&job()).await.expect("submitted");
    fake.state().valid_token = "token-2".into();

    let failure = veo.submit(&job()).await.expect_err("expired");
    assert_eq!(failure.code, codes::AUTH_FAILED);
    assert!(!failure.retryable && !failure.charged);
    let failure = veo.poll(&job_id).await.expect_err("expired");
    assert_eq!(failure.code, codes::AUTH_FAILED);
    assert!(
        failure.retryable,
        "the job keeps rendering while the token is replaced"
    );
    assert_eq!(fake.request_count(), 3, "a static token is not retried");
}

#[tokio::test]
async fn after_a_crash_between_submit_and_record_the_job_is_unknown_and_not_submitted_again() {
    let fake = Fake::start().await;
    let job = job();
    let requested_at = Utc::now();
    // The first worker submits, then dies before recording the operation name.
    gemini(&fake).submit(&job).await.expect("submitted");
    let restarted = gemini(&fake);
    let lookup = restarted.find(&job, requested_at).await.expect("lookup");
    assert_eq!(lookup, Lookup::Unknown);
    assert_eq!(fake.seen(Route::Submit).len(), 1);
    assert_eq!(fake.request_count(), 1, "find asks Google nothing");
}

#[tokio::test]
async fn operation_names_of_another_shape_are_never_requested() {
    let fake = Fake::start().await;
    fake.state().operation_name_override = Some("models/x/operations/../../../files/secret".into());
    let veo = gemini(&fake);
    let failure = veo.submit(&job()).await.expect_err("unusable operation");
    assert_eq!(failure.code, codes::GENERATION_FAILED);
    assert!(!failure.charged);

    let vertex_name = format!(
        "projects/{PROJECT}/locations/{LOCATION}/publishers/google/models/veo-3.1-generate-001/operations/op-1"
    );
    for job_id in [
        vertex_name.as_str(),
        "op-1",
        "models/m/operations/op-1?alt=media",
    ] {
        let failure = veo.poll(job_id).await.expect_err(job_id);
        assert_eq!(failure.code, codes::NOT_FOUND, "{job_id}");
        assert!(!failure.retryable);
    }
    assert_eq!(fake.request_count(), 1, "only the submission");
}

#[tokio::test]
async fn a_slow_or_unreachable_upstream_is_retryable() {
    let fake = Fake::start().await;
    fake.state().delay = Some(Duration::from_secs(2));
    let mut slow = config(&[
        ("FRAMEGATE_VEO_API_KEY", "test-api-key".into()),
        ("FRAMEGATE_VEO_BASE_URL", format!("{}/v1beta", fake.base)),
    ]);
    slow.request_timeout = Duration::from_millis(200);
    let failure = Veo::new(slow).submit(&job()).await.expect_err("timed out");
    assert_eq!(failure.code, codes::UPSTREAM_TIMEOUT);
    assert!(failure.retryable && !failure.charged);

    let closed = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind")
        .local_addr()
        .expect("address");
    let unreachable = Veo::new(config(&[
        ("FRAMEGATE_VEO_API_KEY", "test-api-key".into()),
        ("FRAMEGATE_VEO_BASE_URL", format!("http://{closed}/v1beta")),
    ]));
    let failure = unreachable.submit(&job()).await.expect_err("unreachable");
    assert_eq!(failure.code, codes::UPSTREAM_UNAVAILABLE);
    assert!(failure.retryable && !failure.charged);
}
