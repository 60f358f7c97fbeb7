//! Claiming work from the delivery outbox: *runs*, each the due head of one queue and up to
//! [`RUN_ROWS`] rows behind it, leased together.
//!
//! A queue is sent strictly in order, so only its head (its first pending row) may be
//! attempted; the rows behind it have never been attempted (nothing passes a pending head)
//! and are due as soon as the head is sent. Leasing them with the head lets one task send a
//! queue's backlog back to back and record it in one transaction, instead of a claim, a
//! secrets lookup and a record per delivery: the outbox costs a few round trips per run, not
//! per delivery (ADR 0034). The head's lease guards the whole run: nobody else claims a row
//! behind a pending head. A run is the contiguous stretch of due, unheld rows from the head:
//! a delivery retried by hand becomes its queue's head again, and must not pull rows past
//! one that is backing off or held by another sender.

use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::{FromRow, PgExecutor, PgPool};
use uuid::Uuid;

/// Rows a run takes at most (the head included).
pub const RUN_ROWS: i64 = 64;

/// A delivery as the sender claimed it.
#[derive(Debug, Clone, FromRow)]
pub struct Claimed {
    pub delivery_id: Uuid,
    pub queue: String,
    pub seq: i64,
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
    /// Retries stop this long after it. Also the claim's token: a manual retry restarts it,
    /// and an attempt recorded against an older window does not overwrite the retry.
    pub window_started_at: DateTime<Utc>,
    /// Why the endpoint is disabled, or `deleted`; `None` while it takes deliveries.
    pub endpoint_off: Option<String>,
    /// The trace the delivery belongs to (migration 0021), if it was made with traces on.
    pub traceparent: Option<String>,
    pub tracestate: Option<String>,
}

/// The rows of one queue a sender holds, in the queue's order.
#[derive(Debug)]
pub struct Run {
    pub rows: Vec<Claimed>,
}

/// The first pending delivery of every queue, found by skipping from queue to queue in the
/// pending-only (queue, seq) index: the cost grows with the number of queues that have
/// something pending, not with the deliveries waiting in them.
const HEADS: &str = "WITH RECURSIVE heads (queue, seq) AS (
        (SELECT queue, seq FROM webhook_deliveries WHERE status = 'pending'
          ORDER BY queue, seq LIMIT 1)
        UNION ALL
        SELECT next.queue, next.seq FROM heads, LATERAL (
            SELECT queue, seq FROM webhook_deliveries
             WHERE status = 'pending' AND queue > heads.queue
             ORDER BY queue, seq LIMIT 1) AS next)";

/// What a lease returns of each row: a [`Claimed`].
const RETURNING: &str = "RETURNING d.delivery_id, d.queue, d.seq, d.endpoint_id, d.owner_id,
           COALESCE(d.url, (SELECT w.url FROM webhook_endpoints w
                             WHERE w.endpoint_id = d.endpoint_id
                               AND w.deleted_at IS NULL)) AS url,
           d.message_id, d.event_type, d.video_id, d.body, d.attempts,
           d.window_started_at, d.traceparent, d.tracestate,
           (SELECT CASE WHEN w.deleted_at IS NOT NULL THEN 'deleted'
                        ELSE 'disabled (' || w.disabled_reason || ')' END
              FROM webhook_endpoints w
             WHERE w.endpoint_id = d.endpoint_id
               AND (w.deleted_at IS NOT NULL OR w.disabled_reason IS NOT NULL))
               AS endpoint_off";

