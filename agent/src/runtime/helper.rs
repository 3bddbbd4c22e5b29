//! The runtime helper: a short-lived, single-threaded re-exec of the agent's own binary that
//! runs libcontainer's create+start (or exec) for the agent.
//!
//! Why: libcontainer forks with a raw `clone3`, which skips glibc's fork handlers. From a
//! multi-threaded process (the agent: tokio) the child inherits every lock another thread held at
//! that instant - malloc arenas, std's environment lock, tracing's registry - and deadlocks on the
//! first one it touches (seen in the tests: intermediate process stuck in `malloc`, init process
//! stuck in `std::env::remove_var`). The helper is started with `Command` (fork+exec, safe), has
//! a single thread, and builds the container `as_sibling`, so that the container's processes
//! become children of the agent (CLONE_PARENT), which reaps them as before.
//!
//! Protocol: the request is JSON in the environment variable [`HELPER_ENV`]; the helper opens
//! the agent's pipe ends through `/proc/<agent pid>/fd/<n>`; it prints one line
//! `KRUST-RUNTIME-HELPER-REPLY <json>` on stdout and exits 0.
//!
//! The binary must call [`run_helper_if_requested`] first thing in `main()`.

use std::collections::HashMap;
use std::ffi::CString;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use libcontainer::container::builder::ContainerBuilder;
use libcontainer::syscall::syscall::SyscallType;
use libcontainer::workload::default::DefaultExecutor;
use libcontainer::workload::{
    Executor, ExecutorError, ExecutorSetEnvsError, ExecutorValidationError,
};
use nix::sys::wait::{waitpid, WaitPidFlag};
use nix::unistd::Pid;
use serde::{Deserialize, Serialize};

use super::RuntimeError;

/// Environment variable carrying the helper request.
pub const HELPER_ENV: &str = "KRUST_RUNTIME_HELPER_REQUEST";
const REPLY_MARKER: &str = "KRUST-RUNTIME-HELPER-REPLY ";

/// How the agent starts its helper: `program args...` with [`HELPER_ENV`] set.
#[derive(Clone, Debug)]
pub struct HelperCommand {
    pub program: PathBuf,
    pub args: Vec<String>,
}

impl Default for HelperCommand {
    /// The agent's own binary (`/proc/self/exe`), whose `main` calls [`run_helper_if_requested`].
    fn default() -> Self {
        HelperCommand {
            program: PathBuf::from("/proc/self/exe"),
            args: Vec::new(),
        }
    }
}

#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum Request {
    /// create + start the container whose bundle is `bundle`
    Create {
        id: String,
        lc_root: PathBuf,
        bundle: PathBuf,
        stdout: PathBuf,
        stderr: PathBuf,
        /// stdin to open instead of /dev/null
        stdin: Option<PathBuf>,
        /// With a terminal (`process.terminal`): where libcontainer sends its master.
        console_socket: Option<PathBuf>,
    },
    /// run a process in the running container `id`
    Exec {
        id: String,
        lc_root: PathBuf,
        args: Vec<String>,
        uid: u32,
        gid: u32,
        additional_gids: Vec<u32>,
        cwd: String,
        stdout: PathBuf,
        stderr: PathBuf,
        /// stdin to open instead of /dev/null
        #[serde(default)]
        stdin: Option<PathBuf>,
        /// With `process`: a terminal exec. libcontainer creates a pty in the container and
        /// sends its master over this unix socket (the stdio paths are then unused).
        #[serde(default)]
        console_socket: Option<PathBuf>,
        /// An OCI `process.json` (with `terminal: true`) that replaces args/user/cwd.
        #[serde(default)]
        process: Option<PathBuf>,
    },
}

#[derive(Debug, Serialize, Deserialize)]
enum Reply {
    Pid(i32),
    Error(String),
}

/// If this process was started as the runtime helper, serves the request and exits; otherwise
/// returns at once. Call it first thing in `main()`, before any thread or runtime is started.
pub fn run_helper_if_requested() {
    super::shim::run_if_requested();
    let Ok(req) = std::env::var(HELPER_ENV) else {
        return;
    };
    let reply = match serde_json::from_str::<Request>(&req) {
        Ok(req) => match serve(req) {
            Ok(pid) => Reply::Pid(pid),
            Err(e) => Reply::Error(e),
        },
        Err(e) => Reply::Error(format!("bad helper request: {e}")),
    };
    println!(
        "{REPLY_MARKER}{}",
        serde_json::to_string(&reply).expect("json")
    );
    std::process::exit(0);
}

