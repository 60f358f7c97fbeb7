//! The HTTP client deliveries go out on (ADR 0044): HTTP/1.1 on hyper's connection API, one
//! request at a time per connection, connections kept per origin between attempts.
//!
//! It keeps every rule of the reqwest client it replaced: no redirects (nothing here follows
//! one), no proxy, HTTP/1.1 only, TLS verified against the web PKI roots (webpki-roots, the
//! roots of reqwest's `rustls-tls`), and the public-address guard of the provider downloads
//! (`providers::download::is_blocked`): every address a name resolves to is checked, the
//! connection goes to a checked address only (so DNS rebinding has no window), and an IP
//! literal is checked as it stands. The caller bounds the whole exchange in time.
//!
//! What it drops is the general-purpose machinery a delivery never uses (a URL re-parsed per
//! request, default-header merging, redirect policy, a pool keyed and locked per request
//! behind a `tower` stack): a run sends hundreds of requests to one URL.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::client::conn::http1::{self, SendRequest};
use hyper::header::HeaderValue;
use hyper::{Request, Response, Uri};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio_rustls::rustls::pki_types::ServerName;
use tokio_rustls::rustls::{self, ClientConfig, RootCertStore};
use tokio_rustls::TlsConnector;
use tracing::debug;
use url::Url;

use crate::providers::download::{public_only, Blocked};

/// Why the client could not be built (its TLS settings).
pub type BuildError = rustls::Error;

/// An idle connection is closed after this long unused (reqwest's default).
const IDLE_FOR: Duration = Duration::from_secs(90);

/// How long a connection to one of several addresses may take before the next is tried.
const NEXT_ADDRESS_AFTER: Duration = Duration::from_secs(2);

/// Idle connections kept per origin at most (a queue holds one while it sends).
const IDLE_PER_ORIGIN: usize = 16;

/// Where connections go: scheme, host and port.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Origin {
    tls: bool,
    host: Host,
    port: u16,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Host {
    Name(String),
    Address(IpAddr),
}

impl std::fmt::Display for Host {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Host::Name(name) => f.write_str(name),
            Host::Address(ip) => write!(f, "{ip}"),
        }
    }
}

/// A delivery URL, parsed once for the run that sends to it.
#[derive(Debug)]
pub struct Target {
    origin: Origin,
    /// The `Host` header: the URL's host and port as written (IPv6 in brackets).
    host_header: HeaderValue,
    /// The request target: path and query.
    path: Uri,
}

impl Target {
    /// `url` as a delivery's target: an absolute http(s) URL with a host, or why not.
    pub fn parse(url: &str) -> Result<Self, String> {
        let not_http = || "the URL is not an http(s) URL".to_owned();
        let url = Url::parse(url).map_err(|_| not_http())?;
        let tls = match url.scheme() {
            "https" => true,
            "http" => false,
            _ => return Err(not_http()),
        };
        if !url.username().is_empty() || url.password().is_some() {
            return Err("the URL carries user info".to_owned());
        }
        let host = match url.host() {
            Some(url::Host::Domain(name)) => Host::Name(name.to_owned()),
            Some(url::Host::Ipv4(ip)) => Host::Address(ip.into()),
            Some(url::Host::Ipv6(ip)) => Host::Address(ip.into()),
            None => return Err(not_http()),
        };
        let port = url.port_or_known_default().ok_or_else(not_http)?;
        let authority = &url[url::Position::BeforeHost..url::Position::AfterPort];
        let path = &url[url::Position::BeforePath..url::Position::AfterQuery];
        Ok(Self {
            origin: Origin { tls, host, port },
            host_header: HeaderValue::from_str(authority).map_err(|_| not_http())?,
            path: path.parse().map_err(|_| not_http())?,
        })
    }

    pub fn host_header(&self) -> &HeaderValue {
        &self.host_header
    }

    pub fn path(&self) -> &Uri {
        &self.path
    }
}

