//! Boot-level behaviour of `krust server`: it starts, serves the public endpoints to anyone,
//! refuses anonymous API calls, works with kubectl, and keeps its identity across restarts.

mod common;

use std::path::Path;
use std::process::Command;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use common::{free_port, text, TestServer};

#[test]
fn server_starts_and_reports_ready() {
    let server = TestServer::start();
    assert_eq!(server.curl_anonymous("/readyz"), (200, "ok".to_string()));
    assert_eq!(server.curl_anonymous("/healthz"), (200, "ok".to_string()));
    let logs = server.logs();
    assert!(logs.contains("Listening on https://127.0.0.1:"), "{logs}");
    assert!(logs.contains("krust server ready in"), "{logs}");
    assert!(server.kubeconfig().exists());
}

#[test]
fn version_is_public() {
    let server = TestServer::start();
    let (status, body) = server.curl_anonymous("/version");
    assert_eq!(status, 200, "{body}");
    let version: serde_json::Value = serde_json::from_str(&body).expect("version is JSON");
    assert_eq!(version["major"], "1");
    assert!(
        version["gitVersion"]
            .as_str()
            .unwrap_or_default()
            .starts_with("v1."),
        "{body}"
    );
}

#[test]
fn anonymous_api_request_gets_401_status() {
    let server = TestServer::start();
    let (status, body) = server.curl_anonymous("/api");
    assert_eq!(status, 401, "{body}");
    let status_obj: serde_json::Value = serde_json::from_str(&body).expect("401 body is a Status");
    assert_eq!(status_obj["kind"], "Status");
    assert_eq!(status_obj["code"], 401);
    assert_eq!(status_obj["reason"], "Unauthorized");
}

#[test]
fn kubectl_version_talks_to_the_server() {
    let server = TestServer::start();
    let out = server.kubectl_ok(&["version", "-o", "json"]);
    let v: serde_json::Value = serde_json::from_str(&out).expect("kubectl version -o json");
    assert!(
        v["serverVersion"]["gitVersion"]
            .as_str()
            .unwrap_or_default()
            .contains("krust"),
        "{out}"
    );
}

#[test]
fn admin_client_certificate_is_accepted() {
    let server = TestServer::start();
    let dir = tempfile::tempdir().unwrap();
    assert_ne!(
        curl_as_admin(&server.kubeconfig(), &server.url(), "/api", dir.path()),
        401
    );
}

#[test]
fn restart_keeps_ca_and_old_kubeconfig_works() {
    let data = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut first = TestServer::start_in(data.path(), port, &[]);
    let ca_before = std::fs::read(first.server_ca()).unwrap();
    let client_ca_before = std::fs::read(data.path().join("server/tls/client-ca.crt")).unwrap();
    let old_kubeconfig = data.path().join("old.kubeconfig");
    std::fs::copy(first.kubeconfig(), &old_kubeconfig).unwrap();
    assert!(
        first.stop(),
        "SIGTERM should stop the server cleanly:\n{}",
        first.logs()
    );

    // A new SAN forces a new serving certificate; it must come from the same CA.
    let second = TestServer::start_in(data.path(), port, &["--tls-san", "krust-test.example"]);
    assert_eq!(
        std::fs::read(second.server_ca()).unwrap(),
        ca_before,
        "server CA changed on restart"
    );
    assert_eq!(
        std::fs::read(data.path().join("server/tls/client-ca.crt")).unwrap(),
        client_ca_before
    );
    assert_eq!(
        kubeconfig_field(
            &old_kubeconfig,
            "clusters",
            "cluster",
            "certificate-authority-data"
        ),
        kubeconfig_field(
            &second.kubeconfig(),
            "clusters",
            "cluster",
            "certificate-authority-data"
        ),
    );
    assert!(
        second.logs().contains("re-issuing certificate"),
        "{}",
        second.logs()
    );

    let out = Command::new(common::kubectl_bin())
        .args(["--kubeconfig"])
        .arg(&old_kubeconfig)
        .args(["version", "-o", "json"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "old kubeconfig failed: {}",
        text(&out.stderr)
    );
    let certs = tempfile::tempdir().unwrap();
    assert_ne!(
        curl_as_admin(&old_kubeconfig, &second.url(), "/api", certs.path()),
        401
    );
}

#[test]
fn unsupported_datastore_is_a_clear_error() {
    let data = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_krust"))
        .args([
            "server",
            "--bind-address",
            "127.0.0.1",
            "--https-listen-port",
            &free_port().to_string(),
        ])
        .arg("--data-dir")
        .arg(data.path())
        .args(["--datastore-endpoint", "mysql://root@tcp(127.0.0.1:3306)/krust"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("not supported yet"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn krust_version_flag() {
    let out = Command::new(env!("CARGO_BIN_EXE_krust"))
        .arg("--version")
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(
        text(&out.stdout).starts_with("krust "),
        "{}",
        text(&out.stdout)
    );
}

/// One of `users[0].user.<field>` / `clusters[0].cluster.<field>` in a kubeconfig.
fn kubeconfig_field(path: &Path, list: &str, item: &str, field: &str) -> String {
    let config: serde_yaml::Value =
        serde_yaml::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    config[list][0][item][field]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

/// GETs `path` with the client certificate embedded in `kubeconfig`; returns the HTTP status.
fn curl_as_admin(kubeconfig: &Path, url: &str, path: &str, scratch: &Path) -> u16 {
    let mut files = Vec::new();
    for (list, item, field, name) in [
        ("users", "user", "client-certificate-data", "admin.crt"),
        ("users", "user", "client-key-data", "admin.key"),
        (
            "clusters",
            "cluster",
            "certificate-authority-data",
            "ca.crt",
        ),
    ] {
        let pem = STANDARD
            .decode(kubeconfig_field(kubeconfig, list, item, field))
            .unwrap();
        let file = scratch.join(name);
        std::fs::write(&file, pem).unwrap();
        files.push(file);
    }
    let out = Command::new("curl")
        .args([
            "-sS",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "--max-time",
            "10",
            "--cert",
        ])
        .arg(&files[0])
        .arg("--key")
        .arg(&files[1])
        .arg("--cacert")
        .arg(&files[2])
        .arg(format!("{url}{path}"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "curl with client cert failed: {}",
        text(&out.stderr)
    );
    text(&out.stdout).trim().parse().unwrap()
}
