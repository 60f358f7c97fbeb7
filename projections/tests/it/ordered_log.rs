//! The ordered log against real Postgres: concurrent writers, a transaction held open while
//! later ones commit, a subscriber killed mid-stream, handler failures and LISTEN/NOTIFY.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use framegate_commands::testing::TestDatabase;
use framegate_commands::{Actor, CommandMetadata, EventStore};
use framegate_domain::{CreditCommand, Credits};
use framegate_projections::subscription::BoxError;
use framegate_projections::{EventHandler, StoredEvent, Subscription, SubscriptionError};
use rand::Rng;
use sqlx::{PgConnection, PgPool};
use tokio::sync::oneshot;
use uuid::Uuid;

/// Records every delivery in the subscription's transaction. The primary key turns a second
/// delivery of one event into an error, which stops the subscription and fails the test.
struct Recorder {
    delay_every: Option<i64>,
}

#[async_trait]
impl EventHandler for Recorder {
    async fn handle(&self, conn: &mut PgConnection, event: &StoredEvent) -> Result<(), BoxError> {
        sqlx::query(
            "INSERT INTO delivered (global_position, aggregate_id, sequence) VALUES ($1, $2, $3)",
        )
        .bind(event.global_position)
        .bind(&event.aggregate_id)
        .bind(event.sequence)
        .execute(conn)
        .await?;
        if let Some(every) = self.delay_every {
            if event.global_position % every == 0 {
                tokio::time::sleep(Duration::from_millis(3)).await;
            }
        }
        Ok(())
    }
}

async fn create_delivery_table(pool: &PgPool) {
    sqlx::query(
        "CREATE TABLE delivered (
            delivery_no     bigint GENERATED ALWAYS AS IDENTITY,
            global_position bigint PRIMARY KEY,
            aggregate_id    text   NOT NULL,
            sequence        bigint NOT NULL)",
    )
    .execute(pool)
    .await
    .expect("create delivered");
}

/// Inserts `per_aggregate` events for each of `aggregates` new aggregates, in one statement.
async fn bulk_insert(pool: &PgPool, aggregates: i64, per_aggregate: i64) {
    sqlx::query(
        "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata)
         SELECT 'Test', 'agg-' || a, s, 'Tested', '1.0', jsonb_build_object('Tested', jsonb_build_object('n', s)), '{}'
           FROM generate_series(1, $1) a, generate_series(1, $2) s
          ORDER BY s, a",
    )
    .bind(aggregates)
    .bind(per_aggregate)
    .execute(pool)
    .await
    .expect("bulk insert");
}

async fn all_positions(pool: &PgPool) -> Vec<i64> {
    sqlx::query_scalar("SELECT global_position FROM events ORDER BY global_position")
        .fetch_all(pool)
        .await
        .expect("positions")
}

