//! The rate-limit middleware in front of a tiny router: headers on every response, 429 with
//! Retry-After, principal buckets apart from IP buckets, and bad credentials charged to the IP.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{ConnectInfo, Request};
use axum::http::{header, Extensions, HeaderMap, StatusCode};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::get;
use axum::Router;
use framegate_api::auth::{Credential, Principal};
use framegate_api::client_ip::ProxyTrust;
use framegate_api::error::ApiError;
use framegate_api::rate_limit::{enforce, RateConfig, RateLimits};
use framegate_domain::{Role, UserId};
use http_body_util::BodyExt as _;
use serde_json::Value;
use tower::ServiceExt as _;
use uuid::Uuid;

#[derive(Clone)]
struct TestState {
    limits: Arc<RateLimits>,
    user: Principal,
}

/// Stands in for authentication: "Bearer good" is the user, anything else nobody.
fn resolve(headers: &HeaderMap, user: &Principal) -> Option<Principal> {
    (headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        == Some("Bearer good"))
    .then(|| user.clone())
}

/// Stands in for the `Principal` extractor: a 401 unless the layer resolved the user.
async fn private(ext: Extensions) -> Result<&'static str, ApiError> {
    match ext.get::<Principal>() {
        Some(_) => Ok("secret"),
        None => Err(ApiError::unauthenticated(
            "invalid_credentials",
            "bad token",
        )),
    }
}

/// `behind_proxy`: whatever connects is the one proxy in front (`FRAMEGATE_TRUST_PROXY=true`).
fn app(config: RateConfig, behind_proxy: bool) -> Router {
    let proxies = if behind_proxy {
        ProxyTrust::ImmediatePeer
    } else {
        ProxyTrust::None
    };
    let state = TestState {
        limits: Arc::new(RateLimits::new(&config)),
        user: Principal {
            user_id: UserId::from(Uuid::new_v4()),
            role: Role::User,
            credential: Credential::AccessToken {
                jti: Uuid::new_v4(),
                session_id: Uuid::new_v4(),
            },
        },
    };
    let limits = state.limits.clone();
    let user = state.user.clone();
    Router::new()
        .route("/public", get(|| async { "hello" }))
        .route("/private", get(private))
        .layer(middleware::from_fn(
            move |mut request: Request, next: Next| {
                let limits = limits.clone();
                let principal = resolve(request.headers(), &user);
                if let Some(principal) = &principal {
                    request.extensions_mut().insert(principal.clone());
                }
                let proxies = proxies.clone();
                async move { enforce(&limits, &proxies, principal.as_ref(), request, next).await }
            },
        ))
        .with_state(state)
}

fn from_peer(path: &str, peer: &str, token: Option<&str>) -> Request {
    let mut builder = axum::http::Request::get(path);
    if let Some(token) = token {
        builder = builder.header(header::AUTHORIZATION, format!("Bearer {token}"));
    }
    let mut request = builder.body(Body::empty()).expect("request");
    let addr: SocketAddr = peer.parse().expect("peer address");
    request.extensions_mut().insert(ConnectInfo(addr));
    request
}

fn number(response: &Response, name: &str) -> Option<u64> {
    response
        .headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
}

async fn code(response: Response) -> String {
    let bytes = response
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes();
    let body: Value = serde_json::from_slice(&bytes).expect("problem json");
    body["code"].as_str().unwrap_or_default().to_owned()
}

#[tokio::test]
async fn anonymous_responses_count_down_and_the_one_over_the_limit_is_a_429() {
    let app = app(
        RateConfig {
            anonymous_per_minute: 3,
            ..RateConfig::default()
        },
        false,
    );
    for remaining in [2, 1, 0] {
        let response = app
            .clone()
            .oneshot(from_peer("/public", "192.0.2.1:1000", None))
            .await
            .expect("call");
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(number(&response, "ratelimit-limit"), Some(3));
        assert_eq!(number(&response, "ratelimit-remaining"), Some(remaining));
        assert!(number(&response, "ratelimit-reset").is_some());
    }
    let refused = app
        .clone()
        .oneshot(from_peer("/public", "192.0.2.1:1001", None))
        .await
        .expect("call");
    assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(number(&refused, "retry-after").is_some_and(|s| s >= 1));
    assert_eq!(number(&refused, "ratelimit-remaining"), Some(0));
    assert!(number(&refused, "ratelimit-reset").is_some_and(|s| s >= 1));
    assert_eq!(code(refused).await, "rate_limited");

    let neighbour = app
        .clone()
        .oneshot(from_peer("/public", "192.0.2.2:1000", None))
        .await
        .expect("call");
    assert_eq!(
        neighbour.status(),
        StatusCode::OK,
        "another IP has its own bucket"
    );
}

