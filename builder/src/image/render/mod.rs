//! Files kiln renders from the profile into the image tree.
//!
//! Units and drop-ins always go under `/etc/systemd`, never `/usr`, so they
//! work on read-only-`/usr` families. Unit content follows the kubelet
//! packages' `kubelet.service` and `10-kubeadm.conf` (kubernetes/release,
//! `cmd/krel/templates/latest/{kubelet,kubeadm}`), with the profile's bin dir.
//!
//! [`render`] writes the files that come before the artifacts and overlays;
//! [`runtime`] the ones that yield to an overlay's (containerd's unit, a
//! card's swap masks), after them. [`crate::image::assemble`] calls both.

pub mod runtime;

use crate::error::Result;
use crate::image::tree::{Entry, Origin, Tree};
use crate::inputs::profile::{Arch, Family, Profile, RuntimeKind};
use kiln_firstboot::contract::image::{ImageDefaults, IMAGE_SCHEMA, IMAGE_TOML_PATH};

/// Directories that are on the default `PATH` of systemd and login shells.
const STANDARD_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// `PATH` with the profile's bin dir first.
pub fn path_with(bin_dir: &str) -> String {
    if STANDARD_PATH.split(':').any(|p| p == bin_dir) {
        STANDARD_PATH.to_string()
    } else {
        format!("{bin_dir}:{STANDARD_PATH}")
    }
}

/// `kubelet.service` as the kubelet package ships it, run from `bin_dir`.
pub fn kubelet_service(bin_dir: &str) -> String {
    format!(
        "[Unit]
Description=kubelet: The Kubernetes Node Agent
Documentation=https://kubernetes.io/docs/
Wants=network-online.target
After=network-online.target

[Service]
ExecStart={bin_dir}/kubelet
Restart=always
StartLimitInterval=0
RestartSec=10

[Install]
WantedBy=multi-user.target
"
    )
}

/// `10-kubeadm.conf` as the kubeadm package ships it, run from `bin_dir`,
/// sourcing the family's environment file.
pub fn kubeadm_dropin(bin_dir: &str, family: Family) -> String {
    format!(
        "# Note: This dropin only works with kubeadm and kubelet v1.11+
[Service]
Environment=\"KUBELET_KUBECONFIG_ARGS=--bootstrap-kubeconfig=/etc/kubernetes/bootstrap-kubelet.conf --kubeconfig=/etc/kubernetes/kubelet.conf\"
Environment=\"KUBELET_CONFIG_ARGS=--config=/var/lib/kubelet/config.yaml\"
# This is a file that \"kubeadm init\" and \"kubeadm join\" generates at runtime, populating the KUBELET_KUBEADM_ARGS variable dynamically
EnvironmentFile=-/var/lib/kubelet/kubeadm-flags.env
# This is a file that the user can use for overrides of the kubelet args as a last resort. Preferably, the user should use
# the .NodeRegistration.KubeletExtraArgs object in the configuration files instead. KUBELET_EXTRA_ARGS should be sourced from this file.
EnvironmentFile=-{env}
ExecStart=
ExecStart={bin_dir}/kubelet $KUBELET_KUBECONFIG_ARGS $KUBELET_CONFIG_ARGS $KUBELET_KUBEADM_ARGS $KUBELET_EXTRA_ARGS
",
        env = family.kubelet_env_file()
    )
}

/// kiln's kubelet drop-in: `PATH` with the bin dir (kubelet and CNI plugins
/// exec helpers by name), the runtime ordered before kubelet, and two checks by
/// kiln-firstboot before every start:
/// * `ExecCondition=` (systemd >= 243; exit 1 skips the start without a failure or
///   a restart loop): kubelet starts only while this machine bootstraps or after it
///   did, never from a config a cloned disk carried over. kubelet is *not* ordered
///   after `kiln-firstboot.service`: kubeadm restarts kubelet synchronously from
///   inside first boot, and that ordering deadlocks (see `kiln_firstboot::contract::unit`).
/// * `ExecStartPre=`: modules, sysctls and swap on every boot, with a one-line reason
///   in the journal when the host is still wrong (kubelet then retries every 10 s).
pub fn kiln_kubelet_dropin(bin_dir: &str, runtime: RuntimeKind) -> String {
    format!(
        "# Written by kiln: kubelet finds {bin_dir}, starts after its container runtime,
# and only on a host kiln-firstboot has bootstrapped and checked.
[Unit]
After={unit}
Wants={unit}

[Service]
Environment=\"PATH={path}\"
ExecCondition={bin_dir}/kiln-firstboot kubelet-gate
ExecStartPre={bin_dir}/kiln-firstboot host
",
        unit = runtime.unit(),
        path = path_with(bin_dir)
    )
}

