//! The schema logic of custom resources: pure functions over a CRD version's
//! `schema.openAPIV3Schema` (a `serde_json::Value`), ported from upstream's apiextensions
//! apiserver.
//!
//! - [`validate`]: kube-openapi's schema validation as apiextensions converts its results into
//!   field errors (`ValidateCustomResource`), plus the checks upstream runs next to it:
//!   `x-kubernetes-embedded-resource` type meta (`objectmeta.Validate`) and uniqueness in
//!   `x-kubernetes-list-type: set|map` lists (`ValidateListSetsAndMaps`). CEL rules
//!   (`x-kubernetes-validations`) are not evaluated.
//! - [`prune`] / [`prune_collect`]: upstream's structural pruning (unknown fields dropped except
//!   under `x-kubernetes-preserve-unknown-fields`), with the paths `fieldValidation` reports.
//! - [`apply_defaults`]: structural defaulting, after dropping non-nullable nulls.
//! - [`structural_errors`]: what CRD validation checks on a schema (OpenAPI subset, structural
//!   invariants, defaults that validate and are pruned).
//! - [`list_type`]: `x-kubernetes-list-type` / `x-kubernetes-list-map-keys` lookup for
//!   server-side apply.
//!
//! Messages and field paths follow upstream's text so clients see the same errors:
//! `spec.replicas: Invalid value: "string": spec.replicas in body must be of type integer: "string"`.

use std::cell::RefCell;
use std::collections::HashMap;

use regex::Regex;
use serde_json::{Map, Value};

use crate::validation::{ErrorKind, FieldError, FieldErrors};

const PRESERVE: &str = "x-kubernetes-preserve-unknown-fields";
const EMBEDDED: &str = "x-kubernetes-embedded-resource";
const INT_OR_STRING: &str = "x-kubernetes-int-or-string";
const LIST_TYPE: &str = "x-kubernetes-list-type";
const LIST_MAP_KEYS: &str = "x-kubernetes-list-map-keys";
const MAP_TYPE: &str = "x-kubernetes-map-type";
const VALIDATIONS: &str = "x-kubernetes-validations";

/// Fields of a resource that pruning and schema restrictions treat as type/object meta.
const META_FIELDS: [&str; 3] = ["apiVersion", "kind", "metadata"];

/// Types a CRD schema may name (upstream's `openapiV3Types`, sorted as its error lists them).
const OPENAPI_TYPES: [&str; 6] = ["array", "boolean", "integer", "number", "object", "string"];

/// String formats apiextensions keeps when building its validator; any other `format`
/// (`int32`, `int64`, `float`, `double`, ...) is stripped and so never validated
/// (`StripUnsupportedFormatsPostProcess`). Names are compared without dashes, as go-openapi
/// normalizes them (`date-time` is `datetime`).
const SUPPORTED_FORMATS: [&str; 25] = [
    "bsonobjectid", "uri", "email", "hostname", "ipv4", "ipv6", "cidr", "mac", "uuid", "uuid3", "uuid4", "uuid5",
    "isbn", "isbn10", "isbn13", "creditcard", "ssn", "hexcolor", "rgbcolor", "byte", "password", "date", "duration",
    "datetime", "date-time",
];

// ---------------------------------------------------------------------------------------------
// Small helpers

fn flag(s: &Value, key: &str) -> bool {
    s.get(key).and_then(Value::as_bool).unwrap_or(false)
}

fn str_of<'a>(s: &'a Value, key: &str) -> &'a str {
    s.get(key).and_then(Value::as_str).unwrap_or_default()
}

fn props(s: &Value) -> Option<&Map<String, Value>> {
    s.get("properties").and_then(Value::as_object)
}

/// The schema of `additionalProperties` when it is one (not `true`/`false`).
fn additional_schema(s: &Value) -> Option<&Value> {
    s.get("additionalProperties").filter(|v| v.is_object())
}

/// The single `items` schema (an `items` array is not allowed in CRDs).
fn items_schema(s: &Value) -> Option<&Value> {
    s.get("items").filter(|v| v.is_object())
}

/// The schema's own `type`, empty when unset.
fn own_type(s: &Value) -> &str {
    str_of(s, "type")
}

/// The types a value may have, as apiextensions hands them to kube-openapi:
/// `x-kubernetes-int-or-string` becomes `integer,string`.
fn effective_types(s: &Value) -> Vec<String> {
    if flag(s, INT_OR_STRING) {
        return vec!["integer".into(), "string".into()];
    }
    match s.get("type") {
        Some(Value::String(t)) if !t.is_empty() => vec![t.clone()],
        Some(Value::Array(ts)) => ts.iter().filter_map(|t| t.as_str().map(String::from)).collect(),
        _ => Vec::new(),
    }
}

/// The `format` kube-openapi sees: supported string formats only.
fn effective_format(s: &Value) -> &str {
    let f = str_of(s, "format");
    if f.is_empty() {
        return "";
    }
    let normalized = f.replace('-', "");
    if SUPPORTED_FORMATS.contains(&normalized.as_str()) {
        f
    } else {
        ""
    }
}

/// JSON type name of a value, integers (`1`) apart from other numbers (`1.5`, `1.0`).
fn json_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn is_integral(v: &Value) -> bool {
    match v {
        Value::Number(n) if n.is_i64() || n.is_u64() => true,
        Value::Number(n) => n.as_f64().is_some_and(|f| f.fract() == 0.0 && f.is_finite()),
        _ => false,
    }
}

/// Equality for `enum`: numbers compare by value (`1` equals `1.0`), the rest structurally.
fn enum_eq(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => match (x.as_i64(), y.as_i64()) {
            (Some(i), Some(j)) => i == j,
            _ => x.as_f64() == y.as_f64(),
        },
        _ => a == b,
    }
}

