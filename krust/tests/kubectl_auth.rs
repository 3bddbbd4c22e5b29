//! `kubectl auth whoami`, `kubectl auth can-i` and `kubectl get apiservices` against a real
//! `krust server`: the review kinds and the local APIServices as a person meets them.

mod common;

use common::TestServer;

#[test]
fn auth_whoami_and_can_i() {
    let server = TestServer::start();
    let out = server.kubectl_ok(&["auth", "whoami"]);
    assert!(out.contains("Username") && out.contains("system:admin"), "{out}");
    assert!(out.contains("system:masters") && out.contains("system:authenticated"), "{out}");
    let out = server.kubectl_ok(&["auth", "whoami", "-o", "json"]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["kind"], "SelfSubjectReview", "{v}");

    assert_eq!(server.kubectl_ok(&["auth", "can-i", "create", "pods"]).trim(), "yes");
    assert_eq!(server.kubectl_ok(&["auth", "can-i", "delete", "nodes", "--all-namespaces"]).trim(), "yes");
    assert_eq!(server.kubectl_ok(&["auth", "can-i", "get", "/healthz"]).trim(), "yes");
    let out = server.kubectl_ok(&["auth", "can-i", "--list", "-n", "default"]);
    assert!(out.contains("*.*") && out.contains("[*]"), "{out}");
}

#[test]
fn get_apiservices_lists_the_local_ones() {
    let server = TestServer::start();
    let out = server.kubectl_ok(&["get", "apiservices"]);
    let row = |name: &str| {
        out.lines()
            .find(|l| l.split_whitespace().next() == Some(name))
            .unwrap_or_else(|| panic!("no {name} in:\n{out}"))
            .split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
    };
    for name in ["v1.", "v1.apps", "v2.autoscaling", "v1.authorization.k8s.io"] {
        let r = row(name);
        assert_eq!(r[1], "Local", "{out}");
        // status comes from the sync loop right after start
        assert!(r[2] == "True" || r[2] == "Unknown", "{out}");
    }
}
