//! Every metadata provider against a loopback server that speaks its real
//! protocol and refuses requests that break it, plus faults.

use kiln_firstboot::contract::node::Role;
use kiln_firstboot::http::Policy;
use kiln_firstboot::provider::{Aws, Azure, DigitalOcean, Gcp, Hetzner, OpenStack, Provider};
use kiln_testkit::http::{Reply, Request, Server};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn fast() -> Policy {
    Policy {
        timeout: Duration::from_millis(800),
        attempts: 4,
        backoff: Duration::from_millis(20),
        total: Duration::from_secs(5),
        ..Policy::default()
    }
}

fn gzip(s: &str) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    std::io::Write::write_all(&mut e, s.as_bytes()).unwrap();
    e.finish().unwrap()
}

const NODE_TOML: &str = "[node]\nrole = \"join\"\n[cluster]\ncontrol_plane_endpoint = \"10.0.0.1:6443\"\n";

/// IMDSv2: a token from PUT, then the token on every GET; the token rotates
/// after `rotate_after` GETs (old token → 401).
fn aws_server(rotate_after: u32) -> (Server, Arc<AtomicU32>) {
    let gets = Arc::new(AtomicU32::new(0));
    let tokens = Arc::new(AtomicU32::new(0));
    let (g, t) = (Arc::clone(&gets), Arc::clone(&tokens));
    let server = Server::start(move |r: &Request| {
        if r.method == "PUT" && r.path() == "/latest/api/token" {
            if r.header("x-aws-ec2-metadata-token-ttl-seconds").is_none() {
                return Reply::status(400);
            }
            let n = t.fetch_add(1, Ordering::SeqCst) + 1;
            return Reply::ok(format!("token-{n}"));
        }
        let current = format!("token-{}", t.load(Ordering::SeqCst));
        let n = g.fetch_add(1, Ordering::SeqCst) + 1;
        if r.header("x-aws-ec2-metadata-token") != Some(current.as_str())
            || (n == rotate_after + 1 && t.load(Ordering::SeqCst) == 1)
        {
            if n == rotate_after + 1 {
                t.fetch_add(1, Ordering::SeqCst); // the service rotated: the old token is refused
            }
            return Reply::status(401);
        }
        match r.path() {
            "/latest/meta-data/instance-id" => Reply::ok("i-0abc"),
            "/latest/meta-data/local-hostname" => Reply::ok("ip-10-0-0-5.eu-west-1.compute.internal"),
            "/latest/meta-data/local-ipv4" => Reply::ok("10.0.0.5"),
            "/latest/meta-data/placement/region" => Reply::ok("eu-west-1"),
            "/latest/meta-data/placement/availability-zone" => Reply::ok("eu-west-1a"),
            "/latest/meta-data/tags/instance/kiln-role" => Reply::ok("control-plane"),
            "/latest/user-data" => Reply::ok(gzip(NODE_TOML)),
            _ => Reply::status(404),
        }
    });
    (server, tokens)
}

#[test]
fn aws_imdsv2_token_flow_and_refresh_on_401() {
    let (s, tokens) = aws_server(2);
    let m = Aws { base: s.url().into() }.fetch(&fast()).unwrap();
    assert_eq!(m.instance_id.as_deref(), Some("i-0abc"));
    assert_eq!(m.private_ipv4.as_deref(), Some("10.0.0.5"));
    assert_eq!(m.region.as_deref(), Some("eu-west-1"));
    assert_eq!(m.role, Some(Role::ControlPlane));
    assert_eq!(m.public_ipv4, None, "404 means absent");
    let ud = kiln_firstboot::contract::node::NodeConfig::parse(m.user_data.as_deref().unwrap()).unwrap();
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
        kiln_firstboot::http::once(
            "GET",
            &format!("{}/latest/meta-data/instance-id", s.url()),
            &[],
            Duration::from_secs(1)
        )
        .unwrap()
        .status,
        401
    );
}

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
        kiln_firstboot::http::once(
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
        kiln_firstboot::http::once(
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
    let m =
        OpenStack { base: "http://127.0.0.1:9".into(), config_drive: Some(d.path().into()) }.fetch(&fast()).unwrap();
    assert_eq!(m.instance_id.as_deref(), Some("drive-1"));
}

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
    let e =
        kiln_firstboot::http::request("GET", &format!("{}/hetzner/v1/metadata/slow", s.url()), &[], &p).unwrap_err();
    assert!(t.elapsed() < Duration::from_millis(2500), "{:?}", t.elapsed());
    assert!(matches!(e, kiln_firstboot::http::Error::GaveUp(_)), "{e}");
    // A truncated body is an error (retried), never a short value.
    let e = kiln_firstboot::http::request("GET", &format!("{}/hetzner/v1/metadata/cut", s.url()), &[], &p).unwrap_err();
    assert!(e.to_string().contains("truncated"), "{e}");
    assert_eq!(s.hits("/hetzner/v1/metadata/cut"), 3);
    // 404 is final: one request.
    assert_eq!(
        kiln_firstboot::http::request("GET", &format!("{}/nope", s.url()), &[], &p).unwrap_err(),
        kiln_firstboot::http::Error::NotFound
    );
    assert_eq!(s.hits("/nope"), 1);
}

#[test]
fn plan_resolves_the_node_from_aws_metadata() {
    let (s, _) = aws_server(u32::MAX - 1);
    let d = tempfile::tempdir().unwrap();
    let root = d.path();
    let w = |rel: &str, text: &str| {
        let p = root.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    };
    w("etc/kiln/image.toml", "schema = 1\nprofile = \"t\"\nfamily = \"fcos\"\narch = \"amd64\"\nkubernetes_version = \"v1.34.2\"\nkubeadm_version = \"v1.34.2\"\nkubelet_version = \"v1.34.2\"\nbin_dir = \"/opt/bin\"\ncni_bin_dir = \"/opt/cni/bin\"\nflex_volume_dir = \"/opt/libexec/kubernetes/kubelet-plugins/volume/exec/\"\nruntime = \"containerd\"\nruntime_socket = \"unix:///run/containerd/containerd.sock\"\ncgroup_driver = \"systemd\"\n");
    w("etc/machine-id", "abc\n");
    w("etc/hostname", "localhost\n");
    w("proc/cmdline", "console=ttyS0 ignition.platform.id=aws");
    // /etc/kiln/node.toml (written by Ignition) completes the cluster facts.
    w(
        "etc/kiln/node.toml",
        "[cluster]\nbootstrap_token = \"abcdef.0123456789abcdef\"\nca_cert_hashes = [\"sha256:00\"]\n",
    );
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_kiln-firstboot"))
        .arg("--root")
        .arg(root)
        .args(["--metadata-url", s.url(), "plan"])
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{out}{}", String::from_utf8_lossy(&o.stderr));
    // Name from local-hostname, IP from local-ipv4, role: the tag says
    // control-plane but the user-data (a later source) says join.
    assert!(out.contains("node ip-10-0-0-5.eu-west-1.compute.internal (join) ip 10.0.0.5"), "{out}");
    assert!(out.contains("platform  aws") && out.contains("aws kiln-role tag < aws user-data <"), "{out}");
}

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
