//! InterPodAffinity: required pod affinity and anti-affinity, the incoming pod's and existing
//! pods' (filter), and the preferred terms of both (score), over any topologyKey.

use std::collections::{HashMap, HashSet};

use k8s_openapi::api::core::v1::{Pod, PodAffinityTerm, WeightedPodAffinityTerm};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, LabelSelectorRequirement};
use kube::ResourceExt;

use super::filters::Status;
use super::snapshot::{NodeInfo, Snapshot};
use crate::podutil;

pub const AFFINITY_RULES: &str = "node(s) didn't match pod affinity rules";
pub const ANTI_AFFINITY_RULES: &str = "node(s) didn't match pod anti-affinity rules";
pub const EXISTING_ANTI_AFFINITY: &str = "node(s) didn't satisfy existing pods anti-affinity rules";
/// Upstream's `HardPodAffinityWeight` default: how much an existing pod's required affinity
/// to the incoming pod counts in scoring.
const HARD_POD_AFFINITY_WEIGHT: i64 = 1;

/// (topologyKey, value) → count or weight.
type TopologyCounts = HashMap<(String, String), i64>;

/// A pod affinity term of `owner`, ready to match pods (upstream's `framework.AffinityTerm`).
struct Term {
    namespaces: HashSet<String>,
    namespace_selector: Option<LabelSelector>,
    selector: Option<LabelSelector>,
    topology_key: String,
    weight: i64,
}

impl Term {
    fn new(owner: &Pod, t: &PodAffinityTerm, weight: i64) -> Term {
        let mut namespaces: HashSet<String> = t.namespaces.iter().flatten().cloned().collect();
        if namespaces.is_empty() && t.namespace_selector.is_none() {
            namespaces.insert(owner.namespace().unwrap_or_default());
        }
        // matchLabelKeys / mismatchLabelKeys: the owner's values join the selector.
        let mut selector = t.label_selector.clone();
        if let Some(sel) = selector.as_mut() {
            let keyed = |keys: &Option<Vec<String>>, op: &str| -> Vec<LabelSelectorRequirement> {
                let values = keys.iter().flatten().filter_map(|k| owner.labels().get(k).map(|v| (k, v)));
                values.map(|(k, v)| LabelSelectorRequirement { key: k.clone(), operator: op.into(), values: Some(vec![v.clone()]) }).collect()
            };
            let extra = [keyed(&t.match_label_keys, "In"), keyed(&t.mismatch_label_keys, "NotIn")].concat();
            if !extra.is_empty() {
                sel.match_expressions.get_or_insert_with(Vec::new).extend(extra);
            }
        }
        Term { namespaces, namespace_selector: t.namespace_selector.clone(), selector, topology_key: t.topology_key.clone(), weight }
    }

    /// Whether `pod` is in the term's namespaces and matches its label selector.
    fn matches(&self, pod: &Pod, snap: &Snapshot) -> bool {
        let ns = pod.namespace().unwrap_or_default();
        let ns_ok = self.namespaces.contains(&ns) || self.namespace_selector.as_ref().is_some_and(|s| podutil::selector_matches(Some(s), &snap.namespace_labels(&ns)));
        ns_ok && podutil::selector_matches(self.selector.as_ref(), pod.labels())
    }

    /// The domain of `ni` for this term's topology key.
    fn domain(&self, ni: &NodeInfo) -> Option<(String, String)> {
        ni.labels().get(&self.topology_key).map(|v| (self.topology_key.clone(), v.clone()))
    }
}

/// The pod's terms: (required affinity, required anti-affinity, preferred affinity,
/// preferred anti-affinity).
fn terms(pod: &Pod) -> [Vec<Term>; 4] {
    let affinity = pod.spec.as_ref().and_then(|s| s.affinity.as_ref());
    let aff = affinity.and_then(|a| a.pod_affinity.as_ref());
    let anti = affinity.and_then(|a| a.pod_anti_affinity.as_ref());
    let required = |r: Option<&Vec<PodAffinityTerm>>| r.into_iter().flatten().map(|t| Term::new(pod, t, 1)).collect::<Vec<_>>();
    let preferred = |r: Option<&Vec<WeightedPodAffinityTerm>>| r.into_iter().flatten().map(|w| Term::new(pod, &w.pod_affinity_term, w.weight.into())).collect::<Vec<_>>();
    [
        required(aff.and_then(|a| a.required_during_scheduling_ignored_during_execution.as_ref())),
        required(anti.and_then(|a| a.required_during_scheduling_ignored_during_execution.as_ref())),
        preferred(aff.and_then(|a| a.preferred_during_scheduling_ignored_during_execution.as_ref())),
        preferred(anti.and_then(|a| a.preferred_during_scheduling_ignored_during_execution.as_ref())),
    ]
}

fn has_affinity(pod: &Pod) -> bool {
    pod.spec.as_ref().and_then(|s| s.affinity.as_ref()).is_some_and(|a| a.pod_affinity.is_some() || a.pod_anti_affinity.is_some())
}

