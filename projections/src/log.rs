//! Reading the event log in commit-safe order.
//!
//! `global_position` is assigned at insert but becomes visible at commit, out of order: a
//! reader that remembers "the highest position seen" skips events of transactions that were
//! still open. We read in `(tx_id, global_position)` order and only below
//! `pg_snapshot_xmin(pg_current_snapshot())`, the oldest transaction still running: every
//! transaction below it has ended, so nothing can later appear behind the checkpoint
//! (docs/adr/0002-ordered-event-log.md).

use framegate_commands::pii::Opening;
use framegate_domain::pii::{ENVELOPE, METADATA_FIELDS};
use sqlx::PgConnection;

pub use framegate_commands::{LogPosition, StoredEvent};

/// What a reader of the log reads of its events, so that a batch fetches and opens no more
/// than that: a read model that follows one aggregate type and never looks at who made a
/// request needs neither the other types' bodies nor the client IPs and agents of metadata.
/// (Marten's async daemon likewise fetches only the event types a projection handles.) Every
/// event still comes, in order, with its position, ids, type and metadata.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reads {
    /// The aggregate types whose events' bodies are read; the others' payloads read `null`.
    /// `None`: every body.
    pub bodies_of: Option<Vec<&'static str>>,
    /// Which personal data is opened (the rest is removed unread).
    pub opening: Opening,
}

impl Reads {
    /// Every body and every personal field, opened: what a reader gets unless it says less.
    pub const EVERYTHING: Reads = Reads {
        bodies_of: None,
        opening: Opening::Everything,
    };

    /// The bodies of `aggregate_types`' events, opened, and no personal metadata.
    pub fn bodies_of(aggregate_types: &[&'static str]) -> Reads {
        Reads {
            bodies_of: Some(aggregate_types.to_vec()),
            opening: Opening::Bodies,
        }
    }

    /// What one read serving all of `readers` must fetch and open.
    pub fn union(readers: impl IntoIterator<Item = Reads>) -> Reads {
        let mut union = Reads {
            bodies_of: Some(Vec::new()),
            opening: Opening::Bodies,
        };
        for reads in readers {
            union.bodies_of = match (union.bodies_of, reads.bodies_of) {
                (Some(mut types), Some(more)) => {
                    for more in more {
                        if !types.contains(&more) {
                            types.push(more);
                        }
                    }
                    Some(types)
                }
                _ => None,
            };
            if reads.opening == Opening::Everything {
                union.opening = Opening::Everything;
            }
        }
        union
    }

    /// Whether events of `aggregate_type` come with their bodies.
    pub fn reads_body(&self, aggregate_type: &str) -> bool {
        self.bodies_of
            .as_ref()
            .is_none_or(|types| types.contains(&aggregate_type))
    }
}

/// The columns of a [`StoredEvent`], the payload only where `$N` (a `text[]` of aggregate
/// types, or NULL for all) says; for a reader of bodies only ([`Opening::Bodies`]), the
/// metadata without its personal entries (the envelope, or the client IP and agent of rows
/// stored before encryption), removed by the server so they are neither sent nor parsed.
pub(crate) fn columns(types: &str, opening: Opening) -> String {
    let metadata = match opening {
        Opening::Everything => "metadata".to_owned(),
        Opening::Bodies => {
            let personal: Vec<&str> = std::iter::once(ENVELOPE)
                .chain(METADATA_FIELDS.iter().copied())
                .collect();
            format!(
                "metadata - '{{{}}}'::text[] AS metadata",
                personal.join(",")
            )
        }
    };
    format!(
        "global_position, tx_id::text::bigint AS tx_id, event_id, recorded_at,
         aggregate_type, aggregate_id, sequence, event_type, event_version,
         CASE WHEN {types}::text[] IS NULL OR aggregate_type = ANY({types}) THEN payload
              ELSE 'null'::jsonb END AS payload,
         {metadata}"
    )
}

/// Reads up to `limit` events after `after` that no running transaction can still precede,
/// with what `reads` says.
///
/// Run it before the calling transaction writes anything: a transaction that holds an xid
/// counts itself in the snapshot's xmin and would hold its own reads back.
pub async fn read_batch(
    conn: &mut PgConnection,
    after: LogPosition,
    limit: i64,
    reads: &Reads,
) -> Result<Vec<StoredEvent>, sqlx::Error> {
    let mut events = sqlx::query_as::<_, StoredEvent>(&format!(
        "SELECT {}
           FROM events
          WHERE (tx_id, global_position) > ($1::bigint::text::xid8, $2)
            AND tx_id < pg_snapshot_xmin(pg_current_snapshot())
          ORDER BY events.tx_id, events.global_position -- the columns, not the output alias
          LIMIT $3",
        columns("$4", reads.opening)
    ))
    .bind(after.tx_id)
    .bind(after.global_position)
    .bind(limit)
    .bind(&reads.bodies_of)
    .fetch_all(&mut *conn)
    .await?;
    open(conn, &mut events, reads).await?;
    Ok(events)
}

/// Opens the personal fields of a batch read with `reads` (or reads them as `[erased]`),
/// with one key lookup for the whole batch.
pub(crate) async fn open(
    conn: &mut PgConnection,
    events: &mut [StoredEvent],
    reads: &Reads,
) -> Result<(), sqlx::Error> {
    framegate_commands::pii::open_stored_as(&mut *conn, events, reads.opening)
        .await
        .map_err(pii_error)
}

/// A key store failure as the error readers of the log already handle.
pub fn pii_error(error: framegate_commands::pii::PiiError) -> sqlx::Error {
    match error {
        framegate_commands::pii::PiiError::Database(error) => error,
        other => sqlx::Error::Configuration(Box::new(other)),
    }
}

/// Events that exist after `after` but are not yet readable or not yet read: how far a
/// subscription at `after` lags behind the store.
pub async fn lag(conn: &mut PgConnection, after: LogPosition) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT count(*) FROM events
          WHERE (tx_id, global_position) > ($1::bigint::text::xid8, $2)",
    )
    .bind(after.tx_id)
    .bind(after.global_position)
    .fetch_one(conn)
    .await
}
