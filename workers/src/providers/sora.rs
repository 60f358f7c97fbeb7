//! The OpenAI Sora 2 adapter, speaking the Videos API wire format.
//!
//! OpenAI shut its own Videos API down on 2026-09-24, but compatible gateways still serve the
//! format, so the adapter follows the official spec (`docs/specs/openai-videos.openapi.json`)
//! at a configurable base URL; `tests/it/sora.rs` validates every request shape it can send
//! against that spec. Decisions the format forces on us:
//!
//! - There is no negative-prompt field and no seed, and unknown fields are not part of the
//!   contract. The negative prompt is folded into the prompt as a trailing `Avoid: ...`
//!   paragraph (the model reads plain language); the seed is dropped, so Sora renders are not
//!   reproducible.
//! - A start image must match the output size exactly, so it is scaled to cover that size,
//!   center-cropped and re-encoded in its own format (JPEG or PNG).
//! - `poll` can only return a state, so the `openai-poll-after-ms` hint is kept per job and
//!   read with [`Sora::poll_after`].
//! - The API has no cancel: deleting the video is the closest thing, and an unfinished video
//!   may refuse it (cancellation is best effort for the pipeline anyway).
//! - Content downloads go through [`super::download`]: the key goes only to the configured
//!   base URL's origin, and a gateway redirecting elsewhere is held to public addresses, the
//!   size cap and a video (or image) content type.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use framegate_domain::{ProviderKind, REDACTED};
use reqwest::header::{HeaderMap, HeaderValue, AUTHORIZATION};
use reqwest::multipart::Form;
use reqwest::{RequestBuilder, Response, Url};
use tracing::{debug, instrument, warn};

use self::request::{reference_part, CreateVideo};
use self::wire::{generation_failure, upstream_failure, VideoList, VideoObject};
use super::download::{self, DownloadConfig, Downloader, Expect, Fetched};
use super::http;
use crate::provider::{codes, Cancellation, Job, JobState, Lookup, ProviderFailure, VideoProvider};

mod request;
mod wire;

const PROVIDER: &str = "sora";
pub const DEFAULT_BASE_URL: &str = "https://api.openai.com/v1";
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);
/// Result downloads carry whole MP4s: far longer than an API call may take.
const DOWNLOAD_TIMEOUT: Duration = Duration::from_secs(600);
const POLL_AFTER_HEADER: &str = "openai-poll-after-ms";
/// `GET /videos` page size: the spec's maximum.
const LIST_PAGE_SIZE: &str = "100";
/// How many pages `find` reads before it answers [`Lookup::Unknown`].
const LIST_MAX_PAGES: usize = 20;
/// Seconds of disagreement allowed between our clock and the provider's `created_at`.
const CLOCK_SKEW_SECONDS: i64 = 5;
/// Poll hints kept at most; jobs abandoned without a final poll would otherwise pile up.
const MAX_POLL_HINTS: usize = 10_000;

/// Where and how to reach a Videos API.
#[derive(Clone)]
pub struct SoraConfig {
    base_url: Url,
    api_key: String,
    timeout: Duration,
    downloads: DownloadConfig,
}

impl SoraConfig {
    pub fn new(base_url: &str, api_key: impl Into<String>) -> Result<Self, String> {
        let base_url = Url::parse(base_url.trim_end_matches('/'))
            .map_err(|e| format!("FRAMEGATE_SORA_BASE_URL: {e}"))?;
        if !matches!(base_url.scheme(), "http" | "https") || base_url.cannot_be_a_base() {
            return Err("FRAMEGATE_SORA_BASE_URL: must be an http(s) URL".to_owned());
        }
        Ok(Self {
            base_url,
            api_key: api_key.into(),
            timeout: DEFAULT_TIMEOUT,
            downloads: DownloadConfig::default(),
        })
    }

    /// `None` when `FRAMEGATE_SORA_API_KEY` is unset or blank: the provider is then disabled.
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Option<Self>, String> {
        let Some(api_key) = get("FRAMEGATE_SORA_API_KEY").filter(|k| !k.trim().is_empty()) else {
            return Ok(None);
        };
        let base_url = get("FRAMEGATE_SORA_BASE_URL").unwrap_or_else(|| DEFAULT_BASE_URL.into());
        let mut config = Self::new(&base_url, api_key.trim())?;
        config.downloads = DownloadConfig::from_lookup(&get)?;
        if let Some(seconds) = get("FRAMEGATE_SORA_TIMEOUT_SECS") {
            let seconds: u64 = seconds
                .trim()
                .parse()
                .map_err(|e| format!("FRAMEGATE_SORA_TIMEOUT_SECS: {e}"))?;
            config.timeout = Duration::from_secs(seconds.max(1));
        }
        Ok(Some(config))
    }

    /// The limit on each API call (downloads get [`DOWNLOAD_TIMEOUT`]).
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The size cap and address filter of content downloads.
    pub fn with_downloads(mut self, downloads: DownloadConfig) -> Self {
        self.downloads = downloads;
        self
    }

