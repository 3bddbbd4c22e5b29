//! The generic registry: what a resource is (`ResourceInfo`), how its kind behaves
//! (`Strategy`), and the one store that serves every resource (`store::GenericStore`).

pub mod strategy;
pub mod table;

use std::sync::Arc;

use serde_json::Value;

pub use strategy::{NameRule, Plain, ReqCtx, ScalePaths, Strategy, ALL_VERBS};

/// Names and scope of one served resource, as discovery reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResourceInfo {
    /// API group, empty for the core group.
    pub group: String,
    pub version: String,
    pub kind: String,
    pub list_kind: String,
    /// Lower-case plural: the URL path segment.
    pub plural: String,
    pub singular: String,
    pub namespaced: bool,
    pub short_names: Vec<String>,
    pub categories: Vec<String>,
    /// Served subresources (`status`, `scale`, ...).
    pub subresources: Vec<String>,
}

impl ResourceInfo {
    /// `v1` or `group/version`, as in `apiVersion`.
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.clone()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }
    pub fn has_status(&self) -> bool {
        self.subresources.iter().any(|s| s == "status")
    }
    /// `plural.group` (or `plural` for core), as in error messages and RBAC.
    pub fn group_resource(&self) -> String {
        if self.group.is_empty() {
            self.plural.clone()
        } else {
            format!("{}.{}", self.plural, self.group)
        }
    }
    /// The storage key prefix: `/registry/<group>/<plural>/` (core: `/registry/<plural>/`),
    /// as upstream lays out etcd, so every version of a group-resource shares one store.
    /// Resources that cohabit with another group's share its keys (see [`COHABITING`]).
    pub fn key_root(&self) -> String {
        let (group, plural) = COHABITING
            .iter()
            .find(|(g, p, _, _)| *g == self.group && *p == self.plural)
            .map(|(_, _, g, p)| (g.to_string(), p.to_string()))
            .unwrap_or((self.group.clone(), self.plural.clone()));
        if group.is_empty() {
            format!("/registry/{plural}/")
        } else {
            format!("/registry/{group}/{plural}/")
        }
    }
}

/// Group-resources stored as another one, as upstream's storage factory "cohabitating
/// resources": (group, plural) served → (group, plural) whose keys and storage version they
/// use. Their strategies convert with `to_storage`/`from_storage`.
pub const COHABITING: &[(&str, &str, &str, &str)] = &[("events.k8s.io", "events", "", "events")];

/// Checks an object's types and drops unknown fields by decoding it into the kind's typed
/// struct and encoding it again, as upstream's decode into Go structs does.
pub type Normalize = fn(Value) -> Result<Value, String>;

/// One entry of the kinds table: everything the generic layer needs to serve a resource.
#[derive(Clone)]
pub struct Kind {
    pub info: ResourceInfo,
    pub strategy: Arc<dyn Strategy>,
    pub normalize: Option<Normalize>,
}

pub mod allocator;
pub mod apply;
pub mod cache;
pub mod hooks;
pub mod list;
pub mod nesting;
pub mod scale;
pub mod store;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::RwLock;

use kine_sqlite::Backend;

use store::GenericStore;

/// Every served resource's store, looked up by group, version and plural. Behind a lock so
/// custom resources can join at run time.
pub struct Registry {
    stores: RwLock<Vec<Arc<GenericStore>>>,
    backend: Arc<dyn Backend>,
    cache: Arc<cache::WatchCache>,
    /// The admission chain every store runs on writes.
    admission: Arc<crate::admission::Admission>,
    /// Bumped whenever the set of served resources changes (custom resources).
    generation: AtomicU64,
}

impl Registry {
    pub fn new(kinds: Vec<Kind>, backend: Arc<dyn Backend>) -> Self {
        Self::with_watch_cache_size(kinds, backend, cache::DEFAULT_WINDOW)
    }

