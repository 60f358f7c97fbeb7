//! The `projector` and `worker` roles: the read models, and the video pipeline.

use std::collections::HashMap;
use std::ffi::OsString;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use framegate_commands::blobs::{self, BlobConfig};
use framegate_domain::catalog::Catalog;
use framegate_domain::routing::{configured_providers, RoutingPolicy};
use framegate_domain::ProviderKind;
use framegate_projections::notify::Notifications;
use framegate_projections::{EventHandler, Subscription};
use framegate_workers::image_cleanup::{self, ImageCleanup};
use framegate_workers::kafka::{JobConsumer, KafkaConfig};
use framegate_workers::media::MediaTools;
use framegate_workers::pipeline::{
    worker_instance, Dispatcher, PollPacing, Poller, ProviderLimits, Providers, Routing, DISPATCHER,
};
use framegate_workers::provider::VideoProvider;
use framegate_workers::providers::kling::{Kling, KlingConfig};
use framegate_workers::providers::sora::{Sora, SoraConfig};
use framegate_workers::providers::veo::{Veo, VeoConfig};
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

/// What the worker role reads from its environment.
pub struct WorkerSettings {
    pub blobs: BlobConfig,
    /// The providers with keys (and the simulator unless real providers replace it).
    pub enabled: Vec<ProviderKind>,
    pub veo: Option<VeoConfig>,
    pub sora: Option<SoraConfig>,
    pub kling: Option<KlingConfig>,
    pub routing: Routing,
    pub simulator: SimulatorConfig,
    pub tools: MediaTools,
    /// A job still unfinished this long after it was requested fails with `deadline_exceeded`.
    pub max_job_time: Duration,
    /// Least time between two polls of one job at a real provider.
    pub poll_interval: Duration,
    /// With brokers: jobs come from the video topic through a consumer group.
    pub kafka: Option<KafkaConfig>,
    /// How this worker names itself in the events it causes.
    pub instance: String,
}

/// How long a fresh video is left to the Kafka consumer group before the sweep takes it.
const KAFKA_FRESH_GRACE: Duration = Duration::from_secs(30);

impl WorkerSettings {
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> anyhow::Result<Self> {
        let max_job_seconds = get("FRAMEGATE_MAX_JOB_SECONDS")
            .map(|v| v.parse::<u64>().context("FRAMEGATE_MAX_JOB_SECONDS"))
            .transpose()?
            .unwrap_or(1800);
        let mut catalog = Catalog::defaults();
        if let Some(path) = get("FRAMEGATE_CATALOG_FILE") {
            let text = std::fs::read_to_string(&path)
                .with_context(|| format!("FRAMEGATE_CATALOG_FILE: {path}"))?;
            catalog = Catalog::from_json(&text)
                .with_context(|| format!("FRAMEGATE_CATALOG_FILE: {path}"))?;
        }
        Ok(Self {
            enabled: configured_providers(&get).map_err(anyhow::Error::msg)?,
            veo: VeoConfig::from_lookup(&get).map_err(anyhow::Error::msg)?,
            sora: SoraConfig::from_lookup(&get).map_err(anyhow::Error::msg)?,
            kling: KlingConfig::from_lookup(&get).map_err(anyhow::Error::msg)?,
            routing: Routing {
                catalog,
                policy: RoutingPolicy::from_lookup(&get).map_err(anyhow::Error::msg)?,
                limits: ProviderLimits::from_lookup(&get).map_err(anyhow::Error::msg)?,
            },
            blobs: BlobConfig::from_lookup(&get)?,
            simulator: SimulatorConfig::from_lookup(&get).map_err(anyhow::Error::msg)?,
            tools: MediaTools::from_lookup(|name| get(name).map(OsString::from))?,
            max_job_time: Duration::from_secs(max_job_seconds),
            poll_interval: Duration::from_millis(
                get("FRAMEGATE_PROVIDER_POLL_INTERVAL_MS")
                    .map(|v| {
                        v.parse::<u64>()
                            .context("FRAMEGATE_PROVIDER_POLL_INTERVAL_MS")
                    })
                    .transpose()?
                    .unwrap_or(5000),
            ),
            kafka: KafkaConfig::from_lookup(&get, std::env::vars()).map_err(anyhow::Error::msg)?,
            instance: worker_instance(&get),
        })
    }
}

