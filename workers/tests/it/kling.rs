//! The Kling adapter against a local fake of Kling's API (see `kling/fake.rs`), which checks
//! the token, fields and image encoding of every request. Scenarios are scripted per test:
//! success with progress and download, moderation, rate limits, server errors, expired tokens,
//! expired results, and the crash between submitting and recording the job id.

#[path = "kling/fake.rs"]
mod fake;

use std::collections::HashSet;
use std::io::Cursor;
use std::time::Duration;

use chrono::Utc;
use fake::{Fake, Scripted};
use framegate_domain::{ProviderKind, VideoId};
use framegate_workers::provider::{
    codes, Cancellation, Job, JobImage, JobState, Lookup, VideoProvider,
};
use serde_json::json;
use uuid::Uuid;

fn text_job() -> Job {
    Job {
        video_id: VideoId::from_uuid(Uuid::new_v4()),
        model: "kling-v2-6".into(),
        prompt: "a lighthouse at dusk, waves breaking".into(),
        negative_prompt: Some("blur".into()),
        duration_seconds: 5,
        aspect_ratio: "16:9".into(),
        resolution: "1080p".into(),
        seed: Some(7),
        image: None,
    }
}

fn encoded(width: u32, height: u32, format: image::ImageFormat) -> Vec<u8> {
    let mut bytes = Cursor::new(Vec::new());
    image::RgbImage::from_fn(width, height, |x, y| {
        image::Rgb([(x % 256) as u8, (y % 256) as u8, 90])
    })
    .write_to(&mut bytes, format)
    .expect("encode");
    bytes.into_inner()
}

fn image_job(bytes: Vec<u8>, content_type: &str) -> Job {
    Job {
        resolution: "720p".into(),
        duration_seconds: 10,
        image: Some(JobImage {
            bytes: bytes.into(),
            content_type: content_type.into(),
        }),
        ..text_job()
    }
}

fn task_id(job_id: &str) -> &str {
    job_id.split_once(':').expect("endpoint:task").1
}

#[tokio::test]
async fn text_to_video_is_submitted_with_the_documented_fields() {
    let fake = Fake::start().await;
    let kling = fake.kling();
    let job = text_job();
    assert_eq!(kling.kind(), ProviderKind::Kling);

    let job_id = kling.submit(&job).await.expect("submitted");

    let seen = fake.seen();
    assert_eq!(
        (seen.len(), seen[0].method, seen[0].path.as_str()),
        (1, "POST", "/v1/videos/text2video")
    );
    let task = fake.task(task_id(&job_id));
    assert_eq!(job_id, format!("text2video:{}", task.task_id));
    let body = seen[0].body.clone().expect("json body");
    assert_eq!(
        body,
        json!({
            "model_name": "kling-v2-6",
            "prompt": "a lighthouse at dusk, waves breaking",
            "negative_prompt": "blur",
            "mode": "pro",
            "aspect_ratio": "16:9",
            "duration": "5",
            "external_task_id": job.video_id.to_string(),
        })
    );
    fake.assert_no_problems();
}

#[tokio::test]
async fn a_job_is_followed_through_progress_to_a_downloaded_video() {
    let fake = Fake::start().await;
    let kling = fake.kling();
    let job_id = kling.submit(&text_job()).await.expect("submitted");
    let task = task_id(&job_id).to_owned();

    assert_eq!(kling.poll(&job_id).await, Ok(JobState::Queued));
    fake.set_status(&task, "processing", "", Duration::from_secs(150));
    let Ok(JobState::Running { progress }) = kling.poll(&job_id).await else {
        panic!("not running");
    };
    assert!(
        (45..=60).contains(&progress),
        "half of the expected render: {progress}"
    );
    let video = b"\x00\x00\x00\x18ftypmp42 not really a video".repeat(1000);
    fake.succeed(&task, "result.mp4", Some(&video));
    assert_eq!(kling.poll(&job_id).await, Ok(JobState::Succeeded));
    let dir = tempfile::tempdir().expect("dir");
    let destination = dir.path().join("video.mp4");
    kling
        .fetch(&job_id, &destination)
        .await
        .expect("downloaded");

    assert_eq!(std::fs::read(&destination).expect("file"), video);
    let seen = fake.seen();
    let queries = seen
        .iter()
        .filter(|r| r.path == format!("/v1/videos/text2video/{task}"));
    assert_eq!(queries.count(), 4, "three polls and the fetch's query");
    let download = seen.last().expect("download");
    assert_eq!(
        (download.path.as_str(), download.token.as_deref()),
        ("/files/result.mp4", None)
    );
    let tokens: HashSet<_> = seen.iter().filter_map(|r| r.token.clone()).collect();
    assert_eq!(tokens.len(), 1, "one cached token for every call");
    fake.assert_no_problems();
}

