//! `krust server --datastore-endpoint http://127.0.0.1:PORT`: the cluster state in a real etcd
//! (Debian's `/usr/bin/etcd`, started here on free loopback ports), driven with kubectl.
//! Skipped with a message when etcd is not installed (scripts/setup.sh installs it).

mod common;
#[path = "../../kine-sqlite/tests/etcd_harness/mod.rs"]
mod etcd_harness;

use std::time::Duration;

use common::{text, TestServer};
use etcd_harness::{etcd_available, EtcdCluster};

const WAIT: Duration = Duration::from_secs(30);

fn configmap(name: &str, value: &str) -> String {
    format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {name}\n  namespace: default\ndata:\n  key: {value}\n"
    )
}

/// Whether etcd holds `key`, asked through its v3 JSON gateway (no etcd client needed).
fn etcd_has_key(etcd: &EtcdCluster, key: &str) -> bool {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD.encode(key);
    let out = std::process::Command::new("curl")
        .args(["-sS", "--max-time", "10", "-X", "POST"])
        .arg(format!("{}/v3/kv/range", etcd.endpoint()))
        .args(["-d", &format!("{{\"key\":\"{b64}\"}}")])
        .output()
        .expect("running curl");
    text(&out.stdout).contains("\"kvs\"")
}

#[test]
fn kubectl_against_an_etcd_datastore() {
    if !etcd_available("kubectl_against_an_etcd_datastore") {
        return;
    }
    let etcd = EtcdCluster::single();
    let endpoint = etcd.endpoint();
    let server = TestServer::start_with(&["--datastore-endpoint", &endpoint]);
    assert!(
        server.logs().contains("using the etcd datastore"),
        "{}",
        server.logs()
    );

    // Create, and the object is in etcd under the usual /registry key.
    server.kubectl_stdin_ok(&["create", "-f", "-"], &configmap("one", "a"));
    assert!(etcd_has_key(&etcd, "/registry/configmaps/default/one"));

    // Watch while changing it.
    let out_file = server.data_dir().join("watch.out");
    let mut watch = server.kubectl_background(
        &["get", "cm", "-n", "default", "-w", "--output-watch-events"],
        &out_file,
    );
    watch.wait_for("the initial list", WAIT, |o| o.contains("one"));
    server.kubectl_stdin_ok(&["create", "-f", "-"], &configmap("two", "b"));
    server.kubectl_ok(&["label", "cm", "two", "step=x"]);
    server.kubectl_ok(&["delete", "cm", "two"]);
    let out = watch.wait_for("ADDED, MODIFIED and DELETED of two", WAIT, |o| {
        o.lines()
            .any(|l| l.starts_with("DELETED") && l.contains("two"))
    });
    let events: Vec<(String, String)> = out
        .lines()
        .filter_map(|l| {
            let mut w = l.split_whitespace();
            Some((w.next()?.to_string(), w.next()?.to_string()))
        })
        .filter(|(kind, name)| kind != "EVENT" && (name == "one" || name == "two"))
        .collect();
    let e = |t: &str, n: &str| (t.to_string(), n.to_string());
    assert_eq!(
        events,
        [
            e("ADDED", "one"),
            e("ADDED", "two"),
            e("MODIFIED", "two"),
            e("DELETED", "two")
        ],
        "{out}"
    );
    drop(watch);

    // List and get.
    let names = server.kubectl_ok(&["get", "cm", "-n", "default", "-o", "name"]);
    assert!(names.lines().any(|l| l == "configmap/one"), "{names}");
    assert!(!names.lines().any(|l| l == "configmap/two"), "{names}");
    let value = server.kubectl_ok(&["get", "cm", "one", "-o", "jsonpath={.data.key}"]);
    assert_eq!(value, "a");
    assert!(!etcd_has_key(&etcd, "/registry/configmaps/default/two"));

    // The state outlives the server: a new server on the same etcd (and a new data dir)
    // sees it.
    drop(server);
    let server = TestServer::start_with(&["--datastore-endpoint", &endpoint]);
    let value = server.kubectl_ok(&["get", "cm", "one", "-o", "jsonpath={.data.key}"]);
    assert_eq!(value, "a");
    server.kubectl_ok(&["delete", "cm", "one"]);
    assert!(!etcd_has_key(&etcd, "/registry/configmaps/default/one"));
}

#[test]
fn unreachable_etcd_fails_startup_with_a_clear_error() {
    let port = common::free_port();
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_krust"))
        .args(["server", "--bind-address", "127.0.0.1", "--disable-agent"])
        .args(["--https-listen-port", &common::free_port().to_string()])
        .arg("--data-dir")
        .arg(dir.path())
        .args(["--datastore-endpoint", &format!("http://127.0.0.1:{port}")])
        .output()
        .expect("running krust server");
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(
        err.contains("connecting to the etcd datastore") && err.contains(&port.to_string()),
        "{err}"
    );
}

/// The watch cache follows the store across an etcd restart: a watch opened before it sees
/// every later change exactly once, and nothing is replayed.
#[test]
fn watches_survive_an_etcd_restart() {
    if !etcd_available("watches_survive_an_etcd_restart") {
        return;
    }
    let mut etcd = EtcdCluster::single();
    let server = TestServer::start_with(&["--datastore-endpoint", &etcd.endpoint()]);
    server.kubectl_stdin_ok(&["create", "-f", "-"], &configmap("before", "a"));
    let out_file = server.data_dir().join("restart-watch.out");
    let mut watch = server.kubectl_background(
        &["get", "cm", "-n", "default", "-w", "--output-watch-events", "-o", "name"],
        &out_file,
    );
    watch.wait_for("the initial list", WAIT, |o| o.contains("configmap/before"));
    etcd.restart(0);
    // Writes may need a moment while the client reconnects.
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let out = server.kubectl_stdin(&["create", "-f", "-"], &configmap("after1", "b"));
        if out.status.success() {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "create after the restart failed: {}", text(&out.stderr));
        std::thread::sleep(Duration::from_millis(300));
    }
    server.kubectl_stdin_ok(&["create", "-f", "-"], &configmap("after2", "c"));
    let out = watch.wait_for("both creates after the restart", WAIT, |o| o.contains("after2"));
    let lines: Vec<&str> = out.lines().filter(|l| l.contains("configmap/")).collect();
    let count = |name: &str| lines.iter().filter(|l| l.ends_with(&format!("configmap/{name}"))).count();
    assert_eq!((count("before"), count("after1"), count("after2")), (1, 1, 1), "{out}");
    assert!(lines.iter().all(|l| !l.starts_with("ERROR")), "{out}");
}
