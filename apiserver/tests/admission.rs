//! The apiserver's own admission through the router: LimitRanger, ServiceAccount and
//! RuntimeClass on pod creates, and pod sysctl validation.

mod common;

use axum::http::StatusCode;
use serde_json::{json, Value};

struct Harness {
    app: axum::Router,
    _dir: tempfile::TempDir,
}

impl Harness {
    async fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let backend = kine_sqlite::SqliteBackend::open(&dir.path().join("state.db")).await.unwrap();
        Harness { app: apiserver::app(backend).await.unwrap(), _dir: dir }
    }

    async fn call(&self, method: &str, path: &str, body: Option<Value>) -> (StatusCode, Value) {
        common::call(&self.app, method, path, body).await
    }

    async fn create(&self, path: &str, body: Value) -> Value {
        let (s, v) = self.call("POST", path, Some(body)).await;
        assert_eq!(s, StatusCode::CREATED, "{v}");
        v
    }
}

const PODS: &str = "/api/v1/namespaces/default/pods";

fn pod(name: &str, resources: Option<Value>) -> Value {
    let mut c = json!({"name": "c", "image": "registry.k8s.io/pause:3.10"});
    if let Some(r) = resources {
        c["resources"] = r;
    }
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name}, "spec": {"containers": [c]}})
}

#[tokio::test]
async fn limit_ranges_default_and_bound_pod_resources() {
    let h = Harness::new().await;
    let lr_path = "/api/v1/namespaces/default/limitranges";
    h.create(lr_path, json!({"metadata": {"name": "lr"}, "spec": {"limits": [{
        "type": "Container",
        "min": {"cpu": "50m", "memory": "100Mi", "ephemeral-storage": "214748364800m"},
        "max": {"cpu": "500m", "memory": "500Mi", "ephemeral-storage": "536870912k"},
        "default": {"cpu": "500m", "memory": "500Mi", "ephemeral-storage": "536870912k"},
        "defaultRequest": {"cpu": "100m", "memory": "200Mi", "ephemeral-storage": "214748364800m"},
    }]}}))
    .await;
    let p = h.create(PODS, pod("none", None)).await;
    let r = &p["spec"]["containers"][0]["resources"];
    assert_eq!(r["requests"], json!({"cpu": "100m", "memory": "200Mi", "ephemeral-storage": "214748364800m"}));
    assert_eq!(r["limits"], json!({"cpu": "500m", "memory": "500Mi", "ephemeral-storage": "536870912k"}));
    // The QoS class sees the defaulted resources.
    assert_eq!(p["status"]["qosClass"], "Burstable");
    assert!(p["metadata"]["annotations"]["kubernetes.io/limit-ranger"].as_str().unwrap().starts_with("LimitRanger plugin set: "));

    let p = h.create(PODS, pod("partial", Some(json!({"requests": {"cpu": "300m"}, "limits": {"cpu": "300m"}})))).await;
    assert_eq!(p["spec"]["containers"][0]["resources"]["requests"]["memory"], "200Mi");
    assert_eq!(p["spec"]["containers"][0]["resources"]["limits"]["cpu"], "300m");

    let (s, v) = h.call("POST", PODS, Some(pod("under", Some(json!({"requests": {"cpu": "10m"}, "limits": {"cpu": "10m"}}))))).await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{v}");
    assert_eq!(v["message"], "pods \"under\" is forbidden: minimum cpu usage per Container is 50m, but request is 10m");
    let (s, v) = h.call("POST", PODS, Some(pod("over", Some(json!({"requests": {"cpu": "600m"}, "limits": {"cpu": "600m"}}))))).await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{v}");
    assert_eq!(v["message"], "pods \"over\" is forbidden: maximum cpu usage per Container is 500m, but limit is 600m");

    // Other namespaces are not bound by it; once deleted, neither is this one.
    let (s, _) = h.call("POST", "/api/v1/namespaces/kube-public/pods", Some(pod("over", Some(json!({"limits": {"cpu": "600m"}}))))).await;
    assert_eq!(s, StatusCode::CREATED);
    let (s, _) = h.call("DELETE", &format!("{lr_path}/lr"), None).await;
    assert_eq!(s, StatusCode::OK);
    let (s, _) = h.call("POST", PODS, Some(pod("over", Some(json!({"limits": {"cpu": "600m"}}))))).await;
    assert_eq!(s, StatusCode::CREATED);
}

