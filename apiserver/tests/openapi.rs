//! `/openapi/v2` and `/openapi/v3` over the router: schemas, hashes, caching headers and
//! content negotiation.

use apiserver::auth::UserInfo;
use axum::body::Body;
use axum::http::{header, HeaderMap, Request, StatusCode};
use serde_json::Value;
use tower::ServiceExt;

async fn app() -> (axum::Router, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let backend = kine_sqlite::SqliteBackend::open(&dir.path().join("state.db")).await.unwrap();
    (apiserver::app(backend).await.unwrap(), dir)
}

async fn get(app: &axum::Router, path: &str, headers: &[(&str, &str)]) -> (StatusCode, HeaderMap, Vec<u8>) {
    let mut req = Request::builder().method("GET").uri(path);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let mut req = req.body(Body::empty()).unwrap();
    req.extensions_mut().insert(UserInfo::from_subject("system:admin", &["system:masters".into()]));
    let resp = app.clone().oneshot(req).await.unwrap();
    let (status, headers) = (resp.status(), resp.headers().clone());
    let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX).await.unwrap();
    (status, headers, bytes.to_vec())
}

fn json(b: &[u8]) -> Value {
    serde_json::from_slice(b).unwrap()
}

#[tokio::test]
async fn v3_index_and_documents() {
    let (app, _dir) = app().await;
    let (status, _, body) = get(&app, "/openapi/v3", &[]).await;
    assert_eq!(status, StatusCode::OK);
    let index = json(&body);
    let url = index["paths"]["apis/apps/v1"]["serverRelativeURL"].as_str().unwrap().to_string();
    let (_, _, again) = get(&app, "/openapi/v3", &[]).await;
    assert_eq!(json(&again), index, "the index (and so its hashes) is stable");

    let (status, headers, body) = get(&app, &url, &[]).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers[header::CACHE_CONTROL], "public, immutable");
    let etag = headers[header::ETAG].to_str().unwrap().to_string();
    assert_eq!(etag, format!("\"{}\"", url.split("hash=").nth(1).unwrap()));
    let doc = json(&body);
    let schemas = &doc["components"]["schemas"];
    let deploy = &schemas["io.k8s.api.apps.v1.Deployment"];
    assert_eq!(deploy["x-kubernetes-group-version-kind"][0]["kind"], "Deployment");
    assert_eq!(schemas["io.k8s.api.core.v1.PodSpec"]["properties"]["containers"]["x-kubernetes-patch-merge-key"], "name");
    let patch = &doc["paths"]["/apis/apps/v1/namespaces/{namespace}/deployments/{name}"]["patch"];
    assert!(patch["parameters"].as_array().unwrap().iter().any(|p| p["name"] == "fieldValidation"));

    // Revalidation, an outdated hash, no hash.
    let (status, _, _) = get(&app, &url, &[("if-none-match", &etag)]).await;
    assert_eq!(status, StatusCode::NOT_MODIFIED);
    let (status, headers, _) = get(&app, "/openapi/v3/apis/apps/v1?hash=0123", &[]).await;
    assert_eq!(status, StatusCode::MOVED_PERMANENTLY);
    assert_eq!(headers[header::LOCATION], url.as_str());
    let (status, headers, _) = get(&app, "/openapi/v3/apis/apps/v1", &[]).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers[header::CACHE_CONTROL], "no-cache, private");

    let (status, _, _) = get(&app, "/openapi/v3/apis/nope.example.com/v1", &[]).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _, _) = get(&app, &url, &[("accept", "application/com.github.proto-openapi.spec.v3@v1.0+protobuf")]).await;
    assert_eq!(status, StatusCode::NOT_ACCEPTABLE);
}

#[tokio::test]
async fn v2_json_and_protobuf() {
    let (app, _dir) = app().await;
    let (status, headers, body) = get(&app, "/openapi/v2", &[("accept", "application/json")]).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers[header::CONTENT_TYPE], "application/json");
    let doc = json(&body);
    assert_eq!(doc["swagger"], "2.0");
    let pod = &doc["definitions"]["io.k8s.api.core.v1.Pod"];
    assert_eq!(pod["x-kubernetes-group-version-kind"][0]["kind"], "Pod");
    assert_eq!(pod["properties"]["spec"]["$ref"], "#/definitions/io.k8s.api.core.v1.PodSpec");
    assert_eq!(doc["definitions"]["io.k8s.apimachinery.pkg.util.intstr.IntOrString"]["format"], "int-or-string");
    let patch = &doc["paths"]["/apis/apps/v1/namespaces/{namespace}/deployments/{name}"]["patch"];
    assert_eq!(patch["x-kubernetes-action"], "patch");
    assert_eq!(patch["x-kubernetes-group-version-kind"]["kind"], "Deployment");

    // What client-go asks for: the protobuf document, under a media type Go can parse.
    let (status, headers, body) = get(&app, "/openapi/v2", &[("accept", "application/com.github.proto-openapi.spec.v2@v1.0+protobuf")]).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers[header::CONTENT_TYPE], "application/com.github.proto-openapi.spec.v2.v1.0+protobuf");
    assert_eq!(&body[..5], b"\x0a\x032.0", "Document.swagger = \"2.0\" first");
    let etag = headers[header::ETAG].to_str().unwrap().to_string();
    let (status, _, _) = get(&app, "/openapi/v2", &[("accept", "application/com.github.proto-openapi.spec.v2@v1.0+protobuf"), ("if-none-match", &etag)]).await;
    assert_eq!(status, StatusCode::NOT_MODIFIED);

    let (status, _, _) = get(&app, "/openapi/v2", &[("accept", "text/html")]).await;
    assert_eq!(status, StatusCode::NOT_ACCEPTABLE);
}
