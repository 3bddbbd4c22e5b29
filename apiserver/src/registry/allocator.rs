//! Service ClusterIPs and NodePorts. Each address or port handed out is reserved by creating
//! a key in the store (create-if-absent), so two API servers never hand out the same one;
//! the key names its Service, so a repair pass at start releases what no Service holds and
//! reserves what Services hold. Released when the Service goes or stops needing it.
//!
//! Runs as the Service store's hooks (upstream's generic Store `BeginCreate`/`BeginUpdate`/
//! `AfterDelete`, as its service storage uses them).

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::sync::Arc;

use async_trait::async_trait;
use kine_sqlite::{Backend, StoreError};
use serde_json::{json, Value};

use crate::error::{ApiError, ApiResult};
use crate::registry::hooks::{Reservation, StoreHooks};
use crate::validation::FieldError;

const IP_KEYS: &str = "/registry/krust/serviceips/";
const PORT_KEYS: &str = "/registry/krust/servicenodeports/";

/// Hands out ClusterIPs from a CIDR and NodePorts from a range.
pub struct ServiceAllocator {
    backend: Arc<dyn Backend>,
    network: u32,
    prefix_len: u32,
    cidr: String,
    ports: (u16, u16),
}

fn invalid(name: &str, field: String, value: Value, detail: String) -> ApiError {
    ApiError::Invalid { group: String::new(), kind: "Service".into(), name: name.to_string(), causes: vec![FieldError::invalid(field, value, detail)] }
}

/// Whether a Service needs a ClusterIP.
fn wants_ip(svc: &Value) -> bool {
    svc["spec"]["type"] != "ExternalName" && svc["spec"]["clusterIP"] != "None"
}

/// Whether a Service needs NodePorts.
fn wants_node_ports(svc: &Value) -> bool {
    matches!(svc["spec"]["type"].as_str(), Some("NodePort") | Some("LoadBalancer"))
}

fn node_ports_of(svc: &Value) -> BTreeSet<u16> {
    svc["spec"]["ports"]
        .as_array()
        .map(|ps| ps.iter().filter_map(|p| p["nodePort"].as_u64()).filter(|n| *n > 0).map(|n| n as u16).collect())
        .unwrap_or_default()
}

fn service_key(svc: &Value) -> String {
    format!(
        "/registry/services/{}/{}",
        svc["metadata"]["namespace"].as_str().unwrap_or_default(),
        svc["metadata"]["name"].as_str().unwrap_or_default()
    )
}

impl ServiceAllocator {
    /// `cidr` like `10.43.0.0/16`, `ports` like `30000-32767`.
    pub fn new(backend: Arc<dyn Backend>, cidr: &str, ports: &str) -> Result<Self, String> {
        let (addr, len) = cidr.split_once('/').ok_or_else(|| format!("service CIDR {cidr:?}: expected ADDRESS/PREFIX"))?;
        let addr: Ipv4Addr = addr.parse().map_err(|e| format!("service CIDR {cidr:?}: {e}"))?;
        let prefix_len: u32 = len.parse().ok().filter(|l| (8..=30).contains(l)).ok_or_else(|| format!("service CIDR {cidr:?}: prefix must be 8 to 30"))?;
        let mask = u32::MAX << (32 - prefix_len);
        let (lo, hi) = ports.split_once('-').ok_or_else(|| format!("node port range {ports:?}: expected FIRST-LAST"))?;
        let lo: u16 = lo.trim().parse().map_err(|e| format!("node port range {ports:?}: {e}"))?;
        let hi: u16 = hi.trim().parse().map_err(|e| format!("node port range {ports:?}: {e}"))?;
        if lo == 0 || lo > hi {
            return Err(format!("node port range {ports:?} is empty"));
        }
        Ok(ServiceAllocator { backend, network: u32::from(addr) & mask, prefix_len, cidr: cidr.to_string(), ports: (lo, hi) })
    }

    /// The first address of the range: the `kubernetes` Service's.
    pub fn first_ip(&self) -> Ipv4Addr {
        Ipv4Addr::from(self.network + 1)
    }

    fn size(&self) -> u32 {
        1u32 << (32 - self.prefix_len)
    }

    fn contains(&self, ip: Ipv4Addr) -> bool {
        let v = u32::from(ip);
        v > self.network && v < self.network + self.size() - 1
    }

