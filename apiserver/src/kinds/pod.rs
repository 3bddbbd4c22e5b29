//! Pods: defaulting, validation, the immutable-spec update rule, status on create, graceful
//! deletion, field selectors and `kubectl get pods` columns.

use std::collections::BTreeMap;

use serde_json::{json, Value};

use super::common::{self, arr, int, s};
use super::podspec;
use crate::registry::strategy::default_fields;
use crate::registry::table::{self, Column};
use crate::registry::{ReqCtx, Strategy};
use crate::validation::{FieldError, FieldErrors};

pub struct PodStrategy;

/// The fields a pod update may change, as upstream's message lists them.
const UPDATABLE: &str = "`spec.containers[*].image`,`spec.initContainers[*].image`,`spec.activeDeadlineSeconds`,`spec.tolerations` (only additions to existing tolerations),`spec.terminationGracePeriodSeconds` (allow it to be set to 1 if it was previously negative)";

/// The tolerations upstream's DefaultTolerationSeconds admission adds.
const DEFAULT_TOLERATED_TAINTS: &[&str] = &["node.kubernetes.io/not-ready", "node.kubernetes.io/unreachable"];

fn tolerates(t: &Value, key: &str, effect: &str) -> bool {
    let effect_ok = s(&t["effect"]).is_empty() || s(&t["effect"]) == effect;
    let key_ok = match s(&t["operator"]) {
        "Exists" => s(&t["key"]).is_empty() || s(&t["key"]) == key,
        _ => s(&t["key"]) == key,
    };
    effect_ok && key_ok
}

impl Strategy for PodStrategy {
    fn apply_defaults(&self, obj: &mut Value) {
        let spec = common::child(obj, "spec");
        podspec::default_pod_spec(spec);
        podspec::default_pod_only(spec);
    }

    fn prepare_for_create(&self, _ctx: &ReqCtx, obj: &mut Value) {
        let qos = podspec::qos_class(&obj["spec"]);
        let mut status = json!({"phase": "Pending", "qosClass": qos});
        if !arr(&obj["spec"]["schedulingGates"]).is_empty() {
            status["conditions"] = json!([{
                "type": "PodScheduled",
                "status": "False",
                "reason": "SchedulingGated",
                "message": "Scheduling is blocked due to non-empty scheduling gates",
            }]);
        }
        obj["status"] = status;
        // DefaultTolerationSeconds admission: tolerate not-ready/unreachable for 300s.
        let spec = common::child(obj, "spec");
        for key in DEFAULT_TOLERATED_TAINTS {
            if !arr(&spec["tolerations"]).iter().any(|t| tolerates(t, key, "NoExecute")) {
                let tols = common::entry(spec, "tolerations");
                if !tols.is_array() {
                    *tols = json!([]);
                }
                tols.as_array_mut().expect("array").push(json!({
                    "key": key, "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300,
                }));
            }
        }
    }

    fn validate(&self, _ctx: &ReqCtx, obj: &Value) -> FieldErrors {
        let mut errs = Vec::new();
        podspec::validate_pod_spec(&mut errs, &obj["spec"], "spec");
        if !arr(&obj["spec"]["ephemeralContainers"]).is_empty() {
            errs.push(FieldError::forbidden("spec.ephemeralContainers", "cannot be set on create"));
        }
        errs
    }

