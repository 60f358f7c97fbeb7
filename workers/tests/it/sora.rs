//! The Sora adapter against a local fake of the Videos API: what it sends (checked by the
//! fake and against the official spec), how it reads progress, results and every kind of
//! failure, and how it finds a submission lost in a crash.

#[path = "sora/fake.rs"]
mod fake;
#[path = "sora/spec.rs"]
mod spec;

use std::collections::BTreeSet;
use std::io::Cursor;
use std::time::Duration;

use bytes::Bytes;
use chrono::Utc;
use framegate_domain::{ProviderKind, VideoId};
use framegate_workers::provider::{codes, Job, JobImage, JobState, Lookup, VideoProvider};
use framegate_workers::providers::sora::{Sora, SoraConfig};
use image::{ImageFormat, Rgb, RgbImage};
use serde_json::json;
use uuid::Uuid;

use fake::{Canned, FakeSora, Sent, Stage, Video, EXPIRED_KEY, KEY, POLL_AFTER_MS};
use spec::Spec;

const SIZES: [(&str, &str, &str); 4] = [
    ("16:9", "720p", "1280x720"),
    ("9:16", "720p", "720x1280"),
    ("16:9", "1080p", "1792x1024"),
    ("9:16", "1080p", "1024x1792"),
];

fn job(aspect_ratio: &str, resolution: &str, seconds: u32) -> Job {
    let model = if resolution == "1080p" {
        "sora-2-pro"
    } else {
        "sora-2"
    };
    Job {
        video_id: VideoId::from_uuid(Uuid::now_v7()),
        model: model.into(),
        prompt: "A calico cat playing a piano on stage".into(),
        negative_prompt: None,
        duration_seconds: seconds,
        aspect_ratio: aspect_ratio.into(),
        resolution: resolution.into(),
        seed: None,
        image: None,
    }
}

/// A 400x200 image in three vertical bands, red | green | blue: a centered crop to 9:16
/// keeps the middle 112 columns, all green.
fn banded_image(format: ImageFormat) -> JobImage {
    encoded(
        &RgbImage::from_fn(400, 200, |x, _| match x {
            0..120 => Rgb([255, 0, 0]),
            120..280 => Rgb([0, 255, 0]),
            _ => Rgb([0, 0, 255]),
        }),
        format,
    )
}

/// A plain image already of the output size, which the adapter sends as it is.
fn exact_image(size: &str, format: ImageFormat) -> JobImage {
    let (width, height) = size.split_once('x').expect("WxH");
    let (width, height) = (
        width.parse().expect("width"),
        height.parse().expect("height"),
    );
    encoded(
        &RgbImage::from_pixel(width, height, Rgb([40, 90, 160])),
        format,
    )
}

fn encoded(image: &RgbImage, format: ImageFormat) -> JobImage {
    let mut bytes = Vec::new();
    image
        .write_to(&mut Cursor::new(&mut bytes), format)
        .expect("encode");
    let content_type = match format {
        ImageFormat::Png => "image/png",
        _ => "image/jpeg",
    };
    JobImage {
        bytes: Bytes::from(bytes),
        content_type: content_type.into(),
    }
}

async fn rig() -> (FakeSora, Sora) {
    let fake = FakeSora::start().await;
    let sora = Sora::new(fake.config());
    (fake, sora)
}

