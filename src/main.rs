//! The `framegate` binary: a thin command line that wires the platform's roles.
//!
//! Each subcommand parses its configuration, builds what the role needs and runs it. The
//! roles themselves live in the member crates.

mod audit;
mod dev;
mod dev_postgres;
mod relay;
mod replay;
mod roles;
mod tasks;
mod telemetry;
mod users;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use framegate_commands::db::PoolSettings;

use crate::tasks::Tasks;

#[derive(Parser)]
#[command(
    name = "framegate",
    version,
    about = "Event-sourced backend for AI video generation"
)]
struct Cli {
    /// Postgres connection URL of the event store.
    #[arg(
        long,
        env = "DATABASE_URL",
        global = true,
        default_value = "postgres://postgres@127.0.0.1:5432/framegate"
    )]
    database_url: String,

    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the whole platform in one process: database (found or started), API, projectors
    /// and the video worker with the simulator. Prints the URLs and an admin login.
    Dev {
        /// Where the private database, blobs, mailbox and dev secrets are kept.
        #[arg(long, env = "FRAMEGATE_DEV_DIR", default_value = ".framegate")]
        state_dir: std::path::PathBuf,
        /// Start a private PostgreSQL cluster even if a local server accepts connections.
        #[arg(long)]
        private_db: bool,
    },
    /// Apply pending database migrations (event store, checkpoints, read models).
    Migrate,
    /// Serve the HTTP API on FRAMEGATE_HTTP_ADDR, with the read-model projectors in-process
    /// unless FRAMEGATE_API_PROJECTORS=false.
    Api,
    /// Run the read-model projectors.
    Projector,
    /// Run the video pipeline: dispatcher, poller and credit settlement (simulator provider).
    /// With FRAMEGATE_KAFKA_BROKERS, jobs come from Kafka through a consumer group.
    Worker,
    /// Publish every event to Kafka (FRAMEGATE_KAFKA_BROKERS), at least once, in order per
    /// aggregate.
    Relay {
        /// Where `/health/live` and `/health/ready` answer (empty: nowhere).
        #[arg(
            long,
            env = "FRAMEGATE_RELAY_HEALTH_ADDR",
            default_value = "127.0.0.1:8081"
        )]
        health_addr: String,
    },
    /// The audit log: events filtered by aggregate, actor, type, time or correlation id.
    Audit(audit::AuditArgs),
    /// Inspect event streams.
    Events {
        #[command(subcommand)]
        command: audit::EventsCommand,
    },
    /// Rebuild read models from the event store beside the live ones, verify, swap.
    Replay(replay::ReplayArgs),
    /// Inspect the log's subscriptions.
    Projections {
        #[command(subcommand)]
        command: replay::ProjectionsCommand,
    },
    /// Manage users from the command line.
    Users {
        #[command(subcommand)]
        command: users::UsersCommand,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let json_logs = std::env::var("FRAMEGATE_LOG_FORMAT").is_ok_and(|v| v == "json");
    let traces = telemetry::TraceSettings::from_lookup(|name| std::env::var(name).ok())?;
    let telemetry = telemetry::Telemetry::init(json_logs, traces.as_ref())?;
    if let Some(traces) = &traces {
        // The origin only: a URL may carry credentials.
        let collector = reqwest::Url::parse(&traces.endpoint)
            .map(|url| url.origin().ascii_serialization())
            .unwrap_or_default();
        tracing::info!(%collector, "exporting traces over OTLP/HTTP");
    }
    let result = run(Cli::parse()).await;
    // Whatever the outcome, the spans of the last moments go out (SIGTERM and Ctrl-C end
    // the roles through `shutdown_signal`, and so come here).
    telemetry.shutdown().await;
    result
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    // Each role's pool, sized by FRAMEGATE_DATABASE_POOL_SIZE or the role's default (README).
    let database_url = cli.database_url.as_str();
    let pool = |role: &'static str, default_size: u32| async move {
        let settings =
            PoolSettings::from_lookup(role, default_size, |name| std::env::var(name).ok())
                .map_err(anyhow::Error::msg)?;
        framegate_commands::db::connect_pool(database_url, &settings)
            .await
            .context("cannot connect to DATABASE_URL")
    };
    match cli.command {
        Command::Dev {
            state_dir,
            private_db,
        } => {
            let options = dev::DevOptions {
                state_dir,
                private_db,
            };
            dev::run(options, shutdown_signal()).await?;
        }
        Command::Migrate => {
            framegate_commands::db::migrate(&pool("migrate", 2).await?)
                .await
                .context("migrations failed")?;
            tracing::info!("migrations applied");
        }
        Command::Api => run_api(pool("api", 16).await?).await?,
        Command::Relay { health_addr } => {
            let config = framegate_workers::kafka::KafkaConfig::from_lookup(
                |name| std::env::var(name).ok(),
                std::env::vars(),
            )
            .map_err(anyhow::Error::msg)?
            .context("the relay needs FRAMEGATE_KAFKA_BROKERS (e.g. 127.0.0.1:9092)")?;
            let health_addr = match health_addr.trim() {
                "" => None,
                addr => Some(
                    addr.parse()
                        .with_context(|| format!("FRAMEGATE_RELAY_HEALTH_ADDR: {addr}"))?,
                ),
            };
            let pool = pool("relay", 4).await?;
            framegate_commands::db::migrate(&pool)
                .await
                .context("migrations failed")?;
            let mut tasks = Tasks::new();
            let notifications = roles::listener(&mut tasks, &pool);
            let stopped = tasks.stopped();
            tasks.spawn(
                "relay",
                relay::role(pool, config, health_addr, notifications, stopped),
            );
            tasks.supervise(shutdown_signal()).await?;
        }
        Command::Projector | Command::Worker => {
            let pool = match cli.command {
                Command::Projector => pool("projector", 8).await?,
                _ => pool("worker", 12).await?,
            };
            framegate_commands::db::migrate(&pool)
                .await
                .context("migrations failed")?;
            let mut tasks = Tasks::new();
            let notifications = roles::listener(&mut tasks, &pool);
            match cli.command {
                Command::Projector => roles::projectors(&mut tasks, &pool, &notifications),
                _ => {
                    let settings =
                        roles::WorkerSettings::from_lookup(|name| std::env::var(name).ok())?;
                    roles::worker(&mut tasks, &pool, settings, &notifications).await?;
                }
            }
            tasks.supervise(shutdown_signal()).await?;
        }
        Command::Users { command } => users::run(command, &cli.database_url).await?,
        Command::Replay(args) => replay::run_replay(&pool("replay", 8).await?, args).await?,
        Command::Projections { command } => {
            replay::run_projections(&pool("replay", 8).await?, command).await?
        }
        Command::Audit(args) => audit::run_audit(args, &cli.database_url).await?,
        Command::Events { command } => audit::run_events(command, &cli.database_url).await?,
    }
    Ok(())
}

