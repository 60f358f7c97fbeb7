//! The OpenAI-compatible Videos API through the official `openai` Python package (pinned in
//! scripts/services.sh, found through FRAMEGATE_TEST_CLIENTS_PYTHON), unchanged, pointed at
//! `framegate dev`'s `/openai/v1`: create, retrieve, errors read through the SDK's exception
//! types, `create_and_poll` to a completed video, `download_content` to a file ffprobe reads
//! as the video asked for, list with auto-pagination, delete. The script also validates every
//! JSON answer against docs/specs/openai-videos.openapi.json with jsonschema.

use crate::common;

use std::process::Command;

use common::Dev;
use framegate_commands::testing::TestDatabase;
use framegate_workers::media::{probe, MediaTools};
use serde_json::{json, Value};

const SCRIPT: &str = include_str!("openai_sdk.py");

fn python() -> String {
    std::env::var("FRAMEGATE_TEST_CLIENTS_PYTHON").unwrap_or_else(|_| "python3".into())
}

/// Registers, verifies and signs in a user on `dev`, and returns a new API key of theirs.
async fn api_key(dev: &Dev, client: &reqwest::Client) -> String {
    let token = dev.sign_up(client, "sdk@example.com").await;
    let key: Value = client
        .post(dev.url("/v1/api-keys"))
        .bearer_auth(&token)
        .json(&json!({"name": "openai sdk", "scopes": ["videos:write", "images:write"]}))
        .send()
        .await
        .expect("api key")
        .json()
        .await
        .expect("json");
    key["secret"].as_str().expect("secret").to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_official_openai_sdk_makes_lists_downloads_and_deletes_videos() {
    let db = TestDatabase::unmigrated(2).await;
    let dev = Dev::start(&db, &[("FRAMEGATE_SIMULATOR_LATENCY_MS", "300".to_owned())]);
    let client = reqwest::Client::new();
    dev.wait_ready(&client).await;
    let key = api_key(&dev, &client).await;

    let spec = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/docs/specs/openai-videos.openapi.json"
    );
    let download = dev.state_dir.path().join("sdk.mp4");
    let base_url = dev.url("/openai/v1");
    let download_arg = download.to_string_lossy().into_owned();
    let output = tokio::task::spawn_blocking(move || {
        Command::new(python())
            .args(["-c", SCRIPT, &base_url, &key, spec, &download_arg])
            .output()
    })
    .await
    .expect("join")
    .expect("run the clients python (FRAMEGATE_TEST_CLIENTS_PYTHON)");
    assert!(
        output.status.success(),
        "the SDK script failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let found: Value = serde_json::from_slice(&output.stdout).expect("the script's findings");

    assert_eq!(
        found["created"],
        json!({"status": "queued", "model": "simulator-v1", "size": "1280x720", "seconds": "2"})
    );
    assert_eq!(
        found["bad_seconds"],
        json!({"status": 400, "code": "unsupported_duration", "param": "seconds", "type": "invalid_request_error"})
    );
    assert_eq!(
        found["bad_model"],
        json!({"code": "unsupported_model", "param": "model"})
    );
    assert_eq!(found["bad_key"], json!({"status": 401}));
    assert_eq!(
        found["polled"],
        json!({"status": "completed", "progress": 100, "completed_at": true})
    );
    assert_eq!(
        found["spritesheet"],
        json!({"code": "variant_not_available"})
    );
    let first = found["ids"]["first"].clone();
    let done = found["ids"]["done"].clone();
    // Newest first, one page at a time, both videos.
    assert_eq!(found["listed"], json!([done, first]));
    assert_eq!(found["first_ascending"], first);
    assert_eq!(found["deleted"], json!({"id": done, "deleted": true}));
    assert_eq!(found["after_delete"], json!({"status": 404}));
    assert_eq!(found["listed_after_delete"], json!([first]));

    // What the SDK wrote is the portrait 720p, 2-second video asked for.
    let report = probe(&MediaTools::from_env().expect("tools"), &download)
        .await
        .expect("ffprobe reads the download");
    assert_eq!(
        (report.codec.as_str(), report.width, report.height),
        ("h264", 720, 1280)
    );
    assert!(
        (1_900..=2_100).contains(&report.duration_ms),
        "{}",
        report.duration_ms
    );
    drop(dev);
}
