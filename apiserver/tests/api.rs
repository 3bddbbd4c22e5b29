//! HTTP behaviour of the apiserver, driven through the router with `oneshot` over a real
//! SQLite store in a temp dir (no socket, no TLS: those are tested with the real binary).

use std::time::Duration;

use apiserver::auth::UserInfo;
use apiserver::registry::Registry;
use apiserver::AppState;
use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use futures::StreamExt;
use serde_json::{json, Value};
use std::sync::Arc;
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

    /// A router whose watches send bookmarks every 100 ms.
    async fn with_fast_bookmarks() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let backend = kine_sqlite::SqliteBackend::open(&dir.path().join("state.db")).await.unwrap();
        let _ = apiserver::app(backend.clone()).await.unwrap(); // bootstrap namespaces
        let mut state = AppState::new(Arc::new(Registry::new(apiserver::kinds::all(), backend))).await.unwrap();
        state.bookmark_interval = Duration::from_millis(100);
        Harness { app: apiserver::router(state), _dir: dir }
    }

    fn request(method: &str, path: &str, ctype: &str, body: impl Into<Body>) -> Request<Body> {
        let mut req = Request::builder()
            .method(method)
            .uri(path)
            .header(header::CONTENT_TYPE, ctype)
            .body(body.into())
            .unwrap();
        req.extensions_mut().insert(UserInfo::from_subject("system:admin", &["system:masters".into()]));
        req
    }

    async fn send(&self, req: Request<Body>) -> (StatusCode, axum::http::HeaderMap, Value) {
        let resp = self.app.clone().oneshot(req).await.unwrap();
        let status = resp.status();
        let headers = resp.headers().clone();
        let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX).await.unwrap();
        let v = serde_json::from_slice(&bytes).unwrap_or(Value::String(String::from_utf8_lossy(&bytes).into()));
        (status, headers, v)
    }

    async fn call(&self, method: &str, path: &str, body: Option<Value>) -> (StatusCode, Value) {
        let body = body.map(|b| b.to_string()).unwrap_or_default();
        let (s, _, v) = self.send(Self::request(method, path, "application/json", body)).await;
        (s, v)
    }

    async fn patch(&self, path: &str, ctype: &str, body: Value) -> (StatusCode, Value) {
        let (s, _, v) = self.send(Self::request("PATCH", path, ctype, body.to_string())).await;
        (s, v)
    }
}

fn cm(name: &str, labels: Value) -> Value {
    json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "labels": labels}, "data": {"k": "v"}})
}

const CMS: &str = "/api/v1/namespaces/default/configmaps";

#[tokio::test]
async fn create_get_and_duplicate() {
    let h = Harness::new().await;
    let (s, obj) = h.call("POST", CMS, Some(cm("a", json!({})))).await;
    assert_eq!(s, StatusCode::CREATED, "{obj}");
    assert!(obj["metadata"]["uid"].as_str().unwrap().len() > 30);
    assert!(obj["metadata"]["resourceVersion"].as_str().unwrap().parse::<i64>().unwrap() > 0);
    assert_eq!(obj["metadata"]["namespace"], "default");
    let (s, got) = h.call("GET", &format!("{CMS}/a"), None).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(got, obj);
    let (s, st) = h.call("POST", CMS, Some(cm("a", json!({})))).await;
    assert_eq!(s, StatusCode::CONFLICT);
    assert_eq!(st["reason"], "AlreadyExists");
    assert_eq!(st["kind"], "Status");
}

#[tokio::test]
async fn system_namespaces_exist() {
    let h = Harness::new().await;
    for ns in ["default", "kube-system", "kube-public", "kube-node-lease"] {
        let (s, obj) = h.call("GET", &format!("/api/v1/namespaces/{ns}"), None).await;
        assert_eq!(s, StatusCode::OK, "{ns}");
        assert_eq!(obj["status"]["phase"], "Active");
    }
}

