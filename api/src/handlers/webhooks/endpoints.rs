//! Webhook endpoints of the signed-in user: create (secret shown once), list, get, update
//! (settings, enable, disable), delete, rotate the secret, and the default secret that signs
//! per-request `webhook_url`s (docs/adr/0030-webhook-endpoints.md).

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::{DateTime, Utc};
use framegate_commands::webhooks::{self, NewEndpoint};
use framegate_commands::CommandError;
use framegate_domain::{WebhookCommand, WebhookEndpointId, WebhookError};
use framegate_projections::read_models::webhook_endpoints::{self, WebhookEndpointRow};
use serde::{Deserialize, Deserializer, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::auth::Principal;
use crate::error::ApiError;
use crate::extract::{user_agent, ApiJson, ApiPath, ApiQuery, ClientIp};
use crate::handlers::{metadata, page_limit, value_cursor, Page, PageQuery};
use crate::state::AppState;

use super::owned;

/// How many endpoints a user may have (Stripe allows 16).
pub const MAX_ENDPOINTS_PER_USER: i64 = 16;

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateEndpointRequest {
    /// Where deliveries are POSTed: an absolute `https` (or `http`) URL.
    pub url: String,
    /// The event types to receive; default: every video event but `video.progress`.
    pub events: Option<Vec<String>>,
    pub description: Option<String>,
}

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateEndpointRequest {
    pub url: Option<String>,
    pub events: Option<Vec<String>>,
    /// `null` clears it.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>)]
    pub description: Option<Option<String>>,
    /// `false` stops deliveries; `true` resumes them (also after the platform disabled it).
    pub enabled: Option<bool>,
}

/// A field that is present (`Some`, possibly `Some(None)` for `null`), as opposed to absent.
fn present<'de, D: Deserializer<'de>, T: Deserialize<'de>>(
    deserializer: D,
) -> Result<Option<T>, D::Error> {
    T::deserialize(deserializer).map(Some)
}

#[derive(Debug, Serialize, ToSchema)]
pub struct EndpointResponse {
    pub id: Uuid,
    pub url: String,
    pub events: Vec<String>,
    pub description: Option<String>,
    /// `enabled` or `disabled`.
    pub status: &'static str,
    /// Why it is disabled: `owner`, `gone` (it answered 410) or `failing`.
    pub disabled_reason: Option<String>,
    pub disabled_detail: Option<String>,
    /// The first 16 hex digits of the SHA-256 of the current secret.
    pub secret_fingerprint: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl From<WebhookEndpointRow> for EndpointResponse {
    fn from(row: WebhookEndpointRow) -> Self {
        Self {
            id: row.endpoint_id,
            status: if row.is_enabled() {
                "enabled"
            } else {
                "disabled"
            },
            url: row.url,
            events: row.events,
            description: row.description,
            disabled_reason: row.disabled_reason,
            disabled_detail: row.disabled_detail,
            secret_fingerprint: row.secret_fingerprint,
            created_at: row.created_at,
            updated_at: row.updated_at,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct CreatedEndpoint {
    #[serde(flatten)]
    pub endpoint: EndpointResponse,
    /// The signing secret (`whsec_...`), shown this once.
    pub secret: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct RotatedSecret {
    #[serde(flatten)]
    pub endpoint: EndpointResponse,
    /// The new signing secret, shown this once.
    pub secret: String,
    /// Until then deliveries carry a signature with the previous secret too.
    pub previous_secret_expires_at: DateTime<Utc>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct DefaultSecret {
    /// Signs deliveries to the `webhook_url` given with a video request.
    pub secret: String,
}

/// Creates a webhook endpoint. The secret is in this response only.
#[utoipa::path(post, path = "/v1/webhooks", tag = "webhooks", request_body = CreateEndpointRequest,
    responses((status = 201, body = CreatedEndpoint),
              (status = 422, description = "invalid_url, unknown_event_type, no_event_types, invalid_description, too_many_endpoints", body = crate::error::Problem)),
    security(("bearer" = [])))]
pub async fn create(
    State(state): State<AppState>,
    principal: Principal,
    ClientIp(ip): ClientIp,
    headers: HeaderMap,
    ApiJson(body): ApiJson<CreateEndpointRequest>,
) -> Result<Response, ApiError> {
    if webhook_endpoints::count(&state.pool, principal.user_id).await? >= MAX_ENDPOINTS_PER_USER {
        return Err(ApiError::Unprocessable {
            code: "too_many_endpoints",
            message: format!(
                "at most {MAX_ENDPOINTS_PER_USER} webhook endpoints per user; delete one first"
            ),
        });
    }
    let endpoint_id = WebhookEndpointId::from_uuid(Uuid::now_v7());
    let meta = metadata(Some(&principal), ip, user_agent(&headers));
    let endpoint = NewEndpoint {
        endpoint_id,
        owner: principal.user_id,
        url: body.url,
        events: body.events,
        description: body.description,
    };
    let secret = webhooks::create(&state.store, endpoint, &meta)
        .await
        .map_err(refused)?;
    let row = owned(&state, &principal, endpoint_id.as_uuid()).await?;
    let created = CreatedEndpoint {
        endpoint: row.into(),
        secret: secret.expose(),
    };
    Ok((StatusCode::CREATED, Json(created)).into_response())
}

/// The caller's endpoints, oldest first. Never the secrets.
#[utoipa::path(get, path = "/v1/webhooks", tag = "webhooks", params(PageQuery),
    responses((status = 200, body = Page<EndpointResponse>)), security(("bearer" = [])))]
pub async fn list(
    State(state): State<AppState>,
    principal: Principal,
    ApiQuery(query): ApiQuery<PageQuery>,
) -> Result<Json<Page<EndpointResponse>>, ApiError> {
    let limit = page_limit(query.limit)?;
    let after = value_cursor::<Uuid>(query.cursor.as_deref())?;
    let rows = webhook_endpoints::list(&state.pool, principal.user_id, after, limit + 1).await?;
    Ok(Json(Page::from_rows(
        rows,
        limit,
        |row| row.endpoint_id.to_string(),
        EndpointResponse::from,
    )))
}

/// One of the caller's endpoints.
#[utoipa::path(get, path = "/v1/webhooks/{id}", tag = "webhooks",
    params(("id" = Uuid, Path, description = "endpoint id")),
    responses((status = 200, body = EndpointResponse),
              (status = 404, description = "not_found", body = crate::error::Problem)),
    security(("bearer" = [])))]
