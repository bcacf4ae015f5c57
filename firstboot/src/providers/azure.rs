//! Azure IMDS: `Metadata: true` and an `api-version` on every request;
//! userData is base64.

use super::{bytes, hostname, node_ip, public_ip, role, value, Metadata, Provider};
use crate::http::{self, Policy};

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::contract::node::Role;

    use crate::providers::test_support::{fast, NODE_TOML};
    use kiln_testkit::http::{Reply, Request, Server};

    use std::time::Duration;

    #[test]
    fn azure_requires_metadata_header_and_api_version() {
        use base64::Engine;
        let ud = base64::engine::general_purpose::STANDARD.encode(NODE_TOML);
        let s = Server::start(move |r: &Request| {
            if r.header("metadata") != Some("true") || !r.target.contains("api-version=") {
                return Reply::status(400);
            }
            match r.path() {
                "/metadata/instance" => Reply::ok(
                    r#"{"compute":{"vmId":"vm-1","name":"az-node-1","location":"westeurope","zone":"2","tagsList":[{"name":"kiln-role","value":"join"}]},
                       "network":{"interface":[{"ipv4":{"ipAddress":[{"privateIpAddress":"10.1.0.4","publicIpAddress":"20.1.2.3"}]},"ipv6":{"ipAddress":[]}}]}}"#,
                ),
                "/metadata/instance/compute/userData" => Reply::ok(ud.clone()),
                _ => Reply::status(404),
            }
        });
        let m = Azure { base: s.url().into() }.fetch(&fast()).unwrap();
        assert_eq!(m.instance_id.as_deref(), Some("vm-1"));
        assert_eq!(m.private_ipv4.as_deref(), Some("10.1.0.4"));
        assert_eq!(m.public_ipv4.as_deref(), Some("20.1.2.3"));
        assert_eq!(m.role, Some(Role::Join));
        assert_eq!(m.user_data.as_deref(), Some(NODE_TOML.as_bytes()));
        assert_eq!(
            crate::http::once(
                "GET",
                &format!("{}/metadata/instance", s.url()),
                &[("Metadata", "true")],
                Duration::from_secs(1)
            )
            .unwrap()
            .status,
            400
        );
    }
}