/// Go's `%v` for a float64 (`10`, `0.5`, `1e+06`), as kube-openapi messages print bounds.
fn go_float(f: f64) -> String {
    if f == 0.0 {
        return "0".into();
    }
    if !f.is_finite() {
        return if f.is_nan() { "NaN".into() } else if f > 0.0 { "+Inf".into() } else { "-Inf".into() };
    }
    // Rust's `{:e}` gives the shortest round-trip digits, like Go's 'g' with precision -1.
    let sci = format!("{f:e}");
    let (mant, exp) = sci.split_once('e').unwrap_or((&sci, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    // Go's shortest 'g' switches to exponent form when exp < -4 || exp >= 6.
    if !(-4..6).contains(&exp) {
        let sign = if exp < 0 { '-' } else { '+' };
        return format!("{mant}e{sign}{:02}", exp.abs());
    }
    format!("{f}")
}

/// A path element as upstream's `field.Path.Child` appends it.
fn child(path: &str, name: &str) -> String {
    if path.is_empty() {
        name.to_string()
    } else {
        format!("{path}.{name}")
    }
}

thread_local! {
    /// Compiled `pattern`s: the same few patterns are checked against many values.
    static REGEX_CACHE: RefCell<HashMap<String, Result<Regex, String>>> = RefCell::new(HashMap::new());
}

/// Compiles a schema `pattern` (Go RE2 syntax, which Rust's `regex` shares for what CRDs use).
fn compile(pattern: &str) -> Result<Regex, String> {
    REGEX_CACHE.with(|c| {
        let mut c = c.borrow_mut();
        if let Some(r) = c.get(pattern) {
            return r.clone();
        }
        if c.len() > 512 {
            c.clear();
        }
        let r = Regex::new(pattern).map_err(|e| {
            // Rust's error spans several lines; keep its last line, shaped like Go's message.
            let text = e.to_string();
            let last = text.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or("invalid pattern").trim();
            format!("error parsing regexp: {}: `{pattern}`", last.trim_start_matches("error: "))
        });
        c.insert(pattern.to_string(), r.clone());
        r
    })
}

// ---------------------------------------------------------------------------------------------
// Validation

/// Validates a custom object against its version's schema, as upstream's
/// `ValidateCustomResource` (kube-openapi) followed by the embedded-resource type-meta checks
/// and `x-kubernetes-list-type` set/map uniqueness. Field paths are relative to the object
/// (`spec.items[0].name`); CEL `x-kubernetes-validations` are not evaluated.
pub fn validate(schema: &Value, obj: &Value) -> FieldErrors {
    let mut errs = validate_at(schema, obj, "");
    k8s_checks(schema, obj, "", true, &mut errs);
    errs
}

/// kube-openapi validation of `obj` with error fields under `base` (upstream's `fldPath`;
/// empty for a custom object, `...default` when checking a schema default).
fn validate_at(schema: &Value, obj: &Value, base: &str) -> FieldErrors {
    let mut errs = Vec::new();
    Validator { base }.node(schema, obj, "", &mut errs);
    errs
}

/// One run of the kube-openapi validator. Nodes carry kube-openapi's own path (`rel`: the
/// name in messages, `""` at the root, `.key` for keys of a root-level map) and errors get
/// `base` + `rel` as their field, as apiextensions converts them.
struct Validator<'a> {
    base: &'a str,
}

impl Validator<'_> {
    /// The error field for a kube-openapi path.
    fn field(&self, rel: &str) -> String {
        let rel = rel.strip_prefix('.').unwrap_or(rel);
        match (self.base.is_empty(), rel.is_empty()) {
            // A nil `field.Path` prints as `<nil>` upstream.
            (true, true) => "<nil>".to_string(),
            (true, false) => rel.to_string(),
            (false, true) => self.base.to_string(),
            (false, false) => format!("{}.{rel}", self.base),
        }
    }

    /// Errors that are not about one value (anyOf/oneOf/allOf/not) land on the base path with
    /// an empty value, as upstream's conversion of non-field errors.
    fn composite(&self, msg: String) -> FieldError {
        let f = if self.base.is_empty() { "<nil>".to_string() } else { self.base.to_string() };
        FieldError::invalid(f, "", msg)
    }

    fn invalid(&self, rel: &str, value: Value, msg: String) -> FieldError {
        FieldError::invalid(self.field(rel), value, msg)
    }

    /// kube-openapi's `SchemaValidator.Validate`: type, schema props (allOf/anyOf/oneOf/not),
    /// string, format, number, slice, enum, object validators, each where it applies.
    fn node(&self, s: &Value, x: &Value, rel: &str, errs: &mut FieldErrors) {
        if !s.is_object() {
            return;
        }
        if x.is_null() {
            // Only the type and enum validators look at null; a nullable null is accepted.
            if flag(s, "nullable") {
                return;
            }
            self.type_check(s, x, rel, errs);
            self.enum_check(s, x, rel, errs);
            return;
        }
        self.type_check(s, x, rel, errs);
        self.schema_props(s, x, rel, errs);
        if let Value::String(v) = x {
            self.string_checks(s, v, rel, errs);
            self.format_check(s, v, rel, errs);
        }
        if x.is_number() {
            self.number_checks(s, x, rel, errs);
        }
        if let Value::Array(a) = x {
            self.slice_checks(s, a, rel, errs);
        }
        self.enum_check(s, x, rel, errs);
        if let Value::Object(m) = x {
            self.object_checks(s, m, rel, errs);
        }
    }

    /// kube-openapi's `typeValidator`, including its format quirks: a non-string value under
    /// a string `format` fails as that format, and a string/array under a non-numeric type
    /// with a format passes the type check.
    fn type_check(&self, s: &Value, x: &Value, rel: &str, errs: &mut FieldErrors) {
        let types = effective_types(s);
        let format = effective_format(s);
        if types.is_empty() && format.is_empty() {
            return;
        }
        let has = |t: &str| types.iter().any(|x| x == t);
        let type_err = |expected: &str, actual: &str| {
            self.invalid(rel, Value::String(actual.into()), format!("{rel} in body must be of type {expected}: {actual:?}"))
        };
        if x.is_null() {
            if !types.is_empty() && !has("null") && !flag(s, "nullable") {
                errs.push(type_err(&types.join(","), "null"));
            }
            return;
        }
        let sch_type = json_type(x);
        let data_format = match sch_type {
            "integer" => "int64",
            "number" => "float64",
            _ => "",
        };
        let is_float_int = sch_type == "number" && is_integral(x) && has("integer");
        let is_int_float = sch_type == "integer" && has("number");
        let str_or_slice = x.is_string() || x.is_array();
        if !(str_or_slice || format.is_empty() || has(sch_type) || data_format == format || is_float_int || is_int_float) {
            errs.push(type_err(format, data_format));
            return;
        }
        if str_or_slice && !(has("number") || has("integer") || format.is_empty()) {
            return;
        }
        if !(has(sch_type) || is_float_int || is_int_float) {
            errs.push(type_err(&types.join(","), sch_type));
        }
    }

    /// anyOf / oneOf / allOf / not, with kube-openapi's messages; the best failing alternative's
    /// errors are reported along (here: the one with the fewest errors).
    fn schema_props(&self, s: &Value, x: &Value, rel: &str, errs: &mut FieldErrors) {
        let run = |sub: &Value| {
            let mut e = Vec::new();
            self.node(sub, x, rel, &mut e);
            e
        };
        if let Some(any_of) = s.get("anyOf").and_then(Value::as_array).filter(|a| !a.is_empty()) {
            let mut best: Option<FieldErrors> = None;
            let mut ok = false;
            for sub in any_of {
                let e = run(sub);
                if e.is_empty() {
                    ok = true;
                    break;
                }
                if best.as_ref().is_none_or(|b| e.len() < b.len()) {
                    best = Some(e);
                }
            }
            if !ok {
                errs.push(self.composite(format!("{rel:?} must validate at least one schema (anyOf)")));
                errs.extend(best.unwrap_or_default());
            }
        }
        if let Some(one_of) = s.get("oneOf").and_then(Value::as_array).filter(|a| !a.is_empty()) {
            let mut best: Option<FieldErrors> = None;
            let mut valid = 0;
            for sub in one_of {
                let e = run(sub);
                if e.is_empty() {
                    valid += 1;
                    best = None;
                    continue;
                }
                if valid == 0 && best.as_ref().is_none_or(|b| e.len() < b.len()) {
                    best = Some(e);
                }
            }
            if valid != 1 {
                let extra = if valid == 0 { "Found none valid".to_string() } else { format!("Found {valid} valid alternatives") };
                errs.push(self.composite(format!("{rel:?} must validate one and only one schema (oneOf). {extra}")));
                errs.extend(best.unwrap_or_default());
            }
        }
        if let Some(all_of) = s.get("allOf").and_then(Value::as_array).filter(|a| !a.is_empty()) {
            let mut valid = 0;
            let mut sub_errs = Vec::new();
            for sub in all_of {
                let e = run(sub);
                if e.is_empty() {
                    valid += 1;
                }
                sub_errs.extend(e);
            }
            errs.extend(sub_errs);
            if valid != all_of.len() {
                let extra = if valid == 0 { ". None validated" } else { "" };
                errs.push(self.composite(format!("{rel:?} must validate all the schemas (allOf){extra}")));
            }
        }
        if let Some(not) = s.get("not").filter(|v| v.is_object()) {
            if run(not).is_empty() {
                errs.push(self.composite(format!("{rel:?} must not validate the schema (not)")));
            }
        }
    }

    /// maxLength, minLength, pattern: the first failure only, as kube-openapi.
    fn string_checks(&self, s: &Value, v: &str, rel: &str, errs: &mut FieldErrors) {
        let len = v.chars().count() as u64;
        if let Some(max) = s.get("maxLength").and_then(Value::as_u64) {
            if len > max {
                let unit = if max == 1 { "byte" } else { "bytes" };
                errs.push(FieldError {
                    kind: ErrorKind::TooLong,
                    field: self.field(rel),
                    value: None,
                    detail: format!("may not be more than {max} {unit}"),
                });
                return;
            }
        }
        if let Some(min) = s.get("minLength").and_then(Value::as_u64) {
            if len < min {
                errs.push(self.invalid(rel, Value::String(v.into()), format!("{rel} in body should be at least {min} chars long")));
                return;
            }
        }
        let pattern = str_of(s, "pattern");
        if !pattern.is_empty() {
            match compile(pattern) {
                Ok(re) if re.is_match(v) => {}
                Ok(_) => errs.push(self.invalid(rel, Value::String(v.into()), format!("{rel} in body should match '{pattern}'"))),
                Err(e) => errs.push(self.invalid(
                    rel,
                    Value::String(v.into()),
                    format!("{rel} in body should match '{pattern}, but pattern is invalid: {e}'"),
                )),
            }
        }
    }

    /// Supported string formats (light checks of the common ones).
    fn format_check(&self, s: &Value, v: &str, rel: &str, errs: &mut FieldErrors) {
        let format = effective_format(s);
        if format.is_empty() || format_ok(format, v) {
            return;
        }
        errs.push(self.invalid(rel, Value::String(v.into()), format!("{rel} in body must be of type {format}: {v:?}")));
    }

    /// multipleOf, minimum, maximum (with OpenAPI v3.0 boolean exclusive bounds). Integers are
    /// compared as integers (bounds truncated, as kube-openapi's native-type checks).
    fn number_checks(&self, s: &Value, x: &Value, rel: &str, errs: &mut FieldErrors) {
        let int = x.as_i64();
        let f = x.as_f64().unwrap_or_default();
        let bound_text = |b: f64| if int.is_some() { format!("{}", b as i64) } else { go_float(b) };
        if let Some(factor) = s.get("multipleOf").and_then(Value::as_f64) {
            if factor <= 0.0 {
                errs.push(self.invalid(rel, x.clone(), format!("factor MultipleOf declared for {rel} must be positive: {}", go_float(factor))));
            } else {
                let bad = match int {
                    Some(i) if factor.fract() == 0.0 => i % (factor as i64) != 0,
                    _ => {
                        let m = if factor < 1.0 { 1.0 / factor * f } else { f / factor };
                        m.fract() != 0.0
                    }
                };
                if bad {
                    errs.push(self.invalid(rel, x.clone(), format!("{rel} in body should be a multiple of {}", bound_text(factor))));
                }
            }
        }
        if let Some(min) = s.get("minimum").and_then(Value::as_f64) {
            let excl = flag(s, "exclusiveMinimum");
            let bad = match int {
                Some(i) => (!excl && i < min as i64) || (excl && i <= min as i64),
                None => (!excl && f < min) || (excl && f <= min),
            };
            if bad {
                let rule = if excl { "greater than" } else { "greater than or equal to" };
                errs.push(self.invalid(rel, x.clone(), format!("{rel} in body should be {rule} {}", bound_text(min))));
            }
        }
        if let Some(max) = s.get("maximum").and_then(Value::as_f64) {
            let excl = flag(s, "exclusiveMaximum");
            let bad = match int {
                Some(i) => (!excl && i > max as i64) || (excl && i >= max as i64),
                None => (!excl && f > max) || (excl && f >= max),
            };
            if bad {
                let rule = if excl { "less than" } else { "less than or equal to" };
                errs.push(self.invalid(rel, x.clone(), format!("{rel} in body should be {rule} {}", bound_text(max))));
            }
        }
    }

    /// items, minItems, maxItems, uniqueItems.
    fn slice_checks(&self, s: &Value, a: &[Value], rel: &str, errs: &mut FieldErrors) {
        if let Some(items) = items_schema(s) {
            for (i, v) in a.iter().enumerate() {
                self.node(items, v, &format!("{rel}[{i}]"), errs);
            }
        }
        let size = a.len() as u64;
        if let Some(min) = s.get("minItems").and_then(Value::as_u64) {
            if size < min {
                errs.push(self.invalid(rel, size.into(), format!("{rel} in body should have at least {min} items")));
            }
        }
        if let Some(max) = s.get("maxItems").and_then(Value::as_u64) {
            if size > max {
                errs.push(too_many(self.field(rel), size, max));
            }
        }
        if flag(s, "uniqueItems") && a.iter().enumerate().any(|(i, v)| a[..i].contains(v)) {
            errs.push(self.invalid(rel, Value::String(String::new()), format!("{rel} in body shouldn't contain duplicates")));
        }
    }

    /// `enum`: `Unsupported value` listing the allowed values (strings bare, others as JSON).
    fn enum_check(&self, s: &Value, x: &Value, rel: &str, errs: &mut FieldErrors) {
        let Some(values) = s.get("enum").and_then(Value::as_array).filter(|a| !a.is_empty()) else { return };
        if values.iter().any(|v| enum_eq(v, x)) {
            return;
        }
        let shown: Vec<String> = values.iter().map(|v| v.as_str().map(String::from).unwrap_or_else(|| v.to_string())).collect();
        let refs: Vec<&str> = shown.iter().map(String::as_str).collect();
        errs.push(FieldError::not_supported(self.field(rel), x.clone(), &refs));
    }

    /// min/maxProperties (either ends the object's checks), additionalProperties,
    /// properties, required.
    fn object_checks(&self, s: &Value, m: &Map<String, Value>, rel: &str, errs: &mut FieldErrors) {
        let n = m.len() as u64;
        if let Some(min) = s.get("minProperties").and_then(Value::as_u64) {
            if n < min {
                errs.push(self.invalid(rel, n.into(), format!("{rel} in body should have at least {min} properties")));
                return;
            }
        }
        if let Some(max) = s.get("maxProperties").and_then(Value::as_u64) {
            if n > max {
                errs.push(too_many(self.field(rel), n, max));
                return;
            }
        }
        let properties = props(s);
        let declared = |k: &str| properties.is_some_and(|p| p.contains_key(k));
        match s.get("additionalProperties") {
            Some(Value::Bool(false)) => {
                for k in m.keys().filter(|k| !declared(k)) {
                    errs.push(self.invalid(rel, Value::String(k.clone()), format!("{rel}.{k} in body is a forbidden property")));
                }
            }
            Some(ap @ Value::Object(_)) => {
                for (k, v) in m.iter().filter(|(k, _)| !declared(k)) {
                    self.node(ap, v, &format!("{rel}.{k}"), errs);
                }
            }
            _ => {}
        }
        if let Some(p) = properties {
            for (name, ps) in p {
                if let Some(v) = m.get(name) {
                    self.node(ps, v, &child(rel, name), errs);
                }
            }
        }
        if let Some(req) = s.get("required").and_then(Value::as_array) {
            for k in req.iter().filter_map(Value::as_str) {
                if !m.contains_key(k) {
                    errs.push(FieldError::required(self.field(&format!("{rel}.{k}")), ""));
                }
            }
        }
    }
}

/// Upstream's `field.TooMany`: `Too many: 3: must have at most 2 items`.
fn too_many(field: String, actual: u64, max: u64) -> FieldError {
    let unit = if max == 1 { "item" } else { "items" };
    FieldError { kind: ErrorKind::TooMany, field, value: Some(actual.into()), detail: format!("must have at most {max} {unit}") }
}

/// Light checks of the string formats apiextensions supports; formats without a cheap
/// faithful check (isbn, creditcard, password) accept anything.
fn format_ok(format: &str, v: &str) -> bool {
    let re = |p: &str| compile(p).map(|r| r.is_match(v)).unwrap_or(true);
    match format.replace('-', "").as_str() {
        "datetime" => re(r"(?i)^\d{4}-\d{2}-\d{2}[t ]\d{2}:\d{2}(:\d{2}(\.\d+)?)?(z|[+-]\d{2}:?\d{2})?$") && date_ok(&v[..10.min(v.len())]),
        "date" => re(r"^\d{4}-\d{2}-\d{2}$") && date_ok(v),
        "byte" => v.len().checked_rem(4) == Some(0) && re(r"^[A-Za-z0-9+/]*={0,2}$"),
        "uuid" => re(r"(?i)^[0-9a-f]{8}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{12}$"),
        "uuid3" => re(r"(?i)^[0-9a-f]{8}-[0-9a-f]{4}-3[0-9a-f]{3}-[0-9a-f]{4}-[0-9a-f]{12}$"),
        "uuid4" => re(r"(?i)^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$"),
        "uuid5" => re(r"(?i)^[0-9a-f]{8}-[0-9a-f]{4}-5[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$"),
        "ipv4" => v.parse::<std::net::Ipv4Addr>().is_ok(),
        "ipv6" => v.parse::<std::net::Ipv6Addr>().is_ok(),
        "cidr" => v.split_once('/').is_some_and(|(ip, bits)| {
            let max = if ip.parse::<std::net::Ipv4Addr>().is_ok() {
                32
            } else if ip.parse::<std::net::Ipv6Addr>().is_ok() {
                128
            } else {
                return false;
            };
            bits.parse::<u8>().is_ok_and(|b| b <= max)
        }),
        "mac" => re(r"(?i)^([0-9a-f]{2}[:-]){5}[0-9a-f]{2}$|^([0-9a-f]{2}[:-]){7}[0-9a-f]{2}$|^([0-9a-f]{4}\.){2}[0-9a-f]{4}$"),
        "hostname" => v.len() <= 255 && re(r"(?i)^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?(\.[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?)*\.?$"),
        "email" => re(r"^[^@\s]+@[^@\s]+$"),
        "uri" => re(r"^([a-zA-Z][a-zA-Z0-9+.-]*:|/)\S*$"),
        "duration" => re(r"^[-+]?(\d+(\.\d*)?|\.\d+)\s*[a-zA-Zµμ]+(\s*(\d+(\.\d*)?|\.\d+)\s*[a-zA-Zµμ]+)*$") || v == "0",
        "hexcolor" => re(r"^#?([0-9a-fA-F]{3}|[0-9a-fA-F]{6})$"),
        "rgbcolor" => re(r"^rgb\(\s*\d{1,3}%?\s*,\s*\d{1,3}%?\s*,\s*\d{1,3}%?\s*\)$"),
        "bsonobjectid" => re(r"^[0-9a-fA-F]{24}$"),
        "ssn" => re(r"^\d{3}[- ]?\d{2}[- ]?\d{4}$"),
        _ => true,
    }
}

