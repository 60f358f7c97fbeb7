//! `GET /openai/v1/videos/{id}/content` answers as OpenAI's spec does: 200 with the file's
//! bytes (not a redirect), its type and length, streamed from the blob store, on the
//! filesystem store and on S3 (moto, as `scripts/services.sh` starts it), with one `Range`
//! served as a 206 for a browser's `<video>`.

use crate::common::TestApp;

use axum::body::Bytes;
use framegate_commands::blobs::{video_keys, Blobs, S3Config, S3Store};
use framegate_commands::{Actor, CommandMetadata};
use framegate_domain::{Credits, ProviderKind, VideoCommand, VideoId};
use reqwest::StatusCode;
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::{Duration, Instant};
use uuid::Uuid;

/// Different bytes at every offset, so a wrong range cannot pass for the right one.
fn pattern(len: usize, seed: u32) -> Vec<u8> {
    (0..len as u32)
        .map(|i| (i.wrapping_mul(2_654_435_761).wrapping_add(seed) >> 13) as u8)
        .collect()
}

async fn s3_blobs() -> Blobs {
    let endpoint = std::env::var("FRAMEGATE_TEST_S3_ENDPOINT")
        .ok()
        .filter(|endpoint| !endpoint.is_empty())
        .unwrap_or_else(|| "http://127.0.0.1:9000".to_owned());
    let bucket = format!("framegate-test-{}", Uuid::new_v4().simple());
    let config = S3Config::new(bucket, "us-east-1", Some(endpoint.clone()))
        .with_static_credentials("test", "test");
    let store = S3Store::new(&config).await.expect("S3 client");
    if let Err(error) = store.ensure_bucket().await {
        panic!("no S3 test server at {endpoint} ({error}): start it with scripts/services.sh");
    }
    Arc::new(store)
}

async fn video_command(app: &TestApp, video: VideoId, command: VideoCommand) {
    app.state
        .store
        .videos()
        .execute(
            &video.to_string(),
            command,
            &CommandMetadata::new_request(Actor::System),
        )
        .await
        .expect("video command");
}

/// A video requested through the door and completed as a worker completes it, with its MP4
/// and thumbnail in the app's store; its OpenAI id and the two files.
async fn completed_video(app: &TestApp, token: &str) -> (String, Vec<u8>, Vec<u8>) {
    let request = json!({"prompt": "a lighthouse", "model": "simulator-v1", "seconds": "6", "size": "1280x720"});
    let created: Value = app
        .post("/openai/v1/videos", Some(token), request)
        .await
        .json()
        .await
        .expect("json");
    let id = created["id"].as_str().expect("id").to_owned();
    let uuid: Uuid = id
        .strip_prefix("video_")
        .expect("prefix")
        .parse()
        .expect("uuid");
    let video = VideoId::from_uuid(uuid);

    let keys = video_keys(video).expect("keys");
    let mp4 = pattern(200_003, 7);
    let jpeg = pattern(5_000, 11);
    let blobs = &app.state.blobs;
    blobs
        .put(&keys.video, Bytes::from(mp4.clone()), "video/mp4")
        .await
        .expect("put mp4");
    blobs
        .put(&keys.thumbnail, Bytes::from(jpeg.clone()), "image/jpeg")
        .await
        .expect("put thumbnail");

    let start = VideoCommand::StartSubmission {
        attempt: 1,
        provider: ProviderKind::Simulator,
        model: "simulator-v1".into(),
    };
    video_command(app, video, start).await;
    let submitted = VideoCommand::MarkSubmitted {
        provider_job_id: format!("job-{video}"),
    };
    video_command(app, video, submitted).await;
    let delivered = VideoCommand::Deliver {
        blob_key: keys.video.to_string(),
        bytes: mp4.len() as u64,
        sha256: "ab".repeat(32),
        duration_ms: 6000,
        width: 1280,
        height: 720,
        final_cost: Credits::new(6),
    };
    video_command(app, video, delivered).await;

    // The read model follows the events asynchronously.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let shown: Value = app
            .get(&format!("/openai/v1/videos/{id}"), Some(token))
            .await
            .json()
            .await
            .expect("json");
        if shown["status"] == "completed" {
            break;
        }
        assert!(Instant::now() < deadline, "never completed: {shown}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    (id, mp4, jpeg)
}

async fn get_content(
    app: &TestApp,
    token: &str,
    id: &str,
    query: &str,
    range: Option<&str>,
) -> reqwest::Response {
    let mut request = app
        .client
        .get(app.url(&format!("/openai/v1/videos/{id}/content{query}")))
        .bearer_auth(token);
    if let Some(range) = range {
        request = request.header("range", range);
    }
    request.send().await.expect("request")
}

fn header<'r>(response: &'r reqwest::Response, name: &str) -> Option<&'r str> {
    response
        .headers()
        .get(name)
        .map(|value| value.to_str().expect("ascii header"))
}

