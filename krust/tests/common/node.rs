//! What tests that run real pods share: the prerequisites check, a local registry with the
//! busybox image, and clean-up of a test node's bridge and nftables table.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use super::free_port;

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Why this machine cannot run pods, if it cannot (the test then prints SKIPPED).
pub fn missing_prerequisite() -> Option<String> {
    let root = std::fs::read_to_string("/proc/self/status")
        .map(|s| s.lines().any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(1) == Some("0")))
        .unwrap_or(false);
    if !root {
        return Some("not running as root".into());
    }
    let tools = ["/usr/lib/cni/bridge", "/usr/lib/cni/host-local", "/usr/lib/cni/loopback", "/usr/sbin/nft", "/usr/bin/docker-registry", "/usr/bin/umoci", "/usr/bin/skopeo", "/bin/busybox"];
    tools.iter().find(|t| !Path::new(t).exists()).map(|t| format!("{t} is missing (scripts/setup.sh installs it)"))
}

/// A Debian `docker-registry` on loopback holding the busybox image; stopped on drop.
pub struct Registry {
    pub port: u16,
    dir: tempfile::TempDir,
}

impl Registry {
    pub fn start() -> Registry {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        for args in [vec!["start"], vec!["push-busybox"]] {
            let out = Command::new("bash")
                .arg(repo().join("scripts/registry.sh"))
                .args(&args)
                .args(["--port", &port.to_string(), "--dir"])
                .arg(dir.path())
                .output()
                .unwrap();
            assert!(out.status.success(), "registry.sh {args:?}: {}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        }
        Registry { port, dir }
    }

    pub fn image(&self) -> String {
        format!("127.0.0.1:{}/library/busybox:1.35", self.port)
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = Command::new("bash")
            .arg(repo().join("scripts/registry.sh"))
            .args(["stop", "--port", &self.port.to_string(), "--dir"])
            .arg(self.dir.path())
            .output();
    }
}

/// A test node's network, removed when the test ends: bridge `krtN` (CNI DEL leaves
/// bridges in place) and the kube-proxy table of node `node-N`.
pub struct Bridge(pub String);

impl Drop for Bridge {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["link", "del", &self.0]).output();
        if let Some(n) = self.0.strip_prefix("krt") {
            agent::proxy::Proxy::clean(&format!("node-{n}"));
        }
    }
}

pub fn wait_for<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(start.elapsed() < timeout, "timed out after {timeout:?} waiting for {what}");
        std::thread::sleep(Duration::from_millis(250));
    }
}
