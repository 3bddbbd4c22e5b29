//! Schema-guided walks over JSON objects (upstream
//! `structured-merge-diff/typed`): field sets, comparison, apply-merge and
//! removal of owned items.
//!
//! Objects are treated as structs whose fields are all known; lists follow
//! [`Schema::list_type`]. Each walker keeps the path of field names (for
//! schema look-ups, list items omitted) and the path of elements (for sets)
//! in step.

use super::fieldset::{value_eq, FieldSet, Path, PathElement};
use super::{ListType, Schema};
use serde_json::{Map, Value};
use std::collections::BTreeMap;

/// What a node is, as far as merging and ownership are concerned.
enum Kind {
    /// Owned and compared as a whole: scalars, null, atomic lists and
    /// atomic objects.
    Leaf,
    /// A granular object.
    Map,
    /// A granular (set or map) list.
    List(ListType),
}

struct Walk<'a> {
    schema: &'a dyn Schema,
    names: Vec<String>,
    path: Path,
}

impl<'a> Walk<'a> {
    fn new(schema: &'a dyn Schema) -> Self {
        Walk {
            schema,
            names: Vec::new(),
            path: Vec::new(),
        }
    }

    fn names(&self) -> Vec<&str> {
        self.names.iter().map(String::as_str).collect()
    }

    fn kind(&self, v: &Value) -> Kind {
        match v {
            Value::Object(_) if self.schema.is_atomic_object(&self.names()) => Kind::Leaf,
            Value::Object(_) => Kind::Map,
            Value::Array(_) => match self.schema.list_type(&self.names()) {
                ListType::Atomic => Kind::Leaf,
                lt => Kind::List(lt),
            },
            _ => Kind::Leaf,
        }
    }

    fn push_field(&mut self, name: &str) {
        self.names.push(name.to_string());
        self.path.push(PathElement::Field(name.to_string()));
    }

    fn pop_field(&mut self) {
        self.names.pop();
        self.path.pop();
    }

    /// Path elements of a granular list's items, in list order, or the
    /// first item's error.
    fn item_elements(&self, lt: &ListType, items: &[Value]) -> Result<Vec<PathElement>, String> {
        items
            .iter()
            .map(|item| item_element(self.schema, &self.names(), lt, item))
            .collect()
    }
}

/// The path element naming `item` in a list of type `lt` at `names`
/// (upstream `listItemToPathElement`). Missing key fields take the schema's
/// default (e.g. a container port's `protocol` is `"TCP"`) or are left out
/// of the key; an item with none of the key fields is an error.
pub(crate) fn item_element(
    schema: &dyn Schema,
    names: &[&str],
    lt: &ListType,
    item: &Value,
) -> Result<PathElement, String> {
    match lt {
        ListType::Map(keys) => {
            let obj = match item {
                Value::Object(m) => m,
                Value::Null => {
                    return Err("associative list with keys may not have a null element".into())
                }
                _ => return Err("associative list with keys may not have non-map elements".into()),
            };
            let mut fields = Vec::new();
            for key in keys {
                if let Some(v) = obj.get(key) {
                    fields.push((key.clone(), v.clone()));
                } else if let Some(d) = schema.list_key_default(names, key) {
                    fields.push((key.clone(), d));
                }
            }
            if fields.is_empty() {
                return Err(format!(
                    "associative list with keys has an element that omits all key fields {keys:?} (and doesn't have default values for any key fields)"
                ));
            }
            Ok(PathElement::key(fields))
        }
        ListType::Set => match item {
            Value::Object(_) => {
                Err("associative list without keys has an element that's a map type".into())
            }
            Value::Array(_) => Err("not supported: associative list with lists as elements".into()),
            Value::Null => {
                Err("associative list without keys has an element that's an explicit null".into())
            }
            v => Ok(PathElement::Value(v.clone())),
        },
        ListType::Atomic => Err("invalid indexing of non-associative list".into()),
    }
}

fn is_empty_container(v: Option<&Value>) -> bool {
    match v {
        None => true,
        Some(Value::Object(m)) => m.is_empty(),
        Some(Value::Array(a)) => a.is_empty(),
        _ => false,
    }
}

// ---------------------------------------------------------------------------
// Field sets

/// The fields set in `v` (upstream `TypedValue.ToFieldSet`): every scalar,
/// atomic list/object, null and empty object is a member, and so is every
/// item of a granular list; a non-empty object field is only a parent.
pub(crate) fn to_field_set(v: &Value, schema: &dyn Schema) -> FieldSet {
    let mut w = Walk::new(schema);
    let mut set = FieldSet::new();
    if let Value::Object(m) = v {
        w.set_map(m, &mut set);
    }
    set
}

