//! The `framegate` binary itself: `framegate migrate` against a real database.

use std::process::Command;

use framegate_commands::testing::TestDatabase;

#[tokio::test]
async fn migrate_creates_the_event_store_on_an_empty_database_and_is_idempotent() {
    let db = TestDatabase::unmigrated(2).await;

    for run in 0..2 {
        let output = Command::new(env!("CARGO_BIN_EXE_framegate"))
            .arg("migrate")
            .env("DATABASE_URL", db.url())
            .output()
            .expect("run framegate");
        assert!(
            output.status.success(),
            "run {run}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let columns: Vec<String> = sqlx::query_scalar(
        "SELECT column_name::text FROM information_schema.columns
          WHERE table_name = 'events' ORDER BY ordinal_position",
    )
    .fetch_all(&db.pool)
    .await
    .expect("columns");
    assert_eq!(
        columns,
        [
            "aggregate_type",
            "aggregate_id",
            "sequence",
            "event_type",
            "event_version",
            "payload",
            "metadata",
            "global_position",
            "event_id",
            "recorded_at",
            "tx_id"
        ]
    );
}

#[test]
fn migrate_against_an_unreachable_database_fails_with_a_clear_message() {
    let output = Command::new(env!("CARGO_BIN_EXE_framegate"))
        .arg("migrate")
        .env("DATABASE_URL", "postgres://nobody@127.0.0.1:1/none")
        .output()
        .expect("run framegate");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("cannot connect to DATABASE_URL"),
        "{stderr}"
    );
}

/// Runs `framegate users create` with `password` on standard input.
fn create_user(url: &str, email: &str, role: &str, password: &str) -> std::process::Output {
    use std::io::Write as _;
    use std::process::Stdio;

    let mut child = Command::new(env!("CARGO_BIN_EXE_framegate"))
        .args([
            "users",
            "create",
            "--email",
            email,
            "--password-stdin",
            "--role",
            role,
        ])
        .env("DATABASE_URL", url)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(format!("{password}\n").as_bytes())
        .expect("write password");
    child.wait_with_output().expect("wait")
}

#[tokio::test]
async fn users_create_makes_a_verified_admin_from_a_password_on_stdin() {
    let db = TestDatabase::new().await;
    let output = create_user(
        db.url(),
        "Root@Example.com",
        "admin",
        "a long admin password",
    );
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let user_id = String::from_utf8_lossy(&output.stdout).trim().to_owned();

    let events: Vec<(String, serde_json::Value)> = sqlx::query_as(
        "SELECT event_type, payload FROM events WHERE aggregate_id = $1 ORDER BY sequence",
    )
    .bind(&user_id)
    .fetch_all(&db.pool)
    .await
    .expect("events");
    let types: Vec<&str> = events.iter().map(|(t, _)| t.as_str()).collect();
    assert_eq!(types, ["UserRegistered", "EmailVerified"]);
    assert_eq!(events[0].1["UserRegistered"]["role"], "admin");
    assert_eq!(events[0].1["UserRegistered"]["email"], "root@example.com");
    let hash = events[0].1["UserRegistered"]["password_hash"]
        .as_str()
        .expect("hash");
    assert!(hash.starts_with("$argon2id$") && !hash.contains("a long admin password"));

    // The same address again is refused with its stable code.
    let again = create_user(
        db.url(),
        "root@example.com",
        "user",
        "another long password",
    );
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("email_taken"));
    // Too short a password never reaches the store.
    let short = create_user(db.url(), "short@example.com", "user", "short");
    assert!(!short.status.success());
    assert!(String::from_utf8_lossy(&short.stderr).contains("at least 10 characters"));
}

#[test]
fn users_create_refuses_a_password_on_the_command_line() {
    let output = Command::new(env!("CARGO_BIN_EXE_framegate"))
        .args(["users", "create", "--email", "a@example.com"])
        .env("DATABASE_URL", "postgres://nobody@127.0.0.1:1/none")
        .output()
        .expect("run");
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("--password-stdin"));
}
