//! containerd's `/etc/containerd/config.toml`: what kiln writes, and what a
//! config (kiln's or an overlay's) means to containerd.
//!
//! Two settings matter to a kubeadm node: the runc runtime's `SystemdCgroup`
//! (must equal kubelet's cgroup driver, or `kubeadm init` hangs) and the
//! sandbox (pause) image (should equal kubeadm's, or pods may be stuck in
//! ContainerCreating where the image cannot be pulled; kubeadm's preflight
//! warns "detected that the sandbox image ... of the container runtime is
//! inconsistent with that used by kubeadm", `cmd/kubeadm/app/preflight/checks.go`).
//!
//! Where they live depends on the config's `version`, by containerd v2.1.5's
//! rules (module cache `github.com/containerd/containerd/v2@v2.1.5`):
//! * version 1 (or no `version`): short plugin names, renamed by `v1Migrate`
//!   (`cmd/containerd/server/config/config.go`, `v1MigratePluginName`: `cri` →
//!   `io.containerd.grpc.v1.cri`), then read as version 2;
//! * version 2 (containerd 1.7 and 2.x): everything under
//!   `plugins."io.containerd.grpc.v1.cri"`: `containerd.runtimes.runc.options`
//!   and `sandbox_image`. containerd 2.x migrates it (`configMigration` in
//!   `plugins/cri/runtime/plugin.go`: `containerd.*` keys the new table lacks
//!   move to `io.containerd.cri.v1.runtime`; `plugins/cri/images/plugin.go`:
//!   `sandbox_image` → `io.containerd.cri.v1.images` `pinned_images.sandbox`);
//! * version 3 (containerd 2.x, `version.ConfigVersion`):
//!   `plugins."io.containerd.cri.v1.runtime".containerd.runtimes.runc.options`
//!   and `plugins."io.containerd.cri.v1.images".pinned_images.sandbox`.
//!
//! A version-2 config that writes the version-3 tables is read by containerd
//! 2.x (plugin configs are keyed by plugin ID) but not by containerd 1.7, which
//! has no such plugins: kiln refuses it ([`Effective::misplaced`]), since
//! version 2 is chosen exactly so that both read it.

/// containerd's CRI plugin ID in config version 2 (`plugins.GRPCPlugin` + `.cri`).
pub const V2_CRI: &str = "io.containerd.grpc.v1.cri";
/// containerd 2.x's CRI runtime plugin ID (`plugins.CRIServicePlugin` + `.runtime`).
pub const V3_RUNTIME: &str = "io.containerd.cri.v1.runtime";
/// containerd 2.x's CRI image plugin ID (`plugins.CRIServicePlugin` + `.images`).
pub const V3_IMAGES: &str = "io.containerd.cri.v1.images";

/// The pause image kubeadm uses for a kubeadm minor version:
/// `registry.k8s.io/pause:` + `constants.PauseVersion`
/// (`cmd/kubeadm/app/constants/constants.go`; `images.GetPauseImage`), read
/// from k8s.io/kubernetes v1.33.6 (`3.10`) and v1.34.2 (`3.10.1`) in the module
/// cache and checked against the real `kubeadm config images list` by
/// `builder/tests/containerd.rs`. `None` for a minor kiln has not checked.
pub fn kubeadm_pause_image(major: u64, minor: u64) -> Option<&'static str> {
    match (major, minor) {
        (1, 33) => Some("registry.k8s.io/pause:3.10"),
        (1, 34) => Some("registry.k8s.io/pause:3.10.1"),
        _ => None,
    }
}

/// The config kiln writes: `version` 2 or 3, the runc runtime's `SystemdCgroup`
/// and, when known, the sandbox image, each at its version's path (module doc).
pub fn render(version: u8, systemd_cgroup: bool, sandbox: Option<&str>) -> String {
    let mut out = format!("# Written by kiln: the runtime and kubelet share one cgroup driver.\nversion = {version}\n");
    let runtime = if version >= 3 { V3_RUNTIME } else { V2_CRI };
    if let Some(image) = sandbox {
        let image = toml::Value::String(image.to_string());
        if version >= 3 {
            out.push_str(&format!(
                "\n# kubeadm's pause image.\n[plugins.\"{V3_IMAGES}\".pinned_images]\n  sandbox = {image}\n"
            ));
        } else {
            out.push_str(&format!("\n# kubeadm's pause image.\n[plugins.\"{V2_CRI}\"]\n  sandbox_image = {image}\n"));
        }
    }
    out.push_str(&format!(
        "\n[plugins.\"{runtime}\".containerd.runtimes.runc]\n  runtime_type = \"io.containerd.runc.v2\"\n\n[plugins.\"{runtime}\".containerd.runtimes.runc.options]\n  SystemdCgroup = {systemd_cgroup}\n"
    ));
    out
}

/// What a containerd config sets, as containerd 2.x reads it after migration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Effective {
    /// The config's `version` (1 when absent, as containerd treats it).
    pub version: i64,
    /// The runc runtime's `SystemdCgroup`, when set (containerd's default is false).
    pub systemd_cgroup: Option<bool>,
    /// The sandbox image, when set (containerd's default is `pause:3.10`).
    pub sandbox: Option<String>,
    /// Tables of a newer version's schema in an older config (`version = 2`
    /// with `io.containerd.cri.v1.*`): containerd 1.7 ignores them.
    pub misplaced: Vec<String>,
}

