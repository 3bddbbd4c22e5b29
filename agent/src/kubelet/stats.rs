//! The kubelet's resource usage summary (`/stats/summary`, upstream's stats/v1alpha1
//! shape): node, pod and container CPU and memory, sampled from cgroups every
//! [`SAMPLE_PERIOD`]. CPU is reported both cumulative (`usageCoreNanoSeconds`) and as a
//! rate over the last period (`usageNanoCores`), which `metrics.k8s.io` and the HPA use.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::kubelet::Kubelet;
use crate::runtime::stats::{node_usage, Usage};

pub const SAMPLE_PERIOD: Duration = Duration::from_secs(5);

/// What the summary needs to know of a pod running here (kept current by its worker).
#[derive(Debug, Clone, Default)]
pub struct PodEntry {
    pub name: String,
    pub namespace: String,
    pub start_time: String,
    /// (container name, runtime id) of running instances.
    pub containers: Vec<(String, String)>,
}

/// Pods on this node by uid, and the latest summary.
#[derive(Default)]
pub struct Stats {
    pub pods: Mutex<BTreeMap<String, PodEntry>>,
    summary: Mutex<Value>,
    previous: Mutex<HashMap<String, (u64, Instant)>>,
}

impl Stats {
    pub fn summary(&self) -> Value {
        self.summary.lock().expect("stats lock").clone()
    }

    /// CPU rate in nanocores since the previous sample of `key`.
    fn rate(&self, key: &str, cum_ns: u64, now: Instant) -> u64 {
        let mut prev = self.previous.lock().expect("stats lock");
        let rate = match prev.get(key) {
            Some((c, t)) if now > *t && cum_ns >= *c => ((cum_ns - c) as f64 / (now - *t).as_secs_f64()) as u64,
            _ => 0,
        };
        prev.insert(key.to_string(), (cum_ns, now));
        rate
    }
}

fn cpu_json(u: &Usage, rate: u64, time: &str) -> Value {
    json!({"time": time, "usageNanoCores": rate, "usageCoreNanoSeconds": u.cpu_usage_ns})
}

fn memory_json(u: &Usage, time: &str, available: Option<u64>) -> Value {
    let mut m = json!({"time": time, "usageBytes": u.memory_usage_bytes, "workingSetBytes": u.memory_working_set_bytes, "rssBytes": u.memory_rss_bytes, "pageFaults": 0, "majorPageFaults": 0});
    if let Some(a) = available {
        m["availableBytes"] = json!(a);
    }
    m
}

/// Samples every [`SAMPLE_PERIOD`] forever.
pub async fn run(kubelet: Arc<Kubelet>, node_start: String, memory_total: u64) {
    loop {
        sample(&kubelet, &node_start, memory_total);
        tokio::time::sleep(SAMPLE_PERIOD).await;
    }
}

fn sample(kubelet: &Kubelet, node_start: &str, memory_total: u64) {
    let stats = &kubelet.stats;
    let now = Instant::now();
    let time = chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ").to_string();
    let node = node_usage().unwrap_or_default();
    let node_rate = stats.rate("node", node.cpu_usage_ns, now);
    let pods: Vec<(String, PodEntry)> = stats.pods.lock().expect("stats lock").iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    let mut pod_json = Vec::new();
    let mut live_keys = vec!["node".to_string()];
    for (uid, entry) in pods {
        let mut containers = Vec::new();
        for (name, id) in &entry.containers {
            let Some(u) = kubelet.runtime.container_usage(&uid, id) else { continue };
            let rate = stats.rate(id, u.cpu_usage_ns, now);
            live_keys.push(id.clone());
            containers.push(json!({"name": name, "startTime": entry.start_time, "cpu": cpu_json(&u, rate, &time), "memory": memory_json(&u, &time, None)}));
        }
        let usage = kubelet.runtime.pod_usage(&uid).unwrap_or_default();
        let rate = stats.rate(&uid, usage.cpu_usage_ns, now);
        live_keys.push(uid.clone());
        pod_json.push(json!({
            "podRef": {"name": entry.name, "namespace": entry.namespace, "uid": uid},
            "startTime": entry.start_time,
            "containers": containers,
            "cpu": cpu_json(&usage, rate, &time),
            "memory": memory_json(&usage, &time, None),
        }));
    }
    stats.previous.lock().expect("stats lock").retain(|k, _| live_keys.contains(k));
    let summary = json!({
        "node": {
            "nodeName": kubelet.config.node_name,
            "startTime": node_start,
            "cpu": cpu_json(&node, node_rate, &time),
            "memory": memory_json(&node, &time, Some(memory_total.saturating_sub(node.memory_working_set_bytes))),
        },
        "pods": pod_json,
    });
    *stats.summary.lock().expect("stats lock") = summary;
}
