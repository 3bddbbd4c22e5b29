//! Paginated lists whose continue token was compacted away (410 with a token to continue
//! inconsistently), and server-side apply's checks of custom resources (undeclared fields,
//! duplicate keys), through the router.

use std::sync::Arc;
use std::time::{Duration, Instant};

use apiserver::auth::UserInfo;
use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use kine_sqlite::Backend;
use serde_json::{json, Value};
use tower::ServiceExt;

async fn call(app: &axum::Router, method: &str, path: &str, ctype: &str, body: Option<String>) -> (StatusCode, Value) {
    let mut req = Request::builder()
        .method(method)
        .uri(path)
        .header(header::CONTENT_TYPE, ctype)
        .body(body.map(Body::from).unwrap_or_default())
        .unwrap();
    req.extensions_mut().insert(UserInfo::from_subject("system:admin", &["system:masters".into()]));
    let resp = app.clone().oneshot(req).await.unwrap();
    let status = resp.status();
    let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX).await.unwrap();
    (status, serde_json::from_slice(&bytes).unwrap_or(Value::String(String::from_utf8_lossy(&bytes).into())))
}

const CMS: &str = "/api/v1/namespaces/default/configmaps";

fn names(list: &Value) -> Vec<String> {
    list["items"].as_array().unwrap().iter().map(|i| i["metadata"]["name"].as_str().unwrap().to_string()).collect()
}

#[tokio::test]
async fn compacted_continue_token_offers_an_inconsistent_continuation() {
    let dir = tempfile::tempdir().unwrap();
    let backend: Arc<dyn Backend> = kine_sqlite::SqliteBackend::open(&dir.path().join("state.db")).await.unwrap();
    let app = apiserver::app(backend.clone()).await.unwrap();
    for i in 0..10 {
        let body = json!({"metadata": {"name": format!("cm-{i:02}")}}).to_string();
        assert_eq!(call(&app, "POST", CMS, "application/json", Some(body)).await.0, StatusCode::CREATED);
    }
    let (_, first) = call(&app, "GET", &format!("{CMS}?limit=4"), "", None).await;
    assert_eq!(names(&first), ["cm-00", "cm-01", "cm-02", "cm-03"]);
    let token = first["metadata"]["continue"].as_str().unwrap().to_string();
    let first_rv = first["metadata"]["resourceVersion"].clone();

    // Changes after the first page, then compaction past its revision.
    let body = json!({"metadata": {"name": "cm-99"}}).to_string();
    assert_eq!(call(&app, "POST", CMS, "application/json", Some(body)).await.0, StatusCode::CREATED);
    let current = backend.current_revision().await.unwrap();
    backend.compact(current).await.unwrap();

    let (s, expired) = call(&app, "GET", &format!("{CMS}?limit=4&continue={token}"), "", None).await;
    assert_eq!(s, StatusCode::GONE, "{expired}");
    assert_eq!(expired["reason"], "Expired");
    assert!(expired["message"].as_str().unwrap().contains("Continuing with the provided token results in an inconsistent list"));
    let inconsistent = expired["metadata"]["continue"].as_str().expect("a continue token in the 410").to_string();

    let (s, page) = call(&app, "GET", &format!("{CMS}?limit=4&continue={inconsistent}"), "", None).await;
    assert_eq!(s, StatusCode::OK, "{page}");
    assert_eq!(names(&page), ["cm-04", "cm-05", "cm-06", "cm-07"]);
    assert_ne!(page["metadata"]["resourceVersion"], first_rv);
    let rv = page["metadata"]["resourceVersion"].clone();
    assert_eq!(page["metadata"]["remainingItemCount"], 3);
    let next = page["metadata"]["continue"].as_str().unwrap().to_string();
    let (_, last) = call(&app, "GET", &format!("{CMS}?limit=4&continue={next}"), "", None).await;
    assert_eq!(names(&last), ["cm-08", "cm-09", "cm-99"]);
    assert_eq!(last["metadata"]["resourceVersion"], rv);
    assert!(last["metadata"].get("continue").is_none());
}

fn noxu_crd() -> Value {
    json!({
        "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": "noxus.example.com"},
        "spec": {
            "group": "example.com", "scope": "Cluster",
            "names": {"plural": "noxus", "singular": "noxu", "kind": "Noxu"},
            "versions": [{"name": "v1", "served": true, "storage": true,
                "schema": {"openAPIV3Schema": {"type": "object", "properties": {"spec": {
                    "type": "object", "x-kubernetes-preserve-unknown-fields": true,
                    "properties": {"foo": {"type": "string"},
                        "template": {"type": "object", "x-kubernetes-embedded-resource": true,
                            "properties": {"metadata": {"type": "object", "properties": {"name": {"type": "string"}}}}}}}}}}}],
        }
    })
}

const NOXUS: &str = "/apis/example.com/v1/noxus";

async fn apply(app: &axum::Router, yaml: &str, validation: &str) -> (StatusCode, Value) {
    let path = format!("{NOXUS}/mytest?fieldManager=test&fieldValidation={validation}");
    call(app, "PATCH", &path, "application/apply-patch+yaml", Some(yaml.to_string())).await
}

#[tokio::test]
async fn server_side_apply_checks_custom_resources() {
    let dir = tempfile::tempdir().unwrap();
    let backend = kine_sqlite::SqliteBackend::open(&dir.path().join("state.db")).await.unwrap();
    let app = apiserver::app(backend).await.unwrap();
    let (s, v) = call(&app, "POST", "/apis/apiextensions.k8s.io/v1/customresourcedefinitions", "application/json", Some(noxu_crd().to_string())).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let start = Instant::now();
    while call(&app, "GET", NOXUS, "", None).await.0 != StatusCode::OK {
        assert!(start.elapsed() < Duration::from_secs(5), "CRD not served");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let head = "\napiVersion: example.com/v1\nkind: Noxu\nmetadata:\n  name: mytest\n";

    // Undeclared fields fail whatever fieldValidation says, each named.
    let body = format!("{head}  unknownMeta: x\nunknownField: x\nspec:\n  foo: a\n  template:\n    metadata:\n      name: sub\n      unknownSubMeta: x\n");
    for mode in ["Strict", "Ignore"] {
        let (s, v) = apply(&app, &body, mode).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
        let msg = v["message"].as_str().unwrap();
        assert!(msg.starts_with("failed to create typed patch object (/mytest; example.com/v1, Kind=Noxu): errors:\n"), "{msg}");
        for field in [".unknownField", ".metadata.unknownMeta", ".spec.template.metadata.unknownSubMeta"] {
            assert!(msg.contains(&format!("{field}: field not declared in schema")), "{msg}");
        }
    }

    // Duplicate keys: Strict fails with the line, Warn warns and applies.
    let body = format!("{head}spec:\n  unknown: uk1\n  foo: foo1\n  foo: foo2\n");
    let (s, v) = apply(&app, &body, "Strict").await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
    assert_eq!(
        v["message"],
        "error strict decoding YAML: error converting YAML to JSON: yaml: unmarshal errors:\n  line 9: key \"foo\" already set in map"
    );
    let (s, v) = apply(&app, &body, "Warn").await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    assert_eq!(v["spec"], json!({"unknown": "uk1", "foo": "foo2"}));
}
