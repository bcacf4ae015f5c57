//! OpenStack: the config drive (a filesystem labelled `config-2`, mounted or
//! given as a directory) first, then the metadata service over HTTP.

use super::{bytes, hostname, role, value, Metadata, Provider};
use crate::http::{self, Policy};
use crate::machine::paths::read_capped;

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::contract::node::Role;

    use crate::providers::hetzner::Hetzner;
    use crate::providers::test_support::{fast, NODE_TOML};
    use kiln_testkit::http::{Reply, Request, Server};

    #[test]
    fn hetzner_and_openstack() {
        let s = Server::start(|r: &Request| match r.path() {
            "/hetzner/v1/metadata/instance-id" => Reply::ok("777"),
            "/hetzner/v1/metadata/hostname" => Reply::ok("hz-1"),
            "/hetzner/v1/metadata/region" => Reply::ok("eu-central"),
            "/hetzner/v1/userdata" => Reply::ok(NODE_TOML),
            "/openstack/latest/meta_data.json" => {
                Reply::ok(r#"{"uuid":"u-1","hostname":"os-1","availability_zone":"nova","meta":{"kiln-role":"init"}}"#)
            }
            "/openstack/latest/user_data" => Reply::status(404),
            _ => Reply::status(404),
        });
        let m = Hetzner { base: s.url().into() }.fetch(&fast()).unwrap();
        assert_eq!((m.instance_id.as_deref(), m.hostname.as_deref()), (Some("777"), Some("hz-1")));
        assert!(m.user_data.is_some());
        let m = OpenStack { base: s.url().into(), config_drive: None }.fetch(&fast()).unwrap();
        assert_eq!(m.instance_id.as_deref(), Some("u-1"));
        assert_eq!(m.role, Some(Role::Init));
        assert_eq!(m.user_data, None, "404 user-data is absent, not an error");
        // The config drive wins over HTTP.
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(d.path().join("openstack/latest")).unwrap();
        std::fs::write(d.path().join("openstack/latest/meta_data.json"), r#"{"uuid":"drive-1","hostname":"os-d"}"#)
            .unwrap();
        std::fs::write(d.path().join("openstack/latest/user_data"), NODE_TOML).unwrap();
        let m = OpenStack { base: "http://127.0.0.1:9".into(), config_drive: Some(d.path().into()) }
            .fetch(&fast())
            .unwrap();
        assert_eq!(m.instance_id.as_deref(), Some("drive-1"));
    }
}
