//! The EndpointSlice mirroring controller (upstream's `endpointslice-mirroring`): custom
//! Endpoints — those of a Service without a selector, which the user writes — are mirrored
//! into EndpointSlices, so that consumers of slices (kube-proxy) see them too.
//!
//! An Endpoints object is mirrored when a Service of the same name exists in its namespace
//! and has no selector, the Endpoints is not labelled
//! `endpointslice.kubernetes.io/skip-mirror: "true"` (the Endpoints controller labels its
//! own that way) and is not a leader-election lock (annotation
//! `control-plane.alpha.kubernetes.io/leader`). Otherwise its mirrored slices are deleted.
//!
//! A `Controller` over Endpoints that also watches Services (a Service created, given or
//! stripped of a selector, or deleted wakes the Endpoints of its name) and the slices it
//! owns. Each subset's ports become a slice's `ports` (name, port, protocol, appProtocol);
//! its `addresses` become endpoints with `ready: true`, its `notReadyAddresses` endpoints
//! with `ready: false`, each with `hostname`, `nodeName` and `targetRef`. Subsets with the
//! same ports share slices, split by address family (IPv4/IPv6, from the address) and at
//! most 1000 endpoints a slice (upstream's `--mirroring-max-endpoints-per-subset` default).
//! Slices are named `<endpoints>-<random>` (generateName), labelled with the Endpoints'
//! labels plus `kubernetes.io/service-name` and `endpointslice.kubernetes.io/managed-by:
//! endpointslicemirroring-controller.k8s.io`, and owned by the Endpoints (the garbage
//! collector removes them with it; this controller also deletes them when it sees the
//! Endpoints go). Existing slices are reused (same ports first), updated only when they
//! differ, surplus ones deleted.
//!
//! Not done: mirroring of annotations, truncation of over-long subsets
//! (`endpoints.kubernetes.io/over-capacity`), the per-Endpoints rate limiting.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{EndpointAddress, Endpoints, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use kube::runtime::controller::Action;
use kube::runtime::reflector::ObjectRef;
use kube::runtime::{watcher, Controller, WatchStreamExt};
use kube::ResourceExt;
use serde_json::{json, Value};

use crate::endpoints::{MANAGED_BY_LABEL, SERVICE_NAME_LABEL, SKIP_MIRROR_LABEL};
use crate::podutil;
use crate::Ctx;

pub const MANAGED_BY: &str = "endpointslicemirroring-controller.k8s.io";
const MANAGER: &str = "endpointslicemirroring-controller";
const LEADER_ANNOTATION: &str = "control-plane.alpha.kubernetes.io/leader";
const MAX_PER_SLICE: usize = 1000;
const RETRY: Duration = Duration::from_secs(1);

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0} for endpoints {1}: {2}")]
    Api(&'static str, String, #[source] kube::Error),
}

pub async fn run(ctx: Arc<Ctx>) -> Result<(), crate::Error> {
    let endpoints: Api<Endpoints> = Api::all(ctx.client.clone());
    let services: Api<Service> = Api::all(ctx.client.clone());
    let slices: Api<EndpointSlice> = Api::all(ctx.client.clone());
    let controller = Controller::new(endpoints.clone(), watcher::Config::default())
        .watches(services, watcher::Config::default(), |svc: Service| {
            Some(ObjectRef::<Endpoints>::new(&svc.name_any()).within(&svc.namespace().unwrap_or_default()))
        })
        .owns(slices, watcher::Config::default().labels(&format!("{MANAGED_BY_LABEL}={MANAGED_BY}")));
    let main = controller.run(reconcile, error_policy, ctx.clone()).for_each(|res| async move {
        if let Err(e) = res {
            tracing::trace!(error = %e, "endpointslice mirroring reconcile failed");
        }
    });
    tokio::join!(main, delete_with_endpoints(ctx, endpoints));
    Ok(())
}

/// A deleted Endpoints takes its mirrored slices with it (without waiting for the GC).
async fn delete_with_endpoints(ctx: Arc<Ctx>, endpoints: Api<Endpoints>) {
    let mut events = watcher(endpoints, watcher::Config::default()).default_backoff().boxed();
    while let Some(ev) = events.next().await {
        let Ok(watcher::Event::Delete(ep)) = ev else { continue };
        let api: Api<EndpointSlice> = Api::namespaced(ctx.client.clone(), &ep.namespace().unwrap_or_default());
        if let Err(e) = delete_slices(&api, &mirrored(&api, &ep.name_any()).await.unwrap_or_default()).await {
            tracing::debug!(error = %e, "deleting the mirrored slices of deleted endpoints failed");
        }
    }
}

