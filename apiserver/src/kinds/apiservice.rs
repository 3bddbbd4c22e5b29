//! APIServices (apiregistration.k8s.io/v1): upstream's `ValidateAPIService` rules and
//! `kubectl get` columns. The local APIServices (one per served group-version, `service:
//! null`) are kept by `crate::autoregister`. An APIService naming a service is stored, but
//! krust's aggregation layer does not proxy to it yet: its status says so.

use serde_json::{json, Value};

use super::common::{arr, s};
use crate::registry::table::{self, Column};
use crate::registry::{NameRule, ReqCtx, Strategy};
use crate::validation::{self, FieldError, FieldErrors};

pub struct ApiServiceStrategy;

impl Strategy for ApiServiceStrategy {
    /// `v1.` (the core group) is no DNS subdomain: upstream checks a path segment.
    fn name_rule(&self) -> NameRule {
        NameRule::PathSegment
    }

    fn validate(&self, _ctx: &ReqCtx, obj: &Value) -> FieldErrors {
        let mut errs = Vec::new();
        let spec = &obj["spec"];
        let (group, version) = (s(&spec["group"]), s(&spec["version"]));
        let name = s(&obj["metadata"]["name"]);
        if name != format!("{version}.{group}") {
            errs.push(FieldError::invalid("metadata.name", name, "must be `spec.version+\".\"+spec.group`"));
        }
        if !group.is_empty() {
            validation::push_invalid(&mut errs, "spec.group", group, validation::dns1123_subdomain(group));
        }
        if version.is_empty() {
            errs.push(FieldError::required("spec.version", ""));
        } else {
            validation::push_invalid(&mut errs, "spec.version", version, validation::dns1035_label(version));
        }
        let group_priority = spec["groupPriorityMinimum"].as_i64().unwrap_or(0);
        if !(1..=20000).contains(&group_priority) {
            errs.push(FieldError::invalid("spec.groupPriorityMinimum", group_priority, "must be positive and less than 20000"));
        }
        let version_priority = spec["versionPriority"].as_i64().unwrap_or(0);
        if !(1..=1000).contains(&version_priority) {
            errs.push(FieldError::invalid("spec.versionPriority", version_priority, "must be positive and less than 1000"));
        }
        let service = &spec["service"];
        if service.is_null() {
            if !s(&spec["caBundle"]).is_empty() {
                errs.push(FieldError::invalid("spec.caBundle", "", "local APIServices may not have a caBundle"));
            }
            if spec["insecureSkipTLSVerify"].as_bool().unwrap_or(false) {
                errs.push(FieldError::invalid("spec.insecureSkipTLSVerify", true, "local APIServices may not have insecureSkipTLSVerify"));
            }
        } else {
            if s(&service["namespace"]).is_empty() {
                errs.push(FieldError::required("spec.service.namespace", ""));
            }
            if s(&service["name"]).is_empty() {
                errs.push(FieldError::required("spec.service.name", ""));
            }
            if let Some(port) = service["port"].as_i64() {
                validation::push_invalid(&mut errs, "spec.service.port", &port.to_string(), super::common::port_num_errors(port));
            }
            if spec["insecureSkipTLSVerify"].as_bool().unwrap_or(false) && !s(&spec["caBundle"]).is_empty() {
                errs.push(FieldError::invalid("spec.insecureSkipTLSVerify", true, "may not be true if caBundle is present"));
            }
        }
        errs
    }

    fn validate_status_update(&self, _ctx: &ReqCtx, new: &Value, _old: &Value) -> FieldErrors {
        let mut errs = Vec::new();
        for (i, c) in arr(&new["status"]["conditions"]).iter().enumerate() {
            let status = s(&c["status"]);
            if !matches!(status, "True" | "False" | "Unknown") {
                errs.push(FieldError::not_supported(format!("status.conditions[{i}].status"), status, &["False", "True", "Unknown"]));
            }
        }
        errs
    }

    fn columns(&self) -> Vec<Column> {
        vec![
            table::name_column(),
            Column::new("Service", "string", |o| {
                let svc = &o["spec"]["service"];
                if svc.is_null() {
                    json!("Local")
                } else {
                    json!(format!("{}/{}", s(&svc["namespace"]), s(&svc["name"])))
                }
            }),
            Column::new("Available", "string", |o| {
                match arr(&o["status"]["conditions"]).iter().find(|c| c["type"] == "Available") {
                    None => json!("Unknown"),
                    Some(c) if c["status"] == "True" => json!("True"),
                    Some(c) => json!(format!("{} ({})", s(&c["status"]), s(&c["reason"]))),
                }
            }),
            table::age_column(),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validation() {
        let ctx = ReqCtx::default();
        let local = json!({"metadata": {"name": "v1.apps"}, "spec": {"group": "apps", "version": "v1", "groupPriorityMinimum": 17800, "versionPriority": 15}});
        assert!(ApiServiceStrategy.validate(&ctx, &local).is_empty());
        let core = json!({"metadata": {"name": "v1."}, "spec": {"version": "v1", "groupPriorityMinimum": 18000, "versionPriority": 1}});
        assert!(ApiServiceStrategy.validate(&ctx, &core).is_empty());
        let bad = json!({"metadata": {"name": "v1.x"}, "spec": {"group": "y", "version": "v1", "groupPriorityMinimum": 0, "versionPriority": 1,
            "service": {"namespace": "", "name": "svc"}}});
        let errs: Vec<String> = ApiServiceStrategy.validate(&ctx, &bad).iter().map(|e| e.to_string()).collect();
        assert_eq!(errs.len(), 3, "{errs:?}");
        assert_eq!((ApiServiceStrategy.columns()[1].cell)(&local), "Local");
    }
}
