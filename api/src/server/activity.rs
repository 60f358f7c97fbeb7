//! What one connection is doing, as far as its timeouts care, and the two probes that say so.
//!
//! hyper 1's own `header_read_timeout` starts as soon as a connection is ready for its next
//! request, so on a keep-alive connection it is also the idle timeout and a separate idle
//! setting could never matter. The connection keeps this clock instead, with Go net/http's
//! meaning of the two settings:
//!
//! - a new connection must deliver its first request head within the **header** timeout of
//!   being accepted; any later head within the header timeout of its first byte;
//! - between requests, before a byte of the next one has arrived, the **idle** timeout runs;
//! - while requests are being handled (head read, response not yet fully handed to hyper)
//!   nothing runs here (the body has its own deadline, `body_deadline`, and a slow handler is
//!   not the client's fault), except that a response the client stops reading (the socket
//!   refusing writes) for the idle timeout closes the connection.
//!
//! The probes: [`Watched`] wraps the socket and notices reads and refused writes; [`InFlight`]
//! is held from the moment hyper hands over a request head until that request's response
//! body is dropped (sent, or abandoned with the connection).

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use hyper::body::{Body, Frame, SizeHint};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::watch;
use tokio::time::Instant;

/// A connection's shared activity: written by the probes, watched by its task.
pub(super) type Shared = Arc<watch::Sender<Activity>>;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// Accepted, nothing read yet.
    New { since: Instant },
    /// Between requests of a keep-alive connection, nothing of the next one read yet.
    Idle { since: Instant },
    /// Part of a request head has arrived; `since` is when its clock started.
    Head { since: Instant },
    /// Requests being handled.
    Busy { in_flight: u32 },
}

/// Which limit a connection ran out of.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Expiry {
    Header,
    Idle,
    StalledWrite,
}

