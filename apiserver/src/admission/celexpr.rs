//! CEL as the Kubernetes API server uses it (ValidatingAdmissionPolicy, webhook
//! `matchConditions`), over the `cel` crate: one environment with the standard library and
//! the strings, lists and math extensions; a compile step that, like upstream's, rejects
//! syntax errors, references to undeclared variables and (where it can tell without a type
//! checker) non-boolean results; JSON objects as CEL values; evaluation.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, OnceLock};

use cel::common::ast::{EntryExpr, Expr, IdedExpr, LiteralValue};
use cel::objects::{Key, Map};
use cel::{Context, Env, Program, Value};
use serde_json::Value as Json;

/// Variables a webhook's `matchConditions` may use.
pub const WEBHOOK_VARS: &[&str] = &["object", "oldObject", "request", "authorizer"];
/// Variables a ValidatingAdmissionPolicy's expressions may use.
pub const POLICY_VARS: &[&str] = &["object", "oldObject", "request", "params", "namespaceObject", "variables", "authorizer"];

fn env() -> &'static Arc<Env> {
    static ENV: OnceLock<Arc<Env>> = OnceLock::new();
    ENV.get_or_init(|| {
        let mut env = Env::stdlib();
        // Each extension is added once to a fresh environment: they cannot conflict.
        let _ = env.add_extension(cel::extensions::strings);
        let _ = env.add_extension(cel::extensions::lists);
        let _ = env.add_extension(cel::extensions::math);
        Arc::new(env)
    })
}

/// A compiled expression.
#[derive(Debug)]
pub struct Compiled {
    program: Program,
}

// Programs are plain data (an AST and source positions): shared across requests.
const _: fn() = || {
    fn check<T: Send + Sync>() {}
    check::<Compiled>();
};

/// Compiles `source`, allowing only the top-level variables `declared`. The error is
/// upstream's `compilation failed: ERROR: <input>:L:C: ...`.
pub fn compile(source: &str, declared: &[&str]) -> Result<Compiled, String> {
    let program = env().compile(source).map_err(|e| format!("compilation failed: {e}"))?;
    let mut undeclared = BTreeSet::new();
    free_idents(program.expression(), &mut Vec::new(), &mut undeclared);
    if let Some(name) = undeclared.iter().find(|n| !declared.contains(&n.as_str())) {
        return Err(format!("compilation failed: ERROR: <input>:1:1: undeclared reference to '{name}' (in container '')"));
    }
    Ok(Compiled { program })
}

/// Compiles an expression that must yield a bool: also rejects a literal of another type.
pub fn compile_bool(source: &str, declared: &[&str]) -> Result<Compiled, String> {
    let c = compile(source, declared)?;
    if let Expr::Literal(lit) = &c.program.expression().expr {
        if !matches!(lit, LiteralValue::Boolean(_)) {
            return Err(format!("compilation failed: ERROR: <input>:1:1: must evaluate to bool (got {})", literal_type(lit)));
        }
    }
    Ok(c)
}

fn literal_type(lit: &LiteralValue) -> &'static str {
    match lit {
        LiteralValue::Int(_) => "int",
        LiteralValue::UInt(_) => "uint",
        LiteralValue::Double(_) => "double",
        LiteralValue::String(_) => "string",
        LiteralValue::Bytes(_) => "bytes",
        LiteralValue::Null => "null_type",
        LiteralValue::Boolean(_) => "bool",
    }
}

/// Identifiers used free (not bound by a comprehension) in `e`.
fn free_idents(e: &IdedExpr, bound: &mut Vec<String>, out: &mut BTreeSet<String>) {
    match &e.expr {
        Expr::Ident(name) => {
            if !bound.iter().any(|b| b == name) && !is_builtin_ident(name) {
                out.insert(name.clone());
            }
        }
        Expr::Call(c) => {
            if let Some(t) = &c.target {
                free_idents(t, bound, out);
            }
            for a in &c.args {
                free_idents(a, bound, out);
            }
        }
        Expr::Comprehension(c) => {
            free_idents(&c.iter_range, bound, out);
            free_idents(&c.accu_init, bound, out);
            let n = bound.len();
            bound.push(c.iter_var.clone());
            if let Some(v) = &c.iter_var2 {
                bound.push(v.clone());
            }
            bound.push(c.accu_var.clone());
            free_idents(&c.loop_cond, bound, out);
            free_idents(&c.loop_step, bound, out);
            free_idents(&c.result, bound, out);
            bound.truncate(n);
        }
        Expr::List(l) => {
            for x in &l.elements {
                free_idents(x, bound, out);
            }
        }
        Expr::Map(m) => entries(&m.entries, bound, out),
        Expr::Struct(s) => entries(&s.entries, bound, out),
        Expr::Select(s) => free_idents(&s.operand, bound, out),
        Expr::Literal(_) | Expr::Unspecified => {}
    }
}

fn entries(es: &[cel::common::ast::IdedEntryExpr], bound: &mut Vec<String>, out: &mut BTreeSet<String>) {
    for e in es {
        match &e.expr {
            EntryExpr::StructField(f) => free_idents(&f.value, bound, out),
            EntryExpr::MapEntry(m) => {
                free_idents(&m.key, bound, out);
                free_idents(&m.value, bound, out);
            }
        }
    }
}

