//! Rules shared by the controllers that stamp out pods from a template (ReplicaSet,
//! Deployment, StatefulSet, DaemonSet, Job, ReplicationController): selector checks,
//! template checks, and the table cells they have in common.

use serde_json::{json, Value};

use super::common::{self, s, selector_is_empty, selector_matches, validate_label_selector};
use super::podspec;
use crate::validation::{FieldError, FieldErrors};

/// Upstream's selector block for apps kinds: required, valid, non-empty
/// (`empty selector is invalid for <what>`).
pub fn validate_selector(errs: &mut FieldErrors, sel: &Value, path: &str, what: &str) {
    if sel.is_null() {
        errs.push(FieldError::required(path.to_string(), ""));
        return;
    }
    validate_label_selector(errs, sel, path);
    if selector_is_empty(sel) {
        errs.push(FieldError::invalid(path.to_string(), sel.clone(), format!("empty selector is invalid for {what}")));
    }
}

/// The template labels must match the selector (checked only for a non-empty selector).
pub fn check_template_labels(errs: &mut FieldErrors, sel: &Value, template: &Value, path: &str, map_selector: bool) {
    let labels = &template["metadata"]["labels"];
    let matches = if map_selector {
        common::map_selector_matches(sel, labels)
    } else {
        selector_matches(sel, labels)
    };
    let empty = if map_selector { common::len(sel) == 0 } else { sel.is_null() || selector_is_empty(sel) };
    if !empty && !matches {
        errs.push(FieldError::invalid(
            format!("{path}.metadata.labels"),
            labels.clone(),
            "`selector` does not match template `labels`",
        ));
    }
}

/// `ValidatePodTemplateSpecForReplicaSet`-style checks at `path` (`spec.template`): labels
/// match the selector, the pod template is valid, pods always restart and have no deadline.
/// `kind` names the owner in upstream's `activeDeadlineSeconds in <kind> is not Supported`.
pub fn validate_controller_template(
    errs: &mut FieldErrors,
    sel: &Value,
    template: &Value,
    path: &str,
    kind: &str,
    map_selector: bool,
) {
    if template.is_null() {
        errs.push(FieldError::required(path.to_string(), ""));
        return;
    }
    check_template_labels(errs, sel, template, path, map_selector);
    podspec::validate_template(errs, template, path);
    validate_always_restart(errs, template, path, kind);
}

/// Pods of long-running controllers must use `restartPolicy: Always` and no deadline.
pub fn validate_always_restart(errs: &mut FieldErrors, template: &Value, path: &str, kind: &str) {
    let rp = s(&template["spec"]["restartPolicy"]);
    if rp != "Always" {
        errs.push(FieldError::not_supported(format!("{path}.spec.restartPolicy"), rp, &["Always"]));
    }
    if !template["spec"]["activeDeadlineSeconds"].is_null() {
        errs.push(FieldError::forbidden(
            format!("{path}.spec.activeDeadlineSeconds"),
            format!("activeDeadlineSeconds in {kind} is not Supported"),
        ));
    }
}

/// Defaults `spec.replicas` to 1 and the pod template's spec.
pub fn default_replicas_and_template(obj: &mut Value) {
    let spec = common::child(obj, "spec");
    common::set_default(spec, "replicas", 1);
    podspec::default_template(common::entry(spec, "template"));
}

// ---- table cells (wide columns Containers / Images / Selector) ----

pub fn containers_cell(o: &Value) -> Value {
    json!(common::container_cells(&o["spec"]["template"]["spec"]).0)
}

pub fn images_cell(o: &Value) -> Value {
    json!(common::container_cells(&o["spec"]["template"]["spec"]).1)
}

/// The wide Containers, Images and Selector columns of apps and batch kinds.
pub fn wide_template_columns() -> Vec<crate::registry::table::Column> {
    use crate::registry::table::Column;
    vec![
        Column::new("Containers", "string", containers_cell).wide(),
        Column::new("Images", "string", images_cell).wide(),
        Column::new("Selector", "string", |o| json!(common::selector_string(&o["spec"]["selector"]))).wide(),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn template_must_match_selector() {
        let mut errs = Vec::new();
        let sel = json!({"matchLabels": {"app": "a"}});
        let mut tpl = json!({"metadata": {"labels": {"app": "b"}}, "spec": {"containers": [{"name": "c", "image": "i"}]}});
        podspec::default_template(&mut tpl);
        validate_controller_template(&mut errs, &sel, &tpl, "spec.template", "ReplicaSet", false);
        let msgs: Vec<String> = errs.iter().map(ToString::to_string).collect();
        assert_eq!(msgs, vec!["spec.template.metadata.labels: Invalid value: {\"app\":\"b\"}: `selector` does not match template `labels`"]);
        errs.clear();
        validate_selector(&mut errs, &json!({}), "spec.selector", "deployment");
        assert!(errs[0].to_string().ends_with("empty selector is invalid for deployment"));
    }
}
