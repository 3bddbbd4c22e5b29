//! HorizontalPodAutoscalers (autoscaling/v2 and v1): defaults (minReplicas, the CPU
//! metric, behavior rules), replica bounds and target reference, `kubectl get hpa` columns.

use serde_json::{json, Value};

use super::common::{self, arr, int, s};
use crate::registry::table::{self, Column};
use crate::registry::{ReqCtx, Strategy};
use crate::validation::{self, FieldError, FieldErrors};

/// autoscaling/v2.
pub struct HpaStrategy;
/// autoscaling/v1.
pub struct HpaV1Strategy;

fn validate_common(errs: &mut FieldErrors, spec: &Value) {
    if let Some(min) = int(&spec["minReplicas"]).filter(|m| *m < 1) {
        errs.push(FieldError::invalid("spec.minReplicas", min, "must be greater than or equal to 1"));
    }
    let max = int(&spec["maxReplicas"]).unwrap_or(0);
    if max < 1 {
        errs.push(FieldError::invalid("spec.maxReplicas", max, "must be greater than 0"));
    }
    if int(&spec["minReplicas"]).is_some_and(|min| max < min) {
        errs.push(FieldError::invalid("spec.maxReplicas", max, "must be greater than or equal to `minReplicas`"));
    }
    let r = &spec["scaleTargetRef"];
    for f in ["kind", "name"] {
        let v = s(&r[f]);
        let p = format!("spec.scaleTargetRef.{f}");
        if v.is_empty() {
            errs.push(FieldError::required(p, ""));
        } else {
            validation::push_invalid(errs, &p, v, validation::path_segment_name(v));
        }
    }
}

/// Fills unset fields of scaling rules from upstream's defaults.
fn default_rules(rules: &mut Value, defaults: Value) {
    if rules.is_null() {
        *rules = defaults;
        return;
    }
    for (k, v) in defaults.as_object().expect("object") {
        if rules[k.as_str()].is_null() {
            rules[k.as_str()] = v.clone();
        }
    }
}

