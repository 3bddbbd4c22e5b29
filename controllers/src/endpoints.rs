//! The EndpointSlice controller (upstream's `endpointslice`) and the Endpoints controller
//! (upstream's `endpoints`): both follow Services that have a selector and publish the
//! addresses of the pods it selects. Services without a selector are left alone (their
//! Endpoints are the user's).
//!
//! Each is a `Controller` over Services that also watches pods: a pod event wakes the
//! Services of its namespace whose selector matches it, and those that listed it last time
//! (so a pod relabelled away or deleted leaves at once). Each reconcile lists the selected
//! pods live and computes their endpoints: a pod with an IP (of the Service's first IP
//! family) that has not finished; `ready` is the pod's Ready condition (and not
//! terminating), `serving` the Ready condition alone, `terminating` its deletion; with
//! `publishNotReadyAddresses` every endpoint is ready. Ports are resolved per pod from each
//! Service port's `targetPort`: a number, or the name of a container port (a pod without
//! that named port gets no such port), or the port itself when unset.
//!
//! - **EndpointSlices** (discovery.k8s.io/v1): endpoints grouped by their resolved port
//!   set, at most 100 a slice (upstream's `--max-endpoints-per-slice` default), each with
//!   `addresses`, `conditions`, `nodeName`, `targetRef` and `hostname` (for a pod whose
//!   `subdomain` is the Service); named `<service>-<random>` (generateName), labelled
//!   `kubernetes.io/service-name`, `endpointslice.kubernetes.io/managed-by:
//!   endpointslice-controller.k8s.io` (plus the Service's labels and
//!   `service.kubernetes.io/headless` for headless Services), owned by the Service (the
//!   garbage collector removes them with it). A Service selecting nothing has one empty
//!   placeholder slice, as upstream. Existing slices are reused (same ports first), updated
//!   only when they differ, surplus ones deleted.
//! - **Endpoints** (core/v1) named as the Service, with `subsets` grouping ready
//!   `addresses` and `notReadyAddresses` by port set (terminating pods left out unless
//!   `publishNotReadyAddresses`), labelled `endpointslice.kubernetes.io/skip-mirror: "true"`
//!   so the mirroring controller ignores them; deleted when their Service is deleted.
//!
//! Not done: topology (`zone`, hints), `endpoints.kubernetes.io/last-change-trigger-time`,
//! the 1000-address truncation of Endpoints, dual-stack (one address family per Service).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Endpoints, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use kube::runtime::controller::Action;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::{watcher, Controller, WatchStreamExt};
use kube::ResourceExt;
use serde_json::{json, Value};

use crate::podutil;
use crate::Ctx;

pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";
pub const MANAGED_BY_LABEL: &str = "endpointslice.kubernetes.io/managed-by";
pub const MANAGED_BY: &str = "endpointslice-controller.k8s.io";
pub const SKIP_MIRROR_LABEL: &str = "endpointslice.kubernetes.io/skip-mirror";
pub const HEADLESS_LABEL: &str = "service.kubernetes.io/headless";
const MAX_PER_SLICE: usize = 100;
const RETRY: Duration = Duration::from_secs(1);

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0} for service {1}: {2}")]
    Api(&'static str, String, #[source] kube::Error),
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Kind {
    Slices,
    Endpoints,
}

impl Kind {
    fn manager(self) -> &'static str {
        match self {
            Kind::Slices => "endpointslice-controller",
            Kind::Endpoints => "endpoint-controller",
        }
    }
}

/// One controller's state: which pods each Service listed last time ((namespace, service)
/// → pod names), so that an event about a pod that left wakes the Service too.
struct Data {
    ctx: Arc<Ctx>,
    kind: Kind,
    members: Mutex<HashMap<(String, String), BTreeSet<String>>>,
}

pub async fn run_endpoint_slices(ctx: Arc<Ctx>) -> Result<(), crate::Error> {
    run_for(ctx, Kind::Slices).await
}

