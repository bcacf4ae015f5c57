//! The pod CIDR a CNI manifest configures, for the network plugins kiln's
//! users apply, held against `pod_subnet` (the CIDR kubeadm gives
//! kube-controller-manager, which hands each node its slice): by `kiln check`
//! and `kiln cluster`/`userdata` at build time, and by kiln-firstboot on the
//! init node before kubeadm runs (the manifest it would apply after init).
//! Here, not in the builder, so both use one parser (plain text: no YAML crate).
//!
//! Read line by line from the YAML (no YAML parser: the keys are distinctive
//! and each has one spelling upstream):
//! * flannel (`Documentation/kube-flannel.yml`, ConfigMap `kube-flannel-cfg`,
//!   `net-conf.json`): `"Network": "10.244.0.0/16"` (and `"IPv6Network"`) —
//!   flannel's whole network, which must be `pod_subnet` (kubeadm's guide:
//!   flannel needs `--pod-network-cidr=10.244.0.0/16` unless its Network is changed);
//! * Calico (`manifests/calico.yaml`, the calico-node container's env):
//!   `- name: CALICO_IPV4POOL_CIDR` then `value: "…"` (`CALICO_IPV6POOL_CIDR`
//!   alike); upstream ships it commented out (`# - name:`), which sets none,
//!   with the rule beside it: "This should fall within `--cluster-cidr`" —
//!   inside `pod_subnet`;
//! * Cilium (`install/kubernetes/cilium/templates/cilium-configmap.yaml`,
//!   ConfigMap `cilium-config`): `cluster-pool-ipv4-cidr: "10.0.0.0/8"` (and
//!   `cluster-pool-ipv6-cidr`), used by its default cluster-pool IPAM instead
//!   of the node's podCIDR, so pods get addresses kube-proxy does not treat
//!   as the cluster's unless they lie inside `pod_subnet`;
//! * a bridge or ptp conflist with host-local IPAM (containernetworking/plugins
//!   `plugins/ipam/host-local/README.md`): `"subnet": "10.244.1.0/24"`, one
//!   node's range, which must lie inside `pod_subnet`.
//!
//! Comment lines (`#`) are skipped: a commented-out setting sets nothing.

use std::net::IpAddr;

use crate::routes;

/// A network: address and prefix length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Cidr {
    addr: IpAddr,
    prefix: u8,
}

impl Cidr {
    fn parse(s: &str) -> Option<Cidr> {
        routes::parse_cidr(s).map(|(addr, prefix)| Cidr { addr, prefix })
    }
    /// `addr/prefix` with the host bits as written.
    fn show(&self) -> String {
        format!("{}/{}", self.addr, self.prefix)
    }
}

/// Which plugin's setting a CIDR came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// flannel's `net-conf.json` `Network` / `IPv6Network`.
    Flannel,
    /// Calico's `CALICO_IPV4POOL_CIDR` / `CALICO_IPV6POOL_CIDR`.
    Calico,
    /// Cilium's `cluster-pool-ipv4-cidr` / `cluster-pool-ipv6-cidr`.
    Cilium,
    /// host-local IPAM's `subnet` (one node's range).
    HostLocal,
}

impl Kind {
    /// The setting as written in the manifest.
    pub fn setting(self) -> &'static str {
        match self {
            Kind::Flannel => "flannel's net-conf.json \"Network\"",
            Kind::Calico => "Calico's CALICO_IPV4POOL_CIDR",
            Kind::Cilium => "Cilium's cluster-pool-ipv4-cidr",
            Kind::HostLocal => "host-local IPAM's \"subnet\"",
        }
    }
    /// Whether the CIDR must equal `pod_subnet` (flannel's whole network)
    /// rather than lie inside it (an IP pool, one node's range).
    pub fn whole_network(self) -> bool {
        matches!(self, Kind::Flannel)
    }
}

/// One pod CIDR found in a manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    /// Where it came from.
    pub kind: Kind,
    /// The CIDR as written.
    pub cidr: String,
    /// 1-based line in the manifest.
    pub line: usize,
}

