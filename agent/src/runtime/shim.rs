//! The container shim: one small process per container (a re-exec of the agent binary, in its
//! own process group) that holds the container's stdio and outlives the agent, as
//! containerd's shims do. It
//! - writes the container's output to its CRI log file (so a restarted agent's containers keep
//!   being logged and never see a broken pipe);
//! - serves `attach` on a unix socket: raw output to every attached client, and input (stdin,
//!   terminal resizes, end of input) from them to the container;
//! - for `tty: true` containers, receives the terminal's master from libcontainer (it listens
//!   on the console socket) and is the terminal's only reader and writer.
//!
//! Attach socket protocol, both ways: frames `[kind: u8][len: u32 big-endian][data]`. From the
//! shim: [`STDOUT`] / [`STDERR`] output. To the shim: [`STDIN`] data (a client attaching
//! stdin sends an empty one first), [`RESIZE`] (`cols: u16, rows: u16`), [`CLOSE_STDIN`]. The shim closes every client when the container's output ends.

use std::io::{Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::logs::LogWriter;

/// Environment variable carrying a shim's request.
pub const SHIM_ENV: &str = "KRUST_SHIM";
const SHIM_READY: &str = "KRUST-SHIM-READY";

pub const STDIN: u8 = 0;
pub const STDOUT: u8 = 1;
pub const STDERR: u8 = 2;
pub const RESIZE: u8 = 4;
pub const CLOSE_STDIN: u8 = 255;

/// How the shim reaches the container's stdio.
#[derive(Serialize, Deserialize)]
pub(crate) enum Stdio {
    /// Pipes, as `/proc/<agent pid>/fd/<n>` of the agent's ends: stdout and stderr read
    /// ends, the stdin write end when the container has `stdin: true`.
    Pipes { stdout: PathBuf, stderr: PathBuf, stdin: Option<PathBuf> },
    /// A terminal: libcontainer sends its master to this socket, which the shim listens on.
    /// Input reaches it only with `stdin` (the container's `stdin: true`).
    Terminal { console: PathBuf, stdin: bool },
}

#[derive(Serialize, Deserialize)]
struct Request {
    log: PathBuf,
    attach: PathBuf,
    stdio: Stdio,
    /// `stdinOnce`: stdin closes when the first client that attached stdin closes it or goes away.
    stdin_once: bool,
}

/// Where the shim of the container in `dir` serves attach: short (sockaddr_un paths are
/// limited to 108 bytes) and derived from the directory, so a restarted agent finds it.
pub(crate) fn attach_socket(dir: &Path) -> PathBuf {
    PathBuf::from(format!("/run/krust/shims/{:016x}.sock", crate::hash::fnv1a64(&dir.to_string_lossy())))
}

/// Starts a shim (`program args`, the agent's binary) and returns once it has taken over the
/// container's stdio (pipes opened, or console socket listening).
pub(crate) fn spawn(program: &Path, args: &[String], log: &Path, attach: &Path, stdio: Stdio, stdin_once: bool) -> std::io::Result<std::process::Child> {
    use std::io::BufRead as _;
    use std::os::unix::process::CommandExt;
    let req = Request { log: log.to_path_buf(), attach: attach.to_path_buf(), stdio, stdin_once };
    let mut child = std::process::Command::new(program)
        .args(args)
        .env(SHIM_ENV, serde_json::to_string(&req).expect("json"))
        .env_remove(super::HELPER_ENV)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .process_group(0)
        .spawn()?;
    // (A test binary standing in for the agent prints its own lines first.)
    let ready = child.stdout.take().is_some_and(|out| std::io::BufReader::new(out).lines().map_while(Result::ok).any(|l| l.trim() == SHIM_READY));
    if !ready {
        let _ = child.kill();
        let _ = child.wait();
        return Err(std::io::Error::other("the container shim did not start"));
    }
    Ok(child)
}

/// If this process was started as a shim, runs it and exits; otherwise returns at once
/// (called by `run_helper_if_requested`).
pub(crate) fn run_if_requested() {
    let Some(req) = std::env::var_os(SHIM_ENV) else { return };
    let code = match serde_json::from_str::<Request>(&req.to_string_lossy()) {
        Ok(req) => match serve(req) {
            Ok(()) => 0,
            Err(e) => {
                eprintln!("krust shim: {e}");
                1
            }
        },
        Err(e) => {
            eprintln!("krust shim: bad request: {e}");
            2
        }
    };
    std::process::exit(code);
}

/// What attached clients share: their sockets (output goes to all) and the container's input.
#[derive(Default)]
struct Shared {
    clients: Mutex<Vec<UnixStream>>,
    input: Mutex<Option<std::fs::File>>,
    /// The terminal master, for resizes.
    terminal: Mutex<Option<Arc<std::fs::File>>>,
    stdin_once: bool,
}

fn serve(req: Request) -> std::io::Result<()> {
    if let Some(dir) = req.attach.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let _ = std::fs::remove_file(&req.attach);
    let attach = UnixListener::bind(&req.attach)?;
    let shared = Arc::new(Shared { stdin_once: req.stdin_once, ..Default::default() });
    let outputs: Vec<(std::fs::File, u8)> = match &req.stdio {
        Stdio::Pipes { stdout, stderr, stdin } => {
            let out = std::fs::File::open(stdout)?;
            let err = std::fs::File::open(stderr)?;
            if let Some(p) = stdin {
                *shared.input.lock().unwrap() = Some(std::fs::OpenOptions::new().write(true).open(p)?);
            }
            println!("{SHIM_READY}");
            vec![(out, STDOUT), (err, STDERR)]
        }
        Stdio::Terminal { console, stdin } => {
            let _ = std::fs::remove_file(console);
            let listener = UnixListener::bind(console)?;
            println!("{SHIM_READY}");
            let master = super::exec::ConsoleSocket::receive_master(&listener, None, &AtomicBool::new(false)).map_err(std::io::Error::other)?;
            drop(listener);
            let _ = std::fs::remove_file(console);
            let master = std::fs::File::from(master);
            if *stdin {
                *shared.input.lock().unwrap() = Some(master.try_clone()?);
            }
            *shared.terminal.lock().unwrap() = Some(Arc::new(master.try_clone()?));
            vec![(master, STDOUT)]
        }
    };
    let s = shared.clone();
    std::thread::spawn(move || accept(attach, s));
    let copiers: Vec<_> = outputs
        .into_iter()
        .map(|(input, kind)| {
            let (log, shared) = (req.log.clone(), shared.clone());
            std::thread::spawn(move || copy_output(input, kind, &log, &shared))
        })
        .collect();
    for c in copiers {
        let _ = c.join();
    }
    // The container's output ended: attached clients see the end.
    for c in shared.clients.lock().unwrap().drain(..) {
        let _ = c.shutdown(std::net::Shutdown::Both);
    }
    let _ = std::fs::remove_file(&req.attach);
    Ok(())
}

/// Copies one output stream to the log and to every attached client until it ends (a
/// terminal's master reads EIO once the container is gone: also the end).
fn copy_output(mut input: std::fs::File, kind: u8, log: &Path, shared: &Shared) {
    let mut log = LogWriter::open(log, if kind == STDERR { "stderr" } else { "stdout" });
    let mut chunk = vec![0u8; 32 * 1024];
    loop {
        let n = match input.read(&mut chunk) {
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => 0,
        };
        log.write(&chunk[..n], n == 0);
        if n == 0 {
            return;
        }
        let frame = frame(kind, &chunk[..n]);
        // A client that cannot take the output within its write timeout is dropped.
        shared.clients.lock().unwrap().retain_mut(|c| c.write_all(&frame).is_ok());
    }
}

fn frame(kind: u8, data: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(data.len() + 5);
    f.push(kind);
    f.extend_from_slice(&(data.len() as u32).to_be_bytes());
    f.extend_from_slice(data);
    f
}

fn accept(listener: UnixListener, shared: Arc<Shared>) {
    for conn in listener.incoming() {
        let Ok(conn) = conn else { continue };
        let Ok(writer) = conn.try_clone() else { continue };
        let _ = writer.set_write_timeout(Some(Duration::from_secs(2)));
        shared.clients.lock().unwrap().push(writer);
        let shared = shared.clone();
        std::thread::spawn(move || serve_input(conn, &shared));
    }
}

/// Applies one client's input frames until it goes away.
fn serve_input(mut conn: UnixStream, shared: &Shared) {
    // Whether this client attached stdin (it then sends a stdin frame, maybe empty, first).
    let mut used_stdin = false;
    let mut closed = false;
    loop {
        let mut head = [0u8; 5];
        if conn.read_exact(&mut head).is_err() {
            break;
        }
        let len = u32::from_be_bytes([head[1], head[2], head[3], head[4]]) as usize;
        let mut data = vec![0u8; len.min(1 << 20)];
        if conn.read_exact(&mut data).is_err() {
            break;
        }
        match head[0] {
            STDIN => {
                used_stdin = true;
                let mut input = shared.input.lock().unwrap();
                if let Some(f) = input.as_mut() {
                    if f.write_all(&data).is_err() {
                        *input = None;
                    }
                }
            }
            RESIZE if data.len() == 4 => {
                let (cols, rows) = (u16::from_be_bytes([data[0], data[1]]), u16::from_be_bytes([data[2], data[3]]));
                if let (Some(t), true) = (shared.terminal.lock().unwrap().as_ref(), cols > 0 && rows > 0) {
                    let ws = rustix::termios::Winsize { ws_row: rows, ws_col: cols, ws_xpixel: 0, ws_ypixel: 0 };
                    let _ = rustix::termios::tcsetwinsize(&**t, ws);
                }
            }
            CLOSE_STDIN => {
                closed = true;
                break;
            }
            _ => {}
        }
    }
    if closed || (used_stdin && shared.stdin_once) {
        close_input(shared);
    }
}

/// End of input: a pipe closes; a terminal gets ^D (its master must stay open for output).
fn close_input(shared: &Shared) {
    let mut input = shared.input.lock().unwrap();
    if shared.terminal.lock().unwrap().is_some() {
        if let Some(f) = input.as_mut() {
            let _ = f.write_all(b"\x04");
        }
        if shared.stdin_once {
            *input = None;
        }
    } else {
        *input = None;
    }
}

/// The agent's side of an attach: a connection to the container's shim.
pub struct Attached {
    stream: tokio::net::UnixStream,
}

impl Attached {
    pub(crate) async fn connect(socket: &Path) -> std::io::Result<Attached> {
        Ok(Attached { stream: tokio::net::UnixStream::connect(socket).await? })
    }

    /// Splits into the output reader and the input writer.
    pub fn split(self) -> (AttachOutput, AttachInput) {
        let (r, w) = self.stream.into_split();
        (AttachOutput(r), AttachInput(w))
    }
}

/// The container's output, as (stream, bytes): [`STDOUT`] or [`STDERR`].
pub struct AttachOutput(tokio::net::unix::OwnedReadHalf);

impl AttachOutput {
    /// The next chunk of output; `None` once the container's output has ended.
    pub async fn next(&mut self) -> Option<(u8, Vec<u8>)> {
        let mut head = [0u8; 5];
        self.0.read_exact(&mut head).await.ok()?;
        let len = u32::from_be_bytes([head[1], head[2], head[3], head[4]]) as usize;
        let mut data = vec![0u8; len];
        self.0.read_exact(&mut data).await.ok()?;
        Some((head[0], data))
    }
}

/// Input to the container: stdin, terminal size, end of input.
pub struct AttachInput(tokio::net::unix::OwnedWriteHalf);

impl AttachInput {
    pub async fn stdin(&mut self, data: &[u8]) -> std::io::Result<()> {
        self.0.write_all(&frame(STDIN, data)).await
    }

    pub async fn resize(&mut self, cols: u16, rows: u16) -> std::io::Result<()> {
        let mut d = cols.to_be_bytes().to_vec();
        d.extend_from_slice(&rows.to_be_bytes());
        self.0.write_all(&frame(RESIZE, &d)).await
    }

    pub async fn close_stdin(&mut self) -> std::io::Result<()> {
        self.0.write_all(&frame(CLOSE_STDIN, &[])).await
    }
}
