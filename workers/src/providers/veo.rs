//! Google Veo, through the Gemini API (`x-goog-api-key`) or Vertex AI (OAuth bearer token).
//!
//! A job is a long-running operation: `predictLongRunning` starts it and returns its name,
//! which is our provider job id verbatim (`models/{model}/operations/{id}` on the Gemini API,
//! `projects/{p}/locations/{l}/publishers/google/models/{model}/operations/{id}` on Vertex),
//! so polling and fetching need nothing else, and the id says which API issued it. Polling
//! reads the operation (Gemini: GET on the name; Vertex: `fetchPredictOperation`), and `fetch`
//! reads it once more to find the result: a URL downloaded with the key through
//! [`super::download`] (redirects followed by hand, the key only ever sent to the configured
//! API origin, other hosts held to public addresses), a `gs://` object read through the Cloud
//! Storage JSON API with the token, or the video inline in base64.
//!
//! Veo reports no progress, so `poll` estimates it from the time since this worker first saw
//! the job (linear over [`EXPECTED_RENDER_TIME`], capped at [`MAX_ESTIMATE`] until done).
//! Nor can Veo be asked for a job by our id (`find` answers `Unknown`), nor cancel one (`cancel`
//! only stops following it; Google finishes and bills it). Every failure maps onto the shared
//! error model; Google bills delivered videos only, so none is `charged`.

mod auth;
mod config;
mod download;
mod operation;
mod request;

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use framegate_domain::ProviderKind;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue, AUTHORIZATION};
use reqwest::{RequestBuilder, Response, StatusCode, Url};
use serde_json::{json, Value};
use tracing::{info, warn};

use crate::provider::{codes, Cancellation, Job, JobState, Lookup, ProviderFailure, VideoProvider};
use crate::providers::download::{error_text, Downloader};
use crate::providers::http;

use auth::TokenSource;
pub use config::{
    VeoApi, VeoConfig, VertexConfig, VertexToken, DEFAULT_GEMINI_BASE_URL, DEFAULT_MODEL,
    DEFAULT_STORAGE_BASE_URL, DEFAULT_VERTEX_LOCATION,
};
use operation::{Operation, OperationName, Outcome};

const PROVIDER: &str = "Veo";
/// A typical render (Google quotes 11 s to 6 min); the progress estimate reaches its cap here.
pub const EXPECTED_RENDER_TIME: Duration = Duration::from_secs(120);
/// The estimate never claims more until the operation is done.
pub const MAX_ESTIMATE: u8 = 95;

pub struct Veo {
    config: VeoConfig,
    credentials: Credentials,
    /// API calls: submit and poll.
    api: reqwest::Client,
    /// The operation read that may carry an inline video: the download timeout.
    long_calls: reqwest::Client,
    /// Result downloads; our credentials go only to the configured API (and storage) origins.
    downloader: Downloader,
    /// When this worker first saw each unfinished job, for the progress estimate.
    started: Mutex<HashMap<String, Instant>>,
}

enum Credentials {
    ApiKey(String),
    Vertex(TokenSource),
}

/// Which call an HTTP error answers; a 404 means something different for each.
#[derive(Clone, Copy)]
enum Call<'a> {
    Submit { model: &'a str },
    Poll,
    Download,
}

impl Veo {
    pub fn new(config: VeoConfig) -> Self {
        let (credentials, trusted) = match &config.api {
            VeoApi::Gemini { base_url, api_key } => (
                Credentials::ApiKey(api_key.clone()),
                vec![base_url.as_str()],
            ),
            VeoApi::Vertex(vertex) => (
                Credentials::Vertex(TokenSource::new(vertex.token.clone())),
                vec![vertex.base_url.as_str(), vertex.storage_base_url.as_str()],
            ),
        };
        let trusted: Vec<Url> = trusted
            .into_iter()
            .filter_map(|u| Url::parse(u).ok())
            .collect();
        Self {
            api: http::client(config.request_timeout),
            long_calls: http::client(config.download_timeout),
            downloader: Downloader::new(
                PROVIDER,
                config.downloads,
                config.download_timeout,
                &trusted,
            ),
            credentials,
            started: Mutex::new(HashMap::new()),
            config,
        }
    }