#[tokio::test]
async fn every_request_the_adapter_sends_validates_against_the_official_spec() {
    let (fake, sora) = rig().await;
    let since = Utc::now();
    let mut last = String::new();
    for (aspect, resolution, size) in SIZES {
        // Exact sizes skip the (slow, separately tested) resize: the request shape is the same.
        let jpeg = exact_image(size, ImageFormat::Jpeg);
        let png = exact_image(size, ImageFormat::Png);
        for seconds in [4, 8, 12] {
            for image in [None, Some(&jpeg), Some(&png)] {
                let mut job = job(aspect, resolution, seconds);
                job.negative_prompt = Some("blurry hands".into());
                job.image = image.cloned();
                last = sora.submit(&job).await.expect("submit");
            }
        }
    }
    // More than a page of newer videos: `find` has to follow `after`.
    let now = Utc::now().timestamp();
    for i in 0..120 {
        fake.add_video(Video::existing(
            &format!("video_newer_{i:03}"),
            now + 10,
            "other",
        ));
    }
    let mut lost = job("9:16", "1080p", 12);
    lost.negative_prompt = Some("blurry hands".into());
    assert_eq!(
        sora.find(&lost, since).await,
        Ok(Lookup::Found(last.clone()))
    );
    while sora.poll(&last).await.expect("poll") != JobState::Succeeded {}
    let dir = tempfile::tempdir().expect("dir");
    sora.fetch(&last, &dir.path().join("v.mp4"))
        .await
        .expect("video");
    sora.fetch_thumbnail(&last, &dir.path().join("t.webp"))
        .await
        .expect("thumbnail");
    sora.cancel(&last).await.expect("delete");

    let spec = Spec::load();
    let mut shapes = BTreeSet::new();
    for request in fake.requests() {
        assert_eq!(
            request.authorization.as_deref(),
            Some(&*format!("Bearer {KEY}"))
        );
        assert_eq!(request.status, 200, "the fake refused {request:?}");
        let operation = spec.check(&request).unwrap_or_else(|problems| {
            panic!("{} {}: {problems:#?}", request.method, request.path)
        });
        let answer_problems = spec.check_answer(&request, &operation);
        assert!(
            answer_problems.is_empty(),
            "the fake's answer: {answer_problems:#?}"
        );
        let detail = match &request.body {
            Sent::Multipart(_) => format!(
                "size={} seconds={} reference={}",
                request.text("size").unwrap_or_default(),
                request.text("seconds").unwrap_or_default(),
                request
                    .part("input_reference")
                    .and_then(|p| p.content_type.clone())
                    .unwrap_or_else(|| "none".into()),
            ),
            _ => {
                let mut names: Vec<_> = request
                    .query
                    .iter()
                    .map(|(n, v)| match n.as_str() {
                        "after" => "after".to_owned(),
                        _ => format!("{n}={v}"),
                    })
                    .collect();
                names.sort();
                names.join("&")
            }
        };
        shapes.insert(format!("{} {detail}", operation.id));
    }
    let mut expected = BTreeSet::new();
    for (_, _, size) in SIZES {
        for seconds in ["4", "8", "12"] {
            for reference in ["none", "image/jpeg", "image/png"] {
                expected.insert(format!(
                    "createVideo size={size} seconds={seconds} reference={reference}"
                ));
            }
        }
    }
    expected.insert("ListVideos limit=100&order=desc".into());
    expected.insert("ListVideos after&limit=100&order=desc".into());
    expected.insert("GetVideo ".into());
    expected.insert("RetrieveVideoContent variant=video".into());
    expected.insert("RetrieveVideoContent variant=thumbnail".into());
    expected.insert("DeleteVideo ".into());
    assert_eq!(shapes, expected);
}

