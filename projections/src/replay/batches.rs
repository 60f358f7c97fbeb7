//! A replay's batches: one read of the log per batch, shared by every model being rebuilt,
//! each model handed the events between its copy's position and its own target.
//!
//! Reads are bounded by live checkpoints, which the live projectors reached below the
//! visibility horizon, so no event can still appear inside a range already read (log.rs).
//! In the bulk phase each model's share runs in its own transaction on its own connection,
//! concurrently, and the next batch is read while the current one is projected: with the
//! projectors set-based, reading a batch takes about as long as projecting it, and the read
//! needs nothing from the projection but the copy positions, which move as soon as the batch
//! is shared out.
//! In the tail (the swap transaction) everything runs in that transaction, one after the other.

use std::collections::BTreeMap;
use std::ops::Range;
use std::sync::Arc;

use sqlx::{PgConnection, PgPool};
use tokio::task::JoinSet;

use super::{live_positions, shadow, Progress, ReadModel, ReplayError};
use crate::log::{LogPosition, Reads, StoredEvent};

/// Each model's copy position and how many events its projector has been given.
pub(super) type Positions = BTreeMap<String, (LogPosition, i64)>;

/// One read of the log with the targets it was bounded by.
struct Batch {
    targets: BTreeMap<String, LogPosition>,
    events: Vec<StoredEvent>,
}

/// The part of a batch one model projects.
struct Share {
    model: ReadModel,
    events: Range<usize>,
    handled_before: i64,
}

/// How the bulk phase ended.
pub(super) struct Bulk {
    pub events_read: u64,
    /// False when `stop_after` ended it before the copies caught up.
    pub caught_up: bool,
}

/// Follows the live checkpoints batch by batch until a read comes back short (or `stop_after`
/// events have been read), each model's share in its own transaction, the next read
/// overlapping the projection of the current batch.
pub(super) async fn bulk(
    pool: &PgPool,
    models: &[ReadModel],
    shadow: &mut Positions,
    batch: i64,
    stop_after: Option<u64>,
    progress: &dyn Progress,
) -> Result<Bulk, ReplayError> {
    let mut events_read = 0u64;
    let mut next = read_next(pool, models, shadow, batch).await?;
    loop {
        let read = next.events.len();
        let shares = share(models, shadow, &next.targets, &next.events);
        let events = Arc::new(next.events);
        let mut tasks = JoinSet::new();
        for Share {
            model,
            events: range,
            handled_before,
        } in shares
        {
            let (pool, events) = (pool.clone(), events.clone());
            tasks.spawn(async move {
                let mut tx = pool.begin().await?;
                // The copy is rebuilt from the log if a crash loses its last batches.
                sqlx::query("SET LOCAL synchronous_commit TO off")
                    .execute(&mut *tx)
                    .await?;
                shadow::project(&mut tx, &model, &events[range], handled_before).await?;
                tx.commit().await?;
                Ok::<_, ReplayError>(())
            });
        }
        // A short read means the copies reached the targets of the moment: nothing to fetch.
        let more = read as i64 >= batch;
        let fetch = async {
            if more {
                read_next(pool, models, shadow, batch).await.map(Some)
            } else {
                Ok(None)
            }
        };
        let projected = async {
            while let Some(done) = tasks.join_next().await {
                done??;
            }
            Ok::<_, ReplayError>(())
        };
        let (fetched, projected) = tokio::join!(fetch, projected);
        projected?;
        events_read += read as u64;
        progress.advance(read as u64);
        if stop_after.is_some_and(|limit| events_read >= limit) {
            return Ok(Bulk {
                events_read,
                caught_up: false,
            });
        }
        match fetched? {
            Some(batch) => next = batch,
            None => {
                return Ok(Bulk {
                    events_read,
                    caught_up: true,
                })
            }
        }
    }
}

