//! Reading and checking a `fleet.toml`: [`Fleet::load`] and [`Fleet::parse`].
//!
//! The TOML is read into `FleetDoc` (strict: an unknown key is an error with
//! a suggestion), then a `FleetChecker` walks it with one method per part:
//! the top-level `cluster`, `image` and `bmap`; `[defaults]`; each `[[node]]`
//! table (its role, name range, CA keys, address, gateway, settings and MAC,
//! then each node's name, address and MAC claimed against the others); and
//! the fleet as a whole (its size, exactly one init node, the cluster's
//! endpoint). Every error is collected as one `file:line:col: message` line
//! ([`location::at`]); a `[[node]]` table stops at its first refusal and the
//! next table is still checked.

use crate::cluster::Cluster;
use crate::error::{Error, Result};
use crate::fleet::{
    check_ssh_key, check_wifi, is_node_name, is_user_name, parse_cidr, parse_mac, parse_pattern, Address, Fleet,
    FleetNode, Wifi, MAX_NODES,
};
use crate::inputs::location;
use kiln_firstboot::contract::node::Role;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::ops::Range;
use std::path::{Path, PathBuf};
use toml::Spanned;

/// The end of every error: what to do next.
const NEXT: &str = "fix it and run `kiln fleet check` again";

/// Names a node may not have: they mean the machine itself to every resolver
/// (RFC 6761 §6.3 `localhost`), so kubelet would register a node that every
/// other node reaches as itself.
const RESERVED_NAMES: [&str; 2] = ["localhost", "localhost-localdomain"];

/// Settings a `[defaults]` table gives every node.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct DefaultsDoc {
    admin_user: Option<Spanned<String>>,
    ssh_authorized_keys: Option<Spanned<Vec<Spanned<String>>>>,
    gateway: Option<Spanned<String>>,
    dns: Option<Spanned<Vec<Spanned<String>>>>,
    interface: Option<Spanned<String>>,
    wifi: Option<Spanned<Wifi>>,
}

/// One `[[node]]` table.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct NodeDoc {
    name: Spanned<String>,
    role: Spanned<String>,
    count: Option<Spanned<i64>>,
    address: Option<Spanned<String>>,
    gateway: Option<Spanned<String>>,
    dns: Option<Spanned<Vec<Spanned<String>>>>,
    interface: Option<Spanned<String>>,
    wifi: Option<Spanned<Wifi>>,
    admin_user: Option<Spanned<String>>,
    ssh_authorized_keys: Option<Spanned<Vec<Spanned<String>>>>,
    ca_keys: Option<Spanned<bool>>,
    mac: Option<Spanned<String>>,
}

/// The whole file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct FleetDoc {
    cluster: Spanned<String>,
    image: Spanned<String>,
    bmap: Option<Spanned<String>>,
    #[serde(default)]
    defaults: DefaultsDoc,
    #[serde(default)]
    node: Vec<Spanned<NodeDoc>>,
}
impl Fleet {
    /// Reads and checks a `fleet.toml`. All errors are collected; each is one
    /// `file:line:col: message` line, joined with newlines, exit code 2.
    pub fn load(path: &Path) -> Result<Fleet> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            Error::config(format!("{}: {e}; write a fleet file (see `kiln fleet check --help`)", path.display()))
        })?;
        Fleet::parse(path, &text)
    }

    /// [`Fleet::load`] on text already read.
    pub fn parse(path: &Path, text: &str) -> Result<Fleet> {
        let doc: FleetDoc = toml::from_str(text).map_err(|e| {
            Error::config(location::at(
                path,
                text,
                Some(e.span().unwrap_or(0..0)),
                &format!("{}; {NEXT}", location::explain_toml_message(e.message())),
            ))
        })?;
        let mut f = FleetChecker::new(path, text);
        let (cluster_dir, cluster) = f.cluster(&doc.cluster);
        let (image, bmap) = f.image(&doc.image, doc.bmap.as_ref());
        let defaults = f.defaults(&doc.defaults);
        f.node_tables(&doc.node, &defaults);
        f.fleet_size();
        f.one_init(&doc.node);
        if let Some(cl) = &cluster {
            f.endpoint(&cl.file.control_plane_endpoint, doc.cluster.span());
        }
        if !f.c.errors.is_empty() {
            return Err(Error::config(f.c.errors.join("\n")));
        }
        Ok(Fleet { path: path.to_path_buf(), cluster_dir, image, bmap, nodes: f.nodes, warnings: f.warnings })
    }
}

