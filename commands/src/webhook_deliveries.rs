//! The webhook delivery outbox (`webhook_deliveries`, migration 0017, ADR 0031): what the
//! delivery subscription and the API enqueue, what the API lists and re-queues. The sender
//! (`framegate_workers::webhooks`) drains it.
//!
//! A delivery belongs to a *queue*: an endpoint (`endpoint:<id>`) or one video's per-request
//! URL (`video:<id>`). A queue is sent strictly in order: nothing in it is attempted while an
//! earlier row of it is pending. Rows are enqueued inside the caller's transaction, which
//! also notifies [`WEBHOOK_CHANNEL`] so senders wake at its commit.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::{FromRow, PgConnection, PgExecutor};
use uuid::Uuid;

use crate::trace_context::TraceContext;

/// The channel a newly enqueued (or re-queued) delivery is announced on.
pub const WEBHOOK_CHANNEL: &str = "framegate_webhooks";

/// The delivery type sent by `POST /v1/webhooks/{id}/test`.
pub const TEST_EVENT_TYPE: &str = "webhook.test";

/// The queue of endpoint `id`.
pub fn endpoint_queue(id: Uuid) -> String {
    format!("endpoint:{id}")
}

/// The queue of video `id`'s per-request URL.
pub fn video_queue(id: Uuid) -> String {
    format!("video:{id}")
}

/// The `webhook-id` of deliveries made from event `event_id` (the same for every target and
/// every attempt).
pub fn message_id(event_id: Uuid) -> String {
    format!("msg_{}", event_id.simple())
}

/// The body of every delivery: `{id, type, created_at, data}`.
#[derive(Debug, Clone, Serialize)]
pub struct Envelope<'a, T: Serialize> {
    pub id: &'a str,
    #[serde(rename = "type")]
    pub event_type: &'a str,
    pub created_at: DateTime<Utc>,
    pub data: T,
}

/// Where a delivery goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Endpoint(Uuid),
    /// A video's per-request URL.
    VideoUrl {
        video_id: Uuid,
        url: String,
    },
}

impl Target {
    pub fn queue(&self) -> String {
        match self {
            Target::Endpoint(id) => endpoint_queue(*id),
            Target::VideoUrl { video_id, .. } => video_queue(*video_id),
        }
    }
}

/// One delivery to enqueue.
#[derive(Debug, Clone)]
pub struct NewDelivery {
    pub target: Target,
    pub owner: Uuid,
    pub message_id: String,
    pub event_type: String,
    pub event_at: DateTime<Utc>,
    pub video_id: Option<Uuid>,
    /// The JSON body (an [`Envelope`]).
    pub body: String,
    /// The trace its attempts belong to: the event's (or the request's) context, if traced.
    pub trace: Option<TraceContext>,
}

/// Enqueues `deliveries` in the caller's transaction and wakes the senders at its commit. A
/// delivery of a message its queue already has is ignored (so a handler run twice enqueues
/// once). Returns the ids of the rows written.
///
/// Enqueues take one advisory lock until their transaction ends ([`ENQUEUE_LOCK`]), so rows
/// draw their `seq` in the order their transactions commit and become visible in `seq`
/// order: the senders' scan of new rows and a queue's cursor never pass a row that commits
/// later. Nothing here writes a queue's own row (the senders' scan finds the new rows), so an
/// enqueue never waits for a sender's record, nor a record for an enqueue (ADR 0034).
pub async fn enqueue(
    conn: &mut PgConnection,
    deliveries: &[NewDelivery],
) -> Result<Vec<Uuid>, sqlx::Error> {
    if deliveries.is_empty() {
        return Ok(Vec::new());
    }
    sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))")
        .bind(ENQUEUE_LOCK)
        .execute(&mut *conn)
        .await?;
    let mut ids = Vec::with_capacity(deliveries.len());
    for delivery in deliveries {
        let (endpoint_id, url) = match &delivery.target {
            Target::Endpoint(id) => (Some(*id), None),
            Target::VideoUrl { url, .. } => (None, Some(url.as_str())),
        };
        let id: Option<Uuid> = sqlx::query_scalar(
            "INSERT INTO webhook_deliveries (delivery_id, queue, endpoint_id, owner_id, url,
                 message_id, event_type, event_at, video_id, body, traceparent, tracestate)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)
             ON CONFLICT (queue, message_id) DO NOTHING
             RETURNING delivery_id",
        )
        .bind(Uuid::now_v7())
        .bind(delivery.target.queue())
        .bind(endpoint_id)
        .bind(delivery.owner)
        .bind(url)
        .bind(&delivery.message_id)
        .bind(&delivery.event_type)
        .bind(delivery.event_at)
        .bind(delivery.video_id)
        .bind(&delivery.body)
        .bind(delivery.trace.as_ref().map(|t| t.traceparent.as_str()))
        .bind(
            delivery
                .trace
                .as_ref()
                .and_then(|t| t.tracestate.as_deref()),
        )
        .fetch_optional(&mut *conn)
        .await?;
        ids.extend(id);
    }
    if !ids.is_empty() {
        wake(conn).await?;
    }
    Ok(ids)
}

