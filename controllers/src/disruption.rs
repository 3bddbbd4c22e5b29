//! The disruption controller (upstream's `disruption`): keeps every PodDisruptionBudget's
//! status — `currentHealthy`, `desiredHealthy`, `expectedPods`, `disruptionsAllowed`,
//! `disruptedPods`, `observedGeneration` and the `DisruptionAllowed` condition
//! (SufficientPods / InsufficientPods, SyncFailed when the expected count cannot be known).
//!
//! A `Controller` over PDBs that also watches pods (a pod wakes the budgets of its namespace
//! whose selector matches it). A reconcile lists the namespace's pods live:
//! - `minAvailable: N` expects the selected pods and desires N healthy;
//! - `minAvailable: P%` and `maxUnavailable` (int or percent) expect the summed scale of the
//!   pods' controllers (ReplicaSet — its Deployment's when it has one —,
//!   ReplicationController, StatefulSet); desired = ceil(P% of expected), or expected minus
//!   maxUnavailable (percent rounded up); a selected pod without a known controller fails
//!   the sync safe (no disruptions allowed, upstream's events NoControllerRef/NoControllers);
//! - healthy pods are Ready, not being deleted and not in `disruptedPods` (the pods the
//!   eviction subresource is deleting; entries expire after two minutes or when the pod
//!   goes), and `disruptionsAllowed = max(0, currentHealthy - desiredHealthy)` (0 when
//!   nothing is expected).
//! The status is written through `/status` guarded by the budget's resourceVersion, so a
//! decrement by an eviction is never overwritten (409: retried).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet, StatefulSet};
use k8s_openapi::api::core::v1::{Pod, ReplicationController};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::{Api, ListParams, PostParams};
use kube::runtime::controller::Action;
use kube::runtime::reflector::ObjectRef;
use kube::runtime::{watcher, Controller};
use kube::ResourceExt;
use serde_json::{json, Value};

use crate::podutil::{self, controller_of, selector_matches};
use crate::Ctx;

