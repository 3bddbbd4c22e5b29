//! What the StatefulSet and DaemonSet controllers share: ControllerRevision history
//! (upstream's `controller/history` package and the DaemonSet's history code) and claiming
//! the objects a controller owns (upstream's `ControllerRefManager`).
//!
//! A revision's `data` is upstream's `getPatch`: `{"spec": {"template": {..., "$patch":
//! "replace"}}}`, the patch that turns the owner back into that revision; `kubectl rollout
//! undo` sends it as a strategic merge patch, and `kubectl rollout history` applies it to show
//! a revision's template. Revisions carry the owner's template labels (kubectl finds them by
//! the owner's selector) and a controller ownerReference.

use k8s_openapi::api::apps::v1::ControllerRevision;
use k8s_openapi::api::core::v1::PodTemplateSpec;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, OwnerReference};
use k8s_openapi::apimachinery::pkg::runtime::RawExtension;
use kube::api::{Api, DeleteParams, Patch, PostParams};
use kube::ResourceExt;
use serde_json::{json, Value};

use crate::podutil::{controller_of, selector_matches};

/// The pod label naming the revision a pod was made from (`apps/v1` `ControllerRevisionHashLabelKey`).
pub const POD_REVISION_LABEL: &str = "controller-revision-hash";

/// The revision data for `template`: upstream's `getPatch`.
pub fn template_patch(template: &PodTemplateSpec) -> Value {
    let mut t = serde_json::to_value(template).expect("a pod template serializes");
    if !t.is_object() {
        t = json!({});
    }
    t["$patch"] = json!("replace");
    json!({"spec": {"template": t}})
}

/// The template a revision's data holds (upstream's `ApplyRevision`, for our data shape).
pub fn template_of(rev: &ControllerRevision) -> PodTemplateSpec {
    let mut t = rev.data.as_ref().map(|d| d.0["spec"]["template"].clone()).unwrap_or_default();
    if let Some(m) = t.as_object_mut() {
        m.remove("$patch");
    }
    serde_json::from_value(t).unwrap_or_default()
}

/// Whether the revision holds `data` (upstream compares the raw bytes; the JSON is compared
/// here, as the API server may re-encode it).
pub fn holds(rev: &ControllerRevision, data: &Value) -> bool {
    rev.data.as_ref().is_some_and(|d| &d.0 == data)
}

/// A short hash of `data` and the collision count: FNV-32a of the JSON, then upstream's
/// `rand.SafeEncodeString` (as `HashControllerRevision` / `ComputeHash`).
pub fn hash(data: &Value, collision_count: Option<i32>) -> String {
    let mut bytes = serde_json::to_vec(data).expect("JSON serializes");
    if let Some(c) = collision_count {
        bytes.extend(c.to_string().bytes());
    }
    hash_bytes(&bytes)
}

