//! Jobs (batch/v1): defaults (completions/parallelism, backoff limit, completion mode,
//! suspend, pod replacement policy), the generated selector and pod labels, validation
//! (restart policy OnFailure/Never, immutable selector/template/completions), the
//! `status.successful` field selector and `kubectl get jobs` columns.

use std::collections::BTreeMap;

use serde_json::{json, Value};

use super::common::{self, int, s};
use super::{podspec, workload};
use crate::registry::strategy::default_fields;
use crate::registry::table::{self, Column};
use crate::registry::{ReqCtx, Strategy};
use crate::validation::{FieldError, FieldErrors};

pub struct JobStrategy;

/// Defaults of a `JobSpec` shared with nothing else (`SetDefaults_Job`).
fn default_job(obj: &mut Value) {
    let template_labels = obj["spec"]["template"]["metadata"]["labels"].clone();
    let spec = common::child(obj, "spec");
    if spec["completions"].is_null() && spec["parallelism"].is_null() {
        spec["completions"] = json!(1);
        spec["parallelism"] = json!(1);
    }
    common::set_default(spec, "parallelism", 1);
    if spec["backoffLimit"].is_null() {
        spec["backoffLimit"] = json!(if spec["backoffLimitPerIndex"].is_null() { 6 } else { i32::MAX as i64 });
    }
    common::set_default(spec, "completionMode", "NonIndexed");
    common::set_default(spec, "suspend", false);
    let has_failure_policy = !spec["podFailurePolicy"].is_null();
    if has_failure_policy {
        common::each_mut(common::entry(spec, "podFailurePolicy"), "rules", |r| {
            common::each_mut(r, "onPodConditions", |c| common::set_default(c, "status", "True"));
        });
    }
    common::set_default(spec, "podReplacementPolicy", if has_failure_policy { "Failed" } else { "TerminatingOrFailed" });
    podspec::default_template(common::entry(spec, "template"));
    if template_labels.is_object() && common::len(&obj["metadata"]["labels"]) == 0 {
        common::child(obj, "metadata")["labels"] = template_labels;
    }
}

/// Upstream's `generateSelector`: job-name and controller-uid labels on the pods, a selector
/// on the controller uid.
fn generate_selector(obj: &mut Value) {
    let name = s(&obj["metadata"]["name"]).to_string();
    let uid = s(&obj["metadata"]["uid"]).to_string();
    let spec = common::child(obj, "spec");
    let labels = common::child(common::child(common::child(spec, "template"), "metadata"), "labels");
    for (k, v) in [
        ("job-name", &name),
        ("batch.kubernetes.io/job-name", &name),
        ("controller-uid", &uid),
        ("batch.kubernetes.io/controller-uid", &uid),
    ] {
        if labels.get(k).is_none() {
            labels[k] = json!(v);
        }
    }
    let ml = common::child(common::child(spec, "selector"), "matchLabels");
    if ml.get("batch.kubernetes.io/controller-uid").is_none() {
        ml["batch.kubernetes.io/controller-uid"] = json!(uid);
    }
}

/// Upstream's `validateJobSpec` (what job templates of CronJobs share), at `path`.
pub fn validate_job_spec(errs: &mut FieldErrors, spec: &Value, path: &str) {
    for f in ["parallelism", "completions", "activeDeadlineSeconds", "backoffLimit", "ttlSecondsAfterFinished"] {
        common::nonnegative(errs, &spec[f], &format!("{path}.{f}"));
    }
    if let Some(mode) = spec["completionMode"].as_str() {
        if mode != "NonIndexed" && mode != "Indexed" {
            errs.push(FieldError::not_supported(format!("{path}.completionMode"), mode, &["NonIndexed", "Indexed"]));
        }
        if mode == "Indexed" {
            if spec["completions"].is_null() {
                errs.push(FieldError::required(format!("{path}.completions"), "when completion mode is Indexed"));
            }
            if int(&spec["parallelism"]).is_some_and(|p| p > 100_000) {
                errs.push(FieldError::invalid(
                    format!("{path}.parallelism"),
                    spec["parallelism"].clone(),
                    "must be less than or equal to 100000 when completion mode is Indexed",
                ));
            }
        }
    }
    common::validate_optional_enum(errs, &spec["podReplacementPolicy"], &format!("{path}.podReplacementPolicy"), &["TerminatingOrFailed", "Failed"]);
    let template = &spec["template"];
    podspec::validate_template(errs, template, &format!("{path}.template"));
    let rp = s(&template["spec"]["restartPolicy"]);
    let rp_path = format!("{path}.template.spec.restartPolicy");
    if rp == "Always" || rp.is_empty() {
        errs.push(FieldError::required(rp_path, "valid values: \"OnFailure\", \"Never\""));
    } else if rp != "OnFailure" && rp != "Never" {
        errs.push(FieldError::not_supported(rp_path, rp, &["OnFailure", "Never"]));
    } else if !spec["podFailurePolicy"].is_null() && rp != "Never" {
        errs.push(FieldError::invalid(rp_path, rp, "only \"Never\" is supported when podFailurePolicy is specified"));
    }
}

