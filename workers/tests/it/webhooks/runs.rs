//! The sender's runs (ADR 0034): a queue's backlog goes out back to back in its order, each
//! delivery logged once; a failure inside a run stops it with nothing behind it sent or
//! counted; a manual retry of a delivery in flight is not overwritten by that attempt's
//! record; and a delivery we could not prepare is not held against the endpoint.

use std::time::Duration;

use chrono::Utc;
use framegate_commands::webhook_deliveries::{self, enqueue, NewDelivery, Target};
use framegate_workers::webhooks::claim;
use uuid::Uuid;

use super::receiver::Reply;
use super::rig::{config, Rig, WAIT};

/// Queues `count` `webhook.test` deliveries for `endpoint`; returns their message ids in
/// queue order.
pub(super) async fn backlog(rig: &Rig, endpoint: Uuid, count: usize) -> Vec<String> {
    let rows: Vec<NewDelivery> = (0..count)
        .map(|i| NewDelivery {
            target: Target::Endpoint(endpoint),
            owner: rig.owner.as_uuid(),
            message_id: format!("msg_{}", Uuid::now_v7().simple()),
            event_type: "webhook.test".into(),
            event_at: Utc::now(),
            video_id: None,
            body: format!(r#"{{"n":{i}}}"#),
            trace: None,
        })
        .collect();
    let mut tx = rig.db.pool.begin().await.expect("tx");
    enqueue(&mut tx, &rows).await.expect("enqueue");
    tx.commit().await.expect("commit");
    rows.into_iter().map(|row| row.message_id).collect()
}

/// (message id, status, attempts, attempts logged) of the endpoint's deliveries, in order.
async fn log(rig: &Rig, endpoint: Uuid) -> Vec<(String, String, i32, i64)> {
    sqlx::query_as(
        "SELECT d.message_id, d.status, d.attempts,
                (SELECT count(*) FROM webhook_attempt_log a
                  WHERE a.delivery_id = d.delivery_id)
           FROM webhook_delivery_states d WHERE d.endpoint_id = $1 ORDER BY d.seq",
    )
    .bind(endpoint)
    .fetch_all(&rig.db.pool)
    .await
    .expect("log")
}

async fn wait_log(
    rig: &Rig,
    endpoint: Uuid,
    condition: impl Fn(&[(String, String, i32, i64)]) -> bool,
) -> Vec<(String, String, i32, i64)> {
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let rows = log(rig, endpoint).await;
        if condition(&rows) {
            return rows;
        }
        assert!(std::time::Instant::now() < deadline, "{rows:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_backlog_longer_than_a_run_arrives_in_order_each_delivery_logged_once() {
    let rig = Rig::new().await;
    let (endpoint, _) = rig.endpoint("/backlog", None).await;
    // Two full runs and a short one.
    let count = 2 * claim::RUN_ROWS as usize + 22;
    let sent = backlog(&rig, endpoint, count).await;
    rig.start_sender(config());
    let received = rig.receiver.wait_for("/backlog", count, WAIT).await;
    let ids: Vec<&str> = received.iter().map(|r| r.header("webhook-id")).collect();
    assert_eq!(ids, sent, "in queue order, each once");
    let rows = wait_log(&rig, endpoint, |rows| {
        rows.iter().all(|row| row.1 == "delivered")
    })
    .await;
    assert!(
        rows.iter().all(|row| row.2 == 1 && row.3 == 1),
        "one attempt each, logged once: {rows:?}"
    );
}

#[tokio::test]
async fn a_failure_inside_a_run_stops_it_and_nothing_behind_it_is_sent_or_counted() {
    let rig = Rig::new().await;
    let (endpoint, _) = rig.endpoint("/stops", None).await;
    rig.receiver.script(
        "/stops",
        [Reply::Status(200), Reply::Status(200), Reply::Status(500)],
    );
    let sent = backlog(&rig, endpoint, 5).await;
    rig.start_sender(config());
    let received = rig.receiver.wait_for("/stops", 6, WAIT).await;
    let seen: Vec<(&str, u16)> = received
        .iter()
        .map(|r| (r.header("webhook-id"), r.status))
        .collect();
    assert_eq!(
        seen,
        [
            (sent[0].as_str(), 200),
            (sent[1].as_str(), 200),
            (sent[2].as_str(), 500),
            (sent[2].as_str(), 200),
            (sent[3].as_str(), 200),
            (sent[4].as_str(), 200),
        ]
    );
    let rows = wait_log(&rig, endpoint, |rows| {
        rows.iter().all(|row| row.1 == "delivered")
    })
    .await;
    let attempts: Vec<(i32, i64)> = rows.iter().map(|row| (row.2, row.3)).collect();
    assert_eq!(
        attempts,
        [(1, 1), (1, 1), (2, 2), (1, 1), (1, 1)],
        "the rows the failed run gave back were not counted: {rows:?}"
    );
}

#[tokio::test]
async fn a_manual_retry_while_the_delivery_is_in_flight_is_sent_again() {
    let rig = Rig::new().await;
    let (endpoint, _) = rig.endpoint("/slow", None).await;
    rig.receiver
        .script("/slow", [Reply::Slow(Duration::from_millis(800))]);
    let sent = backlog(&rig, endpoint, 1).await;
    rig.start_sender(config());
    rig.receiver.wait_for("/slow", 1, WAIT).await;
    let delivery: Uuid =
        sqlx::query_scalar("SELECT delivery_id FROM webhook_deliveries WHERE message_id = $1")
            .bind(&sent[0])
            .fetch_one(&rig.db.pool)
            .await
            .expect("delivery");
    // Retried by its owner while the first attempt still waits for its answer (a 200).
    let mut tx = rig.db.pool.begin().await.expect("tx");
    let retried = webhook_deliveries::retry(&mut tx, endpoint, delivery)
        .await
        .expect("retry");
    tx.commit().await.expect("commit");
    assert!(retried.is_some());
    let received = rig.receiver.wait_for("/slow", 2, WAIT).await;
    assert!(received.iter().all(|r| r.header("webhook-id") == sent[0]));
    let rows = wait_log(&rig, endpoint, |rows| {
        rows[0].1 == "delivered" && rows[0].3 == 2
    })
    .await;
    assert_eq!(rows[0].2, 2, "{rows:?}");
}

#[tokio::test]
async fn a_delivery_we_cannot_sign_is_not_held_against_the_endpoint() {
    let rig = Rig::new().await;
    let (endpoint, _) = rig.endpoint("/unsigned", None).await;
    // Our side broken: the endpoint's secrets are missing.
    let deleted: Vec<String> =
        sqlx::query_scalar("DELETE FROM webhook_secrets WHERE endpoint_id = $1 RETURNING secret")
            .bind(endpoint)
            .fetch_all(&rig.db.pool)
            .await
            .expect("delete secrets");
    assert!(!deleted.is_empty());
    backlog(&rig, endpoint, 2).await;
    rig.start_sender(config());
    // Claimed and let go with nothing counted, the queue held back for a while.
    let rows: Vec<(String, i32, i64)> = {
        let deadline = std::time::Instant::now() + WAIT;
        loop {
            let rows: Vec<(String, i32, i64, bool)> = sqlx::query_as(
                "SELECT d.status, d.attempts,
                        (SELECT count(*) FROM webhook_attempt_log a
                          WHERE a.delivery_id = d.delivery_id),
                        q.lease IS NULL AND q.due_at > now() + interval '1 second'
                   FROM webhook_deliveries d JOIN webhook_queues q USING (queue)
                  WHERE d.endpoint_id = $1 ORDER BY d.seq",
            )
            .bind(endpoint)
            .fetch_all(&rig.db.pool)
            .await
            .expect("rows");
            if rows.iter().all(|row| row.3) {
                break rows.into_iter().map(|r| (r.0, r.1, r.2)).collect();
            }
            assert!(std::time::Instant::now() < deadline, "{rows:?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    assert!(rig.receiver.received("/unsigned").is_empty());
    assert!(
        rows.iter()
            .all(|row| row.0 == "pending" && row.1 == 0 && row.2 == 0),
        "no attempt counted or logged: {rows:?}"
    );
    let failing: Option<chrono::DateTime<Utc>> = sqlx::query_scalar(
        "SELECT failing_since FROM webhook_endpoint_health WHERE endpoint_id = $1",
    )
    .bind(endpoint)
    .fetch_optional(&rig.db.pool)
    .await
    .expect("health")
    .flatten();
    assert_eq!(failing, None, "the endpoint's failure clock did not start");
}

#[tokio::test]
async fn a_delivery_retried_by_hand_does_not_pull_rows_past_one_backing_off() {
    let rig = Rig::new().await;
    let (endpoint, _) = rig.endpoint("/retried", None).await;
    let sent = backlog(&rig, endpoint, 3).await;
    // The first was delivered long ago; the second is backing off after a failure; the third
    // waits behind it.
    sqlx::query(
        "UPDATE webhook_deliveries SET status = 'delivered', attempts = 1, delivered_at = now()
          WHERE message_id = $1",
    )
    .bind(&sent[0])
    .execute(&rig.db.pool)
    .await
    .expect("delivered");
    sqlx::query(
        "UPDATE webhook_deliveries SET attempts = 1, next_attempt_at = now() + interval '1 hour'
          WHERE message_id = $1",
    )
    .bind(&sent[1])
    .execute(&rig.db.pool)
    .await
    .expect("backing off");
    // The queue's cursor past the first, due when the second's backoff ends.
    sqlx::query(
        "INSERT INTO webhook_queues (queue, sent_through, due_at)
         SELECT queue, seq, now() + interval '1 hour' FROM webhook_deliveries
          WHERE message_id = $1
         ON CONFLICT (queue) DO UPDATE
            SET sent_through = EXCLUDED.sent_through, due_at = EXCLUDED.due_at",
    )
    .bind(&sent[0])
    .execute(&rig.db.pool)
    .await
    .expect("cursor");
    let first: Uuid =
        sqlx::query_scalar("SELECT delivery_id FROM webhook_deliveries WHERE message_id = $1")
            .bind(&sent[0])
            .fetch_one(&rig.db.pool)
            .await
            .expect("delivery");
    let mut tx = rig.db.pool.begin().await.expect("tx");
    webhook_deliveries::retry(&mut tx, endpoint, first)
        .await
        .expect("retry")
        .expect("retried");
    tx.commit().await.expect("commit");
    rig.start_sender(config());
    let rows = wait_log(&rig, endpoint, |rows| {
        rows[0].1 == "delivered" && rows[0].2 == 2
    })
    .await;
    let received = rig.receiver.received("/retried");
    let ids: Vec<&str> = received.iter().map(|r| r.header("webhook-id")).collect();
    assert_eq!(
        ids,
        [sent[0].as_str()],
        "only the retried one went: {rows:?}"
    );
    assert_eq!(
        (rows[1].1.as_str(), rows[1].2, rows[2].1.as_str(), rows[2].2),
        ("pending", 1, "pending", 0),
        "the one backing off and the one behind it were left alone: {rows:?}"
    );
}

#[tokio::test]
async fn the_run_ahead_is_read_for_the_queues_holder_only_and_passes_rows_sent_on_their_own() {
    let rig = Rig::new().await;
    let (endpoint, _) = rig.endpoint("/ahead", None).await;
    backlog(&rig, endpoint, 10).await;
    let runs = claim::claim(&rig.db.pool, 4, Duration::from_secs(60))
        .await
        .expect("claim");
    assert_eq!(runs.len(), 1, "one run for the one queue");
    let claim::Hold::Queue { queue, lease } = runs[0].hold.clone() else {
        panic!("a queue's run: {:?}", runs[0].hold);
    };
    let rows: Vec<(Uuid, i64)> = runs[0]
        .rows
        .iter()
        .map(|row| (row.delivery_id, row.seq))
        .collect();
    assert_eq!(rows.len(), 10);
    assert!(runs[0].rows.iter().all(|row| row.attempts == 1));
    // The queue is held: another claim finds nothing.
    let again = claim::claim(&rig.db.pool, 4, Duration::from_secs(60))
        .await
        .expect("claim again");
    assert!(again.is_empty(), "{again:?}");
    // The sixth row was retried by hand and goes on its own: the run ahead passes it.
    sqlx::query("UPDATE webhook_deliveries SET retry_due_at = now() + interval '1 hour' WHERE delivery_id = $1")
        .bind(rows[5].0)
        .execute(&rig.db.pool)
        .await
        .expect("retry path");
    let ahead = claim::next_run(&rig.db.pool, &queue, lease, rows[1].1)
        .await
        .expect("read ahead")
        .expect("rows ahead");
    assert_eq!(
        ahead.to, runs[0].to,
        "the same destination, read once for the run"
    );
    assert_eq!(
        (
            ahead.to.queue.as_str(),
            ahead.to.endpoint_id,
            ahead.to.endpoint_off.as_deref()
        ),
        (queue.as_str(), Some(endpoint), None)
    );
    assert!(
        ahead
            .to
            .url
            .as_deref()
            .is_some_and(|url| url.ends_with("/ahead")),
        "{:?}",
        ahead.to
    );
    let ids: Vec<Uuid> = ahead.rows.iter().map(|row| row.delivery_id).collect();
    let expected: Vec<Uuid> = rows[2..]
        .iter()
        .filter(|row| row.0 != rows[5].0)
        .map(|row| row.0)
        .collect();
    assert_eq!(ids, expected, "the rows right behind, in order");
    // Reading ahead leases nothing and counts nothing.
    let counted: Vec<i32> = sqlx::query_scalar(
        "SELECT attempts FROM webhook_deliveries WHERE endpoint_id = $1 ORDER BY seq",
    )
    .bind(endpoint)
    .fetch_all(&rig.db.pool)
    .await
    .expect("attempts");
    assert_eq!(counted, [0; 10]);
    // A sender whose lease was lost (another one took the queue) reads nothing.
    let stale = claim::next_run(&rig.db.pool, &queue, Uuid::now_v7(), rows[1].1)
        .await
        .expect("stale read");
    assert!(stale.is_none(), "{stale:?}");
    // Where a run goes is read with each run: an endpoint disabled meanwhile is seen at once.
    sqlx::query("UPDATE webhook_endpoints SET disabled_reason = 'failing' WHERE endpoint_id = $1")
        .bind(endpoint)
        .execute(&rig.db.pool)
        .await
        .expect("disabled");
    let ahead = claim::next_run(&rig.db.pool, &queue, lease, rows[1].1)
        .await
        .expect("read ahead")
        .expect("rows ahead");
    assert_eq!(ahead.to.endpoint_off.as_deref(), Some("disabled (failing)"));
}

#[tokio::test]
async fn a_queue_with_a_retried_row_in_flight_is_not_due_for_its_other_retries() {
    let rig = Rig::new().await;
    let (endpoint, _) = rig.endpoint("/busy", None).await;
    let sent = backlog(&rig, endpoint, 3).await;
    // All three were delivered long ago and retried by hand; the first is in flight.
    sqlx::query(
        "UPDATE webhook_deliveries
            SET status = 'pending',
                attempts = 1, retry_due_at = now() - interval '1 second',
                leased_until = CASE WHEN message_id = $1 THEN now() + interval '1 minute' END
          WHERE endpoint_id = $2",
    )
    .bind(&sent[0])
    .bind(endpoint)
    .execute(&rig.db.pool)
    .await
    .expect("retry path");
    sqlx::query(
        "INSERT INTO webhook_queues (queue, sent_through, tail_seq)
         SELECT queue, max(seq), max(seq) FROM webhook_deliveries WHERE endpoint_id = $1
          GROUP BY queue",
    )
    .bind(endpoint)
    .execute(&rig.db.pool)
    .await
    .expect("queue");
    sqlx::query("UPDATE webhook_outbox_scan SET scanned_through = (SELECT max(seq) FROM webhook_deliveries)")
        .execute(&rig.db.pool)
        .await
        .expect("scanned");
    // The claim takes none of the other two (one retried row per queue at a time) ...
    let runs = claim::claim(&rig.db.pool, 4, Duration::from_secs(60))
        .await
        .expect("claim");
    assert!(runs.is_empty(), "{runs:?}");
    // ... so they are not due either: a sender waiting for them would claim in a loop.
    let due = claim::next_due(&rig.db.pool).await.expect("next due");
    assert_eq!(due, None);
}
