//! admissionregistration.k8s.io/v1: the CEL parts of upstream's validation. A webhook
//! configuration's `matchConditions[].expression` and a ValidatingAdmissionPolicy's
//! expressions (`validations[].expression` and `messageExpression`, `matchConditions`,
//! `variables`) must compile (`compilation failed: ...`); the rest of the objects' rules
//! are not checked.

use serde_json::Value;

use crate::admission::celexpr::{compile, compile_bool, POLICY_VARS, WEBHOOK_VARS};
use crate::registry::{ReqCtx, Strategy};
use crate::validation::{FieldError, FieldErrors};

/// Mutating and ValidatingWebhookConfiguration.
pub struct WebhookConfigurationStrategy;

fn items(v: &Value) -> impl Iterator<Item = (usize, &Value)> {
    v.as_array().into_iter().flatten().enumerate()
}

fn check(errs: &mut FieldErrors, field: String, expr: &Value, bool_result: bool, vars: &[&str]) {
    let Some(source) = expr.as_str() else { return };
    let res = if bool_result { compile_bool(source, vars).map(|_| ()) } else { compile(source, vars).map(|_| ()) };
    if let Err(e) = res {
        errs.push(FieldError::invalid(field, source, e));
    }
}

impl Strategy for WebhookConfigurationStrategy {
    fn validate(&self, _ctx: &ReqCtx, obj: &Value) -> FieldErrors {
        let mut errs = Vec::new();
        for (i, w) in items(&obj["webhooks"]) {
            for (j, c) in items(&w["matchConditions"]) {
                check(&mut errs, format!("webhooks[{i}].matchConditions[{j}].expression"), &c["expression"], true, WEBHOOK_VARS);
            }
        }
        errs
    }
}

/// ValidatingAdmissionPolicy.
pub struct ValidatingAdmissionPolicyStrategy;

impl Strategy for ValidatingAdmissionPolicyStrategy {
    fn validate(&self, _ctx: &ReqCtx, obj: &Value) -> FieldErrors {
        let mut errs = Vec::new();
        let spec = &obj["spec"];
        for (i, c) in items(&spec["matchConditions"]) {
            check(&mut errs, format!("spec.matchConditions[{i}].expression"), &c["expression"], true, POLICY_VARS);
        }
        for (i, c) in items(&spec["variables"]) {
            check(&mut errs, format!("spec.variables[{i}].expression"), &c["expression"], false, POLICY_VARS);
        }
        for (i, v) in items(&spec["validations"]) {
            check(&mut errs, format!("spec.validations[{i}].expression"), &v["expression"], true, POLICY_VARS);
            check(&mut errs, format!("spec.validations[{i}].messageExpression"), &v["messageExpression"], false, POLICY_VARS);
        }
        errs
    }

    fn validate_update(&self, ctx: &ReqCtx, new: &Value, _old: &Value) -> FieldErrors {
        self.validate(ctx, new)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn webhook_match_conditions_must_compile() {
        let ctx = ReqCtx::default();
        let ok = json!({"webhooks": [{"name": "a", "matchConditions": [{"name": "c", "expression": "object.metadata.namespace == 'production'"}]}]});
        assert!(WebhookConfigurationStrategy.validate(&ctx, &ok).is_empty());
        for bad in ["... [] bad expression", "undeclared.x == 1", "'not a bool'"] {
            let obj = json!({"webhooks": [{"name": "a", "matchConditions": [{"name": "c", "expression": bad}]}]});
            let errs = WebhookConfigurationStrategy.validate(&ctx, &obj);
            assert_eq!(errs.len(), 1, "{bad}");
            assert_eq!(errs[0].field, "webhooks[0].matchConditions[0].expression");
            assert!(errs[0].detail.starts_with("compilation failed: "), "{}", errs[0].detail);
        }
    }

    #[test]
    fn policy_expressions_must_compile() {
        let ctx = ReqCtx::default();
        let obj = json!({"spec": {"variables": [{"name": "r", "expression": "object.spec.replicas"}],
                                  "validations": [{"expression": "variables.r > 1", "messageExpression": "'x' +"}]}});
        let errs = ValidatingAdmissionPolicyStrategy.validate(&ctx, &obj);
        assert_eq!(errs.len(), 1);
        assert_eq!(errs[0].field, "spec.validations[0].messageExpression");
    }
}
