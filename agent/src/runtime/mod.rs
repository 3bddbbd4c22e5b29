//! The node agent's container runtime: pod sandboxes, CNI networking and containers run
//! through youki's `libcontainer` (no pause process; a small shim per container).
//!
//! **The binary must call [`run_helper_if_requested`] first thing in `main()`**: container
//! create/start and exec run in a short-lived single-threaded re-exec of the agent binary (the
//! "helper", see `helper.rs` for why); the container processes are still children of the agent.
//! [`Runtime::with_helper`] points elsewhere (tests use their own binary).
//!
//! Layout under `root` (e.g. `DATA_DIR/agent/containers`):
//!
//! ```text
//! sandboxes/<pod id>/sandbox.json     the Sandbox (written last: its presence = complete)
//!                    ns/{net,ipc,uts} namespace files (bind mounts of /proc/thread-self/ns/X)
//!                    shm/             a tmpfs, bind-mounted as /dev/shm into every container
//!                    hostname hosts resolv.conf
//!                    cni.json         what CNI ADD did (configs + results), for CNI DEL
//! containers/<id>/config.json         the OCI bundle (this directory is the bundle)
//!                 rootfs/ upper/ work/  the overlay root filesystem
//!                 record.json         our state of the container (survives agent restarts)
//! libcontainer/<id>/                  libcontainer's own state
//! ```
//!
//! Cgroups: every container gets `linux.cgroupsPath = /krust/pods/<pod id>/<container id>`;
//! `remove_sandbox` removes `/krust/pods/<pod id>` in every mounted hierarchy.
//!
//! The container init process is a child of the agent (libcontainer `as_sibling`); a reaper thread per container
//! `waitpid`s it and records the exit. Its stdio (pipes, or a terminal with `tty`) is held by
//! its shim (a re-exec of the same binary, one per container, in its own process group; see
//! `shim.rs`), which writes the CRI log file, serves attach, and outlives the agent. After an
//! agent restart, containers that are still running keep running, logging and attachable, but
//! their exit code is unknown (they are no longer the agent's children).

mod cgroups;
mod cni;
mod container;
mod exec;
mod helper;
mod logs;
mod mounts;
mod sandbox;
pub(crate) mod shim;
mod spec;
pub mod stats;

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

pub use container::ExecOutput;
pub use shim::{AttachInput, AttachOutput, Attached};
pub use exec::{exec_start_failure, ExecProcess, ExecReader, ExecRequest, ExecWriter, Terminal};
pub use helper::{run_helper_if_requested, HelperCommand, HELPER_ENV};

/// How pods are attached to the node's network (CNI bridge + host-local IPAM).
#[derive(Clone, Debug)]
pub struct CniConfig {
    /// Directory with the CNI plugin binaries, usually `/usr/lib/cni`.
    pub plugin_dir: PathBuf,
    /// Linux bridge name, usually `cni0`.
    pub bridge: String,
    /// This node's pod range, e.g. `10.42.0.0/24`.
    pub pod_cidr: String,
    /// CNI state: host-local's allocations live in `state_dir/ipam/<network name>/`.
    pub state_dir: PathBuf,
    pub mtu: Option<u32>,
}

impl CniConfig {
    /// The network name used in the CNI configs (host-local keys its data by it).
    pub const NETWORK_NAME: &'static str = "krust";

    /// host-local's data directory (one file per allocated IP under `<dir>/krust/`).
    pub fn ipam_data_dir(&self) -> PathBuf {
        self.state_dir.join("ipam")
    }
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct PortMapping {
    pub host_port: u16,
    pub container_port: u16,
    /// `tcp` or `udp`
    pub protocol: String,
    pub host_ip: Option<String>,
}

/// resolv.conf contents for the pod. `None` in [`SandboxSpec::dns`] copies the host's file.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct DnsConfig {
    pub nameservers: Vec<String>,
    pub searches: Vec<String>,
    pub options: Vec<String>,
}

