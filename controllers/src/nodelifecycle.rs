//! Node lifecycle (upstream's `node-lifecycle-controller` and `taint-eviction-controller`):
//! a node whose kubelet stops renewing its Lease (and posting status) for
//! `node_monitor_grace_period` gets its conditions set to `Unknown` and the
//! `node.kubernetes.io/unreachable` taints; a node reporting `Ready=False` gets the
//! `not-ready` taints. Pods on a node with a `NoExecute` taint are deleted unless they
//! tolerate it — at once, or after their `tolerationSeconds` — so their controllers
//! recreate them elsewhere. A node that reports again loses the taints.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Node, Pod, Taint};
use kube::api::{Api, DeleteParams, Patch, Preconditions};
use kube::runtime::reflector::Store;
use serde_json::{json, Value};
use tokio::sync::Notify;

use crate::scheduler::tolerates;
use crate::spawn_reflector;
use crate::Ctx;

const MANAGER: &str = "node-lifecycle-controller";
pub const UNREACHABLE: &str = "node.kubernetes.io/unreachable";
pub const NOT_READY: &str = "node.kubernetes.io/not-ready";
/// How often nodes are checked (upstream's `--node-monitor-period` is 5 s).
const MONITOR_PERIOD: Duration = Duration::from_secs(2);
const NODE_LEASE_NAMESPACE: &str = "kube-node-lease";

pub async fn run(ctx: Arc<Ctx>) -> Result<(), crate::Error> {
    let notify = Arc::new(Notify::new());
    let nodes = spawn_reflector(Api::<Node>::all(ctx.client.clone()), notify.clone());
    let leases = spawn_reflector(Api::<Lease>::namespaced(ctx.client.clone(), NODE_LEASE_NAMESPACE), notify.clone());
    let pods = spawn_reflector(Api::<Pod>::all(ctx.client.clone()), notify.clone());
    let (_, _, _) = tokio::join!(nodes.wait_until_ready(), leases.wait_until_ready(), pods.wait_until_ready());
    loop {
        let now = Utc::now();
        for node in nodes.state() {
            if let Err(e) = monitor(&ctx, &node, &leases, now).await {
                tracing::warn!(node = node.metadata.name.as_deref().unwrap_or_default(), error = %e, "node lifecycle: updating the node failed");
            }
        }
        evict(&ctx, &nodes, &pods, now).await;
        tokio::time::sleep(MONITOR_PERIOD).await;
    }
}

fn parse_time(s: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(s).ok().map(|t| t.with_timezone(&Utc))
}

fn to_json<T: serde::Serialize>(v: &T) -> Value {
    serde_json::to_value(v).unwrap_or(Value::Null)
}

/// The last time the node's kubelet was heard from: its Lease renewal or Ready heartbeat.
fn last_heard(node: &Value, lease: Option<&Value>) -> Option<DateTime<Utc>> {
    let renew = lease.and_then(|l| l["spec"]["renewTime"].as_str()).and_then(parse_time);
    let heartbeat = node["status"]["conditions"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["type"] == "Ready"))
        .and_then(|c| c["lastHeartbeatTime"].as_str())
        .and_then(parse_time);
    let created = node["metadata"]["creationTimestamp"].as_str().and_then(parse_time);
    [renew, heartbeat, created].into_iter().flatten().max()
}

/// The Ready condition's status, `None` while the kubelet has not reported one yet.
fn ready_status(node: &Value) -> Option<String> {
    node["status"]["conditions"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["type"] == "Ready"))
        .and_then(|c| c["status"].as_str())
        .map(String::from)
}

