//! Who may use the kubelet endpoint, decided as upstream's kubelet does with
//! `--anonymous-auth=false --client-ca-file --authentication-token-webhook
//! --authorization-mode=Webhook` (`pkg/kubelet/server/auth.go`, `InstallAuthFilter`):
//!
//! - **authentication**: a client certificate signed by the cluster's client CA (verified by
//!   the TLS layer; CN is the user, O the groups), else an `Authorization: Bearer` token (or a
//!   WebSocket `base64url.bearer.authorization.k8s.io.` protocol) checked with a TokenReview
//!   sent to the API server; nothing else is accepted: 401 `Unauthorized`.
//! - **authorization**: a SubjectAccessReview for `nodes/<subresource>` of this node, the
//!   subresource from the path (`stats`, `metrics`, `log`, `checkpoint`, else `proxy`; for
//!   `/healthz`, `/pods`, `/configz` the fine-grained one first, then `proxy`), the verb from
//!   the method; none allowed: 403 `Forbidden (user=..., verb=..., resource=nodes,
//!   subresource(s)=[...])`.
//!
//! Both answers are cached as upstream's webhooks cache them (tokens 2 min, a refused token
//! 30 s; allowed 5 min, denied 30 s); failures to ask are never cached.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use base64::Engine;
use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec, UserInfo};
use k8s_openapi::api::authorization::v1::{ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec};
use kube::api::{Api, PostParams};
use sha2::{Digest, Sha256};

/// How long an authenticated token is trusted without asking again (upstream's
/// `--authentication-token-webhook-cache-ttl` default).
const TOKEN_TTL: Duration = Duration::from_secs(120);
/// How long a refused token stays refused without asking again.
const REFUSED_TOKEN_TTL: Duration = Duration::from_secs(30);
/// Upstream's `--authorization-webhook-cache-authorized-ttl` default.
const ALLOWED_TTL: Duration = Duration::from_secs(300);
/// Upstream's `--authorization-webhook-cache-unauthorized-ttl` default.
const DENIED_TTL: Duration = Duration::from_secs(30);
/// Entries a cache holds at most, so that a flood of distinct tokens cannot grow it.
const CACHE_CAPACITY: usize = 4096;
/// The group every authenticated identity is in (upstream's AuthenticatedGroupAdder).
const AUTHENTICATED: &str = "system:authenticated";
/// The WebSocket subprotocol that carries a bearer token (browsers cannot set headers).
const WEBSOCKET_TOKEN_PREFIX: &str = "base64url.bearer.authorization.k8s.io.";

/// The client certificate the TLS layer verified for a connection, put in each request's
/// extensions: `None` when the client sent none.
#[derive(Clone)]
pub struct PeerCertificate(pub Option<Result<UserInfo, String>>);

/// The user of a verified client certificate: CN the name, each O a group.
pub fn certificate_user(der: &[u8]) -> Result<UserInfo, String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).map_err(|e| format!("unparsable client certificate: {e}"))?;
    let subject = cert.subject();
    let name = subject.iter_common_name().next().and_then(|a| a.as_str().ok()).unwrap_or_default();
    if name.is_empty() {
        return Err("the client certificate has no common name".into());
    }
    let groups = subject.iter_organization().filter_map(|a| a.as_str().ok()).map(String::from).collect();
    Ok(UserInfo { username: Some(name.into()), groups: Some(groups), ..Default::default() })
}

/// A map whose entries expire, bounded to [`CACHE_CAPACITY`] entries.
struct TtlCache<K, V> {
    entries: Mutex<HashMap<K, (Instant, V)>>,
}

impl<K: Eq + Hash, V: Clone> TtlCache<K, V> {
    fn new() -> Self {
        TtlCache { entries: Mutex::new(HashMap::new()) }
    }

    fn get(&self, key: &K) -> Option<V> {
        let entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        entries.get(key).filter(|(expires, _)| *expires > Instant::now()).map(|(_, v)| v.clone())
    }

    fn insert(&self, key: K, value: V, ttl: Duration) {
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        if entries.len() >= CACHE_CAPACITY {
            let now = Instant::now();
            entries.retain(|_, (expires, _)| *expires > now);
            if entries.len() >= CACHE_CAPACITY {
                entries.clear();
            }
        }
        entries.insert(key, (Instant::now() + ttl, value));
    }
}

/// The API verb of an HTTP method, as upstream maps it ("" for others).
pub fn api_verb(method: &Method) -> &'static str {
    match *method {
        Method::POST => "create",
        Method::GET => "get",
        Method::PUT => "update",
        Method::PATCH => "patch",
        Method::DELETE => "delete",
        _ => "",
    }
}

