//! Pod sandboxes: namespaces persisted as bind-mounted nsfs files (no pause process),
//! a shared /dev/shm, hostname/hosts/resolv.conf files and the CNI attachment.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Instant;

use nix::mount::{mount, MsFlags};
use nix::sched::{unshare, CloneFlags};

use super::cni::{self, CniState};
use super::mounts::{is_mounted, remove_dir_unmounted, unmount_all};
use super::{blocking, cgroups, check_id, IoContext, Runtime, RuntimeError, Sandbox, SandboxSpec};

const SANDBOX_FILE: &str = "sandbox.json";
const CNI_FILE: &str = "cni.json";

fn write_file(path: &Path, contents: &str) -> Result<(), RuntimeError> {
    std::fs::write(path, contents).ctx(|| format!("writing {}", path.display()))
}

/// Creates the namespaces in a fresh OS thread (unshare is per thread for net/ipc/uts) and
/// bind-mounts them onto the given files. The thread exits afterwards, so no pool thread is ever
/// left in a pod's namespaces.
fn create_namespaces(
    net: Option<&Path>,
    ipc: &Path,
    uts: Option<&Path>,
    hostname: &str,
) -> Result<(), RuntimeError> {
    let mut targets: Vec<(&'static str, PathBuf)> = vec![("ipc", ipc.to_path_buf())];
    let mut flags = CloneFlags::CLONE_NEWIPC;
    if let Some(n) = net {
        flags |= CloneFlags::CLONE_NEWNET;
        targets.push(("net", n.to_path_buf()));
    }
    if let Some(u) = uts {
        flags |= CloneFlags::CLONE_NEWUTS;
        targets.push(("uts", u.to_path_buf()));
    }
    for (_, t) in &targets {
        std::fs::File::create(t).ctx(|| format!("creating {}", t.display()))?;
    }
    let hostname = hostname.to_string();
    let set_hostname = uts.is_some();
    std::thread::Builder::new()
        .name("krust-netns".into())
        .spawn(move || -> Result<(), RuntimeError> {
            unshare(flags).ctx(|| "unshare(net/ipc/uts)".to_string())?;
            if set_hostname {
                nix::unistd::sethostname(&hostname).ctx(|| format!("sethostname({hostname})"))?;
            }
            for (ns, target) in &targets {
                let src = format!("/proc/thread-self/ns/{ns}");
                mount(
                    Some(src.as_str()),
                    target,
                    None::<&str>,
                    MsFlags::MS_BIND,
                    None::<&str>,
                )
                .ctx(|| format!("bind-mounting {src} onto {}", target.display()))?;
            }
            Ok(())
        })
        .ctx(|| "spawning the namespace thread".to_string())?
        .join()
        .map_err(|_| RuntimeError::Other("namespace thread panicked".into()))?
}

fn resolv_conf(spec: &SandboxSpec) -> String {
    match &spec.dns {
        None => std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default(),
        Some(dns) => {
            let mut s = String::new();
            if !dns.searches.is_empty() {
                let _ = writeln!(s, "search {}", dns.searches.join(" "));
            }
            for ns in &dns.nameservers {
                let _ = writeln!(s, "nameserver {ns}");
            }
            if !dns.options.is_empty() {
                let _ = writeln!(s, "options {}", dns.options.join(" "));
            }
            s
        }
    }
}

fn hosts_file(spec: &SandboxSpec, ip: Option<std::net::IpAddr>) -> String {
    let mut s = String::from(
        "# Kubernetes-managed hosts file.\n127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\nfe00::0\tip6-localnet\nfe00::0\tip6-mcastprefix\nfe00::1\tip6-allnodes\nfe00::2\tip6-allrouters\n",
    );
    if let Some(ip) = ip {
        let _ = writeln!(s, "{ip}\t{}", spec.hostname);
    }
    for (ip, names) in &spec.hosts_entries {
        let _ = writeln!(s, "{ip}\t{names}");
    }
    s
}

impl Runtime {
    fn sandbox_dir(&self, pod_id: &str) -> PathBuf {
        self.sandboxes_dir().join(pod_id)
    }

    /// The sandbox of a pod, if it was created completely.
    pub fn sandbox(&self, pod_id: &str) -> Option<Sandbox> {
        let file = self.sandbox_dir(pod_id).join(SANDBOX_FILE);
        let data = std::fs::read(file).ok()?;
        serde_json::from_slice(&data).ok()
    }

    /// Creates (idempotently) the pod sandbox: net (unless host network), ipc and uts (unless
    /// host network) namespaces, each persisted by bind-mounting /proc/thread-self/ns/X onto a
    /// file in the sandbox dir; then CNI ADD. A sandbox that already exists is returned as is.
    pub async fn run_sandbox(&self, spec: &SandboxSpec) -> Result<Sandbox, RuntimeError> {
        check_id("pod", &spec.pod_id)?;
        let lock = self.pod_lock(&spec.pod_id);
        let _guard = lock.lock().await;
        if let Some(sb) = self.sandbox(&spec.pod_id) {
            return Ok(sb);
        }
        let t0 = Instant::now();
        let dir = self.sandbox_dir(&spec.pod_id);
        let ns_dir = dir.join("ns");
        let mut sb = Sandbox {
            pod_id: spec.pod_id.clone(),
            ip: None,
            dir: dir.clone(),
            hostname: spec.hostname.clone(),
            host_network: spec.host_network,
            netns: (!spec.host_network).then(|| ns_dir.join("net")),
            ipcns: ns_dir.join("ipc"),
            utsns: (!spec.host_network).then(|| ns_dir.join("uts")),
        };

        // A partial sandbox from an earlier failed attempt is taken down first.
        if dir.exists() {
            self.teardown_sandbox(&spec.pod_id).await?;
        }

        let result = self.setup_sandbox(spec, &mut sb).await;
        match result {
            Ok(()) => {
                tracing::debug!(pod = %spec.pod_id, ip = ?sb.ip, elapsed = ?t0.elapsed(), "sandbox ready");
                Ok(sb)
            }
            Err(e) => {
                if let Err(e2) = self.teardown_sandbox(&spec.pod_id).await {
                    tracing::warn!(pod = %spec.pod_id, error = %e2, "cleaning up a failed sandbox");
                }
                Err(e)
            }
        }
    }

    async fn setup_sandbox(
        &self,
        spec: &SandboxSpec,
        sb: &mut Sandbox,
    ) -> Result<(), RuntimeError> {
        let local = {
            let spec = spec.clone();
            let sb = sb.clone();
            move || -> Result<(), RuntimeError> {
                std::fs::create_dir_all(sb.dir.join("ns"))
                    .ctx(|| format!("creating {}", sb.dir.display()))?;
                let host_name;
                let hostname = if sb.host_network {
                    host_name = nix::unistd::gethostname()
                        .map(|h| h.to_string_lossy().into_owned())
                        .unwrap_or_else(|_| spec.hostname.clone());
                    &host_name
                } else {
                    &spec.hostname
                };
                write_file(&sb.hostname_file(), &format!("{hostname}\n"))?;
                write_file(&sb.resolv_conf_file(), &resolv_conf(&spec))?;
                write_file(&sb.hosts_file(), &hosts_file(&spec, None))?;
                let shm = sb.shm_dir();
                std::fs::create_dir_all(&shm).ctx(|| format!("creating {}", shm.display()))?;
                mount(
                    Some("shm"),
                    &shm,
                    Some("tmpfs"),
                    MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
                    Some("mode=1777,size=65536k"),
                )
                .ctx(|| format!("mounting tmpfs on {}", shm.display()))?;
                create_namespaces(
                    sb.netns.as_deref(),
                    &sb.ipcns,
                    sb.utsns.as_deref(),
                    &spec.hostname,
                )
            }
        };
        blocking(local).await?;

        if let Some(netns) = &sb.netns {
            let (state, ip) =
                match cni::add(&self.cni, &sb.pod_id, netns, &spec.port_mappings).await {
                    Ok(r) => r,
                    Err(e) => return Err(e),
                };
            let data = serde_json::to_vec_pretty(&state).expect("json");
            std::fs::write(sb.dir.join(CNI_FILE), data)
                .ctx(|| format!("writing {}", sb.dir.join(CNI_FILE).display()))?;
            sb.ip = ip;
            if ip.is_none() {
                return Err(RuntimeError::Cni {
                    plugin: "bridge".into(),
                    command: "ADD".into(),
                    message: "result has no IP address".into(),
                });
            }
            write_file(&sb.hosts_file(), &hosts_file(spec, ip))?;
        }
        let data = serde_json::to_vec_pretty(&*sb).expect("json");
        let file = sb.dir.join(SANDBOX_FILE);
        std::fs::write(&file, data).ctx(|| format!("writing {}", file.display()))?;
        Ok(())
    }

    /// CNI DEL, unmounts and removes the namespace files and the sandbox dir, removes the pod
    /// cgroup in every hierarchy. Containers of the pod still known are killed and removed first.
    /// Idempotent.
    pub async fn remove_sandbox(&self, pod_id: &str) -> Result<(), RuntimeError> {
        check_id("pod", pod_id)?;
        let lock = self.pod_lock(pod_id);
        let _guard = lock.lock().await;
        let leftovers: Vec<String> = self.containers_of_pod(pod_id);
        for id in leftovers {
            self.remove_container(&id).await?;
        }
        self.teardown_sandbox(pod_id).await?;
        self.pod_locks.lock().unwrap().remove(pod_id);
        Ok(())
    }

    async fn teardown_sandbox(&self, pod_id: &str) -> Result<(), RuntimeError> {
        let dir = self.sandbox_dir(pod_id);
        let cni_file = dir.join(CNI_FILE);
        if let Ok(data) = std::fs::read(&cni_file) {
            if let Ok(state) = serde_json::from_slice::<CniState>(&data) {
                let netns = dir.join("ns").join("net");
                let netns = is_mounted(&netns).then_some(netns);
                cni::del(&self.cni, &state, netns.as_deref()).await?;
            }
            std::fs::remove_file(&cni_file).ctx(|| format!("removing {}", cni_file.display()))?;
        }
        let pod = pod_id.to_string();
        blocking(move || {
            for ns in ["net", "ipc", "uts"] {
                unmount_all(&dir.join("ns").join(ns))?;
            }
            remove_dir_unmounted(&dir)?;
            cgroups::remove_pod_cgroups(&pod)
        })
        .await
    }
}
