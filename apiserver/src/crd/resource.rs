//! Serving custom resources: the strategy of one version of a CustomResourceDefinition,
//! built from the CRD object, so custom objects go through the same generic store as
//! built-in ones. Validation, pruning and defaulting come from the version's structural
//! schema; table columns from `additionalPrinterColumns`.

use std::sync::Arc;

use serde_json::{json, Value};

use crate::crd::jsonpath;
use crate::crd::schema;
use crate::registry::table::{self, Column};
use crate::registry::{Kind, ReqCtx, ResourceInfo, ScalePaths, Strategy};
use crate::validation::FieldErrors;

/// The strategy of one served version of a CRD.
pub struct CustomResourceStrategy {
    /// `group/version` objects are served in.
    api_version: String,
    /// `group/version` objects are stored in (the CRD's storage version).
    storage_api_version: String,
    schema: Option<Value>,
    columns: Vec<Value>,
    scale: Option<ScalePaths>,
}

impl Strategy for CustomResourceStrategy {
    fn prune(&self, mut obj: Value) -> Value {
        if let Some(s) = &self.schema {
            schema::prune(s, &mut obj);
        }
        obj
    }

    fn apply_defaults(&self, obj: &mut Value) {
        if let Some(s) = &self.schema {
            schema::apply_defaults(s, obj);
        }
    }

    fn validate(&self, _ctx: &ReqCtx, obj: &Value) -> FieldErrors {
        match &self.schema {
            Some(s) => schema::validate(s, obj),
            None => Vec::new(),
        }
    }

    fn validate_status_update(&self, ctx: &ReqCtx, new: &Value, _old: &Value) -> FieldErrors {
        self.validate(ctx, new)
    }

    /// Every version of a CRD shares one store; with the `None` conversion strategy only
    /// `apiVersion` differs between them, as upstream.
    fn to_storage(&self, mut obj: Value) -> Value {
        obj["apiVersion"] = json!(self.storage_api_version);
        obj
    }

    /// Also applies the served version's defaults: objects stored before a default was
    /// added read with it, as upstream defaults on decoding from storage.
    fn from_storage(&self, mut obj: Value) -> Value {
        obj["apiVersion"] = json!(self.api_version);
        self.apply_defaults(&mut obj);
        obj
    }

    fn scale_paths(&self) -> ScalePaths {
        self.scale.clone().unwrap_or_default()
    }

    fn openapi_schema(&self) -> Option<Value> {
        self.schema.clone()
    }

    fn columns(&self) -> Vec<Column> {
        let mut cols = vec![table::name_column()];
        for c in &self.columns {
            let path = c["jsonPath"].as_str().unwrap_or_default().to_string();
            let type_ = c["type"].as_str().unwrap_or("string").to_string();
            let cell_type = type_.clone();
            let mut col = Column::new(c["name"].as_str().unwrap_or_default().to_string(), type_, move |o| {
                cell(&cell_type, jsonpath::eval(o, &path))
            });
            col.priority = c["priority"].as_i64().unwrap_or(0) as i32;
            col.format = c["format"].as_str().unwrap_or_default().to_string().into();
            col.description = c["description"].as_str().unwrap_or_default().to_string().into();
            cols.push(col);
        }
        if self.columns.is_empty() {
            cols.push(table::age_column());
        }
        cols
    }
}

/// A printer-column cell: the first value the path found, as the column's type; absent
/// values print as `<none>` (null cell), as upstream.
fn cell(type_: &str, found: Vec<Value>) -> Value {
    let Some(v) = found.into_iter().next() else { return Value::Null };
    match (type_, &v) {
        ("string", Value::String(_)) | ("date", _) => v,
        ("string", Value::Array(_) | Value::Object(_)) => json!(v.to_string()),
        ("string", other) => json!(other.to_string().trim_matches('"')),
        _ => v,
    }
}

