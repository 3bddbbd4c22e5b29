//! Scores of the feasible nodes, each plugin 0..=100, summed with upstream's default plugin
//! weights: TaintToleration 3, NodeAffinity 2, NodeResourcesFit (LeastAllocated) 1,
//! InterPodAffinity 2, PodTopologySpread 2, NodeResourcesBalancedAllocation 1.

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

use super::filters::{node_taints, term_matches, tolerates, tolerations, PodCtx};
use super::snapshot::{NodeInfo, Requests, Snapshot};
use super::{interpod, spread};

/// The weighted total of every score plugin for each node in `feasible`.
pub fn total(ctx: &PodCtx, snap: &Snapshot, feasible: &[usize], default_selector: Option<LabelSelector>) -> Vec<i64> {
    let nodes = || feasible.iter().map(|&i| &snap.nodes[i]);
    let plugins: [(i64, Vec<i64>); 6] = [
        (3, taint_toleration(ctx.pod, nodes())),
        (2, node_affinity(ctx.pod, nodes())),
        (1, nodes().map(|ni| least_allocated(ctx.requests, ni)).collect()),
        (2, interpod::score(ctx.pod, snap, feasible)),
        (2, spread::score(ctx.pod, snap, feasible, default_selector)),
        (1, nodes().map(|ni| balanced_allocation(ctx.requests, ni)).collect()),
    ];
    (0..feasible.len()).map(|n| plugins.iter().map(|(w, s)| w * s[n]).sum()).collect()
}

/// Upstream's `DefaultNormalizeScore`: scaled to 0..=100 by the highest, reversed if asked.
fn normalize(raw: Vec<i64>, reverse: bool) -> Vec<i64> {
    let max = raw.iter().copied().max().unwrap_or(0);
    if max == 0 {
        return raw.iter().map(|_| if reverse { 100 } else { 0 }).collect();
    }
    raw.iter().map(|s| if reverse { 100 - s * 100 / max } else { s * 100 / max }).collect()
}

/// TaintToleration: fewer untolerated PreferNoSchedule taints is better.
fn taint_toleration<'a>(pod: &Pod, nodes: impl Iterator<Item = &'a NodeInfo>) -> Vec<i64> {
    let tols: Vec<_> = tolerations(pod).into_iter().filter(|t| t.effect.as_deref().is_none_or(|e| e.is_empty() || e == "PreferNoSchedule")).collect();
    let raw = nodes.map(|ni| node_taints(ni).iter().filter(|t| t.effect == "PreferNoSchedule" && !tols.iter().any(|tol| tolerates(tol, t))).count() as i64);
    normalize(raw.collect(), true)
}

/// NodeAffinity: the summed weights of the preferred terms the node matches.
fn node_affinity<'a>(pod: &Pod, nodes: impl Iterator<Item = &'a NodeInfo>) -> Vec<i64> {
    let preferred = pod.spec.as_ref().and_then(|s| s.affinity.as_ref()).and_then(|a| a.node_affinity.as_ref()).and_then(|n| n.preferred_during_scheduling_ignored_during_execution.as_ref());
    let terms = preferred.map(Vec::as_slice).unwrap_or_default();
    let raw = nodes.map(|ni| terms.iter().filter(|t| term_matches(&t.preference, ni)).map(|t| i64::from(t.weight)).sum());
    normalize(raw.collect(), false)
}

/// LeastAllocated: mean free share of cpu and memory after placing the pod (with upstream's
/// non-zero defaults for pods requesting nothing).
fn least_allocated(req: Requests, ni: &NodeInfo) -> i64 {
    let req = req.non_zero();
    let free = |cap: i64, used: i64| if cap <= 0 || used > cap { 0 } else { (cap - used) * 100 / cap };
    (free(ni.allocatable.milli_cpu, ni.non_zero.milli_cpu + req.milli_cpu) + free(ni.allocatable.memory, ni.non_zero.memory + req.memory)) / 2
}

/// BalancedAllocation: cpu and memory shares close to each other.
fn balanced_allocation(req: Requests, ni: &NodeInfo) -> i64 {
    let share = |cap: i64, used: i64| if cap <= 0 { 0.0 } else { (used as f64 / cap as f64).min(1.0) };
    let cpu = share(ni.allocatable.milli_cpu, ni.requested.milli_cpu + req.milli_cpu);
    let mem = share(ni.allocatable.memory, ni.requested.memory + req.memory);
    ((1.0 - ((cpu - mem) / 2.0).abs()) * 100.0) as i64
}
