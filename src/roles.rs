//! The `projector` and `worker` roles: the read models, and the video pipeline.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use framegate_commands::blobs::{self, BlobConfig};
use framegate_commands::EventStore;
use framegate_domain::ProviderKind;
use framegate_projections::Subscription;
use framegate_workers::media::MediaTools;
use framegate_workers::pipeline::{Dispatcher, Poller, Providers, DISPATCHER};
use framegate_workers::provider::VideoProvider;
use framegate_workers::settlement::{self, Settlement};
use framegate_workers::simulator::{Simulator, SimulatorConfig};
use sqlx::PgPool;
use tokio::sync::watch;

/// Runs the read-model projectors until `shutdown`.
pub async fn projector(pool: PgPool, shutdown: watch::Receiver<bool>) -> anyhow::Result<()> {
    for task in framegate_projections::read_models::spawn_all(pool, shutdown) {
        task.await.context("projector task")??;
    }
    Ok(())
}

/// Runs the dispatcher, the poller and credit settlement until `shutdown`.
pub async fn worker(pool: PgPool, shutdown: watch::Receiver<bool>) -> anyhow::Result<()> {
    let store = EventStore::new(pool.clone());
    let tools = MediaTools::from_env()?;
    tools
        .check()
        .await
        .context("ffmpeg is required by the simulator (scripts/install-ffmpeg.sh)")?;
    let simulator = SimulatorConfig::from_lookup(|name| std::env::var(name).ok())
        .map_err(anyhow::Error::msg)?;
    let blobs = blobs::build(&BlobConfig::from_env()?).await?;
    let max_job_time = std::env::var("FRAMEGATE_MAX_JOB_SECONDS")
        .ok()
        .map(|v| v.parse::<u64>().context("FRAMEGATE_MAX_JOB_SECONDS"))
        .transpose()?
        .unwrap_or(1800);
    let mut providers: HashMap<ProviderKind, Arc<dyn VideoProvider>> = HashMap::new();
    providers.insert(
        ProviderKind::Simulator,
        Arc::new(Simulator::new(pool.clone(), tools.clone(), simulator)),
    );
    let providers: Providers = Arc::new(providers);

    let dispatch = {
        let subscription = Subscription::new(DISPATCHER, pool.clone());
        let handler = Dispatcher::new(store.clone(), providers.clone());
        let mut stop = shutdown.clone();
        tokio::spawn(async move {
            subscription
                .run(&handler, async move {
                    let _ = stop.wait_for(|s| *s).await;
                })
                .await
        })
    };
    let settle = {
        let subscription = Subscription::new(settlement::SUBSCRIPTION, pool.clone());
        let handler = Settlement::new(store.clone());
        let mut stop = shutdown.clone();
        tokio::spawn(async move {
            subscription
                .run(&handler, async move {
                    let _ = stop.wait_for(|s| *s).await;
                })
                .await
        })
    };
    let poller = Poller {
        store,
        pool,
        providers,
        blobs,
        tools,
        max_job_time: Duration::from_secs(max_job_time),
    };
    poller.run(Duration::from_millis(250), shutdown).await;
    dispatch.await.context("dispatcher task")??;
    settle.await.context("settlement task")??;
    Ok(())
}
