//! Server-side request forgery guard for attachment downloads. Attachment URLs come from
//! outside, so by default only public addresses are fetched: [`blocked`] classifies an address,
//! [`AllowList`] lists what is allowed anyway, and [`GuardedResolver`] resolves names itself and
//! hands the HTTP client only addresses it checked, so a DNS answer that changes between check
//! and connect cannot redirect the download (the client connects to what was checked).

use std::{
    future::Future,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    pin::Pin,
    sync::Arc,
};

pub use crate::config::AllowList;

/// Why an address is refused, or `None` if it is a public unicast address.
pub fn blocked(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => blocked_v4(v4),
        IpAddr::V6(v6) => blocked_v6(v6),
    }
}

fn in_v4(ip: Ipv4Addr, net: [u8; 4], prefix: u32) -> bool {
    let mask = if prefix == 0 { 0 } else { u32::MAX << (32 - prefix) };
    u32::from(ip) & mask == u32::from(Ipv4Addr::from(net)) & mask
}

fn blocked_v4(ip: Ipv4Addr) -> Option<&'static str> {
    const RANGES: &[([u8; 4], u32, &str)] = &[
        ([0, 0, 0, 0], 8, "unspecified / this network"),
        ([10, 0, 0, 0], 8, "private"),
        ([100, 64, 0, 0], 10, "carrier-grade NAT"),
        ([127, 0, 0, 0], 8, "loopback"),
        ([169, 254, 0, 0], 16, "link-local (cloud metadata)"),
        ([172, 16, 0, 0], 12, "private"),
        ([192, 0, 0, 0], 24, "IETF protocol assignments"),
        ([192, 0, 2, 0], 24, "documentation"),
        ([192, 88, 99, 0], 24, "6to4 relay"),
        ([192, 168, 0, 0], 16, "private"),
        ([198, 18, 0, 0], 15, "benchmarking"),
        ([198, 51, 100, 0], 24, "documentation"),
        ([203, 0, 113, 0], 24, "documentation"),
        ([224, 0, 0, 0], 4, "multicast"),
        ([240, 0, 0, 0], 4, "reserved / broadcast"),
    ];
    RANGES.iter().find(|(net, prefix, _)| in_v4(ip, *net, *prefix)).map(|(_, _, why)| *why)
}

fn blocked_v6(ip: Ipv6Addr) -> Option<&'static str> {
    let s = ip.segments();
    let embedded = |hi: usize| Ipv4Addr::new((s[hi] >> 8) as u8, s[hi] as u8, (s[hi + 1] >> 8) as u8, s[hi + 1] as u8);
    if ip.is_unspecified() {
        return Some("unspecified");
    }
    if ip.is_loopback() {
        return Some("loopback");
    }
    // IPv4 written as IPv6 is judged as the IPv4 address it carries.
    if s[..5] == [0; 5] && s[5] == 0xffff {
        // IPv4-mapped (::ffff:a.b.c.d) is judged as the IPv4 address it carries.
        return blocked_v4(embedded(6)).map(|_| "IPv4-mapped form of a blocked address");
    }
    if s[..6] == [0; 6] {
        // IPv4-compatible (::a.b.c.d), deprecated since 2006: nothing public uses it.
        return Some("IPv4-compatible address");
    }
    if s[0] == 0x2002 {
        // 6to4: 2002:AABB:CCDD::/48 embeds a.b.c.d.
        return blocked_v4(embedded(1)).map(|_| "6to4 of a blocked IPv4 address");
    }
    if s[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        return blocked_v4(embedded(6)).map(|_| "NAT64 of a blocked IPv4 address");
    }
    match s[0] {
        x if x & 0xfe00 == 0xfc00 => Some("unique-local"),
        x if x & 0xffc0 == 0xfe80 => Some("link-local"),
        x if x & 0xffc0 == 0xfec0 => Some("site-local"),
        x if x & 0xff00 == 0xff00 => Some("multicast"),
        0x2001 if s[1] == 0x0db8 => Some("documentation"),
        0x2001 if s[1] < 0x0200 => Some("IETF protocol assignments (Teredo, ORCHID, …)"),
        0x0100 if s[1..4] == [0, 0, 0] => Some("discard-only"),
        _ => None,
    }
}

/// `Err(reason)` if `ip` may not be fetched (for host `host`, if it was reached by name): it is
/// [`blocked`] and `allow` lists neither the host nor the address.
pub fn check(allow: &AllowList, host: Option<&str>, ip: IpAddr) -> Result<(), String> {
    if host.is_some_and(|h| allow.allows_host(h)) || allow.allows_ip(ip) {
        return Ok(());
    }
    match blocked(ip) {
        Some(why) => Err(format!("address {ip} is {why} and not in attachments.allow")),
        None => Ok(()),
    }
}

