//! Subscriptions that heal: a passing failure is waited out and skips nothing, an event that
//! can never be handled is parked while the rest keeps flowing (or, for a stopping
//! subscription, held until retried), and a retry re-runs what was parked.

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use framegate_commands::testing::TestDatabase;
use framegate_projections::parking;
use framegate_projections::subscription::BoxError;
use framegate_projections::{EventHandler, OnPoison, StoredEvent, Subscription, Transient};
use sqlx::{PgConnection, PgPool};
use tokio::sync::watch;

/// Records deliveries; refuses the event of type `Poison` while `broken`, and fails the
/// first `outages` batches with a passing error.
struct Flaky {
    broken: AtomicBool,
    outages: AtomicU32,
}

#[async_trait]
impl EventHandler for Flaky {
    async fn handle(&self, conn: &mut PgConnection, event: &StoredEvent) -> Result<(), BoxError> {
        if self
            .outages
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
        {
            return Err(Box::new(Transient("the broker is away".into())));
        }
        if event.event_type == "Poison" && self.broken.load(Ordering::SeqCst) {
            return Err("this payload can never be handled".into());
        }
        sqlx::query("INSERT INTO delivered (global_position) VALUES ($1)")
            .bind(event.global_position)
            .execute(conn)
            .await?;
        Ok(())
    }
}

async fn setup(pool: &PgPool) -> i64 {
    sqlx::query("CREATE TABLE delivered (global_position bigint PRIMARY KEY)")
        .execute(pool)
        .await
        .expect("create delivered");
    insert(pool, "before", 5).await;
    let poison: i64 = sqlx::query_scalar(
        "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata)
         VALUES ('Test', 'poison', 1, 'Poison', '1.0', '{}', '{}') RETURNING global_position",
    )
    .fetch_one(pool)
    .await
    .expect("poison");
    insert(pool, "after", 5).await;
    poison
}

async fn insert(pool: &PgPool, aggregate: &str, count: i64) {
    sqlx::query(
        "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata)
         SELECT 'Test', $1, s, 'Tested', '1.0', '{}', '{}' FROM generate_series(1, $2) s",
    )
    .bind(aggregate)
    .bind(count)
    .execute(pool)
    .await
    .expect("insert");
}

async fn delivered(pool: &PgPool) -> Vec<i64> {
    sqlx::query_scalar("SELECT global_position FROM delivered ORDER BY 1")
        .fetch_all(pool)
        .await
        .expect("delivered")
}

async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(20);
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn start(
    subscription: Subscription,
    handler: Arc<Flaky>,
) -> (watch::Sender<bool>, tokio::task::JoinHandle<()>) {
    let (stop, mut stopped) = watch::channel(false);
    let task = tokio::spawn(async move {
        subscription
            .run(handler.as_ref(), async move {
                let _ = stopped.wait_for(|stop| *stop).await;
            })
            .await
            .expect("the runner never ends on a handler's error");
    });
    (stop, task)
}

