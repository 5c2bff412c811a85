//! `attachments.allow`: the hosts and networks that attachment downloads may reach although they
//! are private. Parsed once, at load; the SSRF guard (`worker::attachments::guard`) consults it.

use std::net::IpAddr;

use ipnet::IpNet;

/// Hosts and networks that may be fetched even though the SSRF guard refuses them
/// (`MOKA_INGEST_ATTACHMENTS_ALLOW`: comma-separated host names, addresses or CIDR networks).
#[derive(Debug, Clone, Default, PartialEq, serde::Deserialize)]
#[serde(try_from = "String")]
pub struct AllowList {
    hosts: Vec<String>,
    nets: Vec<IpNet>,
}

impl TryFrom<String> for AllowList {
    type Error = String;

    fn try_from(spec: String) -> Result<AllowList, String> {
        AllowList::parse(&spec)
    }
}

impl AllowList {
    pub fn parse(spec: &str) -> Result<AllowList, String> {
        let mut list = AllowList::default();
        for entry in spec.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            let bare = entry.trim_start_matches('[').trim_end_matches(']');
            if let Ok(net) = bare.parse::<IpNet>() {
                list.nets.push(net);
            } else if let Ok(ip) = bare.parse::<IpAddr>() {
                list.nets.push(IpNet::from(ip));
            } else if entry.chars().all(|c| c.is_ascii_alphanumeric() || "-.".contains(c)) {
                list.hosts.push(entry.to_ascii_lowercase());
            } else {
                return Err(format!(
                    "attachments.allow entry {entry:?} is not a host name, address or network \
                     (allowed: host names, IP addresses, CIDR networks, comma-separated)"
                ));
            }
        }
        Ok(list)
    }

    pub fn allows_host(&self, host: &str) -> bool {
        let host = host.trim_end_matches('.').to_ascii_lowercase();
        self.hosts.contains(&host)
    }

    pub fn allows_ip(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        self.nets.iter().any(|n| n.contains(&ip))
    }
}

/// An IPv4-mapped IPv6 address is compared as its IPv4 address.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
        v4 => v4,
    }
}
