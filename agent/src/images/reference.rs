//! Image references, normalized as Docker does, and the kubelet's pull policies.

use oci_client::Reference;

use super::ImageError;

/// When the kubelet pulls an image (`container.imagePullPolicy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PullPolicy {
    /// Ask the registry every time; reuse the local copy when the digest did not change.
    Always,
    /// Pull only when the image is not present locally.
    IfNotPresent,
    /// Never pull: the image must be present (pre-loaded or imported).
    Never,
}

impl PullPolicy {
    /// The policy of a container spec: `policy` as written (`""` when unset) and the container's
    /// image. Unset or unknown policies get the upstream default: `Always` when the tag is
    /// `latest` or absent (and no digest is given), `IfNotPresent` otherwise.
    pub fn from_k8s(policy: &str, image: &str) -> PullPolicy {
        match policy {
            "Always" => PullPolicy::Always,
            "IfNotPresent" => PullPolicy::IfNotPresent,
            "Never" => PullPolicy::Never,
            _ => match image.trim().parse::<Reference>() {
                // oci-spec fills in `latest` when neither a tag nor a digest is given.
                Ok(r) if r.tag() == Some("latest") => PullPolicy::Always,
                _ => PullPolicy::IfNotPresent,
            },
        }
    }
}

/// A parsed, normalized image reference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ImageRef {
    /// `docker.io`, `127.0.0.1:5000`, ...
    pub registry: String,
    /// `library/busybox`
    pub repository: String,
    pub tag: Option<String>,
    /// `sha256:...`
    pub digest: Option<String>,
}

impl ImageRef {
    pub fn parse(s: &str) -> Result<ImageRef, ImageError> {
        let s = s.trim();
        if s.is_empty() {
            return Err(ImageError::InvalidReference("empty image reference".into()));
        }
        let r: Reference = s
            .parse()
            .map_err(|e| ImageError::InvalidReference(format!("{s:?}: {e}")))?;
        if r.repository().chars().any(|c| c.is_ascii_uppercase()) {
            return Err(ImageError::InvalidReference(format!(
                "{s:?}: repository name must be lowercase"
            )));
        }
        if let Some(d) = r.digest() {
            if !d.starts_with("sha256:") {
                return Err(ImageError::InvalidReference(format!(
                    "{s:?}: only sha256 digests are supported"
                )));
            }
        }
        Ok(ImageRef {
            registry: r.registry().to_string(),
            repository: r.repository().to_string(),
            tag: r.tag().map(str::to_string),
            digest: r.digest().map(str::to_string),
        })
    }

    /// `registry/repository`, e.g. `docker.io/library/busybox`.
    pub fn repo(&self) -> String {
        format!("{}/{}", self.registry, self.repository)
    }

    /// The normalized reference: `docker.io/library/busybox:latest`, `repo@sha256:...`.
    pub fn normalized(&self) -> String {
        let mut s = self.repo();
        if let Some(t) = &self.tag {
            s.push(':');
            s.push_str(t);
        }
        if let Some(d) = &self.digest {
            s.push('@');
            s.push_str(d);
        }
        s
    }

    /// The oci-client reference of this image at `host` (a mirror or the registry itself),
    /// under `repository` (after a mirror's rewrite).
    pub fn at(&self, host: &str, repository: &str) -> Reference {
        match (&self.tag, &self.digest) {
            (_, Some(d)) => {
                Reference::with_digest(host.to_string(), repository.to_string(), d.clone())
            }
            (Some(t), None) => {
                Reference::with_tag(host.to_string(), repository.to_string(), t.clone())
            }
            (None, None) => {
                Reference::with_tag(host.to_string(), repository.to_string(), "latest".into())
            }
        }
    }
}

/// Whether a `host[:port]` is on the loopback (plain HTTP without configuration, as Docker and
/// containerd do).
pub(crate) fn is_loopback_host(host_port: &str) -> bool {
    let host = strip_port(host_port);
    if host.eq_ignore_ascii_case("localhost") {
        return true;
    }
    host.trim_start_matches('[')
        .trim_end_matches(']')
        .parse::<std::net::IpAddr>()
        .map(|ip| ip.is_loopback())
        .unwrap_or(false)
}

fn strip_port(host_port: &str) -> &str {
    if host_port.starts_with('[') {
        // [::1]:5000
        return match host_port.find(']') {
            Some(i) => &host_port[..=i],
            None => host_port,
        };
    }
    match host_port.rsplit_once(':') {
        Some((h, p)) if !h.contains(':') && p.chars().all(|c| c.is_ascii_digit()) => h,
        _ => host_port,
    }
}

/// Docker Hub's several names, folded into `docker.io`.
pub(crate) fn canonical_host(host: &str) -> String {
    let h = host.trim().to_ascii_lowercase();
    match h.as_str() {
        "index.docker.io" | "registry-1.docker.io" | "registry.hub.docker.com" => {
            "docker.io".into()
        }
        _ => h,
    }
}

/// The host of a credential key or an endpoint (`https://index.docker.io/v1/` → `index.docker.io`).
pub(crate) fn host_of(key: &str) -> (Option<&str>, &str, &str) {
    let (scheme, rest) = match key.split_once("://") {
        Some((s, r)) => (Some(s), r),
        None => (None, key),
    };
    let (host, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, ""),
    };
    (scheme, host, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalizes_like_docker() {
        let r = ImageRef::parse("busybox").unwrap();
        assert_eq!(r.normalized(), "docker.io/library/busybox:latest");
        let r = ImageRef::parse("127.0.0.1:5000/library/busybox:1.35").unwrap();
        assert_eq!(r.normalized(), "127.0.0.1:5000/library/busybox:1.35");
        let d = format!("sha256:{}", "a".repeat(64));
        let r = ImageRef::parse(&format!("busybox@{d}")).unwrap();
        assert_eq!(r.normalized(), format!("docker.io/library/busybox@{d}"));
        assert!(ImageRef::parse("").is_err());
        assert!(ImageRef::parse("UPPER/case").is_err());
    }

    #[test]
    fn default_policies() {
        assert_eq!(PullPolicy::from_k8s("", "busybox"), PullPolicy::Always);
        assert_eq!(
            PullPolicy::from_k8s("", "busybox:latest"),
            PullPolicy::Always
        );
        assert_eq!(
            PullPolicy::from_k8s("", "busybox:1.35"),
            PullPolicy::IfNotPresent
        );
        let d = format!("sha256:{}", "a".repeat(64));
        assert_eq!(
            PullPolicy::from_k8s("", &format!("busybox@{d}")),
            PullPolicy::IfNotPresent
        );
        assert_eq!(PullPolicy::from_k8s("Never", "busybox"), PullPolicy::Never);
        assert_eq!(
            PullPolicy::from_k8s("Always", "busybox:1"),
            PullPolicy::Always
        );
    }

    #[test]
    fn loopback() {
        assert!(is_loopback_host("127.0.0.1:5000"));
        assert!(is_loopback_host("127.3.2.1"));
        assert!(is_loopback_host("localhost:5000"));
        assert!(is_loopback_host("[::1]:5000"));
        assert!(!is_loopback_host("docker.io"));
        assert!(!is_loopback_host("10.0.0.1:5000"));
    }
}
