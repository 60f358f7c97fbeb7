//! The delivery side of webhooks through the real router: a request's own `webhook_url`
//! (validated, recorded, delivered), the delivery log with cursor pagination, a manual retry,
//! `POST /v1/webhooks/{id}/test` received by a real HTTP receiver with a valid signature, and
//! the mail the worker asks for when it disables an endpoint.

use crate::common;

#[path = "../../../workers/tests/it/webhooks/receiver.rs"]
mod receiver;

use std::time::Duration;

use common::{assert_problem, TestApp};
use framegate_commands::webhook_signature::{verify, WebhookSecret};
use framegate_projections::notify::Notifications;
use framegate_workers::webhooks::{Sender, WebhookConfig, WebhookEnqueuer, SUBSCRIPTION};
use receiver::Receiver;
use reqwest::StatusCode;
use serde_json::{json, Value};
use tokio::sync::watch;
use uuid::Uuid;

const WAIT: Duration = Duration::from_secs(15);

fn video(extra: Value) -> Value {
    let mut body = json!({"prompt": "a lighthouse in a storm", "provider": "simulator",
        "duration_seconds": 4, "aspect_ratio": "16:9", "resolution": "720p"});
    if let (Some(body), Some(extra)) = (body.as_object_mut(), extra.as_object()) {
        body.extend(extra.clone());
    }
    body
}

/// Runs the delivery subscription and a sender next to the app until the guard drops.
fn deliver(app: &TestApp) -> watch::Sender<bool> {
    let (stop, stopped) = watch::channel(false);
    let (notifications, _listening) = Notifications::spawn(app.db.pool.clone(), stopped.clone());
    let sender = Sender::new(
        app.db.pool.clone(),
        framegate_projections::inline::event_store(app.db.pool.clone()),
        WebhookConfig {
            allow_private: true,
            retry_schedule: vec![Duration::from_millis(100)],
            ..WebhookConfig::default()
        },
        Some(app.state.blobs.clone()),
    )
    .expect("client");
    tokio::spawn(sender.run(Some(notifications), stopped.clone()));
    let subscription = framegate_projections::Subscription::new(SUBSCRIPTION, app.db.pool.clone())
        .with_poll_interval(Duration::from_millis(20));
    let mut shutdown = stopped;
    tokio::spawn(async move {
        let handler = WebhookEnqueuer::new(Duration::from_secs(3600));
        let _ = subscription
            .run(&handler, async move {
                let _ = shutdown.wait_for(|s| *s).await;
            })
            .await;
    });
    stop
}

#[tokio::test]
async fn a_requests_webhook_url_is_checked_like_an_endpoints() {
    let app = TestApp::spawn().await;
    let (_, token, _) = app.signed_in_user("hooks@example.com").await;
    for (extra, field, code) in [
        (
            json!({"webhook_url": "ftp://example.com/in"}),
            "webhook_url",
            "invalid_url",
        ),
        (
            json!({"webhook_url": "https://user:pw@example.com/in"}),
            "webhook_url",
            "invalid_url",
        ),
        (
            json!({"webhook_url": "https://example.com/in#x"}),
            "webhook_url",
            "invalid_url",
        ),
        (
            json!({"webhook_url": "https://example.com/in", "webhook_events_filter": ["video.done"]}),
            "webhook_events_filter",
            "unknown_event_type",
        ),
        (
            json!({"webhook_url": "https://example.com/in", "webhook_events_filter": ["credits.purchased"]}),
            "webhook_events_filter",
            "unknown_event_type",
        ),
        (
            json!({"webhook_url": "https://example.com/in", "webhook_events_filter": []}),
            "webhook_events_filter",
            "no_event_types",
        ),
        (
            json!({"webhook_events_filter": ["video.completed"]}),
            "webhook_events_filter",
            "requires_webhook_url",
        ),
    ] {
        for path in ["/v1/videos", "/v1/videos/estimate"] {
            let response = app.post(path, Some(&token), video(extra.clone())).await;
            let problem = assert_problem(
                response,
                StatusCode::UNPROCESSABLE_ENTITY,
                "validation_failed",
            )
            .await;
            let errors = problem["errors"].as_array().cloned().unwrap_or_default();
            assert!(
                errors
                    .iter()
                    .any(|e| e["field"] == field && e["code"] == code),
                "{path} {extra}: {problem}"
            );
        }
    }
    let created = app
        .post(
            "/v1/videos",
            Some(&token),
            video(json!({"webhook_url": " https://example.com/in?t=1 ",
                         "webhook_events_filter": ["video.completed", "video.queued"]})),
        )
        .await;
    assert_eq!(created.status(), StatusCode::CREATED);
    let id = created.json::<Value>().await.expect("json")["id"]
        .as_str()
        .expect("id")
        .to_owned();
    let payload: Value = sqlx::query_scalar(
        "SELECT payload FROM events WHERE aggregate_id = $1 AND event_type = 'VideoRequested'",
    )
    .bind(&id)
    .fetch_one(&app.db.pool)
    .await
    .expect("event");
    assert_eq!(
        payload["VideoRequested"]["spec"]["webhook"],
        json!({"url": "https://example.com/in?t=1", "events": ["video.queued", "video.completed"]})
    );
}

