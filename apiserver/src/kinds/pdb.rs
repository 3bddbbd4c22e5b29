//! PodDisruptionBudgets (policy/v1): minAvailable xor maxUnavailable, selector, eviction
//! policy, `kubectl get pdb` columns.

use serde_json::{json, Value};

use super::common::{self};
use crate::registry::table::{self, Column};
use crate::registry::{ReqCtx, Strategy};
use crate::validation::{FieldError, FieldErrors};

pub struct PdbStrategy;

impl Strategy for PdbStrategy {
    fn validate(&self, _ctx: &ReqCtx, obj: &Value) -> FieldErrors {
        let mut errs = Vec::new();
        let spec = &obj["spec"];
        if !spec["minAvailable"].is_null() && !spec["maxUnavailable"].is_null() {
            errs.push(FieldError::invalid("spec", spec.clone(), "minAvailable and maxUnavailable cannot be both set"));
        }
        for f in ["minAvailable", "maxUnavailable"] {
            if !spec[f].is_null() {
                common::validate_int_or_percent(&mut errs, &spec[f], &format!("spec.{f}"));
                common::not_more_than_100_percent(&mut errs, &spec[f], &format!("spec.{f}"));
            }
        }
        common::validate_label_selector(&mut errs, &spec["selector"], "spec.selector");
        common::validate_optional_enum(&mut errs, &spec["unhealthyPodEvictionPolicy"], "spec.unhealthyPodEvictionPolicy", &["AlwaysAllow", "IfHealthyBudget"]);
        errs
    }

    fn columns(&self) -> Vec<Column> {
        vec![
            table::name_column(),
            Column::new("Min Available", "string", |o| int_or_na(&o["spec"]["minAvailable"])),
            Column::new("Max Unavailable", "string", |o| int_or_na(&o["spec"]["maxUnavailable"])),
            Column::new("Allowed Disruptions", "integer", |o| common::int_cell(&o["status"]["disruptionsAllowed"])),
            table::age_column(),
        ]
    }
}

fn int_or_na(v: &Value) -> Value {
    match v {
        Value::Null => json!("N/A"),
        Value::Number(n) => json!(n.to_string()),
        other => other.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pdb() {
        let ctx = ReqCtx::default();
        let p = json!({"spec": {"minAvailable": 1, "maxUnavailable": "150%", "selector": {"matchLabels": {"a": "b"}}}});
        let msgs: Vec<String> = PdbStrategy.validate(&ctx, &p).iter().map(ToString::to_string).collect();
        assert!(msgs[0].ends_with("minAvailable and maxUnavailable cannot be both set"));
        assert_eq!(msgs[1], "spec.maxUnavailable: Invalid value: \"150%\": must not be greater than 100%");
        let cells: Vec<Value> = PdbStrategy.columns().iter().map(|c| (c.cell)(&p)).collect();
        assert_eq!(cells[1], "1");
        assert_eq!(cells[3], 0);
    }
}
