//! `kubectl exec`, `attach` and `port-forward` end to end: a real `krust server` running its
//! agent (containers from a real registry on loopback), driven with stock kubectl 1.32, which
//! speaks WebSocket (`v5.channel.k8s.io`) for exec/attach and SPDY tunnelled in WebSocket for
//! port-forward, through the API server's pass-through proxy to the kubelet endpoint.
//!
//! Needs root, Debian's CNI plugins and the registry tools (scripts/setup.sh installs them);
//! skips with a message where the machine lacks them.

mod common;

use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{free_port, kubectl_bin, text, TestServer, WITH_AGENT};
use common::node::{missing_prerequisite, Bridge, Registry};


/// A long-running kubectl (attach, port-forward) with its output in a file; killed on drop.
struct Running {
    child: std::process::Child,
    out: PathBuf,
}

impl Running {
    fn start(s: &TestServer, args: &[&str], name: &str) -> Running {
        Running::start_env(s, args, name, ("KRUST_TEST", "1"))
    }

    fn start_env(s: &TestServer, args: &[&str], name: &str, env: (&str, &str)) -> Running {
        let out = s.data_dir().join(format!("{name}.out"));
        let file = std::fs::File::create(&out).unwrap();
        let child = kubectl(s, args).env(env.0, env.1).stdin(Stdio::null()).stdout(file.try_clone().unwrap()).stderr(file).spawn().unwrap();
        Running { child, out }
    }

    fn output(&self) -> String {
        std::fs::read_to_string(&self.out).unwrap_or_default()
    }

    fn wait_for(&mut self, what: &str, timeout: Duration, done: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let out = self.output();
            if done(&out) {
                return out;
            }
            if let Ok(Some(st)) = self.child.try_wait() {
                let out = self.output();
                assert!(done(&out), "kubectl exited ({st}) before {what}:\n{out}");
                return out;
            }
            assert!(Instant::now() < deadline, "timed out waiting for {what}:\n{out}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn kubectl(s: &TestServer, args: &[&str]) -> Command {
    let mut cmd = Command::new(kubectl_bin());
    cmd.arg("--kubeconfig").arg(s.kubeconfig()).arg("--cache-dir").arg(s.data_dir().join("kubectl-cache")).args(args);
    cmd
}

fn wait_for(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(start.elapsed() < timeout, "timed out after {timeout:?} waiting for {what}");
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// One HTTP/1.0 GET through a forwarded port; the whole response.
fn http_get(port: u16) -> String {
    let mut c = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    c.write_all(b"GET / HTTP/1.0\r\nHost: web\r\n\r\n").unwrap();
    let mut resp = String::new();
    c.read_to_string(&mut resp).unwrap();
    resp
}

#[test]
fn exec_attach_and_port_forward_with_kubectl() {
    if let Some(why) = missing_prerequisite() {
        eprintln!("SKIPPED: {why}");
        return;
    }
    let registry = Registry::start();
    let _bridge = Bridge("krt205".into());
    let s = TestServer::start_with(&[
        WITH_AGENT,
        "--node-name", "node-205",
        "--node-ip", "127.0.0.1",
        "--kubelet-port", &free_port().to_string(),
        "--cluster-cidr", "10.42.205.0/24",
        "--cni-bridge", "krt205",
    ]);
    let image = registry.image();
    wait_for("node Ready", Duration::from_secs(60), || {
        let out = s.kubectl(&["get", "node", "node-205", "-o", "jsonpath={.status.conditions[?(@.type==\"Ready\")].status}"]);
        text(&out.stdout) == "True"
    });
    let pods = format!(
        r#"
apiVersion: v1
kind: Pod
metadata: {{name: box}}
spec:
  containers: [{{name: box, image: "{image}", command: [sleep, "3600"]}}]
---
apiVersion: v1
kind: Pod
metadata: {{name: ticker}}
spec:
  containers: [{{name: ticker, image: "{image}", command: [sh, -c, "i=0; while true; do echo tick $i; echo tock $i >&2; i=$((i+1)); sleep 0.3; done"]}}]
---
apiVersion: v1
kind: Pod
metadata: {{name: web}}
spec:
  containers:
  - name: web
    image: "{image}"
    # bound to the pod's loopback only: reachable through its network namespace, not its IP
    command: [sh, -c, "mkdir /www; echo hello from web > /www/index.html; exec httpd -f -p 127.0.0.1:8080 -h /www"]
"#
    );
    s.kubectl_stdin_ok(&["apply", "-f", "-"], &pods);
    s.kubectl_ok(&["wait", "--for=condition=Ready", "pod/box", "pod/ticker", "pod/web", "--timeout=90s"]);

    // exec: output, exit codes, stdin.
    assert_eq!(s.kubectl_ok(&["exec", "box", "--", "hostname"]).trim(), "box");
    let out = s.kubectl(&["exec", "box", "--", "sh", "-c", "echo out; echo err >&2; exit 3"]);
    assert_eq!(out.status.code(), Some(3), "stdout: {} stderr: {}", text(&out.stdout), text(&out.stderr));
    assert_eq!(text(&out.stdout), "out\n");
    assert!(text(&out.stderr).contains("err\n"), "{}", text(&out.stderr));
    let out = s.kubectl_stdin(&["exec", "-i", "box", "--", "cat"], "hello\nworld\n");
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "hello\nworld\n");
    let out = s.kubectl_stdin(&["exec", "-i", "box", "--", "sh", "-c", "wc -c; exit 0"], &"x".repeat(200_000));
    assert_eq!(text(&out.stdout).trim(), "200000", "{}", text(&out.stderr));

    // The same over SPDY/3.1 (client-go's fallback when WebSocket is off): output, exit code,
    // stdin and its end.
    let spdy = |args: &[&str], input: Option<&str>| {
        let mut cmd = kubectl(&s, args);
        cmd.env("KUBECTL_REMOTE_COMMAND_WEBSOCKETS", "false").stdout(Stdio::piped()).stderr(Stdio::piped());
        cmd.stdin(if input.is_some() { Stdio::piped() } else { Stdio::null() });
        let mut child = cmd.spawn().unwrap();
        if let Some(text) = input {
            std::io::Write::write_all(&mut child.stdin.take().unwrap(), text.as_bytes()).unwrap();
        }
        child.wait_with_output().unwrap()
    };
    let out = spdy(&["exec", "box", "--", "sh", "-c", "echo out; echo err >&2; exit 3"], None);
    assert_eq!(out.status.code(), Some(3), "stdout: {} stderr: {}", text(&out.stdout), text(&out.stderr));
    assert_eq!(text(&out.stdout), "out\n");
    assert!(text(&out.stderr).contains("err\n"), "{}", text(&out.stderr));
    let out = spdy(&["exec", "-i", "box", "--", "cat"], Some("over\nspdy\n"));
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "over\nspdy\n");

    // A command that does not exist: 127, as a shell says.
    let out = s.kubectl(&["exec", "box", "--", "no-such-command"]);
    assert_eq!(out.status.code(), Some(127), "stdout: {} stderr: {}", text(&out.stdout), text(&out.stderr));
    assert!(text(&out.stderr).contains("no-such-command"), "{}", text(&out.stderr));

    // A container the pod does not have.
    let out = s.kubectl(&["exec", "box", "-c", "nope", "--", "true"]);
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("nope"), "{}", text(&out.stderr));