#[tokio::test]
async fn the_spec_check_rejects_what_the_spec_forbids() {
    let (fake, sora) = rig().await;
    sora.submit(&job("16:9", "720p", 8)).await.expect("submit");
    let good = fake.requests().remove(0);
    let spec = Spec::load();
    assert!(spec.check(&good).is_ok());
    let with_field = |name: &str, value: &str| {
        let mut request = good.clone();
        let Sent::Multipart(parts) = &mut request.body else {
            panic!("multipart expected");
        };
        parts.retain(|p| p.name != name);
        parts.push(fake::FormPart {
            name: name.into(),
            file_name: None,
            content_type: None,
            bytes: Bytes::from(value.to_owned()),
        });
        request
    };
    let mut bad = vec![
        ("seconds 6", with_field("seconds", "6")),
        ("an unknown size", with_field("size", "1920x1080")),
        ("a field the spec lacks", with_field("seed", "7")),
        ("an empty prompt", with_field("prompt", "")),
    ];
    let mut no_prompt = good.clone();
    if let Sent::Multipart(parts) = &mut no_prompt.body {
        parts.retain(|p| p.name != "prompt");
    }
    bad.push(("no prompt", no_prompt));
    let mut json_seconds = good.clone();
    json_seconds.content_type = Some("application/json".into());
    json_seconds.body = Sent::Json(json!({"prompt": "x", "seconds": 8}));
    bad.push(("seconds as a number", json_seconds));
    let mut wrong_path = good.clone();
    wrong_path.path = "/v1/video".into();
    bad.push(("an unknown path", wrong_path));
    let mut wrong_method = good.clone();
    wrong_method.method = "PUT".into();
    bad.push(("an unknown method", wrong_method));
    let list = |query: &[(&str, &str)]| {
        let mut request = good.clone();
        request.method = "GET".into();
        request.content_type = None;
        request.body = Sent::Empty;
        request.query = query
            .iter()
            .map(|(n, v)| ((*n).into(), (*v).into()))
            .collect();
        request
    };
    assert!(spec
        .check(&list(&[("limit", "100"), ("order", "desc")]))
        .is_ok());
    bad.push(("order=newest", list(&[("order", "newest")])));
    bad.push(("limit=500", list(&[("limit", "500")])));
    bad.push(("an undeclared query parameter", list(&[("since", "1")])));
    for (what, request) in bad {
        assert!(
            spec.check(&request).is_err(),
            "{what} passed the spec check"
        );
    }
}

#[tokio::test]
async fn a_text_job_is_sent_as_a_form_of_strings_with_the_key() {
    let (fake, sora) = rig().await;
    assert_eq!(sora.kind(), ProviderKind::Sora);
    let id = sora.submit(&job("16:9", "720p", 8)).await.expect("submit");
    assert_eq!(fake.videos()[0].id, id);
    let request = fake.requests().remove(0);
    assert_eq!(
        (request.method.as_str(), request.path.as_str()),
        ("POST", "/v1/videos")
    );
    assert_eq!(
        request.authorization.as_deref(),
        Some("Bearer sk-test-sora")
    );
    let Sent::Multipart(parts) = &request.body else {
        panic!("expected multipart, got {:?}", request.body);
    };
    let names: Vec<&str> = parts.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, ["prompt", "model", "seconds", "size"]);
    assert!(parts.iter().all(|p| p.file_name.is_none()));
    assert_eq!(
        request.text("prompt").as_deref(),
        Some("A calico cat playing a piano on stage")
    );
    assert_eq!(request.text("model").as_deref(), Some("sora-2"));
    assert_eq!(request.text("seconds").as_deref(), Some("8"));
    assert_eq!(request.text("size").as_deref(), Some("1280x720"));
}

#[tokio::test]
async fn the_negative_prompt_joins_the_prompt_and_the_seed_is_not_sent() {
    let (fake, sora) = rig().await;
    let mut job = job("9:16", "1080p", 12);
    job.negative_prompt = Some("  text overlays ".into());
    job.seed = Some(42);
    sora.submit(&job).await.expect("submit");
    let request = fake.requests().remove(0);
    assert_eq!(
        request.text("prompt").as_deref(),
        Some("A calico cat playing a piano on stage\n\nAvoid: text overlays")
    );
    assert_eq!(request.text("size").as_deref(), Some("1024x1792"));
    assert_eq!(request.text("model").as_deref(), Some("sora-2-pro"));
    assert!(request.part("seed").is_none() && request.part("negative_prompt").is_none());
}