async fn run_api(pool: sqlx::PgPool) -> anyhow::Result<()> {
    let config = framegate_api::config::ApiConfig::from_env()?;
    framegate_commands::db::migrate(&pool)
        .await
        .context("migrations failed")?;
    let mut tasks = Tasks::new();
    // One LISTEN connection for the whole process.
    let notifications = roles::listener(&mut tasks, &pool);
    // With a separate `framegate projector` (compose, scaled deployments) the API can leave
    // projection to it; running both is safe, just redundant (subscriptions lock per batch).
    if std::env::var("FRAMEGATE_API_PROJECTORS").map_or(true, |v| v != "false") {
        roles::projectors(&mut tasks, &pool, &notifications);
    }
    let listener = tokio::net::TcpListener::bind(config.http_addr)
        .await
        .with_context(|| format!("cannot listen on {}", config.http_addr))?;
    let blobs = framegate_commands::blobs::build(&config.blobs)
        .await
        .context("blob storage")?;
    let state = framegate_api::AppState::new(config, pool)
        .context("cannot start the API")?
        .with_blobs(blobs);
    roles::api(&mut tasks, state, &notifications, listener);
    tasks.supervise(shutdown_signal()).await?;
    tracing::info!("stopped");
    Ok(())
}

/// Ctrl-C or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = terminate => {}
    }
    tracing::info!("shutting down");
}
