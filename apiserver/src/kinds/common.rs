//! Helpers shared by the kinds' strategies: reading and defaulting JSON objects, upstream's
//! small validators (ports, quantities, int-or-percent, label selectors, immutability) and
//! the cell formats `kubectl get` uses.

use std::cmp::Ordering;

use serde_json::{json, Value};

use crate::validation::{self, FieldError, FieldErrors};

/// The string at `v`, `""` when absent or not a string.
pub fn s(v: &Value) -> &str {
    v.as_str().unwrap_or_default()
}

/// The array at `v`, empty when absent.
pub fn arr(v: &Value) -> &[Value] {
    v.as_array().map(Vec::as_slice).unwrap_or_default()
}

/// Number of entries of the map or array at `v`.
pub fn len(v: &Value) -> usize {
    match v {
        Value::Object(m) => m.len(),
        Value::Array(a) => a.len(),
        _ => 0,
    }
}

/// Whether `v` holds something (not absent/null).
pub fn is_set(v: &Value) -> bool {
    !v.is_null()
}

/// The integer at `v`, if any.
pub fn int(v: &Value) -> Option<i64> {
    v.as_i64()
}

/// Whether `v` is `true`.
pub fn truthy(v: &Value) -> bool {
    v.as_bool().unwrap_or(false)
}

/// The entry `key` of `v`, turning `v` into an object and inserting `null` as needed.
pub fn entry<'a>(v: &'a mut Value, key: &str) -> &'a mut Value {
    if !v.is_object() {
        *v = json!({});
    }
    v.as_object_mut().expect("object").entry(key.to_string()).or_insert(Value::Null)
}

/// The object at `v[key]`, created empty when absent (a Go struct field that is never nil).
pub fn child<'a>(v: &'a mut Value, key: &str) -> &'a mut Value {
    let e = entry(v, key);
    if !e.is_object() {
        *e = json!({});
    }
    e
}

/// Sets `v[key]` when it is absent, null or an empty string (upstream's `if x == "" / nil`).
pub fn set_default(v: &mut Value, key: &str, value: impl Into<Value>) {
    let e = entry(v, key);
    if e.is_null() || e.as_str() == Some("") {
        *e = value.into();
    }
}

/// Removes `v[key]`.
pub fn remove(v: &mut Value, key: &str) {
    if let Some(m) = v.as_object_mut() {
        m.remove(key);
    }
}

/// Calls `f` on every element of the array at `v[key]`.
pub fn each_mut(v: &mut Value, key: &str, mut f: impl FnMut(&mut Value)) {
    if let Some(items) = v.get_mut(key).and_then(Value::as_array_mut) {
        items.iter_mut().for_each(&mut f);
    }
}

/// `v` without nulls and empty arrays: upstream's semantic equality treats nil and empty
/// slices alike, and absent JSON fields are nil.
pub fn semantic(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.iter()
                .filter(|(_, x)| !x.is_null() && !matches!(x, Value::Array(a) if a.is_empty()))
                .map(|(k, x)| (k.clone(), semantic(x)))
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.iter().map(semantic).collect()),
        other => other.clone(),
    }
}

/// Upstream's semantic deep equality on two JSON values.
pub fn same(a: &Value, b: &Value) -> bool {
    let empty = |v: &Value| v.is_null() || matches!(v, Value::Array(x) if x.is_empty());
    (empty(a) && empty(b)) || semantic(a) == semantic(b)
}

/// Upstream's `ValidateImmutableField`: `field is immutable` when `new` differs from `old`.
pub fn immutable(errs: &mut FieldErrors, new: &Value, old: &Value, field: &str) {
    if !same(new, old) {
        errs.push(FieldError::invalid(field, new.clone(), "field is immutable"));
    }
}

/// Upstream's `ValidateNonnegativeField` for an optional integer.
pub fn nonnegative(errs: &mut FieldErrors, v: &Value, field: &str) {
    if let Some(n) = v.as_i64() {
        if n < 0 {
            errs.push(FieldError::invalid(field, n, "must be greater than or equal to 0"));
        }
    }
}

