//! The video pipeline: the dispatcher submits requested videos, the poller follows them.
//!
//! The dispatcher is a subscription on the ordered log reacting to `VideoRequested`. It records
//! the intent (`SubmissionStarted`) before calling the provider, so a crash in between is seen
//! on restart (status `submitting`) and resolved by asking the provider for the job (`find`)
//! instead of submitting again. The poller follows jobs in flight: progress, cancellation,
//! deadlines, and on success downloads the result at once (upstream URLs expire), validates it
//! with ffprobe, stores it with a poster and thumbnail, and records completion. Credits are
//! settled by the settlement process manager from the resulting events.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use cqrs_es::Aggregate as _;
use framegate_commands::blobs::{video_keys, BlobError, BlobKey, Blobs};
use framegate_commands::{Actor, CommandMetadata, EventStore};
use framegate_domain::catalog::{Catalog, Quote, QuoteRequest};
use framegate_domain::routing::{self, RoutingPolicy};
use framegate_domain::{
    FailedAttempt, ImageId, ProviderKind, UserId, Video, VideoCommand, VideoId, VideoSpec,
    VideoStatus,
};
use framegate_projections::read_models::videos::{self, VideoRow};
use framegate_projections::subscription::BoxError;
use framegate_projections::{EventHandler, StoredEvent};
use sqlx::{PgConnection, PgPool};
use tracing::{info, warn};
use uuid::Uuid;

use crate::health::ProviderHealth;
use crate::media::{
    extract_poster, make_thumbnail, prepare_start_image, validate_video, Expectation, MediaTools,
};
use crate::provider::{codes, Job, JobImage, JobState, Lookup, ProviderFailure, VideoProvider};

pub const DISPATCHER: &str = "worker.dispatcher";

pub type Providers = Arc<HashMap<ProviderKind, Arc<dyn VideoProvider>>>;

fn system(correlation: Option<&str>, cause: Uuid) -> CommandMetadata {
    let correlation = correlation
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(Uuid::now_v7);
    CommandMetadata::caused_by_event(Actor::System, correlation, cause)
}

/// How this process names itself in the metadata of the events it causes (the audit log's
/// "from where"): `FRAMEGATE_WORKER_ID`, else `framegate-worker/<host>:<pid>`.
pub fn worker_instance(get: impl Fn(&str) -> Option<String>) -> String {
    get("FRAMEGATE_WORKER_ID").unwrap_or_else(|| {
        let host = get("HOSTNAME")
            .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
            .map(|h| h.trim().to_owned())
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| "localhost".into());
        format!("framegate-worker/{host}:{}", std::process::id())
    })
}

/// How many submission attempts a video gets before it fails for good.
pub const MAX_ATTEMPTS: u32 = 6;
/// How many times one provider is tried for one video.
const MAX_ATTEMPTS_PER_PROVIDER: usize = 3;

/// Per-provider limits the dispatcher respects locally: jobs in flight at once, and
/// submissions per minute (absent: no limit). A provider at a limit is skipped for now, and
/// the video waits in the queue.
#[derive(Debug, Clone, Default)]
pub struct ProviderLimits {
    pub max_in_flight: HashMap<ProviderKind, i64>,
    pub submissions_per_minute: HashMap<ProviderKind, u32>,
}

/// The submission rate limiters, one per limited provider (in this process).
type SubmissionLimiter = governor::DefaultDirectRateLimiter;

fn submission_limiters(limits: &ProviderLimits) -> HashMap<ProviderKind, Arc<SubmissionLimiter>> {
    limits
        .submissions_per_minute
        .iter()
        .filter_map(|(provider, per_minute)| {
            let per_minute = std::num::NonZeroU32::new(*per_minute)?;
            let quota = governor::Quota::per_minute(per_minute);
            Some((*provider, Arc::new(governor::RateLimiter::direct(quota))))
        })
        .collect()
}

