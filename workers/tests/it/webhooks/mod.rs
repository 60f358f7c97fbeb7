//! Webhook delivery end to end, against real Postgres and a real HTTP receiver: the
//! subscription enqueues from the log, the sender signs and sends (Standard Webhooks, checked
//! in Rust and by the official `standardwebhooks` library), retries, disables, refuses
//! private addresses and redirects, and keeps a hanging endpoint from delaying another.

mod credits;
mod cursor;
mod http_client;
mod receiver;
mod rig;
mod runs;

use std::time::Duration;

use framegate_commands::webhooks as endpoints;
use framegate_domain::{ProviderKind, VideoCommand, VideoWebhook};
use framegate_projections::read_models::videos;
use framegate_projections::{EventHandler, StoredEvent, Subscription};
use framegate_workers::webhooks::{claim, WebhookConfig, WebhookEnqueuer, SUBSCRIPTION};
use receiver::Reply;
use rig::{assert_signed, config, official_verdict, wait_disabled, wait_read, Rig, WAIT};
use sqlx::PgConnection;

#[tokio::test]
async fn a_videos_lifecycle_arrives_in_order_signed_with_stable_ids() {
    let rig = Rig::new().await;
    let (endpoint, secret) = rig.endpoint("/hooks", None).await;
    rig.start(config());
    let video = rig
        .request(Some(VideoWebhook {
            url: rig.receiver.url("/per-request"),
            events: vec!["video.completed".into()],
        }))
        .await;
    rig.start_video(video).await;
    rig.video(video, VideoCommand::RecordProgress { percent: 40 })
        .await;
    rig.complete(video).await;

    let received = rig.receiver.wait_for("/hooks", 3, WAIT).await;
    let types: Vec<String> = received
        .iter()
        .map(receiver::Received::event_type)
        .collect();
    assert_eq!(types, ["video.queued", "video.started", "video.completed"]);
    let expected_ids = [
        rig.event_ids(video, "VideoRequested").await[0],
        rig.event_ids(video, "VideoSubmitted").await[0],
        rig.event_ids(video, "VideoCompleted").await[0],
    ];
    for (delivery, event_id) in received.iter().zip(expected_ids) {
        assert_signed(delivery, &secret);
        let id = format!("msg_{}", event_id.simple());
        assert_eq!(delivery.header("webhook-id"), id);
        let body = delivery.json();
        assert_eq!(body["id"], id.as_str());
        assert_eq!(body["data"]["id"], video.to_string().as_str());
        assert_eq!(body["data"]["external_id"], "boat-1");
    }
    // Each describes the video as its event left it, not as it is now.
    let statuses: Vec<String> = received
        .iter()
        .map(|r| {
            r.json()["data"]["status"]
                .as_str()
                .unwrap_or_default()
                .to_owned()
        })
        .collect();
    assert_eq!(statuses, ["queued", "submitted", "completed"]);
    let completed = received[2].json();
    assert!(completed["data"]["content"]["url"]
        .as_str()
        .is_some_and(|url| url.contains(&format!("videos/{video}/video.mp4"))));
    assert_eq!(completed["data"]["final_cost"], 4);
    // progress is opt-in: the default events leave it out.
    assert_eq!(rig.receiver.received("/hooks").len(), 3);
    assert_eq!(official_verdict(&received[2], &secret), "ok");

    // The per-request URL got the one type its filter names, signed with the default secret.
    let per_request = rig.receiver.wait_for("/per-request", 1, WAIT).await;
    assert_eq!(per_request[0].event_type(), "video.completed");
    assert_eq!(
        per_request[0].header("webhook-id"),
        received[2].header("webhook-id")
    );
    let mut conn = rig.db.pool.acquire().await.expect("conn");
    let default = endpoints::default_secret(&mut conn, rig.owner)
        .await
        .expect("secret");
    assert_signed(&per_request[0], &default);
    assert_eq!(official_verdict(&per_request[0], &default), "ok");
    assert_eq!(
        official_verdict(&per_request[0], &secret),
        "WebhookVerificationError"
    );

    let state = rig
        .wait_deliveries(endpoint, |d| d.iter().all(|r| r.1 == "delivered"))
        .await;
    assert!(
        state.iter().all(|r| r.2 == 1 && r.3 == Some(200)),
        "{state:?}"
    );

    // The fold the deliveries are built from ends where the read model is.
    let (folded, _) = videos::as_of::as_of(&mut conn, video, 100)
        .await
        .expect("fold")
        .expect("video");
    let row = videos::get(&rig.db.pool, video)
        .await
        .expect("row")
        .expect("video");
    assert_eq!(folded, row);
}

