//! The inline read models: every read model the API answers from (`videos`,
//! `credit_accounts`, `credit_ledger`, `credit_purchases`, `users`, `api_keys`, `images`,
//! `webhook_endpoints`), updated in the
//! transaction that appends their events, so a write's response and the next read show it
//! without waiting for a projector (Marten's inline projections), and a revoked key or a
//! disabled user is refused at once even while the projectors are stopped.
//!
//! They are the same projectors as the asynchronous ones, run on the events just appended;
//! the asynchronous projectors go on running beside them, skip what the inline path applied
//! (each user, account, video and image row records the last event sequence it reflects;
//! ledger rows are keyed by the event's position; API key changes are idempotent), and
//! rebuild them in a replay like any other read model
//! (docs/adr/0015-one-transaction-video-request.md).

use std::sync::Arc;

use async_trait::async_trait;
use cqrs_es::Aggregate as _;
use framegate_commands::error::BoxError;
use framegate_commands::inline::InlineProjection;
use framegate_commands::EventStore;
use framegate_domain::{CreditAccount, Image, User, Video, WebhookEndpoint};
use sqlx::{PgConnection, PgPool};

use crate::log::StoredEvent;
use crate::read_models::versioned::{self, Writer};
use crate::read_models::{
    api_keys, credit_ledger, credit_purchases, CreditAccountsProjector, ImagesProjector,
    UsersProjector, VideosProjector, WebhookEndpointsProjector,
};

/// The read models projected inline.
#[derive(Debug, Clone, Copy, Default)]
pub struct InlineModels;

#[async_trait]
impl InlineProjection for InlineModels {
    fn follows(&self, aggregate_type: &str) -> bool {
        [
            Video::TYPE,
            CreditAccount::TYPE,
            User::TYPE,
            Image::TYPE,
            WebhookEndpoint::TYPE,
        ]
        .contains(&aggregate_type)
    }

    async fn apply(&self, conn: &mut PgConnection, events: &[StoredEvent]) -> Result<(), BoxError> {
        for event in events {
            match event.aggregate_type.as_str() {
                Video::TYPE => {
                    versioned::apply::<VideosProjector>(conn, event, Writer::Inline).await?;
                }
                CreditAccount::TYPE => {
                    versioned::apply::<CreditAccountsProjector>(conn, event, Writer::Inline)
                        .await?;
                    credit_ledger::project(conn, event).await?;
                    credit_purchases::project(conn, event).await?;
                }
                User::TYPE => {
                    versioned::apply::<UsersProjector>(conn, event, Writer::Inline).await?;
                    api_keys::project_inline(conn, event).await?;
                }
                Image::TYPE => {
                    versioned::apply::<ImagesProjector>(conn, event, Writer::Inline).await?;
                }
                WebhookEndpoint::TYPE => {
                    versioned::apply::<WebhookEndpointsProjector>(conn, event, Writer::Inline)
                        .await?;
                }
                _ => {}
            }
        }
        Ok(())
    }
}

/// The event store every role uses: its appends keep the inline read models current.
pub fn event_store(pool: PgPool) -> EventStore {
    EventStore::with_inline(pool, Arc::new(InlineModels))
}