#[tokio::test]
async fn a_start_image_is_scaled_and_center_cropped_to_the_requested_size() {
    for (format, content_type, extension) in [
        (ImageFormat::Jpeg, "image/jpeg", ".jpg"),
        (ImageFormat::Png, "image/png", ".png"),
    ] {
        let (fake, sora) = rig().await;
        let mut job = job("9:16", "720p", 4);
        job.image = Some(banded_image(format));
        sora.submit(&job).await.expect("submit");
        let request = fake.requests().remove(0);
        let part = request.part("input_reference").expect("input_reference");
        assert_eq!(part.content_type.as_deref(), Some(content_type));
        assert!(part
            .file_name
            .as_deref()
            .is_some_and(|n| n.ends_with(extension)));
        let sent = image::load_from_memory_with_format(&part.bytes, format)
            .expect("same format")
            .to_rgb8();
        assert_eq!(sent.dimensions(), (720, 1280));
        // Only the green middle band survives a centered crop of a landscape image.
        for (x, y) in [(0, 0), (719, 0), (0, 1279), (719, 1279), (360, 640)] {
            let Rgb([r, g, b]) = *sent.get_pixel(x, y);
            assert!(
                g > 200 && r < 60 && b < 60,
                "{content_type} pixel {x},{y} is {r},{g},{b}"
            );
        }
    }
}

#[tokio::test]
async fn what_sora_cannot_render_is_refused_before_anything_is_sent() {
    let (fake, sora) = rig().await;
    let mut gif = job("16:9", "720p", 4);
    gif.image = Some(JobImage {
        bytes: Bytes::from_static(b"GIF89a"),
        content_type: "image/gif".into(),
    });
    let mut long_prompt = job("16:9", "720p", 4);
    long_prompt.prompt = "a".repeat(32_001);
    for job in [
        job("1:1", "720p", 4),
        job("16:9", "4k", 8),
        job("16:9", "480p", 8),
        job("16:9", "720p", 5),
        gif,
        long_prompt,
    ] {
        let failure = sora.submit(&job).await.expect_err("refused");
        assert_eq!(failure.code, codes::INVALID_REQUEST, "{job:?}");
        assert!(!failure.retryable && !failure.charged);
    }
    assert!(fake.requests().is_empty());
}

#[tokio::test]
async fn polling_reports_progress_and_the_poll_after_hint() {
    let (fake, sora) = rig().await;
    let id = sora.submit(&job("16:9", "720p", 4)).await.expect("submit");
    assert_eq!(sora.poll_after(&id), None);
    let hint = Some(Duration::from_millis(POLL_AFTER_MS));
    assert_eq!(sora.poll(&id).await, Ok(JobState::Queued));
    assert_eq!(sora.poll_after(&id), hint);
    assert_eq!(sora.poll(&id).await, Ok(JobState::Running { progress: 35 }));
    assert_eq!(sora.poll(&id).await, Ok(JobState::Running { progress: 80 }));
    assert_eq!(sora.poll_after(&id), hint);
    assert_eq!(sora.poll(&id).await, Ok(JobState::Succeeded));
    assert_eq!(sora.poll_after(&id), None);
    let polls = fake
        .requests()
        .into_iter()
        .filter(|r| r.method == "GET")
        .count();
    assert_eq!(polls, 4);
}

#[tokio::test]
async fn a_video_refused_by_moderation_fails_for_good_uncharged() {
    let (fake, sora) = rig().await;
    fake.script_next_video(vec![Stage::Failed {
        code: "moderation_blocked",
        message: "Your request was blocked by our moderation system.",
    }]);
    let id = sora.submit(&job("16:9", "720p", 4)).await.expect("submit");
    let Ok(JobState::Failed(failure)) = sora.poll(&id).await else {
        panic!("expected a failed job");
    };
    assert_eq!(failure.code, codes::MODERATED);
    assert!(!failure.retryable && !failure.charged);
    assert!(failure.message.contains("moderation system"));
}

