//! Real etcd for tests: Debian's `/usr/bin/etcd` (package `etcd-server`, installed by
//! scripts/setup.sh), one or three members on free loopback ports, each with a temporary data
//! dir (on /dev/shm when there is one: etcd fsyncs every write), killed on drop.
//!
//! Also used by krust's integration tests (`#[path]`-included), so it depends on std and
//! `tempfile` only.

#![allow(dead_code)] // each test file uses a different part

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The etcd binary: `$ETCD_BIN`, else Debian's.
pub fn etcd_bin() -> PathBuf {
    std::env::var_os("ETCD_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/etcd"))
}

/// Whether etcd can be run here; prints why a test is skipped when it cannot.
pub fn etcd_available(test: &str) -> bool {
    let bin = etcd_bin();
    if bin.exists() {
        return true;
    }
    eprintln!(
        "SKIPPED {test}: {} is missing (install Debian's etcd-server: scripts/setup.sh does)",
        bin.display()
    );
    false
}

pub struct Member {
    pub name: String,
    pub client_port: u16,
    pub peer_port: u16,
    child: Option<Child>,
    log: PathBuf,
}

impl Member {
    pub fn client_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.client_port)
    }

    fn peer_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.peer_port)
    }

    pub fn alive(&self) -> bool {
        self.child.is_some()
    }

    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

pub struct EtcdCluster {
    pub members: Vec<Member>,
    _dir: tempfile::TempDir,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("finding a free port")
        .port()
}

fn temp_root() -> tempfile::TempDir {
    let shm = Path::new("/dev/shm");
    if shm.is_dir() {
        if let Ok(d) = tempfile::Builder::new()
            .prefix("krust-etcd-")
            .tempdir_in(shm)
        {
            return d;
        }
    }
    tempfile::Builder::new()
        .prefix("krust-etcd-")
        .tempdir()
        .expect("creating a temp dir")
}

impl EtcdCluster {
    /// A one-member etcd.
    pub fn single() -> EtcdCluster {
        EtcdCluster::start(1)
    }

    /// An `n`-member cluster, waited on until every member reports healthy (has a leader).
    /// A port taken by someone else in the meantime makes it try again with new ones.
    pub fn start(n: usize) -> EtcdCluster {
        let mut last = String::new();
        for _ in 0..3 {
            match EtcdCluster::try_start(n) {
                Ok(c) => return c,
                Err(e) => last = e,
            }
        }
        panic!("etcd did not start: {last}");
    }