impl ProviderLimits {
    /// `FRAMEGATE_<PROVIDER>_MAX_CONCURRENCY` and `FRAMEGATE_<PROVIDER>_SUBMISSIONS_PER_MINUTE`
    /// for each provider, e.g. `FRAMEGATE_KLING_MAX_CONCURRENCY=5`.
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Self, String> {
        let mut limits = ProviderLimits::default();
        for provider in ProviderKind::ALL {
            let name = format!(
                "FRAMEGATE_{}_MAX_CONCURRENCY",
                provider.as_str().to_ascii_uppercase()
            );
            if let Some(value) = get(&name).filter(|v| !v.trim().is_empty()) {
                let limit: i64 = value
                    .trim()
                    .parse()
                    .ok()
                    .filter(|n| *n > 0)
                    .ok_or_else(|| format!("{name}: expected a positive number, got {value:?}"))?;
                limits.max_in_flight.insert(provider, limit);
            }
            let name = format!(
                "FRAMEGATE_{}_SUBMISSIONS_PER_MINUTE",
                provider.as_str().to_ascii_uppercase()
            );
            if let Some(value) = get(&name).filter(|v| !v.trim().is_empty()) {
                let limit: u32 = value
                    .trim()
                    .parse()
                    .ok()
                    .filter(|n| *n > 0)
                    .ok_or_else(|| format!("{name}: expected a positive number, got {value:?}"))?;
                limits.submissions_per_minute.insert(provider, limit);
            }
        }
        Ok(limits)
    }
}

/// How the dispatcher chooses providers.
#[derive(Debug, Clone)]
pub struct Routing {
    pub catalog: Catalog,
    pub policy: RoutingPolicy,
    pub limits: ProviderLimits,
}

impl Default for Routing {
    fn default() -> Self {
        Self {
            catalog: Catalog::defaults(),
            policy: RoutingPolicy::Price,
            limits: ProviderLimits::default(),
        }
    }
}

/// Submits requested videos: reacts to `VideoRequested`, and (through [`Dispatcher::sweep`])
/// retries queued videos whose previous attempt failed or that waited for a provider.
pub struct Dispatcher {
    store: EventStore,
    pool: PgPool,
    providers: Providers,
    blobs: Blobs,
    routing: Routing,
    health: ProviderHealth,
    limiters: HashMap<ProviderKind, Arc<SubmissionLimiter>>,
    /// Recorded as the `user_agent` of every command this dispatcher issues.
    instance: String,
    /// How long a fresh video waits for its `VideoRequested` to reach this dispatcher before
    /// the sweep takes it anyway (a lost notification, a Kafka outage).
    fresh_grace: Duration,
}

/// Why a queued video is not submitted now.
enum Choice {
    /// Submit to this provider with this model.
    Provider(Arc<dyn VideoProvider>, String),
    /// Every candidate is unhealthy or at its limit: stay queued.
    Wait,
    /// No configured provider can take it (or all have failed it).
    Nobody(ProviderFailure),
}

impl Dispatcher {
    pub fn new(store: EventStore, providers: Providers, blobs: Blobs) -> Self {
        let pool = store.pool().clone();
        Self {
            health: ProviderHealth::new(pool.clone()),
            store,
            pool,
            providers,
            blobs,
            routing: Routing::default(),
            limiters: HashMap::new(),
            instance: worker_instance(|name| std::env::var(name).ok()),
            fresh_grace: Duration::from_secs(2),
        }
    }

    /// Names this dispatcher in the metadata of its commands.
    pub fn with_instance(mut self, instance: impl Into<String>) -> Self {
        self.instance = instance.into();
        self
    }

    /// How long the sweep leaves a fresh video to the event that announces it (default 2 s;
    /// longer when jobs come from Kafka, whose relay adds latency).
    pub fn with_fresh_grace(mut self, grace: Duration) -> Self {
        self.fresh_grace = grace;
        self
    }

    /// The metadata of a command caused by the stored event `cause`.
    pub fn caused_by(&self, correlation: Option<&str>, cause: Uuid) -> CommandMetadata {
        system(correlation, cause).with_client(None, Some(self.instance.clone()))
    }

    pub fn with_routing(mut self, routing: Routing) -> Self {
        self.limiters = submission_limiters(&routing.limits);
        self.routing = routing;
        self
    }

    pub fn with_health(mut self, health: ProviderHealth) -> Self {
        self.health = health;
        self
    }

