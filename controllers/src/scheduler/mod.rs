//! The scheduler (upstream's `default-scheduler` with its default plugins): binds every
//! pending pod whose `schedulerName` is `default-scheduler` to a node through
//! `POST pods/NAME/binding`.
//!
//! Reflectors cache pods and nodes; any change to either wakes one loop (debounced, and every
//! 10 s as a resync) that takes the pending pods by priority, then creation, and for each:
//! - filters nodes ([`filters`], in upstream's plugin order; the first failing filter gives
//!   the node's reasons): Ready, NodeUnschedulable, TaintToleration, NodeAffinity (nodeSelector,
//!   required terms incl. `matchFields`), NodePorts, NodeResourcesFit, PodTopologySpread
//!   ([`spread`]), InterPodAffinity ([`interpod`]);
//! - scores the feasible nodes ([`scores`], upstream's plugins and weights) and binds to the
//!   best (the first by name on a tie);
//! - when none fits, runs DefaultPreemption ([`preemption`]): victims get the
//!   `DisruptionTarget` condition and are deleted, and the pod is nominated to their node
//!   (`status.nominatedNodeName`, which holds the room against lower-priority pods); then it
//!   sets PodScheduled=False/Unschedulable with upstream's `0/N nodes are available: ...`
//!   message and records FailedScheduling (once per message).
//!
//! Pods it bound are "assumed" on their node until the cache shows the binding, so one pass
//! never overcommits a node.

mod filters;
mod interpod;
mod preemption;
mod scores;
mod snapshot;
mod spread;

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::{ReplicaSet, StatefulSet};
use k8s_openapi::api::core::v1::{Namespace, Node, Pod, ReplicationController, Service};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::api::{Api, DeleteParams, Patch, PostParams};
use crate::events::{Recorder, Reporter};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::ResourceExt;
use serde_json::json;
use tokio::sync::Notify;

use crate::{podutil, spawn_reflector};
use crate::Ctx;

pub(crate) use filters::{spec_fits_node, tolerates};
pub use snapshot::{parse_quantity, pod_requests, Requests};
use filters::{filter, PodCtx, Status};
use snapshot::{node_name, nominated_node, occupies_node, priority, Snapshot};