    /// Reserves a free `key` for `owner`: false when it is held, by anyone.
    async fn reserve_free(&self, key: &str, owner: &str) -> ApiResult<bool> {
        match self.backend.create(key, owner.as_bytes().to_vec(), 0).await {
            Ok(_) => Ok(true),
            Err(StoreError::KeyExists) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// Reserves `key` for `owner`: false when someone else holds it.
    async fn reserve(&self, key: &str, owner: &str) -> ApiResult<bool> {
        match self.backend.create(key, owner.as_bytes().to_vec(), 0).await {
            Ok(_) => Ok(true),
            Err(StoreError::KeyExists) => {
                // Held by this very Service (a retried write): still ours.
                let (_, kv) = self.backend.get(key, 0).await?;
                Ok(kv.is_some_and(|kv| kv.value == owner.as_bytes()))
            }
            Err(e) => Err(e.into()),
        }
    }

    async fn release_key(&self, key: &str) {
        if let Err(e) = self.backend.delete(key, 0).await {
            tracing::warn!(key, error = %e, "releasing a service allocation failed");
        }
    }

    /// Picks and reserves a free address: random probes first, then a scan.
    async fn allocate_ip(&self, owner: &str) -> ApiResult<Ipv4Addr> {
        let usable = self.size() - 2;
        for _ in 0..32 {
            let ip = Ipv4Addr::from(self.network + 1 + rand_below(usable));
            // The first address is kept for the `kubernetes` Service, as upstream.
            if ip != self.first_ip() && self.reserve_free(&format!("{IP_KEYS}{ip}"), owner).await? {
                return Ok(ip);
            }
        }
        for off in 2..=usable {
            let ip = Ipv4Addr::from(self.network + off);
            if self.reserve_free(&format!("{IP_KEYS}{ip}"), owner).await? {
                return Ok(ip);
            }
        }
        Err(ApiError::internal(format!("failed to allocate a serviceIP: range {} is full", self.cidr)))
    }

    async fn allocate_port(&self, owner: &str) -> ApiResult<u16> {
        let (lo, hi) = self.ports;
        let span = u32::from(hi - lo) + 1;
        for _ in 0..32 {
            let p = lo + rand_below(span) as u16;
            if self.reserve_free(&format!("{PORT_KEYS}{p}"), owner).await? {
                return Ok(p);
            }
        }
        for p in lo..=hi {
            if self.reserve_free(&format!("{PORT_KEYS}{p}"), owner).await? {
                return Ok(p);
            }
        }
        Err(ApiError::internal(format!("failed to allocate a nodePort: range {lo}-{hi} is full")))
    }

    /// Assigns what `svc` needs and does not have yet (ClusterIP, NodePorts), reserving
    /// it; returns the keys reserved by this call, to release if the write fails.
    async fn assign(&self, svc: &mut Value, old: Option<&Value>) -> ApiResult<Vec<String>> {
        let owner = service_key(svc);
        let name = svc["metadata"]["name"].as_str().unwrap_or_default().to_string();
        let mut taken = Vec::new();
        let result = self.assign_into(svc, old, &owner, &name, &mut taken).await;
        if result.is_err() {
            for k in &taken {
                self.release_key(k).await;
            }
        }
        result.map(|_| taken)
    }

    async fn assign_into(&self, svc: &mut Value, old: Option<&Value>, owner: &str, name: &str, taken: &mut Vec<String>) -> ApiResult<()> {
        let old_ip = old.and_then(|o| o["spec"]["clusterIP"].as_str()).filter(|s| !s.is_empty() && *s != "None");
        if wants_ip(svc) {
            let asked = svc["spec"]["clusterIP"].as_str().unwrap_or_default().to_string();
            if asked.is_empty() {
                let ip = self.allocate_ip(owner).await?;
                taken.push(format!("{IP_KEYS}{ip}"));
                svc["spec"]["clusterIP"] = json!(ip.to_string());
                svc["spec"]["clusterIPs"] = json!([ip.to_string()]);
            } else if Some(asked.as_str()) != old_ip {
                let ip: Ipv4Addr = asked
                    .parse()
                    .map_err(|_| invalid(name, "spec.clusterIPs[0]".into(), json!(asked), "must be a valid IP address".into()))?;
                if !self.contains(ip) {
                    return Err(invalid(name, "spec.clusterIPs[0]".into(), json!(asked), format!("failed to allocate IP {asked}: provided IP is not in the valid range. The range of valid IPs is {}", self.cidr)));
                }
                let key = format!("{IP_KEYS}{ip}");
                if !self.reserve(&key, owner).await? {
                    return Err(invalid(name, "spec.clusterIPs[0]".into(), json!(asked), format!("failed to allocate IP {asked}: provided IP is already allocated")));
                }
                taken.push(key);
            }
        }
        if wants_node_ports(svc) {
            let held = old.map(node_ports_of).unwrap_or_default();
            let n = svc["spec"]["ports"].as_array().map_or(0, Vec::len);
            let asked: Vec<u16> = (0..n).map(|i| svc["spec"]["ports"][i]["nodePort"].as_u64().unwrap_or(0) as u16).collect();
            // Ports asked for first, so an allocated one can never collide with them.
            for (i, &p) in asked.iter().enumerate().filter(|(_, p)| **p != 0 && !held.contains(p)) {
                if p < self.ports.0 || p > self.ports.1 {
                    return Err(invalid(name, format!("spec.ports[{i}].nodePort"), json!(p), format!("provided port is not in the valid range. The range of valid ports is {}-{}", self.ports.0, self.ports.1)));
                }
                let key = format!("{PORT_KEYS}{p}");
                if !self.reserve(&key, owner).await? {
                    return Err(invalid(name, format!("spec.ports[{i}].nodePort"), json!(p), "provided port is already allocated".into()));
                }
                taken.push(key);
            }
            for (i, _) in asked.iter().enumerate().filter(|(_, p)| **p == 0) {
                let p = self.allocate_port(owner).await?;
                taken.push(format!("{PORT_KEYS}{p}"));
                svc["spec"]["ports"][i]["nodePort"] = json!(p);
            }
        }
        Ok(())
    }

    /// Releases what `old` held and `new` (None: deleted) no longer does.
    async fn release_unused(&self, old: &Value, new: Option<&Value>) {
        let old_ip = old["spec"]["clusterIP"].as_str().filter(|s| !s.is_empty() && *s != "None");
        let new_ip = new.filter(|n| wants_ip(n)).and_then(|n| n["spec"]["clusterIP"].as_str());
        if let Some(ip) = old_ip.filter(|ip| Some(*ip) != new_ip) {
            self.release_key(&format!("{IP_KEYS}{ip}")).await;
        }
        let kept = new.filter(|n| wants_node_ports(n)).map(node_ports_of).unwrap_or_default();
        for p in node_ports_of(old).difference(&kept) {
            self.release_key(&format!("{PORT_KEYS}{p}")).await;
        }
    }

    /// At start: reserves what stored Services hold and releases reservations whose Service
    /// is gone or no longer holds them.
    pub async fn repair(&self) -> ApiResult<()> {
        let services = self.backend.list("/registry/services/", "", 0, 0).await?;
        let mut held = BTreeSet::new();
        for kv in &services.kvs {
            let Ok(svc) = serde_json::from_slice::<Value>(&kv.value) else { continue };
            if let Some(ip) = svc["spec"]["clusterIP"].as_str().filter(|s| !s.is_empty() && *s != "None") {
                held.insert(format!("{IP_KEYS}{ip}"));
                self.reserve(&format!("{IP_KEYS}{ip}"), &kv.key).await?;
            }
            for p in node_ports_of(&svc) {
                held.insert(format!("{PORT_KEYS}{p}"));
                self.reserve(&format!("{PORT_KEYS}{p}"), &kv.key).await?;
            }
        }
        for prefix in [IP_KEYS, PORT_KEYS] {
            let reserved = self.backend.list(prefix, "", 0, 0).await?;
            for kv in reserved.kvs.iter().filter(|kv| !held.contains(&kv.key)) {
                tracing::info!(key = %kv.key, "repair: releasing an allocation no Service holds");
                self.release_key(&kv.key).await;
            }
        }
        Ok(())
    }
}

/// A random number below `n` (n > 0), from the OS-seeded generator uuid uses.
fn rand_below(n: u32) -> u32 {
    let b = uuid::Uuid::new_v4().into_bytes();
    u32::from_le_bytes([b[0], b[1], b[2], b[3]]) % n.max(1)
}

#[async_trait]
impl StoreHooks for ServiceAllocator {
    async fn begin_create(&self, obj: &mut Value) -> ApiResult<Reservation> {
        Ok(Reservation(self.assign(obj, None).await?))
    }

    async fn begin_update(&self, new: &mut Value, old: &Value) -> ApiResult<Reservation> {
        Ok(Reservation(self.assign(new, Some(old)).await?))
    }

    async fn after_update(&self, new: &Value, old: &Value) {
        self.release_unused(old, Some(new)).await;
    }

    async fn after_delete(&self, obj: &Value) {
        self.release_unused(obj, None).await;
    }

    async fn abort(&self, reservation: Reservation) {
        for k in reservation.0 {
            self.release_key(&k).await;
        }
    }
}
