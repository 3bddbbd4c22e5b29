//! Nodes: status kept on create (kubelets register with it), taint and CIDR validation,
//! `spec.unschedulable` field selector and `kubectl get nodes` columns.

use std::collections::{BTreeMap, BTreeSet, HashSet};

use serde_json::{json, Value};

use super::common::{self, arr, s};
use crate::registry::table::{self, Column};
use crate::registry::{ReqCtx, Strategy};
use crate::validation::{self, FieldError, FieldErrors};

pub struct NodeStrategy;

const EFFECTS: &[&str] = &["NoSchedule", "PreferNoSchedule", "NoExecute"];

fn is_cidr(v: &str) -> bool {
    let Some((ip, bits)) = v.split_once('/') else { return false };
    let Ok(ip) = ip.parse::<std::net::IpAddr>() else { return false };
    let max = if ip.is_ipv4() { 32 } else { 128 };
    bits.parse::<u8>().is_ok_and(|b| b <= max)
}

fn validate_node(node: &Value) -> FieldErrors {
    let mut errs = Vec::new();
    let spec = &node["spec"];
    let mut seen = HashSet::new();
    for (i, t) in arr(&spec["taints"]).iter().enumerate() {
        let tp = format!("spec.taints[{i}]");
        let key = s(&t["key"]);
        validation::push_invalid(&mut errs, &format!("{tp}.key"), key, validation::qualified_name(key));
        let v = s(&t["value"]);
        let msgs = validation::label_value(v);
        if !msgs.is_empty() {
            errs.push(FieldError::invalid(format!("{tp}.value"), v, msgs.join(";")));
        }
        common::validate_enum(&mut errs, &t["effect"], &format!("{tp}.effect"), EFFECTS);
        if !seen.insert((key.to_string(), s(&t["effect"]).to_string())) {
            let mut e = FieldError::duplicate(tp, t.clone());
            e.detail = "taints must be unique by key and effect pair".into();
            errs.push(e);
        }
    }
    let cidrs = arr(&spec["podCIDRs"]);
    for (i, c) in cidrs.iter().enumerate() {
        if !is_cidr(s(c)) {
            errs.push(FieldError::invalid(format!("spec.podCIDRs[{i}]"), s(c), "must be a valid CIDR value, (e.g. 10.9.8.0/24 or 2001:db8::/64)"));
        }
    }
    if cidrs.len() > 2 {
        errs.push(FieldError::invalid("spec.podCIDRs", spec["podCIDRs"].clone(), "may specify no more than one CIDR for each IP family"));
    }
    let pod_cidr = s(&spec["podCIDR"]);
    if !pod_cidr.is_empty() && cidrs.first().map(s) != Some(pod_cidr) {
        errs.push(FieldError::invalid("spec.podCIDRs", spec["podCIDRs"].clone(), "podCIDRs[0] must match podCIDR"));
    }
    errs
}

impl Strategy for NodeStrategy {
    fn apply_defaults(&self, obj: &mut Value) {
        // SetDefaults_NodeStatus: allocatable defaults to capacity.
        if obj["status"]["capacity"].is_object() && obj["status"]["allocatable"].is_null() {
            let cap = obj["status"]["capacity"].clone();
            obj["status"]["allocatable"] = cap;
        }
        let spec = common::child(obj, "spec");
        let cidr = s(&spec["podCIDR"]).to_string();
        if !cidr.is_empty() && arr(&spec["podCIDRs"]).is_empty() {
            spec["podCIDRs"] = json!([cidr]);
        }
    }

    fn keep_status_on_create(&self) -> bool {
        true
    }

    fn validate(&self, _ctx: &ReqCtx, obj: &Value) -> FieldErrors {
        validate_node(obj)
    }

    fn validate_update(&self, _ctx: &ReqCtx, new: &Value, old: &Value) -> FieldErrors {
        let mut errs = validate_node(new);
        let (ns, os) = (&new["spec"], &old["spec"]);
        let old_cidrs = arr(&os["podCIDRs"]);
        if !old_cidrs.is_empty() && !common::same(&ns["podCIDRs"], &os["podCIDRs"]) {
            errs.push(FieldError::forbidden("spec.podCIDRs", "node updates may not change podCIDR except from \"\" to valid"));
        }
        let old_pid = s(&os["providerID"]);
        if !old_pid.is_empty() && s(&ns["providerID"]) != old_pid {
            errs.push(FieldError::forbidden("spec.providerID", "node updates may not change providerID except from \"\" to valid"));
        }
        errs
    }

    fn selectable_fields(&self, obj: &Value) -> BTreeMap<String, String> {
        let mut f = crate::registry::strategy::default_fields(obj);
        f.insert("spec.unschedulable".into(), common::truthy(&obj["spec"]["unschedulable"]).to_string());
        f
    }

