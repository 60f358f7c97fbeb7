//! Accounts, sessions, API keys and credits through the real router and real Postgres.

use crate::common;

use common::{assert_problem, TestApp, PASSWORD};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

#[tokio::test]
async fn register_verify_login_refresh_api_key_and_credits_work_end_to_end() {
    let app = TestApp::spawn().await;
    let user_id = app.register("Ada@Example.com").await;

    // Not verified yet; the verification token arrives by mail.
    let token = app.mailed_token("ada@example.com").await;
    let verified: Value = app
        .post("/v1/auth/verify-email", None, json!({"token": token}))
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(verified["email_verified"], true);
    assert_eq!(verified["email"], "ada@example.com");
    // Single use.
    let again = app
        .post("/v1/auth/verify-email", None, json!({"token": token}))
        .await;
    assert_problem(again, StatusCode::UNPROCESSABLE_ENTITY, "already_verified").await;

    let login = app.login("ada@example.com", PASSWORD).await;
    assert_eq!(login.status(), StatusCode::OK);
    let tokens: Value = login.json().await.expect("json");
    assert_eq!(tokens["token_type"], "Bearer");
    assert_eq!(tokens["expires_in"], 900);
    let access = tokens["access_token"].as_str().expect("access");

    let me: Value = app
        .get("/v1/me", Some(access))
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(me["id"], user_id.to_string());
    assert_eq!(me["role"], "user");

    // Refresh rotates: a new pair, and the new access token works.
    let refreshed: Value = app
        .post(
            "/v1/auth/refresh",
            None,
            json!({"refresh_token": tokens["refresh_token"]}),
        )
        .await
        .json()
        .await
        .expect("json");
    assert_ne!(refreshed["refresh_token"], tokens["refresh_token"]);
    let access = refreshed["access_token"]
        .as_str()
        .expect("access")
        .to_owned();

    // The sign-up grant came with the verification, in its transaction (read-your-writes).
    let credits: Value = app
        .get("/v1/credits", Some(&access))
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(
        credits,
        json!({"balance": 100, "reserved": 0, "available": 100})
    );

    // An API key: the secret once, then it authenticates.
    let created = app
        .post(
            "/v1/api-keys",
            Some(&access),
            json!({"name": "ci", "scopes": ["credits:read"]}),
        )
        .await;
    assert_eq!(created.status(), StatusCode::CREATED);
    let key: Value = created.json().await.expect("json");
    let secret = key["secret"].as_str().expect("secret").to_owned();
    assert!(secret.starts_with("fg_"));
    assert!(secret.starts_with(key["prefix"].as_str().expect("prefix")));
    let via_key: Value = app
        .get("/v1/credits", Some(&secret))
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(via_key["available"], 100);
    let listed: Value = app
        .get("/v1/api-keys", Some(&access))
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(listed.as_array().map(Vec::len), Some(1));
    assert!(
        listed[0].get("secret").is_none(),
        "the list never shows secrets"
    );
    assert!(!listed.to_string().contains(&secret));

    let ledger: Value = app
        .get("/v1/credits/ledger", Some(&secret))
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(ledger["items"][0]["kind"], "granted");
    assert_eq!(ledger["items"][0]["balance_change"], 100);
    assert_eq!(ledger["items"][0]["reason"], "sign-up grant");

    // Revocation takes effect before the DELETE returns.
    let key_id = key["id"].as_str().expect("id");
    let revoked = app
        .request(
            Method::DELETE,
            &format!("/v1/api-keys/{key_id}"),
            Some(&access),
            None,
        )
        .await;
    assert_eq!(revoked.status(), StatusCode::NO_CONTENT);
    let rejected = app.get("/v1/credits", Some(&secret)).await;
    assert_problem(rejected, StatusCode::UNAUTHORIZED, "api_key_revoked").await;
}

