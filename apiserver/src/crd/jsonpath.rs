//! The JSONPath subset CRDs use: printer columns (`.spec.cronSpec`,
//! `.status.conditions[?(@.type=="Ready")].status`, `.spec.items[0]`, `.spec.items[*].name`)
//! and scale subresource paths (`.spec.replicas`).

use serde_json::Value;

/// One step of a path.
#[derive(Debug, PartialEq)]
enum Step {
    Field(String),
    Index(usize),
    All,
    /// `[?(@.key=="value")]`
    Filter(String, String),
}

fn parse(path: &str) -> Vec<Step> {
    let path = path.trim().trim_start_matches('{').trim_end_matches('}');
    let mut steps = Vec::new();
    let mut rest = path.trim_start_matches('$');
    while !rest.is_empty() {
        if let Some(r) = rest.strip_prefix('.') {
            let end = r.find(['.', '[']).unwrap_or(r.len());
            if end > 0 {
                steps.push(Step::Field(r[..end].to_string()));
            }
            rest = &r[end..];
        } else if let Some(r) = rest.strip_prefix('[') {
            let Some(end) = r.find(']') else { break };
            let inner = &r[..end];
            steps.push(match inner {
                "*" => Step::All,
                _ if inner.starts_with("?(@.") => {
                    let expr = inner.trim_start_matches("?(@.").trim_end_matches(')');
                    let (k, v) = expr.split_once("==").unwrap_or((expr, ""));
                    Step::Filter(k.trim().to_string(), v.trim().trim_matches(['"', '\'']).to_string())
                }
                _ => match inner.parse() {
                    Ok(i) => Step::Index(i),
                    Err(_) => Step::Field(inner.trim_matches(['"', '\'']).to_string()),
                },
            });
            rest = &r[end + 1..];
        } else {
            let end = rest.find(['.', '[']).unwrap_or(rest.len());
            steps.push(Step::Field(rest[..end].to_string()));
            rest = &rest[end..];
        }
    }
    steps
}

/// Every value the path reaches in `obj`, in document order.
pub fn eval(obj: &Value, path: &str) -> Vec<Value> {
    let mut current = vec![obj];
    for step in parse(path) {
        let mut next = Vec::new();
        for v in current {
            match &step {
                Step::Field(f) => next.extend(v.get(f.as_str())),
                Step::Index(i) => next.extend(v.get(*i)),
                Step::All => match v {
                    Value::Array(a) => next.extend(a.iter()),
                    Value::Object(o) => next.extend(o.values()),
                    _ => {}
                },
                Step::Filter(k, want) => {
                    if let Value::Array(a) = v {
                        next.extend(a.iter().filter(|item| match item.get(k.as_str()) {
                            Some(Value::String(s)) => s == want,
                            Some(other) => other.to_string() == *want,
                            None => false,
                        }));
                    }
                }
            }
        }
        current = next;
    }
    current.into_iter().filter(|v| !v.is_null()).cloned().collect()
}

/// Sets the value at a plain field path (`.spec.replicas`), creating objects on the way.
pub fn set(obj: &mut Value, path: &str, value: Value) {
    let fields: Vec<String> = parse(path)
        .into_iter()
        .filter_map(|s| match s {
            Step::Field(f) => Some(f),
            _ => None,
        })
        .collect();
    let mut cur = obj;
    for f in &fields {
        if !cur.is_object() {
            *cur = Value::Object(Default::default());
        }
        cur = cur.as_object_mut().expect("object").entry(f.clone()).or_insert(Value::Null);
    }
    *cur = value;
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn paths() {
        let o = json!({"spec": {"items": [{"name": "a"}, {"name": "b"}], "n": 3},
                       "status": {"conditions": [{"type": "Ready", "status": "True"}, {"type": "X", "status": "False"}]}});
        assert_eq!(eval(&o, ".spec.n"), [json!(3)]);
        assert_eq!(eval(&o, ".spec.items[1].name"), [json!("b")]);
        assert_eq!(eval(&o, ".spec.items[*].name"), [json!("a"), json!("b")]);
        assert_eq!(eval(&o, ".status.conditions[?(@.type==\"Ready\")].status"), [json!("True")]);
        assert!(eval(&o, ".spec.missing").is_empty());
        assert_eq!(eval(&o, "{.spec.n}"), [json!(3)]);
    }

    #[test]
    fn set_creates_parents() {
        let mut o = json!({});
        set(&mut o, ".spec.replicas", json!(4));
        assert_eq!(o, json!({"spec": {"replicas": 4}}));
    }
}
