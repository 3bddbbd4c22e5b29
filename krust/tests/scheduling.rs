//! The scheduler inside `krust server`, seen through stock kubectl, with simulated nodes (see
//! `sim`) standing in for kubelets: pod affinity and anti-affinity, host ports, node
//! affinity `matchFields`, topology spread, the default spread of a Deployment, and
//! preemption by priority.

mod common;
mod sim;

use std::time::Duration;

use common::{jsonpath, poll, TestServer};
use sim::{Sim, SimNode};

const WAIT: Duration = Duration::from_secs(60);


/// Running pods with label `sel`, each as (name, node).
fn running_pods(server: &TestServer, sel: &str) -> Vec<(String, String)> {
    let path = r#"{range .items[?(@.status.phase=="Running")]}{.metadata.name} {.spec.nodeName}{"\n"}{end}"#;
    let out = jsonpath(server, &["get", "pods", "-l", sel], path);
    out.lines().filter_map(|l| l.split_once(' ').map(|(a, b)| (a.to_string(), b.to_string()))).collect()
}

/// `reason message` of the pod's PodScheduled condition.
fn scheduled(server: &TestServer, pod: &str) -> String {
    jsonpath(server, &["get", "pod", pod], r#"{.status.conditions[?(@.type=="PodScheduled")].reason} {.status.conditions[?(@.type=="PodScheduled")].message}"#)
}

/// `reason note` of the events.k8s.io Events about pods, one a line.
fn pod_events(server: &TestServer) -> String {
    jsonpath(server, &["get", "events.events.k8s.io"], r#"{range .items[?(@.regarding.kind=="Pod")]}{.reason} {.note}{"\n"}{end}"#)
}

fn wide(server: &TestServer) -> String {
    server.kubectl_ok(&["get", "pods", "-o", "wide"])
}

/// A Deployment `name` of `replicas` pods labelled `app: name`, with `spec` (indented 6)
/// added to the pod template's spec.
fn deployment(name: &str, replicas: u32, spec: &str) -> String {
    format!(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: {name}}}\nspec:\n  replicas: {replicas}\n  selector: {{matchLabels: {{app: {name}}}}}\n  template:\n    metadata: {{labels: {{app: {name}}}}}\n    spec:\n      containers: [{{name: c, image: nginx}}]\n{spec}"
    )
}

/// A bare pod `name` labelled `app: <app>`, with `spec` (indented 2) added to its spec.
fn pod(name: &str, app: &str, spec: &str) -> String {
    format!("apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}, labels: {{app: {app}}}}}\nspec:\n  containers: [{{name: c, image: nginx}}]\n{spec}---\n")
}

