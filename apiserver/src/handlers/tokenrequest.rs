//! `POST /api/v1/namespaces/NS/serviceaccounts/NAME/token` (the TokenRequest API): a signed
//! token for the service account, optionally bound to a pod, as the kubelet projects into
//! pods and `kubectl create token` prints.

use axum::extract::Request;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};

use crate::error::{ApiError, ApiResult};
use crate::tokens::Binding;
use crate::validation::FieldError;
use crate::AppState;

/// Upstream's default and minimum `expirationSeconds`.
const DEFAULT_EXPIRATION: i64 = 3600;
const MIN_EXPIRATION: i64 = 600;

fn invalid(name: &str, field: &str, value: &Value, message: &str) -> ApiError {
    ApiError::Invalid {
        group: "authentication.k8s.io".into(),
        kind: "TokenRequest".into(),
        name: name.into(),
        causes: vec![FieldError::invalid(field, value.clone(), message)],
    }
}

pub async fn serve(st: &AppState, namespace: &str, name: &str, req: Request) -> ApiResult<Response> {
    if req.method() != axum::http::Method::POST {
        return Err(ApiError::MethodNotAllowed(format!("the server does not allow this method on the requested resource ({})", req.method())));
    }
    let signer = st.tokens.clone().ok_or_else(|| ApiError::ServiceUnavailable("this server has no service account signing key".into()))?;
    let headers = req.headers().clone();
    let user = req.extensions().get::<crate::auth::UserInfo>().cloned();
    let body = axum::body::to_bytes(req.into_body(), super::resources::MAX_BODY_BYTES)
        .await
        .map_err(|e| ApiError::RequestEntityTooLarge(e.to_string()))?;
    let tr = super::negotiate::parse_body(&headers, &body)?;
    if let Some(node) = user.as_ref().and_then(crate::auth::node::node_name) {
        // NodeRestriction: a node's tokens are bound to a pod scheduled on it.
        let pod_name = tr["spec"]["boundObjectRef"]["name"].as_str().unwrap_or_default();
        let pods = st.registry.find("", "v1", "pods").ok_or(ApiError::NoRoute)?;
        let pod = if pod_name.is_empty() { None } else { pods.get(Some(namespace), pod_name).await.ok() };
        crate::auth::noderestriction::admit_token_request(node, &tr["spec"], pod.as_ref())
            .map_err(|why| ApiError::Forbidden(format!("serviceaccounts \"{name}\" is forbidden: {why}")))?;
    }
    let sas = st.registry.find("", "v1", "serviceaccounts").ok_or(ApiError::NoRoute)?;
    let sa = sas.get(Some(namespace), name).await?;
    let spec = &tr["spec"];
    let seconds = spec["expirationSeconds"].as_i64().unwrap_or(DEFAULT_EXPIRATION);
    if seconds < MIN_EXPIRATION {
        return Err(invalid(name, "spec.expirationSeconds", &json!(seconds), "may not specify a duration less than 10 minutes"));
    }
    let audiences: Vec<String> = spec["audiences"].as_array().into_iter().flatten().filter_map(|a| a.as_str().map(String::from)).collect();
    let mut binding = Binding {
        namespace: namespace.into(),
        service_account: name.into(),
        service_account_uid: sa["metadata"]["uid"].as_str().unwrap_or_default().into(),
        pod: None,
    };
    let bound = &spec["boundObjectRef"];
    if bound.is_object() {
        let kind = bound["kind"].as_str().unwrap_or_default();
        if kind != "Pod" {
            return Err(invalid(name, "spec.boundObjectRef.kind", &bound["kind"], "must be Pod"));
        }
        let pods = st.registry.find("", "v1", "pods").ok_or(ApiError::NoRoute)?;
        let pod_name = bound["name"].as_str().unwrap_or_default();
        let pod = pods.get(Some(namespace), pod_name).await?;
        let uid = pod["metadata"]["uid"].as_str().unwrap_or_default().to_string();
        if bound["uid"].as_str().is_some_and(|u| !u.is_empty() && u != uid) {
            return Err(ApiError::Conflict {
                group: String::new(),
                resource: "pods".into(),
                name: pod_name.into(),
                message: format!("the UID in the bound object reference ({}) does not match the UID in record ({uid}). The object might have been deleted and then recreated", bound["uid"].as_str().unwrap_or_default()),
            });
        }
        binding.pod = Some((pod_name.into(), uid));
    }
    let now = chrono::Utc::now();
    let token = signer.issue(&binding, &audiences, now.timestamp(), seconds).map_err(ApiError::internal)?;
    let expires = (now + chrono::Duration::seconds(seconds)).format("%Y-%m-%dT%H:%M:%SZ").to_string();
    let mut out_spec = spec.clone();
    out_spec["expirationSeconds"] = json!(seconds);
    if audiences.is_empty() {
        out_spec["audiences"] = json!([crate::tokens::ISSUER]);
    }
    let out = json!({
        "kind": "TokenRequest", "apiVersion": "authentication.k8s.io/v1",
        "metadata": {"name": name, "namespace": namespace, "creationTimestamp": now.format("%Y-%m-%dT%H:%M:%SZ").to_string()},
        "spec": out_spec,
        "status": {"token": token, "expirationTimestamp": expires},
    });
    Ok((StatusCode::CREATED, axum::Json(out)).into_response())
}
