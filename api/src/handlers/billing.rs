//! Buying credits: the pack catalog, Stripe Checkout, the caller's purchases, and Stripe's
//! webhook (the logic lives in `crate::billing`).

use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::Json;
use chrono::{DateTime, Utc};
use framegate_projections::read_models::credit_purchases::{self, PurchaseRow};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{metadata, page_limit, value_cursor, Page, PageQuery};
use crate::auth::Principal;
use crate::billing::signature::{self, SignatureError};
use crate::billing::stripe::{self, CheckoutRequest, StripeError};
use crate::billing::{stripe_idempotency_key, webhook, StripeConfig};
use crate::error::ApiError;
use crate::extract::{user_agent, ApiJson, ApiQuery, ClientIp};
use crate::idempotency::IDEMPOTENCY_KEY;
use crate::state::AppState;

#[derive(Debug, Serialize, ToSchema)]
pub struct PackResponse {
    pub name: String,
    pub credits: i64,
    /// The price in the currency's smallest unit (cents for USD).
    pub amount: i64,
    /// ISO 4217, lower case.
    pub currency: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct PacksResponse {
    pub items: Vec<PackResponse>,
    /// Whether `POST /v1/billing/checkout` is configured (a Stripe account).
    pub checkout_enabled: bool,
}

/// The credit packs on sale.
#[utoipa::path(get, path = "/v1/billing/packs", tag = "billing",
    responses((status = 200, body = PacksResponse)))]
pub async fn packs(State(state): State<AppState>) -> Json<PacksResponse> {
    let billing = &state.config.billing;
    Json(PacksResponse {
        items: billing
            .packs
            .iter()
            .map(|p| PackResponse {
                name: p.name.clone(),
                credits: p.credits,
                amount: p.amount,
                currency: p.currency.clone(),
            })
            .collect(),
        checkout_enabled: billing.stripe.is_some(),
    })
}

fn stripe_config(state: &AppState) -> Result<&StripeConfig, ApiError> {
    state
        .config
        .billing
        .stripe
        .as_ref()
        .ok_or_else(|| ApiError::BadRequest {
            status: StatusCode::SERVICE_UNAVAILABLE,
            code: "billing_disabled",
            message: "buying credits is not configured on this server".to_owned(),
        })
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CheckoutBody {
    /// The name of a pack from `GET /v1/billing/packs`.
    pub pack: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct CheckoutResponse {
    /// The Checkout Session (`cs_...`): the `payment_reference` of the purchase it makes.
    pub id: String,
    /// Where to send the buyer to pay.
    pub url: String,
}

/// Opens a Stripe Checkout Session for a pack; the credits arrive with Stripe's webhook once
/// it is paid. Honours `Idempotency-Key` (the same key opens one session).
#[utoipa::path(post, path = "/v1/billing/checkout", tag = "billing", request_body = CheckoutBody,
    responses((status = 201, body = CheckoutResponse),
              (status = 422, description = "unknown_pack"),
              (status = 502, description = "payment_provider_error, payment_provider_unavailable"),
              (status = 503, description = "billing_disabled")),
    security(("bearer" = [])))]
