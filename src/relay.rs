//! The `relay` role: publishes the event log to Kafka (workers/src/kafka/relay.rs), with
//! health endpoints an orchestrator can probe.
//!
//! `/metrics` is served there too (the exposition of every role, `framegate_api::metrics`).
//! `/health/live` answers while the process runs; `/health/ready` answers 503 while the
//! broker is unreachable or refusing the relay's batches, with the reason and the number of
//! events still waiting in the log, so an outage is visible before anyone misses a message.

use std::net::SocketAddr;

use anyhow::Context as _;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use framegate_projections::log;
use framegate_projections::notify::Notifications;
use framegate_projections::Subscription;
use framegate_workers::kafka::relay::{self, RelayHealth};
use framegate_workers::kafka::KafkaConfig;
use serde_json::{json, Value};
use sqlx::PgPool;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// Runs the relay (and its health endpoints on `health_addr`) until `stopped` flips.
pub async fn role(
    pool: PgPool,
    config: KafkaConfig,
    health_addr: Option<SocketAddr>,
    notifications: Notifications,
    stopped: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let health = RelayHealth::default();
    let server = match health_addr {
        Some(addr) => {
            Some(serve_health(addr, pool.clone(), health.clone(), stopped.clone()).await?)
        }
        None => None,
    };
    let result = relay::run(pool, config, health, Some(notifications), stopped).await;
    if let Some(server) = server {
        let _ = server.await;
    }
    result.context("Kafka relay")
}

async fn serve_health(
    addr: SocketAddr,
    pool: PgPool,
    health: RelayHealth,
    mut stopped: watch::Receiver<bool>,
) -> anyhow::Result<JoinHandle<()>> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr} (FRAMEGATE_RELAY_HEALTH_ADDR)"))?;
    tracing::info!(%addr, "relay health endpoints listening");
    let app = Router::new()
        .route(
            "/health/live",
            get(|| async { Json(json!({"status": "ok"})) }),
        )
        .route("/health/ready", get(ready))
        .with_state((pool.clone(), health))
        .merge(framegate_api::metrics::router(
            pool,
            crate::metrics::token_from(|name| std::env::var(name).ok()),
        ));
    Ok(tokio::spawn(async move {
        let shutdown = async move {
            let _ = stopped.wait_for(|stop| *stop).await;
        };
        if let Err(error) = axum::serve(listener, app)
            .with_graceful_shutdown(shutdown)
            .await
        {
            tracing::warn!(%error, "relay health server failed");
        }
    }))
}

async fn ready(State((pool, health)): State<(PgPool, RelayHealth)>) -> (StatusCode, Json<Value>) {
    let status = health.status();
    let lag = async {
        let position = Subscription::new(relay::SUBSCRIPTION, pool.clone())
            .checkpoint()
            .await?;
        let mut conn = pool.acquire().await?;
        log::lag(&mut conn, position).await
    }
    .await;
    let (code, state) = if status.healthy {
        (StatusCode::OK, "ready")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "unavailable")
    };
    (
        code,
        Json(json!({
            "status": state,
            "kafka": status,
            "lag": lag.ok(),
        })),
    )
}
