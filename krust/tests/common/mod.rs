//! A real `krust server` for integration tests: started from the built binary on a free
//! loopback port with its own data dir, waited on until `/readyz` answers, stopped on drop.
//!
//! Clients are the real tools a person uses (`curl`, `kubectl`), so a test exercises the
//! same TLS, certificates and kubeconfig that a user gets.

#![allow(dead_code)] // each test file uses a different part of the harness

pub mod node;

use std::io::Write;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use base64::engine::general_purpose::STANDARD;
use base64::Engine;

/// Put among the extra flags to run the server's node agent (tests run the control plane
/// only by default: an agent needs root, CNI and a registry).
pub const WITH_AGENT: &str = "--with-agent";

/// How long a server may take to answer `/readyz`; generous for a loaded 2-core CI machine.
const READY_TIMEOUT: Duration = Duration::from_secs(60);

pub struct TestServer {
    child: Option<Child>,
    /// Runs a node agent: stopped gracefully on drop, so `--clean` removes its pods.
    with_agent: bool,
    port: u16,
    data_dir: PathBuf,
    log: PathBuf,
    /// Owns the data dir when the test did not bring its own; removed on drop.
    _tempdir: Option<tempfile::TempDir>,
}

impl TestServer {
    /// A server with a fresh data dir, on a free port.
    pub fn start() -> TestServer {
        TestServer::start_with(&[])
    }

