//! RBAC's escalation checks (upstream pkg/registry/rbac/*/policybased): nobody writes a
//! Role or ClusterRole granting more than they hold, unless allowed to `escalate` it, and
//! nobody binds a role whose rules they lack, unless allowed to `bind` it. Members of
//! `system:masters` may do both. Run as an admission plugin on writes of the four kinds.

use std::collections::BTreeSet;

use async_trait::async_trait;
use serde_json::{json, Value};

use super::attributes::Attributes;
use super::rbac::{uncovered, PolicyRule};
use super::{AuthContext, UserInfo};
use crate::admission::{Attributes as Admit, Operation, Plugin, Reader};
use crate::error::{ApiError, ApiResult};

const GROUP: &str = "rbac.authorization.k8s.io";

pub struct RbacEscalation;

fn rules_of(obj: &Value) -> Vec<PolicyRule> {
    obj["rules"].as_array().into_iter().flatten().map(PolicyRule::from_value).collect()
}

fn has_aggregation(obj: &Value) -> bool {
    obj["aggregationRule"]["clusterRoleSelectors"].as_array().is_some_and(|s| !s.is_empty())
}

/// Upstream's `CompactRules`: single group/resource rules without names that differ only
/// in verbs become one rule.
fn compact(rules: Vec<PolicyRule>) -> Vec<PolicyRule> {
    let mut out: Vec<PolicyRule> = Vec::new();
    for r in rules {
        let simple = r.api_groups.len() == 1 && r.resources.len() == 1 && r.resource_names.is_empty() && r.non_resource_urls.is_empty();
        let same = out.iter_mut().find(|o| simple && o.api_groups == r.api_groups && o.resources == r.resources && o.resource_names.is_empty() && o.non_resource_urls.is_empty());
        match same {
            Some(o) => o.verbs.extend(r.verbs.into_iter().filter(|v| !o.verbs.contains(v)).collect::<Vec<_>>()),
            None => out.push(r),
        }
    }
    out
}

fn go_quoted_list(items: &[String]) -> String {
    format!("[{}]", items.iter().map(|s| format!("{s:?}")).collect::<Vec<_>>().join(" "))
}

/// Upstream's `ConfirmNoEscalation`: an error naming every missing rule when `user` does
/// not hold all of `rules` in `namespace`.
pub fn confirm_no_escalation(auth: &AuthContext, user: &UserInfo, namespace: &str, rules: &[PolicyRule]) -> Result<(), String> {
    let (owner, errors) = auth.authorizer.rules_for(user, namespace);
    let missing = uncovered(&owner, rules);
    if missing.is_empty() {
        return Ok(());
    }
    let described: BTreeSet<String> = compact(missing).iter().map(PolicyRule::compact_string).collect();
    let mut msg = format!(
        "user {:?} (groups={}) is attempting to grant RBAC permissions not currently held:\n{}",
        user.name,
        go_quoted_list(&user.groups),
        described.into_iter().collect::<Vec<_>>().join("\n")
    );
    if !errors.is_empty() {
        msg.push_str(&format!("; resolution errors: [{}]", errors.join(" ")));
    }
    Err(msg)
}

fn allowed(auth: &AuthContext, a: &Attributes) -> bool {
    auth.authorizer.decide(a).allowed
}

impl RbacEscalation {
    fn check(&self, attrs: &Admit<'_>, obj: &Value, auth: &AuthContext) -> Result<(), String> {
        let user = attrs.ctx.user_info();
        if user.groups.iter().any(|g| g == super::authorizer::MASTERS) {
            return Ok(());
        }
        let plural = attrs.resource.plural.as_str();
        let namespace = obj["metadata"]["namespace"].as_str().unwrap_or_default();
        let name = obj["metadata"]["name"].as_str().unwrap_or_default();
        match plural {
            "roles" | "clusterroles" => {
                if allowed(auth, &Attributes::resource(&user, "escalate", GROUP, plural, "", namespace, name)) {
                    return Ok(());
                }
                confirm_no_escalation(auth, &user, namespace, &rules_of(obj))?;
                if plural == "clusterroles" && has_aggregation(obj) {
                    let full = PolicyRule::from_value(&json!({"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]}));
                    confirm_no_escalation(auth, &user, namespace, &[full]).map_err(|_| "must have cluster-admin privileges to use the aggregationRule".to_string())?;
                }
                Ok(())
            }
            _ => {
                let role_kind = obj["roleRef"]["kind"].as_str().unwrap_or_default();
                let role_name = obj["roleRef"]["name"].as_str().unwrap_or_default();
                let role_resource = if role_kind == "Role" { "roles" } else { "clusterroles" };
                if allowed(auth, &Attributes::resource(&user, "bind", GROUP, role_resource, "", namespace, role_name)) {
                    return Ok(());
                }
                let rules = auth.authorizer.policy().referenced_rules(role_kind, role_name, namespace)?;
                confirm_no_escalation(auth, &user, namespace, &rules)
            }
        }
    }
}

/// Whether an update changes what the object grants (rules, aggregation, role, subjects):
/// writes that only touch metadata (the garbage collector's) are not checked, as upstream's
/// `IsOnlyMutatingGCFields`.
fn grants_changed(old: &Value, new: &Value) -> bool {
    ["rules", "aggregationRule", "roleRef", "subjects"].iter().any(|k| old.get(*k) != new.get(*k))
}

#[async_trait]
impl Plugin for RbacEscalation {
    fn handles(&self, attrs: &Admit<'_>) -> bool {
        attrs.resource.group == GROUP && attrs.ctx.auth.is_some()
    }

    async fn validate(&self, attrs: &Admit<'_>, obj: &Value, _reader: &dyn Reader) -> ApiResult<()> {
        let Some(auth) = &attrs.ctx.auth else { return Ok(()) };
        if attrs.operation == Operation::Update && attrs.old.is_some_and(|old| !grants_changed(old, obj)) {
            return Ok(());
        }
        self.check(attrs, obj, auth).map_err(|message| ApiError::ForbiddenResource {
            group: GROUP.into(),
            resource: attrs.resource.plural.clone(),
            name: obj["metadata"]["name"].as_str().unwrap_or_default().to_string(),
            message,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compacts_simple_rules_by_verb() {
        let r = |v: Value| PolicyRule::from_value(&v);
        let out = compact(vec![
            r(json!({"apiGroups": [""], "resources": ["pods"], "verbs": ["get"]})),
            r(json!({"apiGroups": [""], "resources": ["pods"], "verbs": ["list"]})),
            r(json!({"apiGroups": [""], "resources": ["secrets"], "resourceNames": ["a"], "verbs": ["get"]})),
        ]);
        assert_eq!(out.len(), 2);
        assert_eq!(out[0].compact_string(), r#"{APIGroups:[""], Resources:["pods"], Verbs:["get" "list"]}"#);
        assert_eq!(go_quoted_list(&["a".into(), "b".into()]), r#"["a" "b"]"#);
    }

    #[test]
    fn metadata_only_updates_are_not_escalations() {
        let old = json!({"metadata": {"name": "r"}, "rules": [{"verbs": ["get"]}]});
        let mut new = old.clone();
        new["metadata"]["finalizers"] = json!(["x"]);
        assert!(!grants_changed(&old, &new));
        new["rules"] = json!([{"verbs": ["*"]}]);
        assert!(grants_changed(&old, &new));
    }
}
