//! The node agent end to end: a real `krust server` running its agent (libcontainer, CNI,
//! images from a real registry on loopback), driven with stock kubectl only.
//!
//! Needs root, Debian's CNI plugins and the registry tools (scripts/setup.sh installs
//! them); skips with a message where the machine lacks them.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::{free_port, TestServer, WITH_AGENT};
use common::node::{missing_prerequisite, wait_for, Bridge, Registry};


/// A server with its agent, on its own bridge and pod range so tests do not collide.
fn server_with_agent(subnet: u8) -> TestServer {
    let port = free_port();
    let kubelet = free_port().to_string();
    let cidr = format!("10.42.{subnet}.0/24");
    let bridge = format!("krt{subnet}");
    let node = format!("node-{subnet}");
    TestServer::start_with(&[
        WITH_AGENT,
        "--node-name", &node,
        "--node-ip", "127.0.0.1",
        "--kubelet-port", &kubelet,
        "--cluster-cidr", &cidr,
        "--cni-bridge", &bridge,
        "--cluster-dns", &format!("10.43.{}.10", port % 200),
    ])
}

fn jsonpath(s: &TestServer, pod: &str, path: &str) -> String {
    let out = s.kubectl(&["get", "pod", pod, "-o", &format!("jsonpath={path}")]);
    String::from_utf8_lossy(&out.stdout).to_string()
}

/// Every mount, netns file and cgroup a pod leaves must be gone once it is deleted.
fn assert_nothing_left(s: &TestServer, uid: &str) {
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let leftovers: Vec<&str> = mounts.lines().filter(|l| l.contains(uid)).collect();
    assert!(leftovers.is_empty(), "mounts left behind: {leftovers:#?}");
    for entry in std::fs::read_dir("/sys/fs/cgroup").unwrap().flatten() {
        let p = entry.path().join("krust/pods").join(uid);
        assert!(!p.exists(), "cgroup left behind: {}", p.display());
    }
    let pods_dir = s.data_dir().join("agent/pods").join(uid);
    assert!(!pods_dir.exists(), "pod folder left behind: {}", pods_dir.display());
}

