//! Server-side apply: field ownership (`metadata.managedFields`), the apply
//! merge, and conflict detection.
//!
//! A port of the semantics of upstream's `sigs.k8s.io/structured-merge-diff`
//! (`merge.Updater`, `typed`, `fieldpath`) and the field manager stack of
//! `k8s.io/apimachinery/pkg/util/managedfields/internal` (strip-meta,
//! managed-fields updater, skip-non-applied, cap-managers, conflict
//! messages). The module is pure: no IO, time is passed in.
//!
//! Differences from upstream, all for want of a full OpenAPI schema:
//! * Objects are treated as structs whose fields are all known. Upstream
//!   additionally marks keys of `map[string]T` fields as owned nodes
//!   (`"."`) when their values are objects; for the usual string maps
//!   (labels, annotations, data) the result is identical.
//! * On create, upstream compares against the Go zero value of the type,
//!   whose non-pointer structs (`spec`, `spec.template`, ...) already exist,
//!   so those nodes are not recorded as added; here the "old" object is
//!   `{}`, so a creating `Update` manager also owns such nodes (`"."` in
//!   `f:spec`). Ownership of leaves is the same.
//! * All API versions share one field layout: no conversion between the
//!   versions recorded in managers' entries.
//! * Removal that empties an object or list drops the field instead of
//!   leaving `null`.

mod fieldset;
mod typed;

#[cfg(test)]
mod tests;

use fieldset::go_quote;
pub use fieldset::{
    path_to_string, value_cmp, value_eq, FieldSet, FieldSetError, Path, PathElement,
};

use serde_json::{json, Map, Value};
use std::fmt;

// ---------------------------------------------------------------------------
// Schema

/// How a list is merged and owned (`x-kubernetes-list-type`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ListType {
    /// Replaced and owned as a whole.
    Atomic,
    /// A set of scalars; items owned individually as `v:<value>`.
    Set,
    /// Objects identified by these key fields; items owned individually as
    /// `k:{...}` and merged field by field.
    Map(Vec<String>),
}

/// Source of the structural facts the apply machinery needs.
///
/// `path` is the sequence of object field names from the root down to the
/// node; list items are not represented (the containers' ports of a Pod are
/// `["spec","containers","ports"]`), like `patch::strategic::MergeKeys`.
pub trait Schema {
    /// The type of the list at `path`.
    fn list_type(&self, path: &[&str]) -> ListType;

    /// True if the object at `path` is replaced and owned as a whole
    /// (`x-kubernetes-map-type: atomic`, Go `+structType=atomic`).
    fn is_atomic_object(&self, _path: &[&str]) -> bool {
        false
    }

    /// Default of key field `key` of the list-map at `path`, used when an
    /// item omits it (upstream reads the OpenAPI default; e.g. a port's
    /// `protocol` is `"TCP"`, so `{containerPort: 80}` is the item
    /// `k:{"containerPort":80,"protocol":"TCP"}`).
    fn list_key_default(&self, _path: &[&str], _key: &str) -> Option<Value> {
        None
    }
}

/// Any `Fn(&[&str]) -> ListType` is a schema (handy in tests and for
/// per-kind overrides).
impl<F> Schema for F
where
    F: Fn(&[&str]) -> ListType,
{
    fn list_type(&self, path: &[&str]) -> ListType {
        self(path)
    }
}

