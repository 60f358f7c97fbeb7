//! What an attempt leaves behind, in one transaction: the delivery's new state (delivered,
//! due again after the schedule's delay with jitter, or given up once its retry window is
//! spent), a row in the attempts log, and the endpoint's run of failures. And what the
//! endpoint's answers decide: a 410 Gone disables it (before the delivery is recorded, so
//! the next one of its queue, which waits for this one, finds it disabled), and so do
//! failures without a success for [`WebhookConfig::disable_after`] (its owner is mailed).

use chrono::{DateTime, Utc};
use framegate_commands::{Actor, CommandMetadata, EventStore};
use framegate_domain::webhook::DisabledReason;
use framegate_domain::{WebhookCommand, WebhookEndpointId};
use rand::Rng as _;
use sqlx::{FromRow, PgPool};
use uuid::Uuid;

use super::attempt::Answer;
use super::WebhookConfig;

/// The kind of the mail-outbox row that tells an owner their endpoint was disabled (the API's
/// mail sender renders it: `framegate_api::mail::outbox::Outgoing::WebhookDisabled`).
pub const MAIL_KIND: &str = "webhook_disabled";

/// A delivery as the sender claimed it.
#[derive(Debug, Clone, FromRow)]
pub struct Claimed {
    pub delivery_id: Uuid,
    pub queue: String,
    pub endpoint_id: Option<Uuid>,
    pub owner_id: Uuid,
    /// The per-request URL, or the endpoint's current one; `None` if the endpoint is gone.
    pub url: Option<String>,
    pub message_id: String,
    pub event_type: String,
    pub video_id: Option<Uuid>,
    pub body: String,
    /// Attempts including this one.
    pub attempts: i32,
    pub window_started_at: DateTime<Utc>,
    /// Why the endpoint is disabled, or `deleted`; `None` while it takes deliveries.
    pub endpoint_off: Option<String>,
    /// The trace the delivery belongs to (migration 0023), if it was made with traces on.
    pub traceparent: Option<String>,
    pub tracestate: Option<String>,
}

/// Records `answer` to the attempt that started at `started_at`; says whether the endpoint
/// has now failed without a success for longer than [`WebhookConfig::disable_after`].
pub async fn record(
    pool: &PgPool,
    config: &WebhookConfig,
    claimed: &Claimed,
    started_at: DateTime<Utc>,
    answer: &Answer,
) -> Result<bool, sqlx::Error> {
    let mut tx = pool.begin().await?;
    // Not flushed before going on: lost in a crash, the attempt is only made again (at least
    // once, the receiver dedupes by `webhook-id`); nothing here is worth a disk flush each.
    sqlx::query("SET LOCAL synchronous_commit = off")
        .execute(&mut *tx)
        .await?;
    let now = Utc::now();
    let latency_ms = i32::try_from(answer.latency.as_millis()).unwrap_or(i32::MAX);
    let (status, next_attempt_at, error) = if answer.delivered() {
        ("delivered", now, None)
    } else if answer.gone() {
        (
            "failed",
            now,
            Some("answered 410 Gone: the endpoint is disabled".to_owned()),
        )
    } else {
        let next = now + jittered(config.delay_after(claimed.attempts));
        let window = chrono::Duration::from_std(config.retry_window).unwrap_or_default();
        if next > claimed.window_started_at + window {
            let error = answer.error.clone().unwrap_or_default();
            (
                "failed",
                now,
                Some(format!(
                    "{error}; given up after {} attempts",
                    claimed.attempts
                )),
            )
        } else {
            ("pending", next, answer.error.clone())
        }
    };
    sqlx::query(
        "UPDATE webhook_deliveries
            SET status = $2, next_attempt_at = $3, leased_until = NULL, last_status = $4,
                last_latency_ms = $5, last_error = $6, updated_at = now(),
                delivered_at = CASE WHEN $2 = 'delivered' THEN now() END
          WHERE delivery_id = $1",
    )
    .bind(claimed.delivery_id)
    .bind(status)
    .bind(next_attempt_at)
    .bind(answer.status.map(i32::from))
    .bind(latency_ms)
    .bind(&error)
    .execute(&mut *tx)
    .await?;
    sqlx::query(
        "INSERT INTO webhook_delivery_attempts
             (delivery_id, attempt, started_at, status, latency_ms, error, response_body)
         VALUES ($1, $2, $3, $4, $5, $6, $7)
         ON CONFLICT (delivery_id, attempt) DO NOTHING",
    )
    .bind(claimed.delivery_id)
    .bind(claimed.attempts)
    .bind(started_at)
    .bind(answer.status.map(i32::from))
    .bind(latency_ms)
    .bind(&answer.error)
    .bind(&answer.body)
    .execute(&mut *tx)
    .await?;
    let mut failing_too_long = false;
    if let Some(endpoint_id) = claimed.endpoint_id {
        if answer.delivered() {
            sqlx::query(
                "INSERT INTO webhook_endpoint_health (endpoint_id, failing_since, last_success_at)
                 VALUES ($1, NULL, now())
                 ON CONFLICT (endpoint_id) DO UPDATE SET failing_since = NULL, last_success_at = now()",
            )
            .bind(endpoint_id)
            .execute(&mut *tx)
            .await?;
        } else {
            let failing_since: DateTime<Utc> = sqlx::query_scalar(
                "INSERT INTO webhook_endpoint_health (endpoint_id, failing_since)
                 VALUES ($1, now())
                 ON CONFLICT (endpoint_id) DO UPDATE
                    SET failing_since = GREATEST(
                        COALESCE(webhook_endpoint_health.failing_since, now()),
                        -- The clock restarts when its owner changed it (re-enabled it, say):
                        -- failures from before then are not held against the new settings.
                        (SELECT e.updated_at FROM webhook_endpoints e WHERE e.endpoint_id = $1))
                 RETURNING failing_since",
            )
            .bind(endpoint_id)
            .fetch_one(&mut *tx)
            .await?;
            let limit = chrono::Duration::from_std(config.disable_after).unwrap_or_default();
            failing_too_long = !answer.gone() && now - failing_since >= limit;
        }
    }
    tx.commit().await?;
    Ok(failing_too_long)
}