pub async fn run_endpoints(ctx: Arc<Ctx>) -> Result<(), crate::Error> {
    run_for(ctx, Kind::Endpoints).await
}

async fn run_for(ctx: Arc<Ctx>, kind: Kind) -> Result<(), crate::Error> {
    let services: Api<Service> = Api::all(ctx.client.clone());
    let pods: Api<Pod> = Api::all(ctx.client.clone());
    let data = Arc::new(Data { ctx: ctx.clone(), kind, members: Mutex::new(HashMap::new()) });
    let controller = Controller::new(services.clone(), watcher::Config::default());
    let store = controller.store();
    let mapper = {
        let (store, data) = (store.clone(), data.clone());
        move |pod: Pod| services_of(&store, &data, &pod)
    };
    let controller = controller.watches(pods, watcher::Config::default(), mapper);
    let controller = match kind {
        Kind::Slices => controller.owns(Api::<EndpointSlice>::all(ctx.client.clone()), watcher::Config::default().labels(&format!("{MANAGED_BY_LABEL}={MANAGED_BY}"))),
        Kind::Endpoints => controller.watches(Api::<Endpoints>::all(ctx.client.clone()), watcher::Config::default(), |ep: Endpoints| {
            Some(ObjectRef::<Service>::new(&ep.name_any()).within(&ep.namespace().unwrap_or_default()))
        }),
    };
    let main = controller.run(reconcile, error_policy, data).for_each(|res| async move {
        if let Err(e) = res {
            tracing::trace!(error = %e, "endpoints reconcile failed");
        }
    });
    match kind {
        Kind::Slices => main.await,
        Kind::Endpoints => {
            tokio::join!(main, delete_with_services(ctx, services));
        }
    }
    Ok(())
}

/// Upstream's endpoints controller deletes a Service's Endpoints when the Service goes.
async fn delete_with_services(ctx: Arc<Ctx>, services: Api<Service>) {
    let mut events = watcher(services, watcher::Config::default()).default_backoff().boxed();
    while let Some(ev) = events.next().await {
        let Ok(watcher::Event::Delete(svc)) = ev else { continue };
        let api: Api<Endpoints> = Api::namespaced(ctx.client.clone(), &svc.namespace().unwrap_or_default());
        match api.delete(&svc.name_any(), &DeleteParams::default()).await {
            Ok(_) | Err(kube::Error::Api(_)) => {}
            Err(e) => tracing::debug!(error = %e, "deleting the endpoints of a deleted service failed"),
        }
    }
}

fn error_policy(svc: Arc<Service>, err: &Error, _data: Arc<Data>) -> Action {
    tracing::debug!(service = %svc.name_any(), error = %err, "endpoints sync will be retried");
    Action::requeue(RETRY)
}

fn selector(svc: &Service) -> Option<&BTreeMap<String, String>> {
    svc.spec.as_ref()?.selector.as_ref().filter(|s| !s.is_empty())
}

/// The Services a pod event concerns.
fn services_of(store: &Store<Service>, data: &Data, pod: &Pod) -> Vec<ObjectRef<Service>> {
    let ns = pod.namespace().unwrap_or_default();
    let name = pod.name_any();
    let members = data.members.lock().unwrap_or_else(|e| e.into_inner());
    store
        .state()
        .into_iter()
        .filter(|svc| svc.namespace().as_deref() == Some(ns.as_str()))
        .filter(|svc| {
            let listed = members.get(&(ns.clone(), svc.name_any())).is_some_and(|m| m.contains(&name));
            listed || selector(svc).is_some_and(|sel| sel.iter().all(|(k, v)| pod.labels().get(k) == Some(v)))
        })
        .map(|svc| ObjectRef::from_obj(&*svc))
        .collect()
}