/// Type names usable as identifiers (`type(x) == string`).
fn is_builtin_ident(name: &str) -> bool {
    matches!(
        name,
        "int" | "uint" | "double" | "bool" | "string" | "bytes" | "list" | "map" | "null_type" | "type" | "dyn"
    )
}

/// A JSON value as CEL: integers are `int`, other numbers `double`.
pub fn to_cel(v: &Json) -> Value {
    match v {
        Json::Null => Value::Null,
        Json::Bool(b) => Value::Bool(*b),
        Json::Number(n) => match n.as_i64() {
            Some(i) => Value::Int(i),
            None => match n.as_u64() {
                Some(u) => Value::UInt(u),
                None => Value::Float(n.as_f64().unwrap_or_default()),
            },
        },
        Json::String(s) => Value::String(Arc::new(s.clone())),
        Json::Array(a) => Value::List(Arc::new(a.iter().map(to_cel).collect())),
        Json::Object(o) => {
            let map: HashMap<Key, Value> = o.iter().map(|(k, v)| (Key::from(k.as_str()), to_cel(v))).collect();
            Value::Map(Map { map: Arc::new(map) })
        }
    }
}

/// How a CEL value prints in a message (`string(x)` of upstream, near enough).
pub fn display(v: &Value) -> String {
    match v {
        Value::String(s) => s.to_string(),
        Value::Int(i) => i.to_string(),
        Value::UInt(u) => u.to_string(),
        Value::Float(f) => f.to_string(),
        Value::Bool(b) => b.to_string(),
        Value::Null => "null".into(),
        other => format!("{other:?}"),
    }
}

/// The variables of one evaluation.
#[derive(Default, Clone)]
pub struct Activation {
    vars: Vec<(String, Value)>,
}

impl Activation {
    pub fn set(&mut self, name: &str, value: Value) {
        self.vars.retain(|(n, _)| n != name);
        self.vars.push((name.to_string(), value));
    }
}

impl Compiled {
    /// Evaluates the expression; errors are upstream-like text.
    pub fn eval(&self, act: &Activation) -> Result<Value, String> {
        let mut ctx = Context::with_env(env().clone());
        for (n, v) in &act.vars {
            ctx.add_variable_from_value(n.as_str(), v.clone());
        }
        self.program.execute(&ctx).map_err(|e| e.to_string())
    }

    /// Evaluates an expression that must yield a bool.
    pub fn eval_bool(&self, act: &Activation) -> Result<bool, String> {
        match self.eval(act)? {
            Value::Bool(b) => Ok(b),
            other => Err(format!("expression must evaluate to bool, got {:?}", other.type_of())),
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn compile_errors() {
        let err = compile("... [] bad expression", WEBHOOK_VARS).unwrap_err();
        assert!(err.starts_with("compilation failed: ERROR: <input>:1:"), "{err}");
        let err = compile("nope.metadata.name == 'x'", WEBHOOK_VARS).unwrap_err();
        assert!(err.contains("undeclared reference to 'nope'"), "{err}");
        let err = compile_bool("'a string'", WEBHOOK_VARS).unwrap_err();
        assert!(err.contains("must evaluate to bool"), "{err}");
        // Comprehension variables are bound; policy variables declared.
        compile("object.spec.containers.all(c, c.image.startsWith('x'))", WEBHOOK_VARS).unwrap();
        compile("variables.replicas > 1 && params.data.max == '3'", POLICY_VARS).unwrap();
        assert!(compile("variables.x", WEBHOOK_VARS).is_err());
        compile("type(object) == map", WEBHOOK_VARS).unwrap();
    }

    #[test]
    fn evaluation() {
        let mut act = Activation::default();
        act.set(
            "object",
            to_cel(&json!({"metadata": {"name": "web", "labels": {"app": "nginx"}}, "spec": {"replicas": 3, "ratio": 0.5, "containers": [{"name": "a", "image": "nginx:1"}]}})),
        );
        let t = |src: &str| compile(src, WEBHOOK_VARS).unwrap().eval(&act).unwrap();
        assert_eq!(t("object.spec.replicas > 1"), Value::Bool(true));
        assert_eq!(t("object.spec.replicas % 2 == 1"), Value::Bool(true));
        assert_eq!(t("has(object.spec.foo)"), Value::Bool(false));
        assert_eq!(t("has(object.metadata.labels) && object.metadata.labels.app == 'nginx'"), Value::Bool(true));
        assert_eq!(t("size(object.spec.containers) == 1"), Value::Bool(true));
        assert_eq!(t("object.spec.containers.all(c, c.image.startsWith('nginx'))"), Value::Bool(true));
        assert_eq!(t("object.spec.containers.exists(c, c.name == 'b')"), Value::Bool(false));
        assert_eq!(t("object.metadata.name.matches('^w.b$')"), Value::Bool(true));
        assert_eq!(t("object.metadata.name.lowerAscii() == 'web'"), Value::Bool(true));
        assert_eq!(t("'got ' + string(object.spec.replicas)"), Value::String(Arc::new("got 3".into())));
        assert_eq!(t("object.spec.ratio < 1.0"), Value::Bool(true));
        assert!(compile("object.spec.nothere > 1", WEBHOOK_VARS).unwrap().eval(&act).is_err());
        assert!(compile("object.spec.replicas", WEBHOOK_VARS).unwrap().eval_bool(&act).is_err());
    }
}
