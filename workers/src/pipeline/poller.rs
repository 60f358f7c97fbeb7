//! The poller: follows jobs in flight at their providers (progress, cancellation,
//! deadlines) and hands finished ones to finishing.

use std::time::Duration;

use chrono::Utc;
use cqrs_es::Aggregate as _;
use framegate_commands::blobs::Blobs;
use framegate_commands::{trace_context, Actor, CommandMetadata, EventStore};
use framegate_domain::catalog::{CancelPolicy, Catalog};
use framegate_domain::{ProviderKind, Video, VideoCommand, VideoId, VideoStatus};
use framegate_projections::notify::{Event, Notifications};
use framegate_projections::read_models::videos::{self, VideoRow};
use framegate_projections::subscription::{BoxError, NOTIFY_CHANNEL};
use sqlx::PgPool;
use tracing::field::Empty;
use tracing::{info_span, warn, Instrument as _};
use uuid::Uuid;

use super::{exclusively, fail_command, provider_span, schedule, system, Providers};
use crate::media::MediaTools;
use crate::provider::{Cancellation, JobState, ProviderFailure};

/// How often one job may be polled at each provider. Real providers take minutes and count
/// every call against rate limits; a provider's own hint (`poll_after`, e.g. OpenAI's
/// `openai-poll-after-ms`) stretches the interval further. The simulator is polled freely.
/// When each job is due again is kept in `poll_schedule` (`schedule`), shared by every worker.
#[derive(Debug, Clone, Copy)]
pub struct PollPacing {
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
        Self { provider_interval }
    }

    /// The least time between two polls of one job at `provider`.
    pub fn interval(&self, provider: ProviderKind) -> Duration {
        match provider {
            ProviderKind::Simulator => Duration::ZERO,
            ProviderKind::Veo | ProviderKind::Sora | ProviderKind::Kling => self.provider_interval,
        }
    }
}

/// The least time between two tries to cancel a job at a provider that failed to.
const CANCEL_RETRY: Duration = Duration::from_secs(1);

/// How long a job whose provider is not configured here is left alone.
const UNCONFIGURED_PAUSE: Duration = Duration::from_secs(30);

/// How often the schedule rows of finished jobs are dropped.
const PRUNE_EVERY: Duration = Duration::from_secs(30);

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
    /// Its `cancel_after_acceptance` says who pays for a cancelled job its provider could
    /// not stop.
    pub catalog: Catalog,
    pub pacing: PollPacing,
}

impl Poller {
    /// Polls every job a provider holds that is due, soonest due first, and fails waiting
    /// jobs past their deadline; returns how many it looked at. Queued jobs are the
    /// dispatcher's: however many wait, they never crowd out the ones in flight.
    pub async fn sweep(&self) -> Result<usize, BoxError> {
        let mut rows = schedule::due(&self.pool, 1000, self.max_job_time).await?;
        rows.extend(videos::overdue_waiting(&self.pool, self.max_job_time, 100).await?);
        for row in &rows {
            // With several workers every poller sees every job; one follows it at a time.
            let key = format!("framegate.follow:{}", row.id);
            // In the video's trace: its polls, its result's download and its completion.
            let trace = super::request_trace(&self.pool, row.id).await;
            let span = trace_context::continued(
                info_span!("poller.follow", video = %row.id, trace_id = Empty),
                trace.as_ref(),
            );
            let followed = exclusively(&self.pool, &key, self.follow(row))
                .instrument(span)
                .await;
            if let Err(error) = followed {
                warn!(video = %row.id, %error, "could not follow a video");
            }
        }
        Ok(rows.len())
    }

    /// Sweeps every `interval` until `shutdown` flips.
    pub async fn run(&self, interval: Duration, shutdown: tokio::sync::watch::Receiver<bool>) {
        self.run_woken(interval, shutdown, None).await;
    }

