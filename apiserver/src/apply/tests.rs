//! Tests of field sets, the apply merge and ownership, modelled on kubectl
//! flows and upstream's `fieldsV1` output.

use super::*;
use serde_json::json;

const T0: &str = "2024-01-01T00:00:00Z";
const T1: &str = "2024-01-01T00:01:00Z";
const T2: &str = "2024-01-01T00:02:00Z";

fn f(name: &str) -> PathElement {
    PathElement::field(name)
}

fn fields(s: &str) -> FieldSet {
    FieldSet::from_fields_v1_str(s).unwrap()
}

fn entry<'a>(
    entries: &'a [ManagedFieldsEntry],
    manager: &str,
    op: Operation,
) -> &'a ManagedFieldsEntry {
    entries
        .iter()
        .find(|e| e.manager == manager && e.operation == op)
        .unwrap_or_else(|| panic!("no {op:?} entry for {manager}: {entries:#?}"))
}

fn has_entry(entries: &[ManagedFieldsEntry], manager: &str, op: Operation) -> bool {
    entries
        .iter()
        .any(|e| e.manager == manager && e.operation == op)
}

fn deployment(replicas: i64, image: &str) -> Value {
    json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "web", "namespace": "default", "labels": {"app": "web"}},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {"containers": [{"name": "c", "image": image, "ports": [{"containerPort": 80}]}]}
            }
        }
    })
}

fn cm(data: Value) -> Value {
    json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "cm"}, "data": data})
}

/// `apply` with the built-in schema, `apps/v1`, not forced.
fn ssa(
    live: &Value,
    config: &Value,
    managed: &[ManagedFieldsEntry],
    manager: &str,
    now: &str,
) -> (Value, Vec<ManagedFieldsEntry>) {
    apply(
        live,
        config,
        managed,
        manager,
        "apps/v1",
        false,
        &BuiltinSchema,
        now,
    )
    .unwrap()
}

fn ssa_err(
    live: &Value,
    config: &Value,
    managed: &[ManagedFieldsEntry],
    manager: &str,
) -> ApplyError {
    apply(
        live,
        config,
        managed,
        manager,
        "apps/v1",
        false,
        &BuiltinSchema,
        T2,
    )
    .unwrap_err()
}

fn conflicts(e: ApplyError) -> Conflicts {
    match e {
        ApplyError::Conflicts(c) => c,
        other => panic!("expected conflicts, got {other:?}"),
    }
}

// ---------------------------------------------------------------------------
// fieldsV1

const BRIEF_EXAMPLE: &str = r#"{"f:metadata":{"f:labels":{".":{},"f:app":{}}},"f:spec":{"f:containers":{"k:{\"name\":\"c\"}":{".":{},"f:image":{},"f:name":{}}}}}"#;

/// `kubectl apply --server-side` of an nginx Deployment, as upstream stores it.
const UPSTREAM_SSA_DEPLOYMENT: &str = r#"{"f:metadata":{"f:labels":{"f:app":{}}},"f:spec":{"f:replicas":{},"f:selector":{},"f:template":{"f:metadata":{"f:labels":{"f:app":{}}},"f:spec":{"f:containers":{"k:{\"name\":\"nginx\"}":{".":{},"f:image":{},"f:name":{},"f:ports":{"k:{\"containerPort\":80,\"protocol\":\"TCP\"}":{".":{},"f:containerPort":{}}}}}}}}}"#;

#[test]
fn fields_v1_round_trips_upstream_text_exactly() {
    for text in [BRIEF_EXAMPLE, UPSTREAM_SSA_DEPLOYMENT, "{}"] {
        let set = fields(text);
        assert_eq!(set.to_fields_v1_string(), text);
        // The Value form carries the same content.
        assert_eq!(
            set.to_fields_v1(),
            serde_json::from_str::<Value>(text).unwrap()
        );
        assert_eq!(FieldSet::from_fields_v1(&set.to_fields_v1()).unwrap(), set);
    }
}

#[test]
fn fields_v1_members_and_dot() {
    let set = fields(BRIEF_EXAMPLE);
    let labels = vec![f("metadata"), f("labels")];
    assert!(set.has(&labels), "\".\" makes the labels node a member");
    assert!(set.has(&[f("metadata"), f("labels"), f("app")]));
    assert!(
        !set.has(&[f("metadata")]),
        "a node with children and no \".\" is not a member"
    );
    let item = vec![
        f("spec"),
        f("containers"),
        PathElement::key([("name", json!("c"))]),
    ];
    assert!(set.has(&item));
    assert_eq!(set.len(), 5);
    let printed: Vec<String> = set.paths().iter().map(|p| path_to_string(p)).collect();
    assert_eq!(
        printed,
        [
            ".metadata.labels",
            ".metadata.labels.app",
            ".spec.containers[name=\"c\"]",
            ".spec.containers[name=\"c\"].image",
            ".spec.containers[name=\"c\"].name"
        ]
    );
}

#[test]
fn fields_v1_element_order_is_upstreams() {
    let set = FieldSet::from_paths([
        vec![PathElement::Index(0)],
        vec![PathElement::Value(json!("x"))],
        vec![PathElement::key([("name", json!("a"))])],
        vec![f("z")],
        vec![PathElement::Value(json!(2))],
    ]);
    // Fields, keys, values (numbers before strings), indices.
    assert_eq!(
        set.to_fields_v1_string(),
        r#"{"f:z":{},"k:{\"name\":\"a\"}":{},"v:2":{},"v:\"x\"":{},"i:0":{}}"#
    );
}

