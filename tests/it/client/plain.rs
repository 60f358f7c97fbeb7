//! The client without a terminal, as scripts and CI run it: plain lines, `--json` documents,
//! no escape codes; credentials stored 0600 and tokens refreshed; errors with the server's
//! code and documented exit codes.

use std::os::unix::fs::PermissionsExt as _;

use framegate_commands::testing::TestDatabase;
use serde_json::Value;

use super::{assert_no_escapes, assert_playable, png, text, Client, PASSWORD};
use crate::common::Dev;

fn mode(path: &std::path::Path) -> u32 {
    std::fs::metadata(path)
        .expect("metadata")
        .permissions()
        .mode()
        & 0o777
}

fn ids(list: &Value) -> Vec<String> {
    let items = list.get("items").unwrap_or(list);
    items
        .as_array()
        .expect("a list")
        .iter()
        .map(|item| item["id"].as_str().expect("id").to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_terminal_every_command_prints_plain_text_or_one_json_document() {
    let db = TestDatabase::unmigrated(2).await;
    let dev = Dev::start(
        &db,
        &[("FRAMEGATE_SIMULATOR_LATENCY_MS", "1500".to_owned())],
    );
    dev.wait_ready(&reqwest::Client::new()).await;
    let email = "script@example.com";
    dev.register(&reqwest::Client::new(), email).await;
    let client = Client::new(&dev);

    // Not logged in yet: exit 4, saying how to log in.
    let anonymous = client.run(&["credits"], "");
    assert_eq!(anonymous.status.code(), Some(4), "{}", text(&anonymous));
    assert!(String::from_utf8_lossy(&anonymous.stderr).contains("framegate client login"));

    // Login with the password on stdin; the credentials file is the owner's alone.
    let login = client.run(&["login", "--email", email], &format!("{PASSWORD}\n"));
    assert_eq!(login.status.code(), Some(0), "{}", text(&login));
    assert_no_escapes(&login);
    assert_eq!(mode(&client.credentials()), 0o600);
    assert_eq!(mode(client.credentials().parent().expect("dir")), 0o700);
    let stored = std::fs::read_to_string(client.credentials()).expect("credentials");
    assert!(!stored.contains(PASSWORD), "the password is not stored");

    let credits = client.json(&["credits"]);
    assert_eq!(credits["available"], 100, "{credits}");

    // An access token past its expiry is renewed with the refresh token, and both saved.
    let mut file: Value = serde_json::from_str(&stored).expect("json");
    let entry = file["servers"][&dev.base].clone();
    file["servers"][&dev.base]["access_expires_at"] = "2001-01-01T00:00:00Z".into();
    std::fs::write(client.credentials(), file.to_string()).expect("age the token");
    assert_eq!(client.json(&["credits"])["available"], 100);
    let renewed: Value =
        serde_json::from_str(&std::fs::read_to_string(client.credentials()).expect("read"))
            .expect("json");
    let renewed = &renewed["servers"][&dev.base];
    assert_ne!(renewed["access_token"], entry["access_token"]);
    assert_ne!(renewed["refresh_token"], entry["refresh_token"]);
    assert_eq!(mode(&client.credentials()), 0o600);

    // Keys: the secret once, listed without it, revoked.
    let key = client.json(&["keys", "create", "--name", "ci"]);
    let key_id = key["id"].as_str().expect("id").to_owned();
    let secret = key["secret"].as_str().expect("secret").to_owned();
    let listed = client.json(&["keys", "list"]);
    assert!(ids(&listed).contains(&key_id));
    assert!(!listed.to_string().contains(&secret));

    // Another machine logs in with that key read from stdin; FRAMEGATE_API_KEY works too.
    let robot = Client::new(&dev);
    let key_login = robot.run(&["login"], &format!("{secret}\n"));
    assert_eq!(key_login.status.code(), Some(0), "{}", text(&key_login));
    assert_eq!(mode(&robot.credentials()), 0o600);
    assert_eq!(robot.json(&["credits"])["available"], 100);
    let by_env = Client::new(&dev)
        .command(&["--json", "credits"])
        .env("FRAMEGATE_API_KEY", &secret)
        .output()
        .expect("run");
    assert_eq!(by_env.status.code(), Some(0), "{}", text(&by_env));
    // Named nowhere, the server is the last login's: the key goes there, and the client says so.
    let unnamed = robot
        .command(&["credits"])
        .env_remove("FRAMEGATE_SERVER")
        .env("FRAMEGATE_API_KEY", &secret)
        .output()
        .expect("run");
    assert_eq!(unnamed.status.code(), Some(0), "{}", text(&unnamed));
    let note = String::from_utf8_lossy(&unnamed.stderr);
    assert!(
        note.contains("FRAMEGATE_API_KEY") && note.contains(&dev.base),
        "{}",
        text(&unnamed)
    );
    client.json(&["keys", "revoke", &key_id]);
    let revoked = robot.run(&["--json", "credits"], "");
    assert_eq!(revoked.status.code(), Some(4), "{}", text(&revoked));
    let problem: Value = serde_json::from_slice(&revoked.stdout).expect("one JSON document");
    assert_eq!(problem["error"]["status"], 401, "{problem}");

    // Images.
    std::fs::write(client.path("start.png"), png()).expect("png");
    let image = client.json(&["images", "upload", "start.png"]);
    let image_id = image["id"].as_str().expect("id").to_owned();
    assert_eq!(image["content_type"], "image/png");
    assert!(ids(&client.json(&["images", "list"])).contains(&image_id));

    // A video from the image, waited for: progress as plain lines on stderr, the result on
    // stdout, the MP4 downloaded.
    let waited = client.run(
        &[
            "videos",
            "create",
            "--prompt",
            "a paper boat",
            "--provider",
            "simulator",
            "--duration",
            "2",
            "--image-id",
            &image_id,
            "--wait",
            "--output",
            "boat.mp4",
        ],
        "",
    );
    assert_eq!(waited.status.code(), Some(0), "{}", text(&waited));
    assert_no_escapes(&waited);
    let progress = String::from_utf8_lossy(&waited.stderr);
    assert!(
        progress.lines().any(|l| l.starts_with("running ")),
        "{progress}"
    );
    assert!(
        progress.lines().any(|l| l.starts_with("completed 100%")),
        "{progress}"
    );
    assert!(String::from_utf8_lossy(&waited.stdout).contains("boat.mp4"));
    assert_playable(&client.path("boat.mp4"), 2).await;

    // The same with --json: one document, the final video and where it went.
    let done = client.json(&[
        "videos",
        "create",
        "--prompt",
        "a paper plane",
        "--provider",
        "simulator",
        "--duration",
        "1",
        "--wait",
        "--output",
        "plane.mp4",
    ]);
    assert_eq!(done["video"]["status"], "completed", "{done}");
    assert_eq!(
        done["bytes"].as_u64(),
        std::fs::metadata(client.path("plane.mp4"))
            .ok()
            .map(|m| m.len())
    );
    assert_playable(&client.path("plane.mp4"), 1).await;
    let plane = done["video"]["id"].as_str().expect("id").to_owned();

    let listed = client.json(&["videos", "list"]);
    assert_eq!(ids(&listed).len(), 2);
    assert_eq!(ids(&listed)[0], plane, "newest first");
    assert_eq!(client.json(&["videos", "get", &plane])["final_cost"], 1);
    let poster = client.json(&["videos", "download", &plane, "--variant", "poster"]);
    let poster_file = client.path(&format!("{plane}.poster.jpg"));
    assert_eq!(
        poster["output"],
        poster_file
            .file_name()
            .expect("name")
            .to_string_lossy()
            .as_ref()
    );
    assert!(std::fs::read(&poster_file)
        .expect("poster")
        .starts_with(&[0xff, 0xd8]));

    // A video not waited for, then cancelled: its credits come back.
    let queued = client.json(&[
        "videos",
        "create",
        "--prompt",
        "a kite",
        "--provider",
        "simulator",
        "--duration",
        "5",
    ]);
    let kite = queued["id"].as_str().expect("id").to_owned();
    let cancelled = client.json(&["videos", "cancel", &kite, "--reason", "changed my mind"]);
    assert_eq!(cancelled["id"], kite.as_str());
    let ended = super::wait_for(&client, &kite, |v| v["status"] == "cancelled");
    assert_eq!(ended["final_cost"].as_i64().unwrap_or(0), 0, "{ended}");
    // Released by settlement once the cancellation is recorded.
    assert_eq!(super::settled_credits(&client)["balance"], 97);

    client.json(&["images", "delete", &image_id]);
    assert!(!ids(&client.json(&["images", "list"])).contains(&image_id));

    // Errors: the server's code and message, exit 1; as JSON with --json.
    let missing = client.run(
        &["videos", "get", "01900000-0000-7000-8000-000000000000"],
        "",
    );
    assert_eq!(missing.status.code(), Some(1), "{}", text(&missing));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("not_found"));
    let invalid = client.run(
        &[
            "--json",
            "videos",
            "create",
            "--prompt",
            "x",
            "--provider",
            "simulator",
            "--duration",
            "99",
        ],
        "",
    );
    assert_eq!(invalid.status.code(), Some(1), "{}", text(&invalid));
    let problem: Value = serde_json::from_slice(&invalid.stdout).expect("one JSON document");
    assert_eq!(problem["error"]["code"], "validation_failed");
    assert_eq!(
        problem["error"]["errors"][0]["field"], "duration_seconds",
        "{problem}"
    );
    assert!(invalid.stderr.is_empty(), "--json keeps stderr quiet");

    // Usage errors: exit 2, before anything is sent.
    for args in [
        &["videos", "create"][..],
        &["videos", "create", "--prompt", "x", "--output", "x.mp4"][..],
        &["videos", "get", "../../v1/credits"][..],
    ] {
        let usage = client.run(args, "");
        assert_eq!(usage.status.code(), Some(2), "{args:?}: {}", text(&usage));
    }

    // Logout forgets the server; the session ends on the server too.
    let logout = client.json(&["logout"]);
    assert_eq!(logout["session_ended"], true);
    assert_eq!(client.run(&["credits"], "").status.code(), Some(4));
}
