//! Cancellation bills what the provider bills: a job the provider accepted and cannot stop
//! is charged (the catalog's default policy), one it stopped is free, one cancelled while it
//! was being submitted keeps its upstream id and is cancelled right after, and no
//! subscription stops on the way.

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
    CreditCommand, Credits, ProviderKind, ProviderPreference, UserId, VideoCommand, VideoId,
    VideoSpec,
};
use framegate_projections::read_models::{catch_up_all, credits, videos};
use framegate_projections::Subscription;
use framegate_workers::media::MediaTools;
use framegate_workers::pipeline::{Dispatcher, PollPacing, Poller, Providers, DISPATCHER};
use framegate_workers::provider::{
    codes, Cancellation, Job, JobState, Lookup, ProviderFailure, VideoProvider,
};
use framegate_workers::settlement::{self, Settlement};
use tokio::sync::Notify;
use uuid::Uuid;

const COST: i64 = 320;
const GRANT: i64 = 10_000;

/// Stands in for Veo: accepts every job at once (or when released, if held), renders
/// forever, and either can stop a job (`stoppable`) or cannot.
struct Billing {
    stoppable: bool,
    hold: Option<Arc<Notify>>,
    submissions: AtomicUsize,
    cancellations: AtomicUsize,
}

impl Billing {
    fn new(stoppable: bool, hold: Option<Arc<Notify>>) -> Arc<Self> {
        Arc::new(Self {
            stoppable,
            hold,
            submissions: AtomicUsize::new(0),
            cancellations: AtomicUsize::new(0),
        })
    }

    /// Jobs the provider rendered to the end and bills.
    fn billed(&self) -> usize {
        let stopped = if self.stoppable {
            self.cancellations.load(Ordering::SeqCst)
        } else {
            0
        };
        self.submissions.load(Ordering::SeqCst) - stopped
    }
}

#[async_trait]
impl VideoProvider for Billing {
    fn kind(&self) -> ProviderKind {
        ProviderKind::Veo
    }

    async fn submit(&self, job: &Job) -> Result<String, ProviderFailure> {
        self.submissions.fetch_add(1, Ordering::SeqCst);
        if let Some(hold) = &self.hold {
            hold.notified().await;
        }
        Ok(format!("veo-{}", job.video_id))
    }

    async fn find(&self, _job: &Job, _since: DateTime<Utc>) -> Result<Lookup, ProviderFailure> {
        Ok(Lookup::NotSubmitted)
    }

    async fn poll(&self, _job_id: &str) -> Result<JobState, ProviderFailure> {
        Ok(JobState::Running { progress: 10 })
    }

    async fn fetch(&self, _job_id: &str, _destination: &Path) -> Result<(), ProviderFailure> {
        Err(ProviderFailure::new(
            codes::RESULT_EXPIRED,
            "never finishes",
            false,
            false,
        ))
    }

    async fn cancel(&self, _job_id: &str) -> Result<Cancellation, ProviderFailure> {
        self.cancellations.fetch_add(1, Ordering::SeqCst);
        Ok(if self.stoppable {
            Cancellation::Stopped
        } else {
            Cancellation::Unsupported
        })
    }
}

struct Rig {
    db: TestDatabase,
    store: EventStore,
    dispatcher: Arc<Dispatcher>,
    poller: Poller,
    owner: UserId,
    _blobs: tempfile::TempDir,
}

async fn rig(provider: &Arc<Billing>) -> Rig {
    let db = TestDatabase::new().await;
    let store = framegate_projections::inline::event_store(db.pool.clone());
    let mut map: HashMap<ProviderKind, Arc<dyn VideoProvider>> = HashMap::new();
    map.insert(ProviderKind::Veo, provider.clone());
    let providers: Providers = Arc::new(map);
    let blobs_dir = tempfile::tempdir().expect("blobs");
    let blobs: Blobs = Arc::new(FilesystemStore::new(
        blobs_dir.path().to_path_buf(),
        b"0123456789abcdef0123456789abcdef".to_vec(),
        "http://127.0.0.1:8080".to_owned(),
    ));
    let dispatcher = Arc::new(Dispatcher::new(
        store.clone(),
        providers.clone(),
        blobs.clone(),
    ));
    let poller = Poller {
        store: store.clone(),
        pool: db.pool.clone(),
        providers,
        blobs,
        tools: MediaTools::from_env().expect("media tools"),
        max_job_time: Duration::from_secs(600),
        catalog: Catalog::defaults(),
        pacing: PollPacing::default(),
    };
    let owner = UserId::from_uuid(Uuid::now_v7());
    store
        .credits()
        .execute(
            &owner.to_string(),
            CreditCommand::Grant {
                amount: Credits::new(GRANT),
                reason: "test".into(),
                granted_by: "system".into(),
            },
            &CommandMetadata::new_request(Actor::System),
        )
        .await
        .expect("grant");
    Rig {
        db,
        store,
        dispatcher,
        poller,
        owner,
        _blobs: blobs_dir,
    }
}

impl Rig {
    /// 8 s at 720p on Veo.
    async fn request(&self) -> VideoId {
        let video = VideoId::from_uuid(Uuid::now_v7());
        let spec = VideoSpec {
            owner: self.owner,
            prompt: "a lighthouse in a storm".into(),
            negative_prompt: None,
            provider: ProviderPreference::Veo,
            model: None,
            duration_seconds: 8,
            aspect_ratio: "16:9".into(),
            resolution: "720p".into(),
            image_id: None,
            seed: None,
            estimated_cost: Credits::new(COST),
            generate_audio: false,
            external_id: None,
            webhook: None,
        };
        let meta = CommandMetadata::new_request(Actor::User(self.owner));
        request_video(&self.store, video, spec, &meta, None)
            .await
            .expect("request");
        video
    }

