//! A real `krust server` for integration tests: started from the built binary on a free
//! loopback port with its own data dir, waited on until `/readyz` answers, stopped on drop.
//!
//! Clients are the real tools a person uses (`curl`, `kubectl`), so a test exercises the
//! same TLS, certificates and kubeconfig that a user gets.

#![allow(dead_code)] // each test file uses a different part of the harness

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// How long a server may take to answer `/readyz`; generous for a loaded 2-core CI machine.
const READY_TIMEOUT: Duration = Duration::from_secs(60);

pub struct TestServer {
    child: Option<Child>,
    port: u16,
    data_dir: PathBuf,
    log: PathBuf,
    /// Owns the data dir when the test did not bring its own; removed on drop.
    _tempdir: Option<tempfile::TempDir>,
}

impl TestServer {
    /// A server with a fresh data dir, on a free port.
    pub fn start() -> TestServer {
        let dir = tempfile::tempdir().expect("creating a temp data dir");
        let mut server = TestServer::start_in(dir.path(), free_port(), &[]);
        server._tempdir = Some(dir);
        server
    }

    /// A server on `data_dir` and `port` with extra `krust server` flags; the caller keeps
    /// the data dir (e.g. to restart on it).
    pub fn start_in(data_dir: &Path, port: u16, extra_args: &[&str]) -> TestServer {
        let log = data_dir.join(format!("krust-test-{port}.log"));
        std::fs::create_dir_all(data_dir).expect("creating data dir");
        let log_file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .expect("opening log");
        let child = Command::new(env!("CARGO_BIN_EXE_krust"))
            .args(["server", "--bind-address", "127.0.0.1", "--disable-agent"])
            .args(["--https-listen-port", &port.to_string()])
            .arg("--data-dir")
            .arg(data_dir)
            .args(extra_args)
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
            port,
            data_dir: data_dir.to_path_buf(),
            log,
            _tempdir: None,
        };
        server.wait_ready();
        server
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

    /// Runs `kubectl` as the admin user against this server.
    pub fn kubectl(&self, args: &[&str]) -> Output {
        Command::new(kubectl_bin())
            .arg("--kubeconfig")
            .arg(self.kubeconfig())
            .args(["--request-timeout", "20s"])
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("running kubectl")
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
            "curl {path} failed: {}",
            text(&out.stderr)
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

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                panic!("krust server exited early ({status}):\n{}", self.logs());
            }
            if self.readyz() {
                return;
            }
            if Instant::now() > deadline {
                panic!(
                    "krust server not ready after {READY_TIMEOUT:?}:\n{}",
                    self.logs()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
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

impl Drop for TestServer {
    fn drop(&mut self) {
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
        if std::path::Path::new(PINNED).exists() { PINNED.into() } else { "kubectl".into() }
    })
}

pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Splits curl's `body\nSTATUS` output (from `-w "\n%{http_code}"`).
fn split_status(out: &str) -> (u16, String) {
    let (body, code) = out.rsplit_once('\n').unwrap_or(("", out));
    (code.trim().parse().unwrap_or(0), body.to_string())
}