#[test]
fn key_elements_sort_fields_and_escape_like_go() {
    let pe = PathElement::key([("protocol", json!("TCP")), ("containerPort", json!(80))]);
    assert_eq!(
        pe.to_key_string(),
        r#"k:{"containerPort":80,"protocol":"TCP"}"#
    );
    assert_eq!(pe.to_string(), r#"[containerPort=80,protocol="TCP"]"#);
    let html = PathElement::Value(json!("a<b>&c"));
    assert_eq!(html.to_key_string(), r#"v:"a\u003cb\u003e\u0026c""#);
    assert_eq!(html.to_string(), r#"[="a<b>&c"]"#);
    assert_eq!(PathElement::Index(3).to_string(), "[3]");
    // Parsing sorts keys too, so both spellings name one item.
    let parsed = PathElement::parse(r#"k:{"protocol":"TCP","containerPort":80}"#)
        .unwrap()
        .unwrap();
    assert_eq!(parsed, pe);
    assert_eq!(
        PathElement::parse("v:80").unwrap().unwrap(),
        PathElement::Value(json!(80.0))
    );
}

#[test]
fn fields_v1_parse_errors_and_unknown_elements() {
    assert!(PathElement::parse("f").is_err());
    assert!(PathElement::parse("fx").is_err());
    assert!(PathElement::parse("k:[1]").is_err());
    assert!(PathElement::parse("i:x").is_err());
    assert_eq!(PathElement::parse("z:whatever").unwrap(), None);
    // Unknown element types are dropped, known siblings kept.
    let set = fields(r#"{"f:a":{},"z:b":{},"f:c":{"q:d":{}}}"#);
    assert_eq!(set.to_fields_v1_string(), r#"{"f:a":{},"f:c":{}}"#);
    assert!(FieldSet::from_fields_v1(&json!({"f:a": 1})).is_err());
    assert!(FieldSet::from_fields_v1(&json!([1])).is_err());
}

#[test]
fn set_operations() {
    let a = fields(r#"{"f:data":{"f:a":{},"f:b":{}},"f:spec":{".":{},"f:x":{}}}"#);
    let b = fields(r#"{"f:data":{"f:b":{},"f:c":{}},"f:spec":{}}"#);
    assert_eq!(
        a.union(&b).to_fields_v1_string(),
        r#"{"f:data":{"f:a":{},"f:b":{},"f:c":{}},"f:spec":{".":{},"f:x":{}}}"#
    );
    assert_eq!(
        a.intersection(&b).to_fields_v1_string(),
        r#"{"f:data":{"f:b":{}},"f:spec":{}}"#
    );
    // Path-wise: removing the `spec` member leaves `spec.x`.
    assert_eq!(
        a.difference(&b).to_fields_v1_string(),
        r#"{"f:data":{"f:a":{}},"f:spec":{"f:x":{}}}"#
    );
    // Recursive: a member removes its whole sub-tree.
    assert_eq!(
        a.recursive_difference(&b).to_fields_v1_string(),
        r#"{"f:data":{"f:a":{}}}"#
    );
    assert!(a.difference(&a).is_empty());
    assert_eq!(a.difference(&a), FieldSet::new());
}

#[test]
fn value_order_and_equality_follow_upstream() {
    use std::cmp::Ordering::*;
    assert_eq!(value_cmp(&json!(1), &json!(1.0)), Equal);
    assert_eq!(value_cmp(&json!(2), &json!(1.5)), Greater);
    assert_eq!(value_cmp(&json!(9), &json!("a")), Less);
    assert_eq!(value_cmp(&json!("z"), &json!(true)), Less);
    assert_eq!(value_cmp(&json!({}), &json!(null)), Less);
    assert!(value_eq(&json!({"a": [1, 2.0]}), &json!({"a": [1.0, 2]})));
}

// ---------------------------------------------------------------------------
// fields_of and the schema

#[test]
fn fields_of_matches_upstream_ssa_output() {
    let obj = json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "nginx", "namespace": "default", "labels": {"app": "nginx"},
                     "uid": "u", "resourceVersion": "1", "generation": 1,
                     "creationTimestamp": "2024-01-01T00:00:00Z", "managedFields": [{"manager": "x"}]},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": "nginx"}},
            "template": {
                "metadata": {"labels": {"app": "nginx"}},
                "spec": {"containers": [{"name": "nginx", "image": "nginx", "ports": [{"containerPort": 80}]}]}
            }
        }
    });
    assert_eq!(
        fields_of(&obj, &BuiltinSchema).to_fields_v1_string(),
        UPSTREAM_SSA_DEPLOYMENT
    );
}

#[test]
fn fields_of_empty_objects_nulls_sets_and_atomics() {
    let obj = json!({
        "metadata": {"finalizers": ["a", "b"], "annotations": {}},
        "spec": {
            "tolerations": [{"key": "k"}],
            "nodeName": null,
            "emptyList": [],
            "env": [],
        }
    });
    assert_eq!(
        fields_of(&obj, &BuiltinSchema).to_fields_v1_string(),
        r#"{"f:metadata":{"f:annotations":{},"f:finalizers":{"v:\"a\"":{},"v:\"b\"":{}}},"f:spec":{"f:emptyList":{},"f:nodeName":{},"f:tolerations":{}}}"#
    );
}

#[test]
fn builtin_schema_list_types() {
    let s = BuiltinSchema;
    let map = |k: &[&str]| ListType::Map(k.iter().map(|s| s.to_string()).collect());
    assert_eq!(
        s.list_type(&["spec", "template", "spec", "containers"]),
        map(&["name"])
    );
    assert_eq!(
        s.list_type(&["spec", "containers", "ports"]),
        map(&["containerPort", "protocol"])
    );
    assert_eq!(s.list_type(&["spec", "ports"]), map(&["port", "protocol"]));
    assert_eq!(s.list_type(&["spec", "containers", "env"]), map(&["name"]));
    assert_eq!(s.list_type(&["status", "conditions"]), map(&["type"]));
    assert_eq!(s.list_type(&["metadata", "ownerReferences"]), map(&["uid"]));
    assert_eq!(s.list_type(&["metadata", "finalizers"]), ListType::Set);
    assert_eq!(s.list_type(&["spec", "finalizers"]), ListType::Atomic);
    assert_eq!(s.list_type(&["spec", "tolerations"]), ListType::Atomic);
    assert_eq!(s.list_type(&["spec", "ingress", "ports"]), ListType::Atomic);
    assert!(s.is_atomic_object(&["spec", "selector"]));
    assert!(!s.is_atomic_object(&["spec", "template"]));
    assert_eq!(
        s.list_key_default(&["spec", "ports"], "protocol"),
        Some(json!("TCP"))
    );
}

// ---------------------------------------------------------------------------
// Apply

#[test]
fn create_via_apply_returns_config_and_owns_its_fields() {
    let config = deployment(3, "nginx:1");
    let (obj, entries) = ssa(&Value::Null, &config, &[], "kubectl", T0);
    assert_eq!(obj, config);
    assert_eq!(entries.len(), 1);
    let e = &entries[0];
    assert_eq!(
        (e.manager.as_str(), e.operation, e.api_version.as_str()),
        ("kubectl", Operation::Apply, "apps/v1")
    );
    assert_eq!(e.time.as_deref(), Some(T0));
    assert_eq!(e.subresource, None);
    assert_eq!(
        e.fields.to_fields_v1_string(),
        r#"{"f:metadata":{"f:labels":{"f:app":{}}},"f:spec":{"f:replicas":{},"f:selector":{},"f:template":{"f:metadata":{"f:labels":{"f:app":{}}},"f:spec":{"f:containers":{"k:{\"name\":\"c\"}":{".":{},"f:image":{},"f:name":{},"f:ports":{"k:{\"containerPort\":80,\"protocol\":\"TCP\"}":{".":{},"f:containerPort":{}}}}}}}}}"#
    );
}

#[test]
fn reapplying_the_same_config_changes_nothing() {
    let config = deployment(3, "nginx:1");
    let (obj, entries) = ssa(&Value::Null, &config, &[], "kubectl", T0);
    let (obj2, entries2) = ssa(&obj, &config, &entries, "kubectl", T1);
    assert_eq!(obj2, obj);
    // Upstream only stamps the time when the object changes.
    assert_eq!(entries2, entries);
}

#[test]
fn apply_changing_own_field_updates_it_and_time() {
    let (obj, entries) = ssa(&Value::Null, &deployment(3, "nginx:1"), &[], "kubectl", T0);
    let (obj2, entries2) = ssa(&obj, &deployment(5, "nginx:2"), &entries, "kubectl", T1);
    assert_eq!(obj2["spec"]["replicas"], 5);
    assert_eq!(
        obj2["spec"]["template"]["spec"]["containers"][0]["image"],
        "nginx:2"
    );
    assert_eq!(entries2.len(), 1);
    assert_eq!(entries2[0].time.as_deref(), Some(T1));
}

#[test]
fn apply_removing_a_field_removes_it() {
    let (obj, entries) = ssa(&Value::Null, &deployment(3, "nginx:1"), &[], "kubectl", T0);
    let mut config = deployment(3, "nginx:1");
    config["spec"].as_object_mut().unwrap().remove("replicas");
    config["metadata"].as_object_mut().unwrap().remove("labels");
    let (obj2, entries2) = ssa(&obj, &config, &entries, "kubectl", T1);
    assert!(obj2["spec"].get("replicas").is_none(), "{obj2:#}");
    assert!(obj2["metadata"].get("labels").is_none(), "{obj2:#}");
    assert_eq!(
        obj2["metadata"]["name"], "web",
        "system fields survive pruning"
    );
    assert_eq!(obj2["spec"]["template"], obj["spec"]["template"]);
    let e = entry(&entries2, "kubectl", Operation::Apply);
    assert!(!e.fields.has(&[f("spec"), f("replicas")]));
    assert!(!e.fields.has(&[f("metadata"), f("labels"), f("app")]));
}

#[test]
fn apply_removing_a_list_item_removes_it() {
    let config = |names: &[&str]| {
        let cs: Vec<Value> = names
            .iter()
            .map(|n| json!({"name": n, "image": "i"}))
            .collect();
        json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}, "spec": {"containers": cs}})
    };
    let (obj, entries) = ssa(&Value::Null, &config(&["a", "b"]), &[], "kubectl", T0);
    let (obj2, _) = ssa(&obj, &config(&["b"]), &entries, "kubectl", T1);
    assert_eq!(
        obj2["spec"]["containers"],
        json!([{"name": "b", "image": "i"}])
    );
}

#[test]
fn dropping_a_field_another_manager_also_owns_only_releases_it() {
    let (obj, e1) = ssa(
        &Value::Null,
        &cm(json!({"a": "1", "b": "2"})),
        &[],
        "alice",
        T0,
    );
    // Bob applies the same value of `a`: shared, no conflict.
    let (obj, e2) = ssa(&obj, &cm(json!({"a": "1"})), &e1, "bob", T1);
    assert!(entry(&e2, "alice", Operation::Apply)
        .fields
        .has(&[f("data"), f("a")]));
    assert!(entry(&e2, "bob", Operation::Apply)
        .fields
        .has(&[f("data"), f("a")]));
    // Alice drops `a`: it stays, owned by Bob alone.
    let (obj, e3) = ssa(&obj, &cm(json!({"b": "2"})), &e2, "alice", T2);
    assert_eq!(obj["data"], json!({"a": "1", "b": "2"}));
    assert!(!entry(&e3, "alice", Operation::Apply)
        .fields
        .has(&[f("data"), f("a")]));
    assert!(entry(&e3, "bob", Operation::Apply)
        .fields
        .has(&[f("data"), f("a")]));
    // Bob drops it too: now it goes.
    let (obj, e4) = ssa(&obj, &cm(json!({})), &e3, "bob", T2);
    assert_eq!(obj["data"], json!({"b": "2"}));
    assert_eq!(e4.len(), 2);
    // Bob still owns `data` as an empty map.
    assert_eq!(
        entry(&e4, "bob", Operation::Apply)
            .fields
            .to_fields_v1_string(),
        r#"{"f:data":{}}"#
    );
}

#[test]
fn changing_a_shared_field_conflicts_with_the_co_owner() {
    let (obj, e1) = ssa(&Value::Null, &cm(json!({"a": "1"})), &[], "alice", T0);
    let (obj, e2) = ssa(&obj, &cm(json!({"a": "1"})), &e1, "bob", T1);
    let c = conflicts(ssa_err(&obj, &cm(json!({"a": "2"})), &e2, "bob"));
    assert_eq!(
        c.to_string(),
        "Apply failed with 1 conflict: conflict with \"alice\": .data.a"
    );
    assert_eq!(c.0[0].manager, "alice");
    assert_eq!(c.0[0].operation, Operation::Apply);
    assert_eq!(c.0[0].cause_message(), "conflict with \"alice\"");
}

#[test]
fn conflict_with_an_update_manager() {
    let live = deployment(3, "nginx:1");
    let managed = update(
        &Value::Null,
        &live,
        &[],
        "kubectl-client-side-apply",
        "apps/v1",
        None,
        &BuiltinSchema,
        T0,
    );
    let c = conflicts(ssa_err(
        &live,
        &deployment(5, "nginx:1"),
        &managed,
        "kubectl",
    ));
    assert_eq!(
        c.to_string(),
        "Apply failed with 1 conflict: conflict with \"kubectl-client-side-apply\" using apps/v1: .spec.replicas"
    );
    assert_eq!(c.0[0].path, ".spec.replicas");
    assert_eq!(c.0[0].api_version, "apps/v1");

    let c = conflicts(ssa_err(
        &live,
        &deployment(5, "nginx:2"),
        &managed,
        "kubectl",
    ));
    assert_eq!(
        c.to_string(),
        "Apply failed with 2 conflicts: conflicts with \"kubectl-client-side-apply\" using apps/v1:\n- .spec.replicas\n- .spec.template.spec.containers[name=\"c\"].image"
    );
}

#[test]
fn applying_unchanged_values_shares_with_an_update_manager() {
    let live = deployment(3, "nginx:1");
    let managed = update(
        &Value::Null,
        &live,
        &[],
        "creator",
        "apps/v1",
        None,
        &BuiltinSchema,
        T0,
    );
    let (obj, entries) = ssa(&live, &deployment(3, "nginx:1"), &managed, "kubectl", T1);
    assert_eq!(obj, live);
    let path = [f("spec"), f("replicas")];
    assert!(entry(&entries, "creator", Operation::Update)
        .fields
        .has(&path));
    assert!(entry(&entries, "kubectl", Operation::Apply)
        .fields
        .has(&path));
}

#[test]
fn conflicts_with_several_managers_are_grouped_and_sorted() {
    let live = cm(json!({"a": "1", "b": "1", "c": "1"}));
    let mut managed = update(
        &Value::Null,
        &cm(json!({"a": "1", "b": "1"})),
        &[],
        "m",
        "v1",
        None,
        &BuiltinSchema,
        T0,
    );
    managed = update(
        &cm(json!({"a": "1", "b": "1"})),
        &live,
        &managed,
        "kubectl-edit",
        "v1",
        None,
        &BuiltinSchema,
        T1,
    );
    let err = apply(
        &live,
        &cm(json!({"a": "2", "b": "2", "c": "2"})),
        &managed,
        "ctl",
        "v1",
        false,
        &BuiltinSchema,
        T2,
    )
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        "Apply failed with 3 conflicts: conflicts with \"kubectl-edit\" using v1:\n- .data.c\nconflicts with \"m\" using v1:\n- .data.a\n- .data.b"
    );
}

