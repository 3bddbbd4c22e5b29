//! The kubelet's streaming endpoints: `exec`, `attach` and `portForward`, as the API server
//! forwards them (`pods/exec` etc., see `apiserver/src/handlers/proxy.rs`).
//!
//! **exec / attach** speak the WebSocket channel protocol (`v5.channel.k8s.io`, also
//! `v4.channel.k8s.io`), which kubectl ≥ 1.30 uses: every binary message starts with its
//! channel: 0 stdin, 1 stdout, 2 stderr, 3 error (one `metav1.Status` JSON at the end),
//! 4 resize (`{"Width":W,"Height":H}`); in v5, `[255, channel]` from the client closes that
//! channel (kubectl closes stdin so). The server then sends a normal close frame. As upstream
//! (`kubelet/pkg/cri/streaming/remotecommand`), an empty message on the first output channel
//! tells the client the streams are ready, and a non-zero exit is reported as
//! `reason: NonZeroExitCode` with an `ExitCode` cause (kubectl exits with that code). SPDY
//! requests for exec/attach are refused (400): kubectl only uses SPDY when the WebSocket
//! upgrade fails.
//!
//! **attach** relays to the container's shim (see `runtime/shim.rs`), which holds the
//! container's stdio: output from now on, stdin (with the container's `stdin: true`), end of
//! input, and terminal resizes (with `tty: true`), until the container's output ends.
//!
//! **portForward** speaks SPDY/3.1 with `portforward.k8s.io` streams, either as a plain
//! `Upgrade: SPDY/3.1` or tunnelled in WebSocket binary messages (subprotocol
//! `SPDY/3.1+portforward.k8s.io`, what kubectl ≥ 1.31 tries first). Each forwarded
//! connection is a pair of client-created streams sharing a `requestID` header: `error` (the
//! server writes a message there if forwarding fails) and `data` (the bytes). The TCP
//! connection goes to `127.0.0.1:PORT` in the pod's network namespace, opened from a
//! short-lived thread that `setns`es into it. Header blocks are zlib streams (one per
//! direction, for the whole connection) with the SPDY/3 dictionary. Flow control is not
//! implemented (neither is it by spdystream, the client side).

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::ws::{close_code, CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{FromRequestParts, Path as UrlPath, Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress};
use futures::{SinkExt, StreamExt};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;

use crate::kubelet::server::{instances, pod_log_dir};
use crate::kubelet::worker::instance_id;
use crate::kubelet::Kubelet;
use crate::runtime::{exec_start_failure, shim, ContainerState, ExecRequest};

const V5: &str = "v5.channel.k8s.io";
const V4: &str = "v4.channel.k8s.io";
const PORT_FORWARD: &str = "portforward.k8s.io";
const SPDY_TUNNEL: &str = "SPDY/3.1+portforward.k8s.io";

const STDIN: u8 = 0;
const STDOUT: u8 = 1;
const STDERR: u8 = 2;
const ERROR: u8 = 3;
const RESIZE: u8 = 4;
const CLOSE: u8 = 255;

fn plain(code: StatusCode, msg: impl Into<String>) -> Response {
    (code, [(header::CONTENT_TYPE, "text/plain; charset=utf-8")], msg.into()).into_response()
}

/// `a=b&c=d` with percent-decoding (`+` is a space), keys repeated as they come.
fn query_pairs(q: &str) -> Vec<(String, String)> {
    fn hex(c: u8) -> Option<u8> {
        (c as char).to_digit(16).map(|d| d as u8)
    }
    fn decode(s: &str) -> String {
        let b = s.as_bytes();
        let mut out = Vec::with_capacity(b.len());
        let mut i = 0;
        while i < b.len() {
            match b[i] {
                b'+' => out.push(b' '),
                b'%' if i + 2 < b.len() => match (hex(b[i + 1]), hex(b[i + 2])) {
                    (Some(h), Some(l)) => {
                        out.push(h << 4 | l);
                        i += 2;
                    }
                    _ => out.push(b'%'),
                },
                c => out.push(c),
            }
            i += 1;
        }
        String::from_utf8_lossy(&out).into_owned()
    }
    q.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| match p.split_once('=') {
            Some((k, v)) => (decode(k), decode(v)),
            None => (decode(p), String::new()),
        })
        .collect()
}

/// Which streams an exec/attach wants (the API server passes kubectl's `true`; upstream's
/// API server rewrites it to `1`: both are accepted).
#[derive(Clone, Debug, Default)]
struct StreamOpts {
    stdin: bool,
    stdout: bool,
    stderr: bool,
    tty: bool,
    command: Vec<String>,
}

impl StreamOpts {
    fn parse(query: Option<&str>) -> Result<StreamOpts, String> {
        let mut o = StreamOpts::default();
        let yes = |v: &str| v == "1" || v.eq_ignore_ascii_case("true");
        for (k, v) in query_pairs(query.unwrap_or_default()) {
            match k.as_str() {
                "stdin" | "input" => o.stdin = yes(&v),
                "stdout" | "output" => o.stdout = yes(&v),
                "stderr" | "error" => o.stderr = yes(&v),
                "tty" => o.tty = yes(&v),
                "command" => o.command.push(v),
                _ => {}
            }
        }
        if o.tty && o.stderr {
            // as upstream: a terminal has one output
            o.stderr = false;
        }
        if !o.stdin && !o.stdout && !o.stderr {
            return Err("you must specify at least 1 of stdin, stdout, stderr".into());
        }
        Ok(o)
    }
}

