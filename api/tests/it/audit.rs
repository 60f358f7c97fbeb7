//! The admin audit log: timelines, filters, pagination, event streams, and no secret in any
//! of them.

use crate::common;

use common::{assert_problem, TestApp, PASSWORD};
use reqwest::StatusCode;
use serde_json::{json, Value};
use uuid::Uuid;

const AGENT: &str = "audit-test/1";

/// A user who registered, verified, issued an API key (with a user agent) and reset the
/// password; returns their id.
async fn busy_user(app: &TestApp, email: &str) -> Uuid {
    let (id, access, _) = app.signed_in_user(email).await;
    let key = app
        .client
        .post(app.url("/v1/api-keys"))
        .bearer_auth(&access)
        .header("user-agent", AGENT)
        .json(&json!({"name": "ci"}))
        .send()
        .await
        .expect("request");
    assert_eq!(key.status(), StatusCode::CREATED);
    let asked = app
        .post("/v1/auth/password-reset", None, json!({"email": email}))
        .await;
    assert_eq!(asked.status(), StatusCode::ACCEPTED);
    let token = app.mailed_token_about(email, "Reset").await;
    let confirm = app
        .post(
            "/v1/auth/password-reset/confirm",
            None,
            json!({"token": token, "new_password": format!("{PASSWORD} again")}),
        )
        .await;
    assert_eq!(confirm.status(), StatusCode::NO_CONTENT);
    id
}

async fn get_text(app: &TestApp, path: &str, token: &str) -> String {
    let response = app.get(path, Some(token)).await;
    assert_eq!(response.status(), StatusCode::OK, "{path}");
    response.text().await.expect("text")
}

async fn items(app: &TestApp, path: &str, token: &str) -> Vec<Value> {
    let body: Value = serde_json::from_str(&get_text(app, path, token).await).expect("json");
    body["items"].as_array().expect("items").clone()
}

fn types(items: &[Value]) -> Vec<&str> {
    items
        .iter()
        .map(|i| i["event_type"].as_str().expect("event_type"))
        .collect()
}

/// Every string stored under a `*_hash` key in the events table.
async fn stored_hashes(app: &TestApp) -> Vec<String> {
    fn collect(value: &Value, out: &mut Vec<String>) {
        match value {
            Value::Object(map) => {
                for (key, value) in map {
                    match value {
                        Value::String(s) if key.ends_with("_hash") => out.push(s.clone()),
                        other => collect(other, out),
                    }
                }
            }
            Value::Array(items) => items.iter().for_each(|v| collect(v, out)),
            _ => {}
        }
    }
    let payloads: Vec<Value> = sqlx::query_scalar("SELECT payload FROM events")
        .fetch_all(&app.db.pool)
        .await
        .expect("payloads");
    let mut hashes = Vec::new();
    payloads.iter().for_each(|p| collect(p, &mut hashes));
    hashes
}

#[tokio::test]
async fn an_admin_sees_who_did_what_from_where_and_why() {
    let app = TestApp::spawn().await;
    let user = busy_user(&app, "carol@example.com").await;
    let (_, admin) = app.admin("admin@example.com").await;

    let timeline = items(
        &app,
        &format!("/v1/admin/audit?aggregate=user:{user}&limit=100"),
        &admin,
    )
    .await;
    let kinds = types(&timeline);
    for expected in [
        "UserRegistered",
        "EmailVerified",
        "ApiKeyIssued",
        "PasswordResetRequested",
        "PasswordResetCompleted",
    ] {
        assert!(
            kinds.contains(&expected),
            "{expected} missing from {kinds:?}"
        );
    }
    let issued = timeline
        .iter()
        .find(|e| e["event_type"] == "ApiKeyIssued")
        .expect("key issued");
    assert_eq!(issued["actor"], format!("user:{user}"));
    assert_eq!(issued["aggregate"], format!("user:{user}"));
    assert_eq!(issued["client_ip"], "127.0.0.1");
    assert_eq!(issued["user_agent"], AGENT);
    let request_id = issued["request_id"].as_str().expect("request id");
    assert_eq!(issued["correlation_id"], request_id);
    assert_eq!(issued["causation_id"], format!("request:{request_id}"));
    assert_eq!(issued["metadata"]["user_agent"], AGENT);
    // Time order, oldest first.
    let times: Vec<&str> = timeline
        .iter()
        .map(|e| e["recorded_at"].as_str().expect("time"))
        .collect();
    let mut sorted = times.clone();
    sorted.sort_by_key(|t| chrono::DateTime::parse_from_rfc3339(t).expect("rfc3339"));
    assert_eq!(times, sorted);
}

