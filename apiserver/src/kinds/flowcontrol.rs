//! API priority and fairness objects (flowcontrol.apiserver.k8s.io/v1): FlowSchema and
//! PriorityLevelConfiguration, with upstream's v1 defaults, the main rules of its
//! validation, and `kubectl get` columns. krust stores them but does not yet apply them to
//! requests (no request queuing).

use serde_json::{json, Value};

use super::common::{arr, entry, int, s, set_default};
use crate::registry::table::{self, Column};
use crate::registry::{ReqCtx, Strategy};
use crate::validation::{FieldError, FieldErrors};

/// Upstream's `FlowSchemaDefaultMatchingPrecedence`.
const DEFAULT_MATCHING_PRECEDENCE: i64 = 1000;
/// Upstream's `FlowSchemaMaxMatchingPrecedence`.
const MAX_MATCHING_PRECEDENCE: i64 = 10000;

pub struct FlowSchemaStrategy;

impl Strategy for FlowSchemaStrategy {
    fn apply_defaults(&self, obj: &mut Value) {
        let spec = entry(obj, "spec");
        if int(&spec["matchingPrecedence"]).unwrap_or(0) == 0 {
            spec["matchingPrecedence"] = json!(DEFAULT_MATCHING_PRECEDENCE);
        }
    }

    fn validate(&self, _ctx: &ReqCtx, obj: &Value) -> FieldErrors {
        let mut errs = Vec::new();
        let spec = &obj["spec"];
        if s(&spec["priorityLevelConfiguration"]["name"]).is_empty() {
            errs.push(FieldError::required("spec.priorityLevelConfiguration.name", "must reference a priority level"));
        }
        let precedence = int(&spec["matchingPrecedence"]).unwrap_or(0);
        if !(1..=MAX_MATCHING_PRECEDENCE).contains(&precedence) {
            errs.push(FieldError::invalid("spec.matchingPrecedence", precedence, "must be between 1 and 10000, inclusive"));
        }
        if let Some(t) = spec["distinguisherMethod"].get("type") {
            let t = s(t);
            if !matches!(t, "ByUser" | "ByNamespace") {
                errs.push(FieldError::not_supported("spec.distinguisherMethod.type", t, &["ByNamespace", "ByUser"]));
            }
        }
        for (i, rule) in arr(&spec["rules"]).iter().enumerate() {
            let path = format!("spec.rules[{i}]");
            if arr(&rule["subjects"]).is_empty() {
                errs.push(FieldError::required(format!("{path}.subjects"), "subjects must contain at least one value"));
            }
            for (j, subject) in arr(&rule["subjects"]).iter().enumerate() {
                validate_subject(&mut errs, subject, &format!("{path}.subjects[{j}]"));
            }
            if arr(&rule["resourceRules"]).is_empty() && arr(&rule["nonResourceRules"]).is_empty() {
                errs.push(FieldError::required(path.clone(), "at least one of resourceRules and nonResourceRules has to be non-empty"));
            }
            for (j, r) in arr(&rule["resourceRules"]).iter().enumerate() {
                let p = format!("{path}.resourceRules[{j}]");
                for field in ["verbs", "apiGroups", "resources"] {
                    if arr(&r[field]).is_empty() {
                        errs.push(FieldError::required(format!("{p}.{field}"), format!("{field} must contain at least one value")));
                    }
                }
                if !r["clusterScope"].as_bool().unwrap_or(false) && arr(&r["namespaces"]).is_empty() {
                    errs.push(FieldError::required(format!("{p}.namespaces"), "resource rules that are not cluster scoped must supply at least one namespace"));
                }
            }
            for (j, r) in arr(&rule["nonResourceRules"]).iter().enumerate() {
                let p = format!("{path}.nonResourceRules[{j}]");
                for field in ["verbs", "nonResourceURLs"] {
                    if arr(&r[field]).is_empty() {
                        errs.push(FieldError::required(format!("{p}.{field}"), format!("{field} must contain at least one value")));
                    }
                }
            }
        }
        errs
    }

