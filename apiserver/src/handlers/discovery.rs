//! API discovery: `/api`, `/apis`, `/api/v1`, `/apis/{group}/{version}`, and aggregated
//! discovery (`apidiscovery.k8s.io/v2`), which kubectl 1.32 asks for first. Everything is
//! derived from the registry, so a new kind appears here by being in the kinds table.

use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use serde_json::{json, Value};

use crate::error::{ApiError, ApiResult};
use crate::handlers::negotiate;
use crate::registry::store::GenericStore;
use crate::AppState;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api", get(core_groups))
        .route("/api/", get(core_groups))
        .route("/apis", get(groups))
        .route("/apis/", get(groups))
        .route("/api/v1", get(core_v1))
        .route("/apis/{group}", get(one_group))
        .route("/apis/{group}/", get(one_group))
        .route("/apis/{group}/{version}", get(group_version))
}

/// The aggregated-discovery version the client accepts, if any (`v2` preferred).
fn aggregated(headers: &HeaderMap) -> Option<&'static str> {
    let accept = headers.get(header::ACCEPT)?.to_str().ok()?;
    for item in accept.split(',') {
        if !item.contains("as=APIGroupDiscoveryList") || !item.contains("g=apidiscovery.k8s.io") {
            continue;
        }
        if item.contains("v=v2beta1") {
            return Some("v2beta1");
        }
        if item.contains("v=v2") {
            return Some("v2");
        }
    }
    None
}

fn json_response(body: Value, content_type: &str) -> Response {
    (StatusCode::OK, [(header::CONTENT_TYPE, content_type.to_string())], serde_json::to_vec(&body).unwrap_or_default())
        .into_response()
}

async fn core_groups(State(st): State<AppState>, headers: HeaderMap) -> Response {
    if let Some(v) = aggregated(&headers) {
        return aggregated_list(&st, v, true);
    }
    json_response(
        json!({
            "kind": "APIVersions",
            "versions": ["v1"],
            "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": ""}],
        }),
        "application/json",
    )
}

async fn groups(State(st): State<AppState>, headers: HeaderMap) -> Response {
    if let Some(v) = aggregated(&headers) {
        return aggregated_list(&st, v, false);
    }
    let groups: Vec<Value> = st.registry.groups().into_iter().filter(|(g, _)| !g.is_empty()).map(|(g, vs)| group_json(&g, &vs)).collect();
    json_response(json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups}), "application/json")
}

fn group_json(group: &str, versions: &[String]) -> Value {
    let vs: Vec<Value> = versions.iter().map(|v| json!({"groupVersion": format!("{group}/{v}"), "version": v})).collect();
    json!({"name": group, "versions": vs, "preferredVersion": vs[0]})
}

async fn one_group(State(st): State<AppState>, Path(group): Path<String>) -> ApiResult<Response> {
    let (g, vs) = st.registry.groups().into_iter().find(|(g, _)| *g == group && !g.is_empty()).ok_or(ApiError::NoRoute)?;
    let mut body = group_json(&g, &vs);
    body["kind"] = json!("APIGroup");
    body["apiVersion"] = json!("v1");
    Ok(json_response(body, "application/json"))
}

async fn core_v1(State(st): State<AppState>, headers: HeaderMap) -> ApiResult<Response> {
    resource_list(&st, "", "v1", &headers)
}

async fn group_version(State(st): State<AppState>, Path((group, version)): Path<(String, String)>, headers: HeaderMap) -> ApiResult<Response> {
    resource_list(&st, &group, &version, &headers)
}

