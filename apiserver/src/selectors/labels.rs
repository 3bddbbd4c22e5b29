//! Kubernetes label selectors, following `k8s.io/apimachinery/pkg/labels`.
//!
//! Two input forms are supported:
//!
//! * the string form used by `?labelSelector=` and `kubectl -l`
//!   (`app=web,tier!=db,env in (prod,staging),!legacy`), parsed by [`parse`];
//! * the structured `metav1.LabelSelector` JSON object (`matchLabels` +
//!   `matchExpressions`) found in Deployments, Services' friends, PDBs, …,
//!   converted by [`from_label_selector_json`].
//!
//! Both produce a [`LabelSelector`], a conjunction of [`Requirement`]s sorted
//! by key (upstream sorts too, which makes `Display` output canonical).
//!
//! This module is pure: it depends only on `std` and `serde_json`.

use std::fmt;

use serde_json::{Map, Value};

pub use super::SelectorError;

/// The operator of one label requirement.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Operator {
    /// `key=value`
    Equals,
    /// `key==value` (same meaning as `=`; kept apart so `Display` round-trips)
    DoubleEquals,
    /// `key!=value` — also matches when the key is absent.
    NotEquals,
    /// `key in (a,b)`
    In,
    /// `key notin (a,b)` — also matches when the key is absent.
    NotIn,
    /// `key`
    Exists,
    /// `!key`
    DoesNotExist,
    /// `key>5` — label value parsed as an integer must be greater.
    GreaterThan,
    /// `key<5` — label value parsed as an integer must be smaller.
    LessThan,
}

impl Operator {
    fn symbol(self) -> &'static str {
        match self {
            Operator::Equals => "=",
            Operator::DoubleEquals => "==",
            Operator::NotEquals => "!=",
            Operator::In => " in ",
            Operator::NotIn => " notin ",
            Operator::Exists => "",
            Operator::DoesNotExist => "!",
            Operator::GreaterThan => ">",
            Operator::LessThan => "<",
        }
    }
}

/// One `key <op> values` term of a selector.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Requirement {
    key: String,
    operator: Operator,
    /// Sorted and de-duplicated (upstream stores a string set).
    values: Vec<String>,
}

impl Requirement {
    /// Builds a validated requirement (upstream `labels.NewRequirement`):
    /// the key must be a qualified name, every value a valid label value,
    /// and the number of values must fit the operator.
    pub fn new(
        key: impl Into<String>,
        operator: Operator,
        values: Vec<String>,
    ) -> Result<Self, SelectorError> {
        let key = key.into();
        validate_label_key(&key, "key")?;
        match operator {
            Operator::In | Operator::NotIn => {
                if values.is_empty() {
                    return Err(SelectorError::new(format!(
                        "values: Invalid value: {}: for 'in', 'notin' operators, values set can't be empty",
                        go_string_slice(&values)
                    )));
                }
            }
            Operator::Equals | Operator::DoubleEquals | Operator::NotEquals => {
                if values.len() != 1 {
                    return Err(SelectorError::new(format!(
                        "values: Invalid value: {}: exact-match compatibility requires one single value",
                        go_string_slice(&values)
                    )));
                }
            }
            Operator::Exists | Operator::DoesNotExist => {
                if !values.is_empty() {
                    return Err(SelectorError::new(format!(
                        "values: Invalid value: {}: values set must be empty for exists and does not exist",
                        go_string_slice(&values)
                    )));
                }
            }
            Operator::GreaterThan | Operator::LessThan => {
                if values.len() != 1 {
                    return Err(SelectorError::new(format!(
                        "values: Invalid value: {}: for 'Gt', 'Lt' operators, exactly one value is required",
                        go_string_slice(&values)
                    )));
                }
                for (i, v) in values.iter().enumerate() {
                    if v.parse::<i64>().is_err() {
                        return Err(SelectorError::new(format!(
                            "values[{i}]: Invalid value: {v:?}: for 'Gt', 'Lt' operators, the value must be an integer"
                        )));
                    }
                }
            }
        }
        for (i, v) in values.iter().enumerate() {
            validate_label_value(&key, v, i)?;
        }
        let mut values = values;
        values.sort();
        values.dedup();
        Ok(Self {
            key,
            operator,
            values,
        })
    }

    /// The label key.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// The operator.
    pub fn operator(&self) -> Operator {
        self.operator
    }

    /// The values (sorted, de-duplicated; empty for Exists/DoesNotExist).
    pub fn values(&self) -> &[String] {
        &self.values
    }

