//! `bench-api`: Kubernetes API workloads (create, get, list, watch of ConfigMaps) against
//! `krust server` on its embedded SQLite and on a real etcd, beside a floor (`bench-floor`:
//! a bare axum+rustls handler). Every target is driven the same way: HTTP/2 over TLS with
//! the admin client certificate of a kubeconfig, one connection per concurrent worker; and,
//! to weigh authorization, the same get as a service account (bearer token, RBAC Role).
//! Run by `scripts/bench-api`, which starts the servers.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use base64::Engine;
use bytes::Bytes;
use clap::Parser;
use http::{Method, Request, StatusCode, Uri};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http2::SendRequest;
use hyper_util::rt::{TokioExecutor, TokioIo};
use krust_bench::{fmt_lat, fmt_ops, fmt_ratio, merge, print_table, run_workers, Rng, Stat};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

#[derive(Parser, Debug, Clone)]
#[command(about = "Kubernetes API benchmark: krust server on SQLite and on etcd, beside a bare TLS handler")]
struct Args {
    /// Admin kubeconfig (CA and client certificate; its server URL is not used).
    #[arg(long)]
    kubeconfig: std::path::PathBuf,
    /// `krust server` on embedded SQLite, e.g. https://127.0.0.1:16443
    #[arg(long)]
    sqlite: Option<String>,
    /// `krust server --datastore-endpoint http://...` on etcd.
    #[arg(long)]
    etcd: Option<String>,
    /// `bench-floor` (same TLS material as the servers).
    #[arg(long)]
    floor: Option<String>,
    /// Concurrent workers (one HTTP/2 connection each).
    #[arg(long, default_value_t = 16)]
    concurrency: usize,
    /// ConfigMaps created in total by the workers.
    #[arg(long, default_value_t = 2000)]
    creates: usize,
    /// Seconds each read workload runs.
    #[arg(long, default_value_t = 4.0)]
    read_secs: f64,
    /// Objects in the listed namespace.
    #[arg(long, default_value_t = 100)]
    list_size: usize,
    /// Concurrent watchers of one namespace.
    #[arg(long, default_value_t = 100)]
    watchers: usize,
    /// Objects created (one after the other) while the watchers watch.
    #[arg(long, default_value_t = 200)]
    watch_creates: usize,
}

const W_CREATE: &str = "create";
const W_GET: &str = "get";
const W_GET_TOKEN: &str = "get-token";
const W_LIST: &str = "list";
const W_WATCH: &str = "watch";

type Results = Vec<(&'static str, Stat)>;

/// TLS material and where to connect.
#[derive(Clone)]
struct Target {
    tls: TlsConnector,
    /// `Authorization: Bearer` for every request (with a TLS connector without a client
    /// certificate, so the token is what identifies the caller).
    bearer: Option<String>,
    host: String,
    port: u16,
    server_name: ServerName<'static>,
}

type Conn = SendRequest<Full<Bytes>>;

impl Target {
    fn new(url: &str, tls: TlsConnector) -> Result<Target> {
        let uri: Uri = url.parse().with_context(|| format!("parsing {url}"))?;
        let host = uri.host().context("URL without host")?.trim_matches(['[', ']']).to_owned();
        let port = uri.port_u16().unwrap_or(443);
        let server_name = ServerName::try_from(host.clone())?;
        Ok(Target {
            tls,
            bearer: None,
            host,
            port,
            server_name,
        })
    }

    async fn connect(&self) -> Result<Conn> {
        let tcp = TcpStream::connect((self.host.as_str(), self.port)).await?;
        tcp.set_nodelay(true)?;
        let tls = self.tls.connect(self.server_name.clone(), tcp).await?;
        ensure!(
            tls.get_ref().1.alpn_protocol() == Some(b"h2"),
            "server did not negotiate HTTP/2"
        );
        let (send, conn) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
            .initial_stream_window_size(4 << 20)
            .initial_connection_window_size(8 << 20)
            .handshake(TokioIo::new(tls))
            .await?;
        tokio::spawn(conn);
        Ok(send)
    }

    fn uri(&self, path: &str) -> String {
        format!("https://{}:{}{path}", self.host, self.port)
    }
}

/// The kubeconfig's CA, and its client certificate when `client_cert`.
fn tls_from_kubeconfig(path: &std::path::Path, client_cert: bool) -> Result<TlsConnector> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let kc: serde_json::Value = serde_yaml::from_str(&text)?;
    let b64 = |v: &serde_json::Value| -> Result<Vec<u8>> {
        let s = v.as_str().context("missing kubeconfig field")?;
        Ok(base64::engine::general_purpose::STANDARD.decode(s)?)
    };
    let ca = b64(&kc["clusters"][0]["cluster"]["certificate-authority-data"])?;
    let cert = b64(&kc["users"][0]["user"]["client-certificate-data"])?;
    let key = b64(&kc["users"][0]["user"]["client-key-data"])?;
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls_pemfile::certs(&mut ca.as_slice()) {
        roots.add(c?)?;
    }
    let chain: Vec<CertificateDer<'static>> =
        rustls_pemfile::certs(&mut cert.as_slice()).collect::<Result<_, _>>()?;
    let key: PrivateKeyDer<'static> =
        rustls_pemfile::private_key(&mut key.as_slice())?.context("no client key")?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots);
    let mut config = if client_cert { builder.with_client_auth_cert(chain, key)? } else { builder.with_no_client_auth() };
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(TlsConnector::from(Arc::new(config)))
}

