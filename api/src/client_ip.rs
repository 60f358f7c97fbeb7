//! Who the client is: the one place that decides the address rate limits, the audit log and
//! anonymous idempotency scopes are keyed on.
//!
//! Without proxies it is the TCP peer. Behind proxies, `X-Forwarded-For` is a list every
//! proxy appends the address it received the request from to (`client, proxy1, proxy2`, the
//! TCP peer being the hop after the last entry). Only what our own proxies appended can be
//! believed: the client writes whatever it likes at the left. So the chain is read from the
//! right, starting at the TCP peer, skipping hops that are trusted proxies; the first hop that
//! is not one is the client. Taking the left-most entry instead would let any client pick a
//! fresh address per request and with it a fresh rate-limit bucket.
//!
//! - No proxy configured ([`ProxyTrust::None`]): the header is ignored.
//! - `FRAMEGATE_TRUST_PROXY=true` alone ([`ProxyTrust::ImmediatePeer`]): whatever connects is
//!   the one proxy in front of the API (the API must not be reachable around it), and only its
//!   own entry, the right-most, is believed.
//! - `FRAMEGATE_TRUSTED_PROXIES=<cidr>,...` ([`ProxyTrust::Networks`]): the header counts
//!   only when the TCP peer is inside one of the networks, and every hop inside them is
//!   skipped. If every hop is a trusted proxy, the left-most is the client.
//! - An entry that is not an address (garbage, `unknown`, an obfuscated identifier) ends the
//!   chain: the client is the last good address to its right.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::str::FromStr;

use axum::http::HeaderMap;

const X_FORWARDED_FOR: &str = "x-forwarded-for";

/// Whose `X-Forwarded-For` entries are believed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum ProxyTrust {
    /// No proxy in front: the TCP peer is the client and the header is ignored.
    #[default]
    None,
    /// Whatever connects is our proxy; the right-most entry (the one it appended) is the
    /// client.
    ImmediatePeer,
    /// Peers and hops inside these networks are our proxies.
    Networks(Vec<IpNetwork>),
}

impl FromStr for ProxyTrust {
    type Err = NetworkError;

    /// A comma-separated list of networks (`10.0.0.0/8, ::1/128`); an empty list is
    /// [`ProxyTrust::None`].
    fn from_str(list: &str) -> Result<Self, NetworkError> {
        let networks = list
            .split(',')
            .map(str::trim)
            .filter(|item| !item.is_empty())
            .map(str::parse)
            .collect::<Result<Vec<IpNetwork>, _>>()?;
        Ok(if networks.is_empty() {
            ProxyTrust::None
        } else {
            ProxyTrust::Networks(networks)
        })
    }
}

/// The caller's IP for a request arriving from `peer` (`None` in-process, taken for
/// 127.0.0.1) with `headers`.
pub fn client_ip(headers: &HeaderMap, peer: Option<SocketAddr>, trust: &ProxyTrust) -> IpAddr {
    let peer = peer.map_or(IpAddr::V4(Ipv4Addr::LOCALHOST), |addr| {
        addr.ip().to_canonical()
    });
    match trust {
        ProxyTrust::None => peer,
        ProxyTrust::ImmediatePeer => hops_from_the_right(headers)
            .next()
            .and_then(parse_hop)
            .unwrap_or(peer),
        ProxyTrust::Networks(networks) => walk(peer, hops_from_the_right(headers), |ip| {
            networks.iter().any(|network| network.contains(ip))
        }),
    }
}

/// From the TCP peer leftwards: the first hop that is not a proxy, the last good address
/// before a malformed entry, or the left-most when every hop is a proxy.
fn walk<'a>(
    peer: IpAddr,
    hops: impl Iterator<Item = &'a str>,
    is_proxy: impl Fn(IpAddr) -> bool,
) -> IpAddr {
    let mut client = peer;
    if !is_proxy(peer) {
        return client;
    }
    for hop in hops {
        let Some(ip) = parse_hop(hop) else {
            break;
        };
        client = ip;
        if !is_proxy(ip) {
            break;
        }
    }
    client
}