/// Whether `YYYY-MM-DD` names a real calendar day.
fn date_ok(d: &str) -> bool {
    let mut it = d.split('-').map(|p| p.parse::<u32>().ok());
    let (Some(Some(y)), Some(Some(m)), Some(Some(day))) = (it.next(), it.next(), it.next()) else { return false };
    let leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    let days = match m {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if leap => 29,
        2 => 28,
        _ => return false,
    };
    (1..=days).contains(&day)
}

/// The checks upstream runs beside kube-openapi: `apiVersion`/`kind` of embedded resources
/// (`objectmeta.Validate`) and duplicates in set/map lists (`ValidateListSetsAndMaps`).
/// Paths use upstream's `Key` notation for map entries (`spec.labels[a]`).
fn k8s_checks(s: &Value, x: &Value, path: &str, resource_root: bool, errs: &mut FieldErrors) {
    if !s.is_object() {
        return;
    }
    let embedded = flag(s, EMBEDDED);
    match x {
        Value::Object(m) => {
            if embedded && !resource_root {
                embedded_type_meta(m, path, errs);
            }
            for (k, v) in m {
                if embedded && META_FIELDS.contains(&k.as_str()) {
                    continue;
                }
                if let Some(ps) = props(s).and_then(|p| p.get(k)) {
                    k8s_checks(ps, v, &child(path, k), false, errs);
                } else if let Some(ap) = additional_schema(s) {
                    k8s_checks(ap, v, &format!("{path}[{k}]"), false, errs);
                }
            }
        }
        Value::Array(a) => {
            match str_of(s, LIST_TYPE) {
                "set" => {
                    for (i, v) in a.iter().enumerate() {
                        if a[..i].contains(v) {
                            errs.push(FieldError::duplicate(format!("{path}[{i}]"), v.clone()));
                        }
                    }
                }
                "map" => list_map_duplicates(s, a, path, errs),
                _ => {}
            }
            if let Some(items) = items_schema(s) {
                for (i, v) in a.iter().enumerate() {
                    k8s_checks(items, v, &format!("{path}[{i}]"), false, errs);
                }
            }
        }
        _ => {}
    }
}

/// `apiVersion` and `kind` of an embedded resource must be set and well-formed.
fn embedded_type_meta(m: &Map<String, Value>, path: &str, errs: &mut FieldErrors) {
    let api_version = m.get("apiVersion").and_then(Value::as_str).unwrap_or_default();
    if api_version.is_empty() {
        errs.push(FieldError::required(child(path, "apiVersion"), "must not be empty"));
    } else if api_version.matches('/').count() > 1 {
        errs.push(FieldError::invalid(child(path, "apiVersion"), api_version, format!("unexpected GroupVersion string: {api_version}")));
    }
    let kind = m.get("kind").and_then(Value::as_str).unwrap_or_default();
    if kind.is_empty() {
        errs.push(FieldError::required(child(path, "kind"), "must not be empty"));
    } else {
        let msgs = crate::validation::dns1035_label(&kind.to_lowercase());
        if !msgs.is_empty() {
            errs.push(FieldError::invalid(child(path, "kind"), kind, format!("may have mixed case, but should otherwise match: {}", msgs.join(","))));
        }
    }
}

