//! Running the read-model projectors against real Postgres: draining twice and replaying
//! from zero apply nothing twice, read-your-writes waiting, spawned projectors and shutdown,
//! and a corrupt event that stops a projector instead of being skipped.

use crate::support;

use std::time::Duration;

use framegate_commands::testing::TestDatabase;
use framegate_commands::EventStore;
use framegate_domain::{CreditCommand, Credits, Role, UserCommand, VideoId};
use framegate_projections::read_models::{
    self, api_keys, catch_up_all, credits, users, wait_for, READ_MODELS,
};
use framegate_projections::{LogPosition, SubscriptionError};
use sqlx::PgPool;
use uuid::Uuid;

use support::{catch_up, credit_command, issue_key, register, system, user_command};

async fn ledger_count(pool: &PgPool) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM credit_ledger")
        .fetch_one(pool)
        .await
        .expect("count")
}

#[tokio::test]
async fn draining_twice_or_replaying_from_zero_does_not_apply_anything_twice() {
    let db = TestDatabase::new().await;
    let store = EventStore::new(db.pool.clone());
    let (user, _) = register(&store, "twice@example.com").await;
    let key = issue_key(&store, user, "ci", "fgk_twice_secret").await;
    user_command(&store, user, UserCommand::RevokeApiKey { key_id: key }).await;
    user_command(&store, user, UserCommand::ChangeRole { role: Role::Admin }).await;
    let grant = CreditCommand::Grant {
        amount: Credits::new(40),
        reason: "promo".to_owned(),
        granted_by: "test".to_owned(),
    };
    credit_command(&store, user, grant, &system()).await;
    let reserve = CreditCommand::Reserve {
        video_id: VideoId::from_uuid(Uuid::now_v7()),
        amount: Credits::new(15),
    };
    credit_command(&store, user, reserve, &system()).await;

    let handled = catch_up(&db.pool).await;
    assert_eq!(
        handled,
        READ_MODELS.len() as u64 * 6,
        "each projector sees all six events"
    );
    let user_row = users::get(&db.pool, user).await.expect("get");
    let keys = api_keys::list_for_user(&db.pool, user).await.expect("keys");
    let account = credits::account(&db.pool, user).await.expect("account");
    let ledger = credits::ledger(&db.pool, user, None, 100)
        .await
        .expect("ledger");
    assert_eq!((account.balance, account.reserved), (40, 15));
    assert_eq!(ledger.len(), 2);

    // A second drain (a restarted projector) finds nothing left to do.
    assert_eq!(catch_up(&db.pool).await, 0);
    assert_eq!(
        credits::account(&db.pool, user).await.expect("account"),
        account
    );
    assert_eq!(ledger_count(&db.pool).await, 2);

    // Replaying the idempotent projectors from position zero changes nothing either.
    sqlx::query(
        "UPDATE subscription_checkpoints SET last_tx_id = '0', last_position = 0
          WHERE name = ANY($1)",
    )
    .bind([
        "read_model.users",
        "read_model.api_keys",
        "read_model.credit_ledger",
    ])
    .execute(&db.pool)
    .await
    .expect("rewind");
    assert_eq!(
        catch_up(&db.pool).await,
        3 * 6,
        "the rewound projectors saw everything again"
    );
    assert_eq!(users::get(&db.pool, user).await.expect("get"), user_row);
    assert_eq!(
        api_keys::list_for_user(&db.pool, user).await.expect("keys"),
        keys
    );
    assert_eq!(
        credits::ledger(&db.pool, user, None, 100)
            .await
            .expect("ledger"),
        ledger
    );
    assert_eq!(
        credits::account(&db.pool, user).await.expect("account"),
        account
    );
}