/// The running instance of `container` in the pod, from the pod's log folder (the layout the
/// log endpoint reads too): its runtime id and log file.
#[allow(clippy::result_large_err)] // the error is the response to send
fn running_container(k: &Kubelet, namespace: &str, pod: &str, container: &str) -> Result<(String, PathBuf), Response> {
    let Some((dir, uid)) = pod_log_dir(&k.logs_dir(), namespace, pod) else {
        return Err(plain(StatusCode::NOT_FOUND, "pod does not exist"));
    };
    let not_found = || plain(StatusCode::NOT_FOUND, format!("container not found ({container:?})"));
    let restart = *instances(&dir.join(container)).last().ok_or_else(not_found)?;
    let id = instance_id(&uid, container, restart);
    match k.runtime.state(&id) {
        Some(ContainerState::Running { .. }) => Ok((id, dir.join(container).join(format!("{restart}.log")))),
        _ => Err(not_found()),
    }
}

fn is_websocket(h: &HeaderMap) -> bool {
    let upgrade = h.get(header::UPGRADE).and_then(|v| v.to_str().ok()).unwrap_or_default();
    let connection = h.get(header::CONNECTION).and_then(|v| v.to_str().ok()).unwrap_or_default().to_ascii_lowercase();
    upgrade.eq_ignore_ascii_case("websocket") && connection.contains("upgrade")
}

fn is_spdy(h: &HeaderMap) -> bool {
    let upgrade = h.get(header::UPGRADE).and_then(|v| v.to_str().ok()).unwrap_or_default();
    upgrade.to_ascii_lowercase().starts_with("spdy/3.1")
}

/// The WebSocket upgrade of `req`, with the first of `protocols` the client offers selected.
async fn websocket(req: Request, protocols: &'static [&'static str]) -> Result<(WebSocketUpgrade, &'static str), Response> {
    let (mut parts, _) = req.into_parts();
    let ws = WebSocketUpgrade::from_request_parts(&mut parts, &()).await.map_err(IntoResponse::into_response)?;
    let offered: Vec<String> = ws.requested_protocols().filter_map(|p| p.to_str().ok().map(str::to_string)).collect();
    let Some(chosen) = protocols.iter().find(|p| offered.iter().any(|o| o == *p)) else {
        return Err(plain(
            StatusCode::BAD_REQUEST,
            format!("requested protocol(s) are not supported: {offered:?}; supports {protocols:?}"),
        ));
    };
    Ok((ws.protocols([*chosen]), chosen))
}

/// `metav1.Status` JSON for the error channel.
fn status_json(exit: Result<i32, String>, command: &[String]) -> String {
    let v = match exit {
        Ok(0) => serde_json::json!({"metadata": {}, "status": "Success"}),
        Ok(code) => serde_json::json!({
            "metadata": {},
            "status": "Failure",
            // containerd's CRI streaming error text: Go's %v of the command
            "message": format!("command terminated with non-zero exit code: error executing command [{}], exit code {code}", command.join(" ")),
            "reason": "NonZeroExitCode",
            "details": {"causes": [{"reason": "ExitCode", "message": code.to_string()}]},
        }),
        Err(msg) => serde_json::json!({
            "metadata": {},
            "status": "Failure",
            "message": format!("Internal error occurred: {msg}"),
            "reason": "InternalError",
            "details": {"causes": [{"message": msg}]},
            "code": 500,
        }),
    };
    v.to_string()
}

/// The sending side of a channel-protocol WebSocket: one writer task owns the socket's sink.
#[derive(Clone)]
struct Channels {
    tx: mpsc::Sender<Message>,
    /// Bytes sent so far (progress, to tell when output has stopped flowing).
    sent: Arc<AtomicU64>,
}

impl Channels {
    fn start(sink: futures::stream::SplitSink<WebSocket, Message>) -> (Channels, tokio::task::JoinHandle<()>) {
        let (tx, mut rx) = mpsc::channel::<Message>(64);
        let writer = tokio::spawn(async move {
            let mut sink = sink;
            while let Some(m) = rx.recv().await {
                if let Err(e) = sink.send(m).await {
                    tracing::debug!(error = %e, "streaming: the client's socket failed");
                    return;
                }
            }
            let _ = sink.send(Message::Close(Some(CloseFrame { code: close_code::NORMAL, reason: "".into() }))).await;
            let _ = sink.close().await;
        });
        (Channels { tx, sent: Arc::new(AtomicU64::new(0)) }, writer)
    }

    async fn send(&self, channel: u8, data: &[u8]) -> bool {
        let mut m = Vec::with_capacity(data.len() + 1);
        m.push(channel);
        m.extend_from_slice(data);
        self.sent.fetch_add(data.len() as u64 + 1, Ordering::Relaxed);
        self.tx.send(Message::Binary(Bytes::from(m))).await.is_ok()
    }

    /// Copies `r` to `channel` until end of file.
    async fn pump(self, channel: u8, mut r: impl AsyncRead + Unpin) {
        let mut buf = vec![0u8; 32 * 1024];
        loop {
            match r.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    if !self.send(channel, &buf[..n]).await {
                        return;
                    }
                }
            }
        }
    }
}

/// What the client sends on a channel-protocol WebSocket.
enum FromClient {
    Stdin(Bytes),
    CloseStdin,
    Resize(u16, u16),
}

