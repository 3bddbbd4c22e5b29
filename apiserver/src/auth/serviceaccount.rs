//! Service account token authentication, as upstream's `serviceaccount` token
//! authenticator with bound tokens: the signature, issuer and lifetime are checked by
//! `crate::tokens`; here the audiences must meet the API's (`--api-audiences`), and the
//! service account (and the pod a token is bound to) must still exist with the uid the token
//! names, so deleting a ServiceAccount or a Pod revokes its tokens.

use serde_json::Value;

use super::UserInfo;
use crate::tokens::ServiceAccountTokens;
use crate::AppState;

/// The objects a token names, by (resource, namespace, name, uid).
type Bound = (&'static str, String, String, String);

/// What a verified token claims: the identity and the objects that must still exist.
#[derive(Debug, Clone)]
pub struct Claimed {
    pub user: UserInfo,
    /// The audiences the token and the accepted ones share.
    pub audiences: Vec<String>,
    bound: Vec<Bound>,
    /// When the token expires (unix seconds).
    expires: i64,
}

/// Tokens whose signature, issuer and audiences were already checked, with their claims:
/// a signature check costs more than the rest of a request, and a client presents the same
/// token many times (upstream caches token authentication too). Bound objects are still
/// checked on every request, so deleting a ServiceAccount or Pod revokes at once.
#[derive(Default)]
pub struct VerifiedTokens(std::sync::RwLock<std::collections::HashMap<String, Claimed>>);

/// Tokens remembered before the cache is emptied.
const VERIFIED_LIMIT: usize = 10_000;

impl VerifiedTokens {
    fn get(&self, token: &str, now: i64) -> Option<Claimed> {
        self.0.read().expect("token cache lock").get(token).filter(|c| now < c.expires).cloned()
    }

    fn put(&self, token: &str, c: &Claimed) {
        let mut map = self.0.write().expect("token cache lock");
        if map.len() >= VERIFIED_LIMIT {
            map.clear();
        }
        map.insert(token.to_string(), c.clone());
    }
}

fn token_audiences(claims: &Value) -> Vec<String> {
    match &claims["aud"] {
        Value::String(a) => vec![a.clone()],
        v => v.as_array().into_iter().flatten().filter_map(|a| a.as_str().map(String::from)).collect(),
    }
}

/// Checks signature, lifetime and audiences, and reads the claims (not yet the bound
/// objects: see [`check_bound`]). Errors say why, as TokenReview reports them.
pub fn claims(signer: &ServiceAccountTokens, token: &str, accepted: &[String], now: i64) -> Result<Claimed, String> {
    let claims = signer.verify(token, now).ok_or("invalid bearer token")?;
    let aud = token_audiences(&claims);
    let common: Vec<String> = accepted.iter().filter(|a| aud.contains(a)).cloned().collect();
    if common.is_empty() {
        return Err(format!("token audiences {aud:?} is invalid for the target audiences {accepted:?}"));
    }
    let k8s = &claims["kubernetes.io"];
    let field = |v: &Value| v.as_str().unwrap_or_default().to_string();
    let (ns, sa, sa_uid) = (field(&k8s["namespace"]), field(&k8s["serviceaccount"]["name"]), field(&k8s["serviceaccount"]["uid"]));
    if ns.is_empty() || sa.is_empty() {
        return Err("token names no service account".into());
    }
    let mut user = UserInfo {
        name: format!("system:serviceaccount:{ns}:{sa}"),
        uid: sa_uid.clone(),
        groups: vec!["system:serviceaccounts".into(), format!("system:serviceaccounts:{ns}"), super::AUTHENTICATED.into()],
        ..Default::default()
    };
    let mut bound = vec![("serviceaccounts", ns.clone(), sa, sa_uid)];
    if let (Some(name), Some(uid)) = (k8s["pod"]["name"].as_str(), k8s["pod"]["uid"].as_str()) {
        user.extra.insert("authentication.kubernetes.io/pod-name".into(), vec![name.into()]);
        user.extra.insert("authentication.kubernetes.io/pod-uid".into(), vec![uid.into()]);
        bound.push(("pods", ns.clone(), name.into(), uid.into()));
    }
    if let (Some(name), Some(uid)) = (k8s["secret"]["name"].as_str(), k8s["secret"]["uid"].as_str()) {
        bound.push(("secrets", ns.clone(), name.into(), uid.into()));
    }
    if let Some(id) = claims["jti"].as_str() {
        user.extra.insert("authentication.kubernetes.io/credential-id".into(), vec![format!("JTI={id}")]);
    }
    Ok(Claimed { user, audiences: common, bound, expires: claims["exp"].as_i64().unwrap_or(0) })
}

/// Upstream's messages for a bound object that is gone or was replaced.
fn check_one(resource: &str, ns: &str, name: &str, uid: &str, found: Option<Value>) -> Result<(), String> {
    let kind = match resource {
        "serviceaccounts" => "service account",
        "pods" => "pod",
        _ => "secret",
    };
    let Some(obj) = found else { return Err(format!("{kind} {ns}/{name} has been deleted")) };
    let have = obj["metadata"]["uid"].as_str().unwrap_or_default();
    if have != uid {
        return Err(format!("{kind} UID ({have}) does not match claim ({uid})"));
    }
    Ok(())
}

/// Checks that every bound object exists with its uid: from the watch cache (no storage
/// read on the hot path); when the cache disagrees (it may lag a write made a moment ago),
/// the store decides.
pub async fn check_bound(st: &AppState, c: &Claimed) -> Result<(), String> {
    if check_bound_cached(&st.registry, c).is_ok() {
        return Ok(());
    }
    for (resource, ns, name, uid) in &c.bound {
        let Some(store) = st.registry.find("", "v1", resource) else { continue };
        check_one(resource, ns, name, uid, store.get(Some(ns), name).await.ok())?;
    }
    Ok(())
}

/// The same check from the watch cache alone (TokenReview answers synchronously).
pub fn check_bound_cached(registry: &crate::registry::Registry, c: &Claimed) -> Result<(), String> {
    for (resource, ns, name, uid) in &c.bound {
        let Some(store) = registry.find("", "v1", resource) else { continue };
        let found = registry.watch_cache().get(&store.key(Some(ns), name)).and_then(|kv| store.decode(&kv).ok());
        check_one(resource, ns, name, uid, found)?;
    }
    Ok(())
}

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

/// The identity a bearer token proves to this API, or `None` (401).
pub async fn authenticate(st: &AppState, token: &str) -> Option<UserInfo> {
    let signer = st.tokens.as_deref()?;
    let now = now();
    let claimed = match st.verified_tokens.get(token, now) {
        Some(c) => c,
        None => match claims(signer, token, &st.api_audiences, now) {
            Ok(c) => {
                st.verified_tokens.put(token, &c);
                c
            }
            Err(why) => {
                tracing::debug!(reason = %why, "bearer token refused");
                return None;
            }
        },
    };
    if let Err(why) = check_bound(st, &claimed).await {
        tracing::debug!(reason = %why, "bearer token refused");
        return None;
    }
    Some(claimed.user)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tokens::Binding;

    fn signer() -> ServiceAccountTokens {
        let rng = ring::rand::SystemRandom::new();
        let doc = ring::signature::EcdsaKeyPair::generate_pkcs8(&ring::signature::ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
        ServiceAccountTokens::from_pkcs8(doc.as_ref()).unwrap()
    }

    #[test]
    fn audiences_and_claims() {
        let t = signer();
        let b = Binding { namespace: "ns".into(), service_account: "sa".into(), service_account_uid: "u1".into(), pod: Some(("p".into(), "pu".into())) };
        let api = vec![crate::tokens::ISSUER.to_string()];
        let token = t.issue(&b, &[], 1000, 600).unwrap();
        let c = claims(&t, &token, &api, 1001).unwrap();
        assert_eq!(c.user.name, "system:serviceaccount:ns:sa");
        assert_eq!(c.user.uid, "u1");
        assert_eq!(c.user.extra["authentication.kubernetes.io/pod-name"], ["p"]);
        assert_eq!(c.bound.len(), 2);
        let vault = t.issue(&b, &["vault".into()], 1000, 600).unwrap();
        let err = claims(&t, &vault, &api, 1001).unwrap_err();
        assert!(err.contains("invalid for the target audiences"), "{err}");
        assert!(claims(&t, &token, &api, 1601).is_err(), "expired");
        let cache = VerifiedTokens::default();
        cache.put(&token, &c);
        assert!(cache.get(&token, 1599).is_some());
        assert!(cache.get(&token, 1600).is_none(), "not past its expiry");
    }

    #[test]
    fn bound_objects_must_match() {
        let sa = serde_json::json!({"metadata": {"uid": "u1"}});
        assert!(check_one("serviceaccounts", "ns", "sa", "u1", Some(sa.clone())).is_ok());
        assert_eq!(check_one("serviceaccounts", "ns", "sa", "u2", Some(sa)).unwrap_err(), "service account UID (u1) does not match claim (u2)");
        assert_eq!(check_one("pods", "ns", "p", "u", None).unwrap_err(), "pod ns/p has been deleted");
    }
}
