//! The agent's Node: registered at start, its status (capacity, node info, addresses,
//! conditions, images) refreshed every [`STATUS_INTERVAL`], and its Lease in
//! `kube-node-lease` renewed every [`LEASE_INTERVAL`], as upstream's kubelet does with
//! `NodeLease` heartbeats. The node lifecycle controller reads the Lease to tell a live
//! node from a dead one.

use std::net::IpAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::{json, Value};

use crate::{AgentError, Config};

pub const LEASE_NAMESPACE: &str = "kube-node-lease";
/// Upstream's default `nodeLeaseDurationSeconds` is 40 and renews every 10 s.
pub const LEASE_DURATION_SECONDS: i32 = 40;
pub const LEASE_INTERVAL: Duration = Duration::from_secs(10);
pub const STATUS_INTERVAL: Duration = Duration::from_secs(10);
/// Pods a node runs at most (upstream's `--max-pods` default).
pub const MAX_PODS: u32 = 110;
const MANAGER: &str = "krust-agent";

pub fn params() -> PatchParams {
    PatchParams { field_manager: Some(MANAGER.into()), ..Default::default() }
}

/// Facts about this machine, read once at start.
#[derive(Debug, Clone)]
pub struct MachineInfo {
    pub cpus: usize,
    pub memory_bytes: u64,
    pub ephemeral_storage_bytes: u64,
    pub os_image: String,
    pub kernel: String,
    pub arch: String,
    pub machine_id: String,
    pub boot_id: String,
}

