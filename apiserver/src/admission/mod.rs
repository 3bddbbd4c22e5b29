//! Admission done by the apiserver itself, as upstream's built-in admission chain: plugins
//! that may change (mutating phase) or refuse (validating phase) a write, reading other
//! objects to decide (a namespace's LimitRanges, a pod's ServiceAccount and RuntimeClass).
//!
//! The generic store runs the chain on every create and update of the main resource: the
//! mutating phase after defaulting (upstream admits the decoded, defaulted object), the
//! validating phase after the kind's validation. Plugins read through a [`Reader`] over the
//! storage backend, so what they read is current (no cache lag after a write).

mod limitranger;
mod resourcequota;
mod priority;
mod runtimeclass;
mod serviceaccount;
pub mod celexpr;
mod validatingpolicy;

use std::sync::Arc;

use async_trait::async_trait;
use kine_sqlite::Backend;
use serde_json::Value;

use crate::error::{ApiError, ApiResult};
use crate::registry::{ReqCtx, ResourceInfo};

pub use limitranger::LimitRanger;
pub use resourcequota::ResourceQuota;
pub use priority::Priority;
pub use runtimeclass::RuntimeClass;
pub use serviceaccount::ServiceAccount;
pub use validatingpolicy::ValidatingPolicy;

/// What a write does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Operation {
    Create,
    Update,
}

/// Upstream's `admission.Attributes`, as far as the plugins use them.
pub struct Attributes<'a> {
    pub operation: Operation,
    pub resource: &'a ResourceInfo,
    /// `status` for writes to that subresource (see [`Plugin::handles_status`]), else empty.
    pub subresource: &'a str,
    pub ctx: &'a ReqCtx,
    /// The stored object, on update.
    pub old: Option<&'a Value>,
}

impl Attributes<'_> {
    /// Whether this is a write to `group/plural`.
    pub fn is(&self, group: &str, plural: &str) -> bool {
        self.resource.group == group && self.resource.plural == plural
    }

    /// Upstream's `admission.NewForbidden`: `pods "name" is forbidden: <why>` (the
    /// generateName when the name is not known yet).
    pub fn forbidden(&self, obj: &Value, why: impl std::fmt::Display) -> ApiError {
        let m = &obj["metadata"];
        let name = m["name"].as_str().filter(|n| !n.is_empty()).or_else(|| m["generateName"].as_str()).unwrap_or("Unknown");
        ApiError::Forbidden(format!("{} \"{name}\" is forbidden: {why}", self.resource.group_resource()))
    }
}

/// Reads other objects for admission decisions.
#[async_trait]
pub trait Reader: Send + Sync {
    /// One object of `group/plural` (core group: empty), if it exists.
    async fn get(&self, group: &str, plural: &str, namespace: Option<&str>, name: &str) -> ApiResult<Option<Value>>;
    /// Every object of `group/plural` in a namespace (or cluster-scoped ones: `None`).
    async fn list(&self, group: &str, plural: &str, namespace: Option<&str>) -> ApiResult<Vec<Value>>;
}

/// One admission plugin. Both phases default to doing nothing.
#[async_trait]
pub trait Plugin: Send + Sync {
    /// Whether the plugin acts on this write at all.
    fn handles(&self, attrs: &Attributes<'_>) -> bool;

    /// Whether the plugin's validating phase also runs on writes to the `status`
    /// subresource (most plugins concern the main resource only).
    fn handles_status(&self, _attrs: &Attributes<'_>) -> bool {
        false
    }

    /// Mutating phase: may change the object, or refuse the write.
    async fn admit(&self, _attrs: &Attributes<'_>, _obj: &mut Value, _reader: &dyn Reader) -> ApiResult<()> {
        Ok(())
    }

    /// Validating phase: may refuse the write, on the object as it will be stored.
    async fn validate(&self, _attrs: &Attributes<'_>, _obj: &Value, _reader: &dyn Reader) -> ApiResult<()> {
        Ok(())
    }

    /// Validating phase that may also warn the client (`Warning` headers): defaults to
    /// [`Plugin::validate`].
    async fn validate_warn(&self, attrs: &Attributes<'_>, obj: &Value, reader: &dyn Reader, _warnings: &mut Vec<String>) -> ApiResult<()> {
        self.validate(attrs, obj, reader).await
    }
}

/// The chain the store runs: plugins in order, each phase in turn, with a reader.
pub struct Admission {
    plugins: Vec<Box<dyn Plugin>>,
    reader: Option<Arc<dyn Reader>>,
}

impl Admission {
    /// No plugins (stores built outside a registry).
    pub fn none() -> Self {
        Admission { plugins: Vec::new(), reader: None }
    }

    /// Upstream's default plugins that krust implements, in upstream's order, reading
    /// through `backend`.
    pub fn builtin(backend: Arc<dyn Backend>) -> Self {
        Self::new(
            vec![Box::new(LimitRanger), Box::new(ServiceAccount), Box::new(Priority), Box::new(RuntimeClass), Box::new(crate::auth::noderestriction::NodeRestriction), Box::new(crate::auth::escalation::RbacEscalation), Box::new(ValidatingPolicy::default()), Box::new(ResourceQuota::new(backend.clone()))],
            Arc::new(BackendReader { backend }),
        )
    }

    pub fn new(plugins: Vec<Box<dyn Plugin>>, reader: Arc<dyn Reader>) -> Self {
        Admission { plugins, reader: Some(reader) }
    }