/// One endpoint: a pod's address with its conditions and resolved ports.
#[derive(Debug, Clone, PartialEq)]
struct Ep {
    ip: String,
    pod: String,
    uid: String,
    node: Option<String>,
    hostname: Option<String>,
    ready: bool,
    serving: bool,
    terminating: bool,
    /// (name, port, protocol, appProtocol), in the Service's port order.
    ports: Vec<Value>,
}

fn is_ipv6(ip: &str) -> bool {
    ip.contains(':')
}

/// The container port named `name` for `protocol` (upstream's `FindPort`).
fn find_port(pod: &Pod, name: &str, protocol: &str) -> Option<i32> {
    pod.spec.as_ref()?.containers.iter().flat_map(|c| c.ports.iter().flatten()).find_map(|p| {
        (p.name.as_deref() == Some(name) && p.protocol.as_deref().unwrap_or("TCP") == protocol).then_some(p.container_port)
    })
}

/// The endpoints of `svc` among `pods` (already selected by its selector).
fn endpoints_of(svc: &Service, pods: &[Pod], kind: Kind) -> Vec<Ep> {
    let spec = svc.spec.clone().unwrap_or_default();
    let publish_not_ready = spec.publish_not_ready_addresses.unwrap_or(false);
    let v6 = spec.ip_families.as_ref().and_then(|f| f.first()).is_some_and(|f| f == "IPv6");
    let mut out = Vec::new();
    for pod in pods {
        let status = pod.status.clone().unwrap_or_default();
        if matches!(status.phase.as_deref(), Some("Succeeded") | Some("Failed")) {
            continue;
        }
        let terminating = pod.metadata.deletion_timestamp.is_some();
        if terminating && kind == Kind::Endpoints && !publish_not_ready {
            continue;
        }
        let ips = status.pod_ips.iter().flatten().map(|p| p.ip.clone()).chain(status.pod_ip.clone());
        let Some(ip) = ips.filter(|ip| !ip.is_empty()).find(|ip| is_ipv6(ip) == v6) else { continue };
        let pod_ready = podutil::is_ready(pod);
        let mut ports = Vec::new();
        for sp in spec.ports.iter().flatten() {
            let protocol = sp.protocol.clone().unwrap_or_else(|| "TCP".into());
            let port = match &sp.target_port {
                None => Some(sp.port),
                Some(IntOrString::Int(i)) => Some(*i),
                Some(IntOrString::String(s)) => s.parse().ok().or_else(|| find_port(pod, s, &protocol)),
            };
            let Some(port) = port else { continue };
            ports.push(json!({"name": sp.name.clone().unwrap_or_default(), "port": port, "protocol": protocol, "appProtocol": sp.app_protocol}));
        }
        let pspec = pod.spec.as_ref();
        let hostname = pspec
            .filter(|s| s.subdomain.as_deref() == Some(svc.name_any().as_str()))
            .and_then(|s| s.hostname.clone())
            .filter(|h| !h.is_empty());
        out.push(Ep {
            ip,
            pod: pod.name_any(),
            uid: pod.uid().unwrap_or_default(),
            node: pspec.and_then(|s| s.node_name.clone()).filter(|n| !n.is_empty()),
            hostname,
            ready: publish_not_ready || (pod_ready && !terminating),
            serving: publish_not_ready || pod_ready,
            terminating,
            ports,
        });
    }
    out.sort_by(|a, b| a.pod.cmp(&b.pod));
    out
}

fn is_headless(svc: &Service) -> bool {
    svc.spec.as_ref().and_then(|s| s.cluster_ip.as_deref()) == Some("None")
}

/// The labels of the objects published for `svc`.
fn labels_for(svc: &Service, kind: Kind) -> BTreeMap<String, String> {
    let mut labels = svc.labels().clone();
    labels.remove(HEADLESS_LABEL);
    if is_headless(svc) {
        labels.insert(HEADLESS_LABEL.into(), String::new());
    }
    match kind {
        Kind::Slices => {
            labels.insert(SERVICE_NAME_LABEL.into(), svc.name_any());
            labels.insert(MANAGED_BY_LABEL.into(), MANAGED_BY.into());
        }
        Kind::Endpoints => {
            labels.insert(SKIP_MIRROR_LABEL.into(), "true".into());
        }
    }
    labels
}

