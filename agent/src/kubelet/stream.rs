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
//! `reason: NonZeroExitCode` with an `ExitCode` cause (kubectl exits with that code).
//! Clients without WebSocket (client-go's fallback, `KUBECTL_REMOTE_COMMAND_WEBSOCKETS=false`)
//! speak SPDY/3.1 with `v4.channel.k8s.io`: one stream per channel, same status JSON (see
//! [`Session::spdy`]).
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
//! implemented (neither is it by spdystream, the client side). SPDY framing: `spdy.rs`.

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::ws::{close_code, CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{FromRequestParts, Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;

use crate::kubelet::server::{instances, pod_log_dir, ContainerPath, PodPath};
use crate::kubelet::spdy::{self, Frame, Out};
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

/// The sending side of an exec/attach connection: (channel, bytes) to the task that writes
/// the connection (as channel-prefixed WebSocket messages, or data on SPDY streams).
#[derive(Clone)]
struct Channels {
    tx: mpsc::Sender<(u8, Bytes)>,
    /// Bytes sent so far (progress, to tell when output has stopped flowing).
    sent: Arc<AtomicU64>,
}

impl Channels {
    fn new(tx: mpsc::Sender<(u8, Bytes)>) -> Channels {
        Channels { tx, sent: Arc::new(AtomicU64::new(0)) }
    }

    async fn send(&self, channel: u8, data: &[u8]) -> bool {
        self.sent.fetch_add(data.len() as u64 + 1, Ordering::Relaxed);
        self.tx.send((channel, Bytes::copy_from_slice(data))).await.is_ok()
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

/// What the client sends: stdin, its end, terminal sizes.
enum FromClient {
    Stdin(Bytes),
    CloseStdin,
    Resize(u16, u16),
}

/// The last `{"Width":W,"Height":H}` in `json` (one or more objects).
fn resize_event(json: &[u8]) -> Option<FromClient> {
    let mut last = None;
    for size in serde_json::Deserializer::from_slice(json).into_iter::<serde_json::Value>().flatten() {
        let w = size["Width"].as_u64().unwrap_or(0).min(u16::MAX as u64) as u16;
        let h = size["Height"].as_u64().unwrap_or(0).min(u16::MAX as u64) as u16;
        last = Some(FromClient::Resize(w, h));
    }
    last
}

/// One exec/attach connection, whatever its transport: the output channels, the client's
/// input, and the tasks writing and reading the connection.
struct Session {
    out: Channels,
    writer: tokio::task::JoinHandle<()>,
    input: mpsc::Receiver<FromClient>,
    reader: tokio::task::JoinHandle<()>,
}

impl Session {
    /// The WebSocket channel protocol: every message starts with its channel.
    fn websocket(socket: WebSocket, v5: bool) -> Session {
        let (mut sink, stream) = socket.split();
        let (tx, mut rx) = mpsc::channel::<(u8, Bytes)>(64);
        let writer = tokio::spawn(async move {
            while let Some((channel, data)) = rx.recv().await {
                let mut m = Vec::with_capacity(data.len() + 1);
                m.push(channel);
                m.extend_from_slice(&data);
                if let Err(e) = sink.send(Message::Binary(Bytes::from(m))).await {
                    tracing::debug!(error = %e, "streaming: the client's socket failed");
                    return;
                }
            }
            let _ = sink.send(Message::Close(Some(CloseFrame { code: close_code::NORMAL, reason: "".into() }))).await;
            let _ = sink.close().await;
        });
        let (itx, input) = mpsc::channel(16);
        let reader = tokio::spawn(read_client(stream, v5, itx));
        Session { out: Channels::new(tx), writer, input, reader }
    }

    /// SPDY/3.1 with the v4 channel protocol (client-go's fallback): the client opens one
    /// stream per channel (`streamType` error, stdin, stdout, stderr, resize), all before any
    /// output, as upstream's kubelet waits for them; the exit status goes on `error` as in v4
    /// WebSocket, then every stream is closed. `None` if the streams do not all arrive.
    async fn spdy<IO: AsyncRead + AsyncWrite + Send + 'static>(io: IO, opts: &StreamOpts) -> Option<Session> {
        let (rd, wr) = tokio::io::split(io);
        let (tx, rx) = mpsc::channel::<Out>(256);
        tokio::spawn(spdy::writer(wr, rx));
        let mut frames = spdy::Reader::new(rd);
        let expected: Vec<&str> = [(true, "error"), (opts.stdin, "stdin"), (opts.stdout, "stdout"), (opts.stderr, "stderr"), (opts.tty, "resize")]
            .into_iter()
            .filter_map(|(want, kind)| want.then_some(kind))
            .collect();
        let mut streams: HashMap<String, u32> = HashMap::new();
        let mut stdin_closed = false;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while !expected.iter().all(|k| streams.contains_key(*k)) {
            match tokio::time::timeout_at(deadline, frames.next()).await {
                Ok(Some(Frame::SynStream { id, fin, headers })) => {
                    let kind = spdy::header(&headers, "streamtype").to_string();
                    let _ = tx.send(Out::Reply(id)).await;
                    stdin_closed |= kind == "stdin" && fin;
                    streams.insert(kind, id);
                }
                Ok(Some(Frame::Ping(p))) => {
                    let _ = tx.send(Out::Ping(p)).await;
                }
                Ok(Some(_)) => {}
                _ => {
                    tracing::debug!(?expected, ?streams, "exec/attach over SPDY: the client's streams did not all arrive");
                    return None;
                }
            }
        }
        let id = |kind: &str| streams.get(kind).copied();
        // indexed by channel: STDIN, STDOUT, STDERR, ERROR
        let by_channel = [id("stdin"), id("stdout"), id("stderr"), id("error")];
        let (stdin, resize) = (id("stdin"), id("resize"));
        let all: Vec<u32> = streams.values().copied().collect();
        let (otx, mut orx) = mpsc::channel::<(u8, Bytes)>(64);
        let out_tx = tx.clone();
        let writer = tokio::spawn(async move {
            while let Some((channel, data)) = orx.recv().await {
                // (an empty message is the WebSocket protocol's "ready": nothing to say here)
                if let (Some(Some(id)), false) = (by_channel.get(channel as usize), data.is_empty()) {
                    if out_tx.send(Out::Data(*id, data)).await.is_err() {
                        return;
                    }
                }
            }
            for id in all {
                let _ = out_tx.send(Out::Fin(id)).await;
            }
        });
        let (itx, input) = mpsc::channel(16);
        let reader = tokio::spawn(async move {
            if stdin_closed {
                let _ = itx.send(FromClient::CloseStdin).await;
            }
            let mut sizes = Vec::new();
            while let Some(frame) = frames.next().await {
                match frame {
                    Frame::Data { id, fin, data } if Some(id) == stdin => {
                        if !data.is_empty() {
                            let _ = itx.send(FromClient::Stdin(Bytes::from(data))).await;
                        }
                        if fin {
                            let _ = itx.send(FromClient::CloseStdin).await;
                        }
                    }
                    Frame::Data { id, data, .. } if Some(id) == resize => {
                        // client-go writes one JSON object per line
                        sizes.extend_from_slice(&data);
                        while let Some(n) = sizes.iter().position(|b| *b == b'\n') {
                            let line: Vec<u8> = sizes.drain(..=n).collect();
                            if let Some(ev) = resize_event(&line) {
                                let _ = itx.send(ev).await;
                            }
                        }
                    }
                    Frame::Ping(p) => {
                        let _ = tx.send(Out::Ping(p)).await;
                    }
                    Frame::GoAway => break,
                    _ => {}
                }
            }
        });
        Some(Session { out: Channels::new(otx), writer, input, reader })
    }
}

/// Upgrades an exec/attach request to a [`Session`] (WebSocket v5/v4, or SPDY/3.1 with
/// v4.channel.k8s.io) and runs `run` on it.
async fn serve_session<F, Fut>(req: Request, opts: StreamOpts, run: F) -> Response
where
    F: FnOnce(Session, StreamOpts) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    if is_websocket(req.headers()) {
        let (ws, proto) = match websocket(req, &[V5, V4]).await {
            Ok(w) => w,
            Err(r) => return r,
        };
        return ws.on_upgrade(move |socket| run(Session::websocket(socket, proto == V5), opts));
    }
    spdy_upgrade(req, V4, move |io| async move {
        if let Some(session) = Session::spdy(io, &opts).await {
            run(session, opts).await;
        }
    })
}

/// Answers a SPDY/3.1 upgrade offering `protocol` in `X-Stream-Protocol-Version` (101), and
/// serves the upgraded connection with `serve`; 400 without an upgrade, 403 (upstream's
/// message) when the protocol is not offered.
fn spdy_upgrade<F, Fut>(mut req: Request, protocol: &'static str, serve: F) -> Response
where
    F: FnOnce(TokioIo<hyper::upgrade::Upgraded>) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    if !is_spdy(req.headers()) {
        return plain(StatusCode::BAD_REQUEST, format!("needs an upgrade: WebSocket, or SPDY/3.1 with {protocol}"));
    }
    let offered: Vec<String> = req
        .headers()
        .get_all("x-stream-protocol-version")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(',').map(|s| s.trim().to_string()))
        .collect();
    if !offered.iter().any(|p| p == protocol) {
        return plain(
            StatusCode::FORBIDDEN,
            format!("unable to upgrade: unable to negotiate protocol: client supports {offered:?}, server accepts [\"{protocol}\"]"),
        );
    }
    let Some(on_upgrade) = req.extensions_mut().remove::<hyper::upgrade::OnUpgrade>() else {
        return plain(StatusCode::BAD_REQUEST, "connection cannot be upgraded");
    };
    tokio::spawn(async move {
        match on_upgrade.await {
            Ok(up) => serve(TokioIo::new(up)).await,
            Err(e) => tracing::debug!(error = %e, "streaming: upgrade failed"),
        }
    });
    Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header(header::CONNECTION, "Upgrade")
        .header(header::UPGRADE, "SPDY/3.1")
        .header("X-Stream-Protocol-Version", protocol)
        .body(Body::empty())
        .expect("a valid response")
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
            RESIZE => match resize_event(&data[1..]) {
                Some(ev) => ev,
                None => continue,
            },
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
pub async fn exec(State(k): State<Arc<Kubelet>>, ContainerPath { namespace, pod, container }: ContainerPath, req: Request) -> Response {
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
    tracing::debug!(%namespace, %pod, %container, command = ?opts.command, "exec");
    serve_session(req, opts, move |session, opts| exec_session(session, opts, k, id)).await
}

async fn exec_session(session: Session, opts: StreamOpts, k: Arc<Kubelet>, id: String) {
    let Session { out, writer, input: mut crx, reader } = session;
    let first = if opts.stdout { STDOUT } else if opts.stderr { STDERR } else { ERROR };
    out.send(first, &[]).await;

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
pub async fn attach(State(k): State<Arc<Kubelet>>, ContainerPath { namespace, pod, container }: ContainerPath, req: Request) -> Response {
    let opts = match StreamOpts::parse(req.uri().query()) {
        Ok(o) => o,
        Err(e) => return plain(StatusCode::BAD_REQUEST, e),
    };
    let (id, _) = match running_container(&k, &namespace, &pod, &container) {
        Ok(c) => c,
        Err(r) => return r,
    };
    serve_session(req, opts, move |session, opts| attach_session(session, opts, k, id)).await
}

/// Relays between the client and the container's shim: output from now on, and (as asked)
/// stdin, end of input and terminal resizes.
async fn attach_session(session: Session, opts: StreamOpts, k: Arc<Kubelet>, id: String) {
    let Session { out, writer, input: mut crx, reader } = session;
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
pub async fn port_forward(State(k): State<Arc<Kubelet>>, PodPath { namespace, pod }: PodPath, req: Request) -> Response {
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
    spdy_upgrade(req, PORT_FORWARD, move |io| serve_spdy(io, target))
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
    let (tx, rx) = mpsc::channel::<Out>(256);
    let writer = tokio::spawn(spdy::writer(wr, rx));
    let mut frames = spdy::Reader::new(rd);
    let mut inbound: HashMap<u32, mpsc::Sender<Bytes>> = HashMap::new();
    let mut pairs: HashMap<String, Pair> = HashMap::new();
    let mut tasks = tokio::task::JoinSet::new();
    while let Some(frame) = frames.next().await {
        match frame {
            Frame::Data { id, fin, data } => {
                if let (false, Some(s)) = (data.is_empty(), inbound.get(&id)) {
                    let _ = s.send(Bytes::from(data)).await;
                }
                if fin {
                    inbound.remove(&id);
                }
            }
            Frame::SynStream { id, fin, headers } => {
                let (kind, port) = (spdy::header(&headers, "streamtype"), spdy::header(&headers, "port"));
                let port: u16 = match port.parse() {
                    Ok(p) if p > 0 && (kind == "error" || kind == "data") => p,
                    _ => {
                        tracing::debug!(kind, port, "port-forward: stream rejected");
                        let _ = tx.send(Out::Reset(id, spdy::PROTOCOL_ERROR)).await;
                        continue;
                    }
                };
                let mut request = spdy::header(&headers, "requestid").to_string();
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
                    if !fin {
                        inbound.insert(id, dtx);
                    }
                    pair.data = Some((id, drx));
                }
                if pair.error.is_some() && pair.data.is_some() {
                    let pair = pairs.remove(&request).expect("just seen");
                    tasks.spawn(forward(pair, target.clone(), tx.clone()));
                }
            }
            Frame::Reset(id) => {
                inbound.remove(&id);
            }
            Frame::Ping(p) => {
                let _ = tx.send(Out::Ping(p)).await;
            }
            Frame::GoAway => break,
            Frame::Other => {}
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
