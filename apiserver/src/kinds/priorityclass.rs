//! PriorityClasses (scheduling.k8s.io/v1): upstream's `ValidatePriorityClass` and
//! `ValidatePriorityClassUpdate` (value and preemptionPolicy immutable, the `system-` prefix
//! reserved for the two system classes, user values at most one billion), the default
//! preemption policy, and `kubectl get` columns. The system classes themselves are created at
//! start ([`SYSTEM_PRIORITY_CLASSES`]), as upstream's scheduling post-start hook does.

use serde_json::{json, Value};

use super::common::{immutable, s, set_default};
use crate::registry::table::{self, Column};
use crate::registry::{ReqCtx, Strategy};
use crate::validation::{FieldError, FieldErrors};

/// Largest value a user-defined PriorityClass may have (upstream's
/// `HighestUserDefinablePriority`).
pub const HIGHEST_USER_DEFINABLE_PRIORITY: i64 = 1_000_000_000;
/// Names starting so are reserved for the system classes.
pub const SYSTEM_PRIORITY_CLASS_PREFIX: &str = "system-";

/// The system PriorityClasses: name, value, description.
pub const SYSTEM_PRIORITY_CLASSES: &[(&str, i64, &str)] = &[
    ("system-node-critical", 2_000_001_000, "Used for system critical pods that must not be moved from their current node."),
    ("system-cluster-critical", 2_000_000_000, "Used for system critical pods that must run in the cluster, but can be moved to another node if necessary."),
];

/// The system classes as objects, for creation at start.
pub fn system_priority_classes() -> Vec<Value> {
    SYSTEM_PRIORITY_CLASSES
        .iter()
        .map(|(name, value, description)| {
            json!({
                "apiVersion": "scheduling.k8s.io/v1",
                "kind": "PriorityClass",
                "metadata": {"name": name},
                "value": value,
                "description": description,
            })
        })
        .collect()
}

/// Upstream's `IsKnownSystemPriorityClass`.
fn known_system_class(name: &str, value: i64, global_default: bool) -> Result<(), String> {
    match SYSTEM_PRIORITY_CLASSES.iter().find(|(n, _, _)| *n == name) {
        None => Err(format!("{name} is not a known system priority class")),
        Some((_, v, _)) if *v != value => Err(format!("value of {name} PriorityClass must be {v}")),
        Some(_) if global_default => Err(format!("globalDefault of {name} PriorityClass must be false")),
        Some(_) => Ok(()),
    }
}

pub struct PriorityClassStrategy;

impl Strategy for PriorityClassStrategy {
    fn apply_defaults(&self, obj: &mut Value) {
        set_default(obj, "preemptionPolicy", "PreemptLowerPriority");
    }

    fn validate(&self, _ctx: &ReqCtx, obj: &Value) -> FieldErrors {
        let mut errs = Vec::new();
        let name = s(&obj["metadata"]["name"]);
        let value = obj["value"].as_i64().unwrap_or(0);
        if name.starts_with(SYSTEM_PRIORITY_CLASS_PREFIX) {
            if let Err(e) = known_system_class(name, value, obj["globalDefault"].as_bool().unwrap_or(false)) {
                errs.push(FieldError::forbidden(
                    "metadata.name",
                    format!("priority class names with '{SYSTEM_PRIORITY_CLASS_PREFIX}' prefix are reserved for system use only. error: {e}"),
                ));
            }
        } else if value > HIGHEST_USER_DEFINABLE_PRIORITY {
            errs.push(FieldError::forbidden(
                "value",
                format!("maximum allowed value of a user defined priority is {HIGHEST_USER_DEFINABLE_PRIORITY}"),
            ));
        }
        if let Some(p) = obj.get("preemptionPolicy").filter(|p| !p.is_null()) {
            let policy = s(p);
            if policy.is_empty() {
                errs.push(FieldError::required("preemptionPolicy", ""));
            } else if !matches!(policy, "PreemptLowerPriority" | "Never") {
                errs.push(FieldError::not_supported("preemptionPolicy", policy, &["Never", "PreemptLowerPriority"]));
            }
        }
        errs
    }

    fn validate_update(&self, ctx: &ReqCtx, new: &Value, old: &Value) -> FieldErrors {
        let mut errs = self.validate(ctx, new);
        if new["value"] != old["value"] {
            errs.push(FieldError::forbidden("value", "may not be changed in an update."));
        }
        immutable(&mut errs, &new["preemptionPolicy"], &old["preemptionPolicy"], "preemptionPolicy");
        errs
    }

    fn columns(&self) -> Vec<Column> {
        vec![
            table::name_column(),
            Column::new("Value", "integer", |o| o["value"].clone()),
            Column::new("Global-Default", "boolean", |o| json!(o["globalDefault"].as_bool().unwrap_or(false))),
            table::age_column(),
            Column::new("PreemptionPolicy", "string", |o| json!(s(&o["preemptionPolicy"]))).wide(),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn value_is_immutable() {
        let ctx = ReqCtx::default();
        let mut old = json!({"metadata": {"name": "high"}, "value": 100});
        PriorityClassStrategy.apply_defaults(&mut old);
        assert_eq!(old["preemptionPolicy"], "PreemptLowerPriority");
        let mut new = old.clone();
        new["value"] = json!(1000);
        let errs = PriorityClassStrategy.validate_update(&ctx, &new, &old);
        assert_eq!(errs.len(), 1);
        assert_eq!(errs[0].to_string(), "value: Forbidden: may not be changed in an update.");
        new["value"] = json!(100);
        new["description"] = json!("changed");
        assert!(PriorityClassStrategy.validate_update(&ctx, &new, &old).is_empty());
    }

    #[test]
    fn reserved_names_and_values() {
        let ctx = ReqCtx::default();
        let too_high = json!({"metadata": {"name": "x"}, "value": 2_000_000_000i64});
        assert!(PriorityClassStrategy.validate(&ctx, &too_high)[0].to_string().contains("maximum allowed value of a user defined priority is 1000000000"));
        let fake_system = json!({"metadata": {"name": "system-x"}, "value": 5});
        assert!(PriorityClassStrategy.validate(&ctx, &fake_system)[0].to_string().contains("reserved for system use only"));
        for pc in system_priority_classes() {
            assert!(PriorityClassStrategy.validate(&ctx, &pc).is_empty());
        }
    }
}
