//! `--root` containment of paths derived from input: the admin kubeconfig.

/// B14: the admin kubeconfig goes to the admin user's home under --root, and a
/// home that leaves the root is refused with a warning, nothing written outside.
#[test]
fn b14_admin_kubeconfig_path_stays_under_the_root() {
    use kiln_firstboot::machine::paths::{admin_kubeconfig, contained};
    let outer = tempfile::tempdir().unwrap();
    let root = outer.path().join("root");
    std::fs::create_dir_all(root.join("home/core")).unwrap();
    // A relative link that climbs out, and an absolute one (read from the root, as in a chroot).
    std::os::unix::fs::symlink("../..", root.join("home/esc")).unwrap();
    std::os::unix::fs::symlink("/home/core", root.join("home/abs")).unwrap();
    let passwd = "core:x:1000:1000::/home/core:/bin/sh\nevil:x:1001:1001::/home/../../x:/bin/sh\nlink:x:1002:1002::/home/esc:/bin/sh\n";
    let (p, uid, gid) = admin_kubeconfig(&root, passwd, "core").unwrap();
    assert_eq!((p, uid, gid), (root.join("home/core/.kube/config"), Some(1000), Some(1000)));
    let (p, _, _) = admin_kubeconfig(&root, "abs:x:1:1::/home/abs:/bin/sh\n", "abs").unwrap();
    assert_eq!(p, root.join("home/core/.kube/config"));
    for user in ["evil", "link", "nobody"] {
        assert!(admin_kubeconfig(&root, passwd, user).is_err(), "{user}");
    }
    assert!(contained(&root, "/home/core/../../..").is_err());
    assert_eq!(contained(&root, "/home/./core/").unwrap(), root.join("home/core"));
}