fn validate_job(job: &Value) -> FieldErrors {
    let mut errs = Vec::new();
    let spec = &job["spec"];
    validate_job_spec(&mut errs, spec, "spec");
    let sel = &spec["selector"];
    if sel.is_null() {
        errs.push(FieldError::required("spec.selector", ""));
    } else {
        common::validate_label_selector(&mut errs, sel, "spec.selector");
        if common::selector_is_empty(sel) {
            errs.push(FieldError::required("spec.selector", ""));
        }
    }
    if !sel.is_null() {
        workload::check_template_labels(&mut errs, sel, &spec["template"], "spec.template", false);
    }
    if s(&spec["completionMode"]) == "Indexed" {
        if let Some(c) = int(&spec["completions"]).filter(|c| *c > 0) {
            let name = s(&job["metadata"]["name"]);
            let host = format!("{name}-{}", c - 1);
            if !crate::validation::dns1123_label(&host).is_empty() {
                errs.push(FieldError::invalid(
                    "metadata.name",
                    name,
                    format!("will not able to create pod with invalid DNS label: {host}"),
                ));
            }
        }
    }
    errs
}

impl Strategy for JobStrategy {
    fn apply_defaults(&self, obj: &mut Value) {
        default_job(obj);
    }

    fn prepare_for_create(&self, _ctx: &ReqCtx, obj: &mut Value) {
        if !common::truthy(&obj["spec"]["manualSelector"]) {
            generate_selector(obj);
        }
    }

    fn validate(&self, _ctx: &ReqCtx, obj: &Value) -> FieldErrors {
        validate_job(obj)
    }

    fn canonicalize(&self, obj: &mut Value) {
        // Upstream defaults again when reading from storage, so a Job without labels shows
        // its (generated) template labels.
        let template_labels = obj["spec"]["template"]["metadata"]["labels"].clone();
        if template_labels.is_object() && common::len(&obj["metadata"]["labels"]) == 0 {
            common::child(obj, "metadata")["labels"] = template_labels;
        }
    }

    fn validate_update(&self, _ctx: &ReqCtx, new: &Value, old: &Value) -> FieldErrors {
        let mut errs = validate_job(new);
        let (ns, os) = (&new["spec"], &old["spec"]);
        // Completions are immutable, except in tandem with parallelism for Indexed jobs.
        if s(&ns["completionMode"]) == "Indexed" {
            if !common::same(&ns["completions"], &os["completions"]) && !ns["completions"].is_null() && ns["completions"] != ns["parallelism"] {
                errs.push(FieldError::invalid(
                    "spec.completions",
                    ns["completions"].clone(),
                    "can only be modified in tandem with spec.parallelism",
                ));
            }
        } else {
            common::immutable(&mut errs, &ns["completions"], &os["completions"], "spec.completions");
        }
        common::immutable(&mut errs, &ns["selector"], &os["selector"], "spec.selector");
        // The template may change only in scheduling directives while suspended and never started.
        let mutable_scheduling = common::truthy(&os["suspend"]) && old["status"]["startTime"].is_null();
        let (mut nt, mut ot) = (ns["template"].clone(), os["template"].clone());
        if mutable_scheduling {
            for t in [&mut nt, &mut ot] {
                common::remove(common::child(t, "metadata"), "labels");
                common::remove(common::child(t, "metadata"), "annotations");
                for f in ["nodeSelector", "tolerations", "affinity", "schedulingGates"] {
                    common::remove(common::child(t, "spec"), f);
                }
            }
        }
        if !common::same(&nt, &ot) {
            errs.push(FieldError::invalid("spec.template", ns["template"].clone(), "field is immutable"));
        }
        for f in ["completionMode", "podFailurePolicy", "backoffLimitPerIndex", "managedBy", "successPolicy"] {
            common::immutable(&mut errs, &ns[f], &os[f], &format!("spec.{f}"));
        }
        errs
    }

    fn validate_status_update(&self, _ctx: &ReqCtx, new: &Value, _old: &Value) -> FieldErrors {
        let mut errs = Vec::new();
        for f in ["active", "succeeded", "failed", "ready", "terminating"] {
            common::nonnegative(&mut errs, &new["status"][f], &format!("status.{f}"));
        }
        errs
    }

    fn selectable_fields(&self, obj: &Value) -> BTreeMap<String, String> {
        let mut f = default_fields(obj);
        f.insert("status.successful".into(), int(&obj["status"]["succeeded"]).unwrap_or(0).to_string());
        f
    }