    /// A server with a fresh data dir, on a free port, with extra `krust server` flags.
    /// Another process may take the "free" port first: then it tries another one.
    pub fn start_with(extra_args: &[&str]) -> TestServer {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let dir = tempfile::tempdir().expect("creating a temp data dir");
            match TestServer::try_start_in(dir.path(), free_port(), extra_args) {
                Ok(mut server) => {
                    server._tempdir = Some(dir);
                    return server;
                }
                Err(e) if attempt < 3 && e.contains("Address already in use") => continue,
                Err(e) => panic!("{e}"),
            }
        }
    }

    /// A server on `data_dir` and `port` with extra `krust server` flags; the caller keeps
    /// the data dir (e.g. to restart on it).
    pub fn start_in(data_dir: &Path, port: u16, extra_args: &[&str]) -> TestServer {
        TestServer::try_start_in(data_dir, port, extra_args).unwrap_or_else(|e| panic!("{e}"))
    }

    fn try_start_in(data_dir: &Path, port: u16, extra_args: &[&str]) -> Result<TestServer, String> {
        let log = data_dir.join(format!("krust-test-{port}.log"));
        std::fs::create_dir_all(data_dir).expect("creating data dir");
        let log_file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .expect("opening log");
        let with_agent = extra_args.contains(&WITH_AGENT);
        let extra_args: Vec<&str> = extra_args.iter().copied().filter(|a| *a != WITH_AGENT).collect();
        // Loopback unless the test names its own address.
        let bind = (!extra_args.contains(&"--bind-address")).then_some(["--bind-address", "127.0.0.1"]);
        let child = Command::new(env!("CARGO_BIN_EXE_krust"))
            .arg("server")
            .args(bind.iter().flatten())
            // With an agent, `--clean`: a graceful stop (drop) kills the pods it started.
            .args(if with_agent { Some("--clean") } else { Some("--disable-agent") })
            .args(["--https-listen-port", &port.to_string()])
            .arg("--data-dir")
            .arg(data_dir)
            .args(&extra_args)
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()),
            )
            .stdin(Stdio::null())
            .stdout(log_file.try_clone().expect("cloning log handle"))
            .stderr(log_file)
            .spawn()
            .expect("starting krust server");
        let mut server = TestServer {
            child: Some(child),
            with_agent,
            port,
            data_dir: data_dir.to_path_buf(),
            log,
            _tempdir: None,
        };
        server.wait_ready()?;
        Ok(server)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn url(&self) -> String {
        format!("https://127.0.0.1:{}", self.port)
    }

    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// The admin kubeconfig the server wrote.
    pub fn kubeconfig(&self) -> PathBuf {
        self.data_dir.join("server/cred/admin.kubeconfig")
    }

    /// The CA that signs the serving certificate.
    pub fn server_ca(&self) -> PathBuf {
        self.data_dir.join("server/tls/server-ca.crt")
    }

    /// Everything the server logged so far.
    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// `kubectl` as the admin user against this server, with its own discovery cache (a
    /// reused port must not see another server's cached discovery).
    fn kubectl_command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(kubectl_bin());
        cmd.arg("--kubeconfig")
            .arg(self.kubeconfig())
            .arg("--cache-dir")
            .arg(self.data_dir.join("kubectl-cache"))
            .args(["--request-timeout", "20s"])
            .args(args);
        cmd
    }

    /// Runs `kubectl` as the admin user against this server.
    pub fn kubectl(&self, args: &[&str]) -> Output {
        self.kubectl_command(args)
            .stdin(Stdio::null())
            .output()
            .expect("running kubectl")
    }

    /// Runs `kubectl` with `input` on its stdin (e.g. `apply -f -`).
    pub fn kubectl_stdin(&self, args: &[&str], input: &str) -> Output {
        let mut child = self
            .kubectl_command(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("running kubectl");
        let mut stdin = child.stdin.take().expect("kubectl stdin");
        stdin
            .write_all(input.as_bytes())
            .expect("writing kubectl stdin");
        drop(stdin);
        child.wait_with_output().expect("waiting for kubectl")
    }

    /// `kubectl` with stdin that must succeed; returns its stdout.
    pub fn kubectl_stdin_ok(&self, args: &[&str], input: &str) -> String {
        let out = self.kubectl_stdin(args, input);
        assert!(
            out.status.success(),
            "kubectl {args:?} failed:\n{}\n--- input ---\n{input}\n--- server log ---\n{}",
            text(&out.stderr),
            self.logs()
        );
        text(&out.stdout)
    }

    /// Starts a long-running `kubectl` (e.g. `get -w`) writing stdout and stderr to `out`.
    /// The caller kills it (see [`Background`]).
    pub fn kubectl_background(&self, args: &[&str], out: &Path) -> Background {
        let file = std::fs::File::create(out).expect("creating kubectl output file");
        let child = self
            .kubectl_command(args)
            .stdin(Stdio::null())
            .stdout(file.try_clone().expect("cloning output handle"))
            .stderr(file)
            .spawn()
            .expect("starting kubectl");
        Background {
            child,
            out: out.to_path_buf(),
        }
    }

    /// Client certificate, key and server CA taken from the admin kubeconfig, written once
    /// to files (for `curl`). Returns (cert, key, ca).
    pub fn admin_cert_files(&self) -> (PathBuf, PathBuf, PathBuf) {
        let dir = self.data_dir.join("test-client");
        let paths = (
            dir.join("admin.crt"),
            dir.join("admin.key"),
            dir.join("ca.crt"),
        );
        if paths.2.exists() {
            return paths;
        }
        std::fs::create_dir_all(&dir).expect("creating client cert dir");
        let config: serde_yaml::Value = serde_yaml::from_str(
            &std::fs::read_to_string(self.kubeconfig()).expect("reading kubeconfig"),
        )
        .expect("kubeconfig is YAML");
        let field = |list: &str, item: &str, field: &str| {
            let b64 = config[list][0][item][field].as_str().unwrap_or_default();
            STANDARD.decode(b64).expect("base64 in kubeconfig")
        };
        // CA last: its presence says all three are written.
        std::fs::write(&paths.0, field("users", "user", "client-certificate-data")).unwrap();
        std::fs::write(&paths.1, field("users", "user", "client-key-data")).unwrap();
        std::fs::write(
            &paths.2,
            field("clusters", "cluster", "certificate-authority-data"),
        )
        .unwrap();
        paths
    }

    /// `curl` as the admin user (client certificate from the kubeconfig): `method` on
    /// `path` with extra headers and an optional body. Returns (HTTP status, body).
    pub fn curl_admin(
        &self,
        method: &str,
        path: &str,
        headers: &[&str],
        body: Option<&[u8]>,
    ) -> (u16, String) {
        let (cert, key, ca) = self.admin_cert_files();
        let mut cmd = Command::new("curl");
        cmd.args([
            "-sS",
            "--max-time",
            "30",
            "-w",
            "\n%{http_code}",
            "-X",
            method,
        ])
        .arg("--cert")
        .arg(cert)
        .arg("--key")
        .arg(key)
        .arg("--cacert")
        .arg(ca);
        for h in headers {
            cmd.args(["-H", h]);
        }
        // The body goes through a file: a 3 MiB argument would exceed the kernel's limit.
        let body_file = body.map(|b| {
            let mut f = tempfile::NamedTempFile::new().expect("body temp file");
            f.write_all(b).expect("writing body");
            f
        });
        if let Some(f) = &body_file {
            cmd.arg("--data-binary")
                .arg(format!("@{}", f.path().display()));
        }
        let out = cmd
            .arg(format!("{}{path}", self.url()))
            .output()
            .expect("running curl");
        assert!(
            out.status.success(),
            "curl {method} {path} failed ({}): {}\n--- server log ---\n{}",
            out.status,
            text(&out.stderr),
            self.logs()
        );
        split_status(&text(&out.stdout))
    }

    /// `kubectl` that must succeed; returns its stdout.
    pub fn kubectl_ok(&self, args: &[&str]) -> String {
        let out = self.kubectl(args);
        assert!(
            out.status.success(),
            "kubectl {args:?} failed:\n{}\n--- server log ---\n{}",
            text(&out.stderr),
            self.logs()
        );
        text(&out.stdout)
    }

    /// `curl` against `path` without a client certificate, trusting the server CA.
    /// Returns (HTTP status, body).
    pub fn curl_anonymous(&self, path: &str) -> (u16, String) {
        let out = Command::new("curl")
            .args([
                "-sS",
                "--max-time",
                "10",
                "-w",
                "\n%{http_code}",
                "--cacert",
            ])
            .arg(self.server_ca())
            .arg(format!("{}{path}", self.url()))
            .output()
            .expect("running curl");
        assert!(
            out.status.success(),
            "curl {path} failed ({}): {}\n--- server log ---\n{}",
            out.status,
            text(&out.stderr),
            self.logs()
        );
        split_status(&text(&out.stdout))
    }

    /// Stops the server with SIGTERM, as a service manager would, and waits for it to exit.
    /// Returns whether it exited cleanly.
    pub fn stop(&mut self) -> bool {
        let Some(mut child) = self.child.take() else {
            return true;
        };
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = child.try_wait() {
                return status.success();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = child.kill();
        let _ = child.wait();
        false
    }

    /// Waits until this server logged that it is ready (so it bound its port: `/readyz` alone
    /// could be answered by another test's server that got the same port) and `/readyz`
    /// answers.
    fn wait_ready(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + READY_TIMEOUT;
        let ready_line = "krust server ready in";
        loop {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                self.child = None;
                return Err(format!(
                    "krust server exited early ({status}):\n{}",
                    self.logs()
                ));
            }
            if self.logs().contains(&ready_line) && self.readyz() {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "krust server not ready after {READY_TIMEOUT:?}:\n{}",
                    self.logs()
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn readyz(&self) -> bool {
        let out = Command::new("curl")
            .args(["-sk", "--max-time", "2"])
            .arg(format!("{}/readyz", self.url()))
            .output();
        matches!(out, Ok(out) if out.status.success() && text(&out.stdout).trim() == "ok")
    }
}

/// A background `kubectl`, killed on drop.
pub struct Background {
    child: Child,
    out: PathBuf,
}

impl Background {
    /// What it printed so far.
    pub fn output(&self) -> String {
        std::fs::read_to_string(&self.out).unwrap_or_default()
    }

    /// Waits until `done(output)` holds; panics with the output after `timeout`.
    pub fn wait_for(
        &mut self,
        what: &str,
        timeout: Duration,
        done: impl Fn(&str) -> bool,
    ) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let out = self.output();
            if done(&out) {
                return out;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                // Exited: one last read, it may have printed just before exiting.
                let out = self.output();
                assert!(
                    done(&out),
                    "kubectl exited ({status}) before {what}:\n{out}"
                );
                return out;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}:\n{out}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Polls `cond` every 100 ms until it holds or `timeout` passes; returns whether it held.
pub fn poll(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if self.with_agent {
            // SIGTERM: `--clean` kills this node's containers (a CPU-burning test pod would
            // otherwise run on after the test); SIGKILL after 20 s.
            self.stop();
        }
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A loopback port nobody listens on now. (It could be taken before the server binds it;
/// on a test machine that race is rare enough.)
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("finding a free port")
        .port()
}

pub fn kubectl_bin() -> String {
    // The machine's /usr/bin/kubectl dispatches to a client matching the server's minor
    // version; the target is kubectl 1.32, so pin it where the base image has it.
    const PINNED: &str = "/usr/lib/google-cloud-sdk/bin/kubectl.1.32";
    std::env::var("KUBECTL").unwrap_or_else(|_| {
        if std::path::Path::new(PINNED).exists() {
            PINNED.into()
        } else {
            "kubectl".into()
        }
    })
}

/// `kubectl ARGS -o jsonpath=PATH` as the admin, its output trimmed ("" when kubectl fails).
pub fn jsonpath(server: &TestServer, args: &[&str], path: &str) -> String {
    let mut a: Vec<&str> = args.to_vec();
    let p = format!("jsonpath={path}");
    a.extend(["-o", &p]);
    text(&server.kubectl(&a).stdout).trim().to_string()
}

pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Splits curl's `body\nSTATUS` output (from `-w "\n%{http_code}"`).
pub fn split_status(out: &str) -> (u16, String) {
    let (body, code) = out.rsplit_once('\n').unwrap_or(("", out));
    (code.trim().parse().unwrap_or(0), body.to_string())
}