    /// Whether a label set satisfies this requirement (upstream
    /// `Requirement.Matches`). Non-string label values are compared through
    /// their JSON text, which never happens for valid objects.
    pub fn matches(&self, labels: &Map<String, Value>) -> bool {
        let value = labels.get(&self.key).map(label_value_text);
        let has = |v: &str| self.values.iter().any(|x| x == v);
        match self.operator {
            Operator::Equals | Operator::DoubleEquals | Operator::In => {
                value.is_some_and(|v| has(&v))
            }
            // Upstream: an absent key satisfies `!=` and `notin`.
            Operator::NotEquals | Operator::NotIn => value.is_none_or(|v| !has(&v)),
            Operator::Exists => value.is_some(),
            Operator::DoesNotExist => value.is_none(),
            Operator::GreaterThan | Operator::LessThan => {
                let Some(v) = value else { return false };
                // A label value that is not an integer never matches.
                let Ok(actual) = v.parse::<i64>() else {
                    return false;
                };
                let Some(Ok(bound)) = self.values.first().map(|b| b.parse::<i64>()) else {
                    return false;
                };
                if self.operator == Operator::GreaterThan {
                    actual > bound
                } else {
                    actual < bound
                }
            }
        }
    }
}

impl fmt::Display for Requirement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.operator {
            Operator::DoesNotExist => write!(f, "!{}", self.key),
            Operator::Exists => f.write_str(&self.key),
            Operator::In | Operator::NotIn => write!(
                f,
                "{}{}({})",
                self.key,
                self.operator.symbol(),
                self.values.join(",")
            ),
            _ => write!(
                f,
                "{}{}{}",
                self.key,
                self.operator.symbol(),
                self.values.first().map(String::as_str).unwrap_or("")
            ),
        }
    }
}

/// A parsed label selector: the AND of its requirements.
///
/// An empty selector matches everything. The special "nothing" selector
/// (from a `null` structured selector, upstream `labels.Nothing()`) matches
/// no object at all.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LabelSelector {
    requirements: Vec<Requirement>,
    nothing: bool,
}

impl LabelSelector {
    /// The selector matching every label set.
    pub fn everything() -> Self {
        Self::default()
    }

    /// The selector matching no label set (upstream `labels.Nothing()`).
    pub fn nothing() -> Self {
        Self {
            requirements: Vec::new(),
            nothing: true,
        }
    }

    /// Builds a selector from requirements (sorted by key, stable, like
    /// upstream `internalSelector.Add`).
    pub fn from_requirements(mut requirements: Vec<Requirement>) -> Self {
        requirements.sort_by(|a, b| a.key.cmp(&b.key));
        Self {
            requirements,
            nothing: false,
        }
    }

    /// True when the selector has no requirement and matches everything.
    pub fn is_everything(&self) -> bool {
        !self.nothing && self.requirements.is_empty()
    }

    /// True for the selector that matches nothing.
    pub fn is_nothing(&self) -> bool {
        self.nothing
    }

    /// The requirements, sorted by key.
    pub fn requirements(&self) -> &[Requirement] {
        &self.requirements
    }

    /// Whether `labels` (the JSON object of `metadata.labels`) satisfies
    /// every requirement.
    pub fn matches(&self, labels: &Map<String, Value>) -> bool {
        !self.nothing && self.requirements.iter().all(|r| r.matches(labels))
    }

    /// Convenience: matches against a whole object's `metadata.labels`
    /// (absent or non-object labels count as an empty set).
    pub fn matches_object(&self, object: &Value) -> bool {
        static EMPTY: std::sync::OnceLock<Map<String, Value>> = std::sync::OnceLock::new();
        let labels = object
            .get("metadata")
            .and_then(|m| m.get("labels"))
            .and_then(Value::as_object)
            .unwrap_or_else(|| EMPTY.get_or_init(Map::new));
        self.matches(labels)
    }

    /// If the selector pins `key` to a single value (`key=v`, `key==v` or
    /// `key in (v)`), returns it; mirrors upstream `RequiresExactMatch`,
    /// useful to narrow a listing.
    pub fn requires_exact_match(&self, key: &str) -> Option<&str> {
        self.requirements
            .iter()
            .find(|r| {
                r.key == key
                    && matches!(
                        r.operator,
                        Operator::Equals | Operator::DoubleEquals | Operator::In
                    )
                    && r.values.len() == 1
            })
            .map(|r| r.values[0].as_str())
    }
}

impl fmt::Display for LabelSelector {
    /// The canonical string form (requirements joined by `,`); both the
    /// empty and the "nothing" selector print as an empty string, like
    /// upstream.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, r) in self.requirements.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{r}")?;
        }
        Ok(())
    }
}

/// Parses the string form of a label selector (upstream `labels.Parse`).
///
/// Grammar: requirements separated by `,`; each is `key`, `!key`,
/// `key=value`, `key==value`, `key!=value`, `key in (v1,v2)`,
/// `key notin (v1,v2)`, `key>int` or `key<int`. Whitespace between tokens is
/// ignored. The empty string selects everything.
pub fn parse(s: &str) -> Result<LabelSelector, SelectorError> {
    let tokens = lex(s);
    let mut p = Parser { tokens, pos: 0 };
    let reqs = p.parse()?;
    Ok(LabelSelector::from_requirements(reqs))
}

