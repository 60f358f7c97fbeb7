//! Where every subscription stands: its checkpoint, how far the log has moved past it and
//! when it last moved, and what it parked (`framegate projections status`).

use chrono::{DateTime, Utc};
use sqlx::{FromRow, PgPool};

use crate::log::LogPosition;

/// One row of `subscription_checkpoints` with its lag.
#[derive(Debug, Clone, PartialEq, Eq, FromRow)]
pub struct SubscriptionStatus {
    pub name: String,
    pub tx_id: i64,
    pub global_position: i64,
    pub events_handled: i64,
    pub updated_at: DateTime<Utc>,
    /// Events in the log after the checkpoint (committed; some may still be below no horizon).
    pub lag: i64,
    /// Events it parked (see `parking`).
    pub parked: i64,
    /// It stopped at a parked event and waits for it to be retried.
    pub stopped: bool,
}

impl SubscriptionStatus {
    pub fn position(&self) -> LogPosition {
        LogPosition {
            tx_id: self.tx_id,
            global_position: self.global_position,
        }
    }
}

/// The log's head and every subscription, by name.
#[derive(Debug, Clone)]
pub struct Status {
    /// The highest global position stored, 0 for an empty log.
    pub head: i64,
    pub events: i64,
    pub subscriptions: Vec<SubscriptionStatus>,
}

pub async fn status(pool: &PgPool) -> Result<Status, sqlx::Error> {
    let (head, events): (i64, i64) =
        sqlx::query_as("SELECT COALESCE(max(global_position), 0), count(*) FROM events")
            .fetch_one(pool)
            .await?;
    // The lag counts through the log-order index from each checkpoint onwards.
    let subscriptions = sqlx::query_as(
        "SELECT c.name, c.last_tx_id::text::bigint AS tx_id, c.last_position AS global_position,
                c.events_handled, c.updated_at,
                (SELECT count(*) FROM events e
                  WHERE (e.tx_id, e.global_position) > (c.last_tx_id, c.last_position)) AS lag,
                (SELECT count(*) FROM parked_events p WHERE p.subscription = c.name) AS parked,
                EXISTS (SELECT 1 FROM parked_events p
                         WHERE p.subscription = c.name AND p.blocking) AS stopped
           FROM subscription_checkpoints c
          ORDER BY c.name",
    )
    .fetch_all(pool)
    .await?;
    Ok(Status {
        head,
        events,
        subscriptions,
    })
}
