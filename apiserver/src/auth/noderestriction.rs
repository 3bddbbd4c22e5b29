//! Upstream's NodeRestriction admission plugin (plugin/pkg/admission/noderestriction): what a
//! `system:node:X` identity writes is confined to itself. It may create and update only the
//! Node named X, without setting or changing `node-restriction.kubernetes.io/` labels or
//! Kubernetes labels outside the kubelet's own set, nor its taints; create only mirror pods
//! bound to X that reference no other objects; write status only of pods bound to X without
//! touching their labels; and request tokens only bound to a pod on X. Deletes and other
//! names are refused earlier, by the Node authorizer (`node.rs`).

use async_trait::async_trait;
use serde_json::Value;

use super::node::node_name;
use crate::admission::{Attributes, Operation, Plugin, Reader};
use crate::error::ApiResult;

pub struct NodeRestriction;

const MIRROR_POD_ANNOTATION: &str = "kubernetes.io/config.mirror";
const RESTRICTION_NAMESPACE: &str = "node-restriction.kubernetes.io";

/// Labels a kubelet may set on its Node (upstream's `kubeletapis.IsKubeletLabel`).
const KUBELET_LABELS: &[&str] = &[
    "kubernetes.io/hostname",
    "kubernetes.io/arch",
    "kubernetes.io/os",
    "beta.kubernetes.io/arch",
    "beta.kubernetes.io/os",
    "beta.kubernetes.io/instance-type",
    "node.kubernetes.io/instance-type",
    "failure-domain.beta.kubernetes.io/zone",
    "failure-domain.beta.kubernetes.io/region",
    "topology.kubernetes.io/zone",
    "topology.kubernetes.io/region",
];
/// Label namespaces (and their subdomains) a kubelet may use freely.
const KUBELET_LABEL_NAMESPACES: &[&str] = &["kubelet.kubernetes.io", "node.kubernetes.io"];

fn label_namespace(key: &str) -> &str {
    key.split_once('/').map(|(ns, _)| ns).unwrap_or("")
}

fn in_domain(namespace: &str, domain: &str) -> bool {
    namespace == domain || namespace.ends_with(&format!(".{domain}"))
}

fn is_kubelet_label(key: &str) -> bool {
    KUBELET_LABELS.contains(&key) || KUBELET_LABEL_NAMESPACES.iter().any(|d| in_domain(label_namespace(key), d))
}

/// Upstream's `getForbiddenLabels` over the labels that differ between `new` and `old`,
/// sorted as its string set lists them.
fn forbidden_labels(new: &Value, old: Option<&Value>) -> Vec<String> {
    let labels = |v: Option<&Value>| v.and_then(|o| o["metadata"]["labels"].as_object().cloned()).unwrap_or_default();
    let (a, b) = (labels(Some(new)), labels(old));
    let mut changed: Vec<String> = a.iter().filter(|(k, v)| b.get(*k) != Some(v)).map(|(k, _)| k.clone()).collect();
    changed.extend(b.keys().filter(|k| !a.contains_key(*k)).cloned());
    let mut out: Vec<String> = changed
        .into_iter()
        .filter(|k| {
            let ns = label_namespace(k);
            in_domain(ns, RESTRICTION_NAMESPACE) || ((in_domain(ns, "kubernetes.io") || in_domain(ns, "k8s.io")) && !is_kubelet_label(k))
        })
        .collect();
    out.sort();
    out.dedup();
    out
}

fn admit_node(node: &str, op: Operation, obj: &Value, old: Option<&Value>) -> Result<(), String> {
    let name = obj["metadata"]["name"].as_str().unwrap_or_default();
    if name != node {
        return Err(format!("node {node:?} is not allowed to modify node {name:?}"));
    }
    match op {
        Operation::Create => {
            if !obj["spec"]["configSource"].is_null() {
                return Err(format!("node {node:?} is not allowed to create pods with a non-nil configSource"));
            }
            let forbidden = forbidden_labels(obj, None);
            if !forbidden.is_empty() {
                return Err(format!("node {node:?} is not allowed to set the following labels: {}", forbidden.join(", ")));
            }
        }
        Operation::Update => {
            let old = old.unwrap_or(&Value::Null);
            let source = &obj["spec"]["configSource"];
            if !source.is_null() && *source != old["spec"]["configSource"] {
                return Err(format!("node {node:?} is not allowed to update configSource to a new non-nil configSource"));
            }
            let taints = |v: &Value| v["spec"]["taints"].as_array().cloned().unwrap_or_default();
            if taints(obj) != taints(old) {
                return Err(format!("node {node:?} is not allowed to modify taints"));
            }
            let forbidden = forbidden_labels(obj, Some(old));
            if !forbidden.is_empty() {
                return Err(format!("is not allowed to modify labels: {}", forbidden.join(", ")));
            }
        }
    }
    Ok(())
}

