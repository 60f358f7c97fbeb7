//! Tokens, ownership, roles, rate limits, idempotency and error shapes.

use crate::common;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use common::{assert_problem, TestApp};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use uuid::Uuid;

/// Claims naming `sub` and its live session `sid`: only the signature, algorithm or expiry
/// can make them fail.
fn claims(sub: Uuid, sid: &Value, exp_offset: i64) -> Value {
    let now = chrono::Utc::now().timestamp();
    json!({"iss": "framegate", "aud": "framegate-api", "sub": sub.to_string(), "role": "admin",
           "iat": now, "exp": now + exp_offset, "jti": Uuid::now_v7(), "sid": sid})
}

/// The session id inside one of our access tokens.
fn session_of(access: &str) -> Value {
    let payload = access.split('.').nth(1).expect("payload");
    let claims: Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).expect("base64")).expect("json");
    claims["sid"].clone()
}

#[tokio::test]
async fn expired_forged_and_unsigned_tokens_are_rejected() {
    let app = TestApp::spawn().await;
    let (user, access, _) = app.signed_in_user("jwt@example.com").await;
    assert_eq!(
        app.get("/v1/me", Some(&access)).await.status(),
        StatusCode::OK
    );
    let secret = app.state.config.jwt_secret.expose().clone();
    let sid = session_of(&access);
    // Signed with our key and these claims, the token works: each case below fails for the
    // one thing it changes.
    let genuine = jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims(user, &sid, 600),
        &EncodingKey::from_secret(&secret),
    )
    .expect("encode");
    assert_eq!(
        app.get("/v1/me", Some(&genuine)).await.status(),
        StatusCode::OK
    );

    let expired = jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims(user, &sid, -120),
        &EncodingKey::from_secret(&secret),
    )
    .expect("encode");
    assert_problem(
        app.get("/v1/me", Some(&expired)).await,
        StatusCode::UNAUTHORIZED,
        "token_expired",
    )
    .await;

    let forged = jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims(user, &sid, 600),
        &EncodingKey::from_secret(b"someone else's secret, 32+ bytes long"),
    )
    .expect("encode");
    assert_problem(
        app.get("/v1/me", Some(&forged)).await,
        StatusCode::UNAUTHORIZED,
        "invalid_token",
    )
    .await;

    // Same secret, different algorithm: the algorithm is pinned.
    let other_alg = jsonwebtoken::encode(
        &Header::new(Algorithm::HS512),
        &claims(user, &sid, 600),
        &EncodingKey::from_secret(&secret),
    )
    .expect("encode");
    assert_problem(
        app.get("/v1/me", Some(&other_alg)).await,
        StatusCode::UNAUTHORIZED,
        "invalid_token",
    )
    .await;

    let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT"}"#);
    let payload = URL_SAFE_NO_PAD.encode(claims(user, &sid, 600).to_string());
    let unsigned = format!("{header}.{payload}.");
    assert_problem(
        app.get("/v1/me", Some(&unsigned)).await,
        StatusCode::UNAUTHORIZED,
        "invalid_token",
    )
    .await;

    let missing = app.get("/v1/me", None).await;
    assert!(missing.headers().contains_key("www-authenticate"));
    assert_problem(missing, StatusCode::UNAUTHORIZED, "unauthenticated").await;
    let garbage = app.get("/v1/me", Some("fg_not_a_real_key")).await;
    assert_problem(garbage, StatusCode::UNAUTHORIZED, "invalid_api_key").await;
}

