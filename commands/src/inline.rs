//! Inline read models: the port through which the write side updates the read models a
//! caller must see at once, in the transaction that appends their events.
//!
//! The write side cannot know the read models (they live downstream, in
//! `framegate_projections`), so the store is given an [`InlineProjection`] when it is built.
//! Marten calls these inline projections: the API answers a write from what its own
//! transaction committed, without waiting for an asynchronous projector. The asynchronous
//! projectors of the same tables still run: each row records the last event sequence it
//! reflects, so whichever writer comes second leaves it alone.

use async_trait::async_trait;
use sqlx::PgConnection;

use crate::error::BoxError;
use crate::stored::StoredEvent;

/// Projects freshly appended events inside the appending transaction.
#[async_trait]
pub trait InlineProjection: Send + Sync {
    /// Whether events of `aggregate_type` are projected inline (an append of only other
    /// types skips the transaction this needs).
    fn follows(&self, aggregate_type: &str) -> bool;

    /// Applies `events` (just appended, in order) through `conn`, the appending transaction.
    /// An error rolls the whole append back.
    async fn apply(&self, conn: &mut PgConnection, events: &[StoredEvent]) -> Result<(), BoxError>;
}
