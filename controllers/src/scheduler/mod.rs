//! The scheduler (upstream's `default-scheduler`, reduced to its default filters and one
//! score): binds every pending pod whose `schedulerName` is `default-scheduler` to a node
//! through `POST pods/NAME/binding`.
//!
//! Reflectors cache pods and nodes; any change to either wakes one loop (debounced, and every
//! 10 s as a resync) that takes each pending pod in creation order and:
//! - filters nodes, in upstream's plugin order (the first failing filter is the node's reason):
//!   Ready, not `spec.unschedulable`, NoSchedule/NoExecute taints vs tolerations,
//!   `nodeSelector` and required node affinity, then requests (cpu, memory, pods) within
//!   allocatable minus the requests of pods already there;
//! - scores the rest by least-allocated (cpu and memory, with upstream's non-zero defaults
//!   for pods without requests) and binds to the best;
//! - when none fits, sets PodScheduled=False/Unschedulable with upstream's
//!   `0/N nodes are available: ...` message and records FailedScheduling (once per message).
//!
//! Pods it bound are "assumed" on their node until the cache shows the binding, so one pass
//! never overcommits a node.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Node, NodeSelectorRequirement, NodeSelectorTerm, Pod, Taint, Toleration};
use kube::api::{Api, Patch, PostParams};
use kube::ResourceExt;
use serde_json::json;
use tokio::sync::Notify;

use crate::{podutil, spawn_reflector};
use crate::Ctx;

