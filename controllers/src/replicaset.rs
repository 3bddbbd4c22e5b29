//! The ReplicaSet controller (upstream's `replicaset` controller), and through the same code
//! the ReplicationController controller (`replicationcontroller`).
//!
//! A `Controller` over ReplicaSets that `.owns(...)` pods, and also watches orphan pods so a
//! ReplicaSet whose selector matches one adopts it. Each reconcile lists the namespace's pods
//! live (so no "expectations" bookkeeping is needed against a lagging cache), then:
//! - adopts matching orphans and releases owned pods the selector no longer matches
//!   (merge patches of `ownerReferences` guarded by the pod's resourceVersion, as upstream's
//!   `PodControllerRefManager`);
//! - creates pods from the template (`generateName: <rs>-`, controller ownerReference) or
//!   deletes the surplus, least valuable first (unscheduled, pending, not ready, newest);
//! - writes `status` (replicas, fullyLabeledReplicas, readyReplicas, availableReplicas with
//!   `minReadySeconds`, observedGeneration, the ReplicaFailure condition) through `/status`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::core::v1::{Pod, ReplicationController};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{Api, DeleteParams, ListParams, Patch, PostParams};
use kube::runtime::controller::Action;
use kube::runtime::reflector::ObjectRef;
use kube::runtime::{watcher, Controller};
use kube::ResourceExt;
use serde_json::{json, Value};

use crate::podutil::{self, controller_of, selector_matches};
use crate::Ctx;