/// The served versions of a CRD as table entries, storage version first in discovery
/// priority order. Empty when the CRD serves nothing.
pub fn kinds_of(crd: &Value) -> Vec<Kind> {
    let spec = &crd["spec"];
    let group = spec["group"].as_str().unwrap_or_default();
    let names = &spec["names"];
    let storage = spec["versions"]
        .as_array()
        .and_then(|vs| vs.iter().find(|v| v["storage"] == true))
        .and_then(|v| v["name"].as_str())
        .unwrap_or_default();
    let strs = |v: &Value| v.as_array().map(|a| a.iter().filter_map(|s| s.as_str().map(String::from)).collect()).unwrap_or_default();
    let mut versions: Vec<&Value> = spec["versions"].as_array().map(|a| a.iter().filter(|v| v["served"] == true).collect()).unwrap_or_default();
    versions.sort_by(|a, b| version_priority(a["name"].as_str().unwrap_or("")).cmp(&version_priority(b["name"].as_str().unwrap_or(""))));
    versions
        .into_iter()
        .map(|v| {
            let version = v["name"].as_str().unwrap_or_default().to_string();
            let mut subresources = Vec::new();
            if !v["subresources"]["status"].is_null() {
                subresources.push("status".to_string());
            }
            let scale = &v["subresources"]["scale"];
            if !scale.is_null() {
                subresources.push("scale".to_string());
            }
            let kind = names["kind"].as_str().unwrap_or_default().to_string();
            Kind {
                info: ResourceInfo {
                    group: group.to_string(),
                    version: version.clone(),
                    list_kind: names["listKind"].as_str().map(String::from).unwrap_or_else(|| format!("{kind}List")),
                    plural: names["plural"].as_str().unwrap_or_default().to_string(),
                    singular: names["singular"].as_str().map(String::from).unwrap_or_else(|| kind.to_lowercase()),
                    kind,
                    namespaced: spec["scope"] != "Cluster",
                    short_names: strs(&names["shortNames"]),
                    categories: strs(&names["categories"]),
                    subresources,
                },
                strategy: Arc::new(CustomResourceStrategy {
                    api_version: format!("{group}/{version}"),
                    storage_api_version: format!("{group}/{storage}"),
                    schema: v["schema"].get("openAPIV3Schema").cloned(),
                    columns: v["additionalPrinterColumns"].as_array().cloned().unwrap_or_default(),
                    scale: (!scale.is_null()).then(|| ScalePaths {
                        spec_replicas: scale["specReplicasPath"].as_str().unwrap_or(".spec.replicas").to_string(),
                        status_replicas: scale["statusReplicasPath"].as_str().unwrap_or(".status.replicas").to_string(),
                        label_selector: scale["labelSelectorPath"].as_str().map(String::from),
                    }),
                }),
                normalize: None,
            }
        })
        .collect()
}