    fn columns(&self) -> Vec<Column> {
        vec![
            table::name_column(),
            Column::new("PriorityLevel", "string", |o| json!(s(&o["spec"]["priorityLevelConfiguration"]["name"]))),
            Column::new("MatchingPrecedence", "string", |o| json!(o["spec"]["matchingPrecedence"].to_string())),
            Column::new("DistinguisherMethod", "string", |o| table::or_none(s(&o["spec"]["distinguisherMethod"]["type"]))),
            table::age_column(),
            Column::new("MissingPL", "string", |o| {
                let c = arr(&o["status"]["conditions"]).iter().find(|c| c["type"] == "Dangling").map(|c| s(&c["status"]).to_string());
                json!(c.unwrap_or_else(|| "?".into()))
            }),
        ]
    }
}

fn validate_subject(errs: &mut FieldErrors, subject: &Value, path: &str) {
    let kind = s(&subject["kind"]);
    let (field, name_field) = match kind {
        "User" => ("user", "name"),
        "Group" => ("group", "name"),
        "ServiceAccount" => ("serviceAccount", "name"),
        other => {
            errs.push(FieldError::not_supported(format!("{path}.kind"), other, &["Group", "ServiceAccount", "User"]));
            return;
        }
    };
    if subject[field].is_null() {
        errs.push(FieldError::required(format!("{path}.{field}"), format!("{field} is required when subject kind is '{kind}'")));
    } else if s(&subject[field][name_field]).is_empty() {
        errs.push(FieldError::required(format!("{path}.{field}.{name_field}"), format!("{field} name is required")));
    }
    if kind == "ServiceAccount" && s(&subject["serviceAccount"]["namespace"]).is_empty() && !subject[field].is_null() {
        errs.push(FieldError::required(format!("{path}.serviceAccount.namespace"), "must specify namespace for service account"));
    }
}

pub struct PriorityLevelConfigurationStrategy;

impl Strategy for PriorityLevelConfigurationStrategy {
    fn apply_defaults(&self, obj: &mut Value) {
        let spec = entry(obj, "spec");
        if let Some(limited) = spec.get_mut("limited").filter(|l| l.is_object()) {
            set_default(limited, "nominalConcurrencyShares", 30);
            set_default(limited, "lendablePercent", 0);
            if let Some(q) = limited.get_mut("limitResponse").and_then(|r| r.get_mut("queuing")).filter(|q| q.is_object()) {
                for (field, default) in [("queues", 64), ("handSize", 8), ("queueLengthLimit", 50)] {
                    if int(&q[field]).unwrap_or(0) == 0 {
                        q[field] = json!(default);
                    }
                }
            }
        }
        if let Some(exempt) = spec.get_mut("exempt").filter(|e| e.is_object()) {
            set_default(exempt, "nominalConcurrencyShares", 0);
            set_default(exempt, "lendablePercent", 0);
        }
    }

    fn validate(&self, _ctx: &ReqCtx, obj: &Value) -> FieldErrors {
        let mut errs = Vec::new();
        let spec = &obj["spec"];
        match s(&spec["type"]) {
            "Limited" => {
                if !spec["exempt"].is_null() {
                    errs.push(FieldError::forbidden("spec.exempt", "must be nil if the type is Limited"));
                }
                let limited = &spec["limited"];
                if limited.is_null() {
                    errs.push(FieldError::required("spec.limited", "must not be empty when type is Limited"));
                } else {
                    validate_limited(&mut errs, limited);
                }
            }
            "Exempt" => {
                if !spec["limited"].is_null() {
                    errs.push(FieldError::forbidden("spec.limited", "must be nil if the type is not Limited"));
                }
                for field in ["nominalConcurrencyShares", "lendablePercent"] {
                    if let Some(v) = int(&spec["exempt"][field]).filter(|v| *v < 0) {
                        errs.push(FieldError::invalid(format!("spec.exempt.{field}"), v, "must be a non-negative number"));
                    }
                }
            }
            other => errs.push(FieldError::not_supported("spec.type", other, &["Exempt", "Limited"])),
        }
        errs
    }

    fn columns(&self) -> Vec<Column> {
        let limited = |o: &Value, field: &str| -> Value {
            match o["spec"]["limited"].get(field) {
                Some(v) => json!(v.to_string()),
                None => json!("<none>"),
            }
        };
        let queuing = |o: &Value, field: &str| -> Value {
            match o["spec"]["limited"]["limitResponse"]["queuing"].get(field) {
                Some(v) => json!(v.to_string()),
                None => json!("<none>"),
            }
        };
        vec![
            table::name_column(),
            Column::new("Type", "string", |o| json!(s(&o["spec"]["type"]))),
            Column::new("NominalConcurrencyShares", "string", move |o| limited(o, "nominalConcurrencyShares")),
            Column::new("Queues", "string", move |o| queuing(o, "queues")),
            Column::new("HandSize", "string", move |o| queuing(o, "handSize")),
            Column::new("QueueLengthLimit", "string", move |o| queuing(o, "queueLengthLimit")),
            table::age_column(),
        ]
    }
}

