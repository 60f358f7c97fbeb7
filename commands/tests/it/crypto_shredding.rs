//! Crypto-shredding against real Postgres: personal fields stored sealed, opened for every
//! reader, erased for good with the key, and master keys rotated (ADR 0043).

use chrono::{Duration, Utc};
use framegate_commands::erasure::erase;
use framegate_commands::pii::{self, crypto::SecretKey, Keyring};
use framegate_commands::testing::TestDatabase;
use framegate_commands::users::{register, registered_user_by_email, Registration};
use framegate_commands::{Actor, CommandError, CommandMetadata, EventStore, StoredEvent};
use framegate_domain::pii::ERASED;
use framegate_domain::{
    hash_token, CreditCommand, Credits, ErasedBy, PasswordHash, Role, UserError, UserId,
};
use sqlx::PgPool;
use uuid::Uuid;

const IP: &str = "198.51.100.23";
const AGENT: &str = "shredder-test/7";

fn registration(email: &str) -> Registration {
    Registration {
        user_id: UserId::from_uuid(Uuid::now_v7()),
        email: email.to_owned(),
        password_hash: PasswordHash::new("$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA"),
        verification_token_hash: hash_token("verify-me"),
        verification_expires_at: Utc::now() + Duration::hours(24),
        role: Role::User,
    }
}

fn from_client() -> CommandMetadata {
    CommandMetadata::new_request(Actor::System).with_client(Some(IP.into()), Some(AGENT.into()))
}

async fn signed_up(store: &EventStore, email: &str) -> UserId {
    let registration = registration(email);
    let id = registration.user_id;
    register(store, registration, &from_client())
        .await
        .expect("register");
    id
}

/// The whole events table as text.
async fn log_text(pool: &PgPool) -> String {
    sqlx::query_scalar("SELECT coalesce(string_agg(e::text, '|'), '') FROM events e")
        .fetch_one(pool)
        .await
        .expect("log")
}

/// The user's registration as every reader gets it: read, then opened.
async fn opened_registration(pool: &PgPool, user: UserId) -> StoredEvent {
    let mut rows: Vec<StoredEvent> = sqlx::query_as(
        "SELECT global_position, tx_id::text::bigint AS tx_id, event_id, recorded_at,
                aggregate_type, aggregate_id, sequence, event_type, event_version,
                payload, metadata
           FROM events WHERE aggregate_id = $1 AND event_type = 'UserRegistered'",
    )
    .bind(user.to_string())
    .fetch_all(pool)
    .await
    .expect("rows");
    pii::open_stored(pool, &mut rows).await.expect("open");
    rows.pop().expect("registered")
}

fn keyring(versions: &[(u32, u8)]) -> Keyring {
    let masters = versions
        .iter()
        .map(|&(version, byte)| (version, SecretKey::from_bytes(&[byte; 32]).expect("32")))
        .collect();
    Keyring::new(masters, SecretKey::from_bytes(&[9; 32]).expect("32")).expect("keyring")
}

#[tokio::test]
async fn personal_fields_are_stored_sealed_and_every_reader_gets_them_back() {
    let db = TestDatabase::new().await;
    let store = EventStore::new(db.pool.clone());
    let user = signed_up(&store, "Grace.Hopper@Example.com").await;

    let stored = log_text(&db.pool).await;
    for plaintext in ["grace.hopper@example.com", IP, AGENT] {
        assert!(!stored.contains(plaintext), "{plaintext} stored in clear");
    }
    assert!(stored.contains("$pii"), "sealed envelopes: {stored}");

    let event = opened_registration(&db.pool, user).await;
    assert_eq!(
        event.payload["UserRegistered"]["email"],
        "grace.hopper@example.com"
    );
    assert_eq!(event.meta("client_ip"), Some(IP));
    assert_eq!(event.meta("user_agent"), Some(AGENT));
    // Aggregates load through the same opening (a fresh store: nothing cached).
    let loaded = EventStore::new(db.pool.clone())
        .users()
        .load(&user.to_string())
        .await
        .expect("load");
    assert_eq!(loaded.email(), Some("grace.hopper@example.com"));
    // Uniqueness without the plaintext: the keyed hash is claimed.
    let again = register(
        &store,
        registration("grace.hopper@example.com"),
        &from_client(),
    )
    .await;
    assert!(matches!(again, Err(CommandError::EmailTaken)), "{again:?}");
}

