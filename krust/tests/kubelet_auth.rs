//! The kubelet endpoint authenticates and authorizes every request as upstream's kubelet
//! with `--anonymous-auth=false --client-ca-file --authentication-token-webhook
//! --authorization-mode=Webhook`: a real `krust server` with its agent and a pod, requests
//! straight to the kubelet port with curl (client certificates from the server's data dir,
//! service account tokens from `kubectl create token`), and `kubectl logs`/`exec` through the
//! API server.
//!
//! Needs root, Debian's CNI plugins and the registry tools (scripts/setup.sh installs them);
//! skips with a message where the machine lacks them.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::node::{missing_prerequisite, wait_for, Bridge, Registry};
use common::{free_port, text, TestServer, WITH_AGENT};

/// How a curl request to the kubelet identifies itself.
enum Who<'a> {
    Nobody,
    Cert(&'a Path, &'a Path),
    Token(&'a str),
}

/// The kubelet endpoint of the test server's node.
struct Kubelet<'a> {
    server: &'a TestServer,
    port: String,
}

impl Kubelet<'_> {
    /// `method path` as `who`: (HTTP status, body); status 0 when no HTTP answer came (a
    /// refused TLS handshake). `--path-as-is` so that `..` reaches the kubelet unchanged.
    fn curl(&self, who: &Who, method: &str, path: &str) -> (u16, String) {
        let mut cmd = Command::new("curl");
        cmd.args(["-s", "--path-as-is", "--max-time", "20", "-w", "\n%{http_code}", "-X", method, "--cacert"]).arg(self.server.server_ca());
        match who {
            Who::Nobody => {}
            Who::Cert(crt, key) => {
                cmd.arg("--cert").arg(crt).arg("--key").arg(key);
            }
            Who::Token(t) => {
                cmd.args(["-H", &format!("Authorization: Bearer {t}")]);
            }
        }
        let out = cmd.arg(format!("https://127.0.0.1:{}{path}", self.port)).output().expect("running curl");
        let stdout = text(&out.stdout);
        let (body, code) = stdout.rsplit_once('\n').unwrap_or(("", &stdout));
        (code.trim().parse().unwrap_or(0), body.to_string())
    }
}

/// A client certificate for `subject` (`/CN=bob/O=devs`) signed by `ca` (cert, key), made
/// with openssl; self-signed when `ca` is `None`.
fn client_cert(dir: &Path, name: &str, subject: &str, ca: Option<(&Path, &Path)>) -> (PathBuf, PathBuf) {
    let (crt, key, ext) = (dir.join(format!("{name}.crt")), dir.join(format!("{name}.key")), dir.join(format!("{name}.ext")));
    std::fs::write(&ext, "extendedKeyUsage=clientAuth\n").unwrap();
    let csr = dir.join(format!("{name}.csr"));
    let run = |args: &[&str]| {
        let out = Command::new("openssl").args(args).output().unwrap();
        assert!(out.status.success(), "openssl {args:?}: {}", text(&out.stderr));
    };
    let (crt_s, key_s, ext_s, csr_s) = (crt.to_str().unwrap(), key.to_str().unwrap(), ext.to_str().unwrap(), csr.to_str().unwrap());
    run(&["req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", key_s, "-subj", subject, "-out", csr_s]);
    match ca {
        Some((ca_crt, ca_key)) => run(&[
            "x509", "-req", "-in", csr_s, "-CA", ca_crt.to_str().unwrap(), "-CAkey", ca_key.to_str().unwrap(), "-CAcreateserial",
            "-days", "1", "-extfile", ext_s, "-out", crt_s,
        ]),
        None => run(&["x509", "-req", "-in", csr_s, "-key", key_s, "-days", "1", "-extfile", ext_s, "-out", crt_s]),
    }
    (crt, key)
}

