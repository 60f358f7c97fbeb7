//! What a run's attempts leave behind, in one transaction: each delivery's new state
//! (delivered, due again after the schedule's delay with jitter, or given up once its retry
//! window is spent), a row each in the attempts log, the endpoint's run of failures, and the
//! run's unsent rows given back. And what the endpoint's answers decide: a 410 Gone disables
//! it (before the run is recorded, so the next row of its queue, which waits for this one,
//! finds it disabled), and so do failures without a success for
//! [`WebhookConfig::disable_after`] (its owner is mailed).

use chrono::{DateTime, Utc};
use framegate_commands::{Actor, CommandMetadata, EventStore};
use framegate_domain::webhook::DisabledReason;
use framegate_domain::{WebhookCommand, WebhookEndpointId};
use rand::Rng as _;
use sqlx::PgPool;
use uuid::Uuid;

use super::attempt::Answer;
use super::claim::{self, Claimed};
use super::WebhookConfig;

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

/// Records the attempts of one run and gives back its `unsent` rows, in one transaction;
/// says whether the endpoint has now failed without a success for longer than
/// [`WebhookConfig::disable_after`]. An attempt whose delivery was retried by hand meanwhile
/// (its window restarted) is logged but leaves the delivery to the retry.
pub async fn record(
    pool: &PgPool,
    config: &WebhookConfig,
    attempted: &[Attempted],
    unsent: &[Claimed],
) -> Result<bool, sqlx::Error> {
    let mut tx = pool.begin().await?;
    // Not flushed before going on: lost in a crash, the attempts are only made again (at
    // least once, the receiver dedupes by `webhook-id`); nothing here is worth a disk flush.
    sqlx::query("SET LOCAL synchronous_commit = off")
        .execute(&mut *tx)
        .await?;
    let now = Utc::now();
    let mut rows = Rows::default();
    for Attempted {
        claimed,
        started_at,
        answer,
    } in attempted
    {
        let (status, next_attempt_at, error) = settle(config, claimed, answer, now);
        rows.ids.push(claimed.delivery_id);
        rows.windows.push(claimed.window_started_at);
        rows.attempts.push(claimed.attempts);
        rows.started.push(*started_at);
        rows.statuses.push(status);
        rows.next.push(next_attempt_at);
        rows.codes.push(answer.status.map(i32::from));
        rows.latencies
            .push(i32::try_from(answer.latency.as_millis()).unwrap_or(i32::MAX));
        rows.errors.push(error);
        rows.answer_errors.push(answer.error.clone());
        rows.bodies.push(answer.body.clone());
    }
    sqlx::query(
        "UPDATE webhook_deliveries d
            SET status = r.status, next_attempt_at = r.next_attempt_at, leased_until = NULL,
                last_status = r.code, last_latency_ms = r.latency_ms, last_error = r.error,
                updated_at = now(),
                delivered_at = CASE WHEN r.status = 'delivered' THEN now() END
           FROM unnest($1::uuid[], $2::timestamptz[], $3::text[], $4::timestamptz[],
                       $5::int4[], $6::int4[], $7::text[])
                AS r (delivery_id, window_started_at, status, next_attempt_at, code,
                      latency_ms, error)
          WHERE d.delivery_id = r.delivery_id AND d.window_started_at = r.window_started_at",
    )
    .bind(&rows.ids)
    .bind(&rows.windows)
    .bind(&rows.statuses)
    .bind(&rows.next)
    .bind(&rows.codes)
    .bind(&rows.latencies)
    .bind(&rows.errors)
    .execute(&mut *tx)
    .await?;
    // A delivery retried by hand while in flight: left to the retry, and claimable now.
    sqlx::query(
        "UPDATE webhook_deliveries d SET leased_until = NULL
           FROM unnest($1::uuid[], $2::timestamptz[]) AS r (delivery_id, window_started_at)
          WHERE d.delivery_id = r.delivery_id AND d.window_started_at <> r.window_started_at",
    )
    .bind(&rows.ids)
    .bind(&rows.windows)
    .execute(&mut *tx)
    .await?;
    sqlx::query(
        "INSERT INTO webhook_delivery_attempts
             (delivery_id, attempt, started_at, status, latency_ms, error, response_body)
         SELECT * FROM unnest($1::uuid[], $2::int4[], $3::timestamptz[], $4::int4[],
                              $5::int4[], $6::text[], $7::text[])
         ON CONFLICT (delivery_id, attempt) DO NOTHING",
    )
    .bind(&rows.ids)
    .bind(&rows.attempts)
    .bind(&rows.started)
    .bind(&rows.codes)
    .bind(&rows.latencies)
    .bind(&rows.answer_errors)
    .bind(&rows.bodies)
    .execute(&mut *tx)
    .await?;
    let failing_too_long = health(&mut tx, config, attempted, now).await?;
    claim::release(&mut *tx, unsent).await?;
    tx.commit().await?;
    Ok(failing_too_long)
}

