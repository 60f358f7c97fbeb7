//! The HTTP server: our own accept loop instead of `axum::serve`, so that slow clients and
//! connection floods have limits (issue 12, item 11).
//!
//! - **Connection cap** (`FRAMEGATE_HTTP_MAX_CONNECTIONS`): one semaphore permit per open
//!   connection. At the cap the loop stops accepting: new connections wait in the kernel's
//!   listen backlog and are accepted as permits free up, rather than being accepted and
//!   closed. Waiting costs the process nothing (no descriptor, no task), an honest client is
//!   served late instead of refused, and the timeouts below guarantee that slots held by
//!   silent or trickling clients come back within the header timeout.
//! - **Header, idle and stalled-response timeouts**: per connection, see `activity`.
//! - **Body timeout**: per request, a layer of the router (`body_deadline`).
//! - **HTTP/1.1 only**: the timeouts are HTTP/1 mechanisms. (`axum::serve` also took
//!   cleartext HTTP/2 with prior knowledge; nothing of ours speaks it.)
//! - **Shutdown**: the listener is closed at once; quiet connections are closed, busy ones
//!   finish their current response (hyper's `graceful_shutdown`); after [`DRAIN_GRACE`] the
//!   rest are cut, so an endless response (an event stream) cannot hold the process up.

mod activity;
mod connection;

use std::future::Future;
use std::io;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};

/// How long open connections get to finish once shutdown starts; below the 20 s the
/// process's task supervisor allows its tasks.
pub const DRAIN_GRACE: Duration = Duration::from_secs(15);

/// The server's limits on slow clients (`FRAMEGATE_HTTP_*`; see `config`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HttpLimits {
    /// A request head must be complete this long after its first byte (a new connection's
    /// first head: after the accept).
    pub header_timeout: Duration,
    /// A request body must be complete this long after its head.
    pub body_timeout: Duration,
    /// A keep-alive connection with no next request for this long is closed; so is one whose
    /// client stops reading a response for this long.
    pub idle_timeout: Duration,
    /// Connections open at once; more wait in the listen backlog.
    pub max_connections: u32,
}

impl Default for HttpLimits {
    fn default() -> Self {
        Self {
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(60),
            idle_timeout: Duration::from_secs(75),
            max_connections: 1024,
        }
    }
}

/// Where the server is in its life; every connection task watches it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Stage {
    Serving,
    /// Finish the current response, then close.
    Draining,
    /// Close now.
    Closing,
}

/// Serves `router` on `listener` within `limits` until `shutdown` resolves, then drains the
/// open connections (at most [`DRAIN_GRACE`]).
pub async fn run(
    listener: TcpListener,
    router: Router,
    limits: HttpLimits,
    shutdown: impl Future<Output = ()>,
) -> io::Result<()> {
    let capacity = limits
        .max_connections
        .min(u32::try_from(Semaphore::MAX_PERMITS).unwrap_or(u32::MAX));
    let permits = Arc::new(Semaphore::new(capacity as usize));
    let (stage, stages) = watch::channel(Stage::Serving);
    tokio::pin!(shutdown);
    let mut at_cap = false;
    loop {
        let permit = match permits.clone().try_acquire_owned() {
            Ok(permit) => {
                at_cap = false;
                permit
            }
            Err(_) => {
                if !at_cap {
                    at_cap = true;
                    tracing::warn!(
                        max_connections = limits.max_connections,
                        "connection cap reached: new connections wait to be accepted"
                    );
                }
                tokio::select! {
                    permit = permits.clone().acquire_owned() => match permit {
                        Ok(permit) => permit,
                        // Never closed; if it were, there would be nothing left to serve.
                        Err(_) => break,
                    },
                    () = &mut shutdown => break,
                }
            }
        };
        let (stream, remote) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    if is_listener_error(&error) {
                        // Most likely out of file descriptors: give connections time to close.
                        tracing::error!(%error, "accept failed; retrying in a second");
                        tokio::select! {
                            () = tokio::time::sleep(Duration::from_secs(1)) => {}
                            () = &mut shutdown => break,
                        }
                    }
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let router = router.clone();
        let stages = stages.clone();
        tokio::spawn(async move {
            connection::serve(stream, remote, router, limits, stages).await;
            drop(permit);
        });
    }

    // Stop accepting: later connection attempts are refused by the kernel, not queued.
    drop(listener);
    // Every permit back means every connection task has ended.
    stage.send_replace(Stage::Draining);
    if tokio::time::timeout(DRAIN_GRACE, permits.acquire_many(capacity))
        .await
        .is_err()
    {
        let open = (capacity as usize).saturating_sub(permits.available_permits());
        tracing::warn!(
            open,
            "connections still open after the grace period: closing them"
        );
        stage.send_replace(Stage::Closing);
        let _ = tokio::time::timeout(Duration::from_secs(1), permits.acquire_many(capacity)).await;
    }
    Ok(())
}

/// Whether an accept error is about the listener (out of descriptors or memory) rather than
/// the one connection, which a peer can cause at will and which is simply skipped.
fn is_listener_error(error: &io::Error) -> bool {
    !matches!(
        error.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    )
}
