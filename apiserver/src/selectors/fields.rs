//! Kubernetes field selectors, following `k8s.io/apimachinery/pkg/fields`.
//!
//! The string form is a comma-separated AND of `field=value`,
//! `field==value` and `field!=value` terms, e.g.
//! `metadata.name=web,status.phase!=Running`. Values may contain `,`, `=`
//! and `\` only when escaped with a backslash (`\,`, `\=`, `\\`); field
//! names are not unescaped. Unlike label selectors there is no whitespace
//! trimming: upstream passes terms through verbatim, and so do we.
//!
//! Which field names are supported is decided per kind by the server, which
//! is why [`FieldSelector::requirements`] exposes the parsed terms.
//!
//! This module is pure: it depends only on `std`.

use std::collections::BTreeMap;
use std::fmt;

pub use super::SelectorError;

/// The operator of a field requirement. `==` parses as [`Op::Equals`]
/// (upstream folds both into one "has" term).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Op {
    /// `field=value` or `field==value`
    Equals,
    /// `field!=value`
    NotEquals,
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Op::Equals => "=",
            Op::NotEquals => "!=",
        })
    }
}

/// A parsed field selector: the AND of `(field, op, value)` requirements.
/// Values are stored unescaped.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct FieldSelector {
    requirements: Vec<(String, Op, String)>,
}

impl FieldSelector {
    /// The selector matching everything.
    pub fn everything() -> Self {
        Self::default()
    }

    /// Builds a selector from requirements (values unescaped).
    pub fn from_requirements(requirements: Vec<(String, Op, String)>) -> Self {
        Self { requirements }
    }

    /// The requirements, in upstream's order (terms sorted by their raw text).
    /// The server checks each field name against the kind's supported set.
    pub fn requirements(&self) -> &[(String, Op, String)] {
        &self.requirements
    }

    /// True when the selector has no requirement (matches everything);
    /// upstream `Selector.Empty()`.
    pub fn empty(&self) -> bool {
        self.requirements.is_empty()
    }

    /// Whether the object's field set satisfies every requirement. A field
    /// absent from the map compares as the empty string, like upstream
    /// `fields.Set.Get`.
    pub fn matches(&self, fields: &BTreeMap<String, String>) -> bool {
        self.requirements.iter().all(|(field, op, value)| {
            let actual = fields.get(field).map(String::as_str).unwrap_or("");
            match op {
                Op::Equals => actual == value,
                Op::NotEquals => actual != value,
            }
        })
    }

    /// If the selector pins `field` to one value with `=`/`==`, returns it
    /// (upstream `RequiresExactMatch`); handy to narrow a listing, e.g. by
    /// `metadata.name` or `spec.nodeName`.
    pub fn requires_exact_match(&self, field: &str) -> Option<&str> {
        self.requirements
            .iter()
            .find(|(f, op, _)| f == field && *op == Op::Equals)
            .map(|(_, _, v)| v.as_str())
    }
}

impl fmt::Display for FieldSelector {
    /// Canonical string form with values re-escaped.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, (field, op, value)) in self.requirements.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{field}{op}{}", escape_value(value))?;
        }
        Ok(())
    }
}

/// Parses a field selector string (upstream `fields.ParseSelector`).
/// The empty string selects everything; empty terms (`a=b,,c=d`) are
/// skipped, as upstream does.
pub fn parse(s: &str) -> Result<FieldSelector, SelectorError> {
    let mut terms = split_terms(s);
    // Upstream sorts the raw terms before parsing; keeping that makes the
    // canonical form identical.
    terms.sort();
    let mut requirements = Vec::new();
    for term in terms {
        if term.is_empty() {
            continue;
        }
        let Some((lhs, op, rhs)) = split_term(term) else {
            return Err(SelectorError::new(format!(
                "invalid selector: '{s}'; can't understand '{term}'"
            )));
        };
        let value = unescape_value(rhs)?;
        requirements.push((lhs.to_string(), op, value));
    }
    Ok(FieldSelector { requirements })
}

