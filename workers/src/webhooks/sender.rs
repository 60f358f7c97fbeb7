//! The sender: claims due deliveries and sends them, at most `concurrency` at once per
//! process and one at a time per queue, so a slow or dead endpoint holds one slot and never
//! delays another endpoint.
//!
//! The loop is a state machine over two states, its checkpoint being the outbox itself:
//! **Claiming** takes as many due heads of queues as there are free slots (a head: the
//! pending row of its queue with no earlier pending row), leasing them, and starts one
//! attempt each; **Waiting** sleeps until a notification on `WEBHOOK_CHANNEL` (a new or
//! re-queued delivery), an attempt ending (its queue's next row may now be the head), the
//! next head falling due, or [`POLL`] at the latest. Claims use `FOR UPDATE SKIP LOCKED` and
//! a lease: two senders never send one delivery at once, and a delivery whose sender died
//! mid-send is sent again when its lease lapses (at least once; receivers deduplicate by
//! `webhook-id`).

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use framegate_commands::blobs::Blobs;
use framegate_commands::trace_context::{self, TraceContext};
use framegate_commands::webhook_deliveries::WEBHOOK_CHANNEL;
use framegate_commands::webhook_signature::WebhookSecret;
use framegate_commands::EventStore;
use framegate_domain::webhook::DisabledReason;
use framegate_domain::{UserId, WebhookEndpointId};
use framegate_projections::notify::{Event, Heard, Notifications};
use framegate_projections::video_object::VideoResponse;
use reqwest::Client;
use serde::{Deserialize, Serialize};
use sqlx::PgPool;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tracing::field::Empty;
use tracing::{debug, info_span, warn, Instrument as _};

use super::attempt::{self, Answer, Signed};
use super::outcome::{self, Claimed};
use super::WebhookConfig;

/// The longest the sender sleeps without looking for due deliveries.
pub const POLL: Duration = Duration::from_secs(1);

/// How long a claim holds a delivery: the attempt's budget plus time to record it. A sender
/// that has not recorded by then is taken for dead and the delivery is sent again.
fn lease(config: &WebhookConfig) -> Duration {
    config.timeout * 3 + Duration::from_secs(30)
}

#[derive(Clone)]
pub struct Sender {
    pool: PgPool,
    store: EventStore,
    client: Client,
    config: Arc<WebhookConfig>,
    /// Signs the download links of `video.completed` deliveries at each attempt.
    blobs: Option<Blobs>,
}

/// Where the loop is.
enum State {
    Claiming,
    Waiting { until: Instant },
}

impl Sender {
    pub fn new(
        pool: PgPool,
        store: EventStore,
        config: WebhookConfig,
        blobs: Option<Blobs>,
    ) -> reqwest::Result<Self> {
        Ok(Self {
            client: attempt::client(config.allow_private, config.timeout)?,
            pool,
            store,
            config: Arc::new(config),
            blobs,
        })
    }

    /// Sends until `stopped` flips, then lets the attempts in flight finish.
    pub async fn run(
        self,
        notifications: Option<Notifications>,
        mut stopped: watch::Receiver<bool>,
    ) {
        let mut heard = notifications.as_ref().map(Notifications::subscribe);
        let mut in_flight: JoinSet<()> = JoinSet::new();
        let mut state = State::Claiming;
        loop {
            state = match state {
                State::Claiming => {
                    while in_flight.try_join_next().is_some() {}
                    let free = self.config.concurrency.saturating_sub(in_flight.len());
                    self.claim_and_start(free, &mut in_flight).await
                }
                State::Waiting { until } => tokio::select! {
                    () = woken(&mut heard) => State::Claiming,
                    Some(_) = in_flight.join_next(), if !in_flight.is_empty() => State::Claiming,
                    () = tokio::time::sleep_until(until) => State::Claiming,
                    _ = stopped.wait_for(|stop| *stop) => break,
                },
            };
        }
        while in_flight.join_next().await.is_some() {}
    }

