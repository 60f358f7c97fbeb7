//! The `framegate` binary: a thin command line that wires the platform's roles.
//!
//! Each subcommand parses its configuration, builds what the role needs and runs it. The
//! roles themselves live in the member crates.

mod audit;
mod client;
mod dev;
mod dev_postgres;
mod healthcheck;
mod metrics;
mod relay;
mod replay;
mod roles;
mod seal;
mod tasks;
mod telemetry;
mod users;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use framegate_commands::db::PoolSettings;
use framegate_commands::deployment::{self, Deployment, SecretKind};

use crate::tasks::Tasks;

/// mimalloc instead of the C library's allocator (ADR 0046): every role allocates per request,
/// per row and per delivery, and the C library's allocator was ~17 % of the webhook
/// benchmark's process, sender and in-process receiver (`perf`, `cargo bench --bench webhooks`).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "framegate",
    version,
    about = "Event-sourced backend for AI video generation"
)]
struct Cli {
    /// Postgres connection URL of the event store.
    // Its value may hold the database password: `--help` must not show it.
    #[arg(
        long,
        env = "DATABASE_URL",
        hide_env_values = true,
        global = true,
        default_value = "postgres://postgres@127.0.0.1:5432/framegate"
    )]
    database_url: String,

    #[command(subcommand)]
    command: TopCommand,
}

#[derive(Subcommand)]
enum TopCommand {
    /// The command-line client of a Framegate server's REST API: login, credits, videos
    /// (with a progress bar), images, API keys. Talks HTTP only.
    Client(client::ClientArgs),
    #[command(flatten)]
    Platform(Command),
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
    /// Data keys of personal data in events (ADR 0043).
    Keys {
        #[command(subcommand)]
        command: KeysCommand,
    },
    /// Manage users from the command line.
    Users {
        #[command(subcommand)]
        command: users::UsersCommand,
    },
    /// Probe a role's health endpoint on this machine: exit 0 when it answers 2xx (the
    /// container image's HEALTHCHECK; slim images have no curl).
    Healthcheck {
        /// host:port to probe [default: FRAMEGATE_HTTP_ADDR, an unspecified host (0.0.0.0)
        /// taken as 127.0.0.1; else 127.0.0.1:8080].
        #[arg(long, env = "FRAMEGATE_HEALTHCHECK_ADDR")]
        addr: Option<String>,
        /// The path to GET.
        #[arg(long, default_value = "/health/ready")]
        path: String,
    },
}

#[derive(Subcommand)]
enum KeysCommand {
    /// Re-wrap every user's data key under the current master key (the first of
    /// FRAMEGATE_MASTER_KEYS); the older master keys can then be removed.
    Rotate,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    // The client is a program of its own: no logs, no traces, its own exit codes.
    let command = match cli.command {
        TopCommand::Client(args) => std::process::exit(client::run(args).await),
        TopCommand::Platform(command) => command,
    };
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
    let result = run(&cli.database_url, command).await;
    // Whatever the outcome, the spans of the last moments go out (SIGTERM and Ctrl-C end
    // the roles through `shutdown_signal`, and so come here).
    telemetry.shutdown().await;
    result
}

