//! A unit of work: one transaction in which several streams are appended to, the inline read
//! models follow, and an Idempotency-Key record is marked committed.
//!
//! Every append states the sequence its stream must be at (the aggregate's version when the
//! command was decided): the `(aggregate_type, aggregate_id, sequence)` key of `events` makes
//! a concurrent append to the same stream fail with a unique violation, which is reported as
//! [`AppendError::Conflict`] and rolls the whole unit back. So one unit can reserve credits on
//! an account and record a video with both optimistic checks, and either both happen or
//! neither does (docs/adr/0015-one-transaction-video-request.md).

use std::sync::Arc;

use cqrs_es::persist::SerializedEvent;
use cqrs_es::{Aggregate, DomainEvent as _};
use sqlx::{PgConnection, PgPool, Postgres, Transaction};

use crate::error::BoxError;
use crate::idempotency::{self, MarkError};
use crate::inline::InlineProjection;
use crate::metadata::CommandMetadata;
use crate::stored::StoredEvent;

/// Why a unit could not append or commit; nothing of it was committed.
#[derive(Debug, thiserror::Error)]
pub enum AppendError {
    /// Another writer appended to one of the streams first (or a unique index such as the
    /// email index refused an event).
    #[error("a stream was changed concurrently")]
    Conflict,
    /// The request's Idempotency-Key was taken over by a retry.
    #[error(transparent)]
    LeaseLost(#[from] idempotency::LeaseLost),
    #[error("an event does not serialize: {0}")]
    Serialize(#[from] serde_json::Error),
    #[error("an inline read model refused the events: {0}")]
    Inline(BoxError),
    #[error("personal data could not be sealed: {0}")]
    Pii(crate::pii::PiiError),
    #[error(transparent)]
    Database(sqlx::Error),
}

impl From<sqlx::Error> for AppendError {
    fn from(error: sqlx::Error) -> Self {
        match &error {
            sqlx::Error::Database(db) if db.code().as_deref() == Some("23505") => {
                AppendError::Conflict
            }
            _ => AppendError::Database(error),
        }
    }
}

impl From<crate::pii::PiiError> for AppendError {
    fn from(error: crate::pii::PiiError) -> Self {
        match error {
            crate::pii::PiiError::Database(error) => error.into(),
            other => AppendError::Pii(other),
        }
    }
}

impl From<MarkError> for AppendError {
    fn from(error: MarkError) -> Self {
        match error {
            MarkError::LeaseLost(lost) => AppendError::LeaseLost(lost),
            MarkError::Database(error) => error.into(),
        }
    }
}

/// Turns the events a command decided into the rows cqrs-es would store: sequences from
/// `current_sequence + 1`, the metadata map of `metadata`.
pub fn serialize<A: Aggregate>(
    aggregate_id: &str,
    current_sequence: usize,
    events: &[A::Event],
    metadata: &CommandMetadata,
) -> Result<Vec<SerializedEvent>, serde_json::Error> {
    let metadata = serde_json::to_value(metadata.to_map())?;
    events
        .iter()
        .zip(current_sequence + 1..)
        .map(|(event, sequence)| {
            Ok(SerializedEvent::new(
                aggregate_id.to_owned(),
                sequence,
                A::TYPE.to_owned(),
                event.event_type(),
                event.event_version(),
                serde_json::to_value(event)?,
                metadata.clone(),
            ))
        })
        .collect()
}

const APPEND_ONE: &str = "
INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata)
VALUES ($1, $2, $3, $4, $5, $6, $7)
RETURNING ";

const APPEND: &str = "
INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata)
SELECT e.aggregate_type, e.aggregate_id, e.sequence, e.event_type, e.event_version, e.payload, e.metadata
  FROM unnest($1::text[], $2::text[], $3::bigint[], $4::text[], $5::text[], $6::jsonb[], $7::jsonb[])
       WITH ORDINALITY AS e(aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata, n)
 ORDER BY e.n
RETURNING ";

