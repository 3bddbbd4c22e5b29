//! Access and token reviews (virtual, create-only kinds), local APIServices kept in step with
//! the registry, the CSR approval subresource, PriorityClass rules, flowcontrol and
//! CSIStorageCapacity serving: driven through the router over a real SQLite store.

mod common;

use std::time::Duration;

use apiserver::auth::UserInfo;
use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use serde_json::{json, Value};
use tower::ServiceExt;

struct Harness {
    app: axum::Router,
    _dir: tempfile::TempDir,
}

impl Harness {
    async fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let backend = kine_sqlite::SqliteBackend::open(&dir.path().join("state.db")).await.unwrap();
        let app = apiserver::app(backend).await.unwrap();
        Harness { app, _dir: dir }
    }

    async fn send(&self, method: &str, path: &str, ctype: &str, accept: Option<&str>, body: Option<Value>) -> (StatusCode, Value) {
        let mut b = Request::builder().method(method).uri(path).header(header::CONTENT_TYPE, ctype);
        if let Some(a) = accept {
            b = b.header(header::ACCEPT, a);
        }
        let mut req = b.body(Body::from(body.map(|b| b.to_string()).unwrap_or_default())).unwrap();
        req.extensions_mut().insert(UserInfo::from_subject("system:admin", &["system:masters".into()]));
        let resp = self.app.clone().oneshot(req).await.unwrap();
        let status = resp.status();
        let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX).await.unwrap();
        (status, serde_json::from_slice(&bytes).unwrap_or(Value::String(String::from_utf8_lossy(&bytes).into())))
    }

    async fn call(&self, method: &str, path: &str, body: Option<Value>) -> (StatusCode, Value) {
        common::call(&self.app, method, path, body).await
    }
}

const SAR: &str = "/apis/authorization.k8s.io/v1/subjectaccessreviews";
const SSAR: &str = "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews";

