//! `[node]` knobs that are kubeadm's own: `kubeadm_timeouts` (v1beta4's
//! `Timeouts`), `image_pull_policy` (`NodeRegistrationOptions.ImagePullPolicy`)
//! and `static_pod_patches` (files in `patches.directory`), each checked against
//! the kubeadm source that reads it, so a typo fails at first boot with the valid
//! names instead of as a strict-decoding error inside `kubeadm init`.

use std::time::Duration;

use super::duration::go_duration;
use super::quote;
use super::suggest::did_you_mean;

/// The fields of kubeadm v1beta4's `Timeouts` with kubeadm's default for each.
///
/// Source: `cmd/kubeadm/app/apis/kubeadm/v1beta4/types.go`, `type Timeouts struct`
/// (k8s.io/kubernetes v1.34.2; the struct is added in v1.31, `v1beta4/doc.go`), the
/// same struct in `InitConfiguration.Timeouts` and `JoinConfiguration.Timeouts`,
/// each a `*metav1.Duration`; defaults from `cmd/kubeadm/app/constants/constants.go`
/// (`ControlPlaneComponentHealthCheckTimeout` … `UpgradeManifestsTimeout`), applied
/// by `v1beta4/defaults.go` `SetDefaults_Timeouts`. Sorted by name.
pub const TIMEOUTS: [(&str, Duration); 7] = [
    ("controlPlaneComponentHealthCheck", Duration::from_secs(4 * 60)),
    ("discovery", Duration::from_secs(5 * 60)),
    ("etcdAPICall", Duration::from_secs(2 * 60)),
    ("kubeletHealthCheck", Duration::from_secs(4 * 60)),
    ("kubernetesAPICall", Duration::from_secs(60)),
    ("tlsBootstrap", Duration::from_secs(5 * 60)),
    ("upgradeManifests", Duration::from_secs(5 * 60)),
];

/// kubeadm's default for the `Timeouts` field `name`, if it is one.
pub fn timeout_default(name: &str) -> Option<Duration> {
    TIMEOUTS.iter().find(|(n, _)| *n == name).map(|(_, d)| *d)
}

/// Checks one `kubeadm_timeouts` key: a field of v1beta4's `Timeouts`, spelled as
/// kubeadm's JSON names it (kubeadm decodes strictly: any other name makes it refuse
/// the whole file).
pub fn timeout_field(name: &str) -> Result<(), String> {
    if timeout_default(name).is_some() {
        return Ok(());
    }
    let names: Vec<&str> = TIMEOUTS.iter().map(|(n, _)| *n).collect();
    let hint = match did_you_mean(name, names.iter().copied()) {
        Some(s) => format!(" (did you mean `{s}`?)"),
        None => String::new(),
    };
    Err(format!(
        "{} is not a field of kubeadm's Timeouts (kubeadm.k8s.io/v1beta4){hint}; the fields are {}",
        quote(name),
        names.join(", ")
    ))
}

/// Checks one `kubeadm_timeouts` value: a positive Go duration (kubeadm decodes a
/// `metav1.Duration` with `time.ParseDuration`). Zero or negative would make kubeadm
/// give up at once (`wait.PollUntilContextTimeout` with no time left), so both are
/// refused.
pub fn timeout_value(name: &str, value: &str) -> Result<Duration, String> {
    let d = go_duration(value).map_err(|e| format!("{name}: {e}"))?;
    if d.is_zero() {
        return Err(format!(
            "{name}: {} is zero: kubeadm would stop waiting at once; give a positive duration such as {}",
            quote(value),
            humanize(timeout_default(name).unwrap_or(Duration::from_secs(240)))
        ));
    }
    Ok(d)
}

/// `4m0s`-style text of `d` in whole seconds, as Go prints a duration.
pub fn humanize(d: Duration) -> String {
    let s = d.as_secs();
    match (s / 3600, s / 60 % 60, s % 60) {
        (0, 0, s) => format!("{s}s"),
        (0, m, s) => format!("{m}m{s}s"),
        (h, m, s) => format!("{h}h{m}m{s}s"),
    }
}

/// The values `image_pull_policy` may take: `corev1.PullPolicy`'s, as kubeadm's
/// `ValidateImagePullPolicy` accepts them (`cmd/kubeadm/app/apis/kubeadm/validation/validation.go`).
pub const PULL_POLICIES: [&str; 3] = ["Always", "IfNotPresent", "Never"];