/// Collects located errors while checking.
struct Checker<'a> {
    path: &'a Path,
    text: &'a str,
    errors: Vec<String>,
    seen: Vec<usize>,
}

impl Checker<'_> {
    /// Records an error; a second error at the same place (a `[defaults]`
    /// value wrong for several nodes) is not repeated.
    fn err(&mut self, span: Range<usize>, msg: impl AsRef<str>) {
        if self.seen.contains(&span.start) {
            return;
        }
        self.seen.push(span.start);
        let line = location::at(self.path, self.text, Some(span), msg.as_ref());
        self.errors.push(line);
    }

    /// A located warning line (the fleet still loads).
    fn warning(&self, span: Range<usize>, msg: &str) -> String {
        location::at(self.path, self.text, Some(span), msg)
    }

    /// `ssh_authorized_keys`: the entries that are public key lines, trimmed.
    fn keys(&mut self, keys: &Spanned<Vec<Spanned<String>>>) -> Vec<String> {
        let mut out = Vec::new();
        for k in keys.get_ref() {
            match check_ssh_key(k.get_ref()) {
                Ok(()) => out.push(k.get_ref().trim().to_string()),
                Err(m) => self.err(k.span(), format!("ssh_authorized_keys: {m}; {NEXT}")),
            }
        }
        out
    }

    /// Keys given where no admin user is named.
    fn keys_without_user(&mut self, span: Range<usize>) {
        self.err(span, format!("ssh_authorized_keys without admin_user: name the user the keys log in as; {NEXT}"));
    }

    /// `dns`: the entries that are IP addresses.
    fn ips(&mut self, list: &Spanned<Vec<Spanned<String>>>) -> Vec<IpAddr> {
        let mut out = Vec::new();
        for s in list.get_ref() {
            match s.get_ref().parse::<IpAddr>() {
                Ok(ip) => out.push(ip),
                Err(_) => self.err(s.span(), format!("dns: `{}` is not an IP address; {NEXT}", s.get_ref())),
            }
        }
        out
    }

    /// One IP address (`what` names the key, e.g. `gateway`).
    fn ip(&mut self, s: &Spanned<String>, what: &str) -> Option<IpAddr> {
        match s.get_ref().parse::<IpAddr>() {
            Ok(ip) => Some(ip),
            Err(_) => {
                let hint = if s.get_ref().contains('/') { " (no prefix length here)" } else { "" };
                self.err(s.span(), format!("{what}: `{}` is not an IP address{hint}; {NEXT}", s.get_ref()));
                None
            }
        }
    }

    /// `admin_user`: a user name cloud-init and kiln-firstboot accept.
    fn user(&mut self, s: &Spanned<String>) -> Option<String> {
        if is_user_name(s.get_ref()) {
            return Some(s.get_ref().clone());
        }
        self.err(
            s.span(),
            format!(
                "admin_user `{}` is not a user name (lowercase letters, digits, `_`, `-`, at most 32; not root); {NEXT}",
                s.get_ref()
            ),
        );
        None
    }

    /// `interface`: a Linux interface name (at most 15 bytes, `IFNAMSIZ` − 1).
    fn iface(&mut self, s: &Spanned<String>) -> Option<String> {
        let name = s.get_ref();
        let ok = !name.is_empty()
            && name.len() <= 15
            && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.');
        if ok {
            return Some(name.clone());
        }
        self.err(s.span(), format!("interface `{name}` is not a Linux interface name; {NEXT}"));
        None
    }

    /// `wifi`: the table, when its settings are ones a Pi can join with.
    fn wifi(&mut self, w: &Spanned<Wifi>) -> Option<Wifi> {
        match check_wifi(w.get_ref()) {
            Ok(()) => Some(w.get_ref().clone()),
            Err(m) => {
                self.err(w.span(), format!("{m}; {NEXT}"));
                None
            }
        }
    }
}

/// A `[[node]]` table was refused; its error is recorded.
struct Refused;

/// The outcome of one check of a `[[node]]` table.
type Checked<T> = std::result::Result<T, Refused>;