fn target_ref(svc: &Service, e: &Ep) -> Value {
    json!({"kind": "Pod", "namespace": svc.namespace(), "name": e.pod, "uid": e.uid})
}

/// The desired slices' (ports, endpoints), grouped by port set, at most 100 endpoints each.
fn desired_slices(svc: &Service, eps: &[Ep]) -> Vec<(Value, Vec<Value>)> {
    let mut groups: BTreeMap<String, (Value, Vec<Value>)> = BTreeMap::new();
    for e in eps {
        let ports = json!(e.ports);
        let endpoint = json!({
            "addresses": [e.ip],
            "conditions": {"ready": e.ready, "serving": e.serving, "terminating": e.terminating},
            "hostname": e.hostname, "nodeName": e.node, "targetRef": target_ref(svc, e),
        });
        groups.entry(ports.to_string()).or_insert_with(|| (ports, Vec::new())).1.push(endpoint);
    }
    let mut out = Vec::new();
    for (_, (ports, endpoints)) in groups {
        for chunk in endpoints.chunks(MAX_PER_SLICE) {
            out.push((ports.clone(), chunk.to_vec()));
        }
    }
    if out.is_empty() {
        out.push((json!([]), Vec::new()));
    }
    out
}

/// A value without nulls, for comparing what we want with what the server stored.
fn strip_nulls(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(m.iter().filter(|(_, v)| !v.is_null()).map(|(k, v)| (k.clone(), strip_nulls(v))).collect()),
        Value::Array(a) => Value::Array(a.iter().map(strip_nulls).collect()),
        other => other.clone(),
    }
}

/// The part of a slice this controller manages, normalized.
fn slice_content(labels: &Value, ports: &Value, endpoints: &Value) -> Value {
    let ports: Vec<Value> = ports
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
        .collect();
    strip_nulls(&json!({"labels": labels, "ports": ports, "endpoints": endpoints.as_array().cloned().unwrap_or_default()}))
}

async fn reconcile(svc: Arc<Service>, data: Arc<Data>) -> Result<Action, Error> {
    let ctx = &data.ctx;
    let name = svc.name_any();
    let ns = svc.namespace().unwrap_or_default();
    let key = (ns.clone(), name.clone());
    let Some(sel) = selector(&svc) else {
        data.members.lock().unwrap_or_else(|e| e.into_inner()).remove(&key);
        return Ok(Action::await_change());
    };
    if svc.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), &ns);
    let label_selector = sel.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(",");
    let selected = pods.list(&ListParams::default().labels(&label_selector)).await.map_err(|e| Error::Api("listing pods", name.clone(), e))?.items;
    let eps = endpoints_of(&svc, &selected, data.kind);
    data.members.lock().unwrap_or_else(|e| e.into_inner()).insert(key, eps.iter().map(|e| e.pod.clone()).collect());
    match data.kind {
        Kind::Slices => sync_slices(&data, &svc, &eps).await?,
        Kind::Endpoints => sync_endpoints(&data, &svc, &eps).await?,
    }
    Ok(Action::await_change())
}

