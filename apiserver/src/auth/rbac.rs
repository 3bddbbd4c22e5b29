//! Role-based access control, as upstream's RBAC authorizer (plugin/pkg/auth/authorizer/rbac)
//! and its rule resolver: a [`Policy`] is an index of every Role, ClusterRole, RoleBinding
//! and ClusterRoleBinding, built from the stored objects; it answers whether a request is
//! allowed, which rules a user holds in a namespace (SelfSubjectRulesReview, escalation
//! checks), and whether one set of rules covers another (nobody grants what they lack).

use std::collections::HashMap;

use serde_json::{json, Value};

use super::attributes::Attributes;
use super::UserInfo;

/// One rule of a Role or ClusterRole.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PolicyRule {
    pub verbs: Vec<String>,
    pub api_groups: Vec<String>,
    pub resources: Vec<String>,
    pub resource_names: Vec<String>,
    pub non_resource_urls: Vec<String>,
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array().map(|a| a.iter().filter_map(|s| s.as_str().map(String::from)).collect()).unwrap_or_default()
}

fn has(list: &[String], want: &str) -> bool {
    list.iter().any(|x| x == "*" || x == want)
}

impl PolicyRule {
    pub fn from_value(v: &Value) -> PolicyRule {
        PolicyRule {
            verbs: strings(&v["verbs"]),
            api_groups: strings(&v["apiGroups"]),
            resources: strings(&v["resources"]),
            resource_names: strings(&v["resourceNames"]),
            non_resource_urls: strings(&v["nonResourceURLs"]),
        }
    }

    /// The rule as the API writes it (empty lists left out).
    pub fn to_value(&self) -> Value {
        let mut v = json!({"verbs": self.verbs});
        for (key, list) in [("apiGroups", &self.api_groups), ("resources", &self.resources), ("resourceNames", &self.resource_names), ("nonResourceURLs", &self.non_resource_urls)] {
            if !list.is_empty() {
                v[key] = json!(list);
            }
        }
        v
    }

    /// Upstream's `RuleAllows`.
    pub fn allows(&self, a: &Attributes) -> bool {
        if !has(&self.verbs, &a.verb) {
            return false;
        }
        if a.resource_request {
            has(&self.api_groups, &a.api_group) && self.resource_matches(a) && (self.resource_names.is_empty() || self.resource_names.contains(&a.name))
        } else {
            self.non_resource_urls.iter().any(|u| url_matches(u, &a.path))
        }
    }

    fn resource_matches(&self, a: &Attributes) -> bool {
        let combined = a.combined_resource();
        self.resources.iter().any(|r| r == "*" || *r == combined || (!a.subresource.is_empty() && *r == format!("*/{}", a.subresource)))
    }

    /// Upstream's `CompactString`, as escalation errors list missing rules.
    pub fn compact_string(&self) -> String {
        let q = |l: &[String]| format!("[{}]", l.iter().map(|s| format!("{s:?}")).collect::<Vec<_>>().join(" "));
        let mut parts = Vec::new();
        for (label, list) in [("APIGroups", &self.api_groups), ("Resources", &self.resources), ("NonResourceURLs", &self.non_resource_urls), ("ResourceNames", &self.resource_names), ("Verbs", &self.verbs)] {
            if !list.is_empty() {
                parts.push(format!("{label}:{}", q(list)));
            }
        }
        format!("{{{}}}", parts.join(", "))
    }
}

fn url_matches(rule: &str, path: &str) -> bool {
    rule == "*" || rule == path || rule.strip_suffix('*').is_some_and(|prefix| path.starts_with(prefix))
}

/// A subject of a binding, reduced to what a user matches: a user name (service accounts
/// become `system:serviceaccount:NS:NAME`) or a group.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum Who {
    User(String),
    Group(String),
}

/// One binding's grant: which role, and how to describe it in a decision's reason.
#[derive(Clone, Debug)]
struct Grant {
    /// `Role` (in the binding's namespace) or `ClusterRole`.
    role_kind: String,
    role_name: String,
    /// `ClusterRoleBinding "x" of ClusterRole "y"` (the subject is added when it matched).
    source: String,
}

/// Bindings indexed by subject.
#[derive(Default, Debug)]
struct BindingIndex {
    by_subject: HashMap<Who, Vec<(Grant, String)>>,
}

