//! Sets of field paths, the unit of ownership in server-side apply
//! (upstream `sigs.k8s.io/structured-merge-diff/fieldpath`).
//!
//! A [`FieldSet`] is a tree: every node holds the path elements that are
//! *members* (owned paths ending here) and the *children* (sub-trees under a
//! path element). A path can be both a member and have children — e.g. a
//! list-map item is owned as a whole (`.`) and so are some of its fields.
//!
//! The wire form is upstream's `FieldsV1` JSON: each path element becomes a
//! key (`f:name`, `k:{"name":"c"}`, `v:"x"`, `i:0`), a member without
//! children is `{}`, and a member with children carries a `"."` key.

use serde_json::{Map, Number, Value};
use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

/// Error decoding a `fieldsV1` document or a path element.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldSetError(pub String);

impl fmt::Display for FieldSetError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for FieldSetError {}

/// One step of a field path (upstream `fieldpath.PathElement`).
#[derive(Debug, Clone)]
pub enum PathElement {
    /// A field of an object (`f:<name>`).
    Field(String),
    /// An item of a list-map, identified by its key fields (`k:{...}`).
    /// Always sorted by field name: the serialized form and the ordering
    /// depend on it.
    Key(Vec<(String, Value)>),
    /// An item of a set-list, identified by its value (`v:<json>`).
    Value(Value),
    /// An item of a list by position (`i:<n>`). Upstream never produces
    /// these for ownership (atomic lists are owned whole) but can parse them.
    Index(i64),
}

/// A path from the root of an object.
pub type Path = Vec<PathElement>;

impl PathElement {
    /// `f:<name>` element.
    pub fn field(name: impl Into<String>) -> Self {
        PathElement::Field(name.into())
    }

    /// `k:{...}` element; sorts the key fields as upstream requires.
    pub fn key<I, S>(fields: I) -> Self
    where
        I: IntoIterator<Item = (S, Value)>,
        S: Into<String>,
    {
        let mut v: Vec<(String, Value)> = fields.into_iter().map(|(k, v)| (k.into(), v)).collect();
        // Stable sort by name only, like upstream `FieldList.Sort`.
        v.sort_by(|a, b| a.0.cmp(&b.0));
        PathElement::Key(v)
    }

    fn rank(&self) -> u8 {
        match self {
            PathElement::Field(_) => 0,
            PathElement::Key(_) => 1,
            PathElement::Value(_) => 2,
            PathElement::Index(_) => 3,
        }
    }

    /// The `fieldsV1` key for this element (upstream `SerializePathElement`).
    pub fn to_key_string(&self) -> String {
        let mut out = String::new();
        match self {
            // Field names are written raw: the JSON-string escaping of the
            // whole key happens when the enclosing document is written.
            PathElement::Field(name) => {
                out.push_str("f:");
                out.push_str(name);
            }
            PathElement::Key(fields) => {
                out.push_str("k:{");
                for (i, (name, value)) in fields.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    write_go_json_string(&mut out, name);
                    out.push(':');
                    write_go_json(&mut out, value);
                }
                out.push('}');
            }
            PathElement::Value(value) => {
                out.push_str("v:");
                write_go_json(&mut out, value);
            }
            PathElement::Index(i) => {
                out.push_str("i:");
                out.push_str(&i.to_string());
            }
        }
        out
    }

    /// Parses a `fieldsV1` key (upstream `DeserializePathElement`).
    ///
    /// Returns `Ok(None)` for an unknown element type: upstream drops those
    /// silently so that a newer server's data does not break an older one.
    pub fn parse(s: &str) -> Result<Option<PathElement>, FieldSetError> {
        let b = s.as_bytes();
        if b.len() < 2 {
            return Err(FieldSetError("key must be 2 characters long:".into()));
        }
        if b[1] != b':' {
            return Err(FieldSetError(format!("missing colon: {s}")));
        }
        let rest = &s[2..];
        match b[0] {
            b'f' => Ok(Some(PathElement::Field(rest.to_string()))),
            b'v' => {
                let v: Value = serde_json::from_str(rest)
                    .map_err(|e| FieldSetError(format!("parsing value path element {s:?}: {e}")))?;
                Ok(Some(PathElement::Value(v)))
            }
            b'k' => {
                let v: Value = serde_json::from_str(rest)
                    .map_err(|e| FieldSetError(format!("parsing key path element {s:?}: {e}")))?;
                let Value::Object(m) = v else {
                    return Err(FieldSetError(format!(
                        "key path element is not an object: {s}"
                    )));
                };
                Ok(Some(PathElement::key(m)))
            }
            b'i' => {
                let i: i64 = rest
                    .parse()
                    .map_err(|e| FieldSetError(format!("parsing index path element {s:?}: {e}")))?;
                Ok(Some(PathElement::Index(i)))
            }
            _ => Ok(None),
        }
    }
}

