//! `--root` containment of paths derived from input: the admin kubeconfig.

/// B14: the admin kubeconfig goes to the admin user's home under --root, and a
/// home that leaves the root is refused with a warning, nothing written outside.
#[test]
fn b14_admin_kubeconfig_path_stays_under_the_root() {
    use kiln_firstboot::sources::{admin_kubeconfig, contained};
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
    for t in ["conntrack", "ip", "iptables", "mount", "nsenter", "ethtool", "socat", "tc"] {
        w(&format!("usr/sbin/{t}"), "");
    }
    w("proc/cpuinfo", "processor\t: 0\nprocessor\t: 1\n");
    w("proc/meminfo", "MemTotal:        4000000 kB\n");
    w("proc/net/route", "Iface\tDestination\tGateway\tFlags\tRefCnt\tUse\tMetric\tMask\tMTU\tWindow\tIRTT\neth0\t0000000A\t00000000\t0001\t0\t0\t0\t0000FFFF\t0\t0\t0\n");
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