/// Duplicate keys in an `x-kubernetes-list-type: map` list; absent keys take the item
/// schema's default.
fn list_map_duplicates(s: &Value, a: &[Value], path: &str, errs: &mut FieldErrors) {
    if let Some((i, x)) = a.iter().enumerate().find(|(_, x)| !x.is_null() && !x.is_object()) {
        errs.push(FieldError::invalid(format!("{path}[{i}]"), x.clone(), "must be an object for an array of list-type map"));
        return;
    }
    let keys: Vec<&str> = s.get(LIST_MAP_KEYS).and_then(Value::as_array).map(|k| k.iter().filter_map(Value::as_str).collect()).unwrap_or_default();
    let item_props = items_schema(s).and_then(props);
    let mut seen: Vec<Value> = Vec::new();
    for (i, x) in a.iter().enumerate() {
        if x.is_null() {
            continue;
        }
        let mut key = Map::new();
        for k in &keys {
            let v = x.get(*k).cloned().or_else(|| item_props.and_then(|p| p.get(*k)).and_then(|p| p.get("default")).cloned());
            if let Some(v) = v {
                key.insert(k.to_string(), v);
            }
        }
        let key = Value::Object(key);
        if seen.contains(&key) {
            errs.push(FieldError::duplicate(format!("{path}[{i}]"), key));
        } else {
            seen.push(key);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Pruning

/// Removes fields the schema does not specify, at every level, except below
/// `x-kubernetes-preserve-unknown-fields: true` (where specified properties are still
/// pruned). At the root and in embedded resources `apiVersion`, `kind` and `metadata` are
/// kept as they are.
pub fn prune(schema: &Value, obj: &mut Value) {
    prune_collect(schema, obj);
}

/// [`prune`], returning what was removed as upstream reports unknown fields for
/// `fieldValidation` (`unknown field "spec.foo"`), sorted.
pub fn prune_collect(schema: &Value, obj: &mut Value) -> Vec<String> {
    let mut paths = Vec::new();
    let empty = Value::Object(Map::new());
    let root = if schema.is_object() { schema } else { &empty };
    // The root is a resource: treated as embedded so its type and object meta survive.
    prune_node(Some(root), obj, "", true, &mut paths);
    paths.sort();
    paths.into_iter().map(|p| format!("unknown field {p:?}")).collect()
}

/// Upstream's `prune`; `resource_root` makes the node behave as an embedded resource.
fn prune_node(s: Option<&Value>, x: &mut Value, path: &str, resource_root: bool, unknown: &mut Vec<String>) {
    if let Some(s) = s {
        if flag(s, PRESERVE) {
            skip_prune(s, x, path, resource_root, unknown);
            return;
        }
    }
    match x {
        Value::Object(m) => {
            let Some(s) = s else {
                unknown.extend(m.keys().map(|k| child(path, k)));
                m.clear();
                return;
            };
            let embedded = resource_root || flag(s, EMBEDDED);
            let has_additional = s.get("additionalProperties").is_some_and(|v| !v.is_null());
            m.retain(|k, v| {
                if embedded && META_FIELDS.contains(&k.as_str()) {
                    return true;
                }
                if let Some(ps) = props(s).and_then(|p| p.get(k)) {
                    prune_node(Some(ps), v, &child(path, k), false, unknown);
                    true
                } else if has_additional {
                    // `additionalProperties: true|false` keeps the key but knows nothing below.
                    prune_node(additional_schema(s), v, &child(path, k), false, unknown);
                    true
                } else {
                    // Meta fields at the very root are not reported (they never reach here
                    // for a resource root, which is embedded).
                    if !META_FIELDS.contains(&k.as_str()) || !path.is_empty() {
                        unknown.push(child(path, k));
                    }
                    false
                }
            });
        }
        Value::Array(a) => {
            let items = s.and_then(items_schema);
            for (i, v) in a.iter_mut().enumerate() {
                prune_node(items, v, &format!("{path}[{i}]"), false, unknown);
            }
        }
        _ => {}
    }
}

/// Below `x-kubernetes-preserve-unknown-fields`: unknown keys stay, specified ones are
/// pruned by their own schema.
fn skip_prune(s: &Value, x: &mut Value, path: &str, resource_root: bool, unknown: &mut Vec<String>) {
    match x {
        Value::Object(m) => {
            let embedded = resource_root || flag(s, EMBEDDED);
            for (k, v) in m.iter_mut() {
                if embedded && META_FIELDS.contains(&k.as_str()) {
                    continue;
                }
                if let Some(ps) = props(s).and_then(|p| p.get(k)) {
                    prune_node(Some(ps), v, &child(path, k), false, unknown);
                } else if s.get("additionalProperties").is_some_and(|v| !v.is_null()) {
                    prune_node(additional_schema(s), v, &child(path, k), false, unknown);
                }
            }
        }
        Value::Array(a) => {
            if let Some(items) = items_schema(s) {
                for (i, v) in a.iter_mut().enumerate() {
                    skip_prune(items, v, &format!("{path}[{i}]"), false, unknown);
                }
            }
        }
        _ => {}
    }
}

// ---------------------------------------------------------------------------------------------
// Fields not declared in the schema (server-side apply's typed conversion)

/// `ObjectMeta`'s fields: what `metadata` of a resource (and of an embedded one) may hold.
const OBJECT_META_FIELDS: [&str; 15] = [
    "name", "generateName", "namespace", "selfLink", "uid", "resourceVersion", "generation", "creationTimestamp",
    "deletionTimestamp", "deletionGracePeriodSeconds", "labels", "annotations", "ownerReferences", "finalizers",
    "managedFields",
];

/// Every field of `obj` the schema does not declare, as upstream's server-side apply finds
/// them converting an apply configuration to its typed form (structured-merge-diff):
/// `.spec.foo: field not declared in schema`. Fields under
/// `x-kubernetes-preserve-unknown-fields` are declared; `metadata` of the resource and of
/// embedded resources is `ObjectMeta`.
pub fn undeclared_fields(schema: &Value, obj: &Value) -> Vec<String> {
    let mut out = Vec::new();
    let empty = Value::Object(Map::new());
    let root = if schema.is_object() { schema } else { &empty };
    undeclared_node(Some(root), obj, "", true, &mut out);
    out.into_iter().map(|p| format!("{p}: field not declared in schema")).collect()
}

fn undeclared_node(s: Option<&Value>, x: &Value, path: &str, resource: bool, out: &mut Vec<String>) {
    // No schema below here (an untyped leaf): nothing is checked.
    let Some(s) = s else { return };
    match x {
        Value::Object(m) => {
            let preserve = flag(s, PRESERVE);
            let embedded = resource || flag(s, EMBEDDED);
            for (k, v) in m {
                let p = format!("{path}.{k}");
                if embedded && (k == "apiVersion" || k == "kind") {
                    continue;
                }
                if embedded && k == "metadata" {
                    if let Value::Object(meta) = v {
                        out.extend(meta.keys().filter(|f| !OBJECT_META_FIELDS.contains(&f.as_str())).map(|f| format!("{p}.{f}")));
                    }
                    continue;
                }
                if let Some(ps) = props(s).and_then(|ps| ps.get(k)) {
                    undeclared_node(Some(ps), v, &p, false, out);
                } else if s.get("additionalProperties").is_some_and(|a| !a.is_null() && *a != Value::Bool(false)) {
                    undeclared_node(additional_schema(s), v, &p, false, out);
                } else if !preserve {
                    out.push(p);
                }
            }
        }
        Value::Array(a) => {
            for (i, v) in a.iter().enumerate() {
                undeclared_node(items_schema(s), v, &format!("{path}[{i}]"), false, out);
            }
        }
        _ => {}
    }
}

// ---------------------------------------------------------------------------------------------
// Defaulting

/// Applies schema `default`s top-down where fields are absent (also in array items and
/// map values), as upstream does when decoding a request and reading from storage. Applied
/// defaults are themselves defaulted further. Before that, nulls of non-nullable fields are
/// dropped (or replaced by their default), as upstream's
/// `PruneNonNullableNullsWithoutDefaults`: such a null means "unset".
pub fn apply_defaults(schema: &Value, obj: &mut Value) {
    drop_non_nullable_nulls(schema, obj);
    default_node(schema, obj);
}

fn non_nullable_null(x: &Value, s: Option<&Value>) -> bool {
    x.is_null() && s.is_some_and(|s| !flag(s, "nullable"))
}

fn default_node(s: &Value, x: &mut Value) {
    if !s.is_object() {
        return;
    }
    match x {
        Value::Object(m) => {
            if let Some(p) = props(s) {
                for (k, ps) in p {
                    let Some(d) = ps.get("default") else { continue };
                    if m.get(k).is_none_or(|v| non_nullable_null(v, Some(ps))) {
                        m.insert(k.clone(), d.clone());
                    }
                }
            }
            let ap = additional_schema(s);
            for (k, v) in m.iter_mut() {
                if let Some(ps) = props(s).and_then(|p| p.get(k)) {
                    default_node(ps, v);
                } else if let Some(ap) = ap {
                    match ap.get("default") {
                        Some(d) if non_nullable_null(v, Some(ap)) => *v = d.clone(),
                        _ => default_node(ap, v),
                    }
                }
            }
        }
        Value::Array(a) => {
            let Some(items) = items_schema(s) else { return };
            for v in a.iter_mut() {
                match items.get("default") {
                    Some(d) if non_nullable_null(v, Some(items)) => *v = d.clone(),
                    _ => default_node(items, v),
                }
            }
        }
        _ => {}
    }
}

fn drop_non_nullable_nulls(s: &Value, x: &mut Value) {
    match x {
        Value::Object(m) => {
            m.retain(|k, v| {
                let sub = props(s).and_then(|p| p.get(k)).or_else(|| additional_schema(s));
                let Some(sub) = sub else { return true };
                if v.is_null() && !flag(sub, "nullable") && sub.get("default").is_none() {
                    return false;
                }
                drop_non_nullable_nulls(sub, v);
                true
            });
        }
        Value::Array(a) => {
            if let Some(items) = items_schema(s) {
                a.iter_mut().for_each(|v| drop_non_nullable_nulls(items, v));
            }
        }
        _ => {}
    }
}

// ---------------------------------------------------------------------------------------------
// Schema checks at CRD validation

/// The checks upstream's CRD validation applies to a version's `openAPIV3Schema`, with
/// `path` the schema's field path (`spec.versions[0].schema.openAPIV3Schema`). In order:
///
/// 1. the OpenAPI subset (`ValidateCustomResourceDefinitionOpenAPISchema`): `type` one of
///    array/boolean/integer/number/object/string (never `null`); no `$ref`, `id`,
///    `definitions`, `dependencies`, `patternProperties`, `additionalItems`, `items` arrays;
///    `uniqueItems` not true; `properties` and `additionalProperties` mutually exclusive;
///    no defaults in top-level `apiVersion`/`kind`/`metadata`;
///    `x-kubernetes-preserve-unknown-fields` only true; map/list type extensions consistent
///    (`x-kubernetes-list-type` on arrays with atomic set items, map keys that are required
///    or defaulted scalar properties, non-nullable items); `x-kubernetes-validations` rules
///    non-empty (CEL itself is not compiled); the root not `nullable`;
/// 2. structural invariants (`ValidateStructural`, messages sorted as upstream): a `type`
///    everywhere except under `x-kubernetes-int-or-string`/`x-kubernetes-preserve-unknown-fields`,
///    `object` at the root, `items` for arrays, no `additionalProperties` at the root or on
///    embedded resources, root `metadata` restricting only `name`/`generateName`, embedded
///    resources of type object with properties (or preserving unknown fields), value
///    validations (allOf/anyOf/oneOf/not) without types, defaults, descriptions, nullable or
///    extensions and only naming fields the schema specifies, `pattern`s that compile;
/// 3. when the schema is structural: each `default` is pruned (`must not have unknown
///    fields`) and validates against its own schema.
pub fn structural_errors(schema: &Value, path: &str) -> FieldErrors {
    let mut errs = Vec::new();
    if flag(schema, "nullable") {
        errs.push(FieldError::forbidden(child(path, "nullable"), "nullable cannot be true at the root"));
    }
    api_checks(schema, path, &ApiCtx { allow_defaults: true, reason: String::new(), inside_meta: false }, true, &mut errs);

    let mut structural = Vec::new();
    structural_invariants(schema, Level::Root, path, &mut structural);
    structural_completeness(schema, path, &mut structural);
    structural.sort_by_key(|e| e.to_string());
    let is_structural = structural.is_empty();
    errs.extend(structural);

    if is_structural {
        default_errors(schema, path, true, false, &mut errs);
    }
    errs
}

/// Context of the OpenAPI-subset walk: whether defaults are allowed here (and why not) and
/// whether we are inside a resource's type or object meta.
#[derive(Clone)]
struct ApiCtx {
    allow_defaults: bool,
    reason: String,
    inside_meta: bool,
}

impl ApiCtx {
    fn forbid_defaults(&self, reason: String) -> ApiCtx {
        ApiCtx { allow_defaults: false, reason, ..self.clone() }
    }
}

fn api_checks(s: &Value, path: &str, ctx: &ApiCtx, is_root: bool, errs: &mut FieldErrors) {
    let Some(obj) = s.as_object() else { return };
    let ty = own_type(s);

    // specStandardValidatorV3
    if !ty.is_empty() && !OPENAPI_TYPES.contains(&ty) {
        errs.push(FieldError::not_supported(child(path, "type"), ty, &OPENAPI_TYPES));
    }
    if obj.contains_key("default") && !ctx.allow_defaults {
        let detail = if ctx.reason.is_empty() { "must not be set".to_string() } else { format!("must not be set {}", ctx.reason) };
        errs.push(FieldError::forbidden(child(path, "default"), detail));
    }
    if !str_of(s, "id").is_empty() {
        errs.push(FieldError::forbidden(child(path, "id"), "id is not supported"));
    }
    if obj.contains_key("additionalItems") {
        errs.push(FieldError::forbidden(child(path, "additionalItems"), "additionalItems is not supported"));
    }
    if obj.get("patternProperties").and_then(Value::as_object).is_some_and(|m| !m.is_empty()) {
        errs.push(FieldError::forbidden(child(path, "patternProperties"), "patternProperties is not supported"));
    }
    if obj.get("definitions").and_then(Value::as_object).is_some_and(|m| !m.is_empty()) {
        errs.push(FieldError::forbidden(child(path, "definitions"), "definitions is not supported"));
    }
    if obj.contains_key("dependencies") {
        errs.push(FieldError::forbidden(child(path, "dependencies"), "dependencies is not supported"));
    }
    if obj.contains_key("$ref") {
        errs.push(FieldError::forbidden(child(path, "$ref"), "$ref is not supported"));
    }
    if ty == "null" {
        errs.push(FieldError::forbidden(child(path, "type"), "type cannot be set to null, use nullable as an alternative"));
    }
    if obj.get("items").is_some_and(Value::is_array) {
        errs.push(FieldError::forbidden(child(path, "items"), "items must be a schema object and not an array"));
    }
    if ctx.inside_meta && flag(s, EMBEDDED) {
        errs.push(FieldError::forbidden(child(path, EMBEDDED), "must not be used inside of resource meta"));
    }

    if flag(s, "uniqueItems") {
        errs.push(FieldError::forbidden(child(path, "uniqueItems"), "uniqueItems cannot be set to true since the runtime complexity becomes quadratic"));
    }

    let has_props = props(s).is_some_and(|p| !p.is_empty());
    if let Some(ap) = obj.get("additionalProperties").filter(|v| !v.is_null()) {
        if has_props && (ap == &Value::Bool(false) || ap.is_object()) {
            errs.push(FieldError::forbidden(child(path, "additionalProperties"), "additionalProperties and properties are mutual exclusive"));
        }
        let sub = if ctx.inside_meta {
            // pruning metadata keys without a value to look at would be ambiguous
            ctx.forbid_defaults("inside additionalProperties applying to object metadata".into())
        } else {
            ctx.clone()
        };
        api_checks(ap, &child(path, "additionalProperties"), &sub, false, errs);
    }

    if let Some(p) = props(s) {
        for (name, ps) in p {
            let mut sub = ctx.clone();
            if (is_root || flag(s, EMBEDDED)) && META_FIELDS.contains(&name.as_str()) {
                sub.inside_meta = true;
                if is_root {
                    sub = sub.forbid_defaults(format!("in top-level {name}"));
                }
            }
            api_checks(ps, &format!("{path}.properties[{name}]"), &sub, false, errs);
        }
    }

    if let Some(not) = obj.get("not") {
        api_checks(not, &child(path, "not"), ctx, false, errs);
    }
    for key in ["allOf", "oneOf", "anyOf"] {
        if let Some(subs) = obj.get(key).and_then(Value::as_array) {
            for (i, sub) in subs.iter().enumerate() {
                api_checks(sub, &format!("{path}.{key}[{i}]"), ctx, false, errs);
            }
        }
    }
    if let Some(items) = obj.get("items") {
        match items {
            Value::Array(list) => {
                for (i, sub) in list.iter().enumerate() {
                    api_checks(sub, &format!("{path}.items[{i}]"), ctx, false, errs);
                }
            }
            other => api_checks(other, &child(path, "items"), ctx, false, errs),
        }
    }

    if obj.get(PRESERVE) == Some(&Value::Bool(false)) {
        errs.push(FieldError::invalid(child(path, PRESERVE), false, "must be true or undefined"));
    }

    if let Some(mt) = obj.get(MAP_TYPE).filter(|v| !v.is_null()) {
        if ty != "object" {
            if ty.is_empty() {
                errs.push(FieldError::required(child(path, "type"), "must be object if x-kubernetes-map-type is specified"));
            } else {
                errs.push(FieldError::invalid(child(path, "type"), ty, "must be object if x-kubernetes-map-type is specified"));
            }
        }
        let mt = mt.as_str().unwrap_or_default();
        if mt != "atomic" && mt != "granular" {
            errs.push(FieldError::not_supported(child(path, MAP_TYPE), mt, &["atomic", "granular"]));
        }
    }

    list_type_checks(s, path, errs);
    validations_checks(s, path, errs);
    map_list_keys_map_set(s, path, errs);
}

/// `x-kubernetes-list-type` / `x-kubernetes-list-map-keys` consistency.
fn list_type_checks(s: &Value, path: &str, errs: &mut FieldErrors) {
    let ty = own_type(s);
    let list_type = s.get(LIST_TYPE).filter(|v| !v.is_null()).map(|v| v.as_str().unwrap_or_default());
    let items = items_schema(s);
    if let Some(lt) = list_type {
        if ty != "array" {
            if ty.is_empty() {
                errs.push(FieldError::required(child(path, "type"), "must be array if x-kubernetes-list-type is specified"));
            } else {
                errs.push(FieldError::invalid(child(path, "type"), ty, "must be array if x-kubernetes-list-type is specified"));
            }
        } else if lt == "set" {
            if let Some(is) = items {
                match own_type(is) {
                    "array" => {
                        if let Some(ilt) = is.get(LIST_TYPE).and_then(Value::as_str).filter(|t| *t != "atomic") {
                            errs.push(FieldError::invalid(
                                format!("{path}.items.{LIST_TYPE}"),
                                ilt,
                                "must be atomic as item of a list with x-kubernetes-list-type=set",
                            ));
                        }
                    }
                    "object" if str_of(is, MAP_TYPE) != "atomic" => {
                        errs.push(FieldError::invalid(
                            format!("{path}.items.{MAP_TYPE}"),
                            is.get(LIST_TYPE).cloned().unwrap_or(Value::Null),
                            "must be atomic as item of a list with x-kubernetes-list-type=set",
                        ));
                    }
                    _ => {}
                }
            }
        }
        if !matches!(lt, "atomic" | "set" | "map") {
            errs.push(FieldError::not_supported(child(path, LIST_TYPE), lt, &["atomic", "set", "map"]));
        }
    }

    let keys: Vec<&str> = s.get(LIST_MAP_KEYS).and_then(Value::as_array).map(|k| k.iter().filter_map(Value::as_str).collect()).unwrap_or_default();
    let keys_value = s.get(LIST_MAP_KEYS).cloned().unwrap_or(Value::Null);
    if !keys.is_empty() {
        match list_type {
            None => errs.push(FieldError::required(child(path, LIST_TYPE), "must be map if x-kubernetes-list-map-keys is non-empty")),
            Some(lt) if lt != "map" => {
                errs.push(FieldError::invalid(child(path, LIST_TYPE), lt, "must be map if x-kubernetes-list-map-keys is non-empty"))
            }
            _ => {}
        }
    }
    if list_type == Some("map") {
        if keys.is_empty() {
            errs.push(FieldError::required(child(path, LIST_MAP_KEYS), "must not be empty if x-kubernetes-list-type is map"));
        }
        match s.get("items") {
            None | Some(Value::Null) => errs.push(FieldError::required(child(path, "items"), "must have a schema if x-kubernetes-list-type is map")),
            Some(v @ Value::Array(_)) => {
                errs.push(FieldError::invalid(child(path, "items"), v.clone(), "must only have a single schema if x-kubernetes-list-type is map"))
            }
            Some(is) if own_type(is) != "object" => errs.push(FieldError::invalid(
                format!("{path}.items.type"),
                own_type(is),
                "must be object if parent array's x-kubernetes-list-type is map",
            )),
            Some(is) => {
                let mut seen = Vec::new();
                for k in &keys {
                    match props(is).and_then(|p| p.get(*k)) {
                        Some(ks) => {
                            if matches!(own_type(ks), "array" | "object") {
                                errs.push(FieldError::invalid(
                                    format!("{path}.items.properties[{k}].type"),
                                    own_type(is),
                                    "must be a scalar type if parent array's x-kubernetes-list-type is map",
                                ));
                            }
                        }
                        None => errs.push(FieldError::invalid(child(path, LIST_MAP_KEYS), keys_value.clone(), "entries must all be names of item properties")),
                    }
                    if seen.contains(k) {
                        errs.push(FieldError::invalid(child(path, LIST_MAP_KEYS), keys_value.clone(), "must not contain duplicate entries"));
                    }
                    seen.push(*k);
                }
            }
        }
    }
}

/// The static part of `x-kubernetes-validations` checks (rules are not compiled).
fn validations_checks(s: &Value, path: &str, errs: &mut FieldErrors) {
    let Some(rules) = s.get(VALIDATIONS).and_then(Value::as_array) else { return };
    for (i, rule) in rules.iter().enumerate() {
        let p = format!("{path}.{VALIDATIONS}[{i}]");
        let r = str_of(rule, "rule").trim();
        let raw_msg = str_of(rule, "message");
        let msg = raw_msg.trim();
        let newline = |t: &str| t.contains('\n') || t.contains('\r');
        if r.is_empty() {
            errs.push(FieldError::required(format!("{p}.rule"), "rule is not specified"));
        } else if !raw_msg.is_empty() && msg.is_empty() {
            errs.push(FieldError::invalid(format!("{p}.message"), raw_msg, "message must be non-empty if specified"));
        } else if newline(msg) {
            errs.push(FieldError::invalid(format!("{p}.message"), raw_msg, "message must not contain line breaks"));
        } else if newline(r) && msg.is_empty() {
            errs.push(FieldError::required(format!("{p}.message"), "message must be specified if rule contains line breaks"));
        }
    }
}

/// Items of set/map lists are not nullable; map keys are required or defaulted, not nullable.
fn map_list_keys_map_set(s: &Value, path: &str, errs: &mut FieldErrors) {
    let Some(items) = items_schema(s) else { return };
    let lt = str_of(s, LIST_TYPE);
    if lt != "set" && lt != "map" {
        return;
    }
    if flag(items, "nullable") {
        errs.push(FieldError::forbidden(format!("{path}.items.nullable"), format!("cannot be nullable when x-kubernetes-list-type is {lt}")));
    }
    if lt != "map" {
        return;
    }
    let required: Vec<&str> = items.get("required").and_then(Value::as_array).map(|r| r.iter().filter_map(Value::as_str).collect()).unwrap_or_default();
    for k in s.get(LIST_MAP_KEYS).and_then(Value::as_array).into_iter().flatten().filter_map(Value::as_str) {
        let Some(ks) = props(items).and_then(|p| p.get(k)) else { continue };
        if !required.contains(&k) && ks.get("default").is_none() {
            errs.push(FieldError::required(
                format!("{path}.items.properties[{k}].default"),
                "this property is in x-kubernetes-list-map-keys, so it must have a default or be a required property",
            ));
        }
        if flag(ks, "nullable") {
            errs.push(FieldError::forbidden(
                format!("{path}.items.properties[{k}].nullable"),
                "this property is in x-kubernetes-list-map-keys, so it cannot be nullable",
            ));
        }
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Level {
    Root,
    Item,
    Field,
}

/// `anyOf: [{type: integer}, {type: string}]`, the int-or-string shape value validations
/// may carry types in.
fn is_int_or_string_any_of(any_of: Option<&Value>) -> bool {
    any_of.and_then(Value::as_array).is_some_and(|a| {
        a.len() == 2 && a[0] == serde_json::json!({"type": "integer"}) && a[1] == serde_json::json!({"type": "string"})
    })
}

fn structural_invariants(s: &Value, lvl: Level, path: &str, errs: &mut FieldErrors) {
    let Some(obj) = s.as_object() else { return };
    let ty = own_type(s);
    let embedded = flag(s, EMBEDDED);
    let preserve = flag(s, PRESERVE);
    let int_or_string = flag(s, INT_OR_STRING);

    if ty == "array" && obj.get("items").is_none_or(Value::is_null) {
        errs.push(FieldError::required(child(path, "items"), "must be specified"));
    }
    if let Some(items) = items_schema(s) {
        structural_invariants(items, Level::Item, &child(path, "items"), errs);
    }
    if let Some(p) = props(s) {
        for (k, ps) in p {
            structural_invariants(ps, Level::Field, &format!("{path}.properties[{k}]"), errs);
        }
    }
    let ap = obj.get("additionalProperties").filter(|v| !v.is_null());
    if let Some(ap) = ap {
        if lvl == Level::Root {
            errs.push(FieldError::forbidden(child(path, "additionalProperties"), "must not be used at the root"));
        }
        if ap.is_object() {
            structural_invariants(ap, Level::Field, &child(path, "additionalProperties"), errs);
        }
    }
    if int_or_string && preserve {
        errs.push(FieldError::invalid(child(path, PRESERVE), true, "must be false if x-kubernetes-int-or-string is true"));
    }
    if int_or_string && embedded {
        errs.push(FieldError::invalid(child(path, EMBEDDED), true, "must be false if x-kubernetes-int-or-string is true"));
    }

    let skip_any_of = is_int_or_string_any_of(obj.get("anyOf"));
    let skip_first_all_of_any_of =
        obj.get("allOf").and_then(Value::as_array).and_then(|a| a.first()).is_some_and(|f| is_int_or_string_any_of(f.get("anyOf")));
    value_validation(s, skip_any_of, skip_first_all_of_any_of, path, errs);

    if embedded && ty != "object" {
        if ty.is_empty() {
            errs.push(FieldError::required(child(path, "type"), "must be object if x-kubernetes-embedded-resource is true"));
        } else {
            errs.push(FieldError::invalid(child(path, "type"), ty, "must be object if x-kubernetes-embedded-resource is true"));
        }
    } else if ty.is_empty() && !int_or_string && !preserve {
        let detail = match lvl {
            Level::Root => "must not be empty at the root",
            Level::Item => "must not be empty for specified array items",
            Level::Field => "must not be empty for specified object fields",
        };
        errs.push(FieldError::required(child(path, "type"), detail));
    }
    if embedded && ap.is_some() {
        errs.push(FieldError::forbidden(child(path, "additionalProperties"), "must not be used if x-kubernetes-embedded-resource is set"));
    }
    if lvl == Level::Root && !ty.is_empty() && ty != "object" {
        errs.push(FieldError::invalid(child(path, "type"), ty, "must be object at the root"));
    }

    let check_meta = lvl == Level::Root || embedded;
    let prop = |k: &str| props(s).and_then(|p| p.get(k));
    if check_meta {
        for (k, want) in [("kind", "string"), ("apiVersion", "string"), ("metadata", "object")] {
            if let Some(ps) = prop(k) {
                if own_type(ps) != want {
                    errs.push(FieldError::invalid(format!("{path}.properties[{k}].type"), own_type(ps), format!("must be {want}")));
                }
            }
        }
    }
    if let (Level::Root, Some(meta)) = (lvl, prop("metadata")) {
        if !root_metadata_ok(meta) {
            errs.push(FieldError::forbidden(
                format!("{path}.properties[metadata]"),
                "must not specify anything other than name and generateName, but metadata is implicitly specified",
            ));
        }
    }
    if embedded && !preserve && props(s).is_none_or(|p| p.is_empty()) {
        errs.push(FieldError::required(
            child(path, "properties"),
            "must not be empty if x-kubernetes-embedded-resource is true without x-kubernetes-preserve-unknown-fields",
        ));
    }
}

/// The root `metadata` schema may only give a type, a default (checked elsewhere) and
/// properties restricting `name` and/or `generateName`; keys structural schemas drop
/// (`example`, `externalDocs`) are ignored.
fn root_metadata_ok(meta: &Value) -> bool {
    let Some(m) = meta.as_object() else { return true };
    m.iter().all(|(k, v)| match k.as_str() {
        "type" | "default" | "example" | "externalDocs" => true,
        "properties" => v.as_object().is_none_or(|p| p.is_empty() || p.keys().all(|k| k == "name" || k == "generateName")),
        _ => v.is_null(),
    })
}

/// Value validations (allOf/anyOf/oneOf/not) and `pattern` of one schema node.
fn value_validation(s: &Value, skip_any_of: bool, skip_first_all_of_any_of: bool, path: &str, errs: &mut FieldErrors) {
    if !skip_any_of {
        for (i, v) in s.get("anyOf").and_then(Value::as_array).into_iter().flatten().enumerate() {
            nested_value_validation(v, false, &format!("{path}.anyOf[{i}]"), errs);
        }
    }
    for (i, v) in s.get("allOf").and_then(Value::as_array).into_iter().flatten().enumerate() {
        nested_value_validation(v, skip_first_all_of_any_of && i == 0, &format!("{path}.allOf[{i}]"), errs);
    }
    for (i, v) in s.get("oneOf").and_then(Value::as_array).into_iter().flatten().enumerate() {
        nested_value_validation(v, false, &format!("{path}.oneOf[{i}]"), errs);
    }
    if let Some(not) = s.get("not").filter(|v| v.is_object()) {
        nested_value_validation(not, false, &child(path, "not"), errs);
    }
    let pattern = str_of(s, "pattern");
    if !pattern.is_empty() {
        if let Err(e) = compile(pattern) {
            errs.push(FieldError::invalid(child(path, "pattern"), pattern, format!("must be a valid regular expression, but isn't: {e}")));
        }
    }
}

/// A schema under a logic junctor: value validations only.
fn nested_value_validation(v: &Value, skip_any_of: bool, path: &str, errs: &mut FieldErrors) {
    let Some(obj) = v.as_object() else { return };
    value_validation(v, skip_any_of, false, path, errs);
    if let Some(items) = items_schema(v) {
        nested_value_validation(items, false, &child(path, "items"), errs);
    }
    if let Some(p) = props(v) {
        for (k, ps) in p {
            nested_value_validation(ps, false, &format!("{path}.properties[{k}]"), errs);
        }
    }
    let set = |k: &str| obj.get(k).is_some_and(|x| !x.is_null());
    let non_empty_str = |k: &str| obj.get(k).and_then(Value::as_str).is_some_and(|x| !x.is_empty());
    if non_empty_str("type") {
        errs.push(FieldError::forbidden(child(path, "type"), "must be empty to be structural"));
    }
    if set("additionalProperties") {
        errs.push(FieldError::forbidden(child(path, "additionalProperties"), "must be undefined to be structural"));
    }
    if set("default") {
        errs.push(FieldError::forbidden(child(path, "default"), "must be undefined to be structural"));
    }
    if non_empty_str("title") {
        errs.push(FieldError::forbidden(child(path, "title"), "must be empty to be structural"));
    }
    if non_empty_str("description") {
        errs.push(FieldError::forbidden(child(path, "description"), "must be empty to be structural"));
    }
    if flag(v, "nullable") {
        errs.push(FieldError::forbidden(child(path, "nullable"), "must be false to be structural"));
    }
    for ext in [PRESERVE, EMBEDDED, INT_OR_STRING] {
        if flag(v, ext) {
            errs.push(FieldError::forbidden(child(path, ext), "must be false to be structural"));
        }
    }
    if obj.get(LIST_MAP_KEYS).and_then(Value::as_array).is_some_and(|a| !a.is_empty()) {
        errs.push(FieldError::forbidden(child(path, LIST_MAP_KEYS), "must be empty to be structural"));
    }
    if set(LIST_TYPE) {
        errs.push(FieldError::forbidden(child(path, LIST_TYPE), "must be undefined to be structural"));
    }
    if props(v).is_some_and(|p| p.contains_key("metadata")) {
        errs.push(FieldError::forbidden(format!("{path}.properties[metadata]"), "must not be specified in a nested context"));
    }
}

/// Every field or array a value validation names must be specified by the schema itself.
fn structural_completeness(s: &Value, path: &str, errs: &mut FieldErrors) {
    if !s.is_object() {
        return;
    }
    if let Some(items) = items_schema(s) {
        structural_completeness(items, &child(path, "items"), errs);
    }
    if let Some(p) = props(s) {
        for (k, ps) in p {
            structural_completeness(ps, &format!("{path}.properties[{k}]"), errs);
        }
    }
    junctor_completeness(s, Some(s), path, path, errs);
}

fn junctor_completeness(v: &Value, s: Option<&Value>, s_path: &str, v_path: &str, errs: &mut FieldErrors) {
    if let Some(not) = v.get("not").filter(|n| n.is_object()) {
        nested_completeness(not, s, s_path, &child(v_path, "not"), errs);
    }
    for key in ["allOf", "anyOf", "oneOf"] {
        for (i, sub) in v.get(key).and_then(Value::as_array).into_iter().flatten().enumerate() {
            nested_completeness(sub, s, s_path, &format!("{v_path}.{key}[{i}]"), errs);
        }
    }
}

fn nested_completeness(v: &Value, s: Option<&Value>, s_path: &str, v_path: &str, errs: &mut FieldErrors) {
    let Some(s) = s else {
        errs.push(FieldError::required(s_path, format!("because it is defined in {v_path}")));
        return;
    };
    junctor_completeness(v, Some(s), s_path, v_path, errs);
    if let Some(items) = items_schema(v) {
        nested_completeness(items, items_schema(s), &child(s_path, "items"), &child(v_path, "items"), errs);
    }
    if let Some(p) = props(v) {
        for (k, vf) in p {
            let vp = format!("{v_path}.properties[{k}]");
            match props(s).and_then(|sp| sp.get(k)) {
                Some(sf) => nested_completeness(vf, Some(sf), &format!("{s_path}.properties[{k}]"), &vp, errs),
                None => match additional_schema(s) {
                    Some(ap) => nested_completeness(vf, Some(ap), &child(s_path, "additionalProperties"), &vp, errs),
                    None => errs.push(FieldError::required(format!("{s_path}.properties[{k}]"), format!("because it is defined in {vp}"))),
                },
            }
        }
    }
}

/// Defaults must be pruned and valid against their schema (`ValidateDefaults`). Defaults
/// inside type/object meta are rejected earlier and not looked at here.
fn default_errors(s: &Value, path: &str, resource_root: bool, inside_meta: bool, errs: &mut FieldErrors) {
    if !s.is_object() {
        return;
    }
    if let (Some(d), false) = (s.get("default"), inside_meta) {
        let p = child(path, "default");
        let mut pruned = d.clone();
        prune_node(Some(s), &mut pruned, "", false, &mut Vec::new());
        if &pruned != d {
            errs.push(FieldError::invalid(&p, d.clone(), "must not have unknown fields"));
        }
        let mut sub = validate_at(s, d, &p);
        k8s_checks(s, d, &p, flag(s, EMBEDDED), &mut sub);
        errs.extend(sub);
    }
    let embedded = resource_root || flag(s, EMBEDDED);
    if let Some(items) = items_schema(s) {
        default_errors(items, &child(path, "items"), false, inside_meta, errs);
    }
    if let Some(p) = props(s) {
        for (k, ps) in p {
            let meta = inside_meta || (embedded && META_FIELDS.contains(&k.as_str()));
            default_errors(ps, &format!("{path}.properties[{k}]"), false, meta, errs);
        }
    }
    if let Some(ap) = additional_schema(s) {
        default_errors(ap, &child(path, "additionalProperties"), false, inside_meta, errs);
    }
}

// ---------------------------------------------------------------------------------------------
// List types for server-side apply

/// The list type of the array at `path` (field names from the schema root; a segment that
/// is an index, `[i]`, `*` or `-` steps into array items): `atomic` (also when unset),
/// `set` or `map` with its `x-kubernetes-list-map-keys`. `None` when the path leads nowhere
/// the schema specifies or not to an array.
pub fn list_type(schema: &Value, path: &[&str]) -> Option<(String, Vec<String>)> {
    let mut s = schema;
    for seg in path {
        let is_index = seg.parse::<usize>().is_ok() || *seg == "*" || *seg == "-" || (seg.starts_with('[') && seg.ends_with(']'));
        if is_index {
            s = items_schema(s)?;
            continue;
        }
        // Fields of array items may be named directly after the array.
        if own_type(s) == "array" {
            s = items_schema(s)?;
        }
        s = match props(s).and_then(|p| p.get(*seg)) {
            Some(ps) => ps,
            None => additional_schema(s)?,
        };
    }
    if own_type(s) != "array" {
        return None;
    }
    let lt = s.get(LIST_TYPE).and_then(Value::as_str).unwrap_or("atomic").to_string();
    let keys = s
        .get(LIST_MAP_KEYS)
        .and_then(Value::as_array)
        .map(|k| k.iter().filter_map(Value::as_str).map(String::from).collect())
        .unwrap_or_default();
    Some((lt, keys))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn msgs(errs: &FieldErrors) -> Vec<String> {
        errs.iter().map(|e| e.to_string()).collect()
    }

    /// A CR schema with `spec` holding the given properties.
    fn spec_schema(properties: Value) -> Value {
        json!({"type": "object", "properties": {"spec": {"type": "object", "properties": properties}}})
    }

    fn check(properties: Value, spec: Value) -> Vec<String> {
        msgs(&validate(&spec_schema(properties), &json!({"apiVersion": "a/v1", "kind": "K", "metadata": {"name": "x"}, "spec": spec})))
    }

    #[test]
    fn undeclared_fields_as_server_side_apply_finds_them() {
        let schema = json!({"type": "object", "properties": {"spec": {
            "type": "object", "x-kubernetes-preserve-unknown-fields": true,
            "properties": {"foo": {"type": "string"}, "ports": {"type": "array", "items": {"type": "object", "properties": {"name": {"type": "string"}}}},
                "template": {"type": "object", "x-kubernetes-embedded-resource": true,
                    "properties": {"metadata": {"type": "object", "properties": {"name": {"type": "string"}}}, "spec": {"type": "object"}}}}}}});
        let obj = json!({
            "apiVersion": "g/v1", "kind": "K", "unknownField": 1,
            "metadata": {"name": "a", "unknownMeta": "x", "labels": {"a": "b"}},
            "spec": {"foo": "x", "unknown": 1, "ports": [{"name": "p", "port": 1}],
                "template": {"apiVersion": "v1", "apiversion": "v1", "metadata": {"name": "s", "unknownSubMeta": "x"}, "spec": {"x": 1}}},
        });
        let mut found = undeclared_fields(&schema, &obj);
        found.sort();
        assert_eq!(found, [
            ".metadata.unknownMeta: field not declared in schema",
            ".spec.ports[0].port: field not declared in schema",
            ".spec.template.apiversion: field not declared in schema",
            ".spec.template.metadata.unknownSubMeta: field not declared in schema",
            ".spec.template.spec.x: field not declared in schema",
            ".unknownField: field not declared in schema",
        ]);
        let open = json!({"type": "object", "x-kubernetes-preserve-unknown-fields": true});
        assert!(undeclared_fields(&open, &json!({"spec": {"a": 1}, "metadata": {"name": "a"}})).is_empty());
    }

    #[test]
    fn type_errors_match_upstream() {
        let p = json!({"replicas": {"type": "integer"}});
        assert_eq!(check(p.clone(), json!({"replicas": "three"})), [
            r#"spec.replicas: Invalid value: "string": spec.replicas in body must be of type integer: "string""#
        ]);
        assert!(check(p.clone(), json!({"replicas": 3})).is_empty());
        // kube-openapi accepts integral floats for integers, not fractional ones.
        assert!(check(p.clone(), json!({"replicas": 3.0})).is_empty());
        assert_eq!(check(p, json!({"replicas": 1.5})), [
            r#"spec.replicas: Invalid value: "number": spec.replicas in body must be of type integer: "number""#
        ]);
        let all = json!({
            "s": {"type": "string"}, "n": {"type": "number"}, "b": {"type": "boolean"},
            "a": {"type": "array", "items": {"type": "string"}}, "o": {"type": "object"}
        });
        assert!(check(all.clone(), json!({"s": "x", "n": 1, "b": true, "a": ["x"], "o": {}})).is_empty());
        assert!(check(all.clone(), json!({"n": 1.5})).is_empty());
        assert_eq!(check(all, json!({"s": 1, "b": "true", "a": {}, "o": []})), [
            r#"spec.a: Invalid value: "object": spec.a in body must be of type array: "object""#,
            r#"spec.b: Invalid value: "string": spec.b in body must be of type boolean: "string""#,
            r#"spec.o: Invalid value: "array": spec.o in body must be of type object: "array""#,
            r#"spec.s: Invalid value: "integer": spec.s in body must be of type string: "integer""#,
        ]);
    }

    #[test]
    fn null_and_nullable() {
        let p = json!({"a": {"type": "string"}, "b": {"type": "string", "nullable": true, "enum": ["x"]}});
        assert_eq!(check(p.clone(), json!({"a": null})), [r#"spec.a: Invalid value: "null": spec.a in body must be of type string: "null""#]);
        assert!(check(p, json!({"b": null})).is_empty());
    }

    #[test]
    fn enum_required_and_bounds() {
        let p = json!({
            "size": {"type": "string", "enum": ["small", "large"]},
            "count": {"type": "integer", "minimum": 1, "maximum": 10},
            "ratio": {"type": "number", "minimum": 0, "maximum": 1, "exclusiveMaximum": true},
            "level": {"type": "integer", "enum": [1, 2]},
        });
        let schema = json!({"type": "object", "properties": {"spec": {"type": "object", "required": ["name"], "properties": p}}});
        let errs = msgs(&validate(&schema, &json!({"spec": {"size": "huge", "count": 11, "ratio": 1, "level": 3}})));
        assert_eq!(errs, [
            r#"spec.count: Invalid value: 11: spec.count in body should be less than or equal to 10"#,
            r#"spec.level: Unsupported value: 3: supported values: "1", "2""#,
            r#"spec.ratio: Invalid value: 1: spec.ratio in body should be less than 1"#,
            r#"spec.size: Unsupported value: "huge": supported values: "small", "large""#,
            "spec.name: Required value",
        ]);
        let errs = msgs(&validate(&schema, &json!({"spec": {"name": "n", "count": 0, "ratio": 0.5, "level": 2.0}})));
        assert_eq!(errs, ["spec.count: Invalid value: 0: spec.count in body should be greater than or equal to 1"]);
        let p = json!({"x": {"type": "number", "exclusiveMinimum": true, "minimum": 0.5, "multipleOf": 0.25}});
        assert_eq!(check(p.clone(), json!({"x": 0.5})), ["spec.x: Invalid value: 0.5: spec.x in body should be greater than 0.5"]);
        assert_eq!(check(p, json!({"x": 0.6})), ["spec.x: Invalid value: 0.6: spec.x in body should be a multiple of 0.25"]);
        assert_eq!(check(json!({"x": {"type": "integer", "multipleOf": 5}}), json!({"x": 7})), [
            "spec.x: Invalid value: 7: spec.x in body should be a multiple of 5"
        ]);
    }

    #[test]
    fn strings() {
        let p = json!({"x": {"type": "string", "pattern": "^a+$", "minLength": 2, "maxLength": 4}});
        assert_eq!(check(p.clone(), json!({"x": "ab"})), [r#"spec.x: Invalid value: "ab": spec.x in body should match '^a+$'"#]);
        assert_eq!(check(p.clone(), json!({"x": "a"})), [r#"spec.x: Invalid value: "a": spec.x in body should be at least 2 chars long"#]);
        assert_eq!(check(p.clone(), json!({"x": "aaaaa"})), ["spec.x: Too long: may not be more than 4 bytes"]);
        assert!(check(p.clone(), json!({"x": "aaa"})).is_empty());
        // Lengths count characters, not bytes.
        assert!(check(json!({"x": {"type": "string", "maxLength": 2}}), json!({"x": "éé"})).is_empty());
    }

    #[test]
    fn formats() {
        let p = json!({
            "t": {"type": "string", "format": "date-time"},
            "d": {"type": "string", "format": "date"},
            "b": {"type": "string", "format": "byte"},
            "i": {"type": "integer", "format": "int32"},
            "l": {"type": "integer", "format": "int64"},
        });
        assert!(check(p.clone(), json!({"t": "2024-01-02T03:04:05Z", "d": "2024-02-29", "b": "aGVsbG8=", "i": 5, "l": 5000000000i64})).is_empty());
        assert_eq!(check(p.clone(), json!({"t": "yesterday", "d": "2023-02-29", "b": "abc"})), [
            r#"spec.b: Invalid value: "abc": spec.b in body must be of type byte: "abc""#,
            r#"spec.d: Invalid value: "2023-02-29": spec.d in body must be of type date: "2023-02-29""#,
            r#"spec.t: Invalid value: "yesterday": spec.t in body must be of type date-time: "yesterday""#,
        ]);
        // int32/int64 are stripped by apiextensions: no range check, only the type.
        assert!(check(p.clone(), json!({"i": 5000000000i64})).is_empty());
        assert_eq!(check(p.clone(), json!({"i": "5"})), [r#"spec.i: Invalid value: "string": spec.i in body must be of type integer: "string""#]);
        // kube-openapi reports a number under a string format as that format.
        assert_eq!(check(p, json!({"t": 5})), [r#"spec.t: Invalid value: "int64": spec.t in body must be of type date-time: "int64""#]);
        let ip = json!({"a": {"type": "string", "format": "ipv4"}, "u": {"type": "string", "format": "uuid"}});
        assert!(check(ip.clone(), json!({"a": "10.0.0.1", "u": "123e4567-e89b-12d3-a456-426614174000"})).is_empty());
        assert_eq!(check(ip, json!({"a": "10.0.0"})).len(), 1);
    }

    #[test]
    fn arrays_and_maps() {
        let p = json!({
            "items": {"type": "array", "minItems": 1, "maxItems": 2, "items": {
                "type": "object", "required": ["name"], "properties": {"name": {"type": "string"}}}},
            "labels": {"type": "object", "additionalProperties": {"type": "string"}, "maxProperties": 2},
            "few": {"type": "object", "minProperties": 1, "additionalProperties": {"type": "string"}},
            "closed": {"type": "object", "additionalProperties": false},
            "tags": {"type": "array", "uniqueItems": true, "items": {"type": "string"}},
        });
        assert_eq!(check(p.clone(), json!({"items": [{"name": 1}, {}], "labels": {"a": 1}})), [
            r#"spec.items[0].name: Invalid value: "integer": spec.items[0].name in body must be of type string: "integer""#,
            "spec.items[1].name: Required value",
            r#"spec.labels.a: Invalid value: "integer": spec.labels.a in body must be of type string: "integer""#,
        ]);
        assert_eq!(check(p.clone(), json!({"items": [], "labels": {"a": "1", "b": "2", "c": "3"}, "few": {}})), [
            r#"spec.few: Invalid value: 0: spec.few in body should have at least 1 properties"#,
            "spec.items: Invalid value: 0: spec.items in body should have at least 1 items",
            "spec.labels: Too many: 3: must have at most 2 items",
        ]);
        assert_eq!(check(p.clone(), json!({"items": [{"name": "a"}, {"name": "b"}, {"name": "c"}]})), [
            "spec.items: Too many: 3: must have at most 2 items"
        ]);
        assert_eq!(check(p.clone(), json!({"closed": {"x": 1}})), [
            r#"spec.closed: Invalid value: "x": spec.closed.x in body is a forbidden property"#
        ]);
        assert_eq!(check(p, json!({"tags": ["a", "a"]})), [r#"spec.tags: Invalid value: "": spec.tags in body shouldn't contain duplicates"#]);
    }

    #[test]
    fn int_or_string() {
        let p = json!({"port": {"x-kubernetes-int-or-string": true, "anyOf": [{"type": "integer"}, {"type": "string"}]}});
        assert!(check(p.clone(), json!({"port": 80})).is_empty());
        assert!(check(p.clone(), json!({"port": "http"})).is_empty());
        let errs = check(p, json!({"port": true}));
        assert_eq!(errs[0], r#"spec.port: Invalid value: "boolean": spec.port in body must be of type integer,string: "boolean""#);
        assert!(errs.contains(&r#"<nil>: Invalid value: "": "spec.port" must validate at least one schema (anyOf)"#.to_string()));
    }

    #[test]
    fn junctors() {
        let p = json!({"x": {"type": "object",
            "properties": {"a": {"type": "string"}, "b": {"type": "string"}},
            "oneOf": [{"required": ["a"]}, {"required": ["b"]}],
            "not": {"required": ["c"]},
        }});
        assert!(check(p.clone(), json!({"x": {"a": "1"}})).is_empty());
        assert_eq!(check(p.clone(), json!({"x": {"a": "1", "b": "2"}})), [
            r#"<nil>: Invalid value: "": "spec.x" must validate one and only one schema (oneOf). Found 2 valid alternatives"#
        ]);
        assert_eq!(check(p.clone(), json!({"x": {}})), [
            r#"<nil>: Invalid value: "": "spec.x" must validate one and only one schema (oneOf). Found none valid"#,
            "spec.x.a: Required value",
        ]);
        assert_eq!(check(p, json!({"x": {"a": "1", "c": 1}})), [r#"<nil>: Invalid value: "": "spec.x" must not validate the schema (not)"#]);
        let p = json!({"x": {"type": "integer", "allOf": [{"minimum": 1}, {"maximum": 5}]}});
        assert_eq!(check(p, json!({"x": 9})), [
            "spec.x: Invalid value: 9: spec.x in body should be less than or equal to 5",
            r#"<nil>: Invalid value: "": "spec.x" must validate all the schemas (allOf)"#,
        ]);
    }

    #[test]
    fn preserve_unknown_and_embedded() {
        let p = json!({
            "free": {"type": "object", "x-kubernetes-preserve-unknown-fields": true},
            "template": {"type": "object", "x-kubernetes-embedded-resource": true, "x-kubernetes-preserve-unknown-fields": true},
        });
        assert!(check(p.clone(), json!({"free": {"anything": [1, {"b": null}]}})).is_empty());
        assert!(check(p.clone(), json!({"template": {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}, "spec": {}}})).is_empty());
        assert_eq!(check(p.clone(), json!({"template": {"metadata": {}}})), [
            "spec.template.apiVersion: Required value: must not be empty",
            "spec.template.kind: Required value: must not be empty",
        ]);
        assert_eq!(check(p, json!({"template": {"apiVersion": "a/b/c", "kind": "Not_A_Kind"}})).len(), 2);
    }

    #[test]
    fn list_sets_and_maps_reject_duplicates() {
        let p = json!({
            "set": {"type": "array", "x-kubernetes-list-type": "set", "items": {"type": "string"}},
            "ports": {"type": "array", "x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["port", "protocol"],
                "items": {"type": "object", "required": ["port"], "properties": {
                    "port": {"type": "integer"}, "protocol": {"type": "string", "default": "TCP"}}}},
        });
        assert_eq!(check(p.clone(), json!({"set": ["a", "b", "a"]})), [r#"spec.set[2]: Duplicate value: "a""#]);
        assert_eq!(check(p.clone(), json!({"ports": [{"port": 80}, {"port": 80, "protocol": "UDP"}, {"port": 80, "protocol": "TCP"}]})), [
            r#"spec.ports[2]: Duplicate value: {"port":80,"protocol":"TCP"}"#
        ]);
        assert!(check(p, json!({"ports": [{"port": 80}, {"port": 81}]})).is_empty());
    }

    #[test]
    fn pruning() {
        let schema = json!({"type": "object", "properties": {
            "spec": {"type": "object", "properties": {
                "keep": {"type": "string"},
                "list": {"type": "array", "items": {"type": "object", "properties": {"a": {"type": "string"}}}},
                "map": {"type": "object", "additionalProperties": {"type": "object", "properties": {"v": {"type": "integer"}}}},
                "free": {"type": "object", "x-kubernetes-preserve-unknown-fields": true, "properties": {
                    "typed": {"type": "object", "properties": {"t": {"type": "string"}}},
                    "nested": {"type": "object", "properties": {"n": {"type": "string"}}, "x-kubernetes-preserve-unknown-fields": true}}},
                "embedded": {"type": "object", "x-kubernetes-embedded-resource": true, "properties": {"spec": {"type": "object"}}},
            }},
        }});
        let mut obj = json!({
            "apiVersion": "a/v1", "kind": "K", "metadata": {"name": "x", "whatever": 1},
            "extra": 1,
            "spec": {
                "keep": "k", "drop": "d",
                "list": [{"a": "1", "b": "2"}],
                "map": {"k": {"v": 1, "w": 2}},
                "free": {"anything": {"deep": 1}, "typed": {"t": "t", "u": "u"}, "nested": {"n": "n", "m": "m"}},
                "embedded": {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}, "spec": {"x": 1}, "status": {}},
            },
        });
        let unknown = prune_collect(&schema, &mut obj);
        assert_eq!(unknown, [
            r#"unknown field "extra""#,
            r#"unknown field "spec.drop""#,
            r#"unknown field "spec.embedded.spec.x""#,
            r#"unknown field "spec.embedded.status""#,
            r#"unknown field "spec.free.typed.u""#,
            r#"unknown field "spec.list[0].b""#,
            r#"unknown field "spec.map.k.w""#,
        ]);
        assert_eq!(obj, json!({
            "apiVersion": "a/v1", "kind": "K", "metadata": {"name": "x", "whatever": 1},
            "spec": {
                "keep": "k",
                "list": [{"a": "1"}],
                "map": {"k": {"v": 1}},
                "free": {"anything": {"deep": 1}, "typed": {"t": "t"}, "nested": {"n": "n", "m": "m"}},
                "embedded": {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}, "spec": {}},
            },
        }));
        // Without a schema for a nested object everything below goes; prune() is the same walk.
        let mut o = json!({"spec": {"keep": "k", "x": 1}});
        prune(&schema, &mut o);
        assert_eq!(o, json!({"spec": {"keep": "k"}}));
        // A root that preserves unknown fields keeps everything.
        let mut o = json!({"a": {"b": 1}});
        assert!(prune_collect(&json!({"type": "object", "x-kubernetes-preserve-unknown-fields": true}), &mut o).is_empty());
        assert_eq!(o, json!({"a": {"b": 1}}));
    }

    #[test]
    fn pruning_with_additional_properties_flags() {
        // As upstream: `additionalProperties: false` keeps keys (validation then rejects them);
        // `true` keeps keys but has no schema for what is below them.
        let schema = json!({"type": "object", "properties": {"spec": {"type": "object", "properties": {
            "closed": {"type": "object", "additionalProperties": false},
            "open": {"type": "object", "additionalProperties": true},
        }}}});
        let mut obj = json!({"spec": {"closed": {"x": 1}, "open": {"a": "s", "b": {"c": 1}}}});
        let unknown = prune_collect(&schema, &mut obj);
        assert_eq!(unknown, [r#"unknown field "spec.open.b.c""#]);
        assert_eq!(obj, json!({"spec": {"closed": {"x": 1}, "open": {"a": "s", "b": {}}}}));
        // Arrays under preserve-unknown-fields keep their items, typed items are still pruned.
        let schema = json!({"type": "object", "properties": {"spec": {"type": "object", "x-kubernetes-preserve-unknown-fields": true,
            "properties": {"list": {"type": "array", "items": {"type": "object", "properties": {"a": {"type": "string"}}}}}}}});
        let mut obj = json!({"spec": {"other": [1, {"x": 1}], "list": [{"a": "1", "b": 2}]}});
        assert_eq!(prune_collect(&schema, &mut obj), [r#"unknown field "spec.list[0].b""#]);
        assert_eq!(obj, json!({"spec": {"other": [1, {"x": 1}], "list": [{"a": "1"}]}}));
    }

    #[test]
    fn defaulting() {
        let schema = json!({"type": "object", "properties": {"spec": {"type": "object", "properties": {
            "replicas": {"type": "integer", "default": 1},
            "mode": {"type": "string", "default": "auto"},
            "nullable": {"type": "string", "nullable": true, "default": "d"},
            "gone": {"type": "string"},
            "nested": {"type": "object", "default": {}, "properties": {"x": {"type": "string", "default": "x"}}},
            "list": {"type": "array", "items": {"type": "object", "properties": {"p": {"type": "integer", "default": 80}}}},
            "map": {"type": "object", "additionalProperties": {"type": "object", "properties": {"on": {"type": "boolean", "default": true}}}},
            "strings": {"type": "array", "items": {"type": "string", "default": "s"}},
        }}}});
        let mut obj = json!({"spec": {
            "mode": null, "nullable": null, "gone": null,
            "list": [{}, {"p": 443}], "map": {"a": {}, "b": {"on": false}, "c": null}, "strings": [null, "x"],
        }});
        apply_defaults(&schema, &mut obj);
        assert_eq!(obj, json!({"spec": {
            "replicas": 1, "mode": "auto", "nullable": null,
            "nested": {"x": "x"},
            "list": [{"p": 80}, {"p": 443}], "map": {"a": {"on": true}, "b": {"on": false}}, "strings": ["s", "x"],
        }}));
        // No parent, no default below it.
        let mut obj = json!({});
        apply_defaults(&schema, &mut obj);
        assert_eq!(obj, json!({}));
    }

    fn serr(schema: Value) -> Vec<String> {
        msgs(&structural_errors(&schema, "spec.versions[0].schema.openAPIV3Schema"))
    }

    #[test]
    fn structural_schema_accepted() {
        let good = json!({"type": "object", "properties": {
            "apiVersion": {"type": "string"}, "kind": {"type": "string"},
            "metadata": {"type": "object", "properties": {"name": {"type": "string", "maxLength": 20}}},
            "spec": {"type": "object", "required": ["size"], "properties": {
                "size": {"type": "string", "enum": ["s", "l"], "default": "s"},
                "port": {"x-kubernetes-int-or-string": true, "anyOf": [{"type": "integer"}, {"type": "string"}]},
                "free": {"type": "object", "x-kubernetes-preserve-unknown-fields": true},
                "any": {"x-kubernetes-preserve-unknown-fields": true},
                "labels": {"type": "object", "additionalProperties": {"type": "string"}},
                "ports": {"type": "array", "x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["port"],
                    "items": {"type": "object", "required": ["port"], "properties": {"port": {"type": "integer"}}}},
                "pod": {"type": "object", "x-kubernetes-embedded-resource": true, "x-kubernetes-preserve-unknown-fields": true},
                "choice": {"type": "object", "properties": {"a": {"type": "string"}, "b": {"type": "string"}},
                    "oneOf": [{"required": ["a"]}, {"required": ["b"]}]},
            }},
            "status": {"type": "object", "properties": {"ready": {"type": "boolean"}}},
        }});
        assert_eq!(serr(good), Vec::<String>::new());
    }

    #[test]
    fn structural_schema_rejected() {
        let p = "spec.versions[0].schema.openAPIV3Schema";
        let errs = serr(json!({"type": "object", "properties": {
            "spec": {"properties": {"a": {"type": "string"}}},
            "list": {"type": "array"},
            "ref": {"$ref": "#/definitions/x", "type": "object"},
            "both": {"type": "object", "properties": {"a": {"type": "string"}}, "additionalProperties": {"type": "string"}},
            "weird": {"type": "null"},
            "closed": {"type": "object", "x-kubernetes-preserve-unknown-fields": false},
        }}));
        for want in [
            format!("{p}.properties[ref].$ref: Forbidden: $ref is not supported"),
            format!("{p}.properties[both].additionalProperties: Forbidden: additionalProperties and properties are mutual exclusive"),
            format!(r#"{p}.properties[weird].type: Unsupported value: "null": supported values: "array", "boolean", "integer", "number", "object", "string""#),
            format!("{p}.properties[weird].type: Forbidden: type cannot be set to null, use nullable as an alternative"),
            format!("{p}.properties[closed].x-kubernetes-preserve-unknown-fields: Invalid value: false: must be true or undefined"),
            format!("{p}.properties[spec].type: Required value: must not be empty for specified object fields"),
            format!("{p}.properties[list].items: Required value: must be specified"),
        ] {
            assert!(errs.contains(&want), "missing {want}\nin {errs:#?}");
        }
        assert_eq!(serr(json!({"properties": {}})), [format!("{p}.type: Required value: must not be empty at the root")]);
        assert_eq!(serr(json!({"type": "string"})), [format!(r#"{p}.type: Invalid value: "string": must be object at the root"#)]);
        assert_eq!(serr(json!({"type": "object", "additionalProperties": {"type": "string"}})), [
            format!("{p}.additionalProperties: Forbidden: must not be used at the root")
        ]);
        assert_eq!(serr(json!({"type": "object", "properties": {"a": {"type": "array", "items": {}}}})), [
            format!("{p}.properties[a].items.type: Required value: must not be empty for specified array items")
        ]);
        assert_eq!(serr(json!({"type": "object", "nullable": true})), [format!("{p}.nullable: Forbidden: nullable cannot be true at the root")]);
    }

    #[test]
    fn root_metadata_restrictions() {
        let p = "spec.versions[0].schema.openAPIV3Schema";
        let ok = json!({"type": "object", "properties": {"metadata": {"type": "object", "properties": {
            "name": {"type": "string", "pattern": "^a"}, "generateName": {"type": "string"}}}}});
        assert!(serr(ok).is_empty());
        let errs = serr(json!({"type": "object", "properties": {"metadata": {"type": "object", "properties": {"labels": {"type": "object"}}}}}));
        assert_eq!(errs, [format!(
            "{p}.properties[metadata]: Forbidden: must not specify anything other than name and generateName, but metadata is implicitly specified"
        )]);
        let errs = serr(json!({"type": "object", "properties": {"metadata": {"type": "string", "default": "x"}, "kind": {"type": "integer"}}}));
        assert!(errs.contains(&format!("{p}.properties[metadata].default: Forbidden: must not be set in top-level metadata")), "{errs:#?}");
        assert!(errs.contains(&format!(r#"{p}.properties[metadata].type: Invalid value: "string": must be object"#)), "{errs:#?}");
        assert!(errs.contains(&format!(r#"{p}.properties[kind].type: Invalid value: "integer": must be string"#)), "{errs:#?}");
    }

    #[test]
    fn value_validations_must_stay_structural() {
        let p = "spec.versions[0].schema.openAPIV3Schema";
        let errs = serr(json!({"type": "object", "properties": {"spec": {"type": "object",
            "properties": {"a": {"type": "string"}},
            "anyOf": [{"type": "object", "properties": {"b": {"minLength": 1}}, "description": "d"}],
            "allOf": [{"properties": {"metadata": {}}, "x-kubernetes-preserve-unknown-fields": true}],
        }}}));
        let s = format!("{p}.properties[spec]");
        for want in [
            format!("{s}.anyOf[0].type: Forbidden: must be empty to be structural"),
            format!("{s}.anyOf[0].description: Forbidden: must be empty to be structural"),
            format!("{s}.allOf[0].x-kubernetes-preserve-unknown-fields: Forbidden: must be false to be structural"),
            format!("{s}.allOf[0].properties[metadata]: Forbidden: must not be specified in a nested context"),
            format!("{s}.properties[b]: Required value: because it is defined in {s}.anyOf[0].properties[b]"),
            format!("{s}.properties[metadata]: Required value: because it is defined in {s}.allOf[0].properties[metadata]"),
        ] {
            assert!(errs.contains(&want), "missing {want}\nin {errs:#?}");
        }
        let errs = serr(json!({"type": "object", "properties": {"s": {"type": "string", "pattern": "(a"}}}));
        assert_eq!(errs.len(), 1);
        assert!(errs[0].starts_with(&format!(r#"{p}.properties[s].pattern: Invalid value: "(a": must be a valid regular expression, but isn't: error parsing regexp"#)), "{errs:?}");
    }

    #[test]
    fn defaults_must_validate_and_be_pruned() {
        let p = "spec.versions[0].schema.openAPIV3Schema";
        let errs = serr(json!({"type": "object", "properties": {"spec": {"type": "object", "properties": {
            "n": {"type": "integer", "default": "one"},
            "o": {"type": "object", "properties": {"a": {"type": "string"}}, "default": {"a": "x", "b": 1}},
            "e": {"type": "string", "enum": ["a"], "default": "b"},
        }}}}));
        assert_eq!(errs, [
            format!(r#"{p}.properties[spec].properties[e].default: Unsupported value: "b": supported values: "a""#),
            format!(r#"{p}.properties[spec].properties[n].default: Invalid value: "string":  in body must be of type integer: "string""#),
            format!(r#"{p}.properties[spec].properties[o].default: Invalid value: {{"a":"x","b":1}}: must not have unknown fields"#),
        ]);
    }

    #[test]
    fn list_and_map_type_extensions() {
        let p = "spec.versions[0].schema.openAPIV3Schema.properties[l]";
        let errs = serr(json!({"type": "object", "properties": {"l": {"type": "array", "x-kubernetes-list-type": "map",
            "items": {"type": "object", "properties": {"k": {"type": "object"}, "n": {"type": "string", "nullable": true}}},
            "x-kubernetes-list-map-keys": ["k", "n", "missing"]}}}));
        for want in [
            format!(r#"{p}.items.properties[k].type: Invalid value: "object": must be a scalar type if parent array's x-kubernetes-list-type is map"#),
            format!(r#"{p}.x-kubernetes-list-map-keys: Invalid value: ["k","n","missing"]: entries must all be names of item properties"#),
            format!("{p}.items.properties[n].default: Required value: this property is in x-kubernetes-list-map-keys, so it must have a default or be a required property"),
            format!("{p}.items.properties[n].nullable: Forbidden: this property is in x-kubernetes-list-map-keys, so it cannot be nullable"),
        ] {
            assert!(errs.contains(&want), "missing {want}\nin {errs:#?}");
        }
        let errs = serr(json!({"type": "object", "properties": {
            "l": {"type": "string", "x-kubernetes-list-type": "bag"},
            "m": {"type": "object", "x-kubernetes-map-type": "atomic"},
        }}));
        assert!(errs.contains(&format!(r#"{p}.type: Invalid value: "string": must be array if x-kubernetes-list-type is specified"#)), "{errs:#?}");
        assert!(errs.contains(&format!(r#"{p}.x-kubernetes-list-type: Unsupported value: "bag": supported values: "atomic", "set", "map""#)), "{errs:#?}");
        assert_eq!(errs.len(), 2);
        let errs = serr(json!({"type": "object", "properties": {"l": {"type": "array", "x-kubernetes-list-type": "set",
            "items": {"type": "object"}}}}));
        assert!(errs[0].contains("must be atomic as item of a list with x-kubernetes-list-type=set"), "{errs:#?}");
    }

    #[test]
    fn embedded_resource_schema_rules() {
        let p = "spec.versions[0].schema.openAPIV3Schema.properties[e]";
        let errs = serr(json!({"type": "object", "properties": {"e": {"type": "string", "x-kubernetes-embedded-resource": true}}}));
        assert!(errs.contains(&format!(r#"{p}.type: Invalid value: "string": must be object if x-kubernetes-embedded-resource is true"#)), "{errs:#?}");
        assert!(errs.contains(&format!(
            "{p}.properties: Required value: must not be empty if x-kubernetes-embedded-resource is true without x-kubernetes-preserve-unknown-fields"
        )));
        let errs = serr(json!({"type": "object", "properties": {"i": {"x-kubernetes-int-or-string": true, "x-kubernetes-preserve-unknown-fields": true}}}));
        assert_eq!(errs, [
            "spec.versions[0].schema.openAPIV3Schema.properties[i].x-kubernetes-preserve-unknown-fields: Invalid value: true: must be false if x-kubernetes-int-or-string is true"
        ]);
    }

    #[test]
    fn cel_rules_are_only_checked_statically() {
        let errs = serr(json!({"type": "object", "x-kubernetes-validations": [{"rule": "self.a == 1"}, {"rule": " "}]}));
        assert_eq!(errs, ["spec.versions[0].schema.openAPIV3Schema.x-kubernetes-validations[1].rule: Required value: rule is not specified"]);
        // Rules are never evaluated against objects.
        assert!(validate(&json!({"type": "object", "x-kubernetes-validations": [{"rule": "false"}]}), &json!({})).is_empty());
    }

    #[test]
    fn list_types() {
        let schema = json!({"type": "object", "properties": {"spec": {"type": "object", "properties": {
            "ports": {"type": "array", "x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["port", "protocol"],
                "items": {"type": "object", "properties": {
                    "port": {"type": "integer"}, "tags": {"type": "array", "x-kubernetes-list-type": "set", "items": {"type": "string"}}}}},
            "plain": {"type": "array", "items": {"type": "string"}},
            "byName": {"type": "object", "additionalProperties": {"type": "array", "items": {"type": "string"}, "x-kubernetes-list-type": "set"}},
        }}}});
        assert_eq!(list_type(&schema, &["spec", "ports"]), Some(("map".into(), vec!["port".into(), "protocol".into()])));
        assert_eq!(list_type(&schema, &["spec", "plain"]), Some(("atomic".into(), vec![])));
        assert_eq!(list_type(&schema, &["spec", "ports", "tags"]), Some(("set".into(), vec![])));
        assert_eq!(list_type(&schema, &["spec", "ports", "0", "tags"]), Some(("set".into(), vec![])));
        assert_eq!(list_type(&schema, &["spec", "byName", "anything"]), Some(("set".into(), vec![])));
        assert_eq!(list_type(&schema, &["spec"]), None);
        assert_eq!(list_type(&schema, &["spec", "missing"]), None);
    }

    #[test]
    fn go_number_formatting() {
        assert_eq!(go_float(10.0), "10");
        assert_eq!(go_float(0.25), "0.25");
        assert_eq!(go_float(1e21), "1e+21");
        assert_eq!(go_float(1e6), "1e+06");
        assert_eq!(go_float(123456.0), "123456");
        assert_eq!(go_float(1.5e7), "1.5e+07");
        assert_eq!(go_float(1e-7), "1e-07");
    }
}
