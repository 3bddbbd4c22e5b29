//! Streaming exec: a process started inside a running container (same namespaces, cgroup,
//! user, env and cwd as `exec_sync`) whose stdio the caller keeps: pipes, or a terminal.
//!
//! Pipes: the agent creates them and the helper opens their ends through `/proc/<agent>/fd/N`
//! (as for `exec_sync`). Terminal: libcontainer's OCI console-socket protocol: the helper is
//! given a `process.json` with `terminal: true` and the path of a unix socket the agent
//! listens on; the exec'd process creates a pty pair in the *container's* devpts, makes the
//! slave its stdio and controlling terminal (setsid + TIOCSCTTY) and sends the master here
//! (SCM_RIGHTS). The agent keeps the master: reads it for output, writes it for input,
//! resizes it with TIOCSWINSZ.

use std::io;
use std::mem::MaybeUninit;
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{ready, Context, Poll};
use std::time::{Duration, Instant};

use nix::fcntl::OFlag;
use nix::sys::signal::{kill, Signal};
use nix::unistd::{pipe2, Pid};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::unix::pipe;

use super::container::{proc_fd, wait_child, FORK_LOCK};
use super::helper::{self, Request};
use super::{blocking, IoContext, Runtime, RuntimeError};

/// What to run and which streams the caller wants.
#[derive(Clone, Debug, Default)]
pub struct ExecRequest {
    pub argv: Vec<String>,
    /// Keep a writer for the process's stdin (else stdin is /dev/null, or the terminal).
    pub stdin: bool,
    /// Run it on a terminal: stdout is the terminal's output, there is no separate stderr.
    pub tty: bool,
    /// The terminal's first size (columns, rows), set as soon as the terminal exists.
    pub size: Option<(u16, u16)>,
}

pub type ExecReader = Box<dyn AsyncRead + Send + Unpin>;
pub type ExecWriter = Box<dyn AsyncWrite + Send + Unpin>;

/// A running exec process. Dropping it closes the streams the caller did not take (for a
/// terminal: hang-up once every handle of the master is gone); the process is not killed.
pub struct ExecProcess {
    pub pid: i32,
    pub stdin: Option<ExecWriter>,
    pub stdout: Option<ExecReader>,
    pub stderr: Option<ExecReader>,
    /// Set for terminal execs.
    pub terminal: Option<Terminal>,
    exit: tokio::task::JoinHandle<(i32, Option<i32>)>,
    alive: Arc<Mutex<bool>>,
}

impl ExecProcess {
    /// Waits for the process to exit: its exit status, 128+signal when killed by a signal.
    pub async fn wait(&mut self) -> i32 {
        match (&mut self.exit).await {
            Ok((code, _)) => code,
            Err(_) => -1,
        }
    }

    /// SIGKILL, while the process is still ours (not reaped).
    pub fn kill(&self) {
        if *self.alive.lock().unwrap() {
            let _ = kill(Pid::from_raw(self.pid), Signal::SIGKILL);
        }
    }
}

/// The agent's end of an exec's terminal.
#[derive(Clone)]
pub struct Terminal {
    master: Arc<OwnedFd>,
}

impl Terminal {
    /// TIOCSWINSZ on the master: the process group gets SIGWINCH.
    pub fn resize(&self, cols: u16, rows: u16) -> io::Result<()> {
        let ws = rustix::termios::Winsize {
            ws_row: rows,
            ws_col: cols,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        rustix::termios::tcsetwinsize(&*self.master, ws).map_err(io::Error::from)
    }
}

/// Reads the terminal's output (the master, registered with tokio like a pipe's read end);
/// EIO, which means the slave side is closed everywhere, is end of file.
struct PtyReader(pipe::Receiver);

impl AsyncRead for PtyReader {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match ready!(Pin::new(&mut self.0).poll_read(cx, buf)) {
            Err(e) if e.raw_os_error() == Some(nix::libc::EIO) => Poll::Ready(Ok(())),
            r => Poll::Ready(r),
        }
    }
}

/// How a failed exec start is reported to a user, as a shell would: the exit code (127: no such
/// command, 126: not executable) and the message. `None` for other failures.
pub fn exec_start_failure(err: &RuntimeError) -> Option<(i32, String)> {
    let msg = err.to_string();
    // libcontainer's validation (`executable 'x' not found in $PATH`), else our executor's
    let reason = msg
        .rsplit_once("error in executing process : ")
        .map_or(msg.as_str(), |(_, r)| r)
        .trim()
        .to_string();
    if msg.contains("not found in $PATH") || msg.contains("not found in PATH") {
        Some((127, reason))
    } else if msg.contains("does not have correct permissions")
        || (msg.contains("execve") && (msg.contains("EACCES") || msg.contains("ENOEXEC")))
    {
        Some((126, reason))
    } else {
        None
    }
}

static CONSOLE_COUNTER: AtomicU64 = AtomicU64::new(0);

/// A unix socket the exec's console master arrives on; removed on drop.
pub(super) struct ConsoleSocket {
    path: PathBuf,
    listener: UnixListener,
}

