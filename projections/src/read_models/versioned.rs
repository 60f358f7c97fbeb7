//! Read models written by two paths: inline, in the transaction that appends the events, and
//! by their asynchronous projector from the ordered log. Each row records in `version` the
//! sequence of the last event of its aggregate it reflects, and an event is applied only to
//! the row it directly follows, so whichever path comes second finds it applied and leaves
//! the row alone: every event counts exactly once (docs/adr/0015-one-transaction-video-request.md).
//!
//! The projector meets the events of an aggregate in log order and applies each its row does
//! not reflect yet. The inline path may meet a row still waiting for an event the projector
//! has not applied yet (written by a store without inline models): it leaves such a row to
//! the projector, which applies both in order.

use std::borrow::Cow;
use std::collections::HashMap;
use std::future::Future;

use sqlx::PgConnection;
use uuid::Uuid;

use super::batch::{self, SetBased};
use super::{aggregate_uuid, ProjectionError};
use crate::log::StoredEvent;
use crate::subscription::{BoxError, HandlerError};

/// A set-based projector whose table is versioned: its `handle`, `handle_batch` and inline
/// path go through [`apply`] and [`handle_batch`].
pub(crate) trait VersionedModel: SetBased {
    const VERSIONS: Versioned;

    /// Applies one event of the followed type, without looking at versions.
    fn project_one(
        conn: &mut PgConnection,
        event: &StoredEvent,
    ) -> impl Future<Output = Result<(), BoxError>> + Send;

    /// Applies `event` in one statement that checks and stamps the row's version itself: a
    /// row at exactly the sequence before it (or, for a stream's first event, no row) takes
    /// it. `Some(true)`: applied; `Some(false)`: the row is elsewhere, and [`apply`] decides
    /// as usual; `None`: this event has no such statement. It is what keeps a command's
    /// inline projection at one statement per row.
    fn apply_guarded(
        _conn: &mut PgConnection,
        _event: &StoredEvent,
    ) -> impl Future<Output = Result<Option<bool>, BoxError>> + Send {
        std::future::ready(Ok(None))
    }
}

/// Applies one event of `M`'s aggregate type unless its row reflects it already.
pub(crate) async fn apply<M: VersionedModel>(
    conn: &mut PgConnection,
    event: &StoredEvent,
    writer: Writer,
) -> Result<(), BoxError> {
    // Whatever the writer, a row at the sequence just before the event is one both writers
    // apply it to (`decide`); any other case is decided below.
    if M::apply_guarded(conn, event).await? == Some(true) {
        return Ok(());
    }
    if !M::VERSIONS.should_apply(conn, event, writer).await? {
        return Ok(());
    }
    M::project_one(conn, event).await?;
    M::VERSIONS.record(conn, event).await?;
    Ok(())
}

/// `EventHandler::handle_batch` of a versioned model: the batch without what its rows
/// reflect already, set-based where it can be, then the rows' new versions.
pub(crate) async fn handle_batch<M: VersionedModel>(
    model: &M,
    conn: &mut PgConnection,
    events: &[StoredEvent],
) -> Result<(), HandlerError> {
    let Some(first) = events.first() else {
        return Ok(());
    };
    let events = M::VERSIONS
        .unapplied(conn, events)
        .await
        .map_err(|e| HandlerError::at(first, e))?;
    batch::handle_batch(model, conn, &events).await?;
    M::VERSIONS
        .record_all(conn, &events)
        .await
        .map_err(|e| HandlerError::at(first, e))
}

/// Which writer applies an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Writer {
    Projector,
    Inline,
}

/// A table whose rows are keyed by aggregate id and carry a `version` column.
pub(crate) struct Versioned {
    pub aggregate_type: &'static str,
    pub table: &'static str,
    pub key: &'static str,
}

impl Versioned {
    /// Whether `event` is to be applied to its row now; locks the row until the
    /// transaction ends, so the two writers take turns.
    pub async fn should_apply(
        &self,
        conn: &mut PgConnection,
        event: &StoredEvent,
        writer: Writer,
    ) -> Result<bool, ProjectionError> {
        let id = aggregate_uuid(event)?;
        let version: Option<i64> = sqlx::query_scalar(&format!(
            "SELECT version FROM {} WHERE {} = $1 FOR UPDATE",
            self.table, self.key
        ))
        .bind(id)
        .fetch_optional(&mut *conn)
        .await?;
        Ok(decide(version, event.sequence, writer))
    }

