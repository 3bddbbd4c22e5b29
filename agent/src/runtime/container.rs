//! Containers through libcontainer: create/start, reaping, stop, remove, exec.

use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::Utc;
use libcontainer::container::Container;
use nix::fcntl::OFlag;
use nix::mount::{mount, MsFlags};
use nix::sys::signal::{kill, Signal};
use nix::sys::wait::{waitid, waitpid, Id, WaitPidFlag, WaitStatus};
use nix::unistd::{pipe2, Pid};
use serde::{Deserialize, Serialize};
use tokio::io::AsyncReadExt;
use tokio::net::unix::pipe;
use tokio::sync::watch;

use super::helper::{self, HelperCommand, Request};
use super::mounts::{remove_dir_unmounted, unmount_all};
use super::{
    blocking, cgroups, check_id, shim, spec, ContainerSpec, ContainerState, IoContext, Runtime,
    RuntimeError, Sandbox,
};

/// One libcontainer operation at a time: the helper's stray children are told apart by name
/// only, and delete (in-process) must not race a create of the same id.
pub(super) static FORK_LOCK: Mutex<()> = Mutex::new(());

/// Output of [`Runtime::exec_sync`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ExecOutput {
    /// Exit status; 128+signal when killed by a signal.
    pub exit_code: i32,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
}

/// At most this much of each exec output stream is kept.
const EXEC_OUTPUT_LIMIT: usize = 16 << 20;

