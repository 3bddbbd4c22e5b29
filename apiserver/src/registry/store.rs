//! `GenericStore`: create, get, update, delete for every resource, written once. The kind's
//! behaviour comes from its `Strategy`; the order of steps is fixed here (upstream's
//! `rest.BeforeCreate` / `BeforeUpdate` and the generic registry `Store`). List and watch
//! live in `list.rs`.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kine_sqlite::{Backend, KeyValue, LeaseId, StoreError};
use serde_json::{json, Value};

use crate::admission::{self, Admission};
use crate::error::{ApiError, ApiResult, OPTIMISTIC_LOCK_MSG};
use crate::meta;
use crate::registry::cache::{self, WatchCache};
use crate::registry::hooks::StoreHooks;
use crate::registry::nesting;
use crate::registry::{Kind, ReqCtx, ResourceInfo};
use crate::validation::{self, FieldError, FieldErrors};

/// Which part of an object a write addresses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    /// The object itself: status changes are ignored for kinds with a status subresource.
    Main,
    /// The `status` subresource: only status (and labels/annotations) change.
    Status,
    /// A namespace's `finalize` subresource: only `spec.finalizers` changes (how the
    /// namespace controller releases a namespace it emptied).
    Finalize,
    /// A CertificateSigningRequest's `approval` subresource: only `status.conditions` (and
    /// labels/annotations) change, as upstream's `csrApprovalStrategy`.
    Approval,
    /// A pod's `binding` subresource (upstream's `BindingREST`): the caller's closure sets
    /// `spec.nodeName` and the PodScheduled condition; the pod spec's immutability and the
    /// status reset of main updates do not apply.
    Binding,
}

/// Options of a write request.
#[derive(Clone, Debug, Default)]
pub struct WriteOptions {
    pub dry_run: bool,
    /// Who writes (the `fieldManager`), recorded in `metadata.managedFields`; `None` leaves
    /// managed fields as the caller set them (server-side apply sets its own).
    pub field_manager: Option<String>,
}

/// `DeleteOptions`, as far as the store acts on them.
#[derive(Clone, Debug, Default)]
pub struct DeleteOptions {
    pub dry_run: bool,
    pub grace_period_seconds: Option<i64>,
    pub precondition_uid: Option<String>,
    pub precondition_rv: Option<String>,
    /// `propagationPolicy` (or the legacy `orphanDependents`): what becomes of dependents.
    pub propagation: Option<Propagation>,
}

/// How a delete treats the objects that name the deleted one as owner.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Propagation {
    /// The garbage collector deletes dependents first; the owner waits for them
    /// (`foregroundDeletion` finalizer).
    Foreground,
    /// The owner goes now; the garbage collector deletes dependents after.
    Background,
    /// Dependents lose their owner reference and stay (`orphan` finalizer).
    Orphan,
}

/// Finalizers the garbage collector acts on.
pub const FOREGROUND_FINALIZER: &str = "foregroundDeletion";
pub const ORPHAN_FINALIZER: &str = "orphan";

impl Propagation {
    pub fn parse(v: &str) -> Option<Propagation> {
        match v {
            "Foreground" => Some(Propagation::Foreground),
            "Background" => Some(Propagation::Background),
            "Orphan" => Some(Propagation::Orphan),
            _ => None,
        }
    }

    /// The object's finalizers as upstream's `deletionFinalizersForGarbageCollection`
    /// leaves them for this policy.
    fn finalizers(self, mut fins: Vec<String>) -> Vec<String> {
        fins.retain(|f| f != FOREGROUND_FINALIZER && f != ORPHAN_FINALIZER);
        match self {
            Propagation::Foreground => fins.push(FOREGROUND_FINALIZER.into()),
            Propagation::Orphan => fins.push(ORPHAN_FINALIZER.into()),
            Propagation::Background => {}
        }
        fins
    }
}

/// The result of a write: the object as stored and warnings for the client.
#[derive(Debug)]
pub struct Written {
    pub object: Value,
    pub warnings: Vec<String>,
    /// True when a PUT created the object (201 instead of 200).
    pub created: bool,
}

/// The result of a delete.
#[derive(Debug)]
pub struct Deleted {
    /// The object: as deleted, or as left in place while finalizers or a grace period run.
    pub object: Value,
    /// False when the object stays until finalizers or a grace period complete.
    pub gone: bool,
}

/// How long an Event lives, as upstream's `--event-ttl` default.
const EVENT_TTL_SECONDS: i64 = 3600;

