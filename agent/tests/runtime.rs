//! Integration tests of `agent::runtime`: real namespaces, real CNI plugins, real containers
//! (busybox-static as the only image layer). They need root and the CNI plugins in /usr/lib/cni
//! (Debian: busybox-static, containernetworking-plugins); without them each test prints why it
//! is skipped and passes.

use std::io::{Read, Write};
use std::net::{IpAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use agent::runtime::{
    CniConfig, ContainerSpec, ContainerState, HelperCommand, Mount, PortMapping, Runtime,
    RuntimeError, Sandbox, SandboxSpec,
};

/// The runtime helper entry point of this test binary: the runtime re-executes the binary with
/// `__krust_runtime_helper --exact --test-threads=1` and the request in the environment; run
/// on libtest's main thread, so the helper process is single-threaded. In a normal test run
/// (no request) this test does nothing.
#[test]
fn __krust_runtime_helper() {
    agent::runtime::run_helper_if_requested();
}

fn helper_command() -> HelperCommand {
    HelperCommand {
        program: std::env::current_exe().unwrap(),
        args: [
            "__krust_runtime_helper",
            "--exact",
            "--test-threads=1",
            "--nocapture",
            "-q",
        ]
        .map(String::from)
        .to_vec(),
    }
}

const PLUGIN_DIR: &str = "/usr/lib/cni";
const BUSYBOX: &str = "/bin/busybox";
const APPLETS: &[&str] = &[
    "sh", "echo", "sleep", "cat", "hostname", "ip", "wget", "nc", "httpd", "ls", "id", "touch",
    "mkdir", "true", "false", "printf", "grep", "env", "ps", "kill", "head", "yes", "pwd",
];

fn skip_reason() -> Option<String> {
    if !nix::unistd::geteuid().is_root() {
        return Some("not root".into());
    }
    if !Path::new(PLUGIN_DIR).join("bridge").exists() {
        return Some(format!(
            "{PLUGIN_DIR}/bridge missing (apt-get install containernetworking-plugins)"
        ));
    }
    if !Path::new(BUSYBOX).exists() {
        return Some(format!(
            "{BUSYBOX} missing (apt-get install busybox-static)"
        ));
    }
    None
}

macro_rules! require_env {
    ($name:expr) => {
        if let Some(why) = skip_reason() {
            eprintln!("SKIPPED {}: {}", $name, why);
            return;
        }
    };
}

/// Builds the busybox image layer in `dir`.
fn make_layer(dir: &Path) {
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    std::fs::copy(BUSYBOX, bin.join("busybox")).unwrap();
    for a in APPLETS {
        std::os::unix::fs::symlink("busybox", bin.join(a)).unwrap();
    }
}

fn unique() -> u32 {
    static N: AtomicU32 = AtomicU32::new(0);
    let n = N.fetch_add(1, Ordering::SeqCst);
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    (std::process::id().wrapping_mul(7919) ^ t).wrapping_add(n * 104_729)
}

/// A runtime in its own directory, bridge and /24, torn down on drop (even after a failure).
struct Env {
    rt: Arc<Runtime>,
    base: PathBuf,
    bridge: String,
    subnet_octet: u8,
    layer: PathBuf,
}

/// A subscriber that writes everything to fd 2, the setup in which libcontainer's tracing in
/// its forked children would end up in the containers' stderr (their logs): the log assertions
/// below check that it does not.
fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new("trace,agent=info"))
        .with_writer(std::io::stderr)
        .try_init();
}

