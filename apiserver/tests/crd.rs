//! Custom resources end to end through the router: a CRD becomes served within a second,
//! its objects are validated, pruned and defaulted by its schema, and go away with it.

mod common;

use std::time::{Duration, Instant};

use apiserver::auth::UserInfo;
use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use serde_json::{json, Value};
use tower::ServiceExt;

async fn call(app: &axum::Router, method: &str, path: &str, ctype: &str, body: Option<Value>) -> (StatusCode, Value) {
    common::call_as(app, method, path, ctype, body).await
}

fn crd() -> Value {
    json!({
        "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": "widgets.example.com"},
        "spec": {
            "group": "example.com", "scope": "Namespaced",
            "names": {"plural": "widgets", "singular": "widget", "kind": "Widget", "shortNames": ["wd"]},
            "versions": [
                {"name": "v1", "served": true, "storage": true,
                 "subresources": {"status": {}, "scale": {"specReplicasPath": ".spec.size", "statusReplicasPath": ".status.size"}},
                 "additionalPrinterColumns": [{"name": "Size", "type": "integer", "jsonPath": ".spec.size"}],
                 "schema": {"openAPIV3Schema": {"type": "object", "properties": {
                     "spec": {"type": "object", "required": ["color"], "properties": {
                         "color": {"type": "string", "enum": ["red", "blue"]},
                         "size": {"type": "integer", "minimum": 1, "maximum": 10, "default": 3},
                         "ports": {"type": "array", "x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"],
                                   "items": {"type": "object", "required": ["name"], "properties": {"name": {"type": "string"}, "port": {"type": "integer"}}}}}},
                     "status": {"type": "object", "properties": {"size": {"type": "integer"}}}}}}},
                {"name": "v1beta1", "served": true, "storage": false,
                 "schema": {"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}}}
            ]
        }
    })
}

const WIDGETS: &str = "/apis/example.com/v1/namespaces/default/widgets";

