//! Claiming work from the delivery outbox: *runs*, up to [`RUN_ROWS`] rows of one queue.
//!
//! A queue is leased as a whole (`webhook_queues`, migration 0028, ADR 0034): its cursor,
//! `sent_through`, says how far it has been sent, and the rows after it wait in order, the
//! first of them due at the queue's `due_at` (now for fresh rows, the head's next attempt
//! while it backs off). The sender that holds a queue reads its rows from the cursor, run
//! after run, without leasing them one by one; its records move the cursor, guarded by the
//! lease's token. Rows retried by hand after their queue moved past them are sent on their
//! own: each is a run of one row leased by itself (`retry_due_at`), at most one per queue at a
//! time.

use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::{FromRow, PgPool};
use uuid::Uuid;

/// Rows a run takes at most. A run costs a few statements whatever its length, so longer
/// runs cost less per delivery; a sender that dies resends at most two runs per queue (ADR
/// 0034), and a turn is bounded in time anyway (`sender::RUN_BUDGET`).
pub const RUN_ROWS: i64 = 256;

/// Where a run goes: the same for every row of a queue (an endpoint's, or one video's
/// per-request URL), so a run read ahead reads it once, not with every row (a claim's first
/// run still reads it per row, in the one statement that reads the runs of every leased
/// queue, and keeps the first).
#[derive(Debug, Clone, PartialEq, Eq, FromRow)]
pub struct Destination {
    pub queue: String,
    pub endpoint_id: Option<Uuid>,
    pub owner_id: Uuid,
    /// The per-request URL, or the endpoint's current one; `None` if the endpoint is gone.
    pub url: Option<String>,
    /// Why the endpoint is disabled, or `deleted`; `None` while it takes deliveries.
    pub endpoint_off: Option<String>,
}

/// A delivery as the sender claimed it.
#[derive(Debug, Clone, FromRow)]
pub struct Claimed {
    pub delivery_id: Uuid,
    pub seq: i64,
    pub message_id: String,
    pub event_type: String,
    pub video_id: Option<Uuid>,
    pub body: String,
    /// Attempts including this one.
    pub attempts: i32,
    /// Retries stop this long after it. Also the row's token: a manual retry restarts it,
    /// and an attempt recorded against an older window does not overwrite the retry.
    pub window_started_at: DateTime<Utc>,
    /// The trace the delivery belongs to (migration 0021), if it was made with traces on.
    pub traceparent: Option<String>,
    pub tracestate: Option<String>,
}

/// A claimed row read with its destination (a queue's first run, a row retried by hand).
#[derive(FromRow)]
struct ClaimedTo {
    #[sqlx(flatten)]
    to: Destination,
    #[sqlx(flatten)]
    row: Claimed,
}

/// How a run is held.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Hold {
    /// Its queue, leased as a whole; `lease` is the token its records must show.
    Queue { queue: String, lease: Uuid },
    /// One row retried by hand, leased by itself.
    Retry,
}

/// Rows a sender holds, in their queue's order, and where they go.
#[derive(Debug)]
pub struct Run {
    pub hold: Hold,
    pub to: Destination,
    pub rows: Vec<Claimed>,
}

/// The rows of a held queue's next run, and where they go now.
#[derive(Debug)]
pub struct Ahead {
    pub to: Destination,
    pub rows: Vec<Claimed>,
}

/// The columns of a [`Claimed`] (`d`: a `webhook_deliveries` row).
const ROW: &str = "d.delivery_id, d.seq, d.message_id, d.event_type, d.video_id, d.body,
           d.attempts + 1 AS attempts, d.window_started_at, d.traceparent, d.tracestate";

/// The columns of a [`Destination`]: `d` a row of the queue, `w` its endpoint (if any).
const DESTINATION: &str = "d.queue, d.endpoint_id, d.owner_id,
           COALESCE(d.url, CASE WHEN w.deleted_at IS NULL THEN w.url END) AS url,
           CASE WHEN w.deleted_at IS NOT NULL THEN 'deleted'
                WHEN w.disabled_reason IS NOT NULL
                    THEN 'disabled (' || w.disabled_reason || ')' END AS endpoint_off";