#[tokio::test]
async fn error_codes() {
    let h = Harness::new().await;
    let (s, st) = h.call("GET", &format!("{CMS}/missing"), None).await;
    assert_eq!((s, st["reason"].as_str()), (StatusCode::NOT_FOUND, Some("NotFound")));
    assert_eq!(st["message"], "configmaps \"missing\" not found");
    let (s, st) = h.call("POST", "/api/v1/namespaces/nope/configmaps", Some(cm("a", json!({})))).await;
    assert_eq!(s, StatusCode::NOT_FOUND, "{st}");
    assert_eq!(st["message"], "namespaces \"nope\" not found");
    let (s, st) = h.call("POST", CMS, Some(cm("Bad_Name", json!({})))).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(st["reason"], "Invalid");
    assert_eq!(st["details"]["causes"][0]["field"], "metadata.name");
    let (s, _, st) = h.send(Harness::request("POST", CMS, "application/json", "{not json")).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{st}");
    let (s, _, _) = h.send(Harness::request("POST", CMS, "text/plain", "x")).await;
    assert_eq!(s, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    let (s, _, _) = h.send(Harness::request("POST", CMS, "application/vnd.kubernetes.protobuf", "not protobuf")).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    let big = "x".repeat(4 * 1024 * 1024);
    let (s, _, st) = h.send(Harness::request("POST", CMS, "application/json", big)).await;
    assert_eq!(s, StatusCode::PAYLOAD_TOO_LARGE, "{st}");
    let (s, _) = h.call("GET", "/api/v1/nosuchthings", None).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, _) = h.call("POST", &format!("{CMS}/a"), Some(cm("a", json!({})))).await;
    assert_eq!(s, StatusCode::METHOD_NOT_ALLOWED);
    let mut req = Harness::request("GET", CMS, "application/json", "");
    req.headers_mut().insert(header::ACCEPT, "application/vnd.kubernetes.protobuf".parse().unwrap());
    let (s, _, _) = h.send(req).await;
    assert_eq!(s, StatusCode::NOT_ACCEPTABLE);
    // Nothing stored by the rejected requests.
    let (_, list) = h.call("GET", CMS, None).await;
    assert_eq!(list["items"].as_array().unwrap().len(), 0);
}

#[tokio::test]
async fn unauthenticated_is_401_but_health_is_public() {
    let h = Harness::new().await;
    let req = Request::builder().uri("/api/v1/namespaces").body(Body::empty()).unwrap();
    let (s, _, st) = h.send(req).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    assert_eq!(st["reason"], "Unauthorized");
    for path in ["/healthz", "/readyz", "/livez", "/version"] {
        let req = Request::builder().uri(path).body(Body::empty()).unwrap();
        let (s, _, _) = h.send(req).await;
        assert_eq!(s, StatusCode::OK, "{path}");
    }
}

#[tokio::test]
async fn update_conflict_on_stale_resource_version() {
    let h = Harness::new().await;
    let (_, obj) = h.call("POST", CMS, Some(cm("a", json!({})))).await;
    let mut v1 = obj.clone();
    v1["data"]["k"] = json!("v1");
    let (s, updated) = h.call("PUT", &format!("{CMS}/a"), Some(v1)).await;
    assert_eq!(s, StatusCode::OK, "{updated}");
    let mut stale = obj.clone();
    stale["data"]["k"] = json!("v2");
    let (s, st) = h.call("PUT", &format!("{CMS}/a"), Some(stale)).await;
    assert_eq!(s, StatusCode::CONFLICT);
    assert_eq!(st["reason"], "Conflict");
    assert!(st["message"].as_str().unwrap().contains("the object has been modified"));
    let (_, got) = h.call("GET", &format!("{CMS}/a"), None).await;
    assert_eq!(got["data"]["k"], "v1");
}

