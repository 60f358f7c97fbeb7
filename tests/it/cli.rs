//! The `framegate` binary itself: `framegate migrate` against a real database, `users
//! create`, what `FRAMEGATE_ENV` makes every role refuse before it connects anywhere, and the
//! container's `healthcheck` probe against a real `framegate api`.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

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
    // The address is stored sealed (ADR 0043); the audit view opens it.
    assert!(events[0].1["UserRegistered"].get("email").is_none());
    let history = framegate_projections::audit::stream(&db.pool, "User", &user_id)
        .await
        .expect("audit");
    assert_eq!(
        history[0].payload["UserRegistered"]["email"],
        "root@example.com"
    );
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

/// Strong values for production's checks (they only have to pass, not stay secret).
const JWT: &str = "Q7m2Xc9VbN4kLp8RtZ1wYe6HsJd3GfA5uTq0";
const BLOB_KEY: &str = "b9Vq2kLx7TzR4mWp8YcN3hJd6FgS1aQe0uIo5";
/// Base64 of 32 bytes each, as `scripts/gen-secrets.sh` writes them (ADR 0043).
pub(crate) const MASTER_KEYS: &str = "1:V2hvIHdvdWxkIGd1ZXNzIHRoaXMgMzItYnl0ZSBrZXk=";
pub(crate) const EMAIL_KEY: &str = "QW5vdGhlciAzMi1ieXRlIGtleSBmb3IgdGhlIGhhc2g=";
/// Nothing listens here: a role that got past its configuration fails connecting.
const UNREACHABLE_DB: &str = "postgres://nobody@127.0.0.1:1/none";

