//! The Deployment controller (upstream's `deployment` controller).
//!
//! A `Controller` over Deployments that `.owns(...)` ReplicaSets. Each reconcile lists the
//! namespace's ReplicaSets live, claims them (adopting matching orphans), and:
//! - finds the new ReplicaSet, the one whose template equals the Deployment's ignoring the
//!   `pod-template-hash` label, or creates `<deploy>-<pod-template-hash>` (hash of the
//!   template as upstream: FNV-32a, then `rand.SafeEncodeString`), with the label on its
//!   selector, template and itself, and the `deployment.kubernetes.io/revision`,
//!   `desired-replicas` and `max-replicas` annotations;
//! - rolls out: RollingUpdate scales the new one up within `maxSurge` and the old ones down
//!   within `maxUnavailable` (percentages of replicas, surge rounded up, unavailable down),
//!   Recreate scales the old ones to zero and waits for their pods to go before scaling the
//!   new one up; a paused Deployment is only scaled;
//! - deletes old, empty ReplicaSets beyond `revisionHistoryLimit` once the rollout is done;
//! - writes status (replicas, updated/ready/available/unavailable, observedGeneration and the
//!   Available/Progressing conditions with upstream's reasons) through `/status`, so
//!   `kubectl rollout status` and `kubectl rollout undo` work.
//!
//! A rollout making no progress for `progressDeadlineSeconds` gets Progressing=False,
//! ProgressDeadlineExceeded (so `kubectl rollout status` fails).
//!
//! Not done: proportional scaling of several active ReplicaSets during a rollout,
//! hash-collision handling (`collisionCount`).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::PodTemplateSpec;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::{Api, DeleteParams, ListParams, Patch, PostParams};
use kube::runtime::controller::Action;
use kube::runtime::{watcher, Controller};
use kube::ResourceExt;
use serde_json::{json, Value};

use crate::podutil::{self, controller_of, selector_matches};
use crate::Ctx;