#[tokio::test]
async fn a_failed_generation_is_final_and_uncharged() {
    let (fake, sora) = rig().await;
    fake.script_next_video(vec![
        Stage::Running(10),
        Stage::Failed {
            code: "internal_error",
            message: "Video generation failed.",
        },
    ]);
    let id = sora.submit(&job("16:9", "720p", 4)).await.expect("submit");
    assert_eq!(sora.poll(&id).await, Ok(JobState::Running { progress: 10 }));
    let Ok(JobState::Failed(failure)) = sora.poll(&id).await else {
        panic!("expected a failed job");
    };
    assert_eq!(
        (failure.code.as_str(), failure.retryable, failure.charged),
        (codes::GENERATION_FAILED, false, false)
    );
}

#[tokio::test]
async fn a_prompt_refused_at_submission_is_moderated() {
    let (fake, sora) = rig().await;
    fake.respond_next(Canned::error(
        400,
        "invalid_request_error",
        Some("moderation_blocked"),
        "Your request was blocked by our moderation system.",
    ));
    let failure = sora
        .submit(&job("16:9", "720p", 4))
        .await
        .expect_err("refused");
    assert_eq!(
        (failure.code.as_str(), failure.retryable, failure.charged),
        (codes::MODERATED, false, false)
    );
}

#[tokio::test]
async fn a_bad_request_is_invalid_and_final() {
    let (fake, sora) = rig().await;
    fake.respond_next(Canned::error(
        400,
        "invalid_request_error",
        None,
        "Invalid size.",
    ));
    let failure = sora
        .submit(&job("16:9", "720p", 4))
        .await
        .expect_err("refused");
    assert_eq!(
        (failure.code.as_str(), failure.retryable),
        (codes::INVALID_REQUEST, false)
    );
    assert!(failure.message.contains("Invalid size."));
}

#[tokio::test]
async fn rate_limiting_is_retryable_after_the_advertised_delay() {
    let (fake, sora) = rig().await;
    fake.respond_next(
        Canned::error(
            429,
            "requests",
            Some("rate_limit_exceeded"),
            "Rate limit reached.",
        )
        .header("retry-after", "7"),
    );
    let failure = sora
        .submit(&job("16:9", "720p", 4))
        .await
        .expect_err("limited");
    assert_eq!(failure.code, codes::RATE_LIMITED);
    assert!(failure.retryable && !failure.charged);
    assert_eq!(failure.retry_after, Some(Duration::from_secs(7)));
}

#[tokio::test]
async fn an_exhausted_quota_is_final() {
    let (fake, sora) = rig().await;
    fake.respond_next(Canned::error(
        429,
        "insufficient_quota",
        Some("insufficient_quota"),
        "You exceeded your current quota, please check your plan and billing details.",
    ));
    let failure = sora
        .submit(&job("16:9", "720p", 4))
        .await
        .expect_err("no quota");
    assert_eq!(
        (failure.code.as_str(), failure.retryable, failure.charged),
        (codes::QUOTA_EXHAUSTED, false, false)
    );
}

#[tokio::test]
async fn server_errors_are_retryable() {
    let (fake, sora) = rig().await;
    let id = sora.submit(&job("16:9", "720p", 4)).await.expect("submit");
    for status in [500, 502, 503] {
        fake.respond_next(Canned::error(
            status,
            "server_error",
            None,
            "The server had an error.",
        ));
        let failure = sora.poll(&id).await.expect_err("server error");
        assert_eq!(
            (failure.code.as_str(), failure.retryable),
            (codes::UPSTREAM_UNAVAILABLE, true)
        );
    }
    fake.respond_next(Canned::error(504, "server_error", None, "Gateway timeout."));
    let failure = sora.poll(&id).await.expect_err("gateway timeout");
    assert_eq!(
        (failure.code.as_str(), failure.retryable),
        (codes::UPSTREAM_TIMEOUT, true)
    );
}

