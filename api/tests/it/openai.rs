//! The OpenAI-compatible Videos API (`/openai/v1`) as a second door onto the same commands:
//! a request reserves exactly what `POST /v1/videos` reserves, an Idempotency-Key makes one
//! video (a multipart retry with a new boundary too), errors come in OpenAI's shape with the
//! parameter named, scopes apply as on `/v1`, and deleting follows the video's state.
//! (The official SDK drives it end to end in the root crate's `openai_sdk` test.)

use crate::common::{self, TestApp};

use reqwest::multipart::Form;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

fn openai_request() -> Value {
    json!({"prompt": "a lighthouse in a storm", "model": "simulator-v1", "seconds": "6", "size": "1280x720"})
}

async fn json_of(response: reqwest::Response) -> Value {
    response.json().await.expect("json")
}

/// `{"error": {...}}` with `status`, `code` and `param`; the error object.
async fn assert_openai_error(
    response: reqwest::Response,
    status: StatusCode,
    code: &str,
    param: Option<&str>,
) -> Value {
    assert_eq!(response.status(), status);
    assert_eq!(response.headers()["content-type"], "application/json");
    let body = json_of(response).await;
    let error = &body["error"];
    assert_eq!(error["code"], code, "{body}");
    assert_eq!(error["param"], json!(param), "{body}");
    assert!(
        error["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{body}"
    );
    assert!(error["type"].is_string(), "{body}");
    error.clone()
}

async fn ledger(app: &TestApp, token: &str) -> Vec<(String, i64, i64)> {
    let ledger = json_of(app.get("/v1/credits/ledger", Some(token)).await).await;
    ledger["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|e| {
            (
                e["kind"].as_str().expect("kind").to_owned(),
                e["balance_change"].as_i64().expect("balance"),
                e["reserved_change"].as_i64().expect("reserved"),
            )
        })
        .collect()
}

#[tokio::test]
async fn a_request_through_the_openai_door_reserves_what_v1_reserves_once_per_key() {
    let app = TestApp::spawn().await;
    let (_, ours, _) = app.signed_in_user("ours@example.com").await;
    let (_, theirs, _) = app.signed_in_user("theirs@example.com").await;

    let v1 = app
        .post(
            "/v1/videos",
            Some(&ours),
            json!({"prompt": "a lighthouse in a storm", "provider": "simulator", "model": "simulator-v1",
                   "duration_seconds": 6, "aspect_ratio": "16:9", "resolution": "720p"}),
        )
        .await;
    assert_eq!(v1.status(), StatusCode::CREATED);

    let send = |key: &'static str| {
        app.client
            .post(app.url("/openai/v1/videos"))
            .bearer_auth(&theirs)
            .header("Idempotency-Key", key)
            .json(&openai_request())
            .send()
    };
    let first = send("same-key").await.expect("request");
    assert_eq!(first.status(), StatusCode::OK);
    let video = json_of(first).await;
    assert_eq!(video["object"], "video");
    assert_eq!(video["status"], "queued");
    assert_eq!(video["size"], "1280x720");
    assert_eq!(video["seconds"], "6");
    assert_eq!(video["model"], "simulator-v1");
    let replay = send("same-key").await.expect("replay");
    assert_eq!(replay.status(), StatusCode::OK);
    assert_eq!(replay.headers()["idempotency-replayed"], "true");
    assert_eq!(json_of(replay).await, video);

    // The same ledger as through /v1: the grant and one reservation of 6 credits.
    assert_eq!(ledger(&app, &theirs).await, ledger(&app, &ours).await);
    let credits = json_of(app.get("/v1/credits", Some(&theirs)).await).await;
    assert_eq!(
        (credits["reserved"].as_i64(), credits["available"].as_i64()),
        (Some(6), Some(94))
    );
    // The video is one of ours: /v1 shows it, with the price of the same request.
    let id = video["id"]
        .as_str()
        .expect("id")
        .strip_prefix("video_")
        .expect("prefix");
    let same = json_of(app.get(&format!("/v1/videos/{id}"), Some(&theirs)).await).await;
    assert_eq!(
        (same["estimated_cost"].as_i64(), same["resolution"].as_str()),
        (Some(6), Some("720p"))
    );
    let count: i64 = sqlx::query_scalar("SELECT count(*) FROM videos WHERE owner_id = (SELECT owner_id FROM videos WHERE id = $1::uuid)")
        .bind(id)
        .fetch_one(&app.db.pool)
        .await
        .expect("count");
    assert_eq!(count, 1, "one video for one key");
}

