//! The review kinds: authorization.k8s.io/v1 SubjectAccessReview, LocalSubjectAccessReview,
//! SelfSubjectAccessReview, SelfSubjectRulesReview and authentication.k8s.io/v1 TokenReview,
//! SelfSubjectReview. They are virtual: a create answers the question in the body's `status`
//! and nothing is stored (`Strategy::create_virtual`); `create` is their only verb.
//!
//! They answer truthfully, through the server's authorizer chain (`auth::authorizer`:
//! system:masters, the Node authorizer, RBAC) and its service account token authenticator
//! (`auth::serviceaccount`), as upstream's do. Without an authorizer (a store driven outside
//! a server) nothing is allowed.

use serde_json::{json, Map, Value};

use super::common::s;
use crate::auth::attributes::Attributes;
use crate::auth::rbac::PolicyRule;
use crate::auth::{serviceaccount, UserInfo};
use crate::error::{ApiError, ApiResult};
use crate::meta;
use crate::registry::{ReqCtx, Strategy};
use crate::validation::{FieldError, FieldErrors};

/// What a review answers when no authorizer is configured.
const NO_AUTHORIZER: &str = "krust: no authorizer configured";
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

/// A decision as a review's `status` (upstream leaves an empty reason out).
fn decision(ctx: &ReqCtx, attrs: &Attributes) -> Value {
    let Some(auth) = &ctx.auth else {
        return json!({"allowed": false, "evaluationError": NO_AUTHORIZER});
    };
    let d = auth.authorizer.decide(attrs);
    let mut status = json!({"allowed": d.allowed});
    if !d.reason.is_empty() {
        status["reason"] = json!(d.reason);
    }
    status
}

/// The attributes a review's spec asks about, for `user`.
fn spec_attributes(user: UserInfo, spec: &Value) -> Attributes {
    let res = &spec["resourceAttributes"];
    if res.is_object() {
        let mut a = Attributes::resource(&user, s(&res["verb"]), s(&res["group"]), s(&res["resource"]), s(&res["subresource"]), s(&res["namespace"]), s(&res["name"]));
        a.api_version = s(&res["version"]).to_string();
        a
    } else {
        let n = &spec["nonResourceAttributes"];
        Attributes { user, verb: s(&n["verb"]).to_string(), path: s(&n["path"]).to_string(), ..Default::default() }
    }
}

/// The subject a SubjectAccessReview names.
fn spec_user(spec: &Value) -> UserInfo {
    let strings = |v: &Value| v.as_array().map(|g| g.iter().map(|x| s(x).to_string()).collect::<Vec<_>>()).unwrap_or_default();
    let extra = spec["extra"].as_object().map(|m| m.iter().map(|(k, v)| (k.clone(), strings(v))).collect()).unwrap_or_default();
    UserInfo { name: s(&spec["user"]).to_string(), uid: s(&spec["uid"]).to_string(), groups: strings(&spec["groups"]), extra }
}

fn rule_values(rules: &[PolicyRule]) -> (Vec<Value>, Vec<Value>) {
    let (mut resource, mut non_resource) = (Vec::new(), Vec::new());
    for r in rules {
        if !r.resources.is_empty() || !r.api_groups.is_empty() {
            let mut v = json!({"verbs": r.verbs, "apiGroups": r.api_groups, "resources": r.resources});
            if !r.resource_names.is_empty() {
                v["resourceNames"] = json!(r.resource_names);
            }
            resource.push(v);
        }
        if !r.non_resource_urls.is_empty() {
            non_resource.push(json!({"verbs": r.verbs, "nonResourceURLs": r.non_resource_urls}));
        }
    }
    (resource, non_resource)
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
            obj["status"] = decision(ctx, &spec_attributes(spec_user(spec), spec));
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
            obj["status"] = decision(ctx, &spec_attributes(ctx.user_info(), &obj["spec"]));
            Ok(obj)
        }
        Review::SelfSubjectRules => {
            if s(&obj["spec"]["namespace"]).is_empty() {
                return Err(ApiError::bad_request("no namespace on request"));
            }
            let ns = s(&obj["spec"]["namespace"]);
            let user = ctx.user_info();
            let (rules, mut errors, mut incomplete) = match &ctx.auth {
                Some(auth) => {
                    let (rules, errors) = auth.authorizer.rules_for(&user, ns);
                    (rules, errors, false)
                }
                None => (Vec::new(), vec![NO_AUTHORIZER.to_string()], true),
            };
            if crate::auth::node::node_name(&user).is_some() {
                errors.push("node authorizer does not support user rule resolution".into());
                incomplete = true;
            }
            let (resource_rules, non_resource_rules) = rule_values(&rules);
            let error = (!errors.is_empty()).then(|| errors.join(", "));
            let mut status = json!({"resourceRules": resource_rules, "nonResourceRules": non_resource_rules, "incomplete": incomplete});
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
            obj["status"] = match (&ctx.tokens, &ctx.auth) {
                (Some(t), Some(auth)) => token_review(t, auth, s(&obj["spec"]["token"]), &audiences),
                _ => json!({"authenticated": false, "user": {}, "error": "krust: no token authenticator is configured"}),
            };
            Ok(obj)
        }
        Review::SelfSubject => {
            let user = ctx.user_info().to_review_json();
            Ok(json!({
                "apiVersion": obj["apiVersion"],
                "kind": obj["kind"],
                "metadata": {"creationTimestamp": meta::now()},
                "status": {"userInfo": user},
            }))
        }
    }
}