    fn validate_update(&self, _ctx: &ReqCtx, new: &Value, old: &Value) -> FieldErrors {
        let mut errs = Vec::new();
        let (ns, os) = (&new["spec"], &old["spec"]);
        for list in ["containers", "initContainers"] {
            let (nc, oc) = (arr(&ns[list]), arr(&os[list]));
            if nc.len() == oc.len() {
                for (i, c) in nc.iter().enumerate() {
                    if s(&c["image"]).is_empty() {
                        errs.push(FieldError::required(format!("spec.{list}[{i}].image"), ""));
                    }
                }
            }
        }
        if let Some(old_ads) = int(&os["activeDeadlineSeconds"]) {
            match int(&ns["activeDeadlineSeconds"]) {
                None => errs.push(FieldError::invalid(
                    "spec.activeDeadlineSeconds",
                    Value::Null,
                    "must not update from a positive integer to nil value",
                )),
                Some(n) if n > old_ads => errs.push(FieldError::invalid(
                    "spec.activeDeadlineSeconds",
                    n,
                    "must be less than or equal to previous value",
                )),
                Some(n) if n <= 0 => errs.push(FieldError::invalid(
                    "spec.activeDeadlineSeconds",
                    n,
                    "must be between 1 and 4294967295, inclusive",
                )),
                _ => {}
            }
        }
        // Only additions to tolerations (tolerationSeconds may change).
        let new_tols = arr(&ns["tolerations"]);
        for old_t in arr(&os["tolerations"]) {
            let found = new_tols.iter().any(|t| {
                let mut a = old_t.clone();
                common::remove(&mut a, "tolerationSeconds");
                let mut b = t.clone();
                common::remove(&mut b, "tolerationSeconds");
                common::same(&a, &b)
            });
            if !found {
                errs.push(FieldError::forbidden(
                    "spec.tolerations",
                    "existing toleration can not be modified except its tolerationSeconds",
                ));
                break;
            }
        }
        podspec::validate_tolerations(&mut errs, &ns["tolerations"], "spec.tolerations");
        // Everything else is immutable: munge the updatable fields and compare.
        let mut munged = ns.clone();
        for list in ["containers", "initContainers"] {
            let olds = arr(&os[list]).to_vec();
            if let Some(items) = munged.get_mut(list).and_then(Value::as_array_mut) {
                if items.len() == olds.len() {
                    for (c, o) in items.iter_mut().zip(&olds) {
                        c["image"] = o["image"].clone();
                    }
                }
            }
        }
        for f in ["activeDeadlineSeconds", "tolerations"] {
            match os.get(f) {
                Some(v) => munged[f] = v.clone(),
                None => common::remove(&mut munged, f),
            }
        }
        if int(&os["terminationGracePeriodSeconds"]).is_some_and(|n| n < 0) && int(&munged["terminationGracePeriodSeconds"]) == Some(1) {
            munged["terminationGracePeriodSeconds"] = os["terminationGracePeriodSeconds"].clone();
        }
        if !common::same(&munged, os) {
            let changed: Vec<String> = changed_keys(&munged, os);
            errs.push(FieldError::forbidden(
                "spec",
                format!("pod updates may not change fields other than {UPDATABLE}\n(changed: {})", changed.join(", ")),
            ));
        }
        errs
    }

    fn validate_status_update(&self, _ctx: &ReqCtx, new: &Value, _old: &Value) -> FieldErrors {
        let mut errs = Vec::new();
        for (i, ip) in arr(&new["status"]["podIPs"]).iter().enumerate() {
            let v = s(&ip["ip"]);
            if !common::is_ip(v) {
                errs.push(FieldError::invalid(format!("status.podIPs[{i}].ip"), v, "must be a valid IP address"));
            }
        }
        errs
    }

    fn graceful_delete_period(&self, obj: &Value, requested: Option<i64>) -> Option<i64> {
        let mut period = requested.or_else(|| int(&obj["spec"]["terminationGracePeriodSeconds"])).unwrap_or(0);
        if s(&obj["spec"]["nodeName"]).is_empty() || matches!(s(&obj["status"]["phase"]), "Succeeded" | "Failed") {
            period = 0;
        }
        if period < 0 {
            period = 1;
        }
        (period > 0).then_some(period)
    }

