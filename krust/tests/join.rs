//! The confined join (`POST /v1-krust/node-credentials`), as k3s's: a node password per
//! node name (stored hashed in a kube-system Secret on the name's first join, required to
//! match afterwards), and a kubelet serving certificate that names only the node. Driven
//! with curl, kubectl and a real `krust agent`, against a real `krust server`.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Stdio};
use std::time::Duration;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use common::{free_port, poll, split_status, text, TestServer};
use serde_json::{json, Value};

/// The cluster secret: the part of the K10 token after `::server:`.
fn cluster_secret(s: &TestServer) -> String {
    let token = std::fs::read_to_string(s.data_dir().join("server/node-token")).unwrap();
    token.trim().rsplit_once("::server:").expect("a K10 token").1.to_string()
}

/// POSTs a credentials request with curl, as an agent would. Returns (status, body).
fn join(s: &TestServer, secret: &str, body: &Value) -> (u16, String) {
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "30", "-w", "\n%{http_code}", "-X", "POST", "-H", "Content-Type: application/json"])
        .args(["-H", &format!("Authorization: Bearer {secret}"), "--data-binary", &body.to_string(), "--cacert"])
        .arg(s.server_ca())
        .arg(format!("{}/v1-krust/node-credentials", s.url()))
        .output()
        .expect("running curl");
    assert!(out.status.success(), "curl: {}", text(&out.stderr));
    split_status(&text(&out.stdout))
}

/// The subject alternative names of a PEM certificate, as `DNS:x` / `IP:y`.
fn sans(pem: &str) -> Vec<String> {
    let (_, pem) = x509_parser::pem::parse_x509_pem(pem.as_bytes()).expect("a PEM certificate");
    let cert = pem.parse_x509().expect("an X.509 certificate");
    let ext = cert.subject_alternative_name().expect("valid extensions").expect("a SAN extension");
    let mut names: Vec<String> = ext
        .value
        .general_names
        .iter()
        .map(|n| match n {
            x509_parser::extensions::GeneralName::DNSName(d) => format!("DNS:{d}"),
            x509_parser::extensions::GeneralName::IPAddress(b) if b.len() == 4 => format!("IP:{}", std::net::Ipv4Addr::new(b[0], b[1], b[2], b[3])),
            other => format!("{other:?}"),
        })
        .collect();
    names.sort();
    names
}

#[test]
fn node_passwords_and_serving_names_confine_the_join() {
    let s = TestServer::start();
    let secret = cluster_secret(&s);
    let request = |node: &str, password: &str, addresses: &[&str]| json!({"nodeName": node, "nodePassword": password, "addresses": addresses});

    // First join of node-a: credentials, and the Secret holding its password's hash.
    let (code, body) = join(&s, &secret, &request("node-a", "first-password", &["192.168.77.5"]));
    assert_eq!(code, 200, "{body}\n{}", s.logs());
    let creds: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(sans(creds["servingCert"].as_str().unwrap()), ["DNS:localhost", "DNS:node-a", "IP:127.0.0.1", "IP:192.168.77.5"]);
    let stored = s.kubectl_ok(&["get", "secret", "-n", "kube-system", "node-a.node-password.krust", "-o", "jsonpath={.type} {.immutable} {.data.hash}"]);
    let fields: Vec<&str> = stored.split(' ').collect();
    assert_eq!(fields[..2], ["krust.io/node-password", "true"], "{stored}");
    let hash = String::from_utf8(STANDARD.decode(fields[2]).unwrap()).unwrap();
    assert!(hash.starts_with("$pbkdf2-sha256$i="), "{hash}");
    assert!(!hash.contains("first-password"), "{hash}");

    // Another password under the same name: refused, and says why.
    let (code, body) = join(&s, &secret, &request("node-a", "second-password", &["192.168.77.5"]));
    assert_eq!(code, 403, "{body}");
    assert!(body.contains("node password mismatch") && body.contains("node-a.node-password.krust"), "{body}");
    // The same password again (the node restarting): accepted, the Secret unchanged.
    let (code, body) = join(&s, &secret, &request("node-a", "first-password", &["192.168.77.5"]));
    assert_eq!(code, 200, "{body}");
    let again = s.kubectl_ok(&["get", "secret", "-n", "kube-system", "node-a.node-password.krust", "-o", "jsonpath={.data.hash}"]);
    assert_eq!(again, fields[2]);

    // Names a node does not own: refused with the reason (400), nothing signed.
    for (claim, reason) in [("kubernetes", "is not an IP address"), ("kubernetes.default.svc", "is not an IP address"), ("node-b", "is not an IP address"), ("10.43.0.1", "Service range 10.43.0.0/16"), ("0.0.0.0", "not a node's unicast")] {
        let (code, body) = join(&s, &secret, &request("node-c", "pw-c", &["192.168.77.9", claim]));
        assert_eq!(code, 400, "{claim}: {body}");
        assert!(body.contains(claim) && body.contains(reason), "{claim}: {body}");
        assert!(!body.contains("BEGIN CERTIFICATE"));
    }
    // A refused request stores no password: node-c may still join with any.
    let (code, body) = join(&s, &secret, &request("node-c", "pw-c2", &["192.168.77.9", "node-c"]));
    assert_eq!(code, 200, "{body}");
    // No password, or a wrong cluster secret.
    assert_eq!(join(&s, &secret, &json!({"nodeName": "node-d", "addresses": []})), (400, "node password not set\n".into()));
    assert_eq!(join(&s, "wrong", &request("node-d", "pw", &[])).0, 401);

    // A real agent under node-a's name: it generates its own password (0600 in its data
    // dir), sends it, and is refused.
    let dir = tempfile::tempdir().unwrap();
    let token = std::fs::read_to_string(s.data_dir().join("server/node-token")).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_krust"))
        .args(["agent", "--server", &s.url(), "--token", token.trim(), "--node-name", "node-a", "--node-ip", "127.0.0.1"])
        .args(["--kubelet-port", &free_port().to_string(), "--data-dir"])
        .arg(dir.path())
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let log = text(&out.stderr);
    assert!(!out.status.success(), "{log}");
    assert!(log.contains("(HTTP 403)") && log.contains("node password mismatch"), "{log}");
    let password_file = dir.path().join("agent/node-password");
    assert_eq!(std::fs::metadata(&password_file).unwrap().permissions().mode() & 0o777, 0o600);
    let password = std::fs::read_to_string(&password_file).unwrap().trim().to_string();
    assert_eq!(password.len(), 32, "{password}");
    assert!(!dir.path().join("agent/kubelet.kubeconfig").exists());
    // That password is the agent's from now on: it owns the name node-e once it joins as it.
    assert_eq!(join(&s, &secret, &request("node-e", &password, &[])).0, 200);
    assert_eq!(join(&s, &secret, &request("node-e", "first-password", &[])).0, 403);
    assert!(poll(Duration::from_secs(1), || s.logs().contains("join refused")), "{}", s.logs());
}