/// Why an exchange failed before an answer.
#[derive(Debug, thiserror::Error)]
pub enum Failure {
    #[error("{0}")]
    Blocked(#[from] Blocked),
    #[error("cannot resolve {host}: {error}")]
    Resolve { host: String, error: std::io::Error },
    #[error("cannot connect: {0}")]
    Connect(std::io::Error),
    #[error("TLS handshake failed: {0}")]
    Tls(std::io::Error),
    #[error("{}", chain(.0))]
    Http(hyper::Error),
}

/// An error and its causes in one line.
fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// A connection checked out for one exchange; [`Client::keep`] gives it back.
pub struct Connection {
    origin: Origin,
    send: SendRequest<Full<Bytes>>,
}

struct Idle {
    send: SendRequest<Full<Bytes>>,
    since: Instant,
}

/// The delivery client of a process: its idle connections and its TLS settings.
pub struct Client {
    allow_private: bool,
    tls: TlsConnector,
    idle: Mutex<HashMap<Origin, Vec<Idle>>>,
    swept: Mutex<Instant>,
}

impl Client {
    pub fn new(allow_private: bool) -> Result<Self, BuildError> {
        let roots = RootCertStore::from_iter(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        let mut tls =
            ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_safe_default_protocol_versions()?
                .with_root_certificates(roots)
                .with_no_client_auth();
        tls.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Self {
            allow_private,
            tls: TlsConnector::from(Arc::new(tls)),
            idle: Mutex::default(),
            swept: Mutex::new(Instant::now()),
        })
    }

    /// Sends `request` to `target`: on an idle connection if one is open, on a new one
    /// otherwise, or when the idle one turns out closed before the request left.
    pub async fn send(
        &self,
        target: &Target,
        mut request: Request<Full<Bytes>>,
    ) -> Result<(Response<Incoming>, Connection), Failure> {
        loop {
            let (mut connection, reused) = match self.idle(&target.origin) {
                Some(idle) => (idle, true),
                None => (self.connect(&target.origin).await?, false),
            };
            if connection.send.ready().await.is_err() && reused {
                continue;
            }
            match connection.send.try_send_request(request).await {
                Ok(response) => return Ok((response, connection)),
                Err(mut error) => match error.take_message() {
                    // Never sent: a connection the server closed while idle. Not an attempt.
                    Some(unsent) if reused => request = unsent,
                    _ => return Err(Failure::Http(error.into_error())),
                },
            }
        }
    }

    /// Keeps `connection` for the next exchange with its origin (its answer read to the end).
    pub fn keep(&self, connection: Connection) {
        if connection.send.is_closed() {
            return;
        }
        let now = Instant::now();
        let mut idle = lock(&self.idle);
        self.sweep(&mut idle, now);
        let kept = idle.entry(connection.origin).or_default();
        if kept.len() < IDLE_PER_ORIGIN {
            kept.push(Idle {
                send: connection.send,
                since: now,
            });
        }
    }

    /// An open idle connection to `origin`, if any.
    fn idle(&self, origin: &Origin) -> Option<Connection> {
        let mut idle = lock(&self.idle);
        let kept = idle.get_mut(origin)?;
        while let Some(Idle { send, since }) = kept.pop() {
            if !send.is_closed() && since.elapsed() < IDLE_FOR {
                return Some(Connection {
                    origin: origin.clone(),
                    send,
                });
            }
        }
        None
    }

    /// Drops closed and expired idle connections, at most every few seconds.
    fn sweep(&self, idle: &mut HashMap<Origin, Vec<Idle>>, now: Instant) {
        let mut swept = lock(&self.swept);
        if now.duration_since(*swept) < Duration::from_secs(5) {
            return;
        }
        *swept = now;
        idle.retain(|_, kept| {
            kept.retain(|c| !c.send.is_closed() && now.duration_since(c.since) < IDLE_FOR);
            !kept.is_empty()
        });
    }

