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
use chrono::Utc;
use cqrs_es::Aggregate as _;
use framegate_commands::blobs::{video_keys, BlobError, BlobKey, Blobs};
use framegate_commands::{Actor, CommandMetadata, EventStore};
use framegate_domain::{ImageId, ProviderKind, UserId, Video, VideoCommand, VideoId, VideoStatus};
use framegate_projections::read_models::videos::{self, VideoRow};
use framegate_projections::subscription::BoxError;
use framegate_projections::{EventHandler, StoredEvent};
use sqlx::{PgConnection, PgPool};
use tracing::{info, warn};
use uuid::Uuid;

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

pub struct Dispatcher {
    store: EventStore,
    providers: Providers,
    blobs: Blobs,
}

impl Dispatcher {
    pub fn new(store: EventStore, providers: Providers, blobs: Blobs) -> Self {
        Self {
            store,
            providers,
            blobs,
        }
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

#[async_trait]
impl EventHandler for Dispatcher {
    async fn handle(&self, _conn: &mut PgConnection, event: &StoredEvent) -> Result<(), BoxError> {
        if event.aggregate_type != Video::TYPE || event.event_type != "VideoRequested" {
            return Ok(());
        }
        let video_id: VideoId = event.aggregate_id.parse()?;
        let meta = system(event.meta("correlation_id"), event.event_id);
        let video = self.store.videos().load(&event.aggregate_id).await?;
        let Some(spec) = video.spec().cloned() else {
            return Ok(());
        };
        let attempt = match video.status() {
            Some(VideoStatus::Queued) => None,
            // Crashed between recording the intent and recording the job: resolve below.
            Some(VideoStatus::Submitting) => Some(video.attempt()),
            _ => return Ok(()),
        };
        let provider = spec
            .provider
            .pinned()
            .or_else(|| self.providers.keys().min().copied())
            .and_then(|kind| self.providers.get(&kind).cloned());
        let Some(provider) = provider else {
            let fail = VideoCommand::Fail {
                code: "provider_unavailable".into(),
                message: "no configured provider can take this video".into(),
                retryable: true,
                charged: false,
            };
            self.store
                .videos()
                .execute(&event.aggregate_id, fail, &meta)
                .await?;
            return Ok(());
        };
        let image = match spec.image_id {
            None => None,
            Some(image_id) => match self.start_image(spec.owner, image_id).await? {
                Ok(image) => Some(image),
                Err(failure) => {
                    self.store
                        .videos()
                        .execute(&event.aggregate_id, fail_command(&failure), &meta)
                        .await?;
                    return Ok(());
                }
            },
        };
        let model = spec.model.clone().unwrap_or_default();
        if attempt.is_none() {
            let intent = VideoCommand::StartSubmission {
                attempt: 1,
                provider: provider.kind(),
                model: model.clone(),
            };
            self.store
                .videos()
                .execute(&event.aggregate_id, intent, &meta)
                .await?;
        }
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
        // After a crash between intent and record, ask before submitting again. The job
        // cannot predate its request, so the request's time bounds the search.
        let lookup = match attempt {
            Some(_) => provider.find(&job, event.recorded_at).await,
            None => Ok(Lookup::NotSubmitted),
        };
        let submitted = match lookup {
            Ok(Lookup::Found(job_id)) => Ok(job_id),
            Ok(Lookup::NotSubmitted) => provider.submit(&job).await,
            Ok(Lookup::Unknown) => Err(ProviderFailure::new(
                codes::SUBMISSION_UNKNOWN,
                "the worker stopped while submitting and the provider cannot be asked whether \
                 it accepted the job; request the video again",
                true,
                false,
            )),
            Err(failure) => Err(failure),
        };
        let command = match submitted {
            Ok(provider_job_id) => VideoCommand::MarkSubmitted { provider_job_id },
            Err(failure) => VideoCommand::Fail {
                code: failure.code,
                message: failure.message,
                retryable: failure.retryable,
                charged: failure.charged,
            },
        };
        self.store
            .videos()
            .execute(&event.aggregate_id, command, &meta)
            .await?;
        Ok(())
    }
}

/// Follows jobs in flight.
pub struct Poller {
    pub store: EventStore,
    pub pool: PgPool,
    pub providers: Providers,
    pub blobs: Blobs,
    pub tools: MediaTools,
    /// A job still unfinished this long after its request fails with `deadline_exceeded`.
    pub max_job_time: Duration,
}

impl Poller {
    /// Polls every job in flight once; returns how many it looked at.
    pub async fn sweep(&self) -> Result<usize, BoxError> {
        let rows = videos::in_flight(&self.pool, 200).await?;
        for row in &rows {
            if let Err(error) = self.follow(row).await {
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
        match provider.poll(&job_id).await {
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
        if matches!(row.status.as_str(), "submitted" | "running") {
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
        if row.status != "stored" {
            self.store.videos().execute(&id, stored, meta).await?;
        }
        let complete = VideoCommand::Complete {
            final_cost: framegate_domain::Credits::new(row.estimated_cost),
        };
        self.store.videos().execute(&id, complete, meta).await?;
        info!(video = %row.id, bytes = report.bytes, "video completed");
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