/// What `[defaults]` or a `[[node]]` table says of a node's network and
/// login, checked (values that failed their check are left out).
#[derive(Debug, Clone, Default)]
struct Settings {
    /// Default gateway, and where the file gives it.
    gateway: Option<(IpAddr, Range<usize>)>,
    /// DNS servers.
    dns: Vec<IpAddr>,
    /// Interface of the static address (`eth0` when no table names one).
    interface: Option<String>,
    /// Wi-Fi.
    wifi: Option<Wifi>,
    /// Admin user.
    admin_user: Option<String>,
    /// Its SSH authorized keys.
    keys: Vec<String>,
}

/// A table's static addresses: one per node of its range, consecutive.
struct Addresses {
    /// In node order.
    each: Vec<Address>,
    /// Where the table gives the first.
    span: Range<usize>,
}

/// Walks a parsed `fleet.toml`, one method per part, collecting errors in
/// [`Checker`] and the nodes of the tables that pass.
struct FleetChecker<'a> {
    /// The errors so far.
    c: Checker<'a>,
    /// The fleet file's directory: relative paths are resolved against it.
    base: PathBuf,
    /// Non-fatal findings, located like errors.
    warnings: Vec<String>,
    /// The nodes of the tables checked so far, in file order.
    nodes: Vec<FleetNode>,
    /// Node name → span of its first definition.
    names: BTreeMap<String, Range<usize>>,
    /// Address → (node, offset of its `address`).
    addrs: BTreeMap<IpAddr, (String, usize)>,
    /// MAC → (node, offset of its `mac`): the kubeadm install guide ("Verify
    /// the MAC address and product_uuid are unique for every node").
    macs: BTreeMap<String, (String, usize)>,
    /// Where each init node's `role` is.
    inits: Vec<Range<usize>>,
}

impl<'a> FleetChecker<'a> {
    /// A checker for `text`, read from `path`.
    fn new(path: &'a Path, text: &'a str) -> Self {
        FleetChecker {
            c: Checker { path, text, errors: Vec::new(), seen: Vec::new() },
            base: path.parent().map(Path::to_path_buf).unwrap_or_default(),
            warnings: Vec::new(),
            nodes: Vec::new(),
            names: BTreeMap::new(),
            addrs: BTreeMap::new(),
            macs: BTreeMap::new(),
            inits: Vec::new(),
        }
    }

    /// Records an error that refuses the current `[[node]]` table.
    fn refuse(&mut self, span: Range<usize>, msg: impl AsRef<str>) -> Refused {
        self.c.err(span, msg);
        Refused
    }

    /// A path as the file gives it, resolved against the file's directory.
    fn resolve(&self, s: &str) -> PathBuf {
        if Path::new(s).is_absolute() {
            PathBuf::from(s)
        } else {
            self.base.join(s)
        }
    }

    /// `cluster`: the directory, and the cluster in it when it loads.
    fn cluster(&mut self, cluster: &Spanned<String>) -> (PathBuf, Option<Cluster>) {
        let dir = self.resolve(cluster.get_ref());
        match Cluster::load(&dir) {
            Ok(cl) => (dir, Some(cl)),
            Err(e) => {
                self.c.err(
                    cluster.span(),
                    format!(
                        "cluster `{}`: {}",
                        cluster.get_ref(),
                        e.message.lines().next().unwrap_or("cannot be read")
                    ),
                );
                (dir, None)
            }
        }
    }

    /// `image` and `bmap` (default: the image path + `.bmap`): an image that
    /// is not a regular file is an error, one not built yet a warning.
    fn image(&mut self, image: &Spanned<String>, bmap: Option<&Spanned<String>>) -> (PathBuf, PathBuf) {
        let path = self.resolve(image.get_ref());
        let bmap = match bmap {
            Some(b) => self.resolve(b.get_ref()),
            None => PathBuf::from(format!("{}.bmap", path.display())),
        };
        match std::fs::metadata(&path) {
            Ok(m) if !m.is_file() => self.c.err(
                image.span(),
                format!(
                    "image `{}` is not a regular file (a directory, FIFO or device); give the card image `kiln build --format card` wrote; {NEXT}",
                    path.display()
                ),
            ),
            _ => {}
        }
        if !path.exists() {
            let w = self.c.warning(
                image.span(),
                &format!(
                    "warning: image `{}` does not exist yet; build it with `kiln build --format card` before `kiln flash`",
                    path.display()
                ),
            );
            self.warnings.push(w);
        }
        (path, bmap)
    }

