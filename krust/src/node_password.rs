//! Node passwords, as k3s's `pkg/nodepassword`: each agent generates a random password on
//! its first join and keeps it in its data dir; the server stores a salted hash of it in the
//! Secret `kube-system/<node>.node-password.krust` the first time a node name joins, and
//! from then on refuses credentials for that name to anyone presenting another password.
//! So the cluster secret alone no longer lets one node take another's identity.
//!
//! The hash is PBKDF2-HMAC-SHA256 (ring) in PHC string form
//! (`$pbkdf2-sha256$i=ITERATIONS$SALT$HASH`, unpadded base64), where k3s uses scrypt: the
//! same kind of salted, slow hash, from a crate already in the tree.

use std::num::NonZeroU32;

use base64::engine::general_purpose::STANDARD_NO_PAD;
use base64::Engine;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::ByteString;
use kube::api::{ObjectMeta, PostParams};
use kube::Api;
use ring::rand::SecureRandom;

/// The Secret's type, as k3s's `k3s.cattle.io/node-password`.
pub const SECRET_TYPE: &str = "krust.io/node-password";
const NAMESPACE: &str = "kube-system";
const SCHEME: &str = "pbkdf2-sha256";
/// OWASP's recommendation for PBKDF2-HMAC-SHA256 (2023); a join pays it once or twice.
const ITERATIONS: u32 = 600_000;
const SALT_LEN: usize = 16;
const HASH_LEN: usize = 32;

#[derive(Debug, thiserror::Error)]
pub enum NodePasswordError {
    #[error("node password mismatch: node {node:?} already joined with another password (Secret {NAMESPACE}/{secret}); delete that Secret if the node was replaced")]
    Mismatch { node: String, secret: String },
    #[error("node password Secret {NAMESPACE}/{secret} holds no valid hash")]
    Corrupt { secret: String },
    #[error("reading or writing the node password Secret {NAMESPACE}/{secret}: {source}")]
    Api { secret: String, source: kube::Error },
    #[error("generating a salt: the system random generator failed")]
    Random,
}

pub fn secret_name(node: &str) -> String {
    format!("{}.node-password.krust", node.to_ascii_lowercase())
}

/// A salted hash of `password` in PHC string form.
pub fn hash(password: &str) -> Result<String, NodePasswordError> {
    let mut salt = [0u8; SALT_LEN];
    ring::rand::SystemRandom::new().fill(&mut salt).map_err(|_| NodePasswordError::Random)?;
    Ok(hash_with(password, &salt, ITERATIONS))
}

fn hash_with(password: &str, salt: &[u8], iterations: u32) -> String {
    let mut out = [0u8; HASH_LEN];
    let n = NonZeroU32::new(iterations).unwrap_or(NonZeroU32::MIN);
    ring::pbkdf2::derive(ring::pbkdf2::PBKDF2_HMAC_SHA256, n, salt, password.as_bytes(), &mut out);
    format!("${SCHEME}$i={iterations}${}${}", STANDARD_NO_PAD.encode(salt), STANDARD_NO_PAD.encode(out))
}

/// Whether `password` matches `stored`; `None` when `stored` is not a hash of ours.
pub fn verify(stored: &str, password: &str) -> Option<bool> {
    let mut parts = stored.strip_prefix('$')?.split('$');
    let (scheme, params, salt, hash) = (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    if scheme != SCHEME || parts.next().is_some() {
        return None;
    }
    let iterations: NonZeroU32 = params.strip_prefix("i=")?.parse().ok()?;
    let salt = STANDARD_NO_PAD.decode(salt).ok()?;
    let hash = STANDARD_NO_PAD.decode(hash).ok()?;
    // Constant time, as ring's verify is.
    Some(ring::pbkdf2::verify(ring::pbkdf2::PBKDF2_HMAC_SHA256, iterations, &salt, password.as_bytes(), &hash).is_ok())
}

/// Checks `password` against the node's Secret, creating the Secret on the name's first join
/// (k3s's `nodepassword.Ensure`). Two first joins racing: the loser checks the winner's hash.
pub async fn ensure(client: &kube::Client, node: &str, password: &str) -> Result<(), NodePasswordError> {
    let secrets: Api<Secret> = Api::namespaced(client.clone(), NAMESPACE);
    let name = secret_name(node);
    let api_err = |source| NodePasswordError::Api { secret: name.clone(), source };
    if let Some(existing) = secrets.get_opt(&name).await.map_err(api_err)? {
        return check(&existing, node, password);
    }
    let secret = Secret {
        metadata: ObjectMeta { name: Some(name.clone()), namespace: Some(NAMESPACE.into()), ..Default::default() },
        type_: Some(SECRET_TYPE.into()),
        immutable: Some(true),
        data: Some([("hash".to_string(), ByteString(hash(password)?.into_bytes()))].into()),
        ..Default::default()
    };
    match secrets.create(&PostParams::default(), &secret).await {
        Ok(_) => {
            tracing::info!(node, secret = %name, "stored the node password hash on first join");
            Ok(())
        }
        Err(kube::Error::Api(e)) if e.code == 409 => check(&secrets.get(&name).await.map_err(api_err)?, node, password),
        Err(e) => Err(api_err(e)),
    }
}

fn check(secret: &Secret, node: &str, password: &str) -> Result<(), NodePasswordError> {
    let name = secret_name(node);
    let stored = secret.data.as_ref().and_then(|d| d.get("hash")).and_then(|h| std::str::from_utf8(&h.0).ok());
    match stored.and_then(|h| verify(h, password)) {
        Some(true) => Ok(()),
        Some(false) => Err(NodePasswordError::Mismatch { node: node.to_string(), secret: name }),
        None => Err(NodePasswordError::Corrupt { secret: name }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_are_salted_and_verify() {
        let a = hash_with("pw", b"salt-one", 10);
        let b = hash_with("pw", b"salt-two", 10);
        assert_ne!(a, b);
        assert!(a.starts_with("$pbkdf2-sha256$i=10$"), "{a}");
        assert!(!a.contains("pw$") && !a.ends_with("pw"));
        assert_eq!(verify(&a, "pw"), Some(true));
        assert_eq!(verify(&b, "pw"), Some(true));
        assert_eq!(verify(&a, "other"), Some(false));
        assert_eq!(verify("plain", "pw"), None);
        assert_eq!(verify("$scrypt$i=1$a$b", "pw"), None);
        assert_eq!(verify(&format!("{a}$extra"), "pw"), None);
    }

    #[test]
    fn secret_check() {
        let with = |h: &str| Secret { data: Some([("hash".to_string(), ByteString(h.as_bytes().to_vec()))].into()), ..Default::default() };
        let good = with(&hash_with("pw", b"s", 10));
        assert!(check(&good, "n1", "pw").is_ok());
        let err = check(&good, "n1", "nope").unwrap_err();
        assert!(matches!(err, NodePasswordError::Mismatch { .. }));
        assert!(err.to_string().contains("n1.node-password.krust"), "{err}");
        assert!(matches!(check(&Secret::default(), "n1", "pw"), Err(NodePasswordError::Corrupt { .. })));
        assert_eq!(secret_name("Node-A"), "node-a.node-password.krust");
    }
}
