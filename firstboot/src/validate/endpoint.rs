//! Addresses: the API server endpoint (kubeadm's `ParseHostPort`), node IPs
//! (kubelet's `--node-ip`) and the API server's bind port (`ParsePort`).

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::names::dns1123_subdomain;
use super::{has_space_or_control, quote};

/// kube-apiserver's default secure port, which kubeadm uses for
/// `localAPIEndpoint.bindPort` (`KubeAPIServerPort` in
/// `cmd/kubeadm/app/constants/constants.go`) and therefore for a
/// `controlPlaneEndpoint` given without a port.
pub const DEFAULT_API_SERVER_PORT: u16 = 6443;

/// Where nodes reach the API server: `controlPlaneEndpoint` in kubeadm's
/// `ClusterConfiguration` and `discovery.bootstrapToken.apiServerEndpoint` in
/// its `JoinConfiguration`.
///
/// `host` is a lower-case DNS name, an IPv4 address, or an IPv6 address in
/// its canonical text form *without* brackets; [`fmt::Display`] renders
/// `host:port`, bracketing IPv6 (`[2001:db8::1]:6443`), which is what both
/// kubeadm fields need.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Endpoint {
    /// DNS name (lower case), IPv4 address, or IPv6 address without brackets.
    pub host: String,
    /// TCP port, 1-65535.
    pub port: u16,
}