    /// Sweeps every `interval`, and as soon as the log announces new events (a submission
    /// recorded, a cancellation asked for) when `wake` is given, until `shutdown` flips.
    /// Announcements during a sweep make one more sweep, however many there were; without
    /// a connected listener the interval alone paces it.
    pub async fn run_woken(
        &self,
        interval: Duration,
        mut shutdown: tokio::sync::watch::Receiver<bool>,
        wake: Option<Notifications>,
    ) {
        let mut heard = wake.map(|notifications| notifications.subscribe());
        let mut pruned = std::time::Instant::now();
        loop {
            if let Some(heard) = &mut heard {
                heard.clear();
            }
            if pruned.elapsed() >= PRUNE_EVERY {
                pruned = std::time::Instant::now();
                if let Err(error) = schedule::prune(&self.pool).await {
                    warn!(%error, "could not prune the poll schedule");
                }
            }
            if let Err(error) = self.sweep().await {
                warn!(%error, "poller sweep failed");
            }
            let woken = async {
                match &mut heard {
                    Some(heard) => loop {
                        if let Event::Notification { channel, .. } = heard.recv().await {
                            if channel == NOTIFY_CHANNEL {
                                return;
                            }
                        }
                    },
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                () = tokio::time::sleep(interval) => {}
                () = woken => {}
                _ = shutdown.wait_for(|stop| *stop) => return,
            }
        }
    }

    /// The metadata of a command the poller issues for `video`: caused by the video's latest
    /// event and in its correlation, so `framegate audit --correlation` of the request
    /// shows every step down to the credit capture.
    async fn caused_by(&self, video: Uuid) -> Result<CommandMetadata, BoxError> {
        let last: Option<(Uuid, Option<String>)> = sqlx::query_as(
            "SELECT event_id, metadata ->> 'correlation_id' FROM events
              WHERE aggregate_type = $1 AND aggregate_id = $2
              ORDER BY sequence DESC LIMIT 1",
        )
        .bind(Video::TYPE)
        .bind(video.to_string())
        .fetch_optional(&self.pool)
        .await?;
        Ok(match last {
            Some((cause, correlation)) => system(correlation.as_deref(), cause),
            None => CommandMetadata::new_request(Actor::System),
        })
    }

    async fn follow(&self, listed: &VideoRow) -> Result<(), BoxError> {
        // Read again under the lock: another worker may have followed it since the sweep
        // listed it (polled it, finished it).
        let current = match listed.provider_job_id {
            Some(_) => schedule::still_due(&self.pool, listed.id, self.max_job_time).await?,
            None => videos::get(&self.pool, VideoId::from_uuid(listed.id))
                .await?
                .filter(|row| row.provider_job_id.is_none()),
        };
        let Some(row) = current else {
            return Ok(());
        };
        let row = &row;
        if row
            .status
            .parse::<VideoStatus>()
            .is_ok_and(VideoStatus::is_terminal)
        {
            return Ok(());
        }
        let id = row.id.to_string();
        let provider = row
            .provider
            .as_deref()
            .and_then(|p| p.parse::<ProviderKind>().ok())
            .and_then(|kind| self.providers.get(&kind).cloned());
        let job_id = row.provider_job_id.clone();
        if row.status == VideoStatus::CancelRequested.as_str() {
            // No job id yet: a submission is open, and the dispatcher records its outcome
            // first (the cancellation then follows with the job id).
            let Some(job_id) = &job_id else {
                return Ok(());
            };
            let kind = row
                .provider
                .as_deref()
                .and_then(|p| p.parse::<ProviderKind>().ok());
            // A provider not in the catalog gets the default policy.
            let cannot_stop = || {
                kind.map_or(CancelPolicy::default(), |kind| {
                    self.catalog.cancel_policy(kind)
                }) == CancelPolicy::Charged
            };
            let charged = match &provider {
                None => cannot_stop(),
                Some(provider) => match provider
                    .cancel(job_id)
                    .instrument(provider_span("provider.cancel", provider.kind()))
                    .await
                {
                    Ok(Cancellation::Stopped) => false,
                    Ok(Cancellation::Unsupported) => cannot_stop(),
                    Err(failure) if failure.retryable => {
                        warn!(video = %row.id, %failure, "cancelling at the provider failed; will retry");
                        let wait = self
                            .pacing
                            .interval(provider.kind())
                            .max(failure.retry_after.unwrap_or_default())
                            .max(CANCEL_RETRY);
                        schedule::polled(&self.pool, row.id, wait).await?;
                        return Ok(());
                    }
                    Err(failure) => {
                        warn!(video = %row.id, %failure, "the provider refused the cancellation");
                        cannot_stop()
                    }
                },
            };
            let meta = self.caused_by(row.id).await?;
            self.store
                .videos()
                .execute(&id, VideoCommand::Cancel { charged }, &meta)
                .await?;
            return Ok(());
        }
        let deadline =
            row.created_at + chrono::Duration::from_std(self.max_job_time).unwrap_or_default();
        if Utc::now() > deadline {
            if let (Some(provider), Some(job_id)) = (&provider, &job_id) {
                provider
                    .cancel(job_id)
                    .instrument(provider_span("provider.cancel", provider.kind()))
                    .await
                    .ok();
            }
            let fail = fail_command(&ProviderFailure::new(
                "deadline_exceeded",
                "the job did not finish in time",
                true,
                false,
            ));
            let meta = self.caused_by(row.id).await?;
            self.store.videos().execute(&id, fail, &meta).await?;
            return Ok(());
        }
        let Some(job_id) = job_id else {
            return Ok(()); // Not submitted yet: the dispatcher's turn.
        };
        let Some(provider) = provider else {
            // Its provider is no longer configured here: look again now and then (another
            // worker may have it, or the configuration comes back), without spinning.
            schedule::polled(&self.pool, row.id, UNCONFIGURED_PAUSE).await?;
            return Ok(());
        };
        let polled = provider
            .poll(&job_id)
            .instrument(provider_span("provider.poll", provider.kind()))
            .await;
        let hint = match &polled {
            Err(failure) => failure.retry_after,
            Ok(_) => provider.poll_after(&job_id),
        };
        let wait = self
            .pacing
            .interval(provider.kind())
            .max(hint.unwrap_or_default());
        // A finished job is done with the poller once finishing records it; if finishing
        // fails (storage down), the result is fetched again after a pause.
        let wait = match &polled {
            Ok(JobState::Succeeded) => FINISHED_PAUSE.max(wait),
            _ => wait,
        };
        schedule::polled(&self.pool, row.id, wait).await?;
        match polled {
            Ok(JobState::Queued) => {}
            Ok(JobState::Running { progress })
                if i16::from(progress) > row.progress
                    || row.status == VideoStatus::Submitted.as_str() =>
            {
                self.store
                    .videos()
                    .execute(
                        &id,
                        VideoCommand::RecordProgress { percent: progress },
                        &self.caused_by(row.id).await?,
                    )
                    .await?;
            }
            Ok(JobState::Running { .. }) => {}
            Ok(JobState::Succeeded) => {
                let meta = self.caused_by(row.id).await?;
                self.finish(row, provider.as_ref(), &job_id, &meta).await?
            }
            Ok(JobState::Failed(failure)) => {
                self.store
                    .videos()
                    .execute(&id, fail_command(&failure), &self.caused_by(row.id).await?)
                    .await?;
            }
            Err(failure) if failure.retryable => {
                warn!(video = %row.id, %failure, "poll failed; will retry")
            }
            Err(failure) => {
                self.store
                    .videos()
                    .execute(&id, fail_command(&failure), &self.caused_by(row.id).await?)
                    .await?;
            }
        }
        Ok(())
    }
}
