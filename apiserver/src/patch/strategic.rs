//! Strategic merge patch (`application/strategic-merge-patch+json`), the
//! patch type used by `kubectl apply` and `kubectl patch --type=strategic`.
//!
//! This is a port of the *apply* half of upstream
//! `k8s.io/apimachinery/pkg/util/strategicpatch` (`StrategicMergePatch` with
//! `MergeParallelList` and `IgnoreUnmatchedNulls`, the options the API
//! server uses). Upstream reads per-field patch strategies from Go struct
//! tags; here the caller supplies them through [`MergeKeys`], keyed by the
//! path of object field names leading to a list.
//!
//! Semantics:
//! * objects merge recursively; a `null` in the patch deletes the key;
//! * lists follow their [`ListStrategy`]: replaced wholesale (default),
//!   merged by a key field, or unioned (primitives);
//! * directives: `$patch` (`replace` / `delete` on a map, `replace` /
//!   `delete` as a list item), `$retainKeys`, `$deleteFromPrimitiveList/<f>`
//!   and `$setElementOrder/<f>`. Directives are consumed: none is left in
//!   the result.
//!
//! Ordering of merged lists follows upstream exactly: items named by the
//! patch (or by `$setElementOrder`) take the patch's order, and items only
//! present on the server are interleaved according to their position in the
//! original list. A consequence worth knowing: an item added by a patch
//! without `$setElementOrder` lands *before* the server-only items
//! (`[a,b]` patched with `[c]` gives `[c,a,b]`), exactly like upstream.
//!
//! Deliberate deviations, all in the direction of never leaking directives:
//! values that upstream copies verbatim (a key absent from the original,
//! a type change, items of a replaced list) are first merged into an empty
//! value, so nested directives are applied and unmatched `null`s dropped.
//!
//! This module is pure: it depends only on `std` and `serde_json`.

use std::collections::HashSet;
use std::fmt;

use serde_json::{Map, Value};

const DIRECTIVE_MARKER: &str = "$patch";
const REPLACE_DIRECTIVE: &str = "replace";
const DELETE_DIRECTIVE: &str = "delete";
const MERGE_DIRECTIVE: &str = "merge";
const RETAIN_KEYS_DIRECTIVE: &str = "$retainKeys";
const DELETE_FROM_PRIMITIVE_LIST_PREFIX: &str = "$deleteFromPrimitiveList";
const SET_ELEMENT_ORDER_PREFIX: &str = "$setElementOrder";

const ERR_BAD_JSON_DOC: &str = "invalid JSON document";
const ERR_NO_LIST_OF_LISTS: &str = "lists of lists are not supported";
const ERR_BAD_PATCH_FORMAT_FOR_PRIMITIVE_LIST: &str = "invalid patch format of primitive list";
const ERR_BAD_PATCH_FORMAT_FOR_RETAIN_KEYS: &str = "invalid patch format of retainKeys";
const ERR_BAD_PATCH_FORMAT_FOR_SET_ELEMENT_ORDER_LIST: &str =
    "invalid patch format of setElementOrder list";
const ERR_PATCH_CONTENT_NOT_MATCH_RETAIN_KEYS: &str = "patch content doesn't match retainKeys list";

/// Error for a malformed strategic merge patch. Messages follow upstream
/// (`mergepatch` errors), e.g. `map: {"image":"x"} does not contain declared
/// merge key: name`. All of them are client errors (HTTP 400/422).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PatchError {
    message: String,
}

impl PatchError {
    fn new(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
        }
    }

    /// The human-readable message.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for PatchError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for PatchError {}

/// How a list field is patched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ListStrategy {
    /// The patch's list replaces the original (upstream default, "atomic").
    Replace,
    /// Items are objects identified by this field (upstream
    /// `patchStrategy:"merge" patchMergeKey:"<key>"`): matching items merge
    /// recursively, new ones are added, `{"$patch":"delete", key: v}`
    /// removes one. Lists of primitives under this strategy are unioned.
    MergeByKey(String),
    /// Lists of primitives merged as a set union, order kept (upstream
    /// `patchStrategy:"merge"` without a merge key, e.g. `finalizers`).
    MergePrimitives,
}

impl ListStrategy {
    /// Shorthand for [`ListStrategy::MergeByKey`].
    pub fn by_key(key: &str) -> Self {
        ListStrategy::MergeByKey(key.to_string())
    }
}

/// Source of list patch strategies.
///
/// `path` is the sequence of object field names from the document root down
/// to the list field; list indices are not included. For a Deployment's
/// containers it is `["spec","template","spec","containers"]`, for their
/// ports `["spec","template","spec","containers","ports"]`.
pub trait MergeKeys {
    /// The strategy for the list at `path`.
    fn merge_key(&self, path: &[&str]) -> ListStrategy;
}

/// Any `Fn(&[&str]) -> ListStrategy` is a schema (handy in tests and for
/// per-kind overrides).
impl<F> MergeKeys for F
where
    F: Fn(&[&str]) -> ListStrategy,
{
    fn merge_key(&self, path: &[&str]) -> ListStrategy {
        self(path)
    }
}

/// Patch strategies of the built-in Kubernetes kinds, decided from the last
/// one or two path segments.
///
/// | list field (path)                                   | strategy                       |
/// |-----------------------------------------------------|--------------------------------|
/// | `containers`, `initContainers`, `ephemeralContainers` | merge by `name`              |
/// | `volumes`, `env`, `imagePullSecrets`                | merge by `name`                |
/// | `resourceClaims`, `schedulingGates`                 | merge by `name`                |
/// | `status.resourceClaimStatuses`                      | merge by `name`                |
/// | `secrets` at the root (ServiceAccount)              | merge by `name`                |
/// | `<containers\|initContainers\|ephemeralContainers>.ports` | merge by `containerPort` |
/// | `spec.ports` (Service)                              | merge by `port`                |
/// | `volumeMounts`                                      | merge by `mountPath`           |
/// | `volumeDevices`                                     | merge by `devicePath`          |
/// | `hostAliases`                                       | merge by `ip`                  |
/// | `status.podIPs`, `status.hostIPs`                   | merge by `ip`                  |
/// | `conditions`                                        | merge by `type`                |
/// | `status.addresses` (Node)                           | merge by `type`                |
/// | `metadata.ownerReferences`                          | merge by `uid`                 |
/// | `topologySpreadConstraints`                         | merge by `topologyKey`         |
/// | `metadata.finalizers`                               | primitive union                |
/// | `spec.podCIDRs` (Node)                              | primitive union                |
/// | anything else                                       | replace                        |
///
/// Upstream decides by Go type, not path, but among built-in kinds the only
/// field name whose strategy differs by kind is `ports` (Service ports merge
/// by `port`, container ports by `containerPort`, other `ports` lists such
/// as NetworkPolicy's or EndpointSlice's are atomic); the path tells those
/// apart, so a per-kind table is unnecessary. Fields are restricted to their
/// parent where a same-named atomic field exists elsewhere (e.g. Namespace
/// `spec.finalizers`, Endpoints `subsets[].addresses`).
#[derive(Debug, Clone, Copy, Default)]
pub struct BuiltinMergeKeys;

impl MergeKeys for BuiltinMergeKeys {
    fn merge_key(&self, path: &[&str]) -> ListStrategy {
        let Some((&last, init)) = path.split_last() else {
            return ListStrategy::Replace;
        };
        let parent = init.last().copied();
        match last {
            "containers"
            | "initContainers"
            | "ephemeralContainers"
            | "volumes"
            | "env"
            | "imagePullSecrets"
            | "resourceClaims"
            | "schedulingGates" => ListStrategy::by_key("name"),
            "resourceClaimStatuses" if parent == Some("status") => ListStrategy::by_key("name"),
            "secrets" if init.is_empty() => ListStrategy::by_key("name"),
            "ports" => match parent {
                Some("containers" | "initContainers" | "ephemeralContainers") => {
                    ListStrategy::by_key("containerPort")
                }
                _ if path == ["spec", "ports"] => ListStrategy::by_key("port"),
                _ => ListStrategy::Replace,
            },
            "volumeMounts" => ListStrategy::by_key("mountPath"),
            "volumeDevices" => ListStrategy::by_key("devicePath"),
            "hostAliases" => ListStrategy::by_key("ip"),
            "podIPs" | "hostIPs" if parent == Some("status") => ListStrategy::by_key("ip"),
            "conditions" => ListStrategy::by_key("type"),
            "addresses" if parent == Some("status") => ListStrategy::by_key("type"),
            "ownerReferences" if parent == Some("metadata") => ListStrategy::by_key("uid"),
            "topologySpreadConstraints" => ListStrategy::by_key("topologyKey"),
            "finalizers" if parent == Some("metadata") => ListStrategy::MergePrimitives,
            "podCIDRs" if parent == Some("spec") => ListStrategy::MergePrimitives,
            _ => ListStrategy::Replace,
        }
    }
}

