//! The Kling adapter: text-to-video and image-to-video on Kling's API (docs/providers.md).
//!
//! Every call carries an HS256 JWT minted from the access and secret keys; one token is shared
//! and replaced when less than five minutes of its thirty remain, or when Kling answers 1004
//! (expired), after which the call is retried once. Decisions the documentation leaves open:
//!
//! - Job ids are `text2video:<task_id>` or `image2video:<task_id>`: a task is queried on the
//!   endpoint that created it, and `poll` and `fetch` get nothing but the id.
//! - `external_task_id` is our video id, so a submission lost in a crash is found by querying
//!   `GET /v1/videos/{endpoint}/{video id}` (the query path takes either id). Only HTTP 404
//!   with code 1203 ("the requested resource does not exist") means [`Lookup::NotSubmitted`];
//!   any other refusal is returned as a failure. `since` is not needed: the id is unique.
//! - A submission answered by a transport error, a 5xx or a duplicate `external_task_id` may
//!   still have created the task: it is looked up by the video id before failing.
//! - `mode` follows the resolution: 720p → `std`, 1080p → `pro` (the catalog offers exactly
//!   these for Kling). Kling takes no seed; it is ignored.
//! - Kling reports no progress: a `processing` task is estimated from its age against a
//!   five-minute render, 10–95 %, or 50 % when it carries no `created_at`.
//! - Kling has no cancel endpoint: `cancel` succeeds without a call, the pipeline records the
//!   cancellation and the upstream task runs to its end.
//! - Results are downloaded without our token (they live on a CDN), through
//!   [`super::download`]: public addresses only, the size cap, a video content type;
//!   403/404/410 there means the result expired.

mod answer;
mod request;
mod token;

use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use framegate_domain::{ProviderKind, VideoId};
use reqwest::header::HeaderMap;
use reqwest::{Method, Url};
use serde_json::Value;
use tracing::{debug, instrument, warn};

use self::answer::{parse, Created, Envelope, Refusal, Task};
use self::request::create_body;
use self::token::Tokens;
use super::download::{DownloadConfig, Downloader, Expect, Fetched};
use super::http;
use crate::provider::{codes, Cancellation, Job, JobState, Lookup, ProviderFailure, VideoProvider};

const PROVIDER: &str = "kling";
pub const DEFAULT_BASE_URL: &str = "https://api-singapore.klingai.com";

#[derive(Clone)]
pub struct KlingConfig {
    pub access_key: String,
    pub secret_key: String,
    pub base_url: Url,
    /// Per API call.
    pub request_timeout: Duration,
    /// For a result download.
    pub download_timeout: Duration,
    /// The size cap and address filter of result downloads.
    pub downloads: DownloadConfig,
}

impl std::fmt::Debug for KlingConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KlingConfig")
            .field("access_key", &self.access_key)
            .field("secret_key", &"<redacted>")
            .field("base_url", &self.base_url.as_str())
            .field("request_timeout", &self.request_timeout)
            .field("download_timeout", &self.download_timeout)
            .field("downloads", &self.downloads)
            .finish()
    }
}

impl KlingConfig {
    pub fn new(
        access_key: impl Into<String>,
        secret_key: impl Into<String>,
        base_url: Url,
    ) -> Self {
        Self {
            access_key: access_key.into(),
            secret_key: secret_key.into(),
            base_url,
            request_timeout: Duration::from_secs(30),
            download_timeout: Duration::from_secs(600),
            downloads: DownloadConfig::default(),
        }
    }

