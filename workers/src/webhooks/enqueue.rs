//! The delivery subscription: maps events of the ordered log to webhook event types and, in
//! the subscription's own transaction, enqueues one delivery per target that wants it. The
//! checkpoint moves in that transaction too, so every event is enqueued exactly once
//! whatever crashes (and the outbox's unique (queue, message) would drop a second anyway).
//!
//! | event | webhook type |
//! | --- | --- |
//! | `VideoRequested` | `video.queued` |
//! | `VideoSubmitted` (a provider accepted the job) | `video.started` |
//! | `VideoProgressed` | `video.progress` (at most one per 5 s per video and target) |
//! | `VideoCompleted` / `VideoFailed` / `VideoCancelled` | `video.completed` / `.failed` / `.cancelled` |
//! | `CreditsPurchased` | `credits.purchased` |
//! | a credit event taking the available balance below the owner's threshold | `credits.low` |
//!
//! Targets: the owner's enabled endpoints subscribed to the type (the `webhook_endpoints`
//! read model, written inline, so an endpoint counts from the moment it is committed), and
//! the video's per-request `webhook_url` if its filter has the type. A video event's `data`
//! is the video object of `GET /v1/videos/{id}` as that event left it (folded from the
//! stream, `videos::as_of`), so a late read never describes a later state. `credits.low`
//! fires once per fall below the threshold the owner had at the event (the rule the mail
//! notification uses too: `projections::credits_low`), whether or not they opted into mail.

use std::time::Duration;

use async_trait::async_trait;
use chrono::Utc;
use cqrs_es::Aggregate as _;
use framegate_commands::webhook_deliveries::{enqueue, message_id, Envelope, NewDelivery, Target};
use framegate_domain::{CreditAccount, CreditEvent, UserId, Video, VideoId};
use framegate_projections::read_models::videos::as_of::as_of;
use framegate_projections::read_models::webhook_endpoints;
use framegate_projections::subscription::BoxError;
use framegate_projections::video_object::VideoResponse;
use framegate_projections::{credits_low, preferences};
use framegate_projections::{EventHandler, StoredEvent};
use serde::Serialize;
use sqlx::PgConnection;
use uuid::Uuid;

pub const SUBSCRIPTION: &str = "process.webhook_deliveries";

/// The least time between two `video.progress` deliveries of one video to one target.
pub const PROGRESS_INTERVAL: Duration = Duration::from_secs(5);

/// The webhook type an event is delivered as, if any.
pub fn webhook_type(aggregate_type: &str, event_type: &str) -> Option<&'static str> {
    if aggregate_type == CreditAccount::TYPE {
        return Some(match event_type {
            "CreditsPurchased" => "credits.purchased",
            // Whether it crossed the threshold is decided with the ledger (`low_credit`).
            _ => "credits.low",
        });
    }
    if aggregate_type != Video::TYPE {
        return None;
    }
    let kind = match event_type {
        "VideoRequested" => "video.queued",
        "VideoSubmitted" => "video.started",
        "VideoProgressed" => "video.progress",
        "VideoCompleted" => "video.completed",
        "VideoFailed" => "video.failed",
        "VideoCancelled" => "video.cancelled",
        _ => return None,
    };
    Some(kind)
}

pub struct WebhookEnqueuer {
    /// Events older than this when read are not delivered (a subscription starting on a
    /// long log, or reset, would otherwise send history nobody waits for any more).
    max_age: Duration,
}

impl WebhookEnqueuer {
    pub fn new(max_age: Duration) -> Self {
        Self { max_age }
    }
}

#[async_trait]
impl EventHandler for WebhookEnqueuer {
    async fn handle(&self, conn: &mut PgConnection, event: &StoredEvent) -> Result<(), BoxError> {
        let Some(kind) = webhook_type(&event.aggregate_type, &event.event_type) else {
            return Ok(());
        };
        let age = (Utc::now() - event.recorded_at)
            .to_std()
            .unwrap_or_default();
        if age > self.max_age {
            return Ok(());
        }
        let deliveries = match kind {
            "credits.purchased" => credit_deliveries(conn, event, kind).await?,
            "credits.low" => low_credit_deliveries(conn, event, kind).await?,
            _ => video_deliveries(conn, event, kind).await?,
        };
        if !deliveries.is_empty() {
            enqueue(conn, &deliveries).await?;
        }
        Ok(())
    }
}

