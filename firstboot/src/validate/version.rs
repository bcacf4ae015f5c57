//! Kubernetes versions (`vMAJOR.MINOR.PATCH[-PRE]`, apimachinery's
//! `ParseSemantic`) and kubeadm's version-skew policy between kubeadm, the
//! kubelet and the control plane.

use std::cmp::Ordering;
use std::fmt;

use super::{has_space_or_control, quote};

/// A Kubernetes release version `vMAJOR.MINOR.PATCH[-PRE]`, as `kubeadm
/// version`, `kubelet --version` and `kubernetesVersion` spell it.
///
/// Ordering is semantic-versioning precedence, as Kubernetes'
/// `k8s.io/apimachinery/pkg/util/version` compares: `v1.31.0-rc.1` sorts
/// before `v1.31.0`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Version {
    /// Major version (1 for every Kubernetes release so far).
    pub major: u64,
    /// Minor version: the unit of every skew rule.
    pub minor: u64,
    /// Patch version.
    pub patch: u64,
    /// Pre-release without the dash (`rc.1`, `alpha.0`), empty for a release.
    pub pre: String,
}

impl Version {
    /// `vMAJOR.MINOR.0`, the start of a minor release (without pre-release).
    fn minor_start(major: u64, minor: u64) -> Version {
        Version { major, minor, patch: 0, pre: String::new() }
    }

    /// `vMAJOR.MINOR` for messages.
    fn minor_str(&self) -> String {
        format!("v{}.{}", self.major, self.minor)
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "v{}.{}.{}", self.major, self.minor, self.patch)?;
        if !self.pre.is_empty() {
            write!(f, "-{}", self.pre)?;
        }
        Ok(())
    }
}

/// Semantic-versioning precedence of two pre-release strings (empty = release).
fn cmp_pre(a: &str, b: &str) -> Ordering {
    match (a.is_empty(), b.is_empty()) {
        (true, true) => return Ordering::Equal,
        (true, false) => return Ordering::Greater,
        (false, true) => return Ordering::Less,
        (false, false) => {}
    }
    let mut xs = a.split('.');
    let mut ys = b.split('.');
    loop {
        match (xs.next(), ys.next()) {
            (None, None) => return Ordering::Equal,
            (None, Some(_)) => return Ordering::Less,
            (Some(_), None) => return Ordering::Greater,
            (Some(x), Some(y)) => {
                let o = match (x.parse::<u64>(), y.parse::<u64>()) {
                    (Ok(m), Ok(n)) => m.cmp(&n),
                    (Ok(_), Err(_)) => Ordering::Less,
                    (Err(_), Ok(_)) => Ordering::Greater,
                    (Err(_), Err(_)) => x.cmp(y),
                };
                if o != Ordering::Equal {
                    return o;
                }
            }
        }
    }
}

impl Ord for Version {
    fn cmp(&self, other: &Self) -> Ordering {
        (self.major, self.minor, self.patch)
            .cmp(&(other.major, other.minor, other.patch))
            .then_with(|| cmp_pre(&self.pre, &other.pre))
    }
}

