//! The HTTP API (axum): command and query endpoints under `/v1`.
//!
//! `router` assembles the endpoints with the cross-cutting layers: request ids, the body
//! deadline, panic catching, rate limits, idempotency keys and body limits; `serve` runs it
//! on our own accept loop (`server`), which bounds connections and slow clients. Handlers live in `handlers/`, one
//! file per group; authentication in `auth/`; every error is an `ApiError` (problem+json).
//! The OpenAI-compatible Videos API (`openai/`) is nested under `FRAMEGATE_OPENAI_PREFIX`.
//! The web console (`/console`) and the API reference (`/docs`) are files embedded in the
//! binary (`console`).

pub mod auth;
pub mod billing;
pub mod body_deadline;
pub mod client_ip;
pub mod config;
pub mod console;
pub mod control_chars;
pub mod error;
pub mod extract;
pub mod handlers;
pub mod idempotency;
pub mod images;
pub mod mail;
pub mod metrics;
pub mod notifications;
pub mod openai;
pub mod openapi;
pub mod rate_limit;
pub mod server;
pub mod state;
pub mod streams;
mod strict_json;
pub mod video_requests;

use std::future::Future;

use axum::extract::{DefaultBodyLimit, MatchedPath, Request};
use axum::http::{HeaderName, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use framegate_commands::trace_context::{self, TraceContext};
use tower_http::catch_panic::CatchPanicLayer;
use tracing::field::Empty;
use tracing::Instrument as _;
use uuid::Uuid;

use crate::error::ApiError;
use crate::handlers::{
    admin, api_keys, auth as auth_handlers, billing as billing_handlers, blobs, credits, health,
    images as image_handlers, videos, webhooks::deliveries, webhooks::endpoints as webhooks,
};
pub use crate::state::AppState;

pub const REQUEST_ID_HEADER: HeaderName = HeaderName::from_static("x-request-id");

tokio::task_local! {
    /// The current request's id, for problem documents and logs.
    pub static REQUEST_ID: String;
}

pub fn router(state: AppState) -> Router {
    let body_limit = state.config.body_limit;
    // In production without a token, the public port keeps its figures to itself: they are
    // served on FRAMEGATE_METRICS_ADDR (an internal address) only.
    let metrics_endpoint =
        if !state.config.deployment.is_production() || state.config.metrics_token.is_some() {
            metrics::router(state.pool.clone(), state.config.metrics_token.clone())
        } else {
            Router::new()
        };
    let image_upload_limit = image_handlers::upload_body_limit(&state.config.images);
    let v1 = Router::new()
        .route("/auth/register", post(auth_handlers::register))
        .route("/auth/verify-email", post(auth_handlers::verify_email))
        .route("/auth/login", post(auth_handlers::login))
        .route("/auth/refresh", post(auth_handlers::refresh_tokens))
        .route("/auth/logout", post(auth_handlers::logout))
        .route("/auth/logout-all", post(auth_handlers::logout_all))
        .route(
            "/auth/password-reset",
            post(auth_handlers::request_password_reset),
        )
        .route(
            "/auth/password-reset/confirm",
            post(auth_handlers::confirm_password_reset),
        )
        .route(
            "/me",
            get(auth_handlers::me)
                .patch(auth_handlers::update_me)
                .delete(auth_handlers::delete_me),
        )
        .route("/api-keys", post(api_keys::create).get(api_keys::list))
        .route("/api-keys/{id}", axum::routing::delete(api_keys::revoke))
        .route("/credits", get(credits::balance))
        .route("/credits/ledger", get(credits::ledger))
        .route("/billing/packs", get(billing_handlers::packs))
        .route("/billing/checkout", post(billing_handlers::checkout))
        .route("/billing/purchases", get(billing_handlers::purchases))
        .route(
            "/billing/stripe/webhook",
            post(billing_handlers::stripe_webhook),
        )
        .route("/admin/users", get(admin::list_users))
        .route("/admin/users/{id}/credits", post(admin::grant_credits))
        .route("/admin/users/{id}/role", post(admin::change_role))
        .route("/admin/users/{id}/disable", post(admin::disable))
        .route("/admin/users/{id}/erase", post(admin::erase))
        .route("/admin/audit", get(handlers::audit::list))
        .route(
            "/admin/events/{aggregate}/{id}",
            get(handlers::audit::stream),
        )
        .route("/videos", post(videos::create).get(videos::list))
        .route("/videos/estimate", post(videos::estimate))
        .route("/videos/{id}", get(videos::get))
        .route("/videos/{id}/cancel", post(videos::cancel))
        .route("/videos/{id}/content", get(videos::content))
        .route("/videos/{id}/events", get(videos::event_stream::events))
        .route("/providers", get(videos::providers))
        .route(
            "/images",
            post(image_handlers::upload)
                .layer(DefaultBodyLimit::max(image_upload_limit))
                .get(image_handlers::list),
        )
        .route(
            "/images/{id}",
            get(image_handlers::get).delete(image_handlers::delete),
        )
        .route("/blobs/{*key}", get(blobs::download))
        .route("/webhooks", post(webhooks::create).get(webhooks::list))
        .route("/webhooks/default/secret", get(webhooks::default_secret))
        .route(
            "/webhooks/{id}",
            get(webhooks::get)
                .patch(webhooks::update)
                .delete(webhooks::delete),
        )
        .route(
            "/webhooks/{id}/rotate-secret",
            post(webhooks::rotate_secret),
        )
        .route("/webhooks/{id}/test", post(deliveries::test))
        .route("/webhooks/{id}/deliveries", get(deliveries::list))
        .route(
            "/webhooks/{id}/deliveries/{delivery_id}/retry",
            post(deliveries::retry),
        )
        .route(
            "/webhooks/{id}/deliveries/{delivery_id}/attempts",
            get(deliveries::attempts),
        );
    let openai_prefix: std::sync::Arc<str> = state.config.openai_prefix.as_str().into();
    Router::new()
        .nest("/v1", v1)
        .nest(&openai_prefix, openai::router(image_upload_limit))
        .route("/health/live", get(health::live))
        .route("/health/ready", get(health::ready))
        .route("/openapi.json", get(openapi::document))
        .merge(metrics_endpoint)
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            idempotency::layer,
        ))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            rate_limit::layer,
        ))
        // Fixed bytes from memory: outside the rate limits and idempotency (`console`).
        .merge(console::router(&state.config.blobs))
        .layer(CatchPanicLayer::custom(
            |_: Box<dyn std::any::Any + Send>| {
                ApiError::internal("handler panicked").into_response()
            },
        ))
        // Outside every layer that reads a body, inside the request id its 408 carries.
        .layer(middleware::from_fn_with_state(
            state.clone(),
            body_deadline::layer,
        ))
        // Outside every layer that may refuse a request: its problem documents leave the
        // OpenAI-compatible door in OpenAI's error shape.
        .layer(middleware::from_fn_with_state(
            openai_prefix,
            openai::errors::layer,
        ))
        .layer(middleware::from_fn(request_context))
        // Outermost: every answer counts, whichever layer made it.
        .layer(middleware::from_fn(metrics::record))
        .with_state(state)
}