/// List and map types of the built-in kinds, decided from the last one or
/// two path segments like `patch::strategic::BuiltinMergeKeys`.
///
/// Upstream derives list types from the OpenAPI schema: explicit
/// `+listType`/`+listMapKey` markers, else the strategic-merge-patch
/// strategy (`merge` + key → map on that key, `merge` alone → set), else
/// atomic. Where the markers differ from the patch merge key the keys are
/// composite:
///
/// | list (path)                                            | type                               |
/// |--------------------------------------------------------|------------------------------------|
/// | `containers`, `initContainers`, `ephemeralContainers`  | map on `name`                      |
/// | `volumes`, `env`, `imagePullSecrets`, `resourceClaims`, `schedulingGates` | map on `name`   |
/// | `status.resourceClaimStatuses`, root `secrets`         | map on `name`                      |
/// | `<containers>.ports`                                   | map on `containerPort`, `protocol` |
/// | `spec.ports` (Service)                                 | map on `port`, `protocol`          |
/// | `volumeMounts` / `volumeDevices`                       | map on `mountPath` / `devicePath`  |
/// | `hostAliases`, `status.podIPs`, `status.hostIPs`       | map on `ip`                        |
/// | `conditions`, `status.addresses`                       | map on `type`                      |
/// | `metadata.ownerReferences`                             | map on `uid`                       |
/// | `topologySpreadConstraints`                            | map on `topologyKey`, `whenUnsatisfiable` |
/// | `metadata.finalizers`, `spec.podCIDRs`                 | set                                |
/// | anything else (`tolerations`, `args`, ...)             | atomic                             |
///
/// Atomic objects: label selectors (`selector`, `labelSelector`,
/// `namespaceSelector`, `podSelector`; Service `spec.selector` is an atomic
/// map), node selectors of required node affinity, and the `*KeyRef` /
/// `fieldRef` / `resourceFieldRef` selectors of env vars.
#[derive(Debug, Clone, Copy, Default)]
pub struct BuiltinSchema;

impl Schema for BuiltinSchema {
    fn list_type(&self, path: &[&str]) -> ListType {
        let Some((&last, init)) = path.split_last() else {
            return ListType::Atomic;
        };
        let parent = init.last().copied();
        let keys = |k: &[&str]| ListType::Map(k.iter().map(|s| s.to_string()).collect());
        match last {
            "containers"
            | "initContainers"
            | "ephemeralContainers"
            | "volumes"
            | "env"
            | "imagePullSecrets"
            | "resourceClaims"
            | "schedulingGates" => keys(&["name"]),
            "resourceClaimStatuses" if parent == Some("status") => keys(&["name"]),
            "secrets" if init.is_empty() => keys(&["name"]),
            "ports" => match parent {
                Some("containers" | "initContainers" | "ephemeralContainers") => {
                    keys(&["containerPort", "protocol"])
                }
                _ if path == ["spec", "ports"] => keys(&["port", "protocol"]),
                _ => ListType::Atomic,
            },
            "volumeMounts" => keys(&["mountPath"]),
            "volumeDevices" => keys(&["devicePath"]),
            "hostAliases" => keys(&["ip"]),
            "podIPs" | "hostIPs" if parent == Some("status") => keys(&["ip"]),
            "conditions" => keys(&["type"]),
            "addresses" if parent == Some("status") => keys(&["type"]),
            "ownerReferences" if parent == Some("metadata") => keys(&["uid"]),
            "topologySpreadConstraints" => keys(&["topologyKey", "whenUnsatisfiable"]),
            "finalizers" if parent == Some("metadata") => ListType::Set,
            "podCIDRs" if parent == Some("spec") => ListType::Set,
            _ => ListType::Atomic,
        }
    }

    fn is_atomic_object(&self, path: &[&str]) -> bool {
        let Some((&last, init)) = path.split_last() else {
            return false;
        };
        match last {
            "selector" | "labelSelector" | "namespaceSelector" | "podSelector" => true,
            "requiredDuringSchedulingIgnoredDuringExecution" => {
                init.last() == Some(&"nodeAffinity")
            }
            "configMapKeyRef" | "secretKeyRef" | "fieldRef" | "resourceFieldRef" => true,
            _ => false,
        }
    }

    fn list_key_default(&self, path: &[&str], key: &str) -> Option<Value> {
        // Both port lists default their protocol to TCP in the OpenAPI schema.
        (key == "protocol" && path.last() == Some(&"ports")).then(|| json!("TCP"))
    }
}

// ---------------------------------------------------------------------------
// Managed fields entries

/// `metadata.managedFields[].operation`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Operation {
    /// Server-side apply (`application/apply-patch+yaml`).
    Apply,
    /// Any other write: create, update, non-apply patch.
    Update,
}

impl Operation {
    /// The wire value.
    pub fn as_str(self) -> &'static str {
        match self {
            Operation::Apply => "Apply",
            Operation::Update => "Update",
        }
    }
}

/// Error decoding `metadata.managedFields`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManagedFieldsError(pub String);

impl fmt::Display for ManagedFieldsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ManagedFieldsError {}

