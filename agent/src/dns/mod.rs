//! Cluster DNS, built into every agent (there is no CoreDNS add-on).
//!
//! Each agent serves DNS on UDP and TCP port 53 of its pod bridge's gateway address (the
//! first address of the node's pod CIDR, e.g. 10.42.0.1), and publishes an EndpointSlice
//! `kube-dns-<node>` in `kube-system` for the `kube-dns` Service (whose ClusterIP,
//! `--cluster-dns`, is in every pod's resolv.conf; `krust server` creates it), so kube-proxy
//! spreads 10.43.0.10:53 over the nodes' servers.
//!
//! - [`records`]: the cluster zone from reflector caches of Services and EndpointSlices.
//! - [`forward`]: other names, relayed to the host's resolvers.
//! - [`server`]: the message handling and the UDP/TCP listeners.
//!
//! The bridge's address appears with the first pod's CNI ADD (`isGateway`); so that DNS
//! works on a node without pods too, the agent creates the bridge with the gateway address
//! itself when it is missing, the way the CNI bridge plugin would (which then finds it as it
//! left it).

pub mod forward;
pub mod records;
pub mod server;

/// The DNS wire format the server speaks, for clients that want the same (tests).
pub use hickory_proto as proto;

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Node, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{watcher, WatchStreamExt};
use serde_json::json;

use crate::Config;

/// The DNS port.
pub const PORT: u16 = 53;
/// The Service the node's servers are endpoints of (created by `krust server`).
pub const SERVICE: &str = "kube-dns";
pub const NAMESPACE: &str = "kube-system";
/// `endpointslice.kubernetes.io/managed-by` of the agents' slices.
pub const MANAGER: &str = "krust-agent";
/// How often the node's EndpointSlice is checked (and put back if it was changed or deleted).
const PUBLISH_EVERY: Duration = Duration::from_secs(30);
/// How soon a failed publication is tried again.
const PUBLISH_RETRY: Duration = Duration::from_secs(2);

/// The gateway address of a pod CIDR: its first address (`10.42.3.0/24` → 10.42.3.1).
pub fn gateway(pod_cidr: &str) -> Option<(Ipv4Addr, u8)> {
    let (net, len) = pod_cidr.split_once('/')?;
    let net: Ipv4Addr = net.parse().ok()?;
    let len: u8 = len.parse().ok().filter(|l| *l <= 30)?;
    let mask = if len == 0 { 0 } else { u32::MAX << (32 - len) };
    Some((Ipv4Addr::from((u32::from(net) & mask) + 1), len))
}

/// The node's EndpointSlice for `kube-dns`.
pub fn endpoint_slice(node: &str, node_uid: Option<&str>, ip: Ipv4Addr) -> serde_json::Value {
    let mut meta = json!({
        "name": format!("{SERVICE}-{node}"),
        "namespace": NAMESPACE,
        "labels": {
            records::SERVICE_NAME_LABEL: SERVICE,
            "endpointslice.kubernetes.io/managed-by": MANAGER,
        },
    });
    if let Some(uid) = node_uid {
        // Removed with its node by the garbage collector.
        meta["ownerReferences"] = json!([{"apiVersion": "v1", "kind": "Node", "name": node, "uid": uid}]);
    }
    json!({
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": meta,
        "addressType": "IPv4",
        "endpoints": [{
            "addresses": [ip.to_string()],
            "conditions": {"ready": true, "serving": true, "terminating": false},
            "nodeName": node,
        }],
        "ports": [
            {"name": "dns", "port": PORT, "protocol": "UDP"},
            {"name": "dns-tcp", "port": PORT, "protocol": "TCP"},
        ],
    })
}

/// Reflector caches as the zone's [`records::Catalog`].
struct Caches {
    services: Store<Service>,
    slices: Store<EndpointSlice>,
}

impl records::Catalog for Caches {
    fn services(&self) -> Vec<Arc<Service>> {
        self.services.state()
    }
    fn slices(&self) -> Vec<Arc<EndpointSlice>> {
        self.slices.state()
    }
}

