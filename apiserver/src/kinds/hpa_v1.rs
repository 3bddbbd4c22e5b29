//! Conversion of `autoscaling/v1` HorizontalPodAutoscalers, served from the same store as `autoscaling/v2`
//! (the storage version): converted on every write and read, as upstream converts through
//! its internal version. v1 only knows a CPU utilization target; v2-only fields (other
//! metrics, behavior, conditions) do not survive a write through v1 (upstream keeps them in
//! annotations; krust does not yet).

use serde_json::{json, Map, Value};

fn cpu_metric(key: &str, value: Value) -> Value {
    json!({"type": "Resource", "resource": {"name": "cpu", key: value}})
}

/// v1 → v2: the CPU target becomes a Resource metric.
pub fn v1_to_v2(mut obj: Value) -> Value {
    obj["apiVersion"] = json!("autoscaling/v2");
    if let Some(spec) = obj.get_mut("spec").and_then(Value::as_object_mut) {
        if let Some(cpu) = spec.remove("targetCPUUtilizationPercentage") {
            spec.insert("metrics".into(), json!([cpu_metric("target", json!({"type": "Utilization", "averageUtilization": cpu}))]));
        }
    }
    if let Some(status) = obj.get_mut("status").and_then(Value::as_object_mut) {
        if let Some(cpu) = status.remove("currentCPUUtilizationPercentage") {
            status.insert("currentMetrics".into(), json!([cpu_metric("current", json!({"averageUtilization": cpu}))]));
        }
    }
    obj
}

/// The CPU utilization of a v2 metric list entry, if it is one.
fn cpu_utilization(metrics: Option<&Value>, key: &str) -> Option<Value> {
    metrics?.as_array()?.iter().find_map(|m| {
        let r = &m["resource"];
        (m["type"] == "Resource" && r["name"] == "cpu")
            .then(|| r[key]["averageUtilization"].clone())
            .filter(|v| !v.is_null())
    })
}

/// v2 → v1: a CPU Resource metric becomes the CPU target; other v2 fields are dropped.
pub fn v2_to_v1(mut obj: Value) -> Value {
    obj["apiVersion"] = json!("autoscaling/v1");
    if let Some(spec) = obj.get_mut("spec").and_then(Value::as_object_mut) {
        let cpu = cpu_utilization(spec.get("metrics"), "target");
        spec.remove("metrics");
        spec.remove("behavior");
        if let Some(cpu) = cpu {
            spec.insert("targetCPUUtilizationPercentage".into(), cpu);
        }
    }
    if let Some(status) = obj.get_mut("status").and_then(Value::as_object_mut) {
        let cpu = cpu_utilization(status.get("currentMetrics"), "current");
        status.remove("currentMetrics");
        status.remove("conditions");
        if let Some(cpu) = cpu {
            status.insert("currentCPUUtilizationPercentage".into(), cpu);
        }
    }
    if obj.get("status").is_some_and(|s| s.as_object().is_some_and(Map::is_empty)) {
        obj.as_object_mut().map(|o| o.remove("status"));
    }
    obj
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_target_round_trips() {
        let v1 = json!({"apiVersion": "autoscaling/v1", "kind": "HorizontalPodAutoscaler", "metadata": {"name": "h"},
            "spec": {"scaleTargetRef": {"kind": "Deployment", "name": "web", "apiVersion": "apps/v1"},
                     "minReplicas": 1, "maxReplicas": 5, "targetCPUUtilizationPercentage": 50},
            "status": {"currentReplicas": 2, "desiredReplicas": 2, "currentCPUUtilizationPercentage": 40}});
        let v2 = v1_to_v2(v1.clone());
        assert_eq!(v2["spec"]["metrics"][0]["resource"]["target"]["averageUtilization"], 50);
        assert_eq!(v2["status"]["currentMetrics"][0]["resource"]["current"]["averageUtilization"], 40);
        assert!(v2["spec"].get("targetCPUUtilizationPercentage").is_none());
        assert_eq!(v2_to_v1(v2), v1);
    }
}
