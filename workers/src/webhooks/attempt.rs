//! One delivery attempt over HTTP: the Standard Webhooks headers signed at send time over the
//! exact body sent, the delivery's W3C `traceparent` when it has one, no redirects, a 10 s
//! budget for connecting and answering, and at most [`KEPT_BODY_BYTES`] of the answer read.
//!
//! Addresses: unless `allow_private`, the host must resolve to public addresses only. The
//! check is the provider downloads' guard (`providers::download`): it runs inside the resolver
//! the connection uses ([`PublicOnly`]), so the address checked is the address connected to
//! and DNS rebinding has no window; IP literals never reach a resolver and are checked first
//! ([`check_literal`]).

use std::error::Error as _;
use std::sync::Arc;
use std::time::{Duration, Instant};

use framegate_commands::webhook_signature::{signature_header, WebhookSecret};
use framegate_commands::TraceContext;
use reqwest::{Client, Url};

use crate::providers::download::{check_literal, Blocked, PublicOnly};

/// How much of a response body is read and kept for the delivery log.
pub const KEPT_BODY_BYTES: usize = 4096;

/// What deliveries identify themselves as.
pub const USER_AGENT: &str = concat!("Framegate-Webhooks/", env!("CARGO_PKG_VERSION"));

/// The client every attempt of a process uses (its connection pool is shared).
pub fn client(allow_private: bool, timeout: Duration) -> reqwest::Result<Client> {
    let mut builder = Client::builder()
        .user_agent(USER_AGENT)
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(timeout)
        .timeout(timeout)
        // Through a proxy the resolver would check the proxy, not the receiver (ADR 0025).
        .no_proxy();
    if !allow_private {
        builder = builder.dns_resolver(Arc::new(PublicOnly));
    }
    builder.build()
}

/// How an attempt went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    /// The status, if the endpoint answered.
    pub status: Option<u16>,
    pub latency: Duration,
    /// Why it did not count as delivered (a non-2xx status is described here too).
    pub error: Option<String>,
    /// The first [`KEPT_BODY_BYTES`] of the answer, as text.
    pub body: Option<String>,
}

impl Answer {
    pub fn delivered(&self) -> bool {
        self.error.is_none()
    }

    pub fn gone(&self) -> bool {
        self.status == Some(410)
    }

    fn failed(started: Instant, error: String) -> Self {
        Self {
            status: None,
            latency: started.elapsed(),
            error: Some(error),
            body: None,
        }
    }
}

/// The request `post` sends, signed now.
pub struct Signed<'a> {
    /// Parsed once per run ([`target`]): every row of a run goes to the same URL.
    pub url: &'a Result<Url, String>,
    pub message_id: &'a str,
    pub body: &'a str,
    pub secrets: &'a [WebhookSecret],
}

/// `url` parsed as a delivery's target: an http(s) URL, or why not.
pub fn target(url: &str) -> Result<Url, String> {
    match Url::parse(url) {
        Ok(url) if matches!(url.scheme(), "http" | "https") => Ok(url),
        _ => Err("the URL is not an http(s) URL".to_owned()),
    }
}

/// Sends one attempt. Never fails: whatever went wrong is in the [`Answer`].
pub async fn post(client: &Client, allow_private: bool, request: Signed<'_>) -> Answer {
    let started = Instant::now();
    let url = match request.url {
        Ok(url) => url,
        Err(why) => return Answer::failed(started, why.clone()),
    };
    if !allow_private {
        if let Err(blocked) = check_literal(url) {
            return Answer::failed(started, blocked.to_string());
        }
    }
    let timestamp = chrono::Utc::now().timestamp();
    let secrets: Vec<&WebhookSecret> = request.secrets.iter().collect();
    let signature = signature_header(
        &secrets,
        request.message_id,
        timestamp,
        request.body.as_bytes(),
    );
    let mut builder = client.post(url.clone());
    // The delivery's trace, passed on the way every traced HTTP call does (W3C).
    if let Some(trace) = TraceContext::current() {
        for (name, value) in trace.headers() {
            builder = builder.header(name, value);
        }
    }
    let sent = builder
        .header("content-type", "application/json")
        .header("webhook-id", request.message_id)
        .header("webhook-timestamp", timestamp.to_string())
        .header("webhook-signature", signature)
        .body(request.body.to_owned())
        .send()
        .await;
    let mut response = match sent {
        Ok(response) => response,
        Err(error) => return Answer::failed(started, describe(error)),
    };
    let status = response.status();
    // The status is the receipt: a body that breaks off changes nothing.
    let mut kept = Vec::new();
    while kept.len() < KEPT_BODY_BYTES {
        let Ok(Some(chunk)) = response.chunk().await else {
            break;
        };
        let room = KEPT_BODY_BYTES - kept.len();
        kept.extend_from_slice(&chunk[..chunk.len().min(room)]);
    }
    // The rest of the body is never read: the connection is dropped with the response.
    drop(response);
    let error = if status.is_success() {
        None
    } else if status.is_redirection() {
        Some(format!("answered {status}; redirects are not followed"))
    } else {
        Some(format!("answered {status}"))
    };
    Answer {
        status: Some(status.as_u16()),
        latency: started.elapsed(),
        error,
        body: (!kept.is_empty()).then(|| String::from_utf8_lossy(&kept).into_owned()),
    }
}

/// The error and its causes in one line, naming a refused address plainly. Never the URL:
/// it is the user's, and may carry a token in its query (it goes to logs and the log API).
fn describe(error: reqwest::Error) -> String {
    let error = error.without_url();
    let error = &error;
    let mut source = error.source();
    while let Some(cause) = source {
        if let Some(blocked) = cause.downcast_ref::<Blocked>() {
            return blocked.to_string();
        }
        source = cause.source();
    }
    if error.is_timeout() {
        return "timed out".to_owned();
    }
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