    fn submit_url(&self, model: &str) -> String {
        match &self.config.api {
            VeoApi::Gemini { base_url, .. } => {
                format!("{base_url}/models/{model}:predictLongRunning")
            }
            VeoApi::Vertex(v) => format!(
                "{}/projects/{}/locations/{}/publishers/google/models/{model}:predictLongRunning",
                v.base_url, v.project, v.location
            ),
        }
    }

    /// The job id as an operation of the API this worker is configured for.
    fn operation_name<'a>(&self, job_id: &'a str) -> Result<OperationName<'a>, ProviderFailure> {
        let name = OperationName::parse(job_id);
        match (&self.config.api, name) {
            (VeoApi::Gemini { .. }, Some(name @ OperationName::Gemini { .. }))
            | (VeoApi::Vertex(_), Some(name @ OperationName::Vertex { .. })) => Ok(name),
            _ => Err(ProviderFailure::new(
                codes::NOT_FOUND,
                format!("{job_id:?} is not an operation of the configured Veo API"),
                false,
                false,
            )),
        }
    }

    /// Our credentials as headers, and the Vertex token among them (to discard if refused).
    async fn credential_headers(&self) -> Result<(HeaderMap, Option<String>), ProviderFailure> {
        let (name, value, token) = match &self.credentials {
            Credentials::ApiKey(key) => {
                (HeaderName::from_static("x-goog-api-key"), key.clone(), None)
            }
            Credentials::Vertex(source) => {
                let token = source.token().await?;
                (AUTHORIZATION, format!("Bearer {token}"), Some(token))
            }
        };
        let mut value = HeaderValue::from_str(&value).map_err(|_| {
            ProviderFailure::new(
                codes::AUTH_FAILED,
                format!("the {PROVIDER} credential is not a valid header value"),
                false,
                false,
            )
        })?;
        value.set_sensitive(true);
        Ok((HeaderMap::from_iter([(name, value)]), token))
    }

    /// Whether a 401 that refused `token` is worth one more try: the token is discarded.
    async fn renew(&self, token: Option<String>) -> bool {
        let (Some(refused), Credentials::Vertex(source)) = (token, &self.credentials) else {
            return false;
        };
        if !source.renewable() {
            return false;
        }
        warn!("Vertex AI refused the access token; renewing it once");
        source.discard(&refused).await;
        true
    }

    /// Sends with our credentials when `authorize`; a 401 with a renewable Vertex token is
    /// retried once with a fresh one. Any HTTP status is returned to the caller.
    async fn send(
        &self,
        authorize: bool,
        build: impl Fn() -> RequestBuilder,
    ) -> Result<Response, ProviderFailure> {
        let mut renewed = false;
        loop {
            let mut request = http::traced(build());
            let mut token = None;
            if authorize {
                let (headers, refreshed) = self.credential_headers().await?;
                request = request.headers(headers);
                token = refreshed;
            }
            let response = request
                .send()
                .await
                .map_err(|e| http::transport_failure(PROVIDER, e))?;
            if response.status() == StatusCode::UNAUTHORIZED && !renewed && self.renew(token).await
            {
                renewed = true;
                continue;
            }
            return Ok(response);
        }
    }

    /// The failure an unsuccessful answer means for `call`.
    async fn failure(&self, call: Call<'_>, response: Response) -> ProviderFailure {
        let status = response.status();
        let headers = response.headers().clone();
        let body = error_text(response).await;
        let error = operation::error_body(&body).unwrap_or_default();
        let detail = if error.message.is_empty() {
            body.chars().take(300).collect()
        } else {
            error.message.clone()
        };
        let mut failure = http::status_failure(PROVIDER, status, &headers, &detail);
        let renewable = matches!(&self.credentials, Credentials::Vertex(s) if s.renewable());
        match (status.as_u16(), call) {
            // The job itself is unharmed by our credentials: keep following it while an
            // operator fixes them (the pipeline's deadline bounds the wait).
            (401 | 403, Call::Poll | Call::Download) => failure.retryable = true,
            (401, Call::Submit { .. }) => failure.retryable = renewable,
            (400, _) if error.reasons().any(|r| r == "API_KEY_INVALID") => {
                failure = ProviderFailure::new(codes::AUTH_FAILED, failure.message, false, false);
            }
            (404, Call::Submit { model }) => {
                failure = ProviderFailure::new(
                    codes::INVALID_REQUEST,
                    format!(
                        "unknown or retired Veo model {model:?}: {}",
                        failure.message
                    ),
                    false,
                    false,
                );
            }
            (404 | 410, Call::Download) => {
                failure = ProviderFailure::new(
                    codes::RESULT_EXPIRED,
                    format!("Veo's result is gone (kept 2 days): {}", failure.message),
                    false,
                    false,
                );
            }
            (429, _) if failure.retry_after.is_none() => {
                failure.retry_after = error.retry_delay();
            }
            _ => {}
        }
        failure
    }

    async fn json(&self, call: Call<'_>, response: Response) -> Result<Value, ProviderFailure> {
        if !response.status().is_success() {
            return Err(self.failure(call, response).await);
        }
        let body = response
            .bytes()
            .await
            .map_err(|e| http::transport_failure(PROVIDER, e))?;
        serde_json::from_slice(&body).map_err(|error| {
            ProviderFailure::new(
                codes::UPSTREAM_UNAVAILABLE,
                format!("{PROVIDER} answered unreadable JSON: {error}"),
                true,
                false,
            )
        })
    }

    /// Reads the operation; `client` is the download client when the answer holds the video.
    async fn operation(
        &self,
        job_id: &str,
        client: &reqwest::Client,
    ) -> Result<Operation, ProviderFailure> {
        let response = match (&self.config.api, self.operation_name(job_id)?) {
            (VeoApi::Gemini { base_url, .. }, OperationName::Gemini { name }) => {
                let url = format!("{base_url}/{name}");
                self.send(true, || client.get(&url)).await?
            }
            (VeoApi::Vertex(vertex), OperationName::Vertex { name, model }) => {
                let url = format!("{}/{model}:fetchPredictOperation", vertex.base_url);
                let body = json!({ "operationName": name });
                self.send(true, || client.post(&url).json(&body)).await?
            }
            // `operation_name` already refused a name of the other API.
            (_, name) => {
                return Err(ProviderFailure::new(
                    codes::NOT_FOUND,
                    format!("{name:?} is not an operation of the configured Veo API"),
                    false,
                    false,
                ))
            }
        };
        let value = self.json(Call::Poll, response).await?;
        serde_json::from_value(value).map_err(|error| {
            ProviderFailure::new(
                codes::UPSTREAM_UNAVAILABLE,
                format!("{PROVIDER} answered an unexpected operation: {error}"),
                true,
                false,
            )
        })
    }

    /// Progress from the time since this worker first saw `job_id`.
    fn estimate(&self, job_id: &str) -> u8 {
        let mut started = self.started.lock().unwrap_or_else(PoisonError::into_inner);
        let elapsed = started
            .entry(job_id.to_owned())
            .or_insert_with(Instant::now)
            .elapsed();
        let percent = elapsed.as_millis() * 100 / EXPECTED_RENDER_TIME.as_millis();
        u8::try_from(percent.min(u128::from(MAX_ESTIMATE))).unwrap_or(MAX_ESTIMATE)
    }

    fn forget(&self, job_id: &str) {
        self.started
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(job_id);
    }
}

