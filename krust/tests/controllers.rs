//! The controller-manager inside `krust server`, seen through kubectl: namespace deletion,
//! the garbage collector's three propagation policies, the default ServiceAccount, the
//! `kube-root-ca.crt` ConfigMap, and leader election between two controller-managers.

mod common;

use std::time::Duration;

use common::{poll, text, TestServer};

const CRD: &str = r#"
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: widgets.example.com
spec:
  group: example.com
  names: {kind: Widget, plural: widgets, singular: widget, listKind: WidgetList}
  scope: Namespaced
  versions:
  - name: v1
    served: true
    storage: true
    schema:
      openAPIV3Schema:
        type: object
        x-kubernetes-preserve-unknown-fields: true
"#;

fn exists(server: &TestServer, args: &[&str]) -> bool {
    server.kubectl(args).status.success()
}

fn jsonpath(server: &TestServer, args: &[&str]) -> String {
    server.kubectl_ok(args).trim().to_string()
}

#[test]
fn namespace_deletion_removes_contents_and_completes() {
    let server = TestServer::start();
    server.kubectl_stdin_ok(&["apply", "-f", "-"], CRD);
    assert!(
        poll(Duration::from_secs(20), || exists(&server, &["get", "widgets"])),
        "the Widget CRD never got served"
    );
    server.kubectl_ok(&["create", "namespace", "doomed"]);
    server.kubectl_ok(&["-n", "doomed", "create", "configmap", "c1", "--from-literal=a=b"]);
    server.kubectl_ok(&["-n", "doomed", "create", "secret", "generic", "s1", "--from-literal=a=b"]);
    server.kubectl_stdin_ok(
        &["apply", "-f", "-"],
        "apiVersion: example.com/v1\nkind: Widget\nmetadata: {name: w1, namespace: doomed}\nspec: {size: 1}\n",
    );

    // kubectl waits for the namespace to be gone: the controller must empty and finalize it.
    server.kubectl_ok(&["delete", "namespace", "doomed", "--timeout=60s"]);
    assert!(!exists(&server, &["get", "namespace", "doomed"]));
    // Recreated empty: nothing of the old contents survived.
    server.kubectl_ok(&["create", "namespace", "doomed"]);
    for kind in ["configmap/c1", "secret/s1", "widget/w1"] {
        assert!(!exists(&server, &["-n", "doomed", "get", kind]), "{kind} survived namespace deletion");
    }

    // Content held by a finalizer keeps the namespace Terminating, with the conditions upstream
    // reports, until the finalizer goes.
    server.kubectl_ok(&["create", "namespace", "held"]);
    server.kubectl_ok(&["-n", "held", "create", "configmap", "keep"]);
    server.kubectl_ok(&["-n", "held", "patch", "configmap", "keep", "-p", r#"{"metadata":{"finalizers":["example.com/hold"]}}"#]);
    server.kubectl_ok(&["delete", "namespace", "held", "--wait=false"]);
    let condition = |t: &str| {
        jsonpath(&server, &["get", "namespace", "held", "-o", &format!("jsonpath={{.status.conditions[?(@.type==\"{t}\")].message}}")])
    };
    assert!(
        poll(Duration::from_secs(20), || condition("NamespaceFinalizersRemaining").contains("example.com/hold in 1 resource instances")),
        "no NamespaceFinalizersRemaining condition: {}",
        server.kubectl_ok(&["get", "namespace", "held", "-o", "yaml"])
    );
    assert_eq!(condition("NamespaceContentRemaining"), "Some resources are remaining: configmaps. has 1 resource instances");
    assert_eq!(jsonpath(&server, &["get", "namespace", "held", "-o", "jsonpath={.status.phase}"]), "Terminating");
    server.kubectl_ok(&["-n", "held", "patch", "configmap", "keep", "--type=merge", "-p", r#"{"metadata":{"finalizers":null}}"#]);
    assert!(
        poll(Duration::from_secs(20), || !exists(&server, &["get", "namespace", "held"])),
        "namespace held not removed after its content went:\n{}",
        server.logs()
    );
}

/// A ConfigMap `name` in namespace `gc` owned by the ConfigMap `owner`.
fn dependent(server: &TestServer, name: &str, owner: &str, block: bool) {
    let uid = jsonpath(server, &["-n", "gc", "get", "configmap", owner, "-o", "jsonpath={.metadata.uid}"]);
    server.kubectl_stdin_ok(
        &["apply", "-f", "-"],
        &format!(
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {name}\n  namespace: gc\n  ownerReferences:\n  - apiVersion: v1\n    kind: ConfigMap\n    name: {owner}\n    uid: {uid}\n    blockOwnerDeletion: {block}\n"
        ),
    );
}

fn configmap_exists(server: &TestServer, name: &str) -> bool {
    exists(server, &["-n", "gc", "get", "configmap", name])
}

#[test]
fn garbage_collector_honours_each_propagation_policy() {
    let server = TestServer::start();
    server.kubectl_ok(&["create", "namespace", "gc"]);

    // Background: the owner goes at once, its dependents (and theirs) after.
    server.kubectl_ok(&["-n", "gc", "create", "configmap", "bg-owner"]);
    dependent(&server, "bg-child", "bg-owner", false);
    dependent(&server, "bg-grandchild", "bg-child", false);
    server.kubectl_ok(&["-n", "gc", "delete", "configmap", "bg-owner", "--cascade=background"]);
    assert!(
        poll(Duration::from_secs(20), || !configmap_exists(&server, "bg-child") && !configmap_exists(&server, "bg-grandchild")),
        "background dependents not collected:\n{}",
        server.logs()
    );

    // A dependent with another live owner only loses the reference to the gone one.
    server.kubectl_ok(&["-n", "gc", "create", "configmap", "two-a"]);
    server.kubectl_ok(&["-n", "gc", "create", "configmap", "two-b"]);
    dependent(&server, "shared", "two-a", false);
    let uid_b = jsonpath(&server, &["-n", "gc", "get", "configmap", "two-b", "-o", "jsonpath={.metadata.uid}"]);
    let refs = jsonpath(&server, &["-n", "gc", "get", "configmap", "shared", "-o", "jsonpath={.metadata.ownerReferences}"]);
    let refs = refs.trim_end_matches(']').to_string()
        + &format!(r#",{{"apiVersion":"v1","kind":"ConfigMap","name":"two-b","uid":"{uid_b}"}}]"#);
    server.kubectl_ok(&["-n", "gc", "patch", "configmap", "shared", "--type=merge", "-p", &format!(r#"{{"metadata":{{"ownerReferences":{refs}}}}}"#)]);
    server.kubectl_ok(&["-n", "gc", "delete", "configmap", "two-a"]);
    assert!(
        poll(Duration::from_secs(20), || {
            jsonpath(&server, &["-n", "gc", "get", "configmap", "shared", "-o", "jsonpath={.metadata.ownerReferences[*].name}"]) == "two-b"
        }),
        "the reference to the deleted owner was not removed"
    );

    // Foreground: the owner waits (foregroundDeletion) for its blocking dependents.
    server.kubectl_ok(&["-n", "gc", "create", "configmap", "fg-owner"]);
    dependent(&server, "fg-blocking", "fg-owner", true);
    dependent(&server, "fg-free", "fg-owner", false);
    server.kubectl_ok(&["-n", "gc", "patch", "configmap", "fg-blocking", "-p", r#"{"metadata":{"finalizers":["example.com/slow"]}}"#]);
    server.kubectl_ok(&["-n", "gc", "delete", "configmap", "fg-owner", "--cascade=foreground", "--wait=false"]);
    assert!(
        poll(Duration::from_secs(20), || !configmap_exists(&server, "fg-free")
            && !jsonpath(&server, &["-n", "gc", "get", "configmap", "fg-blocking", "-o", "jsonpath={.metadata.deletionTimestamp}"]).is_empty()),
        "foreground dependents not deleted:\n{}",
        server.logs()
    );
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(
        jsonpath(&server, &["-n", "gc", "get", "configmap", "fg-owner", "-o", "jsonpath={.metadata.finalizers}"]),
        r#"["foregroundDeletion"]"#,
        "the owner must wait for its blocking dependent"
    );
    server.kubectl_ok(&["-n", "gc", "patch", "configmap", "fg-blocking", "--type=merge", "-p", r#"{"metadata":{"finalizers":null}}"#]);
    assert!(
        poll(Duration::from_secs(20), || !configmap_exists(&server, "fg-owner") && !configmap_exists(&server, "fg-blocking")),
        "foreground owner not released once its dependents went:\n{}",
        server.logs()
    );
    // And through kubectl's own wait.
    server.kubectl_ok(&["-n", "gc", "create", "configmap", "fg2"]);
    dependent(&server, "fg2-child", "fg2", true);
    server.kubectl_ok(&["-n", "gc", "delete", "configmap", "fg2", "--cascade=foreground", "--timeout=30s"]);
    assert!(!configmap_exists(&server, "fg2-child"));

    // Orphan: dependents stay, without the reference.
    server.kubectl_ok(&["-n", "gc", "create", "configmap", "or-owner"]);
    dependent(&server, "or-child", "or-owner", true);
    server.kubectl_ok(&["-n", "gc", "delete", "configmap", "or-owner", "--cascade=orphan", "--timeout=30s"]);
    assert!(!configmap_exists(&server, "or-owner"));
    std::thread::sleep(Duration::from_secs(2));
    assert!(configmap_exists(&server, "or-child"), "an orphaned dependent was deleted");
    assert_eq!(jsonpath(&server, &["-n", "gc", "get", "configmap", "or-child", "-o", "jsonpath={.metadata.ownerReferences}"]), "");
}

#[test]
fn new_namespaces_get_default_service_account_and_root_ca() {
    let server = TestServer::start();
    server.kubectl_ok(&["create", "namespace", "fresh"]);
    assert!(
        poll(Duration::from_secs(10), || exists(&server, &["-n", "fresh", "get", "serviceaccount", "default"])),
        "no default ServiceAccount:\n{}",
        server.logs()
    );
    let ca = std::fs::read_to_string(server.server_ca()).unwrap();
    let published = || server.kubectl(&["-n", "fresh", "get", "configmap", "kube-root-ca.crt", "-o", r"jsonpath={.data.ca\.crt}"]);
    assert!(
        poll(Duration::from_secs(10), || text(&published().stdout) == ca),
        "kube-root-ca.crt missing or wrong:\n{}",
        server.logs()
    );
    // Both come back when deleted, and the ConfigMap is restored when edited.
    server.kubectl_ok(&["-n", "fresh", "delete", "serviceaccount", "default"]);
    server.kubectl_ok(&["-n", "fresh", "patch", "configmap", "kube-root-ca.crt", "-p", r#"{"data":{"ca.crt":"tampered"}}"#]);
    assert!(poll(Duration::from_secs(10), || exists(&server, &["-n", "fresh", "get", "serviceaccount", "default"])));
    assert!(poll(Duration::from_secs(10), || text(&published().stdout) == ca));
    server.kubectl_ok(&["-n", "fresh", "delete", "configmap", "kube-root-ca.crt"]);
    assert!(poll(Duration::from_secs(10), || text(&published().stdout) == ca));
    // The system namespaces too.
    for ns in ["default", "kube-system"] {
        assert!(poll(Duration::from_secs(10), || exists(&server, &["-n", ns, "get", "serviceaccount", "default"])), "{ns}");
    }
}

async fn client_for(server: &TestServer) -> kube::Client {
    let kc = kube::config::Kubeconfig::read_from(server.kubeconfig()).unwrap();
    let cfg = kube::Config::from_custom_kubeconfig(kc, &Default::default()).await.unwrap();
    kube::Client::try_from(cfg).unwrap()
}

/// Two controller-managers against one server: one holds the Lease; when its task dies the
/// other takes over once the Lease expires.
#[tokio::test(flavor = "multi_thread", worker_threads = 3)]
async fn leader_election_between_two_controller_managers() {
    let server = TestServer::start_with(&["--disable-controller-manager"]);
    let timing = controllers::leader::Timing {
        lease_duration: Duration::from_secs(4),
        renew_interval: Duration::from_millis(500),
        renew_deadline: Duration::from_secs(3),
        retry_period: Duration::from_millis(500),
    };
    let start = |identity: &str, client: kube::Client| {
        let config = controllers::Config { identity: identity.into(), leader: timing, ..Default::default() };
        tokio::spawn(async move { controllers::run(client, config).await })
    };
    let a = start("cm-a", client_for(&server).await);
    let b = start("cm-b", client_for(&server).await);
    let client = client_for(&server).await;
    let holder = || async { controllers::leader::current_holder(client.clone()).await.ok().flatten() };

    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let first = loop {
        if let Some(h) = holder().await {
            break h;
        }
        assert!(tokio::time::Instant::now() < deadline, "nobody acquired the lease");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    // Only one holds it: it stays with the first holder across several renewals.
    for _ in 0..6 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert_eq!(holder().await.as_deref(), Some(first.as_str()), "the lease changed hands while its holder was alive");
    }
    // The holder runs the controllers: a new namespace gets its default ServiceAccount.
    server.kubectl_ok(&["create", "namespace", "led"]);
    assert!(poll(Duration::from_secs(10), || exists(&server, &["-n", "led", "get", "serviceaccount", "default"])));

    let (dead, survivor) = if first == "cm-a" { (a, "cm-b") } else { (b, "cm-a") };
    dead.abort();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        if holder().await.as_deref() == Some(survivor) {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{survivor} never took over the lease");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // The new leader runs the controllers too.
    server.kubectl_ok(&["create", "namespace", "led2"]);
    assert!(
        poll(Duration::from_secs(10), || exists(&server, &["-n", "led2", "get", "serviceaccount", "default"])),
        "the new leader does not run the controllers"
    );
}