    pub fn base_url(&self) -> &Url {
        &self.base_url
    }
}

impl std::fmt::Debug for SoraConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SoraConfig")
            .field("base_url", &self.base_url.as_str())
            .field("api_key", &REDACTED)
            .field("timeout", &self.timeout)
            .field("downloads", &self.downloads)
            .finish()
    }
}

pub struct Sora {
    config: SoraConfig,
    client: reqwest::Client,
    /// Content downloads, with the key for the configured origin only.
    downloader: Downloader,
    credentials: HeaderMap,
    /// The latest `openai-poll-after-ms` per unfinished job.
    poll_hints: Mutex<HashMap<String, Duration>>,
}

impl Sora {
    pub fn new(config: SoraConfig) -> Self {
        let downloader = Downloader::new(
            PROVIDER,
            config.downloads,
            DOWNLOAD_TIMEOUT,
            [&config.base_url],
        );
        let mut credentials = HeaderMap::new();
        if let Ok(mut bearer) = HeaderValue::from_str(&format!("Bearer {}", config.api_key)) {
            bearer.set_sensitive(true);
            credentials.insert(AUTHORIZATION, bearer);
        }
        Self {
            config,
            client: http::client(DOWNLOAD_TIMEOUT),
            downloader,
            credentials,
            poll_hints: Mutex::new(HashMap::new()),
        }
    }

    /// How long the provider asked us to wait before polling `job_id` again, as of its last
    /// poll; `None` once the job is final or when the provider gave no hint.
    pub fn poll_after(&self, job_id: &str) -> Option<Duration> {
        self.hints().get(job_id).copied()
    }

    /// Downloads a finished job's thumbnail (WebP) to `destination`.
    pub async fn fetch_thumbnail(
        &self,
        job_id: &str,
        destination: &Path,
    ) -> Result<(), ProviderFailure> {
        self.download(job_id, "thumbnail", Expect::Image, destination)
            .await
    }

    fn hints(&self) -> std::sync::MutexGuard<'_, HashMap<String, Duration>> {
        self.poll_hints
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn remember_poll_hint(&self, job_id: &str, hint: Option<Duration>) {
        let mut hints = self.hints();
        match hint {
            Some(hint) => {
                if hints.len() >= MAX_POLL_HINTS && !hints.contains_key(job_id) {
                    hints.clear();
                }
                hints.insert(job_id.to_owned(), hint);
            }
            None => {
                hints.remove(job_id);
            }
        }
    }

    /// `{base}/{segments...}`, each segment percent-encoded (job ids come from upstream).
    fn url(&self, segments: &[&str]) -> Url {
        let mut url = self.config.base_url.clone();
        // An http(s) URL can always be a base: `SoraConfig::new` checked it.
        if let Ok(mut path) = url.path_segments_mut() {
            path.pop_if_empty().extend(segments);
        }
        url
    }

    /// Sends with the key and `timeout`; any non-2xx answer becomes the mapped failure.
    async fn send(
        &self,
        request: RequestBuilder,
        timeout: Duration,
    ) -> Result<Response, ProviderFailure> {
        let response = http::traced(request)
            .bearer_auth(&self.config.api_key)
            .timeout(timeout)
            .send()
            .await
            .map_err(|e| http::transport_failure(PROVIDER, e))?;
        let status = response.status();
        if status.is_success() {
            return Ok(response);
        }
        let headers = response.headers().clone();
        let body = download::error_text(response).await;
        Err(upstream_failure(status, &headers, &body))
    }

    async fn download(
        &self,
        job_id: &str,
        variant: &str,
        expect: Expect,
        destination: &Path,
    ) -> Result<(), ProviderFailure> {
        let mut url = self.url(&["videos", job_id, "content"]);
        url.query_pairs_mut().append_pair("variant", variant);
        let fetched = self
            .downloader
            .to_file(url, &self.credentials, expect, destination)
            .await?;
        let Fetched::Refused(response) = fetched else {
            return Ok(());
        };
        let status = response.status();
        let headers = response.headers().clone();
        let body = download::error_text(response).await;
        match upstream_failure(status, &headers, &body) {
            // Assets live about an hour; the user is not charged for our late download.
            failure if failure.code == codes::NOT_FOUND => Err(ProviderFailure::new(
                codes::RESULT_EXPIRED,
                format!("the {variant} of {job_id} is no longer available"),
                false,
                false,
            )),
            failure => Err(failure),
        }
    }
}

#[async_trait]
impl VideoProvider for Sora {
    fn kind(&self) -> ProviderKind {
        ProviderKind::Sora
    }

    /// The last `openai-poll-after-ms` the job's status came with.
    fn poll_after(&self, job_id: &str) -> Option<Duration> {
        Sora::poll_after(self, job_id)
    }

