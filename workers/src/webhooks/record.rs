//! A run's record (ADR 0034), in one transaction: the queue's cursor moved past what was
//! settled in order, when the queue is due next and whether it stays held; the deliveries
//! made on their first attempt as one `webhook_runs` row; every other attempted row's new
//! state and its attempt in the log; the endpoint's run of failures.
//!
//! The common case writes no row per delivery: a fresh row (never attempted before, not
//! retried by hand) that was delivered is recorded only in its run's row, and the cursor
//! passing it is its state (`webhook_delivery_states`, migration 0028). Failures, rows with
//! earlier attempts and rows on the retry path are written one by one, as they are rare.

use chrono::{DateTime, Utc};
use sqlx::PgPool;
use uuid::Uuid;

use super::claim::{Claimed, Hold};
use super::outcome::{health, settle, Attempted, End, Recorded};
use super::WebhookConfig;

/// Records the attempts of one run to `endpoint` (if it goes to one) in one transaction; see the module's documentation. An
/// attempt whose delivery was retried by hand meanwhile (its window restarted) is logged but
/// leaves the delivery to the retry, which sends it on its own.
pub async fn record(
    pool: &PgPool,
    config: &WebhookConfig,
    hold: &Hold,
    endpoint: Option<Uuid>,
    attempted: &[Attempted],
    unsent: &[Claimed],
    end: End,
) -> Result<Recorded, sqlx::Error> {
    let mut tx = pool.begin().await?;
    // Not flushed before going on: lost in a crash, the attempts are only made again (at
    // least once, the receiver dedupes by `webhook-id`); nothing here is worth a disk flush.
    // The same statements run for every run: planned once per connection, not at each bind.
    sqlx::query(
        "SELECT set_config('synchronous_commit', 'off', true),
                set_config('plan_cache_mode', 'force_generic_plan', true)",
    )
    .execute(&mut *tx)
    .await?;
    let now = Utc::now();
    let rows = Rows::settled(config, attempted, now);
    let (retry, passed, retried_in_flight) = match hold {
        Hold::Queue { queue, lease } => {
            let (through, pending) = rows.cursor();
            let moved = Cursor {
                through,
                pending,
                end,
            };
            match move_cursor(&mut tx, config, queue, *lease, moved).await? {
                Some(retried) => (false, through.unwrap_or(0), retried),
                None => return Ok(Recorded::Lost),
            }
        }
        Hold::Retry => (true, i64::MAX, true),
    };
    let (by_run, own) = rows.split(|row| !retry && row.status == "delivered" && row.attempt == 1);
    if let Hold::Queue { queue, .. } = hold {
        insert_run(&mut tx, queue, &by_run).await?;
    }
    // A row recorded on its own changes no indexed column: a HOT update (migration 0028).
    if !own.0.is_empty() {
        update_own(&mut tx, &own, retry).await?;
    }
    log_attempts(&mut tx, &own).await?;
    if retried_in_flight {
        retried_meanwhile(&mut tx, &rows, passed).await?;
    }
    let failing_too_long = health(&mut tx, config, endpoint, attempted, now).await?;
    if retry && !unsent.is_empty() {
        // A retried row not attempted (our failure postponed it): let go, due again later.
        let ids: Vec<Uuid> = unsent.iter().map(|row| row.delivery_id).collect();
        let not_before = match end {
            End::Release { not_before } => not_before,
            End::Continue => None,
        };
        sqlx::query(
            "UPDATE webhook_deliveries
                SET leased_until = NULL,
                    retry_due_at = GREATEST(retry_due_at, COALESCE($2, retry_due_at))
              WHERE delivery_id = ANY($1) AND retry_due_at IS NOT NULL",
        )
        .bind(ids)
        .bind(not_before)
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    Ok(Recorded::Held { failing_too_long })
}

/// The new state of rows recorded one by one (`on_retry_path`: the run is a row retried by
/// hand, which leaves the retry path once settled).
async fn update_own(
    tx: &mut sqlx::PgConnection,
    own: &Rows,
    on_retry_path: bool,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE webhook_deliveries d
            SET status = r.status, attempts = r.attempt, next_attempt_at = r.next_attempt_at,
                leased_until = NULL, last_status = r.code, last_latency_ms = r.latency_ms,
                last_error = r.error, updated_at = now(),
                delivered_at = CASE WHEN r.status = 'delivered' THEN now() END,
                retry_due_at = CASE WHEN $9 AND r.status = 'pending' THEN r.next_attempt_at
                                    WHEN $9 THEN NULL
                                    ELSE d.retry_due_at END
           FROM unnest($1::uuid[], $2::timestamptz[], $3::text[], $4::timestamptz[],
                       $5::int4[], $6::int4[], $7::text[], $8::int4[])
                AS r (delivery_id, window_started_at, status, next_attempt_at, code,
                      latency_ms, error, attempt)
          WHERE d.delivery_id = r.delivery_id AND d.window_started_at = r.window_started_at",
    )
    .bind(own.column(|r| r.id))
    .bind(own.column(|r| r.window))
    .bind(own.column(|r| r.status))
    .bind(own.column(|r| r.next))
    .bind(own.column(|r| r.code))
    .bind(own.column(|r| r.latency_ms))
    .bind(own.column(|r| r.error.clone()))
    .bind(own.column(|r| r.attempt))
    .bind(on_retry_path)
    .execute(&mut *tx)
    .await?;
    Ok(())
}

