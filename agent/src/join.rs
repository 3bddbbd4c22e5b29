//! Joining a cluster (client side), as k3s agents do: the token names the cluster CA by
//! its hash (`K10<sha256 of the CA bundle>::server:<secret>`), so the agent fetches
//! `/cacerts` without trusting anything, checks the hash, then presents the secret over a
//! verified connection to `POST /v1-krust/node-credentials` and receives a client
//! certificate for `system:node:<name>`. The result is a kubeconfig kept in the agent's
//! data dir and reused on later starts.
//!
//! Each node also holds a password (k3s's `/etc/rancher/node/password`): generated on the
//! first join, kept in `DATA_DIR/agent/node-password` (mode 0600) and sent with every
//! credentials request. The server remembers the first password it saw for a node name and
//! refuses that name to anyone else, so a leaked cluster secret does not let a machine take
//! over another node's identity.

use std::path::{Path, PathBuf};

use base64::Engine;
use http::header::{AUTHORIZATION, CONTENT_TYPE};
use serde::{Deserialize, Serialize};
use serde_json::json;
use sha2::{Digest, Sha256};

/// The join endpoint the server serves next to the Kubernetes API.
pub const CREDENTIALS_PATH: &str = "/v1-krust/node-credentials";
/// The cluster CA bundle, served without authentication (k3s's path).
pub const CACERTS_PATH: &str = "/cacerts";

#[derive(Debug, thiserror::Error)]
pub enum JoinError {
    #[error("invalid token: {0}")]
    Token(String),
    #[error("the server's CA does not match the token's hash (expected {expected}, got {actual}): wrong server or a man in the middle")]
    CaMismatch { expected: String, actual: String },
    #[error("{context}: {message}")]
    Request { context: &'static str, message: String },
    #[error("writing {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
}

/// A parsed join token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Token {
    /// sha256 (hex) of the CA bundle the server serves at `/cacerts`, when the token carries it.
    pub ca_hash: Option<String>,
    pub secret: String,
}

impl Token {
    /// Accepts the full form `K10<hash>::<user>:<secret>` or a bare secret.
    pub fn parse(s: &str) -> Result<Token, JoinError> {
        let s = s.trim();
        if s.is_empty() {
            return Err(JoinError::Token("empty".into()));
        }
        if let Some(rest) = s.strip_prefix("K10") {
            let (hash, creds) = rest.split_once("::").ok_or_else(|| JoinError::Token("K10 token without '::'".into()))?;
            if hash.len() != 64 || !hash.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(JoinError::Token("the CA hash must be 64 hex digits".into()));
            }
            let secret = creds.split_once(':').map_or(creds, |(_, p)| p);
            return Ok(Token { ca_hash: Some(hash.to_ascii_lowercase()), secret: secret.to_string() });
        }
        Ok(Token { ca_hash: None, secret: s.to_string() })
    }

    /// The full form for a CA bundle and a secret (what `krust server` prints).
    pub fn full(ca_pem: &str, secret: &str) -> String {
        format!("K10{}::server:{secret}", ca_hash(ca_pem))
    }
}

pub fn ca_hash(ca_pem: &str) -> String {
    Sha256::digest(ca_pem.as_bytes()).iter().map(|b| format!("{b:02x}")).collect()
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CredentialsRequest {
    pub node_name: String,
    /// Proves the caller is the node that first joined under `node_name`.
    #[serde(default)]
    pub node_password: String,
    /// Addresses the kubelet's serving certificate must cover.
    #[serde(default)]
    pub addresses: Vec<String>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CredentialsResponse {
    /// The CA that signed the API server's (and kubelets') serving certificates.
    pub ca_cert: String,
    pub client_cert: String,
    pub client_key: String,
    /// The CA of client certificates: the kubelet checks the API server's against it.
    pub client_ca: String,
    pub serving_cert: String,
    pub serving_key: String,
    /// kube-proxy's client certificate (`system:kube-proxy`, bound to upstream's
    /// `system:node-proxier`; k3s's `client-kube-proxy`): kube-proxy acts under its own
    /// identity, not the kubelet's.
    #[serde(default)]
    pub kube_proxy: Option<ClientCredentials>,
    /// The node's DNS server's client certificate (`system:krust:dns:<node>` in group
    /// `system:krust:dns`, bound to krust's `system:krust:dns` roles).
    #[serde(default)]
    pub dns: Option<ClientCredentials>,
}

/// A client certificate and its key (PEM).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ClientCredentials {
    pub cert: String,
    pub key: String,
}

/// kube-proxy's kubeconfig beside the kubelet's (k3s: `agent/kubeproxy.kubeconfig`).
pub const KUBE_PROXY_KUBECONFIG: &str = "kubeproxy.kubeconfig";
/// The node DNS server's kubeconfig beside the kubelet's.
pub const DNS_KUBECONFIG: &str = "dns.kubeconfig";

/// The kubeconfigs of the node's parts, beside the kubelet's: kube-proxy's and DNS's.
pub fn component_kubeconfigs(kubeconfig: &Path) -> (PathBuf, PathBuf) {
    let dir = kubeconfig.parent().unwrap_or(Path::new("."));
    (dir.join(KUBE_PROXY_KUBECONFIG), dir.join(DNS_KUBECONFIG))
}

/// The node password's file in the agent's data dir.
pub fn node_password_file(agent_dir: &Path) -> PathBuf {
    agent_dir.join("node-password")
}

/// The node's password: the one kept in `agent_dir`, or a new random one stored there.
pub fn ensure_node_password(agent_dir: &Path) -> Result<String, JoinError> {
    let path = node_password_file(agent_dir);
    let io = |source| JoinError::Io { path: path.clone(), source };
    match std::fs::read_to_string(&path) {
        Ok(s) if !s.trim().is_empty() => return Ok(s.trim().to_string()),
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io(e)),
    }
    let password = random_hex(16).map_err(io)?;
    write_private(&path, format!("{password}\n").as_bytes())?;
    tracing::info!(path = %path.display(), "generated this node's password");
    Ok(password)
}