/// The advisory lock every enqueue holds until its transaction ends (see [`enqueue`]).
pub const ENQUEUE_LOCK: &str = "framegate.webhook_deliveries.enqueue";

/// Wakes the senders when the caller's transaction commits.
pub async fn wake(executor: impl PgExecutor<'_>) -> Result<(), sqlx::Error> {
    sqlx::query("SELECT pg_notify($1, '')")
        .bind(WEBHOOK_CHANNEL)
        .execute(executor)
        .await?;
    Ok(())
}

/// A delivery as its log shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, FromRow)]
pub struct DeliveryRow {
    pub delivery_id: Uuid,
    pub message_id: String,
    pub event_type: String,
    /// pending | delivered | failed (given up)
    pub status: String,
    pub attempts: i32,
    /// When it is tried next (pending only).
    pub next_attempt_at: Option<DateTime<Utc>>,
    pub last_status: Option<i32>,
    pub last_latency_ms: Option<i32>,
    pub last_error: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub delivered_at: Option<DateTime<Utc>>,
    /// Order within the endpoint's queue (the cursor of listings).
    pub seq: i64,
}

/// A [`DeliveryRow`] read from `webhook_delivery_states` (migration 0028), the view that
/// says what a row delivered by a run (no state of its own) came to.
const COLUMNS: &str = "delivery_id, message_id, event_type, status, attempts, next_attempt_at,
    last_status, last_latency_ms, last_error, created_at, updated_at, delivered_at, seq";

/// Endpoint `endpoint_id`'s deliveries, newest first, before the `before` cursor (a `seq`).
pub async fn list(
    executor: impl PgExecutor<'_>,
    endpoint_id: Uuid,
    before: Option<i64>,
    limit: i64,
) -> Result<Vec<DeliveryRow>, sqlx::Error> {
    sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM webhook_delivery_states
          WHERE endpoint_id = $1 AND ($2::bigint IS NULL OR seq < $2)
          ORDER BY seq DESC
          LIMIT $3"
    ))
    .bind(endpoint_id)
    .bind(before)
    .bind(limit)
    .fetch_all(executor)
    .await
}

/// Delivery `delivery_id` of endpoint `endpoint_id`.
pub async fn get(
    executor: impl PgExecutor<'_>,
    endpoint_id: Uuid,
    delivery_id: Uuid,
) -> Result<Option<DeliveryRow>, sqlx::Error> {
    sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM webhook_delivery_states
          WHERE endpoint_id = $1 AND delivery_id = $2"
    ))
    .bind(endpoint_id)
    .bind(delivery_id)
    .fetch_optional(executor)
    .await
}