#[tokio::test]
async fn an_expired_key_fails_authentication_for_good() {
    let fake = FakeSora::start().await;
    let sora = Sora::new(fake.config_with_key(EXPIRED_KEY));
    let failure = sora
        .submit(&job("16:9", "720p", 4))
        .await
        .expect_err("expired");
    assert_eq!(
        (failure.code.as_str(), failure.retryable, failure.charged),
        (codes::AUTH_FAILED, false, false)
    );
    assert!(failure.message.contains("expired"));
    assert!(!failure.message.contains(EXPIRED_KEY));
}

#[tokio::test]
async fn a_slow_upstream_times_out_retryably() {
    let fake = FakeSora::start().await;
    let sora = Sora::new(fake.config().with_timeout(Duration::from_millis(200)));
    fake.respond_next(
        Canned::error(500, "server_error", None, "late").delayed(Duration::from_secs(3)),
    );
    let failure = sora.poll("video_123").await.expect_err("timed out");
    assert_eq!(
        (failure.code.as_str(), failure.retryable),
        (codes::UPSTREAM_TIMEOUT, true)
    );
}

#[tokio::test]
async fn the_finished_video_and_its_thumbnail_are_downloaded() {
    let (_fake, sora) = rig().await;
    let id = sora.submit(&job("16:9", "720p", 4)).await.expect("submit");
    while sora.poll(&id).await.expect("poll") != JobState::Succeeded {}
    let dir = tempfile::tempdir().expect("dir");
    let video = dir.path().join("video.mp4");
    sora.fetch(&id, &video).await.expect("fetch");
    assert_eq!(
        std::fs::read(&video).expect("video"),
        fake::video_bytes(&id)
    );
    let thumbnail = dir.path().join("thumbnail.webp");
    sora.fetch_thumbnail(&id, &thumbnail)
        .await
        .expect("thumbnail");
    assert_eq!(
        std::fs::read(&thumbnail).expect("thumbnail"),
        fake::thumbnail_bytes(&id)
    );
}

#[tokio::test]
async fn an_expired_or_deleted_result_is_final() {
    let (fake, sora) = rig().await;
    let id = sora.submit(&job("16:9", "720p", 4)).await.expect("submit");
    while sora.poll(&id).await.expect("poll") != JobState::Succeeded {}
    fake.expire(&id);
    let dir = tempfile::tempdir().expect("dir");
    let video = dir.path().join("video.mp4");
    for job_id in [id.as_str(), "video_gone"] {
        let failure = sora.fetch(job_id, &video).await.expect_err("expired");
        assert_eq!(
            (failure.code.as_str(), failure.retryable, failure.charged),
            (codes::RESULT_EXPIRED, false, false)
        );
        assert!(!video.exists());
    }
}

#[tokio::test]
async fn a_submission_lost_in_a_crash_is_found_again() {
    let fake = FakeSora::start().await;
    let since = Utc::now();
    let job = job("9:16", "720p", 8);
    let submitted = Sora::new(fake.config()).submit(&job).await.expect("submit");
    // The worker died before recording the id; a new one asks instead of submitting again.
    let now = Utc::now().timestamp();
    for i in 0..150 {
        fake.add_video(Video::existing(
            &format!("video_later_{i:03}"),
            now + 1,
            "something else",
        ));
    }
    let restarted = Sora::new(fake.config());
    assert_eq!(
        restarted.find(&job, since).await,
        Ok(Lookup::Found(submitted))
    );
    let lists: Vec<_> = fake
        .requests()
        .into_iter()
        .filter(|r| r.method == "GET")
        .collect();
    assert_eq!(lists.len(), 2, "the match is on the second page");
    assert!(lists[1]
        .query
        .iter()
        .any(|(name, value)| name == "after" && value == "video_later_050"));

    let mut other = job.clone();
    other.prompt = "A different prompt".into();
    assert_eq!(
        restarted.find(&other, since).await,
        Ok(Lookup::NotSubmitted)
    );
    let mut longer = job.clone();
    longer.duration_seconds = 12;
    assert_eq!(
        restarted.find(&longer, since).await,
        Ok(Lookup::NotSubmitted)
    );
}