/// Reads the client's messages until it closes the socket; answers pings (tungstenite does,
/// while reading).
async fn read_client(mut stream: futures::stream::SplitStream<WebSocket>, v5: bool, tx: mpsc::Sender<FromClient>) {
    while let Some(msg) = stream.next().await {
        let data = match msg {
            Ok(Message::Binary(d)) => d,
            Ok(Message::Close(_)) => return,
            Ok(_) => continue,
            Err(e) => {
                tracing::debug!(error = %e, "streaming: reading the client's socket failed");
                return;
            }
        };
        let Some(&channel) = data.first() else { continue };
        let ev = match channel {
            STDIN if data.len() > 1 => FromClient::Stdin(data.slice(1..)),
            RESIZE => {
                let mut last = None;
                for size in serde_json::Deserializer::from_slice(&data[1..]).into_iter::<serde_json::Value>().flatten() {
                    let w = size["Width"].as_u64().unwrap_or(0).min(u16::MAX as u64) as u16;
                    let h = size["Height"].as_u64().unwrap_or(0).min(u16::MAX as u64) as u16;
                    last = Some(FromClient::Resize(w, h));
                }
                match last {
                    Some(ev) => ev,
                    None => continue,
                }
            }
            CLOSE if v5 && data.get(1) == Some(&STDIN) => FromClient::CloseStdin,
            _ => continue,
        };
        // (no one listens any more: keep reading, until the client's close)
        let _ = tx.send(ev).await;
    }
}

/// Ends a channel-protocol session: the status is out, the close frame follows, then the
/// client's close is awaited. Closing the socket before reading what the client still sent
/// (a stdin close, a pong) would reset the connection, and the API server's proxy would drop
/// what it had not forwarded yet: the status.
async fn finish(out: Channels, writer: tokio::task::JoinHandle<()>, mut reader: tokio::task::JoinHandle<()>) {
    drop(out);
    let _ = tokio::time::timeout(Duration::from_secs(10), writer).await;
    if tokio::time::timeout(Duration::from_secs(5), &mut reader).await.is_err() {
        reader.abort();
    }
}

/// `GET /exec/{namespace}/{pod}/{container}?command=...&stdin=..&stdout=..&stderr=..&tty=..`
pub async fn exec(State(k): State<Arc<Kubelet>>, UrlPath((namespace, pod, container)): UrlPath<(String, String, String)>, req: Request) -> Response {
    let opts = match StreamOpts::parse(req.uri().query()) {
        Ok(o) => o,
        Err(e) => return plain(StatusCode::BAD_REQUEST, e),
    };
    if opts.command.is_empty() {
        return plain(StatusCode::BAD_REQUEST, "missing command");
    }
    let (id, _) = match running_container(&k, &namespace, &pod, &container) {
        Ok(c) => c,
        Err(r) => return r,
    };
    if !is_websocket(req.headers()) {
        return plain(StatusCode::BAD_REQUEST, "exec needs a WebSocket upgrade (v5.channel.k8s.io or v4.channel.k8s.io); SPDY is not supported");
    }
    let (ws, proto) = match websocket(req, &[V5, V4]).await {
        Ok(w) => w,
        Err(r) => return r,
    };
    tracing::debug!(%namespace, %pod, %container, command = ?opts.command, proto, "exec");
    ws.on_upgrade(move |socket| exec_session(socket, proto == V5, opts, k, id))
}

async fn exec_session(socket: WebSocket, v5: bool, opts: StreamOpts, k: Arc<Kubelet>, id: String) {
    let (sink, stream) = socket.split();
    let (out, writer) = Channels::start(sink);
    let first = if opts.stdout { STDOUT } else if opts.stderr { STDERR } else { ERROR };
    out.send(first, &[]).await;

    let (ctx, mut crx) = mpsc::channel(16);
    let reader = tokio::spawn(read_client(stream, v5, ctx));
    // kubectl sends its terminal's size right away: the terminal gets it before the process
    // runs (else a quick `stty size` could see 0x0).
    let mut early = std::collections::VecDeque::new();
    let mut size = None;
    if opts.tty {
        let deadline = tokio::time::Instant::now() + Duration::from_millis(500);
        while let Ok(Some(ev)) = tokio::time::timeout_at(deadline, crx.recv()).await {
            match ev {
                FromClient::Resize(w, h) => {
                    size = Some((w, h));
                    break;
                }
                ev => early.push_back(ev),
            }
        }
    }
    let req = ExecRequest { argv: opts.command.clone(), stdin: opts.stdin, tty: opts.tty, size };
    let mut p = match k.runtime.exec_stream(&id, &req).await {
        Ok(p) => p,
        Err(e) => {
            let status = match exec_start_failure(&e) {
                Some((code, msg)) => {
                    // as a shell (and docker's runtime) would: the reason on stderr, then 126/127
                    let eol = if opts.tty { "\r\n" } else { "\n" };
                    let line = format!("exec failed: unable to start container process: {msg}{eol}");
                    let ch = if opts.stderr { STDERR } else { STDOUT };
                    if opts.stderr || opts.stdout {
                        out.send(ch, line.as_bytes()).await;
                    }
                    status_json(Ok(code), &opts.command)
                }
                None => status_json(Err(format!("error executing command in container: {e}")), &opts.command),
            };
            out.send(ERROR, status.as_bytes()).await;
            drop(crx);
            finish(out, writer, reader).await;
            return;
        }
    };

    let mut pumps = Vec::new();
    if let (true, Some(r)) = (opts.stdout, p.stdout.take()) {
        pumps.push(tokio::spawn(out.clone().pump(STDOUT, r)));
    }
    if let (true, Some(r)) = (opts.stderr, p.stderr.take()) {
        pumps.push(tokio::spawn(out.clone().pump(STDERR, r)));
    }
    let mut stdin = if opts.stdin { p.stdin.take() } else { None };
    let terminal = p.terminal.clone();
    let tty = opts.tty;
    // Client input, applied in order.
    let input = tokio::spawn(async move {
        while let Some(ev) = match early.pop_front() {
            Some(ev) => Some(ev),
            None => crx.recv().await,
        } {
            match ev {
                FromClient::Stdin(d) => {
                    if let Some(w) = stdin.as_mut() {
                        if w.write_all(&d).await.is_err() {
                            stdin = None;
                        }
                    }
                }
                FromClient::CloseStdin => {
                    if let Some(mut w) = stdin.take() {
                        if tty {
                            // end of input on a terminal: ^D
                            let _ = w.write_all(b"\x04").await;
                        } else {
                            let _ = w.shutdown().await;
                        }
                    }
                }
                FromClient::Resize(w, h) => {
                    if let Some(t) = &terminal {
                        if w > 0 && h > 0 {
                            let _ = t.resize(w, h);
                        }
                    }
                }
            }
        }
        // the client is gone (or closed the socket)
    });

    let code = tokio::select! {
        code = p.wait() => code,
        _ = wait_gone(input) => {
            // The client went away: its streams close (a terminal hangs up); the process runs on.
            tracing::debug!(container = %id, "exec: the client went away");
            for t in &pumps {
                t.abort();
            }
            reader.abort();
            return;
        }
    };
    drain(&out, pumps).await;
    out.send(ERROR, status_json(Ok(code), &opts.command).as_bytes()).await;
    finish(out, writer, reader).await;
}

