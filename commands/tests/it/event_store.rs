//! The write side against real Postgres: metadata on stored events, conflict retries, unique
//! emails under concurrency.

use std::sync::Arc;

use chrono::{Duration, Utc};
use cqrs_es::persist::{PersistedEventRepository, PersistenceError, SerializedEvent};
use framegate_commands::repository::EventRepository;
use framegate_commands::testing::TestDatabase;
use framegate_commands::users::{register, registered_user_by_email, Registration};
use framegate_commands::{Actor, CommandError, CommandMetadata, EventStore};
use framegate_domain::{
    hash_token, CreditAccount, CreditCommand, CreditError, Credits, PasswordHash, Role, UserError,
    UserId, VideoId,
};
use serde_json::Value;
use uuid::Uuid;

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

#[tokio::test]
async fn every_stored_event_carries_the_command_metadata() {
    let db = TestDatabase::new().await;
    let store = EventStore::new(db.pool.clone());
    let user = UserId::from_uuid(Uuid::now_v7());
    let meta = CommandMetadata::new_request(Actor::User(user))
        .with_client(Some("203.0.113.7".into()), Some("curl/8".into()));
    let written = store
        .credits()
        .execute(
            &user.to_string(),
            CreditCommand::Grant {
                amount: Credits::new(50),
                reason: "welcome".into(),
                granted_by: "system".into(),
            },
            &meta,
        )
        .await
        .expect("grant")
        .expect("an event was written");

    let mut stored: Vec<framegate_commands::StoredEvent> = sqlx::query_as(
        "SELECT global_position, tx_id::text::bigint AS tx_id, event_id, recorded_at,
                aggregate_type, aggregate_id, sequence, event_type, event_version,
                payload, metadata
           FROM events WHERE aggregate_id = $1",
    )
    .bind(user.to_string())
    .fetch_all(&db.pool)
    .await
    .expect("stored event");
    // The client's address and agent are personal data, stored sealed (ADR 0043).
    assert!(stored[0].metadata.get("client_ip").is_none());
    framegate_commands::pii::open_stored(&db.pool, &mut stored)
        .await
        .expect("open");
    let event = stored.pop().expect("one event");
    let (metadata, event_id, tx_id, position): (Value, Uuid, i64, i64) = (
        event.metadata,
        event.event_id,
        event.tx_id,
        event.global_position,
    );
    assert_eq!(metadata["actor"], format!("user:{user}"));
    assert_eq!(metadata["request_id"], meta.request_id.to_string());
    assert_eq!(metadata["correlation_id"], meta.correlation_id.to_string());
    assert_eq!(metadata["causation_id"], meta.causation_id);
    assert_eq!(metadata["client_ip"], "203.0.113.7");
    assert_eq!(metadata["user_agent"], "curl/8");
    assert!(!event_id.is_nil());
    assert_eq!(written.tx_id, tx_id, "execute returns where it wrote");
    assert_eq!(written.global_position, position);
}

#[tokio::test]
async fn a_command_that_changes_nothing_writes_nothing_and_reports_no_position() {
    let db = TestDatabase::new().await;
    let store = EventStore::new(db.pool.clone());
    let account = Uuid::now_v7().to_string();
    let meta = CommandMetadata::new_request(Actor::System);
    let purchase = || CreditCommand::Purchase {
        amount: Credits::new(20),
        payment_reference: "pay_123".into(),
        payment: None,
    };
    let first = store.credits().execute(&account, purchase(), &meta).await;
    assert!(matches!(first, Ok(Some(_))), "{first:?}");
    let repeat = store.credits().execute(&account, purchase(), &meta).await;
    assert!(matches!(repeat, Ok(None)), "{repeat:?}");
    let state = store.credits().load(&account).await.expect("load");
    assert_eq!(state.balance(), Credits::new(20));
}

#[tokio::test]
async fn appended_events_follow_sequence_order_and_a_stale_append_is_refused() {
    let db = TestDatabase::new().await;
    let store = EventStore::new(db.pool.clone());
    let account = Uuid::now_v7().to_string();
    let meta = CommandMetadata::new_request(Actor::System);
    for n in 1..=3 {
        let grant = CreditCommand::Grant {
            amount: Credits::new(n),
            reason: format!("grant {n}"),
            granted_by: "system".into(),
        };
        store
            .credits()
            .execute(&account, grant, &meta)
            .await
            .expect("grant");
    }
    let rows: Vec<(i64, i64)> = sqlx::query_as(
        "SELECT sequence, global_position FROM events WHERE aggregate_id = $1 ORDER BY sequence",
    )
    .bind(&account)
    .fetch_all(&db.pool)
    .await
    .expect("rows");
    assert_eq!(rows.iter().map(|r| r.0).collect::<Vec<_>>(), [1, 2, 3]);
    assert!(rows.windows(2).all(|w| w[0].1 < w[1].1));
    // A second writer that loaded the same version loses with a conflict, not a duplicate.
    let duplicate = sqlx::query(
        "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata)
         VALUES ('CreditAccount', $1, 3, 'CreditsGranted', '1.0', '{}', '{}')",
    )
    .bind(&account)
    .execute(&db.pool)
    .await;
    assert!(duplicate.is_err());
}

