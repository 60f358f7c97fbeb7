//! The tasks of the `projector` and `worker` roles (the read models, the video pipeline),
//! added to the process's supervisor so that `dev` can run them all in one process.

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
use framegate_projections::read_models::{self, READ_MODELS};
use framegate_projections::{EventHandler, Subscription};
use framegate_workers::erasure_cleanup::{self, ErasureCleanup};
use framegate_workers::image_cleanup::{self, ImageCleanup};
use framegate_workers::kafka::{JobConsumer, KafkaConfig};
use framegate_workers::media::MediaTools;
use framegate_workers::pipeline::{
    worker_instance, Dispatcher, PollPacing, Poller, ProviderLimits, Providers, Routing, DISPATCHER,
};
use framegate_workers::provider::VideoProvider;
use framegate_workers::providers::kling::{Kling, KlingConfig};
use framegate_workers::providers::metered::metered;
use framegate_workers::providers::sora::{Sora, SoraConfig};
use framegate_workers::providers::veo::{Veo, VeoConfig};
use framegate_workers::settlement::{self, Settlement};
use framegate_workers::simulator::{Simulator, SimulatorConfig};
use framegate_workers::video_cleanup::{self, VideoCleanup};
use framegate_workers::webhooks::{self, WebhookConfig, WebhookEnqueuer};
use sqlx::PgPool;

use crate::tasks::Tasks;

/// Adds the process's shared listener to `tasks`.
pub fn listener(tasks: &mut Tasks, pool: &PgPool) -> Notifications {
    let (notifications, listening) = Notifications::spawn(pool.clone(), tasks.stopped());
    tasks.spawn("listener", async move { Ok(listening.await?) });
    notifications
}

/// Adds the read-model projectors to `tasks`, one task each.
pub fn projectors(tasks: &mut Tasks, pool: &PgPool, notifications: &Notifications) {
    let handles = read_models::spawn_all_with(pool.clone(), notifications, tasks.stopped());
    for (name, handle) in READ_MODELS.into_iter().zip(handles) {
        tasks.spawn(name, async move { Ok(handle.await??) });
    }
}

/// Adds the API's tasks to `tasks`: the HTTP server, its maintenance, its credential cache's
/// follower, the notification subscription, the mail outbox's sender and the watchers of its
/// video event streams.
pub fn api(
    tasks: &mut Tasks,
    state: framegate_api::AppState,
    notifications: &Notifications,
    listener: tokio::net::TcpListener,
) {
    let maintenance = framegate_api::spawn_maintenance(state.clone(), tasks.stopped());
    tasks.spawn("api_maintenance", async move { Ok(maintenance.await?) });
    let credentials =
        framegate_api::spawn_credentials_listener(&state, notifications, tasks.stopped());
    tasks.spawn("credentials", async move { Ok(credentials.await?) });
    let mail = framegate_api::spawn_mail_sender(&state, notifications, tasks.stopped());
    tasks.spawn("mail_outbox", async move { Ok(mail.await?) });
    // The mails users opted into: recorded from the log here, beside the sender that
    // delivers them (subscriptions take turns by advisory lock when several APIs run).
    let notices = framegate_api::spawn_notifications(&state, notifications, tasks.stopped());
    tasks.spawn("notifications", async move { Ok(notices.await??) });
    let streams = framegate_api::spawn_streams(&state, notifications, tasks.stopped());
    tasks.spawn("streams", async move { Ok(streams.await?) });
    let mut stopped = tasks.stopped();
    tasks.spawn("http", async move {
        framegate_api::serve(state, listener, async move {
            let _ = stopped.wait_for(|stop| *stop).await;
        })
        .await
        .context("server error")
    });
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
    /// Webhook delivery: retries, addresses, concurrency.
    pub webhooks: WebhookConfig,
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
            webhooks: WebhookConfig::from_lookup(&get).map_err(anyhow::Error::msg)?,
        })
    }
}

