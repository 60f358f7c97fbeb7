//! The credential cache (`auth::cache`) through the real router: it answers while its
//! listener is subscribed, forgets a user when the projectors announce a change made by any
//! process, and stops answering as soon as its connection breaks.

use crate::common;

use std::time::{Duration, Instant};

use common::{assert_problem, TestApp};
use framegate_commands::{Actor, CommandMetadata};
use framegate_domain::{ApiKeyId, Role, UserCommand};
use framegate_projections::read_models::CREDENTIALS_CHANNEL;
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

/// Runs `command` on the user the way another API process (or the CLI) would: through the
/// event store, without touching this process's cache. The read models are written inline,
/// so nothing waits for a projector; this process learns of the change from the
/// announcement alone.
async fn elsewhere(app: &TestApp, user: Uuid, command: UserCommand) {
    let meta = CommandMetadata::new_request(Actor::System);
    app.state
        .store
        .users()
        .execute(&user.to_string(), command, &meta)
        .await
        .expect("command")
        .expect("an event");
}

/// Asks with `credential` until the answer is the problem `code` (401) and returns how long
/// that took; fails after `within`.
async fn refused_within(
    app: &TestApp,
    path: &str,
    credential: &str,
    code: &str,
    within: Duration,
) -> Duration {
    let started = Instant::now();
    loop {
        let response = app.get(path, Some(credential)).await;
        if response.status() == StatusCode::UNAUTHORIZED {
            assert_problem(response, StatusCode::UNAUTHORIZED, code).await;
            return started.elapsed();
        }
        assert_eq!(response.status(), StatusCode::OK);
        assert!(
            started.elapsed() < within,
            "{path} still answers 200 after {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn with_the_projectors_stopped_changes_made_here_apply_at_once() {
    let app = live_app().await;
    let (_, admin) = app.admin("root@example.com").await;
    let (user, access, _, secret) = user_with_key(&app, "stopped@example.com").await;
    let (_, revoker_access, other_key, other_secret) =
        user_with_key(&app, "revoker@example.com").await;
    for credential in [&access, &secret, &other_secret] {
        assert_eq!(
            app.get("/v1/credits", Some(credential)).await.status(),
            StatusCode::OK,
            "cached before the projectors stop"
        );
    }
    app.stop_projectors().await;

    // A revoked key is refused by the very next request.
    let revoked = app
        .request(
            reqwest::Method::DELETE,
            &format!("/v1/api-keys/{other_key}"),
            Some(&revoker_access),
            None,
        )
        .await;
    assert_eq!(revoked.status(), StatusCode::NO_CONTENT);
    let refused = app.get("/v1/credits", Some(&other_secret)).await;
    assert_problem(refused, StatusCode::UNAUTHORIZED, "api_key_revoked").await;
    let keys: Value = app
        .get("/v1/api-keys", Some(&revoker_access))
        .await
        .json()
        .await
        .expect("json");
    assert!(
        keys[0]["revoked_at"].is_string(),
        "the list shows it: {keys}"
    );

    // A promotion lets the same token in at once.
    let promoted = app
        .post(
            &format!("/v1/admin/users/{user}/role"),
            Some(&admin),
            json!({"role": "admin"}),
        )
        .await;
    assert_eq!(promoted.status(), StatusCode::OK);
    let body: Value = promoted.json().await.expect("json");
    assert_eq!(body["role"], "admin", "the response shows it");
    assert_eq!(
        app.get("/v1/admin/users", Some(&access)).await.status(),
        StatusCode::OK
    );

    // Disabling shuts out the token and the key with the next request.
    let disabled = app
        .post(
            &format!("/v1/admin/users/{user}/disable"),
            Some(&admin),
            json!({"reason": "test"}),
        )
        .await;
    assert_eq!(disabled.status(), StatusCode::OK);
    let body: Value = disabled.json().await.expect("json");
    assert_eq!(body["disabled"], true, "the response shows it");
    let refused = app.get("/v1/me", Some(&access)).await;
    assert_problem(refused, StatusCode::UNAUTHORIZED, "account_disabled").await;
    let refused = app.get("/v1/credits", Some(&secret)).await;
    assert_problem(refused, StatusCode::UNAUTHORIZED, "api_key_revoked").await;
}

#[tokio::test]
async fn with_the_projectors_stopped_changes_made_elsewhere_apply_within_a_second() {
    let app = live_app().await;
    let (user, access, _, secret) = user_with_key(&app, "far@example.com").await;
    let (other, _, other_key, other_secret) = user_with_key(&app, "far-keys@example.com").await;
    for credential in [&access, &secret, &other_secret] {
        assert_eq!(
            app.get("/v1/credits", Some(credential)).await.status(),
            StatusCode::OK
        );
    }
    let forbidden = app.get("/v1/admin/users", Some(&access)).await;
    assert_problem(forbidden, StatusCode::FORBIDDEN, "forbidden").await;
    app.stop_projectors().await;
    let second = Duration::from_secs(1);

    let revoke = UserCommand::RevokeApiKey {
        key_id: ApiKeyId::from_uuid(other_key),
    };
    elsewhere(&app, other, revoke).await;
    refused_within(
        &app,
        "/v1/credits",
        &other_secret,
        "api_key_revoked",
        second,
    )
    .await;

    elsewhere(&app, user, UserCommand::ChangeRole { role: Role::Admin }).await;
    let started = Instant::now();
    while app.get("/v1/admin/users", Some(&access)).await.status() != StatusCode::OK {
        assert!(
            started.elapsed() < second,
            "the promotion took over a second"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    let disable = UserCommand::Disable {
        reason: "test".to_owned(),
    };
    elsewhere(&app, user, disable).await;
    refused_within(&app, "/v1/me", &access, "account_disabled", second).await;
    refused_within(&app, "/v1/credits", &secret, "api_key_revoked", second).await;
    // The projectors really were stopped: their checkpoints never moved past these events.
    let behind: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM events e
          WHERE e.aggregate_type = 'User' AND e.event_type = 'UserDisabled'
            AND NOT EXISTS (SELECT 1 FROM subscription_checkpoints c
                             WHERE c.name = 'read_model.users'
                               AND (c.last_tx_id, c.last_position) >= (e.tx_id, e.global_position))",
    )
    .fetch_one(&app.db.pool)
    .await
    .expect("behind");
    assert_eq!(behind, 1, "the users projector has not seen the disabling");
}

#[tokio::test]
async fn a_cached_key_answers_until_an_announcement_says_otherwise() {
    let app = live_app().await;
    let (user, _, key_id, secret) = user_with_key(&app, "cached@example.com").await;
    let ok = app.get("/v1/credits", Some(&secret)).await;
    assert_eq!(ok.status(), StatusCode::OK);

    // The row goes without an announcement: the cache still vouches for the key, which
    // shows that requests are no longer reading it. (The api_keys projector, which may
    // still be catching up on the key's events, is stopped first: it would put it back.)
    app.stop_projectors().await;
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
    refused_within(&app, "/v1/credits", &secret, "invalid_api_key", PATIENCE).await;
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
    // read afresh, not answered from before the outage. (Projectors stopped, as above.)
    app.stop_projectors().await;
    sqlx::query("DELETE FROM api_keys WHERE id = $1")
        .bind(key_id)
        .execute(&app.db.pool)
        .await
        .expect("delete");
    refused_within(&app, "/v1/credits", &secret, "invalid_api_key", PATIENCE).await;

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
