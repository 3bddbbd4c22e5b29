//! The streaming pod subresources — `pods/log`, `pods/exec`, `pods/attach`,
//! `pods/portforward` — forwarded to the kubelet of the pod's node, as upstream's
//! apiserver does: a TLS connection to `https://<InternalIP>:<kubeletEndpoint>` with the
//! apiserver's kubelet-client certificate, the kubelet's serving certificate checked
//! against the cluster CA. Upgrades (WebSocket, SPDY) are passed through: once the kubelet
//! answers `101 Switching Protocols`, bytes are copied both ways.

use std::net::IpAddr;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::Request;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use hyper_util::rt::TokioIo;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use serde_json::Value;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use crate::error::{ApiError, ApiResult};
use crate::AppState;

/// The streaming subresources of pods.
pub const POD_SUBRESOURCES: &[&str] = &["log", "exec", "attach", "portforward"];

/// What the apiserver presents to kubelets, and the CA their serving certificates chain to.
#[derive(Clone)]
pub struct KubeletTls {
    pub client_cert_pem: String,
    pub client_key_pem: String,
    pub ca_pem: String,
}

impl std::fmt::Debug for KubeletTls {
    /// Never prints the key.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubeletTls").finish_non_exhaustive()
    }
}

/// Opens TLS connections to kubelets.
pub struct KubeletDialer {
    connector: TlsConnector,
}

fn certs(pem: &str) -> anyhow::Result<Vec<CertificateDer<'static>>> {
    let certs = rustls_pemfile::certs(&mut pem.as_bytes()).collect::<Result<Vec<_>, _>>()?;
    anyhow::ensure!(!certs.is_empty(), "no certificate in PEM text");
    Ok(certs)
}

impl KubeletDialer {
    pub fn new(tls: &KubeletTls) -> anyhow::Result<Self> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = rustls::RootCertStore::empty();
        for c in certs(&tls.ca_pem)? {
            roots.add(c)?;
        }
        let key: PrivateKeyDer<'static> = rustls_pemfile::private_key(&mut tls.client_key_pem.as_bytes())?
            .ok_or_else(|| anyhow::anyhow!("no private key in the kubelet client key"))?;
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots)
            .with_client_auth_cert(certs(&tls.client_cert_pem)?, key)?;
        Ok(KubeletDialer { connector: TlsConnector::from(Arc::new(config)) })
    }

    /// Sends `req` to the kubelet at `ip:port` over a fresh HTTP/1.1 connection.
    pub(crate) async fn send(&self, ip: IpAddr, port: u16, req: Request) -> ApiResult<hyper::Response<hyper::body::Incoming>> {
        let unreachable = |e: String| ApiError::ServiceUnavailable(format!("error dialing backend: {e}"));
        let tcp = TcpStream::connect((ip, port)).await.map_err(|e| unreachable(e.to_string()))?;
        let _ = tcp.set_nodelay(true);
        let tls = self.connector.connect(ServerName::IpAddress(ip.into()), tcp).await.map_err(|e| unreachable(e.to_string()))?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls)).await.map_err(|e| unreachable(e.to_string()))?;
        tokio::spawn(async move {
            if let Err(e) = conn.with_upgrades().await {
                tracing::debug!(error = %e, "kubelet connection ended");
            }
        });
        sender.send_request(req).await.map_err(|e| unreachable(e.to_string()))
    }
}

fn container_names(pod: &Value) -> Vec<String> {
    let spec = &pod["spec"];
    ["containers", "initContainers", "ephemeralContainers"]
        .iter()
        .flat_map(|k| spec[*k].as_array().cloned().unwrap_or_default())
        .filter_map(|c| c["name"].as_str().map(String::from))
        .collect()
}

/// The container a request names, or the pod's only one.
fn pick_container(pod: &Value, asked: Option<&str>, name: &str) -> ApiResult<String> {
    let all = container_names(pod);
    match asked.filter(|c| !c.is_empty()) {
        Some(c) if all.iter().any(|n| n == c) => Ok(c.to_string()),
        Some(c) => Err(ApiError::BadRequest(format!("container {c} is not valid for pod {name}"))),
        None => {
            let main: Vec<String> = pod["spec"]["containers"].as_array().into_iter().flatten().filter_map(|c| c["name"].as_str().map(String::from)).collect();
            if main.len() == 1 {
                Ok(main[0].clone())
            } else {
                Err(ApiError::BadRequest(format!("a container name must be specified for pod {name}, choose one of: [{}]", main.join(" "))))
            }
        }
    }
}

/// The query string without `container` (it moves into the kubelet's path).
fn query_without_container(q: Option<&str>) -> (Option<String>, String) {
    let mut container = None;
    let mut kept = Vec::new();
    for pair in q.unwrap_or_default().split('&').filter(|p| !p.is_empty()) {
        match pair.split_once('=') {
            Some(("container", v)) => container = Some(v.to_string()),
            _ => kept.push(pair),
        }
    }
    (container, kept.join("&"))
}