async fn wait_gone(h: tokio::task::JoinHandle<()>) {
    let _ = h.await;
}

/// After the process exited: lets the output pumps finish, but gives up once no output has
/// flowed for a second (a background process may hold the pipes open).
async fn drain(out: &Channels, pumps: Vec<tokio::task::JoinHandle<()>>) {
    let mut last = out.sent.load(Ordering::Relaxed);
    let mut idle = Duration::ZERO;
    let step = Duration::from_millis(100);
    while pumps.iter().any(|p| !p.is_finished()) {
        tokio::time::sleep(step).await;
        let now = out.sent.load(Ordering::Relaxed);
        if now == last {
            idle += step;
            if idle >= Duration::from_secs(1) {
                break;
            }
        } else {
            idle = Duration::ZERO;
            last = now;
        }
    }
    for p in pumps {
        p.abort();
    }
}

/// `GET /attach/{namespace}/{pod}/{container}?stdin=..&stdout=..&stderr=..&tty=..`
pub async fn attach(State(k): State<Arc<Kubelet>>, UrlPath((namespace, pod, container)): UrlPath<(String, String, String)>, req: Request) -> Response {
    let opts = match StreamOpts::parse(req.uri().query()) {
        Ok(o) => o,
        Err(e) => return plain(StatusCode::BAD_REQUEST, e),
    };
    let (id, _) = match running_container(&k, &namespace, &pod, &container) {
        Ok(c) => c,
        Err(r) => return r,
    };
    if !is_websocket(req.headers()) {
        return plain(StatusCode::BAD_REQUEST, "attach needs a WebSocket upgrade (v5.channel.k8s.io or v4.channel.k8s.io); SPDY is not supported");
    }
    let (ws, proto) = match websocket(req, &[V5, V4]).await {
        Ok(w) => w,
        Err(r) => return r,
    };
    ws.on_upgrade(move |socket| attach_session(socket, proto == V5, opts, k, id))
}

/// Relays between the client and the container's shim: output from now on, and (as asked)
/// stdin, end of input and terminal resizes.
async fn attach_session(socket: WebSocket, v5: bool, opts: StreamOpts, k: Arc<Kubelet>, id: String) {
    let (sink, stream) = socket.split();
    let (out, writer) = Channels::start(sink);
    let (ctx, mut crx) = mpsc::channel(16);
    let reader = tokio::spawn(read_client(stream, v5, ctx));
    let attached = match k.runtime.attach(&id).await {
        Ok(a) => a,
        Err(e) => {
            out.send(ERROR, status_json(Err(e.to_string()), &[]).as_bytes()).await;
            finish(out, writer, reader).await;
            return;
        }
    };
    let first = if opts.stdout { STDOUT } else if opts.stderr { STDERR } else { ERROR };
    out.send(first, &[]).await;
    let (mut output, mut input) = attached.split();
    let stdin = opts.stdin;
    let feed = tokio::spawn(async move {
        // An empty stdin frame tells the shim this session uses stdin (for stdinOnce).
        if stdin && input.stdin(&[]).await.is_err() {
            return;
        }
        while let Some(ev) = crx.recv().await {
            let sent = match ev {
                FromClient::Stdin(d) if stdin => input.stdin(&d).await,
                FromClient::CloseStdin if stdin => input.close_stdin().await,
                FromClient::Resize(w, h) => input.resize(w, h).await,
                _ => Ok(()),
            };
            if sent.is_err() {
                return;
            }
        }
    });
    let follow = async {
        while let Some((kind, data)) = output.next().await {
            let ch = match kind {
                shim::STDERR if opts.stderr => STDERR,
                shim::STDERR if !opts.tty => continue,
                _ if opts.stdout => STDOUT,
                _ => continue,
            };
            if !out.send(ch, &data).await {
                return;
            }
        }
    };
    tokio::select! {
        _ = follow => {}
        _ = wait_gone(feed) => {
            reader.abort();
            return;
        }
    }
    out.send(ERROR, status_json(Ok(0), &[]).as_bytes()).await;
    finish(out, writer, reader).await;
}

