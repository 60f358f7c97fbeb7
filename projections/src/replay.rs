//! Rebuilding read models from the event log while the live ones keep serving.
//!
//! A replay runs the read model's own projector, unchanged, on a connection whose
//! `search_path` names a shadow schema (`replay_<model>`) holding empty copies of the model's
//! tables: projectors write unqualified table names, so the same code fills the copy. The
//! shadow keeps its own checkpoint beside its tables, written in the batch's transaction, so an
//! interrupted replay continues where it stopped. The log is read once per batch for every
//! model being rebuilt (`batches`). Once the copy has caught up with the live
//! projector, the replay takes the live subscription's advisory lock (the live projector
//! pauses), projects the last few events, compares the two tables and swaps them in one
//! transaction together with the live checkpoint (docs/adr/0012-replay.md).
//!
//! Only projectors run here: the handlers come from [`read_models::all`], this crate cannot
//! reach the workers (dispatcher, settlement, webhooks, mail), and the shadow connection's
//! `search_path` holds nothing but the shadow schema, so a stray write fails instead of
//! landing in a live table.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use sqlx::{Connection as _, PgConnection, PgPool};
use tracing::{info, instrument};

mod batches;
mod shadow;

use batches::Positions;

use crate::log::LogPosition;
use crate::read_models::{
    self, api_keys, credit_accounts, credit_ledger, credit_purchases, images, users, videos,
    webhook_endpoints,
};
use crate::subscription::{lock_key, EventHandler, HandlerError};

/// The tables each read-model projector writes. Tables the API writes itself
/// (`api_key_usage`, `refresh_tokens`, `idempotency_keys`) are no projection and never rebuilt.
const TABLES: [(&str, &[&str]); 8] = [
    (users::SUBSCRIPTION, &["users"]),
    (api_keys::SUBSCRIPTION, &["api_keys"]),
    (credit_accounts::SUBSCRIPTION, &["credit_accounts"]),
    (credit_ledger::SUBSCRIPTION, &["credit_ledger"]),
    (credit_purchases::SUBSCRIPTION, &["credit_purchases"]),
    (videos::SUBSCRIPTION, &["videos"]),
    (images::SUBSCRIPTION, &["images"]),
    (webhook_endpoints::SUBSCRIPTION, &["webhook_endpoints"]),
];

/// One rebuildable read model.
#[derive(Clone)]
pub struct ReadModel {
    /// The live subscription, e.g. `read_model.users`.
    pub subscription: String,
    /// The short name used on the command line, e.g. `users`.
    pub name: String,
    pub tables: &'static [&'static str],
    pub handler: Arc<dyn EventHandler>,
}

impl ReadModel {
    /// The schema the copy is built in.
    pub fn shadow_schema(&self) -> String {
        format!("replay_{}", self.name)
    }

    fn retired_schema(&self) -> String {
        format!("replay_retired_{}", self.name)
    }
}

/// Every read model, in `READ_MODELS` order. Fails on a projector without a table list: a new
/// read model must say which tables it owns before it can be rebuilt.
pub fn all_models(pool: &PgPool) -> Result<Vec<ReadModel>, ReplayError> {
    read_models::all(pool)
        .into_iter()
        .map(|(subscription, handler)| {
            let subscription = subscription.name().to_owned();
            let tables = TABLES
                .iter()
                .find(|(name, _)| *name == subscription)
                .map(|(_, tables)| *tables)
                .ok_or_else(|| ReplayError::UnknownModel(subscription.clone()))?;
            let name = subscription
                .strip_prefix("read_model.")
                .unwrap_or(&subscription)
                .to_owned();
            Ok(ReadModel {
                subscription,
                name,
                tables,
                handler,
            })
        })
        .collect()
}

/// The read models named (short name or subscription name); all of them for `None`.
pub fn select_models(
    pool: &PgPool,
    names: Option<&[String]>,
) -> Result<Vec<ReadModel>, ReplayError> {
    let all = all_models(pool)?;
    let Some(names) = names else {
        return Ok(all);
    };
    names
        .iter()
        .map(|wanted| {
            all.iter()
                .find(|m| m.name == *wanted || m.subscription == *wanted)
                .cloned()
                .ok_or_else(|| ReplayError::UnknownModel(wanted.clone()))
        })
        .collect()
}

#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error("no read model called {0:?} (known: users, api_keys, credit_accounts, credit_ledger, credit_purchases, videos, images, webhook_endpoints)")]
    UnknownModel(String),
    #[error("a replay of {0} is already running")]
    AlreadyRunning(String),
    #[error("replaying {model} stopped: {source}")]
    Handler {
        model: String,
        #[source]
        source: Box<HandlerError>,
    },
    #[error("replay database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("replay task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
    #[error("swapped in, but catching {subscription} up failed: {source}")]
    CatchUp {
        subscription: String,
        #[source]
        source: Box<crate::subscription::SubscriptionError>,
    },
}