#[test]
fn kubelet_endpoint_authenticates_authorizes_and_checks_paths() {
    if let Some(why) = missing_prerequisite() {
        eprintln!("SKIPPED: {why}");
        return;
    }
    let registry = Registry::start();
    let _bridge = Bridge("krt224".into());
    let port = free_port().to_string();
    let s = TestServer::start_with(&[
        WITH_AGENT,
        "--node-name", "node-224",
        "--node-ip", "127.0.0.1",
        "--kubelet-port", &port,
        "--cluster-cidr", "10.42.224.0/24",
        "--cni-bridge", "krt224",
        "--cluster-dns", "10.43.224.10",
    ]);
    let kubelet = Kubelet { server: &s, port };
    let image = registry.image();
    s.kubectl_ok(&["run", "box", &format!("--image={image}"), "--restart=Never", "--", "sh", "-c", "echo hi from box; sleep 3600"]);
    s.kubectl_ok(&["wait", "--for=condition=Ready", "pod/box", "--timeout=90s"]);

    let tls = s.data_dir().join("server/tls");
    let apiserver_crt = tls.join("client-kube-apiserver.crt");
    let apiserver_key = tls.join("client-kube-apiserver.key");
    let apiserver = Who::Cert(&apiserver_crt, &apiserver_key);
    let logs_path = "/containerLogs/default/box/box";

    // (a) Anonymous: 401 with upstream's body, on every route, before anything is done.
    for (method, path) in [("GET", "/healthz"), ("GET", logs_path), ("POST", "/exec/default/box/box?command=id&output=1"), ("GET", "/stats/summary"), ("GET", "/nothing-here")] {
        let (code, body) = kubelet.curl(&Who::Nobody, method, path);
        assert_eq!((code, body.as_str()), (401, "Unauthorized"), "anonymous {method} {path}");
    }
    // (b) A token the API server does not know: 401 (TokenReview says no).
    for path in ["/healthz", logs_path] {
        let (code, body) = kubelet.curl(&Who::Token("not-a-token"), "GET", path);
        assert_eq!((code, body.as_str()), (401, "Unauthorized"), "bogus token on {path}");
    }
    // A certificate from another CA does not get through the TLS handshake.
    let scratch = tempfile::tempdir().unwrap();
    let (mallory_crt, mallory_key) = client_cert(scratch.path(), "mallory", "/CN=system:admin/O=system:masters", None);
    let (code, _) = kubelet.curl(&Who::Cert(&mallory_crt, &mallory_key), "GET", "/healthz");
    assert_eq!(code, 0, "a self-signed client certificate must be refused at the handshake");

    // (c) The API server's client certificate carries no group and is authorized.
    let subject = Command::new("openssl").args(["x509", "-noout", "-subject", "-in"]).arg(&apiserver_crt).output().unwrap();
    let subject = text(&subject.stdout);
    assert!(subject.contains("kube-apiserver-kubelet-client") && !subject.contains("system:masters"), "{subject}");
    assert_eq!(kubelet.curl(&apiserver, "GET", "/healthz"), (200, "ok".to_string()));
    let (code, body) = kubelet.curl(&apiserver, "GET", logs_path);
    assert_eq!((code, body.trim()), (200, "hi from box"));
    // kubectl logs and exec go through the API server to the kubelet with that certificate.
    let logs = wait_for("kubectl logs", Duration::from_secs(10), || {
        let l = s.kubectl_ok(&["logs", "box"]);
        (!l.is_empty()).then_some(l)
    });
    assert_eq!(logs.trim(), "hi from box");
    assert_eq!(s.kubectl_ok(&["exec", "box", "--", "echo", "exec works"]).trim(), "exec works");

    // (d) Path segments that are no namespace, pod or container name: 400, nothing read.
    for (method, path) in [
        ("GET", "/containerLogs/default/box/.."),
        ("GET", "/containerLogs/default/box/..%2F..%2F..%2Fetc"),
        ("GET", "/containerLogs/default/..%2Fbox/box"),
        ("GET", "/containerLogs/..%2F..%2Fx/box/box"),
        ("GET", "/containerLogs/default/box/Box"),
        ("GET", "/containerLogs/default/box..x/box"),
        ("POST", "/exec/default/box/..%2F..?command=id&output=1"),
        ("GET", "/attach/default/box/..?output=1"),
        ("POST", "/portForward/default/.."),
        ("POST", "/portForward/..%2Fdefault/box"),
    ] {
        let (code, body) = kubelet.curl(&apiserver, method, path);
        assert_eq!(code, 400, "{method} {path}: {body}");
        assert!(body.starts_with("invalid "), "{method} {path}: {body}");
    }

    // A service account granted nodes/proxy by RBAC reads logs with its token (TokenReview,
    // then SubjectAccessReview allowed).
    s.kubectl_ok(&["create", "serviceaccount", "log-reader"]);
    s.kubectl_ok(&["create", "clusterrole", "kubelet-log-reader", "--verb=get", "--resource=nodes/proxy"]);
    s.kubectl_ok(&["create", "clusterrolebinding", "kubelet-log-reader", "--clusterrole=kubelet-log-reader", "--serviceaccount=default:log-reader"]);
    let reader = s.kubectl_ok(&["create", "token", "log-reader"]).trim().to_string();
    let (code, body) = kubelet.curl(&Who::Token(&reader), "GET", logs_path);
    assert_eq!((code, body.trim()), (200, "hi from box"), "granted service account");

    // (e) Authenticated identities that RBAC grants nothing on nodes: 403 with upstream's
    // body. Until the API server's RBAC authorizer answers SubjectAccessReviews truthfully,
    // these are allowed and this part fails.
    let nobody = s.kubectl_ok(&["create", "token", "default"]).trim().to_string();
    let (code, body) = kubelet.curl(&Who::Token(&nobody), "GET", logs_path);
    assert_eq!(
        (code, body.as_str()),
        (403, "Forbidden (user=system:serviceaccount:default:default, verb=get, resource=nodes, subresource(s)=[proxy])\n"),
        "a service account without grants reading logs"
    );
    let (code, body) = kubelet.curl(&Who::Token(&nobody), "GET", "/healthz");
    assert_eq!(
        (code, body.as_str()),
        (403, "Forbidden (user=system:serviceaccount:default:default, verb=get, resource=nodes, subresource(s)=[healthz proxy])\n"),
        "a service account without grants on /healthz"
    );
    let (bob_crt, bob_key) = client_cert(scratch.path(), "bob", "/CN=bob/O=devs", Some((&tls.join("client-ca.crt"), &tls.join("client-ca.key"))));
    let (code, body) = kubelet.curl(&Who::Cert(&bob_crt, &bob_key), "POST", "/exec/default/box/box?command=id&output=1");
    assert_eq!(
        (code, body.as_str()),
        (403, "Forbidden (user=bob, verb=create, resource=nodes, subresource(s)=[proxy])\n"),
        "a client certificate without grants"
    );
}