/// Pushes `Invalid` errors for a DNS-1123 label (upstream's `ValidateDNS1123Label`).
pub fn dns1123_label(errs: &mut FieldErrors, value: &str, field: &str) {
    validation::push_invalid(errs, field, value, validation::dns1123_label(value));
}

/// Pushes `Invalid` errors for a DNS-1123 subdomain.
pub fn dns1123_subdomain(errs: &mut FieldErrors, value: &str, field: &str) {
    validation::push_invalid(errs, field, value, validation::dns1123_subdomain(value));
}

/// Upstream's `ValidateLabels`: keys as qualified names, values as label values.
pub fn validate_labels(errs: &mut FieldErrors, labels: &Value, field: &str) {
    if let Some(m) = labels.as_object() {
        for (k, v) in m {
            validation::push_invalid(errs, field, k, validation::qualified_name(k));
            validation::push_invalid(errs, field, s(v), validation::label_value(s(v)));
        }
    }
}

/// Upstream's `IsValidPortNum`.
pub fn port_num_errors(port: i64) -> Vec<String> {
    if (1..=65535).contains(&port) {
        Vec::new()
    } else {
        vec!["must be between 1 and 65535, inclusive".to_string()]
    }
}

/// Upstream's `IsValidPortName` (IANA service names).
pub fn port_name_errors(name: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if name.len() > 15 {
        errs.push("must be no more than 15 characters".to_string());
    }
    if name.is_empty() || !name.bytes().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-') {
        errs.push("must contain only alpha-numeric characters (a-z, 0-9), and hyphens (-)".to_string());
    }
    if !name.bytes().any(|c| c.is_ascii_lowercase()) {
        errs.push("must contain at least one letter (a-z)".to_string());
    }
    if name.contains("--") {
        errs.push("must not contain consecutive hyphens (--)".to_string());
    }
    if name.starts_with('-') || name.ends_with('-') {
        errs.push("must not begin or end with a hyphen (-)".to_string());
    }
    errs
}

/// Upstream's `ValidatePortNumOrName` for an int-or-string port.
pub fn validate_port_num_or_name(errs: &mut FieldErrors, port: &Value, field: &str) {
    match port {
        Value::Number(n) => {
            let n = n.as_i64().unwrap_or(0);
            for m in port_num_errors(n) {
                errs.push(FieldError::invalid(field, n, m));
            }
        }
        Value::String(name) => {
            for m in port_name_errors(name) {
                errs.push(FieldError::invalid(field, name.as_str(), m));
            }
        }
        _ => {}
    }
}

/// Upstream's supported port protocols, sorted as its error messages list them.
pub const PROTOCOLS: &[&str] = &["SCTP", "TCP", "UDP"];

/// A required enum: `Required` when empty, `Unsupported value` when not one of `supported`.
pub fn validate_enum(errs: &mut FieldErrors, value: &Value, field: &str, supported: &[&str]) {
    let v = s(value);
    if v.is_empty() {
        errs.push(FieldError::required(field, ""));
    } else if !supported.contains(&v) {
        errs.push(FieldError::not_supported(field, v, supported));
    }
}

/// An optional enum: only checked when set.
pub fn validate_optional_enum(errs: &mut FieldErrors, value: &Value, field: &str, supported: &[&str]) {
    if let Some(v) = value.as_str() {
        if !supported.contains(&v) {
            errs.push(FieldError::not_supported(field, v, supported));
        }
    }
}

// ---- int-or-percent (rolling update parameters, PDB) ----

/// Upstream's `ValidatePositiveIntOrPercent`.
pub fn validate_int_or_percent(errs: &mut FieldErrors, v: &Value, field: &str) {
    match v {
        Value::String(p) => {
            let ok = p.len() > 1 && p.ends_with('%') && p[..p.len() - 1].bytes().all(|c| c.is_ascii_digit());
            if !ok {
                errs.push(FieldError::invalid(field, p.as_str(), "a valid percent string must be a numeric string followed by an ending '%' (e.g. '1%',  or '93%', regex used for validation is '[0-9]+%')"));
            }
        }
        Value::Number(_) => nonnegative(errs, v, field),
        _ => {}
    }
}