/// Runs `f` with tracing disabled on this thread (libcontainer's delete logs a lot at debug).
fn quiet<T>(f: impl FnOnce() -> T) -> T {
    tracing::subscriber::with_default(tracing::subscriber::NoSubscriber::default(), f)
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub(super) struct Record {
    id: String,
    pod_id: String,
    name: String,
    pub(super) uid: u32,
    pub(super) gid: u32,
    pub(super) additional_gids: Vec<u32>,
    pub(super) cwd: String,
    log_path: PathBuf,
    pid: Option<i32>,
    /// Start time of `pid` (field 22 of /proc/PID/stat), to recognize it after a restart.
    pid_start: Option<u64>,
    state: ContainerState,
}

/// A container the runtime knows about.
pub(crate) struct Entry {
    pub id: String,
    pub pod_id: String,
    dir: PathBuf,
    pub(super) record: Mutex<Record>,
    tx: watch::Sender<ContainerState>,
    /// The pid while it may be signalled: cleared (under this lock) before the process is
    /// reaped, so a signal never reaches a recycled pid.
    live_pid: Mutex<Option<i32>>,
}

impl Entry {
    fn new(dir: PathBuf, record: Record) -> Arc<Self> {
        let (tx, _) = watch::channel(record.state.clone());
        Arc::new(Entry {
            id: record.id.clone(),
            pod_id: record.pod_id.clone(),
            dir,
            live_pid: Mutex::new(None),
            record: Mutex::new(record),
            tx,
        })
    }

    pub(super) fn state(&self) -> ContainerState {
        self.tx.borrow().clone()
    }

    fn persist(&self, rec: &Record) {
        let file = self.dir.join("record.json");
        let tmp = self.dir.join("record.json.tmp");
        let data = serde_json::to_vec_pretty(rec).expect("json");
        if std::fs::write(&tmp, data)
            .and_then(|_| std::fs::rename(&tmp, &file))
            .is_err()
        {
            tracing::debug!(id = %self.id, "could not persist the container record");
        }
    }

    fn set_state(&self, state: ContainerState) {
        {
            let mut rec = self.record.lock().unwrap();
            rec.state = state.clone();
            if !state.is_running() {
                rec.pid = None;
                rec.pid_start = None;
            }
            self.persist(&rec);
        }
        self.tx.send_replace(state);
    }

    fn set_running(&self, pid: i32, pid_start: Option<u64>, started_at: chrono::DateTime<Utc>) {
        *self.live_pid.lock().unwrap() = Some(pid);
        let state = ContainerState::Running { pid, started_at };
        {
            let mut rec = self.record.lock().unwrap();
            rec.pid = Some(pid);
            rec.pid_start = pid_start;
            rec.state = state.clone();
            self.persist(&rec);
        }
        self.tx.send_replace(state);
    }

    fn signal(&self, sig: Signal) {
        let guard = self.live_pid.lock().unwrap();
        if let Some(pid) = *guard {
            let _ = kill(Pid::from_raw(pid), sig);
        }
    }

    fn finish(&self, exit_code: i32, signal: Option<i32>, reason: &str) {
        *self.live_pid.lock().unwrap() = None;
        let now = Utc::now();
        let started_at = match self.state() {
            ContainerState::Running { started_at, .. } => started_at,
            ContainerState::Exited { .. } => return,
            ContainerState::Created => now,
        };
        self.set_state(ContainerState::Exited {
            exit_code,
            signal,
            started_at,
            finished_at: now,
            reason: reason.to_string(),
        });
    }

    /// Waits until the container is not running any more (or `timeout` passes).
    async fn wait_stopped(&self, timeout: Duration) -> Option<ContainerState> {
        let mut rx = self.tx.subscribe();
        let fut = rx.wait_for(|s| !s.is_running() && !matches!(s, ContainerState::Created));
        let r = match tokio::time::timeout(timeout, fut).await {
            Ok(Ok(s)) => Some(s.clone()),
            _ => None,
        };
        r
    }
}

/// Start time of a process (clock ticks since boot), or `None` when it is gone or a zombie.
fn pid_start_time(pid: i32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    if fields.first() == Some(&"Z") || fields.first() == Some(&"X") {
        return None;
    }
    // rest starts at field 3 (state); starttime is field 22
    fields.get(19)?.parse().ok()
}

fn exit_of(status: WaitStatus) -> Option<(i32, Option<i32>)> {
    match status {
        WaitStatus::Exited(_, code) => Some((code, None)),
        WaitStatus::Signaled(_, sig, _) => Some((128 + sig as i32, Some(sig as i32))),
        _ => None,
    }
}

/// Waits for our child `pid` to exit; `before_reap` runs after it exited but before the zombie
/// is reaped (the pid cannot be recycled until then).
pub(super) fn wait_child(pid: i32, before_reap: impl FnOnce()) -> (i32, Option<i32>) {
    let p = Pid::from_raw(pid);
    loop {
        match waitid(Id::Pid(p), WaitPidFlag::WEXITED | WaitPidFlag::WNOWAIT) {
            Ok(_) => break,
            Err(nix::errno::Errno::EINTR) => continue,
            Err(_) => break, // ECHILD: not our child (any more); waitpid below says the same
        }
    }
    before_reap();
    loop {
        match waitpid(p, None) {
            Ok(st) => {
                if let Some(r) = exit_of(st) {
                    return r;
                }
            }
            Err(nix::errno::Errno::EINTR) => continue,
            Err(_) => return (-1, None),
        }
    }
}

fn reaper(entry: Arc<Entry>, pid: i32, mut shim: Option<std::process::Child>) {
    let (exit_code, signal) = wait_child(pid, || {
        *entry.live_pid.lock().unwrap() = None;
    });
    // Let the log shim drain the pipes first, so "Exited" means the log is complete. The pid
    // namespace died with its init, so the pipes close at once; the bound is for safety.
    let deadline = Instant::now() + Duration::from_secs(2);
    while let Some(child) = shim.as_mut() {
        match child.try_wait() {
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(5)),
            Ok(None) => {
                // Still copying after the deadline: reap it later rather than leave a zombie.
                let mut child = shim.take().expect("shim");
                std::thread::spawn(move || child.wait());
            }
            _ => shim = None,
        }
    }
    let reason = if exit_code == 0 {
        "Completed"
    } else if signal == Some(Signal::SIGKILL as i32)
        && cgroups::oom_killed(&entry.pod_id, &entry.id)
    {
        "OOMKilled"
    } else {
        "Error"
    };
    entry.finish(exit_code, signal, reason);
}

