//! Policy inside `krust server`, through stock kubectl with simulated nodes (see `sim`):
//! ResourceQuota status and refusals, PodDisruptionBudget status, the eviction subresource
//! through `kubectl drain`, and `kubectl cordon/uncordon`.

mod common;
mod sim;

use std::time::Duration;

use common::{jsonpath, poll, TestServer};
use sim::{Sim, SimNode};

const WAIT: Duration = Duration::from_secs(60);


const QUOTAS: &str = r#"
apiVersion: v1
kind: Namespace
metadata: {name: counted}
---
apiVersion: v1
kind: ResourceQuota
metadata: {name: pods-quota, namespace: counted}
spec:
  hard: {pods: "2", count/configmaps: "10"}
---
apiVersion: v1
kind: Namespace
metadata: {name: compute}
---
apiVersion: v1
kind: ResourceQuota
metadata: {name: compute, namespace: compute}
spec:
  hard: {requests.cpu: "1", limits.memory: 1Gi}
"#;

#[test]
fn quota_counts_usage_and_refuses_past_its_limits() {
    let server = TestServer::start();
    server.kubectl_stdin_ok(&["apply", "-f", "-"], QUOTAS);
    let used = |ns: &str, q: &str| jsonpath(&server, &["get", "quota", q, "-n", ns], "{.status.used}");
    let hard = || jsonpath(&server, &["get", "quota", "pods-quota", "-n", "counted"], "{.status.hard.pods}");
    assert!(poll(WAIT, || hard() == "2"), "status.hard never set: {}", server.kubectl_ok(&["get", "quota", "-A", "-o", "yaml"]));
    // The namespace's kube-root-ca.crt ConfigMap is counted.
    let pods_used = || jsonpath(&server, &["get", "quota", "pods-quota", "-n", "counted"], "{.status.used.pods}");
    assert!(poll(WAIT, || pods_used() == "0"), "{}", used("counted", "pods-quota"));

    server.kubectl_ok(&["run", "one", "-n", "counted", "--image=nginx"]);
    server.kubectl_ok(&["run", "two", "-n", "counted", "--image=nginx"]);
    assert!(poll(WAIT, || pods_used() == "2"), "{}", used("counted", "pods-quota"));
    let out = server.kubectl(&["run", "three", "-n", "counted", "--image=nginx"]);
    let err = common::text(&out.stderr);
    assert!(!out.status.success(), "a third pod was admitted");
    assert!(
        err.contains("pods \"three\" is forbidden: exceeded quota: pods-quota, requested: pods=1, used: pods=2, limited: pods=2"),
        "{err}"
    );
    server.kubectl_ok(&["create", "configmap", "extra", "-n", "counted"]);
    let cms = || jsonpath(&server, &["get", "configmaps", "-n", "counted"], "{.items[*].metadata.name}").split_whitespace().count().to_string();
    let cm_used = || jsonpath(&server, &["get", "quota", "pods-quota", "-n", "counted"], "{.status.used.count/configmaps}");
    assert!(poll(WAIT, || cm_used() == cms()), "count/configmaps {} vs {} configmaps", cm_used(), cms());

    // Deleting a pod gives its share back; then a new one fits.
    server.kubectl_ok(&["delete", "pod", "one", "-n", "counted"]);
    assert!(poll(WAIT, || pods_used() == "1"), "{}", used("counted", "pods-quota"));
    server.kubectl_ok(&["run", "three", "-n", "counted", "--image=nginx"]);

    // A quota on cpu requests and memory limits needs every container to state them.
    let ch = || jsonpath(&server, &["get", "quota", "compute", "-n", "compute"], "{.status.used.requests\\.cpu}");
    assert!(poll(WAIT, || ch() == "0"), "{}", used("compute", "compute"));
    let out = server.kubectl(&["run", "bare", "-n", "compute", "--image=nginx"]);
    let err = common::text(&out.stderr);
    assert!(
        err.contains("pods \"bare\" is forbidden: failed quota: compute: must specify limits.memory for: bare; requests.cpu for: bare"),
        "{err}"
    );
    let pod = r#"{"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "sized", "namespace": "compute"},
        "spec": {"containers": [{"name": "c", "image": "nginx", "resources": {"requests": {"cpu": "600m"}, "limits": {"memory": "512Mi"}}}]}}"#;
    server.kubectl_stdin_ok(&["apply", "-f", "-"], pod);
    let mem = || jsonpath(&server, &["get", "quota", "compute", "-n", "compute"], "{.status.used.requests\\.cpu} {.status.used.limits\\.memory}");
    assert!(poll(WAIT, || mem() == "600m 512Mi"), "{}", mem());
    let second = pod.replace("\"sized\"", "\"second\"");
    let out = server.kubectl_stdin(&["apply", "-f", "-"], &second);
    let err = common::text(&out.stderr);
    assert!(
        err.contains("exceeded quota: compute, requested: requests.cpu=600m, used: requests.cpu=600m, limited: requests.cpu=1"),
        "{err}"
    );
    let described = server.kubectl_ok(&["describe", "quota", "compute", "-n", "compute"]);
    assert!(described.contains("requests.cpu") && described.contains("600m") && described.contains("512Mi"), "{described}");
}