/// Escapes `\`, `,` and `=` in a value with a backslash (upstream
/// `fields.EscapeValue`).
pub fn escape_value(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, '\\' | ',' | '=') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// Reverses [`escape_value`]; unescaped `,`/`=` and unknown escape
/// sequences are errors (upstream `fields.UnescapeValue`).
pub fn unescape_value(s: &str) -> Result<String, SelectorError> {
    let mut out = String::with_capacity(s.len());
    let mut in_slash = false;
    for c in s.chars() {
        if in_slash {
            match c {
                '\\' | ',' | '=' => out.push(c),
                other => {
                    return Err(SelectorError::new(format!(
                        "invalid field selector: invalid escape sequence: \\{other}"
                    )))
                }
            }
            in_slash = false;
            continue;
        }
        match c {
            '\\' => in_slash = true,
            ',' | '=' => {
                return Err(SelectorError::new(format!(
                    "invalid field selector: unescaped character in value: {c}"
                )))
            }
            other => out.push(other),
        }
    }
    if in_slash {
        return Err(SelectorError::new(
            "invalid field selector: invalid escape sequence: \\",
        ));
    }
    Ok(out)
}

/// Splits on commas that are not backslash-escaped; the escapes are kept
/// (they are removed later by [`unescape_value`]).
fn split_terms(s: &str) -> Vec<&str> {
    if s.is_empty() {
        return Vec::new();
    }
    let mut terms = Vec::new();
    let mut start = 0;
    let mut in_slash = false;
    for (i, c) in s.char_indices() {
        if in_slash {
            in_slash = false;
        } else if c == '\\' {
            in_slash = true;
        } else if c == ',' {
            terms.push(&s[start..i]);
            start = i + 1;
        }
    }
    terms.push(&s[start..]);
    terms
}