#[tokio::test]
async fn access_reviews_are_answered_not_stored() {
    let h = Harness::new().await;
    let sar = |user: &str, groups: Value| {
        json!({"apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview",
               "spec": {"user": user, "groups": groups, "resourceAttributes": {"namespace": "default", "verb": "list", "resource": "configmaps"}}})
    };
    // an authenticated user with no grant is refused; system:masters is allowed everything
    let (s, out) = h.call("POST", SAR, Some(sar("alice", json!(["system:authenticated"])))).await;
    assert_eq!(s, StatusCode::CREATED, "{out}");
    assert_eq!(out["status"], json!({"allowed": false}), "{out}");
    assert!(out["metadata"].get("uid").is_none(), "{out}");
    let (_, out) = h.call("POST", SAR, Some(sar("root", json!(["system:masters"])))).await;
    assert_eq!(out["status"], json!({"allowed": true}), "{out}");
    // a RoleBinding grants alice; the answer names it
    let role = json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role", "metadata": {"name": "cm-reader", "namespace": "default"},
                      "rules": [{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["list"]}]});
    let (s, out) = h.call("POST", "/apis/rbac.authorization.k8s.io/v1/namespaces/default/roles", Some(role)).await;
    assert_eq!(s, StatusCode::CREATED, "{out}");
    let binding = json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding", "metadata": {"name": "alice-cm", "namespace": "default"},
                         "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "cm-reader"},
                         "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": "alice"}]});
    let (s, out) = h.call("POST", "/apis/rbac.authorization.k8s.io/v1/namespaces/default/rolebindings", Some(binding)).await;
    assert_eq!(s, StatusCode::CREATED, "{out}");
    let mut granted = json!(null);
    for _ in 0..50 {
        granted = h.call("POST", SAR, Some(sar("alice", json!(["system:authenticated"])))).await.1;
        if granted["status"]["allowed"] == true {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(granted["status"]["reason"], r#"RBAC: allowed by RoleBinding "alice-cm/default" of Role "cm-reader" to User "alice""#, "{granted}");
    // a bare user name with no grant
    let (_, out) = h.call("POST", SAR, Some(sar("bob", json!([])))).await;
    assert_eq!(out["status"]["allowed"], false);
    // the local review agrees, and checks its namespace
    let mut lsar = sar("bob", json!([]));
    lsar["kind"] = json!("LocalSubjectAccessReview");
    let lpath = "/apis/authorization.k8s.io/v1/namespaces/default/localsubjectaccessreviews";
    let (s, out) = h.call("POST", lpath, Some(lsar.clone())).await;
    assert_eq!((s, &out["status"]["allowed"]), (StatusCode::CREATED, &json!(false)), "{out}");
    lsar["spec"]["resourceAttributes"]["namespace"] = json!("other");
    let (s, out) = h.call("POST", lpath, Some(lsar)).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{out}");
    assert!(out["message"].as_str().unwrap().contains("must match metadata.namespace"), "{out}");
    // invalid specs are 422
    let (s, out) = h.call("POST", SAR, Some(json!({"apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview", "spec": {}}))).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{out}");
    // only create is served
    let (s, _) = h.call("GET", SAR, None).await;
    assert_eq!(s, StatusCode::METHOD_NOT_ALLOWED);
    let (s, _) = h.call("DELETE", &format!("{SAR}/x"), None).await;
    assert_eq!(s, StatusCode::METHOD_NOT_ALLOWED);
    // self review: the caller is allowed
    let ssar = json!({"apiVersion": "authorization.k8s.io/v1", "kind": "SelfSubjectAccessReview",
                      "spec": {"nonResourceAttributes": {"path": "/", "verb": "get"}}});
    let (s, out) = h.call("POST", SSAR, Some(ssar.clone())).await;
    assert_eq!((s, &out["status"]["allowed"]), (StatusCode::CREATED, &json!(true)), "{out}");
    // no Table form: a Table-only Accept is 406, a fallback to JSON is served
    let (s, out) = h.send("POST", SSAR, "application/json", Some("application/json;as=Table;v=v1;g=meta.k8s.io"), Some(ssar.clone())).await;
    assert_eq!(s, StatusCode::NOT_ACCEPTABLE, "{out}");
    assert_eq!(out["reason"], "NotAcceptable");
    let (s, out) = h.send("POST", SSAR, "application/json", Some("application/json;as=Table;v=v1;g=meta.k8s.io,application/json"), Some(ssar)).await;
    assert_eq!((s, &out["kind"]), (StatusCode::CREATED, &json!("SelfSubjectAccessReview")));
}

#[tokio::test]
async fn rules_token_and_self_subject_reviews() {
    let h = Harness::new().await;
    let (s, out) = h
        .call("POST", "/apis/authorization.k8s.io/v1/selfsubjectrulesreviews",
              Some(json!({"apiVersion": "authorization.k8s.io/v1", "kind": "SelfSubjectRulesReview", "spec": {"namespace": "default"}})))
        .await;
    assert_eq!(s, StatusCode::CREATED, "{out}");
    assert_eq!(out["status"]["resourceRules"], json!([{"verbs": ["*"], "apiGroups": ["*"], "resources": ["*"]}]));
    let (s, out) = h
        .call("POST", "/apis/authentication.k8s.io/v1/selfsubjectreviews",
              Some(json!({"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"})))
        .await;
    assert_eq!(s, StatusCode::CREATED, "{out}");
    assert_eq!(out["status"]["userInfo"]["username"], "system:admin");
    assert_eq!(out["status"]["userInfo"]["groups"], json!(["system:masters", "system:authenticated"]));
    let (s, out) = h
        .call("POST", "/apis/authentication.k8s.io/v1/tokenreviews",
              Some(json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview", "spec": {"token": "abc"}})))
        .await;
    assert_eq!((s, &out["status"]["authenticated"]), (StatusCode::CREATED, &json!(false)), "{out}");
    // discovery: create only
    let (_, rl) = h.call("GET", "/apis/authorization.k8s.io/v1", None).await;
    let sar = rl["resources"].as_array().unwrap().iter().find(|r| r["name"] == "subjectaccessreviews").unwrap();
    assert_eq!(sar["verbs"], json!(["create"]));
    let (_, rl) = h.call("GET", "/apis/authentication.k8s.io/v1", None).await;
    assert!(rl["resources"].as_array().unwrap().iter().any(|r| r["name"] == "selfsubjectreviews"));
}

#[tokio::test]
async fn local_apiservices_follow_the_registry() {
    let h = Harness::new().await;
    let (s, core) = h.call("GET", "/apis/apiregistration.k8s.io/v1/apiservices/v1.", None).await;
    assert_eq!(s, StatusCode::OK, "{core}");
    assert_eq!(core["spec"], json!({"version": "v1", "groupPriorityMinimum": 18000, "versionPriority": 1}));
    let (_, apps) = h.call("GET", "/apis/apiregistration.k8s.io/v1/apiservices/v1.apps", None).await;
    assert_eq!(apps["spec"]["groupPriorityMinimum"], 17800);
    assert_eq!(apps["metadata"]["labels"]["kube-aggregator.kubernetes.io/automanaged"], "onstart");
    let (_, list) = h.call("GET", "/apis/apiregistration.k8s.io/v1/apiservices", None).await;
    let names: Vec<&str> = list["items"].as_array().unwrap().iter().map(|i| i["metadata"]["name"].as_str().unwrap()).collect();
    assert!(names.contains(&"v2.autoscaling") && names.contains(&"v1.flowcontrol.apiserver.k8s.io"), "{names:?}");
    // status comes from the sync loop
    let mut available = Value::Null;
    for _ in 0..40 {
        let (_, a) = h.call("GET", "/apis/apiregistration.k8s.io/v1/apiservices/v1.apps", None).await;
        available = a["status"]["conditions"][0].clone();
        if !available.is_null() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!((&available["type"], &available["status"], &available["reason"]), (&json!("Available"), &json!("True"), &json!("Local")));
    // in step: further syncs write nothing
    let (_, before) = h.call("GET", "/apis/apiregistration.k8s.io/v1/apiservices/v1.apps", None).await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    let (_, after) = h.call("GET", "/apis/apiregistration.k8s.io/v1/apiservices/v1.apps", None).await;
    assert_eq!(before["metadata"]["resourceVersion"], after["metadata"]["resourceVersion"]);

    // a CRD's group-version gets one, which goes with the CRD
    let crd = json!({"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": "widgets.example.com"},
        "spec": {"group": "example.com", "scope": "Namespaced", "names": {"plural": "widgets", "singular": "widget", "kind": "Widget", "listKind": "WidgetList"},
                 "versions": [{"name": "v1", "served": true, "storage": true, "schema": {"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}}}]}});
    let (s, out) = h.call("POST", "/apis/apiextensions.k8s.io/v1/customresourcedefinitions", Some(crd)).await;
    assert_eq!(s, StatusCode::CREATED, "{out}");
    let path = "/apis/apiregistration.k8s.io/v1/apiservices/v1.example.com";
    let mut got = (StatusCode::NOT_FOUND, Value::Null);
    for _ in 0..50 {
        got = h.call("GET", path, None).await;
        if got.0 == StatusCode::OK {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(got.0, StatusCode::OK, "{}", got.1);
    assert_eq!(got.1["spec"]["groupPriorityMinimum"], 1000);
    assert_eq!(got.1["metadata"]["labels"]["kube-aggregator.kubernetes.io/automanaged"], "true");
    h.call("DELETE", "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/widgets.example.com", None).await;
    let mut gone = false;
    for _ in 0..100 {
        if h.call("GET", path, None).await.0 == StatusCode::NOT_FOUND {
            gone = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(gone, "v1.example.com outlived its CRD");

    // a user's APIService naming a service is stored, marked unavailable
    let remote = json!({"apiVersion": "apiregistration.k8s.io/v1", "kind": "APIService", "metadata": {"name": "v1beta2.custom.metrics.k8s.io"},
        "spec": {"group": "custom.metrics.k8s.io", "version": "v1beta2", "groupPriorityMinimum": 100, "versionPriority": 100,
                 "insecureSkipTLSVerify": true, "service": {"namespace": "kube-system", "name": "custom-metrics"}}});
    let (s, out) = h.call("POST", "/apis/apiregistration.k8s.io/v1/apiservices", Some(remote)).await;
    assert_eq!(s, StatusCode::CREATED, "{out}");
}

#[tokio::test]
async fn csr_approval_changes_only_conditions() {
    let h = Harness::new().await;
    let csrs = "/apis/certificates.k8s.io/v1/certificatesigningrequests";
    let body = json!({"apiVersion": "certificates.k8s.io/v1", "kind": "CertificateSigningRequest", "metadata": {"name": "c1"},
        "spec": {"request": "cmVx", "signerName": "example.com/e2e", "usages": ["client auth"]}});
    let (s, created) = h.call("POST", csrs, Some(body)).await;
    assert_eq!(s, StatusCode::CREATED, "{created}");
    assert_eq!(created["spec"]["username"], "system:admin");
    let (s, mut got) = h.call("GET", &format!("{csrs}/c1/approval"), None).await;
    assert_eq!(s, StatusCode::OK, "{got}");
    got["status"] = json!({"conditions": [{"type": "Approved", "status": "True", "reason": "E2E", "message": "ok"}], "certificate": "Y2VydA=="});
    got["spec"]["signerName"] = json!("example.com/changed");
    let (s, approved) = h.call("PUT", &format!("{csrs}/c1/approval"), Some(got)).await;
    assert_eq!(s, StatusCode::OK, "{approved}");
    assert_eq!(approved["status"]["conditions"][0]["type"], "Approved");
    assert!(approved["status"]["conditions"][0]["lastUpdateTime"].is_string());
    assert!(approved["status"].get("certificate").is_none(), "approval may not set the certificate: {approved}");
    assert_eq!(approved["spec"]["signerName"], "example.com/e2e");
    let (s, patched) = h
        .send("PATCH", &format!("{csrs}/c1/approval"), "application/merge-patch+json", None,
              Some(json!({"metadata": {"annotations": {"a": "b"}}})))
        .await;
    assert_eq!((s, &patched["metadata"]["annotations"]["a"]), (StatusCode::OK, &json!("b")), "{patched}");
    // an approval can not be taken back
    let (s, out) = h
        .send("PATCH", &format!("{csrs}/c1/approval"), "application/merge-patch+json", None, Some(json!({"status": {"conditions": []}})))
        .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{out}");
    let (_, rl) = h.call("GET", "/apis/certificates.k8s.io/v1", None).await;
    assert!(rl["resources"].as_array().unwrap().iter().any(|r| r["name"] == "certificatesigningrequests/approval"));
}

#[tokio::test]
async fn priority_classes() {
    let h = Harness::new().await;
    let pcs = "/apis/scheduling.k8s.io/v1/priorityclasses";
    let (s, sys) = h.call("GET", &format!("{pcs}/system-node-critical"), None).await;
    assert_eq!((s, &sys["value"]), (StatusCode::OK, &json!(2_000_001_000)));
    let (s, _) = h.call("POST", pcs, Some(json!({"apiVersion": "scheduling.k8s.io/v1", "kind": "PriorityClass", "metadata": {"name": "p"}, "value": 10}))).await;
    assert_eq!(s, StatusCode::CREATED);
    let (_, mut cur) = h.call("GET", &format!("{pcs}/p"), None).await;
    assert_eq!(cur["preemptionPolicy"], "PreemptLowerPriority");
    cur["value"] = json!(20);
    let (s, out) = h.call("PUT", &format!("{pcs}/p"), Some(cur)).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(out["details"]["causes"][0]["message"], "Forbidden: may not be changed in an update.");
    assert_eq!(out["details"]["causes"][0]["field"], "value");
}

#[tokio::test]
async fn flowcontrol_and_storage_capacity_are_served() {
    let h = Harness::new().await;
    let fs = json!({"apiVersion": "flowcontrol.apiserver.k8s.io/v1", "kind": "FlowSchema", "metadata": {"name": "f"},
        "spec": {"priorityLevelConfiguration": {"name": "global-default"},
                 "rules": [{"subjects": [{"kind": "Group", "group": {"name": "g"}}], "nonResourceRules": [{"verbs": ["*"], "nonResourceURLs": ["*"]}]}]}});
    let (s, out) = h.call("POST", "/apis/flowcontrol.apiserver.k8s.io/v1/flowschemas", Some(fs)).await;
    assert_eq!(s, StatusCode::CREATED, "{out}");
    assert_eq!(out["spec"]["matchingPrecedence"], 1000);
    let (s, out) = h
        .send("PATCH", "/apis/flowcontrol.apiserver.k8s.io/v1/flowschemas/f/status", "application/merge-patch+json", None,
              Some(json!({"status": {"conditions": [{"type": "Dangling", "status": "False"}]}})))
        .await;
    assert_eq!((s, &out["status"]["conditions"][0]["type"]), (StatusCode::OK, &json!("Dangling")), "{out}");
    let plc = json!({"apiVersion": "flowcontrol.apiserver.k8s.io/v1", "kind": "PriorityLevelConfiguration", "metadata": {"name": "p"},
        "spec": {"type": "Limited", "limited": {"limitResponse": {"type": "Reject"}}}});
    let (s, out) = h.call("POST", "/apis/flowcontrol.apiserver.k8s.io/v1/prioritylevelconfigurations", Some(plc)).await;
    assert_eq!(s, StatusCode::CREATED, "{out}");
    assert_eq!(out["spec"]["limited"]["nominalConcurrencyShares"], 30);
    let cap = json!({"apiVersion": "storage.k8s.io/v1", "kind": "CSIStorageCapacity", "metadata": {"name": "c"},
        "storageClassName": "fast", "capacity": "1Gi"});
    let (s, out) = h.call("POST", "/apis/storage.k8s.io/v1/namespaces/default/csistoragecapacities", Some(cap)).await;
    assert_eq!(s, StatusCode::CREATED, "{out}");
}

#[tokio::test]
async fn apiservice_sync_is_idempotent() {
    let dir = tempfile::tempdir().unwrap();
    let backend = kine_sqlite::SqliteBackend::open(&dir.path().join("state.db")).await.unwrap();
    let _ = apiserver::app(backend.clone()).await.unwrap();
    let registry = apiserver::registry::Registry::new(apiserver::kinds::all(), backend.clone());
    apiserver::autoregister::sync(&registry).await.unwrap();
    let store = registry.find("apiregistration.k8s.io", "v1", "apiservices").unwrap();
    let rv = |o: &Value| o["metadata"]["resourceVersion"].as_str().unwrap().to_string();
    let before = rv(&store.get(None, "v1.apps").await.unwrap());
    apiserver::autoregister::sync(&registry).await.unwrap();
    apiserver::autoregister::sync(&registry).await.unwrap();
    assert_eq!(before, rv(&store.get(None, "v1.apps").await.unwrap()), "a sync with nothing to do wrote");
}
