//! The credential cache (`auth::cache`) through the real router: it answers while its
//! listener is subscribed, forgets a user when the projectors announce a change made by any
//! process, and stops answering as soon as its connection breaks.

mod common;

use std::time::{Duration, Instant};

use common::{assert_problem, TestApp};
use framegate_commands::{Actor, CommandMetadata};
use framegate_domain::{ApiKeyId, Role, UserCommand};
use framegate_projections::read_models::{wait_for, CREDENTIALS_CHANNEL, READ_MODELS};
use reqwest::StatusCode;
use serde_json::{json, Value};
use uuid::Uuid;

const PATIENCE: Duration = Duration::from_secs(10);

async fn live_app() -> TestApp {
    let app = TestApp::spawn().await;
    let deadline = Instant::now() + PATIENCE;
    while !app.state.credentials.is_live() {
        assert!(Instant::now() < deadline, "the listener never subscribed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    app
}

/// A signed-in user with an API key: (user id, access token, key id, key secret).
async fn user_with_key(app: &TestApp, email: &str) -> (Uuid, String, Uuid, String) {
    let (user, access, _) = app.signed_in_user(email).await;
    let key: Value = app
        .post("/v1/api-keys", Some(&access), json!({"name": "cache"}))
        .await
        .json()
        .await
        .expect("json");
    let key_id = key["id"].as_str().expect("id").parse().expect("uuid");
    (
        user,
        access,
        key_id,
        key["secret"].as_str().expect("secret").to_owned(),
    )
}

/// Asks with `credential` until the answer is the problem `code` (401), or fails.
async fn until_refused(app: &TestApp, path: &str, credential: &str, code: &str) {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let response = app.get(path, Some(credential)).await;
        if response.status() == StatusCode::UNAUTHORIZED {
            assert_problem(response, StatusCode::UNAUTHORIZED, code).await;
            return;
        }
        assert_eq!(response.status(), StatusCode::OK);
        assert!(Instant::now() < deadline, "{path} still answers 200");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Runs `command` on the user the way another API process (or the CLI) would: through the
/// event store, without touching this process's cache, then waits for the read models.
async fn elsewhere(app: &TestApp, user: Uuid, command: UserCommand) {
    let meta = CommandMetadata::new_request(Actor::System);
    let position = app
        .state
        .store
        .users()
        .execute(&user.to_string(), command, &meta)
        .await
        .expect("command")
        .expect("an event");
    let caught_up = wait_for(&app.db.pool, &READ_MODELS, position, PATIENCE)
        .await
        .expect("wait");
    assert!(caught_up);
}

#[tokio::test]
async fn a_cached_key_answers_until_an_announcement_says_otherwise() {
    let app = live_app().await;
    let (user, _, key_id, secret) = user_with_key(&app, "cached@example.com").await;
    let ok = app.get("/v1/credits", Some(&secret)).await;
    assert_eq!(ok.status(), StatusCode::OK);

    // The row goes without an announcement: the cache still vouches for the key, which
    // shows that requests are no longer reading it.
    sqlx::query("DELETE FROM api_keys WHERE id = $1")
        .bind(key_id)
        .execute(&app.db.pool)
        .await
        .expect("delete");
    let cached = app.get("/v1/credits", Some(&secret)).await;
    assert_eq!(cached.status(), StatusCode::OK);

    sqlx::query("SELECT pg_notify($1, $2)")
        .bind(CREDENTIALS_CHANNEL)
        .bind(user.to_string())
        .execute(&app.db.pool)
        .await
        .expect("notify");
    until_refused(&app, "/v1/credits", &secret, "invalid_api_key").await;
}

#[tokio::test]
async fn a_key_revoked_by_another_process_stops_working() {
    let app = live_app().await;
    let (user, _, key_id, secret) = user_with_key(&app, "elsewhere@example.com").await;
    let (_, _, _, other_secret) = user_with_key(&app, "bystander@example.com").await;
    assert_eq!(
        app.get("/v1/credits", Some(&secret)).await.status(),
        StatusCode::OK
    );
    assert_eq!(
        app.get("/v1/credits", Some(&other_secret)).await.status(),
        StatusCode::OK
    );

    let revoke = UserCommand::RevokeApiKey {
        key_id: ApiKeyId::from_uuid(key_id),
    };
    elsewhere(&app, user, revoke).await;
    until_refused(&app, "/v1/credits", &secret, "api_key_revoked").await;
    // Only that user was forgotten.
    let owner_hash = framegate_domain::hash_token(&other_secret);
    assert!(app.state.credentials.key(owner_hash.as_str()).is_some());
}

#[tokio::test]
async fn a_user_disabled_or_promoted_elsewhere_is_seen_with_the_same_token() {
    let app = live_app().await;
    let (user, access, _, secret) = user_with_key(&app, "promoted@example.com").await;
    let forbidden = app.get("/v1/admin/users", Some(&access)).await;
    assert_problem(forbidden, StatusCode::FORBIDDEN, "forbidden").await;

    let promote = UserCommand::ChangeRole { role: Role::Admin };
    elsewhere(&app, user, promote).await;
    let deadline = Instant::now() + PATIENCE;
    while app.get("/v1/admin/users", Some(&access)).await.status() != StatusCode::OK {
        assert!(Instant::now() < deadline, "the promotion was never seen");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let disable = UserCommand::Disable {
        reason: "test".to_owned(),
    };
    elsewhere(&app, user, disable).await;
    until_refused(&app, "/v1/me", &access, "account_disabled").await;
    until_refused(&app, "/v1/credits", &secret, "api_key_revoked").await;
}

#[tokio::test]
async fn after_the_listener_connection_breaks_nothing_cached_before_is_served() {
    let app = live_app().await;
    let (_, _, key_id, secret) = user_with_key(&app, "outage@example.com").await;
    assert_eq!(
        app.get("/v1/credits", Some(&secret)).await.status(),
        StatusCode::OK
    );

    let terminated: Vec<bool> = sqlx::query_scalar(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
          WHERE datname = current_database() AND pid <> pg_backend_pid()
            AND query LIKE 'LISTEN %' || $1 || '%'",
    )
    .bind(CREDENTIALS_CHANNEL)
    .fetch_all(&app.db.pool)
    .await
    .expect("terminate");
    assert_eq!(terminated, vec![true], "one listener connection");

    // Whatever changes while the listener is away is not announced to it: the key must be
    // read afresh, not answered from before the outage.
    sqlx::query("DELETE FROM api_keys WHERE id = $1")
        .bind(key_id)
        .execute(&app.db.pool)
        .await
        .expect("delete");
    until_refused(&app, "/v1/credits", &secret, "invalid_api_key").await;

    let deadline = Instant::now() + PATIENCE;
    while !app.state.credentials.is_live() {
        assert!(Instant::now() < deadline, "the listener never came back");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A connection can die without closing (a partition, a frozen server): the listener must
/// notice that its heartbeats stop coming back and turn the cache off, then reconnect.
#[tokio::test]
async fn a_listener_connection_that_stops_delivering_turns_the_cache_off() {
    use std::sync::Arc;

    use framegate_api::auth::cache::{spawn_follower, CredentialCache};
    use framegate_commands::testing::TestDatabase;
    use framegate_projections::notify::Notifications;

    let db = TestDatabase::new().await;
    let cache = Arc::new(CredentialCache::default());
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let heartbeat = Duration::from_millis(100);
    let (notifications, _listening) =
        Notifications::spawn_with_heartbeat(db.pool.clone(), heartbeat, stopped.clone());
    spawn_follower(cache.clone(), &notifications, stopped);
    let until = |live: bool| {
        let cache = cache.clone();
        async move {
            let deadline = Instant::now() + PATIENCE;
            while cache.is_live() != live {
                assert!(
                    Instant::now() < deadline,
                    "the cache never became live={live}"
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    };
    until(true).await;

    let backend: i32 = sqlx::query_scalar(
        "SELECT pid FROM pg_stat_activity
          WHERE datname = current_database() AND pid <> pg_backend_pid()
            AND query LIKE 'LISTEN %' || $1 || '%'",
    )
    .bind(CREDENTIALS_CHANNEL)
    .fetch_one(&db.pool)
    .await
    .expect("the listener's backend");
    let signal = |name: &str| {
        let status = std::process::Command::new("kill")
            .args([name, &backend.to_string()])
            .status()
            .expect("kill");
        assert!(status.success(), "kill {name} {backend}");
    };
    /// Thaws the backend however the test ends, so its database can be dropped.
    struct Thaw(i32);
    impl Drop for Thaw {
        fn drop(&mut self) {
            let _ = std::process::Command::new("kill")
                .args(["-CONT", &self.0.to_string()])
                .status();
        }
    }
    // Frozen, not closed: the socket stays open and simply goes quiet.
    signal("-STOP");
    let thaw = Thaw(backend);
    until(false).await;
    drop(thaw);
    until(true).await;
    let _ = stop.send(true);
}
