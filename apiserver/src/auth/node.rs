//! The Node authorizer (upstream plugin/pkg/auth/authorizer/node): a kubelet, identified as
//! `system:node:NAME` in group `system:nodes`, may read the Secrets, ConfigMaps,
//! PersistentVolumeClaims and ServiceAccounts (tokens) only of pods bound to its node, act
//! on its own Node and Lease only, and otherwise holds the `system:node` rules. The graph
//! of which node reaches which object follows the pods in the watch cache.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use serde_json::Value;

use super::attributes::Attributes;
use super::authorizer::Decision;
use super::rbac::Policy;
use crate::registry::cache::WatchCache;

pub const NODES_GROUP: &str = "system:nodes";
const NODE_PREFIX: &str = "system:node:";
const PODS_PREFIX: &str = "/registry/pods/";

/// The node name of a node identity (upstream's `NodeIdentifier`).
pub fn node_name(user: &super::UserInfo) -> Option<&str> {
    let name = user.name.strip_prefix(NODE_PREFIX)?;
    (!name.is_empty() && user.groups.iter().any(|g| g == NODES_GROUP)).then_some(name)
}

/// An object a pod uses: (resource, namespace, name).
type Ref = (String, String, String);

/// What one pod bound to a node makes that node reach.
#[derive(Debug, Default, Clone, PartialEq)]
struct PodUse {
    node: String,
    refs: Vec<Ref>,
}

/// Objects each node reaches through its pods (counted: several pods may share one).
#[derive(Debug, Default)]
pub struct Graph {
    pods: HashMap<(String, String), PodUse>,
    reach: HashMap<String, HashMap<Ref, usize>>,
}

fn names(v: &Value, pointer: &str) -> std::option::IntoIter<String> {
    v.pointer(pointer).and_then(Value::as_str).filter(|s| !s.is_empty()).map(String::from).into_iter()
}

/// The objects a pod's spec names, as upstream's graph populator reads them
/// (`podutil.VisitPodSecretNames` / `VisitPodConfigmapNames`, PVC volumes, the service account).
fn pod_refs(pod: &Value) -> Vec<Ref> {
    let ns = pod["metadata"]["namespace"].as_str().unwrap_or_default().to_string();
    let spec = &pod["spec"];
    let mut refs: Vec<Ref> = Vec::new();
    let mut add = |kind: &str, name: String| {
        let r = (kind.to_string(), ns.clone(), name);
        if !refs.contains(&r) {
            refs.push(r);
        }
    };
    for s in names(spec, "/serviceAccountName") {
        add("serviceaccounts", s);
    }
    for s in spec["imagePullSecrets"].as_array().into_iter().flatten().flat_map(|s| names(s, "/name")) {
        add("secrets", s);
    }
    let containers = ["containers", "initContainers", "ephemeralContainers"].into_iter().flat_map(|k| spec[k].as_array().into_iter().flatten());
    for c in containers {
        for e in c["envFrom"].as_array().into_iter().flatten() {
            names(e, "/secretRef/name").for_each(|n| add("secrets", n));
            names(e, "/configMapRef/name").for_each(|n| add("configmaps", n));
        }
        for e in c["env"].as_array().into_iter().flatten() {
            names(e, "/valueFrom/secretKeyRef/name").for_each(|n| add("secrets", n));
            names(e, "/valueFrom/configMapKeyRef/name").for_each(|n| add("configmaps", n));
        }
    }
    let pod_name = pod["metadata"]["name"].as_str().unwrap_or_default();
    for v in spec["volumes"].as_array().into_iter().flatten() {
        names(v, "/secret/secretName").for_each(|n| add("secrets", n));
        names(v, "/configMap/name").for_each(|n| add("configmaps", n));
        names(v, "/persistentVolumeClaim/claimName").for_each(|n| add("persistentvolumeclaims", n));
        if v.get("ephemeral").is_some_and(|e| !e.is_null()) {
            add("persistentvolumeclaims", format!("{pod_name}-{}", v["name"].as_str().unwrap_or_default()));
        }
        for p in v.pointer("/projected/sources").and_then(Value::as_array).into_iter().flatten() {
            names(p, "/secret/name").for_each(|n| add("secrets", n));
            names(p, "/configMap/name").for_each(|n| add("configmaps", n));
        }
        for key in ["azureFile/secretName", "cephfs/secretRef/name", "cinder/secretRef/name", "flexVolume/secretRef/name", "iscsi/secretRef/name", "rbd/secretRef/name", "scaleIO/secretRef/name", "storageos/secretRef/name", "csi/nodePublishSecretRef/name"] {
            names(v, &format!("/{key}")).for_each(|n| add("secrets", n));
        }
    }
    refs
}

