//! The request-body deadline: a request's whole body must arrive within
//! `FRAMEGATE_HTTP_BODY_TIMEOUT_SECONDS` of its head, or the request is answered 408
//! `request_timeout` and its connection is closed. A body that declares its length gets less
//! when it is small: [`BODY_GRACE`] plus its length at [`MIN_BODY_RATE`], so a client that
//! sends a head and stalls on a few bytes of JSON holds its connection slot for seconds, not
//! for the minute an upload may need (the black-box attack of issue 12: 1,100 stalled bodies
//! kept every slot for 60 s).
//!
//! The deadline is total, not per read: tower-http's `RequestBodyTimeoutLayer` restarts its
//! clock on every chunk, so a client trickling a byte every few seconds would hold a
//! connection, a handler and its buffers for as long as it liked, uploads included. Whatever
//! the handler made of the failed read (an extractor's 400, the idempotency layer's
//! `unreadable_body`, a multipart error), the response is the 408: handlers read their body
//! before they act, so nothing was done and the client may retry. `Connection: close` keeps
//! hyper from reading the rest of a body nobody wants.

use std::error::Error;
use std::fmt;
use std::future::Future as _;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::{Body, Bytes, HttpBody};
use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use hyper::body::{Frame, SizeHint};
use tokio::time::{Instant, Sleep};

use crate::error::ApiError;
use crate::AppState;

/// Middleware (`axum::middleware::from_fn_with_state`), outside everything that reads bodies.
pub async fn layer(State(state): State<AppState>, request: Request, next: Next) -> Response {
    // Most requests have no body: nothing to time.
    if request.body().is_end_stream() {
        return next.run(request).await;
    }
    let timeout = deadline_for(
        request
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok()),
        state.config.http.body_timeout,
    );
    let expired = Arc::new(AtomicBool::new(false));
    let deadline = Instant::now() + timeout;
    let request = request.map(|body| {
        Body::new(DeadlineBody {
            inner: body,
            deadline: Box::pin(tokio::time::sleep_until(deadline)),
            expired: expired.clone(),
            complete: false,
        })
    });
    let response = next.run(request).await;
    if !expired.load(Ordering::Acquire) {
        return response;
    }
    tracing::info!(
        timeout_seconds = timeout.as_secs(),
        "request body too slow: 408"
    );
    let mut response = ApiError::BadRequest {
        status: StatusCode::REQUEST_TIMEOUT,
        code: "request_timeout",
        message: format!(
            "the request body did not arrive within {} seconds",
            timeout.as_secs()
        ),
    }
    .into_response();
    response
        .headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    response
}

/// What any body may take beyond its length at [`MIN_BODY_RATE`].
pub const BODY_GRACE: Duration = Duration::from_secs(5);

/// The slowest upload rate a declared length is granted time for (128 kbit/s).
pub const MIN_BODY_RATE: u64 = 16 * 1024;

/// The time a body of `declared` bytes (unknown: chunked) gets, at most `limit`.
fn deadline_for(declared: Option<u64>, limit: Duration) -> Duration {
    match declared {
        Some(bytes) => limit.min(BODY_GRACE + Duration::from_secs(bytes / MIN_BODY_RATE)),
        None => limit,
    }
}

/// The error a body past its deadline reads as.
#[derive(Debug)]
pub struct BodyTimedOut;

impl fmt::Display for BodyTimedOut {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("the request body did not arrive in time")
    }
}

impl Error for BodyTimedOut {}

struct DeadlineBody {
    inner: Body,
    deadline: Pin<Box<Sleep>>,
    /// Set once the deadline passed with the body unfinished; the layer answers 408.
    expired: Arc<AtomicBool>,
    /// The whole body arrived: the deadline no longer matters.
    complete: bool,
}

impl HttpBody for DeadlineBody {
    type Data = Bytes;
    type Error = axum::BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = self.get_mut();
        if this.expired.load(Ordering::Acquire) {
            return Poll::Ready(Some(Err(Box::new(BodyTimedOut))));
        }
        // What has arrived is taken even at the deadline.
        if let Poll::Ready(frame) = Pin::new(&mut this.inner).poll_frame(cx) {
            if frame.is_none() || this.inner.is_end_stream() {
                this.complete = true;
            }
            return Poll::Ready(frame.map(|result| result.map_err(Into::into)));
        }
        if !this.complete && this.deadline.as_mut().poll(cx).is_ready() {
            this.expired.store(true, Ordering::Release);
            return Poll::Ready(Some(Err(Box::new(BodyTimedOut))));
        }
        Poll::Pending
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_bodies_get_seconds_and_large_ones_up_to_the_limit() {
        let limit = Duration::from_secs(60);
        assert_eq!(deadline_for(Some(100), limit), BODY_GRACE);
        assert_eq!(
            deadline_for(Some(10 * MIN_BODY_RATE), limit),
            BODY_GRACE + Duration::from_secs(10)
        );
        assert_eq!(
            deadline_for(Some(10 << 20), limit),
            limit,
            "a 10 MiB upload"
        );
        assert_eq!(deadline_for(None, limit), limit, "chunked");
        assert_eq!(
            deadline_for(Some(100), Duration::from_secs(2)),
            Duration::from_secs(2),
            "never more than the configured limit"
        );
    }
}