impl PartialOrd for Version {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// Parses `v1.34.2` or `1.34.2`, with an optional pre-release such as
/// `-rc.1` (kept).
///
/// Rule: the semantic-version form Kubernetes parses with
/// `k8s.io/apimachinery/pkg/util/version.ParseSemantic` (used by kubeadm for
/// `kubernetesVersion`, its own version and `kubelet --version`): three
/// numbers without leading zeros, then optionally `-` and dot-separated
/// identifiers of `[0-9A-Za-z-]`. Build metadata (`+…`) is refused: no
/// Kubernetes release carries it and kiln pins releases.
pub fn parse(s: &str) -> Result<Version, String> {
    let bad =
        |why: &str| format!("{} is not a Kubernetes version: {why}; write e.g. v1.34.2 or v1.35.0-rc.1", quote(s));
    if has_space_or_control(s) {
        return Err(bad("it contains whitespace or a control character"));
    }
    let body = s.strip_prefix('v').unwrap_or(s);
    if body.contains('+') {
        return Err(bad("build metadata (`+…`) is not part of a release version"));
    }
    let (core, pre) = match body.split_once('-') {
        Some((c, p)) => (c, Some(p)),
        None => (body, None),
    };
    let nums: Vec<&str> = core.split('.').collect();
    let [major, minor, patch] = nums.as_slice() else {
        return Err(bad("expected three numbers MAJOR.MINOR.PATCH"));
    };
    let num = |p: &str| -> Result<u64, String> {
        if p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad(&format!("{} is not a number", quote(p))));
        }
        if p.len() > 1 && p.starts_with('0') {
            return Err(bad(&format!("{} has a leading zero", quote(p))));
        }
        p.parse().map_err(|_| bad(&format!("{} is too large", quote(p))))
    };
    let (major, minor, patch) = (num(major)?, num(minor)?, num(patch)?);
    let pre = match pre {
        None => String::new(),
        Some(p) => {
            for id in p.split('.') {
                if id.is_empty() {
                    return Err(bad("the pre-release has an empty part"));
                }
                if !id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
                    return Err(bad("the pre-release may hold only A-Z, a-z, 0-9, `-` and `.`"));
                }
                if id.len() > 1 && id.starts_with('0') && id.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(bad("a numeric pre-release part has a leading zero"));
                }
            }
            p.to_string()
        }
    };
    Ok(Version { major, minor, patch, pre })
}

/// How many minor versions older than kubeadm a kubelet may be:
/// `MinimumKubeletVersion = getSkewedKubernetesVersion(-3)` since kubeadm
/// v1.29 (kubernetes/kubernetes#120825), `-1` before.
fn kubeadm_kubelet_skew(kubeadm: &Version) -> u64 {
    if (kubeadm.major, kubeadm.minor) >= (1, 29) {
        3
    } else {
        1
    }
}

