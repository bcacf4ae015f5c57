//! Hetzner Cloud: plain-text values under `/hetzner/v1/metadata/…`.

use super::{bytes, hostname, public_ip, text, Metadata, Provider};
use crate::http::{self, Policy};

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

#[cfg(test)]
mod tests {
    use super::*;

    use crate::http::Policy;
    use crate::providers::test_support::fast;
    use kiln_testkit::http::{Reply, Request, Server};
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    #[test]
    fn faults_end_correctly_within_the_bound() {
        // 500, 500, then success.
        let n = Arc::new(AtomicU32::new(0));
        let c = Arc::clone(&n);
        let s = Server::start(move |r: &Request| match r.path() {
            "/hetzner/v1/metadata/instance-id" if c.fetch_add(1, Ordering::SeqCst) < 2 => Reply::status(500),
            "/hetzner/v1/metadata/instance-id" => Reply::ok("9"),
            "/hetzner/v1/metadata/slow" => Reply { stall: Some(Duration::from_secs(3)), ..Reply::ok("late") },
            "/hetzner/v1/metadata/cut" => Reply { truncate: Some(3), ..Reply::ok("truncated-body") },
            _ => Reply::status(404),
        });
        let m = Hetzner { base: s.url().into() }.fetch(&fast()).unwrap();
        assert_eq!(m.instance_id.as_deref(), Some("9"));
        assert_eq!(s.hits("/hetzner/v1/metadata/instance-id"), 3);
        // Slower than the per-request timeout: retried, then given up within the total bound.
        let p = Policy {
            timeout: Duration::from_millis(300),
            attempts: 3,
            backoff: Duration::from_millis(10),
            total: Duration::from_secs(2),
            ..Policy::default()
        };
        let t = Instant::now();
        let e = crate::http::request("GET", &format!("{}/hetzner/v1/metadata/slow", s.url()), &[], &p).unwrap_err();
        assert!(t.elapsed() < Duration::from_millis(2500), "{:?}", t.elapsed());
        assert!(matches!(e, crate::http::Error::GaveUp(_)), "{e}");
        // A truncated body is an error (retried), never a short value.
        let e = crate::http::request("GET", &format!("{}/hetzner/v1/metadata/cut", s.url()), &[], &p).unwrap_err();
        assert!(e.to_string().contains("truncated"), "{e}");
        assert_eq!(s.hits("/hetzner/v1/metadata/cut"), 3);
        // 404 is final: one request.
        assert_eq!(
            crate::http::request("GET", &format!("{}/nope", s.url()), &[], &p).unwrap_err(),
            crate::http::Error::NotFound
        );
        assert_eq!(s.hits("/nope"), 1);
    }
}