/// Converts a structured `metav1.LabelSelector` JSON value (upstream
/// `metav1.LabelSelectorAsSelector`).
///
/// `null` yields [`LabelSelector::nothing`]; an object with neither
/// `matchLabels` nor `matchExpressions` yields everything. Operators are
/// `In`, `NotIn` (at least one value), `Exists`, `DoesNotExist` (no values).
pub fn from_label_selector_json(v: &Value) -> Result<LabelSelector, SelectorError> {
    let obj = match v {
        Value::Null => return Ok(LabelSelector::nothing()),
        Value::Object(o) => o,
        other => {
            return Err(SelectorError::new(format!(
                "invalid label selector: expected an object, got {other}"
            )))
        }
    };
    let mut reqs = Vec::new();
    match obj.get("matchLabels") {
        None | Some(Value::Null) => {}
        Some(Value::Object(m)) => {
            for (k, v) in m {
                let Some(v) = v.as_str() else {
                    return Err(SelectorError::new(format!(
                        "invalid label selector: matchLabels[{k}] must be a string, got {v}"
                    )));
                };
                reqs.push(Requirement::new(
                    k.clone(),
                    Operator::Equals,
                    vec![v.to_string()],
                )?);
            }
        }
        Some(other) => {
            return Err(SelectorError::new(format!(
                "invalid label selector: matchLabels must be an object, got {other}"
            )))
        }
    }
    match obj.get("matchExpressions") {
        None | Some(Value::Null) => {}
        Some(Value::Array(exprs)) => {
            for expr in exprs {
                reqs.push(expression_to_requirement(expr)?);
            }
        }
        Some(other) => {
            return Err(SelectorError::new(format!(
                "invalid label selector: matchExpressions must be a list, got {other}"
            )))
        }
    }
    Ok(LabelSelector::from_requirements(reqs))
}

fn expression_to_requirement(expr: &Value) -> Result<Requirement, SelectorError> {
    let Some(expr) = expr.as_object() else {
        return Err(SelectorError::new(format!(
            "invalid label selector: matchExpressions items must be objects, got {expr}"
        )));
    };
    let key = expr.get("key").and_then(Value::as_str).unwrap_or("");
    let op_text = expr.get("operator").and_then(Value::as_str).unwrap_or("");
    let operator = match op_text {
        "In" => Operator::In,
        "NotIn" => Operator::NotIn,
        "Exists" => Operator::Exists,
        "DoesNotExist" => Operator::DoesNotExist,
        other => {
            return Err(SelectorError::new(format!(
                "{other:?} is not a valid label selector operator"
            )))
        }
    };
    let values = match expr.get("values") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(vs)) => vs
            .iter()
            .map(|v| {
                v.as_str().map(str::to_string).ok_or_else(|| {
                    SelectorError::new(format!(
                        "invalid label selector: values must be strings, got {v}"
                    ))
                })
            })
            .collect::<Result<Vec<_>, _>>()?,
        Some(other) => {
            return Err(SelectorError::new(format!(
                "invalid label selector: values must be a list, got {other}"
            )))
        }
    };
    Requirement::new(key, operator, values)
}

// ---------------------------------------------------------------------------
// Lexer / parser (a port of upstream's hand-written one, so that corner cases
// such as `a=` (empty value), `a in ()` and `a in (,x)` behave the same).

#[derive(Debug, Clone, PartialEq, Eq)]
enum Tok {
    Identifier(String),
    Comma,
    OpenPar,
    ClosedPar,
    Equals,
    DoubleEquals,
    NotEquals,
    /// `!`
    DoesNotExist,
    GreaterThan,
    LessThan,
    In,
    NotIn,
    End,
    /// A run of special characters that is not an operator.
    Error(String),
}

impl Tok {
    fn literal(&self) -> String {
        match self {
            Tok::Identifier(s) | Tok::Error(s) => s.clone(),
            Tok::Comma => ",".into(),
            Tok::OpenPar => "(".into(),
            Tok::ClosedPar => ")".into(),
            Tok::Equals => "=".into(),
            Tok::DoubleEquals => "==".into(),
            Tok::NotEquals => "!=".into(),
            Tok::DoesNotExist => "!".into(),
            Tok::GreaterThan => ">".into(),
            Tok::LessThan => "<".into(),
            Tok::In => "in".into(),
            Tok::NotIn => "notin".into(),
            Tok::End => String::new(),
        }
    }
}

fn is_whitespace(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\r' | '\n')
}

fn is_special(c: char) -> bool {
    matches!(c, '=' | '!' | '(' | ')' | ',' | '>' | '<')
}

fn special_token(s: &str) -> Option<Tok> {
    Some(match s {
        "=" => Tok::Equals,
        "==" => Tok::DoubleEquals,
        "!=" => Tok::NotEquals,
        "!" => Tok::DoesNotExist,
        "(" => Tok::OpenPar,
        ")" => Tok::ClosedPar,
        "," => Tok::Comma,
        ">" => Tok::GreaterThan,
        "<" => Tok::LessThan,
        _ => return None,
    })
}