/// systemd's unit directory for the administrator's units, where kiln's go.
const UNITS: &str = "/etc/systemd/system";

/// Renders every kiln-owned file for `arch` into `tree` that comes before the
/// artifacts and overlays; [`runtime::render`] adds the rest after them.
pub fn render(profile: &Profile, arch: Arch, tree: &mut Tree) -> Result<()> {
    kubelet_units(profile, tree)?;
    search_path(profile, tree)?;
    host_settings(profile, tree)?;
    runtime_config(profile, tree)?;
    // A [cni_manifest] pinned by path (one pinned by url is an artifact).
    if let Some(bytes) = profile.read_cni_manifest_file()? {
        tree.insert(
            crate::inputs::profile::CNI_MANIFEST_PATH,
            Entry::file(crate::image::tree::Content::Inline(bytes), 0o644, Origin::Rendered),
            false,
        )?;
    }
    let defaults = image_defaults(profile, arch);
    tree.insert(IMAGE_TOML_PATH, Entry::text(defaults.to_toml(), 0o644), false)?;
    firstboot_units(profile, tree)
}

/// Kiln's files of [`render`] as they are for binaries in `bin_dir` instead
/// of the profile's: what a systemd-sysext image installs, its binaries in
/// `/usr/bin` ([`crate::outputs::sysext::split`]).
pub fn for_bin_dir(profile: &Profile, arch: Arch, bin_dir: &str) -> Result<Tree> {
    let mut p = profile.clone();
    p.doc.bin_dir = Some(toml::Spanned::new(0..0, bin_dir.to_string()));
    let mut tree = Tree::new();
    render(&p, arch, &mut tree)?;
    Ok(tree)
}

/// `kubelet.service`, its two drop-ins, its `.wants` link, and the
/// environment file with the profile's `[kubelet] extra_args`.
fn kubelet_units(profile: &Profile, tree: &mut Tree) -> Result<()> {
    let bin = profile.bin_dir();
    let family = profile.family();
    tree.insert(&format!("{UNITS}/kubelet.service"), Entry::text(kubelet_service(&bin), 0o644), false)?;
    tree.insert(
        &format!("{UNITS}/kubelet.service.d/10-kubeadm.conf"),
        Entry::text(kubeadm_dropin(&bin, family), 0o644),
        false,
    )?;
    tree.insert(
        &format!("{UNITS}/kubelet.service.d/20-kiln.conf"),
        Entry::text(kiln_kubelet_dropin(&bin, profile.runtime()), 0o644),
        false,
    )?;
    // `systemctl enable` is a symlink into the target's .wants directory.
    tree.insert(
        &format!("{UNITS}/multi-user.target.wants/kubelet.service"),
        Entry::symlink(format!("{UNITS}/kubelet.service"), Origin::Rendered),
        false,
    )?;
    let extra: Vec<String> = profile.doc.kubelet.extra_args.iter().map(|a| a.get_ref().clone()).collect();
    if !extra.is_empty() {
        tree.insert(
            family.kubelet_env_file(),
            Entry::text(
                format!(
                    "# Written by kiln from the profile's [kubelet] extra_args.\nKUBELET_EXTRA_ARGS=\"{}\"\n",
                    extra.join(" ")
                ),
                0o644,
            ),
            false,
        )?;
    }
    Ok(())
}