/// Keeps a reflector's cache filled until dropped.
async fn reflect<K>(api: Api<K>, writer: reflector::store::Writer<K>)
where
    K: kube::Resource<DynamicType = ()> + Clone + serde::de::DeserializeOwned + std::fmt::Debug + Send + Sync + 'static,
{
    reflector::reflector(writer, watcher(api, watcher::Config::default()))
        .default_backoff()
        .for_each(|_| futures::future::ready(()))
        .await;
}

/// Runs the node's DNS server until dropped: caches, listeners (once the gateway address
/// exists) and the EndpointSlice.
pub async fn run(client: kube::Client, config: Arc<Config>, pod_cidr: String) {
    let Some((gw, prefix)) = gateway(&pod_cidr) else {
        tracing::error!(pod_cidr, "dns: no IPv4 gateway in the pod CIDR; cluster DNS is not served on this node");
        return;
    };
    let (services, services_w) = reflector::store();
    let (slices, slices_w) = reflector::store();
    let ready = Arc::new(AtomicBool::new(false));
    let mut exclude = vec![IpAddr::V4(gw)];
    exclude.extend(config.cluster_dns);
    let handler = Arc::new(server::Handler {
        zone: records::Zone::new(&config.cluster_domain),
        catalog: Arc::new(Caches { services: services.clone(), slices: slices.clone() }),
        upstreams: forward::Upstreams { resolv_conf: "/etc/resolv.conf".into(), exclude },
        ready: ready.clone(),
    });
    let caches_ready = async {
        let _ = tokio::join!(services.wait_until_ready(), slices.wait_until_ready());
        ready.store(true, Ordering::Relaxed);
        tracing::debug!("dns: caches ready");
        futures::future::pending::<()>().await
    };
    let serve = async {
        let (udp, tcp) = bind(gw, prefix, &config.cni_bridge).await;
        tracing::info!(address = %gw, "cluster DNS listening on port {PORT}");
        tokio::join!(server::serve_udp(udp, handler.clone()), server::serve_tcp(tcp, handler.clone()), publish(client.clone(), config.node_name.clone(), gw));
    };
    tokio::join!(
        reflect(Api::<Service>::all(client.clone()), services_w),
        reflect(Api::<EndpointSlice>::all(client.clone()), slices_w),
        caches_ready,
        serve,
    );
}

