//! `framegate audit` and `framegate events show`: the event store read as an audit log.
//!
//! The queries and the redaction live in `framegate_projections::audit`, shared with the
//! admin API; this file parses the flags and prints either a readable timeline or one JSON
//! object per line (`--json`) for scripts.

use anyhow::Context as _;
use chrono::{DateTime, SecondsFormat, Utc};
use clap::{Args, Subcommand};
use framegate_projections::audit::{self, AuditEntry, AuditFilter};
use uuid::Uuid;

#[derive(Args)]
pub struct AuditArgs {
    /// One aggregate's events: user:<id>, credits:<id>, video:<id> or image:<id>.
    #[arg(long)]
    aggregate: Option<String>,
    /// Who caused the events: system, user:<id> or a user's id.
    #[arg(long)]
    actor: Option<String>,
    /// An event type, e.g. VideoRequested.
    #[arg(long)]
    event_type: Option<String>,
    /// Recorded at or after this time (RFC 3339).
    #[arg(long)]
    since: Option<DateTime<Utc>>,
    /// Recorded before this time (RFC 3339).
    #[arg(long)]
    until: Option<DateTime<Utc>>,
    /// Everything one request set in motion.
    #[arg(long)]
    correlation_id: Option<Uuid>,
    /// At most this many events (oldest first).
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(i64).range(1..=100_000))]
    limit: i64,
    /// One JSON object per line instead of the timeline.
    #[arg(long)]
    json: bool,
}

#[derive(Subcommand)]
pub enum EventsCommand {
    /// Every event of one aggregate with its full (redacted) payload and metadata.
    Show {
        /// user:<id>, credits:<id>, video:<id> or image:<id>.
        aggregate: String,
        /// One JSON object per line.
        #[arg(long)]
        json: bool,
    },
    /// Seal the personal data of rows written before encryption in place (ADR 0043): once,
    /// after upgrading a database that holds such rows. Idempotent and resumable; drops the
    /// plaintext email index.
    Seal {
        /// Rows per transaction.
        #[arg(long, default_value_t = 500, value_parser = clap::value_parser!(i64).range(1..=100_000))]
        batch: i64,
    },
}

pub async fn run_audit(args: AuditArgs, database_url: &str) -> anyhow::Result<()> {
    let aggregate = args
        .aggregate
        .as_deref()
        .map(audit::parse_aggregate)
        .transpose()?
        .map(|(stored, id)| (stored.to_owned(), id));
    let filter = AuditFilter {
        aggregate,
        actor: args.actor.as_deref().map(audit::parse_actor).transpose()?,
        event_type: args.event_type,
        from: args.since,
        to: args.until,
        correlation_id: args.correlation_id,
    };
    let pool = connect(database_url).await?;
    let entries = audit::query(&pool, &filter, None, args.limit)
        .await
        .context("cannot read the event store")?;
    print_entries(&entries, args.json, false)
}

pub async fn run_events(command: EventsCommand, database_url: &str) -> anyhow::Result<()> {
    match command {
        EventsCommand::Show { aggregate, json } => {
            let (stored, id) = audit::parse_aggregate(&aggregate)?;
            let pool = connect(database_url).await?;
            let entries = audit::stream(&pool, stored, &id)
                .await
                .context("cannot read the event store")?;
            if entries.is_empty() {
                anyhow::bail!("no events for {aggregate}");
            }
            print_entries(&entries, json, true)
        }
        EventsCommand::Seal { batch } => {
            crate::seal::run(&connect(database_url).await?, batch).await
        }
    }
}

async fn connect(database_url: &str) -> anyhow::Result<sqlx::PgPool> {
    framegate_commands::db::connect(database_url, 2)
        .await
        .context("cannot connect to DATABASE_URL")
}

fn print_entries(entries: &[AuditEntry], json: bool, with_payload: bool) -> anyhow::Result<()> {
    use std::io::Write as _;
    let mut out = std::io::stdout().lock();
    for entry in entries {
        if json {
            writeln!(out, "{}", serde_json::to_string(entry)?)?;
        } else {
            writeln!(out, "{}", timeline_line(entry))?;
            if with_payload {
                writeln!(out, "    payload:  {}", entry.payload)?;
                writeln!(out, "    metadata: {}", entry.metadata)?;
            }
        }
    }
    Ok(())
}

/// `2026-11-24T22:01:03Z  video:0193…  VideoRequested v1.0  by user:… from 10.0.0.1 (curl/8)
/// corr=… cause=…`: who, what, when, from where, caused by what.
pub fn timeline_line(entry: &AuditEntry) -> String {
    let mut line = format!(
        "{}  {}#{}  {} v{}  by {}",
        entry.recorded_at.to_rfc3339_opts(SecondsFormat::Secs, true),
        entry.aggregate,
        entry.sequence,
        entry.event_type,
        entry.event_version,
        entry.actor.as_deref().unwrap_or("unknown"),
    );
    if let Some(ip) = &entry.client_ip {
        line.push_str(&format!(" from {ip}"));
    }
    if let Some(agent) = &entry.user_agent {
        line.push_str(&format!(" ({agent})"));
    }
    if let Some(request) = &entry.request_id {
        line.push_str(&format!(" req={request}"));
    }
    if let Some(correlation) = &entry.correlation_id {
        line.push_str(&format!(" corr={correlation}"));
    }
    if let Some(cause) = &entry.causation_id {
        line.push_str(&format!(" cause={cause}"));
    }
    line
}