async fn video_deliveries(
    conn: &mut PgConnection,
    event: &StoredEvent,
    kind: &'static str,
) -> Result<Vec<NewDelivery>, BoxError> {
    let video_id: VideoId = event.aggregate_id.parse()?;
    let (row, spec) = as_of(conn, video_id, event.sequence)
        .await?
        .ok_or_else(|| format!("video {video_id} has no request"))?;
    let mut targets: Vec<Target> = webhook_endpoints::subscribed(&mut *conn, spec.owner, kind)
        .await?
        .into_iter()
        .map(|endpoint| Target::Endpoint(endpoint.endpoint_id))
        .collect();
    if let Some(webhook) = spec
        .webhook
        .as_ref()
        .filter(|w| w.events.iter().any(|e| e == kind))
    {
        targets.push(Target::VideoUrl {
            video_id: video_id.as_uuid(),
            url: webhook.url.clone(),
        });
    }
    if kind == "video.progress" {
        let mut kept = Vec::with_capacity(targets.len());
        for target in targets {
            if !progress_sent_lately(conn, &target, video_id, event).await? {
                kept.push(target);
            }
        }
        targets = kept;
    }
    build(
        targets,
        spec.owner,
        event,
        kind,
        Some(video_id.as_uuid()),
        VideoResponse::from(row),
    )
}

/// Whether `target` got a `video.progress` of the video for an event less than
/// [`PROGRESS_INTERVAL`] before this one (by the events' times, so a replay decides alike).
async fn progress_sent_lately(
    conn: &mut PgConnection,
    target: &Target,
    video_id: VideoId,
    event: &StoredEvent,
) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM webhook_deliveries
                         WHERE queue = $1 AND video_id = $2 AND event_type = 'video.progress'
                           AND event_at > $3 - make_interval(secs => $4) AND event_at <= $3)",
    )
    .bind(target.queue())
    .bind(video_id.as_uuid())
    .bind(event.recorded_at)
    .bind(PROGRESS_INTERVAL.as_secs_f64())
    .fetch_one(conn)
    .await
}

/// `credits.purchased`: the purchase as the event records it.
#[derive(Debug, Serialize)]
struct Purchase {
    user_id: Uuid,
    credits: i64,
    payment_reference: String,
}

async fn credit_deliveries(
    conn: &mut PgConnection,
    event: &StoredEvent,
    kind: &'static str,
) -> Result<Vec<NewDelivery>, BoxError> {
    let owner: UserId = event.aggregate_id.parse()?;
    let CreditEvent::CreditsPurchased {
        amount,
        payment_reference,
        ..
    } = event.decode()?
    else {
        return Ok(Vec::new());
    };
    let targets = webhook_endpoints::subscribed(&mut *conn, owner, kind)
        .await?
        .into_iter()
        .map(|endpoint| Target::Endpoint(endpoint.endpoint_id))
        .collect();
    let purchase = Purchase {
        user_id: owner.as_uuid(),
        credits: amount.value(),
        payment_reference,
    };
    build(targets, owner, event, kind, None, purchase)
}

/// `credits.low`: the balance fell below the threshold with this event.
#[derive(Debug, Serialize)]
struct LowCredit {
    user_id: Uuid,
    /// Credits free to spend (balance minus open reservations) after the event.
    available: i64,
    /// Before the event.
    previous_available: i64,
    threshold: i64,
}

async fn low_credit_deliveries(
    conn: &mut PgConnection,
    event: &StoredEvent,
    kind: &'static str,
) -> Result<Vec<NewDelivery>, BoxError> {
    let owner: UserId = event.aggregate_id.parse()?;
    // Who would receive it first: most accounts have no such endpoint, and the ledger sum
    // is the dearer query.
    let targets: Vec<Target> = webhook_endpoints::subscribed(&mut *conn, owner, kind)
        .await?
        .into_iter()
        .map(|endpoint| Target::Endpoint(endpoint.endpoint_id))
        .collect();
    if targets.is_empty() {
        return Ok(Vec::new());
    }
    let threshold = preferences::as_of(conn, owner.as_uuid(), event.position())
        .await?
        .credits_low_threshold;
    let Some(low) = credits_low::crossing(conn, event, threshold).await? else {
        return Ok(Vec::new());
    };
    let data = LowCredit {
        user_id: owner.as_uuid(),
        available: low.after.value(),
        previous_available: low.before.value(),
        threshold: low.threshold.value(),
    };
    build(targets, owner, event, kind, None, data)
}

fn build(
    targets: Vec<Target>,
    owner: UserId,
    event: &StoredEvent,
    kind: &'static str,
    video_id: Option<Uuid>,
    data: impl Serialize,
) -> Result<Vec<NewDelivery>, BoxError> {
    if targets.is_empty() {
        return Ok(Vec::new());
    }
    let id = message_id(event.event_id);
    let trace = event.trace_context();
    let body = serde_json::to_string(&Envelope {
        id: &id,
        event_type: kind,
        created_at: event.recorded_at,
        data,
    })?;
    Ok(targets
        .into_iter()
        .map(|target| NewDelivery {
            target,
            owner: owner.as_uuid(),
            message_id: id.clone(),
            event_type: kind.to_owned(),
            event_at: event.recorded_at,
            video_id,
            body: body.clone(),
            trace: trace.clone(),
        })
        .collect())
}
