//! Upstream's RBAC bootstrap policy (Kubernetes v1.32, default feature gates): the
//! ClusterRoles, ClusterRoleBindings, and the kube-system / kube-public Roles and RoleBindings
//! kube-apiserver creates (plugin/pkg/auth/authorizer/rbac/bootstrappolicy), and their
//! reconciliation at every start as its `rbac/bootstrap-roles` post-start hook does
//! (pkg/registry/rbac/reconciliation):
//!
//! - what is missing is created;
//! - an object annotated `rbac.authorization.kubernetes.io/autoupdate: "false"` is left alone
//!   (an absent annotation counts as `"true"`);
//! - otherwise missing labels and annotations are added (existing values win), missing rules
//!   are appended (as the atomic rules upstream's `Covers` reports; rules users added stay),
//!   missing aggregation selectors are appended, and missing subjects are appended;
//! - a binding whose roleRef differs is deleted and created again (roleRef is immutable).
//!
//! The rules of aggregated roles (admin, edit, view) are left to the ClusterRole aggregation
//! controller. This module is the one place the policy is written down: the authorizer reads
//! these objects from the store like any other.

use std::collections::HashMap;

// krust's own roles, kept apart (see that file); appended to each list below.
#[path = "bootstrap_krust.rs"]
pub mod krust;

use anyhow::Context;
use serde_json::{json, Value};

use super::rbac::{uncovered, PolicyRule};
use crate::error::ApiError;
use crate::meta;
use crate::registry::list::{ListOptions, Selection};
use crate::registry::store::{GenericStore, Target, WriteOptions};
use crate::registry::{Registry, ReqCtx};
use crate::selectors::{fields::FieldSelector, labels::LabelSelector};

const API_VERSION: &str = "rbac.authorization.k8s.io/v1";
const RBAC_GROUP: &str = "rbac.authorization.k8s.io";
pub const AUTOUPDATE_ANNOTATION: &str = "rbac.authorization.kubernetes.io/autoupdate";
pub const BOOTSTRAPPING_LABEL: &str = "kubernetes.io/bootstrapping";
pub const AGGREGATE_TO_ADMIN: &str = "rbac.authorization.k8s.io/aggregate-to-admin";
pub const AGGREGATE_TO_EDIT: &str = "rbac.authorization.k8s.io/aggregate-to-edit";
pub const AGGREGATE_TO_VIEW: &str = "rbac.authorization.k8s.io/aggregate-to-view";
/// Upstream names controller roles `system:controller:<service account>`.
pub const CONTROLLER_ROLE_PREFIX: &str = "system:controller:";
/// The user of the API server's kubelet client certificate (see krust's pki).
pub const KUBELET_CLIENT_USER: &str = "kube-apiserver-kubelet-client";

// Upstream's verb sets (bootstrappolicy.Read, Write, ReadWrite, ReadUpdate).
const READ: &[&str] = &["get", "list", "watch"];
const WRITE: &[&str] = &["create", "update", "patch", "delete", "deletecollection"];
const READ_WRITE: &[&str] = &["get", "list", "watch", "create", "update", "patch", "delete", "deletecollection"];
const READ_UPDATE: &[&str] = &["get", "list", "watch", "update", "patch"];

const CORE: &str = "";
const APPS: &str = "apps";
const AUTHN: &str = "authentication.k8s.io";
const AUTHZ: &str = "authorization.k8s.io";
const AUTOSCALING: &str = "autoscaling";
const BATCH: &str = "batch";
const CERTIFICATES: &str = "certificates.k8s.io";
const COORDINATION: &str = "coordination.k8s.io";
const DISCOVERY: &str = "discovery.k8s.io";
const EVENTS: &str = "events.k8s.io";
const EXTENSIONS: &str = "extensions";
const NETWORKING: &str = "networking.k8s.io";
const POLICY: &str = "policy";
const STORAGE: &str = "storage.k8s.io";

/// One PolicyRule, built as upstream's `rbacv1helpers.NewRule(...)...RuleOrDie()`: each list
/// sorted.
#[derive(Clone, Debug)]
pub struct Rule {
    verbs: Vec<&'static str>,
    groups: Vec<&'static str>,
    resources: Vec<&'static str>,
    names: Vec<&'static str>,
    urls: Vec<&'static str>,
}