/// Adds the dispatcher (or the Kafka job consumer), its sweeps, the poller, credit
/// settlement, image cleanup and webhook delivery to `tasks`.
pub async fn worker(
    tasks: &mut Tasks,
    pool: &PgPool,
    settings: WorkerSettings,
    notifications: &Notifications,
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
    // Every call measured by provider, operation and outcome (`framegate_provider_calls`).
    let providers: Providers = Arc::new(
        providers
            .into_iter()
            .map(|(kind, provider)| (kind, metered(provider)))
            .collect(),
    );
    let catalog = settings.routing.catalog.clone();
    let mut dispatcher = Dispatcher::new(store.clone(), providers.clone(), blobs.clone())
        .with_routing(settings.routing)
        .with_instance(settings.instance);
    if settings.kafka.is_some() {
        dispatcher = dispatcher.with_fresh_grace(KAFKA_FRESH_GRACE);
    }
    let dispatcher = Arc::new(dispatcher);

    // Jobs: from the Kafka consumer group when brokers are configured, else from the log.
    match &settings.kafka {
        Some(config) => {
            let consumer = JobConsumer::new(config, dispatcher.clone())
                .await
                .context("cannot join the Kafka job group (FRAMEGATE_KAFKA_*)")?;
            let stopped = tasks.stopped();
            tasks.spawn("kafka_jobs", async move {
                consumer.run(stopped).await;
                Ok(())
            });
        }
        None => subscription(
            tasks,
            DISPATCHER,
            Subscription::new(DISPATCHER, pool.clone()).with_notifications(notifications.clone()),
            dispatcher.clone(),
        ),
    }
    subscription(
        tasks,
        settlement::SUBSCRIPTION,
        Subscription::new(settlement::SUBSCRIPTION, pool.clone())
            .with_notifications(notifications.clone()),
        Arc::new(Settlement::new(store.clone())),
    );
    subscription(
        tasks,
        image_cleanup::SUBSCRIPTION,
        Subscription::new(image_cleanup::SUBSCRIPTION, pool.clone())
            .with_notifications(notifications.clone()),
        Arc::new(ImageCleanup::new(blobs.clone())),
    );
    subscription(
        tasks,
        video_cleanup::SUBSCRIPTION,
        Subscription::new(video_cleanup::SUBSCRIPTION, pool.clone())
            .with_notifications(notifications.clone()),
        Arc::new(VideoCleanup::new(blobs.clone())),
    );
    subscription(
        tasks,
        erasure_cleanup::SUBSCRIPTION,
        Subscription::new(erasure_cleanup::SUBSCRIPTION, pool.clone())
            .with_notifications(notifications.clone()),
        Arc::new(ErasureCleanup::new(blobs.clone(), store.clone())),
    );
    webhook_delivery(
        tasks,
        pool,
        &store,
        &blobs,
        settings.webhooks,
        notifications,
    )?;
    // Retries and videos that waited for a provider.
    let stopped = tasks.stopped();
    tasks.spawn("dispatcher_sweeps", async move {
        dispatcher
            .run_sweeps(Duration::from_millis(500), stopped)
            .await;
        Ok(())
    });
    let poller = Poller {
        store,
        pool: pool.clone(),
        providers,
        blobs,
        tools,
        max_job_time: settings.max_job_time,
        catalog,
        pacing: PollPacing::new(settings.poll_interval),
    };
    let stopped = tasks.stopped();
    let wake = notifications.clone();
    tasks.spawn("poller", async move {
        poller
            .run_woken(Duration::from_millis(250), stopped, Some(wake))
            .await;
        Ok(())
    });
    Ok(())
}

/// Adds `handler` on its subscription to `tasks`.
fn subscription(
    tasks: &mut Tasks,
    name: &'static str,
    subscription: Subscription,
    handler: Arc<dyn EventHandler>,
) {
    let mut stopped = tasks.stopped();
    tasks.spawn(name, async move {
        subscription
            .run(handler.as_ref(), async move {
                let _ = stopped.wait_for(|stop| *stop).await;
            })
            .await?;
        Ok(())
    });
}

/// The webhook delivery subscription and the sender that drains its outbox.
fn webhook_delivery(
    tasks: &mut Tasks,
    pool: &PgPool,
    store: &framegate_commands::EventStore,
    blobs: &framegate_commands::blobs::Blobs,
    config: WebhookConfig,
    notifications: &Notifications,
) -> anyhow::Result<()> {
    subscription(
        tasks,
        webhooks::SUBSCRIPTION,
        Subscription::new(webhooks::SUBSCRIPTION, pool.clone())
            .with_notifications(notifications.clone()),
        Arc::new(WebhookEnqueuer::new(config.retry_window)),
    );
    let sender = webhooks::Sender::new(pool.clone(), store.clone(), config, Some(blobs.clone()))
        .context("cannot build the webhook HTTP client")?;
    let (stopped, wake) = (tasks.stopped(), notifications.clone());
    tasks.spawn("webhook_sender", async move {
        sender.run(Some(wake), stopped).await;
        Ok(())
    });
    Ok(())
}
