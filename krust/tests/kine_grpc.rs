//! `krust kine` (and `krust server --datastore-listen`) driven by Debian's `etcdctl` (v3 API):
//! the embedded datastore behind the etcd v3 gRPC API, as an etcd user sees it.

mod common;

use std::io::Write;
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::{free_port, poll, text, TestServer};
use serde_json::Value;

const READY_TIMEOUT: Duration = Duration::from_secs(30);
const WAIT: Duration = Duration::from_secs(15);

fn etcdctl_bin() -> String {
    let bin = std::env::var("ETCDCTL").unwrap_or_else(|_| "etcdctl".into());
    let found = Command::new(&bin)
        .arg("version")
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        found,
        "{bin} not found: install Debian's etcd-client (scripts/setup.sh does)"
    );
    bin
}

/// A `krust kine` child process on a free loopback port over a fresh database.
struct Kine {
    child: Child,
    endpoint: String,
    dir: tempfile::TempDir,
    log: PathBuf,
}

impl Kine {
    fn start() -> Kine {
        Kine::start_with(&[])
    }

    /// `krust kine` on loopback with extra flags (e.g. TLS).
    fn start_with(extra: &[&str]) -> Kine {
        Kine::start_on(&format!("127.0.0.1:{}", free_port()), extra)
    }

    /// `krust kine --listen ADDR` with extra flags; reached through loopback.
    fn start_on(listen: &str, extra: &[&str]) -> Kine {
        let dir = tempfile::tempdir().unwrap();
        let port = listen.rsplit_once(':').unwrap().1;
        let log = dir.path().join("kine.log");
        let log_file = std::fs::File::create(&log).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_krust"))
            .args(["kine", "--listen", listen])
            .args(extra)
            .arg("--db")
            .arg(dir.path().join("state.db"))
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(log_file.try_clone().unwrap())
            .stderr(log_file)
            .spawn()
            .expect("starting krust kine");
        let mut kine = Kine {
            child,
            endpoint: format!("127.0.0.1:{port}"),
            dir,
            log,
        };
        let ready = poll(READY_TIMEOUT, || {
            kine.logs().contains("krust kine ready") && TcpStream::connect(&kine.endpoint).is_ok()
        });
        if !ready || kine.child.try_wait().unwrap().is_some() {
            panic!("krust kine did not start:\n{}", kine.logs());
        }
        kine
    }

    fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn ctl(&self) -> Etcdctl {
        Etcdctl {
            endpoint: self.endpoint.clone(),
            dir: self.dir.path().to_path_buf(),
            tls: Vec::new(),
        }
    }
}

impl Drop for Kine {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

struct Etcdctl {
    endpoint: String,
    dir: PathBuf,
    /// `--cacert`/`--cert`/`--key` flags, if any.
    tls: Vec<String>,
}

impl Etcdctl {
    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(etcdctl_bin());
        cmd.env("ETCDCTL_API", "3")
            .arg(format!("--endpoints={}", self.endpoint))
            .args(["--command-timeout=15s", "--dial-timeout=5s"])
            .args(&self.tls)
            .args(args);
        cmd
    }

    fn run_stdin(&self, args: &[&str], input: &str) -> Output {
        let mut child = self
            .command(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("running etcdctl");
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .unwrap();
        child.wait_with_output().unwrap()
    }

    fn run(&self, args: &[&str]) -> Output {
        self.run_stdin(args, "")
    }

    /// Runs etcdctl, which must succeed; returns its stdout.
    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "etcdctl {args:?} failed:\n{}{}",
            text(&out.stdout),
            text(&out.stderr)
        );
        text(&out.stdout)
    }

    /// Runs etcdctl, which must fail; returns its stderr.
    fn fails(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            !out.status.success(),
            "etcdctl {args:?} should have failed:\n{}",
            text(&out.stdout)
        );
        text(&out.stderr)
    }

    fn json(&self, args: &[&str]) -> Value {
        let mut all = args.to_vec();
        all.extend(["-w", "json"]);
        serde_json::from_str(&self.ok(&all)).expect("etcdctl -w json output")
    }

    /// Starts a long-running etcdctl (e.g. `watch`) printing into a file.
    fn background(&self, args: &[&str]) -> Bg {
        let out = self.dir.join(format!("bg-{}.out", free_port()));
        let file = std::fs::File::create(&out).unwrap();
        let child = self
            .command(args)
            .stdin(Stdio::null())
            .stdout(file.try_clone().unwrap())
            .stderr(file)
            .spawn()
            .expect("starting etcdctl");
        Bg { child, out }
    }
}

