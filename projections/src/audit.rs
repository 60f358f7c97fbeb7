//! The audit log: the event store read as who did what, when, from where and why.
//!
//! Nothing is copied into an audit table: every stored event already carries its actor,
//! request, correlation and causation ids and client address in `metadata`
//! (`framegate_commands::metadata`). This module filters that log for `framegate audit` and
//! the admin API. Entries are built only through [`AuditEntry::from_stored`], which redacts
//! the payload and metadata, so no caller can hand a password, token or API key hash to an
//! export by forgetting to.
//!
//! Pages are in time order, `(recorded_at, global_position)`, with the last entry's
//! `global_position` as the cursor. Every filter has an index ending in that order
//! (migrations/0008_audit_indexes.sql), so a page reads one short index range however long
//! the log is; docs/adr/0011-audit-log.md has the plans.

use chrono::{DateTime, Utc};
use cqrs_es::Aggregate;
use framegate_commands::pii::{self, EventParts};
use framegate_domain::{
    redact_payload, versions, CreditAccount, Image, User, Video, WebhookEndpoint,
};
use serde::Serialize;
use serde_json::Value;
use sqlx::{FromRow, PgPool, Postgres, QueryBuilder};
use uuid::Uuid;

/// The aggregate names of the command line and the API, and the stored aggregate types.
pub const AGGREGATES: [(&str, &str); 5] = [
    ("user", User::TYPE),
    ("credits", CreditAccount::TYPE),
    ("video", Video::TYPE),
    ("image", Image::TYPE),
    ("webhook", WebhookEndpoint::TYPE),
];

/// The stored aggregate type of a name such as `video`.
pub fn aggregate_type(name: &str) -> Option<&'static str> {
    AGGREGATES
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, stored)| *stored)
}

/// The short name of a stored aggregate type (`Video` → `video`).
pub fn aggregate_name(stored: &str) -> Option<&'static str> {
    AGGREGATES
        .iter()
        .find(|(_, t)| *t == stored)
        .map(|(name, _)| *name)
}

/// Why a filter value was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FilterError {
    #[error("unknown aggregate `{0}`: use user, credits, video or image")]
    UnknownAggregate(String),
    #[error("`{0}` is not <aggregate>:<uuid>, e.g. video:0193...")]
    MalformedAggregate(String),
    #[error("`{0}` is not an actor: use system, user:<uuid> or a user's uuid")]
    MalformedActor(String),
}

/// Parses `video:<uuid>` into the stored aggregate type and id.
pub fn parse_aggregate(reference: &str) -> Result<(&'static str, String), FilterError> {
    let (name, id) = reference
        .split_once(':')
        .ok_or_else(|| FilterError::MalformedAggregate(reference.to_owned()))?;
    let stored =
        aggregate_type(name).ok_or_else(|| FilterError::UnknownAggregate(name.to_owned()))?;
    let id: Uuid = id
        .parse()
        .map_err(|_| FilterError::MalformedAggregate(reference.to_owned()))?;
    Ok((stored, id.to_string()))
}

/// Parses an actor as stored in metadata: `system`, `user:<uuid>`, or a bare user uuid.
pub fn parse_actor(actor: &str) -> Result<String, FilterError> {
    let malformed = || FilterError::MalformedActor(actor.to_owned());
    if actor == "system" {
        return Ok(actor.to_owned());
    }
    let id = actor.strip_prefix("user:").unwrap_or(actor);
    let id: Uuid = id.parse().map_err(|_| malformed())?;
    Ok(format!("user:{id}"))
}

/// Which events to list; every field narrows the result (all `None`: everything).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuditFilter {
    /// Stored aggregate type and id, as from [`parse_aggregate`].
    pub aggregate: Option<(String, String)>,
    /// As stored: `system` or `user:<uuid>` (see [`parse_actor`]).
    pub actor: Option<String>,
    pub event_type: Option<String>,
    /// Recorded at or after.
    pub from: Option<DateTime<Utc>>,
    /// Recorded before.
    pub to: Option<DateTime<Utc>>,
    pub correlation_id: Option<Uuid>,
}

