//! Who is calling. The TLS layer (in the `krust` binary) verifies client certificates and
//! attaches a [`UserInfo`] to each request as an extension; this module turns a missing
//! identity into 401, except for the health and version endpoints anyone may read.

use axum::extract::Request;
use axum::middleware::Next;
use axum::response::Response;

use crate::error::ApiError;

/// An authenticated caller, from an x509 client certificate (CN = user, O = groups).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UserInfo {
    pub name: String,
    pub groups: Vec<String>,
}

impl UserInfo {
    /// The identity of a verified client certificate's subject, as upstream's x509
    /// authenticator: CN is the user, each O a group, plus `system:authenticated`.
    pub fn from_subject(common_name: &str, organizations: &[String]) -> Self {
        let mut groups = organizations.to_vec();
        groups.push("system:authenticated".to_string());
        UserInfo { name: common_name.to_string(), groups }
    }
}

/// Paths served without authentication, as upstream's `system:public-info-viewer` role allows.
pub fn is_public_path(path: &str) -> bool {
    matches!(path, "/healthz" | "/livez" | "/readyz" | "/version")
        || path.starts_with("/healthz/")
        || path.starts_with("/livez/")
        || path.starts_with("/readyz/")
}

/// Rejects requests without an identity with a 401 Status.
pub async fn require_user(req: Request, next: Next) -> Result<Response, ApiError> {
    if req.extensions().get::<UserInfo>().is_none() && !is_public_path(req.uri().path()) {
        return Err(ApiError::Unauthorized);
    }
    Ok(next.run(req).await)
}

pub mod bootstrap;
