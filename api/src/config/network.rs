//! Where the API listens and who it believes about client addresses: `FRAMEGATE_HTTP_*`
//! (address, connection cap, slow-client timeouts) and the proxy settings.
//!
//! The listen address is checked against the deployment here: a server that other machines
//! can reach must say what it is (`FRAMEGATE_ENV`), see `framegate_commands::deployment`.

use std::net::SocketAddr;
use std::time::Duration;

use framegate_commands::deployment::Deployment;

use super::{parse, positive, ConfigError};
use crate::client_ip::ProxyTrust;
use crate::server::HttpLimits;

/// `FRAMEGATE_HTTP_ADDR` over `default`, refused when reachable from other machines without
/// a declared deployment.
pub(super) fn http_addr(
    get: impl Fn(&str) -> Option<String>,
    default: SocketAddr,
    deployment: Deployment,
) -> Result<SocketAddr, ConfigError> {
    const ADDR: &str = "FRAMEGATE_HTTP_ADDR";
    let addr = match get(ADDR) {
        Some(addr) => parse(ADDR, &addr)?,
        None => default,
    };
    deployment.check_listen(ADDR, addr)?;
    Ok(addr)
}

/// `FRAMEGATE_TRUSTED_PROXIES` names the proxies and implies `FRAMEGATE_TRUST_PROXY=true`;
/// `FRAMEGATE_TRUST_PROXY=true` alone trusts whatever connects (one proxy in front).
pub(super) fn proxies(get: impl Fn(&str) -> Option<String>) -> Result<ProxyTrust, ConfigError> {
    const TRUST: &str = "FRAMEGATE_TRUST_PROXY";
    const NETWORKS: &str = "FRAMEGATE_TRUSTED_PROXIES";
    let trust: Option<bool> = get(TRUST).map(|v| parse(TRUST, &v)).transpose()?;
    let networks = match get(NETWORKS) {
        Some(list) => list.parse::<ProxyTrust>().map_err(|e| ConfigError {
            variable: NETWORKS,
            message: e.to_string(),
        })?,
        None => ProxyTrust::None,
    };
    match (trust, networks) {
        (Some(false), ProxyTrust::Networks(_)) => Err(ConfigError {
            variable: NETWORKS,
            message: format!("is set, but {TRUST}=false says there is no proxy; unset one"),
        }),
        (_, networks @ ProxyTrust::Networks(_)) => Ok(networks),
        (Some(true), _) => Ok(ProxyTrust::ImmediatePeer),
        _ => Ok(ProxyTrust::None),
    }
}

/// `FRAMEGATE_HTTP_*`: whole seconds and a connection count, each at least 1 (a zero
/// timeout would cut every client; a zero cap would serve none).
pub(super) fn http_limits(get: impl Fn(&str) -> Option<String>) -> Result<HttpLimits, ConfigError> {
    let mut limits = HttpLimits::default();
    let seconds = |variable: &'static str, default: Duration| match get(variable) {
        Some(v) => positive(variable, &v).map(|n| Duration::from_secs(u64::from(n))),
        None => Ok(default),
    };
    limits.header_timeout = seconds(
        "FRAMEGATE_HTTP_HEADER_TIMEOUT_SECONDS",
        limits.header_timeout,
    )?;
    limits.body_timeout = seconds("FRAMEGATE_HTTP_BODY_TIMEOUT_SECONDS", limits.body_timeout)?;
    limits.idle_timeout = seconds("FRAMEGATE_HTTP_IDLE_TIMEOUT_SECONDS", limits.idle_timeout)?;
    if let Some(v) = get("FRAMEGATE_HTTP_MAX_CONNECTIONS") {
        limits.max_connections = positive("FRAMEGATE_HTTP_MAX_CONNECTIONS", &v)?;
    }
    Ok(limits)
}