pub const SCHEDULER_NAME: &str = "default-scheduler";
const MANAGER: &str = "default-scheduler";
const RESYNC: Duration = Duration::from_secs(10);
const DEBOUNCE: Duration = Duration::from_millis(50);
/// How long a binding is assumed before the cache must show it.
const ASSUME_TTL: Duration = Duration::from_secs(30);
const NO_NODES: &str = "no nodes available to schedule pods";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("binding pod {0} to node {1}: {2}")]
    BindFailed(String, String, #[source] kube::Error),
    #[error("updating the status of pod {0}: {1}")]
    StatusUpdateFailed(String, #[source] kube::Error),
    #[error("deleting preemption victim {0}: {1}")]
    EvictFailed(String, #[source] kube::Error),
}

/// What the scheduler reads: pods and nodes (whose changes wake it), and the objects that
/// name a pod's group for default topology spreading and namespace selectors.
struct Caches {
    pods: Store<Pod>,
    nodes: Store<Node>,
    namespaces: Store<Namespace>,
    services: Store<Service>,
    replicasets: Store<ReplicaSet>,
    statefulsets: Store<StatefulSet>,
    rcs: Store<ReplicationController>,
}

impl Caches {
    async fn start(client: &kube::Client, wake: Arc<Notify>) -> Caches {
        let quiet = Arc::new(Notify::new());
        let caches = Caches {
            pods: spawn_reflector(Api::all(client.clone()), wake.clone()),
            nodes: spawn_reflector(Api::all(client.clone()), wake),
            namespaces: spawn_reflector(Api::all(client.clone()), quiet.clone()),
            services: spawn_reflector(Api::all(client.clone()), quiet.clone()),
            replicasets: spawn_reflector(Api::all(client.clone()), quiet.clone()),
            statefulsets: spawn_reflector(Api::all(client.clone()), quiet.clone()),
            rcs: spawn_reflector(Api::all(client.clone()), quiet),
        };
        let _ = tokio::join!(caches.pods.wait_until_ready(), caches.nodes.wait_until_ready());
        // The others only refine scoring and selectors: wait a little, not forever.
        let others = async {
            let _ = tokio::join!(
                caches.namespaces.wait_until_ready(),
                caches.services.wait_until_ready(),
                caches.replicasets.wait_until_ready(),
                caches.statefulsets.wait_until_ready(),
                caches.rcs.wait_until_ready()
            );
        };
        let _ = tokio::time::timeout(Duration::from_secs(5), others).await;
        caches
    }

    fn namespace_labels(&self) -> HashMap<String, BTreeMap<String, String>> {
        self.namespaces.state().iter().map(|n| (n.name_any(), n.labels().clone())).collect()
    }

    /// Upstream's `DefaultSelector`: the selectors of the pod's Services and of its
    /// ReplicaSet, StatefulSet or ReplicationController, merged; `None` when empty.
    fn default_selector(&self, pod: &Pod) -> Option<LabelSelector> {
        let ns = pod.namespace().unwrap_or_default();
        let mut sel = LabelSelector::default();
        let labels = sel.match_labels.get_or_insert_with(BTreeMap::new);
        for svc in self.services.state().iter().filter(|s| s.namespace().as_deref() == Some(&ns)) {
            let selector = svc.spec.as_ref().and_then(|s| s.selector.as_ref()).filter(|s| !s.is_empty());
            if let Some(s) = selector.filter(|s| s.iter().all(|(k, v)| pod.labels().get(k) == Some(v))) {
                labels.extend(s.clone());
            }
        }
        let of = |o: &k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference| match o.kind.as_str() {
            "ReplicaSet" => self.replicasets.get(&ObjectRef::new(&o.name).within(&ns)).and_then(|rs| rs.spec.as_ref().map(|s| s.selector.clone())),
            "StatefulSet" => self.statefulsets.get(&ObjectRef::new(&o.name).within(&ns)).and_then(|ss| ss.spec.as_ref().map(|s| s.selector.clone())),
            "ReplicationController" => {
                let rc = self.rcs.get(&ObjectRef::new(&o.name).within(&ns));
                rc.and_then(|rc| rc.spec.as_ref().and_then(|s| s.selector.clone())).map(|m| LabelSelector { match_labels: Some(m), match_expressions: None })
            }
            _ => None,
        };
        let owned = podutil::controller_of(pod.owner_references()).and_then(of);
        if let Some(o) = owned {
            labels.extend(o.match_labels.unwrap_or_default());
            sel.match_expressions = o.match_expressions;
        }
        let empty = sel.match_labels.as_ref().is_none_or(|m| m.is_empty()) && sel.match_expressions.as_ref().is_none_or(|e| e.is_empty());
        (!empty).then_some(sel)
    }
}

pub async fn run(ctx: Arc<Ctx>) -> Result<(), crate::Error> {
    let notify = Arc::new(Notify::new());
    let caches = Caches::start(&ctx.client, notify.clone()).await;
    // Events come from `default-scheduler`, as upstream's (`kubectl describe`: From).
    let reporter = Reporter { controller: SCHEDULER_NAME.into(), instance: Some(format!("{SCHEDULER_NAME}-{}", ctx.config.identity)) };
    let recorder = Recorder::new(ctx.client.clone(), reporter);
    let mut sched = Scheduler { ctx, recorder, assumed: HashMap::new(), nominated: HashMap::new() };
    loop {
        sched.pass(&caches).await;
        tokio::select! {
            _ = notify.notified() => tokio::time::sleep(DEBOUNCE).await,
            _ = tokio::time::sleep(RESYNC) => {}
        }
    }
}

struct Scheduler {
    ctx: Arc<Ctx>,
    recorder: Recorder,
    /// pod uid → (the pod as bound, when): bindings the cache may not show yet.
    assumed: HashMap<String, (Arc<Pod>, Instant)>,
    /// pod uid → node: nominations written that the cache may not show yet.
    nominated: HashMap<String, (String, Instant)>,
}

fn uid(pod: &Pod) -> String {
    pod.uid().unwrap_or_default()
}

fn is_pending(pod: &Pod) -> bool {
    let sched = pod.spec.as_ref().and_then(|s| s.scheduler_name.as_deref()).unwrap_or(SCHEDULER_NAME);
    node_name(pod).is_empty() && sched == SCHEDULER_NAME && podutil::is_active(pod)
}

/// Upstream's `FitError`: `0/N nodes are available: <histogram of reasons>.`
fn fit_error(nodes: usize, reasons: &[String]) -> String {
    let mut histogram: BTreeMap<&str, usize> = BTreeMap::new();
    for r in reasons {
        *histogram.entry(r.as_str()).or_default() += 1;
    }
    let mut parts: Vec<String> = histogram.iter().map(|(r, n)| format!("{n} {r}")).collect();
    parts.sort();
    let detail = if parts.is_empty() { String::new() } else { format!(" {}.", parts.join(", ")) };
    format!("0/{nodes} nodes are available:{detail}")
}

/// Filters and scores the nodes for `pod`: the best node, else every node's status.
fn pick(pod: &Pod, snap: &Snapshot, default_selector: Option<LabelSelector>) -> Result<String, Vec<Status>> {
    let ctx = PodCtx::new(pod, snap);
    let results: Vec<Result<(), Status>> = snap.nodes.iter().map(|ni| filter(&ctx, ni)).collect();
    let feasible: Vec<usize> = results.iter().enumerate().filter(|(_, r)| r.is_ok()).map(|(i, _)| i).collect();
    if feasible.is_empty() {
        return Err(results.into_iter().filter_map(Result::err).collect());
    }
    let totals = scores::total(&ctx, snap, &feasible, default_selector);
    let best = totals.iter().enumerate().max_by_key(|(n, s)| (**s, std::cmp::Reverse(*n))).map_or(0, |(n, _)| n);
    Ok(snap.nodes[feasible[best]].name.clone())
}

/// The snapshot as `pod` sees it: pods nominated to a node (preemptors waiting for their
/// victims to go) with at least its priority hold their room there.
fn with_nominated<'a>(snap: &'a Snapshot, pod: &Pod, nominated: &[(Arc<Pod>, String)]) -> Cow<'a, Snapshot> {
    let holding: Vec<_> = nominated.iter().filter(|(p, _)| uid(p) != uid(pod) && priority(p) >= priority(pod)).collect();
    if holding.is_empty() {
        return Cow::Borrowed(snap);
    }
    let mut view = snap.clone();
    for (p, node) in holding {
        if let Some(i) = view.index(node) {
            view.nodes[i].add_pod(p.clone());
        }
    }
    Cow::Owned(view)
}

