//! The review kinds: authorization.k8s.io/v1 SubjectAccessReview, LocalSubjectAccessReview,
//! SelfSubjectAccessReview, SelfSubjectRulesReview and authentication.k8s.io/v1 TokenReview,
//! SelfSubjectReview. They are virtual: a create answers the question in the body's `status`
//! and nothing is stored (`Strategy::create_virtual`); `create` is their only verb.
//!
//! Authorization: krust has no authorizer yet (no RBAC): every authenticated request is
//! allowed. The reviews answer accordingly: a subject is allowed everything when its groups
//! include `system:authenticated` (which authentication adds to every identity it accepts)
//! or `system:masters`, and nothing otherwise (a SubjectAccessReview for a bare user name
//! describes no authenticated identity). Self reviews always concern the caller, who is
//! authenticated, so they are allowed; SelfSubjectRulesReview returns one rule granting
//! everything. TokenReview asks the service account token verifier (`tokens.rs`): tokens this
//! server signed authenticate; others (and any without a verifier) do not.

use serde_json::{json, Map, Value};

use super::common::s;
use crate::error::{ApiError, ApiResult};
use crate::meta;
use crate::registry::{ReqCtx, Strategy};
use crate::validation::{FieldError, FieldErrors};

/// The reason every allowed review carries.
pub const ALLOW_REASON: &str = "krust: no authorizer configured, everything allowed";
/// The reason a review of an unauthenticated subject carries.
pub const DENY_REASON: &str =
    "krust: no authorizer configured, everything is allowed to authenticated users only (group system:authenticated)";
const CREATE_ONLY: &[&str] = &["create"];

/// Which review a strategy answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Review {
    SubjectAccess,
    LocalSubjectAccess,
    SelfSubjectAccess,
    SelfSubjectRules,
    Token,
    SelfSubject,
}

pub struct ReviewStrategy(pub Review);

impl Review {
    fn group(self) -> &'static str {
        match self {
            Review::Token | Review::SelfSubject => "authentication.k8s.io",
            _ => "authorization.k8s.io",
        }
    }
    fn kind(self) -> &'static str {
        match self {
            Review::SubjectAccess => "SubjectAccessReview",
            Review::LocalSubjectAccess => "LocalSubjectAccessReview",
            Review::SelfSubjectAccess => "SelfSubjectAccessReview",
            Review::SelfSubjectRules => "SelfSubjectRulesReview",
            Review::Token => "TokenReview",
            Review::SelfSubject => "SelfSubjectReview",
        }
    }
}

impl Strategy for ReviewStrategy {
    fn validate(&self, _ctx: &ReqCtx, _obj: &Value) -> FieldErrors {
        Vec::new()
    }

    fn verbs(&self) -> &'static [&'static str] {
        CREATE_ONLY
    }

    fn create_virtual(&self, ctx: &ReqCtx, obj: &Value) -> Option<ApiResult<Value>> {
        Some(answer(self.0, ctx, obj.clone()))
    }
}

/// Whether krust allows a subject with these groups (see the module comment).
pub fn allowed(groups: &[String]) -> bool {
    groups.iter().any(|g| g == "system:authenticated" || g == "system:masters")
}

fn decision(allowed: bool) -> Value {
    if allowed {
        json!({"allowed": true, "reason": ALLOW_REASON})
    } else {
        json!({"allowed": false, "reason": DENY_REASON})
    }
}

fn invalid(review: Review, causes: FieldErrors) -> ApiError {
    ApiError::Invalid { group: review.group().into(), kind: review.kind().into(), name: String::new(), causes }
}

/// Upstream's `ValidateSubjectAccessReviewSpec` / `ValidateSelfSubjectAccessReviewSpec`.
fn validate_attributes(errs: &mut FieldErrors, spec: &Value) {
    let (res, non_res) = (spec.get("resourceAttributes").filter(|v| !v.is_null()), spec.get("nonResourceAttributes").filter(|v| !v.is_null()));
    match (res, non_res) {
        (None, None) => errs.push(FieldError::required(
            "spec.resourceAttributes",
            "exactly one of nonResourceAttributes or resourceAttributes must be specified",
        )),
        (Some(_), Some(n)) => {
            errs.push(FieldError::invalid("spec.nonResourceAttributes", n.clone(), "cannot be specified in combination with resourceAttributes"))
        }
        _ => {}
    }
}

/// The object's metadata without `namespace` (and the store's null fields): must be empty.
fn metadata_rest(obj: &Value, drop_namespace: bool) -> Map<String, Value> {
    let mut m = obj["metadata"].as_object().cloned().unwrap_or_default();
    m.retain(|_, v| !v.is_null());
    if drop_namespace {
        m.remove("namespace");
    }
    m
}