#[test]
fn force_takes_ownership() {
    let live = deployment(3, "nginx:1");
    let managed = update(
        &Value::Null,
        &live,
        &[],
        "creator",
        "apps/v1",
        None,
        &BuiltinSchema,
        T0,
    );
    let (obj, entries) = apply(
        &live,
        &deployment(5, "nginx:1"),
        &managed,
        "kubectl",
        "apps/v1",
        true,
        &BuiltinSchema,
        T1,
    )
    .unwrap();
    assert_eq!(obj["spec"]["replicas"], 5);
    let path = [f("spec"), f("replicas")];
    assert!(!entry(&entries, "creator", Operation::Update)
        .fields
        .has(&path));
    assert!(entry(&entries, "kubectl", Operation::Apply)
        .fields
        .has(&path));
    // The creator keeps what was not taken.
    assert!(entry(&entries, "creator", Operation::Update).fields.has(&[
        f("spec"),
        f("template"),
        f("spec"),
        f("containers"),
        PathElement::key([("name", json!("c"))]),
        f("image")
    ]));
    // Now the applier can drop replicas: nobody else owns it, so it goes.
    let mut config = deployment(5, "nginx:1");
    config["spec"].as_object_mut().unwrap().remove("replicas");
    let (obj, _) = ssa(&obj, &config, &entries, "kubectl", T2);
    assert!(obj["spec"].get("replicas").is_none());
}

