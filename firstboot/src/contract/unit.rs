//! The systemd units that start `kiln-firstboot` on boot, and that run its
//! `approve-csrs` on control planes every minute.

use std::time::Duration;

/// The distributions' own swap units, masked by the builder on a card and by
/// kiln-firstboot again at first boot (kubelet refuses to start with swap on
/// unless configured for it): Raspberry Pi OS's zram swap of `rpi-swap` in
/// trixie (`dev-zram0.swap`, `systemd-zram-setup@zram0.service`,
/// `rpi-zram-writeback.timer`) and its `dphys-swapfile.service` up to bookworm.
/// Ubuntu for Raspberry Pi ships no swap; the masks are harmless there. One
/// list, so the two crates cannot disagree.
pub const DISTRO_SWAP_UNITS: [&str; 4] =
    ["dev-zram0.swap", "systemd-zram-setup@zram0.service", "dphys-swapfile.service", "rpi-zram-writeback.timer"];

/// How long `approve-csrs` may take as a whole, and each kubectl call in it;
/// [`render_approve_service`] bounds the unit a little above it.
pub const APPROVE_TIMEOUT: Duration = Duration::from_secs(120);

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

/// File name of the unit that runs `kiln-firstboot approve-csrs` (row 37).
pub const APPROVE_SERVICE: &str = "kiln-approve-csrs.service";
/// File name of the timer that starts [`APPROVE_SERVICE`] again and again.
pub const APPROVE_TIMER: &str = "kiln-approve-csrs.timer";

/// Renders `kiln-approve-csrs.service`: one `kiln-firstboot approve-csrs` pass.
///
/// Only on a control plane: `ConditionPathExists=/etc/kubernetes/admin.conf`
/// (kubeadm writes it on init and on a control-plane join; a worker never has
/// it), a skipped condition is not a failure and the timer keeps firing
/// (systemd's timer re-arms from its own last trigger, core/timer.c since
/// v238, systemd PR #7907). Without `serverTLSBootstrap` no kubelet asks for a
/// serving certificate, so a pass lists the CSRs, finds none of
/// `kubernetes.io/kubelet-serving` and exits 0 (`approve::approve_csrs`).
/// `TimeoutStartSec` bounds a pass a little above [`APPROVE_TIMEOUT`].
pub fn render_approve_service(bin_dir: &str) -> String {
    let bin_dir = bin_dir.trim_end_matches('/');
    format!(
        "[Unit]\n\
Description=kiln: approve this cluster's kubelet serving-certificate requests\n\
Documentation=https://github.com/kiln/kiln#kiln-firstboot\n\
ConditionPathExists=/etc/kubernetes/admin.conf\n\
After=kiln-firstboot.service\n\
\n\
[Service]\n\
Type=oneshot\n\
Environment=PATH={bin_dir}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin\n\
ExecStart={bin_dir}/kiln-firstboot approve-csrs\n\
TimeoutStartSec={}\n",
        APPROVE_TIMEOUT.as_secs() + 30
    )
}

/// Renders `kiln-approve-csrs.timer`: a minute after boot, then a minute after
/// each pass — a joining kubelet's serving CSR waits at most about a minute
/// (kubelet keeps asking until it gets one; until then `kubectl logs`/`exec`
/// and metrics-server fail against that node).
pub fn render_approve_timer() -> String {
    format!(
        "[Unit]\n\
Description=kiln: approve kubelet serving-certificate requests every minute\n\
Documentation=https://github.com/kiln/kiln#kiln-firstboot\n\
\n\
[Timer]\n\
OnBootSec=1min\n\
OnUnitActiveSec=1min\n\
AccuracySec=10s\n\
Unit={APPROVE_SERVICE}\n\
\n\
[Install]\n\
WantedBy=timers.target\n"
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

    #[test]
    fn approve_csrs_runs_only_on_control_planes_bounded_every_minute() {
        let unit = super::render_approve_service("/opt/bin/");
        assert!(unit.contains("ExecStart=/opt/bin/kiln-firstboot approve-csrs\n"), "{unit}");
        assert!(unit.contains("ConditionPathExists=/etc/kubernetes/admin.conf\n"), "{unit}");
        assert!(unit.contains("TimeoutStartSec=150\n"), "{unit}");
        let timer = super::render_approve_timer();
        for want in [
            "OnBootSec=1min\n",
            "OnUnitActiveSec=1min\n",
            "Unit=kiln-approve-csrs.service\n",
            "WantedBy=timers.target\n",
        ] {
            assert!(timer.contains(want), "{want}: {timer}");
        }
    }
}
