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

#[derive(Debug, Serialize, ToSchema)]
pub struct Readiness {
    pub status: &'static str,
    pub postgres: DependencyStatus,
}

/// The process is running.
#[utoipa::path(get, path = "/health/live", tag = "health", responses((status = 200)))]
pub async fn live() -> Json<serde_json::Value> {
    Json(serde_json::json!({"status": "ok"}))
}

/// The process can serve: every dependency answers.
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
    let status = if up {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        status,
        Json(Readiness {
            status: if up { "ready" } else { "unavailable" },
            postgres,
        }),
    )
}