const WEB: &str = r#"
apiVersion: apps/v1
kind: ReplicaSet
metadata: {name: web}
spec:
  replicas: 2
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers:
      - {name: c, image: nginx, volumeMounts: [{name: scratch, mountPath: /scratch}]}
      volumes: [{name: scratch, emptyDir: {}}]
---
apiVersion: policy/v1
kind: PodDisruptionBudget
metadata: {name: web}
spec:
  minAvailable: 2
  selector: {matchLabels: {app: web}}
"#;

/// `name node` of each Running, Ready web pod.
fn web_pods(server: &TestServer) -> Vec<(String, String)> {
    let out = jsonpath(
        server,
        &["get", "pods", "-l", "app=web"],
        r#"{range .items[?(@.status.phase=="Running")]}{.metadata.name} {.spec.nodeName} {.metadata.deletionTimestamp}{"\n"}{end}"#,
    );
    out.lines()
        .filter_map(|l| {
            let parts: Vec<&str> = l.split_whitespace().collect();
            (parts.len() == 2).then(|| (parts[0].to_string(), parts[1].to_string()))
        })
        .collect()
}

#[test]
fn drain_evicts_within_the_disruption_budget() {
    let server = TestServer::start();
    let _sim = Sim::start(&server.kubeconfig(), vec![SimNode::new("node-a"), SimNode::new("node-b")]);
    let unschedulable = |n: &str| jsonpath(&server, &["get", "node", n], "{.spec.unschedulable}");

    // Both pods land on node-a while node-b is cordoned.
    assert!(server.kubectl_ok(&["cordon", "node-b"]).contains("node/node-b cordoned"));
    assert_eq!(unschedulable("node-b"), "true");
    server.kubectl_stdin_ok(&["apply", "-f", "-"], WEB);
    assert!(
        poll(WAIT, || { let p = web_pods(&server); p.len() == 2 && p.iter().all(|(_, n)| n == "node-a") }),
        "{}",
        server.kubectl_ok(&["get", "pods", "-o", "wide"])
    );
    assert!(server.kubectl_ok(&["uncordon", "node-b"]).contains("node/node-b uncordoned"));
    assert_eq!(unschedulable("node-b"), "");

    let pdb = || {
        jsonpath(
            &server,
            &["get", "pdb", "web"],
            "{.status.currentHealthy} {.status.desiredHealthy} {.status.expectedPods} {.status.disruptionsAllowed} {.status.conditions[0].type}={.status.conditions[0].reason} {.status.observedGeneration}",
        )
    };
    assert!(poll(WAIT, || pdb() == "2 2 2 0 DisruptionAllowed=InsufficientPods 1"), "pdb status: {}", pdb());

    // The budget allows no disruption: drain cordons node-a and keeps retrying the eviction.
    let log = server.data_dir().join("drain.log");
    let mut drain = server.kubectl_background(&["drain", "node-a", "--ignore-daemonsets", "--delete-emptydir-data", "--timeout=120s"], &log);
    drain.wait_for("the budget to refuse an eviction", WAIT, |out| {
        out.contains("Cannot evict pod as it would violate the pod's disruption budget.")
    });
    assert_eq!(unschedulable("node-a"), "true");
    let pods = web_pods(&server);
    assert!(pods.len() == 2 && pods.iter().all(|(_, n)| n == "node-a"), "a pod went while the budget was 0: {pods:?}");

    // A third replica (on node-b, node-a being cordoned) makes room for one disruption at a
    // time: each evicted pod's replacement lands on node-b, and the drain completes.
    server.kubectl_ok(&["scale", "rs", "web", "--replicas=3"]);
    drain.wait_for("the drain to complete", Duration::from_secs(120), |out| out.contains("node/node-a drained"));
    assert!(
        poll(WAIT, || { let p = web_pods(&server); p.len() == 3 && p.iter().all(|(_, n)| n == "node-b") }),
        "{}",
        server.kubectl_ok(&["get", "pods", "-o", "wide"])
    );
    assert!(poll(WAIT, || pdb().starts_with("3 2 3 1 DisruptionAllowed=SufficientPods")), "pdb status: {}", pdb());
}