/// The store for one resource.
pub struct GenericStore {
    pub kind: Kind,
    pub(crate) backend: Arc<dyn Backend>,
    pub(crate) cache: Arc<WatchCache>,
    /// Events share one lease per minute, as upstream's lease manager reuses leases.
    event_lease: Mutex<Option<(LeaseId, Instant)>>,
    /// The admission chain writes go through (none unless the registry sets one).
    admission: Arc<Admission>,
    /// Work around writes beyond the strategy (Services: address and port allocation).
    hooks: Option<Arc<dyn StoreHooks>>,
}

impl GenericStore {
    /// A store with a watch cache of its own (tests; the registry shares one cache).
    pub fn new(kind: Kind, backend: Arc<dyn Backend>) -> Self {
        let cache = WatchCache::new(backend.clone(), cache::DEFAULT_WINDOW);
        Self::with_cache(kind, backend, cache)
    }

    /// A store whose lists and watches go through a shared watch cache.
    pub fn with_cache(kind: Kind, backend: Arc<dyn Backend>, cache: Arc<WatchCache>) -> Self {
        GenericStore { kind, backend, cache, event_lease: Mutex::new(None), admission: Arc::new(Admission::none()), hooks: None }
    }

    /// The store with hooks run around its writes.
    pub fn with_hooks(mut self, hooks: Option<Arc<dyn StoreHooks>>) -> Self {
        self.hooks = hooks;
        self
    }

    /// Its hooks, for a registry rebuilding the store.
    pub fn hooks(&self) -> Option<Arc<dyn StoreHooks>> {
        self.hooks.clone()
    }

    /// Its admission chain, for a registry rebuilding the store.
    pub fn admission(&self) -> Arc<Admission> {
        self.admission.clone()
    }

    /// The store with an admission chain run on every create and update.
    pub fn with_admission(mut self, admission: Arc<Admission>) -> Self {
        self.admission = admission;
        self
    }

    pub fn info(&self) -> &ResourceInfo {
        &self.kind.info
    }

    /// `/registry/<group>/<plural>/<ns>/<name>` or `/registry/<group>/<plural>/<name>`.
    pub fn key(&self, namespace: Option<&str>, name: &str) -> String {
        match (self.info().namespaced, namespace) {
            (true, Some(ns)) => format!("{}{ns}/{name}", self.info().key_root()),
            _ => format!("{}{name}", self.info().key_root()),
        }
    }

    /// The key prefix of a list: one namespace, or all of them.
    pub fn prefix(&self, namespace: Option<&str>) -> String {
        match (self.info().namespaced, namespace) {
            (true, Some(ns)) => format!("{}{ns}/", self.info().key_root()),
            _ => self.info().key_root(),
        }
    }

    fn not_found(&self, name: &str) -> ApiError {
        ApiError::NotFound { group: self.info().group.clone(), kind: self.info().plural.clone(), name: name.to_string() }
    }

    fn conflict(&self, name: &str, message: impl Into<String>) -> ApiError {
        ApiError::Conflict {
            group: self.info().group.clone(),
            resource: self.info().group_resource(),
            name: name.to_string(),
            message: message.into(),
        }
    }

    fn invalid(&self, name: &str, causes: FieldErrors) -> ApiError {
        ApiError::Invalid { group: self.info().group.clone(), kind: self.info().kind.clone(), name: name.to_string(), causes }
    }

    /// Turns a stored key-value into the API object, stamping its resourceVersion.
    pub fn decode(&self, kv: &KeyValue) -> ApiResult<Value> {
        decode_at(&kv.value, kv.mod_revision).map(|o| self.kind.strategy.from_storage(o))
    }

    /// Turns an object into stored bytes, in the storage version.
    fn encode(&self, obj: &Value) -> ApiResult<Vec<u8>> {
        encode(&self.kind.strategy.to_storage(obj.clone()))
    }

    /// Decodes a request body into an object of this kind: checks apiVersion and kind, then
    /// normalizes it through the kind's typed struct (types checked, unknown fields dropped).
    pub fn decode_body(&self, body: Value) -> ApiResult<Value> {
        let Value::Object(_) = body else {
            return Err(ApiError::bad_request("the request body must be a JSON object"));
        };
        let info = self.info();
        let (api_version, kind) = (body["apiVersion"].as_str().unwrap_or(""), body["kind"].as_str().unwrap_or(""));
        if (!kind.is_empty() && kind != info.kind) || (!api_version.is_empty() && api_version != info.api_version()) {
            return Err(ApiError::bad_request(format!(
                "the API version in the data ({api_version}) does not match the expected API version ({})",
                info.api_version()
            ))
            .kind_mismatch(kind, &info.kind));
        }
        let mut body = body;
        body["apiVersion"] = json!(info.api_version());
        body["kind"] = json!(info.kind);
        match self.kind.normalize {
            Some(normalize) => normalize(body).map_err(|e| {
                ApiError::bad_request(format!("error decoding {} body: {e}", info.kind))
            }),
            None => Ok(self.kind.strategy.prune(body)),
        }
    }