impl Graph {
    fn remove(&mut self, key: &(String, String)) {
        let Some(old) = self.pods.remove(key) else { return };
        if let Some(reach) = self.reach.get_mut(&old.node) {
            for r in &old.refs {
                if let Some(n) = reach.get_mut(r) {
                    *n -= 1;
                    if *n == 0 {
                        reach.remove(r);
                    }
                }
            }
            if reach.is_empty() {
                self.reach.remove(&old.node);
            }
        }
    }

    /// Records a pod as stored (unbound pods reach nothing).
    pub fn put(&mut self, pod: &Value) {
        let key = (pod["metadata"]["namespace"].as_str().unwrap_or_default().to_string(), pod["metadata"]["name"].as_str().unwrap_or_default().to_string());
        let node = pod["spec"]["nodeName"].as_str().unwrap_or_default().to_string();
        let new = PodUse { refs: if node.is_empty() { Vec::new() } else { pod_refs(pod) }, node };
        if self.pods.get(&key) == Some(&new) {
            return;
        }
        self.remove(&key);
        if new.node.is_empty() {
            return;
        }
        let reach = self.reach.entry(new.node.clone()).or_default();
        for r in &new.refs {
            *reach.entry(r.clone()).or_default() += 1;
        }
        self.pods.insert(key, new);
    }

    /// Forgets a deleted pod, by its storage key.
    pub fn delete_key(&mut self, key: &str) {
        if let Some((ns, name)) = key.strip_prefix(PODS_PREFIX).and_then(|k| k.split_once('/')) {
            self.remove(&(ns.to_string(), name.to_string()));
        }
    }

    fn reaches(&self, node: &str, kind: &str, ns: &str, name: &str) -> bool {
        self.reach.get(node).is_some_and(|r| r.contains_key(&(kind.to_string(), ns.to_string(), name.to_string())))
    }

    /// Whether `node` reaches any object of `kind`.
    pub fn reaches_any(&self, node: &str, kind: &str) -> bool {
        self.reach.get(node).is_some_and(|r| r.keys().any(|(k, _, _)| k == kind))
    }

    /// Whether a pod is bound to `node`.
    pub fn pod_on(&self, node: &str, ns: &str, name: &str) -> bool {
        self.pods.get(&(ns.to_string(), name.to_string())).is_some_and(|p| p.node == node)
    }
}

/// The ClusterRole whose rules every node holds beyond its own objects (upstream compiles
/// `NodeRules()` in; krust reads the bootstrap role, which reconciliation keeps complete).
pub const NODE_ROLE: &str = "system:node";

#[derive(Default)]
pub struct NodeAuthorizer {
    pub graph: Arc<RwLock<Graph>>,
    /// Where PersistentVolumes and VolumeAttachments are looked up (their links to claims and
    /// nodes are read when asked, not kept in the graph).
    pub cache: Option<Arc<WatchCache>>,
}

impl NodeAuthorizer {
    fn stored(&self, key: &str) -> Option<Value> {
        let kv = self.cache.as_ref()?.get(key)?;
        serde_json::from_slice(&kv.value).ok()
    }

    /// Upstream's graph edge PV → PVC → pod → node: the volume's `claimRef` is a claim a pod
    /// of this node uses.
    fn reaches_volume(&self, graph: &Graph, node: &str, name: &str) -> bool {
        let Some(pv) = self.stored(&format!("/registry/persistentvolumes/{name}")) else { return false };
        let claim = &pv["spec"]["claimRef"];
        let (ns, claim) = (claim["namespace"].as_str().unwrap_or_default(), claim["name"].as_str().unwrap_or_default());
        !claim.is_empty() && graph.reaches(node, "persistentvolumeclaims", ns, claim)
    }

    /// A VolumeAttachment is this node's when its `spec.nodeName` says so.
    fn owns_attachment(&self, node: &str, name: &str) -> bool {
        self.stored(&format!("/registry/storage.k8s.io/volumeattachments/{name}")).is_some_and(|va| va["spec"]["nodeName"].as_str() == Some(node))
    }

    /// Fills the graph from the cache's pods.
    pub fn load(&self, cache: &WatchCache) {
        let mut g = Graph::default();
        for kv in cache.list(PODS_PREFIX).1 {
            if let Ok(pod) = serde_json::from_slice::<Value>(&kv.value) {
                g.put(&pod);
            }
        }
        *self.graph.write().expect("graph lock") = g;
    }