/// Sends one request and reads the whole response.
async fn call(c: &mut Conn, t: &Target, method: Method, path: &str, body: Option<Vec<u8>>) -> Result<(StatusCode, Bytes)> {
    let mut req = Request::builder().method(method).uri(t.uri(path));
    req = req.header("accept", "application/json");
    if let Some(token) = &t.bearer {
        req = req.header("authorization", format!("Bearer {token}"));
    }
    if body.is_some() {
        req = req.header("content-type", "application/json");
    }
    let req = req.body(Full::new(Bytes::from(body.unwrap_or_default())))?;
    c.ready().await?;
    let resp = c.send_request(req).await?;
    let status = resp.status();
    let body = resp.into_body().collect().await?.to_bytes();
    Ok((status, body))
}

fn configmap(name: &str) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": { "name": name, "labels": { "app": "bench" } },
        "data": { "key": format!("value of {name}"), "other": "x".repeat(200) },
    }))
    .unwrap()
}

async fn ensure_ns(c: &mut Conn, t: &Target, ns: &str) -> Result<()> {
    let body = serde_json::to_vec(&serde_json::json!({
        "apiVersion": "v1", "kind": "Namespace", "metadata": { "name": ns }
    }))?;
    let (st, b) = call(c, t, Method::POST, "/api/v1/namespaces", Some(body)).await?;
    ensure!(
        st == StatusCode::CREATED || st == StatusCode::CONFLICT,
        "creating namespace {ns}: {st} {}",
        String::from_utf8_lossy(&b)
    );
    Ok(())
}

async fn conns(t: &Target, n: usize) -> Result<Vec<Conn>> {
    let mut v = Vec::with_capacity(n);
    for _ in 0..n {
        v.push(t.connect().await?);
    }
    Ok(v)
}

