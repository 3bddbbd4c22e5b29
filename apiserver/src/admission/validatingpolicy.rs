//! ValidatingAdmissionPolicy (admissionregistration.k8s.io/v1): upstream's CEL admission
//! plugin. On every create and update, each ValidatingAdmissionPolicyBinding whose policy
//! matches the request (the policy's `matchConstraints`, the binding's `matchResources`, then
//! the policy's `matchConditions`) has the policy's `validations` evaluated, with `object`,
//! `oldObject`, `request`, `params` (the binding's `paramRef`), `namespaceObject` and
//! `variables`. A failed validation denies the request (`Deny`: 422 Invalid or the
//! validation's `reason`) or warns (`Warn`); `Audit` is not recorded. Errors follow the
//! policy's `failurePolicy` (default `Fail`).
//!
//! Policies and bindings are read through the admission [`Reader`]; compiled programs are
//! cached per policy, keyed by resourceVersion. `status.typeChecking` is not computed.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use serde_json::{json, Value};

use super::celexpr::{self, Activation, Compiled, POLICY_VARS};
use super::{Attributes, Operation, Plugin, Reader};
use crate::error::{ApiError, ApiResult};
use crate::selectors::labels;

const GROUP: &str = "admissionregistration.k8s.io";

/// The plugin, with its cache of compiled policies.
#[derive(Default)]
pub struct ValidatingPolicy {
    cache: Mutex<HashMap<String, (String, Arc<CompiledPolicy>)>>,
}

type Expr = Result<Compiled, String>;

struct CompiledValidation {
    source: String,
    expr: Expr,
    message: Option<String>,
    message_expr: Option<Expr>,
    reason: Option<String>,
}

/// One policy, compiled.
struct CompiledPolicy {
    name: String,
    spec: Value,
    fail: bool,
    match_conditions: Vec<(String, Expr)>,
    variables: Vec<(String, Expr)>,
    validations: Vec<CompiledValidation>,
}

impl CompiledPolicy {
    fn new(policy: &Value) -> Self {
        let spec = policy["spec"].clone();
        let list = |field: &str| spec[field].as_array().cloned().unwrap_or_default();
        let compile = |v: &Value| celexpr::compile(v.as_str().unwrap_or_default(), POLICY_VARS);
        CompiledPolicy {
            name: policy["metadata"]["name"].as_str().unwrap_or_default().to_string(),
            fail: spec["failurePolicy"].as_str() != Some("Ignore"),
            match_conditions: list("matchConditions")
                .iter()
                .map(|c| (c["name"].as_str().unwrap_or_default().to_string(), compile(&c["expression"])))
                .collect(),
            variables: list("variables")
                .iter()
                .map(|c| (c["name"].as_str().unwrap_or_default().to_string(), compile(&c["expression"])))
                .collect(),
            validations: list("validations")
                .iter()
                .map(|v| CompiledValidation {
                    source: v["expression"].as_str().unwrap_or_default().to_string(),
                    expr: compile(&v["expression"]),
                    message: v["message"].as_str().filter(|m| !m.is_empty()).map(str::to_string),
                    message_expr: v["messageExpression"].as_str().filter(|m| !m.is_empty()).map(|m| celexpr::compile(m, POLICY_VARS)),
                    reason: v["reason"].as_str().filter(|m| !m.is_empty()).map(str::to_string),
                })
                .collect(),
            spec,
        }
    }
}

/// What one validation decided.
enum Decision {
    Fail { message: String, reason: Option<String> },
    /// An evaluation error (failurePolicy decides).
    Error(String),
}

impl ValidatingPolicy {
    fn compiled(&self, policy: &Value) -> Arc<CompiledPolicy> {
        let name = policy["metadata"]["name"].as_str().unwrap_or_default().to_string();
        let rv = policy["metadata"]["resourceVersion"].as_str().unwrap_or_default().to_string();
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((cached_rv, p)) = cache.get(&name) {
            if *cached_rv == rv && !rv.is_empty() {
                return p.clone();
            }
        }
        let p = Arc::new(CompiledPolicy::new(policy));
        cache.insert(name, (rv, p.clone()));
        p
    }
}

fn op_name(op: Operation) -> &'static str {
    match op {
        Operation::Create => "CREATE",
        Operation::Update => "UPDATE",
    }
}

fn strs(v: &Value) -> Vec<&str> {
    v.as_array().map(|a| a.iter().filter_map(Value::as_str).collect()).unwrap_or_default()
}

fn has(list: &[&str], want: &str) -> bool {
    list.iter().any(|x| *x == "*" || *x == want)
}

