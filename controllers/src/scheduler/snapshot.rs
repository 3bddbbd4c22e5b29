//! The cluster as one scheduling pass sees it (upstream's cache `Snapshot` of
//! `framework.NodeInfo`s): each node with the pods on it (bound, assumed or terminating) and
//! their summed requests; namespaces' labels for pod affinity's `namespaceSelector`.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use k8s_openapi::api::core::v1::{Container, Node, Pod};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use kube::ResourceExt;

use crate::podutil;

/// Upstream's defaults for scoring pods that request nothing (`DefaultMilliCPURequest`,
/// `DefaultMemoryRequest`).
pub const DEFAULT_MILLI_CPU: i64 = 100;
pub const DEFAULT_MEMORY: i64 = 200 * 1024 * 1024;

/// What a pod asks of a node.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Requests {
    pub milli_cpu: i64,
    pub memory: i64,
}

impl Requests {
    /// With upstream's non-zero defaults (for scoring).
    pub fn non_zero(self) -> Requests {
        Requests {
            milli_cpu: if self.milli_cpu == 0 { DEFAULT_MILLI_CPU } else { self.milli_cpu },
            memory: if self.memory == 0 { DEFAULT_MEMORY } else { self.memory },
        }
    }

    fn add(&mut self, other: Requests, sign: i64) {
        self.milli_cpu += sign * other.milli_cpu;
        self.memory += sign * other.memory;
    }
}

/// A quantity (`100m`, `1.5`, `128Mi`, `1e3`) in units of `1/scale`, rounded up.
pub fn parse_quantity(q: &str, scale: f64) -> i64 {
    let q = q.trim();
    let split = q.find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '-' || c == '+')).unwrap_or(q.len());
    let (num, suffix) = q.split_at(split);
    let Ok(n) = num.parse::<f64>() else { return 0 };
    let mult = match suffix {
        "" => 1.0,
        "n" => 1e-9,
        "u" => 1e-6,
        "m" => 1e-3,
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "P" => 1e15,
        "E" => 1e18,
        "Ki" => 1024.0,
        "Mi" => 1024f64.powi(2),
        "Gi" => 1024f64.powi(3),
        "Ti" => 1024f64.powi(4),
        "Pi" => 1024f64.powi(5),
        "Ei" => 1024f64.powi(6),
        s if s.starts_with(['e', 'E']) => s[1..].parse::<i32>().map_or(1.0, |e| 10f64.powi(e)),
        _ => 1.0,
    };
    (n * mult * scale).ceil() as i64
}

fn resource(list: Option<&BTreeMap<String, Quantity>>, name: &str, scale: f64) -> i64 {
    list.and_then(|l| l.get(name)).map_or(0, |q| parse_quantity(&q.0, scale))
}

/// The pod's effective requests (upstream's `computePodResourceRequest`): the larger of the
/// containers' sum and any init container, plus overhead.
pub fn pod_requests(pod: &Pod) -> Requests {
    let Some(spec) = pod.spec.as_ref() else { return Requests::default() };
    let of = |c: &Container| {
        let r = c.resources.as_ref();
        let req = r.and_then(|r| r.requests.as_ref());
        let lim = r.and_then(|r| r.limits.as_ref());
        let get = |name: &str, scale: f64| {
            let v = resource(req, name, scale);
            if v == 0 { resource(lim, name, scale) } else { v }
        };
        Requests { milli_cpu: get("cpu", 1000.0), memory: get("memory", 1.0) }
    };
    let mut total = Requests::default();
    for c in &spec.containers {
        total.add(of(c), 1);
    }
    for c in spec.init_containers.iter().flatten() {
        let r = of(c);
        total.milli_cpu = total.milli_cpu.max(r.milli_cpu);
        total.memory = total.memory.max(r.memory);
    }
    total.milli_cpu += resource(spec.overhead.as_ref(), "cpu", 1000.0);
    total.memory += resource(spec.overhead.as_ref(), "memory", 1.0);
    total
}

pub fn node_name(pod: &Pod) -> &str {
    pod.spec.as_ref().and_then(|s| s.node_name.as_deref()).unwrap_or_default()
}

/// `spec.priority` (set by Priority admission; 0 when absent).
pub fn priority(pod: &Pod) -> i32 {
    pod.spec.as_ref().and_then(|s| s.priority).unwrap_or(0)
}