/// The rows the holders of queues `l` (`queue`, `after`: its cursor, or the last row of the
/// run being sent) send next, with `columns`: waiting rows after `after`, in order, up to
/// `limit` per queue (a row on the retry path is passed; it is sent on its own). The endpoint
/// is joined once per queue: its URL and whether it is off are the same for every row.
fn waiting_after(l: &str, limit: &str) -> String {
    format!(
        "SELECT {DESTINATION}, {ROW} FROM {l}
           LEFT JOIN webhook_endpoints w
                  ON w.endpoint_id = CASE WHEN l.queue LIKE 'endpoint:%'
                                          THEN substr(l.queue, 10)::uuid END
          CROSS JOIN LATERAL (
                SELECT * FROM webhook_deliveries d
                 WHERE d.queue = l.queue AND d.seq > l.after
                   AND d.status = 'pending' AND d.retry_due_at IS NULL
                 ORDER BY d.seq LIMIT {limit}) AS d"
    )
}

/// Rows the senders' scan of new rows reads at most per claim.
const SCAN_ROWS: i64 = 10_000;

/// Finds the rows enqueued since the last scan and makes their queues due (unless a queue's
/// head is backing off) with their tails raised: enqueues write no queue row (ADR 0034), so
/// this is how a queue learns it has rows. Enqueues commit in `seq` order, so nothing can
/// appear behind the scan. One scanner at a time: a claim that finds another scanning goes
/// straight to leasing.
async fn scan(tx: &mut sqlx::PgConnection) -> Result<(), sqlx::Error> {
    let through: Option<i64> = sqlx::query_scalar(
        "SELECT scanned_through FROM webhook_outbox_scan FOR UPDATE SKIP LOCKED",
    )
    .fetch_optional(&mut *tx)
    .await?;
    let Some(through) = through else {
        return Ok(());
    };
    sqlx::query(
        "WITH fresh AS (
             SELECT queue, seq FROM webhook_deliveries WHERE seq > $1 ORDER BY seq LIMIT $2),
         marked AS (
             INSERT INTO webhook_queues AS q (queue, tail_seq, due_at)
             SELECT queue, max(seq), now() FROM fresh GROUP BY queue ORDER BY queue
             ON CONFLICT (queue) DO UPDATE
                SET tail_seq = GREATEST(q.tail_seq, EXCLUDED.tail_seq),
                    due_at = CASE WHEN q.due_at IS NULL AND EXCLUDED.tail_seq > q.sent_through
                                  THEN now() ELSE q.due_at END)
         UPDATE webhook_outbox_scan SET scanned_through = (SELECT max(seq) FROM fresh)
          WHERE EXISTS (SELECT 1 FROM fresh)",
    )
    .bind(through)
    .bind(SCAN_ROWS)
    .execute(&mut *tx)
    .await?;
    Ok(())
}

/// Makes the transaction read a queue's rows by walking the `(queue, seq)` index in order,
/// whatever the statistics say. Without this, a planner that expects few waiting rows (a
/// fresh table, or an outbox of mostly delivered rows, whose statistics say almost nothing
/// is pending) gathers every row after the cursor and sorts them, so each run of 64 read the
/// whole backlog (measured: 5–9 ms a read behind 16,000 rows, against 0.3 ms). The plan is
/// made once per connection (a generic plan): planning each read cost ~0.2 ms.
async fn in_order(tx: &mut sqlx::PgConnection) -> Result<(), sqlx::Error> {
    sqlx::query(
        "SELECT set_config('enable_bitmapscan', 'off', true),
                set_config('enable_seqscan', 'off', true),
                set_config('plan_cache_mode', 'force_generic_plan', true)",
    )
    .execute(tx)
    .await?;
    Ok(())
}

