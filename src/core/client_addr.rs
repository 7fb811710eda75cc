//! The client's address: the connection's peer, or, when the peer is a trusted proxy
//! (`rate_limit.trusted_proxies`), the address that proxy reports in `X-Forwarded-For` or
//! `Forwarded: for=` (RFC 7239), whichever one header `rate_limit.proxy_header` names.
//!
//! The list is walked from the right (the hop nearest to us) and trusted proxies are skipped:
//! the first address that is not a trusted proxy is the client. Entries further left were
//! written by that client and prove nothing, so a client cannot choose its own address (HFS
//! takes the *first* `X-Forwarded-For` entry from anyone, which lets any client appear as
//! `127.0.0.1` and bypass its limits). An entry that is not an address (`unknown`,
//! `_hidden`) stops the walk at the trusted proxy that wrote it. Only one header is read:
//! a proxy that appends to `X-Forwarded-For` usually passes a client's `Forwarded` through
//! unchanged, and reading both would let the client's one win.
//!
//! IPv4-mapped IPv6 addresses (`::ffff:192.0.2.1`, seen on dual-stack sockets) are treated as
//! the IPv4 address everywhere.

use http::HeaderMap;
use std::net::IpAddr;

/// Most hops walked in a forwarding header (a longer chain stops at the last one walked).
pub const MAX_HOPS: usize = 32;

/// An address block: `10.0.0.0/8`, `2001:db8::/32`, or one address (`192.0.2.7`, `::1`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    net: IpAddr,
    len: u8,
}

impl Cidr {
    /// Whether `ip` is in the block (IPv4-mapped IPv6 addresses count as IPv4).
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.net, ip.to_canonical()) {
            (IpAddr::V4(n), IpAddr::V4(a)) => mask4(u32::from(a), self.len) == u32::from(n),
            (IpAddr::V6(n), IpAddr::V6(a)) => mask6(u128::from(a), self.len) == u128::from(n),
            _ => false,
        }
    }
}

impl std::str::FromStr for Cidr {
    type Err = String;
    fn from_str(text: &str) -> Result<Cidr, String> {
        let t = text.trim();
        let (addr, len) = match t.split_once('/') {
            Some((a, l)) => (a, Some(l)),
            None => (t, None),
        };
        let bad = || format!("`{text}` is not an address or a CIDR block like \"10.0.0.0/8\"");
        let ip: IpAddr = addr.parse().map_err(|_| bad())?;
        let ip = ip.to_canonical();
        let max = if ip.is_ipv4() { 32 } else { 128 };
        let len = match len {
            None => max,
            Some(l) => l.parse::<u8>().ok().filter(|l| *l <= max).ok_or_else(bad)?,
        };
        Ok(Cidr {
            net: mask(ip, len),
            len,
        })
    }
}

impl TryFrom<String> for Cidr {
    type Error = String;
    fn try_from(s: String) -> Result<Cidr, String> {
        s.parse()
    }
}

impl<'de> serde::Deserialize<'de> for Cidr {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Cidr, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

fn mask4(a: u32, len: u8) -> u32 {
    a & u32::MAX
        .checked_shl(32 - u32::from(len.min(32)))
        .unwrap_or(0)
}

fn mask6(a: u128, len: u8) -> u128 {
    a & u128::MAX
        .checked_shl(128 - u32::from(len.min(128)))
        .unwrap_or(0)
}

/// `ip` with only its first `len` bits kept (IPv4 lengths above 32 mean 32).
pub fn mask(ip: IpAddr, len: u8) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V4(a) => IpAddr::from(mask4(u32::from(a), len.min(32)).to_be_bytes()),
        IpAddr::V6(a) => IpAddr::from(mask6(u128::from(a), len).to_be_bytes()),
    }
}

/// Which forwarding header a trusted proxy writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
pub enum ProxyHeader {
    #[default]
    #[serde(rename = "x-forwarded-for")]
    XForwardedFor,
    #[serde(rename = "forwarded")]
    Forwarded,
}

/// The trusted proxies and the header they write.
#[derive(Debug, Clone, Default)]
pub struct Proxies {
    pub trusted: Vec<Cidr>,
    pub header: ProxyHeader,
}

impl Proxies {
    fn trusts(&self, ip: IpAddr) -> bool {
        self.trusted.iter().any(|c| c.contains(ip))
    }

