//! Buying credits, the API's side: the pack catalog, Stripe Checkout through a fake that
//! follows Stripe's wire format, `Idempotency-Key`, Stripe failures, billing switched off,
//! and the purchases listing once Stripe's webhook has paid a session.

use crate::common;

use common::stripe::{event, FakeStripe, SECRET_KEY};
use common::{assert_problem, TestApp};
use reqwest::StatusCode;
use serde_json::{json, Value};

async fn billing_app(stripe: &FakeStripe) -> TestApp {
    let config = stripe.config();
    TestApp::with_config(move |c| {
        c.billing.packs =
            framegate_api::billing::config::parse_packs("starter=1000:1000:usd,pro=5000:4500:usd")
                .expect("packs");
        c.billing.stripe = Some(config);
        c.billing.success_url = "https://app.example/paid?session={CHECKOUT_SESSION_ID}".into();
        c.billing.cancel_url = "https://app.example/cancelled".into();
    })
    .await
}

async fn checkout(app: &TestApp, token: &str, pack: &str, key: Option<&str>) -> reqwest::Response {
    let mut request = app
        .client
        .post(app.url("/v1/billing/checkout"))
        .bearer_auth(token)
        .json(&json!({"pack": pack}));
    if let Some(key) = key {
        request = request.header("idempotency-key", key);
    }
    request.send().await.expect("checkout")
}

#[tokio::test]
async fn the_packs_are_listed_with_their_prices() {
    let stripe = FakeStripe::start().await;
    let app = billing_app(&stripe).await;
    let body: Value = app
        .get("/v1/billing/packs", None)
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(
        body,
        json!({
            "items": [
                {"name": "starter", "credits": 1000, "amount": 1000, "currency": "usd"},
                {"name": "pro", "credits": 5000, "amount": 4500, "currency": "usd"},
            ],
            "checkout_enabled": true,
        })
    );
}

#[tokio::test]
async fn checkout_opens_a_stripe_session_in_stripes_wire_format() {
    let stripe = FakeStripe::start().await;
    let app = billing_app(&stripe).await;
    let (user, token, _) = app.signed_in_user("buyer@example.com").await;

    let response = checkout(&app, &token, "pro", None).await;
    assert_eq!(response.status(), StatusCode::CREATED);
    let body: Value = response.json().await.expect("json");
    let id = body["id"].as_str().expect("id");
    assert!(id.starts_with("cs_test_"));
    assert_eq!(
        body["url"],
        format!("https://checkout.stripe.com/c/pay/{id}")
    );

    let calls = stripe.calls();
    assert_eq!(calls.len(), 1);
    let call = &calls[0];
    assert_eq!(
        call.authorization.as_deref(),
        Some(&*format!("Bearer {SECRET_KEY}"))
    );
    assert!(call.idempotency_key.is_some(), "every call carries a key");
    let user = user.to_string();
    for (field, value) in [
        ("mode", "payment"),
        ("client_reference_id", user.as_str()),
        ("line_items[0][quantity]", "1"),
        ("line_items[0][price_data][currency]", "usd"),
        ("line_items[0][price_data][unit_amount]", "4500"),
        (
            "line_items[0][price_data][product_data][name]",
            "5000 Framegate credits",
        ),
        ("metadata[user_id]", user.as_str()),
        ("metadata[pack]", "pro"),
        ("metadata[credits]", "5000"),
        ("payment_intent_data[metadata][user_id]", user.as_str()),
        (
            "success_url",
            "https://app.example/paid?session={CHECKOUT_SESSION_ID}",
        ),
        ("cancel_url", "https://app.example/cancelled"),
    ] {
        assert_eq!(call.field(field), Some(value), "{field}");
    }
}

#[tokio::test]
async fn the_same_idempotency_key_opens_one_session() {
    let stripe = FakeStripe::start().await;
    let app = billing_app(&stripe).await;
    let (_, token, _) = app.signed_in_user("twice@example.com").await;
    let first: Value = checkout(&app, &token, "starter", Some("buy-1"))
        .await
        .json()
        .await
        .expect("json");
    let again = checkout(&app, &token, "starter", Some("buy-1")).await;
    assert_eq!(again.status(), StatusCode::CREATED);
    assert_eq!(
        again
            .headers()
            .get("idempotency-replayed")
            .map(|v| v.as_bytes()),
        Some(&b"true"[..])
    );
    assert_eq!(
        again.json::<Value>().await.expect("json")["id"],
        first["id"]
    );
    assert_eq!(stripe.calls().len(), 1, "the replay did not call Stripe");

    // A Stripe failure is not stored: the retry reaches Stripe with the same key, which
    // Stripe answers with the session it already made.
    stripe.fail_with(Some(500));
    let failed = checkout(&app, &token, "starter", Some("buy-2")).await;
    assert_problem(failed, StatusCode::BAD_GATEWAY, "payment_provider_error").await;
    stripe.fail_with(None);
    let retried = checkout(&app, &token, "starter", Some("buy-2")).await;
    assert_eq!(retried.status(), StatusCode::CREATED);
    let calls = stripe.calls();
    assert_eq!(calls.len(), 3);
    assert_eq!(calls[1].idempotency_key, calls[2].idempotency_key);
    assert_ne!(calls[0].idempotency_key, calls[1].idempotency_key);
    let another = checkout(&app, &token, "starter", Some("buy-3")).await;
    assert_ne!(
        another.json::<Value>().await.expect("json")["id"],
        first["id"],
        "another key, another session"
    );
}

