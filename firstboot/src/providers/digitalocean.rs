//! DigitalOcean: `/metadata/v1.json`; the node IP is the private interface's
//! address, never the public anchor IP (kubeadm troubleshooting).

use super::{hostname, node_ip, public_ip, role, value, Metadata, Provider};
use crate::http::{self, Policy};

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::contract::node::Role;

    use crate::providers::test_support::fast;
    use kiln_testkit::http::{Reply, Request, Server};

    #[test]
    fn digitalocean_uses_the_private_interface_not_the_anchor_ip() {
        let s = Server::start(|r: &Request| match r.path() {
            "/metadata/v1.json" => Reply::ok(
                r#"{"droplet_id":123,"hostname":"do-1","region":"ams3","user_data":"[node]\nrole = \"join\"\n","tags":["kiln-role:join"],
                   "interfaces":{"public":[{"ipv4":{"ip_address":"203.0.113.7"},"anchor_ipv4":{"ip_address":"10.19.0.5"}}],
                                 "private":[{"ipv4":{"ip_address":"10.110.0.3"}}]}}"#,
            ),
            _ => Reply::status(404),
        });
        let m = DigitalOcean { base: s.url().into() }.fetch(&fast()).unwrap();
        assert_eq!(m.private_ipv4.as_deref(), Some("10.110.0.3"));
        assert_eq!(m.public_ipv4.as_deref(), Some("203.0.113.7"));
        assert_eq!(m.instance_id.as_deref(), Some("123"));
        assert_eq!(m.role, Some(Role::Join));
    }
}
