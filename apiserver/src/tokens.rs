//! Service account tokens: JWTs signed with the cluster's service account key (ES256,
//! `DATA_DIR/server/tls/service.key`), issued by the TokenRequest API
//! (`POST serviceaccounts/NAME/token`, what the kubelet projects into pods) and accepted as
//! bearer tokens by the server's authentication. Signing and verification use ring, already
//! linked for TLS, so no JWT crate is needed for this one algorithm.

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine;
use ring::rand::SystemRandom;
use ring::signature::{EcdsaKeyPair, KeyPair, UnparsedPublicKey, ECDSA_P256_SHA256_FIXED, ECDSA_P256_SHA256_FIXED_SIGNING};
use serde_json::{json, Value};

use crate::auth::UserInfo;

/// Upstream's default issuer (`--service-account-issuer`) and audience.
pub const ISSUER: &str = "https://kubernetes.default.svc.cluster.local";

pub struct ServiceAccountTokens {
    key: EcdsaKeyPair,
    rng: SystemRandom,
}

impl std::fmt::Debug for ServiceAccountTokens {
    /// Never prints the key.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServiceAccountTokens").finish_non_exhaustive()
    }
}

/// What a token binds: the service account and, for pod tokens, the pod.
#[derive(Debug, Clone, Default)]
pub struct Binding {
    pub namespace: String,
    pub service_account: String,
    pub service_account_uid: String,
    pub pod: Option<(String, String)>,
}