    fn columns(&self) -> Vec<Column> {
        vec![
            table::name_column(),
            Column::new("Status", "string", |o| json!(node_status(o))),
            Column::new("Roles", "string", |o| {
                let roles = node_roles(o);
                json!(if roles.is_empty() { "<none>".to_string() } else { roles.join(",") })
            }),
            table::age_column(),
            Column::new("Version", "string", |o| json!(s(&o["status"]["nodeInfo"]["kubeletVersion"]))),
            Column::new("Internal-IP", "string", |o| json!(address(o, "InternalIP"))).wide(),
            Column::new("External-IP", "string", |o| json!(address(o, "ExternalIP"))).wide(),
            Column::new("OS-Image", "string", |o| node_info(o, "osImage")).wide(),
            Column::new("Kernel-Version", "string", |o| node_info(o, "kernelVersion")).wide(),
            Column::new("Container-Runtime", "string", |o| node_info(o, "containerRuntimeVersion")).wide(),
        ]
    }
}

fn node_info(o: &Value, k: &str) -> Value {
    let v = s(&o["status"]["nodeInfo"][k]);
    json!(if v.is_empty() { "<unknown>" } else { v })
}

/// `Ready`, `NotReady` or `Unknown`, plus `SchedulingDisabled` when cordoned.
pub fn node_status(o: &Value) -> String {
    let mut status: Vec<&str> = Vec::new();
    if let Some(c) = arr(&o["status"]["conditions"]).iter().rev().find(|c| s(&c["type"]) == "Ready") {
        status.push(if s(&c["status"]) == "True" { "Ready" } else { "NotReady" });
    }
    if status.is_empty() {
        status.push("Unknown");
    }
    if common::truthy(&o["spec"]["unschedulable"]) {
        status.push("SchedulingDisabled");
    }
    status.join(",")
}

/// Upstream's `findNodeRoles`: `node-role.kubernetes.io/<role>` labels and `kubernetes.io/role`.
fn node_roles(o: &Value) -> Vec<String> {
    let mut roles = BTreeSet::new();
    if let Some(labels) = o["metadata"]["labels"].as_object() {
        for (k, v) in labels {
            if let Some(role) = k.strip_prefix("node-role.kubernetes.io/") {
                if !role.is_empty() {
                    roles.insert(role.to_string());
                }
            } else if k == "kubernetes.io/role" && !s(v).is_empty() {
                roles.insert(s(v).to_string());
            }
        }
    }
    roles.into_iter().collect()
}

fn address(o: &Value, kind: &str) -> String {
    arr(&o["status"]["addresses"])
        .iter()
        .find(|a| s(&a["type"]) == kind)
        .map(|a| s(&a["address"]).to_string())
        .unwrap_or_else(|| "<none>".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_rules_and_columns() {
        let mut node = json!({
            "metadata": {"name": "n1", "labels": {"node-role.kubernetes.io/control-plane": ""}},
            "spec": {"podCIDR": "10.244.0.0/24", "taints": [{"key": "a", "effect": "NoSchedule"}, {"key": "a", "effect": "NoSchedule"}]},
            "status": {"capacity": {"cpu": "2"}, "conditions": [{"type": "Ready", "status": "True"}],
                "addresses": [{"type": "InternalIP", "address": "10.0.0.5"}], "nodeInfo": {"kubeletVersion": "v1.33.0"}},
        });
        NodeStrategy.apply_defaults(&mut node);
        assert!(NodeStrategy.keep_status_on_create());
        assert_eq!(node["status"]["allocatable"]["cpu"], "2");
        assert_eq!(node["spec"]["podCIDRs"], json!(["10.244.0.0/24"]));
        let errs = NodeStrategy.validate(&ReqCtx::default(), &node);
        assert_eq!(errs.len(), 1);
        assert!(errs[0].to_string().starts_with("spec.taints[1]: Duplicate value"));
        let cells: Vec<Value> = NodeStrategy.columns().iter().map(|c| (c.cell)(&node)).collect();
        assert_eq!(cells[1], "Ready");
        assert_eq!(cells[2], "control-plane");
        assert_eq!(cells[4], "v1.33.0");
        assert_eq!(cells[5], "10.0.0.5");
        assert_eq!(cells[6], "<none>");
        assert_eq!(cells[7], "<unknown>");
        node["spec"]["unschedulable"] = json!(true);
        assert_eq!(node_status(&node), "Ready,SchedulingDisabled");
        assert_eq!(NodeStrategy.selectable_fields(&node)["spec.unschedulable"], "true");
        let mut new = node.clone();
        new["spec"]["podCIDRs"] = json!(["10.245.0.0/24"]);
        new["spec"]["podCIDR"] = json!("10.245.0.0/24");
        new["spec"]["taints"] = json!([]);
        let errs = NodeStrategy.validate_update(&ReqCtx::default(), &new, &node);
        assert_eq!(errs[0].field, "spec.podCIDRs");
    }
}