#[test]
fn own_update_entry_is_a_different_manager() {
    // Upstream identifies managers by name *and* operation, so a manager's
    // Update entry conflicts with its own apply (kubernetes#107417).
    let live = cm(json!({"a": "1"}));
    let managed = update(
        &Value::Null,
        &live,
        &[],
        "ctl",
        "v1",
        None,
        &BuiltinSchema,
        T0,
    );
    let err = apply(
        &live,
        &cm(json!({"a": "2"})),
        &managed,
        "ctl",
        "v1",
        false,
        &BuiltinSchema,
        T1,
    )
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        "Apply failed with 1 conflict: conflict with \"ctl\" using v1: .data.a"
    );
    // The same value is shared without conflict.
    let (_, entries) = apply(
        &live,
        &cm(json!({"a": "1"})),
        &managed,
        "ctl",
        "v1",
        false,
        &BuiltinSchema,
        T1,
    )
    .unwrap();
    assert!(
        has_entry(&entries, "ctl", Operation::Update)
            && has_entry(&entries, "ctl", Operation::Apply)
    );
}

#[test]
fn list_map_merges_containers_by_name() {
    let live = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}, "spec": {"containers": [
        {"name": "a", "image": "a:1", "resources": {"limits": {"cpu": "1"}}},
        {"name": "b", "image": "b:1"},
        {"name": "c", "image": "c:1"}
    ]}});
    let managed = update(
        &Value::Null,
        &live,
        &[],
        "creator",
        "v1",
        None,
        &BuiltinSchema,
        T0,
    );
    let config = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}, "spec": {"containers": [
        {"name": "c", "image": "c:1"},
        {"name": "a", "image": "a:1", "env": [{"name": "X", "value": "1"}]},
        {"name": "d", "image": "d:1"}
    ]}});
    let (obj, entries) = apply(
        &live,
        &config,
        &managed,
        "kubectl",
        "v1",
        false,
        &BuiltinSchema,
        T1,
    )
    .unwrap();
    // Config order among shared items, live-only `b` kept in place, new `d` after.
    assert_eq!(
        obj["spec"]["containers"],
        json!([
            {"name": "b", "image": "b:1"},
            {"name": "c", "image": "c:1"},
            {"name": "a", "image": "a:1", "resources": {"limits": {"cpu": "1"}}, "env": [{"name": "X", "value": "1"}]},
            {"name": "d", "image": "d:1"}
        ])
    );
    let mine = &entry(&entries, "kubectl", Operation::Apply).fields;
    assert_eq!(
        mine.to_fields_v1_string(),
        r#"{"f:spec":{"f:containers":{"k:{\"name\":\"a\"}":{".":{},"f:env":{"k:{\"name\":\"X\"}":{".":{},"f:name":{},"f:value":{}}},"f:image":{},"f:name":{}},"k:{\"name\":\"c\"}":{".":{},"f:image":{},"f:name":{}},"k:{\"name\":\"d\"}":{".":{},"f:image":{},"f:name":{}}}}}"#
    );
}

