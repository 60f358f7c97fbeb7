//! A video that ends while its result is being downloaded (failed, cancelled, even deleted
//! and cleaned up) must not keep the files the worker uploads afterwards: `Deliver` is
//! refused and the worker removes them. A video another delivery completed keeps its files.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use framegate_commands::blobs::{video_keys, Blobs, FilesystemStore};
use framegate_commands::testing::TestDatabase;
use framegate_commands::videos::request_video;
use framegate_commands::{Actor, CommandMetadata, EventStore};
use framegate_domain::{
    CreditCommand, Credits, ProviderKind, ProviderPreference, UserId, VideoCommand, VideoId,
    VideoSpec,
};
use framegate_projections::read_models::{catch_up_all, videos};
use framegate_projections::Subscription;
use framegate_workers::media::MediaTools;
use framegate_workers::pipeline::{Dispatcher, Poller, Providers, DISPATCHER};
use framegate_workers::provider::{
    Cancellation, Job, JobState, Lookup, ProviderFailure, VideoProvider,
};
use framegate_workers::simulator::{Simulator, SimulatorConfig};
use uuid::Uuid;

/// What happens to the video while the worker downloads its result.
#[derive(Clone, Copy)]
enum Meanwhile {
    /// The owner cancels (it fails) and deletes it.
    FailedAndDeleted,
    /// It fails past its deadline; nobody deletes it.
    Failed,
    /// Another delivery completes it first.
    CompletedElsewhere,
}

/// The simulator, with something done to the video as its result is fetched.
struct Racing {
    simulator: Arc<Simulator>,
    store: EventStore,
    video: std::sync::Mutex<Option<VideoId>>,
    meanwhile: Meanwhile,
}

fn system() -> CommandMetadata {
    CommandMetadata::new_request(Actor::System)
}

impl Racing {
    async fn interfere(&self) {
        let Some(video) = *self.video.lock().expect("video") else {
            return;
        };
        let id = video.to_string();
        let fail = VideoCommand::Fail {
            code: "cancelled".into(),
            message: "cancelled by its owner".into(),
            retryable: false,
            charged: false,
        };
        let commands = match self.meanwhile {
            Meanwhile::FailedAndDeleted => vec![fail, VideoCommand::Delete],
            Meanwhile::Failed => vec![fail],
            Meanwhile::CompletedElsewhere => vec![VideoCommand::Deliver {
                blob_key: video_keys(video).expect("keys").video.to_string(),
                bytes: 1,
                sha256: "ab".repeat(32),
                duration_ms: 2000,
                width: 854,
                height: 480,
                final_cost: Credits::new(2),
            }],
        };
        for command in commands {
            self.store
                .videos()
                .execute(&id, command, &system())
                .await
                .expect("command meanwhile");
        }
    }
}

#[async_trait]
impl VideoProvider for Racing {
    fn kind(&self) -> ProviderKind {
        ProviderKind::Simulator
    }
    async fn submit(&self, job: &Job) -> Result<String, ProviderFailure> {
        self.simulator.submit(job).await
    }
    async fn find(&self, job: &Job, since: DateTime<Utc>) -> Result<Lookup, ProviderFailure> {
        self.simulator.find(job, since).await
    }
    async fn poll(&self, job_id: &str) -> Result<JobState, ProviderFailure> {
        self.simulator.poll(job_id).await
    }
    async fn fetch(&self, job_id: &str, destination: &Path) -> Result<(), ProviderFailure> {
        self.interfere().await;
        self.simulator.fetch(job_id, destination).await
    }
    async fn cancel(&self, job_id: &str) -> Result<Cancellation, ProviderFailure> {
        self.simulator.cancel(job_id).await
    }
}

