//! Metadata providers, one per platform behind one trait (coreos/afterburn is
//! the model). Each yields what its platform has; base URLs are overridable so
//! tests point them at loopback servers speaking the real protocols.

use crate::contract::node::Role;
use crate::http::{self, escape, Error, Policy};
use crate::sources::{read_capped, under, Machine};
use crate::validate;

/// Largest IMDSv2 session token accepted (AWS's are about 56 bytes).
pub const MAX_TOKEN: usize = 4 << 10;

/// What a platform says about this machine.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Metadata {
    /// Platform instance id.
    pub instance_id: Option<String>,
    /// Hostname the platform assigned.
    pub hostname: Option<String>,
    /// Private IPv4 (never DigitalOcean's anchor IP).
    pub private_ipv4: Option<String>,
    /// Public IPv4.
    pub public_ipv4: Option<String>,
    /// Private IPv6.
    pub private_ipv6: Option<String>,
    /// Region.
    pub region: Option<String>,
    /// Zone.
    pub zone: Option<String>,
    /// User-data bytes (may be gzip).
    pub user_data: Option<Vec<u8>>,
    /// Role from a `kiln-role` tag or attribute.
    pub role: Option<Role>,
}

/// A metadata source.
pub trait Provider {
    /// Platform id (`aws`, `gcp`, …).
    fn name(&self) -> &'static str;
    /// Reads the metadata.
    fn fetch(&self, p: &Policy) -> Result<Metadata, String>;
}

fn text(r: Result<http::Response, Error>, what: &str) -> Result<Option<String>, String> {
    match r {
        Ok(r) => value(Some(String::from_utf8_lossy(&r.body).trim().to_string()), what),
        Err(Error::NotFound) => Ok(None),
        Err(e) => Err(format!("{what}: {e}")),
    }
}

/// A metadata value: empty is absent; a control character is refused.
fn value(v: Option<String>, what: &str) -> Result<Option<String>, String> {
    match v.filter(|s| !s.is_empty()) {
        Some(s) if s.chars().any(char::is_control) => {
            Err(format!("{what}: the value {} carries a control character", escape(&s)))
        }
        v => Ok(v),
    }
}

/// A hostname the platform assigned: an RFC 1123 DNS name is at most 253 characters
/// and each label at most 63 (RFC 1123 section 2.1, RFC 1035 section 2.3.4; what a
/// Node name must be, `validation.IsDNS1123Subdomain`). A longer one is refused, not
/// cut to fit (a cut name can collide with another node's).
fn hostname(v: Option<String>, what: &str) -> Result<Option<String>, String> {
    let Some(h) = value(v, what)? else { return Ok(None) };
    let name = h.trim_end_matches('.');
    let long_label = name.split('.').map(|l| l.chars().count()).max().unwrap_or(0);
    if name.chars().count() > 253 || long_label > 63 {
        let shown: String = h.chars().take(40).collect();
        return Err(format!(
            "{what}: the platform's hostname ({}... , {} characters, longest label {long_label}) is longer than a DNS name may be (RFC 1123: 253 characters, labels 63); set [node] name in user-data, or fix the instance's hostname",
            escape(&shown),
            h.chars().count()
        ));
    }
    Ok(Some(h))
}

/// A private address: it becomes kubelet's `--node-ip`, so it is checked as one
/// (`validate::endpoint::node_ip`) where it is read, and kept in canonical form.
fn node_ip(v: Option<String>, what: &str) -> Result<Option<String>, String> {
    value(v, what)?
        .map(|s| validate::endpoint::node_ip(&s).map(|ip| ip.to_string()).map_err(|e| format!("{what}: {e}")))
        .transpose()
}

/// A public address: one IP address, nothing else.
fn public_ip(v: Option<String>, what: &str) -> Result<Option<String>, String> {
    value(v, what)?
        .map(|s| {
            s.parse::<std::net::IpAddr>()
                .map(|ip| ip.to_string())
                .map_err(|_| format!("{what}: {} is not an IP address", escape(&s)))
        })
        .transpose()
}

/// A `kiln-role` tag or attribute: absent, or a role; anything else is an error
/// (a typo must not turn a control plane into a worker silently).
fn role(v: Option<String>, what: &str) -> Result<Option<Role>, String> {
    match value(v, what)? {
        None => Ok(None),
        Some(r) => Role::parse(&r)
            .map(Some)
            .ok_or_else(|| format!("{what}: {} is not a role; use init, control-plane or join", escape(&r))),
    }
}