    /// Claims up to `free` deliveries and starts them; says how long to wait next.
    async fn claim_and_start(&self, free: usize, in_flight: &mut JoinSet<()>) -> State {
        let poll = Instant::now() + POLL;
        if free == 0 {
            return State::Waiting { until: poll };
        }
        let claimed = match claim(&self.pool, free, lease(&self.config)).await {
            Ok(claimed) => claimed,
            Err(error) => {
                warn!(%error, "webhooks: cannot claim deliveries");
                return State::Waiting { until: poll };
            }
        };
        let full = claimed.len() == free;
        for delivery in claimed {
            let sender = self.clone();
            in_flight.spawn(async move { sender.deliver(delivery).await });
        }
        if full {
            // Every slot is taken: the next chance is an attempt ending.
            return State::Waiting { until: poll };
        }
        match next_due(&self.pool).await {
            Ok(Some(due)) => {
                let wait = (due - Utc::now()).to_std().unwrap_or_default();
                State::Waiting {
                    until: (Instant::now() + wait).min(poll),
                }
            }
            Ok(None) => State::Waiting { until: poll },
            Err(error) => {
                warn!(%error, "webhooks: cannot read the next due delivery");
                State::Waiting { until: poll }
            }
        }
    }

    /// One attempt of `claimed`, recorded; a span in the trace of the delivery's event.
    async fn deliver(&self, claimed: Claimed) {
        let trace = claimed
            .traceparent
            .as_deref()
            .and_then(|parent| TraceContext::parse(parent, claimed.tracestate.as_deref()));
        let span = trace_context::continued(
            info_span!(
                "webhook.delivery",
                delivery = %claimed.delivery_id,
                attempt = claimed.attempts,
                trace_id = Empty
            ),
            trace.as_ref(),
        );
        if let Err(error) = self.try_deliver(&claimed).instrument(span).await {
            // The lease lapses and the delivery is tried again.
            warn!(delivery = %claimed.delivery_id, %error, "webhooks: attempt not recorded");
        }
    }

    async fn try_deliver(
        &self,
        claimed: &Claimed,
    ) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        let (Some(url), None) = (&claimed.url, &claimed.endpoint_off) else {
            let why = claimed.endpoint_off.as_deref().unwrap_or("deleted");
            outcome::skip(&self.pool, claimed, &format!("the endpoint is {why}")).await?;
            return Ok(());
        };
        let started_at = Utc::now();
        let answer = match self.prepare(claimed).await {
            Ok((secrets, body)) => {
                let request = Signed {
                    url,
                    message_id: &claimed.message_id,
                    body: &body,
                    secrets: &secrets,
                };
                attempt::post(&self.client, self.config.allow_private, request).await
            }
            Err(error) => Answer {
                status: None,
                latency: Duration::ZERO,
                error: Some(format!("not sent: {error}")),
                body: None,
            },
        };
        debug!(delivery = %claimed.delivery_id, status = ?answer.status, error = ?answer.error, "webhooks: attempt");
        if answer.gone() {
            outcome::disable(
                &self.pool,
                &self.store,
                claimed,
                DisabledReason::Gone,
                &answer,
                &self.config,
            )
            .await?;
        }
        if outcome::record(&self.pool, &self.config, claimed, started_at, &answer).await? {
            outcome::disable(
                &self.pool,
                &self.store,
                claimed,
                DisabledReason::Failing,
                &answer,
                &self.config,
            )
            .await?;
        }
        Ok(())
    }

    /// The secrets that sign now and the body to send (with fresh links if it has some).
    async fn prepare(
        &self,
        claimed: &Claimed,
    ) -> Result<(Vec<WebhookSecret>, String), Box<dyn std::error::Error + Send + Sync>> {
        let secrets = match claimed.endpoint_id {
            Some(id) => {
                framegate_commands::webhooks::signing_secrets(
                    &self.pool,
                    WebhookEndpointId::from_uuid(id),
                )
                .await?
            }
            None => {
                let mut conn = self.pool.acquire().await?;
                vec![
                    framegate_commands::webhooks::default_secret(
                        &mut conn,
                        UserId::from_uuid(claimed.owner_id),
                    )
                    .await?,
                ]
            }
        };
        if secrets.is_empty() {
            return Err("the endpoint has no signing secret".into());
        }
        let body = match (&self.blobs, claimed.event_type.as_str()) {
            (Some(blobs), "video.completed") => {
                with_links(&claimed.body, blobs, &self.config).await?
            }
            _ => claimed.body.clone(),
        };
        Ok((secrets, body))
    }
}

