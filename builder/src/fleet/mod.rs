//! Raspberry Pi fleets: `fleet.toml`, per-node personalisation of one card
//! image, and careful card writes.
//!
//! * [`Fleet::load`] (in `check.rs`) parses and checks a `fleet.toml` (strict: unknown keys,
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

mod check;
pub mod device;
pub mod flash;
pub mod images;
pub mod personalise;

use crate::cluster::Cluster;
use crate::error::{Error, Result};
use crate::inputs::location;
use kiln_firstboot::contract::node::Role;
use serde::Deserialize;
use std::net::IpAddr;
use std::path::PathBuf;

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
/// ([`kiln_firstboot::contract::validate::names::admin_user`]), so a fleet never writes a name the node refuses.
pub fn is_user_name(s: &str) -> bool {
    kiln_firstboot::contract::validate::names::admin_user(s).is_ok()
}

/// A parsed name pattern: `prefix[first:last]suffix` or a plain name.
#[derive(Debug, Clone, PartialEq, Eq)]
struct NamePattern {
    prefix: String,
    suffix: String,
    /// (first, last or open, zero-pad width).
    range: Option<(u64, Option<u64>, usize)>,
}

/// Parses a node name or `prefix[first:last]suffix` range (`last` may be open).
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

/// One `ssh_authorized_keys` entry: a public key line (`type base64 [comment]`)
/// whose body names its type, no longer than [`MAX_SSH_KEY_BYTES`].
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

/// A `wifi` table a Pi can join with: SSID, WPA passphrase and country rules.
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

impl Fleet {
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
