//! The `projector` and `worker` roles: the read models, and the video pipeline.

use std::collections::HashMap;
use std::ffi::OsString;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use framegate_commands::blobs::{self, BlobConfig};
use framegate_commands::EventStore;
use framegate_domain::ProviderKind;
use framegate_projections::{EventHandler, Subscription};
use framegate_workers::image_cleanup::{self, ImageCleanup};
use framegate_workers::media::MediaTools;
use framegate_workers::pipeline::{Dispatcher, Poller, Providers, DISPATCHER};
use framegate_workers::provider::VideoProvider;
use framegate_workers::settlement::{self, Settlement};
use framegate_workers::simulator::{Simulator, SimulatorConfig};
use sqlx::PgPool;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// Runs the read-model projectors until `shutdown`.
pub async fn projector(pool: PgPool, shutdown: watch::Receiver<bool>) -> anyhow::Result<()> {
    for task in framegate_projections::read_models::spawn_all(pool, shutdown) {
        task.await.context("projector task")??;
    }
    Ok(())
}

/// How old a reservation without a video must be before it is released.
const ORPHAN_GRACE: Duration = Duration::from_secs(300);

/// What the worker role reads from its environment.
pub struct WorkerSettings {
    pub blobs: BlobConfig,
    pub simulator: SimulatorConfig,
    pub tools: MediaTools,
    /// A job still unfinished this long after it was requested fails with `deadline_exceeded`.
    pub max_job_time: Duration,
}

impl WorkerSettings {
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> anyhow::Result<Self> {
        let max_job_seconds = get("FRAMEGATE_MAX_JOB_SECONDS")
            .map(|v| v.parse::<u64>().context("FRAMEGATE_MAX_JOB_SECONDS"))
            .transpose()?
            .unwrap_or(1800);
        Ok(Self {
            blobs: BlobConfig::from_lookup(&get)?,
            simulator: SimulatorConfig::from_lookup(&get).map_err(anyhow::Error::msg)?,
            tools: MediaTools::from_lookup(|name| get(name).map(OsString::from))?,
            max_job_time: Duration::from_secs(max_job_seconds),
        })
    }
}

/// Runs the dispatcher, the poller and credit settlement until `shutdown`.
pub async fn worker(
    pool: PgPool,
    settings: WorkerSettings,
    shutdown: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let store = EventStore::new(pool.clone());
    let tools = settings.tools;
    tools
        .check()
        .await
        .context("ffmpeg is required by the simulator (scripts/install-ffmpeg.sh)")?;
    let blobs = blobs::build(&settings.blobs).await?;
    let mut providers: HashMap<ProviderKind, Arc<dyn VideoProvider>> = HashMap::new();
    providers.insert(
        ProviderKind::Simulator,
        Arc::new(Simulator::new(pool.clone(), tools.clone(), settings.simulator)),
    );
    let providers: Providers = Arc::new(providers);

    let subscriptions = [
        run_subscription(
            Subscription::new(DISPATCHER, pool.clone()),
            Dispatcher::new(store.clone(), providers.clone(), blobs.clone()),
            shutdown.clone(),
        ),
        run_subscription(
            Subscription::new(settlement::SUBSCRIPTION, pool.clone()),
            Settlement::new(store.clone()),
            shutdown.clone(),
        ),
        run_subscription(
            Subscription::new(image_cleanup::SUBSCRIPTION, pool.clone()),
            ImageCleanup::new(blobs.clone()),
            shutdown.clone(),
        ),
    ];
    let orphans = tokio::spawn(settlement::sweep_orphans(
        store.clone(),
        pool.clone(),
        ORPHAN_GRACE,
        Duration::from_secs(60),
        shutdown.clone(),
    ));
    let poller = Poller {
        store,
        pool,
        providers,
        blobs,
        tools,
        max_job_time: settings.max_job_time,
    };
    poller.run(Duration::from_millis(250), shutdown).await;
    orphans.await.context("orphan sweeper task")?;
    for task in subscriptions {
        task.await.context("worker subscription task")??;
    }
    Ok(())
}

/// Runs `handler` on its subscription until `shutdown` flips.
fn run_subscription<H: EventHandler + 'static>(
    subscription: Subscription,
    handler: H,
    mut shutdown: watch::Receiver<bool>,
) -> JoinHandle<Result<(), framegate_projections::SubscriptionError>> {
    tokio::spawn(async move {
        subscription
            .run(&handler, async move {
                let _ = shutdown.wait_for(|stop| *stop).await;
            })
            .await
    })
}