#[tokio::test]
async fn no_password_token_or_api_key_hash_appears_in_any_audit_output() {
    let app = TestApp::spawn().await;
    let user = busy_user(&app, "dave@example.com").await;
    let (_, admin) = app.admin("admin@example.com").await;

    let hashes = stored_hashes(&app).await;
    // Registration (password + verification token, twice: two users), key, reset token and
    // new password: the test would prove nothing if the events held none.
    assert!(hashes.len() >= 5, "{hashes:?}");
    let mut outputs = vec![
        get_text(&app, "/v1/admin/audit?limit=100", &admin).await,
        get_text(&app, &format!("/v1/admin/audit?actor=user:{user}"), &admin).await,
        get_text(&app, "/v1/admin/audit?event_type=ApiKeyIssued", &admin).await,
        get_text(&app, &format!("/v1/admin/events/user/{user}"), &admin).await,
    ];
    // Every page of a paginated walk, too.
    let mut cursor = String::new();
    loop {
        let text = get_text(&app, &format!("/v1/admin/audit?limit=3{cursor}"), &admin).await;
        let body: Value = serde_json::from_str(&text).expect("json");
        outputs.push(text);
        match body["next_cursor"].as_str() {
            Some(next) => cursor = format!("&cursor={next}"),
            None => break,
        }
    }
    for output in &outputs {
        for hash in &hashes {
            assert!(!output.contains(hash.as_str()), "{hash} leaked in {output}");
        }
    }
    assert!(outputs[3].contains("[redacted]"));
}

#[tokio::test]
async fn only_admins_may_read_the_audit_log() {
    let app = TestApp::spawn().await;
    let (user, access, _) = app.signed_in_user("eve@example.com").await;
    for path in [
        "/v1/admin/audit".to_owned(),
        format!("/v1/admin/events/user/{user}"),
    ] {
        assert_problem(
            app.get(&path, Some(&access)).await,
            StatusCode::FORBIDDEN,
            "forbidden",
        )
        .await;
        assert_problem(
            app.get(&path, None).await,
            StatusCode::UNAUTHORIZED,
            "unauthenticated",
        )
        .await;
    }
}