impl Env {
    fn new() -> Env {
        init_tracing();
        let u = unique();
        let base = PathBuf::from(format!("/tmp/krust-rt-{u:08x}"));
        std::fs::create_dir_all(&base).unwrap();
        let layer = base.join("layer");
        make_layer(&layer);
        let bridge = format!("krt{:08x}", u);
        // 10.42.100.0/24 .. 10.42.249.0/24: distinct for every Env of this process (two bridges
        // with one subnet would make the host route to the wrong one); subnets already routed on
        // this machine (someone else's bridge) are skipped
        static OCTET: AtomicU32 = AtomicU32::new(0);
        let routed = std::fs::read_to_string("/proc/net/route").unwrap_or_default();
        let mut o = 0u8;
        for _ in 0..150 {
            o = 100 + ((std::process::id() + OCTET.fetch_add(1, Ordering::SeqCst)) % 150) as u8;
            // /proc/net/route shows destinations as little-endian hex
            let dest = format!("{:02X}{:02X}{:02X}{:02X}", 0, o, 42, 10);
            if !routed
                .lines()
                .any(|l| l.split_whitespace().nth(1) == Some(dest.as_str()))
            {
                break;
            }
        }
        let cni = CniConfig {
            plugin_dir: PLUGIN_DIR.into(),
            bridge: bridge.clone(),
            pod_cidr: format!("10.42.{o}.0/24"),
            state_dir: base.join("cni"),
            mtu: None,
        };
        let rt = Runtime::new(base.join("containers"), cni)
            .expect("Runtime::new")
            .with_helper(helper_command());
        Env {
            rt: Arc::new(rt),
            base,
            bridge,
            subnet_octet: o,
            layer,
        }
    }

    fn pod_id(&self, name: &str) -> String {
        format!("{name}-{:08x}", unique())
    }

    fn sandbox_spec(&self, pod_id: &str, hostname: &str) -> SandboxSpec {
        SandboxSpec {
            pod_id: pod_id.to_string(),
            hostname: hostname.to_string(),
            host_network: false,
            port_mappings: vec![],
            dns: None,
            hosts_entries: vec![("10.42.0.99".into(), "extra-host".into())],
        }
    }

    fn container(&self, sb: &Sandbox, name: &str, script: &str) -> ContainerSpec {
        ContainerSpec {
            id: format!("{}-{name}-0", sb.pod_id),
            pod_id: sb.pod_id.clone(),
            name: name.to_string(),
            layers: vec![self.layer.clone()],
            args: vec!["sh".into(), "-c".into(), script.into()],
            env: vec!["PATH=/bin".into(), "FOO=bar".into()],
            cwd: "/".into(),
            log_path: self.base.join("logs").join(format!("{name}.log")),
            ..Default::default()
        }
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        let rt = self.rt.clone();
        let base = self.base.clone();
        let bridge = self.bridge.clone();
        // Drop may run inside the test's tokio runtime: clean up on a thread with its own.
        std::thread::spawn(move || {
            let tokio = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            tokio.block_on(async {
                for id in rt.list_containers() {
                    if let Err(e) = rt.remove_container(&id).await {
                        eprintln!("cleanup: remove_container {id}: {e}");
                    }
                }
                for pod in rt.list_sandboxes() {
                    if let Err(e) = rt.remove_sandbox(&pod).await {
                        eprintln!("cleanup: remove_sandbox {pod}: {e}");
                    }
                }
            });
            let _ = std::process::Command::new("ip")
                .args(["link", "del", &bridge])
                .stderr(std::process::Stdio::null())
                .status();
            let _ = std::fs::remove_dir_all(&base);
        })
        .join()
        .unwrap();
    }
}