    // exec -it: a terminal of the container's own devpts, as stdio and controlling terminal.
    // (kubectl sends the size of its terminal, which `script` makes, as a resize)
    let cmd = format!(
        "stty cols 101 rows 31; {} --kubeconfig {} --cache-dir {} exec -it box -- sh -c 'tty; stty size; test -t 0 && echo stdin-is-a-tty; exit 5'",
        kubectl_bin(),
        s.kubeconfig().display(),
        s.data_dir().join("kubectl-cache").display()
    );
    let out = Command::new("script").args(["-qec", &cmd, "/dev/null"]).stdin(Stdio::null()).output().unwrap();
    let tty_out = text(&out.stdout);
    assert_eq!(out.status.code(), Some(5), "{tty_out}{}", text(&out.stderr));
    assert!(tty_out.contains("/dev/pts/"), "{tty_out}");
    assert!(tty_out.contains("stdin-is-a-tty"), "{tty_out}");
    assert!(tty_out.contains("31 101"), "the terminal was not resized: {tty_out}");
    // ... and over SPDY, where the size travels on its own `resize` stream.
    let out = Command::new("script").args(["-qec", &format!("export KUBECTL_REMOTE_COMMAND_WEBSOCKETS=false; {cmd}"), "/dev/null"]).stdin(Stdio::null()).output().unwrap();
    let tty_out = text(&out.stdout);
    assert_eq!(out.status.code(), Some(5), "{tty_out}{}", text(&out.stderr));
    assert!(tty_out.contains("stdin-is-a-tty") && tty_out.contains("31 101"), "{tty_out}");

    // attach: the container's output as it is printed, stdout and stderr.
    let mut attach = Running::start(&s, &["attach", "ticker"], "attach");
    let seen = attach.wait_for("ticks", Duration::from_secs(30), |o| o.matches("tick").count() >= 3 && o.contains("tock"));
    let first: Vec<u64> = seen.lines().filter_map(|l| l.strip_prefix("tick ")?.trim().parse().ok()).collect();
    assert!(first.windows(2).all(|w| w[1] == w[0] + 1), "{seen}");
    drop(attach);
    let out = s.kubectl(&["attach", "box", "-c", "nope"]);
    assert!(!out.status.success());

