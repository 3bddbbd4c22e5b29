//! The StatefulSet and DaemonSet controllers inside `krust server`, seen through kubectl,
//! with simulated nodes (see `sim`) standing in for kubelets.

mod common;
mod sim;

use std::collections::BTreeMap;
use std::time::Duration;

use common::{jsonpath, poll, TestServer};
use sim::{Sim, SimNode};

const WAIT: Duration = Duration::from_secs(60);


/// `reason note` of the events.k8s.io Events about objects of `kind`, one a line, oldest first.
fn events(server: &TestServer, kind: &str) -> String {
    let path = format!(r#"{{range .items[?(@.regarding.kind=="{kind}")]}}{{.reason}} {{.note}}{{"\n"}}{{end}}"#);
    jsonpath(server, &["get", "events.events.k8s.io", "--sort-by=.eventTime"], &path)
}

/// Pods with label `sel`: name → (image of the first container, phase, node, deleting).
fn pods(server: &TestServer, sel: &str) -> BTreeMap<String, (String, String, String, bool)> {
    let out = jsonpath(
        server,
        &["get", "pods", "-l", sel],
        r#"{range .items[*]}{.metadata.name} {.spec.containers[0].image} {.status.phase} {.spec.nodeName}/ {.metadata.deletionTimestamp}{"\n"}{end}"#,
    );
    out.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(' ').collect();
            (f.len() >= 4).then(|| (f[0].to_string(), (f[1].to_string(), f[2].to_string(), f[3].trim_end_matches('/').to_string(), f.get(4).is_some_and(|d| !d.is_empty()))))
        })
        .collect()
}

fn names(p: &BTreeMap<String, (String, String, String, bool)>) -> Vec<String> {
    p.keys().cloned().collect()
}

const STS: &str = r#"
apiVersion: v1
kind: Service
metadata: {name: nginx}
spec:
  clusterIP: None
  selector: {app: web}
  ports: [{port: 80}]
---
apiVersion: apps/v1
kind: StatefulSet
metadata: {name: web}
spec:
  serviceName: nginx
  replicas: 3
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      nodeSelector: {pool: web}
      containers: [{name: c, image: "nginx:1"}]
  volumeClaimTemplates:
  - metadata: {name: www}
    spec:
      accessModes: [ReadWriteOnce]
      resources: {requests: {storage: 1Gi}}
"#;

