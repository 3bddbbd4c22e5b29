//! The kubelet's HTTPS endpoint (port 10250): the API server forwards `pods/log`, `pods/exec`,
//! `pods/attach` and `pods/portforward` here (the streaming ones: see [`stream`]). Every
//! request is authenticated (a client certificate signed by the cluster's client CA, or a
//! bearer token) and authorized by the API server before it reaches a route: see [`auth`].
//! Path segments naming a namespace, pod or container are checked before any file is touched.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{FromRequestParts, Path as UrlPath, Query, State};
use axum::http::request::Parts;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::io::{AsyncReadExt, AsyncSeekExt};
use tokio::net::TcpListener;
use tower::ServiceExt;

use crate::kubelet::auth::{self, Auth, PeerCertificate};
use crate::kubelet::stream;
use crate::kubelet::worker::instance_id;
use crate::kubelet::Kubelet;
use crate::runtime::ContainerState;

/// PEM material of the kubelet's endpoint.
pub struct ServingTls {
    pub cert_pem: String,
    pub key_pem: String,
    pub client_ca_pem: String,
}

fn certs(pem: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    let c: Vec<_> = rustls_pemfile::certs(&mut pem.as_bytes()).collect::<Result<_, _>>().map_err(|e| e.to_string())?;
    if c.is_empty() {
        return Err("no certificate in PEM text".into());
    }
    Ok(c)
}

fn tls_config(tls: &ServingTls) -> Result<Arc<rustls::ServerConfig>, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    for c in certs(&tls.client_ca_pem)? {
        roots.add(c).map_err(|e| e.to_string())?;
    }
    // A certificate is optional so that bearer tokens can be used; one that is sent must
    // verify. A request with neither is refused by the auth filter.
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .allow_unauthenticated()
        .build()
        .map_err(|e| e.to_string())?;
    let key: PrivateKeyDer<'static> = rustls_pemfile::private_key(&mut tls.key_pem.as_bytes()).map_err(|e| e.to_string())?.ok_or("no private key")?;
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_client_cert_verifier(verifier)
        .with_single_cert(certs(&tls.cert_pem)?, key)
        .map_err(|e| e.to_string())?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Serves the endpoint on `listener` forever.
pub async fn serve(kubelet: Arc<Kubelet>, listener: TcpListener, tls: ServingTls) -> Result<(), String> {
    let acceptor = tokio_rustls::TlsAcceptor::from(tls_config(&tls)?);
    let auth = Arc::new(Auth::new(kubelet.client.clone(), kubelet.config.node_name.clone()));
    let router = axum::Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/containerLogs/{namespace}/{pod}/{container}", get(container_logs))
        .route("/stats/summary", get(|State(k): State<Arc<Kubelet>>| async move { axum::Json(k.stats.summary()) }))
        .route("/exec/{namespace}/{pod}/{container}", any(stream::exec))
        .route("/attach/{namespace}/{pod}/{container}", any(stream::attach))
        .route("/portForward/{namespace}/{pod}", any(stream::port_forward))
        .layer(axum::middleware::from_fn_with_state(auth, auth::filter))
        .with_state(kubelet);
    loop {
        let (tcp, peer) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "kubelet endpoint: accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let acceptor = acceptor.clone();
        let router = router.clone();
        tokio::spawn(async move {
            let tls = match tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp)).await {
                Ok(Ok(t)) => t,
                _ => return tracing::debug!(%peer, "kubelet endpoint: TLS handshake failed"),
            };
            let peer_cert = PeerCertificate(tls.get_ref().1.peer_certificates().and_then(|c| c.first()).map(|c| auth::certificate_user(c.as_ref())));
            let service = router.map_request(move |mut req: axum::http::Request<hyper::body::Incoming>| {
                req.extensions_mut().insert(peer_cert.clone());
                req
            });
            let conn = http_builder();
            if let Err(e) = conn.serve_connection_with_upgrades(TokioIo::new(tls), TowerToHyperService::new(service)).await {
                tracing::debug!(%peer, error = %e, "kubelet endpoint: connection ended");
            }
        });
    }
}