#[tokio::test]
async fn presenting_a_rotated_refresh_token_revokes_the_whole_family() {
    let app = TestApp::spawn().await;
    let (_, _, first) = app.signed_in_user("grace@example.com").await;
    let second: Value = app
        .post("/v1/auth/refresh", None, json!({"refresh_token": first}))
        .await
        .json()
        .await
        .expect("json");
    let second = second["refresh_token"]
        .as_str()
        .expect("refresh")
        .to_owned();

    let replay = app
        .post("/v1/auth/refresh", None, json!({"refresh_token": first}))
        .await;
    assert_problem(replay, StatusCode::UNAUTHORIZED, "refresh_token_reused").await;
    // The legitimate successor died with the family.
    let successor = app
        .post("/v1/auth/refresh", None, json!({"refresh_token": second}))
        .await;
    assert_problem(successor, StatusCode::UNAUTHORIZED, "invalid_refresh_token").await;
    // Another login is a new family and works.
    assert_eq!(
        app.login("grace@example.com", PASSWORD).await.status(),
        StatusCode::OK
    );
}

#[tokio::test]
async fn logout_revokes_the_refresh_token() {
    let app = TestApp::spawn().await;
    let (_, _, refresh) = app.signed_in_user("linus@example.com").await;
    let out = app
        .post("/v1/auth/logout", None, json!({"refresh_token": refresh}))
        .await;
    assert_eq!(out.status(), StatusCode::NO_CONTENT);
    let after = app
        .post("/v1/auth/refresh", None, json!({"refresh_token": refresh}))
        .await;
    assert_problem(after, StatusCode::UNAUTHORIZED, "invalid_refresh_token").await;
    // Logging out twice is fine; a token that was never issued logs nothing out, and says so.
    let again = app
        .post("/v1/auth/logout", None, json!({"refresh_token": refresh}))
        .await;
    assert_eq!(again.status(), StatusCode::NO_CONTENT);
    let garbage = app
        .post("/v1/auth/logout", None, json!({"refresh_token": "garbage"}))
        .await;
    assert_problem(garbage, StatusCode::UNAUTHORIZED, "invalid_refresh_token").await;
}

#[tokio::test]
async fn unknown_email_and_wrong_password_get_the_same_answer() {
    let app = TestApp::spawn().await;
    app.register("known@example.com").await;
    let wrong = app
        .login("known@example.com", "not the password at all")
        .await;
    let wrong = assert_problem(wrong, StatusCode::UNAUTHORIZED, "invalid_credentials").await;
    let unknown = app.login("nobody@example.com", PASSWORD).await;
    let unknown = assert_problem(unknown, StatusCode::UNAUTHORIZED, "invalid_credentials").await;
    assert_eq!(wrong["detail"], unknown["detail"]);
}

#[tokio::test]
async fn twenty_concurrent_registrations_of_one_email_make_one_account() {
    let app = TestApp::spawn().await;
    let mut requests = Vec::new();
    for _ in 0..20 {
        requests.push(app.post(
            "/v1/auth/register",
            None,
            json!({"email": "race@example.com", "password": PASSWORD}),
        ));
    }
    let responses: Vec<StatusCode> = futures::future::join_all(requests)
        .await
        .iter()
        .map(reqwest::Response::status)
        .collect();
    let created = responses
        .iter()
        .filter(|s| **s == StatusCode::CREATED)
        .count();
    let conflicts = responses
        .iter()
        .filter(|s| **s == StatusCode::CONFLICT)
        .count();
    assert_eq!((created, conflicts), (1, 19), "{responses:?}");
}

