//! The DaemonSet controller (upstream's `daemonset` controller).
//!
//! A `Controller` over DaemonSets that `.owns(...)` pods and is woken for every DaemonSet by
//! any Node change. Each reconcile lists nodes, the namespace's ControllerRevisions and pods
//! live, claims the revisions and the pods matching the selector, then as upstream's
//! `syncDaemonSet`:
//! - history (`constructHistory`): the revision whose data is the template's is current
//!   (renumbered to the newest when it was an old one, which is how `kubectl rollout undo`
//!   works), else one is created, named `<ds>-<hash>` with the `controller-revision-hash`
//!   label (hash collisions bump `status.collisionCount`);
//! - `manage`: a node should run the pod when the template's `nodeName`, `nodeSelector`,
//!   required node affinity and NoSchedule/NoExecute taints (against the template's
//!   tolerations plus upstream's automatic DaemonSet ones) allow it; a node that should run
//!   one and has none gets a pod (`generateName: <ds>-`, labels `controller-revision-hash`
//!   and `pod-template-generation`, a required node affinity on `metadata.name` through
//!   `matchFields`, so the scheduler places it); failed or succeeded pods are deleted (and
//!   recreated), extra pods on a node beyond the oldest are deleted, pods on nodes that
//!   should not run them (or on nodes that are gone) are deleted, unless a NoExecute taint
//!   they tolerate is the only reason;
//! - RollingUpdate (`rollingUpdate`): without surge, old pods are deleted while no more than
//!   `maxUnavailable` nodes lack an available updated pod (the manage step creates the new
//!   ones); with `maxSurge`, new pods start beside old ones on up to `maxSurge` nodes and the
//!   old pod goes once the new one is available; OnDelete leaves pods until they are deleted;
//! - revisions beyond `revisionHistoryLimit` that no pod uses are deleted;
//! - status: desiredNumberScheduled, currentNumberScheduled, numberMisscheduled,
//!   numberReady, numberAvailable (`minReadySeconds`), numberUnavailable,
//!   updatedNumberScheduled, observedGeneration, collisionCount, through `/status`.
//!
//! Unlike upstream, pods bound to a node that no longer exists are deleted here (upstream
//! leaves them to the pod garbage collector, which krust does not have).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::{ControllerRevision, DaemonSet};
use k8s_openapi::api::core::v1::{Affinity, Node, NodeAffinity, NodeSelector, NodeSelectorRequirement, NodeSelectorTerm, Pod, PodSpec, Toleration};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use kube::runtime::controller::Action;
use kube::runtime::reflector::ObjectRef;
use kube::runtime::{watcher, Controller};
use kube::ResourceExt;
use serde_json::json;

use crate::podutil;
use crate::revision::{self, POD_REVISION_LABEL};
use crate::scheduler::tolerates;
use crate::Ctx;

