//! ConfigMaps: key names, the 1 MiB size limit, `immutable`, `kubectl get configmaps` columns.
//! The key and immutability rules are shared with Secrets.

use serde_json::{json, Value};

use super::common::{self, s};
use crate::registry::table::{self, Column};
use crate::registry::{ReqCtx, Strategy};
use crate::validation::{FieldError, FieldErrors};

pub struct ConfigMapStrategy;

/// Upstream's `MaxSecretSize` (also the ConfigMap limit).
pub const MAX_SIZE: usize = 1024 * 1024;

/// Upstream's `IsConfigMapKey`.
pub fn config_key_errors(key: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if key.len() > 253 {
        errs.push("must be no more than 253 characters".to_string());
    }
    if key.is_empty() || !key.bytes().all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.')) {
        errs.push("a valid config key must consist of alphanumeric characters, '-', '_' or '.' (e.g. 'key.name',  or 'KEY_NAME',  or 'key-name', regex used for validation is '[-._a-zA-Z0-9]+')".to_string());
    }
    if key == "." {
        errs.push("must not be '.'".to_string());
    } else if key == ".." {
        errs.push("must not be '..'".to_string());
    } else if key.starts_with("..") {
        errs.push("must not start with '..'".to_string());
    }
    errs
}

/// Validates the keys of a data map at `field`.
pub fn validate_keys(errs: &mut FieldErrors, data: &Value, field: &str) {
    if let Some(m) = data.as_object() {
        for k in m.keys() {
            for msg in config_key_errors(k) {
                errs.push(FieldError::invalid(format!("{field}[{k}]"), k.as_str(), msg));
            }
        }
    }
}

/// Decoded length of a base64 value (`[]byte` fields travel base64-encoded).
pub fn decoded_len(v: &Value) -> usize {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.decode(s(v)).map(|b| b.len()).unwrap_or_else(|_| s(v).len())
}

/// Upstream's update rule for objects with `immutable: true`.
pub fn validate_immutable(errs: &mut FieldErrors, new: &Value, old: &Value, fields: &[&str]) {
    if !common::truthy(&old["immutable"]) {
        return;
    }
    if !common::truthy(&new["immutable"]) {
        errs.push(FieldError::forbidden("immutable", "field is immutable when `immutable` is set"));
    }
    for f in fields {
        if !common::same(&new[*f], &old[*f]) {
            errs.push(FieldError::forbidden(*f, "field is immutable when `immutable` is set"));
        }
    }
}

fn validate_config_map(cm: &Value) -> FieldErrors {
    let mut errs = Vec::new();
    validate_keys(&mut errs, &cm["data"], "data");
    validate_keys(&mut errs, &cm["binaryData"], "binaryData");
    let mut total = 0;
    if let Some(m) = cm["data"].as_object() {
        for (k, v) in m {
            if cm["binaryData"].get(k).is_some() {
                errs.push(FieldError::invalid(format!("data[{k}]"), k.as_str(), "duplicate of key present in binaryData"));
            }
            total += s(v).len();
        }
    }
    if let Some(m) = cm["binaryData"].as_object() {
        total += m.values().map(decoded_len).sum::<usize>();
    }
    if total > MAX_SIZE {
        errs.push(FieldError::too_long("", MAX_SIZE));
    }
    errs
}

impl Strategy for ConfigMapStrategy {
    fn validate(&self, _ctx: &ReqCtx, obj: &Value) -> FieldErrors {
        validate_config_map(obj)
    }

    fn validate_update(&self, _ctx: &ReqCtx, new: &Value, old: &Value) -> FieldErrors {
        let mut errs = Vec::new();
        validate_immutable(&mut errs, new, old, &["data", "binaryData"]);
        errs.extend(validate_config_map(new));
        errs
    }

    fn columns(&self) -> Vec<Column> {
        vec![
            table::name_column(),
            Column::new("Data", "integer", |o| json!(common::len(&o["data"]) + common::len(&o["binaryData"]))),
            table::age_column(),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_size_and_immutability() {
        let ctx = ReqCtx::default();
        let cm = json!({"data": {"good.key": "v", "bad key": "v"}});
        let errs = ConfigMapStrategy.validate(&ctx, &cm);
        assert_eq!(errs.len(), 1);
        assert!(errs[0].to_string().starts_with("data[bad key]: Invalid value: \"bad key\": a valid config key must consist of alphanumeric characters"));
        let big = json!({"data": {"a": "x".repeat(MAX_SIZE + 1)}});
        assert_eq!(ConfigMapStrategy.validate(&ctx, &big)[0].kind, crate::validation::ErrorKind::TooLong);
        let old = json!({"immutable": true, "data": {"a": "1"}});
        let new = json!({"immutable": true, "data": {"a": "2"}});
        let errs = ConfigMapStrategy.validate_update(&ctx, &new, &old);
        assert_eq!(errs[0].to_string(), "data: Forbidden: field is immutable when `immutable` is set");
        assert_eq!((ConfigMapStrategy.columns()[1].cell)(&cm), 2);
    }
}