/// The control-plane static pods kubeadm patches from `patches.directory`: the
/// `knownTargets` of `cmd/kubeadm/app/util/patches/patches.go` that are static pods
/// (`kubeletconfiguration` is kiln's own `[node] kubelet` patch, `corednsdeployment`
/// a Deployment kubeadm creates once for the cluster, not this node's).
pub const STATIC_POD_TARGETS: [&str; 4] = ["etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler"];

/// Patch types kiln writes for a static pod patch given as a TOML table, with the
/// file name suffix kubeadm reads it by (`patches.go`, `patchTypes`): a strategic
/// merge patch (the default, which merges `spec.containers` by `name`) or a JSON
/// merge patch (RFC 7386, which replaces lists whole). A JSON patch (RFC 6902) is a
/// list, not a table, so it is not offered.
pub const PATCH_TYPES: [&str; 2] = ["strategic", "merge"];

/// Splits a `static_pod_patches` key `TARGET[+TYPE]` into the target and the patch
/// type (`strategic` when none is given), or says why it is not one.
pub fn static_pod_target(key: &str) -> Result<(&str, &str), String> {
    let (target, kind) = match key.split_once('+') {
        Some((t, k)) => (t, k),
        None => (key, "strategic"),
    };
    if !STATIC_POD_TARGETS.contains(&target) {
        let why = if target == "kubeletconfiguration" {
            " (kubelet settings go in [node] kubelet, which kiln writes as this patch)".to_string()
        } else {
            match did_you_mean(target, STATIC_POD_TARGETS) {
                Some(s) => format!(" (did you mean `{s}`?)"),
                None => String::new(),
            }
        };
        return Err(format!(
            "{} is not a static pod kubeadm patches{why}; the targets are {}",
            quote(target),
            STATIC_POD_TARGETS.join(", ")
        ));
    }
    if !PATCH_TYPES.contains(&kind) {
        return Err(format!(
            "{}: unknown patch type {}; write `{target}` (a strategic merge patch) or `{target}+merge` (a JSON merge patch)",
            quote(key),
            quote(kind)
        ));
    }
    Ok((target, kind))
}

/// The file kubeadm reads a patch of `target` with patch type `kind` from:
/// `target[suffix][+patchtype].extension` (`patches.go`, `parseFilename`).
pub fn static_pod_patch_file(target: &str, kind: &str) -> String {
    format!("{target}+{kind}.json")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeout_fields_are_kubeadms_with_suggestions() {
        for (n, _) in TIMEOUTS {
            assert!(timeout_field(n).is_ok(), "{n}");
        }
        let names: Vec<&str> = TIMEOUTS.iter().map(|(n, _)| *n).collect();
        let mut sorted = names.clone();
        sorted.sort();
        assert_eq!(names, sorted);
        let e = timeout_field("kubeletHealthcheck").unwrap_err();
        assert!(e.contains("did you mean `kubeletHealthCheck`?") && e.contains("upgradeManifests"), "{e}");
        let e = timeout_field("timeoutForControlPlane").unwrap_err();
        assert!(e.contains("controlPlaneComponentHealthCheck"), "{e}");
    }

    #[test]
    fn timeout_values_are_positive_go_durations() {
        assert_eq!(timeout_value("kubeletHealthCheck", "8m"), Ok(Duration::from_secs(480)));
        assert_eq!(timeout_value("discovery", "10m0s"), Ok(Duration::from_secs(600)));
        let e = timeout_value("kubeletHealthCheck", "-1m").unwrap_err();
        assert!(e.starts_with("kubeletHealthCheck: ") && e.contains("negative"), "{e}");
        let e = timeout_value("kubeletHealthCheck", "0s").unwrap_err();
        assert!(e.contains("zero") && e.contains("4m0s"), "{e}");
        let e = timeout_value("discovery", "ten minutes").unwrap_err();
        assert!(e.contains("not a Go duration"), "{e}");
    }

    #[test]
    fn static_pod_targets_and_types() {
        assert_eq!(static_pod_target("kube-apiserver"), Ok(("kube-apiserver", "strategic")));
        assert_eq!(static_pod_target("etcd+merge"), Ok(("etcd", "merge")));
        let e = static_pod_target("kube-apiservr").unwrap_err();
        assert!(e.contains("did you mean `kube-apiserver`?") && e.contains("kube-scheduler"), "{e}");
        assert!(static_pod_target("kubeletconfiguration").unwrap_err().contains("[node] kubelet"));
        assert!(static_pod_target("etcd+json").unwrap_err().contains("unknown patch type"));
        assert_eq!(static_pod_patch_file("etcd", "strategic"), "etcd+strategic.json");
        assert_eq!(humanize(Duration::from_secs(3725)), "1h2m5s");
    }
}
