//! The cluster's certificates, laid out as k3s lays them out under `server/tls/`:
//!
//! | file | what |
//! | --- | --- |
//! | `server-ca.crt/.key` | CA that signs serving certificates; clients trust it |
//! | `client-ca.crt/.key` | CA that signs client certificates; the API server trusts it |
//! | `serving-kube-apiserver.crt/.key` | the API server's TLS certificate |
//! | `client-admin.crt/.key` | the admin user (CN=system:admin, O=system:masters) |
//! | `client-kube-apiserver.crt/.key` | what the API server shows kubelets (CN=kube-apiserver-kubelet-client, no group) |
//!
//! Two CAs, as k3s and kubeadm have, so that a leaked serving key cannot mint client identities
//! and vice versa. Everything is created on first start and loaded on later starts; a leaf
//! is re-issued (by the same CA) only when it no longer fits: wrong issuer, close to expiry,
//! or, for the serving certificate, SANs that do not cover the requested names.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};
use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::GeneralName;

use crate::files::{read_if_exists, write_atomic};

const DAY: Duration = Duration::from_secs(24 * 3600);
/// CA lifetime; k3s uses ten years too.
const CA_LIFETIME: Duration = Duration::from_secs(10 * 365 * 24 * 3600);
/// Leaf lifetime; k3s issues one-year leaves and renews them at start when close to expiry.
const LEAF_LIFETIME: Duration = Duration::from_secs(365 * 24 * 3600);
/// A leaf with less than this left is re-issued at start, as k3s does.
const RENEW_BEFORE: Duration = Duration::from_secs(90 * 24 * 3600);

/// Mode of private keys: only the server's user may read them.
const KEY_MODE: u32 = 0o600;
const CERT_MODE: u32 = 0o644;

/// The PEM material the server and the kubeconfig need.
pub struct Pki {
    pub server_ca_pem: String,
    pub client_ca_pem: String,
    pub serving_cert_pem: String,
    pub serving_key_pem: String,
    pub admin_cert_pem: String,
    pub admin_key_pem: String,
    /// What the API server presents to kubelets (logs, exec, port-forward).
    pub kubelet_client_cert_pem: String,
    pub kubelet_client_key_pem: String,
}

/// One name a certificate is valid for, normalised so that sets of them compare.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum San {
    Dns(String),
    Ip(IpAddr),
}

impl San {
    pub fn parse(s: &str) -> Self {
        match s.parse::<IpAddr>() {
            Ok(ip) => San::Ip(ip),
            Err(_) => San::Dns(s.to_ascii_lowercase()),
        }
    }

    fn to_rcgen(&self) -> anyhow::Result<SanType> {
        Ok(match self {
            San::Ip(ip) => SanType::IpAddress(*ip),
            San::Dns(name) => SanType::DnsName(
                name.clone()
                    .try_into()
                    .with_context(|| format!("{name:?} is not a valid DNS name"))?,
            ),
        })
    }
}

/// Loads the cluster's certificates from `tls_dir`, creating or re-issuing what is missing
/// or stale. `serving_sans` are the names the serving certificate must cover.
pub fn ensure(tls_dir: &Path, serving_sans: &BTreeSet<San>) -> anyhow::Result<Pki> {
    let server_ca = Ca::load_or_create(tls_dir, "server-ca")?;
    let client_ca = Ca::load_or_create(tls_dir, "client-ca")?;
    let serving = Leaf {
        name: "serving-kube-apiserver",
        common_name: "kube-apiserver",
        organizations: &[],
        sans: serving_sans,
        usage: ExtendedKeyUsagePurpose::ServerAuth,
    }
    .ensure(tls_dir, &server_ca)?;
    let admin = Leaf {
        name: "client-admin",
        common_name: "system:admin",
        organizations: &["system:masters"],
        sans: &BTreeSet::new(),
        usage: ExtendedKeyUsagePurpose::ClientAuth,
    }
    .ensure(tls_dir, &client_ca)?;
    // No group, as kubeadm issues it: the client CA is the API server's too, so a group
    // here (it was system:masters) would make this key cluster-admin on the API. Kubelets
    // authorize the user by name (RBAC binds it system:kubelet-api-admin).
    let kubelet_client = Leaf {
        name: "client-kube-apiserver",
        common_name: "kube-apiserver-kubelet-client",
        organizations: &[],
        sans: &BTreeSet::new(),
        usage: ExtendedKeyUsagePurpose::ClientAuth,
    }
    .ensure(tls_dir, &client_ca)?;
    Ok(Pki {
        server_ca_pem: server_ca.cert_pem,
        client_ca_pem: client_ca.cert_pem,
        serving_cert_pem: serving.0,
        serving_key_pem: serving.1,
        admin_cert_pem: admin.0,
        admin_key_pem: admin.1,
        kubelet_client_cert_pem: kubelet_client.0,
        kubelet_client_key_pem: kubelet_client.1,
    })
}