/// Reads the next batch up to the live checkpoints as they stand now.
async fn read_next(
    pool: &PgPool,
    models: &[ReadModel],
    shadow: &Positions,
    batch: i64,
) -> Result<Batch, ReplayError> {
    let mut conn = pool.acquire().await?;
    let targets = live_positions(&mut *conn, models).await?;
    let events = read(&mut conn, models, shadow, &targets, batch).await?;
    Ok(Batch { targets, events })
}

/// Reads one batch and projects every model's share of it in `tx`, one after the other;
/// returns how many events were read.
pub(super) async fn project_in(
    tx: &mut PgConnection,
    models: &[ReadModel],
    shadow: &mut Positions,
    targets: &BTreeMap<String, LogPosition>,
    batch: i64,
) -> Result<usize, ReplayError> {
    let events = read(tx, models, shadow, targets, batch).await?;
    for share in share(models, shadow, targets, &events) {
        shadow::project(
            tx,
            &share.model,
            &events[share.events],
            share.handled_before,
        )
        .await?;
    }
    Ok(events.len())
}

/// Up to `batch` events after the lowest copy position of the models behind their targets,
/// up to the highest of those targets; none when every model is at its target.
async fn read(
    conn: &mut PgConnection,
    models: &[ReadModel],
    shadow: &Positions,
    targets: &BTreeMap<String, LogPosition>,
    batch: i64,
) -> Result<Vec<StoredEvent>, sqlx::Error> {
    let behind: Vec<&ReadModel> = models
        .iter()
        .filter(|m| shadow[&m.name].0 < targets[&m.subscription])
        .collect();
    let (Some(from), Some(to)) = (
        behind.iter().map(|m| shadow[&m.name].0).min(),
        behind.iter().map(|m| targets[&m.subscription]).max(),
    ) else {
        return Ok(Vec::new());
    };
    let reads = Reads::union(behind.iter().map(|m| m.handler.reads()));
    read_range(conn, from, to, batch, &reads).await
}

/// Each behind model's part of `events` (those between its copy position and its target),
/// moving its copy position past them.
fn share(
    models: &[ReadModel],
    shadow: &mut Positions,
    targets: &BTreeMap<String, LogPosition>,
    events: &[StoredEvent],
) -> Vec<Share> {
    let mut shares = Vec::new();
    for model in models {
        let (after, handled) = shadow[&model.name];
        let upto = targets[&model.subscription];
        if after >= upto {
            continue;
        }
        let start = events.partition_point(|e| e.position() <= after);
        let end = events.partition_point(|e| e.position() <= upto);
        // Nothing of this batch is the model's, but the read went past its target or the
        // batch: it is at its target or the next batch brings its events.
        if start >= end {
            continue;
        }
        let position = events[end - 1].position();
        shadow.insert(
            model.name.clone(),
            (position, handled + (end - start) as i64),
        );
        shares.push(Share {
            model: model.clone(),
            events: start..end,
            handled_before: handled,
        });
    }
    shares
}

/// Events in `(after, upto]`, in log order, with what the models being rebuilt read.
async fn read_range(
    conn: &mut PgConnection,
    after: LogPosition,
    upto: LogPosition,
    limit: i64,
    reads: &Reads,
) -> Result<Vec<StoredEvent>, sqlx::Error> {
    let mut events = sqlx::query_as::<_, StoredEvent>(&format!(
        "SELECT {}
           FROM public.events
          WHERE (tx_id, global_position) > ($1::bigint::text::xid8, $2)
            AND (tx_id, global_position) <= ($3::bigint::text::xid8, $4)
          ORDER BY events.tx_id, events.global_position
          LIMIT $5",
        crate::log::columns("$6", reads.opening)
    ))
    .bind(after.tx_id)
    .bind(after.global_position)
    .bind(upto.tx_id)
    .bind(upto.global_position)
    .bind(limit)
    .bind(&reads.bodies_of)
    .fetch_all(&mut *conn)
    .await?;
    // Personal fields opened (or `[erased]`) like the live log's (`log::read_batch`).
    crate::log::open(conn, &mut events, reads).await?;
    Ok(events)
}