/// The fresh rows a run delivered, as one `webhook_runs` row: their `seq`s and, in the same
/// order, when each attempt started, its status, latency and the start of its answer.
async fn insert_run(
    tx: &mut sqlx::PgConnection,
    queue: &str,
    rows: &Rows,
) -> Result<(), sqlx::Error> {
    let (Some(first), Some(last)) = (rows.0.first(), rows.0.last()) else {
        return Ok(());
    };
    sqlx::query(
        "INSERT INTO webhook_runs
             (queue, last_seq, first_seq, seqs, started_at, status, latency_ms, response_body)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
         ON CONFLICT (queue, last_seq) DO NOTHING",
    )
    .bind(queue)
    .bind(last.seq)
    .bind(first.seq)
    .bind(rows.column(|r| r.seq))
    .bind(rows.column(|r| r.started))
    .bind(rows.column(|r| r.code))
    .bind(rows.column(|r| r.latency_ms))
    .bind(rows.column(|r| r.body.clone()))
    .execute(&mut *tx)
    .await?;
    Ok(())
}

/// A row each in the attempts log for attempts recorded row by row.
async fn log_attempts(tx: &mut sqlx::PgConnection, rows: &Rows) -> Result<(), sqlx::Error> {
    if rows.0.is_empty() {
        return Ok(());
    }
    sqlx::query(
        "INSERT INTO webhook_delivery_attempts
             (delivery_id, attempt, started_at, status, latency_ms, error, response_body)
         SELECT * FROM unnest($1::uuid[], $2::int4[], $3::timestamptz[], $4::int4[],
                              $5::int4[], $6::text[], $7::text[])
         ON CONFLICT (delivery_id, attempt) DO NOTHING",
    )
    .bind(rows.column(|r| r.id))
    .bind(rows.column(|r| r.attempt))
    .bind(rows.column(|r| r.started))
    .bind(rows.column(|r| r.code))
    .bind(rows.column(|r| r.latency_ms))
    .bind(rows.column(|r| r.answer_error.clone()))
    .bind(rows.column(|r| r.body.clone()))
    .execute(&mut *tx)
    .await?;
    Ok(())
}

/// Where a record leaves a held queue.
pub(super) struct Cursor {
    /// The last row settled in order, if any.
    pub through: Option<i64>,
    /// The first row still pending, if the run stopped at one.
    pub pending: Option<Pending>,
    pub end: End,
}