/// One item of `metadata.managedFields` (upstream `ManagedFieldsEntry`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManagedFieldsEntry {
    /// The field manager's name.
    pub manager: String,
    /// Apply or Update.
    pub operation: Operation,
    /// API version the fields were recorded in.
    pub api_version: String,
    /// RFC 3339 time of the entry's last change, if known.
    pub time: Option<String>,
    /// The owned fields.
    pub fields: FieldSet,
    /// Subresource the writes went through (`status`, `scale`), if any.
    pub subresource: Option<String>,
}

impl ManagedFieldsEntry {
    /// Encodes as a `metadata.managedFields` item.
    pub fn to_json(&self) -> Value {
        let mut m = Map::new();
        m.insert("manager".into(), json!(self.manager));
        m.insert("operation".into(), json!(self.operation.as_str()));
        m.insert("apiVersion".into(), json!(self.api_version));
        if let Some(t) = &self.time {
            m.insert("time".into(), json!(t));
        }
        m.insert("fieldsType".into(), json!("FieldsV1"));
        m.insert("fieldsV1".into(), self.fields.to_fields_v1());
        if let Some(s) = self.subresource.as_deref().filter(|s| !s.is_empty()) {
            m.insert("subresource".into(), json!(s));
        }
        Value::Object(m)
    }

    /// Decodes one `metadata.managedFields` item, validating it like
    /// upstream `DecodeManagedFields` (`index` goes into messages).
    pub fn from_json(v: &Value, index: usize) -> Result<Self, ManagedFieldsError> {
        let err = |m: String| ManagedFieldsError(m);
        let obj = v
            .as_object()
            .ok_or_else(|| err(format!("managed fields entry {index} must be an object")))?;
        let s = |k: &str| obj.get(k).and_then(Value::as_str).unwrap_or("");
        let operation = match s("operation") {
            "Apply" => Operation::Apply,
            "Update" => Operation::Update,
            _ => return Err(err("operation must be `Apply` or `Update`".into())),
        };
        if s("apiVersion").is_empty() {
            return Err(err("apiVersion must not be empty".into()));
        }
        match s("fieldsType") {
            "FieldsV1" => {}
            "" => {
                return Err(err(format!(
                    "missing fieldsType in managed fields entry {index}"
                )))
            }
            other => {
                return Err(err(format!(
                    "invalid fieldsType {other:?} in managed fields entry {index}"
                )))
            }
        }
        let fields = match obj.get("fieldsV1") {
            None | Some(Value::Null) => FieldSet::new(),
            Some(f) => FieldSet::from_fields_v1(f).map_err(|e| {
                err(format!(
                    "error decoding versioned set from entry {index}: {e}"
                ))
            })?,
        };
        Ok(ManagedFieldsEntry {
            manager: s("manager").to_string(),
            operation,
            api_version: s("apiVersion").to_string(),
            time: obj.get("time").and_then(Value::as_str).map(str::to_string),
            fields,
            subresource: Some(s("subresource"))
                .filter(|s| !s.is_empty())
                .map(str::to_string),
        })
    }

    /// Upstream's manager identifier (`BuildManagerIdentifier`): the entry
    /// as Go JSON without fields and time, and without the API version for
    /// appliers (so an applier keeps one entry across versions). Entries
    /// with equal identifiers are the same manager; conflicts are grouped
    /// and sorted by it.
    pub fn identifier(&self) -> String {
        let mut s = String::from("{");
        let mut parts = Vec::new();
        if !self.manager.is_empty() {
            parts.push(format!("\"manager\":{}", go_json_str(&self.manager)));
        }
        parts.push(format!("\"operation\":\"{}\"", self.operation.as_str()));
        if self.operation == Operation::Update && !self.api_version.is_empty() {
            parts.push(format!("\"apiVersion\":{}", go_json_str(&self.api_version)));
        }
        if let Some(sub) = self.subresource.as_deref().filter(|s| !s.is_empty()) {
            parts.push(format!("\"subresource\":{}", go_json_str(sub)));
        }
        s.push_str(&parts.join(","));
        s.push('}');
        s
    }

    fn same_manager(&self, other: &ManagedFieldsEntry) -> bool {
        self.identifier() == other.identifier()
    }