#[tokio::test]
async fn runtime_classes_must_exist() {
    let h = Harness::new().await;
    let mut p = pod("rc", None);
    p["spec"]["runtimeClassName"] = json!("missing");
    let (s, v) = h.call("POST", PODS, Some(p.clone())).await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{v}");
    assert_eq!(v["reason"], "Forbidden");
    assert_eq!(v["message"], "pods \"rc\" is forbidden: pod rejected: RuntimeClass \"missing\" not found");

    h.create("/apis/node.k8s.io/v1/runtimeclasses", json!({
        "metadata": {"name": "missing"}, "handler": "runc",
        "overhead": {"podFixed": {"cpu": "10m"}}, "scheduling": {"nodeSelector": {"runtime": "runc"}},
    }))
    .await;
    let created = h.create(PODS, p.clone()).await;
    assert_eq!(created["spec"]["overhead"], json!({"cpu": "10m"}));
    assert_eq!(created["spec"]["nodeSelector"], json!({"runtime": "runc"}));

    let (s, _) = h.call("DELETE", "/apis/node.k8s.io/v1/runtimeclasses/missing", None).await;
    assert_eq!(s, StatusCode::OK);
    p["metadata"]["name"] = json!("rc2");
    let (s, v) = h.call("POST", PODS, Some(p)).await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{v}");
}

fn token_mounted(p: &Value) -> bool {
    p["spec"]["containers"][0]["volumeMounts"]
        .as_array()
        .is_some_and(|ms| ms.iter().any(|m| m["mountPath"] == "/var/run/secrets/kubernetes.io/serviceaccount"))
}

#[tokio::test]
async fn service_account_tokens_mount_unless_opted_out() {
    let h = Harness::new().await;
    let sas = "/api/v1/namespaces/default/serviceaccounts";
    h.create(sas, json!({"metadata": {"name": "nomount"}, "automountServiceAccountToken": false})).await;
    let p = h.create(PODS, pod("plain", None)).await;
    assert_eq!(p["spec"]["serviceAccountName"], "default");
    assert!(token_mounted(&p), "{p}");
    let vol = p["spec"]["volumes"].as_array().unwrap().iter().find(|v| v["name"].as_str().unwrap().starts_with("kube-api-access-")).unwrap();
    assert_eq!(vol["projected"]["sources"][1]["configMap"]["name"], "kube-root-ca.crt");

    let mut opted_out = pod("sa-nomount", None);
    opted_out["spec"]["serviceAccountName"] = json!("nomount");
    assert!(!token_mounted(&h.create(PODS, opted_out.clone()).await));
    opted_out["metadata"]["name"] = json!("pod-wins");
    opted_out["spec"]["automountServiceAccountToken"] = json!(true);
    assert!(token_mounted(&h.create(PODS, opted_out).await));
    let mut pod_opts_out = pod("pod-nomount", None);
    pod_opts_out["spec"]["automountServiceAccountToken"] = json!(false);
    assert!(!token_mounted(&h.create(PODS, pod_opts_out).await));
}

#[tokio::test]
async fn invalid_sysctls_are_rejected() {
    let h = Harness::new().await;
    let mut p = pod("sysctls", None);
    p["spec"]["securityContext"] = json!({"sysctls": [
        {"name": "foo-", "value": "bar"}, {"name": "kernel.shmmax", "value": "100000000"},
        {"name": "safe-and-unsafe", "value": "100000000"}, {"name": "bar..", "value": "42"}]});
    let (s, v) = h.call("POST", PODS, Some(p)).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    let msg = v["message"].as_str().unwrap();
    assert!(msg.contains("spec.securityContext.sysctls[0].name: Invalid value: \"foo-\""), "{msg}");
    assert!(msg.contains("spec.securityContext.sysctls[3].name: Invalid value: \"bar..\""), "{msg}");
    assert!(!msg.contains("safe-and-unsafe") && !msg.contains("kernel.shmmax"), "{msg}");
}
