//! Credit settlement: the process manager that makes credits follow each video.
//!
//! It is a subscription on the ordered log. A completed video captures its final cost (the
//! CreditAccount caps a capture at the reservation; the rest returns to the balance); a
//! failure that is not charged, or a cancellation, releases the reservation; a charged
//! failure captures it. It looks at the event type before anything else and takes the amounts
//! from the events: only the owner's account comes from the video row (written inline with
//! the request). Capture and release are idempotent per video in the CreditAccount aggregate,
//! so replaying an event after a crash (the checkpoint moves after the command) has no second
//! effect: each settles once.

use async_trait::async_trait;
use cqrs_es::Aggregate as _;
use framegate_commands::{trace_context, Actor, CommandMetadata, EventStore};
use framegate_domain::{CreditCommand, Credits, UserId, Video, VideoEvent, VideoId};
use framegate_projections::read_models::videos;
use framegate_projections::subscription::BoxError;
use framegate_projections::{EventHandler, StoredEvent};
use sqlx::PgConnection;
use tracing::field::Empty;
use tracing::{info_span, Instrument as _};
use uuid::Uuid;

pub const SUBSCRIPTION: &str = "process.credit_settlement";

/// The video events that settle credits; every other event is passed over undecoded.
const SETTLING: [&str; 3] = ["VideoCompleted", "VideoFailed", "VideoCancelled"];

pub struct Settlement {
    store: EventStore,
}

impl Settlement {
    pub fn new(store: EventStore) -> Self {
        Self { store }
    }

    /// Whose account the video's reservation is on, and how much it reserved.
    async fn owner(
        &self,
        conn: &mut PgConnection,
        video_id: VideoId,
    ) -> Result<(UserId, Credits), BoxError> {
        if let Some(row) = videos::get(&mut *conn, video_id).await? {
            return Ok((
                UserId::from_uuid(row.owner_id),
                Credits::new(row.estimated_cost),
            ));
        }
        // Written by a store without inline read models and not projected yet: the stream.
        let video = self.store.videos().load(&video_id.to_string()).await?;
        let spec = video
            .spec()
            .ok_or_else(|| format!("video {video_id} has no request"))?;
        Ok((spec.owner, spec.estimated_cost))
    }
}

#[async_trait]
impl EventHandler for Settlement {
    async fn handle(&self, conn: &mut PgConnection, event: &StoredEvent) -> Result<(), BoxError> {
        if event.aggregate_type != Video::TYPE || !SETTLING.contains(&event.event_type.as_str()) {
            return Ok(());
        }
        let payload: VideoEvent = event.decode()?;
        let video_id: VideoId = event.aggregate_id.parse()?;
        let (owner, reserved) = self.owner(conn, video_id).await?;
        let command = match payload {
            VideoEvent::VideoCompleted { final_cost } => CreditCommand::Capture {
                video_id,
                amount: final_cost.max(Credits::ZERO),
            },
            VideoEvent::VideoFailed { charged: true, .. } => CreditCommand::Capture {
                video_id,
                amount: reserved,
            },
            VideoEvent::VideoCancelled { charged: true } => CreditCommand::Capture {
                video_id,
                amount: reserved,
            },
            VideoEvent::VideoFailed { charged: false, .. }
            | VideoEvent::VideoCancelled { charged: false } => CreditCommand::Release { video_id },
            _ => return Ok(()),
        };
        let correlation = event
            .meta("correlation_id")
            .and_then(|c| c.parse().ok())
            .unwrap_or_else(Uuid::now_v7);
        // In the video's trace: the capture or release is the last step of its request.
        let span = trace_context::continued(
            info_span!(
                "settlement",
                video = %video_id,
                event = %event.event_type,
                trace_id = Empty
            ),
            event.trace_context().as_ref(),
        );
        async {
            let metadata =
                CommandMetadata::caused_by_event(Actor::System, correlation, event.event_id);
            self.store
                .credits()
                .execute(&owner.to_string(), command, &metadata)
                .await
        }
        .instrument(span)
        .await?;
        Ok(())
    }
}