fn lex(s: &str) -> Vec<Tok> {
    let chars: Vec<char> = s.chars().collect();
    let mut i = 0;
    let mut out = Vec::new();
    while i < chars.len() {
        let c = chars[i];
        if is_whitespace(c) {
            i += 1;
        } else if is_special(c) {
            // Longest run of special characters that still forms a known
            // operator, like upstream's scanSpecialSymbol.
            let mut buf = String::new();
            let mut last: Option<(Tok, usize)> = None;
            let mut j = i;
            while j < chars.len() && is_special(chars[j]) {
                buf.push(chars[j]);
                if let Some(t) = special_token(&buf) {
                    last = Some((t, j + 1));
                } else if last.is_some() {
                    break;
                }
                j += 1;
            }
            match last {
                Some((t, end)) => {
                    out.push(t);
                    i = end;
                }
                None => {
                    out.push(Tok::Error(format!("error expected: keyword found '{buf}'")));
                    i = j;
                }
            }
        } else {
            let start = i;
            while i < chars.len() && !is_whitespace(chars[i]) && !is_special(chars[i]) {
                i += 1;
            }
            let word: String = chars[start..i].iter().collect();
            out.push(match word.as_str() {
                "in" => Tok::In,
                "notin" => Tok::NotIn,
                _ => Tok::Identifier(word),
            });
        }
    }
    out.push(Tok::End);
    out
}

/// Upstream distinguishes two contexts: in "values" position the keywords
/// `in`/`notin` are plain identifiers (so `in=notin` is a valid selector).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Ctx {
    KeyAndOperator,
    Values,
}

struct Parser {
    tokens: Vec<Tok>,
    pos: usize,
}

const BINARY_OPERATORS: &str = "in, notin, =, ==, !=, gt, lt";

impl Parser {
    fn lookahead(&self, ctx: Ctx) -> Tok {
        let t = self.tokens[self.pos.min(self.tokens.len() - 1)].clone();
        contextualize(t, ctx)
    }

    fn consume(&mut self, ctx: Ctx) -> Tok {
        let t = self.lookahead(ctx);
        if self.pos < self.tokens.len() - 1 {
            self.pos += 1;
        }
        t
    }

    fn parse(&mut self) -> Result<Vec<Requirement>, SelectorError> {
        let mut reqs = Vec::new();
        loop {
            match self.lookahead(Ctx::Values) {
                Tok::Identifier(_) | Tok::DoesNotExist => {
                    let r = self.parse_requirement().map_err(|e| {
                        SelectorError::new(format!("unable to parse requirement: {e}"))
                    })?;
                    reqs.push(r);
                    match self.consume(Ctx::Values) {
                        Tok::End => return Ok(reqs),
                        Tok::Comma => {
                            let t2 = self.lookahead(Ctx::Values);
                            if !matches!(t2, Tok::Identifier(_) | Tok::DoesNotExist) {
                                return Err(SelectorError::new(format!(
                                    "found '{}', expected: identifier after ','",
                                    t2.literal()
                                )));
                            }
                        }
                        other => {
                            return Err(SelectorError::new(format!(
                                "found '{}', expected: ',' or 'end of string'",
                                other.literal()
                            )))
                        }
                    }
                }
                Tok::End => return Ok(reqs),
                other => {
                    return Err(SelectorError::new(format!(
                        "found '{}', expected: !, identifier, or 'end of string'",
                        other.literal()
                    )))
                }
            }
        }
    }

    fn parse_requirement(&mut self) -> Result<Requirement, SelectorError> {
        let (key, inferred) = self.parse_key_and_infer_operator()?;
        if let Some(op) = inferred {
            return Requirement::new(key, op, Vec::new());
        }
        let op = self.parse_operator()?;
        let values = match op {
            Operator::In | Operator::NotIn => self.parse_values()?,
            _ => self.parse_exact_value()?,
        };
        Requirement::new(key, op, values)
    }

    /// Returns the key and, for unary requirements (`key` / `!key`), the
    /// operator; `None` means a binary operator follows.
    fn parse_key_and_infer_operator(
        &mut self,
    ) -> Result<(String, Option<Operator>), SelectorError> {
        let mut negated = false;
        let mut tok = self.consume(Ctx::Values);
        if tok == Tok::DoesNotExist {
            negated = true;
            tok = self.consume(Ctx::Values);
        }
        let Tok::Identifier(key) = tok else {
            return Err(SelectorError::new(format!(
                "found '{}', expected: identifier",
                tok.literal()
            )));
        };
        validate_label_key(&key, "key")?;
        let next = self.lookahead(Ctx::Values);
        if matches!(next, Tok::End | Tok::Comma) {
            let op = if negated {
                Operator::DoesNotExist
            } else {
                Operator::Exists
            };
            return Ok((key, Some(op)));
        }
        if negated {
            // `!a=b`: upstream returns the DoesNotExist requirement and lets
            // the caller trip over the `=` ("expected: ',' or 'end of string'").
            return Ok((key, Some(Operator::DoesNotExist)));
        }
        Ok((key, None))
    }