#[tokio::test]
async fn an_erased_user_reads_as_erased_and_the_address_can_register_again() {
    let db = TestDatabase::new().await;
    let store = EventStore::new(db.pool.clone());
    let user = signed_up(&store, "ada@example.com").await;
    let admin = UserId::from_uuid(Uuid::now_v7());
    let meta = CommandMetadata::new_request(Actor::User(admin));
    erase(&store, user, ErasedBy::Admin, &meta)
        .await
        .expect("erase");

    let event = opened_registration(&db.pool, user).await;
    assert_eq!(event.payload["UserRegistered"]["email"], ERASED);
    assert_eq!(event.meta("client_ip"), Some(ERASED));
    assert_eq!(event.meta("user_agent"), Some(ERASED));
    let fresh = EventStore::new(db.pool.clone());
    let loaded = fresh.users().load(&user.to_string()).await.expect("load");
    assert!(loaded.is_erased() && loaded.is_disabled());
    assert_eq!(loaded.email(), None);
    let twice = erase(&fresh, user, ErasedBy::Admin, &meta).await;
    assert!(
        matches!(twice, Err(CommandError::Domain(UserError::AlreadyErased))),
        "{twice:?}"
    );

    // The key row is a tombstone, the claim is gone: the address belongs to nobody.
    let wrapped: Option<Vec<u8>> =
        sqlx::query_scalar("SELECT wrapped_key FROM data_keys WHERE user_id = $1")
            .bind(user.to_string())
            .fetch_one(&db.pool)
            .await
            .expect("tombstone");
    assert_eq!(wrapped, None);
    assert_eq!(
        registered_user_by_email(&db.pool, "ada@example.com")
            .await
            .expect("lookup"),
        None
    );
    let newcomer = signed_up(&store, "ada@example.com").await;
    assert_ne!(newcomer, user);
    let event = opened_registration(&db.pool, newcomer).await;
    assert_eq!(event.payload["UserRegistered"]["email"], "ada@example.com");
}

/// After the erasure nothing new is recorded from the user's own requests (one that was
/// authenticated before and reaches the store after it), while the system's writes about
/// the account go on, the address of whoever called for it written `[erased]` (a payment
/// provider's webhook about the account, say).
#[tokio::test]
async fn after_the_erasure_the_users_own_writes_are_refused_and_the_systems_go_on() {
    let db = TestDatabase::new().await;
    let store = EventStore::new(db.pool.clone());
    let user = signed_up(&store, "late@example.com").await;
    let owner = CommandMetadata::new_request(Actor::User(user));
    erase(&store, user, ErasedBy::Owner, &owner)
        .await
        .expect("erase");
    let grant = || CreditCommand::Grant {
        amount: Credits::new(5),
        reason: "late".into(),
        granted_by: "system".into(),
    };
    let own = owner.with_client(Some(IP.into()), Some(AGENT.into()));
    let refused = store
        .credits()
        .execute(&user.to_string(), grant(), &own)
        .await;
    assert!(
        matches!(refused, Err(CommandError::AccountErased)),
        "{refused:?}"
    );

    let systems = store
        .credits()
        .execute(&user.to_string(), grant(), &from_client())
        .await;
    assert!(systems.is_ok(), "{systems:?}");
    let addresses: Vec<Option<String>> = sqlx::query_scalar(
        "SELECT metadata ->> 'client_ip' FROM events
          WHERE aggregate_id = $1 AND payload -> 'CreditsGranted' ->> 'reason' = 'late'",
    )
    .bind(user.to_string())
    .fetch_all(&db.pool)
    .await
    .expect("grants");
    assert_eq!(
        addresses,
        vec![Some(ERASED.to_owned())],
        "only the system's"
    );
}

#[tokio::test]
async fn rotation_rewraps_every_data_key_and_everything_still_opens() {
    let db = TestDatabase::new().await;
    pii::install(keyring(&[(1, 1)]));
    let store = EventStore::new(db.pool.clone());
    let mut users = Vec::new();
    for n in 0..3 {
        users.push(signed_up(&store, &format!("rotate{n}@example.com")).await);
    }

    pii::install(keyring(&[(2, 2), (1, 1)]));
    let pii = pii::current();
    let rotated = pii
        .keys
        .rotate(&pii.keyring, &db.pool)
        .await
        .expect("rotate");
    assert_eq!(rotated, 3);
    let versions: Vec<i32> = sqlx::query_scalar("SELECT master_key_version FROM data_keys")
        .fetch_all(&db.pool)
        .await
        .expect("versions");
    assert_eq!(versions, [2, 2, 2]);
    assert_eq!(
        pii.keys
            .rotate(&pii.keyring, &db.pool)
            .await
            .expect("again"),
        0
    );

    // Without the old master key everything still opens.
    pii::install(keyring(&[(2, 2)]));
    for (n, user) in users.iter().enumerate() {
        let event = opened_registration(&db.pool, *user).await;
        assert_eq!(
            event.payload["UserRegistered"]["email"],
            format!("rotate{n}@example.com")
        );
        assert_eq!(event.meta("client_ip"), Some(IP));
    }
    // Without the new one nothing does, and that is an error, not an erasure.
    pii::install(keyring(&[(1, 1)]));
    let mut rows: Vec<StoredEvent> = sqlx::query_as(
        "SELECT global_position, tx_id::text::bigint AS tx_id, event_id, recorded_at,
                aggregate_type, aggregate_id, sequence, event_type, event_version,
                payload, metadata FROM events",
    )
    .fetch_all(&db.pool)
    .await
    .expect("rows");
    assert!(pii::open_stored(&db.pool, &mut rows).await.is_err());
}

