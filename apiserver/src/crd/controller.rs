//! Registers custom resources as their CRDs come and go: a CRD becomes served (discovery,
//! REST, OpenAPI) as soon as its create is seen, and is marked `NamesAccepted` and
//! `Established`; deleting a CRD deletes its objects, then the CRD (upstream's
//! `customresourcecleanup.apiextensions.k8s.io` finalizer).
//!
//! It runs inside the apiserver, as upstream's apiextensions controllers do, and watches the
//! CRD store directly.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use serde_json::{json, Value};

use crate::crd::resource;
use crate::error::ApiResult;
use crate::meta;
use crate::registry::list::{ListOptions, Selection, WatchOptions};
use crate::registry::store::{GenericStore, Target, WriteOptions};
use crate::registry::{Registry, ReqCtx};
use crate::selectors::{fields::FieldSelector, labels::LabelSelector};

/// The finalizer that makes a CRD wait until its objects are gone.
pub const CLEANUP_FINALIZER: &str = "customresourcecleanup.apiextensions.k8s.io";

fn everything() -> Selection {
    Selection { labels: LabelSelector::everything(), fields: FieldSelector::everything() }
}

/// Registers the CRDs stored now; call before serving so custom resources are there at once.
pub async fn register_existing(registry: &Registry) -> ApiResult<i64> {
    let crds = crd_store(registry);
    let page = crds
        .list(None, &ListOptions { selection: everything(), limit: 0, continue_token: None, resource_version: None, resource_version_match: None })
        .await?;
    for crd in &page.items {
        if let Err(e) = reconcile(registry, &crds, crd).await {
            tracing::warn!(crd = meta::name(crd), error = %e, "reconciling CRD failed");
        }
    }
    Ok(page.revision)
}