pub const SCHEDULER_NAME: &str = "default-scheduler";
const MANAGER: &str = "default-scheduler";
const RESYNC: Duration = Duration::from_secs(10);
const DEBOUNCE: Duration = Duration::from_millis(50);
/// How long a binding is assumed before the cache must show it.
const ASSUME_TTL: Duration = Duration::from_secs(30);
/// Upstream's defaults for scoring pods that request nothing (`DefaultMilliCPURequest`,
/// `DefaultMemoryRequest`).
const DEFAULT_MILLI_CPU: i64 = 100;
const DEFAULT_MEMORY: i64 = 200 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("binding pod {0} to node {1}: {2}")]
    BindFailed(String, String, #[source] kube::Error),
    #[error("updating the PodScheduled condition of pod {0}: {1}")]
    StatusUpdateFailed(String, #[source] kube::Error),
}


pub async fn run(ctx: Arc<Ctx>) -> Result<(), crate::Error> {
    let notify = Arc::new(Notify::new());
    let pods = spawn_reflector(Api::<Pod>::all(ctx.client.clone()), notify.clone());
    let nodes = spawn_reflector(Api::<Node>::all(ctx.client.clone()), notify.clone());
    let (_, _) = tokio::join!(pods.wait_until_ready(), nodes.wait_until_ready());
    let mut sched = Scheduler { ctx, assumed: HashMap::new() };
    loop {
        sched.pass(&pods.state(), &nodes.state()).await;
        tokio::select! {
            _ = notify.notified() => tokio::time::sleep(DEBOUNCE).await,
            _ = tokio::time::sleep(RESYNC) => {}
        }
    }
}

struct Scheduler {
    ctx: Arc<Ctx>,
    /// pod uid → (node, requests, when bound): bindings the cache may not show yet.
    assumed: HashMap<String, (String, Requests, Instant)>,
}

/// What a pod asks of a node.
#[derive(Clone, Copy, Debug, Default)]
pub struct Requests {
    pub milli_cpu: i64,
    pub memory: i64,
}

fn node_name(pod: &Pod) -> &str {
    pod.spec.as_ref().and_then(|s| s.node_name.as_deref()).unwrap_or_default()
}

fn is_pending(pod: &Pod) -> bool {
    let sched = pod.spec.as_ref().and_then(|s| s.scheduler_name.as_deref()).unwrap_or(SCHEDULER_NAME);
    node_name(pod).is_empty() && sched == SCHEDULER_NAME && podutil::is_active(pod)
}

impl Scheduler {
    async fn pass(&mut self, pods: &[Arc<Pod>], nodes: &[Arc<Node>]) {
        // Forget assumptions the cache now shows (or that expired).
        let bound: HashMap<String, &str> = pods.iter().filter(|p| !node_name(p).is_empty()).map(|p| (p.uid().unwrap_or_default(), node_name(p))).collect();
        let live: std::collections::HashSet<String> = pods.iter().map(|p| p.uid().unwrap_or_default()).collect();
        self.assumed.retain(|uid, (_, _, at)| !bound.contains_key(uid) && live.contains(uid) && at.elapsed() < ASSUME_TTL);

        // Usage per node: requests (actual and non-zero) and pod counts.
        let mut usage: HashMap<String, Usage> = HashMap::new();
        for p in pods.iter().filter(|p| !node_name(p).is_empty() && podutil::is_active(p) || is_terminating_on_node(p)) {
            usage.entry(node_name(p).to_string()).or_default().add(pod_requests(p));
        }
        for (node, req, _) in self.assumed.values() {
            usage.entry(node.clone()).or_default().add(*req);
        }

        let mut pending: Vec<&Arc<Pod>> = pods.iter().filter(|p| is_pending(p) && !self.assumed.contains_key(&p.uid().unwrap_or_default())).collect();
        pending.sort_by_key(|p| (p.metadata.creation_timestamp.as_ref().map(|t| t.0.as_second()), p.name_any()));
        for pod in pending {
            match pick(pod, nodes, &usage) {
                Ok(node) => {
                    let req = pod_requests(pod);
                    match self.bind(pod, &node).await {
                        Ok(()) => {
                            usage.entry(node.clone()).or_default().add(req);
                            self.assumed.insert(pod.uid().unwrap_or_default(), (node, req, Instant::now()));
                        }
                        Err(e) => tracing::debug!(error = %e, "binding failed; retried on the next pass"),
                    }
                }
                Err(message) => {
                    if let Err(e) = self.unschedulable(pod, &message).await {
                        tracing::debug!(error = %e, "reporting an unschedulable pod failed");
                    }
                }
            }
        }
    }

    async fn bind(&self, pod: &Pod, node: &str) -> Result<(), Error> {
        let ns = pod.namespace().unwrap_or_default();
        let api: Api<Pod> = Api::namespaced(self.ctx.client.clone(), &ns);
        let binding = json!({
            "apiVersion": "v1", "kind": "Binding",
            "metadata": {"name": pod.name_any(), "namespace": ns, "uid": pod.uid()},
            "target": {"apiVersion": "v1", "kind": "Node", "name": node},
        });
        let pp = PostParams { field_manager: Some(MANAGER.into()), ..Default::default() };
        api.create_subresource::<_, serde_json::Value>("binding", &pod.name_any(), &pp, &binding)
            .await
            .map_err(|e| Error::BindFailed(pod.name_any(), node.into(), e))?;
        let note = format!("Successfully assigned {ns}/{} to {node}", pod.name_any());
        podutil::event(&self.ctx, pod, false, "Scheduled", "Binding", note).await;
        Ok(())
    }

    /// Sets PodScheduled=False/Unschedulable with `message`, once per distinct message.
    async fn unschedulable(&self, pod: &Pod, message: &str) -> Result<(), Error> {
        let current = pod.status.as_ref().and_then(|s| s.conditions.as_ref()).and_then(|c| c.iter().find(|c| c.type_ == "PodScheduled"));
        if current.is_some_and(|c| c.status == "False" && c.message.as_deref() == Some(message)) {
            return Ok(());
        }
        let api: Api<Pod> = Api::namespaced(self.ctx.client.clone(), &pod.namespace().unwrap_or_default());
        let mut conds: Vec<serde_json::Value> = pod
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .map(|c| c.iter().filter(|c| c.type_ != "PodScheduled").map(|c| serde_json::to_value(c).unwrap_or_default()).collect())
            .unwrap_or_default();
        conds.push(json!({"type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": message,
            "lastProbeTime": null, "lastTransitionTime": podutil::now_rfc3339()}));
        let patch = json!({"metadata": {"resourceVersion": pod.resource_version()}, "status": {"conditions": conds}});
        api.patch_status(&pod.name_any(), &crate::patch_params(MANAGER), &Patch::Merge(patch))
            .await
            .map_err(|e| Error::StatusUpdateFailed(pod.name_any(), e))?;
        podutil::event(&self.ctx, pod, true, "FailedScheduling", "Scheduling", message.to_string()).await;
        Ok(())
    }
}

/// A pod still holding its node's resources while it terminates.
fn is_terminating_on_node(p: &Pod) -> bool {
    !node_name(p).is_empty() && p.metadata.deletion_timestamp.is_some()
}

#[derive(Default)]
struct Usage {
    requested: Requests,
    /// With upstream's non-zero defaults, for scoring.
    non_zero: Requests,
    pods: i64,
}

impl Usage {
    fn add(&mut self, r: Requests) {
        self.requested.milli_cpu += r.milli_cpu;
        self.requested.memory += r.memory;
        self.non_zero.milli_cpu += if r.milli_cpu == 0 { DEFAULT_MILLI_CPU } else { r.milli_cpu };
        self.non_zero.memory += if r.memory == 0 { DEFAULT_MEMORY } else { r.memory };
        self.pods += 1;
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

fn resource(list: Option<&BTreeMap<String, k8s_openapi::apimachinery::pkg::api::resource::Quantity>>, name: &str, scale: f64) -> i64 {
    list.and_then(|l| l.get(name)).map_or(0, |q| parse_quantity(&q.0, scale))
}

/// The pod's effective requests (upstream's `computePodResourceRequest`): the larger of the
/// containers' sum and any init container, plus overhead.
pub fn pod_requests(pod: &Pod) -> Requests {
    let Some(spec) = pod.spec.as_ref() else { return Requests::default() };
    let of = |c: &k8s_openapi::api::core::v1::Container| {
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
        let r = of(c);
        total.milli_cpu += r.milli_cpu;
        total.memory += r.memory;
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

fn node_ready(node: &Node) -> bool {
    node.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|c| c.iter().find(|c| c.type_ == "Ready"))
        .is_some_and(|c| c.status == "True")
}

pub(crate) fn tolerates(tol: &Toleration, taint: &Taint) -> bool {
    if tol.effect.as_deref().is_some_and(|e| !e.is_empty() && e != taint.effect) {
        return false;
    }
    let key = tol.key.as_deref().unwrap_or_default();
    if !key.is_empty() && key != taint.key {
        return false;
    }
    match tol.operator.as_deref().unwrap_or("Equal") {
        "Exists" => true,
        _ => tol.value.as_deref().unwrap_or_default() == taint.value.as_deref().unwrap_or_default() && (!key.is_empty()),
    }
}

fn requirement_matches(req: &NodeSelectorRequirement, labels: &BTreeMap<String, String>) -> bool {
    let values = req.values.as_deref().unwrap_or_default();
    let have = labels.get(&req.key);
    match req.operator.as_str() {
        "In" => have.is_some_and(|v| values.contains(v)),
        "NotIn" => have.is_none_or(|v| !values.contains(v)),
        "Exists" => have.is_some(),
        "DoesNotExist" => have.is_none(),
        "Gt" | "Lt" => {
            let (Some(v), Some(bound)) = (have.and_then(|v| v.parse::<i64>().ok()), values.first().and_then(|b| b.parse::<i64>().ok())) else {
                return false;
            };
            if req.operator == "Gt" { v > bound } else { v < bound }
        }
        _ => false,
    }
}

fn term_matches(term: &NodeSelectorTerm, node: &Node) -> bool {
    let labels = node.labels();
    let exprs = term.match_expressions.as_deref().unwrap_or_default();
    let fields = term.match_fields.as_deref().unwrap_or_default();
    if exprs.is_empty() && fields.is_empty() {
        return false;
    }
    let name: BTreeMap<String, String> = [("metadata.name".to_string(), node.name_any())].into();
    exprs.iter().all(|r| requirement_matches(r, labels)) && fields.iter().all(|r| requirement_matches(r, &name))
}

fn selector_and_affinity_match(pod: &Pod, node: &Node) -> bool {
    let Some(spec) = pod.spec.as_ref() else { return true };
    if !spec.node_selector.iter().flatten().all(|(k, v)| node.labels().get(k) == Some(v)) {
        return false;
    }
    let required = spec
        .affinity
        .as_ref()
        .and_then(|a| a.node_affinity.as_ref())
        .and_then(|n| n.required_during_scheduling_ignored_during_execution.as_ref());
    required.is_none_or(|r| r.node_selector_terms.iter().any(|t| term_matches(t, node)))
}

/// Filters the nodes for `pod` and picks the least allocated; else the `0/N nodes are
/// available: ...` message.
fn pick(pod: &Pod, nodes: &[Arc<Node>], usage: &HashMap<String, Usage>) -> Result<String, String> {
    let req = pod_requests(pod);
    let tolerations = pod.spec.as_ref().and_then(|s| s.tolerations.clone()).unwrap_or_default();
    let mut reasons: BTreeMap<String, usize> = BTreeMap::new();
    let mut best: Option<(i64, String)> = None;
    let empty = Usage::default();
    let mut sorted: Vec<&Arc<Node>> = nodes.iter().collect();
    sorted.sort_by_key(|n| n.name_any());
    for node in sorted {
        let mut why: Vec<String> = Vec::new();
        let spec = node.spec.as_ref();
        if !node_ready(node) {
            why.push("node(s) were not ready".into());
        } else if spec.and_then(|s| s.unschedulable).unwrap_or(false) {
            why.push("node(s) were unschedulable".into());
        } else if let Some(t) = spec
            .and_then(|s| s.taints.as_ref())
            .into_iter()
            .flatten()
            .find(|t| (t.effect == "NoSchedule" || t.effect == "NoExecute") && !tolerations.iter().any(|tol| tolerates(tol, t)))
        {
            why.push(format!("node(s) had untolerated taint {{{}: {}}}", t.key, t.value.as_deref().unwrap_or_default()));
        } else if !selector_and_affinity_match(pod, node) {
            why.push("node(s) didn't match Pod's node affinity/selector".into());
        } else {
            let alloc = node.status.as_ref().and_then(|s| s.allocatable.as_ref().or(s.capacity.as_ref()));
            let cpu = resource(alloc, "cpu", 1000.0);
            let mem = resource(alloc, "memory", 1.0);
            let max_pods = resource(alloc, "pods", 1.0);
            let used = usage.get(&node.name_any()).unwrap_or(&empty);
            if used.pods + 1 > max_pods {
                why.push("Too many pods".into());
            }
            if req.milli_cpu > 0 && used.requested.milli_cpu + req.milli_cpu > cpu {
                why.push("Insufficient cpu".into());
            }
            if req.memory > 0 && used.requested.memory + req.memory > mem {
                why.push("Insufficient memory".into());
            }
            if why.is_empty() {
                // Least allocated: mean free fraction of cpu and memory after placing the pod.
                let nz_cpu = used.non_zero.milli_cpu + if req.milli_cpu == 0 { DEFAULT_MILLI_CPU } else { req.milli_cpu };
                let nz_mem = used.non_zero.memory + if req.memory == 0 { DEFAULT_MEMORY } else { req.memory };
                let free = |cap: i64, used: i64| if cap <= 0 || used > cap { 0 } else { (cap - used) * 100 / cap };
                let score = (free(cpu, nz_cpu) + free(mem, nz_mem)) / 2;
                if best.as_ref().is_none_or(|(s, _)| score > *s) {
                    best = Some((score, node.name_any()));
                }
                continue;
            }
        }
        for w in why {
            *reasons.entry(w).or_default() += 1;
        }
    }
    if let Some((_, node)) = best {
        return Ok(node);
    }
    let mut parts: Vec<String> = reasons.iter().map(|(r, n)| format!("{n} {r}")).collect();
    parts.sort();
    let detail = if parts.is_empty() { String::new() } else { format!(" {}.", parts.join(", ")) };
    Err(format!("0/{} nodes are available:{detail}", nodes.len()))
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

    fn node(name: &str, labels: &[(&str, &str)], taints: Vec<Taint>) -> Arc<Node> {
        let n: Node = serde_json::from_value(json!({
            "metadata": {"name": name, "labels": labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect::<BTreeMap<_, _>>()},
            "spec": {"taints": taints},
            "status": {"allocatable": {"cpu": "2", "memory": "4Gi", "pods": "110"}, "conditions": [{"type": "Ready", "status": "True"}]},
        }))
        .unwrap();
        Arc::new(n)
    }

    #[test]
    fn filters_and_messages() {
        let taint = Taint { key: "dedicated".into(), value: Some("infra".into()), effect: "NoSchedule".into(), time_added: None };
        let nodes = vec![node("a", &[("disk", "ssd")], vec![]), node("b", &[], vec![taint])];
        let usage = HashMap::new();
        let plain: Pod = serde_json::from_value(json!({"spec": {"containers": [{"name": "c", "image": "i"}]}})).unwrap();
        assert_eq!(pick(&plain, &nodes, &usage).unwrap(), "a");
        let ssd: Pod = serde_json::from_value(json!({"spec": {"nodeSelector": {"disk": "hdd"}, "containers": [{"name": "c", "image": "i"}]}})).unwrap();
        assert_eq!(
            pick(&ssd, &nodes, &usage).unwrap_err(),
            "0/2 nodes are available: 1 node(s) didn't match Pod's node affinity/selector, 1 node(s) had untolerated taint {dedicated: infra}."
        );
        let big: Pod = serde_json::from_value(json!({"spec": {"containers": [{"name": "c", "image": "i", "resources": {"requests": {"cpu": "3"}}}],
            "tolerations": [{"key": "dedicated", "operator": "Exists"}]}}))
        .unwrap();
        assert_eq!(pick(&big, &nodes, &usage).unwrap_err(), "0/2 nodes are available: 2 Insufficient cpu.");
    }

    #[test]
    fn match_fields_pin_a_pod_to_a_named_node() {
        let nodes = vec![node("a", &[], vec![]), node("b", &[], vec![])];
        let pinned: Pod = serde_json::from_value(json!({"spec": {"containers": [{"name": "c", "image": "i"}],
            "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
                {"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["b"]}]}]}}}}}))
        .unwrap();
        assert_eq!(pick(&pinned, &nodes, &HashMap::new()).unwrap(), "b");
    }
}