async fn sync_slices(data: &Data, svc: &Service, eps: &[Ep]) -> Result<(), Error> {
    let name = svc.name_any();
    let ns = svc.namespace().unwrap_or_default();
    let api: Api<EndpointSlice> = Api::namespaced(data.ctx.client.clone(), &ns);
    let lp = ListParams::default().labels(&format!("{SERVICE_NAME_LABEL}={name},{MANAGED_BY_LABEL}={MANAGED_BY}"));
    let uid = svc.uid().unwrap_or_default();
    let mut existing: Vec<EndpointSlice> = api
        .list(&lp)
        .await
        .map_err(|e| Error::Api("listing endpointslices", name.clone(), e))?
        .items
        .into_iter()
        .filter(|s| podutil::controller_of(s.owner_references()).is_some_and(|r| r.uid == uid))
        .collect();
    existing.sort_by_key(|s| s.name_any());
    let address_type = if svc.spec.as_ref().and_then(|s| s.ip_families.as_ref()).and_then(|f| f.first()).is_some_and(|f| f == "IPv6") { "IPv6" } else { "IPv4" };
    let labels = json!(labels_for(svc, Kind::Slices));
    let desired = desired_slices(svc, eps);
    let existing_ports = |s: &EndpointSlice| slice_content(&json!({}), &json!(s.ports), &json!([]))["ports"].clone();
    // Pair each desired slice with an existing one: same ports first, then any of its type.
    let mut used = vec![false; existing.len()];
    let mut pairs: Vec<Option<usize>> = Vec::new();
    for (ports, _) in &desired {
        let want_ports = slice_content(&json!({}), ports, &json!([]))["ports"].clone();
        let pick = (0..existing.len()).find(|&i| !used[i] && existing[i].address_type == address_type && existing_ports(&existing[i]) == want_ports);
        if let Some(i) = pick {
            used[i] = true;
        }
        pairs.push(pick);
    }
    for p in pairs.iter_mut().filter(|p| p.is_none()) {
        if let Some(i) = (0..existing.len()).find(|&i| !used[i] && existing[i].address_type == address_type) {
            used[i] = true;
            *p = Some(i);
        }
    }
    let pp = PostParams { field_manager: Some(data.kind.manager().into()), ..Default::default() };
    for ((ports, endpoints), pick) in desired.iter().zip(pairs) {
        let want = slice_content(&labels, ports, &json!(endpoints));
        let body = |base: Value| -> Result<EndpointSlice, Error> {
            let mut v = base;
            v["apiVersion"] = json!("discovery.k8s.io/v1");
            v["kind"] = json!("EndpointSlice");
            v["metadata"]["labels"] = labels.clone();
            v["addressType"] = json!(address_type);
            v["ports"] = ports.clone();
            v["endpoints"] = json!(endpoints);
            serde_json::from_value(strip_nulls(&v))
                .map_err(|e| Error::Api("building an endpointslice", name.clone(), kube::Error::SerdeError(e)))
        };
        match pick {
            Some(i) => {
                let cur = &existing[i];
                let have = slice_content(&json!(cur.labels()), &json!(cur.ports), &json!(cur.endpoints));
                if have == want {
                    continue;
                }
                let slice = body(serde_json::to_value(cur).unwrap_or_default())?;
                api.replace(&cur.name_any(), &pp, &slice).await.map_err(|e| Error::Api("updating an endpointslice", name.clone(), e))?;
            }
            None => {
                let base = json!({"metadata": {"generateName": format!("{name}-"), "namespace": ns,
                    "ownerReferences": [podutil::controller_ref(svc)]}});
                let slice = body(base)?;
                api.create(&pp, &slice).await.map_err(|e| Error::Api("creating an endpointslice", name.clone(), e))?;
            }
        }
    }
    for s in existing.iter().zip(&used).filter(|(_, u)| !**u).map(|(s, _)| s) {
        match api.delete(&s.name_any(), &DeleteParams::default()).await {
            Ok(_) | Err(kube::Error::Api(_)) => {}
            Err(e) => return Err(Error::Api("deleting an endpointslice", name, e)),
        }
    }
    Ok(())
}

/// One subset being built: (ports, ready addresses, not-ready addresses).
type Subset = (Vec<Value>, Vec<Value>, Vec<Value>);