#[tokio::test]
async fn image_to_video_sends_raw_base64_and_no_aspect_ratio() {
    let fake = Fake::start().await;
    let kling = fake.kling();
    let image = encoded(640, 360, image::ImageFormat::Jpeg);
    let job = image_job(image.clone(), "image/jpeg");

    let job_id = kling.submit(&job).await.expect("submitted");

    assert!(job_id.starts_with("image2video:"), "{job_id}");
    let seen = fake.seen();
    assert_eq!(seen[0].path, "/v1/videos/image2video");
    assert_eq!(seen[0].image.as_deref(), Some(image.as_slice()));
    let body = seen[0].body.clone().expect("json body");
    assert_eq!(body.get("aspect_ratio"), None);
    assert_eq!(
        (body["mode"].as_str(), body["duration"].as_str()),
        (Some("std"), Some("10"))
    );
    assert_eq!(kling.poll(&job_id).await, Ok(JobState::Queued));
    assert_eq!(
        fake.seen()[1].path,
        format!("/v1/videos/image2video/{}", task_id(&job_id))
    );
    fake.assert_no_problems();
}

#[tokio::test]
async fn images_kling_would_refuse_never_leave_the_adapter() {
    let fake = Fake::start().await;
    let kling = fake.kling();
    let mut huge = b"\x89PNG\r\n\x1a\n".to_vec();
    huge.resize(10 * 1024 * 1024 + 1, 0);
    let refused = [
        (
            "too small",
            encoded(200, 400, image::ImageFormat::Png),
            "image/png",
        ),
        (
            "webp",
            encoded(640, 360, image::ImageFormat::WebP),
            "image/jpeg",
        ),
        (
            "extreme aspect",
            encoded(1000, 300, image::ImageFormat::Jpeg),
            "image/jpeg",
        ),
        ("over 10 MB", huge, "image/png"),
    ];
    for (case, bytes, content_type) in refused {
        let failure = kling
            .submit(&image_job(bytes, content_type))
            .await
            .expect_err(case);
        assert_eq!(
            (failure.code.as_str(), failure.retryable, failure.charged),
            (codes::INVALID_REQUEST, false, false),
            "{case}"
        );
    }
    let long_prompt = Job {
        prompt: "a".repeat(2501),
        ..text_job()
    };
    let failure = kling.submit(&long_prompt).await.expect_err("too long");
    assert_eq!(failure.code, codes::INVALID_REQUEST);
    assert!(fake.seen().is_empty(), "nothing reached Kling");
}

#[tokio::test]
async fn moderation_is_final_and_not_charged() {
    let fake = Fake::start().await;
    let kling = fake.kling();
    fake.script(Scripted::Refuse {
        status: 400,
        code: 1301,
        message: "content security policy",
        retry_after: None,
    });
    let failure = kling.submit(&text_job()).await.expect_err("refused");
    assert_eq!(
        (failure.code.as_str(), failure.retryable, failure.charged),
        (codes::MODERATED, false, false)
    );

    let job_id = kling.submit(&text_job()).await.expect("submitted");
    fake.set_status(
        task_id(&job_id),
        "failed",
        "Failure to pass the risk control system",
        Duration::ZERO,
    );
    let Ok(JobState::Failed(failure)) = kling.poll(&job_id).await else {
        panic!("not failed");
    };
    assert_eq!(
        (failure.code.as_str(), failure.charged),
        (codes::MODERATED, false)
    );
    let job_id = kling.submit(&text_job()).await.expect("submitted");
    fake.set_status(
        task_id(&job_id),
        "failed",
        "internal render error",
        Duration::ZERO,
    );
    let Ok(JobState::Failed(failure)) = kling.poll(&job_id).await else {
        panic!("not failed");
    };
    assert_eq!(
        (failure.code.as_str(), failure.charged),
        (codes::GENERATION_FAILED, false)
    );
    fake.assert_no_problems();
}