impl Walk<'_> {
    fn set_value(&mut self, v: &Value, set: &mut FieldSet) {
        match self.kind(v) {
            Kind::Leaf => set.insert(&self.path),
            Kind::Map => {
                if let Value::Object(m) = v {
                    self.set_map(m, set);
                }
            }
            Kind::List(lt) => {
                let Value::Array(items) = v else { return };
                let Ok(pes) = self.item_elements(&lt, items) else {
                    // Items that cannot be identified (a live object saved
                    // before its list became keyed, say): own the list whole
                    // rather than fail.
                    set.insert(&self.path);
                    return;
                };
                let mut seen: BTreeMap<&PathElement, usize> = BTreeMap::new();
                for pe in &pes {
                    *seen.entry(pe).or_default() += 1;
                }
                for (pe, item) in pes.iter().zip(items) {
                    self.path.push(pe.clone());
                    // Duplicated items cannot be told apart: upstream owns
                    // the duplicated key as one member without descending.
                    if seen[pe] == 1 {
                        self.set_value(item, set);
                    }
                    set.insert(&self.path);
                    self.path.pop();
                }
            }
        }
    }

    fn set_map(&mut self, m: &Map<String, Value>, set: &mut FieldSet) {
        for (k, val) in m {
            self.push_field(k);
            self.set_value(val, set);
            if val.is_null() || matches!(val, Value::Object(o) if o.is_empty()) {
                set.insert(&self.path);
            }
            self.pop_field();
        }
    }
}

// ---------------------------------------------------------------------------
// Comparison

/// Difference between two objects (upstream `typed.Comparison`).
#[derive(Debug, Default, Clone)]
pub(crate) struct Comparison {
    /// Present only in the old object (including every node below).
    pub removed: FieldSet,
    /// Leaves present in both with different values.
    pub modified: FieldSet,
    /// Present only in the new object (including every node below).
    pub added: FieldSet,
}

impl Comparison {
    /// Fields whose value the new object sets: modified or added.
    pub fn changed(&self) -> FieldSet {
        self.modified.union(&self.added)
    }

    /// Drops everything under `ignored` (upstream `Comparison.ExcludeFields`).
    pub fn exclude(&mut self, ignored: &FieldSet) {
        self.removed = self.removed.recursive_difference(ignored);
        self.modified = self.modified.recursive_difference(ignored);
        self.added = self.added.recursive_difference(ignored);
    }
}

/// Compares `old` with `new` (upstream `TypedValue.Compare`).
pub(crate) fn compare(old: &Value, new: &Value, schema: &dyn Schema) -> Comparison {
    let mut w = Walk::new(schema);
    let mut c = Comparison::default();
    w.compare(Some(old), Some(new), &mut c);
    c
}