#[tokio::test]
async fn a_poison_event_is_parked_the_rest_flows_and_a_retry_handles_it_once_fixed() {
    let db = TestDatabase::new().await;
    let poison = setup(&db.pool).await;
    let handler = Arc::new(Flaky {
        broken: AtomicBool::new(true),
        outages: AtomicU32::new(2),
    });
    let subscription = Subscription::new("healing", db.pool.clone())
        .with_batch_size(4)
        .with_poll_interval(Duration::from_millis(50));
    let (stop, task) = start(subscription.clone(), handler.clone());

    // Everything but the poison event arrives, past the two outages and the poison.
    let stored: Vec<i64> = sqlx::query_scalar("SELECT global_position FROM events ORDER BY 1")
        .fetch_all(&db.pool)
        .await
        .expect("stored");
    let expected: Vec<i64> = stored.iter().copied().filter(|p| *p != poison).collect();
    eventually("every other event", || async {
        delivered(&db.pool).await == expected
    })
    .await;
    let parked = parking::list(&db.pool).await.expect("parked");
    assert_eq!(parked.len(), 1, "{parked:?}");
    let row = &parked[0];
    assert_eq!(
        (
            row.subscription.as_str(),
            row.global_position,
            row.event_type.as_str()
        ),
        ("healing", poison, "Poison")
    );
    assert!(!row.blocking);
    assert!(row.error.contains("can never be handled"), "{}", row.error);
    assert_eq!(
        subscription
            .checkpoint()
            .await
            .expect("checkpoint")
            .global_position,
        *stored.last().expect("events")
    );
    // `/metrics` says so: the outages and strikes retried, the event parked, and (read from
    // the store) one parked event, nothing left to handle, the checkpoint at the end.
    // (The runner counts right after each commit: the last batch may just be in between.)
    eventually("the subscription's counters", || async {
        let exposed = framegate_commands::metrics::encode();
        [
            "framegate_subscription_retries_total{subscription=\"healing\",reason=\"transient\"} 2\n",
            "framegate_subscription_events_parked_total{subscription=\"healing\"} 1\n",
            "framegate_subscription_events_handled_total{subscription=\"healing\"} 10\n",
        ]
        .iter()
        .all(|series| exposed.contains(series))
    })
    .await;
    let store = framegate_projections::metrics::store_gauges(&db.pool)
        .await
        .expect("store gauges");
    let healing = store
        .subscriptions
        .iter()
        .find(|s| s.name == "healing")
        .expect("the subscription's gauges");
    assert_eq!(
        (healing.parked, healing.lag_events, healing.stopped),
        (1, 0, false)
    );
    assert_eq!(healing.position, *stored.last().expect("events"));
    assert_eq!(healing.lag_seconds, 0.0);

    // A retry while it is still broken keeps it parked and counts the attempt.
    assert_eq!(
        parking::request_retry(&db.pool, "healing", None)
            .await
            .expect("retry"),
        1
    );
    eventually("the failed retry", || async {
        let rows = parking::list(&db.pool).await.expect("parked");
        rows.len() == 1 && rows[0].attempts == 2 && rows[0].retry_requested_at.is_none()
    })
    .await;

    // Fixed, a retry handles it exactly once and the row goes.
    handler.broken.store(false, Ordering::SeqCst);
    parking::request_retry(&db.pool, "healing", Some(poison))
        .await
        .expect("retry");
    eventually("the parked event handled", || async {
        parking::list(&db.pool).await.expect("parked").is_empty()
    })
    .await;
    assert_eq!(delivered(&db.pool).await, stored);
    stop.send_replace(true);
    task.await.expect("runner");
}

#[tokio::test]
async fn a_stopping_subscription_holds_at_the_poison_event_until_it_is_retried() {
    let db = TestDatabase::new().await;
    let poison = setup(&db.pool).await;
    let handler = Arc::new(Flaky {
        broken: AtomicBool::new(true),
        outages: AtomicU32::new(0),
    });
    let subscription = Subscription::new("in-order", db.pool.clone())
        .with_batch_size(4)
        .with_poll_interval(Duration::from_millis(50))
        .on_poison(OnPoison::Stop);
    let (stop, task) = start(subscription.clone(), handler.clone());

    eventually("the subscription to stop at the poison", || async {
        parking::list(&db.pool)
            .await
            .expect("parked")
            .iter()
            .any(|row| row.blocking && row.global_position == poison)
    })
    .await;
    // Nothing at or after the poison event was handled, and it stays that way.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(delivered(&db.pool).await.iter().all(|p| *p < poison));
    assert!(
        subscription
            .checkpoint()
            .await
            .expect("checkpoint")
            .global_position
            < poison
    );

    handler.broken.store(false, Ordering::SeqCst);
    parking::request_retry(&db.pool, "in-order", None)
        .await
        .expect("retry");
    let stored: Vec<i64> = sqlx::query_scalar("SELECT global_position FROM events ORDER BY 1")
        .fetch_all(&db.pool)
        .await
        .expect("stored");
    eventually("everything, in order, and the row gone", || async {
        delivered(&db.pool).await == stored
            && parking::list(&db.pool).await.expect("parked").is_empty()
    })
    .await;
    stop.send_replace(true);
    task.await.expect("runner");
}
