//! `metrics.k8s.io/v1beta1` served by the API server itself (no metrics-server add-on):
//! NodeMetrics and PodMetrics are read on request from each node's kubelet summary
//! (`/stats/summary`: CPU as a rate over the kubelet's sampling window, memory as working
//! set), never stored. `kubectl top` and the HPA controller read them.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::Request;
use axum::response::{IntoResponse, Response};
use serde_json::{json, Map, Value};

use crate::error::{ApiError, ApiResult};
use crate::registry::list::{ListOptions, Selection};
use crate::validation::FieldErrors;
use crate::registry::{Kind, ReqCtx, ResourceInfo, Strategy};
use crate::selectors::{fields::FieldSelector, labels};
use crate::AppState;

pub const GROUP: &str = "metrics.k8s.io";
pub const VERSION: &str = "v1beta1";
/// The kubelet's sampling window (agent's `SAMPLE_PERIOD`).
const WINDOW: &str = "5s";
const KUBELET_TIMEOUT: Duration = Duration::from_secs(3);

/// Read-only, never stored: only get and list are served.
struct MetricsStrategy {
    pods: bool,
}

fn usage_schema() -> Value {
    json!({"type": "object", "additionalProperties": {"x-kubernetes-int-or-string": true, "anyOf": [{"type": "integer"}, {"type": "string"}]}})
}

impl Strategy for MetricsStrategy {
    /// metrics-server's published shapes (k8s.io/metrics), as OpenAPI for `kubectl explain`.
    fn openapi_schema(&self) -> Option<Value> {
        let mut props = json!({
            "timestamp": {"type": "string", "format": "date-time", "description": "The end of the window in which usage was measured."},
            "window": {"type": "string", "description": "The length of the window in which usage was measured."},
        });
        if self.pods {
            props["containers"] = json!({"type": "array", "description": "Metrics for all containers, collected within the same window.",
                "items": {"type": "object", "required": ["name", "usage"], "properties": {"name": {"type": "string"}, "usage": usage_schema()}}});
        } else {
            props["usage"] = usage_schema();
        }
        Some(json!({"type": "object", "properties": props}))
    }

    fn validate(&self, _ctx: &ReqCtx, _obj: &Value) -> FieldErrors {
        Vec::new()
    }
    fn verbs(&self) -> &'static [&'static str] {
        &["get", "list"]
    }
    fn table_convertible(&self) -> bool {
        false
    }
}

fn kind(kind: &str, plural: &str, namespaced: bool) -> Kind {
    let pods = namespaced;
    Kind {
        info: ResourceInfo {
            group: GROUP.into(),
            version: VERSION.into(),
            kind: kind.into(),
            list_kind: format!("{kind}List"),
            plural: plural.into(),
            singular: String::new(),
            namespaced,
            short_names: Vec::new(),
            categories: Vec::new(),
            subresources: Vec::new(),
        },
        strategy: Arc::new(MetricsStrategy { pods }),
        normalize: None,
    }
}

/// NodeMetrics and PodMetrics, for discovery and routing.
pub fn kinds() -> Vec<Kind> {
    vec![kind("NodeMetrics", "nodes", false), kind("PodMetrics", "pods", true)]
}