    pub async fn get(&self, namespace: Option<&str>, name: &str) -> ApiResult<Value> {
        let (_, kv) = self.backend.get(&self.key(namespace, name), 0).await?;
        let kv = kv.ok_or_else(|| self.not_found(name))?;
        self.decode(&kv)
    }

    /// Creates an object (`body` already decoded by [`Self::decode_body`]).
    pub async fn create(&self, ctx: &ReqCtx, mut obj: Value, opts: &WriteOptions) -> ApiResult<Written> {
        self.bind_namespace(ctx, &mut obj)?;
        if let Some(answer) = self.kind.strategy.create_virtual(ctx, &obj) {
            // A virtual kind (the reviews): answered, never stored.
            return answer.map(|object| Written { object, warnings: Vec::new(), created: true });
        }
        let warnings = self.before_create(ctx, &mut obj).await?;
        if let Some(manager) = &opts.field_manager {
            let incoming = obj["metadata"].get("managedFields").filter(|m| m.as_array().is_some_and(|a| !a.is_empty())).cloned();
            self.track_update(&Value::Null, &mut obj, incoming.as_ref(), manager, Target::Main);
        }
        self.check_nesting(&obj, None)?;
        if self.info().namespaced {
            self.check_namespace_open(meta::namespace(&obj).unwrap_or_default(), meta::name(&obj)).await?;
        }
        let name = meta::name(&obj).to_string();
        let key = self.key(meta::namespace(&obj), &name);
        if opts.dry_run {
            // A dry run goes as far as a real create would: an existing object is a 409.
            if self.backend.get(&key, 0).await?.1.is_some() {
                return Err(ApiError::AlreadyExists { group: self.info().group.clone(), kind: self.info().plural.clone(), name });
            }
            return Ok(Written { object: obj, warnings, created: true });
        }
        let lease = self.lease_for_new_object().await?;
        let reservation = match &self.hooks {
            Some(h) => Some(h.begin_create(&mut obj).await?),
            None => None,
        };
        let written = self.backend.create(&key, self.encode(&obj)?, lease).await;
        if let (Err(_), Some(h), Some(r)) = (&written, &self.hooks, reservation) {
            h.abort(r).await;
        }
        match written {
            Ok(rev) => {
                meta::set(&mut obj, "resourceVersion", json!(rev.to_string()));
                Ok(Written { object: obj, warnings, created: true })
            }
            Err(StoreError::KeyExists) => Err(ApiError::AlreadyExists {
                group: self.info().group.clone(),
                kind: self.info().plural.clone(),
                name,
            }),
            Err(e) => Err(e.into()),
        }
    }

    /// Events expire after an hour: their keys carry a lease.
    async fn lease_for_new_object(&self) -> ApiResult<LeaseId> {
        if self.info().kind != "Event" {
            return Ok(0);
        }
        if let Some((id, at)) = *self.event_lease.lock().expect("lease lock") {
            if at.elapsed() < Duration::from_secs(60) {
                return Ok(id);
            }
        }
        let id = self.backend.grant_lease(EVENT_TTL_SECONDS + 60).await?;
        *self.event_lease.lock().expect("lease lock") = Some((id, Instant::now()));
        Ok(id)
    }

    /// Puts the request's namespace on the object, or refuses a mismatch (upstream's
    /// "the namespace of the provided object does not match the namespace sent on the request").
    fn bind_namespace(&self, ctx: &ReqCtx, obj: &mut Value) -> ApiResult<()> {
        if !self.info().namespaced {
            meta::remove(obj, "namespace");
            return Ok(());
        }
        let request_ns = ctx.namespace.as_deref().unwrap_or("default");
        match meta::namespace(obj) {
            Some(ns) if ns != request_ns => Err(ApiError::bad_request(
                "the namespace of the provided object does not match the namespace sent on the request",
            )),
            _ => {
                meta::set(obj, "namespace", json!(request_ns));
                Ok(())
            }
        }
    }

