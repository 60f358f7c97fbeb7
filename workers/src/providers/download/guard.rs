//! Which addresses a result download may connect to when an upstream chose them, and the DNS
//! resolver that enforces it.
//!
//! The filter runs inside the resolver the HTTP client connects with, so the address checked
//! is the address connected to: there is no second lookup an attacker's DNS could answer
//! differently (rebinding). A URL whose host is an IP literal never reaches a resolver, so
//! [`check_literal`] covers those before the request is sent.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use reqwest::Url;

/// A download refused because its host is, or only resolves to, non-public addresses.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{host} is not a public address ({addresses})")]
pub struct Blocked {
    pub host: String,
    pub addresses: String,
}

/// Whether `ip` is anything but a public unicast address: loopback, RFC 1918 private,
/// link-local (cloud metadata at 169.254.169.254 included), CGNAT, unspecified, multicast,
/// broadcast and reserved, documentation and benchmarking ranges, IPv6 unique-local and
/// link-local, and every IPv6 form that embeds one of those IPv4 addresses.
pub fn is_blocked(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4_blocked(v4),
        IpAddr::V6(v6) => v6_blocked(v6),
    }
}

fn v4_blocked(ip: Ipv4Addr) -> bool {
    let [a, b, c, _] = ip.octets();
    a == 0 // 0.0.0.0/8 "this network", unspecified included
        || ip.is_loopback() // 127.0.0.0/8
        || ip.is_private() // 10/8, 172.16/12, 192.168/16
        || ip.is_link_local() // 169.254/16: the metadata services
        || (a == 100 && (b & 0xc0) == 64) // 100.64/10 carrier-grade NAT
        || (a == 192 && b == 0 && c == 0) // 192.0.0/24 IETF protocol assignments
        || ip.is_documentation() // 192.0.2/24, 198.51.100/24, 203.0.113/24
        || (a == 198 && (b & 0xfe) == 18) // 198.18/15 benchmarking
        || ip.is_multicast() // 224/4
        || a >= 240 // 240/4 reserved, 255.255.255.255 broadcast included
}

fn v6_blocked(ip: Ipv6Addr) -> bool {
    let s = ip.segments();
    let embedded = |high: u16, low: u16| {
        let [a, b] = high.to_be_bytes();
        let [c, d] = low.to_be_bytes();
        v4_blocked(Ipv4Addr::new(a, b, c, d))
    };
    if let Some(v4) = ip.to_ipv4_mapped() {
        return v4_blocked(v4); // ::ffff:a.b.c.d
    }
    ip.is_unspecified()
        || ip.is_loopback()
        // ::a.b.c.d (deprecated IPv4-compatible): any kernel that still routes it reaches v4.
        || (s[..6].iter().all(|&x| x == 0) && embedded(s[6], s[7]))
        // 64:ff9b::/96 NAT64: the gateway connects to the embedded IPv4 address.
        || (s[0] == 0x64 && s[1] == 0xff9b && s[2..6].iter().all(|&x| x == 0) && embedded(s[6], s[7]))
        // 2002::/16 6to4 embeds the IPv4 address of its relay.
        || (s[0] == 0x2002 && embedded(s[1], s[2]))
        || (s[0] & 0xfe00) == 0xfc00 // fc00::/7 unique local
        || (s[0] & 0xffc0) == 0xfe80 // fe80::/10 link-local
        || (s[0] & 0xffc0) == 0xfec0 // fec0::/10 site-local (deprecated, still private)
        || (s[0] & 0xff00) == 0xff00 // ff00::/8 multicast
        || (s[0] == 0x2001 && s[1] == 0x0db8) // 2001:db8::/32 documentation
        || (s[0] == 0x3fff && s[1] < 0x1000) // 3fff::/20 documentation (RFC 9637)
        || (s[0] == 0x0100 && s[1..4].iter().all(|&x| x == 0)) // 100::/64 discard
}

/// Refuses a URL whose host is a blocked IP literal (those are never resolved). URL parsing
/// already turned the odd spellings (`2130706433`, `0x7f.1`, `[::ffff:7f00:1]`) into addresses.
pub fn check_literal(url: &Url) -> Result<(), Blocked> {
    // Parsing normalised IPv4 hosts to dotted quads and put IPv6 ones in brackets.
    let host = url.host_str().unwrap_or_default();
    let Ok(ip) = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .parse::<IpAddr>()
    else {
        return Ok(());
    };
    if is_blocked(ip) {
        return Err(Blocked {
            host: ip.to_string(),
            addresses: ip.to_string(),
        });
    }
    Ok(())
}