    fn columns(&self) -> Vec<Column> {
        let mut cols = vec![
            table::name_column(),
            Column::new("Status", "string", |o| json!(job_status(o))),
            Column::new("Completions", "string", |o| json!(completions(o))),
            Column::new("Duration", "string", |o| json!(duration(o))),
            table::age_column(),
        ];
        cols.extend(workload::wide_template_columns());
        cols
    }
}

fn job_status(o: &Value) -> &'static str {
    let conds = &o["status"]["conditions"];
    let has = |t: &str| common::has_true_condition(conds, t);
    if has("Complete") {
        "Complete"
    } else if has("Failed") {
        "Failed"
    } else if !o["metadata"]["deletionTimestamp"].is_null() {
        "Terminating"
    } else if has("Suspended") {
        "Suspended"
    } else if has("FailureTarget") {
        "FailureTarget"
    } else if has("SuccessCriteriaMet") {
        "SuccessCriteriaMet"
    } else {
        "Running"
    }
}

fn completions(o: &Value) -> String {
    let succeeded = int(&o["status"]["succeeded"]).unwrap_or(0);
    match int(&o["spec"]["completions"]) {
        Some(c) => format!("{succeeded}/{c}"),
        None => match int(&o["spec"]["parallelism"]).unwrap_or(0) {
            p if p > 1 => format!("{succeeded}/1 of {p}"),
            _ => format!("{succeeded}/1"),
        },
    }
}

fn duration(o: &Value) -> String {
    let parse = |v: &Value| v.as_str().and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok());
    let Some(start) = parse(&o["status"]["startTime"]) else { return String::new() };
    let end = parse(&o["status"]["completionTime"]).map(|t| t.with_timezone(&chrono::Utc)).unwrap_or_else(chrono::Utc::now);
    table::human_duration((end - start.with_timezone(&chrono::Utc)).num_seconds())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job() -> Value {
        json!({"metadata": {"name": "pi", "uid": "u-1"}, "spec": {"template": {"spec": {"restartPolicy": "Never", "containers": [{"name": "pi", "image": "perl"}]}}}})
    }

    fn created() -> Value {
        let mut j = job();
        JobStrategy.apply_defaults(&mut j);
        JobStrategy.prepare_for_create(&ReqCtx::default(), &mut j);
        j
    }

    #[test]
    fn defaults_and_selector() {
        let j = created();
        let spec = &j["spec"];
        assert_eq!((spec["completions"].clone(), spec["parallelism"].clone(), spec["backoffLimit"].clone()), (json!(1), json!(1), json!(6)));
        assert_eq!(spec["completionMode"], "NonIndexed");
        assert_eq!(spec["suspend"], false);
        assert_eq!(spec["podReplacementPolicy"], "TerminatingOrFailed");
        assert_eq!(spec["selector"]["matchLabels"]["batch.kubernetes.io/controller-uid"], "u-1");
        assert_eq!(spec["template"]["metadata"]["labels"]["job-name"], "pi");
        assert_eq!(spec["template"]["metadata"]["labels"]["controller-uid"], "u-1");
        assert!(JobStrategy.validate(&ReqCtx::default(), &j).is_empty(), "{:?}", JobStrategy.validate(&ReqCtx::default(), &j));
    }

    #[test]
    fn restart_policy_and_immutability() {
        let ctx = ReqCtx::default();
        let mut j = job();
        j["spec"]["template"]["spec"].as_object_mut().unwrap().remove("restartPolicy");
        JobStrategy.apply_defaults(&mut j);
        JobStrategy.prepare_for_create(&ctx, &mut j);
        let errs = JobStrategy.validate(&ctx, &j);
        assert_eq!(errs[0].to_string(), "spec.template.spec.restartPolicy: Required value: valid values: \"OnFailure\", \"Never\"");
        let old = created();
        let mut new = old.clone();
        new["spec"]["template"]["spec"]["containers"][0]["image"] = json!("perl:2");
        new["spec"]["completions"] = json!(3);
        let errs = JobStrategy.validate_update(&ctx, &new, &old);
        let fields: Vec<&str> = errs.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(fields, ["spec.completions", "spec.template"]);
    }

    #[test]
    fn columns() {
        let mut j = created();
        j["status"] = json!({"succeeded": 1, "conditions": [{"type": "Complete", "status": "True"}],
            "startTime": "2024-01-01T00:00:00Z", "completionTime": "2024-01-01T00:00:05Z"});
        let cells: Vec<Value> = JobStrategy.columns().iter().map(|c| (c.cell)(&j)).collect();
        assert_eq!(cells[1], "Complete");
        assert_eq!(cells[2], "1/1");
        assert_eq!(cells[3], "5s");
        assert_eq!(JobStrategy.selectable_fields(&j)["status.successful"], "1");
    }
}