    /// Upstream's `rest.BeforeCreate`: system fields, then the kind's hooks in fixed order,
    /// then common metadata validation (after the kind's, so the specific message wins).
    /// Admission: mutating after defaulting, validating after validation.
    async fn before_create(&self, ctx: &ReqCtx, obj: &mut Value) -> ApiResult<Vec<String>> {
        let strategy = &self.kind.strategy;
        let m = meta::meta_mut(obj);
        let has_name = m.get("name").and_then(Value::as_str).is_some_and(|n| !n.is_empty());
        if !has_name {
            if let Some(prefix) = m.get("generateName").and_then(Value::as_str).filter(|p| !p.is_empty()) {
                let generated = format!("{prefix}{}", meta::random_suffix());
                m.insert("name".into(), json!(generated));
            }
        }
        m.insert("uid".into(), json!(uuid::Uuid::new_v4().to_string()));
        m.insert("creationTimestamp".into(), json!(meta::now()));
        m.insert("generation".into(), json!(1));
        for field in ["resourceVersion", "deletionTimestamp", "deletionGracePeriodSeconds", "selfLink"] {
            m.remove(field);
        }
        if self.info().has_status() && !strategy.keep_status_on_create() {
            if let Some(o) = obj.as_object_mut() {
                o.remove("status");
            }
        }
        strategy.apply_defaults(obj);
        let attrs = admission::Attributes { operation: admission::Operation::Create, resource: self.info(), subresource: "", ctx, old: None };
        self.admission.admit(&attrs, obj).await?;
        strategy.prepare_for_create(ctx, obj);
        let mut errs = strategy.validate(ctx, obj);
        errs.extend(self.validate_meta(obj));
        if !errs.is_empty() {
            return Err(self.invalid(meta::name(obj), errs));
        }
        let mut warnings = self.admission.validate(&attrs, obj).await?;
        warnings.extend(strategy.warnings_on_create(ctx, obj));
        strategy.canonicalize(obj);
        Ok(warnings)
    }

    /// The nesting limit every write is held to (`nesting`), checked on the object as it
    /// would be stored, managedFields included, so that anything stored can be read back.
    /// An update of an object stored deeper by an older version passes if it makes it no
    /// deeper, so that object can still be finalized and deleted. Refused as upstream refuses
    /// a body its decoder cannot take: 400 BadRequest.
    fn check_nesting(&self, obj: &Value, old: Option<&Value>) -> ApiResult<()> {
        let Err(why) = nesting::check(obj) else { return Ok(()) };
        if old.is_some_and(|old| nesting::depth(obj) <= nesting::depth(old)) {
            return Ok(());
        }
        let info = self.info();
        Err(ApiError::bad_request(format!("{} in version {:?} cannot be handled as a {}: {why}", info.kind, info.version, info.kind)))
    }

    /// Common `ObjectMeta` validation (upstream's `ValidateObjectMeta`).
    fn validate_meta(&self, obj: &Value) -> FieldErrors {
        let mut errs = Vec::new();
        let m = &obj["metadata"];
        let name = m["name"].as_str().unwrap_or_default();
        if name.is_empty() {
            errs.push(FieldError::required("metadata.name", "name or generateName is required"));
        } else {
            validation::push_invalid(&mut errs, "metadata.name", name, self.kind.strategy.name_rule().check(name));
        }
        if let Some(labels) = m["labels"].as_object() {
            for (k, v) in labels {
                validation::push_invalid(&mut errs, "metadata.labels", k, validation::qualified_name(k));
                let v = v.as_str().unwrap_or_default();
                // Upstream's ValidateLabels reports keys and values at the same path.
                validation::push_invalid(&mut errs, "metadata.labels", v, validation::label_value(v));
            }
        }
        if let Some(annotations) = m["annotations"].as_object() {
            let mut total = 0;
            for (k, v) in annotations {
                validation::push_invalid(&mut errs, "metadata.annotations", k, validation::qualified_name(&k.to_lowercase()));
                total += k.len() + v.as_str().map_or(0, str::len);
            }
            if total > 256 * 1024 {
                errs.push(FieldError::too_long("metadata.annotations", 256 * 1024));
            }
        }
        if let Some(fins) = m["finalizers"].as_array() {
            for (i, f) in fins.iter().enumerate() {
                let f = f.as_str().unwrap_or_default();
                validation::push_invalid(&mut errs, &format!("metadata.finalizers[{i}]"), f, validation::qualified_name(f));
            }
        }
        errs
    }

    /// Refuses creates in a namespace that does not exist (404) or is being deleted (403).
    async fn check_namespace_open(&self, ns: &str, name: &str) -> ApiResult<()> {
        let (_, kv) = self.backend.get(&format!("/registry/namespaces/{ns}"), 0).await?;
        let Some(kv) = kv else {
            return Err(ApiError::NotFound { group: String::new(), kind: "namespaces".into(), name: ns.into() });
        };
        let nsobj = self.decode(&kv)?;
        if meta::is_deleting(&nsobj) {
            return Err(ApiError::Forbidden(format!(
                "{} \"{}\" is forbidden: unable to create new content in namespace {ns} because it is being terminated",
                self.info().group_resource(),
                name,
            )));
        }
        Ok(())
    }