/// `framegate <role>` with only `env` from the FRAMEGATE_* family (the caller's own settings
/// removed, so a developer's FRAMEGATE_ENV cannot change the outcome).
fn run_role(role: &str, env: &[(&str, &str)]) -> (bool, String) {
    let mut command = Command::new(env!("CARGO_BIN_EXE_framegate"));
    command.arg(role);
    for (name, _) in std::env::vars() {
        if name.starts_with("FRAMEGATE_") || name == "PGPASSWORD" || name == "AWS_SECRET_ACCESS_KEY"
        {
            command.env_remove(name);
        }
    }
    let output = command
        .env("DATABASE_URL", UNREACHABLE_DB)
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .output()
        .expect("run framegate");
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn production_roles_refuse_each_shipped_placeholder_naming_the_variable_not_the_value() {
    for (role, variable, placeholder) in [
        (
            "api",
            "FRAMEGATE_JWT_SECRET",
            "change-me-change-me-change-me-change-me",
        ),
        (
            "api",
            "FRAMEGATE_BLOB_SIGNING_KEY",
            "change-me-too-change-me-too-change-me-too",
        ),
        (
            "worker",
            "FRAMEGATE_BLOB_SIGNING_KEY",
            "change-me-too-change-me-too-change-me-too",
        ),
        (
            "migrate",
            "DATABASE_URL",
            "postgres://framegate:framegate@127.0.0.1:1/framegate",
        ),
        ("relay", "FRAMEGATE_KAFKA_PROP_SASL_PASSWORD", "changeme"),
        (
            "api",
            "FRAMEGATE_STRIPE_WEBHOOK_SECRET",
            "whsec_test_framegate_billing",
        ),
    ] {
        let (started, stderr) = run_role(
            role,
            &[
                ("FRAMEGATE_ENV", "production"),
                ("FRAMEGATE_JWT_SECRET", JWT),
                ("FRAMEGATE_BLOB_SIGNING_KEY", BLOB_KEY),
                ("FRAMEGATE_MASTER_KEYS", MASTER_KEYS),
                ("FRAMEGATE_EMAIL_HASH_KEY", EMAIL_KEY),
                ("FRAMEGATE_KAFKA_BROKERS", "127.0.0.1:1"),
                (variable, placeholder),
            ],
        );
        assert!(!started, "{role} started with {variable}={placeholder}");
        assert!(
            stderr.contains(&format!(
                "configuration: {variable}: refused with FRAMEGATE_ENV=production"
            )) && stderr.contains("placeholder"),
            "{role}, {variable}: {stderr}"
        );
        assert!(
            !stderr.contains("framegate@") && !stderr.contains("change-me"),
            "{stderr}"
        );
        assert!(
            !stderr.contains("cannot connect"),
            "checked before connecting: {stderr}"
        );
    }
}

#[test]
fn production_refuses_a_placeholder_password_given_with_database_url_too() {
    let output = Command::new(env!("CARGO_BIN_EXE_framegate"))
        .args([
            "--database-url",
            "postgres://framegate:framegate@127.0.0.1:1/framegate",
            "migrate",
        ])
        .env("FRAMEGATE_ENV", "production")
        .env_remove("DATABASE_URL")
        .output()
        .expect("run framegate");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(
        stderr.contains("configuration: DATABASE_URL: refused") && stderr.contains("placeholder"),
        "{stderr}"
    );
}

#[test]
fn production_api_without_a_jwt_secret_or_with_a_short_one_is_refused() {
    let (started, stderr) = run_role(
        "api",
        &[
            ("FRAMEGATE_ENV", "production"),
            ("FRAMEGATE_BLOB_SIGNING_KEY", BLOB_KEY),
            ("FRAMEGATE_MASTER_KEYS", MASTER_KEYS),
            ("FRAMEGATE_EMAIL_HASH_KEY", EMAIL_KEY),
        ],
    );
    assert!(!started);
    assert!(
        stderr.contains("FRAMEGATE_JWT_SECRET: is required when FRAMEGATE_ENV=production"),
        "{stderr}"
    );
    let (started, stderr) = run_role(
        "api",
        &[
            ("FRAMEGATE_ENV", "production"),
            ("FRAMEGATE_JWT_SECRET", JWT),
            ("FRAMEGATE_MASTER_KEYS", MASTER_KEYS),
            ("FRAMEGATE_EMAIL_HASH_KEY", EMAIL_KEY),
            (
                "FRAMEGATE_BLOB_SIGNING_KEY",
                "Xq3v9LmZ2pRt8KwY4nBc7HdJ6sFa1Ge",
            ),
        ],
    );
    assert!(!started);
    assert!(
        stderr.contains("FRAMEGATE_BLOB_SIGNING_KEY") && stderr.contains("at least 32"),
        "{stderr}"
    );
    assert!(
        !stderr.contains("Xq3v9LmZ2pRt8KwY4nBc7HdJ6sFa1Ge"),
        "{stderr}"
    );
}

#[test]
fn production_with_strong_secrets_gets_past_configuration_to_the_database() {
    let (started, stderr) = run_role(
        "api",
        &[
            ("FRAMEGATE_ENV", "production"),
            ("FRAMEGATE_JWT_SECRET", JWT),
            ("FRAMEGATE_BLOB_SIGNING_KEY", BLOB_KEY),
            ("FRAMEGATE_MASTER_KEYS", MASTER_KEYS),
            ("FRAMEGATE_EMAIL_HASH_KEY", EMAIL_KEY),
            ("FRAMEGATE_HTTP_ADDR", "0.0.0.0:0"),
        ],
    );
    assert!(!started);
    assert!(
        stderr.contains("cannot connect to DATABASE_URL"),
        "{stderr}"
    );
    assert!(!stderr.contains("configuration:"), "{stderr}");
}

#[test]
fn production_without_the_keys_of_personal_data_is_refused_naming_them() {
    for (missing, present) in [
        (
            "FRAMEGATE_MASTER_KEYS",
            ("FRAMEGATE_EMAIL_HASH_KEY", EMAIL_KEY),
        ),
        (
            "FRAMEGATE_EMAIL_HASH_KEY",
            ("FRAMEGATE_MASTER_KEYS", MASTER_KEYS),
        ),
    ] {
        let (started, stderr) = run_role(
            "worker",
            &[
                ("FRAMEGATE_ENV", "production"),
                ("FRAMEGATE_JWT_SECRET", JWT),
                ("FRAMEGATE_BLOB_SIGNING_KEY", BLOB_KEY),
                present,
            ],
        );
        assert!(!started);
        assert!(
            stderr.contains(&format!("configuration: {missing}: is required")),
            "{missing}: {stderr}"
        );
    }
}

#[test]
fn roles_listening_beyond_loopback_without_framegate_env_are_refused() {
    for (role, variable, addr) in [
        ("api", "FRAMEGATE_HTTP_ADDR", "0.0.0.0:0"),
        ("relay", "FRAMEGATE_RELAY_HEALTH_ADDR", "0.0.0.0:0"),
    ] {
        let (started, stderr) = run_role(
            role,
            &[(variable, addr), ("FRAMEGATE_KAFKA_BROKERS", "127.0.0.1:1")],
        );
        assert!(!started, "{role}");
        assert!(
            stderr.contains("configuration: FRAMEGATE_ENV: is not set")
                && stderr.contains(&format!("{variable}={addr}")),
            "{role}: {stderr}"
        );
        // Declared development may serve a network: it gets as far as the database.
        let (_, stderr) = run_role(
            role,
            &[
                (variable, addr),
                ("FRAMEGATE_ENV", "development"),
                ("FRAMEGATE_KAFKA_BROKERS", "127.0.0.1:1"),
            ],
        );
        assert!(
            stderr.contains("cannot connect to DATABASE_URL"),
            "{role}: {stderr}"
        );
    }
}

#[test]
fn framegate_dev_refuses_to_run_as_production() {
    let (started, stderr) = run_role("dev", &[("FRAMEGATE_ENV", "production")]);
    assert!(!started);
    assert!(
        stderr.contains("framegate dev is for development"),
        "{stderr}"
    );
}

#[test]
fn help_never_shows_the_database_password_from_the_environment() {
    let output = Command::new(env!("CARGO_BIN_EXE_framegate"))
        .arg("--help")
        .env(
            "DATABASE_URL",
            "postgres://framegate:Hk4Qz8Lm2Xv7Rt9W@db:5432/framegate",
        )
        .output()
        .expect("run");
    let help = String::from_utf8_lossy(&output.stdout);
    assert!(help.contains("DATABASE_URL"), "{help}");
    assert!(!help.contains("Hk4Qz8Lm2Xv7Rt9W"), "{help}");
}

/// Runs `framegate healthcheck --addr addr`: (exit 0, stdout, stderr).
fn healthcheck(addr: &str) -> (bool, String, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_framegate"))
        .args(["healthcheck", "--addr", addr])
        .output()
        .expect("run healthcheck");
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[tokio::test]
async fn healthcheck_passes_once_the_api_is_ready_and_fails_when_it_is_gone() {
    let db = TestDatabase::new().await;
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("free port")
        .port();
    let addr = format!("127.0.0.1:{port}");
    let (up, _, stderr) = healthcheck(&addr);
    assert!(!up, "nothing listens yet");
    assert!(stderr.contains("cannot connect"), "{stderr}");

    let blobs = tempfile::tempdir().expect("blob dir");
    let mut api = Command::new(env!("CARGO_BIN_EXE_framegate"))
        .arg("api")
        .env("DATABASE_URL", db.url())
        .env("FRAMEGATE_HTTP_ADDR", &addr)
        .env("FRAMEGATE_API_PROJECTORS", "false")
        .env("FRAMEGATE_BLOB_DIR", blobs.path())
        .env("FRAMEGATE_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start framegate api");
    let deadline = Instant::now() + Duration::from_secs(60);
    let stdout = loop {
        let (up, stdout, _) = healthcheck(&addr);
        if up {
            break stdout;
        }
        assert!(api.try_wait().expect("api").is_none(), "the API exited");
        assert!(Instant::now() < deadline, "not ready within 60 s");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(stdout.starts_with("HTTP/1.1 200"), "{stdout}");

    let (up, _, stderr) = healthcheck(&format!("127.0.0.1:{port}/"));
    assert!(!up && stderr.contains("not an address"), "{stderr}");
    api.kill().expect("kill");
    api.wait().expect("wait");
    let (up, _, _) = healthcheck(&addr);
    assert!(!up, "the API is gone");
}
