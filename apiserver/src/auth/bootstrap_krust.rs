//! krust's own bootstrap roles and bindings, for what krust's parts do that no upstream
//! component does (everything upstream's parts do is granted by upstream's roles in the
//! parent module). Each grants exactly what its part sends, and its subjects are krust's
//! own identities (see docs/security.md):
//!
//! - `system:krust:dns` (group of every node's DNS server, users `system:krust:dns:<node>`):
//!   the node-local DNS reads Services and EndpointSlices, reads its Node (the owner of its
//!   slice), and keeps its node's EndpointSlice `kube-system/kube-dns-<node>` with
//!   server-side apply.
//! - `system:krust:kube-dns-service`: the server keeps the selector-less Service
//!   `kube-system/kube-dns` as the controller-manager's user (`cluster_dns.rs`).
//! - `system:krust:supervisor`: the join endpoint keeps node password Secrets
//!   (`kube-system/<node>.node-password.krust`), as k3s's supervisor does, and the server
//!   labels its own node `node-role.kubernetes.io/control-plane` (a kubelet may not).

use serde_json::Value;

use super::{cluster_binding, cluster_role, group, role, role_binding, rule, user, CORE, DISCOVERY};

/// The group in every node DNS server's client certificate.
pub const DNS_GROUP: &str = "system:krust:dns";
/// The user of the server's join endpoint.
pub const SUPERVISOR_USER: &str = "system:krust:supervisor";
const NAMESPACE: &str = "kube-system";

pub fn cluster_roles() -> Vec<Value> {
    vec![
        cluster_role(
            DNS_GROUP,
            &[
                rule(&["list", "watch"], &[CORE], &["services"]),
                rule(&["list", "watch"], &[DISCOVERY], &["endpointslices"]),
                rule(&["get"], &[CORE], &["nodes"]),
            ],
        ),
        cluster_role(SUPERVISOR_USER, &[rule(&["get", "patch"], &[CORE], &["nodes"])]),
    ]
}

pub fn cluster_role_bindings() -> Vec<Value> {
    vec![cluster_binding(DNS_GROUP, vec![group(DNS_GROUP)]), cluster_binding(SUPERVISOR_USER, vec![user(SUPERVISOR_USER)])]
}

pub fn roles() -> Vec<Value> {
    vec![
        // Server-side apply creates or patches; `get` compares first.
        role(NAMESPACE, DNS_GROUP, &[rule(&["get", "create", "patch"], &[DISCOVERY], &["endpointslices"])]),
        role(
            NAMESPACE,
            "system:krust:kube-dns-service",
            &[rule(&["create"], &[CORE], &["services"]), rule(&["get", "delete"], &[CORE], &["services"]).names(&["kube-dns"])],
        ),
        role(NAMESPACE, SUPERVISOR_USER, &[rule(&["get", "create"], &[CORE], &["secrets"])]),
    ]
}

pub fn role_bindings() -> Vec<Value> {
    vec![
        role_binding(NAMESPACE, DNS_GROUP, DNS_GROUP, vec![group(DNS_GROUP)]),
        role_binding(
            NAMESPACE,
            "system:krust:kube-dns-service",
            "system:krust:kube-dns-service",
            vec![user("system:kube-controller-manager")],
        ),
        role_binding(NAMESPACE, SUPERVISOR_USER, SUPERVISOR_USER, vec![user(SUPERVISOR_USER)]),
    ]
}