    /// Replaces an object (PUT). `body` is already decoded.
    pub async fn update(&self, ctx: &ReqCtx, name: &str, body: Value, target: Target, opts: &WriteOptions) -> ApiResult<Written> {
        self.check_url_identity(ctx, name, &body)?;
        let ns = ctx.namespace.clone();
        let created_if_missing = self.kind.strategy.allow_create_on_update() && target == Target::Main;
        if created_if_missing && self.backend.get(&self.key(ns.as_deref(), name), 0).await?.1.is_none() {
            let body = self.with_name(body, name);
            return self.create(ctx, body, opts).await.map(|w| Written { created: true, ..w });
        }
        if !self.kind.strategy.allow_unconditional_update() && meta::resource_version(&body).is_none() {
            return Err(self.invalid(name, vec![FieldError::invalid("metadata.resourceVersion", "", "must be specified for an update")]));
        }
        self.guaranteed_update(ctx, name, target, opts, |_| Ok(body.clone())).await
    }

    fn with_name(&self, mut body: Value, name: &str) -> Value {
        meta::set(&mut body, "name", json!(name));
        body
    }

    /// A body's name and namespace must match the URL's.
    pub fn check_url_identity(&self, ctx: &ReqCtx, name: &str, body: &Value) -> ApiResult<()> {
        let body_name = meta::name(body);
        if !body_name.is_empty() && body_name != name {
            return Err(ApiError::bad_request(format!(
                "the name of the object ({body_name}) does not match the name on the URL ({name})"
            )));
        }
        if self.info().namespaced {
            if let (Some(b), Some(u)) = (meta::namespace(body), ctx.namespace.as_deref()) {
                if b != u {
                    return Err(ApiError::bad_request(
                        "the namespace of the provided object does not match the namespace sent on the request",
                    ));
                }
            }
        }
        Ok(())
    }

    /// Reads, transforms and writes back with compare-and-swap, retrying when another writer
    /// got in between, unless the new object names a resourceVersion (then 409 Conflict), as
    /// upstream's `GuaranteedUpdate`. `make` turns the current object into the desired one.
    pub async fn guaranteed_update<F>(&self, ctx: &ReqCtx, name: &str, target: Target, opts: &WriteOptions, mut make: F) -> ApiResult<Written>
    where
        F: FnMut(&Value) -> ApiResult<Value>,
    {
        let key = self.key(ctx.namespace.as_deref(), name);
        loop {
            let (_, kv) = self.backend.get(&key, 0).await?;
            let kv = kv.ok_or_else(|| self.not_found(name))?;
            let old = self.decode(&kv)?;
            let mut new = make(&old)?;
            self.check_url_identity(ctx, name, &new)?;
            if let Some(rv) = meta::resource_version(&new) {
                if rv != kv.mod_revision.to_string() {
                    return Err(self.conflict(name, OPTIMISTIC_LOCK_MSG));
                }
            }
            let incoming_managed = new["metadata"].get("managedFields").cloned();
            let warnings = self.before_update(ctx, &mut new, &old, target).await?;
            if let Some(manager) = &opts.field_manager {
                let incoming = if target == Target::Main { incoming_managed.as_ref() } else { None };
                self.track_update(&old, &mut new, incoming, manager, target);
            }
            if strip_rv(&new) == strip_rv(&old) {
                // Nothing changed: upstream skips the write and returns the current object.
                return Ok(Written { object: old, warnings, created: false });
            }
            self.check_nesting(&new, Some(&old))?;
            if opts.dry_run {
                return Ok(Written { object: new, warnings, created: false });
            }
            let hooks = self.hooks.as_ref().filter(|_| target == Target::Main);
            let reservation = match hooks {
                Some(h) => Some(h.begin_update(&mut new, &old).await?),
                None => None,
            };
            let out = self.backend.update(&key, self.encode(&new)?, kv.mod_revision, kv.lease).await;
            let succeeded = out.as_ref().is_ok_and(|o| o.succeeded);
            if let (false, Some(h), Some(r)) = (succeeded, hooks, reservation) {
                h.abort(r).await;
            }
            let out = out?;
            if !out.succeeded {
                continue;
            }
            if let Some(h) = hooks {
                h.after_update(&new, &old).await;
            }
            meta::set(&mut new, "resourceVersion", json!(out.revision.to_string()));
            self.finish_if_unblocked(&key, &new, out.revision).await?;
            return Ok(Written { object: new, warnings, created: false });
        }
    }

    /// An object being deleted goes away once its last finalizer is removed.
    async fn finish_if_unblocked(&self, key: &str, obj: &Value, rev: i64) -> ApiResult<()> {
        if meta::is_deleting(obj) && meta::finalizers(obj).is_empty() && !self.kind.strategy.blocks_deletion(obj) {
            // A failed compare means another writer changed it since: that writer's update
            // runs this check itself.
            if self.backend.delete(key, rev).await?.succeeded {
                if let Some(h) = &self.hooks {
                    h.after_delete(obj).await;
                }
            }
        }
        Ok(())
    }