#[test]
fn pruning_inside_and_of_list_items_shared_with_a_controller() {
    let pod = |cs: Value| json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}, "spec": {"containers": cs}});
    let (obj, e) = ssa(
        &Value::Null,
        &pod(json!([{"name": "a", "image": "a:1"}, {"name": "b", "image": "b:1"}])),
        &[],
        "k",
        T0,
    );
    // A controller adds resources to `a` and changes `b`'s image.
    let mut next = obj.clone();
    next["spec"]["containers"][0]["resources"] = json!({"limits": {"cpu": "1"}});
    next["spec"]["containers"][1]["image"] = json!("b:2");
    let e = update(&obj, &next, &e, "ctrl", "v1", None, &BuiltinSchema, T1);
    // The applier drops `a.image` and the whole of `b`: `a.image` goes,
    // `a.resources` stays; `b` goes (the controller owned a field in it,
    // not the item), taking the controller's ownership of `b.image` along.
    let (obj, e) = ssa(&next, &pod(json!([{"name": "a"}])), &e, "k", T2);
    assert_eq!(
        obj["spec"]["containers"],
        json!([{"name": "a", "resources": {"limits": {"cpu": "1"}}}])
    );
    assert_eq!(
        entry(&e, "ctrl", Operation::Update)
            .fields
            .to_fields_v1_string(),
        r#"{"f:spec":{"f:containers":{"k:{\"name\":\"a\"}":{"f:resources":{".":{},"f:limits":{".":{},"f:cpu":{}}}}}}}"#
    );
}

#[test]
fn list_merge_appends_new_items_after_live_ones() {
    let pod = |cs: Value| json!({"spec": {"containers": cs}});
    let live = pod(json!([{"name": "a"}, {"name": "b"}]));
    let merged = typed::merge(
        &live,
        &pod(json!([{"name": "a"}, {"name": "x"}])),
        &BuiltinSchema,
    )
    .unwrap();
    assert_eq!(
        merged,
        pod(json!([{"name": "a"}, {"name": "b"}, {"name": "x"}]))
    );
    let merged = typed::merge(
        &live,
        &pod(json!([{"name": "x"}, {"name": "b"}])),
        &BuiltinSchema,
    )
    .unwrap();
    assert_eq!(
        merged,
        pod(json!([{"name": "a"}, {"name": "x"}, {"name": "b"}]))
    );
}

