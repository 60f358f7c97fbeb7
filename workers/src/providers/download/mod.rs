//! Result downloads, the same for every provider: a result URL is the one thing an upstream
//! decides that makes us connect somewhere, so it is where server-side request forgery and
//! unbounded downloads are stopped (docs/adr/0025-provider-downloads.md).
//!
//! - Redirects are followed by hand, at most [`MAX_REDIRECTS`], http(s) only, no URL twice.
//! - A hop is *configured* while the chain has not left the origins the operator configured
//!   (the provider's API, Vertex's storage API). Configured hops get the provider's
//!   credentials and ordinary DNS, like API calls. From the first hop elsewhere on, the chain
//!   gets neither: no credentials even if it comes back, and only public addresses (checked
//!   in the resolver the client connects with, and on IP literals) unless
//!   [`DownloadConfig::allow_private`].
//! - The body must be of the expected type and fit under the cap ([`body`]).
//!
//! Failures map onto the shared error model. A refused address or scheme, a wrong type and
//! an oversized body are final `invalid_output` failures: the provider's answer will not
//! change, and retrying an endless body would pull the cap's worth of bytes on every poll
//! until the job's deadline. Redirect trouble (a loop, too many hops, no `Location`) is
//! retryable, as CDN trouble usually is, and bounded by that deadline.

mod body;
mod config;
mod guard;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use reqwest::header::{HeaderMap, LOCATION};
use reqwest::{Response, Url};
use tracing::{debug, warn};

pub use self::body::{error_text, Expect};
pub use self::config::{
    DownloadConfig, ALLOW_PRIVATE_UPSTREAMS, DEFAULT_MAX_VIDEO_BYTES, MAX_DOWNLOAD_BYTES,
    MAX_IMAGE_BYTES,
};
pub use self::guard::{check_literal, is_blocked, public_only, Blocked, PublicOnly};
use crate::provider::{codes, ProviderFailure};
use crate::providers::http;

/// Redirects followed before a download gives up.
pub const MAX_REDIRECTS: usize = 5;

/// How a download ended when it did not fail on our side.
#[derive(Debug)]
pub enum Fetched {
    /// The body is in the destination file.
    Written,
    /// The last hop answered an unsuccessful status: the provider's to interpret (an expired
    /// result, a refused token to renew, ...). Nothing was written.
    Refused(Response),
}

/// One provider's downloader.
pub struct Downloader {
    provider: &'static str,
    config: DownloadConfig,
    /// The operator's base URLs: credentials may go to their origins, and their addresses
    /// are whatever the operator chose.
    configured: Vec<Url>,
    /// For configured hops. (Building a client fails only with a broken TLS backend; the
    /// error is kept rather than replaced by a default client without these settings.)
    trusted: Result<reqwest::Client, String>,
    /// For every other hop: the address filter in its resolver (unless private addresses are
    /// allowed), and no proxy, which would hide the real destination from that filter.
    guarded: Result<reqwest::Client, String>,
}