    /// Upstream's `rest.BeforeUpdate`: keep system fields from the old object, apply the
    /// kind's hooks, validate.
    /// Admission of the main resource: mutating after defaulting, validating after validation.
    async fn before_update(&self, ctx: &ReqCtx, new: &mut Value, old: &Value, target: Target) -> ApiResult<Vec<String>> {
        let strategy = &self.kind.strategy;
        let name = meta::name(old).to_string();
        if let Some(uid) = new["metadata"]["uid"].as_str() {
            if !uid.is_empty() && Some(uid) != meta::uid(old) {
                return Err(self.conflict(
                    &name,
                    format!("Precondition failed: UID in precondition: {uid}, UID in object meta: {}", meta::uid(old).unwrap_or_default()),
                ));
            }
        }
        if target == Target::Status {
            *new = status_only(old, new);
        } else if target == Target::Approval {
            *new = conditions_only(old, new);
        } else if target == Target::Finalize {
            *new = finalizers_only(old, new);
        } else if target == Target::Binding {
            // Built from `old` by the binding handler.
        } else if self.info().has_status() {
            match old.get("status") {
                Some(s) => new["status"] = s.clone(),
                None => {
                    if let Some(o) = new.as_object_mut() {
                        o.remove("status");
                    }
                }
            }
        }
        for field in ["uid", "creationTimestamp", "deletionTimestamp", "deletionGracePeriodSeconds", "generation", "namespace"] {
            match old["metadata"].get(field) {
                Some(v) => meta::set(new, field, v.clone()),
                None => meta::remove(new, field),
            }
        }
        meta::set(new, "name", json!(name));
        meta::remove(new, "selfLink");
        let subresource = if target == Target::Status { "status" } else { "" };
        let update_attrs = admission::Attributes { operation: admission::Operation::Update, resource: self.info(), subresource, ctx, old: Some(old) };
        let mut errs = Vec::new();
        if target == Target::Main {
            strategy.apply_defaults(new);
            self.admission.admit(&update_attrs, new).await?;
            strategy.prepare_for_update(ctx, new, old);
            errs.extend(strategy.validate_update(ctx, new, old));
            if spec_of(new) != spec_of(old) {
                let generation = old["metadata"]["generation"].as_i64().unwrap_or(0) + 1;
                meta::set(new, "generation", json!(generation));
            }
        } else if target == Target::Finalize || target == Target::Binding {
            errs.extend(strategy.validate(ctx, new));
        } else {
            strategy.prepare_for_status_update(ctx, new, old);
            errs.extend(strategy.validate_status_update(ctx, new, old));
        }
        errs.extend(self.validate_meta(new));
        if meta::is_deleting(old) {
            let old_fins = meta::finalizers(old);
            if meta::finalizers(new).iter().any(|f| !old_fins.contains(f)) {
                errs.push(FieldError::forbidden("metadata.finalizers", "no new finalizers can be added if the object is being deleted"));
            }
        }
        if !errs.is_empty() {
            return Err(self.invalid(&name, errs));
        }
        let mut warnings = Vec::new();
        if target == Target::Main {
            warnings = self.admission.validate(&update_attrs, new).await?;
        } else if target == Target::Status {
            self.admission.validate_status(&update_attrs, new).await?;
        }
        warnings.extend(strategy.warnings_on_update(ctx, new, old));
        strategy.canonicalize(new);
        Ok(warnings)
    }

    /// Deletes an object, or marks it for deletion while finalizers or a grace period run.
    pub async fn delete(&self, ctx: &ReqCtx, name: &str, opts: &DeleteOptions) -> ApiResult<Deleted> {
        let key = self.key(ctx.namespace.as_deref(), name);
        let strategy = &self.kind.strategy;
        loop {
            let (_, kv) = self.backend.get(&key, 0).await?;
            let kv = kv.ok_or_else(|| self.not_found(name))?;
            let mut obj = self.decode(&kv)?;
            self.check_delete_preconditions(name, &obj, opts)?;
            if let (Some(policy), false) = (opts.propagation, meta::is_deleting(&obj)) {
                let fins = policy.finalizers(meta::finalizers(&obj));
                if fins.is_empty() {
                    meta::remove(&mut obj, "finalizers");
                } else {
                    meta::set(&mut obj, "finalizers", json!(fins));
                }
            }
            let grace = strategy.graceful_delete_period(&obj, opts.grace_period_seconds).filter(|g| *g > 0);
            let waits = !meta::finalizers(&obj).is_empty() || strategy.blocks_deletion(&obj) || grace.is_some();
            if waits {
                if meta::is_deleting(&obj) {
                    return Ok(Deleted { object: obj, gone: false });
                }
                let grace = grace.unwrap_or(0);
                meta::set(&mut obj, "deletionTimestamp", json!(meta::now_plus(grace)));
                meta::set(&mut obj, "deletionGracePeriodSeconds", json!(grace));
                let generation = obj["metadata"]["generation"].as_i64().unwrap_or(0) + 1;
                meta::set(&mut obj, "generation", json!(generation));
                strategy.mark_terminating(&mut obj);
                if opts.dry_run {
                    return Ok(Deleted { object: obj, gone: false });
                }
                let out = self.backend.update(&key, self.encode(&obj)?, kv.mod_revision, kv.lease).await?;
                if !out.succeeded {
                    continue;
                }
                meta::set(&mut obj, "resourceVersion", json!(out.revision.to_string()));
                return Ok(Deleted { object: obj, gone: false });
            }
            if opts.dry_run {
                return Ok(Deleted { object: obj, gone: true });
            }
            let out = self.backend.delete(&key, kv.mod_revision).await?;
            if !out.succeeded {
                continue;
            }
            if let Some(h) = &self.hooks {
                h.after_delete(&obj).await;
            }
            return Ok(Deleted { object: obj, gone: true });
        }
    }

