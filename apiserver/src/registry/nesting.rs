//! How deep an object may nest: the one limit every write is held to, so that whatever is
//! stored can be decoded back, and the tolerant decoding of objects stored before it.
//!
//! Upstream's JSON and YAML decoders refuse nesting beyond 10000 levels. Ours cannot go that
//! far: serde_json (here, in kube-rs clients and in the controllers) refuses a document with
//! 128 nested arrays or objects. A stored object is read back inside wrappers a client must
//! decode whole, and it carries `metadata.managedFields`, whose `fieldsV1` mirrors the
//! object's fields a few levels further down. So the limit is set where the deepest form a
//! client receives still decodes:
//!
//! | form                                      | depth                       |
//! |-------------------------------------------|-----------------------------|
//! | the object, managedFields aside           | ≤ [`MAX_DEPTH`] = 100       |
//! | the stored object, with managedFields     | ≤ [`MAX_STORED_DEPTH`] = 105|
//! | in a list (`items[]`), a watch event      | + 2, + 1                    |
//! | in a Table row (`rows[].object`), watched | + 3, + 4 → 109              |
//! | what serde_json decodes                   | ≤ 127                       |
//!
//! `fieldsV1` sits 4 levels below the root (`metadata.managedFields[i].fieldsV1`) and holds
//! one object per field of the path, plus an empty object for the leaf, so a field at depth
//! `d` is tracked at depth `d + 5` at most (lists are tracked as whole values or by keys,
//! never deeper than their elements).
//!
//! The limit is checked once, by the store before every create and update (and so for
//! patches and server-side apply, whose results are only known there). An object stored
//! deeper by an older version stays readable ([`from_stored`]) and may still be updated as
//! long as the update makes it no deeper, so it can always be finalized and deleted.

use serde::Deserialize;
use serde_json::Value;

/// The deepest an object may nest, `metadata.managedFields` aside (the object itself is 1).
pub const MAX_DEPTH: usize = 100;

/// The deepest a stored object may nest, managedFields included: their `fieldsV1` tracks a
/// field at most 5 levels deeper than the field itself.
pub const MAX_STORED_DEPTH: usize = MAX_DEPTH + 5;

/// The deepest form a client decodes (a Table row in a watch event: 4 levels around the
/// stored object) stays within what serde_json decodes, 127 levels.
const _: () = assert!(MAX_STORED_DEPTH + 4 <= 127);

/// Stored objects nested deeper than serde_json's default limit (written before this limit
/// existed, or through the etcd face) are still decoded up to this depth; the value then
/// travels through recursive code (serialization, drop) on an ordinary 2 MiB stack.
pub const MAX_READ_DEPTH: usize = 1000;

/// The stack the decoding of such deep stored objects runs on.
const DEEP_DECODE_STACK: usize = 64 << 20;

/// Refuses an object nested deeper than [`MAX_DEPTH`] (managedFields aside), or whose
/// managedFields reach deeper than [`MAX_STORED_DEPTH`]. The message names where.
pub fn check(obj: &Value) -> Result<(), String> {
    if let Some(path) = too_deep(obj, MAX_DEPTH, true) {
        return Err(format!("exceeded max depth of {MAX_DEPTH}: the object nests deeper than {MAX_DEPTH} levels at {path}"));
    }
    if let Some(path) = too_deep(obj, MAX_STORED_DEPTH, false) {
        return Err(format!("exceeded max depth of {MAX_STORED_DEPTH}: metadata.managedFields nest deeper than {MAX_STORED_DEPTH} levels at {path}"));
    }
    Ok(())
}

/// A body decoder's error, saying which limit a too deep body hit: serde_json and
/// serde_yaml stop at 128 levels, before the store would refuse anything past [`MAX_DEPTH`].
pub fn explain_decode_error(e: impl std::fmt::Display) -> String {
    let e = e.to_string();
    if e.starts_with("recursion limit exceeded") {
        format!("exceeded max depth of {MAX_DEPTH} ({e})")
    } else {
        e
    }
}

/// How many arrays and objects nest in `v` at its deepest (a scalar is 0, `{}` is 1).
pub fn depth(v: &Value) -> usize {
    let mut deepest = 0;
    let mut stack = vec![(v, 1)];
    while let Some((v, d)) = stack.pop() {
        match v {
            Value::Object(m) => stack.extend(m.values().map(|c| (c, d + 1))),
            Value::Array(a) => stack.extend(a.iter().map(|c| (c, d + 1))),
            _ => continue,
        }
        deepest = deepest.max(d);
    }
    deepest
}