async fn the_door_serves_the_stored_files(app: TestApp) {
    let (_, token, _) = app.signed_in_user("content@example.com").await;
    let (id, mp4, jpeg) = completed_video(&app, &token).await;

    let video = get_content(&app, &token, &id, "", None).await;
    assert_eq!(video.status(), StatusCode::OK);
    assert_eq!(header(&video, "content-type"), Some("video/mp4"));
    assert_eq!(header(&video, "content-length"), Some("200003"));
    assert_eq!(header(&video, "accept-ranges"), Some("bytes"));
    assert_eq!(video.bytes().await.expect("body"), mp4);

    let thumbnail = get_content(&app, &token, &id, "?variant=thumbnail", None).await;
    assert_eq!(thumbnail.status(), StatusCode::OK);
    assert_eq!(header(&thumbnail, "content-type"), Some("image/jpeg"));
    assert_eq!(header(&thumbnail, "content-length"), Some("5000"));
    assert_eq!(thumbnail.bytes().await.expect("body"), jpeg);

    let part = get_content(&app, &token, &id, "?variant=video", Some("bytes=1000-1999")).await;
    assert_eq!(part.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(
        header(&part, "content-range"),
        Some("bytes 1000-1999/200003")
    );
    assert_eq!(header(&part, "content-length"), Some("1000"));
    assert_eq!(part.bytes().await.expect("body"), &mp4[1000..2000]);

    let tail = get_content(&app, &token, &id, "", Some("bytes=200000-")).await;
    assert_eq!(tail.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(tail.bytes().await.expect("body"), &mp4[200_000..]);

    // A suffix range is not served: the whole file is, as HTTP allows.
    let suffix = get_content(&app, &token, &id, "", Some("bytes=-10")).await;
    assert_eq!(suffix.status(), StatusCode::OK);
    assert_eq!(suffix.bytes().await.expect("body").len(), mp4.len());

    let past = get_content(&app, &token, &id, "", Some("bytes=200003-")).await;
    assert_eq!(past.status(), StatusCode::RANGE_NOT_SATISFIABLE);
    assert_eq!(header(&past, "content-range"), Some("bytes */200003"));
    let body: Value = past.json().await.expect("json");
    assert_eq!(body["error"]["code"], "range_not_satisfiable", "{body}");

    // Someone else's video is not there at all.
    let (_, other, _) = app.signed_in_user("other@example.com").await;
    let foreign = get_content(&app, &other, &id, "", None).await;
    assert_eq!(foreign.status(), StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn content_is_streamed_with_its_type_and_length_from_the_filesystem_store() {
    the_door_serves_the_stored_files(TestApp::spawn().await).await;
}

#[tokio::test]
async fn content_is_streamed_with_its_type_and_length_from_the_s3_store() {
    the_door_serves_the_stored_files(TestApp::with_blobs(s3_blobs().await).await).await;
}