/// A stored video body, as the subscription wrote it.
#[derive(Serialize, Deserialize)]
struct VideoBody {
    id: String,
    #[serde(rename = "type")]
    event_type: String,
    created_at: chrono::DateTime<Utc>,
    data: VideoResponse,
}

/// `body` with download links valid for the configured lifetime from now: links signed when
/// the event happened would have expired by a retry a day later.
async fn with_links(
    body: &str,
    blobs: &Blobs,
    config: &WebhookConfig,
) -> Result<String, Box<dyn std::error::Error + Send + Sync>> {
    let mut stored: VideoBody = serde_json::from_str(body)?;
    stored.data = stored.data.with_links(blobs, config.link_ttl).await?;
    Ok(serde_json::to_string(&stored)?)
}

/// Waits for a notification on [`WEBHOOK_CHANNEL`] (or a hint that some were missed); never
/// returns without a listener.
async fn woken(heard: &mut Option<Heard>) {
    let Some(heard) = heard else {
        return std::future::pending().await;
    };
    loop {
        match heard.recv().await {
            Event::Notification { channel, .. } if channel == WEBHOOK_CHANNEL => return,
            Event::Missed => return,
            _ => {}
        }
    }
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

/// Leases up to `limit` due heads of queues.
pub async fn claim(
    pool: &PgPool,
    limit: usize,
    lease: Duration,
) -> Result<Vec<Claimed>, sqlx::Error> {
    // Not flushed before the answer: a claim lost in a crash only lapses sooner (ADR 0031).
    let mut tx = pool.begin().await?;
    sqlx::query("SET LOCAL synchronous_commit = off")
        .execute(&mut *tx)
        .await?;
    let claimed = sqlx::query_as(&format!(
        "{HEADS},
         due AS (
             SELECT d.delivery_id FROM heads JOIN webhook_deliveries d ON d.seq = heads.seq
              WHERE d.status = 'pending' AND d.next_attempt_at <= now()
                AND (d.leased_until IS NULL OR d.leased_until < now())
              ORDER BY d.next_attempt_at, d.seq
              LIMIT $1
                FOR UPDATE OF d SKIP LOCKED)
         UPDATE webhook_deliveries d
            SET leased_until = now() + make_interval(secs => $2), attempts = d.attempts + 1,
                updated_at = now()
           FROM due
          WHERE d.delivery_id = due.delivery_id
         RETURNING d.delivery_id, d.queue, d.endpoint_id, d.owner_id,
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
                       AS endpoint_off"
    ))
    .bind(i64::try_from(limit).unwrap_or(i64::MAX))
    .bind(lease.as_secs_f64())
    .fetch_all(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(claimed)
}

/// When the next head of a queue that nobody holds falls due.
async fn next_due(pool: &PgPool) -> Result<Option<chrono::DateTime<Utc>>, sqlx::Error> {
    sqlx::query_scalar(&format!(
        "{HEADS}
         SELECT min(d.next_attempt_at) FROM heads JOIN webhook_deliveries d ON d.seq = heads.seq
          WHERE d.leased_until IS NULL OR d.leased_until < now()"
    ))
    .fetch_one(pool)
    .await
}