/// A scratch root with what an init run needs: the kubeadm model
/// (`tests/model/`) and stand-ins, as in `tests/run.rs`.
fn init_root(dir: &std::path::Path, passwd: &str) -> std::path::PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let root = dir.join("root");
    let w = |rel: &str, text: &str| {
        let p = root.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    };
    w("etc/kiln/image.toml", "schema = 1\nprofile = \"t\"\nfamily = \"flatcar\"\narch = \"amd64\"\nkubernetes_version = \"v1.34.2\"\nkubeadm_version = \"v1.34.2\"\nkubelet_version = \"v1.34.2\"\nbin_dir = \"/opt/bin\"\ncni_bin_dir = \"/opt/cni/bin\"\nflex_volume_dir = \"/opt/libexec/kubernetes/kubelet-plugins/volume/exec/\"\nruntime = \"containerd\"\nruntime_socket = \"unix:///run/containerd/containerd.sock\"\ncgroup_driver = \"systemd\"\n");
    w("etc/machine-id", "0123456789abcdef0123456789abcdef\n");
    w("etc/hostname", "cp-1\n");
    w("proc/swaps", "Filename Type Size Used Priority\n");
    w("sys/fs/cgroup/cgroup.controllers", "cpuset cpu io memory pids\n");
    w("run/containerd/containerd.sock", "");
    for t in ["losetup", "mount", "cp", "conntrack", "ip", "iptables", "nsenter", "ethtool", "socat", "tc"] {
        w(&format!("usr/sbin/{t}"), "");
    }
    w("proc/cpuinfo", "processor\t: 0\nprocessor\t: 1\n");
    w("proc/meminfo", "MemTotal:        4000000 kB\n");
    w("proc/net/route", "Iface\tDestination\tGateway\tFlags\tRefCnt\tUse\tMetric\tMask\tMTU\tWindow\tIRTT\neth0\t00000000\t0100000A\t0003\t0\t0\t100\t00000000\t0\t0\t0\neth0\t0000000A\t00000000\t0001\t0\t0\t0\t0000FFFF\t0\t0\t0\n");
    w("etc/kiln-model/kubelet-timeout", "5\n");
    w("etc/kiln-model/kubelet-config.json", "{\"apiVersion\": \"kubelet.config.k8s.io/v1beta1\", \"kind\": \"KubeletConfiguration\", \"cgroupDriver\": \"systemd\", \"healthzBindAddress\": \"127.0.0.1\", \"healthzPort\": 10248}\n");
    w("proc/sys/net/ipv4/ip_forward", "0\n");
    w("etc/passwd", passwd);
    let pem = |kind: &str| format!("\"\"\"\n-----BEGIN {kind}-----\nY2VydA==\n-----END {kind}-----\n\"\"\"");
    let mut node = String::from("[cluster]\ncontrol_plane_endpoint = \"api.example.test:6443\"\nbootstrap_token = \"abcdef.0123456789abcdef\"\nadmin_user = \"admin\"\ncni_manifest = \"/../outside-cni.yaml\"\n[node]\nrole = \"init\"\nnode_ip = \"10.0.0.5\"\n[pki]\n");
    for k in ["ca_cert", "front_proxy_ca_cert", "etcd_ca_cert", "sa_pub"] {
        node.push_str(&format!("{k} = {}\n", pem("CERTIFICATE")));
    }
    for k in ["ca_key", "front_proxy_ca_key", "etcd_ca_key", "sa_key"] {
        node.push_str(&format!("{k} = {}\n", pem("PRIVATE KEY")));
    }
    w("etc/kiln/node.toml", &node);
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let model = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/model");
    for tool in ["kubeadm", "systemctl"] {
        std::os::unix::fs::symlink(model.join(tool), bin.join(tool)).unwrap();
    }
    let stub = "#!/bin/sh\necho \"$*\" >> \"$REC/$(basename \"$0\").calls\"\n[ \"$(basename \"$0\")\" = modprobe ] && mkdir -p \"$ROOT/sys/module/$1\" && [ \"$1\" = br_netfilter ] && mkdir -p \"$ROOT/proc/sys/net/bridge\" && for k in bridge-nf-call-iptables bridge-nf-call-ip6tables; do echo 0 > \"$ROOT/proc/sys/net/bridge/$k\"; done\nexit 0\n";
    for tool in ["modprobe", "swapoff", "kubectl"] {
        std::fs::write(bin.join(tool), stub).unwrap();
        std::fs::set_permissions(bin.join(tool), std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    root
}

/// B14 end to end: an init run whose admin user's home climbs out of --root
/// writes no kubeconfig outside it (a warning instead), and a `cni_manifest`
/// path that climbs out is not applied.
#[test]
fn b14_init_run_writes_nothing_outside_the_root() {
    let d = tempfile::tempdir().unwrap();
    std::fs::write(d.path().join("outside-cni.yaml"), "kind: List\n").unwrap();
    let root = init_root(d.path(), "root:x:0:0::/root:/bin/sh\nadmin:x:0:0::/../escape-home:/bin/sh\n");
    let path = format!("{}:{}", d.path().join("bin").display(), std::env::var("PATH").unwrap_or_default());
    std::fs::create_dir_all(d.path().join("rec")).unwrap();
    let o = std::process::Command::new("unshare")
        .args(["-rn", "sh", "-c", "ip link set lo up && ip addr add 10.1.0.2/32 dev lo && exec \"$@\"", "sh"])
        .arg(env!("CARGO_BIN_EXE_kiln-firstboot"))
        .arg("--root")
        .arg(&root)
        .args(["--backoff", "0", "--wait", "5", "run"])
        .env("PATH", path)
        .env("REC", d.path().join("rec"))
        .env("ROOT", &root)
        .env("KILN_MODEL_ROOT", &root)
        .env("KILN_MODEL_KUBELET_LIFETIME", "30")
        .output()
        .unwrap();
    if let Ok(pid) = std::fs::read_to_string(root.join("var/lib/kiln-model/kubelet.pid")) {
        let _ = std::process::Command::new("kill").arg(pid.trim()).status();
    }
    let text = format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
    assert!(o.status.success(), "{text}");
    assert!(!d.path().join("escape-home").exists(), "the admin kubeconfig was written outside the root: {text}");
    assert!(text.contains("admin_user admin") && text.contains("outside the root"), "{text}");
    let kubectl = std::fs::read_to_string(d.path().join("rec/kubectl.calls")).unwrap_or_default();
    assert!(!kubectl.contains("outside-cni"), "kubectl applied a manifest outside the root: {kubectl}");
}

/// Every file under `dir` (not directories), for "nothing was written here".
fn files_in(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
            out.extend(files_in(&p));
        } else {
            out.push(p);
        }
    }
    out
}