#[test]
fn pods_run_log_restart_and_leave_nothing_behind() {
    if let Some(why) = missing_prerequisite() {
        eprintln!("SKIPPED: {why}");
        return;
    }
    let registry = Registry::start();
    let _bridge = Bridge("krt201".into());
    let s = server_with_agent(201);
    let image = registry.image();

    // The server's own agent registers a Ready node.
    wait_for("node Ready", Duration::from_secs(60), || {
        let out = s.kubectl(&["get", "node", "node-201", "-o", "jsonpath={.status.conditions[?(@.type==\"Ready\")].status}"]);
        (String::from_utf8_lossy(&out.stdout) == "True").then_some(())
            .map(|_| String::new())
    });
    let node = s.kubectl_ok(&["get", "node", "node-201", "-o", "json"]);
    let node: serde_json::Value = serde_json::from_str(&node).unwrap();
    assert_eq!(node["spec"]["podCIDR"], "10.42.201.0/24");
    assert!(node["status"]["nodeInfo"]["containerRuntimeVersion"].as_str().unwrap().starts_with("krust://"));
    assert!(node["status"]["capacity"]["cpu"].as_str().is_some());

    // A pod runs, gets an IP from the node's range, and its logs come back through the API.
    s.kubectl_ok(&["run", "box", &format!("--image={image}"), "--restart=Never", "--", "sh", "-c", "echo hi from $(hostname); sleep 3600"]);
    s.kubectl_ok(&["wait", "--for=condition=Ready", "pod/box", "--timeout=60s"]);
    let ip = jsonpath(&s, "box", "{.status.podIP}");
    assert!(ip.starts_with("10.42.201."), "pod IP {ip:?}");
    let logs = wait_for("logs", Duration::from_secs(10), || {
        let l = s.kubectl_ok(&["logs", "box"]);
        (!l.is_empty()).then_some(l)
    });
    assert_eq!(logs.trim(), "hi from box");

    // Usage from the kubelet's cgroup sampling, through metrics.k8s.io: kubectl top.
    let top = wait_for("kubectl top pod", Duration::from_secs(30), || {
        let out = s.kubectl(&["top", "pod", "box", "--no-headers"]);
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        (out.status.success() && text.starts_with("box")).then_some(text)
    });
    assert!(top.contains('m') && top.contains("Mi"), "{top}");
    let top = s.kubectl_ok(&["top", "node", "--no-headers"]);
    assert!(top.starts_with("node-201") && top.contains('%'), "{top}");
    let pm = s.kubectl_ok(&["get", "--raw", "/apis/metrics.k8s.io/v1beta1/namespaces/default/pods/box"]);
    let pm: serde_json::Value = serde_json::from_str(&pm).unwrap();
    assert_eq!(pm["kind"], "PodMetrics");
    assert_eq!(pm["containers"][0]["name"], "box");
    let missing = s.kubectl(&["get", "--raw", "/apis/metrics.k8s.io/v1beta1/namespaces/default/pods/nope"]);
    assert!(!missing.status.success());

    // Two containers share one IP (localhost) and an emptyDir.
    let pair = format!(
        r#"
apiVersion: v1
kind: Pod
metadata: {{name: pair}}
spec:
  volumes: [{{name: shared, emptyDir: {{}}}}]
  containers:
  - name: web
    image: {image}
    command: [sh, -c, "echo served > /www/index.html; httpd -f -p 8080 -h /www"]
    volumeMounts: [{{name: shared, mountPath: /www}}]
  - name: client
    image: {image}
    command: [sh, -c, "sleep 1; while ! wget -qO- http://127.0.0.1:8080/; do sleep 0.5; done; cat /shared/index.html; sleep 3600"]
    volumeMounts: [{{name: shared, mountPath: /shared}}]
"#
    );
    s.kubectl_stdin_ok(&["apply", "-f", "-"], &pair);
    s.kubectl_ok(&["wait", "--for=condition=Ready", "pod/pair", "--timeout=60s"]);
    let client_logs = wait_for("client logs", Duration::from_secs(20), || {
        let l = s.kubectl_ok(&["logs", "pair", "-c", "client"]);
        (l.matches("served").count() >= 2).then_some(l)
    });
    assert_eq!(client_logs.trim(), "served\nserved");

    // A crashing container restarts and backs off.
    s.kubectl_ok(&["run", "crash", &format!("--image={image}"), "--", "sh", "-c", "echo crashing; exit 3"]);
    wait_for("CrashLoopBackOff", Duration::from_secs(60), || {
        let reason = jsonpath(&s, "crash", "{.status.containerStatuses[0].state.waiting.reason}");
        let restarts: i64 = jsonpath(&s, "crash", "{.status.containerStatuses[0].restartCount}").parse().unwrap_or(0);
        (reason == "CrashLoopBackOff" && restarts >= 1).then_some(reason)
    });
    assert_eq!(jsonpath(&s, "crash", "{.status.containerStatuses[0].lastState.terminated.exitCode}"), "3");
    let previous = s.kubectl_ok(&["logs", "crash", "--previous"]);
    assert_eq!(previous.trim(), "crashing");

    // A failing liveness probe restarts the container.
    let probe = format!(
        r#"
apiVersion: v1
kind: Pod
metadata: {{name: liveness}}
spec:
  containers:
  - name: c
    image: {image}
    command: [sh, -c, "touch /tmp/healthy; sleep 2; rm /tmp/healthy; sleep 3600"]
    livenessProbe:
      exec: {{command: [cat, /tmp/healthy]}}
      periodSeconds: 1
      failureThreshold: 2
"#
    );
    s.kubectl_stdin_ok(&["apply", "-f", "-"], &probe);
    wait_for("a liveness restart", Duration::from_secs(60), || {
        let restarts: i64 = jsonpath(&s, "liveness", "{.status.containerStatuses[0].restartCount}").parse().unwrap_or(0);
        (restarts >= 1).then_some(String::new())
    });

    // Graceful deletion: the agent stops everything, cleans up and removes the objects.
    let uids: Vec<String> = ["box", "pair", "crash", "liveness"].iter().map(|p| jsonpath(&s, p, "{.metadata.uid}")).collect();
    s.kubectl_ok(&["delete", "pod", "box", "pair", "crash", "liveness", "--grace-period=2", "--timeout=60s"]);
    let left = s.kubectl_ok(&["get", "pods", "-o", "name"]);
    assert_eq!(left.trim(), "", "pods left: {left}");
    for uid in &uids {
        assert_nothing_left(&s, uid);
    }
}

/// A `krust agent` process; killed on drop.
struct AgentProcess {
    child: std::process::Child,
    log: PathBuf,
    args: Vec<String>,
    _dir: tempfile::TempDir,
}

