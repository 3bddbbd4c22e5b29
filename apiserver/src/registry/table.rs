//! Server-side printing: `meta.k8s.io/v1` Table output for `kubectl get`.

use std::borrow::Cow;
use std::sync::Arc;

use serde_json::{json, Value};

/// How a cell is computed from an object. Shared so custom resources' columns can carry
/// their JSONPath.
pub type CellFn = Arc<dyn Fn(&Value) -> Value + Send + Sync>;

/// One Table column: its definition and how to compute a cell from an object.
#[derive(Clone)]
pub struct Column {
    pub name: Cow<'static, str>,
    /// OpenAPI type: `string`, `integer`, `number`, `boolean`, `date`.
    pub type_: Cow<'static, str>,
    pub format: Cow<'static, str>,
    pub description: Cow<'static, str>,
    /// 0 = shown by default, 1 = only with `-o wide`.
    pub priority: i32,
    pub cell: CellFn,
}

impl Column {
    pub fn new(name: impl Into<Cow<'static, str>>, type_: impl Into<Cow<'static, str>>, cell: impl Fn(&Value) -> Value + Send + Sync + 'static) -> Self {
        Column { name: name.into(), type_: type_.into(), format: "".into(), description: "".into(), priority: 0, cell: Arc::new(cell) }
    }
    /// Shown only with `-o wide`.
    pub fn wide(mut self) -> Self {
        self.priority = 1;
        self
    }
    pub fn definition(&self) -> Value {
        json!({
            "name": self.name,
            "type": self.type_,
            "format": self.format,
            "description": self.description,
            "priority": self.priority,
        })
    }
}

/// The Name column every table starts with.
pub fn name_column() -> Column {
    Column {
        format: "name".into(),
        description: "Name must be unique within a namespace.".into(),
        ..Column::new("Name", "string", |o| o["metadata"]["name"].clone())
    }
}

/// Age, from `creationTimestamp`, rendered as upstream's short duration (`5m`, `3d`).
pub fn age_column() -> Column {
    Column {
        description: "CreationTimestamp is a timestamp representing the server time when this object was created.".into(),
        ..Column::new("Age", "string", |o| json!(age(&o["metadata"]["creationTimestamp"])))
    }
}

/// Human duration since an RFC 3339 timestamp, as upstream's `duration.HumanDuration`.
pub fn age(ts: &Value) -> String {
    let Some(t) = ts.as_str().and_then(|s| chrono::DateTime::parse_from_rfc3339(s).ok()) else {
        return "<unknown>".to_string();
    };
    let secs = (chrono::Utc::now() - t.with_timezone(&chrono::Utc)).num_seconds();
    human_duration(secs)
}

/// Upstream's `duration.HumanDuration` for a number of seconds.
pub fn human_duration(secs: i64) -> String {
    if secs < 0 {
        return "0s".to_string();
    }
    let (m, h, d) = (secs / 60, secs / 3600, secs / 86400);
    if secs < 120 {
        format!("{secs}s")
    } else if m < 10 {
        let s = secs % 60;
        if s == 0 { format!("{m}m") } else { format!("{m}m{s}s") }
    } else if h < 3 {
        format!("{m}m")
    } else if h < 8 {
        let mm = m % 60;
        if mm == 0 { format!("{h}h") } else { format!("{h}h{mm}m") }
    } else if h < 48 {
        format!("{h}h")
    } else if h < 24 * 8 {
        let hh = h % 24;
        if hh == 0 { format!("{d}d") } else { format!("{d}d{hh}h") }
    } else if h < 24 * 365 * 2 {
        format!("{d}d")
    } else if h < 24 * 365 * 8 {
        let y = d / 365;
        let dd = d % 365;
        if dd == 0 { format!("{y}y") } else { format!("{y}y{dd}d") }
    } else {
        format!("{}y", d / 365)
    }
}

/// `<none>` for an empty string, as kubectl prints missing values.
pub fn or_none(s: &str) -> Value {
    if s.is_empty() { json!("<none>") } else { json!(s) }
}

/// Renders `k=v,k2=v2` from a JSON map, `<none>` when empty.
pub fn map_to_selector(m: &Value) -> Value {
    let s = m
        .as_object()
        .map(|o| o.iter().map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default())).collect::<Vec<_>>().join(","))
        .unwrap_or_default();
    or_none(&s)
}

#[cfg(test)]
mod tests {
    use super::human_duration;

    #[test]
    fn durations_as_upstream() {
        assert_eq!(human_duration(5), "5s");
        assert_eq!(human_duration(150), "2m30s");
        assert_eq!(human_duration(3600), "60m");
        assert_eq!(human_duration(4 * 3600), "4h");
        assert_eq!(human_duration(3 * 86400), "3d");
    }
}

/// What each Table row carries besides its cells (`?includeObject=`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IncludeObject {
    None,
    /// The default: the object's metadata as `PartialObjectMetadata`.
    Metadata,
    Object,
}

impl IncludeObject {
    pub fn parse(v: Option<&str>) -> Self {
        match v {
            Some("None") => IncludeObject::None,
            Some("Object") => IncludeObject::Object,
            _ => IncludeObject::Metadata,
        }
    }
}

/// Converts objects of one kind into a `meta.k8s.io/v1` Table, with the kind's columns.
pub fn to_table(
    store: &crate::registry::store::GenericStore,
    objects: &[Value],
    include: IncludeObject,
    resource_version: Option<&str>,
    continue_token: Option<&str>,
) -> Value {
    let columns = store.kind.strategy.columns();
    let rows: Vec<Value> = objects
        .iter()
        .map(|o| {
            let cells: Vec<Value> = columns.iter().map(|c| (c.cell)(o)).collect();
            let object = match include {
                IncludeObject::None => Value::Null,
                IncludeObject::Object => o.clone(),
                IncludeObject::Metadata => json!({
                    "kind": "PartialObjectMetadata",
                    "apiVersion": "meta.k8s.io/v1",
                    "metadata": o["metadata"],
                }),
            };
            json!({"cells": cells, "object": object})
        })
        .collect();
    let mut metadata = json!({});
    if let Some(rv) = resource_version {
        metadata["resourceVersion"] = json!(rv);
    }
    if let Some(c) = continue_token {
        metadata["continue"] = json!(c);
    }
    json!({
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": metadata,
        "columnDefinitions": columns.iter().map(Column::definition).collect::<Vec<_>>(),
        "rows": rows,
    })
}