/// After an agent restart the container is no longer our child: poll its pid.
fn watch_foreign(entry: Arc<Entry>, pid: i32, start: Option<u64>) {
    let _ = std::thread::Builder::new()
        .name("krust-watch".into())
        .stack_size(64 * 1024)
        .spawn(move || loop {
            if !entry.state().is_running() {
                return;
            }
            let now = pid_start_time(pid);
            if now.is_none() || (start.is_some() && now != start) {
                entry.finish(-1, None, "Unknown");
                return;
            }
            std::thread::sleep(Duration::from_millis(500));
        });
}

struct Started {
    pid: i32,
    pid_start: Option<u64>,
    /// The container's shim (None only if it could not be started)
    shim: Option<std::process::Child>,
}

fn mount_rootfs(spec: &ContainerSpec, dir: &Path) -> Result<PathBuf, RuntimeError> {
    let rootfs = dir.join("rootfs");
    let upper = dir.join("upper");
    let work = dir.join("work");
    for d in [&rootfs, &upper, &work] {
        std::fs::create_dir_all(d).ctx(|| format!("creating {}", d.display()))?;
    }
    let mut lower = Vec::new();
    for l in spec.layers.iter().rev() {
        let s = l.to_string_lossy();
        if !l.is_absolute() || s.contains(':') || s.contains(',') {
            return Err(RuntimeError::InvalidSpec(format!(
                "unusable layer path {s:?}"
            )));
        }
        if !l.is_dir() {
            return Err(RuntimeError::InvalidSpec(format!(
                "layer {s} is not a directory"
            )));
        }
        lower.push(s.into_owned());
    }
    let opts = format!(
        "lowerdir={},upperdir={},workdir={}",
        lower.join(":"),
        upper.display(),
        work.display()
    );
    mount(
        Some("overlay"),
        &rootfs,
        Some("overlay"),
        MsFlags::empty(),
        Some(opts.as_str()),
    )
    .ctx(|| {
        format!(
            "mounting the overlay rootfs on {} ({opts})",
            rootfs.display()
        )
    })?;
    Ok(rootfs)
}