#[tokio::test]
async fn three_patch_types() {
    let h = Harness::new().await;
    let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
        "spec": {"containers": [{"name": "a", "image": "busybox:1"}, {"name": "b", "image": "busybox:1"}]}});
    let (s, created) = h.call("POST", "/api/v1/namespaces/default/pods", Some(pod)).await;
    assert_eq!(s, StatusCode::CREATED, "{created}");
    let path = "/api/v1/namespaces/default/pods/p";
    let (s, p) = h
        .patch(path, "application/strategic-merge-patch+json", json!({"spec": {"containers": [{"name": "b", "image": "busybox:2"}]}}))
        .await;
    assert_eq!(s, StatusCode::OK, "{p}");
    assert_eq!(p["spec"]["containers"][0]["image"], "busybox:1");
    assert_eq!(p["spec"]["containers"][1]["image"], "busybox:2");
    let (s, p) = h.patch(path, "application/merge-patch+json", json!({"metadata": {"labels": {"x": "y"}}})).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(p["metadata"]["labels"]["x"], "y");
    let (s, p) = h
        .patch(path, "application/json-patch+json", json!([{"op": "replace", "path": "/spec/containers/0/image", "value": "busybox:3"}]))
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(p["spec"]["containers"][0]["image"], "busybox:3");
    let (s, _) = h.patch(path, "application/json-patch+json", json!([{"op": "test", "path": "/metadata/name", "value": "other"}])).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);
    let (s, _) = h.patch(path, "text/plain", json!({})).await;
    assert_eq!(s, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    let (s, _) = h.patch("/api/v1/namespaces/default/pods/none", "application/merge-patch+json", json!({})).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn list_selectors_and_pages() {
    let h = Harness::new().await;
    for i in 0..7 {
        let tier = if i % 2 == 0 { "even" } else { "odd" };
        h.call("POST", CMS, Some(cm(&format!("c{i}"), json!({"tier": tier, "n": i.to_string()})))).await;
    }
    let names = |v: &Value| v["items"].as_array().unwrap().iter().map(|i| i["metadata"]["name"].as_str().unwrap().to_string()).collect::<Vec<_>>();
    let (_, l) = h.call("GET", &format!("{CMS}?labelSelector=tier%3Deven"), None).await;
    assert_eq!(names(&l), ["c0", "c2", "c4", "c6"]);
    let (_, l) = h.call("GET", &format!("{CMS}?labelSelector=tier!%3Deven,n+in+(1,3)"), None).await;
    assert_eq!(names(&l), ["c1", "c3"]);
    let (_, l) = h.call("GET", &format!("{CMS}?fieldSelector=metadata.name%3Dc5"), None).await;
    assert_eq!(names(&l), ["c5"]);
    let (s, _) = h.call("GET", &format!("{CMS}?fieldSelector=spec.bogus%3Dx"), None).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    // Pages of 3 with a selector: the server reads on until each page is full.
    let mut seen = Vec::new();
    let mut next = format!("{CMS}?limit=2&labelSelector=tier%3Deven");
    loop {
        let (s, page) = h.call("GET", &next, None).await;
        assert_eq!(s, StatusCode::OK, "{page}");
        seen.extend(names(&page));
        match page["metadata"]["continue"].as_str() {
            Some(c) => next = format!("{CMS}?limit=2&labelSelector=tier%3Deven&continue={c}"),
            None => break,
        }
    }
    assert_eq!(seen, ["c0", "c2", "c4", "c6"]);
    let (s, _) = h.call("GET", &format!("{CMS}?limit=2&continue=garbage"), None).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn watch_delivers_changes_in_order_with_bookmarks() {
    let h = Harness::with_fast_bookmarks().await;
    let (_, a) = h.call("POST", CMS, Some(cm("a", json!({"w": "1"})))).await;
    let rv = a["metadata"]["resourceVersion"].as_str().unwrap().to_string();
    let req = Harness::request("GET", &format!("{CMS}?watch=1&resourceVersion={rv}&allowWatchBookmarks=true&labelSelector=w"), "", "");
    let resp = h.app.clone().oneshot(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let mut body = resp.into_body().into_data_stream();
    h.call("POST", CMS, Some(cm("b", json!({"w": "1"})))).await;
    h.call("POST", CMS, Some(cm("ignored", json!({})))).await;
    h.patch(&format!("{CMS}/a"), "application/merge-patch+json", json!({"data": {"k": "2"}})).await;
    h.call("DELETE", &format!("{CMS}/b"), None).await;
    let mut events = Vec::new();
    let mut buf = Vec::new();
    while events.iter().filter(|(t, _): &&(String, Value)| t != "BOOKMARK").count() < 3 {
        let chunk = tokio::time::timeout(Duration::from_secs(5), body.next()).await.expect("watch event").unwrap().unwrap();
        buf.extend_from_slice(&chunk);
        while let Some(pos) = buf.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = buf.drain(..=pos).collect();
            let ev: Value = serde_json::from_slice(&line).unwrap();
            events.push((ev["type"].as_str().unwrap().to_string(), ev["object"].clone()));
        }
    }
    let real: Vec<_> = events.iter().filter(|(t, _)| t != "BOOKMARK").map(|(t, o)| (t.clone(), o["metadata"]["name"].as_str().unwrap().to_string())).collect();
    assert_eq!(real, [("ADDED".into(), "b".into()), ("MODIFIED".into(), "a".into()), ("DELETED".into(), "b".into())]);
    // Keep reading until a bookmark arrives.
    loop {
        if events.iter().any(|(t, o)| t == "BOOKMARK" && o["metadata"]["resourceVersion"].is_string()) {
            break;
        }
        let chunk = tokio::time::timeout(Duration::from_secs(5), body.next()).await.expect("bookmark").unwrap().unwrap();
        for line in chunk.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
            let ev: Value = serde_json::from_slice(line).unwrap();
            events.push((ev["type"].as_str().unwrap().to_string(), ev["object"].clone()));
        }
    }
}

#[tokio::test]
async fn finalizers_hold_deletion_until_removed() {
    let h = Harness::new().await;
    let mut obj = cm("f", json!({}));
    obj["metadata"]["finalizers"] = json!(["example.com/hold"]);
    h.call("POST", CMS, Some(obj)).await;
    let (s, held) = h.call("DELETE", &format!("{CMS}/f"), None).await;
    assert_eq!(s, StatusCode::OK);
    assert!(held["metadata"]["deletionTimestamp"].is_string(), "{held}");
    let (s, _) = h.call("GET", &format!("{CMS}/f"), None).await;
    assert_eq!(s, StatusCode::OK);
    let (s, _) = h.patch(&format!("{CMS}/f"), "application/merge-patch+json", json!({"metadata": {"finalizers": null}})).await;
    assert_eq!(s, StatusCode::OK);
    let (s, _) = h.call("GET", &format!("{CMS}/f"), None).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn dry_run_stores_nothing() {
    let h = Harness::new().await;
    let (s, obj) = h.call("POST", &format!("{CMS}?dryRun=All"), Some(cm("d", json!({})))).await;
    assert_eq!(s, StatusCode::CREATED);
    assert_eq!(obj["metadata"]["name"], "d");
    let (s, _) = h.call("GET", &format!("{CMS}/d"), None).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn aggregated_discovery_and_tables() {
    let h = Harness::new().await;
    let mut req = Harness::request("GET", "/apis", "", "");
    req.headers_mut().insert(
        header::ACCEPT,
        "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,application/json".parse().unwrap(),
    );
    let (s, headers, body) = h.send(req).await;
    assert_eq!(s, StatusCode::OK);
    assert!(headers[header::CONTENT_TYPE].to_str().unwrap().contains("as=APIGroupDiscoveryList"));
    let apps = body["items"].as_array().unwrap().iter().find(|g| g["metadata"]["name"] == "apps").unwrap();
    let deploy = apps["versions"][0]["resources"].as_array().unwrap().iter().find(|r| r["resource"] == "deployments").unwrap();
    assert_eq!(deploy["scope"], "Namespaced");
    assert_eq!(deploy["shortNames"], json!(["deploy"]));
    h.call("POST", CMS, Some(cm("t", json!({})))).await;
    let mut req = Harness::request("GET", CMS, "", "");
    req.headers_mut().insert(header::ACCEPT, "application/json;as=Table;v=v1;g=meta.k8s.io".parse().unwrap());
    let (_, _, table) = h.send(req).await;
    assert_eq!(table["kind"], "Table");
    assert_eq!(table["columnDefinitions"][0]["name"], "Name");
    assert_eq!(table["rows"][0]["cells"][0], "t");
    assert_eq!(table["rows"][0]["object"]["kind"], "PartialObjectMetadata");
}

#[tokio::test]
async fn field_validation_strict_warn_ignore() {
    let h = Harness::new().await;
    let body = r#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"fv","name":"fv"},"data":{"a":"1"},"dta":{}}"#;
    let (s, _, st) = h.send(Harness::request("POST", &format!("{CMS}?fieldValidation=Strict"), "application/json", body)).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{st}");
    let msg = st["message"].as_str().unwrap();
    assert!(msg.contains("strict decoding error") && msg.contains("unknown field \"dta\"") && msg.contains("duplicate field \"metadata.name\""), "{msg}");
    let (s, _) = h.call("GET", &format!("{CMS}/fv"), None).await;
    assert_eq!(s, StatusCode::NOT_FOUND, "a rejected create stores nothing");
    let (s, headers, obj) = h.send(Harness::request("POST", &format!("{CMS}?fieldValidation=Warn"), "application/json", body)).await;
    assert_eq!(s, StatusCode::CREATED, "{obj}");
    let warnings: Vec<_> = headers.get_all(header::WARNING).iter().map(|v| v.to_str().unwrap().to_string()).collect();
    assert!(warnings.iter().any(|w| w.contains("unknown field \\\"dta\\\"")), "{warnings:?}");
    assert!(obj.get("dta").is_none(), "unknown fields are dropped");
    let (s, headers, _) = h
        .send(Harness::request("PATCH", &format!("{CMS}/fv?fieldValidation=Ignore"), "application/merge-patch+json", r#"{"bogus":1}"#))
        .await;
    assert_eq!(s, StatusCode::OK);
    assert!(headers.get(header::WARNING).is_none());
    let (s, _, _) = h
        .send(Harness::request("PATCH", &format!("{CMS}/fv?fieldValidation=Strict"), "application/merge-patch+json", r#"{"bogus":1}"#))
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    let (s, _) = h.call("POST", &format!("{CMS}?fieldValidation=Sometimes"), Some(cm("x", json!({})))).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn scale_subresource_reads_and_writes_replicas() {
    let h = Harness::new().await;
    let deploy = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d"},
        "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "d"}},
                 "template": {"metadata": {"labels": {"app": "d"}}, "spec": {"containers": [{"name": "c", "image": "busybox"}]}}}});
    let (s, created) = h.call("POST", "/apis/apps/v1/namespaces/default/deployments", Some(deploy)).await;
    assert_eq!(s, StatusCode::CREATED, "{created}");
    let path = "/apis/apps/v1/namespaces/default/deployments/d/scale";
    let (s, scale) = h.call("GET", path, None).await;
    assert_eq!(s, StatusCode::OK, "{scale}");
    assert_eq!(scale["kind"], "Scale");
    assert_eq!(scale["spec"]["replicas"], 2);
    assert_eq!(scale["status"]["selector"], "app=d");
    let (s, scale) = h.patch(path, "application/merge-patch+json", json!({"spec": {"replicas": 5}})).await;
    assert_eq!(s, StatusCode::OK, "{scale}");
    let (_, d) = h.call("GET", "/apis/apps/v1/namespaces/default/deployments/d", None).await;
    assert_eq!(d["spec"]["replicas"], 5);
    assert_eq!(d["metadata"]["generation"], 2);
    let mut stale = scale.clone();
    stale["metadata"]["resourceVersion"] = created["metadata"]["resourceVersion"].clone();
    let (s, _) = h.call("PUT", path, Some(stale)).await;
    assert_eq!(s, StatusCode::CONFLICT);
    let (s, _) = h.patch(path, "application/merge-patch+json", json!({"spec": {"replicas": -1}})).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);
}

#[tokio::test]
async fn hpa_is_served_in_v1_and_v2_from_one_store() {
    let h = Harness::new().await;
    let hpa = json!({"apiVersion": "autoscaling/v1", "kind": "HorizontalPodAutoscaler", "metadata": {"name": "h"},
        "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"}, "maxReplicas": 4, "targetCPUUtilizationPercentage": 60}});
    let (s, v1) = h.call("POST", "/apis/autoscaling/v1/namespaces/default/horizontalpodautoscalers", Some(hpa)).await;
    assert_eq!(s, StatusCode::CREATED, "{v1}");
    assert_eq!(v1["spec"]["targetCPUUtilizationPercentage"], 60);
    let (s, v2) = h.call("GET", "/apis/autoscaling/v2/namespaces/default/horizontalpodautoscalers/h", None).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v2["apiVersion"], "autoscaling/v2");
    assert_eq!(v2["spec"]["metrics"][0]["resource"]["target"]["averageUtilization"], 60);
    assert_eq!(v2["metadata"]["resourceVersion"], v1["metadata"]["resourceVersion"]);
}

#[tokio::test]
async fn status_subresource_and_generate_name() {
    let h = Harness::new().await;
    let deploy = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"generateName": "web-"},
        "spec": {"selector": {"matchLabels": {"app": "w"}},
                 "template": {"metadata": {"labels": {"app": "w"}}, "spec": {"containers": [{"name": "c", "image": "busybox"}]}}},
        "status": {"replicas": 9}});
    let (s, d) = h.call("POST", "/apis/apps/v1/namespaces/default/deployments", Some(deploy)).await;
    assert_eq!(s, StatusCode::CREATED, "{d}");
    let name = d["metadata"]["name"].as_str().unwrap().to_string();
    assert!(name.starts_with("web-") && name.len() == 9, "{name}");
    assert!(d["status"].get("replicas").is_none(), "status is not set by a create: {d}");
    let path = format!("/apis/apps/v1/namespaces/default/deployments/{name}");
    // The main resource ignores status; the status subresource ignores everything else.
    let (_, after) = h.patch(&path, "application/merge-patch+json", json!({"status": {"replicas": 3}})).await;
    assert!(after["status"].get("replicas").is_none(), "{after}");
    let (s, after) = h
        .patch(&format!("{path}/status"), "application/merge-patch+json", json!({"spec": {"replicas": 7}, "status": {"replicas": 3}}))
        .await;
    assert_eq!(s, StatusCode::OK, "{after}");
    assert_eq!(after["status"]["replicas"], 3);
    assert_eq!(after["spec"]["replicas"], 1, "a status write does not change spec");
    assert_eq!(after["metadata"]["generation"], 1, "a status write does not bump generation");
    let (s, got) = h.call("GET", &format!("{path}/status"), None).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(got["status"]["replicas"], 3);
}

