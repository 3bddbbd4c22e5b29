//! The per-kind behaviour of the generic store, modelled on upstream's `RESTCreateStrategy`
//! and `RESTUpdateStrategy`. Every hook is synchronous and does no IO; `&mut` marks the hooks
//! that may change the object. Objects are the one dynamic type the store holds (JSON), so
//! built-in kinds and custom resources share this trait.

use std::collections::BTreeMap;

use serde_json::Value;

use crate::error::ApiResult;
use crate::registry::table::{self, Column};
use crate::validation::{self, FieldErrors};

/// Every verb of a stored resource, as discovery lists them.
pub const ALL_VERBS: &[&str] = &["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"];

/// Who asks, and how (what a hook may need besides the object).
#[derive(Clone, Debug, Default)]
pub struct ReqCtx {
    /// Namespace of the request path, if any.
    pub namespace: Option<String>,
    /// Authenticated user name.
    pub user: String,
    /// Groups of the authenticated user.
    pub groups: Vec<String>,
    /// `?dryRun=All`.
    pub dry_run: bool,
    /// The service account token verifier (TokenReview), when the server signs tokens.
    pub tokens: Option<std::sync::Arc<crate::tokens::ServiceAccountTokens>>,
    /// The caller's uid and extra (beside `user` and `groups`).
    pub uid: String,
    pub extra: std::collections::BTreeMap<String, Vec<String>>,
    /// Authorization, for the access reviews and escalation checks (absent in stores
    /// driven outside a server: bootstrap, unit tests).
    pub auth: Option<crate::auth::AuthContext>,
}

impl ReqCtx {
    /// The caller as the authorizers see it.
    pub fn user_info(&self) -> crate::auth::UserInfo {
        crate::auth::UserInfo { name: self.user.clone(), uid: self.uid.clone(), groups: self.groups.clone(), extra: self.extra.clone() }
    }
}

/// Which rule a kind's `metadata.name` follows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NameRule {
    Dns1123Subdomain,
    Dns1123Label,
    Dns1035Label,
    PathSegment,
}

impl NameRule {
    pub fn check(self, name: &str) -> Vec<String> {
        match self {
            NameRule::Dns1123Subdomain => validation::dns1123_subdomain(name),
            NameRule::Dns1123Label => validation::dns1123_label(name),
            NameRule::Dns1035Label => validation::dns1035_label(name),
            NameRule::PathSegment => validation::path_segment_name(name),
        }
    }
}

