//! The Swagger 2.0 document as gnostic's `openapi.v2.Document` protobuf
//! (`application/com.github.proto-openapi.spec.v2@v1.0+protobuf`), the only form client-go's
//! `OpenAPISchema()` (kubectl `explain --output=plaintext-openapiv2`, v2 validation) reads:
//! it sends that Accept header and unmarshals the body as protobuf, falling back only to
//! the old `/swagger-2.0.0.pb-v1` path (also protobuf), never to JSON.
//!
//! Field numbers are those of gnostic's `openapiv2/OpenAPIv2.proto`. Vendor extensions
//! (`x-kubernetes-*`) are `NamedAny` entries whose `Any.yaml` holds the value as JSON
//! (a YAML subset), as kube-openapi reads them.

use serde_json::{Map, Value};

/// A protobuf message being written.
#[derive(Default)]
struct W(Vec<u8>);

impl W {
    fn varint(&mut self, mut v: u64) {
        while v >= 0x80 {
            self.0.push((v as u8) | 0x80);
            v >>= 7;
        }
        self.0.push(v as u8);
    }
    fn key(&mut self, field: u32, wire: u8) {
        self.varint((u64::from(field) << 3) | u64::from(wire));
    }
    fn bytes(&mut self, field: u32, b: &[u8]) {
        self.key(field, 2);
        self.varint(b.len() as u64);
        self.0.extend_from_slice(b);
    }
    fn string(&mut self, field: u32, s: &str) {
        if !s.is_empty() {
            self.bytes(field, s.as_bytes());
        }
    }
    fn opt_str(&mut self, field: u32, v: &Value) {
        if let Some(s) = v.as_str() {
            self.string(field, s);
        }
    }
    fn boolean(&mut self, field: u32, v: &Value) {
        if v.as_bool() == Some(true) {
            self.key(field, 0);
            self.varint(1);
        }
    }
    fn double(&mut self, field: u32, v: &Value) {
        if let Some(f) = v.as_f64() {
            self.key(field, 1);
            self.0.extend_from_slice(&f.to_le_bytes());
        }
    }
    fn int64(&mut self, field: u32, v: &Value) {
        if let Some(i) = v.as_i64() {
            self.key(field, 0);
            self.varint(i as u64);
        }
    }
    fn message(&mut self, field: u32, f: impl FnOnce(&mut W)) {
        let mut inner = W::default();
        f(&mut inner);
        self.bytes(field, &inner.0);
    }
    /// `Any{yaml}` (JSON is YAML).
    fn any(&mut self, field: u32, v: &Value) {
        self.message(field, |w| w.string(2, &v.to_string()));
    }
    /// Every `x-` key of `m` as a `NamedAny`.
    fn extensions(&mut self, field: u32, m: &Map<String, Value>) {
        for (k, v) in m.iter().filter(|(k, _)| k.starts_with("x-")) {
            self.message(field, |w| {
                w.string(1, k);
                w.any(2, v);
            });
        }
    }
}

/// Encodes a Swagger 2.0 JSON document (as `super::v2_document` builds it).
pub fn encode_document(doc: &Value) -> Vec<u8> {
    let mut w = W::default();
    w.opt_str(1, &doc["swagger"]);
    w.message(2, |i| {
        i.opt_str(1, &doc["info"]["title"]);
        i.opt_str(2, &doc["info"]["version"]);
    });
    if let Some(paths) = doc["paths"].as_object() {
        w.message(8, |p| {
            for (name, item) in paths {
                p.message(2, |n| {
                    n.string(1, name);
                    n.message(2, |pi| path_item(pi, item));
                });
            }
        });
    }
    if let Some(defs) = doc["definitions"].as_object() {
        w.message(9, |d| {
            for (name, schema) in defs {
                d.message(1, |n| {
                    n.string(1, name);
                    n.message(2, |s| self::schema(s, schema));
                });
            }
        });
    }
    if let Some(sec) = doc["securityDefinitions"].as_object() {
        w.message(13, |d| {
            for (name, item) in sec {
                d.message(1, |n| {
                    n.string(1, name);
                    // SecurityDefinitionsItem.api_key_security
                    n.message(2, |i| {
                        i.message(2, |a| {
                            a.opt_str(1, &item["type"]);
                            a.opt_str(2, &item["name"]);
                            a.opt_str(3, &item["in"]);
                            a.opt_str(4, &item["description"]);
                        })
                    });
                });
            }
        });
    }
    for req in doc["security"].as_array().into_iter().flatten() {
        w.message(12, |r| {
            for (name, scopes) in req.as_object().into_iter().flatten() {
                r.message(1, |n| {
                    n.string(1, name);
                    n.message(2, |a| {
                        for s in scopes.as_array().into_iter().flatten() {
                            a.opt_str(1, s);
                        }
                    });
                });
            }
        });
    }
    w.0
}

fn path_item(w: &mut W, item: &Value) {
    for (method, field) in [("get", 2), ("put", 3), ("post", 4), ("delete", 5), ("options", 6), ("head", 7), ("patch", 8)] {
        if let Some(op) = item.get(method) {
            w.message(field, |o| operation(o, op));
        }
    }
    for p in item["parameters"].as_array().into_iter().flatten() {
        w.message(9, |pi| parameters_item(pi, p));
    }
    if let Some(m) = item.as_object() {
        w.extensions(10, m);
    }
}

