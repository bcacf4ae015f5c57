//! Raspberry Pi fleets: `fleet.toml`, per-node personalisation of one card
//! image, and careful card writes.
//!
//! * [`Fleet::load`] parses and checks a `fleet.toml` (strict: unknown keys,
//!   bad names, addresses, CIDRs, ranges, duplicate names or addresses, zero
//!   or two init nodes and a worker given CA keys are all `file:line:col` errors);
//! * [`personalise`] renders a node's files (`kiln/node.toml`, cloud-init
//!   `meta-data`, `user-data`, `network-config`) and writes them into the FAT
//!   boot partition of the shared base image as a small block overlay;
//! * [`images`] writes one personalised image file per node (reflink or sparse copies);
//! * [`flash`] writes the mapped ranges of the image plus the overlay to a card
//!   (or a file) and reads them back bypassing the page cache; [`device`] decides
//!   whether a target may be written at all.
//!
//! A `fleet.toml`:
//!
//! ```toml
//! cluster = "clusters/lab"               # from `kiln cluster init` (relative to this file)
//! image = "dist/rpi-1.34-arm64.img"      # from `kiln build --format card`; its .bmap beside it
//!
//! [defaults]                             # every node, unless the node says otherwise
//! admin_user = "kiln"
//! ssh_authorized_keys = ["ssh-ed25519 AAAAC3Nz... me@laptop"]
//! gateway = "192.168.1.1"
//! dns = ["192.168.1.1"]
//!
//! [[node]]
//! name = "pi-01"
//! role = "init"
//! address = "192.168.1.101/24"
//!
//! [[node]]
//! name = "pi-[02:20]"                    # pi-02 … pi-20; or "pi-[02:]" with count = 19
//! role = "join"
//! address = "192.168.1.102/24"           # the first; each further node takes the next address
//! ```

pub mod device;
pub mod flash;
pub mod images;
pub mod personalise;

use crate::cluster::Cluster;
use crate::error::{Error, Result};
use crate::inputs::location;
use kiln_firstboot::node::Role;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::ops::Range;
use std::path::{Path, PathBuf};
use toml::Spanned;

/// Most nodes one `[[node]]` range (and a whole fleet) may expand to.
pub const MAX_NODES: usize = 1000;

/// Key types accepted in `ssh_authorized_keys` (OpenSSH `sshd(8)` AUTHORIZED_KEYS FILE FORMAT).
pub const SSH_KEY_TYPES: [&str; 8] = [
    "ssh-ed25519",
    "ssh-rsa",
    "ecdsa-sha2-nistp256",
    "ecdsa-sha2-nistp384",
    "ecdsa-sha2-nistp521",
    "sk-ssh-ed25519@openssh.com",
    "sk-ecdsa-sha2-nistp256@openssh.com",
    "ssh-dss",
];

/// Wi-Fi settings (`wifi = { ssid = "…", password = "…", country = "GB" }`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Wifi {
    /// Network name.
    pub ssid: String,
    /// WPA passphrase (8–63 characters) or 64 hex digits; omitted for an open network.
    #[serde(default)]
    pub password: Option<String>,
    /// ISO 3166 country code: a Pi's Wi-Fi stays blocked until it is set.
    pub country: String,
    /// The network does not broadcast its name.
    #[serde(default)]
    pub hidden: bool,
}

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

/// A static address: the IP and its prefix length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Address {
    /// The node's IP.
    pub ip: IpAddr,
    /// Prefix length of its subnet.
    pub prefix: u8,
}

impl std::fmt::Display for Address {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.ip, self.prefix)
    }
}

/// One node after ranges are expanded and defaults applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FleetNode {
    /// Node name, also its hostname.
    pub name: String,
    /// What it does at first boot.
    pub role: Role,
    /// Static address; DHCP when `None`.
    pub address: Option<Address>,
    /// Default gateway for a static address.
    pub gateway: Option<IpAddr>,
    /// DNS servers for a static address.
    pub dns: Vec<IpAddr>,
    /// Interface the static address goes on (`eth0` unless told).
    pub interface: String,
    /// Wi-Fi (on `wlan0`).
    pub wifi: Option<Wifi>,
    /// Admin user created by cloud-init, if any.
    pub admin_user: Option<String>,
    /// That user's SSH authorized keys.
    pub ssh_authorized_keys: Vec<String>,
    /// The wired NIC's MAC address (`aa:bb:cc:dd:ee:ff`, lowercase), when the
    /// fleet names it: unique in the fleet, and the network config matches it.
    pub mac: Option<String>,
}