impl Walk<'_> {
    fn compare(&mut self, lhs: Option<&Value>, rhs: Option<&Value>, c: &mut Comparison) {
        let lk = lhs.map(|v| self.kind(v));
        let rk = rhs.map(|v| self.kind(v));
        match (lk, rk) {
            // Both empty (or absent) containers: compared as a leaf so that
            // `{}` versus absent is still noticed.
            (Some(Kind::Map | Kind::List(_)), _) | (_, Some(Kind::Map | Kind::List(_)))
                if is_empty_container(lhs) && is_empty_container(rhs) =>
            {
                self.leaf(lhs, rhs, c)
            }
            (Some(Kind::Map), Some(Kind::Map))
            | (Some(Kind::Map), None)
            | (None, Some(Kind::Map)) => {
                let empty = Map::new();
                let lm = lhs.and_then(Value::as_object);
                let rm = rhs.and_then(Value::as_object);
                let mut keys: Vec<&String> = lm.unwrap_or(&empty).keys().collect();
                keys.extend(
                    rm.unwrap_or(&empty)
                        .keys()
                        .filter(|k| !lm.is_some_and(|l| l.contains_key(*k))),
                );
                for k in keys {
                    self.push_field(k);
                    self.compare(lm.and_then(|m| m.get(k)), rm.and_then(|m| m.get(k)), c);
                    self.pop_field();
                }
                self.node_presence(lhs, rhs, c);
            }
            (Some(Kind::List(lt)), Some(Kind::List(_)))
            | (Some(Kind::List(lt)), None)
            | (None, Some(Kind::List(lt))) => {
                let empty = Vec::new();
                let li = lhs.and_then(Value::as_array).unwrap_or(&empty);
                let ri = rhs.and_then(Value::as_array).unwrap_or(&empty);
                match (self.item_elements(&lt, li), self.item_elements(&lt, ri)) {
                    (Ok(lp), Ok(rp)) => self.compare_items(&lp, li, &rp, ri, c),
                    // Unidentifiable items: fall back to comparing whole.
                    _ => self.leaf(lhs, rhs, c),
                }
                self.node_presence(lhs, rhs, c);
            }
            (Some(Kind::Leaf), Some(Kind::Leaf))
            | (Some(Kind::Leaf), None)
            | (None, Some(Kind::Leaf)) => self.leaf(lhs, rhs, c),
            (None, None) => {}
            // A change of shape (scalar to object, say): the node changed
            // and everything below either side appeared or disappeared.
            (Some(_), Some(_)) => {
                c.modified.insert(&self.path);
                self.compare_children_one_sided(lhs, true, c);
                self.compare_children_one_sided(rhs, false, c);
            }
        }
    }

    fn compare_children_one_sided(&mut self, v: Option<&Value>, old: bool, c: &mut Comparison) {
        let Some(v) = v else { return };
        match (self.kind(v), v) {
            (Kind::Map, Value::Object(m)) => {
                for (k, child) in m {
                    self.push_field(k);
                    if old {
                        self.compare(Some(child), None, c)
                    } else {
                        self.compare(None, Some(child), c)
                    }
                    self.pop_field();
                }
            }
            (Kind::List(lt), Value::Array(items)) => {
                if let Ok(pes) = self.item_elements(&lt, items) {
                    let empty = Vec::new();
                    if old {
                        self.compare_items(&pes, items, &[], &empty, c)
                    } else {
                        self.compare_items(&[], &empty, &pes, items, c)
                    }
                }
            }
            _ => {}
        }
    }

    fn node_presence(&self, lhs: Option<&Value>, rhs: Option<&Value>, c: &mut Comparison) {
        if lhs.is_none() {
            c.added.insert(&self.path);
        } else if rhs.is_none() {
            c.removed.insert(&self.path);
        }
    }

    fn leaf(&self, lhs: Option<&Value>, rhs: Option<&Value>, c: &mut Comparison) {
        match (lhs, rhs) {
            (None, Some(_)) => c.added.insert(&self.path),
            (Some(_), None) => c.removed.insert(&self.path),
            (Some(l), Some(r)) if !value_eq(l, r) => c.modified.insert(&self.path),
            _ => {}
        }
    }

    /// Matches items by path element, handling duplicates like upstream:
    /// duplicated on both sides → compared as one atomic value; duplicates
    /// appearing or disappearing → the key is added or removed.
    fn compare_items(
        &mut self,
        lpes: &[PathElement],
        litems: &[Value],
        rpes: &[PathElement],
        ritems: &[Value],
        c: &mut Comparison,
    ) {
        let mut order: Vec<&PathElement> = Vec::new();
        let mut lvals: BTreeMap<&PathElement, Vec<&Value>> = BTreeMap::new();
        for (pe, item) in lpes.iter().zip(litems) {
            let e = lvals.entry(pe).or_default();
            if e.is_empty() {
                order.push(pe);
            }
            e.push(item);
        }
        let mut rvals: BTreeMap<&PathElement, Vec<&Value>> = BTreeMap::new();
        for (pe, item) in rpes.iter().zip(ritems) {
            let e = rvals.entry(pe).or_default();
            if e.is_empty() && !lvals.contains_key(pe) {
                order.push(pe);
            }
            e.push(item);
        }
        for pe in order {
            let l = lvals.get(pe).map(Vec::as_slice).unwrap_or(&[]);
            let r = rvals.get(pe).map(Vec::as_slice).unwrap_or(&[]);
            self.path.push(pe.clone());
            if l.len() <= 1 && r.len() <= 1 {
                self.compare(l.first().copied(), r.first().copied(), c);
            } else if l.len() >= 2 && r.len() >= 2 {
                let same = l.len() == r.len() && l.iter().zip(r).all(|(a, b)| value_eq(a, b));
                if !same {
                    c.modified.insert(&self.path);
                }
            } else if l.len() >= 2 {
                if let Some(first) = r.first() {
                    self.compare(None, Some(first), c);
                }
                c.removed.insert(&self.path);
            } else {
                if let Some(first) = l.first() {
                    self.compare(Some(first), None, c);
                }
                c.added.insert(&self.path);
            }
            self.path.pop();
        }
    }
}

// ---------------------------------------------------------------------------
// Apply merge