impl BindingIndex {
    fn add(&mut self, binding: &Value, namespace: Option<&str>) {
        let kind = if namespace.is_some() { "RoleBinding" } else { "ClusterRoleBinding" };
        let name = binding["metadata"]["name"].as_str().unwrap_or_default();
        let shown = match namespace {
            Some(ns) => format!("{name}/{ns}"),
            None => name.to_string(),
        };
        let role_kind = binding["roleRef"]["kind"].as_str().unwrap_or_default().to_string();
        let role_name = binding["roleRef"]["name"].as_str().unwrap_or_default().to_string();
        let source = format!("{kind} {shown:?} of {role_kind} {role_name:?}");
        for s in binding["subjects"].as_array().into_iter().flatten() {
            let subject_name = s["name"].as_str().unwrap_or_default();
            let (who, described) = match s["kind"].as_str().unwrap_or_default() {
                "User" => (Who::User(subject_name.into()), format!("User {subject_name:?}")),
                "Group" => (Who::Group(subject_name.into()), format!("Group {subject_name:?}")),
                "ServiceAccount" => {
                    let sa_ns = s["namespace"].as_str().filter(|n| !n.is_empty()).or(namespace).unwrap_or_default();
                    if sa_ns.is_empty() {
                        continue;
                    }
                    (Who::User(format!("system:serviceaccount:{sa_ns}:{subject_name}")), format!("ServiceAccount {:?}", format!("{subject_name}/{sa_ns}")))
                }
                _ => continue,
            };
            let grant = Grant { role_kind: role_kind.clone(), role_name: role_name.clone(), source: source.clone() };
            self.by_subject.entry(who).or_default().push((grant, described));
        }
    }

    /// Every grant to this user (by name or group), with the matched subject described.
    fn grants<'a>(&'a self, user: &'a UserInfo) -> impl Iterator<Item = &'a (Grant, String)> + 'a {
        std::iter::once(Who::User(user.name.clone()))
            .chain(user.groups.iter().map(|g| Who::Group(g.clone())))
            .filter_map(move |w| self.by_subject.get(&w))
            .flatten()
    }
}

/// The whole RBAC policy, indexed for decisions.
#[derive(Default, Debug)]
pub struct Policy {
    cluster_roles: HashMap<String, Vec<PolicyRule>>,
    roles: HashMap<(String, String), Vec<PolicyRule>>,
    cluster_bindings: BindingIndex,
    bindings: HashMap<String, BindingIndex>,
}

/// A rule visited while resolving a user's rules, or why one could not be found.
pub enum Visit<'a> {
    Rule { rule: &'a PolicyRule, source: String },
    Missing(String),
}

fn rules_of(role: &Value) -> Vec<PolicyRule> {
    role["rules"].as_array().into_iter().flatten().map(PolicyRule::from_value).collect()
}

fn name_of(obj: &Value) -> String {
    obj["metadata"]["name"].as_str().unwrap_or_default().to_string()
}

fn namespace_of(obj: &Value) -> String {
    obj["metadata"]["namespace"].as_str().unwrap_or_default().to_string()
}

impl Policy {
    /// Builds the index from the stored objects of the four kinds.
    pub fn build(cluster_roles: &[Value], roles: &[Value], cluster_bindings: &[Value], bindings: &[Value]) -> Policy {
        let mut p = Policy::default();
        for r in cluster_roles {
            p.cluster_roles.insert(name_of(r), rules_of(r));
        }
        for r in roles {
            p.roles.insert((namespace_of(r), name_of(r)), rules_of(r));
        }
        for b in cluster_bindings {
            p.cluster_bindings.add(b, None);
        }
        for b in bindings {
            let ns = namespace_of(b);
            p.bindings.entry(ns.clone()).or_default().add(b, Some(&ns));
        }
        p
    }

    fn role_rules(&self, grant: &Grant, namespace: &str) -> Result<&[PolicyRule], String> {
        let found = match grant.role_kind.as_str() {
            "ClusterRole" => self.cluster_roles.get(&grant.role_name),
            "Role" => self.roles.get(&(namespace.to_string(), grant.role_name.clone())),
            other => return Err(format!("unsupported role reference kind: {other:?}")),
        };
        match (found, grant.role_kind.as_str()) {
            (Some(rules), _) => Ok(rules),
            (None, "ClusterRole") => Err(format!("clusterrole.rbac.authorization.k8s.io {:?} not found", grant.role_name)),
            (None, _) => Err(format!("role.rbac.authorization.k8s.io {:?} not found", grant.role_name)),
        }
    }

