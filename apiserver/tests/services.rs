//! ClusterIP and NodePort allocation, and the `kubernetes` Service, through the router.

mod common;

use std::collections::HashSet;

use common::call;

use axum::http::StatusCode;
use serde_json::{json, Value};

fn svc(name: &str, spec: Value) -> Value {
    let mut spec = spec;
    if spec.get("ports").is_none() {
        spec["ports"] = json!([{"port": 80}]);
    }
    json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": name}, "spec": spec})
}

const SVCS: &str = "/api/v1/namespaces/default/services";

async fn app_in(dir: &std::path::Path, cidr: &str) -> axum::Router {
    let backend = kine_sqlite::SqliteBackend::open(&dir.join("state.db")).await.unwrap();
    let config = apiserver::Config { service_cidr: cidr.into(), service_node_port_range: "30000-30002".into(), ..Default::default() };
    apiserver::app_with(backend, config).await.unwrap()
}

#[tokio::test]
async fn cluster_ips_and_node_ports_are_unique_and_released() {
    let dir = tempfile::tempdir().unwrap();
    let app = app_in(dir.path(), "10.43.0.0/29").await;
    // The kubernetes Service holds the first address and points at the server.
    let (s, k) = call(&app, "GET", &format!("{SVCS}/kubernetes"), None).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(k["spec"]["clusterIP"], "10.43.0.1");
    let (s, ep) = call(&app, "GET", "/api/v1/namespaces/default/endpoints/kubernetes", None).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(ep["subsets"][0]["ports"][0]["port"], 6443);
    let (s, _) = call(&app, "GET", "/apis/discovery.k8s.io/v1/namespaces/default/endpointslices/kubernetes", None).await;
    assert_eq!(s, StatusCode::OK);

    // A /29 has 6 usable addresses, one for `kubernetes`: five more, then the range is full.
    let mut seen = HashSet::new();
    for i in 0..5 {
        let (s, obj) = call(&app, "POST", SVCS, Some(svc(&format!("s{i}"), json!({})))).await;
        assert_eq!(s, StatusCode::CREATED, "{obj}");
        let ip = obj["spec"]["clusterIP"].as_str().unwrap().to_string();
        assert!(ip.starts_with("10.43.0.") && ip != "10.43.0.1", "{ip}");
        assert_eq!(obj["spec"]["clusterIPs"], json!([ip]));
        assert!(seen.insert(ip), "an address handed out twice");
    }
    let (s, _) = call(&app, "POST", SVCS, Some(svc("full", json!({})))).await;
    assert!(s.is_server_error(), "range full: {s}");
    // Headless and ExternalName Services take no address.
    let (s, h) = call(&app, "POST", SVCS, Some(svc("headless", json!({"clusterIP": "None"})))).await;
    assert_eq!(s, StatusCode::CREATED, "{h}");
    assert_eq!(h["spec"]["clusterIP"], "None");
    // Deleting one frees its address for the next.
    let (_, s0) = call(&app, "GET", &format!("{SVCS}/s0"), None).await;
    call(&app, "DELETE", &format!("{SVCS}/s0"), None).await;
    let (s, again) = call(&app, "POST", SVCS, Some(svc("again", json!({})))).await;
    assert_eq!(s, StatusCode::CREATED);
    assert_eq!(again["spec"]["clusterIP"], s0["spec"]["clusterIP"]);
    // An address asked for must be free and in range.
    let (s, st) = call(&app, "POST", SVCS, Some(svc("taken", json!({"clusterIP": again["spec"]["clusterIP"]})))).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{st}");
    assert!(st["message"].as_str().unwrap().contains("already allocated"), "{st}");

    // NodePorts: three in the range; asked-for ones must be free.
    let (s, np) = call(&app, "POST", SVCS, Some(svc("np", json!({"type": "NodePort", "clusterIP": "None", "ports": [{"port": 80}, {"port": 81, "nodePort": 30001}]})))).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "headless NodePort is invalid: {np}");
    call(&app, "DELETE", &format!("{SVCS}/s1"), None).await;
    let (s, np) = call(&app, "POST", SVCS, Some(svc("np", json!({"type": "NodePort", "ports": [{"port": 80, "name": "a"}, {"port": 81, "name": "b", "nodePort": 30001}]})))).await;
    assert_eq!(s, StatusCode::CREATED, "{np}");
    let ports: HashSet<i64> = np["spec"]["ports"].as_array().unwrap().iter().map(|p| p["nodePort"].as_i64().unwrap()).collect();
    assert!(ports.contains(&30001) && ports.len() == 2, "{np}");
    call(&app, "DELETE", &format!("{SVCS}/s2"), None).await;
    let (s, st) = call(&app, "POST", SVCS, Some(svc("np2", json!({"type": "NodePort", "ports": [{"port": 80, "nodePort": 30001}]})))).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{st}");
    // Back to ClusterIP: its NodePorts are released.
    let (s, _) = call(&app, "PUT", &format!("{SVCS}/np"), Some({
        let mut o = np.clone();
        o["spec"]["type"] = json!("ClusterIP");
        for p in o["spec"]["ports"].as_array_mut().unwrap() {
            p.as_object_mut().unwrap().remove("nodePort");
        }
        o
    })).await;
    assert_eq!(s, StatusCode::OK);
    let (s, np2) = call(&app, "POST", SVCS, Some(svc("np2", json!({"type": "NodePort", "ports": [{"port": 80, "nodePort": 30001}]})))).await;
    assert_eq!(s, StatusCode::CREATED, "{np2}");
}

#[tokio::test]
async fn allocations_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let ip = {
        let app = app_in(dir.path(), "10.43.0.0/29").await;
        let (_, obj) = call(&app, "POST", SVCS, Some(svc("keep", json!({})))).await;
        obj["spec"]["clusterIP"].as_str().unwrap().to_string()
    };
    let app = app_in(dir.path(), "10.43.0.0/29").await;
    let (s, st) = call(&app, "POST", SVCS, Some(svc("clash", json!({"clusterIP": ip})))).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "still allocated after a restart: {st}");
}
