//! k3s's `registries.yaml`: mirrors (with endpoints and rewrites) and per-host auth and TLS.
//!
//! ```yaml
//! mirrors:
//!   docker.io:
//!     endpoint: ["http://127.0.0.1:5000"]
//!     rewrite: { "^library/(.*)": "mirrored/$1" }
//! configs:
//!   "127.0.0.1:5000":
//!     auth: { username: u, password: p }      # or auth: base64(u:p), or identitytoken
//!     tls: { insecure_skip_verify: true, ca_file: /path/ca.pem }
//! ```

use std::collections::BTreeMap;
use std::path::Path;

use base64::Engine as _;
use serde::{Deserialize, Serialize};

use super::reference::{canonical_host, host_of, is_loopback_host};
use super::{Credentials, ImageError};

/// The contents of k3s's `registries.yaml`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RegistriesConfig {
    /// Registry host (`docker.io`, `registry.example.com:5000`, or `*` for every registry) →
    /// mirror endpoints, tried in order before the registry itself.
    #[serde(default)]
    pub mirrors: BTreeMap<String, Mirror>,
    /// Endpoint host (`host[:port]`) → auth and TLS settings.
    #[serde(default)]
    pub configs: BTreeMap<String, RegistryConfig>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Mirror {
    /// `http://host:port` (plain HTTP), `https://host`, or `host[:port]` (HTTPS, plain HTTP on
    /// the loopback).
    #[serde(default)]
    pub endpoint: Vec<String>,
    /// Regex on the repository → replacement (`$1`...), applied at mirror endpoints only; the
    /// first matching rule (in key order) wins.
    #[serde(default)]
    pub rewrite: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RegistryConfig {
    #[serde(default)]
    pub auth: Option<AuthConfig>,
    #[serde(default)]
    pub tls: Option<TlsConfig>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AuthConfig {
    #[serde(default)]
    pub username: Option<String>,
    #[serde(default)]
    pub password: Option<String>,
    /// base64 of `username:password`.
    #[serde(default)]
    pub auth: Option<String>,
    /// Sent as a bearer token.
    #[serde(default, alias = "identity_token")]
    pub identitytoken: Option<String>,
    /// A registry bearer token.
    #[serde(default)]
    pub token: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TlsConfig {
    #[serde(default)]
    pub insecure_skip_verify: bool,
    /// PEM file of extra roots to trust.
    #[serde(default)]
    pub ca_file: Option<String>,
    /// Client certificates: not supported (oci-client has no client-certificate option).
    #[serde(default)]
    pub cert_file: Option<String>,
    #[serde(default)]
    pub key_file: Option<String>,
}

impl RegistriesConfig {
    /// Reads `registries.yaml`; a missing or empty file is the default (no mirrors, no auth).
    pub fn load(path: &Path) -> Result<Self, ImageError> {
        match std::fs::read_to_string(path) {
            Ok(s) => Self::from_yaml(&s)
                .map_err(|e| ImageError::Config(format!("{}: {e}", path.display()))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Self::default()),
            Err(e) => Err(ImageError::Io {
                context: format!("reading {}", path.display()),
                source: e,
            }),
        }
    }

    /// Parses the YAML text of a `registries.yaml`.
    pub fn from_yaml(s: &str) -> Result<Self, ImageError> {
        if s.trim().is_empty() {
            return Ok(Self::default());
        }
        let cfg: RegistriesConfig =
            serde_yaml::from_str(s).map_err(|e| ImageError::Config(e.to_string()))?;
        for m in cfg.mirrors.values() {
            for re in m.rewrite.keys() {
                regex::Regex::new(re)
                    .map_err(|e| ImageError::Config(format!("rewrite {re:?}: {e}")))?;
            }
        }
        Ok(cfg)
    }

    fn config_for(&self, host: &str) -> Option<&RegistryConfig> {
        let canon = canonical_host(host);
        self.configs.iter().find_map(|(k, v)| {
            let (_, h, _) = host_of(k);
            (canonical_host(h) == canon).then_some(v)
        })
    }

    /// The endpoints to try for an image of `registry`/`repository`, in order: the mirrors',
    /// then the registry itself (unless a mirror endpoint already is it).
    pub(crate) fn endpoints(&self, registry: &str, repository: &str) -> Vec<Endpoint> {
        let canon = canonical_host(registry);
        let mirror = self
            .mirrors
            .iter()
            .find(|(k, _)| canonical_host(k) == canon)
            .or_else(|| self.mirrors.iter().find(|(k, _)| k.as_str() == "*"))
            .map(|(_, m)| m);
        let mut out: Vec<Endpoint> = Vec::new();
        if let Some(m) = mirror {
            let repository = rewrite(&m.rewrite, repository);
            for ep in &m.endpoint {
                let (scheme, host, path) = host_of(ep.trim());
                if host.is_empty() {
                    continue;
                }
                if !(path.is_empty() || path == "/" || path == "/v2" || path == "/v2/") {
                    tracing::warn!(endpoint = %ep, "endpoint paths are not supported; using the host only");
                }
                let plain_http = match scheme {
                    Some(s) => s.eq_ignore_ascii_case("http"),
                    None => is_loopback_host(host),
                };
                let is_upstream = canonical_host(host) == canon;
                out.push(self.endpoint(host, plain_http, !is_upstream, repository.clone()));
            }
        }
        if !out.iter().any(|e| canonical_host(&e.host) == canon) {
            out.push(self.endpoint(
                registry,
                is_loopback_host(registry),
                false,
                repository.to_string(),
            ));
        }
        out
    }

    fn endpoint(
        &self,
        host: &str,
        plain_http: bool,
        is_mirror: bool,
        repository: String,
    ) -> Endpoint {
        let cfg = self.config_for(host);
        Endpoint {
            host: host.to_string(),
            plain_http,
            is_mirror,
            repository,
            tls: cfg.and_then(|c| c.tls.clone()),
            auth: cfg.and_then(|c| c.auth.clone()),
        }
    }
}

fn rewrite(rules: &BTreeMap<String, String>, repository: &str) -> String {
    for (re, to) in rules {
        if let Ok(re) = regex::Regex::new(re) {
            if re.is_match(repository) {
                return re.replace(repository, to.as_str()).into_owned();
            }
        }
    }
    repository.to_string()
}

/// One place to fetch an image from.
#[derive(Debug, Clone)]
pub(crate) struct Endpoint {
    /// `host[:port]`
    pub host: String,
    pub plain_http: bool,
    pub is_mirror: bool,
    /// The repository at this endpoint (after rewrites).
    pub repository: String,
    pub tls: Option<TlsConfig>,
    pub auth: Option<AuthConfig>,
}

impl Endpoint {
    /// The credentials to try here, in order: the pod's pull secrets for this host, then
    /// `registries.yaml`'s. Empty means anonymous.
    pub fn credentials(
        &self,
        secrets: &[(String, Credentials)],
    ) -> Vec<oci_client::secrets::RegistryAuth> {
        use oci_client::secrets::RegistryAuth;
        let mut out = Vec::new();
        for (key, c) in secrets {
            if secret_matches(key, &self.host) {
                out.push(RegistryAuth::Basic(c.username.clone(), c.password.clone()));
            }
        }
        if let Some(a) = &self.auth {
            if let (Some(u), Some(p)) = (&a.username, &a.password) {
                out.push(RegistryAuth::Basic(u.clone(), p.clone()));
            } else if let Some((u, p)) = a
                .auth
                .as_deref()
                .and_then(|b| {
                    base64::engine::general_purpose::STANDARD
                        .decode(b.trim())
                        .ok()
                })
                .and_then(|d| String::from_utf8(d).ok())
                .and_then(|s| {
                    s.split_once(':')
                        .map(|(u, p)| (u.to_string(), p.to_string()))
                })
            {
                out.push(RegistryAuth::Basic(u, p));
            } else if let Some(t) = a.identitytoken.as_ref().or(a.token.as_ref()) {
                out.push(RegistryAuth::Bearer(t.clone()));
            }
        }
        out
    }
}

/// Whether an imagePullSecret key (`https://index.docker.io/v1/`, `host:port`, `*.example.com`)
/// applies to `host`.
fn secret_matches(key: &str, host: &str) -> bool {
    let (_, k, _) = host_of(key.trim());
    let k = canonical_host(k);
    let h = canonical_host(host);
    if k == h {
        return true;
    }
    if let Some(suffix) = k.strip_prefix("*.") {
        let (hn, _) = h.split_once(':').unwrap_or((h.as_str(), ""));
        return hn.ends_with(&format!(".{suffix}"));
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mirrors_then_upstream() {
        let cfg = RegistriesConfig::from_yaml(
            r#"
mirrors:
  docker.io:
    endpoint: ["http://127.0.0.1:5000", "mirror.example.com"]
    rewrite: { "^library/(.*)": "cache/$1" }
configs:
  "mirror.example.com":
    auth: { auth: "dTpw" }
    tls: { insecure_skip_verify: true }
"#,
        )
        .unwrap();
        let eps = cfg.endpoints("docker.io", "library/busybox");
        assert_eq!(eps.len(), 3);
        assert_eq!(eps[0].host, "127.0.0.1:5000");
        assert!(eps[0].plain_http && eps[0].is_mirror);
        assert_eq!(eps[0].repository, "cache/busybox");
        assert_eq!(eps[1].host, "mirror.example.com");
        assert!(!eps[1].plain_http);
        assert!(eps[1].tls.as_ref().unwrap().insecure_skip_verify);
        let creds = eps[1].credentials(&[]);
        assert!(
            matches!(&creds[..], [oci_client::secrets::RegistryAuth::Basic(u, p)] if u == "u" && p == "p")
        );
        assert_eq!(eps[2].host, "docker.io");
        assert!(!eps[2].is_mirror);
        assert_eq!(eps[2].repository, "library/busybox");

        let eps = cfg.endpoints("127.0.0.1:5001", "x/y");
        assert_eq!(eps.len(), 1);
        assert!(eps[0].plain_http);
    }

    #[test]
    fn secrets_match_hosts() {
        assert!(secret_matches("https://index.docker.io/v1/", "docker.io"));
        assert!(secret_matches("127.0.0.1:5000", "127.0.0.1:5000"));
        assert!(!secret_matches("127.0.0.1:5000", "127.0.0.1:5001"));
        assert!(secret_matches("*.example.com", "r.example.com:443"));
    }

    #[test]
    fn empty_and_missing() {
        assert_eq!(
            RegistriesConfig::from_yaml("").unwrap(),
            RegistriesConfig::default()
        );
        assert_eq!(
            RegistriesConfig::load(Path::new("/nonexistent/registries.yaml")).unwrap(),
            RegistriesConfig::default()
        );
        assert!(RegistriesConfig::from_yaml("mirrors: [1]").is_err());
    }
}