/// How a replay runs.
#[derive(Debug, Clone)]
pub struct ReplayOptions {
    /// Events per transaction.
    pub batch_size: i64,
    /// Build and compare, but leave the live tables in place (and drop the copy).
    pub dry_run: bool,
    /// Stop after reading about this many events, leaving the copy to be resumed (tests,
    /// and `--max-events` to spread a long rebuild over quiet hours).
    pub stop_after: Option<u64>,
}

impl Default for ReplayOptions {
    fn default() -> Self {
        Self {
            batch_size: 5000,
            dry_run: false,
            stop_after: None,
        }
    }
}

/// Where a replay reports progress; the CLI draws a bar, tests ignore it.
pub trait Progress: Send + Sync {
    /// `total` events to read from the log in this run.
    fn start(&self, _total: u64) {}
    fn advance(&self, _events: u64) {}
    /// A phase after the bulk read: `"verifying"`, `"swapping"`.
    fn phase(&self, _phase: &str) {}
}

/// No progress output.
pub struct Silent;
impl Progress for Silent {}

/// One table compared after the copy caught up with the live one, at the same position.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableComparison {
    pub table: String,
    pub live_rows: i64,
    pub rebuilt_rows: i64,
    /// Rows of the live table the copy lacks (counted with multiplicity).
    pub only_live: i64,
    /// Rows of the copy the live table lacks.
    pub only_rebuilt: i64,
}

impl TableComparison {
    pub fn identical(&self) -> bool {
        self.only_live == 0 && self.only_rebuilt == 0
    }
}

/// What happened to one read model.
#[derive(Debug, Clone)]
pub struct ModelReport {
    pub name: String,
    pub subscription: String,
    /// Where the copy stands (and the live checkpoint after a swap).
    pub position: LogPosition,
    /// Events the copy's projector has been given since its build began.
    pub events_handled: i64,
    /// Empty when the run stopped before the comparison.
    pub tables: Vec<TableComparison>,
}

/// The summary of a run.
#[derive(Debug, Clone)]
pub struct ReplayReport {
    pub models: Vec<ModelReport>,
    /// Events read from the log in this run (resumed work not counted again).
    pub events_read: u64,
    pub elapsed: Duration,
    /// False when `stop_after` ended the run before the copy caught up: run again to resume.
    pub finished: bool,
    /// True when the copies replaced the live tables.
    pub swapped: bool,
}