/// Every pod CIDR `text` configures, in order. A value that is not a CIDR is
/// returned as written (the comparison then reports it).
pub fn pod_cidrs(text: &str) -> Vec<Found> {
    let mut out = Vec::new();
    let lines: Vec<&str> = text.lines().collect();
    for (i, raw) in lines.iter().enumerate() {
        let l = raw.trim();
        if l.starts_with('#') {
            continue;
        }
        let mut push = |kind, v: &str| out.push(Found { kind, cidr: v.to_string(), line: i + 1 });
        for key in ["\"Network\"", "\"IPv6Network\""] {
            if let Some(v) = json_string_after(l, key) {
                push(Kind::Flannel, v);
            }
        }
        if let Some(v) = json_string_after(l, "\"subnet\"") {
            push(Kind::HostLocal, v);
        }
        for key in ["cluster-pool-ipv4-cidr:", "cluster-pool-ipv6-cidr:"] {
            if let Some(rest) = l.strip_prefix(key) {
                // A list (`cluster-pool-ipv4-cidr: ["10.0.0.0/8"]`) or one value.
                for v in rest.trim().trim_matches(['[', ']']).split([',', ' ']) {
                    let v = unquote(v);
                    if !v.is_empty() {
                        push(Kind::Cilium, v);
                    }
                }
            }
        }
        let env = l.strip_prefix("- ").unwrap_or(l);
        if matches!(
            env.strip_prefix("name:").map(|n| unquote(n.trim())),
            Some("CALICO_IPV4POOL_CIDR" | "CALICO_IPV6POOL_CIDR")
        ) {
            let next = lines.get(i + 1).map(|n| n.trim()).unwrap_or("");
            if let Some(v) = next.strip_prefix("value:") {
                let v = unquote(v.trim());
                out.push(Found { kind: Kind::Calico, cidr: v.to_string(), line: i + 2 });
            }
        }
    }
    out
}

/// `"key": "value"` on one line (JSON inside a YAML block scalar) → `value`.
fn json_string_after<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    let at = line.find(key)?;
    let rest = line[at + key.len()..].trim_start().strip_prefix(':')?.trim_start().strip_prefix('"')?;
    rest.split('"').next()
}

fn unquote(s: &str) -> &str {
    s.trim().trim_matches(['"', '\'']).trim()
}

/// Whether `outer` contains every address of `inner` (same family).
fn contains(outer: &Cidr, inner: &Cidr) -> bool {
    outer.prefix <= inner.prefix && routes::in_net(inner.addr, outer.addr, outer.prefix)
}

/// [`check`]'s messages joined, each at `path:line` (the manifest as the node sees it).
pub fn at(path: &str, errors: &[String]) -> String {
    errors.iter().map(|e| format!("{path}:{}", e.strip_prefix("line ").unwrap_or(e))).collect::<Vec<_>>().join("; ")
}