#[tokio::test]
async fn a_failing_receiver_gets_the_same_id_again_and_nothing_overtakes_it() {
    let rig = Rig::new().await;
    let (endpoint, secret) = rig.endpoint("/flaky", None).await;
    rig.receiver
        .script("/flaky", [Reply::Status(500), Reply::Status(503)]);
    rig.start(config());
    let video = rig.request(None).await;
    rig.start_video(video).await;

    let received = rig.receiver.wait_for("/flaky", 4, WAIT).await;
    let seen: Vec<(String, u16)> = received
        .iter()
        .map(|r| (r.event_type(), r.status))
        .collect();
    assert_eq!(
        seen,
        [
            ("video.queued".to_owned(), 500),
            ("video.queued".to_owned(), 503),
            ("video.queued".to_owned(), 200),
            ("video.started".to_owned(), 200),
        ]
    );
    let id = received[0].header("webhook-id");
    assert!(received[..3].iter().all(|r| r.header("webhook-id") == id));
    assert_ne!(received[3].header("webhook-id"), id);
    for delivery in &received {
        assert_signed(delivery, &secret);
    }
    let state = rig
        .wait_deliveries(endpoint, |d| d.iter().all(|r| r.1 == "delivered"))
        .await;
    assert_eq!(state[0].2, 3, "three attempts: {state:?}");
    let attempts: Vec<(i32, Option<i32>)> = sqlx::query_as(
        "SELECT a.attempt, a.status FROM webhook_attempt_log a
           JOIN webhook_deliveries d USING (delivery_id)
          WHERE d.endpoint_id = $1 AND d.event_type = 'video.queued' ORDER BY a.attempt",
    )
    .bind(endpoint)
    .fetch_all(&rig.db.pool)
    .await
    .expect("attempts");
    assert_eq!(attempts, [(1, Some(500)), (2, Some(503)), (3, Some(200))]);
}

#[tokio::test]
async fn gone_disables_the_endpoint_records_it_and_mails_the_owner() {
    let rig = Rig::new().await;
    let (endpoint, _) = rig.endpoint("/gone", None).await;
    rig.receiver.always("/gone", Reply::Status(410));
    rig.start_subscription();
    let video = rig.request(None).await;
    rig.start_video(video).await;
    // Both queued before anything is sent: the second waits behind the first.
    rig.wait_deliveries(endpoint, |d| d.len() == 2).await;
    rig.start_sender(config());

    let state = rig
        .wait_deliveries(endpoint, |d| d.iter().all(|r| r.1 == "failed"))
        .await;
    assert!(
        state[0].4.as_deref().is_some_and(|e| e.contains("410")),
        "{state:?}"
    );
    assert!(
        state[1]
            .4
            .as_deref()
            .is_some_and(|e| e.contains("not sent") && e.contains("disabled")),
        "{state:?}"
    );
    assert_eq!(
        rig.receiver.received("/gone").len(),
        1,
        "nothing after the 410"
    );
    let row = wait_disabled(&rig, endpoint).await;
    assert_eq!(row.disabled_reason.as_deref(), Some("gone"));
    let recorded: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM events WHERE aggregate_id = $1 AND event_type = 'WebhookEndpointDisabled'",
    )
    .bind(endpoint.to_string())
    .fetch_one(&rig.db.pool)
    .await
    .expect("events");
    assert_eq!(recorded, 1);
    let mail: Vec<serde_json::Value> =
        sqlx::query_scalar("SELECT payload FROM mail_outbox WHERE kind = 'webhook_disabled'")
            .fetch_all(&rig.db.pool)
            .await
            .expect("mail");
    assert_eq!(mail.len(), 1);
    assert_eq!(mail[0]["reason"], "gone");
    assert_eq!(mail[0]["endpoint_id"], endpoint.to_string().as_str());

    // A disabled endpoint is no longer a target.
    rig.complete(video).await;
    let completed = rig.event_ids(video, "VideoCompleted").await[0];
    wait_read(&rig, completed).await;
    assert_eq!(rig.delivery_state(endpoint).await.len(), 2);
}

