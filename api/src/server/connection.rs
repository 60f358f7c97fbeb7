//! Serving one accepted connection: HTTP/1.1 through hyper, the router as the service, and
//! the connection's clock (`activity`) deciding when a slow or silent client is cut off.
//!
//! A header, idle or stalled-write expiry drops the connection outright: nothing useful is
//! in progress (no request head is complete, or the client has stopped reading), so there is
//! nothing to finish. On shutdown a quiet connection is closed at once and a busy one is
//! asked to close after its current response (`graceful_shutdown`); `Stage::Closing` ends
//! whatever is left when the server's grace runs out.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::ConnectInfo;
use axum::Router;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::time::Instant;
use tower::ServiceExt as _;

use super::activity::{Activity, InFlight, Shared, Tracked, Watched};
use super::{HttpLimits, Stage};

pub(super) async fn serve(
    stream: TcpStream,
    remote: SocketAddr,
    router: Router,
    limits: HttpLimits,
    mut stage: watch::Receiver<Stage>,
) {
    let activity: Shared = Arc::new(watch::Sender::new(Activity::accepted(Instant::now())));
    let mut changes = activity.subscribe();
    let io = TokioIo::new(Watched::new(stream, activity.clone()));
    let in_service = activity.clone();
    let service = service_fn(move |mut request: hyper::Request<Incoming>| {
        // hyper calls this as soon as a head is complete: the request is in flight.
        let in_flight = InFlight::start(&in_service);
        // What `into_make_service_with_connect_info` gave handlers (`client_ip`, limits).
        request.extensions_mut().insert(ConnectInfo(remote));
        let router = router.clone();
        async move {
            let response = router.oneshot(request).await?;
            Ok::<_, std::convert::Infallible>(response.map(|body| Tracked::new(body, in_flight)))
        }
    });
    let connection = http1::Builder::new()
        // Ours is in `activity`: hyper's would also cut idle keep-alive connections.
        .header_read_timeout(None::<std::time::Duration>)
        .keep_alive(true)
        .serve_connection(io, service);
    tokio::pin!(connection);

    let mut draining = false;
    loop {
        match *stage.borrow_and_update() {
            Stage::Serving => {}
            Stage::Draining if !draining => {
                draining = true;
                if changes.borrow().is_quiet() {
                    return;
                }
                connection.as_mut().graceful_shutdown();
            }
            Stage::Draining => {}
            Stage::Closing => return,
        }
        let deadline = changes
            .borrow_and_update()
            .deadline(limits.header_timeout, limits.idle_timeout);
        let expired = async {
            match deadline {
                Some((at, _)) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            result = connection.as_mut() => {
                if let Err(error) = result {
                    tracing::debug!(%remote, %error, "connection ended with an error");
                }
                return;
            }
            // The sender lives in `activity`, held here: this only wakes on a change.
            _ = changes.changed() => {}
            changed = stage.changed() => {
                if changed.is_err() {
                    // The server is gone.
                    return;
                }
            }
            () = expired => {
                // A change racing the timer may have moved the deadline: look again.
                let now = Instant::now();
                if let Some((at, why)) = changes
                    .borrow()
                    .deadline(limits.header_timeout, limits.idle_timeout)
                {
                    if at <= now {
                        tracing::debug!(%remote, reason = why.as_str(), "closing a slow connection");
                        return;
                    }
                }
            }
        }
    }
}