    /// FRAMEGATE_KLING_ACCESS_KEY and FRAMEGATE_KLING_SECRET_KEY (both or neither; `None` when
    /// neither is set), FRAMEGATE_KLING_BASE_URL (default [`DEFAULT_BASE_URL`]).
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Option<Self>, String> {
        const ACCESS: &str = "FRAMEGATE_KLING_ACCESS_KEY";
        const SECRET: &str = "FRAMEGATE_KLING_SECRET_KEY";
        const BASE_URL: &str = "FRAMEGATE_KLING_BASE_URL";
        let set = |name: &str| {
            get(name)
                .map(|v| v.trim().to_owned())
                .filter(|v| !v.is_empty())
        };
        let (access_key, secret_key) = match (set(ACCESS), set(SECRET)) {
            (None, None) => return Ok(None),
            (Some(access), Some(secret)) => (access, secret),
            (Some(_), None) => return Err(format!("{SECRET} must be set along with {ACCESS}")),
            (None, Some(_)) => return Err(format!("{ACCESS} must be set along with {SECRET}")),
        };
        let base = set(BASE_URL).unwrap_or_else(|| DEFAULT_BASE_URL.to_owned());
        let base_url = Url::parse(&base).map_err(|e| format!("{BASE_URL}: {e}"))?;
        if !matches!(base_url.scheme(), "http" | "https") || base_url.cannot_be_a_base() {
            return Err(format!("{BASE_URL}: must be an http(s) URL"));
        }
        let mut config = Self::new(access_key, secret_key, base_url);
        config.downloads = DownloadConfig::from_lookup(&get)?;
        Ok(Some(config))
    }
}

pub struct Kling {
    base_url: Url,
    tokens: Tokens,
    api: reqwest::Client,
    downloader: Downloader,
}

impl Kling {
    pub fn new(config: KlingConfig) -> Self {
        Self {
            tokens: Tokens::new(&config.access_key, &config.secret_key),
            api: http::client(config.request_timeout),
            downloader: Downloader::new(
                PROVIDER,
                config.downloads,
                config.download_timeout,
                [&config.base_url],
            ),
            base_url: config.base_url,
        }
    }

    fn url(&self, segments: &[&str]) -> Url {
        let mut url = self.base_url.clone();
        if let Ok(mut path) = url.path_segments_mut() {
            path.pop_if_empty().extend(segments);
        }
        url
    }

    /// One API call: code 0 gives `data`; 1004 gets a new token and one more try.
    async fn call(&self, method: Method, url: Url, body: Option<&Value>) -> Result<Value, Refusal> {
        let mut rejected: Option<String> = None;
        loop {
            let token = self
                .tokens
                .bearer(unix_now(), rejected.as_deref())
                .map_err(Refusal::Failed)?;
            let mut request =
                http::traced(self.api.request(method.clone(), url.clone())).bearer_auth(&token);
            if let Some(body) = body {
                request = request.json(body);
            }
            let transport =
                |e: reqwest::Error| Refusal::Failed(http::transport_failure(PROVIDER, e));
            let response = request.send().await.map_err(transport)?;
            let status = response.status();
            let headers = response.headers().clone();
            let text = response.text().await.map_err(transport)?;
            let Ok(envelope) = serde_json::from_str::<Envelope>(&text) else {
                let message = text.chars().take(200).collect();
                return Err(Refusal::Answered {
                    status,
                    headers,
                    code: None,
                    message,
                });
            };
            match envelope.code {
                0 if status.is_success() => return Ok(envelope.data.unwrap_or(Value::Null)),
                1004 if rejected.is_none() => {
                    debug!("kling token expired; minting a new one");
                    rejected = Some(token);
                }
                code => {
                    let message = match envelope.request_id {
                        Some(id) => format!("{} (request {id})", envelope.message),
                        None => envelope.message,
                    };
                    return Err(Refusal::Answered {
                        status,
                        headers,
                        code: Some(code),
                        message,
                    });
                }
            }
        }
    }

    async fn query(&self, endpoint: Endpoint, id: &str) -> Result<Value, Refusal> {
        let url = self.url(&["v1", "videos", endpoint.as_str(), id]);
        self.call(Method::GET, url, None).await
    }

    async fn task(&self, job_id: &str) -> Result<Task, ProviderFailure> {
        let (endpoint, task_id) = Endpoint::parse_job_id(job_id)?;
        let data = self
            .query(endpoint, task_id)
            .await
            .map_err(Refusal::into_failure)?;
        parse(data)
    }

