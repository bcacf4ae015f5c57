//! AWS EC2 with IMDSv2: a session token from `PUT /latest/api/token`, then the
//! token header on every GET; a 401 means the token expired and is refreshed.

use super::{bytes, hostname, node_ip, public_ip, role, text, Metadata, Provider};
use crate::http::{self, Error, Policy};

/// Largest IMDSv2 session token accepted (AWS's are about 56 bytes).
pub const MAX_TOKEN: usize = 4 << 10;

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::contract::node::Role;

    use crate::providers::test_support::{fast, gzip, NODE_TOML};

    use std::sync::atomic::Ordering;

    use std::time::Duration;

    #[test]
    fn aws_imdsv2_token_flow_and_refresh_on_401() {
        let (s, tokens) = kiln_testkit::imds::aws(2, gzip(NODE_TOML));
        let m = Aws { base: s.url().into() }.fetch(&fast()).unwrap();
        assert_eq!(m.instance_id.as_deref(), Some("i-0abc"));
        assert_eq!(m.private_ipv4.as_deref(), Some("10.0.0.5"));
        assert_eq!(m.region.as_deref(), Some("eu-west-1"));
        assert_eq!(m.role, Some(Role::ControlPlane));
        assert_eq!(m.public_ipv4, None, "404 means absent");
        let ud = crate::contract::node::NodeConfig::parse(m.user_data.as_deref().unwrap()).unwrap();
        assert_eq!(ud.role(), Some(Role::Join));
        assert!(tokens.load(Ordering::SeqCst) >= 2, "a 401 must refresh the token");
        // Every GET carried a token header.
        assert!(s
            .log()
            .iter()
            .filter(|(r, _)| r.method == "GET")
            .all(|(r, _)| r.header("x-aws-ec2-metadata-token").is_some()));
        // A GET without the token is refused by this server (the check can fail).
        assert_eq!(
            crate::http::once("GET", &format!("{}/latest/meta-data/instance-id", s.url()), &[], Duration::from_secs(1))
                .unwrap()
                .status,
            401
        );
    }
}