/// A resource rule: `verbs` on `resources` of `groups`.
pub fn rule(verbs: &[&'static str], groups: &[&'static str], resources: &[&'static str]) -> Rule {
    Rule {
        verbs: verbs.to_vec(),
        groups: groups.to_vec(),
        resources: resources.to_vec(),
        names: vec![],
        urls: vec![],
    }
}

/// A non-resource rule: `verbs` on URL paths.
pub fn urls(verbs: &[&'static str], paths: &[&'static str]) -> Rule {
    Rule {
        verbs: verbs.to_vec(),
        groups: vec![],
        resources: vec![],
        names: vec![],
        urls: paths.to_vec(),
    }
}

impl Rule {
    /// Restricts the rule to objects of these names.
    pub fn names(mut self, names: &[&'static str]) -> Rule {
        self.names = names.to_vec();
        self
    }

    pub fn to_json(&self) -> Value {
        let sorted = |v: &[&str]| {
            let mut v = v.to_vec();
            v.sort_unstable();
            json!(v)
        };
        let mut out = json!({"verbs": sorted(&self.verbs)});
        for (key, list) in [
            ("apiGroups", &self.groups),
            ("resources", &self.resources),
            ("resourceNames", &self.names),
            ("nonResourceURLs", &self.urls),
        ] {
            if !list.is_empty() {
                out[key] = sorted(list);
            }
        }
        out
    }
}

/// Upstream's `eventsRule()`: what every controller needs to record events.
fn events_rule() -> Rule {
    rule(&["create", "update", "patch"], &[CORE, EVENTS], &["events"])
}

/// Metadata every bootstrap object carries, plus `true` labels of the given keys.
fn object(kind: &str, namespace: Option<&str>, name: &str, true_labels: &[&str]) -> Value {
    let mut labels = json!({BOOTSTRAPPING_LABEL: "rbac-defaults"});
    for key in true_labels {
        labels[*key] = json!("true");
    }
    let mut metadata = json!({"name": name, "labels": labels, "annotations": {AUTOUPDATE_ANNOTATION: "true"}});
    if let Some(ns) = namespace {
        metadata["namespace"] = json!(ns);
    }
    json!({"apiVersion": API_VERSION, "kind": kind, "metadata": metadata})
}

fn with_rules(mut obj: Value, rules: &[Rule]) -> Value {
    obj["rules"] = rules.iter().map(Rule::to_json).collect();
    obj
}

fn cluster_role(name: &str, rules: &[Rule]) -> Value {
    with_rules(object("ClusterRole", None, name, &[]), rules)
}

/// A ClusterRole labelled into an aggregated role (`aggregate_to`), with rules.
fn aggregated_part(name: &str, aggregate_to: &str, rules: &[Rule]) -> Value {
    with_rules(object("ClusterRole", None, name, &[aggregate_to]), rules)
}

/// A ClusterRole whose rules the aggregation controller fills from roles labelled `selects`.
fn aggregated_role(name: &str, selects: &str, aggregate_to: Option<&str>) -> Value {
    let mut obj = object("ClusterRole", None, name, aggregate_to.as_slice());
    obj["aggregationRule"] = json!({"clusterRoleSelectors": [{"matchLabels": {selects: "true"}}]});
    obj
}

fn role(namespace: &str, name: &str, rules: &[Rule]) -> Value {
    with_rules(object("Role", Some(namespace), name, &[]), rules)
}

pub fn user(name: &str) -> Value {
    json!({"kind": "User", "apiGroup": RBAC_GROUP, "name": name})
}

pub fn group(name: &str) -> Value {
    json!({"kind": "Group", "apiGroup": RBAC_GROUP, "name": name})
}

pub fn service_account(namespace: &str, name: &str) -> Value {
    json!({"kind": "ServiceAccount", "namespace": namespace, "name": name})
}

fn binding(kind: &str, namespace: Option<&str>, name: &str, role_kind: &str, role: &str, subjects: Vec<Value>) -> Value {
    let mut obj = object(kind, namespace, name, &[]);
    obj["roleRef"] = json!({"apiGroup": RBAC_GROUP, "kind": role_kind, "name": role});
    // Upstream's system:node binding has no subjects at all (the Node authorizer admits nodes).
    if !subjects.is_empty() {
        obj["subjects"] = Value::Array(subjects);
    }
    obj
}

fn cluster_binding(role: &str, subjects: Vec<Value>) -> Value {
    binding("ClusterRoleBinding", None, role, "ClusterRole", role, subjects)
}

fn role_binding(namespace: &str, name: &str, role: &str, subjects: Vec<Value>) -> Value {
    binding("RoleBinding", Some(namespace), name, "Role", role, subjects)
}

/// Upstream's `NodeRules()` with v1.32's default feature gates.
fn node_rules() -> Vec<Rule> {
    vec![
        rule(&["create"], &[AUTHN], &["tokenreviews"]),
        rule(&["create"], &[AUTHZ], &["subjectaccessreviews", "localsubjectaccessreviews"]),
        rule(READ, &[CORE], &["services"]),
        rule(&["create", "get", "list", "watch"], &[CORE], &["nodes"]),
        rule(&["update", "patch"], &[CORE], &["nodes/status"]),
        rule(&["update", "patch"], &[CORE], &["nodes"]),
        rule(&["create", "update", "patch"], &[CORE], &["events"]),
        rule(READ, &[CORE], &["pods"]),
        rule(&["create", "delete"], &[CORE], &["pods"]),
        rule(&["update", "patch"], &[CORE], &["pods/status"]),
        rule(&["create"], &[CORE], &["pods/eviction"]),
        rule(&["get", "list", "watch"], &[CORE], &["secrets", "configmaps"]),
        rule(&["get"], &[CORE], &["persistentvolumeclaims", "persistentvolumes"]),
        rule(&["get"], &[CORE], &["endpoints"]),
        rule(&["create", "get", "list", "watch"], &[CERTIFICATES], &["certificatesigningrequests"]),
        rule(&["get", "create", "update", "patch", "delete"], &[COORDINATION], &["leases"]),
        rule(&["get"], &[STORAGE], &["volumeattachments"]),
        rule(&["create"], &[CORE], &["serviceaccounts/token"]),
        rule(&["get", "update", "patch"], &[CORE], &["persistentvolumeclaims/status"]),
        rule(&["get", "watch", "list"], &[STORAGE], &["csidrivers"]),
        rule(&["get", "create", "update", "patch", "delete"], &[STORAGE], &["csinodes"]),
        rule(&["get", "list", "watch"], &["node.k8s.io"], &["runtimeclasses"]),
    ]
}

fn signer_approver(signer: &'static str) -> Vec<Rule> {
    vec![rule(&["approve"], &[CERTIFICATES], &["signers"]).names(&[signer])]
}

/// The ClusterRoles of upstream's `ClusterRoles()` (controller roles excluded).
fn system_cluster_roles() -> Vec<Value> {
    vec![
        cluster_role("cluster-admin", &[rule(&["*"], &["*"], &["*"]), urls(&["*"], &["*"])]),
        cluster_role(
            "system:discovery",
            &[urls(
                &["get"],
                &[
                    "/livez",
                    "/readyz",
                    "/healthz",
                    "/version",
                    "/version/",
                    "/openapi",
                    "/openapi/*",
                    "/api",
                    "/api/*",
                    "/apis",
                    "/apis/*",
                ],
            )],
        ),
        cluster_role(
            "system:monitoring",
            &[urls(
                &["get"],
                &[
                    "/metrics",
                    "/metrics/slis",
                    "/livez",
                    "/readyz",
                    "/healthz",
                    "/livez/*",
                    "/readyz/*",
                    "/healthz/*",
                ],
            )],
        ),
        cluster_role(
            "system:basic-user",
            &[
                rule(&["create"], &[AUTHZ], &["selfsubjectaccessreviews", "selfsubjectrulesreviews"]),
                rule(&["create"], &[AUTHN], &["selfsubjectreviews"]),
            ],
        ),
        cluster_role(
            "system:public-info-viewer",
            &[urls(&["get"], &["/livez", "/readyz", "/healthz", "/version", "/version/"])],
        ),
        aggregated_role("admin", AGGREGATE_TO_ADMIN, None),
        aggregated_role("edit", AGGREGATE_TO_EDIT, Some(AGGREGATE_TO_ADMIN)),
        aggregated_role("view", AGGREGATE_TO_VIEW, Some(AGGREGATE_TO_EDIT)),
        aggregated_part(
            "system:aggregate-to-admin",
            AGGREGATE_TO_ADMIN,
            &[
                rule(&["create"], &[AUTHZ], &["localsubjectaccessreviews"]),
                rule(READ_WRITE, &[RBAC_GROUP], &["roles", "rolebindings"]),
            ],
        ),
        aggregated_part("system:aggregate-to-edit", AGGREGATE_TO_EDIT, &aggregate_to_edit_rules()),
        aggregated_part("system:aggregate-to-view", AGGREGATE_TO_VIEW, &aggregate_to_view_rules()),
        cluster_role(
            "system:heapster",
            &[
                rule(READ, &[CORE], &["events", "pods", "nodes", "namespaces"]),
                rule(READ, &[EXTENSIONS], &["deployments"]),
            ],
        ),
        cluster_role("system:node", &node_rules()),
        cluster_role(
            "system:node-problem-detector",
            &[rule(&["get"], &[CORE], &["nodes"]), rule(&["patch"], &[CORE], &["nodes/status"]), events_rule()],
        ),
        cluster_role(
            "system:kubelet-api-admin",
            &[
                rule(&["get", "list", "watch"], &[CORE], &["nodes"]),
                rule(&["proxy"], &[CORE], &["nodes"]),
                rule(&["*"], &[CORE], &["nodes/proxy", "nodes/metrics", "nodes/stats", "nodes/log"]),
            ],
        ),
        cluster_role(
            "system:node-bootstrapper",
            &[rule(&["create", "get", "list", "watch"], &[CERTIFICATES], &["certificatesigningrequests"])],
        ),
        cluster_role(
            "system:auth-delegator",
            &[
                rule(&["create"], &[AUTHN], &["tokenreviews"]),
                rule(&["create"], &[AUTHZ], &["subjectaccessreviews"]),
            ],
        ),
        cluster_role("system:kube-aggregator", &[rule(READ, &[CORE], &["services", "endpoints"])]),
        cluster_role("system:kube-controller-manager", &kube_controller_manager_rules()),
        cluster_role("system:kube-dns", &[rule(&["list", "watch"], &[CORE], &["endpoints", "services"])]),
        cluster_role(
            "system:persistent-volume-provisioner",
            &[
                rule(&["get", "list", "watch", "create", "delete"], &[CORE], &["persistentvolumes"]),
                rule(&["get", "list", "watch", "update"], &[CORE], &["persistentvolumeclaims"]),
                rule(READ, &[STORAGE], &["storageclasses"]),
                rule(&["watch"], &[CORE], &["events"]),
                events_rule(),
            ],
        ),
        cluster_role(
            "system:certificates.k8s.io:certificatesigningrequests:nodeclient",
            &[rule(&["create"], &[CERTIFICATES], &["certificatesigningrequests/nodeclient"])],
        ),
        cluster_role(
            "system:certificates.k8s.io:certificatesigningrequests:selfnodeclient",
            &[rule(&["create"], &[CERTIFICATES], &["certificatesigningrequests/selfnodeclient"])],
        ),
        cluster_role(
            "system:volume-scheduler",
            &[
                rule(READ_UPDATE, &[CORE], &["persistentvolumes"]),
                rule(READ, &[STORAGE], &["storageclasses"]),
                rule(READ_UPDATE, &[CORE], &["persistentvolumeclaims"]),
            ],
        ),
        cluster_role(
            "system:certificates.k8s.io:legacy-unknown-approver",
            &signer_approver("kubernetes.io/legacy-unknown"),
        ),
        cluster_role(
            "system:certificates.k8s.io:kubelet-serving-approver",
            &signer_approver("kubernetes.io/kubelet-serving"),
        ),
        cluster_role(
            "system:certificates.k8s.io:kube-apiserver-client-approver",
            &signer_approver("kubernetes.io/kube-apiserver-client"),
        ),
        cluster_role(
            "system:certificates.k8s.io:kube-apiserver-client-kubelet-approver",
            &signer_approver("kubernetes.io/kube-apiserver-client-kubelet"),
        ),
        cluster_role(
            "system:service-account-issuer-discovery",
            &[urls(&["get"], &["/.well-known/openid-configuration", "/openid/v1/jwks"])],
        ),
        cluster_role(
            "system:node-proxier",
            &[
                rule(&["list", "watch"], &[CORE], &["services", "endpoints"]),
                rule(&["get", "list", "watch"], &[CORE], &["nodes"]),
                events_rule(),
                rule(&["list", "watch"], &[DISCOVERY], &["endpointslices"]),
            ],
        ),
        cluster_role("system:kube-scheduler", &kube_scheduler_rules()),
    ]
}

fn aggregate_to_edit_rules() -> Vec<Rule> {
    vec![
        // Reading these can escalate (exec, secrets), so view does not have them.
        rule(
            READ,
            &[CORE],
            &["pods/attach", "pods/proxy", "pods/exec", "pods/portforward", "secrets", "services/proxy"],
        ),
        rule(&["impersonate"], &[CORE], &["serviceaccounts"]),
        rule(WRITE, &[CORE], &["pods", "pods/attach", "pods/proxy", "pods/exec", "pods/portforward"]),
        rule(&["create"], &[CORE], &["pods/eviction"]),
        rule(
            WRITE,
            &[CORE],
            &[
                "replicationcontrollers",
                "replicationcontrollers/scale",
                "serviceaccounts",
                "services",
                "services/proxy",
                "persistentvolumeclaims",
                "configmaps",
                "secrets",
                "events",
            ],
        ),
        rule(&["create"], &[CORE], &["serviceaccounts/token"]),
        rule(
            WRITE,
            &[APPS],
            &[
                "statefulsets",
                "statefulsets/scale",
                "daemonsets",
                "deployments",
                "deployments/scale",
                "deployments/rollback",
                "replicasets",
                "replicasets/scale",
            ],
        ),
        rule(WRITE, &[AUTOSCALING], &["horizontalpodautoscalers"]),
        rule(WRITE, &[BATCH], &["jobs", "cronjobs"]),
        rule(
            WRITE,
            &[EXTENSIONS],
            &[
                "daemonsets",
                "deployments",
                "deployments/scale",
                "deployments/rollback",
                "ingresses",
                "replicasets",
                "replicasets/scale",
                "replicationcontrollers/scale",
                "networkpolicies",
            ],
        ),
        rule(WRITE, &[POLICY], &["poddisruptionbudgets"]),
        rule(WRITE, &[NETWORKING], &["networkpolicies", "ingresses"]),
        rule(READ_WRITE, &[COORDINATION], &["leases"]),
    ]
}

fn aggregate_to_view_rules() -> Vec<Rule> {
    vec![
        rule(
            READ,
            &[CORE],
            &[
                "pods",
                "replicationcontrollers",
                "replicationcontrollers/scale",
                "serviceaccounts",
                "services",
                "services/status",
                "endpoints",
                "persistentvolumeclaims",
                "persistentvolumeclaims/status",
                "configmaps",
            ],
        ),
        rule(
            READ,
            &[CORE],
            &[
                "limitranges",
                "resourcequotas",
                "bindings",
                "events",
                "pods/status",
                "resourcequotas/status",
                "namespaces/status",
                "replicationcontrollers/status",
                "pods/log",
            ],
        ),
        // Reading a namespace at namespace scope tells which namespaces one has access to.
        rule(READ, &[CORE], &["namespaces"]),
        rule(READ, &[DISCOVERY], &["endpointslices"]),
        rule(
            READ,
            &[APPS],
            &[
                "controllerrevisions",
                "statefulsets",
                "statefulsets/status",
                "statefulsets/scale",
                "daemonsets",
                "daemonsets/status",
                "deployments",
                "deployments/status",
                "deployments/scale",
                "replicasets",
                "replicasets/status",
                "replicasets/scale",
            ],
        ),
        rule(READ, &[AUTOSCALING], &["horizontalpodautoscalers", "horizontalpodautoscalers/status"]),
        rule(READ, &[BATCH], &["jobs", "cronjobs", "cronjobs/status", "jobs/status"]),
        rule(
            READ,
            &[EXTENSIONS],
            &[
                "daemonsets",
                "daemonsets/status",
                "deployments",
                "deployments/scale",
                "deployments/status",
                "ingresses",
                "ingresses/status",
                "replicasets",
                "replicasets/scale",
                "replicasets/status",
                "replicationcontrollers/scale",
                "networkpolicies",
            ],
        ),
        rule(READ, &[POLICY], &["poddisruptionbudgets", "poddisruptionbudgets/status"]),
        rule(READ, &[NETWORKING], &["networkpolicies", "ingresses", "ingresses/status"]),
    ]
}

fn kube_controller_manager_rules() -> Vec<Rule> {
    vec![
        events_rule(),
        // Leader election.
        rule(&["create"], &[COORDINATION], &["leases"]),
        rule(&["get", "update"], &[COORDINATION], &["leases"]).names(&["kube-controller-manager"]),
        // Service accounts and tokens, to run each controller under its own identity.
        rule(&["create"], &[CORE], &["secrets", "serviceaccounts"]),
        rule(&["delete"], &[CORE], &["secrets"]),
        rule(&["get"], &[CORE], &["namespaces", "secrets", "serviceaccounts", "configmaps"]),
        rule(&["update"], &[CORE], &["secrets", "serviceaccounts"]),
        rule(&["create"], &[AUTHN], &["tokenreviews"]),
        rule(&["create"], &[AUTHZ], &["subjectaccessreviews"]),
        // The shared informers.
        rule(&["list", "watch"], &["*"], &["*"]),
        rule(&["create"], &[CORE], &["serviceaccounts/token"]),
    ]
}

fn kube_scheduler_rules() -> Vec<Rule> {
    vec![
        events_rule(),
        rule(&["create"], &[COORDINATION], &["leases"]),
        rule(&["get", "update"], &[COORDINATION], &["leases"]).names(&["kube-scheduler"]),
        rule(READ, &[CORE], &["nodes"]),
        rule(&["get", "list", "watch", "delete"], &[CORE], &["pods"]),
        rule(&["create"], &[CORE], &["pods/binding", "bindings"]),
        rule(&["patch", "update"], &[CORE], &["pods/status"]),
        rule(READ, &[CORE], &["replicationcontrollers", "services"]),
        rule(READ, &[APPS, EXTENSIONS], &["replicasets"]),
        rule(READ, &[APPS], &["statefulsets"]),
        rule(READ, &[POLICY], &["poddisruptionbudgets"]),
        rule(READ, &[CORE], &["persistentvolumeclaims", "persistentvolumes"]),
        rule(&["create"], &[AUTHN], &["tokenreviews"]),
        rule(&["create"], &[AUTHZ], &["subjectaccessreviews"]),
        rule(READ, &[STORAGE], &["csinodes"]),
        rule(READ, &[CORE], &["namespaces"]),
        rule(READ, &[STORAGE], &["csidrivers"]),
        rule(READ, &[STORAGE], &["csistoragecapacities"]),
    ]
}

/// Upstream's controller roles (controller_policy.go) with v1.32's default feature gates, by
/// service account name; each is `system:controller:<name>`, bound to kube-system/<name>.
fn controller_role_rules() -> Vec<(&'static str, Vec<Rule>)> {
    vec![
        (
            "attachdetach-controller",
            vec![
                rule(&["list", "watch"], &[CORE], &["persistentvolumes", "persistentvolumeclaims"]),
                rule(&["get", "list", "watch"], &[CORE], &["nodes"]),
                rule(&["patch", "update"], &[CORE], &["nodes/status"]),
                rule(&["list", "watch"], &[CORE], &["pods"]),
                events_rule(),
                rule(&["get", "create", "delete", "list", "watch"], &[STORAGE], &["volumeattachments"]),
                rule(&["get", "watch", "list"], &[STORAGE], &["csidrivers"]),
                rule(&["get", "watch", "list"], &[STORAGE], &["csinodes"]),
            ],
        ),
        (
            "clusterrole-aggregation-controller",
            vec![rule(&["escalate", "get", "list", "watch", "update", "patch"], &[RBAC_GROUP], &["clusterroles"])],
        ),
        (
            "cronjob-controller",
            vec![
                rule(&["get", "list", "watch", "update"], &[BATCH], &["cronjobs"]),
                rule(&["get", "list", "watch", "create", "update", "delete", "patch"], &[BATCH], &["jobs"]),
                rule(&["update"], &[BATCH], &["cronjobs/status"]),
                rule(&["update"], &[BATCH], &["cronjobs/finalizers"]),
                rule(&["list", "delete"], &[CORE], &["pods"]),
                events_rule(),
            ],
        ),
        (
            "daemon-set-controller",
            vec![
                rule(READ, &[EXTENSIONS, APPS], &["daemonsets"]),
                rule(&["update"], &[EXTENSIONS, APPS], &["daemonsets/status"]),
                rule(&["update"], &[EXTENSIONS, APPS], &["daemonsets/finalizers"]),
                rule(&["list", "watch"], &[CORE], &["nodes"]),
                rule(&["list", "watch", "create", "delete", "patch"], &[CORE], &["pods"]),
                rule(&["create"], &[CORE], &["pods/binding"]),
                rule(
                    &["get", "list", "watch", "create", "delete", "update", "patch"],
                    &[APPS],
                    &["controllerrevisions"],
                ),
                events_rule(),
            ],
        ),
        (
            "deployment-controller",
            vec![
                rule(&["get", "list", "watch", "update"], &[EXTENSIONS, APPS], &["deployments"]),
                rule(&["update"], &[EXTENSIONS, APPS], &["deployments/status"]),
                rule(&["update"], &[EXTENSIONS, APPS], &["deployments/finalizers"]),
                rule(
                    &["get", "list", "watch", "create", "update", "patch", "delete"],
                    &[APPS, EXTENSIONS],
                    &["replicasets"],
                ),
                rule(&["get", "list", "watch", "update"], &[CORE], &["pods"]),
                events_rule(),
            ],
        ),
        (
            "disruption-controller",
            vec![
                rule(READ, &[EXTENSIONS, APPS], &["deployments"]),
                rule(READ, &[APPS, EXTENSIONS], &["replicasets"]),
                rule(READ, &[CORE], &["replicationcontrollers"]),
                rule(READ, &[POLICY], &["poddisruptionbudgets"]),
                rule(READ, &[APPS], &["statefulsets"]),
                rule(&["update"], &[POLICY], &["poddisruptionbudgets/status"]),
                rule(&["patch", "update"], &[CORE], &["pods/status"]),
                rule(&["get"], &["*"], &["*/scale"]),
                events_rule(),
            ],
        ),
        (
            "endpoint-controller",
            vec![
                rule(READ, &[CORE], &["services", "pods"]),
                rule(&["get", "list", "create", "update", "delete"], &[CORE], &["endpoints"]),
                rule(&["create"], &[CORE], &["endpoints/restricted"]),
                events_rule(),
            ],
        ),
        (
            "endpointslice-controller",
            vec![
                rule(READ, &[CORE], &["services", "pods", "nodes"]),
                rule(&["update"], &[CORE], &["services/finalizers"]),
                rule(&["get", "list", "create", "update", "delete"], &[DISCOVERY], &["endpointslices"]),
                events_rule(),
            ],
        ),
        (
            "endpointslicemirroring-controller",
            vec![
                rule(READ, &[CORE], &["services", "endpoints"]),
                rule(&["update"], &[CORE], &["services/finalizers"]),
                rule(&["update"], &[CORE], &["endpoints/finalizers"]),
                rule(&["get", "list", "create", "update", "delete"], &[DISCOVERY], &["endpointslices"]),
                events_rule(),
            ],
        ),
        (
            "expand-controller",
            vec![
                rule(&["get", "list", "watch", "update", "patch"], &[CORE], &["persistentvolumes"]),
                rule(&["update", "patch"], &[CORE], &["persistentvolumeclaims/status"]),
                rule(READ, &[CORE], &["persistentvolumeclaims"]),
                rule(READ, &[STORAGE], &["storageclasses"]),
                rule(&["get"], &[CORE], &["services", "endpoints"]),
                rule(&["get"], &[CORE], &["secrets"]),
                events_rule(),
            ],
        ),
        (
            "ephemeral-volume-controller",
            vec![
                rule(READ, &[CORE], &["pods"]),
                rule(&["update"], &[CORE], &["pods/finalizers"]),
                rule(&["get", "list", "watch", "create"], &[CORE], &["persistentvolumeclaims"]),
                events_rule(),
            ],
        ),
        (
            "generic-garbage-collector",
            vec![rule(&["get", "list", "watch", "patch", "update", "delete"], &["*"], &["*"]), events_rule()],
        ),
        (
            "horizontal-pod-autoscaler",
            vec![
                rule(READ, &[AUTOSCALING], &["horizontalpodautoscalers"]),
                rule(&["update"], &[AUTOSCALING], &["horizontalpodautoscalers/status"]),
                rule(&["get", "update"], &["*"], &["*/scale"]),
                rule(&["list"], &[CORE], &["pods"]),
                rule(&["list"], &["metrics.k8s.io"], &["pods"]),
                rule(&["get", "list"], &["custom.metrics.k8s.io"], &["*"]),
                rule(&["get", "list"], &["external.metrics.k8s.io"], &["*"]),
                events_rule(),
            ],
        ),
        (
            "job-controller",
            vec![
                rule(&["get", "list", "watch", "update", "patch"], &[BATCH], &["jobs"]),
                rule(&["update"], &[BATCH], &["jobs/status"]),
                rule(&["update"], &[BATCH], &["jobs/finalizers"]),
                rule(&["list", "watch", "create", "delete", "patch"], &[CORE], &["pods"]),
                events_rule(),
            ],
        ),
        (
            "namespace-controller",
            vec![
                rule(&["get", "list", "watch", "delete"], &[CORE], &["namespaces"]),
                rule(&["update"], &[CORE], &["namespaces/finalize", "namespaces/status"]),
                rule(&["get", "list", "delete", "deletecollection"], &["*"], &["*"]),
            ],
        ),
        (
            "node-controller",
            vec![
                rule(&["get", "list", "update", "delete", "patch"], &[CORE], &["nodes"]),
                rule(&["patch", "update"], &[CORE], &["nodes/status"]),
                rule(&["patch", "update"], &[CORE], &["pods/status"]),
                rule(&["list", "get", "delete"], &[CORE], &["pods"]),
                events_rule(),
            ],
        ),
        (
            "persistent-volume-binder",
            vec![
                rule(&["get", "list", "watch", "update", "create", "delete"], &[CORE], &["persistentvolumes"]),
                rule(&["update"], &[CORE], &["persistentvolumes/status"]),
                rule(&["get", "list", "watch", "update"], &[CORE], &["persistentvolumeclaims"]),
                rule(&["update"], &[CORE], &["persistentvolumeclaims/status"]),
                rule(&["list", "watch", "get", "create", "delete"], &[CORE], &["pods"]),
                rule(READ, &[STORAGE], &["storageclasses"]),
                rule(&["get", "create", "update", "delete"], &[CORE], &["endpoints"]),
                rule(&["get", "create", "delete"], &[CORE], &["services"]),
                rule(&["get"], &[CORE], &["secrets"]),
                rule(&["get", "list"], &[CORE], &["nodes"]),
                rule(&["watch"], &[CORE], &["events"]),
                events_rule(),
            ],
        ),
        (
            "pod-garbage-collector",
            vec![
                rule(&["list", "watch", "delete"], &[CORE], &["pods"]),
                rule(&["get", "list"], &[CORE], &["nodes"]),
                rule(&["patch"], &[CORE], &["pods/status"]),
            ],
        ),
        (
            "replicaset-controller",
            vec![
                rule(&["get", "list", "watch", "update"], &[APPS, EXTENSIONS], &["replicasets"]),
                rule(&["update"], &[APPS, EXTENSIONS], &["replicasets/status"]),
                rule(&["update"], &[APPS, EXTENSIONS], &["replicasets/finalizers"]),
                rule(&["list", "watch", "patch", "create", "delete"], &[CORE], &["pods"]),
                events_rule(),
            ],
        ),
        (
            "replication-controller",
            vec![
                rule(&["get", "list", "watch", "update"], &[CORE], &["replicationcontrollers"]),
                rule(&["update"], &[CORE], &["replicationcontrollers/status"]),
                rule(&["update"], &[CORE], &["replicationcontrollers/finalizers"]),
                rule(&["list", "watch", "patch", "create", "delete"], &[CORE], &["pods"]),
                events_rule(),
            ],
        ),
        (
            "resourcequota-controller",
            vec![
                rule(&["list", "watch"], &["*"], &["*"]),
                rule(&["update"], &[CORE], &["resourcequotas/status"]),
                events_rule(),
            ],
        ),
        (
            "route-controller",
            vec![
                rule(&["list", "watch"], &[CORE], &["nodes"]),
                rule(&["patch"], &[CORE], &["nodes/status"]),
                events_rule(),
            ],
        ),
        (
            "service-account-controller",
            vec![rule(&["create"], &[CORE], &["serviceaccounts"]), events_rule()],
        ),
        (
            "service-controller",
            vec![
                rule(READ, &[CORE], &["services"]),
                rule(&["patch", "update"], &[CORE], &["services/status"]),
                rule(&["list", "watch"], &[CORE], &["nodes"]),
                events_rule(),
            ],
        ),
        (
            "statefulset-controller",
            vec![
                rule(&["list", "watch"], &[CORE], &["pods"]),
                rule(READ, &[APPS], &["statefulsets"]),
                rule(&["update"], &[APPS], &["statefulsets/status"]),
                rule(&["update"], &[APPS], &["statefulsets/finalizers"]),
                rule(&["get", "create", "delete", "update", "patch"], &[CORE], &["pods"]),
                rule(
                    &["get", "create", "delete", "update", "patch", "list", "watch"],
                    &[APPS],
                    &["controllerrevisions"],
                ),
                rule(&["get", "create"], &[CORE], &["persistentvolumeclaims"]),
                events_rule(),
                // StatefulSetAutoDeletePVC (beta, on by default).
                rule(&["update", "delete"], &[CORE], &["persistentvolumeclaims"]),
            ],
        ),
        (
            "ttl-controller",
            vec![rule(&["update", "patch", "list", "watch"], &[CORE], &["nodes"]), events_rule()],
        ),
        (
            "certificate-controller",
            vec![
                rule(&["get", "list", "watch", "delete"], &[CERTIFICATES], &["certificatesigningrequests"]),
                rule(
                    &["update"],
                    &[CERTIFICATES],
                    &["certificatesigningrequests/status", "certificatesigningrequests/approval"],
                ),
                rule(&["approve"], &[CERTIFICATES], &["signers"]).names(&["kubernetes.io/kube-apiserver-client-kubelet"]),
                rule(&["sign"], &[CERTIFICATES], &["signers"]).names(&[
                    "kubernetes.io/legacy-unknown",
                    "kubernetes.io/kube-apiserver-client",
                    "kubernetes.io/kube-apiserver-client-kubelet",
                    "kubernetes.io/kubelet-serving",
                ]),
                rule(&["create"], &[AUTHZ], &["subjectaccessreviews"]),
                events_rule(),
            ],
        ),
        (
            "pvc-protection-controller",
            vec![
                rule(&["get", "list", "watch", "update"], &[CORE], &["persistentvolumeclaims"]),
                rule(&["list", "watch", "get"], &[CORE], &["pods"]),
                events_rule(),
            ],
        ),
        (
            "pv-protection-controller",
            vec![rule(&["get", "list", "watch", "update"], &[CORE], &["persistentvolumes"]), events_rule()],
        ),
        (
            "ttl-after-finished-controller",
            vec![rule(&["get", "list", "watch", "delete"], &[BATCH], &["jobs"]), events_rule()],
        ),
        (
            "root-ca-cert-publisher",
            vec![rule(&["create", "update"], &[CORE], &["configmaps"]), events_rule()],
        ),
        (
            "validatingadmissionpolicy-status-controller",
            vec![
                rule(READ, &["admissionregistration.k8s.io"], &["validatingadmissionpolicies"]),
                rule(
                    &["get", "patch", "update"],
                    &["admissionregistration.k8s.io"],
                    &["validatingadmissionpolicies/status"],
                ),
                events_rule(),
            ],
        ),
        (
            "legacy-service-account-token-cleaner",
            vec![
                rule(&["get"], &[CORE], &["configmaps"]).names(&["kube-apiserver-legacy-service-account-token-tracking"]),
                rule(&["patch", "delete"], &[CORE], &["secrets"]),
            ],
        ),
    ]
}

/// Every bootstrap ClusterRole: upstream's system roles, then its controller roles.
pub fn cluster_roles() -> Vec<Value> {
    let controllers = controller_role_rules()
        .into_iter()
        .map(|(sa, rules)| cluster_role(&format!("{CONTROLLER_ROLE_PREFIX}{sa}"), &rules));
    system_cluster_roles().into_iter().chain(controllers).chain(krust::cluster_roles()).collect()
}

/// Every bootstrap ClusterRoleBinding: upstream's, its controller bindings, and krust's own.
pub fn cluster_role_bindings() -> Vec<Value> {
    let mut out = vec![
        cluster_binding("cluster-admin", vec![group("system:masters")]),
        cluster_binding("system:monitoring", vec![group("system:monitoring")]),
        cluster_binding("system:discovery", vec![group("system:authenticated")]),
        cluster_binding("system:basic-user", vec![group("system:authenticated")]),
        cluster_binding(
            "system:public-info-viewer",
            vec![group("system:authenticated"), group("system:unauthenticated")],
        ),
        cluster_binding("system:node-proxier", vec![user("system:kube-proxy")]),
        cluster_binding("system:kube-controller-manager", vec![user("system:kube-controller-manager")]),
        cluster_binding("system:kube-dns", vec![service_account("kube-system", "kube-dns")]),
        cluster_binding("system:kube-scheduler", vec![user("system:kube-scheduler")]),
        cluster_binding("system:volume-scheduler", vec![user("system:kube-scheduler")]),
        // No subjects since v1.8: nodes are authorized by the Node authorizer.
        cluster_binding("system:node", vec![]),
        cluster_binding("system:service-account-issuer-discovery", vec![group("system:serviceaccounts")]),
    ];
    for (sa, _) in controller_role_rules() {
        out.push(cluster_binding(
            &format!("{CONTROLLER_ROLE_PREFIX}{sa}"),
            vec![service_account("kube-system", sa)],
        ));
    }
    // krust's own (as k3s binds its own): the API server's kubelet client reaches kubelets'
    // logs, exec and port-forward, which the kubelet authorizes against this role.
    out.push(binding(
        "ClusterRoleBinding",
        None,
        "krust:kube-apiserver-kubelet-client",
        "ClusterRole",
        "system:kubelet-api-admin",
        vec![user(KUBELET_CLIENT_USER)],
    ));
    out.extend(krust::cluster_role_bindings());
    out
}

/// Upstream's namespaced bootstrap Roles (namespace_policy.go), in kube-system and kube-public.
pub fn roles() -> Vec<Value> {
    let leader_locking = || {
        vec![
            rule(&["watch", "get", "list", "create", "update"], &[COORDINATION], &["leases"]),
            rule(&["watch", "get", "list", "create", "update"], &[COORDINATION], &["leasecandidates"]),
        ]
    };
    let mut out = vec![
        role(
            "kube-system",
            "extension-apiserver-authentication-reader",
            &[rule(READ, &[CORE], &["configmaps"]).names(&["extension-apiserver-authentication"])],
        ),
        role("kube-system", "system::leader-locking-kube-controller-manager", &leader_locking()),
        role("kube-system", "system::leader-locking-kube-scheduler", &leader_locking()),
        role("kube-system", "system:controller:bootstrap-signer", &[rule(READ, &[CORE], &["secrets"])]),
        role(
            "kube-system",
            "system:controller:cloud-provider",
            &[rule(&["create", "get", "list", "watch"], &[CORE], &["configmaps"])],
        ),
        role(
            "kube-system",
            "system:controller:token-cleaner",
            &[rule(&["delete", "get", "list", "watch"], &[CORE], &["secrets"]), events_rule()],
        ),
        role(
            "kube-public",
            "system:controller:bootstrap-signer",
            &[
                rule(READ, &[CORE], &["configmaps"]),
                rule(&["update"], &[CORE], &["configmaps"]).names(&["cluster-info"]),
                events_rule(),
            ],
        ),
    ];
    out.extend(krust::roles());
    out
}

/// Upstream's namespaced bootstrap RoleBindings.
pub fn role_bindings() -> Vec<Value> {
    let sa = |name| service_account("kube-system", name);
    let mut out = vec![
        role_binding(
            "kube-system",
            "system::extension-apiserver-authentication-reader",
            "extension-apiserver-authentication-reader",
            vec![user("system:kube-controller-manager"), user("system:kube-scheduler")],
        ),
        role_binding(
            "kube-system",
            "system::leader-locking-kube-controller-manager",
            "system::leader-locking-kube-controller-manager",
            vec![
                user("system:kube-controller-manager"),
                sa("kube-controller-manager"),
                sa("leader-election-controller"),
            ],
        ),
        role_binding(
            "kube-system",
            "system::leader-locking-kube-scheduler",
            "system::leader-locking-kube-scheduler",
            vec![user("system:kube-scheduler"), sa("kube-scheduler")],
        ),
        role_binding(
            "kube-system",
            "system:controller:bootstrap-signer",
            "system:controller:bootstrap-signer",
            vec![sa("bootstrap-signer")],
        ),
        role_binding(
            "kube-system",
            "system:controller:cloud-provider",
            "system:controller:cloud-provider",
            vec![sa("cloud-provider")],
        ),
        role_binding(
            "kube-system",
            "system:controller:token-cleaner",
            "system:controller:token-cleaner",
            vec![sa("token-cleaner")],
        ),
        role_binding(
            "kube-public",
            "system:controller:bootstrap-signer",
            "system:controller:bootstrap-signer",
            vec![sa("bootstrap-signer")],
        ),
    ];
    out.extend(krust::role_bindings());
    out
}

/// Upstream's `Covers` over rules as JSON (the authorizer's [`uncovered`]): whether `owner`
/// rules allow all that `servant` rules do, and the atomic rules they do not.
pub fn covers(owner: &[Value], servant: &[Value]) -> (bool, Vec<Value>) {
    let parse = |rules: &[Value]| rules.iter().map(PolicyRule::from_value).collect::<Vec<_>>();
    let missing: Vec<Value> = uncovered(&parse(owner), &parse(servant)).iter().map(PolicyRule::to_value).collect();
    (missing.is_empty(), missing)
}

// ---- reconciliation (upstream's pkg/registry/rbac/reconciliation) ----

/// Objects annotated `autoupdate: "false"` belong to their admins.
pub fn is_protected(existing: &Value) -> bool {
    existing["metadata"]["annotations"][AUTOUPDATE_ANNOTATION] == "false"
}

/// Adds the entries of `expected` missing from `existing` (existing values win, as upstream's
/// `merge(expected, existing)`).
fn merge_missing(existing: &mut Value, expected: &Value) {
    let Some(want) = expected.as_object() else { return };
    if !existing.is_object() {
        *existing = json!({});
    }
    for (k, v) in want {
        if existing.get(k).is_none() {
            existing[k] = v.clone();
        }
    }
}

fn merge_metadata(out: &mut Value, expected: &Value) {
    for key in ["labels", "annotations"] {
        if expected["metadata"][key].is_object() {
            merge_missing(&mut out["metadata"][key], &expected["metadata"][key]);
        }
    }
}

/// What reconciling a (Cluster)Role changes: `None` when nothing (or when protected),
/// otherwise the object to write. Missing rules are appended (never removed); aggregated
/// roles get missing selectors, their rules are the aggregation controller's.
pub fn reconcile_role(existing: &Value, expected: &Value) -> Option<Value> {
    if is_protected(existing) {
        return None;
    }
    let mut out = existing.clone();
    merge_metadata(&mut out, expected);
    let have = existing["rules"].as_array().cloned().unwrap_or_default();
    let want = expected["rules"].as_array().cloned().unwrap_or_default();
    let (_, missing) = covers(&have, &want);
    if !missing.is_empty() {
        out["rules"] = Value::Array(have.into_iter().chain(missing).collect());
    }
    if let Some(want) = expected["aggregationRule"]["clusterRoleSelectors"].as_array() {
        let mut selectors = existing["aggregationRule"]["clusterRoleSelectors"].as_array().cloned().unwrap_or_default();
        let before = selectors.len();
        for s in want {
            if !selectors.contains(s) {
                selectors.push(s.clone());
            }
        }
        if selectors.len() != before || existing["aggregationRule"].is_null() {
            out["aggregationRule"] = json!({"clusterRoleSelectors": selectors});
        }
    }
    (out != *existing).then_some(out)
}

/// What reconciling a (Cluster)RoleBinding does.
#[derive(Debug, PartialEq)]
pub enum BindingChange {
    Unchanged,
    /// Write this object (labels, annotations or subjects were missing).
    Update(Value),
    /// The roleRef differs and roleRef is immutable: delete, then create this.
    Recreate(Value),
}

/// A subject's identity, with an absent apiGroup or namespace as empty.
fn subject_key(s: &Value) -> [&str; 4] {
    let f = |k: &str| s[k].as_str().unwrap_or_default();
    [f("kind"), f("apiGroup"), f("name"), f("namespace")]
}

fn role_ref_key(r: &Value) -> [&str; 3] {
    let f = |k: &str| r[k].as_str().unwrap_or_default();
    [f("apiGroup"), f("kind"), f("name")]
}

/// Upstream's `computeReconciledRoleBinding` without removal of extra subjects.
pub fn reconcile_binding(existing: &Value, expected: &Value) -> BindingChange {
    if is_protected(existing) {
        return BindingChange::Unchanged;
    }
    if role_ref_key(&existing["roleRef"]) != role_ref_key(&expected["roleRef"]) {
        return BindingChange::Recreate(expected.clone());
    }
    let mut out = existing.clone();
    merge_metadata(&mut out, expected);
    let mut subjects = existing["subjects"].as_array().cloned().unwrap_or_default();
    let before = subjects.len();
    for s in expected["subjects"].as_array().into_iter().flatten() {
        if !subjects.iter().any(|h| subject_key(h) == subject_key(s)) {
            subjects.push(s.clone());
        }
    }
    if subjects.len() != before {
        out["subjects"] = Value::Array(subjects);
    }
    if out == *existing {
        BindingChange::Unchanged
    } else {
        BindingChange::Update(out)
    }
}

fn write_options() -> WriteOptions {
    WriteOptions {
        dry_run: false,
        field_manager: Some("kube-apiserver".into()),
    }
}

fn ctx_in(namespace: Option<&str>) -> ReqCtx {
    ReqCtx {
        namespace: namespace.map(String::from),
        ..ReqCtx::default()
    }
}

/// Whether the kind holds roles (rules) or bindings (subjects).
#[derive(Clone, Copy)]
enum Shape {
    Role,
    Binding,
}

/// Reconciles one kind: one list, then a write for each object that needs one.
async fn reconcile_kind(registry: &Registry, plural: &str, shape: Shape, expected: Vec<Value>) -> anyhow::Result<()> {
    let store = registry.find(RBAC_GROUP, "v1", plural).ok_or_else(|| anyhow::anyhow!("{plural} not served"))?;
    let everything = Selection {
        labels: LabelSelector::everything(),
        fields: FieldSelector::everything(),
    };
    let list = ListOptions {
        selection: everything,
        limit: 0,
        continue_token: None,
        resource_version: None,
        resource_version_match: None,
    };
    let existing: HashMap<(String, String), Value> = store
        .list(None, &list)
        .await
        .with_context(|| format!("listing {plural}"))?
        .items
        .into_iter()
        .map(|o| ((meta::namespace(&o).unwrap_or_default().to_string(), meta::name(&o).to_string()), o))
        .collect();
    for want in expected {
        let want = store.decode_body(want).with_context(|| format!("decoding a bootstrap {plural} object"))?;
        let (ns, name) = (meta::namespace(&want).map(String::from), meta::name(&want).to_string());
        let key = (ns.clone().unwrap_or_default(), name.clone());
        let ctx = ctx_in(ns.as_deref());
        let result = match existing.get(&key) {
            None => create(&store, &ctx, want).await.map(|_| "created"),
            Some(cur) => match shape {
                Shape::Role if reconcile_role(cur, &want).is_some() => update(&store, &ctx, &name, move |cur| reconcile_role(cur, &want)).await,
                Shape::Binding => match reconcile_binding(cur, &want) {
                    BindingChange::Unchanged => continue,
                    BindingChange::Update(_) => {
                        update(&store, &ctx, &name, move |cur| match reconcile_binding(cur, &want) {
                            BindingChange::Update(next) => Some(next),
                            _ => None,
                        })
                        .await
                    }
                    BindingChange::Recreate(next) => recreate(&store, &ctx, &name, next).await.map(|_| "recreated"),
                },
                Shape::Role => continue,
            },
        };
        let action = result.with_context(|| format!("reconciling {plural} {}", key.1))?;
        tracing::info!(
            kind = plural,
            namespace = ns.as_deref().unwrap_or_default(),
            name,
            "{action} bootstrap RBAC object"
        );
    }
    Ok(())
}

async fn create(store: &GenericStore, ctx: &ReqCtx, obj: Value) -> Result<(), ApiError> {
    match store.create(ctx, obj, &write_options()).await {
        Ok(_) | Err(ApiError::AlreadyExists { .. }) => Ok(()),
        Err(e) => Err(e),
    }
}

/// Writes the reconciled form of the current object (recomputed from what the store holds, so
/// a concurrent writer is not overwritten).
async fn update<F>(store: &GenericStore, ctx: &ReqCtx, name: &str, reconcile: F) -> Result<&'static str, ApiError>
where
    F: Fn(&Value) -> Option<Value>,
{
    store
        .guaranteed_update(ctx, name, Target::Main, &write_options(), |cur| {
            Ok(reconcile(cur).unwrap_or_else(|| cur.clone()))
        })
        .await?;
    Ok("updated")
}

async fn recreate(store: &GenericStore, ctx: &ReqCtx, name: &str, obj: Value) -> Result<(), ApiError> {
    match store.delete(ctx, name, &Default::default()).await {
        Ok(_) | Err(ApiError::NotFound { .. }) => {}
        Err(e) => return Err(e),
    }
    create(store, ctx, obj).await
}

/// Creates and reconciles the bootstrap policy, as kube-apiserver's `rbac/bootstrap-roles`
/// post-start hook: roles before the bindings that name them. Logs one line per object
/// changed; writes nothing when everything is in place.
pub async fn reconcile(registry: &Registry) -> anyhow::Result<()> {
    reconcile_kind(registry, "clusterroles", Shape::Role, cluster_roles()).await?;
    reconcile_kind(registry, "clusterrolebindings", Shape::Binding, cluster_role_bindings()).await?;
    reconcile_kind(registry, "roles", Shape::Role, roles()).await?;
    reconcile_kind(registry, "rolebindings", Shape::Binding, role_bindings()).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    /// How often each name occurs.
    fn names(objects: &[Value]) -> BTreeMap<String, usize> {
        let mut out = BTreeMap::new();
        for o in objects {
            let key = match meta::namespace(o) {
                Some(ns) => format!("{ns}/{}", meta::name(o)),
                None => meta::name(o).to_string(),
            };
            *out.entry(key).or_insert(0) += 1;
        }
        out
    }

    fn find<'a>(objs: &'a [Value], name: &str) -> &'a Value {
        objs.iter().find(|o| meta::name(o) == name).unwrap_or_else(|| panic!("{name} missing"))
    }

    #[test]
    fn names_are_unique_per_kind() {
        for (kind, objs) in [
            ("clusterroles", cluster_roles()),
            ("clusterrolebindings", cluster_role_bindings()),
            ("roles", roles()),
            ("rolebindings", role_bindings()),
        ] {
            let dups: Vec<_> = names(&objs).into_iter().filter(|(_, n)| *n > 1).collect();
            assert!(dups.is_empty(), "{kind}: duplicate names {dups:?}");
        }
    }

    #[test]
    fn every_object_carries_the_bootstrap_label_and_autoupdate() {
        for o in cluster_roles().iter().chain(&cluster_role_bindings()).chain(&roles()).chain(&role_bindings()) {
            assert_eq!(o["metadata"]["labels"][BOOTSTRAPPING_LABEL], "rbac-defaults", "{}", meta::name(o));
            assert_eq!(o["metadata"]["annotations"][AUTOUPDATE_ANNOTATION], "true", "{}", meta::name(o));
            assert_eq!(o["apiVersion"], API_VERSION);
        }
    }

    #[test]
    fn every_controller_role_is_bound_to_its_service_account() {
        let bindings = cluster_role_bindings();
        let controller_roles: Vec<_> = cluster_roles()
            .into_iter()
            .filter(|r| meta::name(r).starts_with(CONTROLLER_ROLE_PREFIX))
            .collect();
        assert!(
            controller_roles.len() >= 30,
            "upstream has over 30 controller roles, got {}",
            controller_roles.len()
        );
        for r in controller_roles {
            let name = meta::name(&r);
            let b = find(&bindings, name);
            assert_eq!(b["roleRef"]["name"], name);
            let sa = name.strip_prefix(CONTROLLER_ROLE_PREFIX).unwrap();
            assert_eq!(b["subjects"], json!([service_account("kube-system", sa)]));
        }
    }

    #[test]
    fn every_binding_names_a_bootstrap_role() {
        let cluster_roles = cluster_roles();
        for b in cluster_role_bindings() {
            find(&cluster_roles, b["roleRef"]["name"].as_str().unwrap());
        }
        let roles = roles();
        for b in role_bindings() {
            let ns = meta::namespace(&b).unwrap();
            let role = b["roleRef"]["name"].as_str().unwrap();
            assert!(roles.iter().any(|r| meta::namespace(r) == Some(ns) && meta::name(r) == role), "{ns}/{role}");
        }
    }

    #[test]
    fn upstream_bindings_as_in_v1_32() {
        let b = cluster_role_bindings();
        assert_eq!(find(&b, "cluster-admin")["subjects"], json!([group("system:masters")]));
        assert!(find(&b, "system:node").get("subjects").is_none(), "system:node has no subjects since v1.8");
        assert_eq!(
            find(&b, "system:public-info-viewer")["subjects"],
            json!([group("system:authenticated"), group("system:unauthenticated")])
        );
        assert_eq!(find(&b, "system:kube-dns")["subjects"], json!([service_account("kube-system", "kube-dns")]));
        let kubelet = find(&b, "krust:kube-apiserver-kubelet-client");
        assert_eq!(kubelet["roleRef"]["name"], "system:kubelet-api-admin");
        assert_eq!(kubelet["subjects"], json!([user(KUBELET_CLIENT_USER)]));
    }

    #[test]
    fn aggregation_labels_chain_view_into_edit_into_admin() {
        let roles = cluster_roles();
        let labels = |n: &str| find(&roles, n)["metadata"]["labels"].clone();
        let selects = |n: &str| find(&roles, n)["aggregationRule"]["clusterRoleSelectors"][0]["matchLabels"].clone();
        assert_eq!(selects("admin"), json!({AGGREGATE_TO_ADMIN: "true"}));
        assert_eq!(selects("edit"), json!({AGGREGATE_TO_EDIT: "true"}));
        assert_eq!(selects("view"), json!({AGGREGATE_TO_VIEW: "true"}));
        assert_eq!(labels("edit")[AGGREGATE_TO_ADMIN], "true");
        assert_eq!(labels("view")[AGGREGATE_TO_EDIT], "true");
        assert_eq!(labels("system:aggregate-to-view")[AGGREGATE_TO_VIEW], "true");
        assert!(find(&roles, "admin").get("rules").is_none(), "aggregated roles start without rules");
    }

    #[test]
    fn rules_are_sorted_as_rule_or_die_leaves_them() {
        let r = rule(&["watch", "get"], &["b", "a"], &["pods"]).names(&["y", "x"]).to_json();
        assert_eq!(
            r,
            json!({"verbs": ["get", "watch"], "apiGroups": ["a", "b"], "resources": ["pods"], "resourceNames": ["x", "y"]})
        );
        assert_eq!(
            urls(&["get"], &["/b", "/a"]).to_json(),
            json!({"verbs": ["get"], "nonResourceURLs": ["/a", "/b"]})
        );
    }

    #[test]
    fn covers_handles_wildcards_subresources_names_and_urls() {
        let admin = vec![rule(&["*"], &["*"], &["*"]).to_json(), urls(&["*"], &["*"]).to_json()];
        let all: Vec<Value> = cluster_roles()
            .iter()
            .flat_map(|r| r["rules"].as_array().cloned().unwrap_or_default())
            .collect();
        assert!(covers(&admin, &all).0, "cluster-admin covers every bootstrap rule");

        let scale = vec![rule(&["get"], &["*"], &["*/scale"]).to_json()];
        assert!(covers(&scale, &[rule(&["get"], &["apps"], &["deployments/scale"]).to_json()]).0);
        assert!(!covers(&scale, &[rule(&["get"], &["apps"], &["deployments"]).to_json()]).0);

        let named = vec![rule(&["get"], &[""], &["configmaps"]).names(&["a"]).to_json()];
        assert!(covers(&named, &[rule(&["get"], &[""], &["configmaps"]).names(&["a"]).to_json()]).0);
        assert!(
            !covers(&named, &[rule(&["get"], &[""], &["configmaps"]).to_json()]).0,
            "a named rule does not cover all names"
        );

        let health = vec![urls(&["get"], &["/healthz/*"]).to_json()];
        assert!(covers(&health, &[urls(&["get"], &["/healthz/etcd"]).to_json()]).0);
        assert!(!covers(&health, &[urls(&["get"], &["/livez"]).to_json()]).0);

        let (ok, missing) = covers(
            &[rule(&["get"], &[""], &["pods"]).to_json()],
            &[rule(&["get", "list"], &[""], &["pods"]).to_json()],
        );
        assert!(!ok);
        assert_eq!(missing, vec![json!({"verbs": ["list"], "apiGroups": [""], "resources": ["pods"]})]);
    }

    #[test]
    fn reconcile_role_appends_missing_rules_and_keeps_added_ones() {
        let expected = cluster_role("r", &[rule(&["get", "list"], &[""], &["pods"])]);
        let mut existing = expected.clone();
        existing["rules"] =
            json!([{"verbs": ["get"], "apiGroups": [""], "resources": ["pods"]}, {"verbs": ["get"], "apiGroups": [""], "resources": ["secrets"]}]);
        existing["metadata"]["labels"] = json!({"mine": "x", BOOTSTRAPPING_LABEL: "changed"});
        let out = reconcile_role(&existing, &expected).expect("a change");
        assert_eq!(
            out["rules"].as_array().unwrap().len(),
            3,
            "user rule kept, missing list appended: {}",
            out["rules"]
        );
        assert_eq!(out["rules"][2], json!({"verbs": ["list"], "apiGroups": [""], "resources": ["pods"]}));
        assert_eq!(
            out["metadata"]["labels"],
            json!({"mine": "x", BOOTSTRAPPING_LABEL: "changed"}),
            "existing label values win"
        );
        assert_eq!(reconcile_role(&out, &expected), None, "a second pass changes nothing");
    }

    #[test]
    fn reconcile_role_respects_autoupdate_false_and_adds_missing_annotation() {
        let expected = cluster_role("r", &[rule(&["get"], &[""], &["pods"])]);
        let mut protected = expected.clone();
        protected["rules"] = json!([]);
        protected["metadata"]["annotations"][AUTOUPDATE_ANNOTATION] = json!("false");
        assert_eq!(reconcile_role(&protected, &expected), None);
        let mut unannotated = expected.clone();
        unannotated["metadata"].as_object_mut().unwrap().remove("annotations");
        let out = reconcile_role(&unannotated, &expected).expect("absent annotation counts as true");
        assert_eq!(out["metadata"]["annotations"][AUTOUPDATE_ANNOTATION], "true");
    }

    #[test]
    fn reconcile_role_leaves_aggregated_rules_and_restores_selectors() {
        let expected = aggregated_role("view", AGGREGATE_TO_VIEW, Some(AGGREGATE_TO_EDIT));
        let mut existing = expected.clone();
        existing["rules"] = json!([{"verbs": ["get"], "apiGroups": [""], "resources": ["pods"]}]);
        assert_eq!(reconcile_role(&existing, &expected), None, "aggregated rules are the controller's");
        existing["aggregationRule"] = json!({"clusterRoleSelectors": [{"matchLabels": {"mine": "true"}}]});
        let out = reconcile_role(&existing, &expected).unwrap();
        assert_eq!(
            out["aggregationRule"]["clusterRoleSelectors"],
            json!([{"matchLabels": {"mine": "true"}}, {"matchLabels": {AGGREGATE_TO_VIEW: "true"}}])
        );
    }

    #[test]
    fn reconcile_binding_adds_subjects_and_recreates_on_role_ref_change() {
        let expected = cluster_binding("b", vec![group("g1"), service_account("kube-system", "sa")]);
        let mut existing = expected.clone();
        existing["subjects"] = json!([{"kind": "User", "apiGroup": RBAC_GROUP, "name": "extra"}, {"kind": "Group", "apiGroup": RBAC_GROUP, "name": "g1"}]);
        let BindingChange::Update(out) = reconcile_binding(&existing, &expected) else {
            panic!("expected an update")
        };
        assert_eq!(out["subjects"].as_array().unwrap().len(), 3);
        assert_eq!(reconcile_binding(&out, &expected), BindingChange::Unchanged);
        existing["roleRef"]["name"] = json!("other");
        assert_eq!(reconcile_binding(&existing, &expected), BindingChange::Recreate(expected.clone()));
        existing["metadata"]["annotations"][AUTOUPDATE_ANNOTATION] = json!("false");
        assert_eq!(reconcile_binding(&existing, &expected), BindingChange::Unchanged);
    }
}