/// Every `X-Forwarded-For` entry, right-most first, across repeated header lines (which
/// count as one comma-joined list, in order). An entry that is not text (HTTP lets a client
/// send bytes above 0x7F) parses as nothing and ends the chain there; the entries the
/// proxies appended to its right still count.
fn hops_from_the_right(headers: &HeaderMap) -> impl Iterator<Item = &str> {
    headers
        .get_all(X_FORWARDED_FOR)
        .iter()
        .rev()
        .flat_map(|line| {
            line.as_bytes()
                .rsplit(|byte| *byte == b',')
                .map(|entry| std::str::from_utf8(entry).unwrap_or_default())
        })
}

/// One entry: an address, optionally with a port (`192.0.2.1:80`, `[2001:db8::1]:80`) or in
/// brackets; IPv4-mapped IPv6 addresses as IPv4.
fn parse_hop(hop: &str) -> Option<IpAddr> {
    let hop = hop.trim();
    hop.parse::<IpAddr>()
        .ok()
        .or_else(|| hop.parse::<SocketAddr>().ok().map(|addr| addr.ip()))
        .or_else(|| {
            hop.strip_prefix('[')
                .and_then(|rest| rest.strip_suffix(']'))
                .and_then(|inner| inner.parse::<Ipv6Addr>().ok())
                .map(IpAddr::V6)
        })
        .map(|ip| ip.to_canonical())
}

/// An IPv4 or IPv6 network in CIDR notation (`10.0.0.0/8`, `2001:db8::/32`); a bare address
/// is the network of that one host.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IpNetwork {
    address: IpAddr,
    prefix: u8,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{input:?} is not a network: {reason}")]
pub struct NetworkError {
    input: String,
    reason: String,
}

impl IpNetwork {
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.address, ip.to_canonical()) {
            (IpAddr::V4(network), IpAddr::V4(ip)) => same_prefix(
                u32::from(network).into(),
                u32::from(ip).into(),
                32,
                self.prefix,
            ),
            (IpAddr::V6(network), IpAddr::V6(ip)) => {
                same_prefix(u128::from(network), u128::from(ip), 128, self.prefix)
            }
            _ => false,
        }
    }
}

/// Whether the first `prefix` of `width` bits of `a` and `b` agree.
fn same_prefix(a: u128, b: u128, width: u8, prefix: u8) -> bool {
    let host_bits = u32::from(width - prefix);
    a.checked_shr(host_bits).unwrap_or(0) == b.checked_shr(host_bits).unwrap_or(0)
}

impl FromStr for IpNetwork {
    type Err = NetworkError;

    fn from_str(input: &str) -> Result<Self, NetworkError> {
        let error = |reason: String| NetworkError {
            input: input.to_owned(),
            reason,
        };
        let (address, prefix) = match input.trim().split_once('/') {
            Some((address, prefix)) => (address, Some(prefix)),
            None => (input.trim(), None),
        };
        let address: IpAddr = address
            .parse()
            .map_err(|_| error(format!("{address:?} is not an IPv4 or IPv6 address")))?;
        let width = if address.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => width,
            Some(prefix) => match prefix.parse::<u8>() {
                Ok(n) if n <= width => n,
                _ => return Err(error(format!("the prefix length must be 0 to {width}"))),
            },
        };
        // IPv4-mapped networks (::ffff:10.0.0.0/104) hold IPv4 addresses, compared as such.
        let (address, prefix) = match address {
            IpAddr::V6(v6) if prefix >= 96 && v6.to_ipv4_mapped().is_some() => {
                (v6.to_canonical(), prefix - 96)
            }
            other => (other, prefix),
        };
        let network = IpNetwork { address, prefix };
        let masked = network.first_address();
        if masked != address {
            return Err(error(format!(
                "host bits are set; the network is {masked}/{prefix}"
            )));
        }
        Ok(network)
    }
}

impl IpNetwork {
    /// The address with every host bit cleared.
    fn first_address(&self) -> IpAddr {
        let keep = |width: u8| -> u128 {
            let host_bits = u32::from(width - self.prefix);
            u128::MAX.checked_shl(host_bits).unwrap_or(0)
        };
        match self.address {
            IpAddr::V4(v4) => {
                let bits = u128::from(u32::from(v4)) & keep(32);
                IpAddr::V4(Ipv4Addr::from(bits as u32))
            }
            IpAddr::V6(v6) => IpAddr::V6(Ipv6Addr::from(u128::from(v6) & keep(128))),
        }
    }
}

