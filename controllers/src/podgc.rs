//! Pod garbage collection (upstream's `pod-garbage-collector`): pods bound to a node that no
//! longer exists (orphaned) get the `DisruptionTarget` condition (reason `DeletionByPodGC`)
//! and are force-deleted; so are terminating pods that were never scheduled; and finished
//! pods beyond `--terminated-pod-gc-threshold` go, oldest first. A node counts as gone only
//! when it is missing from the cache on two passes [`QUARANTINE`] apart and a live GET says
//! 404 (upstream's quarantine: a pod may be bound just before its node registers).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use kube::ResourceExt;
use serde_json::json;
use tokio::sync::Notify;

use crate::{spawn_reflector, Ctx};

const MANAGER: &str = "pod-garbage-collector";
/// How long a node must stay missing before its pods are collected.
pub const QUARANTINE: Duration = Duration::from_secs(10);
/// Upstream's `--terminated-pod-gc-threshold` default.
const TERMINATED_THRESHOLD: usize = 12500;
const PERIOD: Duration = Duration::from_secs(5);

pub async fn run(ctx: Arc<Ctx>) -> Result<(), crate::Error> {
    let notify = Arc::new(Notify::new());
    let nodes = spawn_reflector(Api::<Node>::all(ctx.client.clone()), notify.clone());
    let pods = spawn_reflector(Api::<Pod>::all(ctx.client.clone()), notify.clone());
    let _ = tokio::join!(nodes.wait_until_ready(), pods.wait_until_ready());
    // node name -> when it was first seen missing
    let mut missing: HashMap<String, Instant> = HashMap::new();
    loop {
        let known: HashSet<String> = nodes.state().iter().map(|n| n.name_any()).collect();
        let pods = pods.state();
        gc_orphaned(&ctx, &pods, &known, &mut missing).await;
        gc_unscheduled_terminating(&ctx, &pods).await;
        gc_terminated(&ctx, &pods, TERMINATED_THRESHOLD).await;
        tokio::time::sleep(PERIOD).await;
    }
}

fn is_terminated(p: &Pod) -> bool {
    matches!(p.status.as_ref().and_then(|s| s.phase.as_deref()), Some("Succeeded" | "Failed"))
}

fn node_of(p: &Pod) -> Option<&str> {
    p.spec.as_ref().and_then(|s| s.node_name.as_deref()).filter(|n| !n.is_empty())
}

/// Pods on nodes that are gone: marked, then force-deleted.
async fn gc_orphaned(ctx: &Ctx, pods: &[Arc<Pod>], known: &HashSet<String>, missing: &mut HashMap<String, Instant>) {
    let absent: HashSet<&str> = pods.iter().filter_map(|p| node_of(p)).filter(|n| !known.contains(*n)).collect();
    missing.retain(|n, _| absent.contains(n.as_str()));
    for node in absent {
        let since = *missing.entry(node.to_string()).or_insert_with(Instant::now);
        if since.elapsed() < QUARANTINE {
            continue;
        }
        match Api::<Node>::all(ctx.client.clone()).get_opt(node).await {
            Ok(None) => {}
            Ok(Some(_)) => {
                missing.remove(node);
                continue;
            }
            Err(e) => {
                tracing::debug!(node, error = %e, "pod GC: checking a node failed");
                continue;
            }
        }
        for pod in pods.iter().filter(|p| node_of(p) == Some(node)) {
            force_delete(ctx, pod, Some(("DeletionByPodGC", "PodGC: node no longer exists".into()))).await;
        }
    }
}

/// Terminating pods no node will ever finish: force-deleted.
async fn gc_unscheduled_terminating(ctx: &Ctx, pods: &[Arc<Pod>]) {
    for pod in pods.iter().filter(|p| p.metadata.deletion_timestamp.is_some() && node_of(p).is_none()) {
        force_delete(ctx, pod, None).await;
    }
}

/// Finished pods beyond `threshold`, oldest first.
async fn gc_terminated(ctx: &Ctx, pods: &[Arc<Pod>], threshold: usize) {
    let mut done: Vec<&Arc<Pod>> = pods.iter().filter(|p| is_terminated(p) && p.metadata.deletion_timestamp.is_none()).collect();
    if done.len() <= threshold {
        return;
    }
    done.sort_by_key(|p| p.metadata.creation_timestamp.as_ref().map(|t| t.0));
    let excess = done.len() - threshold;
    for pod in done.into_iter().take(excess) {
        force_delete(ctx, pod, None).await;
    }
}

/// Deletes `pod` with grace period 0, first adding the `DisruptionTarget` condition when
/// `reason` is given (as upstream, so Jobs' pod failure policies can tell).
async fn force_delete(ctx: &Ctx, pod: &Pod, reason: Option<(&str, String)>) {
    let (ns, name) = (pod.namespace().unwrap_or_default(), pod.name_any());
    let api: Api<Pod> = Api::namespaced(ctx.client.clone(), &ns);
    if let (Some((reason, message)), false) = (reason, is_terminated(pod)) {
        let condition = json!({"type": "DisruptionTarget", "status": "True", "reason": reason, "message": message, "lastTransitionTime": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)});
        let patch = json!({"apiVersion": "v1", "kind": "Pod", "status": {"conditions": [condition]}});
        let pp = PatchParams::apply(MANAGER).force();
        if let Err(e) = api.patch_status(&name, &pp, &Patch::Apply(&patch)).await {
            tracing::debug!(pod = %name, error = %e, "pod GC: setting DisruptionTarget failed");
        }
    }
    match api.delete(&name, &DeleteParams { grace_period_seconds: Some(0), ..Default::default() }).await {
        Ok(_) => tracing::info!(namespace = %ns, pod = %name, "pod GC: deleted"),
        Err(kube::Error::Api(e)) if e.code == 404 => {}
        Err(e) => tracing::warn!(pod = %name, error = %e, "pod GC: deleting failed"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(phase: &str, node: &str) -> Pod {
        serde_json::from_value(json!({"metadata": {"name": "p"}, "spec": {"containers": [], "nodeName": node}, "status": {"phase": phase}})).unwrap()
    }

    #[test]
    fn terminated_and_bound() {
        assert!(is_terminated(&pod("Succeeded", "n")));
        assert!(is_terminated(&pod("Failed", "n")));
        assert!(!is_terminated(&pod("Running", "n")));
        assert_eq!(node_of(&pod("Running", "n")), Some("n"));
        assert_eq!(node_of(&pod("Pending", "")), None);
    }
}
