//! Webhook endpoints through the real router and Postgres: the secret shown once and kept out
//! of the log, validation, ownership, updates, rotation with overlap, deletion, the default
//! secret, and a replay that rebuilds the same rows.

use crate::common;

use common::{assert_problem, TestApp};
use framegate_commands::webhook_signature::{signature_header, verify, WebhookSecret};
use framegate_commands::webhooks::{fingerprint, signing_secrets};
use framegate_domain::WebhookEndpointId;
use framegate_projections::replay::{self, ReplayOptions, Silent};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use uuid::Uuid;

async fn create(app: &TestApp, token: &str, body: Value) -> Value {
    let response = app.post("/v1/webhooks", Some(token), body).await;
    assert_eq!(response.status(), StatusCode::CREATED);
    response.json().await.expect("json")
}

async fn send(
    app: &TestApp,
    method: Method,
    path: &str,
    token: &str,
    body: Option<Value>,
) -> Value {
    let response = app.request(method, path, Some(token), body).await;
    assert_eq!(response.status(), StatusCode::OK, "{path}");
    response.json().await.expect("json")
}

fn endpoint_id(endpoint: &Value) -> WebhookEndpointId {
    WebhookEndpointId::from_uuid(endpoint["id"].as_str().expect("id").parse().expect("uuid"))
}

#[tokio::test]
async fn the_secret_is_shown_once_kept_out_of_the_log_and_signs_deliveries() {
    let app = TestApp::spawn().await;
    let (_, token, _) = app.signed_in_user("hooks@example.com").await;
    let created = create(
        &app,
        &token,
        json!({"url": "https://hooks.example.com/in", "description": "orders"}),
    )
    .await;
    let secret_text = created["secret"].as_str().expect("secret").to_owned();
    let secret = WebhookSecret::parse(&secret_text).expect("a whsec_ secret");
    assert_eq!(created["secret_fingerprint"], fingerprint(&secret));
    assert_eq!(created["status"], "enabled");
    assert_eq!(
        created["events"],
        json!([
            "video.queued",
            "video.started",
            "video.completed",
            "video.failed",
            "video.cancelled"
        ])
    );
    assert_eq!(created["description"], "orders");

    let id = created["id"].as_str().expect("id");
    let fetched = send(
        &app,
        Method::GET,
        &format!("/v1/webhooks/{id}"),
        &token,
        None,
    )
    .await;
    assert!(
        fetched.get("secret").is_none(),
        "never shown again: {fetched}"
    );
    let listed = send(&app, Method::GET, "/v1/webhooks", &token, None).await;
    assert!(!listed.to_string().contains(&secret_text));

    // The log holds the fingerprint, never the secret.
    let payloads: Vec<Value> = sqlx::query_scalar(
        "SELECT payload FROM events WHERE aggregate_type = 'WebhookEndpoint' AND aggregate_id = $1",
    )
    .bind(id)
    .fetch_all(&app.db.pool)
    .await
    .expect("events");
    assert_eq!(payloads.len(), 1);
    assert!(!payloads[0].to_string().contains(&secret_text));
    assert_eq!(
        payloads[0]["WebhookEndpointCreated"]["secret_fingerprint"],
        fingerprint(&secret)
    );

    // What the delivery side signs with is the secret the owner was shown.
    let secrets = signing_secrets(&app.db.pool, endpoint_id(&created))
        .await
        .expect("secrets");
    assert_eq!(secrets, vec![secret.clone()]);
    let header = signature_header(&[&secrets[0]], "msg_1", 1_700_000_000, b"{}");
    verify(
        &secret,
        "msg_1",
        1_700_000_000,
        b"{}",
        &header,
        1_700_000_000,
    )
    .expect("verifies");
}

