//! The client address behind proxies, as the per-IP rate limits and the audit log see it.
//!
//! A proxy appends the address it received a request from to whatever `X-Forwarded-For` the
//! client sent, so only the right end of the chain is written by someone we trust. Until
//! issue 12 the API took the FIRST entry when `FRAMEGATE_TRUST_PROXY=true`, an entry the
//! client writes itself: a client putting a fresh address there on every request got a fresh
//! rate-limit bucket every time, and chose the IP recorded in the audit log. These tests send
//! what such a client sends through such a proxy (a random left entry, then the address the
//! proxy saw) and would have passed every request on the old code.

use crate::common;

use common::{assert_problem, TestApp};
use framegate_api::client_ip::ProxyTrust;
use reqwest::StatusCode;
use serde_json::{json, Value};
use uuid::Uuid;

/// The client's real address, as the proxy in front of the API appends it.
const CLIENT: &str = "198.51.100.7";

/// A different made-up address on every call: what the attacker writes at the left.
fn spoofed() -> String {
    let bytes = *Uuid::new_v4().as_bytes();
    format!("{}.{}.{}.{}", bytes[0], bytes[1], bytes[2], bytes[3].max(1))
}

/// `X-Forwarded-For` as the proxy forwards it: the client's own value, then the client.
fn through_proxy() -> String {
    format!("{}, {CLIENT}", spoofed())
}

/// Old code: each login's first hop was a new random address, so each had its own IP bucket
/// (and its own account bucket: every attempt names another account); all six were 401.
#[tokio::test]
async fn rotating_the_left_of_x_forwarded_for_does_not_escape_the_login_limit() {
    let app = TestApp::with_config(|c| {
        c.proxies = ProxyTrust::ImmediatePeer; // FRAMEGATE_TRUST_PROXY=true
        c.rate.login_per_minute = 3;
    })
    .await;
    let mut statuses = Vec::new();
    for n in 0..6 {
        let response = app
            .client
            .post(app.url("/v1/auth/login"))
            .header("x-forwarded-for", through_proxy())
            .json(&json!({"email": format!("guess{n}@example.com"), "password": "wrong guess"}))
            .send()
            .await
            .expect("send");
        statuses.push(response.status());
    }
    assert_eq!(
        statuses,
        [
            StatusCode::UNAUTHORIZED,
            StatusCode::UNAUTHORIZED,
            StatusCode::UNAUTHORIZED,
            StatusCode::TOO_MANY_REQUESTS,
            StatusCode::TOO_MANY_REQUESTS,
            StatusCode::TOO_MANY_REQUESTS,
        ]
    );
}

/// Old code: every registration counted against a new random address and all six were
/// created; the audit log recorded the made-up addresses.
#[tokio::test]
async fn rotating_the_left_of_x_forwarded_for_does_not_escape_the_registration_limit() {
    let app = TestApp::with_config(|c| {
        c.proxies = ProxyTrust::ImmediatePeer; // FRAMEGATE_TRUST_PROXY=true
        c.rate.anonymous_per_minute = 3;
    })
    .await;
    let mut statuses = Vec::new();
    for n in 0..6 {
        let response = app
            .client
            .post(app.url("/v1/auth/register"))
            .header("x-forwarded-for", through_proxy())
            .json(&json!({"email": format!("farm{n}@example.com"), "password": common::PASSWORD}))
            .send()
            .await
            .expect("send");
        statuses.push(response.status());
    }
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
    // Through the audit log: the address is stored sealed (ADR 0043).
    let recorded: Vec<Option<String>> = framegate_projections::audit::query(
        &app.db.pool,
        &framegate_projections::audit::AuditFilter {
            event_type: Some("UserRegistered".into()),
            ..Default::default()
        },
        None,
        10,
    )
    .await
    .expect("audit")
    .into_iter()
    .map(|entry| entry.client_ip)
    .collect();
    assert_eq!(recorded, vec![Some(CLIENT.to_owned()); 3], "the audit log");
}

/// With `FRAMEGATE_TRUSTED_PROXIES` the walk skips every hop inside them: here a load
/// balancer (the TCP peer, 127.0.0.1 in tests) behind an internal proxy at 10.0.0.2.
#[tokio::test]
async fn hops_inside_the_trusted_proxies_are_skipped_to_find_the_client() {
    let app = TestApp::with_config(|c| {
        c.proxies = "127.0.0.1/32, 10.0.0.0/8".parse().expect("networks");
        c.rate.anonymous_per_minute = 2;
    })
    .await;
    let register = |n: usize| {
        app.client
            .post(app.url("/v1/auth/register"))
            .header(
                "x-forwarded-for",
                format!("{}, {CLIENT}, 10.0.0.2", spoofed()),
            )
            .json(&json!({"email": format!("hop{n}@example.com"), "password": common::PASSWORD}))
            .send()
    };
    for n in 0..2 {
        assert_eq!(
            register(n).await.expect("send").status(),
            StatusCode::CREATED
        );
    }
    let limited = register(2).await.expect("send");
    assert_problem(limited, StatusCode::TOO_MANY_REQUESTS, "rate_limited").await;
    // Through the audit log: the address is stored sealed (ADR 0043).
    let recorded: Vec<Option<String>> = framegate_projections::audit::query(
        &app.db.pool,
        &framegate_projections::audit::AuditFilter {
            event_type: Some("UserRegistered".into()),
            ..Default::default()
        },
        None,
        10,
    )
    .await
    .expect("audit")
    .into_iter()
    .map(|entry| entry.client_ip)
    .collect();
    assert_eq!(recorded, vec![Some(CLIENT.to_owned()); 2]);
}

/// A peer outside the trusted proxies is the client, whatever header it sends.
#[tokio::test]
async fn a_peer_that_is_not_a_trusted_proxy_cannot_choose_its_address() {
    let app = TestApp::with_config(|c| {
        c.proxies = "10.0.0.0/8".parse().expect("networks");
        c.rate.anonymous_per_minute = 2;
    })
    .await;
    let mut statuses = Vec::new();
    for _ in 0..3 {
        let response = app
            .client
            .get(app.url("/health/live"))
            .header("x-forwarded-for", spoofed())
            .send()
            .await
            .expect("send");
        statuses.push(response.status());
    }
    assert_eq!(
        statuses,
        [
            StatusCode::OK,
            StatusCode::OK,
            StatusCode::TOO_MANY_REQUESTS
        ]
    );
    let me: Value = app
        .client
        .post(app.url("/v1/auth/register"))
        .header("x-forwarded-for", spoofed())
        .json(&json!({"email": "late@example.com", "password": common::PASSWORD}))
        .send()
        .await
        .expect("send")
        .json()
        .await
        .expect("json");
    assert_eq!(me["code"], "rate_limited", "still the peer's bucket");
}
