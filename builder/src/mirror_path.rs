//! Where a pinned URL lives on a mirror: the same path as upstream
//! (`/release/v1.34.2/bin/linux/amd64/kubelet`). Fetching through `--mirror`
//! ([`crate::inputs::fetch`]), `kiln pin --mirror` and the Ignition image
//! config's remote files ([`crate::outputs::ignition_image`]) all rebase URLs
//! this one way, so a mirror filled by `kiln mirror` serves every one of them.

/// The path part of a URL (`/release/v1.34.2/…`), which mirrors reproduce.
pub fn url_path(url: &str) -> &str {
    let rest = url.split_once("://").map(|(_, r)| r).unwrap_or(url);
    rest.find('/').map(|i| &rest[i..]).unwrap_or("/")
}

/// Rewrites an upstream URL onto a base URL with the same path.
pub fn rebase_url(base: &str, url: &str) -> String {
    format!("{}{}", base.trim_end_matches('/'), url_path(url))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mirror_paths_follow_upstream() {
        let u = "https://dl.k8s.io/release/v1.34.2/bin/linux/amd64/kubelet";
        assert_eq!(url_path(u), "/release/v1.34.2/bin/linux/amd64/kubelet");
        assert_eq!(
            rebase_url("http://127.0.0.1:8080/", u),
            "http://127.0.0.1:8080/release/v1.34.2/bin/linux/amd64/kubelet"
        );
        assert_eq!(url_path("http://host"), "/");
    }
}
