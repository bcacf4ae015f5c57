//! Which TCP ports a host firewall's saved configuration accepts, read from the files
//! the firewall loads at boot, without root-only tools (issue 25, row 33): firewalld's
//! zone and service XML, an nftables ruleset file, an `iptables-save` rules file.
//!
//! Only what the files say is known: rules added at run time and not saved are not seen,
//! so preflight reports what is missing as a warning, as kubeadm's `FirewalldCheck` does.

/// Inclusive TCP port ranges.
pub type Ports = Vec<(u16, u16)>;

/// Whether `port` is in one of `ports`.
pub fn covers(ports: &[(u16, u16)], port: u16) -> bool {
    ports.iter().any(|(a, b)| (*a..=*b).contains(&port))
}

/// `N`, or a range `A-B` (firewalld, nftables) or `A:B` (iptables).
fn range(s: &str) -> Option<(u16, u16)> {
    let s = s.trim().trim_matches(|c| c == ',' || c == ';');
    match s.split_once(['-', ':']) {
        Some((a, b)) => Some((a.trim().parse().ok()?, b.trim().parse().ok()?)),
        None => s.parse().ok().map(|p| (p, p)),
    }
}

/// The value of XML attribute `name` in one element's text.
fn attr<'a>(element: &'a str, name: &str) -> Option<&'a str> {
    let at = element.find(&format!(" {name}="))? + name.len() + 2;
    let rest = &element[at..];
    let quote = rest.chars().next().filter(|c| *c == '"' || *c == '\'')?;
    rest[1..].split(quote).next()
}

/// The elements `<tag …>` of an XML text, each as its text up to `>`.
fn elements<'a>(xml: &'a str, tag: &str) -> Vec<&'a str> {
    let open = format!("<{tag} ");
    xml.match_indices(&open).filter_map(|(i, _)| xml[i..].split('>').next()).collect()
}

/// A firewalld zone file (firewalld.zone(5)): whether its `target` accepts everything,
/// its TCP `<port>`s, and the `<service>` names whose ports it also opens.
pub fn firewalld_zone(xml: &str) -> (bool, Ports, Vec<String>) {
    let accept_all = elements(xml, "zone").iter().any(|z| attr(z, "target") == Some("ACCEPT"));
    let (ports, _) = firewalld_ports(xml);
    let services = elements(xml, "service").iter().filter_map(|s| attr(s, "name")).map(str::to_string).collect();
    (accept_all, ports, services)
}

/// The TCP `<port port="…" protocol="tcp"/>` entries of a firewalld zone or service file
/// (firewalld.service(5)), and whether there were any elements at all.
pub fn firewalld_ports(xml: &str) -> (Ports, bool) {
    let all = elements(xml, "port");
    let ports =
        all.iter().filter(|p| attr(p, "protocol") == Some("tcp")).filter_map(|p| range(attr(p, "port")?)).collect();
    (ports, !all.is_empty())
}

/// The `DefaultZone=` of `firewalld.conf`, firewalld's `public` when unset.
pub fn firewalld_default_zone(conf: &str) -> String {
    conf.lines()
        .find_map(|l| l.trim().strip_prefix("DefaultZone="))
        .map(|z| z.trim().to_string())
        .filter(|z| !z.is_empty())
        .unwrap_or_else(|| "public".into())
}

/// An nftables ruleset file (nft(8)): whether a base chain on the `input` hook has
/// `policy drop`, and the TCP ports its `accept` rules name (`tcp dport N`, `th dport`,
/// ranges `A-B`, anonymous sets `{ A, B-C }`).
pub fn nft_input(conf: &str) -> (bool, Ports) {
    let text: String = conf.lines().map(|l| l.split('#').next().unwrap_or("")).collect::<Vec<_>>().join("\n");
    // The policy is declared in the chain, after its hook: up to the chain's end.
    let drops =
        text.split("hook input").skip(1).any(|rest| rest.split('}').next().unwrap_or("").contains("policy drop"));
    let mut ports = Vec::new();
    for line in text.lines().filter(|l| l.contains("accept")) {
        for key in ["tcp dport", "th dport"] {
            let Some(rest) = line.split_once(key).map(|(_, r)| r.trim_start()) else { continue };
            let spec = match rest.strip_prefix('{') {
                Some(set) => set.split('}').next().unwrap_or(""),
                None => rest.split_whitespace().next().unwrap_or(""),
            };
            ports.extend(spec.split(',').filter_map(range));
        }
    }
    (drops, ports)
}