/// Upstream's `BurstReplicas`: at most this many creations or deletions per pass.
const BURST: usize = 500;
const RETRY: Duration = Duration::from_secs(2);

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("listing the pods of replicaset {0}: {1}")]
    ListFailed(String, #[source] kube::Error),
    #[error("updating the status of replicaset {0}: {1}")]
    StatusUpdateFailed(String, #[source] kube::Error),
    #[error("managing the pods of replicaset {0}: {1}")]
    ManageFailed(String, String),
}

/// What the controller manages: ReplicaSets, and ReplicationControllers through the same
/// code (their spec and status have the same fields; the selector is a plain map).
pub trait Replicated:
    kube::Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope> + Clone + serde::de::DeserializeOwned + serde::Serialize + std::fmt::Debug + Send + Sync + 'static
{
    /// The field manager of writes.
    const MANAGER: &'static str;
    /// The object as a ReplicaSet (same spec and status fields).
    fn as_replica_set(&self) -> ReplicaSet;
}

impl Replicated for ReplicaSet {
    const MANAGER: &'static str = "replicaset-controller";
    fn as_replica_set(&self) -> ReplicaSet {
        self.clone()
    }
}

impl Replicated for ReplicationController {
    const MANAGER: &'static str = "replication-controller";
    fn as_replica_set(&self) -> ReplicaSet {
        let mut v = serde_json::to_value(self).unwrap_or_default();
        // Upstream defaults a missing selector to the template's labels.
        let mut selector = v["spec"]["selector"].take();
        if selector.as_object().is_none_or(|m| m.is_empty()) {
            selector = v["spec"]["template"]["metadata"]["labels"].clone();
        }
        v["spec"]["selector"] = json!({"matchLabels": selector});
        v["apiVersion"] = json!("apps/v1");
        v["kind"] = json!("ReplicaSet");
        serde_json::from_value(v).unwrap_or_default()
    }
}

pub async fn run(ctx: Arc<Ctx>) -> Result<(), crate::Error> {
    run_for::<ReplicaSet>(ctx).await
}

/// The ReplicationController controller (upstream's `replicationcontroller`): the same code.
pub async fn run_replication_controllers(ctx: Arc<Ctx>) -> Result<(), crate::Error> {
    run_for::<ReplicationController>(ctx).await
}

async fn run_for<K: Replicated>(ctx: Arc<Ctx>) -> Result<(), crate::Error> {
    let sets: Api<K> = Api::all(ctx.client.clone());
    let pods: Api<Pod> = Api::all(ctx.client.clone());
    let controller = Controller::new(sets, watcher::Config::default());
    let store = controller.store();
    controller
        .owns(pods.clone(), watcher::Config::default())
        // An orphan wakes every ReplicaSet of its namespace whose selector matches it.
        .watches(pods, watcher::Config::default(), move |pod: Pod| {
            if controller_of(pod.owner_references()).is_some() || !podutil::is_active(&pod) {
                return Vec::new();
            }
            let ns = pod.namespace();
            store
                .state()
                .into_iter()
                .filter(|obj| {
                    let rs = obj.as_replica_set();
                    rs.namespace() == ns && selector_matches(rs.spec.as_ref().map(|s| &s.selector), pod.labels())
                })
                .map(|rs| ObjectRef::from_obj(&*rs))
                .collect::<Vec<_>>()
        })
        .run(reconcile, error_policy, ctx)
        .for_each(|res| async move {
            if let Err(e) = res {
                tracing::debug!(error = %e, "replicaset reconcile failed");
            }
        })
        .await;
    Ok(())
}

fn error_policy<K: Replicated>(rs: Arc<K>, err: &Error, _ctx: Arc<Ctx>) -> Action {
    tracing::warn!(replicaset = %rs.name_any(), error = %err, "replicaset sync will be retried");
    Action::requeue(RETRY)
}

/// Pods of `rs` after adoption and release: the active ones it controls.
async fn claim_pods(ctx: &Ctx, rs: &ReplicaSet, oref: &OwnerReference, manager: &str, all: Vec<Pod>) -> Vec<Pod> {
    let uid = rs.uid().unwrap_or_default();
    let selector = rs.spec.as_ref().map(|s| &s.selector);
    let api: Api<Pod> = Api::namespaced(ctx.client.clone(), &rs.namespace().unwrap_or_default());
    let pp = crate::patch_params(manager);
    let mut owned = Vec::new();
    for pod in all {
        let matches = selector_matches(selector, pod.labels());
        match controller_of(pod.owner_references()) {
            Some(r) if r.uid == uid => {
                if matches {
                    owned.push(pod);
                    continue;
                }
                // Release: drop our reference (guarded by the pod's resourceVersion).
                let refs: Vec<_> = pod.owner_references().iter().filter(|r| r.uid != uid).cloned().collect();
                let refs = if refs.is_empty() { Value::Null } else { json!(refs) };
                let patch = json!({"metadata": {"resourceVersion": pod.resource_version(), "ownerReferences": refs}});
                if let Err(e) = api.patch(&pod.name_any(), &pp, &Patch::Merge(patch)).await {
                    tracing::debug!(pod = %pod.name_any(), error = %e, "releasing a pod failed");
                }
            }
            Some(_) => {}
            None if matches && podutil::is_active(&pod) && rs.metadata.deletion_timestamp.is_none() => {
                let mut refs = pod.owner_references().to_vec();
                refs.push(oref.clone());
                let patch = json!({"metadata": {"resourceVersion": pod.resource_version(), "ownerReferences": refs}});
                match api.patch(&pod.name_any(), &pp, &Patch::Merge(patch)).await {
                    Ok(adopted) => owned.push(adopted),
                    Err(e) => tracing::debug!(pod = %pod.name_any(), error = %e, "adopting a pod failed"),
                }
            }
            None => {}
        }
    }
    owned.retain(podutil::is_active);
    owned
}

/// A pod to create from the template of `rs`.
pub fn pod_from_template(rs: &ReplicaSet, oref: &OwnerReference) -> Pod {
    let template = rs.spec.as_ref().and_then(|s| s.template.clone()).unwrap_or_default();
    let tmeta = template.metadata.unwrap_or_default();
    let mut pod = Pod { spec: template.spec, ..Default::default() };
    pod.metadata.generate_name = Some(format!("{}-", rs.name_any()));
    pod.metadata.labels = tmeta.labels;
    pod.metadata.annotations = tmeta.annotations;
    pod.metadata.finalizers = tmeta.finalizers;
    pod.metadata.owner_references = Some(vec![oref.clone()]);
    pod
}

/// Deletion order, most deletable first (upstream's `ActivePodsWithRanks` without ranks):
/// unassigned before assigned, Pending before Unknown before Running, not ready before ready,
/// recently ready before long ready, newer before older.
fn deletion_order(a: &Pod, b: &Pod) -> std::cmp::Ordering {
    let assigned = |p: &Pod| p.spec.as_ref().and_then(|s| s.node_name.as_deref()).is_some_and(|n| !n.is_empty());
    let phase = |p: &Pod| match p.status.as_ref().and_then(|s| s.phase.as_deref()).unwrap_or_default() {
        "Pending" | "" => 0,
        "Unknown" => 1,
        _ => 2,
    };
    let created = |p: &Pod| p.metadata.creation_timestamp.as_ref().map_or(0, |t| t.0.as_second());
    assigned(a)
        .cmp(&assigned(b))
        .then(phase(a).cmp(&phase(b)))
        .then(podutil::is_ready(a).cmp(&podutil::is_ready(b)))
        .then(podutil::ready_since(b).cmp(&podutil::ready_since(a)))
        .then(created(b).cmp(&created(a)))
}

async fn reconcile<K: Replicated>(obj: Arc<K>, ctx: Arc<Ctx>) -> Result<Action, Error> {
    let rs = obj.as_replica_set();
    let oref = podutil::controller_ref(&*obj);
    let name = rs.name_any();
    let ns = rs.namespace().unwrap_or_default();
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), &ns);
    let all = pods.list(&ListParams::default()).await.map_err(|e| Error::ListFailed(name.clone(), e))?.items;
    let owned = claim_pods(&ctx, &rs, &oref, K::MANAGER, all).await;

    let mut failure: Option<String> = None;
    if rs.metadata.deletion_timestamp.is_none() {
        let want = rs.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1).max(0) as usize;
        if owned.len() < want {
            let pp = PostParams { field_manager: Some(K::MANAGER.into()), ..Default::default() };
            for _ in 0..(want - owned.len()).min(BURST) {
                match pods.create(&pp, &pod_from_template(&rs, &oref)).await {
                    Ok(p) => podutil::event(&ctx, &*obj, false, "SuccessfulCreate", "Create", format!("Created pod: {}", p.name_any())).await,
                    Err(e) => {
                        podutil::event(&ctx, &*obj, true, "FailedCreate", "Create", format!("Error creating: {e}")).await;
                        failure = Some(e.to_string());
                        break;
                    }
                }
            }
        } else if owned.len() > want {
            let mut victims = owned.clone();
            victims.sort_by(deletion_order);
            for pod in victims.iter().take((owned.len() - want).min(BURST)) {
                match pods.delete(&pod.name_any(), &DeleteParams::default()).await {
                    Ok(_) => podutil::event(&ctx, &*obj, false, "SuccessfulDelete", "Delete", format!("Deleted pod: {}", pod.name_any())).await,
                    Err(kube::Error::Api(s)) if s.code == 404 => {}
                    Err(e) => {
                        podutil::event(&ctx, &*obj, true, "FailedDelete", "Delete", format!("Error deleting: {e}")).await;
                        failure = Some(e.to_string());
                    }
                }
            }
        }
    }

    let requeue = update_status::<K>(&ctx, &rs, &owned, failure.as_deref()).await?;
    if let Some(msg) = failure {
        return Err(Error::ManageFailed(name, msg));
    }
    Ok(requeue.map_or(Action::await_change(), |s| Action::requeue(Duration::from_secs(s.max(1) as u64))))
}