fn create_and_start(
    helper_cmd: &HelperCommand,
    lc_root: &Path,
    dir: &Path,
    sandbox: &Sandbox,
    spec: &ContainerSpec,
) -> Result<Started, RuntimeError> {
    let rootfs = mount_rootfs(spec, dir)?;
    let oci = spec::build(spec, sandbox, &rootfs)?;
    let config = dir.join("config.json");
    oci.save(&config)
        .map_err(|e| RuntimeError::Other(format!("writing {}: {e}", config.display())))?;
    if let Some(parent) = spec.log_path.parent() {
        std::fs::create_dir_all(parent).ctx(|| format!("creating {}", parent.display()))?;
    }
    // The shim takes the container's stdio over first (the pipes' far ends, or the console
    // socket), so nothing the container writes is lost and no end is left with us.
    let attach = shim::attach_socket(dir);
    let (stdio, fds) = if spec.tty {
        let console = attach.with_extension("console");
        let req = (None, None, None, Some(console.clone()));
        (shim::Stdio::Terminal { console, stdin: spec.stdin }, req)
    } else {
        let (out_r, out_w) = pipe2(OFlag::O_CLOEXEC).ctx(|| "pipe2".to_string())?;
        let (err_r, err_w) = pipe2(OFlag::O_CLOEXEC).ctx(|| "pipe2".to_string())?;
        let stdin = if spec.stdin { Some(pipe2(OFlag::O_CLOEXEC).ctx(|| "pipe2".to_string())?) } else { None };
        let stdio = shim::Stdio::Pipes { stdout: proc_fd(&out_r), stderr: proc_fd(&err_r), stdin: stdin.as_ref().map(|(_, w)| proc_fd(w)) };
        (stdio, (Some((out_r, out_w)), Some((err_r, err_w)), stdin, None))
    };
    let (out, err, stdin, console) = fds;
    let mut shim = shim::spawn(&helper_cmd.program, &helper_cmd.args, &spec.log_path, &attach, stdio, spec.stdin_once)
        .ctx(|| format!("starting the shim of container {}", spec.id))?;
    let dev_null = PathBuf::from("/dev/null");
    let req = Request::Create {
        id: spec.id.clone(),
        lc_root: lc_root.to_path_buf(),
        bundle: dir.to_path_buf(),
        stdout: out.as_ref().map(|(_, w)| proc_fd(w)).unwrap_or_else(|| dev_null.clone()),
        stderr: err.as_ref().map(|(_, w)| proc_fd(w)).unwrap_or_else(|| dev_null.clone()),
        stdin: stdin.as_ref().map(|(r, _)| proc_fd(r)),
        console_socket: console,
    };
    let pid = {
        let _fork = FORK_LOCK.lock().unwrap_or_else(|e| e.into_inner());
        helper::call(helper_cmd, &req)
    };
    // the container's ends now live in the container only (EOF when it exits); the shim has
    // its own copies of ours
    drop((out, err, stdin));
    let pid = match pid {
        Ok(pid) => pid,
        Err(e) => {
            let _ = shim.kill();
            let _ = shim.wait();
            return Err(match e {
                RuntimeError::Other(m) => RuntimeError::Other(format!("creating container {}: {m}", spec.id)),
                e => e,
            });
        }
    };
    Ok(Started {
        pid,
        pid_start: pid_start_time(pid),
        shim: Some(shim),
    })
}

/// The path under which the helper opens one of our fds.
pub(super) fn proc_fd(fd: &OwnedFd) -> PathBuf {
    use std::os::fd::AsRawFd;
    PathBuf::from(format!(
        "/proc/{}/fd/{}",
        std::process::id(),
        fd.as_raw_fd()
    ))
}

/// libcontainer delete (kills what is left, removes its cgroups and state), unmounts the rootfs
/// and removes the container directory.
fn destroy(lc_root: &Path, dir: &Path, id: &str) -> Result<(), RuntimeError> {
    let lc_dir = lc_root.join(id);
    if lc_dir.exists() {
        let _fork = FORK_LOCK.lock().unwrap_or_else(|e| e.into_inner());
        let res = quiet(|| Container::load(lc_dir.clone()).and_then(|mut c| c.delete(true)));
        if let Err(e) = res {
            // A state dir libcontainer cannot load (crash mid-create) is removed by hand.
            tracing::warn!(id, error = %e, "libcontainer delete failed; removing its state by hand");
            std::fs::remove_dir_all(&lc_dir).ctx(|| format!("removing {}", lc_dir.display()))?;
        }
    }
    unmount_all(&dir.join("rootfs"))?;
    remove_dir_unmounted(dir)
}

async fn read_capped(mut rx: pipe::Receiver) -> Vec<u8> {
    let mut out = Vec::new();
    let mut chunk = vec![0u8; 16 * 1024];
    loop {
        match rx.read(&mut chunk).await {
            Ok(0) | Err(_) => return out,
            Ok(n) => {
                let room = EXEC_OUTPUT_LIMIT.saturating_sub(out.len());
                out.extend_from_slice(&chunk[..n.min(room)]);
            }
        }
    }
}

impl Runtime {
    pub(super) fn container_dir(&self, id: &str) -> PathBuf {
        self.containers_dir().join(id)
    }

    pub(super) fn entry(&self, id: &str) -> Option<Arc<Entry>> {
        self.containers.lock().unwrap().get(id).cloned()
    }