/// What a TokenReview answers: the identity of a valid token for one of the review's
/// audiences (the API's when it names none) whose bound objects still exist.
fn token_review(signer: &crate::tokens::ServiceAccountTokens, auth: &crate::auth::AuthContext, token: &str, audiences: &[String]) -> Value {
    let accepted = if audiences.is_empty() { &auth.api_audiences[..] } else { audiences };
    let checked = serviceaccount::claims(signer, token, accepted, chrono::Utc::now().timestamp())
        .and_then(|c| serviceaccount::check_bound_cached(&auth.registry, &c).map(|()| c));
    match checked {
        Ok(c) => json!({"authenticated": true, "user": c.user.to_review_json(), "audiences": c.audiences}),
        Err(e) => json!({"authenticated": false, "user": {}, "error": e}),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn admin() -> ReqCtx {
        ReqCtx { user: "admin".into(), groups: vec!["system:masters".into(), "system:authenticated".into()], ..Default::default() }
    }

    #[test]
    fn subject_access_reviews_validate() {
        let s = ReviewStrategy(Review::SubjectAccess);
        let sar = json!({"apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview", "metadata": {},
            "spec": {"user": "bob", "resourceAttributes": {"verb": "list", "resource": "pods"}}});
        // Without an authorizer nothing is allowed (servers always have one).
        let out = s.create_virtual(&admin(), &sar).unwrap().unwrap();
        assert_eq!(out["status"], json!({"allowed": false, "evaluationError": NO_AUTHORIZER}));
        let mut bad = sar.clone();
        bad["spec"] = json!({"user": ""});
        let err = s.create_virtual(&admin(), &bad).unwrap().unwrap_err().to_string();
        assert!(err.contains("exactly one of nonResourceAttributes or resourceAttributes must be specified"), "{err}");
        assert!(err.contains("at least one of user or group must be specified"), "{err}");
    }

    #[test]
    fn review_specs_become_attributes() {
        let spec = json!({"user": "bob", "uid": "u", "groups": ["g"], "extra": {"k": ["v"]},
            "resourceAttributes": {"verb": "get", "group": "apps", "version": "v1", "resource": "deployments", "subresource": "scale", "namespace": "ns", "name": "d"}});
        let a = spec_attributes(spec_user(&spec), &spec);
        assert_eq!((a.user.name.as_str(), a.user.uid.as_str(), a.user.extra["k"][0].as_str()), ("bob", "u", "v"));
        assert_eq!((a.verb.as_str(), a.api_group.as_str(), a.combined_resource().as_str(), a.namespace.as_str(), a.name.as_str()), ("get", "apps", "deployments/scale", "ns", "d"));
        assert!(a.resource_request);
        let spec = json!({"groups": ["g"], "nonResourceAttributes": {"verb": "get", "path": "/healthz"}});
        let a = spec_attributes(spec_user(&spec), &spec);
        assert!(!a.resource_request);
        assert_eq!(a.path, "/healthz");
    }

    #[test]
    fn self_reviews() {
        let ssr = json!({"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview", "metadata": {}});
        let out = ReviewStrategy(Review::SelfSubject).create_virtual(&admin(), &ssr).unwrap().unwrap();
        assert_eq!(out["status"]["userInfo"]["username"], "admin");
        let tr = json!({"spec": {"token": "abc"}});
        let out = ReviewStrategy(Review::Token).create_virtual(&admin(), &tr).unwrap().unwrap();
        assert_eq!(out["status"]["authenticated"], false);
        let (res, non_res) = rule_values(&[PolicyRule::from_value(&json!({"apiGroups": [""], "resources": ["pods"], "verbs": ["get"]})), PolicyRule::from_value(&json!({"nonResourceURLs": ["/api"], "verbs": ["get"]}))]);
        assert_eq!(res, [json!({"verbs": ["get"], "apiGroups": [""], "resources": ["pods"]})]);
        assert_eq!(non_res, [json!({"verbs": ["get"], "nonResourceURLs": ["/api"]})]);
    }
}