/// Where the node's kubelet listens: its InternalIP (else first address) and endpoint port.
pub(crate) fn kubelet_address(node: &Value) -> Option<(IpAddr, u16)> {
    let addrs = node["status"]["addresses"].as_array()?;
    let ip = addrs
        .iter()
        .find(|a| a["type"] == "InternalIP")
        .or_else(|| addrs.iter().find(|a| a["address"].as_str().is_some_and(|s| s.parse::<IpAddr>().is_ok())))?["address"]
        .as_str()?
        .parse()
        .ok()?;
    let port = node["status"]["daemonEndpoints"]["kubeletEndpoint"]["Port"].as_u64().unwrap_or(10250) as u16;
    Some((ip, port))
}

/// Forwards a streaming pod subresource to the pod's kubelet.
pub async fn pod_subresource(st: &AppState, namespace: &str, name: &str, sub: &str, mut req: Request) -> ApiResult<Response> {
    let Some(dialer) = st.kubelet.clone() else {
        return Err(ApiError::ServiceUnavailable("this server has no kubelet client credentials".into()));
    };
    let pods = st.registry.find("", "v1", "pods").ok_or(ApiError::NoRoute)?;
    let pod = pods.get(Some(namespace), name).await?;
    let node_name = pod["spec"]["nodeName"].as_str().unwrap_or_default().to_string();
    if node_name.is_empty() {
        return Err(ApiError::BadRequest(format!("pod {name} does not have a host assigned")));
    }
    let nodes = st.registry.find("", "v1", "nodes").ok_or(ApiError::NoRoute)?;
    let node = nodes.get(None, &node_name).await?;
    let (ip, port) = kubelet_address(&node).ok_or_else(|| ApiError::ServiceUnavailable(format!("node {node_name} reports no address")))?;
    let (asked, rest) = query_without_container(req.uri().query());
    let path = match sub {
        "portforward" => format!("/portForward/{namespace}/{name}"),
        _ => {
            let container = pick_container(&pod, asked.as_deref(), name)?;
            let verb = match sub {
                "log" => "containerLogs",
                other => other,
            };
            format!("/{verb}/{namespace}/{name}/{container}")
        }
    };
    let uri = if rest.is_empty() { path } else { format!("{path}?{rest}") };
    let client_upgrade = req.extensions_mut().remove::<hyper::upgrade::OnUpgrade>();
    *req.uri_mut() = uri.parse().map_err(|_| ApiError::BadRequest("invalid query".into()))?;
    req.headers_mut().insert(header::HOST, format!("{ip}:{port}").parse().expect("an address is a valid header"));
    let mut resp = dialer.send(ip, port, req).await?;
    if resp.status() == StatusCode::SWITCHING_PROTOCOLS {
        let Some(client_upgrade) = client_upgrade else {
            return Err(ApiError::BadRequest("the kubelet upgraded a request that was not an upgrade".into()));
        };
        let backend_upgrade = hyper::upgrade::on(&mut resp);
        tokio::spawn(async move {
            match (client_upgrade.await, backend_upgrade.await) {
                (Ok(client), Ok(backend)) => {
                    let _ = tokio::io::copy_bidirectional(&mut TokioIo::new(client), &mut TokioIo::new(backend)).await;
                }
                (Err(e), _) | (_, Err(e)) => tracing::debug!(error = %e, "upgrading a streaming connection failed"),
            }
        });
        let (parts, _) = resp.into_parts();
        return Ok(Response::from_parts(parts, Body::empty()));
    }
    let (parts, body) = resp.into_parts();
    Ok(Response::from_parts(parts, Body::new(body)).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn containers_and_queries() {
        let pod = json!({"spec": {"containers": [{"name": "a"}, {"name": "b"}], "initContainers": [{"name": "i"}]}});
        assert_eq!(pick_container(&pod, Some("b"), "p").unwrap(), "b");
        assert_eq!(pick_container(&pod, Some("i"), "p").unwrap(), "i");
        assert!(pick_container(&pod, None, "p").unwrap_err().to_string().contains("choose one of: [a b]"));
        assert!(pick_container(&pod, Some("z"), "p").is_err());
        let one = json!({"spec": {"containers": [{"name": "a"}]}});
        assert_eq!(pick_container(&one, None, "p").unwrap(), "a");
        let (c, rest) = query_without_container(Some("command=sh&container=x&command=-c&stdout=true"));
        assert_eq!(c.as_deref(), Some("x"));
        assert_eq!(rest, "command=sh&command=-c&stdout=true");
        let node = json!({"status": {"addresses": [{"type": "Hostname", "address": "n"}, {"type": "InternalIP", "address": "10.1.2.3"}], "daemonEndpoints": {"kubeletEndpoint": {"Port": 10251}}}});
        assert_eq!(kubelet_address(&node), Some(("10.1.2.3".parse().unwrap(), 10251)));
    }
}