/// The service account signing key (`service.key`, P-256, PKCS#8 DER), created on first use
/// and kept, so tokens stay valid across restarts.
pub fn service_account_key(tls_dir: &Path) -> anyhow::Result<Vec<u8>> {
    let path = tls_dir.join("service.key");
    let pem = match read_if_exists(&path)? {
        Some(pem) => pem,
        None => {
            let key = KeyPair::generate().context("generating the service account key")?;
            write_atomic(&path, key.serialize_pem().as_bytes(), KEY_MODE)?;
            tracing::info!(path = %path.display(), "created the service account signing key");
            key.serialize_pem()
        }
    };
    let key = KeyPair::from_pem(&pem).with_context(|| format!("parsing {}", path.display()))?;
    Ok(key.serialize_der())
}

/// Issues a client certificate signed by the client CA in `tls_dir` (for a joining node:
/// `system:node:NAME` in `system:nodes`). Not stored: the caller hands it out.
pub fn issue_client(tls_dir: &Path, common_name: &str, organizations: &[&str]) -> anyhow::Result<(String, String)> {
    let ca = Ca::load_or_create(tls_dir, "client-ca")?;
    Leaf { name: common_name, common_name, organizations, sans: &BTreeSet::new(), usage: ExtendedKeyUsagePurpose::ClientAuth }.issue(&ca)
}

/// Issues a serving certificate signed by the server CA (a node's kubelet endpoint, whose
/// certificate the API server checks). Not stored.
pub fn issue_serving(tls_dir: &Path, common_name: &str, sans: &BTreeSet<San>) -> anyhow::Result<(String, String)> {
    let ca = Ca::load_or_create(tls_dir, "server-ca")?;
    Leaf { name: common_name, common_name, organizations: &[], sans, usage: ExtendedKeyUsagePurpose::ServerAuth }.issue(&ca)
}

/// A certificate authority: its certificate, and an issuer to sign leaves with.
struct Ca {
    cert_pem: String,
    cert_der: Vec<u8>,
    issuer: Issuer<'static, KeyPair>,
}

impl Ca {
    fn load_or_create(dir: &Path, name: &str) -> anyhow::Result<Ca> {
        let (crt_path, key_path) = pair_paths(dir, name);
        match (read_if_exists(&crt_path)?, read_if_exists(&key_path)?) {
            (Some(cert_pem), Some(key_pem)) => Ca::load(&crt_path, cert_pem, &key_pem),
            (None, None) => Ca::create(&crt_path, &key_path, name),
            // Half a CA cannot sign anything verifiable; refuse rather than silently replace
            // a CA that existing kubeconfigs and agents trust.
            _ => bail!(
                "only one of {} and {} exists; restore the missing file or remove both to create a new CA",
                crt_path.display(),
                key_path.display()
            ),
        }
    }

    fn load(crt_path: &Path, cert_pem: String, key_pem: &str) -> anyhow::Result<Ca> {
        let key = KeyPair::from_pem(key_pem)
            .with_context(|| format!("parsing the key of {}", crt_path.display()))?;
        let cert_der =
            pem_to_der(&cert_pem).with_context(|| format!("parsing {}", crt_path.display()))?;
        let issuer = Issuer::from_ca_cert_pem(&cert_pem, key)
            .with_context(|| format!("loading CA {}", crt_path.display()))?;
        tracing::debug!(path = %crt_path.display(), "loaded CA");
        Ok(Ca {
            cert_pem,
            cert_der,
            issuer,
        })
    }