impl Scheduler {
    /// Forgets assumptions and nominations the cache now shows (or that expired).
    fn forget_seen(&mut self, pods: &[Arc<Pod>]) {
        let by_uid: HashMap<String, &Arc<Pod>> = pods.iter().map(|p| (uid(p), p)).collect();
        self.assumed.retain(|u, (_, at)| by_uid.get(u).is_some_and(|p| node_name(p).is_empty()) && at.elapsed() < ASSUME_TTL);
        self.nominated.retain(|u, (node, at)| by_uid.get(u).is_some_and(|p| is_pending(p) && nominated_node(p) != node) && at.elapsed() < ASSUME_TTL);
    }

    async fn pass(&mut self, caches: &Caches) {
        let pods = caches.pods.state();
        self.forget_seen(&pods);
        let placed = pods.iter().filter(|p| occupies_node(p)).cloned().chain(self.assumed.values().map(|(p, _)| p.clone()));
        let mut snap = Snapshot::new(&caches.nodes.state(), placed.collect::<Vec<_>>(), caches.namespace_labels());

        let mut pending: Vec<&Arc<Pod>> = pods.iter().filter(|p| is_pending(p) && !self.assumed.contains_key(&uid(p))).collect();
        pending.sort_by_key(|p| (std::cmp::Reverse(priority(p)), p.metadata.creation_timestamp.as_ref().map(|t| t.0.as_second()), p.name_any()));
        let mut nominated = self.nominations(&pods);
        for pod in pending {
            let view = with_nominated(&snap, pod, &nominated);
            match pick(pod, &view, caches.default_selector(pod)) {
                Ok(node) => {
                    if let Err(e) = self.bind(pod, &node).await {
                        tracing::debug!(error = %e, "binding failed; retried on the next pass");
                        continue;
                    }
                    let mut bound = Pod::clone(pod);
                    bound.spec.get_or_insert_with(Default::default).node_name = Some(node.clone());
                    let bound = Arc::new(bound);
                    if let Some(i) = snap.index(&node) {
                        snap.nodes[i].add_pod(bound.clone());
                    }
                    self.assumed.insert(uid(pod), (bound, Instant::now()));
                }
                Err(statuses) => {
                    match self.failed(pod, &view, statuses, &nominated).await {
                        // Lower-priority pods nominated there lost their nomination.
                        Ok(Some(node)) => {
                            nominated.retain(|(p, n)| uid(p) != uid(pod) && !(*n == node && priority(p) < priority(pod)));
                            nominated.push((pod.clone(), node));
                        }
                        Ok(None) => {}
                        Err(e) => tracing::debug!(error = %e, "handling an unschedulable pod failed"),
                    }
                }
            }
        }
    }