#[test]
fn container_ports_use_composite_keys_with_default_protocol() {
    let pod = |ports: Value| {
        json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
               "spec": {"containers": [{"name": "c", "ports": ports}]}})
    };
    let live = pod(
        json!([{"containerPort": 53, "protocol": "TCP"}, {"containerPort": 53, "protocol": "UDP"}]),
    );
    let managed = update(
        &Value::Null,
        &live,
        &[],
        "creator",
        "v1",
        None,
        &BuiltinSchema,
        T0,
    );
    // `{containerPort: 53}` is the TCP item: merged into it, UDP untouched.
    let (obj, entries) = apply(
        &live,
        &pod(json!([{"containerPort": 53, "name": "dns"}])),
        &managed,
        "k",
        "v1",
        false,
        &BuiltinSchema,
        T1,
    )
    .unwrap();
    assert_eq!(
        obj["spec"]["containers"][0]["ports"],
        json!([{"containerPort": 53, "protocol": "TCP", "name": "dns"}, {"containerPort": 53, "protocol": "UDP"}])
    );
    let item = PathElement::key([("containerPort", json!(53)), ("protocol", json!("TCP"))]);
    let p = [
        f("spec"),
        f("containers"),
        PathElement::key([("name", json!("c"))]),
        f("ports"),
        item,
        f("name"),
    ];
    assert!(entry(&entries, "k", Operation::Apply).fields.has(&p));
}

#[test]
fn set_list_finalizers_union_and_removal() {
    let obj = |fin: Value| json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "cm", "finalizers": fin}});
    let live = obj(json!(["a"]));
    let managed = update(
        &Value::Null,
        &live,
        &[],
        "controller",
        "v1",
        None,
        &BuiltinSchema,
        T0,
    );
    let (o, entries) = apply(
        &live,
        &obj(json!(["b"])),
        &managed,
        "k",
        "v1",
        false,
        &BuiltinSchema,
        T1,
    )
    .unwrap();
    assert_eq!(o["metadata"]["finalizers"], json!(["a", "b"]));
    assert_eq!(
        entry(&entries, "k", Operation::Apply)
            .fields
            .to_fields_v1_string(),
        r#"{"f:metadata":{"f:finalizers":{"v:\"b\"":{}}}}"#
    );
    // Dropping `b` removes only it.
    let config = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "cm"}});
    let (o2, entries2) =
        apply(&o, &config, &entries, "k", "v1", false, &BuiltinSchema, T2).unwrap();
    assert_eq!(o2["metadata"]["finalizers"], json!(["a"]));
    assert!(
        !has_entry(&entries2, "k", Operation::Apply),
        "nothing left to own: {entries2:?}"
    );
}

#[test]
fn atomic_lists_and_objects_are_replaced_whole() {
    let pod = |tol: Value, sel: Value| {
        json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
               "spec": {"tolerations": tol, "selector": sel}})
    };
    let live = pod(
        json!([{"key": "a"}, {"key": "b"}]),
        json!({"matchLabels": {"x": "1"}}),
    );
    let (obj, entries) = ssa(&Value::Null, &live, &[], "k", T0);
    let (obj, _) = ssa(
        &obj,
        &pod(json!([{"key": "c"}]), json!({"matchExpressions": []})),
        &entries,
        "k",
        T1,
    );
    assert_eq!(obj["spec"]["tolerations"], json!([{"key": "c"}]));
    assert_eq!(obj["spec"]["selector"], json!({"matchExpressions": []}));
    assert_eq!(
        entries[0].fields.to_fields_v1_string(),
        r#"{"f:spec":{"f:selector":{},"f:tolerations":{}}}"#
    );
}

#[test]
fn dropping_a_whole_subtree_nobody_else_owns_removes_it() {
    let (obj, e) = ssa(&Value::Null, &cm(json!({"a": "1"})), &[], "k", T0);
    let config = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "cm"}});
    let (obj, e2) = ssa(&obj, &config, &e, "k", T1);
    assert_eq!(obj, config);
    assert!(
        e2.is_empty(),
        "only stripped fields applied: no entry ({e2:?})"
    );
}

#[test]
fn first_apply_to_untracked_object_attributes_existing_fields() {
    let live = cm(json!({"a": "1", "b": "1"}));
    let err = apply(
        &live,
        &cm(json!({"a": "2"})),
        &[],
        "k",
        "v1",
        false,
        &BuiltinSchema,
        T0,
    )
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        "Apply failed with 1 conflict: conflict with \"before-first-apply\" using v1: .data.a"
    );
    let (obj, entries) = apply(
        &live,
        &cm(json!({"a": "1", "c": "1"})),
        &[],
        "k",
        "v1",
        false,
        &BuiltinSchema,
        T0,
    )
    .unwrap();
    assert_eq!(obj["data"], json!({"a": "1", "b": "1", "c": "1"}));
    assert_eq!(
        entry(&entries, BEFORE_FIRST_APPLY, Operation::Update)
            .fields
            .to_fields_v1_string(),
        r#"{"f:data":{".":{},"f:a":{},"f:b":{}}}"#
    );
}