/// A node creates only mirror pods of its own, referencing no other objects.
fn admit_pod_create(node: &str, pod: &Value) -> Result<(), String> {
    if pod["metadata"]["annotations"].get(MIRROR_POD_ANNOTATION).is_none() {
        return Err(format!("pod does not have {MIRROR_POD_ANNOTATION:?} annotation, node {node:?} can only create mirror pods"));
    }
    if pod["spec"]["nodeName"].as_str() != Some(node) {
        return Err(format!("node {node:?} can only create pods with spec.nodeName set to itself"));
    }
    let owners = pod["metadata"]["ownerReferences"].as_array().cloned().unwrap_or_default();
    match owners.as_slice() {
        [] => return Err(format!("node {node:?} can only create pods with an owner reference set to itself")),
        [owner] => {
            if owner["apiVersion"] != "v1" || owner["kind"] != "Node" || owner["name"] != node {
                return Err(format!("node {node:?} can only create pods with an owner reference set to itself"));
            }
            if owner["controller"] != true {
                return Err(format!("node {node:?} can only create pods with a controller owner reference set to itself"));
            }
            if owner["blockOwnerDeletion"] == true {
                return Err(format!("node {node:?} must not set blockOwnerDeletion on an owner reference"));
            }
        }
        _ => return Err(format!("node {node:?} can only create pods with a single owner reference set to itself")),
    }
    if pod["spec"]["serviceAccountName"].as_str().is_some_and(|s| !s.is_empty()) {
        return Err(format!("node {node:?} can not create pods that reference a service account"));
    }
    let mut graph = super::node::Graph::default();
    let mut bound = pod.clone();
    bound["spec"]["nodeName"] = node.into();
    graph.put(&bound);
    for kind in ["secrets", "configmaps", "persistentvolumeclaims"] {
        if graph.reaches_any(node, kind) {
            return Err(format!("node {node:?} can not create pods that reference {kind}"));
        }
    }
    Ok(())
}

/// A node writes the status of pods bound to it, without their labels.
fn admit_pod_status(node: &str, pod: &Value, old: &Value) -> Result<(), String> {
    if old["spec"]["nodeName"].as_str() != Some(node) {
        return Err(format!("node {node:?} can only update pod status for pods with spec.nodeName set to itself"));
    }
    if pod["metadata"]["labels"] != old["metadata"]["labels"] {
        return Err(format!("node {node:?} cannot update labels through pod status"));
    }
    Ok(())
}

/// What TokenRequests a node may make: bound to a pod scheduled on it (the pod as stored).
pub fn admit_token_request(node: &str, spec: &Value, pod: Option<&Value>) -> Result<(), String> {
    let r = &spec["boundObjectRef"];
    if r["apiVersion"] != "v1" || r["kind"] != "Pod" || r["name"].as_str().is_none_or(str::is_empty) {
        return Err("node requested token not bound to a pod".into());
    }
    let uid = r["uid"].as_str().unwrap_or_default();
    if uid.is_empty() {
        return Err("node requested token with a pod binding without a uid".into());
    }
    let Some(pod) = pod else { return Err("node requested token bound to a pod that does not exist".into()) };
    if pod["metadata"]["uid"].as_str() != Some(uid) {
        return Err(format!("the UID in the bound object reference ({uid}) does not match the UID in record. The object might have been deleted and then recreated"));
    }
    if pod["spec"]["nodeName"].as_str() != Some(node) {
        return Err("node requested token bound to a pod scheduled on a different node".into());
    }
    Ok(())
}

impl NodeRestriction {
    fn check(&self, attrs: &Attributes<'_>, obj: &Value) -> Result<(), String> {
        let user = attrs.ctx.user_info();
        let Some(node) = node_name(&user) else { return Ok(()) };
        match (attrs.resource.plural.as_str(), attrs.subresource, attrs.operation) {
            ("nodes", _, op) => admit_node(node, op, obj, attrs.old),
            ("pods", "", Operation::Create) => admit_pod_create(node, obj),
            ("pods", "", Operation::Update) => Err(format!("unexpected operation \"UPDATE\", node {node:?} can only create and delete mirror pods")),
            ("pods", "status", _) => admit_pod_status(node, obj, attrs.old.unwrap_or(&Value::Null)),
            _ => Ok(()),
        }
    }
}

