//! The dispatcher: submits requested videos, resolves submissions a crash interrupted, and
//! decides what a failed submission leads to.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use cqrs_es::Aggregate;
use framegate_commands::blobs::{BlobError, BlobKey, Blobs};
use framegate_commands::trace_context::{self, TraceContext};
use framegate_commands::{Actor, CommandError, CommandMetadata, EventStore};
use framegate_domain::catalog::{Quote, QuoteRequest};
use framegate_domain::{retry, routing};
use framegate_domain::{
    FailedAttempt, ImageId, ProviderKind, UserId, Video, VideoCommand, VideoEvent, VideoId,
    VideoSpec, VideoStatus,
};
use framegate_projections::read_models::videos;
use framegate_projections::subscription::BoxError;
use framegate_projections::{EventHandler, StoredEvent};
use sqlx::{PgConnection, PgPool};
use tracing::field::Empty;
use tracing::{debug, info_span, warn, Instrument as _};
use uuid::Uuid;

use super::limits::{submission_limiters, SubmissionLimiter};
use super::{
    exclusively, fail_command, provider_span, system, worker_instance, Providers, Routing,
};
use crate::health::ProviderHealth;
use crate::media::prepare_start_image;
use crate::provider::{codes, Job, JobImage, Lookup, ProviderFailure, VideoProvider};

pub use framegate_domain::retry::MAX_ATTEMPTS;

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

