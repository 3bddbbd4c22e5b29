//! Decoding of Kubernetes protobuf request bodies (`application/vnd.kubernetes.protobuf`)
//! into the JSON krust stores. kubectl's generator subcommands (`kubectl create configmap`,
//! `create deployment`...) send built-in objects this way.
//!
//! The body is upstream's envelope: the magic `k8s\0`, then a `runtime.Unknown` message
//! {1: TypeMeta{1: apiVersion, 2: kind}, 2: raw, 3: contentEncoding, 4: contentType}. The
//! raw bytes are the object's message, found by apiVersion + kind in the generated field
//! table (`schema.txt`) and decoded generically from the wire format, field by field.
//!
//! # Which fields appear in the JSON
//! The result is what upstream's JSON encoder writes for the Go object its protobuf decoder
//! builds:
//! * A field absent from the wire is absent from the JSON (so are empty repeated fields
//!   and maps, which upstream writes as nothing or, without omitempty, as `null`).
//! * A scalar present on the wire is emitted, even when zero, unless the table flags it
//!   `z`: a non-pointer Go field with `omitempty`. Upstream's marshalers write those
//!   always, zero or not, so their zero value carries no information and Go's JSON drops
//!   it (`minReadySeconds: 0`, `hostNetwork: false`, `imagePullPolicy: ""`). Pointer fields
//!   (`replicas`, `automountServiceAccountToken`) are written only when set, so a zero there
//!   is meaningful and kept; non-omitempty fields (`containerPort`) are kept as Go keeps them.
//! * A present message is emitted, `{}` when empty (as upstream: `resources: {}`), except
//!   for the special types below that decode to nothing (a zero `Time`).
//!
//! Special types follow upstream's custom JSON: `Time` (RFC 3339, seconds), `MicroTime`
//! (6 fractional digits), `Duration` (Go duration string), `Quantity` (string),
//! `IntOrString` (number or string), `RawExtension`/`FieldsV1`/apiextensions `JSON` (the
//! embedded JSON), and the apiextensions `JSONSchemaPropsOr*` unions; `bytes` are base64.

mod schema;
mod wire;

#[cfg(test)]
mod tests;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use serde_json::{Map, Number, Value};

use schema::{Field, Ty};
use wire::{Reader, Wire};

pub use schema::schema;

/// The media type of Kubernetes protobuf bodies.
pub const MEDIA_TYPE: &str = "application/vnd.kubernetes.protobuf";

const MAGIC: &[u8] = b"k8s\0";

/// Nesting deeper than this is refused (JSONSchemaProps nests without bound).
const MAX_DEPTH: usize = 100;

/// Decodes a protobuf-encoded object (with its `k8s\0` envelope) into upstream's JSON
/// shape, `apiVersion` and `kind` set.
pub fn decode(body: &[u8]) -> Result<Value, String> {
    decode_at(body, 0)
}

fn decode_at(body: &[u8], depth: usize) -> Result<Value, String> {
    let Some(rest) = body.strip_prefix(MAGIC) else {
        return Err("the protobuf body does not start with the k8s\\0 magic prefix".into());
    };
    let mut api_version = String::new();
    let mut kind = String::new();
    let mut raw: &[u8] = &[];
    let mut content_encoding = String::new();
    let mut content_type = String::new();
    let mut r = Reader::new(rest);
    while let Some((no, w)) = r.field()? {
        match (no, w) {
            (1, Wire::Bytes(tm)) => {
                let mut t = Reader::new(tm);
                while let Some((no, w)) = t.field()? {
                    match (no, w) {
                        (1, Wire::Bytes(b)) => api_version = utf8(b),
                        (2, Wire::Bytes(b)) => kind = utf8(b),
                        _ => {}
                    }
                }
            }
            (2, Wire::Bytes(b)) => raw = b,
            (3, Wire::Bytes(b)) => content_encoding = utf8(b),
            (4, Wire::Bytes(b)) => content_type = utf8(b),
            (1..=4, w) => return Err(format!("runtime.Unknown field {no}: unexpected {} value", w.type_name())),
            _ => {}
        }
    }
    if !content_encoding.is_empty() {
        return Err(format!("unsupported protobuf content encoding {content_encoding:?}"));
    }
    if kind.is_empty() {
        return Err("the protobuf envelope has no kind".into());
    }
    let ct = content_type.split(';').next().unwrap_or_default().trim();
    let mut obj = match ct {
        "" | MEDIA_TYPE => {
            let message = message_for(&api_version, &kind)?;
            match decode_message(message, raw, depth)? {
                Value::Object(m) => m,
                _ => return Err(format!("{api_version} {kind} did not decode to an object")),
            }
        }
        "application/json" => match serde_json::from_slice::<Value>(raw).map_err(|e| format!("embedded JSON: {e}"))? {
            Value::Object(m) => m,
            _ => return Err("embedded JSON is not an object".into()),
        },
        other => return Err(format!("unsupported embedded content type {other:?}")),
    };
    let mut out = Map::new();
    out.insert("apiVersion".into(), Value::String(api_version));
    out.insert("kind".into(), Value::String(kind));
    obj.remove("apiVersion");
    obj.remove("kind");
    out.extend(obj);
    Ok(Value::Object(out))
}

