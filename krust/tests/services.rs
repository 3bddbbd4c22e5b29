//! Services end to end with the agent's kube-proxy (nftables): a ClusterIP reaches every
//! ready endpoint from the host and from pods, a NodePort answers on the node's address, a
//! Service without endpoints refuses at once. Needs root, CNI, nft and the registry tools.

mod common;


use std::process::Command;
use std::time::Duration;

use common::{free_port, TestServer, WITH_AGENT};
use common::node::{missing_prerequisite, wait_for, Bridge, Registry};

/// An HTTP GET from the host with a short timeout: the body, or None.
fn http_get(addr: &str) -> Option<String> {
    let out = Command::new("curl").args(["-s", "-m", "2", &format!("http://{addr}/")]).output().ok()?;
    out.status.success().then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// A child process killed when the test ends.
struct Killed(std::process::Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The address this host uses towards other hosts (not loopback): where NodePorts answer.
fn host_address() -> String {
    let s = std::net::UdpSocket::bind("0.0.0.0:0").unwrap();
    s.connect("192.0.2.1:9").unwrap();
    s.local_addr().unwrap().ip().to_string()
}

#[test]
fn cluster_ip_and_node_port_reach_ready_pods() {
    if let Some(why) = missing_prerequisite() {
        eprintln!("SKIPPED: {why}");
        return;
    }
    let registry = Registry::start();
    let _net = [Bridge("krt210".into()), Bridge("krt211".into())];
    let s = TestServer::start_with(&[
        WITH_AGENT,
        "--node-name", "node-210",
        "--node-ip", "127.0.0.1",
        "--kubelet-port", &free_port().to_string(),
        "--cluster-cidr", "10.42.210.0/23",
        "--cni-bridge", "krt210",
        "--service-cidr", "10.43.210.0/24",
        "--cluster-dns", "10.43.210.10",
    ]);
    let image = registry.image();
    let manifest = format!(
        r#"
apiVersion: apps/v1
kind: Deployment
metadata: {{name: web}}
spec:
  replicas: 2
  selector: {{matchLabels: {{app: web}}}}
  template:
    metadata: {{labels: {{app: web}}}}
    spec:
      terminationGracePeriodSeconds: 1
      containers:
      - name: httpd
        image: "{image}"
        command: [sh, -c, "mkdir -p /www && hostname > /www/index.html && httpd -f -p 8080 -h /www"]
        ports: [{{name: http, containerPort: 8080}}]
        readinessProbe: {{tcpSocket: {{port: 8080}}, periodSeconds: 1}}
---
apiVersion: v1
kind: Service
metadata: {{name: web}}
spec:
  type: NodePort
  selector: {{app: web}}
  ports: [{{name: http, port: 80, targetPort: http}}]
"#
    );
    s.kubectl_stdin_ok(&["apply", "-f", "-"], &manifest);
    s.kubectl_ok(&["rollout", "status", "deployment/web", "--timeout=90s"]);
    let ip = s.kubectl_ok(&["get", "svc", "web", "-o", "jsonpath={.spec.clusterIP}"]);
    let node_port = s.kubectl_ok(&["get", "svc", "web", "-o", "jsonpath={.spec.ports[0].nodePort}"]);
    let pods = s.kubectl_ok(&["get", "pods", "-l", "app=web", "-o", "jsonpath={.items[*].metadata.name}"]);
    let pods: Vec<&str> = pods.split_whitespace().collect();
    assert_eq!(pods.len(), 2);

    if std::env::var("KRUST_TEST_DEBUG").is_ok() {
        std::thread::sleep(Duration::from_secs(3));
        eprintln!("{}", String::from_utf8_lossy(&Command::new("nft").args(["list", "table", "ip", "krust_node_210"]).output().unwrap().stdout));
        eprintln!("{}", s.kubectl_ok(&["get", "endpointslices", "-o", "wide"]));
        eprintln!("{}", s.logs().lines().filter(|l| l.contains("proxy") || l.contains("WARN")).collect::<Vec<_>>().join("\n"));
    }
    // From the host: both backends answer through the ClusterIP.
    let mut seen = std::collections::BTreeSet::new();
    wait_for("both backends through the ClusterIP", Duration::from_secs(60), || {
        if let Some(body) = http_get(&format!("{ip}:80")) {
            seen.insert(body);
        }
        (seen.len() == 2).then(String::new)
    });
    assert_eq!(seen.iter().map(String::as_str).collect::<Vec<_>>(), { let mut p = pods.clone(); p.sort(); p });

    // From a pod, by ClusterIP, including a backend reaching its own Service (hairpin).
    for pod in &pods {
        let out = wait_for("wget from a pod", Duration::from_secs(30), || {
            let o = s.kubectl(&["exec", pod, "--", "timeout", "3", "wget", "-q", "-O", "-", &format!("http://{ip}/")]);
            o.status.success().then(|| String::from_utf8_lossy(&o.stdout).trim().to_string())
        });
        assert!(pods.contains(&out.as_str()), "{out}");
    }
    // Hairpin, forced: a Service whose only endpoint is the pod calling it.
    s.kubectl_ok(&["label", "pod", pods[0], "self=yes"]);
    s.kubectl_stdin_ok(&["apply", "-f", "-"], "apiVersion: v1\nkind: Service\nmetadata: {name: web-self}\nspec:\n  selector: {self: \"yes\"}\n  ports: [{port: 80, targetPort: 8080}]\n");
    let self_ip = s.kubectl_ok(&["get", "svc", "web-self", "-o", "jsonpath={.spec.clusterIP}"]);
    let out = wait_for("a pod reaching itself through its Service", Duration::from_secs(30), || {
        let o = s.kubectl(&["exec", pods[0], "--", "timeout", "3", "wget", "-q", "-O", "-", &format!("http://{self_ip}/")]);
        o.status.success().then(|| String::from_utf8_lossy(&o.stdout).trim().to_string())
    });
    assert_eq!(out, pods[0]);

    // sessionAffinity ClientIP: once a client has been answered, the same endpoint answers it
    // again (random choice over two endpoints would differ within a dozen requests).
    s.kubectl_stdin_ok(
        &["apply", "-f", "-"],
        "apiVersion: v1\nkind: Service\nmetadata: {name: web-sticky}\nspec:\n  selector: {app: web}\n  sessionAffinity: ClientIP\n  sessionAffinityConfig: {clientIP: {timeoutSeconds: 600}}\n  ports: [{port: 80, targetPort: 8080}]\n",
    );
    let sticky_ip = s.kubectl_ok(&["get", "svc", "web-sticky", "-o", "jsonpath={.spec.clusterIP}"]);
    wait_for("both endpoints in the sticky Service's slice", Duration::from_secs(30), || {
        let eps = s.kubectl_ok(&["get", "endpointslices", "-l", "kubernetes.io/service-name=web-sticky", "-o", "jsonpath={.items[*].endpoints[*].addresses[0]}"]);
        (eps.split_whitespace().count() == 2).then_some(())
    });
    let first = wait_for("the sticky Service", Duration::from_secs(30), || http_get(&format!("{sticky_ip}:80")));
    for _ in 0..12 {
        assert_eq!(http_get(&format!("{sticky_ip}:80")).as_deref(), Some(first.as_str()), "sessionAffinity ClientIP sent the client elsewhere");
    }

    // By name, through the cluster DNS (the kube-dns ClusterIP, DNAT'ed to the node's DNS).
    let by_name = wait_for("wget by Service name", Duration::from_secs(30), || {
        let o = s.kubectl(&["exec", pods[0], "--", "timeout", "3", "wget", "-q", "-O", "-", "http://web.default.svc.cluster.local/"]);
        o.status.success().then(|| String::from_utf8_lossy(&o.stdout).trim().to_string())
    });
    assert!(pods.contains(&by_name.as_str()), "{by_name}");
    let short = s.kubectl_ok(&["exec", pods[1], "--", "timeout", "3", "wget", "-q", "-O", "-", "http://web/"]);
    assert!(pods.contains(&short.trim()), "{short}");
    // A headless Service resolves to every ready pod.
    s.kubectl_stdin_ok(&["apply", "-f", "-"], "apiVersion: v1\nkind: Service\nmetadata: {name: web-headless}\nspec:\n  clusterIP: None\n  selector: {app: web}\n  ports: [{name: http, port: 8080}]\n");
    let pod_ips = s.kubectl_ok(&["get", "pods", "-l", "app=web", "-o", "jsonpath={.items[*].status.podIP}"]);
    wait_for("nslookup of the headless Service", Duration::from_secs(30), || {
        let o = s.kubectl(&["exec", pods[0], "--", "nslookup", "web-headless.default.svc.cluster.local"]);
        let text = String::from_utf8_lossy(&o.stdout).to_string();
        pod_ips.split_whitespace().all(|ip| text.contains(ip)).then_some(text)
    });

    // From a client pod on another node (a `krust agent` joined with the token).
    let token = std::fs::read_to_string(s.data_dir().join("server/node-token")).unwrap();
    let agent_dir = tempfile::tempdir().unwrap();
    let mut agent = Killed(
        std::process::Command::new(env!("CARGO_BIN_EXE_krust"))
            .args(["agent", "--server", &s.url(), "--token", token.trim(), "--data-dir"])
            .arg(agent_dir.path())
            .args(["--node-name", "node-211", "--node-ip", "127.0.0.1", "--kubelet-port", &free_port().to_string(), "--cni-bridge", "krt211", "--cluster-dns", "10.43.210.10", "--clean"])
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(agent_dir.path().join("agent.log")).unwrap())
            .spawn()
            .unwrap(),
    );
    let client = format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: client}}\nspec:\n  nodeSelector: {{kubernetes.io/hostname: node-211}}\n  containers: [{{name: c, image: \"{image}\", command: [sleep, \"3600\"]}}]\n"
    );
    s.kubectl_stdin_ok(&["apply", "-f", "-"], &client);
    s.kubectl_ok(&["wait", "--for=condition=Ready", "pod/client", "--timeout=90s"]);
    assert_eq!(s.kubectl_ok(&["get", "pod", "client", "-o", "jsonpath={.spec.nodeName}"]), "node-211");
    let mut remote_seen = std::collections::BTreeSet::new();
    wait_for("both backends from the other node, by name", Duration::from_secs(60), || {
        let o = s.kubectl(&["exec", "client", "--", "timeout", "3", "wget", "-q", "-O", "-", "http://web.default.svc.cluster.local/"]);
        if o.status.success() {
            remote_seen.insert(String::from_utf8_lossy(&o.stdout).trim().to_string());
        }
        (remote_seen.len() == 2).then_some(())
    });
    s.kubectl_ok(&["delete", "pod", "client", "--grace-period=1", "--timeout=60s"]);
    // `krust agent --clean` removes its kube-proxy table when it stops.
    assert!(Command::new("nft").args(["list", "table", "ip", "krust_node_211"]).output().unwrap().status.success());
    let _ = Command::new("kill").args(["-TERM", &agent.0.id().to_string()]).status();
    let _ = agent.0.wait();
    assert!(!Command::new("nft").args(["list", "table", "ip", "krust_node_211"]).output().unwrap().status.success(), "the table outlived the agent");

    // NodePort on the node's own (non-loopback) address.
    let host = host_address();
    let body = wait_for("the NodePort", Duration::from_secs(30), || http_get(&format!("{host}:{node_port}")));
    assert!(pods.contains(&body.as_str()), "{body}");

    // Scaled to zero: no ready endpoint, the ClusterIP refuses.
    s.kubectl_ok(&["scale", "deployment/web", "--replicas=0"]);
    wait_for("the Service to stop answering", Duration::from_secs(60), || http_get(&format!("{ip}:80")).is_none().then(String::new));
    s.kubectl_ok(&["delete", "deployment", "web", "--timeout=60s"]);
    s.kubectl_ok(&["delete", "service", "web"]);
}