#[tokio::test]
async fn delete_collection_with_selector() {
    let h = Harness::new().await;
    for (n, l) in [("a", "x"), ("b", "x"), ("c", "y")] {
        h.call("POST", CMS, Some(cm(n, json!({"group": l})))).await;
    }
    let (s, deleted) = h.call("DELETE", &format!("{CMS}?labelSelector=group%3Dx"), None).await;
    assert_eq!(s, StatusCode::OK, "{deleted}");
    assert_eq!(deleted["items"].as_array().unwrap().len(), 2);
    let (_, left) = h.call("GET", CMS, None).await;
    let names: Vec<_> = left["items"].as_array().unwrap().iter().map(|i| i["metadata"]["name"].clone()).collect();
    assert_eq!(names, [json!("c")]);
}

#[tokio::test]
async fn server_side_apply_owns_fields_and_conflicts() {
    let h = Harness::new().await;
    let path = "/api/v1/namespaces/default/configmaps/ssa";
    let apply = |mgr: &str, force: bool, body: Value| {
        let q = if force { "&force=true" } else { "" };
        Harness::request("PATCH", &format!("{path}?fieldManager={mgr}{q}"), "application/apply-patch+yaml", body.to_string())
    };
    let config = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "ssa"}, "data": {"a": "1", "b": "2"}});
    let (s, _, obj) = h.send(apply("alice", false, config.clone())).await;
    assert_eq!(s, StatusCode::CREATED, "{obj}");
    assert_eq!(obj["metadata"]["managedFields"][0]["manager"], "alice");
    assert_eq!(obj["metadata"]["managedFields"][0]["operation"], "Apply");
    let owned = &obj["metadata"]["managedFields"][0]["fieldsV1"]["f:data"];
    assert!(owned.get("f:a").is_some() && owned.get("f:b").is_some(), "{owned}");
    // The same config again changes nothing.
    let (s, _, again) = h.send(apply("alice", false, config.clone())).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(again["metadata"]["resourceVersion"], obj["metadata"]["resourceVersion"]);
    // Another manager changing alice's field conflicts, naming her and the field.
    let (s, _, st) = h.send(apply("bob", false, json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "ssa"}, "data": {"a": "9"}}))).await;
    assert_eq!(s, StatusCode::CONFLICT, "{st}");
    assert_eq!(st["message"], "Apply failed with 1 conflict: conflict with \"alice\": .data.a");
    assert_eq!(st["details"]["causes"][0]["field"], ".data.a");
    let (s, _, forced) = h.send(apply("bob", true, json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "ssa"}, "data": {"a": "9"}}))).await;
    assert_eq!(s, StatusCode::OK, "{forced}");
    assert_eq!(forced["data"]["a"], "9");
    // Alice drops b from her config: nobody else owns it, so it goes.
    let (s, _, dropped) = h.send(apply("alice", false, json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "ssa"}, "data": {}}))).await;
    assert_eq!(s, StatusCode::OK, "{dropped}");
    assert_eq!(dropped["data"], json!({"a": "9"}));
    // A plain update records its manager as an Update.
    let (s, _, upd) = h
        .send(Harness::request("PATCH", &format!("{path}?fieldManager=carol"), "application/merge-patch+json", r#"{"data":{"c":"3"}}"#))
        .await;
    assert_eq!(s, StatusCode::OK);
    let carol = upd["metadata"]["managedFields"].as_array().unwrap().iter().find(|m| m["manager"] == "carol").unwrap().clone();
    assert_eq!(carol["operation"], "Update");
    assert_eq!(carol["fieldsV1"], json!({"f:data": {"f:c": {}}}));
    // Apply needs a field manager.
    let (s, _, _) = h.send(Harness::request("PATCH", path, "application/apply-patch+yaml", config.to_string())).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
}

/// Many API watches share the watch cache's one store watch; a watcher resuming from before
/// the cache's window gets 410 and a fresh watch sees every later event.
#[tokio::test]
async fn watch_cache_fans_out_one_store_watch() {
    let dir = tempfile::tempdir().unwrap();
    let backend = kine_sqlite::SqliteBackend::open(&dir.path().join("state.db")).await.unwrap();
    let router = apiserver::app_with(backend.clone(), apiserver::Config { watch_cache_size: 20, ..Default::default() }).await.unwrap();
    let h = Harness { app: router, _dir: dir };
    let (_, first) = h.call("POST", CMS, Some(cm("w0", json!({})))).await;
    let old_rv = first["metadata"]["resourceVersion"].as_str().unwrap().to_string();
    let mut streams = Vec::new();
    for _ in 0..200 {
        let req = Harness::request("GET", &format!("{CMS}?watch=1&resourceVersion={old_rv}"), "", "");
        let resp = h.app.clone().oneshot(req).await.unwrap();
        streams.push(resp.into_body().into_data_stream());
    }
    assert!(backend.active_watchers() <= 2, "watchers on the store: {}", backend.active_watchers());
    h.call("POST", CMS, Some(cm("w1", json!({})))).await;
    for s in streams.iter_mut().step_by(37) {
        let chunk = tokio::time::timeout(Duration::from_secs(5), s.next()).await.expect("event").unwrap().unwrap();
        let ev: Value = serde_json::from_slice(chunk.split(|b| *b == b'\n').next().unwrap()).unwrap();
        assert_eq!((ev["type"].as_str(), ev["object"]["metadata"]["name"].as_str()), (Some("ADDED"), Some("w1")));
    }
    // Push the window past old_rv: resuming from it is now 410 Gone.
    for i in 0..25 {
        h.patch(&format!("{CMS}/w1"), "application/merge-patch+json", json!({"data": {"n": i.to_string()}})).await;
    }
    let req = Harness::request("GET", &format!("{CMS}?watch=1&resourceVersion={old_rv}"), "", "");
    let (_, _, body) = h.send(req).await;
    let line = match &body {
        Value::String(s) => serde_json::from_str::<Value>(s.lines().next().unwrap()).unwrap(),
        other => other.clone(),
    };
    assert_eq!(line["type"], "ERROR", "{body}");
    assert_eq!(line["object"]["code"], 410);
}

#[tokio::test]
async fn propagation_policy_records_gc_finalizers() {
    let h = Harness::new().await;
    for name in ["fg", "or", "bg"] {
        h.call("POST", CMS, Some(cm(name, json!({})))).await;
    }
    let opts = |p: &str| json!({"kind": "DeleteOptions", "apiVersion": "v1", "propagationPolicy": p});
    let (s, fg) = h.call("DELETE", &format!("{CMS}/fg"), Some(opts("Foreground"))).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(fg["metadata"]["finalizers"], json!(["foregroundDeletion"]), "{fg}");
    assert!(fg["metadata"]["deletionTimestamp"].is_string());
    let (s, or) = h.call("DELETE", &format!("{CMS}/or?propagationPolicy=Orphan"), None).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(or["metadata"]["finalizers"], json!(["orphan"]), "{or}");
    let (s, bg) = h.call("DELETE", &format!("{CMS}/bg"), Some(opts("Background"))).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(bg["kind"], "Status", "background deletes at once: {bg}");
    let (s, _) = h.call("DELETE", &format!("{CMS}/fg"), Some(opts("Sideways"))).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);
    // The garbage collector's part: once it drops the finalizer, the object goes.
    let (s, _) = h.patch(&format!("{CMS}/fg"), "application/merge-patch+json", json!({"metadata": {"finalizers": null}})).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(h.call("GET", &format!("{CMS}/fg"), None).await.0, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn partial_object_metadata_for_metadata_clients() {
    let h = Harness::new().await;
    let mut obj = cm("m", json!({"big": "data"}));
    obj["metadata"]["labels"] = json!({"a": "b"});
    h.call("POST", CMS, Some(obj)).await;
    let accept = |mut req: Request<Body>, v: &str| {
        req.headers_mut().insert(header::ACCEPT, v.parse().unwrap());
        req
    };
    let list_type = "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1,application/json";
    let (s, _, list) = h.send(accept(Harness::request("GET", CMS, "", ""), list_type)).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(list["kind"], "PartialObjectMetadataList", "{list}");
    assert_eq!(list["apiVersion"], "meta.k8s.io/v1");
    assert!(list["metadata"]["resourceVersion"].is_string());
    let item = &list["items"][0];
    assert_eq!(item["kind"], "PartialObjectMetadata");
    assert_eq!(item["metadata"]["labels"]["a"], "b");
    assert!(item.get("data").is_none(), "{item}");
    let one_type = "application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v1,application/json";
    let (s, _, one) = h.send(accept(Harness::request("GET", &format!("{CMS}/m"), "", ""), one_type)).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(one["kind"], "PartialObjectMetadata", "{one}");
    assert!(one["metadata"]["uid"].is_string());
}

#[tokio::test]
async fn namespace_finalize_changes_only_spec_finalizers() {
    let h = Harness::new().await;
    h.call("POST", "/api/v1/namespaces", Some(json!({"metadata": {"name": "fin"}}))).await;
    let (s, ns) = h.call("DELETE", "/api/v1/namespaces/fin", None).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(ns["status"]["phase"], "Terminating");
    // A finalize body may not change anything but spec.finalizers.
    let mut body = ns.clone();
    body["spec"]["finalizers"] = json!(["kubernetes", "example.com/extra"]);
    body["metadata"]["labels"] = json!({"changed": "yes"});
    body["status"]["phase"] = json!("Active");
    let (s, out) = h.call("PUT", "/api/v1/namespaces/fin/finalize", Some(body)).await;
    assert_eq!(s, StatusCode::OK, "{out}");
    assert_eq!(out["spec"]["finalizers"], json!(["kubernetes", "example.com/extra"]));
    assert_eq!(out["status"]["phase"], "Terminating");
    assert!(out["metadata"]["labels"].get("changed").is_none(), "{out}");
    // Emptied: the namespace goes.
    let mut body = out.clone();
    body["spec"]["finalizers"] = json!([]);
    let (s, out) = h.call("PUT", "/api/v1/namespaces/fin/finalize", Some(body)).await;
    assert_eq!(s, StatusCode::OK, "{out}");
    assert_eq!(h.call("GET", "/api/v1/namespaces/fin", None).await.0, StatusCode::NOT_FOUND);
}

/// events.k8s.io/v1 and core/v1 Events are one store, as upstream: each API shows the other's.
#[tokio::test]
async fn events_are_shared_between_both_apis() {
    let h = Harness::new().await;
    let ev = json!({"apiVersion": "events.k8s.io/v1", "kind": "Event", "metadata": {"name": "e1"},
        "eventTime": "2026-11-25T10:00:00.000000Z", "reportingController": "krust.io/test", "reportingInstance": "i",
        "action": "Testing", "reason": "Tested", "type": "Normal", "note": "hello",
        "regarding": {"kind": "Pod", "name": "p", "namespace": "default"}});
    let (s, created) = h.call("POST", "/apis/events.k8s.io/v1/namespaces/default/events", Some(ev)).await;
    assert_eq!(s, StatusCode::CREATED, "{created}");
    assert_eq!(created["note"], "hello");
    let (s, core) = h.call("GET", "/api/v1/namespaces/default/events/e1", None).await;
    assert_eq!(s, StatusCode::OK, "{core}");
    assert_eq!(core["apiVersion"], "v1");
    assert_eq!(core["message"], "hello");
    assert_eq!(core["involvedObject"]["name"], "p");
    assert_eq!(core["reportingComponent"], "krust.io/test");
    let (_, list) = h.call("GET", "/apis/events.k8s.io/v1/namespaces/default/events", None).await;
    assert_eq!(list["items"][0]["regarding"]["name"], "p", "{list}");
    assert_eq!(list["items"][0]["apiVersion"], "events.k8s.io/v1");
}