/// How a dispatch step ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Dispatched {
    Done,
    /// Built from a stale state, its first command was refused: dispatch from the stream.
    MovedOn,
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
            let video = VideoId::from_uuid(row.id);
            let trace = super::request_trace(&self.pool, row.id).await;
            let dispatched = async {
                let meta = CommandMetadata::new_request(Actor::System)
                    .with_client(None, Some(self.instance.clone()));
                self.dispatch(video, row.created_at, &meta).await
            }
            .instrument(dispatch_span(video, trace.as_ref()))
            .await;
            if let Err(error) = dispatched {
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
        self.dispatch_from(video_id, requested_at, meta, None).await
    }

    /// `dispatch`, with the video's state taken from `requested` (its `VideoRequested`)
    /// when given instead of loaded from its stream.
    async fn dispatch_from(
        &self,
        video_id: VideoId,
        requested_at: DateTime<Utc>,
        meta: &CommandMetadata,
        requested: Option<VideoEvent>,
    ) -> Result<(), BoxError> {
        let key = format!("framegate.dispatch:{video_id}");
        exclusively(
            &self.pool,
            &key,
            self.dispatch_locked(video_id, requested_at, meta, requested),
        )
        .await
        .map(|_| ())
    }

    async fn dispatch_locked(
        &self,
        video_id: VideoId,
        requested_at: DateTime<Utc>,
        meta: &CommandMetadata,
        requested: Option<VideoEvent>,
    ) -> Result<(), BoxError> {
        // A video just requested is what its request says: queued, never attempted. Built
        // from the event, it costs no read of the stream. If the video has moved on since (a
        // sweep took it, it was cancelled, a crash left its submission open), the aggregate
        // refuses the first command, and the video is dispatched from its stream instead.
        if let Some(event) = requested {
            let mut video = Video::default();
            video.apply(event);
            let fresh = self
                .dispatch_video(video_id, &video, true, requested_at, meta)
                .await?;
            if fresh == Dispatched::Done {
                return Ok(());
            }
        }
        let video = self.store.videos().load(&video_id.to_string()).await?;
        self.dispatch_video(video_id, &video, false, requested_at, meta)
            .await
            .map(|_| ())
    }

    /// One dispatch step for `video`, in the state given. `fresh`: built from its request
    /// alone, so a refused first command means only that the state was stale.
    async fn dispatch_video(
        &self,
        video_id: VideoId,
        video: &Video,
        fresh: bool,
        requested_at: DateTime<Utc>,
        meta: &CommandMetadata,
    ) -> Result<Dispatched, BoxError> {
        let aggregate = video_id.to_string();
        let Some(spec) = video.spec().cloned() else {
            return Ok(Dispatched::Done);
        };
        let resuming = match video.status() {
            Some(VideoStatus::Queued) => {
                if video.retry_at().is_some_and(|at| at > Utc::now()) {
                    return Ok(Dispatched::Done);
                }
                false
            }
            // Crashed between recording the intent and recording the job: resolve below.
            Some(VideoStatus::Submitting) => true,
            // Cancelled while a submission was open that nobody is finishing (its worker
            // died): find out whether the provider took the job; never submit it now.
            Some(VideoStatus::CancelRequested) if video.submission_open() => true,
            _ => return Ok(Dispatched::Done),
        };
        let image = match spec.image_id {
            None => None,
            Some(image_id) => match self.start_image(spec.owner, image_id).await? {
                Ok(image) => Some(image),
                // Failing is decided on the stream only: `Fail` is accepted in any live
                // status, so from a stale state it could end a job a provider holds.
                Err(_) if fresh => return Ok(Dispatched::MovedOn),
                Err(failure) => {
                    return self
                        .before_submission(&aggregate, fail_command(&failure), meta, fresh)
                        .await;
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
                return Ok(Dispatched::Done);
            };
            let model = video.model().unwrap_or_default().to_owned();
            (provider, model, video.attempt())
        } else {
            match self.choose(video, &spec).await? {
                Choice::Wait => return Ok(Dispatched::Done),
                Choice::Nobody(_) if fresh => return Ok(Dispatched::MovedOn),
                Choice::Nobody(failure) => {
                    return self
                        .before_submission(&aggregate, fail_command(&failure), meta, fresh)
                        .await;
                }
                Choice::Provider(provider, model) => {
                    let attempt = video.attempt() + 1;
                    let intent = VideoCommand::StartSubmission {
                        attempt,
                        provider: provider.kind(),
                        model: model.clone(),
                    };
                    if self
                        .before_submission(&aggregate, intent, meta, fresh)
                        .await?
                        == Dispatched::MovedOn
                    {
                        return Ok(Dispatched::MovedOn);
                    }
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
            provider
                .find(&job, requested_at)
                .instrument(provider_span("provider.find", provider.kind()))
                .await
        } else {
            Ok(Lookup::NotSubmitted)
        };
        let cancelled = video.status() == Some(VideoStatus::CancelRequested);
        let submitted = match lookup {
            Ok(Lookup::Found(job_id)) => Ok(job_id),
            Ok(Lookup::NotSubmitted | Lookup::Unknown) if cancelled => {
                // The video ends cancelled and free (the aggregate turns this into
                // `VideoCancelled`): nothing is known to run at the provider.
                let command = VideoCommand::RecordSubmissionFailure {
                    code: "cancelled".to_owned(),
                    message: "cancelled before the provider took the job".to_owned(),
                    retry_at: Utc::now(),
                };
                self.store
                    .videos()
                    .execute(&aggregate, command, meta)
                    .await?;
                return Ok(Dispatched::Done);
            }
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
                self.after_failure(video, &spec, provider.kind(), attempt, failure)
            }
        };
        self.store
            .videos()
            .execute(&aggregate, command, meta)
            .await?;
        Ok(Dispatched::Done)
    }

    /// Records a command issued before anything was submitted: `MovedOn` when a `fresh`
    /// dispatch (built from the request alone) finds the video moved on and the aggregate
    /// refuses it. Nothing is at the provider yet, so nothing is lost. Only `StartSubmission`
    /// comes here fresh: it is refused unless the video is queued at its first attempt.
    async fn before_submission(
        &self,
        aggregate: &str,
        command: VideoCommand,
        meta: &CommandMetadata,
        fresh: bool,
    ) -> Result<Dispatched, BoxError> {
        match self.store.videos().execute(aggregate, command, meta).await {
            Ok(_) => Ok(Dispatched::Done),
            Err(CommandError::Domain(refusal)) if fresh => {
                debug!(video = aggregate, %refusal, "the video moved on since its request");
                Ok(Dispatched::MovedOn)
            }
            Err(error) => Err(error.into()),
        }
    }

    /// Submits; a timeout leaves the outcome unknown, so the provider is asked before
    /// anything else happens.
    async fn submit(
        &self,
        provider: &dyn VideoProvider,
        job: &Job,
        requested_at: DateTime<Utc>,
    ) -> Result<String, ProviderFailure> {
        let submitted = provider
            .submit(job)
            .instrument(provider_span("provider.submit", provider.kind()))
            .await;
        match submitted {
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

    /// What a failed submission leads to (the policy is `framegate_domain::retry`): another
    /// attempt (here or at the next provider) or the end of the video.
    fn after_failure(
        &self,
        video: &Video,
        spec: &VideoSpec,
        provider: ProviderKind,
        attempt: u32,
        failure: ProviderFailure,
    ) -> VideoCommand {
        let mut failed = video.failed_attempts().to_vec();
        failed.push(FailedAttempt {
            attempt,
            provider,
            code: failure.code.clone(),
        });
        let candidates = self.candidates(spec, &failed);
        let seen = retry::Failure {
            provider,
            attempt,
            code: &failure.code,
            retryable: failure.retryable,
            charged: failure.charged,
            retry_after: failure.retry_after,
        };
        let pinned = spec.provider.pinned().is_some();
        // The provider's own words go to the log and the events (audit, admin view); users
        // see a message of ours for the code (`framegate_domain::public_message`).
        warn!(%provider, attempt, code = %failure.code, message = %failure.message, "submission failed");
        match retry::after_failure(&seen, pinned, &failed, &candidates, rand::random::<f64>()) {
            retry::Next::Fail => fail_command(&failure),
            retry::Next::Retry { wait } => VideoCommand::RecordSubmissionFailure {
                code: failure.code,
                message: failure.message,
                retry_at: Utc::now() + chrono::Duration::from_std(wait).unwrap_or_default(),
            },
        }
    }

    /// The configured providers that can take `spec` within its reservation, best first:
    /// fewest failed attempts for this video, then the routing policy. Providers that
    /// refused it for good, or failed it too often, are left out.
    fn candidates(&self, spec: &VideoSpec, failed: &[FailedAttempt]) -> Vec<(Quote, usize)> {
        let mut enabled: Vec<ProviderKind> = match spec.provider.pinned() {
            Some(pinned) => vec![pinned],
            None => self.providers.keys().copied().collect(),
        };
        // A video asked for with sound never falls back to a provider that makes none.
        if spec.generate_audio {
            enabled.retain(|provider| provider.makes_audio());
        }
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
        retry::eligible(ranked, spec.estimated_cost, failed)
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
                    retry::is_retryable_code(&last.code),
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
        let requested: VideoEvent = event.decode()?;
        // A child of the request: the submission's events carry its trace on.
        let span = dispatch_span(video_id, event.trace_context().as_ref());
        async {
            let meta = self.caused_by(event.meta("correlation_id"), event.event_id);
            self.dispatch_from(video_id, event.recorded_at, &meta, Some(requested))
                .await
        }
        .instrument(span)
        .await
    }
}

/// The span of one dispatch of `video`, continuing `trace` (the video's request) if given.
pub(crate) fn dispatch_span(video: VideoId, trace: Option<&TraceContext>) -> tracing::Span {
    trace_context::continued(
        info_span!("dispatcher.dispatch", video = %video, trace_id = Empty),
        trace,
    )
}
