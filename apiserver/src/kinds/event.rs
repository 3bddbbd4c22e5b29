//! Events, core/v1 and events.k8s.io/v1: upstream's legacy and strict validation, the
//! field selectors both versions accept, and `kubectl get events` columns (Last Seen first,
//! Name only in the wide output, as upstream prints events).

use std::collections::BTreeMap;

use serde_json::{json, Value};

use super::common::{self, int, s};
use crate::registry::strategy::default_fields;
use crate::registry::table::{self, Column};
use crate::registry::{ReqCtx, Strategy};
use crate::validation::{self, FieldError, FieldErrors};

/// core/v1 Events.
pub struct EventStrategy;
/// events.k8s.io/v1 Events.
pub struct EventsV1Strategy;

/// An events.k8s.io/v1 event in core/v1 field names (upstream has one internal type).
fn to_core(o: &Value) -> Value {
    let mut c = o.clone();
    for (from, to) in [
        ("regarding", "involvedObject"),
        ("note", "message"),
        ("deprecatedSource", "source"),
        ("deprecatedFirstTimestamp", "firstTimestamp"),
        ("deprecatedLastTimestamp", "lastTimestamp"),
        ("deprecatedCount", "count"),
        ("reportingController", "reportingComponent"),
    ] {
        if let Some(v) = c.as_object_mut().and_then(|m| m.remove(from)) {
            c[to] = v;
        }
    }
    if c["series"].is_object() {
        if let Some(v) = c["series"].as_object_mut().and_then(|m| m.remove("lastObservedTime")) {
            c["series"]["lastObservedTime"] = v;
        }
    }
    c
}

/// The reverse of [`to_core`]: a stored core/v1 event as events.k8s.io/v1 shows it.
fn from_core(o: &Value) -> Value {
    let mut c = o.clone();
    for (to, from) in [
        ("regarding", "involvedObject"),
        ("note", "message"),
        ("deprecatedSource", "source"),
        ("deprecatedFirstTimestamp", "firstTimestamp"),
        ("deprecatedLastTimestamp", "lastTimestamp"),
        ("deprecatedCount", "count"),
        ("reportingController", "reportingComponent"),
    ] {
        if let Some(v) = c.as_object_mut().and_then(|m| m.remove(from)) {
            c[to] = v;
        }
    }
    c
}

/// Upstream's `legacyValidateEvent` on a core-shaped event; `strict` adds the
/// events.k8s.io/v1 rules.
fn validate_event(ev: &Value, strict: bool) -> FieldErrors {
    let mut errs = Vec::new();
    let ns = s(&ev["metadata"]["namespace"]);
    let involved_ns = s(&ev["involvedObject"]["namespace"]);
    let controller_field = if strict { "reportingController" } else { "reportingComponent" };
    let mismatch = || FieldError::invalid("involvedObject.namespace", involved_ns, "does not match event.namespace");
    if s(&ev["eventTime"]).is_empty() {
        if involved_ns.is_empty() {
            if !ns.is_empty() && ns != "default" {
                errs.push(mismatch());
            }
        } else if ns != involved_ns {
            errs.push(mismatch());
        }
    } else {
        if involved_ns.is_empty() && ns != "default" && ns != "kube-system" {
            errs.push(mismatch());
        }
        let controller = s(&ev["reportingComponent"]);
        if controller.is_empty() {
            errs.push(FieldError::required(controller_field, ""));
        }
        validation::push_invalid(&mut errs, controller_field, controller, validation::qualified_name(controller));
        for (field, limit, required) in [("reportingInstance", 128, true), ("action", 128, true), ("reason", 128, true), ("message", 1024, false)] {
            let v = s(&ev[field]);
            if required && v.is_empty() {
                errs.push(FieldError::required(field, ""));
            }
            if v.len() > limit {
                errs.push(FieldError::invalid(field, "", format!("can have at most {limit} characters")));
            }
        }
    }
    validation::push_invalid(&mut errs, "namespace", ns, validation::dns1123_subdomain(ns));
    if strict {
        if s(&ev["eventTime"]).is_empty() {
            errs.push(FieldError::required("eventTime", ""));
        }
        let t = s(&ev["type"]);
        if t != "Normal" && t != "Warning" {
            errs.push(FieldError::invalid("type", "", format!("has invalid value: {t}")));
        }
        for f in ["firstTimestamp", "lastTimestamp"] {
            if !ev[f].is_null() {
                errs.push(FieldError::invalid(f, "", "needs to be unset"));
            }
        }
        if int(&ev["count"]).unwrap_or(0) != 0 {
            errs.push(FieldError::invalid("count", "", "needs to be unset"));
        }
        if !s(&ev["source"]["component"]).is_empty() || !s(&ev["source"]["host"]).is_empty() {
            errs.push(FieldError::invalid("source", "", "needs to be unset"));
        }
        if ev["series"].is_object() {
            if int(&ev["series"]["count"]).unwrap_or(0) < 2 {
                errs.push(FieldError::invalid("series.count", "", "should be at least 2"));
            }
            if s(&ev["series"]["lastObservedTime"]).is_empty() {
                errs.push(FieldError::required("series.lastObservedTime", ""));
            }
        }
    }
    errs
}