#[derive(Clone, Debug, Default)]
pub struct SandboxSpec {
    /// The pod's uid.
    pub pod_id: String,
    pub hostname: String,
    pub host_network: bool,
    pub port_mappings: Vec<PortMapping>,
    /// Written to `resolv.conf` in the sandbox dir; `None` copies the host's /etc/resolv.conf.
    pub dns: Option<DnsConfig>,
    /// Extra /etc/hosts lines: (ip, names separated by spaces).
    pub hosts_entries: Vec<(String, String)>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Sandbox {
    pub pod_id: String,
    /// The pod IP (from CNI); `None` for host-network pods.
    pub ip: Option<IpAddr>,
    /// `root/sandboxes/<pod id>`
    pub dir: PathBuf,
    pub hostname: String,
    pub host_network: bool,
    /// Network namespace file; `None` for host-network pods.
    pub netns: Option<PathBuf>,
    pub ipcns: PathBuf,
    /// UTS namespace file; `None` for host-network pods (they share the node's hostname).
    pub utsns: Option<PathBuf>,
}

impl Sandbox {
    pub fn hostname_file(&self) -> PathBuf {
        self.dir.join("hostname")
    }
    pub fn hosts_file(&self) -> PathBuf {
        self.dir.join("hosts")
    }
    pub fn resolv_conf_file(&self) -> PathBuf {
        self.dir.join("resolv.conf")
    }
    pub fn shm_dir(&self) -> PathBuf {
        self.dir.join("shm")
    }
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Mount {
    pub source: PathBuf,
    pub destination: String,
    pub read_only: bool,
}

#[derive(Clone, Debug, Default)]
pub struct ContainerSpec {
    /// Unique; the kubelet uses `<pod uid>-<container name>-<restart count>`.
    pub id: String,
    pub pod_id: String,
    pub name: String,
    /// Image layer directories, base first.
    pub layers: Vec<PathBuf>,
    /// Resolved argv.
    pub args: Vec<String>,
    /// `K=V`; `PATH` gets a default when missing.
    pub env: Vec<String>,
    /// Working directory; empty means `/`.
    pub cwd: String,
    pub uid: u32,
    pub gid: u32,
    pub additional_gids: Vec<u32>,
    pub mounts: Vec<Mount>,
    pub readonly_rootfs: bool,
    pub privileged: bool,
    /// `NET_ADMIN` or `CAP_NET_ADMIN`, or `ALL`.
    pub cap_add: Vec<String>,
    pub cap_drop: Vec<String>,
    pub cpu_shares: Option<u64>,
    pub cpu_quota: Option<i64>,
    pub cpu_period: Option<u64>,
    pub memory_limit: Option<i64>,
    /// CRI log file: `<RFC3339Nano> stdout|stderr F|P <line>`.
    pub log_path: PathBuf,
    /// A terminal for the process (its master held by the shim).
    pub tty: bool,
    /// Stdin open for attached clients (else /dev/null).
    pub stdin: bool,
    /// `stdinOnce`: stdin closes after the first attached session that used it.
    pub stdin_once: bool,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub enum ContainerState {
    Created,
    Running {
        pid: i32,
        started_at: DateTime<Utc>,
    },
    Exited {
        /// The exit status; 128+signal when killed by a signal; -1 when unknown.
        exit_code: i32,
        signal: Option<i32>,
        started_at: DateTime<Utc>,
        finished_at: DateTime<Utc>,
        /// "Completed" | "Error" | "OOMKilled" | "Unknown"
        reason: String,
    },
}

impl ContainerState {
    pub fn is_running(&self) -> bool {
        matches!(self, ContainerState::Running { .. })
    }
    pub fn is_exited(&self) -> bool {
        matches!(self, ContainerState::Exited { .. })
    }
}

#[derive(thiserror::Error, Debug)]
pub enum RuntimeError {
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{context}: {source}")]
    Sys {
        context: String,
        #[source]
        source: nix::Error,
    },
    #[error("libcontainer: {context}: {source}")]
    Libcontainer {
        context: String,
        #[source]
        source: libcontainer::error::LibcontainerError,
    },
    #[error("CNI {plugin} {command} failed: {message}")]
    Cni {
        plugin: String,
        command: String,
        message: String,
    },
    #[error("invalid spec: {0}")]
    InvalidSpec(String),
    #[error("sandbox {0} not found")]
    SandboxNotFound(String),
    #[error("container {0} not found")]
    ContainerNotFound(String),
    #[error("container {0} already exists")]
    ContainerExists(String),
    #[error("container {id} is not running")]
    NotRunning { id: String },
    #[error("{what} timed out after {after:?}")]
    Timeout { what: String, after: Duration },
    #[error("{0}")]
    Other(String),
}

pub(crate) trait IoContext<T> {
    fn ctx(self, context: impl FnOnce() -> String) -> Result<T, RuntimeError>;
}

impl<T> IoContext<T> for Result<T, std::io::Error> {
    fn ctx(self, context: impl FnOnce() -> String) -> Result<T, RuntimeError> {
        self.map_err(|source| RuntimeError::Io {
            context: context(),
            source,
        })
    }
}

impl<T> IoContext<T> for Result<T, nix::Error> {
    fn ctx(self, context: impl FnOnce() -> String) -> Result<T, RuntimeError> {
        self.map_err(|source| RuntimeError::Sys {
            context: context(),
            source,
        })
    }
}

/// Runs a blocking closure on tokio's blocking pool.
pub(crate) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, RuntimeError> + Send + 'static,
) -> Result<T, RuntimeError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| RuntimeError::Other(format!("blocking task failed: {e}")))?
}

