//! HTTPS serving: TLS with optional client certificates, the caller's identity taken from
//! the verified certificate, HTTP/1.1 and HTTP/2 (with upgrades, for exec and port-forward)
//! via hyper-util, kube-apiserver's connection timeouts and a cap on unauthenticated
//! connections (`conns`), and a graceful stop.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use apiserver::auth::UserInfo;
use hyper::body::Incoming;
use hyper::Request;
use apiserver::conn::ConnectionAuth;
use http_body_util::BodyExt;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt;

use crate::conns;
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

/// How connections are served: timeouts, HTTP/2 limits, the unauthenticated cap (see
/// [`conns`]).
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub timeouts: conns::Timeouts,
    pub http2_max_streams: u32,
    pub max_unauthenticated: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            timeouts: conns::Timeouts {
                read_header: conns::DEFAULT_READ_HEADER_TIMEOUT,
                idle: conns::DEFAULT_IDLE_TIMEOUT,
            },
            http2_max_streams: conns::DEFAULT_HTTP2_MAX_STREAMS,
            max_unauthenticated: conns::DEFAULT_MAX_UNAUTHENTICATED,
        }
    }
}

/// What every connection task shares.
struct Shared {
    acceptor: TlsAcceptor,
    router: axum::Router,
    timeouts: conns::Timeouts,
    unauthenticated: Arc<conns::Unauthenticated>,
    /// HTTP/1.1 only, for clients that did not negotiate h2 by ALPN (as Go's server over
    /// TLS: no HTTP/2 without ALPN).
    http1: auto::Builder<TokioExecutor>,
    http2: auto::Builder<TokioExecutor>,
}

/// kube-apiserver's HTTP/2 buffers: "at least 99% of serialized resources in surveyed
/// clusters were smaller than 256kb", so one frame and one stream window hold most requests.
const HTTP2_FRAME_AND_STREAM_WINDOW: u32 = 256 * 1024;
/// Go's `MaxHeaderBytes` as kube-apiserver sets it; HTTP/2 advertises it as the header list size.
const MAX_HEADER_BYTES: u32 = 1 << 20;
/// HTTP/2 keep-alive pings on connections that have gone quiet, and how long the peer has
/// to answer before the connection is dropped: client-go's `ReadIdleTimeout` and
/// `PingTimeout`, so a vanished client's watches end as a vanished server's do for it.
const HTTP2_PING_INTERVAL: Duration = Duration::from_secs(30);
const HTTP2_PING_TIMEOUT: Duration = Duration::from_secs(15);
/// How long an idle HTTP/2 connection may take to go away after GOAWAY.
const GOAWAY_GRACE: Duration = Duration::from_secs(1);

fn http_builders(limits: &Limits) -> (auto::Builder<TokioExecutor>, auto::Builder<TokioExecutor>) {
    let mut http1 = auto::Builder::new(TokioExecutor::new()).http1_only();
    // Our own header timeout (conns::Activity) replaces hyper's, whose timer would also run
    // on idle keep-alive connections and so close them after the header timeout, not the
    // idle one.
    http1.http1().header_read_timeout(None);
    let mut http2 = auto::Builder::new(TokioExecutor::new()).http2_only();
    let streams = limits.http2_max_streams.max(1);
    http2
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(streams)
        .max_frame_size(HTTP2_FRAME_AND_STREAM_WINDOW)
        .initial_stream_window_size(HTTP2_FRAME_AND_STREAM_WINDOW)
        .initial_connection_window_size(HTTP2_FRAME_AND_STREAM_WINDOW.saturating_mul(streams))
        .max_header_list_size(MAX_HEADER_BYTES)
        .keep_alive_interval(HTTP2_PING_INTERVAL)
        .keep_alive_timeout(HTTP2_PING_TIMEOUT);
    (http1, http2)
}