#[test]
fn apply_to_status_subresource_and_ignored_fields() {
    let status = FieldSet::from_paths([vec![f("status")]]);
    let live = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d"}, "spec": {"replicas": 1}});
    let managed = update(
        &Value::Null,
        &live,
        &[],
        "creator",
        "apps/v1",
        None,
        &BuiltinSchema,
        T0,
    );
    // Main resource ignores status (the strategy resets it).
    let main = Writer {
        ignored: Some(&status),
        ..Writer::new("k", "apps/v1")
    };
    let config = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d"}, "status": {"replicas": 1}});
    let (_, entries) =
        apply_as(&live, &config, &managed, &main, false, &BuiltinSchema, T1).unwrap();
    assert!(!has_entry(&entries, "k", Operation::Apply));
    // Through /status the entry records the subresource.
    let sub = Writer {
        subresource: Some("status"),
        ..Writer::new("ctl", "apps/v1")
    };
    let (obj, entries) =
        apply_as(&live, &config, &managed, &sub, false, &BuiltinSchema, T1).unwrap();
    assert_eq!(obj["status"]["replicas"], 1);
    let e = entry(&entries, "ctl", Operation::Apply);
    assert_eq!(e.subresource.as_deref(), Some("status"));
    assert_eq!(e.printed(), "\"ctl\" with subresource \"status\"");
    assert_eq!(e.to_json()["subresource"], "status");
}

#[test]
fn invalid_configs_are_rejected() {
    let pod = |cs: Value| json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}, "spec": {"containers": cs}});
    let e = ssa_err(&Value::Null, &pod(json!([{"image": "x"}])), &[], "k");
    assert!(
        matches!(&e, ApplyError::Invalid(m) if m.contains("omits all key fields")),
        "{e}"
    );
    let e = ssa_err(
        &Value::Null,
        &pod(json!([{"name": "a"}, {"name": "a"}])),
        &[],
        "k",
    );
    assert!(
        matches!(&e, ApplyError::Invalid(m) if m.contains("duplicate entries")),
        "{e}"
    );
    let live = pod(json!([{"name": "a"}]));
    let e = ssa_err(&live, &pod(json!([{"name": "a"}, {"name": "a"}])), &[], "k");
    assert!(
        matches!(&e, ApplyError::Invalid(m) if m.contains("duplicate entries")),
        "{e}"
    );
    let mut with_mf = pod(json!([]));
    with_mf["metadata"]["managedFields"] = json!([]);
    assert_eq!(
        ssa_err(&Value::Null, &with_mf, &[], "k"),
        ApplyError::Invalid("metadata.managedFields must be nil".into())
    );
    assert!(matches!(
        ssa_err(&Value::Null, &json!([1]), &[], "k"),
        ApplyError::Invalid(_)
    ));
}

// ---------------------------------------------------------------------------
// Update

#[test]
fn create_via_update_owns_all_fields_but_system_ones() {
    let obj = cm(json!({"a": "1"}));
    let entries = update(
        &Value::Null,
        &obj,
        &[],
        "kubectl-create",
        "v1",
        None,
        &BuiltinSchema,
        T0,
    );
    assert_eq!(entries.len(), 1);
    let e = &entries[0];
    assert_eq!(
        (e.operation, e.time.as_deref(), e.api_version.as_str()),
        (Operation::Update, Some(T0), "v1")
    );
    // Upstream shows `.` on maps a create adds (labels, data, ...).
    assert_eq!(
        e.fields.to_fields_v1_string(),
        r#"{"f:data":{".":{},"f:a":{}}}"#
    );
}

#[test]
fn update_moves_changed_fields_and_drops_removed_ones() {
    let v1 = cm(json!({"a": "1", "b": "1"}));
    let (obj, applied) =
        apply(&Value::Null, &v1, &[], "k", "v1", false, &BuiltinSchema, T0).unwrap();
    // An edit changes `a`, removes `b`, adds `c`.
    let v2 = cm(json!({"a": "2", "c": "1"}));
    let entries = update(
        &obj,
        &v2,
        &applied,
        "kubectl-edit",
        "v1",
        None,
        &BuiltinSchema,
        T1,
    );
    let edit = entry(&entries, "kubectl-edit", Operation::Update);
    assert_eq!(
        edit.fields.to_fields_v1_string(),
        r#"{"f:data":{"f:a":{},"f:c":{}}}"#
    );
    assert_eq!(edit.time.as_deref(), Some(T1));
    // The applier lost everything: its entry is gone.
    assert_eq!(entries.len(), 1, "{entries:#?}");
}

#[test]
fn update_keeps_entries_per_manager_version_and_subresource() {
    let v1 = cm(json!({"a": "1"}));
    let e = update(&Value::Null, &v1, &[], "m", "v1", None, &BuiltinSchema, T0);
    let e = update(
        &v1,
        &cm(json!({"a": "1", "b": "1"})),
        &e,
        "m",
        "v1",
        None,
        &BuiltinSchema,
        T1,
    );
    assert_eq!(e.len(), 1);
    assert_eq!(
        e[0].fields.to_fields_v1_string(),
        r#"{"f:data":{".":{},"f:a":{},"f:b":{}}}"#
    );
    assert_eq!(e[0].time.as_deref(), Some(T1));
    // A no-op write leaves the entry and its time alone.
    let same = update(
        &cm(json!({"a": "1", "b": "1"})),
        &cm(json!({"a": "1", "b": "1"})),
        &e,
        "m",
        "v1",
        None,
        &BuiltinSchema,
        T2,
    );
    assert_eq!(same, e);
    // Another version or a subresource makes another entry.
    let obj = cm(json!({"a": "1", "b": "1"}));
    let mut with_status = obj.clone();
    with_status["status"] = json!({"x": 1});
    let e2 = update(
        &obj,
        &with_status,
        &e,
        "m",
        "v1",
        Some("status"),
        &BuiltinSchema,
        T2,
    );
    assert_eq!(e2.len(), 2);
    let s = e2.iter().find(|x| x.subresource.is_some()).unwrap();
    assert_eq!(
        s.fields.to_fields_v1_string(),
        r#"{"f:status":{".":{},"f:x":{}}}"#
    );
    assert_eq!(s.printed(), "\"m\" with subresource \"status\" using v1");
}