async fn run_target(args: &Args, t: &Target, kube: bool, run: &str) -> Result<Results> {
    let mut out: Results = Vec::new();
    let mut admin = t.connect().await?;
    let (ns, list_ns, watch_ns) = (
        format!("bench-{run}"),
        format!("bench-list-{run}"),
        format!("bench-watch-{run}"),
    );
    if kube {
        for n in [&ns, &list_ns, &watch_ns] {
            ensure_ns(&mut admin, t, n).await?;
        }
        for i in 0..args.list_size {
            let path = format!("/api/v1/namespaces/{list_ns}/configmaps");
            let (st, b) = call(&mut admin, t, Method::POST, &path, Some(configmap(&format!("cm-{i:04}")))).await?;
            ensure!(st == StatusCode::CREATED, "creating cm-{i}: {st} {}", String::from_utf8_lossy(&b));
        }
    }
    let ok_create = if kube { StatusCode::CREATED } else { StatusCode::OK };

    // Create: `concurrency` workers POST distinct ConfigMaps.
    {
        let per = args.creates / args.concurrency;
        let cs = conns(t, args.concurrency).await?;
        let s = run_workers(cs, |w, mut c| {
            let t = t.clone();
            let path = format!("/api/v1/namespaces/{ns}/configmaps");
            async move {
                let mut lat = Vec::with_capacity(per);
                for i in 0..per {
                    let body = configmap(&format!("c-{w:03}-{i:06}"));
                    let t0 = Instant::now();
                    let (st, b) = call(&mut c, &t, Method::POST, &path, Some(body)).await?;
                    lat.push(t0.elapsed());
                    ensure!(st == ok_create, "create: {st} {}", String::from_utf8_lossy(&b));
                }
                Ok(lat)
            }
        })
        .await?;
        report(W_CREATE, &s);
        out.push((W_CREATE, s));
    }

    let deadline = Duration::from_secs_f64(args.read_secs);
    // Get one object (random among the listed namespace's), as admin, then (kube targets)
    // as a service account that a Role allows to.
    let s = get_random(args, t, &list_ns, deadline).await?;
    report(W_GET, &s);
    out.push((W_GET, s));
    if kube {
        let reader = reader_target(args, t, &mut admin, &list_ns).await?;
        let s = get_random(args, &reader, &list_ns, deadline).await?;
        report(W_GET_TOKEN, &s);
        out.push((W_GET_TOKEN, s));
    }
    // List the namespace of `list_size` objects.
    {
        let path = format!("/api/v1/namespaces/{list_ns}/configmaps");
        let (st, b) = call(&mut admin, t, Method::GET, &path, None).await?;
        ensure!(st == StatusCode::OK, "list: {st}");
        let v: serde_json::Value = serde_json::from_slice(&b)?;
        let items = v["items"].as_array().map(Vec::len).unwrap_or(0);
        ensure!(items == args.list_size, "list returned {items} items, expected {}", args.list_size);
        eprintln!("   (list response: {} bytes)", b.len());
        let cs = conns(t, args.concurrency).await?;
        let s = run_workers(cs, |_, mut c| {
            let t = t.clone();
            let path = path.clone();
            async move {
                let mut lat = Vec::new();
                let end = Instant::now() + deadline;
                while Instant::now() < end {
                    let t0 = Instant::now();
                    let (st, _) = call(&mut c, &t, Method::GET, &path, None).await?;
                    lat.push(t0.elapsed());
                    ensure!(st == StatusCode::OK, "list: {st}");
                }
                Ok(lat)
            }
        })
        .await?;
        report(W_LIST, &s);
        out.push((W_LIST, s));
    }

    if kube {
        let s = watch(args, t, &watch_ns).await?;
        report(W_WATCH, &s);
        out.push((W_WATCH, s));
    }
    Ok(out)
}

/// `concurrency` workers get random objects of `list_ns` for `deadline`.
async fn get_random(args: &Args, t: &Target, list_ns: &str, deadline: Duration) -> Result<Stat> {
    let cs = conns(t, args.concurrency).await?;
    let n = args.list_size as u64;
    run_workers(cs, |w, mut c| {
        let t = t.clone();
        let list_ns = list_ns.to_string();
        async move {
            let mut rng = Rng::new(w as u64 + 3);
            let mut lat = Vec::new();
            let end = Instant::now() + deadline;
            while Instant::now() < end {
                let path = format!("/api/v1/namespaces/{list_ns}/configmaps/cm-{:04}", rng.below(n));
                let t0 = Instant::now();
                let (st, b) = call(&mut c, &t, Method::GET, &path, None).await?;
                lat.push(t0.elapsed());
                ensure!(st == StatusCode::OK, "get: {st} {}", String::from_utf8_lossy(&b));
            }
            Ok(lat)
        }
    })
    .await
}