fn error_policy(ep: Arc<Endpoints>, err: &Error, _ctx: Arc<Ctx>) -> Action {
    tracing::debug!(endpoints = %ep.name_any(), error = %err, "endpointslice mirroring will be retried");
    Action::requeue(RETRY)
}

/// The slices mirrored for the Endpoints `name` of this namespace: labelled as ours and
/// controlled by an Endpoints object. (A slice carrying our label without that owner is not
/// ours to change: krust's apiserver labels the `kubernetes` Service's slice that way.)
async fn mirrored(api: &Api<EndpointSlice>, name: &str) -> Result<Vec<EndpointSlice>, kube::Error> {
    let lp = ListParams::default().labels(&format!("{SERVICE_NAME_LABEL}={name},{MANAGED_BY_LABEL}={MANAGED_BY}"));
    let mut items: Vec<EndpointSlice> = api.list(&lp).await?.items.into_iter().filter(|s| podutil::controller_of(s.owner_references()).is_some_and(|r| r.kind == "Endpoints")).collect();
    items.sort_by_key(|s| s.name_any());
    Ok(items)
}

async fn delete_slices(api: &Api<EndpointSlice>, slices: &[EndpointSlice]) -> Result<(), kube::Error> {
    for s in slices {
        match api.delete(&s.name_any(), &DeleteParams::default()).await {
            Ok(_) | Err(kube::Error::Api(_)) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Whether `ep` is to be mirrored, given the Service of its name (upstream's
/// `shouldMirror` plus the selector check).
fn should_mirror(ep: &Endpoints, svc: Option<&Service>) -> bool {
    let Some(svc) = svc else { return false };
    if svc.metadata.deletion_timestamp.is_some() || ep.metadata.deletion_timestamp.is_some() {
        return false;
    }
    let has_selector = svc.spec.as_ref().and_then(|s| s.selector.as_ref()).is_some_and(|s| !s.is_empty());
    !has_selector && ep.labels().get(SKIP_MIRROR_LABEL).map(String::as_str) != Some("true") && !ep.annotations().contains_key(LEADER_ANNOTATION)
}

fn address_type(ip: &str) -> &'static str {
    if ip.contains(':') {
        "IPv6"
    } else {
        "IPv4"
    }
}

/// A value without nulls, for comparing what we want with what the server stored.
fn strip_nulls(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(m.iter().filter(|(_, v)| !v.is_null()).map(|(k, v)| (k.clone(), strip_nulls(v))).collect()),
        Value::Array(a) => Value::Array(a.iter().map(strip_nulls).collect()),
        other => other.clone(),
    }
}

/// Slice ports, normalized (name "" and protocol TCP when unset).
fn norm_ports(ports: &Value) -> Value {
    Value::Array(
        ports
            .as_array()
            .into_iter()
            .flatten()
            .map(|p| {
                let mut p = strip_nulls(p);
                if p.get("name").is_none() {
                    p["name"] = json!("");
                }
                if p.get("protocol").is_none() {
                    p["protocol"] = json!("TCP");
                }
                p
            })
            .collect(),
    )
}

fn endpoint(a: &EndpointAddress, ready: bool) -> Value {
    strip_nulls(&json!({
        "addresses": [a.ip],
        "conditions": {"ready": ready},
        "hostname": a.hostname.as_ref().filter(|h| !h.is_empty()),
        "nodeName": a.node_name.as_ref().filter(|n| !n.is_empty()),
        "targetRef": a.target_ref,
    }))
}

/// The desired slices: (address type, ports, endpoints), subsets with equal ports merged.
fn desired_slices(ep: &Endpoints) -> Vec<(&'static str, Value, Vec<Value>)> {
    let mut groups: BTreeMap<(&'static str, String), (Value, Vec<Value>)> = BTreeMap::new();
    for subset in ep.subsets.iter().flatten() {
        let ports = norm_ports(&json!(subset
            .ports
            .iter()
            .flatten()
            .map(|p| json!({"name": p.name.clone().unwrap_or_default(), "port": p.port, "protocol": p.protocol.clone().unwrap_or_else(|| "TCP".into()), "appProtocol": p.app_protocol}))
            .collect::<Vec<_>>()));
        let addrs = subset.addresses.iter().flatten().map(|a| (a, true)).chain(subset.not_ready_addresses.iter().flatten().map(|a| (a, false)));
        for (a, ready) in addrs {
            let at = address_type(&a.ip);
            groups.entry((at, ports.to_string())).or_insert_with(|| (ports.clone(), Vec::new())).1.push(endpoint(a, ready));
        }
    }
    let mut out = Vec::new();
    for ((at, _), (ports, endpoints)) in groups {
        for chunk in endpoints.chunks(MAX_PER_SLICE) {
            out.push((at, ports.clone(), chunk.to_vec()));
        }
    }
    out
}

fn labels_for(ep: &Endpoints) -> BTreeMap<String, String> {
    let mut labels = ep.labels().clone();
    labels.insert(SERVICE_NAME_LABEL.into(), ep.name_any());
    labels.insert(MANAGED_BY_LABEL.into(), MANAGED_BY.into());
    labels
}

/// The part of a slice this controller manages, normalized.
fn slice_content(labels: &Value, ports: &Value, endpoints: &Value) -> Value {
    strip_nulls(&json!({"labels": labels, "ports": norm_ports(ports), "endpoints": endpoints.as_array().cloned().unwrap_or_default()}))
}

async fn reconcile(ep: Arc<Endpoints>, ctx: Arc<Ctx>) -> Result<Action, Error> {
    let name = ep.name_any();
    let ns = ep.namespace().unwrap_or_default();
    let services: Api<Service> = Api::namespaced(ctx.client.clone(), &ns);
    let api: Api<EndpointSlice> = Api::namespaced(ctx.client.clone(), &ns);
    let svc = services.get_opt(&name).await.map_err(|e| Error::Api("reading the service", name.clone(), e))?;
    let existing = mirrored(&api, &name).await.map_err(|e| Error::Api("listing endpointslices", name.clone(), e))?;
    let desired = if should_mirror(&ep, svc.as_ref()) { desired_slices(&ep) } else { Vec::new() };
    let uid = ep.uid().unwrap_or_default();
    let owned = |s: &EndpointSlice| podutil::controller_of(s.owner_references()).is_some_and(|r| r.uid == uid);
    // Pair each desired slice with an existing one of ours: same ports first, then any of its type.
    let mut used: Vec<bool> = existing.iter().map(|s| !owned(s)).collect();
    let mut pairs: Vec<Option<usize>> = Vec::new();
    for (at, ports, _) in &desired {
        let pick = (0..existing.len()).find(|&i| !used[i] && existing[i].address_type == *at && norm_ports(&json!(existing[i].ports)) == *ports);
        if let Some(i) = pick {
            used[i] = true;
        }
        pairs.push(pick);
    }
    for (p, (at, _, _)) in pairs.iter_mut().zip(&desired) {
        if p.is_none() {
            if let Some(i) = (0..existing.len()).find(|&i| !used[i] && existing[i].address_type == *at) {
                used[i] = true;
                *p = Some(i);
            }
        }
    }
    // Slices of an earlier Endpoints object of this name (another uid) are surplus too.
    let surplus: Vec<EndpointSlice> = existing.iter().enumerate().filter(|(i, s)| !owned(s) || pairs.iter().all(|p| *p != Some(*i))).map(|(_, s)| s.clone()).collect();
    let labels = json!(labels_for(&ep));
    let pp = PostParams { field_manager: Some(MANAGER.into()), ..Default::default() };
    for ((at, ports, endpoints), pick) in desired.iter().zip(pairs) {
        let body = |base: Value| -> Result<EndpointSlice, Error> {
            let mut v = base;
            v["apiVersion"] = json!("discovery.k8s.io/v1");
            v["kind"] = json!("EndpointSlice");
            v["metadata"]["labels"] = labels.clone();
            v["addressType"] = json!(at);
            v["ports"] = ports.clone();
            v["endpoints"] = json!(endpoints);
            serde_json::from_value(strip_nulls(&v)).map_err(|e| Error::Api("building an endpointslice", name.clone(), kube::Error::SerdeError(e)))
        };
        match pick {
            Some(i) => {
                let cur = &existing[i];
                let have = slice_content(&json!(cur.labels()), &json!(cur.ports), &json!(cur.endpoints));
                if have == slice_content(&labels, ports, &json!(endpoints)) {
                    continue;
                }
                let slice = body(serde_json::to_value(cur).unwrap_or_default())?;
                api.replace(&cur.name_any(), &pp, &slice).await.map_err(|e| Error::Api("updating an endpointslice", name.clone(), e))?;
            }
            None => {
                let base = json!({"metadata": {"generateName": format!("{name}-"), "namespace": ns,
                    "ownerReferences": [podutil::controller_ref(&*ep)]}});
                api.create(&pp, &body(base)?).await.map_err(|e| Error::Api("creating an endpointslice", name.clone(), e))?;
            }
        }
    }
    delete_slices(&api, &surplus).await.map_err(|e| Error::Api("deleting an endpointslice", name, e))?;
    Ok(Action::await_change())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ep(extra: Value) -> Endpoints {
        let mut v = json!({"metadata": {"name": "custom", "namespace": "default", "uid": "e-1", "labels": {"team": "a"}},
            "subsets": [
                {"ports": [{"port": 80}], "addresses": [{"ip": "10.1.2.3", "nodeName": "n1"}], "notReadyAddresses": [{"ip": "10.1.2.4"}]},
                {"ports": [{"port": 80, "protocol": "TCP"}], "addresses": [{"ip": "fd00::1"}, {"ip": "10.1.2.5"}]},
                {"ports": [{"name": "dns", "port": 53, "protocol": "UDP"}], "addresses": [{"ip": "10.1.2.6"}]},
            ]});
        if let (Some(m), Some(extra)) = (v["metadata"].as_object_mut(), extra.as_object()) {
            m.extend(extra.clone());
        }
        serde_json::from_value(v).unwrap()
    }

    fn svc(selector: Value) -> Service {
        serde_json::from_value(json!({"metadata": {"name": "custom", "namespace": "default"}, "spec": {"selector": selector, "ports": [{"port": 80}]}})).unwrap()
    }

    #[test]
    fn mirrors_only_custom_endpoints() {
        let e = ep(json!({}));
        assert!(should_mirror(&e, Some(&svc(Value::Null))));
        assert!(should_mirror(&e, Some(&svc(json!({})))));
        assert!(!should_mirror(&e, None));
        assert!(!should_mirror(&e, Some(&svc(json!({"app": "x"})))));
        assert!(!should_mirror(&ep(json!({"labels": {SKIP_MIRROR_LABEL: "true"}})), Some(&svc(Value::Null))));
        assert!(!should_mirror(&ep(json!({"annotations": {LEADER_ANNOTATION: "{}"}})), Some(&svc(Value::Null))));
    }

    #[test]
    fn slices_by_ports_and_family() {
        let slices = desired_slices(&ep(json!({})));
        // port 80 (both subsets merged) IPv4 and IPv6, port 53 IPv4.
        assert_eq!(slices.len(), 3);
        let v4_80 = slices.iter().find(|(at, p, _)| *at == "IPv4" && p[0]["port"] == 80).unwrap();
        assert_eq!(v4_80.1, json!([{"name": "", "port": 80, "protocol": "TCP"}]));
        let addrs: Vec<&Value> = v4_80.2.iter().map(|e| &e["addresses"][0]).collect();
        assert_eq!(addrs, [&json!("10.1.2.3"), &json!("10.1.2.4"), &json!("10.1.2.5")]);
        assert_eq!(v4_80.2[0], json!({"addresses": ["10.1.2.3"], "conditions": {"ready": true}, "nodeName": "n1"}));
        assert_eq!(v4_80.2[1]["conditions"]["ready"], false);
        assert!(slices.iter().any(|(at, _, e)| *at == "IPv6" && e.len() == 1));
        let l = labels_for(&ep(json!({})));
        assert_eq!((l[SERVICE_NAME_LABEL].as_str(), l[MANAGED_BY_LABEL].as_str(), l["team"].as_str()), ("custom", MANAGED_BY, "a"));
    }
}
