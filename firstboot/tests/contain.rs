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