#[tokio::test]
async fn wait_for_is_true_once_the_projectors_have_handled_a_position_and_false_before() {
    let db = TestDatabase::new().await;
    let store = EventStore::new(db.pool.clone());
    let (_, position) = register(&store, "wait@example.com").await;

    let started = tokio::time::Instant::now();
    let reached = wait_for(&db.pool, &READ_MODELS, position, Duration::from_millis(60)).await;
    assert!(
        !reached.expect("wait"),
        "nothing has projected the registration yet"
    );
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(60) && waited < Duration::from_secs(2),
        "{waited:?}"
    );

    // Projectors that run while the caller waits are noticed.
    let pool = db.pool.clone();
    let projecting = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(30)).await;
        catch_up_all(&pool).await
    });
    let reached = wait_for(&db.pool, &READ_MODELS, position, Duration::from_secs(10)).await;
    assert!(reached.expect("wait"));
    projecting.await.expect("task").expect("catch up");

    // An earlier position is reached too, and a subscription that never ran is not.
    assert!(
        wait_for(&db.pool, &READ_MODELS, LogPosition::START, Duration::ZERO)
            .await
            .expect("wait")
    );
    let with_unknown = ["read_model.users", "read_model.nonexistent"];
    let reached = wait_for(&db.pool, &with_unknown, position, Duration::from_millis(10)).await;
    assert!(!reached.expect("wait"));
    let (_, later) = register(&store, "later@example.com").await;
    let reached = wait_for(
        &db.pool,
        &["read_model.users"],
        later,
        Duration::from_millis(10),
    )
    .await;
    assert!(
        !reached.expect("wait"),
        "a newer position is not handled yet"
    );
}

#[tokio::test]
async fn spawned_projectors_follow_new_commands_and_stop_on_shutdown() {
    let db = TestDatabase::new().await;
    let store = EventStore::new(db.pool.clone());
    let (stop, shutdown) = tokio::sync::watch::channel(false);
    let tasks = read_models::spawn_all(db.pool.clone(), shutdown);
    assert_eq!(tasks.len(), READ_MODELS.len());

    let (user, position) = register(&store, "live@example.com").await;
    let reached = wait_for(&db.pool, &READ_MODELS, position, Duration::from_secs(10)).await;
    assert!(
        reached.expect("wait"),
        "the running projectors handled the registration"
    );
    assert!(users::get(&db.pool, user).await.expect("get").is_some());

    stop.send(true).expect("projectors listening");
    for task in tasks {
        let result = tokio::time::timeout(Duration::from_secs(10), task).await;
        result
            .expect("stops promptly")
            .expect("task")
            .expect("stopped cleanly");
    }
}

#[tokio::test]
async fn a_payload_that_does_not_decode_stops_the_users_projector_naming_the_event() {
    let db = TestDatabase::new().await;
    let store = EventStore::new(db.pool.clone());
    let (before, _) = register(&store, "before@example.com").await;
    catch_up(&db.pool).await;
    let poison: i64 = sqlx::query_scalar(
        "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version,
                             payload, metadata)
         VALUES ('User', $1, 1, 'UserRegistered', '1.0', '{\"UserRegistered\": {\"bogus\": 1}}',
                 '{\"actor\": \"system\"}')
         RETURNING global_position",
    )
    .bind(Uuid::now_v7().to_string())
    .fetch_one(&db.pool)
    .await
    .expect("insert corrupt event");
    let (after, _) = register(&store, "after@example.com").await;
    let grant = CreditCommand::Grant {
        amount: Credits::new(7),
        reason: "unaffected".to_owned(),
        granted_by: "test".to_owned(),
    };
    credit_command(&store, after, grant, &system()).await;

    let error = catch_up_all(&db.pool)
        .await
        .expect_err("the corrupt event stops a projector");
    match &error {
        SubscriptionError::Handler {
            subscription,
            source,
        } => {
            assert_eq!(subscription, "read_model.users");
            assert_eq!(source.global_position, poison);
            assert_eq!(source.event_type, "UserRegistered");
        }
        other => panic!("unexpected error {other}"),
    }
    assert!(error.to_string().contains(&format!("#{poison}")), "{error}");

    // Nothing at or after the corrupt event reached users (the batch holding it rolled
    // back whole); the credit projectors went on.
    assert!(users::get(&db.pool, before).await.expect("get").is_some());
    assert_eq!(users::get(&db.pool, after).await.expect("get"), None);
    let (subscription, _) = read_models::all(&db.pool).swap_remove(0);
    assert_eq!(subscription.name(), "read_model.users");
    assert!(
        subscription
            .checkpoint()
            .await
            .expect("checkpoint")
            .global_position
            < poison
    );
    assert_eq!(
        credits::account(&db.pool, after)
            .await
            .expect("account")
            .balance,
        7
    );

    // It stays stopped on the same event rather than skipping it.
    let again = catch_up_all(&db.pool).await.expect_err("still stopped");
    assert!(again.to_string().contains(&format!("#{poison}")), "{again}");
}
