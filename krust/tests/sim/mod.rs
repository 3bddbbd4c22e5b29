//! Simulated nodes for workload tests, until krust has a node agent: registers Node objects
//! (Ready, with capacity and allocatable cpu/memory/pods) and acts as their fake kubelet —
//! pods bound to them are marked Running and Ready with a podIP through `pods/status`, and
//! pods being deleted are finalized by deleting them with `gracePeriodSeconds: 0`.
//!
//! It runs on its own thread with a kube client from the server's admin kubeconfig, polling
//! pods every 100 ms; dropping it stops the thread.
//!
//! A pod annotated [`EXIT_CODE`] (`"0"`, `"1"`, ...) finishes [`RUN_SECONDS`] (default 1)
//! after it started running, as a container exiting would: phase Succeeded (exit code 0) or
//! Failed, Ready false, containers `terminated` with that exit code. Finished pods are left
//! as they are. Other pods run until deleted.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::ResourceExt;
use serde_json::json;

/// Annotation making a simulated pod's containers exit with this code (see the module doc).
pub const EXIT_CODE: &str = "sim.krust.io/exit-code";
/// Annotation: seconds a pod with [`EXIT_CODE`] runs before it finishes (default 1).
pub const RUN_SECONDS: &str = "sim.krust.io/run-seconds";

/// One simulated node.
pub struct SimNode {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    /// (key, value, effect)
    pub taints: Vec<(String, String, String)>,
    pub cpu: String,
    pub memory: String,
    pub pods: String,
}

impl SimNode {
    pub fn new(name: &str) -> SimNode {
        SimNode { name: name.into(), labels: BTreeMap::new(), taints: Vec::new(), cpu: "4".into(), memory: "8Gi".into(), pods: "110".into() }
    }
    pub fn label(mut self, k: &str, v: &str) -> SimNode {
        self.labels.insert(k.into(), v.into());
        self
    }
    pub fn taint(mut self, k: &str, v: &str, effect: &str) -> SimNode {
        self.taints.push((k.into(), v.into(), effect.into()));
        self
    }
}

/// The fake kubelet of a set of simulated nodes; stops on drop.
pub struct Sim {
    stop: Arc<AtomicBool>,
    /// Nodes whose kubelet has "died": no heartbeats, no pod updates.
    dead: Arc<std::sync::Mutex<Vec<String>>>,
    thread: Option<JoinHandle<()>>,
}

/// Posts a fresh Ready heartbeat for each node, as a kubelet's status updates do.
async fn heartbeat(client: &kube::Client, names: &[String]) {
    let nodes: Api<Node> = Api::all(client.clone());
    let now = chrono_now();
    for name in names {
        let Ok(node) = nodes.get(name).await else { continue };
        let mut conditions: Vec<serde_json::Value> = node.status.and_then(|s| s.conditions).unwrap_or_default().iter().map(|c| serde_json::to_value(c).unwrap()).collect();
        for c in conditions.iter_mut().filter(|c| c["type"] == "Ready") {
            c["lastHeartbeatTime"] = json!(now);
            if c["status"] != "True" {
                c["status"] = json!("True");
                c["reason"] = json!("KubeletReady");
                c["lastTransitionTime"] = json!(now);
            }
        }
        let _ = nodes.patch_status(name, &PatchParams::default(), &Patch::Merge(json!({"status": {"conditions": conditions}}))).await;
    }
}

async fn client(kubeconfig: &Path) -> kube::Client {
    let kc = Kubeconfig::read_from(kubeconfig).expect("reading the admin kubeconfig");
    let config = kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default()).await.expect("a client config");
    kube::Client::try_from(config).expect("a kube client")
}

