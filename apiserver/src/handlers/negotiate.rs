//! Content negotiation: which media type a response uses (`Accept`), which a request body
//! may use (`Content-Type`), and 406/415 for the ones krust does not speak.

use axum::body::Bytes;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::Value;

use crate::error::{ApiError, ApiResult};
use crate::registry::nesting::explain_decode_error;

/// A response encoding.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Output {
    Json,
    Yaml,
    /// `application/json;as=Table;v=v1;g=meta.k8s.io`.
    Table,
    /// `application/json;as=PartialObjectMetadata[List];v=v1;g=meta.k8s.io`: metadata only,
    /// as upstream's metadata client (the garbage collector's and namespace controller's) asks.
    Metadata,
}

/// Picks the first acceptable encoding from `Accept`, in the client's order.
pub fn output(headers: &HeaderMap) -> ApiResult<Output> {
    let Some(accept) = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()) else {
        return Ok(Output::Json);
    };
    for item in accept.split(',') {
        let mut parts = item.split(';').map(str::trim);
        let media = parts.next().unwrap_or_default().to_ascii_lowercase();
        let params: Vec<(String, String)> = parts
            .filter_map(|p| p.split_once('='))
            .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
            .collect();
        let param = |k: &str| params.iter().find(|(pk, _)| pk == k).map(|(_, v)| v.as_str());
        match (media.as_str(), param("as")) {
            ("application/json", Some("Table")) if param("g") == Some("meta.k8s.io") && matches!(param("v"), Some("v1") | Some("v1beta1")) => {
                return Ok(Output::Table)
            }
            ("application/json", Some("PartialObjectMetadata" | "PartialObjectMetadataList"))
                if param("g") == Some("meta.k8s.io") && matches!(param("v"), Some("v1") | Some("v1beta1")) =>
            {
                return Ok(Output::Metadata)
            }
            // Other conversions are not served: try the next type.
            (_, Some(_)) => continue,
            ("application/json" | "application/*" | "*/*" | "application/json-seq", None) => return Ok(Output::Json),
            ("application/yaml", None) => return Ok(Output::Yaml),
            _ => continue,
        }
    }
    Err(ApiError::NotAcceptable(
        "only the following media types are accepted: application/json, application/yaml, application/json;as=Table;v=v1;g=meta.k8s.io, application/json;as=PartialObjectMetadata;v=v1;g=meta.k8s.io"
            .into(),
    ))
}

/// An object as `PartialObjectMetadata`: its metadata only.
pub fn partial_metadata(obj: &Value) -> Value {
    serde_json::json!({"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": obj["metadata"].clone()})
}

/// Renders a body in the chosen encoding.
pub fn encode(out: Output, code: StatusCode, body: &Value) -> ApiResult<Response> {
    let (bytes, ctype) = match out {
        Output::Yaml => (serde_yaml::to_string(body).map_err(ApiError::internal)?.into_bytes(), "application/yaml"),
        _ => (serde_json::to_vec(body).map_err(ApiError::internal)?, "application/json"),
    };
    Ok((code, [(header::CONTENT_TYPE, ctype)], bytes).into_response())
}

fn content_type(headers: &HeaderMap) -> String {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.split(';').next().unwrap_or_default().trim().to_ascii_lowercase())
        .unwrap_or_default()
}

/// Whether the body is JSON (the only format duplicate keys are checked in).
pub fn is_json(headers: &HeaderMap) -> bool {
    matches!(content_type(headers).as_str(), "" | "application/json")
}

/// POST and PUT bodies must be JSON, YAML or Kubernetes protobuf (decoded to JSON).
pub fn check_write_content_type(headers: &HeaderMap) -> ApiResult<()> {
    match content_type(headers).as_str() {
        "" | "application/json" | "application/yaml" | "*/*" | crate::protobuf::MEDIA_TYPE => Ok(()),
        other => Err(ApiError::UnsupportedMediaType(format!(
            "the body of the request was in an unknown format - accepted media types include: application/json, application/yaml, application/vnd.kubernetes.protobuf (got {other})"
        ))),
    }
}

/// Parses a JSON, YAML or Kubernetes protobuf body; malformed input is 400.
pub fn parse_body(headers: &HeaderMap, body: &Bytes) -> ApiResult<Value> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::bad_request("the request body is empty"));
    }
    let parsed = match content_type(headers).as_str() {
        "application/yaml" => serde_yaml::from_slice::<Value>(body).map_err(explain_decode_error),
        crate::protobuf::MEDIA_TYPE => crate::protobuf::decode(body),
        _ => serde_json::from_slice::<Value>(body).map_err(explain_decode_error),
    };
    parsed.map_err(|e| ApiError::bad_request(format!("the request body could not be decoded: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn accept(v: &str) -> ApiResult<Output> {
        let mut h = HeaderMap::new();
        h.insert(header::ACCEPT, v.parse().unwrap());
        output(&h)
    }

    #[test]
    fn kubectl_table_accept() {
        let v = "application/json;as=Table;v=v1;g=meta.k8s.io,application/json;as=Table;v=v1beta1;g=meta.k8s.io,application/json";
        assert_eq!(accept(v).unwrap(), Output::Table);
        assert_eq!(accept("application/json").unwrap(), Output::Json);
        assert_eq!(accept("application/vnd.kubernetes.protobuf, */*").unwrap(), Output::Json);
        assert!(accept("application/vnd.kubernetes.protobuf").is_err());
        assert_eq!(accept("application/json;as=PartialObjectMetadataList;v=v1;g=meta.k8s.io").unwrap(), Output::Metadata);
        assert!(accept("application/json;as=PartialObjectMetadata;v=v9;g=meta.k8s.io").is_err());
    }
}
