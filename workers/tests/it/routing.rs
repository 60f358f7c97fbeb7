//! Routing, retries, fallback, local limits and the circuit breaker of the dispatcher, with
//! scripted in-process providers standing in for Veo and Sora.

use std::collections::{HashMap, VecDeque};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use framegate_commands::blobs::{Blobs, FilesystemStore};
use framegate_commands::testing::TestDatabase;
use framegate_commands::videos::request_video;
use framegate_commands::{Actor, CommandMetadata, EventStore};
use framegate_domain::{
    CreditCommand, Credits, ProviderKind, ProviderPreference, UserId, VideoId, VideoSpec,
};
use framegate_projections::read_models::{catch_up_all, videos};
use framegate_projections::Subscription;
use framegate_workers::health::ProviderHealth;
use framegate_workers::pipeline::{Dispatcher, ProviderLimits, Providers, Routing, DISPATCHER};
use framegate_workers::provider::{
    codes, Cancellation, Job, JobState, Lookup, ProviderFailure, VideoProvider,
};
use uuid::Uuid;

/// A provider that answers submissions from a script (then accepts), and remembers calls.
struct Scripted {
    kind: ProviderKind,
    script: Mutex<VecDeque<ProviderFailure>>,
    submitted: Mutex<Vec<VideoId>>,
    /// What `find` answers after a submission timed out.
    found: Mutex<HashMap<VideoId, String>>,
    calls: Mutex<usize>,
}

impl Scripted {
    fn new(kind: ProviderKind, script: Vec<ProviderFailure>) -> Arc<Self> {
        Arc::new(Self {
            kind,
            script: Mutex::new(script.into()),
            submitted: Mutex::new(Vec::new()),
            found: Mutex::new(HashMap::new()),
            calls: Mutex::new(0),
        })
    }

    fn calls(&self) -> usize {
        *self.calls.lock().expect("lock")
    }

    fn accepted(&self) -> Vec<VideoId> {
        self.submitted.lock().expect("lock").clone()
    }
}

#[async_trait]
impl VideoProvider for Scripted {
    fn kind(&self) -> ProviderKind {
        self.kind
    }

    async fn submit(&self, job: &Job) -> Result<String, ProviderFailure> {
        *self.calls.lock().expect("lock") += 1;
        // Long enough for a second dispatcher to arrive while this one is at the provider.
        tokio::time::sleep(Duration::from_millis(50)).await;
        if let Some(failure) = self.script.lock().expect("lock").pop_front() {
            if failure.code == codes::UPSTREAM_TIMEOUT {
                // The request reached the provider; only the answer was lost.
                self.submitted.lock().expect("lock").push(job.video_id);
                self.found
                    .lock()
                    .expect("lock")
                    .insert(job.video_id, format!("{}-{}", self.kind, job.video_id));
            }
            return Err(failure);
        }
        self.submitted.lock().expect("lock").push(job.video_id);
        Ok(format!("{}-{}", self.kind, job.video_id))
    }

    async fn find(&self, job: &Job, _since: DateTime<Utc>) -> Result<Lookup, ProviderFailure> {
        Ok(match self.found.lock().expect("lock").get(&job.video_id) {
            Some(id) => Lookup::Found(id.clone()),
            None => Lookup::NotSubmitted,
        })
    }

    async fn poll(&self, _job_id: &str) -> Result<JobState, ProviderFailure> {
        Ok(JobState::Queued)
    }

    async fn fetch(&self, _job_id: &str, _destination: &Path) -> Result<(), ProviderFailure> {
        Err(ProviderFailure::new(
            codes::RESULT_EXPIRED,
            "not in this test",
            false,
            false,
        ))
    }

    async fn cancel(&self, _job_id: &str) -> Result<Cancellation, ProviderFailure> {
        Ok(Cancellation::Stopped)
    }
}

fn failure(code: &str, retryable: bool) -> ProviderFailure {
    ProviderFailure::new(code, format!("scripted {code}"), retryable, false)
}

struct Rig {
    db: TestDatabase,
    store: EventStore,
    dispatcher: Dispatcher,
    owner: UserId,
    _blobs: tempfile::TempDir,
}

async fn rig(sora: &Arc<Scripted>, veo: &Arc<Scripted>, limits: ProviderLimits) -> Rig {
    rig_of(&[sora, veo], limits).await
}

