//! The API server's connection limits against a real `krust server`: a flood of idle
//! connections that never authenticate does not keep real clients out, and kube-apiserver's
//! header and idle timeouts close slow and idle connections but never a watch.

mod common;

use std::io::Read;
use std::net::SocketAddr;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{text, TestServer};
use http_body_util::BodyExt;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

/// Idle connections in the flood, and how many of them complete a TLS handshake (the rest
/// connect and send nothing, as a port scanner or a stalled client).
const FLOOD: usize = 6000;
const FLOOD_TLS_EVERY: usize = 3; // 1 in 3 is plain TCP
/// The server's cap on unauthenticated connections in the flood test.
const CAP: usize = 1500;

/// A multi-threaded runtime for the test's own clients (the harness is synchronous).
fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap()
}

/// The flood holds thousands of sockets: start with as many descriptors as allowed.
fn raise_nofile_limit() {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let (_, hard) = getrlimit(Resource::RLIMIT_NOFILE).unwrap();
    setrlimit(Resource::RLIMIT_NOFILE, hard, hard).unwrap();
    assert!(hard as usize > FLOOD + 1000, "the hard open files limit ({hard}) is too low for this test");
}

/// TLS without a client certificate, trusting the server CA, offering `alpn`.
fn tls_client(server: &TestServer, alpn: &[&[u8]]) -> TlsConnector {
    let pem = std::fs::read(server.server_ca()).unwrap();
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pemfile::certs(&mut pem.as_slice()) {
        roots.add(cert.unwrap()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    TlsConnector::from(Arc::new(config))
}

fn addr(server: &TestServer) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], server.port()))
}

async fn tls_connect(addr: SocketAddr, tls: &TlsConnector) -> std::io::Result<TlsStream<TcpStream>> {
    let tcp = TcpStream::connect(addr).await?;
    tls.connect(ServerName::try_from("127.0.0.1").unwrap(), tcp).await
}

/// Opens `FLOOD` idle connections, a hundred at a time, and returns their sockets.
async fn flood(addr: SocketAddr, tls: TlsConnector) -> Vec<std::net::TcpStream> {
    let mut sockets = Vec::with_capacity(FLOOD);
    for batch in (0..FLOOD).collect::<Vec<_>>().chunks(100) {
        let mut tasks = tokio::task::JoinSet::new();
        for &i in batch {
            let tls = tls.clone();
            tasks.spawn(async move {
                if i % FLOOD_TLS_EVERY == 0 {
                    TcpStream::connect(addr).await.and_then(|tcp| tcp.into_std())
                } else {
                    tls_connect(addr, &tls).await.and_then(|s| s.into_inner().0.into_std())
                }
            });
        }
        while let Some(done) = tasks.join_next().await {
            // A handshake cut short because the server shed it is a closed connection too.
            match done.unwrap() {
                Ok(socket) => sockets.push(socket),
                Err(e) => eprintln!("flood connection failed: {e}"),
            }
        }
    }
    sockets
}

/// Whether the server closed this (non-blocking) socket: reads what is pending (a TLS
/// session ticket, say) and looks for the end of the stream.
fn closed_by_server(mut socket: &std::net::TcpStream) -> bool {
    let mut buf = [0u8; 4096];
    loop {
        match socket.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return false,
            Err(_) => return true,
        }
    }
}

fn count_open(sockets: &[std::net::TcpStream]) -> usize {
    sockets.iter().filter(|s| !closed_by_server(s)).count()
}