    /// Submits every queued video that is due: retries after a failed attempt, and videos
    /// that waited for a provider. Returns how many it looked at.
    pub async fn sweep(&self) -> Result<usize, BoxError> {
        let due = videos::queued_due(&self.pool, 100, self.fresh_grace).await?;
        for row in &due {
            let meta = CommandMetadata::new_request(Actor::System)
                .with_client(None, Some(self.instance.clone()));
            if let Err(error) = self
                .dispatch(VideoId::from_uuid(row.id), row.created_at, &meta)
                .await
            {
                warn!(video = %row.id, %error, "could not dispatch a queued video");
            }
        }
        Ok(due.len())
    }

    /// Sweeps every `interval` until `shutdown` flips.
    pub async fn run_sweeps(
        &self,
        interval: Duration,
        mut shutdown: tokio::sync::watch::Receiver<bool>,
    ) {
        loop {
            if let Err(error) = self.sweep().await {
                warn!(%error, "dispatcher sweep failed");
            }
            tokio::select! {
                () = tokio::time::sleep(interval) => {}
                _ = shutdown.wait_for(|stop| *stop) => return,
            }
        }
    }

    /// One dispatch step for `video_id`: resolves a submission interrupted by a crash, or
    /// starts the next attempt if the video is queued and due.
    ///
    /// One dispatch per video at a time, across every worker: the subscription and the
    /// sweep (or two workers) may reach the same video together, and a second dispatcher
    /// finding it `submitting` would take it for a crashed one and submit again. A session
    /// advisory lock on the video id, held through the provider call, makes the later one
    /// skip; a crashed worker's session ends and releases it.
    pub async fn dispatch(
        &self,
        video_id: VideoId,
        requested_at: DateTime<Utc>,
        meta: &CommandMetadata,
    ) -> Result<(), BoxError> {
        let key = format!("framegate.dispatch:{video_id}");
        exclusively(
            &self.pool,
            &key,
            self.dispatch_locked(video_id, requested_at, meta),
        )
        .await
        .map(|_| ())
    }

    async fn dispatch_locked(
        &self,
        video_id: VideoId,
        requested_at: DateTime<Utc>,
        meta: &CommandMetadata,
    ) -> Result<(), BoxError> {
        let aggregate = video_id.to_string();
        let video = self.store.videos().load(&aggregate).await?;
        let Some(spec) = video.spec().cloned() else {
            return Ok(());
        };
        let resuming = match video.status() {
            Some(VideoStatus::Queued) => {
                if video.retry_at().is_some_and(|at| at > Utc::now()) {
                    return Ok(());
                }
                false
            }
            // Crashed between recording the intent and recording the job: resolve below.
            Some(VideoStatus::Submitting) => true,
            _ => return Ok(()),
        };
        let image = match spec.image_id {
            None => None,
            Some(image_id) => match self.start_image(spec.owner, image_id).await? {
                Ok(image) => Some(image),
                Err(failure) => {
                    self.store
                        .videos()
                        .execute(&aggregate, fail_command(&failure), meta)
                        .await?;
                    return Ok(());
                }
            },
        };
        let (provider, model, attempt) = if resuming {
            let provider = video
                .provider()
                .and_then(|kind| self.providers.get(&kind).cloned());
            let Some(provider) = provider else {
                let failure = ProviderFailure::new(
                    "provider_unavailable",
                    "the provider of the interrupted submission is no longer configured",
                    true,
                    false,
                );
                self.store
                    .videos()
                    .execute(&aggregate, fail_command(&failure), meta)
                    .await?;
                return Ok(());
            };
            let model = video.model().unwrap_or_default().to_owned();
            (provider, model, video.attempt())
        } else {
            match self.choose(&video, &spec).await? {
                Choice::Wait => return Ok(()),
                Choice::Nobody(failure) => {
                    self.store
                        .videos()
                        .execute(&aggregate, fail_command(&failure), meta)
                        .await?;
                    return Ok(());
                }
                Choice::Provider(provider, model) => {
                    let attempt = video.attempt() + 1;
                    let intent = VideoCommand::StartSubmission {
                        attempt,
                        provider: provider.kind(),
                        model: model.clone(),
                    };
                    self.store
                        .videos()
                        .execute(&aggregate, intent, meta)
                        .await?;
                    (provider, model, attempt)
                }
            }
        };
        let job = Job {
            video_id,
            model,
            prompt: spec.prompt.clone(),
            negative_prompt: spec.negative_prompt.clone(),
            duration_seconds: spec.duration_seconds,
            aspect_ratio: spec.aspect_ratio.clone(),
            resolution: spec.resolution.clone(),
            seed: spec.seed,
            image,
        };
        // After a crash, ask before submitting again. The job cannot predate its request.
        let lookup = if resuming {
            provider.find(&job, requested_at).await
        } else {
            Ok(Lookup::NotSubmitted)
        };
        let submitted = match lookup {
            Ok(Lookup::Found(job_id)) => Ok(job_id),
            Ok(Lookup::NotSubmitted) => self.submit(provider.as_ref(), &job, requested_at).await,
            Ok(Lookup::Unknown) => Err(submission_unknown()),
            Err(failure) => Err(failure),
        };
        let command = match submitted {
            Ok(provider_job_id) => {
                self.health.record_success(provider.kind()).await?;
                VideoCommand::MarkSubmitted { provider_job_id }
            }
            Err(failure) => {
                self.health
                    .record_failure(provider.kind(), &failure)
                    .await?;
                self.after_failure(&video, &spec, provider.kind(), attempt, failure)
            }
        };
        self.store
            .videos()
            .execute(&aggregate, command, meta)
            .await?;
        Ok(())
    }

