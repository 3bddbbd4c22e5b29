//! Namespaces: the `kubernetes.io/metadata.name` label, the `kubernetes` finalizer and
//! `Active` phase on create, spec frozen on update, deletion held by `spec.finalizers`.

use std::collections::BTreeMap;

use serde_json::{json, Value};

use super::common::{self, arr, s};
use crate::registry::table::{self, Column};
use crate::registry::{NameRule, ReqCtx, Strategy};
use crate::validation::{self, FieldError, FieldErrors};

pub struct NamespaceStrategy;

const NAME_LABEL: &str = "kubernetes.io/metadata.name";

fn set_name_label(obj: &mut Value) {
    let name = s(&obj["metadata"]["name"]).to_string();
    if !name.is_empty() {
        let labels = common::child(common::child(obj, "metadata"), "labels");
        labels[NAME_LABEL] = json!(name);
    }
}

impl Strategy for NamespaceStrategy {
    fn apply_defaults(&self, obj: &mut Value) {
        set_name_label(obj);
    }

    fn prepare_for_create(&self, _ctx: &ReqCtx, obj: &mut Value) {
        obj["status"] = json!({"phase": "Active"});
        let spec = common::child(obj, "spec");
        let fins = common::entry(spec, "finalizers");
        if !fins.is_array() {
            *fins = json!([]);
        }
        let list = fins.as_array_mut().expect("array");
        if !list.iter().any(|f| f == "kubernetes") {
            list.push(json!("kubernetes"));
        }
    }

    fn validate(&self, _ctx: &ReqCtx, obj: &Value) -> FieldErrors {
        let mut errs = Vec::new();
        for (i, f) in arr(&obj["spec"]["finalizers"]).iter().enumerate() {
            let f = s(f);
            let path = format!("spec.finalizers[{i}]");
            validation::push_invalid(&mut errs, &path, f, validation::qualified_name(f));
            if !f.contains('/') && f != "kubernetes" {
                errs.push(FieldError::invalid(path, f, "name is neither a standard finalizer name nor is it fully qualified"));
            }
        }
        errs
    }

    fn prepare_for_update(&self, _ctx: &ReqCtx, new: &mut Value, old: &Value) {
        match old.get("spec") {
            Some(spec) => new["spec"] = spec.clone(),
            None => common::remove(new, "spec"),
        }
    }

    fn validate_status_update(&self, _ctx: &ReqCtx, new: &Value, old: &Value) -> FieldErrors {
        let mut errs = Vec::new();
        let deleting = !old["metadata"]["deletionTimestamp"].is_null();
        let phase = s(&new["status"]["phase"]);
        if !deleting && phase != "Active" {
            errs.push(FieldError::invalid("status.Phase", phase, "may only be 'Active' if `deletionTimestamp` is empty"));
        } else if deleting && phase != "Terminating" {
            errs.push(FieldError::invalid(
                "status.Phase",
                phase,
                "may only be 'Terminating' if `deletionTimestamp` is not empty",
            ));
        }
        errs
    }

    fn canonicalize(&self, obj: &mut Value) {
        // generateName: the name is known only now.
        set_name_label(obj);
    }

    fn name_rule(&self) -> NameRule {
        NameRule::Dns1123Label
    }

    fn blocks_deletion(&self, obj: &Value) -> bool {
        !arr(&obj["spec"]["finalizers"]).is_empty()
    }

    fn mark_terminating(&self, obj: &mut Value) {
        common::child(obj, "status")["phase"] = json!("Terminating");
    }

    fn selectable_fields(&self, obj: &Value) -> BTreeMap<String, String> {
        let mut f = crate::registry::strategy::default_fields(obj);
        f.insert("status.phase".into(), s(&obj["status"]["phase"]).to_string());
        f
    }

    fn columns(&self) -> Vec<Column> {
        vec![
            table::name_column(),
            Column::new("Status", "string", |o| json!(s(&o["status"]["phase"]))),
            table::age_column(),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn create_and_update() {
        let mut ns = json!({"metadata": {"name": "team-a"}});
        NamespaceStrategy.apply_defaults(&mut ns);
        NamespaceStrategy.prepare_for_create(&ReqCtx::default(), &mut ns);
        assert_eq!(ns["metadata"]["labels"][NAME_LABEL], "team-a");
        assert_eq!(ns["spec"]["finalizers"], json!(["kubernetes"]));
        assert_eq!(ns["status"]["phase"], "Active");
        assert!(NamespaceStrategy.validate(&ReqCtx::default(), &ns).is_empty());
        assert!(NamespaceStrategy.blocks_deletion(&ns));
        let mut new = json!({"metadata": {"name": "team-a"}, "spec": {"finalizers": []}});
        NamespaceStrategy.prepare_for_update(&ReqCtx::default(), &mut new, &ns);
        assert_eq!(new["spec"]["finalizers"], json!(["kubernetes"]));
        let bad = json!({"spec": {"finalizers": ["foo"]}});
        let errs = NamespaceStrategy.validate(&ReqCtx::default(), &bad);
        assert_eq!(errs[0].to_string(), "spec.finalizers[0]: Invalid value: \"foo\": name is neither a standard finalizer name nor is it fully qualified");
        NamespaceStrategy.mark_terminating(&mut ns);
        assert_eq!((NamespaceStrategy.columns()[1].cell)(&ns), "Terminating");
        assert_eq!(NamespaceStrategy.selectable_fields(&ns)["status.phase"], "Terminating");
    }
}