    /// Whether Kling holds a task created for `video_id` on `endpoint`.
    async fn lookup(
        &self,
        endpoint: Endpoint,
        video_id: VideoId,
    ) -> Result<Lookup, ProviderFailure> {
        let external_id = video_id.to_string();
        match self.query(endpoint, &external_id).await {
            Ok(data) => {
                let task: Task = parse(data)?;
                let answered_for = task.task_info.and_then(|info| info.external_task_id);
                if answered_for.is_some_and(|id| id != external_id) {
                    return Err(ProviderFailure::new(
                        codes::UPSTREAM_UNAVAILABLE,
                        format!("kling answered a lookup of {external_id} with another task"),
                        true,
                        false,
                    ));
                }
                Ok(Lookup::Found(endpoint.job_id(&task.task_id)))
            }
            Err(refusal) if refusal.is_not_found() => Ok(Lookup::NotSubmitted),
            Err(refusal) => Err(refusal.into_failure()),
        }
    }
}

#[async_trait]
impl VideoProvider for Kling {
    fn kind(&self) -> ProviderKind {
        ProviderKind::Kling
    }

    #[instrument(skip_all, fields(provider = PROVIDER, video = %job.video_id))]
    async fn submit(&self, job: &Job) -> Result<String, ProviderFailure> {
        let endpoint = Endpoint::for_job(job);
        let body = create_body(job)?;
        let url = self.url(&["v1", "videos", endpoint.as_str()]);
        match self.call(Method::POST, url, Some(&body)).await {
            Ok(data) => {
                let created: Created = parse(data)?;
                Ok(endpoint.job_id(&created.task_id))
            }
            Err(refusal) if refusal.may_have_created() => {
                warn!(%refusal, "kling submission outcome unclear; looking the task up");
                match self.lookup(endpoint, job.video_id).await {
                    Ok(Lookup::Found(job_id)) => Ok(job_id),
                    _ => Err(refusal.into_failure()),
                }
            }
            Err(refusal) => Err(refusal.into_failure()),
        }
    }

    #[instrument(skip_all, fields(provider = PROVIDER, video = %job.video_id))]
    async fn find(&self, job: &Job, _since: DateTime<Utc>) -> Result<Lookup, ProviderFailure> {
        self.lookup(Endpoint::for_job(job), job.video_id).await
    }

    #[instrument(skip_all, fields(provider = PROVIDER, job_id = %job_id))]
    async fn poll(&self, job_id: &str) -> Result<JobState, ProviderFailure> {
        self.task(job_id).await?.state(unix_now_ms())
    }

    #[instrument(skip_all, fields(provider = PROVIDER, job_id = %job_id))]
    async fn fetch(&self, job_id: &str, destination: &Path) -> Result<(), ProviderFailure> {
        let task = self.task(job_id).await?;
        match task.state(unix_now_ms())? {
            JobState::Succeeded => {}
            JobState::Failed(failure) => return Err(failure),
            JobState::Queued | JobState::Running { .. } => {
                return Err(ProviderFailure::new(
                    codes::UPSTREAM_UNAVAILABLE,
                    format!("kling task {} has not finished", task.task_id),
                    true,
                    false,
                ))
            }
        }
        let url = task
            .task_result
            .and_then(|result| result.videos.into_iter().next())
            .and_then(|video| Url::parse(&video.url).ok())
            .ok_or_else(|| {
                ProviderFailure::new(
                    codes::UPSTREAM_UNAVAILABLE,
                    format!("kling task {} succeeded without a video URL", task.task_id),
                    false,
                    false,
                )
            })?;
        // No credentials: the result lives on a CDN (and where it does not, on the API's
        // own origin, a token would buy nothing either).
        let fetched = self
            .downloader
            .to_file(url, &HeaderMap::new(), Expect::Video, destination)
            .await?;
        let Fetched::Refused(response) = fetched else {
            return Ok(());
        };
        let status = response.status();
        if matches!(status.as_u16(), 403 | 404 | 410) {
            return Err(ProviderFailure::new(
                codes::RESULT_EXPIRED,
                format!("kling's result download answered {status}"),
                false,
                false,
            ));
        }
        Err(http::status_failure(
            PROVIDER,
            status,
            response.headers(),
            "result download",
        ))
    }

