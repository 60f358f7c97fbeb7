//! `GET /metrics` and the metrics of the HTTP requests themselves (docs/adr/0035-metrics.md).
//!
//! [`record`] is the router's outermost layer: every answer counts, the 408s, 429s and
//! panics the inner layers produce included, labelled by the route template axum matched
//! (`/v1/videos/{id}`), never the path a client sent, so no id reaches a label and no client
//! can make up new series. [`router`] serves the exposition, on the API's port and on
//! `FRAMEGATE_METRICS_ADDR` of any role. It carries no user data, only counts; it may still
//! say more about the business than the public should read (credits moved, job volumes), so
//! with `FRAMEGATE_METRICS_TOKEN` set it answers only to `Authorization: Bearer <token>`.

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::{header, HeaderMap};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use framegate_commands::metrics;
use sha2::{Digest, Sha256};
use sqlx::PgPool;

use crate::error::ApiError;

/// The token `/metrics` asks for (`FRAMEGATE_METRICS_TOKEN`). Kept as its SHA-256 digest,
/// so it never prints and comparing takes the same time whatever the guess.
#[derive(Clone, PartialEq, Eq)]
pub struct MetricsToken([u8; 32]);

impl std::fmt::Debug for MetricsToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MetricsToken([redacted])")
    }
}

impl MetricsToken {
    /// The variable it is read from.
    pub const ENV: &'static str = "FRAMEGATE_METRICS_TOKEN";

    /// `None` for an empty or blank value: the endpoint is then open.
    pub fn new(token: &str) -> Option<Self> {
        let token = token.trim();
        (!token.is_empty()).then(|| Self(Sha256::digest(token.as_bytes()).into()))
    }

    /// Whether `headers` carry this token as a bearer credential.
    pub fn allows(&self, headers: &HeaderMap) -> bool {
        let Some(offered) = headers
            .get(header::AUTHORIZATION)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.strip_prefix("Bearer "))
        else {
            return false;
        };
        let offered: [u8; 32] = Sha256::digest(offered.trim().as_bytes()).into();
        // Digests of equal length, every byte looked at: no early exit to time.
        offered
            .iter()
            .zip(self.0.iter())
            .fold(0u8, |diff, (a, b)| diff | (a ^ b))
            == 0
    }
}

#[derive(Clone)]
struct Endpoint {
    pool: PgPool,
    token: Option<Arc<MetricsToken>>,
}

/// `GET /metrics`, for any router state: the process's metrics and the store's figures read
/// through `pool` (`framegate_projections::metrics`).
pub fn router<S>(pool: PgPool, token: Option<MetricsToken>) -> Router<S>
where
    S: Clone + Send + Sync + 'static,
{
    Router::new()
        .route("/metrics", get(scrape))
        .with_state(Endpoint {
            pool,
            token: token.map(Arc::new),
        })
}

async fn scrape(State(endpoint): State<Endpoint>, headers: HeaderMap) -> Response {
    if let Some(token) = &endpoint.token {
        if !token.allows(&headers) {
            return ApiError::unauthenticated(
                "metrics_token_required",
                "this endpoint needs the metrics bearer token",
            )
            .into_response();
        }
    }
    let text = framegate_projections::metrics::render(&endpoint.pool).await;
    (
        [
            (header::CONTENT_TYPE, metrics::CONTENT_TYPE),
            (header::CACHE_CONTROL, "no-store"),
        ],
        text,
    )
        .into_response()
}

/// Counts and times every request by route template, method and status (until the
/// response head: a stream's body is not waited for).
pub async fn record(request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |path| path.as_str().to_owned());
    let method = request.method().clone();
    let _in_flight = metrics::http_in_flight();
    let started = Instant::now();
    let response = next.run(request).await;
    metrics::http_request(
        &route,
        method.as_str(),
        response.status().as_u16(),
        started.elapsed(),
    );
    response
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    fn bearer(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        if let Ok(value) = HeaderValue::from_str(value) {
            headers.insert(header::AUTHORIZATION, value);
        }
        headers
    }

    #[test]
    fn only_the_configured_bearer_token_is_allowed() {
        let token = MetricsToken::new("s3cret-metrics-token").expect("a token");
        assert!(token.allows(&bearer("Bearer s3cret-metrics-token")));
        assert!(!token.allows(&bearer("Bearer s3cret-metrics-tokem")));
        assert!(!token.allows(&bearer("s3cret-metrics-token")));
        assert!(!token.allows(&HeaderMap::new()));
    }

    #[test]
    fn a_blank_token_leaves_the_endpoint_open_and_none_prints() {
        assert_eq!(MetricsToken::new("  "), None);
        let token = MetricsToken::new("do-not-print-me");
        assert!(!format!("{token:?}").contains("do-not-print-me"));
    }
}
