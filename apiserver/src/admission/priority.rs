//! Upstream's Priority admission (plugin/pkg/admission/priority): a pod's
//! `priorityClassName` becomes its `spec.priority` and `spec.preemptionPolicy`; a pod naming
//! no class gets the `globalDefault` class (the lowest, if several), else priority 0 and
//! `PreemptLowerPriority`. A class that does not exist, or a priority (or policy) in the spec
//! that differs from the class's, is refused (403). On update the stored values are kept. A
//! second `globalDefault` PriorityClass is refused.
//!
//! The system classes (`system-node-critical`, `system-cluster-critical`) are created at
//! start; they resolve from the built-in table too, should one have been deleted.

use async_trait::async_trait;
use serde_json::{json, Value};

use super::{Attributes, Operation, Plugin, Reader};
use crate::error::ApiResult;
use crate::kinds::priorityclass::SYSTEM_PRIORITY_CLASSES;

pub struct Priority;

const GROUP: &str = "scheduling.k8s.io";
const PLURAL: &str = "priorityclasses";
const DEFAULT_POLICY: &str = "PreemptLowerPriority";

/// A class's (name, value, preemptionPolicy).
fn class_of(pc: &Value) -> (String, i64, String) {
    (
        pc["metadata"]["name"].as_str().unwrap_or_default().to_string(),
        pc["value"].as_i64().unwrap_or_default(),
        pc["preemptionPolicy"].as_str().unwrap_or(DEFAULT_POLICY).to_string(),
    )
}

/// Upstream's `getDefaultPriorityClass`: the globalDefault class with the lowest value.
async fn default_class(reader: &dyn Reader) -> ApiResult<Option<(String, i64, String)>> {
    let classes = reader.list(GROUP, PLURAL, None).await?;
    Ok(classes.iter().filter(|pc| pc["globalDefault"] == json!(true)).map(class_of).min_by_key(|(_, v, _)| *v))
}

/// The class a pod names: stored, or one of the built-in system classes.
async fn named_class(reader: &dyn Reader, name: &str) -> ApiResult<Option<(String, i64, String)>> {
    if let Some(pc) = reader.get(GROUP, PLURAL, None, name).await? {
        return Ok(Some(class_of(&pc)));
    }
    Ok(SYSTEM_PRIORITY_CLASSES.iter().find(|(n, _, _)| *n == name).map(|(n, v, _)| (n.to_string(), *v, DEFAULT_POLICY.to_string())))
}

impl Priority {
    async fn admit_pod_create(&self, attrs: &Attributes<'_>, obj: &mut Value, reader: &dyn Reader) -> ApiResult<()> {
        let named = obj["spec"]["priorityClassName"].as_str().filter(|n| !n.is_empty()).map(str::to_string);
        let (name, priority, policy) = match named {
            Some(name) => match named_class(reader, &name).await? {
                Some(class) => class,
                None => return Err(attrs.forbidden(obj, format!("no PriorityClass with name {name} was found"))),
            },
            None => default_class(reader).await?.unwrap_or_else(|| (String::new(), 0, DEFAULT_POLICY.to_string())),
        };
        if let Some(given) = obj["spec"]["priority"].as_i64().filter(|p| *p != priority) {
            let why = format!("the integer value of priority ({given}) must not be provided in pod spec; priority admission controller computed {priority} from the given PriorityClass name");
            return Err(attrs.forbidden(obj, why));
        }
        if let Some(given) = obj["spec"]["preemptionPolicy"].as_str().filter(|p| *p != policy) {
            let why = format!("the string value of PreemptionPolicy ({given}) must not be provided in pod spec; priority admission controller computed {policy} from the given PriorityClass name");
            return Err(attrs.forbidden(obj, why));
        }
        let spec = &mut obj["spec"];
        if !name.is_empty() {
            spec["priorityClassName"] = json!(name);
        }
        spec["priority"] = json!(priority);
        spec["preemptionPolicy"] = json!(policy);
        Ok(())
    }

    /// Only one class may be the global default.
    async fn admit_class(&self, attrs: &Attributes<'_>, obj: &Value, reader: &dyn Reader) -> ApiResult<()> {
        if obj["globalDefault"] != json!(true) {
            return Ok(());
        }
        let name = obj["metadata"]["name"].as_str().unwrap_or_default();
        let classes = reader.list(GROUP, PLURAL, None).await?;
        if let Some(other) = classes.iter().find(|pc| pc["globalDefault"] == json!(true) && pc["metadata"]["name"].as_str() != Some(name)) {
            let other = other["metadata"]["name"].as_str().unwrap_or_default();
            return Err(attrs.forbidden(obj, format!("PriorityClass {other} is already marked as default. Only one default can exist")));
        }
        Ok(())
    }
}

