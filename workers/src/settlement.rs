//! Credit settlement: the process manager that makes credits follow each video.
//!
//! It is a subscription on the ordered log. A completed video captures its final cost (capped
//! at the reservation; the rest returns to the balance); a failure that is not charged, or a
//! cancellation, releases the reservation; a charged failure captures it. Capture and release
//! are idempotent per video in the CreditAccount aggregate, so replaying an event after a
//! crash (the checkpoint moves after the command) has no second effect: each settles once.

use async_trait::async_trait;
use cqrs_es::Aggregate as _;
use framegate_commands::{Actor, CommandMetadata, EventStore};
use framegate_domain::{CreditCommand, Credits, Video, VideoEvent, VideoId};
use framegate_projections::subscription::BoxError;
use framegate_projections::{EventHandler, StoredEvent};
use sqlx::{PgConnection, PgPool};
use std::time::Duration;
use tokio::sync::watch;
use uuid::Uuid;

pub const SUBSCRIPTION: &str = "process.credit_settlement";

pub struct Settlement {
    store: EventStore,
}

impl Settlement {
    pub fn new(store: EventStore) -> Self {
        Self { store }
    }
}

#[async_trait]
impl EventHandler for Settlement {
    async fn handle(&self, _conn: &mut PgConnection, event: &StoredEvent) -> Result<(), BoxError> {
        if event.aggregate_type != Video::TYPE {
            return Ok(());
        }
        let payload: VideoEvent = serde_json::from_value(event.payload.clone())?;
        let video_id: VideoId = event.aggregate_id.parse()?;
        let video = self.store.videos().load(&event.aggregate_id).await?;
        let Some(spec) = video.spec() else {
            return Err(format!("video {video_id} has no request").into());
        };
        let command = match payload {
            VideoEvent::VideoCompleted { final_cost } => CreditCommand::Capture {
                video_id,
                amount: final_cost.min(spec.estimated_cost).max(Credits::ZERO),
            },
            VideoEvent::VideoFailed { charged: true, .. } => CreditCommand::Capture {
                video_id,
                amount: spec.estimated_cost,
            },
            VideoEvent::VideoFailed { charged: false, .. } | VideoEvent::VideoCancelled {} => {
                CreditCommand::Release { video_id }
            }
            _ => return Ok(()),
        };
        let correlation = event
            .meta("correlation_id")
            .and_then(|c| c.parse().ok())
            .unwrap_or_else(Uuid::now_v7);
        let metadata = CommandMetadata::caused_by_event(Actor::System, correlation, event.event_id);
        self.store
            .credits()
            .execute(&spec.owner.to_string(), command, &metadata)
            .await?;
        Ok(())
    }
}

/// Releases reservations left without a video: `request_video` reserves first and records the
/// request second, so a crash in between leaves credits reserved for a video that will never
/// exist. A reservation older than `grace` whose video has no events and that was neither
/// captured nor released is released. Returns how many were.
///
/// The grace period must comfortably exceed the time between the two commands (milliseconds),
/// or a request still being recorded could lose its reservation.
pub async fn release_orphaned_reservations(
    store: &EventStore,
    pool: &PgPool,
    grace: Duration,
) -> Result<usize, BoxError> {
    let orphans: Vec<(Uuid, Uuid)> = sqlx::query_as(
        "SELECT r.user_id, r.video_id
           FROM credit_ledger r
          WHERE r.kind = 'reserved'
            AND r.recorded_at < now() - make_interval(secs => $1)
            AND NOT EXISTS (SELECT 1 FROM credit_ledger s
                             WHERE s.video_id = r.video_id AND s.kind IN ('captured', 'released'))
            AND NOT EXISTS (SELECT 1 FROM events e
                             WHERE e.aggregate_type = $2 AND e.aggregate_id = r.video_id::text)",
    )
    .bind(grace.as_secs_f64())
    .bind(Video::TYPE)
    .fetch_all(pool)
    .await?;
    let metadata = CommandMetadata::new_request(Actor::System);
    for (owner, video) in &orphans {
        let release = CreditCommand::Release {
            video_id: VideoId::from_uuid(*video),
        };
        store
            .credits()
            .execute(&owner.to_string(), release, &metadata)
            .await?;
        tracing::warn!(%owner, %video, "released a reservation whose video was never recorded");
    }
    Ok(orphans.len())
}

/// Runs [`release_orphaned_reservations`] every `interval` until `shutdown` flips.
pub async fn sweep_orphans(
    store: EventStore,
    pool: PgPool,
    grace: Duration,
    interval: Duration,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        if let Err(error) = release_orphaned_reservations(&store, &pool, grace).await {
            tracing::warn!(%error, "orphaned reservation sweep failed");
        }
        tokio::select! {
            () = tokio::time::sleep(interval) => {}
            _ = shutdown.wait_for(|stop| *stop) => return,
        }
    }
}