    /// Pending pods nominated to a node, with the nominations this scheduler just wrote.
    fn nominations(&self, pods: &[Arc<Pod>]) -> Vec<(Arc<Pod>, String)> {
        let node_of = |p: &Pod| self.nominated.get(&uid(p)).map(|(n, _)| n.clone()).unwrap_or_else(|| nominated_node(p).to_string());
        pods.iter().filter(|p| is_pending(p)).map(|p| (p.clone(), node_of(p))).filter(|(_, n)| !n.is_empty()).collect()
    }

    /// No node fits: preemption (upstream's PostFilter), then the Unschedulable report; the
    /// node the pod is nominated to when it preempted.
    async fn failed(&mut self, pod: &Pod, snap: &Snapshot, statuses: Vec<Status>, nominated: &[(Arc<Pod>, String)]) -> Result<Option<String>, Error> {
        if snap.nodes.is_empty() {
            return self.unschedulable(pod, NO_NODES, None).await.map(|()| None);
        }
        let reasons: Vec<String> = statuses.iter().flat_map(|s| s.reasons.iter().cloned()).collect();
        let message = fit_error(snap.nodes.len(), &reasons);
        let candidate = preemption::eligible(pod, snap).and_then(|()| preemption::find(pod, snap, &statuses));
        match candidate {
            Ok(c) => {
                self.preempt(pod, &c).await?;
                let lower = nominated.iter().filter(|(p, n)| *n == c.node && priority(p) < priority(pod) && uid(p) != uid(pod));
                for (p, _) in lower {
                    self.nominated.remove(&uid(p));
                    self.clear_nomination(p).await?;
                }
                self.nominated.insert(uid(pod), (c.node.clone(), Instant::now()));
                self.unschedulable(pod, &message, Some(&c.node)).await.map(|()| Some(c.node))
            }
            Err(why) => {
                // A pod whose preemption cannot help loses its nomination (unless it waits
                // for its victims to go).
                let waiting = why.starts_with("not eligible due to a terminating pod");
                let nomination = if waiting { None } else { Some("") };
                self.unschedulable(pod, &format!("{message} preemption: {why}."), nomination).await.map(|()| None)
            }
        }
    }

    async fn bind(&self, pod: &Pod, node: &str) -> Result<(), Error> {
        let ns = pod.namespace().unwrap_or_default();
        let api: Api<Pod> = Api::namespaced(self.ctx.client.clone(), &ns);
        let binding = json!({
            "apiVersion": "v1", "kind": "Binding",
            "metadata": {"name": pod.name_any(), "namespace": ns, "uid": pod.uid()},
            "target": {"apiVersion": "v1", "kind": "Node", "name": node},
        });
        let pp = PostParams { field_manager: Some(MANAGER.into()), ..Default::default() };
        api.create_subresource::<_, serde_json::Value>("binding", &pod.name_any(), &pp, &binding)
            .await
            .map_err(|e| Error::BindFailed(pod.name_any(), node.into(), e))?;
        let note = format!("Successfully assigned {ns}/{} to {node}", pod.name_any());
        podutil::event_from(&self.recorder, pod, false, "Scheduled", "Binding", note).await;
        Ok(())
    }