/// Applies a strategic merge `patch` to `original` (upstream
/// `strategicpatch.StrategicMergePatch`), returning the patched document.
///
/// Both must be JSON objects. `schema` supplies list strategies (use
/// [`BuiltinMergeKeys`] for built-in kinds).
pub fn apply(original: &Value, patch: &Value, schema: &dyn MergeKeys) -> Result<Value, PatchError> {
    let Value::Object(original) = original else {
        return Err(PatchError::new(format!(
            "{ERR_BAD_JSON_DOC}: the original object is not a JSON object"
        )));
    };
    let Value::Object(patch) = patch else {
        return Err(PatchError::new(format!(
            "{ERR_BAD_JSON_DOC}: a strategic merge patch must be a JSON object, got {}",
            type_name(patch)
        )));
    };
    let merger = Merger { schema };
    let mut path = Vec::new();
    let merged = merger.merge_map(original.clone(), patch.clone(), &mut path)?;
    Ok(Value::Object(merged))
}

struct Merger<'a> {
    schema: &'a dyn MergeKeys,
}

/// Element kind of a list, as far as merging cares (upstream compares Go
/// types: all JSON numbers are float64 there, so one Number kind here).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Kind {
    Map,
    Null,
    Bool,
    Number,
    String,
}

impl Merger<'_> {
    fn strategy(&self, path: &[String], field: &str) -> ListStrategy {
        let mut p: Vec<&str> = path.iter().map(String::as_str).collect();
        p.push(field);
        self.schema.merge_key(&p)
    }

    /// Upstream `mergeMap`. `path` points at this map.
    fn merge_map(
        &self,
        mut original: Map<String, Value>,
        mut patch: Map<String, Value>,
        path: &mut Vec<String>,
    ) -> Result<Map<String, Value>, PatchError> {
        if let Some(directive) = patch.remove(DIRECTIVE_MARKER) {
            return match directive.as_str() {
                // Upstream returns the patch as is; merging it into an empty
                // map also applies any directive nested inside it.
                Some(REPLACE_DIRECTIVE) => self.merge_map(Map::new(), patch, path),
                // Upstream: "$patch: delete" on a map yields an empty map
                // (the key itself stays).
                Some(DELETE_DIRECTIVE) => Ok(Map::new()),
                _ => {
                    patch.insert(DIRECTIVE_MARKER.to_string(), directive.clone());
                    Err(bad_patch_type(&directive, &patch))
                }
            };
        }

        apply_retain_keys(&mut original, &mut patch)?;
        self.merge_set_element_order(&mut original, &mut patch, path)?;

        // Deletion lists run after the regular keys so the outcome does not
        // depend on key order (upstream iterates a Go map, i.e. randomly).
        let mut deletions = Vec::new();
        for (key, patch_value) in patch {
            if key.starts_with(DELETE_FROM_PRIMITIVE_LIST_PREFIX) {
                let field = extract_key(&key, DELETE_FROM_PRIMITIVE_LIST_PREFIX)?;
                deletions.push((field, patch_value));
                continue;
            }
            if patch_value.is_null() {
                original.remove(&key);
                continue;
            }
            match original.get_mut(&key) {
                Some(slot) => {
                    let current = std::mem::take(slot);
                    *slot = self.merge_value(current, patch_value, path, &key)?;
                }
                None => {
                    let value = self.normalize(patch_value, path, &key)?;
                    original.insert(key, value);
                }
            }
        }

        for (field, to_delete) in deletions {
            let Value::Array(to_delete) = to_delete else {
                return Err(PatchError::new(ERR_BAD_PATCH_FORMAT_FOR_PRIMITIVE_LIST));
            };
            if to_delete.iter().any(|v| v.is_object() || v.is_array()) {
                return Err(PatchError::new(ERR_BAD_PATCH_FORMAT_FOR_PRIMITIVE_LIST));
            }
            // Nothing to delete from when the list is absent (newer upstream
            // no longer copies the directive's list into the object).
            if let Some(Value::Array(list)) = original.get_mut(&field) {
                list.retain(|item| !to_delete.iter().any(|d| json_eq(d, item)));
            }
        }
        Ok(original)
    }

    /// Merges one field's value. `path` points at the parent map.
    fn merge_value(
        &self,
        original: Value,
        patch: Value,
        path: &mut Vec<String>,
        key: &str,
    ) -> Result<Value, PatchError> {
        match (original, patch) {
            (Value::Object(o), Value::Object(p)) => {
                path.push(key.to_string());
                let merged = self.merge_map(o, p, path);
                path.pop();
                Ok(Value::Object(merged?))
            }
            (Value::Array(o), Value::Array(p)) => {
                let strategy = self.strategy(path, key);
                path.push(key.to_string());
                let merged = self.merge_list(o, p, &strategy, path);
                path.pop();
                Ok(Value::Array(merged?))
            }
            // Scalars, and any change of type: the patch value wins.
            (_, patch) => self.normalize(patch, path, key),
        }
    }

    /// A patch value with nothing to merge into: merged into an empty value
    /// of its own type so that directives inside it are applied, not kept.
    fn normalize(
        &self,
        patch: Value,
        path: &mut Vec<String>,
        key: &str,
    ) -> Result<Value, PatchError> {
        match patch {
            Value::Object(_) => self.merge_value(Value::Object(Map::new()), patch, path, key),
            Value::Array(_) => self.merge_value(Value::Array(Vec::new()), patch, path, key),
            scalar => Ok(scalar),
        }
    }

    /// Merges two lists; `path` points at the list field.
    fn merge_list(
        &self,
        original: Vec<Value>,
        patch: Vec<Value>,
        strategy: &ListStrategy,
        path: &mut Vec<String>,
    ) -> Result<Vec<Value>, PatchError> {
        match strategy {
            ListStrategy::Replace => self.replace_list(patch, path),
            ListStrategy::MergeByKey(key) => self.merge_slice(original, patch, Some(key), path),
            ListStrategy::MergePrimitives => self.merge_slice(original, patch, None, path),
        }
    }

    /// An atomic list: the patch's items, with object items normalized.
    /// `{"$patch": "replace"}` markers are dropped (replacing is what
    /// happens anyway) and so are `{"$patch": "delete"}` items (there is
    /// nothing left to delete them from).
    fn replace_list(
        &self,
        patch: Vec<Value>,
        path: &mut Vec<String>,
    ) -> Result<Vec<Value>, PatchError> {
        let mut out = Vec::with_capacity(patch.len());
        for item in patch {
            match item {
                Value::Object(map) => {
                    match map.get(DIRECTIVE_MARKER).and_then(Value::as_str) {
                        Some(REPLACE_DIRECTIVE) | Some(DELETE_DIRECTIVE) => continue,
                        _ => {}
                    }
                    out.push(Value::Object(self.merge_map(Map::new(), map, path)?));
                }
                other => out.push(other),
            }
        }
        Ok(out)
    }

    /// Upstream `mergeSlice` for lists with the merge strategy. `key` is the
    /// merge key (`None` for primitive lists).
    fn merge_slice(
        &self,
        original: Vec<Value>,
        patch: Vec<Value>,
        key: Option<&str>,
        path: &mut Vec<String>,
    ) -> Result<Vec<Value>, PatchError> {
        if original.is_empty() && patch.is_empty() {
            return Ok(original);
        }
        let kind = element_kind(&original, &patch)?;
        if kind != Kind::Map {
            let mut merged: Vec<Value> = Vec::with_capacity(original.len() + patch.len());
            for v in original.iter().chain(patch.iter()) {
                if !merged.iter().any(|m| json_eq(m, v)) {
                    merged.push(v.clone());
                }
            }
            let (patch_items, server_only) = partition(merged, &patch, None)?;
            return Ok(normalize_element_order(
                patch_items,
                server_only,
                &patch,
                &original,
                None,
            ));
        }

        let Some(key) = key else {
            return Err(PatchError::new(format!(
                "cannot merge lists without merge key for {}",
                path.join(".")
            )));
        };
        let (original, patch) = self.split_special_elements(original, patch, key, path)?;
        let merged = self.merge_without_special_elements(original.clone(), &patch, key, path)?;
        let (patch_items, server_only) = partition(merged, &patch, Some(key))?;
        Ok(normalize_element_order(
            patch_items,
            server_only,
            &patch,
            &original,
            Some(key),
        ))
    }

    /// Upstream `mergeSliceWithSpecialElements`: applies `$patch: delete`
    /// items to the original and handles a `$patch: replace` item (the
    /// other patch items become the whole list). Returns the updated
    /// original and the patch items without directives.
    fn split_special_elements(
        &self,
        mut original: Vec<Value>,
        patch: Vec<Value>,
        key: &str,
        path: &mut Vec<String>,
    ) -> Result<(Vec<Value>, Vec<Value>), PatchError> {
        let mut plain = Vec::with_capacity(patch.len());
        let mut replace = false;
        for item in patch {
            let Value::Object(map) = &item else {
                unreachable!("element kind checked by the caller")
            };
            let Some(directive) = map.get(DIRECTIVE_MARKER) else {
                plain.push(item);
                continue;
            };
            match directive.as_str() {
                Some(DELETE_DIRECTIVE) => {
                    let Some(merge_value) = map.get(key) else {
                        return Err(no_merge_key(map, key));
                    };
                    // Delete every matching entry, like upstream.
                    for o in &original {
                        if !o.is_object() {
                            return Err(not_a_map_in_list(o));
                        }
                    }
                    original.retain(|o| !o.get(key).is_some_and(|v| json_eq(v, merge_value)));
                }
                // Keep scanning so the other directive items are pruned.
                Some(REPLACE_DIRECTIVE) => replace = true,
                Some(MERGE_DIRECTIVE) => {
                    return Err(PatchError::new(
                        "merging lists cannot yet be specified in the patch",
                    ))
                }
                _ => return Err(bad_patch_type(directive, map)),
            }
        }
        if replace {
            let mut replacement = Vec::with_capacity(plain.len());
            for item in plain {
                let Value::Object(map) = item else {
                    unreachable!()
                };
                replacement.push(Value::Object(self.merge_map(Map::new(), map, path)?));
            }
            return Ok((replacement, Vec::new()));
        }
        Ok((original, plain))
    }

    /// Upstream `mergeSliceWithoutSpecialElements`: each patch item merges
    /// into the original item with the same merge key value, or is added.
    fn merge_without_special_elements(
        &self,
        mut original: Vec<Value>,
        patch: &[Value],
        key: &str,
        path: &mut Vec<String>,
    ) -> Result<Vec<Value>, PatchError> {
        for item in patch {
            let Value::Object(patch_map) = item else {
                unreachable!("element kind checked by the caller")
            };
            let Some(merge_value) = patch_map.get(key) else {
                return Err(no_merge_key(patch_map, key));
            };
            let mut found = None;
            for (i, o) in original.iter().enumerate() {
                let Value::Object(om) = o else {
                    return Err(not_a_map_in_list(o));
                };
                if om.get(key).is_some_and(|v| json_eq(v, merge_value)) {
                    found = Some(i);
                    break;
                }
            }
            match found {
                Some(i) => {
                    let Value::Object(om) = std::mem::take(&mut original[i]) else {
                        unreachable!()
                    };
                    original[i] = Value::Object(self.merge_map(om, patch_map.clone(), path)?);
                }
                None => {
                    original.push(Value::Object(self.merge_map(
                        Map::new(),
                        patch_map.clone(),
                        path,
                    )?));
                }
            }
        }
        Ok(original)
    }

    /// Upstream `mergePatchIntoOriginal`: handles every
    /// `$setElementOrder/<field>` of this map, merging `<field>` here and
    /// removing both keys from the patch. `path` points at this map.
    fn merge_set_element_order(
        &self,
        original: &mut Map<String, Value>,
        patch: &mut Map<String, Value>,
        path: &mut Vec<String>,
    ) -> Result<(), PatchError> {
        let order_keys: Vec<String> = patch
            .keys()
            .filter(|k| k.starts_with(SET_ELEMENT_ORDER_PREFIX))
            .cloned()
            .collect();
        for order_key in order_keys {
            let order_value = patch.remove(&order_key).unwrap_or(Value::Null);
            let field = extract_key(&order_key, SET_ELEMENT_ORDER_PREFIX)?;
            let Value::Array(order) = order_value else {
                return Err(PatchError::new(
                    ERR_BAD_PATCH_FORMAT_FOR_SET_ELEMENT_ORDER_LIST,
                ));
            };
            // A non-list original value is about to be replaced anyway.
            let original_list = match original.get(&field) {
                Some(Value::Array(a)) => Some(a.clone()),
                _ => None,
            };
            let patch_list = match patch.get(&field) {
                None => None,
                // An explicit null deletes the list; that wins over ordering.
                Some(Value::Null) => continue,
                Some(Value::Array(a)) => Some(a.clone()),
                Some(other) => {
                    return Err(PatchError::new(format!(
                        "expected a list for {field}, but received a {}",
                        type_name(other)
                    )))
                }
            };
            let strategy = self.strategy(path, &field);
            let is_map_list = order
                .iter()
                .chain(original_list.iter().flatten())
                .chain(patch_list.iter().flatten())
                .next()
                .is_some_and(Value::is_object);
            let key = match &strategy {
                ListStrategy::MergeByKey(k) if is_map_list => Some(k.as_str()),
                _ => None,
            };
            if let Some(k) = key {
                for entry in &order {
                    let Value::Object(m) = entry else {
                        return Err(PatchError::new(format!(
                            "{ERR_BAD_PATCH_FORMAT_FOR_SET_ELEMENT_ORDER_LIST}: {entry} is not a map"
                        )));
                    };
                    if !m.contains_key(k) {
                        return Err(no_merge_key(m, k));
                    }
                }
            }
            validate_patch_with_set_order_list(patch_list.as_deref(), &order, key, &order_key)?;

            path.push(field.clone());
            let merged = match (original_list.clone(), patch_list) {
                (Some(o), None) => Ok(o),
                (None, Some(p)) => self.merge_list(Vec::new(), p, &strategy, path),
                (Some(o), Some(p)) => self.merge_list(o, p, &strategy, path),
                (None, None) => {
                    path.pop();
                    continue;
                }
            };
            path.pop();
            let merged = merged?;

            let (patch_items, server_only) = partition(merged, &order, key)?;
            let sorted = normalize_element_order(
                patch_items,
                server_only,
                &order,
                original_list.as_deref().unwrap_or(&[]),
                key,
            );
            original.insert(field.clone(), Value::Array(sorted));
            patch.remove(&field);
        }
        Ok(())
    }
}

