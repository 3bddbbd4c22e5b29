//! The `scale` subresource (`autoscaling/v1` Scale) of workload kinds: `kubectl scale`
//! and autoscalers read and write `spec.replicas` through it.

use serde_json::{json, Value};

use crate::crd::jsonpath;
use crate::error::{ApiError, ApiResult};
use crate::meta;
use crate::registry::store::{GenericStore, Target, WriteOptions};
use crate::registry::ReqCtx;
use crate::selectors::labels;
use crate::validation::FieldError;

impl GenericStore {
    /// The Scale view of an object: desired and current replicas and the pod selector.
    pub fn scale_of(&self, obj: &Value) -> Value {
        let m = &obj["metadata"];
        let paths = self.kind.strategy.scale_paths();
        let first = |path: &str| jsonpath::eval(obj, path).into_iter().next().unwrap_or(Value::Null);
        let selector = paths.label_selector.as_deref().map(|p| selector_string(&first(p))).unwrap_or_default();
        json!({
            "kind": "Scale",
            "apiVersion": "autoscaling/v1",
            "metadata": {
                "name": m["name"],
                "namespace": m["namespace"],
                "uid": m["uid"],
                "resourceVersion": m["resourceVersion"],
                "creationTimestamp": m["creationTimestamp"],
            },
            "spec": {"replicas": first(&paths.spec_replicas).as_i64().unwrap_or(0)},
            "status": {
                "replicas": first(&paths.status_replicas).as_i64().unwrap_or(0),
                "selector": selector,
            },
        })
    }

    /// Writes a new Scale: `make` turns the current Scale into the desired one (a PUT body,
    /// or the current one patched). Only `spec.replicas` reaches the object.
    pub async fn update_scale<F>(&self, ctx: &ReqCtx, name: &str, opts: &WriteOptions, mut make: F) -> ApiResult<Value>
    where
        F: FnMut(&Value) -> ApiResult<Value>,
    {
        let written = self
            .guaranteed_update(ctx, name, Target::Main, opts, |parent| {
                let wanted = make(&self.scale_of(parent))?;
                let replicas = wanted["spec"]["replicas"].as_i64().unwrap_or(0);
                if replicas < 0 {
                    return Err(ApiError::Invalid {
                        group: "autoscaling".into(),
                        kind: "Scale".into(),
                        name: name.to_string(),
                        causes: vec![FieldError::invalid("spec.replicas", replicas, "must be greater than or equal to 0")],
                    });
                }
                let mut next = parent.clone();
                jsonpath::set(&mut next, &self.kind.strategy.scale_paths().spec_replicas, json!(replicas));
                match meta::resource_version(&wanted) {
                    Some(rv) => meta::set(&mut next, "resourceVersion", json!(rv)),
                    None => meta::remove(&mut next, "resourceVersion"),
                }
                Ok(next)
            })
            .await?;
        Ok(self.scale_of(&written.object))
    }
}

/// A selector as the string form Scale reports: from a LabelSelector (apps kinds) or a
/// plain label map (ReplicationController).
fn selector_string(sel: &Value) -> String {
    if let Some(s) = sel.as_str() {
        return s.to_string();
    }
    if sel.get("matchLabels").is_some() || sel.get("matchExpressions").is_some() {
        return labels::from_label_selector_json(sel).map(|s| s.to_string()).unwrap_or_default();
    }
    sel.as_object()
        .map(|m| m.iter().map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default())).collect::<Vec<_>>().join(","))
        .unwrap_or_default()
}