async fn register(client: &kube::Client, n: &SimNode) {
    let nodes: Api<Node> = Api::all(client.clone());
    let taints: Vec<_> = n.taints.iter().map(|(k, v, e)| json!({"key": k, "value": v, "effect": e})).collect();
    let mut labels = n.labels.clone();
    labels.insert("kubernetes.io/hostname".into(), n.name.clone());
    let node: Node = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": n.name, "labels": labels},
        "spec": {"taints": taints},
    }))
    .unwrap();
    nodes.create(&PostParams::default(), &node).await.expect("registering a simulated node");
    let resources = json!({"cpu": n.cpu, "memory": n.memory, "pods": n.pods});
    let now = chrono_now();
    let status = json!({"status": {
        "capacity": resources, "allocatable": resources,
        "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady", "message": "simulated kubelet is posting ready status",
                        "lastHeartbeatTime": now, "lastTransitionTime": now}],
        "addresses": [{"type": "InternalIP", "address": "10.99.0.1"}, {"type": "Hostname", "address": n.name}],
        "nodeInfo": {"machineID": "", "systemUUID": "", "bootID": "", "kernelVersion": "sim", "osImage": "sim", "containerRuntimeVersion": "sim://1",
                     "kubeletVersion": "v1.32.0", "kubeProxyVersion": "", "operatingSystem": "linux", "architecture": "amd64"},
    }});
    nodes.patch_status(&n.name, &PatchParams::default(), &Patch::Merge(status)).await.expect("setting a simulated node's status");
}