/// Upstream `applyRetainKeysDirective`: drops original keys not listed in
/// `$retainKeys`, after checking every patch key is listed.
fn apply_retain_keys(
    original: &mut Map<String, Value>,
    patch: &mut Map<String, Value>,
) -> Result<(), PatchError> {
    let Some(retain) = patch.remove(RETAIN_KEYS_DIRECTIVE) else {
        return Ok(());
    };
    let Value::Array(retain) = retain else {
        return Err(PatchError::new(ERR_BAD_PATCH_FORMAT_FOR_RETAIN_KEYS));
    };
    let keep: HashSet<&str> = retain.iter().filter_map(Value::as_str).collect();
    for (k, v) in patch.iter() {
        if v.is_null()
            || k.starts_with(DELETE_FROM_PRIMITIVE_LIST_PREFIX)
            || k.starts_with(SET_ELEMENT_ORDER_PREFIX)
        {
            continue;
        }
        if !keep.contains(k.as_str()) {
            return Err(PatchError::new(format!(
                "{ERR_PATCH_CONTENT_NOT_MATCH_RETAIN_KEYS}: {k:?} is not in {}",
                Value::Array(retain.clone())
            )));
        }
    }
    original.retain(|k, _| keep.contains(k.as_str()));
    Ok(())
}