/// The Endpoints `subsets`: addresses grouped by port set (upstream's `RepackSubsets`).
fn subsets(svc: &Service, eps: &[Ep]) -> Vec<Value> {
    let mut groups: BTreeMap<String, Subset> = BTreeMap::new();
    let headless_no_ports = is_headless(svc) && svc.spec.as_ref().and_then(|s| s.ports.as_ref()).is_none_or(|p| p.is_empty());
    for e in eps {
        if e.ports.is_empty() && !headless_no_ports {
            continue;
        }
        let ports: Vec<Value> = e
            .ports
            .iter()
            .map(|p| {
                let mut p = p.clone();
                if p["name"] == "" {
                    p["name"] = Value::Null;
                }
                strip_nulls(&p)
            })
            .collect();
        let key = json!(ports).to_string();
        let addr = strip_nulls(&json!({"ip": e.ip, "hostname": e.hostname, "nodeName": e.node, "targetRef": target_ref(svc, e)}));
        let entry = groups.entry(key).or_insert_with(|| (ports, Vec::new(), Vec::new()));
        if e.ready {
            entry.1.push(addr);
        } else {
            entry.2.push(addr);
        }
    }
    groups
        .into_values()
        .map(|(ports, mut ready, mut not_ready)| {
            for list in [&mut ready, &mut not_ready] {
                list.sort_by(|a, b| a["ip"].as_str().cmp(&b["ip"].as_str()));
            }
            let some = |l: Vec<Value>| if l.is_empty() { Value::Null } else { json!(l) };
            strip_nulls(&json!({"addresses": some(ready), "notReadyAddresses": some(not_ready), "ports": some(ports)}))
        })
        .collect()
}