fn validate_limited(errs: &mut FieldErrors, limited: &Value) {
    if let Some(n) = int(&limited["nominalConcurrencyShares"]).filter(|n| *n < 0) {
        errs.push(FieldError::invalid("spec.limited.nominalConcurrencyShares", n, "must be a non-negative integer"));
    }
    if let Some(p) = int(&limited["lendablePercent"]).filter(|p| !(0..=100).contains(p)) {
        errs.push(FieldError::invalid("spec.limited.lendablePercent", p, "must be between 0 and 100, inclusive"));
    }
    if let Some(p) = int(&limited["borrowingLimitPercent"]).filter(|p| *p < 0) {
        errs.push(FieldError::invalid("spec.limited.borrowingLimitPercent", p, "if specified, must be a non-negative integer"));
    }
    let response = &limited["limitResponse"];
    match s(&response["type"]) {
        "Queue" => {
            let q = &response["queuing"];
            if q.is_null() {
                errs.push(FieldError::required("spec.limited.limitResponse.queuing", "must not be empty if limited.limitResponse.type is Queue"));
                return;
            }
            let path = "spec.limited.limitResponse.queuing";
            let queues = int(&q["queues"]).unwrap_or(0);
            let hand = int(&q["handSize"]).unwrap_or(0);
            if queues <= 0 {
                errs.push(FieldError::invalid(format!("{path}.queues"), queues, "must be positive"));
            }
            if int(&q["queueLengthLimit"]).unwrap_or(0) <= 0 {
                errs.push(FieldError::invalid(format!("{path}.queueLengthLimit"), q["queueLengthLimit"].clone(), "must be positive"));
            }
            if hand <= 0 {
                errs.push(FieldError::invalid(format!("{path}.handSize"), hand, "must be positive"));
            } else if queues > 0 && hand > queues {
                errs.push(FieldError::invalid(format!("{path}.handSize"), hand, format!("should not be greater than queues ({queues})")));
            }
        }
        "Reject" => {
            if !response["queuing"].is_null() {
                errs.push(FieldError::forbidden("spec.limited.limitResponse.queuing", "must be nil if limited.limitResponse.type is not Limited"));
            }
        }
        other => errs.push(FieldError::not_supported("spec.limited.limitResponse.type", other, &["Queue", "Reject"])),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flowschema_defaults_and_validation() {
        let ctx = ReqCtx::default();
        let mut fs = json!({"metadata": {"name": "x"}, "spec": {"priorityLevelConfiguration": {"name": "global-default"},
            "rules": [{"subjects": [{"kind": "Group", "group": {"name": "g"}}], "nonResourceRules": [{"verbs": ["*"], "nonResourceURLs": ["*"]}]}]}});
        FlowSchemaStrategy.apply_defaults(&mut fs);
        assert_eq!(fs["spec"]["matchingPrecedence"], 1000);
        assert!(FlowSchemaStrategy.validate(&ctx, &fs).is_empty());
        fs["spec"]["matchingPrecedence"] = json!(10001);
        fs["spec"]["priorityLevelConfiguration"]["name"] = json!("");
        assert_eq!(FlowSchemaStrategy.validate(&ctx, &fs).len(), 2);
    }

    #[test]
    fn plc_defaults_and_validation() {
        let ctx = ReqCtx::default();
        let mut plc = json!({"spec": {"type": "Limited", "limited": {"limitResponse": {"type": "Queue", "queuing": {}}}}});
        PriorityLevelConfigurationStrategy.apply_defaults(&mut plc);
        assert_eq!(plc["spec"]["limited"]["nominalConcurrencyShares"], 30);
        assert_eq!(plc["spec"]["limited"]["limitResponse"]["queuing"], json!({"queues": 64, "handSize": 8, "queueLengthLimit": 50}));
        assert!(PriorityLevelConfigurationStrategy.validate(&ctx, &plc).is_empty());
        let bad = json!({"spec": {"type": "Limited"}});
        assert_eq!(PriorityLevelConfigurationStrategy.validate(&ctx, &bad)[0].to_string(), "spec.limited: Required value: must not be empty when type is Limited");
    }
}
