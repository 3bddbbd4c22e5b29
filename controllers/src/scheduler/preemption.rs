//! DefaultPreemption: when a pod fits nowhere, find the node where evicting pods of lower
//! priority makes room, evicting as few and as unimportant pods as possible.
//!
//! Nodes whose filter failure removing pods cannot cure (`UnschedulableAndUnresolvable`)
//! are skipped. On each other node every lower-priority pod is removed; if the pod then fits,
//! the removed pods are put back most important first (higher priority, then earlier start)
//! as long as it still fits, and the rest are the victims. Of the candidates, the node with
//! the lowest highest victim priority, then the lowest sum of priorities, then the fewest
//! victims, then the latest start of its highest-priority victims wins.

use std::sync::Arc;

use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;

use super::filters::{filter, PodCtx, Status};
use super::snapshot::{nominated_node, priority, Snapshot};

pub const NOT_HELPFUL: &str = "Preemption is not helpful for scheduling";
pub const NO_VICTIMS: &str = "No preemption victims found for incoming pod";
pub const REASON: &str = "PreemptionByScheduler";

/// A node and the pods to evict from it.
pub struct Candidate {
    pub node: String,
    pub victims: Vec<Arc<Pod>>,
}

/// A pod the scheduler is already evicting (being deleted, with its DisruptionTarget).
fn terminating_by_preemption(p: &Pod) -> bool {
    let conds = p.status.as_ref().and_then(|s| s.conditions.as_ref());
    p.metadata.deletion_timestamp.is_some() && conds.into_iter().flatten().any(|c| c.type_ == "DisruptionTarget" && c.reason.as_deref() == Some(REASON))
}

/// Upstream's `PodEligibleToPreemptOthers`: the reason why not, if not.
pub fn eligible(pod: &Pod, snap: &Snapshot) -> Result<(), String> {
    if pod.spec.as_ref().and_then(|s| s.preemption_policy.as_deref()) == Some("Never") {
        return Err("not eligible due to preemptionPolicy=Never.".into());
    }
    let nominated = snap.index(nominated_node(pod)).map(|i| &snap.nodes[i]);
    if nominated.is_some_and(|ni| ni.pods.iter().any(|p| priority(p) < priority(pod) && terminating_by_preemption(p))) {
        return Err("not eligible due to a terminating pod on the nominated node.".into());
    }
    Ok(())
}

/// The best candidate, given each node's filter status; else the `0/N nodes are available`
/// message of the dry run.
pub fn find(pod: &Pod, snap: &Snapshot, statuses: &[Status]) -> Result<Candidate, String> {
    let mut reasons: Vec<String> = Vec::new();
    let mut candidates: Vec<Candidate> = Vec::new();
    for (i, status) in statuses.iter().enumerate() {
        if status.unresolvable {
            reasons.push(NOT_HELPFUL.into());
            continue;
        }
        match select_victims(pod, snap, i) {
            Ok(victims) => candidates.push(Candidate { node: snap.nodes[i].name.clone(), victims }),
            Err(s) => reasons.extend(s.reasons),
        }
    }
    if candidates.is_empty() {
        return Err(super::fit_error(snap.nodes.len(), &reasons));
    }
    Ok(pick(candidates))
}

fn fits(pod: &Pod, snap: &Snapshot, i: usize) -> Result<(), Status> {
    filter(&PodCtx::new(pod, snap), &snap.nodes[i])
}

fn start_time(p: &Pod) -> i64 {
    p.status.as_ref().and_then(|s| s.start_time.as_ref()).map_or(i64::MAX, |t| t.0.as_second())
}

/// Upstream's `selectVictimsOnNode`.
fn select_victims(pod: &Pod, snap: &Snapshot, i: usize) -> Result<Vec<Arc<Pod>>, Status> {
    let mut potential: Vec<Arc<Pod>> = snap.nodes[i].pods.iter().filter(|p| priority(p) < priority(pod)).cloned().collect();
    if potential.is_empty() {
        return Err(Status::unresolvable(NO_VICTIMS));
    }
    let mut trial = snap.clone();
    for p in &potential {
        trial.nodes[i].remove_pod(&p.uid().unwrap_or_default());
    }
    fits(pod, &trial, i)?;
    potential.sort_by_key(|p| (std::cmp::Reverse(priority(p)), start_time(p)));
    let mut victims = Vec::new();
    for p in potential {
        trial.nodes[i].add_pod(p.clone());
        if fits(pod, &trial, i).is_err() {
            trial.nodes[i].remove_pod(&p.uid().unwrap_or_default());
            victims.push(p);
        }
    }
    Ok(victims)
}

/// Upstream's `pickOneNodeForPreemption` (without PodDisruptionBudgets).
fn pick(candidates: Vec<Candidate>) -> Candidate {
    let key = |c: &Candidate| {
        let highest = c.victims.iter().map(|p| priority(p)).max().unwrap_or(i32::MIN);
        let sum: i64 = c.victims.iter().map(|p| i64::from(priority(p)) + i64::from(i32::MAX) + 1).sum();
        let earliest_of_highest = c.victims.iter().filter(|p| priority(p) == highest).map(|p| start_time(p)).min().unwrap_or(i64::MAX);
        (highest, sum, c.victims.len(), std::cmp::Reverse(earliest_of_highest))
    };
    let best = candidates.iter().enumerate().min_by_key(|(i, c)| (key(c), *i)).map_or(0, |(i, _)| i);
    candidates.into_iter().nth(best).expect("a candidate")
}
