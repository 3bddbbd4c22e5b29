//! StatefulSets (apps/v1): defaults (pod management, update strategy, PVC retention,
//! replicas, history, claim templates), validation, the limited set of updatable spec
//! fields, `kubectl get statefulsets` columns.

use serde_json::{json, Value};

use super::common::{self, arr, s};
use super::{podspec, workload};
use crate::registry::table::{self, Column};
use crate::registry::{ReqCtx, Strategy};
use crate::validation::{FieldError, FieldErrors};

pub struct StatefulSetStrategy;

fn validate_statefulset(sts: &Value) -> FieldErrors {
    let mut errs = Vec::new();
    let spec = &sts["spec"];
    match s(&spec["podManagementPolicy"]) {
        "" => errs.push(FieldError::required("spec.podManagementPolicy", "")),
        "OrderedReady" | "Parallel" => {}
        other => errs.push(FieldError::invalid("spec.podManagementPolicy", other, "must be 'OrderedReady' or 'Parallel'")),
    }
    let us = &spec["updateStrategy"];
    match s(&us["type"]) {
        "" => errs.push(FieldError::required("spec.updateStrategy", "")),
        "OnDelete" => {
            if !us["rollingUpdate"].is_null() {
                errs.push(FieldError::invalid(
                    "spec.updateStrategy.rollingUpdate",
                    us["rollingUpdate"].clone(),
                    "only allowed for updateStrategy 'RollingUpdate'",
                ));
            }
        }
        "RollingUpdate" => {
            let ru = &us["rollingUpdate"];
            common::nonnegative(&mut errs, &ru["partition"], "spec.updateStrategy.rollingUpdate.partition");
            if !ru["maxUnavailable"].is_null() {
                let mu = &ru["maxUnavailable"];
                common::validate_int_or_percent(&mut errs, mu, "spec.updateStrategy.rollingUpdate.maxUnavailable");
                if common::int_or_percent_value(mu) == Some(0) {
                    errs.push(FieldError::invalid("spec.updateStrategy.rollingUpdate.maxUnavailable", mu.clone(), "must be greater than 0"));
                }
                common::not_more_than_100_percent(&mut errs, mu, "spec.updateStrategy.rollingUpdate.maxUnavailable");
            }
        }
        _ => errs.push(FieldError::invalid("spec.updateStrategy", us.clone(), "must be 'RollingUpdate' or 'OnDelete'")),
    }
    let policy = &spec["persistentVolumeClaimRetentionPolicy"];
    for f in ["whenDeleted", "whenScaled"] {
        common::validate_optional_enum(
            &mut errs,
            &policy[f],
            &format!("spec.persistentVolumeClaimRetentionPolicy.{f}"),
            &["Retain", "Delete"],
        );
    }
    common::nonnegative(&mut errs, &spec["replicas"], "spec.replicas");
    common::nonnegative(&mut errs, &spec["minReadySeconds"], "spec.minReadySeconds");
    common::nonnegative(&mut errs, &spec["ordinals"]["start"], "spec.ordinals.start");
    workload::validate_selector(&mut errs, &spec["selector"], "spec.selector", "statefulset");
    let template = &spec["template"];
    workload::check_template_labels(&mut errs, &spec["selector"], template, "spec.template", false);
    podspec::validate_template(&mut errs, template, "spec.template");
    workload::validate_always_restart(&mut errs, template, "spec.template", "StatefulSet");
    for (i, t) in arr(&spec["volumeClaimTemplates"]).iter().enumerate() {
        let name = s(&t["metadata"]["name"]);
        let path = format!("spec.volumeClaimTemplates[{i}].metadata.name");
        if name.is_empty() {
            errs.push(FieldError::required(path, "name or generateName is required"));
        } else {
            common::dns1123_subdomain(&mut errs, name, &path);
        }
    }
    errs
}

impl Strategy for StatefulSetStrategy {
    fn apply_defaults(&self, obj: &mut Value) {
        let spec = common::child(obj, "spec");
        common::set_default(spec, "podManagementPolicy", "OrderedReady");
        let us = common::child(spec, "updateStrategy");
        if s(&us["type"]).is_empty() {
            us["type"] = json!("RollingUpdate");
            if us["rollingUpdate"].is_null() {
                us["rollingUpdate"] = json!({});
            }
        }
        if s(&us["type"]) == "RollingUpdate" && us["rollingUpdate"].is_object() {
            common::set_default(common::entry(us, "rollingUpdate"), "partition", 0);
        }
        let policy = common::child(spec, "persistentVolumeClaimRetentionPolicy");
        common::set_default(policy, "whenDeleted", "Retain");
        common::set_default(policy, "whenScaled", "Retain");
        common::set_default(spec, "replicas", 1);
        common::set_default(spec, "revisionHistoryLimit", 10);
        podspec::default_template(common::entry(spec, "template"));
        common::each_mut(spec, "volumeClaimTemplates", |t| {
            super::volume::default_pvc(t);
        });
    }