    fn create(crt_path: &Path, key_path: &Path, name: &str) -> anyhow::Result<Ca> {
        let mut params = CertificateParams::default();
        // The timestamp keeps CAs of different installs apart, as k3s's `k3s-server-ca@<unix>`.
        let cn = format!("krust-{name}@{}", unix_now());
        params.distinguished_name = rcgen::DistinguishedName::new();
        params.distinguished_name.push(DnType::CommonName, cn);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        set_validity(&mut params, CA_LIFETIME);
        let key = KeyPair::generate().context("generating a CA key")?;
        let cert = params.self_signed(&key).context("self-signing the CA")?;
        write_atomic(key_path, key.serialize_pem().as_bytes(), KEY_MODE)?;
        write_atomic(crt_path, cert.pem().as_bytes(), CERT_MODE)?;
        tracing::info!(path = %crt_path.display(), "created CA");
        Ok(Ca {
            cert_pem: cert.pem(),
            cert_der: cert.der().to_vec(),
            issuer: Issuer::new(params, key),
        })
    }
}

/// What a leaf certificate must be.
struct Leaf<'a> {
    name: &'a str,
    common_name: &'a str,
    organizations: &'a [&'a str],
    sans: &'a BTreeSet<San>,
    usage: ExtendedKeyUsagePurpose,
}

impl Leaf<'_> {
    /// Returns (cert PEM, key PEM), reusing the files on disk when they still fit.
    fn ensure(&self, dir: &Path, ca: &Ca) -> anyhow::Result<(String, String)> {
        let (crt_path, key_path) = pair_paths(dir, self.name);
        if let (Some(cert_pem), Some(key_pem)) =
            (read_if_exists(&crt_path)?, read_if_exists(&key_path)?)
        {
            match self.why_stale(&cert_pem, ca) {
                None => return Ok((cert_pem, key_pem)),
                Some(reason) => {
                    tracing::info!(cert = %crt_path.display(), %reason, "re-issuing certificate")
                }
            }
        }
        let (cert_pem, key_pem) = self.issue(ca)?;
        write_atomic(&key_path, key_pem.as_bytes(), KEY_MODE)?;
        write_atomic(&crt_path, cert_pem.as_bytes(), CERT_MODE)?;
        tracing::info!(path = %crt_path.display(), "created certificate");
        Ok((cert_pem, key_pem))
    }

    /// Why the certificate on disk cannot be reused, or `None` if it can.
    fn why_stale(&self, cert_pem: &str, ca: &Ca) -> Option<String> {
        let der = match pem_to_der(cert_pem) {
            Ok(der) => der,
            Err(e) => return Some(format!("unreadable: {e:#}")),
        };
        let cert = match x509_parser::parse_x509_certificate(&der) {
            Ok((_, cert)) => cert,
            Err(e) => return Some(format!("unparsable: {e}")),
        };
        if !signed_by(&cert, &ca.cert_der) {
            return Some("not signed by the current CA".into());
        }
        let not_after = cert.validity().not_after.timestamp();
        if not_after < unix_now() as i64 + RENEW_BEFORE.as_secs() as i64 {
            return Some("expires within 90 days".into());
        }
        if let Some(why) = self.wrong_subject(&cert) {
            return Some(why);
        }
        let have = cert_sans(&cert);
        let missing: Vec<_> = self.sans.difference(&have).collect();
        if !missing.is_empty() {
            return Some(format!("does not cover {missing:?}"));
        }
        None
    }

    /// The subject (user and groups) differs from the one wanted: a certificate issued by an
    /// older krust with other groups must not keep them.
    fn wrong_subject(&self, cert: &X509Certificate<'_>) -> Option<String> {
        let (cn, o) = subject_names(cert);
        (cn != [self.common_name] || o != self.organizations)
            .then(|| format!("subject CN={cn:?} O={o:?} is not CN={} O={:?}", self.common_name, self.organizations))
    }

    fn issue(&self, ca: &Ca) -> anyhow::Result<(String, String)> {
        let mut params = CertificateParams::default();
        params.distinguished_name = rcgen::DistinguishedName::new();
        params
            .distinguished_name
            .push(DnType::CommonName, self.common_name);
        for org in self.organizations {
            params
                .distinguished_name
                .push(DnType::OrganizationName, *org);
        }
        params.subject_alt_names = self
            .sans
            .iter()
            .map(San::to_rcgen)
            .collect::<anyhow::Result<_>>()?;
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![self.usage.clone()];
        params.use_authority_key_identifier_extension = true;
        set_validity(&mut params, LEAF_LIFETIME);
        let key =
            KeyPair::generate().with_context(|| format!("generating a key for {}", self.name))?;
        let cert = params
            .signed_by(&key, &ca.issuer)
            .with_context(|| format!("signing {}", self.name))?;
        Ok((cert.pem(), key.serialize_pem()))
    }
}

