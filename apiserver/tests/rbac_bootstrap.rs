//! The RBAC bootstrap policy: created on a fresh store, reconciled at every start (missing
//! rules and subjects restored, users' additions kept, `autoupdate: "false"` respected).

mod common;

use axum::http::StatusCode;
use common::call;
use serde_json::{json, Value};

const CR: &str = "/apis/rbac.authorization.k8s.io/v1/clusterroles";
const CRB: &str = "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings";
const AUTOUPDATE: &str = "rbac.authorization.kubernetes.io/autoupdate";

async fn app_in(dir: &std::path::Path) -> axum::Router {
    let backend = kine_sqlite::SqliteBackend::open(&dir.join("state.db")).await.unwrap();
    apiserver::app(backend).await.unwrap()
}

async fn get(app: &axum::Router, path: &str) -> Value {
    let (s, v) = call(app, "GET", path, None).await;
    assert_eq!(s, StatusCode::OK, "GET {path}: {v}");
    v
}

async fn put(app: &axum::Router, path: &str, body: Value) {
    let (s, v) = call(app, "PUT", path, Some(body)).await;
    assert_eq!(s, StatusCode::OK, "PUT {path}: {v}");
}

fn has_rule(role: &Value, verb: &str, resource: &str) -> bool {
    role["rules"].as_array().into_iter().flatten().any(|r| {
        let has = |k: &str, v: &str| r[k].as_array().is_some_and(|a| a.iter().any(|x| x == v));
        has("verbs", verb) && has("resources", resource)
    })
}

#[tokio::test]
async fn a_fresh_store_gets_upstreams_policy() {
    let dir = tempfile::tempdir().unwrap();
    let app = app_in(dir.path()).await;
    let admin = get(&app, &format!("{CR}/cluster-admin")).await;
    assert_eq!(admin["rules"][0], json!({"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]}));
    assert_eq!(admin["metadata"]["labels"]["kubernetes.io/bootstrapping"], "rbac-defaults");
    assert_eq!(admin["metadata"]["annotations"][AUTOUPDATE], "true");
    assert!(has_rule(&get(&app, &format!("{CR}/system:node")).await, "create", "nodes"));
    assert!(has_rule(&get(&app, &format!("{CR}/system:controller:job-controller")).await, "create", "pods"));
    let view = get(&app, &format!("{CR}/view")).await;
    assert_eq!(view["aggregationRule"]["clusterRoleSelectors"][0]["matchLabels"]["rbac.authorization.k8s.io/aggregate-to-view"], "true");
    let masters = get(&app, &format!("{CRB}/cluster-admin")).await;
    assert_eq!(masters["subjects"], json!([{"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": "system:masters"}]));
    let node = get(&app, &format!("{CRB}/system:node")).await;
    assert!(node.get("subjects").is_none(), "system:node is bound to nobody: {node}");
    let jobs = get(&app, &format!("{CRB}/system:controller:job-controller")).await;
    assert_eq!(jobs["subjects"], json!([{"kind": "ServiceAccount", "name": "job-controller", "namespace": "kube-system"}]));
    let reader = get(&app, "/apis/rbac.authorization.k8s.io/v1/namespaces/kube-system/roles/extension-apiserver-authentication-reader").await;
    assert_eq!(reader["rules"][0]["resourceNames"], json!(["extension-apiserver-authentication"]));
    get(&app, "/apis/rbac.authorization.k8s.io/v1/namespaces/kube-public/rolebindings/system:controller:bootstrap-signer").await;
}

#[tokio::test]
async fn a_restart_restores_bootstrap_rules_and_subjects_and_keeps_users_changes() {
    let dir = tempfile::tempdir().unwrap();
    let app = app_in(dir.path()).await;

    // A user adds a rule and a label to system:aggregate-to-view and removes its namespaces rule.
    let path = format!("{CR}/system:aggregate-to-view");
    let mut part = get(&app, &path).await;
    let mut rules: Vec<Value> = part["rules"].as_array().unwrap().iter().filter(|r| r["resources"] != json!(["namespaces"])).cloned().collect();
    rules.push(json!({"apiGroups": ["example.com"], "resources": ["widgets"], "verbs": ["get"]}));
    part["rules"] = json!(rules);
    part["metadata"]["labels"]["team"] = json!("mine");
    put(&app, &path, part).await;
    assert!(!has_rule(&get(&app, &path).await, "list", "namespaces"));

    // A protected role is emptied; a binding loses a subject; another gets a different roleRef.
    let discovery = format!("{CR}/system:discovery");
    let mut role = get(&app, &discovery).await;
    role["rules"] = json!([{"nonResourceURLs": ["/version"], "verbs": ["get"]}]);
    role["metadata"]["annotations"][AUTOUPDATE] = json!("false");
    put(&app, &discovery, role).await;
    let piv = format!("{CRB}/system:public-info-viewer");
    let mut b = get(&app, &piv).await;
    b["subjects"] = json!([{"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": "system:authenticated"}]);
    put(&app, &piv, b).await;
    let dns = format!("{CRB}/system:kube-dns");
    let (s, _) = call(&app, "DELETE", &dns, None).await;
    assert_eq!(s, StatusCode::OK);
    let wrong = json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding", "metadata": {"name": "system:kube-dns"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "view"},
        "subjects": [{"kind": "ServiceAccount", "name": "kube-dns", "namespace": "kube-system"}]});
    let (s, v) = call(&app, "POST", CRB, Some(wrong)).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let (s, _) = call(&app, "DELETE", &format!("{CRB}/system:kube-scheduler"), None).await;
    assert_eq!(s, StatusCode::OK);
    drop(app);

    let app = app_in(dir.path()).await;
    let part = get(&app, &path).await;
    assert!(has_rule(&part, "list", "namespaces"), "the removed bootstrap rule is back: {}", part["rules"]);
    assert!(has_rule(&part, "get", "widgets"), "the user's rule stays");
    assert_eq!(part["metadata"]["labels"]["team"], "mine");
    let role = get(&app, &discovery).await;
    assert_eq!(role["rules"], json!([{"nonResourceURLs": ["/version"], "verbs": ["get"]}]), "autoupdate=false is left alone");
    let b = get(&app, &piv).await;
    assert_eq!(b["subjects"].as_array().unwrap().len(), 2, "the missing subject is back: {}", b["subjects"]);
    assert_eq!(get(&app, &dns).await["roleRef"]["name"], "system:kube-dns", "a binding to another role is recreated");
    get(&app, &format!("{CRB}/system:kube-scheduler")).await;

    // Everything in place: a further start writes nothing.
    let before = newest_revision(&app).await;
    drop(app);
    let app = app_in(dir.path()).await;
    assert_eq!(newest_revision(&app).await, before, "no RBAC object was rewritten");
}

/// The highest resourceVersion among all RBAC objects.
async fn newest_revision(app: &axum::Router) -> i64 {
    let mut newest = 0;
    for kind in ["clusterroles", "clusterrolebindings", "roles", "rolebindings"] {
        let list = get(app, &format!("/apis/rbac.authorization.k8s.io/v1/{kind}")).await;
        for o in list["items"].as_array().unwrap() {
            newest = newest.max(o["metadata"]["resourceVersion"].as_str().unwrap().parse().unwrap());
        }
    }
    newest
}