/// Refusal by the guard; found in the error chain of a failed request to tell it from a network error.
#[derive(Debug, thiserror::Error)]
#[error("blocked: {0}")]
pub struct Blocked(pub String);

/// Name lookup, pluggable so that tests can map names to chosen loopback addresses.
pub trait Lookup: Send + Sync {
    fn lookup(&self, host: String) -> Pin<Box<dyn Future<Output = std::io::Result<Vec<IpAddr>>> + Send>>;
}

/// The system resolver.
pub struct SystemLookup;

impl Lookup for SystemLookup {
    fn lookup(&self, host: String) -> Pin<Box<dyn Future<Output = std::io::Result<Vec<IpAddr>>> + Send>> {
        Box::pin(async move { Ok(tokio::net::lookup_host((host.as_str(), 0)).await?.map(|a| a.ip()).collect()) })
    }
}

/// The HTTP client's resolver: looks the name up, drops nothing silently: if any address is
/// refused the whole name is refused (a mixed answer is how rebinding attacks start).
pub struct GuardedResolver {
    pub lookup: Arc<dyn Lookup>,
    pub allow: Arc<AllowList>,
}

impl reqwest::dns::Resolve for GuardedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let (lookup, allow) = (self.lookup.clone(), self.allow.clone());
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let ips = lookup.lookup(host.clone()).await?;
            if ips.is_empty() {
                return Err(format!("{host} has no address").into());
            }
            for ip in &ips {
                check(&allow, Some(&host), *ip).map_err(|why| Blocked(format!("{host}: {why}")))?;
            }
            let addrs: reqwest::dns::Addrs = Box::new(ips.into_iter().map(|ip| SocketAddr::new(ip, 0)));
            Ok(addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_blocked_range_is_refused_and_public_addresses_pass() {
        let blocked_cases = [
            "0.0.0.0",
            "0.1.2.3",
            "10.0.0.1",
            "10.255.255.255",
            "100.64.0.1",
            "100.127.255.254",
            "127.0.0.1",
            "127.0.0.2",
            "169.254.169.254",
            "172.16.0.1",
            "172.31.255.255",
            "192.0.0.8",
            "192.0.2.1",
            "192.88.99.1",
            "192.168.1.1",
            "198.18.0.1",
            "198.19.255.255",
            "198.51.100.7",
            "203.0.113.9",
            "224.0.0.1",
            "239.255.255.250",
            "240.0.0.1",
            "255.255.255.255",
            "::",
            "::1",
            "::ffff:127.0.0.2",
            "::ffff:10.0.0.1",
            "::ffff:169.254.169.254",
            "::127.0.0.1",
            "::10.0.0.1",
            "2002:7f00:0002::1",
            "2002:a9fe:a9fe::",
            "64:ff9b::10.0.0.1",
            "fc00::1",
            "fd12:3456::1",
            "fe80::1",
            "febf::1",
            "fec0::1",
            "ff02::1",
            "2001:db8::1",
            "2001::1",
            "100::1",
        ];
        for ip in blocked_cases {
            assert!(blocked(ip.parse().unwrap()).is_some(), "{ip} must be blocked");
        }
        let public = [
            "1.1.1.1",
            "8.8.8.8",
            "100.63.255.255",
            "100.128.0.0",
            "172.15.255.255",
            "172.32.0.0",
            "192.169.0.1",
            "2606:4700::1111",
            "::ffff:8.8.8.8",
            "2002:0808:0808::1",
            "64:ff9b::8.8.8.8",
        ];
        for ip in public {
            assert_eq!(blocked(ip.parse().unwrap()), None, "{ip} is public");
        }
    }

    #[test]
    fn the_allow_list_takes_hosts_addresses_and_networks() {
        let allow = AllowList::parse("127.0.0.1, files.internal, 10.1.0.0/16, [::1]").unwrap();
        assert!(check(&allow, None, "127.0.0.1".parse().unwrap()).is_ok());
        assert!(check(&allow, None, "::ffff:127.0.0.1".parse().unwrap()).is_ok(), "mapped form of an allowed address");
        assert!(check(&allow, None, "127.0.0.2".parse().unwrap()).is_err(), "only what is listed");
        assert!(check(&allow, None, "10.1.2.3".parse().unwrap()).is_ok());
        assert!(check(&allow, None, "10.2.0.1".parse().unwrap()).is_err());
        assert!(check(&allow, None, "::1".parse().unwrap()).is_ok());
        assert!(check(&allow, Some("FILES.internal"), "192.168.0.1".parse().unwrap()).is_ok());
        assert!(check(&allow, Some("other.internal"), "192.168.0.1".parse().unwrap()).is_err());
        assert!(check(&allow, Some("example.com"), "93.184.216.34".parse().unwrap()).is_ok(), "public needs no entry");
        assert!(AllowList::parse("bad entry!").is_err());
    }
}
