//! The server side of joining (see `agent::join`): `/cacerts` serves the cluster CA
//! bundle to anyone (agents check it against the hash in their token), and
//! `POST /v1-krust/node-credentials` issues a `system:node:<name>` client certificate, a
//! kubelet serving certificate, and client certificates of the node's kube-proxy
//! (`system:kube-proxy`) and DNS server (`system:krust:dns:<name>`) to a caller presenting
//! the cluster secret. Both sit outside
//! the Kubernetes API's authentication, as k3s's supervisor endpoints do.
//!
//! The join is confined as k3s's: the caller proves it owns the node name with the node's
//! password (`node_password`: the first join of a name stores its hash, later joins must
//! match it), and the serving certificate names only what a node may claim (see
//! [`serving_sans`]). The server's own agent goes through the same [`Issuer`].

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::sync::Arc;

use agent::join::{ClientCredentials, CredentialsRequest, CredentialsResponse, CACERTS_PATH, CREDENTIALS_PATH};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Json;
use ipnet::IpNet;

use crate::node_password::{self, NodePasswordError};
use crate::pki::San;

/// kube-proxy's user, which upstream's bootstrap policy binds to `system:node-proxier`.
pub const KUBE_PROXY_USER: &str = "system:kube-proxy";
/// The group of every node's DNS server, bound to krust's `system:krust:dns` roles.
pub use apiserver::auth::bootstrap::krust::DNS_GROUP;

/// The user of a node's DNS server (per node, so the audit trail tells them apart).
pub fn dns_user(node: &str) -> String {
    format!("system:krust:dns:{node}")
}

/// More addresses than any node has: a cap on what one request makes the CA sign.
const MAX_ADDRESSES: usize = 16;

/// Issues node credentials, after checking the node's name, password and addresses.
pub struct Issuer {
    pub tls_dir: PathBuf,
    pub ca_pem: String,
    pub client_ca_pem: String,
    /// Addresses no node may claim: the Service ranges (the `kubernetes` Service's IP).
    pub service_cidrs: Vec<IpNet>,
    /// Reads and writes the node password Secrets (as `system:krust:supervisor`).
    pub client: kube::Client,
}