    /// `[defaults]`: the settings every node takes unless its table says otherwise.
    fn defaults(&mut self, d: &DefaultsDoc) -> Settings {
        let c = &mut self.c;
        let admin_user = d.admin_user.as_ref().and_then(|s| c.user(s));
        let keys = d.ssh_authorized_keys.as_ref().map(|k| c.keys(k)).unwrap_or_default();
        let gateway = d.gateway.as_ref().and_then(|s| c.ip(s, "gateway").map(|ip| (ip, s.span())));
        let dns = d.dns.as_ref().map(|l| c.ips(l)).unwrap_or_default();
        let interface = d.interface.as_ref().and_then(|s| c.iface(s));
        let wifi = d.wifi.as_ref().and_then(|w| c.wifi(w));
        if !keys.is_empty() && d.admin_user.is_none() {
            if let Some(k) = &d.ssh_authorized_keys {
                c.keys_without_user(k.span());
            }
        }
        Settings { gateway, dns, interface, wifi, admin_user, keys }
    }

    /// Every `[[node]]` table, in file order (at least one is needed).
    fn node_tables(&mut self, tables: &[Spanned<NodeDoc>], defaults: &Settings) {
        if tables.is_empty() {
            self.c.err(0..0, format!("no [[node]] tables: add at least the init node (`[[node]]`, `name = \"pi-01\"`, `role = \"init\"`); {NEXT}"));
        }
        for table in tables {
            // A refused table's error is recorded; the next table is checked all the same.
            let _ = self.node(table.get_ref(), defaults);
        }
    }

    /// One `[[node]]` table: its nodes are added, or it is refused at its first error.
    fn node(&mut self, n: &NodeDoc, defaults: &Settings) -> Checked<()> {
        let role = self.role(n)?;
        let names = self.names(n)?;
        self.name_rules(n, role, &names)?;
        self.ca_keys(n, role)?;
        let address = self.address(n, names.len())?;
        let gateway = match &n.gateway {
            Some(g) => self.c.ip(g, "gateway").map(|ip| (ip, g.span())),
            None => defaults.gateway.clone(),
        };
        self.gateway_fits(address.as_ref(), gateway.as_ref())?;
        let settings = self.settings(n, defaults, gateway);
        let mac = self.mac(n, names.len())?;
        self.add(n, role, &names, address.as_ref(), &settings, mac.as_ref());
        Ok(())
    }

    /// `role`: init, control-plane or join (worker).
    fn role(&mut self, n: &NodeDoc) -> Checked<Role> {
        if let Some(r) = Role::parse(n.role.get_ref()) {
            return Ok(r);
        }
        let hint = location::suggest(n.role.get_ref(), ["init", "control-plane", "join", "worker"])
            .map(|s| format!(" (did you mean `{s}`?)"))
            .unwrap_or_default();
        Err(self.refuse(
            n.role.span(),
            format!("role `{}` is not init, control-plane or join{hint}; {NEXT}", n.role.get_ref()),
        ))
    }

    /// `name` (and `count`): the node names the table's name or range gives.
    fn names(&mut self, n: &NodeDoc) -> Checked<Vec<String>> {
        let pattern =
            parse_pattern(n.name.get_ref()).map_err(|m| self.refuse(n.name.span(), format!("name {m}; {NEXT}")))?;
        let Some((first, last, width)) = pattern.range else {
            if let Some(cnt) = &n.count {
                return Err(self.refuse(
                    cnt.span(),
                    format!(
                        "count needs a range in the name, e.g. `{}-[01:]`; {NEXT}",
                        pattern.prefix.trim_end_matches('-')
                    ),
                ));
            }
            return Ok(vec![pattern.prefix]);
        };
        let count = self.range_count(n, first, last)?;
        Ok((0..count)
            .map(|i| format!("{}{:0width$}{}", pattern.prefix, first + i, pattern.suffix, width = width))
            .collect())
    }

