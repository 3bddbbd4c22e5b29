//! Filters: whether a pod may go on a node, in upstream's default plugin order. The first
//! failing filter gives the node's reasons (upstream's `framework.Status`), and whether
//! preemption could help (`Unschedulable`) or not (`UnschedulableAndUnresolvable`).

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{NodeSelectorRequirement, NodeSelectorTerm, Pod, Taint, Toleration};

use super::snapshot::{pod_requests, NodeInfo, Requests, Snapshot};
use super::{interpod, spread};

/// Why a node does not fit.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Status {
    pub reasons: Vec<String>,
    /// Upstream's `UnschedulableAndUnresolvable`: removing pods would not help.
    pub unresolvable: bool,
}

impl Status {
    pub fn unschedulable(reason: impl Into<String>) -> Status {
        Status { reasons: vec![reason.into()], unresolvable: false }
    }
    pub fn unresolvable(reason: impl Into<String>) -> Status {
        Status { reasons: vec![reason.into()], unresolvable: true }
    }
}

pub const NOT_READY: &str = "node(s) were not ready";
pub const UNSCHEDULABLE: &str = "node(s) were unschedulable";
pub const AFFINITY_SELECTOR: &str = "node(s) didn't match Pod's node affinity/selector";
pub const NO_FREE_PORTS: &str = "node(s) didn't have free ports for the requested pod ports";

/// A host port a container asks for (upstream's `HostPortInfo`: empty IP means 0.0.0.0).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostPort {
    ip: String,
    protocol: String,
    port: i32,
}

impl HostPort {
    /// Same port and protocol, and the same IP or either one 0.0.0.0.
    fn conflicts(&self, other: &HostPort) -> bool {
        self.port == other.port && self.protocol == other.protocol && (self.ip == other.ip || self.ip == "0.0.0.0" || other.ip == "0.0.0.0")
    }
}

pub fn host_ports(pod: &Pod) -> Vec<HostPort> {
    let containers = pod.spec.iter().flat_map(|s| s.containers.iter());
    containers
        .flat_map(|c| c.ports.iter().flatten())
        .filter(|p| p.host_port.unwrap_or(0) > 0)
        .map(|p| HostPort {
            ip: p.host_ip.clone().filter(|ip| !ip.is_empty()).unwrap_or_else(|| "0.0.0.0".into()),
            protocol: p.protocol.clone().unwrap_or_else(|| "TCP".into()),
            port: p.host_port.unwrap_or(0),
        })
        .collect()
}

/// What the filters need to know of the pod, computed once per pod (upstream's PreFilter).
pub struct PodCtx<'a> {
    pub pod: &'a Pod,
    pub requests: Requests,
    tolerations: Vec<Toleration>,
    ports: Vec<HostPort>,
    interpod: interpod::FilterState,
    spread: spread::FilterState,
}