const MANAGER: &str = "disruption-controller";
/// How long an eviction's entry in `disruptedPods` is trusted (upstream's `DeletionTimeout`).
const DELETION_TIMEOUT: i64 = 120;
const RESYNC: Duration = Duration::from_secs(30);
const RETRY: Duration = Duration::from_secs(1);

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("listing the pods of pdb {0}: {1}")]
    ListFailed(String, #[source] kube::Error),
    #[error("updating the status of pdb {0}: {1}")]
    StatusUpdateFailed(String, #[source] kube::Error),
}

pub async fn run(ctx: Arc<Ctx>) -> Result<(), crate::Error> {
    let client = ctx.client.clone();
    let controller = Controller::new(Api::<PodDisruptionBudget>::all(client.clone()), watcher::Config::default());
    let store = controller.store();
    controller
        .watches(Api::<Pod>::all(client), watcher::Config::default(), move |pod: Pod| {
            let ns = pod.namespace();
            store
                .state()
                .iter()
                .filter(|pdb| pdb.namespace() == ns && selector_matches(pdb.spec.as_ref().and_then(|s| s.selector.as_ref()), pod.labels()))
                .map(|pdb| ObjectRef::from_obj(&**pdb))
                .collect::<Vec<_>>()
        })
        .run(reconcile, error_policy, ctx)
        .for_each(|res| async move {
            if let Err(e) = res {
                tracing::debug!(error = %e, "disruption reconcile failed");
            }
        })
        .await;
    Ok(())
}

fn error_policy(pdb: Arc<PodDisruptionBudget>, err: &Error, _ctx: Arc<Ctx>) -> Action {
    tracing::debug!(pdb = %pdb.name_any(), error = %err, "pdb sync will be retried");
    Action::requeue(RETRY)
}

/// `value` of `total` (upstream's `GetScaledValueFromIntOrPercent`).
pub fn scaled(value: &IntOrString, total: i64, round_up: bool) -> Option<i64> {
    match value {
        IntOrString::Int(n) => Some(*n as i64),
        IntOrString::String(s) => {
            let pct: i64 = s.strip_suffix('%')?.parse().ok()?;
            let x = pct * total;
            Some(if round_up { (x + 99).div_euclid(100) } else { x.div_euclid(100) })
        }
    }
}

/// The scale of the controller `kind/name` of a pod in `ns`, if krust knows that kind.
async fn controller_scale(ctx: &Ctx, ns: &str, kind: &str, name: &str) -> Option<i64> {
    let c = ctx.client.clone();
    match kind {
        "ReplicaSet" => {
            let rs = Api::<ReplicaSet>::namespaced(c.clone(), ns).get(name).await.ok()?;
            if let Some(owner) = controller_of(rs.owner_references()).filter(|o| o.kind == "Deployment") {
                let d = Api::<Deployment>::namespaced(c, ns).get(&owner.name).await.ok()?;
                return Some(d.spec.and_then(|s| s.replicas).unwrap_or(1) as i64);
            }
            Some(rs.spec.and_then(|s| s.replicas).unwrap_or(1) as i64)
        }
        "ReplicationController" => {
            let rc = Api::<ReplicationController>::namespaced(c, ns).get(name).await.ok()?;
            Some(rc.spec.and_then(|s| s.replicas).unwrap_or(1) as i64)
        }
        "StatefulSet" => {
            let sts = Api::<StatefulSet>::namespaced(c, ns).get(name).await.ok()?;
            Some(sts.spec.and_then(|s| s.replicas).unwrap_or(1) as i64)
        }
        "Deployment" => {
            let d = Api::<Deployment>::namespaced(c, ns).get(name).await.ok()?;
            Some(d.spec.and_then(|s| s.replicas).unwrap_or(1) as i64)
        }
        _ => None,
    }
}

/// Upstream's `getExpectedScale`: the summed scale of the pods' controllers.
async fn expected_scale(ctx: &Ctx, pdb: &PodDisruptionBudget, pods: &[Pod]) -> Result<i64, (String, String)> {
    let ns = pdb.namespace().unwrap_or_default();
    let mut scales: BTreeMap<String, i64> = BTreeMap::new();
    for pod in pods {
        let Some(owner) = controller_of(pod.owner_references()) else {
            return Err(("NoControllerRef".into(), format!("found no controller ref for pod \"{}\"", pod.name_any())));
        };
        if scales.contains_key(&owner.uid) {
            continue;
        }
        match controller_scale(ctx, &ns, &owner.kind, &owner.name).await {
            Some(n) => {
                scales.insert(owner.uid.clone(), n);
            }
            None => return Err(("NoControllers".into(), format!("found no controllers for pod \"{}\"", pod.name_any()))),
        }
    }
    Ok(scales.values().sum())
}

/// Upstream's `buildDisruptedPodMap`: entries still trusted; and the earliest expiry.
fn disrupted_pods(pdb: &PodDisruptionBudget, pods: &[Pod], now: i64) -> (BTreeMap<String, String>, Option<i64>) {
    let old = pdb.status.as_ref().and_then(|s| s.disrupted_pods.clone()).unwrap_or_default();
    let mut kept = BTreeMap::new();
    let mut next: Option<i64> = None;
    for pod in pods {
        if pod.metadata.deletion_timestamp.is_some() {
            continue;
        }
        let Some(t) = old.get(&pod.name_any()) else { continue };
        let expires = t.0.as_second() + DELETION_TIMEOUT;
        if expires <= now {
            continue;
        }
        next = Some(next.map_or(expires, |n| n.min(expires)));
        kept.insert(pod.name_any(), serde_json::to_value(t).ok().and_then(|v| v.as_str().map(String::from)).unwrap_or_default());
    }
    (kept, next)
}

async fn reconcile(pdb: Arc<PodDisruptionBudget>, ctx: Arc<Ctx>) -> Result<Action, Error> {
    if pdb.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let name = pdb.name_any();
    let ns = pdb.namespace().unwrap_or_default();
    let spec = pdb.spec.clone().unwrap_or_default();
    let all = Api::<Pod>::namespaced(ctx.client.clone(), &ns).list(&ListParams::default()).await.map_err(|e| Error::ListFailed(name.clone(), e))?;
    let pods: Vec<Pod> = all.items.into_iter().filter(|p| selector_matches(spec.selector.as_ref(), p.labels())).collect();
    let now = podutil::now_secs();

    let counts: Result<(i64, i64), (String, String)> = match (&spec.min_available, &spec.max_unavailable) {
        (Some(IntOrString::Int(n)), _) => Ok((pods.len() as i64, *n as i64)),
        (Some(min @ IntOrString::String(_)), _) => match expected_scale(&ctx, &pdb, &pods).await {
            Ok(expected) => scaled(min, expected, true).map(|d| (expected, d)).ok_or_else(|| ("InvalidSpec".into(), "invalid minAvailable".into())),
            Err(e) => Err(e),
        },
        (None, Some(max)) => match expected_scale(&ctx, &pdb, &pods).await {
            Ok(expected) => scaled(max, expected, true)
                .map(|m| (expected, (expected - m).max(0)))
                .ok_or_else(|| ("InvalidSpec".into(), "invalid maxUnavailable".into())),
            Err(e) => Err(e),
        },
        (None, None) => Ok((0, 0)),
    };
    let (disrupted, next_expiry) = disrupted_pods(&pdb, &pods, now);
    let status = match counts {
        Ok((expected, desired)) => {
            let healthy =
                pods.iter().filter(|p| !disrupted.contains_key(&p.name_any()) && p.metadata.deletion_timestamp.is_none() && podutil::is_ready(p)).count() as i64;
            let allowed = if expected <= 0 { 0 } else { (healthy - desired).max(0) };
            let (cond_status, reason) = if allowed > 0 { ("True", "SufficientPods") } else { ("False", "InsufficientPods") };
            new_status(&pdb, healthy, desired, expected, allowed, &disrupted, cond_status, reason, "")
        }
        Err((reason, message)) => {
            podutil::event(&ctx, &*pdb, true, &reason, "Sync", message.clone()).await;
            let old = pdb.status.as_ref();
            let (healthy, desired, expected) =
                old.map_or((0, 0, 0), |s| (s.current_healthy as i64, s.desired_healthy as i64, s.expected_pods as i64));
            new_status(&pdb, healthy, desired, expected, 0, &disrupted, "False", "SyncFailed", &message)
        }
    };
    let old = serde_json::to_value(&pdb.status).unwrap_or(Value::Null);
    if normalize(&status) != normalize(&old) {
        let mut obj = serde_json::to_value(&*pdb).unwrap_or_default();
        obj["status"] = status;
        let api: Api<PodDisruptionBudget> = Api::namespaced(ctx.client.clone(), &ns);
        let pp = PostParams { field_manager: Some(MANAGER.into()), ..Default::default() };
        // Guarded by the budget's resourceVersion (in `obj`): an eviction may have consumed it.
        let typed: PodDisruptionBudget = serde_json::from_value(obj).unwrap_or_default();
        api.replace_status(&name, &pp, &typed).await.map_err(|e| Error::StatusUpdateFailed(name.clone(), e))?;
    }
    let wait = next_expiry.map_or(RESYNC, |t| Duration::from_secs((t - now).clamp(1, RESYNC.as_secs() as i64) as u64));
    Ok(Action::requeue(wait))
}

/// A status as the controller compares it: no empty `disruptedPods`, no transition times
/// (kept from the old condition anyway, whatever their formatting).
fn normalize(status: &Value) -> Value {
    let mut s = status.clone();
    if let Some(o) = s.as_object_mut() {
        if o.get("disruptedPods").is_some_and(|d| d.as_object().is_some_and(|m| m.is_empty())) {
            o.remove("disruptedPods");
        }
        if let Some(conds) = o.get_mut("conditions").and_then(Value::as_array_mut) {
            for c in conds {
                if let Some(c) = c.as_object_mut() {
                    c.remove("lastTransitionTime");
                }
            }
        }
    }
    s
}

#[allow(clippy::too_many_arguments)]
fn new_status(
    pdb: &PodDisruptionBudget,
    healthy: i64,
    desired: i64,
    expected: i64,
    allowed: i64,
    disrupted: &BTreeMap<String, String>,
    cond_status: &str,
    reason: &str,
    message: &str,
) -> Value {
    let generation = pdb.metadata.generation.unwrap_or(0);
    let old = pdb.status.as_ref().and_then(|s| s.conditions.as_ref()).and_then(|c| c.iter().find(|c| c.type_ == "DisruptionAllowed"));
    let since = match old {
        Some(c) if c.status == cond_status => serde_json::to_value(&c.last_transition_time).unwrap_or(json!(podutil::now_rfc3339())),
        _ => json!(podutil::now_rfc3339()),
    };
    let mut status = json!({
        "currentHealthy": healthy,
        "desiredHealthy": desired,
        "expectedPods": expected,
        "disruptionsAllowed": allowed,
        "observedGeneration": generation,
        "conditions": [{"type": "DisruptionAllowed", "status": cond_status, "reason": reason, "message": message,
            "observedGeneration": generation, "lastTransitionTime": since}],
    });
    if !disrupted.is_empty() {
        status["disruptedPods"] = json!(disrupted);
    }
    status
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentages_scale_like_upstream() {
        assert_eq!(scaled(&IntOrString::String("90%".into()), 10, true), Some(9));
        assert_eq!(scaled(&IntOrString::String("10%".into()), 3, true), Some(1));
        assert_eq!(scaled(&IntOrString::String("1%".into()), 0, true), Some(0));
        assert_eq!(scaled(&IntOrString::Int(2), 10, true), Some(2));
        assert_eq!(scaled(&IntOrString::String("x".into()), 10, true), None);
    }
}
