//! DaemonSets (apps/v1): defaults (RollingUpdate maxUnavailable 1 / maxSurge 0, history),
//! validation, immutable selector, the template-generation annotation, columns.

use serde_json::{json, Value};

use super::common::{self, s};
use super::{podspec, workload};
use crate::registry::table::{self, Column};
use crate::registry::{ReqCtx, Strategy};
use crate::validation::{FieldError, FieldErrors};

pub struct DaemonSetStrategy;

/// Where apps/v1 keeps the deprecated `templateGeneration`.
const TEMPLATE_GENERATION: &str = "deprecated.daemonset.template.generation";

fn validate_daemonset(ds: &Value) -> FieldErrors {
    let mut errs = Vec::new();
    let spec = &ds["spec"];
    let sel = &spec["selector"];
    if sel.is_null() {
        errs.push(FieldError::required("spec.selector", ""));
    } else {
        common::validate_label_selector(&mut errs, sel, "spec.selector");
        workload::check_template_labels(&mut errs, sel, &spec["template"], "spec.template", false);
        if common::selector_is_empty(sel) {
            errs.push(FieldError::invalid("spec.selector", sel.clone(), "empty selector is invalid for daemonset"));
        }
    }
    podspec::validate_template(&mut errs, &spec["template"], "spec.template");
    let rp = s(&spec["template"]["spec"]["restartPolicy"]);
    if rp != "Always" {
        errs.push(FieldError::not_supported("spec.template.spec.restartPolicy", rp, &["Always"]));
    }
    if let Some(ads) = spec["template"]["spec"]["activeDeadlineSeconds"].as_i64() {
        errs.push(FieldError::invalid(
            "spec.template.spec.activeDeadlineSeconds",
            ads,
            "activeDeadlineSeconds in DaemonSet is not Supported",
        ));
    }
    common::nonnegative(&mut errs, &spec["minReadySeconds"], "spec.minReadySeconds");
    let us = &spec["updateStrategy"];
    match s(&us["type"]) {
        "OnDelete" => {}
        "RollingUpdate" => {
            let ru = &us["rollingUpdate"];
            if ru.is_null() {
                errs.push(FieldError::required("spec.updateStrategy.rollingUpdate", ""));
            } else {
                let p = "spec.updateStrategy.rollingUpdate";
                let (mu, ms) = (&ru["maxUnavailable"], &ru["maxSurge"]);
                common::validate_int_or_percent(&mut errs, mu, &format!("{p}.maxUnavailable"));
                common::validate_int_or_percent(&mut errs, ms, &format!("{p}.maxSurge"));
                common::not_more_than_100_percent(&mut errs, mu, &format!("{p}.maxUnavailable"));
                common::not_more_than_100_percent(&mut errs, ms, &format!("{p}.maxSurge"));
                let has_unavailable = common::int_or_percent_value(mu).unwrap_or(0) != 0;
                let has_surge = common::int_or_percent_value(ms).unwrap_or(0) != 0;
                if has_unavailable && has_surge {
                    errs.push(FieldError::invalid(format!("{p}.maxSurge"), ms.clone(), "may not be set when maxUnavailable is non-zero"));
                } else if !has_unavailable && !has_surge {
                    errs.push(FieldError::required(format!("{p}.maxUnavailable"), "cannot be 0 when maxSurge is 0"));
                }
            }
        }
        _ => errs.push(FieldError::not_supported("spec.updateStrategy", us.clone(), &["RollingUpdate", "OnDelete"])),
    }
    common::nonnegative(&mut errs, &spec["revisionHistoryLimit"], "spec.revisionHistoryLimit");
    errs
}

fn set_template_generation(obj: &mut Value, generation: i64) {
    let annotations = common::child(common::child(obj, "metadata"), "annotations");
    annotations[TEMPLATE_GENERATION] = json!(generation.to_string());
}

impl Strategy for DaemonSetStrategy {
    fn apply_defaults(&self, obj: &mut Value) {
        let spec = common::child(obj, "spec");
        let us = common::child(spec, "updateStrategy");
        common::set_default(us, "type", "RollingUpdate");
        if s(&us["type"]) == "RollingUpdate" {
            let ru = common::child(us, "rollingUpdate");
            common::set_default(ru, "maxUnavailable", 1);
            common::set_default(ru, "maxSurge", 0);
        }
        common::set_default(spec, "revisionHistoryLimit", 10);
        podspec::default_template(common::entry(spec, "template"));
    }

