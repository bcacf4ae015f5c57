//! Files kiln renders after the overlays, each only where no overlay brought
//! that path: the containerd unit for the pinned static containerd (its
//! binaries, runc and `/etc/containerd/config.toml` with `SystemdCgroup =
//! true` come from the profile's artifacts and `[runtime]`), and, on a card,
//! swap masked for the base OSes kiln knows, so a Raspberry Pi needs nothing
//! installed by hand.

use crate::error::Result;
use crate::image::tree::{Entry, Origin, Tree};
use crate::inputs::profile::{OutputFormat, Profile};
use kiln_firstboot::contract::unit::DISTRO_SWAP_UNITS;

/// Renders this module's files for an image of `formats` into `tree`, after
/// the overlays: the containerd unit ([`add_containerd_unit`]) and, when the
/// image is a card, the swap masks ([`mask_swap`]).
pub fn render(profile: &Profile, formats: &[OutputFormat], tree: &mut Tree) -> Result<()> {
    add_containerd_unit(profile, tree)?;
    if formats.contains(&OutputFormat::Card) {
        mask_swap(tree)?;
    }
    Ok(())
}

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

/// Where zram-generator reads its main config first after `/run`: the README of
/// systemd/zram-generator ("This generator checks the following locations:
/// /run/systemd/zram-generator.conf, /etc/systemd/zram-generator.conf,
/// /usr/local/lib/…, /usr/lib/… and the first file found in that list wins";
/// "A zram device will be created for each section"). A file here without a
/// `[zramN]` section hides the distribution's `/usr/lib` default (Fedora's
/// zram-generator-defaults, Raspberry Pi OS trixie's `rpi-swap`) and creates no
/// device. kiln-firstboot writes the same file at first boot when node.toml
/// says `swap = "off"` (`firstboot/src/host.rs`, `mask_swap`).
pub const ZRAM_GENERATOR_CONF: &str = "/etc/systemd/zram-generator.conf";

/// The empty zram-generator config: comments only, no device section.
pub const ZRAM_GENERATOR_OFF: &str =
    "# Written by kiln: no [zramN] section, so zram-generator creates no zram swap (kubelet refuses swap).\n";

/// Masks the swap units of the base OSes a card is made from (the one list
/// kiln-firstboot masks again at first boot, [`DISTRO_SWAP_UNITS`]) and disables
/// zram-generator's default device ([`ZRAM_GENERATOR_CONF`]), unless an
/// overlay already brings that file.
pub fn mask_swap(tree: &mut Tree) -> Result<()> {
    let units = "/etc/systemd/system";
    for unit in DISTRO_SWAP_UNITS {
        let path = format!("{units}/{unit}");
        if tree.get(&path).is_none() {
            tree.insert(&path, Entry::symlink("/dev/null", Origin::Rendered), false)?;
        }
    }
    if tree.get(ZRAM_GENERATOR_CONF).is_none() {
        tree.insert(ZRAM_GENERATOR_CONF, Entry::text(ZRAM_GENERATOR_OFF, 0o644), false)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::tree::{Content, Node};

    #[test]
    fn a_card_carries_an_empty_zram_generator_config() {
        let mut tree = Tree::new();
        mask_swap(&mut tree).unwrap();
        let e = tree.get(ZRAM_GENERATOR_CONF).expect("no zram-generator.conf");
        let Node::File(Content::Inline(b)) = &e.node else { panic!("not a file") };
        let text = String::from_utf8(b.clone()).unwrap();
        // systemd.syntax(5): `#`/`;` lines are comments; a `[` line opens a section.
        assert!(text.lines().all(|l| l.trim().is_empty() || l.starts_with('#') || l.starts_with(';')), "{text}");
        for unit in DISTRO_SWAP_UNITS {
            assert!(tree.get(&format!("/etc/systemd/system/{unit}")).is_some(), "{unit}");
        }
    }
}