/// One event as the audit log shows it: secrets already replaced by `[redacted]`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AuditEntry {
    pub global_position: i64,
    pub event_id: Uuid,
    pub recorded_at: DateTime<Utc>,
    /// `video:<id>` for the known aggregates, `<Type>:<id>` otherwise.
    pub aggregate: String,
    pub aggregate_type: String,
    pub aggregate_id: String,
    pub sequence: i64,
    pub event_type: String,
    pub event_version: String,
    pub actor: Option<String>,
    pub request_id: Option<String>,
    pub correlation_id: Option<String>,
    pub causation_id: Option<String>,
    pub client_ip: Option<String>,
    pub user_agent: Option<String>,
    pub payload: Value,
    pub metadata: Value,
}

/// The columns as read; private so that only redacted entries leave this module.
#[derive(FromRow)]
struct Row {
    global_position: i64,
    event_id: Uuid,
    recorded_at: DateTime<Utc>,
    aggregate_type: String,
    aggregate_id: String,
    sequence: i64,
    event_type: String,
    event_version: String,
    payload: Value,
    metadata: Value,
}

const COLUMNS: &str = "global_position, event_id, recorded_at, aggregate_type, aggregate_id, \
                       sequence, event_type, event_version, payload, metadata";

impl AuditEntry {
    fn from_stored(row: Row) -> Self {
        // The current version of the event, like every other reader sees it; a row the chain
        // cannot upcast is shown as stored (an audit view must show what is there).
        let (payload, event_version) =
            match versions::upcast(&row.event_type, &row.event_version, &row.payload) {
                Ok((payload, version)) => (
                    redact_payload(&row.aggregate_type, &row.event_type, &payload),
                    version.to_owned(),
                ),
                Err(_) => (
                    redact_payload(&row.aggregate_type, &row.event_type, &row.payload),
                    row.event_version,
                ),
            };
        // Metadata holds no secrets today; the same pass blanks any `*_hash` key that a
        // future writer might add.
        let metadata = redact_payload(&row.aggregate_type, &row.event_type, &row.metadata);
        let meta = |key: &str| metadata.get(key).and_then(Value::as_str).map(str::to_owned);
        let aggregate = format!(
            "{}:{}",
            aggregate_name(&row.aggregate_type).unwrap_or(row.aggregate_type.as_str()),
            row.aggregate_id
        );
        Self {
            global_position: row.global_position,
            event_id: row.event_id,
            recorded_at: row.recorded_at,
            aggregate,
            sequence: row.sequence,
            event_version,
            actor: meta("actor"),
            request_id: meta("request_id"),
            correlation_id: meta("correlation_id"),
            causation_id: meta("causation_id"),
            client_ip: meta("client_ip"),
            user_agent: meta("user_agent"),
            aggregate_type: row.aggregate_type,
            aggregate_id: row.aggregate_id,
            event_type: row.event_type,
            payload,
            metadata,
        }
    }
}

/// The entries of `rows`, their personal fields opened (or `[erased]`) with one key lookup.
async fn entries(pool: &PgPool, mut rows: Vec<Row>) -> Result<Vec<AuditEntry>, sqlx::Error> {
    let mut parts: Vec<EventParts<'_>> = rows
        .iter_mut()
        .map(|row| EventParts {
            aggregate_type: &row.aggregate_type,
            aggregate_id: &row.aggregate_id,
            sequence: row.sequence,
            event_type: &row.event_type,
            payload: &mut row.payload,
            metadata: &mut row.metadata,
        })
        .collect();
    pii::current()
        .open(pool, &mut parts, pii::Opening::Everything)
        .await
        .map_err(crate::log::pii_error)?;
    Ok(rows.into_iter().map(AuditEntry::from_stored).collect())
}

/// Up to `limit` events matching `filter`, in time order, after the entry whose
/// `global_position` is `after` (the cursor of the previous page).
pub async fn query(
    pool: &PgPool,
    filter: &AuditFilter,
    after: Option<i64>,
    limit: i64,
) -> Result<Vec<AuditEntry>, sqlx::Error> {
    let rows: Vec<Row> = select("", filter, after, limit)
        .build_query_as()
        .fetch_all(pool)
        .await?;
    entries(pool, rows).await
}

/// `EXPLAIN (ANALYZE, FORMAT JSON)` of the query [`query`] runs, for tests and the ADR.
pub async fn explain(
    pool: &PgPool,
    filter: &AuditFilter,
    after: Option<i64>,
    limit: i64,
) -> Result<Value, sqlx::Error> {
    select("EXPLAIN (ANALYZE, FORMAT JSON) ", filter, after, limit)
        .build_query_scalar()
        .fetch_one(pool)
        .await
}

