//! The poller follows what a provider holds, by each job's next due time (`poll_schedule`):
//! a job in flight is polled on every sweep even with hundreds of queued jobs (held back by a
//! concurrency limit) changed more recently than its last poll, a waiting job past its
//! deadline still fails, and hundreds of jobs waiting at a one-slot provider complete in
//! request order while cancellations and deadlines among them are handled at once.

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
        generate_audio: false,
        external_id: None,
        webhook: None,
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

/// 300 one-second jobs requested at once at a simulator that runs one at a time: each waits
/// its turn at the provider, yet every one completes, in request order, and cancelling or
/// outliving its deadline still takes effect while it waits, not when its turn comes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_hundred_jobs_at_a_one_slot_provider_complete_in_request_order() {
    use framegate_domain::VideoCommand;
    use framegate_projections::read_models::credits;
    use framegate_workers::settlement::{self, Settlement};
    use framegate_workers::simulator::{Simulator, SimulatorConfig};

    const JOBS: usize = 300;
    let db = TestDatabase::new().await;
    let store = framegate_projections::inline::event_store(db.pool.clone());
    let tools = MediaTools::from_env().expect("media tools");
    // As FRAMEGATE_SIMULATOR_MAX_CONCURRENCY=1 and FRAMEGATE_SIMULATOR_LATENCY_MS=1000 set it.
    let config = SimulatorConfig::from_lookup(|name| match name {
        "FRAMEGATE_SIMULATOR_MAX_CONCURRENCY" => Some("1".to_owned()),
        "FRAMEGATE_SIMULATOR_LATENCY_MS" => Some("1000".to_owned()),
        _ => None,
    })
    .expect("config");
    let simulator = Arc::new(Simulator::new(db.pool.clone(), tools.clone(), config));
    let mut map: HashMap<ProviderKind, Arc<dyn VideoProvider>> = HashMap::new();
    map.insert(ProviderKind::Simulator, simulator);
    let providers: Providers = Arc::new(map);
    let blobs_dir = tempfile::tempdir().expect("blobs");
    let blobs: Blobs = Arc::new(FilesystemStore::new(
        blobs_dir.path().to_path_buf(),
        b"0123456789abcdef0123456789abcdef".to_vec(),
        "http://127.0.0.1:8080".to_owned(),
    ));
    let dispatcher = Dispatcher::new(store.clone(), providers.clone(), blobs.clone());
    let poller = Poller {
        store: store.clone(),
        pool: db.pool.clone(),
        providers,
        blobs,
        tools,
        max_job_time: Duration::from_secs(3600),
        catalog: Catalog::defaults(),
        pacing: PollPacing::default(),
    };
    let owner = UserId::from_uuid(Uuid::now_v7());
    let granted = 10_000;
    store
        .credits()
        .execute(
            &owner.to_string(),
            CreditCommand::Grant {
                amount: Credits::new(granted),
                reason: "test".into(),
                granted_by: "system".into(),
            },
            &CommandMetadata::new_request(Actor::System),
        )
        .await
        .expect("grant");
    let mut requested = Vec::with_capacity(JOBS);
    for _ in 0..JOBS {
        let video = VideoId::from_uuid(Uuid::now_v7());
        let spec = VideoSpec {
            owner,
            prompt: "a queue of paper boats".into(),
            negative_prompt: None,
            provider: ProviderPreference::Simulator,
            model: None,
            duration_seconds: 1,
            aspect_ratio: "16:9".into(),
            resolution: "480p".into(),
            image_id: None,
            seed: Some(1),
            estimated_cost: Credits::new(1),
            generate_audio: false,
            external_id: None,
            webhook: None,
        };
        request_video(
            &store,
            video,
            spec,
            &CommandMetadata::new_request(Actor::User(owner)),
            None,
        )
        .await
        .expect("request");
        requested.push(video);
    }
    let dispatch = Subscription::new(DISPATCHER, db.pool.clone());
    let settle = Subscription::new(settlement::SUBSCRIPTION, db.pool.clone());
    let settlement = Settlement::new(store.clone());
    let row = |video: VideoId| {
        let pool = db.pool.clone();
        async move {
            videos::get(&pool, video)
                .await
                .expect("row")
                .expect("video")
        }
    };
    let (cancelled, overdue) = (requested[200], requested[250]);
    let started = std::time::Instant::now();
    let (mut acted_at, mut resolved) = (None, false);
    loop {
        dispatch.drain(&dispatcher).await.expect("dispatch");
        poller.sweep().await.expect("sweep");
        settle.drain(&settlement).await.expect("settle");
        let done: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM videos WHERE status IN ('completed', 'failed', 'cancelled')",
        )
        .fetch_one(&db.pool)
        .await
        .expect("count");
        if acted_at.is_none() && done >= 3 {
            // Deep in the provider's queue: one cancelled, one requested an hour ago (its
            // deadline long past).
            for video in [cancelled, overdue] {
                assert_eq!(row(video).await.status, "submitted", "still waiting");
            }
            store
                .videos()
                .execute(
                    &cancelled.to_string(),
                    VideoCommand::RequestCancel {
                        reason: "changed my mind".into(),
                    },
                    &CommandMetadata::new_request(Actor::User(owner)),
                )
                .await
                .expect("cancel");
            sqlx::query("UPDATE videos SET created_at = now() - interval '1 hour' WHERE id = $1")
                .bind(overdue.as_uuid())
                .execute(&db.pool)
                .await
                .expect("backdate");
            acted_at = Some(std::time::Instant::now());
        }
        if let (Some(at), false) = (acted_at, resolved) {
            // Within a few sweeps: their turn at the provider is some 200 s away.
            let (c, o) = (row(cancelled).await, row(overdue).await);
            resolved = c.status == "cancelled" && o.status == "failed";
            assert!(
                resolved || at.elapsed() < Duration::from_secs(10),
                "waiting jobs not cancelled / expired 10 s on: {} / {}",
                c.status,
                o.status
            );
        }
        if done == JOBS as i64 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(900),
            "only {done} of {JOBS} jobs finished"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let c = row(cancelled).await;
    assert_eq!(c.status, "cancelled");
    let o = row(overdue).await;
    assert_eq!(
        (o.status.as_str(), o.error_code.as_deref()),
        ("failed", Some("deadline_exceeded"))
    );
    assert!(
        c.updated_at < row(requested[150]).await.completed_at.expect("done"),
        "the cancel took effect before the jobs ahead of it were done"
    );
    // Everything else completed, in the order it was requested.
    let mut completed = Vec::new();
    for &video in &requested {
        if video == cancelled || video == overdue {
            continue;
        }
        let r = row(video).await;
        assert_eq!(r.status, "completed", "{video}: {:?}", r.error_code);
        completed.push((video, r.completed_at.expect("completed at")));
    }
    for pair in completed.windows(2) {
        assert!(
            pair[0].1 <= pair[1].1,
            "{} completed after {}, requested later",
            pair[0].0,
            pair[1].0
        );
    }
    // Each completed job cost its estimate; the two others cost nothing.
    let account = credits::account(&db.pool, owner).await.expect("account");
    assert_eq!(
        (account.balance, account.reserved),
        (granted - (JOBS as i64 - 2), 0)
    );
}