    fn parse_operator(&mut self) -> Result<Operator, SelectorError> {
        let tok = self.consume(Ctx::KeyAndOperator);
        Ok(match tok {
            Tok::In => Operator::In,
            Tok::NotIn => Operator::NotIn,
            Tok::Equals => Operator::Equals,
            Tok::DoubleEquals => Operator::DoubleEquals,
            Tok::NotEquals => Operator::NotEquals,
            Tok::GreaterThan => Operator::GreaterThan,
            Tok::LessThan => Operator::LessThan,
            other => {
                return Err(SelectorError::new(format!(
                    "found '{}', expected: {BINARY_OPERATORS}",
                    other.literal()
                )))
            }
        })
    }

    fn parse_values(&mut self) -> Result<Vec<String>, SelectorError> {
        let tok = self.consume(Ctx::Values);
        if tok != Tok::OpenPar {
            return Err(SelectorError::new(format!(
                "found '{}' expected: '('",
                tok.literal()
            )));
        }
        match self.lookahead(Ctx::Values) {
            Tok::Identifier(_) | Tok::Comma => {
                let values = self.parse_identifiers_list()?;
                let close = self.consume(Ctx::Values);
                if close != Tok::ClosedPar {
                    return Err(SelectorError::new(format!(
                        "found '{}', expected: ')'",
                        close.literal()
                    )));
                }
                Ok(values)
            }
            // `a in ()` means "a in ('')", as upstream.
            Tok::ClosedPar => {
                self.consume(Ctx::Values);
                Ok(vec![String::new()])
            }
            other => Err(SelectorError::new(format!(
                "found '{}', expected: ',', ')' or identifier",
                other.literal()
            ))),
        }
    }

    fn parse_identifiers_list(&mut self) -> Result<Vec<String>, SelectorError> {
        let mut values: Vec<String> = Vec::new();
        loop {
            match self.consume(Ctx::Values) {
                Tok::Identifier(v) => {
                    values.push(v);
                    match self.lookahead(Ctx::Values) {
                        Tok::Comma => continue,
                        Tok::ClosedPar => return Ok(values),
                        other => {
                            return Err(SelectorError::new(format!(
                                "found '{}', expected: ',' or ')'",
                                other.literal()
                            )))
                        }
                    }
                }
                // Leading, trailing or doubled commas stand for the empty
                // value, as upstream.
                Tok::Comma => {
                    if values.is_empty() {
                        values.push(String::new());
                    }
                    match self.lookahead(Ctx::Values) {
                        Tok::ClosedPar => {
                            values.push(String::new());
                            return Ok(values);
                        }
                        Tok::Comma => {
                            self.consume(Ctx::Values);
                            values.push(String::new());
                        }
                        _ => {}
                    }
                }
                other => {
                    return Err(SelectorError::new(format!(
                        "found '{}', expected: ',', or identifier",
                        other.literal()
                    )))
                }
            }
        }
    }

    fn parse_exact_value(&mut self) -> Result<Vec<String>, SelectorError> {
        // `a=` (nothing before `,` or the end) means the empty value.
        if matches!(self.lookahead(Ctx::Values), Tok::End | Tok::Comma) {
            return Ok(vec![String::new()]);
        }
        match self.consume(Ctx::Values) {
            Tok::Identifier(v) => Ok(vec![v]),
            other => Err(SelectorError::new(format!(
                "found '{}', expected: identifier",
                other.literal()
            ))),
        }
    }
}

fn contextualize(t: Tok, ctx: Ctx) -> Tok {
    if ctx == Ctx::Values {
        match t {
            Tok::In => return Tok::Identifier("in".into()),
            Tok::NotIn => return Tok::Identifier("notin".into()),
            _ => {}
        }
    }
    t
}

// ---------------------------------------------------------------------------
// Validation (upstream `k8s.io/apimachinery/pkg/util/validation`).

const QUALIFIED_NAME_MAX_LENGTH: usize = 63;
const LABEL_VALUE_MAX_LENGTH: usize = 63;
const DNS1123_SUBDOMAIN_MAX_LENGTH: usize = 253;

const QUALIFIED_NAME_ERR: &str = "must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')";
const LABEL_VALUE_ERR: &str = "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or '12345', regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')";
const DNS1123_SUBDOMAIN_ERR: &str = "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')";

/// `([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]` — non-empty.
fn is_qualified_name_part(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
}

fn is_dns1123_subdomain(s: &str) -> bool {
    s.len() <= DNS1123_SUBDOMAIN_MAX_LENGTH
        && s.split('.').all(|label| {
            let b = label.as_bytes();
            !b.is_empty()
                && (b[0].is_ascii_lowercase() || b[0].is_ascii_digit())
                && (b[b.len() - 1].is_ascii_lowercase() || b[b.len() - 1].is_ascii_digit())
                && b.iter()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        })
}

