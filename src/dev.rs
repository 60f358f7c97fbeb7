//! `framegate dev`: the whole platform in one process on one machine.
//!
//! It finds or starts a database (`dev_postgres`), applies migrations, and runs the API, the
//! read-model projectors and the video worker (simulator provider, filesystem blobs) together
//! until Ctrl-C. Everything it keeps between runs lives under the state directory
//! (`.framegate/` by default): the private database if it started one, blobs, the dev mailbox,
//! the JWT and link-signing secrets (so tokens and links survive a restart) and the admin
//! login it created on the first run. Any `FRAMEGATE_*` variable still overrides its default.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use framegate_api::config::ApiConfig;
use framegate_commands::db::PoolSettings;
use framegate_commands::EventStore;
use framegate_domain::Role;
use rand::distributions::{Alphanumeric, DistString as _};

use crate::dev_postgres::{DatabaseSource, DevDatabase};
use crate::roles::{self, WorkerSettings};
use crate::tasks::Tasks;
use framegate_workers::kafka::KafkaConfig;

/// The address of the admin account `framegate dev` creates.
const ADMIN_EMAIL: &str = "admin@framegate.example";

pub struct DevOptions {
    pub state_dir: PathBuf,
    /// Start the private cluster even if a local server is running.
    pub private_db: bool,
}

pub async fn run(
    options: DevOptions,
    shutdown: impl std::future::Future<Output = ()>,
) -> anyhow::Result<()> {
    if framegate_commands::deployment::Deployment::from_env()?.is_production() {
        anyhow::bail!(
            "FRAMEGATE_ENV=production: framegate dev is for development (it generates and keeps \
             its own secrets, makes an admin and lets providers and webhooks reach private \
             addresses); in production run the roles: framegate migrate, api, projector, \
             worker, relay (docs/operations.md)"
        );
    }
    let state_dir = options.state_dir;
    std::fs::create_dir_all(&state_dir)
        .with_context(|| format!("cannot create {}", state_dir.display()))?;
    let defaults = defaults(&state_dir)?;
    let get = |name: &str| {
        std::env::var(name)
            .ok()
            .or_else(|| defaults.get(name).cloned())
    };

    let api_config = ApiConfig::from_lookup(get)?;
    let worker = WorkerSettings::from_lookup(get)?;
    let kafka = worker.kafka.clone();
    worker
        .tools
        .check()
        .await
        .context("ffmpeg is required by the simulator: run scripts/install-ffmpeg.sh")?;

    let configured = std::env::var("DATABASE_URL")
        .ok()
        .filter(|url| !url.is_empty());
    let database = if options.private_db {
        DevDatabase::private(&state_dir.join("postgres")).await?
    } else {
        DevDatabase::resolve(configured, &state_dir.join("postgres")).await?
    };
    let result = serve(&state_dir, &database, api_config, worker, kafka, shutdown).await;
    database.shutdown().await?;
    result
}

async fn serve(
    state_dir: &Path,
    database: &DevDatabase,
    config: ApiConfig,
    worker: WorkerSettings,
    kafka: Option<KafkaConfig>,
    shutdown: impl std::future::Future<Output = ()>,
) -> anyhow::Result<()> {
    let settings = PoolSettings::from_lookup("dev", 20, |name| std::env::var(name).ok())
        .map_err(anyhow::Error::msg)?;
    let pool = framegate_commands::db::connect_pool(database.url(), &settings)
        .await
        .context("cannot connect to the dev database")?;
    framegate_commands::db::migrate(&pool)
        .await
        .context("migrations failed")?;
    let (email, password) = admin_login(
        &framegate_projections::inline::event_store(pool.clone()),
        state_dir,
    )
    .await?;

    let mut tasks = Tasks::new();
    // One LISTEN connection for everything this process runs.
    let notifications = roles::listener(&mut tasks, &pool);
    roles::projectors(&mut tasks, &pool, &notifications);
    roles::worker(&mut tasks, &pool, worker, &notifications).await?;
    let kafka_line = kafka.as_ref().map_or_else(
        || "off (set FRAMEGATE_KAFKA_BROKERS)".to_owned(),
        |config| {
            format!(
                "{} (topics {}.*.events)",
                config.brokers, config.topic_prefix
            )
        },
    );
    if let Some(config) = kafka {
        let relay = crate::relay::role(
            pool.clone(),
            config,
            None,
            notifications.clone(),
            tasks.stopped(),
        );
        tasks.spawn("relay", relay);
    }
    let listener = tokio::net::TcpListener::bind(config.http_addr)
        .await
        .with_context(|| {
            format!(
                "cannot listen on {} (set FRAMEGATE_HTTP_ADDR)",
                config.http_addr
            )
        })?;
    let blobs = framegate_commands::blobs::build(&config.blobs).await?;
    // Port 0 asks for any free port: print the one the listener got.
    let base = if config.http_addr.port() == 0 {
        format!("http://{}", listener.local_addr()?)
    } else {
        config.public_url.clone()
    };
    let state = framegate_api::AppState::new(config, pool)
        .context("cannot start the API")?
        .with_blobs(blobs);
    roles::api(&mut tasks, state, &notifications, listener);

    println!(
        "\nFramegate is running.\n\
         \n  Console   {base}/console\
         \n  API       {base}/v1\
         \n  Docs      {base}/docs\
         \n  Metrics   {base}/metrics\
         \n  Database  {database}\
         \n  Data      {data}\
         \n  Kafka     {kafka_line}\
         \n\n  Admin login: {email} / {password}\
         \n  curl -s {base}/v1/auth/login -H 'content-type: application/json' \\\
         \n       -d '{{\"email\":\"{email}\",\"password\":\"{password}\"}}'\
         \n\nPress Ctrl-C to stop.\n",
        database = describe(database),
        data = state_dir.display(),
    );

    // Until Ctrl-C, or until any task ends on its own (it only does on an error).
    tasks.supervise(shutdown).await?;
    tracing::info!("stopped");
    Ok(())
}

