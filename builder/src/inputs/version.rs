//! Kubernetes-style versions (`v1.34.2`) and the skew arithmetic the checks need.

/// The version type is firstboot's (one type for both programs, with semantic-version
/// ordering: `v1.31.0-rc.1` < `v1.31.0`); the builder adds its stricter parser
/// and the skew arithmetic its checks need.
pub use kiln_firstboot::contract::validate::version::Version;

/// A Kubernetes release version as kiln stores it: `v` + semver (`v1.34.2`).
/// A version without the `v` is refused with the spelling to use, in
/// profiles (`kubernetes_version`), `kiln cluster init --kubernetes-version`
/// and `kiln pin --version` alike: release tags, dl.k8s.io paths and the
/// versions kiln writes for kubeadm all carry it.
pub fn kubernetes(s: &str) -> Result<Version, String> {
    let v = Version::parse(s)?;
    if !s.starts_with('v') {
        return Err(format!(
            "{} has no leading `v`: write \"{v}\" (Kubernetes versions are spelled like its release tags)",
            crate::inputs::validate::show(s)
        ));
    }
    Ok(v)
}

/// The builder's view of a [`Version`].
pub trait VersionExt: Sized {
    /// Parses `v1.34.2` or `1.34.2` (with an optional `-rc.1` style suffix).
    ///
    /// Numbers have at most six digits and the suffix is semver's pre-release
    /// alphabet (`[0-9A-Za-z.-]`, at most 32 characters): versions name
    /// output files (`kubernetes-<version>-<arch>.raw`) and land in units.
    fn parse(s: &str) -> Result<Self, String>;
    /// Minor-version distance `self - other` within the same major version.
    fn minor_delta(&self, other: &Version) -> i64;
    /// True when this version is at least `major.minor`.
    fn at_least(&self, major: u64, minor: u64) -> bool;
}

impl VersionExt for Version {
    fn parse(s: &str) -> Result<Self, String> {
        let body = s.strip_prefix('v').unwrap_or(s);
        let (core, pre) = match body.split_once('-') {
            Some((c, p)) => (c, p.to_string()),
            None => (body, String::new()),
        };
        let pre_ok = pre.len() <= 32
            && pre.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-')
            && !pre.split('.').any(str::is_empty);
        if !(pre.is_empty() || pre_ok) {
            return Err(format!(
                "{} is not a version like v1.34.2 or v1.35.0-rc.1 (the suffix after `-` uses only 0-9, A-Z, a-z, `.`, `-`)",
                crate::inputs::validate::show(s)
            ));
        }
        let parts: Vec<&str> = core.split('.').collect();
        let num = |p: &str| {
            p.parse::<u64>().ok().filter(|_| !p.is_empty() && p.len() <= 6 && p.bytes().all(|b| b.is_ascii_digit()))
        };
        match parts.as_slice() {
            [a, b, c] => match (num(a), num(b), num(c)) {
                (Some(major), Some(minor), Some(patch)) => Ok(Version { major, minor, patch, pre }),
                _ => Err(format!(
                    "{} is not a version like v1.34.2 (numbers of at most six digits)",
                    crate::inputs::validate::show(s)
                )),
            },
            _ => Err(format!("{} is not a version like v1.34.2 (three numbers)", crate::inputs::validate::show(s))),
        }
    }

    fn minor_delta(&self, other: &Version) -> i64 {
        let d = (i128::from(self.major) - i128::from(other.major)) * 1000 + i128::from(self.minor)
            - i128::from(other.minor);
        i64::try_from(d).unwrap_or(if d < 0 { i64::MIN } else { i64::MAX })
    }

    fn at_least(&self, major: u64, minor: u64) -> bool {
        (self.major, self.minor) >= (major, minor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_compares() {
        let v = Version::parse("v1.34.2").unwrap();
        assert_eq!((v.major, v.minor, v.patch), (1, 34, 2));
        assert_eq!(v.to_string(), "v1.34.2");
        assert_eq!(Version::parse("1.31.0-rc.1").unwrap().pre, "rc.1");
        assert!(v.at_least(1, 27) && !v.at_least(1, 35));
        // Semantic-version order: a release candidate comes before its release.
        assert!(Version::parse("v1.31.0-rc.1").unwrap() < Version::parse("v1.31.0").unwrap());
        assert_eq!(v.minor_delta(&Version::parse("v1.31.9").unwrap()), 3);
        for bad in
            ["1.34", "v1.x.2", "", "v1.34.2.1", "latest", "v1.34.2-a/../b", "v1.34.2-rc\n1", "v1.34.+2", "v1234567.0.0"]
        {
            assert!(Version::parse(bad).is_err(), "{bad}");
        }
    }
}