/// Per-kind hooks. The generic store calls them in a fixed order:
/// create: `apply_defaults` → `prepare_for_create` → `validate` → (common metadata validation)
/// → `warnings_on_create` → `canonicalize`;
/// update: `apply_defaults` → `prepare_for_update` → `validate_update` → (common metadata
/// validation) → `warnings_on_update` → `canonicalize`.
/// Strategies never write system fields (uid, resourceVersion, creationTimestamp, generation).
pub trait Strategy: Send + Sync + 'static {
    /// Fills unset fields with upstream's defaults (scheme defaulting). Runs on every create
    /// and update, before anything else. May mutate.
    fn apply_defaults(&self, _obj: &mut Value) {}

    /// Resets what a create may not set. May mutate. The store has already cleared `status`
    /// for kinds with a status subresource unless `keep_status_on_create` says otherwise.
    fn prepare_for_create(&self, _ctx: &ReqCtx, _obj: &mut Value) {}

    /// Whether a create keeps the status the client sent (Nodes, Events-like kinds).
    fn keep_status_on_create(&self) -> bool {
        false
    }

    /// Validates a new object (not its metadata: the store does that after).
    fn validate(&self, ctx: &ReqCtx, obj: &Value) -> FieldErrors;

    /// Warnings returned to the client on create (`Warning` headers).
    fn warnings_on_create(&self, _ctx: &ReqCtx, _obj: &Value) -> Vec<String> {
        Vec::new()
    }

    /// Normalizes the object just before it is stored. May mutate.
    fn canonicalize(&self, _obj: &mut Value) {}

    /// Whether PUT of a missing object creates it.
    fn allow_create_on_update(&self) -> bool {
        false
    }

    /// Whether PUT without `metadata.resourceVersion` is allowed (last writer wins).
    fn allow_unconditional_update(&self) -> bool {
        true
    }

    /// Prepares an update of the main resource; the store has already restored the old
    /// status for kinds with a status subresource. May mutate `new`.
    fn prepare_for_update(&self, _ctx: &ReqCtx, _new: &mut Value, _old: &Value) {}

    /// Validates an update: by default the new object alone. Immutable-field rules go here.
    fn validate_update(&self, ctx: &ReqCtx, new: &Value, _old: &Value) -> FieldErrors {
        self.validate(ctx, new)
    }

    /// Warnings returned to the client on update.
    fn warnings_on_update(&self, _ctx: &ReqCtx, _new: &Value, _old: &Value) -> Vec<String> {
        Vec::new()
    }

    /// Prepares a write to the `status` (or another status-like) subresource, after the store
    /// restored everything but what that subresource may change. May mutate `new`.
    fn prepare_for_status_update(&self, _ctx: &ReqCtx, _new: &mut Value, _old: &Value) {}

    /// Validates a write to the `status` subresource (the store has restored everything but
    /// `status` and the metadata status writers may change).
    fn validate_status_update(&self, _ctx: &ReqCtx, _new: &Value, _old: &Value) -> FieldErrors {
        Vec::new()
    }

    /// The rule for `metadata.name`.
    fn name_rule(&self) -> NameRule {
        NameRule::Dns1123Subdomain
    }

    /// For kinds deleted gracefully (Pods): the grace period to record in
    /// `metadata.deletionGracePeriodSeconds` instead of deleting now, given the one requested.
    /// `None` deletes immediately.
    fn graceful_delete_period(&self, _obj: &Value, _requested: Option<i64>) -> Option<i64> {
        None
    }

    /// Whether deletion must also wait for something besides `metadata.finalizers`
    /// (Namespaces: `spec.finalizers`). Checked on delete and after every update of an
    /// object being deleted.
    fn blocks_deletion(&self, _obj: &Value) -> bool {
        false
    }

    /// Called when a delete leaves the object in place (finalizers or a grace period): marks
    /// it as terminating beyond `deletionTimestamp` (Namespaces: `status.phase`). May mutate.
    fn mark_terminating(&self, _obj: &mut Value) {}

    /// Fields usable in a field selector and their values for `obj`. Keys must not depend on
    /// the object's content: the store calls it on `{}` to learn which fields are supported.
    fn selectable_fields(&self, obj: &Value) -> BTreeMap<String, String> {
        default_fields(obj)
    }

    /// Drops fields the kind does not define (custom resources: pruning by their schema).
    /// Built-in kinds are pruned by their typed round trip instead. Returns the object.
    fn prune(&self, obj: Value) -> Value {
        obj
    }

    /// Where the `scale` subresource reads and writes replicas.
    fn scale_paths(&self) -> ScalePaths {
        ScalePaths::default()
    }

    /// The OpenAPI schema of this kind when it is not a built-in one (custom resources).
    fn openapi_schema(&self) -> Option<Value> {
        None
    }

    /// Converts an object of this (served) version into the group-resource's storage
    /// version before it is written. Identity unless several versions share one store.
    fn to_storage(&self, obj: Value) -> Value {
        obj
    }

    /// Converts a stored object into this served version after it is read.
    fn from_storage(&self, obj: Value) -> Value {
        obj
    }

    /// The verbs served on the resource (discovery advertises them; others get 405).
    fn verbs(&self) -> &'static [&'static str] {
        ALL_VERBS
    }

    /// For virtual kinds (the access and token reviews): answers a create, the object as
    /// decoded (namespace bound), with the object to return; nothing is stored. `None` (every
    /// stored kind) lets the create proceed.
    fn create_virtual(&self, _ctx: &ReqCtx, _obj: &Value) -> Option<ApiResult<Value>> {
        None
    }

    /// Whether responses convert to a Table (`as=Table`). Kinds that cannot be read back
    /// (virtual ones) do not: a Table-only `Accept` gets 406, as upstream.
    fn table_convertible(&self) -> bool {
        self.verbs().contains(&"get")
    }

    /// Table columns (`kubectl get`), the first being Name.
    fn columns(&self) -> Vec<Column> {
        vec![table::name_column(), table::age_column()]
    }
}

/// Paths of the `scale` subresource (CRDs set them; built-in workloads use the defaults).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScalePaths {
    pub spec_replicas: String,
    pub status_replicas: String,
    /// Where the pod selector is: a LabelSelector object (built-ins: `.spec.selector`) or,
    /// for custom resources, a string in the serialized form.
    pub label_selector: Option<String>,
}

impl Default for ScalePaths {
    fn default() -> Self {
        ScalePaths {
            spec_replicas: ".spec.replicas".into(),
            status_replicas: ".status.replicas".into(),
            label_selector: Some(".spec.selector".into()),
        }
    }
}

/// `metadata.name` and `metadata.namespace`, selectable on every kind.
pub fn default_fields(obj: &Value) -> BTreeMap<String, String> {
    let meta = &obj["metadata"];
    BTreeMap::from([
        ("metadata.name".to_string(), meta["name"].as_str().unwrap_or_default().to_string()),
        ("metadata.namespace".to_string(), meta["namespace"].as_str().unwrap_or_default().to_string()),
    ])
}

/// A kind with no rules of its own beyond metadata (ConfigMap-like objects).
pub struct Plain;

impl Strategy for Plain {
    fn validate(&self, _ctx: &ReqCtx, _obj: &Value) -> FieldErrors {
        Vec::new()
    }
}
