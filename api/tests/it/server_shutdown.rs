//! Shutdown of our accept loop (`framegate_api::server::run`), on a bare router so no
//! database is needed: the listener closes at once, a quiet keep-alive connection is closed,
//! and a request in flight still gets its answer before `run` returns.

use std::time::Duration;

use axum::extract::ConnectInfo;
use axum::routing::get;
use axum::Router;
use framegate_api::server::{self, HttpLimits};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::time::{timeout, Instant};

async fn slow() -> &'static str {
    tokio::time::sleep(Duration::from_secs(1)).await;
    "finished"
}

async fn peer(ConnectInfo(addr): ConnectInfo<std::net::SocketAddr>) -> String {
    addr.to_string()
}

/// Reads until the server closes the connection.
async fn read_to_close(stream: &mut TcpStream) -> String {
    let mut received = Vec::new();
    let _ = timeout(Duration::from_secs(5), stream.read_to_end(&mut received)).await;
    String::from_utf8_lossy(&received).into_owned()
}

#[tokio::test]
async fn shutting_down_finishes_the_request_in_flight_and_closes_the_quiet_connections() {
    let router = Router::new()
        .route("/slow", get(slow))
        .route("/peer", get(peer));
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (stop, stopped) = oneshot::channel::<()>();
    let server = tokio::spawn(server::run(
        listener,
        router,
        HttpLimits::default(),
        async move {
            let _ = stopped.await;
        },
    ));

    // A keep-alive connection that has had its answer, and sees its own address as the peer.
    let mut quiet = TcpStream::connect(addr).await.expect("connect");
    quiet
        .write_all(b"GET /peer HTTP/1.1\r\nHost: framegate\r\n\r\n")
        .await
        .expect("request");
    let mut buf = vec![0u8; 1024];
    let n = quiet.read(&mut buf).await.expect("response");
    let answer = String::from_utf8_lossy(&buf[..n]).into_owned();
    let local = quiet.local_addr().expect("local").to_string();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(
        answer.ends_with(&local),
        "ConnectInfo is the peer: {answer}"
    );

    let mut busy = TcpStream::connect(addr).await.expect("connect");
    busy.write_all(b"GET /slow HTTP/1.1\r\nHost: framegate\r\n\r\n")
        .await
        .expect("request");
    tokio::time::sleep(Duration::from_millis(200)).await;

    let started = Instant::now();
    stop.send(()).expect("server running");
    assert_eq!(
        read_to_close(&mut quiet).await,
        "",
        "the quiet connection is closed"
    );
    assert!(started.elapsed() < Duration::from_millis(500));
    let answer = read_to_close(&mut busy).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.ends_with("finished"), "{answer}");

    timeout(Duration::from_secs(2), server)
        .await
        .expect("run returns once its connections are closed")
        .expect("task")
        .expect("io");
    assert!(
        TcpStream::connect(addr).await.is_err(),
        "the listener is closed"
    );
}
