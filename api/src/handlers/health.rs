//! Liveness and readiness.

use std::time::Instant;

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use serde::Serialize;
use utoipa::ToSchema;

use crate::state::AppState;

#[derive(Debug, Serialize, ToSchema)]
pub struct DependencyStatus {
    pub status: &'static str,
    pub latency_ms: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// What the log's subscriptions (in any process) could not handle.
#[derive(Debug, Default, Serialize, ToSchema)]
pub struct SubscriptionsStatus {
    /// Events parked in the dead-letter table, all subscriptions together.
    pub parked: i64,
    /// Subscriptions with parked events (`framegate projections status` lists them).
    pub with_parked: Vec<String>,
    /// Subscriptions stopped at a parked event until it is retried.
    pub stopped: Vec<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Readiness {
    /// `ready`, `degraded` (serving, but some subscription parked events) or `unavailable`.
    pub status: &'static str,
    pub postgres: DependencyStatus,
    /// Absent while Postgres does not answer.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subscriptions: Option<SubscriptionsStatus>,
}

/// The process is running.
#[utoipa::path(get, path = "/health/live", tag = "health", responses((status = 200)))]
pub async fn live() -> Json<serde_json::Value> {
    Json(serde_json::json!({"status": "ok"}))
}

/// The process can serve: every dependency answers. Parked events make it `degraded`, still
/// 200: an event no subscription can handle is no reason to stop serving requests.
#[utoipa::path(get, path = "/health/ready", tag = "health",
    responses((status = 200, body = Readiness), (status = 503, body = Readiness)))]
pub async fn ready(State(state): State<AppState>) -> (StatusCode, Json<Readiness>) {
    let started = Instant::now();
    let postgres = match sqlx::query("SELECT 1").execute(&state.pool).await {
        Ok(_) => DependencyStatus {
            status: "up",
            latency_ms: Some(started.elapsed().as_secs_f64() * 1000.0),
            error: None,
        },
        Err(error) => {
            // The detail (host names, roles) is for the operator's log, not for any caller.
            tracing::warn!(%error, "readiness: Postgres does not answer");
            DependencyStatus {
                status: "down",
                latency_ms: None,
                error: Some("Postgres does not answer".to_owned()),
            }
        }
    };
    let up = postgres.status == "up";
    let subscriptions = if up {
        subscriptions(&state).await
    } else {
        None
    };
    let degraded = subscriptions.as_ref().is_some_and(|s| s.parked > 0);
    let (code, status) = match (up, degraded) {
        (false, _) => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
        (true, true) => (StatusCode::OK, "degraded"),
        (true, false) => (StatusCode::OK, "ready"),
    };
    (
        code,
        Json(Readiness {
            status,
            postgres,
            subscriptions,
        }),
    )
}

async fn subscriptions(state: &AppState) -> Option<SubscriptionsStatus> {
    let rows: Result<Vec<(String, i64, bool)>, _> = sqlx::query_as(
        "SELECT subscription, count(*), bool_or(blocking) FROM parked_events
          GROUP BY subscription ORDER BY subscription",
    )
    .fetch_all(&state.pool)
    .await;
    match rows {
        Ok(rows) => Some(SubscriptionsStatus {
            parked: rows.iter().map(|(_, n, _)| n).sum(),
            stopped: rows
                .iter()
                .filter(|(_, _, blocking)| *blocking)
                .map(|(name, _, _)| name.clone())
                .collect(),
            with_parked: rows.into_iter().map(|(name, _, _)| name).collect(),
        }),
        Err(error) => {
            tracing::warn!(%error, "readiness: cannot read parked events");
            None
        }
    }
}