#[tokio::test]
async fn a_requests_webhook_url_receives_its_events_signed_with_the_default_secret() {
    let app = TestApp::spawn().await;
    let receiver = Receiver::start().await;
    let _delivering = deliver(&app);
    let (_, token, _) = app.signed_in_user("own-url@example.com").await;
    let created = app
        .post(
            "/v1/videos",
            Some(&token),
            video(json!({"webhook_url": receiver.url("/mine")})),
        )
        .await;
    assert_eq!(created.status(), StatusCode::CREATED);
    let received = receiver.wait_for("/mine", 1, WAIT).await;
    assert_eq!(received[0].event_type(), "video.queued");
    let secret: Value = app
        .get("/v1/webhooks/default/secret", Some(&token))
        .await
        .json()
        .await
        .expect("json");
    let secret = WebhookSecret::parse(secret["secret"].as_str().expect("secret")).expect("whsec");
    assert_valid(&received[0], &secret);
}

fn assert_valid(received: &receiver::Received, secret: &WebhookSecret) {
    let timestamp: i64 = received
        .header("webhook-timestamp")
        .parse()
        .expect("timestamp");
    assert_eq!(
        verify(
            secret,
            received.header("webhook-id"),
            timestamp,
            received.body.as_bytes(),
            received.header("webhook-signature"),
            chrono::Utc::now().timestamp()
        ),
        Ok(())
    );
}

async fn endpoint(app: &TestApp, token: &str, url: &str) -> (String, WebhookSecret) {
    let response = app
        .post("/v1/webhooks", Some(token), json!({"url": url}))
        .await;
    assert_eq!(response.status(), StatusCode::CREATED);
    let created: Value = response.json().await.expect("json");
    let secret = WebhookSecret::parse(created["secret"].as_str().expect("secret")).expect("whsec");
    (created["id"].as_str().expect("id").to_owned(), secret)
}

async fn deliveries(app: &TestApp, token: &str, path: &str) -> Value {
    let response = app.get(path, Some(token)).await;
    assert_eq!(response.status(), StatusCode::OK, "{path}");
    response.json().await.expect("json")
}