fn strings(w: &mut W, field: u32, v: &Value) {
    for s in v.as_array().into_iter().flatten() {
        if let Some(s) = s.as_str() {
            // repeated strings keep empty entries
            w.bytes(field, s.as_bytes());
        }
    }
}

fn operation(w: &mut W, op: &Value) {
    strings(w, 1, &op["tags"]);
    w.opt_str(2, &op["summary"]);
    w.opt_str(3, &op["description"]);
    w.opt_str(5, &op["operationId"]);
    strings(w, 6, &op["produces"]);
    strings(w, 7, &op["consumes"]);
    for p in op["parameters"].as_array().into_iter().flatten() {
        w.message(8, |pi| parameters_item(pi, p));
    }
    if let Some(resps) = op["responses"].as_object() {
        w.message(9, |r| {
            for (code, resp) in resps {
                r.message(1, |n| {
                    n.string(1, code);
                    // ResponseValue.response
                    n.message(2, |v| {
                        v.message(1, |rr| {
                            rr.opt_str(1, &resp["description"]);
                            if resp.get("schema").is_some() {
                                // SchemaItem.schema
                                rr.message(2, |si| si.message(1, |s| schema(s, &resp["schema"])));
                            }
                        })
                    });
                });
            }
        });
    }
    strings(w, 10, &op["schemes"]);
    w.boolean(11, &op["deprecated"]);
    if let Some(m) = op.as_object() {
        w.extensions(13, m);
    }
}

fn parameters_item(w: &mut W, p: &Value) {
    // ParametersItem.parameter
    w.message(1, |param| {
        if p["in"] == "body" {
            param.message(1, |b| {
                b.opt_str(1, &p["description"]);
                b.opt_str(2, &p["name"]);
                b.opt_str(3, &p["in"]);
                b.boolean(4, &p["required"]);
                b.message(5, |s| schema(s, &p["schema"]));
            });
            return;
        }
        param.message(2, |nb| {
            if p["in"] == "path" {
                // PathParameterSubSchema
                nb.message(4, |s| {
                    s.boolean(1, &p["required"]);
                    s.opt_str(2, &p["in"]);
                    s.opt_str(3, &p["description"]);
                    s.opt_str(4, &p["name"]);
                    s.opt_str(5, &p["type"]);
                    s.opt_str(6, &p["format"]);
                    s.boolean(19, &p["uniqueItems"]);
                });
            } else {
                // QueryParameterSubSchema
                nb.message(3, |s| {
                    s.boolean(1, &p["required"]);
                    s.opt_str(2, &p["in"]);
                    s.opt_str(3, &p["description"]);
                    s.opt_str(4, &p["name"]);
                    s.opt_str(6, &p["type"]);
                    s.opt_str(7, &p["format"]);
                    s.boolean(20, &p["uniqueItems"]);
                });
            }
        });
    });
}

/// `openapi.v2.Schema`.
fn schema(w: &mut W, s: &Value) {
    let Some(m) = s.as_object() else {
        return;
    };
    if let Some(Value::String(r)) = m.get("$ref") {
        w.string(1, r);
    }
    w.opt_str(2, &s["format"]);
    w.opt_str(3, &s["title"]);
    w.opt_str(4, &s["description"]);
    if let Some(d) = m.get("default") {
        w.any(5, d);
    }
    w.double(6, &s["multipleOf"]);
    w.double(7, &s["maximum"]);
    w.boolean(8, &s["exclusiveMaximum"]);
    w.double(9, &s["minimum"]);
    w.boolean(10, &s["exclusiveMinimum"]);
    w.int64(11, &s["maxLength"]);
    w.int64(12, &s["minLength"]);
    w.opt_str(13, &s["pattern"]);
    w.int64(14, &s["maxItems"]);
    w.int64(15, &s["minItems"]);
    w.boolean(16, &s["uniqueItems"]);
    w.int64(17, &s["maxProperties"]);
    w.int64(18, &s["minProperties"]);
    strings(w, 19, &s["required"]);
    for e in s["enum"].as_array().into_iter().flatten() {
        w.any(20, e);
    }
    match m.get("additionalProperties") {
        Some(Value::Bool(b)) => w.message(21, |a| {
            a.key(2, 0);
            a.varint(u64::from(*b));
        }),
        Some(v @ Value::Object(_)) => w.message(21, |a| a.message(1, |x| schema(x, v))),
        _ => {}
    }
    match m.get("type") {
        Some(Value::String(t)) => w.message(22, |ti| ti.string(1, t)),
        Some(Value::Array(ts)) => w.message(22, |ti| strings(ti, 1, &Value::Array(ts.clone()))),
        _ => {}
    }
    match m.get("items") {
        Some(Value::Array(items)) => w.message(23, |ii| items.iter().for_each(|x| ii.message(1, |s| schema(s, x)))),
        Some(v @ Value::Object(_)) => w.message(23, |ii| ii.message(1, |s| schema(s, v))),
        _ => {}
    }
    for x in s["allOf"].as_array().into_iter().flatten() {
        w.message(24, |a| schema(a, x));
    }
    if let Some(props) = s["properties"].as_object() {
        w.message(25, |p| {
            for (name, v) in props {
                p.message(1, |n| {
                    n.string(1, name);
                    n.message(2, |x| schema(x, v));
                });
            }
        });
    }
    w.opt_str(26, &s["discriminator"]);
    w.boolean(27, &s["readOnly"]);
    if let Some(e) = m.get("example") {
        w.any(30, e);
    }
    w.extensions(31, m);
}