/// A row a run stopped at: its id, the window it was attempted in, when it is due again.
pub(super) type Pending = (Uuid, DateTime<Utc>, DateTime<Utc>);

/// Moves a held queue's cursor to `through` (if some row was settled) and says when it is
/// due next: when its head backs off, at its next attempt (unless it was retried by hand
/// meanwhile: then now); now (or `not_before`) when rows wait behind the cursor; never when
/// none do. Whether rows wait is the queue's `tail_seq`, which the senders' scan raises
/// under this row's lock, so a row the scan found while this record ran is not missed.
/// `None` if the lease was lost; else whether a row the cursor had not passed was retried by
/// hand under this lease (so one of the run's rows may have been retried in flight).
pub(super) async fn move_cursor(
    tx: &mut sqlx::PgConnection,
    config: &WebhookConfig,
    queue: &str,
    lease: Uuid,
    cursor: Cursor,
) -> Result<Option<bool>, sqlx::Error> {
    let (keep, not_before) = match cursor.end {
        End::Continue => (true, None),
        End::Release { not_before } => (false, not_before),
    };
    let (pending_id, pending_window, pending_at) = match cursor.pending {
        Some((id, window, at)) => (Some(id), Some(window), Some(at)),
        None => (None, None, None),
    };
    let moved: Option<bool> = sqlx::query_scalar(
        "UPDATE webhook_queues
            SET sent_through = GREATEST(sent_through, COALESCE($3, sent_through)),
                due_at = CASE
                    WHEN EXISTS (SELECT 1 FROM webhook_deliveries p
                                  WHERE p.delivery_id = $8 AND p.window_started_at = $9)
                        THEN $4
                    WHEN $8::uuid IS NOT NULL
                      OR tail_seq > GREATEST(sent_through, COALESCE($3, sent_through))
                        THEN GREATEST(now(), COALESCE($5, now()))
                    END,
                leased_until = CASE WHEN $6 THEN now() + make_interval(secs => $7) END,
                lease = CASE WHEN $6 THEN lease END
          WHERE queue = $1 AND lease = $2
         RETURNING COALESCE(retried_under = $2, false)",
    )
    .bind(queue)
    .bind(lease)
    .bind(cursor.through)
    .bind(pending_at)
    .bind(not_before)
    .bind(keep)
    .bind(super::sender::lease(config).as_secs_f64())
    .bind(pending_id)
    .bind(pending_window)
    .fetch_optional(&mut *tx)
    .await?;
    Ok(moved)
}

/// Rows retried by hand while they were in flight: their attempt is counted and logged (a
/// row a run delivered has no other record of it), and those the queue's cursor passes now
/// (`seq <= passed`) are sent again on their own; one it has not passed keeps its place as
/// the queue's head. One lookup per row by key; nothing is written for the others.
pub(super) async fn retried_meanwhile(
    tx: &mut sqlx::PgConnection,
    rows: &Rows,
    passed: i64,
) -> Result<(), sqlx::Error> {
    if rows.0.is_empty() {
        return Ok(());
    }
    sqlx::query(
        "WITH moved AS (
             UPDATE webhook_deliveries d
                SET leased_until = NULL,
                    retry_due_at = CASE WHEN d.seq <= $4 THEN COALESCE(d.retry_due_at, now())
                                        ELSE d.retry_due_at END,
                    attempts = GREATEST(d.attempts, r.attempt)
               FROM unnest($1::uuid[], $2::timestamptz[], $3::int4[], $5::timestamptz[],
                           $6::int4[], $7::int4[], $8::text[], $9::text[])
                    AS r (delivery_id, window_started_at, attempt, started_at, code,
                          latency_ms, error, body)
              WHERE d.delivery_id = r.delivery_id
                AND d.window_started_at <> r.window_started_at AND d.status = 'pending'
             RETURNING r.*)
         INSERT INTO webhook_delivery_attempts
             (delivery_id, attempt, started_at, status, latency_ms, error, response_body)
         SELECT delivery_id, attempt, started_at, code, latency_ms, error, body
           FROM moved WHERE attempt > 0
         ON CONFLICT (delivery_id, attempt) DO NOTHING",
    )
    .bind(rows.column(|r| r.id))
    .bind(rows.column(|r| r.window))
    .bind(rows.column(|r| r.attempt))
    .bind(passed)
    .bind(rows.column(|r| r.started))
    .bind(rows.column(|r| r.code))
    .bind(rows.column(|r| r.latency_ms))
    .bind(rows.column(|r| r.answer_error.clone()))
    .bind(rows.column(|r| r.body.clone()))
    .execute(&mut *tx)
    .await?;
    Ok(())
}