    /// Applies the pod changes after `after`; false when the window no longer has them
    /// (then the caller reloads).
    pub fn apply_after(&self, cache: &WatchCache, after: i64) -> bool {
        let Ok((events, _)) = cache.events_after(PODS_PREFIX, after, usize::MAX) else { return false };
        if events.is_empty() {
            return true;
        }
        let mut g = self.graph.write().expect("graph lock");
        for ev in events {
            match ev.kind {
                kine_sqlite::EventKind::Delete => g.delete_key(&ev.kv.key),
                _ => match serde_json::from_slice::<Value>(&ev.kv.value) {
                    Ok(pod) => g.put(&pod),
                    Err(_) => g.delete_key(&ev.kv.key),
                },
            }
        }
        true
    }

    /// Upstream's `NodeAuthorizer.Authorize`: allowed (`allowed: true`), or no opinion: `None`,
    /// or a decision with `allowed: false` whose reason says why (RBAC decides then).
    pub fn decide(&self, a: &Attributes, policy: &Policy) -> Option<Decision> {
        let node = node_name(&a.user)?;
        let deny = |why: String| Some(Decision { allowed: false, reason: why });
        let allow = || Some(Decision { allowed: true, reason: String::new() });
        if !a.resource_request {
            return by_rules(a, policy);
        }
        let graph = self.graph.read().expect("graph lock");
        // One named object the node asks for with an allowed verb: granted when the graph
        // links it to the node, else no opinion saying so.
        let related = |verb_ok: bool, refusal: String, linked: &dyn Fn() -> bool| {
            if !verb_ok || a.name.is_empty() {
                deny(refusal)
            } else if linked() {
                allow()
            } else {
                deny(format!("no relationship found between node '{node}' and this object"))
            }
        };
        let verb = a.verb.as_str();
        match (a.api_group.as_str(), a.resource.as_str(), a.subresource.as_str()) {
            // get, or list/watch pinned to one name, of what a pod of this node uses.
            ("", "secrets" | "configmaps", "") => related(
                matches!(verb, "get" | "list" | "watch"),
                format!("can only read individual {}", a.resource),
                &|| graph.reaches(node, &a.resource, &a.namespace, &a.name),
            ),
            ("", "persistentvolumeclaims", sub) => related(
                if sub == "status" { matches!(verb, "update" | "patch") } else { verb == "get" && sub.is_empty() },
                format!("can only get individual {}", a.resource),
                &|| graph.reaches(node, "persistentvolumeclaims", &a.namespace, &a.name),
            ),
            ("", "serviceaccounts", "token") => related(
                verb == "create",
                "can only create tokens for individual service accounts".into(),
                &|| graph.reaches(node, "serviceaccounts", &a.namespace, &a.name),
            ),
            ("", "persistentvolumes", "") => {
                related(verb == "get", format!("can only get individual {}", a.resource), &|| self.reaches_volume(&graph, node, &a.name))
            }
            ("storage.k8s.io", "volumeattachments", "") => {
                related(verb == "get", format!("can only get individual {}", a.resource), &|| self.owns_attachment(node, &a.name))
            }
            ("storage.k8s.io", "csinodes", "") => {
                let own = a.name == node || (a.verb == "create" && a.name.is_empty());
                if own && matches!(a.verb.as_str(), "get" | "create" | "update" | "patch" | "delete") {
                    allow()
                } else {
                    deny("can only access CSINode with the same name as the requesting node".into())
                }
            }
            ("coordination.k8s.io", "leases", "") => {
                let own = a.namespace == "kube-node-lease" && (a.name == node || (a.verb == "create" && a.name.is_empty()));
                if own && matches!(a.verb.as_str(), "get" | "create" | "update" | "patch" | "delete") {
                    allow()
                } else {
                    deny("can only access node lease with the same name as the requesting node".into())
                }
            }
            // Writes to Node objects other than its own (NodeRestriction checks creates).
            ("", "nodes", _) if !a.name.is_empty() && a.name != node && !matches!(a.verb.as_str(), "get" | "list" | "watch") => {
                deny(format!("node '{node}' cannot modify node '{}'", a.name))
            }
            // Pods: a node deletes, and writes the status of, only pods bound to it.
            ("", "pods", "" | "status" | "eviction") if matches!(a.verb.as_str(), "update" | "patch" | "delete" | "create") && !a.name.is_empty() => {
                if graph.pod_on(node, &a.namespace, &a.name) {
                    drop(graph);
                    by_rules(a, policy)
                } else {
                    deny(format!("node '{node}' can only modify pods bound to it"))
                }
            }
            _ => {
                drop(graph);
                by_rules(a, policy)
            }
        }
    }

}