/// `/portForward/{namespace}/{pod}`: SPDY/3.1, plain or tunnelled in a WebSocket.
pub async fn port_forward(State(k): State<Arc<Kubelet>>, UrlPath((namespace, pod)): UrlPath<(String, String)>, req: Request) -> Response {
    let Some((_, uid)) = pod_log_dir(&k.logs_dir(), &namespace, &pod) else {
        return plain(StatusCode::NOT_FOUND, "pod does not exist");
    };
    let Some(sandbox) = k.runtime.sandbox(&uid) else {
        return plain(StatusCode::NOT_FOUND, format!("pod {namespace}/{pod} has no sandbox on this node"));
    };
    let target = Arc::new(Target { pod: pod.clone(), uid, netns: sandbox.netns.clone(), pod_ip: sandbox.ip });
    if is_websocket(req.headers()) {
        let (ws, _) = match websocket(req, &[SPDY_TUNNEL]).await {
            Ok(w) => w,
            Err(r) => return r,
        };
        return ws.on_upgrade(move |socket| spdy_over_websocket(socket, target));
    }
    if !is_spdy(req.headers()) {
        return plain(StatusCode::BAD_REQUEST, "port forwarding needs an upgrade: SPDY/3.1, or WebSocket with SPDY/3.1+portforward.k8s.io");
    }
    let offered: Vec<String> = req
        .headers()
        .get_all("x-stream-protocol-version")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(',').map(|s| s.trim().to_string()))
        .collect();
    if !offered.iter().any(|p| p == PORT_FORWARD) {
        return plain(
            StatusCode::FORBIDDEN,
            format!("unable to upgrade: unable to negotiate protocol: client supports {offered:?}, server accepts [\"{PORT_FORWARD}\"]"),
        );
    }
    let mut req = req;
    let Some(on_upgrade) = req.extensions_mut().remove::<hyper::upgrade::OnUpgrade>() else {
        return plain(StatusCode::BAD_REQUEST, "connection cannot be upgraded");
    };
    tokio::spawn(async move {
        match on_upgrade.await {
            Ok(up) => serve_spdy(TokioIo::new(up), target).await,
            Err(e) => tracing::debug!(error = %e, "port-forward: upgrade failed"),
        }
    });
    Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header(header::CONNECTION, "Upgrade")
        .header(header::UPGRADE, "SPDY/3.1")
        .header("X-Stream-Protocol-Version", PORT_FORWARD)
        .body(Body::empty())
        .expect("a valid response")
}

/// SPDY in WebSocket binary messages (kubectl's tunnelling connection): bridged to a byte
/// stream that [`serve_spdy`] reads and writes.
async fn spdy_over_websocket(socket: WebSocket, target: Arc<Target>) {
    let (mine, theirs) = tokio::io::duplex(256 * 1024);
    let spdy = tokio::spawn(serve_spdy(theirs, target));
    let (mut sink, mut stream) = socket.split();
    let (mut rd, mut wr) = tokio::io::split(mine);
    let to_client = async move {
        let mut buf = vec![0u8; 32 * 1024];
        loop {
            match rd.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if sink.send(Message::Binary(Bytes::copy_from_slice(&buf[..n]))).await.is_err() {
                        return;
                    }
                }
            }
        }
        let _ = sink.send(Message::Close(Some(CloseFrame { code: close_code::NORMAL, reason: "".into() }))).await;
        let _ = sink.close().await;
    };
    let from_client = async move {
        while let Some(Ok(msg)) = stream.next().await {
            match msg {
                Message::Binary(d) if wr.write_all(&d).await.is_err() => break,
                Message::Close(_) => break,
                _ => {}
            }
        }
        let _ = wr.shutdown().await;
    };
    tokio::join!(to_client, from_client);
    spdy.abort();
}

/// Where a pod's forwarded connections go.
struct Target {
    pod: String,
    uid: String,
    netns: Option<PathBuf>,
    pod_ip: Option<IpAddr>,
}

impl Target {
    /// Connects to `127.0.0.1:port` (else `[::1]:port`) in the pod's network namespace; the
    /// pod IP only if entering the namespace is impossible.
    async fn connect(&self, port: u16) -> Result<tokio::net::TcpStream, String> {
        let (netns, ip) = (self.netns.clone(), self.pod_ip);
        let r = tokio::task::spawn_blocking(move || connect_in_netns(netns.as_deref(), ip, port)).await.map_err(|e| e.to_string())?;
        let s = r?;
        s.set_nonblocking(true).map_err(|e| e.to_string())?;
        let _ = s.set_nodelay(true);
        tokio::net::TcpStream::from_std(s).map_err(|e| e.to_string())
    }
}

fn connect_local(port: u16) -> std::io::Result<std::net::TcpStream> {
    let timeout = Duration::from_secs(5);
    let v4 = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    std::net::TcpStream::connect_timeout(&v4, timeout).or_else(|e4| {
        let v6 = std::net::SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, port));
        std::net::TcpStream::connect_timeout(&v6, timeout).map_err(|_| e4)
    })
}

fn connect_in_netns(netns: Option<&Path>, pod_ip: Option<IpAddr>, port: u16) -> Result<std::net::TcpStream, String> {
    let Some(netns) = netns else {
        // host network
        return connect_local(port).map_err(|e| format!("failed to connect to localhost:{port}: {e}"));
    };
    let file = std::fs::File::open(netns).map_err(|e| format!("opening {}: {e}", netns.display()))?;
    let ns = netns.display().to_string();
    // A thread of its own, which exits afterwards: no pool thread is left in the pod's netns.
    let joined = std::thread::Builder::new()
        .name("krust-portfwd".into())
        .spawn(move || -> Result<std::net::TcpStream, (bool, String)> {
            nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET).map_err(|e| (false, format!("entering {ns}: {e}")))?;
            connect_local(port).map_err(|e| (true, format!("failed to connect to localhost:{port} inside namespace {ns:?}: {e}")))
        })
        .map_err(|e| e.to_string())?
        .join()
        .map_err(|_| "the port-forward thread panicked".to_string())?;
    match joined {
        Ok(s) => Ok(s),
        Err((true, msg)) => Err(msg),
        Err((false, msg)) => match pod_ip {
            Some(ip) => std::net::TcpStream::connect_timeout(&(ip, port).into(), Duration::from_secs(5)).map_err(|e| format!("{msg}; connecting to {ip}:{port}: {e}")),
            None => Err(msg),
        },
    }
}