    /// How conflict messages name this manager (upstream `printManager`):
    /// `"kubectl"`, `"ctl" with subresource "status"`, `"kube-controller-manager" using apps/v1`.
    pub fn printed(&self) -> String {
        let mut s = go_quote(&self.manager);
        if let Some(sub) = self.subresource.as_deref().filter(|s| !s.is_empty()) {
            s.push_str(&format!(" with subresource {}", go_quote(sub)));
        }
        if self.operation == Operation::Update {
            // The identifier never carries a time, so upstream never prints one.
            s.push_str(&format!(" using {}", self.api_version));
        }
        s
    }
}

fn go_json_str(s: &str) -> String {
    // Manager names and versions are plain text; serde_json's escaping
    // matches Go's for everything but HTML characters, which Go escapes.
    serde_json::to_string(s)
        .unwrap_or_default()
        .replace('<', "\\u003c")
        .replace('>', "\\u003e")
        .replace('&', "\\u0026")
}

/// Decodes a `metadata.managedFields` array (`null`/absent → empty).
///
/// Later entries with the same identifier replace earlier ones, as upstream
/// decodes into a map.
pub fn decode_managed_fields(v: &Value) -> Result<Vec<ManagedFieldsEntry>, ManagedFieldsError> {
    let items = match v {
        Value::Null => return Ok(Vec::new()),
        Value::Array(items) => items,
        _ => return Err(ManagedFieldsError("managedFields must be a list".into())),
    };
    let mut out: Vec<ManagedFieldsEntry> = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let e = ManagedFieldsEntry::from_json(item, i)?;
        out.retain(|o| !o.same_manager(&e));
        out.push(e);
    }
    Ok(out)
}

/// The decoded `metadata.managedFields` of an object.
pub fn managed_fields_of(obj: &Value) -> Result<Vec<ManagedFieldsEntry>, ManagedFieldsError> {
    decode_managed_fields(
        obj.pointer("/metadata/managedFields")
            .unwrap_or(&Value::Null),
    )
}

/// Encodes entries as a `metadata.managedFields` array in upstream's order:
/// Apply before Update, then by time, manager, API version, subresource.
pub fn encode_managed_fields(entries: &[ManagedFieldsEntry]) -> Value {
    let mut sorted = entries.to_vec();
    sort_entries(&mut sorted);
    Value::Array(sorted.iter().map(ManagedFieldsEntry::to_json).collect())
}

/// Sorts entries in upstream's stored order (`sortEncodedManagedFields`).
pub fn sort_entries(entries: &mut [ManagedFieldsEntry]) {
    entries.sort_by(|p, q| {
        p.operation
            .cmp(&q.operation)
            .then_with(|| time_seconds(&p.time).cmp(&time_seconds(&q.time)))
            .then_with(|| p.manager.cmp(&q.manager))
            .then_with(|| p.api_version.cmp(&q.api_version))
            .then_with(|| {
                p.subresource
                    .as_deref()
                    .unwrap_or("")
                    .cmp(q.subresource.as_deref().unwrap_or(""))
            })
    });
}

fn time_seconds(t: &Option<String>) -> i64 {
    t.as_deref()
        .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
        .map(|t| t.timestamp())
        .unwrap_or(0)
}

/// Writes `entries` into `obj.metadata.managedFields` (removing the field
/// when there are none, as upstream stores nil).
pub fn set_managed_fields(obj: &mut Value, entries: &[ManagedFieldsEntry]) {
    let Some(root) = obj.as_object_mut() else {
        return;
    };
    if entries.is_empty() {
        if let Some(Value::Object(meta)) = root.get_mut("metadata") {
            meta.remove("managedFields");
        }
        return;
    }
    let meta = root
        .entry("metadata")
        .or_insert_with(|| Value::Object(Map::new()));
    if let Value::Object(meta) = meta {
        meta.insert("managedFields".into(), encode_managed_fields(entries));
    }
}

// ---------------------------------------------------------------------------
// Conflicts and errors

/// A field another manager owns that an apply would change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conflict {
    /// The other manager's name.
    pub manager: String,
    /// Its operation.
    pub operation: Operation,
    /// Its entry's API version.
    pub api_version: String,
    /// Its subresource, if any.
    pub subresource: Option<String>,
    /// The field, printed like upstream: `.spec.template.spec.containers[name="c"].image`.
    pub path: String,
    identifier: String,
    printed: String,
}