    /// A new connection to `origin`, at an address the guard allows.
    async fn connect(&self, origin: &Origin) -> Result<Connection, Failure> {
        let mut last = None;
        let mut stream = None;
        let addresses = self.resolve(origin).await?;
        let count = addresses.len();
        for (index, address) in addresses.into_iter().enumerate() {
            // An address that does not answer leaves time for the next one; the last one
            // has what is left of the exchange's budget.
            let connecting = TcpStream::connect(address);
            let connected = if index + 1 < count {
                tokio::time::timeout(NEXT_ADDRESS_AFTER, connecting)
                    .await
                    .unwrap_or_else(|_| Err(std::io::ErrorKind::TimedOut.into()))
            } else {
                connecting.await
            };
            match connected {
                Ok(connected) => {
                    stream = Some(connected);
                    break;
                }
                Err(error) => last = Some(error),
            }
        }
        let stream = stream.ok_or_else(|| {
            Failure::Connect(last.unwrap_or_else(|| std::io::ErrorKind::NotFound.into()))
        })?;
        // Small requests, one at a time: no waiting for an ACK before the next write.
        stream.set_nodelay(true).map_err(Failure::Connect)?;
        let send = if origin.tls {
            let name = match &origin.host {
                Host::Name(name) => ServerName::try_from(name.clone()),
                Host::Address(ip) => Ok(ServerName::from(*ip)),
            }
            .map_err(|error| Failure::Tls(std::io::Error::other(error)))?;
            let stream = self.tls.connect(name, stream).await.map_err(Failure::Tls)?;
            handshake(stream).await?
        } else {
            handshake(stream).await?
        };
        Ok(Connection {
            origin: origin.clone(),
            send,
        })
    }

    /// The addresses `origin` may be reached at: all of them if private ones are allowed,
    /// else the public ones, or [`Blocked`] when none is.
    async fn resolve(&self, origin: &Origin) -> Result<Vec<SocketAddr>, Failure> {
        let resolved: Vec<SocketAddr> = match &origin.host {
            Host::Address(ip) => vec![SocketAddr::new(*ip, origin.port)],
            Host::Name(name) => tokio::net::lookup_host((name.as_str(), origin.port))
                .await
                .map_err(|error| Failure::Resolve {
                    host: name.clone(),
                    error,
                })?
                .collect(),
        };
        if self.allow_private {
            return Ok(resolved);
        }
        Ok(public_only(&origin.host.to_string(), resolved)?)
    }
}

/// The HTTP/1.1 handshake on `io`; the connection is driven by a task of its own until
/// either side closes it.
async fn handshake<T>(io: T) -> Result<SendRequest<Full<Bytes>>, Failure>
where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static,
{
    let (send, connection) = http1::handshake(TokioIo::new(io))
        .await
        .map_err(Failure::Http)?;
    tokio::spawn(async move {
        if let Err(error) = connection.await {
            debug!(%error, "webhooks: connection closed");
        }
    });
    Ok(send)
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    match mutex.lock() {
        Ok(guard) => guard,
        Err(poisoned) => poisoned.into_inner(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_keep_host_port_path_and_query_and_refuse_other_schemes() {
        let target = Target::parse("https://Hooks.Example.com:8443/in/x?y=1").expect("url");
        assert_eq!(target.host_header, "hooks.example.com:8443");
        assert_eq!(target.path, "/in/x?y=1");
        assert_eq!(
            target.origin,
            Origin {
                tls: true,
                host: Host::Name("hooks.example.com".into()),
                port: 8443
            }
        );
        let v6 = Target::parse("http://[::1]/h").expect("url");
        assert_eq!(v6.host_header, "[::1]");
        assert_eq!(v6.origin.port, 80);
        assert_eq!(v6.origin.host, Host::Address("::1".parse().expect("ip")));
        // Odd IPv4 spellings are addresses, checked as such.
        let odd = Target::parse("http://2130706433:9/").expect("url");
        assert_eq!(
            odd.origin.host,
            Host::Address("127.0.0.1".parse().expect("ip"))
        );
        assert_eq!(odd.path, "/");
        for bad in ["ftp://example.com/", "not a url", "http://u:p@example.com/"] {
            assert!(Target::parse(bad).is_err(), "{bad}");
        }
    }

    #[tokio::test]
    async fn blocked_literals_and_names_are_refused_before_connecting() {
        let client = Client::new(false).expect("client");
        for url in [
            "http://127.0.0.1:1/",
            "http://[::1]:1/",
            "http://localhost:1/",
        ] {
            let target = Target::parse(url).expect("url");
            let refused = client.resolve(&target.origin).await;
            assert!(
                matches!(refused, Err(Failure::Blocked(_))),
                "{url}: {refused:?}"
            );
        }
        let open = Client::new(true).expect("client");
        let target = Target::parse("http://127.0.0.1:1/").expect("url");
        assert!(open.resolve(&target.origin).await.is_ok());
    }
}