/// Upstream kubelet's `IdleTimeout`.
const IDLE_TIMEOUT: Duration = Duration::from_secs(90);

/// HTTP/1.1 only (all that ALPN offers here), with a header timeout of upstream's
/// `IdleTimeout`: hyper's header timer runs from the end of the previous response, so it
/// closes idle keep-alive connections and clients that never finish a request head alike.
fn http_builder() -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new()).http1_only();
    builder.http1().timer(TokioTimer::new()).header_read_timeout(IDLE_TIMEOUT);
    builder
}

fn plain(code: StatusCode, msg: String) -> Response {
    (code, msg).into_response()
}

/// A DNS-1123 label: 1 to 63 of `a-z`, `0-9`, `-`, alphanumeric at both ends (what the API
/// allows for namespace and container names).
fn is_dns1123_label(s: &str) -> bool {
    s.len() <= 63 && is_label_text(s)
}

fn is_label_text(s: &str) -> bool {
    let b = s.as_bytes();
    let alnum = |c: &u8| c.is_ascii_lowercase() || c.is_ascii_digit();
    b.first().is_some_and(alnum) && b.last().is_some_and(alnum) && b.iter().all(|c| alnum(c) || *c == b'-')
}

/// A DNS-1123 subdomain: at most 253 characters, dot-separated labels (what the API allows
/// for pod names). No empty label, so never `.` or `..`.
fn is_dns1123_subdomain(s: &str) -> bool {
    s.len() <= 253 && s.split('.').all(is_label_text)
}

/// Why a path segment is no name the API could have given, for a 400.
fn check_segment(what: &str, value: &str, valid: fn(&str) -> bool, rule: &str) -> Result<(), String> {
    if valid(value) {
        return Ok(());
    }
    Err(format!("invalid {what} {value:?}: must be a DNS-1123 {rule}\n"))
}

fn bad_request(msg: String) -> Response {
    plain(StatusCode::BAD_REQUEST, msg)
}

/// `{namespace}/{pod}` of a route, checked: these name folders on disk.
pub struct PodPath {
    pub namespace: String,
    pub pod: String,
}

/// `{namespace}/{pod}/{container}` of a route, checked as [`PodPath`].
pub struct ContainerPath {
    pub namespace: String,
    pub pod: String,
    pub container: String,
}

impl PodPath {
    fn checked(namespace: String, pod: String) -> Result<PodPath, String> {
        check_segment("namespace", &namespace, is_dns1123_label, "label")?;
        check_segment("pod name", &pod, is_dns1123_subdomain, "subdomain")?;
        Ok(PodPath { namespace, pod })
    }
}

impl<S: Send + Sync> FromRequestParts<S> for PodPath {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Response> {
        let UrlPath((namespace, pod)) = UrlPath::<(String, String)>::from_request_parts(parts, state).await.map_err(IntoResponse::into_response)?;
        PodPath::checked(namespace, pod).map_err(bad_request)
    }
}

impl<S: Send + Sync> FromRequestParts<S> for ContainerPath {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Response> {
        let UrlPath((namespace, pod, container)) = UrlPath::<(String, String, String)>::from_request_parts(parts, state).await.map_err(IntoResponse::into_response)?;
        let PodPath { namespace, pod } = PodPath::checked(namespace, pod).map_err(bad_request)?;
        check_segment("container name", &container, is_dns1123_label, "label").map_err(bad_request)?;
        Ok(ContainerPath { namespace, pod, container })
    }
}

#[derive(serde::Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct LogQuery {
    #[serde(default)]
    follow: Option<String>,
    #[serde(default)]
    previous: Option<String>,
    #[serde(default)]
    timestamps: Option<String>,
    tail_lines: Option<i64>,
    since_seconds: Option<i64>,
    since_time: Option<String>,
    limit_bytes: Option<i64>,
}

