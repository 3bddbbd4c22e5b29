//! PodTopologySpread: `DoNotSchedule` constraints filter (maxSkew over the domains of
//! topologyKey, minDomains, nodeAffinityPolicy Honor and nodeTaintsPolicy Ignore by default);
//! `ScheduleAnyway` constraints score, and pods without constraints get upstream's system
//! defaults (hostname maxSkew 3, zone maxSkew 5) over the pods of their Services and controller.

use std::collections::{HashMap, HashSet};

use k8s_openapi::api::core::v1::{Pod, TopologySpreadConstraint};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, LabelSelectorRequirement};
use kube::ResourceExt;

use super::filters::{node_affinity_matches, taints_tolerated, tolerations, Status};
use super::snapshot::{NodeInfo, Snapshot};
use crate::podutil;

pub const CONSTRAINTS_NOT_MATCH: &str = "node(s) didn't match pod topology spread constraints";
pub const NODE_LABEL_NOT_MATCH: &str = "node(s) didn't match pod topology spread constraints (missing required label)";
const HOSTNAME: &str = "kubernetes.io/hostname";
const ZONE: &str = "topology.kubernetes.io/zone";

struct Constraint {
    max_skew: i64,
    key: String,
    selector: Option<LabelSelector>,
    min_domains: usize,
    honor_affinity: bool,
    honor_taints: bool,
}

impl Constraint {
    fn new(pod: &Pod, c: &TopologySpreadConstraint) -> Constraint {
        let mut selector = c.label_selector.clone();
        // matchLabelKeys: the pod's own values join the selector.
        if let Some(sel) = selector.as_mut() {
            let keyed = c.match_label_keys.iter().flatten().filter_map(|k| pod.labels().get(k).map(|v| (k, v)));
            let extra: Vec<_> = keyed.map(|(k, v)| LabelSelectorRequirement { key: k.clone(), operator: "In".into(), values: Some(vec![v.clone()]) }).collect();
            if !extra.is_empty() {
                sel.match_expressions.get_or_insert_with(Vec::new).extend(extra);
            }
        }
        Constraint {
            max_skew: c.max_skew.into(),
            key: c.topology_key.clone(),
            selector,
            min_domains: c.min_domains.unwrap_or(1).max(1) as usize,
            honor_affinity: c.node_affinity_policy.as_deref() != Some("Ignore"),
            honor_taints: c.node_taints_policy.as_deref() == Some("Honor"),
        }
    }

    /// Upstream's system default constraints over `selector`.
    fn defaults(selector: LabelSelector) -> Vec<Constraint> {
        let of = |key: &str, max_skew| Constraint { max_skew, key: key.into(), selector: Some(selector.clone()), min_domains: 1, honor_affinity: true, honor_taints: false };
        vec![of(HOSTNAME, 3), of(ZONE, 5)]
    }

    /// nodeAffinityPolicy / nodeTaintsPolicy: whether the node's pods count.
    fn includes(&self, pod: &Pod, ni: &NodeInfo) -> bool {
        (!self.honor_affinity || node_affinity_matches(pod, ni)) && (!self.honor_taints || taints_tolerated(&tolerations(pod), ni))
    }

    /// Pods on the node in `ns`, not terminating, matching the selector.
    fn count(&self, ns: &str, ni: &NodeInfo) -> i64 {
        let matching = ni.pods.iter().filter(|p| p.metadata.deletion_timestamp.is_none() && p.namespace().as_deref() == Some(ns));
        matching.filter(|p| podutil::selector_matches(self.selector.as_ref(), p.labels())).count() as i64
    }
}

fn constraints(pod: &Pod, when: &str) -> Vec<Constraint> {
    let all = pod.spec.as_ref().and_then(|s| s.topology_spread_constraints.as_ref());
    all.into_iter().flatten().filter(|c| c.when_unsatisfiable == when).map(|c| Constraint::new(pod, c)).collect()
}

fn has_all_keys(cs: &[Constraint], ni: &NodeInfo) -> bool {
    cs.iter().all(|c| ni.labels().contains_key(&c.key))
}

/// Upstream's PreFilter state: matching pods per domain, per DoNotSchedule constraint.
pub struct FilterState {
    constraints: Vec<Constraint>,
    counts: Vec<HashMap<String, i64>>,
}