/// Leases up to `limit` runs: due queues nobody holds, with their first run each, then as
/// many rows retried by hand as there are slots left.
pub async fn claim(pool: &PgPool, limit: usize, lease: Duration) -> Result<Vec<Run>, sqlx::Error> {
    // Not flushed before the answer: a claim lost in a crash only lapses sooner (ADR 0031).
    let mut tx = pool.begin().await?;
    sqlx::query("SET LOCAL synchronous_commit = off")
        .execute(&mut *tx)
        .await?;
    scan(&mut tx).await?;
    let leased: Vec<(String, i64, Uuid)> = sqlx::query_as(
        "WITH due AS (
             SELECT queue FROM webhook_queues
              WHERE due_at <= now() AND (leased_until IS NULL OR leased_until < now())
              ORDER BY due_at
              LIMIT $1
                FOR UPDATE SKIP LOCKED)
         UPDATE webhook_queues q
            SET leased_until = now() + make_interval(secs => $2), lease = gen_random_uuid()
           FROM due
          WHERE q.queue = due.queue
         RETURNING q.queue, q.sent_through, q.lease",
    )
    .bind(i64::try_from(limit).unwrap_or(i64::MAX))
    .bind(lease.as_secs_f64())
    .fetch_all(&mut *tx)
    .await?;
    let mut runs = Vec::new();
    if !leased.is_empty() {
        in_order(&mut tx).await?;
        let queues: Vec<&str> = leased.iter().map(|(q, _, _)| q.as_str()).collect();
        let cursors: Vec<i64> = leased.iter().map(|(_, c, _)| *c).collect();
        let rows: Vec<ClaimedTo> = sqlx::query_as(&waiting_after(
            "unnest($1::text[], $2::int8[]) AS l (queue, after)",
            "$3",
        ))
        .bind(&queues)
        .bind(&cursors)
        .bind(RUN_ROWS)
        .fetch_all(&mut *tx)
        .await?;
        runs = queue_runs(&leased, rows);
        // A queue due with nothing waiting (its rows were moved to the retry path): at rest.
        let idle: Vec<&str> = leased
            .iter()
            .filter(|(queue, _, _)| !runs.iter().any(|run| hold_of(run) == Some(queue)))
            .map(|(queue, _, _)| queue.as_str())
            .collect();
        if !idle.is_empty() {
            sqlx::query(
                "UPDATE webhook_queues
                    SET sent_through = GREATEST(sent_through, tail_seq), due_at = NULL,
                        leased_until = NULL, lease = NULL
                  WHERE queue = ANY($1)",
            )
            .bind(&idle)
            .execute(&mut *tx)
            .await?;
        }
    }
    let free = limit.saturating_sub(runs.len());
    if free > 0 {
        let retries: Vec<ClaimedTo> = sqlx::query_as(&format!(
            // One retried row per queue at a time, and none of a queue that has one in
            // flight: a hanging endpoint holds one slot for its retries too.
            "WITH first AS (
                 SELECT DISTINCT ON (queue) delivery_id FROM webhook_deliveries
                  WHERE retry_due_at <= now() AND status = 'pending'
                  ORDER BY queue, retry_due_at),
             due AS (
                 SELECT d.delivery_id, d.endpoint_id
                   FROM first JOIN webhook_deliveries d USING (delivery_id)
                  WHERE d.retry_due_at <= now() AND d.status = 'pending'
                    AND (d.leased_until IS NULL OR d.leased_until < now())
                    AND NOT EXISTS (
                        SELECT 1 FROM webhook_deliveries busy
                         WHERE busy.queue = d.queue AND busy.retry_due_at IS NOT NULL
                           AND busy.leased_until >= now())
                  ORDER BY d.retry_due_at
                  LIMIT $1
                    FOR UPDATE OF d SKIP LOCKED)
             UPDATE webhook_deliveries d
                SET leased_until = now() + make_interval(secs => $2)
               FROM due LEFT JOIN webhook_endpoints w ON w.endpoint_id = due.endpoint_id
              WHERE d.delivery_id = due.delivery_id
             RETURNING {DESTINATION}, {ROW}"
        ))
        .bind(i64::try_from(free).unwrap_or(i64::MAX))
        .bind(lease.as_secs_f64())
        .fetch_all(&mut *tx)
        .await?;
        runs.extend(retries.into_iter().map(|claimed| Run {
            hold: Hold::Retry,
            to: claimed.to,
            rows: vec![claimed.row],
        }));
    }
    tx.commit().await?;
    Ok(runs)
}

fn hold_of(run: &Run) -> Option<&String> {
    match &run.hold {
        Hold::Queue { queue, .. } => Some(queue),
        Hold::Retry => None,
    }
}

/// The rows read for the leased queues, as one run per queue (in the order they were leased),
/// in `seq` order; every row of a queue goes to the same destination.
fn queue_runs(leased: &[(String, i64, Uuid)], rows: Vec<ClaimedTo>) -> Vec<Run> {
    let mut runs: Vec<Run> = Vec::new();
    for ClaimedTo { to, row } in rows {
        if let Some(run) = runs.iter_mut().find(|run| run.to.queue == to.queue) {
            run.rows.push(row);
            continue;
        }
        let Some((_, _, lease)) = leased.iter().find(|(queue, _, _)| *queue == to.queue) else {
            continue;
        };
        runs.push(Run {
            hold: Hold::Queue {
                queue: to.queue.clone(),
                lease: *lease,
            },
            to,
            rows: vec![row],
        });
    }
    runs.sort_by_key(|run| {
        leased
            .iter()
            .position(|(queue, _, _)| *queue == run.to.queue)
    });
    for run in &mut runs {
        run.rows.sort_by_key(|row| row.seq);
    }
    runs
}