/// `n` random bytes from the kernel's generator, as hex.
pub fn random_hex(n: usize) -> std::io::Result<String> {
    use std::io::Read;
    let mut bytes = vec![0u8; n];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut bytes)?;
    Ok(hex::encode(bytes))
}

/// Where the kubelet keeps its serving certificate and the client CA next to its kubeconfig.
pub fn serving_files(kubeconfig: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let dir = kubeconfig.parent().unwrap_or(Path::new("."));
    (dir.join("serving-kubelet.crt"), dir.join("serving-kubelet.key"), dir.join("client-ca.crt"))
}

fn request_err(context: &'static str) -> impl FnOnce(kube::Error) -> JoinError {
    move |e| {
        // The server answers refusals in plain text: its words, with the status code.
        let message = match &e {
            kube::Error::Api(s) => format!("{} (HTTP {})", s.message, s.code),
            _ => e.to_string(),
        };
        JoinError::Request { context, message }
    }
}

fn client(server: &str, ca_pem: Option<&str>, bearer: Option<&str>) -> Result<kube::Client, JoinError> {
    let url: http::Uri = server.parse().map_err(|e| JoinError::Request { context: "parsing the server URL", message: format!("{e}") })?;
    let mut cfg = kube::Config::new(url);
    match ca_pem {
        Some(pem) => cfg.root_cert = Some(pem_certs(pem)),
        // Only to fetch the CA, which is then checked against the token's hash.
        None => cfg.accept_invalid_certs = true,
    }
    if let Some(b) = bearer {
        let value = format!("Bearer {b}").parse().map_err(|_| JoinError::Token("the secret is not a valid header value".into()))?;
        cfg.headers.push((AUTHORIZATION, value));
    }
    kube::Client::try_from(cfg).map_err(request_err("building an HTTP client"))
}

/// The DER certificates in a PEM bundle.
fn pem_certs(pem: &str) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut b64 = String::new();
    let mut inside = false;
    for line in pem.lines() {
        if line.starts_with("-----BEGIN CERTIFICATE") {
            inside = true;
            b64.clear();
        } else if line.starts_with("-----END CERTIFICATE") {
            inside = false;
            if let Ok(der) = base64::engine::general_purpose::STANDARD.decode(b64.trim()) {
                out.push(der);
            }
        } else if inside {
            b64.push_str(line.trim());
        }
    }
    out
}

