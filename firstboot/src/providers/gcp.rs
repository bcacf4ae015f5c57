//! Google Compute Engine: `Metadata-Flavor: Google` on every request, and the
//! answer must carry it too (it proves the metadata server answered).

use super::{bytes, hostname, node_ip, role, text, Metadata, Provider};
use crate::http::{self, Error, Policy};

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::contract::node::Role;

    use crate::providers::test_support::{fast, NODE_TOML};
    use kiln_testkit::http::{Reply, Request, Server};

    use std::time::Duration;

    #[test]
    fn gcp_requires_metadata_flavor_both_ways() {
        let s = Server::start(|r: &Request| {
            if r.header("metadata-flavor") != Some("Google") {
                return Reply::status(403);
            }
            let body = match r.path() {
                "/computeMetadata/v1/instance/id" => "4242",
                "/computeMetadata/v1/instance/hostname" => "gke-node-1.c.proj.internal",
                "/computeMetadata/v1/instance/network-interfaces/0/ip" => "10.128.0.7",
                "/computeMetadata/v1/instance/zone" => "projects/123/zones/europe-west1-b",
                "/computeMetadata/v1/instance/attributes/kiln-role" => "init",
                "/computeMetadata/v1/instance/attributes/user-data" => NODE_TOML,
                _ => return Reply::status(404).with("Metadata-Flavor", "Google"),
            };
            Reply::ok(body).with("Metadata-Flavor", "Google")
        });
        let m = Gcp { base: s.url().into() }.fetch(&fast()).unwrap();
        assert_eq!(m.instance_id.as_deref(), Some("4242"));
        assert_eq!(m.zone.as_deref(), Some("europe-west1-b"));
        assert_eq!(m.region.as_deref(), Some("europe-west1"));
        assert_eq!(m.private_ipv4.as_deref(), Some("10.128.0.7"));
        assert_eq!(m.role, Some(Role::Init));
        assert_eq!(
            crate::http::once(
                "GET",
                &format!("{}/computeMetadata/v1/instance/id", s.url()),
                &[],
                Duration::from_secs(1)
            )
            .unwrap()
            .status,
            403
        );
        // A server that does not answer with the flavor header is not trusted.
        let impostor = Server::start(|_: &Request| Reply::ok("x"));
        assert!(Gcp { base: impostor.url().into() }.fetch(&fast()).unwrap_err().contains("Metadata-Flavor"));
    }
}
