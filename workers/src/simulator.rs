//! The simulator provider: an asynchronous "remote" service that renders real MP4s locally.
//!
//! It behaves like a real provider: a submitted job is queued, runs with progress over
//! FRAMEGATE_SIMULATOR_LATENCY_MS, and then succeeds, fails (FRAMEGATE_SIMULATOR_FAILURE_RATE)
//! or is refused by moderation (FRAMEGATE_SIMULATOR_MODERATION_RATE). At most
//! FRAMEGATE_SIMULATOR_MAX_CONCURRENCY jobs run at once, like a provider's quota: each job's
//! run is scheduled when it is submitted, to start when a slot frees, in submission order (a
//! cancelled job's slot is not handed on early). Its jobs live in
//! Postgres (`simulator_jobs`) so they survive worker restarts, one per video. The video is
//! rendered with ffmpeg when it is fetched.

use std::path::Path;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use framegate_domain::{ProviderKind, VideoId};
use sha2::{Digest, Sha256};
use sqlx::PgPool;

use crate::media::{dimensions, render_simulated, MediaTools, RenderRequest};
use crate::provider::{Cancellation, Job, JobState, Lookup, ProviderFailure, VideoProvider};

#[derive(Debug, Clone)]
pub struct SimulatorConfig {
    pub latency: Duration,
    /// 0.0..=1.0
    pub failure_rate: f64,
    /// 0.0..=1.0
    pub moderation_rate: f64,
    /// How many jobs run at once (`FRAMEGATE_SIMULATOR_MAX_CONCURRENCY`); the rest wait
    /// their turn in submission order, reported `Queued`. `None`: no limit.
    pub max_concurrency: Option<u32>,
}

impl Default for SimulatorConfig {
    fn default() -> Self {
        Self {
            latency: Duration::from_secs(5),
            failure_rate: 0.0,
            moderation_rate: 0.0,
            max_concurrency: None,
        }
    }
}

impl SimulatorConfig {
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Self, String> {
        let mut config = Self::default();
        if let Some(v) = get("FRAMEGATE_SIMULATOR_LATENCY_MS") {
            let ms: u64 = v
                .parse()
                .map_err(|e| format!("FRAMEGATE_SIMULATOR_LATENCY_MS: {e}"))?;
            config.latency = Duration::from_millis(ms);
        }
        if let Some(v) = get("FRAMEGATE_SIMULATOR_MAX_CONCURRENCY") {
            let max: u32 =
                v.parse().ok().filter(|max| *max > 0).ok_or(
                    "FRAMEGATE_SIMULATOR_MAX_CONCURRENCY: must be a positive whole number",
                )?;
            config.max_concurrency = Some(max);
        }
        for (name, slot) in [
            ("FRAMEGATE_SIMULATOR_FAILURE_RATE", &mut config.failure_rate),
            (
                "FRAMEGATE_SIMULATOR_MODERATION_RATE",
                &mut config.moderation_rate,
            ),
        ] {
            if let Some(v) = get(name) {
                let rate: f64 = v.parse().map_err(|e| format!("{name}: {e}"))?;
                if !(0.0..=1.0).contains(&rate) {
                    return Err(format!("{name}: must be between 0 and 1"));
                }
                *slot = rate;
            }
        }
        Ok(config)
    }
}

pub struct Simulator {
    pool: PgPool,
    tools: MediaTools,
    config: SimulatorConfig,
}

impl Simulator {
    pub fn new(pool: PgPool, tools: MediaTools, config: SimulatorConfig) -> Self {
        Self {
            pool,
            tools,
            config,
        }
    }
}

/// A deterministic draw in 0..1 from the video id, so an outcome is decided once.
fn draw(video_id: VideoId, salt: &str) -> f64 {
    let digest = Sha256::digest(format!("{salt}:{video_id}").as_bytes());
    let mut bytes = [0u8; 8];
    bytes.copy_from_slice(&digest[..8]);
    (u64::from_be_bytes(bytes) >> 11) as f64 / (1u64 << 53) as f64
}

