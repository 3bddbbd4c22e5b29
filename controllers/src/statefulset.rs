//! The StatefulSet controller (upstream's `statefulset` controller).
//!
//! A `Controller` over StatefulSets that `.owns(...)` pods. Each reconcile lists the
//! namespace's ControllerRevisions, pods and PersistentVolumeClaims live, claims the
//! revisions and the pods named `<set>-<ordinal>` that match the selector, then as upstream's
//! `defaultStatefulSetControl.updateStatefulSet`:
//! - finds or creates the update revision (the template's revision, see `revision.rs`; a
//!   template equal to an older revision renumbers that one, which is how `kubectl rollout
//!   undo` works) and keeps `status.currentRevision` as the current one;
//! - for each ordinal in `[start, start+replicas)`, in order: recreates a Failed/Succeeded
//!   pod, creates a missing one (named `<set>-<ordinal>`, labels `statefulset.kubernetes.io/pod-name`,
//!   `apps.kubernetes.io/pod-index`, `controller-revision-hash`, hostname and subdomain
//!   `spec.serviceName`, a volume per claim template on the PVC `<template>-<set>-<ordinal>`,
//!   created first if absent); OrderedReady stops at the first pod that is not Running,
//!   Ready and available, Parallel does not wait;
//! - then deletes pods beyond the replicas, highest ordinal first (OrderedReady: one at a
//!   time, only when all the others are healthy);
//! - RollingUpdate: deletes the highest-ordinal pod at or above `partition` that is not at
//!   the update revision, one at a time, waiting for the recreated pod to be healthy;
//!   OnDelete: pods pick the update revision when they are deleted and recreated;
//! - PVC ownerReferences follow `persistentVolumeClaimRetentionPolicy` (`whenDeleted:
//!   Delete` owns claims by the set, `whenScaled: Delete` by the condemned pod), so the
//!   garbage collector deletes them; with Retain they stay;
//! - writes status (replicas, readyReplicas, currentReplicas, updatedReplicas,
//!   availableReplicas, currentRevision, updateRevision, collisionCount,
//!   observedGeneration) through `/status`, and deletes non-live revisions beyond
//!   `revisionHistoryLimit`.
//!
//! Not done: `maxUnavailable` for rolling updates (alpha upstream).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::{ControllerRevision, StatefulSet};
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod, PodTemplateSpec, Volume};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{Api, DeleteParams, ListParams, Patch, PostParams};
use kube::runtime::controller::Action;
use kube::runtime::reflector::ObjectRef;
use kube::runtime::{watcher, Controller};
use kube::ResourceExt;
use serde_json::json;

use crate::podutil;
use crate::revision::{self, POD_REVISION_LABEL};
use crate::Ctx;