#[async_trait]
impl Plugin for NodeRestriction {
    fn handles(&self, attrs: &Attributes<'_>) -> bool {
        attrs.resource.group.is_empty() && matches!(attrs.resource.plural.as_str(), "nodes" | "pods")
    }

    fn handles_status(&self, attrs: &Attributes<'_>) -> bool {
        self.handles(attrs)
    }

    async fn validate(&self, attrs: &Attributes<'_>, obj: &Value, _reader: &dyn Reader) -> ApiResult<()> {
        self.check(attrs, obj).map_err(|why| attrs.forbidden(obj, why))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn node_labels() {
        let node = |labels: Value| json!({"metadata": {"name": "n1", "labels": labels}});
        assert!(admit_node("n1", Operation::Create, &node(json!({"kubernetes.io/hostname": "n1", "node.kubernetes.io/exclude-from-external-load-balancers": "", "example.com/x": "y"})), None).is_ok());
        let err = admit_node("n1", Operation::Create, &node(json!({"node-role.kubernetes.io/control-plane": "true", "node-restriction.kubernetes.io/pool": "a"})), None).unwrap_err();
        assert_eq!(err, r#"node "n1" is not allowed to set the following labels: node-restriction.kubernetes.io/pool, node-role.kubernetes.io/control-plane"#);
        let old = node(json!({"node-role.kubernetes.io/control-plane": "true"}));
        // Keeping a label the server set is fine; removing or changing it is not.
        assert!(admit_node("n1", Operation::Update, &old, Some(&old)).is_ok());
        assert_eq!(admit_node("n1", Operation::Update, &node(json!({})), Some(&old)).unwrap_err(), "is not allowed to modify labels: node-role.kubernetes.io/control-plane");
        assert_eq!(admit_node("n1", Operation::Create, &json!({"metadata": {"name": "n2"}}), None).unwrap_err(), r#"node "n1" is not allowed to modify node "n2""#);
        let tainted = json!({"metadata": {"name": "n1"}, "spec": {"taints": [{"key": "k", "effect": "NoSchedule"}]}});
        assert_eq!(admit_node("n1", Operation::Update, &json!({"metadata": {"name": "n1"}}), Some(&tainted)).unwrap_err(), r#"node "n1" is not allowed to modify taints"#);
    }

    #[test]
    fn mirror_pods_only() {
        let owner = json!([{"apiVersion": "v1", "kind": "Node", "name": "n1", "uid": "u", "controller": true}]);
        let mirror = json!({"metadata": {"name": "m", "namespace": "ns", "annotations": {MIRROR_POD_ANNOTATION: "x"}, "ownerReferences": owner}, "spec": {"nodeName": "n1", "containers": [{"name": "c"}]}});
        assert!(admit_pod_create("n1", &mirror).is_ok());
        let mut plain = mirror.clone();
        plain["metadata"]["annotations"] = json!({});
        assert!(admit_pod_create("n1", &plain).unwrap_err().contains("can only create mirror pods"));
        let mut with_secret = mirror.clone();
        with_secret["spec"]["volumes"] = json!([{"name": "s", "secret": {"secretName": "s"}}]);
        assert_eq!(admit_pod_create("n1", &with_secret).unwrap_err(), r#"node "n1" can not create pods that reference secrets"#);
        assert!(admit_pod_create("n2", &mirror).is_err());
    }

    #[test]
    fn token_requests_bound_to_own_pods() {
        let spec = json!({"boundObjectRef": {"apiVersion": "v1", "kind": "Pod", "name": "p", "uid": "u"}});
        let pod = json!({"metadata": {"uid": "u"}, "spec": {"nodeName": "n1"}});
        assert!(admit_token_request("n1", &spec, Some(&pod)).is_ok());
        assert_eq!(admit_token_request("n2", &spec, Some(&pod)).unwrap_err(), "node requested token bound to a pod scheduled on a different node");
        assert_eq!(admit_token_request("n1", &json!({}), Some(&pod)).unwrap_err(), "node requested token not bound to a pod");
    }
}