fn truthy(v: &Option<String>) -> bool {
    matches!(v.as_deref(), Some("true") | Some("1") | Some(""))
}

/// The pod's log folder: `<namespace>_<pod>_<uid>` (the newest, if several).
pub(crate) fn pod_log_dir(logs: &Path, namespace: &str, pod: &str) -> Option<(PathBuf, String)> {
    let prefix = format!("{namespace}_{pod}_");
    std::fs::read_dir(logs)
        .ok()?
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().to_string();
            let uid = name.strip_prefix(&prefix)?.to_string();
            let mtime = e.metadata().and_then(|m| m.modified()).ok()?;
            Some((mtime, e.path(), uid))
        })
        .max_by_key(|(t, _, _)| *t)
        .map(|(_, p, uid)| (p, uid))
}

/// Instances (restart numbers) with a log file, ascending.
pub(crate) fn instances(dir: &Path) -> Vec<i32> {
    let mut v: Vec<i32> = std::fs::read_dir(dir)
        .map(|d| d.flatten().filter_map(|e| e.file_name().to_string_lossy().strip_suffix(".log")?.parse().ok()).collect())
        .unwrap_or_default();
    v.sort();
    v
}

/// One parsed CRI log line.
struct Line<'a> {
    time: &'a str,
    partial: bool,
    message: &'a str,
}

fn parse(line: &str) -> Option<Line<'_>> {
    let mut it = line.splitn(4, ' ');
    let time = it.next()?;
    let _stream = it.next()?;
    let tag = it.next()?;
    let message = it.next().unwrap_or("");
    Some(Line { time, partial: tag == "P", message })
}

struct Filter {
    timestamps: bool,
    since: Option<chrono::DateTime<chrono::Utc>>,
}

impl Filter {
    /// Renders the complete lines of `text` (CRI format) as the client sees them.
    fn render(&self, text: &str, out: &mut Vec<u8>) {
        for raw in text.lines() {
            let Some(l) = parse(raw) else { continue };
            if let Some(since) = self.since {
                let t = chrono::DateTime::parse_from_rfc3339(l.time).map(|t| t.with_timezone(&chrono::Utc));
                if t.is_ok_and(|t| t < since) {
                    continue;
                }
            }
            if self.timestamps {
                out.extend_from_slice(l.time.as_bytes());
                out.push(b' ');
            }
            out.extend_from_slice(l.message.as_bytes());
            if !l.partial {
                out.push(b'\n');
            }
        }
    }
}

