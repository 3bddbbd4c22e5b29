//! Service account issuer discovery (upstream's `ServiceAccountIssuerDiscovery`): the
//! OpenID Connect provider document at `/.well-known/openid-configuration` and the signing
//! key set at `/openid/v1/jwks`, so that other systems can verify this cluster's service
//! account tokens. RBAC grants them to `system:serviceaccounts`
//! (`system:service-account-issuer-discovery`).

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use serde_json::json;

use crate::error::ApiError;
use crate::AppState;

pub const CONFIGURATION_PATH: &str = "/.well-known/openid-configuration";
pub const JWKS_PATH: &str = "/openid/v1/jwks";

pub fn routes() -> Router<AppState> {
    Router::new().route(CONFIGURATION_PATH, get(configuration)).route(JWKS_PATH, get(jwks))
}

fn json_response(content_type: &'static str, body: serde_json::Value) -> Response {
    // Upstream lets clients cache these for an hour.
    ([(header::CONTENT_TYPE, content_type), (header::CACHE_CONTROL, "public, max-age=3600")], body.to_string()).into_response()
}

async fn configuration(State(st): State<AppState>) -> Result<Response, ApiError> {
    if st.tokens.is_none() {
        return Err(ApiError::NoRoute);
    }
    Ok(json_response(
        "application/json",
        json!({
            "issuer": crate::tokens::ISSUER,
            "jwks_uri": st.jwks_uri,
            "response_types_supported": ["id_token"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": ["ES256"],
        }),
    ))
}

async fn jwks(State(st): State<AppState>) -> Result<Response, ApiError> {
    let tokens = st.tokens.as_ref().ok_or(ApiError::NoRoute)?;
    Ok(json_response("application/jwk-set+json", json!({"keys": [tokens.public_jwk()]})))
}