/// Watches CRDs forever, reconciling each change; starts over from a fresh list when the
/// watch ends.
pub async fn run(registry: Arc<Registry>, mut from: i64) {
    let crds = crd_store(&registry);
    loop {
        let opts = WatchOptions {
            selection: everything(),
            resource_version: Some(from.to_string()),
            allow_bookmarks: false,
            send_initial_events: false,
            timeout: Duration::from_secs(3600),
            bookmark_interval: Duration::from_secs(60),
        };
        match crds.watch(None, opts).await {
            Ok(mut events) => {
                while let Some(ev) = events.next().await {
                    if let Some(rv) = meta::resource_version(&ev.object).and_then(|r| r.parse().ok()) {
                        from = rv;
                    }
                    let outcome = match ev.kind {
                        "ADDED" | "MODIFIED" => reconcile(&registry, &crds, &ev.object).await,
                        "DELETED" => {
                            unregister(&registry, &ev.object);
                            Ok(())
                        }
                        "ERROR" => break,
                        _ => Ok(()),
                    };
                    if let Err(e) = outcome {
                        tracing::warn!(crd = meta::name(&ev.object), error = %e, "reconciling CRD failed; retrying");
                        tokio::spawn(retry(registry.clone(), meta::name(&ev.object).to_string()));
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, "watching CRDs failed"),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        match register_existing(&registry).await {
            Ok(rev) => from = rev,
            Err(e) => tracing::warn!(error = %e, "listing CRDs failed"),
        }
    }
}

/// Reconciles one CRD again until it succeeds: a write can fail while the datastore is
/// briefly unavailable (an etcd member lost), and no later event may come to retry it.
async fn retry(registry: Arc<Registry>, name: String) {
    let crds = crd_store(&registry);
    let mut backoff = Duration::from_millis(100);
    for _ in 0..12 {
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(5));
        let outcome = match crds.get(None, &name).await {
            Ok(crd) => reconcile(&registry, &crds, &crd).await,
            Err(crate::error::ApiError::NotFound { .. }) => return,
            Err(e) => Err(e),
        };
        match outcome {
            Ok(()) => return,
            Err(e) => tracing::warn!(crd = %name, error = %e, "reconciling CRD failed again"),
        }
    }
}

fn crd_store(registry: &Registry) -> Arc<GenericStore> {
    registry.find("apiextensions.k8s.io", "v1", "customresourcedefinitions").expect("CRDs are a built-in kind")
}

fn group_plural(crd: &Value) -> (String, String) {
    let spec = &crd["spec"];
    (spec["group"].as_str().unwrap_or_default().to_string(), spec["names"]["plural"].as_str().unwrap_or_default().to_string())
}

fn unregister(registry: &Registry, crd: &Value) {
    let (group, plural) = group_plural(crd);
    registry.remove_custom(&group, &plural);
    tracing::info!(crd = meta::name(crd), "custom resource no longer served");
}

async fn reconcile(registry: &Registry, crds: &GenericStore, crd: &Value) -> ApiResult<()> {
    let name = meta::name(crd).to_string();
    if meta::is_deleting(crd) {
        return clean_up(registry, crds, crd).await;
    }
    let (group, plural) = group_plural(crd);
    registry.set_custom(&group, &plural, resource::kinds_of(crd));
    let opts = WriteOptions::default();
    let ctx = ReqCtx::default();
    if !meta::finalizers(crd).iter().any(|f| f == CLEANUP_FINALIZER) {
        crds.guaranteed_update(&ctx, &name, Target::Main, &opts, |cur| {
            let mut next = cur.clone();
            let mut fins = meta::finalizers(cur);
            if !fins.iter().any(|f| f == CLEANUP_FINALIZER) {
                fins.push(CLEANUP_FINALIZER.to_string());
            }
            meta::set(&mut next, "finalizers", json!(fins));
            Ok(next)
        })
        .await?;
    }
    crds.guaranteed_update(&ctx, &name, Target::Status, &opts, |cur| Ok(established(cur))).await?;
    Ok(())
}

/// The status of an accepted CRD: names accepted as asked, Established, stored versions.
fn established(cur: &Value) -> Value {
    let mut next = cur.clone();
    let status = &cur["status"];
    let now = meta::now();
    let condition = |type_: &str, reason: &str, message: &str| {
        let old = status["conditions"].as_array().and_then(|cs| cs.iter().find(|c| c["type"] == type_));
        let since = match old {
            Some(c) if c["status"] == "True" => c["lastTransitionTime"].clone(),
            _ => json!(now),
        };
        json!({"type": type_, "status": "True", "lastTransitionTime": since, "reason": reason, "message": message})
    };
    let mut stored: Vec<Value> = status["storedVersions"].as_array().cloned().unwrap_or_default();
    if let Some(v) = cur["spec"]["versions"].as_array().and_then(|vs| vs.iter().find(|v| v["storage"] == true)) {
        if !stored.contains(&v["name"]) {
            stored.push(v["name"].clone());
        }
    }
    next["status"] = json!({
        "acceptedNames": cur["spec"]["names"],
        "conditions": [
            condition("NamesAccepted", "NoConflicts", "no conflicts found"),
            condition("Established", "InitialNamesAccepted", "the initial names have been accepted"),
        ],
        "storedVersions": stored,
    });
    next
}

/// Deletes every object of a CRD being deleted, stops serving it, and releases the CRD.
async fn clean_up(registry: &Registry, crds: &GenericStore, crd: &Value) -> ApiResult<()> {
    let (group, plural) = group_plural(crd);
    let backend = registry.backend();
    let prefix = format!("/registry/{group}/{plural}/");
    loop {
        let page = backend.list(&prefix, "", 500, 0).await?;
        for kv in &page.kvs {
            backend.delete(&kv.key, 0).await?;
        }
        if !page.more {
            break;
        }
    }
    registry.remove_custom(&group, &plural);
    let name = meta::name(crd).to_string();
    crds.guaranteed_update(&ReqCtx::default(), &name, Target::Main, &WriteOptions::default(), |cur| {
        let mut next = cur.clone();
        let fins: Vec<String> = meta::finalizers(cur).into_iter().filter(|f| f != CLEANUP_FINALIZER).collect();
        meta::set(&mut next, "finalizers", json!(fins));
        Ok(next)
    })
    .await
    .map(|_| ())
    .or_else(|e| match e {
        crate::error::ApiError::NotFound { .. } => Ok(()),
        other => Err(other),
    })
}