/// The run of a held queue right after `after` (the last row of the run being sent), read
/// while that run is sent (ADR 0034), with where it goes now (the endpoint may have been
/// disabled, deleted or moved meanwhile). Nothing to lease: the queue is held, so no other
/// sender reads these rows; if the lease was lost meanwhile, nothing is read.
pub async fn next_run(
    pool: &PgPool,
    queue: &str,
    lease: Uuid,
    after: i64,
) -> Result<Option<Ahead>, sqlx::Error> {
    let mut tx = pool.begin().await?;
    in_order(&mut tx).await?;
    let rows: Vec<Claimed> = sqlx::query_as(&format!(
        "SELECT {ROW} FROM webhook_queues l
           CROSS JOIN LATERAL (
                SELECT * FROM webhook_deliveries d
                 WHERE d.queue = l.queue AND d.seq > $2
                   AND d.status = 'pending' AND d.retry_due_at IS NULL
                 ORDER BY d.seq LIMIT $4) AS d
          WHERE l.queue = $1 AND l.lease = $3
          ORDER BY d.seq"
    ))
    .bind(queue)
    .bind(after)
    .bind(lease)
    .bind(RUN_ROWS)
    .fetch_all(&mut *tx)
    .await?;
    let Some(first) = rows.first() else {
        tx.commit().await?;
        return Ok(None);
    };
    // The row may be gone meanwhile (an erasure deletes its user's deliveries): then so is
    // the run, as far as this read goes; the next claim reads the queue afresh.
    let to: Option<Destination> = sqlx::query_as(&format!(
        "SELECT {DESTINATION} FROM webhook_deliveries d
           LEFT JOIN webhook_endpoints w ON w.endpoint_id = d.endpoint_id
          WHERE d.delivery_id = $1"
    ))
    .bind(first.delivery_id)
    .fetch_optional(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(to.map(|to| Ahead { to, rows }))
}

/// Lets go of a queue without moving its cursor: its rows after the cursor are sent again,
/// in order, by whoever claims it next. A lease already lost is left alone.
pub async fn let_go(pool: &PgPool, hold: &Hold, rows: &[Claimed]) -> Result<(), sqlx::Error> {
    match hold {
        Hold::Queue { queue, lease } => {
            sqlx::query(
                "UPDATE webhook_queues SET leased_until = NULL, lease = NULL
                  WHERE queue = $1 AND lease = $2",
            )
            .bind(queue)
            .bind(lease)
            .execute(pool)
            .await?;
        }
        Hold::Retry => {
            let ids: Vec<Uuid> = rows.iter().map(|row| row.delivery_id).collect();
            sqlx::query(
                "UPDATE webhook_deliveries SET leased_until = NULL WHERE delivery_id = ANY($1)",
            )
            .bind(ids)
            .execute(pool)
            .await?;
        }
    }
    Ok(())
}

/// When the next queue or retried row that nobody holds falls due.
pub async fn next_due(pool: &PgPool) -> Result<Option<DateTime<Utc>>, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT LEAST(
             -- Rows the scan has not reached: due now.
             (SELECT now() FROM webhook_outbox_scan s
               WHERE EXISTS (SELECT 1 FROM webhook_deliveries d
                              WHERE d.seq > s.scanned_through)),
             (SELECT min(due_at) FROM webhook_queues
               WHERE due_at IS NOT NULL AND (leased_until IS NULL OR leased_until < now())),
             -- As the claim takes them: pending, one per queue at a time (a queue with a
             -- retried row in flight is not due, or the loop would claim nothing at once).
             -- The first in the retry index's order, not min(): an aggregate over a table
             -- without statistics yet was planned as a parallel scan (workers started at
             -- each call: ~12 ms idle, 34 ms under load, against 0.1 ms).
             (SELECT d.retry_due_at FROM webhook_deliveries d
               WHERE d.retry_due_at IS NOT NULL AND d.status = 'pending'
                 AND (d.leased_until IS NULL OR d.leased_until < now())
                 AND NOT EXISTS (
                     SELECT 1 FROM webhook_deliveries busy
                      WHERE busy.queue = d.queue AND busy.retry_due_at IS NOT NULL
                        AND busy.leased_until >= now())
               ORDER BY d.retry_due_at LIMIT 1))",
    )
    .fetch_one(pool)
    .await
}