fn unavailable(error: impl std::fmt::Display) -> ProviderFailure {
    ProviderFailure::new(
        "upstream_unavailable",
        format!("simulator: {error}"),
        true,
        false,
    )
}

type JobRow = (
    String,
    i32,
    i32,
    i32,
    Option<i64>,
    i64,
    String,
    DateTime<Utc>,
    Option<DateTime<Utc>>,
);

#[async_trait]
impl VideoProvider for Simulator {
    fn kind(&self) -> ProviderKind {
        ProviderKind::Simulator
    }

    async fn submit(&self, job: &Job) -> Result<String, ProviderFailure> {
        let (width, height) = dimensions(&job.aspect_ratio, &job.resolution)
            .map_err(|e| ProviderFailure::new("invalid_request", e.to_string(), false, false))?;
        let outcome = if draw(job.video_id, "moderation") < self.config.moderation_rate {
            "moderate"
        } else if draw(job.video_id, "failure") < self.config.failure_rate {
            "fail"
        } else {
            "succeed"
        };
        let mut tx = self.pool.begin().await.map_err(unavailable)?;
        // Submissions take their slots one at a time.
        sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended('framegate.simulator', 0))")
            .execute(&mut *tx)
            .await
            .map_err(unavailable)?;
        // With c slots, FIFO, and every run's length known, the next slot frees when the
        // c-th latest run still going ends (now, if fewer than c are going). No limit: the
        // run starts on submission (NULL).
        let starts: Option<DateTime<Utc>> = match self.config.max_concurrency {
            None => None,
            Some(slots) => Some(
                sqlx::query_scalar(
                    "SELECT GREATEST(now(), COALESCE((
                         SELECT ends FROM (
                             SELECT COALESCE(started_at, submitted_at)
                                    + make_interval(secs => latency_ms / 1000.0) AS ends
                               FROM simulator_jobs WHERE cancelled_at IS NULL) runs
                          WHERE ends > now()
                          ORDER BY ends DESC OFFSET $1 - 1 LIMIT 1), now()))",
                )
                .bind(i64::from(slots))
                .fetch_one(&mut *tx)
                .await
                .map_err(unavailable)?,
            ),
        };
        // One job per video: a repeated submission is refused and counted, never a second job.
        let inserted: Option<String> = sqlx::query_scalar(
            "INSERT INTO simulator_jobs (id, video_id, prompt, duration_seconds, width, height, seed, latency_ms, outcome, start_image, start_image_type, started_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)
             ON CONFLICT (video_id) DO UPDATE SET submit_attempts = simulator_jobs.submit_attempts + 1
             RETURNING CASE WHEN simulator_jobs.submit_attempts = 1 THEN simulator_jobs.id END",
        )
        .bind(format!("sim_{}", job.video_id.as_uuid().simple()))
        .bind(job.video_id.as_uuid())
        .bind(&job.prompt)
        .bind(job.duration_seconds as i32)
        .bind(width as i32)
        .bind(height as i32)
        .bind(job.seed.map(|s| s as i64))
        .bind(self.config.latency.as_millis() as i64)
        .bind(outcome)
        .bind(job.image.as_ref().map(|image| image.bytes.as_ref()))
        .bind(job.image.as_ref().map(|image| image.content_type.as_str()))
        .bind(starts)
        .fetch_one(&mut *tx)
        .await
        .map_err(unavailable)?;
        tx.commit().await.map_err(unavailable)?;
        inserted.ok_or_else(|| {
            ProviderFailure::new(
                "duplicate_submission",
                "this video was already submitted",
                false,
                false,
            )
        })
    }

    async fn find(&self, job: &Job, _since: DateTime<Utc>) -> Result<Lookup, ProviderFailure> {
        let found: Option<String> =
            sqlx::query_scalar("SELECT id FROM simulator_jobs WHERE video_id = $1")
                .bind(job.video_id.as_uuid())
                .fetch_optional(&self.pool)
                .await
                .map_err(unavailable)?;
        Ok(found.map_or(Lookup::NotSubmitted, Lookup::Found))
    }

    async fn poll(&self, job_id: &str) -> Result<JobState, ProviderFailure> {
        let row: Option<JobRow> = sqlx::query_as(
            "SELECT prompt, duration_seconds, width, height, seed, latency_ms, outcome,
                    COALESCE(started_at, submitted_at), cancelled_at
               FROM simulator_jobs WHERE id = $1",
        )
        .bind(job_id)
        .fetch_optional(&self.pool)
        .await
        .map_err(unavailable)?;
        let Some((_, _, _, _, _, latency_ms, outcome, started_at, cancelled_at)) = row else {
            return Err(ProviderFailure::new(
                "not_found",
                format!("no job {job_id}"),
                false,
                false,
            ));
        };
        if cancelled_at.is_some() {
            return Ok(JobState::Failed(ProviderFailure::new(
                "cancelled",
                "the job was cancelled",
                false,
                false,
            )));
        }
        // Waiting for a slot until its run starts.
        let elapsed = (Utc::now() - started_at).num_milliseconds().max(0);
        if elapsed < latency_ms {
            let progress = (elapsed * 100 / latency_ms.max(1)).clamp(0, 99) as u8;
            return Ok(if progress == 0 {
                JobState::Queued
            } else {
                JobState::Running { progress }
            });
        }
        Ok(match outcome.as_str() {
            "moderate" => JobState::Failed(ProviderFailure::new(
                "moderated",
                "the simulator's moderation refused the prompt",
                false,
                false,
            )),
            "fail" => JobState::Failed(ProviderFailure::new(
                "generation_failed",
                "the simulator failed this job",
                true,
                false,
            )),
            _ => JobState::Succeeded,
        })
    }

    async fn fetch(&self, job_id: &str, destination: &Path) -> Result<(), ProviderFailure> {
        let row: Option<JobRow> = sqlx::query_as(
            "SELECT prompt, duration_seconds, width, height, seed, latency_ms, outcome, submitted_at, cancelled_at
               FROM simulator_jobs WHERE id = $1",
        )
        .bind(job_id)
        .fetch_optional(&self.pool)
        .await
        .map_err(unavailable)?;
        let Some((prompt, duration, width, height, seed, ..)) = row else {
            return Err(ProviderFailure::new(
                "result_expired",
                format!("no job {job_id}"),
                false,
                false,
            ));
        };
        let mut request = RenderRequest::new(prompt, duration as u32, width as u32, height as u32);
        request.seed = seed.map(|s| s as u64);
        let start_image: Option<(Vec<u8>, String)> = sqlx::query_as(
            "SELECT start_image, start_image_type FROM simulator_jobs
              WHERE id = $1 AND start_image IS NOT NULL",
        )
        .bind(job_id)
        .fetch_optional(&self.pool)
        .await
        .map_err(unavailable)?;
        // Kept until the render is done: ffmpeg reads the image from this directory.
        let scratch = tempfile::tempdir().map_err(unavailable)?;
        if let Some((bytes, _content_type)) = start_image {
            // No extension: ffmpeg then sniffs the content with the whitelisted still-image
            // demuxers instead of picking its file-pattern demuxer by name.
            let path = scratch.path().join("start-image");
            tokio::fs::write(&path, bytes).await.map_err(unavailable)?;
            request.start_image = Some(path);
        }
        render_simulated(&self.tools, &request, destination)
            .await
            .map_err(|e| {
                ProviderFailure::new("generation_failed", e.to_string(), e.is_retryable(), false)
            })
    }

    async fn cancel(&self, job_id: &str) -> Result<Cancellation, ProviderFailure> {
        sqlx::query(
            "UPDATE simulator_jobs SET cancelled_at = now() WHERE id = $1 AND cancelled_at IS NULL",
        )
        .bind(job_id)
        .execute(&self.pool)
        .await
        .map_err(unavailable)?;
        Ok(Cancellation::Stopped)
    }
}