/// Upstream's PreFilter state: existing pods counted per topology domain.
pub struct FilterState {
    affinity: Vec<Term>,
    anti: Vec<Term>,
    /// Domains holding pods that match every required affinity term.
    affinity_counts: TopologyCounts,
    /// Domains holding pods that match a required anti-affinity term.
    anti_counts: TopologyCounts,
    /// Domains where an existing pod's required anti-affinity matches the incoming pod.
    existing_anti: TopologyCounts,
    /// The pod matches its own affinity terms (the first of a group may go anywhere).
    self_matches: bool,
}

impl FilterState {
    pub fn new(pod: &Pod, snap: &Snapshot) -> FilterState {
        let [affinity, anti, _, _] = terms(pod);
        let mut state = FilterState { affinity, anti, affinity_counts: HashMap::new(), anti_counts: HashMap::new(), existing_anti: HashMap::new(), self_matches: false };
        for (ni, existing) in snap.pods() {
            if has_affinity(existing) {
                for t in terms(existing)[1].iter().filter(|t| t.matches(pod, snap)) {
                    add(&mut state.existing_anti, t.domain(ni), 1);
                }
            }
            if !state.affinity.is_empty() && state.affinity.iter().all(|t| t.matches(existing, snap)) {
                for t in &state.affinity {
                    add(&mut state.affinity_counts, t.domain(ni), 1);
                }
            }
            for t in state.anti.iter().filter(|t| t.matches(existing, snap)) {
                add(&mut state.anti_counts, t.domain(ni), 1);
            }
        }
        state.self_matches = !state.affinity.is_empty() && state.affinity.iter().all(|t| t.matches(pod, snap));
        state
    }

    pub fn filter(&self, ni: &NodeInfo) -> Result<(), Status> {
        let mut pods_exist = true;
        for t in &self.affinity {
            let Some(domain) = t.domain(ni) else { return Err(Status::unresolvable(AFFINITY_RULES)) };
            if self.affinity_counts.get(&domain).copied().unwrap_or(0) <= 0 {
                pods_exist = false;
            }
        }
        // The first of a group with affinity to itself may go anywhere.
        let first_of_group = self.affinity_counts.is_empty() && self.self_matches;
        if !(pods_exist || first_of_group) {
            return Err(Status::unresolvable(AFFINITY_RULES));
        }
        if self.anti.iter().filter_map(|t| t.domain(ni)).any(|d| self.anti_counts.get(&d).copied().unwrap_or(0) > 0) {
            return Err(Status::unschedulable(ANTI_AFFINITY_RULES));
        }
        if !self.existing_anti.is_empty() && ni.labels().iter().any(|(k, v)| self.existing_anti.get(&(k.clone(), v.clone())).copied().unwrap_or(0) > 0) {
            return Err(Status::unschedulable(EXISTING_ANTI_AFFINITY));
        }
        Ok(())
    }
}

fn add(counts: &mut TopologyCounts, domain: Option<(String, String)>, n: i64) {
    if let Some(d) = domain {
        *counts.entry(d).or_default() += n;
    }
}

/// InterPodAffinity score of each node in `feasible` (indices into the snapshot), 0..=100:
/// the incoming pod's preferred (anti-)affinity to existing pods, and existing pods' required
/// and preferred (anti-)affinity to the incoming pod, summed per domain, min-max normalized.
pub fn score(pod: &Pod, snap: &Snapshot, feasible: &[usize]) -> Vec<i64> {
    let [_, _, preferred, preferred_anti] = terms(pod);
    let mut topo = TopologyCounts::new();
    for (ni, existing) in snap.pods() {
        for t in preferred.iter().filter(|t| t.matches(existing, snap)) {
            add(&mut topo, t.domain(ni), t.weight);
        }
        for t in preferred_anti.iter().filter(|t| t.matches(existing, snap)) {
            add(&mut topo, t.domain(ni), -t.weight);
        }
        if !has_affinity(existing) {
            continue;
        }
        let [required, _, their_preferred, their_anti] = terms(existing);
        for t in required.iter().filter(|t| t.matches(pod, snap)) {
            add(&mut topo, t.domain(ni), HARD_POD_AFFINITY_WEIGHT);
        }
        for t in their_preferred.iter().filter(|t| t.matches(pod, snap)) {
            add(&mut topo, t.domain(ni), t.weight);
        }
        for t in their_anti.iter().filter(|t| t.matches(pod, snap)) {
            add(&mut topo, t.domain(ni), -t.weight);
        }
    }
    let raw: Vec<i64> = feasible
        .iter()
        .map(|&i| snap.nodes[i].labels().iter().map(|(k, v)| topo.get(&(k.clone(), v.clone())).copied().unwrap_or(0)).sum())
        .collect();
    let (min, max) = (raw.iter().copied().min().unwrap_or(0), raw.iter().copied().max().unwrap_or(0));
    raw.iter().map(|s| if max > min { 100 * (s - min) / (max - min) } else { 0 }).collect()
}