impl PartialEq for PathElement {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for PathElement {}

impl PartialOrd for PathElement {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// Upstream's order (`PathElement.Compare`): fields, then keys, then
/// values, then indices. It decides the order of a serialized set.
impl Ord for PathElement {
    fn cmp(&self, other: &Self) -> Ordering {
        match (self, other) {
            (PathElement::Field(a), PathElement::Field(b)) => a.cmp(b),
            (PathElement::Key(a), PathElement::Key(b)) => {
                for ((an, av), (bn, bv)) in a.iter().zip(b.iter()) {
                    let c = an.cmp(bn).then_with(|| value_cmp(av, bv));
                    if c != Ordering::Equal {
                        return c;
                    }
                }
                a.len().cmp(&b.len())
            }
            (PathElement::Value(a), PathElement::Value(b)) => value_cmp(a, b),
            (PathElement::Index(a), PathElement::Index(b)) => a.cmp(b),
            _ => self.rank().cmp(&other.rank()),
        }
    }
}

/// Human form used in conflict messages (upstream `PathElement.String`):
/// `.name`, `[name="c"]`, `[="x"]`, `[0]`.
impl fmt::Display for PathElement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PathElement::Field(name) => write!(f, ".{name}"),
            PathElement::Key(fields) => {
                let parts: Vec<String> = fields
                    .iter()
                    .map(|(k, v)| format!("{k}={}", value_to_string(v)))
                    .collect();
                write!(f, "[{}]", parts.join(","))
            }
            PathElement::Value(v) => write!(f, "[={}]", value_to_string(v)),
            PathElement::Index(i) => write!(f, "[{i}]"),
        }
    }
}

/// Prints a path like upstream `Path.String`: `.spec.containers[name="c"].image`.
pub fn path_to_string(path: &[PathElement]) -> String {
    path.iter().map(|pe| pe.to_string()).collect()
}

/// Total order over JSON values (upstream `value.Compare`): numbers (ints
/// and floats compared numerically) < strings < bools < lists < maps < null.
pub fn value_cmp(a: &Value, b: &Value) -> Ordering {
    fn rank(v: &Value) -> u8 {
        match v {
            Value::Number(_) => 0,
            Value::String(_) => 1,
            Value::Bool(_) => 2,
            Value::Array(_) => 3,
            Value::Object(_) => 4,
            Value::Null => 5,
        }
    }
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => number_cmp(x, y),
        (Value::String(x), Value::String(y)) => x.cmp(y),
        (Value::Bool(x), Value::Bool(y)) => x.cmp(y),
        (Value::Array(x), Value::Array(y)) => {
            for (p, q) in x.iter().zip(y.iter()) {
                let c = value_cmp(p, q);
                if c != Ordering::Equal {
                    return c;
                }
            }
            x.len().cmp(&y.len())
        }
        (Value::Object(x), Value::Object(y)) => {
            // serde_json maps iterate in key order, so this is a lexical
            // comparison of the sorted (key, value) pairs.
            for ((pk, pv), (qk, qv)) in x.iter().zip(y.iter()) {
                let c = pk.cmp(qk).then_with(|| value_cmp(pv, qv));
                if c != Ordering::Equal {
                    return c;
                }
            }
            x.len().cmp(&y.len())
        }
        (Value::Null, Value::Null) => Ordering::Equal,
        _ => rank(a).cmp(&rank(b)),
    }
}

fn number_cmp(x: &Number, y: &Number) -> Ordering {
    if x.is_f64() || y.is_f64() {
        let (a, b) = (x.as_f64().unwrap_or(0.0), y.as_f64().unwrap_or(0.0));
        return a.partial_cmp(&b).unwrap_or(Ordering::Equal);
    }
    match (x.as_i64(), y.as_i64()) {
        (Some(a), Some(b)) => a.cmp(&b),
        // At least one is a u64 above i64::MAX.
        (Some(_), None) => Ordering::Less,
        (None, Some(_)) => Ordering::Greater,
        (None, None) => x.as_u64().cmp(&y.as_u64()),
    }
}

/// JSON equality where `1` and `1.0` are equal (upstream `value.Equals`);
/// serde_json's own `==` tells them apart.
pub fn value_eq(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => number_cmp(x, y) == Ordering::Equal,
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(p, q)| value_eq(p, q))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, v)| y.get(k).is_some_and(|w| value_eq(v, w)))
        }
        _ => a == b,
    }
}

