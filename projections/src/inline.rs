//! The inline read models: `videos`, `credit_accounts` and `credit_ledger`, updated in the
//! transaction that appends their events, so a write's response and the next read show it without waiting for
//! a projector (Marten's inline projections).
//!
//! They are the same projectors as the asynchronous ones, run on the events just appended;
//! the asynchronous projectors go on running beside them, skip what the inline path applied
//! (each account and video row records the last event sequence it reflects; ledger rows are
//! keyed by the event's position), and rebuild them in a replay like
//! any other read model (docs/adr/0015-one-transaction-video-request.md).

use std::sync::Arc;

use async_trait::async_trait;
use cqrs_es::Aggregate as _;
use framegate_commands::error::BoxError;
use framegate_commands::inline::InlineProjection;
use framegate_commands::EventStore;
use framegate_domain::{CreditAccount, Video};
use sqlx::{PgConnection, PgPool};

use crate::log::StoredEvent;
use crate::read_models::versioned::{self, Writer};
use crate::read_models::{credit_ledger, CreditAccountsProjector, VideosProjector};

/// The read models projected inline.
#[derive(Debug, Clone, Copy, Default)]
pub struct InlineModels;

#[async_trait]
impl InlineProjection for InlineModels {
    fn follows(&self, aggregate_type: &str) -> bool {
        aggregate_type == Video::TYPE || aggregate_type == CreditAccount::TYPE
    }

    async fn apply(&self, conn: &mut PgConnection, events: &[StoredEvent]) -> Result<(), BoxError> {
        for event in events {
            if event.aggregate_type == Video::TYPE {
                versioned::apply::<VideosProjector>(conn, event, Writer::Inline).await?;
            } else if event.aggregate_type == CreditAccount::TYPE {
                versioned::apply::<CreditAccountsProjector>(conn, event, Writer::Inline).await?;
                credit_ledger::project(conn, event).await?;
            }
        }
        Ok(())
    }
}

/// The event store every role uses: its appends keep the inline read models current.
pub fn event_store(pool: PgPool) -> EventStore {
    EventStore::with_inline(pool, Arc::new(InlineModels))
}