const MANAGER: &str = "daemonset-controller";
/// The pod label holding the DaemonSet's template generation.
pub const TEMPLATE_GENERATION_LABEL: &str = "pod-template-generation";
/// Where apps/v1 keeps the template generation on the DaemonSet.
const TEMPLATE_GENERATION: &str = "deprecated.daemonset.template.generation";
const RETRY: Duration = Duration::from_secs(2);

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("listing the {1} of daemonset {0}: {2}")]
    ListFailed(String, &'static str, #[source] kube::Error),
    #[error("recording a revision of daemonset {0}: {1}")]
    HistoryFailed(String, #[source] kube::Error),
    #[error("creating a pod of daemonset {0} on node {1}: {2}")]
    CreateFailed(String, String, #[source] kube::Error),
    #[error("deleting pod {0}: {1}")]
    DeleteFailed(String, #[source] kube::Error),
    #[error("updating the status of daemonset {0}: {1}")]
    StatusUpdateFailed(String, #[source] kube::Error),
}

pub async fn run(ctx: Arc<Ctx>) -> Result<(), crate::Error> {
    let sets: Api<DaemonSet> = Api::all(ctx.client.clone());
    let pods: Api<Pod> = Api::all(ctx.client.clone());
    let nodes: Api<Node> = Api::all(ctx.client.clone());
    let controller = Controller::new(sets, watcher::Config::default());
    let store = controller.store();
    controller
        .owns(pods, watcher::Config::default())
        // A node change may change where every DaemonSet should run.
        .watches(nodes, watcher::Config::default(), move |_node: Node| store.state().iter().map(|ds| ObjectRef::from_obj(&**ds)).collect::<Vec<_>>())
        .run(reconcile, error_policy, ctx)
        .for_each(|res| async move {
            if let Err(e) = res {
                tracing::debug!(error = %e, "daemonset reconcile failed");
            }
        })
        .await;
    Ok(())
}

fn error_policy(ds: Arc<DaemonSet>, err: &Error, _ctx: Arc<Ctx>) -> Action {
    tracing::warn!(daemonset = %ds.name_any(), error = %err, "daemonset sync will be retried");
    Action::requeue(RETRY)
}

/// Upstream's `AddOrUpdateDaemonPodTolerations`: DaemonSet pods survive node problems and
/// cordoning.
pub fn add_daemon_tolerations(spec: &mut PodSpec) {
    let mut wanted = vec![
        ("node.kubernetes.io/not-ready", "NoExecute"),
        ("node.kubernetes.io/unreachable", "NoExecute"),
        ("node.kubernetes.io/disk-pressure", "NoSchedule"),
        ("node.kubernetes.io/memory-pressure", "NoSchedule"),
        ("node.kubernetes.io/pid-pressure", "NoSchedule"),
        ("node.kubernetes.io/unschedulable", "NoSchedule"),
    ];
    if spec.host_network == Some(true) {
        wanted.push(("node.kubernetes.io/network-unavailable", "NoSchedule"));
    }
    let tolerations = spec.tolerations.get_or_insert_with(Vec::new);
    for (key, effect) in wanted {
        let t = Toleration { key: Some(key.into()), operator: Some("Exists".into()), effect: Some(effect.into()), ..Default::default() };
        // Upstream's AddOrUpdateTolerationInPodSpec: a toleration with the same key,
        // operator, value and effect is replaced, else it is added.
        let same = |o: &Toleration| o.key == t.key && o.operator.as_deref().unwrap_or("Equal") == "Exists" && o.value.as_deref().unwrap_or_default().is_empty() && o.effect == t.effect;
        match tolerations.iter_mut().find(|o| same(o)) {
            Some(o) => *o = t,
            None => tolerations.push(t),
        }
    }
}

/// Upstream's `ReplaceDaemonSetPodNodeNameNodeAffinity`: the pod's required node affinity
/// becomes the one term `metadata.name In [node]`.
pub fn pin_to_node(affinity: Option<Affinity>, node: &str) -> Affinity {
    let term = NodeSelectorTerm {
        match_fields: Some(vec![NodeSelectorRequirement { key: "metadata.name".into(), operator: "In".into(), values: Some(vec![node.into()]) }]),
        match_expressions: None,
    };
    let mut affinity = affinity.unwrap_or_default();
    let na = affinity.node_affinity.get_or_insert_with(NodeAffinity::default);
    match na.required_during_scheduling_ignored_during_execution.as_mut() {
        Some(sel) => sel.node_selector_terms = vec![term],
        None => na.required_during_scheduling_ignored_during_execution = Some(NodeSelector { node_selector_terms: vec![term] }),
    }
    affinity
}

/// The node a daemon pod is for: its `nodeName`, else its `metadata.name` node affinity
/// (upstream's `GetTargetNodeName`).
fn target_node(pod: &Pod) -> Option<String> {
    let spec = pod.spec.as_ref()?;
    if let Some(n) = spec.node_name.as_ref().filter(|n| !n.is_empty()) {
        return Some(n.clone());
    }
    let terms = &spec.affinity.as_ref()?.node_affinity.as_ref()?.required_during_scheduling_ignored_during_execution.as_ref()?.node_selector_terms;
    terms.iter().flat_map(|t| t.match_fields.iter().flatten()).find(|r| r.key == "metadata.name" && r.operator == "In").and_then(|r| r.values.as_ref()?.first().cloned())
}

/// nodeSelector and required node affinity, as the scheduler checks them.
fn fits_affinity(spec: &PodSpec, node: &Node) -> bool {
    crate::scheduler::spec_fits_node(spec, &node.name_any(), node.labels())
}

/// Whether the DaemonSet should run a pod on `node`, and whether a pod already there may
/// keep running (upstream's `NodeShouldRunDaemonPod`).
pub fn should_run(ds: &DaemonSet, node: &Node) -> (bool, bool) {
    let mut spec = ds.spec.as_ref().and_then(|s| s.template.spec.clone()).unwrap_or_default();
    if spec.node_name.as_ref().is_some_and(|n| !n.is_empty() && *n != node.name_any()) {
        return (false, false);
    }
    add_daemon_tolerations(&mut spec);
    if !fits_affinity(&spec, node) {
        return (false, false);
    }
    let tolerations = spec.tolerations.unwrap_or_default();
    let taints = node.spec.as_ref().and_then(|s| s.taints.clone()).unwrap_or_default();
    let untolerated = |effects: &[&str]| taints.iter().any(|t| effects.contains(&t.effect.as_str()) && !tolerations.iter().any(|tol| tolerates(tol, t)));
    if untolerated(&["NoSchedule", "NoExecute"]) {
        return (false, !untolerated(&["NoExecute"]));
    }
    (true, true)
}

fn template_generation(ds: &DaemonSet) -> Option<String> {
    ds.annotations().get(TEMPLATE_GENERATION).cloned()
}

/// Whether the pod is of the current template (upstream's `IsPodUpdated`).
fn is_updated(pod: &Pod, hash: &str, generation: Option<&str>) -> bool {
    let labels = pod.labels();
    (!hash.is_empty() && labels.get(POD_REVISION_LABEL).map(String::as_str) == Some(hash)) || (generation.is_some() && labels.get(TEMPLATE_GENERATION_LABEL).map(String::as_str) == generation)
}

fn phase(pod: &Pod) -> &str {
    pod.status.as_ref().and_then(|s| s.phase.as_deref()).unwrap_or_default()
}

/// Oldest first, then by phase (upstream's `podByCreationTimestampAndPhase`).
fn oldest_first(pods: &mut [Pod]) {
    let rank = |p: &Pod| match phase(p) {
        "Running" => 0,
        "Pending" => 1,
        _ => 2,
    };
    pods.sort_by_key(|p| (p.metadata.creation_timestamp.as_ref().map(|t| t.0.as_second()), rank(p), p.name_any()));
}

/// An int-or-percent of `total`, percentages rounded up (upstream's `UnavailableCount` / `SurgeCount`).
fn scaled_up(v: Option<&IntOrString>, total: i32) -> i32 {
    match v {
        Some(IntOrString::Int(i)) => *i,
        Some(IntOrString::String(s)) => {
            let p: i64 = s.trim_end_matches('%').parse().unwrap_or(0);
            ((p * i64::from(total) + 99) / 100) as i32
        }
        None => 0,
    }
}

struct Sync<'a> {
    ctx: &'a Ctx,
    ds: &'a DaemonSet,
    pods: Api<Pod>,
    hash: String,
    min_ready: i64,
    next_check: Option<i64>,
    /// Whether pods were created or deleted (the pod list is then read again).
    changed: bool,
}

impl Sync<'_> {
    fn available(&mut self, pod: &Pod) -> bool {
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

    /// Creates pods on `nodes` and deletes `victims` (upstream's `syncNodes`).
    async fn sync_nodes(&mut self, victims: &[&Pod], nodes: &[String]) -> Result<(), Error> {
        self.changed |= !victims.is_empty() || !nodes.is_empty();
        let name = self.ds.name_any();
        let spec = self.ds.spec.clone().unwrap_or_default();
        let mut template = spec.template;
        let tmeta = template.metadata.get_or_insert_with(Default::default);
        let labels = tmeta.labels.get_or_insert_with(BTreeMap::new);
        if let Some(g) = template_generation(self.ds) {
            labels.insert(TEMPLATE_GENERATION_LABEL.into(), g);
        }
        labels.insert(POD_REVISION_LABEL.into(), self.hash.clone());
        let mut first_err = None;
        let pp = PostParams { field_manager: Some(MANAGER.into()), ..Default::default() };
        for node in nodes {
            let mut pod = Pod { spec: template.spec.clone(), ..Default::default() };
            let tmeta = template.metadata.clone().unwrap_or_default();
            pod.metadata.generate_name = Some(format!("{name}-"));
            pod.metadata.labels = tmeta.labels;
            pod.metadata.annotations = tmeta.annotations;
            pod.metadata.finalizers = tmeta.finalizers;
            pod.metadata.owner_references = Some(vec![podutil::controller_ref(self.ds)]);
            let ps = pod.spec.get_or_insert_with(Default::default);
            add_daemon_tolerations(ps);
            ps.affinity = Some(pin_to_node(ps.affinity.take(), node));
            match self.pods.create(&pp, &pod).await {
                Ok(p) => podutil::event(self.ctx, self.ds, false, "SuccessfulCreate", "Create", format!("Created pod: {}", p.name_any())).await,
                Err(e) => {
                    podutil::event(self.ctx, self.ds, true, "FailedCreate", "Create", format!("Error creating: {e}")).await;
                    first_err.get_or_insert(Error::CreateFailed(name.clone(), node.clone(), e));
                }
            }
        }
        for pod in victims {
            match self.pods.delete(&pod.name_any(), &DeleteParams::default()).await {
                Ok(_) => podutil::event(self.ctx, self.ds, false, "SuccessfulDelete", "Delete", format!("Deleted pod: {}", pod.name_any())).await,
                Err(kube::Error::Api(e)) if e.code == 404 => {}
                Err(e) => {
                    podutil::event(self.ctx, self.ds, true, "FailedDelete", "Delete", format!("Error deleting: {e}")).await;
                    first_err.get_or_insert(Error::DeleteFailed(pod.name_any(), e));
                }
            }
        }
        first_err.map_or(Ok(()), Err)
    }

    /// Upstream's `manage`: which nodes need a pod and which pods must go.
    async fn manage<'p>(&mut self, nodes: &[Node], by_node: &'p BTreeMap<String, Vec<Pod>>) -> Result<(), Error> {
        let surge = allows_surge(self.ds);
        let mut need: Vec<String> = Vec::new();
        let mut victims: Vec<&'p Pod> = Vec::new();
        for node in nodes {
            let (run, keep) = should_run(self.ds, node);
            let pods = by_node.get(&node.name_any());
            match pods {
                None if run => need.push(node.name_any()),
                Some(pods) if keep => {
                    let mut running: Vec<&Pod> = Vec::new();
                    for pod in pods.iter().filter(|p| p.metadata.deletion_timestamp.is_none()) {
                        match phase(pod) {
                            "Failed" => {
                                let note = format!("Found failed daemon pod {}/{} on node {}, will try to kill it", pod.namespace().unwrap_or_default(), pod.name_any(), node.name_any());
                                podutil::event(self.ctx, self.ds, true, "FailedDaemonPod", "Delete", note).await;
                                victims.push(pod);
                            }
                            "Succeeded" => victims.push(pod),
                            _ => running.push(pod),
                        }
                    }
                    if running.is_empty() && run && surge {
                        // Surging keeps a pod on the node; otherwise the next sync creates
                        // one once the deleted ones are gone.
                        need.push(node.name_any());
                    }
                    // pods are oldest first already.
                    if !surge {
                        victims.extend(running.iter().skip(1));
                    } else if running.len() > 1 {
                        // With surge, at most one old and one new pod; the old one goes once
                        // the new one is available (or it is not ready itself).
                        let (mut new, mut old): (Option<&Pod>, Option<&Pod>) = (None, None);
                        let generation = template_generation(self.ds);
                        for pod in running {
                            let slot = if is_updated(pod, &self.hash, generation.as_deref()) { &mut new } else { &mut old };
                            if slot.is_none() {
                                *slot = Some(pod);
                            } else {
                                victims.push(pod);
                            }
                        }
                        if let (Some(n), Some(o)) = (new, old) {
                            if !podutil::is_ready(o) || self.available(n) {
                                victims.push(o);
                            }
                        }
                    }
                }
                Some(pods) if !keep => victims.extend(pods.iter().filter(|p| p.metadata.deletion_timestamp.is_none())),
                _ => {}
            }
        }
        // Pods for nodes that do not exist (any more).
        for (node, pods) in by_node {
            if !nodes.iter().any(|n| n.name_any() == *node) {
                victims.extend(pods.iter().filter(|p| p.metadata.deletion_timestamp.is_none()));
            }
        }
        self.sync_nodes(&victims, &need).await
    }

    /// Upstream's `rollingUpdate`.
    async fn rolling_update(&mut self, nodes: &[Node], by_node: &BTreeMap<String, Vec<Pod>>) -> Result<(), Error> {
        let ds = self.ds;
        let ru = ds.spec.as_ref().and_then(|s| s.update_strategy.as_ref()).and_then(|u| u.rolling_update.clone()).unwrap_or_default();
        let mut desired = 0;
        let mut candidates_by_node: BTreeMap<String, Vec<Pod>> = by_node.iter().filter(|(n, _)| nodes.iter().any(|x| x.name_any() == **n)).map(|(n, p)| (n.clone(), p.clone())).collect();
        for node in nodes {
            if should_run(ds, node).0 {
                desired += 1;
                candidates_by_node.entry(node.name_any()).or_default();
            }
        }
        let mut max_unavailable = scaled_up(ru.max_unavailable.as_ref(), desired);
        let max_surge = scaled_up(ru.max_surge.as_ref(), desired);
        if desired > 0 && max_unavailable == 0 && max_surge == 0 {
            max_unavailable = 1;
        }
        let generation = template_generation(ds);
        // (new, old) per node, or None when there are several of a kind.
        let hash = self.hash.clone();
        let split = |pods: &[Pod]| -> Option<(Option<Pod>, Option<Pod>)> {
            let (mut new, mut old) = (None, None);
            for pod in pods.iter().filter(|p| p.metadata.deletion_timestamp.is_none()) {
                let slot = if is_updated(pod, &hash, generation.as_deref()) { &mut new } else { &mut old };
                if slot.is_some() {
                    return None;
                }
                *slot = Some(pod.clone());
            }
            Some((new, old))
        };
        let node_of = |name: &str| nodes.iter().find(|n| n.name_any() == name);
        if max_surge == 0 {
            let mut unavailable = 0;
            let mut replace: Vec<Pod> = Vec::new();
            let mut candidates: Vec<Pod> = Vec::new();
            for pods in candidates_by_node.values() {
                match split(pods) {
                    None | Some((None, None)) | Some((Some(_), Some(_))) => unavailable += 1,
                    Some((Some(new), None)) => {
                        if !self.available(&new) {
                            unavailable += 1;
                        }
                    }
                    Some((None, Some(old))) => {
                        if !self.available(&old) {
                            replace.push(old);
                            unavailable += 1;
                        } else if unavailable < max_unavailable {
                            candidates.push(old);
                        }
                    }
                }
            }
            let room = (max_unavailable - unavailable).clamp(0, candidates.len() as i32) as usize;
            replace.extend(candidates.into_iter().take(room));
            let victims: Vec<&Pod> = replace.iter().collect();
            return self.sync_nodes(&victims, &[]).await;
        }
        let (mut victims, mut not_run_victims, mut candidates, mut allowed): (Vec<Pod>, Vec<Pod>, Vec<String>, Vec<String>) = Default::default();
        let (mut surging, mut available) = (0, 0);
        for (node, pods) in &candidates_by_node {
            let Some((new, old)) = split(pods) else {
                surging += 1;
                continue;
            };
            if let Some(p) = old.as_ref().or(new.as_ref()) {
                if self.available(p) {
                    available += 1;
                }
            }
            match (new, old) {
                (_, None) => {}
                (None, Some(old)) => {
                    let run = node_of(node).is_some_and(|n| should_run(ds, n).0);
                    if !self.available(&old) {
                        if !run {
                            victims.push(old);
                        } else {
                            allowed.push(node.clone());
                        }
                    } else if !run {
                        not_run_victims.push(old);
                    } else if surging < max_surge {
                        candidates.push(node.clone());
                    }
                }
                (Some(new), Some(old)) => {
                    if !self.available(&new) {
                        surging += 1;
                    } else {
                        victims.push(old);
                    }
                }
            }
        }
        let deletable = (available - desired).clamp(0, not_run_victims.len() as i32) as usize;
        victims.extend(not_run_victims.into_iter().take(deletable));
        let room = (max_surge - surging).clamp(0, candidates.len() as i32) as usize;
        allowed.extend(candidates.into_iter().take(room));
        let victims: Vec<&Pod> = victims.iter().collect();
        self.sync_nodes(&victims, &allowed).await
    }
}

fn allows_surge(ds: &DaemonSet) -> bool {
    let us = ds.spec.as_ref().and_then(|s| s.update_strategy.as_ref());
    us.and_then(|u| u.type_.as_deref()).unwrap_or("RollingUpdate") == "RollingUpdate"
        && us.and_then(|u| u.rolling_update.as_ref()).is_some_and(|r| scaled_up(r.max_surge.as_ref(), 1) > 0)
}

/// Claimed pods grouped by target node, oldest first (upstream's `getNodesToDaemonPods`);
/// finished pods already being deleted are left out.
fn group_by_node(pods: &[Pod]) -> BTreeMap<String, Vec<Pod>> {
    let mut by_node: BTreeMap<String, Vec<Pod>> = BTreeMap::new();
    for pod in pods {
        if matches!(phase(pod), "Failed" | "Succeeded") && pod.metadata.deletion_timestamp.is_some() {
            continue;
        }
        if let Some(node) = target_node(pod) {
            by_node.entry(node).or_default().push(pod.clone());
        }
    }
    for pods in by_node.values_mut() {
        oldest_first(pods);
    }
    by_node
}

/// The current revision (created, or renumbered to the newest), and the old ones
/// (upstream's `constructHistory`).
async fn construct_history(client: &kube::Client, api: &Api<ControllerRevision>, ds: &DaemonSet) -> Result<(ControllerRevision, Vec<ControllerRevision>), Error> {
    let name = ds.name_any();
    let ns = ds.namespace().unwrap_or_default();
    let spec = ds.spec.clone().unwrap_or_default();
    let oref = podutil::controller_ref(ds);
    let revs = revision::history(api, &oref, false, Some(&spec.selector), MANAGER).await.map_err(|e| Error::ListFailed(name.clone(), "revisions", e))?;
    let data = revision::template_patch(&spec.template);
    let (mut current, old): (Vec<ControllerRevision>, Vec<ControllerRevision>) = revs.into_iter().partition(|r| revision::holds(r, &data));
    let next = old.iter().map(|r| r.revision).max().unwrap_or(0) + 1;
    let cur = match current.pop() {
        // Duplicates (upstream's dedupCurHistories): the newest stays.
        Some(cur) => {
            let dups: Vec<&ControllerRevision> = current.iter().collect();
            revision::delete_all(api, &dups).await.map_err(|e| Error::HistoryFailed(name.clone(), e))?;
            if cur.revision < next {
                revision::renumber(api, &cur, next, MANAGER).await.map_err(|e| Error::HistoryFailed(name.clone(), e))?
            } else {
                cur
            }
        }
        None => {
            let labels = spec.template.metadata.as_ref().and_then(|m| m.labels.as_ref());
            let mut rev = revision::new_revision(&ns, &oref, labels, data, next);
            rev.metadata.annotations = ds.metadata.annotations.clone();
            let before = ds.status.as_ref().and_then(|s| s.collision_count).unwrap_or(0);
            let mut collision = before;
            let cur = revision::create(api, &name, rev, POD_REVISION_LABEL, &mut collision, MANAGER).await.map_err(|e| Error::HistoryFailed(name.clone(), e))?;
            if collision != before {
                let dapi: Api<DaemonSet> = Api::namespaced(client.clone(), &ns);
                crate::writes::update(&dapi, &name, MANAGER, crate::writes::Part::Status, &json!({"status": {"collisionCount": collision}}))
                    .await
                    .map_err(|e| Error::StatusUpdateFailed(name.clone(), e))?;
            }
            cur
        }
    };
    Ok((cur, old))
}

async fn reconcile(ds: Arc<DaemonSet>, ctx: Arc<Ctx>) -> Result<Action, Error> {
    let name = ds.name_any();
    let ns = ds.namespace().unwrap_or_default();
    if ds.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let spec = ds.spec.clone().unwrap_or_default();
    let revs_api: Api<ControllerRevision> = Api::namespaced(ctx.client.clone(), &ns);
    let pods_api: Api<Pod> = Api::namespaced(ctx.client.clone(), &ns);
    let nodes = Api::<Node>::all(ctx.client.clone()).list(&ListParams::default()).await.map_err(|e| Error::ListFailed(name.clone(), "nodes", e))?.items;
    let (cur, old) = construct_history(&ctx.client, &revs_api, &ds).await?;
    let hash = cur.labels().get(POD_REVISION_LABEL).cloned().unwrap_or_else(|| cur.name_any());
    let oref = podutil::controller_ref(&*ds);
    let list = || async {
        let all = pods_api.list(&ListParams::default()).await.map_err(|e| Error::ListFailed(name.clone(), "pods", e))?.items;
        Ok::<_, Error>(revision::claim(&pods_api, &oref, false, Some(&spec.selector), all, |_| true, MANAGER).await)
    };
    let mut s = Sync { ctx: &ctx, ds: &ds, pods: pods_api.clone(), hash: hash.clone(), min_ready: i64::from(spec.min_ready_seconds.unwrap_or(0)), next_check: None, changed: false };

    let mut all = list().await?;
    let mut by_node = group_by_node(&all);
    let mut result = s.manage(&nodes, &by_node).await;
    let rolling = spec.update_strategy.as_ref().and_then(|u| u.type_.as_deref()).unwrap_or("RollingUpdate") == "RollingUpdate";
    if result.is_ok() && rolling {
        if std::mem::take(&mut s.changed) {
            all = list().await?;
            by_node = group_by_node(&all);
        }
        result = s.rolling_update(&nodes, &by_node).await;
    }

    // Status, from the pods as they are now (upstream's updateDaemonSetStatus).
    if s.changed {
        all = list().await?;
        by_node = group_by_node(&all);
    }
    let generation = template_generation(&ds);
    let (mut desired, mut current, mut misscheduled, mut ready, mut available, mut updated) = (0, 0, 0, 0, 0, 0);
    for node in &nodes {
        let (run, _) = should_run(&ds, node);
        let pods = by_node.get(&node.name_any()).filter(|p| !p.is_empty());
        if !run {
            if pods.is_some() {
                misscheduled += 1;
            }
            continue;
        }
        desired += 1;
        let Some(pod) = pods.and_then(|p| p.first()) else { continue };
        current += 1;
        if podutil::is_ready(pod) {
            ready += 1;
            if s.available(pod) {
                available += 1;
            }
        }
        if is_updated(pod, &hash, generation.as_deref()) {
            updated += 1;
        }
    }
    let st = ds.status.clone().unwrap_or_default();
    let new_status = json!({
        "observedGeneration": ds.metadata.generation.unwrap_or(0),
        "desiredNumberScheduled": desired, "currentNumberScheduled": current, "numberMisscheduled": misscheduled,
        "numberReady": ready, "numberAvailable": available, "numberUnavailable": desired - available,
        "updatedNumberScheduled": updated,
    });
    let old_status = json!({
        "observedGeneration": st.observed_generation.unwrap_or(0),
        "desiredNumberScheduled": st.desired_number_scheduled, "currentNumberScheduled": st.current_number_scheduled,
        "numberMisscheduled": st.number_misscheduled, "numberReady": st.number_ready,
        "numberAvailable": st.number_available.unwrap_or(0), "numberUnavailable": st.number_unavailable.unwrap_or(0),
        "updatedNumberScheduled": st.updated_number_scheduled.unwrap_or(0),
    });
    if new_status != old_status {
        let api: Api<DaemonSet> = Api::namespaced(ctx.client.clone(), &ns);
        crate::writes::update(&api, &name, MANAGER, crate::writes::Part::Status, &json!({"status": new_status}))
            .await
            .map_err(|e| Error::StatusUpdateFailed(name.clone(), e))?;
    }
    result?;

    // Old revisions beyond revisionHistoryLimit that no pod uses (upstream's cleanupHistory).
    let limit = spec.revision_history_limit.unwrap_or(10).max(0) as usize;
    if old.len() > limit {
        let live: Vec<&str> = all.iter().filter_map(|p| p.labels().get(POD_REVISION_LABEL).map(String::as_str)).collect();
        let mut old: Vec<&ControllerRevision> = old.iter().collect();
        old.sort_by_key(|r| r.revision);
        let mut to_kill = old.len() - limit;
        let mut doomed = Vec::new();
        for rev in old {
            if to_kill == 0 {
                break;
            }
            if rev.labels().get(POD_REVISION_LABEL).is_some_and(|h| live.contains(&h.as_str())) {
                continue;
            }
            doomed.push(rev);
            to_kill -= 1;
        }
        revision::delete_all(&revs_api, &doomed).await.map_err(|e| Error::HistoryFailed(name.clone(), e))?;
    }
    Ok(s.next_check.map_or(Action::await_change(), |secs| Action::requeue(Duration::from_secs(secs.max(1) as u64))))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    fn ds(extra_spec: Value) -> DaemonSet {
        let mut v = json!({"metadata": {"name": "agent", "namespace": "default"},
            "spec": {"selector": {"matchLabels": {"app": "a"}},
                "template": {"metadata": {"labels": {"app": "a"}}, "spec": {"containers": [{"name": "c", "image": "i"}]}}}});
        for (k, x) in extra_spec.as_object().unwrap() {
            v["spec"]["template"]["spec"][k] = x.clone();
        }
        serde_json::from_value(v).unwrap()
    }

    fn node(name: &str, labels: Value, taints: Value) -> Node {
        serde_json::from_value(json!({"metadata": {"name": name, "labels": labels}, "spec": {"taints": taints}})).unwrap()
    }

    #[test]
    fn which_nodes_run_daemon_pods() {
        let plain = ds(json!({}));
        assert_eq!(should_run(&plain, &node("a", json!({}), json!([]))), (true, true));
        // Automatic tolerations: cordoned and not-ready nodes keep their daemon pods.
        let cordoned = node("a", json!({}), json!([{"key": "node.kubernetes.io/unschedulable", "effect": "NoSchedule"}]));
        assert_eq!(should_run(&plain, &cordoned), (true, true));
        let not_ready = node("a", json!({}), json!([{"key": "node.kubernetes.io/not-ready", "effect": "NoExecute"}]));
        assert_eq!(should_run(&plain, &not_ready), (true, true));
        // A NoSchedule taint keeps new pods off but lets a running one stay; NoExecute does not.
        let tainted = node("a", json!({}), json!([{"key": "dedicated", "value": "db", "effect": "NoSchedule"}]));
        assert_eq!(should_run(&plain, &tainted), (false, true));
        let evicting = node("a", json!({}), json!([{"key": "dedicated", "value": "db", "effect": "NoExecute"}]));
        assert_eq!(should_run(&plain, &evicting), (false, false));
        let tolerant = ds(json!({"tolerations": [{"key": "dedicated", "operator": "Exists"}]}));
        assert_eq!(should_run(&tolerant, &evicting), (true, true));
        let selective = ds(json!({"nodeSelector": {"disk": "ssd"}}));
        assert_eq!(should_run(&selective, &node("a", json!({}), json!([]))), (false, false));
        assert_eq!(should_run(&selective, &node("a", json!({"disk": "ssd"}), json!([]))), (true, true));
        let pinned = ds(json!({"nodeName": "b"}));
        assert_eq!(should_run(&pinned, &node("a", json!({}), json!([]))), (false, false));
        let by_field = ds(json!({"affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
            {"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["b"]}]}]}}}}));
        assert_eq!(should_run(&by_field, &node("a", json!({}), json!([]))), (false, false));
        assert_eq!(should_run(&by_field, &node("b", json!({}), json!([]))), (true, true));
    }

    #[test]
    fn pods_are_pinned_and_tolerate_node_problems() {
        let mut spec: PodSpec = serde_json::from_value(json!({"containers": [], "tolerations": [{"key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 5}]})).unwrap();
        add_daemon_tolerations(&mut spec);
        let tols = spec.tolerations.clone().unwrap();
        assert_eq!(tols.len(), 6);
        assert_eq!(tols[0].toleration_seconds, None, "the not-ready toleration is replaced by the unlimited one");
        let affinity = pin_to_node(Some(serde_json::from_value(json!({"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
            {"matchExpressions": [{"key": "disk", "operator": "Exists"}]}]}}})).unwrap()), "node-b");
        assert_eq!(
            serde_json::to_value(&affinity).unwrap(),
            json!({"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [{"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["node-b"]}]}]}}})
        );
        let pod = Pod { spec: Some(PodSpec { affinity: Some(affinity), ..Default::default() }), ..Default::default() };
        assert_eq!(target_node(&pod).as_deref(), Some("node-b"));
        assert_eq!(scaled_up(Some(&IntOrString::String("10%".into())), 3), 1);
        assert_eq!(scaled_up(Some(&IntOrString::Int(2)), 3), 2);
    }
}