fn bytes(r: Result<http::Response, Error>, what: &str) -> Result<Option<Vec<u8>>, String> {
    match r {
        Ok(r) => Ok(Some(r.body).filter(|b| !b.is_empty())),
        Err(Error::NotFound) => Ok(None),
        Err(e) => Err(format!("{what}: {e}")),
    }
}

/// AWS EC2 with IMDSv2: a session token from `PUT /latest/api/token`, then the
/// token header on every GET; a 401 means the token expired and is refreshed.
pub struct Aws {
    /// Base URL (default `http://169.254.169.254`).
    pub base: String,
}

impl Aws {
    fn token(&self, p: &Policy) -> Result<String, String> {
        let p = Policy { max_body: MAX_TOKEN, ..p.clone() };
        let r = http::request(
            "PUT",
            &format!("{}/latest/api/token", self.base),
            &[("X-aws-ec2-metadata-token-ttl-seconds", "21600")],
            &p,
        )
        .map_err(|e| format!("IMDSv2 token (at most {} KiB): {e}", MAX_TOKEN >> 10))?;
        let token = String::from_utf8_lossy(&r.body).trim().to_string();
        if token.is_empty() || !token.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(
                "IMDSv2 token: the service answered with an empty token or one holding a space, a control character or non-ASCII; refused (it would inject request headers)".into(),
            );
        }
        Ok(token)
    }
    fn get(&self, token: &mut String, path: &str, p: &Policy) -> Result<http::Response, Error> {
        let url = format!("{}/latest/{path}", self.base);
        match http::request("GET", &url, &[("X-aws-ec2-metadata-token", token.as_str())], p) {
            Err(Error::Status(401)) => {
                *token = self.token(p).map_err(Error::GaveUp)?;
                http::request("GET", &url, &[("X-aws-ec2-metadata-token", token.as_str())], p)
            }
            r => r,
        }
    }
}

impl Provider for Aws {
    fn name(&self) -> &'static str {
        "aws"
    }
    fn fetch(&self, p: &Policy) -> Result<Metadata, String> {
        let p = &p.started();
        let mut t = self.token(p)?;
        let mut m = Metadata::default();
        let mut g = |path: &str| text(self.get(&mut t, path, p), path);
        m.instance_id = g("meta-data/instance-id")?;
        m.hostname = hostname(g("meta-data/local-hostname")?, "meta-data/local-hostname")?;
        m.private_ipv4 = node_ip(g("meta-data/local-ipv4")?, "meta-data/local-ipv4")?;
        m.public_ipv4 = public_ip(g("meta-data/public-ipv4")?, "meta-data/public-ipv4")?;
        m.region = g("meta-data/placement/region")?;
        m.zone = g("meta-data/placement/availability-zone")?;
        m.role = role(g("meta-data/tags/instance/kiln-role")?, "meta-data/tags/instance/kiln-role")?;
        m.user_data = bytes(self.get(&mut t, "user-data", p), "user-data")?;
        Ok(m)
    }
}

/// Google Compute Engine: `Metadata-Flavor: Google` on every request, and the
/// answer must carry it too (it proves the metadata server answered).
pub struct Gcp {
    /// Base URL (default `http://169.254.169.254`).
    pub base: String,
}

impl Provider for Gcp {
    fn name(&self) -> &'static str {
        "gcp"
    }
    fn fetch(&self, p: &Policy) -> Result<Metadata, String> {
        let p = &p.started();
        let get = |path: &str| -> Result<http::Response, Error> {
            let r = http::request(
                "GET",
                &format!("{}/computeMetadata/v1/instance/{path}", self.base),
                &[("Metadata-Flavor", "Google")],
                p,
            )?;
            if r.header("metadata-flavor") != Some("Google") {
                return Err(Error::GaveUp(format!(
                    "{path}: the answer lacks Metadata-Flavor: Google; not a GCE metadata server"
                )));
            }
            Ok(r)
        };
        let mut m = Metadata::default();
        m.instance_id = text(get("id"), "id")?;
        m.hostname = hostname(text(get("hostname"), "hostname")?, "hostname")?;
        m.private_ipv4 = node_ip(text(get("network-interfaces/0/ip"), "ip")?, "network-interfaces/0/ip")?;
        m.zone = text(get("zone"), "zone")?.map(|z| z.rsplit('/').next().unwrap_or(&z).to_string());
        m.region = m.zone.as_ref().and_then(|z| z.rsplit_once('-').map(|(r, _)| r.to_string()));
        m.user_data = bytes(get("attributes/user-data"), "user-data")?;
        m.role = role(text(get("attributes/kiln-role"), "kiln-role")?, "attributes/kiln-role")?;
        Ok(m)
    }
}