/// `APIResourceList` of one group-version, subresources included (`pods/status`).
pub fn resource_list(st: &AppState, group: &str, version: &str, headers: &HeaderMap) -> ApiResult<Response> {
    let stores = st.registry.resources(group, version);
    if stores.is_empty() {
        return Err(ApiError::NoRoute);
    }
    negotiate::output(headers)?;
    let mut resources = Vec::new();
    for s in &stores {
        let i = s.info();
        resources.push(json!({
            "name": i.plural,
            "singularName": i.singular,
            "namespaced": i.namespaced,
            "kind": i.kind,
            "verbs": s.kind.strategy.verbs(),
            "shortNames": i.short_names,
            "categories": i.categories,
        }));
        for (sub, verbs) in subresources(s) {
            let mut r = json!({
                "name": format!("{}/{sub}", i.plural),
                "singularName": "",
                "namespaced": i.namespaced,
                "kind": i.kind,
                "verbs": verbs,
            });
            if let Some((group, version, kind)) = subresource_kind(&sub) {
                r["group"] = json!(group);
                r["version"] = json!(version);
                r["kind"] = json!(kind);
            }
            resources.push(r);
        }
    }
    let gv = if group.is_empty() { version.to_string() } else { format!("{group}/{version}") };
    Ok(json_response(
        json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": resources}),
        "application/json",
    ))
}

/// Subresources answering with another kind than their resource's (group, version, kind),
/// as upstream lists them (kubectl drain finds the Eviction version this way).
fn subresource_kind(sub: &str) -> Option<(&'static str, &'static str, &'static str)> {
    match sub {
        "eviction" => Some(("policy", "v1", "Eviction")),
        _ => None,
    }
}

/// Served subresources and their verbs.
fn subresources(s: &GenericStore) -> Vec<(String, Vec<&'static str>)> {
    let mut subs: Vec<(String, Vec<&'static str>)> =
        s.info()
            .subresources
            .iter()
            .map(|sub| {
                let verbs = match sub.as_str() {
                    "binding" | "token" | "eviction" => vec!["create"],
                    "log" => vec!["get"],
                    "exec" | "attach" | "portforward" => vec!["create", "get"],
                    _ => vec!["get", "patch", "update"],
                };
                (sub.clone(), verbs)
            })
            .collect();
    if s.info().plural == "namespaces" && s.info().group.is_empty() {
        subs.push(("finalize".into(), vec!["update"]));
    }
    subs
}

/// `APIGroupDiscoveryList` for the core group (`/api`) or the named groups (`/apis`).
fn aggregated_list(st: &AppState, version: &str, core: bool) -> Response {
    let items: Vec<Value> = st
        .registry
        .groups()
        .into_iter()
        .filter(|(g, _)| g.is_empty() == core)
        .map(|(g, versions)| {
            let vs: Vec<Value> = versions
                .iter()
                .map(|v| {
                    let resources: Vec<Value> = st.registry.resources(&g, v).iter().map(|s| aggregated_resource(s)).collect();
                    json!({"version": v, "resources": resources, "freshness": "Current"})
                })
                .collect();
            let mut metadata = json!({"creationTimestamp": null});
            if !g.is_empty() {
                metadata["name"] = json!(g);
            }
            json!({"metadata": metadata, "versions": vs})
        })
        .collect();
    let ctype = format!("application/json;g=apidiscovery.k8s.io;v={version};as=APIGroupDiscoveryList");
    json_response(
        json!({
            "kind": "APIGroupDiscoveryList",
            "apiVersion": format!("apidiscovery.k8s.io/{version}"),
            "metadata": {},
            "items": items,
        }),
        &ctype,
    )
}

fn aggregated_resource(s: &GenericStore) -> Value {
    let i = s.info();
    let kind = json!({"group": i.group, "version": i.version, "kind": i.kind});
    let subs: Vec<Value> = subresources(s)
        .into_iter()
        .map(|(sub, verbs)| {
            let kind = match subresource_kind(&sub) {
                Some((group, version, kind)) => json!({"group": group, "version": version, "kind": kind}),
                None => kind.clone(),
            };
            json!({"subresource": sub, "responseKind": kind, "verbs": verbs})
        })
        .collect();
    let mut r = json!({
        "resource": i.plural,
        "responseKind": kind,
        "scope": if i.namespaced { "Namespaced" } else { "Cluster" },
        "singularResource": i.singular,
        "verbs": s.kind.strategy.verbs(),
    });
    if !i.short_names.is_empty() {
        r["shortNames"] = json!(i.short_names);
    }
    if !i.categories.is_empty() {
        r["categories"] = json!(i.categories);
    }
    if !subs.is_empty() {
        r["subresources"] = json!(subs);
    }
    r
}