/// Merges the apply `config` into `live` (upstream `TypedValue.Merge` with
/// the keep-right rule): objects merge field by field, granular lists item
/// by item, and the config wins at every leaf.
///
/// Fails only when the config's own list items cannot be identified or are
/// duplicated; unidentifiable live lists are replaced whole.
pub(crate) fn merge(live: &Value, config: &Value, schema: &dyn Schema) -> Result<Value, String> {
    let mut w = Walk::new(schema);
    w.merge(Some(live), Some(config))
        .map(|v| v.unwrap_or(Value::Null))
}

impl Walk<'_> {
    fn merge(&mut self, lhs: Option<&Value>, rhs: Option<&Value>) -> Result<Option<Value>, String> {
        let (l, r) = match (lhs, rhs) {
            (None, None) => return Ok(None),
            (Some(l), None) => return Ok(Some(l.clone())),
            (None, Some(r)) => {
                // Still walked, to reject bad list items in the config.
                self.validate(r)?;
                return Ok(Some(r.clone()));
            }
            (Some(l), Some(r)) => (l, r),
        };
        match (self.kind(l), self.kind(r), l, r) {
            (Kind::Map, Kind::Map, Value::Object(lm), Value::Object(rm)) => {
                let mut out = lm.clone();
                for (k, rv) in rm {
                    self.push_field(k);
                    let merged = self.merge(lm.get(k), Some(rv));
                    self.pop_field();
                    if let Some(v) = merged? {
                        out.insert(k.clone(), v);
                    }
                }
                Ok(Some(Value::Object(out)))
            }
            (Kind::List(lt), Kind::List(_), Value::Array(li), Value::Array(ri))
                if !(li.is_empty() && ri.is_empty()) =>
            {
                let rpes = self.item_elements(&lt, ri).map_err(|e| self.err(&e))?;
                let mut seen = BTreeMap::new();
                for pe in &rpes {
                    if seen.insert(pe, ()).is_some() {
                        self.path.push(pe.clone());
                        let e = self.err(&format!("duplicate entries for key {pe}"));
                        self.path.pop();
                        return Err(e);
                    }
                }
                match self.item_elements(&lt, li) {
                    Ok(lpes) => self
                        .merge_items(&lpes, li, &rpes, ri)
                        .map(|v| Some(Value::Array(v))),
                    Err(_) => {
                        self.validate(r)?;
                        Ok(Some(r.clone()))
                    }
                }
            }
            _ => {
                self.validate(r)?;
                Ok(Some(r.clone()))
            }
        }
    }

    fn err(&self, msg: &str) -> String {
        let p = super::fieldset::path_to_string(&self.path);
        if p.is_empty() {
            msg.to_string()
        } else {
            format!("{p}: {msg}")
        }
    }

    /// Checks that every granular list in `v` has identifiable, unique items.
    fn validate(&mut self, v: &Value) -> Result<(), String> {
        match (self.kind(v), v) {
            (Kind::Map, Value::Object(m)) => {
                for (k, child) in m {
                    self.push_field(k);
                    let r = self.validate(child);
                    self.pop_field();
                    r?;
                }
                Ok(())
            }
            (Kind::List(lt), Value::Array(items)) => {
                let pes = self.item_elements(&lt, items).map_err(|e| self.err(&e))?;
                let mut seen = BTreeMap::new();
                for (pe, item) in pes.iter().zip(items) {
                    self.path.push(pe.clone());
                    let r = if seen.insert(pe, ()).is_some() {
                        Err(self.err("duplicate entries for key"))
                    } else {
                        self.validate(item)
                    };
                    self.path.pop();
                    r?;
                }
                Ok(())
            }
            _ => Ok(()),
        }
    }

    /// Upstream's list merge order: the config's order wins among items in
    /// both lists; items only in the live list stay where they were
    /// relative to their neighbours; new items are inserted where the
    /// config puts them relative to shared ones (appended when after all).
    fn merge_items(
        &mut self,
        lpes: &[PathElement],
        litems: &[Value],
        rpes: &[PathElement],
        ritems: &[Value],
    ) -> Result<Vec<Value>, String> {
        // Live items by element; a duplicated live element maps to None and
        // is collapsed into the config's item (or kept as-is when the config
        // does not mention it), as upstream does.
        let mut observed_l: BTreeMap<&PathElement, Option<&Value>> = BTreeMap::new();
        for (pe, item) in lpes.iter().zip(litems) {
            observed_l
                .entry(pe)
                .and_modify(|v| *v = None)
                .or_insert(Some(item));
        }
        let observed_r: BTreeMap<&PathElement, &Value> = rpes.iter().zip(ritems).collect();

        let mut shared: std::collections::VecDeque<&PathElement> = rpes
            .iter()
            .filter(|pe| observed_l.contains_key(pe))
            .collect();
        let mut next_shared = shared.pop_front();
        let mut merged_r: std::collections::BTreeSet<&PathElement> = Default::default();
        let mut out = Vec::with_capacity(litems.len().max(ritems.len()));
        let (llen, rlen) = (lpes.len(), rpes.len());
        let (mut li, mut ri) = (0, 0);
        while li < llen || ri < rlen {
            if li < llen && ri < rlen {
                let pe = &lpes[li];
                if *pe == rpes[ri] {
                    merged_r.insert(pe);
                    let l = observed_l.get(pe).copied().flatten();
                    if let Some(v) = self.merge_item(pe, l, observed_r.get(pe).copied())? {
                        out.push(v);
                    }
                    li += 1;
                    ri += 1;
                    next_shared = shared.pop_front();
                    continue;
                }
                // A shared live item out of the config's order: skip it
                // here, it is emitted when the config reaches it.
                if observed_r.contains_key(pe) && next_shared.is_some_and(|n| n != pe) {
                    li += 1;
                    continue;
                }
            }
            if li < llen {
                let pe = &lpes[li];
                if !observed_r.contains_key(pe) {
                    if let Some(v) = self.merge_item(pe, Some(&litems[li]), None)? {
                        out.push(v);
                    }
                    li += 1;
                    continue;
                } else if merged_r.contains(pe) {
                    li += 1;
                }
            }
            if ri < rlen {
                let pe = &rpes[ri];
                merged_r.insert(pe);
                let l = observed_l.get(pe).copied().flatten();
                if let Some(v) = self.merge_item(pe, l, observed_r.get(pe).copied())? {
                    out.push(v);
                }
                ri += 1;
                if next_shared.is_some_and(|n| n == pe) {
                    next_shared = shared.pop_front();
                }
            }
        }
        Ok(out)
    }

    fn merge_item(
        &mut self,
        pe: &PathElement,
        l: Option<&Value>,
        r: Option<&Value>,
    ) -> Result<Option<Value>, String> {
        self.path.push(pe.clone());
        let out = self.merge(l, r);
        self.path.pop();
        out
    }
}

