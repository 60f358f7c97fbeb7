//! `framegate events seal` (ADR 0043, stop 28): rows written before encryption, stored raw in
//! today's pre-encryption format, are sealed in place. Afterwards a dump of the database holds
//! none of their personal data, every reader (aggregate loading, the audit log, replay) still
//! shows the original values, the plaintext email index is gone while addresses stay unique,
//! the append-only trigger still refuses every other change, and an erasure afterwards makes
//! the values `[erased]` like those of rows sealed when written.

use crate::replay::replay_all;
use crate::support::{catch_up, system};

use chrono::{Duration, Utc};
use framegate_commands::erasure::erase;
use framegate_commands::pii;
use framegate_commands::testing::TestDatabase;
use framegate_commands::unit::serialize;
use framegate_commands::users::{register, Registration};
use framegate_commands::{Actor, CommandError, CommandMetadata, EventStore};
use framegate_domain::pii::ERASED;
use framegate_domain::{
    hash_token, CreditAccount, CreditEvent, Credits, ErasedBy, PasswordHash, ProviderPreference,
    Role, User, UserEvent, UserId, Video, VideoEvent, VideoId, VideoSpec,
};
use framegate_projections::audit;
use framegate_projections::replay::ReplayOptions;
use serde_json::Value;
use sqlx::PgPool;
use uuid::Uuid;

const EMAIL: &str = "early.adopter@example.com";
const IP: &str = "198.51.100.61";
const AGENT: &str = "legacy-client/0.9";
const PROMPT: &str = "the orchard behind Wrenfield cottage";
const NEGATIVE: &str = "no Ostrowski family photos";
/// The client address of a system event that belongs to nobody (left in clear, as appended).
const NOBODYS_IP: &str = "192.0.2.250";

fn password() -> PasswordHash {
    PasswordHash::new("$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA")
}

fn from_client(actor: Actor) -> CommandMetadata {
    CommandMetadata::new_request(actor).with_client(Some(IP.into()), Some(AGENT.into()))
}

/// Inserts events exactly as the store wrote them before encryption: `serialize`'s rows, in
/// clear, without the sealing of today's append path.
async fn insert_raw<A: cqrs_es::Aggregate>(
    pool: &PgPool,
    id: &str,
    after: usize,
    events: &[A::Event],
    metadata: &CommandMetadata,
) {
    for event in serialize::<A>(id, after, events, metadata).expect("serialize") {
        sqlx::query(
            "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type,
                                 event_version, payload, metadata)
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(&event.aggregate_type)
        .bind(&event.aggregate_id)
        .bind(event.sequence as i64)
        .bind(&event.event_type)
        .bind(&event.event_version)
        .bind(&event.payload)
        .bind(&event.metadata)
        .execute(pool)
        .await
        .expect("a row from before encryption");
    }
}

fn registered(user: UserId, email: &str) -> UserEvent {
    UserEvent::UserRegistered {
        user_id: user,
        email: email.into(),
        password_hash: password(),
        role: Role::User,
        verification_token_hash: hash_token("verify-me"),
        verification_expires_at: Utc::now() + Duration::hours(24),
    }
}

/// A user who registered, got credits and asked for a video, all before encryption.
async fn legacy_user(pool: &PgPool) -> (UserId, VideoId) {
    let user = UserId::from_uuid(Uuid::now_v7());
    let video = VideoId::from_uuid(Uuid::now_v7());
    let id = user.to_string();
    insert_raw::<User>(
        pool,
        &id,
        0,
        &[registered(user, EMAIL)],
        &from_client(Actor::System),
    )
    .await;
    let grant = CreditEvent::CreditsGranted {
        amount: Credits::new(100),
        reason: "welcome".into(),
        granted_by: "system".into(),
    };
    let reserve = CreditEvent::CreditsReserved {
        video_id: video,
        amount: Credits::new(4),
    };
    insert_raw::<CreditAccount>(pool, &id, 0, &[grant], &system()).await;
    insert_raw::<CreditAccount>(pool, &id, 1, &[reserve], &from_client(Actor::User(user))).await;
    let spec = VideoSpec {
        owner: user,
        prompt: PROMPT.into(),
        negative_prompt: Some(NEGATIVE.into()),
        provider: ProviderPreference::Auto,
        model: Some("simulator-v1".into()),
        duration_seconds: 4,
        aspect_ratio: "16:9".into(),
        resolution: "480p".into(),
        image_id: None,
        seed: None,
        estimated_cost: Credits::new(4),
        generate_audio: false,
        external_id: None,
        webhook: None,
    };
    let requested = VideoEvent::VideoRequested {
        video_id: video,
        spec,
    };
    insert_raw::<Video>(
        pool,
        &video.to_string(),
        0,
        &[requested],
        &from_client(Actor::User(user)),
    )
    .await;
    (user, video)
}

