//! A fake of the one Stripe API call billing makes, `POST /v1/checkout/sessions`, following
//! Stripe's documented wire format (form-encoded parameters with bracketed keys, a bearer
//! secret key, `Idempotency-Key` replays, `{"error": {...}}` failures), and Stripe events
//! as Stripe delivers them: the session it opened, paid, or a refunded charge, in the event
//! envelope, signed into a `Stripe-Signature` header.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::extract::rejection::FormRejection;
use axum::extract::{Form, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use framegate_api::billing::{signature, StripeConfig};
use serde_json::{json, Value};

use super::TestApp;

pub const SECRET_KEY: &str = "sk_test_framegate";
pub const WEBHOOK_SECRET: &str = "whsec_test_framegate_billing";

/// One request the fake received.
#[derive(Debug, Clone)]
pub struct Call {
    pub authorization: Option<String>,
    pub idempotency_key: Option<String>,
    pub form: Vec<(String, String)>,
}

impl Call {
    pub fn field(&self, name: &str) -> Option<&str> {
        self.form
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    }
}

#[derive(Default)]
struct Inner {
    calls: Vec<Call>,
    /// Sessions by id, as created.
    sessions: HashMap<String, Value>,
    /// Session ids by idempotency key.
    by_key: HashMap<String, String>,
    /// Answer every request with this status and an API error instead.
    failing: Option<u16>,
}

#[derive(Clone)]
pub struct FakeStripe {
    pub base: String,
    inner: Arc<Mutex<Inner>>,
}

impl FakeStripe {
    pub async fn start() -> Self {
        let inner = Arc::new(Mutex::new(Inner::default()));
        let app = Router::new()
            .route("/v1/checkout/sessions", post(create_session))
            .with_state(inner.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let base = format!("http://{}", listener.local_addr().expect("addr"));
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self { base, inner }
    }

    /// Billing settings that point at this fake.
    pub fn config(&self) -> StripeConfig {
        StripeConfig {
            secret_key: framegate_commands::deployment::Secret::new(SECRET_KEY.to_owned()),
            api_base: self.base.clone(),
            webhook_secret: framegate_commands::deployment::Secret::new(WEBHOOK_SECRET.to_owned()),
        }
    }

    pub fn calls(&self) -> Vec<Call> {
        self.inner.lock().expect("fake").calls.clone()
    }

    pub fn fail_with(&self, status: Option<u16>) {
        self.inner.lock().expect("fake").failing = status;
    }

    /// The session `id` as `checkout.session.completed` carries it once paid: complete,
    /// paid, with its PaymentIntent.
    pub fn paid_session(&self, id: &str) -> Value {
        let mut session = self.inner.lock().expect("fake").sessions[id].clone();
        session["status"] = json!("complete");
        session["payment_status"] = json!("paid");
        session["payment_intent"] = json!(payment_intent_of(id));
        session
    }
}

/// The PaymentIntent the fake pays session `id` with.
pub fn payment_intent_of(session_id: &str) -> String {
    format!("pi_{}", session_id.trim_start_matches("cs_test_"))
}

fn stripe_error(status: StatusCode, kind: &str, code: &str, message: &str) -> Response {
    let body = json!({"error": {"type": kind, "code": code, "message": message}});
    (status, Json(body)).into_response()
}

async fn create_session(
    State(inner): State<Arc<Mutex<Inner>>>,
    headers: HeaderMap,
    form: Result<Form<Vec<(String, String)>>, FormRejection>,
) -> Response {
    // axum's `Form` insists on the form content type, as Stripe does.
    let Ok(Form(form)) = form else {
        return stripe_error(
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            "parameter_invalid",
            "parameters must be form-encoded",
        );
    };
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let call = Call {
        authorization: header("authorization"),
        idempotency_key: header("idempotency-key"),
        form,
    };
    let mut inner = inner.lock().expect("fake");
    inner.calls.push(call.clone());
    if let Some(status) = inner.failing {
        let status = StatusCode::from_u16(status).expect("status");
        return stripe_error(
            status,
            "api_error",
            "",
            "Something went wrong on Stripe's end.",
        );
    }
    if call.authorization.as_deref() != Some(&format!("Bearer {SECRET_KEY}")) {
        return stripe_error(
            StatusCode::UNAUTHORIZED,
            "invalid_request_error",
            "",
            "Invalid API Key provided",
        );
    }
    for required in [
        "mode",
        "success_url",
        "line_items[0][price_data][currency]",
        "line_items[0][price_data][unit_amount]",
        "line_items[0][price_data][product_data][name]",
        "line_items[0][quantity]",
    ] {
        if call.field(required).is_none() {
            return stripe_error(
                StatusCode::BAD_REQUEST,
                "invalid_request_error",
                "parameter_missing",
                &format!("Missing required param: {required}."),
            );
        }
    }
    if let Some(id) = call
        .idempotency_key
        .as_ref()
        .and_then(|key| inner.by_key.get(key))
    {
        return Json(inner.sessions[id].clone()).into_response();
    }
    let id = format!("cs_test_{}", uuid::Uuid::new_v4().simple());
    let quantity: i64 = call
        .field("line_items[0][quantity]")
        .and_then(|q| q.parse().ok())
        .unwrap_or(1);
    let unit: i64 = call
        .field("line_items[0][price_data][unit_amount]")
        .and_then(|a| a.parse().ok())
        .unwrap_or_default();
    let metadata: serde_json::Map<String, Value> = call
        .form
        .iter()
        .filter_map(|(key, value)| {
            let name = key.strip_prefix("metadata[")?.strip_suffix(']')?;
            Some((name.to_owned(), json!(value)))
        })
        .collect();
    let session = json!({
        "id": id,
        "object": "checkout.session",
        "mode": call.field("mode"),
        "status": "open",
        "payment_status": "unpaid",
        "amount_subtotal": unit * quantity,
        "amount_total": unit * quantity,
        "currency": call.field("line_items[0][price_data][currency]"),
        "client_reference_id": call.field("client_reference_id"),
        "metadata": metadata,
        "payment_intent": null,
        "success_url": call.field("success_url"),
        "cancel_url": call.field("cancel_url"),
        "livemode": false,
        "url": format!("https://checkout.stripe.com/c/pay/{id}"),
    });
    inner.sessions.insert(id.clone(), session.clone());
    if let Some(key) = call.idempotency_key {
        inner.by_key.insert(key, id);
    }
    Json(session).into_response()
}

/// A Stripe event envelope around `object`.
pub fn event(id: &str, kind: &str, object: Value) -> Value {
    json!({
        "id": id,
        "object": "event",
        "api_version": "2024-06-20",
        "created": chrono::Utc::now().timestamp(),
        "livemode": false,
        "pending_webhooks": 1,
        "request": {"id": null, "idempotency_key": null},
        "type": kind,
        "data": {"object": object},
    })
}

/// A charge of `amount` for `session_id`'s PaymentIntent, `refunded` of it refunded so far.
pub fn refunded_charge(session_id: &str, amount: i64, refunded: i64) -> Value {
    json!({
        "id": format!("ch_{}", session_id.trim_start_matches("cs_test_")),
        "object": "charge",
        "amount": amount,
        "amount_captured": amount,
        "amount_refunded": refunded,
        "currency": "usd",
        "paid": true,
        "refunded": refunded >= amount,
        "status": "succeeded",
        "payment_intent": payment_intent_of(session_id),
    })
}

impl TestApp {
    /// Posts `body` to the Stripe webhook with `signature_header` as `Stripe-Signature`.
    pub async fn stripe_webhook_with(
        &self,
        body: &[u8],
        signature_header: &str,
    ) -> reqwest::Response {
        self.client
            .post(self.url("/v1/billing/stripe/webhook"))
            .header("content-type", "application/json; charset=utf-8")
            .header("stripe-signature", signature_header)
            .header(
                "user-agent",
                "Stripe/1.0 (+https://stripe.com/docs/webhooks)",
            )
            .body(body.to_vec())
            .send()
            .await
            .expect("webhook request")
    }

    /// Delivers `event` as Stripe does: signed now with the test endpoint's secret.
    pub async fn deliver(&self, event: &Value) -> reqwest::Response {
        let body = serde_json::to_vec(event).expect("event JSON");
        let header = signature::header(&[WEBHOOK_SECRET], chrono::Utc::now().timestamp(), &body);
        self.stripe_webhook_with(&body, &header).await
    }

    /// [`TestApp::deliver`], expecting a 200 with `outcome`.
    pub async fn deliver_expecting(&self, event: &Value, outcome: &str) {
        let response = self.deliver(event).await;
        let status = response.status();
        let body: Value = response.json().await.expect("json");
        assert_eq!(status, reqwest::StatusCode::OK, "{body}");
        assert_eq!(body["outcome"], outcome, "{body}");
    }
}
