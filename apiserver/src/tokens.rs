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

    /// The key id tokens carry: upstream's, the unpadded base64url SHA-256 of the public
    /// key's PKIX (SubjectPublicKeyInfo) encoding.
    pub fn key_id(&self) -> String {
        let digest = ring::digest::digest(&ring::digest::SHA256, &self.public_key_pkix());
        B64.encode(digest.as_ref())
    }

    fn public_key_pkix(&self) -> Vec<u8> {
        // The fixed SubjectPublicKeyInfo prefix of an uncompressed P-256 point.
        const P256_SPKI_PREFIX: &[u8] = &[
            0x30, 0x59, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07, 0x03, 0x42, 0x00,
        ];
        [P256_SPKI_PREFIX, self.key.public_key().as_ref()].concat()
    }

    /// The public key as a JSON Web Key (OIDC discovery's key set).
    pub fn public_jwk(&self) -> Value {
        let point = self.key.public_key().as_ref();
        json!({"use": "sig", "kty": "EC", "kid": self.key_id(), "crv": "P-256", "alg": "ES256", "x": B64.encode(&point[1..33]), "y": B64.encode(&point[33..65])})
    }

    /// A signed token valid for `seconds` from `now` (unix seconds).
    pub fn issue(&self, b: &Binding, audiences: &[String], now: i64, seconds: i64) -> Result<String, String> {
        let header = json!({"alg": "ES256", "kid": self.key_id()});
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
    fn issue_verify_and_refuse() {
        let t = signer();
        let b = Binding { namespace: "ns".into(), service_account: "default".into(), service_account_uid: "u".into(), pod: Some(("p".into(), "pu".into())) };
        let tok = t.issue(&b, &[], 1000, 3600).unwrap();
        let claims = t.verify(&tok, 1001).unwrap();
        assert_eq!(claims["sub"], "system:serviceaccount:ns:default");
        assert_eq!(claims["kubernetes.io"]["pod"]["name"], "p");
        assert!(t.verify(&tok, 1000 + 3600).is_none(), "expired");
        // Another key's signature, or a changed payload, is refused.
        assert!(signer().verify(&tok, 1001).is_none());
        let mut parts: Vec<&str> = tok.split('.').collect();
        let forged = B64.encode(json!({"iss": ISSUER, "exp": 99999, "sub": "x"}).to_string());
        parts[1] = &forged;
        assert!(t.verify(&parts.join("."), 1001).is_none());
    }
}