#[tokio::test]
async fn a_multipart_retry_with_a_new_boundary_is_the_same_request() {
    let app = TestApp::spawn().await;
    let (_, token, _) = app.signed_in_user("form@example.com").await;
    let form = || {
        Form::new()
            .text("prompt", "a red kite over a beach")
            .text("model", "simulator/simulator-v1")
            .text("seconds", "3")
            .text("size", "720x1280")
    };
    let mut bodies = Vec::new();
    for _ in 0..2 {
        let response = app
            .client
            .post(app.url("/openai/v1/videos"))
            .bearer_auth(&token)
            .header("Idempotency-Key", "form-key")
            .multipart(form())
            .send()
            .await
            .expect("request");
        assert_eq!(response.status(), StatusCode::OK);
        bodies.push(json_of(response).await);
    }
    assert_eq!(bodies[0], bodies[1]);
    assert_eq!(bodies[0]["size"], "720x1280");
    let credits = json_of(app.get("/v1/credits", Some(&token)).await).await;
    assert_eq!(credits["reserved"].as_i64(), Some(3), "one reservation");
    // A different form under the same key is refused, in OpenAI's shape.
    let other = app
        .client
        .post(app.url("/openai/v1/videos"))
        .bearer_auth(&token)
        .header("Idempotency-Key", "form-key")
        .multipart(form().text("extra", "x"))
        .send()
        .await
        .expect("request");
    assert_openai_error(
        other,
        StatusCode::BAD_REQUEST,
        "idempotency_key_reused",
        None,
    )
    .await;
}

#[tokio::test]
async fn bad_parameters_are_400s_naming_the_parameter_and_nothing_is_reserved() {
    let app = TestApp::spawn().await;
    let (_, token, _) = app.signed_in_user("bad@example.com").await;
    let cases = [
        (
            json!({"prompt": "x", "model": "simulator-v1", "seconds": "25"}),
            "unsupported_duration",
            "seconds",
        ),
        (
            json!({"prompt": "x", "model": "simulator-v1", "seconds": "soon"}),
            "invalid_seconds",
            "seconds",
        ),
        (
            json!({"prompt": "x", "model": "simulator-v1", "size": "100x100"}),
            "unsupported_size",
            "size",
        ),
        (
            json!({"prompt": "x", "model": "simulator-v1", "size": "3840x2160"}),
            "unsupported_resolution",
            "size",
        ),
        (
            json!({"prompt": "x", "model": "sora-3"}),
            "unsupported_model",
            "model",
        ),
        // Sora is not configured on this server.
        (json!({"prompt": "x"}), "provider_not_configured", "model"),
        (
            json!({"prompt": " ", "model": "simulator-v1"}),
            "required",
            "prompt",
        ),
        (
            json!({"prompt": "x", "model": "simulator-v1", "input_reference": {"image_url": "https://example.com/a.png"}}),
            "unsupported_reference",
            "input_reference",
        ),
        (
            json!({"prompt": "x", "model": "simulator-v1", "input_reference": {"file_id": "0190a5b0-0000-7000-8000-000000000001"}}),
            "image_not_found",
            "input_reference",
        ),
        (
            json!({"prompt": "x", "model": "simulator-v1", "quality": "high"}),
            "invalid_field",
            "quality",
        ),
    ];
    for (body, code, param) in cases {
        let response = app
            .post("/openai/v1/videos", Some(&token), body.clone())
            .await;
        let error = assert_openai_error(response, StatusCode::BAD_REQUEST, code, Some(param)).await;
        assert_eq!(error["type"], "invalid_request_error", "{body}");
    }
    let credits = json_of(app.get("/v1/credits", Some(&token)).await).await;
    assert_eq!(credits["reserved"].as_i64(), Some(0));

    // Not enough credits: 402, as on /v1.
    let costly = json!({"prompt": "x", "model": "simulator-v1", "seconds": "20"});
    for _ in 0..5 {
        app.post("/openai/v1/videos", Some(&token), costly.clone())
            .await;
    }
    let refused = app.post("/openai/v1/videos", Some(&token), costly).await;
    let error = assert_openai_error(
        refused,
        StatusCode::PAYMENT_REQUIRED,
        "insufficient_credits",
        None,
    )
    .await;
    assert_eq!(error["type"], "insufficient_quota");
}

