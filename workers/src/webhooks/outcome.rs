//! What a run's attempts come to: each delivery's new state (delivered, due again after the
//! schedule's delay with jitter, or given up once its retry window is spent), the endpoint's
//! run of failures, and what the endpoint's answers decide: a 410 Gone disables it (before
//! the run is recorded, so the next row of its queue, which waits for this one, finds it
//! disabled), and so do failures without a success for [`WebhookConfig::disable_after`] (its
//! owner is mailed). The record itself, in one transaction, is `record`.

use chrono::{DateTime, Utc};
use framegate_commands::{Actor, CommandMetadata, EventStore};
use framegate_domain::webhook::DisabledReason;
use framegate_domain::{WebhookCommand, WebhookEndpointId};
use rand::Rng as _;
use sqlx::PgPool;
use uuid::Uuid;

use super::attempt::Answer;
use super::claim::{Claimed, Destination, Hold};
use super::record::{move_cursor, retried_meanwhile, Cursor, Rows};
use super::WebhookConfig;

pub use super::record::record;

/// The kind of the mail-outbox row that tells an owner their endpoint was disabled (the API's
/// mail sender renders it: `framegate_api::mail::outbox::Outgoing::WebhookDisabled`).
pub const MAIL_KIND: &str = "webhook_disabled";

/// One attempt of a run, as the sender made it.
#[derive(Debug)]
pub struct Attempted {
    pub claimed: Claimed,
    pub started_at: DateTime<Utc>,
    pub answer: Answer,
}

/// How a record leaves the run's hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    /// The turn goes on with the queue: it stays held (its lease renewed).
    Continue,
    /// The turn ends: the queue (or the retried row) is let go, due again no sooner than
    /// `not_before` if rows still wait (our own failure postpones them).
    Release { not_before: Option<DateTime<Utc>> },
}

/// Whether a record found its hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recorded {
    /// Recorded; says whether the endpoint has now failed without a success for longer than
    /// [`WebhookConfig::disable_after`].
    Held { failing_too_long: bool },
    /// The queue's lease was lost (it lapsed and another sender took the queue): nothing is
    /// recorded, the rows are that sender's to send again.
    Lost,
}

/// What an answer makes of its delivery: delivered, due again after the schedule's delay
/// with jitter, or failed (410 Gone, or the retry window spent).
pub(super) fn settle(
    config: &WebhookConfig,
    claimed: &Claimed,
    answer: &Answer,
    now: DateTime<Utc>,
) -> (&'static str, DateTime<Utc>, Option<String>) {
    if answer.delivered() {
        return ("delivered", now, None);
    }
    if answer.gone() {
        return (
            "failed",
            now,
            Some("answered 410 Gone: the endpoint is disabled".to_owned()),
        );
    }
    let next = now + jittered(config.delay_after(claimed.attempts));
    let window = chrono::Duration::from_std(config.retry_window).unwrap_or_default();
    if next > claimed.window_started_at + window {
        let error = answer.error.clone().unwrap_or_default();
        return (
            "failed",
            now,
            Some(format!(
                "{error}; given up after {} attempts",
                claimed.attempts
            )),
        );
    }
    ("pending", next, answer.error.clone())
}

/// The endpoint's run of failures after a run's attempts: a success ends it, a failure after
/// the last success starts one (or continues it). Says whether it has lasted too long.
pub(super) async fn health(
    tx: &mut sqlx::PgConnection,
    config: &WebhookConfig,
    endpoint: Option<Uuid>,
    attempted: &[Attempted],
    now: DateTime<Utc>,
) -> Result<bool, sqlx::Error> {
    let (Some(endpoint_id), false) = (endpoint, attempted.is_empty()) else {
        return Ok(false);
    };
    if attempted.iter().any(|a| a.answer.delivered()) {
        sqlx::query(
            "INSERT INTO webhook_endpoint_health (endpoint_id, failing_since, last_success_at)
             VALUES ($1, NULL, now())
             ON CONFLICT (endpoint_id) DO UPDATE SET failing_since = NULL, last_success_at = now()",
        )
        .bind(endpoint_id)
        .execute(&mut *tx)
        .await?;
    }
    let Some(last) = attempted.last().filter(|a| !a.answer.delivered()) else {
        return Ok(false);
    };
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
    Ok(!last.answer.gone() && now - failing_since >= limit)
}

/// Closes the deliveries of a run whose endpoint was disabled or deleted meanwhile, without
/// sending them (no attempt is counted), and lets go of the run's hold with the cursor past
/// them. `POST .../retry` sends one once the endpoint is back.
pub async fn close(
    pool: &PgPool,
    config: &WebhookConfig,
    hold: &Hold,
    rows: &[Claimed],
    why: &str,
) -> Result<Recorded, sqlx::Error> {
    let mut tx = pool.begin().await?;
    if let Hold::Queue { queue, lease } = hold {
        let closed = Cursor {
            through: rows.last().map(|row| row.seq),
            pending: None,
            end: End::Release { not_before: None },
        };
        if move_cursor(&mut tx, config, queue, *lease, closed)
            .await?
            .is_none()
        {
            return Ok(Recorded::Lost);
        }
    }
    let ids: Vec<Uuid> = rows.iter().map(|row| row.delivery_id).collect();
    let windows: Vec<DateTime<Utc>> = rows.iter().map(|row| row.window_started_at).collect();
    sqlx::query(
        "UPDATE webhook_deliveries d
            SET status = 'failed', last_error = $3, leased_until = NULL, retry_due_at = NULL,
                updated_at = now()
           FROM unnest($1::uuid[], $2::timestamptz[]) AS r (delivery_id, window_started_at)
          WHERE d.delivery_id = r.delivery_id AND d.window_started_at = r.window_started_at",
    )
    .bind(&ids)
    .bind(&windows)
    .bind(format!("not sent: {why}"))
    .execute(&mut *tx)
    .await?;
    // A row retried by hand meanwhile is left to the retry (no attempt was made).
    retried_meanwhile(&mut tx, &Rows::unattempted(rows), i64::MAX).await?;
    tx.commit().await?;
    Ok(Recorded::Held {
        failing_too_long: false,
    })
}

/// Disables the endpoint `to` goes to (a no-op if it is already off) and, if this did it,
/// mails its owner through the API's mail outbox.
pub async fn disable(
    pool: &PgPool,
    store: &EventStore,
    to: &Destination,
    reason: DisabledReason,
    answer: &Answer,
    config: &WebhookConfig,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let Some(endpoint_id) = to.endpoint_id else {
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
        "user_id": to.owner_id,
        "endpoint_id": endpoint_id,
        "url": to.url,
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