#[tokio::test]
async fn bad_settings_are_refused_with_their_field_and_code() {
    let app = TestApp::spawn().await;
    let (_, token, _) = app.signed_in_user("picky@example.com").await;
    let cases = [
        (json!({"url": "ftp://example.com/"}), "invalid_url"),
        (
            json!({"url": "https://user:pw@example.com/"}),
            "invalid_url",
        ),
        (
            json!({"url": "https://example.com/", "events": ["video.exploded"]}),
            "unknown_event_type",
        ),
        (
            json!({"url": "https://example.com/", "events": []}),
            "no_event_types",
        ),
        (
            json!({"url": "https://example.com/", "description": "x".repeat(501)}),
            "invalid_description",
        ),
    ];
    for (body, code) in cases {
        let response = app.post("/v1/webhooks", Some(&token), body.clone()).await;
        let problem = assert_problem(
            response,
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
        )
        .await;
        assert_eq!(problem["errors"][0]["code"], code, "{body}");
    }
    let unknown_field = app
        .post(
            "/v1/webhooks",
            Some(&token),
            json!({"url": "https://example.com/", "secret": "mine"}),
        )
        .await;
    assert_eq!(unknown_field.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let anonymous = app
        .post("/v1/webhooks", None, json!({"url": "https://example.com/"}))
        .await;
    assert_eq!(anonymous.status(), StatusCode::UNAUTHORIZED);

    // Sixteen endpoints at most.
    for n in 0..16 {
        create(
            &app,
            &token,
            json!({"url": format!("https://example.com/{n}")}),
        )
        .await;
    }
    let seventeenth = app
        .post(
            "/v1/webhooks",
            Some(&token),
            json!({"url": "https://example.com/17"}),
        )
        .await;
    assert_problem(
        seventeenth,
        StatusCode::UNPROCESSABLE_ENTITY,
        "too_many_endpoints",
    )
    .await;

    // Pages in creation order, without repeats.
    let first = send(&app, Method::GET, "/v1/webhooks?limit=10", &token, None).await;
    let cursor = first["next_cursor"].as_str().expect("a second page");
    let second = send(
        &app,
        Method::GET,
        &format!("/v1/webhooks?limit=10&cursor={cursor}"),
        &token,
        None,
    )
    .await;
    let urls: Vec<&str> = first["items"]
        .as_array()
        .into_iter()
        .chain(second["items"].as_array())
        .flatten()
        .map(|e| e["url"].as_str().expect("url"))
        .collect();
    let expected: Vec<String> = (0..16)
        .map(|n| format!("https://example.com/{n}"))
        .collect();
    assert_eq!(urls, expected);
    assert!(second["next_cursor"].is_null());
}

#[tokio::test]
async fn someone_elses_endpoint_does_not_exist_for_you() {
    let app = TestApp::spawn().await;
    let (_, owner, _) = app.signed_in_user("owner@example.com").await;
    let (_, other, _) = app.signed_in_user("other@example.com").await;
    let created = create(&app, &owner, json!({"url": "https://example.com/mine"})).await;
    let path = format!("/v1/webhooks/{}", created["id"].as_str().expect("id"));
    for (method, path, body) in [
        (Method::GET, path.clone(), None),
        (
            Method::PATCH,
            path.clone(),
            Some(json!({"url": "https://evil.example.com/"})),
        ),
        (Method::DELETE, path.clone(), None),
        (Method::POST, format!("{path}/rotate-secret"), None),
    ] {
        let response = app.request(method.clone(), &path, Some(&other), body).await;
        assert_problem(response, StatusCode::NOT_FOUND, "not_found").await;
    }
    let listed = send(&app, Method::GET, "/v1/webhooks", &other, None).await;
    assert_eq!(listed["items"], json!([]));
    let still = send(&app, Method::GET, &path, &owner, None).await;
    assert_eq!(still["url"], "https://example.com/mine");
}

#[tokio::test]
async fn updates_change_settings_and_the_owner_turns_deliveries_off_and_on() {
    let app = TestApp::spawn().await;
    let (_, token, _) = app.signed_in_user("patcher@example.com").await;
    let created = create(
        &app,
        &token,
        json!({"url": "https://example.com/a", "description": "first"}),
    )
    .await;
    let path = format!("/v1/webhooks/{}", created["id"].as_str().expect("id"));
    let updated = send(
        &app,
        Method::PATCH,
        &path,
        &token,
        Some(json!({"url": "https://example.com/b", "events": ["video.progress", "credits.low"], "description": null})),
    )
    .await;
    assert_eq!(updated["url"], "https://example.com/b");
    assert_eq!(updated["events"], json!(["video.progress", "credits.low"]));
    assert!(updated["description"].is_null());
    assert_eq!(updated["secret_fingerprint"], created["secret_fingerprint"]);

    let off = send(
        &app,
        Method::PATCH,
        &path,
        &token,
        Some(json!({"enabled": false})),
    )
    .await;
    assert_eq!(off["status"], "disabled");
    assert_eq!(off["disabled_reason"], "owner");
    let on = send(
        &app,
        Method::PATCH,
        &path,
        &token,
        Some(json!({"enabled": true})),
    )
    .await;
    assert_eq!(on["status"], "enabled");
    assert!(on["disabled_reason"].is_null());

    let bad = app
        .request(
            Method::PATCH,
            &path,
            Some(&token),
            Some(json!({"events": ["nope"]})),
        )
        .await;
    assert_problem(bad, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed").await;
    let unchanged = send(&app, Method::GET, &path, &token, None).await;
    assert_eq!(
        unchanged["events"],
        json!(["video.progress", "credits.low"])
    );
}

#[tokio::test]
async fn a_rotation_signs_with_both_secrets_for_a_day_then_the_new_one() {
    let app = TestApp::spawn().await;
    let (_, token, _) = app.signed_in_user("rotator@example.com").await;
    let created = create(&app, &token, json!({"url": "https://example.com/r"})).await;
    let old = WebhookSecret::parse(created["secret"].as_str().expect("secret")).expect("secret");
    let path = format!(
        "/v1/webhooks/{}/rotate-secret",
        created["id"].as_str().expect("id")
    );
    let rotated = send(&app, Method::POST, &path, &token, None).await;
    let new = WebhookSecret::parse(rotated["secret"].as_str().expect("secret")).expect("secret");
    assert_ne!(old, new);
    assert_eq!(rotated["secret_fingerprint"], fingerprint(&new));
    let expires: chrono::DateTime<chrono::Utc> =
        serde_json::from_value(rotated["previous_secret_expires_at"].clone()).expect("a time");
    let overlap = expires - chrono::Utc::now();
    assert!(
        overlap > chrono::Duration::hours(23) && overlap <= chrono::Duration::hours(24),
        "{overlap}"
    );

    let id = endpoint_id(&created);
    let secrets = signing_secrets(&app.db.pool, id).await.expect("secrets");
    assert_eq!(secrets, vec![new.clone(), old.clone()], "the new one first");
    let refs: Vec<&WebhookSecret> = secrets.iter().collect();
    let header = signature_header(&refs, "msg_2", 1_700_000_000, b"{\"a\":1}");
    for receiver in [&old, &new] {
        verify(
            receiver,
            "msg_2",
            1_700_000_000,
            b"{\"a\":1}",
            &header,
            1_700_000_000,
        )
        .expect("either secret verifies during the overlap");
    }

    // Once the overlap is over, only the new one signs.
    sqlx::query("UPDATE webhook_secrets SET expires_at = now() - interval '1 second' WHERE expires_at IS NOT NULL")
        .execute(&app.db.pool)
        .await
        .expect("expire");
    let secrets = signing_secrets(&app.db.pool, id).await.expect("secrets");
    assert_eq!(secrets, vec![new]);
}

#[tokio::test]
async fn deleting_removes_the_endpoint_and_its_secrets() {
    let app = TestApp::spawn().await;
    let (_, token, _) = app.signed_in_user("deleter@example.com").await;
    let created = create(&app, &token, json!({"url": "https://example.com/d"})).await;
    let path = format!("/v1/webhooks/{}", created["id"].as_str().expect("id"));
    let deleted = app.request(Method::DELETE, &path, Some(&token), None).await;
    assert_eq!(deleted.status(), StatusCode::NO_CONTENT);
    assert_problem(
        app.get(&path, Some(&token)).await,
        StatusCode::NOT_FOUND,
        "not_found",
    )
    .await;
    let again = app.request(Method::DELETE, &path, Some(&token), None).await;
    assert_problem(again, StatusCode::NOT_FOUND, "not_found").await;
    let secrets = signing_secrets(&app.db.pool, endpoint_id(&created))
        .await
        .expect("secrets");
    assert!(secrets.is_empty());
    let listed = send(&app, Method::GET, "/v1/webhooks", &token, None).await;
    assert_eq!(listed["items"], json!([]));
    // A deleted endpoint no longer counts against the limit.
    for n in 0..16 {
        create(
            &app,
            &token,
            json!({"url": format!("https://example.com/{n}")}),
        )
        .await;
    }
}

#[tokio::test]
async fn the_default_secret_is_made_once_and_stays() {
    let app = TestApp::spawn().await;
    let (_, token, _) = app.signed_in_user("default@example.com").await;
    let (_, other, _) = app.signed_in_user("default2@example.com").await;
    let first = send(
        &app,
        Method::GET,
        "/v1/webhooks/default/secret",
        &token,
        None,
    )
    .await;
    let second = send(
        &app,
        Method::GET,
        "/v1/webhooks/default/secret",
        &token,
        None,
    )
    .await;
    let theirs = send(
        &app,
        Method::GET,
        "/v1/webhooks/default/secret",
        &other,
        None,
    )
    .await;
    WebhookSecret::parse(first["secret"].as_str().expect("secret")).expect("a whsec_ secret");
    assert_eq!(first, second);
    assert_ne!(first, theirs);
}

#[tokio::test]
async fn a_replay_rebuilds_the_same_endpoint_rows_and_the_audit_log_names_them() {
    let app = TestApp::spawn().await;
    let (_, token, _) = app.signed_in_user("replayed@example.com").await;
    let kept = create(
        &app,
        &token,
        json!({"url": "https://example.com/kept", "events": ["video.completed"]}),
    )
    .await;
    let kept_path = format!("/v1/webhooks/{}", kept["id"].as_str().expect("id"));
    send(
        &app,
        Method::PATCH,
        &kept_path,
        &token,
        Some(json!({"enabled": false, "description": "paused"})),
    )
    .await;
    send(
        &app,
        Method::POST,
        &format!("{kept_path}/rotate-secret"),
        &token,
        None,
    )
    .await;
    let gone = create(&app, &token, json!({"url": "https://example.com/gone"})).await;
    let gone_path = format!("/v1/webhooks/{}", gone["id"].as_str().expect("id"));
    app.request(Method::DELETE, &gone_path, Some(&token), None)
        .await;

    let rows = || async {
        sqlx::query_scalar::<_, Value>(
            "SELECT to_jsonb(w) FROM webhook_endpoints w ORDER BY endpoint_id",
        )
        .fetch_all(&app.db.pool)
        .await
        .expect("rows")
    };
    framegate_projections::read_models::catch_up_all(&app.db.pool)
        .await
        .expect("caught up");
    let before = rows().await;
    assert_eq!(before.len(), 2, "the deleted one keeps its row, marked");
    let models = replay::select_models(&app.db.pool, Some(&["webhook_endpoints".to_owned()]))
        .expect("a rebuildable model");
    let report = replay::replay(&app.db.pool, &models, &ReplayOptions::default(), &Silent)
        .await
        .expect("replay");
    assert!(report.identical(), "{report:?}");
    assert_eq!(rows().await, before);

    let (_, admin) = app.admin("auditor@example.com").await;
    let kept_id: Uuid = kept["id"].as_str().expect("id").parse().expect("uuid");
    let stream = send(
        &app,
        Method::GET,
        &format!("/v1/admin/events/webhook/{kept_id}"),
        &admin,
        None,
    )
    .await;
    let types: Vec<&str> = stream["items"]
        .as_array()
        .or_else(|| stream["events"].as_array())
        .expect("events")
        .iter()
        .map(|e| e["event_type"].as_str().expect("type"))
        .collect();
    assert_eq!(
        types,
        [
            "WebhookEndpointCreated",
            "WebhookEndpointUpdated",
            "WebhookEndpointDisabled",
            "WebhookEndpointSecretRotated"
        ]
    );
}