/// Splits a term at the first operator. The field name cannot contain
/// escapes, so the first occurrence wins; `!=` and `==` are tried before `=`
/// so that no `=` is left at the start of the value.
fn split_term(term: &str) -> Option<(&str, Op, &str)> {
    for (i, _) in term.char_indices() {
        let rest = &term[i..];
        if rest.starts_with("!=") {
            return Some((&term[..i], Op::NotEquals, &term[i + 2..]));
        }
        if rest.starts_with("==") {
            return Some((&term[..i], Op::Equals, &term[i + 2..]));
        }
        if rest.starts_with('=') {
            return Some((&term[..i], Op::Equals, &term[i + 1..]));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn empty_selects_everything() {
        let s = parse("").unwrap();
        assert!(s.empty());
        assert!(s.matches(&set(&[])));
        assert_eq!(s.to_string(), "");
        assert!(FieldSelector::everything().empty());
        // Only empty terms.
        assert!(parse(",").unwrap().empty());
    }

    #[test]
    fn operators() {
        let s = parse("metadata.name=web").unwrap();
        assert_eq!(
            s.requirements(),
            &[("metadata.name".to_string(), Op::Equals, "web".to_string())]
        );
        assert!(s.matches(&set(&[("metadata.name", "web")])));
        assert!(!s.matches(&set(&[("metadata.name", "db")])));
        let s = parse("metadata.name==web").unwrap();
        assert_eq!(s.requirements()[0].1, Op::Equals);
        assert_eq!(s.requirements()[0].2, "web");
        let s = parse("status.phase!=Running").unwrap();
        assert_eq!(s.requirements()[0].1, Op::NotEquals);
        assert!(s.matches(&set(&[("status.phase", "Pending")])));
        assert!(!s.matches(&set(&[("status.phase", "Running")])));
    }

    #[test]
    fn absent_field_compares_as_empty() {
        assert!(parse("spec.nodeName=").unwrap().matches(&set(&[])));
        assert!(!parse("spec.nodeName=n1").unwrap().matches(&set(&[])));
        assert!(parse("spec.nodeName!=n1").unwrap().matches(&set(&[])));
        assert!(!parse("spec.nodeName!=").unwrap().matches(&set(&[])));
        assert!(parse("spec.nodeName!=")
            .unwrap()
            .matches(&set(&[("spec.nodeName", "n1")])));
    }

    #[test]
    fn conjunction_sorted() {
        let s = parse("b=2,a!=1").unwrap();
        assert_eq!(s.requirements()[0].0, "a");
        assert_eq!(s.requirements()[1].0, "b");
        assert_eq!(s.to_string(), "a!=1,b=2");
        assert!(s.matches(&set(&[("a", "0"), ("b", "2")])));
        assert!(!s.matches(&set(&[("a", "1"), ("b", "2")])));
        assert!(!s.matches(&set(&[("a", "0"), ("b", "3")])));
        // `==` normalises to `=` in the canonical form.
        assert_eq!(parse("x==y").unwrap().to_string(), "x=y");
    }

    #[test]
    fn escaping() {
        let s = parse(r"a=x\,y\=z\\w").unwrap();
        assert_eq!(s.requirements()[0].2, r"x,y=z\w");
        assert!(s.matches(&set(&[("a", r"x,y=z\w")])));
        assert_eq!(s.to_string(), r"a=x\,y\=z\\w");
        // An escaped comma does not split terms.
        let s = parse(r"a=1\,2,b=3").unwrap();
        assert_eq!(s.requirements().len(), 2);
        assert_eq!(s.requirements()[0].2, "1,2");
        assert_eq!(escape_value(r"a,b=c\d"), r"a\,b\=c\\d");
        assert_eq!(
            unescape_value(&escape_value(r"a,b=c\d")).unwrap(),
            r"a,b=c\d"
        );
    }

    #[test]
    fn escape_errors() {
        assert_eq!(
            parse(r"a=b\c").unwrap_err().message(),
            r"invalid field selector: invalid escape sequence: \c"
        );
        assert_eq!(
            parse(r"a=b\").unwrap_err().message(),
            r"invalid field selector: invalid escape sequence: \"
        );
        // `a=b=c`: the value contains an unescaped `=`.
        assert_eq!(
            parse("a=b=c").unwrap_err().message(),
            "invalid field selector: unescaped character in value: ="
        );
        assert!(parse("a===b").is_err());
    }

    #[test]
    fn unparseable_terms() {
        assert_eq!(
            parse("a=b,foo").unwrap_err().message(),
            "invalid selector: 'a=b,foo'; can't understand 'foo'"
        );
        assert!(parse("metadata.name").is_err());
        assert!(parse("a<b").is_err());
    }

    #[test]
    fn empty_terms_skipped_and_no_trimming() {
        let s = parse("a=b,,c=d").unwrap();
        assert_eq!(s.requirements().len(), 2);
        // Whitespace is data, like upstream.
        let s = parse("a = b").unwrap();
        assert_eq!(s.requirements()[0].0, "a ");
        assert_eq!(s.requirements()[0].2, " b");
        // Empty field name is accepted by the parser (the server rejects it
        // as an unsupported field).
        assert_eq!(parse("=x").unwrap().requirements()[0].0, "");
    }

    #[test]
    fn requires_exact_match() {
        let s = parse("metadata.name=web,spec.nodeName!=n1,metadata.namespace==ns").unwrap();
        assert_eq!(s.requires_exact_match("metadata.name"), Some("web"));
        assert_eq!(s.requires_exact_match("metadata.namespace"), Some("ns"));
        assert_eq!(s.requires_exact_match("spec.nodeName"), None);
        assert_eq!(s.requires_exact_match("other"), None);
    }

    #[test]
    fn from_requirements_roundtrip() {
        let s = FieldSelector::from_requirements(vec![("a".into(), Op::NotEquals, "x,y".into())]);
        assert_eq!(s.to_string(), r"a!=x\,y");
        assert_eq!(parse(&s.to_string()).unwrap(), s);
    }
}
