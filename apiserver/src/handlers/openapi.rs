//! OpenAPI v3 documents, derived from the registry. For now they carry the operations
//! (paths, verbs, parameters and `x-kubernetes-group-version-kind`) but no schemas: enough
//! for kubectl to learn that the server validates fields itself (`fieldValidation`), so it
//! sends `fieldValidation=Strict` instead of validating client side. Schemas (for
//! `kubectl explain`) come with the API machinery work.

use axum::extract::{Path, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use serde_json::{json, Map, Value};

use crate::error::{ApiError, ApiResult};
use crate::registry::store::GenericStore;
use crate::AppState;

pub fn routes() -> Router<AppState> {
    Router::new().route("/openapi/v3", get(index)).route("/openapi/v3/{*gv}", get(group_version))
}

fn gv_path(group: &str, version: &str) -> String {
    if group.is_empty() {
        format!("api/{version}")
    } else {
        format!("apis/{group}/{version}")
    }
}

async fn index(State(st): State<AppState>) -> Response {
    let mut paths = Map::new();
    for (group, versions) in st.registry.groups() {
        for v in versions {
            let p = gv_path(&group, &v);
            // The hash lets clients cache a document; the server's version identifies it.
            let url = format!("/openapi/v3/{p}?hash={}", crate::handlers::health::GIT_VERSION.replace('+', "-"));
            paths.insert(p, json!({"serverRelativeURL": url}));
        }
    }
    json_doc(json!({"paths": paths}))
}

fn json_doc(v: Value) -> Response {
    ([(header::CONTENT_TYPE, "application/json")], serde_json::to_vec(&v).unwrap_or_default()).into_response()
}

async fn group_version(State(st): State<AppState>, Path(gv): Path<String>) -> ApiResult<Response> {
    let (group, version) = match gv.split('/').collect::<Vec<_>>().as_slice() {
        ["api", v] => (String::new(), v.to_string()),
        ["apis", g, v] => (g.to_string(), v.to_string()),
        _ => return Err(ApiError::NoRoute),
    };
    let stores = st.registry.resources(&group, &version);
    if stores.is_empty() {
        return Err(ApiError::NoRoute);
    }
    let mut paths = Map::new();
    for s in &stores {
        paths.extend(resource_paths(s));
    }
    Ok(json_doc(json!({
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes", "version": crate::handlers::health::GIT_VERSION},
        "paths": paths,
        "components": {"schemas": {}},
    })))
}

fn query_param(name: &str) -> Value {
    json!({"name": name, "in": "query", "schema": {"type": "string", "uniqueItems": true}})
}

/// The item and collection paths of one resource with their operations.
fn resource_paths(s: &GenericStore) -> Map<String, Value> {
    let i = s.info();
    let gvk = json!({"group": i.group, "version": i.version, "kind": i.kind});
    let base = format!("/{}", gv_path(&i.group, &i.version));
    let collection = if i.namespaced {
        format!("{base}/namespaces/{{namespace}}/{}", i.plural)
    } else {
        format!("{base}/{}", i.plural)
    };
    let op = |action: &str, params: Vec<Value>| {
        json!({
            "operationId": format!("{action}{}", i.kind),
            "x-kubernetes-action": action,
            "x-kubernetes-group-version-kind": gvk,
            "parameters": params,
            "responses": {"200": {"description": "OK"}},
        })
    };
    let write = || vec![query_param("dryRun"), query_param("fieldManager"), query_param("fieldValidation")];
    let mut out = Map::new();
    out.insert(
        collection.clone(),
        json!({
            "get": op("list", vec![query_param("labelSelector"), query_param("fieldSelector"), query_param("limit"), query_param("continue"), query_param("watch"), query_param("resourceVersion")]),
            "post": op("post", write()),
            "delete": op("deletecollection", vec![query_param("labelSelector"), query_param("fieldSelector")]),
        }),
    );
    out.insert(
        format!("{collection}/{{name}}"),
        json!({
            "get": op("get", vec![]),
            "put": op("put", write()),
            "patch": op("patch", {
                let mut p = write();
                p.push(query_param("force"));
                p
            }),
            "delete": op("delete", vec![query_param("gracePeriodSeconds"), query_param("propagationPolicy"), query_param("dryRun")]),
        }),
    );
    out
}
