//! `/openapi/v2` and `/openapi/v3`: the documents built (and cached) by [`crate::openapi`].
//!
//! v3: the index lists each group-version's document under a `?hash=` URL; a request with
//! the current hash is answered `Cache-Control: public, immutable`, one with another hash
//! is redirected to the current URL, one without a hash gets `no-cache` (as upstream).
//! v2: JSON, or the protobuf encoding client-go asks for
//! (`application/com.github.proto-openapi.spec.v2@v1.0+protobuf`). Both answer `ETag` and
//! `304 Not Modified` to a matching `If-None-Match`.

use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use serde::Deserialize;
use serde_json::{json, Map};

use crate::error::{ApiError, ApiResult};
use crate::openapi::{self, gv_path, Doc};
use crate::AppState;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/openapi/v2", get(v2))
        .route("/openapi/v3", get(index))
        .route("/openapi/v3/{*gv}", get(group_version))
}

const V2_PROTO: &str = "application/com.github.proto-openapi.spec.v2@v1.0+protobuf";
const V2_PROTO_OLD: &str = "application/com.github.proto-openapi.spec.v2.v1.0+protobuf";
const JSON: &str = "application/json";

/// Media types of an Accept header, without parameters; empty means anything.
fn accepted(headers: &HeaderMap) -> Vec<String> {
    headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|t| t.split(';').next().unwrap_or_default().trim().to_ascii_lowercase())
        .filter(|t| !t.is_empty())
        .collect()
}

fn accepts_json(types: &[String]) -> bool {
    types.is_empty() || types.iter().any(|t| matches!(t.as_str(), "application/json" | "application/*" | "*/*"))
}

fn not_modified(headers: &HeaderMap, etag: &str) -> bool {
    headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim().trim_start_matches("W/") == etag || t.trim() == "*"))
}

fn respond(headers: &HeaderMap, doc: &Doc, content_type: &str, cache_control: &str) -> Response {
    let etag = format!("\"{}\"", doc.hash);
    let mut h = HeaderMap::new();
    h.insert(header::ETAG, HeaderValue::from_str(&etag).expect("hex etag"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_str(cache_control).expect("ascii"));
    h.insert(header::VARY, HeaderValue::from_static("Accept"));
    if not_modified(headers, &etag) {
        return (StatusCode::NOT_MODIFIED, h).into_response();
    }
    h.insert(header::CONTENT_TYPE, HeaderValue::from_str(content_type).expect("ascii"));
    (h, doc.bytes.clone()).into_response()
}

async fn v2(State(st): State<AppState>, headers: HeaderMap) -> ApiResult<Response> {
    let types = accepted(&headers);
    let proto = types.iter().any(|t| t == &V2_PROTO.to_ascii_lowercase() || t == &V2_PROTO_OLD.to_ascii_lowercase());
    if proto {
        let doc = openapi::v2(&st.registry, true);
        // Go's mime parser rejects the `@` of the requested type: answer with the other
        // spelling, as upstream does.
        return Ok(respond(&headers, &doc, V2_PROTO_OLD, "no-cache, private"));
    }
    if !accepts_json(&types) {
        return Err(ApiError::NotAcceptable(format!("only the following media types are accepted: {JSON}, {V2_PROTO}")));
    }
    let doc = openapi::v2(&st.registry, false);
    Ok(respond(&headers, &doc, JSON, "no-cache, private"))
}

async fn index(State(st): State<AppState>, headers: HeaderMap) -> ApiResult<Response> {
    if !accepts_json(&accepted(&headers)) {
        return Err(ApiError::NotAcceptable(format!("only the following media types are accepted: {JSON}")));
    }
    let mut paths = Map::new();
    for (group, versions) in st.registry.groups() {
        for v in versions {
            let p = gv_path(&group, &v);
            if let Some(doc) = openapi::v3(&st.registry, &group, &v) {
                paths.insert(p.clone(), json!({"serverRelativeURL": format!("/openapi/v3/{p}?hash={}", doc.hash)}));
            }
        }
    }
    let body = serde_json::to_vec(&json!({"paths": paths})).unwrap_or_default();
    Ok(([(header::CONTENT_TYPE, JSON), (header::CACHE_CONTROL, "no-cache, private")], body).into_response())
}

#[derive(Deserialize)]
struct HashQuery {
    hash: Option<String>,
}

async fn group_version(State(st): State<AppState>, Path(gv): Path<String>, Query(q): Query<HashQuery>, headers: HeaderMap) -> ApiResult<Response> {
    let (group, version) = match gv.split('/').collect::<Vec<_>>().as_slice() {
        ["api", v] => (String::new(), v.to_string()),
        ["apis", g, v] => (g.to_string(), v.to_string()),
        _ => return Err(ApiError::NoRoute),
    };
    let doc = openapi::v3(&st.registry, &group, &version).ok_or(ApiError::NoRoute)?;
    if !accepts_json(&accepted(&headers)) {
        return Err(ApiError::NotAcceptable(format!("only the following media types are accepted: {JSON}")));
    }
    match q.hash {
        Some(h) if h == doc.hash => Ok(respond(&headers, &doc, JSON, "public, immutable")),
        Some(_) => {
            let location = format!("/openapi/v3/{}?hash={}", gv_path(&group, &version), doc.hash);
            Ok((
                StatusCode::MOVED_PERMANENTLY,
                [(header::LOCATION, location), (header::CACHE_CONTROL, "no-cache, private".to_string())],
            )
                .into_response())
        }
        None => Ok(respond(&headers, &doc, JSON, "no-cache, private")),
    }
}