    fn check_delete_preconditions(&self, name: &str, obj: &Value, opts: &DeleteOptions) -> ApiResult<()> {
        if let Some(uid) = &opts.precondition_uid {
            if Some(uid.as_str()) != meta::uid(obj) {
                return Err(self.conflict(
                    name,
                    format!("Precondition failed: UID in precondition: {uid}, UID in object meta: {}", meta::uid(obj).unwrap_or_default()),
                ));
            }
        }
        if let Some(rv) = &opts.precondition_rv {
            if Some(rv.as_str()) != meta::resource_version(obj) {
                return Err(self.conflict(
                    name,
                    format!(
                        "Precondition failed: ResourceVersion in precondition: {rv}, ResourceVersion in object meta: {}",
                        meta::resource_version(obj).unwrap_or_default()
                    ),
                ));
            }
        }
        Ok(())
    }
}

/// A status write changes `status` and the metadata status writers own (labels,
/// annotations, ownerReferences, finalizers); everything else stays as stored.
fn status_only(old: &Value, new: &Value) -> Value {
    let mut out = old.clone();
    match new.get("status") {
        Some(s) => out["status"] = s.clone(),
        None => {
            if let Some(o) = out.as_object_mut() {
                o.remove("status");
            }
        }
    }
    for field in ["labels", "annotations", "resourceVersion"] {
        match new["metadata"].get(field) {
            Some(v) => meta::set(&mut out, field, v.clone()),
            None => meta::remove(&mut out, field),
        }
    }
    out
}

/// An `approval` write changes `status.conditions` and what a status write may change in
/// metadata; the rest of the status stays as stored.
fn conditions_only(old: &Value, new: &Value) -> Value {
    let mut out = status_only(old, new);
    let conditions = new["status"].get("conditions").cloned();
    out["status"] = old.get("status").cloned().unwrap_or_else(|| json!({}));
    match conditions {
        Some(c) => out["status"]["conditions"] = c,
        None => {
            if let Some(s) = out["status"].as_object_mut() {
                s.remove("conditions");
            }
        }
    }
    out
}

/// A `finalize` write changes only `spec.finalizers`, as upstream's namespace
/// `finalizeStrategy`.
fn finalizers_only(old: &Value, new: &Value) -> Value {
    let mut out = old.clone();
    match new["spec"].get("finalizers") {
        Some(f) => out["spec"]["finalizers"] = f.clone(),
        None => {
            if let Some(spec) = out.get_mut("spec").and_then(Value::as_object_mut) {
                spec.remove("finalizers");
            }
        }
    }
    if let Some(rv) = new["metadata"].get("resourceVersion") {
        meta::set(&mut out, "resourceVersion", rv.clone());
    }
    out
}

/// Everything but metadata and status: what a generation counts changes of.
fn spec_of(obj: &Value) -> Value {
    let mut o = obj.clone();
    if let Some(m) = o.as_object_mut() {
        m.remove("metadata");
        m.remove("status");
    }
    o
}

fn strip_rv(obj: &Value) -> Value {
    let mut o = obj.clone();
    meta::remove(&mut o, "resourceVersion");
    o
}

/// Objects are stored without resourceVersion: the store's revision is the truth.
pub fn encode(obj: &Value) -> ApiResult<Vec<u8>> {
    serde_json::to_vec(&strip_rv(obj)).map_err(ApiError::internal)
}

/// Decodes stored bytes, stamping the revision as resourceVersion.
pub fn decode_at(bytes: &[u8], revision: i64) -> ApiResult<Value> {
    let mut obj = nesting::from_stored(bytes).map_err(|e| ApiError::internal(format!("corrupt stored object: {e}")))?;
    meta::set(&mut obj, "resourceVersion", json!(revision.to_string()));
    Ok(obj)
}

