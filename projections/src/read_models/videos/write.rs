//! The statements of the videos projector's set-based path: one multi-row insert of the
//! videos a batch requests, each with the rest of its events in the batch applied already,
//! and one `UPDATE ... FROM unnest(...)` applying each other video's net change (`fold`).
//! A column a patch leaves alone travels as NULL and is kept with COALESCE, except where a
//! flag says the value (possibly NULL) is to be set.

use std::collections::HashSet;

use chrono::{DateTime, Utc};
use framegate_domain::VideoStatus;
use serde_json::Value;
use sqlx::PgConnection;
use uuid::Uuid;

use super::fold::{Patch, Progress, Requested};
use crate::read_models::batch::expect_rows;
use crate::read_models::ProjectionError;

/// New videos' rows as columns: the request's values with the patch of the events after it
/// applied as the `UPDATE` below would apply it to the row the request inserts.
#[derive(Default)]
pub(super) struct NewRows {
    ids: Vec<Uuid>,
    owners: Vec<Uuid>,
    statuses: Vec<&'static str>,
    progress: Vec<i16>,
    preferences: Vec<String>,
    providers: Vec<Option<String>>,
    models: Vec<Option<String>>,
    attempts: Vec<i32>,
    jobs: Vec<Option<String>>,
    prompts: Vec<String>,
    negative_prompts: Vec<Option<String>>,
    durations: Vec<i32>,
    aspect_ratios: Vec<String>,
    resolutions: Vec<String>,
    image_ids: Vec<Option<Uuid>>,
    seeds: Vec<Option<i64>>,
    external_ids: Vec<Option<String>>,
    estimated_costs: Vec<i64>,
    final_costs: Vec<Option<i64>>,
    error_codes: Vec<Option<String>>,
    error_messages: Vec<Option<String>>,
    error_retryable: Vec<Option<bool>>,
    error_charged: Vec<Option<bool>>,
    cancel_charged: Vec<Option<bool>>,
    blob_keys: Vec<Option<String>>,
    bytes: Vec<Option<i64>>,
    sha256s: Vec<Option<String>>,
    durations_ms: Vec<Option<i64>>,
    widths: Vec<Option<i32>>,
    heights: Vec<Option<i32>>,
    created_at: Vec<DateTime<Utc>>,
    updated_at: Vec<DateTime<Utc>>,
    completed_at: Vec<Option<DateTime<Utc>>>,
    attempt_lists: Vec<Value>,
    generate_audio: Vec<bool>,
}

impl NewRows {
    pub(super) fn push(&mut self, id: Uuid, requested: &Requested, patch: Option<&Patch>) {
        let Requested { spec, at } = requested;
        self.ids.push(id);
        self.owners.push(spec.owner.as_uuid());
        self.preferences.push(spec.provider.to_string());
        self.prompts.push(spec.prompt.clone());
        self.negative_prompts.push(spec.negative_prompt.clone());
        self.durations.push(spec.duration_seconds as i32);
        self.aspect_ratios.push(spec.aspect_ratio.clone());
        self.resolutions.push(spec.resolution.clone());
        self.image_ids.push(spec.image_id.map(|i| i.as_uuid()));
        self.seeds.push(spec.seed.map(|s| s as i64));
        self.external_ids.push(spec.external_id.clone());
        self.estimated_costs.push(spec.estimated_cost.value());
        self.generate_audio.push(spec.generate_audio);
        self.created_at.push(*at);
        // The row as the request inserts it: queued, progress and attempt 0, no attempts.
        self.statuses
            .push(patch.map_or(VideoStatus::Queued.as_str(), |p| p.status));
        self.updated_at.push(patch.map_or(*at, |p| p.updated_at));
        self.progress.push(match patch.map(|p| p.progress) {
            None | Some(Progress::Unchanged) => 0,
            Some(Progress::AtLeast(percent)) => percent.max(0),
            Some(Progress::Set(percent)) => percent,
        });
        self.providers.push(patch.and_then(|p| p.provider.clone()));
        self.models.push(
            patch
                .and_then(|p| p.model.clone())
                .or_else(|| spec.model.clone()),
        );
        self.attempts
            .push(patch.and_then(|p| p.attempt).unwrap_or(0));
        self.jobs
            .push(patch.and_then(|p| p.provider_job_id.clone()).flatten());
        self.attempt_lists.push(Value::Array(
            patch.map(|p| p.attempts.clone()).unwrap_or_default(),
        ));
        let stored = patch.and_then(|p| p.stored.as_ref());
        self.blob_keys.push(stored.map(|s| s.blob_key.clone()));
        self.bytes.push(stored.map(|s| s.bytes));
        self.sha256s.push(stored.map(|s| s.sha256.clone()));
        self.durations_ms.push(stored.map(|s| s.duration_ms));
        self.widths.push(stored.map(|s| s.width));
        self.heights.push(stored.map(|s| s.height));
        self.completed_at.push(patch.and_then(|p| p.completed_at));
        self.final_costs.push(patch.and_then(|p| p.final_cost));
        let failure = patch.and_then(|p| p.failure.as_ref());
        self.error_codes.push(failure.map(|f| f.code.clone()));
        self.error_messages.push(failure.map(|f| f.message.clone()));
        self.error_retryable.push(failure.map(|f| f.retryable));
        self.error_charged.push(failure.map(|f| f.charged));
        self.cancel_charged
            .push(patch.and_then(|p| p.cancel_charged));
    }