/// `pg_dump` of the whole database, as text.
fn dump(db: &TestDatabase) -> String {
    let output =
        std::process::Command::new(std::env::var("PG_DUMP").unwrap_or_else(|_| "pg_dump".into()))
            .arg("--no-owner")
            // libpq refuses sqlx's own URL parameters.
            .arg(db.url().split('?').next().expect("a URL"))
            .output()
            .expect("pg_dump runs");
    assert!(
        output.status.success(),
        "pg_dump: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).expect("utf-8 dump")
}

fn personal_lines(dump: &str, needles: &[&str]) -> Vec<String> {
    dump.lines()
        .filter(|line| needles.iter().any(|needle| line.contains(needle)))
        .map(str::to_owned)
        .collect()
}

async fn row(pool: &PgPool, table: &str, id: Uuid) -> Value {
    sqlx::query_scalar(&format!(
        "SELECT to_jsonb(t) FROM {table} t WHERE t.id = $1"
    ))
    .bind(id)
    .fetch_one(pool)
    .await
    .expect("row")
}

async fn index_exists(pool: &PgPool) -> bool {
    sqlx::query_scalar("SELECT to_regclass('public.events_user_email_key') IS NOT NULL")
        .fetch_one(pool)
        .await
        .expect("regclass")
}

/// What every reader shows of the user and the video: (email by aggregate loading, prompt
/// by aggregate loading, email and client address by the audit log, prompt by the audit log).
async fn readers(pool: &PgPool, user: UserId, video: VideoId) -> [Option<String>; 5] {
    let store = EventStore::new(pool.clone());
    let loaded = store.users().load(&user.to_string()).await.expect("user");
    let requested = store
        .videos()
        .load(&video.to_string())
        .await
        .expect("video");
    let history = audit::stream(pool, "User", &user.to_string())
        .await
        .expect("audit");
    let video_history = audit::stream(pool, "Video", &video.to_string())
        .await
        .expect("audit");
    let text = |value: &Value| value.as_str().map(str::to_owned);
    [
        loaded.email().map(str::to_owned),
        requested.spec().map(|spec| spec.prompt.clone()),
        text(&history[0].payload["UserRegistered"]["email"]),
        history[0].client_ip.clone(),
        text(&video_history[0].payload["VideoRequested"]["spec"]["prompt"]),
    ]
}

#[tokio::test]
async fn rows_from_before_encryption_are_sealed_in_place_and_read_as_before() {
    let db = TestDatabase::new().await;
    let (user, video) = legacy_user(&db.pool).await;
    // Two users erased with only plaintext rows: their registrations will both read
    // `[erased]`, which the plaintext unique index would refuse.
    let store = EventStore::new(db.pool.clone());
    let mut erased = Vec::new();
    for n in 0..2 {
        let gone = UserId::from_uuid(Uuid::now_v7());
        let email = format!("gone{n}@legacy.example.com");
        insert_raw::<User>(
            &db.pool,
            &gone.to_string(),
            0,
            &[registered(gone, &email)],
            &from_client(Actor::System),
        )
        .await;
        erased.push((gone, email));
    }
    // A system event with a client address and no user: nobody's key to seal it under.
    insert_raw::<Video>(
        &db.pool,
        &video.to_string(),
        1,
        &[VideoEvent::VideoProgressed { percent: 10 }],
        &CommandMetadata::new_request(Actor::System).with_client(Some(NOBODYS_IP.into()), None),
    )
    .await;
    // What start-up does since encryption: the old addresses are claimed.
    pii::current()
        .claim_plaintext_emails(&db.pool)
        .await
        .expect("claims");
    for (gone, _) in &erased {
        erase(&store, *gone, ErasedBy::Admin, &system())
            .await
            .expect("erase");
    }

    let needles: Vec<&str> = [EMAIL, IP, AGENT, "Wrenfield", "Ostrowski"]
        .into_iter()
        .chain(erased.iter().map(|(_, email)| email.as_str()))
        .collect();
    assert!(
        !personal_lines(&dump(&db), &needles).is_empty(),
        "the fixtures hold plaintext (so that this test can fail)"
    );
    let before = readers(&db.pool, user, video).await;
    assert_eq!(
        before,
        [
            Some(EMAIL.into()),
            Some(PROMPT.into()),
            Some(EMAIL.into()),
            Some(IP.into()),
            Some(PROMPT.into())
        ]
    );

    let report = pii::current()
        .seal_in_place(&db.pool, 2)
        .await
        .expect("seal in place");
    // The registration, the reservation (the user's request metadata) and the video request;
    // the erased users' registrations; the worker's event stays.
    assert_eq!(
        (report.sealed, report.erased, report.left_in_clear),
        (3, 2, 1),
        "{report:?}"
    );
    assert!(report.index_dropped && report.batches >= 3, "{report:?}");
    assert!(!index_exists(&db.pool).await);

    let left = personal_lines(&dump(&db), &needles);
    assert!(left.is_empty(), "still in the dump: {left:?}");
    assert!(
        dump(&db).contains(NOBODYS_IP),
        "metadata of nobody stays in clear"
    );
    // Every reader shows what it showed before; the erased users read `[erased]`.
    assert_eq!(readers(&db.pool, user, video).await, before);
    for (gone, _) in &erased {
        let history = audit::stream(&db.pool, "User", &gone.to_string())
            .await
            .expect("audit");
        assert_eq!(history[0].payload["UserRegistered"]["email"], ERASED);
        assert_eq!(history[0].client_ip.as_deref(), Some(ERASED));
    }
    // The address stays taken without the plaintext index (its claim), the erased ones are free.
    let again = Registration {
        user_id: UserId::from_uuid(Uuid::now_v7()),
        email: EMAIL.into(),
        password_hash: password(),
        verification_token_hash: hash_token("verify-me"),
        verification_expires_at: Utc::now() + Duration::hours(24),
        role: Role::User,
    };
    let taken = register(&store, again, &system()).await;
    assert!(matches!(taken, Err(CommandError::EmailTaken)), "{taken:?}");
    let free = Registration {
        user_id: UserId::from_uuid(Uuid::now_v7()),
        email: erased[0].1.clone(),
        password_hash: password(),
        verification_token_hash: hash_token("verify-me"),
        verification_expires_at: Utc::now() + Duration::hours(24),
        role: Role::User,
    };
    register(&store, free, &system())
        .await
        .expect("an erased address registers anew");

    // Idempotent: a second run finds nothing to seal.
    let again = pii::current()
        .seal_in_place(&db.pool, 2)
        .await
        .expect("again");
    assert_eq!(
        (again.sealed, again.erased, again.index_dropped),
        (0, 0, false)
    );

    // The read models rebuilt from the sealed rows hold the original values.
    catch_up(&db.pool).await;
    let report = replay_all(&db.pool, ReplayOptions::default()).await;
    assert!(
        report.finished && report.swapped && report.identical(),
        "{report:?}"
    );
    assert_eq!(row(&db.pool, "users", user.as_uuid()).await["email"], EMAIL);
    let shown = row(&db.pool, "videos", video.as_uuid()).await;
    assert_eq!(
        (shown["prompt"].as_str(), shown["negative_prompt"].as_str()),
        (Some(PROMPT), Some(NEGATIVE))
    );

    // And an erasure now reaches them like rows sealed when written.
    let inline = framegate_projections::inline::event_store(db.pool.clone());
    erase(
        &inline,
        user,
        ErasedBy::Owner,
        &CommandMetadata::new_request(Actor::User(user)),
    )
    .await
    .expect("erase");
    let after = readers(&db.pool, user, video).await;
    assert_eq!(after[0], None, "an erased user has no email");
    assert_eq!(
        after[1..],
        [
            Some(ERASED.into()),
            Some(ERASED.into()),
            Some(ERASED.into()),
            Some(ERASED.into())
        ]
    );
    catch_up(&db.pool).await;
    let report = replay_all(&db.pool, ReplayOptions::default()).await;
    assert!(
        report.finished && report.swapped && report.identical(),
        "{report:?}"
    );
    assert_eq!(
        row(&db.pool, "videos", video.as_uuid()).await["prompt"],
        ERASED
    );
    // (The first erased address belongs to the newcomer now, in the users read model.)
    let left = personal_lines(&dump(&db), &needles[..5]);
    assert!(left.is_empty(), "in the dump after the erasure: {left:?}");
}

#[tokio::test]
async fn the_trigger_lets_only_the_sealing_statement_change_a_row() {
    let db = TestDatabase::new().await;
    let (user, _) = legacy_user(&db.pool).await;
    let update = "UPDATE events SET payload = payload WHERE aggregate_id = $1";
    let refused = sqlx::query(update)
        .bind(user.to_string())
        .execute(&db.pool)
        .await;
    assert!(refused.is_err(), "an ordinary update is refused");
    let mut tx = db.pool.begin().await.expect("tx");
    sqlx::query("SELECT set_config('framegate.seal_in_place', 'on', true)")
        .execute(&mut *tx)
        .await
        .expect("set");
    let moved = sqlx::query("UPDATE events SET sequence = sequence + 10 WHERE aggregate_id = $1")
        .bind(user.to_string())
        .execute(&mut *tx)
        .await;
    assert!(moved.is_err(), "even the sealing pass may not move a row");
    drop(tx);
    let mut tx = db.pool.begin().await.expect("tx");
    sqlx::query("SELECT set_config('framegate.seal_in_place', 'on', true)")
        .execute(&mut *tx)
        .await
        .expect("set");
    let deleted = sqlx::query("DELETE FROM events WHERE aggregate_id = $1")
        .bind(user.to_string())
        .execute(&mut *tx)
        .await;
    assert!(deleted.is_err(), "nor delete one");
}