#[test]
fn pod_affinity_anti_affinity_and_default_spread() {
    let server = TestServer::start();
    let _sim = Sim::start(&server.kubeconfig(), vec![SimNode::new("node-a"), SimNode::new("node-b")]);

    // Without any constraint, the two replicas of a Deployment land on two nodes (upstream's
    // default topology spread of a controller's pods), though node-b is the busier one.
    let ballast = "  nodeSelector: {kubernetes.io/hostname: node-b}\n  containers: [{name: c, image: nginx, resources: {requests: {cpu: '1'}}}]\n";
    server.kubectl_stdin_ok(&["apply", "-f", "-"], &pod("ballast", "ballast", ballast).replace("  containers: [{name: c, image: nginx}]\n", ""));
    assert!(poll(WAIT, || running_pods(&server, "app=ballast").len() == 1), "{}", wide(&server));
    server.kubectl_stdin_ok(&["apply", "-f", "-"], &deployment("pair", 2, ""));
    assert!(poll(WAIT, || running_pods(&server, "app=pair").len() == 2), "{}", wide(&server));
    let mut nodes: Vec<String> = running_pods(&server, "app=pair").into_iter().map(|(_, n)| n).collect();
    nodes.sort();
    assert_eq!(nodes, ["node-a", "node-b"], "{}", wide(&server));

    // Required anti-affinity on the hostname: two replicas on two nodes, the third Pending.
    let anti = "      affinity:\n        podAntiAffinity:\n          requiredDuringSchedulingIgnoredDuringExecution:\n          - labelSelector: {matchLabels: {app: lonely}}\n            topologyKey: kubernetes.io/hostname\n";
    server.kubectl_stdin_ok(&["apply", "-f", "-"], &deployment("lonely", 3, anti));
    assert!(poll(WAIT, || running_pods(&server, "app=lonely").len() == 2), "{}", wide(&server));
    let mut nodes: Vec<String> = running_pods(&server, "app=lonely").into_iter().map(|(_, n)| n).collect();
    nodes.sort();
    assert_eq!(nodes, ["node-a", "node-b"]);
    let pending = jsonpath(&server, &["get", "pods", "-l", "app=lonely", "--field-selector", "status.phase=Pending"], "{.items[*].metadata.name}");
    assert_eq!(pending.split_whitespace().count(), 1, "{}", wide(&server));
    let expected = "Unschedulable 0/2 nodes are available: 2 node(s) didn't match pod anti-affinity rules. \
                    preemption: 0/2 nodes are available: 2 No preemption victims found for incoming pod..";
    assert!(poll(WAIT, || scheduled(&server, &pending) == expected), "{}", scheduled(&server, &pending));
    let evs = pod_events(&server);
    assert!(evs.contains("FailedScheduling 0/2 nodes are available: 2 node(s) didn't match pod anti-affinity rules."), "{evs}");
    // A pod with no anti-affinity of its own is kept off both nodes by the replicas' terms.
    server.kubectl_stdin_ok(&["apply", "-f", "-"], &pod("intruder", "lonely", ""));
    let existing = "Unschedulable 0/2 nodes are available: 2 node(s) didn't satisfy existing pods anti-affinity rules. \
                    preemption: 0/2 nodes are available: 2 No preemption victims found for incoming pod..";
    assert!(poll(WAIT, || scheduled(&server, "intruder") == existing), "{}", scheduled(&server, "intruder"));
    // A third node takes the pending replica (retried when nodes change).
    server.kubectl_ok(&["delete", "pod", "intruder", "--wait=true"]);
    let _more = Sim::start(&server.kubeconfig(), vec![SimNode::new("node-c")]);
    assert!(poll(WAIT, || running_pods(&server, "app=lonely").len() == 3), "{}", wide(&server));
    assert!(running_pods(&server, "app=lonely").iter().any(|(name, node)| name.starts_with("lonely-") && node == "node-c"));

    // Required affinity co-locates with a pod, in another namespace chosen by label.
    server.kubectl_ok(&["create", "namespace", "data"]);
    server.kubectl_ok(&["label", "namespace", "data", "team=data"]);
    server.kubectl_stdin_ok(&["apply", "-n", "data", "-f", "-"], &pod("db", "db", "  nodeSelector: {kubernetes.io/hostname: node-b}\n"));
    let near = "  affinity:\n    podAffinity:\n      requiredDuringSchedulingIgnoredDuringExecution:\n      - labelSelector: {matchLabels: {app: db}}\n        namespaceSelector: {matchLabels: {team: data}}\n        topologyKey: kubernetes.io/hostname\n";
    server.kubectl_stdin_ok(&["apply", "-f", "-"], &format!("{}{}", pod("near-1", "near", near), pod("near-2", "near", near)));
    assert!(poll(WAIT, || running_pods(&server, "app=near").len() == 2), "{}", wide(&server));
    assert!(running_pods(&server, "app=near").iter().all(|(_, n)| n == "node-b"), "{}", wide(&server));
    // Without the namespace selector the term looks in the pod's own namespace: nothing there.
    let nowhere = near.replace("        namespaceSelector: {matchLabels: {team: data}}\n", "");
    server.kubectl_stdin_ok(&["apply", "-f", "-"], &pod("far", "far", &nowhere));
    let msg = "Unschedulable 0/3 nodes are available: 3 node(s) didn't match pod affinity rules. preemption: 0/3 nodes are available: 3 Preemption is not helpful for scheduling..";
    assert!(poll(WAIT, || scheduled(&server, "far") == msg), "{}", scheduled(&server, "far"));
}

