//! Node IPAM (upstream's `nodeipam` controller with `--allocate-node-cidrs`): every Node
//! gets its own /24 of the cluster CIDR in `spec.podCIDR(s)`, from which its agent hands
//! out pod IPs. Ranges already taken by Nodes are never given twice.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, ListParams, Patch};
use kube::runtime::controller::Action;
use kube::runtime::{watcher, Controller};
use serde_json::json;

use crate::Ctx;

const MANAGER: &str = "node-ipam-controller";
/// Size of each node's range, as upstream's default `--node-cidr-mask-size` for IPv4.
const NODE_MASK: u8 = 24;

/// Held from reading the ranges in use to writing the chosen one.
static ALLOCATING: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("listing nodes: {0}")]
    List(#[source] kube::Error),
    #[error("setting the pod CIDR of node {0}: {1}")]
    Patch(String, #[source] kube::Error),
    #[error("the cluster CIDR {0} has no free /{NODE_MASK} left")]
    Exhausted(String),
}

/// An IPv4 range `base/prefix`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    pub base: u32,
    pub prefix: u8,
}

impl Cidr {
    pub fn parse(s: &str) -> Option<Cidr> {
        let (ip, prefix) = s.split_once('/')?;
        let ip: Ipv4Addr = ip.parse().ok()?;
        let prefix: u8 = prefix.parse().ok().filter(|p| *p <= 32)?;
        let mask = if prefix == 0 { 0 } else { u32::MAX << (32 - prefix) };
        Some(Cidr { base: u32::from(ip) & mask, prefix })
    }

    /// The `n`th subrange of size `/mask`, if it lies inside this range.
    fn subnet(&self, mask: u8, n: u32) -> Option<Cidr> {
        let bits = mask.checked_sub(self.prefix)?;
        (bits < 32 && n < (1u32 << bits)).then(|| Cidr { base: self.base + (n << (32 - mask)), prefix: mask })
    }
}

impl std::fmt::Display for Cidr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", Ipv4Addr::from(self.base), self.prefix)
    }
}

/// The first /24 of `cluster` that no node uses.
pub fn first_free(cluster: &Cidr, used: &BTreeSet<String>) -> Option<Cidr> {
    (0..).map_while(|n| cluster.subnet(NODE_MASK.max(cluster.prefix), n)).find(|c| !used.contains(&c.to_string()))
}

pub async fn run(ctx: Arc<Ctx>) -> Result<(), crate::Error> {
    let Some(cidr) = ctx.config.cluster_cidr.as_deref() else {
        tracing::info!("no cluster CIDR configured: not allocating node pod CIDRs");
        return Ok(());
    };
    if Cidr::parse(cidr).is_none() {
        return Err(crate::Error::Other(format!("cluster CIDR {cidr:?} is not an IPv4 CIDR")));
    }
    Controller::new(Api::<Node>::all(ctx.client.clone()), watcher::Config::default())
        .run(reconcile, error_policy, ctx)
        .for_each(|_| async {})
        .await;
    Ok(())
}

fn error_policy(_node: Arc<Node>, err: &Error, _ctx: Arc<Ctx>) -> Action {
    tracing::warn!(error = %err, "node IPAM failed");
    Action::requeue(Duration::from_secs(2))
}

async fn reconcile(node: Arc<Node>, ctx: Arc<Ctx>) -> Result<Action, Error> {
    if node.spec.as_ref().and_then(|s| s.pod_cidr.as_ref()).is_some() {
        return Ok(Action::await_change());
    }
    let text = ctx.config.cluster_cidr.clone().unwrap_or_default();
    let cluster = Cidr::parse(&text).ok_or_else(|| Error::Exhausted(text.clone()))?;
    // The controller reconciles nodes concurrently: two nodes registering together would both
    // list no range in use and get the same one. One allocation at a time, from list to write.
    let _one_at_a_time = ALLOCATING.lock().await;
    let api = Api::<Node>::all(ctx.client.clone());
    // Read from the server, not the cache: a range just given to another node must count.
    let used: BTreeSet<String> = api
        .list(&ListParams::default())
        .await
        .map_err(Error::List)?
        .items
        .iter()
        .filter_map(|n| n.spec.as_ref()?.pod_cidr.clone())
        .collect();
    let free = first_free(&cluster, &used).ok_or(Error::Exhausted(text))?;
    let name = node.metadata.name.clone().unwrap_or_default();
    // The resourceVersion precondition makes two allocations racing for one node fail
    // instead of both writing.
    let patch = json!({
        "metadata": {"resourceVersion": node.metadata.resource_version},
        "spec": {"podCIDR": free.to_string(), "podCIDRs": [free.to_string()]},
    });
    api.patch(&name, &crate::patch_params(MANAGER), &Patch::Merge(&patch)).await.map_err(|e| Error::Patch(name.clone(), e))?;
    tracing::info!(node = %name, cidr = %free, "allocated pod CIDR");
    Ok(Action::await_change())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allocates_distinct_ranges_in_order() {
        let cluster = Cidr::parse("10.42.0.0/16").unwrap();
        let mut used = BTreeSet::new();
        assert_eq!(first_free(&cluster, &used).unwrap().to_string(), "10.42.0.0/24");
        used.insert("10.42.0.0/24".to_string());
        used.insert("10.42.2.0/24".to_string());
        assert_eq!(first_free(&cluster, &used).unwrap().to_string(), "10.42.1.0/24");
        let small = Cidr::parse("10.42.7.0/24").unwrap();
        let mut used = BTreeSet::new();
        assert_eq!(first_free(&small, &used).unwrap().to_string(), "10.42.7.0/24");
        used.insert("10.42.7.0/24".to_string());
        assert!(first_free(&small, &used).is_none());
        assert!(Cidr::parse("10.42.0.0/33").is_none());
        assert_eq!(Cidr::parse("10.42.3.9/16").unwrap().to_string(), "10.42.0.0/16");
    }
}
