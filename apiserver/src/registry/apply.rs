//! Field ownership in the generic store: server-side apply (`PATCH` with
//! `application/apply-patch+yaml`) and `metadata.managedFields` bookkeeping for every other
//! write, over the `apply` module's merge and field sets.

use serde_json::Value;

use crate::apply::{self, ApplyError, BuiltinSchema, Writer};
use crate::error::{ApiError, ApiResult};
use crate::meta;
use crate::registry::store::{GenericStore, Target, WriteOptions, Written};
use crate::registry::ReqCtx;

/// Longest field manager name upstream accepts.
const MAX_MANAGER_LEN: usize = 128;

/// Checks a `fieldManager` parameter as upstream does.
pub fn check_manager(manager: &str) -> ApiResult<()> {
    if manager.len() > MAX_MANAGER_LEN {
        return Err(ApiError::bad_request(format!("fieldManager: Too long: may not be longer than {MAX_MANAGER_LEN}")));
    }
    if manager.chars().any(|c| c.is_control()) {
        return Err(ApiError::bad_request("fieldManager: Invalid value: must only contain printable characters"));
    }
    Ok(())
}

/// The manager of a write without `fieldManager`: the user agent's first word, as upstream
/// (`kubectl/v1.32.4 (linux/amd64) ...` → `kubectl`).
pub fn manager_from_user_agent(user_agent: Option<&str>) -> String {
    let ua = user_agent.unwrap_or_default();
    let name = ua.split('/').next().unwrap_or_default().trim();
    if name.is_empty() { "unknown".to_string() } else { name.chars().take(MAX_MANAGER_LEN).collect() }
}

fn apply_error(e: ApplyError) -> ApiError {
    match e {
        ApplyError::Conflicts(c) => ApiError::ApplyConflict {
            message: c.to_string(),
            causes: c.0.iter().map(|x| (x.path.clone(), x.cause_message())).collect(),
        },
        ApplyError::Invalid(msg) => ApiError::bad_request(msg),
    }
}

/// List types from an OpenAPI schema's `x-kubernetes-list-type` and `-list-map-keys`;
/// lists without them are atomic, as upstream.
struct SchemaListTypes(Value);

impl apply::Schema for SchemaListTypes {
    fn list_type(&self, path: &[&str]) -> apply::ListType {
        let mut node = &self.0;
        for field in path {
            if node["type"] == "array" {
                node = &node["items"];
            }
            node = match node["properties"].get(*field) {
                Some(p) => p,
                None => &node["additionalProperties"],
            };
        }
        let keys = || node["x-kubernetes-list-map-keys"].as_array().map(|k| k.iter().filter_map(|s| s.as_str().map(String::from)).collect()).unwrap_or_default();
        match node["x-kubernetes-list-type"].as_str() {
            Some("set") => apply::ListType::Set,
            Some("map") => apply::ListType::Map(keys()),
            _ => apply::ListType::Atomic,
        }
    }
}

impl GenericStore {
    /// The list semantics merges follow: a custom resource's schema extensions, or the
    /// built-in kinds' patch metadata.
    fn merge_schema(&self) -> Box<dyn apply::Schema> {
        match self.kind.strategy.openapi_schema() {
            Some(schema) => Box::new(SchemaListTypes(schema)),
            None => Box::new(BuiltinSchema),
        }
    }

    /// Ownership after a non-apply write: fields the write changed go to `manager`.
    /// `incoming` is what the client sent (its managedFields, when present, replace the
    /// stored ones, so `managedFields: []` resets tracking as upstream).
    pub(crate) fn track_update(&self, old: &Value, new: &mut Value, incoming_managed: Option<&Value>, manager: &str, target: Target) {
        let base = match incoming_managed {
            Some(v) => apply::decode_managed_fields(v).unwrap_or_default(),
            None => apply::managed_fields_of(old).unwrap_or_default(),
        };
        let subresource = match target {
            Target::Main => None,
            Target::Status => Some("status"),
            Target::Finalize => Some("finalize"),
            Target::Approval => Some("approval"),
            Target::Binding => Some("binding"),
        };
        let api_version = self.info().api_version();
        let entries = apply::update(old, new, &base, manager, &api_version, subresource, &*self.merge_schema(), &meta::now());
        apply::set_managed_fields(new, &entries);
    }

    /// Server-side apply of `config` by `manager`: creates the object if missing (main
    /// resource only), else merges into it, with conflicts as 409 unless `force`.
    pub async fn apply(&self, ctx: &ReqCtx, name: &str, config: Value, manager: &str, force: bool, target: Target, opts: &WriteOptions) -> ApiResult<Written> {
        check_manager(manager)?;
        self.check_url_identity(ctx, name, &config)?;
        let api_version = self.info().api_version();
        let subresource = (target == Target::Status).then_some("status");
        let writer = Writer { manager, api_version: &api_version, subresource, ignored: None };
        let untracked = WriteOptions { field_manager: None, ..opts.clone() };
        loop {
            match self.get(ctx.namespace.as_deref(), name).await {
                Err(ApiError::NotFound { .. }) if target == Target::Main => {
                    let (new, entries) = apply::apply_as(&Value::Null, &config, &[], &writer, force, &*self.merge_schema(), &meta::now())
                        .map_err(apply_error)?;
                    let mut obj = self.decode_body(new)?;
                    meta::set(&mut obj, "name", serde_json::json!(name));
                    apply::set_managed_fields(&mut obj, &entries);
                    match self.create(ctx, obj, &untracked).await {
                        // Created by someone else meanwhile: apply to theirs.
                        Err(ApiError::AlreadyExists { .. }) => continue,
                        other => return other,
                    }
                }
                Err(e) => return Err(e),
                Ok(_) => {
                    return self
                        .guaranteed_update(ctx, name, target, &untracked, |live| {
                            let managed = apply::managed_fields_of(live).unwrap_or_default();
                            let (new, entries) = apply::apply_as(live, &config, &managed, &writer, force, &*self.merge_schema(), &meta::now())
                                .map_err(apply_error)?;
                            let mut obj = self.decode_body(new)?;
                            apply::set_managed_fields(&mut obj, &entries);
                            Ok(obj)
                        })
                        .await
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn managers_from_user_agents() {
        assert_eq!(manager_from_user_agent(Some("kubectl/v1.32.4 (linux/amd64) kubernetes/abc")), "kubectl");
        assert_eq!(manager_from_user_agent(Some("OpenAPI-Generator/31.0.0/python")), "OpenAPI-Generator");
        assert_eq!(manager_from_user_agent(None), "unknown");
        assert!(check_manager(&"x".repeat(129)).is_err());
    }
}
