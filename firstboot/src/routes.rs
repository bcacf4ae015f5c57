//! The host's routing table and addresses as the kernel prints them under `/proc/net`,
//! for preflight's multi-NIC check (issue 25, row 45): a default route exists, and the
//! service CIDR leaves by the node IP's interface.
//!
//! Formats (Linux):
//! * `/proc/net/route` (`net/ipv4/fib_trie.c`, `fib_route_seq_show`): a header line, then
//!   `Iface Destination Gateway Flags RefCnt Use Metric Mask MTU Window IRTT`, the
//!   addresses and mask as `%08X` of the big-endian word, so little-endian hex on the
//!   machines kiln supports (amd64, arm64), the flags hex (`RTF_UP` 0x1, `RTF_GATEWAY`
//!   0x2, `RTF_REJECT` 0x200, `include/uapi/linux/route.h`);
//! * `/proc/net/ipv6_route` (`net/ipv6/route.c`, `ipv6_route_native_seq_show`): no header,
//!   `dest plen src splen nexthop metric refcnt use flags dev`, addresses as 32 hex digits
//!   in network order, the prefix lengths, metric and flags hex;
//! * `/proc/net/if_inet6` (`net/ipv6/addrconf.c`, `if6_seq_show`): `address ifindex plen
//!   scope flags dev`, the address as 32 hex digits.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// `RTF_UP`: the route is usable.
const RTF_UP: u32 = 0x0001;
/// `RTF_REJECT`: an unreachable/prohibit route (IPv6's default on `lo` when there is none).
const RTF_REJECT: u32 = 0x0200;

/// One route of the main table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// The device it leaves by.
    pub iface: String,
    /// Destination network.
    pub dest: IpAddr,
    /// Destination prefix length.
    pub prefix: u8,
    /// The next hop, `None` for a directly connected network.
    pub gateway: Option<IpAddr>,
    /// Lower wins between routes of one prefix length.
    pub metric: u32,
}

impl Route {
    /// Whether `ip` is in this route's destination.
    pub fn contains(&self, ip: IpAddr) -> bool {
        in_net(ip, self.dest, self.prefix)
    }

    /// A default route as kubelet and kubeadm pick the host's address from
    /// (`k8s.io/apimachinery/pkg/util/net/interface.go`, `getIPv4DefaultRoutes`: destination
    /// 0.0.0.0; `getIPv6DefaultRoutes`: destination `::` with a non-zero gateway).
    pub fn is_default(&self) -> bool {
        self.prefix == 0 && (self.dest.is_ipv4() || self.gateway.is_some())
    }
}

/// Whether `ip` is in `net`/`prefix` (different families never are).
pub fn in_net(ip: IpAddr, net: IpAddr, prefix: u8) -> bool {
    match (ip, net) {
        (IpAddr::V4(a), IpAddr::V4(n)) => {
            let p = u32::from(prefix.min(32));
            let mask = if p == 0 { 0 } else { u32::MAX << (32 - p) };
            u32::from(a) & mask == u32::from(n) & mask
        }
        (IpAddr::V6(a), IpAddr::V6(n)) => {
            let p = u32::from(prefix.min(128));
            let mask = if p == 0 { 0 } else { u128::MAX << (128 - p) };
            u128::from(a) & mask == u128::from(n) & mask
        }
        _ => false,
    }
}

/// `ADDRESS/PREFIX` of either family; `None` when it is not one.
pub fn parse_cidr(s: &str) -> Option<(IpAddr, u8)> {
    let (a, p) = s.trim().split_once('/')?;
    let ip: IpAddr = a.parse().ok()?;
    let max = if ip.is_ipv4() { 32 } else { 128 };
    Some((ip, p.parse().ok().filter(|p: &u8| *p <= max)?))
}

fn v6_hex(s: &str) -> Option<Ipv6Addr> {
    (s.len() == 32).then_some(())?;
    Some(Ipv6Addr::from(u128::from_str_radix(s, 16).ok()?))
}

fn usable(flags: u32) -> bool {
    flags & RTF_UP != 0 && flags & RTF_REJECT == 0
}

/// The usable IPv4 routes of `/proc/net/route`; lines that do not parse are skipped.
pub fn parse_v4(text: &str) -> Vec<Route> {
    text.lines()
        .filter(|l| !l.starts_with("Iface"))
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let word = |i: usize| f.get(i).and_then(|s| u32::from_str_radix(s, 16).ok());
            let ip = |i: usize| word(i).map(|w| Ipv4Addr::from(u32::from_be(w)));
            let (dest, gw, flags, metric, mask) = (ip(1)?, ip(2)?, word(3)?, f.get(6)?.parse().ok()?, ip(7)?);
            usable(flags).then(|| Route {
                iface: f[0].to_string(),
                dest: IpAddr::V4(dest),
                prefix: u32::from(mask).count_ones() as u8,
                gateway: (!gw.is_unspecified()).then_some(IpAddr::V4(gw)),
                metric,
            })
        })
        .collect()
}