async fn wait_exited(rt: &Runtime, id: &str, timeout: Duration) -> ContainerState {
    let t0 = Instant::now();
    loop {
        let st = rt.state(id).expect("container state");
        if st.is_exited() {
            return st;
        }
        assert!(
            t0.elapsed() < timeout,
            "container {id} still {st:?} after {timeout:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// (stream, tag, content) of every CRI log line; checks the timestamp format.
fn log_lines(path: &Path) -> Vec<(String, String, String)> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.lines()
        .map(|l| {
            let mut it = l.splitn(4, ' ');
            let ts = it.next().unwrap();
            chrono::DateTime::parse_from_rfc3339(ts)
                .unwrap_or_else(|e| panic!("bad timestamp {ts:?}: {e}"));
            (
                it.next().unwrap_or("").to_string(),
                it.next().unwrap_or("").to_string(),
                it.next().unwrap_or("").to_string(),
            )
        })
        .collect()
}

fn log_text(path: &Path) -> String {
    log_lines(path)
        .into_iter()
        .map(|(_, _, c)| c)
        .collect::<Vec<_>>()
        .join("\n")
}

async fn wait_log(path: &Path, needle: &str, timeout: Duration) {
    let t0 = Instant::now();
    while !log_text(path).contains(needle) {
        assert!(
            t0.elapsed() < timeout,
            "log {} never showed {needle:?}: {}",
            path.display(),
            log_text(path)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn http_get(addr: (IpAddr, u16)) -> std::io::Result<String> {
    let mut s = TcpStream::connect_timeout(&addr.into(), Duration::from_secs(2))?;
    s.set_read_timeout(Some(Duration::from_secs(3)))?;
    s.write_all(b"GET / HTTP/1.0\r\nHost: x\r\n\r\n")?;
    let mut out = String::new();
    s.read_to_string(&mut out)?;
    Ok(out)
}

/// Zombie children of this test process left by libcontainer (other tests' containers may be
/// zombies for an instant before their reaper collects them; those have exec'd and are named
/// after their program).
fn zombie_children() -> Vec<String> {
    let me = std::process::id().to_string();
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(stat) = std::fs::read_to_string(e.path().join("stat")) else {
            continue;
        };
        let Some(close) = stat.rfind(')') else {
            continue;
        };
        let f: Vec<&str> = stat[close + 1..].split_whitespace().collect();
        if f.first() == Some(&"Z") && f.get(1) == Some(&me.as_str()) && stat.contains("(youki:") {
            out.push(stat[..close + 1].to_string());
        }
    }
    out
}

fn exited(st: &ContainerState) -> (i32, Option<i32>, String) {
    match st {
        ContainerState::Exited {
            exit_code,
            signal,
            reason,
            ..
        } => (*exit_code, *signal, reason.clone()),
        other => panic!("not exited: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_and_exit_codes() {
    require_env!("logs_and_exit_codes");
    let env = Env::new();
    let rt = &env.rt;
    let pod = env.pod_id("logs");
    let t0 = Instant::now();
    let sb = rt
        .run_sandbox(&env.sandbox_spec(&pod, "logs-pod"))
        .await
        .unwrap();
    eprintln!("timing: run_sandbox {:?}", t0.elapsed());

    let mut c = env.container(
        &sb,
        "fail",
        "echo out1; echo err1 >&2; echo out2; printf 'no-newline'; exit 3",
    );
    c.env.push("GREETING=hi there".into());
    let t1 = Instant::now();
    rt.start_container(&sb, &c).await.unwrap();
    eprintln!("timing: start_container {:?}", t1.elapsed());
    let st = wait_exited(rt, &c.id, Duration::from_secs(10)).await;
    eprintln!("timing: start to exited {:?}", t1.elapsed());
    let (code, signal, reason) = exited(&st);
    assert_eq!((code, signal, reason.as_str()), (3, None, "Error"));
    let lines = log_lines(&c.log_path);
    let has = |s: &str, t: &str, c: &str| lines.iter().any(|l| l.0 == s && l.1 == t && l.2 == c);
    assert!(has("stdout", "F", "out1"), "{lines:?}");
    assert!(has("stdout", "F", "out2"), "{lines:?}");
    assert!(has("stderr", "F", "err1"), "{lines:?}");
    assert!(has("stdout", "P", "no-newline"), "{lines:?}");
    assert_eq!(lines.len(), 4, "{lines:?}");

    // exit 0 => Completed; env and cwd are applied
    let mut ok = env.container(&sb, "ok", "echo \"$FOO $GREETING\"; pwd");
    ok.env.push("GREETING=hi there".into());
    ok.cwd = "/bin".into();
    rt.start_container(&sb, &ok).await.unwrap();
    let (code, _, reason) = exited(&wait_exited(rt, &ok.id, Duration::from_secs(10)).await);
    assert_eq!((code, reason.as_str()), (0, "Completed"));
    assert_eq!(log_text(&ok.log_path), "bar hi there\n/bin");

    // the same id twice is refused
    assert!(matches!(
        rt.start_container(&sb, &ok).await,
        Err(RuntimeError::ContainerExists(_))
    ));

    // a missing executable fails start_container with an error, leaving nothing behind
    let mut bad = env.container(&sb, "bad", "");
    bad.args = vec!["/bin/does-not-exist".into()];
    let err = rt.start_container(&sb, &bad).await.unwrap_err();
    eprintln!("expected error: {err}");
    assert!(rt.state(&bad.id).is_none());
    assert!(!rt.list_containers().contains(&bad.id));
    // (another test's create may show a zombie for an instant: only a lasting one counts)
    let first = zombie_children();
    if !first.is_empty() {
        tokio::time::sleep(Duration::from_secs(2)).await;
        let lasting: Vec<String> = zombie_children()
            .into_iter()
            .filter(|z| first.contains(z))
            .collect();
        assert_eq!(lasting, Vec::<String>::new(), "a failed start left zombies");
    }

    // the state survives an agent restart (a second Runtime over the same root)
    let rt2 = Runtime::new(rt.root().to_path_buf(), rt.cni_config().clone())
        .unwrap()
        .with_helper(helper_command());
    let (code, _, reason) = exited(&rt2.state(&c.id).unwrap());
    assert_eq!((code, reason.as_str()), (3, "Error"));
    assert_eq!(rt2.list_sandboxes(), vec![pod.clone()]);
    drop(rt2);

    // run_sandbox is idempotent
    let sb2 = rt
        .run_sandbox(&env.sandbox_spec(&pod, "logs-pod"))
        .await
        .unwrap();
    assert_eq!(sb2, sb);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pod_network_shared_by_containers() {
    require_env!("pod_network_shared_by_containers");
    let env = Env::new();
    let rt = &env.rt;
    let pod = env.pod_id("net");
    let host_port = 20000 + (unique() % 20000) as u16;
    let mut spec = env.sandbox_spec(&pod, "pod-two");
    spec.port_mappings = vec![PortMapping {
        host_port,
        container_port: 8080,
        protocol: "tcp".into(),
        host_ip: None,
    }];
    let sb = rt.run_sandbox(&spec).await.unwrap();
    let ip = sb.ip.expect("pod ip");
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            assert_eq!(
                (o[0], o[1], o[2]),
                (10, 42, env.subnet_octet),
                "{ip} not in the pod CIDR"
            );
        }
        _ => panic!("not v4: {ip}"),
    }
    let hosts = std::fs::read_to_string(sb.hosts_file()).unwrap();
    assert!(hosts.contains(&format!("{ip}\tpod-two")), "{hosts}");
    assert!(hosts.contains("extra-host"), "{hosts}");

    let a = env.container(
        &sb,
        "server",
        "mkdir -p /tmp/www && echo hello-from-a > /tmp/www/index.html && echo ready && exec httpd -f -p 8080 -h /tmp/www",
    );
    rt.start_container(&sb, &a).await.unwrap();
    wait_log(&a.log_path, "ready", Duration::from_secs(5)).await;

    let b = env.container(
        &sb,
        "client",
        "hostname; cat /etc/hostname; cat /etc/hosts | grep -c extra-host; ip -4 addr show eth0 | grep -o 'inet [0-9.]*'; \
         for i in 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20; do wget -qO- http://127.0.0.1:8080/ && exit 0; sleep 0.1; done; exit 1",
    );
    rt.start_container(&sb, &b).await.unwrap();
    let st = wait_exited(rt, &b.id, Duration::from_secs(10)).await;
    let out = log_text(&b.log_path);
    assert_eq!(exited(&st).0, 0, "client failed: {out}");
    assert!(out.contains("hello-from-a"), "{out}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "pod-two", "{out}");
    assert_eq!(lines[1], "pod-two", "{out}");
    assert!(out.contains(&format!("inet {ip}")), "{out}");

    // reachable from the host at the pod IP
    let resp = tokio::task::spawn_blocking(move || http_get((ip, 8080)))
        .await
        .unwrap()
        .unwrap();
    assert!(resp.contains("hello-from-a"), "{resp}");

    // and through the port mapping (portmap DNAT) at the bridge's gateway address
    let gw: IpAddr = format!("10.42.{}.1", env.subnet_octet).parse().unwrap();
    let resp = tokio::task::spawn_blocking(move || http_get((gw, host_port)))
        .await
        .unwrap();
    match resp {
        Ok(r) => assert!(r.contains("hello-from-a"), "{r}"),
        Err(e) => panic!("port mapping {gw}:{host_port} -> {ip}:8080 failed: {e}"),
    }

    let st = rt
        .stop_container(&a.id, Duration::from_secs(2))
        .await
        .unwrap();
    assert!(st.is_exited());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_with_grace() {
    require_env!("stop_with_grace");
    let env = Env::new();
    let rt = &env.rt;
    let pod = env.pod_id("stop");
    let sb = rt
        .run_sandbox(&env.sandbox_spec(&pod, "stop-pod"))
        .await
        .unwrap();

    // busybox sleep as PID 1 ignores SIGTERM: killed after the grace period
    let mut sleeper = env.container(&sb, "sleeper", "");
    sleeper.args = vec!["sleep".into(), "3600".into()];
    rt.start_container(&sb, &sleeper).await.unwrap();
    assert!(rt.state(&sleeper.id).unwrap().is_running());
    let t0 = Instant::now();
    let st = rt
        .stop_container(&sleeper.id, Duration::from_secs(1))
        .await
        .unwrap();
    let took = t0.elapsed();
    let (code, signal, reason) = exited(&st);
    assert_eq!((code, signal, reason.as_str()), (137, Some(9), "Error"));
    assert!(
        took >= Duration::from_secs(1) && took < Duration::from_secs(4),
        "took {took:?}"
    );

    // a shell that traps TERM exits 0 within the grace period
    let trapper = env.container(
        &sb,
        "trapper",
        "trap 'echo got-term; exit 0' TERM; echo ready; while true; do sleep 0.1; done",
    );
    rt.start_container(&sb, &trapper).await.unwrap();
    wait_log(&trapper.log_path, "ready", Duration::from_secs(5)).await;
    let t0 = Instant::now();
    let st = rt
        .stop_container(&trapper.id, Duration::from_secs(10))
        .await
        .unwrap();
    let took = t0.elapsed();
    let (code, signal, reason) = exited(&st);
    assert_eq!((code, signal, reason.as_str()), (0, None, "Completed"));
    assert!(took < Duration::from_secs(3), "took {took:?}");
    assert!(log_text(&trapper.log_path).contains("got-term"));

    // stopping an exited container returns its state
    let again = rt
        .stop_container(&trapper.id, Duration::from_secs(1))
        .await
        .unwrap();
    assert_eq!(again, st);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_user_readonly_and_mounts() {
    require_env!("limits_user_readonly_and_mounts");
    let env = Env::new();
    let rt = &env.rt;
    let pod = env.pod_id("limits");
    let sb = rt
        .run_sandbox(&env.sandbox_spec(&pod, "limits-pod"))
        .await
        .unwrap();
    let hostdir = env.base.join("hostdir");
    std::fs::create_dir_all(&hostdir).unwrap();
    std::fs::write(hostdir.join("hello.txt"), "from-the-host\n").unwrap();

    let mut c = env.container(
        &sb,
        "limited",
        "id -u; id -g; id -G; cat /data/hello.txt; touch /x 2>/dev/null && echo rootfs-writable || echo rootfs-readonly; \
         touch /data/y 2>/dev/null && echo data-writable || echo data-readonly; \
         cat /sys/fs/cgroup/memory/memory.limit_in_bytes 2>/dev/null || cat /sys/fs/cgroup/memory.max 2>/dev/null || echo no-cgroup-view; \
         echo shm > /dev/shm/s && echo shm-ok",
    );
    c.uid = 1000;
    c.gid = 1000;
    c.additional_gids = vec![2000];
    c.readonly_rootfs = true;
    c.memory_limit = Some(64 << 20);
    c.cpu_shares = Some(512);
    c.cpu_quota = Some(50_000);
    c.cpu_period = Some(100_000);
    c.mounts = vec![Mount {
        source: hostdir.clone(),
        destination: "/data".into(),
        read_only: true,
    }];
    rt.start_container(&sb, &c).await.unwrap();
    let st = wait_exited(rt, &c.id, Duration::from_secs(10)).await;
    let out = log_text(&c.log_path);
    eprintln!("container output:\n{out}");
    assert_eq!(exited(&st).0, 0, "{out}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "1000", "{out}");
    assert_eq!(lines[1], "1000", "{out}");
    assert!(lines[2].split(' ').any(|g| g == "2000"), "{out}");
    assert_eq!(lines[3], "from-the-host", "{out}");
    assert_eq!(lines[4], "rootfs-readonly", "{out}");
    assert_eq!(lines[5], "data-readonly", "{out}");
    assert_eq!(lines[7], "shm-ok", "{out}");
    assert!(hostdir.join("hello.txt").exists() && !hostdir.join("y").exists());

    // the limits on the host side (the cgroup lives until remove_container)
    let rel = format!("krust/pods/{pod}/{}", c.id);
    let v1 = Path::new("/sys/fs/cgroup/memory")
        .join(&rel)
        .join("memory.limit_in_bytes");
    let v2 = Path::new("/sys/fs/cgroup").join(&rel).join("memory.max");
    let limit = std::fs::read_to_string(&v1)
        .or_else(|_| std::fs::read_to_string(&v2))
        .expect("memory limit file of the container cgroup");
    assert_eq!(limit.trim(), (64u64 << 20).to_string());
    if lines[6] != "no-cgroup-view" {
        assert_eq!(lines[6], (64u64 << 20).to_string(), "{out}");
    }
    let cpu = Path::new("/sys/fs/cgroup/cpu").join(&rel);
    if cpu.exists() {
        assert_eq!(
            std::fs::read_to_string(cpu.join("cpu.shares"))
                .unwrap()
                .trim(),
            "512"
        );
        assert_eq!(
            std::fs::read_to_string(cpu.join("cpu.cfs_quota_us"))
                .unwrap()
                .trim(),
            "50000"
        );
    }

    // root with a writable rootfs can write (contrast)
    let w = env.container(&sb, "writable", "touch /x && echo rootfs-writable");
    rt.start_container(&sb, &w).await.unwrap();
    wait_exited(rt, &w.id, Duration::from_secs(10)).await;
    assert_eq!(log_text(&w.log_path), "rootfs-writable");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_in_running_container() {
    require_env!("exec_in_running_container");
    let env = Env::new();
    let rt = &env.rt;
    let pod = env.pod_id("exec");
    let sb = rt
        .run_sandbox(&env.sandbox_spec(&pod, "exec-pod"))
        .await
        .unwrap();
    let mut c = env.container(&sb, "main", "");
    c.args = vec!["sleep".into(), "3600".into()];
    c.uid = 1234;
    rt.start_container(&sb, &c).await.unwrap();

    let argv = |s: &[&str]| s.iter().map(|x| x.to_string()).collect::<Vec<_>>();
    let t0 = Instant::now();
    let out = rt
        .exec_sync(&c.id, &argv(&["hostname"]), Duration::from_secs(5))
        .await
        .unwrap();
    eprintln!("timing: exec_sync {:?}", t0.elapsed());
    assert_eq!(
        (out.exit_code, String::from_utf8_lossy(&out.stdout).as_ref()),
        (0, "exec-pod\n")
    );
    let out = rt
        .exec_sync(
            &c.id,
            &argv(&["cat", "/etc/hostname"]),
            Duration::from_secs(5),
        )
        .await
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "exec-pod\n");
    let out = rt
        .exec_sync(
            &c.id,
            &argv(&["sh", "-c", "id -u; echo $FOO; echo oops >&2; exit 7"]),
            Duration::from_secs(5),
        )
        .await
        .unwrap();
    assert_eq!(out.exit_code, 7);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "1234\nbar\n");
    assert_eq!(String::from_utf8_lossy(&out.stderr), "oops\n");

    let t0 = Instant::now();
    let err = rt
        .exec_sync(&c.id, &argv(&["sleep", "30"]), Duration::from_millis(300))
        .await
        .unwrap_err();
    assert!(matches!(err, RuntimeError::Timeout { .. }), "{err}");
    assert!(t0.elapsed() < Duration::from_secs(3));

    // the container itself is unaffected
    assert!(rt.state(&c.id).unwrap().is_running());
    rt.stop_container(&c.id, Duration::ZERO).await.unwrap();
    let err = rt
        .exec_sync(&c.id, &argv(&["true"]), Duration::from_secs(1))
        .await
        .unwrap_err();
    assert!(matches!(err, RuntimeError::NotRunning { .. }), "{err}");
}

fn cgroup_dirs_of(pod: &str) -> Vec<PathBuf> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/sys/fs/cgroup").unwrap().flatten() {
        let p = entry.path().join("krust/pods").join(pod);
        if p.exists() {
            found.push(p);
        }
    }
    let p = Path::new("/sys/fs/cgroup/krust/pods").join(pod);
    if p.exists() {
        found.push(p);
    }
    found
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removal_leaves_nothing() {
    require_env!("removal_leaves_nothing");
    let env = Env::new();
    let rt = &env.rt;
    let pod = env.pod_id("rm");
    let sb = rt
        .run_sandbox(&env.sandbox_spec(&pod, "rm-pod"))
        .await
        .unwrap();
    let ip = sb.ip.unwrap();
    let ipam_file = rt
        .cni_config()
        .ipam_data_dir()
        .join(CniConfig::NETWORK_NAME)
        .join(ip.to_string());
    assert!(
        ipam_file.exists(),
        "host-local has no file {}",
        ipam_file.display()
    );

    let mut long = env.container(&sb, "long", "");
    long.args = vec!["sleep".into(), "3600".into()];
    long.memory_limit = Some(32 << 20);
    rt.start_container(&sb, &long).await.unwrap();
    let short = env.container(&sb, "short", "echo bye");
    rt.start_container(&sb, &short).await.unwrap();
    wait_exited(rt, &short.id, Duration::from_secs(10)).await;
    assert!(!cgroup_dirs_of(&pod).is_empty());
    let root = rt.root().to_path_buf();
    let mounts_under_root = || {
        std::fs::read_to_string("/proc/self/mountinfo")
            .unwrap()
            .lines()
            .filter(|l| {
                l.split(' ')
                    .nth(4)
                    .is_some_and(|m| m.starts_with(root.to_str().unwrap()))
            })
            .map(String::from)
            .collect::<Vec<_>>()
    };
    assert!(!mounts_under_root().is_empty());

    // an agent restart sees the running container as running and the exited one as exited
    {
        let rt2 = Runtime::new(rt.root().to_path_buf(), rt.cni_config().clone())
            .unwrap()
            .with_helper(helper_command());
        assert!(rt2.state(&long.id).unwrap().is_running());
        assert_eq!(exited(&rt2.state(&short.id).unwrap()).2, "Completed");
        let mut ids = rt2.list_containers();
        ids.sort();
        let mut want = vec![long.id.clone(), short.id.clone()];
        want.sort();
        assert_eq!(ids, want);
    }

    let st = rt
        .stop_container(&long.id, Duration::from_millis(200))
        .await
        .unwrap();
    assert!(st.is_exited());
    rt.remove_container(&long.id).await.unwrap();
    rt.remove_container(&short.id).await.unwrap();
    rt.remove_container(&short.id).await.unwrap(); // idempotent
    assert!(rt.state(&long.id).is_none());
    assert!(long.log_path.exists(), "logs are kept for the kubelet");
    assert!(rt.list_containers().is_empty());

    let t0 = Instant::now();
    rt.remove_sandbox(&pod).await.unwrap();
    eprintln!("timing: remove_sandbox {:?}", t0.elapsed());
    rt.remove_sandbox(&pod).await.unwrap(); // idempotent

    assert_eq!(mounts_under_root(), Vec::<String>::new());
    assert!(!sb.dir.exists());
    assert!(!sb.netns.as_ref().unwrap().exists());
    assert_eq!(cgroup_dirs_of(&pod), Vec::<PathBuf>::new());
    assert!(!ipam_file.exists(), "IP {ip} still allocated");
    assert!(rt.list_sandboxes().is_empty());

    // remove_sandbox also takes down containers still in it
    let pod2 = env.pod_id("rm2");
    let sb2 = rt
        .run_sandbox(&env.sandbox_spec(&pod2, "rm2-pod"))
        .await
        .unwrap();
    let mut c = env.container(&sb2, "left", "");
    c.args = vec!["sleep".into(), "3600".into()];
    rt.start_container(&sb2, &c).await.unwrap();
    rt.remove_sandbox(&pod2).await.unwrap();
    assert!(rt.list_containers().is_empty());
    assert_eq!(mounts_under_root(), Vec::<String>::new());
    assert_eq!(cgroup_dirs_of(&pod2), Vec::<PathBuf>::new());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_network_sandbox() {
    require_env!("host_network_sandbox");
    let env = Env::new();
    let rt = &env.rt;
    let pod = env.pod_id("hostnet");
    let mut spec = env.sandbox_spec(&pod, "ignored");
    spec.host_network = true;
    spec.dns = Some(agent::runtime::DnsConfig {
        nameservers: vec!["10.43.0.10".into()],
        searches: vec!["default.svc.cluster.local".into()],
        options: vec!["ndots:5".into()],
    });
    let sb = rt.run_sandbox(&spec).await.unwrap();
    assert_eq!(sb.ip, None);
    assert!(sb.netns.is_none());
    let c = env.container(&sb, "c", "hostname; cat /etc/resolv.conf");
    rt.start_container(&sb, &c).await.unwrap();
    wait_exited(rt, &c.id, Duration::from_secs(10)).await;
    let out = log_text(&c.log_path);
    let host = nix::unistd::gethostname().unwrap().into_string().unwrap();
    assert!(out.starts_with(&host), "{out}");
    assert!(
        out.contains("nameserver 10.43.0.10") && out.contains("options ndots:5"),
        "{out}"
    );
    rt.remove_sandbox(&pod).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parallel_starts_and_oom() {
    require_env!("parallel_starts_and_oom");
    let env = Env::new();
    let rt = env.rt.clone();
    let pod = env.pod_id("par");
    let sb = rt
        .run_sandbox(&env.sandbox_spec(&pod, "par-pod"))
        .await
        .unwrap();
    let t0 = Instant::now();
    let mut tasks = Vec::new();
    for i in 0..6 {
        let c = env.container(&sb, &format!("c{i}"), &format!("echo hello-{i}"));
        let (rt, sb) = (rt.clone(), sb.clone());
        tasks.push(tokio::spawn(async move {
            rt.start_container(&sb, &c).await.unwrap();
            c
        }));
    }
    let mut specs = Vec::new();
    for t in tasks {
        specs.push(t.await.unwrap());
    }
    for (i, c) in specs.iter().enumerate() {
        let (code, _, _) = exited(&wait_exited(&rt, &c.id, Duration::from_secs(10)).await);
        assert_eq!(code, 0);
        assert_eq!(log_text(&c.log_path), format!("hello-{i}"));
    }
    eprintln!(
        "timing: 6 parallel containers started and exited in {:?}",
        t0.elapsed()
    );

    // a process over its memory limit is OOM-killed
    let mut oom = env.container(
        &sb,
        "oom",
        "x=$(yes | head -c 100000000); echo survived ${#x}",
    );
    oom.memory_limit = Some(16 << 20);
    rt.start_container(&sb, &oom).await.unwrap();
    let st = wait_exited(&rt, &oom.id, Duration::from_secs(30)).await;
    let (code, signal, reason) = exited(&st);
    assert_eq!(
        (code, signal, reason.as_str()),
        (137, Some(9), "OOMKilled"),
        "{}",
        log_text(&oom.log_path)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn privileged_container() {
    require_env!("privileged_container");
    let env = Env::new();
    let rt = &env.rt;
    let pod = env.pod_id("priv");
    let sb = rt.run_sandbox(&env.sandbox_spec(&pod, "priv-pod")).await.unwrap();
    let mut c = env.container(&sb, "priv", "grep CapEff /proc/self/status");
    c.privileged = true;
    rt.start_container(&sb, &c).await.unwrap();
    let st = wait_exited(rt, &c.id, Duration::from_secs(10)).await;
    let out = log_text(&c.log_path);
    assert_eq!(exited(&st).0, 0, "{out}");
    // Every capability the agent (here: this test) may hold.
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let bounding = status.lines().find_map(|l| l.strip_prefix("CapBnd:")).unwrap().trim();
    assert!(out.contains(&format!("CapEff:\t{bounding}")), "not every capability (want {bounding}): {out}");
}