/// Upstream `validatePatchWithSetOrderList`: the patch list's items (minus
/// deletions and directive items) must appear in the `$setElementOrder`
/// list, in the same relative order.
fn validate_patch_with_set_order_list(
    patch_list: Option<&[Value]>,
    order: &[Value],
    key: Option<&str>,
    order_key: &str,
) -> Result<(), PatchError> {
    let Some(patch_list) = patch_list else {
        return Ok(());
    };
    if order.is_empty() || patch_list.is_empty() {
        return Ok(());
    }
    let non_delete: Vec<&Value> = patch_list
        .iter()
        .filter(|v| {
            key.is_none()
                || v.get(DIRECTIVE_MARKER).and_then(Value::as_str) != Some(DELETE_DIRECTIVE)
        })
        .collect();
    let (mut pi, mut si) = (0, 0);
    while pi < non_delete.len() && si < order.len() {
        let item = non_delete[pi];
        if item.get(DIRECTIVE_MARKER).is_some() {
            pi += 1;
            continue;
        }
        let equal = match key {
            None => json_eq(item, &order[si]),
            Some(k) => {
                let Value::Object(im) = item else {
                    return Err(not_a_map_in_list(item));
                };
                let Some(iv) = im.get(k) else {
                    return Err(no_merge_key(im, k));
                };
                order[si].get(k).is_some_and(|ov| json_eq(iv, ov))
            }
        };
        if equal {
            pi += 1;
        }
        si += 1;
    }
    if pi < non_delete.len() {
        return Err(PatchError::new(format!(
            "The order in patch list:\n{}\n doesn't match {order_key} list:\n{}\n",
            Value::Array(patch_list.to_vec()),
            Value::Array(order.to_vec())
        )));
    }
    Ok(())
}

/// Splits `items` into those present in `by` (by merge key, or by value for
/// primitives) and the rest ("server-only"), keeping their order.
fn partition(
    items: Vec<Value>,
    by: &[Value],
    key: Option<&str>,
) -> Result<(Vec<Value>, Vec<Value>), PatchError> {
    let mut present = Vec::new();
    let mut server_only = Vec::new();
    for item in items {
        let found = match key {
            None => by.iter().any(|b| json_eq(b, &item)),
            Some(k) => {
                let Value::Object(m) = &item else {
                    return Err(not_a_map_in_list(&item));
                };
                let Some(mv) = m.get(k) else {
                    return Err(no_merge_key(m, k));
                };
                by.iter()
                    .any(|b| b.get(k).is_some_and(|bv| json_eq(bv, mv)))
            }
        };
        if found {
            present.push(item);
        } else {
            server_only.push(item);
        }
    }
    Ok((present, server_only))
}

/// Upstream `normalizeElementOrder`: sorts patch items by `patch_order` and
/// server-only items by `server_order`, then interleaves them.
fn normalize_element_order(
    mut patch_items: Vec<Value>,
    mut server_only: Vec<Value>,
    patch_order: &[Value],
    server_order: &[Value],
    key: Option<&str>,
) -> Vec<Value> {
    sort_by_order(&mut patch_items, patch_order, key);
    sort_by_order(&mut server_only, server_order, key);
    merge_sorted(server_only, patch_items, server_order, key)
}

/// Stable sort by position in `order`; unknown items go last.
fn sort_by_order(items: &mut [Value], order: &[Value], key: Option<&str>) {
    items.sort_by_cached_key(|item| index_in(order, item, key).unwrap_or(usize::MAX));
}

/// Upstream `mergeSortedSlice`: inserts each `left` (server-only) item into
/// `right` (patch items) before the first right item that comes after it
/// in the live list; when either is unknown to the live list the right item
/// goes first. Relative order within each side is kept.
fn merge_sorted(
    left: Vec<Value>,
    right: Vec<Value>,
    server_order: &[Value],
    key: Option<&str>,
) -> Vec<Value> {
    let mut out = Vec::with_capacity(left.len() + right.len());
    let mut left = left.into_iter().peekable();
    let mut right = right.into_iter().peekable();
    loop {
        match (left.peek(), right.peek()) {
            (None, None) => break,
            (Some(_), None) => out.extend(left.by_ref()),
            (None, Some(_)) => out.extend(right.by_ref()),
            (Some(l), Some(r)) => {
                let li = index_in(server_order, l, key);
                let ri = index_in(server_order, r, key);
                let left_first = matches!((li, ri), (Some(a), Some(b)) if a < b);
                if left_first {
                    out.extend(left.next());
                } else {
                    out.extend(right.next());
                }
            }
        }
    }
    out
}

/// Position of `item` in `list`, comparing merge key values for maps and
/// whole values for primitives (upstream `index`).
fn index_in(list: &[Value], item: &Value, key: Option<&str>) -> Option<usize> {
    match key {
        None => list.iter().position(|v| json_eq(v, item)),
        Some(k) => {
            let wanted = item.get(k);
            list.iter().position(|v| match (v.get(k), wanted) {
                (Some(a), Some(b)) => json_eq(a, b),
                (None, None) => true,
                _ => false,
            })
        }
    }
}

/// The common element kind of two lists; errors for nested lists and
/// mixed kinds (upstream `sliceElementType`).
fn element_kind(original: &[Value], patch: &[Value]) -> Result<Kind, PatchError> {
    let mut kind = None;
    for v in original.iter().chain(patch.iter()) {
        let k = match v {
            Value::Array(_) => return Err(PatchError::new(ERR_NO_LIST_OF_LISTS)),
            Value::Object(_) => Kind::Map,
            Value::Null => Kind::Null,
            Value::Bool(_) => Kind::Bool,
            Value::Number(_) => Kind::Number,
            Value::String(_) => Kind::String,
        };
        match kind {
            None => kind = Some(k),
            Some(prev) if prev != k => {
                return Err(PatchError::new(format!(
                    "list element types are not identical: {} and {}",
                    Value::Array(original.to_vec()),
                    Value::Array(patch.to_vec())
                )))
            }
            _ => {}
        }
    }
    // Both lists empty is handled by callers; default to primitives.
    Ok(kind.unwrap_or(Kind::String))
}

/// `$setElementOrder/containers` → `containers` (upstream `extractKey`).
fn extract_key(s: &str, prefix: &str) -> Result<String, PatchError> {
    match s.split_once('/') {
        Some((p, rest)) if p == prefix => Ok(rest.to_string()),
        _ => Err(PatchError::new(match prefix {
            DELETE_FROM_PRIMITIVE_LIST_PREFIX => {
                ERR_BAD_PATCH_FORMAT_FOR_PRIMITIVE_LIST.to_string()
            }
            SET_ELEMENT_ORDER_PREFIX => ERR_BAD_PATCH_FORMAT_FOR_SET_ELEMENT_ORDER_LIST.to_string(),
            _ => format!("fail to find unknown prefix {prefix:?} in {s}"),
        })),
    }
}

/// JSON equality where numbers compare by value (`80` equals `80.0`), as
/// Go's float64 comparison does.
fn json_eq(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => {
            if let (Some(x), Some(y)) = (x.as_i64(), y.as_i64()) {
                x == y
            } else if let (Some(x), Some(y)) = (x.as_u64(), y.as_u64()) {
                x == y
            } else {
                x.as_f64() == y.as_f64()
            }
        }
        _ => a == b,
    }
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "list",
        Value::Object(_) => "map",
    }
}

fn no_merge_key(map: &Map<String, Value>, key: &str) -> PatchError {
    PatchError::new(format!(
        "map: {} does not contain declared merge key: {key}",
        Value::Object(map.clone())
    ))
}