#[tokio::test]
async fn an_endpoint_failing_longer_than_the_limit_is_disabled() {
    let rig = Rig::new().await;
    let (endpoint, _) = rig.endpoint("/down", None).await;
    rig.receiver.always("/down", Reply::Status(500));
    rig.start(WebhookConfig {
        disable_after: Duration::from_millis(600),
        ..config()
    });
    rig.request(None).await;
    let row = wait_disabled(&rig, endpoint).await;
    assert_eq!(row.disabled_reason.as_deref(), Some("failing"));
    assert!(rig.receiver.received("/down").len() >= 2);
    // The mail follows the event that disabled it.
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let mail: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM mail_outbox
              WHERE kind = 'webhook_disabled' AND payload->>'reason' = 'failing'",
        )
        .fetch_one(&rig.db.pool)
        .await
        .expect("mail");
        if mail == 1 {
            break;
        }
        assert!(
            mail == 0 && std::time::Instant::now() < deadline,
            "{mail} mails"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // Its owner fixes it and turns it back on: the next failure starts a new run of
    // failures instead of continuing the old one, so it is retried, not disabled again.
    rig.receiver.always("/down", Reply::Status(200));
    rig.receiver.script("/down", [Reply::Status(500)]);
    let enable = framegate_domain::WebhookCommand::Update {
        by: rig.owner,
        url: None,
        events: None,
        description: None,
        enabled: Some(true),
    };
    let meta = framegate_commands::CommandMetadata::new_request(framegate_commands::Actor::User(
        rig.owner,
    ));
    let id = framegate_domain::WebhookEndpointId::from_uuid(endpoint);
    endpoints::execute(&rig.store, id, enable, &meta)
        .await
        .expect("enabled");
    let received_before = rig.receiver.received("/down").len();
    rig.request(None).await;
    // The scripted 500 hits a delivery after the endpoint was enabled again, and the new
    // delivery arrives. The one pending from before is retried too if the sender had not
    // closed it while the endpoint was off (which one happens is a race with the test).
    let state = rig
        .wait_deliveries(endpoint, |state| {
            state.len() == 2 && state[1].1 == "delivered"
        })
        .await;
    let closed_while_off = state[0].1 == "failed"
        && state[0].4.as_deref() == Some("not sent: the endpoint is disabled (failing)");
    assert!(state[0].1 == "delivered" || closed_while_off, "{state:?}");
    assert!(rig.receiver.received("/down").len() >= received_before + 2);
    let row =
        framegate_projections::read_models::webhook_endpoints::get(&rig.db.pool, rig.owner, id)
            .await
            .expect("row")
            .expect("endpoint");
    assert!(row.is_enabled(), "{row:?}");
}

#[tokio::test]
async fn private_addresses_are_refused_unless_allowed() {
    let rig = Rig::new().await;
    let (literal, _) = rig.endpoint("/private", None).await;
    let by_name = format!("http://localhost:{}/private", rig.receiver.addr.port());
    let (named, _) = rig.endpoint_at(&by_name, None).await;
    rig.start(WebhookConfig {
        allow_private: false,
        ..config()
    });
    rig.request(None).await;
    for endpoint in [literal, named] {
        let state = rig
            .wait_deliveries(endpoint, |d| d.first().is_some_and(|r| r.2 >= 2))
            .await;
        let error = state[0].4.clone().unwrap_or_default();
        assert!(error.contains("is not a public address"), "{error}");
        assert_eq!(state[0].3, None);
    }
    assert!(rig.receiver.received("/private").is_empty());
}

#[tokio::test]
async fn redirects_are_not_followed() {
    let rig = Rig::new().await;
    let (endpoint, _) = rig.endpoint("/moved", None).await;
    rig.receiver
        .always("/moved", Reply::Redirect(rig.receiver.url("/elsewhere")));
    rig.start(config());
    rig.request(None).await;
    let state = rig
        .wait_deliveries(endpoint, |d| d.first().is_some_and(|r| r.2 >= 2))
        .await;
    assert_eq!(state[0].3, Some(302));
    assert!(state[0]
        .4
        .as_deref()
        .is_some_and(|e| e.contains("redirects are not followed")));
    assert!(rig.receiver.received("/elsewhere").is_empty());
}