/// Requests a video, runs it through the pipeline with `meanwhile` happening during its
/// download, and returns which of its three files are left in the store.
async fn files_left(meanwhile: Meanwhile) -> (videos::VideoRow, [bool; 3]) {
    let db = TestDatabase::new().await;
    let store = framegate_projections::inline::event_store(db.pool.clone());
    let tools = MediaTools::from_env().expect("media tools");
    let config = SimulatorConfig {
        latency: Duration::from_millis(200),
        ..SimulatorConfig::default()
    };
    let racing = Arc::new(Racing {
        simulator: Arc::new(Simulator::new(db.pool.clone(), tools.clone(), config)),
        store: store.clone(),
        video: std::sync::Mutex::new(None),
        meanwhile,
    });
    let mut map: HashMap<ProviderKind, Arc<dyn VideoProvider>> = HashMap::new();
    map.insert(ProviderKind::Simulator, racing.clone());
    let providers: Providers = Arc::new(map);
    let blobs_dir = tempfile::tempdir().expect("blobs dir");
    let blobs: Blobs = Arc::new(FilesystemStore::new(
        blobs_dir.path().to_path_buf(),
        b"0123456789abcdef0123456789abcdef".to_vec(),
        "http://127.0.0.1:8080".to_owned(),
    ));
    let poller = Poller {
        store: store.clone(),
        pool: db.pool.clone(),
        providers: providers.clone(),
        blobs: blobs.clone(),
        tools,
        max_job_time: Duration::from_secs(120),
        catalog: framegate_domain::catalog::Catalog::defaults(),
        pacing: Default::default(),
    };

    let owner = UserId::from_uuid(Uuid::now_v7());
    let grant = CreditCommand::Grant {
        amount: Credits::new(100),
        reason: "test".into(),
        granted_by: "system".into(),
    };
    store
        .credits()
        .execute(&owner.to_string(), grant, &system())
        .await
        .expect("grant");
    let video = VideoId::from_uuid(Uuid::now_v7());
    let spec = VideoSpec {
        owner,
        prompt: "a paper boat on a rainy street".into(),
        negative_prompt: None,
        provider: ProviderPreference::Auto,
        model: Some("simulator-v1".into()),
        duration_seconds: 2,
        aspect_ratio: "16:9".into(),
        resolution: "480p".into(),
        image_id: None,
        seed: Some(7),
        estimated_cost: Credits::new(2),
        external_id: None,
        webhook: None,
        generate_audio: false,
    };
    let meta = CommandMetadata::new_request(Actor::User(owner));
    request_video(&store, video, spec, &meta, None)
        .await
        .expect("request");
    *racing.video.lock().expect("video") = Some(video);

    let subscription = Subscription::new(DISPATCHER, db.pool.clone());
    let dispatcher = Dispatcher::new(store.clone(), providers, blobs.clone());
    let keys = video_keys(video).expect("keys");
    for _ in 0..200 {
        subscription.drain(&dispatcher).await.expect("dispatch");
        catch_up_all(&db.pool).await.expect("project");
        let row = videos::get(&db.pool, video)
            .await
            .expect("row")
            .expect("video");
        // It ends only inside the sweep that fetches it, which has returned by now.
        if matches!(row.status.as_str(), "completed" | "failed" | "cancelled") {
            let mut left = [false; 3];
            for (slot, key) in left
                .iter_mut()
                .zip([&keys.video, &keys.poster, &keys.thumbnail])
            {
                *slot = blobs.head(key).await.expect("head").is_some();
            }
            return (row, left);
        }
        poller.sweep().await.expect("sweep");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("video {video} did not finish");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_video_deleted_during_its_download_keeps_none_of_the_uploaded_files() {
    let (row, left) = files_left(Meanwhile::FailedAndDeleted).await;
    assert_eq!(row.status, "failed", "{row:?}");
    assert!(row.deleted_at.is_some(), "{row:?}");
    assert_eq!(left, [false; 3]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_video_failed_during_its_download_keeps_none_of_the_uploaded_files() {
    let (row, left) = files_left(Meanwhile::Failed).await;
    assert_eq!(row.status, "failed", "{row:?}");
    assert_eq!(left, [false; 3]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_video_completed_by_another_delivery_keeps_its_files() {
    let (row, left) = files_left(Meanwhile::CompletedElsewhere).await;
    assert_eq!(row.status, "completed", "{row:?}");
    assert_eq!(left, [true; 3]);
}
