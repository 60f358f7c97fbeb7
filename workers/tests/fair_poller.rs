//! The poller follows what a provider holds: a job in flight is polled on every sweep even
//! with hundreds of queued jobs (held back by a concurrency limit) changed more recently than
//! its last poll, and a waiting job past its deadline still fails.

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use framegate_commands::blobs::{Blobs, FilesystemStore};
use framegate_commands::testing::TestDatabase;
use framegate_commands::videos::request_video;
use framegate_commands::{Actor, CommandMetadata, EventStore};
use framegate_domain::catalog::Catalog;
use framegate_domain::{
    CreditCommand, Credits, ProviderKind, ProviderPreference, UserId, VideoId, VideoSpec,
};
use framegate_projections::read_models::videos;
use framegate_projections::Subscription;
use framegate_workers::media::MediaTools;
use framegate_workers::pipeline::{
    Dispatcher, PollPacing, Poller, ProviderLimits, Providers, Routing, DISPATCHER,
};
use framegate_workers::provider::{
    codes, Cancellation, Job, JobState, Lookup, ProviderFailure, VideoProvider,
};
use uuid::Uuid;

/// Stands in for Veo: accepts every job, renders forever, counts polls.
#[derive(Default)]
struct Counting {
    polls: AtomicUsize,
}

#[async_trait]
impl VideoProvider for Counting {
    fn kind(&self) -> ProviderKind {
        ProviderKind::Veo
    }
    async fn submit(&self, job: &Job) -> Result<String, ProviderFailure> {
        Ok(format!("veo-{}", job.video_id))
    }
    async fn find(&self, _job: &Job, _since: DateTime<Utc>) -> Result<Lookup, ProviderFailure> {
        Ok(Lookup::NotSubmitted)
    }
    async fn poll(&self, _job_id: &str) -> Result<JobState, ProviderFailure> {
        self.polls.fetch_add(1, Ordering::SeqCst);
        Ok(JobState::Running { progress: 10 })
    }
    async fn fetch(&self, _job_id: &str, _destination: &Path) -> Result<(), ProviderFailure> {
        Err(ProviderFailure::new(
            codes::RESULT_EXPIRED,
            "never",
            false,
            false,
        ))
    }
    async fn cancel(&self, _job_id: &str) -> Result<Cancellation, ProviderFailure> {
        Ok(Cancellation::Unsupported)
    }
}

async fn request(store: &EventStore, owner: UserId) -> VideoId {
    let video = VideoId::from_uuid(Uuid::now_v7());
    let spec = VideoSpec {
        owner,
        prompt: "a lighthouse in a storm".into(),
        negative_prompt: None,
        provider: ProviderPreference::Veo,
        model: None,
        duration_seconds: 8,
        aspect_ratio: "16:9".into(),
        resolution: "720p".into(),
        image_id: None,
        seed: None,
        estimated_cost: Credits::new(320),
        external_id: None,
    };
    request_video(
        store,
        video,
        spec,
        &CommandMetadata::new_request(Actor::User(owner)),
        None,
    )
    .await
    .expect("request");
    video
}

#[tokio::test]
async fn a_job_in_flight_is_polled_every_sweep_behind_hundreds_of_queued_ones() {
    const QUEUED: usize = 230;
    let db = TestDatabase::new().await;
    let store = framegate_projections::inline::event_store(db.pool.clone());
    let provider = Arc::new(Counting::default());
    let mut map: HashMap<ProviderKind, Arc<dyn VideoProvider>> = HashMap::new();
    map.insert(ProviderKind::Veo, provider.clone());
    let providers: Providers = Arc::new(map);
    let blobs_dir = tempfile::tempdir().expect("blobs");
    let blobs: Blobs = Arc::new(FilesystemStore::new(
        blobs_dir.path().to_path_buf(),
        b"0123456789abcdef0123456789abcdef".to_vec(),
        "http://127.0.0.1:8080".to_owned(),
    ));
    let dispatcher =
        Dispatcher::new(store.clone(), providers.clone(), blobs.clone()).with_routing(Routing {
            limits: ProviderLimits {
                max_in_flight: HashMap::from([(ProviderKind::Veo, 1)]),
                ..ProviderLimits::default()
            },
            ..Routing::default()
        });
    let mut poller = Poller {
        store: store.clone(),
        pool: db.pool.clone(),
        providers,
        blobs,
        tools: MediaTools::from_env().expect("media tools"),
        max_job_time: Duration::from_secs(600),
        catalog: Catalog::defaults(),
        pacing: PollPacing::new(Duration::ZERO),
    };
    let owner = UserId::from_uuid(Uuid::now_v7());
    store
        .credits()
        .execute(
            &owner.to_string(),
            CreditCommand::Grant {
                amount: Credits::new(1_000_000),
                reason: "test".into(),
                granted_by: "system".into(),
            },
            &CommandMetadata::new_request(Actor::System),
        )
        .await
        .expect("grant");
    let dispatch = || async {
        Subscription::new(DISPATCHER, db.pool.clone())
            .drain(&dispatcher)
            .await
            .expect("dispatch");
    };

    // One job at the provider, then a crowd held back by its limit of one.
    let first = request(&store, owner).await;
    dispatch().await;
    assert_eq!(
        videos::get(&db.pool, first)
            .await
            .expect("row")
            .expect("video")
            .status,
        "submitted"
    );
    let mut queued = Vec::new();
    for _ in 0..QUEUED {
        queued.push(request(&store, owner).await);
    }
    dispatch().await;

    // Each sweep polls it, though its row (progress recorded) is now the newest change.
    for sweep in 1..=3 {
        poller.sweep().await.expect("sweep");
        assert_eq!(
            provider.polls.load(Ordering::SeqCst),
            sweep,
            "sweep {sweep}"
        );
    }
    let row = videos::get(&db.pool, first)
        .await
        .expect("row")
        .expect("video");
    assert_eq!((row.status.as_str(), row.progress), ("running", 10));

    // Waiting jobs still meet their deadline.
    poller.max_job_time = Duration::ZERO;
    poller.sweep().await.expect("sweep");
    let waiting = videos::get(&db.pool, queued[0])
        .await
        .expect("row")
        .expect("video");
    assert_eq!(
        (waiting.status.as_str(), waiting.error_code.as_deref()),
        ("failed", Some("deadline_exceeded"))
    );
}