impl<'a> PodCtx<'a> {
    pub fn new(pod: &'a Pod, snap: &Snapshot) -> PodCtx<'a> {
        PodCtx {
            pod,
            requests: pod_requests(pod),
            tolerations: tolerations(pod),
            ports: host_ports(pod),
            interpod: interpod::FilterState::new(pod, snap),
            spread: spread::FilterState::new(pod, snap),
        }
    }
}

/// Runs every filter on one node.
pub fn filter(ctx: &PodCtx, ni: &NodeInfo) -> Result<(), Status> {
    node_ready(ctx, ni)?;
    node_unschedulable(ctx, ni)?;
    taint_toleration(&ctx.tolerations, ni)?;
    if !node_affinity_matches(ctx.pod, ni) {
        return Err(Status::unresolvable(AFFINITY_SELECTOR));
    }
    node_ports(ctx, ni)?;
    resources_fit(ctx, ni)?;
    ctx.spread.filter(ctx.pod, ni)?;
    ctx.interpod.filter(ni)
}

pub fn tolerations(pod: &Pod) -> Vec<Toleration> {
    pod.spec.as_ref().and_then(|s| s.tolerations.clone()).unwrap_or_default()
}

fn taint(key: &str, effect: &str) -> Taint {
    Taint { key: key.into(), effect: effect.into(), value: None, time_added: None }
}

/// Upstream reads readiness from the `node.kubernetes.io/not-ready` taint; krust also checks
/// the Ready condition, unless the pod tolerates that taint.
fn node_ready(ctx: &PodCtx, ni: &NodeInfo) -> Result<(), Status> {
    let ready = ni.node.status.as_ref().and_then(|s| s.conditions.as_ref()).and_then(|c| c.iter().find(|c| c.type_ == "Ready")).is_some_and(|c| c.status == "True");
    let tolerated = ctx.tolerations.iter().any(|t| tolerates(t, &taint("node.kubernetes.io/not-ready", "NoSchedule")));
    if ready || tolerated { Ok(()) } else { Err(Status::unresolvable(NOT_READY)) }
}

/// NodeUnschedulable: cordoned nodes, unless the pod tolerates `node.kubernetes.io/unschedulable`.
fn node_unschedulable(ctx: &PodCtx, ni: &NodeInfo) -> Result<(), Status> {
    let cordoned = ni.node.spec.as_ref().and_then(|s| s.unschedulable).unwrap_or(false);
    let tolerated = ctx.tolerations.iter().any(|t| tolerates(t, &taint("node.kubernetes.io/unschedulable", "NoSchedule")));
    if cordoned && !tolerated { Err(Status::unresolvable(UNSCHEDULABLE)) } else { Ok(()) }
}

pub fn node_taints(ni: &NodeInfo) -> &[Taint] {
    ni.node.spec.as_ref().and_then(|s| s.taints.as_deref()).unwrap_or_default()
}

/// TaintToleration: the first NoSchedule/NoExecute taint no toleration matches.
fn taint_toleration(tolerations: &[Toleration], ni: &NodeInfo) -> Result<(), Status> {
    let untolerated = node_taints(ni).iter().find(|t| (t.effect == "NoSchedule" || t.effect == "NoExecute") && !tolerations.iter().any(|tol| tolerates(tol, t)));
    match untolerated {
        Some(t) => Err(Status::unresolvable(format!("node(s) had untolerated taint {{{}: {}}}", t.key, t.value.as_deref().unwrap_or_default()))),
        None => Ok(()),
    }
}

/// Whether every NoSchedule/NoExecute taint of the node is tolerated.
pub fn taints_tolerated(tolerations: &[Toleration], ni: &NodeInfo) -> bool {
    taint_toleration(tolerations, ni).is_ok()
}

/// Upstream's `Toleration.ToleratesTaint`.
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

/// A node selector term: every `matchExpressions` on the labels and every `matchFields` on
/// `metadata.name`; an empty term matches nothing.
pub fn term_matches(term: &NodeSelectorTerm, ni: &NodeInfo) -> bool {
    term_matches_node(term, &ni.name, ni.labels())
}

fn term_matches_node(term: &NodeSelectorTerm, name: &str, labels: &BTreeMap<String, String>) -> bool {
    let exprs = term.match_expressions.as_deref().unwrap_or_default();
    let fields = term.match_fields.as_deref().unwrap_or_default();
    if exprs.is_empty() && fields.is_empty() {
        return false;
    }
    let name: BTreeMap<String, String> = [("metadata.name".to_string(), name.to_string())].into();
    exprs.iter().all(|r| requirement_matches(r, labels)) && fields.iter().all(|r| requirement_matches(r, &name))
}

/// NodeAffinity (filter): `nodeSelector` and required node affinity (any term).
pub fn node_affinity_matches(pod: &Pod, ni: &NodeInfo) -> bool {
    pod.spec.as_ref().is_none_or(|spec| spec_fits_node(spec, &ni.name, ni.labels()))
}

/// `nodeSelector` and required node affinity of `spec` against a node's name and labels
/// (upstream's `GetRequiredNodeAffinity(pod).Match(node)`; the DaemonSet controller asks too).
pub fn spec_fits_node(spec: &k8s_openapi::api::core::v1::PodSpec, name: &str, labels: &BTreeMap<String, String>) -> bool {
    if !spec.node_selector.iter().flatten().all(|(k, v)| labels.get(k) == Some(v)) {
        return false;
    }
    let required = spec.affinity.as_ref().and_then(|a| a.node_affinity.as_ref()).and_then(|n| n.required_during_scheduling_ignored_during_execution.as_ref());
    required.is_none_or(|r| r.node_selector_terms.iter().any(|t| term_matches_node(t, name, labels)))
}

/// NodePorts: no host port of the pod taken on the node.
fn node_ports(ctx: &PodCtx, ni: &NodeInfo) -> Result<(), Status> {
    if ctx.ports.is_empty() {
        return Ok(());
    }
    let taken = ni.pods.iter().flat_map(|p| host_ports(p));
    for used in taken {
        if ctx.ports.iter().any(|want| want.conflicts(&used)) {
            return Err(Status::unschedulable(NO_FREE_PORTS));
        }
    }
    Ok(())
}

/// NodeResourcesFit: pod count, cpu and memory within allocatable.
fn resources_fit(ctx: &PodCtx, ni: &NodeInfo) -> Result<(), Status> {
    let req = ctx.requests;
    let mut why = Vec::new();
    if ni.pods.len() as i64 + 1 > ni.max_pods {
        why.push("Too many pods".to_string());
    }
    if req.milli_cpu > 0 && ni.requested.milli_cpu + req.milli_cpu > ni.allocatable.milli_cpu {
        why.push("Insufficient cpu".to_string());
    }
    if req.memory > 0 && ni.requested.memory + req.memory > ni.allocatable.memory {
        why.push("Insufficient memory".to_string());
    }
    if why.is_empty() { Ok(()) } else { Err(Status { reasons: why, unresolvable: false }) }
}
