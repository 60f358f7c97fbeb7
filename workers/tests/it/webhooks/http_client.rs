//! The delivery HTTP client (`webhooks::http`) against real sockets: connections are kept and
//! reused, a connection the server closed is replaced without a failed attempt, an answer
//! not read to its end does not leave its connection for the next attempt, and TLS verifies
//! the server's certificate (a self-signed one made by the `openssl` command is refused).

use std::convert::Infallible;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use framegate_workers::webhooks::http::{Client, Failure, Target};
use http_body_util::Full;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

/// How a test server treats its connections.
#[derive(Clone, Copy)]
enum Serving {
    /// Answers "ok" and keeps the connection open.
    KeepAlive,
    /// Answers "ok" (without `Connection: close`), then closes the connection.
    CloseAfterAnswer,
    /// Answers with a body far longer than the client keeps.
    LongBody,
}

/// A plain HTTP/1.1 server on loopback; returns its address and its count of connections.
async fn server(serving: Serving) -> (String, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = listener.local_addr().expect("address");
    let accepted = Arc::new(AtomicUsize::new(0));
    let counted = accepted.clone();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            counted.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let body = match serving {
                    Serving::LongBody => "x".repeat(64 * 1024),
                    _ => "ok".to_owned(),
                };
                let service = service_fn(move |_request: Request<hyper::body::Incoming>| {
                    let body = body.clone();
                    async move { Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(body)))) }
                });
                let connection = hyper::server::conn::http1::Builder::new()
                    .keep_alive(!matches!(serving, Serving::CloseAfterAnswer))
                    .serve_connection(TokioIo::new(stream), service);
                let _ = connection.await;
            });
        }
    });
    (format!("http://{address}"), accepted)
}

fn post(target: &Target) -> Request<Full<Bytes>> {
    Request::post(target.path().clone())
        .header(hyper::header::HOST, target.host_header().clone())
        .body(Full::new(Bytes::from_static(b"{}")))
        .expect("request")
}

/// One exchange, its answer read to the end, its connection given back.
async fn exchange(client: &Client, target: &Target) -> u16 {
    use http_body_util::BodyExt as _;
    let (response, connection) = client.send(target, post(target)).await.expect("sent");
    let status = response.status().as_u16();
    response.into_body().collect().await.expect("body");
    client.keep(connection);
    status
}

#[tokio::test]
async fn a_kept_connection_carries_the_next_requests() {
    let (url, accepted) = server(Serving::KeepAlive).await;
    let client = Client::new(true).expect("client");
    let target = Target::parse(&format!("{url}/hooks?x=1")).expect("target");
    for _ in 0..5 {
        assert_eq!(exchange(&client, &target).await, 200);
    }
    assert_eq!(accepted.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_connection_the_server_closed_is_replaced_without_a_failure() {
    let (url, accepted) = server(Serving::CloseAfterAnswer).await;
    let client = Client::new(true).expect("client");
    let target = Target::parse(&format!("{url}/hooks")).expect("target");
    for _ in 0..5 {
        assert_eq!(exchange(&client, &target).await, 200);
        // Give the close time to arrive, as an idle timeout on the server would.
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(accepted.load(Ordering::SeqCst), 5);
}

#[tokio::test]
async fn an_answer_cut_short_does_not_leave_its_connection_for_the_next() {
    use http_body_util::BodyExt as _;
    let (url, accepted) = server(Serving::LongBody).await;
    let client = Client::new(true).expect("client");
    let target = Target::parse(&format!("{url}/long")).expect("target");
    for _ in 0..2 {
        let (response, connection) = client.send(&target, post(&target)).await.expect("sent");
        let mut body = response.into_body();
        // One frame read, the rest left: the connection is not given back.
        let _ = body.frame().await;
        drop(body);
        drop(connection);
    }
    assert_eq!(accepted.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn private_addresses_are_refused_unless_allowed() {
    let (url, accepted) = server(Serving::KeepAlive).await;
    let port = url.rsplit(':').next().expect("port");
    let strict = Client::new(false).expect("client");
    for host in ["127.0.0.1", "localhost", "[::ffff:127.0.0.1]", "2130706433"] {
        let target = Target::parse(&format!("http://{host}:{port}/")).expect("target");
        let refused = strict.send(&target, post(&target)).await;
        assert!(
            matches!(&refused, Err(Failure::Blocked(blocked)) if blocked.to_string().contains("is not a public address")),
            "{host}: {:?}",
            refused.map(|_| ())
        );
    }
    assert_eq!(accepted.load(Ordering::SeqCst), 0);
}

/// A certificate for `localhost` signed by nobody the web PKI knows, from `openssl`.
fn self_signed() -> (Vec<u8>, Vec<u8>) {
    let dir = tempfile::tempdir().expect("dir");
    let (key, cert, pkcs8) = (
        dir.path().join("key.pem"),
        dir.path().join("cert.der"),
        dir.path().join("key.der"),
    );
    let made = Command::new("openssl")
        .args(["req", "-x509", "-newkey", "ec", "-pkeyopt"])
        .arg("ec_paramgen_curve:prime256v1")
        .args(["-nodes", "-days", "1", "-subj", "/CN=localhost"])
        .args(["-addext", "subjectAltName=DNS:localhost", "-outform", "DER"])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("openssl (Debian package openssl)");
    assert!(made.status.success(), "{made:?}");
    let converted = Command::new("openssl")
        .args(["pkcs8", "-topk8", "-nocrypt", "-outform", "DER", "-in"])
        .arg(&key)
        .arg("-out")
        .arg(&pkcs8)
        .output()
        .expect("openssl");
    assert!(converted.status.success(), "{converted:?}");
    (
        std::fs::read(cert).expect("cert"),
        std::fs::read(pkcs8).expect("key"),
    )
}

#[tokio::test]
async fn tls_refuses_a_certificate_no_known_authority_signed() {
    use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
    use tokio_rustls::rustls::{self, ServerConfig};
    let (cert, key) = self_signed();
    let config =
        ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_no_client_auth()
            .with_single_cert(
                vec![CertificateDer::from(cert)],
                PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key)),
            )
            .expect("certificate");
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("address").port();
    let handshakes = Arc::new(AtomicUsize::new(0));
    let completed = handshakes.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            if acceptor.accept(stream).await.is_ok() {
                completed.fetch_add(1, Ordering::SeqCst);
            }
        }
    });
    let client = Client::new(true).expect("client");
    let target = Target::parse(&format!("https://localhost:{port}/hooks")).expect("target");
    let refused = client.send(&target, post(&target)).await;
    let Err(Failure::Tls(error)) = &refused else {
        panic!("{:?}", refused.map(|_| ()));
    };
    assert!(error.to_string().contains("certificate"), "{error}");
    assert_eq!(handshakes.load(Ordering::SeqCst), 0);
}