/// Whether one of `rules` (NamedRuleWithOperations) matches the request.
fn rules_match(rules: &Value, attrs: &Attributes<'_>, obj: &Value) -> bool {
    let info = attrs.resource;
    let name = obj["metadata"]["name"].as_str().unwrap_or_default();
    rules.as_array().into_iter().flatten().any(|r| {
        let scope = r["scope"].as_str().unwrap_or("*");
        let scope_ok = match scope {
            "Cluster" => !info.namespaced,
            "Namespaced" => info.namespaced,
            _ => true,
        };
        let names = strs(&r["resourceNames"]);
        scope_ok
            && has(&strs(&r["operations"]), op_name(attrs.operation))
            && has(&strs(&r["apiGroups"]), &info.group)
            && has(&strs(&r["apiVersions"]), &info.version)
            && strs(&r["resources"]).iter().any(|x| *x == "*" || *x == info.plural)
            && (names.is_empty() || names.contains(&name))
    })
}

/// Upstream's `matching.Matcher.Matches` for one MatchResources: namespace and object
/// selectors, excluded rules, then rules (none: everything).
fn resources_match(m: &Value, attrs: &Attributes<'_>, obj: &Value, namespace: Option<&Value>) -> bool {
    if m.is_null() {
        return true;
    }
    let selects = |sel: &Value, target: &Value| match sel {
        Value::Null => true,
        s => labels::from_label_selector_json(s).map(|s| s.matches_object(target)).unwrap_or(false),
    };
    // Namespace selector: a namespaced object's namespace; a Namespace itself; other
    // cluster-scoped objects always match.
    let ns_target = if attrs.is("", "namespaces") { Some(obj) } else { namespace };
    if let Some(ns) = ns_target {
        if !selects(&m["namespaceSelector"], ns) {
            return false;
        }
    }
    let old_matches = attrs.old.is_some_and(|o| selects(&m["objectSelector"], o));
    if !selects(&m["objectSelector"], obj) && !old_matches {
        return false;
    }
    if rules_match(&m["excludeResourceRules"], attrs, obj) {
        return false;
    }
    match m["resourceRules"].as_array() {
        Some(rules) if !rules.is_empty() => rules_match(&m["resourceRules"], attrs, obj),
        _ => true,
    }
}

fn request_json(attrs: &Attributes<'_>, obj: &Value) -> Value {
    let info = attrs.resource;
    let ns = attrs.ctx.namespace.clone().or_else(|| obj["metadata"]["namespace"].as_str().map(str::to_string));
    json!({
        "kind": {"group": info.group, "version": info.version, "kind": info.kind},
        "resource": {"group": info.group, "version": info.version, "resource": info.plural},
        "requestKind": {"group": info.group, "version": info.version, "kind": info.kind},
        "requestResource": {"group": info.group, "version": info.version, "resource": info.plural},
        "subResource": "",
        "requestSubResource": "",
        "name": obj["metadata"]["name"].as_str().unwrap_or_default(),
        "namespace": ns.unwrap_or_default(),
        "operation": op_name(attrs.operation),
        "userInfo": {"username": attrs.ctx.user, "groups": attrs.ctx.groups},
        "dryRun": attrs.ctx.dry_run,
    })
}

/// The (group, plural) of a paramKind: built-in kinds by name.
fn param_resource(kind: &Value) -> (String, String) {
    let api_version = kind["apiVersion"].as_str().unwrap_or("v1");
    let group = api_version.rsplit_once('/').map(|(g, _)| g).unwrap_or("").to_string();
    let k = kind["kind"].as_str().unwrap_or_default().to_lowercase();
    let plural = if k.ends_with('s') { format!("{k}es") } else if let Some(stem) = k.strip_suffix('y') { format!("{stem}ies") } else { format!("{k}s") };
    (group, plural)
}

