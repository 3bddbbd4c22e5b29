//! The resource quota controller (upstream's `resourcequota`): keeps every ResourceQuota's
//! `status.hard` (its `spec.hard`) and `status.used` current.
//!
//! A `Controller` over ResourceQuotas that also watches what quotas count (pods, services,
//! configmaps, secrets, replication controllers, persistent volume claims, replica sets):
//! any change of one wakes every quota of its namespace, as upstream's replenishment
//! controllers do; every quota is also recalculated every [`RESYNC`] (objects counted by
//! `count/<resource>.<group>` of other resources, pods past their deletion grace period).
//! A reconcile lists the namespace's counted objects live and sums what each charges
//! (`apiserver::quota`, the evaluators the admission plugin charges with), honouring the
//! quota's scopes; the status is written through `/status` guarded by the quota's
//! resourceVersion, so a charge admission made meanwhile is not overwritten (409: retried).

use std::sync::Arc;
use std::time::Duration;

use apiserver::quota::{self, Usage};
use futures::StreamExt;
use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::core::v1::{ConfigMap, PersistentVolumeClaim, Pod, ReplicationController, ResourceQuota, Secret, Service};
use kube::api::{Api, ListParams, PostParams};
use kube::runtime::controller::Action;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::{watcher, Controller};
use kube::{Resource, ResourceExt};
use serde_json::{json, Value};
use tokio::sync::Mutex;

use crate::discovery::{self, ServedResource};
use crate::Ctx;

