//! CEL through the router: ValidatingAdmissionPolicies denying and warning on Deployments,
//! and webhook configurations whose matchConditions do not compile.

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
        Harness { app: apiserver::app(backend).await.unwrap(), _dir: dir }
    }

    /// Status, body and `Warning` headers.
    async fn call(&self, method: &str, path: &str, body: Option<Value>) -> (StatusCode, Value, Vec<String>) {
        let mut req = Request::builder()
            .method(method)
            .uri(path)
            .header(header::CONTENT_TYPE, "application/json")
            .body(body.map(|b| Body::from(b.to_string())).unwrap_or_default())
            .unwrap();
        req.extensions_mut().insert(UserInfo::from_subject("system:admin", &["system:masters".into()]));
        let resp = self.app.clone().oneshot(req).await.unwrap();
        let status = resp.status();
        let warnings = resp.headers().get_all(header::WARNING).iter().map(|v| v.to_str().unwrap().to_string()).collect();
        let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX).await.unwrap();
        (status, serde_json::from_slice(&bytes).unwrap_or(Value::Null), warnings)
    }

    async fn create(&self, path: &str, body: Value) -> Value {
        let (s, v, _) = self.call("POST", path, Some(body)).await;
        assert_eq!(s, StatusCode::CREATED, "{v}");
        v
    }
}

const AR: &str = "/apis/admissionregistration.k8s.io/v1";
const DEPLOYMENTS: &str = "/apis/apps/v1/namespaces/default/deployments";

fn deployment(name: &str, replicas: i64) -> Value {
    json!({"apiVersion": "apps/v1", "kind": "Deployment",
           "metadata": {"name": name, "labels": {"app": "web"}},
           "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": "web"}},
                    "template": {"metadata": {"labels": {"app": "web"}},
                                 "spec": {"containers": [{"name": "c", "image": "nginx"}]}}}})
}

#[tokio::test]
async fn policy_denies_and_warns_on_deployments() {
    let h = Harness::new().await;
    h.create(&format!("{AR}/validatingadmissionpolicies"), json!({
        "metadata": {"name": "replicas"},
        "spec": {
            "failurePolicy": "Fail",
            "matchConstraints": {"resourceRules": [{"apiGroups": ["apps"], "apiVersions": ["v1"],
                                                    "operations": ["CREATE", "UPDATE"], "resources": ["deployments"]}]},
            "variables": [{"name": "replicas", "expression": "object.spec.replicas"}],
            "validations": [
                {"expression": "variables.replicas <= 3",
                 "messageExpression": "'replicas must be at most 3, got ' + string(variables.replicas)"},
                {"expression": "variables.replicas <= 2", "message": "more than 2 replicas"}
            ]
        }
    }))
    .await;
    h.create(&format!("{AR}/validatingadmissionpolicybindings"), json!({
        "metadata": {"name": "replicas-deny"},
        "spec": {"policyName": "replicas", "validationActions": ["Deny"],
                 "matchResources": {"objectSelector": {"matchLabels": {"app": "web"}}}}
    }))
    .await;

    h.create(DEPLOYMENTS, deployment("two", 2)).await;
    let (s, v, _) = h.call("POST", DEPLOYMENTS, Some(deployment("five", 5))).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    assert_eq!(v["reason"], "Invalid");
    assert_eq!(
        v["message"],
        "ValidatingAdmissionPolicy 'replicas' with binding 'replicas-deny' denied request: replicas must be at most 3, got 5"
    );
    // The second validation with Deny: 3 replicas are denied by its message.
    let (s, v, _) = h.call("POST", DEPLOYMENTS, Some(deployment("three", 3))).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    assert!(v["message"].as_str().unwrap().ends_with("denied request: more than 2 replicas"), "{v}");
    // Updates are checked too.
    let mut two = h.call("GET", &format!("{DEPLOYMENTS}/two"), None).await.1;
    two["spec"]["replicas"] = json!(4);
    let (s, v, _) = h.call("PUT", &format!("{DEPLOYMENTS}/two"), Some(two)).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{v}");

    // Warn instead of Deny: the write goes through with a Warning header.
    let (s, v, _) = h.call("DELETE", &format!("{AR}/validatingadmissionpolicybindings/replicas-deny"), None).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    h.create(&format!("{AR}/validatingadmissionpolicybindings"), json!({
        "metadata": {"name": "replicas-warn"},
        "spec": {"policyName": "replicas", "validationActions": ["Warn", "Audit"]}
    }))
    .await;
    let (s, v, warnings) = h.call("POST", DEPLOYMENTS, Some(deployment("five", 5))).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    assert_eq!(warnings.len(), 2, "{warnings:?}");
    assert!(warnings[0].contains("Validation failed for ValidatingAdmissionPolicy 'replicas' with binding 'replicas-warn': replicas must be at most 3, got 5"), "{warnings:?}");

    // Other resources are not matched.
    let (s, v, warnings) = h.call("POST", "/api/v1/namespaces/default/configmaps", Some(json!({"metadata": {"name": "cm"}}))).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    assert!(warnings.is_empty());
}

#[tokio::test]
async fn webhook_match_conditions_must_compile() {
    let h = Harness::new().await;
    for plural in ["validatingwebhookconfigurations", "mutatingwebhookconfigurations"] {
        let body = json!({"metadata": {"name": "w"}, "webhooks": [{
            "name": "w.example.com",
            "clientConfig": {"url": "https://example.com/hook"},
            "sideEffects": "None",
            "admissionReviewVersions": ["v1"],
            "matchConditions": [{"name": "bad", "expression": "... [] bad expression"}]
        }]});
        let (s, v, _) = h.call("POST", &format!("{AR}/{plural}"), Some(body)).await;
        assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
        let cause = &v["details"]["causes"][0];
        assert_eq!(cause["field"], "webhooks[0].matchConditions[0].expression", "{v}");
        assert!(cause["message"].as_str().unwrap().contains("compilation failed: ERROR: <input>:1:"), "{v}");
    }
}