#[test]
fn host_ports_match_fields_and_topology_spread() {
    let server = TestServer::start();
    let _sim = Sim::start(
        &server.kubeconfig(),
        vec![
            SimNode::new("node-a").label("topology.kubernetes.io/zone", "z1"),
            SimNode::new("node-b").label("topology.kubernetes.io/zone", "z1"),
            SimNode::new("node-c").label("topology.kubernetes.io/zone", "z2"),
        ],
    );

    // matchFields on metadata.name pins a pod to a named node (as the DaemonSet controller does).
    let pin = "  affinity:\n    nodeAffinity:\n      requiredDuringSchedulingIgnoredDuringExecution:\n        nodeSelectorTerms:\n        - matchFields: [{key: metadata.name, operator: In, values: [node-b]}]\n";
    server.kubectl_stdin_ok(&["apply", "-f", "-"], &pod("pinned", "pinned", pin));
    assert!(poll(WAIT, || running_pods(&server, "app=pinned").len() == 1), "{}", wide(&server));
    assert_eq!(running_pods(&server, "app=pinned")[0].1, "node-b");

    // Host ports: three pods asking for 8080/TCP take the three nodes; a fourth waits; one on
    // 8080/UDP still fits.
    let port = |proto: &str| format!("  containers: [{{name: c, image: nginx, ports: [{{containerPort: 80, hostPort: 8080, protocol: {proto}}}]}}]\n");
    let tcp: String = (1..=4).map(|i| pod(&format!("web-{i}"), "web", "").replace("  containers: [{name: c, image: nginx}]\n", &port("TCP"))).collect();
    server.kubectl_stdin_ok(&["apply", "-f", "-"], &tcp);
    assert!(poll(WAIT, || running_pods(&server, "app=web").len() == 3), "{}", wide(&server));
    let mut nodes: Vec<String> = running_pods(&server, "app=web").into_iter().map(|(_, n)| n).collect();
    nodes.sort();
    assert_eq!(nodes, ["node-a", "node-b", "node-c"]);
    let msg = "Unschedulable 0/3 nodes are available: 3 node(s) didn't have free ports for the requested pod ports. \
               preemption: 0/3 nodes are available: 3 No preemption victims found for incoming pod..";
    assert!(poll(WAIT, || scheduled(&server, "web-4") == msg), "{}", scheduled(&server, "web-4"));
    server.kubectl_stdin_ok(&["apply", "-f", "-"], &pod("dns", "dns", "").replace("  containers: [{name: c, image: nginx}]\n", &port("UDP")));
    assert!(poll(WAIT, || running_pods(&server, "app=dns").len() == 1), "{}", wide(&server));
    // Freeing a port lets the waiting pod in.
    let freed = running_pods(&server, "app=web")[0].clone();
    server.kubectl_ok(&["delete", "pod", &freed.0, "--wait=true", "--timeout=30s"]);
    assert!(poll(WAIT, || running_pods(&server, "app=web").iter().any(|(n, node)| n == "web-4" && *node == freed.1)), "{}", wide(&server));

    // Topology spread across zones (maxSkew 1, DoNotSchedule): four pods, two per zone, so
    // node-c (alone in z2) gets two.
    let spread = "  topologySpreadConstraints:\n  - {maxSkew: 1, topologyKey: topology.kubernetes.io/zone, whenUnsatisfiable: DoNotSchedule, labelSelector: {matchLabels: {app: zoned}}}\n";
    for i in 1..=4 {
        server.kubectl_stdin_ok(&["apply", "-f", "-"], &pod(&format!("zoned-{i}"), "zoned", spread));
        assert!(poll(WAIT, || running_pods(&server, "app=zoned").len() == i), "{}", wide(&server));
    }
    let on_c = running_pods(&server, "app=zoned").iter().filter(|(_, n)| n == "node-c").count();
    assert_eq!(on_c, 2, "{}", wide(&server));
    // A node without the zone label can't take a pod with such constraints.
    let nozone = Sim::start(&server.kubeconfig(), vec![SimNode::new("node-d")]);
    let only_d = format!("{spread}  nodeSelector: {{kubernetes.io/hostname: node-d}}\n");
    server.kubectl_stdin_ok(&["apply", "-f", "-"], &pod("zoned-d", "zoned", &only_d));
    let msg = "Unschedulable 0/4 nodes are available: 1 node(s) didn't match pod topology spread constraints (missing required label), \
               3 node(s) didn't match Pod's node affinity/selector. preemption: 0/4 nodes are available: 4 Preemption is not helpful for scheduling..";
    assert!(poll(WAIT, || scheduled(&server, "zoned-d") == msg), "{}", scheduled(&server, "zoned-d"));
    drop(nozone);
}

const CLASSES: &str = r#"
apiVersion: scheduling.k8s.io/v1
kind: PriorityClass
metadata: {name: low}
value: 10
---
apiVersion: scheduling.k8s.io/v1
kind: PriorityClass
metadata: {name: high}
value: 1000
---
apiVersion: scheduling.k8s.io/v1
kind: PriorityClass
metadata: {name: high-never}
value: 1000
preemptionPolicy: Never
"#;