/// A registration stored before encryption: plaintext in the row (the trigger forbids
/// changing it), readable as such, its address still taken; once the user is erased every
/// reader shows `[erased]` for it, and the address is free again.
#[tokio::test]
async fn a_registration_stored_before_encryption_reads_as_erased_after_the_erasure() {
    let db = TestDatabase::new().await;
    let store = EventStore::new(db.pool.clone());
    let user = UserId::from_uuid(Uuid::now_v7());
    let old = serde_json::to_value(framegate_domain::UserEvent::UserRegistered {
        user_id: user,
        email: "legacy@example.com".into(),
        password_hash: PasswordHash::new("$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA"),
        role: Role::User,
        verification_token_hash: hash_token("verify-me"),
        verification_expires_at: Utc::now() + Duration::hours(24),
    })
    .expect("payload");
    assert!(old.pointer("/UserRegistered/email").is_some());
    sqlx::query(
        "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version,
                             payload, metadata)
         VALUES ('User', $1, 1, 'UserRegistered', '1.0', $2, $3)",
    )
    .bind(user.to_string())
    .bind(&old)
    .bind(serde_json::json!({"actor": "system", "client_ip": IP, "user_agent": AGENT}))
    .execute(&db.pool)
    .await
    .expect("a row from before encryption");
    // What `framegate migrate` does at start-up: the old address is claimed.
    let claimed = pii::current()
        .claim_plaintext_emails(&db.pool)
        .await
        .expect("claim");
    assert_eq!(claimed, 1);
    let taken = register(&store, registration("legacy@example.com"), &from_client()).await;
    assert!(matches!(taken, Err(CommandError::EmailTaken)), "{taken:?}");
    let event = opened_registration(&db.pool, user).await;
    assert_eq!(
        event.payload["UserRegistered"]["email"],
        "legacy@example.com"
    );
    assert_eq!(event.meta("client_ip"), Some(IP));

    erase(
        &store,
        user,
        ErasedBy::Owner,
        &CommandMetadata::new_request(Actor::User(user)),
    )
    .await
    .expect("erase");
    let event = opened_registration(&db.pool, user).await;
    assert_eq!(event.payload["UserRegistered"]["email"], ERASED);
    assert_eq!(event.meta("client_ip"), Some(ERASED));
    assert_eq!(event.meta("user_agent"), Some(ERASED));
    // The plaintext itself stays in the row: the ADR says so, and what an operator can do.
    assert!(log_text(&db.pool).await.contains("legacy@example.com"));
    assert_eq!(
        pii::current()
            .claim_plaintext_emails(&db.pool)
            .await
            .expect("claim again"),
        0,
        "an erased user's old address is not claimed again"
    );
    signed_up(&store, "legacy@example.com").await;
}

/// Whether data `sealer` sealed opens with `opener`.
fn opens(sealer: &SecretKey, opener: &SecretKey) -> bool {
    let sealed = sealer.seal_text(b"a paper boat", b"aad");
    opener.open_text(&sealed, b"aad").is_some()
}

#[tokio::test]
async fn a_key_made_by_a_write_that_rolled_back_is_never_used_again() {
    let db = TestDatabase::new().await;
    let pii = pii::current();
    let user = Uuid::now_v7().to_string();
    // The user's first sealed write makes their key, then rolls back (a lost race, say).
    let mut tx = db.pool.begin().await.expect("tx");
    let pii::KeyState::Live(lost) = pii
        .keys
        .for_write(&pii.keyring, &mut tx, &user)
        .await
        .expect("first key")
    else {
        panic!("a live key");
    };
    tx.rollback().await.expect("rollback");
    // The next write in the same process makes (and commits) the key it seals with.
    let mut tx = db.pool.begin().await.expect("tx");
    let pii::KeyState::Live(written) = pii
        .keys
        .for_write(&pii.keyring, &mut tx, &user)
        .await
        .expect("second key")
    else {
        panic!("a live key");
    };
    tx.commit().await.expect("commit");
    let read = pii
        .keys
        .for_read(&pii.keyring, &db.pool, std::slice::from_ref(&user))
        .await
        .expect("read");
    let Some(pii::KeyState::Live(read)) = read.get(&user) else {
        panic!("a live key for readers");
    };
    assert!(opens(&written, read), "what the write sealed, readers open");
    assert!(
        !opens(&lost, read),
        "the rolled-back key was not used for the write"
    );
}

