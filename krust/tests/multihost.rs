//! Two hosts: the server's node on this machine and a `krust agent` in a network namespace of
//! its own, joined to the host by a veth pair, as a second machine on the same link would be.
//! Pods on either node reach each other's pod IPs through the host-gw routes the agents'
//! kube-proxies install, a Service on one node answers a client on the other, and the
//! apiserver reaches the far kubelet (logs, exec) over the link. Images come from air-gap
//! archives (the registry listens on the host's loopback only). Needs root, CNI, nft, nsenter.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::node::{missing_prerequisite, repo, wait_for, Bridge};
use common::{free_port, TestServer, WITH_AGENT};

const NETNS: &str = "krust-h212";
const HOST_IF: &str = "krv212h";
const HOST_IP: &str = "10.99.212.1";
const FAR_IP: &str = "10.99.212.2";
const IMAGE: &str = "docker.io/library/busybox:1.35";

fn run(args: &[&str]) {
    let out = Command::new(args[0]).args(&args[1..]).output().unwrap();
    assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

/// The far host's network: a namespace and a veth pair; removed on drop (routes through
/// the link go with it).
struct FarHost;

impl FarHost {
    fn create() -> FarHost {
        drop(FarHost); // leftovers of an interrupted run
        let far = FarHost;
        run(&["ip", "netns", "add", NETNS]);
        run(&["ip", "link", "add", HOST_IF, "type", "veth", "peer", "name", "eth212", "netns", NETNS]);
        run(&["ip", "addr", "add", &format!("{HOST_IP}/24"), "dev", HOST_IF]);
        run(&["ip", "link", "set", HOST_IF, "up"]);
        let far_cidr = format!("{FAR_IP}/24");
        run(&["ip", "-n", NETNS, "addr", "add", &far_cidr, "dev", "eth212"]);
        run(&["ip", "-n", NETNS, "link", "set", "eth212", "up"]);
        run(&["ip", "-n", NETNS, "link", "set", "lo", "up"]);
        far
    }
}

impl Drop for FarHost {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["link", "del", HOST_IF]).output();
        let _ = Command::new("ip").args(["netns", "del", NETNS]).output();
    }
}

/// A child process stopped (SIGTERM, then waited for) when the test ends.
struct Stopped(std::process::Child);

impl Drop for Stopped {
    fn drop(&mut self) {
        let _ = Command::new("kill").args(["-TERM", &self.0.id().to_string()]).status();
        let _ = self.0.wait();
    }
}

/// Writes busybox as an OCI archive into an agent's air-gap directory.
fn airgap(agent_dir: &Path) {
    let dir = agent_dir.join("images");
    std::fs::create_dir_all(&dir).unwrap();
    let out = Command::new("bash").arg(repo().join("scripts/registry.sh")).arg("archive").arg(dir.join("busybox.tar")).output().unwrap();
    assert!(out.status.success(), "registry.sh archive: {}", String::from_utf8_lossy(&out.stderr));
}