/// Runs the dispatcher, the poller and credit settlement until `shutdown`.
pub async fn worker(
    pool: PgPool,
    settings: WorkerSettings,
    notifications: Notifications,
    shutdown: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let store = framegate_projections::inline::event_store(pool.clone());
    let tools = settings.tools;
    tools
        .check()
        .await
        .context("ffmpeg is required by the simulator (scripts/install-ffmpeg.sh)")?;
    let blobs = blobs::build(&settings.blobs).await?;
    let mut providers: HashMap<ProviderKind, Arc<dyn VideoProvider>> = HashMap::new();
    if settings.enabled.contains(&ProviderKind::Simulator) {
        providers.insert(
            ProviderKind::Simulator,
            Arc::new(Simulator::new(
                pool.clone(),
                tools.clone(),
                settings.simulator,
            )),
        );
    }
    if let Some(config) = settings.veo {
        providers.insert(ProviderKind::Veo, Arc::new(Veo::new(config)));
    }
    if let Some(config) = settings.sora {
        providers.insert(ProviderKind::Sora, Arc::new(Sora::new(config)));
    }
    if let Some(config) = settings.kling {
        providers.insert(ProviderKind::Kling, Arc::new(Kling::new(config)));
    }
    let mut names: Vec<&str> = providers.keys().map(|p| p.as_str()).collect();
    names.sort_unstable();
    tracing::info!(providers = %names.join(", "), "video providers configured");
    let providers: Providers = Arc::new(providers);
    let catalog = settings.routing.catalog.clone();
    let mut dispatcher = Dispatcher::new(store.clone(), providers.clone(), blobs.clone())
        .with_routing(settings.routing)
        .with_instance(settings.instance);
    if settings.kafka.is_some() {
        dispatcher = dispatcher.with_fresh_grace(KAFKA_FRESH_GRACE);
    }
    let dispatcher = Arc::new(dispatcher);

    // Jobs: from the Kafka consumer group when brokers are configured, else from the log.
    let jobs = match &settings.kafka {
        Some(config) => {
            let consumer = JobConsumer::new(config, dispatcher.clone())
                .await
                .context("cannot join the Kafka job group (FRAMEGATE_KAFKA_*)")?;
            let shutdown = shutdown.clone();
            tokio::spawn(async move {
                consumer.run(shutdown).await;
                Ok(())
            })
        }
        None => run_subscription(
            Subscription::new(DISPATCHER, pool.clone()).with_notifications(notifications.clone()),
            dispatcher.clone(),
            shutdown.clone(),
        ),
    };
    let subscriptions = [
        jobs,
        run_subscription(
            Subscription::new(settlement::SUBSCRIPTION, pool.clone())
                .with_notifications(notifications.clone()),
            Arc::new(Settlement::new(store.clone())),
            shutdown.clone(),
        ),
        run_subscription(
            Subscription::new(image_cleanup::SUBSCRIPTION, pool.clone())
                .with_notifications(notifications),
            Arc::new(ImageCleanup::new(blobs.clone())),
            shutdown.clone(),
        ),
    ];
    // Retries and videos that waited for a provider.
    let sweeps = {
        let dispatcher = dispatcher.clone();
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            dispatcher
                .run_sweeps(Duration::from_millis(500), shutdown)
                .await
        })
    };
    let poller = Poller {
        store,
        pool,
        providers,
        blobs,
        tools,
        max_job_time: settings.max_job_time,
        catalog,
        pacing: PollPacing::new(settings.poll_interval),
    };
    poller.run(Duration::from_millis(250), shutdown).await;
    sweeps.await.context("dispatcher sweep task")?;
    for task in subscriptions {
        task.await.context("worker subscription task")??;
    }
    Ok(())
}

/// Runs `handler` on its subscription until `shutdown` flips.
fn run_subscription(
    subscription: Subscription,
    handler: Arc<dyn EventHandler>,
    mut shutdown: watch::Receiver<bool>,
) -> JoinHandle<Result<(), framegate_projections::SubscriptionError>> {
    tokio::spawn(async move {
        subscription
            .run(handler.as_ref(), async move {
                let _ = shutdown.wait_for(|stop| *stop).await;
            })
            .await
    })
}
