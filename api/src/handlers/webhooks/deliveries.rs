//! An endpoint's delivery log: its deliveries newest first (status, attempts, last answer,
//! next retry), the attempts of one, a manual retry (also of a given-up delivery), and a
//! `webhook.test` delivery (docs/adr/0031-webhook-delivery.md). The endpoint must be the
//! caller's (checked in the `webhook_endpoints` read model; someone else's is 404).

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use chrono::{DateTime, Utc};
use framegate_commands::webhook_deliveries::{
    self, AttemptRow, DeliveryRow, Envelope, NewDelivery, Target, TEST_EVENT_TYPE,
};
use framegate_projections::read_models::webhook_endpoints::WebhookEndpointRow;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use crate::auth::Principal;
use crate::error::ApiError;
use crate::extract::{ApiPath, ApiQuery};
use crate::handlers::{page_limit, value_cursor, Page};
use crate::state::AppState;

use super::owned;

#[derive(Debug, Serialize, ToSchema)]
pub struct DeliveryResponse {
    pub id: Uuid,
    /// The `webhook-id` header and the body's `id`: the same on every attempt.
    pub message_id: String,
    /// `video.completed`, `webhook.test`, ...
    pub event_type: String,
    /// `pending`, `delivered` or `failed` (given up, or not sent: the endpoint was disabled).
    pub status: String,
    pub attempts: i32,
    /// The status code of the last answer, if there was one.
    pub response_status: Option<i32>,
    /// How long the last attempt took.
    pub latency_ms: Option<i32>,
    /// Why the last attempt did not count.
    pub error: Option<String>,
    /// When it is tried next (pending only).
    pub next_attempt_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub delivered_at: Option<DateTime<Utc>>,
}

impl From<DeliveryRow> for DeliveryResponse {
    fn from(row: DeliveryRow) -> Self {
        Self {
            id: row.delivery_id,
            message_id: row.message_id,
            event_type: row.event_type,
            status: row.status,
            attempts: row.attempts,
            response_status: row.last_status,
            latency_ms: row.last_latency_ms,
            error: row.last_error,
            next_attempt_at: row.next_attempt_at,
            created_at: row.created_at,
            updated_at: row.updated_at,
            delivered_at: row.delivered_at,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AttemptResponse {
    pub attempt: i32,
    pub started_at: DateTime<Utc>,
    pub response_status: Option<i32>,
    pub latency_ms: i32,
    pub error: Option<String>,
    /// The first 4 KiB of the answer.
    pub response_body: Option<String>,
}

impl From<AttemptRow> for AttemptResponse {
    fn from(row: AttemptRow) -> Self {
        Self {
            attempt: row.attempt,
            started_at: row.started_at,
            response_status: row.status,
            latency_ms: row.latency_ms,
            error: row.error,
            response_body: row.response_body,
        }
    }
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct DeliveriesQuery {
    pub cursor: Option<String>,
    /// 1 to 100, default 20.
    pub limit: Option<i64>,
}

#[derive(Debug, Deserialize)]
pub struct DeliveryPath {
    pub id: Uuid,
    pub delivery_id: Uuid,
}

/// An endpoint's deliveries, newest first.
#[utoipa::path(get, path = "/v1/webhooks/{id}/deliveries", tag = "webhooks", params(DeliveriesQuery),
    responses((status = 200, body = Page<DeliveryResponse>), (status = 404, description = "not_found")),
    security(("bearer" = [])))]
pub async fn list(
    State(state): State<AppState>,
    principal: Principal,
    ApiPath(id): ApiPath<Uuid>,
    ApiQuery(query): ApiQuery<DeliveriesQuery>,
) -> Result<Json<Page<DeliveryResponse>>, ApiError> {
    let limit = page_limit(query.limit)?;
    let before = value_cursor::<i64>(query.cursor.as_deref())?;
    let endpoint = owned(&state, &principal, id).await?;
    let rows =
        webhook_deliveries::list(&state.pool, endpoint.endpoint_id, before, limit + 1).await?;
    Ok(Json(Page::from_rows(
        rows,
        limit,
        |row| row.seq.to_string(),
        DeliveryResponse::from,
    )))
}

/// The attempts of one delivery, oldest first.
#[utoipa::path(get, path = "/v1/webhooks/{id}/deliveries/{delivery_id}/attempts", tag = "webhooks",
    responses((status = 200, body = Vec<AttemptResponse>), (status = 404, description = "not_found")),
    security(("bearer" = [])))]