/// The public ones of `resolved` (the addresses `host` resolved to), or [`Blocked`] naming
/// them all when none is public.
pub fn public_only(host: &str, resolved: Vec<SocketAddr>) -> Result<Vec<SocketAddr>, Blocked> {
    let (public, blocked): (Vec<SocketAddr>, Vec<SocketAddr>) = resolved
        .into_iter()
        .partition(|address| !is_blocked(address.ip()));
    if public.is_empty() {
        let addresses = blocked
            .iter()
            .map(|a| a.ip().to_string())
            .collect::<Vec<_>>()
            .join(", ");
        return Err(Blocked {
            host: host.to_owned(),
            addresses,
        });
    }
    Ok(public)
}

/// The system resolver with every blocked address dropped; a name left with none fails with
/// [`Blocked`] (found again in the error chain by [`super::Downloader`]).
#[derive(Debug, Default)]
pub struct PublicOnly;

impl Resolve for PublicOnly {
    fn resolve(&self, name: Name) -> Resolving {
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let resolved: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let public = public_only(&host, resolved)?;
            let addresses: Addrs = Box::new(public.into_iter());
            Ok(addresses)
        })
    }
}

#[cfg(test)]
mod tests {
    use std::str::FromStr as _;

    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().expect(text)
    }

    #[test]
    fn private_and_special_addresses_are_blocked_in_every_spelling() {
        for blocked in [
            "127.0.0.1",
            "127.255.0.9",
            "10.1.2.3",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "100.127.255.254",
            "0.0.0.0",
            "0.1.2.3",
            "192.0.0.170",
            "192.0.2.1",
            "198.51.100.7",
            "203.0.113.9",
            "198.18.0.1",
            "224.0.0.1",
            "240.0.0.1",
            "255.255.255.255",
            "::",
            "::1",
            "fc00::1",
            "fd12:3456::1",
            "fe80::1",
            "febf::1",
            "fec0::1",
            "ff02::1",
            "2001:db8::1",
            "3fff::1",
            "100::1",
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
            "::ffff:10.0.0.1",
            "::ffff:100.64.0.1",
            "::127.0.0.1",
            "64:ff9b::169.254.169.254",
            "2002:a9fe:a9fe::1",
        ] {
            assert!(is_blocked(ip(blocked)), "{blocked} must be blocked");
        }
    }

    #[test]
    fn public_addresses_pass() {
        for public in [
            "8.8.8.8",
            "1.1.1.1",
            "142.250.74.78",
            "172.15.255.255",
            "172.32.0.1",
            "100.63.255.255",
            "100.128.0.1",
            "169.253.0.1",
            "192.0.1.1",
            "198.20.0.1",
            "2001:4860:4860::8888",
            "2606:4700:4700::1111",
            "::ffff:8.8.8.8",
            "64:ff9b::808:808",
            "2002:808:808::1",
        ] {
            assert!(!is_blocked(ip(public)), "{public} must pass");
        }
    }

    #[test]
    fn ip_literals_are_checked_however_they_are_spelled() {
        for url in [
            "http://169.254.169.254/latest/meta-data/",
            "http://2130706433/",
            "http://0x7f.1/",
            "http://[::ffff:7f00:1]/",
            "https://[fd00::1]:8443/x",
        ] {
            let url = Url::parse(url).expect(url);
            assert!(check_literal(&url).is_err(), "{url}");
        }
        for url in ["https://8.8.8.8/", "https://cdn.example.com/v.mp4"] {
            let url = Url::parse(url).expect(url);
            assert_eq!(check_literal(&url), Ok(()), "{url}");
        }
    }

    #[tokio::test]
    async fn the_resolver_refuses_a_name_with_only_blocked_addresses() {
        let name = Name::from_str("localhost").expect("name");
        let error = match PublicOnly.resolve(name).await {
            Ok(addresses) => panic!("resolved to {:?}", addresses.collect::<Vec<_>>()),
            Err(error) => error,
        };
        let blocked = error.downcast_ref::<Blocked>().expect("a Blocked error");
        assert_eq!(blocked.host, "localhost");
    }
}