#[tokio::test]
async fn authenticated_calls_use_the_user_bucket_not_the_ip_bucket() {
    let app = app(
        RateConfig {
            anonymous_per_minute: 1,
            user_per_minute: 4,
            ..RateConfig::default()
        },
        false,
    );
    let peer = "192.0.2.1:1000";
    assert_eq!(
        app.clone()
            .oneshot(from_peer("/public", peer, None))
            .await
            .expect("call")
            .status(),
        StatusCode::OK
    );
    assert_eq!(
        app.clone()
            .oneshot(from_peer("/public", peer, None))
            .await
            .expect("call")
            .status(),
        StatusCode::TOO_MANY_REQUESTS
    );

    for remaining in [3, 2, 1, 0] {
        let response = app
            .clone()
            .oneshot(from_peer("/private", peer, Some("good")))
            .await
            .expect("call");
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(number(&response, "ratelimit-limit"), Some(4));
        assert_eq!(number(&response, "ratelimit-remaining"), Some(remaining));
    }
    let refused = app
        .clone()
        .oneshot(from_peer("/private", "198.51.100.1:1", Some("good")))
        .await
        .expect("call");
    assert_eq!(
        refused.status(),
        StatusCode::TOO_MANY_REQUESTS,
        "the user's bucket follows them to a new IP"
    );
    assert!(number(&refused, "retry-after").is_some_and(|s| s >= 1));
}

#[tokio::test]
async fn failed_credentials_are_charged_to_the_ip() {
    let app = app(
        RateConfig {
            anonymous_per_minute: 2,
            ..RateConfig::default()
        },
        false,
    );
    let peer = "192.0.2.1:1000";
    for _ in 0..2 {
        let response = app
            .clone()
            .oneshot(from_peer("/private", peer, Some("guess")))
            .await
            .expect("call");
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
        assert!(number(&response, "ratelimit-remaining").is_some());
    }
    let anonymous = app
        .clone()
        .oneshot(from_peer("/public", peer, None))
        .await
        .expect("call");
    assert_eq!(anonymous.status(), StatusCode::TOO_MANY_REQUESTS);
}

#[tokio::test]
async fn forwarded_for_decides_the_bucket_only_behind_a_trusted_proxy() {
    let config = RateConfig {
        anonymous_per_minute: 1,
        ..RateConfig::default()
    };
    let via_proxy = |client: &str| {
        let mut request = from_peer("/public", "10.0.0.1:80", None);
        request
            .headers_mut()
            .insert("x-forwarded-for", client.parse().expect("header"));
        request
    };

    let trusted = app(config.clone(), true);
    assert_eq!(
        trusted
            .clone()
            .oneshot(via_proxy("203.0.113.1"))
            .await
            .expect("call")
            .status(),
        StatusCode::OK
    );
    assert_eq!(
        trusted
            .clone()
            .oneshot(via_proxy("203.0.113.2"))
            .await
            .expect("call")
            .status(),
        StatusCode::OK
    );
    assert_eq!(
        trusted
            .clone()
            .oneshot(via_proxy("203.0.113.1"))
            .await
            .expect("call")
            .status(),
        StatusCode::TOO_MANY_REQUESTS
    );

    let untrusted = app(config, false);
    assert_eq!(
        untrusted
            .clone()
            .oneshot(via_proxy("203.0.113.1"))
            .await
            .expect("call")
            .status(),
        StatusCode::OK
    );
    assert_eq!(
        untrusted
            .clone()
            .oneshot(via_proxy("203.0.113.2"))
            .await
            .expect("call")
            .status(),
        StatusCode::TOO_MANY_REQUESTS,
        "a spoofed header does not buy a fresh bucket"
    );
}

#[tokio::test]
async fn credentials_sent_to_a_public_route_do_not_escape_the_ip_limit() {
    let app = app(
        RateConfig {
            anonymous_per_minute: 2,
            ..RateConfig::default()
        },
        false,
    );
    let peer = "192.0.2.1:1000";
    for _ in 0..2 {
        let response = app
            .clone()
            .oneshot(from_peer("/public", peer, Some("junk")))
            .await
            .expect("call");
        assert_eq!(response.status(), StatusCode::OK);
    }
    let refused = app
        .clone()
        .oneshot(from_peer("/public", peer, Some("another junk")))
        .await
        .expect("call");
    assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(code(refused).await, "rate_limited");
}
