//! The right to erasure through the real router: `DELETE /v1/me` with the password and
//! `POST /v1/admin/users/{id}/erase`; afterwards a dump of the whole database holds none of the
//! user's email, IP address, user agent or prompts (ADR 0043).

use crate::common;

use axum::body::Bytes;
use common::{assert_problem, TestApp, PASSWORD};
use framegate_commands::blobs::{video_keys, BlobKey};
use framegate_domain::VideoId;
use framegate_projections::Subscription;
use framegate_workers::erasure_cleanup::{self, ErasureCleanup};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

const IP: &str = "203.0.113.77";
const AGENT: &str = "erasure-test-agent/3.1";
const PROMPT: &str = "a lighthouse keeper named Quillon Vantablack";
const NEGATIVE: &str = "no fog over Zephyrine Bay";

/// An app that takes the client address from `X-Forwarded-For` (the test is the proxy).
pub(crate) async fn app() -> TestApp {
    TestApp::with_config(|c| c.proxies = "127.0.0.1/32".parse().expect("networks")).await
}

/// `DELETE /v1/me` with `password`.
pub(crate) async fn delete_me(app: &TestApp, access: &str, password: &str) -> reqwest::Response {
    send(
        app,
        Method::DELETE,
        "/v1/me",
        Some(access),
        json!({"password": password}),
    )
    .await
}

async fn send(
    app: &TestApp,
    method: Method,
    path: &str,
    token: Option<&str>,
    body: Value,
) -> reqwest::Response {
    let mut request = app
        .client
        .request(method, app.url(path))
        .header("x-forwarded-for", IP)
        .header("user-agent", AGENT)
        // Stored responses hold what was asked and answered: they go with the erasure too.
        .header("idempotency-key", uuid::Uuid::new_v4().to_string())
        .json(&body);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    request.send().await.expect("request")
}

/// A user who signed up, logged in and asked for a video, all from [`IP`] with [`AGENT`];
/// returns (id, access token).
pub(crate) async fn user_with_a_video(app: &TestApp, email: &str) -> (uuid::Uuid, String) {
    let registered = send(
        app,
        Method::POST,
        "/v1/auth/register",
        None,
        json!({"email": email, "password": PASSWORD}),
    )
    .await;
    assert_eq!(registered.status(), StatusCode::CREATED);
    let id = registered.json::<Value>().await.expect("json")["id"]
        .as_str()
        .expect("id")
        .parse()
        .expect("uuid");
    let token = app.mailed_token(email).await;
    let verified = send(
        app,
        Method::POST,
        "/v1/auth/verify-email",
        None,
        json!({"token": token}),
    )
    .await;
    assert_eq!(verified.status(), StatusCode::OK);
    let login: Value = send(
        app,
        Method::POST,
        "/v1/auth/login",
        None,
        json!({"email": email, "password": PASSWORD}),
    )
    .await
    .json()
    .await
    .expect("json");
    let access = login["access_token"].as_str().expect("access").to_owned();
    let video = send(
        app,
        Method::POST,
        "/v1/videos",
        Some(&access),
        json!({"prompt": PROMPT, "negative_prompt": NEGATIVE, "provider": "simulator",
               "duration_seconds": 5, "aspect_ratio": "16:9", "resolution": "720p"}),
    )
    .await;
    assert_eq!(video.status(), StatusCode::CREATED);
    (id, access)
}