/// Checks that an image's kubeadm and kubelet fit the cluster's control
/// plane, for the init node (`joining == false`) or a joining node.
///
/// Rules, in the order checked (minor versions decide, as upstream's do):
/// 1. All three share the major version.
/// 2. The control plane is not newer than kubeadm. On init, kubeadm's
///    `KubernetesVersionCheck` (`cmd/kubeadm/app/preflight/checks.go`) only
///    warns "Kubernetes version is greater than kubeadm version"; kubeadm's
///    skew policy (kubernetes.io, "Creating a cluster with kubeadm", "kubeadm's
///    skew against the Kubernetes version": the control plane is kubeadm's
///    version or one older) does not support it, and on join the kubeadm
///    binary must match the one that created or last upgraded the cluster
///    ("kubeadm's skew against kubeadm"). kiln refuses both.
/// 3. The control plane is at least `MinimumControlPlaneVersion` =
///    `vMAJOR.(kubeadm minor − 1).0` (`cmd/kubeadm/app/constants/constants.go`),
///    enforced by `NormalizeKubernetesVersion`
///    (`cmd/kubeadm/app/util/config/common.go`: "this version of kubeadm only
///    supports deploying clusters with the control plane version >= …") on
///    init and, through `FetchInitConfigurationFromCluster` →
///    `SetClusterDynamicDefaults`, on join.
/// 4. kubelet is not newer than the control plane: on init kubeadm's
///    `KubeletVersionCheck` fails with `[ERROR KubeletVersion]` "the kubelet
///    version is higher than the control plane version"; on join kubeadm runs
///    that check without the cluster version, but the version skew policy
///    (kubernetes.io/releases/version-skew-policy, "kubelet must not be newer
///    than kube-apiserver") still forbids it.
/// 5. kubelet is at least `MinimumKubeletVersion` (same file):
///    `vMAJOR.(kubeadm minor − 3).0` from kubeadm v1.29, `− 1` before
///    (`KubeletVersionCheck`: "Kubelet version … is lower than kubeadm can
///    support").
///
/// The version skew policy's lower bound for kubelet (at most three minor
/// versions older than kube-apiserver, two for kubelets older than v1.25)
/// follows from 3 and 5 and needs no check of its own: kubelet ≥ kubeadm − 3
/// ≥ control plane − 3 from kubeadm v1.29 (whose kubelets are ≥ v1.26), and
/// kubelet ≥ kubeadm − 1 ≥ control plane − 1 before.
pub fn skew(kubeadm: &Version, kubelet: &Version, cluster: &Version, joining: bool) -> Result<(), String> {
    let cp = cluster.minor_str();
    if kubelet.major != cluster.major || kubeadm.major != cluster.major {
        return Err(format!(
            "kubeadm {kubeadm}, kubelet {kubelet} and the {cluster} control plane differ in major version; build the image with kubeadm and kubelet {cp}.x"
        ));
    }
    if cluster.minor > kubeadm.minor {
        return Err(if joining {
            format!(
                "kubeadm {kubeadm} cannot join a {cluster} cluster: the kubeadm used for `kubeadm join` must match the one that created or last upgraded the cluster (kubeadm skew policy); build the image with kubeadm {cp}.x"
            )
        } else {
            format!(
                "kubeadm {kubeadm} cannot deploy a {cluster} control plane: kubeadm deploys its own minor version or the one before it (kubeadm skew policy; kubeadm's KubernetesVersionCheck only warns); build the image with kubeadm {cp}.x"
            )
        });
    }
    let min_cp = Version::minor_start(kubeadm.major, kubeadm.minor.saturating_sub(1));
    if *cluster < min_cp {
        return Err(format!(
            "kubeadm {kubeadm} only supports control planes >= {min_cp} (MinimumControlPlaneVersion, checked by NormalizeKubernetesVersion on init and join), and the cluster is {cluster}; build the image with kubeadm {cp}.x"
        ));
    }
    if kubelet.minor > cluster.minor {
        let rule = if joining {
            "the version skew policy: kubelet must not be newer than kube-apiserver"
        } else {
            "kubeadm's [ERROR KubeletVersion]: the kubelet version is higher than the control plane version"
        };
        return Err(format!(
            "kubelet {kubelet} is newer than the {cluster} control plane ({rule}); build the image with kubelet {cp}.x for a {cp} cluster"
        ));
    }
    let n = kubeadm_kubelet_skew(kubeadm);
    let min_kubelet = Version::minor_start(kubeadm.major, kubeadm.minor.saturating_sub(n));
    if *kubelet < min_kubelet {
        return Err(format!(
            "kubelet {kubelet} is older than kubeadm {kubeadm} supports ([ERROR KubeletVersion]: MinimumKubeletVersion is {min_kubelet}, kubeadm's minor version - {n}); build the image with kubelet {cp}.x for a {cp} cluster"
        ));
    }
    Ok(())
}

/// The kubeadm configuration API version kiln renders for a kubeadm binary.
/// The kubeadm binary's version decides (it is the program that reads the
/// file), not the control plane's: kubeadm v1.31 deploying a v1.30 control
/// plane reads v1beta4.
///
/// Rules:
/// * `kubeadm.k8s.io/v1beta4` from kubeadm v1.31 (kubernetes/kubernetes#125029,
///   "kubeadm: enable the v1beta4 API"; v1beta3 is deprecated from then on).
/// * `kubeadm.k8s.io/v1beta3` from kubeadm v1.22 (kubernetes/kubernetes#101129,
///   which added v1beta3 and removed v1beta1).
/// * Older kubeadm only reads v1beta2, which kiln does not render (and which
///   kubeadm v1.27 removed: kubernetes/kubernetes#114540): an error.
pub fn api_version_for_kubeadm(kubeadm: &Version) -> Result<&'static str, String> {
    match (kubeadm.major, kubeadm.minor) {
        (1, m) if m >= 31 => Ok("kubeadm.k8s.io/v1beta4"),
        (1, m) if m >= 22 => Ok("kubeadm.k8s.io/v1beta3"),
        (1, _) => Err(format!(
            "kubeadm {kubeadm} predates the kubeadm.k8s.io/v1beta3 configuration (added in v1.22) and kiln renders only v1beta3 and v1beta4; build the image with kubeadm v1.22 or newer (v1.25 or newer for kiln's kubelet patches)"
        )),
        _ => Err(format!(
            "kubeadm {kubeadm} has a major version kiln does not know; kiln renders kubeadm.k8s.io/v1beta3 and v1beta4 for kubeadm v1.x"
        )),
    }
}

