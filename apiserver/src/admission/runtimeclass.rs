//! Upstream's RuntimeClass admission (plugin/pkg/admission/runtimeclass): a pod naming a
//! RuntimeClass that does not exist is refused (403); otherwise the class's `overhead`
//! becomes the pod's `spec.overhead` and its `scheduling` merges into the pod's node
//! selector and tolerations.

use async_trait::async_trait;
use serde_json::{json, Map, Value};

use super::{is_pod_create, Attributes, Plugin, Reader};
use crate::error::ApiResult;
use crate::kinds::common::parse_quantity;

pub struct RuntimeClass;

/// The pod's RuntimeClass, or upstream's 403 when it names one that does not exist.
async fn runtime_class_of(attrs: &Attributes<'_>, obj: &Value, reader: &dyn Reader) -> ApiResult<Option<Value>> {
    let Some(name) = obj["spec"]["runtimeClassName"].as_str() else { return Ok(None) };
    match reader.get("node.k8s.io", "runtimeclasses", None, name).await? {
        Some(rc) => Ok(Some(rc)),
        None => Err(attrs.forbidden(obj, format!("pod rejected: RuntimeClass {name:?} not found"))),
    }
}

/// Resource lists equal as quantities (`1000m` = `1`).
fn same_resources(a: &Value, b: &Value) -> bool {
    let (Some(a), Some(b)) = (a.as_object(), b.as_object()) else { return a == b };
    a.len() == b.len()
        && a.iter().all(|(k, v)| {
            b.get(k).is_some_and(|w| match (parse_quantity(v.as_str().unwrap_or_default()), parse_quantity(w.as_str().unwrap_or_default())) {
                (Ok(x), Ok(y)) => x == y,
                _ => v == w,
            })
        })
}

fn has_overhead(spec: &Value) -> bool {
    spec["overhead"].as_object().is_some_and(|o| !o.is_empty())
}

#[async_trait]
impl Plugin for RuntimeClass {
    fn handles(&self, attrs: &Attributes<'_>) -> bool {
        is_pod_create(attrs)
    }

    async fn admit(&self, attrs: &Attributes<'_>, obj: &mut Value, reader: &dyn Reader) -> ApiResult<()> {
        let Some(rc) = runtime_class_of(attrs, obj, reader).await? else { return Ok(()) };
        // setOverhead
        if let Some(fixed) = rc["overhead"]["podFixed"].as_object().filter(|o| !o.is_empty()) {
            let fixed = Value::Object(fixed.clone());
            if has_overhead(&obj["spec"]) && !same_resources(&obj["spec"]["overhead"], &fixed) {
                return Err(attrs.forbidden(obj, "pod rejected: Pod's Overhead doesn't match RuntimeClass's defined Overhead"));
            }
            obj["spec"]["overhead"] = fixed;
        }
        // setScheduling
        let scheduling = &rc["scheduling"];
        if let Some(selector) = scheduling["nodeSelector"].as_object() {
            let mut merged = obj["spec"]["nodeSelector"].as_object().cloned().unwrap_or_default();
            for (k, v) in selector {
                if let Some(pod_value) = merged.get(k).filter(|pv| *pv != v) {
                    return Err(attrs.forbidden(
                        obj,
                        format!(
                            "conflict: runtimeClass.scheduling.nodeSelector[{k}] = {}; pod.spec.nodeSelector[{k}] = {}",
                            v.as_str().unwrap_or_default(),
                            pod_value.as_str().unwrap_or_default()
                        ),
                    ));
                }
                merged.insert(k.clone(), v.clone());
            }
            if !merged.is_empty() {
                obj["spec"]["nodeSelector"] = Value::Object(merged);
            }
        }
        if let Some(tols) = scheduling["tolerations"].as_array().filter(|t| !t.is_empty()) {
            let mut merged = obj["spec"]["tolerations"].as_array().cloned().unwrap_or_default();
            for t in tols {
                if !merged.contains(t) {
                    merged.push(t.clone());
                }
            }
            obj["spec"]["tolerations"] = json!(merged);
        }
        Ok(())
    }

    async fn validate(&self, attrs: &Attributes<'_>, obj: &Value, reader: &dyn Reader) -> ApiResult<()> {
        let rc = runtime_class_of(attrs, obj, reader).await?;
        let fixed = rc.as_ref().and_then(|rc| rc["overhead"]["podFixed"].as_object()).filter(|o| !o.is_empty());
        match fixed {
            Some(fixed) if !same_resources(&obj["spec"]["overhead"], &Value::Object(Map::clone(fixed))) => {
                Err(attrs.forbidden(obj, "pod rejected: Pod's Overhead doesn't match RuntimeClass's defined Overhead"))
            }
            None if has_overhead(&obj["spec"]) => {
                Err(attrs.forbidden(obj, "pod rejected: Pod Overhead set without corresponding RuntimeClass defined Overhead"))
            }
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::{create, ctx, pods, MemReader};
    use super::*;

    #[tokio::test]
    async fn runtime_classes_admit_pods() {
        let reader = MemReader::default();
        reader.put("node.k8s.io", "runtimeclasses", None, json!({
            "metadata": {"name": "kata"}, "handler": "kata",
            "overhead": {"podFixed": {"cpu": "250m", "memory": "120Mi"}},
            "scheduling": {"nodeSelector": {"runtime": "kata"}, "tolerations": [{"key": "kata", "operator": "Exists"}]},
        }));
        let (info, ctx) = (pods(), ctx());
        let attrs = create(&info, &ctx);
        let mut missing = json!({"metadata": {"name": "p"}, "spec": {"runtimeClassName": "nope"}});
        let err = RuntimeClass.admit(&attrs, &mut missing, &reader).await.unwrap_err();
        assert_eq!(err.code(), 403);
        assert_eq!(err.to_string(), "pods \"p\" is forbidden: pod rejected: RuntimeClass \"nope\" not found");

        let mut pod = json!({"metadata": {"name": "p"}, "spec": {"runtimeClassName": "kata", "nodeSelector": {"zone": "a"}}});
        RuntimeClass.admit(&attrs, &mut pod, &reader).await.unwrap();
        assert_eq!(pod["spec"]["overhead"], json!({"cpu": "250m", "memory": "120Mi"}));
        assert_eq!(pod["spec"]["nodeSelector"], json!({"zone": "a", "runtime": "kata"}));
        assert_eq!(pod["spec"]["tolerations"], json!([{"key": "kata", "operator": "Exists"}]));
        RuntimeClass.validate(&attrs, &pod, &reader).await.unwrap();

        let mut conflict = json!({"metadata": {"name": "p"}, "spec": {"runtimeClassName": "kata", "nodeSelector": {"runtime": "runc"}}});
        let err = RuntimeClass.admit(&attrs, &mut conflict, &reader).await.unwrap_err();
        assert!(err.to_string().ends_with("conflict: runtimeClass.scheduling.nodeSelector[runtime] = kata; pod.spec.nodeSelector[runtime] = runc"), "{err}");

        let overhead_alone = json!({"metadata": {"name": "p"}, "spec": {"overhead": {"cpu": "1"}}});
        let err = RuntimeClass.validate(&attrs, &overhead_alone, &reader).await.unwrap_err();
        assert!(err.to_string().ends_with("pod rejected: Pod Overhead set without corresponding RuntimeClass defined Overhead"));
    }
}