/// `curl` with a bearer token: POST a SelfSubjectReview, which any authenticated identity
/// may. Returns (status, body).
fn curl_bearer_whoami(server: &TestServer, token: &str) -> (u16, String) {
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "10", "-w", "\n%{http_code}", "-X", "POST"])
        .args(["-H", &format!("Authorization: Bearer {token}"), "-H", "Content-Type: application/json"])
        .args(["--data", r#"{"apiVersion":"authentication.k8s.io/v1","kind":"SelfSubjectReview"}"#])
        .arg("--cacert")
        .arg(server.server_ca())
        .arg(format!("{}/apis/authentication.k8s.io/v1/selfsubjectreviews", server.url()))
        .output()
        .unwrap();
    assert!(out.status.success(), "curl failed: {}", text(&out.stderr));
    let stdout = text(&out.stdout);
    let (body, code) = stdout.rsplit_once('\n').unwrap();
    (code.trim().parse().unwrap(), body.to_string())
}

/// 6,000 idle connections (a third plain TCP, the rest TLS without a certificate) do not
/// keep an admin or a token client out: each is answered within a second, the server holds
/// no more than its cap of unauthenticated connections and never runs out of descriptors.
#[test]
fn idle_connection_flood_does_not_starve_authenticated_clients() {
    raise_nofile_limit();
    let cap = CAP.to_string();
    let server = TestServer::start_with(&["--max-unauthenticated-connections", &cap]);
    server.kubectl_ok(&["create", "serviceaccount", "flood-test"]);
    let token = server.kubectl_ok(&["create", "token", "flood-test"]).trim().to_string();
    let rt = runtime();

    let started = Instant::now();
    let sockets = rt.block_on(flood(addr(&server), tls_client(&server, &[b"h2", b"http/1.1"])));
    eprintln!("opened {} connections in {:?}", sockets.len(), started.elapsed());
    assert!(sockets.len() > FLOOD * 9 / 10, "only {} of {FLOOD} connections opened", sockets.len());

    // While the flood is held: the admin (client certificate) and a token client.
    let asked = Instant::now();
    let (status, body) = server.curl_admin("GET", "/api/v1/namespaces/default", &[], None);
    let took = asked.elapsed();
    assert_eq!(status, 200, "{body}");
    assert!(took < Duration::from_secs(1), "admin request took {took:?} during the flood");
    let asked = Instant::now();
    let (status, body) = curl_bearer_whoami(&server, &token);
    let took = asked.elapsed();
    assert_eq!(status, 201, "{body}");
    assert!(body.contains("system:serviceaccount:default:flood-test"), "{body}");
    assert!(took < Duration::from_secs(1), "token request took {took:?} during the flood");

    // The oldest unauthenticated connections were shed: the server holds at most its cap.
    let mut open = count_open(&sockets);
    let deadline = Instant::now() + Duration::from_secs(10);
    while open > CAP && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
        open = count_open(&sockets);
    }
    assert!(open <= CAP, "{open} flood connections still open, cap {CAP}");
    assert!(open > CAP / 2, "only {open} flood connections open: shed far more than the cap asks");
    let logs = server.logs();
    assert!(!logs.contains("accepting a connection failed"), "the server ran out of descriptors:\n{logs}");
    drop(sockets);
}

/// Reads one HTTP/1.1 response with a Content-Length body; returns its head.
async fn read_response(stream: &mut TlsStream<TcpStream>) -> String {
    let mut data = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = stream.read(&mut buf).await.unwrap();
        assert!(n > 0, "connection closed mid-response: {}", String::from_utf8_lossy(&data));
        data.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&data).to_string();
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let length: usize = head
                .lines()
                .find_map(|l| l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().parse().unwrap()))
                .expect("a Content-Length");
            if body.len() >= length {
                return head.to_string();
            }
        }
    }
}

/// How long until the server closes `stream` (reading and discarding what it sends).
async fn time_to_close(stream: &mut TlsStream<TcpStream>, from: Instant) -> Duration {
    let mut buf = [0u8; 4096];
    let limit = Duration::from_secs(30);
    loop {
        match tokio::time::timeout(limit, stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return from.elapsed(),
            Ok(Ok(_)) => continue,
            Err(_) => panic!("connection still open after {limit:?}"),
        }
    }
}

const HEADER_TIMEOUT: Duration = Duration::from_secs(2);
const IDLE_TIMEOUT: Duration = Duration::from_secs(6);

fn assert_between(what: &str, took: Duration, low: Duration, high: Duration) {
    assert!(low <= took && took <= high, "{what}: closed after {took:?}, expected {low:?}..{high:?}");
}

const GET_VERSION: &[u8] = b"GET /version HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n";
const HALF_HEAD: &[u8] = b"GET /version HTTP/1.1\r\nHost: 127.0.0.1\r\n";

/// A first request head that never completes is cut after the header timeout.
async fn half_head_first(addr: SocketAddr, tls: TlsConnector) {
    let mut stream = tls_connect(addr, &tls).await.unwrap();
    let from = Instant::now();
    stream.write_all(HALF_HEAD).await.unwrap();
    let took = time_to_close(&mut stream, from).await;
    assert_between("half a first head", took, HEADER_TIMEOUT - Duration::from_millis(500), HEADER_TIMEOUT + Duration::from_secs(3));
}