fn bad_patch_type(directive: &Value, map: &Map<String, Value>) -> PatchError {
    let directive = directive
        .as_str()
        .map(str::to_string)
        .unwrap_or_else(|| directive.to_string());
    PatchError::new(format!(
        "unknown patch type: {directive} in map: {}",
        Value::Object(map.clone())
    ))
}

fn not_a_map_in_list(v: &Value) -> PatchError {
    PatchError::new(format!(
        "expected a map in a merging list, but received a {}: {v}",
        type_name(v)
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn smp(original: Value, patch: Value) -> Value {
        apply(&original, &patch, &BuiltinMergeKeys).unwrap()
    }

    fn smp_err(original: Value, patch: Value) -> String {
        apply(&original, &patch, &BuiltinMergeKeys)
            .unwrap_err()
            .message()
            .to_string()
    }

    /// Recursively asserts that no directive key survived.
    fn assert_no_directives(v: &Value) {
        match v {
            Value::Object(m) => {
                for (k, v) in m {
                    assert!(
                        k != DIRECTIVE_MARKER
                            && k != RETAIN_KEYS_DIRECTIVE
                            && !k.starts_with(SET_ELEMENT_ORDER_PREFIX)
                            && !k.starts_with(DELETE_FROM_PRIMITIVE_LIST_PREFIX),
                        "directive {k} left in {v}"
                    );
                    assert_no_directives(v);
                }
            }
            Value::Array(a) => a.iter().for_each(assert_no_directives),
            _ => {}
        }
    }

    fn deployment() -> Value {
        json!({
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "web", "labels": {"app": "web"}},
            "spec": {
                "replicas": 1,
                "template": {
                    "metadata": {"labels": {"app": "web"}},
                    "spec": {
                        "containers": [
                            {
                                "name": "a",
                                "image": "busybox:1",
                                "imagePullPolicy": "IfNotPresent",
                                "ports": [{"containerPort": 80, "protocol": "TCP"}],
                                "env": [{"name": "X", "value": "1"}, {"name": "Y", "value": "2"}]
                            },
                            {"name": "b", "image": "nginx"}
                        ]
                    }
                }
            }
        })
    }

    // ---- maps -----------------------------------------------------------

    #[test]
    fn maps_merge_recursively() {
        let out = smp(
            json!({"a": {"b": 1, "c": {"d": 2}}, "e": 3}),
            json!({"a": {"c": {"f": 4}}, "g": 5}),
        );
        assert_eq!(
            out,
            json!({"a": {"b": 1, "c": {"d": 2, "f": 4}}, "e": 3, "g": 5})
        );
    }

    #[test]
    fn null_deletes_key_and_unmatched_null_is_ignored() {
        let out = smp(
            json!({"metadata": {"labels": {"a": "1", "b": "2"}}}),
            json!({"metadata": {"labels": {"a": null, "zzz": null}}}),
        );
        assert_eq!(out, json!({"metadata": {"labels": {"b": "2"}}}));
        // Null for a whole subtree.
        assert_eq!(
            smp(json!({"a": {"b": 1}, "c": 1}), json!({"a": null})),
            json!({"c": 1})
        );
    }

    #[test]
    fn scalars_and_type_changes_take_patch_value() {
        assert_eq!(smp(json!({"a": 1}), json!({"a": "x"})), json!({"a": "x"}));
        assert_eq!(
            smp(json!({"a": {"b": 1}}), json!({"a": [1]})),
            json!({"a": [1]})
        );
        assert_eq!(
            smp(json!({"a": [1]}), json!({"a": {"b": 1}})),
            json!({"a": {"b": 1}})
        );
        assert_eq!(
            smp(json!({"a": "s"}), json!({"a": {"b": 1, "c": null}})),
            json!({"a": {"b": 1}})
        );
    }

    #[test]
    fn empty_patch_is_identity() {
        assert_eq!(smp(deployment(), json!({})), deployment());
    }

    #[test]
    fn map_patch_replace_directive() {
        let out = smp(
            json!({"spec": {"selector": {"a": "1", "b": "2"}, "x": 1}}),
            json!({"spec": {"selector": {"$patch": "replace", "c": "3"}}}),
        );
        assert_eq!(out, json!({"spec": {"selector": {"c": "3"}, "x": 1}}));
        // At the root.
        assert_eq!(
            smp(
                json!({"a": 1, "b": 2}),
                json!({"$patch": "replace", "c": 3})
            ),
            json!({"c": 3})
        );
    }

    #[test]
    fn map_patch_delete_directive_empties_map() {
        // Upstream returns an empty map for `$patch: delete`.
        let out = smp(
            json!({"spec": {"selector": {"a": "1"}, "x": 1}}),
            json!({"spec": {"selector": {"$patch": "delete"}}}),
        );
        assert_eq!(out, json!({"spec": {"selector": {}, "x": 1}}));
        assert_eq!(smp(json!({"a": 1}), json!({"$patch": "delete"})), json!({}));
    }

    #[test]
    fn map_unknown_directive_is_error() {
        let e = smp_err(
            json!({"a": {"b": 1}}),
            json!({"a": {"$patch": "frobnicate"}}),
        );
        assert!(
            e.starts_with("unknown patch type: frobnicate in map:"),
            "{e}"
        );
    }

    #[test]
    fn retain_keys_directive() {
        // Switching a Deployment strategy from RollingUpdate to Recreate.
        let out = smp(
            json!({"spec": {"strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1}}}}),
            json!({"spec": {"strategy": {"$retainKeys": ["type"], "type": "Recreate"}}}),
        );
        assert_eq!(out, json!({"spec": {"strategy": {"type": "Recreate"}}}));
        // Nulls and directives in the patch need not be listed.
        let out = smp(
            json!({"v": {"a": 1, "b": 2, "c": [1]}}),
            json!({"v": {"$retainKeys": ["a", "c"], "a": 3, "b": null, "$deleteFromPrimitiveList/c": [1]}}),
        );
        assert_eq!(out, json!({"v": {"a": 3, "c": []}}));
    }

    #[test]
    fn retain_keys_errors() {
        let e = smp_err(json!({"a": {}}), json!({"a": {"$retainKeys": "x"}}));
        assert_eq!(e, "invalid patch format of retainKeys");
        let e = smp_err(
            json!({"a": {}}),
            json!({"a": {"$retainKeys": ["x"], "y": 1}}),
        );
        assert!(
            e.starts_with("patch content doesn't match retainKeys list"),
            "{e}"
        );
    }

    // ---- lists: replace ---------------------------------------------------

    #[test]
    fn replace_lists_by_default() {
        let out = smp(
            json!({"spec": {"template": {"spec": {"containers": [{"name": "a", "args": ["x", "y"]}]}}}}),
            json!({"spec": {"template": {"spec": {"containers": [{"name": "a", "args": ["z"]}]}}}}),
        );
        assert_eq!(
            out["spec"]["template"]["spec"]["containers"][0]["args"],
            json!(["z"])
        );
        // Tolerations are atomic.
        let out = smp(
            json!({"spec": {"tolerations": [{"key": "a"}, {"key": "b"}]}}),
            json!({"spec": {"tolerations": [{"key": "c", "$patch": "replace"}, {"key": "d"}]}}),
        );
        assert_eq!(out, json!({"spec": {"tolerations": [{"key": "d"}]}}));
    }

    // ---- lists: merge by key ----------------------------------------------

    #[test]
    fn merge_by_key_updates_matching_item_only() {
        let out = smp(
            deployment(),
            json!({"spec": {"template": {"spec": {"containers": [{"name": "a", "image": "busybox:2"}]}}}}),
        );
        let cs = &out["spec"]["template"]["spec"]["containers"];
        assert_eq!(cs.as_array().unwrap().len(), 2);
        assert_eq!(cs[0]["name"], "a");
        assert_eq!(cs[0]["image"], "busybox:2");
        assert_eq!(cs[0]["imagePullPolicy"], "IfNotPresent");
        assert_eq!(cs[0]["env"].as_array().unwrap().len(), 2);
        assert_eq!(cs[1], json!({"name": "b", "image": "nginx"}));
    }

    #[test]
    fn merge_by_key_new_item_goes_first_like_upstream() {
        let out = smp(
            json!({"spec": {"containers": [{"name": "a"}, {"name": "b"}]}}),
            json!({"spec": {"containers": [{"name": "c", "image": "x"}]}}),
        );
        assert_eq!(
            out,
            json!({"spec": {"containers": [{"name": "c", "image": "x"}, {"name": "a"}, {"name": "b"}]}})
        );
        // Items named by the patch keep the patch's order; a server-only
        // item is inserted before the first patch item that follows it in
        // the live list (upstream mergeSortedSlice): b < c live, so b first.
        let out = smp(
            json!({"spec": {"containers": [{"name": "a"}, {"name": "b"}, {"name": "c"}]}}),
            json!({"spec": {"containers": [{"name": "c", "x": 1}, {"name": "a", "x": 2}]}}),
        );
        let names: Vec<&str> = out["spec"]["containers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["b", "c", "a"]);
    }

    #[test]
    fn merge_by_key_nested_lists() {
        let out = smp(
            deployment(),
            json!({"spec": {"template": {"spec": {"containers": [{
                "name": "a",
                "env": [{"name": "Y", "value": "20"}, {"name": "X", "$patch": "delete"}],
                "ports": [{"containerPort": 80, "name": "http"}]
            }]}}}}),
        );
        let c = &out["spec"]["template"]["spec"]["containers"][0];
        assert_eq!(c["env"], json!([{"name": "Y", "value": "20"}]));
        assert_eq!(
            c["ports"],
            json!([{"containerPort": 80, "protocol": "TCP", "name": "http"}])
        );
    }

    #[test]
    fn merge_by_key_delete_directive() {
        let out = smp(
            deployment(),
            json!({"spec": {"template": {"spec": {"containers": [{"name": "b", "$patch": "delete"}]}}}}),
        );
        let cs = out["spec"]["template"]["spec"]["containers"]
            .as_array()
            .unwrap();
        assert_eq!(cs.len(), 1);
        assert_eq!(cs[0]["name"], "a");
        // Deleting a missing item is a no-op.
        let out = smp(
            json!({"spec": {"volumes": [{"name": "v"}]}}),
            json!({"spec": {"volumes": [{"name": "nope", "$patch": "delete"}]}}),
        );
        assert_eq!(out, json!({"spec": {"volumes": [{"name": "v"}]}}));
    }

    #[test]
    fn merge_by_key_replace_directive() {
        let out = smp(
            deployment(),
            json!({"spec": {"template": {"spec": {"containers": [
                {"$patch": "replace"},
                {"name": "z", "image": "zz", "env": [{"name": "Q", "$patch": "delete"}]}
            ]}}}}),
        );
        assert_eq!(
            out["spec"]["template"]["spec"]["containers"],
            json!([{"name": "z", "image": "zz", "env": []}])
        );
    }

    #[test]
    fn merge_by_key_directive_errors() {
        let e = smp_err(
            json!({"spec": {"containers": [{"name": "a"}]}}),
            json!({"spec": {"containers": [{"image": "x"}]}}),
        );
        assert_eq!(
            e,
            r#"map: {"image":"x"} does not contain declared merge key: name"#
        );
        let e = smp_err(
            json!({"spec": {"containers": [{"name": "a"}]}}),
            json!({"spec": {"containers": [{"$patch": "delete"}]}}),
        );
        assert!(
            e.contains("does not contain declared merge key: name"),
            "{e}"
        );
        let e = smp_err(
            json!({"spec": {"containers": [{"name": "a"}]}}),
            json!({"spec": {"containers": [{"$patch": "merge"}]}}),
        );
        assert_eq!(e, "merging lists cannot yet be specified in the patch");
        let e = smp_err(
            json!({"spec": {"containers": [{"name": "a"}]}}),
            json!({"spec": {"containers": [{"name": "a", "$patch": "bogus"}]}}),
        );
        assert!(e.starts_with("unknown patch type: bogus"), "{e}");
        // Original items lacking the merge key are rejected too (upstream).
        let e = smp_err(
            json!({"spec": {"containers": [{"image": "a"}]}}),
            json!({"spec": {"containers": [{"name": "a"}]}}),
        );
        assert!(
            e.contains("does not contain declared merge key: name"),
            "{e}"
        );
    }

    #[test]
    fn merge_key_list_without_original_is_normalized() {
        // spec.template absent from the original: the patch value is merged
        // into nothing, which applies (and removes) its directives.
        let out = smp(
            json!({"spec": {}}),
            json!({"spec": {"template": {"spec": {
                "$setElementOrder/containers": [{"name": "a"}],
                "containers": [{"name": "a", "image": "x", "env": [{"name": "Q", "$patch": "delete"}], "ports": null}],
                "volumes": [{"name": "gone", "$patch": "delete"}]
            }}}}),
        );
        assert_eq!(
            out,
            json!({"spec": {"template": {"spec": {"containers": [{"name": "a", "image": "x", "env": []}], "volumes": []}}}})
        );
        assert_no_directives(&out);
    }

    #[test]
    fn service_ports_merge_by_port() {
        let out = smp(
            json!({"kind": "Service", "spec": {"ports": [{"port": 80, "targetPort": 8080}, {"port": 443}]}}),
            json!({"spec": {"ports": [{"port": 80, "targetPort": 9090}]}}),
        );
        assert_eq!(
            out["spec"]["ports"],
            json!([{"port": 80, "targetPort": 9090}, {"port": 443}])
        );
    }

    #[test]
    fn numeric_merge_keys_compare_by_value() {
        let out = smp(
            json!({"spec": {"ports": [{"port": 80, "name": "a"}]}}),
            json!({"spec": {"ports": [{"port": 80.0, "name": "b"}]}}),
        );
        assert_eq!(out["spec"]["ports"].as_array().unwrap().len(), 1);
        assert_eq!(out["spec"]["ports"][0]["name"], "b");
    }

    #[test]
    fn conditions_merge_by_type() {
        let out = smp(
            json!({"status": {"conditions": [{"type": "Ready", "status": "False"}, {"type": "Scheduled", "status": "True"}]}}),
            json!({"status": {"conditions": [{"type": "Ready", "status": "True"}]}}),
        );
        assert_eq!(
            out["status"]["conditions"],
            json!([{"type": "Ready", "status": "True"}, {"type": "Scheduled", "status": "True"}])
        );
    }

    // ---- lists: primitives --------------------------------------------------

    #[test]
    fn merge_primitives_union() {
        let out = smp(
            json!({"metadata": {"finalizers": ["a", "b"]}}),
            json!({"metadata": {"finalizers": ["b", "c"]}}),
        );
        assert_eq!(out, json!({"metadata": {"finalizers": ["a", "b", "c"]}}));
        // A purely new value goes first, as upstream.
        let out = smp(
            json!({"metadata": {"finalizers": ["a", "b"]}}),
            json!({"metadata": {"finalizers": ["c"]}}),
        );
        assert_eq!(out, json!({"metadata": {"finalizers": ["c", "a", "b"]}}));
        // Absent original.
        let out = smp(
            json!({"metadata": {}}),
            json!({"metadata": {"finalizers": ["x", "x"]}}),
        );
        assert_eq!(out, json!({"metadata": {"finalizers": ["x"]}}));
        // Atomic elsewhere (Namespace spec.finalizers).
        let out = smp(
            json!({"spec": {"finalizers": ["a"]}}),
            json!({"spec": {"finalizers": ["b"]}}),
        );
        assert_eq!(out, json!({"spec": {"finalizers": ["b"]}}));
    }

    #[test]
    fn delete_from_primitive_list() {
        let out = smp(
            json!({"metadata": {"finalizers": ["a", "b", "c"]}}),
            json!({"metadata": {"$deleteFromPrimitiveList/finalizers": ["b", "zz"]}}),
        );
        assert_eq!(out, json!({"metadata": {"finalizers": ["a", "c"]}}));
        // Combined with additions.
        let out = smp(
            json!({"metadata": {"finalizers": ["a", "b"]}}),
            json!({"metadata": {"$deleteFromPrimitiveList/finalizers": ["a"], "finalizers": ["d"]}}),
        );
        assert_eq!(out, json!({"metadata": {"finalizers": ["d", "b"]}}));
        // Absent list: nothing happens and nothing leaks.
        let out = smp(
            json!({"metadata": {}}),
            json!({"metadata": {"$deleteFromPrimitiveList/finalizers": ["a"]}}),
        );
        assert_eq!(out, json!({"metadata": {}}));
    }

    #[test]
    fn delete_from_primitive_list_errors() {
        let e = smp_err(
            json!({"metadata": {"finalizers": ["a"]}}),
            json!({"metadata": {"$deleteFromPrimitiveList/finalizers": "a"}}),
        );
        assert_eq!(e, "invalid patch format of primitive list");
        let e = smp_err(
            json!({"metadata": {}}),
            json!({"metadata": {"$deleteFromPrimitiveList": ["a"]}}),
        );
        assert_eq!(e, "invalid patch format of primitive list");
        let e = smp_err(
            json!({"metadata": {}}),
            json!({"metadata": {"$deleteFromPrimitiveList/f": [{"a": 1}]}}),
        );
        assert_eq!(e, "invalid patch format of primitive list");
    }

    // ---- $setElementOrder -------------------------------------------------

    #[test]
    fn kubectl_apply_set_element_order_updates_one_container() {
        let out = smp(
            deployment(),
            json!({"spec": {"template": {"spec": {
                "$setElementOrder/containers": [{"name": "a"}],
                "containers": [{"image": "busybox:2", "name": "a"}]
            }}}}),
        );
        let cs = out["spec"]["template"]["spec"]["containers"]
            .as_array()
            .unwrap();
        // Server-only container "b" keeps its place after "a".
        assert_eq!(cs.len(), 2);
        assert_eq!(cs[0]["name"], "a");
        assert_eq!(cs[0]["image"], "busybox:2");
        assert_eq!(cs[0]["imagePullPolicy"], "IfNotPresent");
        assert_eq!(
            cs[0]["ports"],
            json!([{"containerPort": 80, "protocol": "TCP"}])
        );
        assert_eq!(cs[1]["name"], "b");
        assert_no_directives(&out);
    }

    #[test]
    fn set_element_order_reorders_and_adds() {
        let out = smp(
            json!({"spec": {"containers": [{"name": "a"}, {"name": "b"}, {"name": "c"}]}}),
            json!({"spec": {
                "$setElementOrder/containers": [{"name": "c"}, {"name": "new"}, {"name": "a"}],
                "containers": [{"name": "new", "image": "n"}]
            }}),
        );
        let names: Vec<&str> = out["spec"]["containers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["name"].as_str().unwrap())
            .collect();
        // Listed items follow the directive; "b" (server-only) is placed
        // before the first listed item that follows it in the live list
        // ("c"), exactly as upstream does.
        assert_eq!(names, ["b", "c", "new", "a"]);
        assert_eq!(out["spec"]["containers"][2]["image"], "n");
    }

    #[test]
    fn set_element_order_interleaves_server_only_items() {
        let out = smp(
            json!({"spec": {"containers": [{"name": "a"}, {"name": "x"}, {"name": "b"}]}}),
            json!({"spec": {"$setElementOrder/containers": [{"name": "a"}, {"name": "b"}]}}),
        );
        let names: Vec<&str> = out["spec"]["containers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["a", "x", "b"]);
        let out = smp(
            json!({"spec": {"containers": [{"name": "a"}, {"name": "x"}, {"name": "b"}]}}),
            json!({"spec": {"$setElementOrder/containers": [{"name": "b"}, {"name": "a"}]}}),
        );
        let names: Vec<&str> = out["spec"]["containers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["name"].as_str().unwrap())
            .collect();
        // x precedes b in the live list, so it goes before b.
        assert_eq!(names, ["x", "b", "a"]);
    }

    #[test]
    fn set_element_order_with_delete() {
        // kubectl apply removing container "b" from the manifest.
        let out = smp(
            deployment(),
            json!({"spec": {"template": {"spec": {
                "$setElementOrder/containers": [{"name": "a"}],
                "containers": [{"name": "b", "$patch": "delete"}]
            }}}}),
        );
        let cs = out["spec"]["template"]["spec"]["containers"]
            .as_array()
            .unwrap();
        assert_eq!(cs.len(), 1);
        assert_eq!(cs[0]["name"], "a");
        assert_eq!(cs[0]["image"], "busybox:1");
    }

    #[test]
    fn set_element_order_primitives() {
        let out = smp(
            json!({"metadata": {"finalizers": ["a", "b", "c"]}}),
            json!({"metadata": {
                "$setElementOrder/finalizers": ["c", "a", "d"],
                "$deleteFromPrimitiveList/finalizers": ["b"],
                "finalizers": ["d"]
            }}),
        );
        assert_eq!(out, json!({"metadata": {"finalizers": ["c", "a", "d"]}}));
    }

    #[test]
    fn set_element_order_on_replace_list_and_absent_list() {
        // Atomic list of primitives, only the order in the patch.
        let out = smp(
            json!({"spec": {"args": ["a", "b"]}}),
            json!({"spec": {"$setElementOrder/args": ["b", "a"]}}),
        );
        assert_eq!(out, json!({"spec": {"args": ["b", "a"]}}));
        // ... and with a new value (replaces, then orders).
        let out = smp(
            json!({"spec": {"args": ["a", "b"]}}),
            json!({"spec": {"$setElementOrder/args": ["c", "a"], "args": ["c", "a"]}}),
        );
        assert_eq!(out, json!({"spec": {"args": ["c", "a"]}}));
        // Neither original nor patch has the list: directive just vanishes.
        let out = smp(
            json!({"spec": {}}),
            json!({"spec": {"$setElementOrder/containers": [{"name": "a"}]}}),
        );
        assert_eq!(out, json!({"spec": {}}));
        // Explicit null wins.
        let out = smp(
            json!({"spec": {"containers": [{"name": "a"}]}}),
            json!({"spec": {"$setElementOrder/containers": [], "containers": null}}),
        );
        assert_eq!(out, json!({"spec": {}}));
    }

    #[test]
    fn set_element_order_errors() {
        let e = smp_err(
            json!({"spec": {"containers": [{"name": "a"}, {"name": "b"}]}}),
            json!({"spec": {
                "$setElementOrder/containers": [{"name": "a"}, {"name": "b"}],
                "containers": [{"name": "b"}, {"name": "a"}]
            }}),
        );
        assert!(e.starts_with("The order in patch list:"), "{e}");
        assert!(
            e.contains("doesn't match $setElementOrder/containers list"),
            "{e}"
        );
        let e = smp_err(
            json!({"spec": {"containers": []}}),
            json!({"spec": {"$setElementOrder/containers": [{"name": "a"}], "containers": [{"name": "b"}]}}),
        );
        assert!(e.starts_with("The order in patch list:"), "{e}");
        let e = smp_err(
            json!({"spec": {}}),
            json!({"spec": {"$setElementOrder/containers": {"name": "a"}}}),
        );
        assert_eq!(e, "invalid patch format of setElementOrder list");
        let e = smp_err(
            json!({"spec": {}}),
            json!({"spec": {"$setElementOrder": []}}),
        );
        assert_eq!(e, "invalid patch format of setElementOrder list");
        let e = smp_err(
            json!({"spec": {"containers": [{"name": "a"}]}}),
            json!({"spec": {"$setElementOrder/containers": [{"image": "a"}]}}),
        );
        assert!(
            e.contains("does not contain declared merge key: name"),
            "{e}"
        );
    }

    // ---- full kubectl apply shapes ------------------------------------------

    #[test]
    fn kubectl_apply_full_patch_shape() {
        let original = deployment();
        let patch = json!({
            "metadata": {
                "annotations": {"kubectl.kubernetes.io/last-applied-configuration": "{...}"},
                "labels": {"tier": "fe"}
            },
            "spec": {
                "replicas": 3,
                "template": {"spec": {
                    "$setElementOrder/containers": [{"name": "a"}, {"name": "b"}],
                    "containers": [
                        {
                            "$setElementOrder/env": [{"name": "X"}, {"name": "Z"}],
                            "env": [{"name": "Z", "value": "3"}, {"name": "Y", "$patch": "delete"}],
                            "name": "a",
                            "ports": null
                        },
                        {"$retainKeys": ["name", "image"], "name": "b", "image": "nginx:2"}
                    ]
                }}
            }
        });
        let out = smp(original, patch);
        assert_no_directives(&out);
        assert_eq!(out["spec"]["replicas"], 3);
        assert_eq!(
            out["metadata"]["labels"],
            json!({"app": "web", "tier": "fe"})
        );
        let cs = out["spec"]["template"]["spec"]["containers"]
            .as_array()
            .unwrap();
        assert_eq!(
            cs[0]["env"],
            json!([{"name": "X", "value": "1"}, {"name": "Z", "value": "3"}])
        );
        assert!(cs[0].get("ports").is_none());
        assert_eq!(cs[0]["image"], "busybox:1");
        assert_eq!(cs[1], json!({"name": "b", "image": "nginx:2"}));
    }

    #[test]
    fn kubectl_apply_volume_source_switch_with_retain_keys() {
        // volumes are "merge,retainKeys": kubectl apply switching a volume
        // from emptyDir to configMap sends $retainKeys in the item.
        let out = smp(
            json!({"spec": {"volumes": [
                {"name": "v", "emptyDir": {}},
                {"name": "w", "secret": {"secretName": "s"}}
            ]}}),
            json!({"spec": {
                "$setElementOrder/volumes": [{"name": "v"}, {"name": "w"}],
                "volumes": [{"$retainKeys": ["configMap", "name"], "configMap": {"name": "cm"}, "name": "v"}]
            }}),
        );
        assert_eq!(
            out,
            json!({"spec": {"volumes": [
                {"name": "v", "configMap": {"name": "cm"}},
                {"name": "w", "secret": {"secretName": "s"}}
            ]}})
        );
    }

    #[test]
    fn owner_references_merge_by_uid() {
        let out = smp(
            json!({"metadata": {"ownerReferences": [{"uid": "1", "name": "a"}]}}),
            json!({"metadata": {"ownerReferences": [{"uid": "1", "controller": true}, {"uid": "2", "name": "b"}]}}),
        );
        assert_eq!(
            out["metadata"]["ownerReferences"],
            json!([{"uid": "1", "name": "a", "controller": true}, {"uid": "2", "name": "b"}])
        );
    }

    // ---- errors -----------------------------------------------------------

    #[test]
    fn malformed_documents() {
        assert!(smp_err(json!({}), json!([1])).starts_with("invalid JSON document"));
        assert!(smp_err(json!({}), json!("x")).starts_with("invalid JSON document"));
        assert!(smp_err(json!({}), Value::Null).starts_with("invalid JSON document"));
        assert!(smp_err(json!([]), json!({})).starts_with("invalid JSON document"));
    }

    #[test]
    fn list_shape_errors() {
        let e = smp_err(
            json!({"metadata": {"finalizers": [["a"]]}}),
            json!({"metadata": {"finalizers": [["b"]]}}),
        );
        assert_eq!(e, "lists of lists are not supported");
        let e = smp_err(
            json!({"metadata": {"finalizers": ["a"]}}),
            json!({"metadata": {"finalizers": [1]}}),
        );
        assert!(e.starts_with("list element types are not identical"), "{e}");
        let schema = |_: &[&str]| ListStrategy::MergePrimitives;
        let e = apply(
            &json!({"l": [{"a": 1}]}),
            &json!({"l": [{"a": 2}]}),
            &schema,
        )
        .unwrap_err();
        assert_eq!(e.message(), "cannot merge lists without merge key for l");
    }

    #[test]
    fn closure_schema_and_paths() {
        let seen = std::cell::RefCell::new(Vec::new());
        let schema = |path: &[&str]| {
            seen.borrow_mut().push(path.join("."));
            if path.last() == Some(&"items") {
                ListStrategy::by_key("id")
            } else {
                ListStrategy::Replace
            }
        };
        let out = apply(
            &json!({"a": {"items": [{"id": 1, "sub": [1]}]}}),
            &json!({"a": {"items": [{"id": 1, "sub": [2], "x": true}]}}),
            &schema,
        )
        .unwrap();
        assert_eq!(
            out,
            json!({"a": {"items": [{"id": 1, "sub": [2], "x": true}]}})
        );
        assert_eq!(*seen.borrow(), ["a.items", "a.items.sub"]);
    }

    #[test]
    fn unknown_dollar_keys_are_data() {
        // CRD schemas carry `$ref`/`$schema`; only directives are consumed.
        let out = smp(json!({"spec": {}}), json!({"spec": {"$ref": "#/x"}}));
        assert_eq!(out, json!({"spec": {"$ref": "#/x"}}));
    }

    // ---- BuiltinMergeKeys table -----------------------------------------------

    #[test]
    fn builtin_merge_keys_table() {
        let k = |p: &[&str]| BuiltinMergeKeys.merge_key(p);
        let pod = ["spec"];
        let tmpl = ["spec", "template", "spec"];
        for base in [&pod[..], &tmpl[..]] {
            for f in [
                "containers",
                "initContainers",
                "ephemeralContainers",
                "volumes",
                "imagePullSecrets",
                "resourceClaims",
                "schedulingGates",
            ] {
                let p: Vec<&str> = base.iter().copied().chain([f]).collect();
                assert_eq!(k(&p), ListStrategy::by_key("name"), "{p:?}");
            }
            for (f, key) in [
                ("hostAliases", "ip"),
                ("topologySpreadConstraints", "topologyKey"),
            ] {
                let p: Vec<&str> = base.iter().copied().chain([f]).collect();
                assert_eq!(k(&p), ListStrategy::by_key(key), "{p:?}");
            }
            for c in ["containers", "initContainers", "ephemeralContainers"] {
                for (f, key) in [
                    ("ports", "containerPort"),
                    ("env", "name"),
                    ("volumeMounts", "mountPath"),
                    ("volumeDevices", "devicePath"),
                ] {
                    let p: Vec<&str> = base.iter().copied().chain([c, f]).collect();
                    assert_eq!(k(&p), ListStrategy::by_key(key), "{p:?}");
                }
            }
        }
        assert_eq!(
            k(&[
                "spec",
                "jobTemplate",
                "spec",
                "template",
                "spec",
                "containers",
                "ports"
            ]),
            ListStrategy::by_key("containerPort")
        );
        assert_eq!(k(&["spec", "ports"]), ListStrategy::by_key("port"));
        assert_eq!(k(&["spec", "ingress", "ports"]), ListStrategy::Replace);
        assert_eq!(k(&["ports"]), ListStrategy::Replace);
        assert_eq!(k(&["secrets"]), ListStrategy::by_key("name"));
        assert_eq!(k(&["spec", "secrets"]), ListStrategy::Replace);
        assert_eq!(k(&["status", "conditions"]), ListStrategy::by_key("type"));
        assert_eq!(k(&["status", "addresses"]), ListStrategy::by_key("type"));
        assert_eq!(k(&["subsets", "addresses"]), ListStrategy::Replace);
        assert_eq!(k(&["status", "podIPs"]), ListStrategy::by_key("ip"));
        assert_eq!(
            k(&["status", "resourceClaimStatuses"]),
            ListStrategy::by_key("name")
        );
        assert_eq!(
            k(&["metadata", "ownerReferences"]),
            ListStrategy::by_key("uid")
        );
        assert_eq!(
            k(&["metadata", "finalizers"]),
            ListStrategy::MergePrimitives
        );
        assert_eq!(k(&["spec", "finalizers"]), ListStrategy::Replace);
        assert_eq!(k(&["spec", "podCIDRs"]), ListStrategy::MergePrimitives);
        assert_eq!(
            k(&["spec", "template", "spec", "tolerations"]),
            ListStrategy::Replace
        );
        assert_eq!(
            k(&["spec", "template", "spec", "containers", "args"]),
            ListStrategy::Replace
        );
        assert_eq!(k(&[]), ListStrategy::Replace);
    }
}