    #[instrument(skip_all, fields(video = %job.video_id, model = %job.model))]
    async fn submit(&self, job: &Job) -> Result<String, ProviderFailure> {
        let create = CreateVideo::from_job(job)?;
        let mut form = Form::new()
            .text("prompt", create.prompt)
            .text("model", create.model)
            .text("seconds", create.seconds)
            .text("size", create.size.wire);
        if let Some(image) = &job.image {
            form = form.part("input_reference", reference_part(image, create.size).await?);
        }
        let request = self.client.post(self.url(&["videos"])).multipart(form);
        let video: VideoObject = read_json(self.send(request, self.config.timeout).await?).await?;
        debug!(job_id = %video.id, "submitted");
        Ok(video.id)
    }

    /// Lists recent videos newest first and matches what `submit` would have sent. Residual
    /// risk: the format has no client reference, so a video of the same prompt, model, size
    /// and duration created since `since` by another request on the same account (or a start
    /// image that differs, which the video object does not show) is taken for this one.
    #[instrument(skip_all, fields(video = %job.video_id))]
    async fn find(&self, job: &Job, since: DateTime<Utc>) -> Result<Lookup, ProviderFailure> {
        let create = CreateVideo::from_job(job)?;
        let earliest = since.timestamp() - CLOCK_SKEW_SECONDS;
        let mut after: Option<String> = None;
        for _ in 0..LIST_MAX_PAGES {
            let mut url = self.url(&["videos"]);
            {
                let mut query = url.query_pairs_mut();
                query.append_pair("limit", LIST_PAGE_SIZE);
                query.append_pair("order", "desc");
                if let Some(after) = &after {
                    query.append_pair("after", after);
                }
            }
            let response = self.send(self.client.get(url), self.config.timeout).await?;
            let page: VideoList = read_json(response).await?;
            if let Some(found) = page
                .data
                .iter()
                .find(|video| video.created_at >= earliest && create.made(video))
            {
                return Ok(Lookup::Found(found.id.clone()));
            }
            let oldest = page.data.iter().map(|video| video.created_at).min();
            match (page.has_more, oldest, page.data.last()) {
                (true, Some(oldest), Some(last)) if oldest >= earliest => {
                    after = Some(page.last_id.unwrap_or_else(|| last.id.clone()));
                }
                _ => return Ok(Lookup::NotSubmitted),
            }
        }
        Ok(Lookup::Unknown)
    }

    #[instrument(skip_all, fields(job_id = %job_id))]
    async fn poll(&self, job_id: &str) -> Result<JobState, ProviderFailure> {
        let request = self.client.get(self.url(&["videos", job_id]));
        let response = self.send(request, self.config.timeout).await?;
        let hint = http::millis_header(response.headers(), POLL_AFTER_HEADER);
        let video: VideoObject = read_json(response).await?;
        let state = match video.status.as_str() {
            "queued" => JobState::Queued,
            "in_progress" => JobState::Running {
                progress: video.progress.unwrap_or(0).clamp(0, 100) as u8,
            },
            "completed" => JobState::Succeeded,
            "failed" => JobState::Failed(generation_failure(video.error)),
            other => {
                warn!(status = other, "unknown video status");
                return Err(ProviderFailure::new(
                    codes::UPSTREAM_UNAVAILABLE,
                    format!("sora reported an unknown status {other:?}"),
                    true,
                    false,
                ));
            }
        };
        let unfinished = matches!(state, JobState::Queued | JobState::Running { .. });
        self.remember_poll_hint(job_id, hint.filter(|_| unfinished));
        Ok(state)
    }

    #[instrument(skip_all, fields(job_id = %job_id))]
    async fn fetch(&self, job_id: &str, destination: &Path) -> Result<(), ProviderFailure> {
        self.download(job_id, "video", Expect::Video, destination)
            .await
    }

    #[instrument(skip_all, fields(job_id = %job_id))]
    /// The Videos API has no cancellation: `DELETE /videos/{id}` removes a video and its
    /// assets (the spec: completed or failed ones), so the render is billed either way.
    async fn cancel(&self, job_id: &str) -> Result<Cancellation, ProviderFailure> {
        self.remember_poll_hint(job_id, None);
        let request = self.client.delete(self.url(&["videos", job_id]));
        match self.send(request, self.config.timeout).await {
            Ok(_) => Ok(Cancellation::Unsupported),
            Err(failure) if failure.code == codes::NOT_FOUND => Ok(Cancellation::Unsupported),
            Err(failure) => Err(failure),
        }
    }
}

async fn read_json<T: serde::de::DeserializeOwned>(
    response: Response,
) -> Result<T, ProviderFailure> {
    let body = response
        .bytes()
        .await
        .map_err(|e| http::transport_failure(PROVIDER, e))?;
    serde_json::from_slice(&body).map_err(|e| {
        ProviderFailure::new(
            codes::UPSTREAM_UNAVAILABLE,
            format!("sora answered with an unexpected body: {e}"),
            true,
            false,
        )
    })
}
