//! `ApiError`: every failure the API returns, rendered as a Kubernetes `Status` object.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};

use crate::validation::FieldError;

/// An API failure. Each variant maps to one upstream `StatusReason` and HTTP code.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    BadRequest(String),
    #[error("Unauthorized")]
    Unauthorized,
    #[error("{0}")]
    Forbidden(String),
    /// Upstream's `NewForbidden(groupResource, name, err)`: an authorizer's or escalation
    /// check's refusal, with the resource in its details.
    #[error("{}", forbidden_text(group, resource, name, message))]
    ForbiddenResource { group: String, resource: String, name: String, message: String },
    #[error("{kind} \"{name}\" not found")]
    NotFound { group: String, kind: String, name: String },
    /// A path or resource the server does not serve.
    #[error("the server could not find the requested resource")]
    NoRoute,
    #[error("{0}")]
    MethodNotAllowed(String),
    #[error("{0}")]
    NotAcceptable(String),
    #[error("{kind} \"{name}\" already exists")]
    AlreadyExists { group: String, kind: String, name: String },
    /// Optimistic-lock or precondition failure.
    #[error("Operation cannot be fulfilled on {resource} \"{name}\": {message}")]
    Conflict { group: String, resource: String, name: String, message: String },
    /// Server-side apply conflicts: `causes` are (field, message) pairs.
    #[error("{message}")]
    ApplyConflict { message: String, causes: Vec<(String, String)> },
    #[error("{0}")]
    Gone(String),
    #[error("{0}")]
    Expired(String),
    /// 410 Expired for a compacted continue token, carrying in `metadata.continue` a token
    /// that continues the list from the same key at the latest revision (upstream's
    /// `inconsistentContinue`).
    #[error("{message}")]
    ExpiredContinue { message: String, token: String },
    #[error("{0}")]
    RequestEntityTooLarge(String),
    #[error("{0}")]
    UnsupportedMediaType(String),
    #[error("{kind} \"{name}\" is invalid: {}", join_causes(causes))]
    Invalid { group: String, kind: String, name: String, causes: Vec<FieldError> },
    #[error("{0}")]
    Internal(String),
    #[error("{0}")]
    Timeout(String),
    /// A backend (a node's kubelet) cannot be reached.
    #[error("{0}")]
    ServiceUnavailable(String),
    /// A refusal with its own code and reason (admission: a ValidatingAdmissionPolicy's
    /// `reason`, 422 Invalid by default), without details.
    #[error("{message}")]
    Refused { code: u16, reason: &'static str, message: String },
    /// 429 (upstream's `NewTooManyRequests` with retry-after 0): a refused eviction, with
    /// (type, message) causes such as `DisruptionBudget`.
    #[error("{message}")]
    TooManyRequests { message: String, causes: Vec<(String, String)> },
}

/// Upstream's optimistic-lock message.
pub const OPTIMISTIC_LOCK_MSG: &str = "the object has been modified; please apply your changes to the latest version and try again";

fn forbidden_text(group: &str, resource: &str, name: &str, message: &str) -> String {
    let gr = if group.is_empty() { resource.to_string() } else { format!("{resource}.{group}") };
    match (resource.is_empty(), name.is_empty()) {
        (true, _) => format!("forbidden: {message}"),
        (false, true) => format!("{gr} is forbidden: {message}"),
        (false, false) => format!("{gr} {name:?} is forbidden: {message}"),
    }
}

fn join_causes(causes: &[FieldError]) -> String {
    match causes {
        [one] => one.to_string(),
        many => format!("[{}]", many.iter().map(|c| c.to_string()).collect::<Vec<_>>().join(", ")),
    }
}

impl ApiError {
    pub fn bad_request(msg: impl Into<String>) -> Self {
        ApiError::BadRequest(msg.into())
    }
    pub fn internal(msg: impl std::fmt::Display) -> Self {
        ApiError::Internal(msg.to_string())
    }