/// A checked fleet.
#[derive(Debug, Clone)]
pub struct Fleet {
    /// The fleet file.
    pub path: PathBuf,
    /// The cluster directory (resolved against the fleet file's directory).
    pub cluster_dir: PathBuf,
    /// The card image.
    pub image: PathBuf,
    /// The image's `.bmap` (default: the image path + `.bmap`).
    pub bmap: PathBuf,
    /// Every node, in file order.
    pub nodes: Vec<FleetNode>,
    /// Non-fatal findings (`file:line:col: warning …`).
    pub warnings: Vec<String>,
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
}

/// A MAC address as `mac = "…"` gives it: six hex pairs separated by `:` or
/// `-`, returned lowercase with `:`. Refused: a multicast address (the low
/// bit of the first octet, IEEE 802) and all zeros — neither is a NIC's.
pub fn parse_mac(s: &str) -> std::result::Result<String, String> {
    let sep = if s.contains('-') { '-' } else { ':' };
    let parts: Vec<&str> = s.split(sep).collect();
    if parts.len() != 6 || parts.iter().any(|p| p.len() != 2 || !p.chars().all(|c| c.is_ascii_hexdigit())) {
        return Err(format!("`{s}` is not a MAC address (six hex pairs, e.g. `dc:a6:32:01:02:03`)"));
    }
    let bytes: Vec<u8> = parts.iter().filter_map(|p| u8::from_str_radix(p, 16).ok()).collect();
    if bytes.iter().all(|&b| b == 0) {
        return Err(format!("`{s}` is the all-zero MAC address, which no NIC has"));
    }
    if bytes[0] & 1 == 1 {
        return Err(format!("`{s}` is a multicast MAC address (low bit of the first octet set), which no NIC has"));
    }
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(":"))
}

/// Whether `s` is a DNS-1123 label (a Kubernetes node name and a hostname).
pub fn is_node_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

/// Whether `s` is a Linux user name cloud-init and `useradd` accept (and not root):
/// the rule kiln-firstboot applies to `[cluster] admin_user`
/// ([`kiln_firstboot::validate::admin_user`]), so a fleet never writes a name the node refuses.
pub fn is_user_name(s: &str) -> bool {
    kiln_firstboot::validate::admin_user(s).is_ok()
}

/// A parsed name pattern: `prefix[first:last]suffix` or a plain name.
#[derive(Debug, Clone, PartialEq, Eq)]
struct NamePattern {
    prefix: String,
    suffix: String,
    /// (first, last or open, zero-pad width).
    range: Option<(u64, Option<u64>, usize)>,
}

fn parse_pattern(s: &str) -> std::result::Result<NamePattern, String> {
    let Some(open) = s.find('[') else {
        if s.contains(']') {
            return Err(format!("`{s}` has `]` without `[`; a range is written `pi-[03:20]`"));
        }
        return Ok(NamePattern { prefix: s.into(), suffix: String::new(), range: None });
    };
    let close = s[open..]
        .find(']')
        .map(|i| i + open)
        .ok_or_else(|| format!("`{s}`: `[` is never closed; write `pi-[03:20]`"))?;
    let (prefix, inner, suffix) = (&s[..open], &s[open + 1..close], &s[close + 1..]);
    if suffix.contains('[') || suffix.contains(']') || prefix.contains(']') {
        return Err(format!("`{s}` has more than one range; use one `[first:last]` per [[node]]"));
    }
    let (a, b) = inner.split_once(':').ok_or_else(|| format!("`{s}`: a range is `[first:last]`, e.g. `pi-[03:20]`"))?;
    let num = |t: &str| -> std::result::Result<u64, String> {
        if t.is_empty() || t.len() > 6 || !t.bytes().all(|c| c.is_ascii_digit()) {
            return Err(format!("`{s}`: `{t}` is not a number in a range like `pi-[03:20]`"));
        }
        t.parse().map_err(|_| format!("`{s}`: `{t}` is not a number"))
    };
    let first = num(a)?;
    let last = if b.is_empty() { None } else { Some(num(b)?) };
    Ok(NamePattern { prefix: prefix.into(), suffix: suffix.into(), range: Some((first, last, a.len())) })
}

/// Parses `ip/prefix`.
pub fn parse_cidr(s: &str) -> std::result::Result<Address, String> {
    let (ip, prefix) = s
        .split_once('/')
        .ok_or_else(|| format!("`{s}` has no prefix length; write it as CIDR, e.g. `192.168.1.23/24`"))?;
    let ip: IpAddr = ip.parse().map_err(|_| format!("`{ip}` in `{s}` is not an IP address"))?;
    let max = if ip.is_ipv4() { 32 } else { 128 };
    let prefix: u8 = prefix
        .parse()
        .ok()
        .filter(|p| *p <= max)
        .ok_or_else(|| format!("`/{prefix}` in `{s}` is not a prefix length (0–{max})"))?;
    if prefix == 0 {
        return Err(format!("`{s}`: a /0 node address is a mistake; give the subnet's prefix, e.g. /24"));
    }
    Ok(Address { ip, prefix })
}

