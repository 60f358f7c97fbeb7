//! The request-body deadline: a request's whole body must arrive within
//! `FRAMEGATE_HTTP_BODY_TIMEOUT_SECONDS` of its head, or the request is answered 408
//! `request_timeout` and its connection is closed.
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
    let timeout = state.config.http.body_timeout;
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