#[test]
fn eviction_is_refused_with_upstreams_status() {
    let server = TestServer::start();
    let _sim = Sim::start(&server.kubeconfig(), vec![SimNode::new("node-a")]);
    server.kubectl_stdin_ok(&["apply", "-f", "-"], WEB);
    assert!(poll(WAIT, || web_pods(&server).len() == 2), "{}", server.kubectl_ok(&["get", "pods", "-o", "wide"]));
    let ready = || jsonpath(&server, &["get", "pdb", "web"], "{.status.currentHealthy}");
    assert!(poll(WAIT, || ready() == "2"), "{}", ready());
    let pod = web_pods(&server)[0].0.clone();
    let path = format!("/api/v1/namespaces/default/pods/{pod}/eviction");
    let body = format!(r#"{{"apiVersion": "policy/v1", "kind": "Eviction", "metadata": {{"name": "{pod}"}}}}"#);
    let (code, out) = server.curl_admin("POST", &path, &["Content-Type: application/json"], Some(body.as_bytes()));
    assert_eq!(code, 429, "{out}");
    let status: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(status["reason"], "TooManyRequests");
    assert_eq!(status["message"], "Cannot evict pod as it would violate the pod's disruption budget.");
    assert_eq!(status["details"]["causes"][0]["reason"], "DisruptionBudget");
    assert_eq!(status["details"]["causes"][0]["message"], "The disruption budget web needs 2 healthy pods and has 2 currently");

    // With room for one disruption, the eviction is granted and consumes it.
    server.kubectl_ok(&["patch", "pdb", "web", "--type=merge", "-p", r#"{"spec": {"minAvailable": 1}}"#]);
    let allowed = || jsonpath(&server, &["get", "pdb", "web"], "{.status.disruptionsAllowed} {.status.observedGeneration}");
    assert!(poll(WAIT, || allowed() == "1 2"), "{}", allowed());
    let (code, out) = server.curl_admin("POST", &path, &["Content-Type: application/json"], Some(body.as_bytes()));
    assert_eq!(code, 201, "{out}");
    assert!(poll(WAIT, || jsonpath(&server, &["get", "pods", "-l", "app=web", "-o", "name"], "{.items[*].metadata.name}").split_whitespace().all(|n| n != pod)));
    // Pending pods are evicted without a budget.
    let lone = r#"{"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "lone", "labels": {"app": "web"}},
        "spec": {"nodeSelector": {"nowhere": "true"}, "containers": [{"name": "c", "image": "nginx"}]}}"#;
    server.kubectl_stdin_ok(&["apply", "-f", "-"], lone);
    let body = r#"{"apiVersion": "policy/v1", "kind": "Eviction", "metadata": {"name": "lone"}, "deleteOptions": {"gracePeriodSeconds": 0}}"#;
    let (code, out) = server.curl_admin("POST", "/api/v1/namespaces/default/pods/lone/eviction", &["Content-Type: application/json"], Some(body.as_bytes()));
    assert_eq!(code, 201, "{out}");
}