/// The pod's nominated node (`status.nominatedNodeName`), set when it preempted.
pub fn nominated_node(pod: &Pod) -> &str {
    pod.status.as_ref().and_then(|s| s.nominated_node_name.as_deref()).unwrap_or_default()
}

/// Whether a bound pod holds its node's resources: running or pending, or terminating.
pub fn occupies_node(p: &Pod) -> bool {
    let phase = p.status.as_ref().and_then(|s| s.phase.as_deref()).unwrap_or_default();
    !node_name(p).is_empty() && (podutil::is_active(p) || (p.metadata.deletion_timestamp.is_some() && phase != "Succeeded" && phase != "Failed"))
}

/// One node and what is on it.
#[derive(Clone)]
pub struct NodeInfo {
    pub node: Arc<Node>,
    pub name: String,
    pub pods: Vec<Arc<Pod>>,
    pub requested: Requests,
    /// With upstream's non-zero defaults, for scoring.
    pub non_zero: Requests,
    pub allocatable: Requests,
    pub max_pods: i64,
}

impl NodeInfo {
    pub fn new(node: Arc<Node>) -> NodeInfo {
        let alloc = node.status.as_ref().and_then(|s| s.allocatable.as_ref().or(s.capacity.as_ref()));
        let allocatable = Requests { milli_cpu: resource(alloc, "cpu", 1000.0), memory: resource(alloc, "memory", 1.0) };
        let max_pods = resource(alloc, "pods", 1.0);
        NodeInfo { name: node.name_any(), node, pods: Vec::new(), requested: Requests::default(), non_zero: Requests::default(), allocatable, max_pods }
    }

    pub fn labels(&self) -> &BTreeMap<String, String> {
        self.node.labels()
    }

    pub fn add_pod(&mut self, pod: Arc<Pod>) {
        let r = pod_requests(&pod);
        self.requested.add(r, 1);
        self.non_zero.add(r.non_zero(), 1);
        self.pods.push(pod);
    }

    /// Removes the pod with this uid, if here.
    pub fn remove_pod(&mut self, uid: &str) -> Option<Arc<Pod>> {
        let i = self.pods.iter().position(|p| p.metadata.uid.as_deref() == Some(uid))?;
        let pod = self.pods.remove(i);
        let r = pod_requests(&pod);
        self.requested.add(r, -1);
        self.non_zero.add(r.non_zero(), -1);
        Some(pod)
    }
}

/// Every node with its pods, sorted by name, and the namespaces' labels.
#[derive(Clone, Default)]
pub struct Snapshot {
    pub nodes: Vec<NodeInfo>,
    pub namespaces: HashMap<String, BTreeMap<String, String>>,
}

impl Snapshot {
    /// `pods` are those bound (or assumed) to a node; others are ignored.
    pub fn new(nodes: &[Arc<Node>], pods: impl IntoIterator<Item = Arc<Pod>>, namespaces: HashMap<String, BTreeMap<String, String>>) -> Snapshot {
        let mut infos: Vec<NodeInfo> = nodes.iter().cloned().map(NodeInfo::new).collect();
        infos.sort_by(|a, b| a.name.cmp(&b.name));
        let mut snap = Snapshot { nodes: infos, namespaces };
        for pod in pods {
            if let Some(i) = snap.index(node_name(&pod)) {
                snap.nodes[i].add_pod(pod);
            }
        }
        snap
    }

    pub fn index(&self, node: &str) -> Option<usize> {
        self.nodes.binary_search_by(|n| n.name.as_str().cmp(node)).ok()
    }

    /// Every pod on a node, with its node.
    pub fn pods(&self) -> impl Iterator<Item = (&NodeInfo, &Arc<Pod>)> {
        self.nodes.iter().flat_map(|n| n.pods.iter().map(move |p| (n, p)))
    }

    pub fn namespace_labels(&self, ns: &str) -> BTreeMap<String, String> {
        self.namespaces.get(ns).cloned().unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantities() {
        assert_eq!(parse_quantity("100m", 1000.0), 100);
        assert_eq!(parse_quantity("2", 1000.0), 2000);
        assert_eq!(parse_quantity("1.5", 1000.0), 1500);
        assert_eq!(parse_quantity("128Mi", 1.0), 128 * 1024 * 1024);
        assert_eq!(parse_quantity("1G", 1.0), 1_000_000_000);
        assert_eq!(parse_quantity("110", 1.0), 110);
    }
}
