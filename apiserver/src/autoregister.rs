//! The local APIServices, as upstream's autoregister and CRD registration controllers keep
//! them: one `apiregistration.k8s.io/v1` APIService per served group-version (`v1.` for the
//! core group, `v1.apps`, ...), `service: null`, upstream's group and version priorities,
//! labelled `kube-aggregator.kubernetes.io/automanaged` (`onstart` for built-in groups,
//! `true` for custom resources' group-versions), status `Available=True` reason `Local`.
//!
//! The set follows the registry: a resync runs at start, whenever `Registry::generation()`
//! changes (custom resources come and go) and every half minute (an automanaged APIService
//! deleted by hand comes back). APIServices without the label belong to users and are left
//! alone; those naming a service are stored but not proxied (krust has no aggregation proxy
//! yet), so they are marked `Available=False`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::error::{ApiError, ApiResult};
use crate::meta;
use crate::registry::list::{ListOptions, Selection};
use crate::registry::store::{GenericStore, Target, WriteOptions};
use crate::registry::{Registry, ReqCtx};
use crate::selectors::{fields::FieldSelector, labels::LabelSelector};

pub const AUTOMANAGED_LABEL: &str = "kube-aggregator.kubernetes.io/automanaged";
/// Reason of the condition of APIServices krust cannot serve.
pub const NOT_PROXIED_REASON: &str = "ServiceNotProxied";

/// Upstream's `apiVersionPriorities` (cmd/kube-apiserver/app/aggregator.go) for the
/// group-versions krust serves: (group priority minimum, version priority).
fn builtin_priority(group: &str, version: &str) -> Option<(i64, i64)> {
    Some(match (group, version) {
        ("", "v1") => (18000, 1),
        ("apps", "v1") => (17800, 15),
        ("events.k8s.io", "v1") => (17750, 15),
        ("authentication.k8s.io", "v1") => (17700, 15),
        ("authorization.k8s.io", "v1") => (17600, 15),
        ("autoscaling", "v1") => (17500, 15),
        ("autoscaling", "v2") => (17500, 30),
        ("batch", "v1") => (17400, 15),
        ("certificates.k8s.io", "v1") => (17300, 15),
        ("networking.k8s.io", "v1") => (17200, 15),
        ("policy", "v1") => (17100, 15),
        ("rbac.authorization.k8s.io", "v1") => (17000, 15),
        ("storage.k8s.io", "v1") => (16800, 15),
        ("apiextensions.k8s.io", "v1") => (16700, 15),
        ("admissionregistration.k8s.io", "v1") => (16700, 15),
        ("scheduling.k8s.io", "v1") => (16600, 15),
        ("coordination.k8s.io", "v1") => (16500, 15),
        ("node.k8s.io", "v1") => (16300, 15),
        ("discovery.k8s.io", "v1") => (16200, 15),
        ("flowcontrol.apiserver.k8s.io", "v1") => (16100, 21),
        _ => return None,
    })
}

/// The local APIServices the registry calls for, by name.
pub fn desired(registry: &Registry) -> Vec<Value> {
    let mut out = Vec::new();
    for (group, versions) in registry.groups() {
        if group == "apiregistration.k8s.io" {
            // The aggregator's own group has no APIService upstream.
            continue;
        }
        for version in versions {
            let builtin = registry.resources(&group, &version).iter().any(|s| s.kind.normalize.is_some());
            let (label, (group_priority, version_priority)) = if builtin {
                ("onstart", builtin_priority(&group, &version).unwrap_or((1000, 15)))
            } else {
                // upstream's crdRegistrationController: CRDs have relatively low priority
                ("true", (1000, 100))
            };
            let mut spec = json!({"version": version, "groupPriorityMinimum": group_priority, "versionPriority": version_priority, "service": null});
            if !group.is_empty() {
                spec["group"] = json!(group);
            }
            out.push(json!({
                "apiVersion": "apiregistration.k8s.io/v1",
                "kind": "APIService",
                "metadata": {"name": format!("{version}.{group}"), "labels": {AUTOMANAGED_LABEL: label}},
                "spec": spec,
            }));
        }
    }
    out
}

fn store(registry: &Registry) -> Option<Arc<GenericStore>> {
    registry.find("apiregistration.k8s.io", "v1", "apiservices")
}

fn opts() -> WriteOptions {
    WriteOptions { dry_run: false, field_manager: Some("kube-apiserver".into()) }
}