impl ServiceAccountTokens {
    /// From a PKCS#8 (DER) P-256 private key.
    pub fn from_pkcs8(der: &[u8]) -> Result<Self, String> {
        let rng = SystemRandom::new();
        let key = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, der, &rng).map_err(|e| format!("service account key: {e}"))?;
        Ok(ServiceAccountTokens { key, rng })
    }

    /// A signed token valid for `seconds` from `now` (unix seconds).
    pub fn issue(&self, b: &Binding, audiences: &[String], now: i64, seconds: i64) -> Result<String, String> {
        let header = json!({"alg": "ES256", "typ": "JWT"});
        let mut k8s = json!({"namespace": b.namespace, "serviceaccount": {"name": b.service_account, "uid": b.service_account_uid}});
        if let Some((name, uid)) = &b.pod {
            k8s["pod"] = json!({"name": name, "uid": uid});
        }
        let aud = if audiences.is_empty() { vec![ISSUER.to_string()] } else { audiences.to_vec() };
        let claims = json!({
            "aud": aud, "exp": now + seconds, "iat": now, "nbf": now, "iss": ISSUER,
            "sub": format!("system:serviceaccount:{}:{}", b.namespace, b.service_account),
            "kubernetes.io": k8s,
        });
        let signing_input = format!("{}.{}", B64.encode(header.to_string()), B64.encode(claims.to_string()));
        let sig = self.key.sign(&self.rng, signing_input.as_bytes()).map_err(|_| "signing failed".to_string())?;
        Ok(format!("{signing_input}.{}", B64.encode(sig.as_ref())))
    }

    /// The claims of a token this server signed and that is valid at `now`.
    pub fn verify(&self, token: &str, now: i64) -> Option<Value> {
        let mut parts = token.split('.');
        let (h, c, s) = (parts.next()?, parts.next()?, parts.next()?);
        if parts.next().is_some() {
            return None;
        }
        let header: Value = serde_json::from_slice(&B64.decode(h).ok()?).ok()?;
        if header["alg"] != "ES256" {
            return None;
        }
        let sig = B64.decode(s).ok()?;
        UnparsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, self.key.public_key().as_ref()).verify(format!("{h}.{c}").as_bytes(), &sig).ok()?;
        let claims: Value = serde_json::from_slice(&B64.decode(c).ok()?).ok()?;
        let exp = claims["exp"].as_i64()?;
        let nbf = claims["nbf"].as_i64().unwrap_or(0);
        (claims["iss"] == ISSUER && now < exp && now + 60 >= nbf).then_some(claims)
    }

    /// What a TokenReview answers for `token` (upstream's service account authenticator
    /// behind `tokenreviews`): the identity with the service account's uid and the pod as
    /// `extra`, and the audiences both the token and the review accept (the review's, or
    /// this server's when it names none).
    pub fn review(&self, token: &str, audiences: &[String], now: i64) -> Value {
        let Some(claims) = self.verify(token, now) else {
            return json!({"authenticated": false, "user": {}, "error": "invalid bearer token"});
        };
        let wanted: Vec<String> = if audiences.is_empty() { vec![ISSUER.to_string()] } else { audiences.to_vec() };
        let token_aud: Vec<String> = match &claims["aud"] {
            Value::String(a) => vec![a.clone()],
            v => v.as_array().into_iter().flatten().filter_map(|a| a.as_str().map(String::from)).collect(),
        };
        let common: Vec<&String> = wanted.iter().filter(|a| token_aud.contains(a)).collect();
        let k8s = &claims["kubernetes.io"];
        let (Some(ns), Some(sa), false) = (k8s["namespace"].as_str(), k8s["serviceaccount"]["name"].as_str(), common.is_empty()) else {
            return json!({"authenticated": false, "user": {}, "error": "token audiences are not accepted, or it names no service account"});
        };
        let mut user = json!({
            "username": format!("system:serviceaccount:{ns}:{sa}"),
            "uid": k8s["serviceaccount"]["uid"],
            "groups": ["system:serviceaccounts", format!("system:serviceaccounts:{ns}"), "system:authenticated"],
        });
        if let (Some(name), Some(uid)) = (k8s["pod"]["name"].as_str(), k8s["pod"]["uid"].as_str()) {
            user["extra"] = json!({"authentication.kubernetes.io/pod-name": [name], "authentication.kubernetes.io/pod-uid": [uid]});
        }
        json!({"authenticated": true, "user": user, "audiences": common})
    }

    /// The identity a valid token proves, as upstream's service account authenticator.
    pub fn authenticate(&self, token: &str, now: i64) -> Option<UserInfo> {
        let claims = self.verify(token, now)?;
        let ns = claims["kubernetes.io"]["namespace"].as_str()?;
        let sa = claims["kubernetes.io"]["serviceaccount"]["name"].as_str()?;
        Some(UserInfo {
            name: format!("system:serviceaccount:{ns}:{sa}"),
            groups: vec!["system:serviceaccounts".into(), format!("system:serviceaccounts:{ns}"), "system:authenticated".into()],
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn signer() -> ServiceAccountTokens {
        let rng = SystemRandom::new();
        let doc = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
        ServiceAccountTokens::from_pkcs8(doc.as_ref()).unwrap()
    }

    #[test]
    fn reviews_say_who_and_for_which_audiences() {
        let t = signer();
        let b = Binding { namespace: "ns".into(), service_account: "builder".into(), service_account_uid: "sa-uid".into(), pod: Some(("p".into(), "pu".into())) };
        let tok = t.issue(&b, &[], 1000, 3600).unwrap();
        let r = t.review(&tok, &[], 1001);
        assert_eq!(r["authenticated"], true);
        assert_eq!(r["user"]["username"], "system:serviceaccount:ns:builder");
        assert_eq!(r["user"]["uid"], "sa-uid");
        assert_eq!(r["user"]["extra"]["authentication.kubernetes.io/pod-name"][0], "p");
        assert_eq!(r["audiences"][0], ISSUER);
        // Another audience than the token's, an expired token, a forged one: not authenticated.
        assert_eq!(t.review(&tok, &["vault".into()], 1001)["authenticated"], false);
        assert_eq!(t.review(&tok, &[], 5000)["authenticated"], false);
        assert_eq!(t.review(&format!("{tok}x"), &[], 1001)["authenticated"], false);
        let vault = t.issue(&b, &["vault".into()], 1000, 3600).unwrap();
        assert_eq!(t.review(&vault, &["vault".into(), "other".into()], 1001)["audiences"], json!(["vault"]));
    }

    #[test]
    fn issue_verify_and_refuse() {
        let t = signer();
        let b = Binding { namespace: "ns".into(), service_account: "default".into(), service_account_uid: "u".into(), pod: Some(("p".into(), "pu".into())) };
        let tok = t.issue(&b, &[], 1000, 3600).unwrap();
        let claims = t.verify(&tok, 1001).unwrap();
        assert_eq!(claims["sub"], "system:serviceaccount:ns:default");
        assert_eq!(claims["kubernetes.io"]["pod"]["name"], "p");
        assert_eq!(t.authenticate(&tok, 1001).unwrap().name, "system:serviceaccount:ns:default");
        assert!(t.verify(&tok, 1000 + 3600).is_none(), "expired");
        // Another key's signature, or a changed payload, is refused.
        assert!(signer().verify(&tok, 1001).is_none());
        let mut parts: Vec<&str> = tok.split('.').collect();
        let forged = B64.encode(json!({"iss": ISSUER, "exp": 99999, "sub": "x"}).to_string());
        parts[1] = &forged;
        assert!(t.verify(&parts.join("."), 1001).is_none());
    }
}
