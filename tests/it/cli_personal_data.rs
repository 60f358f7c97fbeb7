//! The `framegate` commands that look after personal data in events (ADR 0043): `keys
//! rotate` re-wraps every data key, `events seal` seals rows written before encryption.

use std::process::Command;

use framegate_commands::testing::TestDatabase;

use crate::cli::{EMAIL_KEY, MASTER_KEYS};

/// `framegate keys rotate` re-wraps the data keys made under the old master key with the
/// new one (the first of FRAMEGATE_MASTER_KEYS), and the personal data still opens with the
/// new key alone (ADR 0043).
#[tokio::test]
async fn keys_rotate_rewraps_every_data_key_under_the_first_master_key() {
    use framegate_commands::pii::{self, crypto::SecretKey, Keyring};

    let db = TestDatabase::new().await;
    let email_key = SecretKey::from_bytes(b"Another 32-byte key for the hash").expect("32");
    let old = SecretKey::from_bytes(b"Who would guess this 32-byte key").expect("32");
    pii::install(Keyring::new(vec![(1, old)], email_key.clone()).expect("keyring"));
    let user = framegate_domain::UserId::from_uuid(uuid::Uuid::now_v7());
    let registration = framegate_commands::users::Registration {
        user_id: user,
        email: "rotate@example.com".into(),
        password_hash: framegate_domain::PasswordHash::new(
            "$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA",
        ),
        verification_token_hash: framegate_domain::hash_token("verify"),
        verification_expires_at: chrono::Utc::now() + chrono::Duration::days(1),
        role: framegate_domain::Role::User,
    };
    let store = framegate_commands::EventStore::new(db.pool.clone());
    let system =
        framegate_commands::CommandMetadata::new_request(framegate_commands::Actor::System);
    framegate_commands::users::register(&store, registration, &system)
        .await
        .expect("register");
    let user = user.to_string();

    let new = "MzIgYnl0ZXMgb2YgYSBicmFuZCBuZXcgbWFzdGVyIGs=";
    let output = Command::new(env!("CARGO_BIN_EXE_framegate"))
        .args(["keys", "rotate"])
        .env("DATABASE_URL", db.url())
        .env("FRAMEGATE_MASTER_KEYS", format!("2:{new},{MASTER_KEYS}"))
        .env("FRAMEGATE_EMAIL_HASH_KEY", EMAIL_KEY)
        .output()
        .expect("run framegate");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&output.stdout).trim(),
        "1 data keys re-wrapped under master key version 2"
    );
    let versions: Vec<i32> = sqlx::query_scalar("SELECT master_key_version FROM data_keys")
        .fetch_all(&db.pool)
        .await
        .expect("versions");
    assert_eq!(versions, [2]);

    let new = SecretKey::from_bytes(b"32 bytes of a brand new master k").expect("32");
    pii::install(Keyring::new(vec![(2, new)], email_key).expect("keyring"));
    let history = framegate_projections::audit::stream(&db.pool, "User", &user)
        .await
        .expect("audit");
    assert_eq!(
        history[0].payload["UserRegistered"]["email"],
        "rotate@example.com"
    );
}

/// `framegate events seal` seals a registration written before encryption in place: the row
/// no longer holds the address, every reader still gets it, and a second run has nothing to
/// do (ADR 0043).
#[tokio::test]
async fn events_seal_seals_rows_written_before_encryption_in_place() {
    let db = TestDatabase::new().await;
    let user = framegate_domain::UserId::from_uuid(uuid::Uuid::now_v7());
    let registered = framegate_domain::UserEvent::UserRegistered {
        user_id: user,
        email: "sealed.later@example.com".into(),
        password_hash: framegate_domain::PasswordHash::new(
            "$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA",
        ),
        role: framegate_domain::Role::User,
        verification_token_hash: framegate_domain::hash_token("verify"),
        verification_expires_at: chrono::Utc::now() + chrono::Duration::days(1),
    };
    sqlx::query(
        "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version,
                             payload, metadata)
         VALUES ('User', $1, 1, 'UserRegistered', '1.0', $2, $3)",
    )
    .bind(user.to_string())
    .bind(serde_json::to_value(&registered).expect("payload"))
    .bind(serde_json::json!({"actor": "system", "client_ip": "192.0.2.7"}))
    .execute(&db.pool)
    .await
    .expect("a row from before encryption");

    let seal = || {
        Command::new(env!("CARGO_BIN_EXE_framegate"))
            .args(["events", "seal", "--batch", "10"])
            .env("DATABASE_URL", db.url())
            // The development keys, as this test opens the rows with.
            .env_remove("FRAMEGATE_ENV")
            .env_remove("FRAMEGATE_MASTER_KEYS")
            .env_remove("FRAMEGATE_EMAIL_HASH_KEY")
            .output()
            .expect("run framegate")
    };
    let output = seal();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains("dropped events_user_email_key"), "{stdout}");
    assert!(
        stdout.contains("1 rows sealed, 0 rows of erased users"),
        "{stdout}"
    );
    let row: String = sqlx::query_scalar("SELECT e::text FROM events e WHERE aggregate_id = $1")
        .bind(user.to_string())
        .fetch_one(&db.pool)
        .await
        .expect("row");
    assert!(
        !row.contains("sealed.later@example.com") && !row.contains("192.0.2.7"),
        "{row}"
    );
    let history = framegate_projections::audit::stream(&db.pool, "User", &user.to_string())
        .await
        .expect("audit");
    assert_eq!(
        history[0].payload["UserRegistered"]["email"],
        "sealed.later@example.com"
    );
    assert_eq!(history[0].client_ip.as_deref(), Some("192.0.2.7"));

    let again = seal();
    assert!(again.status.success());
    assert!(
        String::from_utf8_lossy(&again.stdout).contains("0 rows sealed"),
        "{}",
        String::from_utf8_lossy(&again.stdout)
    );
}
