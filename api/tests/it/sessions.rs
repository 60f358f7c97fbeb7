//! Sessions end at once (issue 12.4 and 12.14): logout, a reused refresh token, "log out
//! everywhere", a password reset and disabling end the access tokens issued in the sessions
//! they end, not 15 minutes later; API keys are not sessions.

use crate::common;

use std::time::{Duration, Instant};

use common::{assert_problem, TestApp, PASSWORD};
use framegate_commands::sessions::{self, EndReason};
use framegate_domain::UserId;
use reqwest::StatusCode;
use serde_json::{json, Value};

/// (access token, refresh token) of a new login.
async fn login(app: &TestApp, email: &str) -> (String, String) {
    let response = app.login(email, PASSWORD).await;
    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response.json().await.expect("json");
    (
        body["access_token"].as_str().expect("access").to_owned(),
        body["refresh_token"].as_str().expect("refresh").to_owned(),
    )
}

/// How many sessions of `user` have not ended.
async fn live_sessions(app: &TestApp, user: uuid::Uuid) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM sessions WHERE user_id = $1 AND revoked_at IS NULL")
        .bind(user)
        .fetch_one(&app.db.pool)
        .await
        .expect("count")
}

/// Asserts that `token` is refused because its session has ended.
async fn assert_ended(app: &TestApp, token: &str) {
    assert_problem(
        me(app, token).await,
        StatusCode::UNAUTHORIZED,
        "session_ended",
    )
    .await;
}

async fn me(app: &TestApp, token: &str) -> reqwest::Response {
    app.get("/v1/me", Some(token)).await
}

async fn refresh(app: &TestApp, token: &str) -> reqwest::Response {
    app.post("/v1/auth/refresh", None, json!({"refresh_token": token}))
        .await
}

#[tokio::test]
async fn logout_ends_the_access_tokens_of_its_session_and_no_other() {
    let app = TestApp::spawn().await;
    let (_, access, refresh_token) = app.signed_in_user("ended@example.com").await;
    let (other_access, _) = login(&app, "ended@example.com").await;
    // Cached as live first: the logout must reach what this process remembers.
    assert_eq!(me(&app, &access).await.status(), StatusCode::OK);

    let out = app
        .post(
            "/v1/auth/logout",
            None,
            json!({"refresh_token": refresh_token}),
        )
        .await;
    assert_eq!(out.status(), StatusCode::NO_CONTENT);
    assert_ended(&app, &access).await;
    assert_eq!(
        me(&app, &other_access).await.status(),
        StatusCode::OK,
        "another login of the same user is another session"
    );
}

#[tokio::test]
async fn a_reused_refresh_token_ends_every_access_token_of_its_session() {
    let app = TestApp::spawn().await;
    let (_, first_access, first_refresh) = app.signed_in_user("reuse@example.com").await;
    let rotated: Value = refresh(&app, &first_refresh)
        .await
        .json()
        .await
        .expect("json");
    let second_access = rotated["access_token"].as_str().expect("access").to_owned();
    assert_eq!(me(&app, &second_access).await.status(), StatusCode::OK);

    // The thief (or the victim) presents the spent token: the session ends.
    assert_problem(
        refresh(&app, &first_refresh).await,
        StatusCode::UNAUTHORIZED,
        "refresh_token_reused",
    )
    .await;
    for access in [&first_access, &second_access] {
        assert_ended(&app, access).await;
    }
}