pub async fn get(
    State(state): State<AppState>,
    principal: Principal,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<Json<EndpointResponse>, ApiError> {
    Ok(Json(owned(&state, &principal, id).await?.into()))
}

/// Changes an endpoint's URL, events or description, or enables or disables it.
#[utoipa::path(patch, path = "/v1/webhooks/{id}", tag = "webhooks",
    params(("id" = Uuid, Path, description = "endpoint id")), request_body = UpdateEndpointRequest,
    responses((status = 200, body = EndpointResponse),
              (status = 404, description = "not_found", body = crate::error::Problem),
              (status = 422, description = "invalid_url, unknown_event_type, no_event_types, invalid_description", body = crate::error::Problem)),
    security(("bearer" = [])))]
pub async fn update(
    State(state): State<AppState>,
    principal: Principal,
    ClientIp(ip): ClientIp,
    headers: HeaderMap,
    ApiPath(id): ApiPath<Uuid>,
    ApiJson(body): ApiJson<UpdateEndpointRequest>,
) -> Result<Json<EndpointResponse>, ApiError> {
    let endpoint_id = WebhookEndpointId::from_uuid(id);
    let command = WebhookCommand::Update {
        by: principal.user_id,
        url: body.url,
        events: body.events,
        description: body.description,
        enabled: body.enabled,
    };
    let meta = metadata(Some(&principal), ip, user_agent(&headers));
    webhooks::execute(&state.store, endpoint_id, command, &meta)
        .await
        .map_err(refused)?;
    Ok(Json(
        owned(&state, &principal, endpoint_id.as_uuid())
            .await?
            .into(),
    ))
}

/// Deletes an endpoint and its secrets; nothing more is delivered to it.
#[utoipa::path(delete, path = "/v1/webhooks/{id}", tag = "webhooks",
    params(("id" = Uuid, Path, description = "endpoint id")),
    responses((status = 204, description = "deleted"),
              (status = 404, description = "not_found", body = crate::error::Problem)),
    security(("bearer" = [])))]
pub async fn delete(
    State(state): State<AppState>,
    principal: Principal,
    ClientIp(ip): ClientIp,
    headers: HeaderMap,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<StatusCode, ApiError> {
    let meta = metadata(Some(&principal), ip, user_agent(&headers));
    webhooks::delete(
        &state.store,
        WebhookEndpointId::from_uuid(id),
        principal.user_id,
        &meta,
    )
    .await
    .map_err(refused)?;
    Ok(StatusCode::NO_CONTENT)
}

/// Makes a new secret. The previous one goes on signing beside it for 24 hours (both
/// signatures in `webhook-signature`), so receivers can switch without missing a delivery.
#[utoipa::path(post, path = "/v1/webhooks/{id}/rotate-secret", tag = "webhooks",
    params(("id" = Uuid, Path, description = "endpoint id")),
    responses((status = 200, body = RotatedSecret),
              (status = 404, description = "not_found", body = crate::error::Problem)),
    security(("bearer" = [])))]
pub async fn rotate_secret(
    State(state): State<AppState>,
    principal: Principal,
    ClientIp(ip): ClientIp,
    headers: HeaderMap,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<Json<RotatedSecret>, ApiError> {
    let endpoint_id = WebhookEndpointId::from_uuid(id);
    let meta = metadata(Some(&principal), ip, user_agent(&headers));
    let (secret, expires_at) =
        webhooks::rotate(&state.store, endpoint_id, principal.user_id, &meta)
            .await
            .map_err(refused)?;
    Ok(Json(RotatedSecret {
        endpoint: owned(&state, &principal, endpoint_id.as_uuid())
            .await?
            .into(),
        secret: secret.expose(),
        previous_secret_expires_at: expires_at,
    }))
}

/// The secret that signs deliveries to the `webhook_url` of a video request (made on first
/// use; the same every time).
#[utoipa::path(get, path = "/v1/webhooks/default/secret", tag = "webhooks",
    responses((status = 200, body = DefaultSecret)), security(("bearer" = [])))]
pub async fn default_secret(
    State(state): State<AppState>,
    principal: Principal,
) -> Result<Json<DefaultSecret>, ApiError> {
    let mut conn = state.pool.acquire().await?;
    let secret = webhooks::default_secret(&mut conn, principal.user_id).await?;
    Ok(Json(DefaultSecret {
        secret: secret.expose(),
    }))
}

/// The domain's refusals, with the field they are about; someone else's endpoint is 404.
fn refused(error: CommandError<WebhookError>) -> ApiError {
    match error {
        CommandError::Domain(WebhookError::NotFound) => ApiError::NotFound,
        CommandError::Domain(error) => {
            let field = match error {
                WebhookError::InvalidUrl => "url",
                WebhookError::UnknownEventType(_) | WebhookError::NoEventTypes => "events",
                WebhookError::InvalidDescription => "description",
                _ => return CommandError::Domain(error).into(),
            };
            ApiError::field(field, error.code(), error.to_string())
        }
        other => other.into(),
    }
}