/// Obtains node credentials from `server` and writes a kubeconfig at `kubeconfig`
/// (reused as is when it already exists). Returns its path.
pub async fn ensure_kubeconfig(server: &str, token: &str, node_name: &str, node_password: &str, addresses: &[String], kubeconfig: &Path) -> Result<PathBuf, JoinError> {
    let (proxy, dns) = component_kubeconfigs(kubeconfig);
    // A data dir from before kube-proxy and DNS had their own credentials joins again (the
    // node password makes that safe).
    if kubeconfig.exists() && proxy.exists() && dns.exists() {
        return Ok(kubeconfig.to_path_buf());
    }
    let token = Token::parse(token)?;
    let anonymous = client(server, None, None)?;
    let req = http::Request::get(CACERTS_PATH).body(Vec::new()).expect("a static request");
    let ca_pem = anonymous.request_text(req).await.map_err(request_err("fetching the cluster CA"))?;
    match &token.ca_hash {
        Some(expected) => {
            let actual = ca_hash(&ca_pem);
            if &actual != expected {
                return Err(JoinError::CaMismatch { expected: expected.clone(), actual });
            }
        }
        None => tracing::warn!("the token carries no CA hash: trusting the server's CA on first use (use the K10... token `krust server` prints)"),
    }
    let verified = client(server, Some(&ca_pem), Some(&token.secret))?;
    let body = serde_json::to_vec(&CredentialsRequest { node_name: node_name.to_string(), node_password: node_password.to_string(), addresses: addresses.to_vec() }).expect("serializable");
    let req = http::Request::post(CREDENTIALS_PATH).header(CONTENT_TYPE, "application/json").body(body).expect("a static request");
    let text = verified.request_text(req).await.map_err(request_err("asking the server for node credentials"))?;
    let creds: CredentialsResponse = serde_json::from_str(&text).map_err(|e| JoinError::Request { context: "reading node credentials", message: e.to_string() })?;
    write_kubeconfig(kubeconfig, server, &creds)?;
    tracing::info!(node = node_name, path = %kubeconfig.display(), "joined the cluster: node credentials written");
    Ok(kubeconfig.to_path_buf())
}

/// A kubeconfig for one user (a client certificate) and one server, every certificate
/// embedded, every name `default` (as k3s writes them).
pub fn render_kubeconfig(server: &str, ca_pem: &str, cert_pem: &str, key_pem: &str) -> String {
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    let v = json!({
        "apiVersion": "v1", "kind": "Config",
        "clusters": [{"name": "default", "cluster": {"server": server, "certificate-authority-data": b64(ca_pem)}}],
        "contexts": [{"name": "default", "context": {"cluster": "default", "user": "default"}}],
        "current-context": "default",
        "preferences": {},
        "users": [{"name": "default", "user": {"client-certificate-data": b64(cert_pem), "client-key-data": b64(key_pem)}}],
    });
    serde_json::to_string_pretty(&v).expect("serializable")
}

/// Writes the kubeconfig, the kubelet's serving certificate, key and client CA beside it,
/// and kube-proxy's and DNS's kubeconfigs (the kubelet's kubeconfig last: its presence means
/// joining finished).
pub fn write_kubeconfig(path: &Path, server: &str, creds: &CredentialsResponse) -> Result<(), JoinError> {
    let (crt, key, ca) = serving_files(path);
    write_private(&crt, creds.serving_cert.as_bytes())?;
    write_private(&key, creds.serving_key.as_bytes())?;
    write_private(&ca, creds.client_ca.as_bytes())?;
    let (proxy, dns) = component_kubeconfigs(path);
    for (file, part) in [(proxy, &creds.kube_proxy), (dns, &creds.dns)] {
        let part = part.as_ref().ok_or_else(|| JoinError::Request {
            context: "reading node credentials",
            message: format!("the server sent no credentials for {}", file.display()),
        })?;
        write_private(&file, render_kubeconfig(server, &creds.ca_cert, &part.cert, &part.key).as_bytes())?;
    }
    write_private(path, render_kubeconfig(server, &creds.ca_cert, &creds.client_cert, &creds.client_key).as_bytes())
}

fn write_private(path: &Path, data: &[u8]) -> Result<(), JoinError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let io = |source| JoinError::Io { path: path.to_path_buf(), source };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(io)?;
    }
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&tmp).map_err(io)?;
    f.write_all(data).map_err(io)?;
    f.sync_all().map_err(io)?;
    std::fs::rename(&tmp, path).map_err(io)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens() {
        let hash = "a".repeat(64);
        let t = Token::parse(&format!("K10{hash}::server:s3cret")).unwrap();
        assert_eq!(t, Token { ca_hash: Some(hash.clone()), secret: "s3cret".into() });
        assert_eq!(Token::parse("plain").unwrap(), Token { ca_hash: None, secret: "plain".into() });
        assert!(Token::parse("K10abc::server:x").is_err());
        assert!(Token::parse("  ").is_err());
        let full = Token::full("PEM", "x");
        assert_eq!(Token::parse(&full).unwrap().ca_hash.unwrap(), ca_hash("PEM"));
    }

    #[test]
    fn node_password_generated_once_and_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let first = ensure_node_password(dir.path()).unwrap();
        assert_eq!(first.len(), 32);
        assert_eq!(ensure_node_password(dir.path()).unwrap(), first);
        let mode = std::fs::metadata(node_password_file(dir.path())).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let other = tempfile::tempdir().unwrap();
        assert_ne!(ensure_node_password(other.path()).unwrap(), first);
    }
}