/// `kiln-firstboot` on `root` with the stand-ins of [`init_root`] and `kubeadm` a
/// script at the image's bin dir (it touches nothing: what lands is kiln's own).
fn run_plain(d: &std::path::Path, root: &std::path::Path, kubeadm: &str, args: &[&str]) -> std::process::Output {
    use std::os::unix::fs::PermissionsExt;
    let k = root.join("opt/bin/kubeadm");
    std::fs::create_dir_all(k.parent().unwrap()).unwrap();
    std::fs::write(&k, kubeadm).unwrap();
    std::fs::set_permissions(&k, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::create_dir_all(d.join("rec")).unwrap();
    let path = format!("{}:{}", d.join("bin").display(), std::env::var("PATH").unwrap_or_default());
    std::process::Command::new(env!("CARGO_BIN_EXE_kiln-firstboot"))
        .arg("--root")
        .arg(root)
        .args(["--backoff", "0", "--wait", "5", "--attempts", "1"])
        .args(args)
        .env("PATH", path)
        .env("REC", d.join("rec"))
        .env("ROOT", root)
        .output()
        .unwrap()
}

/// Links at kiln-firstboot's own fixed destinations, absolute, to directories outside
/// the root: `etc/kubernetes/pki`, `run/kiln`, `var/lib/kiln`, `var/log/kiln`, the
/// patches directory and `run/cluster-api`. Returns the decoy directory.
fn plant_links(d: &std::path::Path, root: &std::path::Path) -> std::path::PathBuf {
    let decoy = d.join("elsewhere");
    for (link, to) in [
        ("etc/kubernetes/pki", "pki"),
        ("run/kiln", "runkiln"),
        ("var/lib/kiln", "varlibkiln"),
        ("var/log/kiln", "varlogkiln"),
        ("etc/kiln/kubeadm-patches", "patches"),
        ("run/cluster-api", "capi"),
    ] {
        std::fs::create_dir_all(decoy.join(to)).unwrap();
        let l = root.join(link);
        std::fs::create_dir_all(l.parent().unwrap()).unwrap();
        std::os::unix::fs::symlink(decoy.join(to), l).unwrap();
    }
    decoy
}

/// B15: `run` on an init node and on a worker writes its CA keys, the kubeadm config
/// (the bootstrap token), the kubelet patch, the state, the sentinel, kubeadm's log,
/// the failure marker and the evidence under the root, wherever absolute links at those
/// places point: the decoy directories outside the root stay empty, and `reset`
/// removes nothing outside the root.
#[test]
fn b15_fixed_destinations_behind_absolute_links_stay_under_the_root() {
    let text = |o: &std::process::Output| {
        format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
    };
    // Init: succeeds.
    let d = tempfile::tempdir().unwrap();
    let root = init_root(d.path(), "root:x:0:0::/root:/bin/sh\n");
    let decoy = plant_links(d.path(), &root);
    let o = run_plain(d.path(), &root, "#!/bin/sh\nexit 0\n", &["run"]);
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(files_in(&decoy), Vec::<std::path::PathBuf>::new(), "written outside the root: {}", text(&o));
    // Where they went: the links' targets read from the root, as in a chroot.
    let inside = root.join(decoy.strip_prefix("/").unwrap());
    for f in [
        "pki/ca.key",
        "pki/etcd/ca.key",
        "pki/sa.key",
        "runkiln/kubeadm.json",
        "varlibkiln/state.json",
        "patches/kubeletconfiguration+merge.json",
        "capi/bootstrap-success.complete",
        "varlogkiln/kubeadm.log",
    ] {
        assert!(inside.join(f).is_file(), "{f} not written under the root");
    }
    // Init: fails, so the failure marker and the evidence are written.
    let d = tempfile::tempdir().unwrap();
    let root = init_root(d.path(), "root:x:0:0::/root:/bin/sh\n");
    let decoy = plant_links(d.path(), &root);
    let o = run_plain(d.path(), &root, "#!/bin/sh\necho nope >&2\nexit 1\n", &["run"]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert_eq!(files_in(&decoy), Vec::<std::path::PathBuf>::new(), "written outside the root: {}", text(&o));
    assert!(root.join(decoy.strip_prefix("/").unwrap()).join("runkiln/bootstrap-failed").is_file());
    // A description that does not resolve: the failure marker, exit 2.
    std::fs::write(root.join("etc/kiln/node.toml"), "[node]\nrole = \"init\"\n").unwrap();
    let o = run_plain(d.path(), &root, "#!/bin/sh\nexit 0\n", &["run"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert_eq!(files_in(&decoy), Vec::<std::path::PathBuf>::new(), "written outside the root: {}", text(&o));
    // Join: the endpoint answers on loopback.
    let d = tempfile::tempdir().unwrap();
    let root = init_root(d.path(), "root:x:0:0::/root:/bin/sh\n");
    let decoy = plant_links(d.path(), &root);
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    std::fs::write(
        root.join("etc/kiln/node.toml"),
        format!("[cluster]\ncontrol_plane_endpoint = \"127.0.0.1:{port}\"\nbootstrap_token = \"abcdef.0123456789abcdef\"\nca_cert_hashes = [\"sha256:2515a0c0418253eff7778e3355b8834092a8cf745376caa71d47b96d11c54194\"]\n[node]\nrole = \"join\"\nnode_ip = \"10.0.0.9\"\n"),
    )
    .unwrap();
    let o = run_plain(d.path(), &root, "#!/bin/sh\nexit 0\n", &["run"]);
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(files_in(&decoy), Vec::<std::path::PathBuf>::new(), "written outside the root: {}", text(&o));
    assert!(root.join(decoy.strip_prefix("/").unwrap()).join("varlibkiln/state.json").is_file());
    // reset removes kiln's state under the root, not the decoy's files of the same names.
    for f in ["varlibkiln/state.json", "runkiln/bootstrap-failed", "capi/bootstrap-success.complete"] {
        std::fs::write(decoy.join(f), "victim").unwrap();
    }
    let o = run_plain(d.path(), &root, "#!/bin/sh\nexit 0\n", &["reset"]);
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(files_in(&decoy).len(), 3, "reset removed files outside the root: {}", text(&o));
    assert!(!root.join(decoy.strip_prefix("/").unwrap()).join("varlibkiln/state.json").exists());
}