/// Services and login shells find the bin dir on distros whose PATH lacks it.
fn search_path(profile: &Profile, tree: &mut Tree) -> Result<()> {
    let bin = profile.bin_dir();
    if path_with(&bin) == STANDARD_PATH {
        return Ok(());
    }
    tree.insert(
        "/etc/systemd/system.conf.d/10-kiln-path.conf",
        Entry::text(
            format!(
                "# Written by kiln: every service finds {bin}.\n[Manager]\nDefaultEnvironment=\"PATH={}\"\n",
                path_with(&bin)
            ),
            0o644,
        ),
        false,
    )?;
    tree.insert(
        "/etc/profile.d/kiln-path.sh",
        Entry::text(
            format!("# Written by kiln: login shells find {bin}.\ncase \":$PATH:\" in *\":{bin}:\"*) ;; *) PATH=\"{bin}:$PATH\" ;; esac\nexport PATH\n"),
            0o644,
        ),
        false,
    )
}

/// Kernel modules and sysctls kubeadm's preflight requires, and the
/// directories kubelet needs to write.
fn host_settings(profile: &Profile, tree: &mut Tree) -> Result<()> {
    let modules = profile.kernel_modules().join("\n");
    tree.insert(
        "/etc/modules-load.d/kiln-kubernetes.conf",
        Entry::text(format!("# Written by kiln: modules kubeadm's preflight requires.\n{modules}\n"), 0o644),
        false,
    )?;
    let sysctls: String = profile.sysctls().iter().map(|(k, v)| format!("{k} = {v}\n")).collect();
    tree.insert(
        "/etc/sysctl.d/90-kiln-kubernetes.conf",
        Entry::text(
            format!("# Written by kiln: kubeadm install guide, container runtime prerequisites.\n{sysctls}"),
            0o644,
        ),
        false,
    )?;
    // The flex-volume directory exists in the image and is recreated at boot
    // (on Fedora CoreOS /opt lives on /var, which the tarball may not reach).
    let flex = profile.flex_volume_dir();
    tree.insert(&flex, Entry::dir(0o755, Origin::Rendered), false)?;
    tree.insert(
        "/etc/tmpfiles.d/kiln-kubernetes.conf",
        Entry::text(
            format!("# Written by kiln: writable directories kubelet needs when /usr is read-only.\nd {flex} 0755 root root -\nd {} 0755 root root -\n", profile.cni_bin_dir()),
            0o644,
        ),
        false,
    )
}

/// `crictl.yaml` for the runtime's socket and, with `[runtime]
/// manage_config`, containerd's config.
fn runtime_config(profile: &Profile, tree: &mut Tree) -> Result<()> {
    let socket = profile.runtime_socket();
    tree.insert(
        "/etc/crictl.yaml",
        Entry::text(format!("runtime-endpoint: {socket}\nimage-endpoint: {socket}\ntimeout: 10\n"), 0o644),
        false,
    )?;
    if let Some(rt) = &profile.doc.runtime {
        if rt.manage_config && profile.runtime() == RuntimeKind::Containerd {
            let version = rt.config_version.as_ref().map(|v| *v.get_ref()).unwrap_or(2);
            tree.insert(
                "/etc/containerd/config.toml",
                Entry::text(
                    containerd_config(version, profile.cgroup_driver().as_str() == "systemd", pause_image(profile)),
                    0o644,
                ),
                false,
            )?;
        }
    }
    Ok(())
}

/// `kiln-firstboot.service` (enabled) and the serving-CSR approval's
/// service and timer (row 37: it runs by itself on control planes).
fn firstboot_units(profile: &Profile, tree: &mut Tree) -> Result<()> {
    use kiln_firstboot::contract::unit::{APPROVE_SERVICE, APPROVE_TIMER, UNIT_NAME};
    let bin = profile.bin_dir();
    tree.insert(
        &format!("{UNITS}/{UNIT_NAME}"),
        Entry::text(kiln_firstboot::contract::unit::render(&bin, profile.runtime().unit()), 0o644),
        false,
    )?;
    tree.insert(
        &format!("{UNITS}/multi-user.target.wants/{UNIT_NAME}"),
        Entry::symlink(format!("{UNITS}/{UNIT_NAME}"), Origin::Rendered),
        false,
    )?;
    tree.insert(
        &format!("{UNITS}/{APPROVE_SERVICE}"),
        Entry::text(kiln_firstboot::contract::unit::render_approve_service(&bin), 0o644),
        false,
    )?;
    tree.insert(
        &format!("{UNITS}/{APPROVE_TIMER}"),
        Entry::text(kiln_firstboot::contract::unit::render_approve_timer(), 0o644),
        false,
    )?;
    tree.insert(
        &format!("{UNITS}/timers.target.wants/{APPROVE_TIMER}"),
        Entry::symlink(format!("{UNITS}/{APPROVE_TIMER}"), Origin::Rendered),
        false,
    )
}