#[tokio::test]
async fn password_reset_is_single_use_and_ends_every_session() {
    let app = TestApp::spawn().await;
    let (_, _, refresh) = app.signed_in_user("reset@example.com").await;
    let asked = app
        .post(
            "/v1/auth/password-reset",
            None,
            json!({"email": "reset@example.com"}),
        )
        .await;
    assert_eq!(asked.status(), StatusCode::ACCEPTED);
    // Unknown addresses get the same answer and no mail.
    let unknown = app
        .post(
            "/v1/auth/password-reset",
            None,
            json!({"email": "ghost@example.com"}),
        )
        .await;
    assert_eq!(unknown.status(), StatusCode::ACCEPTED);

    let token = app.mailed_token_about("reset@example.com", "Reset").await;
    let new_password = "a brand new passphrase";
    let confirm = app
        .post(
            "/v1/auth/password-reset/confirm",
            None,
            json!({"token": token, "new_password": new_password}),
        )
        .await;
    assert_eq!(confirm.status(), StatusCode::NO_CONTENT);
    let reuse = app
        .post(
            "/v1/auth/password-reset/confirm",
            None,
            json!({"token": token, "new_password": "yet another passphrase"}),
        )
        .await;
    // A spent token is just an invalid one: it says nothing about the account.
    assert_problem(reuse, StatusCode::UNPROCESSABLE_ENTITY, "invalid_token").await;

    assert_eq!(
        app.login("reset@example.com", PASSWORD).await.status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        app.login("reset@example.com", new_password).await.status(),
        StatusCode::OK
    );
    let old_session = app
        .post("/v1/auth/refresh", None, json!({"refresh_token": refresh}))
        .await;
    assert_problem(
        old_session,
        StatusCode::UNAUTHORIZED,
        "invalid_refresh_token",
    )
    .await;
}

#[tokio::test]
async fn health_reports_postgres_and_the_openapi_document_lists_the_endpoints() {
    let app = TestApp::spawn().await;
    let live = app.get("/health/live", None).await;
    assert_eq!(live.status(), StatusCode::OK);
    let ready: Value = app
        .get("/health/ready", None)
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(ready["status"], "ready");
    assert_eq!(ready["postgres"]["status"], "up");
    let doc: Value = app
        .get("/openapi.json", None)
        .await
        .json()
        .await
        .expect("json");
    assert!(doc["openapi"]
        .as_str()
        .is_some_and(|v| v.starts_with("3.1")));
    for path in [
        "/v1/auth/register",
        "/v1/auth/login",
        "/v1/api-keys/{id}",
        "/v1/credits/ledger",
        "/v1/admin/users/{id}/disable",
    ] {
        assert!(doc["paths"].get(path).is_some(), "{path} documented");
    }
    let docs = app.get("/docs", None).await;
    assert_eq!(docs.status(), StatusCode::OK);
    assert!(docs.text().await.expect("html").contains("/openapi.json"));
}

#[tokio::test]
async fn without_postgres_readiness_is_503_and_requests_get_dependency_unavailable() {
    use tower::ServiceExt as _;

    // A pool whose server is not there: port 1 refuses connections.
    let pool = sqlx::postgres::PgPoolOptions::new()
        .acquire_timeout(std::time::Duration::from_secs(2))
        .connect_lazy("postgres://postgres@127.0.0.1:1/framegate")
        .expect("lazy pool");
    let params = argon2::Params::new(1024, 1, 1, None).expect("params");
    let hasher =
        framegate_commands::passwords::PasswordHasher::with_params(params, 1).expect("hasher");
    let state = framegate_api::AppState::with_passwords(
        framegate_api::config::ApiConfig::development(),
        pool,
        hasher,
    )
    .expect("state");
    let router = framegate_api::router(state);
    let call = |request: axum::http::Request<axum::body::Body>| router.clone().oneshot(request);

    let ready = call(
        axum::http::Request::get("/health/ready")
            .body(axum::body::Body::empty())
            .expect("request"),
    )
    .await
    .expect("response");
    assert_eq!(ready.status(), StatusCode::SERVICE_UNAVAILABLE.as_u16());
    let body = http_body_util::BodyExt::collect(ready.into_body())
        .await
        .expect("body")
        .to_bytes();
    let ready: Value = serde_json::from_slice(&body).expect("json");
    assert_eq!(ready["status"], "unavailable");
    assert_eq!(ready["postgres"]["status"], "down");
    assert!(
        !ready.to_string().contains("127.0.0.1"),
        "connection details stay in the log: {ready}"
    );

    let login = call(
        axum::http::Request::post("/v1/auth/login")
            .header("content-type", "application/json")
            .body(axum::body::Body::from(
                json!({"email": "a@example.com", "password": PASSWORD}).to_string(),
            ))
            .expect("request"),
    )
    .await
    .expect("response");
    assert_eq!(login.status(), StatusCode::SERVICE_UNAVAILABLE.as_u16());
    let body = http_body_util::BodyExt::collect(login.into_body())
        .await
        .expect("body")
        .to_bytes();
    let problem: Value = serde_json::from_slice(&body).expect("problem json");
    assert_eq!(problem["code"], "dependency_unavailable");
}