/// The taints a node should carry for its readiness, replacing our own earlier ones.
pub fn desired_taints(current: &[Value], ready: &str, now: &str) -> Vec<Value> {
    let ours = |t: &Value| t["key"] == UNREACHABLE || t["key"] == NOT_READY;
    let mut out: Vec<Value> = current.iter().filter(|t| !ours(t)).cloned().collect();
    let key = match ready {
        "True" => None,
        "False" => Some(NOT_READY),
        _ => Some(UNREACHABLE),
    };
    if let Some(key) = key {
        for effect in ["NoSchedule", "NoExecute"] {
            // Keep the original timeAdded: tolerationSeconds count from it.
            let kept = current.iter().find(|t| t["key"] == key && t["effect"] == effect).cloned();
            out.push(kept.unwrap_or_else(|| {
                let mut t = json!({"key": key, "effect": effect});
                if effect == "NoExecute" {
                    t["timeAdded"] = json!(now);
                }
                t
            }));
        }
    }
    out
}

async fn monitor(ctx: &Ctx, node: &Node, leases: &Store<Lease>, now: DateTime<Utc>) -> Result<(), kube::Error> {
    let name = node.metadata.name.clone().unwrap_or_default();
    let v = to_json(node);
    let lease = leases.state().into_iter().find(|l| l.metadata.name.as_deref() == Some(name.as_str())).map(|l| to_json(&*l));
    let grace = chrono::Duration::from_std(ctx.config.node_monitor_grace_period).unwrap_or(chrono::Duration::seconds(40));
    let silent = last_heard(&v, lease.as_ref()).is_some_and(|t| now - t > grace);
    let api = Api::<Node>::all(ctx.client.clone());
    let stamp = now.format("%Y-%m-%dT%H:%M:%SZ").to_string();
    let reported = ready_status(&v);
    if reported.is_none() && !silent {
        // Just registered: its kubelet gets the grace period to report, as upstream.
        return Ok(());
    }
    let mut ready = reported.clone().unwrap_or_else(|| "Unknown".into());
    if silent && ready != "Unknown" {
        // Upstream marks every condition the kubelet owns as Unknown.
        let conditions: Vec<Value> = v["status"]["conditions"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .into_iter()
            .map(|mut c| {
                if c["status"] != "Unknown" {
                    c["status"] = json!("Unknown");
                    c["reason"] = json!("NodeStatusUnknown");
                    c["message"] = json!("Kubelet stopped posting node status.");
                    c["lastTransitionTime"] = json!(stamp);
                }
                c
            })
            .collect();
        api.patch_status(&name, &crate::patch_params(MANAGER), &Patch::Merge(&json!({"status": {"conditions": conditions}}))).await?;
        tracing::warn!(node = %name, "node stopped reporting: Ready=Unknown");
        ready = "Unknown".into();
    }
    let current: Vec<Value> = v["spec"]["taints"].as_array().cloned().unwrap_or_default();
    let desired = desired_taints(&current, &ready, &stamp);
    if desired != current {
        // The resourceVersion guards against overwriting taints someone else just changed.
        let patch = json!({"metadata": {"resourceVersion": node.metadata.resource_version}, "spec": {"taints": desired}});
        api.patch(&name, &crate::patch_params(MANAGER), &Patch::Merge(&patch)).await?;
        tracing::info!(node = %name, ready = %ready, "node taints updated");
    }
    Ok(())
}

/// When a pod on a node with these NoExecute taints must go: `Some(now)` if a taint is not
/// tolerated, the earliest `timeAdded + tolerationSeconds` otherwise, `None` if tolerated forever.
pub fn eviction_time(pod: &Pod, taints: &[Taint]) -> Option<DateTime<Utc>> {
    let tolerations = pod.spec.as_ref().and_then(|s| s.tolerations.clone()).unwrap_or_default();
    let mut when: Option<DateTime<Utc>> = None;
    for taint in taints.iter().filter(|t| t.effect == "NoExecute") {
        let added = taint.time_added.as_ref().and_then(|t| parse_time(&t.0.to_string())).unwrap_or_else(Utc::now);
        let matching: Vec<_> = tolerations.iter().filter(|t| tolerates(t, taint)).collect();
        let deadline = if matching.is_empty() {
            Some(added)
        } else if matching.iter().any(|t| t.toleration_seconds.is_none()) {
            None
        } else {
            let secs = matching.iter().filter_map(|t| t.toleration_seconds).min().unwrap_or(0).max(0);
            Some(added + chrono::Duration::seconds(secs))
        };
        if let Some(d) = deadline {
            when = Some(when.map_or(d, |w| w.min(d)));
        }
    }
    when
}

async fn evict(ctx: &Ctx, nodes: &Store<Node>, pods: &Store<Pod>, now: DateTime<Utc>) {
    for node in nodes.state() {
        let taints: Vec<Taint> = node.spec.as_ref().and_then(|s| s.taints.clone()).unwrap_or_default();
        if !taints.iter().any(|t| t.effect == "NoExecute") {
            continue;
        }
        let name = node.metadata.name.as_deref().unwrap_or_default();
        for pod in pods.state() {
            let on_node = pod.spec.as_ref().and_then(|s| s.node_name.as_deref()) == Some(name);
            if !on_node || pod.metadata.deletion_timestamp.is_some() {
                continue;
            }
            if eviction_time(&pod, &taints).is_some_and(|t| t <= now) {
                delete(ctx, &pod, name).await;
            }
        }
    }
}

async fn delete(ctx: &Ctx, pod: &Pod, node: &str) {
    let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
    let name = pod.metadata.name.as_deref().unwrap_or_default();
    let api = Api::<Pod>::namespaced(ctx.client.clone(), ns);
    let dp = DeleteParams { preconditions: Some(Preconditions { uid: pod.metadata.uid.clone(), resource_version: None }), ..Default::default() };
    match api.delete(name, &dp).await {
        Ok(_) => {
            tracing::info!(pod = %format!("{ns}/{name}"), node, "evicting pod from a tainted node");
            crate::podutil::event(ctx, pod, true, "TaintManagerEviction", "Delete", format!("Marking for deletion Pod {ns}/{name}")).await;
        }
        Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => {}
        Err(e) => tracing::warn!(pod = %format!("{ns}/{name}"), error = %e, "evicting a pod failed"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{PodSpec, Toleration};

    #[test]
    fn taints_follow_readiness() {
        let other = json!({"key": "dedicated", "effect": "NoSchedule"});
        let t = desired_taints(std::slice::from_ref(&other), "Unknown", "T1");
        assert_eq!(t.len(), 3);
        assert!(t.iter().any(|x| x["key"] == UNREACHABLE && x["effect"] == "NoExecute" && x["timeAdded"] == "T1"));
        // timeAdded is kept on later passes.
        let again = desired_taints(&t, "Unknown", "T2");
        assert_eq!(again, t);
        let back = desired_taints(&t, "True", "T3");
        assert_eq!(back, vec![other.clone()]);
        let nr = desired_taints(&[], "False", "T4");
        assert!(nr.iter().all(|x| x["key"] == NOT_READY));
    }

    #[test]
    fn eviction_honours_tolerations() {
        let added = Utc::now() - chrono::Duration::seconds(10);
        let taint: Taint = serde_json::from_value(json!({"key": UNREACHABLE, "effect": "NoExecute", "timeAdded": added.to_rfc3339()})).unwrap();
        let pod = |tols: Vec<Toleration>| Pod { spec: Some(PodSpec { tolerations: Some(tols), ..Default::default() }), ..Default::default() };
        let t = |secs: Option<i64>| Toleration { key: Some(UNREACHABLE.into()), operator: Some("Exists".into()), effect: Some("NoExecute".into()), toleration_seconds: secs, ..Default::default() };
        let none = eviction_time(&pod(vec![]), std::slice::from_ref(&taint)).unwrap();
        assert!((none - added).num_seconds().abs() <= 1);
        let five = eviction_time(&pod(vec![t(Some(5))]), std::slice::from_ref(&taint)).unwrap();
        assert!(five <= Utc::now());
        let long = eviction_time(&pod(vec![t(Some(300))]), std::slice::from_ref(&taint)).unwrap();
        assert!(long > Utc::now());
        assert!(eviction_time(&pod(vec![t(None)]), std::slice::from_ref(&taint)).is_none());
    }
}
