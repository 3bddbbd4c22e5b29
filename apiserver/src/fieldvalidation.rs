//! `fieldValidation=Ignore|Warn|Strict`: what happens to unknown and duplicate fields in a
//! request body. Unknown fields are found by comparing the body with its normalized form
//! (decoded into the kind's typed struct and encoded again): whatever the typed struct
//! dropped was unknown to it. Duplicate keys are found while parsing the raw JSON.

use std::cell::RefCell;
use std::fmt;

use serde::de::{self, DeserializeSeed, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};

use crate::error::{ApiError, ApiResult};
use crate::registry::ResourceInfo;

/// The `fieldValidation` directive.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Ignore,
    /// The default: unknown and duplicate fields come back as `Warning` headers.
    Warn,
    Strict,
}

impl Mode {
    pub fn parse(v: Option<&str>) -> ApiResult<Mode> {
        match v {
            None | Some("") | Some("Warn") => Ok(Mode::Warn),
            Some("Ignore") => Ok(Mode::Ignore),
            Some("Strict") => Ok(Mode::Strict),
            Some(other) => Err(ApiError::bad_request(format!(
                "fieldValidation: Unsupported value: \"{other}\": supported values: \"Ignore\", \"Strict\", \"Warn\""
            ))),
        }
    }

    /// Turns the problems found into a Strict error or Warn warnings.
    pub fn enforce(self, problems: Vec<String>) -> ApiResult<Vec<String>> {
        match self {
            _ if problems.is_empty() => Ok(Vec::new()),
            Mode::Ignore => Ok(Vec::new()),
            Mode::Warn => Ok(problems),
            Mode::Strict => Err(ApiError::bad_request(format!("strict decoding error: {}", problems.join(", ")))),
        }
    }
}

impl Mode {
    /// Duplicate keys of an apply body (YAML), as upstream's strict YAML decoding words them.
    pub fn enforce_yaml(self, problems: Vec<String>) -> ApiResult<Vec<String>> {
        match self {
            Mode::Strict if !problems.is_empty() => Err(ApiError::bad_request(format!(
                "error strict decoding YAML: error converting YAML to JSON: yaml: unmarshal errors:\n  {}",
                problems.join("\n  ")
            ))),
            _ => self.enforce(problems),
        }
    }
}

/// Server-side apply converts an apply configuration to the typed form of its schema
/// (custom resources: the CRD's), failing, whatever `fieldValidation` says, on fields the
/// schema does not declare, as upstream's `failed to create typed patch object`.
pub fn check_typed_apply(schema: &Value, config: &Value, info: &ResourceInfo) -> ApiResult<()> {
    let errs = crate::crd::schema::undeclared_fields(schema, config);
    if errs.is_empty() {
        return Ok(());
    }
    let m = &config["metadata"];
    let joined = match errs.as_slice() {
        [one] => one.clone(),
        many => format!("errors:\n  {}", many.join("\n  ")),
    };
    Err(ApiError::bad_request(format!(
        "failed to create typed patch object ({}/{}; {}, Kind={}): {joined}",
        m["namespace"].as_str().unwrap_or_default(),
        m["name"].as_str().unwrap_or_default(),
        info.api_version(),
        info.kind,
    )))
}

/// `unknown field "spec.foo"` for every field of `input` missing from `normalized`.
pub fn unknown_fields(input: &Value, normalized: &Value) -> Vec<String> {
    let mut out = Vec::new();
    walk(input, normalized, "", &mut out);
    out
}

fn walk(input: &Value, normalized: &Value, path: &str, out: &mut Vec<String>) {
    match (input, normalized) {
        (Value::Object(i), Value::Object(n)) => {
            for (k, v) in i {
                let p = if path.is_empty() { k.clone() } else { format!("{path}.{k}") };
                match n.get(k) {
                    Some(nv) => walk(v, nv, &p, out),
                    // A null is dropped by the typed round trip even for known fields.
                    None if !v.is_null() => out.push(format!("unknown field \"{p}\"")),
                    None => {}
                }
            }
        }
        (Value::Array(i), Value::Array(n)) if i.len() == n.len() => {
            for (idx, (iv, nv)) in i.iter().zip(n).enumerate() {
                walk(iv, nv, &format!("{path}[{idx}]"), out);
            }
        }
        _ => {}
    }
}

/// Parses JSON, reporting every duplicate key as `duplicate field "a.b"`.
pub fn parse_reporting_duplicates(bytes: &[u8]) -> Result<(Value, Vec<String>), serde_json::Error> {
    let dups = RefCell::new(Vec::new());
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let v = Seed { path: String::new(), dups: &dups }.deserialize(&mut de)?;
    de.end()?;
    Ok((v, dups.into_inner()))
}

