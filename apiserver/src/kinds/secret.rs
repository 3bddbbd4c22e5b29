//! Secrets: `stringData` folded into `data`, type `Opaque` by default, per-type required
//! keys, size limit, immutable type and `immutable`, `type` field selector and columns.

use std::collections::BTreeMap;

use base64::Engine;
use serde_json::{json, Value};

use super::common::{self, s};
use super::configmap::{decoded_len, validate_immutable, validate_keys, MAX_SIZE};
use crate::registry::strategy::default_fields;
use crate::registry::table::{self, Column};
use crate::registry::{ReqCtx, Strategy};
use crate::validation::{FieldError, FieldErrors};

pub struct SecretStrategy;

fn validate_secret(secret: &Value) -> FieldErrors {
    let mut errs = Vec::new();
    let data = &secret["data"];
    validate_keys(&mut errs, data, "data");
    let total: usize = data.as_object().map(|m| m.values().map(decoded_len).sum()).unwrap_or(0);
    if total > MAX_SIZE {
        errs.push(FieldError::too_long("data", MAX_SIZE));
    }
    let has = |k: &str| data.get(k).is_some();
    let decoded = |k: &str| base64::engine::general_purpose::STANDARD.decode(s(&data[k])).unwrap_or_default();
    match s(&secret["type"]) {
        "kubernetes.io/service-account-token"
            if s(&secret["metadata"]["annotations"]["kubernetes.io/service-account.name"]).is_empty() =>
        {
            errs.push(FieldError::required("metadata.annotations[kubernetes.io/service-account.name]", ""));
        }
        "kubernetes.io/dockercfg" | "kubernetes.io/dockerconfigjson" => {
            let key = if s(&secret["type"]) == "kubernetes.io/dockercfg" { ".dockercfg" } else { ".dockerconfigjson" };
            if !has(key) {
                errs.push(FieldError::required(format!("data[{key}]"), ""));
            } else if let Err(e) = serde_json::from_slice::<serde_json::Map<String, Value>>(&decoded(key)) {
                errs.push(FieldError::invalid(format!("data[{key}]"), "<secret contents redacted>", e.to_string()));
            }
        }
        "kubernetes.io/basic-auth" if !has("username") && !has("password") => {
            errs.push(FieldError::required("data[username]", ""));
            errs.push(FieldError::required("data[password]", ""));
        }
        "kubernetes.io/ssh-auth" if decoded("ssh-privatekey").is_empty() => {
            errs.push(FieldError::required("data[ssh-privatekey]", ""));
        }
        "kubernetes.io/tls" => {
            for k in ["tls.crt", "tls.key"] {
                if !has(k) {
                    errs.push(FieldError::required(format!("data[{k}]"), ""));
                }
            }
        }
        _ => {}
    }
    errs
}

impl Strategy for SecretStrategy {
    fn apply_defaults(&self, obj: &mut Value) {
        common::set_default(obj, "type", "Opaque");
        // v1 conversion: stringData entries overwrite data entries, then are dropped.
        if let Some(sd) = obj.get("stringData").and_then(Value::as_object).cloned() {
            let data = common::child(obj, "data");
            for (k, v) in sd {
                data[k.as_str()] = json!(base64::engine::general_purpose::STANDARD.encode(s(&v)));
            }
            common::remove(obj, "stringData");
        }
    }

    fn validate(&self, _ctx: &ReqCtx, obj: &Value) -> FieldErrors {
        validate_secret(obj)
    }

    fn validate_update(&self, _ctx: &ReqCtx, new: &Value, old: &Value) -> FieldErrors {
        let mut errs = Vec::new();
        common::immutable(&mut errs, &new["type"], &old["type"], "type");
        validate_immutable(&mut errs, new, old, &["data"]);
        errs.extend(validate_secret(new));
        errs
    }

    fn selectable_fields(&self, obj: &Value) -> BTreeMap<String, String> {
        let mut f = default_fields(obj);
        f.insert("type".into(), s(&obj["type"]).to_string());
        f
    }

    fn columns(&self) -> Vec<Column> {
        vec![
            table::name_column(),
            Column::new("Type", "string", |o| json!(s(&o["type"]))),
            Column::new("Data", "integer", |o| json!(common::len(&o["data"]))),
            table::age_column(),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_rules() {
        let ctx = ReqCtx::default();
        let mut sec = json!({"stringData": {"password": "hunter2"}});
        SecretStrategy.apply_defaults(&mut sec);
        assert_eq!(sec["type"], "Opaque");
        assert_eq!(sec["data"]["password"], "aHVudGVyMg==");
        assert!(sec.get("stringData").is_none());
        assert!(SecretStrategy.validate(&ctx, &sec).is_empty());
        let tls = json!({"type": "kubernetes.io/tls", "data": {"tls.crt": ""}});
        let errs = SecretStrategy.validate(&ctx, &tls);
        assert_eq!(errs[0].to_string(), "data[tls.key]: Required value");
        let mut new = sec.clone();
        new["type"] = json!("kubernetes.io/basic-auth");
        let errs = SecretStrategy.validate_update(&ctx, &new, &sec);
        assert_eq!(errs[0].to_string(), "type: Invalid value: \"kubernetes.io/basic-auth\": field is immutable");
        assert_eq!(SecretStrategy.selectable_fields(&sec)["type"], "Opaque");
        let cells: Vec<Value> = SecretStrategy.columns().iter().map(|c| (c.cell)(&sec)).collect();
        assert_eq!(cells[1], "Opaque");
        assert_eq!(cells[2], 1);
    }
}