impl Endpoint {
    /// The host as an IP address, when it is one (not a DNS name).
    pub fn ip(&self) -> Option<IpAddr> {
        self.host.parse().ok()
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.parse::<Ipv6Addr>().is_ok() {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

/// Parses a TCP port 1-65535 written in plain decimal digits.
fn port_number(p: &str) -> Result<u16, String> {
    if p.is_empty() {
        return Err("the port after `:` is empty".into());
    }
    if !p.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("port {} is not a number", quote(p)));
    }
    match p.parse::<u32>() {
        Ok(n) if (1..=65535).contains(&n) => Ok(n as u16),
        _ => Err(format!("port {p} is outside 1-65535")),
    }
}

/// Parses `control_plane_endpoint` (also `kiln cluster init --endpoint`):
/// `HOST[:PORT]`.
///
/// Rule: kubeadm's `ParseHostPort` (`cmd/kubeadm/app/util/endpoint.go`, used by
/// `ValidateHostPort` and `SetClusterDynamicDefaults`): `host:port`,
/// `ipv4:port` or `[ipv6]:port`, the port optional and 1-65535 (`ParsePort`),
/// the host an IP address or an RFC 1123 subdomain (`IsDNS1123Subdomain`).
/// Without a port kubeadm uses the local API server's `bindPort`, whose
/// default is 6443; kiln fills in [`DEFAULT_API_SERVER_PORT`] and always
/// renders the port.
///
/// kiln's decisions where kubeadm leaves room:
/// * A bare IPv6 address (`2001:db8::1`) is accepted, as `ParseHostPort`
///   accepts it, and normalised to `[2001:db8::1]:6443`. Because of that, a
///   bare `2001:db8::1:6443` is the address `2001:db8::1:6443`, not a port:
///   write `[2001:db8::1]:6443`.
/// * `[2001:db8::1]` without a port is accepted and gets 6443 (kubeadm itself
///   would refuse the brackets without a port, but kiln never hands it that form).
/// * Brackets hold IPv6 only; IPv6 zones (`%eth0`) are refused.
/// * DNS names are lower-cased (kubeadm accepts only lower case; DNS is
///   case-insensitive), and each label must be at most 63 characters, as DNS
///   requires. A dotted all-numeric host that is not an IPv4 address
///   (`10.0.0.256`) is refused rather than taken as a DNS name.
/// * No scheme (`https://`), path, user, whitespace or control characters.
pub fn parse(s: &str) -> Result<Endpoint, String> {
    let bad = |why: &str| {
        format!(
            "API server endpoint {}: {why}; use HOST[:PORT], e.g. api.example.com:6443, 10.0.0.10:6443 or [2001:db8::10]:6443",
            quote(s)
        )
    };
    if s.is_empty() {
        return Err(bad("it is empty"));
    }
    if has_space_or_control(s) {
        return Err(bad("it contains whitespace or a control character"));
    }
    if let Some((scheme, _)) = s.split_once("://") {
        return Err(bad(&format!("drop the scheme `{scheme}://`; kubeadm adds https:// itself")));
    }
    if s.contains('/') || s.contains('?') || s.contains('#') {
        return Err(bad("only a host and a port are allowed, no path"));
    }
    if s.contains('@') {
        return Err(bad("only a host and a port are allowed, no user"));
    }
    if let Some(rest) = s.strip_prefix('[') {
        let (inner, tail) = rest.split_once(']').ok_or_else(|| bad("`[` is never closed"))?;
        let addr: Ipv6Addr = inner.parse().map_err(|_| {
            if inner.contains('%') {
                bad("IPv6 zones (`%eth0`) cannot be used; give a global or unique-local address")
            } else if inner.parse::<Ipv4Addr>().is_ok() {
                bad("brackets are for IPv6 addresses only; write an IPv4 address without them")
            } else {
                bad(&format!("{} inside [ ] is not an IPv6 address", quote(inner)))
            }
        })?;
        let port = match tail.strip_prefix(':') {
            Some(p) => port_number(p).map_err(|why| bad(&why))?,
            None if tail.is_empty() => DEFAULT_API_SERVER_PORT,
            None => return Err(bad("expected `:PORT` after `]`")),
        };
        return Ok(Endpoint { host: addr.to_string(), port });
    }
    if let Ok(addr) = s.parse::<Ipv6Addr>() {
        // kubeadm's ParseHostPort takes a bare IPv6 address as a host without a port.
        return Ok(Endpoint { host: addr.to_string(), port: DEFAULT_API_SERVER_PORT });
    }
    let (host, port) = match s.rsplit_once(':') {
        Some((h, _)) if h.contains(':') => {
            return Err(bad("an IPv6 address with a port must be in brackets, like [2001:db8::1]:6443"))
        }
        Some((h, p)) => (h, port_number(p).map_err(|why| bad(&why))?),
        None => (s, DEFAULT_API_SERVER_PORT),
    };
    if host.is_empty() {
        return Err(bad("the host before `:` is empty"));
    }
    if let Ok(addr) = host.parse::<Ipv4Addr>() {
        return Ok(Endpoint { host: addr.to_string(), port });
    }
    if host.split('.').all(|l| !l.is_empty() && l.bytes().all(|b| b.is_ascii_digit())) {
        return Err(bad(&format!("{} looks like an IPv4 address but is not one", quote(host))));
    }
    let lower = host.to_ascii_lowercase();
    if let Err(why) = dns1123_subdomain(&lower) {
        return Err(bad(&format!("{} is not a host name or IP address: {why}", quote(host))));
    }
    if let Some(label) = lower.split('.').find(|l| l.len() > 63) {
        return Err(bad(&format!(
            "{} is not a host name or IP address: DNS label {} is longer than 63 characters",
            quote(host),
            quote(label)
        )));
    }
    Ok(Endpoint { host: lower, port })
}

/// Validates the node's IP for kubelet's `--node-ip` (kubeadm
/// `nodeRegistration.kubeletExtraArgs`): one IPv4 or IPv6 address, nothing
/// else — no spaces (which would smuggle further flags onto kubelet's command
/// line), no list, no brackets, no prefix length, no zone.
///
/// Rules:
/// * kubelet's own parsing is lenient: `ParseNodeIPArgument`
///   (`staging/src/k8s.io/component-helpers/node/util/ips.go`, `parseNodeIP`
///   with `sloppy=true`) trims spaces and logs-and-ignores entries it cannot
///   parse, so a bad value does not stop kubelet; it silently picks another
///   address. kiln therefore refuses what kubelet would ignore.
/// * kubelet refuses loopback, multicast, link-local unicast and all-zeros
///   addresses as the node IP (`pkg/kubelet/kubelet_node_status.go`,
///   `validateNodeIP`); so does this function. (That the address is on one of
///   the host's interfaces, kubelet's last check there, is not a pure question
///   and is left to the agent.)
///
/// An IPv4-mapped IPv6 address (`::ffff:10.0.0.5`) is returned as the IPv4
/// address it stands for, which is how Go (and so kubelet) reads it.
pub fn node_ip(s: &str) -> Result<IpAddr, String> {
    let bad = |why: &str| format!("node IP {}: {why}; give one address, e.g. 10.0.0.5 or 2001:db8::5", quote(s));
    if s.is_empty() {
        return Err(bad("it is empty"));
    }
    if has_space_or_control(s) {
        return Err(bad(
            "it contains whitespace or a control character, which would put more than an address on kubelet's command line",
        ));
    }
    if s.contains(',') {
        return Err(bad("it is a list; a dual-stack node gives one IPv4 and one IPv6 address to node_ips"));
    }
    if s.contains('/') {
        return Err(bad("it has a prefix length; drop the /N"));
    }
    if s.starts_with('[') {
        return Err(bad("drop the brackets"));
    }
    let ip: IpAddr = s.parse().map_err(|_| {
        if s.contains('%') {
            bad("IPv6 zones (`%eth0`) cannot be used")
        } else {
            bad("it is not an IPv4 or IPv6 address")
        }
    })?;
    let ip = ip.to_canonical();
    // kubelet validateNodeIP, in its order.
    let refused = if ip.is_loopback() {
        Some("it is a loopback address")
    } else if ip.is_multicast() {
        Some("it is a multicast address")
    } else if match ip {
        IpAddr::V4(v4) => v4.is_link_local(),
        IpAddr::V6(v6) => v6.is_unicast_link_local(),
    } {
        Some("it is a link-local address")
    } else if ip.is_unspecified() {
        Some("it is the all-zeros address (leave node_ip unset to let kubelet choose)")
    } else {
        None
    };
    match refused {
        Some(why) => Err(format!(
            "node IP {}: {why}, which kubelet refuses as a node IP; give the address other nodes reach this one at",
            quote(s)
        )),
        None => Ok(ip),
    }
}

/// Validates kubelet's dual-stack `--node-ip` form: one address, or an IPv4
/// and an IPv6 address separated by a comma (either order); each as strict as
/// [`node_ip`].
///
/// Rule: `staging/src/k8s.io/component-helpers/node/util/ips.go`,
/// `parseNodeIP`: "must contain either a single IP or a dual-stack pair of
/// IPs" — at most two, of different families, neither `0.0.0.0` nor `::`.
/// kubelet accepts the pair only with no `--cloud-provider` or with
/// `external` (`ParseNodeIPArgument`); kiln sets no other.
pub fn node_ips(s: &str) -> Result<Vec<IpAddr>, String> {
    let parts: Vec<&str> = s.split(',').collect();
    if parts.len() > 2 {
        return Err(format!(
            "node IPs {}: at most two addresses, one IPv4 and one IPv6, e.g. 10.0.0.5,2001:db8::5",
            quote(s)
        ));
    }
    let ips = parts.iter().map(|p| node_ip(p)).collect::<Result<Vec<_>, _>>().map_err(|e| {
        if parts.len() > 1 {
            format!("node IPs {}: {e}", quote(s))
        } else {
            e
        }
    })?;
    if let [a, b] = ips.as_slice() {
        if a.is_ipv4() == b.is_ipv4() {
            return Err(format!(
                "node IPs {}: both are {}; a dual-stack pair is one IPv4 and one IPv6 address, e.g. 10.0.0.5,2001:db8::5",
                quote(s),
                if a.is_ipv4() { "IPv4" } else { "IPv6" }
            ));
        }
    }
    Ok(ips)
}

/// Validates the port the node's own API server listens on
/// (`localAPIEndpoint.bindPort`). This is separate from the endpoint's port:
/// a load balancer may listen on 443 in front of API servers bound to 6443.
///
/// Rule: `cmd/kubeadm/app/apis/kubeadm/validation/validation.go`,
/// `ValidatePort` → `ParsePort` (`cmd/kubeadm/app/util/endpoint.go`):
/// 1-65535 inclusive.
pub fn bind_port(p: i64) -> Result<u16, String> {
    match u16::try_from(p) {
        Ok(port) if port >= 1 => Ok(port),
        _ => Err(format!(
            "API server bind port {p} is outside 1-65535; use e.g. {DEFAULT_API_SERVER_PORT} (the endpoint's port may differ, e.g. a load balancer on 443)"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_parse_and_render() {
        let cases = [
            ("api.example.com", "api.example.com:6443"),
            ("api.example.com:443", "api.example.com:443"),
            ("API.Example.COM:8443", "api.example.com:8443"),
            ("localhost", "localhost:6443"),
            ("10.0.0.1", "10.0.0.1:6443"),
            ("10.0.0.1:443", "10.0.0.1:443"),
            ("2001:db8::1", "[2001:db8::1]:6443"),
            ("2001:DB8:0:0::1", "[2001:db8::1]:6443"),
            ("[2001:db8::1]:8443", "[2001:db8::1]:8443"),
            ("[::1]", "[::1]:6443"),
            ("[::1]:6443", "[::1]:6443"),
            ("api:65535", "api:65535"),
            ("api:1", "api:1"),
            // A bare IPv6 address never has a port: this is the address ::1:6443.
            ("2001:db8::1:6443", "[2001:db8::1:6443]:6443"),
        ];
        for (s, want) in cases {
            let e = parse(s).unwrap_or_else(|e| panic!("{s}: {e}"));
            assert_eq!(e.to_string(), want, "{s}");
        }
        let e = parse("[2001:db8::1]:6443").unwrap();
        assert_eq!((e.host.as_str(), e.port), ("2001:db8::1", 6443));
        assert_eq!(e.ip(), Some("2001:db8::1".parse().unwrap()));
        assert_eq!(parse("api.example.com").unwrap().ip(), None);
    }

    #[test]
    fn hostile_endpoints_are_refused() {
        let bad = [
            ("", "empty"),
            ("host:0", "outside 1-65535"),
            ("host:99999", "outside 1-65535"),
            ("host:", "empty"),
            ("host:+6443", "not a number"),
            ("host:x", "not a number"),
            (":6443", "host before"),
            ("https://api.example.com:6443", "scheme"),
            ("api.example.com:6443/healthz", "no path"),
            ("user@api.example.com", "no user"),
            ("api.example.com 6443", "whitespace"),
            ("api.example.com\n", "whitespace"),
            ("api\u{0}.example.com", "control"),
            ("api.example.com --insecure", "whitespace"),
            ("bad_host:6443", "not a host name"),
            ("-api.example.com", "not a host name"),
            ("api-.example.com", "not a host name"),
            ("api..example.com", "not a host name"),
            ("api.example.com.", "ends with a dot"),
            ("10.0.0.256", "looks like an IPv4"),
            ("010.0.0.1", "looks like an IPv4"),
            ("[2001:db8::1", "never closed"),
            ("[2001:db8::1]6443", "after `]`"),
            ("[nothex]:1", "not an IPv6"),
            ("[10.0.0.1]:6443", "IPv6 addresses only"),
            ("[fe80::1%eth0]:6443", "zones"),
            ("2001:db8::1:99999", "brackets"),
            ("ápi.example.com", "not a host name"),
        ];
        for (s, want) in bad {
            match parse(s) {
                Ok(e) => panic!("{s:?} was accepted as {e}"),
                Err(e) => {
                    assert!(e.contains(want), "{s:?}: {e}");
                    assert!(!e.contains('\n'), "{s:?}: {e}");
                    assert!(e.contains("e.g. api.example.com:6443"), "{e}");
                }
            }
        }
        let long_label = format!("{}.example.com", "a".repeat(64));
        assert!(parse(&long_label).unwrap_err().contains("longer than 63"));
        let long_name = format!("{}.com", "a.".repeat(130));
        assert!(parse(&long_name).unwrap_err().contains("more than 253"));
    }

    #[test]
    fn node_ips_are_single_addresses() {
        assert_eq!(node_ip("10.0.0.5"), Ok("10.0.0.5".parse().unwrap()));
        assert_eq!(node_ip("2001:db8::5"), Ok("2001:db8::5".parse().unwrap()));
        assert_eq!(node_ip("::ffff:10.0.0.5"), Ok("10.0.0.5".parse().unwrap()));
        let bad = [
            ("10.0.0.5 --anonymous-auth=true", "whitespace"),
            ("10.0.0.5\n", "whitespace"),
            ("", "empty"),
            ("10.0.0.5,10.0.0.6", "list"),
            ("10.0.0.0/24", "prefix length"),
            ("[2001:db8::5]", "brackets"),
            ("fe80::1%eth0", "zones"),
            ("10.0.0.256", "not an IPv4 or IPv6"),
            ("010.0.0.5", "not an IPv4 or IPv6"),
            ("node-1", "not an IPv4 or IPv6"),
            ("--node-ip=10.0.0.5", "not an IPv4 or IPv6"),
            ("127.0.0.1", "loopback"),
            ("::1", "loopback"),
            ("224.0.0.1", "multicast"),
            ("ff02::1", "multicast"),
            ("169.254.169.254", "link-local"),
            ("fe80::1", "link-local"),
            ("0.0.0.0", "all-zeros"),
            ("::", "all-zeros"),
        ];
        for (s, want) in bad {
            let e = node_ip(s).expect_err(s);
            assert!(e.contains(want), "{s:?}: {e}");
            assert!(!e.contains('\n'), "{e}");
        }
    }

    #[test]
    fn dual_stack_node_ips() {
        let ips = node_ips("10.0.0.5,2001:db8::5").unwrap();
        assert_eq!(ips, vec!["10.0.0.5".parse::<IpAddr>().unwrap(), "2001:db8::5".parse().unwrap()]);
        assert_eq!(node_ips("2001:db8::5,10.0.0.5").unwrap().len(), 2);
        assert_eq!(node_ips("10.0.0.5").unwrap().len(), 1);
        assert!(node_ips("10.0.0.5,10.0.0.6").unwrap_err().contains("both are IPv4"));
        assert!(node_ips("2001:db8::5,2001:db8::6").unwrap_err().contains("both are IPv6"));
        assert!(node_ips("10.0.0.5,2001:db8::5,10.0.0.6").unwrap_err().contains("at most two"));
        assert!(node_ips("10.0.0.5,").unwrap_err().contains("empty"));
        assert!(node_ips("10.0.0.5, 2001:db8::5").unwrap_err().contains("whitespace"));
        assert!(node_ips("10.0.0.5,::").unwrap_err().contains("all-zeros"));
        assert!(node_ips("").is_err());
    }

    #[test]
    fn bind_ports() {
        assert_eq!(bind_port(6443), Ok(6443));
        assert_eq!(bind_port(1), Ok(1));
        assert_eq!(bind_port(65535), Ok(65535));
        for p in [0, -1, 65536, 99999, i64::MAX, i64::MIN] {
            let e = bind_port(p).expect_err(&p.to_string());
            assert!(e.contains(&p.to_string()) && e.contains("1-65535"), "{e}");
        }
    }
}
