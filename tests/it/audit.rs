//! `framegate audit` and `framegate events show` against a real database.

use std::io::Write as _;
use std::process::{Command, Output, Stdio};

use framegate_commands::testing::TestDatabase;
use serde_json::Value;

fn framegate(db: &TestDatabase, args: &[&str], stdin: Option<&str>) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_framegate"))
        .args(args)
        .env("DATABASE_URL", db.url())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run framegate");
    if let Some(input) = stdin {
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(input.as_bytes())
            .expect("write stdin");
    }
    let output = child.wait_with_output().expect("wait");
    assert!(
        output.status.success(),
        "framegate {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

fn stdout(output: &Output) -> String {
    String::from_utf8(output.stdout.clone()).expect("utf-8")
}

#[tokio::test]
async fn the_audit_command_prints_a_redacted_timeline_and_json_lines() {
    let db = TestDatabase::new().await;
    let created = framegate(
        &db,
        &[
            "users",
            "create",
            "--email",
            "ops@example.com",
            "--password-stdin",
        ],
        Some("a long enough password\n"),
    );
    let user = stdout(&created).trim().to_owned();
    let hashes: Vec<String> = sqlx::query_scalar(
        "SELECT payload -> 'UserRegistered' ->> h FROM events,
                unnest(ARRAY['password_hash', 'verification_token_hash']) AS h
          WHERE event_type = 'UserRegistered'",
    )
    .fetch_all(&db.pool)
    .await
    .expect("hashes");
    assert_eq!(hashes.len(), 2);

    let json = framegate(
        &db,
        &["audit", "--aggregate", &format!("user:{user}"), "--json"],
        None,
    );
    let lines: Vec<Value> = stdout(&json)
        .lines()
        .map(|l| serde_json::from_str(l).expect("one JSON object per line"))
        .collect();
    let types: Vec<&str> = lines
        .iter()
        .map(|l| l["event_type"].as_str().expect("type"))
        .collect();
    assert_eq!(types, ["UserRegistered", "EmailVerified"]);
    assert_eq!(lines[0]["actor"], "system");
    assert_eq!(lines[0]["aggregate"], format!("user:{user}"));
    assert_eq!(
        lines[0]["payload"]["UserRegistered"]["password_hash"],
        "[redacted]"
    );
    let correlation = lines[0]["correlation_id"].as_str().expect("correlation");

    let timeline = stdout(&framegate(
        &db,
        &[
            "audit",
            "--actor",
            "system",
            "--event-type",
            "UserRegistered",
        ],
        None,
    ));
    let line = timeline.lines().next().expect("one line");
    assert_eq!(timeline.lines().count(), 1, "{timeline}");
    assert!(
        line.contains(&format!("user:{user}#1  UserRegistered v"))
            && line.contains("by system")
            && line.contains(&format!("corr={correlation}"))
            && line.contains("cause=request:"),
        "{line}"
    );

    let none = stdout(&framegate(
        &db,
        &["audit", "--since", "2999-01-01T00:00:00Z", "--json"],
        None,
    ));
    assert_eq!(none, "");
    let by_correlation = stdout(&framegate(
        &db,
        &["audit", "--correlation-id", correlation, "--json"],
        None,
    ));
    assert_eq!(by_correlation.lines().count(), 2);

    let show = stdout(&framegate(
        &db,
        &["events", "show", &format!("user:{user}")],
        None,
    ));
    assert!(
        show.contains("payload:") && show.contains("[redacted]"),
        "{show}"
    );
    let show_json = stdout(&framegate(
        &db,
        &["events", "show", &format!("user:{user}"), "--json"],
        None,
    ));
    assert_eq!(show_json.lines().count(), 2);

    for output in [stdout(&json), timeline, show, show_json] {
        for hash in &hashes {
            assert!(!output.contains(hash.as_str()), "{hash} leaked: {output}");
        }
    }
}

#[tokio::test]
async fn a_malformed_aggregate_is_refused_with_a_clear_message() {
    let db = TestDatabase::new().await;
    let output = Command::new(env!("CARGO_BIN_EXE_framegate"))
        .args(["events", "show", "movie:1"])
        .env("DATABASE_URL", db.url())
        .output()
        .expect("run framegate");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("unknown aggregate `movie`"), "{stderr}");
}