fn chrono_now() -> String {
    // RFC 3339 without a chrono dependency: seconds since the epoch through `date`.
    let out = std::process::Command::new("date").args(["-u", "+%Y-%m-%dT%H:%M:%SZ"]).output().expect("running date");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// One pass over the pods: run the ones bound to our nodes, finalize the ones being deleted.
async fn kubelet_pass(client: &kube::Client, names: &[String], ips: &mut BTreeMap<String, u32>, started: &mut BTreeMap<String, std::time::Instant>) {
    let pods: Api<Pod> = Api::all(client.clone());
    let Ok(list) = pods.list(&ListParams::default()).await else { return };
    for pod in list.items {
        let node = pod.spec.as_ref().and_then(|s| s.node_name.clone()).unwrap_or_default();
        if !names.contains(&node) {
            continue;
        }
        let ns = pod.namespace().unwrap_or_default();
        let api: Api<Pod> = Api::namespaced(client.clone(), &ns);
        if pod.metadata.deletion_timestamp.is_some() {
            let _ = api.delete(&pod.name_any(), &DeleteParams { grace_period_seconds: Some(0), ..Default::default() }).await;
            continue;
        }
        let phase = pod.status.as_ref().and_then(|s| s.phase.clone()).unwrap_or_default();
        let uid = pod.uid().unwrap_or_default();
        if phase == "Succeeded" || phase == "Failed" {
            started.remove(&uid);
            continue;
        }
        if phase == "Running" {
            if let Some(code) = pod.annotations().get(EXIT_CODE).and_then(|c| c.parse::<i32>().ok()) {
                let run: f64 = pod.annotations().get(RUN_SECONDS).and_then(|s| s.parse().ok()).unwrap_or(1.0);
                let since = *started.entry(uid.clone()).or_insert_with(std::time::Instant::now);
                if since.elapsed().as_secs_f64() >= run {
                    finish(&api, &pod, code).await;
                }
            }
            continue;
        }
        started.insert(uid.clone(), std::time::Instant::now());
        let next = ips.len() as u32 + 2;
        let n = *ips.entry(uid).or_insert(next);
        let ip = format!("10.244.{}.{}", n / 250, n % 250 + 1);
        let now = chrono_now();
        let cond = |t: &str| json!({"type": t, "status": "True", "lastProbeTime": null, "lastTransitionTime": now});
        let containers: Vec<_> = pod
            .spec
            .as_ref()
            .map(|s| s.containers.iter().map(|c| json!({"name": c.name, "image": c.image, "imageID": "", "ready": true, "restartCount": 0, "started": true,
                "containerID": format!("sim://{}", c.name), "state": {"running": {"startedAt": now}}})).collect())
            .unwrap_or_default();
        let status = json!({"status": {
            "phase": "Running", "hostIP": "10.99.0.1", "podIP": ip, "podIPs": [{"ip": ip}], "startTime": now,
            "conditions": [cond("PodReadyToStartContainers"), cond("Initialized"), cond("Ready"), cond("ContainersReady"), cond("PodScheduled")],
            "containerStatuses": containers,
        }});
        let _ = api.patch_status(&pod.name_any(), &PatchParams::default(), &Patch::Merge(status)).await;
    }
}

/// Finishes a running pod as if its containers exited with `code`.
async fn finish(api: &Api<Pod>, pod: &Pod, code: i32) {
    let now = chrono_now();
    let started = pod.status.as_ref().and_then(|s| s.start_time.as_ref()).map(|t| serde_json::to_value(t).unwrap()).unwrap_or(json!(now));
    let reason = if code == 0 { "Completed" } else { "Error" };
    let cond = |t: &str, status: &str| json!({"type": t, "status": status, "lastProbeTime": null, "lastTransitionTime": now});
    let ready = |t: &str| json!({"type": t, "status": "False", "reason": "PodCompleted", "lastProbeTime": null, "lastTransitionTime": now});
    let containers: Vec<_> = pod
        .spec
        .as_ref()
        .map(|s| s.containers.iter().map(|c| json!({"name": c.name, "image": c.image, "imageID": "", "ready": false, "restartCount": 0, "started": false,
            "containerID": format!("sim://{}", c.name),
            "state": {"terminated": {"exitCode": code, "reason": reason, "startedAt": started, "finishedAt": now, "containerID": format!("sim://{}", c.name)}}})).collect())
        .unwrap_or_default();
    let status = json!({"status": {
        "phase": if code == 0 { "Succeeded" } else { "Failed" },
        "conditions": [cond("PodReadyToStartContainers", "False"), cond("Initialized", "True"), ready("Ready"), ready("ContainersReady"), cond("PodScheduled", "True")],
        "containerStatuses": containers,
    }});
    let _ = api.patch_status(&pod.name_any(), &PatchParams::default(), &Patch::Merge(status)).await;
}

impl Sim {
    /// Registers `nodes` and starts their fake kubelet.
    pub fn start(kubeconfig: &Path, nodes: Vec<SimNode>) -> Sim {
        let stop = Arc::new(AtomicBool::new(false));
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let kubeconfig = kubeconfig.to_path_buf();
        let stop2 = stop.clone();
        let dead = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
        let dead2 = dead.clone();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            rt.block_on(async move {
                let client = client(&kubeconfig).await;
                for n in &nodes {
                    register(&client, n).await;
                }
                ready_tx.send(()).unwrap();
                let all: Vec<String> = nodes.iter().map(|n| n.name.clone()).collect();
                let mut ips = BTreeMap::new();
                let mut started = BTreeMap::new();
                let mut pass = 0u64;
                while !stop2.load(Ordering::Relaxed) {
                    let dead = dead2.lock().unwrap().clone();
                    let names: Vec<String> = all.iter().filter(|n| !dead.contains(n)).cloned().collect();
                    kubelet_pass(&client, &names, &mut ips, &mut started).await;
                    if pass % 20 == 0 {
                        heartbeat(&client, &names).await;
                    }
                    pass += 1;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            });
        });
        ready_rx.recv_timeout(Duration::from_secs(30)).expect("simulated nodes registered");
        Sim { stop, dead, thread: Some(thread) }
    }

    /// Stops the node's fake kubelet: no more heartbeats or pod updates, as if its agent died.
    pub fn kill_node(&self, name: &str) {
        self.dead.lock().unwrap().push(name.to_string());
    }
}

impl Drop for Sim {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