/// Upstream's event field set, from a core-shaped event.
fn event_fields(obj: &Value, core: &Value, names: &[(&str, &str)]) -> BTreeMap<String, String> {
    let mut f = default_fields(obj);
    let io = &core["involvedObject"];
    let source = match s(&core["source"]["component"]) {
        "" => s(&core["reportingComponent"]),
        c => c,
    };
    let values = [
        ("involvedObject.kind", s(&io["kind"])),
        ("involvedObject.namespace", s(&io["namespace"])),
        ("involvedObject.name", s(&io["name"])),
        ("involvedObject.uid", s(&io["uid"])),
        ("involvedObject.apiVersion", s(&io["apiVersion"])),
        ("involvedObject.resourceVersion", s(&io["resourceVersion"])),
        ("involvedObject.fieldPath", s(&io["fieldPath"])),
        ("reason", s(&core["reason"])),
        ("reportingComponent", s(&core["reportingComponent"])),
        ("source", source),
        ("type", s(&core["type"])),
    ];
    for (internal, v) in values {
        if let Some((external, _)) = names.iter().find(|(_, i)| *i == internal) {
            f.insert(external.to_string(), v.to_string());
        }
    }
    f
}

const CORE_FIELDS: &[(&str, &str)] = &[
    ("involvedObject.kind", "involvedObject.kind"),
    ("involvedObject.namespace", "involvedObject.namespace"),
    ("involvedObject.name", "involvedObject.name"),
    ("involvedObject.uid", "involvedObject.uid"),
    ("involvedObject.apiVersion", "involvedObject.apiVersion"),
    ("involvedObject.resourceVersion", "involvedObject.resourceVersion"),
    ("involvedObject.fieldPath", "involvedObject.fieldPath"),
    ("reason", "reason"),
    ("reportingComponent", "reportingComponent"),
    ("source", "source"),
    ("type", "type"),
];

const V1_FIELDS: &[(&str, &str)] = &[
    ("regarding.kind", "involvedObject.kind"),
    ("regarding.namespace", "involvedObject.namespace"),
    ("regarding.name", "involvedObject.name"),
    ("regarding.uid", "involvedObject.uid"),
    ("regarding.apiVersion", "involvedObject.apiVersion"),
    ("regarding.resourceVersion", "involvedObject.resourceVersion"),
    ("regarding.fieldPath", "involvedObject.fieldPath"),
    ("reason", "reason"),
    ("reportingController", "reportingComponent"),
    ("type", "type"),
];

// ---- table cells, on core-shaped events ----

fn first_seen(e: &Value) -> String {
    if e["firstTimestamp"].is_null() { table::age(&e["eventTime"]) } else { table::age(&e["firstTimestamp"]) }
}

fn last_seen(e: &Value) -> String {
    if e["series"].is_object() {
        return table::age(&e["series"]["lastObservedTime"]);
    }
    if e["lastTimestamp"].is_null() { first_seen(e) } else { table::age(&e["lastTimestamp"]) }
}

fn count(e: &Value) -> i64 {
    if e["series"].is_object() {
        return int(&e["series"]["count"]).unwrap_or(0);
    }
    match int(&e["count"]).unwrap_or(0) {
        0 => 1,
        n => n,
    }
}

fn object(e: &Value) -> String {
    let io = &e["involvedObject"];
    let kind = s(&io["kind"]).to_lowercase();
    if s(&io["name"]).is_empty() { kind } else { format!("{kind}/{}", s(&io["name"])) }
}

fn source(e: &Value) -> String {
    let first = |a: &str, b: &str| if a.is_empty() { b.to_string() } else { a.to_string() };
    let component = first(s(&e["source"]["component"]), s(&e["reportingComponent"]));
    let instance = first(s(&e["source"]["host"]), s(&e["reportingInstance"]));
    if instance.is_empty() { component } else { format!("{component}, {instance}") }
}

macro_rules! event_columns {
    ($conv:expr) => {
        vec![
            Column::new("Last Seen", "string", |o| json!(last_seen(&$conv(o)))),
            Column::new("Type", "string", |o| json!(s(&$conv(o)["type"]))),
            Column::new("Reason", "string", |o| json!(s(&$conv(o)["reason"]))),
            Column::new("Object", "string", |o| json!(object(&$conv(o)))),
            Column::new("Subobject", "string", |o| json!(s(&$conv(o)["involvedObject"]["fieldPath"]))).wide(),
            Column::new("Source", "string", |o| json!(source(&$conv(o)))).wide(),
            Column::new("Message", "string", |o| json!(s(&$conv(o)["message"]).trim())),
            Column::new("First Seen", "string", |o| json!(first_seen(&$conv(o)))).wide(),
            Column::new("Count", "string", |o| json!(count(&$conv(o)))).wide(),
            table::Column { priority: 1, ..table::name_column() },
        ]
    };
}