/// The pod CIDRs of `manifest` held against `pod_subnet` (one CIDR or a
/// dual-stack pair, as in cluster.toml): one message per mismatch, naming
/// both values and the fix. `Ok(found)` when all agree; `found` is empty when
/// the manifest sets none.
pub fn check(manifest: &str, pod_subnet: &str) -> Result<Vec<Found>, Vec<String>> {
    let subnets: Vec<Cidr> = pod_subnet.split(',').filter_map(|s| Cidr::parse(s.trim())).collect();
    let found = pod_cidrs(manifest);
    let mut errors = Vec::new();
    for f in &found {
        let Some(c) = Cidr::parse(&f.cidr) else {
            errors.push(format!(
                "line {}: {} is `{}`, not a CIDR; set it to pod_subnet {pod_subnet}",
                f.line,
                f.kind.setting(),
                f.cidr
            ));
            continue;
        };
        let family: Vec<&Cidr> = subnets.iter().filter(|s| s.addr.is_ipv4() == c.addr.is_ipv4()).collect();
        let ok = family.iter().any(|s| if f.kind.whole_network() { s.show() == c.show() } else { contains(s, &c) });
        if !ok {
            let how = if f.kind.whole_network() { "must equal" } else { "must lie inside" };
            errors.push(format!(
                "line {}: {} is {} but pod_subnet is {pod_subnet}: the plugin's pod addresses {how} the pod_subnet kubeadm gives the cluster; set one to the other (the manifest's value, or pod_subnet)",
                f.line,
                f.kind.setting(),
                f.cidr
            ));
        }
    }
    if errors.is_empty() {
        Ok(found)
    } else {
        Err(errors)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FLANNEL: &str = "kind: ConfigMap\nmetadata:\n  name: kube-flannel-cfg\ndata:\n  net-conf.json: |\n    {\n      \"Network\": \"10.244.0.0/16\",\n      \"EnableNFTables\": false,\n      \"Backend\": {\n        \"Type\": \"vxlan\"\n      }\n    }\n";
    const CALICO: &str = "        env:\n            # The default IPv4 pool to create on startup if none exists.\n            - name: CALICO_IPV4POOL_CIDR\n              value: \"192.168.0.0/16\"\n            - name: CALICO_IPV4POOL_IPIP\n              value: \"Always\"\n";
    const CILIUM: &str = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: cilium-config\ndata:\n  ipam: \"cluster-pool\"\n  cluster-pool-ipv4-cidr: \"10.0.0.0/8\"\n  cluster-pool-ipv4-mask-size: \"24\"\n";
    const CONFLIST: &str = "{\n  \"cniVersion\": \"1.0.0\",\n  \"name\": \"kiln\",\n  \"plugins\": [\n    { \"type\": \"bridge\", \"bridge\": \"cni0\", \"isGateway\": true, \"ipMasq\": true,\n      \"ipam\": { \"type\": \"host-local\", \"ranges\": [[{ \"subnet\": \"10.244.1.0/24\" }]] } },\n    { \"type\": \"portmap\", \"capabilities\": { \"portMappings\": true } }\n  ]\n}\n";

    #[test]
    fn flannel_network_must_equal_pod_subnet() {
        assert_eq!(
            check(FLANNEL, "10.244.0.0/16").unwrap()[0],
            Found { kind: Kind::Flannel, cidr: "10.244.0.0/16".into(), line: 7 }
        );
        let e = check(FLANNEL, "10.42.0.0/16").unwrap_err();
        assert!(
            e[0].contains(
                "line 7: flannel's net-conf.json \"Network\" is 10.244.0.0/16 but pod_subnet is 10.42.0.0/16"
            ),
            "{e:?}"
        );
        // A narrower pod_subnet is a mismatch too: flannel routes its whole Network.
        assert!(check(FLANNEL, "10.244.0.0/17").is_err());
    }

    #[test]
    fn calico_pool_is_read_unless_commented_out() {
        assert!(check(CALICO, "192.168.0.0/16").is_ok());
        // "This should fall within --cluster-cidr": a smaller pool inside pod_subnet is fine.
        assert!(check(CALICO, "192.168.0.0/15").is_ok());
        let e = check(CALICO, "10.244.0.0/16").unwrap_err();
        assert!(
            e[0].contains("line 4: Calico's CALICO_IPV4POOL_CIDR is 192.168.0.0/16 but pod_subnet is 10.244.0.0/16"),
            "{e:?}"
        );
        // Upstream's calico.yaml ships the setting commented out: none set.
        let commented = CALICO
            .replace("- name: CALICO_IPV4POOL_CIDR", "# - name: CALICO_IPV4POOL_CIDR")
            .replace("  value: \"192", "  # value: \"192");
        assert_eq!(check(&commented, "10.244.0.0/16").unwrap(), vec![]);
    }

    #[test]
    fn cilium_cluster_pool_must_lie_inside_pod_subnet() {
        assert!(check(CILIUM, "10.0.0.0/8").is_ok());
        assert!(check(&CILIUM.replace("10.0.0.0/8", "10.244.0.0/17"), "10.244.0.0/16").is_ok());
        let e = check(CILIUM, "10.244.0.0/16").unwrap_err();
        assert!(e[0].contains("line 7: Cilium's cluster-pool-ipv4-cidr is 10.0.0.0/8"), "{e:?}");
        let list = CILIUM.replace("\"10.0.0.0/8\"", "[\"10.0.0.0/8\"]");
        assert_eq!(pod_cidrs(&list)[0].cidr, "10.0.0.0/8");
    }

    #[test]
    fn host_local_subnet_must_lie_inside_pod_subnet() {
        assert!(check(CONFLIST, "10.244.0.0/16").is_ok());
        let e = check(CONFLIST, "10.42.0.0/16").unwrap_err();
        assert!(e[0].contains("host-local IPAM's \"subnet\" is 10.244.1.0/24 but pod_subnet is 10.42.0.0/16"), "{e:?}");
    }

    #[test]
    fn dual_stack_and_garbage() {
        let v6 =
            FLANNEL.replace("\"EnableNFTables\"", "\"IPv6Network\": \"fd00:10:244::/56\",\n      \"EnableNFTables\"");
        assert_eq!(check(&v6, "10.244.0.0/16,fd00:10:244::/56").unwrap().len(), 2);
        assert!(check(&v6, "10.244.0.0/16").is_err(), "an IPv6 network without an IPv6 pod_subnet");
        let bad = FLANNEL.replace("10.244.0.0/16", "ten-two-four-four");
        assert!(check(&bad, "10.244.0.0/16").unwrap_err()[0].contains("not a CIDR"));
        assert_eq!(check("kind: Deployment\n", "10.244.0.0/16").unwrap(), vec![]);
    }
}