impl FilterState {
    pub fn new(pod: &Pod, snap: &Snapshot) -> FilterState {
        let constraints = constraints(pod, "DoNotSchedule");
        let mut counts = vec![HashMap::new(); constraints.len()];
        let ns = pod.namespace().unwrap_or_default();
        for ni in snap.nodes.iter().filter(|ni| has_all_keys(&constraints, ni)) {
            for (i, c) in constraints.iter().enumerate().filter(|(_, c)| c.includes(pod, ni)) {
                *counts[i].entry(ni.labels()[&c.key].clone()).or_default() += c.count(&ns, ni);
            }
        }
        FilterState { constraints, counts }
    }

    pub fn filter(&self, pod: &Pod, ni: &NodeInfo) -> Result<(), Status> {
        for (c, counts) in self.constraints.iter().zip(&self.counts) {
            let Some(value) = ni.labels().get(&c.key) else { return Err(Status::unresolvable(NODE_LABEL_NOT_MATCH)) };
            let own = i64::from(podutil::selector_matches(c.selector.as_ref(), pod.labels()));
            let min = if counts.len() < c.min_domains { 0 } else { counts.values().copied().min().unwrap_or(0) };
            if counts.get(value).copied().unwrap_or(0) + own - min > c.max_skew {
                return Err(Status::unschedulable(CONSTRAINTS_NOT_MATCH));
            }
        }
        Ok(())
    }
}

/// PodTopologySpread score of each node in `feasible`, 0..=100 (fewer matching pods in the
/// node's domains is better). `default_selector` selects the pods of the pod's Services and
/// controller, for the system default constraints.
pub fn score(pod: &Pod, snap: &Snapshot, feasible: &[usize], default_selector: Option<LabelSelector>) -> Vec<i64> {
    let explicit = pod.spec.as_ref().and_then(|s| s.topology_spread_constraints.as_ref()).is_some_and(|c| !c.is_empty());
    let cs = match (explicit, default_selector) {
        (true, _) => constraints(pod, "ScheduleAnyway"),
        (false, Some(sel)) => Constraint::defaults(sel),
        (false, None) => Vec::new(),
    };
    if cs.is_empty() {
        return vec![0; feasible.len()];
    }
    // With explicit constraints, nodes missing a key are ignored (scored 0).
    let ignored: HashSet<usize> = feasible.iter().copied().filter(|&i| explicit && !has_all_keys(&cs, &snap.nodes[i])).collect();
    let scored: Vec<usize> = feasible.iter().copied().filter(|i| !ignored.contains(i)).collect();
    let value = |c: &Constraint, ni: &NodeInfo| ni.labels().get(&c.key).cloned().unwrap_or_default();
    let domains: Vec<HashSet<String>> = cs.iter().map(|c| scored.iter().map(|&i| value(c, &snap.nodes[i])).collect()).collect();
    let weights: Vec<f64> = cs
        .iter()
        .zip(&domains)
        .map(|(c, d)| if c.key == HOSTNAME { scored.len() } else { d.len() })
        .map(|size| ((size + 2) as f64).ln())
        .collect();
    let ns = pod.namespace().unwrap_or_default();
    let mut counts: Vec<HashMap<String, i64>> = vec![HashMap::new(); cs.len()];
    for ni in snap.nodes.iter().filter(|ni| !explicit || has_all_keys(&cs, ni)) {
        for (i, c) in cs.iter().enumerate().filter(|(i, c)| c.key != HOSTNAME && c.includes(pod, ni) && domains[*i].contains(&value(c, ni))) {
            *counts[i].entry(value(c, ni)).or_default() += c.count(&ns, ni);
        }
    }
    let raw: HashMap<usize, i64> = scored
        .iter()
        .map(|&n| {
            let ni = &snap.nodes[n];
            let s: f64 = cs
                .iter()
                .enumerate()
                .filter(|(_, c)| ni.labels().contains_key(&c.key))
                .map(|(i, c)| {
                    let cnt = if c.key == HOSTNAME { c.count(&ns, ni) } else { counts[i].get(&value(c, ni)).copied().unwrap_or(0) };
                    cnt as f64 * weights[i] + (c.max_skew - 1) as f64
                })
                .sum();
            (n, s.round() as i64)
        })
        .collect();
    let (min, max) = (raw.values().copied().min().unwrap_or(0), raw.values().copied().max().unwrap_or(0));
    feasible
        .iter()
        .map(|i| match raw.get(i) {
            None => 0,
            Some(_) if max == 0 => 100,
            Some(s) => 100 * (max + min - s) / max,
        })
        .collect()
}
