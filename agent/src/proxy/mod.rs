//! kube-proxy on nftables: Services and their EndpointSlices become one nftables table per
//! agent (`ip krust_<node>`), rewritten whole and atomically (`nft -f`) whenever they
//! change. ClusterIP:port (and NodePort on the node's addresses) is matched through a
//! verdict map, an endpoint chosen with `numgen random`, and DNAT'ed to a ready endpoint;
//! traffic from an endpoint to its own Service (hairpin) and NodePort traffic is marked
//! and masqueraded. Routes to other nodes' pod CIDRs (host-gw) are kept in the routing
//! table. `Proxy::clean` removes the table.

mod rules;

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Node, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::Api;
use controllers::spawn_reflector;
use tokio::sync::Notify;

pub use rules::{render, Affinity, Backend, ServicePort};

/// How long changes are gathered before the table is rewritten.
const DEBOUNCE: Duration = Duration::from_millis(50);
/// Rewrites at least this often, repairing rules someone else removed.
const RESYNC: Duration = Duration::from_secs(30);

pub struct Proxy {
    table: String,
    node_name: String,
    node_ip: IpAddr,
}


/// The nftables table name of a node: letters, digits and `_` only.
pub fn table_name(node: &str) -> String {
    let clean: String = node.chars().map(|c| if c.is_ascii_alphanumeric() { c } else { '_' }).collect();
    format!("krust_{clean}")
}

impl Proxy {
    pub fn new(node_name: &str, node_ip: IpAddr) -> Proxy {
        Proxy { table: table_name(node_name), node_name: node_name.to_string(), node_ip }
    }

    /// Keeps the rules in step with the cluster forever.
    pub async fn run(self, client: kube::Client) {
        let notify = Arc::new(Notify::new());
        let services = spawn_reflector(Api::<Service>::all(client.clone()), notify.clone());
        let slices = spawn_reflector(Api::<EndpointSlice>::all(client.clone()), notify.clone());
        let nodes = spawn_reflector(Api::<Node>::all(client), notify.clone());
        let _ = tokio::join!(services.wait_until_ready(), slices.wait_until_ready(), nodes.wait_until_ready());
        let mut last = String::new();
        loop {
            let ports = service_ports(&services.state(), &slices.state());
            let text = render(&self.table, &ports, &Affinity::new());
            if text != last {
                let with_clients = if ports.iter().any(|p| p.affinity_timeout.is_some()) {
                    render(&self.table, &ports, &affinity_clients(&self.table).await)
                } else {
                    text.clone()
                };
                match apply(&with_clients).await {
                    Ok(()) => {
                        tracing::debug!(services = ports.len(), "kube-proxy rules applied");
                        last = text;
                    }
                    Err(e) => tracing::warn!(error = %e, "applying kube-proxy rules failed"),
                }
            }
            self.sync_routes(&nodes.state()).await;
            tokio::select! {
                _ = notify.notified() => tokio::time::sleep(DEBOUNCE).await,
                _ = tokio::time::sleep(RESYNC) => last.clear(),
            }
        }
    }

    /// host-gw: a route to each other node's pod CIDR through that node's address, unless
    /// the address is this machine's own (nodes sharing a host reach each other directly).
    async fn sync_routes(&self, nodes: &[Arc<Node>]) {
        for node in nodes {
            if node.metadata.name.as_deref() == Some(self.node_name.as_str()) {
                continue;
            }
            let Some(cidr) = node.spec.as_ref().and_then(|s| s.pod_cidr.clone()) else { continue };
            let Some(ip) = node
                .status
                .as_ref()
                .and_then(|s| s.addresses.as_ref())
                .and_then(|a| a.iter().find(|a| a.type_ == "InternalIP"))
                .and_then(|a| a.address.parse::<IpAddr>().ok())
            else {
                continue;
            };
            if ip == self.node_ip || is_local(ip) {
                continue;
            }
            let out = tokio::process::Command::new("ip").args(["route", "replace", &cidr, "via", &ip.to_string()]).output().await;
            if let Ok(o) = out {
                if !o.status.success() {
                    tracing::debug!(cidr, via = %ip, error = %String::from_utf8_lossy(&o.stderr), "adding a pod network route failed");
                }
            }
        }
    }

    /// Removes this agent's table (`--clean`, and tests).
    pub fn clean(node_name: &str) {
        let _ = std::process::Command::new("nft").args(["delete", "table", "ip", &table_name(node_name)]).output();
    }
}

fn is_local(ip: IpAddr) -> bool {
    ip.is_loopback() || std::net::UdpSocket::bind((ip, 0)).is_ok()
}