    fn selectable_fields(&self, obj: &Value) -> BTreeMap<String, String> {
        let mut f = default_fields(obj);
        let spec = &obj["spec"];
        let status = &obj["status"];
        let pod_ip = arr(&status["podIPs"]).first().map(|p| s(&p["ip"])).unwrap_or_else(|| s(&status["podIP"]));
        for (k, v) in [
            ("spec.nodeName", s(&spec["nodeName"]).to_string()),
            ("spec.restartPolicy", s(&spec["restartPolicy"]).to_string()),
            ("spec.schedulerName", s(&spec["schedulerName"]).to_string()),
            ("spec.serviceAccountName", s(&spec["serviceAccountName"]).to_string()),
            ("spec.hostNetwork", common::truthy(&spec["hostNetwork"]).to_string()),
            ("status.phase", s(&status["phase"]).to_string()),
            ("status.podIP", pod_ip.to_string()),
            ("status.nominatedNodeName", s(&status["nominatedNodeName"]).to_string()),
        ] {
            f.insert(k.to_string(), v);
        }
        f
    }

    fn columns(&self) -> Vec<Column> {
        vec![
            table::name_column(),
            Column::new("Ready", "string", |o| json!(summary(o).ready)),
            Column::new("Status", "string", |o| json!(summary(o).reason)),
            Column::new("Restarts", "string", |o| json!(summary(o).restarts)),
            table::age_column(),
            Column::new("IP", "string", |o| {
                let ip = arr(&o["status"]["podIPs"]).first().map(|p| s(&p["ip"])).unwrap_or_default();
                table::or_none(ip)
            })
            .wide(),
            Column::new("Node", "string", |o| table::or_none(s(&o["spec"]["nodeName"]))).wide(),
            Column::new("Nominated Node", "string", |o| table::or_none(s(&o["status"]["nominatedNodeName"]))).wide(),
            Column::new("Readiness Gates", "string", readiness_gates).wide(),
        ]
    }
}

/// Top-level spec keys that differ (a short stand-in for upstream's full diff).
fn changed_keys(a: &Value, b: &Value) -> Vec<String> {
    let (a, b) = (common::semantic(a), common::semantic(b));
    let mut keys: Vec<String> = a.as_object().into_iter().flat_map(|m| m.keys()).chain(b.as_object().into_iter().flat_map(|m| m.keys())).cloned().collect();
    keys.sort();
    keys.dedup();
    keys.into_iter().filter(|k| a.get(k) != b.get(k)).map(|k| format!("spec.{k}")).collect()
}

fn readiness_gates(o: &Value) -> Value {
    let gates = arr(&o["spec"]["readinessGates"]);
    if gates.is_empty() {
        return json!("<none>");
    }
    let conds = &o["status"]["conditions"];
    let ok = gates
        .iter()
        .filter(|g| arr(conds).iter().find(|c| c["type"] == g["conditionType"]).is_some_and(|c| s(&c["status"]) == "True"))
        .count();
    json!(format!("{ok}/{}", gates.len()))
}

/// What `kubectl get pods` prints for one pod: Ready, Status and Restarts.
pub struct PodSummary {
    pub ready: String,
    pub reason: String,
    pub restarts: String,
}

fn is_restartable_init(spec: &Value, name: &str) -> bool {
    arr(&spec["initContainers"]).iter().any(|c| s(&c["name"]) == name && s(&c["restartPolicy"]) == "Always")
}

fn later(a: &mut String, ts: &Value) {
    if let Some(t) = ts.as_str() {
        // RFC 3339 timestamps in UTC compare lexicographically.
        if t > a.as_str() {
            *a = t.to_string();
        }
    }
}