const MANAGER: &str = "statefulset-controller";
pub const POD_NAME_LABEL: &str = "statefulset.kubernetes.io/pod-name";
pub const POD_INDEX_LABEL: &str = "apps.kubernetes.io/pod-index";
/// The label of a StatefulSet's revisions holding the hash of their data.
const REVISION_HASH_LABEL: &str = "controller.kubernetes.io/hash";
const RETRY: Duration = Duration::from_secs(2);

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("listing the {1} of statefulset {0}: {2}")]
    ListFailed(String, &'static str, #[source] kube::Error),
    #[error("recording a revision of statefulset {0}: {1}")]
    HistoryFailed(String, #[source] kube::Error),
    #[error("creating {0}: {1}")]
    CreateFailed(String, #[source] kube::Error),
    #[error("deleting pod {0}: {1}")]
    DeleteFailed(String, #[source] kube::Error),
    #[error("updating {0}: {1}")]
    UpdateFailed(String, #[source] kube::Error),
    #[error("claim {0} of pod {1} is being deleted")]
    ClaimTerminating(String, String),
    #[error("updating the status of statefulset {0}: {1}")]
    StatusUpdateFailed(String, #[source] kube::Error),
}

pub async fn run(ctx: Arc<Ctx>) -> Result<(), crate::Error> {
    let sets: Api<StatefulSet> = Api::all(ctx.client.clone());
    let pods: Api<Pod> = Api::all(ctx.client.clone());
    let controller = Controller::new(sets, watcher::Config::default());
    let store = controller.store();
    controller
        .owns(pods.clone(), watcher::Config::default())
        // An orphan named like one of a set's pods and matching its selector wakes that set.
        .watches(pods, watcher::Config::default(), move |pod: Pod| {
            if podutil::controller_of(pod.owner_references()).is_some() {
                return Vec::new();
            }
            store
                .state()
                .into_iter()
                .filter(|set| {
                    set.namespace() == pod.namespace()
                        && ordinal_of(&set.name_any(), &pod.name_any()).is_some()
                        && podutil::selector_matches(set.spec.as_ref().map(|s| &s.selector), pod.labels())
                })
                .map(|set| ObjectRef::from_obj(&*set))
                .collect::<Vec<_>>()
        })
        .run(reconcile, error_policy, ctx)
        .for_each(|res| async move {
            if let Err(e) = res {
                tracing::debug!(error = %e, "statefulset reconcile failed");
            }
        })
        .await;
    Ok(())
}

fn error_policy(set: Arc<StatefulSet>, err: &Error, _ctx: Arc<Ctx>) -> Action {
    tracing::warn!(statefulset = %set.name_any(), error = %err, "statefulset sync will be retried");
    Action::requeue(RETRY)
}

/// The ordinal of a pod named `<set>-<ordinal>` (upstream's `getParentNameAndOrdinal`).
pub fn ordinal_of(set: &str, pod: &str) -> Option<i32> {
    let (parent, ord) = pod.rsplit_once('-')?;
    if parent != set || ord.is_empty() || !ord.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    ord.parse().ok()
}

/// `<template>-<set>-<ordinal>` (upstream's `getPersistentVolumeClaimName`).
pub fn claim_name(template: &str, set: &str, ordinal: i32) -> String {
    format!("{template}-{set}-{ordinal}")
}

fn phase(pod: &Pod) -> &str {
    pod.status.as_ref().and_then(|s| s.phase.as_deref()).unwrap_or_default()
}

fn terminating(pod: &Pod) -> bool {
    pod.metadata.deletion_timestamp.is_some()
}

fn running_and_ready(pod: &Pod) -> bool {
    phase(pod) == "Running" && podutil::is_ready(pod)
}

fn healthy(pod: &Pod) -> bool {
    running_and_ready(pod) && !terminating(pod)
}

fn pod_revision(pod: &Pod) -> &str {
    pod.labels().get(POD_REVISION_LABEL).map(String::as_str).unwrap_or_default()
}

/// The pod for `ordinal` made from `template` at revision `revision_name` (upstream's
/// `newStatefulSetPod` with `initIdentity` and `updateStorage`).
pub fn new_pod(set: &StatefulSet, template: &PodTemplateSpec, revision_name: &str, ordinal: i32) -> Pod {
    let name = format!("{}-{ordinal}", set.name_any());
    let tmeta = template.metadata.clone().unwrap_or_default();
    let mut pod = Pod { spec: template.spec.clone(), ..Default::default() };
    pod.metadata.name = Some(name.clone());
    pod.metadata.namespace = set.namespace();
    let mut labels = tmeta.labels.unwrap_or_default();
    labels.insert(POD_NAME_LABEL.into(), name.clone());
    labels.insert(POD_INDEX_LABEL.into(), ordinal.to_string());
    labels.insert(POD_REVISION_LABEL.into(), revision_name.into());
    pod.metadata.labels = Some(labels);
    pod.metadata.annotations = tmeta.annotations;
    pod.metadata.finalizers = tmeta.finalizers;
    pod.metadata.owner_references = Some(vec![podutil::controller_ref(set)]);
    let spec = pod.spec.get_or_insert_with(Default::default);
    spec.hostname = Some(name);
    if let Some(svc) = set.spec.as_ref().and_then(|s| s.service_name.clone()).filter(|s| !s.is_empty()) {
        spec.subdomain = Some(svc);
    }
    let templates = set.spec.as_ref().and_then(|s| s.volume_claim_templates.clone()).unwrap_or_default();
    let claims: Vec<(String, String)> = templates.iter().map(|t| (t.name_any(), claim_name(&t.name_any(), &set.name_any(), ordinal))).collect();
    let mut volumes: Vec<Volume> = claims
        .iter()
        .map(|(vol, claim)| {
            serde_json::from_value(json!({"name": vol, "persistentVolumeClaim": {"claimName": claim}})).expect("a volume deserializes")
        })
        .collect();
    volumes.extend(spec.volumes.take().unwrap_or_default().into_iter().filter(|v| !claims.iter().any(|(n, _)| *n == v.name)));
    spec.volumes = if volumes.is_empty() { None } else { Some(volumes) };
    pod
}

/// Whether the pod has the identity of `ordinal` (upstream's `identityMatches`).
fn identity_matches(set: &StatefulSet, pod: &Pod, ordinal: i32) -> bool {
    pod.labels().get(POD_NAME_LABEL) == Some(&pod.name_any()) && pod.labels().get(POD_INDEX_LABEL) == Some(&ordinal.to_string()) && pod.namespace() == set.namespace()
}

/// A reference to `owner` that is not a controller reference (upstream's `setOwnerRef`).
fn plain_ref(api_version: &str, kind: &str, name: String, uid: String) -> OwnerReference {
    OwnerReference { api_version: api_version.into(), kind: kind.into(), name, uid, controller: None, block_owner_deletion: None }
}

/// What one pass found: whether it must stop here (OrderedReady waiting, or a step failed).
enum Step {
    Continue,
    Block,
}

struct Sync<'a> {
    ctx: &'a Ctx,
    set: &'a StatefulSet,
    pods: Api<Pod>,
    pvcs: Api<PersistentVolumeClaim>,
    claims: BTreeMap<String, PersistentVolumeClaim>,
    monotonic: bool,
    min_ready: i64,
    current: (String, PodTemplateSpec),
    update: (String, PodTemplateSpec),
    /// The soonest a ready pod becomes available, in seconds.
    next_check: Option<i64>,
}

impl Sync<'_> {
    fn name(&self) -> String {
        self.set.name_any()
    }

    fn spec(&self) -> k8s_openapi::api::apps::v1::StatefulSetSpec {
        self.set.spec.clone().unwrap_or_default()
    }

    /// The revision a new pod at index `i` gets (upstream's `newVersionedStatefulSetPod`):
    /// the current one below a rolling update's partition, else the update revision.
    fn new_versioned_pod(&self, i: i32, ordinal: i32) -> Pod {
        let us = self.spec().update_strategy.unwrap_or_default();
        let partition = us.rolling_update.as_ref().and_then(|r| r.partition).unwrap_or(0);
        let rolling = us.type_.as_deref().unwrap_or("RollingUpdate") == "RollingUpdate";
        let (rev, template) = if rolling && i < partition { &self.current } else { &self.update };
        new_pod(self.set, template, rev, ordinal)
    }

    fn available(&mut self, pod: &Pod) -> bool {
        if phase(pod) != "Running" {
            return false;
        }
        match podutil::availability(pod, self.min_ready, podutil::now_secs()) {
            Ok(()) => true,
            Err(left) => {
                if let Some(left) = left {
                    self.next_check = Some(self.next_check.map_or(left, |n| n.min(left)));
                }
                false
            }
        }
    }

    async fn pod_event(&self, verb: &str, pod: &str, err: Option<&kube::Error>) {
        let title = format!("{}{}", &verb[..1].to_uppercase(), &verb[1..]);
        match err {
            None => podutil::event(self.ctx, self.set, false, &format!("Successful{title}"), &title, format!("{verb} Pod {pod} in StatefulSet {} successful", self.name())).await,
            Some(e) => podutil::event(self.ctx, self.set, true, &format!("Failed{title}"), &title, format!("{verb} Pod {pod} in StatefulSet {} failed error: {e}", self.name())).await,
        }
    }

    /// The ownerReferences a claim of `pod` should have under the retention policy
    /// (upstream's `updateClaimOwnerRefForSetAndPod`); `None` when they are right already.
    fn wanted_claim_refs(&self, claim: &PersistentVolumeClaim, pod: &Pod, scaled_down: bool) -> Option<Vec<OwnerReference>> {
        let policy = self.spec().persistent_volume_claim_retention_policy.unwrap_or_default();
        let when_deleted = policy.when_deleted.as_deref().unwrap_or("Retain") == "Delete";
        let when_scaled = policy.when_scaled.as_deref().unwrap_or("Retain") == "Delete";
        let set_uid = self.set.uid().unwrap_or_default();
        let pod_uid = pod.uid().unwrap_or_default();
        let (by_set, by_pod) = match (when_scaled, when_deleted) {
            (false, false) => (false, false),
            (false, true) => (true, false),
            (true, false) => (false, scaled_down),
            (true, true) => (!scaled_down, scaled_down),
        };
        let old = claim.owner_references();
        let mut refs: Vec<OwnerReference> = old.iter().filter(|r| r.uid != set_uid && (r.uid != pod_uid || pod_uid.is_empty())).cloned().collect();
        if by_set {
            refs.push(old.iter().find(|r| r.uid == set_uid).cloned().unwrap_or_else(|| plain_ref("apps/v1", "StatefulSet", self.name(), set_uid.clone())));
        }
        if by_pod && !pod_uid.is_empty() {
            refs.push(old.iter().find(|r| r.uid == pod_uid).cloned().unwrap_or_else(|| plain_ref("v1", "Pod", pod.name_any(), pod_uid.clone())));
        }
        let same = refs.len() == old.len() && refs.iter().all(|r| old.contains(r));
        (!same).then_some(refs)
    }

    /// The claims of `pod` from the claim templates (upstream's `getPersistentVolumeClaims`).
    fn claims_for(&self, ordinal: i32) -> Vec<PersistentVolumeClaim> {
        let spec = self.spec();
        let selector_labels = spec.selector.match_labels.clone().unwrap_or_default();
        spec.volume_claim_templates
            .unwrap_or_default()
            .into_iter()
            .map(|t| {
                let mut claim = PersistentVolumeClaim { spec: t.spec.clone(), ..Default::default() };
                claim.metadata.name = Some(claim_name(&t.name_any(), &self.name(), ordinal));
                claim.metadata.namespace = self.set.namespace();
                let mut labels = t.metadata.labels.clone().unwrap_or_default();
                labels.extend(selector_labels.clone());
                claim.metadata.labels = Some(labels);
                claim.metadata.annotations = t.metadata.annotations.clone();
                claim
            })
            .collect()
    }

    /// Whether a claim of the pod to create still belongs to an earlier pod of that name
    /// that was scaled down (upstream's `PodClaimIsStale`); the garbage collector removes it.
    fn claim_is_stale(&self, ordinal: i32, pod_name: &str) -> bool {
        let policy = self.spec().persistent_volume_claim_retention_policy.unwrap_or_default();
        if policy.when_scaled.as_deref().unwrap_or("Retain") != "Delete" {
            return false;
        }
        self.claims_for(ordinal).iter().filter_map(|c| self.claims.get(&c.name_any())).any(|c| c.owner_references().iter().any(|r| r.kind == "Pod" && r.name == pod_name))
    }

    /// Creates the pod's missing claims (upstream's `createPersistentVolumeClaims`) and sets
    /// the ownerReferences of existing ones under the retention policy.
    async fn sync_claims(&mut self, pod: &Pod, ordinal: i32, scaled_down: bool) -> Result<(), Error> {
        let pp = PostParams { field_manager: Some(MANAGER.into()), ..Default::default() };
        for mut claim in self.claims_for(ordinal) {
            let cname = claim.name_any();
            match self.claims.get(&cname) {
                Some(existing) if existing.metadata.deletion_timestamp.is_some() && !scaled_down => {
                    return Err(Error::ClaimTerminating(cname, pod.name_any()));
                }
                Some(existing) => {
                    if let Some(refs) = self.wanted_claim_refs(existing, pod, scaled_down) {
                        let patch = json!({"metadata": {"resourceVersion": existing.resource_version(), "ownerReferences": refs}});
                        // `update`, as upstream: the role grants no `patch` of claims.
                        let updated = crate::writes::update(&self.pvcs, &cname, MANAGER, crate::writes::Part::Main, &patch).await.map_err(|e| Error::UpdateFailed(format!("claim {cname}"), e))?;
                        self.claims.insert(cname, updated);
                    }
                }
                None if scaled_down => {}
                None => {
                    if let Some(refs) = self.wanted_claim_refs(&claim, pod, false) {
                        claim.metadata.owner_references = Some(refs).filter(|r| !r.is_empty());
                    }
                    // (action `CreateClaim`, as the pods' `Create`: upstream's recorder keeps them apart)
                    let note_ok = format!("create Claim {cname} Pod {} in StatefulSet {} success", pod.name_any(), self.name());
                    match self.pvcs.create(&pp, &claim).await {
                        Ok(created) => {
                            podutil::event(self.ctx, self.set, false, "SuccessfulCreate", "CreateClaim", note_ok).await;
                            self.claims.insert(cname, created);
                        }
                        Err(kube::Error::Api(e)) if e.code == 409 => {}
                        Err(e) => {
                            let note = format!("create Claim {cname} for Pod {} in StatefulSet {} failed error: {e}", pod.name_any(), self.name());
                            podutil::event(self.ctx, self.set, true, "FailedCreate", "CreateClaim", note).await;
                            return Err(Error::CreateFailed(format!("claim {cname}"), e));
                        }
                    }
                }
            }
        }
        Ok(())
    }

    async fn create_pod(&mut self, pod: Pod, ordinal: i32) -> Result<Pod, Error> {
        self.sync_claims(&pod, ordinal, false).await?;
        let pp = PostParams { field_manager: Some(MANAGER.into()), ..Default::default() };
        let name = pod.name_any();
        match self.pods.create(&pp, &pod).await {
            Ok(p) => {
                self.pod_event("create", &name, None).await;
                Ok(p)
            }
            Err(e) => {
                self.pod_event("create", &name, Some(&e)).await;
                Err(Error::CreateFailed(format!("pod {name}"), e))
            }
        }
    }

    /// Deletes the pod; what remains of it (terminating), if anything.
    async fn delete_pod(&self, pod: &Pod) -> Result<Option<Pod>, Error> {
        let name = pod.name_any();
        match self.pods.delete(&name, &DeleteParams::default()).await {
            Ok(res) => {
                self.pod_event("delete", &name, None).await;
                Ok(res.left().filter(|p| p.metadata.deletion_timestamp.is_some()))
            }
            Err(kube::Error::Api(e)) if e.code == 404 => Ok(None),
            Err(e) => {
                self.pod_event("delete", &name, Some(&e)).await;
                Err(Error::DeleteFailed(name, e))
            }
        }
    }

    /// Upstream's `processReplica` for index `i` of `slots`.
    async fn process_replica(&mut self, slots: &mut [Option<Pod>], i: usize, start: i32) -> Result<Step, Error> {
        let ordinal = start + i as i32;
        if let Some(pod) = slots[i].clone().filter(|p| matches!(phase(p), "Failed" | "Succeeded") && !terminating(p)) {
            let (reason, what) = if phase(&pod) == "Failed" { ("RecreatingFailedPod", "failed") } else { ("RecreatingTerminatedPod", "terminated") };
            let note = format!("StatefulSet {}/{} is recreating {what} Pod {}", self.set.namespace().unwrap_or_default(), self.name(), pod.name_any());
            podutil::event(self.ctx, self.set, reason == "RecreatingFailedPod", reason, "Recreate", note).await;
            slots[i] = self.delete_pod(&pod).await?;
        }
        if slots[i].is_none() {
            let pod = self.new_versioned_pod(i as i32, ordinal);
            if self.claim_is_stale(ordinal, &pod.name_any()) {
                return Ok(Step::Block);
            }
            slots[i] = Some(self.create_pod(pod, ordinal).await?);
            if self.monotonic {
                return Ok(Step::Block);
            }
        }
        let pod = slots[i].clone().expect("the slot holds a pod");
        if terminating(&pod) {
            return Ok(if self.monotonic { Step::Block } else { Step::Continue });
        }
        if !running_and_ready(&pod) && self.monotonic {
            if phase(&pod) == "Pending" {
                self.sync_claims(&pod, ordinal, false).await?;
            }
            return Ok(Step::Block);
        }
        if !self.available(&pod) && self.monotonic {
            return Ok(Step::Block);
        }
        // Enforce the identity and storage invariants.
        if !identity_matches(self.set, &pod, ordinal) {
            let patch = json!({"metadata": {"labels": {POD_NAME_LABEL: pod.name_any(), POD_INDEX_LABEL: ordinal.to_string()}}});
            let updated = self.pods.patch(&pod.name_any(), &crate::patch_params(MANAGER), &Patch::Merge(patch)).await;
            match updated {
                Ok(p) => {
                    self.pod_event("update", &pod.name_any(), None).await;
                    slots[i] = Some(p);
                }
                Err(e) => {
                    self.pod_event("update", &pod.name_any(), Some(&e)).await;
                    return Err(Error::UpdateFailed(format!("pod {}", pod.name_any()), e));
                }
            }
        }
        self.sync_claims(&pod, ordinal, false).await?;
        Ok(Step::Continue)
    }
}

async fn reconcile(set: Arc<StatefulSet>, ctx: Arc<Ctx>) -> Result<Action, Error> {
    let name = set.name_any();
    let ns = set.namespace().unwrap_or_default();
    if set.metadata.deletion_timestamp.is_some() {
        // The garbage collector removes the pods (and claims owned by the set).
        return Ok(Action::await_change());
    }
    let spec = set.spec.clone().unwrap_or_default();
    let status = set.status.clone().unwrap_or_default();
    let oref = podutil::controller_ref(&*set);
    let revs_api: Api<ControllerRevision> = Api::namespaced(ctx.client.clone(), &ns);
    let pods_api: Api<Pod> = Api::namespaced(ctx.client.clone(), &ns);
    let pvcs: Api<PersistentVolumeClaim> = Api::namespaced(ctx.client.clone(), &ns);

    // Revisions (upstream's getStatefulSetRevisions).
    let revs = revision::history(&revs_api, &oref, false, Some(&spec.selector), MANAGER).await.map_err(|e| Error::ListFailed(name.clone(), "revisions", e))?;
    let mut collision = status.collision_count.unwrap_or(0);
    let data = revision::template_patch(&spec.template);
    let next = revision::next_revision(&revs);
    let update = match revs.iter().rev().find(|r| revision::holds(r, &data)) {
        Some(eq) if revs.last().map(|r| r.name_any()) == Some(eq.name_any()) => eq.clone(),
        Some(eq) => revision::renumber(&revs_api, eq, next, MANAGER).await.map_err(|e| Error::HistoryFailed(name.clone(), e))?,
        None => {
            let labels = spec.template.metadata.as_ref().and_then(|m| m.labels.as_ref());
            let rev = revision::new_revision(&ns, &oref, labels, data, next);
            revision::create(&revs_api, &name, rev, REVISION_HASH_LABEL, &mut collision, MANAGER).await.map_err(|e| Error::HistoryFailed(name.clone(), e))?
        }
    };
    let update_name = update.name_any();
    let current = revs.iter().find(|r| Some(r.name_any()) == status.current_revision).cloned().unwrap_or_else(|| update.clone());
    let current_name = current.name_any();
    let current_template = if current_name == update_name { spec.template.clone() } else { revision::template_of(&current) };

    // Pods and claims.
    let all = pods_api.list(&ListParams::default()).await.map_err(|e| Error::ListFailed(name.clone(), "pods", e))?.items;
    let pods = revision::claim(&pods_api, &oref, false, Some(&spec.selector), all, |p: &Pod| ordinal_of(&name, &p.name_any()).is_some(), MANAGER).await;
    let claims = pvcs.list(&ListParams::default()).await.map_err(|e| Error::ListFailed(name.clone(), "claims", e))?.items;
    let replicas = spec.replicas.unwrap_or(1).max(0);
    let start = spec.ordinals.as_ref().and_then(|o| o.start).unwrap_or(0).max(0);
    let mut slots: Vec<Option<Pod>> = vec![None; replicas as usize];
    let mut condemned: Vec<Pod> = Vec::new();
    for pod in pods {
        let ord = ordinal_of(&name, &pod.name_any()).unwrap_or(-1);
        if ord >= start && ord < start + replicas {
            slots[(ord - start) as usize] = Some(pod);
        } else {
            condemned.push(pod);
        }
    }
    condemned.sort_by_key(|p| std::cmp::Reverse(ordinal_of(&name, &p.name_any())));
    // The first unhealthy pod: among the replicas in order, else among the condemned.
    let first_unhealthy = slots
        .iter()
        .flatten()
        .find(|p| !healthy(p))
        .or_else(|| condemned.iter().find(|p| !healthy(p)))
        .map(|p| p.name_any());

    let mut s = Sync {
        ctx: &ctx,
        set: &set,
        pods: pods_api.clone(),
        pvcs,
        claims: claims.into_iter().map(|c| (c.name_any(), c)).collect(),
        monotonic: spec.pod_management_policy.as_deref().unwrap_or("OrderedReady") != "Parallel",
        min_ready: i64::from(spec.min_ready_seconds.unwrap_or(0)),
        current: (current_name.clone(), current_template),
        update: (update_name.clone(), spec.template.clone()),
        next_check: None,
    };
    let result = sync_pods(&mut s, &mut slots, &mut condemned, start, first_unhealthy.as_deref()).await;

    // Status (upstream's computeReplicaStatus, then completeRollingUpdate).
    let all_pods: Vec<&Pod> = slots.iter().flatten().chain(condemned.iter()).collect();
    let count = |f: &dyn Fn(&Pod) -> bool| all_pods.iter().filter(|p| f(p)).count() as i32;
    let now = podutil::now_secs();
    let min_ready = s.min_ready;
    let n_replicas = all_pods.len() as i32;
    let ready = count(&running_and_ready);
    let available = count(&|p| running_and_ready(p) && podutil::availability(p, min_ready, now).is_ok());
    let mut current_replicas = count(&|p| !terminating(p) && pod_revision(p) == current_name);
    let updated = count(&|p| !terminating(p) && pod_revision(p) == update_name);
    let mut current_revision = current_name.clone();
    let rolling = spec.update_strategy.as_ref().and_then(|u| u.type_.as_deref()).unwrap_or("RollingUpdate") == "RollingUpdate";
    if rolling && updated == n_replicas && ready == n_replicas {
        current_replicas = updated;
        current_revision = update_name.clone();
    }
    let new_status = json!({
        "observedGeneration": set.metadata.generation.unwrap_or(0),
        "replicas": n_replicas, "readyReplicas": ready, "currentReplicas": current_replicas,
        "updatedReplicas": updated, "availableReplicas": available,
        "currentRevision": current_revision, "updateRevision": update_name,
        "collisionCount": collision,
    });
    let old_status = json!({
        "observedGeneration": status.observed_generation.unwrap_or(0),
        "replicas": status.replicas, "readyReplicas": status.ready_replicas.unwrap_or(0),
        "currentReplicas": status.current_replicas.unwrap_or(0), "updatedReplicas": status.updated_replicas.unwrap_or(0),
        "availableReplicas": status.available_replicas.unwrap_or(0),
        "currentRevision": status.current_revision.clone().unwrap_or_default(), "updateRevision": status.update_revision.clone().unwrap_or_default(),
        "collisionCount": status.collision_count.unwrap_or(0),
    });
    if new_status != old_status {
        let api: Api<StatefulSet> = Api::namespaced(ctx.client.clone(), &ns);
        crate::writes::update(&api, &name, MANAGER, crate::writes::Part::Status, &json!({"status": new_status}))
            .await
            .map_err(|e| Error::StatusUpdateFailed(name.clone(), e))?;
    }
    result?;

    // History beyond revisionHistoryLimit, except live revisions (upstream's truncateHistory).
    let mut live: Vec<String> = vec![current_revision, update_name];
    live.extend(all_pods.iter().map(|p| pod_revision(p).to_string()));
    let historic: Vec<&ControllerRevision> = revs.iter().filter(|r| !live.contains(&r.name_any())).collect();
    let limit = spec.revision_history_limit.unwrap_or(10).max(0) as usize;
    if historic.len() > limit {
        revision::delete_all(&revs_api, &historic[..historic.len() - limit]).await.map_err(|e| Error::HistoryFailed(name.clone(), e))?;
    }
    Ok(s.next_check.map_or(Action::await_change(), |secs| Action::requeue(Duration::from_secs(secs.max(1) as u64))))
}

/// Creates, recreates, scales down and updates pods; the pods in `slots` and `condemned`
/// are kept as they are after each step, for the status.
async fn sync_pods(s: &mut Sync<'_>, slots: &mut [Option<Pod>], condemned: &mut Vec<Pod>, start: i32, first_unhealthy: Option<&str>) -> Result<(), Error> {
    for i in 0..slots.len() {
        if let Step::Block = s.process_replica(slots, i, start).await? {
            return Ok(());
        }
    }
    // Claims of condemned pods follow the scale-down policy before the pods go.
    for pod in condemned.clone() {
        let ord = ordinal_of(&s.name(), &pod.name_any()).unwrap_or(0);
        s.sync_claims(&pod, ord, true).await?;
    }
    // Scale down, highest ordinal first (upstream's processCondemned).
    let mut k = 0;
    while k < condemned.len() {
        let pod = condemned[k].clone();
        if terminating(&pod) {
            if s.monotonic {
                return Ok(());
            }
            k += 1;
            continue;
        }
        let is_first_unhealthy = first_unhealthy == Some(pod.name_any().as_str());
        if s.monotonic && !is_first_unhealthy && (!running_and_ready(&pod) || !s.available(&pod)) {
            return Ok(());
        }
        match s.delete_pod(&pod).await? {
            Some(p) => {
                condemned[k] = p;
                k += 1;
            }
            None => {
                condemned.remove(k);
            }
        }
        if s.monotonic {
            return Ok(());
        }
    }

    let spec = s.spec();
    let us = spec.update_strategy.unwrap_or_default();
    if us.type_.as_deref().unwrap_or("RollingUpdate") != "RollingUpdate" {
        return Ok(());
    }
    // Rolling update: the highest ordinal not at the update revision goes first.
    let partition = us.rolling_update.and_then(|r| r.partition).unwrap_or(0).max(0) as usize;
    for target in (partition..slots.len()).rev() {
        let Some(pod) = slots[target].clone() else { continue };
        if pod_revision(&pod) != s.update.0 && !terminating(&pod) {
            let name = pod.name_any();
            tracing::info!(statefulset = %s.name(), pod = %name, "terminating pod for update");
            slots[target] = s.delete_pod(&pod).await?;
            return Ok(());
        }
        if !healthy(&pod) {
            return Ok(());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    fn set() -> StatefulSet {
        serde_json::from_value(json!({
            "metadata": {"name": "web", "namespace": "default", "uid": "u1"},
            "spec": {"serviceName": "nginx", "selector": {"matchLabels": {"app": "web"}},
                "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "c", "image": "nginx"}],
                    "volumes": [{"name": "www", "emptyDir": {}}, {"name": "cfg", "emptyDir": {}}]}},
                "volumeClaimTemplates": [{"metadata": {"name": "www"}, "spec": {"accessModes": ["ReadWriteOnce"]}}]}
        }))
        .unwrap()
    }

    #[test]
    fn ordinals() {
        assert_eq!(ordinal_of("web", "web-0"), Some(0));
        assert_eq!(ordinal_of("web", "web-12"), Some(12));
        assert_eq!(ordinal_of("web", "web-x"), None);
        assert_eq!(ordinal_of("web", "web-1-2"), None);
        assert_eq!(ordinal_of("web-1", "web-1-2"), Some(2));
        assert_eq!(ordinal_of("web", "web-"), None);
    }

    #[test]
    fn pods_have_identity_and_storage() {
        let set = set();
        let template = set.spec.as_ref().unwrap().template.clone();
        let pod = new_pod(&set, &template, "web-abc", 2);
        assert_eq!(pod.name_any(), "web-2");
        assert_eq!(pod.labels()[POD_NAME_LABEL], "web-2");
        assert_eq!(pod.labels()[POD_INDEX_LABEL], "2");
        assert_eq!(pod.labels()[POD_REVISION_LABEL], "web-abc");
        assert_eq!(pod.labels()["app"], "web");
        let spec = pod.spec.as_ref().unwrap();
        assert_eq!(spec.hostname.as_deref(), Some("web-2"));
        assert_eq!(spec.subdomain.as_deref(), Some("nginx"));
        let vols: Vec<Value> = spec.volumes.as_ref().unwrap().iter().map(|v| serde_json::to_value(v).unwrap()).collect();
        assert_eq!(vols, vec![json!({"name": "www", "persistentVolumeClaim": {"claimName": "www-web-2"}}), json!({"name": "cfg", "emptyDir": {}})]);
        assert!(identity_matches(&set, &pod, 2));
        let oref = &pod.owner_references()[0];
        assert_eq!((oref.kind.as_str(), oref.controller), ("StatefulSet", Some(true)));
    }
}
