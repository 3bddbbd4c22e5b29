//! ReplicaSets (apps/v1): replicas default, selector/template validation, immutable
//! selector, `status.replicas` field selector, `kubectl get replicasets` columns.

use std::collections::BTreeMap;

use serde_json::Value;

use super::common::{self};
use super::workload;
use crate::registry::strategy::default_fields;
use crate::registry::table::{self, Column};
use crate::registry::{ReqCtx, Strategy};
use crate::validation::FieldErrors;

pub struct ReplicaSetStrategy;

fn validate_replica_set(rs: &Value) -> FieldErrors {
    let mut errs = Vec::new();
    let spec = &rs["spec"];
    common::nonnegative(&mut errs, &spec["replicas"], "spec.replicas");
    common::nonnegative(&mut errs, &spec["minReadySeconds"], "spec.minReadySeconds");
    workload::validate_selector(&mut errs, &spec["selector"], "spec.selector", "deployment");
    workload::validate_controller_template(&mut errs, &spec["selector"], &spec["template"], "spec.template", "ReplicaSet", false);
    errs
}

/// `status.replicas`, selectable on ReplicaSets and ReplicationControllers.
pub fn replicas_fields(obj: &Value) -> BTreeMap<String, String> {
    let mut f = default_fields(obj);
    f.insert("status.replicas".into(), obj["status"]["replicas"].as_i64().unwrap_or(0).to_string());
    f
}

/// Desired / Current / Ready, then Age (ReplicaSets and ReplicationControllers).
pub fn replica_columns() -> Vec<Column> {
    vec![
        table::name_column(),
        Column::new("Desired", "integer", |o| common::int_cell(&o["spec"]["replicas"])),
        Column::new("Current", "integer", |o| common::int_cell(&o["status"]["replicas"])),
        Column::new("Ready", "integer", |o| common::int_cell(&o["status"]["readyReplicas"])),
        table::age_column(),
    ]
}

impl Strategy for ReplicaSetStrategy {
    fn apply_defaults(&self, obj: &mut Value) {
        workload::default_replicas_and_template(obj);
    }

    fn validate(&self, _ctx: &ReqCtx, obj: &Value) -> FieldErrors {
        validate_replica_set(obj)
    }

    fn validate_update(&self, _ctx: &ReqCtx, new: &Value, old: &Value) -> FieldErrors {
        let mut errs = validate_replica_set(new);
        common::immutable(&mut errs, &new["spec"]["selector"], &old["spec"]["selector"], "spec.selector");
        errs
    }

    fn validate_status_update(&self, _ctx: &ReqCtx, new: &Value, _old: &Value) -> FieldErrors {
        let mut errs = Vec::new();
        for f in ["replicas", "fullyLabeledReplicas", "readyReplicas", "availableReplicas", "observedGeneration"] {
            common::nonnegative(&mut errs, &new["status"][f], &format!("status.{f}"));
        }
        errs
    }

    fn selectable_fields(&self, obj: &Value) -> BTreeMap<String, String> {
        replicas_fields(obj)
    }

    fn columns(&self) -> Vec<Column> {
        let mut cols = replica_columns();
        cols.extend(workload::wide_template_columns());
        cols
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn replica_set() {
        let ctx = ReqCtx::default();
        let mut rs = json!({"spec": {"selector": {"matchLabels": {"a": "b"}},
            "template": {"metadata": {"labels": {"a": "b"}}, "spec": {"containers": [{"name": "c", "image": "i"}]}}}});
        ReplicaSetStrategy.apply_defaults(&mut rs);
        assert_eq!(rs["spec"]["replicas"], 1);
        assert!(ReplicaSetStrategy.validate(&ctx, &rs).is_empty());
        let mut bad = rs.clone();
        bad["spec"]["template"]["spec"]["restartPolicy"] = json!("Never");
        let errs = ReplicaSetStrategy.validate(&ctx, &bad);
        assert_eq!(errs[0].to_string(), "spec.template.spec.restartPolicy: Unsupported value: \"Never\": supported values: \"Always\"");
        assert_eq!(ReplicaSetStrategy.selectable_fields(&rs)["status.replicas"], "0");
        let cols = ReplicaSetStrategy.columns();
        let names: Vec<&str> = cols.iter().map(|c| c.name.as_ref()).collect();
        assert_eq!(names, ["Name", "Desired", "Current", "Ready", "Age", "Containers", "Images", "Selector"]);
    }
}