/// Azure IMDS: `Metadata: true` and an `api-version` on every request;
/// userData is base64.
pub struct Azure {
    /// Base URL (default `http://169.254.169.254`).
    pub base: String,
}

impl Provider for Azure {
    fn name(&self) -> &'static str {
        "azure"
    }
    fn fetch(&self, p: &Policy) -> Result<Metadata, String> {
        let p = &p.started();
        let r = http::request(
            "GET",
            &format!("{}/metadata/instance?api-version=2021-02-01", self.base),
            &[("Metadata", "true")],
            p,
        )
        .map_err(|e| format!("instance: {e}"))?;
        let v: serde_json::Value = serde_json::from_slice(&r.body).map_err(|e| format!("instance document: {e}"))?;
        let s = |p: &str| value(v.pointer(p).and_then(|x| x.as_str()).map(str::to_string), p);
        let ip4 = "/network/interface/0/ipv4/ipAddress/0/";
        let mut m = Metadata {
            instance_id: s("/compute/vmId")?,
            hostname: hostname(s("/compute/name")?, "/compute/name")?,
            private_ipv4: node_ip(s(&format!("{ip4}privateIpAddress"))?, "privateIpAddress")?,
            public_ipv4: public_ip(s(&format!("{ip4}publicIpAddress"))?, "publicIpAddress")?,
            private_ipv6: node_ip(
                s("/network/interface/0/ipv6/ipAddress/0/privateIpAddress")?,
                "ipv6 privateIpAddress",
            )?,
            region: s("/compute/location")?,
            zone: s("/compute/zone")?,
            ..Metadata::default()
        };
        if let Some(tags) = v.pointer("/compute/tagsList").and_then(|t| t.as_array()) {
            let tag =
                tags.iter().find(|t| t["name"] == "kiln-role").map(|t| t["value"].as_str().unwrap_or("").to_string());
            m.role = role(tag, "tag kiln-role")?;
        }
        let ud = http::request(
            "GET",
            &format!("{}/metadata/instance/compute/userData?api-version=2021-01-01&format=text", self.base),
            &[("Metadata", "true")],
            p,
        );
        m.user_data = match bytes(ud, "userData")? {
            Some(b) => {
                use base64::Engine;
                let t = String::from_utf8_lossy(&b).trim().to_string();
                Some(
                    base64::engine::general_purpose::STANDARD
                        .decode(t)
                        .map_err(|e| format!("userData is not base64: {e}"))?,
                )
            }
            None => None,
        };
        Ok(m)
    }
}

/// DigitalOcean: `/metadata/v1.json`; the node IP is the private interface's
/// address, never the public anchor IP (kubeadm troubleshooting).
pub struct DigitalOcean {
    /// Base URL (default `http://169.254.169.254`).
    pub base: String,
}

impl Provider for DigitalOcean {
    fn name(&self) -> &'static str {
        "digitalocean"
    }
    fn fetch(&self, p: &Policy) -> Result<Metadata, String> {
        let p = &p.started();
        let r = http::request("GET", &format!("{}/metadata/v1.json", self.base), &[], p)
            .map_err(|e| format!("v1.json: {e}"))?;
        let v: serde_json::Value = serde_json::from_slice(&r.body).map_err(|e| format!("v1.json: {e}"))?;
        let raw = |p: &str| {
            v.pointer(p)
                .map(|x| x.as_str().map(str::to_string).unwrap_or_else(|| x.to_string()))
                .filter(|x| !x.is_empty() && x != "null")
        };
        let s = |p: &str| value(raw(p), p);
        let tag = v["tags"].as_array().and_then(|t| {
            t.iter().filter_map(|x| x.as_str()).find_map(|x| x.strip_prefix("kiln-role:").map(str::to_string))
        });
        Ok(Metadata {
            instance_id: s("/droplet_id")?,
            hostname: hostname(s("/hostname")?, "/hostname")?,
            private_ipv4: node_ip(s("/interfaces/private/0/ipv4/ip_address")?, "private ip_address")?,
            public_ipv4: public_ip(s("/interfaces/public/0/ipv4/ip_address")?, "public ip_address")?,
            region: s("/region")?,
            user_data: raw("/user_data").map(String::into_bytes),
            role: role(tag, "tag kiln-role")?,
            ..Metadata::default()
        })
    }
}

/// Hetzner Cloud: plain-text values under `/hetzner/v1/metadata/…`.
pub struct Hetzner {
    /// Base URL (default `http://169.254.169.254`).
    pub base: String,
}