/// Every stored event was delivered exactly once, and each aggregate's events in sequence order.
async fn assert_delivered_exactly_once_in_aggregate_order(pool: &PgPool) {
    let stored = all_positions(pool).await;
    let delivered: Vec<(i64, String, i64)> = sqlx::query_as(
        "SELECT global_position, aggregate_id, sequence FROM delivered ORDER BY delivery_no",
    )
    .fetch_all(pool)
    .await
    .expect("delivered");
    assert_eq!(
        delivered.len(),
        stored.len(),
        "every event delivered, none twice"
    );
    let delivered_set: HashSet<i64> = delivered.iter().map(|(p, _, _)| *p).collect();
    assert_eq!(delivered_set, stored.into_iter().collect::<HashSet<_>>());
    let mut last_sequence: HashMap<&str, i64> = HashMap::new();
    for (position, aggregate, sequence) in &delivered {
        let previous = last_sequence.insert(aggregate, *sequence).unwrap_or(0);
        assert_eq!(
            *sequence,
            previous + 1,
            "event #{position} of {aggregate} delivered out of order"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_writers_and_a_held_transaction_are_delivered_exactly_once_in_order() {
    let db = TestDatabase::with_pool_size(24).await;
    create_delivery_table(&db.pool).await;
    let store = EventStore::new(db.pool.clone());

    // The subscriber runs for the whole test.
    let subscription = Subscription::new("ordering-test", db.pool.clone())
        .with_batch_size(7)
        .with_poll_interval(Duration::from_millis(50));
    let (stop, stopped) = oneshot::channel::<()>();
    let runner = {
        let subscription = subscription.clone();
        tokio::spawn(async move {
            subscription
                .run(&Recorder { delay_every: None }, async {
                    let _ = stopped.await;
                })
                .await
        })
    };

    // A transaction that takes its position early and commits late.
    let mut held = db.pool.begin().await.expect("begin held");
    let held_position: i64 = sqlx::query_scalar(
        "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata)
         VALUES ('CreditAccount', $1, 1, 'CreditsGranted', '1.0',
                 '{\"CreditsGranted\": {\"amount\": 5, \"reason\": \"held\", \"granted_by\": \"test\"}}', '{}')
         RETURNING global_position",
    )
    .bind(Uuid::new_v4().to_string())
    .fetch_one(&mut *held)
    .await
    .expect("held insert");

    // Many writers on many aggregates, through the real command path.
    let accounts: Vec<String> = (0..12).map(|_| Uuid::new_v4().to_string()).collect();
    let meta = CommandMetadata::new_request(Actor::System);
    let mut writers = Vec::new();
    for writer in 0..8 {
        let store = store.clone();
        let accounts = accounts.clone();
        let meta = meta.clone();
        writers.push(tokio::spawn(async move {
            for n in 0..25 {
                let account = &accounts[(writer * 7 + n) % accounts.len()];
                store
                    .credits()
                    .execute(
                        account,
                        CreditCommand::Grant {
                            amount: Credits::new(1 + n as i64),
                            reason: format!("writer {writer} grant {n}"),
                            granted_by: "test".into(),
                        },
                        &meta,
                    )
                    .await
                    .expect("grant");
            }
        }));
    }
    for writer in writers {
        writer.await.expect("writer task");
    }

    // While the early transaction is still open, later positions are committed and the
    // subscriber has had time to read them: a reader keyed on "highest position seen" is now
    // past the held event and would never go back for it.
    let committed_later: i64 =
        sqlx::query_scalar("SELECT count(*) FROM events WHERE global_position > $1")
            .bind(held_position)
            .fetch_one(&db.pool)
            .await
            .expect("count");
    assert!(committed_later >= 200, "the hazard was exercised");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let delivered_while_held: i64 = sqlx::query_scalar("SELECT count(*) FROM delivered")
        .fetch_one(&db.pool)
        .await
        .expect("count");
    assert_eq!(
        delivered_while_held, 0,
        "nothing after the open transaction is delivered before it commits"
    );
    held.commit().await.expect("commit held");

    // The running subscriber picks everything up on its own.
    let total = all_positions(&db.pool).await.len() as i64;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let delivered: i64 = sqlx::query_scalar("SELECT count(*) FROM delivered")
            .fetch_one(&db.pool)
            .await
            .expect("count");
        if delivered >= total || tokio::time::Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let _ = stop.send(());
    runner
        .await
        .expect("runner task")
        .expect("subscription ran cleanly");

    assert_delivered_exactly_once_in_aggregate_order(&db.pool).await;
    let first: i64 =
        sqlx::query_scalar("SELECT global_position FROM delivered ORDER BY delivery_no LIMIT 1")
            .fetch_one(&db.pool)
            .await
            .expect("first");
    assert_eq!(
        first, held_position,
        "the held event comes first in log order"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_subscriber_killed_mid_stream_resumes_without_loss_or_duplicate_effects() {
    let db = TestDatabase::new().await;
    create_delivery_table(&db.pool).await;
    bulk_insert(&db.pool, 40, 50).await;
    let total = all_positions(&db.pool).await.len();
    let subscription = Subscription::new("kill-test", db.pool.clone()).with_batch_size(37);
    let handler = Arc::new(Recorder {
        delay_every: Some(5),
    });

    let mut kills = 0;
    loop {
        let runner = {
            let subscription = subscription.clone();
            let handler = handler.clone();
            tokio::spawn(async move {
                subscription
                    .run(handler.as_ref(), std::future::pending())
                    .await
            })
        };
        // Longer as kills mount, so a slow machine still lets it get somewhere between two.
        let pause = rand::thread_rng().gen_range(5..60 + kills);
        tokio::time::sleep(Duration::from_millis(pause)).await;
        if runner.is_finished() {
            panic!("subscription stopped: {:?}", runner.await);
        }
        // Kill it wherever it is: mid-query, mid-handler or mid-commit.
        runner.abort();
        let _ = runner.await;
        kills += 1;
        let handled = subscription.checkpoint().await.expect("checkpoint");
        let last = *all_positions(&db.pool).await.last().expect("events");
        if handled.global_position == last {
            break;
        }
        assert!(kills < 500, "no progress after {kills} restarts");
    }
    // Resuming after the last kill finds nothing left.
    let rest = subscription
        .catch_up(handler.as_ref())
        .await
        .expect("resume");
    assert_eq!(rest, 0);
    assert!(
        kills >= 2,
        "the subscriber was killed mid-stream at least once"
    );
    assert_delivered_exactly_once_in_aggregate_order(&db.pool).await;
    let handled: i64 =
        sqlx::query_scalar("SELECT events_handled FROM subscription_checkpoints WHERE name = $1")
            .bind("kill-test")
            .fetch_one(&db.pool)
            .await
            .expect("events_handled");
    assert_eq!(handled as usize, total);
}

/// Fails on one event type, once armed.
struct FailOn {
    event_type: &'static str,
    armed: AtomicI64,
}

#[async_trait]
impl EventHandler for FailOn {
    async fn handle(&self, conn: &mut PgConnection, event: &StoredEvent) -> Result<(), BoxError> {
        if self.armed.load(Ordering::SeqCst) == 1 && event.event_type == self.event_type {
            return Err("refusing this event".into());
        }
        Recorder { delay_every: None }.handle(conn, event).await
    }
}

#[tokio::test]
async fn a_failing_handler_stops_the_subscription_naming_the_event_and_skips_nothing() {
    let db = TestDatabase::new().await;
    create_delivery_table(&db.pool).await;
    bulk_insert(&db.pool, 3, 4).await;
    let poison: i64 = sqlx::query_scalar(
        "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata)
         VALUES ('Test', 'poison', 1, 'Poison', '1.0', '{\"Poison\": {}}', '{}') RETURNING global_position",
    )
    .fetch_one(&db.pool)
    .await
    .expect("poison");
    bulk_insert_more(&db.pool).await;

    let handler = FailOn {
        event_type: "Poison",
        armed: AtomicI64::new(1),
    };
    let subscription = Subscription::new("failing", db.pool.clone()).with_batch_size(5);
    let error = subscription
        .drain(&handler)
        .await
        .expect_err("the poison event stops the subscription");
    match &error {
        SubscriptionError::Handler {
            subscription,
            source,
        } => {
            assert_eq!(subscription, "failing");
            assert_eq!(source.global_position, poison);
            assert_eq!(source.event_type, "Poison");
            assert_eq!(source.aggregate_id, "poison");
        }
        other => panic!("unexpected error {other}"),
    }
    assert!(error.to_string().contains(&format!("#{poison}")));

    // Nothing at or after the poison event is marked handled.
    let checkpoint = subscription.checkpoint().await.expect("checkpoint");
    assert!(checkpoint.global_position < poison);
    let delivered_after: i64 =
        sqlx::query_scalar("SELECT count(*) FROM delivered WHERE global_position >= $1")
            .bind(poison)
            .fetch_one(&db.pool)
            .await
            .expect("count");
    assert_eq!(delivered_after, 0);

    // Once the handler is fixed the subscription resumes at the poison event.
    handler.armed.store(0, Ordering::SeqCst);
    subscription.drain(&handler).await.expect("resumes");
    assert_delivered_exactly_once_in_aggregate_order(&db.pool).await;
}

async fn bulk_insert_more(pool: &PgPool) {
    sqlx::query(
        "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata)
         SELECT 'Test', 'later-' || a, 1, 'Tested', '1.0', '{\"Tested\": {}}', '{}' FROM generate_series(1, 6) a",
    )
    .execute(pool)
    .await
    .expect("insert");
}

/// Counts events and signals when it has seen `want`.
struct Counter {
    seen: AtomicI64,
    want: i64,
    done: tokio::sync::Notify,
}

#[async_trait]
impl EventHandler for Counter {
    async fn handle(&self, _conn: &mut PgConnection, _event: &StoredEvent) -> Result<(), BoxError> {
        if self.seen.fetch_add(1, Ordering::SeqCst) + 1 >= self.want {
            self.done.notify_one();
        }
        Ok(())
    }
}

#[tokio::test]
async fn a_waiting_subscriber_wakes_on_notify_without_polling() {
    let db = TestDatabase::new().await;
    let handler = Arc::new(Counter {
        seen: AtomicI64::new(0),
        want: 3,
        done: tokio::sync::Notify::new(),
    });
    // Polling so rare that only a notification can wake it within the test's patience.
    let subscription =
        Subscription::new("notify", db.pool.clone()).with_poll_interval(Duration::from_secs(3600));
    let runner = {
        let handler = handler.clone();
        tokio::spawn(async move {
            subscription
                .run(handler.as_ref(), std::future::pending())
                .await
        })
    };
    // Let it reach the waiting state with an empty log.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(handler.seen.load(Ordering::SeqCst), 0);
    // The insert trigger notifies: an independent listener hears it.
    let mut listener = sqlx::postgres::PgListener::connect_with(&db.pool)
        .await
        .expect("listener");
    listener
        .listen(framegate_projections::subscription::NOTIFY_CHANNEL)
        .await
        .expect("listen");
    bulk_insert(&db.pool, 3, 1).await;
    let heard = tokio::time::timeout(Duration::from_secs(10), listener.recv())
        .await
        .expect("a notification within 10 s")
        .expect("notification");
    assert_eq!(heard.channel(), "framegate_events");
    tokio::time::timeout(Duration::from_secs(10), handler.done.notified())
        .await
        .expect("woken by NOTIFY");
    assert_eq!(handler.seen.load(Ordering::SeqCst), 3);
    runner.abort();
}
