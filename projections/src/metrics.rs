//! The part of `GET /metrics` that belongs to the store rather than to one process, and the
//! scrape itself (docs/adr/0035-metrics.md).
//!
//! Where every subscription stands (checkpoint position, lag in events and in seconds,
//! parked events, stopped or not), which provider circuits are open and how many videos wait
//! in each non-final status are read from Postgres when Prometheus scrapes, not counted as
//! they happen: a scrape of any role shows them whichever process runs the subscriptions, a
//! lag is right even while its subscription is stopped, and nothing on the event path pays for
//! them. Each costs an index lookup or two per subscription (the lag count is capped; past the
//! cap the log's head minus the checkpoint stands in for it).

use std::time::Duration;

use framegate_commands::metrics::{self, StoreGauges, SubscriptionGauge};
use framegate_domain::VideoStatus;
use sqlx::PgPool;

/// Counted exactly up to this many events behind; beyond, estimated from positions.
pub const LAG_COUNT_CAP: i64 = 10_000;

/// How long a scrape waits for the store before answering without its figures.
const STORE_BUDGET: Duration = Duration::from_secs(3);

/// The process's metrics with the store's figures refreshed, in the Prometheus text format
/// (`framegate_commands::metrics::CONTENT_TYPE`). With the store away or slow, the rest is
/// still answered and `framegate_store_scrape_ok` is 0.
pub async fn render(pool: &PgPool) -> String {
    // Scrapes take turns: one refreshes the gauges while none is half-way encoding them.
    static SCRAPE: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    let _turn = SCRAPE.lock().await;
    match tokio::time::timeout(STORE_BUDGET, store_gauges(pool)).await {
        Ok(Ok(store)) => metrics::set_store(Some(&store)),
        Ok(Err(error)) => {
            tracing::warn!(%error, "metrics: cannot read the store's figures");
            metrics::set_store(None);
        }
        Err(_) => {
            tracing::warn!("metrics: the store's figures took too long");
            metrics::set_store(None);
        }
    }
    metrics::encode()
}

#[derive(sqlx::FromRow)]
struct SubscriptionRow {
    name: String,
    position: i64,
    lag_counted: i64,
    lag_seconds: f64,
    parked: i64,
    stopped: bool,
}

/// Reads the store-wide figures.
pub async fn store_gauges(pool: &PgPool) -> Result<StoreGauges, sqlx::Error> {
    let head: i64 = sqlx::query_scalar("SELECT COALESCE(max(global_position), 0) FROM events")
        .fetch_one(pool)
        .await?;
    // Both lags walk the log-order index from the checkpoint: the count at most to the cap,
    // the age one row.
    let rows: Vec<SubscriptionRow> = sqlx::query_as(
        "SELECT c.name, c.last_position AS position,
                (SELECT count(*) FROM (SELECT 1 FROM events e
                  WHERE (e.tx_id, e.global_position) > (c.last_tx_id, c.last_position)
                  LIMIT $1) behind) AS lag_counted,
                COALESCE(EXTRACT(EPOCH FROM now() - (
                    SELECT e.recorded_at FROM events e
                     WHERE (e.tx_id, e.global_position) > (c.last_tx_id, c.last_position)
                     ORDER BY e.tx_id, e.global_position LIMIT 1)), 0)::float8 AS lag_seconds,
                (SELECT count(*) FROM parked_events p WHERE p.subscription = c.name) AS parked,
                EXISTS (SELECT 1 FROM parked_events p
                         WHERE p.subscription = c.name AND p.blocking) AS stopped
           FROM subscription_checkpoints c
          ORDER BY c.name",
    )
    .bind(LAG_COUNT_CAP)
    .fetch_all(pool)
    .await?;
    let subscriptions = rows
        .into_iter()
        .map(|row| SubscriptionGauge {
            lag_events: if row.lag_counted >= LAG_COUNT_CAP {
                (head - row.position).max(LAG_COUNT_CAP)
            } else {
                row.lag_counted
            },
            lag_seconds: row.lag_seconds.max(0.0),
            name: row.name,
            position: row.position,
            parked: row.parked,
            stopped: row.stopped,
        })
        .collect();
    let circuits: Vec<(String, bool)> = sqlx::query_as(
        "SELECT provider, COALESCE(open_until > now(), false) FROM provider_health
          ORDER BY provider",
    )
    .fetch_all(pool)
    .await?;
    // The partial index of jobs in flight covers exactly these rows.
    let counted: Vec<(String, i64)> = sqlx::query_as(
        "SELECT status, count(*) FROM videos
          WHERE status NOT IN ('completed', 'failed', 'cancelled')
          GROUP BY status",
    )
    .fetch_all(pool)
    .await?;
    // Every non-final status, 0 included, so a series does not vanish when its queue empties.
    let jobs_in_flight = VideoStatus::ALL
        .into_iter()
        .filter(|status| !status.is_terminal())
        .map(|status| {
            let count = counted
                .iter()
                .find(|(s, _)| s == status.as_str())
                .map_or(0, |(_, count)| *count);
            (status.as_str().to_owned(), count)
        })
        .collect();
    Ok(StoreGauges {
        subscriptions,
        circuits,
        jobs_in_flight,
    })
}