/// A pod requesting 800m cpu with priority class `class`.
fn cpu_pod(name: &str, class: &str, extra_meta: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}, labels: {{app: {name}}}{extra_meta}}}\nspec:\n  priorityClassName: {class}\n  containers: [{{name: c, image: nginx, resources: {{requests: {{cpu: 800m}}}}}}]\n---\n"
    )
}

#[test]
fn high_priority_pod_preempts_a_low_priority_one() {
    let server = TestServer::start();
    let small = |name: &str| SimNode { cpu: "1".into(), ..SimNode::new(name) };
    let _sim = Sim::start(&server.kubeconfig(), vec![small("node-a"), small("node-b")]);
    server.kubectl_stdin_ok(&["apply", "-f", "-"], CLASSES);

    // The cluster is full of low-priority pods; one holds a finalizer, so its eviction can be
    // watched while it terminates.
    let fin = ", finalizers: [krust.test/hold]";
    server.kubectl_stdin_ok(&["apply", "-f", "-"], &format!("{}{}", cpu_pod("low-1", "low", fin), cpu_pod("low-2", "low", fin)));
    assert!(poll(WAIT, || running_pods(&server, "app in (low-1,low-2)").len() == 2), "{}", wide(&server));
    assert_eq!(jsonpath(&server, &["get", "pod", "low-1"], "{.spec.priority} {.spec.preemptionPolicy}"), "10 PreemptLowerPriority");

    // preemptionPolicy: Never waits.
    server.kubectl_stdin_ok(&["apply", "-f", "-"], &cpu_pod("polite", "high-never", ""));
    let never = "Unschedulable 0/2 nodes are available: 2 Insufficient cpu. preemption: not eligible due to preemptionPolicy=Never..";
    assert!(poll(WAIT, || scheduled(&server, "polite") == never), "{}", scheduled(&server, "polite"));
    server.kubectl_ok(&["delete", "pod", "polite", "--wait=true"]);

    // A high-priority pod evicts one of them: DisruptionTarget, deletion, nomination.
    server.kubectl_stdin_ok(&["apply", "-f", "-"], &cpu_pod("vip", "high", ""));
    let victims = || {
        let path = r#"{range .items[?(@.metadata.deletionTimestamp)]}{.metadata.name} {.spec.nodeName}{"\n"}{end}"#;
        jsonpath(&server, &["get", "pods", "-l", "app in (low-1,low-2)"], path)
    };
    assert!(poll(WAIT, || victims().lines().count() == 1), "{}", wide(&server));
    let (victim, node) = victims().split_once(' ').map(|(a, b)| (a.to_string(), b.to_string())).unwrap();
    let cond = jsonpath(&server, &["get", "pod", &victim], r#"{.status.conditions[?(@.type=="DisruptionTarget")].status} {.status.conditions[?(@.type=="DisruptionTarget")].reason} {.status.conditions[?(@.type=="DisruptionTarget")].message}"#);
    assert_eq!(cond, "True PreemptionByScheduler default-scheduler: preempting to accommodate a higher priority pod");
    assert!(poll(WAIT, || jsonpath(&server, &["get", "pod", "vip"], "{.status.nominatedNodeName}") == node), "{}", wide(&server));
    let waiting = "Unschedulable 0/2 nodes are available: 2 Insufficient cpu. preemption: not eligible due to a terminating pod on the nominated node..";
    assert!(poll(WAIT, || scheduled(&server, "vip") == waiting), "{}", scheduled(&server, "vip"));
    let uid = jsonpath(&server, &["get", "pod", "vip"], "{.metadata.uid}");
    assert!(poll(WAIT, || pod_events(&server).contains(&format!("Preempted Preempted by pod {uid} on node {node}"))), "{}", pod_events(&server));

    // The victim goes; the preemptor runs on its node; the other low pod is untouched.
    server.kubectl_ok(&["patch", "pod", &victim, "--type=merge", "-p", r#"{"metadata":{"finalizers":null}}"#]);
    assert!(poll(WAIT, || running_pods(&server, "app=vip").first().is_some_and(|(_, n)| *n == node)), "{}", wide(&server));
    let survivor = if victim == "low-1" { "low-2" } else { "low-1" };
    assert_eq!(running_pods(&server, &format!("app={survivor}")).len(), 1, "{}", wide(&server));
    server.kubectl_ok(&["patch", "pod", survivor, "--type=merge", "-p", r#"{"metadata":{"finalizers":null}}"#]);
}
