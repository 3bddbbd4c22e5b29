//! Helpers the workload controllers and the scheduler share: label selectors, pod
//! readiness and availability, controller references, events.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{ObjectReference, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, OwnerReference};
use kube::runtime::events::{Event, EventType};
use kube::{Resource, ResourceExt};

use crate::Ctx;

/// Whether `labels` satisfy `selector` (matchLabels and matchExpressions). An empty selector
/// matches everything, as `metav1.LabelSelectorAsSelector`; a missing one matches nothing.
pub fn selector_matches(selector: Option<&LabelSelector>, labels: &BTreeMap<String, String>) -> bool {
    let Some(sel) = selector else { return false };
    let labels_ok = sel.match_labels.iter().flatten().all(|(k, v)| labels.get(k) == Some(v));
    let exprs_ok = sel.match_expressions.iter().flatten().all(|e| {
        let values = e.values.as_deref().unwrap_or_default();
        let have = labels.get(&e.key);
        match e.operator.as_str() {
            "In" => have.is_some_and(|v| values.contains(v)),
            "NotIn" => have.is_none_or(|v| !values.contains(v)),
            "Exists" => have.is_some(),
            "DoesNotExist" => have.is_none(),
            _ => false,
        }
    });
    labels_ok && exprs_ok
}

/// The controller among `refs`, if any.
pub fn controller_of(refs: &[OwnerReference]) -> Option<&OwnerReference> {
    refs.iter().find(|r| r.controller == Some(true))
}

/// An ownerReference to `owner` marking it as the controller, as upstream's
/// `metav1.NewControllerRef`.
pub fn controller_ref<K: Resource<DynamicType = ()>>(owner: &K) -> OwnerReference {
    OwnerReference {
        api_version: K::api_version(&()).into_owned(),
        kind: K::kind(&()).into_owned(),
        name: owner.name_any(),
        uid: owner.uid().unwrap_or_default(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }
}

/// Whether the pod is neither finished nor being deleted (upstream's `IsPodActive`).
pub fn is_active(pod: &Pod) -> bool {
    let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref()).unwrap_or_default();
    phase != "Succeeded" && phase != "Failed" && pod.metadata.deletion_timestamp.is_none()
}

/// Seconds since the Unix epoch at which the pod became Ready, if it is Ready.
pub fn ready_since(pod: &Pod) -> Option<i64> {
    let cond = pod.status.as_ref()?.conditions.as_ref()?.iter().find(|c| c.type_ == "Ready")?;
    if cond.status != "True" {
        return None;
    }
    Some(cond.last_transition_time.as_ref().map_or(0, |t| t.0.as_second()))
}

pub fn is_ready(pod: &Pod) -> bool {
    ready_since(pod).is_some()
}

/// Whether the pod has been Ready for `min_ready_seconds` at `now` (upstream's
/// `IsPodAvailable`); else, when it is Ready, how many seconds remain.
pub fn availability(pod: &Pod, min_ready_seconds: i64, now: i64) -> Result<(), Option<i64>> {
    match ready_since(pod) {
        None => Err(None),
        Some(_) if min_ready_seconds <= 0 => Ok(()),
        Some(since) if since + min_ready_seconds <= now => Ok(()),
        Some(since) => Err(Some(since + min_ready_seconds - now)),
    }
}

pub fn now_secs() -> i64 {
    chrono::Utc::now().timestamp()
}

pub fn now_rfc3339() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// Publishes an Event about `obj`; failures are logged, never fatal.
pub async fn event<K: Resource<DynamicType = ()>>(ctx: &Ctx, obj: &K, warning: bool, reason: &str, action: &str, note: String) {
    event_from(&ctx.recorder, obj, warning, reason, action, note).await
}

/// [`event`] through another recorder (the scheduler reports as `default-scheduler`).
pub async fn event_from<K: Resource<DynamicType = ()>>(recorder: &crate::events::Recorder, obj: &K, warning: bool, reason: &str, action: &str, note: String) {
    let reference = ObjectReference {
        api_version: Some(K::api_version(&()).into_owned()),
        kind: Some(K::kind(&()).into_owned()),
        name: obj.meta().name.clone(),
        namespace: obj.meta().namespace.clone(),
        uid: obj.meta().uid.clone(),
        resource_version: obj.meta().resource_version.clone(),
        field_path: None,
    };
    let ev = Event {
        type_: if warning { EventType::Warning } else { EventType::Normal },
        reason: reason.into(),
        note: Some(note),
        action: action.into(),
        secondary: None,
    };
    if let Err(e) = recorder.publish(&ev, &reference).await {
        tracing::warn!(error = %e, reason, "publishing an event failed");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelectorRequirement;

    #[test]
    fn selectors() {
        let labels: BTreeMap<String, String> = [("app".to_string(), "web".to_string())].into();
        let sel = LabelSelector { match_labels: Some(labels.clone()), match_expressions: None };
        assert!(selector_matches(Some(&sel), &labels));
        assert!(!selector_matches(Some(&sel), &BTreeMap::new()));
        assert!(!selector_matches(None, &labels));
        let expr = LabelSelector {
            match_labels: None,
            match_expressions: Some(vec![LabelSelectorRequirement { key: "tier".into(), operator: "DoesNotExist".into(), values: None }]),
        };
        assert!(selector_matches(Some(&expr), &labels));
    }
}

/// Whether a write failed because its namespace is terminating (403 with upstream's
/// "because it is being terminated"), as opposed to an RBAC denial, which must not be
/// taken for it.
pub fn namespace_terminating(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 403 && s.message.contains("being terminated"))
}