    /// Submits; a timeout leaves the outcome unknown, so the provider is asked before
    /// anything else happens.
    async fn submit(
        &self,
        provider: &dyn VideoProvider,
        job: &Job,
        requested_at: DateTime<Utc>,
    ) -> Result<String, ProviderFailure> {
        match provider.submit(job).await {
            Err(failure) if failure.code == codes::UPSTREAM_TIMEOUT => {
                match provider.find(job, requested_at).await {
                    Ok(Lookup::Found(job_id)) => Ok(job_id),
                    Ok(Lookup::NotSubmitted) => Err(failure),
                    Ok(Lookup::Unknown) | Err(_) => Err(submission_unknown()),
                }
            }
            other => other,
        }
    }

    /// What a failed submission leads to: another attempt (here or at the next provider)
    /// or the end of the video.
    fn after_failure(
        &self,
        video: &Video,
        spec: &VideoSpec,
        provider: ProviderKind,
        attempt: u32,
        failure: ProviderFailure,
    ) -> VideoCommand {
        let final_everywhere = matches!(
            failure.code.as_str(),
            codes::MODERATED | codes::SUBMISSION_UNKNOWN
        ) || failure.charged;
        let mut failed = video.failed_attempts().to_vec();
        failed.push(FailedAttempt {
            attempt,
            provider,
            code: failure.code.clone(),
        });
        let others = self.candidates(spec, &failed);
        let fallback = spec.provider.pinned().is_none()
            && others.iter().any(|(quote, _)| quote.provider != provider);
        let retry_here = failure.retryable && others.iter().any(|(q, _)| q.provider == provider);
        if final_everywhere || attempt >= MAX_ATTEMPTS || !(fallback || retry_here) {
            return fail_command(&failure);
        }
        // A provider never tried yet goes at once; a retry waits, at least as asked.
        let next_is_fresh = others
            .first()
            .is_some_and(|(q, _)| !failed.iter().any(|f| f.provider == q.provider));
        let wait = if next_is_fresh {
            Duration::ZERO
        } else {
            submission_backoff(attempt).max(failure.retry_after.unwrap_or_default())
        };
        VideoCommand::RecordSubmissionFailure {
            code: failure.code,
            message: failure.message,
            retry_at: Utc::now() + chrono::Duration::from_std(wait).unwrap_or_default(),
        }
    }