#[tokio::test]
async fn stored_events_cannot_be_changed_or_deleted() {
    let db = TestDatabase::new().await;
    let store = EventStore::new(db.pool.clone());
    let account = Uuid::now_v7().to_string();
    let meta = CommandMetadata::new_request(Actor::System);
    let grant = CreditCommand::Grant {
        amount: Credits::new(5),
        reason: "r".into(),
        granted_by: "system".into(),
    };
    store
        .credits()
        .execute(&account, grant, &meta)
        .await
        .expect("grant");
    let update = sqlx::query("UPDATE events SET payload = '{}'")
        .execute(&db.pool)
        .await;
    assert!(update.is_err(), "update refused");
    let delete = sqlx::query("DELETE FROM events").execute(&db.pool).await;
    assert!(delete.is_err(), "delete refused");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn twenty_concurrent_registrations_of_one_email_make_exactly_one_user() {
    let db = TestDatabase::with_pool_size(24).await;
    let store = EventStore::new(db.pool.clone());
    let meta = CommandMetadata::new_request(Actor::System);
    let barrier = Arc::new(tokio::sync::Barrier::new(20));
    let mut tasks = Vec::new();
    for n in 0..20 {
        let store = store.clone();
        let meta = meta.clone();
        let barrier = barrier.clone();
        // Different spellings of one address: normalisation makes them the same.
        let email = if n % 2 == 0 {
            "Ada@Example.com".to_owned()
        } else {
            " ada@example.COM ".to_owned()
        };
        tasks.push(tokio::spawn(async move {
            let registration = registration(&email);
            let id = registration.user_id;
            barrier.wait().await;
            (id, register(&store, registration, &meta).await)
        }));
    }
    let mut winners = Vec::new();
    for task in tasks {
        match task.await.expect("task") {
            (id, Ok(_)) => winners.push(id),
            (_, Err(CommandError::EmailTaken)) => {}
            (_, Err(other)) => panic!("unexpected outcome: {other:?}"),
        }
    }
    assert_eq!(winners.len(), 1, "exactly one registration wins");
    let users: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM events WHERE aggregate_type = 'User' AND event_type = 'UserRegistered'",
    )
    .fetch_one(&db.pool)
    .await
    .expect("count");
    assert_eq!(users, 1);
    let owner = registered_user_by_email(&db.pool, "ada@example.com")
        .await
        .expect("lookup");
    assert_eq!(owner, Some(winners[0]));
}