const MANAGER: &str = "deployment-controller";
pub const HASH_LABEL: &str = "pod-template-hash";
pub const REVISION: &str = "deployment.kubernetes.io/revision";
const DESIRED: &str = "deployment.kubernetes.io/desired-replicas";
const MAX_REPLICAS: &str = "deployment.kubernetes.io/max-replicas";
const RETRY: Duration = Duration::from_secs(2);

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("listing the replicasets of deployment {0}: {1}")]
    ListFailed(String, #[source] kube::Error),
    #[error("creating replicaset {0}: {1}")]
    CreateFailed(String, #[source] kube::Error),
    #[error("scaling replicaset {0}: {1}")]
    ScaleFailed(String, #[source] kube::Error),
    #[error("updating the status of deployment {0}: {1}")]
    StatusUpdateFailed(String, #[source] kube::Error),
}

pub async fn run(ctx: Arc<Ctx>) -> Result<(), crate::Error> {
    let deployments: Api<Deployment> = Api::all(ctx.client.clone());
    let sets: Api<ReplicaSet> = Api::all(ctx.client.clone());
    Controller::new(deployments, watcher::Config::default())
        .owns(sets, watcher::Config::default())
        .run(reconcile, error_policy, ctx)
        .for_each(|res| async move {
            if let Err(e) = res {
                tracing::debug!(error = %e, "deployment reconcile failed");
            }
        })
        .await;
    Ok(())
}

fn error_policy(d: Arc<Deployment>, err: &Error, _ctx: Arc<Ctx>) -> Action {
    tracing::warn!(deployment = %d.name_any(), error = %err, "deployment sync will be retried");
    Action::requeue(RETRY)
}

/// Upstream's `ComputeHash` without a collision count: FNV-32a of the template, encoded
/// with `rand.SafeEncodeString`.
pub fn template_hash(template: &PodTemplateSpec) -> String {
    crate::revision::hash_bytes(&serde_json::to_vec(template).expect("a pod template serializes"))
}

/// The template without the `pod-template-hash` label, for comparing (upstream's `EqualIgnoreHash`).
fn without_hash(t: Option<&PodTemplateSpec>) -> Value {
    let mut v = serde_json::to_value(t.cloned().unwrap_or_default()).unwrap_or_default();
    if let Some(labels) = v.pointer_mut("/metadata/labels").and_then(Value::as_object_mut) {
        labels.remove(HASH_LABEL);
        if labels.is_empty() {
            v["metadata"].as_object_mut().map(|m| m.remove("labels"));
        }
    }
    if v["metadata"].as_object().is_some_and(|m| m.is_empty()) {
        v.as_object_mut().map(|m| m.remove("metadata"));
    }
    v
}

fn revision(rs: &ReplicaSet) -> i64 {
    rs.annotations().get(REVISION).and_then(|r| r.parse().ok()).unwrap_or(0)
}

fn spec_replicas(rs: &ReplicaSet) -> i32 {
    rs.spec.as_ref().and_then(|s| s.replicas).unwrap_or(0)
}

fn available(rs: &ReplicaSet) -> i32 {
    rs.status.as_ref().and_then(|s| s.available_replicas).unwrap_or(0)
}

/// An int-or-percent of `total` (upstream's `GetScaledValueFromIntOrPercent`).
fn scaled(v: Option<&IntOrString>, default: &str, total: i32, round_up: bool) -> i32 {
    match v {
        Some(IntOrString::Int(i)) => *i,
        Some(IntOrString::String(s)) => percent(s, total, round_up),
        None => percent(default, total, round_up),
    }
}

fn percent(s: &str, total: i32, round_up: bool) -> i32 {
    let p: i64 = s.trim_end_matches('%').parse().unwrap_or(0);
    let x = p * i64::from(total);
    (if round_up { (x + 99) / 100 } else { x / 100 }) as i32
}

/// maxSurge and maxUnavailable resolved against `replicas` (upstream's `ResolveFenceposts`).
pub fn fenceposts(d: &Deployment, replicas: i32) -> (i32, i32) {
    let ru = d.spec.as_ref().and_then(|s| s.strategy.as_ref()).and_then(|s| s.rolling_update.as_ref());
    let surge = scaled(ru.and_then(|r| r.max_surge.as_ref()), "25%", replicas, true);
    let mut unavailable = scaled(ru.and_then(|r| r.max_unavailable.as_ref()), "25%", replicas, false);
    if surge == 0 && unavailable == 0 {
        unavailable = 1;
    }
    (surge, unavailable)
}

struct Sync<'a> {
    ctx: &'a Ctx,
    d: &'a Deployment,
    api: Api<ReplicaSet>,
}

impl Sync<'_> {
    /// Sets the ReplicaSet's replicas (and the deployment annotations); records the event.
    async fn scale(&self, rs: &mut ReplicaSet, to: i32, max_surge: i32) -> Result<(), Error> {
        let from = spec_replicas(rs);
        let want = self.d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
        let desired = want.to_string();
        let max = (want + max_surge).to_string();
        if from == to && rs.annotations().get(DESIRED) == Some(&desired) && rs.annotations().get(MAX_REPLICAS) == Some(&max) {
            return Ok(());
        }
        let patch = json!({"metadata": {"annotations": {DESIRED: desired, MAX_REPLICAS: max}}, "spec": {"replicas": to}});
        *rs = self
            .api
            .patch(&rs.name_any(), &crate::patch_params(MANAGER), &Patch::Merge(patch))
            .await
            .map_err(|e| Error::ScaleFailed(rs.name_any(), e))?;
        if from != to {
            let dir = if to > from { "up" } else { "down" };
            let note = format!("Scaled {dir} replica set {} from {from} to {to}", rs.name_any());
            podutil::event(self.ctx, self.d, false, "ScalingReplicaSet", "Scaling", note).await;
        }
        Ok(())
    }

    async fn set_revision(&self, rs: &mut ReplicaSet, rev: i64) -> Result<(), Error> {
        let patch = json!({"metadata": {"annotations": {REVISION: rev.to_string()}}});
        *rs = self
            .api
            .patch(&rs.name_any(), &crate::patch_params(MANAGER), &Patch::Merge(patch))
            .await
            .map_err(|e| Error::ScaleFailed(rs.name_any(), e))?;
        Ok(())
    }
}

async fn reconcile(d: Arc<Deployment>, ctx: Arc<Ctx>) -> Result<Action, Error> {
    let name = d.name_any();
    let ns = d.namespace().unwrap_or_default();
    if d.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let api: Api<ReplicaSet> = Api::namespaced(ctx.client.clone(), &ns);
    let spec = d.spec.clone().unwrap_or_default();
    let uid = d.uid().unwrap_or_default();
    let all = api.list(&ListParams::default()).await.map_err(|e| Error::ListFailed(name.clone(), e))?.items;
    let mut owned = Vec::new();
    for rs in all {
        match controller_of(rs.owner_references()) {
            Some(r) if r.uid == uid => owned.push(rs),
            None if selector_matches(Some(&spec.selector), rs.labels()) && rs.metadata.deletion_timestamp.is_none() => {
                let mut refs = rs.owner_references().to_vec();
                refs.push(podutil::controller_ref(&*d));
                let patch = json!({"metadata": {"resourceVersion": rs.resource_version(), "ownerReferences": refs}});
                if let Ok(adopted) = api.patch(&rs.name_any(), &crate::patch_params(MANAGER), &Patch::Merge(patch)).await {
                    owned.push(adopted);
                }
            }
            _ => {}
        }
    }
    let s = Sync { ctx: &ctx, d: &d, api: api.clone() };
    let replicas = spec.replicas.unwrap_or(1);
    let (max_surge, max_unavailable) = fenceposts(&d, replicas);
    let recreate = spec.strategy.as_ref().and_then(|s| s.type_.as_deref()) == Some("Recreate");
    let paused = spec.paused.unwrap_or(false);

    // The new ReplicaSet, if any; the rest are old.
    let wanted = without_hash(Some(&spec.template));
    let new_idx = owned.iter().position(|rs| without_hash(rs.spec.as_ref().and_then(|s| s.template.as_ref())) == wanted);
    let mut new_rs = new_idx.map(|i| owned.remove(i));
    let mut old = owned;
    old.sort_by_key(|rs| (rs.metadata.creation_timestamp.as_ref().map(|t| t.0.as_second()), rs.name_any()));
    let max_old_revision = old.iter().map(revision).max().unwrap_or(0);
    let mut created = false;

    if new_rs.is_none() && !paused {
        let hash = template_hash(&spec.template);
        let mut template = spec.template.clone();
        template.metadata.get_or_insert_with(Default::default).labels.get_or_insert_with(BTreeMap::new).insert(HASH_LABEL.into(), hash.clone());
        let mut selector = spec.selector.clone();
        selector.match_labels.get_or_insert_with(BTreeMap::new).insert(HASH_LABEL.into(), hash.clone());
        let mut labels = spec.template.metadata.as_ref().and_then(|m| m.labels.clone()).unwrap_or_default();
        labels.insert(HASH_LABEL.into(), hash.clone());
        // Recreate starts at zero; RollingUpdate within the surge.
        let start = if recreate { 0 } else { 0.max((replicas + max_surge - old.iter().map(spec_replicas).sum::<i32>()).min(replicas)) };
        let mut annotations: BTreeMap<String, String> = d.annotations().iter().filter(|(k, _)| !skip_annotation(k)).map(|(k, v)| (k.clone(), v.clone())).collect();
        annotations.insert(REVISION.into(), (max_old_revision + 1).to_string());
        annotations.insert(DESIRED.into(), replicas.to_string());
        annotations.insert(MAX_REPLICAS.into(), (replicas + max_surge).to_string());
        let rs_name = format!("{name}-{hash}");
        let rs: ReplicaSet = serde_json::from_value(json!({
            "apiVersion": "apps/v1", "kind": "ReplicaSet",
            "metadata": {"name": rs_name, "namespace": ns, "labels": labels, "annotations": annotations,
                         "ownerReferences": [podutil::controller_ref(&*d)]},
            "spec": {"replicas": start, "minReadySeconds": spec.min_ready_seconds.unwrap_or(0), "selector": selector, "template": template},
        }))
        .expect("a ReplicaSet deserializes");
        let pp = PostParams { field_manager: Some(MANAGER.into()), ..Default::default() };
        let rs = match api.create(&pp, &rs).await {
            Ok(rs) => rs,
            Err(kube::Error::Api(e)) if e.code == 409 => api.get(&rs_name).await.map_err(|e| Error::CreateFailed(rs_name.clone(), e))?,
            Err(e) => return Err(Error::CreateFailed(rs_name, e)),
        };
        let note = format!("Scaled up replica set {} from 0 to {start}", rs.name_any());
        podutil::event(&ctx, &*d, false, "ScalingReplicaSet", "Scaling", note).await;
        new_rs = Some(rs);
        created = true;
    } else if let Some(rs) = new_rs.as_mut() {
        // A template returning to an old ReplicaSet (a rollback) makes it the newest revision.
        if revision(rs) <= max_old_revision && !paused {
            s.set_revision(rs, max_old_revision + 1).await?;
        }
    }

    if let Some(new) = new_rs.as_mut() {
        let old_total: i32 = old.iter().map(spec_replicas).sum();
        if paused || old_total == 0 {
            // Scaling only.
            s.scale(new, replicas, max_surge).await?;
        } else if recreate {
            for rs in old.iter_mut() {
                s.scale(rs, 0, max_surge).await?;
            }
            let old_pods: i32 = old.iter().map(|rs| rs.status.as_ref().map_or(0, |st| st.replicas)).sum();
            if old_pods == 0 {
                s.scale(new, replicas, max_surge).await?;
            }
        } else {
            rolling(&s, new, &mut old, replicas, max_surge, max_unavailable).await?;
        }
    }

    // Deployment revision annotation follows the new ReplicaSet.
    if let Some(new) = &new_rs {
        let rev = revision(new).to_string();
        if d.annotations().get(REVISION) != Some(&rev) && revision(new) > 0 {
            let dapi: Api<Deployment> = Api::namespaced(ctx.client.clone(), &ns);
            let patch = json!({"metadata": {"annotations": {REVISION: rev}}});
            crate::writes::update(&dapi, &name, MANAGER, crate::writes::Part::Main, &patch).await.map_err(|e| Error::StatusUpdateFailed(name.clone(), e))?;
        }
    }

    let complete = update_status(&ctx, &d, new_rs.as_ref(), &old, created, max_unavailable).await?;
    if complete {
        cleanup(&ctx, &d, &api, &old).await;
        return Ok(Action::await_change());
    }
    // An unfinished rollout is looked at again when its progress deadline may have passed.
    match spec.progress_deadline_seconds {
        Some(dl) if !paused => Ok(Action::requeue(Duration::from_secs(u64::try_from(dl).unwrap_or(600).clamp(1, 600)))),
        _ => Ok(Action::await_change()),
    }
}

/// Annotations of the Deployment not copied to its ReplicaSets (upstream's `skipCopyAnnotation`).
fn skip_annotation(k: &str) -> bool {
    k == REVISION || k == DESIRED || k == MAX_REPLICAS || k == "kubectl.kubernetes.io/last-applied-configuration" || k == "deployment.kubernetes.io/revision-history"
}

/// One step of a rolling update (upstream's `rolloutRolling`): scale the new ReplicaSet up
/// within maxSurge, then the old ones down within maxUnavailable.
async fn rolling(s: &Sync<'_>, new: &mut ReplicaSet, old: &mut [ReplicaSet], replicas: i32, max_surge: i32, max_unavailable: i32) -> Result<(), Error> {
    let new_replicas = spec_replicas(new);
    let total: i32 = old.iter().map(spec_replicas).sum::<i32>() + new_replicas;
    let max_total = replicas + max_surge;
    let target = if new_replicas > replicas {
        replicas
    } else if total >= max_total {
        new_replicas
    } else {
        new_replicas + (max_total - total).min(replicas - new_replicas)
    };
    if target != new_replicas {
        s.scale(new, target, max_surge).await?;
        return Ok(());
    }

    // reconcileOldReplicaSets.
    let all: i32 = old.iter().map(spec_replicas).sum::<i32>() + spec_replicas(new);
    let min_available = replicas - max_unavailable;
    let new_unavailable = spec_replicas(new) - available(new);
    let mut max_scaled_down = all - min_available - new_unavailable;
    if max_scaled_down <= 0 {
        return Ok(());
    }
    // First the old ReplicaSets' unhealthy pods, oldest first.
    let mut cleaned = 0;
    for rs in old.iter_mut() {
        if max_scaled_down <= 0 {
            break;
        }
        let unhealthy = spec_replicas(rs) - available(rs);
        if spec_replicas(rs) == 0 || unhealthy <= 0 {
            continue;
        }
        let down = unhealthy.min(max_scaled_down);
        let to = spec_replicas(rs) - down;
        s.scale(rs, to, max_surge).await?;
        max_scaled_down -= down;
        cleaned += down;
    }
    // Then available ones, keeping minAvailable.
    let available_total: i32 = old.iter().map(available).sum::<i32>() + available(new);
    let mut budget = available_total - min_available;
    let _ = cleaned;
    for rs in old.iter_mut() {
        if budget <= 0 {
            break;
        }
        if spec_replicas(rs) == 0 {
            continue;
        }
        let down = spec_replicas(rs).min(budget);
        let to = spec_replicas(rs) - down;
        s.scale(rs, to, max_surge).await?;
        budget -= down;
    }
    Ok(())
}

/// Deletes old, empty ReplicaSets beyond revisionHistoryLimit, lowest revisions first.
async fn cleanup(ctx: &Ctx, d: &Deployment, api: &Api<ReplicaSet>, old: &[ReplicaSet]) {
    let limit = d.spec.as_ref().and_then(|s| s.revision_history_limit).unwrap_or(10).max(0) as usize;
    let mut empty: Vec<&ReplicaSet> = old
        .iter()
        .filter(|rs| spec_replicas(rs) == 0 && rs.status.as_ref().map_or(0, |s| s.replicas) == 0 && rs.metadata.deletion_timestamp.is_none())
        .collect();
    if empty.len() <= limit {
        return;
    }
    empty.sort_by_key(|rs| revision(rs));
    for rs in empty.iter().take(empty.len() - limit) {
        if let Err(e) = api.delete(&rs.name_any(), &DeleteParams::default()).await {
            tracing::debug!(replicaset = %rs.name_any(), error = %e, "deleting an old replicaset failed");
        }
    }
    let _ = ctx;
}

fn condition(type_: &str, status: bool, reason: &str, message: String, old: &[Value]) -> Value {
    let now = podutil::now_rfc3339();
    let status = if status { "True" } else { "False" };
    match old.iter().find(|c| c["type"] == type_) {
        Some(c) if c["status"] == status && c["reason"] == reason && c["message"] == message.as_str() => c.clone(),
        Some(c) if c["status"] == status => {
            json!({"type": type_, "status": status, "reason": reason, "message": message, "lastUpdateTime": now, "lastTransitionTime": c["lastTransitionTime"]})
        }
        _ => json!({"type": type_, "status": status, "reason": reason, "message": message, "lastUpdateTime": now, "lastTransitionTime": now}),
    }
}

/// Writes the status if it changed; returns whether the rollout is complete.
async fn update_status(ctx: &Ctx, d: &Deployment, new: Option<&ReplicaSet>, old: &[ReplicaSet], created: bool, max_unavailable: i32) -> Result<bool, Error> {
    let replicas_wanted = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
    let all: Vec<&ReplicaSet> = new.into_iter().chain(old.iter()).collect();
    let st = |f: fn(&k8s_openapi::api::apps::v1::ReplicaSetStatus) -> i32| all.iter().map(|rs| rs.status.as_ref().map_or(0, f)).sum::<i32>();
    let replicas = st(|s| s.replicas);
    let ready = st(|s| s.ready_replicas.unwrap_or(0));
    let avail = st(|s| s.available_replicas.unwrap_or(0));
    let updated = new.and_then(|rs| rs.status.as_ref()).map_or(0, |s| s.replicas);
    let new_available = new.map_or(0, available);
    let unavailable = (replicas_wanted - avail).max(0);
    let complete = new.is_some()
        && updated == replicas_wanted
        && new_available == replicas_wanted
        && replicas == replicas_wanted
        && new.is_some_and(|rs| spec_replicas(rs) == replicas_wanted)
        && old.iter().all(|rs| spec_replicas(rs) == 0);

    let old_conds: Vec<Value> = d
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .map(|c| c.iter().map(|c| serde_json::to_value(c).unwrap_or_default()).collect())
        .unwrap_or_default();
    let available_cond = if avail >= replicas_wanted - max_unavailable {
        condition("Available", true, "MinimumReplicasAvailable", "Deployment has minimum availability.".into(), &old_conds)
    } else {
        condition("Available", false, "MinimumReplicasUnavailable", "Deployment does not have minimum availability.".into(), &old_conds)
    };
    let new_name = new.map(|rs| rs.name_any()).unwrap_or_default();
    let paused = d.spec.as_ref().and_then(|s| s.paused).unwrap_or(false);
    let previous_reason = old_conds.iter().find(|c| c["type"] == "Progressing").map(|c| c["reason"].as_str().unwrap_or_default().to_string());
    let progressing = if paused {
        condition("Progressing", false, "DeploymentPaused", "Deployment is paused".into(), &old_conds)
    } else if previous_reason.as_deref() == Some("DeploymentPaused") {
        condition("Progressing", true, "DeploymentResumed", "Deployment is resumed".into(), &old_conds)
    } else if complete {
        condition("Progressing", true, "NewReplicaSetAvailable", format!("ReplicaSet \"{new_name}\" has successfully progressed."), &old_conds)
    } else if created {
        condition("Progressing", true, "NewReplicaSetCreated", format!("Created new replica set \"{new_name}\""), &old_conds)
    } else if new.is_some() {
        // Upstream's `DeploymentProgressing`: more updated/ready/available pods or fewer old
        // ones count as progress and refresh lastUpdateTime; none for progressDeadlineSeconds
        // is ProgressDeadlineExceeded.
        let status = d.status.as_ref();
        let old_replicas_now = replicas - updated;
        let old_replicas_before = status.map_or(0, |s| s.replicas.unwrap_or(0) - s.updated_replicas.unwrap_or(0));
        let progressed = updated > status.and_then(|s| s.updated_replicas).unwrap_or(0)
            || ready > status.and_then(|s| s.ready_replicas).unwrap_or(0)
            || avail > status.and_then(|s| s.available_replicas).unwrap_or(0)
            || old_replicas_now < old_replicas_before;
        let current = old_conds.iter().find(|c| c["type"] == "Progressing");
        let last_update = current.and_then(|c| c["lastUpdateTime"].as_str()).and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok()).map(|t| t.timestamp());
        let deadline = d.spec.as_ref().and_then(|s| s.progress_deadline_seconds).map(i64::from);
        let timed_out = !progressed
            && current.is_some_and(|c| c["status"] == "True" && c["reason"] != "NewReplicaSetAvailable")
            && matches!((deadline, last_update), (Some(dl), Some(t)) if t + dl <= podutil::now_secs());
        if timed_out || current.is_some_and(|c| c["reason"] == "ProgressDeadlineExceeded") && !progressed {
            condition("Progressing", false, "ProgressDeadlineExceeded", format!("ReplicaSet \"{new_name}\" has timed out progressing."), &old_conds)
        } else if progressed {
            let mut c = condition("Progressing", true, "ReplicaSetUpdated", format!("ReplicaSet \"{new_name}\" is progressing."), &old_conds);
            c["lastUpdateTime"] = json!(podutil::now_rfc3339());
            c
        } else {
            condition("Progressing", true, "ReplicaSetUpdated", format!("ReplicaSet \"{new_name}\" is progressing."), &old_conds)
        }
    } else {
        old_conds.iter().find(|c| c["type"] == "Progressing").cloned().unwrap_or(Value::Null)
    };
    let mut conds = vec![available_cond];
    if !progressing.is_null() {
        conds.push(progressing);
    }
    // Upstream lists Progressing before Available once both exist; keep the stored order.
    conds.sort_by_key(|c| old_conds.iter().position(|o| o["type"] == c["type"]).unwrap_or(usize::MAX));

    let status = d.status.as_ref();
    let new_status = json!({
        "observedGeneration": d.metadata.generation.unwrap_or(0),
        "replicas": replicas, "updatedReplicas": updated, "readyReplicas": ready,
        "availableReplicas": avail, "unavailableReplicas": unavailable,
        "conditions": conds,
    });
    let current = json!({
        "observedGeneration": status.and_then(|s| s.observed_generation).unwrap_or(0),
        "replicas": status.and_then(|s| s.replicas).unwrap_or(0),
        "updatedReplicas": status.and_then(|s| s.updated_replicas).unwrap_or(0),
        "readyReplicas": status.and_then(|s| s.ready_replicas).unwrap_or(0),
        "availableReplicas": status.and_then(|s| s.available_replicas).unwrap_or(0),
        "unavailableReplicas": status.and_then(|s| s.unavailable_replicas).unwrap_or(0),
        "conditions": old_conds,
    });
    if new_status != current {
        let api: Api<Deployment> = Api::namespaced(ctx.client.clone(), &d.namespace().unwrap_or_default());
        crate::writes::update(&api, &d.name_any(), MANAGER, crate::writes::Part::Status, &json!({"status": new_status}))
            .await
            .map_err(|e| Error::StatusUpdateFailed(d.name_any(), e))?;
    }
    Ok(complete)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fenceposts_round_as_upstream() {
        let d = |surge: &str, unavail: &str| -> Deployment {
            serde_json::from_value(json!({"spec": {"selector": {}, "template": {},
                "strategy": {"rollingUpdate": {"maxSurge": surge, "maxUnavailable": unavail}}}}))
            .unwrap()
        };
        assert_eq!(fenceposts(&d("25%", "25%"), 3), (1, 0));
        assert_eq!(fenceposts(&d("25%", "25%"), 10), (3, 2));
        assert_eq!(fenceposts(&d("0%", "0%"), 10), (0, 1));
        let hash = template_hash(&PodTemplateSpec::default());
        assert!(!hash.is_empty() && hash.chars().all(|c| "bcdfghjklmnpqrstvwxz2456789".contains(c)));
    }
}
