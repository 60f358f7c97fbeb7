//! The audit log for administrators: filtered event timelines and whole event streams.
//!
//! Both read the event store through `framegate_projections::audit`, which redacts every
//! entry, and mirror `framegate audit` / `framegate events show` (docs/adr/0011-audit-log.md).

use crate::extract::{ApiPath, ApiQuery};
use axum::extract::State;
use axum::Json;
use chrono::{DateTime, Utc};
use framegate_projections::audit::{self, AuditEntry, AuditFilter, FilterError};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use super::{page_limit, Page};
use crate::auth::Admin;
use crate::error::ApiError;
use crate::state::AppState;

/// Filters of `GET /v1/admin/audit`; all optional, all narrowing. Taken as strings so that a
/// malformed value is a 422 naming the field, like every other validation error.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AuditQuery {
    /// One aggregate: `user:<id>`, `credits:<id>`, `video:<id>` or `image:<id>`.
    pub aggregate: Option<String>,
    /// `system`, `user:<id>` or a user's id.
    pub actor: Option<String>,
    /// An event type, e.g. `VideoRequested`.
    pub event_type: Option<String>,
    /// Recorded at or after (RFC 3339).
    pub since: Option<String>,
    /// Recorded before (RFC 3339).
    pub until: Option<String>,
    pub correlation_id: Option<String>,
    /// From a previous page's `next_cursor`.
    pub cursor: Option<String>,
    /// 1 to 100, default 20.
    pub limit: Option<i64>,
}

/// One event of the audit log; secrets in payload and metadata are `[redacted]`.
#[derive(Debug, Serialize, ToSchema)]
pub struct AuditEntryResponse {
    pub global_position: i64,
    pub event_id: Uuid,
    pub recorded_at: DateTime<Utc>,
    /// `video:<id>`, `user:<id>`, `credits:<id>` or `image:<id>`.
    pub aggregate: String,
    pub aggregate_type: String,
    pub aggregate_id: String,
    pub sequence: i64,
    pub event_type: String,
    pub event_version: String,
    /// `system` or `user:<id>`.
    pub actor: Option<String>,
    pub request_id: Option<String>,
    pub correlation_id: Option<String>,
    /// `request:<id>` or `event:<id>`.
    pub causation_id: Option<String>,
    pub client_ip: Option<String>,
    pub user_agent: Option<String>,
    #[schema(value_type = Object)]
    pub payload: Value,
    #[schema(value_type = Object)]
    pub metadata: Value,
}

impl From<AuditEntry> for AuditEntryResponse {
    fn from(e: AuditEntry) -> Self {
        Self {
            global_position: e.global_position,
            event_id: e.event_id,
            recorded_at: e.recorded_at,
            aggregate: e.aggregate,
            aggregate_type: e.aggregate_type,
            aggregate_id: e.aggregate_id,
            sequence: e.sequence,
            event_type: e.event_type,
            event_version: e.event_version,
            actor: e.actor,
            request_id: e.request_id,
            correlation_id: e.correlation_id,
            causation_id: e.causation_id,
            client_ip: e.client_ip,
            user_agent: e.user_agent,
            payload: e.payload,
            metadata: e.metadata,
        }
    }
}

/// Every event of one aggregate, in stream order.
#[derive(Debug, Serialize, ToSchema)]
pub struct EventStreamResponse {
    pub aggregate: String,
    pub events: Vec<AuditEntryResponse>,
}

/// The audit log: events in time order, filtered.
#[utoipa::path(get, path = "/v1/admin/audit", tag = "admin", params(AuditQuery),
    responses((status = 200, body = Page<AuditEntryResponse>), (status = 403, description = "forbidden"),
              (status = 422, description = "validation_failed")),
    security(("bearer" = [])))]
pub async fn list(
    State(state): State<AppState>,
    _admin: Admin,
    ApiQuery(query): ApiQuery<AuditQuery>,
) -> Result<Json<Page<AuditEntryResponse>>, ApiError> {
    let limit = page_limit(query.limit)?;
    let after = query
        .cursor
        .as_deref()
        .map(|c| {
            c.parse::<i64>()
                .map_err(|_| invalid("cursor", "invalid_cursor"))
        })
        .transpose()?;
    let filter = filter(&query)?;
    let rows = audit::query(&state.pool, &filter, after, limit + 1).await?;
    Ok(Json(Page::from_rows(
        rows,
        limit,
        |e| e.global_position.to_string(),
        AuditEntryResponse::from,
    )))
}

/// One aggregate's event stream with full (redacted) payloads and metadata.
#[utoipa::path(get, path = "/v1/admin/events/{aggregate}/{id}", tag = "admin",
    params(("aggregate" = String, Path, description = "user, credits, video or image"),
           ("id" = Uuid, Path, description = "aggregate id")),
    responses((status = 200, body = EventStreamResponse), (status = 403, description = "forbidden"),
              (status = 404, description = "not_found")),
    security(("bearer" = [])))]
pub async fn stream(
    State(state): State<AppState>,
    _admin: Admin,
    ApiPath((aggregate, id)): ApiPath<(String, String)>,
) -> Result<Json<EventStreamResponse>, ApiError> {
    let reference = format!("{aggregate}:{id}");
    let (stored, id) = audit::parse_aggregate(&reference).map_err(|_| ApiError::NotFound)?;
    let events = audit::stream(&state.pool, stored, &id).await?;
    if events.is_empty() {
        return Err(ApiError::NotFound);
    }
    Ok(Json(EventStreamResponse {
        aggregate: reference,
        events: events.into_iter().map(Into::into).collect(),
    }))
}

fn filter(query: &AuditQuery) -> Result<AuditFilter, ApiError> {
    let time = |field: &str, value: &Option<String>| {
        value
            .as_deref()
            .map(|v| {
                DateTime::parse_from_rfc3339(v)
                    .map(|t| t.with_timezone(&Utc))
                    .map_err(|_| invalid(field, "invalid_time"))
            })
            .transpose()
    };
    let aggregate = query
        .aggregate
        .as_deref()
        .map(audit::parse_aggregate)
        .transpose()
        .map_err(|e| filter_error("aggregate", &e))?
        .map(|(stored, id)| (stored.to_owned(), id));
    let actor = query
        .actor
        .as_deref()
        .map(audit::parse_actor)
        .transpose()
        .map_err(|e| filter_error("actor", &e))?;
    let correlation_id = query
        .correlation_id
        .as_deref()
        .map(|c| {
            c.parse::<Uuid>()
                .map_err(|_| invalid("correlation_id", "invalid_uuid"))
        })
        .transpose()?;
    Ok(AuditFilter {
        aggregate,
        actor,
        event_type: query.event_type.clone(),
        from: time("since", &query.since)?,
        to: time("until", &query.until)?,
        correlation_id,
    })
}

fn invalid(field: &str, code: &str) -> ApiError {
    ApiError::field(field, code, format!("this {field} is not valid"))
}

fn filter_error(field: &str, error: &FilterError) -> ApiError {
    ApiError::field(field, "invalid_filter", error.to_string())
}