/// Whether kubeadm applies `kubeletconfiguration` patches (`--patches` /
/// `patches.directory` with a `kubeletconfiguration+….json` file), which kiln
/// uses for node-specific KubeletConfiguration fields.
///
/// Rule: the `kubeletconfiguration` patch target was added in kubeadm v1.25
/// (kubernetes/kubernetes#110405, CHANGELOG-1.25); older kubeadm ignores
/// the patch ("ignoring patch target kubeletconfiguration", kubernetes/kubeadm#2860).
pub fn supports_kubelet_patches(kubeadm: &Version) -> bool {
    (kubeadm.major, kubeadm.minor) >= (1, 25)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &str) -> Version {
        parse(s).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn versions_parse_compare_and_print() {
        let x = v("v1.34.2");
        assert_eq!((x.major, x.minor, x.patch, x.pre.as_str()), (1, 34, 2, ""));
        assert_eq!(x.to_string(), "v1.34.2");
        assert_eq!(v("1.34.2"), x);
        let rc = v("v1.35.0-rc.1");
        assert_eq!(rc.pre, "rc.1");
        assert_eq!(rc.to_string(), "v1.35.0-rc.1");
        assert!(v("v1.35.0-rc.1") < v("v1.35.0"));
        assert!(v("v1.35.0-alpha.2") < v("v1.35.0-beta.0"));
        assert!(v("v1.35.0-rc.2") < v("v1.35.0-rc.10"));
        assert!(v("v1.35.0-rc") < v("v1.35.0-rc.1"));
        assert!(v("v1.34.10") > v("v1.34.9"));
        assert!(v("v1.9.0") < v("v1.10.0"));
        for bad in [
            "",
            "1.34",
            "v1.x.2",
            "v1.34.2.1",
            "latest",
            "v1.34.2 ",
            "v1.34.02",
            "v01.34.2",
            "v1.34.2-",
            "v1.34.2-rc..1",
            "v1.34.2-rc.01",
            "v1.34.2+k3s1",
            "v1.34.2-r_c",
            "vv1.34.2",
            "v-1.34.2",
            "v1.34.99999999999999999999",
            "stable-1.34",
        ] {
            assert!(parse(bad).is_err(), "{bad:?} was accepted");
        }
        assert!(parse("1.34").unwrap_err().contains("e.g. v1.34.2"));
    }

    #[test]
    fn skew_on_init() {
        let ok = [
            ("v1.34.2", "v1.34.2", "v1.34.2"),
            ("v1.34.2", "v1.33.0", "v1.33.5"), // kubeadm one newer than the control plane
            ("v1.34.2", "v1.31.0", "v1.34.0"), // kubelet three older than kubeadm (>= 1.29)
            ("v1.34.0-rc.1", "v1.34.0-rc.1", "v1.34.0-rc.1"),
        ];
        for (a, l, c) in ok {
            assert_eq!(skew(&v(a), &v(l), &v(c), false), Ok(()), "{a} {l} {c}");
        }
        let bad = [
            // Control plane newer than kubeadm.
            ("v1.33.2", "v1.33.2", "v1.34.0", "cannot deploy a v1.34.0 control plane", "kubeadm v1.34.x"),
            // Control plane two older than kubeadm: MinimumControlPlaneVersion.
            ("v1.34.2", "v1.32.0", "v1.32.9", "only supports control planes >= v1.33.0", "kubeadm v1.32.x"),
            // A pre-release of the minimum is below it, as kubeadm compares.
            ("v1.34.2", "v1.33.0-rc.1", "v1.33.0-rc.1", ">= v1.33.0", "kubeadm v1.33.x"),
            // kubelet newer than the control plane.
            ("v1.35.0", "v1.35.0", "v1.34.2", "[ERROR KubeletVersion]", "kubelet v1.34.x for a v1.34 cluster"),
            // kubelet below MinimumKubeletVersion (kubeadm 1.34 - 3 = 1.31).
            ("v1.34.2", "v1.30.9", "v1.33.0", "MinimumKubeletVersion is v1.31.0", "kubelet v1.33.x"),
            // Before kubeadm 1.29 the kubelet could trail by one only.
            ("v1.28.4", "v1.26.0", "v1.28.4", "kubeadm's minor version - 1", "kubelet v1.28.x"),
            // Different major versions.
            ("v1.34.2", "v2.0.0", "v1.34.2", "major version", "kubelet v1.34.x"),
        ];
        for (a, l, c, rule, fix) in bad {
            let e = skew(&v(a), &v(l), &v(c), false).expect_err(&format!("{a} {l} {c}"));
            assert!(e.contains(rule) && e.contains(fix), "{a} {l} {c}: {e}");
        }
    }

    #[test]
    fn skew_on_join() {
        assert_eq!(skew(&v("v1.34.2"), &v("v1.34.2"), &v("v1.34.1"), true), Ok(()));
        assert_eq!(skew(&v("v1.34.2"), &v("v1.32.3"), &v("v1.34.1"), true), Ok(()));
        let e = skew(&v("v1.33.2"), &v("v1.33.2"), &v("v1.34.0"), true).unwrap_err();
        assert!(e.contains("cannot join a v1.34.0 cluster") && e.contains("kubeadm v1.34.x"), "{e}");
        let e = skew(&v("v1.34.2"), &v("v1.35.0"), &v("v1.34.0"), true).unwrap_err();
        assert!(e.contains("kubelet must not be newer than kube-apiserver"), "{e}");
        assert!(e.contains("build the image with kubelet v1.34.x for a v1.34 cluster"), "{e}");
        let e = skew(&v("v1.36.0"), &v("v1.34.0"), &v("v1.34.0"), true).unwrap_err();
        assert!(e.contains("MinimumControlPlaneVersion"), "{e}");
    }

    #[test]
    fn kubelet_minimum_follows_the_kubeadm_version() {
        // kubeadm v1.29+: kubelet may trail kubeadm by three minor versions.
        assert_eq!(skew(&v("v1.29.0"), &v("v1.26.0"), &v("v1.28.0"), false), Ok(()));
        let e = skew(&v("v1.29.0"), &v("v1.25.9"), &v("v1.28.0"), false).unwrap_err();
        assert!(e.contains("MinimumKubeletVersion is v1.26.0") && e.contains("minor version - 3"), "{e}");
        // kubeadm v1.28: one only, although the skew policy would allow three.
        let e = skew(&v("v1.28.0"), &v("v1.26.0"), &v("v1.28.0"), true).unwrap_err();
        assert!(e.contains("MinimumKubeletVersion is v1.27.0") && e.contains("minor version - 1"), "{e}");
        assert_eq!(skew(&v("v1.28.0"), &v("v1.27.3"), &v("v1.28.0"), true), Ok(()));
    }

    #[test]
    fn kubeadm_api_versions() {
        assert_eq!(api_version_for_kubeadm(&v("v1.35.0")), Ok("kubeadm.k8s.io/v1beta4"));
        assert_eq!(api_version_for_kubeadm(&v("v1.31.0")), Ok("kubeadm.k8s.io/v1beta4"));
        assert_eq!(api_version_for_kubeadm(&v("v1.30.14")), Ok("kubeadm.k8s.io/v1beta3"));
        assert_eq!(api_version_for_kubeadm(&v("v1.22.0")), Ok("kubeadm.k8s.io/v1beta3"));
        let e = api_version_for_kubeadm(&v("v1.21.14")).unwrap_err();
        assert!(e.contains("v1beta3") && e.contains("v1.22 or newer"), "{e}");
        assert!(api_version_for_kubeadm(&v("v2.0.0")).is_err());
        assert!(supports_kubelet_patches(&v("v1.25.0")));
        assert!(supports_kubelet_patches(&v("v1.34.2")));
        assert!(!supports_kubelet_patches(&v("v1.24.17")));
    }
}