    /// The client's address for a request from `peer` (see the module doc).
    pub fn client(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        let peer = peer.to_canonical();
        if !self.trusts(peer) {
            return peer;
        }
        let hops: Vec<&str> = match self.header {
            ProxyHeader::XForwardedFor => headers
                .get_all("x-forwarded-for")
                .iter()
                .filter_map(|v| v.to_str().ok())
                .flat_map(|v| v.split(','))
                .collect(),
            ProxyHeader::Forwarded => headers
                .get_all(http::header::FORWARDED)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .flat_map(|v| v.split(','))
                .map(forwarded_for)
                .collect(),
        };
        let mut current = peer;
        for hop in hops.iter().rev().take(MAX_HOPS) {
            match parse_node(hop) {
                Some(ip) => {
                    current = ip;
                    if !self.trusts(ip) {
                        return ip;
                    }
                }
                None => return current,
            }
        }
        current
    }
}

/// The `for=` value of one `Forwarded` element (`for=192.0.2.60;proto=http`), or "".
fn forwarded_for(element: &str) -> &str {
    element
        .split(';')
        .filter_map(|pair| pair.split_once('='))
        .find(|(k, _)| k.trim().eq_ignore_ascii_case("for"))
        .map_or("", |(_, v)| v.trim())
}

/// An address as forwarding headers write it: `192.0.2.1`, `192.0.2.1:4711`, `2001:db8::1`,
/// `[2001:db8::1]:4711`, quoted or not. `unknown` and obfuscated names are `None`.
fn parse_node(text: &str) -> Option<IpAddr> {
    let t = text.trim().trim_matches('"').trim();
    if let Some(rest) = t.strip_prefix('[') {
        let (inner, _) = rest.split_once(']')?;
        return inner.parse::<IpAddr>().ok().map(|ip| ip.to_canonical());
    }
    if let Ok(ip) = t.parse::<IpAddr>() {
        return Some(ip.to_canonical());
    }
    // `192.0.2.1:4711`: one colon only (a bare IPv6 address was parsed above).
    let (host, port) = t.rsplit_once(':')?;
    port.parse::<u16>().ok()?;
    host.parse::<std::net::Ipv4Addr>().ok().map(IpAddr::V4)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn proxies(list: &[&str], header: ProxyHeader) -> Proxies {
        Proxies {
            trusted: list.iter().map(|c| c.parse().unwrap()).collect(),
            header,
        }
    }

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                http::header::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        h
    }

    #[test]
    fn cidr_parsing_and_matching() {
        let c: Cidr = "10.0.0.0/8".parse().unwrap();
        assert!(c.contains(ip("10.200.3.4")));
        assert!(!c.contains(ip("11.0.0.1")));
        assert!(c.contains(ip("::ffff:10.1.2.3")), "v4-mapped counts as v4");
        let host: Cidr = "192.0.2.7".parse().unwrap();
        assert!(host.contains(ip("192.0.2.7")));
        assert!(!host.contains(ip("192.0.2.8")));
        let v6: Cidr = "2001:db8::/32".parse().unwrap();
        assert!(v6.contains(ip("2001:db8:ffff::1")));
        assert!(!v6.contains(ip("2001:db9::1")));
        assert!(!v6.contains(ip("10.0.0.1")));
        let all: Cidr = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains(ip("203.0.113.9")));
        let all6: Cidr = "::/0".parse().unwrap();
        assert!(all6.contains(ip("2001:db8::1")));
        // Host bits are masked off.
        assert_eq!(
            "10.1.2.3/8".parse::<Cidr>().unwrap(),
            "10.0.0.0/8".parse().unwrap()
        );
        for bad in [
            "10.0.0.0/33",
            "::/129",
            "10.0.0/8",
            "x",
            "",
            "10.0.0.0/-1",
            "1.2.3.4/",
        ] {
            assert!(bad.parse::<Cidr>().is_err(), "{bad}");
        }
    }

    #[test]
    fn masks() {
        assert_eq!(mask(ip("2001:db8:1:2:3:4:5:6"), 64), ip("2001:db8:1:2::"));
        assert_eq!(mask(ip("192.0.2.77"), 24), ip("192.0.2.0"));
        assert_eq!(mask(ip("192.0.2.77"), 64), ip("192.0.2.77"));
        assert_eq!(mask(ip("192.0.2.77"), 0), ip("0.0.0.0"));
        assert_eq!(mask(ip("::1"), 128), ip("::1"));
        assert_eq!(mask(ip("::1"), 0), ip("::"));
    }

    #[test]
    fn untrusted_peer_headers_are_ignored() {
        let p = proxies(&["10.0.0.0/8"], ProxyHeader::XForwardedFor);
        let h = headers(&[("x-forwarded-for", "127.0.0.1")]);
        assert_eq!(p.client(ip("203.0.113.5"), &h), ip("203.0.113.5"));
        // No trusted proxies at all (the default): the same.
        let none = Proxies::default();
        assert_eq!(none.client(ip("203.0.113.5"), &h), ip("203.0.113.5"));
    }

    #[test]
    fn x_forwarded_for_is_walked_from_the_right() {
        let p = proxies(&["10.0.0.0/8"], ProxyHeader::XForwardedFor);
        // The client forged `127.0.0.1`; the proxy appended the real address.
        let h = headers(&[("x-forwarded-for", "127.0.0.1, 198.51.100.7")]);
        assert_eq!(p.client(ip("10.0.0.2"), &h), ip("198.51.100.7"));
        // Two trusted proxies in a row, and two header lines.
        let h = headers(&[
            ("x-forwarded-for", "1.1.1.1, 198.51.100.7"),
            ("x-forwarded-for", "10.0.0.9"),
        ]);
        assert_eq!(p.client(ip("10.0.0.2"), &h), ip("198.51.100.7"));
        // Ports and brackets.
        let h = headers(&[("x-forwarded-for", "[2001:db8::5]:443")]);
        assert_eq!(p.client(ip("10.0.0.2"), &h), ip("2001:db8::5"));
        let h = headers(&[("x-forwarded-for", "198.51.100.7:5555")]);
        assert_eq!(p.client(ip("10.0.0.2"), &h), ip("198.51.100.7"));
        // No header: the proxy itself.
        assert_eq!(p.client(ip("10.0.0.2"), &HeaderMap::new()), ip("10.0.0.2"));
        // Garbage stops the walk at the proxy that wrote it.
        let h = headers(&[("x-forwarded-for", "198.51.100.7, unknown")]);
        assert_eq!(p.client(ip("10.0.0.2"), &h), ip("10.0.0.2"));
        // All trusted: the leftmost.
        let h = headers(&[("x-forwarded-for", "10.9.9.9, 10.8.8.8")]);
        assert_eq!(p.client(ip("10.0.0.2"), &h), ip("10.9.9.9"));
        // Forwarded is not read in this mode.
        let h = headers(&[("forwarded", "for=198.51.100.99")]);
        assert_eq!(p.client(ip("10.0.0.2"), &h), ip("10.0.0.2"));
    }

    #[test]
    fn forwarded_for_rfc_7239() {
        let p = proxies(&["10.0.0.0/8", "::1"], ProxyHeader::Forwarded);
        let h = headers(&[(
            "forwarded",
            "for=127.0.0.1, for=\"[2001:db8:cafe::17]:4711\";proto=https",
        )]);
        assert_eq!(p.client(ip("::1"), &h), ip("2001:db8:cafe::17"));
        let h = headers(&[("forwarded", "proto=https;For=192.0.2.60;by=10.0.0.1")]);
        assert_eq!(p.client(ip("10.1.1.1"), &h), ip("192.0.2.60"));
        let h = headers(&[("forwarded", "for=192.0.2.60, for=_hidden")]);
        assert_eq!(p.client(ip("10.1.1.1"), &h), ip("10.1.1.1"));
        // X-Forwarded-For is not read in this mode.
        let h = headers(&[("x-forwarded-for", "192.0.2.99")]);
        assert_eq!(p.client(ip("10.1.1.1"), &h), ip("10.1.1.1"));
    }

    #[test]
    fn long_chains_are_bounded() {
        let p = proxies(&["10.0.0.0/8"], ProxyHeader::XForwardedFor);
        let chain = vec!["10.1.1.1"; 1000].join(", ");
        let h = headers(&[("x-forwarded-for", &format!("198.51.100.1, {chain}"))]);
        assert_eq!(p.client(ip("10.0.0.2"), &h), ip("10.1.1.1"));
    }
}