#[tokio::test]
async fn a_user_cannot_see_or_change_anything_of_another_user() {
    let app = TestApp::spawn().await;
    let (_, alice, _) = app.signed_in_user("alice@example.com").await;
    let (bob_id, bob, _) = app.signed_in_user("bob@example.com").await;
    let bob_key: Value = app
        .post("/v1/api-keys", Some(&bob), json!({"name": "bob's"}))
        .await
        .json()
        .await
        .expect("json");
    let bob_key_id = bob_key["id"].as_str().expect("id");

    // Alice sees only her own keys and cannot revoke Bob's.
    let alice_keys: Value = app
        .get("/v1/api-keys", Some(&alice))
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(alice_keys, json!([]));
    let steal = app
        .request(
            Method::DELETE,
            &format!("/v1/api-keys/{bob_key_id}"),
            Some(&alice),
            None,
        )
        .await;
    assert_problem(steal, StatusCode::NOT_FOUND, "not_found").await;
    let still_works = app
        .get(
            "/v1/credits",
            Some(bob_key["secret"].as_str().expect("secret")),
        )
        .await;
    assert_eq!(still_works.status(), StatusCode::OK);

    // Admin endpoints are closed to users.
    for (method, path) in [
        (Method::GET, "/v1/admin/users".to_owned()),
        (Method::POST, format!("/v1/admin/users/{bob_id}/credits")),
        (Method::POST, format!("/v1/admin/users/{bob_id}/role")),
        (Method::POST, format!("/v1/admin/users/{bob_id}/disable")),
    ] {
        let body =
            (method == Method::POST).then(|| json!({"amount": 1, "reason": "x", "role": "admin"}));
        let response = app.request(method, &path, Some(&alice), body).await;
        assert_eq!(response.status(), StatusCode::FORBIDDEN, "{path}");
    }
    // Bob's ledger is his alone.
    let grant = app
        .state
        .store
        .credits()
        .execute(
            &bob_id.to_string(),
            framegate_domain::CreditCommand::Grant {
                amount: framegate_domain::Credits::new(7),
                reason: "bonus".into(),
                granted_by: "system".into(),
            },
            &framegate_commands::CommandMetadata::new_request(framegate_commands::Actor::System),
        )
        .await
        .expect("grant");
    assert!(grant.is_some());
    let alice_ledger: Value = app
        .get("/v1/credits/ledger", Some(&alice))
        .await
        .json()
        .await
        .expect("json");
    assert!(alice_ledger["items"]
        .as_array()
        .expect("items")
        .iter()
        .all(|e| e["reason"] != "bonus"));
}