    /// The mutating phase of every plugin that handles the write.
    pub async fn admit(&self, attrs: &Attributes<'_>, obj: &mut Value) -> ApiResult<()> {
        let Some(reader) = &self.reader else { return Ok(()) };
        for p in self.plugins.iter().filter(|p| p.handles(attrs)) {
            p.admit(attrs, obj, reader.as_ref()).await?;
        }
        Ok(())
    }

    /// The validating phase of the plugins that handle `status` writes.
    pub async fn validate_status(&self, attrs: &Attributes<'_>, obj: &Value) -> ApiResult<()> {
        let Some(reader) = &self.reader else { return Ok(()) };
        for p in self.plugins.iter().filter(|p| p.handles_status(attrs)) {
            p.validate(attrs, obj, reader.as_ref()).await?;
        }
        Ok(())
    }

    /// The validating phase of every plugin that handles the write; the warnings they give.
    pub async fn validate(&self, attrs: &Attributes<'_>, obj: &Value) -> ApiResult<Vec<String>> {
        let mut warnings = Vec::new();
        let Some(reader) = &self.reader else { return Ok(warnings) };
        for p in self.plugins.iter().filter(|p| p.handles(attrs)) {
            p.validate_warn(attrs, obj, reader.as_ref(), &mut warnings).await?;
        }
        Ok(warnings)
    }
}

/// Reads stored objects straight from the backend (upstream's plugins read informers and
/// fall back to live lookups; a direct read is the live lookup).
pub struct BackendReader {
    pub backend: Arc<dyn Backend>,
}

fn key_root(group: &str, plural: &str) -> String {
    if group.is_empty() {
        format!("/registry/{plural}/")
    } else {
        format!("/registry/{group}/{plural}/")
    }
}

fn decode(bytes: &[u8], revision: i64) -> ApiResult<Value> {
    crate::registry::store::decode_at(bytes, revision)
}

#[async_trait]
impl Reader for BackendReader {
    async fn get(&self, group: &str, plural: &str, namespace: Option<&str>, name: &str) -> ApiResult<Option<Value>> {
        let key = match namespace {
            Some(ns) => format!("{}{ns}/{name}", key_root(group, plural)),
            None => format!("{}{name}", key_root(group, plural)),
        };
        let (_, kv) = self.backend.get(&key, 0).await?;
        kv.map(|kv| decode(&kv.value, kv.mod_revision)).transpose()
    }

    async fn list(&self, group: &str, plural: &str, namespace: Option<&str>) -> ApiResult<Vec<Value>> {
        let prefix = match namespace {
            Some(ns) => format!("{}{ns}/", key_root(group, plural)),
            None => key_root(group, plural),
        };
        let page = self.backend.list(&prefix, "", 0, 0).await?;
        page.kvs.iter().map(|kv| decode(&kv.value, kv.mod_revision)).collect()
    }
}

/// Whether a write is a create of a pod (not a mirror pod, which the kubelet owns).
fn is_pod_create(attrs: &Attributes<'_>) -> bool {
    attrs.operation == Operation::Create && attrs.is("", "pods")
}

#[cfg(test)]
pub(crate) mod testing {
    use std::collections::BTreeMap;
    use std::sync::Mutex;

    use super::*;

    /// An in-memory reader: objects by (group, plural, namespace, name).
    #[derive(Default)]
    pub struct MemReader(pub Mutex<BTreeMap<(String, String, String, String), Value>>);

    impl MemReader {
        pub fn put(&self, group: &str, plural: &str, ns: Option<&str>, obj: Value) {
            let name = obj["metadata"]["name"].as_str().unwrap_or_default().to_string();
            self.0.lock().unwrap().insert((group.into(), plural.into(), ns.unwrap_or_default().into(), name), obj);
        }
    }

    #[async_trait]
    impl Reader for MemReader {
        async fn get(&self, group: &str, plural: &str, namespace: Option<&str>, name: &str) -> ApiResult<Option<Value>> {
            let key = (group.to_string(), plural.to_string(), namespace.unwrap_or_default().to_string(), name.to_string());
            Ok(self.0.lock().unwrap().get(&key).cloned())
        }
        async fn list(&self, group: &str, plural: &str, namespace: Option<&str>) -> ApiResult<Vec<Value>> {
            let ns = namespace.unwrap_or_default();
            Ok(self
                .0
                .lock()
                .unwrap()
                .iter()
                .filter(|((g, p, n, _), _)| g == group && p == plural && n == ns)
                .map(|(_, v)| v.clone())
                .collect())
        }
    }

    pub fn pods() -> ResourceInfo {
        ResourceInfo {
            group: String::new(),
            version: "v1".into(),
            kind: "Pod".into(),
            list_kind: "PodList".into(),
            plural: "pods".into(),
            singular: "pod".into(),
            namespaced: true,
            short_names: vec![],
            categories: vec![],
            subresources: vec!["status".into()],
        }
    }

    pub fn ctx() -> ReqCtx {
        ReqCtx { namespace: Some("ns".into()), ..Default::default() }
    }

    pub fn create<'a>(info: &'a ResourceInfo, ctx: &'a ReqCtx) -> Attributes<'a> {
        Attributes { operation: Operation::Create, resource: info, subresource: "", ctx, old: None }
    }
}