// ---------------------------------------------------------------------------
// Removal

/// Removes the paths in `set` from `v` (upstream `TypedValue.RemoveItems`):
/// a member path removes the field or list item with everything below it.
///
/// Upstream leaves `null` where removal empties an object or list; this
/// drops the field instead, which is what a Go built-in type serializes
/// (nil maps, slices and pointers are omitted) and keeps stored objects
/// free of stray nulls.
pub(crate) fn remove_items(v: &Value, set: &FieldSet, schema: &dyn Schema) -> Value {
    let mut w = Walk::new(schema);
    w.remove(v, set)
        .unwrap_or_else(|| Value::Object(Map::new()))
}

impl Walk<'_> {
    /// `None` when removal emptied the value.
    fn remove(&mut self, v: &Value, set: &FieldSet) -> Option<Value> {
        match (self.kind(v), v) {
            (Kind::Map, Value::Object(m)) => {
                let mut out = Map::new();
                for (k, val) in m {
                    let pe = PathElement::Field(k.clone());
                    if set.has_member(&pe) {
                        continue;
                    }
                    match set.with_prefix(&pe) {
                        Some(sub) => {
                            self.push_field(k);
                            let r = self.remove(val, sub);
                            self.pop_field();
                            if let Some(r) = r {
                                out.insert(k.clone(), r);
                            }
                        }
                        None => {
                            out.insert(k.clone(), val.clone());
                        }
                    }
                }
                if out.is_empty() && !m.is_empty() {
                    None
                } else {
                    Some(Value::Object(out))
                }
            }
            (Kind::List(lt), Value::Array(items)) => {
                let Ok(pes) = self.item_elements(&lt, items) else {
                    return Some(v.clone());
                };
                let mut out = Vec::new();
                for (pe, item) in pes.iter().zip(items) {
                    if set.has_member(pe) {
                        continue;
                    }
                    match set.with_prefix(pe) {
                        Some(sub) => {
                            self.path.push(pe.clone());
                            let r = self.remove(item, sub);
                            self.path.pop();
                            // An item stripped of all its fields (keys
                            // included) can no longer be identified; drop it.
                            if let Some(r) = r {
                                out.push(r);
                            }
                        }
                        None => out.push(item.clone()),
                    }
                }
                if out.is_empty() && !items.is_empty() {
                    None
                } else {
                    Some(Value::Array(out))
                }
            }
            _ => Some(v.clone()),
        }
    }
}
