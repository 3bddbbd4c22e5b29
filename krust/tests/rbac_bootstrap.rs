//! Upstream's RBAC bootstrap policy on a real server, through kubectl: the roles and bindings
//! exist from the start, and the ClusterRole aggregation controller fills admin, edit and view
//! from their aggregate-to-* parts and from roles users label into them.

mod common;

use std::time::Duration;

use common::{poll, TestServer};

/// Whether the ClusterRole grants `verb` on `resource` (as a literal entry of one rule).
fn grants(server: &TestServer, role: &str, verb: &str, resource: &str) -> bool {
    let out = server.kubectl(&["get", "clusterrole", role, "-o", "json"]);
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(&out.stdout) else { return false };
    v["rules"].as_array().into_iter().flatten().any(|r| {
        let has = |k: &str, x: &str| r[k].as_array().is_some_and(|a| a.iter().any(|e| e == x));
        has("verbs", verb) && has("resources", resource)
    })
}

#[test]
fn bootstrap_roles_exist_and_admin_edit_view_are_aggregated() {
    let server = TestServer::start();
    let roles = server.kubectl_ok(&["get", "clusterroles", "-o", "name"]);
    for name in ["cluster-admin", "admin", "edit", "view", "system:node", "system:basic-user", "system:controller:job-controller", "system:kube-scheduler"] {
        assert!(roles.lines().any(|l| l == format!("clusterrole.rbac.authorization.k8s.io/{name}")), "{name} missing from:\n{roles}");
    }
    let bindings = server.kubectl_ok(&["get", "clusterrolebindings", "-o", "name"]);
    assert!(bindings.contains("clusterrolebinding.rbac.authorization.k8s.io/krust:kube-apiserver-kubelet-client"), "{bindings}");

    // Spot checks of upstream's aggregated admin: its own part, edit's and view's.
    assert!(
        poll(Duration::from_secs(10), || grants(&server, "admin", "create", "rolebindings")
            && grants(&server, "admin", "create", "pods/exec")
            && grants(&server, "admin", "get", "pods/log")),
        "admin aggregates system:aggregate-to-admin, -edit and -view:\n{}\n{}",
        server.kubectl_ok(&["get", "clusterrole", "admin", "-o", "yaml"]),
        server.logs()
    );
    assert!(grants(&server, "edit", "patch", "deployments/scale") && grants(&server, "edit", "get", "secrets"));
    assert!(grants(&server, "view", "list", "endpointslices"));
    assert!(!grants(&server, "view", "get", "secrets"), "view does not read secrets");
    assert!(!grants(&server, "edit", "create", "rolebindings"), "edit does not grant roles");

    // A role labelled into view reaches view, then edit and admin through their labels.
    server.kubectl_stdin_ok(
        &["apply", "-f", "-"],
        r#"
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata:
  name: widgets-view
  labels: {rbac.authorization.k8s.io/aggregate-to-view: "true"}
rules:
- apiGroups: [example.com]
  resources: [widgets]
  verbs: [get, list, watch]
"#,
    );
    assert!(
        poll(Duration::from_secs(10), || ["view", "edit", "admin"].iter().all(|r| grants(&server, r, "watch", "widgets"))),
        "widgets reach view, edit and admin"
    );
    server.kubectl_ok(&["delete", "clusterrole", "widgets-view"]);
    assert!(poll(Duration::from_secs(10), || ["view", "edit", "admin"].iter().all(|r| !grants(&server, r, "watch", "widgets"))), "and leave with it");
}
