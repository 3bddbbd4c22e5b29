//! The garbage collector (upstream's `garbagecollector`): acts on the ownerReferences graph
//! of every object.
//!
//! Approach: discovery finds every resource that can be listed, watched and deleted (events
//! excepted, as upstream's `ignoredResources`), rediscovered every 30 s so custom resources
//! join; each gets a metadata-only watcher (`PartialObjectMetadata`) feeding a reflector
//! store. Any event wakes one loop that rebuilds the graph from the stores (uid → object,
//! owner uid → dependents) and acts on it; it also runs every 10 s as a resync. Before an
//! owner is taken as gone its absence is confirmed by a live GET (uid compared), as
//! upstream's `isDangling`, so a lagging cache never deletes a dependent.
//!
//! - A dependent whose owners are all gone (or waiting for their dependents' deletion) is
//!   deleted (Background, or the policy its own finalizers ask for); one that still has a
//!   live owner only loses its references to the gone ones.
//! - An owner being deleted with the `foregroundDeletion` finalizer keeps it until no
//!   dependent with `blockOwnerDeletion: true` remains; its dependents are deleted as above.
//! - An owner being deleted with the `orphan` finalizer has its references removed from
//!   every dependent, then loses the finalizer.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{DeleteParams, DynamicObject, Patch, PartialObjectMeta, Preconditions, PropagationPolicy};
use kube::discovery::verbs;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{watcher, WatchStreamExt};
use serde_json::{json, Value};
use tokio::sync::Notify;

use crate::discovery::{self, ServedResource};
use crate::Ctx;

pub const FOREGROUND_FINALIZER: &str = "foregroundDeletion";
pub const ORPHAN_FINALIZER: &str = "orphan";
const MANAGER: &str = "generic-garbage-collector";
const REDISCOVERY: Duration = Duration::from_secs(30);
const RESYNC: Duration = Duration::from_secs(10);
const RETRY: Duration = Duration::from_secs(1);
/// Events arriving together are handled in one pass.
const DEBOUNCE: Duration = Duration::from_millis(150);

type Meta = PartialObjectMeta<DynamicObject>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("discovering resources for the garbage collector: {0}")]
    DiscoveryFailed(#[source] kube::Error),
}