/// Duplicate keys of a YAML (or JSON) apply body as upstream's strict YAML decoding reports
/// them: `line 11: key "foo" already set in map` (the first one found).
pub fn yaml_duplicates(bytes: &[u8]) -> Vec<String> {
    let Err(e) = serde_yaml::from_slice::<serde_yaml::Value>(bytes) else { return Vec::new() };
    let msg = e.to_string();
    const DUP: &str = "duplicate entry with key ";
    let Some(at) = msg.find(DUP) else { return Vec::new() };
    let rest = &msg[at + DUP.len()..];
    // `"foo"` (a Rust debug string) or a bare number/boolean, then ` at line L column C`.
    let key = rest.split(" at line ").next().unwrap_or(rest).trim_matches('`');
    let key: String = serde_json::from_str(key).unwrap_or_else(|_| key.to_string());
    // serde_yaml marks where the mapping starts; the duplicate key is the second key of that
    // name at the mapping's indentation below it.
    let Some(loc) = e.location() else { return vec![format!("key {key:?} already set in map")] };
    let text = String::from_utf8_lossy(bytes);
    let mut seen = 0;
    let mut line = loc.line();
    for (i, l) in text.lines().enumerate().skip(loc.line().saturating_sub(1)) {
        let indent = l.len() - l.trim_start_matches(' ').len();
        let body = l.trim_start_matches(' ').trim_start_matches("- ");
        if indent + 1 < loc.column() && i + 1 > loc.line() {
            break;
        }
        let named = [format!("{key}:"), format!("\"{key}\":"), format!("'{key}':")];
        if named.iter().any(|n| body.starts_with(n.as_str())) {
            seen += 1;
            if seen == 2 {
                line = i + 1;
                break;
            }
        }
    }
    vec![format!("line {line}: key {key:?} already set in map")]
}

/// Builds a `Value` like serde_json does, noting repeated keys on the way.
struct Seed<'a> {
    path: String,
    dups: &'a RefCell<Vec<String>>,
}

impl<'de> DeserializeSeed<'de> for Seed<'_> {
    type Value = Value;
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Seed<'_> {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(v.into())
    }
    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(v.into())
    }
    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(serde_json::Number::from_f64(v).map(Value::Number).unwrap_or(Value::Null))
    }
    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_string()))
    }
    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }
    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut out = Vec::new();
        while let Some(v) = seq.next_element_seed(Seed { path: format!("{}[{}]", self.path, out.len()), dups: self.dups })? {
            out.push(v);
        }
        Ok(Value::Array(out))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut out = Map::new();
        while let Some(k) = map.next_key::<String>()? {
            let path = if self.path.is_empty() { k.clone() } else { format!("{}.{k}", self.path) };
            let v = map.next_value_seed(Seed { path: path.clone(), dups: self.dups })?;
            if out.insert(k, v).is_some() {
                self.dups.borrow_mut().push(format!("duplicate field \"{path}\""));
            }
        }
        Ok(Value::Object(out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn finds_unknown_fields_at_any_depth() {
        let input = json!({"spec": {"replica": 2, "template": {"spec": {"containers": [{"name": "a", "imag": "x"}]}}}, "x": null});
        let normalized = json!({"spec": {"template": {"spec": {"containers": [{"name": "a"}]}}}});
        assert_eq!(
            unknown_fields(&input, &normalized),
            ["unknown field \"spec.replica\"", "unknown field \"spec.template.spec.containers[0].imag\""]
        );
    }

    #[test]
    fn finds_duplicates() {
        let (v, dups) = parse_reporting_duplicates(br#"{"a": 1, "b": {"c": [1, {"d": 1, "d": 2}]}, "a": 3}"#).unwrap();
        assert_eq!(v["a"], 3);
        assert_eq!(dups, ["duplicate field \"b.c[1].d\"", "duplicate field \"a\""]);
    }

    #[test]
    fn yaml_duplicates_with_lines() {
        let body = "\napiVersion: v1\nkind: K\nmetadata:\n  name: a\nspec:\n  unknown: uk1\n  foo: foo1\n  foo: foo2\n  bar: 1\n";
        assert_eq!(yaml_duplicates(body.as_bytes()), ["line 9: key \"foo\" already set in map"]);
        assert!(yaml_duplicates(b"a: 1\nb: 2\n").is_empty());
        assert_eq!(yaml_duplicates(br#"{"a": 1, "a": 2}"#), ["line 1: key \"a\" already set in map"]);
    }

    #[test]
    fn modes() {
        assert!(Mode::parse(Some("Bogus")).is_err());
        assert_eq!(Mode::Warn.enforce(vec!["x".into()]).unwrap(), ["x"]);
        assert!(Mode::Strict.enforce(vec!["unknown field \"a\"".into()]).unwrap_err().to_string().contains("strict decoding error"));
        assert!(Mode::Ignore.enforce(vec!["x".into()]).unwrap().is_empty());
    }
}