/// Upstream `value.ToString`: strings Go-quoted (`%q`), numbers and bools
/// plain, lists bracketed, maps as concatenated `k=v`.
fn value_to_string(v: &Value) -> String {
    match v {
        Value::Null => "null".into(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => {
            if n.is_f64() {
                go_float_v(n.as_f64().unwrap_or(0.0))
            } else {
                n.to_string()
            }
        }
        Value::String(s) => go_quote(s),
        Value::Array(items) => {
            let parts: Vec<String> = items.iter().map(value_to_string).collect();
            format!("[{}]", parts.join(","))
        }
        Value::Object(m) => m
            .iter()
            .map(|(k, v)| format!("{k}={}", value_to_string(v)))
            .collect(),
    }
}

/// Go's `%v` for a float64 (shortest representation, exponent form outside
/// [1e-4, 1e21)).
fn go_float_v(f: f64) -> String {
    let abs = f.abs();
    if abs != 0.0 && !(1e-4..1e21).contains(&abs) {
        go_exponent(format!("{f:e}"))
    } else {
        format!("{f}")
    }
}

/// Rewrites Rust's `1.5e-7` into Go's `1.5e-07` / `1e+21`.
fn go_exponent(s: String) -> String {
    let Some((mant, exp)) = s.split_once('e') else {
        return s;
    };
    let (sign, digits) = match exp.strip_prefix('-') {
        Some(d) => ('-', d),
        None => ('+', exp),
    };
    if digits.len() < 2 {
        format!("{mant}e{sign}0{digits}")
    } else {
        format!("{mant}e{sign}{digits}")
    }
}

/// Go's `strconv.Quote` (`%q`).
pub(crate) fn go_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\u{7}' => out.push_str("\\a"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{b}' => out.push_str("\\v"),
            c if (c as u32) < 0x20 || c == '\u{7f}' => {
                out.push_str(&format!("\\x{:02x}", c as u32))
            }
            c if c.is_control() => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Writes `v` as compact JSON the way Go's `encoding/json` does (object keys
/// sorted, `<`, `>`, `&`, U+2028, U+2029 escaped), since upstream writes the
/// values inside `k:`/`v:` keys with a standard-library-compatible encoder
/// and the keys must match byte for byte to identify the same item.
fn write_go_json(out: &mut String, v: &Value) {
    match v {
        Value::Null => out.push_str("null"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Number(n) => {
            if n.is_f64() {
                out.push_str(&go_json_float(n.as_f64().unwrap_or(0.0)));
            } else {
                out.push_str(&n.to_string());
            }
        }
        Value::String(s) => write_go_json_string(out, s),
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_go_json(out, item);
            }
            out.push(']');
        }
        Value::Object(m) => {
            out.push('{');
            // serde_json's map is ordered by key, matching Go's sorted output.
            for (i, (k, item)) in m.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_go_json_string(out, k);
                out.push(':');
                write_go_json(out, item);
            }
            out.push('}');
        }
    }
}

/// Go `encoding/json` float64 formatting: `%f`-style unless the exponent is
/// very small or large, then `1e-07` shortened to `1e-7`.
fn go_json_float(f: f64) -> String {
    let abs = f.abs();
    if abs != 0.0 && !(1e-6..1e21).contains(&abs) {
        let s = format!("{f:e}");
        match s.split_once('e') {
            Some((m, e)) if e.starts_with('-') => format!("{m}e{e}"),
            Some((m, e)) => format!("{m}e+{e}"),
            None => s,
        }
    } else {
        format!("{f}")
    }
}

fn write_go_json_string(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '<' | '>' | '&' | '\u{2028}' | '\u{2029}' => {
                out.push_str(&format!("\\u{:04x}", c as u32))
            }
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
}

/// A set of field paths (upstream `fieldpath.Set`).
///
/// Invariant: no child set is empty (operations prune them), so structural
/// equality is set equality.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FieldSet {
    members: BTreeSet<PathElement>,
    children: BTreeMap<PathElement, FieldSet>,
}

impl FieldSet {
    /// The empty set.
    pub fn new() -> Self {
        Self::default()
    }

    /// A set holding the given paths.
    pub fn from_paths<I: IntoIterator<Item = Path>>(paths: I) -> Self {
        let mut s = FieldSet::new();
        for p in paths {
            s.insert(&p);
        }
        s
    }

    /// True when no path is in the set.
    pub fn is_empty(&self) -> bool {
        self.members.is_empty() && self.children.is_empty()
    }