/// One watched resource: its metadata cache and whether the first list completed.
struct Watched {
    resource: ServedResource,
    store: Store<Meta>,
    ready: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Watched {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// One object of the graph.
#[derive(Clone)]
struct Node {
    resource: ServedResource,
    meta: Arc<Meta>,
}

impl Node {
    fn uid(&self) -> &str {
        self.meta.metadata.uid.as_deref().unwrap_or_default()
    }
    fn name(&self) -> &str {
        self.meta.metadata.name.as_deref().unwrap_or_default()
    }
    fn namespace(&self) -> Option<&str> {
        self.meta.metadata.namespace.as_deref()
    }
    fn owners(&self) -> &[OwnerReference] {
        self.meta.metadata.owner_references.as_deref().unwrap_or_default()
    }
    fn deleting(&self) -> bool {
        self.meta.metadata.deletion_timestamp.is_some()
    }
    fn has_finalizer(&self, f: &str) -> bool {
        self.meta.metadata.finalizers.iter().flatten().any(|x| x == f)
    }
    fn describe(&self) -> String {
        match self.namespace() {
            Some(ns) => format!("{} {ns}/{}", self.resource.ar.kind, self.name()),
            None => format!("{} {}", self.resource.ar.kind, self.name()),
        }
    }
}

/// What an ownerReference points at, as far as the collector can tell.
#[derive(Debug, PartialEq, Eq)]
enum OwnerState {
    /// Exists and is not waiting for its dependents.
    Solid,
    /// Gone (or a different object of that name).
    Dangling,
    /// Being deleted in the foreground: waits for its dependents.
    Waiting,
    /// Of a kind the server does not serve: cannot be looked up.
    Unresolvable,
}

pub async fn run(ctx: Arc<Ctx>) -> Result<(), crate::Error> {
    let mut gc = Collector { ctx, watched: HashMap::new(), kinds: HashMap::new(), notify: Arc::new(Notify::new()) };
    let mut next_discovery = tokio::time::Instant::now();
    let mut wait = Duration::ZERO;
    loop {
        let now = tokio::time::Instant::now();
        if now >= next_discovery {
            match gc.rediscover().await {
                Ok(()) => next_discovery = now + REDISCOVERY,
                Err(e) => {
                    tracing::warn!(error = %e, "garbage collector discovery failed");
                    next_discovery = now + RETRY * 5;
                }
            }
        }
        let until_discovery = next_discovery.saturating_duration_since(tokio::time::Instant::now());
        tokio::select! {
            _ = gc.notify.notified() => tokio::time::sleep(DEBOUNCE).await,
            _ = tokio::time::sleep(wait.min(until_discovery)) => {}
        }
        let unfinished = gc.sync().await;
        wait = if unfinished { RETRY } else { RESYNC };
    }
}

struct Collector {
    ctx: Arc<Ctx>,
    /// Watched resources by `resource.group`.
    watched: HashMap<String, Watched>,
    /// (group, kind) → resource, for resolving ownerReferences.
    kinds: HashMap<(String, String), ServedResource>,
    notify: Arc<Notify>,
}

impl Collector {
    /// Starts watchers for newly served resources and stops those no longer served.
    async fn rediscover(&mut self) -> Result<(), Error> {
        let (preferred, all) = discovery::all_versions(&self.ctx.client).await.map_err(Error::DiscoveryFailed)?;
        self.kinds.clear();
        for r in all.iter().chain(preferred.iter()) {
            // Preferred versions come last and win.
            self.kinds.insert((r.ar.group.clone(), r.ar.kind.clone()), r.clone());
        }
        let wanted: BTreeMap<String, ServedResource> = preferred
            .into_iter()
            .filter(|r| r.supports(verbs::LIST) && r.supports(verbs::WATCH) && r.supports(verbs::DELETE))
            .filter(|r| r.ar.plural != "events")
            .map(|r| (r.group_resource(), r))
            .collect();
        self.watched.retain(|k, w| wanted.get(k).is_some_and(|r| r.ar.version == w.resource.ar.version));
        for (key, r) in wanted {
            if self.watched.contains_key(&key) {
                continue;
            }
            tracing::debug!(resource = %key, "garbage collector watching");
            let w = self.watch(r);
            self.watched.insert(key, w);
        }
        Ok(())
    }

    fn watch(&self, resource: ServedResource) -> Watched {
        let api: kube::Api<Meta> = kube::Api::all_with(self.ctx.client.clone(), &resource.ar);
        let writer = reflector::store::Writer::new(resource.ar.clone());
        let store = writer.as_reader();
        let ready = Arc::new(AtomicBool::new(false));
        let (notify, is_ready, key) = (self.notify.clone(), ready.clone(), resource.group_resource());
        let task = tokio::spawn(async move {
            let stream = reflector::reflector(writer, watcher(api, watcher::Config::default()).default_backoff());
            futures::pin_mut!(stream);
            while let Some(ev) = stream.next().await {
                match ev {
                    Ok(watcher::Event::InitDone) => {
                        is_ready.store(true, Ordering::Release);
                        notify.notify_one();
                    }
                    Ok(watcher::Event::Init | watcher::Event::InitApply(_)) => {}
                    Ok(_) => notify.notify_one(),
                    Err(e) => tracing::debug!(resource = %key, error = %e, "garbage collector watch failed"),
                }
            }
        });
        Watched { resource, store, ready, task }
    }

    /// One pass over the graph. Returns whether something is left to retry soon.
    async fn sync(&self) -> bool {
        let all_ready = self.watched.values().all(|w| w.ready.load(Ordering::Acquire));
        let nodes: Vec<Node> = self
            .watched
            .values()
            .flat_map(|w| w.store.state().into_iter().map(|meta| Node { resource: w.resource.clone(), meta }))
            .collect();
        let by_uid: HashMap<&str, &Node> = nodes.iter().map(|n| (n.uid(), n)).collect();
        let mut dependents: HashMap<&str, Vec<&Node>> = HashMap::new();
        for n in &nodes {
            for o in n.owners() {
                dependents.entry(o.uid.as_str()).or_default().push(n);
            }
        }
        let mut unfinished = false;

        // Owners deleted with propagationPolicy=Orphan.
        for owner in nodes.iter().filter(|n| n.deleting() && n.has_finalizer(ORPHAN_FINALIZER)) {
            let mut ok = all_ready;
            for dep in dependents.get(owner.uid()).into_iter().flatten() {
                ok &= self.remove_owner_refs(dep, &[owner.uid()]).await;
            }
            if ok {
                tracing::info!(owner = %owner.describe(), "dependents orphaned");
                ok = self.remove_finalizer(owner, ORPHAN_FINALIZER).await;
            }
            unfinished |= !ok;
        }

        // Owners deleted with propagationPolicy=Foreground: released once no dependent blocks.
        for owner in nodes.iter().filter(|n| n.deleting() && n.has_finalizer(FOREGROUND_FINALIZER)) {
            let blocking = dependents
                .get(owner.uid())
                .into_iter()
                .flatten()
                .filter(|d| d.owners().iter().any(|o| o.uid == owner.uid() && o.block_owner_deletion == Some(true)))
                .count();
            if blocking == 0 && all_ready {
                tracing::info!(owner = %owner.describe(), "foreground deletion: no blocking dependents left");
                unfinished |= !self.remove_finalizer(owner, FOREGROUND_FINALIZER).await;
            }
        }

        // Dependents: deleted when every owner is gone or waiting for them.
        for dep in nodes.iter().filter(|n| !n.owners().is_empty() && !n.deleting()) {
            let mut solid = 0;
            let mut gone: Vec<&str> = Vec::new();
            let mut waiting = false;
            for o in dep.owners() {
                let state = match by_uid.get(o.uid.as_str()) {
                    Some(owner) => Some(state_of(owner.deleting(), owner.has_finalizer(FOREGROUND_FINALIZER))),
                    None => self.verify_owner(dep, o).await,
                };
                match state {
                    Some(OwnerState::Solid) => solid += 1,
                    Some(OwnerState::Dangling) => gone.push(&o.uid),
                    Some(OwnerState::Waiting) => {
                        waiting = true;
                        gone.push(&o.uid)
                    }
                    // The owner's kind is not served: keep the dependent, as upstream.
                    Some(OwnerState::Unresolvable) => solid += 1,
                    // The check failed: keep it for now, look again soon.
                    None => {
                        solid += 1;
                        unfinished = true;
                    }
                }
            }
            if gone.is_empty() {
                continue;
            }
            if solid > 0 {
                unfinished |= !self.remove_owner_refs(dep, &gone).await;
                continue;
            }
            let own_dependents = dependents.get(dep.uid()).map(Vec::as_slice).unwrap_or_default();
            let policy = if waiting && !own_dependents.is_empty() {
                // A dependent of its own waits for its dependents too: a cycle may be
                // closing. Its references stop blocking first, as upstream breaks cycles.
                if own_dependents.iter().any(|d| d.deleting() && d.has_finalizer(FOREGROUND_FINALIZER)) && !self.unblock_owner_refs(dep).await {
                    unfinished = true;
                    continue;
                }
                PropagationPolicy::Foreground
            } else if dep.has_finalizer(ORPHAN_FINALIZER) {
                PropagationPolicy::Orphan
            } else if dep.has_finalizer(FOREGROUND_FINALIZER) {
                PropagationPolicy::Foreground
            } else {
                PropagationPolicy::Background
            };
            unfinished |= !self.delete(dep, policy).await;
        }
        unfinished
    }

    /// Looks an owner missing from the caches up on the server: is it really gone? `None`
    /// when the lookup failed.
    async fn verify_owner(&self, dep: &Node, o: &OwnerReference) -> Option<OwnerState> {
        let group = o.api_version.rsplit_once('/').map(|(g, _)| g).unwrap_or_default();
        let Some(r) = self.kinds.get(&(group.to_string(), o.kind.clone())) else {
            tracing::debug!(dependent = %dep.describe(), owner_kind = %o.kind, "owner kind not served: keeping dependent");
            return Some(OwnerState::Unresolvable);
        };
        if r.namespaced && dep.namespace().is_none() {
            // A cluster-scoped object cannot be owned by a namespaced one.
            return Some(OwnerState::Dangling);
        }
        match r.api(&self.ctx.client, dep.namespace()).get_metadata_opt(&o.name).await {
            Ok(None) => Some(OwnerState::Dangling),
            Ok(Some(owner)) if owner.metadata.uid.as_deref() != Some(o.uid.as_str()) => Some(OwnerState::Dangling),
            Ok(Some(owner)) => {
                let fg = owner.metadata.finalizers.iter().flatten().any(|f| f == FOREGROUND_FINALIZER);
                Some(state_of(owner.metadata.deletion_timestamp.is_some(), fg))
            }
            Err(e) => {
                tracing::debug!(dependent = %dep.describe(), error = %e, "looking up an owner failed");
                None
            }
        }
    }

    /// Deletes a dependent whose owners are gone. Returns false when it should be retried.
    async fn delete(&self, dep: &Node, policy: PropagationPolicy) -> bool {
        tracing::info!(object = %dep.describe(), ?policy, "garbage collecting: all owners are gone");
        let dp = DeleteParams {
            propagation_policy: Some(policy),
            preconditions: Some(Preconditions { uid: Some(dep.uid().to_string()), resource_version: None }),
            ..Default::default()
        };
        match dep.resource.api(&self.ctx.client, dep.namespace()).delete(dep.name(), &dp).await {
            Ok(_) => true,
            Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => true,
            Err(e) => {
                tracing::warn!(object = %dep.describe(), error = %e, "garbage collection failed");
                false
            }
        }
    }

    /// Removes the ownerReferences to `uids` from a dependent (merge patch guarded by its
    /// resourceVersion). Returns false when it should be retried.
    async fn remove_owner_refs(&self, dep: &Node, uids: &[&str]) -> bool {
        let kept: Vec<&OwnerReference> = dep.owners().iter().filter(|o| !uids.contains(&o.uid.as_str())).collect();
        if kept.len() == dep.owners().len() {
            return true;
        }
        let refs = if kept.is_empty() { Value::Null } else { json!(kept) };
        tracing::info!(object = %dep.describe(), removed = ?uids, "removing ownerReferences");
        self.patch_meta(dep, json!({"ownerReferences": refs})).await
    }

    /// Sets `blockOwnerDeletion: false` on every ownerReference of an object.
    async fn unblock_owner_refs(&self, obj: &Node) -> bool {
        if obj.owners().iter().all(|o| o.block_owner_deletion != Some(true)) {
            return true;
        }
        let refs: Vec<OwnerReference> =
            obj.owners().iter().cloned().map(|o| OwnerReference { block_owner_deletion: Some(false), ..o }).collect();
        tracing::info!(object = %obj.describe(), "unblocking ownerReferences to break a foreground deletion cycle");
        self.patch_meta(obj, json!({"ownerReferences": refs})).await
    }

    /// Removes one finalizer from an object being deleted.
    async fn remove_finalizer(&self, obj: &Node, finalizer: &str) -> bool {
        let kept: Vec<&String> = obj.meta.metadata.finalizers.iter().flatten().filter(|f| *f != finalizer).collect();
        let fins = if kept.is_empty() { Value::Null } else { json!(kept) };
        self.patch_meta(obj, json!({"finalizers": fins})).await
    }

    async fn patch_meta(&self, obj: &Node, mut metadata: Value) -> bool {
        metadata["resourceVersion"] = json!(obj.meta.metadata.resource_version);
        metadata["uid"] = json!(obj.uid());
        let patch = json!({"metadata": metadata});
        let api = obj.resource.api(&self.ctx.client, obj.namespace());
        match api.patch(obj.name(), &crate::patch_params(MANAGER), &Patch::Merge(&patch)).await {
            Ok(_) => true,
            // Gone: nothing to do.
            Err(kube::Error::Api(s)) if s.code == 404 => true,
            // Changed since it was cached: the watch brings the new version.
            Err(kube::Error::Api(s)) if s.code == 409 => false,
            Err(e) => {
                tracing::warn!(object = %obj.describe(), error = %e, "garbage collector update failed");
                false
            }
        }
    }
}

fn state_of(deleting: bool, foreground: bool) -> OwnerState {
    if deleting && foreground {
        OwnerState::Waiting
    } else {
        OwnerState::Solid
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owners_waiting_only_in_the_foreground() {
        assert_eq!(state_of(true, true), OwnerState::Waiting);
        assert_eq!(state_of(true, false), OwnerState::Solid);
        assert_eq!(state_of(false, false), OwnerState::Solid);
    }
}