    /// Connects to the shim of the running container `id` (`kubectl attach`): its output from
    /// now on, and its stdin and terminal when it has them.
    pub async fn attach(&self, id: &str) -> Result<shim::Attached, RuntimeError> {
        let entry = self.entry(id).ok_or_else(|| RuntimeError::ContainerNotFound(id.to_string()))?;
        if !entry.state().is_running() {
            return Err(RuntimeError::NotRunning { id: id.to_string() });
        }
        let socket = shim::attach_socket(&self.container_dir(id));
        shim::Attached::connect(&socket).await.ctx(|| format!("attaching to container {id} ({})", socket.display()))
    }

    /// The record of the running container `id` to run `argv` in (exec_sync, exec_stream).
    pub(super) fn exec_target(&self, id: &str, argv: &[String]) -> Result<Record, RuntimeError> {
        let entry = self.entry(id).ok_or_else(|| RuntimeError::ContainerNotFound(id.to_string()))?;
        if !entry.state().is_running() {
            return Err(RuntimeError::NotRunning { id: id.to_string() });
        }
        if argv.is_empty() {
            return Err(RuntimeError::InvalidSpec("exec: empty command".into()));
        }
        let rec = entry.record.lock().unwrap().clone();
        Ok(rec)
    }

    pub(crate) fn containers_of_pod(&self, pod_id: &str) -> Vec<String> {
        let mut ids: Vec<String> = self
            .containers
            .lock()
            .unwrap()
            .values()
            .filter(|e| e.pod_id == pod_id)
            .map(|e| e.id.clone())
            .collect();
        // containers left on disk without a record (crash mid-create) are found by their spec
        for id in self.list_containers() {
            if ids.contains(&id) {
                continue;
            }
            let cfg = self.container_dir(&id).join("config.json");
            if let Ok(s) = oci_spec::runtime::Spec::load(&cfg) {
                let cg = s.linux().as_ref().and_then(|l| l.cgroups_path().clone());
                if cg.is_some_and(|p| p.starts_with(cgroups::pod_cgroup_path(pod_id))) {
                    ids.push(id);
                }
            }
        }
        ids
    }

    /// Loads the records of an earlier agent (called by `new`).
    pub(crate) fn load_containers(&self) {
        for id in super::list_dir(&self.containers_dir()) {
            let dir = self.container_dir(&id);
            let Ok(data) = std::fs::read(dir.join("record.json")) else {
                continue;
            };
            let Ok(rec) = serde_json::from_slice::<Record>(&data) else {
                continue;
            };
            let (pid, start) = (rec.pid, rec.pid_start);
            let entry = Entry::new(dir, rec);
            match (entry.state(), pid) {
                (ContainerState::Running { .. }, Some(pid))
                    if pid_start_time(pid).is_some() && pid_start_time(pid) == start =>
                {
                    *entry.live_pid.lock().unwrap() = Some(pid);
                    watch_foreign(entry.clone(), pid, start);
                }
                (ContainerState::Exited { .. }, _) => {}
                _ => entry.finish(-1, None, "Unknown"),
            }
            self.containers.lock().unwrap().insert(id, entry);
        }
    }