    fn validate(&self, _ctx: &ReqCtx, obj: &Value) -> FieldErrors {
        validate_statefulset(obj)
    }

    fn validate_update(&self, _ctx: &ReqCtx, new: &Value, old: &Value) -> FieldErrors {
        let mut errs = validate_statefulset(new);
        let mut munged = new["spec"].clone();
        for f in [
            "replicas", "template", "updateStrategy", "minReadySeconds", "ordinals", "revisionHistoryLimit",
            "persistentVolumeClaimRetentionPolicy",
        ] {
            match old["spec"].get(f) {
                Some(v) => munged[f] = v.clone(),
                None => common::remove(&mut munged, f),
            }
        }
        if !common::same(&munged, &old["spec"]) {
            errs.push(FieldError::forbidden(
                "spec",
                "updates to statefulset spec for fields other than 'replicas', 'ordinals', 'template', 'updateStrategy', 'revisionHistoryLimit', 'persistentVolumeClaimRetentionPolicy' and 'minReadySeconds' are forbidden",
            ));
        }
        errs
    }

    fn validate_status_update(&self, _ctx: &ReqCtx, new: &Value, _old: &Value) -> FieldErrors {
        let mut errs = Vec::new();
        for f in ["replicas", "readyReplicas", "currentReplicas", "updatedReplicas", "availableReplicas", "observedGeneration"] {
            common::nonnegative(&mut errs, &new["status"][f], &format!("status.{f}"));
        }
        errs
    }

    fn columns(&self) -> Vec<Column> {
        vec![
            table::name_column(),
            Column::new("Ready", "string", |o| common::ratio(&o["status"]["readyReplicas"], &o["spec"]["replicas"])),
            table::age_column(),
            Column::new("Containers", "string", workload::containers_cell).wide(),
            Column::new("Images", "string", workload::images_cell).wide(),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sts() -> Value {
        let mut s = json!({"spec": {"serviceName": "db", "selector": {"matchLabels": {"app": "db"}},
            "template": {"metadata": {"labels": {"app": "db"}}, "spec": {"containers": [{"name": "c", "image": "pg"}]}},
            "volumeClaimTemplates": [{"metadata": {"name": "data"}, "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}}]}});
        StatefulSetStrategy.apply_defaults(&mut s);
        s
    }

    #[test]
    fn defaults_and_updates() {
        let ctx = ReqCtx::default();
        let s = sts();
        assert_eq!(s["spec"]["podManagementPolicy"], "OrderedReady");
        assert_eq!(s["spec"]["updateStrategy"], json!({"type": "RollingUpdate", "rollingUpdate": {"partition": 0}}));
        assert_eq!(s["spec"]["persistentVolumeClaimRetentionPolicy"], json!({"whenDeleted": "Retain", "whenScaled": "Retain"}));
        assert_eq!(s["spec"]["replicas"], 1);
        assert_eq!(s["spec"]["revisionHistoryLimit"], 10);
        assert_eq!(s["spec"]["volumeClaimTemplates"][0]["spec"]["volumeMode"], "Filesystem");
        assert_eq!(s["spec"]["volumeClaimTemplates"][0]["status"]["phase"], "Pending");
        assert!(StatefulSetStrategy.validate(&ctx, &s).is_empty(), "{:?}", StatefulSetStrategy.validate(&ctx, &s));
        let mut new = s.clone();
        new["spec"]["replicas"] = json!(3);
        new["spec"]["template"]["spec"]["containers"][0]["image"] = json!("pg:16");
        assert!(StatefulSetStrategy.validate_update(&ctx, &new, &s).is_empty());
        new["spec"]["serviceName"] = json!("other");
        let errs = StatefulSetStrategy.validate_update(&ctx, &new, &s);
        assert!(errs[0].to_string().starts_with("spec: Forbidden: updates to statefulset spec for fields other than 'replicas'"));
    }
}
