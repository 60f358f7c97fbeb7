//! `framegate replay` and `framegate projections status|retry`: the command-line face of
//! `framegate_projections::replay` (rebuild beside, verify, swap), of the checkpoints and of
//! the parked events.

use std::time::Duration;

use anyhow::Context as _;
use clap::{Args, Subcommand};
use framegate_projections::parking;
use framegate_projections::replay::{self, Progress, ReplayOptions, ReplayReport};
use indicatif::{ProgressBar, ProgressStyle};
use sqlx::PgPool;

#[derive(Args)]
pub struct ReplayArgs {
    /// The read model to rebuild: users, api_keys, credit_accounts, credit_ledger, videos,
    /// images.
    #[arg(required_unless_present = "all", conflicts_with = "all")]
    projection: Option<String>,
    /// Rebuild every read model in one pass over the log.
    #[arg(long)]
    all: bool,
    /// Build beside the live tables and compare, but do not swap.
    #[arg(long)]
    dry_run: bool,
    /// Events per transaction.
    #[arg(long, default_value_t = 5000)]
    batch: i64,
    /// Stop after about this many events; the next run resumes.
    #[arg(long)]
    max_events: Option<u64>,
}

#[derive(Subcommand)]
pub enum ProjectionsCommand {
    /// Every subscription's checkpoint, lag behind the log, last update and parked events.
    Status,
    /// Ask a running subscription to handle its parked events again, and report the outcome.
    Retry {
        /// The subscription (as `projections status` names it).
        subscription: String,
        /// Only the parked event at this global position.
        #[arg(long)]
        position: Option<i64>,
        /// How long to wait for the running subscription to report, in seconds.
        #[arg(long, default_value_t = 30)]
        wait: u64,
    },
}

/// An indicatif bar with events/s and ETA.
struct Bar(ProgressBar);

impl Progress for Bar {
    fn start(&self, total: u64) {
        self.0.set_length(total);
        self.0.reset_eta();
    }
    fn advance(&self, events: u64) {
        self.0.inc(events);
    }
    fn phase(&self, phase: &str) {
        self.0.set_message(phase.to_owned());
    }
}

pub async fn run_replay(pool: &PgPool, args: ReplayArgs) -> anyhow::Result<()> {
    let names = args.projection.map(|name| vec![name]);
    let models = replay::select_models(pool, names.as_deref())?;
    let options = ReplayOptions {
        batch_size: args.batch,
        dry_run: args.dry_run,
        stop_after: args.max_events,
    };
    let bar = ProgressBar::new(0);
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] {wide_bar} {pos}/{len} events  {per_sec}  ETA {eta}  {msg}",
        )
        .context("progress template")?,
    );
    bar.set_message("replaying");
    bar.enable_steady_tick(Duration::from_millis(200));
    let progress = Bar(bar);
    let report = replay::replay(pool, &models, &options, &progress).await;
    progress.0.finish_and_clear();
    print_report(&report?);
    Ok(())
}

fn print_report(report: &ReplayReport) {
    println!(
        "read {} events in {:.2} s: {:.0} events/s",
        report.events_read,
        report.elapsed.as_secs_f64(),
        report.events_per_second()
    );
    for model in &report.models {
        println!(
            "{:<16} position {:>10}  events {:>10}",
            model.name, model.position.global_position, model.events_handled
        );
        for table in &model.tables {
            let verdict = if table.identical() {
                "identical".to_owned()
            } else {
                format!(
                    "DIFFERS: {} rows only live, {} only rebuilt",
                    table.only_live, table.only_rebuilt
                )
            };
            println!(
                "    {:<16} live {:>9} rows, rebuilt {:>9} rows: {verdict}",
                table.table, table.live_rows, table.rebuilt_rows
            );
        }
    }
    match (report.finished, report.swapped) {
        (false, _) => println!("stopped early: run again to resume"),
        (true, true) => println!("swapped: the rebuilt tables are live"),
        (true, false) => println!("dry run: the live tables were left in place"),
    }
}

pub async fn run_projections(pool: &PgPool, command: ProjectionsCommand) -> anyhow::Result<()> {
    match command {
        ProjectionsCommand::Status => print_status(pool).await,
        ProjectionsCommand::Retry {
            subscription,
            position,
            wait,
        } => retry(pool, &subscription, position, Duration::from_secs(wait)).await,
    }
}

async fn print_status(pool: &PgPool) -> anyhow::Result<()> {
    let status = framegate_projections::status::status(pool).await?;
    println!(
        "log head: position {} ({} events)",
        status.head, status.events
    );
    println!(
        "{:<32} {:>12} {:>12} {:>10} {:>7}  updated",
        "subscription", "position", "handled", "lag", "parked"
    );
    let now = chrono::Utc::now();
    for s in status.subscriptions {
        let age = (now - s.updated_at).num_seconds().max(0);
        let stopped = if s.stopped { "  STOPPED" } else { "" };
        println!(
            "{:<32} {:>12} {:>12} {:>10} {:>7}  {} ({age} s ago){stopped}",
            s.name,
            s.global_position,
            s.events_handled,
            s.lag,
            s.parked,
            s.updated_at.format("%Y-%m-%d %H:%M:%S")
        );
    }
    let parked = parking::list(pool).await?;
    if !parked.is_empty() {
        println!("\nparked events (framegate projections retry <subscription>):");
        for p in parked {
            let verdict = if p.blocking {
                "stopped here"
            } else {
                "passed over"
            };
            println!(
                "{:<32} #{} {} {}:{} seq {} (id {}), {} attempt(s), {verdict}: {}",
                p.subscription,
                p.global_position,
                p.event_type,
                p.aggregate_type,
                p.aggregate_id,
                p.sequence,
                p.event_id,
                p.attempts,
                p.error
            );
        }
    }
    Ok(())
}

/// Requests the retry and waits for the running subscription to take it up.
async fn retry(
    pool: &PgPool,
    subscription: &str,
    position: Option<i64>,
    wait: Duration,
) -> anyhow::Result<()> {
    let asked = parking::request_retry(pool, subscription, position).await?;
    if asked == 0 {
        anyhow::bail!("{subscription} has no parked event to retry");
    }
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        let rows: Vec<_> = parking::list(pool)
            .await?
            .into_iter()
            .filter(|p| p.subscription == subscription)
            .filter(|p| position.is_none_or(|at| p.global_position == at))
            .collect();
        let pending = rows
            .iter()
            .filter(|p| p.retry_requested_at.is_some())
            .count();
        if pending == 0 {
            let failed: Vec<_> = rows.iter().filter(|p| !p.blocking).collect();
            let handled = asked as usize - rows.len();
            println!("{subscription}: {handled} of {asked} parked event(s) handled");
            for p in &failed {
                println!("  #{} still parked: {}", p.global_position, p.error);
            }
            if let Some(p) = rows.iter().find(|p| p.blocking) {
                println!(
                    "  #{} is being retried from the checkpoint (the subscription stopped there)",
                    p.global_position
                );
            }
            if !failed.is_empty() {
                anyhow::bail!("{} event(s) failed again", failed.len());
            }
            return Ok(());
        }
        if tokio::time::Instant::now() >= deadline {
            anyhow::bail!(
                "requested, but {subscription} has not taken it up within {} s: is the role that runs it up?",
                wait.as_secs()
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
