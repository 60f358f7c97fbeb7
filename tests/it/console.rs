//! The web console (`/console`) in a real browser: `framegate dev` with the simulator, and
//! `console_browser.py` driving Debian's chromium through selenium (pinned in the clients
//! venv by scripts/services.sh; chromium by scripts/install-chromium.sh) from sign-up to a
//! video playing in the page, the mailed links, API keys, a cancel, a password reset and an
//! administrator's grant and audit timeline. Screenshots land in
//! `target/test-artifacts/console/`; the API is then asked whether what the page showed is
//! what happened.

use crate::common;

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use common::Dev;
use framegate_commands::testing::TestDatabase;
use reqwest::StatusCode;
use serde_json::{json, Value};

fn python() -> String {
    std::env::var("FRAMEGATE_TEST_CLIENTS_PYTHON").unwrap_or_else(|_| "python3".into())
}

fn browser_binary(variable: &str, default: &str) -> String {
    std::env::var(variable).unwrap_or_else(|_| default.to_owned())
}

/// `target/test-artifacts/console`, emptied: this run's screenshots only.
fn artifacts_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR").map_or_else(
        || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target"),
        PathBuf::from,
    );
    let dir = target.join("test-artifacts").join("console");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("artifacts dir");
    dir
}

/// A 640×480 PNG with a gradient, for the start image.
fn write_png(path: &std::path::Path) {
    let image = image::RgbImage::from_fn(640, 480, |x, y| {
        image::Rgb([(x % 256) as u8, (y % 256) as u8, 160])
    });
    image.save(path).expect("png");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_takes_a_user_from_sign_up_to_a_playing_video_in_a_real_browser() {
    let db = TestDatabase::unmigrated(2).await;
    // Slow enough that the page shows the job running and a second one can be cancelled.
    let dev = Dev::start(
        &db,
        &[("FRAMEGATE_SIMULATOR_LATENCY_MS", "4000".to_owned())],
    );
    let client = reqwest::Client::new();
    dev.wait_ready(&client).await;
    let saved = std::fs::read_to_string(dev.state_dir.path().join("admin-login")).expect("login");
    let (admin_email, admin_password) = saved.trim().split_once(' ').expect("email password");
    let image = dev.state_dir.path().join("reference.png");
    write_png(&image);
    let artifacts = artifacts_dir();
    let email = "browser@example.com";

    let args = json!({
        "base": dev.base,
        "mailbox": dev.state_dir.path().join("mailbox"),
        "artifacts": artifacts,
        "admin_email": admin_email,
        "admin_password": admin_password,
        "image": image,
        "email": email,
        "chromium": browser_binary("FRAMEGATE_TEST_CHROMIUM", "/usr/bin/chromium"),
        "chromedriver": browser_binary("FRAMEGATE_TEST_CHROMEDRIVER", "/usr/bin/chromedriver"),
    });
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/it/console_browser.py");
    let python = python();
    let run = tokio::task::spawn_blocking(move || {
        Command::new(&python)
            .arg(&script)
            .arg(args.to_string())
            .output()
            .unwrap_or_else(|e| {
                panic!("run {python} (FRAMEGATE_TEST_CLIENTS_PYTHON, scripts/services.sh): {e}")
            })
    });
    let output = tokio::time::timeout(Duration::from_secs(240), run)
        .await
        .expect("the browser run ends within four minutes")
        .expect("join");
    assert!(
        output.status.success(),
        "the browser run failed (screenshot and page in {}):\n{}",
        artifacts.display(),
        String::from_utf8_lossy(&output.stderr)
    );
    let seen: Value = serde_json::from_slice(
        output
            .stdout
            .split(|b| *b == b'\n')
            .rfind(|line| line.starts_with(b"{"))
            .expect("the run's summary line"),
    )
    .expect("summary json");

    // Every screenshot the run names is a PNG on disk.
    let shots = seen["screenshots"].as_array().expect("screenshots");
    assert!(shots.len() >= 10, "{shots:?}");
    for shot in shots {
        let bytes = std::fs::read(artifacts.join(shot.as_str().expect("name"))).expect("shot");
        assert!(bytes.starts_with(b"\x89PNG"), "{shot} is a PNG");
    }
    let playback = &seen["playback"];
    assert!(
        playback["t"].as_f64().expect("currentTime") > 0.5,
        "{playback}"
    );
    assert!(
        playback["w"].as_i64().expect("videoWidth") > 0,
        "{playback}"
    );

    // What the pages showed is what the API holds: the admin's view of the user's account.
    let login: Value = client
        .post(dev.url("/v1/auth/login"))
        .json(&json!({"email": admin_email, "password": admin_password}))
        .send()
        .await
        .expect("admin login")
        .json()
        .await
        .expect("json");
    let admin = login["access_token"].as_str().expect("token");
    let video_id = seen["video_id"].as_str().expect("video id");
    let video: Value = client
        .get(dev.url(&format!("/v1/admin/events/video/{video_id}")))
        .bearer_auth(admin)
        .send()
        .await
        .expect("video stream")
        .json()
        .await
        .expect("json");
    let types: Vec<&str> = video["events"]
        .as_array()
        .expect("events")
        .iter()
        .map(|e| e["event_type"].as_str().expect("type"))
        .collect();
    assert_eq!(
        seen["timeline"].as_array().expect("timeline").len(),
        types.len(),
        "the page showed the whole stream: {types:?}"
    );
    let requested = &video["events"][0];
    assert_eq!(
        requested["payload"]["VideoRequested"]["spec"]["image_id"]
            .as_str()
            .map(str::len),
        Some(36),
        "the video was made from the uploaded image: {requested}"
    );
    let users: Value = client
        .get(dev.url("/v1/admin/users?limit=100"))
        .bearer_auth(admin)
        .send()
        .await
        .expect("users")
        .json()
        .await
        .expect("json");
    let user = users["items"]
        .as_array()
        .expect("items")
        .iter()
        .find(|u| u["email"] == email)
        .expect("the user signed up");
    assert_eq!(user["email_verified"], true, "verified through the link");
    // The old link path still leads to the console.
    let old = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client")
        .get(dev.url("/reset-password?token=abc"))
        .send()
        .await
        .expect("old link");
    assert_eq!(old.status(), StatusCode::PERMANENT_REDIRECT);
    assert_eq!(
        old.headers()["location"],
        "/console/reset-password?token=abc"
    );
}
