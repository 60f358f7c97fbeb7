//! `framegate replay` and `framegate projections status`: the command-line face of
//! `framegate_projections::replay` (rebuild beside, verify, swap) and of the checkpoints.

use std::time::Duration;

use anyhow::Context as _;
use clap::{Args, Subcommand};
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
    /// Every subscription's checkpoint, lag behind the log and last update.
    Status,
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
        ProjectionsCommand::Status => {
            let status = framegate_projections::status::status(pool).await?;
            println!(
                "log head: position {} ({} events)",
                status.head, status.events
            );
            println!(
                "{:<32} {:>12} {:>12} {:>10}  updated",
                "subscription", "position", "handled", "lag"
            );
            let now = chrono::Utc::now();
            for s in status.subscriptions {
                let age = (now - s.updated_at).num_seconds().max(0);
                println!(
                    "{:<32} {:>12} {:>12} {:>10}  {} ({age} s ago)",
                    s.name,
                    s.global_position,
                    s.events_handled,
                    s.lag,
                    s.updated_at.format("%Y-%m-%d %H:%M:%S")
                );
            }
        }
    }
    Ok(())
}
