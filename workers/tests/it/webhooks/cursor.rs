//! The queues' cursors (migration 0028, ADR 0034): rows draw their `seq` in the order their
//! transactions commit, a record from a sender that lost its queue changes nothing, and a
//! delivery made on its first attempt writes no row of its own.

use std::time::Duration;

use chrono::Utc;
use framegate_commands::webhook_deliveries::{enqueue, NewDelivery, Target};
use framegate_workers::webhooks::attempt::Answer;
use framegate_workers::webhooks::claim::{self, Hold};
use framegate_workers::webhooks::outcome::{self, Attempted, End, Recorded};
use uuid::Uuid;

use super::receiver::Reply;
use super::rig::{config, Rig, WAIT};
use super::runs::backlog;

fn delivery(rig: &Rig, endpoint: Uuid, n: usize) -> NewDelivery {
    NewDelivery {
        target: Target::Endpoint(endpoint),
        owner: rig.owner.as_uuid(),
        message_id: format!("msg_{}", Uuid::now_v7().simple()),
        event_type: "webhook.test".into(),
        event_at: Utc::now(),
        video_id: None,
        body: format!(r#"{{"n":{n}}}"#),
        trace: None,
    }
}

#[tokio::test]
async fn a_queues_rows_draw_their_seq_in_commit_order_so_the_cursor_passes_none() {
    let rig = Rig::new().await;
    let (endpoint, _) = rig.endpoint("/order", None).await;
    let first = delivery(&rig, endpoint, 0);
    let second = delivery(&rig, endpoint, 1);
    // A sender runs throughout: had the second committed first, it would have been sent and
    // the queue's cursor moved past the first's seq before the first was visible.
    rig.start_sender(config());
    // A long transaction enqueues first and commits last.
    let mut slow = rig.db.pool.begin().await.expect("tx");
    enqueue(&mut slow, std::slice::from_ref(&first))
        .await
        .expect("enqueue first");
    let pool = rig.db.pool.clone();
    let quick = second.clone();
    let mut racing = tokio::spawn(async move {
        let mut tx = pool.begin().await.expect("tx");
        enqueue(&mut tx, &[quick]).await.expect("enqueue second");
        tx.commit().await.expect("commit second");
    });
    // The second waits for the first's enqueue lock instead of drawing a seq and committing
    // (a sender would have moved the cursor past the first before it was visible).
    let waited = tokio::time::timeout(Duration::from_millis(500), &mut racing).await;
    assert!(
        waited.is_err(),
        "the second enqueue did not wait for the first"
    );
    slow.commit().await.expect("commit first");
    racing.await.expect("second");
    let received = rig.receiver.wait_for("/order", 2, WAIT).await;
    let ids: Vec<&str> = received.iter().map(|r| r.header("webhook-id")).collect();
    assert_eq!(ids, [first.message_id.as_str(), second.message_id.as_str()]);
}

#[tokio::test]
async fn an_enqueue_never_waits_for_a_record_holding_its_queue_and_the_scan_finds_its_row() {
    let rig = Rig::new().await;
    let (endpoint, _) = rig.endpoint("/held", None).await;
    let sent = backlog(&rig, endpoint, 1).await;
    // A claim scans the first row and makes its queue.
    let runs = claim::claim(&rig.db.pool, 1, Duration::from_secs(60))
        .await
        .expect("claim");
    assert_eq!(runs.len(), 1);
    // A record holds the queue's row (as `record::move_cursor` does) while a row is enqueued.
    let mut record = rig.db.pool.begin().await.expect("tx");
    sqlx::query("SELECT 1 FROM webhook_queues WHERE queue = 'endpoint:' || $1::text FOR UPDATE")
        .bind(endpoint)
        .execute(&mut *record)
        .await
        .expect("hold the queue");
    let late = delivery(&rig, endpoint, 1);
    let pool = rig.db.pool.clone();
    let enqueued = tokio::time::timeout(Duration::from_secs(2), async move {
        let mut tx = pool.begin().await.expect("tx");
        enqueue(&mut tx, &[late]).await.expect("enqueue");
        tx.commit().await.expect("commit");
    })
    .await;
    assert!(enqueued.is_ok(), "the enqueue waited for the record");
    record.rollback().await.expect("rollback");
    // The sender finds the new row although its queue is held by the first claim's lease:
    // that lease is let go, and the scan made the queue due again.
    claim::let_go(&rig.db.pool, &runs[0].hold, &runs[0].rows)
        .await
        .expect("let go");
    rig.start_sender(config());
    let received = rig.receiver.wait_for("/held", 2, WAIT).await;
    assert_eq!(received[0].header("webhook-id"), sent[0]);
}

#[tokio::test]
async fn a_record_from_a_sender_that_lost_its_queue_changes_nothing() {
    let rig = Rig::new().await;
    let (endpoint, _) = rig.endpoint("/lost", None).await;
    backlog(&rig, endpoint, 3).await;
    let mut runs = claim::claim(&rig.db.pool, 1, Duration::from_secs(60))
        .await
        .expect("claim");
    let run = runs.pop().expect("a run");
    let Hold::Queue { queue, .. } = &run.hold else {
        panic!("a queue's run");
    };
    // Its lease lapsed and another sender took the queue.
    sqlx::query("UPDATE webhook_queues SET lease = gen_random_uuid() WHERE queue = $1")
        .bind(queue)
        .execute(&rig.db.pool)
        .await
        .expect("taken");
    let attempted: Vec<Attempted> = run
        .rows
        .iter()
        .map(|row| Attempted {
            claimed: row.clone(),
            started_at: Utc::now(),
            answer: Answer {
                status: Some(200),
                latency: Duration::from_millis(3),
                error: None,
                body: None,
            },
        })
        .collect();
    let config = config();
    let end = End::Release { not_before: None };
    let endpoint_id = run.to.endpoint_id;
    let recorded = outcome::record(
        &rig.db.pool,
        &config,
        &run.hold,
        endpoint_id,
        &attempted,
        &[],
        end,
    )
    .await
    .expect("record");
    assert_eq!(recorded, Recorded::Lost);
    let state: Vec<(String, i32)> = sqlx::query_as(
        "SELECT status, attempts FROM webhook_deliveries WHERE endpoint_id = $1 ORDER BY seq",
    )
    .bind(endpoint)
    .fetch_all(&rig.db.pool)
    .await
    .expect("rows");
    assert_eq!(state, vec![("pending".to_owned(), 0); 3]);
    let (through, logged): (i64, i64) = sqlx::query_as(
        "SELECT sent_through, (SELECT count(*) FROM webhook_attempt_log)
           FROM webhook_queues WHERE queue = $1",
    )
    .bind(queue)
    .fetch_one(&rig.db.pool)
    .await
    .expect("queue");
    assert_eq!(
        (through, logged),
        (0, 0),
        "cursor and attempts log untouched"
    );
}

#[tokio::test]
async fn deliveries_made_on_their_first_attempt_write_no_row_of_their_own() {
    let rig = Rig::new().await;
    let (endpoint, _) = rig.endpoint("/fresh", None).await;
    let sent = backlog(&rig, endpoint, 2 * claim::RUN_ROWS as usize + 22).await;
    rig.start_sender(config());
    rig.receiver.wait_for("/fresh", sent.len(), WAIT).await;
    let states: Vec<(String, String, i32, Option<i32>, i64)> = {
        let deadline = std::time::Instant::now() + WAIT;
        loop {
            let states: Vec<(String, String, i32, Option<i32>, i64)> = sqlx::query_as(
                "SELECT d.message_id, d.status, d.attempts, d.last_status,
                        (SELECT count(*) FROM webhook_attempt_log a
                          WHERE a.delivery_id = d.delivery_id AND a.status = 200)
                   FROM webhook_delivery_states d WHERE d.endpoint_id = $1 ORDER BY d.seq",
            )
            .bind(endpoint)
            .fetch_all(&rig.db.pool)
            .await
            .expect("states");
            if states.iter().all(|s| s.1 == "delivered") {
                break states;
            }
            assert!(std::time::Instant::now() < deadline, "{states:?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    let ids: Vec<&str> = states.iter().map(|s| s.0.as_str()).collect();
    assert_eq!(ids, sent);
    assert!(
        states.iter().all(|s| (s.2, s.3, s.4) == (1, Some(200), 1)),
        "each delivered once, its attempt in the log: {states:?}"
    );
    // Every row is still the version its enqueue wrote (one transaction): the record wrote
    // no row of the outbox, only the runs' rows and the cursor.
    let (versions, own_attempts, runs): (i64, i64, i64) = sqlx::query_as(
        "SELECT (SELECT count(DISTINCT xmin::text) FROM webhook_deliveries
                  WHERE endpoint_id = $1),
                (SELECT count(*) FROM webhook_delivery_attempts),
                (SELECT count(*) FROM webhook_runs)",
    )
    .bind(endpoint)
    .fetch_one(&rig.db.pool)
    .await
    .expect("versions");
    assert_eq!(
        (versions, own_attempts),
        (1, 0),
        "no row written per delivery"
    );
    let at_least = sent.len().div_ceil(claim::RUN_ROWS as usize) as i64;
    assert!(
        (at_least..=sent.len() as i64).contains(&runs),
        "runs of up to {} rows recorded as one row each: {runs}",
        claim::RUN_ROWS
    );
}

#[tokio::test]
async fn a_failing_head_retried_by_hand_in_flight_keeps_its_place_and_holds_nothing_up() {
    let rig = Rig::new().await;
    let (endpoint, _) = rig.endpoint("/head", None).await;
    // The head's first attempt answers 500 after a while; everything after it, 200.
    rig.receiver.script(
        "/head",
        [Reply::SlowStatus(Duration::from_millis(800), 500)],
    );
    let sent = backlog(&rig, endpoint, 3).await;
    // A failure would otherwise back off for an hour.
    rig.start_sender(framegate_workers::webhooks::WebhookConfig {
        retry_schedule: vec![Duration::from_secs(3600)],
        ..config()
    });
    rig.receiver.wait_for("/head", 1, WAIT).await;
    let head: Uuid =
        sqlx::query_scalar("SELECT delivery_id FROM webhook_deliveries WHERE message_id = $1")
            .bind(&sent[0])
            .fetch_one(&rig.db.pool)
            .await
            .expect("head");
    let mut tx = rig.db.pool.begin().await.expect("tx");
    framegate_commands::webhook_deliveries::retry(&mut tx, endpoint, head)
        .await
        .expect("retry")
        .expect("retried");
    tx.commit().await.expect("commit");
    // The retry goes now, and the rows behind follow it, in order, without the hour's wait.
    let received = rig.receiver.wait_for("/head", 4, WAIT).await;
    let ids: Vec<&str> = received.iter().map(|r| r.header("webhook-id")).collect();
    assert_eq!(ids, [&sent[0], &sent[0], &sent[1], &sent[2]]);
    let expected = [
        ("delivered".to_owned(), 2, 2),
        ("delivered".to_owned(), 1, 1),
        ("delivered".to_owned(), 1, 1),
    ];
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let state: Vec<(String, i32, i64)> = sqlx::query_as(
            "SELECT d.status, d.attempts,
                    (SELECT count(*) FROM webhook_attempt_log a
                      WHERE a.delivery_id = d.delivery_id)
               FROM webhook_delivery_states d WHERE d.endpoint_id = $1 ORDER BY d.seq",
        )
        .bind(endpoint)
        .fetch_all(&rig.db.pool)
        .await
        .expect("state");
        if state == expected {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{state:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        rig.receiver.received("/head").len(),
        4,
        "nothing sent twice"
    );
}

#[tokio::test]
async fn a_fresh_delivery_retried_by_hand_in_flight_is_sent_again_and_both_attempts_logged() {
    let rig = Rig::new().await;
    let (endpoint, _) = rig.endpoint("/again", None).await;
    // The first attempt of the first row is delivered, slowly; everything else at once.
    rig.receiver.script(
        "/again",
        [Reply::SlowStatus(Duration::from_millis(800), 200)],
    );
    let sent = backlog(&rig, endpoint, 2).await;
    rig.start_sender(config());
    rig.receiver.wait_for("/again", 1, WAIT).await;
    let first: Uuid =
        sqlx::query_scalar("SELECT delivery_id FROM webhook_deliveries WHERE message_id = $1")
            .bind(&sent[0])
            .fetch_one(&rig.db.pool)
            .await
            .expect("first");
    // Retried while its attempt is in flight: the run's record must not take it as settled.
    let mut tx = rig.db.pool.begin().await.expect("tx");
    framegate_commands::webhook_deliveries::retry(&mut tx, endpoint, first)
        .await
        .expect("retry")
        .expect("retried");
    tx.commit().await.expect("commit");
    let received = rig.receiver.wait_for("/again", 3, WAIT).await;
    let ids: Vec<&str> = received.iter().map(|r| r.header("webhook-id")).collect();
    assert_eq!(
        ids.iter().filter(|id| **id == sent[0]).count(),
        2,
        "{ids:?}"
    );
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let state: (String, i32, Vec<i32>) = sqlx::query_as(
            "SELECT d.status, d.attempts,
                    ARRAY(SELECT a.attempt FROM webhook_attempt_log a
                           WHERE a.delivery_id = d.delivery_id ORDER BY a.attempt)
               FROM webhook_delivery_states d WHERE d.delivery_id = $1",
        )
        .bind(first)
        .fetch_one(&rig.db.pool)
        .await
        .expect("state");
        if state == ("delivered".to_owned(), 2, vec![1, 2]) {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{state:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn an_endpoint_disabled_mid_drain_leaves_every_row_delivered_or_closed() {
    let rig = Rig::new().await;
    let (endpoint, _) = rig.endpoint("/drain", None).await;
    rig.receiver
        .always("/drain", Reply::Slow(Duration::from_millis(2)));
    let sent = backlog(&rig, endpoint, 3 * claim::RUN_ROWS as usize).await;
    rig.start_sender(config());
    rig.receiver.wait_for("/drain", 150, WAIT).await;
    framegate_commands::webhooks::execute(
        &rig.store,
        framegate_domain::WebhookEndpointId::from_uuid(endpoint),
        framegate_domain::WebhookCommand::Disable {
            reason: framegate_domain::webhook::DisabledReason::Owner,
            detail: "paused".into(),
        },
        &framegate_commands::CommandMetadata::new_request(framegate_commands::Actor::System),
    )
    .await
    .expect("disable");
    // Every row ends delivered (counted and logged once per arrival) or closed unsent; the
    // queue's cursor at its end.
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let (pending, through, tail): (i64, i64, i64) = sqlx::query_as(
            "SELECT (SELECT count(*) FROM webhook_delivery_states
                      WHERE endpoint_id = $1 AND status = 'pending'),
                    sent_through, tail_seq
               FROM webhook_queues WHERE queue = 'endpoint:' || $1::text",
        )
        .bind(endpoint)
        .fetch_one(&rig.db.pool)
        .await
        .expect("queue");
        if pending == 0 && through == tail {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{pending} pending, cursor {through} of {tail}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let rows: Vec<(String, String, i32, i64)> = sqlx::query_as(
        "SELECT d.message_id, d.status, d.attempts,
                (SELECT count(*) FROM webhook_attempt_log a
                  WHERE a.delivery_id = d.delivery_id)
           FROM webhook_delivery_states d WHERE d.endpoint_id = $1 ORDER BY d.seq",
    )
    .bind(endpoint)
    .fetch_all(&rig.db.pool)
    .await
    .expect("rows");
    let arrived: Vec<String> = rig
        .receiver
        .received("/drain")
        .iter()
        .map(|r| r.header("webhook-id").to_owned())
        .collect();
    for (message, status, attempts, logged) in &rows {
        let times = arrived.iter().filter(|id| *id == message).count();
        match status.as_str() {
            "delivered" => assert!(times >= 1 && *attempts >= 1 && *logged == i64::from(*attempts)),
            "failed" => assert_eq!((times, *attempts, *logged), (0, 0, 0), "{message}"),
            other => panic!("{message} is {other}"),
        }
    }
    assert!(rows.iter().any(|row| row.1 == "failed"), "some were closed");
    assert_eq!(rows.len(), sent.len());
}