impl Strategy for HpaStrategy {
    fn apply_defaults(&self, obj: &mut Value) {
        let spec = common::child(obj, "spec");
        common::set_default(spec, "minReplicas", 1);
        if arr(&spec["metrics"]).is_empty() {
            spec["metrics"] = json!([{"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 80}}}]);
        }
        if spec["behavior"].is_object() {
            let b = common::entry(spec, "behavior");
            default_rules(common::entry(b, "scaleUp"), json!({
                "stabilizationWindowSeconds": 0, "selectPolicy": "Max",
                "policies": [{"type": "Pods", "value": 4, "periodSeconds": 15}, {"type": "Percent", "value": 100, "periodSeconds": 15}],
            }));
            default_rules(common::entry(b, "scaleDown"), json!({
                "selectPolicy": "Max", "policies": [{"type": "Percent", "value": 100, "periodSeconds": 15}],
            }));
        }
    }

    fn validate(&self, _ctx: &ReqCtx, obj: &Value) -> FieldErrors {
        let mut errs = Vec::new();
        validate_common(&mut errs, &obj["spec"]);
        for (i, m) in arr(&obj["spec"]["metrics"]).iter().enumerate() {
            common::validate_enum(&mut errs, &m["type"], &format!("spec.metrics[{i}].type"), &["ContainerResource", "External", "Object", "Pods", "Resource"]);
        }
        errs
    }

    fn columns(&self) -> Vec<Column> {
        hpa_columns(|o| json!(targets_v2(o)))
    }
}

impl Strategy for HpaV1Strategy {
    /// v1 shares the v2 store: converted on the way in and out.
    fn to_storage(&self, obj: Value) -> Value {
        super::hpa_v1::v1_to_v2(obj)
    }

    fn from_storage(&self, obj: Value) -> Value {
        super::hpa_v1::v2_to_v1(obj)
    }

    fn apply_defaults(&self, obj: &mut Value) {
        common::set_default(common::child(obj, "spec"), "minReplicas", 1);
    }

    fn validate(&self, _ctx: &ReqCtx, obj: &Value) -> FieldErrors {
        let mut errs = Vec::new();
        validate_common(&mut errs, &obj["spec"]);
        if let Some(t) = int(&obj["spec"]["targetCPUUtilizationPercentage"]).filter(|t| *t < 1) {
            errs.push(FieldError::invalid("spec.targetCPUUtilizationPercentage", t, "must be greater than 0"));
        }
        errs
    }

    fn columns(&self) -> Vec<Column> {
        hpa_columns(|o| {
            let current = int(&o["status"]["currentCPUUtilizationPercentage"]).map_or("<unknown>".into(), |c| format!("{c}%"));
            let target = int(&o["spec"]["targetCPUUtilizationPercentage"]).map_or("<auto>".into(), |t| format!("{t}%"));
            json!(format!("cpu: {current}/{target}"))
        })
    }
}

fn hpa_columns(targets: fn(&Value) -> Value) -> Vec<Column> {
    vec![
        table::name_column(),
        Column::new("Reference", "string", |o| {
            json!(format!("{}/{}", s(&o["spec"]["scaleTargetRef"]["kind"]), s(&o["spec"]["scaleTargetRef"]["name"])))
        }),
        Column::new("Targets", "string", targets),
        Column::new("MinPods", "string", |o| json!(int(&o["spec"]["minReplicas"]).map_or("<unset>".into(), |m| m.to_string()))),
        Column::new("MaxPods", "string", |o| common::int_cell(&o["spec"]["maxReplicas"])),
        Column::new("Replicas", "string", |o| common::int_cell(&o["status"]["currentReplicas"])),
        table::age_column(),
    ]
}

/// `kubectl`'s `formatHPAMetrics` for autoscaling/v2.
fn targets_v2(o: &Value) -> String {
    let specs = arr(&o["spec"]["metrics"]);
    let statuses = arr(&o["status"]["currentMetrics"]);
    if specs.is_empty() {
        return "<none>".into();
    }
    let pct = |v: &Value| int(v).map(|n| format!("{n}%"));
    let list: Vec<String> = specs
        .iter()
        .enumerate()
        .map(|(i, m)| {
            let st = statuses.get(i).unwrap_or(&Value::Null);
            let unknown = || "<unknown>".to_string();
            match s(&m["type"]) {
                t @ ("Resource" | "ContainerResource") => {
                    let key = if t == "Resource" { "resource" } else { "containerResource" };
                    let (spec, cur) = (&m[key], &st[key]["current"]);
                    let name = s(&spec["name"]);
                    if let Some(avg) = spec["target"]["averageValue"].as_str() {
                        format!("{name}: {}/{avg}", cur["averageValue"].as_str().map_or_else(unknown, str::to_string))
                    } else {
                        let target = pct(&spec["target"]["averageUtilization"]).unwrap_or_else(|| "<auto>".into());
                        format!("{name}: {}/{target}", pct(&cur["averageUtilization"]).unwrap_or_else(unknown))
                    }
                }
                t @ ("Pods" | "Object" | "External") => {
                    let key = match t {
                        "Pods" => "pods",
                        "Object" => "object",
                        _ => "external",
                    };
                    let target = &m[key]["target"];
                    let cur = &st[key]["current"];
                    let (tv, cv) = if target["averageValue"].is_string() {
                        (s(&target["averageValue"]).to_string(), cur["averageValue"].as_str().map_or_else(unknown, str::to_string))
                    } else {
                        (s(&target["value"]).to_string(), cur["value"].as_str().map_or_else(unknown, str::to_string))
                    };
                    format!("{cv}/{tv}")
                }
                _ => "<unknown type>".to_string(),
            }
        })
        .collect();
    if list.len() > 2 {
        format!("{} + {} more...", list[..2].join(", "), list.len() - 2)
    } else {
        list.join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hpa() {
        let ctx = ReqCtx::default();
        let mut h = json!({"spec": {"scaleTargetRef": {"kind": "Deployment", "name": "web", "apiVersion": "apps/v1"}, "maxReplicas": 5}});
        HpaStrategy.apply_defaults(&mut h);
        assert_eq!(h["spec"]["minReplicas"], 1);
        assert_eq!(h["spec"]["metrics"][0]["resource"]["target"]["averageUtilization"], 80);
        assert!(HpaStrategy.validate(&ctx, &h).is_empty());
        h["spec"]["minReplicas"] = json!(6);
        assert_eq!(HpaStrategy.validate(&ctx, &h)[0].to_string(), "spec.maxReplicas: Invalid value: 5: must be greater than or equal to `minReplicas`");
        let cells: Vec<Value> = HpaStrategy.columns().iter().map(|c| (c.cell)(&h)).collect();
        assert_eq!(cells[1], "Deployment/web");
        assert_eq!(cells[2], "cpu: <unknown>/80%");
        let errs = HpaV1Strategy.validate(&ctx, &json!({"spec": {"maxReplicas": 1}}));
        assert_eq!(errs[0].to_string(), "spec.scaleTargetRef.kind: Required value");
    }
}