#[tokio::test]
async fn an_unknown_pack_or_an_unreachable_stripe_is_a_clear_error() {
    let stripe = FakeStripe::start().await;
    let app = billing_app(&stripe).await;
    let (_, token, _) = app.signed_in_user("errors@example.com").await;
    let unknown = checkout(&app, &token, "mega", None).await;
    let problem = assert_problem(
        unknown,
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation_failed",
    )
    .await;
    assert_eq!(problem["errors"][0]["code"], "unknown_pack");
    assert!(stripe.calls().is_empty());
    let anonymous = app
        .post("/v1/billing/checkout", None, json!({"pack": "starter"}))
        .await;
    assert_eq!(anonymous.status(), StatusCode::UNAUTHORIZED);

    // Nothing listens on the configured API base any more.
    let closed = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let base = format!("http://{}", closed.local_addr().expect("addr"));
    drop(closed);
    let mut config = stripe.config();
    config.api_base = base;
    let offline = TestApp::with_config(move |c| c.billing.stripe = Some(config)).await;
    let (_, token, _) = offline.signed_in_user("offline@example.com").await;
    let response = checkout(&offline, &token, "starter", None).await;
    assert_problem(
        response,
        StatusCode::BAD_GATEWAY,
        "payment_provider_unavailable",
    )
    .await;
}

#[tokio::test]
async fn without_a_stripe_account_checkout_and_the_webhook_say_billing_is_disabled() {
    let app = TestApp::spawn().await;
    let (_, token, _) = app.signed_in_user("nobilling@example.com").await;
    let packs: Value = app
        .get("/v1/billing/packs", None)
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(packs["checkout_enabled"], false);
    assert_eq!(packs["items"][0]["credits"], 1000, "the default pack");
    assert_eq!(packs["items"][0]["amount"], 1000, "for US$10.00");
    let response = checkout(&app, &token, "starter", None).await;
    assert_problem(
        response,
        StatusCode::SERVICE_UNAVAILABLE,
        "billing_disabled",
    )
    .await;
    let webhook = app
        .deliver(&event("evt_off", "checkout.session.completed", json!({})))
        .await;
    assert_problem(webhook, StatusCode::SERVICE_UNAVAILABLE, "billing_disabled").await;
}

#[tokio::test]
async fn a_paid_session_is_listed_among_the_buyers_purchases_only() {
    let stripe = FakeStripe::start().await;
    let app = billing_app(&stripe).await;
    let (_, token, _) = app.signed_in_user("lister@example.com").await;
    let (_, other, _) = app.signed_in_user("other@example.com").await;
    let mut sessions = Vec::new();
    for pack in ["starter", "pro", "starter"] {
        let body: Value = checkout(&app, &token, pack, None)
            .await
            .json()
            .await
            .expect("json");
        sessions.push(body["id"].as_str().expect("id").to_owned());
    }
    for (n, session) in sessions.iter().enumerate() {
        let paid = event(
            &format!("evt_list_{n}"),
            "checkout.session.completed",
            stripe.paid_session(session),
        );
        app.deliver_expecting(&paid, "processed").await;
    }

    let first: Value = app
        .get("/v1/billing/purchases?limit=2", Some(&token))
        .await
        .json()
        .await
        .expect("json");
    let items = first["items"].as_array().expect("items");
    assert_eq!(items.len(), 2);
    assert_eq!(items[0]["payment_reference"], sessions[2], "newest first");
    assert_eq!(items[1]["payment_reference"], sessions[1]);
    assert_eq!(items[1]["pack"], "pro");
    assert_eq!(items[1]["credits"], 5000);
    assert_eq!(items[1]["amount_paid"], 4500);
    assert_eq!(items[1]["currency"], "usd");
    assert_eq!(items[1]["status"], "paid");
    assert_eq!(items[1]["provider"], "stripe");
    assert_eq!(items[1]["refunded"], 0);
    assert_eq!(
        items[1]["payment_intent"],
        common::stripe::payment_intent_of(&sessions[1])
    );
    let cursor = first["next_cursor"].as_str().expect("a next page");
    let second: Value = app
        .get(
            &format!("/v1/billing/purchases?limit=2&cursor={cursor}"),
            Some(&token),
        )
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(second["items"][0]["payment_reference"], sessions[0]);
    assert!(second["next_cursor"].is_null());
    let credits: Value = app
        .get("/v1/credits", Some(&token))
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(
        credits["balance"],
        100 + 1000 + 5000 + 1000,
        "sign-up credits and three packs"
    );

    let theirs: Value = app
        .get("/v1/billing/purchases", Some(&other))
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(theirs["items"], json!([]));
    let bad = app
        .get("/v1/billing/purchases?cursor=nope", Some(&token))
        .await;
    assert_problem(bad, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed").await;
}
