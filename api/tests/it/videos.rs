//! Video requests through the real router: validation, credit reservation under concurrency,
//! cancellation with settlement, ownership, idempotency.

use crate::common;

use common::{assert_problem, TestApp};
use framegate_projections::Subscription;
use framegate_workers::settlement::{Settlement, SUBSCRIPTION};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

fn ten_second_simulator_video() -> Value {
    json!({"prompt": "a lighthouse in a storm", "provider": "simulator", "duration_seconds": 10,
           "aspect_ratio": "16:9", "resolution": "720p"})
}

async fn credits(app: &TestApp, token: &str) -> Value {
    app.get("/v1/credits", Some(token))
        .await
        .json()
        .await
        .expect("json")
}

#[tokio::test]
async fn fifty_concurrent_requests_with_credits_for_ten_accept_exactly_ten() {
    let app = TestApp::spawn().await;
    let (_, token, _) = app.signed_in_user("busy@example.com").await;
    // 100 sign-up credits; a 10 s simulator video costs 10.
    let estimate: Value = app
        .post(
            "/v1/videos/estimate",
            Some(&token),
            ten_second_simulator_video(),
        )
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(estimate["cost"], 10);
    assert_eq!(estimate["available"], 100);

    let requests =
        (0..50).map(|_| app.post("/v1/videos", Some(&token), ten_second_simulator_video()));
    let responses = futures::future::join_all(requests).await;
    let mut accepted = 0;
    let mut refused = 0;
    for response in responses {
        match response.status() {
            StatusCode::CREATED => accepted += 1,
            StatusCode::PAYMENT_REQUIRED => {
                let problem = assert_problem(
                    response,
                    StatusCode::PAYMENT_REQUIRED,
                    "insufficient_credits",
                )
                .await;
                assert!(problem["detail"]
                    .as_str()
                    .is_some_and(|d| d.contains("10 requested")));
                refused += 1;
            }
            other => panic!(
                "unexpected status {other}: {}",
                response.text().await.unwrap_or_default()
            ),
        }
    }
    assert_eq!((accepted, refused), (10, 40));
    assert_eq!(
        credits(&app, &token).await,
        json!({"balance": 100, "reserved": 100, "available": 0})
    );
    let ledger: Value = app
        .get("/v1/credits/ledger?limit=100", Some(&token))
        .await
        .json()
        .await
        .expect("json");
    let reserved = ledger["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter(|e| e["kind"] == "reserved")
        .count();
    assert_eq!(reserved, 10, "the ledger agrees with the balance");
    let listed: Value = app
        .get("/v1/videos?limit=100", Some(&token))
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(listed["items"].as_array().map(Vec::len), Some(10));
    assert!(listed["items"]
        .as_array()
        .expect("items")
        .iter()
        .all(|v| v["status"] == "queued" && v["estimated_cost"] == 10));
}

#[tokio::test]
async fn requests_are_checked_against_the_providers_capabilities() {
    let app = TestApp::spawn().await;
    let (_, token, _) = app.signed_in_user("picky@example.com").await;
    let with = |patch: Value| {
        let mut body = ten_second_simulator_video();
        for (k, v) in patch.as_object().expect("object") {
            body[k] = v.clone();
        }
        body
    };
    let cases = [
        (
            json!({"provider": "runway"}),
            "provider",
            "unknown_provider",
        ),
        (
            json!({"provider": "veo"}),
            "provider",
            "provider_not_configured",
        ),
        (
            json!({"duration_seconds": 30}),
            "duration_seconds",
            "unsupported_duration",
        ),
        (
            json!({"aspect_ratio": "4:3"}),
            "aspect_ratio",
            "unsupported_aspect_ratio",
        ),
        (
            json!({"resolution": "8k"}),
            "resolution",
            "unsupported_resolution",
        ),
        (
            json!({"model": "simulator-v9"}),
            "model",
            "unsupported_model",
        ),
        // `auto` with a model no provider has was priced with the simulator's default.
        (
            json!({"provider": "auto", "model": "no-such-model"}),
            "model",
            "unsupported_model",
        ),
        // 2^64 − 1 was stored through `as i64` and read back as −1.
        (json!({"seed": u64::MAX}), "seed", "out_of_range"),
        (json!({"prompt": "x".repeat(4001)}), "prompt", "too_long"),
        (json!({"prompt": "   "}), "prompt", "required"),
    ];
    // A price estimate refuses what a request refuses.
    for path in ["/v1/videos", "/v1/videos/estimate"] {
        for (patch, field, code) in &cases {
            let response = app.post(path, Some(&token), with(patch.clone())).await;
            let problem = assert_problem(
                response,
                StatusCode::UNPROCESSABLE_ENTITY,
                "validation_failed",
            )
            .await;
            assert_eq!(problem["errors"][0]["field"], *field, "{path} {patch}");
            assert_eq!(problem["errors"][0]["code"], *code, "{path} {patch}");
        }
    }
    let duration = app
        .post(
            "/v1/videos",
            Some(&token),
            with(json!({"duration_seconds": 30})),
        )
        .await;
    let problem: Value = duration.json().await.expect("json");
    assert!(
        problem["detail"]
            .as_str()
            .expect("detail")
            .contains("1, 2, 3"),
        "names the allowed values"
    );
    // A 4000-character prompt is fine; nothing was created or reserved by the refusals.
    let ok = app
        .post(
            "/v1/videos",
            Some(&token),
            with(json!({"prompt": "é".repeat(4000)})),
        )
        .await;
    assert_eq!(ok.status(), StatusCode::CREATED);
    assert_eq!(credits(&app, &token).await["reserved"], 10);
}

#[tokio::test]
async fn cancelling_a_queued_video_releases_its_credits_exactly_once() {
    let app = TestApp::spawn().await;
    let (_, token, _) = app.signed_in_user("cancel@example.com").await;
    let video: Value = app
        .post("/v1/videos", Some(&token), ten_second_simulator_video())
        .await
        .json()
        .await
        .expect("json");
    let id = video["id"].as_str().expect("id");
    assert_eq!(credits(&app, &token).await["available"], 90);

    let cancelled: Value = app
        .post(
            &format!("/v1/videos/{id}/cancel"),
            Some(&token),
            json!({"reason": "changed my mind"}),
        )
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(cancelled["status"], "cancelled");
    assert_eq!(
        cancelled["cancellation"],
        json!({"charged": false}),
        "no provider had it: free"
    );
    let again = app
        .request(
            Method::POST,
            &format!("/v1/videos/{id}/cancel"),
            Some(&token),
            None,
        )
        .await;
    assert_problem(again, StatusCode::CONFLICT, "video_finished").await;

    // The settlement process manager releases the reservation; running it twice changes nothing.
    let settlement = Settlement::new(app.state.store.clone());
    let subscription = Subscription::new(SUBSCRIPTION, app.db.pool.clone());
    subscription.drain(&settlement).await.expect("settle");
    sqlx::query(
        "UPDATE subscription_checkpoints SET last_tx_id = '0', last_position = 0 WHERE name = $1",
    )
    .bind(SUBSCRIPTION)
    .execute(&app.db.pool)
    .await
    .expect("rewind");
    subscription.drain(&settlement).await.expect("settle again");
    framegate_projections::read_models::catch_up_all(&app.db.pool)
        .await
        .expect("project");
    assert_eq!(
        credits(&app, &token).await,
        json!({"balance": 100, "reserved": 0, "available": 100})
    );
    let ledger: Value = app
        .get("/v1/credits/ledger", Some(&token))
        .await
        .json()
        .await
        .expect("json");
    let released = ledger["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter(|e| e["kind"] == "released")
        .count();
    assert_eq!(released, 1);
}

#[tokio::test]
async fn videos_are_private_to_their_owner() {
    let app = TestApp::spawn().await;
    let (_, alice, _) = app.signed_in_user("alice.v@example.com").await;
    let (_, bob, _) = app.signed_in_user("bob.v@example.com").await;
    let video: Value = app
        .post("/v1/videos", Some(&alice), ten_second_simulator_video())
        .await
        .json()
        .await
        .expect("json");
    let id = video["id"].as_str().expect("id");
    assert_eq!(
        app.get(&format!("/v1/videos/{id}"), Some(&alice))
            .await
            .status(),
        StatusCode::OK
    );
    assert_problem(
        app.get(&format!("/v1/videos/{id}"), Some(&bob)).await,
        StatusCode::NOT_FOUND,
        "not_found",
    )
    .await;
    let cancel = app
        .request(
            Method::POST,
            &format!("/v1/videos/{id}/cancel"),
            Some(&bob),
            None,
        )
        .await;
    assert_problem(cancel, StatusCode::NOT_FOUND, "not_found").await;
    let bobs: Value = app
        .get("/v1/videos", Some(&bob))
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(bobs["items"], json!([]));
    let still: Value = app
        .get(&format!("/v1/videos/{id}"), Some(&alice))
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(still["status"], "queued");
}

#[tokio::test]
async fn an_idempotent_video_request_reserves_once() {
    let app = TestApp::spawn().await;
    let (_, token, _) = app.signed_in_user("once@example.com").await;
    let send = || {
        app.client
            .post(app.url("/v1/videos"))
            .bearer_auth(&token)
            .header("Idempotency-Key", "video-1")
            .json(&ten_second_simulator_video())
            .send()
    };
    let first: Value = send().await.expect("send").json().await.expect("json");
    let second: Value = send().await.expect("send").json().await.expect("json");
    assert!(first["id"].is_string(), "{first}");
    assert_eq!(first["id"], second["id"]);
    assert_eq!(credits(&app, &token).await["reserved"], 10);
}

#[tokio::test]
async fn the_provider_list_shows_models_prices_and_status() {
    let app = TestApp::spawn().await;
    let providers: Value = app
        .get("/v1/providers", None)
        .await
        .json()
        .await
        .expect("json");
    let names: Vec<&str> = providers
        .as_array()
        .expect("list")
        .iter()
        .filter_map(|p| p["provider"].as_str())
        .collect();
    assert_eq!(names, ["veo", "sora", "kling", "simulator"]);
    let sora = &providers[1];
    assert_eq!(sora["enabled"], false);
    assert!(sora["upstream_status"]
        .as_str()
        .expect("status")
        .contains("2026-09-24"));
    assert_eq!(sora["models"][0]["credits_per_second"], 10);
    let simulator = &providers[3];
    assert_eq!(
        (simulator["enabled"].clone(), simulator["health"].clone()),
        (json!(true), json!("healthy"))
    );
}

#[tokio::test]
async fn content_and_events_of_an_unfinished_or_foreign_video() {
    let app = TestApp::spawn().await;
    let (_, alice, _) = app.signed_in_user("alice.c@example.com").await;
    let (_, bob, _) = app.signed_in_user("bob.c@example.com").await;
    let video: Value = app
        .post("/v1/videos", Some(&alice), ten_second_simulator_video())
        .await
        .json()
        .await
        .expect("json");
    let id = video["id"].as_str().expect("id");
    assert!(video["content"].is_null(), "no link before completion");

    let early = app
        .get(&format!("/v1/videos/{id}/content"), Some(&alice))
        .await;
    assert_problem(early, StatusCode::CONFLICT, "video_not_ready").await;
    for path in [
        format!("/v1/videos/{id}/content"),
        format!("/v1/videos/{id}/events"),
    ] {
        let foreign = app.get(&path, Some(&bob)).await;
        assert_problem(foreign, StatusCode::NOT_FOUND, "not_found").await;
    }

    // A cancelled video's stream sends its final state once and ends.
    let cancelled = app
        .request(
            Method::POST,
            &format!("/v1/videos/{id}/cancel"),
            Some(&alice),
            None,
        )
        .await;
    assert_eq!(cancelled.status(), StatusCode::OK);
    let events = tokio::time::timeout(
        std::time::Duration::from_secs(10),
        app.get(&format!("/v1/videos/{id}/events"), Some(&alice)),
    )
    .await
    .expect("answered");
    assert_eq!(
        events.headers()["content-type"].to_str().expect("type"),
        "text/event-stream"
    );
    let body = tokio::time::timeout(std::time::Duration::from_secs(10), events.text())
        .await
        .expect("the stream ends at the terminal state")
        .expect("body");
    let data: Vec<Value> = body
        .lines()
        .filter_map(|line| line.strip_prefix("data:"))
        .map(|data| serde_json::from_str(data.trim()).expect("json"))
        .collect();
    assert_eq!(data.len(), 1, "{body}");
    assert_eq!(data[0]["status"], "cancelled");
    assert!(body.contains("event: video"), "{body}");
}

#[tokio::test]
async fn an_image_id_must_name_an_available_image_of_the_caller() {
    let app = TestApp::spawn().await;
    let (_, token, _) = app.signed_in_user("img.v@example.com").await;
    let mut body = ten_second_simulator_video();
    body["image_id"] = json!(uuid::Uuid::now_v7());
    // The estimate answered 200 for a missing (or someone else's) image.
    for path in ["/v1/videos", "/v1/videos/estimate"] {
        let response = app.post(path, Some(&token), body.clone()).await;
        let problem = assert_problem(
            response,
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
        )
        .await;
        assert_eq!(
            problem["errors"][0]["field"], "image_id",
            "{path} {problem}"
        );
        assert_eq!(
            problem["errors"][0]["code"], "image_not_found",
            "{path} {problem}"
        );
    }
    assert_eq!(
        credits(&app, &token).await["reserved"],
        0,
        "nothing reserved"
    );
}

#[tokio::test]
async fn a_reason_is_bounded_wherever_it_reaches_an_event() {
    let app = TestApp::spawn().await;
    let (user, token, _) = app.signed_in_user("wordy@example.com").await;
    let (_, admin) = app.admin("boss@example.com").await;
    let video: Value = app
        .post("/v1/videos", Some(&token), ten_second_simulator_video())
        .await
        .json()
        .await
        .expect("json");
    let id = video["id"].as_str().expect("id");
    let long = "x".repeat(501);
    let attempts = [
        (
            format!("/v1/videos/{id}/cancel"),
            token.clone(),
            json!({ "reason": long }),
        ),
        (
            format!("/v1/admin/users/{user}/credits"),
            admin.clone(),
            json!({ "amount": 5, "reason": long }),
        ),
        (
            format!("/v1/admin/users/{user}/disable"),
            admin.clone(),
            json!({ "reason": long }),
        ),
    ];
    for (path, bearer, body) in attempts {
        let response = app.post(&path, Some(&bearer), body).await;
        let problem = assert_problem(
            response,
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
        )
        .await;
        assert_eq!(problem["errors"][0]["field"], "reason", "{path}");
        assert_eq!(problem["errors"][0]["code"], "too_long", "{path}");
    }
    // Nothing happened, and 500 characters are fine.
    assert_eq!(credits(&app, &token).await["balance"], 100);
    let cancelled = app
        .post(
            &format!("/v1/videos/{id}/cancel"),
            Some(&token),
            json!({ "reason": "y".repeat(500) }),
        )
        .await;
    assert_eq!(cancelled.status(), StatusCode::OK);
}

#[tokio::test]
async fn users_see_our_message_for_a_failure_never_the_providers_text() {
    use framegate_commands::{Actor, CommandMetadata};
    use framegate_domain::{ProviderKind, VideoCommand};

    let app = TestApp::spawn().await;
    let (_, token, _) = app.signed_in_user("failed@example.com").await;
    let (_, admin) = app.admin("ops@example.com").await;
    let video: Value = app
        .post("/v1/videos", Some(&token), ten_second_simulator_video())
        .await
        .json()
        .await
        .expect("json");
    let id = video["id"].as_str().expect("id").to_owned();
    // What a worker records when a provider answers with its own error page.
    let upstream = "upstream 502 from gw-internal-7.corp.example: trace=9f2c token=sk-live-abc";
    let meta = CommandMetadata::new_request(Actor::System);
    let videos = app.state.store.videos();
    for command in [
        VideoCommand::StartSubmission {
            attempt: 1,
            provider: ProviderKind::Simulator,
            model: "simulator-v1".into(),
        },
        VideoCommand::RecordSubmissionFailure {
            code: "upstream_unavailable".into(),
            message: upstream.into(),
            retry_at: chrono::Utc::now(),
        },
        VideoCommand::Fail {
            code: "generation_failed".into(),
            message: upstream.into(),
            retryable: false,
            charged: false,
        },
    ] {
        videos.execute(&id, command, &meta).await.expect("command");
    }

    let shown: Value = app
        .get(&format!("/v1/videos/{id}"), Some(&token))
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(shown["status"], "failed");
    assert_eq!(shown["error"]["code"], "generation_failed");
    assert_eq!(
        shown["error"]["message"],
        "the provider could not generate this video"
    );
    assert_eq!(
        shown["attempts"][0]["error"]["message"],
        "the provider is unavailable"
    );
    assert!(!shown.to_string().contains("gw-internal"), "{shown}");
    // The admin view of the events keeps what the provider said.
    let events = app
        .get(&format!("/v1/admin/events/video/{id}"), Some(&admin))
        .await
        .text()
        .await
        .expect("text");
    assert!(events.contains("gw-internal-7"), "{events}");
}
