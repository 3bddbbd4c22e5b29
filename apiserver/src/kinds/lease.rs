//! Leases (coordination.k8s.io/v1): duration and transition checks, Holder column.

use serde_json::{json, Value};

use super::common::{int, s};
use crate::registry::table::{self, Column};
use crate::registry::{ReqCtx, Strategy};
use crate::validation::{FieldError, FieldErrors};

pub struct LeaseStrategy;

impl Strategy for LeaseStrategy {
    fn validate(&self, _ctx: &ReqCtx, obj: &Value) -> FieldErrors {
        let mut errs = Vec::new();
        let spec = &obj["spec"];
        if let Some(d) = int(&spec["leaseDurationSeconds"]).filter(|d| *d <= 0) {
            errs.push(FieldError::invalid("spec.leaseDurationSeconds", d, "must be greater than 0"));
        }
        if let Some(t) = int(&spec["leaseTransitions"]).filter(|t| *t < 0) {
            errs.push(FieldError::invalid("spec.leaseTransitions", t, "must be greater than or equal to 0"));
        }
        if let Some(st) = spec["strategy"].as_str() {
            if st != "OldestEmulationVersion" {
                errs.push(FieldError::not_supported("spec.strategy", st, &["OldestEmulationVersion"]));
            }
        }
        errs
    }

    fn columns(&self) -> Vec<Column> {
        vec![
            table::name_column(),
            Column::new("Holder", "string", |o| json!(s(&o["spec"]["holderIdentity"]))),
            table::age_column(),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lease() {
        let ctx = ReqCtx::default();
        let l = json!({"spec": {"holderIdentity": "n1", "leaseDurationSeconds": 0}});
        assert_eq!(LeaseStrategy.validate(&ctx, &l)[0].to_string(), "spec.leaseDurationSeconds: Invalid value: 0: must be greater than 0");
        assert_eq!((LeaseStrategy.columns()[1].cell)(&l), "n1");
    }
}