fn pod(name: &str, node: &str, command: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}, labels: {{app: {name}}}}}\nspec:\n  nodeSelector: {{kubernetes.io/hostname: {node}}}\n  terminationGracePeriodSeconds: 1\n  containers: [{{name: c, image: \"{IMAGE}\", imagePullPolicy: IfNotPresent, command: [sh, -c, \"{command}\"]}}]\n"
    )
}

#[test]
fn pods_on_two_hosts_reach_each_other() {
    if let Some(why) = missing_prerequisite() {
        eprintln!("SKIPPED: {why}");
        return;
    }
    if !Path::new("/usr/bin/nsenter").exists() {
        eprintln!("SKIPPED: nsenter is missing (util-linux)");
        return;
    }
    let _far = FarHost::create();
    let _net = Bridge("krt212".into());
    let server_dir = tempfile::tempdir().unwrap();
    airgap(&server_dir.path().join("agent"));
    // Listening on every address: the far agent comes over the link.
    let s = TestServer::start_in(
        server_dir.path(),
        free_port(),
        &[
            WITH_AGENT,
            "--bind-address", "0.0.0.0",
            "--tls-san", HOST_IP,
            "--node-name", "node-212",
            "--node-ip", HOST_IP,
            "--kubelet-port", &free_port().to_string(),
            "--cluster-cidr", "10.42.212.0/23",
            "--cni-bridge", "krt212",
            "--service-cidr", "10.43.212.0/24",
            "--cluster-dns", "10.43.212.10",
        ],
    );
    let token = std::fs::read_to_string(s.data_dir().join("server/node-token")).unwrap();
    let agent_dir = tempfile::tempdir().unwrap();
    airgap(&agent_dir.path().join("agent"));
    // Only the network namespace differs: mounts and cgroups are the host's, as on a machine.
    let _agent = Stopped(
        Command::new("nsenter")
            .arg(format!("--net=/run/netns/{NETNS}"))
            .arg(env!("CARGO_BIN_EXE_krust"))
            .args(["agent", "--server", &format!("https://{HOST_IP}:{}", s.port()), "--token", token.trim(), "--data-dir"])
            .arg(agent_dir.path())
            .args(["--node-name", "node-213", "--node-ip", FAR_IP, "--cni-bridge", "krt213", "--cluster-dns", "10.43.212.10", "--clean"])
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(agent_dir.path().join("agent.log")).unwrap())
            .spawn()
            .unwrap(),
    );
    let agent_log = || std::fs::read_to_string(agent_dir.path().join("agent.log")).unwrap_or_default();
    wait_for("the far node to be Ready", Duration::from_secs(60), || {
        let o = s.kubectl(&["get", "node", "node-213", "-o", "jsonpath={.status.conditions[?(@.type==\"Ready\")].status}"]);
        (String::from_utf8_lossy(&o.stdout) == "True").then_some(())
    });

    let httpd = "mkdir -p /www && hostname > /www/index.html && exec httpd -f -p 8080 -h /www";
    let manifests = [pod("near", "node-212", httpd), pod("far", "node-213", httpd)].join("---\n");
    s.kubectl_stdin_ok(&["apply", "-f", "-"], &manifests);
    s.kubectl_stdin_ok(&["apply", "-f", "-"], "apiVersion: v1\nkind: Service\nmetadata: {name: far}\nspec:\n  selector: {app: far}\n  ports: [{port: 80, targetPort: 8080}]\n");
    let ready = s.kubectl(&["wait", "--for=condition=Ready", "pod/near", "pod/far", "--timeout=90s"]);
    assert!(ready.status.success(), "pods not ready: {}\n{}\nagent log:\n{}", String::from_utf8_lossy(&ready.stderr), s.kubectl_ok(&["get", "pods", "-o", "wide"]), agent_log());
    let ip = |p: &str| s.kubectl_ok(&["get", "pod", p, "-o", "jsonpath={.status.podIP}"]);
    let (near_ip, far_ip) = (ip("near"), ip("far"));
    assert!(near_ip.starts_with("10.42.21") && far_ip.starts_with("10.42.21") && near_ip.rsplit_once('.').unwrap().0 != far_ip.rsplit_once('.').unwrap().0, "{near_ip} {far_ip}: not in two node CIDRs");

    // The host-gw route the near kube-proxy installed: the far pod CIDR through the far host.
    let route = Command::new("ip").args(["route", "get", &far_ip]).output().unwrap();
    let route = String::from_utf8_lossy(&route.stdout).to_string();
    assert!(route.contains(&format!("via {FAR_IP} dev {HOST_IF}")), "route to the far pod: {route}");

    let wget = |from: &str, url: &str| {
        let o = s.kubectl(&["exec", from, "--", "timeout", "3", "wget", "-q", "-O", "-", url]);
        o.status.success().then(|| String::from_utf8_lossy(&o.stdout).trim().to_string())
    };
    // Pod to pod across the link, both ways (exec into `far` also proves the apiserver
    // reaches the far kubelet).
    let got = wait_for("near -> far pod IP", Duration::from_secs(30), || wget("near", &format!("http://{far_ip}:8080/")));
    assert_eq!(got, "far");
    let got = wait_for("far -> near pod IP", Duration::from_secs(30), || wget("far", &format!("http://{near_ip}:8080/")));
    assert_eq!(got, "near");
    // A Service whose only endpoint is on the far node, from the near node, by name.
    let got = wait_for("near -> Service far, by name", Duration::from_secs(30), || wget("near", "http://far.default.svc.cluster.local/"));
    assert_eq!(got, "far");
    // Logs of the far pod come through the apiserver from the far kubelet.
    s.kubectl_ok(&["logs", "far"]);

    s.kubectl_ok(&["delete", "pod", "near", "far", "--grace-period=1", "--timeout=60s"]);
}