    /// The configured providers that can take `spec` within its reservation, best first:
    /// fewest failed attempts for this video, then the routing policy. Providers that
    /// refused it for good, or failed it too often, are left out.
    fn candidates(&self, spec: &VideoSpec, failed: &[FailedAttempt]) -> Vec<(Quote, usize)> {
        let enabled: Vec<ProviderKind> = match spec.provider.pinned() {
            Some(pinned) => vec![pinned],
            None => self.providers.keys().copied().collect(),
        };
        let request = QuoteRequest {
            provider: ProviderKind::Simulator,
            model: spec.model.as_deref(),
            duration_seconds: spec.duration_seconds,
            aspect_ratio: &spec.aspect_ratio,
            resolution: &spec.resolution,
            with_image: spec.image_id.is_some(),
        };
        let ranked = routing::rank(
            &self.routing.catalog,
            &self.routing.policy,
            &enabled,
            &request,
        )
        .unwrap_or_default();
        let mut candidates: Vec<(Quote, usize)> = ranked
            .into_iter()
            // The reservation was made for the estimate: never fall back to a dearer provider.
            .filter(|quote| quote.cost <= spec.estimated_cost)
            .filter_map(|quote| {
                let mine: Vec<&FailedAttempt> = failed
                    .iter()
                    .filter(|f| f.provider == quote.provider)
                    .collect();
                let refused = mine.iter().any(|f| !is_retryable_code(&f.code));
                (!refused && mine.len() < MAX_ATTEMPTS_PER_PROVIDER).then_some((quote, mine.len()))
            })
            .collect();
        // Stable: equal failure counts keep the policy's order.
        candidates.sort_by_key(|(_, failures)| *failures);
        candidates
    }

    /// The provider to try next, skipping unhealthy ones and those at their limit.
    async fn choose(&self, video: &Video, spec: &VideoSpec) -> Result<Choice, BoxError> {
        let candidates = self.candidates(spec, video.failed_attempts());
        if candidates.is_empty() {
            let tried = video.failed_attempts().last();
            return Ok(Choice::Nobody(match tried {
                Some(last) => ProviderFailure::new(
                    &last.code,
                    "no provider could take this video",
                    is_retryable_code(&last.code),
                    false,
                ),
                None => ProviderFailure::new(
                    "provider_unavailable",
                    "no configured provider can take this video",
                    true,
                    false,
                ),
            }));
        }
        for (quote, _) in candidates {
            if self.health.is_open(quote.provider).await? {
                continue;
            }
            if let Some(limit) = self.routing.limits.max_in_flight.get(&quote.provider) {
                if videos::count_in_flight(&self.pool, quote.provider.as_str()).await? >= *limit {
                    continue;
                }
            }
            let Some(provider) = self.providers.get(&quote.provider) else {
                continue;
            };
            // Checked last: a permit taken here is a submission about to happen.
            if let Some(limiter) = self.limiters.get(&quote.provider) {
                if limiter.check().is_err() {
                    continue;
                }
            }
            return Ok(Choice::Provider(provider.clone(), quote.model));
        }
        Ok(Choice::Wait)
    }

    /// The start image of an image-to-video request, re-encoded for the provider. The outer
    /// error is ours (storage down: retry the event); the inner one fails the video.
    async fn start_image(
        &self,
        owner: UserId,
        image_id: ImageId,
    ) -> Result<Result<JobImage, ProviderFailure>, BoxError> {
        let unavailable = || {
            Ok(Err(ProviderFailure::new(
                "image_unavailable",
                format!("image {image_id} was deleted or is not available"),
                false,
                false,
            )))
        };
        let image = self.store.images().load(&image_id.to_string()).await?;
        let key = match image.upload() {
            Some(upload) if image.is_available() && image.owner() == Some(owner) => {
                BlobKey::new(upload.blob_key.clone())?
            }
            _ => return unavailable(),
        };
        let original = match self.blobs.get(&key).await {
            Ok(bytes) => bytes,
            Err(BlobError::NotFound(_)) => return unavailable(),
            Err(error) => return Err(error.into()),
        };
        let prepared = tokio::task::spawn_blocking(move || prepare_start_image(&original)).await?;
        Ok(prepared
            .map(|image| JobImage {
                bytes: image.bytes.into(),
                content_type: image.content_type.to_owned(),
            })
            .map_err(|error| {
                ProviderFailure::new("invalid_image", error.to_string(), false, false)
            }))
    }
}