/// The integer or percentage of an int-or-string (`None` if unparsable); upstream's
/// `getIntOrPercentValue`.
pub fn int_or_percent_value(v: &Value) -> Option<i64> {
    match v {
        Value::Number(n) => n.as_i64(),
        Value::String(p) => p.strip_suffix('%').and_then(|n| n.parse().ok()),
        _ => None,
    }
}

/// Upstream's `IsNotMoreThan100Percent`.
pub fn not_more_than_100_percent(errs: &mut FieldErrors, v: &Value, field: &str) {
    if let Value::String(p) = v {
        if int_or_percent_value(v).is_some_and(|n| n > 100) {
            errs.push(FieldError::invalid(field, p.as_str(), "must not be greater than 100%"));
        }
    }
}

// ---- label selectors ----

/// Upstream's `ValidateLabelSelector` (strict: label values in selectors must be valid).
pub fn validate_label_selector(errs: &mut FieldErrors, sel: &Value, field: &str) {
    if sel.is_null() {
        return;
    }
    validate_labels(errs, &sel["matchLabels"], &format!("{field}.matchLabels"));
    for (i, expr) in arr(&sel["matchExpressions"]).iter().enumerate() {
        let path = format!("{field}.matchExpressions[{i}]");
        let values = arr(&expr["values"]);
        match s(&expr["operator"]) {
            "In" | "NotIn" => {
                if values.is_empty() {
                    errs.push(FieldError::required(
                        format!("{path}.values"),
                        "must be specified when `operator` is 'In' or 'NotIn'",
                    ));
                }
            }
            "Exists" | "DoesNotExist" => {
                if !values.is_empty() {
                    errs.push(FieldError::forbidden(
                        format!("{path}.values"),
                        "may not be specified when `operator` is 'Exists' or 'DoesNotExist'",
                    ));
                }
            }
            op => errs.push(FieldError::invalid(format!("{path}.operator"), op, "not a valid selector operator")),
        }
        let key = s(&expr["key"]);
        validation::push_invalid(errs, &format!("{path}.key"), key, validation::qualified_name(key));
        for (j, v) in values.iter().enumerate() {
            validation::push_invalid(errs, &format!("{path}.values[{j}]"), s(v), validation::label_value(s(v)));
        }
    }
}

/// Whether a LabelSelector selects nothing in particular (no labels, no expressions).
pub fn selector_is_empty(sel: &Value) -> bool {
    len(&sel["matchLabels"]) + len(&sel["matchExpressions"]) == 0
}

/// Whether a LabelSelector matches a label map (`metav1.LabelSelectorAsSelector` +
/// `Matches`). A null selector matches nothing; an empty one matches everything.
pub fn selector_matches(sel: &Value, labels: &Value) -> bool {
    if sel.is_null() {
        return false;
    }
    let label = |k: &str| labels.get(k).and_then(Value::as_str);
    let by_labels = sel["matchLabels"]
        .as_object()
        .is_none_or(|m| m.iter().all(|(k, v)| label(k) == v.as_str()));
    by_labels
        && arr(&sel["matchExpressions"]).iter().all(|e| {
            let key = s(&e["key"]);
            let values: Vec<&str> = arr(&e["values"]).iter().map(s).collect();
            match s(&e["operator"]) {
                "In" => label(key).is_some_and(|v| values.contains(&v)),
                "NotIn" => label(key).is_none_or(|v| !values.contains(&v)),
                "Exists" => label(key).is_some(),
                "DoesNotExist" => label(key).is_none(),
                _ => false,
            }
        })
}

/// Whether a plain map selector (Services, ReplicationControllers) matches a label map.
pub fn map_selector_matches(sel: &Value, labels: &Value) -> bool {
    sel.as_object().is_some_and(|m| m.iter().all(|(k, v)| labels.get(k).and_then(Value::as_str) == v.as_str()))
}