    /// How many nodes `[first:last]`, or `[first:]` with `count`, names: 1 to [`MAX_NODES`].
    fn range_count(&mut self, n: &NodeDoc, first: u64, last: Option<u64>) -> Checked<u64> {
        let count = match (last, &n.count) {
            (Some(l), None) => (l as i128) - (first as i128) + 1,
            (None, Some(cnt)) => *cnt.get_ref() as i128,
            (Some(l), Some(cnt)) => {
                let k = (l as i128) - (first as i128) + 1;
                if k != *cnt.get_ref() as i128 {
                    return Err(self.refuse(
                        cnt.span(),
                        format!(
                            "count = {} but `{}` names {k} nodes; give one or the other; {NEXT}",
                            cnt.get_ref(),
                            n.name.get_ref()
                        ),
                    ));
                }
                k
            }
            (None, None) => {
                return Err(self.refuse(
                    n.name.span(),
                    format!(
                        "`{}` is open-ended; add `count = N` or close the range (`[03:20]`); {NEXT}",
                        n.name.get_ref()
                    ),
                ));
            }
        };
        let span = n.count.as_ref().map(|c| c.span()).unwrap_or(n.name.span());
        if count < 1 {
            return Err(self.refuse(span, format!("`{}` expands to no node (count {count}); {NEXT}", n.name.get_ref())));
        }
        if count > MAX_NODES as i128 {
            return Err(self.refuse(
                span,
                format!(
                    "`{}` expands to {count} nodes, more than kiln's limit of {MAX_NODES}; {NEXT}",
                    n.name.get_ref()
                ),
            ));
        }
        Ok(count as u64)
    }

    /// The init node is one node; no name is reserved or other than a DNS label.
    fn name_rules(&mut self, n: &NodeDoc, role: Role, names: &[String]) -> Checked<()> {
        if role == Role::Init {
            if names.len() != 1 {
                return Err(self.refuse(
                    n.name.span(),
                    format!(
                        "the init node must be one node, but `{}` expands to {}; {NEXT}",
                        n.name.get_ref(),
                        names.len()
                    ),
                ));
            }
            self.inits.push(n.role.span());
        }
        if let Some(bad) = names.iter().find(|s| RESERVED_NAMES.contains(&s.as_str())) {
            return Err(self.refuse(
                n.name.span(),
                format!("node name `{bad}` means the machine itself to every resolver (RFC 6761); give the node its own name; {NEXT}"),
            ));
        }
        if let Some(bad) = names.iter().find(|s| !is_node_name(s)) {
            return Err(self.refuse(
                n.name.span(),
                format!("node name `{bad}` is not a DNS label (lowercase letters, digits and `-`, at most 63, no `-` at either end); {NEXT}"),
            ));
        }
        Ok(())
    }

    /// `ca_keys`: only ever what the role implies (workers never get the CA keys).
    fn ca_keys(&mut self, n: &NodeDoc, role: Role) -> Checked<()> {
        let Some(k) = &n.ca_keys else { return Ok(()) };
        match (role.is_control_plane(), *k.get_ref()) {
            (false, true) => Err(self.refuse(k.span(), format!("`{}` is a worker (role join): workers never receive CA keys; remove ca_keys or make it a control-plane; {NEXT}", n.name.get_ref()))),
            (true, false) => Err(self.refuse(k.span(), format!("`{}` is a control plane: it needs the CA keys (kiln does not use --upload-certs); remove ca_keys; {NEXT}", n.name.get_ref()))),
            _ => Ok(()),
        }
    }

    /// `address`: a CIDR, and for a range `count` consecutive host addresses in its subnet.
    fn address(&mut self, n: &NodeDoc, count: usize) -> Checked<Option<Addresses>> {
        let Some(a) = &n.address else { return Ok(None) };
        let addr = parse_cidr(a.get_ref()).map_err(|m| self.refuse(a.span(), format!("address {m}; {NEXT}")))?;
        let each: Vec<Address> = (0..count as u64).map_while(|i| addr.nth(i)).collect();
        if each.len() != count {
            return Err(self.refuse(
                a.span(),
                format!(
                    "address {}: `{}` needs {count} consecutive host addresses from here but subnet /{} runs out after {}; start lower or use a larger subnet; {NEXT}",
                    a.get_ref(), n.name.get_ref(), addr.prefix, each.len()
                ),
            ));
        }
        Ok(Some(Addresses { each, span: a.span() }))
    }