    /// Evicts the candidate's victims: the DisruptionTarget condition through `pods/status`,
    /// then a delete, and a Preempted event.
    async fn preempt(&self, pod: &Pod, c: &preemption::Candidate) -> Result<(), Error> {
        for victim in &c.victims {
            let api: Api<Pod> = Api::namespaced(self.ctx.client.clone(), &victim.namespace().unwrap_or_default());
            let scheduler = pod.spec.as_ref().and_then(|s| s.scheduler_name.as_deref()).unwrap_or(SCHEDULER_NAME);
            let cond = json!({"type": "DisruptionTarget", "status": "True", "reason": preemption::REASON,
                "message": format!("{scheduler}: preempting to accommodate a higher priority pod"), "lastTransitionTime": podutil::now_rfc3339()});
            let patch = json!({"status": {"conditions": conditions_with(victim, cond)}});
            api.patch_status(&victim.name_any(), &crate::patch_params(MANAGER), &Patch::Merge(patch))
                .await
                .map_err(|e| Error::StatusUpdateFailed(victim.name_any(), e))?;
            match api.delete(&victim.name_any(), &DeleteParams::default()).await {
                Ok(_) => {}
                Err(kube::Error::Api(e)) if e.code == 404 => {}
                Err(e) => return Err(Error::EvictFailed(victim.name_any(), e)),
            }
            let note = format!("Preempted by pod {} on node {}", uid(pod), c.node);
            podutil::event_from(&self.recorder, victim.as_ref(), false, "Preempted", "Preempting", note).await;
        }
        Ok(())
    }

    /// Upstream's `ClearNominatedNodeName`.
    async fn clear_nomination(&self, pod: &Pod) -> Result<(), Error> {
        let api: Api<Pod> = Api::namespaced(self.ctx.client.clone(), &pod.namespace().unwrap_or_default());
        let patch = json!({"status": {"nominatedNodeName": null}});
        api.patch_status(&pod.name_any(), &crate::patch_params(MANAGER), &Patch::Merge(patch)).await.map_err(|e| Error::StatusUpdateFailed(pod.name_any(), e))?;
        Ok(())
    }

    /// Sets PodScheduled=False/Unschedulable with `message` (and `nominatedNodeName` when
    /// given; empty clears it), once per distinct message and nomination.
    async fn unschedulable(&self, pod: &Pod, message: &str, nominate: Option<&str>) -> Result<(), Error> {
        let current = pod.status.as_ref().and_then(|s| s.conditions.as_ref()).and_then(|c| c.iter().find(|c| c.type_ == "PodScheduled"));
        let same_message = current.is_some_and(|c| c.status == "False" && c.message.as_deref() == Some(message));
        if same_message && nominate.is_none_or(|n| n == nominated_node(pod)) {
            return Ok(());
        }
        let api: Api<Pod> = Api::namespaced(self.ctx.client.clone(), &pod.namespace().unwrap_or_default());
        let cond = json!({"type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": message,
            "lastProbeTime": null, "lastTransitionTime": podutil::now_rfc3339()});
        let mut status = json!({"conditions": conditions_with(pod, cond)});
        if let Some(node) = nominate {
            status["nominatedNodeName"] = if node.is_empty() { json!(null) } else { json!(node) };
        }
        let patch = json!({"metadata": {"resourceVersion": pod.resource_version()}, "status": status});
        api.patch_status(&pod.name_any(), &crate::patch_params(MANAGER), &Patch::Merge(patch))
            .await
            .map_err(|e| Error::StatusUpdateFailed(pod.name_any(), e))?;
        if !same_message {
            podutil::event_from(&self.recorder, pod, true, "FailedScheduling", "Scheduling", message.to_string()).await;
        }
        Ok(())
    }
}

/// The pod's conditions with `cond` replacing the one of its type.
fn conditions_with(pod: &Pod, cond: serde_json::Value) -> Vec<serde_json::Value> {
    let existing = pod.status.as_ref().and_then(|s| s.conditions.as_ref()).into_iter().flatten();
    let mut conds: Vec<serde_json::Value> = existing.filter(|c| json!(c.type_) != cond["type"]).map(|c| serde_json::to_value(c).unwrap_or_default()).collect();
    conds.push(cond);
    conds
}

#[cfg(test)]
mod tests;