/// Runs `nft -f -` with the whole table: delete and re-create in one transaction, so
/// packets see either the old rules or the new ones.
async fn apply(text: &str) -> Result<(), String> {
    use tokio::io::AsyncWriteExt;
    let mut child = tokio::process::Command::new("nft")
        .args(["-f", "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| format!("running nft: {e}"))?;
    let mut stdin = child.stdin.take().ok_or("no stdin")?;
    stdin.write_all(text.as_bytes()).await.map_err(|e| e.to_string())?;
    drop(stdin);
    let out = child.wait_with_output().await.map_err(|e| e.to_string())?;
    if out.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).to_string())
    }
}

/// `sessionAffinity: ClientIP`'s timeout (upstream's default: 3 hours), or None.
fn affinity_timeout(spec: &k8s_openapi::api::core::v1::ServiceSpec) -> Option<u32> {
    if spec.session_affinity.as_deref() != Some("ClientIP") {
        return None;
    }
    let configured = spec.session_affinity_config.as_ref().and_then(|c| c.client_ip.as_ref()).and_then(|c| c.timeout_seconds);
    Some(configured.filter(|t| *t > 0).unwrap_or(10800) as u32)
}

/// The clients the affinity sets of the current table remember (empty if there is none).
async fn affinity_clients(table: &str) -> Affinity {
    let mut kept = Affinity::new();
    let Ok(out) = tokio::process::Command::new("nft").args(["-j", "list", "table", "ip", table]).output().await else { return kept };
    let Ok(doc) = serde_json::from_slice::<serde_json::Value>(&out.stdout) else { return kept };
    for item in doc["nftables"].as_array().into_iter().flatten() {
        let set = &item["set"];
        let Some(name) = set["name"].as_str().filter(|n| n.starts_with("aff-")) else { continue };
        let clients = set["elem"].as_array().into_iter().flatten().filter_map(|e| {
            let ip = e["elem"]["val"].as_str()?.parse().ok()?;
            Some((ip, e["elem"]["expires"].as_u64()?))
        });
        kept.insert(name.to_string(), clients.collect());
    }
    kept
}

/// Every Service port with a ClusterIP (or NodePort) and its ready endpoints.
pub fn service_ports(services: &[Arc<Service>], slices: &[Arc<EndpointSlice>]) -> Vec<ServicePort> {
    let mut by_service: BTreeMap<(String, String), Vec<&EndpointSlice>> = BTreeMap::new();
    for s in slices {
        let Some(svc) = s.metadata.labels.as_ref().and_then(|l| l.get("kubernetes.io/service-name")) else { continue };
        if s.address_type != "IPv4" {
            continue;
        }
        by_service.entry((s.metadata.namespace.clone().unwrap_or_default(), svc.clone())).or_default().push(s);
    }
    let mut out = Vec::new();
    for svc in services {
        let Some(spec) = svc.spec.as_ref() else { continue };
        let ip = spec.cluster_ip.clone().unwrap_or_default();
        let Ok(cluster_ip) = ip.parse::<std::net::Ipv4Addr>() else { continue };
        let ns = svc.metadata.namespace.clone().unwrap_or_default();
        let name = svc.metadata.name.clone().unwrap_or_default();
        let slices = by_service.get(&(ns.clone(), name.clone())).cloned().unwrap_or_default();
        for p in spec.ports.iter().flatten() {
            let protocol = p.protocol.clone().unwrap_or_else(|| "TCP".into()).to_lowercase();
            let mut backends = Vec::new();
            for slice in &slices {
                // An unnamed port is `""` in one object and absent in the other.
                let same_name = |sp: &k8s_openapi::api::discovery::v1::EndpointPort| sp.name.as_deref().unwrap_or("") == p.name.as_deref().unwrap_or("");
                let Some(port) = slice.ports.iter().flatten().find(|sp| same_name(sp) && sp.protocol.as_deref().unwrap_or("TCP").eq_ignore_ascii_case(&protocol)).and_then(|sp| sp.port) else { continue };
                for ep in &slice.endpoints {
                    if ep.conditions.as_ref().and_then(|c| c.ready) == Some(false) {
                        continue;
                    }
                    for a in &ep.addresses {
                        if let Ok(addr) = a.parse() {
                            backends.push(Backend { ip: addr, port: port as u16 });
                        }
                    }
                }
            }
            backends.sort();
            backends.dedup();
            out.push(ServicePort {
                id: format!("{ns}/{name}:{}", p.name.clone().unwrap_or_default()),
                cluster_ip,
                port: p.port as u16,
                protocol,
                node_port: p.node_port.filter(|n| *n > 0).map(|n| n as u16),
                backends,
                affinity_timeout: affinity_timeout(spec),
            });
        }
    }
    out
}