    fn prepare_for_create(&self, _ctx: &ReqCtx, obj: &mut Value) {
        set_template_generation(obj, 1);
    }

    fn prepare_for_update(&self, _ctx: &ReqCtx, new: &mut Value, old: &Value) {
        let old_gen = s(&old["metadata"]["annotations"][TEMPLATE_GENERATION]).parse::<i64>().unwrap_or(0);
        let generation = if common::same(&new["spec"]["template"], &old["spec"]["template"]) { old_gen } else { old_gen + 1 };
        set_template_generation(new, generation);
    }

    fn validate(&self, _ctx: &ReqCtx, obj: &Value) -> FieldErrors {
        validate_daemonset(obj)
    }

    fn validate_update(&self, _ctx: &ReqCtx, new: &Value, old: &Value) -> FieldErrors {
        let mut errs = validate_daemonset(new);
        common::immutable(&mut errs, &new["spec"]["selector"], &old["spec"]["selector"], "spec.selector");
        errs
    }

    fn validate_status_update(&self, _ctx: &ReqCtx, new: &Value, _old: &Value) -> FieldErrors {
        let mut errs = Vec::new();
        for f in [
            "currentNumberScheduled", "numberMisscheduled", "desiredNumberScheduled", "numberReady",
            "updatedNumberScheduled", "numberAvailable", "numberUnavailable", "observedGeneration",
        ] {
            common::nonnegative(&mut errs, &new["status"][f], &format!("status.{f}"));
        }
        errs
    }

    fn columns(&self) -> Vec<Column> {
        let mut cols = vec![
            table::name_column(),
            Column::new("Desired", "integer", |o| common::int_cell(&o["status"]["desiredNumberScheduled"])),
            Column::new("Current", "integer", |o| common::int_cell(&o["status"]["currentNumberScheduled"])),
            Column::new("Ready", "integer", |o| common::int_cell(&o["status"]["numberReady"])),
            Column::new("Up-to-date", "integer", |o| common::int_cell(&o["status"]["updatedNumberScheduled"])),
            Column::new("Available", "integer", |o| common::int_cell(&o["status"]["numberAvailable"])),
            Column::new("Node Selector", "string", |o| table::map_to_selector(&o["spec"]["template"]["spec"]["nodeSelector"])),
            table::age_column(),
        ];
        cols.extend(workload::wide_template_columns());
        cols
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn daemonset() {
        let ctx = ReqCtx::default();
        let mut ds = json!({"metadata": {"name": "agent"}, "spec": {"selector": {"matchLabels": {"app": "a"}},
            "template": {"metadata": {"labels": {"app": "a"}}, "spec": {"containers": [{"name": "c", "image": "i"}]}}}});
        DaemonSetStrategy.apply_defaults(&mut ds);
        DaemonSetStrategy.prepare_for_create(&ctx, &mut ds);
        assert_eq!(ds["spec"]["updateStrategy"], json!({"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 1, "maxSurge": 0}}));
        assert_eq!(ds["spec"]["revisionHistoryLimit"], 10);
        assert_eq!(ds["metadata"]["annotations"][TEMPLATE_GENERATION], "1");
        assert!(DaemonSetStrategy.validate(&ctx, &ds).is_empty(), "{:?}", DaemonSetStrategy.validate(&ctx, &ds));
        let mut new = ds.clone();
        new["spec"]["template"]["spec"]["containers"][0]["image"] = json!("i:2");
        DaemonSetStrategy.prepare_for_update(&ctx, &mut new, &ds);
        assert_eq!(new["metadata"]["annotations"][TEMPLATE_GENERATION], "2");
        new["spec"]["updateStrategy"]["rollingUpdate"]["maxSurge"] = json!(1);
        let errs = DaemonSetStrategy.validate_update(&ctx, &new, &ds);
        assert_eq!(errs[0].to_string(), "spec.updateStrategy.rollingUpdate.maxSurge: Invalid value: 1: may not be set when maxUnavailable is non-zero");
        let cols = DaemonSetStrategy.columns();
        let names: Vec<&str> = cols.iter().map(|c| c.name.as_ref()).collect();
        assert_eq!(names, ["Name", "Desired", "Current", "Ready", "Up-to-date", "Available", "Node Selector", "Age", "Containers", "Images", "Selector"]);
    }
}