#[tokio::test]
async fn a_hanging_endpoint_does_not_delay_another() {
    let rig = Rig::new().await;
    let (hanging, _) = rig.endpoint("/hang", None).await;
    rig.receiver.always("/hang", Reply::Hang);
    let (healthy, _) = rig.endpoint("/fine", None).await;
    rig.start(WebhookConfig {
        timeout: Duration::from_secs(8),
        ..config()
    });
    let started = std::time::Instant::now();
    let video = rig.request(None).await;
    rig.receiver.wait_for("/hang", 1, WAIT).await;
    rig.start_video(video).await;
    rig.complete(video).await;
    let fine = rig.receiver.wait_for("/fine", 3, WAIT).await;
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "the healthy endpoint waited {:?}",
        started.elapsed()
    );
    let types: Vec<String> = fine.iter().map(receiver::Received::event_type).collect();
    assert_eq!(types, ["video.queued", "video.started", "video.completed"]);
    // The hanging one holds its first delivery (an attempt is counted once its answer, or
    // its timeout, is recorded); the rest wait behind it, unsent.
    assert_eq!(rig.receiver.received("/hang").len(), 1);
    let state = rig.delivery_state(hanging).await;
    assert_eq!(state.iter().map(|r| r.2).collect::<Vec<_>>(), [0, 0, 0]);
    assert!(state.iter().all(|r| r.1 == "pending"), "{state:?}");
    let _ = healthy;
}

/// Runs the real handler, then fails: the subscription's transaction is rolled back as if the
/// process died before its checkpoint moved.
struct CrashAfterEnqueue(WebhookEnqueuer);

#[async_trait::async_trait]
impl EventHandler for CrashAfterEnqueue {
    async fn handle(
        &self,
        conn: &mut PgConnection,
        event: &StoredEvent,
    ) -> Result<(), framegate_projections::subscription::BoxError> {
        self.0.handle(conn, event).await?;
        Err("crashed before the checkpoint".into())
    }
}