pub async fn attempts(
    State(state): State<AppState>,
    principal: Principal,
    ApiPath(path): ApiPath<DeliveryPath>,
) -> Result<Json<Vec<AttemptResponse>>, ApiError> {
    let endpoint = owned(&state, &principal, path.id).await?;
    let rows =
        webhook_deliveries::attempts(&state.pool, endpoint.endpoint_id, path.delivery_id).await?;
    Ok(Json(rows.into_iter().map(AttemptResponse::from).collect()))
}

/// Sends a delivery again now, whatever its status, with a fresh retry window. One its queue
/// has not reached yet keeps its place in the endpoint's order (the deliveries after it wait
/// for it); one already delivered or given up is sent again on its own, holding nothing up.
#[utoipa::path(post, path = "/v1/webhooks/{id}/deliveries/{delivery_id}/retry", tag = "webhooks",
    responses((status = 202, body = DeliveryResponse), (status = 404, description = "not_found"),
              (status = 409, description = "endpoint_disabled")),
    security(("bearer" = [])))]
pub async fn retry(
    State(state): State<AppState>,
    principal: Principal,
    ApiPath(path): ApiPath<DeliveryPath>,
) -> Result<(StatusCode, Json<DeliveryResponse>), ApiError> {
    let endpoint = enabled(owned(&state, &principal, path.id).await?)?;
    let mut tx = state.pool.begin().await?;
    let row = webhook_deliveries::retry(&mut tx, endpoint.endpoint_id, path.delivery_id)
        .await?
        .ok_or(ApiError::NotFound)?;
    tx.commit().await?;
    Ok((StatusCode::ACCEPTED, Json(row.into())))
}

/// The `data` of a `webhook.test` delivery.
#[derive(Debug, Serialize)]
struct TestData {
    endpoint_id: Uuid,
    message: &'static str,
}

/// Queues a `webhook.test` delivery to the endpoint (after whatever it has pending).
#[utoipa::path(post, path = "/v1/webhooks/{id}/test", tag = "webhooks",
    responses((status = 202, body = DeliveryResponse), (status = 404, description = "not_found"),
              (status = 409, description = "endpoint_disabled")),
    security(("bearer" = [])))]
pub async fn test(
    State(state): State<AppState>,
    principal: Principal,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<(StatusCode, Json<DeliveryResponse>), ApiError> {
    let endpoint = enabled(owned(&state, &principal, id).await?)?;
    let message_id = webhook_deliveries::message_id(Uuid::now_v7());
    let now = Utc::now();
    let body = serde_json::to_string(&Envelope {
        id: &message_id,
        event_type: TEST_EVENT_TYPE,
        created_at: now,
        data: TestData {
            endpoint_id: endpoint.endpoint_id,
            message: "a test delivery from Framegate",
        },
    })
    .map_err(ApiError::internal)?;
    let delivery = NewDelivery {
        target: Target::Endpoint(endpoint.endpoint_id),
        owner: principal.user_id.as_uuid(),
        message_id,
        event_type: TEST_EVENT_TYPE.to_owned(),
        event_at: now,
        video_id: None,
        body,
        // The test delivery is part of the request that asked for it.
        trace: framegate_commands::TraceContext::current(),
    };
    let mut tx = state.pool.begin().await?;
    let ids = webhook_deliveries::enqueue(&mut tx, &[delivery]).await?;
    let id = ids
        .first()
        .copied()
        .ok_or_else(|| ApiError::internal("the test delivery was not stored"))?;
    let row = webhook_deliveries::get(&mut *tx, endpoint.endpoint_id, id)
        .await?
        .ok_or_else(|| ApiError::internal("the test delivery was not stored"))?;
    tx.commit().await?;
    Ok((StatusCode::ACCEPTED, Json(row.into())))
}

/// Deliveries to a disabled endpoint would not be sent: 409 says so at once.
fn enabled(endpoint: WebhookEndpointRow) -> Result<WebhookEndpointRow, ApiError> {
    match &endpoint.disabled_reason {
        None => Ok(endpoint),
        Some(reason) => Err(ApiError::Conflict {
            code: "endpoint_disabled",
            message: format!("the endpoint is disabled ({reason}); enable it first (PATCH {{\"enabled\": true}})"),
        }),
    }
}
