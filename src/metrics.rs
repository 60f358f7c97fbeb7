//! `FRAMEGATE_METRICS_ADDR`: a listener of its own for `GET /metrics`, so the roles without
//! an HTTP port (projector, worker) can be scraped, and an API can be scraped on an internal
//! address. The exposition and its token are the API's (`framegate_api::metrics`).

use std::net::SocketAddr;

use anyhow::Context as _;
use framegate_api::metrics::MetricsToken;
use sqlx::PgPool;

use crate::tasks::Tasks;

pub const ADDR_ENV: &str = "FRAMEGATE_METRICS_ADDR";

/// Where to listen, if anywhere (`FRAMEGATE_METRICS_ADDR`; empty or unset: nowhere).
pub fn addr_from(get: impl Fn(&str) -> Option<String>) -> anyhow::Result<Option<SocketAddr>> {
    match get(ADDR_ENV).as_deref().map(str::trim) {
        None | Some("") => Ok(None),
        Some(addr) => addr
            .parse()
            .map(Some)
            .with_context(|| format!("{ADDR_ENV}: {addr} is no address:port")),
    }
}

/// The token `/metrics` asks for, if one is set.
pub fn token_from(get: impl Fn(&str) -> Option<String>) -> Option<MetricsToken> {
    get(MetricsToken::ENV).and_then(|token| MetricsToken::new(&token))
}

/// Serves `/metrics` on `FRAMEGATE_METRICS_ADDR` (if set) as one of `tasks`, until they stop.
pub async fn serve_from_env(tasks: &mut Tasks, pool: &PgPool) -> anyhow::Result<()> {
    let get = |name: &str| std::env::var(name).ok();
    let Some(addr) = addr_from(get)? else {
        return Ok(());
    };
    framegate_commands::deployment::Deployment::from_env()?.check_listen(ADDR_ENV, addr)?;
    serve(tasks, pool, addr, token_from(get)).await
}

/// Serves `/metrics` on `addr` as one of `tasks`, until they stop.
pub async fn serve(
    tasks: &mut Tasks,
    pool: &PgPool,
    addr: SocketAddr,
    token: Option<MetricsToken>,
) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr} ({ADDR_ENV})"))?;
    tracing::info!(%addr, "metrics listening");
    let app: axum::Router = framegate_api::metrics::router(pool.clone(), token);
    let mut stopped = tasks.stopped();
    tasks.spawn("metrics", async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                let _ = stopped.wait_for(|stop| *stop).await;
            })
            .await
            .context("metrics server")
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unset_or_empty_address_serves_nothing_and_a_bad_one_is_refused() {
        assert_eq!(addr_from(|_| None).ok(), Some(None));
        assert_eq!(addr_from(|_| Some(" ".into())).ok(), Some(None));
        assert_eq!(
            addr_from(|_| Some("0.0.0.0:9464".into())).ok().flatten(),
            Some(SocketAddr::from(([0, 0, 0, 0], 9464)))
        );
        assert!(addr_from(|_| Some("localhost".into())).is_err());
    }
}