    /// Inserts the rows whose video has none yet; returns their ids. A request whose row is
    /// there already does nothing, as one by one.
    pub(super) async fn insert(
        self,
        conn: &mut PgConnection,
    ) -> Result<HashSet<Uuid>, ProjectionError> {
        if self.ids.is_empty() {
            return Ok(HashSet::new());
        }
        let inserted: Vec<Uuid> = sqlx::query_scalar(
            "INSERT INTO videos (id, owner_id, status, progress, provider_preference, provider,
                 model, attempt, provider_job_id, prompt, negative_prompt, duration_seconds,
                 aspect_ratio, resolution, image_id, seed, external_id, estimated_cost,
                 final_cost, error_code, error_message, error_retryable, error_charged,
                 blob_key, bytes, sha256, duration_ms, width, height, created_at, updated_at,
                 completed_at, attempts, cancel_charged, generate_audio)
             SELECT * FROM unnest($1::uuid[], $2::uuid[], $3::text[], $4::int2[], $5::text[],
                 $6::text[], $7::text[], $8::int4[], $9::text[], $10::text[], $11::text[],
                 $12::int4[], $13::text[], $14::text[], $15::uuid[], $16::int8[], $17::text[],
                 $18::int8[], $19::int8[], $20::text[], $21::text[], $22::bool[], $23::bool[],
                 $24::text[], $25::int8[], $26::text[], $27::int8[], $28::int4[], $29::int4[],
                 $30::timestamptz[], $31::timestamptz[], $32::timestamptz[], $33::jsonb[],
                 $34::bool[], $35::bool[])
             ON CONFLICT (id) DO NOTHING
             RETURNING id",
        )
        .bind(&self.ids)
        .bind(&self.owners)
        .bind(&self.statuses)
        .bind(&self.progress)
        .bind(&self.preferences)
        .bind(&self.providers)
        .bind(&self.models)
        .bind(&self.attempts)
        .bind(&self.jobs)
        .bind(&self.prompts)
        .bind(&self.negative_prompts)
        .bind(&self.durations)
        .bind(&self.aspect_ratios)
        .bind(&self.resolutions)
        .bind(&self.image_ids)
        .bind(&self.seeds)
        .bind(&self.external_ids)
        .bind(&self.estimated_costs)
        .bind(&self.final_costs)
        .bind(&self.error_codes)
        .bind(&self.error_messages)
        .bind(&self.error_retryable)
        .bind(&self.error_charged)
        .bind(&self.blob_keys)
        .bind(&self.bytes)
        .bind(&self.sha256s)
        .bind(&self.durations_ms)
        .bind(&self.widths)
        .bind(&self.heights)
        .bind(&self.created_at)
        .bind(&self.updated_at)
        .bind(&self.completed_at)
        .bind(&self.attempt_lists)
        .bind(&self.cancel_charged)
        .bind(&self.generate_audio)
        .fetch_all(conn)
        .await?;
        Ok(inserted.into_iter().collect())
    }
}

/// The patches of a batch as columns; `None` (NULL) leaves a column as it is, except where
/// a flag says the value is to be set even when NULL.
#[derive(Default)]
pub(super) struct Updates {
    ids: Vec<Uuid>,
    statuses: Vec<&'static str>,
    updated_at: Vec<DateTime<Utc>>,
    attempts: Vec<Option<i32>>,
    providers: Vec<Option<String>>,
    models: Vec<Option<String>>,
    set_job: Vec<bool>,
    jobs: Vec<Option<String>>,
    set_progress: Vec<bool>,
    progress: Vec<Option<i16>>,
    clear_next_attempt: Vec<bool>,
    appended: Vec<Value>,
    blob_keys: Vec<Option<String>>,
    bytes: Vec<Option<i64>>,
    sha256s: Vec<Option<String>>,
    durations_ms: Vec<Option<i64>>,
    widths: Vec<Option<i32>>,
    heights: Vec<Option<i32>>,
    completed_at: Vec<Option<DateTime<Utc>>>,
    final_costs: Vec<Option<i64>>,
    error_codes: Vec<Option<String>>,
    error_messages: Vec<Option<String>>,
    error_retryable: Vec<Option<bool>>,
    error_charged: Vec<Option<bool>>,
    cancel_charged: Vec<Option<bool>>,
}