/// What an append reads back: only the columns the store fills in (the rest is what was
/// sent), and the key that says which event each row is.
const GENERATED: &str =
    "global_position, tx_id::text::bigint AS tx_id, event_id, recorded_at, aggregate_type,
     aggregate_id, sequence";

#[derive(sqlx::FromRow)]
struct Generated {
    global_position: i64,
    tx_id: i64,
    event_id: uuid::Uuid,
    recorded_at: chrono::DateTime<chrono::Utc>,
    aggregate_type: String,
    aggregate_id: String,
    sequence: i64,
}

/// Appends `events` through `conn`, in one statement, and returns them as stored, in order
/// (with their personal data in plaintext, as decided: the rows hold it sealed, see
/// [`crate::pii`]). They may belong to several streams (each with consecutive sequences): a
/// concurrent append to any of them fails the whole statement. A registration's email claim
/// is inserted with it, in one transaction (a savepoint inside a unit of work).
pub(crate) async fn insert(
    conn: &mut PgConnection,
    events: &[SerializedEvent],
) -> Result<Vec<StoredEvent>, AppendError> {
    if events.is_empty() {
        return Ok(Vec::new());
    }
    let mut sealed = events.to_vec();
    let claims = crate::pii::seal_serialized(conn, &mut sealed).await?;
    if claims.is_empty() {
        return Ok(insert_sealed(conn, &sealed, events).await?);
    }
    let mut tx = sqlx::Connection::begin(&mut *conn).await?;
    let (hashes, users): (Vec<Vec<u8>>, Vec<String>) = claims
        .into_iter()
        .map(|claim| (claim.email_hash, claim.user_id))
        .unzip();
    sqlx::query(
        "INSERT INTO email_claims (email_hash, user_id) SELECT * FROM unnest($1::bytea[], $2::text[])",
    )
    .bind(&hashes)
    .bind(&users)
    .execute(&mut *tx)
    .await?;
    let stored = insert_sealed(&mut tx, &sealed, events).await?;
    tx.commit().await?;
    Ok(stored)
}

/// The statement of [`insert`]: `sealed` is stored, `events` (the same, in plaintext) returned.
async fn insert_sealed(
    conn: &mut PgConnection,
    sealed: &[SerializedEvent],
    plain: &[SerializedEvent],
) -> Result<Vec<StoredEvent>, sqlx::Error> {
    let events = sealed;
    let generated: Vec<Generated> = match events {
        [] => return Ok(Vec::new()),
        [event] => {
            sqlx::query_as(&format!("{APPEND_ONE}{GENERATED}"))
                .bind(&event.aggregate_type)
                .bind(&event.aggregate_id)
                .bind(event.sequence as i64)
                .bind(&event.event_type)
                .bind(&event.event_version)
                .bind(&event.payload)
                .bind(&event.metadata)
                .fetch_all(conn)
                .await?
        }
        _ => {
            sqlx::query_as(&format!("{APPEND}{GENERATED}"))
                .bind(events.iter().map(|e| &e.aggregate_type).collect::<Vec<_>>())
                .bind(events.iter().map(|e| &e.aggregate_id).collect::<Vec<_>>())
                .bind(events.iter().map(|e| e.sequence as i64).collect::<Vec<_>>())
                .bind(events.iter().map(|e| &e.event_type).collect::<Vec<_>>())
                .bind(events.iter().map(|e| &e.event_version).collect::<Vec<_>>())
                .bind(events.iter().map(|e| &e.payload).collect::<Vec<_>>())
                .bind(events.iter().map(|e| &e.metadata).collect::<Vec<_>>())
                .fetch_all(conn)
                .await?
        }
    };
    let mut stored = Vec::with_capacity(events.len());
    for row in generated {
        let sent = plain
            .iter()
            .find(|e| {
                e.sequence as i64 == row.sequence
                    && e.aggregate_id == row.aggregate_id
                    && e.aggregate_type == row.aggregate_type
            })
            .ok_or_else(|| sqlx::Error::Protocol("an append returned an event not sent".into()))?;
        stored.push(StoredEvent {
            global_position: row.global_position,
            tx_id: row.tx_id,
            event_id: row.event_id,
            recorded_at: row.recorded_at,
            aggregate_type: row.aggregate_type,
            aggregate_id: row.aggregate_id,
            sequence: row.sequence,
            event_type: sent.event_type.clone(),
            event_version: sent.event_version.clone(),
            payload: sent.payload.clone(),
            metadata: sent.metadata.clone(),
        });
    }
    stored.sort_by_key(|e| e.global_position);
    Ok(stored)
}

