//! A provider wrapped so that each call is counted and timed by provider, operation and
//! outcome (`framegate_provider_calls_total`, `framegate_provider_call_duration_seconds`).
//!
//! A decorator rather than a line in each adapter: every adapter, the simulator included, is
//! measured the same way, and a new adapter cannot forget it. The worker role wraps each
//! provider it configures ([`metered`]).

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use framegate_commands::metrics;
use framegate_domain::ProviderKind;

use crate::provider::{Cancellation, Job, JobState, Lookup, ProviderFailure, VideoProvider};

/// `provider`, its calls measured.
pub fn metered(provider: Arc<dyn VideoProvider>) -> Arc<dyn VideoProvider> {
    Arc::new(Metered(provider))
}

struct Metered(Arc<dyn VideoProvider>);

impl Metered {
    fn record<T>(
        &self,
        operation: &'static str,
        started: Instant,
        result: &Result<T, ProviderFailure>,
    ) {
        let outcome = match result {
            Ok(_) => "ok",
            Err(failure) => failure.code.as_str(),
        };
        metrics::provider_call(
            self.0.kind().as_str(),
            operation,
            outcome,
            started.elapsed(),
        );
    }
}

#[async_trait]
impl VideoProvider for Metered {
    fn kind(&self) -> ProviderKind {
        self.0.kind()
    }

    async fn submit(&self, job: &Job) -> Result<String, ProviderFailure> {
        let started = Instant::now();
        let result = self.0.submit(job).await;
        self.record("submit", started, &result);
        result
    }

    async fn find(&self, job: &Job, since: DateTime<Utc>) -> Result<Lookup, ProviderFailure> {
        let started = Instant::now();
        let result = self.0.find(job, since).await;
        self.record("find", started, &result);
        result
    }

    async fn poll(&self, job_id: &str) -> Result<JobState, ProviderFailure> {
        let started = Instant::now();
        let result = self.0.poll(job_id).await;
        // A job the provider reports failed is an answered call, not a failed one.
        self.record("poll", started, &result);
        result
    }

    fn poll_after(&self, job_id: &str) -> Option<std::time::Duration> {
        self.0.poll_after(job_id)
    }

    async fn fetch(&self, job_id: &str, destination: &Path) -> Result<(), ProviderFailure> {
        let started = Instant::now();
        let result = self.0.fetch(job_id, destination).await;
        self.record("fetch", started, &result);
        result
    }

    async fn cancel(&self, job_id: &str) -> Result<Cancellation, ProviderFailure> {
        let started = Instant::now();
        let result = self.0.cancel(job_id).await;
        self.record("cancel", started, &result);
        result
    }
}