/// Whether a failure code may go away on its own (so the provider may be tried again).
/// Runs `work` holding the session advisory lock `key`; `Ok(None)` at once, without running
/// it, when another session holds the lock. A session lock (not a transaction's) because the
/// work spans provider calls and several commands; a crashed worker's session ends and
/// releases it.
async fn exclusively<T>(
    pool: &PgPool,
    key: &str,
    work: impl std::future::Future<Output = Result<T, BoxError>>,
) -> Result<Option<T>, BoxError> {
    let mut lock = pool.acquire().await?;
    let locked: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock(hashtextextended($1, 0))")
        .bind(key)
        .fetch_one(&mut *lock)
        .await?;
    if !locked {
        return Ok(None);
    }
    let result = work.await;
    let unlocked = sqlx::query("SELECT pg_advisory_unlock(hashtextextended($1, 0))")
        .bind(key)
        .execute(&mut *lock)
        .await;
    if unlocked.is_err() {
        // Never hand a connection that may still hold the lock back to the pool.
        lock.close_on_drop();
    }
    result.map(Some)
}

fn is_retryable_code(code: &str) -> bool {
    matches!(
        code,
        codes::UPSTREAM_UNAVAILABLE | codes::UPSTREAM_TIMEOUT | codes::RATE_LIMITED
    )
}

/// Jittered exponential backoff before submission attempt `attempt + 1`: 2 s, 4 s, 8 s...
/// capped at five minutes.
fn submission_backoff(attempt: u32) -> Duration {
    let base =
        Duration::from_secs(2u64.saturating_pow(attempt.min(8))).min(Duration::from_secs(300));
    let jitter = rand::random::<f64>() * 0.25;
    base.mul_f64(1.0 + jitter)
}

fn submission_unknown() -> ProviderFailure {
    ProviderFailure::new(
        codes::SUBMISSION_UNKNOWN,
        "the submission's outcome is unknown and the provider cannot be asked whether it \
         accepted the job; request the video again",
        true,
        false,
    )
}

#[async_trait]
impl EventHandler for Dispatcher {
    async fn handle(&self, _conn: &mut PgConnection, event: &StoredEvent) -> Result<(), BoxError> {
        if event.aggregate_type != Video::TYPE || event.event_type != "VideoRequested" {
            return Ok(());
        }
        let video_id: VideoId = event.aggregate_id.parse()?;
        let meta = self.caused_by(event.meta("correlation_id"), event.event_id);
        self.dispatch(video_id, event.recorded_at, &meta).await
    }
}

/// How often one job may be polled at each provider. Real providers take minutes and count
/// every call against rate limits; a provider's own hint (`poll_after`, e.g. OpenAI's
/// `openai-poll-after-ms`) stretches the interval further. The simulator is polled freely.
#[derive(Debug)]
pub struct PollPacing {
    next: std::sync::Mutex<HashMap<Uuid, std::time::Instant>>,
    /// Least time between two polls of one job at a real provider.
    pub provider_interval: Duration,
}

impl Default for PollPacing {
    fn default() -> Self {
        Self::new(Duration::from_secs(5))
    }
}

impl PollPacing {
    pub fn new(provider_interval: Duration) -> Self {
        Self {
            next: std::sync::Mutex::default(),
            provider_interval,
        }
    }

    /// The least time between two polls of one job at `provider`.
    pub fn interval(&self, provider: ProviderKind) -> Duration {
        match provider {
            ProviderKind::Simulator => Duration::ZERO,
            ProviderKind::Veo | ProviderKind::Sora | ProviderKind::Kling => self.provider_interval,
        }
    }

    fn due(&self, video: Uuid) -> bool {
        let next = self
            .next
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        next.get(&video)
            .is_none_or(|at| *at <= std::time::Instant::now())
    }

    fn polled(&self, video: Uuid, wait: Duration) {
        let mut next = self
            .next
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if wait.is_zero() {
            next.remove(&video);
        } else {
            next.insert(video, std::time::Instant::now() + wait);
        }
    }

    fn forget(&self, video: Uuid) {
        self.polled(video, Duration::ZERO);
    }

    /// Drops the waits that have run out: jobs that finished, were cancelled or expired never
    /// come back to `due`, and their entries would otherwise stay for the process's life.
    fn prune(&self) {
        let now = std::time::Instant::now();
        let mut next = self
            .next
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        next.retain(|_, at| *at > now);
    }
}

/// How long a job that was just finished is left alone by the poller.
const FINISHED_PAUSE: Duration = Duration::from_secs(10);