fn now() -> String {
    chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// The kubelet's summary, or `None` when the node does not answer.
async fn summary(st: &AppState, node: &Value) -> Option<Value> {
    let dialer = st.kubelet.clone()?;
    let (ip, port) = super::proxy::kubelet_address(node)?;
    let req = Request::get("/stats/summary").header("host", format!("{ip}:{port}")).body(Body::empty()).ok()?;
    let fetch = async {
        let resp = dialer.send(ip, port, req).await.ok()?;
        if !resp.status().is_success() {
            return None;
        }
        let bytes = axum::body::to_bytes(Body::new(resp.into_body()), 16 << 20).await.ok()?;
        serde_json::from_slice::<Value>(&bytes).ok()
    };
    tokio::time::timeout(KUBELET_TIMEOUT, fetch).await.ok().flatten()
}

fn cpu(v: &Value) -> String {
    format!("{}n", v["usageNanoCores"].as_u64().unwrap_or(0))
}

fn memory(v: &Value) -> String {
    format!("{}Ki", v["workingSetBytes"].as_u64().unwrap_or(0) / 1024)
}

fn labels_of(obj: &Value) -> Map<String, Value> {
    obj["metadata"]["labels"].as_object().cloned().unwrap_or_default()
}

async fn all(st: &AppState, plural: &str) -> ApiResult<Vec<Value>> {
    let store = st.registry.find("", "v1", plural).ok_or(ApiError::NoRoute)?;
    let opts = ListOptions { selection: Selection { labels: labels::LabelSelector::everything(), fields: FieldSelector::everything() }, limit: 0, continue_token: None, resource_version: None, resource_version_match: None };
    Ok(store.list(None, &opts).await?.items)
}

/// Serves a GET on `metrics.k8s.io/v1beta1` `nodes` or `pods`.
pub async fn serve(st: &AppState, plural: &str, namespace: Option<&str>, name: Option<&str>, query: &std::collections::HashMap<String, String>) -> ApiResult<Response> {
    let selector = labels::parse(query.get("labelSelector").map(String::as_str).unwrap_or("")).map_err(|e| ApiError::bad_request(e.to_string()))?;
    let nodes = all(st, "nodes").await?;
    let summaries = futures::future::join_all(nodes.iter().map(|n| summary(st, n))).await;
    let items: Vec<Value> = match plural {
        "nodes" => nodes
            .iter()
            .zip(&summaries)
            .filter_map(|(node, s)| {
                let s = s.as_ref()?;
                let n = &s["node"];
                Some(json!({
                    "metadata": {"name": node["metadata"]["name"], "creationTimestamp": now(), "labels": labels_of(node)},
                    "timestamp": n["cpu"]["time"], "window": WINDOW,
                    "usage": {"cpu": cpu(&n["cpu"]), "memory": memory(&n["memory"])},
                }))
            })
            .collect(),
        _ => {
            let pods = all(st, "pods").await?;
            summaries
                .iter()
                .flatten()
                .flat_map(|s| s["pods"].as_array().cloned().unwrap_or_default())
                .filter_map(|p| {
                    let r = &p["podRef"];
                    let pod = pods.iter().find(|o| o["metadata"]["uid"] == r["uid"])?;
                    let containers: Vec<Value> = p["containers"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .map(|c| json!({"name": c["name"], "usage": {"cpu": cpu(&c["cpu"]), "memory": memory(&c["memory"])}}))
                        .collect();
                    Some(json!({
                        "metadata": {"name": r["name"], "namespace": r["namespace"], "creationTimestamp": now(), "labels": labels_of(pod)},
                        "timestamp": p["cpu"]["time"], "window": WINDOW,
                        "containers": containers,
                    }))
                })
                .filter(|m| namespace.is_none_or(|ns| m["metadata"]["namespace"] == ns))
                .collect()
        }
    };
    let (kind, resource) = if plural == "nodes" { ("NodeMetrics", "nodes") } else { ("PodMetrics", "pods") };
    let stamp = |mut v: Value| {
        v["kind"] = json!(kind);
        v["apiVersion"] = json!(format!("{GROUP}/{VERSION}"));
        v
    };
    match name {
        Some(name) => {
            let item = items.into_iter().find(|m| m["metadata"]["name"] == name).ok_or_else(|| ApiError::NotFound { group: GROUP.into(), kind: resource.into(), name: name.into() })?;
            Ok(axum::Json(stamp(item)).into_response())
        }
        None => {
            let items: Vec<Value> = items.into_iter().filter(|m| selector.matches(&labels_of(m))).map(stamp).collect();
            Ok(axum::Json(json!({"kind": format!("{kind}List"), "apiVersion": format!("{GROUP}/{VERSION}"), "metadata": {}, "items": items})).into_response())
        }
    }
}
