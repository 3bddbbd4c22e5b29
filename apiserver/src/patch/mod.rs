//! PATCH bodies: JSON patch (RFC 6902), JSON merge patch (RFC 7386) and strategic merge
//! patch (upstream's, with the built-in kinds' merge keys).

pub mod strategic;

use axum::body::Bytes;
use axum::http::{header, HeaderMap};
use serde_json::Value;

use crate::error::{ApiError, ApiResult};
use crate::registry::nesting::explain_decode_error;
use crate::validation::FieldError;

/// The patch formats krust applies.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PatchKind {
    Json,
    Merge,
    Strategic,
    /// Server-side apply (`application/apply-patch+yaml`): handled by the store, not here.
    Apply,
}

impl PatchKind {
    /// From `Content-Type`; unknown types (and server-side apply, not served yet) are 415.
    pub fn from_headers(headers: &HeaderMap) -> ApiResult<Self> {
        let ctype = headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(|v| v.split(';').next().unwrap_or_default().trim().to_ascii_lowercase())
            .unwrap_or_default();
        match ctype.as_str() {
            "application/json-patch+json" => Ok(PatchKind::Json),
            "application/merge-patch+json" => Ok(PatchKind::Merge),
            "application/strategic-merge-patch+json" => Ok(PatchKind::Strategic),
            "application/apply-patch+yaml" | "application/apply-patch+json" => Ok(PatchKind::Apply),
            other => Err(ApiError::UnsupportedMediaType(format!(
                "the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml, application/strategic-merge-patch+json (got {other:?})"
            ))),
        }
    }
}

/// A parsed patch document.
#[derive(Clone, Debug)]
pub enum PatchDoc {
    Json(json_patch::Patch),
    Object(Value),
}

/// Parses a patch body: malformed JSON is 400.
pub fn parse(kind: PatchKind, body: &Bytes) -> ApiResult<PatchDoc> {
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("error decoding patch: {}", explain_decode_error(e))))?;
    match kind {
        PatchKind::Json => serde_json::from_value(value)
            .map(PatchDoc::Json)
            .map_err(|e| ApiError::bad_request(format!("error decoding JSON patch: {e}"))),
        _ if !value.is_object() => Err(ApiError::bad_request("a merge patch must be a JSON object")),
        _ => Ok(PatchDoc::Object(value)),
    }
}

/// Parses an apply configuration: YAML (JSON is YAML too); malformed input is 400.
pub fn parse_apply(body: &Bytes) -> ApiResult<Value> {
    let v: Value =
        serde_yaml::from_slice(body).map_err(|e| ApiError::bad_request(format!("error decoding YAML: {}", explain_decode_error(e))))?;
    if !v.is_object() {
        return Err(ApiError::bad_request("an apply configuration must be an object"));
    }
    Ok(v)
}

/// Applies a patch to the current object; a patch that cannot apply is 422, as upstream.
pub fn apply(kind: PatchKind, current: &Value, doc: &PatchDoc) -> ApiResult<Value> {
    let invalid = |msg: String| ApiError::Invalid {
        group: String::new(),
        kind: String::new(),
        name: String::new(),
        causes: vec![FieldError::invalid("patch", "", msg)],
    };
    match (kind, doc) {
        (PatchKind::Json, PatchDoc::Json(p)) => {
            let mut out = current.clone();
            json_patch::patch(&mut out, p).map_err(|e| invalid(e.to_string()))?;
            Ok(out)
        }
        (PatchKind::Merge, PatchDoc::Object(p)) => {
            let mut out = current.clone();
            json_patch::merge(&mut out, p);
            Ok(out)
        }
        (PatchKind::Strategic, PatchDoc::Object(p)) => {
            strategic::apply(current, p, &strategic::BuiltinMergeKeys).map_err(|e| invalid(e.to_string()))
        }
        _ => Err(ApiError::internal("patch document does not match its kind")),
    }
}