#[tokio::test]
async fn an_identical_video_from_before_the_request_is_not_taken_for_it() {
    let (fake, sora) = rig().await;
    let since = Utc::now();
    let mut old = Video::existing("video_old", since.timestamp() - 3600, "");
    let job = job("16:9", "720p", 8);
    old.prompt = job.prompt.clone();
    fake.add_video(old);
    assert_eq!(sora.find(&job, since).await, Ok(Lookup::NotSubmitted));
    assert_eq!(
        sora.find(&job, since - chrono::Duration::hours(2)).await,
        Ok(Lookup::Found("video_old".into()))
    );
}

#[tokio::test]
async fn a_failing_listing_is_reported_not_guessed() {
    let (fake, sora) = rig().await;
    fake.respond_next(Canned::error(
        503,
        "server_error",
        None,
        "Service unavailable.",
    ));
    let failure = sora
        .find(&job("16:9", "720p", 4), Utc::now())
        .await
        .expect_err("failed");
    assert_eq!(
        (failure.code.as_str(), failure.retryable),
        (codes::UPSTREAM_UNAVAILABLE, true)
    );
}

#[tokio::test]
async fn cancelling_deletes_the_video_and_tolerates_it_being_gone() {
    let (fake, sora) = rig().await;
    let id = sora.submit(&job("16:9", "720p", 4)).await.expect("submit");
    sora.cancel(&id).await.expect("delete");
    assert!(fake.videos().is_empty());
    sora.cancel(&id).await.expect("already gone");
    let deletes: Vec<_> = fake
        .requests()
        .into_iter()
        .filter(|r| r.method == "DELETE")
        .collect();
    assert_eq!(deletes.len(), 2);
    assert_eq!(deletes[0].path, format!("/v1/videos/{id}"));
}

#[test]
fn configuration_comes_from_the_environment() {
    let lookup = |pairs: &'static [(&'static str, &'static str)]| {
        move |name: &str| {
            pairs
                .iter()
                .find(|(n, _)| *n == name)
                .map(|(_, v)| (*v).to_owned())
        }
    };
    assert!(SoraConfig::from_lookup(lookup(&[])).expect("ok").is_none());
    assert!(
        SoraConfig::from_lookup(lookup(&[("FRAMEGATE_SORA_API_KEY", " ")]))
            .expect("ok")
            .is_none()
    );
    let config = SoraConfig::from_lookup(lookup(&[("FRAMEGATE_SORA_API_KEY", "sk-secret")]))
        .expect("ok")
        .expect("enabled");
    assert_eq!(config.base_url().as_str(), "https://api.openai.com/v1");
    assert!(!format!("{config:?}").contains("sk-secret"));
    let gateway = SoraConfig::from_lookup(lookup(&[
        ("FRAMEGATE_SORA_API_KEY", "sk-secret"),
        (
            "FRAMEGATE_SORA_BASE_URL",
            "https://gateway.example/openai/v1/",
        ),
        ("FRAMEGATE_SORA_TIMEOUT_SECS", "30"),
    ]))
    .expect("ok")
    .expect("enabled");
    assert_eq!(
        gateway.base_url().as_str(),
        "https://gateway.example/openai/v1"
    );
    for bad in [
        &[
            ("FRAMEGATE_SORA_API_KEY", "k"),
            ("FRAMEGATE_SORA_BASE_URL", "not a url"),
        ][..],
        &[
            ("FRAMEGATE_SORA_API_KEY", "k"),
            ("FRAMEGATE_SORA_BASE_URL", "ftp://x/v1"),
        ][..],
        &[
            ("FRAMEGATE_SORA_API_KEY", "k"),
            ("FRAMEGATE_SORA_TIMEOUT_SECS", "soon"),
        ][..],
    ] {
        assert!(SoraConfig::from_lookup(lookup(bad)).is_err(), "{bad:?}");
    }
}