impl Downloader {
    /// `configured` are the base URLs from configuration; `timeout` bounds each hop, body
    /// included.
    pub fn new<'a>(
        provider: &'static str,
        config: DownloadConfig,
        timeout: Duration,
        configured: impl IntoIterator<Item = &'a Url>,
    ) -> Self {
        let builder = || {
            reqwest::Client::builder()
                .connect_timeout(Duration::from_secs(10))
                .timeout(timeout)
                .redirect(reqwest::redirect::Policy::none())
                .user_agent(concat!("framegate/", env!("CARGO_PKG_VERSION")))
        };
        let guarded = if config.allow_private {
            builder()
        } else {
            builder()
                .no_proxy()
                .dns_resolver(Arc::new(guard::PublicOnly))
        };
        let built = |builder: reqwest::ClientBuilder| {
            builder.build().map_err(|error| {
                warn!(provider, %error, "cannot build a download client");
                error.to_string()
            })
        };
        Self {
            provider,
            config,
            configured: configured.into_iter().cloned().collect(),
            trusted: built(builder()),
            guarded: built(guarded),
        }
    }

    /// Downloads `url` into `destination`, sending `credentials` only on configured hops.
    pub async fn to_file(
        &self,
        url: Url,
        credentials: &HeaderMap,
        expect: Expect,
        destination: &Path,
    ) -> Result<Fetched, ProviderFailure> {
        let provider = self.provider;
        let cap = match expect {
            Expect::Video => self.config.max_video_bytes,
            Expect::Image => self.config.max_video_bytes.min(MAX_IMAGE_BYTES),
        };
        let mut url = url;
        let mut visited: Vec<Url> = Vec::new();
        let mut configured = true;
        loop {
            if !matches!(url.scheme(), "http" | "https") {
                return Err(unusable(format!(
                    "{provider} pointed the download at a {} URL",
                    url.scheme()
                )));
            }
            if visited.contains(&url) {
                return Err(redirect_trouble(format!(
                    "{provider}'s download redirects in a loop"
                )));
            }
            if visited.len() > MAX_REDIRECTS {
                return Err(redirect_trouble(format!(
                    "{provider} redirected the download more than {MAX_REDIRECTS} times"
                )));
            }
            configured &= self.configured.iter().any(|c| c.origin() == url.origin());
            let request = if configured {
                self.client(&self.trusted)?
                    .get(url.clone())
                    .headers(credentials.clone())
            } else {
                if !self.config.allow_private {
                    guard::check_literal(&url).map_err(|blocked| refused(provider, &blocked))?;
                }
                self.client(&self.guarded)?.get(url.clone())
            };
            debug!(provider, hop = visited.len(), configured, "downloading");
            let response = request
                .send()
                .await
                .map_err(|error| self.transport(error))?;
            let status = response.status();
            if status.is_redirection() {
                let next = response
                    .headers()
                    .get(LOCATION)
                    .and_then(|location| location.to_str().ok())
                    .and_then(|location| url.join(location).ok())
                    .ok_or_else(|| {
                        redirect_trouble(format!(
                            "{provider} redirected the download ({status}) nowhere usable"
                        ))
                    })?;
                visited.push(std::mem::replace(&mut url, next));
                continue;
            }
            if !status.is_success() {
                return Ok(Fetched::Refused(response));
            }
            body::write(provider, response, expect, cap, destination).await?;
            return Ok(Fetched::Written);
        }
    }

    fn client<'c>(
        &self,
        client: &'c Result<reqwest::Client, String>,
    ) -> Result<&'c reqwest::Client, ProviderFailure> {
        client.as_ref().map_err(|error| {
            ProviderFailure::new(
                codes::UPSTREAM_UNAVAILABLE,
                format!("no HTTP client for {} downloads: {error}", self.provider),
                true,
                false,
            )
        })
    }

    /// A request that got no answer: final when our resolver refused the address, otherwise
    /// the usual retryable transport failure.
    fn transport(&self, error: reqwest::Error) -> ProviderFailure {
        let mut source: Option<&(dyn std::error::Error + 'static)> = Some(&error);
        while let Some(current) = source {
            if let Some(blocked) = current.downcast_ref::<Blocked>() {
                return refused(self.provider, blocked);
            }
            source = current.source();
        }
        http::transport_failure(self.provider, error)
    }
}

/// The provider's result cannot or must not be used: final, and not charged to the user.
pub(crate) fn unusable(message: String) -> ProviderFailure {
    ProviderFailure::new(codes::INVALID_OUTPUT, message, false, false)
}

fn refused(provider: &str, blocked: &Blocked) -> ProviderFailure {
    unusable(format!(
        "{provider} pointed the download at a non-public address, refused: {blocked} \
         (set {ALLOW_PRIVATE_UPSTREAMS}=true if that is intended)"
    ))
}

fn redirect_trouble(message: String) -> ProviderFailure {
    ProviderFailure::new(codes::UPSTREAM_UNAVAILABLE, message, true, false)
}