    async fn cancel(&self, video: VideoId) {
        self.store
            .videos()
            .execute(
                &video.to_string(),
                VideoCommand::RequestCancel {
                    reason: "changed my mind".into(),
                },
                &CommandMetadata::new_request(Actor::User(self.owner)),
            )
            .await
            .expect("cancel");
    }

    /// The dispatcher's subscription: it must never stop on an error.
    async fn dispatch(&self) {
        Subscription::new(DISPATCHER, self.db.pool.clone())
            .drain(self.dispatcher.as_ref())
            .await
            .expect("the dispatcher subscription keeps going");
    }

    /// Polls and settles until `video` is terminal, then says how.
    async fn settle(&self, video: VideoId) -> videos::VideoRow {
        let settlement = Settlement::new(self.store.clone());
        let subscription = Subscription::new(settlement::SUBSCRIPTION, self.db.pool.clone());
        for _ in 0..50 {
            self.poller.sweep().await.expect("poll");
            subscription.drain(&settlement).await.expect("settle");
            let row = self.row(video).await;
            if row.status == "cancelled" {
                return row;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("video {video} was never cancelled");
    }

    async fn row(&self, video: VideoId) -> videos::VideoRow {
        videos::get(&self.db.pool, video)
            .await
            .expect("row")
            .expect("video")
    }

    async fn account(&self) -> (i64, i64) {
        catch_up_all(&self.db.pool).await.expect("project");
        let account = credits::account(&self.db.pool, self.owner)
            .await
            .expect("account");
        (account.balance, account.reserved)
    }

    async fn event_types(&self, video: VideoId) -> Vec<String> {
        sqlx::query_scalar(
            "SELECT event_type FROM events WHERE aggregate_type = 'Video' AND aggregate_id = $1
              ORDER BY sequence",
        )
        .bind(video.to_string())
        .fetch_all(&self.db.pool)
        .await
        .expect("events")
    }
}

const LOOPS: usize = 4;

#[tokio::test]
async fn create_cancel_loops_at_a_provider_that_cannot_stop_jobs_cost_what_it_bills() {
    let provider = Billing::new(false, None);
    let rig = rig(&provider).await;
    for _ in 0..LOOPS {
        let video = rig.request().await;
        rig.dispatch().await;
        assert_eq!(rig.row(video).await.status, "submitted");
        rig.cancel(video).await;
        let row = rig.settle(video).await;
        assert_eq!(row.status, "cancelled");
        assert_eq!(row.cancel_charged, Some(true), "recorded on the video");
    }
    assert_eq!(provider.submissions.load(Ordering::SeqCst), LOOPS);
    assert_eq!(provider.billed(), LOOPS, "the provider renders every one");
    let (balance, reserved) = rig.account().await;
    assert_eq!(reserved, 0, "every reservation settled");
    assert_eq!(
        GRANT - balance,
        provider.billed() as i64 * COST,
        "the user pays for what the provider bills, no more, no less"
    );
}

#[tokio::test]
async fn create_cancel_loops_at_a_provider_that_stops_jobs_are_free() {
    let provider = Billing::new(true, None);
    let rig = rig(&provider).await;
    for _ in 0..LOOPS {
        let video = rig.request().await;
        rig.dispatch().await;
        rig.cancel(video).await;
        let row = rig.settle(video).await;
        assert_eq!(row.cancel_charged, Some(false), "recorded on the video");
    }
    assert_eq!(provider.cancellations.load(Ordering::SeqCst), LOOPS);
    assert_eq!(provider.billed(), 0);
    assert_eq!(rig.account().await, (GRANT, 0));
}

#[tokio::test]
async fn a_cancel_while_the_provider_is_being_asked_keeps_the_job_and_cancels_it_after() {
    let hold = Arc::new(Notify::new());
    let provider = Billing::new(false, Some(hold.clone()));
    let rig = rig(&provider).await;
    let video = rig.request().await;
    let dispatching = {
        let db_pool = rig.db.pool.clone();
        let dispatcher = rig.dispatcher.clone();
        tokio::spawn(async move {
            Subscription::new(DISPATCHER, db_pool)
                .drain(dispatcher.as_ref())
                .await
        })
    };
    // The dispatcher is at the provider: cancel now.
    while provider.submissions.load(Ordering::SeqCst) == 0 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    rig.cancel(video).await;
    hold.notify_one();
    dispatching
        .await
        .expect("task")
        .expect("the dispatcher subscription keeps going");
    assert_eq!(
        rig.event_types(video).await[1..],
        [
            "SubmissionStarted",
            "CancelRequested",
            "VideoSubmitted",
            "CancelRequested"
        ]
    );
    let row = rig.row(video).await;
    assert_eq!(row.status, "cancel_requested");
    assert_eq!(row.provider_job_id, Some(format!("veo-{video}")));

    rig.settle(video).await;
    assert_eq!(provider.cancellations.load(Ordering::SeqCst), 1);
    let (balance, reserved) = rig.account().await;
    assert_eq!(
        (GRANT - balance, reserved),
        (COST, 0),
        "billed upstream, charged once"
    );
}