async fn run(database_url: &str, command: Command) -> anyhow::Result<()> {
    // What FRAMEGATE_ENV asks of this process, before anything connects: in production every
    // secret in the environment is checked (`framegate dev` is development by definition;
    // the health probe reads no secret).
    match &command {
        Command::Dev { .. } | Command::Healthcheck { .. } => {}
        _ => {
            let deployment = Deployment::from_env()?;
            deployment.check_secrets(|name| std::env::var(name).ok())?;
            // `--database-url` may bring the password instead of the environment.
            if let Some(password) = deployment::url_password(database_url) {
                deployment.check_secret("DATABASE_URL", password, SecretKind::DatabasePassword)?;
            }
            // The keys personal data in events is sealed with (ADR 0043).
            framegate_commands::pii::install(framegate_commands::pii::Keyring::from_lookup(
                deployment,
                |name| std::env::var(name).ok(),
            )?);
        }
    }
    // Each role's pool, sized by FRAMEGATE_DATABASE_POOL_SIZE or the role's default (README).
    let pool = |role: &'static str, default_size: u32| async move {
        let settings =
            PoolSettings::from_lookup(role, default_size, |name| std::env::var(name).ok())
                .map_err(anyhow::Error::msg)?;
        framegate_commands::db::connect_pool(database_url, &settings)
            .await
            .context("cannot connect to DATABASE_URL")
    };
    match command {
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
        Command::Api => {
            let config = framegate_api::config::ApiConfig::from_env()?;
            run_api(config, pool("api", 16).await?).await?
        }
        Command::Healthcheck { addr, path } => {
            let http_addr = std::env::var("FRAMEGATE_HTTP_ADDR").ok();
            let target = healthcheck::target(addr.as_deref(), http_addr.as_deref())?;
            let status = healthcheck::probe(target, &path).await?;
            println!("{status}");
        }
        Command::Relay { health_addr } => {
            let config = framegate_workers::kafka::KafkaConfig::from_lookup(
                |name| std::env::var(name).ok(),
                std::env::vars(),
            )
            .map_err(anyhow::Error::msg)?
            .context("the relay needs FRAMEGATE_KAFKA_BROKERS (e.g. 127.0.0.1:9092)")?;
            let health_addr = match health_addr.trim() {
                "" => None,
                addr => {
                    let addr = addr
                        .parse()
                        .with_context(|| format!("FRAMEGATE_RELAY_HEALTH_ADDR: {addr}"))?;
                    Deployment::from_env()?.check_listen("FRAMEGATE_RELAY_HEALTH_ADDR", addr)?;
                    Some(addr)
                }
            };
            let pool = pool("relay", 4).await?;
            framegate_commands::db::migrate(&pool)
                .await
                .context("migrations failed")?;
            let mut tasks = Tasks::new();
            metrics::serve_from_env(&mut tasks, &pool).await?;
            let notifications = roles::listener(&mut tasks, &pool);
            let stopped = tasks.stopped();
            tasks.spawn(
                "relay",
                relay::role(pool, config, health_addr, notifications, stopped),
            );
            tasks.supervise(shutdown_signal()).await?;
        }
        Command::Projector | Command::Worker => {
            let settings = match command {
                Command::Worker => Some(roles::WorkerSettings::from_lookup(|name| {
                    std::env::var(name).ok()
                })?),
                _ => None,
            };
            let pool = match command {
                Command::Projector => pool("projector", 8).await?,
                _ => pool("worker", 12).await?,
            };
            framegate_commands::db::migrate(&pool)
                .await
                .context("migrations failed")?;
            let mut tasks = Tasks::new();
            metrics::serve_from_env(&mut tasks, &pool).await?;
            let notifications = roles::listener(&mut tasks, &pool);
            match settings {
                None => roles::projectors(&mut tasks, &pool, &notifications),
                Some(settings) => {
                    roles::worker(&mut tasks, &pool, settings, &notifications).await?;
                }
            }
            tasks.supervise(shutdown_signal()).await?;
        }
        Command::Keys {
            command: KeysCommand::Rotate,
        } => {
            let pool = pool("keys", 2).await?;
            let pii = framegate_commands::pii::current();
            let rotated = pii.keys.rotate(&pii.keyring, &pool).await?;
            println!(
                "{rotated} data keys re-wrapped under master key version {}",
                pii.keyring.current_version()
            );
        }
        Command::Users { command } => users::run(command, database_url).await?,
        Command::Replay(args) => replay::run_replay(&pool("replay", 8).await?, args).await?,
        Command::Projections { command } => {
            replay::run_projections(&pool("replay", 8).await?, command).await?
        }
        Command::Audit(args) => audit::run_audit(args, database_url).await?,
        Command::Events { command } => audit::run_events(command, database_url).await?,
    }
    Ok(())
}

async fn run_api(
    config: framegate_api::config::ApiConfig,
    pool: sqlx::PgPool,
) -> anyhow::Result<()> {
    framegate_commands::db::migrate(&pool)
        .await
        .context("migrations failed")?;
    let mut tasks = Tasks::new();
    // `/metrics` is on the API's port too; this adds an internal address if one is set.
    metrics::serve_from_env(&mut tasks, &pool).await?;
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
