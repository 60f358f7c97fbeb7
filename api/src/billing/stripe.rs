//! The one Stripe API call billing makes: creating a Checkout Session, over Stripe's
//! documented wire format (form-encoded `POST /v1/checkout/sessions`, bearer secret key,
//! `Idempotency-Key`, JSON answers and `{"error": {...}}` failures) rather than a generated
//! SDK (docs/adr/0032-stripe-credit-purchases.md says why).

use std::sync::OnceLock;
use std::time::Duration;

use framegate_domain::UserId;
use serde::Deserialize;

use super::config::{Pack, StripeConfig};

/// What the buyer is sent to.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct CheckoutSession {
    pub id: String,
    pub url: String,
}

/// One checkout to open.
#[derive(Debug, Clone)]
pub struct CheckoutRequest<'a> {
    pub pack: &'a Pack,
    pub user_id: UserId,
    pub success_url: &'a str,
    pub cancel_url: &'a str,
    /// Sent as Stripe's `Idempotency-Key`: a retry with the same key gets the same session.
    pub idempotency_key: &'a str,
}

#[derive(Debug, thiserror::Error)]
pub enum StripeError {
    /// Stripe answered with an error document.
    #[error("Stripe refused the request ({status}): {kind} {code}: {message}")]
    Api {
        status: u16,
        kind: String,
        code: String,
        message: String,
    },
    /// No answer: connection refused, timeout, TLS.
    #[error("Stripe could not be reached: {0}")]
    Unreachable(String),
    /// An answer we cannot read.
    #[error("Stripe's answer could not be read: {0}")]
    Unreadable(String),
}

#[derive(Deserialize)]
struct ErrorDocument {
    error: ErrorBody,
}

#[derive(Deserialize)]
struct ErrorBody {
    #[serde(rename = "type", default)]
    kind: String,
    #[serde(default)]
    code: Option<String>,
    #[serde(default)]
    message: Option<String>,
}

/// One HTTP client for every call (its connection pool and TLS set-up are shared).
fn http() -> &'static reqwest::Client {
    static CLIENT: OnceLock<reqwest::Client> = OnceLock::new();
    CLIENT.get_or_init(|| {
        reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .timeout(Duration::from_secs(30))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap_or_else(|_| reqwest::Client::new())
    })
}

/// The form fields of the session: one line item priced inline (no Stripe Price objects to
/// keep in step with the catalog), the buyer's user id as `client_reference_id` and in the
/// metadata of the session and of its PaymentIntent, with the pack and its credits, which
/// is what the webhook credits from.
pub fn checkout_form(request: &CheckoutRequest<'_>) -> Vec<(String, String)> {
    let pack = request.pack;
    let user = request.user_id.to_string();
    let mut form: Vec<(String, String)> = vec![
        ("mode".into(), "payment".into()),
        ("success_url".into(), request.success_url.into()),
        ("cancel_url".into(), request.cancel_url.into()),
        ("client_reference_id".into(), user.clone()),
        ("line_items[0][quantity]".into(), "1".into()),
        (
            "line_items[0][price_data][currency]".into(),
            pack.currency.clone(),
        ),
        (
            "line_items[0][price_data][unit_amount]".into(),
            pack.amount.to_string(),
        ),
        (
            "line_items[0][price_data][product_data][name]".into(),
            format!("{} Framegate credits", pack.credits),
        ),
    ];
    for prefix in ["metadata", "payment_intent_data[metadata]"] {
        form.push((format!("{prefix}[user_id]"), user.clone()));
        form.push((format!("{prefix}[pack]"), pack.name.clone()));
        form.push((format!("{prefix}[credits]"), pack.credits.to_string()));
    }
    form
}

/// Creates the Checkout Session for `request`.
#[tracing::instrument(skip_all, fields(pack = %request.pack.name, user_id = %request.user_id))]
pub async fn create_checkout_session(
    stripe: &StripeConfig,
    request: &CheckoutRequest<'_>,
) -> Result<CheckoutSession, StripeError> {
    let response = http()
        .post(format!("{}/v1/checkout/sessions", stripe.api_base))
        .bearer_auth(stripe.secret_key.expose())
        .header("Idempotency-Key", request.idempotency_key)
        .form(&checkout_form(request))
        .send()
        .await
        .map_err(|e| StripeError::Unreachable(e.without_url().to_string()))?;
    let status = response.status();
    let body = response
        .bytes()
        .await
        .map_err(|e| StripeError::Unreachable(e.without_url().to_string()))?;
    if status.is_success() {
        return serde_json::from_slice(&body).map_err(|e| StripeError::Unreadable(e.to_string()));
    }
    match serde_json::from_slice::<ErrorDocument>(&body) {
        Ok(ErrorDocument { error }) => Err(StripeError::Api {
            status: status.as_u16(),
            kind: error.kind,
            code: error.code.unwrap_or_default(),
            message: error.message.unwrap_or_default(),
        }),
        Err(_) => Err(StripeError::Unreadable(format!(
            "status {status} without an error document"
        ))),
    }
}