struct Bg {
    child: Child,
    out: PathBuf,
}

impl Bg {
    fn output(&self) -> String {
        std::fs::read_to_string(&self.out).unwrap_or_default()
    }

    /// Waits until the output satisfies `done`; panics with it after [`WAIT`].
    fn wait_for(&mut self, what: &str, done: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + WAIT;
        loop {
            let out = self.output();
            if done(&out) {
                return out;
            }
            let exited = self.child.try_wait().unwrap().is_some();
            assert!(
                !exited && Instant::now() < deadline,
                "etcdctl never printed {what}:\n{out}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Bg {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn lines(s: &str) -> Vec<&str> {
    s.lines().collect()
}

fn rev(v: &Value) -> i64 {
    v["header"]["revision"].as_i64().expect("header.revision")
}

#[test]
fn put_get_and_delete() {
    let kine = Kine::start();
    let ctl = kine.ctl();
    assert_eq!(ctl.ok(&["put", "/a/1", "one"]).trim(), "OK");
    let r1 = rev(&ctl.json(&["get", "/a/1"]));
    ctl.ok(&["put", "/a/2", "two"]);
    ctl.ok(&["put", "/b", "bee"]);
    assert_eq!(lines(&ctl.ok(&["get", "/a/1"])), ["/a/1", "one"]);
    assert_eq!(
        lines(&ctl.ok(&["get", "/a", "--prefix"])),
        ["/a/1", "one", "/a/2", "two"]
    );
    assert_eq!(
        lines(&ctl.ok(&["get", "/a/2", "--from-key", "--keys-only"]))
            .into_iter()
            .filter(|l| !l.is_empty())
            .collect::<Vec<_>>(),
        ["/a/2", "/b"]
    );
    assert_eq!(
        lines(&ctl.ok(&["get", "/a/1", "/b"])),
        ["/a/1", "one", "/a/2", "two"]
    );
    assert_eq!(
        lines(&ctl.ok(&["put", "/a/1", "uno", "--prev-kv"])),
        ["OK", "/a/1", "one"]
    );
    assert_eq!(
        lines(&ctl.ok(&["get", "/a/1", &format!("--rev={r1}")])),
        ["/a/1", "one"]
    );

    let j = ctl.json(&["get", "/a", "--prefix", "--limit=1"]);
    assert_eq!(j["kvs"].as_array().unwrap().len(), 1);
    assert_eq!(j["more"], true);
    assert_eq!(j["count"], 2);
    let kv = &ctl.json(&["get", "/a/1"])["kvs"][0];
    assert_eq!(kv["create_revision"].as_i64(), Some(r1));
    assert_eq!(kv["version"], 2);
    assert!(kv["mod_revision"].as_i64().unwrap() > r1);
    assert!(rev(&ctl.json(&["get", "/a/1"])) >= 4);

    assert_eq!(ctl.ok(&["del", "/b"]).trim(), "1");
    assert_eq!(ctl.ok(&["del", "/b"]).trim(), "0");
    assert_eq!(ctl.ok(&["del", "/a", "--prefix"]).trim(), "2");
    assert_eq!(ctl.ok(&["get", "", "--prefix"]), "");
}

#[test]
fn watch_prefix_and_from_the_past() {
    let kine = Kine::start();
    let ctl = kine.ctl();
    ctl.ok(&["put", "/a/0", "zero"]);
    let start = rev(&ctl.json(&["get", "/a/0"]));
    let mut w = ctl.background(&["watch", "--prefix", "/a", "--prev-kv"]);
    // etcdctl prints nothing on creation: write until the first event shows up.
    let ready = poll(WAIT, || {
        ctl.ok(&["put", "/a/probe", "p"]);
        w.output().contains("/a/probe")
    });
    assert!(ready, "watch saw nothing:\n{}", w.output());
    ctl.ok(&["put", "/a/1", "x"]);
    ctl.ok(&["put", "/zzz", "outside"]);
    ctl.ok(&["put", "/a/1", "y"]);
    ctl.ok(&["del", "/a/1"]);
    let out = w.wait_for("the delete", |o| o.contains("DELETE"));
    let tail: Vec<&str> = out.lines().skip_while(|l| *l != "/a/1").collect();
    // PUT x; PUT (prev x) y; DELETE (prev y)
    assert_eq!(
        tail,
        ["/a/1", "x", "PUT", "/a/1", "x", "/a/1", "y", "DELETE", "/a/1", "y", "/a/1", ""],
        "{out}"
    );
    assert!(!out.contains("/zzz"), "{out}");

    // --rev from the past replays history.
    let mut past = ctl.background(&["watch", "/a/0", &format!("--rev={start}")]);
    past.wait_for("the replayed put", |o| o.contains("zero"));
}

#[test]
fn txn_compares_from_stdin() {
    let kine = Kine::start();
    let ctl = kine.ctl();
    let create = "create(\"/t\") = \"0\"\n\nput /t first\n\nget /t\n\n";
    let out = ctl.run_stdin(&["txn"], create);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(lines(&text(&out.stdout)), ["SUCCESS", "", "OK"]);
    let out = ctl.run_stdin(&["txn"], create);
    assert_eq!(lines(&text(&out.stdout)), ["FAILURE", "", "/t", "first"]);

    let m = ctl.json(&["get", "/t"])["kvs"][0]["mod_revision"]
        .as_i64()
        .unwrap();
    let update = format!(
        "mod(\"/t\") = \"{m}\"\nvalue(\"/t\") = \"first\"\nversion(\"/t\") = \"1\"\n\nput /t second\n\nget /t\n\n"
    );
    let out = ctl.run_stdin(&["txn"], &update);
    assert_eq!(
        lines(&text(&out.stdout)),
        ["SUCCESS", "", "OK"],
        "{}",
        text(&out.stderr)
    );
    // The same compare is stale now: the failure branch reads the current value.
    let out = ctl.run_stdin(&["txn"], &update);
    assert_eq!(lines(&text(&out.stdout)), ["FAILURE", "", "/t", "second"]);

    let del = "version(\"/t\") > \"1\"\n\ndel /t\n\n\n";
    let out = ctl.run_stdin(&["txn"], del);
    assert_eq!(
        lines(&text(&out.stdout)),
        ["SUCCESS", "", "1"],
        "{}",
        text(&out.stderr)
    );
    assert_eq!(ctl.ok(&["get", "/t"]), "");

    // More than one key: refused, naming what is missing.
    let multi = "mod(\"/t\") = \"0\"\n\nput /t a\nput /u b\n\n\n";
    let out = ctl.run_stdin(&["txn"], multi);
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(
        err.contains("Unimplemented") && err.contains("more than one key"),
        "{err}"
    );
}

#[test]
fn leases() {
    let kine = Kine::start();
    let ctl = kine.ctl();
    let granted = ctl.ok(&["lease", "grant", "60"]);
    // "lease 0000000000000001 granted with TTL(60s)"
    let id = granted
        .split_whitespace()
        .nth(1)
        .expect("lease id")
        .to_owned();
    assert!(granted.contains("TTL(60s)"), "{granted}");
    ctl.ok(&["put", "/l", "v", &format!("--lease={id}")]);
    let ttl = ctl.ok(&["lease", "timetolive", &id, "--keys"]);
    assert!(
        ttl.contains("granted with TTL(60s)") && ttl.contains("attached keys([/l])"),
        "{ttl}"
    );
    let ka = ctl.ok(&["lease", "keep-alive", "--once", &id]);
    assert!(ka.contains("keepalived with TTL(60)"), "{ka}");
    assert!(ctl.ok(&["lease", "list"]).contains(&id));
    assert!(ctl.ok(&["lease", "revoke", &id]).contains("revoked"));
    assert_eq!(ctl.ok(&["get", "/l"]), "");
    assert!(ctl
        .ok(&["lease", "timetolive", &id])
        .contains("already expired"));
    let err = ctl.fails(&["lease", "revoke", &id]);
    assert!(err.contains("requested lease not found"), "{err}");
}

#[test]
fn compaction_and_status() {
    let kine = Kine::start();
    let ctl = kine.ctl();
    for v in ["1", "2", "3", "4"] {
        ctl.ok(&["put", "/c", v]);
    }
    let current = rev(&ctl.json(&["get", "/c"]));
    assert_eq!(
        ctl.ok(&["compaction", &current.to_string()]).trim(),
        format!("compacted revision {current}")
    );
    let err = ctl.fails(&["get", "/c", &format!("--rev={}", current - 2)]);
    assert!(
        err.contains("required revision has been compacted"),
        "{err}"
    );
    assert_eq!(
        lines(&ctl.ok(&["get", "/c", &format!("--rev={current}")])),
        ["/c", "4"]
    );
    let err = ctl.fails(&["compaction", &(current - 1).to_string()]);
    assert!(
        err.contains("required revision has been compacted"),
        "{err}"
    );
    let mut w = ctl.background(&["watch", "/c", "--rev=1"]);
    w.wait_for("the cancel", |o| {
        o.contains("required revision has been compacted")
    });

    let st = ctl.json(&["endpoint", "status"]);
    let st = &st[0]["Status"];
    assert!(st["dbSize"].as_i64().unwrap() > 0, "{st}");
    assert_eq!(st["leader"], st["header"]["member_id"], "{st}");
    assert_eq!(rev(st), current);
    let table = ctl.ok(&["endpoint", "status", "-w", "table"]);
    assert!(table.contains("3.5.0"), "{table}");
    let health = ctl.run(&["endpoint", "health"]);
    // etcdctl 3.4 prints the health line on stderr.
    let said = format!("{}{}", text(&health.stdout), text(&health.stderr));
    assert!(
        health.status.success() && said.contains("is healthy"),
        "{said}"
    );
    let members = ctl.ok(&["member", "list"]);
    assert!(
        members.contains(&format!("http://{}", kine.endpoint)),
        "{members}"
    );
    assert!(kine.logs().contains("etcd v3 gRPC API ready"));
}

#[test]
fn server_serves_its_datastore_to_etcdctl() {
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let server = TestServer::start_with(&["--datastore-listen", &addr]);
    let ctl = Etcdctl {
        endpoint: addr.clone(),
        dir: server.data_dir().to_path_buf(),
        tls: Vec::new(),
    };
    assert!(
        server
            .logs()
            .contains(&format!("Datastore etcd v3 API listening on http://{addr}")),
        "{}",
        server.logs()
    );
    // What kubectl creates is visible through etcdctl, under kine's /registry layout.
    let out = server.kubectl(&["create", "namespace", "via-kubectl"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let keys = ctl.ok(&["get", "/registry/namespaces/", "--prefix", "--keys-only"]);
    assert!(keys.contains("/registry/namespaces/via-kubectl"), "{keys}");
}

/// A CA, a serving certificate for 127.0.0.1 and client certificates, as PEM files.
struct Pki {
    dir: tempfile::TempDir,
}

impl Pki {
    fn new() -> Pki {
        let pki = Pki { dir: tempfile::tempdir().unwrap() };
        let ca = pki.ca("ca");
        let rogue = pki.ca("rogue-ca");
        pki.leaf("server", &ca, rcgen::ExtendedKeyUsagePurpose::ServerAuth);
        pki.leaf("client", &ca, rcgen::ExtendedKeyUsagePurpose::ClientAuth);
        pki.leaf("rogue", &rogue, rcgen::ExtendedKeyUsagePurpose::ClientAuth);
        pki
    }

    fn path(&self, file: &str) -> String {
        self.dir.path().join(file).display().to_string()
    }

    fn ca(&self, name: &str) -> rcgen::Issuer<'static, rcgen::KeyPair> {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name.push(rcgen::DnType::CommonName, name);
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let key = rcgen::KeyPair::generate().unwrap();
        std::fs::write(self.path(&format!("{name}.crt")), params.self_signed(&key).unwrap().pem()).unwrap();
        rcgen::Issuer::new(params, key)
    }

    fn leaf(&self, name: &str, ca: &rcgen::Issuer<'static, rcgen::KeyPair>, usage: rcgen::ExtendedKeyUsagePurpose) {
        let mut params = rcgen::CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()]).unwrap();
        params.distinguished_name.push(rcgen::DnType::CommonName, name);
        params.extended_key_usages = vec![usage];
        let key = rcgen::KeyPair::generate().unwrap();
        std::fs::write(self.path(&format!("{name}.crt")), params.signed_by(&key, ca).unwrap().pem()).unwrap();
        std::fs::write(self.path(&format!("{name}.key")), key.serialize_pem()).unwrap();
    }

    /// etcdctl's TLS flags, presenting the client certificate `client` (or none).
    fn etcdctl_flags(&self, client: Option<&str>) -> Vec<String> {
        let mut flags = vec![format!("--cacert={}", self.path("ca.crt"))];
        if let Some(c) = client {
            flags.push(format!("--cert={}", self.path(&format!("{c}.crt"))));
            flags.push(format!("--key={}", self.path(&format!("{c}.key"))));
        }
        flags
    }
}

/// Only clients with a certificate from the client CA get through: no certificate, one
/// from another CA, or plain HTTP/2 are all turned away.
fn assert_only_certified_clients(endpoint: &str, dir: &std::path::Path, pki: &Pki) {
    let ctl = |client: Option<&str>, scheme: &str| Etcdctl {
        endpoint: format!("{scheme}://{endpoint}"),
        dir: dir.to_path_buf(),
        tls: if scheme == "https" { pki.etcdctl_flags(client) } else { Vec::new() },
    };
    let good = ctl(Some("client"), "https");
    good.ok(&["put", "/tls/a", "1"]);
    assert_eq!(lines(&good.ok(&["get", "/tls/a", "--print-value-only"])), ["1"]);
    for (who, bad) in [("no certificate", ctl(None, "https")), ("another CA", ctl(Some("rogue"), "https")), ("plain HTTP/2", ctl(None, "http"))] {
        let out = bad.run(&["get", "/tls/a", "--dial-timeout=2s", "--command-timeout=3s"]);
        assert!(!out.status.success(), "{who}: {}", text(&out.stdout));
        assert!(!text(&out.stdout).contains('1'), "{who}: {}", text(&out.stdout));
    }
}

#[test]
fn kine_serves_tls_and_requires_client_certificates() {
    let pki = Pki::new();
    let kine = Kine::start_with(&[
        "--listen-cert", &pki.path("server.crt"),
        "--listen-key", &pki.path("server.key"),
        "--listen-client-ca", &pki.path("ca.crt"),
    ]);
    assert!(kine.logs().contains(&format!("etcd v3 API on https://{}", kine.endpoint)), "{}", kine.logs());
    assert_only_certified_clients(&kine.endpoint, kine.dir.path(), &pki);
}

#[test]
fn server_face_serves_tls_and_requires_client_certificates() {
    let pki = Pki::new();
    let addr = format!("127.0.0.1:{}", free_port());
    let server = TestServer::start_with(&[
        "--datastore-listen", &addr,
        "--datastore-listen-cert", &pki.path("server.crt"),
        "--datastore-listen-key", &pki.path("server.key"),
        "--datastore-listen-client-ca", &pki.path("ca.crt"),
    ]);
    assert!(server.logs().contains(&format!("Datastore etcd v3 API listening on https://{addr}")), "{}", server.logs());
    assert_only_certified_clients(&addr, server.data_dir(), &pki);
    // What the API stores is there for the certified client.
    let ctl = Etcdctl { endpoint: format!("https://{addr}"), dir: server.data_dir().to_path_buf(), tls: pki.etcdctl_flags(Some("client")) };
    let keys = ctl.ok(&["get", "/registry/namespaces/", "--prefix", "--keys-only"]);
    assert!(keys.contains("/registry/namespaces/kube-system"), "{keys}");
}

/// Runs `krust ARGS` that must exit by itself within 30 s; returns (success, stderr).
fn run_to_exit(args: &[&str]) -> (bool, String) {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_krust"))
        .args(args)
        .arg("--data-dir")
        .arg(dir.path())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let exited = poll(Duration::from_secs(30), || child.try_wait().unwrap().is_some());
    if !exited {
        let _ = child.kill();
    }
    let out = child.wait_with_output().unwrap();
    assert!(exited, "krust {args:?} kept running:\n{}", text(&out.stderr));
    (out.status.success(), text(&out.stderr))
}

#[test]
fn plain_non_loopback_face_is_refused_unless_insecure() {
    let any = format!("0.0.0.0:{}", free_port());
    let port = free_port().to_string();
    let (ok, err) = run_to_exit(&["server", "--disable-agent", "--bind-address", "127.0.0.1", "--https-listen-port", &port, "--datastore-listen", &any]);
    assert!(!ok);
    assert!(err.contains(&format!("refusing to serve the etcd v3 API on {any} without TLS")) && err.contains("--datastore-listen-insecure"), "{err}");
    let (ok, err) = run_to_exit(&["kine", "--listen", &any]);
    assert!(!ok);
    assert!(err.contains("without TLS") && err.contains("--listen-insecure"), "{err}");
    // A key without its certificate is a usage error.
    let (ok, err) = run_to_exit(&["kine", "--listen-key", "/nonexistent.key"]);
    assert!(!ok && err.contains("--listen-cert"), "{err}");
    // Told --listen-insecure, kine serves plain HTTP/2 on every address.
    let kine = Kine::start_on(&any, &["--listen-insecure"]);
    assert!(kine.logs().contains("without TLS"), "{}", kine.logs());
}