#[async_trait]
impl Plugin for Priority {
    fn handles(&self, attrs: &Attributes<'_>) -> bool {
        attrs.is("", "pods") || attrs.is(GROUP, PLURAL)
    }

    async fn admit(&self, attrs: &Attributes<'_>, obj: &mut Value, reader: &dyn Reader) -> ApiResult<()> {
        if attrs.is(GROUP, PLURAL) {
            return self.admit_class(attrs, obj, reader).await;
        }
        match (attrs.operation, attrs.old) {
            (Operation::Create, _) => self.admit_pod_create(attrs, obj, reader).await,
            // The values set on create are kept (validation refuses changing them).
            (Operation::Update, Some(old)) => {
                for field in ["priority", "preemptionPolicy"] {
                    if obj["spec"][field].is_null() && !old["spec"][field].is_null() {
                        obj["spec"][field] = old["spec"][field].clone();
                    }
                }
                Ok(())
            }
            (Operation::Update, None) => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::{create, ctx, pods, MemReader};
    use super::*;

    #[tokio::test]
    async fn priority_class_names_resolve_to_priorities() {
        let reader = MemReader::default();
        reader.put(GROUP, PLURAL, None, json!({"metadata": {"name": "high"}, "value": 1000, "preemptionPolicy": "Never"}));
        let (info, ctx) = (pods(), ctx());
        let attrs = create(&info, &ctx);

        let mut plain = json!({"metadata": {"name": "p"}, "spec": {}});
        Priority.admit(&attrs, &mut plain, &reader).await.unwrap();
        assert_eq!((plain["spec"]["priority"].clone(), plain["spec"]["preemptionPolicy"].clone()), (json!(0), json!("PreemptLowerPriority")));

        let mut high = json!({"metadata": {"name": "p"}, "spec": {"priorityClassName": "high"}});
        Priority.admit(&attrs, &mut high, &reader).await.unwrap();
        assert_eq!((high["spec"]["priority"].clone(), high["spec"]["preemptionPolicy"].clone()), (json!(1000), json!("Never")));

        let mut system = json!({"metadata": {"name": "p"}, "spec": {"priorityClassName": "system-node-critical"}});
        Priority.admit(&attrs, &mut system, &reader).await.unwrap();
        assert_eq!(system["spec"]["priority"], json!(2_000_001_000));

        let mut missing = json!({"metadata": {"name": "p"}, "spec": {"priorityClassName": "nope"}});
        let err = Priority.admit(&attrs, &mut missing, &reader).await.unwrap_err();
        assert_eq!(err.to_string(), "pods \"p\" is forbidden: no PriorityClass with name nope was found");

        let mut given = json!({"metadata": {"name": "p"}, "spec": {"priorityClassName": "high", "priority": 5}});
        let err = Priority.admit(&attrs, &mut given, &reader).await.unwrap_err();
        assert!(err.to_string().ends_with("the integer value of priority (5) must not be provided in pod spec; priority admission controller computed 1000 from the given PriorityClass name"), "{err}");

        // A global default applies to pods naming no class; a second default is refused.
        reader.put(GROUP, PLURAL, None, json!({"metadata": {"name": "dflt"}, "value": 7, "globalDefault": true}));
        let mut plain = json!({"metadata": {"name": "p"}, "spec": {}});
        Priority.admit(&attrs, &mut plain, &reader).await.unwrap();
        assert_eq!((plain["spec"]["priority"].clone(), plain["spec"]["priorityClassName"].clone()), (json!(7), json!("dflt")));
        let mut info = pods();
        (info.group, info.plural) = (GROUP.into(), PLURAL.into());
        let attrs = create(&info, &ctx);
        let mut second = json!({"metadata": {"name": "other"}, "value": 8, "globalDefault": true});
        let err = Priority.admit(&attrs, &mut second, &reader).await.unwrap_err();
        assert!(err.to_string().ends_with("PriorityClass dflt is already marked as default. Only one default can exist"), "{err}");
    }
}