/// Follows jobs in flight.
pub struct Poller {
    pub store: EventStore,
    pub pool: PgPool,
    pub providers: Providers,
    pub blobs: Blobs,
    pub tools: MediaTools,
    /// A job still unfinished this long after its request fails with `deadline_exceeded`.
    pub max_job_time: Duration,
    pub pacing: PollPacing,
}

impl Poller {
    /// Polls every job in flight once; returns how many it looked at.
    pub async fn sweep(&self) -> Result<usize, BoxError> {
        self.pacing.prune();
        let rows = videos::in_flight(&self.pool, 200).await?;
        for row in &rows {
            // With several workers every poller sees every job; one follows it at a time.
            let key = format!("framegate.follow:{}", row.id);
            if let Err(error) = exclusively(&self.pool, &key, self.follow(row)).await {
                warn!(video = %row.id, %error, "could not follow a video");
            }
        }
        Ok(rows.len())
    }

    /// Sweeps every `interval` until `shutdown` flips.
    pub async fn run(&self, interval: Duration, mut shutdown: tokio::sync::watch::Receiver<bool>) {
        loop {
            if let Err(error) = self.sweep().await {
                warn!(%error, "poller sweep failed");
            }
            tokio::select! {
                () = tokio::time::sleep(interval) => {}
                _ = shutdown.wait_for(|stop| *stop) => return,
            }
        }
    }

    async fn follow(&self, row: &VideoRow) -> Result<(), BoxError> {
        let id = row.id.to_string();
        let meta = CommandMetadata::new_request(Actor::System);
        let provider = row
            .provider
            .as_deref()
            .and_then(|p| p.parse::<ProviderKind>().ok())
            .and_then(|kind| self.providers.get(&kind).cloned());
        let job_id = row.provider_job_id.clone();
        if row.status == "cancel_requested" {
            if let (Some(provider), Some(job_id)) = (&provider, &job_id) {
                provider.cancel(job_id).await.ok();
            }
            self.store
                .videos()
                .execute(&id, VideoCommand::Cancel, &meta)
                .await?;
            return Ok(());
        }
        let deadline =
            row.created_at + chrono::Duration::from_std(self.max_job_time).unwrap_or_default();
        if Utc::now() > deadline {
            if let (Some(provider), Some(job_id)) = (&provider, &job_id) {
                provider.cancel(job_id).await.ok();
            }
            let fail = fail_command(&ProviderFailure::new(
                "deadline_exceeded",
                "the job did not finish in time",
                true,
                false,
            ));
            self.store.videos().execute(&id, fail, &meta).await?;
            return Ok(());
        }
        let (Some(provider), Some(job_id)) = (provider, job_id) else {
            return Ok(()); // Not submitted yet: the dispatcher's turn.
        };
        if !self.pacing.due(row.id) {
            return Ok(());
        }
        let polled = provider.poll(&job_id).await;
        let hint = match &polled {
            Err(failure) => failure.retry_after,
            Ok(_) => provider.poll_after(&job_id),
        };
        let wait = self
            .pacing
            .interval(provider.kind())
            .max(hint.unwrap_or_default());
        match &polled {
            Ok(JobState::Queued | JobState::Running { .. })
            | Err(ProviderFailure {
                retryable: true, ..
            }) => self.pacing.polled(row.id, wait),
            // Finishing records the result; until the read model shows it, this row still
            // looks in flight, and must not be fetched again.
            Ok(JobState::Succeeded) => self.pacing.polled(row.id, FINISHED_PAUSE.max(wait)),
            _ => self.pacing.forget(row.id),
        }
        match polled {
            Ok(JobState::Queued) => {}
            Ok(JobState::Running { progress })
                if i16::from(progress) > row.progress || row.status == "submitted" =>
            {
                self.store
                    .videos()
                    .execute(
                        &id,
                        VideoCommand::RecordProgress { percent: progress },
                        &meta,
                    )
                    .await?;
            }
            Ok(JobState::Running { .. }) => {}
            Ok(JobState::Succeeded) => self.finish(row, provider.as_ref(), &job_id, &meta).await?,
            Ok(JobState::Failed(failure)) => {
                self.store
                    .videos()
                    .execute(&id, fail_command(&failure), &meta)
                    .await?;
            }
            Err(failure) if failure.retryable => {
                warn!(video = %row.id, %failure, "poll failed; will retry")
            }
            Err(failure) => {
                self.store
                    .videos()
                    .execute(&id, fail_command(&failure), &meta)
                    .await?;
            }
        }
        Ok(())
    }

