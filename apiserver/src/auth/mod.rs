//! Who is calling, and whether they may. The TLS layer (in the `krust` binary) verifies
//! client certificates and attaches a [`UserInfo`] to the request; [`filter`] then, as
//! kube-apiserver's handler chain does:
//! 1. authenticates a bearer token (a service account token this server signed, for one of
//!    the API's audiences, whose service account and bound pod still exist), else 401;
//! 2. applies impersonation headers (`Impersonate-User`, ...), each authorized with the
//!    `impersonate` verb (`impersonation.rs`);
//! 3. authorizes the request's attributes (`attributes.rs`) with the authorizer chain
//!    (`authorizer.rs`: system:masters, the Node authorizer, RBAC), else 403 with upstream's
//!    message.
//!
//! Requests without any credential may only read the health and version endpoints.

pub mod attributes;
pub mod authorizer;
pub mod bootstrap;
pub mod escalation;
pub mod impersonation;
pub mod node;
pub mod noderestriction;
pub mod rbac;
pub mod serviceaccount;

use std::collections::BTreeMap;

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::Response;

use crate::conn::ConnectionAuth;
use crate::error::ApiError;
use crate::AppState;
use attributes::Attributes;

pub const AUTHENTICATED: &str = "system:authenticated";

/// What the access reviews and escalation checks need of authorization, carried in a
/// request's `ReqCtx`.
#[derive(Clone)]
pub struct AuthContext {
    pub authorizer: std::sync::Arc<authorizer::Authorizer>,
    pub registry: std::sync::Arc<crate::registry::Registry>,
    /// `--api-audiences`: what tokens presented to this API must be for.
    pub api_audiences: Vec<String>,
}

impl std::fmt::Debug for AuthContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthContext").field("api_audiences", &self.api_audiences).finish_non_exhaustive()
    }
}

/// An authenticated caller, as upstream's `user.Info`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct UserInfo {
    pub name: String,
    pub uid: String,
    pub groups: Vec<String>,
    pub extra: BTreeMap<String, Vec<String>>,
}

impl UserInfo {
    /// The identity of a verified client certificate's subject, as upstream's x509
    /// authenticator: CN is the user, each O a group, plus `system:authenticated`.
    pub fn from_subject(common_name: &str, organizations: &[String]) -> Self {
        let mut groups = organizations.to_vec();
        groups.push(AUTHENTICATED.to_string());
        UserInfo { name: common_name.to_string(), groups, ..Default::default() }
    }

    /// The `userInfo` of reviews (`username`, `uid`, `groups`, `extra`; empty ones left out).
    pub fn to_review_json(&self) -> serde_json::Value {
        let mut u = serde_json::json!({"username": self.name});
        if !self.uid.is_empty() {
            u["uid"] = self.uid.clone().into();
        }
        if !self.groups.is_empty() {
            u["groups"] = serde_json::json!(self.groups);
        }
        if !self.extra.is_empty() {
            u["extra"] = serde_json::json!(self.extra);
        }
        u
    }
}

/// Paths served without authentication, as upstream's `system:public-info-viewer` role allows.
pub fn is_public_path(path: &str) -> bool {
    matches!(path, "/healthz" | "/livez" | "/readyz" | "/version")
        || path.starts_with("/healthz/")
        || path.starts_with("/livez/")
        || path.starts_with("/readyz/")
}

fn bearer(req: &Request) -> Option<&str> {
    let v = req.headers().get(axum::http::header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = v.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim()).filter(|t| !t.is_empty())
}

/// Authentication, impersonation and authorization of every API request (see the module
/// comment); the request goes on carrying the effective [`UserInfo`].
pub async fn filter(State(st): State<AppState>, mut req: Request, next: Next) -> Result<Response, ApiError> {
    let from_certificate = req.extensions().get::<UserInfo>().cloned();
    let user = match (from_certificate, bearer(&req)) {
        (Some(user), _) => Some(user),
        (None, Some(token)) => Some(serviceaccount::authenticate(&st, token).await.ok_or(ApiError::Unauthorized)?),
        (None, None) => None,
    };
    let Some(user) = user else {
        if is_public_path(req.uri().path()) {
            return Ok(next.run(req).await);
        }
        return Err(ApiError::Unauthorized);
    };
    if let Some(conn) = req.extensions().get::<ConnectionAuth>() {
        conn.mark();
    }
    let user = impersonation::apply(&st.authorizer, user, req.headers_mut()).await?;
    let upgrade = req.headers().contains_key(axum::http::header::UPGRADE);
    let attrs = Attributes::from_request(user.clone(), req.method().as_str(), req.uri().path(), req.uri().query(), upgrade);
    let decision = st.authorizer.authorize(&attrs).await;
    if !decision.allowed {
        tracing::debug!(user = %user.name, verb = %attrs.verb, resource = %attrs.combined_resource(), path = %attrs.path, reason = %decision.reason, "forbidden");
        return Err(forbidden(&attrs, &decision.reason));
    }
    req.extensions_mut().insert(user);
    Ok(next.run(req).await)
}

/// Upstream's `responsewriters.Forbidden`: `secrets is forbidden: User "bob" cannot ...`,
/// with the authorizer's reason after a colon when it gave one.
pub fn forbidden(a: &Attributes, reason: &str) -> ApiError {
    let mut message = a.forbidden_message();
    if !reason.is_empty() {
        message = format!("{message}: {reason}");
    }
    let resource = if a.resource_request { a.resource.clone() } else { String::new() };
    ApiError::ForbiddenResource { group: a.api_group.clone(), resource, name: a.name.clone(), message }
}