impl Provider for Hetzner {
    fn name(&self) -> &'static str {
        "hetzner"
    }
    fn fetch(&self, p: &Policy) -> Result<Metadata, String> {
        let p = &p.started();
        let g = |path: &str| text(http::request("GET", &format!("{}/hetzner/v1/{path}", self.base), &[], p), path);
        Ok(Metadata {
            instance_id: g("metadata/instance-id")?,
            hostname: hostname(g("metadata/hostname")?, "metadata/hostname")?,
            public_ipv4: public_ip(g("metadata/public-ipv4")?, "metadata/public-ipv4")?,
            region: g("metadata/region")?,
            zone: g("metadata/availability-zone")?,
            user_data: bytes(http::request("GET", &format!("{}/hetzner/v1/userdata", self.base), &[], p), "userdata")?,
            ..Metadata::default()
        })
    }
}

/// OpenStack: the config drive (a filesystem labelled `config-2`, mounted or
/// given as a directory) first, then the metadata service over HTTP.
pub struct OpenStack {
    /// Base URL (default `http://169.254.169.254`).
    pub base: String,
    /// A mounted config drive, if present.
    pub config_drive: Option<std::path::PathBuf>,
}

impl Provider for OpenStack {
    fn name(&self) -> &'static str {
        "openstack"
    }
    fn fetch(&self, p: &Policy) -> Result<Metadata, String> {
        let p = &p.started();
        let (meta, user_data) = match &self.config_drive {
            Some(d) if d.join("openstack/latest/meta_data.json").is_file() => {
                let ud = d.join("openstack/latest/user_data");
                (
                    read_capped(&d.join("openstack/latest/meta_data.json"), p.max_body)?,
                    if ud.exists() { Some(read_capped(&ud, p.max_body)?) } else { None },
                )
            }
            _ => {
                let r = http::request("GET", &format!("{}/openstack/latest/meta_data.json", self.base), &[], p)
                    .map_err(|e| format!("meta_data.json: {e}"))?;
                (
                    r.body,
                    bytes(
                        http::request("GET", &format!("{}/openstack/latest/user_data", self.base), &[], p),
                        "user_data",
                    )?,
                )
            }
        };
        let v: serde_json::Value = serde_json::from_slice(&meta).map_err(|e| format!("meta_data.json: {e}"))?;
        let s = |k: &str| value(v[k].as_str().map(str::to_string), k);
        let tag = v["meta"].get("kiln-role").map(|r| r.as_str().unwrap_or("").to_string());
        Ok(Metadata {
            instance_id: s("uuid")?,
            hostname: hostname(s("hostname")?, "hostname")?,
            zone: s("availability_zone")?,
            role: role(tag, "meta kiln-role")?,
            user_data,
            ..Metadata::default()
        })
    }
}

/// The platform: `kiln.platform=`/`ignition.platform.id=`, else DMI, else none.
pub fn detect(m: &Machine) -> Option<String> {
    if let Some(p) = m.platform() {
        return Some(p);
    }
    let dmi = |f: &str| {
        std::fs::read_to_string(under(&m.root, &format!("/sys/class/dmi/id/{f}")))
            .unwrap_or_default()
            .trim()
            .to_string()
    };
    let (vendor, product, asset) = (dmi("sys_vendor"), dmi("product_name"), dmi("chassis_asset_tag"));
    if vendor.contains("Amazon") || product.contains("EC2") {
        Some("aws".into())
    } else if vendor.contains("Google") {
        Some("gcp".into())
    } else if asset == "7783-7084-3265-9085-8269-3286-77" {
        // Azure's chassis asset tag (cloud-init's DataSourceAzure uses the same).
        Some("azure".into())
    } else if vendor.contains("DigitalOcean") {
        Some("digitalocean".into())
    } else if vendor.contains("Hetzner") {
        Some("hetzner".into())
    } else if product.contains("OpenStack") || vendor.contains("OpenStack") {
        Some("openstack".into())
    } else {
        None
    }
}

/// The provider for a platform id (`ec2` and `gce` are Ignition's names).
pub fn for_platform(platform: &str, base: Option<&str>, m: &Machine) -> Option<Box<dyn Provider>> {
    let base = base.unwrap_or("http://169.254.169.254").trim_end_matches('/').to_string();
    Some(match platform {
        "aws" | "ec2" => Box::new(Aws { base }),
        "gcp" | "gce" => Box::new(Gcp { base }),
        "azure" => Box::new(Azure { base }),
        "digitalocean" => Box::new(DigitalOcean { base }),
        "hetzner" => Box::new(Hetzner { base }),
        "openstack" => Box::new(OpenStack { base, config_drive: Some(under(&m.root, "/media/configdrive")) }),
        _ => return None,
    })
}
