//! An event as the store holds it, with the columns the log adds to what postgres-es writes.
//!
//! The write side returns these from every append (the inline read models project them in
//! the same transaction), and the ordered log reads them back (`framegate_projections::log`).

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::FromRow;
use uuid::Uuid;

use crate::position::LogPosition;
use crate::trace_context::TraceContext;

/// One event as stored.
#[derive(Debug, Clone, PartialEq, FromRow)]
pub struct StoredEvent {
    pub global_position: i64,
    pub tx_id: i64,
    pub event_id: Uuid,
    pub recorded_at: DateTime<Utc>,
    pub aggregate_type: String,
    pub aggregate_id: String,
    pub sequence: i64,
    pub event_type: String,
    pub event_version: String,
    pub payload: Value,
    pub metadata: Value,
}

impl StoredEvent {
    pub fn position(&self) -> LogPosition {
        LogPosition {
            tx_id: self.tx_id,
            global_position: self.global_position,
        }
    }

    /// The event as the current version of its type (`framegate_domain::versions`: the one
    /// place a stored event is decoded, upcasters included).
    pub fn decode<E: serde::de::DeserializeOwned>(
        &self,
    ) -> Result<E, framegate_domain::versions::DecodeError> {
        framegate_domain::versions::decode(&self.event_type, &self.event_version, &self.payload)
    }

    /// A metadata entry (actor, correlation_id, ...), if present.
    pub fn meta(&self, key: &str) -> Option<&str> {
        self.metadata.get(key).and_then(Value::as_str)
    }

    /// The trace context of the command that recorded it, if it was recorded with traces on.
    pub fn trace_context(&self) -> Option<TraceContext> {
        TraceContext::from_metadata(&self.metadata)
    }
}