impl fmt::Display for IpNetwork {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.address, self.prefix)
    }
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().expect("ip")
    }

    fn peer(text: &str) -> Option<SocketAddr> {
        Some(SocketAddr::new(ip(text), 4321))
    }

    fn forwarded(lines: &[&str]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for line in lines {
            headers.append(X_FORWARDED_FOR, HeaderValue::from_str(line).expect("value"));
        }
        headers
    }

    fn networks(list: &str) -> ProxyTrust {
        list.parse().expect("networks")
    }

    #[test]
    fn without_a_proxy_the_peer_is_the_client_whatever_the_header_says() {
        let headers = forwarded(&["198.51.100.7"]);
        assert_eq!(
            client_ip(&headers, peer("192.0.2.10"), &ProxyTrust::None),
            ip("192.0.2.10")
        );
        assert_eq!(
            client_ip(&HeaderMap::new(), None, &ProxyTrust::None),
            ip("127.0.0.1"),
            "in-process: localhost"
        );
    }

    #[test]
    fn behind_one_trusted_peer_the_right_most_entry_is_the_client() {
        let headers = forwarded(&["6.6.6.6, 198.51.100.7"]);
        assert_eq!(
            client_ip(&headers, peer("10.0.0.1"), &ProxyTrust::ImmediatePeer),
            ip("198.51.100.7"),
            "the left entry is the client's own writing"
        );
        assert_eq!(
            client_ip(
                &HeaderMap::new(),
                peer("10.0.0.1"),
                &ProxyTrust::ImmediatePeer
            ),
            ip("10.0.0.1"),
            "no header: the peer"
        );
        let garbage = forwarded(&["198.51.100.7, not-an-ip"]);
        assert_eq!(
            client_ip(&garbage, peer("10.0.0.1"), &ProxyTrust::ImmediatePeer),
            ip("10.0.0.1")
        );
    }

    #[test]
    fn the_walk_skips_trusted_hops_from_the_right_and_stops_at_the_first_other() {
        let trust = networks("10.0.0.0/8, 192.168.1.5/32");
        let headers = forwarded(&["6.6.6.6, 198.51.100.7, 192.168.1.5, 10.2.3.4"]);
        assert_eq!(
            client_ip(&headers, peer("10.0.0.1"), &trust),
            ip("198.51.100.7")
        );
    }

    #[test]
    fn a_byte_that_is_not_text_on_the_left_does_not_hide_the_entries_to_its_right() {
        let trust = networks("10.0.0.0/8");
        let mut headers = HeaderMap::new();
        headers.insert(
            X_FORWARDED_FOR,
            HeaderValue::from_bytes(b"6.6.6.6, \xff\xfe, 198.51.100.7, 10.2.3.4")
                .expect("obs-text is a valid header value"),
        );
        assert_eq!(
            client_ip(&headers, peer("10.0.0.1"), &trust),
            ip("198.51.100.7"),
            "not the proxy's own address"
        );
    }

    #[test]
    fn a_peer_outside_the_trusted_networks_is_the_client() {
        let trust = networks("10.0.0.0/8");
        let headers = forwarded(&["198.51.100.7"]);
        assert_eq!(
            client_ip(&headers, peer("203.0.113.9"), &trust),
            ip("203.0.113.9")
        );
    }

    #[test]
    fn when_every_hop_is_trusted_the_left_most_is_the_client() {
        let trust = networks("10.0.0.0/8");
        let headers = forwarded(&["10.9.9.9, 10.0.0.2"]);
        assert_eq!(
            client_ip(&headers, peer("10.0.0.1"), &trust),
            ip("10.9.9.9")
        );
    }

    #[test]
    fn a_malformed_entry_ends_the_chain_at_the_last_good_address_to_its_right() {
        let trust = networks("10.0.0.0/8");
        for (header, client) in [
            ("198.51.100.7, garbage, 10.0.0.2", "10.0.0.2"),
            ("198.51.100.7, unknown", "10.0.0.1"),
            ("198.51.100.7,, 10.0.0.2", "10.0.0.2"),
            ("198.51.100.7, ", "10.0.0.1"),
            ("", "10.0.0.1"),
            ("garbage, 198.51.100.7", "198.51.100.7"),
        ] {
            assert_eq!(
                client_ip(&forwarded(&[header]), peer("10.0.0.1"), &trust),
                ip(client),
                "{header:?}"
            );
        }
        let mut unreadable = HeaderMap::new();
        unreadable.append(
            X_FORWARDED_FOR,
            HeaderValue::from_bytes(b"198.51.100.7, \xff").expect("value"),
        );
        assert_eq!(
            client_ip(&unreadable, peer("10.0.0.1"), &trust),
            ip("10.0.0.1")
        );
    }

    #[test]
    fn repeated_header_lines_are_one_list_in_order() {
        let trust = networks("10.0.0.0/8");
        let headers = forwarded(&["6.6.6.6", "198.51.100.7, 10.0.0.3"]);
        assert_eq!(
            client_ip(&headers, peer("10.0.0.1"), &trust),
            ip("198.51.100.7")
        );
        assert_eq!(
            client_ip(&headers, peer("10.0.0.1"), &ProxyTrust::ImmediatePeer),
            ip("10.0.0.3")
        );
    }

    #[test]
    fn entries_may_carry_ports_brackets_and_mapped_addresses() {
        let trust = networks("10.0.0.0/8, ::1/128");
        for (header, client) in [
            ("198.51.100.7:5555", "198.51.100.7"),
            ("[2001:db8::7]:443", "2001:db8::7"),
            ("[2001:db8::7]", "2001:db8::7"),
            (" 2001:db8::7 ", "2001:db8::7"),
            ("[::ffff:198.51.100.8]:80", "198.51.100.8"),
            ("198.51.100.7, [::ffff:10.0.0.9]:80", "198.51.100.7"),
        ] {
            assert_eq!(
                client_ip(&forwarded(&[header]), peer("::1"), &trust),
                ip(client),
                "{header:?}"
            );
        }
        assert_eq!(
            client_ip(
                &forwarded(&["198.51.100.7"]),
                peer("::ffff:10.0.0.1"),
                &trust
            ),
            ip("198.51.100.7"),
            "a mapped peer is matched as IPv4"
        );
    }

    #[test]
    fn networks_parse_in_cidr_notation_and_contain_their_addresses() {
        let net: IpNetwork = "10.0.0.0/8".parse().expect("v4");
        assert!(net.contains(ip("10.255.1.2")));
        assert!(!net.contains(ip("11.0.0.1")));
        assert!(net.contains(ip("::ffff:10.1.1.1")));
        assert!(!net.contains(ip("::1")));
        let host: IpNetwork = "192.168.1.5".parse().expect("bare address");
        assert_eq!(host.to_string(), "192.168.1.5/32");
        assert!(host.contains(ip("192.168.1.5")) && !host.contains(ip("192.168.1.6")));
        let v6: IpNetwork = "2001:db8::/32".parse().expect("v6");
        assert!(v6.contains(ip("2001:db8:ffff::1")));
        assert!(!v6.contains(ip("2001:db9::1")));
        let all: IpNetwork = "0.0.0.0/0".parse().expect("everything");
        assert!(all.contains(ip("203.0.113.1")));
        let all6: IpNetwork = "::/0".parse().expect("everything v6");
        assert!(all6.contains(ip("2001:db8::1")));
        let one6: IpNetwork = "::1/128".parse().expect("loopback");
        assert!(one6.contains(ip("::1")) && !one6.contains(ip("::2")));
        let mapped: IpNetwork = "::ffff:10.0.0.0/104".parse().expect("mapped");
        assert_eq!(mapped.to_string(), "10.0.0.0/8");
    }

    #[test]
    fn bad_networks_are_refused_with_a_reason() {
        for (input, reason) in [
            ("10.0.0.0/33", "prefix length must be 0 to 32"),
            ("::/129", "prefix length must be 0 to 128"),
            ("10.0.0.0/x", "prefix length"),
            ("10.0.0/8", "not an IPv4 or IPv6 address"),
            ("example.com", "not an IPv4 or IPv6 address"),
            ("192.168.1.5/24", "the network is 192.168.1.0/24"),
            ("2001:db8::1/32", "the network is 2001:db8::/32"),
        ] {
            let error = input.parse::<IpNetwork>().expect_err(input);
            assert!(error.to_string().contains(reason), "{input}: {error}");
        }
        assert!("10.0.0.0/8, nonsense".parse::<ProxyTrust>().is_err());
        assert_eq!(" , ".parse::<ProxyTrust>(), Ok(ProxyTrust::None));
    }
}
