//! `kiln-firstboot plan` resolving a node from a metadata service (AWS IMDSv2
//! on loopback). Each provider's own tests, against a loopback server that
//! speaks its real protocol and refuses requests that break it, are beside it
//! in `firstboot/src/providers/`.

/// `s`, gzip-compressed (EC2 user-data may be).
fn gzip(s: &str) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    std::io::Write::write_all(&mut e, s.as_bytes()).unwrap();
    e.finish().unwrap()
}

/// The user-data the metadata service serves.
const NODE_TOML: &str = "[node]\nrole = \"join\"\n[cluster]\ncontrol_plane_endpoint = \"10.0.0.1:6443\"\n";

#[test]
fn plan_resolves_the_node_from_aws_metadata() {
    let (s, _) = kiln_testkit::imds::aws(u32::MAX - 1, gzip(NODE_TOML));
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
