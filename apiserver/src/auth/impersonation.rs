//! Impersonation (`kubectl --as`, `--as-group`, `--as-uid`), as upstream's impersonation
//! filter: each `Impersonate-*` header is authorized with the `impersonate` verb on
//! `users`, `serviceaccounts`, `groups`, `uids` or `userextras/KEY`, then the request goes on
//! as the impersonated user, without those headers.

use axum::http::HeaderMap;

use super::attributes::Attributes;
use super::authorizer::Authorizer;
use super::UserInfo;
use crate::error::{ApiError, ApiResult};

const USER: &str = "impersonate-user";
const UID: &str = "impersonate-uid";
const GROUP: &str = "impersonate-group";
const EXTRA_PREFIX: &str = "impersonate-extra-";
const SA_PREFIX: &str = "system:serviceaccount:";

/// What the headers ask to become.
#[derive(Debug, Default, PartialEq)]
struct Wanted {
    user: Option<String>,
    uid: Option<String>,
    groups: Vec<String>,
    extra: Vec<(String, String)>,
}

fn wanted(headers: &HeaderMap) -> ApiResult<Wanted> {
    let value = |v: &axum::http::HeaderValue| v.to_str().map(str::to_string).map_err(|_| ApiError::bad_request("impersonation headers must be valid text"));
    let mut w = Wanted { user: headers.get(USER).map(value).transpose()?, uid: headers.get(UID).map(value).transpose()?, ..Default::default() };
    for v in headers.get_all(GROUP) {
        w.groups.push(value(v)?);
    }
    for (name, v) in headers {
        if let Some(key) = name.as_str().strip_prefix(EXTRA_PREFIX) {
            let key = percent_encoding::percent_decode_str(key).decode_utf8_lossy().to_lowercase();
            w.extra.push((key, value(v)?));
        }
    }
    if w.user.is_none() && (!w.groups.is_empty() || !w.extra.is_empty() || w.uid.is_some()) {
        return Err(ApiError::bad_request("requested impersonation of groups, uid or extra without impersonating a user (Impersonate-User)"));
    }
    Ok(w)
}

/// The attributes each impersonation needs allowed, in upstream's order.
fn checks(actor: &UserInfo, w: &Wanted) -> Vec<Attributes> {
    let check = |group: &str, resource: &str, sub: &str, ns: &str, name: &str| Attributes::resource(actor, "impersonate", group, resource, sub, ns, name);
    let mut out = Vec::new();
    if let Some(user) = &w.user {
        match user.strip_prefix(SA_PREFIX).and_then(|r| r.split_once(':')) {
            Some((ns, name)) => out.push(check("", "serviceaccounts", "", ns, name)),
            None => out.push(check("", "users", "", "", user)),
        }
    }
    out.extend(w.groups.iter().map(|g| check("", "groups", "", "", g)));
    out.extend(w.uid.iter().map(|u| check("authentication.k8s.io", "uids", "", "", u)));
    out.extend(w.extra.iter().map(|(k, v)| check("authentication.k8s.io", "userextras", k, "", v)));
    out
}

/// The user the request acts as: `actor` itself without impersonation headers, else the
/// impersonated user once every part is authorized (403 otherwise). Removes the headers.
pub async fn apply(authorizer: &Authorizer, actor: UserInfo, headers: &mut HeaderMap) -> ApiResult<UserInfo> {
    let w = wanted(headers)?;
    let Some(name) = w.user.clone() else { return Ok(actor) };
    for a in checks(&actor, &w) {
        let d = authorizer.authorize(&a).await;
        if !d.allowed {
            return Err(super::forbidden(&a, &d.reason));
        }
    }
    let names: Vec<_> = headers.keys().filter(|k| k.as_str().starts_with("impersonate-")).cloned().collect();
    for k in names {
        headers.remove(k);
    }
    Ok(impersonated(name, w))
}

fn impersonated(name: String, w: Wanted) -> UserInfo {
    let mut groups = w.groups;
    if groups.is_empty() {
        if let Some((ns, _)) = name.strip_prefix(SA_PREFIX).and_then(|r| r.split_once(':')) {
            groups = vec!["system:serviceaccounts".into(), format!("system:serviceaccounts:{ns}")];
        }
    }
    let implied = if name == "system:anonymous" { "system:unauthenticated" } else { super::AUTHENTICATED };
    if !groups.iter().any(|g| g == implied) {
        groups.push(implied.into());
    }
    let mut user = UserInfo { name, uid: w.uid.unwrap_or_default(), groups, ..Default::default() };
    for (k, v) in w.extra {
        user.extra.entry(k).or_default().push(v);
    }
    user
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(axum::http::HeaderName::from_bytes(k.as_bytes()).unwrap(), v.parse().unwrap());
        }
        h
    }

    #[test]
    fn parses_and_checks_each_part() {
        let w = wanted(&headers(&[("Impersonate-User", "system:serviceaccount:ns:robot"), ("Impersonate-Group", "g1"), ("Impersonate-Group", "g2"), ("Impersonate-Extra-Scopes%2Fa", "x")])).unwrap();
        let actor = UserInfo { name: "alice".into(), ..Default::default() };
        let c = checks(&actor, &w);
        let shown: Vec<String> = c.iter().map(|a| format!("{} {} {} {}", a.combined_resource(), a.namespace, a.name, a.verb)).collect();
        assert_eq!(shown, ["serviceaccounts ns robot impersonate", "groups  g1 impersonate", "groups  g2 impersonate", "userextras/scopes/a  x impersonate"]);
        let user = impersonated("system:serviceaccount:ns:robot".into(), wanted(&headers(&[("Impersonate-User", "system:serviceaccount:ns:robot")])).unwrap());
        assert_eq!(user.groups, ["system:serviceaccounts", "system:serviceaccounts:ns", "system:authenticated"]);
        assert!(wanted(&headers(&[("Impersonate-Group", "g")])).is_err());
        assert_eq!(wanted(&HeaderMap::new()).unwrap(), Wanted::default());
    }

    #[tokio::test]
    async fn refused_without_the_verb() {
        let authz = Authorizer::with_policy(super::super::rbac::Policy::default());
        let mut h = headers(&[("Impersonate-User", "bob")]);
        let actor = UserInfo { name: "alice".into(), groups: vec!["system:authenticated".into()], ..Default::default() };
        let err = apply(&authz, actor, &mut h).await.unwrap_err();
        assert_eq!(err.to_string(), r#"users "bob" is forbidden: User "alice" cannot impersonate resource "users" in API group "" at the cluster scope"#);
        let admin = UserInfo { name: "admin".into(), groups: vec!["system:masters".into()], ..Default::default() };
        let user = apply(&authz, admin, &mut h).await.unwrap();
        assert_eq!(user.name, "bob");
        assert!(h.is_empty());
    }
}