/// Upstream `IsQualifiedName`: returns the list of problems.
fn qualified_name_errors(key: &str) -> Vec<String> {
    let mut errs = Vec::new();
    let parts: Vec<&str> = key.split('/').collect();
    let name = match parts.as_slice() {
        [name] => *name,
        [prefix, name] => {
            if prefix.is_empty() {
                errs.push("prefix part must be non-empty".to_string());
            } else if !is_dns1123_subdomain(prefix) {
                if prefix.len() > DNS1123_SUBDOMAIN_MAX_LENGTH {
                    errs.push(format!(
                        "prefix part must be no more than {DNS1123_SUBDOMAIN_MAX_LENGTH} characters"
                    ));
                } else {
                    errs.push(format!("prefix part {DNS1123_SUBDOMAIN_ERR}"));
                }
            }
            *name
        }
        _ => {
            errs.push(format!(
                "a qualified name {QUALIFIED_NAME_ERR} with an optional DNS subdomain prefix and '/' (e.g. 'example.com/MyName')"
            ));
            return errs;
        }
    };
    if name.is_empty() {
        errs.push("name part must be non-empty".to_string());
    } else if name.len() > QUALIFIED_NAME_MAX_LENGTH {
        errs.push(format!(
            "name part must be no more than {QUALIFIED_NAME_MAX_LENGTH} characters"
        ));
    }
    if !name.is_empty() && !is_qualified_name_part(name) {
        errs.push(format!("name part {QUALIFIED_NAME_ERR}"));
    }
    errs
}

fn validate_label_key(key: &str, field: &str) -> Result<(), SelectorError> {
    let errs = qualified_name_errors(key);
    if errs.is_empty() {
        Ok(())
    } else {
        Err(SelectorError::new(format!(
            "{field}: Invalid value: {key:?}: {}",
            errs.join("; ")
        )))
    }
}

fn validate_label_value(key: &str, value: &str, index: usize) -> Result<(), SelectorError> {
    let mut errs = Vec::new();
    if value.len() > LABEL_VALUE_MAX_LENGTH {
        errs.push(format!(
            "must be no more than {LABEL_VALUE_MAX_LENGTH} characters"
        ));
    }
    if !value.is_empty() && !is_qualified_name_part(value) {
        errs.push(LABEL_VALUE_ERR.to_string());
    }
    if errs.is_empty() {
        Ok(())
    } else {
        Err(SelectorError::new(format!(
            "values[{index}][{key}]: Invalid value: {value:?}: {}",
            errs.join("; ")
        )))
    }
}

/// Checks a label key (qualified name) the way selectors do; exposed so
/// metadata validation can reuse it. Returns the list of problems.
pub fn label_key_errors(key: &str) -> Vec<String> {
    qualified_name_errors(key)
}

/// Checks a label value; returns the list of problems (empty when valid).
pub fn label_value_errors(value: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if value.len() > LABEL_VALUE_MAX_LENGTH {
        errs.push(format!(
            "must be no more than {LABEL_VALUE_MAX_LENGTH} characters"
        ));
    }
    if !value.is_empty() && !is_qualified_name_part(value) {
        errs.push(LABEL_VALUE_ERR.to_string());
    }
    errs
}

