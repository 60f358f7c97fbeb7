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
use sqlx::PgConnection;
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