/// The table's message for an apiVersion and kind: `apps/v1` `Deployment` →
/// `apps.v1.Deployment`; `rbac.authorization.k8s.io/v1` → `rbac.v1.*`; the core group is
/// `core`; options kinds (`DeleteOptions`) may come under any version and live in `meta.v1`.
fn message_for(api_version: &str, kind: &str) -> Result<&'static str, String> {
    let (group, version) = match api_version.split_once('/') {
        Some((g, v)) => (g.split('.').next().unwrap_or_default(), v),
        None => ("core", api_version),
    };
    let s = schema();
    s.find(&format!("{group}.{version}.{kind}"))
        .or_else(|| s.find(&format!("meta.v1.{kind}")))
        .ok_or_else(|| format!("no protobuf schema for {api_version}, Kind={kind}"))
}

fn utf8(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn decode_message(name: &str, buf: &[u8], depth: usize) -> Result<Value, String> {
    if depth > MAX_DEPTH {
        return Err("the object nests too deeply".into());
    }
    if let Some(v) = decode_special(name, buf, depth)? {
        return Ok(v);
    }
    let msg = schema().message(name).ok_or_else(|| format!("no protobuf schema for {name}"))?;
    let mut obj = Map::new();
    let mut r = Reader::new(buf);
    while let Some((no, w)) = r.field()? {
        // Fields the table does not know (newer than it) are skipped, as Go skips them.
        let Some(f) = msg.fields.get(&no) else { continue };
        let at = |e: String| format!("{name}.{}: {e}", f.json);
        if f.map {
            let Wire::Bytes(entry) = w else {
                return Err(at(format!("map entry must be length-delimited, got {}", w.type_name())));
            };
            let (k, v) = decode_map_entry(f, entry, depth).map_err(at)?;
            match obj.entry(f.json.clone()).or_insert_with(|| Value::Object(Map::new())) {
                Value::Object(m) => {
                    m.insert(k, v);
                }
                _ => unreachable!("map fields hold objects"),
            }
        } else if f.repeated {
            let items = match (&f.ty, w) {
                // Packed repeated scalars: one length-delimited run of values.
                (ty, Wire::Bytes(b)) if !matches!(ty, Ty::String | Ty::Bytes | Ty::Message(_)) => {
                    let mut p = Reader::new(b);
                    let mut out = Vec::new();
                    while !p.is_empty() {
                        let w = match ty {
                            Ty::Double => Wire::Fixed64(u64::from_le_bytes(p.fixed::<8>()?)),
                            Ty::Float => Wire::Fixed32(u32::from_le_bytes(p.fixed::<4>()?)),
                            _ => Wire::Varint(p.varint()?),
                        };
                        out.push(decode_value(&f.ty, w, depth).map_err(at)?);
                    }
                    out
                }
                _ => vec![decode_value(&f.ty, w, depth).map_err(at)?],
            };
            match obj.entry(f.json.clone()).or_insert_with(|| Value::Array(Vec::new())) {
                Value::Array(a) => a.extend(items),
                _ => unreachable!("repeated fields hold arrays"),
            }
        } else if f.inline {
            match decode_value(&f.ty, w, depth).map_err(at)? {
                Value::Object(m) => obj.extend(m),
                Value::Null => {}
                _ => return Err(at("an inline field did not decode to an object".into())),
            }
        } else {
            let v = decode_value(&f.ty, w, depth).map_err(at)?;
            if v.is_null() || (f.omit_zero && is_zero(&v)) {
                // A later occurrence may still set it; an earlier one is overridden.
                obj.remove(&f.json);
                continue;
            }
            obj.insert(f.json.clone(), v);
        }
    }
    Ok(Value::Object(obj))
}

fn decode_map_entry(f: &Field, entry: &[u8], depth: usize) -> Result<(String, Value), String> {
    let mut key = String::new();
    let mut value = None;
    let mut r = Reader::new(entry);
    while let Some((no, w)) = r.field()? {
        match (no, w) {
            (1, Wire::Bytes(b)) => key = utf8(b),
            (1, w) => return Err(format!("map key must be a string, got {}", w.type_name())),
            (2, w) => value = Some(decode_value(&f.ty, w, depth)?),
            _ => {}
        }
    }
    let value = match value {
        Some(v) => v,
        // An entry without a value holds the type's zero value.
        None => match &f.ty {
            Ty::Message(m) => decode_message(m, &[], depth + 1)?,
            Ty::String | Ty::Bytes => Value::String(String::new()),
            Ty::Bool => Value::Bool(false),
            _ => Value::from(0),
        },
    };
    Ok((key, value))
}

fn decode_value(ty: &Ty, w: Wire<'_>, depth: usize) -> Result<Value, String> {
    Ok(match (ty, w) {
        (Ty::String, Wire::Bytes(b)) => Value::String(utf8(b)),
        (Ty::Bytes, Wire::Bytes(b)) => Value::String(STANDARD.encode(b)),
        (Ty::Bool, Wire::Varint(v)) => Value::Bool(v != 0),
        // Negative int32s are sign-extended to 64 bits on the wire.
        (Ty::Int32, Wire::Varint(v)) => Value::from(v as i64 as i32),
        (Ty::Int64, Wire::Varint(v)) => Value::from(v as i64),
        (Ty::Uint32, Wire::Varint(v)) => Value::from(v as u32),
        (Ty::Uint64, Wire::Varint(v)) => Value::from(v),
        (Ty::Double, Wire::Fixed64(v)) => float(f64::from_bits(v))?,
        (Ty::Float, Wire::Fixed32(v)) => float(f64::from(f32::from_bits(v)))?,
        (Ty::Message(m), Wire::Bytes(b)) => decode_message(m, b, depth + 1)?,
        (ty, w) => return Err(format!("expected {ty:?}, got a {} value", w.type_name())),
    })
}

fn float(f: f64) -> Result<Value, String> {
    Number::from_f64(f).map(Value::Number).ok_or_else(|| format!("{f} cannot be represented in JSON"))
}

fn is_zero(v: &Value) -> bool {
    match v {
        Value::String(s) => s.is_empty(),
        Value::Bool(b) => !b,
        Value::Number(n) => n.as_f64() == Some(0.0),
        _ => false,
    }
}

/// The scalar fields of a message, by number, without a schema (for the special types).
fn scalars(buf: &[u8]) -> Result<Vec<(u32, Wire<'_>)>, String> {
    let mut r = Reader::new(buf);
    let mut out = Vec::new();
    while let Some(f) = r.field()? {
        out.push(f);
    }
    Ok(out)
}

fn last_varint(fields: &[(u32, Wire<'_>)], no: u32) -> Option<u64> {
    fields.iter().rev().find_map(|(n, w)| match (n, w) {
        (n, Wire::Varint(v)) if *n == no => Some(*v),
        _ => None,
    })
}

fn last_bytes<'a>(fields: &[(u32, Wire<'a>)], no: u32) -> Option<&'a [u8]> {
    fields.iter().rev().find_map(|(n, w)| match (n, w) {
        (n, Wire::Bytes(b)) if *n == no => Some(*b),
        _ => None,
    })
}