fn ip_to_u128(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(v) => u32::from(v) as u128,
        IpAddr::V6(v) => u128::from(v),
    }
}

fn u128_to_ip(v: u128, like: IpAddr) -> IpAddr {
    match like {
        IpAddr::V4(_) => IpAddr::V4(std::net::Ipv4Addr::from(v as u32)),
        IpAddr::V6(_) => IpAddr::V6(std::net::Ipv6Addr::from(v)),
    }
}

impl Address {
    fn bits(&self) -> u32 {
        if self.ip.is_ipv4() {
            32
        } else {
            128
        }
    }
    /// Host-part mask.
    fn host_mask(&self) -> u128 {
        let host = self.bits() - self.prefix as u32;
        if host >= 128 {
            u128::MAX
        } else {
            (1u128 << host) - 1
        }
    }
    /// Whether `ip` is in this address's subnet.
    pub fn contains(&self, ip: IpAddr) -> bool {
        ip.is_ipv4() == self.ip.is_ipv4()
            && (ip_to_u128(ip) & !self.host_mask()) == (ip_to_u128(self.ip) & !self.host_mask())
    }
    /// The `n`th address after this one, if it stays a usable host address in the subnet.
    fn nth(&self, n: u64) -> Option<Address> {
        let v = ip_to_u128(self.ip).checked_add(n as u128)?;
        let host = v & self.host_mask();
        let net = ip_to_u128(self.ip) & !self.host_mask();
        if v & !self.host_mask() != net {
            return None;
        }
        // IPv4 subnets larger than /31 reserve the network and broadcast addresses.
        if self.ip.is_ipv4() && self.prefix < 31 && (host == 0 || host == self.host_mask()) {
            return None;
        }
        Some(Address { ip: u128_to_ip(v, self.ip), prefix: self.prefix })
    }
}

/// Longest `ssh_authorized_keys` entry: 16 KiB (an ssh-rsa 16384-bit key
/// line is about 2.8 KB; OpenSSH's `sshd` reads authorized_keys lines of up
/// to 8 KB, `SSH_MAX_PUBKEY_BYTES` 16384 in `sshkey.h`).
pub const MAX_SSH_KEY_BYTES: usize = 16 << 10;

/// ISO 3166-1 alpha-2 codes (the officially assigned ones), which the
/// kernel's regulatory database (`wireless-regdb` `db.txt`) and wpa_supplicant's
/// `country=` take. `XX` and `00` are not countries.
pub const ISO_3166_ALPHA2: &str = "AD AE AF AG AI AL AM AO AQ AR AS AT AU AW AX AZ BA BB BD BE BF BG BH BI BJ BL BM BN BO BQ BR BS BT BV BW BY BZ CA CC CD CF CG CH CI CK CL CM CN CO CR CU CV CW CX CY CZ DE DJ DK DM DO DZ EC EE EG EH ER ES ET FI FJ FK FM FO FR GA GB GD GE GF GG GH GI GL GM GN GP GQ GR GS GT GU GW GY HK HM HN HR HT HU ID IE IL IM IN IO IQ IR IS IT JE JM JO JP KE KG KH KI KM KN KP KR KW KY KZ LA LB LC LI LK LR LS LT LU LV LY MA MC MD ME MF MG MH MK ML MM MN MO MP MQ MR MS MT MU MV MW MX MY MZ NA NC NE NF NG NI NL NO NP NR NU NZ OM PA PE PF PG PH PK PL PM PN PR PS PT PW PY QA RE RO RS RU RW SA SB SC SD SE SG SH SI SJ SK SL SM SN SO SR SS ST SV SX SY SZ TC TD TF TG TH TJ TK TL TM TN TO TR TT TV TW TZ UA UG UM US UY UZ VA VC VE VG VI VN VU WF WS YE YT ZA ZM ZW";

/// Names a node may not have: they mean the machine itself to every resolver
/// (RFC 6761 §6.3 `localhost`), so kubelet would register a node that every
/// other node reaches as itself.
const RESERVED_NAMES: [&str; 2] = ["localhost", "localhost-localdomain"];