#[tokio::test]
async fn crd_lifecycle() {
    let dir = tempfile::tempdir().unwrap();
    let backend = kine_sqlite::SqliteBackend::open(&dir.path().join("state.db")).await.unwrap();
    let app = apiserver::app(backend).await.unwrap();
    let (s, created) = call(&app, "POST", "/apis/apiextensions.k8s.io/v1/customresourcedefinitions", "application/json", Some(crd())).await;
    assert_eq!(s, StatusCode::CREATED, "{created}");

    // Served and Established within a second.
    let start = Instant::now();
    loop {
        let (_, c) = call(&app, "GET", "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/widgets.example.com", "", None).await;
        let established = c["status"]["conditions"].as_array().is_some_and(|cs| cs.iter().any(|c| c["type"] == "Established" && c["status"] == "True"));
        if established && call(&app, "GET", WIDGETS, "", None).await.0 == StatusCode::OK {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(1), "not established in a second: {c}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (_, disco) = call(&app, "GET", "/apis/example.com/v1", "", None).await;
    assert!(disco["resources"].as_array().unwrap().iter().any(|r| r["name"] == "widgets/scale"), "{disco}");

    // Schema: defaults, pruning, validation.
    let w = json!({"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w1"}, "spec": {"color": "red", "extra": 1}});
    let (s, obj) = call(&app, "POST", WIDGETS, "application/json", Some(w)).await;
    assert_eq!(s, StatusCode::CREATED, "{obj}");
    assert_eq!(obj["spec"]["size"], 3, "defaulted: {obj}");
    assert!(obj["spec"].get("extra").is_none(), "pruned: {obj}");
    let bad = json!({"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w2"}, "spec": {"color": "green", "size": 11}});
    let (s, st) = call(&app, "POST", WIDGETS, "application/json", Some(bad)).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{st}");
    let fields: Vec<_> = st["details"]["causes"].as_array().unwrap().iter().map(|c| c["field"].as_str().unwrap().to_string()).collect();
    assert!(fields.contains(&"spec.color".to_string()) && fields.contains(&"spec.size".to_string()), "{st}");
    let (s, _) = call(&app, "POST", WIDGETS, "application/json", Some(json!({"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w3"}, "spec": {}}))).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "color is required");

    // Other served version: same object, its own apiVersion.
    let (s, beta) = call(&app, "GET", "/apis/example.com/v1beta1/namespaces/default/widgets/w1", "", None).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(beta["apiVersion"], "example.com/v1beta1");

    // Status and scale subresources.
    let (s, _) = call(&app, "PATCH", &format!("{WIDGETS}/w1/status"), "application/merge-patch+json", Some(json!({"status": {"size": 2}}))).await;
    assert_eq!(s, StatusCode::OK);
    let (_, scale) = call(&app, "GET", &format!("{WIDGETS}/w1/scale"), "", None).await;
    assert_eq!((scale["spec"]["replicas"].as_i64(), scale["status"]["replicas"].as_i64()), (Some(3), Some(2)), "{scale}");
    let (s, _) = call(&app, "PATCH", &format!("{WIDGETS}/w1/scale"), "application/merge-patch+json", Some(json!({"spec": {"replicas": 5}}))).await;
    assert_eq!(s, StatusCode::OK);
    let (_, w1) = call(&app, "GET", &format!("{WIDGETS}/w1"), "", None).await;
    assert_eq!(w1["spec"]["size"], 5);

    // Server-side apply merges the map-list by its key.
    let apply = |ports: Value| json!({"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w1"}, "spec": {"color": "red", "ports": ports}});
    let (s, _) = call(&app, "PATCH", &format!("{WIDGETS}/w1?fieldManager=a&force=true"), "application/apply-patch+yaml", Some(apply(json!([{"name": "http", "port": 80}])))).await;
    assert_eq!(s, StatusCode::OK);
    let (s, merged) = call(&app, "PATCH", &format!("{WIDGETS}/w1?fieldManager=b"), "application/apply-patch+yaml", Some(apply(json!([{"name": "https", "port": 443}])))).await;
    assert_eq!(s, StatusCode::OK, "{merged}");
    assert_eq!(merged["spec"]["ports"].as_array().unwrap().len(), 2, "{merged}");

    // Table columns from additionalPrinterColumns.
    let mut req = Request::builder().uri(WIDGETS).header(header::ACCEPT, "application/json;as=Table;v=v1;g=meta.k8s.io").body(Body::empty()).unwrap();
    req.extensions_mut().insert(UserInfo::from_subject("system:admin", &["system:masters".into()]));
    let resp = app.clone().oneshot(req).await.unwrap();
    let table: Value = serde_json::from_slice(&axum::body::to_bytes(resp.into_body(), usize::MAX).await.unwrap()).unwrap();
    assert_eq!(table["columnDefinitions"][1]["name"], "Size", "{table}");
    assert_eq!(table["rows"][0]["cells"][1], 5);

    // Deleting the CRD deletes its objects, then the CRD, and stops serving it.
    let (s, _) = call(&app, "DELETE", "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/widgets.example.com", "", None).await;
    assert_eq!(s, StatusCode::OK);
    let start = Instant::now();
    loop {
        let (crd_status, _) = call(&app, "GET", "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/widgets.example.com", "", None).await;
        let (list_status, _) = call(&app, "GET", WIDGETS, "", None).await;
        if crd_status == StatusCode::NOT_FOUND && list_status == StatusCode::NOT_FOUND {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(5), "CRD still there");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Re-created, it starts empty: the old objects are gone from storage.
    call(&app, "POST", "/apis/apiextensions.k8s.io/v1/customresourcedefinitions", "application/json", Some(crd())).await;
    let start = Instant::now();
    loop {
        let (s, list) = call(&app, "GET", WIDGETS, "", None).await;
        if s == StatusCode::OK {
            assert_eq!(list["items"].as_array().unwrap().len(), 0, "{list}");
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(2));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