#[tokio::test]
async fn logout_all_ends_every_session_of_the_user_and_leaves_api_keys_and_others_alone() {
    let app = TestApp::spawn().await;
    let (_, phone, phone_refresh) = app.signed_in_user("everywhere@example.com").await;
    let (laptop, laptop_refresh) = login(&app, "everywhere@example.com").await;
    let (_, bystander, _) = app.signed_in_user("bystander@example.com").await;
    let key: Value = app
        .post("/v1/api-keys", Some(&phone), json!({"name": "ci"}))
        .await
        .json()
        .await
        .expect("json");
    let key = key["secret"].as_str().expect("secret").to_owned();

    let ended = app
        .post("/v1/auth/logout-all", Some(&laptop), json!({}))
        .await;
    assert_eq!(ended.status(), StatusCode::OK);
    let ended: Value = ended.json().await.expect("json");
    assert_eq!(ended["sessions_ended"], 2);

    for access in [&phone, &laptop] {
        assert_ended(&app, access).await;
    }
    for token in [&phone_refresh, &laptop_refresh] {
        assert_problem(
            refresh(&app, token).await,
            StatusCode::UNAUTHORIZED,
            "invalid_refresh_token",
        )
        .await;
    }
    assert_eq!(me(&app, &key).await.status(), StatusCode::OK, "API key");
    assert_eq!(me(&app, &bystander).await.status(), StatusCode::OK);
    // Logging in again starts a new session that works.
    let (again, _) = login(&app, "everywhere@example.com").await;
    assert_eq!(me(&app, &again).await.status(), StatusCode::OK);
    // Without credentials there is nothing to log out.
    assert_eq!(
        app.post("/v1/auth/logout-all", None, json!({}))
            .await
            .status(),
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test]
async fn a_password_reset_ends_every_access_token_and_mails_the_keys_that_survive_it() {
    let app = TestApp::spawn().await;
    let (_, access, _) = app.signed_in_user("victim@example.com").await;
    let (other, _) = login(&app, "victim@example.com").await;
    for name in ["deploy-bot", "old-laptop"] {
        let created = app
            .post("/v1/api-keys", Some(&access), json!({"name": name}))
            .await;
        assert_eq!(created.status(), StatusCode::CREATED);
    }
    let keys: Value = app
        .get("/v1/api-keys", Some(&access))
        .await
        .json()
        .await
        .expect("json");
    // Newest first: keep "old-laptop", revoke "deploy-bot".
    let kept = keys[0]["id"].as_str().expect("id").to_owned();
    let revoked = keys[1]["id"].as_str().expect("id").to_owned();
    let gone = app
        .request(
            reqwest::Method::DELETE,
            &format!("/v1/api-keys/{revoked}"),
            Some(&access),
            None,
        )
        .await;
    assert_eq!(gone.status(), StatusCode::NO_CONTENT);

    let asked = app
        .post(
            "/v1/auth/password-reset",
            None,
            json!({"email": "victim@example.com"}),
        )
        .await;
    assert_eq!(asked.status(), StatusCode::ACCEPTED);
    let token = app.mailed_token_about("victim@example.com", "Reset").await;
    let confirm = app
        .post(
            "/v1/auth/password-reset/confirm",
            None,
            json!({"token": token, "new_password": "an entirely new passphrase"}),
        )
        .await;
    assert_eq!(confirm.status(), StatusCode::NO_CONTENT);

    for token in [&access, &other] {
        assert_ended(&app, token).await;
    }
    let mail = app
        .mail_to("victim@example.com", "Your password was reset")
        .await;
    assert!(mail.body.contains("old-laptop"), "{}", mail.body);
    assert!(!mail.body.contains("deploy-bot"), "{}", mail.body);
    assert!(mail.body.contains(&kept), "{}", mail.body);
    assert!(
        mail.body
            .contains(&format!("DELETE {}/v1/api-keys/{kept}", app.url(""))),
        "{}",
        mail.body
    );
    assert!(
        !mail.body.contains(&revoked),
        "a revoked key is listed: {}",
        mail.body
    );
}

#[tokio::test]
async fn disabling_a_user_ends_their_sessions() {
    let app = TestApp::spawn().await;
    let (_, admin) = app.admin("root@example.com").await;
    let (user, access, refresh_token) = app.signed_in_user("banned@example.com").await;
    let disabled = app
        .post(
            &format!("/v1/admin/users/{user}/disable"),
            Some(&admin),
            json!({"reason": "abuse"}),
        )
        .await;
    assert_eq!(disabled.status(), StatusCode::OK);
    // The account's state is the better answer for its own tokens.
    assert_problem(
        me(&app, &access).await,
        StatusCode::UNAUTHORIZED,
        "account_disabled",
    )
    .await;
    assert_eq!(live_sessions(&app, user).await, 0);
    assert_problem(
        refresh(&app, &refresh_token).await,
        StatusCode::UNAUTHORIZED,
        "invalid_refresh_token",
    )
    .await;
}

#[tokio::test]
async fn a_session_ended_by_another_process_is_refused_here_within_a_second() {
    let app = TestApp::spawn().await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while !app.state.credentials.is_live() {
        assert!(Instant::now() < deadline, "the listener never subscribed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (user, access, _) = app.signed_in_user("remote@example.com").await;
    assert_eq!(me(&app, &access).await.status(), StatusCode::OK);
    assert!(
        app.state.credentials.session_count() > 0,
        "the live session was not cached, so this test would prove nothing"
    );

    // Another API process ends the session: only its announcement reaches this one.
    let mut tx = app.db.pool.begin().await.expect("begin");
    let ended = sessions::end_all(&mut tx, UserId::from_uuid(user), EndReason::LogoutAll)
        .await
        .expect("end");
    tx.commit().await.expect("commit");
    assert_eq!(ended, 1);

    let deadline = Instant::now() + Duration::from_secs(1);
    loop {
        let status = me(&app, &access).await.status();
        if status == StatusCode::UNAUTHORIZED {
            break;
        }
        assert!(Instant::now() < deadline, "still {status} after a second");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// `claims` signed with the app's own key.
fn signed(app: &TestApp, claims: &Value) -> String {
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        claims,
        &jsonwebtoken::EncodingKey::from_secret(app.state.config.jwt_secret.expose()),
    )
    .expect("sign")
}

#[tokio::test]
async fn an_access_token_without_a_session_is_not_ours() {
    let app = TestApp::spawn().await;
    let (user, _, _) = app.signed_in_user("sessionless@example.com").await;
    // Signed with our key, but naming no session (as tokens before sessions did).
    let now = chrono::Utc::now().timestamp();
    let claims = json!({
        "iss": app.state.config.jwt_issuer, "aud": app.state.config.jwt_audience,
        "sub": user.to_string(), "role": "user", "iat": now, "exp": now + 600,
        "jti": uuid::Uuid::now_v7(),
    });
    assert_problem(
        me(&app, &signed(&app, &claims)).await,
        StatusCode::UNAUTHORIZED,
        "invalid_token",
    )
    .await;
    // A session id of another user's session is refused too.
    let (_, _, _) = app.signed_in_user("someone@example.com").await;
    let other: uuid::Uuid =
        sqlx::query_scalar("SELECT session_id FROM sessions WHERE user_id <> $1 LIMIT 1")
            .bind(user)
            .fetch_one(&app.db.pool)
            .await
            .expect("session");
    let mut claims = claims;
    claims["sid"] = json!(other);
    assert_problem(
        me(&app, &signed(&app, &claims)).await,
        StatusCode::UNAUTHORIZED,
        "invalid_token",
    )
    .await;
}

#[tokio::test]
async fn a_login_that_overlapped_a_session_ending_change_starts_no_session() {
    let app = TestApp::spawn().await;
    let (user, _, _) = app.signed_in_user("overlap@example.com").await;
    let user_id = UserId::from_uuid(user);
    let ttl = app.state.config.refresh_ttl;
    // The login has checked the password against the stream at this sequence ...
    let (_, checked_at) = app
        .state
        .store
        .users()
        .replay(&user.to_string())
        .await
        .expect("replay");
    // ... when a change that ends every session lands (as a reset or a disable does).
    let meta = framegate_commands::CommandMetadata::new_request(framegate_commands::Actor::System);
    let ended = sessions::execute_ending_sessions(
        &app.state.store,
        user_id,
        framegate_domain::UserCommand::Disable {
            reason: "overlap".to_owned(),
        },
        EndReason::Disabled,
        &meta,
        None,
    )
    .await
    .expect("disable");
    assert_eq!(ended, 1, "the session of signed_in_user");
    let late = framegate_api::auth::refresh::start_session(&app.db.pool, user_id, checked_at, ttl)
        .await
        .expect("start");
    assert!(
        late.is_none(),
        "a session outlived the change it overlapped"
    );

    // Checked against the stream as it is now, a session starts.
    let (_, now) = app
        .state
        .store
        .users()
        .replay(&user.to_string())
        .await
        .expect("replay");
    assert!(now > checked_at);
    let fresh = framegate_api::auth::refresh::start_session(&app.db.pool, user_id, now, ttl)
        .await
        .expect("start");
    assert!(fresh.is_some());
}

#[tokio::test]
async fn sessions_whose_refresh_tokens_expired_end_and_old_ended_ones_are_pruned() {
    let app = TestApp::spawn().await;
    let (user, access, _) = app.signed_in_user("stale@example.com").await;
    let (_, other_refresh) = login(&app, "stale@example.com").await;
    // The first login's refresh token expired two days ago (a 30-day-old login); the second
    // ended by logout three days ago.
    sqlx::query(
        "UPDATE refresh_tokens SET expires_at = now() - interval '2 days'
          WHERE family_id = (SELECT session_id FROM sessions WHERE user_id = $1
                              ORDER BY created_at LIMIT 1)",
    )
    .bind(user)
    .execute(&app.db.pool)
    .await
    .expect("age");
    sqlx::query("UPDATE sessions SET created_at = now() - interval '31 days' WHERE user_id = $1")
        .bind(user)
        .execute(&app.db.pool)
        .await
        .expect("age");
    let out = app
        .post(
            "/v1/auth/logout",
            None,
            json!({"refresh_token": other_refresh}),
        )
        .await;
    assert_eq!(out.status(), StatusCode::NO_CONTENT);
    sqlx::query(
        "UPDATE sessions SET revoked_at = now() - interval '3 days' WHERE revoked_reason = 'logout'",
    )
    .execute(&app.db.pool)
    .await
    .expect("age");

    let pruned = framegate_api::auth::refresh::prune(&app.db.pool, app.state.config.access_ttl)
        .await
        .expect("prune");
    // The expired token goes and its session ends; the logged-out session keeps its
    // (unexpired) token, so it stays until that token is gone too.
    assert_eq!((pruned.tokens, pruned.expired, pruned.sessions), (1, 1, 0));
    app.state.credentials.forget_user(user);
    assert_ended(&app, &access).await;
    assert_eq!(live_sessions(&app, user).await, 0);

    // Once no token names it, an ended session a day old goes.
    sqlx::query("DELETE FROM refresh_tokens")
        .execute(&app.db.pool)
        .await
        .expect("tokens");
    let pruned = framegate_api::auth::refresh::prune(&app.db.pool, app.state.config.access_ttl)
        .await
        .expect("prune");
    assert_eq!(pruned.sessions, 1, "{pruned:?}");
}