/// One transaction of appends. Dropped without [`UnitOfWork::commit`], it rolls back.
pub struct UnitOfWork {
    tx: Transaction<'static, Postgres>,
    inline: Option<Arc<dyn InlineProjection>>,
    written: Vec<StoredEvent>,
    /// The running request's Idempotency-Key record was marked committed in this
    /// transaction already (by the statement that stored its response).
    claim_marked: bool,
}

impl UnitOfWork {
    pub(crate) async fn begin(
        pool: &PgPool,
        inline: Option<Arc<dyn InlineProjection>>,
    ) -> Result<Self, sqlx::Error> {
        Ok(Self {
            tx: pool.begin().await?,
            inline,
            written: Vec::new(),
            claim_marked: false,
        })
    }

    /// Appends the events a command on `A` decided, at `current_sequence + 1` onwards, and
    /// projects them into the inline read models.
    pub async fn append<A: Aggregate>(
        &mut self,
        aggregate_id: &str,
        current_sequence: usize,
        events: &[A::Event],
        metadata: &CommandMetadata,
    ) -> Result<&[StoredEvent], AppendError> {
        let serialized = serialize::<A>(aggregate_id, current_sequence, events, metadata)?;
        self.append_serialized(&serialized).await
    }

    /// [`UnitOfWork::append`] for events already serialized ([`serialize`]), of one stream or
    /// several: one statement appends them all.
    pub async fn append_serialized(
        &mut self,
        events: &[SerializedEvent],
    ) -> Result<&[StoredEvent], AppendError> {
        let stored = insert(&mut self.tx, events).await?;
        if let Some(inline) = &self.inline {
            let followed: Vec<StoredEvent> = stored
                .iter()
                .filter(|e| inline.follows(&e.aggregate_type))
                .cloned()
                .collect();
            if !followed.is_empty() {
                inline
                    .apply(&mut self.tx, &followed)
                    .await
                    .map_err(AppendError::Inline)?;
            }
        }
        let from = self.written.len();
        self.written.extend(stored);
        Ok(&self.written[from..])
    }

    /// The transaction, for statements that must commit with the events (an idempotency
    /// record's response, say).
    pub fn conn(&mut self) -> &mut PgConnection {
        &mut self.tx
    }

    /// Says that the running request's Idempotency-Key record was marked committed through
    /// [`UnitOfWork::conn`] (see `idempotency::mark_committed`), so the commit need not.
    pub fn claim_marked(&mut self) {
        self.claim_marked = true;
    }

    /// Everything appended so far, in order.
    pub fn written(&self) -> &[StoredEvent] {
        &self.written
    }

    /// Commits: marks the running request's Idempotency-Key record committed first (when
    /// anything was written), so that the record and the events commit together.
    pub async fn commit(mut self) -> Result<Vec<StoredEvent>, AppendError> {
        let claim = idempotency::current().filter(|_| !self.written.is_empty());
        if let Some(claim) = claim.as_ref().filter(|_| !self.claim_marked) {
            let user = self.written.iter().find_map(|event| {
                framegate_domain::pii::subject(
                    &event.aggregate_type,
                    &event.aggregate_id,
                    &event.event_type,
                    &event.payload,
                )
                .and_then(|user| user.parse().ok())
            });
            idempotency::mark_committed(&mut self.tx, claim, user).await?;
        }
        self.tx.commit().await?;
        #[cfg(feature = "testing")]
        if claim
            .as_ref()
            .is_some_and(|claim| crate::testing::take_failure_after_commit(&claim.key))
        {
            return Err(AppendError::Database(sqlx::Error::PoolTimedOut));
        }
        crate::metrics::committed(&self.written);
        Ok(self.written)
    }
}