#[tokio::test]
async fn rate_limits_back_off_for_as_long_as_kling_asks() {
    let fake = Fake::start().await;
    let kling = fake.kling();
    fake.script(Scripted::Refuse {
        status: 429,
        code: 1302,
        message: "too fast",
        retry_after: Some("7"),
    });
    let failure = kling.submit(&text_job()).await.expect_err("limited");
    assert_eq!(
        (failure.code.as_str(), failure.retryable),
        (codes::RATE_LIMITED, true)
    );
    assert_eq!(failure.retry_after, Some(Duration::from_secs(7)));

    fake.script(Scripted::Refuse {
        status: 429,
        code: 1303,
        message: "concurrency",
        retry_after: None,
    });
    let failure = kling.submit(&text_job()).await.expect_err("limited");
    assert_eq!(
        (failure.code.as_str(), failure.retryable),
        (codes::RATE_LIMITED, true)
    );
    assert!(failure.retry_after >= Some(Duration::from_secs(1)));

    fake.script(Scripted::Refuse {
        status: 429,
        code: 1102,
        message: "resource pack exhausted",
        retry_after: None,
    });
    let failure = kling.submit(&text_job()).await.expect_err("no credits");
    assert_eq!(
        (failure.code.as_str(), failure.retryable),
        (codes::QUOTA_EXHAUSTED, false)
    );
    fake.assert_no_problems();
}

#[tokio::test]
async fn a_server_error_is_retryable_after_checking_no_task_was_created() {
    let fake = Fake::start().await;
    let kling = fake.kling();
    let job = text_job();
    fake.script(Scripted::Refuse {
        status: 500,
        code: 5000,
        message: "internal error",
        retry_after: None,
    });

    let failure = kling.submit(&job).await.expect_err("unavailable");

    assert_eq!(
        (failure.code.as_str(), failure.retryable, failure.charged),
        (codes::UPSTREAM_UNAVAILABLE, true, false)
    );
    let paths: Vec<_> = fake.seen().into_iter().map(|r| r.path).collect();
    let lookup = format!("/v1/videos/text2video/{}", job.video_id);
    assert_eq!(paths, ["/v1/videos/text2video".to_owned(), lookup]);
    fake.assert_no_problems();
}

#[tokio::test]
async fn a_task_created_despite_a_server_error_is_followed_not_lost() {
    let fake = Fake::start().await;
    let kling = fake.kling();
    let job = text_job();
    fake.script(Scripted::AcceptThenFail);

    let job_id = kling.submit(&job).await.expect("recovered");

    let tasks = fake.with(|s| s.tasks.clone());
    assert_eq!(tasks.len(), 1);
    assert_eq!(job_id, format!("text2video:{}", tasks[0].task_id));
    fake.assert_no_problems();
}

#[tokio::test]
async fn submitting_a_video_twice_returns_the_first_task() {
    let fake = Fake::start().await;
    let kling = fake.kling();
    let job = text_job();
    let first = kling.submit(&job).await.expect("submitted");

    let second = kling.submit(&job).await.expect("found again");

    assert_eq!(second, first);
    assert_eq!(fake.with(|s| s.tasks.len()), 1);
    fake.assert_no_problems();
}

#[tokio::test]
async fn an_expired_token_is_replaced_and_the_call_retried_once() {
    let fake = Fake::start().await;
    let kling = fake.kling();
    let job_id = kling.submit(&text_job()).await.expect("submitted");
    // A token is minted per second at most: let the clock move so a new one differs.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    fake.expire_seen_tokens();

    assert_eq!(kling.poll(&job_id).await, Ok(JobState::Queued));

    let tokens: Vec<_> = fake
        .seen()
        .into_iter()
        .map(|r| r.token.expect("token"))
        .collect();
    assert_eq!(tokens.len(), 3, "submit, refused poll, retried poll");
    assert_eq!(tokens[1], tokens[0], "the cached token was tried first");
    assert_ne!(tokens[2], tokens[1], "the retry carried a new token");
    assert_eq!(kling.poll(&job_id).await, Ok(JobState::Queued));
    assert_eq!(
        fake.seen()[3].token.as_ref(),
        Some(&tokens[2]),
        "the new token is kept"
    );
    fake.assert_no_problems();
}

#[tokio::test]
async fn a_token_refused_twice_is_an_auth_failure() {
    let fake = Fake::start().await;
    let kling = fake.kling();
    fake.with(|s| s.every_token_expired = true);

    let failure = kling.poll("text2video:1").await.expect_err("refused");

    assert_eq!(
        (failure.code.as_str(), failure.retryable),
        (codes::AUTH_FAILED, false)
    );
    assert_eq!(fake.seen().len(), 2, "one retry, not more");
    fake.assert_no_problems();
}