fn describe(database: &DevDatabase) -> String {
    match database.source() {
        DatabaseSource::Configured => "DATABASE_URL".to_owned(),
        DatabaseSource::LocalServer => {
            format!("local PostgreSQL server ({})", redact(database.url()))
        }
        DatabaseSource::PrivateCluster { data_dir } => {
            format!("private cluster in {}", data_dir.display())
        }
    }
}

/// The URL without its password, for printing.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let credentials = &url[scheme + 3..at];
            match credentials.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..scheme + 3], &url[at..]),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}

/// Defaults under the state directory for what a production deployment configures, and the
/// settings of a machine of one's own: providers may be local fakes on loopback addresses.
fn defaults(state_dir: &Path) -> anyhow::Result<HashMap<&'static str, String>> {
    let path = |name: &str| state_dir.join(name).display().to_string();
    Ok(HashMap::from([
        // `framegate dev` is development by definition, on whatever address it is given.
        (
            framegate_commands::deployment::ENV_VAR,
            "development".to_owned(),
        ),
        (
            framegate_workers::providers::download::ALLOW_PRIVATE_UPSTREAMS,
            "true".to_owned(),
        ),
        (
            framegate_workers::webhooks::ALLOW_PRIVATE,
            "true".to_owned(),
        ),
        ("FRAMEGATE_BLOB_DIR", path("blobs")),
        ("FRAMEGATE_MAILBOX_DIR", path("mailbox")),
        ("FRAMEGATE_JWT_SECRET", secret(state_dir, "jwt-secret")?),
        (
            "FRAMEGATE_BLOB_SIGNING_KEY",
            secret(state_dir, "blob-signing-key")?,
        ),
    ]))
}

/// A random secret kept in `state_dir/name` (created on first use, readable by the owner only).
fn secret(state_dir: &Path, name: &str) -> anyhow::Result<String> {
    let path = state_dir.join(name);
    match std::fs::read_to_string(&path) {
        Ok(secret) if secret.trim().len() >= 32 => return Ok(secret.trim().to_owned()),
        Ok(_) => {}
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
        Err(error) => return Err(error).with_context(|| format!("cannot read {}", path.display())),
    }
    let secret = Alphanumeric.sample_string(&mut rand::thread_rng(), 48);
    write_private(&path, &secret)?;
    Ok(secret)
}

fn write_private(path: &Path, contents: &str) -> anyhow::Result<()> {
    use std::io::Write as _;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options
        .open(path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    file.write_all(contents.as_bytes())?;
    Ok(())
}

/// The admin login created on the first run and remembered in `state_dir/admin-login`.
async fn admin_login(store: &EventStore, state_dir: &Path) -> anyhow::Result<(String, String)> {
    let path = state_dir.join("admin-login");
    if let Ok(saved) = std::fs::read_to_string(&path) {
        if let Some((email, password)) = saved.trim().split_once(' ') {
            return Ok((email.to_owned(), password.to_owned()));
        }
    }
    let password = Alphanumeric.sample_string(&mut rand::thread_rng(), 20);
    // The usual address, or a fresh one if a previous state directory already used it.
    let mut email = ADMIN_EMAIL.to_owned();
    if crate::users::create_verified(store, &email, &password, Role::Admin)
        .await
        .is_err()
    {
        let suffix = Alphanumeric
            .sample_string(&mut rand::thread_rng(), 6)
            .to_lowercase();
        email = format!("admin-{suffix}@framegate.example");
        crate::users::create_verified(store, &email, &password, Role::Admin).await?;
    }
    write_private(&path, &format!("{email} {password}\n"))?;
    Ok((email, password))
}

#[cfg(test)]
mod tests {
    use framegate_workers::providers::download::DownloadConfig;

    use super::*;

    #[test]
    fn downloads_may_reach_local_fakes_in_dev() {
        let dir = tempfile::tempdir().expect("state dir");
        let defaults = defaults(dir.path()).expect("defaults");
        let config = DownloadConfig::from_lookup(|name| defaults.get(name).cloned());
        assert!(config.expect("valid").allow_private);
    }

    #[test]
    fn webhooks_may_reach_local_receivers_in_dev() {
        let dir = tempfile::tempdir().expect("state dir");
        let defaults = defaults(dir.path()).expect("defaults");
        let config = framegate_workers::webhooks::WebhookConfig::from_lookup(|name| {
            defaults.get(name).cloned()
        });
        assert!(config.expect("valid").allow_private);
        assert!(!framegate_workers::webhooks::WebhookConfig::default().allow_private);
    }
}
