use std::sync::Arc;

use serde_json::{json, Value};

use super::*;
use crate::registry::{Kind, Plain, Strategy};
use crate::validation::FieldErrors;

/// A backend the stores never touch (documents are built from the kinds alone).
fn backend() -> Arc<dyn kine_sqlite::Backend> {
    static DIR: std::sync::OnceLock<tempfile::TempDir> = std::sync::OnceLock::new();
    let dir = DIR.get_or_init(|| tempfile::tempdir().unwrap());
    let path = dir.path().join(format!("{}.db", uuid::Uuid::new_v4()));
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let b: Arc<dyn kine_sqlite::Backend> = rt.block_on(kine_sqlite::SqliteBackend::open(&path)).unwrap();
        b
    })
    .join()
    .unwrap()
}

fn stores(group: &str, version: &str) -> Vec<Arc<GenericStore>> {
    let backend = backend();
    crate::kinds::all()
        .into_iter()
        .filter(|k| k.info.group == group && k.info.version == version)
        .map(|k| Arc::new(GenericStore::new(k, backend.clone())))
        .collect()
}

#[test]
fn every_builtin_kind_has_a_definition() {
    // Kinds that bring their own schema (metrics.k8s.io) need no built-in definition.
    for k in crate::kinds::all().into_iter().filter(|k| k.strategy.openapi_schema().is_none()) {
        let i = &k.info;
        assert!(builtin_name(&i.group, &i.version, &i.kind).is_some(), "{}/{} {}", i.group, i.version, i.kind);
        // Virtual kinds (the reviews) have no list.
        assert!(i.list_kind.is_empty() || builtin_name(&i.group, &i.version, &i.list_kind).is_some(), "{}/{} {}", i.group, i.version, i.list_kind);
    }
    assert_eq!(builtin_name("apps", "v1", "Deployment"), Some("io.k8s.api.apps.v1.Deployment"));
}

#[test]
fn v3_deployment_schema() {
    let doc = v3_document(&stores("apps", "v1"));
    let schemas = &doc["components"]["schemas"];
    let d = &schemas["io.k8s.api.apps.v1.Deployment"];
    assert_eq!(d["x-kubernetes-group-version-kind"], json!([{"group": "apps", "version": "v1", "kind": "Deployment"}]));
    // A reference with a description is wrapped in allOf.
    assert_eq!(d["properties"]["spec"]["allOf"][0]["$ref"], "#/components/schemas/io.k8s.api.apps.v1.DeploymentSpec");
    assert!(schemas["io.k8s.api.apps.v1.DeploymentSpec"]["properties"]["replicas"]["description"].as_str().unwrap().contains("Number of desired pods"));
    let containers = &schemas["io.k8s.api.core.v1.PodSpec"]["properties"]["containers"];
    assert_eq!(containers["x-kubernetes-patch-merge-key"], "name");
    assert_eq!(containers["x-kubernetes-patch-strategy"], "merge");
    assert_eq!(containers["x-kubernetes-list-type"], "map");
    assert_eq!(containers["x-kubernetes-list-map-keys"], json!(["name"]));
    assert_eq!(containers["items"]["$ref"], "#/components/schemas/io.k8s.api.core.v1.Container");
    assert_eq!(schemas["io.k8s.apimachinery.pkg.util.intstr.IntOrString"]["format"], "int-or-string");
    assert_eq!(schemas["io.k8s.apimachinery.pkg.api.resource.Quantity"]["type"], "string");
    assert!(schemas.get("io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta").is_some());
    assert!(schemas.get("io.k8s.api.apps.v1.DeploymentList").is_some());
    // Nothing of other groups beyond what is referenced.
    assert!(schemas.get("io.k8s.api.batch.v1.Job").is_none());
    // Every reference resolves.
    let mut refs_found = Vec::new();
    refs(&doc["components"], &mut refs_found);
    for r in refs_found {
        let name = r.strip_prefix("#/components/schemas/").unwrap();
        assert!(schemas.get(name).is_some(), "dangling {r}");
    }
    // kubectl skips client-side validation when PATCH operations take fieldValidation.
    let patch = &doc["paths"]["/apis/apps/v1/namespaces/{namespace}/deployments/{name}"]["patch"];
    assert_eq!(patch["x-kubernetes-action"], "patch");
    assert_eq!(patch["x-kubernetes-group-version-kind"]["kind"], "Deployment");
    assert!(patch["parameters"].as_array().unwrap().iter().any(|p| p["name"] == "fieldValidation" && p["in"] == "query"));
}

#[test]
fn v2_document_refs_and_extensions() {
    let doc = v2_document(&stores("", "v1"));
    let defs = &doc["definitions"];
    let pod = &defs["io.k8s.api.core.v1.Pod"];
    assert_eq!(pod["properties"]["spec"]["$ref"], "#/definitions/io.k8s.api.core.v1.PodSpec");
    assert!(pod["properties"]["spec"]["description"].is_string());
    let ports = &defs["io.k8s.api.core.v1.Container"]["properties"]["ports"];
    assert_eq!(ports["x-kubernetes-patch-merge-key"], "containerPort");
    assert_eq!(ports["x-kubernetes-list-map-keys"], json!(["containerPort", "protocol"]));
    assert_eq!(defs["io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"]["properties"]["ownerReferences"]["x-kubernetes-patch-merge-key"], "uid");
    let get = &doc["paths"]["/api/v1/namespaces/{namespace}/pods/{name}"]["get"];
    assert_eq!(get["operationId"], "readCoreV1NamespacedPod");
    assert_eq!(get["responses"]["200"]["schema"]["$ref"], "#/definitions/io.k8s.api.core.v1.Pod");
    assert!(!proto::encode_document(&doc).is_empty());
}

struct Custom;
impl Strategy for Custom {
    fn validate(&self, _: &crate::registry::ReqCtx, _: &Value) -> FieldErrors {
        Vec::new()
    }
    fn openapi_schema(&self) -> Option<Value> {
        Some(json!({"type": "object", "properties": {"spec": {"type": "object", "properties": {"cronSpec": {"type": "string", "description": "the schedule"}}}}}))
    }
}

#[test]
fn custom_resource_schema() {
    let backend = backend();
    let info = crate::registry::ResourceInfo {
        group: "stable.example.com".into(),
        version: "v1".into(),
        kind: "CronTab".into(),
        list_kind: "CronTabList".into(),
        plural: "crontabs".into(),
        singular: "crontab".into(),
        namespaced: true,
        short_names: vec![],
        categories: vec![],
        subresources: vec![],
    };
    let store = Arc::new(GenericStore::new(Kind { info, strategy: Arc::new(Custom), normalize: None }, backend));
    let doc = v3_document(&[store]);
    let s = &doc["components"]["schemas"]["com.example.stable.v1.CronTab"];
    assert_eq!(s["x-kubernetes-group-version-kind"][0]["kind"], "CronTab");
    assert_eq!(s["properties"]["spec"]["properties"]["cronSpec"]["description"], "the schedule");
    assert_eq!(s["properties"]["metadata"]["allOf"][0]["$ref"], "#/components/schemas/io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta");
    assert!(doc["components"]["schemas"].get("io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta").is_some());
    assert!(doc["components"]["schemas"].get("com.example.stable.v1.CronTabList").is_some());
    let _ = Plain;
}

#[test]
fn hash_is_stable() {
    assert_eq!(hash(b"abc"), hash(b"abc"));
    assert_ne!(hash(b"abc"), hash(b"abd"));
    assert_eq!(hash(b"").len(), 32);
}