fn check_ssh_key(k: &str) -> std::result::Result<(), String> {
    if k.contains("PRIVATE KEY") {
        return Err("this is a private key; give the public key (the `.pub` file)".into());
    }
    if k.len() > MAX_SSH_KEY_BYTES {
        return Err(format!(
            "a {}-byte entry is longer than kiln's {MAX_SSH_KEY_BYTES}-byte limit for one public key line; paste the `.pub` file's one line",
            k.len()
        ));
    }
    let mut words = k.split_whitespace();
    let typ = words.next().unwrap_or("");
    let blob = words.next().unwrap_or("");
    if !SSH_KEY_TYPES.contains(&typ) {
        let short: String = k.chars().take(24).collect();
        return Err(format!(
            "`{short}…` is not an SSH public key line (`ssh-ed25519 AAAA… comment`; types: {})",
            SSH_KEY_TYPES.join(", ")
        ));
    }
    use base64::Engine;
    let body = base64::engine::general_purpose::STANDARD.decode(blob).ok().filter(|b| b.len() >= 32);
    // The wire format (RFC 4253 §6.6) starts with the key type as a string:
    // a 4-byte big-endian length, then the name the line's first word gives.
    let names_type = |b: &[u8]| {
        b.len() >= 4 && {
            let n = u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize;
            b.get(4..4 + n) == Some(typ.as_bytes())
        }
    };
    if k.chars().any(char::is_control) || !body.as_deref().is_some_and(names_type) {
        return Err(format!(
            "the `{typ}` key's base64 body is missing, damaged or not a `{typ}` key; paste the whole `.pub` line"
        ));
    }
    Ok(())
}

fn check_wifi(w: &Wifi) -> std::result::Result<(), String> {
    if w.ssid.is_empty() || w.ssid.len() > 32 {
        return Err(format!("wifi ssid `{}` must be 1–32 bytes", w.ssid));
    }
    if w.ssid.chars().any(char::is_control) {
        return Err("wifi ssid has a control character (a newline?); give the network's name as it is".into());
    }
    if let Some(p) = &w.password {
        // IEEE 802.11i-2004 Annex H.4: a passphrase is 8–63 printable ASCII characters (32–126).
        if !p.bytes().all(|b| (32..=126).contains(&b)) {
            return Err(
                "wifi password has a control or non-ASCII character (a newline?); a WPA passphrase is 8–63 printable ASCII characters".into(),
            );
        }
        let hex = p.len() == 64 && p.bytes().all(|b| b.is_ascii_hexdigit());
        if !hex && !(8..=63).contains(&p.len()) {
            return Err("wifi password must be a WPA passphrase of 8–63 characters or 64 hex digits".into());
        }
    }
    if w.country.len() != 2 || !w.country.bytes().all(|b| b.is_ascii_uppercase()) {
        return Err(format!("wifi country `{}` must be a two-letter ISO 3166 code in capitals, e.g. `GB`", w.country));
    }
    if !ISO_3166_ALPHA2.split(' ').any(|c| c == w.country) {
        return Err(format!(
            "wifi country `{}` is not an ISO 3166-1 alpha-2 country code (the Wi-Fi stays blocked without a real one); give yours, e.g. `GB`, `US`, `DE`",
            w.country
        ));
    }
    Ok(())
}

const NEXT: &str = "fix it and run `kiln fleet check` again";

/// The host of a `host:port` endpoint (`[v6]:port` too), as an IP if it is one.
fn endpoint_ip(endpoint: &str) -> Option<IpAddr> {
    let host = match endpoint.strip_prefix('[') {
        Some(rest) => rest.split_once(']').map(|(h, _)| h)?,
        None => endpoint.rsplit_once(':').map(|(h, _)| h).unwrap_or(endpoint),
    };
    host.parse().ok()
}

