//! The server side of joining (see `agent::join`): `/cacerts` serves the cluster CA
//! bundle to anyone (agents check it against the hash in their token), and
//! `POST /v1-krust/node-credentials` issues a `system:node:<name>` client certificate to a
//! caller presenting the cluster secret. Both sit outside the Kubernetes API's
//! authentication, as k3s's supervisor endpoints do.

use std::path::PathBuf;
use std::sync::Arc;

use agent::join::{CredentialsRequest, CredentialsResponse, CACERTS_PATH, CREDENTIALS_PATH};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Json;

struct JoinState {
    tls_dir: PathBuf,
    secret: String,
    ca_pem: String,
    client_ca_pem: String,
}

pub fn routes(tls_dir: PathBuf, secret: String, ca_pem: String, client_ca_pem: String) -> axum::Router {
    let state = Arc::new(JoinState { tls_dir, secret, ca_pem, client_ca_pem });
    axum::Router::new()
        .route(CACERTS_PATH, get(|State(s): State<Arc<JoinState>>| async move { s.ca_pem.clone() }))
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

async fn credentials(State(s): State<Arc<JoinState>>, headers: HeaderMap, Json(req): Json<CredentialsRequest>) -> Response {
    let presented = headers.get("authorization").and_then(|v| v.to_str().ok()).and_then(|v| v.strip_prefix("Bearer ")).unwrap_or_default();
    if !same(presented, &s.secret) {
        tracing::warn!(node = %req.node_name, "join refused: wrong token");
        return (StatusCode::UNAUTHORIZED, "invalid token\n").into_response();
    }
    if !valid_node_name(&req.node_name) {
        return (StatusCode::BAD_REQUEST, format!("invalid node name {:?}: must be a DNS subdomain\n", req.node_name)).into_response();
    }
    match node_credentials(&s.tls_dir, &req.node_name, &req.addresses, &s.ca_pem, &s.client_ca_pem) {
        Ok(creds) => {
            tracing::info!(node = %req.node_name, "issued node credentials");
            Json(creds).into_response()
        }
        Err(e) => {
            tracing::error!(error = %format!("{e:#}"), "issuing node credentials failed");
            (StatusCode::INTERNAL_SERVER_ERROR, "issuing credentials failed\n").into_response()
        }
    }
}

/// A node's client certificate (`system:node:NAME`) and its kubelet's serving certificate
/// (covering the node name and `addresses`).
pub fn node_credentials(tls_dir: &std::path::Path, node: &str, addresses: &[String], ca_pem: &str, client_ca_pem: &str) -> anyhow::Result<CredentialsResponse> {
    let (client_cert, client_key) = crate::pki::issue_client(tls_dir, &format!("system:node:{node}"), &["system:nodes"])?;
    let sans = std::iter::once(node).chain(addresses.iter().map(String::as_str)).map(crate::pki::San::parse).collect();
    let (serving_cert, serving_key) = crate::pki::issue_serving(tls_dir, &format!("system:node:{node}"), &sans)?;
    Ok(CredentialsResponse { ca_cert: ca_pem.to_string(), client_cert, client_key, client_ca: client_ca_pem.to_string(), serving_cert, serving_key })
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
}