/// Closes a delivery whose endpoint was disabled or deleted meanwhile, without sending it
/// (the claim counted no attempt). `POST .../retry` sends it once the endpoint is back.
pub async fn skip(pool: &PgPool, claimed: &Claimed, why: &str) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE webhook_deliveries
            SET status = 'failed', attempts = attempts - 1, leased_until = NULL,
                last_error = $2, updated_at = now()
          WHERE delivery_id = $1",
    )
    .bind(claimed.delivery_id)
    .bind(format!("not sent: {why}"))
    .execute(pool)
    .await?;
    Ok(())
}

/// Disables the endpoint (a no-op if it is already off) and, if this did it, mails its
/// owner through the API's mail outbox.
pub async fn disable(
    pool: &PgPool,
    store: &EventStore,
    claimed: &Claimed,
    reason: DisabledReason,
    answer: &Answer,
    config: &WebhookConfig,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let Some(endpoint_id) = claimed.endpoint_id else {
        return Ok(());
    };
    let detail = match reason {
        DisabledReason::Gone => "the endpoint answered 410 Gone".to_owned(),
        _ => format!(
            "every delivery failed for {} hours (last: {})",
            config.disable_after.as_secs() / 3600,
            answer.error.as_deref().unwrap_or("no answer")
        ),
    };
    let detail: String = detail
        .chars()
        .filter(|c| !c.is_control())
        .take(500)
        .collect();
    let metadata = CommandMetadata::new_request(Actor::System);
    let recorded = framegate_commands::webhooks::execute(
        store,
        WebhookEndpointId::from_uuid(endpoint_id),
        WebhookCommand::Disable {
            reason,
            detail: detail.clone(),
        },
        &metadata,
    )
    .await?;
    if recorded.is_none() {
        return Ok(());
    }
    tracing::warn!(endpoint = %endpoint_id, reason = reason.as_str(), %detail, "webhook endpoint disabled");
    let payload = serde_json::json!({
        "kind": MAIL_KIND,
        "user_id": claimed.owner_id,
        "endpoint_id": endpoint_id,
        "url": claimed.url,
        "reason": reason.as_str(),
        "detail": detail,
    });
    sqlx::query(
        "WITH queued AS (INSERT INTO mail_outbox (kind, payload) VALUES ($1, $2))
         SELECT pg_notify($3, '')",
    )
    .bind(MAIL_KIND)
    .bind(payload)
    .bind(framegate_projections::notify::MAIL_CHANNEL)
    .execute(pool)
    .await?;
    Ok(())
}

/// `delay` ± 20 %, so endpoints that failed together do not retry together.
fn jittered(delay: std::time::Duration) -> chrono::Duration {
    let factor = rand::thread_rng().gen_range(0.8..1.2);
    chrono::Duration::from_std(delay.mul_f64(factor))
        .unwrap_or_else(|_| chrono::Duration::days(365))
}