/// One attempted row as recorded.
#[derive(Debug, Clone)]
pub(super) struct Row {
    pub id: Uuid,
    pub seq: i64,
    pub window: DateTime<Utc>,
    /// The attempt's number (0 for a row closed unattempted).
    pub attempt: i32,
    pub started: DateTime<Utc>,
    pub status: &'static str,
    pub next: DateTime<Utc>,
    pub code: Option<i32>,
    pub latency_ms: i32,
    /// What the row's state says went wrong.
    pub error: Option<String>,
    /// What the attempt's log says went wrong.
    pub answer_error: Option<String>,
    pub body: Option<String>,
}

/// A run's attempted rows, in order, bound column by column as arrays.
#[derive(Debug, Default)]
pub(super) struct Rows(pub Vec<Row>);

impl Rows {
    /// The new state of each attempted row.
    fn settled(config: &WebhookConfig, attempted: &[Attempted], now: DateTime<Utc>) -> Self {
        Rows(
            attempted
                .iter()
                .map(|a| {
                    let (status, next, error) = settle(config, &a.claimed, &a.answer, now);
                    Row {
                        id: a.claimed.delivery_id,
                        seq: a.claimed.seq,
                        window: a.claimed.window_started_at,
                        attempt: a.claimed.attempts,
                        started: a.started_at,
                        status,
                        next,
                        code: a.answer.status.map(i32::from),
                        latency_ms: i32::try_from(a.answer.latency.as_millis()).unwrap_or(i32::MAX),
                        error,
                        answer_error: a.answer.error.clone(),
                        body: a.answer.body.clone(),
                    }
                })
                .collect(),
        )
    }

    /// Rows closed without an attempt (attempt 0, nothing logged).
    pub(super) fn unattempted(rows: &[Claimed]) -> Self {
        Rows(
            rows.iter()
                .map(|row| Row {
                    id: row.delivery_id,
                    seq: row.seq,
                    window: row.window_started_at,
                    attempt: 0,
                    started: Utc::now(),
                    status: "failed",
                    next: Utc::now(),
                    code: None,
                    latency_ms: 0,
                    error: None,
                    answer_error: None,
                    body: None,
                })
                .collect(),
        )
    }

    /// One column, for binding as an array.
    pub(super) fn column<T>(&self, get: impl Fn(&Row) -> T) -> Vec<T> {
        self.0.iter().map(get).collect()
    }

    /// The rows `pick` takes, and the others, each in order.
    fn split(&self, pick: impl Fn(&Row) -> bool) -> (Rows, Rows) {
        let (picked, others) = self.0.iter().cloned().partition(|row| pick(row));
        (Rows(picked), Rows(others))
    }

    /// Where a queue's cursor goes: past the attempted rows settled in order (`None` if the
    /// first is not), and the first row still pending (id, window, when it is due again).
    fn cursor(&self) -> (Option<i64>, Option<Pending>) {
        let mut through = None;
        for row in &self.0 {
            if row.status == "pending" {
                return (through, Some((row.id, row.window, row.next)));
            }
            through = Some(row.seq);
        }
        (through, None)
    }
}