fn answer(review: Review, ctx: &ReqCtx, mut obj: Value) -> ApiResult<Value> {
    let mut errs = Vec::new();
    match review {
        Review::SubjectAccess | Review::LocalSubjectAccess => {
            let local = review == Review::LocalSubjectAccess;
            let spec = &obj["spec"];
            validate_attributes(&mut errs, spec);
            if s(&spec["user"]).is_empty() && spec["groups"].as_array().is_none_or(|g| g.is_empty()) {
                errs.push(FieldError::invalid("spec.user", s(&spec["user"]), "at least one of user or group must be specified"));
            }
            let rest = metadata_rest(&obj, local);
            if !rest.is_empty() {
                let detail = if local { "must be empty except for namespace" } else { "must be empty" };
                errs.push(FieldError::invalid("metadata", Value::Object(rest), detail));
            }
            if local {
                let ns = meta::namespace(&obj).unwrap_or_default();
                if let Some(attrs) = spec.get("resourceAttributes").filter(|a| !a.is_null()) {
                    if s(&attrs["namespace"]) != ns {
                        errs.push(FieldError::invalid("spec.resourceAttributes.namespace", s(&attrs["namespace"]), "must match metadata.namespace"));
                    }
                }
                if let Some(n) = spec.get("nonResourceAttributes").filter(|a| !a.is_null()) {
                    errs.push(FieldError::invalid("spec.nonResourceAttributes", n.clone(), "disallowed on this kind of request"));
                }
            }
            if !errs.is_empty() {
                return Err(invalid(review, errs));
            }
            let groups: Vec<String> =
                spec["groups"].as_array().map(|g| g.iter().map(|x| s(x).to_string()).collect()).unwrap_or_default();
            obj["status"] = decision(allowed(&groups));
            Ok(obj)
        }
        Review::SelfSubjectAccess => {
            validate_attributes(&mut errs, &obj["spec"]);
            let rest = metadata_rest(&obj, false);
            if !rest.is_empty() {
                errs.push(FieldError::invalid("metadata", Value::Object(rest), "must be empty"));
            }
            if !errs.is_empty() {
                return Err(invalid(review, errs));
            }
            obj["status"] = decision(allowed(&ctx.groups));
            Ok(obj)
        }
        Review::SelfSubjectRules => {
            if s(&obj["spec"]["namespace"]).is_empty() {
                return Err(ApiError::bad_request("no namespace on request"));
            }
            let (resource_rules, non_resource_rules, error) = if allowed(&ctx.groups) {
                (
                    json!([{"verbs": ["*"], "apiGroups": ["*"], "resources": ["*"]}]),
                    json!([{"verbs": ["*"], "nonResourceURLs": ["*"]}]),
                    None,
                )
            } else {
                (json!([]), json!([]), Some(DENY_REASON))
            };
            let mut status = json!({"resourceRules": resource_rules, "nonResourceRules": non_resource_rules, "incomplete": false});
            if let Some(e) = error {
                status["evaluationError"] = json!(e);
            }
            Ok(json!({"apiVersion": obj["apiVersion"], "kind": obj["kind"], "metadata": {}, "spec": {}, "status": status}))
        }
        Review::Token => {
            if s(&obj["spec"]["token"]).is_empty() {
                return Err(ApiError::bad_request("token is required for TokenReview in authentication"));
            }
            let audiences: Vec<String> = obj["spec"]["audiences"].as_array().into_iter().flatten().filter_map(|a| a.as_str().map(String::from)).collect();
            obj["status"] = match &ctx.tokens {
                Some(t) => t.review(s(&obj["spec"]["token"]), &audiences, chrono::Utc::now().timestamp()),
                None => json!({"authenticated": false, "user": {}, "error": "krust: no token authenticator is configured"}),
            };
            Ok(obj)
        }
        Review::SelfSubject => {
            let mut user = json!({"username": ctx.user});
            if !ctx.groups.is_empty() {
                user["groups"] = json!(ctx.groups);
            }
            Ok(json!({
                "apiVersion": obj["apiVersion"],
                "kind": obj["kind"],
                "metadata": {"creationTimestamp": meta::now()},
                "status": {"userInfo": user},
            }))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn admin() -> ReqCtx {
        ReqCtx { user: "admin".into(), groups: vec!["system:masters".into(), "system:authenticated".into()], ..Default::default() }
    }

    #[test]
    fn subject_access_reviews() {
        let s = ReviewStrategy(Review::SubjectAccess);
        let sar = json!({"apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview", "metadata": {},
            "spec": {"user": "bob", "resourceAttributes": {"verb": "list", "resource": "pods"}}});
        let out = s.create_virtual(&admin(), &sar).unwrap().unwrap();
        assert_eq!(out["status"]["allowed"], false);
        let mut authed = sar.clone();
        authed["spec"]["groups"] = json!(["system:authenticated"]);
        let out = s.create_virtual(&admin(), &authed).unwrap().unwrap();
        assert_eq!(out["status"], json!({"allowed": true, "reason": ALLOW_REASON}));
        let mut bad = sar.clone();
        bad["spec"] = json!({"user": ""});
        let err = s.create_virtual(&admin(), &bad).unwrap().unwrap_err().to_string();
        assert!(err.contains("exactly one of nonResourceAttributes or resourceAttributes must be specified"), "{err}");
        assert!(err.contains("at least one of user or group must be specified"), "{err}");
    }

    #[test]
    fn self_reviews() {
        let ssar = json!({"metadata": {}, "spec": {"nonResourceAttributes": {"path": "/", "verb": "get"}}});
        let out = ReviewStrategy(Review::SelfSubjectAccess).create_virtual(&admin(), &ssar).unwrap().unwrap();
        assert_eq!(out["status"]["allowed"], true);
        let ssr = json!({"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview", "metadata": {}});
        let out = ReviewStrategy(Review::SelfSubject).create_virtual(&admin(), &ssr).unwrap().unwrap();
        assert_eq!(out["status"]["userInfo"]["username"], "admin");
        let tr = json!({"spec": {"token": "abc"}});
        let out = ReviewStrategy(Review::Token).create_virtual(&admin(), &tr).unwrap().unwrap();
        assert_eq!(out["status"]["authenticated"], false);
        let rules = json!({"spec": {"namespace": "default"}});
        let out = ReviewStrategy(Review::SelfSubjectRules).create_virtual(&admin(), &rules).unwrap().unwrap();
        assert_eq!(out["status"]["resourceRules"][0]["verbs"], json!(["*"]));
    }
}
