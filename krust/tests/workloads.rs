//! Workload controllers and the scheduler inside `krust server`, seen through kubectl, with
//! simulated nodes (see `sim`) standing in for kubelets: ReplicaSets, scheduling, Deployments.

mod common;
mod sim;

use std::time::Duration;

use common::{jsonpath, poll, TestServer};
use sim::{Sim, SimNode};

const WAIT: Duration = Duration::from_secs(60);


/// Names of the Running pods with label `sel`, each with its node.
fn running_pods(server: &TestServer, sel: &str) -> Vec<(String, String)> {
    let out = jsonpath(
        server,
        &["get", "pods", "-l", sel],
        r#"{range .items[?(@.status.phase=="Running")]}{.metadata.name} {.spec.nodeName}{"\n"}{end}"#,
    );
    out.lines().filter_map(|l| l.split_once(' ').map(|(a, b)| (a.to_string(), b.to_string()))).collect()
}

fn pod_count(server: &TestServer, sel: &str) -> usize {
    jsonpath(server, &["get", "pods", "-l", sel], "{.items[*].metadata.name}").split_whitespace().count()
}

/// `reason note` of the events.k8s.io Events about objects of `kind`, one a line. (The
/// controllers' recorder writes events.k8s.io/v1 Events; krust stores those apart from
/// core/v1 Events, so `kubectl get events` does not list them yet.)
fn events(server: &TestServer, kind: &str) -> String {
    let path = format!(r#"{{range .items[?(@.regarding.kind=="{kind}")]}}{{.reason}} {{.note}}{{"\n"}}{{end}}"#);
    jsonpath(server, &["get", "events.events.k8s.io"], &path)
}

fn two_nodes(server: &TestServer) -> Sim {
    Sim::start(&server.kubeconfig(), vec![SimNode::new("node-a").label("disk", "ssd"), SimNode::new("node-b")])
}

const RS: &str = r#"
apiVersion: apps/v1
kind: ReplicaSet
metadata: {name: web}
spec:
  replicas: 3
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers: [{name: c, image: nginx}]
"#;

#[test]
fn replicaset_creates_scales_and_replaces_pods() {
    let server = TestServer::start();
    let _sim = two_nodes(&server);
    server.kubectl_stdin_ok(&["apply", "-f", "-"], RS);
    let ready = || jsonpath(&server, &["get", "rs", "web"], "{.status.readyReplicas}");
    assert!(poll(WAIT, || ready() == "3"), "readyReplicas never reached 3: {}\n{}", ready(), server.kubectl_ok(&["get", "rs,pods", "-o", "wide"]));
    let pods = running_pods(&server, "app=web");
    assert_eq!(pods.len(), 3, "{pods:?}");
    for (name, _) in &pods {
        assert!(name.starts_with("web-"), "{name}");
        let owner = jsonpath(&server, &["get", "pod", name], "{.metadata.ownerReferences[0].kind}/{.metadata.ownerReferences[0].name} {.metadata.ownerReferences[0].controller} {.metadata.ownerReferences[0].blockOwnerDeletion}");
        assert_eq!(owner, "ReplicaSet/web true true");
    }
    let status = jsonpath(&server, &["get", "rs", "web"], "{.status.replicas} {.status.fullyLabeledReplicas} {.status.availableReplicas} {.status.observedGeneration}");
    assert_eq!(status, "3 3 3 1");
    // One event per created pod (not folded into one), as `kubectl describe rs` shows them.
    let created = events(&server, "ReplicaSet");
    for (name, _) in &pods {
        assert!(created.contains(&format!("SuccessfulCreate Created pod: {name}")), "{name} missing from:\n{created}");
    }
    let described = server.kubectl_ok(&["describe", "rs", "web"]);
    assert_eq!(described.matches("Created pod: web-").count(), 3, "{described}");

    // A deleted pod is replaced.
    server.kubectl_ok(&["delete", "pod", &pods[0].0, "--wait=true", "--timeout=30s"]);
    assert!(
        poll(WAIT, || { let p = running_pods(&server, "app=web"); p.len() == 3 && !p.iter().any(|(n, _)| *n == pods[0].0) }),
        "the deleted pod was not replaced: {}",
        server.kubectl_ok(&["get", "pods", "-o", "wide"])
    );

    // Scale down, then up.
    server.kubectl_ok(&["scale", "rs", "web", "--replicas=1"]);
    assert!(poll(WAIT, || pod_count(&server, "app=web") == 1 && ready() == "1"), "scale down: {}", server.kubectl_ok(&["get", "rs,pods"]));
    server.kubectl_ok(&["scale", "rs", "web", "--replicas=4"]);
    assert!(poll(WAIT, || running_pods(&server, "app=web").len() == 4 && ready() == "4"), "scale up: {}", server.kubectl_ok(&["get", "rs,pods"]));
    assert_eq!(jsonpath(&server, &["get", "rs", "web"], "{.status.observedGeneration}"), "3");

    // An orphan matching the selector is adopted (and the surplus deleted); a pod relabelled
    // out of the selector is released and replaced.
    let victim = running_pods(&server, "app=web")[0].0.clone();
    server.kubectl_ok(&["label", "pod", &victim, "app=other", "--overwrite"]);
    assert!(
        poll(WAIT, || jsonpath(&server, &["get", "pod", &victim], "{.metadata.ownerReferences}").is_empty() && running_pods(&server, "app=web").len() == 4),
        "released pod: {} {}",
        server.kubectl_ok(&["get", "pods", "--show-labels"]),
        jsonpath(&server, &["get", "pod", &victim], "{.metadata.ownerReferences}")
    );
    server.kubectl_ok(&["label", "pod", &victim, "app=web", "--overwrite"]);
    assert!(
        poll(WAIT, || pod_count(&server, "app=web") == 4
            && !jsonpath(&server, &["get", "pods", "-l", "app=web"], "{.items[*].metadata.ownerReferences[0].name}").is_empty()
            && jsonpath(&server, &["get", "pods", "-l", "app=web"], "{range .items[*]}{.metadata.ownerReferences[0].name}{\"\\n\"}{end}").lines().all(|l| l == "web")),
        "adoption: {}",
        server.kubectl_ok(&["get", "pods", "--show-labels", "-o", "yaml"])
    );

    // A ReplicationController goes through the same code.
    server.kubectl_stdin_ok(
        &["apply", "-f", "-"],
        "apiVersion: v1\nkind: ReplicationController\nmetadata: {name: legacy}\nspec:\n  replicas: 2\n  selector: {app: legacy}\n  template:\n    metadata: {labels: {app: legacy}}\n    spec:\n      containers: [{name: c, image: nginx}]\n",
    );
    let rc = || jsonpath(&server, &["get", "rc", "legacy"], "{.status.replicas} {.status.readyReplicas} {.status.availableReplicas}");
    assert!(poll(WAIT, || rc() == "2 2 2"), "replicationcontroller status: {}", rc());
    assert_eq!(running_pods(&server, "app=legacy").len(), 2);
    let owner = jsonpath(&server, &["get", "pods", "-l", "app=legacy"], "{.items[0].metadata.ownerReferences[0].kind}/{.items[0].metadata.ownerReferences[0].apiVersion}");
    assert_eq!(owner, "ReplicationController/v1");

    let evs = events(&server, "ReplicaSet");
    assert!(evs.contains("SuccessfulCreate Created pod: web-") && evs.contains("SuccessfulDelete Deleted pod: web-"), "{evs}");
}

fn pods_yaml(prefix: &str, n: usize, extra: &str) -> String {
    (0..n)
        .map(|i| format!("apiVersion: v1\nkind: Pod\nmetadata: {{name: {prefix}-{i}, labels: {{group: {prefix}}}}}\nspec:\n  containers: [{{name: c, image: nginx}}]\n{extra}---\n"))
        .collect()
}

#[test]
fn scheduler_spreads_filters_and_reports_unschedulable() {
    let server = TestServer::start();
    let _sim = Sim::start(
        &server.kubeconfig(),
        vec![
            SimNode::new("node-a").label("disk", "ssd"),
            SimNode::new("node-b"),
            SimNode::new("node-c").label("disk", "ssd").taint("dedicated", "infra", "NoSchedule"),
        ],
    );
    // Six pods over the two untainted nodes: three each (least allocated).
    server.kubectl_stdin_ok(&["apply", "-f", "-"], &pods_yaml("spread", 6, ""));
    assert!(poll(WAIT, || running_pods(&server, "group=spread").len() == 6), "{}", server.kubectl_ok(&["get", "pods", "-o", "wide"]));
    let pods = running_pods(&server, "group=spread");
    let on = |n: &str| pods.iter().filter(|(_, node)| node == n).count();
    assert_eq!((on("node-a"), on("node-b"), on("node-c")), (3, 3, 0), "{pods:?}");
    let cond = jsonpath(&server, &["get", "pod", "spread-0"], r#"{.status.conditions[?(@.type=="PodScheduled")].status}"#);
    assert_eq!(cond, "True");
    let evs = events(&server, "Pod");
    assert!(evs.contains("Scheduled Successfully assigned default/spread-0 to node-"), "{evs}");

    // The binding subresource refuses a pod already assigned.
    let body = br#"{"apiVersion":"v1","kind":"Binding","metadata":{"name":"spread-0"},"target":{"kind":"Node","name":"node-b"}}"#;
    let (code, resp) = server.curl_admin("POST", "/api/v1/namespaces/default/pods/spread-0/binding", &["Content-Type: application/json"], Some(body));
    assert_eq!(code, 409, "{resp}");
    assert!(resp.contains("is already assigned to node"), "{resp}");
    let (code, _) = server.curl_admin("GET", "/api/v1/namespaces/default/pods/spread-0/binding", &[], None);
    assert_eq!(code, 405);

    // nodeSelector: only node-a (node-c has the label but a taint).
    server.kubectl_stdin_ok(&["apply", "-f", "-"], &pods_yaml("ssd", 2, "  nodeSelector: {disk: ssd}\n"));
    assert!(poll(WAIT, || running_pods(&server, "group=ssd").len() == 2));
    assert!(running_pods(&server, "group=ssd").iter().all(|(_, n)| n == "node-a"));
    // A toleration opens node-c; a selector on it then lands there.
    server.kubectl_stdin_ok(
        &["apply", "-f", "-"],
        &pods_yaml("infra", 1, "  nodeSelector: {kubernetes.io/hostname: node-c}\n  tolerations: [{key: dedicated, operator: Equal, value: infra, effect: NoSchedule}]\n"),
    );
    assert!(poll(WAIT, || running_pods(&server, "group=infra").len() == 1));
    assert_eq!(running_pods(&server, "group=infra")[0].1, "node-c");

    // Nothing fits: PodScheduled=False/Unschedulable with upstream's message, and an event.
    server.kubectl_stdin_ok(&["apply", "-f", "-"], &pods_yaml("nowhere", 1, "  nodeSelector: {disk: hdd}\n"));
    let message = || jsonpath(&server, &["get", "pod", "nowhere-0"], r#"{.status.conditions[?(@.type=="PodScheduled")].reason} {.status.conditions[?(@.type=="PodScheduled")].message}"#);
    let expected = "Unschedulable 0/3 nodes are available: 1 node(s) had untolerated taint {dedicated: infra}, 2 node(s) didn't match Pod's node affinity/selector. \
                    preemption: 0/3 nodes are available: 3 Preemption is not helpful for scheduling..";
    assert!(poll(WAIT, || message() == expected), "{}", message());
    let evs = events(&server, "Pod");
    assert!(evs.contains("FailedScheduling 0/3 nodes are available"), "{evs}");
    // Too big for any node: resources.
    server.kubectl_stdin_ok(
        &["apply", "-f", "-"],
        "apiVersion: v1\nkind: Pod\nmetadata: {name: huge}\nspec:\n  containers: [{name: c, image: nginx, resources: {requests: {cpu: '64'}}}]\n",
    );
    let huge = || jsonpath(&server, &["get", "pod", "huge"], r#"{.status.conditions[?(@.type=="PodScheduled")].message}"#);
    assert!(poll(WAIT, || huge() == "0/3 nodes are available: 1 node(s) had untolerated taint {dedicated: infra}, 2 Insufficient cpu. \
        preemption: 0/3 nodes are available: 1 Preemption is not helpful for scheduling, 2 No preemption victims found for incoming pod.."), "{}", huge());

    // A new node that fits is used: the pending pod is retried when nodes change.
    let _more = Sim::start(&server.kubeconfig(), vec![SimNode::new("node-d").label("disk", "hdd")]);
    assert!(poll(WAIT, || running_pods(&server, "group=nowhere").len() == 1), "{}", message());
    assert_eq!(running_pods(&server, "group=nowhere")[0].1, "node-d");
}

const DEPLOY: &str = r#"
apiVersion: apps/v1
kind: Deployment
metadata: {name: app}
spec:
  replicas: 3
  revisionHistoryLimit: 1
  selector: {matchLabels: {app: app}}
  strategy: {type: RollingUpdate, rollingUpdate: {maxSurge: 1, maxUnavailable: 1}}
  template:
    metadata: {labels: {app: app}}
    spec:
      containers: [{name: c, image: nginx:1.0}]
"#;

/// ReplicaSets of the deployment as `name replicas`, one a line.
fn replicasets(server: &TestServer) -> String {
    jsonpath(server, &["get", "rs", "-l", "app=app"], r#"{range .items[*]}{.metadata.name} {.spec.replicas} {.metadata.annotations.deployment\.kubernetes\.io/revision}{"\n"}{end}"#)
}

#[test]
fn deployment_rolls_out_updates_and_rolls_back() {
    let server = TestServer::start();
    let _sim = two_nodes(&server);
    server.kubectl_stdin_ok(&["apply", "-f", "-"], DEPLOY);
    server.kubectl_ok(&["rollout", "status", "deployment/app", "--timeout=60s"]);
    let status = jsonpath(&server, &["get", "deploy", "app"], "{.status.replicas} {.status.updatedReplicas} {.status.readyReplicas} {.status.availableReplicas} {.status.observedGeneration}");
    assert_eq!(status, "3 3 3 3 1");
    let conds = jsonpath(&server, &["get", "deploy", "app"], r#"{range .status.conditions[*]}{.type}={.status}/{.reason}{"\n"}{end}"#);
    assert!(conds.contains("Available=True/MinimumReplicasAvailable") && conds.contains("Progressing=True/NewReplicaSetAvailable"), "{conds}");
    let first = replicasets(&server);
    let hash = jsonpath(&server, &["get", "rs", "-l", "app=app"], "{.items[0].metadata.labels.pod-template-hash}");
    assert_eq!(first.trim(), format!("app-{hash} 3 1"));
    assert_eq!(jsonpath(&server, &["get", "deploy", "app"], r#"{.metadata.annotations.deployment\.kubernetes\.io/revision}"#), "1");
    assert_eq!(pod_count(&server, &format!("pod-template-hash={hash}")), 3);

    // A new image rolls over to a new ReplicaSet, never with more than maxUnavailable (1)
    // of the 3 missing nor more than maxSurge (1) extra.
    let out = std::env::temp_dir().join(format!("krust-rollout-{}.txt", server.port()));
    let mut watch = server.kubectl_background(&["get", "deploy", "app", "-w", "-o", "jsonpath={.status.availableReplicas} {.status.replicas}{\"\\n\"}"], &out);
    server.kubectl_ok(&["set", "image", "deployment/app", "c=nginx:2.0"]);
    server.kubectl_ok(&["rollout", "status", "deployment/app", "--timeout=60s"]);
    let seen = watch.wait_for("the final status", WAIT, |o| o.lines().any(|l| l.trim() == "3 3"));
    drop(watch);
    for line in seen.lines().filter(|l| !l.trim().is_empty()) {
        let mut it = line.split_whitespace().map(|n| n.parse::<i32>().unwrap_or(0));
        let (avail, total) = (it.next().unwrap_or(0), it.next().unwrap_or(0));
        assert!(avail >= 2 && total <= 4, "availability dropped below 3-1 or surged above 3+1: {seen}");
    }
    assert_eq!(jsonpath(&server, &["get", "deploy", "app"], r#"{.metadata.annotations.deployment\.kubernetes\.io/revision}"#), "2");
    let images = jsonpath(&server, &["get", "pods", "-l", "app=app"], "{.items[*].spec.containers[0].image}");
    assert_eq!(images, "nginx:2.0 nginx:2.0 nginx:2.0", "{}", server.kubectl_ok(&["get", "pods", "-o", "wide"]));
    let sets = replicasets(&server);
    assert_eq!(sets.lines().count(), 2, "{sets}");
    assert!(sets.contains(&format!("app-{hash} 0 1")), "{sets}");

    // Undo returns to the first ReplicaSet (revision 3 now), and the history limit (1) keeps
    // only one old ReplicaSet.
    server.kubectl_ok(&["rollout", "undo", "deployment/app"]);
    server.kubectl_ok(&["rollout", "status", "deployment/app", "--timeout=60s"]);
    let images = jsonpath(&server, &["get", "pods", "-l", "app=app"], "{.items[*].spec.containers[0].image}");
    assert!(poll(WAIT, || jsonpath(&server, &["get", "pods", "-l", "app=app"], "{.items[*].spec.containers[0].image}") == "nginx:1.0 nginx:1.0 nginx:1.0"), "{images}");
    assert!(replicasets(&server).contains(&format!("app-{hash} 3 3")), "{}", replicasets(&server));
    let history = server.kubectl_ok(&["rollout", "history", "deployment/app"]);
    assert!(history.contains('2') && history.contains('3'), "{history}");

    // Scaling, Recreate, and the third template exceeding revisionHistoryLimit.
    server.kubectl_ok(&["scale", "deployment/app", "--replicas=5"]);
    server.kubectl_ok(&["rollout", "status", "deployment/app", "--timeout=60s"]);
    assert_eq!(running_pods(&server, "app=app").len(), 5);
    server.kubectl_ok(&["patch", "deployment/app", "-p", r#"{"spec":{"strategy":{"type":"Recreate","rollingUpdate":null}}}"#]);
    server.kubectl_ok(&["set", "image", "deployment/app", "c=nginx:3.0"]);
    server.kubectl_ok(&["rollout", "status", "deployment/app", "--timeout=60s"]);
    assert!(poll(WAIT, || replicasets(&server).lines().count() == 2), "revisionHistoryLimit: {}", replicasets(&server));
    let images = jsonpath(&server, &["get", "pods", "-l", "app=app"], "{.items[*].spec.containers[0].image}");
    assert!(poll(WAIT, || jsonpath(&server, &["get", "pods", "-l", "app=app"], "{.items[*].spec.containers[0].image}").split_whitespace().all(|i| i == "nginx:3.0")), "{images}");

    // Paused: a template change makes no new ReplicaSet until resumed.
    server.kubectl_ok(&["rollout", "pause", "deployment/app"]);
    server.kubectl_ok(&["set", "image", "deployment/app", "c=nginx:4.0"]);
    std::thread::sleep(Duration::from_secs(2));
    let templates = || jsonpath(&server, &["get", "rs", "-l", "app=app"], "{.items[*].spec.template.spec.containers[0].image}");
    assert!(!templates().contains("nginx:4.0"), "a paused deployment rolled out: {}", templates());
    assert_eq!(jsonpath(&server, &["get", "deploy", "app"], r#"{.status.conditions[?(@.type=="Progressing")].reason}"#), "DeploymentPaused");
    let before = replicasets(&server);
    server.kubectl_ok(&["rollout", "resume", "deployment/app"]);
    server.kubectl_ok(&["rollout", "status", "deployment/app", "--timeout=60s"]);
    assert_ne!(replicasets(&server), before);
    assert!(templates().contains("nginx:4.0"), "{}", templates());
    let evs = events(&server, "Deployment");
    assert!(evs.contains("ScalingReplicaSet Scaled up replica set app-"), "{evs}");

    // A rollout that cannot progress (no node matches) exceeds its progress deadline, and
    // `kubectl rollout status` says so.
    server.kubectl_stdin_ok(
        &["apply", "-f", "-"],
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: stuck}\nspec:\n  replicas: 1\n  progressDeadlineSeconds: 3\n  selector: {matchLabels: {app: stuck}}\n  template:\n    metadata: {labels: {app: stuck}}\n    spec:\n      nodeSelector: {disk: none}\n      containers: [{name: c, image: nginx}]\n",
    );
    let out = server.kubectl(&["rollout", "status", "deployment/stuck", "--timeout=60s"]);
    assert!(!out.status.success());
    assert!(common::text(&out.stderr).contains("deployment \"stuck\" exceeded its progress deadline"), "{}", common::text(&out.stderr));
    let cond = jsonpath(&server, &["get", "deploy", "stuck"], r#"{.status.conditions[?(@.type=="Progressing")].status}/{.status.conditions[?(@.type=="Progressing")].reason}"#);
    assert_eq!(cond, "False/ProgressDeadlineExceeded");
}

/// A node that stops reporting turns Ready=Unknown and is tainted unreachable; its pods are
/// evicted once their toleration runs out and the Deployment recreates them on the other node.
#[test]
fn dead_node_is_tainted_and_its_pods_move() {
    let server = TestServer::start_with(&["--node-monitor-grace-period", "3s"]);
    let sim = two_nodes(&server);
    // A short unreachable toleration instead of the 300 s default that admission adds.
    let deploy = r#"
apiVersion: apps/v1
kind: Deployment
metadata: {name: mover}
spec:
  replicas: 2
  selector: {matchLabels: {app: mover}}
  template:
    metadata: {labels: {app: mover}}
    spec:
      nodeSelector: {disk: ssd}
      tolerations:
      - {key: node.kubernetes.io/unreachable, operator: Exists, effect: NoExecute, tolerationSeconds: 2}
      containers: [{name: c, image: nginx}]
"#;
    server.kubectl_stdin_ok(&["apply", "-f", "-"], deploy);
    assert!(poll(WAIT, || running_pods(&server, "app=mover").iter().filter(|(_, n)| n == "node-a").count() == 2), "timed out: 2 pods Running on node-a");
    // Let node-b take the pods once node-a is gone.
    server.kubectl_ok(&["label", "node", "node-b", "disk=ssd"]);
    sim.kill_node("node-a");
    assert!(poll(WAIT, || jsonpath(&server, &["get", "node", "node-a"], r#"{.status.conditions[?(@.type=="Ready")].status}"#) == "Unknown"), "timed out: node-a Ready=Unknown");
    assert!(
        poll(WAIT, || jsonpath(&server, &["get", "node", "node-a"], "{.spec.taints[*].key}").contains("node.kubernetes.io/unreachable")),
        "node-a never got the unreachable taint"
    );
    assert!(poll(WAIT, || running_pods(&server, "app=mover").iter().filter(|(_, n)| n == "node-b").count() == 2), "timed out: 2 pods Running on node-b");
    // The evicted pods were marked for deletion (their kubelet is gone, so they stay Terminating).
    let terminating = jsonpath(&server, &["get", "pods", "-l", "app=mover"], "{.items[?(@.metadata.deletionTimestamp)].spec.nodeName}");
    assert_eq!(terminating.split_whitespace().collect::<Vec<_>>(), ["node-a", "node-a"]);
}

/// Pod GC: a pod bound to a node that does not exist is force-deleted after the quarantine;
/// a pod on a live node is left alone.
#[test]
fn pods_of_missing_nodes_are_collected() {
    let server = TestServer::start();
    let _sim = two_nodes(&server);
    let bound = |name: &str, node: &str| format!("apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}}}\nspec:\n  nodeName: {node}\n  containers: [{{name: c, image: nginx}}]\n");
    server.kubectl_stdin_ok(&["apply", "-f", "-"], &bound("ghost-pod", "ghost-node"));
    server.kubectl_stdin_ok(&["apply", "-f", "-"], &bound("live-pod", "node-a"));
    assert!(
        poll(WAIT, || !server.kubectl(&["get", "pod", "ghost-pod"]).status.success()),
        "the pod of a missing node was not collected: {}",
        server.kubectl_ok(&["get", "pods", "-o", "wide"])
    );
    assert_eq!(jsonpath(&server, &["get", "pod", "live-pod"], "{.spec.nodeName}"), "node-a");
    assert!(server.logs().contains("pod GC: deleted"), "no pod GC log line");
}