fn same_event(o: &Value) -> Value {
    o.clone()
}

impl Strategy for EventStrategy {
    fn validate(&self, _ctx: &ReqCtx, obj: &Value) -> FieldErrors {
        validate_event(obj, false)
    }

    fn selectable_fields(&self, obj: &Value) -> BTreeMap<String, String> {
        event_fields(obj, obj, CORE_FIELDS)
    }

    fn columns(&self) -> Vec<Column> {
        event_columns!(same_event)
    }
}

impl Strategy for EventsV1Strategy {
    /// events.k8s.io/v1 events live in the core/v1 events store, in core/v1 form, so both
    /// APIs show the same events (upstream's cohabitating resources).
    fn to_storage(&self, obj: Value) -> Value {
        let mut c = to_core(&obj);
        c["apiVersion"] = json!("v1");
        c
    }

    fn from_storage(&self, obj: Value) -> Value {
        let mut e = from_core(&obj);
        e["apiVersion"] = json!("events.k8s.io/v1");
        e
    }

    fn validate(&self, _ctx: &ReqCtx, obj: &Value) -> FieldErrors {
        validate_event(&to_core(obj), true)
    }

    fn validate_update(&self, _ctx: &ReqCtx, new: &Value, old: &Value) -> FieldErrors {
        let (n, o) = (to_core(new), to_core(old));
        let mut errs = validate_event(&n, true);
        for (f, path) in [
            ("involvedObject", "regarding"),
            ("reportingComponent", "reportingController"),
            ("reportingInstance", "reportingInstance"),
            ("action", "action"),
            ("reason", "reason"),
            ("type", "type"),
            ("eventTime", "eventTime"),
            ("related", "related"),
        ] {
            common::immutable(&mut errs, &n[f], &o[f], path);
        }
        errs
    }

    fn selectable_fields(&self, obj: &Value) -> BTreeMap<String, String> {
        event_fields(obj, &to_core(obj), V1_FIELDS)
    }

    fn columns(&self) -> Vec<Column> {
        event_columns!(to_core)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn core_events() {
        let ctx = ReqCtx::default();
        let ev = json!({"metadata": {"name": "e", "namespace": "default"},
            "involvedObject": {"kind": "Pod", "name": "p", "namespace": "other"}, "reason": "Started", "message": "hi ", "type": "Normal",
            "source": {"component": "kubelet", "host": "n1"}, "count": 2});
        let errs = EventStrategy.validate(&ctx, &ev);
        assert_eq!(errs[0].to_string(), "involvedObject.namespace: Invalid value: \"other\": does not match event.namespace");
        let f = EventStrategy.selectable_fields(&ev);
        assert_eq!(f["involvedObject.name"], "p");
        assert_eq!(f["source"], "kubelet");
        assert_eq!(EventStrategy.selectable_fields(&json!({})).len(), f.len());
        let cols = EventStrategy.columns();
        let cells: Vec<Value> = cols.iter().map(|c| (c.cell)(&ev)).collect();
        assert_eq!(cols[0].name, "Last Seen");
        assert_eq!(cells[3], "pod/p");
        assert_eq!(cells[5], "kubelet, n1");
        assert_eq!(cells[6], "hi");
        assert_eq!(cells[8], 2);
        assert_eq!(cells[9], "e");
    }

    #[test]
    fn events_v1() {
        let ctx = ReqCtx::default();
        let ev = json!({"metadata": {"name": "e", "namespace": "default"}, "eventTime": "2024-01-01T00:00:00.000000Z",
            "regarding": {"kind": "Pod", "name": "p", "namespace": "default"}, "reason": "Started", "action": "Start",
            "reportingController": "krust.io/agent", "reportingInstance": "n1", "type": "Normal", "note": "x"});
        assert!(EventsV1Strategy.validate(&ctx, &ev).is_empty(), "{:?}", EventsV1Strategy.validate(&ctx, &ev));
        let mut bad = ev.clone();
        bad["type"] = json!("Odd");
        assert_eq!(EventsV1Strategy.validate(&ctx, &bad)[0].to_string(), "type: Invalid value: \"\": has invalid value: Odd");
        let f = EventsV1Strategy.selectable_fields(&ev);
        assert_eq!(f["regarding.name"], "p");
        assert_eq!(f["reportingController"], "krust.io/agent");
        let cells: Vec<Value> = EventsV1Strategy.columns().iter().map(|c| (c.cell)(&ev)).collect();
        assert_eq!(cells[3], "pod/p");
        assert_eq!(cells[6], "x");
    }
}