/// The subject's common names and organizations (user and groups of a client certificate).
fn subject_names(cert: &X509Certificate<'_>) -> (Vec<String>, Vec<String>) {
    let texts = |it: &mut dyn Iterator<Item = &x509_parser::x509::AttributeTypeAndValue<'_>>| -> Vec<String> {
        it.map(|a| a.as_str().unwrap_or_default().to_string()).collect()
    };
    let subject = cert.subject();
    (texts(&mut subject.iter_common_name()), texts(&mut subject.iter_organization()))
}

fn pair_paths(dir: &Path, name: &str) -> (PathBuf, PathBuf) {
    (
        dir.join(format!("{name}.crt")),
        dir.join(format!("{name}.key")),
    )
}

/// Valid from a day ago (tolerates clock skew between machines) for `lifetime`.
fn set_validity(params: &mut CertificateParams, lifetime: Duration) {
    let now = SystemTime::now();
    params.not_before = (now - DAY).into();
    params.not_after = (now + lifetime).into();
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// The DER of the first certificate in a PEM text.
pub fn pem_to_der(pem: &str) -> anyhow::Result<Vec<u8>> {
    let first = rustls_pemfile::certs(&mut pem.as_bytes()).next();
    match first {
        Some(cert) => Ok(cert.context("reading PEM")?.to_vec()),
        None => bail!("no certificate in PEM text"),
    }
}

fn signed_by(cert: &X509Certificate<'_>, ca_der: &[u8]) -> bool {
    match x509_parser::parse_x509_certificate(ca_der) {
        Ok((_, ca)) => {
            cert.issuer() == ca.subject() && cert.verify_signature(Some(ca.public_key())).is_ok()
        }
        Err(_) => false,
    }
}

/// The SANs a certificate carries.
fn cert_sans(cert: &X509Certificate<'_>) -> BTreeSet<San> {
    let Ok(Some(ext)) = cert.subject_alternative_name() else {
        return BTreeSet::new();
    };
    ext.value
        .general_names
        .iter()
        .filter_map(|name| match name {
            GeneralName::DNSName(dns) => Some(San::Dns(dns.to_ascii_lowercase())),
            GeneralName::IPAddress(bytes) => ip_from_bytes(bytes).map(San::Ip),
            _ => None,
        })
        .collect()
}

fn ip_from_bytes(bytes: &[u8]) -> Option<IpAddr> {
    match bytes.len() {
        4 => Some(IpAddr::from(<[u8; 4]>::try_from(bytes).ok()?)),
        16 => Some(IpAddr::from(<[u8; 16]>::try_from(bytes).ok()?)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sans(names: &[&str]) -> BTreeSet<San> {
        names.iter().map(|n| San::parse(n)).collect()
    }

    fn parse(pem: &str) -> Vec<u8> {
        pem_to_der(pem).unwrap()
    }

    #[test]
    fn first_start_creates_everything_and_restart_reuses_it() {
        let dir = tempfile::tempdir().unwrap();
        let want = sans(&["localhost", "127.0.0.1", "kubernetes"]);
        let first = ensure(dir.path(), &want).unwrap();
        let second = ensure(dir.path(), &want).unwrap();
        assert_eq!(first.server_ca_pem, second.server_ca_pem);
        assert_eq!(first.client_ca_pem, second.client_ca_pem);
        assert_eq!(first.serving_cert_pem, second.serving_cert_pem);
        assert_eq!(first.admin_cert_pem, second.admin_cert_pem);
        assert_ne!(first.server_ca_pem, first.client_ca_pem);

        use std::os::unix::fs::PermissionsExt;
        for key in [
            "server-ca.key",
            "client-ca.key",
            "serving-kube-apiserver.key",
            "client-admin.key",
        ] {
            let mode = std::fs::metadata(dir.path().join(key))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600, "{key}");
        }
    }

    #[test]
    fn new_san_reissues_serving_cert_with_same_ca() {
        let dir = tempfile::tempdir().unwrap();
        let first = ensure(dir.path(), &sans(&["localhost"])).unwrap();
        let second = ensure(dir.path(), &sans(&["localhost", "10.1.2.3", "api.example"])).unwrap();
        assert_eq!(first.server_ca_pem, second.server_ca_pem);
        assert_ne!(first.serving_cert_pem, second.serving_cert_pem);
        assert_eq!(first.admin_cert_pem, second.admin_cert_pem);

        let der = parse(&second.serving_cert_pem);
        let (_, cert) = x509_parser::parse_x509_certificate(&der).unwrap();
        assert_eq!(
            cert_sans(&cert),
            sans(&["localhost", "10.1.2.3", "api.example"])
        );
        assert!(signed_by(&cert, &parse(&second.server_ca_pem)));
        // A subset of the names already covered does not re-issue.
        let third = ensure(dir.path(), &sans(&["api.example"])).unwrap();
        assert_eq!(second.serving_cert_pem, third.serving_cert_pem);
    }

    #[test]
    fn admin_cert_carries_user_and_group() {
        let dir = tempfile::tempdir().unwrap();
        let pki = ensure(dir.path(), &sans(&["localhost"])).unwrap();
        let der = parse(&pki.admin_cert_pem);
        let (_, cert) = x509_parser::parse_x509_certificate(&der).unwrap();
        let (cn, o) = subject_names(&cert);
        assert_eq!(cn, ["system:admin"]);
        assert_eq!(o, ["system:masters"]);
        assert!(signed_by(&cert, &parse(&pki.client_ca_pem)));
        assert!(!signed_by(&cert, &parse(&pki.server_ca_pem)));
    }

    fn subject(pem: &str) -> (Vec<String>, Vec<String>) {
        let der = parse(pem);
        let (_, cert) = x509_parser::parse_x509_certificate(&der).unwrap();
        subject_names(&cert)
    }

    #[test]
    fn kubelet_client_cert_has_no_group_and_an_old_one_is_reissued() {
        let dir = tempfile::tempdir().unwrap();
        let first = ensure(dir.path(), &sans(&["localhost"])).unwrap();
        assert_eq!(subject(&first.kubelet_client_cert_pem), (vec!["kube-apiserver-kubelet-client".to_string()], vec![]));
        // What krust issued before: the same user in system:masters, by the same CA.
        let ca = Ca::load_or_create(dir.path(), "client-ca").unwrap();
        let old = Leaf {
            name: "client-kube-apiserver",
            common_name: "kube-apiserver-kubelet-client",
            organizations: &["system:masters"],
            sans: &BTreeSet::new(),
            usage: ExtendedKeyUsagePurpose::ClientAuth,
        }
        .issue(&ca)
        .unwrap();
        let (crt, key) = pair_paths(dir.path(), "client-kube-apiserver");
        std::fs::write(&crt, &old.0).unwrap();
        std::fs::write(&key, &old.1).unwrap();
        let second = ensure(dir.path(), &sans(&["localhost"])).unwrap();
        assert_ne!(second.kubelet_client_cert_pem, old.0);
        assert_eq!(subject(&second.kubelet_client_cert_pem).1, Vec::<String>::new());
        assert_eq!(std::fs::read_to_string(&crt).unwrap(), second.kubelet_client_cert_pem);
        // Certificates that already fit are kept.
        assert_eq!(first.admin_cert_pem, second.admin_cert_pem);
        assert_eq!(first.serving_cert_pem, second.serving_cert_pem);
    }

    #[test]
    fn half_a_ca_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        ensure(dir.path(), &sans(&["localhost"])).unwrap();
        std::fs::remove_file(dir.path().join("server-ca.key")).unwrap();
        let err = ensure(dir.path(), &sans(&["localhost"])).err().unwrap();
        assert!(format!("{err:#}").contains("server-ca.key"), "{err:#}");
    }
}