/// Puts delivery `delivery_id` of endpoint `endpoint_id` back in its queue, due now, with a
/// fresh retry window (whatever its status: a given-up delivery too). `None` if the endpoint
/// has no such delivery.
///
/// A row its queue's cursor has not reached yet stays in the queue's order: the head (backing
/// off) makes the queue due now, a row behind it waits for it; a row the queue has moved past is sent on
/// its own (`retry_due_at`). The queue's row is locked first, as the sender's records lock
/// it, so the cursor read here is the one the sender leaves: call it in a transaction.
pub async fn retry(
    conn: &mut PgConnection,
    endpoint_id: Uuid,
    delivery_id: Uuid,
) -> Result<Option<DeliveryRow>, sqlx::Error> {
    let found: Option<(String, i64)> = sqlx::query_as(
        "SELECT queue, seq FROM webhook_deliveries WHERE endpoint_id = $1 AND delivery_id = $2",
    )
    .bind(endpoint_id)
    .bind(delivery_id)
    .fetch_optional(&mut *conn)
    .await?;
    let Some((queue, seq)) = found else {
        return Ok(None);
    };
    // The queue's row, made if the senders' scan has not reached its rows yet, and locked.
    // A row the cursor has not passed may be in flight in a turn holding the queue: that
    // turn's records are told to look for it (`retried_under`).
    let sent_through: i64 = sqlx::query_scalar(
        "INSERT INTO webhook_queues (queue) VALUES ($1)
         ON CONFLICT (queue) DO UPDATE
            SET retried_under = CASE WHEN $2 > webhook_queues.sent_through
                                     THEN webhook_queues.lease
                                     ELSE webhook_queues.retried_under END
         RETURNING sent_through",
    )
    .bind(&queue)
    .bind(seq)
    .fetch_one(&mut *conn)
    .await?;
    // A row a run delivered has no attempt of its own yet: its first goes to the log now.
    sqlx::query(
        "WITH first AS (
             INSERT INTO webhook_delivery_attempts
                 (delivery_id, attempt, started_at, status, latency_ms, response_body)
             SELECT delivery_id, attempts, COALESCE(run_started_at, updated_at), last_status,
                    COALESCE(last_latency_ms, 0), run_response_body
               FROM webhook_delivery_states WHERE delivery_id = $1 AND by_run
             ON CONFLICT (delivery_id, attempt) DO NOTHING
             RETURNING delivery_id, attempt, status, latency_ms)
         UPDATE webhook_deliveries d
            SET status = 'delivered', attempts = first.attempt, last_status = first.status,
                last_latency_ms = first.latency_ms, delivered_at = now()
           FROM first WHERE d.delivery_id = first.delivery_id",
    )
    .bind(delivery_id)
    .execute(&mut *conn)
    .await?;
    let passed = seq <= sent_through;
    let row: Option<DeliveryRow> = sqlx::query_as(&format!(
        "UPDATE webhook_deliveries
            SET status = 'pending', next_attempt_at = now(), window_started_at = now(),
                delivered_at = NULL, updated_at = now(),
                retry_due_at = CASE WHEN $3 THEN now() END
          WHERE endpoint_id = $1 AND delivery_id = $2
          RETURNING {COLUMNS}"
    ))
    .bind(endpoint_id)
    .bind(delivery_id)
    .bind(passed)
    .fetch_optional(&mut *conn)
    .await?;
    if !passed {
        // Due now if it is the queue's head (backing off); one behind the head waits for it.
        sqlx::query(
            "UPDATE webhook_queues q SET due_at = LEAST(COALESCE(q.due_at, now()), now())
              WHERE q.queue = $1
                AND NOT EXISTS (SELECT 1 FROM webhook_deliveries h
                                 WHERE h.queue = q.queue AND h.seq > q.sent_through
                                   AND h.seq < $2 AND h.status = 'pending'
                                   AND h.retry_due_at IS NULL)",
        )
        .bind(&queue)
        .bind(seq)
        .execute(&mut *conn)
        .await?;
    }
    if row.is_some() {
        wake(&mut *conn).await?;
    }
    Ok(row)
}

/// One attempt of a delivery, oldest first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, FromRow)]
pub struct AttemptRow {
    pub attempt: i32,
    pub started_at: DateTime<Utc>,
    pub status: Option<i32>,
    pub latency_ms: i32,
    pub error: Option<String>,
    pub response_body: Option<String>,
}

/// The attempts of delivery `delivery_id` of endpoint `endpoint_id`.
pub async fn attempts(
    executor: impl PgExecutor<'_>,
    endpoint_id: Uuid,
    delivery_id: Uuid,
) -> Result<Vec<AttemptRow>, sqlx::Error> {
    // A row a run delivered has its one attempt in the run's record (migration 0028).
    sqlx::query_as(
        "SELECT a.attempt, a.started_at, a.status, a.latency_ms, a.error, a.response_body
           FROM webhook_attempt_log a
           JOIN webhook_deliveries d USING (delivery_id)
          WHERE d.endpoint_id = $1 AND a.delivery_id = $2
          ORDER BY a.attempt",
    )
    .bind(endpoint_id)
    .bind(delivery_id)
    .fetch_all(executor)
    .await
}
