//! Metadata providers, one per platform behind one trait (coreos/afterburn is
//! the model). Each yields what its platform has; base URLs are overridable so
//! tests point them at loopback servers speaking the real protocols.

pub mod aws;
pub mod azure;
pub mod digitalocean;
pub mod gcp;
pub mod hetzner;
pub mod openstack;

use crate::contract::node::Role;
use crate::http::{self, escape, Error, Policy};
use crate::machine::paths::under;
use crate::machine::Machine;
use crate::validate;

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
        "aws" | "ec2" => Box::new(aws::Aws { base }),
        "gcp" | "gce" => Box::new(gcp::Gcp { base }),
        "azure" => Box::new(azure::Azure { base }),
        "digitalocean" => Box::new(digitalocean::DigitalOcean { base }),
        "hetzner" => Box::new(hetzner::Hetzner { base }),
        "openstack" => {
            Box::new(openstack::OpenStack { base, config_drive: Some(under(&m.root, "/media/configdrive")) })
        }
        _ => return None,
    })
}

/// What the providers' tests share: a quick retry policy, gzip, a node.toml.
#[cfg(test)]
pub(crate) mod test_support {
    use crate::http::Policy;
    use std::time::Duration;

    /// A node.toml the loopback services serve as user-data.
    pub(crate) const NODE_TOML: &str =
        "[node]\nrole = \"join\"\n[cluster]\ncontrol_plane_endpoint = \"10.0.0.1:6443\"\n";

    /// A policy with short timeouts and backoff, so faults end quickly.
    pub(crate) fn fast() -> Policy {
        Policy {
            timeout: Duration::from_millis(800),
            attempts: 4,
            backoff: Duration::from_millis(20),
            total: Duration::from_secs(5),
            ..Policy::default()
        }
    }

    /// `s`, gzip-compressed (EC2 user-data may be).
    pub(crate) fn gzip(s: &str) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        std::io::Write::write_all(&mut e, s.as_bytes()).unwrap();
        e.finish().unwrap()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::providers::digitalocean::DigitalOcean;
    use crate::providers::gcp::Gcp;
    use crate::providers::test_support::fast;
    use kiln_testkit::http::{Reply, Request, Server};

    /// Issue 24 partial: a 900 KB hostname from GCP or DigitalOcean is refused with the
    /// RFC 1123 limits, not cut to 253 characters.
    #[test]
    fn a_hostname_longer_than_a_dns_name_is_refused() {
        let long = "a".repeat(900_000);
        let h = long.clone();
        let gcp = Server::start(move |r: &Request| match r.path() {
            "/computeMetadata/v1/instance/hostname" => Reply::ok(h.clone()).with("Metadata-Flavor", "Google"),
            _ => Reply::status(404).with("Metadata-Flavor", "Google"),
        });
        let e = Gcp { base: gcp.url().into() }.fetch(&fast()).unwrap_err();
        assert!(
            e.contains("hostname") && e.contains("253") && e.contains("63") && e.len() < 1000,
            "{}",
            &e[..e.len().min(400)]
        );
        let body =
            serde_json::json!({ "droplet_id": 1, "hostname": format!("{}.example.com", "b".repeat(64)) }).to_string();
        let digitalocean = Server::start(move |r: &Request| match r.path() {
            "/metadata/v1.json" => Reply::ok(body.clone()),
            _ => Reply::status(404),
        });
        let e = DigitalOcean { base: digitalocean.url().into() }.fetch(&fast()).unwrap_err();
        assert!(e.contains("hostname") && e.contains("labels 63"), "{e}");
    }
}