impl Conflict {
    fn new(owner: &ManagedFieldsEntry, path: &[PathElement]) -> Self {
        Conflict {
            manager: owner.manager.clone(),
            operation: owner.operation,
            api_version: owner.api_version.clone(),
            subresource: owner.subresource.clone(),
            path: path_to_string(path),
            identifier: owner.identifier(),
            printed: owner.printed(),
        }
    }

    /// The manager as conflict messages print it (`"m" using v1`).
    pub fn printed_manager(&self) -> &str {
        &self.printed
    }

    /// The `message` of this conflict's `StatusCause` (whose `type` is
    /// `FieldManagerConflict` and `field` is [`Conflict::path`]).
    pub fn cause_message(&self) -> String {
        format!("conflict with {}", self.printed)
    }
}

/// Apply conflicts; `Display` gives upstream's status message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conflicts(pub Vec<Conflict>);

impl fmt::Display for Conflicts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let c = &self.0;
        if c.len() == 1 {
            return write!(
                f,
                "Apply failed with 1 conflict: conflict with {}: {}",
                c[0].printed, c[0].path
            );
        }
        // Grouped by manager identifier, sorted; paths in found order.
        let mut ids: Vec<&str> = c.iter().map(|x| x.identifier.as_str()).collect();
        ids.sort();
        ids.dedup();
        let mut lines = Vec::new();
        for id in ids {
            let group: Vec<&Conflict> = c.iter().filter(|x| x.identifier == id).collect();
            lines.push(format!("conflicts with {}:", group[0].printed));
            lines.extend(group.iter().map(|x| format!("- {}", x.path)));
        }
        write!(
            f,
            "Apply failed with {} conflicts: {}",
            c.len(),
            lines.join("\n")
        )
    }
}

impl std::error::Error for Conflicts {}

/// Why an apply failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ApplyError {
    /// Other managers own fields the apply would change (HTTP 409).
    Conflicts(Conflicts),
    /// The configuration is unusable, e.g. list items without their keys,
    /// duplicated keys, or `metadata.managedFields` set (HTTP 400/422).
    Invalid(String),
}

impl fmt::Display for ApplyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ApplyError::Conflicts(c) => c.fmt(f),
            ApplyError::Invalid(m) => f.write_str(m),
        }
    }
}

impl std::error::Error for ApplyError {}

impl From<Conflicts> for ApplyError {
    fn from(c: Conflicts) -> Self {
        ApplyError::Conflicts(c)
    }
}

// ---------------------------------------------------------------------------
// Field sets of objects

/// Paths upstream never records ownership of (`stripMetaManager`): they are
/// removed exactly (not their sub-trees) from the acting manager's set.
fn strip_set() -> FieldSet {
    let f = |p: &[&str]| p.iter().map(|s| PathElement::field(*s)).collect::<Path>();
    FieldSet::from_paths([
        f(&["apiVersion"]),
        f(&["kind"]),
        f(&["metadata"]),
        f(&["metadata", "name"]),
        f(&["metadata", "namespace"]),
        f(&["metadata", "creationTimestamp"]),
        f(&["metadata", "selfLink"]),
        f(&["metadata", "uid"]),
        f(&["metadata", "clusterName"]),
        f(&["metadata", "generation"]),
        f(&["metadata", "managedFields"]),
        f(&["metadata", "resourceVersion"]),
    ])
}

/// The fields set in `obj` as an applier of it would own them: leaves,
/// atomic lists and objects, list items, empty objects; minus what upstream
/// strips from ownership (`apiVersion`, `kind`, and `metadata.name`,
/// `namespace`, `uid`, `resourceVersion`, `generation`,
/// `creationTimestamp`, `selfLink`, `managedFields`). Those are never
/// shown in `kubectl get --show-managed-fields`; `metadata.labels`,
/// `annotations`, `finalizers`, `ownerReferences` are owned normally.
pub fn fields_of(obj: &Value, schema: &dyn Schema) -> FieldSet {
    typed::to_field_set(&without_managed_fields(obj), schema).difference(&strip_set())
}

fn without_managed_fields(obj: &Value) -> Value {
    let mut o = obj.clone();
    if let Some(Value::Object(meta)) = o.get_mut("metadata") {
        meta.remove("managedFields");
    }
    o
}

// ---------------------------------------------------------------------------
// Apply and update

