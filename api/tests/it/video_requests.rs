//! A video request is one transaction: the reservation, the request, the inline read models
//! and the Idempotency-Key record commit together. So the answer and the next reads need no
//! projector, and a failure after the commit can never lead a retry to a second video,
//! reservation, grant or API key.

use crate::common;

use common::{assert_problem, TestApp};
use reqwest::StatusCode;
use serde_json::{json, Value};
use sqlx::PgPool;
use uuid::Uuid;

fn ten_second_video(external_id: &str) -> Value {
    json!({"prompt": "a lighthouse in a storm", "provider": "simulator", "duration_seconds": 10,
           "aspect_ratio": "16:9", "resolution": "720p", "external_id": external_id})
}

async fn count(pool: &PgPool, sql: &str, id: Uuid) -> i64 {
    sqlx::query_scalar(sql)
        .bind(id.to_string())
        .fetch_one(pool)
        .await
        .expect("count")
}

async fn reservations(pool: &PgPool, user: Uuid) -> i64 {
    count(
        pool,
        "SELECT count(*) FROM events WHERE aggregate_type = 'CreditAccount'
            AND aggregate_id = $1 AND event_type = 'CreditsReserved'",
        user,
    )
    .await
}

async fn json_of(response: reqwest::Response) -> Value {
    response.json().await.expect("json")
}

#[tokio::test]
async fn a_request_and_its_reservation_show_at_once_with_the_projectors_stopped() {
    let app = TestApp::spawn().await;
    let (user, token, _) = app.signed_in_user("inline@example.com").await;
    app.stop_projectors().await;

    let mut body = ten_second_video("inline-1");
    body["negative_prompt"] = json!("fog");
    body["seed"] = json!(42);
    let created = app.post("/v1/videos", Some(&token), body).await;
    assert_eq!(created.status(), StatusCode::CREATED);
    assert!(
        created.headers().get("framegate-consistency").is_none(),
        "answered from its own transaction, never stale"
    );
    let video = json_of(created).await;
    assert_eq!(video["status"], "queued");
    assert_eq!(video["external_id"], "inline-1");
    let id = video["id"].as_str().expect("id").to_owned();

    // The response is built from the events the request appended: it must be, field for
    // field, the row the inline projection wrote from them.
    let read = json_of(app.get(&format!("/v1/videos/{id}"), Some(&token)).await).await;
    assert_eq!(read, video, "the response shows the row GET shows");
    assert_eq!(video["negative_prompt"], "fog");
    assert_eq!(video["seed"], 42);
    let credits = json_of(app.get("/v1/credits", Some(&token)).await).await;
    assert_eq!(
        credits,
        json!({"balance": 100, "reserved": 10, "available": 90})
    );
    let ledger = json_of(app.get("/v1/credits/ledger", Some(&token)).await).await;
    assert!(
        ledger["items"]
            .as_array()
            .expect("items")
            .iter()
            .any(|e| e["kind"] == "reserved" && e["video_id"] == video["id"]),
        "{ledger}"
    );

    // Queued, so the cancellation completes in the same command, and shows at once.
    let cancelled = app
        .post(&format!("/v1/videos/{id}/cancel"), Some(&token), json!({}))
        .await;
    assert_eq!(cancelled.status(), StatusCode::OK);
    assert_eq!(json_of(cancelled).await["status"], "cancelled");

    // The projectors really were stopped: their checkpoint is behind these events.
    let behind = count(
        &app.db.pool,
        "SELECT count(*) FROM events e, subscription_checkpoints c
          WHERE c.name = 'read_model.videos' AND e.aggregate_id = $1
            AND (e.tx_id, e.global_position) > (c.last_tx_id, c.last_position)",
        id.parse().expect("uuid"),
    )
    .await;
    assert_eq!(
        behind, 3,
        "requested, cancel requested, cancelled: none projected"
    );
    assert_eq!(reservations(&app.db.pool, user).await, 1);
}

#[tokio::test]
async fn a_failure_after_the_commit_replays_the_one_video_created() {
    let app = TestApp::spawn().await;
    let (user, token, _) = app.signed_in_user("after-commit@example.com").await;
    let send = || {
        app.client
            .post(app.url("/v1/videos"))
            .bearer_auth(&token)
            .header("Idempotency-Key", "after-commit-video")
            .json(&ten_second_video("after-commit"))
            .send()
    };
    framegate_commands::testing::fail_after_commit("after-commit-video");
    let failed = send().await.expect("send");
    assert_problem(
        failed,
        StatusCode::SERVICE_UNAVAILABLE,
        "dependency_unavailable",
    )
    .await;

    let retried = send().await.expect("send");
    assert_eq!(retried.status(), StatusCode::CREATED);
    assert_eq!(
        retried
            .headers()
            .get("idempotency-replayed")
            .and_then(|v| v.to_str().ok()),
        Some("true"),
        "the response stored with the commit"
    );
    let video = json_of(retried).await;
    let again = json_of(send().await.expect("send")).await;
    assert_eq!(again["id"], video["id"]);

    let listed = json_of(app.get("/v1/videos", Some(&token)).await).await;
    let items = listed["items"].as_array().expect("items");
    assert_eq!(items.len(), 1, "one video: {listed}");
    assert_eq!(items[0]["id"], video["id"]);
    assert_eq!(reservations(&app.db.pool, user).await, 1);
    assert_eq!(
        json_of(app.get("/v1/credits", Some(&token)).await).await["reserved"],
        10
    );
}