impl ApiError {
    /// Upstream names both versions in a kind mismatch; keep the message about kinds when
    /// the kinds differ.
    fn kind_mismatch(self, got: &str, want: &str) -> ApiError {
        if !got.is_empty() && got != want {
            ApiError::bad_request(format!("the kind in the data ({got}) does not match the expected kind ({want})"))
        } else {
            self
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::list::{ListOptions, Selection};
    use crate::registry::nesting::MAX_DEPTH;
    use crate::selectors::{fields::FieldSelector, labels::LabelSelector};

    /// A ControllerRevision whose free-form `data` nests `levels` deep (the object, one more).
    fn revision(name: &str, levels: usize) -> Value {
        let data = (0..levels).fold(json!(1), |inner, _| json!({ "a": inner }));
        json!({"apiVersion": "apps/v1", "kind": "ControllerRevision", "metadata": {"name": name}, "revision": 1, "data": data})
    }

    /// The nesting limit through the real store over SQLite: refused at create and at
    /// updates that deepen; an object an older version stored deeper is read, listed,
    /// updated (no deeper) and deleted.
    #[tokio::test]
    async fn writes_are_held_to_the_nesting_limit_and_deeper_stored_objects_stay_served() {
        let dir = tempfile::tempdir().unwrap();
        let backend: Arc<dyn Backend> = kine_sqlite::SqliteBackend::open(&dir.path().join("db")).await.unwrap();
        let kind = crate::kinds::all().into_iter().find(|k| k.info.kind == "ControllerRevision").unwrap();
        let store = GenericStore::new(kind, backend.clone());
        let ns = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "ns", "uid": "u"}});
        backend.create("/registry/namespaces/ns", serde_json::to_vec(&ns).unwrap(), 0).await.unwrap();
        let ctx = ReqCtx { namespace: Some("ns".into()), ..Default::default() };
        let opts = WriteOptions { field_manager: Some("test".into()), ..Default::default() };

        let at_limit = store.decode_body(revision("ok", MAX_DEPTH - 1)).unwrap();
        let created = store.create(&ctx, at_limit, &opts).await.unwrap();
        assert!(created.object["metadata"]["managedFields"].is_array());
        let deeper = store.decode_body(revision("deep", MAX_DEPTH)).unwrap();
        match store.create(&ctx, deeper, &opts).await {
            Err(ApiError::BadRequest(m)) => assert!(
                m.starts_with(r#"ControllerRevision in version "v1" cannot be handled as a ControllerRevision: exceeded max depth of 100"#),
                "{m}"
            ),
            other => panic!("{other:?}"),
        }
        assert!(matches!(store.get(Some("ns"), "deep").await, Err(ApiError::NotFound { .. })));
        let deepen = |cur: &Value| {
            let mut new = cur.clone();
            new["data"] = json!({ "b": cur["data"].clone() });
            Ok(new)
        };
        let refused = store.guaranteed_update(&ctx, "ok", Target::Main, &opts, deepen).await;
        assert!(matches!(refused, Err(ApiError::BadRequest(_))), "{refused:?}");

        let mut legacy = revision("legacy", 140);
        legacy["metadata"]["namespace"] = json!("ns");
        backend.create(&store.key(Some("ns"), "legacy"), serde_json::to_vec(&legacy).unwrap(), 0).await.unwrap();
        assert_eq!(store.get(Some("ns"), "legacy").await.unwrap()["data"], legacy["data"]);
        let everything = Selection { labels: LabelSelector::everything(), fields: FieldSelector::everything() };
        let list_opts = ListOptions { selection: everything, limit: 0, continue_token: None, resource_version: None, resource_version_match: None };
        let names: Vec<String> = store.list(Some("ns"), &list_opts).await.unwrap().items.iter().map(|o| meta::name(o).to_string()).collect();
        assert_eq!(names, ["legacy", "ok"]);
        let label = |cur: &Value| {
            let mut new = cur.clone();
            meta::set(&mut new, "labels", json!({"finalized": "yes"}));
            Ok(new)
        };
        let labelled = store.guaranteed_update(&ctx, "legacy", Target::Main, &opts, label).await.unwrap();
        assert_eq!(labelled.object["metadata"]["labels"]["finalized"], "yes");
        let refused = store.guaranteed_update(&ctx, "legacy", Target::Main, &opts, deepen).await;
        assert!(matches!(refused, Err(ApiError::BadRequest(_))), "{refused:?}");
        assert!(store.delete(&ctx, "legacy", &DeleteOptions::default()).await.unwrap().gone);
        assert!(matches!(store.get(Some("ns"), "legacy").await, Err(ApiError::NotFound { .. })));
    }
}