/// The usable IPv6 routes of `/proc/net/ipv6_route`; lines that do not parse are skipped.
pub fn parse_v6(text: &str) -> Vec<Route> {
    text.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let hex = |i: usize| f.get(i).and_then(|s| u32::from_str_radix(s, 16).ok());
            let (dest, prefix, gw) = (v6_hex(f.first()?)?, hex(1)?, v6_hex(f.get(4)?)?);
            let (metric, flags, iface) = (hex(5)?, hex(8)?, f.get(9)?);
            (usable(flags) && prefix <= 128).then(|| Route {
                iface: iface.to_string(),
                dest: IpAddr::V6(dest),
                prefix: prefix as u8,
                gateway: (!gw.is_unspecified()).then_some(IpAddr::V6(gw)),
                metric,
            })
        })
        .collect()
}

/// The IPv6 addresses of `/proc/net/if_inet6` and their devices.
pub fn parse_if_inet6(text: &str) -> Vec<(Ipv6Addr, String)> {
    text.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            Some((v6_hex(f.first()?)?, f.get(5)?.to_string()))
        })
        .collect()
}

/// The route the kernel would pick for `ip`: the longest matching prefix, then the
/// lowest metric (the main table only, as `/proc/net` prints it).
pub fn lookup(routes: &[Route], ip: IpAddr) -> Option<&Route> {
    routes.iter().filter(|r| r.contains(ip)).min_by_key(|r| (std::cmp::Reverse(r.prefix), r.metric))
}

/// The device that holds `ip`: for IPv6 the one `/proc/net/if_inet6` lists it on; for
/// IPv4 (procfs lists no IPv4 addresses by device) the device of the most specific
/// directly connected route that contains it, the subnet the address was configured in.
pub fn iface_of(ip: IpAddr, v4: &[Route], inet6: &[(Ipv6Addr, String)]) -> Option<String> {
    match ip {
        IpAddr::V6(a) => inet6.iter().find(|(b, _)| *b == a).map(|(_, d)| d.clone()),
        IpAddr::V4(_) => {
            let connected: Vec<Route> = v4.iter().filter(|r| r.gateway.is_none() && r.prefix > 0).cloned().collect();
            lookup(&connected, ip).map(|r| r.iface.clone())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_formats_parse() {
        let v4 = parse_v4(
            "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n\
eth0\t00000000\t0100000A\t0003\t0\t0\t100\t00000000\t0\t0\t0\n\
eth0\t0000000A\t00000000\t0001\t0\t0\t0\t0000FFFF\t0\t0\t0\n\
eth1\t0000A8C0\t00000000\t0201\t0\t0\t0\t00FFFFFF\t0\t0\t0\n\
garbage\n",
        );
        assert_eq!(v4.len(), 2, "{v4:?}");
        assert!(v4[0].is_default());
        assert_eq!(v4[0].gateway, Some("10.0.0.1".parse().unwrap()));
        assert_eq!((v4[1].dest, v4[1].prefix), ("10.0.0.0".parse().unwrap(), 16));
        assert_eq!(lookup(&v4, "10.96.0.1".parse().unwrap()).map(|r| r.prefix), Some(0));
        assert_eq!(iface_of("10.0.0.5".parse().unwrap(), &v4, &[]).as_deref(), Some("eth0"));
        // IPv6: the kernel's unreachable default on lo (no gateway, RTF_REJECT) is no route.
        let v6 = parse_v6(
            "00000000000000000000000000000000 00 00000000000000000000000000000000 00 fe800000000000000000000000000001 00000400 00000001 00000000 00000003 eth0\n\
fd000000000000000000000000000000 40 00000000000000000000000000000000 00 00000000000000000000000000000000 00000100 00000001 00000000 00000001 eth1\n\
00000000000000000000000000000000 00 00000000000000000000000000000000 00 00000000000000000000000000000000 ffffffff 00000001 00000000 00200200 lo\n",
        );
        assert_eq!(v6.len(), 2, "{v6:?}");
        assert!(v6[0].is_default() && !v6[1].is_default());
        let inet6 = parse_if_inet6("fd000000000000000000000000000005 03 40 00 80     eth1\n");
        assert_eq!(iface_of("fd00::5".parse().unwrap(), &[], &inet6).as_deref(), Some("eth1"));
        assert_eq!(lookup(&v6, "fd00::1".parse().unwrap()).map(|r| r.iface.as_str()), Some("eth1"));
    }
}