/// The target as service account `reader` of `ns`, which a Role and RoleBinding (made
/// here as admin) allow to get ConfigMaps there: a bearer token and no client certificate.
async fn reader_target(args: &Args, t: &Target, admin: &mut Conn, ns: &str) -> Result<Target> {
    let post = |path: String, body: serde_json::Value| (path, serde_json::to_vec(&body).unwrap());
    let objects = [
        post(format!("/api/v1/namespaces/{ns}/serviceaccounts"), serde_json::json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "reader"}})),
        post(format!("/apis/rbac.authorization.k8s.io/v1/namespaces/{ns}/roles"), serde_json::json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role", "metadata": {"name": "reader"},
            "rules": [{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get"]}]})),
        post(format!("/apis/rbac.authorization.k8s.io/v1/namespaces/{ns}/rolebindings"), serde_json::json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding", "metadata": {"name": "reader"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "reader"}, "subjects": [{"kind": "ServiceAccount", "name": "reader", "namespace": ns}]})),
    ];
    for (path, body) in objects {
        let (st, b) = call(admin, t, Method::POST, &path, Some(body)).await?;
        ensure!(st == StatusCode::CREATED || st == StatusCode::CONFLICT, "{path}: {st} {}", String::from_utf8_lossy(&b));
    }
    let request = serde_json::to_vec(&serde_json::json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": {"expirationSeconds": 3600}}))?;
    let (st, b) = call(admin, t, Method::POST, &format!("/api/v1/namespaces/{ns}/serviceaccounts/reader/token"), Some(request)).await?;
    ensure!(st == StatusCode::CREATED, "token request: {st} {}", String::from_utf8_lossy(&b));
    let token = serde_json::from_slice::<serde_json::Value>(&b)?["status"]["token"].as_str().context("no token")?.to_string();
    let mut reader = Target::new(&t.uri(""), tls_from_kubeconfig(&args.kubeconfig, false)?)?;
    reader.bearer = Some(token);
    Ok(reader)
}

/// `watchers` watches of one namespace (at most 50 streams per connection); one client
/// creates `watch_creates` ConfigMaps there one after the other. Latency: from sending a
/// create to its ADDED event arriving at a watcher; throughput: events delivered per second
/// from the first create to the last delivery.
async fn watch(args: &Args, t: &Target, ns: &str) -> Result<Stat> {
    let per_conn = 50;
    let cs = conns(t, args.watchers.div_ceil(per_conn)).await?;
    let n = args.watch_creates;
    let base = Instant::now();
    let sent: Arc<Vec<AtomicU64>> = Arc::new((0..n).map(|_| AtomicU64::new(0)).collect());
    let (warm_tx, mut warm_rx) = tokio::sync::mpsc::channel::<()>(args.watchers);
    let path = format!("/api/v1/namespaces/{ns}/configmaps?watch=1&allowWatchBookmarks=false");
    let mut tasks = Vec::new();
    for w in 0..args.watchers {
        let mut c = cs[w % cs.len()].clone();
        let req = Request::builder()
            .uri(t.uri(&path))
            .header("accept", "application/json")
            .body(Full::new(Bytes::new()))?;
        c.ready().await?;
        let resp = c.send_request(req).await?;
        ensure!(resp.status() == StatusCode::OK, "watch: {}", resp.status());
        let mut body = resp.into_body();
        let sent = sent.clone();
        let warm_tx = warm_tx.clone();
        tasks.push(tokio::spawn(async move {
            let mut buf: Vec<u8> = Vec::new();
            let mut lat = Vec::with_capacity(n);
            let mut seen = 0;
            while seen < n {
                let Some(frame) = body.frame().await else {
                    bail!("watch ended after {seen} events");
                };
                let now = base.elapsed().as_nanos() as u64;
                let Ok(data) = frame?.into_data() else { continue };
                buf.extend_from_slice(&data);
                while let Some(nl) = buf.iter().position(|&b| b == b'\n') {
                    let line: Vec<u8> = buf.drain(..=nl).collect();
                    if line.iter().all(u8::is_ascii_whitespace) {
                        continue;
                    }
                    let ev: serde_json::Value = serde_json::from_slice(&line)?;
                    if ev["type"] != "ADDED" {
                        continue;
                    }
                    let name = ev["object"]["metadata"]["name"].as_str().unwrap_or_default();
                    if name == "warm" {
                        let _ = warm_tx.send(()).await;
                    } else if let Some(i) = name.strip_prefix("w-") {
                        let i: usize = i.parse()?;
                        lat.push(Duration::from_nanos(now.saturating_sub(sent[i].load(Ordering::Acquire))));
                        seen += 1;
                    }
                }
            }
            Ok::<_, anyhow::Error>(lat)
        }));
    }
    drop(warm_tx);
    // Every watcher is live once it has seen this object.
    let mut admin = t.connect().await?;
    let cpath = format!("/api/v1/namespaces/{ns}/configmaps");
    let (st, _) = call(&mut admin, t, Method::POST, &cpath, Some(configmap("warm"))).await?;
    ensure!(st == StatusCode::CREATED, "create warm: {st}");
    for _ in 0..args.watchers {
        tokio::time::timeout(Duration::from_secs(60), warm_rx.recv())
            .await
            .context("watchers did not see the first object within 60 s")?
            .context("a watcher ended early")?;
    }
    let t0 = Instant::now();
    for (i, slot) in sent.iter().enumerate() {
        slot.store(base.elapsed().as_nanos() as u64, Ordering::Release);
        let (st, b) = call(&mut admin, t, Method::POST, &cpath, Some(configmap(&format!("w-{i:06}")))).await?;
        ensure!(st == StatusCode::CREATED, "create: {st} {}", String::from_utf8_lossy(&b));
    }
    let mut parts = Vec::new();
    for task in tasks {
        parts.push(
            tokio::time::timeout(Duration::from_secs(120), task)
                .await
                .context("watchers did not get every event within 120 s")???,
        );
    }
    let elapsed = t0.elapsed();
    let lat = merge(parts);
    Ok(Stat::new(lat.len() as u64, elapsed, lat))
}

fn report(w: &str, s: &Stat) {
    eprintln!(
        "   {w:<8} {:>10} ops/s   p50/p99 {} ms   ({} ops in {:.2} s)",
        fmt_ops(Some(s)),
        fmt_lat(Some(s)),
        s.ops,
        s.elapsed.as_secs_f64()
    );
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    let tls = tls_from_kubeconfig(&args.kubeconfig, true)?;
    let run = format!("{}", std::process::id());
    let mut results: HashMap<&str, Results> = HashMap::new();
    for (name, url, kube) in [
        ("sqlite", &args.sqlite, true),
        ("etcd", &args.etcd, true),
        ("floor", &args.floor, false),
    ] {
        let Some(url) = url else { continue };
        eprintln!("== {name} at {url}");
        let t = Target::new(url, tls.clone())?;
        let r = run_target(&args, &t, kube, &run)
            .await
            .with_context(|| format!("benchmarking {name}"))?;
        results.insert(name, r);
    }
    let get = |t: &str, w: &str| -> Option<&Stat> {
        results
            .get(t)
            .and_then(|r| r.iter().find(|(n, _)| *n == w).map(|(_, s)| s))
    };
    let rows: Vec<Vec<String>> = [W_CREATE, W_GET, W_GET_TOKEN, W_LIST, W_WATCH]
        .iter()
        .map(|w| {
            let label = match *w {
                W_CREATE => format!("create ConfigMap ({} workers)", args.concurrency),
                W_GET => format!("get ConfigMap ({} workers)", args.concurrency),
                W_GET_TOKEN => format!("get ConfigMap as a service account ({} workers)", args.concurrency),
                W_LIST => format!("list {} ConfigMaps ({} workers)", args.list_size, args.concurrency),
                _ => format!(
                    "watch: {} creates x {} watchers (events/s)",
                    args.watch_creates, args.watchers
                ),
            };
            vec![
                label,
                fmt_ops(get("sqlite", w)),
                fmt_lat(get("sqlite", w)),
                fmt_ops(get("etcd", w)),
                fmt_lat(get("etcd", w)),
                fmt_ratio(get("sqlite", w), get("etcd", w)),
                fmt_ops(get("floor", w)),
                fmt_lat(get("floor", w)),
                fmt_ratio(get("sqlite", w), get("floor", w)),
            ]
        })
        .collect();
    println!();
    println!("Kubernetes API over HTTP/2 + TLS (client certificates); latency p50 / p99 in ms");
    println!();
    print_table(
        &[
            "workload",
            "krust+SQLite ops/s",
            "p50 / p99",
            "krust+etcd ops/s",
            "p50 / p99",
            "SQLite/etcd",
            "floor ops/s",
            "p50 / p99",
            "SQLite/floor",
        ],
        &rows,
    );
    // What authentication by token plus RBAC cost beside the admin certificate (whose
    // system:masters group skips RBAC), on the same server in the same run.
    println!();
    for target in ["sqlite", "etcd"] {
        if let (Some(token), Some(admin)) = (get(target, W_GET_TOKEN), get(target, W_GET)) {
            println!("get as a service account / get as admin ({target}): {} ops/s ratio", fmt_ratio(Some(token), Some(admin)));
        }
    }
    Ok(())
}