/// Leases up to `limit` runs: due heads nobody holds, each with the due rows behind it.
pub async fn claim(pool: &PgPool, limit: usize, lease: Duration) -> Result<Vec<Run>, sqlx::Error> {
    // Not flushed before the answer: a claim lost in a crash only lapses sooner (ADR 0031).
    let mut tx = pool.begin().await?;
    sqlx::query("SET LOCAL synchronous_commit = off")
        .execute(&mut *tx)
        .await?;
    let claimed: Vec<Claimed> = sqlx::query_as(&format!(
        "{HEADS},
         due AS (
             SELECT d.queue, d.seq FROM heads JOIN webhook_deliveries d ON d.seq = heads.seq
              WHERE d.status = 'pending' AND d.next_attempt_at <= now()
                AND (d.leased_until IS NULL OR d.leased_until < now())
              ORDER BY d.next_attempt_at, d.seq
              LIMIT $1
                FOR UPDATE OF d SKIP LOCKED),
         run AS (
             -- The head and the rows right behind it, up to the first that is not due or is
             -- held (a row retried by hand can be a head with such rows behind it).
             SELECT w.delivery_id FROM due, LATERAL (
                 SELECT delivery_id,
                        bool_and(next_attempt_at <= now()
                                 AND (leased_until IS NULL OR leased_until < now()))
                            OVER (ORDER BY seq) AS clear
                   FROM (SELECT delivery_id, seq, next_attempt_at, leased_until
                           FROM webhook_deliveries
                          WHERE queue = due.queue AND status = 'pending' AND seq >= due.seq
                          ORDER BY seq LIMIT $3) AS window_rows) AS w
              WHERE w.clear)
         UPDATE webhook_deliveries d
            SET leased_until = now() + make_interval(secs => $2), attempts = d.attempts + 1,
                updated_at = now()
           FROM run
          WHERE d.delivery_id = run.delivery_id AND d.status = 'pending'
            AND (d.leased_until IS NULL OR d.leased_until < now())
         {RETURNING}"
    ))
    .bind(i64::try_from(limit).unwrap_or(i64::MAX))
    .bind(lease.as_secs_f64())
    .bind(RUN_ROWS)
    .fetch_all(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(runs(claimed))
}

/// Leases the run of a queue right behind the run ending at `after`, which the caller holds
/// and is sending (ADR 0034): the sender goes on with its queue without a claim, whose walk
/// over every queue's head is the costly part of claiming, and leases while it sends. Nobody
/// else claims rows behind a held head. The rows are locked in order, waiting for (not
/// skipping) a row another transaction has locked, so what is leased is always the
/// contiguous stretch of due, unheld rows right after `after`, or nothing.
pub async fn next_run(
    pool: &PgPool,
    queue: &str,
    after: i64,
    lease: Duration,
) -> Result<Vec<Claimed>, sqlx::Error> {
    // Not flushed before the answer, like a claim.
    let mut tx = pool.begin().await?;
    sqlx::query("SET LOCAL synchronous_commit = off")
        .execute(&mut *tx)
        .await?;
    let mut rows: Vec<Claimed> = sqlx::query_as(&format!(
        "WITH next AS (
             SELECT delivery_id,
                    bool_and(next_attempt_at <= now()
                             AND (leased_until IS NULL OR leased_until < now()))
                        OVER (ORDER BY seq) AS clear
               FROM (SELECT delivery_id, seq, next_attempt_at, leased_until
                       FROM webhook_deliveries
                      WHERE queue = $1 AND status = 'pending' AND seq > $2
                      ORDER BY seq LIMIT $3
                        FOR UPDATE) AS window_rows)
         UPDATE webhook_deliveries d
            SET leased_until = now() + make_interval(secs => $4), attempts = d.attempts + 1,
                updated_at = now()
           FROM next
          WHERE d.delivery_id = next.delivery_id AND next.clear
         {RETURNING}"
    ))
    .bind(queue)
    .bind(after)
    .bind(RUN_ROWS)
    .bind(lease.as_secs_f64())
    .fetch_all(&mut *tx)
    .await?;
    tx.commit().await?;
    rows.sort_by_key(|row| row.seq);
    Ok(rows)
}

/// `claimed` grouped by queue, each run in the queue's order, runs in the order their heads
/// were claimed.
fn runs(mut claimed: Vec<Claimed>) -> Vec<Run> {
    claimed.sort_by(|a, b| a.queue.cmp(&b.queue).then(a.seq.cmp(&b.seq)));
    let mut runs: Vec<Run> = Vec::new();
    for row in claimed {
        match runs.last_mut() {
            Some(run) if run.rows[0].queue == row.queue => run.rows.push(row),
            _ => runs.push(Run { rows: vec![row] }),
        }
    }
    runs
}

/// Gives back the rows of a run that were not attempted: unleased, their claim not counted
/// (also those retried by hand meanwhile: they were not attempted either).
pub async fn release(executor: impl PgExecutor<'_>, rows: &[Claimed]) -> Result<(), sqlx::Error> {
    if rows.is_empty() {
        return Ok(());
    }
    let ids: Vec<Uuid> = rows.iter().map(|row| row.delivery_id).collect();
    sqlx::query(
        "UPDATE webhook_deliveries
            SET leased_until = NULL, attempts = attempts - 1, updated_at = now()
          WHERE delivery_id = ANY($1) AND status = 'pending'",
    )
    .bind(ids)
    .execute(executor)
    .await?;
    Ok(())
}

/// When the next head of a queue that nobody holds falls due.
pub async fn next_due(pool: &PgPool) -> Result<Option<DateTime<Utc>>, sqlx::Error> {
    sqlx::query_scalar(&format!(
        "{HEADS}
         SELECT min(d.next_attempt_at) FROM heads JOIN webhook_deliveries d ON d.seq = heads.seq
          WHERE d.leased_until IS NULL OR d.leased_until < now()"
    ))
    .fetch_one(pool)
    .await
}
