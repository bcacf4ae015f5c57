//! Who this machine is: node name and node IP.

/// Hostnames that images ship with and therefore collide across a fleet
/// (kubeadm requires unique node names; seed item 12).
pub const DEFAULT_HOSTNAMES: [&str; 10] = [
    "localhost",
    "localhost.localdomain",
    "raspberrypi",
    "ubuntu",
    "fedora",
    "core",
    "debian",
    "flatcar",
    "coreos",
    "dietpi",
];

/// Makes `s` a valid RFC 1123 DNS subdomain (what a Node name must be):
/// lowercase alphanumerics, `-` and `.`, labels not starting or ending with `-`.
pub fn rfc1123(s: &str) -> String {
    let lower = s.trim().to_lowercase();
    let labels: Vec<String> = lower
        .split('.')
        .map(|l| {
            let mapped: String = l.chars().map(|c| if c.is_ascii_alphanumeric() { c } else { '-' }).collect();
            let t = mapped.trim_matches('-');
            t.chars().take(63).collect::<String>().trim_end_matches('-').to_string()
        })
        .filter(|l| !l.is_empty())
        .collect();
    let mut name = labels.join(".");
    name.truncate(253);
    name.trim_end_matches(['-', '.']).to_string()
}

/// The node name: explicit > metadata hostname > hostname, made valid; a
/// default hostname is replaced by `node-` + 12 hex digits of the machine id.
pub fn node_name(explicit: Option<&str>, metadata: Option<&str>, hostname: &str, machine_id: &str) -> String {
    let candidate = explicit.or(metadata).unwrap_or(hostname);
    let name = rfc1123(candidate);
    let short = name.split('.').next().unwrap_or("");
    if name.is_empty() || (explicit.is_none() && DEFAULT_HOSTNAMES.iter().any(|d| *d == name || *d == short)) {
        let seed = if machine_id.is_empty() { candidate } else { machine_id };
        return format!("node-{}", &sha256_hex(seed.as_bytes())[..12]);
    }
    name
}

/// The source address this machine would use to reach `endpoint` (`host:port`):
/// a UDP "connect" picks the route without sending a packet.
pub fn route_source(endpoint: &str) -> Option<String> {
    route_source_or_why(endpoint).ok()
}

/// Why [`route_source_or_why`] found no address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NoSource {
    /// The endpoint's name does not resolve (DNS), with the resolver's words.
    Dns(String),
    /// It resolves, but this machine has no route to it.
    NoRoute(String),
}

impl std::fmt::Display for NoSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NoSource::Dns(e) => write!(f, "its name does not resolve (DNS: {e})"),
            NoSource::NoRoute(e) => write!(f, "no route to it ({e})"),
        }
    }
}

/// [`route_source`], saying why not: DNS (the name does not resolve) or no route.
pub fn route_source_or_why(endpoint: &str) -> Result<String, NoSource> {
    use std::net::{ToSocketAddrs, UdpSocket};
    let addr = endpoint
        .to_socket_addrs()
        .map_err(|e| NoSource::Dns(e.to_string()))?
        .next()
        .ok_or_else(|| NoSource::Dns("no addresses".into()))?;
    let bind = if addr.is_ipv6() { "[::]:0" } else { "0.0.0.0:0" };
    let s = UdpSocket::bind(bind).map_err(|e| NoSource::NoRoute(e.to_string()))?;
    s.connect(addr).map_err(|e| NoSource::NoRoute(format!("{addr}: {e}")))?;
    s.local_addr().map(|a| a.ip().to_string()).map_err(|e| NoSource::NoRoute(e.to_string()))
}

fn sha256_hex(data: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(data).iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_valid_and_defaults_replaced() {
        assert_eq!(rfc1123("My_Host.Example.COM."), "my-host.example.com");
        assert_eq!(node_name(None, None, "worker-7", "abc"), "worker-7");
        let n = node_name(None, None, "raspberrypi", "0123456789abcdef0123456789abcdef");
        assert!(n.starts_with("node-") && n.len() == 17, "{n}");
        assert_ne!(n, node_name(None, None, "raspberrypi", "ffff456789abcdef0123456789abcdef"));
        assert_eq!(node_name(Some("CP_1"), Some("meta"), "localhost", "x"), "cp-1");
        assert_eq!(node_name(None, Some("ip-10-0-0-5.ec2.internal"), "localhost", "x"), "ip-10-0-0-5.ec2.internal");
    }

    #[test]
    fn route_to_loopback() {
        assert_eq!(route_source("127.0.0.1:6443").as_deref(), Some("127.0.0.1"));
    }
}