async fn not_found() -> ApiError {
    ApiError::NotFound
}

async fn method_not_allowed() -> ApiError {
    ApiError::BadRequest {
        status: StatusCode::METHOD_NOT_ALLOWED,
        code: "method_not_allowed",
        message: "this method is not allowed on this path".to_owned(),
    }
}

/// Gives every request an id (the caller's `X-Request-Id` if sane), a tracing span, and
/// echoes the id on the response. The span continues the caller's trace when the request
/// carries a W3C `traceparent` (see `framegate_commands::trace_context`).
async fn request_context(request: Request, next: Next) -> Response {
    let id = request
        .headers()
        .get(&REQUEST_ID_HEADER)
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && v.len() <= 128 && v.bytes().all(|b| b.is_ascii_graphic()))
        .map_or_else(|| Uuid::now_v7().to_string(), str::to_owned);
    let span = tracing::info_span!(
        "request",
        request_id = %id,
        method = %request.method(),
        path = %request.uri().path(),
        otel.kind = "server",
        otel.name = Empty,
        http.response.status_code = Empty,
        trace_id = Empty,
    );
    // Named by its route template, never by the path with its ids.
    if let Some(route) = request.extensions().get::<MatchedPath>() {
        span.record(
            "otel.name",
            format!("{} {}", request.method(), route.as_str()),
        );
    }
    let caller = caller_trace(request.headers());
    let span = trace_context::continued(span, caller.as_ref());
    let mut response = REQUEST_ID
        .scope(id.clone(), next.run(request).instrument(span.clone()))
        .await;
    span.record("http.response.status_code", response.status().as_u16());
    if let Ok(value) = HeaderValue::from_str(&id) {
        response.headers_mut().insert(REQUEST_ID_HEADER, value);
    }
    response
}

