//! Least privilege for krust's own parts: the controller-manager, the scheduler and the join
//! endpoint act under their own identities (kubeconfigs in DATA_DIR/server/cred/), each
//! controller under its own service account, none of them system:masters; each is held to
//! its bootstrap role, and works with only that.

mod common;

use std::path::Path;
use std::time::Duration;

use common::{poll, text, TestServer};

/// `kubectl` with another kubeconfig than the admin's.
fn kubectl_as(server: &TestServer, kubeconfig: &Path, args: &[&str]) -> std::process::Output {
    std::process::Command::new(common::kubectl_bin())
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .args(["--server", &server.url()])
        .args(args)
        .output()
        .expect("running kubectl")
}

fn can_i(server: &TestServer, kubeconfig: &Path, args: &[&str]) -> bool {
    let mut all = vec!["auth", "can-i"];
    all.extend_from_slice(args);
    let out = kubectl_as(server, kubeconfig, &all);
    text(&out.stdout).trim() == "yes"
}

#[test]
fn each_part_is_itself_and_not_system_masters() {
    let server = TestServer::start();
    let cred = server.data_dir().join("server/cred");
    for (file, user) in [
        ("controller.kubeconfig", "system:kube-controller-manager"),
        ("scheduler.kubeconfig", "system:kube-scheduler"),
        ("supervisor.kubeconfig", "system:krust:supervisor"),
    ] {
        let kc = cred.join(file);
        let out = kubectl_as(&server, &kc, &["auth", "whoami", "-o", "jsonpath={.status.userInfo.username} {.status.userInfo.groups}"]);
        assert!(out.status.success(), "{file}: {}", text(&out.stderr));
        let who = text(&out.stdout);
        assert!(who.starts_with(&format!("{user} ")), "{file}: {who}");
        assert!(!who.contains("system:masters"), "{file}: {who}");
        // Nobody of them may do what only an admin may.
        assert!(!can_i(&server, &kc, &["create", "clusterrolebindings"]), "{file} may bind roles");
        assert!(!can_i(&server, &kc, &["delete", "namespaces"]), "{file} may delete namespaces");
        assert!(!can_i(&server, &kc, &["create", "pods", "-n", "default"]), "{file} may create pods");
    }
    let cm = cred.join("controller.kubeconfig");
    // Upstream's controller-manager role: it lists and watches everything (the informers),
    // makes its controllers' service accounts and their tokens, holds its own Lease...
    assert!(can_i(&server, &cm, &["list", "pods", "-A"]));
    assert!(can_i(&server, &cm, &["create", "serviceaccounts", "--subresource=token", "-n", "kube-system"]));
    assert!(can_i(&server, &cm, &["update", "leases/kube-controller-manager", "-n", "kube-system"]));
    // ...but writes nothing its controllers do.
    assert!(!can_i(&server, &cm, &["update", "leases", "-n", "kube-node-lease"]));
    assert!(!can_i(&server, &cm, &["create", "replicasets", "-n", "default"]));
    assert!(!can_i(&server, &cm, &["delete", "pods", "-n", "default"]));
    let sched = cred.join("scheduler.kubeconfig");
    assert!(can_i(&server, &sched, &["create", "pods", "--subresource=binding", "-n", "default"]));
    assert!(!can_i(&server, &sched, &["get", "secrets", "-n", "kube-system"]));
    assert!(!can_i(&server, &sched, &["update", "leases", "-n", "kube-node-lease"]));
    let sup = cred.join("supervisor.kubeconfig");
    assert!(can_i(&server, &sup, &["create", "secrets", "-n", "kube-system"]));
    assert!(!can_i(&server, &sup, &["list", "secrets", "-n", "kube-system"]));
    assert!(!can_i(&server, &sup, &["get", "secrets", "-n", "default"]));

    // The admin kubeconfig stays system:masters, and the server's own parts do not use it:
    // the Leases are held under upstream's names by their own users.
    let who = server.kubectl_ok(&["auth", "whoami", "-o", "jsonpath={.status.userInfo.groups}"]);
    assert!(who.contains("system:masters"), "{who}");
    for lease in ["kube-controller-manager", "kube-scheduler"] {
        assert!(
            poll(Duration::from_secs(30), || server.kubectl(&["-n", "kube-system", "get", "lease", lease]).status.success()),
            "no Lease {lease}"
        );
    }
}

/// Each controller acts as its service account: once its ClusterRoleBinding is gone the
/// ReplicaSet controller can create no pod; restored, it can. The account exists and has
/// exactly upstream's role.
#[test]
fn controllers_act_as_their_service_accounts() {
    let server = TestServer::start();
    let sa = "system:serviceaccount:kube-system:replicaset-controller";
    assert!(
        poll(Duration::from_secs(30), || server.kubectl(&["-n", "kube-system", "get", "serviceaccount", "replicaset-controller"]).status.success()),
        "the controller's service account was not created"
    );
    let can = |args: &[&str]| {
        let mut all = vec!["auth", "can-i", "--as", sa];
        all.extend_from_slice(args);
        text(&server.kubectl(&all).stdout).trim() == "yes"
    };
    assert!(can(&["create", "pods", "-n", "default"]));
    assert!(can(&["update", "replicasets", "--subresource=status", "-n", "default"]));
    assert!(!can(&["patch", "replicasets", "--subresource=status", "-n", "default"]));
    assert!(!can(&["create", "deployments", "-n", "default"]));

    let binding = server.kubectl_ok(&["get", "clusterrolebinding", "system:controller:replicaset-controller", "-o", "json"]);
    server.kubectl_ok(&["delete", "clusterrolebinding", "system:controller:replicaset-controller"]);
    server.kubectl_ok(&["create", "namespace", "lp"]);
    let rs = r#"{"apiVersion": "apps/v1", "kind": "ReplicaSet", "metadata": {"name": "web", "namespace": "lp"},
        "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "web"}},
                 "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "c", "image": "registry.invalid/x"}]}}}}"#;
    server.kubectl_stdin_ok(&["apply", "-f", "-"], rs);
    let pods = || server.kubectl_ok(&["-n", "lp", "get", "pods", "-l", "app=web", "-o", "name"]).lines().count();
    std::thread::sleep(Duration::from_secs(5));
    assert_eq!(pods(), 0, "the ReplicaSet controller created pods without its role");

    // Restored (the binding as the bootstrap policy wrote it), the controller catches up.
    let mut restored: serde_json::Value = serde_json::from_str(&binding).unwrap();
    for field in ["resourceVersion", "uid", "creationTimestamp", "managedFields"] {
        restored["metadata"].as_object_mut().unwrap().remove(field);
    }
    server.kubectl_stdin_ok(&["create", "-f", "-"], &restored.to_string());
    assert!(poll(Duration::from_secs(30), || pods() == 2), "the ReplicaSet controller did not resume with its role");
    let ready = server.kubectl_ok(&["-n", "lp", "get", "rs", "web", "-o", "jsonpath={.status.replicas}"]);
    assert!(poll(Duration::from_secs(30), || server.kubectl_ok(&["-n", "lp", "get", "rs", "web", "-o", "jsonpath={.status.replicas}"]) == "2"), "status not written ({ready})");
}