/// `path` is `prefix` or below it (upstream's `isSubpath`).
fn is_subpath(path: &str, prefix: &str) -> bool {
    let prefix = prefix.trim_end_matches('/');
    path.strip_prefix(prefix).is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
}

/// The `nodes` subresources that authorize a request for `path`, in the order asked: any one
/// allowing it suffices (upstream's attributes with KubeletFineGrainedAuthz, on by default).
pub fn subresources(path: &str) -> &'static [&'static str] {
    const SINGLE: [(&str, &[&str]); 4] = [("/stats/", &["stats"]), ("/metrics", &["metrics"]), ("/logs/", &["log"]), ("/checkpoint/", &["checkpoint"])];
    const FINE: [(&str, &[&str]); 4] = [("/pods", &["pods", "proxy"]), ("/runningpods/", &["pods", "proxy"]), ("/healthz", &["healthz", "proxy"]), ("/configz", &["configz", "proxy"])];
    SINGLE.iter().chain(FINE.iter()).find(|(prefix, _)| is_subpath(path, prefix)).map_or(&["proxy"], |(_, subs)| subs)
}

/// The token of `Authorization: Bearer TOKEN` (scheme case-insensitive, as upstream).
fn bearer_token(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(http::header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.split(' ').next().unwrap_or_default())
}

