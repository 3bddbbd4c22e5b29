//! RBAC: Roles/ClusterRoles (rules need verbs, groups and resources or non-resource URLs,
//! aggregation selectors), RoleBindings/ClusterRoleBindings (roleRef, subjects, immutable
//! roleRef, subject API group defaults), path-segment names and columns.

use serde_json::{json, Value};

use super::common::{self, arr, s};
use crate::registry::table::{self, Column};
use crate::registry::{NameRule, ReqCtx, Strategy};
use crate::validation::{self, FieldError, FieldErrors};

pub struct RoleStrategy;
pub struct ClusterRoleStrategy;
pub struct RoleBindingStrategy;
pub struct ClusterRoleBindingStrategy;

const GROUP: &str = "rbac.authorization.k8s.io";

fn validate_rules(errs: &mut FieldErrors, rules: &Value, namespaced: bool) {
    for (i, r) in arr(rules).iter().enumerate() {
        let p = format!("rules[{i}]");
        if arr(&r["verbs"]).is_empty() {
            errs.push(FieldError::required(format!("{p}.verbs"), "verbs must contain at least one value"));
        }
        if !arr(&r["nonResourceURLs"]).is_empty() {
            if namespaced {
                errs.push(FieldError::invalid(format!("{p}.nonResourceURLs"), r["nonResourceURLs"].clone(), "namespaced rules cannot apply to non-resource URLs"));
            }
            if !arr(&r["apiGroups"]).is_empty() || !arr(&r["resources"]).is_empty() || !arr(&r["resourceNames"]).is_empty() {
                errs.push(FieldError::invalid(
                    format!("{p}.nonResourceURLs"),
                    r["nonResourceURLs"].clone(),
                    "rules cannot apply to both regular resources and non-resource URLs",
                ));
            }
            continue;
        }
        if arr(&r["apiGroups"]).is_empty() {
            errs.push(FieldError::required(format!("{p}.apiGroups"), "resource rules must supply at least one api group"));
        }
        if arr(&r["resources"]).is_empty() {
            errs.push(FieldError::required(format!("{p}.resources"), "resource rules must supply at least one resource"));
        }
    }
}

fn default_binding(obj: &mut Value) {
    common::set_default(common::child(obj, "roleRef"), "apiGroup", GROUP);
    common::each_mut(obj, "subjects", |sub| {
        if s(&sub["apiGroup"]).is_empty() && matches!(s(&sub["kind"]), "User" | "Group") {
            sub["apiGroup"] = json!(GROUP);
        }
    });
}

fn validate_binding(b: &Value, cluster: bool) -> FieldErrors {
    let mut errs = Vec::new();
    let rr = &b["roleRef"];
    if s(&rr["apiGroup"]) != GROUP {
        errs.push(FieldError::not_supported("roleRef.apiGroup", s(&rr["apiGroup"]), &[GROUP]));
    }
    let kinds: &[&str] = if cluster { &["ClusterRole"] } else { &["Role", "ClusterRole"] };
    if !kinds.contains(&s(&rr["kind"])) {
        errs.push(FieldError::not_supported("roleRef.kind", s(&rr["kind"]), kinds));
    }
    let name = s(&rr["name"]);
    if name.is_empty() {
        errs.push(FieldError::required("roleRef.name", ""));
    } else {
        validation::push_invalid(&mut errs, "roleRef.name", name, validation::path_segment_name(name));
    }
    for (i, sub) in arr(&b["subjects"]).iter().enumerate() {
        let p = format!("subjects[{i}]");
        let n = s(&sub["name"]);
        if n.is_empty() {
            errs.push(FieldError::required(format!("{p}.name"), ""));
        }
        let group = s(&sub["apiGroup"]);
        match s(&sub["kind"]) {
            "ServiceAccount" => {
                if !n.is_empty() {
                    validation::push_invalid(&mut errs, &format!("{p}.name"), n, validation::dns1123_subdomain(n));
                }
                if !group.is_empty() {
                    errs.push(FieldError::not_supported(format!("{p}.apiGroup"), group, &[""]));
                }
                if cluster && s(&sub["namespace"]).is_empty() {
                    errs.push(FieldError::required(format!("{p}.namespace"), ""));
                }
            }
            "User" | "Group" => {
                if group != GROUP {
                    errs.push(FieldError::not_supported(format!("{p}.apiGroup"), group, &[GROUP]));
                }
            }
            other => errs.push(FieldError::not_supported(format!("{p}.kind"), other, &["ServiceAccount", "User", "Group"])),
        }
    }
    errs
}

fn validate_binding_update(new: &Value, old: &Value, cluster: bool) -> FieldErrors {
    let mut errs = validate_binding(new, cluster);
    if !common::same(&new["roleRef"], &old["roleRef"]) {
        errs.push(FieldError::invalid("roleRef", new["roleRef"].clone(), "cannot change roleRef"));
    }
    errs
}

fn role_columns() -> Vec<Column> {
    vec![
        table::name_column(),
        Column {
            description: "CreationTimestamp is a timestamp representing the server time when this object was created.".into(),
            ..Column::new("Created At", "date", |o| o["metadata"]["creationTimestamp"].clone())
        },
    ]
}