/// Why credentials were not issued, with the HTTP status that says so.
#[derive(Debug, thiserror::Error)]
pub enum IssueError {
    #[error("{0}")]
    BadRequest(String),
    #[error(transparent)]
    Password(#[from] NodePasswordError),
    #[error("signing node certificates: {0:#}")]
    Signing(anyhow::Error),
}

impl IssueError {
    fn status(&self) -> StatusCode {
        match self {
            IssueError::BadRequest(_) => StatusCode::BAD_REQUEST,
            IssueError::Password(NodePasswordError::Mismatch { .. }) => StatusCode::FORBIDDEN,
            IssueError::Password(_) | IssueError::Signing(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

/// `--service-cidr` (comma-separated for more than one range) as networks.
pub fn parse_cidrs(s: &str) -> anyhow::Result<Vec<IpNet>> {
    s.split(',').map(|c| c.trim().parse::<IpNet>().map_err(|e| anyhow::anyhow!("--service-cidr {c:?}: {e}"))).collect()
}

impl Issuer {
    /// Checks the request (400), the node password (403), then signs.
    pub async fn issue(&self, req: &CredentialsRequest) -> Result<CredentialsResponse, IssueError> {
        let node = req.node_name.as_str();
        if !valid_node_name(node) {
            return Err(IssueError::BadRequest(format!("invalid node name {node:?}: must be a DNS subdomain")));
        }
        if req.node_password.is_empty() {
            return Err(IssueError::BadRequest("node password not set".into()));
        }
        let sans = serving_sans(node, &req.addresses, &self.service_cidrs).map_err(IssueError::BadRequest)?;
        node_password::ensure(&self.client, node, &req.node_password).await?;
        let (client_cert, client_key) = crate::pki::issue_client(&self.tls_dir, &format!("system:node:{node}"), &["system:nodes"]).map_err(IssueError::Signing)?;
        let (serving_cert, serving_key) = crate::pki::issue_serving(&self.tls_dir, &format!("system:node:{node}"), &sans).map_err(IssueError::Signing)?;
        let client = |user: &str, groups: &[&str]| {
            crate::pki::issue_client(&self.tls_dir, user, groups).map(|(cert, key)| ClientCredentials { cert, key }).map_err(IssueError::Signing)
        };
        Ok(CredentialsResponse {
            ca_cert: self.ca_pem.clone(),
            client_cert,
            client_key,
            client_ca: self.client_ca_pem.clone(),
            serving_cert,
            serving_key,
            kube_proxy: Some(client(KUBE_PROXY_USER, &[])?),
            dns: Some(client(&dns_user(node), &[DNS_GROUP])?),
        })
    }
}

struct JoinState {
    secret: String,
    issuer: Arc<Issuer>,
}

pub fn routes(secret: String, issuer: Arc<Issuer>) -> axum::Router {
    let state = Arc::new(JoinState { secret, issuer });
    axum::Router::new()
        .route(CACERTS_PATH, get(|State(s): State<Arc<JoinState>>| async move { s.issuer.ca_pem.clone() }))
        .route(CREDENTIALS_PATH, post(credentials))
        .with_state(state)
}

/// Compares without stopping at the first difference, so timing tells nothing.
fn same(a: &str, b: &str) -> bool {
    a.len() == b.len() && a.bytes().zip(b.bytes()).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn valid_node_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|l| !l.is_empty() && l.len() <= 63 && !l.starts_with('-') && !l.ends_with('-') && l.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-'))
}

/// What a node's serving certificate covers: as k3s's, the node name, `localhost` and
/// 127.0.0.1, plus the IP addresses the node asks for. Anything else is refused rather than
/// silently dropped, so a misconfigured agent learns why: DNS names other than the node's
/// own (`kubernetes`, another node's name: the node cannot prove it owns them), addresses in
/// a Service range (the `kubernetes` Service's IP), and unspecified, multicast or broadcast
/// addresses. The server cannot tell which IPs a node really has (nor can k3s's): a node
/// may claim any other unicast address.
pub fn serving_sans(node: &str, addresses: &[String], service_cidrs: &[IpNet]) -> Result<BTreeSet<San>, String> {
    if addresses.len() > MAX_ADDRESSES {
        return Err(format!("too many addresses ({}): at most {MAX_ADDRESSES}", addresses.len()));
    }
    let mut sans: BTreeSet<San> = [San::parse(node), San::parse("localhost"), San::Ip(IpAddr::V4(Ipv4Addr::LOCALHOST))].into();
    for a in addresses.iter().map(|a| a.trim()) {
        let ip = match a.parse::<IpAddr>() {
            Ok(ip) => ip,
            Err(_) if a.eq_ignore_ascii_case(node) || a.eq_ignore_ascii_case("localhost") => continue,
            Err(_) => return Err(format!("address {a:?} is not an IP address: a node's serving certificate names only the node ({node}), localhost and IP addresses")),
        };
        if let Some(net) = service_cidrs.iter().find(|n| n.contains(&ip)) {
            return Err(format!("address {ip} is in the Service range {net}: no node may claim it"));
        }
        let broadcast = ip == IpAddr::V4(Ipv4Addr::BROADCAST);
        if ip.is_unspecified() || ip.is_multicast() || broadcast {
            return Err(format!("address {ip} is not a node's unicast address"));
        }
        sans.insert(San::Ip(ip));
    }
    Ok(sans)
}

async fn credentials(State(s): State<Arc<JoinState>>, headers: HeaderMap, Json(req): Json<CredentialsRequest>) -> Response {
    let presented = headers.get("authorization").and_then(|v| v.to_str().ok()).and_then(|v| v.strip_prefix("Bearer ")).unwrap_or_default();
    if !same(presented, &s.secret) {
        tracing::warn!(node = %req.node_name, "join refused: wrong token");
        return (StatusCode::UNAUTHORIZED, "invalid token\n").into_response();
    }
    match s.issuer.issue(&req).await {
        Ok(creds) => {
            tracing::info!(node = %req.node_name, "issued node credentials");
            Json(creds).into_response()
        }
        Err(e) => {
            let status = e.status();
            if status.is_server_error() {
                tracing::error!(node = %req.node_name, error = %e, "issuing node credentials failed");
                return (status, "issuing credentials failed\n").into_response();
            }
            tracing::warn!(node = %req.node_name, error = %e, "join refused");
            (status, format!("{e}\n")).into_response()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_secrets() {
        assert!(same("abc", "abc"));
        assert!(!same("abc", "abd"));
        assert!(!same("abc", "ab"));
        assert!(valid_node_name("node-1.example"));
        assert!(!valid_node_name("Node"));
        assert!(!valid_node_name("-a"));
        assert!(!valid_node_name(""));
    }

    #[test]
    fn serving_certificates_name_only_the_node() {
        let cidrs = parse_cidrs("10.43.0.0/16").unwrap();
        let addrs = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let sans = serving_sans("n1", &addrs(&["192.168.1.5", "n1", "fd00::5"]), &cidrs).unwrap();
        let want: BTreeSet<San> = ["n1", "localhost", "127.0.0.1", "192.168.1.5", "fd00::5"].iter().map(|s| San::parse(s)).collect();
        assert_eq!(sans, want);
        for bad in ["kubernetes", "kubernetes.default.svc", "n2", "10.43.0.1", "10.43.255.7", "0.0.0.0", "224.0.0.1", "255.255.255.255", "::"] {
            let err = serving_sans("n1", &addrs(&["192.168.1.5", bad]), &cidrs).unwrap_err();
            assert!(err.contains(bad), "{bad}: {err}");
        }
        assert!(serving_sans("n1", &vec!["10.0.0.1".to_string(); 17], &cidrs).is_err());
        assert_eq!(parse_cidrs("10.43.0.0/16, fd00:43::/112").unwrap().len(), 2);
        assert!(parse_cidrs("nope").is_err());
    }
}