/// A write in flight holds its user's key row under a share lock until it commits. Rotation
/// waits for it instead of skipping the row: it reports every key it re-wrapped, and none is
/// left under the old master key when it says it is done.
#[tokio::test]
async fn rotation_waits_for_keys_that_writes_hold_and_counts_them_all() {
    let db = TestDatabase::new().await;
    pii::install(keyring(&[(1, 1)]));
    let store = EventStore::new(db.pool.clone());
    let mut users = Vec::new();
    for n in 0..3 {
        users.push(signed_up(&store, &format!("held{n}@example.com")).await);
    }
    pii::install(keyring(&[(2, 2), (1, 1)]));

    // What `DataKeys::for_write` takes for a write of the first user, not yet committed.
    let mut write = db.pool.begin().await.expect("tx");
    sqlx::query("SELECT 1 FROM data_keys WHERE user_id = $1 FOR SHARE")
        .bind(users[0].to_string())
        .execute(&mut *write)
        .await
        .expect("share lock");
    let pool = db.pool.clone();
    let rotation = tokio::spawn(async move {
        let pii = pii::current();
        pii.keys.rotate(&pii.keyring, &pool).await
    });
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    assert!(
        !rotation.is_finished(),
        "rotation finished while a key was held"
    );
    write.commit().await.expect("the write commits");
    let rotated = rotation.await.expect("task").expect("rotate");
    assert_eq!(rotated, 3, "the held key is re-wrapped and counted");
    let old: i64 =
        sqlx::query_scalar("SELECT count(*) FROM data_keys WHERE master_key_version <> 2")
            .fetch_one(&db.pool)
            .await
            .expect("count");
    assert_eq!(old, 0);
}

/// The erasure's scrubs find their rows by index (migrations 0029 and 0030).
#[tokio::test]
async fn the_erasures_scrubs_are_indexed() {
    let db = TestDatabase::new().await;
    for index in ["webhook_deliveries_owner_idx", "idempotency_keys_user_idx"] {
        let found: bool = sqlx::query_scalar("SELECT to_regclass($1) IS NOT NULL")
            .bind(format!("public.{index}"))
            .fetch_one(&db.pool)
            .await
            .expect("regclass");
        assert!(found, "{index}");
    }
}

#[tokio::test]
async fn an_erasure_deletes_the_endpoints_answers_kept_in_run_records() {
    use framegate_commands::webhook_deliveries::{enqueue, NewDelivery, Target};
    let db = TestDatabase::new().await;
    let store = EventStore::new(db.pool.clone());
    let user = signed_up(&store, "runs@example.com").await;
    let other = signed_up(&store, "other@example.com").await;
    let mut tx = db.pool.begin().await.expect("tx");
    for (owner, endpoint) in [(user, Uuid::now_v7()), (other, Uuid::now_v7())] {
        let delivery = NewDelivery {
            target: Target::Endpoint(endpoint),
            owner: owner.as_uuid(),
            message_id: format!("msg_{}", Uuid::now_v7().simple()),
            event_type: "video.completed".into(),
            event_at: Utc::now(),
            video_id: None,
            body: r#"{"prompt":"a secret garden"}"#.into(),
            trace: None,
        };
        enqueue(&mut tx, &[delivery]).await.expect("enqueue");
    }
    // A run delivered both (as the sender records it): the answers echo the prompt.
    sqlx::query(
        "INSERT INTO webhook_runs
             (queue, last_seq, first_seq, seqs, started_at, status, latency_ms, response_body)
         SELECT queue, seq, seq, ARRAY[seq], ARRAY[now()], ARRAY[200], ARRAY[3],
                ARRAY['got: a secret garden'] FROM webhook_deliveries",
    )
    .execute(&mut *tx)
    .await
    .expect("runs");
    tx.commit().await.expect("commit");
    let meta = CommandMetadata::new_request(Actor::User(UserId::from_uuid(Uuid::now_v7())));
    erase(&store, user, ErasedBy::Admin, &meta)
        .await
        .expect("erase");
    let owners: Vec<Uuid> = sqlx::query_scalar(
        "SELECT d.owner_id FROM webhook_runs r JOIN webhook_deliveries d USING (queue)",
    )
    .fetch_all(&db.pool)
    .await
    .expect("runs left");
    let runs: i64 = sqlx::query_scalar("SELECT count(*) FROM webhook_runs")
        .fetch_one(&db.pool)
        .await
        .expect("count");
    assert_eq!(
        (owners, runs),
        (vec![other.as_uuid()], 1),
        "only the other user's run stays"
    );
}
