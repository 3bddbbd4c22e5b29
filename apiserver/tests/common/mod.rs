//! What the router tests share: requests as the admin user, sent with `oneshot` (no socket).

#![allow(dead_code)] // each test file uses a different part

use apiserver::auth::UserInfo;
use axum::body::Body;
use axum::http::{header, HeaderMap, Request, StatusCode};
use serde_json::Value;
use tower::ServiceExt;

/// A request as `system:admin` (group `system:masters`), as the TLS layer would attach it.
pub fn admin_request(method: &str, path: &str, content_type: &str, body: impl Into<Body>) -> Request<Body> {
    let mut req = Request::builder().method(method).uri(path).header(header::CONTENT_TYPE, content_type).body(body.into()).unwrap();
    req.extensions_mut().insert(UserInfo::from_subject("system:admin", &["system:masters".into()]));
    req
}

/// Sends a request; the body parsed as JSON (or kept as a string when it is not JSON).
pub async fn send(app: &axum::Router, req: Request<Body>) -> (StatusCode, HeaderMap, Value) {
    let resp = app.clone().oneshot(req).await.unwrap();
    let status = resp.status();
    let headers = resp.headers().clone();
    let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX).await.unwrap();
    let v = serde_json::from_slice(&bytes).unwrap_or(Value::String(String::from_utf8_lossy(&bytes).into()));
    (status, headers, v)
}

/// Sends `body` (if any) with `content_type` and returns status and parsed body.
pub async fn call_as(app: &axum::Router, method: &str, path: &str, content_type: &str, body: Option<Value>) -> (StatusCode, Value) {
    let body = body.map(|b| Body::from(b.to_string())).unwrap_or_default();
    let (s, _, v) = send(app, admin_request(method, path, content_type, body)).await;
    (s, v)
}

/// [`call_as`] with a JSON body.
pub async fn call(app: &axum::Router, method: &str, path: &str, body: Option<Value>) -> (StatusCode, Value) {
    call_as(app, method, path, "application/json", body).await
}