    /// Creates and starts a container in the sandbox: overlay rootfs from the image layers, OCI
    /// spec from `spec`, stdout/stderr copied to `spec.log_path` in CRI format. Returns once the
    /// process runs (its state is `Running`).
    pub async fn start_container(
        &self,
        sandbox: &Sandbox,
        spec: &ContainerSpec,
    ) -> Result<(), RuntimeError> {
        check_id("container", &spec.id)?;
        check_id("pod", &spec.pod_id)?;
        if spec.pod_id != sandbox.pod_id {
            return Err(RuntimeError::InvalidSpec(format!(
                "container {} belongs to pod {}, not to sandbox {}",
                spec.id, spec.pod_id, sandbox.pod_id
            )));
        }
        if spec.layers.is_empty() {
            return Err(RuntimeError::InvalidSpec("no image layers".into()));
        }
        if !sandbox.dir.join("sandbox.json").exists() {
            return Err(RuntimeError::SandboxNotFound(sandbox.pod_id.clone()));
        }
        let dir = self.container_dir(&spec.id);
        let entry = {
            let mut map = self.containers.lock().unwrap();
            if map.contains_key(&spec.id) || dir.exists() {
                return Err(RuntimeError::ContainerExists(spec.id.clone()));
            }
            std::fs::create_dir_all(&dir).ctx(|| format!("creating {}", dir.display()))?;
            let entry = Entry::new(
                dir.clone(),
                Record {
                    id: spec.id.clone(),
                    pod_id: spec.pod_id.clone(),
                    name: spec.name.clone(),
                    uid: spec.uid,
                    gid: spec.gid,
                    additional_gids: spec.additional_gids.clone(),
                    cwd: spec::cwd(spec),
                    log_path: spec.log_path.clone(),
                    pid: None,
                    pid_start: None,
                    state: ContainerState::Created,
                },
            );
            entry.persist(&entry.record.lock().unwrap());
            map.insert(spec.id.clone(), entry.clone());
            entry
        };

        let t0 = Instant::now();
        let started = {
            let (helper_cmd, lc_root, dir, sandbox, spec) = (
                self.helper.clone(),
                self.libcontainer_dir(),
                dir.clone(),
                sandbox.clone(),
                spec.clone(),
            );
            blocking(move || {
                let r = create_and_start(&helper_cmd, &lc_root, &dir, &sandbox, &spec);
                if r.is_err() {
                    if let Err(e) = destroy(&lc_root, &dir, &spec.id) {
                        tracing::warn!(id = %spec.id, error = %e, "cleaning up a failed container");
                    }
                }
                r
            })
            .await
        };
        let started = match started {
            Ok(s) => s,
            Err(e) => {
                self.containers.lock().unwrap().remove(&spec.id);
                return Err(e);
            }
        };
        let started_at = Utc::now();
        entry.set_running(started.pid, started.pid_start, started_at);

        let pid = started.pid;
        let e2 = entry.clone();
        std::thread::Builder::new()
            .name("krust-reaper".into())
            .stack_size(256 * 1024)
            .spawn(move || reaper(e2, pid, started.shim))
            .ctx(|| "spawning the reaper thread".to_string())?;
        tracing::debug!(id = %spec.id, pid, elapsed = ?t0.elapsed(), "container started");
        Ok(())
    }

    /// The state of a container, `None` when unknown.
    pub fn state(&self, container_id: &str) -> Option<ContainerState> {
        self.entry(container_id).map(|e| e.state())
    }

    /// SIGTERM, wait up to `grace`, then SIGKILL; returns the final state. A container that is
    /// not running is left alone and its state returned.
    pub async fn stop_container(
        &self,
        container_id: &str,
        grace: Duration,
    ) -> Result<ContainerState, RuntimeError> {
        let entry = self
            .entry(container_id)
            .ok_or_else(|| RuntimeError::ContainerNotFound(container_id.to_string()))?;
        if !entry.state().is_running() {
            return Ok(entry.state());
        }
        entry.signal(Signal::SIGTERM);
        if let Some(s) = entry.wait_stopped(grace).await {
            return Ok(s);
        }
        entry.signal(Signal::SIGKILL);
        let after = Duration::from_secs(10);
        entry
            .wait_stopped(after)
            .await
            .ok_or(RuntimeError::Timeout {
                what: format!("stopping container {container_id}"),
                after,
            })
    }