/// containerd's CRI config with `SystemdCgroup` for the runc runtime and, when
/// kiln knows it, kubeadm's pause image as the sandbox image, at the paths
/// of config `version` (see [`crate::image::containerd`]).
pub fn containerd_config(version: u8, systemd_cgroup: bool, sandbox: Option<&str>) -> String {
    crate::image::containerd::render(version, systemd_cgroup, sandbox)
}

/// The pause image kubeadm pulls for this profile (the pinned kubeadm's
/// version, else `kubernetes_version`), when kiln knows it
/// ([`crate::image::containerd::kubeadm_pause_image`]).
pub fn pause_image(profile: &Profile) -> Option<&'static str> {
    use crate::inputs::version::VersionExt;
    let v = profile
        .artifact_version("kubeadm")
        .and_then(|s| crate::inputs::version::Version::parse(&s).ok())
        .unwrap_or_else(|| profile.version.clone());
    crate::image::containerd::kubeadm_pause_image(v.major, v.minor)
}

/// The baked defaults `kiln-firstboot` reads from `/etc/kiln/image.toml`.
pub fn image_defaults(profile: &Profile, arch: Arch) -> ImageDefaults {
    let k8s = profile.doc.kubernetes_version.get_ref().clone();
    ImageDefaults {
        schema: IMAGE_SCHEMA,
        profile: profile.name().to_string(),
        family: profile.family().as_str().to_string(),
        arch: arch.as_str().to_string(),
        kubeadm_version: profile.artifact_version("kubeadm").unwrap_or_else(|| k8s.clone()),
        kubelet_version: profile.artifact_version("kubelet").unwrap_or_else(|| k8s.clone()),
        kubernetes_version: k8s,
        bin_dir: profile.bin_dir(),
        cni_bin_dir: profile.cni_bin_dir(),
        flex_volume_dir: profile.flex_volume_dir(),
        runtime: profile.runtime().as_str().to_string(),
        runtime_socket: profile.runtime_socket(),
        cgroup_driver: profile.cgroup_driver().as_str().to_string(),
        // Filled in by the image archive's writer (helper `layout`, issue 23).
        images_archive: None,
        images: Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units_use_bin_dir() {
        assert!(kubelet_service("/opt/bin").contains("ExecStart=/opt/bin/kubelet\n"));
        let d = kubeadm_dropin("/opt/bin", Family::Fcos);
        assert!(d.contains("EnvironmentFile=-/etc/sysconfig/kubelet\n"));
        assert!(d.contains("ExecStart=/opt/bin/kubelet $KUBELET_KUBECONFIG_ARGS"));
        assert!(kubeadm_dropin("/opt/bin", Family::Debian).contains("EnvironmentFile=-/etc/default/kubelet\n"));
        assert!(!d.contains("/usr/bin"));
    }

    #[test]
    fn kubelet_waits_for_this_machines_bootstrap_without_ordering_after_it() {
        let d = kiln_kubelet_dropin("/opt/bin", RuntimeKind::Containerd);
        assert!(d.contains("ExecCondition=/opt/bin/kiln-firstboot kubelet-gate\n"), "{d}");
        assert!(d.contains("ExecStartPre=/opt/bin/kiln-firstboot host\n"), "{d}");
        // Ordering kubelet after first boot deadlocks kubeadm's synchronous restart.
        assert!(!d.contains("kiln-firstboot.service"), "{d}");
    }

    #[test]
    fn path_adds_bin_dir_once() {
        assert!(path_with("/opt/bin").starts_with("/opt/bin:"));
        assert_eq!(path_with("/usr/bin"), STANDARD_PATH);
    }

    #[test]
    fn containerd_config_sets_systemd_cgroup() {
        let c = containerd_config(2, true, None);
        assert!(c.contains("version = 2") && c.contains("SystemdCgroup = true"));
        let v: toml::Value = toml::from_str(&c).unwrap();
        assert_eq!(v["version"].as_integer(), Some(2));
        assert!(containerd_config(3, false, None).contains("io.containerd.cri.v1.runtime"));
    }
}
