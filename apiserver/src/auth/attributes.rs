//! What a request asks to do, in the terms authorizers decide on: upstream's `RequestInfo`
//! (k8s.io/apiserver `request.RequestInfoFactory`) plus the user. A path under `/api/v1/` or
//! `/apis/GROUP/VERSION/` names a resource; anything else (discovery, `/version`,
//! `/healthz`, `/openapi/v2`) is a non-resource URL.

use super::UserInfo;

/// Upstream's `authorizer.Attributes`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Attributes {
    pub user: UserInfo,
    pub verb: String,
    /// False for non-resource URLs, which only `path` and `verb` describe.
    pub resource_request: bool,
    pub path: String,
    pub api_group: String,
    pub api_version: String,
    pub resource: String,
    pub subresource: String,
    pub namespace: String,
    pub name: String,
}

/// Subresources of a namespace that are not resources inside it (`/namespaces/NS/status`).
const NAMESPACE_SUBRESOURCES: &[&str] = &["status", "finalize"];

/// Streaming subresources whose WebSocket upgrade (a GET) needs `create`, as upstream's
/// `AuthorizePodWebsocketUpgradeCreatePermission` (on by default since 1.30).
const CREATE_ON_UPGRADE: &[&str] = &["exec", "attach", "portforward"];

impl Attributes {
    /// The attributes of a request: `method`, URL `path` and `query`, and whether it asks
    /// for a connection upgrade.
    pub fn from_request(user: UserInfo, method: &str, path: &str, query: Option<&str>, upgrade: bool) -> Attributes {
        let non_resource = |user: UserInfo| Attributes { user, verb: method.to_ascii_lowercase(), path: path.to_string(), ..Default::default() };
        let parts: Vec<&str> = path.trim_matches('/').split('/').filter(|p| !p.is_empty()).collect();
        let (group, rest) = match parts.as_slice() {
            ["api", version, rest @ ..] if !rest.is_empty() => (("", *version), rest),
            ["apis", group, version, rest @ ..] if !rest.is_empty() => ((*group, *version), rest),
            _ => return non_resource(user),
        };
        let mut a = Attributes {
            user,
            resource_request: true,
            path: path.to_string(),
            api_group: group.0.to_string(),
            api_version: group.1.to_string(),
            ..Default::default()
        };
        let mut rest = rest;
        if rest[0] == "watch" || rest[0] == "proxy" {
            if rest.len() < 2 {
                return non_resource(a.user);
            }
            a.verb = rest[0].to_string();
            rest = &rest[1..];
        } else {
            a.verb = match method {
                "POST" => "create",
                "GET" | "HEAD" => "get",
                "PUT" => "update",
                "PATCH" => "patch",
                "DELETE" => "delete",
                _ => "",
            }
            .to_string();
        }
        if rest[0] == "namespaces" && rest.len() > 1 {
            a.namespace = rest[1].to_string();
            if rest.len() > 2 && !NAMESPACE_SUBRESOURCES.contains(&rest[2]) {
                rest = &rest[2..];
            }
        }
        if rest.len() >= 3 && a.verb != "proxy" {
            a.subresource = rest[2].to_string();
        }
        if rest.len() >= 2 {
            a.name = rest[1].to_string();
        }
        a.resource = rest[0].to_string();
        let query = query.unwrap_or("");
        if a.name.is_empty() && a.verb == "get" {
            a.verb = if query_flag(query, "watch") { "watch" } else { "list" }.to_string();
            if let Some(name) = exact_name(query) {
                a.name = name;
            }
        }
        if a.name.is_empty() && a.verb == "delete" {
            a.verb = "deletecollection".into();
        }
        if upgrade && a.verb == "get" && a.api_group.is_empty() && a.resource == "pods" && CREATE_ON_UPGRADE.contains(&a.subresource.as_str()) {
            a.verb = "create".into();
        }
        a
    }

    /// Attributes of a resource check (access reviews, escalation checks, impersonation).
    pub fn resource(user: &UserInfo, verb: &str, group: &str, resource: &str, subresource: &str, namespace: &str, name: &str) -> Attributes {
        Attributes {
            user: user.clone(),
            verb: verb.into(),
            resource_request: true,
            api_group: group.into(),
            resource: resource.into(),
            subresource: subresource.into(),
            namespace: namespace.into(),
            name: name.into(),
            ..Default::default()
        }
    }

    /// `resource` or `resource/subresource`, as RBAC rules name them.
    pub fn combined_resource(&self) -> String {
        if self.subresource.is_empty() {
            self.resource.clone()
        } else {
            format!("{}/{}", self.resource, self.subresource)
        }
    }

    /// Upstream's `forbiddenMessage`: what was refused, for the 403 Status.
    pub fn forbidden_message(&self) -> String {
        let user = &self.user.name;
        if !self.resource_request {
            return format!("User {user:?} cannot {} path {:?}", self.verb, self.path);
        }
        let resource = self.combined_resource();
        if self.namespace.is_empty() {
            format!("User {user:?} cannot {} resource {resource:?} in API group {:?} at the cluster scope", self.verb, self.api_group)
        } else {
            format!("User {user:?} cannot {} resource {resource:?} in API group {:?} in the namespace {:?}", self.verb, self.api_group, self.namespace)
        }
    }
}