/// Seconds of Go's zero `time.Time` (`0001-01-01T00:00:00Z`).
const GO_ZERO_TIME: i64 = -62_135_596_800;

/// Types with their own JSON form; `None` for ordinary messages.
fn decode_special(name: &str, buf: &[u8], depth: usize) -> Result<Option<Value>, String> {
    let v = match name {
        "meta.v1.Time" | "meta.v1.MicroTime" => {
            let f = scalars(buf)?;
            let secs = last_varint(&f, 1).unwrap_or(0) as i64;
            let nanos = last_varint(&f, 2).unwrap_or(0) as i64 as i32;
            // Empty: upstream's zero Time, which its JSON writes as null.
            if buf.is_empty() || (secs == GO_ZERO_TIME && nanos == 0) {
                return Ok(Some(Value::Null));
            }
            let micro = name == "meta.v1.MicroTime";
            Value::String(rfc3339(secs, if micro { nanos } else { 0 }, micro)?)
        }
        "meta.v1.Duration" => {
            let f = scalars(buf)?;
            Value::String(go_duration(last_varint(&f, 1).unwrap_or(0) as i64))
        }
        "resource.Quantity" => {
            let f = scalars(buf)?;
            // Upstream's zero Quantity is "0".
            Value::String(last_bytes(&f, 1).map(utf8).filter(|s| !s.is_empty()).unwrap_or_else(|| "0".into()))
        }
        "intstr.IntOrString" => {
            let f = scalars(buf)?;
            if last_varint(&f, 1).unwrap_or(0) == 1 {
                Value::String(last_bytes(&f, 3).map(utf8).unwrap_or_default())
            } else {
                Value::from(last_varint(&f, 2).unwrap_or(0) as i64 as i32)
            }
        }
        "runtime.RawExtension" | "meta.v1.FieldsV1" | "apiextensions.v1.Json" => {
            let f = scalars(buf)?;
            match last_bytes(&f, 1) {
                None | Some([]) => Value::Null,
                Some(raw) if raw.starts_with(MAGIC) => decode_at(raw, depth + 1)?,
                Some(raw) => serde_json::from_slice(raw).map_err(|e| format!("{name}: embedded JSON: {e}"))?,
            }
        }
        "apiextensions.v1.JsonSchemaPropsOrBool" => {
            let f = scalars(buf)?;
            match last_bytes(&f, 2) {
                Some(s) => decode_message("apiextensions.v1.JsonSchemaProps", s, depth + 1)?,
                None => Value::Bool(last_varint(&f, 1).unwrap_or(0) != 0),
            }
        }
        "apiextensions.v1.JsonSchemaPropsOrArray" => {
            let f = scalars(buf)?;
            let items: Vec<&[u8]> = f
                .iter()
                .filter_map(|(n, w)| match (n, w) {
                    (2, Wire::Bytes(b)) => Some(*b),
                    _ => None,
                })
                .collect();
            if !items.is_empty() {
                Value::Array(
                    items
                        .into_iter()
                        .map(|b| decode_message("apiextensions.v1.JsonSchemaProps", b, depth + 1))
                        .collect::<Result<_, _>>()?,
                )
            } else if let Some(s) = last_bytes(&f, 1) {
                decode_message("apiextensions.v1.JsonSchemaProps", s, depth + 1)?
            } else {
                Value::Null
            }
        }
        "apiextensions.v1.JsonSchemaPropsOrStringArray" => {
            let f = scalars(buf)?;
            let props: Vec<Value> = f
                .iter()
                .filter_map(|(n, w)| match (n, w) {
                    (2, Wire::Bytes(b)) => Some(Value::String(utf8(b))),
                    _ => None,
                })
                .collect();
            if !props.is_empty() {
                Value::Array(props)
            } else if let Some(s) = last_bytes(&f, 1) {
                decode_message("apiextensions.v1.JsonSchemaProps", s, depth + 1)?
            } else {
                Value::Null
            }
        }
        _ => return Ok(None),
    };
    Ok(Some(v))
}