    /// Upstream's `VisitRulesFor`: the rules of every ClusterRoleBinding to the user, then
    /// (for a namespace) of its RoleBindings; `visit` returns false to stop.
    pub fn visit_rules(&self, user: &UserInfo, namespace: &str, mut visit: impl FnMut(Visit<'_>) -> bool) {
        let scopes = std::iter::once(("", &self.cluster_bindings)).chain(
            (!namespace.is_empty()).then(|| self.bindings.get(namespace).map(|b| (namespace, b))).flatten(),
        );
        for (scope_ns, index) in scopes {
            for (grant, subject) in index.grants(user) {
                match self.role_rules(grant, scope_ns) {
                    Ok(rules) => {
                        for rule in rules {
                            if !visit(Visit::Rule { rule, source: format!("{} to {subject}", grant.source) }) {
                                return;
                            }
                        }
                    }
                    Err(e) => {
                        if !visit(Visit::Missing(e)) {
                            return;
                        }
                    }
                }
            }
        }
    }

    /// Upstream's RBAC `Authorize`: allowed with the granting binding as reason, or no
    /// opinion with the resolution errors (missing roles) as reason.
    pub fn authorize(&self, a: &Attributes) -> (bool, String) {
        let mut errors = Vec::new();
        let mut reason = None;
        self.visit_rules(&a.user, &a.namespace, |v| match v {
            Visit::Rule { rule, source } if rule.allows(a) => {
                reason = Some(format!("RBAC: allowed by {source}"));
                false
            }
            Visit::Rule { .. } => true,
            Visit::Missing(e) => {
                errors.push(e);
                true
            }
        });
        match reason {
            Some(r) => (true, r),
            None if errors.is_empty() => (false, String::new()),
            None => (false, format!("RBAC: {}", join_errors(&errors))),
        }
    }

    /// Every rule the user holds in `namespace` (cluster-wide ones included), and the
    /// resolution errors met.
    pub fn rules_for(&self, user: &UserInfo, namespace: &str) -> (Vec<PolicyRule>, Vec<String>) {
        let (mut rules, mut errors) = (Vec::new(), Vec::new());
        self.visit_rules(user, namespace, |v| {
            match v {
                Visit::Rule { rule, .. } => rules.push(rule.clone()),
                Visit::Missing(e) => errors.push(e),
            }
            true
        });
        (rules, errors)
    }

    /// Whether a ClusterRole's rules allow the request (the Node authorizer's base rules).
    pub fn cluster_role_allows(&self, role: &str, a: &Attributes) -> bool {
        self.cluster_roles.get(role).is_some_and(|rules| rules.iter().any(|r| r.allows(a)))
    }

    /// The rules a binding's role reference grants (for the `bind` check), if it exists.
    pub fn referenced_rules(&self, role_kind: &str, role_name: &str, namespace: &str) -> Result<Vec<PolicyRule>, String> {
        let grant = Grant { role_kind: role_kind.into(), role_name: role_name.into(), source: String::new() };
        self.role_rules(&grant, namespace).map(<[PolicyRule]>::to_vec)
    }
}

/// Upstream's aggregate error text: one error as is, several in brackets.
fn join_errors(errors: &[String]) -> String {
    match errors {
        [one] => one.clone(),
        many => format!("[{}]", many.join(", ")),
    }
}

/// Upstream's `BreakdownRule`: one rule per group, resource, verb and name (or URL and verb).
fn breakdown(rule: &PolicyRule) -> Vec<PolicyRule> {
    let mut out = Vec::new();
    for group in &rule.api_groups {
        for resource in &rule.resources {
            for verb in &rule.verbs {
                let one = |names: Vec<String>| PolicyRule { api_groups: vec![group.clone()], resources: vec![resource.clone()], verbs: vec![verb.clone()], resource_names: names, ..Default::default() };
                if rule.resource_names.is_empty() {
                    out.push(one(Vec::new()));
                } else {
                    out.extend(rule.resource_names.iter().map(|n| one(vec![n.clone()])));
                }
            }
        }
    }
    for url in &rule.non_resource_urls {
        for verb in &rule.verbs {
            out.push(PolicyRule { non_resource_urls: vec![url.clone()], verbs: vec![verb.clone()], ..Default::default() });
        }
    }
    out
}

/// Upstream's `ruleCovers` for one broken-down rule.
fn rule_covers(owner: &PolicyRule, wanted: &PolicyRule) -> bool {
    let verbs = wanted.verbs.iter().all(|v| has(&owner.verbs, v));
    let urls = wanted.non_resource_urls.iter().all(|u| owner.non_resource_urls.iter().any(|o| url_matches(o, u)));
    let groups = wanted.api_groups.iter().all(|g| has(&owner.api_groups, g));
    let resources = wanted.resources.iter().all(|r| resource_covers(&owner.resources, r));
    let names = owner.resource_names.is_empty() || wanted.resource_names.iter().all(|n| owner.resource_names.contains(n)) && !wanted.resource_names.is_empty();
    verbs && urls && groups && resources && names
}

/// Whether owner resources cover `wanted`: `*`, the same, or `*/sub` for any `x/sub`.
fn resource_covers(owner: &[String], wanted: &str) -> bool {
    owner.iter().any(|o| o == "*" || o == wanted || wanted.split_once('/').is_some_and(|(_, sub)| *o == format!("*/{sub}")))
}

/// Upstream's `Covers`: the broken-down rules of `wanted` that no owner rule covers (empty
/// when the owner holds everything asked for).
pub fn uncovered(owner: &[PolicyRule], wanted: &[PolicyRule]) -> Vec<PolicyRule> {
    wanted.iter().flat_map(breakdown).filter(|w| !owner.iter().any(|o| rule_covers(o, w))).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(name: &str, groups: &[&str]) -> UserInfo {
        UserInfo { name: name.into(), groups: groups.iter().map(|g| g.to_string()).collect(), ..Default::default() }
    }

    fn policy() -> Policy {
        let cluster_roles = [
            json!({"metadata": {"name": "view"}, "rules": [{"apiGroups": [""], "resources": ["pods", "pods/log"], "verbs": ["get", "list", "watch"]}]}),
            json!({"metadata": {"name": "cluster-admin"}, "rules": [{"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]}, {"nonResourceURLs": ["*"], "verbs": ["*"]}]}),
            json!({"metadata": {"name": "discovery"}, "rules": [{"nonResourceURLs": ["/api", "/api/*"], "verbs": ["get"]}]}),
        ];
        let roles = [json!({"metadata": {"name": "one-secret", "namespace": "x"}, "rules": [{"apiGroups": [""], "resources": ["secrets"], "resourceNames": ["s1"], "verbs": ["get"]}]})];
        let cluster_bindings = [
            json!({"metadata": {"name": "admins"}, "roleRef": {"kind": "ClusterRole", "name": "cluster-admin"}, "subjects": [{"kind": "Group", "name": "admins"}]}),
            json!({"metadata": {"name": "disc"}, "roleRef": {"kind": "ClusterRole", "name": "discovery"}, "subjects": [{"kind": "Group", "name": "system:authenticated"}]}),
        ];
        let bindings = [
            json!({"metadata": {"name": "b1", "namespace": "x"}, "roleRef": {"kind": "ClusterRole", "name": "view"}, "subjects": [{"kind": "User", "name": "bob"}, {"kind": "ServiceAccount", "name": "robot"}]}),
            json!({"metadata": {"name": "b2", "namespace": "x"}, "roleRef": {"kind": "Role", "name": "one-secret"}, "subjects": [{"kind": "User", "name": "bob"}]}),
            json!({"metadata": {"name": "b3", "namespace": "x"}, "roleRef": {"kind": "Role", "name": "gone"}, "subjects": [{"kind": "User", "name": "carol"}]}),
        ];
        Policy::build(&cluster_roles, &roles, &cluster_bindings, &bindings)
    }

    fn can(p: &Policy, u: &UserInfo, verb: &str, resource: &str, sub: &str, ns: &str, name: &str) -> bool {
        p.authorize(&Attributes::resource(u, verb, "", resource, sub, ns, name)).0
    }

    #[test]
    fn bindings_grant_in_their_namespace_only() {
        let p = policy();
        let bob = user("bob", &["system:authenticated"]);
        assert!(can(&p, &bob, "list", "pods", "", "x", ""));
        assert!(can(&p, &bob, "get", "pods", "log", "x", "p"));
        assert!(!can(&p, &bob, "get", "pods", "exec", "x", "p"));
        assert!(!can(&p, &bob, "list", "pods", "", "y", ""));
        assert!(!can(&p, &bob, "list", "pods", "", "", ""));
        assert!(can(&p, &bob, "get", "secrets", "", "x", "s1"));
        assert!(!can(&p, &bob, "get", "secrets", "", "x", "s2"));
        assert!(!can(&p, &bob, "list", "secrets", "", "x", ""));
        let (ok, reason) = p.authorize(&Attributes::resource(&bob, "get", "", "pods", "", "x", "p"));
        assert!(ok);
        assert_eq!(reason, r#"RBAC: allowed by RoleBinding "b1/x" of ClusterRole "view" to User "bob""#);
    }

    #[test]
    fn service_accounts_groups_and_urls() {
        let p = policy();
        let robot = user("system:serviceaccount:x:robot", &["system:serviceaccounts", "system:authenticated"]);
        assert!(can(&p, &robot, "watch", "pods", "", "x", ""));
        let admin = user("alice", &["admins"]);
        assert!(can(&p, &admin, "delete", "namespaces", "", "", "kube-system"));
        let url = |u: &UserInfo, path: &str| p.authorize(&Attributes { user: u.clone(), verb: "get".into(), path: path.into(), ..Default::default() }).0;
        assert!(url(&robot, "/api/v1"));
        assert!(url(&robot, "/api"));
        assert!(!url(&robot, "/apis"));
        assert!(url(&admin, "/anything"));
    }

    #[test]
    fn missing_roles_are_reported() {
        let p = policy();
        let (ok, reason) = p.authorize(&Attributes::resource(&user("carol", &[]), "get", "", "pods", "", "x", "p"));
        assert!(!ok);
        assert_eq!(reason, r#"RBAC: role.rbac.authorization.k8s.io "gone" not found"#);
    }

    #[test]
    fn covers_and_breakdown() {
        let owner = [PolicyRule::from_value(&json!({"apiGroups": [""], "resources": ["pods", "*/status"], "verbs": ["get", "list"]}))];
        let ok = PolicyRule::from_value(&json!({"apiGroups": [""], "resources": ["pods", "nodes/status"], "verbs": ["get"]}));
        assert!(uncovered(&owner, &[ok]).is_empty());
        let too_much = PolicyRule::from_value(&json!({"apiGroups": ["", "apps"], "resources": ["pods"], "verbs": ["get", "delete"]}));
        let missing = uncovered(&owner, &[too_much]);
        let shown: Vec<String> = missing.iter().map(PolicyRule::compact_string).collect();
        assert_eq!(shown, [r#"{APIGroups:[""], Resources:["pods"], Verbs:["delete"]}"#, r#"{APIGroups:["apps"], Resources:["pods"], Verbs:["get"]}"#, r#"{APIGroups:["apps"], Resources:["pods"], Verbs:["delete"]}"#]);
        let named_owner = [PolicyRule::from_value(&json!({"apiGroups": [""], "resources": ["secrets"], "resourceNames": ["a"], "verbs": ["get"]}))];
        let any_secret = PolicyRule::from_value(&json!({"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"]}));
        assert_eq!(uncovered(&named_owner, &[any_secret]).len(), 1);
        let secret_a = PolicyRule::from_value(&json!({"apiGroups": [""], "resources": ["secrets"], "resourceNames": ["a"], "verbs": ["get"]}));
        assert!(uncovered(&named_owner, &[secret_a]).is_empty());
        let star = [PolicyRule::from_value(&json!({"nonResourceURLs": ["/api/*"], "verbs": ["get"]}))];
        assert!(uncovered(&star, &[PolicyRule::from_value(&json!({"nonResourceURLs": ["/api/v1"], "verbs": ["get"]}))]).is_empty());
    }
}
