//! The README's walk-through as a test: `framegate dev` as a real process, driven over HTTP
//! from registration to a downloaded, playable MP4 made from an uploaded image.

use crate::common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::Dev;
use framegate_commands::testing::TestDatabase;
use framegate_workers::media::{probe, MediaTools};
use futures::StreamExt as _;
use reqwest::StatusCode;
use serde_json::{json, Value};

/// Reads `video` events off the SSE stream until the stream ends.
async fn follow(client: &reqwest::Client, url: &str, token: &str) -> Vec<Value> {
    let response = client
        .get(url)
        .bearer_auth(token)
        .send()
        .await
        .expect("events");
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        response.headers()["content-type"].to_str().expect("type"),
        "text/event-stream"
    );
    let mut stream = response.bytes_stream();
    let mut buffer = String::new();
    let mut events = Vec::new();
    let reading = async {
        while let Some(chunk) = stream.next().await {
            buffer.push_str(&String::from_utf8_lossy(&chunk.expect("chunk")));
            while let Some(end) = buffer.find("\n\n") {
                let block: String = buffer.drain(..end + 2).collect();
                let mut name = None;
                let mut data = String::new();
                for line in block.lines() {
                    if let Some(value) = line.strip_prefix("event:") {
                        name = Some(value.trim().to_owned());
                    } else if let Some(value) = line.strip_prefix("data:") {
                        data.push_str(value.trim_start());
                    }
                }
                if name.as_deref() == Some("video") {
                    events.push(serde_json::from_str(&data).expect("event json"));
                }
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(90), reading)
        .await
        .expect("the stream ends at the terminal state");
    events
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_walk_through_ends_with_a_downloaded_playable_mp4() {
    let db = TestDatabase::unmigrated(2).await;
    let dev = Dev::start(
        &db,
        &[("FRAMEGATE_SIMULATOR_LATENCY_MS", "1500".to_owned())],
    );
    let client = reqwest::Client::new();
    dev.wait_ready(&client).await;

    // The admin login printed at start is kept in the state directory, and works.
    let saved = std::fs::read_to_string(dev.state_dir.path().join("admin-login")).expect("login");
    let (admin_email, admin_password) = saved.trim().split_once(' ').expect("email password");
    let admin = client
        .post(dev.url("/v1/auth/login"))
        .json(&json!({"email": admin_email, "password": admin_password}))
        .send()
        .await
        .expect("admin login");
    assert_eq!(admin.status(), StatusCode::OK);

    // Register and sign in.
    let email = "walker@example.com";
    let password = "correct horse battery staple";
    let registered = client
        .post(dev.url("/v1/auth/register"))
        .json(&json!({"email": email, "password": password}))
        .send()
        .await
        .expect("register");
    assert_eq!(registered.status(), StatusCode::CREATED);
    // The sign-up credits wait for the address to be verified (the token is in the dev mailbox).
    dev.verify_email(&client, email).await;
    let login: Value = client
        .post(dev.url("/v1/auth/login"))
        .json(&json!({"email": email, "password": password}))
        .send()
        .await
        .expect("login")
        .json()
        .await
        .expect("json");
    let token = login["access_token"].as_str().expect("token").to_owned();
    let credits: Value = client
        .get(dev.url("/v1/credits"))
        .bearer_auth(&token)
        .send()
        .await
        .expect("credits")
        .json()
        .await
        .expect("json");
    let starting_balance = credits["balance"].as_i64().expect("balance");

    // Upload a reference image.
    let form = reqwest::multipart::Form::new().part(
        "file",
        reqwest::multipart::Part::bytes(common::png())
            .file_name("reference.png")
            .mime_str("image/png")
            .expect("mime"),
    );
    let uploaded = client
        .post(dev.url("/v1/images"))
        .bearer_auth(&token)
        .multipart(form)
        .send()
        .await
        .expect("upload");
    assert_eq!(uploaded.status(), StatusCode::CREATED);
    let image: Value = uploaded.json().await.expect("json");
    let image_id = image["id"].as_str().expect("image id").to_owned();

    // Ask for a 3-second image-to-video on the simulator.
    let requested = client
        .post(dev.url("/v1/videos"))
        .bearer_auth(&token)
        .header("Idempotency-Key", "walk-through-1")
        .json(&json!({
            "prompt": "a red and blue flag waving in the wind",
            "provider": "simulator",
            "duration_seconds": 3,
            "aspect_ratio": "16:9",
            "resolution": "480p",
            "image_id": image_id,
        }))
        .send()
        .await
        .expect("request video");
    assert_eq!(requested.status(), StatusCode::CREATED);
    let video: Value = requested.json().await.expect("json");
    let video_id = video["id"].as_str().expect("video id").to_owned();
    let estimate = video["estimated_cost"].as_i64().expect("estimate");
    assert_eq!(video["status"], "queued");

    // Follow it over SSE to the end.
    let events = follow(
        &client,
        &dev.url(&format!("/v1/videos/{video_id}/events")),
        &token,
    )
    .await;
    let statuses: Vec<&str> = events
        .iter()
        .map(|e| e["status"].as_str().expect("status"))
        .collect();
    assert_eq!(statuses.last(), Some(&"completed"), "{statuses:?}");
    let progress: Vec<i64> = events
        .iter()
        .map(|e| e["progress"].as_i64().expect("progress"))
        .collect();
    assert!(
        progress.windows(2).all(|w| w[0] <= w[1]),
        "progress never goes back: {progress:?}"
    );
    assert!(
        progress.iter().any(|p| (1..100).contains(p)),
        "intermediate progress was streamed: {progress:?}"
    );
    let done = events.last().expect("terminal event");
    assert!(done["content"]["url"].is_string(), "{done}");

    // Download through the content redirect and check it is a real video of the right length.
    let download = client
        .get(dev.url(&format!("/v1/videos/{video_id}/content")))
        .bearer_auth(&token)
        .send()
        .await
        .expect("download");
    assert_eq!(download.status(), StatusCode::OK);
    assert_eq!(download.headers()["content-type"], "video/mp4");
    let bytes = download.bytes().await.expect("bytes");
    let file = dev.state_dir.path().join("downloaded.mp4");
    std::fs::write(&file, &bytes).expect("write");
    let report = probe(&MediaTools::from_env().expect("tools"), &file)
        .await
        .expect("ffprobe");
    assert_eq!(
        (report.codec.as_str(), report.width, report.height),
        ("h264", 854, 480)
    );
    assert!(
        (2_900..=3_100).contains(&report.duration_ms),
        "{}",
        report.duration_ms
    );

    // The credits were captured: the balance dropped by the final cost, nothing is reserved.
    let video: Value = client
        .get(dev.url(&format!("/v1/videos/{video_id}")))
        .bearer_auth(&token)
        .send()
        .await
        .expect("video")
        .json()
        .await
        .expect("json");
    assert_eq!(video["final_cost"].as_i64(), Some(estimate));
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let credits: Value = client
            .get(dev.url("/v1/credits"))
            .bearer_auth(&token)
            .send()
            .await
            .expect("credits")
            .json()
            .await
            .expect("json");
        if credits["reserved"] == 0 {
            assert_eq!(
                credits["balance"].as_i64(),
                Some(starting_balance - estimate)
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the reservation was never captured: {credits}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // One correlation from the HTTP request down to the capture: the audit of the request's
    // correlation id shows every step, each caused by the one before it.
    let correlation: String = sqlx::query_scalar(
        "SELECT metadata ->> 'correlation_id' FROM events
          WHERE aggregate_type = 'Video' AND aggregate_id = $1 AND sequence = 1",
    )
    .bind(&video_id)
    .fetch_one(&db.pool)
    .await
    .expect("the request's correlation");
    let audit = Command::new(env!("CARGO_BIN_EXE_framegate"))
        .args(["audit", "--correlation-id", &correlation, "--json"])
        .env("DATABASE_URL", db.url())
        .output()
        .expect("framegate audit");
    assert!(
        audit.status.success(),
        "{}",
        String::from_utf8_lossy(&audit.stderr)
    );
    let chain: Vec<Value> = String::from_utf8_lossy(&audit.stdout)
        .lines()
        .map(|line| serde_json::from_str(line).expect("one JSON object per line"))
        .collect();
    let types: Vec<&str> = chain
        .iter()
        .map(|e| e["event_type"].as_str().expect("type"))
        .collect();
    for step in [
        "CreditsReserved",
        "VideoRequested",
        "SubmissionStarted",
        "VideoSubmitted",
        "VideoProgressed",
        "VideoGenerated",
        "VideoStored",
        "VideoCompleted",
        "ReservationCaptured",
    ] {
        assert!(types.contains(&step), "{step} missing from {types:?}");
    }
    let video_events: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM events WHERE aggregate_type = 'Video' AND aggregate_id = $1",
    )
    .bind(&video_id)
    .fetch_one(&db.pool)
    .await
    .expect("count");
    assert_eq!(
        chain
            .iter()
            .filter(|e| e["aggregate"] == format!("video:{video_id}"))
            .count() as i64,
        video_events,
        "every event of the video is in the request's correlation: {types:?}"
    );

    // Ctrl-C stops everything cleanly.
    let status = dev.interrupt();
    assert!(status.success(), "{status:?}");
}
