//! Deployments (apps/v1): defaults (replicas, RollingUpdate 25%/25%, history, progress
//! deadline), spec validation, immutable selector, `kubectl get deployments` columns.

use serde_json::Value;

use super::common::{self, int, s};
use super::{podspec, workload};
use crate::registry::table::{self, Column};
use crate::registry::{ReqCtx, Strategy};
use crate::validation::{FieldError, FieldErrors};

pub struct DeploymentStrategy;

fn validate_deployment(d: &Value) -> FieldErrors {
    let mut errs = Vec::new();
    let spec = &d["spec"];
    common::nonnegative(&mut errs, &spec["replicas"], "spec.replicas");
    workload::validate_selector(&mut errs, &spec["selector"], "spec.selector", "deployment");
    workload::validate_controller_template(&mut errs, &spec["selector"], &spec["template"], "spec.template", "ReplicaSet", false);
    let strategy = &spec["strategy"];
    match s(&strategy["type"]) {
        "Recreate" => {
            if !strategy["rollingUpdate"].is_null() {
                errs.push(FieldError::forbidden(
                    "spec.strategy.rollingUpdate",
                    "may not be specified when strategy `type` is 'Recreate'",
                ));
            }
        }
        "RollingUpdate" => {
            let ru = &strategy["rollingUpdate"];
            if ru.is_null() {
                errs.push(FieldError::required("spec.strategy.rollingUpdate", "this should be defaulted and never be nil"));
            } else {
                let (mu, ms) = (&ru["maxUnavailable"], &ru["maxSurge"]);
                common::validate_int_or_percent(&mut errs, mu, "spec.strategy.rollingUpdate.maxUnavailable");
                common::validate_int_or_percent(&mut errs, ms, "spec.strategy.rollingUpdate.maxSurge");
                if common::int_or_percent_value(mu) == Some(0) && common::int_or_percent_value(ms) == Some(0) {
                    errs.push(FieldError::invalid(
                        "spec.strategy.rollingUpdate.maxUnavailable",
                        mu.clone(),
                        "may not be 0 when `maxSurge` is 0",
                    ));
                }
                common::not_more_than_100_percent(&mut errs, mu, "spec.strategy.rollingUpdate.maxUnavailable");
            }
        }
        other => errs.push(FieldError::not_supported("spec.strategy", other, &["Recreate", "RollingUpdate"])),
    }
    common::nonnegative(&mut errs, &spec["minReadySeconds"], "spec.minReadySeconds");
    common::nonnegative(&mut errs, &spec["revisionHistoryLimit"], "spec.revisionHistoryLimit");
    if let Some(p) = int(&spec["progressDeadlineSeconds"]) {
        common::nonnegative(&mut errs, &spec["progressDeadlineSeconds"], "spec.progressDeadlineSeconds");
        if p <= int(&spec["minReadySeconds"]).unwrap_or(0) {
            errs.push(FieldError::invalid("spec.progressDeadlineSeconds", p, "must be greater than minReadySeconds"));
        }
    }
    errs
}

impl Strategy for DeploymentStrategy {
    fn apply_defaults(&self, obj: &mut Value) {
        let spec = common::child(obj, "spec");
        common::set_default(spec, "replicas", 1);
        let strategy = common::child(spec, "strategy");
        common::set_default(strategy, "type", "RollingUpdate");
        if s(&strategy["type"]) == "RollingUpdate" {
            let ru = common::child(strategy, "rollingUpdate");
            common::set_default(ru, "maxUnavailable", "25%");
            common::set_default(ru, "maxSurge", "25%");
        }
        common::set_default(spec, "revisionHistoryLimit", 10);
        common::set_default(spec, "progressDeadlineSeconds", 600);
        podspec::default_template(common::entry(spec, "template"));
    }

    fn validate(&self, _ctx: &ReqCtx, obj: &Value) -> FieldErrors {
        validate_deployment(obj)
    }

    fn validate_update(&self, _ctx: &ReqCtx, new: &Value, old: &Value) -> FieldErrors {
        let mut errs = validate_deployment(new);
        common::immutable(&mut errs, &new["spec"]["selector"], &old["spec"]["selector"], "spec.selector");
        errs
    }