/// Every event of one aggregate, in stream order (empty if it does not exist).
pub async fn stream(
    pool: &PgPool,
    aggregate_type: &str,
    aggregate_id: &str,
) -> Result<Vec<AuditEntry>, sqlx::Error> {
    let rows: Vec<Row> = sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM events
          WHERE aggregate_type = $1 AND aggregate_id = $2
          ORDER BY sequence"
    ))
    .bind(aggregate_type)
    .bind(aggregate_id)
    .fetch_all(pool)
    .await?;
    entries(pool, rows).await
}

/// The query with only the conditions the filter uses: a condition like
/// `($1 IS NULL OR actor = $1)` would leave the planner one plan for all filters, and that
/// plan cannot use the filters' indexes.
fn select(
    prefix: &str,
    filter: &AuditFilter,
    after: Option<i64>,
    limit: i64,
) -> QueryBuilder<'static, Postgres> {
    let mut q = QueryBuilder::new(format!("{prefix}SELECT {COLUMNS} FROM events WHERE true"));
    if let Some((aggregate_type, aggregate_id)) = &filter.aggregate {
        q.push(" AND aggregate_type = ")
            .push_bind(aggregate_type.clone())
            .push(" AND aggregate_id = ")
            .push_bind(aggregate_id.clone());
    }
    if let Some(actor) = &filter.actor {
        q.push(" AND metadata ->> 'actor' = ")
            .push_bind(actor.clone());
    }
    if let Some(correlation_id) = filter.correlation_id {
        q.push(" AND metadata ->> 'correlation_id' = ")
            .push_bind(correlation_id.to_string());
    }
    if let Some(event_type) = &filter.event_type {
        q.push(" AND event_type = ").push_bind(event_type.clone());
    }
    if let Some(from) = filter.from {
        q.push(" AND recorded_at >= ").push_bind(from);
    }
    if let Some(to) = filter.to {
        q.push(" AND recorded_at < ").push_bind(to);
    }
    if let Some(after) = after {
        // A cursor that names no event matches nothing (the row comparison is NULL).
        q.push(
            " AND (recorded_at, global_position) > \
             (SELECT c.recorded_at, c.global_position FROM events c WHERE c.global_position = ",
        )
        .push_bind(after)
        .push(")");
    }
    q.push(" ORDER BY recorded_at, global_position LIMIT ")
        .push_bind(limit);
    q
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aggregate_references_name_the_stored_types() {
        let id = Uuid::now_v7();
        assert_eq!(
            parse_aggregate(&format!("credits:{id}")),
            Ok(("CreditAccount", id.to_string()))
        );
        assert_eq!(
            parse_aggregate(&format!("video:{}", id.simple())),
            Ok(("Video", id.to_string()))
        );
        assert_eq!(
            parse_aggregate("movie:1"),
            Err(FilterError::UnknownAggregate("movie".into()))
        );
        assert_eq!(
            parse_aggregate("video"),
            Err(FilterError::MalformedAggregate("video".into()))
        );
        assert_eq!(aggregate_name("CreditAccount"), Some("credits"));
    }

    #[test]
    fn actors_are_normalised_to_the_stored_form() {
        let id = Uuid::now_v7();
        assert_eq!(parse_actor("system"), Ok("system".to_owned()));
        assert_eq!(parse_actor(&id.to_string()), Ok(format!("user:{id}")));
        assert_eq!(parse_actor(&format!("user:{id}")), Ok(format!("user:{id}")));
        assert!(parse_actor("root").is_err());
    }

    #[test]
    fn entries_are_redacted_on_the_way_out() {
        let row = Row {
            global_position: 1,
            event_id: Uuid::nil(),
            recorded_at: Utc::now(),
            aggregate_type: "User".into(),
            aggregate_id: Uuid::nil().to_string(),
            sequence: 1,
            event_type: "ApiKeyIssued".into(),
            event_version: "1.0".into(),
            payload: serde_json::json!({"ApiKeyIssued": {"key_hash": "abc", "name": "ci"}}),
            metadata: serde_json::json!({"actor": "system", "session_hash": "def"}),
        };
        let entry = AuditEntry::from_stored(row);
        let text = serde_json::to_string(&entry).expect("json");
        assert!(!text.contains("abc") && !text.contains("def"), "{text}");
        assert_eq!(entry.payload["ApiKeyIssued"]["name"], "ci");
        assert_eq!(entry.actor.as_deref(), Some("system"));
        assert_eq!(entry.aggregate, format!("user:{}", Uuid::nil()));
    }
}