#[tokio::test]
async fn a_failure_after_the_commit_never_issues_a_second_api_key() {
    let app = TestApp::spawn().await;
    let (user, token, _) = app.signed_in_user("key-after-commit@example.com").await;
    let send = || {
        app.client
            .post(app.url("/v1/api-keys"))
            .bearer_auth(&token)
            .header("Idempotency-Key", "after-commit-key")
            .json(&json!({"name": "ci"}))
            .send()
    };
    framegate_commands::testing::fail_after_commit("after-commit-key");
    let failed = send().await.expect("send");
    assert_problem(
        failed,
        StatusCode::SERVICE_UNAVAILABLE,
        "dependency_unavailable",
    )
    .await;
    // The key took effect; its secret was shown to nobody and cannot be shown again, so the
    // retry is told so instead of minting another key.
    let retried = send().await.expect("send");
    assert_problem(
        retried,
        StatusCode::CONFLICT,
        "idempotency_response_unavailable",
    )
    .await;
    let issued = count(
        &app.db.pool,
        "SELECT count(*) FROM events WHERE aggregate_type = 'User' AND aggregate_id = $1
            AND event_type = 'ApiKeyIssued'",
        user,
    )
    .await;
    assert_eq!(issued, 1);
}

#[tokio::test]
async fn a_failure_after_the_commit_never_grants_twice() {
    let app = TestApp::spawn().await;
    let (_, admin) = app.admin("admin-after-commit@example.com").await;
    let (user, _, _) = app.signed_in_user("granted@example.com").await;
    let send = || {
        app.client
            .post(app.url(&format!("/v1/admin/users/{user}/credits")))
            .bearer_auth(&admin)
            .header("Idempotency-Key", "after-commit-grant")
            .json(&json!({"amount": 50, "reason": "goodwill"}))
            .send()
    };
    framegate_commands::testing::fail_after_commit("after-commit-grant");
    assert_eq!(
        send().await.expect("send").status(),
        StatusCode::SERVICE_UNAVAILABLE
    );
    assert_problem(
        send().await.expect("send"),
        StatusCode::CONFLICT,
        "idempotency_response_unavailable",
    )
    .await;
    let grants = count(
        &app.db.pool,
        "SELECT count(*) FROM events WHERE aggregate_type = 'CreditAccount'
            AND aggregate_id = $1 AND event_type = 'CreditsGranted'",
        user,
    )
    .await;
    assert_eq!(grants, 2, "the sign-up grant and this one, once");
}

#[tokio::test]
async fn a_request_whose_key_was_taken_over_commits_nothing() {
    let app =
        TestApp::with_config(|c| c.idempotency_lease = std::time::Duration::from_secs(1)).await;
    let (user, token, _) = app.signed_in_user("taken-over@example.com").await;
    // A request that holds the key but lost it (as a frozen process would, its lease run out
    // and a retry taking over) is refused when it commits, and writes nothing.
    sqlx::query(
        "INSERT INTO idempotency_keys (scope, key, request_hash, owner, lease_until)
         VALUES ($1, 'held', 'x', gen_random_uuid(), now() + interval '1 hour')",
    )
    .bind(format!("user:{user}"))
    .execute(&app.db.pool)
    .await
    .expect("insert");
    let claim = framegate_commands::idempotency::Claim {
        scope: format!("user:{user}"),
        key: "held".to_owned(),
        owner: Uuid::new_v4(),
    };
    let spec = framegate_domain::VideoSpec {
        owner: framegate_domain::UserId::from_uuid(user),
        prompt: "lost".into(),
        negative_prompt: None,
        provider: framegate_domain::ProviderPreference::Simulator,
        model: Some("simulator-v1".into()),
        duration_seconds: 4,
        aspect_ratio: "16:9".into(),
        resolution: "480p".into(),
        image_id: None,
        seed: None,
        estimated_cost: framegate_domain::Credits::new(4),
        generate_audio: false,
        external_id: None,
        webhook: None,
    };
    let meta = framegate_commands::CommandMetadata::new_request(framegate_commands::Actor::User(
        framegate_domain::UserId::from_uuid(user),
    ));
    let refused = framegate_commands::idempotency::CLAIM
        .scope(
            claim,
            framegate_commands::videos::request_video(
                &app.state.store,
                framegate_domain::VideoId::from_uuid(Uuid::now_v7()),
                spec,
                &meta,
                None,
            ),
        )
        .await;
    assert!(matches!(
        refused,
        Err(framegate_commands::videos::RequestError::Video(
            framegate_commands::CommandError::Conflict
        ))
    ));
    assert_eq!(reservations(&app.db.pool, user).await, 0);
    assert_eq!(
        json_of(app.get("/v1/credits", Some(&token)).await).await["reserved"],
        0
    );
}