fn query_pairs(query: &str) -> impl Iterator<Item = (String, String)> + '_ {
    query.split('&').filter(|p| !p.is_empty()).map(|p| {
        let (k, v) = p.split_once('=').unwrap_or((p, ""));
        let decode = |s: &str| percent_encoding::percent_decode_str(&s.replace('+', " ")).decode_utf8_lossy().into_owned();
        (decode(k), decode(v))
    })
}

/// `?watch=true` (or `1`), as upstream's boolean query parameters.
fn query_flag(query: &str, key: &str) -> bool {
    query_pairs(query).any(|(k, v)| k == key && matches!(v.as_str(), "true" | "1" | "True" | "TRUE" | "t" | "T"))
}

/// The name a list's field selector pins (`metadata.name=NAME` or `==`), so a rule with
/// `resourceNames` may allow watching one object, as upstream.
fn exact_name(query: &str) -> Option<String> {
    let selector = query_pairs(query).find(|(k, _)| k == "fieldSelector")?.1;
    selector.split(',').find_map(|term| {
        let (k, v) = term.split_once("==").or_else(|| term.split_once('=')).filter(|(k, _)| !k.ends_with('!'))?;
        (k.trim() == "metadata.name" && !v.is_empty() && v != "." && v != ".." && !v.contains('/') && !v.contains('%')).then(|| v.trim().to_string())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attrs(method: &str, path: &str, query: Option<&str>) -> Attributes {
        Attributes::from_request(UserInfo::default(), method, path, query, false)
    }

    #[test]
    fn resource_paths() {
        let a = attrs("GET", "/api/v1/namespaces/ns/pods", None);
        assert_eq!((a.verb.as_str(), a.resource.as_str(), a.namespace.as_str(), a.name.as_str()), ("list", "pods", "ns", ""));
        let a = attrs("GET", "/api/v1/namespaces/ns/pods/p/log", None);
        assert_eq!((a.verb.as_str(), a.combined_resource().as_str(), a.name.as_str()), ("get", "pods/log", "p"));
        let a = attrs("GET", "/apis/apps/v1/deployments", Some("watch=true"));
        assert_eq!((a.verb.as_str(), a.api_group.as_str(), a.namespace.as_str()), ("watch", "apps", ""));
        let a = attrs("DELETE", "/api/v1/namespaces/ns/secrets", None);
        assert_eq!(a.verb, "deletecollection");
        let a = attrs("PUT", "/api/v1/namespaces/ns/finalize", None);
        assert_eq!((a.resource.as_str(), a.name.as_str(), a.subresource.as_str(), a.namespace.as_str()), ("namespaces", "ns", "finalize", "ns"));
        let a = attrs("GET", "/api/v1/namespaces/ns", None);
        assert_eq!((a.verb.as_str(), a.resource.as_str(), a.name.as_str(), a.namespace.as_str()), ("get", "namespaces", "ns", "ns"));
        let a = attrs("GET", "/api/v1/watch/namespaces/ns/pods", None);
        assert_eq!((a.verb.as_str(), a.resource.as_str()), ("watch", "pods"));
        let a = attrs("GET", "/api/v1/namespaces/ns/configmaps", Some("fieldSelector=metadata.name%3Dcm&watch=1"));
        assert_eq!((a.verb.as_str(), a.name.as_str()), ("watch", "cm"));
        let a = attrs("POST", "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews", None);
        assert_eq!((a.verb.as_str(), a.api_group.as_str(), a.resource.as_str()), ("create", "authorization.k8s.io", "selfsubjectaccessreviews"));
        let up = Attributes::from_request(UserInfo::default(), "GET", "/api/v1/namespaces/ns/pods/p/exec", Some("command=sh"), true);
        assert_eq!(up.verb, "create");
    }

    #[test]
    fn non_resource_paths() {
        for p in ["/api", "/api/v1", "/apis", "/apis/apps/v1", "/version", "/openapi/v2", "/healthz"] {
            let a = attrs("GET", p, None);
            assert!(!a.resource_request, "{p}");
            assert_eq!(a.verb, "get");
        }
    }

    #[test]
    fn forbidden_messages() {
        let user = UserInfo { name: "bob".into(), ..Default::default() };
        let a = Attributes::from_request(user.clone(), "GET", "/api/v1/namespaces/x/secrets", None, false);
        assert_eq!(a.forbidden_message(), r#"User "bob" cannot list resource "secrets" in API group "" in the namespace "x""#);
        let a = Attributes::from_request(user.clone(), "POST", "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings", None, false);
        assert_eq!(a.forbidden_message(), r#"User "bob" cannot create resource "clusterrolebindings" in API group "rbac.authorization.k8s.io" at the cluster scope"#);
        let a = Attributes::from_request(user, "GET", "/logs", None, false);
        assert_eq!(a.forbidden_message(), r#"User "bob" cannot get path "/logs""#);
    }
}