/// Binds UDP and TCP port 53 on the gateway address, creating the bridge with that address
/// when it is missing, and retrying every second until the address exists.
async fn bind(gw: Ipv4Addr, prefix: u8, bridge: &str) -> (tokio::net::UdpSocket, tokio::net::TcpListener) {
    let addr = SocketAddr::from((gw, PORT));
    let mut logged = false;
    loop {
        let err = match tokio::net::UdpSocket::bind(addr).await {
            Ok(udp) => match tokio::net::TcpListener::bind(addr).await {
                Ok(tcp) => return (udp, tcp),
                Err(e) => e,
            },
            Err(e) => e,
        };
        if err.kind() == std::io::ErrorKind::AddrNotAvailable {
            if let Err(e) = ensure_bridge(bridge, gw, prefix).await {
                tracing::debug!(error = %e, bridge, "dns: preparing the bridge");
            }
        }
        if !logged {
            tracing::info!(%addr, error = %err, "dns: cannot listen yet; retrying every second");
            logged = true;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

async fn ip(args: &[&str]) -> Result<String, String> {
    let out = tokio::process::Command::new("ip").args(args).output().await.map_err(|e| format!("running ip: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).to_string())
    } else {
        Err(format!("ip {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim()))
    }
}

/// The bridge as the CNI bridge plugin leaves it with `isGateway`: up, holding the gateway
/// address. A bridge holding another IPv4 address is left alone.
async fn ensure_bridge(bridge: &str, gw: Ipv4Addr, prefix: u8) -> Result<(), String> {
    if ip(&["link", "show", "dev", bridge]).await.is_err() {
        // Another creator (the CNI plugin) may win the race: then "exists" is fine.
        let _ = ip(&["link", "add", "name", bridge, "type", "bridge"]).await;
    }
    let addrs = ip(&["-4", "-o", "addr", "show", "dev", bridge]).await?;
    if !addrs.contains(" inet ") {
        ip(&["addr", "add", &format!("{gw}/{prefix}"), "dev", bridge]).await?;
        tracing::info!(bridge, address = %gw, "dns: created the pod bridge's gateway address");
    }
    ip(&["link", "set", "dev", bridge, "up"]).await.map(|_| ())
}

/// Keeps the node's `kube-dns-<node>` EndpointSlice as it should be (server-side apply).
async fn publish(client: kube::Client, node: String, gw: Ipv4Addr) {
    let api: Api<EndpointSlice> = Api::namespaced(client.clone(), NAMESPACE);
    let name = format!("{SERVICE}-{node}");
    loop {
        let uid = Api::<Node>::all(client.clone()).get_opt(&node).await.ok().flatten().and_then(|n| n.metadata.uid);
        let want = endpoint_slice(&node, uid.as_deref(), gw);
        let current = api.get_opt(&name).await;
        let up_to_date = match &current {
            Ok(Some(s)) => serde_json::to_value(s).map(|v| same_slice(&v, &want)).unwrap_or(false),
            _ => false,
        };
        let mut wait = PUBLISH_EVERY;
        if !up_to_date {
            match api.patch(&name, &PatchParams::apply(MANAGER).force(), &Patch::Apply(&want)).await {
                Ok(_) => tracing::info!(slice = name, address = %gw, "dns: published the node's kube-dns endpoint"),
                Err(e) => {
                    // Without the slice no pod resolves through this node: try again soon.
                    tracing::warn!(error = %e, slice = name, "dns: publishing the node's kube-dns endpoint");
                    wait = PUBLISH_RETRY;
                }
            }
        }
        tokio::time::sleep(wait).await;
    }
}

/// Whether a stored slice has what `want` says (labels, endpoints, ports, address type).
fn same_slice(have: &serde_json::Value, want: &serde_json::Value) -> bool {
    let labels_ok = want["metadata"]["labels"].as_object().into_iter().flatten().all(|(k, v)| have["metadata"]["labels"][k] == *v);
    let endpoint = |v: &serde_json::Value| {
        let e = &v["endpoints"][0];
        (e["addresses"].clone(), e["conditions"]["ready"].clone(), e["nodeName"].clone(), v["endpoints"].as_array().map(Vec::len))
    };
    let ports = |v: &serde_json::Value| {
        let mut p: BTreeMap<String, (serde_json::Value, serde_json::Value)> = BTreeMap::new();
        for port in v["ports"].as_array().into_iter().flatten() {
            p.insert(port["name"].as_str().unwrap_or_default().to_string(), (port["port"].clone(), port["protocol"].clone()));
        }
        p
    };
    labels_ok && have["addressType"] == want["addressType"] && endpoint(have) == endpoint(want) && ports(have) == ports(want)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gateways() {
        assert_eq!(gateway("10.42.201.0/24"), Some(("10.42.201.1".parse().unwrap(), 24)));
        assert_eq!(gateway("10.42.0.0/16"), Some(("10.42.0.1".parse().unwrap(), 16)));
        assert_eq!(gateway("fd00::/64"), None);
    }

    #[test]
    fn the_nodes_slice() {
        let s = endpoint_slice("n1", Some("u1"), "10.42.0.1".parse().unwrap());
        assert_eq!(s["metadata"]["name"], "kube-dns-n1");
        assert_eq!(s["metadata"]["labels"]["kubernetes.io/service-name"], "kube-dns");
        assert_eq!(s["endpoints"][0]["addresses"][0], "10.42.0.1");
        let typed: EndpointSlice = serde_json::from_value(s.clone()).unwrap();
        assert_eq!(typed.ports.unwrap().len(), 2);
        assert!(same_slice(&s, &s));
        let mut other = s.clone();
        other["endpoints"][0]["addresses"][0] = json!("10.42.9.1");
        assert!(!same_slice(&other, &s));
    }
}