#[tokio::test]
async fn auth_and_scopes_apply_as_on_v1_in_openais_shape() {
    let app = TestApp::spawn().await;
    let (_, token, _) = app.signed_in_user("keys@example.com").await;
    let anonymous = app.get("/openai/v1/videos", None).await;
    let error =
        assert_openai_error(anonymous, StatusCode::UNAUTHORIZED, "unauthenticated", None).await;
    assert_eq!(error["type"], "authentication_error");

    let key = json_of(
        app.post(
            "/v1/api-keys",
            Some(&token),
            json!({"name": "reader", "scopes": ["videos:read"]}),
        )
        .await,
    )
    .await;
    let reader = key["secret"].as_str().expect("secret");
    let listed = app.get("/openai/v1/videos", Some(reader)).await;
    assert_eq!(listed.status(), StatusCode::OK);
    assert_eq!(
        json_of(listed).await,
        json!({"object": "list", "data": [], "first_id": null, "last_id": null, "has_more": false})
    );
    let refused = app
        .post("/openai/v1/videos", Some(reader), openai_request())
        .await;
    let error =
        assert_openai_error(refused, StatusCode::FORBIDDEN, "insufficient_scope", None).await;
    assert_eq!(error["type"], "permission_error");

    let missing = app
        .get(
            "/openai/v1/videos/video_0190a5b0-0000-7000-8000-000000000001",
            Some(&token),
        )
        .await;
    assert_openai_error(missing, StatusCode::NOT_FOUND, "not_found", None).await;
    let nowhere = app.get("/openai/v1/nothing-here", Some(&token)).await;
    assert_openai_error(nowhere, StatusCode::NOT_FOUND, "not_found", None).await;
    // /v1 keeps its problem documents.
    common::assert_problem(
        app.get(
            "/v1/videos/0190a5b0-0000-7000-8000-000000000001",
            Some(&token),
        )
        .await,
        StatusCode::NOT_FOUND,
        "not_found",
    )
    .await;
}