/// One open array or object of the walk in [`too_deep`], with what is left of it.
enum Frame<'a> {
    Map(serde_json::map::Iter<'a>),
    List(std::iter::Enumerate<std::slice::Iter<'a, Value>>),
}

impl<'a> Frame<'a> {
    fn of(v: &'a Value) -> Option<Frame<'a>> {
        match v {
            Value::Object(m) => Some(Frame::Map(m.iter())),
            Value::Array(a) => Some(Frame::List(a.iter().enumerate())),
            _ => None,
        }
    }

    /// The next child and its path segment.
    fn next(&mut self) -> Option<(String, &'a Value)> {
        match self {
            Frame::Map(it) => it.next().map(|(k, v)| (format!(".{k}"), v)),
            Frame::List(it) => it.next().map(|(i, v)| (format!("[{i}]"), v)),
        }
    }
}

/// The path of the first array or object nested deeper than `limit`, if any, walked without
/// recursion (the value may be deeper than the stack allows). `skip_managed` leaves out
/// `metadata.managedFields`.
fn too_deep(root: &Value, limit: usize, skip_managed: bool) -> Option<String> {
    let mut stack: Vec<Frame> = Frame::of(root).into_iter().collect();
    let mut path: Vec<String> = Vec::new();
    while let Some(top) = stack.last_mut() {
        let Some((segment, child)) = top.next() else {
            stack.pop();
            path.pop();
            continue;
        };
        if skip_managed && stack.len() == 2 && path.first().is_some_and(|p| p == ".metadata") && segment == ".managedFields" {
            continue;
        }
        let Some(frame) = Frame::of(child) else { continue };
        path.push(segment);
        if stack.len() >= limit {
            return Some(abbreviate(&path));
        }
        stack.push(frame);
    }
    None
}

/// A path of a hundred segments, shortened to its start and end.
fn abbreviate(path: &[String]) -> String {
    const HEAD: usize = 6;
    const TAIL: usize = 2;
    let joined = |p: &[String]| p.concat().trim_start_matches('.').to_string();
    if path.len() <= HEAD + TAIL + 1 {
        return joined(path);
    }
    let elided = path.len() - HEAD - TAIL;
    format!("{}…({elided} more)…{}", joined(&path[..HEAD]), path[path.len() - TAIL..].concat())
}

/// How deep the JSON text nests, read without building it (strings skipped, escapes too).
pub fn text_depth(bytes: &[u8]) -> usize {
    let (mut depth, mut deepest) = (0usize, 0usize);
    let (mut in_string, mut escaped) = (false, false);
    for &b in bytes {
        if in_string {
            match (escaped, b) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'{' | b'[' => {
                depth += 1;
                deepest = deepest.max(depth);
            }
            b'}' | b']' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    deepest
}

/// Decodes a stored object. Objects this server writes decode as any JSON; one stored
/// deeper than serde_json's recursion limit (by an older version) is decoded without that
/// limit on a large stack of its own, up to [`MAX_READ_DEPTH`], so its kind can still be
/// listed, and the object updated and deleted.
pub fn from_stored(bytes: &[u8]) -> Result<Value, String> {
    match serde_json::from_slice(bytes) {
        Err(e) if e.to_string().starts_with("recursion limit exceeded") => from_deep(bytes),
        other => other.map_err(|e| e.to_string()),
    }
}

fn from_deep(bytes: &[u8]) -> Result<Value, String> {
    let depth = text_depth(bytes);
    if depth > MAX_READ_DEPTH {
        return Err(format!("it nests {depth} levels deep, deeper than the {MAX_READ_DEPTH} this server reads"));
    }
    tracing::warn!(depth, limit = MAX_DEPTH, "decoding a stored object nested deeper than writes allow");
    std::thread::scope(|s| {
        let decoder = std::thread::Builder::new().name("deep-decode".into()).stack_size(DEEP_DECODE_STACK);
        let handle = decoder
            .spawn_scoped(s, || {
                let mut de = serde_json::Deserializer::from_slice(bytes);
                de.disable_recursion_limit();
                let v = Value::deserialize(&mut de).and_then(|v| de.end().map(|()| v));
                v.map_err(|e| e.to_string())
            })
            .map_err(|e| format!("starting the deep decoder: {e}"))?;
        handle.join().map_err(|_| "the deep decoder panicked".to_string())?
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// `{"a": {"a": ... leaf}}` with `levels` objects.
    fn maps(levels: usize, leaf: Value) -> Value {
        (0..levels).fold(leaf, |inner, _| json!({ "a": inner }))
    }

    /// An object whose total depth is `depth`: the root plus `spec` nested `depth - 1` deep.
    fn object(depth: usize) -> Value {
        let mut o = json!({"apiVersion": "example.com/v1", "kind": "Deep", "metadata": {"name": "x"}});
        o["spec"] = maps(depth - 1, json!("leaf"));
        o
    }

    #[test]
    fn depth_counts_containers() {
        assert_eq!(depth(&json!(1)), 0);
        assert_eq!(depth(&json!({})), 1);
        assert_eq!(depth(&json!({"a": [1, {"b": {}}]})), 4);
        assert_eq!(depth(&object(100)), 100);
        assert_eq!(text_depth(br#"{"a": "[[[{{", "b": [{"c": "\"{"}]}"#), 3);
        assert_eq!(text_depth(serde_json::to_string(&object(77)).unwrap().as_bytes()), 77);
    }

    #[test]
    fn check_allows_the_limit_and_names_the_path_beyond() {
        assert_eq!(check(&object(MAX_DEPTH)), Ok(()));
        let err = check(&object(MAX_DEPTH + 1)).unwrap_err();
        assert!(err.starts_with("exceeded max depth of 100: the object nests deeper than 100 levels at spec.a.a.a.a.a…(92 more)….a.a"), "{err}");
        let mut list = object(3);
        list["spec"]["a"]["a"] = json!([maps(MAX_DEPTH - 4, json!(1))]);
        assert_eq!(depth(&list), MAX_DEPTH);
        assert_eq!(check(&list), Ok(()));
        list["spec"]["a"]["a"] = json!([[maps(MAX_DEPTH - 4, json!(1))]]);
        assert!(check(&list).unwrap_err().contains("at spec.a.a[0][0].a"));
    }

    #[test]
    fn managed_fields_a_client_wrote_count_against_their_own_limit() {
        let mut obj = object(10);
        obj["metadata"]["managedFields"] = json!([{"manager": "m", "fieldsV1": maps(MAX_STORED_DEPTH - 4, json!({}))}]);
        assert_eq!(depth(&obj), MAX_STORED_DEPTH + 1);
        let err = check(&obj).unwrap_err();
        assert!(err.starts_with("exceeded max depth of 105: metadata.managedFields nest deeper"), "{err}");
        assert!(err.contains("at metadata.managedFields[0].fieldsV1.a"), "{err}");
        obj["metadata"]["managedFields"][0]["fieldsV1"] = maps(MAX_STORED_DEPTH - 5, json!({}));
        assert_eq!(check(&obj), Ok(()));
    }

    /// What the server tracks for the deepest object it accepts stays within the stored
    /// limit, and that object in a Table row of a watch event still decodes with
    /// serde_json's default limit: leaves of every shape, keyed lists tracked by key.
    #[test]
    fn deepest_accepted_object_with_managed_fields_decodes_in_every_wrapper() {
        let leaves = [json!("s"), json!({}), json!([1, [2]]), json!({"conditions": [{"type": "t", "status": "s"}]})];
        for leaf in leaves {
            let mut obj = object(1);
            obj["spec"] = maps(MAX_DEPTH - 1 - depth(&leaf), leaf.clone());
            assert_eq!(depth(&obj), MAX_DEPTH, "{leaf}");
            let entries = crate::apply::update(
                &Value::Null,
                &obj,
                &[],
                "m",
                "example.com/v1",
                None,
                &crate::apply::BuiltinSchema,
                "2026-01-01T00:00:00Z",
            );
            crate::apply::set_managed_fields(&mut obj, &entries);
            assert!(depth(&obj) <= MAX_STORED_DEPTH, "{leaf}: {}", depth(&obj));
            assert_eq!(check(&obj), Ok(()));
            let watched_table = json!({"type": "ADDED", "object": {"kind": "Table", "rows": [{"cells": [], "object": obj}]}});
            let text = serde_json::to_vec(&watched_table).unwrap();
            serde_json::from_slice::<Value>(&text).expect("decodable with the default recursion limit");
        }
    }

    #[test]
    fn decode_errors_name_the_limit() {
        let text = serde_json::to_vec(&maps(200, json!(1))).unwrap();
        let json_err = serde_json::from_slice::<Value>(&text).unwrap_err();
        assert!(explain_decode_error(json_err).starts_with("exceeded max depth of 100 (recursion limit exceeded at line 1 column"));
        let yaml_err = serde_yaml::from_slice::<Value>(&text).unwrap_err();
        assert!(explain_decode_error(yaml_err).starts_with("exceeded max depth of 100 (recursion limit exceeded"));
        assert_eq!(explain_decode_error("EOF while parsing"), "EOF while parsing");
    }

    #[test]
    fn serde_json_decodes_127_levels_and_no_more() {
        let text = |n| serde_json::to_vec(&maps(n, json!(1))).unwrap();
        assert!(serde_json::from_slice::<Value>(&text(127)).is_ok());
        assert!(serde_json::from_slice::<Value>(&text(128)).is_err());
    }

    #[test]
    fn objects_stored_deeper_are_still_read() {
        for levels in [127, 140, MAX_READ_DEPTH] {
            let deep = maps(levels, json!("leaf"));
            let bytes = serde_json::to_vec(&deep).unwrap();
            let v = from_stored(&bytes).unwrap_or_else(|e| panic!("{levels}: {e}"));
            assert_eq!(depth(&v), levels);
            // Serializing and dropping it run on the caller's ordinary stack.
            assert_eq!(serde_json::to_vec(&v).unwrap(), bytes);
            drop(v);
        }
        let too_deep = serde_json::to_vec(&maps(MAX_READ_DEPTH + 1, json!(1))).unwrap();
        assert!(from_stored(&too_deep).unwrap_err().contains("1001 levels deep"));
        assert!(from_stored(b"{\"a\": ").is_err());
        assert!(from_stored(&[b'['; 200]).is_err());
    }
}