#[async_trait]
impl VideoProvider for Veo {
    fn kind(&self) -> ProviderKind {
        ProviderKind::Veo
    }

    async fn submit(&self, job: &Job) -> Result<String, ProviderFailure> {
        let model = if job.model.is_empty() {
            self.config.default_model.as_str()
        } else {
            job.model.as_str()
        };
        if !config::is_model_id(model) {
            return Err(ProviderFailure::new(
                codes::INVALID_REQUEST,
                format!("{model:?} is not a Veo model id"),
                false,
                false,
            ));
        }
        let output_uri = match &self.config.api {
            VeoApi::Vertex(vertex) => vertex.output_uri.as_deref(),
            VeoApi::Gemini { .. } => None,
        };
        let body = request::request_body(job, output_uri)?;
        let url = self.submit_url(model);
        let response = self.send(true, || self.api.post(&url).json(&body)).await?;
        let answer = self.json(Call::Submit { model }, response).await?;
        let name = answer.get("name").and_then(Value::as_str).unwrap_or("");
        if let Err(failure) = self.operation_name(name) {
            // Accepted, perhaps running, but impossible to follow.
            return Err(ProviderFailure::new(
                codes::GENERATION_FAILED,
                format!("{PROVIDER} accepted the job without a usable operation: {failure}"),
                true,
                false,
            ));
        }
        info!(video = %job.video_id, operation = name, "Veo accepted the job");
        self.estimate(name);
        Ok(name.to_owned())
    }