/// FNV-32a of `bytes`, its decimal digits encoded with `rand.SafeEncodeString`'s alphabet:
/// upstream's `ComputeHash` (pod-template-hash) and `HashControllerRevision`.
pub fn hash_bytes(bytes: &[u8]) -> String {
    let mut h: u32 = 0x811c_9dc5;
    for &b in bytes {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    const ALPHANUMS: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    h.to_string().bytes().map(|b| ALPHANUMS[b as usize % ALPHANUMS.len()] as char).collect()
}

/// Upstream's `ControllerRevisionName`: the owner's name (cut to 223 characters) and the hash.
pub fn revision_name(owner: &str, hash: &str) -> String {
    let prefix: String = owner.chars().take(223).collect();
    format!("{prefix}-{hash}")
}

/// The next revision number after `revs` (upstream's `nextRevision`).
pub fn next_revision(revs: &[ControllerRevision]) -> i64 {
    revs.iter().map(|r| r.revision).max().unwrap_or(0) + 1
}

/// A new revision of `owner` holding `data` (not yet created; its name and hash label are
/// set by [`create`]).
pub fn new_revision(ns: &str, owner_ref: &OwnerReference, template_labels: Option<&std::collections::BTreeMap<String, String>>, data: Value, revision: i64) -> ControllerRevision {
    let mut rev = ControllerRevision { data: Some(RawExtension(data)), revision, ..Default::default() };
    rev.metadata.namespace = Some(ns.into());
    rev.metadata.labels = Some(template_labels.cloned().unwrap_or_default());
    rev.metadata.owner_references = Some(vec![owner_ref.clone()]);
    rev
}

/// Creates `rev` named after `owner` and the hash of its data, bumping `collision_count`
/// while another revision with different data has that name (upstream's
/// `CreateControllerRevision`); `hash_label` gets the hash. An existing revision with the
/// same data is returned as it is.
pub async fn create(api: &Api<ControllerRevision>, owner: &str, mut rev: ControllerRevision, hash_label: &str, collision_count: &mut i32, manager: &str) -> Result<ControllerRevision, kube::Error> {
    let data = rev.data.as_ref().map(|d| d.0.clone()).unwrap_or_default();
    let pp = PostParams { field_manager: Some(manager.into()), ..Default::default() };
    loop {
        let h = hash(&data, Some(*collision_count).filter(|c| *c != 0));
        let name = revision_name(owner, &h);
        rev.metadata.name = Some(name.clone());
        rev.metadata.labels.get_or_insert_with(Default::default).insert(hash_label.into(), h);
        match api.create(&pp, &rev).await {
            Err(kube::Error::Api(e)) if e.code == 409 => {
                let existing = api.get(&name).await?;
                if holds(&existing, &data) {
                    return Ok(existing);
                }
                *collision_count += 1;
            }
            other => return other,
        }
    }
}

/// Gives an existing revision a new revision number (a rollback to it; upstream's
/// `UpdateControllerRevision`).
pub async fn renumber(api: &Api<ControllerRevision>, rev: &ControllerRevision, revision: i64, manager: &str) -> Result<ControllerRevision, kube::Error> {
    if rev.revision == revision {
        return Ok(rev.clone());
    }
    api.patch(&rev.name_any(), &crate::patch_params(manager), &Patch::Merge(json!({"revision": revision}))).await
}

/// Deletes revisions, ignoring ones already gone.
pub async fn delete_all(api: &Api<ControllerRevision>, revs: &[&ControllerRevision]) -> Result<(), kube::Error> {
    for rev in revs {
        match api.delete(&rev.name_any(), &DeleteParams::default()).await {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 404 => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// The objects among `all` controlled by the owner `oref` (upstream's `ClaimObject`):
/// orphans matching `selector` and `filter` are adopted (unless the owner is being deleted),
/// controlled ones no longer matching are released. Both are merge patches of
/// `ownerReferences` guarded by the object's resourceVersion; a failed one is skipped (the
/// next sync sees the object again).
pub async fn claim<T>(api: &Api<T>, oref: &OwnerReference, owner_deleting: bool, selector: Option<&LabelSelector>, all: Vec<T>, filter: impl Fn(&T) -> bool, manager: &str) -> Vec<T>
where
    T: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let pp = crate::patch_params(manager);
    let mut owned = Vec::new();
    for obj in all {
        let matches = selector_matches(selector, obj.labels()) && filter(&obj);
        match controller_of(obj.owner_references()) {
            Some(r) if r.uid == oref.uid => {
                if matches || owner_deleting {
                    owned.push(obj);
                    continue;
                }
                let refs: Vec<_> = obj.owner_references().iter().filter(|r| r.uid != oref.uid).cloned().collect();
                let refs = if refs.is_empty() { Value::Null } else { json!(refs) };
                let patch = json!({"metadata": {"resourceVersion": obj.resource_version(), "ownerReferences": refs}});
                if let Err(e) = api.patch(&obj.name_any(), &pp, &Patch::Merge(patch)).await {
                    tracing::debug!(name = %obj.name_any(), error = %e, "releasing an object failed");
                }
            }
            None if matches && !owner_deleting && obj.meta().deletion_timestamp.is_none() => {
                let mut refs = obj.owner_references().to_vec();
                refs.push(oref.clone());
                let patch = json!({"metadata": {"resourceVersion": obj.resource_version(), "ownerReferences": refs}});
                match api.patch(&obj.name_any(), &pp, &Patch::Merge(patch)).await {
                    Ok(adopted) => owned.push(adopted),
                    Err(e) => tracing::debug!(name = %obj.name_any(), error = %e, "adopting an object failed"),
                }
            }
            _ => {}
        }
    }
    owned
}

/// The owner's revisions, claimed, sorted by revision number then name (upstream's
/// `SortControllerRevisions`).
pub async fn history(api: &Api<ControllerRevision>, oref: &OwnerReference, owner_deleting: bool, selector: Option<&LabelSelector>, manager: &str) -> Result<Vec<ControllerRevision>, kube::Error> {
    let all = api.list(&Default::default()).await?.items;
    let mut revs = claim(api, oref, owner_deleting, selector, all, |_| true, manager).await;
    revs.sort_by(|a, b| a.revision.cmp(&b.revision).then_with(|| a.name_any().cmp(&b.name_any())));
    Ok(revs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patches_and_hashes() {
        let t: PodTemplateSpec = serde_json::from_value(json!({"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "c", "image": "nginx"}]}})).unwrap();
        let data = template_patch(&t);
        assert_eq!(data["spec"]["template"]["$patch"], "replace");
        let rev = ControllerRevision { data: Some(RawExtension(data.clone())), revision: 1, ..Default::default() };
        assert_eq!(template_of(&rev), t);
        assert!(holds(&rev, &data));
        let h = hash(&data, None);
        assert!(!h.is_empty() && h.chars().all(|c| "bcdfghjklmnpqrstvwxz2456789".contains(c)));
        assert_ne!(h, hash(&data, Some(1)), "the collision count changes the hash");
        assert_eq!(revision_name("web", &h), format!("web-{h}"));
        assert_eq!(next_revision(&[rev]), 2);
        assert_eq!(next_revision(&[]), 1);
    }
}