/// On a kept-alive connection, a later head's header timeout runs from its first byte,
/// well before the idle timeout.
async fn half_head_after_request(addr: SocketAddr, tls: TlsConnector) {
    let mut stream = tls_connect(addr, &tls).await.unwrap();
    stream.write_all(GET_VERSION).await.unwrap();
    let head = read_response(&mut stream).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    tokio::time::sleep(Duration::from_secs(1)).await;
    let from = Instant::now();
    stream.write_all(HALF_HEAD).await.unwrap();
    let took = time_to_close(&mut stream, from).await;
    assert_between("half a second head", took, HEADER_TIMEOUT - Duration::from_millis(500), IDLE_TIMEOUT - Duration::from_millis(1500));
}

/// An HTTP/1.1 keep-alive connection with no request in flight is closed after the idle
/// timeout (not the shorter header timeout).
async fn idle_http1(addr: SocketAddr, tls: TlsConnector) {
    let mut stream = tls_connect(addr, &tls).await.unwrap();
    stream.write_all(GET_VERSION).await.unwrap();
    read_response(&mut stream).await;
    let took = time_to_close(&mut stream, Instant::now()).await;
    assert_between("idle HTTP/1.1", took, IDLE_TIMEOUT - Duration::from_millis(500), IDLE_TIMEOUT + Duration::from_secs(4));
}

/// An idle HTTP/2 connection gets GOAWAY and ends after the idle timeout.
async fn idle_http2(addr: SocketAddr, tls: TlsConnector) {
    let stream = tls_connect(addr, &tls).await.unwrap();
    assert_eq!(stream.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let (mut sender, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream)).await.unwrap();
    let ended = tokio::spawn(async move {
        let _ = conn.await;
        Instant::now()
    });
    let req = hyper::Request::get(format!("https://{addr}/version"))
        .body(http_body_util::Empty::<hyper::body::Bytes>::new())
        .unwrap();
    let resp = sender.send_request(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    resp.into_body().collect().await.unwrap();
    let from = Instant::now();
    let took = tokio::time::timeout(Duration::from_secs(30), ended).await.expect("HTTP/2 connection still open").unwrap() - from;
    assert_between("idle HTTP/2", took, IDLE_TIMEOUT - Duration::from_millis(500), IDLE_TIMEOUT + Duration::from_secs(4));
}

/// A watch (a request in flight) outlives the idle timeout: curl's own time limit ends it.
fn watch_outlives_idle_timeout(server: &TestServer, http: &str) {
    let (cert, key, ca) = server.admin_cert_files();
    let limit = IDLE_TIMEOUT + Duration::from_secs(3);
    let started = Instant::now();
    let out = Command::new("curl")
        .args(["-sS", "-N", http, "--max-time", &limit.as_secs().to_string()])
        .arg("--cert")
        .arg(cert)
        .arg("--key")
        .arg(key)
        .arg("--cacert")
        .arg(ca)
        .arg(format!("{}/api/v1/namespaces?watch=true", server.url()))
        .output()
        .unwrap();
    let took = started.elapsed();
    // 28: curl's "operation timed out", i.e. the server kept the watch open.
    assert_eq!(out.status.code(), Some(28), "watch over {http} ended after {took:?}: {}", text(&out.stderr));
    assert!(text(&out.stdout).contains("\"ADDED\""), "{}", text(&out.stdout));
}

#[test]
fn header_and_idle_timeouts_close_connections_but_not_watches() {
    let header = format!("{}s", HEADER_TIMEOUT.as_secs());
    let idle = format!("{}s", IDLE_TIMEOUT.as_secs());
    let server = TestServer::start_with(&["--read-header-timeout", &header, "--idle-timeout", &idle]);
    let addr = addr(&server);
    let http1 = tls_client(&server, &[b"http/1.1"]);
    let http2 = tls_client(&server, &[b"h2"]);
    let rt = runtime();
    // All at once: the whole test takes about one idle timeout.
    let watches = std::thread::scope(|scope| {
        let w1 = scope.spawn(|| watch_outlives_idle_timeout(&server, "--http1.1"));
        let w2 = scope.spawn(|| watch_outlives_idle_timeout(&server, "--http2"));
        rt.block_on(async {
            let checks = [
                tokio::spawn(half_head_first(addr, http1.clone())),
                tokio::spawn(half_head_after_request(addr, http1.clone())),
                tokio::spawn(idle_http1(addr, http1.clone())),
                tokio::spawn(idle_http2(addr, http2.clone())),
            ];
            for check in checks {
                if let Err(e) = check.await {
                    std::panic::resume_unwind(e.into_panic());
                }
            }
        });
        [w1.join(), w2.join()]
    });
    for watch in watches {
        if let Err(e) = watch {
            std::panic::resume_unwind(e);
        }
    }
}