    /// A registry whose watch cache keeps `window` events for resuming watchers.
    pub fn with_watch_cache_size(kinds: Vec<Kind>, backend: Arc<dyn Backend>, window: usize) -> Self {
        let cache = cache::WatchCache::new(backend.clone(), window);
        let admission = Arc::new(crate::admission::Admission::builtin(backend.clone()));
        let stores = kinds
            .into_iter()
            .map(|k| Arc::new(GenericStore::with_cache(k, backend.clone(), cache.clone()).with_admission(admission.clone())))
            .collect();
        Registry { stores: RwLock::new(stores), backend, cache, admission, generation: AtomicU64::new(0) }
    }

    /// Changes whenever resources are added or removed, so caches derived from the set of
    /// resources (discovery, OpenAPI) know to rebuild.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::SeqCst)
    }

    /// Serves the versions of a custom resource (`group`/`plural`), replacing what was
    /// served for it before. Built-in resources are never replaced.
    pub fn set_custom(&self, group: &str, plural: &str, kinds: Vec<Kind>) {
        let mut stores = self.stores.write().expect("registry lock");
        if stores.iter().any(|s| s.info().group == group && s.info().plural == plural && s.kind.normalize.is_some()) {
            tracing::warn!(group, plural, "a custom resource may not replace a built-in one");
            return;
        }
        let unchanged = {
            let old: Vec<_> = stores.iter().filter(|s| s.info().group == group && s.info().plural == plural).map(|s| s.info().clone()).collect();
            old == kinds.iter().map(|k| k.info.clone()).collect::<Vec<_>>()
        };
        stores.retain(|s| !(s.info().group == group && s.info().plural == plural));
        stores.extend(kinds.into_iter().map(|k| {
            Arc::new(GenericStore::with_cache(k, self.backend.clone(), self.cache.clone()).with_admission(self.admission.clone()))
        }));
        if !unchanged {
            tracing::info!(group, plural, "serving custom resource");
        }
        self.generation.fetch_add(1, Ordering::SeqCst);
    }

    /// Runs `hooks` around the writes of every version of `group`/`plural`.
    pub fn set_hooks(&self, group: &str, plural: &str, hooks: Arc<dyn hooks::StoreHooks>) {
        let mut stores = self.stores.write().expect("registry lock");
        for s in stores.iter_mut().filter(|s| s.info().group == group && s.info().plural == plural) {
            let rebuilt = GenericStore::with_cache(s.kind.clone(), self.backend.clone(), self.cache.clone())
                .with_admission(s.admission())
                .with_hooks(Some(hooks.clone()));
            *s = Arc::new(rebuilt);
        }
    }

    /// Stops serving a custom resource.
    pub fn remove_custom(&self, group: &str, plural: &str) {
        let mut stores = self.stores.write().expect("registry lock");
        stores.retain(|s| !(s.info().group == group && s.info().plural == plural && s.kind.normalize.is_none()));
        self.generation.fetch_add(1, Ordering::SeqCst);
    }

    /// The watch cache every store reads watches from.
    pub fn watch_cache(&self) -> &Arc<cache::WatchCache> {
        &self.cache
    }

    pub fn backend(&self) -> &Arc<dyn Backend> {
        &self.backend
    }

    /// The store serving `group/version/plural`.
    pub fn find(&self, group: &str, version: &str, plural: &str) -> Option<Arc<GenericStore>> {
        self.all().into_iter().find(|s| s.info().group == group && s.info().version == version && s.info().plural == plural)
    }

    /// Every store, in table order.
    pub fn all(&self) -> Vec<Arc<GenericStore>> {
        self.stores.read().expect("registry lock").clone()
    }

    /// Served groups with their versions, in table order (first version preferred).
    pub fn groups(&self) -> Vec<(String, Vec<String>)> {
        let mut out: Vec<(String, Vec<String>)> = Vec::new();
        for s in self.all() {
            let info = s.info();
            match out.iter_mut().find(|(g, _)| *g == info.group) {
                Some((_, versions)) if !versions.contains(&info.version) => versions.push(info.version.clone()),
                Some(_) => {}
                None => out.push((info.group.clone(), vec![info.version.clone()])),
            }
        }
        out
    }

    /// The stores of one group-version.
    pub fn resources(&self, group: &str, version: &str) -> Vec<Arc<GenericStore>> {
        self.all().into_iter().filter(|s| s.info().group == group && s.info().version == version).collect()
    }
}