/// Reads `text` by containerd's rules (module doc). `Err` is a TOML error with
/// its `line:col`, or a wrongly typed setting.
pub fn read(text: &str) -> Result<Effective, String> {
    let doc: toml::Table = text.parse().map_err(|e: toml::de::Error| {
        let at = e.span().map(|s| line_col(text, s.start)).unwrap_or_default();
        format!("{at}{}", e.message())
    })?;
    let version = match doc.get("version") {
        None => 1,
        Some(toml::Value::Integer(v)) => *v,
        Some(other) => return Err(format!("`version` is {}, not an integer", other.type_str())),
    };
    let empty = toml::Table::new();
    let plugins = match doc.get("plugins") {
        None => &empty,
        Some(toml::Value::Table(t)) => t,
        Some(other) => return Err(format!("`plugins` is {}, not a table", other.type_str())),
    };
    // v1Migrate: `cri` is the version-1 name of io.containerd.grpc.v1.cri.
    let v2_name = if version <= 1 { "cri" } else { V2_CRI };
    let table = |name: &str| plugins.get(name).and_then(toml::Value::as_table);
    let misplaced = if version < 3 {
        [V3_RUNTIME, V3_IMAGES].iter().filter(|n| plugins.contains_key(**n)).map(|n| n.to_string()).collect()
    } else {
        Vec::new()
    };
    let runc_systemd = |cri: Option<&toml::Table>| -> Result<Option<bool>, String> {
        let v = dig(cri, &["containerd", "runtimes", "runc", "options", "SystemdCgroup"]);
        match v {
            None => Ok(None),
            Some(toml::Value::Boolean(b)) => Ok(Some(*b)),
            Some(other) => Err(format!("SystemdCgroup is {}, not true or false", other.type_str())),
        }
    };
    let string_at = |t: Option<&toml::Table>, path: &[&str], what: &str| -> Result<Option<String>, String> {
        match dig(t, path) {
            None => Ok(None),
            Some(toml::Value::String(s)) => Ok(Some(s.clone())),
            Some(other) => Err(format!("{what} is {}, not a string", other.type_str())),
        }
    };
    let new_runtime = table(V3_RUNTIME);
    let new_images = table(V3_IMAGES);
    let new_sandbox = string_at(new_images, &["pinned_images", "sandbox"], "pinned_images.sandbox")?;
    let (systemd_cgroup, sandbox) = if version >= 3 {
        (runc_systemd(new_runtime)?, new_sandbox)
    } else {
        let old = table(v2_name);
        // plugins/cri/runtime/plugin.go migrateConfig: a `containerd` key the
        // new table already has wins, so `runtimes` comes from one side only.
        let new_has_runtimes = dig(new_runtime, &["containerd", "runtimes"]).is_some();
        let systemd = if new_has_runtimes { runc_systemd(new_runtime)? } else { runc_systemd(old)? };
        // plugins/cri/images/plugin.go migrateConfig: `sandbox_image` overrides.
        let sandbox = string_at(old, &["sandbox_image"], "sandbox_image")?.or(new_sandbox);
        (systemd, sandbox)
    };
    Ok(Effective { version, systemd_cgroup, sandbox, misplaced })
}

fn dig<'a>(t: Option<&'a toml::Table>, path: &[&str]) -> Option<&'a toml::Value> {
    let (last, inner) = path.split_last()?;
    let mut t = t?;
    for key in inner {
        t = t.get(*key)?.as_table()?;
    }
    t.get(*last)
}

fn line_col(text: &str, offset: usize) -> String {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    format!("{line}:{col}: ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_version_puts_the_settings_where_that_version_reads_them() {
        for v in [2, 3] {
            let text = render(v, true, Some("registry.k8s.io/pause:3.10.1"));
            let e = read(&text).unwrap();
            assert_eq!(e.version, i64::from(v));
            assert_eq!(e.systemd_cgroup, Some(true), "{text}");
            assert_eq!(e.sandbox.as_deref(), Some("registry.k8s.io/pause:3.10.1"), "{text}");
            assert!(e.misplaced.is_empty(), "{text}");
            assert_eq!(read(&render(v, false, None)).unwrap().systemd_cgroup, Some(false));
        }
        // Version 2 keeps everything under the CRI plugin containerd 1.7 knows.
        let v2 = render(2, true, Some("registry.k8s.io/pause:3.10.1"));
        let t: toml::Table = v2.parse().unwrap();
        let cri = t["plugins"][V2_CRI].as_table().unwrap();
        assert_eq!(cri["containerd"]["runtimes"]["runc"]["options"]["SystemdCgroup"].as_bool(), Some(true), "{v2}");
        assert_eq!(cri["sandbox_image"].as_str(), Some("registry.k8s.io/pause:3.10.1"), "{v2}");
        assert_eq!(t["plugins"].as_table().unwrap().len(), 1, "{v2}");
    }

    #[test]
    fn a_version_2_config_with_version_3_tables_is_misplaced() {
        let text = render(2, true, None).replace(V2_CRI, V3_RUNTIME);
        let e = read(&text).unwrap();
        assert_eq!(e.misplaced, vec![V3_RUNTIME.to_string()]);
        // A version-3 config written with the version-2 path sets nothing.
        let e = read(&render(3, true, None).replace(V3_RUNTIME, V2_CRI)).unwrap();
        assert_eq!(e.systemd_cgroup, None);
    }

    #[test]
    fn version_1_uses_short_names_and_errors_are_located() {
        let e = read("[plugins.cri]\nsandbox_image = \"p:1\"\n[plugins.cri.containerd.runtimes.runc.options]\nSystemdCgroup = true\n")
            .unwrap();
        assert_eq!((e.version, e.systemd_cgroup, e.sandbox.as_deref()), (1, Some(true), Some("p:1")));
        let err = read("version = 2\n[plugins\n").unwrap_err();
        assert!(err.starts_with("2:"), "{err}");
        let err = read("version = 2\n[plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.runc.options]\nSystemdCgroup = \"yes\"\n")
            .unwrap_err();
        assert!(err.contains("not true or false"), "{err}");
    }
}