impl Updates {
    pub(super) fn push(&mut self, id: Uuid, patch: Patch) {
        self.ids.push(id);
        self.statuses.push(patch.status);
        self.updated_at.push(patch.updated_at);
        self.attempts.push(patch.attempt);
        self.providers.push(patch.provider);
        self.models.push(patch.model);
        self.set_job.push(patch.provider_job_id.is_some());
        self.jobs.push(patch.provider_job_id.flatten());
        let (set, progress) = match patch.progress {
            Progress::Unchanged => (false, None),
            Progress::AtLeast(percent) => (false, Some(percent)),
            Progress::Set(percent) => (true, Some(percent)),
        };
        self.set_progress.push(set);
        self.progress.push(progress);
        self.clear_next_attempt.push(patch.clear_next_attempt);
        self.appended.push(Value::Array(patch.attempts));
        let (blob_key, bytes, sha256, duration_ms, width, height) = match patch.stored {
            Some(s) => (
                Some(s.blob_key),
                Some(s.bytes),
                Some(s.sha256),
                Some(s.duration_ms),
                Some(s.width),
                Some(s.height),
            ),
            None => (None, None, None, None, None, None),
        };
        self.blob_keys.push(blob_key);
        self.bytes.push(bytes);
        self.sha256s.push(sha256);
        self.durations_ms.push(duration_ms);
        self.widths.push(width);
        self.heights.push(height);
        self.completed_at.push(patch.completed_at);
        self.final_costs.push(patch.final_cost);
        let (code, message, retryable, charged) = match patch.failure {
            Some(f) => (
                Some(f.code),
                Some(f.message),
                Some(f.retryable),
                Some(f.charged),
            ),
            None => (None, None, None, None),
        };
        self.error_codes.push(code);
        self.error_messages.push(message);
        self.error_retryable.push(retryable);
        self.error_charged.push(charged);
        self.cancel_charged.push(patch.cancel_charged);
    }

    pub(super) async fn write(self, conn: &mut PgConnection) -> Result<(), ProjectionError> {
        if self.ids.is_empty() {
            return Ok(());
        }
        // GREATEST ignores NULL: a NULL progress leaves a row's progress as it is.
        let result = sqlx::query(
            "UPDATE videos v
                SET status = p.status, updated_at = p.updated_at,
                    attempt = COALESCE(p.attempt, v.attempt),
                    provider = COALESCE(p.provider, v.provider),
                    model = COALESCE(p.model, v.model),
                    provider_job_id = CASE WHEN p.set_job THEN p.job ELSE v.provider_job_id END,
                    progress = CASE WHEN p.set_progress THEN p.progress
                                    ELSE GREATEST(v.progress, p.progress) END,
                    next_attempt_at = CASE WHEN p.clear_next_attempt THEN NULL
                                           ELSE v.next_attempt_at END,
                    attempts = v.attempts || p.appended,
                    blob_key = COALESCE(p.blob_key, v.blob_key),
                    bytes = COALESCE(p.bytes, v.bytes),
                    sha256 = COALESCE(p.sha256, v.sha256),
                    duration_ms = COALESCE(p.duration_ms, v.duration_ms),
                    width = COALESCE(p.width, v.width),
                    height = COALESCE(p.height, v.height),
                    completed_at = COALESCE(p.completed_at, v.completed_at),
                    final_cost = COALESCE(p.final_cost, v.final_cost),
                    error_code = COALESCE(p.error_code, v.error_code),
                    error_message = COALESCE(p.error_message, v.error_message),
                    error_retryable = COALESCE(p.error_retryable, v.error_retryable),
                    error_charged = COALESCE(p.error_charged, v.error_charged),
                    cancel_charged = COALESCE(p.cancel_charged, v.cancel_charged)
               FROM unnest($1::uuid[], $2::text[], $3::timestamptz[], $4::int4[], $5::text[],
                           $6::text[], $7::bool[], $8::text[], $9::bool[], $10::int2[],
                           $11::bool[], $12::jsonb[], $13::text[], $14::int8[], $15::text[],
                           $16::int8[], $17::int4[], $18::int4[], $19::timestamptz[],
                           $20::int8[], $21::text[], $22::text[], $23::bool[], $24::bool[],
                           $25::bool[])
                    AS p(id, status, updated_at, attempt, provider, model, set_job, job,
                         set_progress, progress, clear_next_attempt, appended, blob_key, bytes,
                         sha256, duration_ms, width, height, completed_at, final_cost,
                         error_code, error_message, error_retryable, error_charged,
                         cancel_charged)
              WHERE v.id = p.id",
        )
        .bind(&self.ids)
        .bind(&self.statuses)
        .bind(&self.updated_at)
        .bind(&self.attempts)
        .bind(&self.providers)
        .bind(&self.models)
        .bind(&self.set_job)
        .bind(&self.jobs)
        .bind(&self.set_progress)
        .bind(&self.progress)
        .bind(&self.clear_next_attempt)
        .bind(&self.appended)
        .bind(&self.blob_keys)
        .bind(&self.bytes)
        .bind(&self.sha256s)
        .bind(&self.durations_ms)
        .bind(&self.widths)
        .bind(&self.heights)
        .bind(&self.completed_at)
        .bind(&self.final_costs)
        .bind(&self.error_codes)
        .bind(&self.error_messages)
        .bind(&self.error_retryable)
        .bind(&self.error_charged)
        .bind(&self.cancel_charged)
        .execute(conn)
        .await?;
        expect_rows(&result, self.ids.len(), "videos updated by a batch")
    }
}