/// A LabelSelector as upstream's `labels.Selector.String()`: requirements sorted by key.
pub fn selector_string(sel: &Value) -> String {
    let mut reqs: Vec<(String, String)> = Vec::new();
    if let Some(m) = sel["matchLabels"].as_object() {
        for (k, v) in m {
            reqs.push((k.clone(), format!("{k}={}", s(v))));
        }
    }
    for e in arr(&sel["matchExpressions"]) {
        let key = s(&e["key"]);
        let mut values: Vec<&str> = arr(&e["values"]).iter().map(s).collect();
        values.sort_unstable();
        let r = match s(&e["operator"]) {
            "In" => format!("{key} in ({})", values.join(",")),
            "NotIn" => format!("{key} notin ({})", values.join(",")),
            "Exists" => key.to_string(),
            "DoesNotExist" => format!("!{key}"),
            _ => continue,
        };
        reqs.push((key.to_string(), r));
    }
    reqs.sort_by(|a, b| a.0.cmp(&b.0));
    reqs.into_iter().map(|(_, r)| r).collect::<Vec<_>>().join(",")
}

/// `metav1.FormatLabelSelector`: the selector string, `<none>` when empty.
pub fn format_selector(sel: &Value) -> Value {
    let s = selector_string(sel);
    if s.is_empty() { json!("<none>") } else { json!(s) }
}

// ---- quantities ----

const QUANTITY_ERR: &str = "quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'";

/// A parsed resource quantity, in nano-units (rounded up as upstream rounds to its scale).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Quantity(pub i128);

impl Quantity {
    pub fn is_zero(self) -> bool {
        self.0 == 0
    }
}

/// Parses a Kubernetes quantity (`100m`, `1Gi`, `1.5`, `2e3`), or upstream's error message.
pub fn parse_quantity(q: &str) -> Result<Quantity, String> {
    let err = || QUANTITY_ERR.to_string();
    let (sign, rest) = match q.as_bytes().first() {
        Some(b'-') => (-1i128, &q[1..]),
        Some(b'+') => (1, &q[1..]),
        _ => (1, q),
    };
    let num_end = rest.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(rest.len());
    let (num, suffix) = rest.split_at(num_end);
    if num.is_empty() || num.matches('.').count() > 1 || num == "." {
        return Err(err());
    }
    let (int_part, frac_part) = num.split_once('.').unwrap_or((num, ""));
    // Value = digits * 10^(exp10) * 2^(exp2).
    let digits = format!("{int_part}{frac_part}");
    let mut exp10: i32 = -(frac_part.len() as i32);
    let mut exp2: u32 = 0;
    match suffix {
        "" => {}
        "n" => exp10 -= 9,
        "u" => exp10 -= 6,
        "m" => exp10 -= 3,
        "k" => exp10 += 3,
        "M" => exp10 += 6,
        "G" => exp10 += 9,
        "T" => exp10 += 12,
        "P" => exp10 += 15,
        "E" => exp10 += 18,
        "Ki" => exp2 = 10,
        "Mi" => exp2 = 20,
        "Gi" => exp2 = 30,
        "Ti" => exp2 = 40,
        "Pi" => exp2 = 50,
        "Ei" => exp2 = 60,
        s if s.starts_with(['e', 'E']) => {
            let e: i32 = s[1..].parse().map_err(|_| err())?;
            exp10 += e;
        }
        _ => return Err(err()),
    }
    // Work in nano-units; sub-nano remainders round up, as upstream rounds to its scale.
    exp10 += 9;
    let digits = digits.trim_start_matches('0');
    let mut v: i128 = 0;
    for c in digits.bytes() {
        v = v.checked_mul(10).and_then(|v| v.checked_add((c - b'0') as i128)).ok_or_else(err)?;
    }
    v = v.checked_mul(1i128 << exp2).ok_or_else(err)?;
    if exp10 >= 0 {
        for _ in 0..exp10 {
            v = v.checked_mul(10).ok_or_else(err)?;
        }
    } else if v != 0 {
        let div = (0..-exp10).try_fold(1i128, |d, _| d.checked_mul(10));
        v = match div {
            Some(d) => (v + d - 1) / d,
            None => 1,
        };
    }
    Ok(Quantity(sign * v))
}