fn is_automanaged(obj: &Value) -> bool {
    matches!(obj["metadata"]["labels"][AUTOMANAGED_LABEL].as_str(), Some("onstart" | "true"))
}

/// The `Available` condition an APIService should carry: (status, reason, message).
fn availability(obj: &Value) -> (&'static str, &'static str, &'static str) {
    if obj["spec"]["service"].is_null() {
        ("True", "Local", "Local APIServices are always available")
    } else {
        ("False", NOT_PROXIED_REASON, "krust does not proxy to aggregated API servers yet")
    }
}

/// Brings the stored APIServices in line with the registry.
pub async fn sync(registry: &Registry) -> ApiResult<()> {
    let Some(store) = store(registry) else { return Ok(()) };
    let ctx = ReqCtx::default();
    let everything = Selection { labels: LabelSelector::everything(), fields: FieldSelector::everything() };
    let list = ListOptions { selection: everything, limit: 0, continue_token: None, resource_version: None, resource_version_match: None };
    let existing = store.list(None, &list).await?.items;
    // In stored form (normalized: `service: null` is absent), so comparisons are exact.
    let desired = desired(registry).into_iter().map(|d| store.decode_body(d)).collect::<ApiResult<Vec<_>>>()?;
    for want in &desired {
        let name = meta::name(want);
        match existing.iter().find(|o| meta::name(o) == name) {
            None => match store.create(&ctx, want.clone(), &opts()).await {
                Ok(_) | Err(ApiError::AlreadyExists { .. }) => {}
                Err(e) => return Err(e),
            },
            Some(cur) if is_automanaged(cur) => {
                if cur["spec"] != want["spec"] || cur["metadata"]["labels"][AUTOMANAGED_LABEL] != want["metadata"]["labels"][AUTOMANAGED_LABEL] {
                    let want = want.clone();
                    store
                        .guaranteed_update(&ctx, name, Target::Main, &opts(), |cur| {
                            let mut next = cur.clone();
                            next["spec"] = want["spec"].clone();
                            next["metadata"]["labels"][AUTOMANAGED_LABEL] = want["metadata"]["labels"][AUTOMANAGED_LABEL].clone();
                            Ok(next)
                        })
                        .await?;
                }
            }
            Some(_) => {} // a user's APIService of the same name: not ours
        }
    }
    for cur in &existing {
        let name = meta::name(cur);
        if is_automanaged(cur) && !desired.iter().any(|d| meta::name(d) == name) {
            match store.delete(&ctx, name, &Default::default()).await {
                Ok(_) | Err(ApiError::NotFound { .. }) => tracing::info!(apiservice = name, "removed local APIService"),
                Err(e) => return Err(e),
            }
        }
    }
    // Status: every APIService, ours or not, gets its Available condition.
    let all = store.list(None, &ListOptions { selection: Selection { labels: LabelSelector::everything(), fields: FieldSelector::everything() }, limit: 0, continue_token: None, resource_version: None, resource_version_match: None }).await?.items;
    for obj in &all {
        let (status, reason, message) = availability(obj);
        let current = obj["status"]["conditions"].as_array().and_then(|cs| cs.iter().find(|c| c["type"] == "Available"));
        if current.is_some_and(|c| c["status"] == status && c["reason"] == reason) {
            continue;
        }
        let condition = json!({"type": "Available", "status": status, "lastTransitionTime": meta::now(), "reason": reason, "message": message});
        let result = store
            .guaranteed_update(&ctx, meta::name(obj), Target::Status, &opts(), |cur| {
                let mut next = cur.clone();
                let mut conds: Vec<Value> = cur["status"]["conditions"].as_array().cloned().unwrap_or_default();
                conds.retain(|c| c["type"] != "Available");
                conds.push(condition.clone());
                next["status"] = json!({"conditions": conds});
                Ok(next)
            })
            .await;
        match result {
            Ok(_) | Err(ApiError::NotFound { .. }) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Keeps the APIServices in step with the registry, forever.
pub async fn run(registry: Arc<Registry>) {
    let mut synced: Option<u64> = None;
    let mut last = Instant::now();
    loop {
        let generation = registry.generation();
        if synced != Some(generation) || last.elapsed() > Duration::from_secs(30) {
            match sync(&registry).await {
                Ok(()) => synced = Some(generation),
                Err(e) => tracing::warn!(error = %e, "syncing local APIServices failed"),
            }
            last = Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}