impl Expiry {
    pub(super) fn as_str(self) -> &'static str {
        match self {
            Expiry::Header => "header timeout",
            Expiry::Idle => "idle timeout",
            Expiry::StalledWrite => "response not read for the idle timeout",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Activity {
    phase: Phase,
    /// Since when the socket has refused to take more of a response, if it does.
    write_stalled: Option<Instant>,
}

impl Activity {
    pub(super) fn accepted(now: Instant) -> Self {
        Self {
            phase: Phase::New { since: now },
            write_stalled: None,
        }
    }

    /// When this connection is to be closed, and why, unless something happens first.
    pub(super) fn deadline(&self, header: Duration, idle: Duration) -> Option<(Instant, Expiry)> {
        match self.phase {
            Phase::New { since } | Phase::Head { since } => Some((since + header, Expiry::Header)),
            Phase::Idle { since } => Some((since + idle, Expiry::Idle)),
            Phase::Busy { .. } => self
                .write_stalled
                .map(|since| (since + idle, Expiry::StalledWrite)),
        }
    }

    /// Nothing of a request has been read and none is being handled: closing loses nothing.
    pub(super) fn is_quiet(&self) -> bool {
        matches!(self.phase, Phase::New { .. } | Phase::Idle { .. })
    }

    /// Bytes arrived. Between requests they start the next head's clock; while a request is
    /// handled they are its body (or a pipelined request hyper reads once it is done).
    fn bytes_read(&mut self, now: Instant) -> bool {
        match self.phase {
            // The first request's clock has run since the accept.
            Phase::New { since } => self.phase = Phase::Head { since },
            Phase::Idle { .. } => self.phase = Phase::Head { since: now },
            Phase::Head { .. } | Phase::Busy { .. } => return false,
        }
        true
    }

    fn request_started(&mut self) {
        self.phase = match self.phase {
            Phase::Busy { in_flight } => Phase::Busy {
                in_flight: in_flight + 1,
            },
            _ => Phase::Busy { in_flight: 1 },
        };
    }

    fn request_finished(&mut self, now: Instant) {
        self.phase = match self.phase {
            Phase::Busy { in_flight } if in_flight > 1 => Phase::Busy {
                in_flight: in_flight - 1,
            },
            _ => Phase::Idle { since: now },
        };
    }
}

/// The socket, reporting reads and refused writes to the connection's [`Activity`].
pub(super) struct Watched<T> {
    inner: T,
    activity: Shared,
    /// Local copy of "the last write was refused", so only changes touch the shared state.
    stalled: bool,
}

impl<T> Watched<T> {
    pub(super) fn new(inner: T, activity: Shared) -> Self {
        Self {
            inner,
            activity,
            stalled: false,
        }
    }

    fn wrote<R>(&mut self, result: Poll<R>) -> Poll<R> {
        let stalled = result.is_pending();
        if stalled != self.stalled {
            self.stalled = stalled;
            let now = Instant::now();
            self.activity.send_modify(|activity| {
                activity.write_stalled = stalled.then_some(now);
            });
        }
        result
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Watched<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let result = Pin::new(&mut this.inner).poll_read(cx, buf);
        if matches!(result, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            let now = Instant::now();
            this.activity
                .send_if_modified(|activity| activity.bytes_read(now));
        }
        result
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Watched<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let result = Pin::new(&mut this.inner).poll_write(cx, buf);
        this.wrote(result)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let result = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        this.wrote(result)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    // Only writes tell whether the client takes the response: a socket's flush is a no-op.
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

/// One request being handled; dropping it (with its response body) ends that.
pub(super) struct InFlight(Shared);

impl InFlight {
    pub(super) fn start(activity: &Shared) -> Self {
        activity.send_modify(Activity::request_started);
        Self(activity.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let now = Instant::now();
        self.0
            .send_modify(|activity| activity.request_finished(now));
    }
}

/// A response body that keeps its request [`InFlight`] until hyper is done with it.
pub(super) struct Tracked<B> {
    inner: B,
    _in_flight: InFlight,
}

impl<B> Tracked<B> {
    pub(super) fn new(inner: B, in_flight: InFlight) -> Self {
        Self {
            inner,
            _in_flight: in_flight,
        }
    }
}

impl<B: Body + Unpin> Body for Tracked<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.get_mut().inner).poll_frame(cx)
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

    const HEADER: Duration = Duration::from_secs(10);
    const IDLE: Duration = Duration::from_secs(75);

    fn at(start: Instant, seconds: u64) -> Instant {
        start + Duration::from_secs(seconds)
    }

    #[test]
    fn a_new_connection_has_the_header_timeout_from_its_accept_even_once_bytes_arrive() {
        let start = Instant::now();
        let mut activity = Activity::accepted(start);
        assert_eq!(
            activity.deadline(HEADER, IDLE),
            Some((at(start, 10), Expiry::Header))
        );
        assert!(activity.bytes_read(at(start, 5)));
        assert_eq!(
            activity.deadline(HEADER, IDLE),
            Some((at(start, 10), Expiry::Header)),
            "trickling bytes does not buy time"
        );
        assert!(
            !activity.bytes_read(at(start, 6)),
            "later bytes change nothing"
        );
    }

    #[test]
    fn a_request_being_handled_has_no_deadline_until_its_response_stalls() {
        let start = Instant::now();
        let mut activity = Activity::accepted(start);
        activity.request_started();
        assert_eq!(activity.deadline(HEADER, IDLE), None);
        assert!(!activity.bytes_read(at(start, 1)), "body bytes");
        activity.write_stalled = Some(at(start, 3));
        assert_eq!(
            activity.deadline(HEADER, IDLE),
            Some((at(start, 78), Expiry::StalledWrite))
        );
    }

    #[test]
    fn between_requests_the_idle_timeout_runs_until_the_next_heads_first_byte() {
        let start = Instant::now();
        let mut activity = Activity::accepted(start);
        activity.request_started();
        activity.request_finished(at(start, 2));
        assert!(activity.is_quiet());
        assert_eq!(
            activity.deadline(HEADER, IDLE),
            Some((at(start, 77), Expiry::Idle))
        );
        assert!(activity.bytes_read(at(start, 30)));
        assert!(!activity.is_quiet());
        assert_eq!(
            activity.deadline(HEADER, IDLE),
            Some((at(start, 40), Expiry::Header))
        );
    }

    #[test]
    fn a_connection_is_idle_only_when_its_last_request_is_done() {
        let start = Instant::now();
        let mut activity = Activity::accepted(start);
        activity.request_started();
        activity.request_started();
        activity.request_finished(at(start, 1));
        assert_eq!(activity.deadline(HEADER, IDLE), None);
        activity.request_finished(at(start, 2));
        assert_eq!(
            activity.deadline(HEADER, IDLE),
            Some((at(start, 77), Expiry::Idle))
        );
    }
}
