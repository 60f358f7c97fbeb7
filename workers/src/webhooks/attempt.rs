//! One delivery attempt over HTTP: the Standard Webhooks headers signed at send time over the
//! exact body sent, the delivery's W3C `traceparent` when it has one, no redirects, a budget
//! (10 s by default) for connecting, answering and the answer's first [`KEPT_BODY_BYTES`], and
//! at most that much of the answer read.
//!
//! Transport and addresses are [`super::http`]: unless `allow_private`, a host must resolve to
//! public addresses only, checked where the connection is made (so the address checked is the
//! address connected to, and DNS rebinding has no window).

use std::time::{Duration, Instant};

use bytes::Bytes;
use framegate_commands::webhook_signature::Signer;
use framegate_commands::TraceContext;
use http_body_util::{BodyExt as _, Full};
use hyper::header::{HeaderName, HeaderValue, CONTENT_LENGTH, CONTENT_TYPE, HOST, USER_AGENT};
use hyper::{Method, Request};

use super::http::{Client, Target};

/// How much of a response body is read and kept for the delivery log.
pub const KEPT_BODY_BYTES: usize = 4096;

/// What deliveries identify themselves as.
pub const AGENT: &str = concat!("Framegate-Webhooks/", env!("CARGO_PKG_VERSION"));

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
    /// Parsed once per run ([`Target::parse`]): every row of a run goes to the same URL.
    pub url: &'a Result<Target, String>,
    pub message_id: &'a str,
    pub body: Bytes,
    pub signer: &'a Signer,
}

const WEBHOOK_ID: HeaderName = HeaderName::from_static("webhook-id");
const WEBHOOK_TIMESTAMP: HeaderName = HeaderName::from_static("webhook-timestamp");
const WEBHOOK_SIGNATURE: HeaderName = HeaderName::from_static("webhook-signature");

/// Sends one attempt within `timeout`. Never fails: whatever went wrong is in the [`Answer`].
pub async fn post(client: &Client, timeout: Duration, request: Signed<'_>) -> Answer {
    let started = Instant::now();
    let target = match request.url {
        Ok(target) => target,
        Err(why) => return Answer::failed(started, why.clone()),
    };
    let sent = match signed(target, request) {
        Ok(sent) => sent,
        Err(why) => return Answer::failed(started, why),
    };
    match tokio::time::timeout(timeout, exchange(client, target, sent)).await {
        Ok(Ok((status, kept))) => answered(started, status, kept),
        Ok(Err(why)) => Answer::failed(started, why),
        Err(_) => Answer::failed(started, "timed out".to_owned()),
    }
}

/// The request, signed now.
fn signed(target: &Target, request: Signed<'_>) -> Result<Request<Full<Bytes>>, String> {
    let timestamp = chrono::Utc::now().timestamp();
    let signature = request
        .signer
        .header(request.message_id, timestamp, &request.body);
    let value = |text: &str| {
        HeaderValue::from_str(text).map_err(|_| "a header value is not valid".to_owned())
    };
    let length = request.body.len();
    let mut sent = Request::new(Full::new(request.body));
    *sent.method_mut() = Method::POST;
    *sent.uri_mut() = target.path().clone();
    let headers = sent.headers_mut();
    headers.reserve(9);
    headers.insert(HOST, target.host_header().clone());
    headers.insert(USER_AGENT, HeaderValue::from_static(AGENT));
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    headers.insert(CONTENT_LENGTH, HeaderValue::from(length));
    headers.insert(WEBHOOK_ID, value(request.message_id)?);
    headers.insert(WEBHOOK_TIMESTAMP, HeaderValue::from(timestamp));
    headers.insert(WEBHOOK_SIGNATURE, value(&signature)?);
    // The delivery's trace, passed on the way every traced HTTP call does (W3C).
    if let Some(trace) = TraceContext::current() {
        for (name, text) in trace.headers() {
            headers.insert(HeaderName::from_static(name), value(text)?);
        }
    }
    Ok(sent)
}

/// Sends `request` and reads the answer's status and first [`KEPT_BODY_BYTES`]; a connection
/// whose answer was read to its end is kept for the next attempt.
async fn exchange(
    client: &Client,
    target: &Target,
    request: Request<Full<Bytes>>,
) -> Result<(hyper::StatusCode, Vec<u8>), String> {
    let (response, connection) = client
        .send(target, request)
        .await
        .map_err(|failure| failure.to_string())?;
    let status = response.status();
    let mut body = response.into_body();
    let mut kept = Vec::new();
    let mut ended = false;
    // The status is the receipt: a body that breaks off changes nothing.
    while kept.len() < KEPT_BODY_BYTES {
        match body.frame().await {
            Some(Ok(frame)) => {
                if let Ok(data) = frame.into_data() {
                    let room = KEPT_BODY_BYTES - kept.len();
                    kept.extend_from_slice(&data[..data.len().min(room)]);
                }
            }
            Some(Err(_)) => break,
            None => {
                ended = true;
                break;
            }
        }
    }
    // The rest of a longer body is never read: its connection is closed, not kept.
    if ended || hyper::body::Body::is_end_stream(&body) {
        client.keep(connection);
    }
    Ok((status, kept))
}

fn answered(started: Instant, status: hyper::StatusCode, kept: Vec<u8>) -> Answer {
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