    /// Records that `event` was applied to its row.
    pub async fn record(
        &self,
        conn: &mut PgConnection,
        event: &StoredEvent,
    ) -> Result<(), ProjectionError> {
        let id = aggregate_uuid(event)?;
        sqlx::query(&format!(
            "UPDATE {} SET version = GREATEST(version, $2) WHERE {} = $1",
            self.table, self.key
        ))
        .bind(id)
        .bind(event.sequence)
        .execute(conn)
        .await?;
        Ok(())
    }

    /// The projector's batch without the events its rows reflect already (applied inline),
    /// locking those rows; borrowed when there are none.
    pub async fn unapplied<'e>(
        &self,
        conn: &mut PgConnection,
        events: &'e [StoredEvent],
    ) -> Result<Cow<'e, [StoredEvent]>, ProjectionError> {
        let mut first: HashMap<Uuid, i64> = HashMap::new();
        for event in events
            .iter()
            .filter(|e| e.aggregate_type == self.aggregate_type)
        {
            first
                .entry(aggregate_uuid(event)?)
                .or_insert(event.sequence);
        }
        if first.is_empty() {
            return Ok(Cow::Borrowed(events));
        }
        let ids: Vec<Uuid> = first.keys().copied().collect();
        let versions: HashMap<Uuid, i64> = sqlx::query_as::<_, (Uuid, i64)>(&format!(
            "SELECT {key}, version FROM {table} WHERE {key} = ANY($1) ORDER BY {key} FOR UPDATE",
            key = self.key,
            table = self.table
        ))
        .bind(&ids)
        .fetch_all(&mut *conn)
        .await?
        .into_iter()
        .collect();
        let mut any_applied = false;
        for (id, sequence) in &first {
            if let Some(&version) = versions.get(id) {
                any_applied |= version >= *sequence;
            }
        }
        if !any_applied {
            return Ok(Cow::Borrowed(events));
        }
        let mut kept = Vec::with_capacity(events.len());
        for event in events {
            if event.aggregate_type == self.aggregate_type {
                let id = aggregate_uuid(event)?;
                let version = versions.get(&id).copied();
                if version.is_some_and(|v| v >= event.sequence) {
                    continue;
                }
            }
            kept.push(event.clone());
        }
        Ok(Cow::Owned(kept))
    }

    /// Records for a whole batch that its events were applied to their rows.
    pub async fn record_all(
        &self,
        conn: &mut PgConnection,
        events: &[StoredEvent],
    ) -> Result<(), ProjectionError> {
        let mut last: HashMap<Uuid, i64> = HashMap::new();
        for event in events
            .iter()
            .filter(|e| e.aggregate_type == self.aggregate_type)
        {
            let entry = last.entry(aggregate_uuid(event)?).or_insert(event.sequence);
            *entry = (*entry).max(event.sequence);
        }
        if last.is_empty() {
            return Ok(());
        }
        let (ids, sequences): (Vec<Uuid>, Vec<i64>) = last.into_iter().unzip();
        sqlx::query(&format!(
            "UPDATE {table} t SET version = GREATEST(t.version, v.sequence)
               FROM unnest($1::uuid[], $2::int8[]) AS v(id, sequence)
              WHERE t.{key} = v.id",
            key = self.key,
            table = self.table
        ))
        .bind(&ids)
        .bind(&sequences)
        .execute(conn)
        .await?;
        Ok(())
    }
}

/// Whether an event of sequence `sequence` applies to a row at `version` (`None`: no row).
fn decide(version: Option<i64>, sequence: i64, writer: Writer) -> bool {
    match (version, writer) {
        (Some(version), _) if version >= sequence => false,
        (Some(version), _) if version == sequence - 1 => true,
        // No row yet: the inline path creates it only from the stream's first event.
        (None, Writer::Inline) => sequence == 1,
        (None, Writer::Projector) => true,
        (Some(_), Writer::Inline) => false,
        // The projector meets every event in log order: one its row has not reflected yet
        // is applied, as it always was, even where the stream's sequence skips (logs the
        // commands never write, such as hand-made test logs).
        (Some(_), Writer::Projector) => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_event_applies_only_to_the_row_it_follows() {
        for writer in [Writer::Projector, Writer::Inline] {
            assert!(decide(Some(3), 4, writer));
            assert!(!decide(Some(4), 4, writer));
            assert!(!decide(Some(9), 4, writer));
        }
    }

    #[test]
    fn the_inline_path_leaves_a_row_waiting_for_an_earlier_event_to_the_projector() {
        assert!(!decide(Some(2), 4, Writer::Inline));
        assert!(decide(Some(2), 4, Writer::Projector));
    }

    #[test]
    fn only_a_first_event_creates_a_row_inline() {
        assert!(decide(None, 1, Writer::Inline));
        assert!(!decide(None, 2, Writer::Inline));
        assert!(decide(None, 2, Writer::Projector));
    }
}
