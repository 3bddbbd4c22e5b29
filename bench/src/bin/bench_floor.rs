//! `bench-floor`: the floor of the API benchmark. A bare axum handler that answers every
//! request (any method and path; a request body is read and dropped) with one fixed, small
//! JSON object (a GET of a collection gets a fixed list of 100 such objects), served over the
//! same TLS setup as `krust server` (krust/src/serve.rs): the server's own serving
//! certificate, client certificates verified against its client CA, ALPN h2 and http/1.1,
//! hyper-util's auto (HTTP/1.1 + HTTP/2) connection builder.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use anyhow::{Context, Result};
use axum::body::Bytes;
use axum::http::header::CONTENT_TYPE;
use axum::http::{Method, Uri};
use axum::response::IntoResponse;
use clap::Parser;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

#[derive(Parser, Debug)]
#[command(about = "Bare axum+rustls handler returning a fixed JSON object (API benchmark floor)")]
struct Args {
    /// A krust data dir: its serving certificate and client CA are used.
    #[arg(long)]
    data_dir: PathBuf,
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// Items in the list returned for a GET of a collection.
    #[arg(long, default_value_t = 100)]
    list_size: usize,
}

/// About the size of a small ConfigMap as the API server returns it.
const BODY: &str = r#"{"kind":"ConfigMap","apiVersion":"v1","metadata":{"name":"cm-0","namespace":"bench","uid":"6c1b5b7e-1c7e-4d1e-9a51-0d3f3f7c2a10","resourceVersion":"1234","creationTimestamp":"2025-01-01T00:00:00Z","labels":{"app":"bench"},"managedFields":[{"manager":"bench","operation":"Update","apiVersion":"v1","time":"2025-01-01T00:00:00Z","fieldsType":"FieldsV1","fieldsV1":{"f:data":{".":{},"f:key":{},"f:other":{}},"f:metadata":{"f:labels":{".":{},"f:app":{}}}}}]},"data":{"key":"value of cm-0","other":"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"}}"#;

/// A list of `n` such objects, as a LIST of a namespace returns (the floor of the LIST
/// workload should move as many bytes as the API server does).
fn list_body(n: usize) -> String {
    let items: Vec<String> = (0..n).map(|i| BODY.replace("cm-0", &format!("cm-{i:04}"))).collect();
    format!(
        r#"{{"kind":"ConfigMapList","apiVersion":"v1","metadata":{{"resourceVersion":"1234"}},"items":[{}]}}"#,
        items.join(",")
    )
}

static LIST: OnceLock<String> = OnceLock::new();

/// Any request: the fixed object; a GET of a collection (path ending in `s`): the fixed list.
async fn handler(method: Method, uri: Uri, _body: Bytes) -> impl IntoResponse {
    let body: &'static str = if method == Method::GET && uri.path().ends_with('s') {
        LIST.get().map(String::as_str).unwrap_or(BODY)
    } else {
        BODY
    };
    ([(CONTENT_TYPE, "application/json")], body)
}

fn certs(path: &PathBuf) -> Result<Vec<CertificateDer<'static>>> {
    let pem = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    Ok(rustls_pemfile::certs(&mut pem.as_slice()).collect::<Result<Vec<_>, _>>()?)
}

fn tls(data_dir: &PathBuf) -> Result<Arc<ServerConfig>> {
    let tls_dir = data_dir.join("server/tls");
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = RootCertStore::empty();
    for ca in certs(&tls_dir.join("client-ca.crt"))? {
        roots.add(ca)?;
    }
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .allow_unauthenticated()
        .build()?;
    let chain = certs(&tls_dir.join("serving-kube-apiserver.crt"))?;
    let key_pem = std::fs::read(tls_dir.join("serving-kube-apiserver.key"))?;
    let key: PrivateKeyDer<'static> =
        rustls_pemfile::private_key(&mut key_pem.as_slice())?.context("no private key")?;
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    let _ = LIST.set(list_body(args.list_size));
    let acceptor = TlsAcceptor::from(tls(&args.data_dir)?);
    let router = axum::Router::new().fallback(handler);
    let listener = TcpListener::bind(args.listen).await?;
    println!("bench-floor listening on https://{}", listener.local_addr()?);
    loop {
        let (tcp, _) = listener.accept().await?;
        let _ = tcp.set_nodelay(true);
        let acceptor = acceptor.clone();
        let router = router.clone();
        tokio::spawn(async move {
            let Ok(tls) = acceptor.accept(tcp).await else {
                return;
            };
            let builder = auto::Builder::new(TokioExecutor::new());
            let _ = builder
                .serve_connection_with_upgrades(TokioIo::new(tls), TowerToHyperService::new(router))
                .await;
        });
    }
}