impl ReplayReport {
    pub fn events_per_second(&self) -> f64 {
        self.events_read as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    pub fn identical(&self) -> bool {
        self.models
            .iter()
            .all(|m| m.tables.iter().all(TableComparison::identical))
    }
}

/// Rebuilds `models` beside the live tables and, unless `dry_run`, swaps them in.
#[instrument(skip_all, fields(models = models.len()))]
pub async fn replay(
    pool: &PgPool,
    models: &[ReadModel],
    options: &ReplayOptions,
    progress: &dyn Progress,
) -> Result<ReplayReport, ReplayError> {
    let started = Instant::now();
    // Session advisory locks on a connection of our own: a second replay of the same model
    // is refused, and the locks go with the connection however this ends.
    let mut guard = PgConnection::connect_with(&pool.connect_options()).await?;
    for model in models {
        let free: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock(hashtextextended($1, 0))")
            .bind(format!("framegate.replay:{}", model.name))
            .fetch_one(&mut guard)
            .await?;
        if !free {
            return Err(ReplayError::AlreadyRunning(model.name.clone()));
        }
    }
    for model in models {
        shadow::prepare(pool, model).await?;
    }

    let batch = options.batch_size.max(1);
    let mut shadow = shadow_positions(pool, models).await?;
    let targets = live_positions(pool, models).await?;
    progress.start(count_between(pool, &shadow, &targets).await?);
    // Bulk: follow the live checkpoints, one log read per batch shared by all models.
    let bulk = batches::bulk(
        pool,
        models,
        &mut shadow,
        batch,
        options.stop_after,
        progress,
    )
    .await?;
    let mut events_read = bulk.events_read;
    if !bulk.caught_up {
        let models = reports(models, &shadow, Vec::new());
        return Ok(ReplayReport {
            models,
            events_read,
            elapsed: started.elapsed(),
            finished: false,
            swapped: false,
        });
    }

    // The tail, the comparison and the swap, with every live projector of these models paused.
    progress.phase("verifying");
    let mut tx = pool.begin().await?;
    let mut by_lock: Vec<&ReadModel> = models.iter().collect();
    by_lock.sort_by(|a, b| a.subscription.cmp(&b.subscription));
    for model in &by_lock {
        sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))")
            .bind(lock_key(&model.subscription))
            .execute(&mut *tx)
            .await?;
    }
    let targets = live_positions(&mut *tx, models).await?;
    loop {
        let read = batches::project_in(&mut tx, models, &mut shadow, &targets, batch).await?;
        events_read += read as u64;
        progress.advance(read as u64);
        if read == 0 {
            break;
        }
    }
    let mut comparisons = Vec::new();
    for model in models {
        comparisons.push(shadow::compare(&mut tx, model).await?);
    }
    let swapped = !options.dry_run;
    if swapped {
        progress.phase("swapping");
        for model in models {
            shadow::swap(&mut tx, model).await?;
        }
        tx.commit().await?;
    } else {
        tx.rollback().await?;
    }
    let reports = reports(models, &shadow, comparisons);
    for model in models {
        shadow::drop_leftovers(pool, model).await?;
    }
    if swapped {
        // The copy reflects the log up to each projector's checkpoint, but the tables are
        // also written inline, past it: re-apply what came after at once (each event counts
        // once, by the rows' versions), rather than whenever the projectors next run.
        for model in models {
            crate::subscription::Subscription::new(model.subscription.clone(), pool.clone())
                .drain(model.handler.as_ref())
                .await
                .map_err(|source| ReplayError::CatchUp {
                    subscription: model.subscription.clone(),
                    source: Box::new(source),
                })?;
        }
    }
    let report = ReplayReport {
        models: reports,
        events_read,
        elapsed: started.elapsed(),
        finished: true,
        swapped,
    };
    info!(
        events = report.events_read,
        seconds = report.elapsed.as_secs_f64(),
        swapped,
        identical = report.identical(),
        "replay finished"
    );
    guard.close().await.ok();
    Ok(report)
}

async fn count_between(
    pool: &PgPool,
    shadow: &Positions,
    targets: &BTreeMap<String, LogPosition>,
) -> Result<u64, sqlx::Error> {
    let from = shadow.values().map(|(p, _)| *p).min().unwrap_or_default();
    let to = targets.values().copied().max().unwrap_or_default();
    let n: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM public.events
          WHERE (tx_id, global_position) > ($1::bigint::text::xid8, $2)
            AND (tx_id, global_position) <= ($3::bigint::text::xid8, $4)",
    )
    .bind(from.tx_id)
    .bind(from.global_position)
    .bind(to.tx_id)
    .bind(to.global_position)
    .fetch_one(pool)
    .await?;
    Ok(n.max(0) as u64)
}

/// The live checkpoints by subscription name (the start for a subscription that never ran).
async fn live_positions<'c>(
    conn: impl sqlx::PgExecutor<'c>,
    models: &[ReadModel],
) -> Result<BTreeMap<String, LogPosition>, sqlx::Error> {
    let names: Vec<&str> = models.iter().map(|m| m.subscription.as_str()).collect();
    let rows: Vec<(String, i64, i64)> = sqlx::query_as(
        "SELECT name, last_tx_id::text::bigint, last_position
           FROM public.subscription_checkpoints WHERE name = ANY($1)",
    )
    .bind(&names)
    .fetch_all(conn)
    .await?;
    let mut positions: BTreeMap<String, LogPosition> = names
        .iter()
        .map(|name| ((*name).to_owned(), LogPosition::START))
        .collect();
    for (name, tx_id, global_position) in rows {
        positions.insert(
            name,
            LogPosition {
                tx_id,
                global_position,
            },
        );
    }
    Ok(positions)
}

async fn shadow_positions(pool: &PgPool, models: &[ReadModel]) -> Result<Positions, sqlx::Error> {
    let mut positions = BTreeMap::new();
    for model in models {
        let mut conn = pool.acquire().await?;
        positions.insert(
            model.name.clone(),
            shadow::checkpoint(&mut conn, model).await?,
        );
    }
    Ok(positions)
}

fn reports(
    models: &[ReadModel],
    shadow: &Positions,
    mut comparisons: Vec<Vec<TableComparison>>,
) -> Vec<ModelReport> {
    comparisons.resize(models.len(), Vec::new());
    models
        .iter()
        .zip(comparisons)
        .map(|(model, tables)| {
            let (position, events_handled) = shadow[&model.name];
            ModelReport {
                name: model.name.clone(),
                subscription: model.subscription.clone(),
                position,
                events_handled,
                tables,
            }
        })
        .collect()
}