    async fn find(&self, _job: &Job, _since: DateTime<Utc>) -> Result<Lookup, ProviderFailure> {
        // Operations carry no client reference and cannot be listed: we cannot tell.
        Ok(Lookup::Unknown)
    }

    async fn poll(&self, job_id: &str) -> Result<JobState, ProviderFailure> {
        let outcome = self.operation(job_id, &self.api).await?.outcome();
        Ok(match outcome {
            Outcome::Running => JobState::Running {
                progress: self.estimate(job_id),
            },
            Outcome::Done(_) => {
                self.forget(job_id);
                JobState::Succeeded
            }
            Outcome::Failed(failure) => {
                self.forget(job_id);
                JobState::Failed(failure)
            }
        })
    }

    async fn fetch(&self, job_id: &str, destination: &Path) -> Result<(), ProviderFailure> {
        match self.operation(job_id, &self.long_calls).await?.outcome() {
            Outcome::Done(source) => self.download(source, destination).await,
            Outcome::Failed(failure) => Err(failure),
            Outcome::Running => Err(ProviderFailure::new(
                codes::UPSTREAM_UNAVAILABLE,
                format!("{PROVIDER} has not finished {job_id} yet"),
                true,
                false,
            )),
        }
    }

    async fn cancel(&self, job_id: &str) -> Result<Cancellation, ProviderFailure> {
        // Veo documents no cancellation: the render finishes (and is billed) upstream; we
        // stop following it.
        self.forget(job_id);
        Ok(Cancellation::Unsupported)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_progress_estimate_starts_at_zero_and_stays_below_done() {
        let config = VeoConfig::from_lookup(|name| {
            (name == "FRAMEGATE_VEO_API_KEY").then(|| "k".to_owned())
        })
        .expect("config")
        .expect("configured");
        let veo = Veo::new(config);
        let id = "models/m/operations/a";
        assert_eq!(veo.estimate(id), 0);
        let started_ago = |ago: Duration| {
            let at = Instant::now()
                .checked_sub(ago)
                .expect("uptime above ten minutes");
            veo.started.lock().expect("lock").insert(id.into(), at);
        };
        started_ago(EXPECTED_RENDER_TIME / 2);
        assert_eq!(veo.estimate(id), 50);
        started_ago(EXPECTED_RENDER_TIME * 3);
        assert_eq!(veo.estimate(id), MAX_ESTIMATE);
        veo.forget(id);
        assert_eq!(veo.estimate(id), 0);
    }
}