/// Upstream's `metav1.Time` / `MicroTime` JSON: RFC 3339 in UTC.
fn rfc3339(secs: i64, nanos: i32, micro: bool) -> Result<String, String> {
    let t = chrono::DateTime::from_timestamp(secs, 0).ok_or_else(|| format!("time {secs}s is out of range"))?;
    let base = t.format("%Y-%m-%dT%H:%M:%S");
    Ok(if micro { format!("{base}.{:06}Z", nanos.clamp(0, 999_999_999) / 1000) } else { format!("{base}Z") })
}

/// Go's `time.Duration.String()`: `1h2m3.5s`, `1.5ms`, `0s`.
fn go_duration(d: i64) -> String {
    if d == 0 {
        return "0s".into();
    }
    let sign = if d < 0 { "-" } else { "" };
    let u = d.unsigned_abs();
    let body = if u < 1_000_000_000 {
        let (div, prec, unit) = match u {
            0..=999 => (1, 0, "ns"),
            1_000..=999_999 => (1_000, 3, "µs"),
            _ => (1_000_000, 6, "ms"),
        };
        format!("{}{unit}", frac(u, div, prec))
    } else {
        let secs = u / 1_000_000_000;
        let mut s = String::new();
        let (mins, hours) = (secs / 60, secs / 3600);
        if hours > 0 {
            s.push_str(&format!("{hours}h"));
        }
        if mins > 0 {
            s.push_str(&format!("{}m", mins % 60));
        }
        s.push_str(&format!("{}s", frac(u % 60_000_000_000, 1_000_000_000, 9)));
        s
    };
    format!("{sign}{body}")
}

/// `v / div` with `prec` fractional digits, trailing zeros (and a bare point) trimmed.
fn frac(v: u64, div: u64, prec: usize) -> String {
    let whole = v / div;
    if prec == 0 {
        return whole.to_string();
    }
    let f = format!("{:0prec$}", v % div, prec = prec);
    let f = f.trim_end_matches('0');
    if f.is_empty() {
        whole.to_string()
    } else {
        format!("{whole}.{f}")
    }
}
