//! Container probes (liveness, readiness, startup): exec in the container, an HTTP GET, or
//! a TCP connect, each within `timeoutSeconds`, as upstream's prober.

use std::net::IpAddr;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Container, Probe};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::runtime::Runtime;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Success,
    Failure(String),
}

/// Counting state of one probe of one container instance.
#[derive(Debug, Clone)]
pub struct ProbeState {
    pub next_due: Instant,
    pub successes: i32,
    pub failures: i32,
    /// The latest verdict after thresholds: `None` until the first decision.
    pub verdict: Option<bool>,
}

impl ProbeState {
    pub fn new(probe: &Probe, started: Instant) -> Self {
        let delay = Duration::from_secs(probe.initial_delay_seconds.unwrap_or(0).max(0) as u64);
        ProbeState { next_due: started + delay, successes: 0, failures: 0, verdict: None }
    }

    /// Records one result; returns the verdict once a threshold is crossed.
    pub fn record(&mut self, probe: &Probe, outcome: &Outcome) -> Option<bool> {
        let period = Duration::from_secs(probe.period_seconds.unwrap_or(10).max(1) as u64);
        self.next_due = Instant::now() + period;
        match outcome {
            Outcome::Success => {
                self.failures = 0;
                self.successes += 1;
                if self.successes >= probe.success_threshold.unwrap_or(1).max(1) {
                    self.verdict = Some(true);
                }
            }
            Outcome::Failure(_) => {
                self.successes = 0;
                self.failures += 1;
                if self.failures >= probe.failure_threshold.unwrap_or(3).max(1) {
                    self.verdict = Some(false);
                }
            }
        }
        self.verdict
    }
}

fn port_number(port: &IntOrString, c: &Container) -> Option<u16> {
    match port {
        IntOrString::Int(p) => u16::try_from(*p).ok(),
        IntOrString::String(name) => match name.parse::<u16>() {
            Ok(p) => Some(p),
            Err(_) => c.ports.iter().flatten().find(|p| p.name.as_deref() == Some(name)).and_then(|p| u16::try_from(p.container_port).ok()),
        },
    }
}

/// Runs the probe once.
pub async fn run(probe: &Probe, c: &Container, container_id: &str, pod_ip: Option<IpAddr>, runtime: &Runtime) -> Outcome {
    let timeout = Duration::from_secs(probe.timeout_seconds.unwrap_or(1).max(1) as u64);
    if let Some(exec) = &probe.exec {
        let argv = exec.command.clone().unwrap_or_default();
        return match runtime.exec_sync(container_id, &argv, timeout).await {
            Ok(out) if out.exit_code == 0 => Outcome::Success,
            Ok(out) => Outcome::Failure(format!("command {argv:?} exited with {}: {}", out.exit_code, String::from_utf8_lossy(&out.stdout).trim())),
            Err(e) => Outcome::Failure(format!("exec failed: {e}")),
        };
    }
    let host = |h: Option<&String>| -> Option<IpAddr> {
        match h.filter(|h| !h.is_empty()) {
            Some(h) => h.parse().ok(),
            None => pod_ip.or(Some(IpAddr::from([127, 0, 0, 1]))),
        }
    };
    if let Some(http) = &probe.http_get {
        let Some(port) = port_number(&http.port, c) else { return Outcome::Failure(format!("invalid port {:?}", http.port)) };
        let Some(ip) = host(http.host.as_ref()) else { return Outcome::Failure("invalid host".into()) };
        let path = http.path.clone().filter(|p| !p.is_empty()).unwrap_or_else(|| "/".into());
        let headers: String = http.http_headers.iter().flatten().map(|h| format!("{}: {}\r\n", h.name, h.value)).collect();
        let req = format!("GET {path} HTTP/1.1\r\nHost: {ip}:{port}\r\nUser-Agent: kube-probe/1.33\r\nAccept: */*\r\n{headers}Connection: close\r\n\r\n");
        let attempt = async {
            let mut s = TcpStream::connect((ip, port)).await?;
            s.write_all(req.as_bytes()).await?;
            let mut buf = vec![0u8; 1024];
            let n = s.read(&mut buf).await?;
            Ok::<_, std::io::Error>(String::from_utf8_lossy(&buf[..n]).to_string())
        };
        return match tokio::time::timeout(timeout, attempt).await {
            Ok(Ok(resp)) => {
                let code: u16 = resp.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
                if (200..400).contains(&code) {
                    Outcome::Success
                } else {
                    Outcome::Failure(format!("HTTP probe failed with statuscode: {code}"))
                }
            }
            Ok(Err(e)) => Outcome::Failure(format!("Get \"http://{ip}:{port}{path}\": {e}")),
            Err(_) => Outcome::Failure(format!("Get \"http://{ip}:{port}{path}\": context deadline exceeded")),
        };
    }
    if let Some(tcp) = &probe.tcp_socket {
        let Some(port) = port_number(&tcp.port, c) else { return Outcome::Failure(format!("invalid port {:?}", tcp.port)) };
        let Some(ip) = host(tcp.host.as_ref()) else { return Outcome::Failure("invalid host".into()) };
        return match tokio::time::timeout(timeout, TcpStream::connect((ip, port))).await {
            Ok(Ok(_)) => Outcome::Success,
            Ok(Err(e)) => Outcome::Failure(format!("dial tcp {ip}:{port}: {e}")),
            Err(_) => Outcome::Failure(format!("dial tcp {ip}:{port}: i/o timeout")),
        };
    }
    Outcome::Failure("probe has no handler this agent supports (grpc is not supported yet)".into())
}