    /// Removes a container: kills it if it still runs, libcontainer delete, unmounts the rootfs,
    /// removes its directories. The log file is kept. Idempotent.
    pub async fn remove_container(&self, container_id: &str) -> Result<(), RuntimeError> {
        check_id("container", container_id)?;
        if let Some(entry) = self.entry(container_id) {
            if entry.state().is_running() {
                entry.signal(Signal::SIGKILL);
                let after = Duration::from_secs(10);
                if entry.wait_stopped(after).await.is_none() {
                    return Err(RuntimeError::Timeout {
                        what: format!("killing container {container_id}"),
                        after,
                    });
                }
            }
        }
        let (lc_root, dir, id) = (
            self.libcontainer_dir(),
            self.container_dir(container_id),
            container_id.to_string(),
        );
        blocking(move || destroy(&lc_root, &dir, &id)).await?;
        self.containers.lock().unwrap().remove(container_id);
        Ok(())
    }

    /// Runs `argv` inside a running container (same namespaces, cgroup, user, env and cwd as
    /// its process) and returns its exit code and output. On timeout the process is killed and
    /// `RuntimeError::Timeout` returned.
    pub async fn exec_sync(
        &self,
        container_id: &str,
        argv: &[String],
        timeout: Duration,
    ) -> Result<ExecOutput, RuntimeError> {
        let rec = self.exec_target(container_id, argv)?;
        let lc_root = self.libcontainer_dir();
        let id = container_id.to_string();
        let args = argv.to_vec();
        let helper_cmd = self.helper.clone();
        let (pid, out_r, err_r) = blocking(move || {
            let (out_r, out_w) = pipe2(OFlag::O_CLOEXEC).ctx(|| "pipe2".to_string())?;
            let (err_r, err_w) = pipe2(OFlag::O_CLOEXEC).ctx(|| "pipe2".to_string())?;
            let req = Request::Exec {
                id: id.clone(),
                lc_root,
                args,
                uid: rec.uid,
                gid: rec.gid,
                additional_gids: rec.additional_gids.clone(),
                cwd: rec.cwd.clone(),
                stdout: proc_fd(&out_w),
                stderr: proc_fd(&err_w),
                stdin: None,
                console_socket: None,
                process: None,
            };
            let pid = {
                let _fork = FORK_LOCK.lock().unwrap_or_else(|e| e.into_inner());
                helper::call(&helper_cmd, &req)?
            };
            drop((out_w, err_w));
            Ok((pid, out_r, err_r))
        })
        .await?;
        let out_rx = pipe::Receiver::from_owned_fd(out_r).ctx(|| "exec stdout".to_string())?;
        let err_rx = pipe::Receiver::from_owned_fd(err_r).ctx(|| "exec stderr".to_string())?;
        let stdout = tokio::spawn(read_capped(out_rx));
        let stderr = tokio::spawn(read_capped(err_rx));
        // cleared before the exec process is reaped: a timeout kills only while it is ours
        let alive = Arc::new(Mutex::new(true));
        let alive2 = alive.clone();
        let waiter = tokio::task::spawn_blocking(move || {
            wait_child(pid, || *alive2.lock().unwrap() = false)
        });
        let run = async {
            let (code, _sig) = waiter
                .await
                .map_err(|e| RuntimeError::Other(format!("exec waiter: {e}")))?;
            // Output of processes the command left running in the background is not waited for.
            let grace = Duration::from_millis(500);
            let out = tokio::time::timeout(grace, stdout)
                .await
                .ok()
                .and_then(|r| r.ok());
            let err = tokio::time::timeout(grace, stderr)
                .await
                .ok()
                .and_then(|r| r.ok());
            Ok::<_, RuntimeError>(ExecOutput {
                exit_code: code,
                stdout: out.unwrap_or_default(),
                stderr: err.unwrap_or_default(),
            })
        };
        match tokio::time::timeout(timeout, run).await {
            Ok(r) => r,
            Err(_) => {
                // The waiter (still running on the blocking pool) reaps it.
                if *alive.lock().unwrap() {
                    let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
                }
                Err(RuntimeError::Timeout {
                    what: format!("exec {:?} in container {container_id}", argv),
                    after: timeout,
                })
            }
        }
    }
}