// ---------------------------------------------------------------------------------------------
// SPDY/3.1 (the subset port-forward needs)

const SYN_STREAM: u16 = 1;
const SYN_REPLY: u16 = 2;
const RST_STREAM: u16 = 3;
const PING: u16 = 6;
const GOAWAY: u16 = 7;
const HEADERS: u16 = 8;
const FLAG_FIN: u8 = 0x01;
/// RST_STREAM status codes
const PROTOCOL_ERROR: u32 = 1;
const MAX_FRAME: usize = 16 << 20;

/// The SPDY/3 header compression dictionary (draft-mbelshe-httpbis-spdy-00, 2.6.10.1).
const SPDY3_DICTIONARY: &[u8] = b"\
    \0\0\0\x07options\0\0\0\x04head\0\0\0\x04post\0\0\0\x03put\0\0\0\x06delete\0\0\0\x05trace\0\
    \0\0\x06accept\0\0\0\x0eaccept-charset\0\0\0\x0faccept-encoding\0\0\0\x0faccept-language\0\0\
    \0\x0daccept-ranges\0\0\0\x03age\0\0\0\x05allow\0\0\0\x0dauthorization\0\0\0\x0dcache-contro\
    l\0\0\0\x0aconnection\0\0\0\x0ccontent-base\0\0\0\x10content-encoding\0\0\0\x10content-langu\
    age\0\0\0\x0econtent-length\0\0\0\x10content-location\0\0\0\x0bcontent-md5\0\0\0\x0dcontent-\
    range\0\0\0\x0ccontent-type\0\0\0\x04date\0\0\0\x04etag\0\0\0\x06expect\0\0\0\x07expires\0\0\
    \0\x04from\0\0\0\x04host\0\0\0\x08if-match\0\0\0\x11if-modified-since\0\0\0\x0dif-none-match\
    \0\0\0\x08if-range\0\0\0\x13if-unmodified-since\0\0\0\x0dlast-modified\0\0\0\x08location\0\0\
    \0\x0cmax-forwards\0\0\0\x06pragma\0\0\0\x12proxy-authenticate\0\0\0\x13proxy-authorization\
    \0\0\0\x05range\0\0\0\x07referer\0\0\0\x0bretry-after\0\0\0\x06server\0\0\0\x02te\0\0\0\x07t\
    railer\0\0\0\x11transfer-encoding\0\0\0\x07upgrade\0\0\0\x0auser-agent\0\0\0\x04vary\0\0\0\
    \x03via\0\0\0\x07warning\0\0\0\x10www-authenticate\0\0\0\x06method\0\0\0\x03get\0\0\0\x06sta\
    tus\0\0\0\x06200 OK\0\0\0\x07version\0\0\0\x08HTTP/1.1\0\0\0\x03url\0\0\0\x06public\0\0\0\
    \x0aset-cookie\0\0\0\x0akeep-alive\0\0\0\x06origin100101201202205206300302303304305306307402\
    405406407408409410411412413414415416417502504505203 Non-Authoritative Information204 No Cont\
    ent301 Moved Permanently400 Bad Request401 Unauthorized403 Forbidden404 Not Found500 Interna\
    l Server Error501 Not Implemented503 Service UnavailableJan Feb Mar Apr May Jun Jul Aug Sept\
    \x20Oct Nov Dec 00:00:00 Mon, Tue, Wed, Thu, Fri, Sat, Sun, GMTchunked,text/html,image/png,i\
    mage/jpg,image/gif,application/xml,application/xhtml+xml,text/plain,text/javascript,publicpr\
    ivatemax-age=gzip,deflate,sdchcharset=utf-8charset=iso-8859-1,utf-,*,enq=0.";