/// `pg_dump` of the test's whole database, as text.
fn dump(app: &TestApp) -> String {
    let output =
        std::process::Command::new(std::env::var("PG_DUMP").unwrap_or_else(|_| "pg_dump".into()))
            .arg("--no-owner")
            // libpq refuses sqlx's own URL parameters.
            .arg(app.db.url().split('?').next().expect("a URL"))
            .output()
            .expect("pg_dump runs");
    assert!(
        output.status.success(),
        "pg_dump: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).expect("utf-8 dump")
}

/// The lines of `dump` holding any of the user's personal data.
fn personal_data_in(dump: &str, email: &str) -> Vec<String> {
    let needles = [email, IP, AGENT, "Quillon", "Zephyrine"];
    dump.lines()
        .filter(|line| needles.iter().any(|needle| line.contains(needle)))
        .map(str::to_owned)
        .collect()
}

#[tokio::test]
async fn after_deleting_oneself_a_dump_of_the_database_holds_no_personal_data() {
    let app = app().await;
    let email = "erase-me@example.com";
    let (id, access) = user_with_a_video(&app, email).await;
    // The read models hold it in clear until the erasure (so this test can fail).
    assert!(!personal_data_in(&dump(&app), email).is_empty());

    let wrong = delete_me(&app, &access, "not it").await;
    let problem =
        assert_problem(wrong, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed").await;
    assert_eq!(problem["errors"][0]["code"], "invalid_password");
    let erased = delete_me(&app, &access, PASSWORD).await;
    assert_eq!(erased.status(), StatusCode::NO_CONTENT);

    let left = personal_data_in(&dump(&app), email);
    assert!(left.is_empty(), "still in the dump: {left:?}");
    // The token died with the account; the address logs in to nothing and registers anew.
    let me = app.get("/v1/me", Some(&access)).await;
    assert!(me.status().is_client_error(), "{}", me.status());
    let login = app.login(email, PASSWORD).await;
    assert_problem(login, StatusCode::UNAUTHORIZED, "invalid_credentials").await;
    let again = app.register(email).await;
    assert_ne!(again, id);
}

#[tokio::test]
async fn an_admin_erasure_is_audited_and_the_history_reads_erased() {
    let app = app().await;
    let email = "erased-by-admin@example.com";
    let (id, _) = user_with_a_video(&app, email).await;
    let (admin, admin_token) = app.admin("root@example.com").await;
    let erased = app
        .post(
            &format!("/v1/admin/users/{id}/erase"),
            Some(&admin_token),
            json!({}),
        )
        .await;
    assert_eq!(erased.status(), StatusCode::OK);
    let user: Value = erased.json().await.expect("json");
    assert_eq!(user["email"], "[erased]");
    let again = app
        .post(
            &format!("/v1/admin/users/{id}/erase"),
            Some(&admin_token),
            json!({}),
        )
        .await;
    assert_problem(again, StatusCode::UNPROCESSABLE_ENTITY, "already_erased").await;

    let history: Value = app
        .get(&format!("/v1/admin/events/user/{id}"), Some(&admin_token))
        .await
        .json()
        .await
        .expect("json");
    let items = history["events"].as_array().expect("events");
    let registered = &items[0];
    assert_eq!(registered["payload"]["UserRegistered"]["email"], "[erased]");
    assert_eq!(registered["client_ip"], "[erased]");
    let last = items.last().expect("erasure");
    assert_eq!(last["event_type"], "UserErased");
    assert_eq!(last["payload"]["UserErased"]["by"], "admin");
    assert_eq!(last["actor"], format!("user:{admin}"));
    let left = personal_data_in(&dump(&app), email);
    assert!(left.is_empty(), "still in the dump: {left:?}");
}

#[tokio::test]
async fn an_admin_cannot_erase_itself_or_another_admin_through_the_admin_door() {
    let app = app().await;
    let (admin, admin_token) = app.admin("root@example.com").await;
    let (other, _) = app.admin("second@example.com").await;
    let own = app
        .post(
            &format!("/v1/admin/users/{admin}/erase"),
            Some(&admin_token),
            json!({}),
        )
        .await;
    assert_problem(own, StatusCode::CONFLICT, "erase_yourself").await;
    let peer = app
        .post(
            &format!("/v1/admin/users/{other}/erase"),
            Some(&admin_token),
            json!({}),
        )
        .await;
    assert_problem(peer, StatusCode::CONFLICT, "admin_account").await;
    // Neither was erased.
    let erased: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM events WHERE event_type = 'UserErased'
            OR (aggregate_type = 'User' AND aggregate_id = ANY($1) AND event_type = 'UserDisabled')",
    )
    .bind(vec![admin.to_string(), other.to_string()])
    .fetch_one(&app.db.pool)
    .await
    .expect("events");
    assert_eq!(erased, 0);
}

#[tokio::test]
async fn wrong_passwords_on_delete_me_are_throttled_like_failed_logins() {
    let app = TestApp::with_config(|c| {
        c.proxies = "127.0.0.1/32".parse().expect("networks");
        c.rate.login_per_minute = 5;
    })
    .await;
    let (_, access) = user_with_a_video(&app, "guessed@example.com").await;
    let mut statuses = Vec::new();
    for _ in 0..10 {
        let wrong = delete_me(&app, &access, "a guess").await;
        statuses.push(wrong.status());
        if wrong.status() == StatusCode::TOO_MANY_REQUESTS {
            break;
        }
    }
    assert_eq!(
        statuses.last(),
        Some(&StatusCode::TOO_MANY_REQUESTS),
        "{statuses:?}"
    );
    assert!(statuses[..statuses.len() - 1]
        .iter()
        .all(|s| *s == StatusCode::UNPROCESSABLE_ENTITY));
    let erased: i64 =
        sqlx::query_scalar("SELECT count(*) FROM events WHERE event_type = 'UserErased'")
            .fetch_one(&app.db.pool)
            .await
            .expect("events");
    assert_eq!(erased, 0);
}

/// Runs the erasure's blob cleanup (a worker subscription) over everything committed so far.
pub(crate) async fn clean_up(app: &TestApp) {
    Subscription::new(erasure_cleanup::SUBSCRIPTION, app.db.pool.clone())
        .drain(&ErasureCleanup::new(
            app.state.blobs.clone(),
            app.state.store.clone(),
        ))
        .await
        .expect("cleanup drains");
}

#[tokio::test]
async fn an_erased_users_files_are_deleted_and_their_videos_and_credits_stay_as_facts() {
    files_are_deleted_and_facts_stay(&app().await).await;
}

/// A user's video files and image upload are in `app`'s blob store; after `DELETE /v1/me`
/// and the cleanup none is, while the video and ledger rows stay.
pub(crate) async fn files_are_deleted_and_facts_stay(app: &TestApp) {
    let (id, access) = user_with_a_video(app, "files@example.com").await;
    let part = reqwest::multipart::Part::bytes(common::pictures::png(600, 400))
        .file_name("me.png")
        .mime_str("image/png")
        .expect("mime");
    let uploaded = app
        .client
        .post(app.url("/v1/images"))
        .bearer_auth(&access)
        .multipart(reqwest::multipart::Form::new().part("file", part))
        .send()
        .await
        .expect("upload");
    assert_eq!(uploaded.status(), StatusCode::CREATED);
    let (original, thumbnail): (String, String) =
        sqlx::query_as("SELECT blob_key, thumbnail_key FROM images WHERE owner_id = $1")
            .bind(id)
            .fetch_one(&app.db.pool)
            .await
            .expect("image row");
    // The video's files, as a finished video has them.
    let video: uuid::Uuid = sqlx::query_scalar("SELECT id FROM videos WHERE owner_id = $1")
        .bind(id)
        .fetch_one(&app.db.pool)
        .await
        .expect("video row");
    let keys = video_keys(VideoId::from_uuid(video)).expect("keys");
    let mut files = vec![keys.video, keys.poster, keys.thumbnail];
    for key in &files {
        app.state
            .blobs
            .put(
                key,
                Bytes::from_static(b"frames"),
                "application/octet-stream",
            )
            .await
            .expect("put");
    }
    files.push(BlobKey::new(original).expect("key"));
    files.push(BlobKey::new(thumbnail).expect("key"));
    for key in &files {
        assert!(
            app.state.blobs.head(key).await.expect("head").is_some(),
            "{key:?} stored"
        );
    }

    let erased = delete_me(app, &access, PASSWORD).await;
    assert_eq!(erased.status(), StatusCode::NO_CONTENT);
    clean_up(app).await;

    for key in &files {
        assert_eq!(
            app.state.blobs.head(key).await.expect("head"),
            None,
            "{key:?} deleted"
        );
    }
    let (videos, ledger): (i64, i64) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM videos WHERE owner_id = $1),
                (SELECT count(*) FROM credit_ledger WHERE user_id = $1)",
    )
    .bind(id)
    .fetch_one(&app.db.pool)
    .await
    .expect("facts");
    assert_eq!(videos, 1, "the video stays");
    assert!(
        ledger >= 2,
        "the sign-up grant and the reservation stay: {ledger}"
    );
}