/// The writer of an apply or update.
#[derive(Debug, Clone, Copy)]
pub struct Writer<'a> {
    /// Field manager name (`fieldManager` query parameter or derived from
    /// the user agent).
    pub manager: &'a str,
    /// API version of the request (`group/version`, `v1` for core).
    pub api_version: &'a str,
    /// Subresource written through (`status`, `scale`), if any.
    pub subresource: Option<&'a str>,
    /// Fields whose changes are not tracked for this request (upstream
    /// "reset fields" of the strategy, e.g. `status` on the main resource):
    /// everything at or below a member is ignored.
    pub ignored: Option<&'a FieldSet>,
}

impl<'a> Writer<'a> {
    /// A writer to the main resource with nothing ignored.
    pub fn new(manager: &'a str, api_version: &'a str) -> Self {
        Writer {
            manager,
            api_version,
            subresource: None,
            ignored: None,
        }
    }

    fn entry(
        &self,
        operation: Operation,
        fields: FieldSet,
        time: Option<String>,
    ) -> ManagedFieldsEntry {
        ManagedFieldsEntry {
            manager: if self.manager.is_empty() {
                "unknown".into()
            } else {
                self.manager.into()
            },
            operation,
            api_version: self.api_version.into(),
            time,
            fields,
            subresource: self
                .subresource
                .filter(|s| !s.is_empty())
                .map(str::to_string),
        }
    }

    fn filter(&self, set: FieldSet) -> FieldSet {
        match self.ignored {
            Some(ig) => set.recursive_difference(ig),
            None => set,
        }
    }
}

/// Manager upstream attributes pre-existing fields to when the first apply
/// hits an object with no managed fields (`skipNonAppliedManager`).
pub const BEFORE_FIRST_APPLY: &str = "before-first-apply";

/// Most Update entries kept; older ones are merged per API version into
/// `ancient-changes` (upstream `DefaultMaxUpdateManagers`).
pub const MAX_UPDATE_MANAGERS: usize = 10;

/// Server-side apply of `config` by `manager` to `live` (`null` when the
/// object does not exist yet, i.e. create via apply).
///
/// Returns the new object (without `metadata.managedFields`; store the
/// returned entries with [`set_managed_fields`]) and the new entries, in
/// upstream's stored order.
///
/// * The config is merged into the live object: objects field by field,
///   list-maps item by item (live order kept, config order among shared
///   items, new items placed as the config places them), sets by union,
///   atomic values replaced.
/// * The manager's Apply entry becomes exactly the config's fields.
/// * Fields the manager applied last time but not now are removed from the
///   object unless another manager (or this apply) still owns them; shared
///   fields are just released.
/// * Changing a field (to a different value) that another manager owns is a
///   conflict unless `force`, which moves it to this manager. Setting a
///   field to the value it already has shares ownership instead. As
///   upstream, the manager's own Update entry (same name, operation
///   Update) is a different manager and can conflict with its applies
///   (kubernetes/kubernetes#107417).
#[allow(clippy::too_many_arguments)] // the signature mirrors the handler's inputs
pub fn apply(
    live: &Value,
    config: &Value,
    managed: &[ManagedFieldsEntry],
    manager: &str,
    api_version: &str,
    force: bool,
    schema: &dyn Schema,
    now: &str,
) -> Result<(Value, Vec<ManagedFieldsEntry>), ApplyError> {
    apply_as(
        live,
        config,
        managed,
        &Writer::new(manager, api_version),
        force,
        schema,
        now,
    )
}