impl MachineInfo {
    pub fn read(data_dir: &Path) -> MachineInfo {
        let read = |p: &str| std::fs::read_to_string(p).map(|s| s.trim().to_string()).unwrap_or_default();
        let os_image = read("/etc/os-release")
            .lines()
            .find_map(|l| l.strip_prefix("PRETTY_NAME="))
            .map(|v| v.trim_matches('"').to_string())
            .unwrap_or_else(|| "Linux".into());
        let memory_bytes = read("/proc/meminfo")
            .lines()
            .find_map(|l| l.strip_prefix("MemTotal:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .map(|kb| kb * 1024)
            .unwrap_or(0);
        let ephemeral_storage_bytes = nix::sys::statvfs::statvfs(data_dir)
            .map(|s| s.blocks() as u64 * s.fragment_size() as u64)
            .unwrap_or(0);
        MachineInfo {
            cpus: std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
            memory_bytes,
            ephemeral_storage_bytes,
            os_image,
            kernel: read("/proc/sys/kernel/osrelease"),
            arch: go_arch(std::env::consts::ARCH).into(),
            machine_id: read("/etc/machine-id"),
            boot_id: read("/proc/sys/kernel/random/boot_id"),
        }
    }
}

/// Kubernetes names architectures as Go does.
fn go_arch(rust: &str) -> &str {
    match rust {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "powerpc64" => "ppc64le",
        other => other,
    }
}

/// The Node this agent registers: labels and addresses; the status follows separately.
fn node_object(config: &Config, info: &MachineInfo) -> Value {
    let mut labels = serde_json::Map::new();
    labels.insert("kubernetes.io/hostname".into(), json!(config.node_name));
    labels.insert("kubernetes.io/os".into(), json!("linux"));
    labels.insert("kubernetes.io/arch".into(), json!(info.arch));
    labels.insert("beta.kubernetes.io/os".into(), json!("linux"));
    labels.insert("beta.kubernetes.io/arch".into(), json!(info.arch));
    for (k, v) in &config.node_labels {
        labels.insert(k.clone(), json!(v));
    }
    json!({
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": config.node_name, "labels": labels},
        "spec": {},
    })
}

/// What the agent reports in `status`: everything but the conditions' heartbeat stays the
/// same between reports, so unchanged reports cost one small write.
pub fn node_status(config: &Config, info: &MachineInfo, images: Value, now: &str, ready_since: &str) -> Value {
    let capacity = json!({
        "cpu": info.cpus.to_string(),
        "memory": format!("{}Ki", info.memory_bytes / 1024),
        "pods": MAX_PODS.to_string(),
        "ephemeral-storage": format!("{}Ki", info.ephemeral_storage_bytes / 1024),
    });
    let condition = |type_: &str, status: &str, reason: &str, message: &str, since: &str| {
        json!({"type": type_, "status": status, "reason": reason, "message": message,
               "lastHeartbeatTime": now, "lastTransitionTime": since})
    };
    json!({
        "capacity": capacity,
        "allocatable": capacity,
        "addresses": addresses(config.node_ip, &config.node_name),
        "daemonEndpoints": {"kubeletEndpoint": {"Port": config.kubelet_port}},
        "nodeInfo": {
            "machineID": info.machine_id,
            "systemUUID": info.machine_id,
            "bootID": info.boot_id,
            "kernelVersion": info.kernel,
            "osImage": info.os_image,
            "containerRuntimeVersion": format!("krust://{}", env!("CARGO_PKG_VERSION")),
            "kubeletVersion": crate::KUBELET_VERSION,
            "kubeProxyVersion": crate::KUBELET_VERSION,
            "operatingSystem": "linux",
            "architecture": info.arch,
        },
        "conditions": [
            condition("MemoryPressure", "False", "KubeletHasSufficientMemory", "kubelet has sufficient memory available", ready_since),
            condition("DiskPressure", "False", "KubeletHasNoDiskPressure", "kubelet has no disk pressure", ready_since),
            condition("PIDPressure", "False", "KubeletHasSufficientPID", "kubelet has sufficient PID available", ready_since),
            condition("Ready", "True", "KubeletReady", "kubelet is posting ready status", ready_since),
        ],
        "images": images,
    })
}

fn addresses(ip: IpAddr, name: &str) -> Value {
    json!([{"type": "InternalIP", "address": ip.to_string()}, {"type": "Hostname", "address": name}])
}

/// Creates the Node if it does not exist (an existing one is kept: its spec may carry a
/// pod CIDR, taints or `unschedulable` set by others), and returns it.
pub async fn register(client: &kube::Client, config: &Config, info: &MachineInfo) -> Result<Node, AgentError> {
    let api = Api::<Node>::all(client.clone());
    let node: Node = serde_json::from_value(node_object(config, info)).map_err(|e| AgentError::Other(e.to_string()))?;
    match api.create(&PostParams::default(), &node).await {
        Ok(n) => {
            tracing::info!(node = %config.node_name, "registered node");
            Ok(n)
        }
        Err(kube::Error::Api(s)) if s.code == 409 => {
            // Keep labels current (a restarted agent may carry new ones).
            let labels = node_object(config, info)["metadata"]["labels"].clone();
            let patch = json!({"metadata": {"labels": labels}});
            let n = api.patch(&config.node_name, &params(), &Patch::Merge(&patch)).await.map_err(AgentError::api("updating the node"))?;
            tracing::info!(node = %config.node_name, "node already registered");
            Ok(n)
        }
        Err(e) => Err(AgentError::api("registering the node")(e)),
    }
}

/// Waits until node IPAM has given this node a pod CIDR.
pub async fn wait_for_pod_cidr(client: &kube::Client, name: &str) -> Result<String, AgentError> {
    let api = Api::<Node>::all(client.clone());
    let mut logged = false;
    loop {
        let node = api.get(name).await.map_err(AgentError::api("reading the node"))?;
        if let Some(cidr) = node.spec.and_then(|s| s.pod_cidr) {
            return Ok(cidr);
        }
        if !logged {
            tracing::info!(node = name, "waiting for a pod CIDR from the controller-manager");
            logged = true;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Renews the node's Lease forever (creating it when missing).
pub async fn heartbeat(client: kube::Client, name: String, node_uid: Option<String>) {
    let api = Api::<Lease>::namespaced(client, LEASE_NAMESPACE);
    loop {
        if let Err(e) = renew(&api, &name, node_uid.as_deref()).await {
            tracing::warn!(error = %e, "renewing the node lease failed");
        }
        tokio::time::sleep(LEASE_INTERVAL).await;
    }
}

async fn renew(api: &Api<Lease>, name: &str, node_uid: Option<&str>) -> Result<(), kube::Error> {
    let now = micro_now();
    let spec = json!({"holderIdentity": name, "leaseDurationSeconds": LEASE_DURATION_SECONDS, "renewTime": now});
    let patch = json!({"spec": spec});
    match api.patch(name, &params(), &Patch::Merge(&patch)).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 404 => {
            // Owned by the Node, so the garbage collector removes it with the Node.
            let owner = node_uid.map(|uid| json!([{"apiVersion": "v1", "kind": "Node", "name": name, "uid": uid}]));
            let lease = json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                "metadata": {"name": name, "namespace": LEASE_NAMESPACE, "ownerReferences": owner.unwrap_or(json!([]))},
                "spec": spec});
            let lease: Lease = serde_json::from_value(lease).expect("a Lease built from known fields");
            api.create(&PostParams::default(), &lease).await.map(|_| ())
        }
        Err(e) => Err(e),
    }
}

/// Posts the node status now and every [`STATUS_INTERVAL`].
pub async fn report_status(client: kube::Client, config: Arc<Config>, info: MachineInfo, images: Arc<dyn Fn() -> Value + Send + Sync>) {
    let api = Api::<Node>::all(client);
    let ready_since = now_rfc3339();
    loop {
        let status = node_status(&config, &info, images(), &now_rfc3339(), &ready_since);
        let patch = json!({"status": status});
        if let Err(e) = api.patch_status(&config.node_name, &params(), &Patch::Merge(&patch)).await {
            tracing::warn!(error = %e, "updating the node status failed");
        }
        tokio::time::sleep(STATUS_INTERVAL).await;
    }
}

pub fn now_rfc3339() -> String {
    chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

fn micro_now() -> String {
    chrono::Utc::now().format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string()
}