/// The columns of a run's attempts, bound as arrays.
#[derive(Default)]
struct Rows {
    ids: Vec<Uuid>,
    windows: Vec<DateTime<Utc>>,
    attempts: Vec<i32>,
    started: Vec<DateTime<Utc>>,
    statuses: Vec<&'static str>,
    next: Vec<DateTime<Utc>>,
    codes: Vec<Option<i32>>,
    latencies: Vec<i32>,
    errors: Vec<Option<String>>,
    answer_errors: Vec<Option<String>>,
    bodies: Vec<Option<String>>,
}

/// What an answer makes of its delivery: delivered, due again after the schedule's delay
/// with jitter, or failed (410 Gone, or the retry window spent).
fn settle(
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
async fn health(
    tx: &mut sqlx::PgConnection,
    config: &WebhookConfig,
    attempted: &[Attempted],
    now: DateTime<Utc>,
) -> Result<bool, sqlx::Error> {
    let Some(endpoint_id) = attempted.first().and_then(|a| a.claimed.endpoint_id) else {
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
/// sending them (the claim counted no attempt). `POST .../retry` sends one once the endpoint
/// is back.
pub async fn skip(pool: &PgPool, rows: &[Claimed], why: &str) -> Result<(), sqlx::Error> {
    let ids: Vec<Uuid> = rows.iter().map(|row| row.delivery_id).collect();
    let windows: Vec<DateTime<Utc>> = rows.iter().map(|row| row.window_started_at).collect();
    sqlx::query(
        // A row retried by hand meanwhile is left to the retry (and unleased).
        "UPDATE webhook_deliveries d
            SET status = CASE WHEN d.window_started_at = r.window_started_at
                              THEN 'failed' ELSE d.status END,
                last_error = CASE WHEN d.window_started_at = r.window_started_at
                                  THEN $3 ELSE d.last_error END,
                attempts = d.attempts - 1, leased_until = NULL, updated_at = now()
           FROM unnest($1::uuid[], $2::timestamptz[]) AS r (delivery_id, window_started_at)
          WHERE d.delivery_id = r.delivery_id",
    )
    .bind(ids)
    .bind(windows)
    .bind(format!("not sent: {why}"))
    .execute(pool)
    .await?;
    Ok(())
}

/// Puts back rows we could not prepare (our failure, not the endpoint's): not counted as
/// attempts, claimable again after `delay`.
pub async fn postpone(
    pool: &PgPool,
    rows: &[Claimed],
    delay: std::time::Duration,
) -> Result<(), sqlx::Error> {
    let ids: Vec<Uuid> = rows.iter().map(|row| row.delivery_id).collect();
    sqlx::query(
        "UPDATE webhook_deliveries
            SET attempts = attempts - 1, leased_until = now() + make_interval(secs => $2),
                updated_at = now()
          WHERE delivery_id = ANY($1) AND status = 'pending'",
    )
    .bind(ids)
    .bind(delay.as_secs_f64())
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
