//! HTTPS serving: TLS with optional client certificates, the caller's identity taken from
//! the verified certificate, HTTP/1.1 and HTTP/2 (with upgrades, for exec and port-forward
//! later) via hyper-util, and a graceful stop.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use apiserver::auth::UserInfo;
use apiserver::tokens::ServiceAccountTokens;
use hyper::body::Incoming;
use hyper::Request;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use hyper_util::service::TowerToHyperService;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt;

use crate::pki::Pki;

/// A client that opens a connection and never finishes the handshake must not hold a task forever.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long open connections may take to finish once a stop is asked for. Watches never
/// finish on their own and clients re-establish them, so this only lets in-flight requests end.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// The TLS settings: our serving certificate, and client certificates checked against the
/// client CA but not required, so that anonymous requests reach the router (which answers
/// 401, or serves the public health and version endpoints).
pub fn tls_config(pki: &Pki) -> anyhow::Result<Arc<ServerConfig>> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = RootCertStore::empty();
    for ca in parse_certs(&pki.client_ca_pem).context("reading the client CA")? {
        roots
            .add(ca)
            .context("adding the client CA to the trust store")?;
    }
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .allow_unauthenticated()
        .build()
        .context("building the client certificate verifier")?;
    let chain = parse_certs(&pki.serving_cert_pem).context("reading the serving certificate")?;
    let key: PrivateKeyDer<'static> =
        rustls_pemfile::private_key(&mut pki.serving_key_pem.as_bytes())
            .context("reading the serving key")?
            .context("no private key in the serving key file")?;
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("choosing TLS versions")?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)
        .context("loading the serving certificate")?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

fn parse_certs(pem: &str) -> anyhow::Result<Vec<CertificateDer<'static>>> {
    let certs = rustls_pemfile::certs(&mut pem.as_bytes()).collect::<Result<Vec<_>, _>>()?;
    anyhow::ensure!(!certs.is_empty(), "no certificate in PEM text");
    Ok(certs)
}

/// Accepts connections until `shutdown` resolves, then lets open ones finish for a while.
pub async fn serve(
    listener: TcpListener,
    tls: Arc<ServerConfig>,
    router: axum::Router,
    tokens: Option<Arc<ServiceAccountTokens>>,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let acceptor = TlsAcceptor::from(tls);
    let graceful = GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((tcp, peer)) => {
                    let conn = serve_connection(tcp, peer, acceptor.clone(), router.clone(), tokens.clone(), graceful.watcher());
                    tokio::spawn(conn);
                }
                // Usually out of file descriptors: back off instead of spinning.
                Err(e) => {
                    tracing::warn!(error = %e, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
            _ = &mut shutdown => break,
        }
    }
    drop(listener);
    tracing::info!(
        connections = graceful.count(),
        "stopped accepting connections; draining"
    );
    tokio::select! {
        _ = graceful.shutdown() => tracing::info!("all connections closed"),
        _ = tokio::time::sleep(DRAIN_TIMEOUT) => tracing::warn!("some connections still open after {DRAIN_TIMEOUT:?}; closing them"),
    }
    Ok(())
}

/// Runs one connection: TLS handshake, identity, then HTTP until the peer or a stop ends it.
async fn serve_connection(
    tcp: TcpStream,
    peer: SocketAddr,
    acceptor: TlsAcceptor,
    router: axum::Router,
    tokens: Option<Arc<ServiceAccountTokens>>,
    watcher: Watcher,
) {
    let _ = tcp.set_nodelay(true);
    let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
        Ok(Ok(tls)) => tls,
        // Health probes and port scanners drop connections mid-handshake; not worth a warning.
        Ok(Err(e)) => return tracing::debug!(%peer, error = %e, "TLS handshake failed"),
        Err(_) => return tracing::debug!(%peer, "TLS handshake timed out"),
    };
    let user = tls
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|chain| chain.first())
        .and_then(|der| identity(der));
    tracing::debug!(%peer, user = ?user.as_ref().map(|u| &u.name), "connection");
    // Every request on this connection carries the identity its certificate proved, or
    // else the one a service account bearer token proves.
    let service = router.map_request(move |mut req: Request<Incoming>| {
        let identity = user.clone().or_else(|| bearer_identity(&req, tokens.as_deref()));
        if let Some(user) = identity {
            req.extensions_mut().insert(user);
        }
        req
    });
    let builder = auto::Builder::new(TokioExecutor::new());
    let conn = builder
        .serve_connection_with_upgrades(TokioIo::new(tls), TowerToHyperService::new(service));
    if let Err(e) = watcher.watch(conn).await {
        tracing::debug!(%peer, error = %e, "connection ended with an error");
    }
}

/// The service account a valid `Authorization: Bearer` token names, if any.
fn bearer_identity(req: &Request<Incoming>, tokens: Option<&ServiceAccountTokens>) -> Option<UserInfo> {
    let token = req.headers().get("authorization")?.to_str().ok()?.strip_prefix("Bearer ")?.trim();
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).ok()?.as_secs() as i64;
    tokens?.authenticate(token, now)
}

/// The user a (verified) client certificate names: CN is the user, each O a group, as the
/// upstream x509 authenticator reads it. A certificate without a CN identifies nobody.
pub fn identity(cert_der: &[u8]) -> Option<UserInfo> {
    let (_, cert) = x509_parser::parse_x509_certificate(cert_der).ok()?;
    let subject = cert.subject();
    let cn = subject.iter_common_name().next()?.as_str().ok()?;
    if cn.is_empty() {
        return None;
    }
    let orgs: Vec<String> = subject
        .iter_organization()
        .filter_map(|o| o.as_str().ok())
        .map(String::from)
        .collect();
    Some(UserInfo::from_subject(cn, &orgs))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pki::{self, San};

    #[test]
    fn identity_of_admin_certificate() {
        let dir = tempfile::tempdir().unwrap();
        let sans = [San::parse("localhost")].into_iter().collect();
        let pki = pki::ensure(dir.path(), &sans).unwrap();
        let der = pki::pem_to_der(&pki.admin_cert_pem).unwrap();
        let user = identity(&der).unwrap();
        assert_eq!(user.name, "system:admin");
        assert_eq!(user.groups, ["system:masters", "system:authenticated"]);
        // The TLS settings build from freshly made material.
        tls_config(&pki).unwrap();
    }
}