impl AgentProcess {
    fn start(server: &TestServer, token: &str, node: &str, subnet: u8) -> AgentProcess {
        let dir = tempfile::tempdir().unwrap();
        let args: Vec<String> = [
            "agent", "--server", &server.url(), "--token", token, "--data-dir", &dir.path().display().to_string(),
            "--node-name", node, "--node-ip", "127.0.0.1", "--kubelet-port", &free_port().to_string(),
            "--cni-bridge", &format!("krt{subnet}"), "--clean",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let log = dir.path().join("agent.err");
        let child = Self::spawn(&args, &log);
        AgentProcess { child, log, args, _dir: dir }
    }

    fn spawn(args: &[String], log: &Path) -> std::process::Child {
        let err = std::fs::OpenOptions::new().create(true).append(true).open(log).unwrap();
        Command::new(env!("CARGO_BIN_EXE_krust")).args(args).stdout(std::process::Stdio::null()).stderr(err).spawn().unwrap()
    }

    /// SIGKILLs the agent, as a crashed node's kubelet (its containers keep running).
    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Starts the agent again on the same data dir and settings.
    fn restart(&mut self) {
        self.kill();
        self.child = Self::spawn(&self.args, &self.log);
    }

    fn output(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for AgentProcess {
    /// SIGTERM (with `--clean` the agent removes its pods), SIGKILL after 20 s.
    fn drop(&mut self) {
        let _ = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status();
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while std::time::Instant::now() < deadline && matches!(self.child.try_wait(), Ok(None)) {
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn a_second_agent_joins_with_the_token_and_runs_pods() {
    if let Some(why) = missing_prerequisite() {
        eprintln!("SKIPPED: {why}");
        return;
    }
    let registry = Registry::start();
    let _bridges = [Bridge("krt202".into()), Bridge("krt203".into())];
    // Two /24s: one for the server's own node, one for the agent that joins.
    let s = TestServer::start_with(&[
        WITH_AGENT,
        "--node-monitor-grace-period", "4s",
        "--node-name", "node-202",
        "--node-ip", "127.0.0.1",
        "--kubelet-port", &free_port().to_string(),
        "--cluster-cidr", "10.42.202.0/23",
        "--cni-bridge", "krt202",
    ]);
    let token = std::fs::read_to_string(s.data_dir().join("server/node-token")).unwrap().trim().to_string();
    assert!(token.starts_with("K10"), "{token}");
    // The server's own node first takes the first /24 (its agent joins through the same node
    // password check as any other, a moment after the API is up).
    wait_for("node-202's pod CIDR", Duration::from_secs(60), || {
        let cidr = s.kubectl_ok(&["get", "node", "node-202", "--ignore-not-found", "-o", "jsonpath={.spec.podCIDR}"]);
        (cidr == "10.42.202.0/24").then_some(cidr)
    });

    // A token naming another CA is refused before the secret is sent.
    let wrong_ca = format!("K10{}::server:x", "0".repeat(64));
    let mut bad = AgentProcess::start(&s, &wrong_ca, "node-bad", 204);
    let status = bad.child.wait().unwrap();
    assert!(!status.success());
    assert!(bad.output().contains("does not match the token's hash"), "{}", bad.output());
    // The right CA but a wrong secret: 401.
    let wrong_secret = format!("{}::server:nope", token.split("::").next().unwrap());
    let mut bad = AgentProcess::start(&s, &wrong_secret, "node-bad", 204);
    assert!(!bad.child.wait().unwrap().success());
    assert!(bad.output().contains("401") || bad.output().contains("invalid token"), "{}", bad.output());

    let mut agent = AgentProcess::start(&s, &token, "node-203", 203);
    wait_for("node-203 Ready", Duration::from_secs(60), || {
        let out = s.kubectl(&["get", "node", "node-203", "-o", "jsonpath={.status.conditions[?(@.type==\"Ready\")].status}|{.spec.podCIDR}"]);
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        (text.starts_with("True|")).then_some(text)
    });
    assert_eq!(s.kubectl_ok(&["get", "node", "node-203", "-o", "jsonpath={.spec.podCIDR}"]), "10.42.203.0/24", "agent log:\n{}", agent.output());
    let lease = s.kubectl_ok(&["get", "lease", "-n", "kube-node-lease", "node-203", "-o", "jsonpath={.spec.holderIdentity}"]);
    assert_eq!(lease, "node-203");
    // Both joined under a node password, the server's own agent too.
    for node in ["node-202", "node-203"] {
        s.kubectl_ok(&["get", "secret", "-n", "kube-system", &format!("{node}.node-password.krust")]);
    }

    // A pod placed on the joined node runs there, and its logs come through its kubelet.
    let overrides = r#"{"spec":{"nodeSelector":{"kubernetes.io/hostname":"node-203"}}}"#;
    s.kubectl_ok(&["run", "far", &format!("--image={}", registry.image()), "--restart=Never", &format!("--overrides={overrides}"), "--", "sh", "-c", "echo on $(hostname); i=0; while true; do i=$((i+1)); echo tick $i; sleep 0.2; done"]);
    let out = s.kubectl(&["wait", "--for=condition=Ready", "pod/far", "--timeout=60s"]);
    assert!(out.status.success(), "pod not ready: {}\n{}\n--- agent log ---\n{}", String::from_utf8_lossy(&out.stderr), s.kubectl_ok(&["get", "pod", "far", "-o", "yaml"]), agent.output());
    assert_eq!(jsonpath(&s, "far", "{.spec.nodeName}"), "node-203");
    assert!(jsonpath(&s, "far", "{.status.podIP}").starts_with("10.42.203."));
    let logs = wait_for("logs", Duration::from_secs(10), || {
        let l = s.kubectl_ok(&["logs", "far"]);
        (!l.is_empty()).then_some(l)
    });
    assert_eq!(logs.lines().next(), Some("on far"));
    // The agent restarts (SIGKILL, as a crash): it adopts the running container instead of
    // starting it again, and the container keeps logging meanwhile (its log shim outlives the
    // agent; without one it would die of SIGPIPE on its next line).
    let container = jsonpath(&s, "far", "{.status.containerStatuses[0].containerID}");
    let ticks = |l: &str| l.lines().filter(|l| l.starts_with("tick ")).count();
    let before = ticks(&s.kubectl_ok(&["logs", "far"]));
    agent.restart();
    std::thread::sleep(Duration::from_secs(2));
    wait_for("logs to keep growing across the agent restart", Duration::from_secs(60), || {
        let out = s.kubectl(&["logs", "far"]);
        (out.status.success() && ticks(&String::from_utf8_lossy(&out.stdout)) > before + 10).then_some(())
    });
    assert_eq!(jsonpath(&s, "far", "{.status.containerStatuses[0].containerID}"), container, "agent log:\n{}", agent.output());
    assert_eq!(jsonpath(&s, "far", "{.status.containerStatuses[0].restartCount}"), "0");
    assert!(agent.output().contains("adopted a running container"), "{}", agent.output());
    let uid = jsonpath(&s, "far", "{.metadata.uid}");
    s.kubectl_ok(&["delete", "pod", "far", "--grace-period=1", "--timeout=60s"]);
    assert_nothing_left_on(&uid, &agent._dir.path().join("agent"));

    // The agent dies: its node turns NotReady and a Deployment's pod comes back on the other node.
    s.kubectl_ok(&["label", "node", "node-203", "pool=b"]);
    let deploy = format!(
        r#"
apiVersion: apps/v1
kind: Deployment
metadata: {{name: mover}}
spec:
  replicas: 1
  selector: {{matchLabels: {{app: mover}}}}
  template:
    metadata: {{labels: {{app: mover}}}}
    spec:
      nodeSelector: {{pool: b}}
      terminationGracePeriodSeconds: 1
      tolerations: [{{key: node.kubernetes.io/unreachable, operator: Exists, effect: NoExecute, tolerationSeconds: 2}}]
      containers: [{{name: c, image: "{}", command: [sleep, "3600"]}}]
"#,
        registry.image()
    );
    s.kubectl_stdin_ok(&["apply", "-f", "-"], &deploy);
    s.kubectl_ok(&["rollout", "status", "deployment/mover", "--timeout=60s"]);
    let first = s.kubectl_ok(&["get", "pods", "-l", "app=mover", "-o", "jsonpath={.items[0].metadata.name} {.items[0].spec.nodeName} {.items[0].metadata.uid}"]);
    let parts: Vec<&str> = first.split_whitespace().collect();
    assert_eq!(parts[1], "node-203");
    s.kubectl_ok(&["label", "node", "node-202", "pool=b"]);
    agent.kill();
    wait_for("node-203 NotReady", Duration::from_secs(60), || {
        let out = s.kubectl(&["get", "node", "node-203", "-o", "jsonpath={.status.conditions[?(@.type==\"Ready\")].status}"]);
        (String::from_utf8_lossy(&out.stdout) == "Unknown").then(String::new)
    });
    wait_for("the pod to come back on node-202", Duration::from_secs(90), || {
        let out = s.kubectl(&["get", "pods", "-l", "app=mover", "-o", r#"jsonpath={range .items[?(@.status.phase=="Running")]}{.spec.nodeName}{" "}{.metadata.deletionTimestamp}{"\n"}{end}"#]);
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        text.lines().any(|l| l.trim() == "node-202").then_some(text)
    });
    // The agent comes back: it finds its evicted pod being deleted, stops it and removes it.
    agent.restart();
    wait_for("the evicted pod to be removed", Duration::from_secs(90), || {
        let out = s.kubectl(&["get", "pod", parts[0], "-o", "name"]);
        (!out.status.success()).then(String::new)
    });
    assert_nothing_left_on(parts[2], &agent._dir.path().join("agent"));
    s.kubectl_ok(&["delete", "deployment", "mover", "--timeout=60s"]);
}

fn assert_nothing_left_on(uid: &str, agent_dir: &Path) {
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let leftovers: Vec<&str> = mounts.lines().filter(|l| l.contains(uid)).collect();
    assert!(leftovers.is_empty(), "mounts left behind: {leftovers:#?}");
    assert!(!agent_dir.join("pods").join(uid).exists());
}

/// An HPA scales a CPU-burning Deployment up from the kubelets' usage (through
/// metrics.k8s.io), then down when its target is raised.
#[test]
fn hpa_scales_on_cpu_usage() {
    if let Some(why) = missing_prerequisite() {
        eprintln!("SKIPPED: {why}");
        return;
    }
    let registry = Registry::start();
    let _bridge = Bridge("krt207".into());
    let s = TestServer::start_with(&[
        WITH_AGENT,
        "--horizontal-pod-autoscaler-sync-period", "2s",
        "--node-name", "node-207",
        "--node-ip", "127.0.0.1",
        "--kubelet-port", &free_port().to_string(),
        "--cluster-cidr", "10.42.207.0/24",
        "--cni-bridge", "krt207",
    ]);
    // Each pod burns what its limit allows (0.1 core) against a request of 50m: 200%.
    let manifest = format!(
        r#"
apiVersion: apps/v1
kind: Deployment
metadata: {{name: burner}}
spec:
  replicas: 1
  selector: {{matchLabels: {{app: burner}}}}
  template:
    metadata: {{labels: {{app: burner}}}}
    spec:
      terminationGracePeriodSeconds: 1
      containers:
      - name: c
        image: "{}"
        command: [sh, -c, "while :; do :; done"]
        resources: {{requests: {{cpu: 50m}}, limits: {{cpu: 100m}}}}
---
apiVersion: autoscaling/v2
kind: HorizontalPodAutoscaler
metadata: {{name: burner}}
spec:
  scaleTargetRef: {{apiVersion: apps/v1, kind: Deployment, name: burner}}
  minReplicas: 1
  maxReplicas: 3
  metrics: [{{type: Resource, resource: {{name: cpu, target: {{type: Utilization, averageUtilization: 50}}}}}}]
  behavior: {{scaleDown: {{stabilizationWindowSeconds: 0}}}}
"#,
        registry.image()
    );
    s.kubectl_stdin_ok(&["apply", "-f", "-"], &manifest);
    wait_for("scale up to 3", Duration::from_secs(120), || {
        let r = s.kubectl_ok(&["get", "deployment", "burner", "-o", "jsonpath={.spec.replicas}"]);
        (r == "3").then_some(r)
    });
    // Usage is reported, and the HPA says it would go higher than allowed. (Polled: new
    // pods start with no usage, and a loaded machine gives the burners less CPU.)
    wait_for("ScalingLimited=TooManyReplicas with usage reported", Duration::from_secs(60), || {
        let status = s.kubectl_ok(&["get", "hpa", "burner", "-o", "json"]);
        let status: serde_json::Value = serde_json::from_str(&status).unwrap();
        let used = status["status"]["currentMetrics"][0]["resource"]["current"]["averageUtilization"].as_i64().unwrap_or(0) > 0;
        let limited = status["status"]["conditions"].as_array().into_iter().flatten().any(|c| c["type"] == "ScalingLimited" && c["reason"] == "TooManyReplicas");
        (used && limited).then_some(())
    });
    // A target far above the usage brings it back to the minimum.
    s.kubectl_ok(&["patch", "hpa", "burner", "--type=json", "-p", r#"[{"op":"replace","path":"/spec/metrics/0/resource/target/averageUtilization","value":5000}]"#]);
    wait_for("scale down to 1", Duration::from_secs(120), || {
        let r = s.kubectl_ok(&["get", "deployment", "burner", "-o", "jsonpath={.spec.replicas}"]);
        (r == "1").then_some(r)
    });
    // `krust server --clean` stopped (SIGTERM) takes its node's pods with it: the burner does
    // not spin on after the server, and nothing of its pod is left.
    let uids = s.kubectl_ok(&["get", "pods", "-l", "app=burner", "-o", "jsonpath={.items[*].metadata.uid}"]);
    assert!(!uids.trim().is_empty());
    let agent_dir = s.data_dir().join("agent");
    let mut s = s;
    assert!(s.stop(), "the server did not stop cleanly:\n{}", s.logs());
    for uid in uids.split_whitespace() {
        let cgroups: Vec<String> = ["/sys/fs/cgroup/pids/krust/pods", "/sys/fs/cgroup/krust/pods"].iter().map(|d| format!("{d}/{uid}")).filter(|d| Path::new(d).exists()).collect();
        assert!(cgroups.is_empty(), "pod cgroups left after --clean: {cgroups:?}");
        assert_nothing_left_on(uid, &agent_dir);
    }
}

/// What a pod spec asks of the agent: init containers, environment from every source,
/// projected volumes that follow their ConfigMap, security context, and image errors.
#[test]
fn pod_spec_features() {
    if let Some(why) = missing_prerequisite() {
        eprintln!("SKIPPED: {why}");
        return;
    }
    let registry = Registry::start();
    let _bridge = Bridge("krt208".into());
    let s = TestServer::start_with(&[
        WITH_AGENT,
        "--node-name", "node-208",
        "--node-ip", "127.0.0.1",
        "--kubelet-port", &free_port().to_string(),
        "--cluster-cidr", "10.42.208.0/24",
        "--cni-bridge", "krt208",
    ]);
    let image = registry.image();
    let manifest = format!(
        r#"
apiVersion: v1
kind: ConfigMap
metadata: {{name: cfg}}
data: {{color: blue, size: large}}
---
apiVersion: v1
kind: Secret
metadata: {{name: sec}}
stringData: {{password: hunter2}}
---
apiVersion: v1
kind: Pod
metadata: {{name: env, labels: {{tier: web}}}}
spec:
  restartPolicy: Never
  volumes:
  - {{name: work, emptyDir: {{}}}}
  - {{name: cfg, configMap: {{name: cfg}}}}
  - {{name: sec, secret: {{secretName: sec, defaultMode: 0444}}}}
  - name: info
    downwardAPI: {{items: [{{path: labels, fieldRef: {{fieldPath: metadata.labels}}}}]}}
  initContainers:
  - name: init
    image: "{image}"
    command: [sh, -c, "echo prepared > /work/init.txt"]
    volumeMounts: [{{name: work, mountPath: /work}}]
  containers:
  - name: main
    image: "{image}"
    command: [sh, -c]
    args: ["echo init=$(cat /work/init.txt) color=$COLOR pw=$PW name=$POD ip_ok=$([ -n \"$IP\" ] && echo y) mem=$MEM cm_size=$CM_size file=$(cat /cfg/color) secret=$(cat /sec/password) mode=$(stat -c %a /sec/..data/password 2>/dev/null || stat -L -c %a /sec/password) labels=$(cat /info/labels) uid=$(id -u) expanded=$(EXP)"]
    env:
    - {{name: COLOR, valueFrom: {{configMapKeyRef: {{name: cfg, key: color}}}}}}
    - {{name: PW, valueFrom: {{secretKeyRef: {{name: sec, key: password}}}}}}
    - {{name: POD, valueFrom: {{fieldRef: {{fieldPath: metadata.name}}}}}}
    - {{name: IP, valueFrom: {{fieldRef: {{fieldPath: status.podIP}}}}}}
    - {{name: MEM, valueFrom: {{resourceFieldRef: {{resource: limits.memory, divisor: 1Mi}}}}}}
    - {{name: EXP, value: "$(COLOR)-$(POD)"}}
    envFrom: [{{prefix: CM_, configMapRef: {{name: cfg}}}}]
    resources: {{limits: {{memory: 64Mi}}}}
    securityContext: {{runAsUser: 1000}}
    volumeMounts:
    - {{name: work, mountPath: /work}}
    - {{name: cfg, mountPath: /cfg}}
    - {{name: sec, mountPath: /sec}}
    - {{name: info, mountPath: /info}}
"#
    );
    s.kubectl_stdin_ok(&["apply", "-f", "-"], &manifest);
    let start = Instant::now();
    loop {
        let phase = jsonpath(&s, "env", "{.status.phase}");
        if phase == "Succeeded" {
            break;
        }
        assert!(phase != "Failed" && start.elapsed() < Duration::from_secs(60), "pod env: {phase}\n{}\n{}", s.kubectl_ok(&["get", "pod", "env", "-o", "yaml"]), s.logs());
        std::thread::sleep(Duration::from_millis(250));
    }
    let logs = s.kubectl_ok(&["logs", "env"]);
    for want in ["init=prepared", "color=blue", "pw=hunter2", "name=env", "ip_ok=y", "mem=64", "cm_size=large", "file=blue", "secret=hunter2", "mode=444", "labels=tier=\"web\"", "uid=1000", "expanded=blue-env"] {
        assert!(logs.contains(want), "{want:?} missing from: {logs}");
    }
    assert_eq!(jsonpath(&s, "env", "{.status.initContainerStatuses[0].state.terminated.reason}"), "Completed");

    // Capabilities, privileged, a memory-backed emptyDir, hostPath and fsGroup ownership.
    let host_dir = tempfile::tempdir().unwrap();
    std::fs::write(host_dir.path().join("hello"), "from-host").unwrap();
    let caps = format!(
        r#"
apiVersion: v1
kind: Pod
metadata: {{name: caps}}
spec:
  restartPolicy: Never
  securityContext: {{fsGroup: 2345}}
  volumes:
  - {{name: mem, emptyDir: {{medium: Memory}}}}
  - {{name: host, hostPath: {{path: "{host}", type: Directory}}}}
  - {{name: cfg, configMap: {{name: cfg, defaultMode: 0400}}}}
  containers:
  - name: netadmin
    image: "{image}"
    command: [sh, -c, "grep CapEff /proc/self/status; ip link set lo mtu 65000 && echo link-added; grep ' /mem ' /proc/mounts; cat /host/hello; echo; echo hi > /mem/f; stat -c memgroup=%g /mem/f; stat -L -c 'cfg=%g/%a' /cfg/color; echo groups=$(id -G)"]
    securityContext: {{capabilities: {{drop: [ALL], add: [NET_ADMIN]}}}}
    volumeMounts: [{{name: mem, mountPath: /mem}}, {{name: host, mountPath: /host}}, {{name: cfg, mountPath: /cfg}}]
  - name: plain
    image: "{image}"
    command: [sh, -c, "grep CapEff /proc/self/status; ip link set lo mtu 64000 2>/dev/null && echo link-added || echo link-refused"]
    securityContext: {{capabilities: {{drop: [ALL]}}}}
  - name: priv
    image: "{image}"
    command: [sh, -c, "grep CapEff /proc/self/status"]
    securityContext: {{privileged: true}}
"#,
        host = host_dir.path().display()
    );
    s.kubectl_stdin_ok(&["apply", "-f", "-"], &caps);
    let start = Instant::now();
    while jsonpath(&s, "caps", "{.status.phase}") != "Succeeded" {
        let phase = jsonpath(&s, "caps", "{.status.phase}");
        assert!(phase != "Failed" && start.elapsed() < Duration::from_secs(60), "pod caps: {phase}\n{}\n{}", s.kubectl_ok(&["get", "pod", "caps", "-o", "yaml"]), s.logs().lines().filter(|l| l.contains("WARN") || l.contains("ERROR")).collect::<Vec<_>>().join("\n"));
        std::thread::sleep(Duration::from_millis(250));
    }
    let logs = |c: &str| s.kubectl_ok(&["logs", "caps", "-c", c]);
    let netadmin = logs("netadmin");
    // NET_ADMIN is capability 12: the only one left.
    assert!(netadmin.contains("CapEff:\t0000000000001000"), "{netadmin}");
    for want in ["link-added", " /mem tmpfs ", "from-host", "memgroup=2345", "cfg=2345/440", "2345"] {
        assert!(netadmin.contains(want), "{want:?} missing from: {netadmin}");
    }
    let plain = logs("plain");
    assert!(plain.contains("CapEff:\t0000000000000000") && plain.contains("link-refused"), "{plain}");
    // Privileged: every capability the agent may hold (its bounding set, the test's too).
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let all = format!("CapEff:\t{}", status.lines().find_map(|l| l.strip_prefix("CapBnd:")).unwrap().trim());
    assert!(logs("priv").contains(&all), "{} (want {all})", logs("priv"));

    // The projected service account token (kube-api-access volume) authenticates as the
    // pod's service account; a forged one does not.
    s.kubectl_ok(&["run", "sa", &format!("--image={image}"), "--restart=Never", "--", "sh", "-c", "cat /var/run/secrets/kubernetes.io/serviceaccount/token; echo; cat /var/run/secrets/kubernetes.io/serviceaccount/namespace"]);
    let token = wait_for("the token in the pod's logs", Duration::from_secs(60), || {
        let l = s.kubectl(&["logs", "sa"]);
        let text = String::from_utf8_lossy(&l.stdout).to_string();
        text.ends_with("default").then(|| text.lines().next().unwrap_or_default().to_string())
    });
    let whoami = |token: &str| {
        let out = Command::new("curl")
            .args(["-sk", "-H", &format!("Authorization: Bearer {token}"), "-H", "Content-Type: application/json", "-X", "POST"])
            .args(["-d", r#"{"apiVersion":"authentication.k8s.io/v1","kind":"SelfSubjectReview"}"#])
            .arg(format!("{}/apis/authentication.k8s.io/v1/selfsubjectreviews", s.url()))
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).to_string()
    };
    let review = whoami(&token);
    assert!(review.contains("system:serviceaccount:default:default"), "{review}");
    let forged = format!("{}x", &token[..token.len() - 1]);
    assert!(!whoami(&forged).contains("system:serviceaccount"), "a forged token was accepted");
    // kubectl create token (the TokenRequest API) gives a token that works too.
    let created = s.kubectl_ok(&["create", "token", "default", "--duration=10m"]);
    assert!(whoami(created.trim()).contains("system:serviceaccount:default:default"));

    // A ConfigMap update reaches a running pod's mounted file.
    let watcher = format!(
        r#"
apiVersion: v1
kind: Pod
metadata: {{name: follow}}
spec:
  volumes: [{{name: cfg, configMap: {{name: cfg}}}}]
  containers:
  - name: c
    image: "{image}"
    command: [sh, -c, "while true; do cat /cfg/color; echo; sleep 0.5; done"]
    volumeMounts: [{{name: cfg, mountPath: /cfg}}]
    securityContext: {{readOnlyRootFilesystem: true}}
"#
    );
    s.kubectl_stdin_ok(&["apply", "-f", "-"], &watcher);
    s.kubectl_ok(&["wait", "--for=condition=Ready", "pod/follow", "--timeout=60s"]);
    s.kubectl_ok(&["patch", "configmap", "cfg", "-p", r#"{"data":{"color":"green"}}"#]);
    wait_for("the new color in the mounted file", Duration::from_secs(30), || {
        let l = s.kubectl_ok(&["logs", "follow", "--tail=1"]);
        (l.trim() == "green").then_some(l)
    });

    // Image errors carry upstream's reasons.
    let missing = format!("127.0.0.1:{}/library/nope:1", registry.port);
    s.kubectl_ok(&["run", "noimage", &format!("--image={missing}"), "--restart=Never"]);
    wait_for("ErrImagePull", Duration::from_secs(60), || {
        let r = jsonpath(&s, "noimage", "{.status.containerStatuses[0].state.waiting.reason}");
        (r == "ErrImagePull" || r == "ImagePullBackOff").then_some(r)
    });
    s.kubectl_ok(&["run", "never", "--image=127.0.0.1:1/absent:1", "--image-pull-policy=Never", "--restart=Never"]);
    wait_for("ErrImageNeverPull", Duration::from_secs(60), || {
        let r = jsonpath(&s, "never", "{.status.containerStatuses[0].state.waiting.reason}");
        (r == "ErrImageNeverPull").then_some(r)
    });
    s.kubectl_ok(&["delete", "pod", "env", "caps", "sa", "follow", "noimage", "never", "--grace-period=1", "--timeout=60s"]);
}
