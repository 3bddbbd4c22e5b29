//! The field table of the built-in API messages, generated into `schema.txt` by
//! `scripts/gen-protobuf-schema.py` and parsed once on first use.

use std::collections::HashMap;
use std::sync::OnceLock;

/// A field's protobuf type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ty {
    String,
    Bytes,
    Bool,
    Int32,
    Int64,
    Uint32,
    Uint64,
    Double,
    Float,
    /// Another message, by its schema name (`meta.v1.ObjectMeta`).
    Message(String),
}

#[derive(Debug, Clone)]
pub struct Field {
    /// The JSON name (`podIP`); `-` for inline fields.
    pub json: String,
    pub ty: Ty,
    pub repeated: bool,
    /// A `map<string, ty>`: repeated entry messages with key = 1, value = 2.
    pub map: bool,
    /// A non-pointer Go scalar with `omitempty`: its zero value is dropped.
    pub omit_zero: bool,
    /// An embedded Go struct: its fields go into the parent's JSON object.
    pub inline: bool,
}

#[derive(Debug, Default)]
pub struct Message {
    pub fields: HashMap<u32, Field>,
}

pub struct Schema {
    pub messages: HashMap<String, Message>,
    /// Lowercased message name → the name in `messages` (prost spells `CSIDriver` `CsiDriver`).
    folded: HashMap<String, String>,
}

impl Schema {
    pub fn message(&self, name: &str) -> Option<&Message> {
        self.messages.get(name)
    }

    /// A message by name, ignoring ASCII case; returns its canonical name.
    pub fn find(&self, name: &str) -> Option<&str> {
        self.folded.get(&name.to_ascii_lowercase()).map(String::as_str)
    }
}

const TABLE: &str = include_str!("schema.txt");

/// The parsed table.
pub fn schema() -> &'static Schema {
    static SCHEMA: OnceLock<Schema> = OnceLock::new();
    SCHEMA.get_or_init(|| parse(TABLE).expect("protobuf/schema.txt is well-formed"))
}

fn parse(text: &str) -> Result<Schema, String> {
    let mut messages: HashMap<String, Message> = HashMap::new();
    let mut current: Option<String> = None;
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let parts: Vec<&str> = line.split_whitespace().collect();
        if parts[0] == "M" {
            let name = parts.get(1).ok_or_else(|| format!("line {}: message without a name", i + 1))?;
            messages.entry(name.to_string()).or_default();
            current = Some(name.to_string());
            continue;
        }
        let (Some(msg), [no, json, ty, rest @ ..]) = (current.as_ref(), parts.as_slice()) else {
            return Err(format!("line {}: malformed: {line}", i + 1));
        };
        let no: u32 = no.parse().map_err(|_| format!("line {}: bad field number", i + 1))?;
        let flags = rest.first().copied().unwrap_or("");
        let ty = match *ty {
            "string" => Ty::String,
            "bytes" => Ty::Bytes,
            "bool" => Ty::Bool,
            "int32" => Ty::Int32,
            "int64" => Ty::Int64,
            "uint32" => Ty::Uint32,
            "uint64" => Ty::Uint64,
            "double" => Ty::Double,
            "float" => Ty::Float,
            other => Ty::Message(other.to_string()),
        };
        let field = Field {
            json: json.to_string(),
            ty,
            repeated: flags.contains('r'),
            map: flags.contains('m'),
            omit_zero: flags.contains('z'),
            inline: flags.contains('i'),
        };
        messages.get_mut(msg).expect("current message exists").fields.insert(no, field);
    }
    for (name, m) in &messages {
        for f in m.fields.values() {
            if let Ty::Message(t) = &f.ty {
                if !messages.contains_key(t) {
                    return Err(format!("{name}.{}: unknown message {t}", f.json));
                }
            }
        }
    }
    let folded = messages.keys().map(|k| (k.to_ascii_lowercase(), k.clone())).collect();
    Ok(Schema { messages, folded })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_parses_and_is_closed() {
        let s = schema();
        assert!(s.messages.len() > 300);
        let port = &s.message("core.v1.ContainerPort").unwrap().fields;
        assert_eq!(port[&3].json, "containerPort");
        assert!(!port[&3].omit_zero);
        assert_eq!(s.message("core.v1.PodStatus").unwrap().fields[&6].json, "podIP");
        assert!(s.message("core.v1.Volume").unwrap().fields[&2].inline);
        assert_eq!(s.find("storage.v1.csidriver"), Some("storage.v1.CSIDriver"));
    }
}