/// [`apply`] with subresource and ignored fields.
pub fn apply_as(
    live: &Value,
    config: &Value,
    managed: &[ManagedFieldsEntry],
    writer: &Writer<'_>,
    force: bool,
    schema: &dyn Schema,
    now: &str,
) -> Result<(Value, Vec<ManagedFieldsEntry>), ApplyError> {
    if !config.is_object() {
        return Err(ApplyError::Invalid(
            "apply configuration must be an object".into(),
        ));
    }
    if config
        .pointer("/metadata/managedFields")
        .is_some_and(|v| !v.is_null())
    {
        return Err(ApplyError::Invalid(
            "metadata.managedFields must be nil".into(),
        ));
    }
    let live_obj = if live.is_null() {
        json!({})
    } else {
        without_managed_fields(live)
    };
    let mut managers: Vec<ManagedFieldsEntry> = managed.to_vec();

    // An existing object nobody owns anything of (created before tracking,
    // or its managedFields reset): its current fields go to a placeholder
    // Update manager first, so the apply cannot silently take them over.
    if managers.is_empty() && !live.is_null() {
        let before = Writer {
            manager: BEFORE_FIRST_APPLY,
            api_version: writer.api_version,
            subresource: writer.subresource,
            ignored: writer.ignored,
        };
        managers = update_tracked(&json!({}), &live_obj, &[], &before, schema, now);
    }

    let merged = typed::merge(&live_obj, config, schema).map_err(ApplyError::Invalid)?;
    let me = writer.entry(Operation::Apply, FieldSet::new(), None);
    let previous = managers
        .iter()
        .position(|e| e.same_manager(&me))
        .map(|i| managers.remove(i));
    let last_set = previous
        .as_ref()
        .map(|e| e.fields.clone())
        .unwrap_or_default();
    let new_set = writer.filter(typed::to_field_set(config, schema));

    // Prune what this manager stopped applying and nobody else owns. A
    // field node counts as owned when anything below it is (upstream
    // `EnsureNamedFieldsAreMembers`), so `spec` survives while any `spec.*`
    // is owned.
    let new_obj = if last_set.is_empty() {
        merged
    } else {
        let mut owned = new_set.clone();
        for e in &managers {
            owned.union_with(&e.fields);
        }
        let to_remove = last_set
            .ensure_named_fields_are_members()
            .difference(&owned.ensure_named_fields_are_members());
        typed::remove_items(&merged, &to_remove, schema)
    };

    // Conflicts: others' fields this apply modifies or adds.
    let mut cmp = typed::compare(&live_obj, &new_obj, schema);
    if let Some(ig) = writer.ignored {
        cmp.exclude(ig);
    }
    let changed = cmp.changed();
    let mut conflicts = Vec::new();
    for e in &mut managers {
        let hit = e.fields.intersection(&changed);
        if !hit.is_empty() {
            conflicts.extend(hit.paths().iter().map(|p| Conflict::new(e, p)));
            e.fields = e.fields.difference(&hit);
        }
        e.fields = e.fields.difference(&cmp.removed);
    }
    if !conflicts.is_empty() && !force {
        conflicts.sort_by(|a, b| a.identifier.cmp(&b.identifier));
        return Err(Conflicts(conflicts).into());
    }
    managers.retain(|e| !e.fields.is_empty());

    let changed_object = !value_eq(&live_obj, &new_obj);
    let my_set = new_set.difference(&strip_set());
    if !my_set.is_empty() {
        // Upstream only stamps the time when the object changed.
        let time = match (&previous, changed_object) {
            (Some(p), false) => p.time.clone().or_else(|| Some(now.to_string())),
            _ => Some(now.to_string()),
        };
        managers.push(writer.entry(Operation::Apply, my_set, time));
    }
    sort_entries(&mut managers);
    Ok((new_obj, managers))
}

/// Ownership after a non-apply write (create, update, JSON/merge/strategic
/// patch) by `manager` turning `old` (`null` on create) into `new`.
///
/// Fields the write adds or changes move to the manager's Update entry
/// (per manager, API version and subresource) and leave every other
/// entry; removed fields leave every entry; empty entries are dropped.
/// Entries beyond [`MAX_UPDATE_MANAGERS`] Update entries are merged into
/// `ancient-changes`.
///
/// As upstream, an existing object without managed fields stays untracked
/// (the result is empty): that is how clients reset managedFields, by
/// writing `managedFields: []`, which the caller passes here as `managed`.
#[allow(clippy::too_many_arguments)] // the signature mirrors the handler's inputs
pub fn update(
    old: &Value,
    new: &Value,
    managed: &[ManagedFieldsEntry],
    manager: &str,
    api_version: &str,
    subresource: Option<&str>,
    schema: &dyn Schema,
    now: &str,
) -> Vec<ManagedFieldsEntry> {
    let writer = Writer {
        manager,
        api_version,
        subresource,
        ignored: None,
    };
    update_as(old, new, managed, &writer, schema, now)
}

