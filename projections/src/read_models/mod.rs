//! The read models (accounts, credits, videos, images) and the projectors that build them.
//!
//! Each read model (`users`, `api_keys`, `credit_accounts`, `credit_ledger`,
//! `credit_purchases`, `videos`, `images`) is written by exactly one projector, which runs as its own named subscription on
//! the ordered log and writes through the subscription's transaction, so a read-model change
//! commits together with the checkpoint that says it happened. Projectors decode every event of the aggregate
//! types they follow into the typed domain event: a payload that does not decode stops the
//! projector naming that event instead of being skipped. A whole batch (a backlog, a replay)
//! is projected set-based, with a few multi-row statements, and gives the same rows as its
//! events one by one; whenever that path cannot be sure of it, the batch goes event by event
//! (`batch`). The query functions the API uses live beside the projector that owns the
//! table; `runner` starts, drains and waits for them.

pub mod api_keys;
mod batch;
pub mod credit_accounts;
pub mod credit_ledger;
pub mod credit_purchases;
pub mod credits;
pub mod images;
mod runner;
pub mod users;
pub(crate) mod versioned;
pub mod videos;
pub mod webhook_endpoints;

use serde::de::DeserializeOwned;
use uuid::Uuid;

use crate::log::StoredEvent;

pub use api_keys::{ApiKeyRow, ApiKeysProjector};
pub use credit_accounts::{CreditAccountRow, CreditAccountsProjector};
pub use credit_ledger::{CreditLedgerProjector, LedgerEntry};
pub use credit_purchases::{CreditPurchasesProjector, PurchaseRow};
pub use images::{ImageRow, ImagesProjector};
pub use runner::{all, catch_up_all, spawn_all, spawn_all_with, wait_for, READ_MODELS};
pub use users::{UserRow, UsersProjector};
pub use videos::{VideoRow, VideosProjector};
pub use webhook_endpoints::{WebhookEndpointRow, WebhookEndpointsProjector};

/// The channel on which the account projectors (and the sessions table) announce that what
/// authenticates a user changed, and the one function that announces; see
/// `framegate_commands::sessions`.
pub(crate) use framegate_commands::sessions::announce_credentials_changed;
pub use framegate_commands::sessions::{CREDENTIALS_ALL, CREDENTIALS_CHANNEL};

/// Why a projector refused an event (wrapped in a `HandlerError` that names the event).
#[derive(Debug, thiserror::Error)]
pub enum ProjectionError {
    /// The stored event cannot be read as the current version of its type.
    #[error(transparent)]
    Decode(#[from] framegate_domain::versions::DecodeError),
    #[error("the aggregate id {0:?} is not a UUID")]
    AggregateId(String),
    #[error("{0}")]
    Inconsistent(String),
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
}

/// Decodes an event into the current version of the domain's event type: the one decoding
/// place, `framegate_domain::versions::decode` (tag checked against `event_type`, upcasters
/// run).
pub(crate) fn decode<E: DeserializeOwned>(event: &StoredEvent) -> Result<E, ProjectionError> {
    Ok(event.decode()?)
}

/// The aggregate id as a UUID: users and credit accounts are keyed by the user's id.
pub(crate) fn aggregate_uuid(event: &StoredEvent) -> Result<Uuid, ProjectionError> {
    Uuid::parse_str(&event.aggregate_id)
        .map_err(|_| ProjectionError::AggregateId(event.aggregate_id.clone()))
}

/// Fails when an update that must find its row found none: the read model would silently
/// drift from the log otherwise.
pub(crate) fn expect_row(
    result: &sqlx::postgres::PgQueryResult,
    what: impl FnOnce() -> String,
) -> Result<(), ProjectionError> {
    if result.rows_affected() == 0 {
        return Err(ProjectionError::Inconsistent(what()));
    }
    Ok(())
}