    /// The gateway is no node's address and lies in the nodes' subnet.
    fn gateway_fits(&mut self, address: Option<&Addresses>, gateway: Option<&(IpAddr, Range<usize>)>) -> Checked<()> {
        let (Some(addrs), Some((gw, gspan))) = (address, gateway) else { return Ok(()) };
        if let Some(a) = addrs.each.iter().find(|a| a.ip == *gw) {
            return Err(self.refuse(
                addrs.span.clone(),
                format!("address {a} is the gateway's ({gw}); give the node an address of its own; {NEXT}"),
            ));
        }
        if let Some(first) = addrs.each.first() {
            if !first.contains(*gw) {
                return Err(self.refuse(gspan.clone(), format!("gateway {gw} is not in {first}'s subnet; {NEXT}")));
            }
        }
        Ok(())
    }

    /// `dns`, `interface`, `wifi`, `admin_user` and `ssh_authorized_keys`,
    /// each the table's own or else the default.
    fn settings(&mut self, n: &NodeDoc, d: &Settings, gateway: Option<(IpAddr, Range<usize>)>) -> Settings {
        let c = &mut self.c;
        let dns = match &n.dns {
            Some(l) => c.ips(l),
            None => d.dns.clone(),
        };
        let interface = match &n.interface {
            Some(s) => c.iface(s),
            None => d.interface.clone(),
        };
        let wifi = match &n.wifi {
            Some(w) => c.wifi(w),
            None => d.wifi.clone(),
        };
        let admin_user = match &n.admin_user {
            Some(s) => c.user(s),
            None => d.admin_user.clone(),
        };
        let keys = match &n.ssh_authorized_keys {
            Some(k) => {
                let keys = c.keys(k);
                if admin_user.is_none() {
                    c.keys_without_user(k.span());
                }
                keys
            }
            None => d.keys.clone(),
        };
        Settings { gateway, dns, interface, wifi, admin_user, keys }
    }

    /// `mac`: one machine's MAC, so only on a table of one node.
    fn mac(&mut self, n: &NodeDoc, count: usize) -> Checked<Option<(String, Range<usize>)>> {
        let Some(m) = &n.mac else { return Ok(None) };
        if count != 1 {
            return Err(self.refuse(m.span(), format!("`{}` is a range of {count} nodes but gives one mac: each machine has its own; give each node its own [[node]] with its mac; {NEXT}", n.name.get_ref())));
        }
        match parse_mac(m.get_ref().trim()) {
            Ok(v) => Ok(Some((v, m.span()))),
            Err(e) => Err(self.refuse(m.span(), format!("mac {e}; {NEXT}"))),
        }
    }

    /// Adds the table's nodes in order, until one's name, address or MAC is
    /// another node's.
    fn add(
        &mut self,
        n: &NodeDoc,
        role: Role,
        names: &[String],
        address: Option<&Addresses>,
        s: &Settings,
        mac: Option<&(String, Range<usize>)>,
    ) {
        let interface = s.interface.clone().unwrap_or_else(|| "eth0".into());
        for (i, name) in names.iter().enumerate() {
            let addr = address.map(|a| (a.each[i], &a.span));
            if self.claim(n, name, addr, mac).is_err() {
                break;
            }
            self.nodes.push(FleetNode {
                name: name.clone(),
                role,
                address: addr.map(|a| a.0),
                gateway: s.gateway.as_ref().map(|g| g.0),
                dns: s.dns.clone(),
                interface: interface.clone(),
                wifi: s.wifi.clone(),
                admin_user: s.admin_user.clone(),
                ssh_authorized_keys: s.keys.clone(),
                mac: mac.map(|m| m.0.clone()),
            });
        }
    }

    /// Claims `name`, its address and its MAC for one node: each is refused
    /// when another node has it, naming where.
    fn claim(
        &mut self,
        n: &NodeDoc,
        name: &str,
        address: Option<(Address, &Range<usize>)>,
        mac: Option<&(String, Range<usize>)>,
    ) -> Checked<()> {
        let text = self.c.text;
        if let Some(prev) = self.names.get(name).map(|r| r.start) {
            let (l, col) = location::line_col(text, prev);
            return Err(self.refuse(
                n.name.span(),
                format!("node `{name}` is defined twice (first at line {l}, column {col}); rename one; {NEXT}"),
            ));
        }
        self.names.insert(name.to_string(), n.name.span());
        if let Some((a, aspan)) = address {
            if let Some((other, at)) = self.addrs.get(&a.ip).cloned() {
                let (l, col) = location::line_col(text, at);
                return Err(self.refuse(
                    aspan.clone(),
                    format!("address {} of `{name}` is already `{other}`'s (line {l}, column {col}); {NEXT}", a.ip),
                ));
            }
            self.addrs.insert(a.ip, (name.to_string(), aspan.start));
        }
        if let Some((m, mspan)) = mac {
            if let Some((other, at)) = self.macs.get(m).cloned() {
                let (l, col) = location::line_col(text, at);
                return Err(self.refuse(
                    mspan.clone(),
                    format!("mac {m} of `{name}` is already `{other}`'s (line {l}, column {col}): two nodes cannot be one machine (kubeadm requires a unique MAC per node); fix the one copied wrong; {NEXT}"),
                ));
            }
            self.macs.insert(m.clone(), (name.to_string(), mspan.start));
        }
        Ok(())
    }