#[tokio::test]
async fn account_writes_answer_from_their_own_transaction_with_the_projectors_stopped() {
    let app = TestApp::spawn().await;
    let (_, admin) = app.admin("root-stopped@example.com").await;
    app.stop_projectors().await;

    // Registration, verification and sign-in need the users row the registration wrote.
    let (user, token, _) = app.signed_in_user("inline@example.com").await;
    let me: Value = app
        .get("/v1/me", Some(&token))
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(me["email_verified"], true, "{me}");
    let credits: Value = app
        .get("/v1/credits", Some(&token))
        .await
        .json()
        .await
        .expect("json");
    let signup = credits["balance"].as_i64().expect("balance");

    // A new key works and is listed at once.
    let created = app
        .post("/v1/api-keys", Some(&token), json!({"name": "inline"}))
        .await;
    assert_eq!(created.status(), StatusCode::CREATED);
    assert!(created.headers().get("framegate-consistency").is_none());
    let key: Value = created.json().await.expect("json");
    let secret = key["secret"].as_str().expect("secret");
    assert_eq!(
        app.get("/v1/credits", Some(secret)).await.status(),
        StatusCode::OK
    );
    let keys: Value = app
        .get("/v1/api-keys", Some(&token))
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(keys.as_array().map(Vec::len), Some(1), "{keys}");

    // A grant shows in its own response and in the next read.
    let granted: Value = app
        .post(
            &format!("/v1/admin/users/{user}/credits"),
            Some(&admin),
            json!({"amount": 25, "reason": "inline"}),
        )
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(granted["balance"].as_i64(), Some(signup + 25), "{granted}");
    let credits: Value = app
        .get("/v1/credits", Some(&token))
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(credits["balance"].as_i64(), Some(signup + 25));

    let checkpoints: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM subscription_checkpoints c, events e
          WHERE c.name = 'read_model.users'
            AND e.aggregate_id = $1 AND e.event_type = 'UserRegistered'
            AND (c.last_tx_id, c.last_position) >= (e.tx_id, e.global_position)",
    )
    .bind(user.to_string())
    .fetch_one(&app.db.pool)
    .await
    .expect("checkpoint");
    assert_eq!(checkpoints, 0, "the users projector never saw this user");
}

#[tokio::test]
async fn a_taken_email_is_refused_before_any_password_is_hashed() {
    let app = TestApp::spawn().await;
    app.register("taken@example.com").await;
    let hashed = app.state.passwords.runs();
    let again = app
        .post(
            "/v1/auth/register",
            None,
            json!({"email": "Taken@Example.com", "password": PASSWORD}),
        )
        .await;
    assert_problem(again, StatusCode::CONFLICT, "email_taken").await;
    assert_eq!(
        app.state.passwords.runs(),
        hashed,
        "no argon2 work for an address that cannot register"
    );
}

async fn balance(app: &TestApp, token: &str) -> i64 {
    let credits: Value = app
        .get("/v1/credits", Some(token))
        .await
        .json()
        .await
        .expect("json");
    credits["balance"].as_i64().expect("balance")
}

async fn access_token(app: &TestApp, email: &str) -> String {
    let login: Value = app.login(email, PASSWORD).await.json().await.expect("json");
    login["access_token"].as_str().expect("access").to_owned()
}