    fn try_start(n: usize) -> Result<EtcdCluster, String> {
        let dir = temp_root();
        let mut members: Vec<Member> = (0..n)
            .map(|i| Member {
                name: format!("m{i}"),
                client_port: free_port(),
                peer_port: free_port(),
                child: None,
                log: dir.path().join(format!("m{i}.log")),
            })
            .collect();
        let initial_cluster = members
            .iter()
            .map(|m| format!("{}={}", m.name, m.peer_url()))
            .collect::<Vec<_>>()
            .join(",");
        for m in &mut members {
            let log = std::fs::File::create(&m.log).expect("creating etcd log");
            let child = Command::new(etcd_bin())
                .args(["--name", &m.name])
                .arg("--data-dir")
                .arg(dir.path().join(&m.name))
                .args(["--listen-client-urls", &m.client_url()])
                .args(["--advertise-client-urls", &m.client_url()])
                .args(["--listen-peer-urls", &m.peer_url()])
                .args(["--initial-advertise-peer-urls", &m.peer_url()])
                .args(["--initial-cluster", &initial_cluster])
                .args(["--initial-cluster-state", "new"])
                .args(["--initial-cluster-token", "krust-test"])
                // Quick elections (and so a ~1 s minimum lease TTL) on loopback.
                .args(["--heartbeat-interval", "50", "--election-timeout", "500"])
                .stdin(Stdio::null())
                .stdout(log.try_clone().unwrap())
                .stderr(log)
                .spawn()
                .map_err(|e| format!("starting {}: {e}", etcd_bin().display()))?;
            m.child = Some(child);
        }
        let mut cluster = EtcdCluster { members, _dir: dir };
        let deadline = Instant::now() + Duration::from_secs(30);
        for i in 0..n {
            loop {
                if let Some(status) = cluster.members[i]
                    .child
                    .as_mut()
                    .and_then(|c| c.try_wait().ok().flatten())
                {
                    cluster.members[i].child = None;
                    return Err(format!(
                        "etcd {} exited ({status}):\n{}",
                        cluster.members[i].name,
                        cluster.members[i].logs()
                    ));
                }
                if healthy(cluster.members[i].client_port) {
                    break;
                }
                if Instant::now() > deadline {
                    return Err(format!(
                        "etcd {} not healthy after 30 s:\n{}",
                        cluster.members[i].name,
                        cluster.members[i].logs()
                    ));
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        Ok(cluster)
    }

    /// Client URLs of every member (dead ones included: a client given all of them must cope).
    pub fn endpoints(&self) -> Vec<String> {
        self.members.iter().map(Member::client_url).collect()
    }

    /// The first member's client URL.
    pub fn endpoint(&self) -> String {
        self.members[0].client_url()
    }

    /// SIGKILLs member `i`.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut c) = self.members[i].child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Restarts member `i` on its data dir and ports (after [`Self::kill`]), waiting until it
    /// answers healthy again.
    pub fn restart(&mut self, i: usize) {
        self.kill(i);
        let initial_cluster = self.members.iter().map(|m| format!("{}={}", m.name, m.peer_url())).collect::<Vec<_>>().join(",");
        let m = &mut self.members[i];
        let log = std::fs::OpenOptions::new().append(true).open(&m.log).expect("opening etcd log");
        let child = Command::new(etcd_bin())
            .args(["--name", &m.name])
            .arg("--data-dir")
            .arg(self._dir.path().join(&m.name))
            .args(["--listen-client-urls", &m.client_url()])
            .args(["--advertise-client-urls", &m.client_url()])
            .args(["--listen-peer-urls", &m.peer_url()])
            .args(["--initial-advertise-peer-urls", &m.peer_url()])
            .args(["--initial-cluster", &initial_cluster])
            .args(["--initial-cluster-state", "existing"])
            .args(["--heartbeat-interval", "50", "--election-timeout", "500"])
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("restarting etcd");
        m.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        while !healthy(self.members[i].client_port) {
            assert!(Instant::now() < deadline, "etcd {} not healthy after a restart:\n{}", self.members[i].name, self.members[i].logs());
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Index of the member that is the raft leader now, from each member's `/metrics`
    /// (`etcd_server_is_leader 1`).
    pub fn leader(&self) -> Option<usize> {
        self.members.iter().position(|m| {
            m.alive()
                && http_get(m.client_port, "/metrics")
                    .is_some_and(|b| b.lines().any(|l| l.trim() == "etcd_server_is_leader 1"))
        })
    }

    pub fn logs(&self) -> String {
        self.members
            .iter()
            .map(|m| format!("--- etcd {} ---\n{}", m.name, m.logs()))
            .collect()
    }
}

impl Drop for EtcdCluster {
    fn drop(&mut self) {
        for i in 0..self.members.len() {
            self.kill(i);
        }
    }
}

fn http_get(port: u16, path: &str) -> Option<String> {
    let mut s = TcpStream::connect_timeout(
        &std::net::SocketAddr::from(([127, 0, 0, 1], port)),
        Duration::from_secs(1),
    )
    .ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    Some(out)
}

/// `/health` says `"health":"true"` once the member has a leader and serves requests.
fn healthy(port: u16) -> bool {
    http_get(port, "/health").is_some_and(|b| b.contains("\"health\":\"true\""))
}