fn open_fd(path: &Path, write: bool) -> Result<OwnedFd, String> {
    std::fs::OpenOptions::new()
        .read(!write)
        .write(write)
        .open(path)
        .map(OwnedFd::from)
        .map_err(|e| format!("opening {}: {e}", path.display()))
}

fn serve(req: Request) -> Result<i32, String> {
    let quiet = |f: &mut dyn FnMut() -> Result<i32, String>| {
        tracing::subscriber::with_default(tracing::subscriber::NoSubscriber::default(), f)
    };
    match req {
        Request::Create {
            id,
            lc_root,
            bundle,
            stdout,
            stderr,
            stdin,
            console_socket,
        } => quiet(&mut || {
            let stdin = stdin.as_deref().unwrap_or(Path::new("/dev/null"));
            let mut container = ContainerBuilder::new(id.clone(), SyscallType::default())
                .with_executor(KrustExecutor)
                .with_root_path(&lc_root)
                .map_err(|e| e.to_string())?
                .with_stdin(open_fd(stdin, false)?)
                .with_stdout(open_fd(&stdout, true)?)
                .with_stderr(open_fd(&stderr, true)?)
                .with_console_socket(console_socket.as_deref())
                .validate_id()
                .map_err(|e| e.to_string())?
                .as_init(&bundle)
                .with_systemd(false)
                // libcontainer takes a console socket exactly for "detached" terminal
                // processes; for an init process it changes nothing else.
                .with_detach(console_socket.is_some())
                .as_sibling(true)
                .build()
                .map_err(|e| format!("failed to create container {id}: {e}"))?;
            if let Err(e) = container.start() {
                let _ = container.delete(true);
                return Err(format!("failed to start container {id}: {e}"));
            }
            container
                .pid()
                .map(|p| p.as_raw())
                .ok_or_else(|| format!("container {id} has no pid"))
        }),
        Request::Exec {
            id,
            lc_root,
            args,
            uid,
            gid,
            additional_gids,
            cwd,
            stdout,
            stderr,
            stdin,
            console_socket,
            process,
        } => quiet(&mut || {
            let stdin = stdin.as_deref().unwrap_or(Path::new("/dev/null"));
            let mut base = ContainerBuilder::new(id.clone(), SyscallType::default())
                .with_executor(KrustExecutor)
                .with_root_path(&lc_root)
                .map_err(|e| e.to_string())?
                .with_stdin(open_fd(stdin, false)?)
                .with_stdout(open_fd(&stdout, true)?)
                .with_stderr(open_fd(&stderr, true)?);
            if console_socket.is_some() {
                base = base.with_console_socket(console_socket.as_deref());
            }
            let mut b = base
                .as_tenant()
                .with_container_args(args.clone())
                .with_user(Some(uid))
                .with_group(Some(gid))
                .with_cwd(Some(PathBuf::from(&cwd)))
                .with_detach(false)
                .as_sibling(true);
            if !additional_gids.is_empty() {
                b = b.with_additional_gids(additional_gids.clone());
            }
            if let Some(p) = &process {
                // libcontainer wants a console socket exactly for detached terminal processes;
                // "detached" changes nothing else for a tenant.
                b = b.with_process(Some(p)).with_detach(true);
            }
            b.build()
                .map(|p| p.as_raw())
                .map_err(|e| format!("exec in container {id}: {e}"))
        }),
    }
}

/// Runs the helper for `req` (blocking) and returns the pid it reports. The caller holds the
/// fork lock, so no other libcontainer operation is in flight.
pub(crate) fn call(cmd: &HelperCommand, req: &Request) -> Result<i32, RuntimeError> {
    let json = serde_json::to_string(req).expect("json");
    let out = Command::new(&cmd.program)
        .args(&cmd.args)
        .env(HELPER_ENV, json)
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .map_err(|e| {
            RuntimeError::Other(format!(
                "running the runtime helper {}: {e}",
                cmd.program.display()
            ))
        })?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let reply = stdout
        .lines()
        .find_map(|l| l.strip_prefix(REPLY_MARKER))
        .and_then(|j| serde_json::from_str::<Reply>(j).ok());
    let result = match reply {
        Some(Reply::Pid(pid)) => Ok(pid),
        Some(Reply::Error(e)) => Err(RuntimeError::Other(e)),
        None => Err(RuntimeError::Other(format!(
            "the runtime helper {} gave no reply ({}); does its main() call \
             agent::runtime::run_helper_if_requested()? stdout: {} stderr: {}",
            cmd.program.display(),
            out.status,
            tail(&stdout),
            tail(&String::from_utf8_lossy(&out.stderr)),
        ))),
    };
    reap_libcontainer_children(result.as_ref().ok().copied(), result.is_err());
    result
}