    /// Adds `path`. The empty path is ignored (the root is never owned).
    pub fn insert(&mut self, path: &[PathElement]) {
        match path {
            [] => {}
            [last] => {
                self.members.insert(last.clone());
            }
            [first, rest @ ..] => {
                self.children.entry(first.clone()).or_default().insert(rest);
            }
        }
    }

    /// True if `path` itself is in the set (a prefix of a member is not).
    pub fn has(&self, path: &[PathElement]) -> bool {
        match path {
            [] => false,
            [last] => self.members.contains(last),
            [first, rest @ ..] => self.children.get(first).is_some_and(|c| c.has(rest)),
        }
    }

    /// Paths below `pe` (with `pe` removed from their front).
    pub fn with_prefix(&self, pe: &PathElement) -> Option<&FieldSet> {
        self.children.get(pe)
    }

    /// True if `pe` is a member at this level.
    pub fn has_member(&self, pe: &PathElement) -> bool {
        self.members.contains(pe)
    }

    /// Paths in either set.
    pub fn union(&self, other: &FieldSet) -> FieldSet {
        let mut out = self.clone();
        out.union_with(other);
        out
    }

    /// In-place [`FieldSet::union`].
    pub fn union_with(&mut self, other: &FieldSet) {
        self.members.extend(other.members.iter().cloned());
        for (pe, child) in &other.children {
            self.children
                .entry(pe.clone())
                .or_default()
                .union_with(child);
        }
    }

    /// Paths in both sets.
    pub fn intersection(&self, other: &FieldSet) -> FieldSet {
        let members = self.members.intersection(&other.members).cloned().collect();
        let mut children = BTreeMap::new();
        for (pe, child) in &self.children {
            if let Some(o) = other.children.get(pe) {
                let c = child.intersection(o);
                if !c.is_empty() {
                    children.insert(pe.clone(), c);
                }
            }
        }
        FieldSet { members, children }
    }

    /// Paths in `self` but not in `other`, path by path: removing a member
    /// does not remove the paths below it (upstream `Set.Difference`).
    pub fn difference(&self, other: &FieldSet) -> FieldSet {
        let members = self.members.difference(&other.members).cloned().collect();
        let mut children = BTreeMap::new();
        for (pe, child) in &self.children {
            let c = match other.children.get(pe) {
                Some(o) => child.difference(o),
                None => child.clone(),
            };
            if !c.is_empty() {
                children.insert(pe.clone(), c);
            }
        }
        FieldSet { members, children }
    }

    /// Like [`FieldSet::difference`], but a member of `other` also removes
    /// everything below it (upstream `Set.RecursiveDifference`, used to
    /// filter out whole sub-trees such as `status`).
    pub fn recursive_difference(&self, other: &FieldSet) -> FieldSet {
        let members = self.members.difference(&other.members).cloned().collect();
        let mut children = BTreeMap::new();
        for (pe, child) in &self.children {
            if other.members.contains(pe) {
                continue;
            }
            let c = match other.children.get(pe) {
                Some(o) => child.recursive_difference(o),
                None => child.clone(),
            };
            if !c.is_empty() {
                children.insert(pe.clone(), c);
            }
        }
        FieldSet { members, children }
    }

    /// Every path, in upstream's iteration order (`Set.Iterate`): this
    /// level's members first, then each child sub-tree in element order.
    pub fn paths(&self) -> Vec<Path> {
        let mut out = Vec::new();
        let mut prefix = Vec::new();
        self.collect_paths(&mut prefix, &mut out);
        out
    }

    fn collect_paths(&self, prefix: &mut Path, out: &mut Vec<Path>) {
        for m in &self.members {
            let mut p = prefix.clone();
            p.push(m.clone());
            out.push(p);
        }
        for (pe, child) in &self.children {
            prefix.push(pe.clone());
            child.collect_paths(prefix, out);
            prefix.pop();
        }
    }

    /// Number of paths in the set.
    pub fn len(&self) -> usize {
        self.members.len() + self.children.values().map(FieldSet::len).sum::<usize>()
    }

    /// The set plus every field (`f:`) node that has children, as a member
    /// (upstream `EnsureNamedFieldsAreMembers`). Pruning uses it so that
    /// owning `spec.x` also counts as owning the `spec` node.
    ///
    /// Upstream only promotes fields of structs (not keys of
    /// `map[string]T`); without a schema every object field is treated as
    /// a struct field, which only differs for maps of objects.
    pub fn ensure_named_fields_are_members(&self) -> FieldSet {
        let mut out = FieldSet {
            members: self.members.clone(),
            children: BTreeMap::new(),
        };
        for (pe, child) in &self.children {
            if matches!(pe, PathElement::Field(_)) {
                out.members.insert(pe.clone());
            }
            out.children
                .insert(pe.clone(), child.ensure_named_fields_are_members());
        }
        out
    }