/// Upstream's `authorizeUsingRules`: allowed by the node rules, or no opinion.
fn by_rules(a: &Attributes, policy: &Policy) -> Option<Decision> {
    policy.cluster_role_allows(NODE_ROLE, a).then(|| Decision { allowed: true, reason: String::new() })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::UserInfo;
    use serde_json::json;

    fn node_user(n: &str) -> UserInfo {
        UserInfo { name: format!("system:node:{n}"), groups: vec![NODES_GROUP.into(), "system:authenticated".into()], ..Default::default() }
    }

    #[test]
    fn pods_reach_what_they_use() {
        let mut g = Graph::default();
        let pod = json!({"metadata": {"namespace": "ns", "name": "p"}, "spec": {"nodeName": "n1", "serviceAccountName": "sa",
            "containers": [{"env": [{"name": "X", "valueFrom": {"secretKeyRef": {"name": "env-secret", "key": "k"}}}], "envFrom": [{"configMapRef": {"name": "cm"}}]}],
            "volumes": [{"name": "v", "secret": {"secretName": "vol-secret"}}, {"name": "c", "persistentVolumeClaim": {"claimName": "claim"}},
                        {"name": "t", "projected": {"sources": [{"configMap": {"name": "proj"}}]}}]}});
        g.put(&pod);
        for (k, n) in [("secrets", "env-secret"), ("secrets", "vol-secret"), ("configmaps", "cm"), ("configmaps", "proj"), ("persistentvolumeclaims", "claim"), ("serviceaccounts", "sa")] {
            assert!(g.reaches("n1", k, "ns", n), "{k}/{n}");
            assert!(!g.reaches("n2", k, "ns", n), "{k}/{n}");
        }
        assert!(!g.reaches("n1", "secrets", "other", "env-secret"));
        // Two pods share a secret: it stays reachable until both are gone.
        let mut twin = pod.clone();
        twin["metadata"]["name"] = json!("q");
        g.put(&twin);
        g.delete_key("/registry/pods/ns/p");
        assert!(g.reaches("n1", "secrets", "ns", "vol-secret"));
        g.delete_key("/registry/pods/ns/q");
        assert!(!g.reaches("n1", "secrets", "ns", "vol-secret"));
        assert!(g.reach.is_empty());
    }

    #[test]
    fn decisions() {
        let authz = NodeAuthorizer::default();
        let policy = Policy::build(&[json!({"metadata": {"name": NODE_ROLE}, "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "watch", "delete"]}]})], &[], &[], &[]);
        authz.graph.write().unwrap().put(&json!({"metadata": {"namespace": "ns", "name": "p"}, "spec": {"nodeName": "n1", "volumes": [{"name": "v", "secret": {"secretName": "s"}}]}}));
        let n1 = node_user("n1");
        let n2 = node_user("n2");
        let dec = |u: &UserInfo, verb: &str, group: &str, res: &str, sub: &str, ns: &str, name: &str| authz.decide(&Attributes::resource(u, verb, group, res, sub, ns, name), &policy).is_some_and(|d| d.allowed);
        assert!(dec(&n1, "get", "", "secrets", "", "ns", "s"));
        assert!(!dec(&n2, "get", "", "secrets", "", "ns", "s"));
        assert!(!dec(&n1, "list", "", "secrets", "", "ns", ""));
        assert!(dec(&n1, "delete", "", "pods", "", "ns", "p"));
        assert!(!dec(&n2, "delete", "", "pods", "", "ns", "p"));
        assert!(dec(&n1, "update", "coordination.k8s.io", "leases", "", "kube-node-lease", "n1"));
        assert!(!dec(&n1, "update", "coordination.k8s.io", "leases", "", "kube-node-lease", "n2"));
        assert!(!dec(&n1, "delete", "", "nodes", "", "", "n2"));
        // Without a volume to look up, no PersistentVolume or VolumeAttachment is reachable,
        // though the node rules would allow getting them.
        assert!(!dec(&n1, "get", "", "persistentvolumes", "", "", "pv"));
        assert!(!dec(&n1, "get", "storage.k8s.io", "volumeattachments", "", "", "va"));
        assert!(dec(&n1, "update", "storage.k8s.io", "csinodes", "", "", "n1"));
        assert!(!dec(&n1, "update", "storage.k8s.io", "csinodes", "", "", "n2"));
        assert!(authz.decide(&Attributes::resource(&UserInfo { name: "bob".into(), ..Default::default() }, "get", "", "secrets", "", "ns", "s"), &policy).is_none());
        assert!(authz.decide(&Attributes::resource(&n1, "list", "", "nodes", "", "", ""), &policy).is_none(), "not in the node rules: RBAC decides");
    }
}