#[tokio::test]
async fn scripted_sign_ups_farm_no_credits_until_an_address_is_verified() {
    let app = TestApp::spawn().await;
    let video = json!({"prompt": "free ride", "provider": "simulator", "duration_seconds": 4,
                       "aspect_ratio": "16:9", "resolution": "480p"});
    // A script registers addresses nobody reads and uses them at once.
    for n in 0..5 {
        let email = format!("farm{n}@example.com");
        let registered: Value = app
            .post(
                "/v1/auth/register",
                None,
                json!({"email": email, "password": PASSWORD}),
            )
            .await
            .json()
            .await
            .expect("json");
        assert_eq!(
            registered["signup_credits"],
            json!({"amount": 100, "granted_on": "verification", "granted": false}),
            "the answer says when the credits come"
        );
        let token = access_token(&app, &email).await;
        assert_eq!(balance(&app, &token).await, 0);
        let refused = app.post("/v1/videos", Some(&token), video.clone()).await;
        assert_problem(
            refused,
            StatusCode::PAYMENT_REQUIRED,
            "insufficient_credits",
        )
        .await;
    }

    // Verifying grants them, once.
    let token = app.mailed_token("farm0@example.com").await;
    let verify = || app.post("/v1/auth/verify-email", None, json!({"token": token}));
    assert_eq!(verify().await.status(), StatusCode::OK);
    assert_problem(
        verify().await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "already_verified",
    )
    .await;
    let access = access_token(&app, "farm0@example.com").await;
    assert_eq!(balance(&app, &access).await, 100);
    let grants: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM events WHERE aggregate_type = 'CreditAccount'
            AND event_type = 'CreditsGranted'",
    )
    .fetch_one(&app.db.pool)
    .await
    .expect("count");
    assert_eq!(grants, 1, "four unverified accounts got nothing");
}

#[tokio::test]
async fn an_account_granted_at_registration_gets_nothing_more_on_verifying() {
    use framegate_commands::{Actor, CommandMetadata};
    use framegate_domain::{CreditCommand, Credits};

    // Registration-time grants, as every deployment did before, and as `register` still does.
    let now = TestApp::with_config(|c| {
        c.signup_credits_on = framegate_api::config::SignupCreditsOn::Register;
    })
    .await;
    let registered: Value = now
        .post(
            "/v1/auth/register",
            None,
            json!({"email": "early@example.com", "password": PASSWORD}),
        )
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(registered["signup_credits"]["granted"], true);
    let token = access_token(&now, "early@example.com").await;
    assert_eq!(balance(&now, &token).await, 100);

    // An account granted the old way (before this policy existed) verifies under `verify`.
    let app = TestApp::spawn().await;
    let user = app.register("legacy@example.com").await;
    let legacy = CreditCommand::Grant {
        amount: Credits::new(100),
        reason: framegate_domain::SIGNUP_REASON.into(),
        granted_by: framegate_domain::SIGNUP_GRANTED_BY.into(),
    };
    app.state
        .store
        .credits()
        .execute(
            &user.to_string(),
            legacy,
            &CommandMetadata::new_request(Actor::System),
        )
        .await
        .expect("legacy grant");
    let token = app.mailed_token("legacy@example.com").await;
    let verified = app
        .post("/v1/auth/verify-email", None, json!({"token": token}))
        .await;
    assert_eq!(verified.status(), StatusCode::OK);
    let access = access_token(&app, "legacy@example.com").await;
    assert_eq!(balance(&app, &access).await, 100, "not 200");
}

#[tokio::test]
async fn a_password_may_hold_any_character_since_it_is_only_hashed() {
    let app = TestApp::spawn().await;
    // Accepted before control characters were refused elsewhere: it must keep working.
    let password = "tab\there and a bell \u{7}, still a password";
    let registered = app
        .post(
            "/v1/auth/register",
            None,
            json!({"email": "odd@example.com", "password": password}),
        )
        .await;
    assert_eq!(registered.status(), StatusCode::CREATED);
    let login = app.login("odd@example.com", password).await;
    assert_eq!(login.status(), StatusCode::OK);
    // Elsewhere a control character is still refused, naming the field.
    let refused = app
        .post(
            "/v1/auth/register",
            None,
            json!({"email": "odd\u{7}@example.com", "password": PASSWORD}),
        )
        .await;
    let problem = assert_problem(
        refused,
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation_failed",
    )
    .await;
    assert_eq!(problem["errors"][0]["field"], "email");
}