/// Writes the status computed from `owned` if it changed; returns in how many seconds a
/// ready pod becomes available (to look again then).
async fn update_status<K: Replicated>(ctx: &Ctx, rs: &ReplicaSet, owned: &[Pod], failure: Option<&str>) -> Result<Option<i64>, Error> {
    let spec = rs.spec.as_ref();
    let min_ready = spec.and_then(|s| s.min_ready_seconds).unwrap_or(0) as i64;
    let template_labels: BTreeMap<String, String> =
        spec.and_then(|s| s.template.as_ref()).and_then(|t| t.metadata.as_ref()).and_then(|m| m.labels.clone()).unwrap_or_default();
    let now = podutil::now_secs();
    let mut next: Option<i64> = None;
    let (mut ready, mut available, mut labeled) = (0, 0, 0);
    for pod in owned {
        if template_labels.iter().all(|(k, v)| pod.labels().get(k) == Some(v)) {
            labeled += 1;
        }
        if podutil::is_ready(pod) {
            ready += 1;
        }
        match podutil::availability(pod, min_ready, now) {
            Ok(()) => available += 1,
            Err(Some(left)) => next = Some(next.map_or(left, |n: i64| n.min(left))),
            Err(None) => {}
        }
    }
    let status = rs.status.as_ref();
    let old_conds: Vec<Value> = status
        .and_then(|s| s.conditions.as_ref())
        .map(|c| c.iter().map(|c| serde_json::to_value(c).unwrap_or_default()).collect())
        .unwrap_or_default();
    let old_failure = old_conds.iter().find(|c| c["type"] == "ReplicaFailure").cloned();
    let mut conds: Vec<Value> = old_conds.iter().filter(|c| c["type"] != "ReplicaFailure").cloned().collect();
    if let Some(msg) = failure {
        let same = old_failure.as_ref().is_some_and(|c| c["message"] == msg);
        conds.push(match (same, old_failure) {
            (true, Some(c)) => c,
            _ => json!({"type": "ReplicaFailure", "status": "True", "reason": "FailedCreate", "message": msg, "lastTransitionTime": podutil::now_rfc3339()}),
        });
    }
    let new = json!({
        "replicas": owned.len(),
        "fullyLabeledReplicas": labeled,
        "readyReplicas": ready,
        "availableReplicas": available,
        "observedGeneration": rs.metadata.generation.unwrap_or(0),
        "conditions": if conds.is_empty() { Value::Null } else { json!(conds) },
    });
    let old = json!({
        "replicas": status.map_or(0, |s| s.replicas),
        "fullyLabeledReplicas": status.and_then(|s| s.fully_labeled_replicas).unwrap_or(0),
        "readyReplicas": status.and_then(|s| s.ready_replicas).unwrap_or(0),
        "availableReplicas": status.and_then(|s| s.available_replicas).unwrap_or(0),
        "observedGeneration": status.and_then(|s| s.observed_generation).unwrap_or(0),
        "conditions": if old_conds.is_empty() { Value::Null } else { json!(old_conds) },
    });
    if new != old {
        let api: Api<K> = Api::namespaced(ctx.client.clone(), &rs.namespace().unwrap_or_default());
        crate::writes::update(&api, &rs.name_any(), K::MANAGER, crate::writes::Part::Status, &json!({"status": new}))
            .await
            .map_err(|e| Error::StatusUpdateFailed(rs.name_any(), e))?;
    }
    Ok(next)
}