    /// Kling documents no cancellation: the task finishes (and is billed) upstream.
    async fn cancel(&self, _job_id: &str) -> Result<Cancellation, ProviderFailure> {
        Ok(Cancellation::Unsupported)
    }
}

/// The two creation endpoints; a task is queried on the one that created it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Endpoint {
    Text2Video,
    Image2Video,
}

impl Endpoint {
    fn for_job(job: &Job) -> Self {
        if job.image.is_some() {
            Endpoint::Image2Video
        } else {
            Endpoint::Text2Video
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            Endpoint::Text2Video => "text2video",
            Endpoint::Image2Video => "image2video",
        }
    }

    fn job_id(self, task_id: &str) -> String {
        format!("{}:{task_id}", self.as_str())
    }

    fn parse_job_id(job_id: &str) -> Result<(Self, &str), ProviderFailure> {
        let parsed = match job_id.split_once(':') {
            Some(("text2video", task)) => Some((Endpoint::Text2Video, task)),
            Some(("image2video", task)) => Some((Endpoint::Image2Video, task)),
            _ => None,
        };
        parsed.filter(|(_, task)| !task.is_empty()).ok_or_else(|| {
            ProviderFailure::new(
                codes::INVALID_REQUEST,
                format!("{job_id:?} is not a kling job id"),
                false,
                false,
            )
        })
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn unix_now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn job_ids_name_their_endpoint() {
        assert_eq!(Endpoint::Image2Video.job_id("86"), "image2video:86");
        assert_eq!(
            Endpoint::parse_job_id("text2video:86"),
            Ok((Endpoint::Text2Video, "86"))
        );
        assert_eq!(
            Endpoint::parse_job_id("image2video:86"),
            Ok((Endpoint::Image2Video, "86"))
        );
        for bad in ["86", "text2video:", "video:86"] {
            assert!(Endpoint::parse_job_id(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn configuration_needs_both_keys_or_neither() {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |name: &str| {
                pairs
                    .iter()
                    .find(|(key, _)| *key == name)
                    .map(|(_, value)| (*value).to_owned())
            }
        };
        assert_eq!(
            KlingConfig::from_lookup(env(&[])).map(|c| c.is_none()),
            Ok(true)
        );
        let only_access = KlingConfig::from_lookup(env(&[("FRAMEGATE_KLING_ACCESS_KEY", "ak")]));
        assert!(only_access
            .expect_err("one key")
            .contains("FRAMEGATE_KLING_SECRET_KEY"));
        let only_secret = KlingConfig::from_lookup(env(&[("FRAMEGATE_KLING_SECRET_KEY", "sk")]));
        assert!(only_secret
            .expect_err("one key")
            .contains("FRAMEGATE_KLING_ACCESS_KEY"));
        const BOTH: &[(&str, &str)] = &[
            ("FRAMEGATE_KLING_ACCESS_KEY", "ak"),
            ("FRAMEGATE_KLING_SECRET_KEY", "sk"),
        ];
        let config = KlingConfig::from_lookup(env(BOTH))
            .expect("valid")
            .expect("configured");
        assert_eq!(
            config.base_url.as_str(),
            "https://api-singapore.klingai.com/"
        );
        const BAD_URL: &[(&str, &str)] = &[
            ("FRAMEGATE_KLING_ACCESS_KEY", "ak"),
            ("FRAMEGATE_KLING_SECRET_KEY", "sk"),
            ("FRAMEGATE_KLING_BASE_URL", "ftp://example.com"),
        ];
        let error = KlingConfig::from_lookup(env(BAD_URL)).expect_err("bad url");
        assert!(error.contains("FRAMEGATE_KLING_BASE_URL"));
    }

    #[test]
    fn the_secret_key_never_appears_in_debug_output() {
        let url = Url::parse(DEFAULT_BASE_URL).expect("url");
        let config = KlingConfig::new("access-ak", "very-secret-sk", url);
        let printed = format!("{config:?}");
        assert!(printed.contains("access-ak"));
        assert!(!printed.contains("very-secret-sk"));
    }
}