#[tokio::test]
async fn test_deliveries_arrive_are_logged_paged_and_retried() {
    let app = TestApp::spawn().await;
    let receiver = Receiver::start().await;
    let _delivering = deliver(&app);
    let (_, token, _) = app.signed_in_user("log@example.com").await;
    let (id, secret) = endpoint(&app, &token, &receiver.url("/in")).await;

    let queued = app
        .post(&format!("/v1/webhooks/{id}/test"), Some(&token), json!({}))
        .await;
    assert_eq!(queued.status(), StatusCode::ACCEPTED);
    let queued: Value = queued.json().await.expect("json");
    assert_eq!(queued["event_type"], "webhook.test");
    assert_eq!(queued["status"], "pending");
    let received = receiver.wait_for("/in", 1, WAIT).await;
    assert_valid(&received[0], &secret);
    assert_eq!(
        received[0].header("webhook-id"),
        queued["message_id"].as_str().expect("id")
    );
    assert_eq!(received[0].json()["data"]["endpoint_id"], id.as_str());

    for _ in 0..2 {
        let response = app
            .post(&format!("/v1/webhooks/{id}/test"), Some(&token), json!({}))
            .await;
        assert_eq!(response.status(), StatusCode::ACCEPTED);
    }
    receiver.wait_for("/in", 3, WAIT).await;
    let path = format!("/v1/webhooks/{id}/deliveries?limit=2");
    let first = wait_all_delivered(&app, &token, &path).await;
    let items = first["items"].as_array().expect("items");
    assert_eq!(items.len(), 2);
    assert_eq!(items[0]["status"], "delivered");
    assert_eq!(items[0]["attempts"], 1);
    assert_eq!(items[0]["response_status"], 200);
    assert!(items[0]["latency_ms"].as_i64().is_some());
    let cursor = first["next_cursor"].as_str().expect("a next page");
    let second = deliveries(&app, &token, &format!("{path}&cursor={cursor}")).await;
    let rest = second["items"].as_array().expect("items");
    assert_eq!(rest.len(), 1);
    assert_eq!(
        rest[0]["id"], queued["id"],
        "newest first: the first test is last"
    );
    assert!(second["next_cursor"].is_null());

    // A retry sends the same message again.
    let retried = app
        .post(
            &format!(
                "/v1/webhooks/{id}/deliveries/{}/retry",
                queued["id"].as_str().expect("id")
            ),
            Some(&token),
            json!({}),
        )
        .await;
    assert_eq!(retried.status(), StatusCode::ACCEPTED);
    assert_eq!(
        retried.json::<Value>().await.expect("json")["status"],
        "pending"
    );
    let received = receiver.wait_for("/in", 4, WAIT).await;
    assert_eq!(
        received[3].header("webhook-id"),
        received[0].header("webhook-id")
    );
    let attempts = deliveries(
        &app,
        &token,
        &format!(
            "/v1/webhooks/{id}/deliveries/{}/attempts",
            queued["id"].as_str().expect("id")
        ),
    )
    .await;
    let deadline = std::time::Instant::now() + WAIT;
    let mut attempts = attempts;
    while attempts.as_array().map_or(0, Vec::len) < 2 && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
        attempts = deliveries(
            &app,
            &token,
            &format!(
                "/v1/webhooks/{id}/deliveries/{}/attempts",
                queued["id"].as_str().expect("id")
            ),
        )
        .await;
    }
    assert_eq!(attempts[1]["attempt"], 2);
    assert_eq!(attempts[1]["response_status"], 200);

    // Someone else's endpoint and unknown deliveries do not exist.
    let (_, stranger, _) = app.signed_in_user("stranger@example.com").await;
    let response = app
        .get(&format!("/v1/webhooks/{id}/deliveries"), Some(&stranger))
        .await;
    assert_problem(response, StatusCode::NOT_FOUND, "not_found").await;
    let response = app
        .post(
            &format!("/v1/webhooks/{id}/test"),
            Some(&stranger),
            json!({}),
        )
        .await;
    assert_problem(response, StatusCode::NOT_FOUND, "not_found").await;
    let response = app
        .post(
            &format!("/v1/webhooks/{id}/deliveries/{}/retry", Uuid::now_v7()),
            Some(&token),
            json!({}),
        )
        .await;
    assert_problem(response, StatusCode::NOT_FOUND, "not_found").await;
    let response = app
        .get(
            &format!("/v1/webhooks/{id}/deliveries?cursor=abc"),
            Some(&token),
        )
        .await;
    assert_problem(
        response,
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation_failed",
    )
    .await;

    // A disabled endpoint takes no test.
    let disabled = app
        .request(
            reqwest::Method::PATCH,
            &format!("/v1/webhooks/{id}"),
            Some(&token),
            Some(json!({"enabled": false})),
        )
        .await;
    assert_eq!(disabled.status(), StatusCode::OK);
    let response = app
        .post(&format!("/v1/webhooks/{id}/test"), Some(&token), json!({}))
        .await;
    assert_problem(response, StatusCode::CONFLICT, "endpoint_disabled").await;
}

async fn wait_all_delivered(app: &TestApp, token: &str, path: &str) -> Value {
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let page = deliveries(app, token, path).await;
        let done = page["items"]
            .as_array()
            .is_some_and(|items| items.iter().all(|i| i["status"] == "delivered"));
        if done || std::time::Instant::now() > deadline {
            return page;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn the_worker_s_disabled_endpoint_notice_is_mailed_to_the_owner() {
    let app = TestApp::spawn().await;
    let (user_id, _, _) = app.signed_in_user("owner@example.com").await;
    let endpoint = Uuid::now_v7();
    // What `framegate_workers::webhooks::outcome::disable` writes.
    sqlx::query(
        "WITH queued AS (INSERT INTO mail_outbox (kind, payload) VALUES ($1, $2))
         SELECT pg_notify('framegate_mail', '')",
    )
    .bind(framegate_workers::webhooks::outcome::MAIL_KIND)
    .bind(
        json!({"kind": "webhook_disabled", "user_id": user_id, "endpoint_id": endpoint,
                 "url": "https://hooks.example.com/in", "reason": "failing",
                 "detail": "every delivery failed for 120 hours (last: answered 500)"}),
    )
    .execute(&app.db.pool)
    .await
    .expect("enqueue");
    let mail = app
        .mail_to("owner@example.com", "A webhook endpoint was disabled")
        .await;
    assert!(
        mail.body.contains("https://hooks.example.com/in"),
        "{}",
        mail.body
    );
    assert!(mail.body.contains(&endpoint.to_string()));
    assert!(mail.body.contains("answered 500"));
}