    /// At most [`MAX_NODES`] nodes in the whole fleet.
    fn fleet_size(&mut self) {
        if self.nodes.len() > MAX_NODES {
            self.c.err(
                0..0,
                format!(
                    "the fleet has {} nodes, more than kiln's limit of {MAX_NODES}; split it; {NEXT}",
                    self.nodes.len()
                ),
            );
        }
    }

    /// Exactly one init node (checked when nothing else is wrong).
    fn one_init(&mut self, tables: &[Spanned<NodeDoc>]) {
        if tables.is_empty() || !self.c.errors.is_empty() {
            return;
        }
        match self.inits.len() {
            0 => self.c.err(
                tables[0].get_ref().role.span(),
                format!(
                    "no node has role = \"init\": exactly one node runs `kubeadm init`; make one the init node; {NEXT}"
                ),
            ),
            1 => {}
            _ => {
                let (l, col) = location::line_col(self.c.text, self.inits[0].start);
                let second = self.inits[1].clone();
                self.c.err(second, format!("a second init node (the first is at line {l}, column {col}): exactly one node runs `kubeadm init`; make this one control-plane; {NEXT}"));
            }
        }
    }

    /// The cluster's endpoint, when it is an IP, must be a control-plane
    /// node's static address (kubeadm init serves the API on it; joins go to
    /// it): an error when no node holds it or a worker does; a warning when
    /// some control plane takes DHCP (a reservation may give it the address).
    /// Checked when nothing else is wrong.
    ///
    /// A loopback endpoint is exempt: it is a load balancer on every node itself
    /// (kubespray's nginx-proxy, a haproxy static pod), which no node "holds".
    fn endpoint(&mut self, endpoint: &str, span: Range<usize>) {
        if !self.c.errors.is_empty() {
            return;
        }
        let Some(ip) = endpoint_ip(endpoint).filter(|ip| !ip.is_loopback()) else { return };
        let nodes = &self.nodes;
        match nodes.iter().find(|n| n.address.is_some_and(|a| a.ip == ip)) {
            Some(n) if n.role.is_control_plane() => {}
            Some(n) => {
                self.c.err(span, format!("the cluster's endpoint {endpoint} is the address of `{}`, a worker; the endpoint must be a control-plane node's (or a load balancer's); {NEXT}", n.name));
            }
            None if nodes.iter().any(|n| n.role.is_control_plane() && n.address.is_none()) => {
                self.warnings.push(self.c.warning(
                    span,
                    &format!("warning: the cluster's endpoint {endpoint} is no node's static address; make sure DHCP gives it to a control-plane node"),
                ));
            }
            None => {
                let cps: Vec<String> = nodes
                    .iter()
                    .filter(|n| n.role.is_control_plane())
                    .map(|n| format!("{} {}", n.name, n.address.map(|a| a.ip.to_string()).unwrap_or_default()))
                    .collect();
                self.c.err(span, format!("the cluster's endpoint {endpoint} is no control-plane node's address (control planes: {}); give the init node that address, or point the cluster at it; {NEXT}", cps.join(", ")));
            }
        }
    }
}

/// The host of a `host:port` endpoint (`[v6]:port` too), as an IP if it is one.
fn endpoint_ip(endpoint: &str) -> Option<IpAddr> {
    let host = match endpoint.strip_prefix('[') {
        Some(rest) => rest.split_once(']').map(|(h, _)| h)?,
        None => endpoint.rsplit_once(':').map(|(h, _)| h).unwrap_or(endpoint),
    };
    host.parse().ok()
}