/// The params a binding selects: `Ok(None)` when the policy takes none, an empty list when
/// none were found.
async fn params_for(policy: &CompiledPolicy, binding: &Value, ns: Option<&str>, reader: &dyn Reader) -> ApiResult<Option<Vec<Value>>> {
    let kind = &policy.spec["paramKind"];
    if kind.is_null() {
        return Ok(None);
    }
    let pref = &binding["spec"]["paramRef"];
    if pref.is_null() {
        return Ok(Some(Vec::new()));
    }
    let (group, plural) = param_resource(kind);
    // Cluster-scoped param kinds are not distinguished here: a namespace applies when the
    // ref names one or the request has one (upstream: namespaced param kinds only).
    let pns = pref["namespace"].as_str().filter(|s| !s.is_empty()).or(ns);
    if let Some(name) = pref["name"].as_str().filter(|s| !s.is_empty()) {
        let found = match reader.get(&group, &plural, pns, name).await? {
            Some(p) => Some(p),
            None if pns.is_some() => reader.get(&group, &plural, None, name).await?,
            None => None,
        };
        return Ok(Some(found.into_iter().collect()));
    }
    let sel = labels::from_label_selector_json(&pref["selector"]).unwrap_or_else(|_| labels::LabelSelector::nothing());
    let all = reader.list(&group, &plural, pns).await?;
    Ok(Some(all.into_iter().filter(|p| sel.matches_object(p)).collect()))
}

/// Evaluates a policy's matchConditions, variables and validations for one param.
fn evaluate(policy: &CompiledPolicy, base: &Activation) -> Result<Option<Vec<Decision>>, String> {
    let mut act = base.clone();
    for (name, cond) in &policy.match_conditions {
        let cond = cond.as_ref().map_err(|e| format!("matchCondition '{name}': {e}"))?;
        match cond.eval_bool(&act) {
            Ok(true) => {}
            Ok(false) => return Ok(None),
            Err(e) => return Err(format!("failed to evaluate matchCondition '{name}': {e}")),
        }
    }
    let mut vars: HashMap<String, cel::Value> = HashMap::new();
    for (name, expr) in &policy.variables {
        act.set("variables", cel::Value::from(vars.clone()));
        if let Ok(Ok(v)) = expr.as_ref().map(|e| e.eval(&act)) {
            vars.insert(name.clone(), v);
        }
    }
    act.set("variables", cel::Value::from(vars));
    let mut out = Vec::new();
    for v in &policy.validations {
        let compiled = match &v.expr {
            Ok(c) => c,
            Err(e) => {
                out.push(Decision::Error(format!("compilation error: {e}")));
                continue;
            }
        };
        match compiled.eval_bool(&act) {
            Ok(true) => {}
            Ok(false) => {
                let from_expr = v.message_expr.as_ref().and_then(|m| m.as_ref().ok()).and_then(|m| match m.eval(&act) {
                    Ok(cel::Value::String(s)) if !s.trim().is_empty() && !s.contains('\n') => Some(s.to_string()),
                    _ => None,
                });
                let message = from_expr
                    .or_else(|| v.message.clone())
                    .unwrap_or_else(|| format!("failed expression: {}", v.source));
                out.push(Decision::Fail { message, reason: v.reason.clone() });
            }
            Err(e) => out.push(Decision::Error(format!("expression '{}' resulted in error: {e}", v.source))),
        }
    }
    Ok(Some(out))
}

fn refusal(policy: &str, binding: &str, message: &str, reason: Option<&str>) -> ApiError {
    let (code, reason) = match reason {
        Some("Forbidden") => (403, "Forbidden"),
        Some("Unauthorized") => (401, "Unauthorized"),
        Some("RequestEntityTooLarge") => (413, "RequestEntityTooLarge"),
        _ => (422, "Invalid"),
    };
    ApiError::Refused {
        code,
        reason,
        message: format!("ValidatingAdmissionPolicy '{policy}' with binding '{binding}' denied request: {message}"),
    }
}

#[async_trait]
impl Plugin for ValidatingPolicy {
    fn handles(&self, attrs: &Attributes<'_>) -> bool {
        // Upstream exempts the admission configuration resources themselves.
        attrs.resource.group != GROUP
    }

