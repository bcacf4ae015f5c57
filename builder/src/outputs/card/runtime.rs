//! What a card carries besides kiln's usual tree so a Raspberry Pi needs
//! nothing installed by hand: the containerd unit for the pinned static
//! containerd (its binaries, runc and `/etc/containerd/config.toml` with
//! `SystemdCgroup = true` come from the profile's artifacts and `[runtime]`),
//! and swap masked for the base OSes kiln knows.

use crate::error::Result;
use crate::profile::Profile;
use crate::tree::{Entry, Origin, Tree};

/// containerd's unit as upstream ships it (containerd/containerd,
/// `containerd.service`), with `ExecStart` in the profile's bin dir. containerd
/// finds `containerd-shim-runc-v2` and `runc` on `PATH`, which kiln's
/// `system.conf.d/10-kiln-path.conf` extends with the bin dir.
pub fn containerd_service(bin_dir: &str) -> String {
    format!(
        "# Written by kiln from containerd's containerd.service (containerd/containerd).\n\
[Unit]\n\
Description=containerd container runtime\n\
Documentation=https://containerd.io\n\
After=network.target dbus.service\n\
\n\
[Service]\n\
ExecStartPre=-/sbin/modprobe overlay\n\
ExecStart={bin_dir}/containerd\n\
Type=notify\n\
Delegate=yes\n\
KillMode=process\n\
Restart=always\n\
RestartSec=5\n\
LimitNPROC=infinity\n\
LimitCORE=infinity\n\
TasksMax=infinity\n\
OOMScoreAdjust=-999\n\
\n\
[Install]\n\
WantedBy=multi-user.target\n"
    )
}

/// Swap units masked on the card (kubelet refuses to start with swap on
/// unless configured for it): Raspberry Pi OS's `dphys-swapfile.service` up
/// to bookworm, and in trixie the zram swap of `rpi-swap`
/// (`systemd-zram-setup@zram0.service`, `dev-zram0.swap`,
/// `rpi-zram-writeback.timer`). Ubuntu for Raspberry Pi ships no swap; the
/// masks are harmless there. kiln-firstboot masks the same units again at
/// first boot (`firstboot/src/host.rs`).
pub const MASKED_SWAP_UNITS: [&str; 4] =
    ["dphys-swapfile.service", "systemd-zram-setup@zram0.service", "dev-zram0.swap", "rpi-zram-writeback.timer"];

/// Adds the containerd unit (enabled through its `.wants` link) when the
/// profile pins a `containerd` artifact: every image that carries containerd
/// (a card, or a tarball for a stock cloud image) needs it.
pub fn add_containerd_unit(profile: &Profile, tree: &mut Tree) -> Result<()> {
    let units = "/etc/systemd/system";
    if profile.doc.artifacts.contains_key("containerd") && tree.get(&format!("{units}/containerd.service")).is_none() {
        tree.insert(
            &format!("{units}/containerd.service"),
            Entry::text(containerd_service(&profile.bin_dir()), 0o644),
            false,
        )?;
        tree.insert(
            &format!("{units}/multi-user.target.wants/containerd.service"),
            Entry::symlink(format!("{units}/containerd.service"), Origin::Rendered),
            false,
        )?;
    }
    Ok(())
}

/// Masks the swap units of the base OSes a card is made from.
pub fn mask_swap(tree: &mut Tree) -> Result<()> {
    let units = "/etc/systemd/system";
    for unit in MASKED_SWAP_UNITS {
        let path = format!("{units}/{unit}");
        if tree.get(&path).is_none() {
            tree.insert(&path, Entry::symlink("/dev/null", Origin::Rendered), false)?;
        }
    }
    Ok(())
}