async fn rig_of(scripted: &[&Arc<Scripted>], limits: ProviderLimits) -> Rig {
    let db = TestDatabase::new().await;
    let store = EventStore::new(db.pool.clone());
    let mut map: HashMap<ProviderKind, Arc<dyn VideoProvider>> = HashMap::new();
    for provider in scripted {
        map.insert(
            provider.kind,
            Arc::clone(provider) as Arc<dyn VideoProvider>,
        );
    }
    let providers: Providers = Arc::new(map);
    let blobs_dir = tempfile::tempdir().expect("blobs");
    let blobs: Blobs = Arc::new(FilesystemStore::new(
        blobs_dir.path().to_path_buf(),
        b"0123456789abcdef0123456789abcdef".to_vec(),
        "http://127.0.0.1:8080".to_owned(),
    ));
    let mut health = ProviderHealth::new(db.pool.clone());
    health.threshold = 2;
    let dispatcher = Dispatcher::new(store.clone(), providers, blobs)
        .with_routing(Routing {
            limits,
            ..Routing::default()
        })
        .with_health(health);
    let owner = UserId::from_uuid(Uuid::now_v7());
    store
        .credits()
        .execute(
            &owner.to_string(),
            CreditCommand::Grant {
                amount: Credits::new(10_000),
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
        owner,
        _blobs: blobs_dir,
    }
}

impl Rig {
    /// 8 s at 720p, which both Sora (10 credits/s) and Veo (40 credits/s) offer; priced at
    /// Veo's rate so that either may take it.
    async fn request(&self, provider: ProviderPreference) -> VideoId {
        self.request_with_audio(provider, false).await
    }

    async fn request_with_audio(&self, provider: ProviderPreference, audio: bool) -> VideoId {
        let video = VideoId::from_uuid(Uuid::now_v7());
        let spec = VideoSpec {
            owner: self.owner,
            prompt: "a lighthouse in a storm".into(),
            negative_prompt: None,
            provider,
            model: None,
            duration_seconds: 8,
            aspect_ratio: "16:9".into(),
            resolution: "720p".into(),
            image_id: None,
            seed: None,
            estimated_cost: Credits::new(320),
            generate_audio: audio,
            external_id: None,
            webhook: None,
        };
        request_video(
            &self.store,
            video,
            spec,
            &CommandMetadata::new_request(Actor::User(self.owner)),
            None,
        )
        .await
        .expect("request");
        video
    }

    /// The dispatcher's subscription, then one sweep of due queued videos, then projection.
    async fn dispatch(&self) {
        Subscription::new(DISPATCHER, self.db.pool.clone())
            .drain(&self.dispatcher)
            .await
            .expect("dispatch");
        catch_up_all(&self.db.pool).await.expect("project");
        self.dispatcher.sweep().await.expect("sweep");
        catch_up_all(&self.db.pool).await.expect("project");
    }

    async fn row(&self, video: VideoId) -> videos::VideoRow {
        videos::get(&self.db.pool, video)
            .await
            .expect("row")
            .expect("video")
    }
}

#[tokio::test]
async fn auto_falls_back_to_the_next_provider_when_the_first_never_accepted_the_job() {
    let sora = Scripted::new(
        ProviderKind::Sora,
        vec![failure(codes::UPSTREAM_UNAVAILABLE, true)],
    );
    let veo = Scripted::new(ProviderKind::Veo, vec![]);
    let rig = rig(&sora, &veo, ProviderLimits::default()).await;
    let video = rig.request(ProviderPreference::Auto).await;
    rig.dispatch().await;

    let row = rig.row(video).await;
    assert_eq!(row.status, "submitted", "{row:?}");
    assert_eq!(row.provider.as_deref(), Some("veo"));
    assert_eq!(row.attempt, 2);
    // Sora (cheaper) was tried first and never accepted it; the job runs only at Veo.
    assert_eq!((sora.calls(), sora.accepted().len()), (1, 0));
    assert_eq!(veo.accepted(), vec![video]);
    let attempts = &row.attempts.0;
    assert_eq!(attempts.len(), 2, "{attempts:?}");
    assert_eq!(attempts[0]["provider"], "sora");
    assert_eq!(attempts[0]["error"]["code"], codes::UPSTREAM_UNAVAILABLE);
    assert_eq!(attempts[1]["provider"], "veo");
    assert!(attempts[1].get("error").is_none());
}

#[tokio::test]
async fn a_pinned_provider_is_retried_after_its_retry_after_and_never_swapped() {
    let sora = Scripted::new(
        ProviderKind::Sora,
        vec![failure(codes::RATE_LIMITED, true).with_retry_after(Some(Duration::from_secs(3)))],
    );
    let veo = Scripted::new(ProviderKind::Veo, vec![]);
    let rig = rig(&sora, &veo, ProviderLimits::default()).await;
    let video = rig.request(ProviderPreference::Sora).await;
    let before = Utc::now();
    rig.dispatch().await;

    let row = rig.row(video).await;
    assert_eq!(row.status, "queued");
    let due = row.next_attempt_at.expect("a retry is scheduled");
    // At least the provider's Retry-After after the failed call.
    assert!(
        due >= before + chrono::Duration::seconds(3),
        "{due} vs {before}"
    );
    rig.dispatch().await;
    assert_eq!(sora.calls(), 1, "not retried before it is due");

    // Once due, the same provider gets the second attempt.
    let wait = (due - Utc::now()).to_std().unwrap_or_default() + Duration::from_millis(100);
    tokio::time::sleep(wait).await;
    rig.dispatch().await;
    let row = rig.row(video).await;
    assert_eq!(row.status, "submitted", "{row:?}");
    assert_eq!((row.provider.as_deref(), row.attempt), (Some("sora"), 2));
    assert_eq!(sora.calls(), 2);
    assert_eq!(veo.calls(), 0, "a pinned video never goes elsewhere");
}

#[tokio::test]
async fn a_moderation_refusal_ends_the_video_without_trying_elsewhere() {
    let sora = Scripted::new(ProviderKind::Sora, vec![failure(codes::MODERATED, false)]);
    let veo = Scripted::new(ProviderKind::Veo, vec![]);
    let rig = rig(&sora, &veo, ProviderLimits::default()).await;
    let video = rig.request(ProviderPreference::Auto).await;
    rig.dispatch().await;
    let row = rig.row(video).await;
    assert_eq!(
        (row.status.as_str(), row.error_code.as_deref()),
        ("failed", Some(codes::MODERATED))
    );
    assert_eq!(veo.calls(), 0);
}

#[tokio::test]
async fn a_timed_out_submission_is_looked_up_instead_of_sent_twice() {
    let sora = Scripted::new(
        ProviderKind::Sora,
        vec![failure(codes::UPSTREAM_TIMEOUT, true)],
    );
    let veo = Scripted::new(ProviderKind::Veo, vec![]);
    let rig = rig(&sora, &veo, ProviderLimits::default()).await;
    let video = rig.request(ProviderPreference::Auto).await;
    rig.dispatch().await;
    let row = rig.row(video).await;
    assert_eq!(row.status, "submitted");
    assert_eq!(row.provider_job_id, Some(format!("sora-{video}")));
    assert_eq!(sora.calls(), 1);
    assert_eq!(veo.calls(), 0);
}

#[tokio::test]
async fn repeated_upstream_failures_open_the_circuit_and_auto_routes_around_it() {
    let sora = Scripted::new(
        ProviderKind::Sora,
        vec![
            failure(codes::UPSTREAM_UNAVAILABLE, true),
            failure(codes::UPSTREAM_UNAVAILABLE, true),
        ],
    );
    let veo = Scripted::new(ProviderKind::Veo, vec![]);
    let rig = rig(&sora, &veo, ProviderLimits::default()).await;
    for _ in 0..2 {
        rig.request(ProviderPreference::Auto).await;
    }
    rig.dispatch().await;
    assert_eq!(sora.calls(), 2, "two failures: the threshold");
    let open: bool = sqlx::query_scalar(
        "SELECT open_until > now() FROM provider_health WHERE provider = 'sora'",
    )
    .fetch_one(&rig.db.pool)
    .await
    .expect("health");
    assert!(open, "the circuit is open");

    // A new video goes straight to Veo: Sora is not called while its circuit is open.
    let third = rig.request(ProviderPreference::Auto).await;
    rig.dispatch().await;
    assert_eq!(sora.calls(), 2);
    let row = rig.row(third).await;
    assert_eq!((row.provider.as_deref(), row.attempt), (Some("veo"), 1));
}

#[tokio::test]
async fn a_provider_at_its_concurrency_limit_leaves_videos_queued_until_a_slot_frees() {
    let sora = Scripted::new(ProviderKind::Sora, vec![]);
    let veo = Scripted::new(ProviderKind::Veo, vec![]);
    let limits = ProviderLimits {
        max_in_flight: HashMap::from([(ProviderKind::Sora, 1)]),
        ..ProviderLimits::default()
    };
    let rig = rig(&sora, &veo, limits).await;
    let first = rig.request(ProviderPreference::Sora).await;
    rig.dispatch().await;
    let second = rig.request(ProviderPreference::Sora).await;
    rig.dispatch().await;
    assert_eq!(rig.row(first).await.status, "submitted");
    assert_eq!(rig.row(second).await.status, "queued", "waits, not failed");
    assert_eq!(sora.calls(), 1, "the provider was not hammered");

    // The first finishes (here: cancelled); the next sweep submits the second.
    let meta = CommandMetadata::new_request(Actor::System);
    rig.store
        .videos()
        .execute(
            &first.to_string(),
            framegate_domain::VideoCommand::RequestCancel { reason: "t".into() },
            &meta,
        )
        .await
        .expect("cancel");
    rig.store
        .videos()
        .execute(
            &first.to_string(),
            framegate_domain::VideoCommand::Cancel { charged: false },
            &meta,
        )
        .await
        .expect("cancelled");
    catch_up_all(&rig.db.pool).await.expect("project");
    sqlx::query(
        "UPDATE videos SET updated_at = now() - interval '5 seconds' WHERE status = 'queued'",
    )
    .execute(&rig.db.pool)
    .await
    .expect("age");
    rig.dispatch().await;
    assert_eq!(rig.row(second).await.status, "submitted");
    assert_eq!(sora.accepted(), vec![first, second]);
}

#[tokio::test]
async fn a_provider_over_its_submission_rate_leaves_videos_queued() {
    let sora = Scripted::new(ProviderKind::Sora, vec![]);
    let veo = Scripted::new(ProviderKind::Veo, vec![]);
    let limits = ProviderLimits {
        submissions_per_minute: HashMap::from([(ProviderKind::Sora, 2)]),
        ..ProviderLimits::default()
    };
    let rig = rig(&sora, &veo, limits).await;
    let mut requested = Vec::new();
    for _ in 0..3 {
        requested.push(rig.request(ProviderPreference::Sora).await);
    }
    rig.dispatch().await;
    assert_eq!(sora.calls(), 2, "two submissions a minute, not three");
    let mut statuses = Vec::new();
    for video in &requested {
        statuses.push(rig.row(*video).await.status);
    }
    statuses.sort();
    assert_eq!(statuses, ["queued", "submitted", "submitted"]);
    assert_eq!(veo.calls(), 0, "pinned: waits rather than going elsewhere");
}

#[test]
fn limits_are_read_per_provider_and_refuse_nonsense() {
    let get = |pairs: &'static [(&'static str, &'static str)]| {
        move |name: &str| {
            pairs
                .iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| (*v).to_owned())
        }
    };
    let limits = ProviderLimits::from_lookup(get(&[
        ("FRAMEGATE_KLING_MAX_CONCURRENCY", "5"),
        ("FRAMEGATE_SORA_SUBMISSIONS_PER_MINUTE", "30"),
    ]))
    .expect("limits");
    assert_eq!(limits.max_in_flight.get(&ProviderKind::Kling), Some(&5));
    assert_eq!(
        limits.submissions_per_minute.get(&ProviderKind::Sora),
        Some(&30)
    );
    let error = ProviderLimits::from_lookup(get(&[("FRAMEGATE_VEO_SUBMISSIONS_PER_MINUTE", "0")]))
        .expect_err("zero");
    assert!(
        error.starts_with("FRAMEGATE_VEO_SUBMISSIONS_PER_MINUTE"),
        "{error}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_dispatchers_reaching_one_video_together_submit_it_once() {
    let sora = Scripted::new(ProviderKind::Sora, vec![]);
    let veo = Scripted::new(ProviderKind::Veo, vec![]);
    let rig = rig(&sora, &veo, ProviderLimits::default()).await;
    let video = rig.request(ProviderPreference::Sora).await;
    let meta = CommandMetadata::new_request(Actor::System);
    // The subscription and the sweep (or two workers) at the same moment.
    let (first, second) = tokio::join!(
        rig.dispatcher.dispatch(video, Utc::now(), &meta),
        rig.dispatcher.dispatch(video, Utc::now(), &meta),
    );
    first.expect("first");
    second.expect("second");
    catch_up_all(&rig.db.pool).await.expect("project");
    assert_eq!(sora.calls(), 1, "submitted once");
    let row = rig.row(video).await;
    assert_eq!((row.status.as_str(), row.attempt), ("submitted", 1));
}

#[tokio::test]
async fn a_video_with_audio_never_falls_back_to_a_provider_without_it() {
    let simulator = Scripted::new(ProviderKind::Simulator, vec![]);
    let veo = Scripted::new(
        ProviderKind::Veo,
        vec![failure(codes::UPSTREAM_UNAVAILABLE, true)],
    );
    let rig = rig_of(&[&simulator, &veo], ProviderLimits::default()).await;
    // Without audio the simulator takes the same request: it is a candidate.
    let silent = rig.request(ProviderPreference::Auto).await;
    rig.dispatch().await;
    assert_eq!(simulator.accepted(), vec![silent]);
    assert_eq!(veo.calls(), 0);

    let loud = rig.request_with_audio(ProviderPreference::Auto, true).await;
    rig.dispatch().await;
    let row = rig.row(loud).await;
    assert!(row.generate_audio);
    assert_eq!(veo.calls(), 1, "Veo was tried");
    assert_eq!(
        simulator.accepted(),
        vec![silent],
        "and nothing fell back: {row:?}"
    );
    assert_ne!(row.provider.as_deref(), Some("simulator"));
}