/// Accepts connections until `shutdown` resolves, then lets open ones finish for a while.
pub async fn serve(
    listener: TcpListener,
    tls: Arc<ServerConfig>,
    router: axum::Router,
    limits: Limits,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let (http1, http2) = http_builders(&limits);
    let shared = Arc::new(Shared {
        acceptor: TlsAcceptor::from(tls),
        router,
        timeouts: limits.timeouts,
        unauthenticated: conns::Unauthenticated::new(limits.max_unauthenticated),
        http1,
        http2,
    });
    let stop = CancellationToken::new();
    let tasks = TaskTracker::new();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((tcp, peer)) => {
                    tasks.spawn(serve_connection(tcp, peer, shared.clone(), stop.clone()));
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
    tracing::info!(connections = tasks.len(), "stopped accepting connections; draining");
    stop.cancel();
    tasks.close();
    tokio::select! {
        _ = tasks.wait() => tracing::info!("all connections closed"),
        _ = tokio::time::sleep(DRAIN_TIMEOUT) => tracing::warn!("some connections still open after {DRAIN_TIMEOUT:?}; closing them"),
    }
    Ok(())
}

/// Runs one connection: TLS handshake, identity, then HTTP until the peer, a timeout, the
/// unauthenticated cap or a stop ends it.
async fn serve_connection(tcp: TcpStream, peer: SocketAddr, shared: Arc<Shared>, stop: CancellationToken) {
    let _ = tcp.set_nodelay(true);
    let admission = shared.unauthenticated.admit();
    let handshake = tokio::time::timeout(HANDSHAKE_TIMEOUT, shared.acceptor.accept(tcp));
    let tls = tokio::select! {
        done = handshake => match done {
            Ok(Ok(tls)) => tls,
            // Health probes and port scanners drop connections mid-handshake; not worth a warning.
            Ok(Err(e)) => return tracing::debug!(%peer, error = %e, "TLS handshake failed"),
            Err(_) => return tracing::debug!(%peer, "TLS handshake timed out"),
        },
        _ = admission.shed.cancelled() => return shed(peer),
        _ = stop.cancelled() => return,
    };
    let user = tls
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|chain| chain.first())
        .and_then(|der| identity(der));
    if user.is_some() {
        admission.auth.mark();
    }
    let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
    tracing::debug!(%peer, user = ?user.as_ref().map(|u| &u.name), h2, "connection");
    let activity = conns::Activity::new(!h2);
    let service = request_service(&shared, user, admission.auth.clone(), activity.clone());
    let builder = if h2 { &shared.http2 } else { &shared.http1 };
    let io = TokioIo::new(conns::Watched::new(tls, activity.clone()));
    let conn = builder.serve_connection_with_upgrades(io, TowerToHyperService::new(service));
    tokio::pin!(conn);
    let stopping = tokio::select! {
        ended = conn.as_mut() => return connection_ended(peer, ended),
        _ = activity.expired(shared.timeouts) => false,
        _ = admission.shed.cancelled() => return shed(peer),
        _ = stop.cancelled() => true,
    };
    if !stopping {
        tracing::debug!(%peer, "closing an idle connection");
        // No request is in flight: HTTP/1.1 just closes (as Go's server); HTTP/2 says GOAWAY.
        if !h2 {
            return;
        }
    }
    conn.as_mut().graceful_shutdown();
    let wait = if stopping { DRAIN_TIMEOUT } else { GOAWAY_GRACE };
    if let Ok(ended) = tokio::time::timeout(wait, conn).await {
        connection_ended(peer, ended);
    }
}

fn shed(peer: SocketAddr) {
    tracing::debug!(%peer, "closing the oldest unauthenticated connection: too many unauthenticated connections");
}

fn connection_ended<E: std::fmt::Display>(peer: SocketAddr, ended: Result<(), E>) {
    if let Err(e) = ended {
        tracing::debug!(%peer, error = %e, "connection ended with an error");
    }
}

/// The router behind one connection. Every request carries the identity the connection's
/// certificate proved, and the connection's [`ConnectionAuth`]; it counts as in flight
/// until its response is sent.
fn request_service(
    shared: &Shared,
    user: Option<UserInfo>,
    auth: ConnectionAuth,
    activity: Arc<conns::Activity>,
) -> impl tower::Service<
    Request<Incoming>,
    Response = axum::response::Response,
    Error = std::convert::Infallible,
    Future = impl Future<Output = Result<axum::response::Response, std::convert::Infallible>> + Send,
> + Clone {
    let router = shared.router.clone();
    tower::service_fn(move |mut req: Request<Incoming>| {
        let in_flight = activity.begin();
        // Bearer tokens are the API server's to check (`apiserver::auth::filter`, which
        // marks the connection when one is valid).
        if let Some(user) = user.clone() {
            auth.mark();
            req.extensions_mut().insert(user);
        }
        req.extensions_mut().insert(auth.clone());
        let router = router.clone();
        async move {
            let response = router.oneshot(req).await?;
            Ok(response.map(|body| held_until_sent(body, in_flight)))
        }
    })
}

/// The response body, holding the request's in-flight mark until hyper has sent it all
/// (or the client went away): a watch stays in flight for as long as it streams.
fn held_until_sent(body: axum::body::Body, in_flight: conns::InFlight) -> axum::body::Body {
    axum::body::Body::new(body.map_frame(move |frame| {
        let _held = &in_flight;
        frame
    }))
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