/// An `iptables-save` rules file (`/etc/iptables/rules.v4`, `/etc/sysconfig/iptables`):
/// whether the filter table's INPUT policy is DROP (`:INPUT DROP`), and the TCP ports of
/// its `-A INPUT … -j ACCEPT` rules (`--dport N`, `--dport A:B`, multiport `--dports`).
pub fn iptables_input(rules: &str) -> (bool, Ports) {
    let mut table = "";
    let mut drops = false;
    let mut ports = Vec::new();
    for line in rules.lines().map(str::trim) {
        if let Some(t) = line.strip_prefix('*') {
            table = t;
            continue;
        }
        if table != "filter" {
            continue;
        }
        if line.starts_with(":INPUT DROP") || line.starts_with(":INPUT REJECT") {
            drops = true;
        }
        if !(line.starts_with("-A INPUT ") && line.contains("-j ACCEPT") && line.contains("-p tcp")) {
            continue;
        }
        let words: Vec<&str> = line.split_whitespace().collect();
        for w in words.windows(2) {
            if w[0] == "--dport" || w[0] == "--dports" || w[0] == "--destination-port" {
                ports.extend(w[1].split(',').filter_map(range));
            }
        }
    }
    (drops, ports)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn saved_configurations_parse() {
        let (all, ports, services) = firewalld_zone(
            "<?xml version=\"1.0\"?>\n<zone>\n  <short>Public</short>\n  <service name=\"ssh\"/>\n  <service name='kubelet'/>\n  <port port=\"6443\" protocol=\"tcp\"/>\n  <port protocol=\"tcp\" port=\"2379-2380\"/>\n  <port port=\"8472\" protocol=\"udp\"/>\n</zone>\n",
        );
        assert!(!all);
        assert_eq!(ports, [(6443, 6443), (2379, 2380)]);
        assert_eq!(services, ["ssh", "kubelet"]);
        assert!(firewalld_zone("<zone target=\"ACCEPT\">\n</zone>").0);
        assert_eq!(firewalld_default_zone("# c\nDefaultZone=internal\n"), "internal");
        assert_eq!(firewalld_default_zone(""), "public");
        let (drops, ports) = nft_input(
            "table inet filter {\n  chain input {\n    type filter hook input priority filter; policy drop;\n    tcp dport { 22, 6443, 10250-10260 } accept\n    th dport 2379 accept # etcd\n    # tcp dport 2380 accept\n  }\n}\n",
        );
        assert!(drops);
        assert_eq!(ports, [(22, 22), (6443, 6443), (10250, 10260), (2379, 2379)]);
        assert!(
            !nft_input(
                "table inet filter {\n chain input {\n  type filter hook input priority 0; policy accept;\n }\n}\n"
            )
            .0
        );
        let (drops, ports) = iptables_input(
            "*nat\n:INPUT ACCEPT [0:0]\n-A INPUT -p tcp --dport 1 -j ACCEPT\nCOMMIT\n*filter\n:INPUT DROP [0:0]\n-A INPUT -p tcp -m tcp --dport 6443 -j ACCEPT\n-A INPUT -p tcp -m multiport --dports 2379:2380,10250 -j ACCEPT\n-A INPUT -p tcp --dport 10259 -j DROP\nCOMMIT\n",
        );
        assert!(drops);
        assert_eq!(ports, [(6443, 6443), (2379, 2380), (10250, 10250)]);
        assert!(covers(&ports, 2380) && !covers(&ports, 10259));
    }
}
