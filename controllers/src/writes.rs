//! Requests shaped as upstream's controllers send them, so that their RBAC roles suffice
//! (see [`crate::credentials`]):
//!
//! - [`update`]: upstream's controllers write status (and some of their own objects) with
//!   `update` (PUT), and their roles grant `update` of `*/status`, not `patch`. The object
//!   is read, a JSON merge patch applied to it, and the result PUT, guarded by the
//!   resourceVersion read (or the one the patch names) and retried on a conflict unless the
//!   patch named it.
//! - [`lookup`]: upstream's controllers read most objects from their informers' listers, and
//!   their roles leave out `get` of those: a lookup by name here is a list with a
//!   `metadata.name` field selector, which goes with the informers' identity.

use kube::api::{Api, ListParams, PostParams};
use kube::Resource;
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;

/// Which part of the object [`update`] writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Part {
    Main,
    Status,
}

/// Attempts on conflicts when the patch does not pin a resourceVersion.
const ATTEMPTS: usize = 5;

/// Reads `name`, applies `merge_patch` (RFC 7386) and writes it back with PUT (see the module
/// comment).
pub async fn update<K>(api: &Api<K>, name: &str, manager: &str, part: Part, merge_patch: &Value) -> kube::Result<K>
where
    K: Resource + Clone + DeserializeOwned + Serialize + std::fmt::Debug,
{
    let pinned = !merge_patch["metadata"]["resourceVersion"].is_null();
    let pp = PostParams { field_manager: Some(manager.into()), ..Default::default() };
    let mut attempt = 0;
    loop {
        attempt += 1;
        let current = api.get(name).await?;
        let next: K = merged(&current, merge_patch)?;
        let written = match part {
            Part::Main => api.replace(name, &pp, &next).await,
            Part::Status => api.replace_status(name, &pp, &next).await,
        };
        match written {
            Err(kube::Error::Api(s)) if s.code == 409 && !pinned && attempt < ATTEMPTS => continue,
            other => return other,
        }
    }
}

/// `current` with `merge_patch` applied.
fn merged<K: Serialize + DeserializeOwned>(current: &K, merge_patch: &Value) -> kube::Result<K> {
    let mut doc = serde_json::to_value(current).map_err(kube::Error::SerdeError)?;
    json_patch::merge(&mut doc, merge_patch);
    serde_json::from_value(doc).map_err(kube::Error::SerdeError)
}

/// The object `name` in `api`'s scope, read as a lister would (see the module comment).
pub async fn lookup<K>(api: &Api<K>, name: &str) -> kube::Result<Option<K>>
where
    K: Resource + Clone + DeserializeOwned + std::fmt::Debug,
{
    let lp = ListParams::default().fields(&format!("metadata.name={name}"));
    Ok(api.list(&lp).await?.items.into_iter().next())
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::apps::v1::ReplicaSet;
    use serde_json::json;

    #[test]
    fn merge_patches_apply_to_typed_objects() {
        let rs: ReplicaSet = serde_json::from_value(json!({
            "metadata": {"name": "a", "resourceVersion": "5", "annotations": {"x": "1", "y": "2"}},
            "status": {"replicas": 1, "readyReplicas": 1},
        }))
        .unwrap();
        let out = merged(&rs, &json!({"metadata": {"annotations": {"y": null, "z": "3"}}, "status": {"replicas": 2, "readyReplicas": null}})).unwrap();
        let v = serde_json::to_value(&out).unwrap();
        assert_eq!(v["metadata"]["annotations"], json!({"x": "1", "z": "3"}));
        assert_eq!(v["metadata"]["resourceVersion"], "5");
        assert_eq!(v["status"], json!({"replicas": 2}));
    }
}