/// The container runtime of one node. `Send + Sync`; share it through an `Arc`.
pub struct Runtime {
    root: PathBuf,
    cni: CniConfig,
    helper: HelperCommand,
    containers: Mutex<HashMap<String, Arc<container::Entry>>>,
    /// One lock per pod id, so concurrent `run_sandbox`/`remove_sandbox` calls of one pod serialize.
    pod_locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

impl std::fmt::Debug for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runtime").field("root", &self.root).finish()
    }
}

impl Runtime {
    /// Opens (creating if needed) the runtime state under `root` and loads what an earlier
    /// agent left there: containers still running keep `Running` (watched by polling their
    /// pid), containers whose process is gone become `Exited { exit_code: -1, reason: "Unknown" }`.
    pub fn new(root: PathBuf, cni: CniConfig) -> Result<Self, RuntimeError> {
        for d in ["sandboxes", "containers", "libcontainer"] {
            let p = root.join(d);
            std::fs::create_dir_all(&p).ctx(|| format!("creating {}", p.display()))?;
        }
        std::fs::create_dir_all(&cni.state_dir)
            .ctx(|| format!("creating {}", cni.state_dir.display()))?;
        let rt = Runtime {
            root,
            cni,
            helper: HelperCommand::default(),
            containers: Mutex::new(HashMap::new()),
            pod_locks: Mutex::new(HashMap::new()),
        };
        rt.load_containers();
        Ok(rt)
    }

    /// Sets how the runtime helper is started (default: `/proc/self/exe`, whose `main` must
    /// call [`run_helper_if_requested`] first thing). See the `helper` module.
    pub fn with_helper(mut self, helper: HelperCommand) -> Self {
        self.helper = helper;
        self
    }

    pub fn root(&self) -> &std::path::Path {
        &self.root
    }

    pub fn cni_config(&self) -> &CniConfig {
        &self.cni
    }

    pub(crate) fn sandboxes_dir(&self) -> PathBuf {
        self.root.join("sandboxes")
    }
    pub(crate) fn containers_dir(&self) -> PathBuf {
        self.root.join("containers")
    }
    pub(crate) fn libcontainer_dir(&self) -> PathBuf {
        self.root.join("libcontainer")
    }

    pub(crate) fn pod_lock(&self, pod_id: &str) -> Arc<tokio::sync::Mutex<()>> {
        self.pod_locks
            .lock()
            .unwrap()
            .entry(pod_id.to_string())
            .or_default()
            .clone()
    }

    /// Pod ids of every sandbox on disk (complete or not).
    pub fn list_sandboxes(&self) -> Vec<String> {
        list_dir(&self.sandboxes_dir())
    }

    /// Ids of every container the runtime knows about (on disk).
    pub fn list_containers(&self) -> Vec<String> {
        let mut ids = list_dir(&self.containers_dir());
        for id in self.containers.lock().unwrap().keys() {
            if !ids.contains(id) {
                ids.push(id.clone());
            }
        }
        ids.sort();
        ids
    }
}

/// Validates an id used as a file name.
pub(crate) fn check_id(kind: &str, id: &str) -> Result<(), RuntimeError> {
    let ok = !id.is_empty()
        && id.len() <= 200
        && id != "."
        && id != ".."
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if ok {
        Ok(())
    } else {
        Err(RuntimeError::InvalidSpec(format!(
            "invalid {kind} id {id:?}"
        )))
    }
}

fn list_dir(dir: &std::path::Path) -> Vec<String> {
    let mut out: Vec<String> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .filter(|e| e.path().is_dir())
                .filter_map(|e| e.file_name().into_string().ok())
                .collect()
        })
        .unwrap_or_default();
    out.sort();
    out
}
