//! The systemd unit that starts `kiln-firstboot` on boot.

/// File name of the first-boot unit.
pub const UNIT_NAME: &str = "kiln-firstboot.service";

/// Renders `kiln-firstboot.service` for an image whose binaries live in `bin_dir`.
///
/// A oneshot that runs after the network is online and the container runtime
/// is up. It is deliberately **not** ordered before `kubelet.service`: kubeadm
/// restarts kubelet from inside this unit and waits for it (`systemctl
/// daemon-reload` then `systemctl restart kubelet`, `exec.Command(...).Run()` in
/// kubeadm's `util/initsystem/initsystem_unix.go`), and systemd would hold that
/// restart job until this oneshot finished — which waits for kubeadm: a deadlock.
/// kubelet is kept from starting early by its own `ExecCondition=` instead
/// (`kiln-firstboot kubelet-gate`, in kiln's kubelet drop-in). The agent
/// re-checks the machine id itself (a cloned disk runs again).
pub fn render(bin_dir: &str, runtime_unit: &str) -> String {
    let bin_dir = bin_dir.trim_end_matches('/');
    format!(
        "[Unit]\n\
Description=kiln first boot: join this machine to its Kubernetes cluster\n\
Documentation=https://github.com/kiln/kiln#kiln-firstboot\n\
Wants=network-online.target\n\
After=network-online.target {runtime_unit} systemd-sysext.service\n\
\n\
[Service]\n\
Type=oneshot\n\
RemainAfterExit=yes\n\
Environment=PATH={bin_dir}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin\n\
ExecStart={bin_dir}/kiln-firstboot run\n\
StandardOutput=journal+console\n\
StandardError=journal+console\n\
\n\
[Install]\n\
WantedBy=multi-user.target\n"
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn exec_start_uses_bin_dir() {
        let unit = super::render("/opt/bin/", "containerd.service");
        assert!(unit.contains("ExecStart=/opt/bin/kiln-firstboot run\n"), "{unit}");
        assert!(unit.contains("After=network-online.target containerd.service"));
    }

    #[test]
    fn not_ordered_before_kubelet() {
        // kubeadm's synchronous `systemctl restart kubelet` from inside this unit would
        // wait for this unit to finish: never order it before kubelet.
        let unit = super::render("/opt/bin", "containerd.service");
        assert!(!unit.contains("Before=kubelet"), "{unit}");
        assert!(!unit.lines().any(|l| l.starts_with("Before=") && l.contains("kubelet")), "{unit}");
    }
}