fn be32(b: &[u8]) -> u32 {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

/// One direction's header (de)compression context: a zlib stream for the whole connection,
/// one sync-flushed block per header block.
struct Inflater(Decompress);

impl Inflater {
    fn new() -> Self {
        Inflater(Decompress::new(true))
    }

    fn block(&mut self, mut input: &[u8]) -> Result<Vec<u8>, String> {
        let mut out = Vec::with_capacity(input.len() * 4 + 256);
        loop {
            if out.capacity() - out.len() < 256 {
                out.reserve(out.capacity().max(1024));
            }
            let before = self.0.total_in();
            let r = self.0.decompress_vec(input, &mut out, FlushDecompress::Sync);
            input = &input[(self.0.total_in() - before) as usize..];
            match r {
                Ok(_) => {
                    if input.is_empty() && out.len() < out.capacity() {
                        return Ok(out);
                    }
                }
                Err(e) if e.needs_dictionary().is_some() => {
                    self.0.set_dictionary(SPDY3_DICTIONARY).map_err(|e| e.to_string())?;
                }
                Err(e) => return Err(format!("header block: {e}")),
            }
        }
    }
}

struct Deflater(Compress);

impl Deflater {
    fn new() -> Self {
        let mut c = Compress::new(Compression::default(), true);
        c.set_dictionary(SPDY3_DICTIONARY).expect("a zlib compressor takes a dictionary before its first block");
        Deflater(c)
    }

    fn block(&mut self, mut input: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(input.len() + 128);
        loop {
            if out.capacity() - out.len() < 64 {
                out.reserve(out.capacity().max(256));
            }
            let before = self.0.total_in();
            if self.0.compress_vec(input, &mut out, FlushCompress::Sync).is_err() {
                return out;
            }
            input = &input[(self.0.total_in() - before) as usize..];
            if input.is_empty() && out.len() < out.capacity() {
                return out;
            }
        }
    }
}

/// A decompressed header block: lower-case names, values (NUL-separated ones split).
fn parse_header_block(b: &[u8]) -> Option<Vec<(String, String)>> {
    let mut pos = 0;
    let mut take = |n: usize| -> Option<&[u8]> {
        let s = b.get(pos..pos + n)?;
        pos += n;
        Some(s)
    };
    let count = be32(take(4)?);
    let mut out = Vec::new();
    for _ in 0..count {
        let n = be32(take(4)?) as usize;
        let name = String::from_utf8_lossy(take(n)?).to_ascii_lowercase();
        let n = be32(take(4)?) as usize;
        let value = String::from_utf8_lossy(take(n)?).into_owned();
        for v in value.split('\0') {
            out.push((name.clone(), v.to_string()));
        }
    }
    Some(out)
}

fn encode_header_block(headers: &[(&str, &str)]) -> Vec<u8> {
    let mut b = (headers.len() as u32).to_be_bytes().to_vec();
    for (k, v) in headers {
        b.extend_from_slice(&(k.len() as u32).to_be_bytes());
        b.extend_from_slice(k.as_bytes());
        b.extend_from_slice(&(v.len() as u32).to_be_bytes());
        b.extend_from_slice(v.as_bytes());
    }
    b
}

fn control_frame(kind: u16, flags: u8, payload: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(8 + payload.len());
    f.extend_from_slice(&[0x80, 3]);
    f.extend_from_slice(&kind.to_be_bytes());
    f.push(flags);
    f.extend_from_slice(&(payload.len() as u32).to_be_bytes()[1..]);
    f.extend_from_slice(payload);
    f
}

fn data_frame(stream: u32, flags: u8, data: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(8 + data.len());
    f.extend_from_slice(&(stream & 0x7fff_ffff).to_be_bytes());
    f.push(flags);
    f.extend_from_slice(&(data.len() as u32).to_be_bytes()[1..]);
    f.extend_from_slice(data);
    f
}

/// What the connection's writer sends.
enum Out {
    Reply(u32),
    Data(u32, Bytes),
    Fin(u32),
    Reset(u32, u32),
    Ping(u32),
}

async fn spdy_writer<W: AsyncWrite + Unpin>(mut w: W, mut rx: mpsc::Receiver<Out>) {
    let mut deflate = Deflater::new();
    while let Some(o) = rx.recv().await {
        let frame = match o {
            Out::Reply(id) => {
                let mut p = id.to_be_bytes().to_vec();
                p.extend(deflate.block(&encode_header_block(&[])));
                control_frame(SYN_REPLY, 0, &p)
            }
            Out::Data(id, d) => data_frame(id, 0, &d),
            Out::Fin(id) => data_frame(id, FLAG_FIN, &[]),
            Out::Reset(id, status) => {
                let mut p = id.to_be_bytes().to_vec();
                p.extend_from_slice(&status.to_be_bytes());
                control_frame(RST_STREAM, 0, &p)
            }
            Out::Ping(id) => control_frame(PING, 0, &id.to_be_bytes()),
        };
        if w.write_all(&frame).await.is_err() {
            return;
        }
        if rx.is_empty() && w.flush().await.is_err() {
            return;
        }
    }
    let _ = w.shutdown().await;
}

/// The two streams of one forwarded connection, as they arrive.
#[derive(Default)]
struct Pair {
    port: u16,
    error: Option<u32>,
    data: Option<(u32, mpsc::Receiver<Bytes>)>,
}

/// Serves one SPDY port-forward connection until the client closes it.
async fn serve_spdy<IO: AsyncRead + AsyncWrite + Send + 'static>(io: IO, target: Arc<Target>) {
    let (rd, wr) = tokio::io::split(io);
    let mut rd = tokio::io::BufReader::new(rd);
    let (tx, rx) = mpsc::channel::<Out>(256);
    let writer = tokio::spawn(spdy_writer(wr, rx));
    let mut inflate = Inflater::new();
    let mut inbound: HashMap<u32, mpsc::Sender<Bytes>> = HashMap::new();
    let mut pairs: HashMap<String, Pair> = HashMap::new();
    let mut tasks = tokio::task::JoinSet::new();
    loop {
        let mut head = [0u8; 8];
        if rd.read_exact(&mut head).await.is_err() {
            break;
        }
        let flags = head[4];
        let len = u32::from_be_bytes([0, head[5], head[6], head[7]]) as usize;
        if len > MAX_FRAME {
            tracing::debug!(len, "port-forward: frame too large");
            break;
        }
        let mut payload = vec![0u8; len];
        if rd.read_exact(&mut payload).await.is_err() {
            break;
        }
        if head[0] & 0x80 == 0 {
            let id = be32(&head) & 0x7fff_ffff;
            if !payload.is_empty() {
                if let Some(s) = inbound.get(&id) {
                    let _ = s.send(Bytes::from(payload)).await;
                }
            }
            if flags & FLAG_FIN != 0 {
                inbound.remove(&id);
            }
            continue;
        }
        let kind = u16::from_be_bytes([head[2], head[3]]);
        match kind {
            SYN_STREAM if payload.len() >= 10 => {
                let id = be32(&payload) & 0x7fff_ffff;
                let headers = match inflate.block(&payload[10..]).map(|b| parse_header_block(&b)) {
                    Ok(Some(h)) => h,
                    _ => {
                        tracing::debug!("port-forward: bad header block");
                        break;
                    }
                };
                let get = |n: &str| headers.iter().find(|(k, _)| k == n).map(|(_, v)| v.clone()).unwrap_or_default();
                let (kind, port) = (get("streamtype"), get("port"));
                let port: u16 = match port.parse() {
                    Ok(p) if p > 0 && (kind == "error" || kind == "data") => p,
                    _ => {
                        tracing::debug!(kind, port, "port-forward: stream rejected");
                        let _ = tx.send(Out::Reset(id, PROTOCOL_ERROR)).await;
                        continue;
                    }
                };
                let mut request = get("requestid");
                if request.is_empty() {
                    // clients older than request ids: error and data streams are consecutive
                    request = if kind == "error" { id.to_string() } else { id.saturating_sub(2).to_string() };
                }
                let _ = tx.send(Out::Reply(id)).await;
                let pair = pairs.entry(request.clone()).or_default();
                pair.port = port;
                if kind == "error" {
                    pair.error = Some(id);
                } else {
                    let (dtx, drx) = mpsc::channel(64);
                    if flags & FLAG_FIN == 0 {
                        inbound.insert(id, dtx);
                    }
                    pair.data = Some((id, drx));
                }
                if pair.error.is_some() && pair.data.is_some() {
                    let pair = pairs.remove(&request).expect("just seen");
                    tasks.spawn(forward(pair, target.clone(), tx.clone()));
                }
            }
            // keep the decompression context in step; nothing to do with these
            SYN_REPLY | HEADERS if payload.len() >= 4 && inflate.block(&payload[4..]).is_err() => break,
            RST_STREAM if payload.len() >= 4 => {
                inbound.remove(&(be32(&payload) & 0x7fff_ffff));
            }
            PING if payload.len() >= 4 => {
                let _ = tx.send(Out::Ping(be32(&payload))).await;
            }
            GOAWAY => break,
            _ => {} // SETTINGS, WINDOW_UPDATE, NOOP: no flow control here
        }
        while tasks.try_join_next().is_some() {}
    }
    tasks.abort_all();
    drop(inbound);
    drop(tx);
    let _ = tokio::time::timeout(Duration::from_secs(5), writer).await;
}