const MANAGER: &str = "resourcequota-controller";
/// Full recalculation period (upstream's `--resource-quota-sync-period` is 5 minutes).
const RESYNC: Duration = Duration::from_secs(30);
const RETRY: Duration = Duration::from_secs(1);

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("listing {0} for quota {1}: {2}")]
    ListFailed(String, String, #[source] kube::Error),
    #[error("discovering resources for quota {0}: {1}")]
    DiscoveryFailed(String, #[source] kube::Error),
    #[error("updating the status of quota {0}: {1}")]
    StatusUpdateFailed(String, #[source] kube::Error),
}

/// The controller's state: the shared context and the served resources (rediscovered when
/// a quota names one not seen yet).
struct State {
    ctx: Arc<Ctx>,
    served: Mutex<Vec<ServedResource>>,
}

/// Every quota of the changed object's namespace.
fn quotas_of_namespace<K: Resource>(store: Store<ResourceQuota>) -> impl Fn(K) -> Vec<ObjectRef<ResourceQuota>> + Send + Sync + 'static {
    move |obj: K| {
        let ns = obj.meta().namespace.clone();
        store.state().iter().filter(|q| q.namespace() == ns).map(|q| ObjectRef::from_obj(&**q)).collect()
    }
}

pub async fn run(ctx: Arc<Ctx>) -> Result<(), crate::Error> {
    let client = ctx.client.clone();
    let controller = Controller::new(Api::<ResourceQuota>::all(client.clone()), watcher::Config::default());
    let store = controller.store();
    let cfg = watcher::Config::default;
    let state = Arc::new(State { ctx, served: Mutex::new(Vec::new()) });
    controller
        .watches(Api::<Pod>::all(client.clone()), cfg(), quotas_of_namespace(store.clone()))
        .watches(Api::<Service>::all(client.clone()), cfg(), quotas_of_namespace(store.clone()))
        .watches(Api::<ConfigMap>::all(client.clone()), cfg(), quotas_of_namespace(store.clone()))
        .watches(Api::<Secret>::all(client.clone()), cfg(), quotas_of_namespace(store.clone()))
        .watches(Api::<ReplicationController>::all(client.clone()), cfg(), quotas_of_namespace(store.clone()))
        .watches(Api::<PersistentVolumeClaim>::all(client.clone()), cfg(), quotas_of_namespace(store.clone()))
        .watches(Api::<ReplicaSet>::all(client.clone()), cfg(), quotas_of_namespace(store))
        .run(reconcile, error_policy, state)
        .for_each(|res| async move {
            if let Err(e) = res {
                tracing::debug!(error = %e, "resource quota reconcile failed");
            }
        })
        .await;
    Ok(())
}

fn error_policy(q: Arc<ResourceQuota>, err: &Error, _state: Arc<State>) -> Action {
    tracing::debug!(quota = %q.name_any(), error = %err, "resource quota sync will be retried");
    Action::requeue(RETRY)
}

/// The served resource `group/plural`, rediscovering once when it is not known yet.
async fn served(state: &State, quota: &str, group: &str, plural: &str) -> Result<Option<ServedResource>, Error> {
    let mut served = state.served.lock().await;
    let find = |list: &[ServedResource]| list.iter().find(|r| r.ar.group == group && r.ar.plural == plural).cloned();
    if let Some(r) = find(&served) {
        return Ok(Some(r));
    }
    *served = discovery::preferred(&state.ctx.client).await.map_err(|e| Error::DiscoveryFailed(quota.into(), e))?;
    Ok(find(&served))
}

/// What the namespace's objects charge against `q`, for the resources its spec limits.
async fn calculate(state: &State, q: &ResourceQuota, ns: &str, hard: &[String]) -> Result<Usage, Error> {
    let name = q.name_any();
    let qv = serde_json::to_value(q).unwrap_or_default();
    // Which group/resources must be listed: the evaluators matching some limited name.
    let mut lists: Vec<(String, String)> = Vec::new();
    for (g, p) in [("", "pods"), ("", "services"), ("", "persistentvolumeclaims")] {
        if !quota::matching_resources(g, p, hard).is_empty() {
            lists.push((g.into(), p.into()));
        }
    }
    for h in hard {
        if let Some(gr) = quota::counted_resource(h) {
            if !lists.contains(&gr) {
                lists.push(gr);
            }
        }
    }
    let now = crate::podutil::now_secs();
    let mut total = Usage::new();
    for (group, plural) in lists {
        let Some(resource) = served(state, &name, &group, &plural).await? else { continue };
        if !resource.namespaced {
            continue;
        }
        let objs = resource
            .api(&state.ctx.client, Some(ns))
            .list(&ListParams::default())
            .await
            .map_err(|e| Error::ListFailed(resource.group_resource(), name.clone(), e))?;
        // Each limited name this resource answers starts at zero.
        for n in quota::matching_resources(&group, &plural, hard) {
            total.entry(n).or_insert(quota::Amount::count(0));
        }
        for obj in objs.items {
            let v = serde_json::to_value(&obj).unwrap_or_default();
            if quota::matches(&qv, hard, &group, &plural, &v) {
                quota::add(&mut total, &quota::usage(&group, &plural, &v, now));
            }
        }
    }
    let hard_set: Vec<String> = hard.to_vec();
    Ok(quota::mask(&total, &hard_set))
}

async fn reconcile(q: Arc<ResourceQuota>, state: Arc<State>) -> Result<Action, Error> {
    if q.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let name = q.name_any();
    let ns = q.namespace().unwrap_or_default();
    let spec_hard = serde_json::to_value(q.spec.as_ref().and_then(|s| s.hard.clone()).unwrap_or_default()).unwrap_or(json!({}));
    let hard: Vec<String> = spec_hard.as_object().map(|m| m.keys().cloned().collect()).unwrap_or_default();
    let used = calculate(&state, &q, &ns, &hard).await?;

    let status = serde_json::to_value(&q.status).unwrap_or(Value::Null);
    let same_hard = quota::equal(&quota::parse_list(&status["hard"]), &quota::parse_list(&spec_hard)) && status["hard"].is_object() == !hard.is_empty();
    let same_used = status["used"].is_object() && quota::equal(&quota::parse_list(&status["used"]), &used);
    if !(same_hard && same_used) {
        let mut obj = serde_json::to_value(&*q).unwrap_or_default();
        obj["status"] = json!({"hard": spec_hard, "used": quota::to_json(&used)});
        let api: Api<ResourceQuota> = Api::namespaced(state.ctx.client.clone(), &ns);
        let pp = PostParams { field_manager: Some(MANAGER.into()), ..Default::default() };
        // Guarded by the quota's resourceVersion (in `obj`): admission may have charged it.
        let typed: ResourceQuota = serde_json::from_value(obj).unwrap_or_default();
        api.replace_status(&name, &pp, &typed).await.map_err(|e| Error::StatusUpdateFailed(name.clone(), e))?;
    }
    Ok(Action::requeue(RESYNC))
}