#[tokio::test]
async fn a_crash_before_the_checkpoint_does_not_enqueue_twice() {
    let rig = Rig::new().await;
    let (endpoint, _) = rig.endpoint("/once", None).await;
    let video = rig.request(None).await;
    rig.start_video(video).await;
    let subscription = Subscription::new(SUBSCRIPTION, rig.db.pool.clone());
    let crashing = CrashAfterEnqueue(WebhookEnqueuer::new(Duration::from_secs(3600)));
    // The log shows events once every transaction older than theirs has ended, across the
    // whole server (other tests' too): a step that found nothing yet handled nothing.
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        match subscription.step(&crashing).await {
            Err(_) => break,
            Ok(handled) => {
                assert_eq!(handled, 0, "the handler fails on every event");
                assert!(
                    std::time::Instant::now() < deadline,
                    "the events never showed"
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
    assert!(rig.delivery_state(endpoint).await.is_empty(), "rolled back");

    let handler = WebhookEnqueuer::new(Duration::from_secs(3600));
    subscription.drain(&handler).await.expect("drain");
    subscription.drain(&handler).await.expect("drain again");
    let state = rig.delivery_state(endpoint).await;
    let types: Vec<&str> = state.iter().map(|r| r.0.as_str()).collect();
    assert_eq!(types, ["video.queued", "video.started"]);

    // The same event handled again (a checkpoint lost some other way) adds nothing either.
    let events: Vec<StoredEvent> = sqlx::query_as(
        "SELECT global_position, tx_id::text::bigint AS tx_id, event_id, recorded_at,
                aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata
           FROM events WHERE aggregate_id = $1 ORDER BY sequence",
    )
    .bind(video.to_string())
    .fetch_all(&rig.db.pool)
    .await
    .expect("events");
    let mut tx = rig.db.pool.begin().await.expect("tx");
    for event in &events {
        handler.handle(&mut tx, event).await.expect("handle");
    }
    tx.commit().await.expect("commit");
    assert_eq!(rig.delivery_state(endpoint).await.len(), 2);

    // A sender that dies holding a delivery: it is sent again once the lease lapses.
    let claimed = claim::claim(&rig.db.pool, 10, Duration::from_millis(300))
        .await
        .expect("claim");
    assert_eq!(claimed.len(), 1, "one run per queue");
    assert_eq!(claimed[0].rows.len(), 2, "the head and the row behind it");
    drop(claimed);
    rig.start_sender(config());
    let received = rig.receiver.wait_for("/once", 2, WAIT).await;
    let types: Vec<String> = received
        .iter()
        .map(receiver::Received::event_type)
        .collect();
    assert_eq!(types, ["video.queued", "video.started"]);
    let state = rig
        .wait_deliveries(endpoint, |d| d.iter().all(|r| r.1 == "delivered"))
        .await;
    assert!(
        state.iter().all(|row| row.2 == 1),
        "a claim that lapsed unrecorded counts no attempt: {state:?}"
    );
}

#[tokio::test]
async fn progress_is_opt_in_and_at_most_one_per_five_seconds() {
    let rig = Rig::new().await;
    let (endpoint, _) = rig.endpoint("/progress", Some(&["video.progress"])).await;
    let video = rig.request(None).await;
    rig.start_video(video).await;
    for percent in [10, 20, 30] {
        rig.video(video, VideoCommand::RecordProgress { percent })
            .await;
    }
    let subscription = Subscription::new(SUBSCRIPTION, rig.db.pool.clone());
    subscription
        .drain(&WebhookEnqueuer::new(Duration::from_secs(3600)))
        .await
        .expect("drain");
    let state = rig.delivery_state(endpoint).await;
    assert_eq!(state.len(), 1, "{state:?}");
    assert_eq!(state[0].0, "video.progress");
    let body: String =
        sqlx::query_scalar("SELECT body FROM webhook_deliveries WHERE endpoint_id = $1")
            .bind(endpoint)
            .fetch_one(&rig.db.pool)
            .await
            .expect("body");
    let body: serde_json::Value = serde_json::from_str(&body).expect("json");
    assert_eq!(body["data"]["progress"], 10);
    assert_eq!(body["data"]["status"], "running");
}

#[tokio::test]
async fn the_fold_matches_the_read_model_through_a_refused_attempt_and_a_cancellation() {
    let rig = Rig::new().await;
    let video = rig.request(None).await;
    let start = |attempt| VideoCommand::StartSubmission {
        attempt,
        provider: ProviderKind::Simulator,
        model: "simulator-v1".into(),
    };
    rig.video(video, start(1)).await;
    rig.video(
        video,
        VideoCommand::RecordSubmissionFailure {
            code: "rate_limited".into(),
            message: "slow down".into(),
            retry_at: chrono::Utc::now(),
        },
    )
    .await;
    rig.video(video, start(2)).await;
    rig.video(
        video,
        VideoCommand::MarkSubmitted {
            provider_job_id: "sim-2".into(),
        },
    )
    .await;
    rig.video(video, VideoCommand::RecordProgress { percent: 30 })
        .await;
    rig.video(
        video,
        VideoCommand::RequestCancel {
            reason: "changed my mind".into(),
        },
    )
    .await;
    rig.video(video, VideoCommand::Cancel { charged: true })
        .await;
    let mut conn = rig.db.pool.acquire().await.expect("conn");
    let (folded, spec) = videos::as_of::as_of(&mut conn, video, i64::MAX)
        .await
        .expect("fold")
        .expect("video");
    let row = videos::get(&rig.db.pool, video)
        .await
        .expect("row")
        .expect("video");
    assert_eq!(folded, row);
    assert_eq!(row.status, "cancelled");
    assert_eq!(spec.owner, rig.owner);
    // And right after the refused attempt, as a delivery read then would show it.
    let (early, _) = videos::as_of::as_of(&mut conn, video, 3)
        .await
        .expect("fold")
        .expect("video");
    assert_eq!(early.status, "queued");
    assert!(
        early.attempts.0[0].get("error").is_some(),
        "{:?}",
        early.attempts
    );
}