    /// Encodes as a `fieldsV1` JSON value.
    ///
    /// serde_json objects are ordered by key string, so the key order of the
    /// value differs from upstream's element order (fields, keys, values,
    /// indices); the content is identical. Use
    /// [`FieldSet::to_fields_v1_string`] for upstream's exact bytes.
    pub fn to_fields_v1(&self) -> Value {
        Value::Object(self.to_map(false))
    }

    fn to_map(&self, include_self: bool) -> Map<String, Value> {
        let mut m = Map::new();
        if include_self && !self.is_empty() {
            m.insert(".".into(), Value::Object(Map::new()));
        }
        for pe in &self.members {
            m.insert(pe.to_key_string(), Value::Object(Map::new()));
        }
        for (pe, child) in &self.children {
            let include = self.members.contains(pe);
            m.insert(pe.to_key_string(), Value::Object(child.to_map(include)));
        }
        m
    }

    /// Encodes as `fieldsV1` JSON text exactly as upstream writes it
    /// (`Set.ToJSON`): compact, `"."` first, then elements in upstream order.
    pub fn to_fields_v1_string(&self) -> String {
        let mut out = String::from("{");
        self.emit(false, &mut out);
        out.push('}');
        out
    }

    fn emit(&self, include_self: bool, out: &mut String) {
        let mut first = true;
        let mut sep = |out: &mut String| {
            if !first {
                out.push(',');
            }
            first = false;
        };
        if include_self && !self.is_empty() {
            sep(out);
            out.push_str("\".\":{}");
        }
        // Members and children are merged in element order; an element in
        // both is written once, as a child carrying ".".
        let mut keys: BTreeSet<&PathElement> = self.members.iter().collect();
        keys.extend(self.children.keys());
        for pe in keys {
            sep(out);
            out.push_str(&serde_json::to_string(&pe.to_key_string()).unwrap_or_default());
            out.push(':');
            match self.children.get(pe) {
                Some(child) => {
                    out.push('{');
                    child.emit(self.members.contains(pe), out);
                    out.push('}');
                }
                None => out.push_str("{}"),
            }
        }
    }

    /// Decodes a `fieldsV1` JSON value (upstream `Set.FromJSON`).
    ///
    /// A node without children (`{}`) is a member; a node with children is
    /// a member only if it carries `"."`. Keys of unknown element types are
    /// dropped, as upstream does.
    pub fn from_fields_v1(v: &Value) -> Result<FieldSet, FieldSetError> {
        match v {
            Value::Object(m) => Ok(Self::read(m)?.0.unwrap_or_default()),
            Value::Null => Ok(FieldSet::new()),
            other => Err(FieldSetError(format!(
                "fieldsV1 must be an object, got {other}"
            ))),
        }
    }

    /// Decodes `fieldsV1` JSON text.
    pub fn from_fields_v1_str(s: &str) -> Result<FieldSet, FieldSetError> {
        let v: Value =
            serde_json::from_str(s).map_err(|e| FieldSetError(format!("parsing fieldsV1: {e}")))?;
        Self::from_fields_v1(&v)
    }

    /// Returns (children, is_member) for one node, like upstream `readIterV1`.
    fn read(m: &Map<String, Value>) -> Result<(Option<FieldSet>, bool), FieldSetError> {
        let mut children: Option<FieldSet> = None;
        let mut is_member = false;
        for (key, val) in m {
            if key == "." {
                is_member = true;
                continue;
            }
            let Some(pe) = PathElement::parse(key)? else {
                continue;
            };
            let Value::Object(sub) = val else {
                return Err(FieldSetError(format!(
                    "fieldsV1 entry {key:?} must be an object"
                )));
            };
            let (grandchildren, child_is_member) = Self::read(sub)?;
            if child_is_member {
                children
                    .get_or_insert_with(FieldSet::new)
                    .members
                    .insert(pe.clone());
            }
            if let Some(gc) = grandchildren {
                if !gc.is_empty() {
                    children
                        .get_or_insert_with(FieldSet::new)
                        .children
                        .insert(pe, gc);
                }
            }
        }
        if children.is_none() {
            is_member = true;
        }
        Ok((children, is_member))
    }
}

/// Lists the set's paths one per line, in upstream's printed form.
impl fmt::Display for FieldSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for p in self.paths() {
            writeln!(f, "{}", path_to_string(&p))?;
        }
        Ok(())
    }
}