/// The cluster's endpoint, when it is an IP, must be a control-plane node's
/// static address (kubeadm init serves the API on it; joins go to it): an
/// error when no node holds it or a worker does; a warning when some control
/// plane takes DHCP (a reservation may give it the address).
///
/// A loopback endpoint is exempt: it is a load balancer on every node itself
/// (kubespray's nginx-proxy, a haproxy static pod), which no node "holds".
fn check_endpoint(c: &mut Checker, endpoint: &str, nodes: &[FleetNode], span: Range<usize>) -> Option<String> {
    let ip = endpoint_ip(endpoint).filter(|ip| !ip.is_loopback())?;
    let holder = nodes.iter().find(|n| n.address.is_some_and(|a| a.ip == ip));
    match holder {
        Some(n) if n.role.is_control_plane() => None,
        Some(n) => {
            c.err(span, format!("the cluster's endpoint {endpoint} is the address of `{}`, a worker; the endpoint must be a control-plane node's (or a load balancer's); {NEXT}", n.name));
            None
        }
        None if nodes.iter().any(|n| n.role.is_control_plane() && n.address.is_none()) => Some(location::at(
            c.path,
            c.text,
            Some(span),
            &format!("warning: the cluster's endpoint {endpoint} is no node's static address; make sure DHCP gives it to a control-plane node"),
        )),
        None => {
            let cps: Vec<String> = nodes
                .iter()
                .filter(|n| n.role.is_control_plane())
                .map(|n| format!("{} {}", n.name, n.address.map(|a| a.ip.to_string()).unwrap_or_default()))
                .collect();
            c.err(span, format!("the cluster's endpoint {endpoint} is no control-plane node's address (control planes: {}); give the init node that address, or point the cluster at it; {NEXT}", cps.join(", ")));
            None
        }
    }
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
        let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
        let resolve = |s: &str| if Path::new(s).is_absolute() { PathBuf::from(s) } else { base.join(s) };
        let mut c = Checker { path, text, errors: Vec::new(), seen: Vec::new() };
        let mut warnings = Vec::new();

        let cluster_dir = resolve(doc.cluster.get_ref());
        let loaded = Cluster::load(&cluster_dir);
        if let Err(e) = &loaded {
            c.err(
                doc.cluster.span(),
                format!(
                    "cluster `{}`: {}",
                    doc.cluster.get_ref(),
                    e.message.lines().next().unwrap_or("cannot be read")
                ),
            );
        }
        let image = resolve(doc.image.get_ref());
        let bmap = match &doc.bmap {
            Some(b) => resolve(b.get_ref()),
            None => PathBuf::from(format!("{}.bmap", image.display())),
        };
        match std::fs::metadata(&image) {
            Ok(m) if !m.is_file() => c.err(
                doc.image.span(),
                format!(
                    "image `{}` is not a regular file (a directory, FIFO or device); give the card image `kiln build --format card` wrote; {NEXT}",
                    image.display()
                ),
            ),
            _ => {}
        }
        if !image.exists() {
            warnings.push(location::at(
                path,
                text,
                Some(doc.image.span()),
                &format!(
                    "warning: image `{}` does not exist yet; build it with `kiln build --format card` before `kiln flash`",
                    image.display()
                ),
            ));
        }

        let d = &doc.defaults;
        let mut nodes = Vec::new();
        // (name → span of its first definition), (address → (node, span))
        let mut names: BTreeMap<String, Range<usize>> = BTreeMap::new();
        let mut addrs: BTreeMap<IpAddr, (String, usize)> = BTreeMap::new();
        // MAC → (node, offset of its `mac`): the kubeadm install guide ("Verify
        // the MAC address and product_uuid are unique for every node").
        let mut macs: BTreeMap<String, (String, usize)> = BTreeMap::new();
        let mut inits: Vec<Range<usize>> = Vec::new();

        let check_keys = |c: &mut Checker, keys: &Spanned<Vec<Spanned<String>>>| -> Vec<String> {
            let mut out = Vec::new();
            for k in keys.get_ref() {
                match check_ssh_key(k.get_ref()) {
                    Ok(()) => out.push(k.get_ref().trim().to_string()),
                    Err(m) => c.err(k.span(), format!("ssh_authorized_keys: {m}; {NEXT}")),
                }
            }
            out
        };
        let check_ips = |c: &mut Checker, list: &Spanned<Vec<Spanned<String>>>| -> Vec<IpAddr> {
            let mut out = Vec::new();
            for s in list.get_ref() {
                match s.get_ref().parse::<IpAddr>() {
                    Ok(ip) => out.push(ip),
                    Err(_) => c.err(s.span(), format!("dns: `{}` is not an IP address; {NEXT}", s.get_ref())),
                }
            }
            out
        };
        let check_ip = |c: &mut Checker, s: &Spanned<String>, what: &str| -> Option<IpAddr> {
            match s.get_ref().parse::<IpAddr>() {
                Ok(ip) => Some(ip),
                Err(_) => {
                    let hint = if s.get_ref().contains('/') { " (no prefix length here)" } else { "" };
                    c.err(s.span(), format!("{what}: `{}` is not an IP address{hint}; {NEXT}", s.get_ref()));
                    None
                }
            }
        };
        let check_user = |c: &mut Checker, s: &Spanned<String>| -> Option<String> {
            if is_user_name(s.get_ref()) {
                Some(s.get_ref().clone())
            } else {
                c.err(
                    s.span(),
                    format!(
                        "admin_user `{}` is not a user name (lowercase letters, digits, `_`, `-`, at most 32; not root); {NEXT}",
                        s.get_ref()
                    ),
                );
                None
            }
        };
        let check_iface = |c: &mut Checker, s: &Spanned<String>| -> Option<String> {
            let ok = !s.get_ref().is_empty()
                && s.get_ref().len() <= 15
                && s.get_ref().bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.');
            if ok {
                Some(s.get_ref().clone())
            } else {
                c.err(s.span(), format!("interface `{}` is not a Linux interface name; {NEXT}", s.get_ref()));
                None
            }
        };
        let check_wifi_at = |c: &mut Checker, w: &Spanned<Wifi>| -> Option<Wifi> {
            match check_wifi(w.get_ref()) {
                Ok(()) => Some(w.get_ref().clone()),
                Err(m) => {
                    c.err(w.span(), format!("{m}; {NEXT}"));
                    None
                }
            }
        };

        let def_user = d.admin_user.as_ref().and_then(|s| check_user(&mut c, s));
        let def_keys = d.ssh_authorized_keys.as_ref().map(|k| check_keys(&mut c, k)).unwrap_or_default();
        let def_gw = d.gateway.as_ref().and_then(|s| check_ip(&mut c, s, "gateway"));
        let def_dns = d.dns.as_ref().map(|l| check_ips(&mut c, l)).unwrap_or_default();
        let def_iface = d.interface.as_ref().and_then(|s| check_iface(&mut c, s));
        let def_wifi = d.wifi.as_ref().and_then(|w| check_wifi_at(&mut c, w));
        if !def_keys.is_empty() && d.admin_user.is_none() {
            if let Some(k) = &d.ssh_authorized_keys {
                c.err(
                    k.span(),
                    format!("ssh_authorized_keys without admin_user: name the user the keys log in as; {NEXT}"),
                );
            }
        }

        if doc.node.is_empty() {
            c.err(0..0, format!("no [[node]] tables: add at least the init node (`[[node]]`, `name = \"pi-01\"`, `role = \"init\"`); {NEXT}"));
        }

        for entry in &doc.node {
            let n = entry.get_ref();
            let role = match Role::parse(n.role.get_ref()) {
                Some(r) => r,
                None => {
                    let hint = location::suggest(n.role.get_ref(), ["init", "control-plane", "join", "worker"])
                        .map(|s| format!(" (did you mean `{s}`?)"))
                        .unwrap_or_default();
                    c.err(
                        n.role.span(),
                        format!("role `{}` is not init, control-plane or join{hint}; {NEXT}", n.role.get_ref()),
                    );
                    continue;
                }
            };
            let pattern = match parse_pattern(n.name.get_ref()) {
                Ok(p) => p,
                Err(m) => {
                    c.err(n.name.span(), format!("name {m}; {NEXT}"));
                    continue;
                }
            };
            let expanded: Vec<String> = match (&pattern.range, &n.count) {
                (None, None) => vec![pattern.prefix.clone()],
                (None, Some(cnt)) => {
                    c.err(
                        cnt.span(),
                        format!(
                            "count needs a range in the name, e.g. `{}-[01:]`; {NEXT}",
                            pattern.prefix.trim_end_matches('-')
                        ),
                    );
                    continue;
                }
                (Some((first, last, width)), cnt) => {
                    let count = match (last, cnt) {
                        (Some(l), None) => (*l as i128) - (*first as i128) + 1,
                        (None, Some(cnt)) => *cnt.get_ref() as i128,
                        (Some(l), Some(cnt)) => {
                            let k = (*l as i128) - (*first as i128) + 1;
                            if k != *cnt.get_ref() as i128 {
                                c.err(
                                    cnt.span(),
                                    format!(
                                        "count = {} but `{}` names {k} nodes; give one or the other; {NEXT}",
                                        cnt.get_ref(),
                                        n.name.get_ref()
                                    ),
                                );
                                continue;
                            }
                            k
                        }
                        (None, None) => {
                            c.err(
                                n.name.span(),
                                format!(
                                    "`{}` is open-ended; add `count = N` or close the range (`[03:20]`); {NEXT}",
                                    n.name.get_ref()
                                ),
                            );
                            continue;
                        }
                    };
                    if count < 1 {
                        let span = n.count.as_ref().map(|c| c.span()).unwrap_or(n.name.span());
                        c.err(span, format!("`{}` expands to no node (count {count}); {NEXT}", n.name.get_ref()));
                        continue;
                    }
                    if count > MAX_NODES as i128 {
                        let span = n.count.as_ref().map(|c| c.span()).unwrap_or(n.name.span());
                        c.err(
                            span,
                            format!(
                                "`{}` expands to {count} nodes, more than kiln's limit of {MAX_NODES}; {NEXT}",
                                n.name.get_ref()
                            ),
                        );
                        continue;
                    }
                    (0..count as u64)
                        .map(|i| format!("{}{:0width$}{}", pattern.prefix, first + i, pattern.suffix, width = *width))
                        .collect()
                }
            };
            if role == Role::Init {
                if expanded.len() != 1 {
                    c.err(
                        n.name.span(),
                        format!(
                            "the init node must be one node, but `{}` expands to {}; {NEXT}",
                            n.name.get_ref(),
                            expanded.len()
                        ),
                    );
                    continue;
                }
                inits.push(n.role.span());
            }
            if let Some(bad) = expanded.iter().find(|s| RESERVED_NAMES.contains(&s.as_str())) {
                c.err(
                    n.name.span(),
                    format!("node name `{bad}` means the machine itself to every resolver (RFC 6761); give the node its own name; {NEXT}"),
                );
                continue;
            }
            if let Some(bad) = expanded.iter().find(|s| !is_node_name(s)) {
                c.err(
                    n.name.span(),
                    format!("node name `{bad}` is not a DNS label (lowercase letters, digits and `-`, at most 63, no `-` at either end); {NEXT}"),
                );
                continue;
            }
            if let Some(k) = &n.ca_keys {
                match (role.is_control_plane(), *k.get_ref()) {
                    (false, true) => {
                        c.err(k.span(), format!("`{}` is a worker (role join): workers never receive CA keys; remove ca_keys or make it a control-plane; {NEXT}", n.name.get_ref()));
                        continue;
                    }
                    (true, false) => {
                        c.err(k.span(), format!("`{}` is a control plane: it needs the CA keys (kiln does not use --upload-certs); remove ca_keys; {NEXT}", n.name.get_ref()));
                        continue;
                    }
                    _ => {}
                }
            }
            let address = match &n.address {
                Some(a) => match parse_cidr(a.get_ref()) {
                    Ok(addr) => {
                        let mut v = Vec::new();
                        for i in 0..expanded.len() as u64 {
                            match addr.nth(i) {
                                Some(x) => v.push(x),
                                None => break,
                            }
                        }
                        if v.len() != expanded.len() {
                            c.err(
                                a.span(),
                                format!(
                                    "address {}: `{}` needs {} consecutive host addresses from here but subnet /{} runs out after {}; start lower or use a larger subnet; {NEXT}",
                                    a.get_ref(), n.name.get_ref(), expanded.len(), addr.prefix, v.len()
                                ),
                            );
                            continue;
                        }
                        Some((v, a.span()))
                    }
                    Err(m) => {
                        c.err(a.span(), format!("address {m}; {NEXT}"));
                        continue;
                    }
                },
                None => None,
            };
            let gateway = match &n.gateway {
                Some(g) => check_ip(&mut c, g, "gateway").map(|ip| (ip, g.span())),
                None => def_gw.map(|ip| (ip, d.gateway.as_ref().map(|g| g.span()).unwrap_or(0..0))),
            };
            if let (Some((addrs0, aspan)), Some((gw, _))) = (&address, &gateway) {
                if let Some(a) = addrs0.iter().find(|a| a.ip == *gw) {
                    c.err(
                        aspan.clone(),
                        format!("address {a} is the gateway's ({gw}); give the node an address of its own; {NEXT}"),
                    );
                    continue;
                }
                if let Some(first) = addrs0.first() {
                    if !first.contains(*gw) {
                        let span = n.gateway.as_ref().or(d.gateway.as_ref()).map(|g| g.span()).unwrap_or(aspan.clone());
                        c.err(span, format!("gateway {gw} is not in {first}'s subnet; {NEXT}"));
                        continue;
                    }
                }
            }
            let dns = match &n.dns {
                Some(l) => check_ips(&mut c, l),
                None => def_dns.clone(),
            };
            let interface = match &n.interface {
                Some(s) => check_iface(&mut c, s),
                None => def_iface.clone(),
            }
            .unwrap_or_else(|| "eth0".into());
            let wifi = match &n.wifi {
                Some(w) => check_wifi_at(&mut c, w),
                None => def_wifi.clone(),
            };
            let admin_user = match &n.admin_user {
                Some(s) => check_user(&mut c, s),
                None => def_user.clone(),
            };
            let keys = match &n.ssh_authorized_keys {
                Some(k) => {
                    let keys = check_keys(&mut c, k);
                    if admin_user.is_none() {
                        c.err(
                            k.span(),
                            format!("ssh_authorized_keys without admin_user: name the user the keys log in as; {NEXT}"),
                        );
                    }
                    keys
                }
                None => def_keys.clone(),
            };
            let mac = match &n.mac {
                Some(m) if expanded.len() != 1 => {
                    c.err(m.span(), format!("`{}` is a range of {} nodes but gives one mac: each machine has its own; give each node its own [[node]] with its mac; {NEXT}", n.name.get_ref(), expanded.len()));
                    continue;
                }
                Some(m) => match parse_mac(m.get_ref().trim()) {
                    Ok(v) => Some((v, m.span())),
                    Err(e) => {
                        c.err(m.span(), format!("mac {e}; {NEXT}"));
                        continue;
                    }
                },
                None => None,
            };
            for (i, name) in expanded.iter().enumerate() {
                if let Some(prev) = names.get(name) {
                    let (l, col) = location::line_col(text, prev.start);
                    c.err(
                        n.name.span(),
                        format!("node `{name}` is defined twice (first at line {l}, column {col}); rename one; {NEXT}"),
                    );
                    break;
                }
                names.insert(name.clone(), n.name.span());
                let addr = address.as_ref().map(|(v, _)| v[i]);
                if let (Some(a), Some((_, aspan))) = (addr, &address) {
                    if let Some((other, at)) = addrs.get(&a.ip) {
                        let (l, col) = location::line_col(text, *at);
                        c.err(
                            aspan.clone(),
                            format!(
                                "address {} of `{name}` is already `{other}`'s (line {l}, column {col}); {NEXT}",
                                a.ip
                            ),
                        );
                        break;
                    }
                    addrs.insert(a.ip, (name.clone(), aspan.start));
                }
                if let Some((m, mspan)) = &mac {
                    if let Some((other, at)) = macs.get(m) {
                        let (l, col) = location::line_col(text, *at);
                        c.err(
                            mspan.clone(),
                            format!("mac {m} of `{name}` is already `{other}`'s (line {l}, column {col}): two nodes cannot be one machine (kubeadm requires a unique MAC per node); fix the one copied wrong; {NEXT}"),
                        );
                        break;
                    }
                    macs.insert(m.clone(), (name.clone(), mspan.start));
                }
                nodes.push(FleetNode {
                    name: name.clone(),
                    role,
                    address: addr,
                    gateway: gateway.as_ref().map(|g| g.0),
                    dns: dns.clone(),
                    interface: interface.clone(),
                    wifi: wifi.clone(),
                    admin_user: admin_user.clone(),
                    ssh_authorized_keys: keys.clone(),
                    mac: mac.as_ref().map(|m| m.0.clone()),
                });
            }
        }
        if nodes.len() > MAX_NODES {
            c.err(
                0..0,
                format!("the fleet has {} nodes, more than kiln's limit of {MAX_NODES}; split it; {NEXT}", nodes.len()),
            );
        }
        if !doc.node.is_empty() && c.errors.is_empty() {
            match inits.len() {
                0 => c.err(
                    doc.node[0].get_ref().role.span(),
                    format!("no node has role = \"init\": exactly one node runs `kubeadm init`; make one the init node; {NEXT}"),
                ),
                1 => {}
                _ => {
                    let (l, col) = location::line_col(text, inits[0].start);
                    c.err(inits[1].clone(), format!("a second init node (the first is at line {l}, column {col}): exactly one node runs `kubeadm init`; make this one control-plane; {NEXT}"));
                }
            }
        }
        if let (true, Ok(cl)) = (c.errors.is_empty(), &loaded) {
            if let Some(w) = check_endpoint(&mut c, &cl.file.control_plane_endpoint, &nodes, doc.cluster.span()) {
                warnings.push(w);
            }
        }
        if !c.errors.is_empty() {
            return Err(Error::config(c.errors.join("\n")));
        }
        Ok(Fleet { path: path.to_path_buf(), cluster_dir, image, bmap, nodes, warnings })
    }

    /// The node named `name`, or a config error listing close names.
    pub fn node(&self, name: &str) -> Result<&FleetNode> {
        self.nodes.iter().find(|n| n.name == name).ok_or_else(|| {
            let hint = location::suggest(name, self.nodes.iter().map(|n| n.name.as_str()))
                .map(|s| format!(" (did you mean `{s}`?)"))
                .unwrap_or_default();
            Error::config(format!(
                "node `{name}` is not in {}{hint}; `kiln fleet check {}` lists the nodes",
                self.path.display(),
                self.path.display()
            ))
        })
    }

    /// Nodes selected by names or range patterns (`pi-[03:05]`); all nodes when empty.
    pub fn select(&self, wanted: &[String]) -> Result<Vec<&FleetNode>> {
        if wanted.is_empty() {
            return Ok(self.nodes.iter().collect());
        }
        let mut out = Vec::new();
        for w in wanted {
            let p = parse_pattern(w).map_err(|m| Error::config(format!("--node {m}")))?;
            match p.range {
                None => out.push(self.node(w)?),
                Some((first, last, width)) => {
                    let last =
                        last.ok_or_else(|| Error::config(format!("--node {w}: close the range, e.g. `pi-[03:05]`")))?;
                    for i in first..=last {
                        out.push(self.node(&format!("{}{:0width$}{}", p.prefix, i, p.suffix, width = width))?);
                    }
                }
            }
        }
        Ok(out)
    }

    /// Loads the fleet's cluster.
    pub fn cluster(&self) -> Result<Cluster> {
        Cluster::load(&self.cluster_dir)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns() {
        let p = parse_pattern("pi-[03:20]").unwrap();
        assert_eq!(p.range, Some((3, Some(20), 2)));
        assert!(parse_pattern("pi-[03:20").is_err());
        assert!(parse_pattern("pi-[a:3]").is_err());
        assert_eq!(parse_pattern("pi-01").unwrap().range, None);
    }

    #[test]
    fn addresses_step_within_subnet() {
        let a = parse_cidr("192.168.1.253/24").unwrap();
        assert_eq!(a.nth(1).unwrap().ip.to_string(), "192.168.1.254");
        assert!(a.nth(2).is_none());
        assert!(parse_cidr("10.0.0.1").is_err());
        assert!(parse_cidr("10.0.0.1/33").is_err());
        assert!(parse_cidr("fd00::5/64").unwrap().contains("fd00::1".parse().unwrap()));
    }
}