#[tokio::test]
async fn filters_narrow_the_log_and_pages_cover_it_exactly_once() {
    let app = TestApp::spawn().await;
    let frank = busy_user(&app, "frank@example.com").await;
    let grace = busy_user(&app, "grace@example.com").await;
    let (_, admin) = app.admin("admin@example.com").await;

    let frank_acts = items(
        &app,
        &format!("/v1/admin/audit?actor={frank}&limit=100"),
        &admin,
    )
    .await;
    assert!(!frank_acts.is_empty());
    assert!(frank_acts
        .iter()
        .all(|e| e["actor"] == format!("user:{frank}")));

    let keys = items(&app, "/v1/admin/audit?event_type=ApiKeyIssued", &admin).await;
    let owners: Vec<&str> = keys
        .iter()
        .map(|e| e["aggregate_id"].as_str().expect("id"))
        .collect();
    assert_eq!(owners, [frank.to_string(), grace.to_string()]);

    let issued = &keys[0];
    let correlation = issued["correlation_id"].as_str().expect("correlation");
    let chain = items(
        &app,
        &format!("/v1/admin/audit?correlation_id={correlation}"),
        &admin,
    )
    .await;
    assert!(!chain.is_empty());
    assert!(chain.iter().all(|e| e["correlation_id"] == correlation));
    assert!(chain.iter().any(|e| e["event_id"] == issued["event_id"]));

    // Time range: exactly the events from the first key issue (inclusive) to the second
    // (exclusive).
    let since = keys[0]["recorded_at"].as_str().expect("time");
    let until = keys[1]["recorded_at"].as_str().expect("time");
    let between = items(
        &app,
        &format!(
            "/v1/admin/audit?event_type=ApiKeyIssued&since={}&until={}",
            urlencode(since),
            urlencode(until)
        ),
        &admin,
    )
    .await;
    assert_eq!(types(&between), ["ApiKeyIssued"]);
    assert_eq!(between[0]["event_id"], keys[0]["event_id"]);

    // Paging by 2 yields the whole log once, in the same order.
    let everything = items(&app, "/v1/admin/audit?limit=100", &admin).await;
    assert!(everything.len() > 4);
    let mut paged = Vec::new();
    let mut cursor = String::new();
    loop {
        let body: Value = serde_json::from_str(
            &get_text(&app, &format!("/v1/admin/audit?limit=2{cursor}"), &admin).await,
        )
        .expect("json");
        let page = body["items"].as_array().expect("items");
        assert!(page.len() <= 2);
        paged.extend(page.iter().map(|e| e["event_id"].clone()));
        match body["next_cursor"].as_str() {
            Some(next) => cursor = format!("&cursor={next}"),
            None => break,
        }
    }
    let all: Vec<Value> = everything.iter().map(|e| e["event_id"].clone()).collect();
    assert_eq!(paged, all);

    for (query, field) in [
        ("aggregate=movie:1", "aggregate"),
        ("actor=root", "actor"),
        ("since=yesterday", "since"),
        ("correlation_id=42", "correlation_id"),
        ("cursor=abc", "cursor"),
        ("limit=0", "limit"),
    ] {
        let problem = assert_problem(
            app.get(&format!("/v1/admin/audit?{query}"), Some(&admin))
                .await,
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
        )
        .await;
        assert_eq!(problem["errors"][0]["field"], field, "{query}");
    }
}

#[tokio::test]
async fn events_show_returns_a_whole_stream_with_payload_and_metadata() {
    let app = TestApp::spawn().await;
    let user = busy_user(&app, "heidi@example.com").await;
    let (_, admin) = app.admin("admin@example.com").await;

    let body: Value = serde_json::from_str(
        &get_text(&app, &format!("/v1/admin/events/user/{user}"), &admin).await,
    )
    .expect("json");
    assert_eq!(body["aggregate"], format!("user:{user}"));
    let events = body["events"].as_array().expect("events");
    let sequences: Vec<i64> = events
        .iter()
        .map(|e| e["sequence"].as_i64().expect("sequence"))
        .collect();
    assert_eq!(sequences, (1..=events.len() as i64).collect::<Vec<_>>());
    assert_eq!(events[0]["event_type"], "UserRegistered");
    assert_eq!(
        events[0]["payload"]["UserRegistered"]["email"],
        "heidi@example.com"
    );
    assert_eq!(
        events[0]["payload"]["UserRegistered"]["password_hash"],
        "[redacted]"
    );
    assert!(events[0]["metadata"]["correlation_id"].is_string());

    for path in [
        format!("/v1/admin/events/user/{}", Uuid::now_v7()),
        format!("/v1/admin/events/movie/{user}"),
        "/v1/admin/events/user/not-a-uuid".to_owned(),
    ] {
        assert_problem(
            app.get(&path, Some(&admin)).await,
            StatusCode::NOT_FOUND,
            "not_found",
        )
        .await;
    }
}

fn urlencode(value: &str) -> String {
    value.replace('+', "%2B").replace(':', "%3A")
}