/// `rbac.SubjectsStrings`, one kind joined with ", ".
fn subjects_of(b: &Value, kind: &str) -> String {
    arr(&b["subjects"])
        .iter()
        .filter(|sub| s(&sub["kind"]) == kind)
        .map(|sub| {
            if kind == "ServiceAccount" {
                format!("{}/{}", s(&sub["namespace"]), s(&sub["name"]))
            } else {
                s(&sub["name"]).to_string()
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

fn binding_columns() -> Vec<Column> {
    vec![
        table::name_column(),
        Column::new("Role", "string", |o| json!(format!("{}/{}", s(&o["roleRef"]["kind"]), s(&o["roleRef"]["name"])))),
        table::age_column(),
        Column::new("Users", "string", |o| json!(subjects_of(o, "User"))).wide(),
        Column::new("Groups", "string", |o| json!(subjects_of(o, "Group"))).wide(),
        Column::new("ServiceAccounts", "string", |o| json!(subjects_of(o, "ServiceAccount"))).wide(),
    ]
}

impl Strategy for RoleStrategy {
    fn validate(&self, _ctx: &ReqCtx, obj: &Value) -> FieldErrors {
        let mut errs = Vec::new();
        validate_rules(&mut errs, &obj["rules"], true);
        errs
    }
    fn name_rule(&self) -> NameRule {
        NameRule::PathSegment
    }
    fn columns(&self) -> Vec<Column> {
        role_columns()
    }
}

impl Strategy for ClusterRoleStrategy {
    fn validate(&self, _ctx: &ReqCtx, obj: &Value) -> FieldErrors {
        let mut errs = Vec::new();
        validate_rules(&mut errs, &obj["rules"], false);
        let agg = &obj["aggregationRule"];
        if !agg.is_null() {
            let sels = arr(&agg["clusterRoleSelectors"]);
            if sels.is_empty() {
                errs.push(FieldError::required(
                    "aggregationRule.clusterRoleSelectors",
                    "at least one clusterRoleSelector required if aggregationRule is non-nil",
                ));
            }
            for (i, sel) in sels.iter().enumerate() {
                common::validate_label_selector(&mut errs, sel, &format!("aggregationRule.clusterRoleSelectors[{i}]"));
            }
        }
        errs
    }
    fn name_rule(&self) -> NameRule {
        NameRule::PathSegment
    }
    fn columns(&self) -> Vec<Column> {
        role_columns()
    }
}

impl Strategy for RoleBindingStrategy {
    fn apply_defaults(&self, obj: &mut Value) {
        default_binding(obj);
    }
    fn validate(&self, _ctx: &ReqCtx, obj: &Value) -> FieldErrors {
        validate_binding(obj, false)
    }
    fn validate_update(&self, _ctx: &ReqCtx, new: &Value, old: &Value) -> FieldErrors {
        validate_binding_update(new, old, false)
    }
    fn name_rule(&self) -> NameRule {
        NameRule::PathSegment
    }
    fn columns(&self) -> Vec<Column> {
        binding_columns()
    }
}

impl Strategy for ClusterRoleBindingStrategy {
    fn apply_defaults(&self, obj: &mut Value) {
        default_binding(obj);
    }
    fn validate(&self, _ctx: &ReqCtx, obj: &Value) -> FieldErrors {
        validate_binding(obj, true)
    }
    fn validate_update(&self, _ctx: &ReqCtx, new: &Value, old: &Value) -> FieldErrors {
        validate_binding_update(new, old, true)
    }
    fn name_rule(&self) -> NameRule {
        NameRule::PathSegment
    }
    fn columns(&self) -> Vec<Column> {
        binding_columns()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles() {
        let ctx = ReqCtx::default();
        let role = json!({"rules": [{"apiGroups": [""], "resources": ["pods"]}, {"nonResourceURLs": ["/healthz"], "verbs": ["get"]}]});
        let msgs: Vec<String> = RoleStrategy.validate(&ctx, &role).iter().map(ToString::to_string).collect();
        assert_eq!(msgs[0], "rules[0].verbs: Required value: verbs must contain at least one value");
        assert!(msgs[1].starts_with("rules[1].nonResourceURLs: Invalid value"));
        assert!(ClusterRoleStrategy.validate(&ctx, &json!({"rules": [{"nonResourceURLs": ["/healthz"], "verbs": ["get"]}]})).is_empty());
        assert_eq!(RoleStrategy.name_rule(), NameRule::PathSegment);
    }

    #[test]
    fn bindings() {
        let ctx = ReqCtx::default();
        let mut b = json!({"roleRef": {"kind": "ClusterRole", "name": "view"},
            "subjects": [{"kind": "User", "name": "alice"}, {"kind": "ServiceAccount", "name": "default", "namespace": "ns"}]});
        ClusterRoleBindingStrategy.apply_defaults(&mut b);
        assert_eq!(b["roleRef"]["apiGroup"], GROUP);
        assert_eq!(b["subjects"][0]["apiGroup"], GROUP);
        assert!(ClusterRoleBindingStrategy.validate(&ctx, &b).is_empty());
        let mut new = b.clone();
        new["roleRef"]["name"] = json!("edit");
        let errs = ClusterRoleBindingStrategy.validate_update(&ctx, &new, &b);
        assert!(errs[0].to_string().ends_with("cannot change roleRef"));
        let cells: Vec<Value> = binding_columns().iter().map(|c| (c.cell)(&b)).collect();
        assert_eq!(cells[1], "ClusterRole/view");
        assert_eq!(cells[3], "alice");
        assert_eq!(cells[5], "ns/default");
        let mut rb = json!({"roleRef": {"kind": "Role", "name": "r"}});
        RoleBindingStrategy.apply_defaults(&mut rb);
        assert!(RoleBindingStrategy.validate(&ctx, &rb).is_empty());
        assert_eq!(ClusterRoleBindingStrategy.validate(&ctx, &rb)[0].to_string(), "roleRef.kind: Unsupported value: \"Role\": supported values: \"ClusterRole\"");
    }
}