#[tokio::test]
async fn admins_grant_credits_change_roles_and_disabling_cuts_off_tokens_and_keys() {
    let app = TestApp::spawn().await;
    let (_, admin) = app.admin("root@example.com").await;
    let (user_id, user_token, _) = app.signed_in_user("user@example.com").await;
    let key: Value = app
        .post("/v1/api-keys", Some(&user_token), json!({"name": "k"}))
        .await
        .json()
        .await
        .expect("json");
    let secret = key["secret"].as_str().expect("secret").to_owned();

    let granted: Value = app
        .post(
            &format!("/v1/admin/users/{user_id}/credits"),
            Some(&admin),
            json!({"amount": 50, "reason": "support ticket 42"}),
        )
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(granted["balance"], 150);
    let bad = app
        .post(
            &format!("/v1/admin/users/{user_id}/credits"),
            Some(&admin),
            json!({"amount": 0, "reason": "x"}),
        )
        .await;
    let bad = assert_problem(bad, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed").await;
    assert_eq!(bad["errors"][0]["field"], "amount");
    let missing = app
        .post(
            &format!("/v1/admin/users/{}/credits", Uuid::now_v7()),
            Some(&admin),
            json!({"amount": 5, "reason": "x"}),
        )
        .await;
    assert_problem(missing, StatusCode::NOT_FOUND, "not_found").await;

    let ledger: Value = app
        .get("/v1/credits/ledger", Some(&user_token))
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(ledger["items"][0]["reason"], "support ticket 42");
    assert!(ledger["items"][0]["actor"]
        .as_str()
        .expect("actor")
        .starts_with("user:"));

    let listed: Value = app
        .get("/v1/admin/users?limit=1", Some(&admin))
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(listed["items"].as_array().map(Vec::len), Some(1));
    let cursor = listed["next_cursor"].as_str().expect("cursor");
    let next: Value = app
        .get(
            &format!("/v1/admin/users?limit=1&cursor={cursor}"),
            Some(&admin),
        )
        .await
        .json()
        .await
        .expect("json");
    assert_ne!(next["items"][0]["id"], listed["items"][0]["id"]);

    let promoted: Value = app
        .post(
            &format!("/v1/admin/users/{user_id}/role"),
            Some(&admin),
            json!({"role": "admin"}),
        )
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(promoted["role"], "admin");
    let bad_role = app
        .post(
            &format!("/v1/admin/users/{user_id}/role"),
            Some(&admin),
            json!({"role": "superuser"}),
        )
        .await;
    assert_problem(
        bad_role,
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation_failed",
    )
    .await;

    let disabled: Value = app
        .post(
            &format!("/v1/admin/users/{user_id}/disable"),
            Some(&admin),
            json!({"reason": "abuse"}),
        )
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(disabled["disabled"], true);
    assert_problem(
        app.get("/v1/me", Some(&user_token)).await,
        StatusCode::UNAUTHORIZED,
        "account_disabled",
    )
    .await;
    let key_after = app.get("/v1/credits", Some(&secret)).await;
    assert_eq!(key_after.status(), StatusCode::UNAUTHORIZED);
    assert_problem(
        app.login("user@example.com", common::PASSWORD).await,
        StatusCode::FORBIDDEN,
        "account_disabled",
    )
    .await;
}

#[tokio::test]
async fn bad_requests_get_clear_problem_documents_never_500() {
    let app = TestApp::with_config(|c| c.body_limit = 4096).await;
    let url = app.url("/v1/auth/register");
    let malformed = app
        .client
        .post(&url)
        .header("content-type", "application/json")
        .body("{\"email\": ")
        .send()
        .await
        .expect("send");
    assert_problem(malformed, StatusCode::BAD_REQUEST, "malformed_json").await;
    let wrong_type = app
        .client
        .post(&url)
        .header("content-type", "text/plain")
        .body("{}")
        .send()
        .await
        .expect("send");
    assert_problem(
        wrong_type,
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported_media_type",
    )
    .await;
    let huge = json!({"email": "a@example.com", "password": "x".repeat(10_000)});
    let too_big = app
        .client
        .post(&url)
        .json(&huge)
        .send()
        .await
        .expect("send");
    assert_eq!(too_big.status(), StatusCode::PAYLOAD_TOO_LARGE);
    let unknown_field = app
        .post(
            "/v1/auth/register",
            None,
            json!({"email": "a@example.com", "password": "long enough pw", "admin": true}),
        )
        .await;
    let body = assert_problem(
        unknown_field,
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation_failed",
    )
    .await;
    assert!(
        body["detail"].as_str().expect("detail").contains("admin"),
        "{body}"
    );
    assert_eq!(
        body["errors"][0]["field"], "admin",
        "the field is named: {body}"
    );
    let short = app
        .post(
            "/v1/auth/register",
            None,
            json!({"email": "a@example.com", "password": "short"}),
        )
        .await;
    let body = assert_problem(short, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed").await;
    assert_eq!(body["errors"][0]["field"], "password");
    let bad_email = app
        .post(
            "/v1/auth/register",
            None,
            json!({"email": "nope", "password": "long enough pw"}),
        )
        .await;
    assert_problem(
        bad_email,
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation_failed",
    )
    .await;
    assert_problem(
        app.get("/v1/nowhere", None).await,
        StatusCode::NOT_FOUND,
        "not_found",
    )
    .await;
    let wrong_method = app
        .request(Method::PUT, "/v1/auth/login", None, Some(json!({})))
        .await;
    assert_problem(
        wrong_method,
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
    )
    .await;
    let bad_token = app
        .post("/v1/auth/verify-email", None, json!({"token": "garbage"}))
        .await;
    assert_problem(
        bad_token,
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation_failed",
    )
    .await;
    let bad_cursor = app.signed_in_user("cursor@example.com").await.1;
    let response = app
        .get("/v1/credits/ledger?cursor=xyz", Some(&bad_cursor))
        .await;
    assert_problem(
        response,
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation_failed",
    )
    .await;
}

#[tokio::test]
async fn an_idempotency_key_replays_the_first_response_and_refuses_a_different_body() {
    let app = TestApp::spawn().await;
    let (_, token, _) = app.signed_in_user("idem@example.com").await;
    let send = |body: Value| {
        app.client
            .post(app.url("/v1/api-keys"))
            .bearer_auth(&token)
            .header("Idempotency-Key", "create-key-1")
            .json(&body)
            .send()
    };
    let first = send(json!({"name": "deploy"})).await.expect("send");
    assert_eq!(first.status(), StatusCode::CREATED);
    let first: Value = first.json().await.expect("json");
    let second = send(json!({"name": "deploy"})).await.expect("send");
    assert_eq!(second.status(), StatusCode::CREATED);
    assert_eq!(
        second
            .headers()
            .get("idempotency-replayed")
            .and_then(|v| v.to_str().ok()),
        Some("true")
    );
    let second: Value = second.json().await.expect("json");
    assert_eq!(first, second, "the stored first response, secret included");
    // ... which the table keeps sealed: neither the secret nor any of the body is in clear.
    let secret = first["secret"].as_str().expect("secret");
    let stored: Vec<u8> =
        sqlx::query_scalar("SELECT response_body FROM idempotency_keys WHERE key = 'create-key-1'")
            .fetch_one(&app.db.pool)
            .await
            .expect("stored response");
    let stored_text = String::from_utf8_lossy(&stored);
    assert!(
        !stored_text.contains(secret),
        "the key's secret is stored in clear"
    );
    assert!(
        !stored_text.contains("deploy"),
        "the response is stored in clear"
    );
    // A record moved to another key does not open: the retry is refused, not replayed.
    sqlx::query(
        "INSERT INTO idempotency_keys (scope, key, request_hash, status_code, response_body,
                                       content_type, created_at)
         SELECT scope, 'create-key-2', request_hash, status_code, response_body, content_type,
                created_at
           FROM idempotency_keys WHERE key = 'create-key-1'",
    )
    .execute(&app.db.pool)
    .await
    .expect("copy");
    let moved = app
        .client
        .post(app.url("/v1/api-keys"))
        .bearer_auth(&token)
        .header("Idempotency-Key", "create-key-2")
        .json(&json!({"name": "deploy"}))
        .send()
        .await
        .expect("send");
    assert_problem(
        moved,
        StatusCode::CONFLICT,
        "idempotency_response_unavailable",
    )
    .await;
    let keys: Value = app
        .get("/v1/api-keys", Some(&token))
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(keys.as_array().map(Vec::len), Some(1), "created once");

    let different = send(json!({"name": "other"})).await.expect("send");
    assert_problem(
        different,
        StatusCode::UNPROCESSABLE_ENTITY,
        "idempotency_key_reused",
    )
    .await;
}

#[tokio::test]
async fn anonymous_callers_are_rate_limited_per_ip_with_retry_after() {
    let app = TestApp::with_config(|c| c.rate.anonymous_per_minute = 5).await;
    for n in 0..5 {
        let response = app.get("/health/live", None).await;
        assert_eq!(response.status(), StatusCode::OK, "request {n}");
        assert!(response.headers().contains_key("ratelimit-remaining"));
    }
    let limited = app.get("/health/live", None).await;
    let retry_after: u64 = limited
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .expect("Retry-After");
    assert!(retry_after >= 1);
    assert!(limited.headers().contains_key("ratelimit-limit"));
    assert_problem(limited, StatusCode::TOO_MANY_REQUESTS, "rate_limited").await;
}

#[tokio::test]
async fn junk_credentials_on_public_endpoints_count_against_the_ip() {
    let app = TestApp::with_config(|c| c.rate.anonymous_per_minute = 3).await;
    let register = |n: usize| {
        app.client
            .post(app.url("/v1/auth/register"))
            .bearer_auth("not-a-token")
            .json(&json!({"email": format!("flood{n}@example.com"), "password": common::PASSWORD}))
            .send()
    };
    for n in 0..3 {
        assert_eq!(
            register(n).await.expect("send").status(),
            StatusCode::CREATED
        );
    }
    let limited = register(3).await.expect("send");
    assert_problem(limited, StatusCode::TOO_MANY_REQUESTS, "rate_limited").await;
    let registered: i64 =
        sqlx::query_scalar("SELECT count(*) FROM events WHERE event_type = 'UserRegistered'")
            .fetch_one(&app.db.pool)
            .await
            .expect("count");
    assert_eq!(registered, 3, "the refused registration did not run");
}

#[tokio::test]
async fn a_valid_token_does_not_lift_the_ip_limit_on_sign_up() {
    let app = TestApp::with_config(|c| c.rate.anonymous_per_minute = 6).await;
    let (_, token, _) = app.signed_in_user("lender@example.com").await;
    let mut statuses = Vec::new();
    for n in 0..6 {
        let response = app
            .client
            .post(app.url("/v1/auth/register"))
            .bearer_auth(&token)
            .json(&json!({"email": format!("farm{n}@example.com"), "password": common::PASSWORD}))
            .send()
            .await
            .expect("send");
        statuses.push(response.status());
    }
    // Sign-in used three of the IP's six (register, verify, login); three more registrations
    // fit, the rest are refused although the token's own bucket has hundreds left.
    assert_eq!(
        statuses,
        [
            StatusCode::CREATED,
            StatusCode::CREATED,
            StatusCode::CREATED,
            StatusCode::TOO_MANY_REQUESTS,
            StatusCode::TOO_MANY_REQUESTS,
            StatusCode::TOO_MANY_REQUESTS,
        ]
    );
}

#[tokio::test]
async fn login_attempts_are_limited_per_account() {
    let app = TestApp::with_config(|c| c.rate.login_per_minute = 3).await;
    app.register("brute@example.com").await;
    for _ in 0..3 {
        let response = app.login("brute@example.com", "wrong password guess").await;
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    }
    let limited = app.login("brute@example.com", common::PASSWORD).await;
    assert_problem(limited, StatusCode::TOO_MANY_REQUESTS, "rate_limited").await;
}

#[tokio::test]
async fn an_api_key_can_do_only_what_its_scopes_allow_and_cannot_mint_a_wider_key() {
    let app = TestApp::spawn().await;
    let (_, token, _) = app.signed_in_user("scopes@example.com").await;
    let key = |scopes: Value| {
        let app = &app;
        let token = token.clone();
        async move {
            let created: Value = app
                .post(
                    "/v1/api-keys",
                    Some(&token),
                    json!({"name": "k", "scopes": scopes}),
                )
                .await
                .json()
                .await
                .expect("json");
            created["secret"].as_str().expect("secret").to_owned()
        }
    };
    let credits_only = key(json!(["credits:read"])).await;
    let videos_read = key(json!(["videos:read"])).await;
    let everything = key(json!([])).await;

    assert_eq!(
        app.get("/v1/credits", Some(&credits_only)).await.status(),
        StatusCode::OK
    );
    assert_eq!(
        app.get("/v1/me", Some(&credits_only)).await.status(),
        StatusCode::OK
    );
    assert_eq!(
        app.get("/v1/api-keys", Some(&credits_only)).await.status(),
        StatusCode::OK
    );
    let videos = app.get("/v1/videos", Some(&credits_only)).await;
    assert_problem(videos, StatusCode::FORBIDDEN, "insufficient_scope").await;
    let images = app.get("/v1/images", Some(&credits_only)).await;
    assert_problem(images, StatusCode::FORBIDDEN, "insufficient_scope").await;
    let wider = app
        .post(
            "/v1/api-keys",
            Some(&credits_only),
            json!({"name": "wider"}),
        )
        .await;
    assert_problem(wider, StatusCode::FORBIDDEN, "insufficient_scope").await;

    assert_eq!(
        app.get("/v1/videos", Some(&videos_read)).await.status(),
        StatusCode::OK
    );
    let request = app
        .post(
            "/v1/videos",
            Some(&videos_read),
            json!({"prompt": "a scope test", "provider": "simulator", "duration_seconds": 2}),
        )
        .await;
    assert_problem(request, StatusCode::FORBIDDEN, "insufficient_scope").await;
    let credits = app.get("/v1/credits", Some(&videos_read)).await;
    assert_problem(credits, StatusCode::FORBIDDEN, "insufficient_scope").await;

    // Nor can it fetch a key the session minted by replaying the session's Idempotency-Key.
    let mint = |credential: String| {
        app.client
            .post(app.url("/v1/api-keys"))
            .bearer_auth(credential)
            .header("Idempotency-Key", "mint-1")
            .json(&json!({"name": "deploy"}))
            .send()
    };
    let minted_by_session = mint(token.clone()).await.expect("send");
    assert_eq!(minted_by_session.status(), StatusCode::CREATED);
    let replayed = mint(credits_only.clone()).await.expect("send");
    let refused = assert_problem(replayed, StatusCode::FORBIDDEN, "insufficient_scope").await;
    assert!(refused.get("secret").is_none());

    // A key created without scopes holds them all, and may manage keys like a session.
    let minted = app
        .post("/v1/api-keys", Some(&everything), json!({"name": "minted"}))
        .await;
    assert_eq!(minted.status(), StatusCode::CREATED);
    let keys: Value = app
        .get("/v1/api-keys", Some(&token))
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(
        keys.as_array().map(Vec::len),
        Some(5),
        "the refused mints created nothing"
    );
}

#[tokio::test]
async fn a_path_or_query_that_does_not_parse_is_a_problem_naming_it() {
    let app = TestApp::spawn().await;
    let (_, token, _) = app.signed_in_user("parse@example.com").await;
    let path = app
        .request(
            Method::DELETE,
            "/v1/api-keys/not-a-uuid",
            Some(&token),
            None,
        )
        .await;
    let problem = assert_problem(path, StatusCode::BAD_REQUEST, "invalid_path").await;
    assert!(
        problem["detail"]
            .as_str()
            .is_some_and(|d| d.contains("UUID")),
        "{problem}"
    );
    let query = app.get("/v1/credits/ledger?limit=many", Some(&token)).await;
    let problem = assert_problem(query, StatusCode::BAD_REQUEST, "invalid_query").await;
    assert!(
        problem["detail"]
            .as_str()
            .is_some_and(|d| d.contains("limit")),
        "{problem}"
    );
    let video = app.get("/v1/videos/123", Some(&token)).await;
    assert_problem(video, StatusCode::BAD_REQUEST, "invalid_path").await;
}

#[tokio::test]
async fn ten_thousand_junk_api_keys_from_one_ip_cost_a_bounded_number_of_lookups() {
    let app = TestApp::with_config(|c| c.rate.key_lookups_per_minute = 20).await;
    let lookups = || app.state.credentials.key_lookups();
    let before = lookups();
    let started = std::time::Instant::now();
    use futures::StreamExt as _;
    let statuses: Vec<StatusCode> = futures::stream::iter(0..10_000)
        .map(|n| {
            let (client, url) = (app.client.clone(), app.url("/v1/credits"));
            async move {
                client
                    .get(url)
                    .bearer_auth(format!("fg_junk{n:0>40}"))
                    .send()
                    .await
                    .expect("send")
                    .status()
            }
        })
        .buffer_unordered(16)
        .collect()
        .await;
    // Each new key's lookup is charged to the IP's lookup budget before it is made: 20 a
    // minute, not 10,000 (the budget refills as the minute goes on, on a slow machine too).
    let refilled = (started.elapsed().as_secs_f64() / 60.0 * 20.0).ceil() as u64;
    assert!(
        lookups() - before <= 20 + refilled,
        "{} lookups for 10,000 junk keys in {:?}",
        lookups() - before,
        started.elapsed()
    );
    let limited = statuses
        .iter()
        .filter(|s| **s == StatusCode::TOO_MANY_REQUESTS)
        .count();
    assert!(
        limited as u64 >= 10_000 - 20 - refilled,
        "{limited} refused with 429"
    );
    assert!(statuses
        .iter()
        .all(|s| [StatusCode::UNAUTHORIZED, StatusCode::TOO_MANY_REQUESTS].contains(s)));

    // A junk key repeated is remembered: no further lookup, still 401 (not a 500, not a 200).
    let app = TestApp::with_config(|c| c.rate.key_lookups_per_minute = 1_000).await;
    let before = app.state.credentials.key_lookups();
    for _ in 0..50 {
        let response = app
            .client
            .get(app.url("/v1/credits"))
            .bearer_auth("fg_the_same_junk_key_every_time")
            .send()
            .await
            .expect("send");
        assert_problem(response, StatusCode::UNAUTHORIZED, "invalid_api_key").await;
    }
    assert_eq!(app.state.credentials.key_lookups() - before, 1);
}

#[tokio::test]
async fn a_key_named_twice_in_a_body_is_refused_naming_it() {
    let app = TestApp::spawn().await;
    // The first value would slip past the control-character check if the last one won.
    let response = app
        .client
        .post(app.url("/v1/auth/register"))
        .header("content-type", "application/json")
        .body(r#"{"email":"a\u0000@example.com","email":"b@example.com","password":"correct horse battery"}"#)
        .send()
        .await
        .expect("send");
    let problem = assert_problem(
        response,
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation_failed",
    )
    .await;
    assert_eq!(problem["errors"][0]["field"], "email", "{problem}");
    assert_eq!(problem["errors"][0]["code"], "duplicate_field", "{problem}");
    // Nothing was registered.
    let users: i64 =
        sqlx::query_scalar("SELECT count(*) FROM events WHERE event_type = 'UserRegistered'")
            .fetch_one(&app.db.pool)
            .await
            .expect("count");
    assert_eq!(users, 0);
}

#[tokio::test]
async fn in_production_the_public_port_serves_metrics_only_behind_a_token() {
    use framegate_api::metrics::MetricsToken;
    use framegate_commands::deployment::Deployment;

    let open = TestApp::with_config(|c| c.deployment = Deployment::Development).await;
    let response = open
        .client
        .get(open.url("/metrics"))
        .send()
        .await
        .expect("send");
    assert_eq!(response.status(), StatusCode::OK, "development: open");

    let production = TestApp::with_config(|c| c.deployment = Deployment::Production).await;
    let response = production
        .client
        .get(production.url("/metrics"))
        .send()
        .await
        .expect("send");
    assert_eq!(
        response.status(),
        StatusCode::NOT_FOUND,
        "production without a token: not on the public port"
    );

    let token = "a-metrics-token-of-some-length-7Hq2";
    let guarded = TestApp::with_config(|c| {
        c.deployment = Deployment::Production;
        c.metrics_token = MetricsToken::new(token);
    })
    .await;
    let anonymous = guarded
        .client
        .get(guarded.url("/metrics"))
        .send()
        .await
        .expect("send");
    assert_eq!(anonymous.status(), StatusCode::UNAUTHORIZED);
    let scraped = guarded
        .client
        .get(guarded.url("/metrics"))
        .bearer_auth(token)
        .send()
        .await
        .expect("send");
    assert_eq!(scraped.status(), StatusCode::OK);
}