/// The token a WebSocket client put in its subprotocols (upstream's ProtocolAuthenticator).
fn websocket_token(headers: &HeaderMap) -> Option<String> {
    let upgrade = headers.get(http::header::UPGRADE).and_then(|v| v.to_str().ok());
    if !upgrade.is_some_and(|u| u.eq_ignore_ascii_case("websocket")) {
        return None;
    }
    let encoded = headers
        .get_all(http::header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .find_map(|p| p.trim().strip_prefix(WEBSOCKET_TOKEN_PREFIX))?;
    // An undecodable token is still a token: it is refused, never taken for no token.
    let decoded = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(encoded).unwrap_or_default();
    Some(String::from_utf8(decoded).unwrap_or_default())
}

/// What a request brings to authenticate with, in upstream's order of precedence.
enum Credentials {
    Certificate(Result<UserInfo, String>),
    Token(String),
    None,
}

impl Credentials {
    /// Read before any await: a request's body is not `Sync`.
    fn of(req: &Request) -> Credentials {
        if let Some(PeerCertificate(Some(cert))) = req.extensions().get::<PeerCertificate>() {
            return Credentials::Certificate(cert.clone());
        }
        match bearer_token(req.headers()).map(String::from).or_else(|| websocket_token(req.headers())) {
            Some(token) => Credentials::Token(token),
            None => Credentials::None,
        }
    }
}

/// Adds `system:authenticated` to an identity authentication accepted.
fn authenticated(mut user: UserInfo) -> UserInfo {
    let groups = user.groups.get_or_insert_with(Vec::new);
    if !groups.iter().any(|g| g == AUTHENTICATED) {
        groups.push(AUTHENTICATED.into());
    }
    user
}

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("{0}")]
    Certificate(String),
    #[error("an empty bearer token")]
    EmptyToken,
    #[error("TokenReview failed: {0}")]
    TokenReview(#[source] kube::Error),
    #[error("SubjectAccessReview failed: {0}")]
    AccessReview(#[source] kube::Error),
}

/// Authenticates and authorizes requests for one node, asking the API server with the
/// agent's client.
pub struct Auth {
    client: kube::Client,
    node_name: String,
    tokens: TtlCache<[u8; 32], Option<UserInfo>>,
    decisions: TtlCache<String, bool>,
}

impl Auth {
    pub fn new(client: kube::Client, node_name: String) -> Self {
        Auth { client, node_name, tokens: TtlCache::new(), decisions: TtlCache::new() }
    }

    /// The user of credentials a request brings, `None` when it brings none.
    async fn authenticate(&self, credentials: Credentials) -> Result<Option<UserInfo>, AuthError> {
        match credentials {
            Credentials::Certificate(cert) => cert.map(|u| Some(authenticated(u))).map_err(AuthError::Certificate),
            Credentials::Token(token) if token.is_empty() => Err(AuthError::EmptyToken),
            Credentials::Token(token) => self.review_token(&token).await,
            Credentials::None => Ok(None),
        }
    }

    /// Asks the API server who `token` is (TokenReview with no audiences: the API's own).
    async fn review_token(&self, token: &str) -> Result<Option<UserInfo>, AuthError> {
        // Keyed by a hash so that the cache holds no usable token.
        let key: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        if let Some(user) = self.tokens.get(&key) {
            return Ok(user);
        }
        let review = TokenReview { spec: TokenReviewSpec { token: Some(token.into()), audiences: None }, ..Default::default() };
        let answer = Api::<TokenReview>::all(self.client.clone()).create(&PostParams::default(), &review).await.map_err(AuthError::TokenReview)?;
        let status = answer.status.unwrap_or_default();
        let user = status.authenticated.unwrap_or(false).then(|| authenticated(status.user.unwrap_or_default()));
        if user.is_none() {
            tracing::debug!(error = status.error.as_deref().unwrap_or(""), "kubelet endpoint: token refused");
        }
        let ttl = if user.is_some() { TOKEN_TTL } else { REFUSED_TOKEN_TTL };
        self.tokens.insert(key, user.clone(), ttl);
        Ok(user)
    }

    /// Whether `user` may `verb` `nodes/<subresource>` of this node.
    async fn authorize(&self, user: &UserInfo, verb: &str, subresource: &str) -> Result<bool, AuthError> {
        let spec = SubjectAccessReviewSpec {
            user: user.username.clone(),
            uid: user.uid.clone(),
            groups: user.groups.clone(),
            extra: user.extra.clone(),
            resource_attributes: Some(ResourceAttributes {
                verb: Some(verb.into()),
                version: Some("v1".into()),
                resource: Some("nodes".into()),
                subresource: Some(subresource.into()),
                name: Some(self.node_name.clone()),
                ..Default::default()
            }),
            ..Default::default()
        };
        // The whole question is the key, as upstream's webhook authorizer keys its cache.
        let key = serde_json::to_string(&spec).unwrap_or_default();
        if let Some(allowed) = self.decisions.get(&key) {
            return Ok(allowed);
        }
        let review = SubjectAccessReview { spec, ..Default::default() };
        let answer = Api::<SubjectAccessReview>::all(self.client.clone()).create(&PostParams::default(), &review).await.map_err(AuthError::AccessReview)?;
        let allowed = answer.status.is_some_and(|s| s.allowed && !s.denied.unwrap_or(false));
        self.decisions.insert(key, allowed, if allowed { ALLOWED_TTL } else { DENIED_TTL });
        Ok(allowed)
    }
}

/// Upstream writes its errors as bare text.
fn text(code: StatusCode, msg: String) -> Response {
    (code, [(http::header::CONTENT_TYPE, "text/plain; charset=utf-8")], msg).into_response()
}

/// The 403 body: the subresources asked, formatted as Go prints a string slice.
fn forbidden_message(user: &str, verb: &str, subresources: &[&str]) -> String {
    format!("Forbidden (user={user}, verb={verb}, resource=nodes, subresource(s)=[{}])\n", subresources.join(" "))
}

/// The filter in front of every route (upstream's `InstallAuthFilter`).
pub async fn filter(State(auth): State<Arc<Auth>>, req: Request, next: Next) -> Response {
    let user = match auth.authenticate(Credentials::of(&req)).await {
        Ok(Some(user)) => user,
        Ok(None) => return text(StatusCode::UNAUTHORIZED, "Unauthorized".into()),
        Err(e) => {
            tracing::info!(error = %e, "kubelet endpoint: unable to authenticate the request");
            return text(StatusCode::UNAUTHORIZED, "Unauthorized".into());
        }
    };
    let name = user.username.clone().unwrap_or_default();
    let verb = api_verb(req.method());
    let subresources = subresources(req.uri().path());
    for sub in subresources {
        match auth.authorize(&user, verb, sub).await {
            Ok(true) => return next.run(req).await,
            Ok(false) => {}
            Err(e) => {
                tracing::error!(error = %e, user = %name, verb, subresource = sub, "kubelet endpoint: authorization error");
                return text(StatusCode::INTERNAL_SERVER_ERROR, format!("Authorization error (user={name}, verb={verb}, resource=nodes, subresource={sub})"));
            }
        }
    }
    tracing::debug!(user = %name, verb, ?subresources, "kubelet endpoint: forbidden");
    text(StatusCode::FORBIDDEN, forbidden_message(&name, verb, subresources))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_map_to_upstreams_subresources() {
        let cases: [(&str, &[&str]); 14] = [
            ("/stats/summary", &["stats"]),
            ("/stats", &["stats"]),
            ("/statsfoo", &["proxy"]),
            ("/metrics", &["metrics"]),
            ("/metrics/cadvisor", &["metrics"]),
            ("/logs/", &["log"]),
            ("/logs/syslog", &["log"]),
            ("/containerLogs/ns/pod/c", &["proxy"]),
            ("/exec/ns/pod/c", &["proxy"]),
            ("/portForward/ns/pod", &["proxy"]),
            ("/healthz", &["healthz", "proxy"]),
            ("/healthz/ping", &["healthz", "proxy"]),
            ("/pods", &["pods", "proxy"]),
            ("/configz", &["configz", "proxy"]),
        ];
        for (path, want) in cases {
            assert_eq!(subresources(path), want, "{path}");
        }
        assert_eq!(subresources("/runningpods/"), ["pods", "proxy"]);
        assert_eq!(subresources("/checkpoint/ns/pod/c"), ["checkpoint"]);
        assert_eq!(subresources("/"), ["proxy"]);
    }

    #[test]
    fn methods_map_to_verbs() {
        assert_eq!(api_verb(&Method::GET), "get");
        assert_eq!(api_verb(&Method::POST), "create");
        assert_eq!(api_verb(&Method::PUT), "update");
        assert_eq!(api_verb(&Method::PATCH), "patch");
        assert_eq!(api_verb(&Method::DELETE), "delete");
        assert_eq!(api_verb(&Method::HEAD), "");
    }

    #[test]
    fn forbidden_body_is_upstreams() {
        assert_eq!(
            forbidden_message("system:serviceaccount:default:default", "get", &["healthz", "proxy"]),
            "Forbidden (user=system:serviceaccount:default:default, verb=get, resource=nodes, subresource(s)=[healthz proxy])\n"
        );
    }

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, v.parse().unwrap());
        }
        h
    }

    #[test]
    fn bearer_tokens_from_header_and_websocket_protocol() {
        assert_eq!(bearer_token(&headers(&[("authorization", "Bearer abc")])), Some("abc"));
        assert_eq!(bearer_token(&headers(&[("authorization", "bearer abc extra")])), Some("abc"));
        assert_eq!(bearer_token(&headers(&[("authorization", "Bearer ")])), Some(""));
        assert_eq!(bearer_token(&headers(&[("authorization", "Basic abc")])), None);
        assert_eq!(bearer_token(&headers(&[])), None);

        let encoded = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode("tok.en");
        let ws = headers(&[("upgrade", "websocket"), ("sec-websocket-protocol", &format!("v5.channel.k8s.io, {WEBSOCKET_TOKEN_PREFIX}{encoded}"))]);
        assert_eq!(websocket_token(&ws).as_deref(), Some("tok.en"));
        // Only on a WebSocket upgrade.
        let plain = headers(&[("sec-websocket-protocol", &format!("{WEBSOCKET_TOKEN_PREFIX}{encoded}"))]);
        assert_eq!(websocket_token(&plain), None);
        assert_eq!(websocket_token(&headers(&[("upgrade", "websocket"), ("sec-websocket-protocol", "v5.channel.k8s.io")])), None);
    }

    #[test]
    fn certificate_gives_user_and_groups() {
        let mut params = rcgen::CertificateParams::default();
        params.distinguished_name = rcgen::DistinguishedName::new();
        params.distinguished_name.push(rcgen::DnType::CommonName, "bob");
        params.distinguished_name.push(rcgen::DnType::OrganizationName, "devs");
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        let user = certificate_user(cert.der()).unwrap();
        assert_eq!(user.username.as_deref(), Some("bob"));
        assert_eq!(user.groups, Some(vec!["devs".to_string()]));
        let user = authenticated(user);
        assert_eq!(user.groups, Some(vec!["devs".to_string(), AUTHENTICATED.to_string()]));
        assert_eq!(authenticated(user.clone()).groups, user.groups, "added once");

        let mut nameless = rcgen::CertificateParams::default();
        nameless.distinguished_name = rcgen::DistinguishedName::new();
        nameless.distinguished_name.push(rcgen::DnType::OrganizationName, "devs");
        let cert = nameless.self_signed(&key).unwrap();
        assert!(certificate_user(cert.der()).is_err());
    }

    #[test]
    fn cache_entries_expire_and_stay_bounded() {
        let cache = TtlCache::new();
        cache.insert("a", 1, Duration::from_secs(60));
        cache.insert("gone", 2, Duration::ZERO);
        assert_eq!(cache.get(&"a"), Some(1));
        assert_eq!(cache.get(&"gone"), None);
        let cache = TtlCache::new();
        for i in 0..CACHE_CAPACITY * 2 {
            cache.insert(i, i, Duration::from_secs(60));
        }
        let len = cache.entries.lock().unwrap().len();
        assert!(len <= CACHE_CAPACITY, "{len}");
        assert_eq!(cache.get(&(CACHE_CAPACITY * 2 - 1)), Some(CACHE_CAPACITY * 2 - 1));
    }
}