async fn container_logs(State(k): State<Arc<Kubelet>>, ContainerPath { namespace, pod, container }: ContainerPath, Query(q): Query<LogQuery>) -> Response {
    let Some((dir, uid)) = pod_log_dir(&k.logs_dir(), &namespace, &pod) else {
        return plain(StatusCode::NOT_FOUND, format!("pod {namespace}/{pod} not found on this node\n"));
    };
    let cdir = dir.join(&container);
    let all = instances(&cdir);
    let restart = if truthy(&q.previous) {
        match all.len() {
            n if n >= 2 => all[n - 2],
            _ => return plain(StatusCode::BAD_REQUEST, format!("previous terminated container \"{container}\" in pod \"{pod}\" not found\n")),
        }
    } else {
        match all.last() {
            Some(r) => *r,
            None => return plain(StatusCode::BAD_REQUEST, format!("container \"{container}\" in pod \"{pod}\" is waiting to start: ContainerCreating\n")),
        }
    };
    let path = cdir.join(format!("{restart}.log"));
    let since = match (&q.since_seconds, &q.since_time) {
        (Some(s), _) => Some(chrono::Utc::now() - chrono::Duration::seconds(*s)),
        (None, Some(t)) => chrono::DateTime::parse_from_rfc3339(t).ok().map(|t| t.with_timezone(&chrono::Utc)),
        _ => None,
    };
    let filter = Filter { timestamps: truthy(&q.timestamps), since };
    let text = tokio::fs::read_to_string(&path).await.unwrap_or_default();
    // Complete lines only; a trailing partial write is picked up when following.
    let complete = text.rfind('\n').map_or(0, |i| i + 1);
    let mut head = text[..complete].to_string();
    if let Some(n) = q.tail_lines.filter(|n| *n >= 0) {
        let lines: Vec<&str> = head.lines().collect();
        let keep = lines.len().saturating_sub(n as usize);
        head = lines[keep..].iter().map(|l| format!("{l}\n")).collect();
    }
    let mut first = Vec::new();
    filter.render(&head, &mut first);
    let limit = q.limit_bytes.filter(|l| *l > 0).map(|l| l as usize);
    if let Some(l) = limit {
        first.truncate(l);
    }
    if !truthy(&q.follow) || truthy(&q.previous) {
        return (StatusCode::OK, [("content-type", "text/plain")], first).into_response();
    }
    // Follow: stream what is appended until the instance stops.
    let id = instance_id(&uid, &container, restart);
    let offset = complete as u64;
    let stream = futures::stream::unfold((Some(first), offset, path, filter, k, id, String::new()), |(first, mut offset, path, filter, k, id, mut carry)| async move {
        if let Some(first) = first {
            return Some((Ok::<_, std::io::Error>(bytes::Bytes::from(first)), (None, offset, path, filter, k, id, carry)));
        }
        loop {
            let mut chunk = Vec::new();
            if let Ok(mut f) = tokio::fs::File::open(&path).await {
                if f.seek(std::io::SeekFrom::Start(offset)).await.is_ok() {
                    let _ = f.read_to_end(&mut chunk).await;
                }
            }
            offset += chunk.len() as u64;
            carry.push_str(&String::from_utf8_lossy(&chunk));
            if let Some(i) = carry.rfind('\n') {
                let ready: String = carry.drain(..=i).collect();
                let mut out = Vec::new();
                filter.render(&ready, &mut out);
                if !out.is_empty() {
                    return Some((Ok(bytes::Bytes::from(out)), (None, offset, path, filter, k, id, carry)));
                }
            }
            let running = matches!(k.runtime.state(&id), Some(ContainerState::Running { .. }) | Some(ContainerState::Created));
            if !running && chunk.is_empty() {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    (StatusCode::OK, [("content-type", "text/plain")], Body::from_stream(stream)).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_that_could_leave_the_log_folder_are_refused() {
        for ok in ["default", "kube-system", "a", "a1-b2", &"x".repeat(63)] {
            assert!(is_dns1123_label(ok), "{ok}");
            assert!(is_dns1123_subdomain(ok), "{ok}");
        }
        for bad in ["", ".", "..", "../x", "a/b", "-a", "a-", "A", "a_b", "a.b", "a%2Fb", &"x".repeat(64)] {
            assert!(!is_dns1123_label(bad), "{bad:?}");
        }
        assert!(is_dns1123_subdomain("web-0.example"));
        assert!(is_dns1123_subdomain(&"x".repeat(64)));
        for bad in ["", ".", "..", "a..b", ".a", "a.", "../x", "a/b", "A", "a_b", "x\0", &"x".repeat(254)] {
            assert!(!is_dns1123_subdomain(bad), "{bad:?}");
        }
    }

    #[test]
    fn bad_segments_get_400_with_what_was_wrong() {
        let err = PodPath::checked("default".into(), "..".into()).err().unwrap();
        assert_eq!(err, "invalid pod name \"..\": must be a DNS-1123 subdomain\n");
        assert_eq!(bad_request(err).status(), StatusCode::BAD_REQUEST);
        assert!(PodPath::checked("../x".into(), "box".into()).is_err());
        assert!(PodPath::checked("default".into(), "box".into()).is_ok());
        assert!(check_segment("container name", "../x", is_dns1123_label, "label").is_err());
    }
}