    async fn validate_warn(&self, attrs: &Attributes<'_>, obj: &Value, reader: &dyn Reader, warnings: &mut Vec<String>) -> ApiResult<()> {
        let bindings = reader.list(GROUP, "validatingadmissionpolicybindings", None).await?;
        if bindings.is_empty() {
            return Ok(());
        }
        let ns_name = if attrs.resource.namespaced {
            attrs.ctx.namespace.clone().or_else(|| obj["metadata"]["namespace"].as_str().map(str::to_string))
        } else {
            None
        };
        let namespace = match &ns_name {
            Some(ns) => reader.get("", "namespaces", None, ns).await?,
            None => None,
        };
        let mut base: Option<Activation> = None;
        for binding in &bindings {
            let spec = &binding["spec"];
            let Some(policy_name) = spec["policyName"].as_str() else { continue };
            let Some(policy) = reader.get(GROUP, "validatingadmissionpolicies", None, policy_name).await? else { continue };
            let policy = self.compiled(&policy);
            let ns_obj = namespace.as_ref().or(if ns_name.is_some() { Some(&Value::Null) } else { None });
            if !resources_match(&policy.spec["matchConstraints"], attrs, obj, ns_obj)
                || !resources_match(&spec["matchResources"], attrs, obj, ns_obj)
            {
                continue;
            }
            let base = base.get_or_insert_with(|| {
                let mut a = Activation::default();
                a.set("object", celexpr::to_cel(obj));
                a.set("oldObject", attrs.old.map(celexpr::to_cel).unwrap_or(cel::Value::Null));
                a.set("request", celexpr::to_cel(&request_json(attrs, obj)));
                a.set("namespaceObject", namespace.as_ref().map(celexpr::to_cel).unwrap_or(cel::Value::Null));
                a
            });
            let binding_name = binding["metadata"]["name"].as_str().unwrap_or_default();
            let actions = strs(&spec["validationActions"]);
            let deny = actions.contains(&"Deny");
            let warn = actions.contains(&"Warn");
            let params = params_for(&policy, binding, ns_name.as_deref(), reader).await?;
            let param_values: Vec<cel::Value> = match &params {
                None => vec![cel::Value::Null],
                Some(ps) if ps.is_empty() => {
                    let allow = spec["paramRef"]["parameterNotFoundAction"].as_str() == Some("Allow");
                    if allow {
                        continue;
                    }
                    if policy.fail && deny {
                        return Err(refusal(
                            &policy.name,
                            binding_name,
                            "failed to configure binding: no params found for policy binding with `Deny` parameterNotFoundAction",
                            None,
                        ));
                    }
                    continue;
                }
                Some(ps) => ps.iter().map(celexpr::to_cel).collect(),
            };
            for p in param_values {
                let mut act = base.clone();
                act.set("params", p);
                let decisions = match evaluate(&policy, &act) {
                    Ok(Some(d)) => d,
                    Ok(None) => continue,
                    Err(e) if policy.fail => vec![Decision::Error(e)],
                    Err(_) => continue,
                };
                for d in decisions {
                    let (message, reason) = match d {
                        Decision::Fail { message, reason } => (message, reason),
                        Decision::Error(_) if !policy.fail => continue,
                        Decision::Error(e) => (e, None),
                    };
                    if warn {
                        warnings.push(format!(
                            "Validation failed for ValidatingAdmissionPolicy '{}' with binding '{binding_name}': {message}",
                            policy.name
                        ));
                    }
                    if deny {
                        return Err(refusal(&policy.name, binding_name, &message, reason.as_deref()));
                    }
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::*;
    use super::*;
    use crate::registry::{ReqCtx, ResourceInfo};

    fn deployments() -> ResourceInfo {
        ResourceInfo {
            group: "apps".into(),
            version: "v1".into(),
            kind: "Deployment".into(),
            list_kind: "DeploymentList".into(),
            plural: "deployments".into(),
            singular: "deployment".into(),
            namespaced: true,
            short_names: vec![],
            categories: vec![],
            subresources: vec!["status".into(), "scale".into()],
        }
    }

    fn deployment(replicas: i64) -> Value {
        json!({"metadata": {"name": "d", "namespace": "ns", "labels": {"app": "web"}}, "spec": {"replicas": replicas}})
    }

    fn setup(actions: &[&str]) -> MemReader {
        let r = MemReader::default();
        r.put("", "namespaces", None, json!({"metadata": {"name": "ns", "labels": {"env": "test"}}}));
        r.put("", "configmaps", Some("ns"), json!({"metadata": {"name": "limits", "namespace": "ns"}, "data": {"max": "3"}}));
        r.put(GROUP, "validatingadmissionpolicies", None, json!({
            "metadata": {"name": "max-replicas", "resourceVersion": "1"},
            "spec": {
                "failurePolicy": "Fail",
                "paramKind": {"apiVersion": "v1", "kind": "ConfigMap"},
                "matchConstraints": {"resourceRules": [{"apiGroups": ["apps"], "apiVersions": ["v1"], "operations": ["CREATE", "UPDATE"], "resources": ["deployments"]}]},
                "matchConditions": [{"name": "not-exempt", "expression": "!has(object.metadata.labels) || !('exempt' in object.metadata.labels)"}],
                "variables": [{"name": "max", "expression": "int(params.data.max)"}],
                "validations": [
                    {"expression": "object.spec.replicas <= variables.max",
                     "messageExpression": "'replicas ' + string(object.spec.replicas) + ' > ' + string(variables.max) + ' in ' + namespaceObject.metadata.name + ' by ' + request.userInfo.username"},
                    {"expression": "request.operation != 'UPDATE' || oldObject.spec.replicas <= object.spec.replicas", "reason": "Forbidden"}
                ]
            }
        }));
        r.put(GROUP, "validatingadmissionpolicybindings", None, json!({
            "metadata": {"name": "max-replicas-binding"},
            "spec": {"policyName": "max-replicas", "validationActions": actions,
                     "paramRef": {"name": "limits", "parameterNotFoundAction": "Deny"},
                     "matchResources": {"namespaceSelector": {"matchLabels": {"env": "test"}}}}
        }));
        r
    }

    async fn run(r: &MemReader, attrs: &Attributes<'_>, obj: &Value) -> (ApiResult<()>, Vec<String>) {
        let mut w = Vec::new();
        let res = ValidatingPolicy::default().validate_warn(attrs, obj, r, &mut w).await;
        (res, w)
    }

    #[tokio::test]
    async fn denies_and_warns() {
        let info = deployments();
        let ctx = ReqCtx { namespace: Some("ns".into()), user: "alice".into(), ..Default::default() };
        let attrs = create(&info, &ctx);
        let r = setup(&["Deny"]);
        assert!(run(&r, &attrs, &deployment(3)).await.0.is_ok());
        let err = run(&r, &attrs, &deployment(5)).await.0.unwrap_err();
        assert_eq!(err.code(), 422);
        assert_eq!(
            err.to_string(),
            "ValidatingAdmissionPolicy 'max-replicas' with binding 'max-replicas-binding' denied request: replicas 5 > 3 in ns by alice"
        );
        // matchConditions false: skipped.
        let mut exempt = deployment(5);
        exempt["metadata"]["labels"]["exempt"] = json!("yes");
        assert!(run(&r, &attrs, &exempt).await.0.is_ok());
        // Update: the second validation, with its reason.
        let old = deployment(3);
        let upd = Attributes { operation: Operation::Update, resource: &info, subresource: "", ctx: &ctx, old: Some(&old) };
        let err = run(&r, &upd, &deployment(2)).await.0.unwrap_err();
        assert_eq!(err.code(), 403);
        assert!(err.to_string().ends_with("denied request: failed expression: request.operation != 'UPDATE' || oldObject.spec.replicas <= object.spec.replicas"), "{err}");

        let r = setup(&["Warn", "Audit"]);
        let (res, w) = run(&r, &attrs, &deployment(5)).await;
        assert!(res.is_ok());
        assert_eq!(w, vec!["Validation failed for ValidatingAdmissionPolicy 'max-replicas' with binding 'max-replicas-binding': replicas 5 > 3 in ns by alice".to_string()]);
    }

    #[tokio::test]
    async fn selectors_params_and_failure_policy() {
        let info = deployments();
        let ctx = ReqCtx { namespace: Some("other".into()), ..Default::default() };
        let attrs = create(&info, &ctx);
        let r = setup(&["Deny"]);
        r.put("", "namespaces", None, json!({"metadata": {"name": "other"}}));
        // Namespace not selected by the binding.
        let mut d = deployment(9);
        d["metadata"]["namespace"] = json!("other");
        assert!(run(&r, &attrs, &d).await.0.is_ok());
        // Selected, but no ConfigMap there: parameterNotFoundAction Deny.
        r.put("", "namespaces", None, json!({"metadata": {"name": "other", "labels": {"env": "test"}}}));
        let err = run(&r, &attrs, &d).await.0.unwrap_err();
        assert!(err.to_string().contains("no params found"), "{err}");
        // Pods are not matched by the policy.
        let pods = pods();
        let pattrs = create(&pods, &ctx);
        assert!(run(&r, &pattrs, &json!({"metadata": {"name": "p"}})).await.0.is_ok());
        // An evaluation error fails closed, or is ignored with failurePolicy Ignore.
        r.put("", "configmaps", Some("other"), json!({"metadata": {"name": "limits", "namespace": "other"}, "data": {}}));
        let err = run(&r, &attrs, &d).await.0.unwrap_err();
        assert!(err.to_string().contains("resulted in error"), "{err}");
        let mut p = r.get(GROUP, "validatingadmissionpolicies", None, "max-replicas").await.unwrap().unwrap();
        p["spec"]["failurePolicy"] = json!("Ignore");
        p["metadata"]["resourceVersion"] = json!("2");
        r.put(GROUP, "validatingadmissionpolicies", None, p);
        assert!(run(&r, &attrs, &d).await.0.is_ok());
    }
}