#[tokio::test]
async fn registering_a_taken_email_later_is_a_typed_error() {
    let db = TestDatabase::new().await;
    let store = EventStore::new(db.pool.clone());
    let meta = CommandMetadata::new_request(Actor::System);
    register(&store, registration("grace@example.com"), &meta)
        .await
        .expect("first");
    let second = register(&store, registration("GRACE@example.com"), &meta).await;
    assert!(
        matches!(second, Err(CommandError::EmailTaken)),
        "{second:?}"
    );
    assert_eq!(
        second.map_err(|e| e.code()).err(),
        Some("email_taken"),
        "stable code"
    );
    let invalid = register(&store, registration("not-an-email"), &meta).await;
    assert!(matches!(
        invalid,
        Err(CommandError::Domain(UserError::InvalidEmail))
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_commands_on_one_account_in_one_process_all_apply() {
    let db = TestDatabase::with_pool_size(16).await;
    let store = EventStore::new(db.pool.clone());
    let account = UserId::from_uuid(Uuid::now_v7()).to_string();
    let meta = CommandMetadata::new_request(Actor::System);
    let barrier = Arc::new(tokio::sync::Barrier::new(8));
    let mut tasks = Vec::new();
    // One process queues commands on one aggregate behind a per-aggregate lock (conflicts
    // across processes are the next test's): every grant must apply exactly once.
    for n in 1..=8 {
        let store = store.clone();
        let meta = meta.clone();
        let account = account.clone();
        let barrier = barrier.clone();
        tasks.push(tokio::spawn(async move {
            barrier.wait().await;
            store
                .credits()
                .execute(
                    &account,
                    CreditCommand::Grant {
                        amount: Credits::new(n),
                        reason: format!("grant {n}"),
                        granted_by: "system".into(),
                    },
                    &meta,
                )
                .await
        }));
    }
    for task in tasks {
        task.await
            .expect("task")
            .expect("grant applied despite conflicts");
    }
    let state = store.credits().load(&account).await.expect("load");
    assert_eq!(state.balance(), Credits::new((1..=8).sum()));
    let events: i64 = sqlx::query_scalar("SELECT count(*) FROM events WHERE aggregate_id = $1")
        .bind(&account)
        .fetch_one(&db.pool)
        .await
        .expect("count");
    assert_eq!(events, 8);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_reservations_never_overdraw_the_account() {
    let db = TestDatabase::with_pool_size(16).await;
    let store = EventStore::new(db.pool.clone());
    let account = UserId::from_uuid(Uuid::now_v7()).to_string();
    let meta = CommandMetadata::new_request(Actor::System);
    store
        .credits()
        .execute(
            &account,
            CreditCommand::Grant {
                amount: Credits::new(30),
                reason: "seed".into(),
                granted_by: "system".into(),
            },
            &meta,
        )
        .await
        .expect("grant");
    let barrier = Arc::new(tokio::sync::Barrier::new(8));
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let (store, meta, account, barrier) = (
            store.clone(),
            meta.clone(),
            account.clone(),
            barrier.clone(),
        );
        tasks.push(tokio::spawn(async move {
            barrier.wait().await;
            let video_id = VideoId::from_uuid(Uuid::now_v7());
            let command = CreditCommand::Reserve {
                video_id,
                amount: Credits::new(10),
            };
            store.credits().execute(&account, command, &meta).await
        }));
    }
    let mut accepted = 0;
    for task in tasks {
        match task.await.expect("task") {
            Ok(_) => accepted += 1,
            Err(CommandError::Domain(CreditError::InsufficientCredits { .. })) => {}
            Err(other) => panic!("unexpected outcome {other:?}"),
        }
    }
    assert_eq!(
        accepted, 3,
        "30 credits cover exactly three reservations of 10"
    );
    let state = store.credits().load(&account).await.expect("load");
    assert_eq!(state.reserved(), Credits::new(30));
    assert_eq!(state.available(), Credits::ZERO);
}

fn serialized(aggregate_id: &str, sequence: usize, amount: i64) -> SerializedEvent {
    SerializedEvent::new(
        aggregate_id.to_owned(),
        sequence,
        "CreditAccount".to_owned(),
        "CreditsGranted".to_owned(),
        "1.0".to_owned(),
        serde_json::json!({"CreditsGranted": {"amount": amount, "reason": "r", "granted_by": "system"}}),
        serde_json::json!({"actor": "system"}),
    )
}

#[tokio::test]
async fn several_events_are_appended_in_one_atomic_statement() {
    let db = TestDatabase::new().await;
    let repo = EventRepository::new(db.pool.clone(), None);
    let id = Uuid::now_v7().to_string();
    repo.persist::<CreditAccount>(&[serialized(&id, 1, 1), serialized(&id, 2, 2)], None)
        .await
        .expect("two events");
    // A batch that collides on its second event leaves nothing behind.
    let clash = repo
        .persist::<CreditAccount>(&[serialized(&id, 3, 3), serialized(&id, 2, 9)], None)
        .await;
    assert!(
        matches!(clash, Err(PersistenceError::OptimisticLockError)),
        "{clash:?}"
    );
    let stored = repo.get_events::<CreditAccount>(&id).await.expect("read");
    assert_eq!(
        stored.iter().map(|e| e.sequence).collect::<Vec<_>>(),
        [1, 2],
        "the failed batch wrote nothing"
    );
    assert_eq!(stored[1].payload["CreditsGranted"]["amount"], 2);
    // Snapshots are refused outright.
    let snapshot = repo
        .persist::<CreditAccount>(&[serialized(&id, 3, 3)], Some((id.clone(), Value::Null, 1)))
        .await;
    assert!(snapshot.is_err());
}

/// Separate `EventStore`s share no in-process lock, like API processes on several machines:
/// only the optimistic check on the stream's sequence stands between them.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn grants_from_separate_processes_conflict_and_are_retried_until_all_apply() {
    let db = TestDatabase::with_pool_size(16).await;
    let account = UserId::from_uuid(Uuid::now_v7()).to_string();
    let meta = CommandMetadata::new_request(Actor::System);
    let contenders = 6;
    let retried_before = framegate_commands::retry::conflicts_retried();
    let exposed_before = exposed_counts();
    let barrier = Arc::new(tokio::sync::Barrier::new(contenders));
    let mut tasks = Vec::new();
    for n in 1..=contenders as i64 {
        let store = EventStore::new(db.pool.clone());
        let (meta, account, barrier) = (meta.clone(), account.clone(), barrier.clone());
        tasks.push(tokio::spawn(async move {
            barrier.wait().await;
            let grant = CreditCommand::Grant {
                amount: Credits::new(n),
                reason: format!("grant {n}"),
                granted_by: "system".into(),
            };
            store.credits().execute(&account, grant, &meta).await
        }));
    }
    for task in tasks {
        task.await
            .expect("task")
            .expect("grant applied despite conflicts");
    }
    let state = EventStore::new(db.pool.clone())
        .credits()
        .load(&account)
        .await
        .expect("load");
    assert_eq!(state.balance(), Credits::new((1..=contenders as i64).sum()));
    let sequences: Vec<i64> =
        sqlx::query_scalar("SELECT sequence FROM events WHERE aggregate_id = $1 ORDER BY sequence")
            .bind(&account)
            .fetch_all(&db.pool)
            .await
            .expect("sequences");
    assert_eq!(sequences, (1..=contenders as i64).collect::<Vec<_>>());
    assert!(
        framegate_commands::retry::conflicts_retried() > retried_before,
        "nobody conflicted: the test proved nothing"
    );
    // The same story in `/metrics` (other tests of this binary may add to it meanwhile).
    let exposed = exposed_counts();
    let moved = |i: usize| exposed[i] - exposed_before[i];
    assert!(moved(0) >= contenders as f64, "commands ok: {exposed:?}");
    assert!(moved(1) >= 1.0, "conflicts: {exposed:?}");
    assert!(moved(2) >= 1.0, "retries: {exposed:?}");
    assert!(
        moved(3) >= (1..=contenders as i64).sum::<i64>() as f64,
        "credits granted: {exposed:?}"
    );
}

/// From the process's exposition: credit commands that succeeded, conflicts met, retries
/// made, credits granted.
fn exposed_counts() -> [f64; 4] {
    let text = framegate_commands::metrics::encode();
    [
        "framegate_commands_total{aggregate=\"CreditAccount\",outcome=\"ok\"} ",
        "framegate_command_conflicts_total{aggregate=\"CreditAccount\"} ",
        "framegate_command_retries_total{aggregate=\"CreditAccount\"} ",
        "framegate_credits_total{movement=\"granted\"} ",
    ]
    .map(|series| {
        text.lines()
            .find_map(|line| line.strip_prefix(series)?.trim().parse().ok())
            .unwrap_or(0.0)
    })
}

/// A registration is not re-run after losing a race (re-deciding it would only say "already
/// registered" about somebody else's account): the loser gets the typed conflict.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_registration_that_loses_a_race_for_its_stream_is_a_typed_conflict() {
    let db = TestDatabase::with_pool_size(16).await;
    let meta = CommandMetadata::new_request(Actor::System);
    let mut conflicts = 0;
    for round in 0..20 {
        let first = registration(&format!("race{round}a@example.com"));
        let mut second = registration(&format!("race{round}b@example.com"));
        second.user_id = first.user_id;
        let barrier = Arc::new(tokio::sync::Barrier::new(2));
        let tasks = [first, second].map(|candidate| {
            let (store, meta, barrier) = (
                EventStore::new(db.pool.clone()),
                meta.clone(),
                barrier.clone(),
            );
            tokio::spawn(async move {
                barrier.wait().await;
                register(&store, candidate, &meta).await
            })
        });
        let mut outcomes = Vec::new();
        for task in tasks {
            outcomes.push(task.await.expect("task"));
        }
        assert_eq!(
            outcomes.iter().filter(|o| o.is_ok()).count(),
            1,
            "{outcomes:?}"
        );
        for outcome in outcomes.into_iter().filter_map(Result::err) {
            match outcome {
                conflict @ CommandError::Conflict => {
                    assert_eq!(conflict.code(), "conflict", "stable code");
                    conflicts += 1;
                }
                // The loser loaded the stream after the winner committed.
                CommandError::Domain(UserError::AlreadyRegistered) => {}
                other => panic!("round {round}: {other:?}"),
            }
        }
    }
    assert!(conflicts > 0, "no round raced: the test proved nothing");
}
