//! ReplicationControllers (core/v1): selector and labels default from the template,
//! replicas 1, map-selector validation, `status.replicas` field selector, columns.

use std::collections::BTreeMap;

use serde_json::Value;

use super::common::{self};
use super::replicaset::{replica_columns, replicas_fields};
use super::workload;
use crate::registry::table::{self, Column};
use crate::registry::{ReqCtx, Strategy};
use crate::validation::{FieldError, FieldErrors};

pub struct ReplicationControllerStrategy;

fn validate_rc(rc: &Value) -> FieldErrors {
    let mut errs = Vec::new();
    let spec = &rc["spec"];
    common::nonnegative(&mut errs, &spec["minReadySeconds"], "spec.minReadySeconds");
    if common::len(&spec["selector"]) == 0 {
        errs.push(FieldError::required("spec.selector", ""));
    }
    common::nonnegative(&mut errs, &spec["replicas"], "spec.replicas");
    workload::validate_controller_template(&mut errs, &spec["selector"], &spec["template"], "spec.template", "ReplicationController", true);
    errs
}

impl Strategy for ReplicationControllerStrategy {
    fn apply_defaults(&self, obj: &mut Value) {
        let labels = obj["spec"]["template"]["metadata"]["labels"].clone();
        if labels.is_object() {
            let spec = common::child(obj, "spec");
            if common::len(&spec["selector"]) == 0 {
                spec["selector"] = labels.clone();
            }
            let meta = common::child(obj, "metadata");
            if common::len(&meta["labels"]) == 0 {
                meta["labels"] = labels;
            }
        }
        workload::default_replicas_and_template(obj);
    }

    fn validate(&self, _ctx: &ReqCtx, obj: &Value) -> FieldErrors {
        validate_rc(obj)
    }

    fn selectable_fields(&self, obj: &Value) -> BTreeMap<String, String> {
        replicas_fields(obj)
    }

    fn columns(&self) -> Vec<Column> {
        let mut cols = replica_columns();
        cols.push(Column::new("Containers", "string", workload::containers_cell).wide());
        cols.push(Column::new("Images", "string", workload::images_cell).wide());
        cols.push(Column::new("Selector", "string", |o| table::map_to_selector(&o["spec"]["selector"])).wide());
        cols
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn selector_defaults_from_template() {
        let mut rc = json!({"spec": {"template": {"metadata": {"labels": {"app": "x"}}, "spec": {"containers": [{"name": "c", "image": "i"}]}}}});
        ReplicationControllerStrategy.apply_defaults(&mut rc);
        assert_eq!(rc["spec"]["selector"], json!({"app": "x"}));
        assert_eq!(rc["metadata"]["labels"], json!({"app": "x"}));
        assert_eq!(rc["spec"]["replicas"], 1);
        assert!(ReplicationControllerStrategy.validate(&ReqCtx::default(), &rc).is_empty());
        rc["spec"]["selector"] = json!({"app": "y"});
        let errs = ReplicationControllerStrategy.validate(&ReqCtx::default(), &rc);
        assert_eq!(errs[0].field, "spec.template.metadata.labels");
    }
}