#[tokio::test]
async fn a_submission_lost_in_a_crash_is_found_by_the_video_id() {
    let fake = Fake::start().await;
    let kling = fake.kling();
    let since = Utc::now();
    let text = text_job();
    let image = image_job(encoded(400, 400, image::ImageFormat::Png), "image/png");
    // The worker submits, then crashes before recording either job id.
    let text_id = kling.submit(&text).await.expect("submitted");
    let image_id = kling.submit(&image).await.expect("submitted");

    let restarted = fake.kling();
    assert_eq!(
        restarted.find(&text, since).await,
        Ok(Lookup::Found(text_id))
    );
    assert_eq!(
        restarted.find(&image, since).await,
        Ok(Lookup::Found(image_id))
    );

    let paths: Vec<_> = fake.seen().into_iter().skip(2).map(|r| r.path).collect();
    assert_eq!(
        paths,
        [
            format!("/v1/videos/text2video/{}", text.video_id),
            format!("/v1/videos/image2video/{}", image.video_id),
        ]
    );
    assert_eq!(fake.with(|s| s.tasks.len()), 2, "nothing submitted twice");
    fake.assert_no_problems();
}

#[tokio::test]
async fn a_video_kling_never_received_is_not_submitted() {
    let fake = Fake::start().await;
    let kling = fake.kling();

    assert_eq!(
        kling.find(&text_job(), Utc::now()).await,
        Ok(Lookup::NotSubmitted)
    );
    fake.assert_no_problems();
}

#[tokio::test]
async fn an_unclear_lookup_is_never_taken_for_not_submitted() {
    let fake = Fake::start().await;
    let kling = fake.kling();
    let job = text_job();
    fake.script(Scripted::Refuse {
        status: 503,
        code: 5001,
        message: "maintenance",
        retry_after: Some("30"),
    });
    let failure = kling.find(&job, Utc::now()).await.expect_err("unclear");
    assert_eq!(
        (failure.code.as_str(), failure.retryable),
        (codes::UPSTREAM_UNAVAILABLE, true)
    );
    assert_eq!(failure.retry_after, Some(Duration::from_secs(30)));

    fake.script(Scripted::BareNotFound);
    let failure = kling
        .find(&job, Utc::now())
        .await
        .expect_err("not Kling's answer");
    assert_eq!(failure.code, codes::NOT_FOUND);
    fake.assert_no_problems();
}

#[tokio::test]
async fn an_expired_result_is_final() {
    let fake = Fake::start().await;
    let kling = fake.kling();
    let job_id = kling.submit(&text_job()).await.expect("submitted");
    fake.succeed(task_id(&job_id), "gone.mp4", None);
    let dir = tempfile::tempdir().expect("dir");
    let destination = dir.path().join("video.mp4");

    let failure = kling
        .fetch(&job_id, &destination)
        .await
        .expect_err("expired");

    assert_eq!(
        (failure.code.as_str(), failure.retryable, failure.charged),
        (codes::RESULT_EXPIRED, false, false)
    );
    assert!(!destination.exists());
    fake.assert_no_problems();
}

#[tokio::test]
async fn cancelling_asks_nothing_of_kling() {
    let fake = Fake::start().await;
    let kling = fake.kling();

    assert_eq!(
        kling.cancel("text2video:1").await,
        Ok(Cancellation::Unsupported)
    );
    assert!(fake.seen().is_empty());
}

#[tokio::test]
async fn calls_made_in_a_traced_span_send_its_trace_context() {
    use framegate_commands::trace_context::{continued, TraceContext};
    use opentelemetry::trace::TracerProvider as _;
    use tracing::instrument::WithSubscriber as _;
    use tracing::Instrument as _;
    use tracing_subscriber::layer::SubscriberExt as _;

    let fake = Fake::start().await;
    let kling = fake.kling();
    let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder().build();
    let dispatch = tracing::Dispatch::new(
        tracing_subscriber::registry()
            .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("test"))),
    );
    let parent = TraceContext::parse(
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        None,
    )
    .expect("valid");
    let span = tracing::dispatcher::with_default(&dispatch, || {
        continued(tracing::info_span!("provider.submit"), Some(&parent))
    });
    kling
        .submit(&text_job())
        .instrument(span)
        .with_subscriber(dispatch.clone())
        .await
        .expect("submitted");
    // Outside any trace: no header at all.
    kling.submit(&text_job()).await.expect("submitted");

    let seen = fake.seen();
    let sent = seen[0].traceparent.as_deref().expect("a traceparent");
    let sent = TraceContext::parse(sent, None).expect("well-formed");
    assert_eq!(sent.trace_id(), parent.trace_id());
    // The call's span, not the caller's: the provider's spans hang below ours.
    assert_ne!(sent.span_id(), parent.span_id());
    assert_eq!(seen[1].traceparent, None);
}
