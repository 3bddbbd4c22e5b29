//! The namespace controller (upstream's `namespace` controller, `NamespacedResourcesDeleter`):
//! when a Namespace is being deleted and its `spec.finalizers` still holds `kubernetes`, it
//! deletes every namespaced object in it (every discovered resource that can be listed and
//! deleted, custom resources included), reports progress in the `NamespaceDeletion*` and
//! `Namespace*Remaining` conditions, and once nothing is left removes `kubernetes` through
//! `PUT /api/v1/namespaces/NAME/finalize`, after which the API server removes the namespace.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Namespace, NamespaceCondition};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use kube::discovery::verbs;
use kube::runtime::controller::Action;
use kube::runtime::{watcher, Controller};
use serde_json::json;

use crate::discovery::{self, ServedResource};
use crate::Ctx;

/// The finalizer this controller owns.
pub const FINALIZER: &str = "kubernetes";
const MANAGER: &str = "namespace-controller";
/// How soon to look again while content remains (objects with finalizers may linger).
const RECHECK: Duration = Duration::from_secs(2);

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("updating the conditions of namespace {0}: {1}")]
    StatusUpdateFailed(String, #[source] kube::Error),
    #[error("finalizing namespace {0}: {1}")]
    FinalizeFailed(String, #[source] kube::Error),
}

pub async fn run(ctx: Arc<Ctx>) -> Result<(), crate::Error> {
    let namespaces: Api<Namespace> = Api::all(ctx.client.clone());
    Controller::new(namespaces, watcher::Config::default())
        .run(reconcile, error_policy, ctx)
        .for_each(|res| async move {
            if let Err(e) = res {
                tracing::debug!(error = %e, "namespace reconcile failed");
            }
        })
        .await;
    Ok(())
}

fn error_policy(ns: Arc<Namespace>, err: &Error, _ctx: Arc<Ctx>) -> Action {
    tracing::warn!(namespace = ns.metadata.name.as_deref().unwrap_or_default(), error = %err, "namespace deletion will be retried");
    Action::requeue(RECHECK)
}

async fn reconcile(ns: Arc<Namespace>, ctx: Arc<Ctx>) -> Result<Action, Error> {
    let name = ns.metadata.name.clone().unwrap_or_default();
    let holds_finalizer = ns
        .spec
        .as_ref()
        .and_then(|s| s.finalizers.as_ref())
        .is_some_and(|f| f.iter().any(|f| f == FINALIZER));
    if ns.metadata.deletion_timestamp.is_none() || !holds_finalizer {
        return Ok(Action::await_change());
    }
    let progress = delete_content(&ctx.client, &name).await;
    update_conditions(&ctx.client, &ns, &progress).await?;
    if !progress.done() {
        tracing::info!(namespace = %name, remaining = ?progress.remaining, "namespace content remains");
        return Ok(Action::requeue(RECHECK));
    }
    finalize(&ctx.client, &name).await?;
    tracing::info!(namespace = %name, "namespace emptied and finalized");
    Ok(Action::await_change())
}

/// What one pass of deletion achieved.
#[derive(Debug, Default)]
pub struct Progress {
    /// Discovery failed (nothing else is known then).
    pub discovery_error: Option<String>,
    /// Resources whose deletion failed, with why.
    pub failures: Vec<String>,
    /// `resource.group` → objects still present.
    pub remaining: BTreeMap<String, usize>,
    /// finalizer → objects still carrying it.
    pub finalizers: BTreeMap<String, usize>,
}

impl Progress {
    pub fn done(&self) -> bool {
        self.discovery_error.is_none() && self.failures.is_empty() && self.remaining.is_empty()
    }
}

/// Deletes everything in namespace `ns` once and counts what is left.
async fn delete_content(client: &kube::Client, ns: &str) -> Progress {
    let mut progress = Progress::default();
    let resources = match discovery::preferred(client).await {
        Ok(r) => r,
        Err(e) => {
            progress.discovery_error = Some(e.to_string());
            return progress;
        }
    };
    for r in resources.iter().filter(|r| r.namespaced && discovery::deletable(r)) {
        if let Err(e) = delete_all_of(client, r, ns).await {
            progress.failures.push(format!("{}: {e}", r.group_resource()));
            continue;
        }
        match r.api(client, Some(ns)).list_metadata(&ListParams::default()).await {
            Ok(left) if !left.items.is_empty() => {
                progress.remaining.insert(r.group_resource(), left.items.len());
                for obj in &left.items {
                    for f in obj.metadata.finalizers.iter().flatten() {
                        *progress.finalizers.entry(f.clone()).or_default() += 1;
                    }
                }
            }
            Ok(_) => {}
            Err(e) => progress.failures.push(format!("{}: {e}", r.group_resource())),
        }
    }
    progress
}

/// Deletes every object of one resource in `ns`: `deletecollection` when served, else one
/// by one. Dependents are left to the garbage collector (Background), as upstream.
async fn delete_all_of(client: &kube::Client, r: &ServedResource, ns: &str) -> Result<(), kube::Error> {
    let api = r.api(client, Some(ns));
    let dp = DeleteParams::background();
    if r.supports(verbs::DELETE_COLLECTION) {
        match api.delete_collection(&dp, &ListParams::default()).await {
            Ok(_) => return Ok(()),
            // Not actually served: fall back to deleting one by one, as upstream.
            Err(kube::Error::Api(s)) if s.code == 404 || s.code == 405 => {}
            Err(e) => return Err(e),
        }
    }
    if !r.supports(verbs::DELETE) {
        return Ok(());
    }
    for obj in api.list_metadata(&ListParams::default()).await?.items {
        if obj.metadata.deletion_timestamp.is_some() {
            continue;
        }
        let name = obj.metadata.name.unwrap_or_default();
        match api.delete(&name, &dp).await {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// The five conditions upstream's namespace controller maintains, from one pass's progress.
pub fn conditions(p: &Progress) -> Vec<(&'static str, bool, String, String)> {
    let discovery = match &p.discovery_error {
        Some(e) => (true, "DiscoveryFailed".into(), format!("Discovery failed for some groups, 1 failing: {e}")),
        None => (false, "ResourcesDiscovered".into(), "All resources successfully discovered".into()),
    };
    let content = if p.failures.is_empty() {
        (false, "ContentDeleted".into(), "All content successfully deleted, may be waiting on finalization".into())
    } else {
        (
            true,
            "ContentDeletionFailed".into(),
            format!("Failed to delete all resource types, {} remaining: {}", p.failures.len(), p.failures.join(", ")),
        )
    };
    let remaining = if p.remaining.is_empty() {
        (false, "ContentRemoved".into(), "All content successfully removed".into())
    } else {
        let list: Vec<String> = p.remaining.iter().map(|(r, n)| format!("{r} has {n} resource instances")).collect();
        (true, "SomeResourcesRemain".into(), format!("Some resources are remaining: {}", list.join(", ")))
    };
    let finalizers = if p.finalizers.is_empty() {
        (false, "ContentHasNoFinalizers".into(), "All content-preserving finalizers finished".into())
    } else {
        let list: Vec<String> = p.finalizers.iter().map(|(f, n)| format!("{f} in {n} resource instances")).collect();
        (
            true,
            "SomeFinalizersRemain".into(),
            format!("Some content in the namespace has finalizers remaining: {}", list.join(", ")),
        )
    };
    let parsing = (false, "ParsedGroupVersions".into(), "All legacy kube types successfully parsed".into());
    [
        ("NamespaceDeletionDiscoveryFailure", discovery),
        ("NamespaceDeletionGroupVersionParsingFailure", parsing),
        ("NamespaceDeletionContentFailure", content),
        ("NamespaceContentRemaining", remaining),
        ("NamespaceFinalizersRemaining", finalizers),
    ]
    .into_iter()
    .map(|(t, (status, reason, message))| (t, status, reason, message))
    .collect()
}

/// Writes the conditions to `/status` when they changed; a condition keeps its
/// lastTransitionTime while its status stays.
async fn update_conditions(client: &kube::Client, ns: &Namespace, p: &Progress) -> Result<(), Error> {
    let name = ns.metadata.name.clone().unwrap_or_default();
    let old: Vec<NamespaceCondition> = ns.status.as_ref().and_then(|s| s.conditions.clone()).unwrap_or_default();
    let now = Time(k8s_openapi::jiff::Timestamp::now());
    let mut new = Vec::new();
    let mut changed = false;
    for (kind, status, reason, message) in conditions(p) {
        let status = if status { "True" } else { "False" };
        let prev = old.iter().find(|c| c.type_ == kind);
        let same_status = prev.is_some_and(|c| c.status == status);
        changed |= !same_status || prev.is_some_and(|c| c.reason.as_deref() != Some(&reason) || c.message.as_deref() != Some(&message));
        new.push(NamespaceCondition {
            type_: kind.into(),
            status: status.into(),
            reason: Some(reason),
            message: Some(message),
            last_transition_time: if same_status { prev.and_then(|c| c.last_transition_time.clone()) } else { Some(now.clone()) },
        });
    }
    // Conditions of other writers stay.
    let others: Vec<NamespaceCondition> = old.iter().filter(|c| !new.iter().any(|n| n.type_ == c.type_)).cloned().collect();
    new.extend(others);
    if !changed {
        return Ok(());
    }
    let api: Api<Namespace> = Api::all(client.clone());
    let patch = json!({"status": {"conditions": new}});
    match crate::writes::update(&api, &name, MANAGER, crate::writes::Part::Status, &patch).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
        Err(e) => Err(Error::StatusUpdateFailed(name, e)),
    }
}

/// Removes `kubernetes` from `spec.finalizers` through the `finalize` subresource.
async fn finalize(client: &kube::Client, name: &str) -> Result<(), Error> {
    let api: Api<Namespace> = Api::all(client.clone());
    let mut ns = match api.get_opt(name).await {
        Ok(Some(ns)) => ns,
        Ok(None) => return Ok(()),
        Err(e) => return Err(Error::FinalizeFailed(name.into(), e)),
    };
    if let Some(f) = ns.spec.as_mut().and_then(|s| s.finalizers.as_mut()) {
        f.retain(|f| f != FINALIZER);
    }
    match api.replace_subresource("finalize", name, &PostParams::default(), &ns).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
        Err(e) => Err(Error::FinalizeFailed(name.into(), e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conditions_read_as_upstream() {
        let done = conditions(&Progress::default());
        assert!(done.iter().all(|c| !c.1));
        assert_eq!(done[3].2, "ContentRemoved");
        let mut p = Progress::default();
        p.remaining.insert("configmaps.".into(), 2);
        p.finalizers.insert("example.com/hold".into(), 1);
        let c = conditions(&p);
        assert!(!p.done());
        assert_eq!(c[3], ("NamespaceContentRemaining", true, "SomeResourcesRemain".into(), "Some resources are remaining: configmaps. has 2 resource instances".into()));
        assert_eq!(c[4].3, "Some content in the namespace has finalizers remaining: example.com/hold in 1 resource instances");
    }
}