fn tail(s: &str) -> String {
    let s = s.trim();
    let start = s.len().saturating_sub(2000);
    let start = (start..=s.len())
        .find(|i| s.is_char_boundary(*i))
        .unwrap_or(s.len());
    s[start..].to_string()
}

/// libcontainer's intermediate process (and, after a failure, its init process) were cloned
/// with CLONE_PARENT from the helper, so they are the agent's children: reap them. They are named
/// `youki:[1:INTER]` / `youki:[2:INIT]` (a started init execs and takes its program's name).
/// `keep` is the pid of the container just started (it may not have exec'd yet).
fn reap_libcontainer_children(keep: Option<i32>, failed: bool) {
    let me = std::process::id().to_string();
    for _ in 0..200 {
        let mut pending = 0;
        let Ok(rd) = std::fs::read_dir("/proc") else {
            return;
        };
        for e in rd.flatten() {
            let Some(pid) = e.file_name().to_str().and_then(|n| n.parse::<i32>().ok()) else {
                continue;
            };
            if Some(pid) == keep {
                continue;
            }
            let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
                continue;
            };
            let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
                continue;
            };
            let comm = &stat[open + 1..close];
            let fields: Vec<&str> = stat[close + 1..].split_whitespace().collect();
            if fields.get(1) != Some(&me.as_str()) || !comm.starts_with("youki:[") {
                continue;
            }
            if fields.first() == Some(&"Z") {
                let _ = waitpid(Pid::from_raw(pid), Some(WaitPidFlag::WNOHANG));
            } else if comm.starts_with("youki:[1") || failed {
                pending += 1;
            }
        }
        if pending == 0 {
            return;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// The workload executor run in the container's init process: `execve` with the spec's env
/// (argv[0] resolved against the spec's PATH) instead of rewriting the process environment
/// with `std::env::set_var` like libcontainer's `DefaultExecutor`.
#[derive(Clone)]
struct KrustExecutor;

fn resolve(name: &str, path_var: &str) -> Option<CString> {
    use std::os::unix::fs::PermissionsExt;
    let candidates: Vec<PathBuf> = if name.contains('/') {
        vec![PathBuf::from(name)]
    } else {
        path_var
            .split(':')
            .filter(|d| !d.is_empty())
            .map(|d| Path::new(d).join(name))
            .collect()
    };
    candidates
        .into_iter()
        .find(|p| {
            p.metadata()
                .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
                .unwrap_or(false)
        })
        .and_then(|p| CString::new(p.into_os_string().into_encoded_bytes()).ok())
}

impl Executor for KrustExecutor {
    fn exec(&self, spec: &oci_spec::runtime::Spec) -> Result<(), ExecutorError> {
        let process = spec.process().as_ref().ok_or(ExecutorError::InvalidArg)?;
        let args = process.args().as_ref().ok_or(ExecutorError::InvalidArg)?;
        let first = args.first().ok_or(ExecutorError::InvalidArg)?;
        // later duplicates win, as in libcontainer's env map
        let mut env: Vec<&str> = Vec::new();
        for e in process.env().as_deref().unwrap_or_default() {
            let key = e.split('=').next().unwrap_or("");
            env.retain(|x| x.split('=').next() != Some(key));
            env.push(e);
        }
        let path_var = env
            .iter()
            .find_map(|e| e.strip_prefix("PATH="))
            .unwrap_or("/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin");
        let exe = resolve(first, path_var).ok_or_else(|| {
            ExecutorError::Other(format!("executable {first:?} not found in PATH"))
        })?;
        let cstr = |s: &str| CString::new(s).map_err(|_| ExecutorError::InvalidArg);
        let argv = args
            .iter()
            .map(|a| cstr(a))
            .collect::<Result<Vec<_>, _>>()?;
        let envp = env.iter().map(|e| cstr(e)).collect::<Result<Vec<_>, _>>()?;
        let err = nix::unistd::execve(&exe, &argv, &envp).unwrap_err();
        Err(ExecutorError::Other(format!("execve {first:?}: {err}")))
    }

    fn validate(&self, spec: &oci_spec::runtime::Spec) -> Result<(), ExecutorValidationError> {
        DefaultExecutor {}.validate(spec)
    }

    fn setup_envs(&self, _envs: HashMap<String, String>) -> Result<(), ExecutorSetEnvsError> {
        Ok(())
    }
}