/// Forwards one connection: bytes of the data stream to the pod's port and back; a failure
/// to connect is written on the error stream (upstream kubelet's text).
async fn forward(pair: Pair, target: Arc<Target>, tx: mpsc::Sender<Out>) {
    let (Some(err_id), Some((data_id, mut inbound))) = (pair.error, pair.data) else { return };
    let port = pair.port;
    let tcp = match target.connect(port).await {
        Ok(t) => t,
        Err(e) => {
            let msg = format!("error forwarding port {port} to pod {}, uid {}: {e}", target.pod, target.uid);
            tracing::debug!(%msg, "port-forward");
            let _ = tx.send(Out::Data(err_id, Bytes::from(msg))).await;
            let _ = tx.send(Out::Fin(err_id)).await;
            let _ = tx.send(Out::Fin(data_id)).await;
            return;
        }
    };
    let (mut r, mut w) = tcp.into_split();
    let up = tokio::spawn(async move {
        while let Some(b) = inbound.recv().await {
            if w.write_all(&b).await.is_err() {
                return;
            }
        }
        // the client half-closed its data stream
        let _ = w.shutdown().await;
    });
    let mut buf = vec![0u8; 32 * 1024];
    loop {
        match r.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if tx.send(Out::Data(data_id, Bytes::copy_from_slice(&buf[..n]))).await.is_err() {
                    break;
                }
            }
        }
    }
    let _ = tx.send(Out::Fin(data_id)).await;
    let _ = tx.send(Out::Fin(err_id)).await;
    up.abort();
}

#[cfg(test)]
mod tests {
    use super::*;

    fn adler32(b: &[u8]) -> u32 {
        let (mut a, mut s) = (1u32, 0u32);
        for &x in b {
            a = (a + x as u32) % 65521;
            s = (s + a) % 65521;
        }
        (s << 16) | a
    }

    #[test]
    fn dictionary_is_spdy3s() {
        assert_eq!(SPDY3_DICTIONARY.len(), 1423);
        assert_eq!(adler32(SPDY3_DICTIONARY), 0xe3c6a7c2);
    }

    #[test]
    fn header_blocks_round_trip_across_frames() {
        let (mut d, mut i) = (Deflater::new(), Inflater::new());
        for n in 0..3 {
            let port = format!("80{n}");
            let raw = encode_header_block(&[("streamtype", "data"), ("port", &port), ("requestid", "0")]);
            let z = d.block(&raw);
            assert_eq!(i.block(&z).unwrap(), raw);
            let h = parse_header_block(&raw).unwrap();
            assert_eq!(h[1], ("port".to_string(), port));
        }
    }

    #[test]
    fn frames() {
        assert_eq!(data_frame(3, FLAG_FIN, b"ab"), [0, 0, 0, 3, 1, 0, 0, 2, b'a', b'b']);
        assert_eq!(control_frame(PING, 0, &7u32.to_be_bytes()), [0x80, 3, 0, 6, 0, 0, 0, 4, 0, 0, 0, 7]);
    }

    #[test]
    fn options_and_queries() {
        let o = StreamOpts::parse(Some("command=sh&command=-c&command=echo%20a+b&stdin=true&stdout=1&stderr=true&tty=true")).unwrap();
        assert_eq!(o.command, ["sh", "-c", "echo a b"]);
        assert!(o.stdin && o.stdout && o.tty && !o.stderr);
        assert!(StreamOpts::parse(Some("command=ls")).is_err());
        let s: serde_json::Value = serde_json::from_str(&status_json(Ok(3), &["sh".into(), "-c".into(), "exit 3".into()])).unwrap();
        assert_eq!(s["reason"], "NonZeroExitCode");
        assert_eq!(s["details"]["causes"][0]["reason"], "ExitCode");
        assert_eq!(s["details"]["causes"][0]["message"], "3");
        assert_eq!(s["message"], "command terminated with non-zero exit code: error executing command [sh -c exit 3], exit code 3");
        assert_eq!(status_json(Ok(0), &[]), r#"{"metadata":{},"status":"Success"}"#);
    }
}