/// Compares two quantity strings (unparsable ones compare equal).
pub fn cmp_quantity(a: &str, b: &str) -> Ordering {
    match (parse_quantity(a), parse_quantity(b)) {
        (Ok(x), Ok(y)) => x.cmp(&y),
        _ => Ordering::Equal,
    }
}

// ---- table cells ----

/// `kubectl`'s `layoutContainerCells`: names and images, comma-separated.
pub fn container_cells(pod_spec: &Value) -> (String, String) {
    let cs = arr(&pod_spec["containers"]);
    let names = cs.iter().map(|c| s(&c["name"])).collect::<Vec<_>>().join(",");
    let images = cs.iter().map(|c| s(&c["image"])).collect::<Vec<_>>().join(",");
    (names, images)
}

/// A "ready/desired"-style cell.
pub fn ratio(a: &Value, b: &Value) -> Value {
    json!(format!("{}/{}", a.as_i64().unwrap_or(0), b.as_i64().unwrap_or(0)))
}

/// An integer cell defaulting to 0.
pub fn int_cell(v: &Value) -> Value {
    json!(v.as_i64().unwrap_or(0))
}

/// `translateTimestampSince` for a possibly absent timestamp.
pub fn since(ts: &Value) -> String {
    crate::registry::table::age(ts)
}

/// Whether a condition of `type_` with status `True` is in the array at `conds`.
pub fn has_true_condition(conds: &Value, type_: &str) -> bool {
    arr(conds).iter().any(|c| s(&c["type"]) == type_ && s(&c["status"]) == "True")
}

/// Whether a string is a valid IPv4 or IPv6 address.
pub fn is_ip(v: &str) -> bool {
    v.parse::<std::net::IpAddr>().is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantities() {
        assert_eq!(parse_quantity("1").unwrap(), Quantity(1_000_000_000));
        assert_eq!(parse_quantity("100m").unwrap(), parse_quantity("0.1").unwrap());
        assert_eq!(parse_quantity("1Ki").unwrap(), Quantity(1024 * 1_000_000_000));
        assert_eq!(parse_quantity("1k").unwrap(), parse_quantity("1e3").unwrap());
        assert_eq!(parse_quantity("1n").unwrap(), Quantity(1));
        assert!(parse_quantity("1x").is_err());
        assert!(parse_quantity("").is_err());
        assert!(parse_quantity("-1").unwrap() < Quantity(0));
        assert_eq!(cmp_quantity("2", "1000m"), Ordering::Greater);
    }

    #[test]
    fn selectors() {
        let sel = json!({"matchLabels": {"app": "a"}, "matchExpressions": [{"key": "tier", "operator": "In", "values": ["b", "a"]}]});
        assert!(selector_matches(&sel, &json!({"app": "a", "tier": "a"})));
        assert!(!selector_matches(&sel, &json!({"app": "a"})));
        assert!(!selector_matches(&Value::Null, &json!({})));
        assert_eq!(selector_string(&sel), "app=a,tier in (a,b)");
        let mut errs = Vec::new();
        validate_label_selector(&mut errs, &json!({"matchExpressions": [{"key": "k", "operator": "In"}]}), "spec.selector");
        assert_eq!(errs[0].to_string(), "spec.selector.matchExpressions[0].values: Required value: must be specified when `operator` is 'In' or 'NotIn'");
    }

    #[test]
    fn equality_and_ports() {
        assert!(same(&json!({"a": null, "b": []}), &json!({})));
        assert!(!same(&json!({"a": 1}), &json!({})));
        assert!(port_name_errors("http").is_empty());
        assert!(!port_name_errors("123").is_empty());
        assert!(port_num_errors(0).len() == 1);
        let mut errs = Vec::new();
        validate_int_or_percent(&mut errs, &json!("25"), "x");
        assert_eq!(errs.len(), 1);
    }
}
