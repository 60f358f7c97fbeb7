//! `framegate healthcheck`: the container's own health probe.
//!
//! Slim runtime images have neither curl nor wget, and the probe must not depend on a shell,
//! so the binary asks its sibling process itself: one HTTP/1.1 `GET` of `/health/ready` on
//! this machine, exit 0 on a 2xx answer and 1 otherwise (what Docker's `HEALTHCHECK` reads).
//! The address is the role's own listen address with an unspecified host (`0.0.0.0`, `::`)
//! taken as loopback.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use anyhow::{bail, Context as _};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

/// Connecting, sending and reading the status line together take at most this long.
const TIMEOUT: Duration = Duration::from_secs(5);

/// The largest answer head read looking for the status line.
const MAX_HEAD: usize = 4096;

/// Where to probe: `addr` if given, else the API's `FRAMEGATE_HTTP_ADDR`, else its default.
pub fn target(addr: Option<&str>, http_addr: Option<&str>) -> anyhow::Result<SocketAddr> {
    let (variable, text) = match (addr, http_addr) {
        (Some(addr), _) => ("--addr", addr),
        (None, Some(addr)) => ("FRAMEGATE_HTTP_ADDR", addr),
        (None, None) => ("the default", "127.0.0.1:8080"),
    };
    let mut addr: SocketAddr = text
        .trim()
        .parse()
        .with_context(|| format!("{variable}: {text:?} is not an address and port"))?;
    if addr.ip().is_unspecified() {
        addr.set_ip(match addr.ip() {
            IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::LOCALHOST),
            IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::LOCALHOST),
        });
    }
    Ok(addr)
}

/// `GET path` at `addr`: Ok with the status line when the answer is 2xx.
pub async fn probe(addr: SocketAddr, path: &str) -> anyhow::Result<String> {
    let status = tokio::time::timeout(TIMEOUT, status_line(addr, path))
        .await
        .with_context(|| format!("{addr}{path}: no answer within {TIMEOUT:?}"))??;
    let code = status.split(' ').nth(1).unwrap_or_default();
    if !code.starts_with('2') || code.len() != 3 {
        bail!("{addr}{path}: {status}");
    }
    Ok(status)
}

async fn status_line(addr: SocketAddr, path: &str) -> anyhow::Result<String> {
    let mut stream = TcpStream::connect(addr)
        .await
        .with_context(|| format!("cannot connect to {addr}"))?;
    let request =
        format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nUser-Agent: framegate-healthcheck\r\n\r\n");
    stream.write_all(request.as_bytes()).await?;
    let mut head = Vec::with_capacity(256);
    let mut buffer = [0u8; 512];
    while !head.windows(2).any(|w| w == b"\r\n") && head.len() < MAX_HEAD {
        let read = stream.read(&mut buffer).await?;
        if read == 0 {
            break;
        }
        head.extend_from_slice(&buffer[..read]);
    }
    let head = String::from_utf8_lossy(&head);
    match head
        .split("\r\n")
        .next()
        .filter(|line| line.starts_with("HTTP/"))
    {
        Some(line) => Ok(line.to_owned()),
        None => bail!("{addr}{path}: the answer is not HTTP"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_target_is_the_listen_address_with_unspecified_hosts_on_loopback() {
        let target = |addr, http| target(addr, http).map(|a| a.to_string()).ok();
        assert_eq!(target(None, None).as_deref(), Some("127.0.0.1:8080"));
        assert_eq!(
            target(None, Some("0.0.0.0:9000")).as_deref(),
            Some("127.0.0.1:9000")
        );
        assert_eq!(
            target(None, Some("[::]:9000")).as_deref(),
            Some("[::1]:9000")
        );
        assert_eq!(
            target(Some("127.0.0.1:8081"), Some("0.0.0.0:8080")).as_deref(),
            Some("127.0.0.1:8081")
        );
        assert_eq!(target(Some("localhost"), None), None);
    }
}