impl ConsoleSocket {
    fn new() -> Result<Self, RuntimeError> {
        // short: sockaddr_un paths are limited to 108 bytes
        let n = CONSOLE_COUNTER.fetch_add(1, Ordering::Relaxed);
        let path =
            std::env::temp_dir().join(format!("krust-console-{}-{n}.sock", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let listener =
            UnixListener::bind(&path).ctx(|| format!("listening on {}", path.display()))?;
        Ok(ConsoleSocket { path, listener })
    }

    /// The pty master the exec'd process sends (before its `execve`), sized to `size` at
    /// once; gives up when `stop` is set (the exec failed).
    pub(super) fn receive_master(
        listener: &UnixListener,
        size: Option<(u16, u16)>,
        stop: &AtomicBool,
    ) -> Result<OwnedFd, RuntimeError> {
        use rustix::net::{RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags};
        listener
            .set_nonblocking(true)
            .ctx(|| "console socket".to_string())?;
        let deadline = Instant::now() + Duration::from_secs(60);
        let stream = loop {
            match listener.accept() {
                Ok((s, _)) => break s,
                Err(e)
                    if e.kind() == io::ErrorKind::WouldBlock
                        && Instant::now() < deadline
                        && !stop.load(Ordering::Relaxed) =>
                {
                    std::thread::sleep(Duration::from_millis(2))
                }
                Err(e) => {
                    return Err(RuntimeError::Other(format!(
                        "no terminal came back from the exec: {e}"
                    )))
                }
            }
        };
        stream
            .set_nonblocking(false)
            .ctx(|| "console socket".to_string())?;
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .ctx(|| "console socket".to_string())?;
        let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
        let mut control = RecvAncillaryBuffer::new(&mut space);
        let mut name = [0u8; 4096];
        rustix::net::recvmsg(
            &stream,
            &mut [io::IoSliceMut::new(&mut name)],
            &mut control,
            RecvFlags::CMSG_CLOEXEC,
        )
        .map_err(|e| RuntimeError::Other(format!("receiving the exec's terminal: {e}")))?;
        let mut master = None;
        for msg in control.drain() {
            if let RecvAncillaryMessage::ScmRights(mut fds) = msg {
                master = master.or(fds.next());
            }
        }
        let master =
            master.ok_or_else(|| RuntimeError::Other("the exec sent no terminal".into()))?;
        if let Some((cols, rows)) = size.filter(|(c, r)| *c > 0 && *r > 0) {
            let ws = rustix::termios::Winsize {
                ws_row: rows,
                ws_col: cols,
                ws_xpixel: 0,
                ws_ypixel: 0,
            };
            let _ = rustix::termios::tcsetwinsize(&master, ws);
        }
        Ok(master)
    }
}

impl Drop for ConsoleSocket {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// The container's process with `argv` on a terminal, as an OCI process.json.
fn terminal_process(
    bundle_config: &Path,
    argv: &[String],
    dest: &Path,
) -> Result<(), RuntimeError> {
    let spec = oci_spec::runtime::Spec::load(bundle_config)
        .map_err(|e| RuntimeError::Other(format!("reading {}: {e}", bundle_config.display())))?;
    let mut process = spec
        .process()
        .clone()
        .ok_or_else(|| RuntimeError::Other("the container spec has no process".into()))?;
    process.set_args(Some(argv.to_vec()));
    process.set_terminal(Some(true));
    // as containerd's CRI exec does for terminals
    let mut env = process.env().clone().unwrap_or_default();
    if !env.iter().any(|e| e.starts_with("TERM=")) {
        env.push("TERM=xterm".into());
    }
    process.set_env(Some(env));
    let data = serde_json::to_vec(&process)
        .map_err(|e| RuntimeError::Other(format!("process.json: {e}")))?;
    std::fs::write(dest, data).ctx(|| format!("writing {}", dest.display()))
}

struct Started {
    pid: i32,
    stdin: Option<OwnedFd>,
    stdout: Option<OwnedFd>,
    stderr: Option<OwnedFd>,
    master: Option<OwnedFd>,
}

impl Runtime {
    /// Starts `req.argv` in the running container `container_id` and hands back its streams.
    /// A command that cannot be started is an error (see [`exec_start_failure`]).
    pub async fn exec_stream(
        &self,
        container_id: &str,
        req: &ExecRequest,
    ) -> Result<ExecProcess, RuntimeError> {
        let rec = self.exec_target(container_id, &req.argv)?;
        let lc_root = self.libcontainer_dir();
        let dir = self.container_dir(container_id);
        let id = container_id.to_string();
        let helper_cmd = self.helper.clone();
        let req = req.clone();
        let started = blocking(move || {
            let dev_null = PathBuf::from("/dev/null");
            let base = |stdout: PathBuf, stderr: PathBuf| Request::Exec {
                id: id.clone(),
                lc_root: lc_root.clone(),
                args: req.argv.clone(),
                uid: rec.uid,
                gid: rec.gid,
                additional_gids: rec.additional_gids.clone(),
                cwd: rec.cwd.clone(),
                stdout,
                stderr,
                stdin: None,
                console_socket: None,
                process: None,
            };
            if req.tty {
                let n = CONSOLE_COUNTER.fetch_add(1, Ordering::Relaxed);
                let process_json = dir.join(format!("exec-{}-{n}.json", std::process::id()));
                terminal_process(&dir.join("config.json"), &req.argv, &process_json)?;
                let console = ConsoleSocket::new()?;
                let mut r = base(dev_null.clone(), dev_null.clone());
                if let Request::Exec {
                    console_socket,
                    process,
                    ..
                } = &mut r
                {
                    *console_socket = Some(console.path.clone());
                    *process = Some(process_json.clone());
                }
                // The master arrives while the helper still runs (before the process execs):
                // taken and sized at once, the process starts on a terminal of the right size.
                let listener = console
                    .listener
                    .try_clone()
                    .ctx(|| "console socket".to_string())?;
                let stop = Arc::new(AtomicBool::new(false));
                let stop2 = stop.clone();
                let size = req.size;
                let receiver = std::thread::Builder::new()
                    .name("krust-console".into())
                    .spawn(move || ConsoleSocket::receive_master(&listener, size, &stop2))
                    .ctx(|| "spawning the console thread".to_string())?;
                let pid = {
                    let _fork = FORK_LOCK.lock().unwrap_or_else(|e| e.into_inner());
                    helper::call(&helper_cmd, &r)
                };
                let _ = std::fs::remove_file(&process_json);
                if pid.is_err() {
                    stop.store(true, Ordering::Relaxed);
                }
                let master = receiver
                    .join()
                    .map_err(|_| RuntimeError::Other("the console thread panicked".into()));
                let pid = pid?;
                let master = master??;
                return Ok(Started {
                    pid,
                    stdin: None,
                    stdout: None,
                    stderr: None,
                    master: Some(master),
                });
            }
            let (out_r, out_w) = pipe2(OFlag::O_CLOEXEC).ctx(|| "pipe2".to_string())?;
            let (err_r, err_w) = pipe2(OFlag::O_CLOEXEC).ctx(|| "pipe2".to_string())?;
            let stdin_pipe = if req.stdin {
                Some(pipe2(OFlag::O_CLOEXEC).ctx(|| "pipe2".to_string())?)
            } else {
                None
            };
            let mut r = base(proc_fd(&out_w), proc_fd(&err_w));
            if let (Request::Exec { stdin, .. }, Some((in_r, _))) = (&mut r, &stdin_pipe) {
                *stdin = Some(proc_fd(in_r));
            }
            let pid = {
                let _fork = FORK_LOCK.lock().unwrap_or_else(|e| e.into_inner());
                helper::call(&helper_cmd, &r)?
            };
            // the child ends now live in the process only: EOF when it exits
            drop((out_w, err_w));
            let stdin = stdin_pipe.map(|(in_r, in_w)| {
                drop(in_r);
                in_w
            });
            Ok(Started {
                pid,
                stdin,
                stdout: Some(out_r),
                stderr: Some(err_r),
                master: None,
            })
        })
        .await?;

        let pid = started.pid;
        let alive = Arc::new(Mutex::new(true));
        let alive2 = alive.clone();
        let exit = tokio::task::spawn_blocking(move || {
            wait_child(pid, || *alive2.lock().unwrap() = false)
        });
        let mut p = ExecProcess {
            pid,
            stdin: None,
            stdout: None,
            stderr: None,
            terminal: None,
            exit,
            alive,
        };
        if let Some(master) = started.master {
            // the three handles share one open file description, so one O_NONBLOCK
            rustix::io::ioctl_fionbio(&master, true)
                .map_err(|e| RuntimeError::Other(format!("terminal: {e}")))?;
            let dup = || {
                master
                    .try_clone()
                    .ctx(|| "duplicating the terminal".to_string())
            };
            p.stdout = Some(Box::new(PtyReader(
                pipe::Receiver::from_owned_fd_unchecked(dup()?).ctx(|| "terminal".to_string())?,
            )));
            // a terminal's input is always there (the caller may leave it unused)
            p.stdin = Some(Box::new(
                pipe::Sender::from_owned_fd_unchecked(dup()?).ctx(|| "terminal".to_string())?,
            ));
            p.terminal = Some(Terminal {
                master: Arc::new(master),
            });
            return Ok(p);
        }
        if let Some(fd) = started.stdin {
            p.stdin = Some(Box::new(
                pipe::Sender::from_owned_fd(fd).ctx(|| "exec stdin".to_string())?,
            ));
        }
        if let Some(fd) = started.stdout {
            p.stdout = Some(Box::new(
                pipe::Receiver::from_owned_fd(fd).ctx(|| "exec stdout".to_string())?,
            ));
        }
        if let Some(fd) = started.stderr {
            p.stderr = Some(Box::new(
                pipe::Receiver::from_owned_fd(fd).ctx(|| "exec stderr".to_string())?,
            ));
        }
        Ok(p)
    }
}