    pub fn code(&self) -> u16 {
        use ApiError::*;
        match self {
            BadRequest(_) => 400,
            Unauthorized => 401,
            Forbidden(_) | ForbiddenResource { .. } => 403,
            NotFound { .. } | NoRoute => 404,
            MethodNotAllowed(_) => 405,
            NotAcceptable(_) => 406,
            AlreadyExists { .. } | Conflict { .. } | ApplyConflict { .. } => 409,
            Gone(_) | Expired(_) | ExpiredContinue { .. } => 410,
            RequestEntityTooLarge(_) => 413,
            UnsupportedMediaType(_) => 415,
            Invalid { .. } => 422,
            Internal(_) => 500,
            Timeout(_) => 504,
            ServiceUnavailable(_) => 503,
            Refused { code, .. } => *code,
            TooManyRequests { .. } => 429,
        }
    }

    pub fn reason(&self) -> &'static str {
        use ApiError::*;
        match self {
            BadRequest(_) => "BadRequest",
            Unauthorized => "Unauthorized",
            Forbidden(_) | ForbiddenResource { .. } => "Forbidden",
            NotFound { .. } | NoRoute => "NotFound",
            MethodNotAllowed(_) => "MethodNotAllowed",
            NotAcceptable(_) => "NotAcceptable",
            AlreadyExists { .. } => "AlreadyExists",
            Conflict { .. } | ApplyConflict { .. } => "Conflict",
            Gone(_) => "Gone",
            Expired(_) | ExpiredContinue { .. } => "Expired",
            RequestEntityTooLarge(_) => "RequestEntityTooLarge",
            UnsupportedMediaType(_) => "UnsupportedMediaType",
            Invalid { .. } => "Invalid",
            Internal(_) => "InternalError",
            Timeout(_) => "Timeout",
            ServiceUnavailable(_) => "ServiceUnavailable",
            Refused { reason, .. } => reason,
            TooManyRequests { .. } => "TooManyRequests",
        }
    }

    /// The `Status` object, as upstream's `metav1.Status`.
    pub fn to_status(&self) -> Value {
        use ApiError::*;
        let details = match self {
            NotFound { group, kind, name } | AlreadyExists { group, kind, name } => {
                Some(details(group, kind, name, None))
            }
            Conflict { group, resource, name, .. } => Some(details(group, resource, name, None)),
            ForbiddenResource { group, resource, name, .. } => {
                let mut d = details(group, resource, name, None);
                if name.is_empty() {
                    d.as_object_mut().map(|m| m.remove("name"));
                }
                Some(d)
            }
            Invalid { group, kind, name, causes } => Some(details(group, kind, name, Some(causes))),
            ApplyConflict { causes, .. } => Some(json!({
                "causes": causes.iter().map(|(field, message)| json!({"reason": "FieldManagerConflict", "message": message, "field": field})).collect::<Vec<_>>(),
            })),
            TooManyRequests { causes, .. } => Some(json!({
                "causes": causes.iter().map(|(reason, message)| json!({"reason": reason, "message": message})).collect::<Vec<_>>(),
            })),
            _ => None,
        };
        let mut status = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.to_string(),
            "reason": self.reason(),
            "code": self.code(),
        });
        if let Some(d) = details {
            status["details"] = d;
        }
        if let ExpiredContinue { token, .. } = self {
            status["metadata"] = json!({"continue": token});
        }
        status
    }
}

fn details(group: &str, kind: &str, name: &str, causes: Option<&[FieldError]>) -> Value {
    let mut d = json!({ "name": name, "kind": kind });
    if !group.is_empty() {
        d["group"] = json!(group);
    }
    if let Some(causes) = causes {
        d["causes"] = causes
            .iter()
            .map(|c| json!({"reason": c.kind.reason(), "message": c.message(), "field": c.field}))
            .collect();
    }
    d
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if self.code() >= 500 {
            tracing::error!(error = %self, "request failed");
        }
        let code = StatusCode::from_u16(self.code()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let body = serde_json::to_vec(&self.to_status()).unwrap_or_default();
        (code, [(axum::http::header::CONTENT_TYPE, "application/json")], body).into_response()
    }
}

impl From<kine_sqlite::StoreError> for ApiError {
    /// Storage errors not interpreted by a verb (see `registry::store`) are internal, except
    /// compaction, which every verb reports as 410 Expired.
    fn from(e: kine_sqlite::StoreError) -> Self {
        match e {
            kine_sqlite::StoreError::Compacted { .. } => ApiError::Expired(format!("too old resource version: {e}")),
            other => ApiError::Internal(format!("storage error: {other}")),
        }
    }
}

pub type ApiResult<T> = Result<T, ApiError>;