/// [`update`] with ignored fields.
pub fn update_as(
    old: &Value,
    new: &Value,
    managed: &[ManagedFieldsEntry],
    writer: &Writer<'_>,
    schema: &dyn Schema,
    now: &str,
) -> Vec<ManagedFieldsEntry> {
    if managed.is_empty() && !old.is_null() {
        return Vec::new();
    }
    let old_obj = if old.is_null() {
        json!({})
    } else {
        without_managed_fields(old)
    };
    update_tracked(
        &old_obj,
        &without_managed_fields(new),
        managed,
        writer,
        schema,
        now,
    )
}

fn update_tracked(
    old: &Value,
    new: &Value,
    managed: &[ManagedFieldsEntry],
    writer: &Writer<'_>,
    schema: &dyn Schema,
    now: &str,
) -> Vec<ManagedFieldsEntry> {
    let mut cmp = typed::compare(old, new, schema);
    if let Some(ig) = writer.ignored {
        cmp.exclude(ig);
    }
    let changed = cmp.changed();
    let mut managers: Vec<ManagedFieldsEntry> = managed.to_vec();
    // Updates always win: changed fields leave every entry (the writer's
    // own included; they are added back below), removed fields too.
    for e in &mut managers {
        e.fields = e.fields.difference(&changed).difference(&cmp.removed);
    }
    let mine = writer.filter(changed).difference(&strip_set());
    let me = writer.entry(Operation::Update, FieldSet::new(), None);
    if !mine.is_empty() {
        match managers.iter_mut().find(|e| e.same_manager(&me)) {
            Some(e) => {
                e.fields.union_with(&mine);
                e.time = Some(now.to_string());
            }
            None => managers.push(writer.entry(Operation::Update, mine, Some(now.to_string()))),
        }
    }
    managers.retain(|e| !e.fields.is_empty());
    cap_update_managers(&mut managers);
    sort_entries(&mut managers);
    managers
}

/// Merges the oldest Update entries into one `ancient-changes` entry per API
/// version until at most [`MAX_UPDATE_MANAGERS`] remain (upstream
/// `capManagersManager`), so a stream of one-off writers cannot grow
/// managedFields without bound.
fn cap_update_managers(managers: &mut Vec<ManagedFieldsEntry>) {
    let mut updaters: Vec<usize> = (0..managers.len())
        .filter(|&i| managers[i].operation == Operation::Update)
        .collect();
    if updaters.len() <= MAX_UPDATE_MANAGERS {
        return;
    }
    updaters.sort_by(|&a, &b| {
        let (p, q) = (&managers[a], &managers[b]);
        time_seconds(&p.time)
            .cmp(&time_seconds(&q.time))
            .then_with(|| p.identifier().cmp(&q.identifier()))
    });
    let mut length = updaters.len();
    let mut first_per_version: Vec<(String, usize)> = Vec::new();
    let mut bucket_per_version: Vec<(String, usize)> = Vec::new();
    let mut dropped = vec![false; managers.len()];
    for &i in &updaters {
        if length <= MAX_UPDATE_MANAGERS {
            break;
        }
        let version = managers[i].api_version.clone();
        let Some(&(_, first)) = first_per_version.iter().find(|(v, _)| *v == version) else {
            first_per_version.push((version, i));
            continue;
        };
        // The version's bucket: one already made, else an existing
        // `ancient-changes` entry (the oldest entry then stays as it is, as
        // upstream), else the version's oldest entry renamed.
        let existing = bucket_per_version
            .iter()
            .find(|(v, _)| *v == version)
            .map(|&(_, b)| b)
            .or_else(|| {
                managers.iter().position(|e| {
                    e.manager == "ancient-changes"
                        && e.operation == Operation::Update
                        && e.api_version == version
                        && e.subresource.is_none()
                })
            });
        let bucket = match existing {
            Some(b) => b,
            None => {
                let b = &mut managers[first];
                b.manager = "ancient-changes".into();
                b.subresource = None;
                first
            }
        };
        if !bucket_per_version.iter().any(|(v, _)| *v == version) {
            bucket_per_version.push((version, bucket));
        }
        if bucket == i {
            // The bucket itself came up; merging it into itself would
            // delete it.
            continue;
        }
        let fields = managers[i].fields.clone();
        let time = managers[i].time.clone();
        managers[bucket].fields.union_with(&fields);
        managers[bucket].time = time;
        dropped[i] = true;
        length -= 1;
    }
    let mut idx = 0;
    managers.retain(|_| {
        let keep = !dropped[idx];
        idx += 1;
        keep
    });
}