#[test]
fn update_of_untracked_existing_object_stays_untracked() {
    let old = cm(json!({"a": "1"}));
    assert!(update(
        &old,
        &cm(json!({"a": "2"})),
        &[],
        "m",
        "v1",
        None,
        &BuiltinSchema,
        T0
    )
    .is_empty());
}

#[test]
fn update_caps_update_managers() {
    let mut obj = cm(json!({}));
    let mut entries = update(
        &Value::Null,
        &obj,
        &[],
        "m0",
        "v1",
        None,
        &BuiltinSchema,
        T0,
    );
    for i in 1..=11 {
        let mut next = obj.clone();
        next["data"][format!("k{i}")] = json!("v");
        let t = format!("2024-01-01T00:{i:02}:00Z");
        entries = update(
            &obj,
            &next,
            &entries,
            &format!("m{i}"),
            "v1",
            None,
            &BuiltinSchema,
            &t,
        );
        obj = next;
    }
    let updaters: Vec<&str> = entries.iter().map(|e| e.manager.as_str()).collect();
    assert_eq!(entries.len(), MAX_UPDATE_MANAGERS, "{updaters:?}");
    assert!(updaters.contains(&"ancient-changes"), "{updaters:?}");
    let ancient = entry(&entries, "ancient-changes", Operation::Update);
    assert!(ancient.fields.has(&[f("data"), f("k1")]) && ancient.fields.has(&[f("data"), f("k2")]));
}

// ---------------------------------------------------------------------------
// managedFields encoding

#[test]
fn managed_fields_json_round_trip_and_order() {
    let raw = json!([
        {"manager": "kube-controller-manager", "operation": "Update", "apiVersion": "apps/v1",
         "time": "2024-01-02T00:00:00Z", "fieldsType": "FieldsV1",
         "fieldsV1": {"f:status": {"f:replicas": {}}}, "subresource": "status"},
        {"manager": "kubectl", "operation": "Apply", "apiVersion": "apps/v1",
         "time": "2024-01-03T00:00:00Z", "fieldsType": "FieldsV1",
         "fieldsV1": serde_json::from_str::<Value>(UPSTREAM_SSA_DEPLOYMENT).unwrap()},
        {"manager": "kubectl-edit", "operation": "Update", "apiVersion": "apps/v1",
         "time": "2024-01-01T00:00:00Z", "fieldsType": "FieldsV1", "fieldsV1": {"f:spec": {"f:paused": {}}}}
    ]);
    let entries = decode_managed_fields(&raw).unwrap();
    assert_eq!(entries.len(), 3);
    assert_eq!(entries[0].subresource.as_deref(), Some("status"));
    assert_eq!(
        entries[1].fields.to_fields_v1_string(),
        UPSTREAM_SSA_DEPLOYMENT
    );
    let encoded = encode_managed_fields(&entries);
    // Apply first, then Updates by time.
    let order: Vec<&str> = encoded
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["manager"].as_str().unwrap())
        .collect();
    assert_eq!(
        order,
        ["kubectl", "kubectl-edit", "kube-controller-manager"]
    );
    assert_eq!(decode_managed_fields(&encoded).unwrap().len(), 3);
    for item in raw.as_array().unwrap() {
        assert!(
            encoded.as_array().unwrap().contains(item),
            "{item} not round-tripped"
        );
    }
    let mut obj = json!({"metadata": {"name": "x"}});
    set_managed_fields(&mut obj, &entries);
    assert_eq!(managed_fields_of(&obj).unwrap().len(), 3);
    set_managed_fields(&mut obj, &[]);
    assert_eq!(obj, json!({"metadata": {"name": "x"}}));
}

#[test]
fn managed_fields_validation() {
    let bad = |v: Value| decode_managed_fields(&json!([v])).unwrap_err().to_string();
    assert_eq!(
        bad(json!({"operation": "Patch", "apiVersion": "v1", "fieldsType": "FieldsV1"})),
        "operation must be `Apply` or `Update`"
    );
    assert_eq!(
        bad(json!({"operation": "Apply", "fieldsType": "FieldsV1"})),
        "apiVersion must not be empty"
    );
    assert_eq!(
        bad(json!({"operation": "Apply", "apiVersion": "v1"})),
        "missing fieldsType in managed fields entry 0"
    );
    assert_eq!(
        bad(json!({"operation": "Apply", "apiVersion": "v1", "fieldsType": "FieldsV2"})),
        "invalid fieldsType \"FieldsV2\" in managed fields entry 0"
    );
    assert_eq!(decode_managed_fields(&Value::Null).unwrap(), vec![]);
}

#[test]
fn manager_identifiers_match_upstream() {
    let e = |op, sub: Option<&str>| ManagedFieldsEntry {
        manager: "m".into(),
        operation: op,
        api_version: "apps/v1".into(),
        time: Some(T0.into()),
        fields: FieldSet::new(),
        subresource: sub.map(str::to_string),
    };
    assert_eq!(
        e(Operation::Apply, None).identifier(),
        r#"{"manager":"m","operation":"Apply"}"#
    );
    assert_eq!(
        e(Operation::Update, Some("status")).identifier(),
        r#"{"manager":"m","operation":"Update","apiVersion":"apps/v1","subresource":"status"}"#
    );
    assert_eq!(e(Operation::Update, None).printed(), "\"m\" using apps/v1");
    assert_eq!(e(Operation::Apply, None).printed(), "\"m\"");
}