#[tokio::test]
async fn only_a_finished_video_is_deleted_and_then_it_is_gone_from_both_doors() {
    let app = TestApp::spawn().await;
    let (_, token, _) = app.signed_in_user("delete@example.com").await;
    let video = json_of(
        app.post("/openai/v1/videos", Some(&token), openai_request())
            .await,
    )
    .await;
    let id = video["id"].as_str().expect("id").to_owned();
    let uuid = id.strip_prefix("video_").expect("prefix").to_owned();
    let path = format!("/openai/v1/videos/{id}");

    // Queued: it holds a reservation its own end settles, so it is not deleted.
    let early = app.request(Method::DELETE, &path, Some(&token), None).await;
    assert_openai_error(early, StatusCode::CONFLICT, "video_not_finished", None).await;
    let not_ready = app.get(&format!("{path}/content"), Some(&token)).await;
    assert_openai_error(not_ready, StatusCode::CONFLICT, "video_not_ready", None).await;

    // Cancelled (before any provider had it): released, failed with code `cancelled`.
    let cancelled = app
        .post(
            &format!("/v1/videos/{uuid}/cancel"),
            Some(&token),
            json!({}),
        )
        .await;
    assert_eq!(cancelled.status(), StatusCode::OK);
    let shown = json_of(app.get(&path, Some(&token)).await).await;
    assert_eq!(
        (shown["status"].as_str(), shown["error"]["code"].as_str()),
        (Some("failed"), Some("cancelled"))
    );
    // (Its release is the settlement worker's, from VideoCancelled; none runs here.)
    let before = json_of(app.get("/v1/credits", Some(&token)).await).await;
    let ledger_before = ledger(&app, &token).await;

    let deleted = app.request(Method::DELETE, &path, Some(&token), None).await;
    assert_eq!(deleted.status(), StatusCode::OK);
    assert_eq!(
        json_of(deleted).await,
        json!({"id": id, "object": "video.deleted", "deleted": true})
    );
    assert_openai_error(
        app.get(&path, Some(&token)).await,
        StatusCode::NOT_FOUND,
        "not_found",
        None,
    )
    .await;
    assert_openai_error(
        app.request(Method::DELETE, &path, Some(&token), None).await,
        StatusCode::NOT_FOUND,
        "not_found",
        None,
    )
    .await;
    assert_eq!(
        app.get(&format!("/v1/videos/{uuid}"), Some(&token))
            .await
            .status(),
        StatusCode::NOT_FOUND
    );
    let listed = json_of(app.get("/v1/videos", Some(&token)).await).await;
    assert_eq!(listed["items"], json!([]));
    // The deletion is in the video's history, by its owner; the money did not move again.
    let types: Vec<String> = sqlx::query_scalar(
        "SELECT event_type FROM events WHERE aggregate_type = 'Video' AND aggregate_id = $1 ORDER BY sequence",
    )
    .bind(&uuid)
    .fetch_all(&app.db.pool)
    .await
    .expect("events");
    assert_eq!(types.last().map(String::as_str), Some("VideoDeleted"));
    assert_eq!(
        json_of(app.get("/v1/credits", Some(&token)).await).await,
        before
    );
    assert_eq!(ledger(&app, &token).await, ledger_before);
}

#[tokio::test]
async fn pages_follow_after_in_either_order() {
    let app = TestApp::spawn().await;
    let (_, token, _) = app.signed_in_user("pages@example.com").await;
    let mut ids = Vec::new();
    for _ in 0..3 {
        let video = json_of(
            app.post("/openai/v1/videos", Some(&token), openai_request())
                .await,
        )
        .await;
        ids.push(video["id"].as_str().expect("id").to_owned());
    }
    for (order, expected) in [
        ("desc", ids.iter().rev().cloned().collect::<Vec<_>>()),
        ("asc", ids.clone()),
    ] {
        let mut seen = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let query = match &after {
                Some(after) => format!("/openai/v1/videos?limit=2&order={order}&after={after}"),
                None => format!("/openai/v1/videos?limit=2&order={order}"),
            };
            let page = json_of(app.get(&query, Some(&token)).await).await;
            for video in page["data"].as_array().expect("data") {
                seen.push(video["id"].as_str().expect("id").to_owned());
            }
            assert_eq!(page["last_id"].as_str(), seen.last().map(String::as_str));
            if page["has_more"] == false {
                break;
            }
            after = page["last_id"].as_str().map(str::to_owned);
        }
        assert_eq!(seen, expected, "{order}");
    }
    let bad = app
        .get("/openai/v1/videos?order=sideways", Some(&token))
        .await;
    assert_openai_error(bad, StatusCode::BAD_REQUEST, "invalid_order", Some("order")).await;
    let bad = app
        .get("/openai/v1/videos?after=video_nope", Some(&token))
        .await;
    assert_openai_error(
        bad,
        StatusCode::BAD_REQUEST,
        "invalid_cursor",
        Some("after"),
    )
    .await;
}

#[tokio::test]
async fn the_prefix_is_configurable() {
    let app = TestApp::with_config(|config| config.openai_prefix = "/compat".to_owned()).await;
    let (_, token, _) = app.signed_in_user("prefix@example.com").await;
    assert_eq!(
        app.get("/compat/videos", Some(&token)).await.status(),
        StatusCode::OK
    );
    assert_eq!(
        app.get("/openai/v1/videos", Some(&token)).await.status(),
        StatusCode::NOT_FOUND
    );
}