async fn sync_endpoints(data: &Data, svc: &Service, eps: &[Ep]) -> Result<(), Error> {
    let name = svc.name_any();
    let ns = svc.namespace().unwrap_or_default();
    let api: Api<Endpoints> = Api::namespaced(data.ctx.client.clone(), &ns);
    let labels = labels_for(svc, Kind::Endpoints);
    let want = subsets(svc, eps);
    let pp = PostParams { field_manager: Some(data.kind.manager().into()), ..Default::default() };
    let current = api.get_opt(&name).await.map_err(|e| Error::Api("reading the endpoints", name.clone(), e))?;
    let mut v = match &current {
        Some(cur) => {
            let have: Vec<Value> = cur.subsets.iter().flatten().map(|s| strip_nulls(&serde_json::to_value(s).unwrap_or_default())).collect();
            if have == want && *cur.labels() == labels {
                return Ok(());
            }
            serde_json::to_value(cur).unwrap_or_default()
        }
        None => json!({"apiVersion": "v1", "kind": "Endpoints", "metadata": {"name": name, "namespace": ns}}),
    };
    v["metadata"]["labels"] = json!(labels);
    v["subsets"] = if want.is_empty() { Value::Null } else { json!(want) };
    let ep: Endpoints = serde_json::from_value(strip_nulls(&v)).map_err(|e| Error::Api("building the endpoints", name.clone(), kube::Error::SerdeError(e)))?;
    match current {
        Some(_) => api.replace(&name, &pp, &ep).await.map(|_| ()),
        None => api.create(&pp, &ep).await.map(|_| ()),
    }
    .map_err(|e| Error::Api("writing the endpoints", name, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn svc(extra: Value) -> Service {
        let mut v = json!({"metadata": {"name": "web", "namespace": "default", "uid": "s-1", "labels": {"app": "web"}},
            "spec": {"selector": {"app": "web"}, "ports": [{"name": "http", "port": 80, "targetPort": "http", "protocol": "TCP"},
                                                        {"name": "metrics", "port": 9090, "targetPort": 9091, "protocol": "TCP"}]}});
        if let (Some(spec), Some(extra)) = (v["spec"].as_object_mut(), extra.as_object()) {
            spec.extend(extra.clone());
        }
        serde_json::from_value(v).unwrap()
    }

    fn pod(name: &str, ip: &str, ready: bool, port: Option<i32>) -> Pod {
        let ports = port.map(|p| json!([{"name": "http", "containerPort": p}])).unwrap_or(json!([]));
        serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": "default", "uid": format!("u-{name}"), "labels": {"app": "web"}},
            "spec": {"nodeName": "node-a", "containers": [{"name": "c", "image": "nginx", "ports": ports}]},
            "status": {"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}],
                       "conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" }}]}
        }))
        .unwrap()
    }

    #[test]
    fn endpoints_and_named_ports() {
        let s = svc(json!({}));
        let mut gone = pod("c", "10.0.0.3", true, Some(8080));
        gone.metadata.deletion_timestamp = serde_json::from_value(json!("2024-01-01T00:00:00Z")).ok();
        let mut done = pod("d", "10.0.0.4", true, Some(8080));
        done.status.as_mut().unwrap().phase = Some("Succeeded".into());
        let pods = vec![pod("b", "10.0.0.2", false, Some(8080)), pod("a", "10.0.0.1", true, Some(8080)), gone, done, pod("e", "", true, Some(1)), pod("f", "10.0.0.6", true, None)];
        let eps = endpoints_of(&s, &pods, Kind::Slices);
        let names: Vec<&str> = eps.iter().map(|e| e.pod.as_str()).collect();
        assert_eq!(names, ["a", "b", "c", "f"]);
        assert_eq!((eps[0].ready, eps[1].ready, eps[2].ready, eps[2].serving, eps[2].terminating), (true, false, false, true, true));
        assert_eq!(eps[0].ports, vec![json!({"name": "http", "port": 8080, "protocol": "TCP", "appProtocol": null}), json!({"name": "metrics", "port": 9091, "protocol": "TCP", "appProtocol": null})]);
        // Without the named port, only the numeric one.
        assert_eq!(eps[3].ports.len(), 1);
        // Two port sets: two slices.
        let slices = desired_slices(&s, &eps);
        assert_eq!(slices.len(), 2);
        assert_eq!(slices.iter().map(|s| s.1.len()).sum::<usize>(), 4);
        // Endpoints leave terminating pods out and split ready from not ready.
        let eps = endpoints_of(&s, &pods, Kind::Endpoints);
        let subs = subsets(&s, &eps);
        assert_eq!(subs.len(), 2);
        let full = subs.iter().find(|s| s["ports"].as_array().unwrap().len() == 2).unwrap();
        assert_eq!(full["addresses"][0]["ip"], "10.0.0.1");
        assert_eq!(full["notReadyAddresses"][0]["ip"], "10.0.0.2");
        assert_eq!(full["addresses"][0]["targetRef"], json!({"kind": "Pod", "namespace": "default", "name": "a", "uid": "u-a"}));
        // publishNotReadyAddresses: all ready.
        let eps = endpoints_of(&svc(json!({"publishNotReadyAddresses": true})), &pods, Kind::Endpoints);
        assert!(eps.iter().all(|e| e.ready));
    }

    #[test]
    fn labels_and_placeholder() {
        let s = svc(json!({"clusterIP": "None"}));
        let l = labels_for(&s, Kind::Slices);
        assert_eq!(l[SERVICE_NAME_LABEL], "web");
        assert_eq!(l[MANAGED_BY_LABEL], MANAGED_BY);
        assert_eq!(l[HEADLESS_LABEL], "");
        assert_eq!(l["app"], "web");
        assert_eq!(labels_for(&s, Kind::Endpoints)[SKIP_MIRROR_LABEL], "true");
        assert_eq!(desired_slices(&s, &[]), vec![(json!([]), vec![])]);
        assert_eq!(
            slice_content(&json!({}), &json!([{"port": 80, "name": null}]), &json!(null)),
            json!({"labels": {}, "ports": [{"port": 80, "name": "", "protocol": "TCP"}], "endpoints": []})
        );
    }
}
