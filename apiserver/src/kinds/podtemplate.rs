//! PodTemplates: pod template defaults and validation, `kubectl get podtemplates` columns.

use serde_json::{json, Value};

use super::common::{self};
use super::podspec;
use crate::registry::table::{self, Column};
use crate::registry::{ReqCtx, Strategy};
use crate::validation::FieldErrors;

pub struct PodTemplateStrategy;

impl Strategy for PodTemplateStrategy {
    fn apply_defaults(&self, obj: &mut Value) {
        podspec::default_template(common::child(obj, "template"));
    }

    fn validate(&self, _ctx: &ReqCtx, obj: &Value) -> FieldErrors {
        let mut errs = Vec::new();
        podspec::validate_template(&mut errs, &obj["template"], "template");
        errs
    }

    fn columns(&self) -> Vec<Column> {
        vec![
            table::name_column(),
            Column::new("Containers", "string", |o| json!(common::container_cells(&o["template"]["spec"]).0)),
            Column::new("Images", "string", |o| json!(common::container_cells(&o["template"]["spec"]).1)),
            Column::new("Pod Labels", "string", |o| table::map_to_selector(&o["template"]["metadata"]["labels"])),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn template() {
        let ctx = ReqCtx::default();
        let mut pt = json!({"template": {"metadata": {"labels": {"a": "b"}}, "spec": {"containers": [{"name": "c", "image": "i"}]}}});
        PodTemplateStrategy.apply_defaults(&mut pt);
        assert_eq!(pt["template"]["spec"]["restartPolicy"], "Always");
        assert!(PodTemplateStrategy.validate(&ctx, &pt).is_empty());
        let cells: Vec<Value> = PodTemplateStrategy.columns().iter().map(|c| (c.cell)(&pt)).collect();
        assert_eq!(cells[1..], [json!("c"), json!("i"), json!("a=b")]);
    }
}