#[test]
fn statefulset_orders_pods_keeps_claims_and_rolls_updates() {
    let server = TestServer::start();
    let _sim = Sim::start(&server.kubeconfig(), vec![SimNode::new("node-a"), SimNode::new("node-b")]);
    server.kubectl_stdin_ok(&["apply", "-f", "-"], STS);
    let status = || jsonpath(&server, &["get", "sts", "web"], "{.status.observedGeneration} {.status.replicas} {.status.readyReplicas}");

    // No node has the pool label: web-0 stays Pending, and OrderedReady creates nothing else.
    assert!(poll(WAIT, || status().starts_with("1 1")), "status: {}", status());
    let p = pods(&server, "app=web");
    assert_eq!(names(&p), ["web-0"], "only web-0 before it is Ready: {p:?}");
    assert_eq!(p["web-0"].1, "Pending");
    assert_eq!(jsonpath(&server, &["get", "pvc"], "{.items[*].metadata.name}"), "www-web-0");

    // Once a node fits, web-0 runs, then web-1, then web-2, each after the previous is Ready.
    server.kubectl_ok(&["label", "node", "node-a", "pool=web"]);
    assert!(poll(WAIT, || status() == "1 3 3"), "status: {}\n{}", status(), server.kubectl_ok(&["get", "pods", "-o", "wide"]));
    let created = jsonpath(&server, &["get", "events.events.k8s.io", "--sort-by=.eventTime"], r#"{range .items[?(@.reason=="SuccessfulCreate")]}{.note}{"\n"}{end}"#);
    let pod_creates: Vec<&str> = created.lines().filter(|l| l.starts_with("create Pod ")).collect();
    // (kube-rs's recorder folds events with the same reason and action about the same object
    // version into one series keeping the first note, so later creations may not show.)
    assert_eq!(pod_creates.first(), Some(&"create Pod web-0 in StatefulSet web successful"), "{created}");
    let ordinals: Vec<usize> = pod_creates.iter().map(|l| (0..3).find(|i| l.contains(&format!("Pod web-{i} "))).unwrap()).collect();
    assert!(ordinals.windows(2).all(|w| w[0] < w[1]), "pods created in order: {created}");
    let ready_at = |pod: &str| jsonpath(&server, &["get", "pod", pod], r#"{.status.conditions[?(@.type=="Ready")].lastTransitionTime}"#);
    let created_at = |pod: &str| jsonpath(&server, &["get", "pod", pod], "{.metadata.creationTimestamp}");
    assert!(ready_at("web-0") <= created_at("web-1") && ready_at("web-1") <= created_at("web-2"), "creation follows readiness");
    let identity = jsonpath(
        &server,
        &["get", "pod", "web-1"],
        r#"{.metadata.labels.statefulset\.kubernetes\.io/pod-name} {.metadata.labels.apps\.kubernetes\.io/pod-index} {.spec.hostname} {.spec.subdomain} {.spec.volumes[?(@.name=="www")].persistentVolumeClaim.claimName} {.metadata.ownerReferences[0].kind}"#,
    );
    assert_eq!(identity, "web-1 1 web-1 nginx www-web-1 StatefulSet");
    assert_eq!(jsonpath(&server, &["get", "pvc", "-l", "app=web"], "{.items[*].metadata.name}"), "www-web-0 www-web-1 www-web-2");
    let rev = jsonpath(&server, &["get", "sts", "web"], "{.status.currentRevision} {.status.updateRevision}");
    let (current, update) = rev.split_once(' ').unwrap();
    assert_eq!(current, update);
    assert_eq!(jsonpath(&server, &["get", "pod", "web-2"], "{.metadata.labels.controller-revision-hash}"), update);
    assert_eq!(jsonpath(&server, &["get", "controllerrevision", update], "{.revision} {.metadata.ownerReferences[0].name}"), "1 web");
    let out = server.kubectl_ok(&["rollout", "status", "statefulset/web", "--timeout=60s"]);
    assert!(out.contains("partitioned roll out complete: 3 new pods have been updated"), "{out}");

    // A deleted pod comes back under the same name.
    let uid = jsonpath(&server, &["get", "pod", "web-1"], "{.metadata.uid}");
    server.kubectl_ok(&["delete", "pod", "web-1", "--wait=true", "--timeout=30s"]);
    assert!(
        poll(WAIT, || { let u = jsonpath(&server, &["get", "pod", "web-1"], "{.metadata.uid} {.status.phase}"); !u.starts_with(&uid) && u.ends_with("Running") }),
        "web-1 was not recreated"
    );

    // Scale down through the scale subresource: highest ordinal first, one at a time; claims stay.
    server.kubectl_ok(&["scale", "statefulset", "web", "--replicas=1"]);
    let mut seen = Vec::new();
    assert!(
        poll(WAIT, || {
            let n = names(&pods(&server, "app=web"));
            if seen.last() != Some(&n) {
                seen.push(n.clone());
            }
            n == ["web-0"] && status() == "2 1 1"
        }),
        "scale down: {seen:?} {}",
        status()
    );
    for state in &seen {
        let expected: Vec<String> = (0..state.len()).map(|i| format!("web-{i}")).collect();
        assert_eq!(state, &expected, "pods go highest ordinal first: {seen:?}");
    }
    assert_eq!(jsonpath(&server, &["get", "pvc", "-l", "app=web"], "{.items[*].metadata.name}"), "www-web-0 www-web-1 www-web-2");
    server.kubectl_ok(&["scale", "statefulset", "web", "--replicas=3"]);
    assert!(poll(WAIT, || status() == "3 3 3"), "scale up: {}", status());

    // A rolling update replaces pods from the highest ordinal down.
    server.kubectl_ok(&["set", "image", "statefulset/web", "c=nginx:2"]);
    let mut seen = Vec::new();
    let updated_suffix = |p: &BTreeMap<String, (String, String, String, bool)>, image: &str| {
        let images: Vec<bool> = (0..3).map(|i| p.get(&format!("web-{i}")).is_some_and(|x| x.0 == image)).collect();
        images.windows(2).all(|w| !w[0] || w[1])
    };
    assert!(
        poll(WAIT, || {
            let p = pods(&server, "app=web");
            seen.push(p.clone());
            p.len() == 3 && p.values().all(|x| x.0 == "nginx:2" && x.1 == "Running")
        }),
        "rolling update: {:?}",
        seen.last()
    );
    assert!(seen.iter().all(|p| updated_suffix(p, "nginx:2")), "updated pods are always the highest ordinals: {seen:?}");
    let out = server.kubectl_ok(&["rollout", "status", "statefulset/web", "--timeout=60s"]);
    assert!(out.contains("partitioned roll out complete: 3 new pods have been updated"), "{out}");
    let rev = || jsonpath(&server, &["get", "sts", "web"], "{.status.currentRevision} {.status.updateRevision} {.status.updatedReplicas} {.status.currentReplicas}");
    assert!(poll(WAIT, || { let r = rev(); let f: Vec<&str> = r.split(' ').collect(); f[0] == f[1] && f[0] != update && f[2] == "3" && f[3] == "3" }), "revisions: {}", rev());
    let history = server.kubectl_ok(&["rollout", "history", "statefulset/web"]);
    let revisions: Vec<&str> = history.lines().skip(2).filter_map(|l| l.split_whitespace().next()).collect();
    assert_eq!(revisions, ["1", "2"], "{history}");
    let deleted = events(&server, "StatefulSet");
    assert!(deleted.contains("SuccessfulDelete delete Pod web-2 in StatefulSet web successful"), "{deleted}");

    // rollout undo goes back to the first template, again highest ordinal first.
    let out = server.kubectl_ok(&["rollout", "undo", "statefulset/web"]);
    assert!(out.contains("rolled back"), "{out}");
    let mut seen = Vec::new();
    assert!(
        poll(WAIT, || {
            let p = pods(&server, "app=web");
            seen.push(p.clone());
            p.len() == 3 && p.values().all(|x| x.0 == "nginx:1" && x.1 == "Running")
        }),
        "undo: {:?}",
        seen.last()
    );
    assert!(seen.iter().all(|p| updated_suffix(p, "nginx:1")), "undo goes highest ordinal first: {seen:?}");
    server.kubectl_ok(&["rollout", "status", "statefulset/web", "--timeout=60s"]);
    let history = server.kubectl_ok(&["rollout", "history", "statefulset/web"]);
    let revisions: Vec<&str> = history.lines().skip(2).filter_map(|l| l.split_whitespace().next()).collect();
    assert_eq!(revisions, ["2", "3"], "the first revision became the third: {history}");
    assert!(poll(WAIT, || rev().starts_with(&format!("{update} {update} 3 3"))), "back at the first revision: {} (want {update})", rev());

    // Orphaned pods are adopted by a new set of that name, not replaced.
    let uids = || jsonpath(&server, &["get", "pods", "-l", "app=web"], "{.items[*].metadata.uid}");
    let before = uids();
    server.kubectl_ok(&["delete", "statefulset", "web", "--cascade=orphan", "--wait=true", "--timeout=30s"]);
    let owners = || jsonpath(&server, &["get", "pods", "-l", "app=web"], "{.items[*].metadata.ownerReferences[*].name}");
    assert!(poll(WAIT, || owners().is_empty()), "pods still owned: {}", owners());
    server.kubectl_stdin_ok(&["apply", "-f", "-"], STS);
    assert!(poll(WAIT, || owners() == "web web web" && status() == "1 3 3"), "adoption: {} {}", owners(), status());
    assert_eq!(uids(), before, "adopted pods are kept");
    assert_eq!(jsonpath(&server, &["get", "sts", "web"], "{.status.updatedReplicas}"), "3", "the adopted revision is the update revision");

    // Deleting the set removes its pods but keeps the claims (whenDeleted: Retain).
    server.kubectl_ok(&["delete", "statefulset", "web", "--wait=true", "--timeout=30s"]);
    assert!(poll(WAIT, || pods(&server, "app=web").is_empty()), "pods left: {:?}", pods(&server, "app=web"));
    assert_eq!(jsonpath(&server, &["get", "pvc", "-l", "app=web"], "{.items[*].metadata.name}"), "www-web-0 www-web-1 www-web-2");
}

const PARALLEL: &str = r#"
apiVersion: apps/v1
kind: StatefulSet
metadata: {name: db}
spec:
  serviceName: db
  replicas: 3
  podManagementPolicy: Parallel
  updateStrategy: {type: OnDelete}
  persistentVolumeClaimRetentionPolicy: {whenScaled: Delete, whenDeleted: Delete}
  selector: {matchLabels: {app: db}}
  template:
    metadata: {labels: {app: db}}
    spec:
      nodeSelector: {pool: db}
      containers: [{name: c, image: "pg:1"}]
  volumeClaimTemplates:
  - metadata: {name: data}
    spec:
      accessModes: [ReadWriteOnce]
      resources: {requests: {storage: 1Gi}}
"#;

#[test]
fn statefulset_parallel_ondelete_and_claim_retention() {
    let server = TestServer::start();
    let _sim = Sim::start(&server.kubeconfig(), vec![SimNode::new("node-a")]);
    server.kubectl_stdin_ok(&["apply", "-f", "-"], PARALLEL);
    // Parallel: every pod is created without waiting, though none can be scheduled.
    assert!(poll(WAIT, || names(&pods(&server, "app=db")) == ["db-0", "db-1", "db-2"]), "parallel: {:?}", pods(&server, "app=db"));
    assert!(pods(&server, "app=db").values().all(|p| p.1 == "Pending"));
    server.kubectl_ok(&["label", "node", "node-a", "pool=db"]);
    let status = || jsonpath(&server, &["get", "sts", "db"], "{.status.replicas} {.status.readyReplicas} {.status.availableReplicas}");
    assert!(poll(WAIT, || status() == "3 3 3"), "status: {}", status());
    let owner = jsonpath(&server, &["get", "pvc", "data-db-1"], "{.metadata.ownerReferences[*].kind}");
    assert_eq!(owner, "StatefulSet", "whenDeleted: Delete makes the set own the claims");

    // OnDelete: a template change replaces nothing until a pod is deleted.
    server.kubectl_ok(&["set", "image", "statefulset/db", "c=pg:2"]);
    let gen = || jsonpath(&server, &["get", "sts", "db"], "{.status.observedGeneration} {.status.updatedReplicas} {.status.currentReplicas}");
    assert!(poll(WAIT, || gen() == "2 0 3"), "status after the template change: {}", gen());
    assert!(pods(&server, "app=db").values().all(|p| p.0 == "pg:1"));
    server.kubectl_ok(&["delete", "pod", "db-1", "--wait=true", "--timeout=30s"]);
    assert!(poll(WAIT, || pods(&server, "app=db").get("db-1").is_some_and(|p| p.0 == "pg:2" && p.1 == "Running")), "db-1 not updated: {:?}", pods(&server, "app=db"));
    assert_eq!(pods(&server, "app=db")["db-2"].0, "pg:1");
    assert!(poll(WAIT, || gen() == "2 1 2"), "status: {}", gen());

    // A failed pod is deleted and recreated under its name (at the update revision, OnDelete).
    let uid = jsonpath(&server, &["get", "pod", "db-2"], "{.metadata.uid}");
    server.kubectl_ok(&["annotate", "pod", "db-2", &format!("{}=1", sim::EXIT_CODE)]);
    assert!(
        poll(WAIT, || { let u = jsonpath(&server, &["get", "pod", "db-2"], "{.metadata.uid} {.status.phase} {.spec.containers[0].image}"); !u.starts_with(&uid) && u.ends_with("Running pg:2") }),
        "db-2 was not recreated: {}",
        jsonpath(&server, &["get", "pod", "db-2"], "{.metadata.uid} {.status.phase}")
    );
    let evs = events(&server, "StatefulSet");
    assert!(evs.contains("RecreatingFailedPod StatefulSet default/db is recreating failed Pod db-2"), "{evs}");

    // whenScaled: Delete — a scaled-down pod's claim goes with it.
    server.kubectl_ok(&["scale", "statefulset", "db", "--replicas=2"]);
    let claims = || jsonpath(&server, &["get", "pvc", "-l", "app=db"], "{.items[*].metadata.name}");
    assert!(poll(WAIT, || claims() == "data-db-0 data-db-1"), "claims after scale down: {}", claims());
    assert_eq!(names(&pods(&server, "app=db")), ["db-0", "db-1"]);
    // whenDeleted: Delete — the rest go with the set.
    server.kubectl_ok(&["delete", "statefulset", "db"]);
    assert!(poll(WAIT, || claims().is_empty() && pods(&server, "app=db").is_empty()), "left: {} {:?}", claims(), pods(&server, "app=db"));
}

const DS: &str = r#"
apiVersion: apps/v1
kind: DaemonSet
metadata: {name: agent}
spec:
  selector: {matchLabels: {app: agent}}
  template:
    metadata: {labels: {app: agent}}
    spec:
      containers: [{name: c, image: "agent:1"}]
"#;

const EDGE: &str = r#"
apiVersion: apps/v1
kind: DaemonSet
metadata: {name: edge}
spec:
  selector: {matchLabels: {app: edge}}
  template:
    metadata: {labels: {app: edge}}
    spec:
      nodeSelector: {role: edge}
      tolerations: [{key: dedicated, operator: Exists}]
      containers: [{name: c, image: "edge:1"}]
"#;

/// Nodes of the running, not deleting pods with label `sel`, with their images.
fn daemon_pods(server: &TestServer, sel: &str) -> BTreeMap<String, Vec<String>> {
    let mut by_node: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (_, (image, phase, node, deleting)) in pods(server, sel) {
        if phase == "Running" && !deleting {
            by_node.entry(node).or_default().push(image);
        }
    }
    by_node
}

fn revisions(history: &str) -> Vec<String> {
    history.lines().skip(2).filter_map(|l| l.split_whitespace().next().map(String::from)).collect()
}

#[test]
fn daemonset_covers_eligible_nodes_and_rolls_updates() {
    let server = TestServer::start();
    let _sim = Sim::start(
        &server.kubeconfig(),
        vec![SimNode::new("node-a"), SimNode::new("node-b"), SimNode::new("node-t").taint("dedicated", "db", "NoSchedule")],
    );
    server.kubectl_stdin_ok(&["apply", "-f", "-"], DS);
    let status = || {
        jsonpath(
            &server,
            &["get", "ds", "agent"],
            "{.status.observedGeneration} {.status.desiredNumberScheduled} {.status.currentNumberScheduled} {.status.numberReady} {.status.updatedNumberScheduled} {.status.numberAvailable} {.status.numberMisscheduled}",
        )
    };
    // Both untainted nodes get one pod; the tainted node none.
    assert!(poll(WAIT, || status() == "1 2 2 2 2 2 0"), "status: {}\n{}", status(), server.kubectl_ok(&["get", "pods", "-o", "wide"]));
    let expected: BTreeMap<String, Vec<String>> = [("node-a".to_string(), vec!["agent:1".to_string()]), ("node-b".to_string(), vec!["agent:1".to_string()])].into();
    assert_eq!(daemon_pods(&server, "app=agent"), expected);
    let pod = jsonpath(&server, &["get", "pods", "-l", "app=agent"], "{.items[0].metadata.name}");
    let shape = jsonpath(
        &server,
        &["get", "pod", &pod],
        r#"{.metadata.labels.pod-template-generation} {.spec.affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms[0].matchFields[0].key} {.metadata.ownerReferences[0].kind}/{.metadata.ownerReferences[0].name}"#,
    );
    assert_eq!(shape, "1 metadata.name DaemonSet/agent");
    let hash = jsonpath(&server, &["get", "pod", &pod], "{.metadata.labels.controller-revision-hash}");
    assert_eq!(jsonpath(&server, &["get", "controllerrevision", &format!("agent-{hash}")], "{.revision}"), "1");
    let tolerations = jsonpath(&server, &["get", "pod", &pod], r#"{range .spec.tolerations[*]}{.key}:{.effect} {end}"#);
    for t in [
        "node.kubernetes.io/not-ready:NoExecute",
        "node.kubernetes.io/unreachable:NoExecute",
        "node.kubernetes.io/disk-pressure:NoSchedule",
        "node.kubernetes.io/memory-pressure:NoSchedule",
        "node.kubernetes.io/pid-pressure:NoSchedule",
        "node.kubernetes.io/unschedulable:NoSchedule",
    ] {
        assert!(tolerations.contains(t), "{t} missing: {tolerations}");
    }

    // A node added later gets a pod.
    let _sim_c = Sim::start(&server.kubeconfig(), vec![SimNode::new("node-c")]);
    assert!(poll(WAIT, || status() == "1 3 3 3 3 3 0"), "status with node-c: {}", status());
    assert!(daemon_pods(&server, "app=agent").contains_key("node-c"));

    // A template update rolls over every node, one node without an available pod at a time.
    server.kubectl_ok(&["set", "image", "daemonset/agent", "c=agent:2"]);
    let mut worst = 0;
    assert!(
        poll(WAIT, || {
            let p = daemon_pods(&server, "app=agent");
            worst = worst.max(3 - p.len());
            p.len() == 3 && p.values().all(|i| i == &["agent:2"]) && status() == "2 3 3 3 3 3 0"
        }),
        "rolling update: {:?} {}",
        daemon_pods(&server, "app=agent"),
        status()
    );
    assert!(worst <= 1, "more than maxUnavailable=1 nodes lacked a pod during the update");
    assert_eq!(jsonpath(&server, &["get", "pods", "-l", "app=agent"], "{.items[*].metadata.labels.pod-template-generation}"), "2 2 2");
    let out = server.kubectl_ok(&["rollout", "status", "daemonset/agent", "--timeout=60s"]);
    assert!(out.contains("daemon set \"agent\" successfully rolled out"), "{out}");
    assert_eq!(revisions(&server.kubectl_ok(&["rollout", "history", "daemonset/agent"])), ["1", "2"]);

    // rollout undo brings the first template back, as revision 3.
    let out = server.kubectl_ok(&["rollout", "undo", "daemonset/agent"]);
    assert!(out.contains("rolled back"), "{out}");
    assert!(
        poll(WAIT, || { let p = daemon_pods(&server, "app=agent"); p.len() == 3 && p.values().all(|i| i == &["agent:1"]) }),
        "undo: {:?}",
        daemon_pods(&server, "app=agent")
    );
    server.kubectl_ok(&["rollout", "status", "daemonset/agent", "--timeout=60s"]);
    assert_eq!(revisions(&server.kubectl_ok(&["rollout", "history", "daemonset/agent"])), ["2", "3"]);
    assert!(poll(WAIT, || jsonpath(&server, &["get", "pods", "-l", "app=agent"], "{.items[*].metadata.labels.controller-revision-hash}") == format!("{hash} {hash} {hash}")));

    // A failed daemon pod is replaced.
    let victim = jsonpath(&server, &["get", "pods", "-l", "app=agent", "--field-selector", "spec.nodeName=node-b"], "{.items[0].metadata.name}");
    server.kubectl_ok(&["annotate", "pod", &victim, &format!("{}=1", sim::EXIT_CODE)]);
    assert!(
        poll(WAIT, || {
            let names = jsonpath(&server, &["get", "pods", "-l", "app=agent", "--field-selector", "spec.nodeName=node-b"], "{.items[*].metadata.name}");
            !names.contains(&victim) && daemon_pods(&server, "app=agent").get("node-b").is_some_and(|p| p.len() == 1)
        }),
        "the failed pod was not replaced: {:?}",
        pods(&server, "app=agent")
    );
    let evs = events(&server, "DaemonSet");
    assert!(evs.contains(&format!("FailedDaemonPod Found failed daemon pod default/{victim} on node node-b, will try to kill it")), "{evs}");

    // A removed node loses its pod.
    server.kubectl_ok(&["delete", "node", "node-c"]);
    assert!(poll(WAIT, || status().ends_with(" 2 2 2 2 2 0") && !daemon_pods(&server, "app=agent").contains_key("node-c")), "status: {}", status());
    assert!(poll(WAIT, || pods(&server, "app=agent").len() == 2), "{:?}", pods(&server, "app=agent"));

    // With maxSurge the new pod starts beside the old one: no node is ever without a pod.
    server.kubectl_ok(&["patch", "daemonset", "agent", "--type=merge", "-p", r#"{"spec":{"updateStrategy":{"rollingUpdate":{"maxSurge":1,"maxUnavailable":0}}}}"#]);
    server.kubectl_ok(&["set", "image", "daemonset/agent", "c=agent:3"]);
    let mut fewest = usize::MAX;
    assert!(
        poll(WAIT, || {
            let p = daemon_pods(&server, "app=agent");
            fewest = fewest.min(p.len());
            p.len() == 2 && p.values().all(|i| i == &["agent:3"]) && status().ends_with(" 2 2 2 2 2 0")
        }),
        "surge update: {:?} {}",
        daemon_pods(&server, "app=agent"),
        status()
    );
    assert_eq!(fewest, 2, "a node was left without a running pod during a surge update");
    assert!(poll(WAIT, || pods(&server, "app=agent").len() == 2), "old pods left: {:?}", pods(&server, "app=agent"));

    // Eligibility by node labels, and a tolerated taint.
    server.kubectl_stdin_ok(&["apply", "-f", "-"], EDGE);
    let edge = || jsonpath(&server, &["get", "ds", "edge"], "{.status.observedGeneration} {.status.desiredNumberScheduled} {.status.numberReady}");
    assert!(poll(WAIT, || edge() == "1 0 0"), "edge: {}", edge());
    server.kubectl_ok(&["label", "node", "node-t", "role=edge"]);
    assert!(poll(WAIT, || edge() == "1 1 1"), "edge: {}", edge());
    assert_eq!(daemon_pods(&server, "app=edge").keys().collect::<Vec<_>>(), ["node-t"]);
    server.kubectl_ok(&["label", "node", "node-t", "role-"]);
    assert!(poll(WAIT, || edge() == "1 0 0" && pods(&server, "app=edge").is_empty()), "edge: {} {:?}", edge(), pods(&server, "app=edge"));
    let evs = events(&server, "DaemonSet");
    assert!(evs.contains("SuccessfulCreate Created pod: agent-") && evs.contains("SuccessfulDelete Deleted pod: agent-"), "{evs}");
}
