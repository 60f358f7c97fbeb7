//! The video pipeline: the dispatcher submits requested videos, the poller follows them and
//! finishing stores what they produced.
//!
//! The dispatcher (`dispatcher`) is a subscription on the ordered log reacting to
//! `VideoRequested`. It records the intent (`SubmissionStarted`) before calling the provider,
//! so a crash in between is seen on restart (status `submitting`) and resolved by asking the
//! provider for the job (`find`) instead of submitting again. The poller (`poller`) follows
//! jobs in flight: progress, cancellation, deadlines; on success finishing (`finishing`)
//! downloads the result at once (upstream URLs expire), validates it with ffprobe, stores it
//! with a poster and thumbnail, and records completion. Per-provider limits and the routing
//! settings live in `limits`. Credits are settled by the settlement process manager from the
//! resulting events.

mod dispatcher;
mod finishing;
mod limits;
mod poller;
mod schedule;

use std::collections::HashMap;
use std::sync::Arc;

use framegate_commands::trace_context::{self, TraceContext};
use framegate_commands::{Actor, CommandMetadata};
use framegate_domain::{ProviderKind, Video, VideoCommand};
use framegate_projections::subscription::BoxError;
use sqlx::PgPool;
use uuid::Uuid;

use crate::provider::{ProviderFailure, VideoProvider};

pub(crate) use dispatcher::dispatch_span;
pub use dispatcher::{Dispatcher, MAX_ATTEMPTS};
pub use limits::{ProviderLimits, Routing};
pub use poller::{PollPacing, Poller};

pub const DISPATCHER: &str = "worker.dispatcher";

pub type Providers = Arc<HashMap<ProviderKind, Arc<dyn VideoProvider>>>;

fn system(correlation: Option<&str>, cause: Uuid) -> CommandMetadata {
    let correlation = correlation
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(Uuid::now_v7);
    CommandMetadata::caused_by_event(Actor::System, correlation, cause)
}

/// The span of one call to a provider (`provider.submit`, `provider.poll`, ...): the HTTP
/// adapters pass its context on in a `traceparent` header (`providers::http::traced`).
fn provider_span(name: &'static str, provider: ProviderKind) -> tracing::Span {
    // A span's name is static in `tracing`; `otel.name` gives each call its own.
    tracing::info_span!("provider", otel.name = name, provider = %provider)
}

/// The trace context of `video`'s request (its first event), when spans are exported: the
/// parent of work on the video that no event hands over (a sweep, a poll). Skipped, with
/// its query, when they are not; an error reading it only leaves the work outside the trace.
async fn request_trace(pool: &PgPool, video: Uuid) -> Option<TraceContext> {
    if !trace_context::exporting() {
        return None;
    }
    let metadata: Option<serde_json::Value> = sqlx::query_scalar(
        "SELECT metadata FROM events
          WHERE aggregate_type = $1 AND aggregate_id = $2 AND sequence = 1",
    )
    .bind(<Video as cqrs_es::Aggregate>::TYPE)
    .bind(video.to_string())
    .fetch_optional(pool)
    .await
    .ok()
    .flatten();
    metadata.as_ref().and_then(TraceContext::from_metadata)
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

fn fail_command(failure: &ProviderFailure) -> VideoCommand {
    VideoCommand::Fail {
        code: failure.code.clone(),
        message: failure.message.clone(),
        retryable: failure.retryable,
        charged: failure.charged,
    }
}