    // attach -i: stdin reaches a container with `stdin: true`; with stdinOnce the end of
    // kubectl's input is the end of the container's, which then finishes.
    let reader = format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: reader}}\nspec:\n  restartPolicy: Never\n  containers: [{{name: r, image: \"{image}\", stdin: true, stdinOnce: true, command: [sh, -c, \"while read l; do echo got $l; done; echo bye\"]}}]\n"
    );
    s.kubectl_stdin_ok(&["apply", "-f", "-"], &reader);
    s.kubectl_ok(&["wait", "--for=condition=Ready", "pod/reader", "--timeout=60s"]);
    let out = s.kubectl_stdin(&["attach", "-i", "reader"], "a\nb\n");
    assert_eq!(text(&out.stdout), "got a\ngot b\nbye\n", "stderr: {}", text(&out.stderr));
    wait_for("the reader to finish", Duration::from_secs(30), || {
        text(&s.kubectl(&["get", "pod", "reader", "-o", "jsonpath={.status.phase}"]).stdout) == "Succeeded"
    });

    // run -it --rm: a terminal container, typed input, removed afterwards.
    let cmd = format!(
        "{} --kubeconfig {} --cache-dir {} run tty --image={image} --restart=Never -it --rm -- sh -c 'read x; echo typed $x; tty; test -t 0 && echo stdin-is-a-tty'",
        kubectl_bin(),
        s.kubeconfig().display(),
        s.data_dir().join("kubectl-cache").display()
    );
    let mut child = Command::new("script").args(["-qec", &cmd, "/dev/null"]).stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    // Typed at once: the terminal keeps it until kubectl, attached, reads it. Stdin stays
    // open until the end (script hangs up on end of input).
    let mut typing = child.stdin.take().unwrap();
    std::io::Write::write_all(&mut typing, b"go\r").unwrap();
    let out = child.wait_with_output().unwrap();
    drop(typing);
    let tty_out = text(&out.stdout);
    assert!(tty_out.contains("typed go"), "{tty_out}{}", text(&out.stderr));
    assert!(tty_out.contains("/dev/pts/") && tty_out.contains("stdin-is-a-tty"), "{tty_out}");
    wait_for("the --rm pod to be deleted", Duration::from_secs(30), || !s.kubectl(&["get", "pod", "tty"]).status.success());

    // port-forward: to a port bound on the pod's loopback.
    let local = free_port();
    let mut pf = Running::start(&s, &["port-forward", "pod/web", &format!("{local}:8080")], "port-forward");
    pf.wait_for("port-forward to listen", Duration::from_secs(30), |o| o.contains("Forwarding from"));
    for _ in 0..3 {
        let resp = http_get(local);
        assert!(resp.starts_with("HTTP/1.") && resp.contains("hello from web"), "{resp}\n--- kubectl ---\n{}", pf.output());
    }
    // Several at once, over the one connection.
    let handles: Vec<_> = (0..4).map(|_| std::thread::spawn(move || http_get(local))).collect();
    for h in handles {
        assert!(h.join().unwrap().contains("hello from web"));
    }
    // A port nothing listens on: kubectl reports the kubelet's error.
    let local2 = free_port();
    let mut pf2 = Running::start(&s, &["port-forward", "pod/web", &format!("{local2}:9999")], "port-forward-2");
    pf2.wait_for("port-forward to listen", Duration::from_secs(30), |o| o.contains("Forwarding from"));
    if let Ok(mut c) = std::net::TcpStream::connect(("127.0.0.1", local2)) {
        c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let _ = c.write_all(b"GET / HTTP/1.0\r\n\r\n");
        let mut buf = Vec::new();
        let _ = c.read_to_end(&mut buf);
    }
    pf2.wait_for("the forwarding error", Duration::from_secs(20), |o| o.contains("error forwarding port 9999") || o.contains("connection refused"));
    drop((pf, pf2));

    // The same over plain SPDY (what kubectl falls back to when the WebSocket upgrade fails).
    let local3 = free_port();
    let mut pf3 = Running::start_env(&s, &["port-forward", "-v=4", "pod/web", &format!("{local3}:8080")], "port-forward-3", ("KUBECTL_PORT_FORWARD_WEBSOCKETS", "false"));
    pf3.wait_for("port-forward to listen", Duration::from_secs(30), |o| o.contains("Forwarding from"));
    assert!(!pf3.output().contains("tunneling_dialer"), "{}", pf3.output());
    let resp = http_get(local3);
    assert!(resp.contains("hello from web"), "{resp}\n--- kubectl ---\n{}", pf3.output());
    drop(pf3);

    s.kubectl_ok(&["delete", "pod", "box", "ticker", "web", "--grace-period=1", "--timeout=60s"]);
}