fn label_value_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Formats like Go's `%v` of a `[]string` in field.Invalid (`[]string{"a"}`).
fn go_string_slice(values: &[String]) -> String {
    let inner: Vec<String> = values.iter().map(|v| format!("{v:?}")).collect();
    format!("[]string{{{}}}", inner.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn labels(v: Value) -> Map<String, Value> {
        v.as_object().cloned().unwrap()
    }

    fn m(sel: &str, l: Value) -> bool {
        parse(sel).unwrap().matches(&labels(l))
    }

    #[test]
    fn empty_selects_everything() {
        let s = parse("").unwrap();
        assert!(s.is_everything());
        assert!(s.matches(&Map::new()));
        assert!(s.matches(&labels(json!({"a": "b"}))));
        assert_eq!(s.to_string(), "");
        assert!(parse("   ").unwrap().is_everything());
    }

    #[test]
    fn equality_operators() {
        assert!(m("a=b", json!({"a": "b"})));
        assert!(m("a==b", json!({"a": "b", "c": "d"})));
        assert!(!m("a=b", json!({"a": "c"})));
        assert!(!m("a=b", json!({})));
        assert!(m("a!=b", json!({"a": "c"})));
        assert!(!m("a!=b", json!({"a": "b"})));
        // Absent key satisfies `!=`.
        assert!(m("a!=b", json!({})));
    }

    #[test]
    fn set_operators() {
        assert!(m("env in (prod,staging)", json!({"env": "prod"})));
        assert!(m("env in (prod, staging)", json!({"env": "staging"})));
        assert!(!m("env in (prod,staging)", json!({"env": "dev"})));
        assert!(!m("env in (prod)", json!({})));
        assert!(m("env notin (prod,staging)", json!({"env": "dev"})));
        assert!(!m("env notin (prod,staging)", json!({"env": "prod"})));
        // Absent key satisfies `notin`.
        assert!(m("env notin (prod)", json!({})));
    }

    #[test]
    fn existence_operators() {
        assert!(m("a", json!({"a": ""})));
        assert!(!m("a", json!({"b": "x"})));
        assert!(m("!a", json!({"b": "x"})));
        assert!(!m("!a", json!({"a": "x"})));
        assert!(m(" ! a ", json!({})));
    }

    #[test]
    fn greater_less_than() {
        assert!(m("x>5", json!({"x": "6"})));
        assert!(!m("x>5", json!({"x": "5"})));
        assert!(!m("x>5", json!({"x": "abc"})));
        assert!(!m("x>5", json!({})));
        assert!(m("x<5", json!({"x": "-1"})));
        assert!(parse("x>abc").is_err());
        assert_eq!(parse("x > 5").unwrap().to_string(), "x>5");
    }

    #[test]
    fn conjunction_and_whitespace() {
        let s = parse(" app = web , tier != db,env in ( prod ),!legacy ").unwrap();
        assert_eq!(s.requirements().len(), 4);
        assert!(s.matches(&labels(json!({"app": "web", "env": "prod"}))));
        assert!(!s.matches(&labels(json!({"app": "web", "env": "prod", "legacy": "1"}))));
        assert!(!s.matches(&labels(json!({"app": "web", "env": "prod", "tier": "db"}))));
        assert!(!s.matches(&labels(json!({"app": "web"}))));
    }

    #[test]
    fn display_is_sorted_canonical_form() {
        let s = parse("z=1,a in (y,x,x),!m,k,b!=2,c==3,d notin (q)").unwrap();
        assert_eq!(s.to_string(), "a in (x,y),b!=2,c==3,d notin (q),k,!m,z=1");
        // Round trip.
        assert_eq!(parse(&s.to_string()).unwrap(), s);
    }

    #[test]
    fn empty_values() {
        // `a=` selects the empty value.
        assert!(m("a=", json!({"a": ""})));
        assert!(!m("a=", json!({"a": "x"})));
        assert!(m("a=,b=c", json!({"a": "", "b": "c"})));
        // `a in ()` means `a in ("")`.
        assert!(m("a in ()", json!({"a": ""})));
        let s = parse("a in (,x)").unwrap();
        assert_eq!(
            s.requirements()[0].values(),
            &["".to_string(), "x".to_string()]
        );
        let s = parse("a in (x,)").unwrap();
        assert_eq!(
            s.requirements()[0].values(),
            &["".to_string(), "x".to_string()]
        );
    }

    #[test]
    fn keywords_are_identifiers_in_value_position() {
        assert!(m("in=notin", json!({"in": "notin"})));
        assert!(m("a in (in,notin)", json!({"a": "notin"})));
        assert!(m("notin", json!({"notin": "x"})));
    }

    #[test]
    fn prefixed_keys() {
        assert!(m(
            "app.kubernetes.io/name=web",
            json!({"app.kubernetes.io/name": "web"})
        ));
        assert!(parse("example.com/a_b.c-d=x").is_ok());
    }

    #[test]
    fn parse_errors() {
        let e = parse("a b").unwrap_err();
        assert_eq!(
            e.message(),
            "unable to parse requirement: found 'b', expected: in, notin, =, ==, !=, gt, lt"
        );
        let e = parse("a=b,").unwrap_err();
        assert_eq!(e.message(), "found '', expected: identifier after ','");
        let e = parse(",a").unwrap_err();
        assert_eq!(
            e.message(),
            "found ',', expected: !, identifier, or 'end of string'"
        );
        let e = parse("a in x").unwrap_err();
        assert!(e
            .message()
            .starts_with("unable to parse requirement: found 'x' expected: '('"));
        assert!(parse("a in (x").is_err());
        assert!(parse("a in (x y)").is_err());
        assert!(parse("a=b c").is_err());
        assert!(parse("a=(b)").is_err());
        assert!(parse("!a=b").is_err());
        assert!(parse("=b").is_err());
        assert!(parse("a!b").is_err());
    }

    #[test]
    fn key_validation() {
        let e = parse("-a=b").unwrap_err();
        assert!(e.message().starts_with("unable to parse requirement: key: Invalid value: \"-a\": name part must consist of alphanumeric characters"));
        assert!(parse(&format!("{}=b", "a".repeat(63))).is_ok());
        let e = parse(&format!("{}=b", "a".repeat(64))).unwrap_err();
        assert!(e
            .message()
            .contains("name part must be no more than 63 characters"));
        assert!(parse("/a=b")
            .unwrap_err()
            .message()
            .contains("prefix part must be non-empty"));
        assert!(parse("Example.com/a=b")
            .unwrap_err()
            .message()
            .contains("prefix part a lowercase RFC 1123 subdomain"));
        assert!(parse("a/b/c=d")
            .unwrap_err()
            .message()
            .contains("a qualified name must consist"));
        assert!(parse("a/=d")
            .unwrap_err()
            .message()
            .contains("name part must be non-empty"));
        assert!(parse("a_=d").is_err());
    }

    #[test]
    fn value_validation() {
        assert!(parse("a=b_c.d-e").is_ok());
        let e = parse("a=-b").unwrap_err();
        assert!(e.message().contains(
            "values[0][a]: Invalid value: \"-b\": a valid label must be an empty string"
        ));
        assert!(parse(&format!("a={}", "v".repeat(63))).is_ok());
        assert!(parse(&format!("a={}", "v".repeat(64)))
            .unwrap_err()
            .message()
            .contains("must be no more than 63 characters"));
        assert!(parse("a in (x,-y)").is_err());
        assert!(parse("a=b/c").is_err());
    }

    #[test]
    fn non_string_label_values_and_matches_object() {
        let s = parse("a=1").unwrap();
        assert!(s.matches(&labels(json!({"a": 1}))));
        let obj = json!({"metadata": {"name": "x", "labels": {"a": "1"}}});
        assert!(s.matches_object(&obj));
        assert!(!s.matches_object(&json!({"metadata": {"name": "x"}})));
        assert!(parse("!a").unwrap().matches_object(&json!({})));
    }

    #[test]
    fn requires_exact_match() {
        let s = parse("a=b,c in (d),e in (f,g),h!=i").unwrap();
        assert_eq!(s.requires_exact_match("a"), Some("b"));
        assert_eq!(s.requires_exact_match("c"), Some("d"));
        assert_eq!(s.requires_exact_match("e"), None);
        assert_eq!(s.requires_exact_match("h"), None);
        assert_eq!(s.requires_exact_match("zz"), None);
    }

    #[test]
    fn structured_match_labels_and_expressions() {
        let s = from_label_selector_json(&json!({
            "matchLabels": {"app": "web"},
            "matchExpressions": [
                {"key": "tier", "operator": "In", "values": ["fe", "be"]},
                {"key": "env", "operator": "NotIn", "values": ["dev"]},
                {"key": "track", "operator": "Exists"},
                {"key": "legacy", "operator": "DoesNotExist", "values": []}
            ]
        }))
        .unwrap();
        assert_eq!(
            s.to_string(),
            "app=web,env notin (dev),!legacy,tier in (be,fe),track"
        );
        assert!(s.matches(&labels(json!({"app": "web", "tier": "fe", "track": "x"}))));
        assert!(!s.matches(&labels(json!({"app": "web", "tier": "fe"}))));
        assert!(!s.matches(&labels(
            json!({"app": "web", "tier": "fe", "track": "x", "env": "dev"})
        )));
        assert!(!s.matches(&labels(
            json!({"app": "web", "tier": "fe", "track": "x", "legacy": "y"})
        )));
    }

    #[test]
    fn structured_empty_and_null() {
        let s = from_label_selector_json(&json!({})).unwrap();
        assert!(s.is_everything());
        assert!(s.matches(&Map::new()));
        let s =
            from_label_selector_json(&json!({"matchLabels": {}, "matchExpressions": []})).unwrap();
        assert!(s.is_everything());
        let s = from_label_selector_json(&Value::Null).unwrap();
        assert!(s.is_nothing());
        assert!(!s.matches(&Map::new()));
        assert!(!s.matches(&labels(json!({"a": "b"}))));
    }

    #[test]
    fn structured_errors() {
        let e = from_label_selector_json(&json!({"matchExpressions": [
            {"key": "a", "operator": "Foo", "values": ["x"]}
        ]}))
        .unwrap_err();
        assert_eq!(
            e.message(),
            "\"Foo\" is not a valid label selector operator"
        );
        let e = from_label_selector_json(&json!({"matchExpressions": [
            {"key": "a", "operator": "In", "values": []}
        ]}))
        .unwrap_err();
        assert!(e.message().contains("values set can't be empty"));
        assert!(from_label_selector_json(&json!({"matchExpressions": [
            {"key": "a", "operator": "NotIn"}
        ]}))
        .is_err());
        let e = from_label_selector_json(&json!({"matchExpressions": [
            {"key": "a", "operator": "Exists", "values": ["x"]}
        ]}))
        .unwrap_err();
        assert!(e
            .message()
            .contains("values set must be empty for exists and does not exist"));
        assert!(from_label_selector_json(&json!({"matchLabels": {"a": "-x"}})).is_err());
        assert!(from_label_selector_json(&json!({"matchLabels": {"a b": "x"}})).is_err());
        assert!(from_label_selector_json(&json!({"matchLabels": {"a": 1}})).is_err());
        assert!(from_label_selector_json(&json!({"matchLabels": []})).is_err());
        assert!(from_label_selector_json(&json!("a=b")).is_err());
    }

    #[test]
    fn requirement_new_checks_arity() {
        assert!(Requirement::new("a", Operator::Equals, vec![]).is_err());
        assert!(Requirement::new("a", Operator::Equals, vec!["x".into(), "y".into()]).is_err());
        assert!(Requirement::new("a", Operator::GreaterThan, vec!["1".into()]).is_ok());
        assert!(Requirement::new("a", Operator::LessThan, vec!["x".into()]).is_err());
        let r =
            Requirement::new("a", Operator::In, vec!["y".into(), "x".into(), "y".into()]).unwrap();
        assert_eq!(r.values(), &["x".to_string(), "y".to_string()]);
        assert_eq!(r.to_string(), "a in (x,y)");
    }

    #[test]
    fn exported_validators() {
        assert!(label_key_errors("app.kubernetes.io/name").is_empty());
        assert!(!label_key_errors("bad key").is_empty());
        assert!(label_value_errors("").is_empty());
        assert!(!label_value_errors("x y").is_empty());
    }
}