    fn validate_status_update(&self, _ctx: &ReqCtx, new: &Value, _old: &Value) -> FieldErrors {
        let mut errs = Vec::new();
        let st = &new["status"];
        for f in ["replicas", "updatedReplicas", "readyReplicas", "availableReplicas", "unavailableReplicas", "observedGeneration"] {
            common::nonnegative(&mut errs, &st[f], &format!("status.{f}"));
        }
        errs
    }

    fn columns(&self) -> Vec<Column> {
        let mut cols = vec![
            table::name_column(),
            Column::new("Ready", "string", |o| common::ratio(&o["status"]["readyReplicas"], &o["spec"]["replicas"])),
            Column::new("Up-to-date", "integer", |o| common::int_cell(&o["status"]["updatedReplicas"])),
            Column::new("Available", "integer", |o| common::int_cell(&o["status"]["availableReplicas"])),
            table::age_column(),
        ];
        cols.extend(workload::wide_template_columns());
        cols
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn deployment() -> Value {
        json!({"metadata": {"name": "web"}, "spec": {
            "selector": {"matchLabels": {"app": "web"}},
            "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "c", "image": "nginx"}]}},
        }})
    }

    #[test]
    fn defaults_and_validation() {
        let ctx = ReqCtx::default();
        let mut d = deployment();
        DeploymentStrategy.apply_defaults(&mut d);
        assert_eq!(d["spec"]["replicas"], 1);
        assert_eq!(d["spec"]["strategy"], json!({"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"}}));
        assert_eq!(d["spec"]["revisionHistoryLimit"], 10);
        assert_eq!(d["spec"]["progressDeadlineSeconds"], 600);
        assert_eq!(d["spec"]["template"]["spec"]["restartPolicy"], "Always");
        assert!(DeploymentStrategy.validate(&ctx, &d).is_empty(), "{:?}", DeploymentStrategy.validate(&ctx, &d));
        let mut bad = d.clone();
        bad["spec"]["replicas"] = json!(-1);
        bad["spec"]["template"]["metadata"]["labels"]["app"] = json!("other");
        let errs: Vec<String> = DeploymentStrategy.validate(&ctx, &bad).iter().map(ToString::to_string).collect();
        assert_eq!(errs, vec![
            "spec.replicas: Invalid value: -1: must be greater than or equal to 0",
            "spec.template.metadata.labels: Invalid value: {\"app\":\"other\"}: `selector` does not match template `labels`",
        ]);
        let mut new = d.clone();
        new["spec"]["selector"]["matchLabels"]["tier"] = json!("x");
        new["spec"]["template"]["metadata"]["labels"]["tier"] = json!("x");
        let errs = DeploymentStrategy.validate_update(&ctx, &new, &d);
        assert_eq!(errs.len(), 1);
        assert_eq!(errs[0].field, "spec.selector");
        assert!(errs[0].to_string().ends_with("field is immutable"));
        let mut missing = deployment();
        missing["spec"].as_object_mut().unwrap().remove("selector");
        DeploymentStrategy.apply_defaults(&mut missing);
        let errs = DeploymentStrategy.validate(&ctx, &missing);
        assert_eq!(errs[0].to_string(), "spec.selector: Required value");
    }

    #[test]
    fn columns() {
        let mut d = deployment();
        DeploymentStrategy.apply_defaults(&mut d);
        d["status"] = json!({"readyReplicas": 1, "updatedReplicas": 1, "availableReplicas": 1});
        let cols = DeploymentStrategy.columns();
        let names: Vec<&str> = cols.iter().map(|c| c.name.as_ref()).collect();
        assert_eq!(names, ["Name", "Ready", "Up-to-date", "Available", "Age", "Containers", "Images", "Selector"]);
        let cells: Vec<Value> = cols.iter().map(|c| (c.cell)(&d)).collect();
        assert_eq!(cells[1], "1/1");
        assert_eq!(cells[5], "c");
        assert_eq!(cells[6], "nginx");
        assert_eq!(cells[7], "app=web");
    }
}