pub async fn checkout(
    State(state): State<AppState>,
    principal: Principal,
    headers: HeaderMap,
    ApiJson(body): ApiJson<CheckoutBody>,
) -> Result<(StatusCode, Json<CheckoutResponse>), ApiError> {
    let stripe_config = stripe_config(&state)?;
    let billing = &state.config.billing;
    let pack = billing.pack(&body.pack).ok_or_else(|| {
        ApiError::field(
            "pack",
            "unknown_pack",
            "no such pack; see GET /v1/billing/packs",
        )
    })?;
    let caller_key = headers.get(IDEMPOTENCY_KEY).and_then(|v| v.to_str().ok());
    let idempotency_key = stripe_idempotency_key(principal.user_id, caller_key);
    let request = CheckoutRequest {
        pack,
        user_id: principal.user_id,
        success_url: &billing.success_url,
        cancel_url: &billing.cancel_url,
        idempotency_key: &idempotency_key,
    };
    let session = stripe::create_checkout_session(stripe_config, &request)
        .await
        .map_err(|error| {
            tracing::warn!(%error, "Stripe checkout failed");
            match error {
                StripeError::Unreachable(_) => ApiError::BadGateway {
                    code: "payment_provider_unavailable",
                    message: "the payment provider could not be reached; try again".to_owned(),
                },
                StripeError::Api { .. } | StripeError::Unreadable(_) => ApiError::BadGateway {
                    code: "payment_provider_error",
                    message: "the payment provider refused to open a checkout".to_owned(),
                },
            }
        })?;
    tracing::info!(session = %session.id, pack = %pack.name, "checkout opened");
    Ok((
        StatusCode::CREATED,
        Json(CheckoutResponse {
            id: session.id,
            url: session.url,
        }),
    ))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct PurchaseResponse {
    /// The Checkout Session for Stripe purchases.
    pub payment_reference: String,
    /// `stripe`, or absent for credits bought outside the API.
    pub provider: Option<String>,
    pub pack: Option<String>,
    pub credits: i64,
    /// Smallest currency unit.
    pub amount_paid: Option<i64>,
    pub currency: Option<String>,
    /// `paid`, `partially_refunded` or `refunded`.
    pub status: String,
    /// Refunded so far, smallest currency unit.
    pub refunded: i64,
    /// Credits refunds took back.
    pub credits_revoked: i64,
    /// Credits refunds asked back that were already spent or reserved.
    pub revocation_shortfall: i64,
    pub payment_intent: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl From<PurchaseRow> for PurchaseResponse {
    fn from(row: PurchaseRow) -> Self {
        let status = match row.amount_paid {
            _ if row.refunded <= 0 => "paid",
            Some(paid) if row.refunded < paid => "partially_refunded",
            _ => "refunded",
        };
        Self {
            payment_reference: row.payment_reference,
            provider: row.provider,
            pack: row.pack,
            credits: row.credits,
            amount_paid: row.amount_paid,
            currency: row.currency,
            status: status.to_owned(),
            refunded: row.refunded,
            credits_revoked: row.credits_revoked,
            revocation_shortfall: row.revocation_shortfall,
            payment_intent: row.payment_intent,
            created_at: row.created_at,
            updated_at: row.updated_at,
        }
    }
}

/// The caller's purchases, newest first.
#[utoipa::path(get, path = "/v1/billing/purchases", tag = "billing", params(PageQuery),
    responses((status = 200, body = Page<PurchaseResponse>)), security(("bearer" = [])))]
pub async fn purchases(
    State(state): State<AppState>,
    principal: Principal,
    ApiQuery(query): ApiQuery<PageQuery>,
) -> Result<Json<Page<PurchaseResponse>>, ApiError> {
    let limit = page_limit(query.limit)?;
    let before = value_cursor::<i64>(query.cursor.as_deref())?;
    let rows = credit_purchases::list(&state.pool, principal.user_id, before, limit + 1).await?;
    Ok(Json(Page::from_rows(
        rows,
        limit,
        |r| r.position.to_string(),
        PurchaseResponse::from,
    )))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct WebhookResponse {
    pub received: bool,
    /// `processed`, `duplicate` (handled before) or `ignored`.
    #[schema(value_type = String)]
    pub outcome: webhook::Outcome,
}

/// Stripe's webhook: `checkout.session.completed` credits a paid purchase once,
/// `charge.refunded` takes back what is left of it. The body is the Stripe event, read as
/// bytes because the signature covers them exactly; authenticated by `Stripe-Signature`.
#[utoipa::path(post, path = "/v1/billing/stripe/webhook", tag = "billing",
    responses((status = 200, body = WebhookResponse),
              (status = 400, description = "invalid_signature, stale_signature, malformed_event"),
              (status = 422, description = "unusable_event"),
              (status = 503, description = "billing_disabled, dependency_unavailable")))]
pub async fn stripe_webhook(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    headers: HeaderMap,
    request: Request,
) -> Result<Json<WebhookResponse>, ApiError> {
    let stripe_config = stripe_config(&state)?;
    let body = axum::body::to_bytes(request.into_body(), state.config.body_limit)
        .await
        .map_err(|_| ApiError::BadRequest {
            status: StatusCode::PAYLOAD_TOO_LARGE,
            code: "body_too_large",
            message: "the event is larger than the body limit".to_owned(),
        })?;
    let header = headers
        .get("stripe-signature")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    signature::verify(
        stripe_config.webhook_secret.expose(),
        &body,
        header,
        Utc::now().timestamp(),
    )
    .map_err(|error| ApiError::BadRequest {
        status: StatusCode::BAD_REQUEST,
        code: match error {
            SignatureError::Stale => "stale_signature",
            SignatureError::Malformed | SignatureError::Mismatch => "invalid_signature",
        },
        message: error.to_string(),
    })?;
    let event = webhook::parse(&body)?;
    let (id, kind) = (event.id.clone(), event.kind.clone());
    let mut meta = metadata(None, ip, user_agent(&headers));
    meta.causation_id = format!("stripe_event:{id}");
    let outcome = webhook::handle(&state, event, &meta).await?;
    tracing::info!(event_id = %id, event_type = %kind, ?outcome, "Stripe event");
    Ok(Json(WebhookResponse {
        received: true,
        outcome,
    }))
}
