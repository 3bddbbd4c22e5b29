//! The kubelet's HTTPS endpoint (port 10250): the API server forwards `pods/log`, `pods/exec`,
//! `pods/attach` and `pods/portforward` here (the streaming ones: see [`stream`]). Clients must
//! present a certificate signed by the cluster's client CA, as upstream's kubelet with
//! `--client-ca-file`.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Path as UrlPath, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::io::{AsyncReadExt, AsyncSeekExt};
use tokio::net::TcpListener;

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
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone()).build().map_err(|e| e.to_string())?;
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
    let router = axum::Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/containerLogs/{namespace}/{pod}/{container}", get(container_logs))
        .route("/stats/summary", get(|State(k): State<Arc<Kubelet>>| async move { axum::Json(k.stats.summary()) }))
        .route("/exec/{namespace}/{pod}/{container}", any(stream::exec))
        .route("/attach/{namespace}/{pod}/{container}", any(stream::attach))
        .route("/portForward/{namespace}/{pod}", any(stream::port_forward))
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
            let conn = auto::Builder::new(TokioExecutor::new());
            if let Err(e) = conn.serve_connection_with_upgrades(TokioIo::new(tls), TowerToHyperService::new(router)).await {
                tracing::debug!(%peer, error = %e, "kubelet endpoint: connection ended");
            }
        });
    }
}

fn plain(code: StatusCode, msg: String) -> Response {
    (code, msg).into_response()
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

async fn container_logs(State(k): State<Arc<Kubelet>>, UrlPath((namespace, pod, container)): UrlPath<(String, String, String)>, Query(q): Query<LogQuery>) -> Response {
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