    /// Downloads, validates and stores the result, then records completion.
    async fn finish(
        &self,
        row: &VideoRow,
        provider: &dyn VideoProvider,
        job_id: &str,
        meta: &CommandMetadata,
    ) -> Result<(), BoxError> {
        let id = row.id.to_string();
        // The read model may lag: the aggregate says whether this was already done.
        let status = self.store.videos().load(&id).await?.status();
        match status {
            Some(status) if status.is_terminal() => return Ok(()),
            Some(VideoStatus::Stored) => return self.complete(row, meta).await,
            _ => {}
        }
        let dir = tempfile::tempdir()?;
        let video_path = dir.path().join("video.mp4");
        if let Err(failure) = provider.fetch(job_id, &video_path).await {
            if !failure.retryable {
                self.store
                    .videos()
                    .execute(&id, fail_command(&failure), meta)
                    .await?;
            }
            return Ok(());
        }
        let expectation = Expectation::duration(row.duration_seconds as u32, 1_000);
        let report = match validate_video(&self.tools, &video_path, &expectation).await {
            Ok(report) => report,
            Err(error) => {
                let failure =
                    ProviderFailure::new("invalid_output", error.to_string(), true, false);
                self.store
                    .videos()
                    .execute(&id, fail_command(&failure), meta)
                    .await?;
                return Ok(());
            }
        };
        if matches!(status, Some(VideoStatus::Submitted | VideoStatus::Running)) {
            self.store
                .videos()
                .execute(&id, VideoCommand::MarkGenerated, meta)
                .await?;
        }
        let keys = video_keys(VideoId::from_uuid(row.id))?;
        self.blobs
            .put_file(&keys.video, &video_path, "video/mp4")
            .await?;
        let poster = dir.path().join("poster.jpg");
        extract_poster(&self.tools, &video_path, 0.5, &poster).await?;
        self.blobs
            .put_file(&keys.poster, &poster, "image/jpeg")
            .await?;
        let thumbnail = dir.path().join("thumbnail.jpg");
        make_thumbnail(&self.tools, &video_path, 320, &thumbnail).await?;
        self.blobs
            .put_file(&keys.thumbnail, &thumbnail, "image/jpeg")
            .await?;
        let stored = VideoCommand::RecordStored {
            blob_key: keys.video.to_string(),
            bytes: report.bytes,
            sha256: report.sha256.clone(),
            duration_ms: report.duration_ms,
            width: report.width,
            height: report.height,
        };
        self.store.videos().execute(&id, stored, meta).await?;
        info!(video = %row.id, bytes = report.bytes, "video stored");
        self.complete(row, meta).await
    }

    /// Records completion of a stored video at its estimated cost.
    async fn complete(&self, row: &VideoRow, meta: &CommandMetadata) -> Result<(), BoxError> {
        let complete = VideoCommand::Complete {
            final_cost: framegate_domain::Credits::new(row.estimated_cost),
        };
        self.store
            .videos()
            .execute(&row.id.to_string(), complete, meta)
            .await?;
        info!(video = %row.id, "video completed");
        Ok(())
    }
}

fn fail_command(failure: &ProviderFailure) -> VideoCommand {
    VideoCommand::Fail {
        code: failure.code.clone(),
        message: failure.message.clone(),
        retryable: failure.retryable,
        charged: failure.charged,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pacing_forgets_waits_that_have_run_out() {
        let pacing = PollPacing::new(Duration::from_secs(5));
        let (waiting, finished) = (Uuid::now_v7(), Uuid::now_v7());
        pacing.polled(waiting, Duration::from_secs(60));
        pacing.polled(finished, Duration::from_millis(1));
        std::thread::sleep(Duration::from_millis(5));
        pacing.prune();
        let next = pacing.next.lock().expect("lock");
        assert!(next.contains_key(&waiting));
        assert!(!next.contains_key(&finished), "a run-out wait is dropped");
        drop(next);
        assert!(!pacing.due(waiting));
        assert!(pacing.due(finished));
    }
}