/// Upstream's version ordering for discovery (`version.CompareKubeAwareVersionStrings`):
/// GA before beta before alpha, higher numbers first, then other strings alphabetically.
pub fn version_priority(v: &str) -> (u8, i64, i64, String) {
    let parse = || -> Option<(u8, i64, i64)> {
        let rest = v.strip_prefix('v')?;
        let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
        let major: i64 = digits.parse().ok()?;
        let tail = &rest[digits.len()..];
        if tail.is_empty() {
            return Some((0, -major, 0));
        }
        for (rank, word) in [(1u8, "beta"), (2u8, "alpha")] {
            if let Some(n) = tail.strip_prefix(word) {
                return Some((rank, -major, -n.parse::<i64>().ok()?));
            }
        }
        None
    };
    match parse() {
        Some((rank, major, minor)) => (rank, major, minor, String::new()),
        None => (3, 0, 0, v.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn crd() -> Value {
        json!({
            "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
            "metadata": {"name": "crontabs.stable.example.com"},
            "spec": {
                "group": "stable.example.com", "scope": "Namespaced",
                "names": {"plural": "crontabs", "singular": "crontab", "kind": "CronTab", "shortNames": ["ct"]},
                "versions": [
                    {"name": "v1beta1", "served": true, "storage": false, "schema": {"openAPIV3Schema": {"type": "object"}}},
                    {"name": "v1", "served": true, "storage": true,
                     "schema": {"openAPIV3Schema": {"type": "object", "properties": {"spec": {"type": "object", "properties": {"cronSpec": {"type": "string"}, "replicas": {"type": "integer"}}}}}},
                     "subresources": {"status": {}, "scale": {"specReplicasPath": ".spec.replicas", "statusReplicasPath": ".status.replicas"}},
                     "additionalPrinterColumns": [{"name": "Spec", "type": "string", "jsonPath": ".spec.cronSpec"}, {"name": "Replicas", "type": "integer", "jsonPath": ".spec.replicas"}]},
                    {"name": "v2", "served": false, "storage": false}
                ]
            }
        })
    }

    #[test]
    fn served_versions_in_priority_order() {
        let kinds = kinds_of(&crd());
        let versions: Vec<_> = kinds.iter().map(|k| k.info.version.as_str()).collect();
        assert_eq!(versions, ["v1", "v1beta1"]);
        let v1 = &kinds[0].info;
        assert_eq!(v1.list_kind, "CronTabList");
        assert!(v1.namespaced);
        assert_eq!(v1.subresources, ["status", "scale"]);
        assert_eq!(v1.key_root(), "/registry/stable.example.com/crontabs/");
    }

    #[test]
    fn versions_share_storage_version() {
        let kinds = kinds_of(&crd());
        let beta = &kinds[1].strategy;
        let stored = beta.to_storage(json!({"apiVersion": "stable.example.com/v1beta1"}));
        assert_eq!(stored["apiVersion"], "stable.example.com/v1");
        assert_eq!(beta.from_storage(stored)["apiVersion"], "stable.example.com/v1beta1");
    }

    #[test]
    fn defaults_apply_when_read_from_storage() {
        let mut c = crd();
        c["spec"]["versions"][1]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]["cronSpec"]["default"] = json!("* * * * *");
        let kinds = kinds_of(&c);
        let read = kinds[0].strategy.from_storage(json!({"apiVersion": "stable.example.com/v1", "spec": {"replicas": 1}}));
        assert_eq!(read["spec"], json!({"cronSpec": "* * * * *", "replicas": 1}));
        let kept = kinds[0].strategy.from_storage(json!({"apiVersion": "stable.example.com/v1", "spec": {"cronSpec": "0 * * * *"}}));
        assert_eq!(kept["spec"]["cronSpec"], "0 * * * *");
    }

    #[test]
    fn printer_columns_follow_json_paths() {
        let kinds = kinds_of(&crd());
        let cols = kinds[0].strategy.columns();
        let names: Vec<_> = cols.iter().map(|c| c.name.to_string()).collect();
        assert_eq!(names, ["Name", "Spec", "Replicas"]);
        let obj = json!({"metadata": {"name": "a"}, "spec": {"cronSpec": "* * * * */5", "replicas": 3}});
        assert_eq!((cols[1].cell)(&obj), "* * * * */5");
        assert_eq!((cols[2].cell)(&obj), 3);
        assert_eq!((cols[2].cell)(&json!({})), Value::Null);
        let beta_cols: Vec<_> = kinds[1].strategy.columns().iter().map(|c| c.name.to_string()).collect();
        assert_eq!(beta_cols, ["Name", "Age"]);
    }

    #[test]
    fn kube_aware_version_order() {
        let mut v = vec!["v1alpha1", "v1", "foo", "v2beta1", "v2", "v1beta2", "v10"];
        v.sort_by_key(|s| version_priority(s));
        assert_eq!(v, ["v10", "v2", "v1", "v2beta1", "v1beta2", "v1alpha1", "foo"]);
    }
}