/// The caller's trace context, when the request carries a well-formed W3C `traceparent`.
fn caller_trace(headers: &axum::http::HeaderMap) -> Option<TraceContext> {
    let header = |name: &str| headers.get(name).and_then(|value| value.to_str().ok());
    TraceContext::parse(
        header(trace_context::TRACEPARENT)?,
        header(trace_context::TRACESTATE),
    )
}

/// Serves the API on `listener` until `shutdown` resolves, within the configured connection
/// cap and slow-client timeouts (`server`); handlers see the peer as `ConnectInfo<SocketAddr>`.
pub async fn serve(
    state: AppState,
    listener: tokio::net::TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let addr = listener.local_addr()?;
    let limits = state.config.http;
    tracing::info!(%addr, max_connections = limits.max_connections, "API listening");
    server::run(listener, router(state), limits, shutdown).await
}

/// Keeps `state.credentials` in step with the account projectors until `shutdown` flips,
/// through the process's shared listener (see `auth::cache`); without it every request reads
/// its caller's state from Postgres.
pub fn spawn_credentials_listener(
    state: &AppState,
    notifications: &framegate_projections::notify::Notifications,
    shutdown: tokio::sync::watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    auth::cache::spawn_follower(state.credentials.clone(), notifications, shutdown)
}

/// Delivers the mail outbox (`mail::outbox`) until `shutdown` flips, woken through the
/// process's shared listener.
pub fn spawn_mail_sender(
    state: &AppState,
    notifications: &framegate_projections::notify::Notifications,
    shutdown: tokio::sync::watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    mail::outbox::spawn_sender(state.clone(), notifications, shutdown)
}

/// Runs the notification subscription (`notifications`) until `shutdown` flips: the mails
/// users opted into, recorded in the outbox the mail sender delivers.
pub fn spawn_notifications(
    state: &AppState,
    notifications: &framegate_projections::notify::Notifications,
    shutdown: tokio::sync::watch::Receiver<bool>,
) -> tokio::task::JoinHandle<Result<(), framegate_projections::SubscriptionError>> {
    notifications::spawn(state.pool.clone(), notifications, shutdown)
}

/// Runs the watchers behind `GET /v1/videos/{id}/events` on the process's shared listener
/// until `shutdown` flips (see `streams`); without them the endpoint answers 503.
pub fn spawn_streams(
    state: &AppState,
    notifications: &framegate_projections::notify::Notifications,
    shutdown: tokio::sync::watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    streams::spawn(state, notifications, shutdown)
}

/// Housekeeping every five minutes (the first at once) until `shutdown` flips: expired
/// idempotency records and refilled rate-limit buckets are dropped so neither grows without
/// bound, expired sessions and refresh tokens are pruned, and originals stored with their
/// metadata are rewritten (`images::restrip`).
pub fn spawn_maintenance(
    state: AppState,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(std::time::Duration::from_secs(300));
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = shutdown.wait_for(|stop| *stop) => return,
            }
            match idempotency::purge_expired(&state.pool).await {
                Ok(purged) if purged > 0 => {
                    tracing::info!(purged, "expired idempotency keys removed")
                }
                Ok(_) => {}
                Err(error) => tracing::warn!(%error, "could not purge idempotency keys"),
            }
            state.limits.retain_recent();
            match auth::refresh::prune(&state.pool, state.config.access_ttl).await {
                Ok(pruned) if pruned != auth::refresh::Pruned::default() => {
                    tracing::info!(?pruned, "expired sessions and refresh tokens pruned")
                }
                Ok(_) => {}
                Err(error) => tracing::warn!(%error, "could not prune sessions"),
            }
            match images::restrip::drain(&state).await {
                Ok(done) if done != images::restrip::Drained::default() => {
                    tracing::info!(?done, "stored originals stripped of their metadata")
                }
                Ok(_) => {}
                Err(error) => tracing::warn!(%error, "could not strip stored originals"),
            }
        }
    })
}