/// Upstream's `printPod` logic.
pub fn summary(pod: &Value) -> PodSummary {
    let spec = &pod["spec"];
    let status = &pod["status"];
    let mut restarts = 0i64;
    let mut restartable_restarts = 0i64;
    let mut total = arr(&spec["containers"]).len();
    let mut ready = 0usize;
    let mut last_restart = String::new();
    let mut last_restartable_restart = String::new();
    let phase = s(&status["phase"]);
    let mut reason = if s(&status["reason"]).is_empty() { phase.to_string() } else { s(&status["reason"]).to_string() };
    if arr(&status["conditions"]).iter().any(|c| s(&c["type"]) == "PodScheduled" && s(&c["reason"]) == "SchedulingGated") {
        reason = "SchedulingGated".to_string();
    }
    total += arr(&spec["initContainers"]).iter().filter(|c| s(&c["restartPolicy"]) == "Always").count();
    let init_count = arr(&spec["initContainers"]).len();
    let mut initializing = false;
    for (i, c) in arr(&status["initContainerStatuses"]).iter().enumerate() {
        restarts += int(&c["restartCount"]).unwrap_or(0);
        let last_term = &c["lastState"]["terminated"];
        later(&mut last_restart, &last_term["finishedAt"]);
        let restartable = is_restartable_init(spec, s(&c["name"]));
        if restartable {
            restartable_restarts += int(&c["restartCount"]).unwrap_or(0);
            later(&mut last_restartable_restart, &last_term["finishedAt"]);
        }
        let term = &c["state"]["terminated"];
        let waiting = &c["state"]["waiting"];
        if term.is_object() && int(&term["exitCode"]).unwrap_or(0) == 0 {
            continue;
        }
        if restartable && common::truthy(&c["started"]) {
            if common::truthy(&c["ready"]) {
                ready += 1;
            }
            continue;
        }
        if term.is_object() {
            reason = if s(&term["reason"]).is_empty() {
                match int(&term["signal"]).unwrap_or(0) {
                    0 => format!("Init:ExitCode:{}", int(&term["exitCode"]).unwrap_or(0)),
                    sig => format!("Init:Signal:{sig}"),
                }
            } else {
                format!("Init:{}", s(&term["reason"]))
            };
        } else if waiting.is_object() && !s(&waiting["reason"]).is_empty() && s(&waiting["reason"]) != "PodInitializing" {
            reason = format!("Init:{}", s(&waiting["reason"]));
        } else {
            reason = format!("Init:{i}/{init_count}");
        }
        initializing = true;
        break;
    }
    let initialized = common::has_true_condition(&status["conditions"], "Initialized");
    if !initializing || initialized {
        restarts = restartable_restarts;
        last_restart = last_restartable_restart;
        let mut has_running = false;
        for c in arr(&status["containerStatuses"]).iter().rev() {
            restarts += int(&c["restartCount"]).unwrap_or(0);
            later(&mut last_restart, &c["lastState"]["terminated"]["finishedAt"]);
            let waiting = &c["state"]["waiting"];
            let term = &c["state"]["terminated"];
            if waiting.is_object() && !s(&waiting["reason"]).is_empty() {
                reason = s(&waiting["reason"]).to_string();
            } else if term.is_object() && !s(&term["reason"]).is_empty() {
                reason = s(&term["reason"]).to_string();
            } else if term.is_object() {
                reason = match int(&term["signal"]).unwrap_or(0) {
                    0 => format!("ExitCode:{}", int(&term["exitCode"]).unwrap_or(0)),
                    sig => format!("Signal:{sig}"),
                };
            } else if common::truthy(&c["ready"]) && c["state"]["running"].is_object() {
                has_running = true;
                ready += 1;
            }
        }
        if reason == "Completed" && has_running {
            reason = if common::has_true_condition(&status["conditions"], "Ready") { "Running" } else { "NotReady" }.to_string();
        }
    }
    let deleting = !pod["metadata"]["deletionTimestamp"].is_null();
    if deleting && s(&status["reason"]) == "NodeLost" {
        reason = "Unknown".to_string();
    } else if deleting && !matches!(phase, "Succeeded" | "Failed") {
        reason = "Terminating".to_string();
    }
    let restarts = if restarts != 0 && !last_restart.is_empty() {
        format!("{restarts} ({} ago)", table::age(&json!(last_restart)))
    } else {
        restarts.to_string()
    };
    PodSummary { ready: format!("{ready}/{total}"), reason, restarts }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod() -> Value {
        json!({"metadata": {"name": "p", "namespace": "default"}, "spec": {"containers": [{"name": "c", "image": "nginx"}]}})
    }

    fn created() -> Value {
        let mut p = pod();
        PodStrategy.apply_defaults(&mut p);
        PodStrategy.prepare_for_create(&ReqCtx::default(), &mut p);
        p
    }

    #[test]
    fn create_defaults_and_status() {
        let p = created();
        assert_eq!(p["status"], json!({"phase": "Pending", "qosClass": "BestEffort"}));
        assert_eq!(p["spec"]["serviceAccountName"], "default");
        assert_eq!(p["spec"]["enableServiceLinks"], true);
        assert_eq!(p["spec"]["tolerations"].as_array().unwrap().len(), 2);
        assert!(PodStrategy.validate(&ReqCtx::default(), &p).is_empty());
    }

    #[test]
    fn update_rules() {
        let old = created();
        let mut new = old.clone();
        new["spec"]["containers"][0]["image"] = json!("nginx:2");
        new["spec"]["activeDeadlineSeconds"] = json!(10);
        PodStrategy.apply_defaults(&mut new);
        assert!(PodStrategy.validate_update(&ReqCtx::default(), &new, &old).is_empty());
        new["spec"]["restartPolicy"] = json!("Never");
        let errs = PodStrategy.validate_update(&ReqCtx::default(), &new, &old);
        assert_eq!(errs.len(), 1);
        assert!(errs[0].to_string().starts_with("spec: Forbidden: pod updates may not change fields other than `spec.containers[*].image`"));
        let mut new = old.clone();
        new["spec"]["tolerations"] = json!([]);
        let errs = PodStrategy.validate_update(&ReqCtx::default(), &new, &old);
        assert!(errs.iter().any(|e| e.field == "spec.tolerations"));
    }

    #[test]
    fn graceful_delete() {
        let mut p = created();
        assert_eq!(PodStrategy.graceful_delete_period(&p, None), None);
        p["spec"]["nodeName"] = json!("n1");
        assert_eq!(PodStrategy.graceful_delete_period(&p, None), Some(30));
        assert_eq!(PodStrategy.graceful_delete_period(&p, Some(5)), Some(5));
        assert_eq!(PodStrategy.graceful_delete_period(&p, Some(0)), None);
        p["status"]["phase"] = json!("Succeeded");
        assert_eq!(PodStrategy.graceful_delete_period(&p, None), None);
    }

    #[test]
    fn fields_and_columns() {
        let mut p = created();
        p["status"]["podIPs"] = json!([{"ip": "10.0.0.1"}]);
        let f = PodStrategy.selectable_fields(&p);
        assert_eq!(f["status.phase"], "Pending");
        assert_eq!(f["status.podIP"], "10.0.0.1");
        assert_eq!(f["spec.hostNetwork"], "false");
        assert_eq!(PodStrategy.selectable_fields(&json!({})).len(), f.len());
        let cols = PodStrategy.columns();
        let names: Vec<&str> = cols.iter().map(|c| c.name.as_ref()).collect();
        assert_eq!(names, ["Name", "Ready", "Status", "Restarts", "Age", "IP", "Node", "Nominated Node", "Readiness Gates"]);
        p["status"]["phase"] = json!("Running");
        p["status"]["containerStatuses"] = json!([{"name": "c", "ready": true, "restartCount": 0, "state": {"running": {}}}]);
        let sum = summary(&p);
        assert_eq!((sum.ready.as_str(), sum.reason.as_str(), sum.restarts.as_str()), ("1/1", "Running", "0"));
        p["status"]["containerStatuses"] = json!([{"name": "c", "ready": false, "restartCount": 3, "state": {"waiting": {"reason": "CrashLoopBackOff"}}}]);
        let sum = summary(&p);
        assert_eq!((sum.ready.as_str(), sum.reason.as_str(), sum.restarts.as_str()), ("0/1", "CrashLoopBackOff", "3"));
        p["metadata"]["deletionTimestamp"] = json!("2024-01-01T00:00:00Z");
        assert_eq!(summary(&p).reason, "Terminating");
    }
}
