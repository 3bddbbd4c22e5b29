//! Cluster DNS end to end: a real `krust server` with its agent, whose DNS server listens on
//! the pod bridge's gateway (10.42.209.1:53). Queries are sent from this process (UDP and
//! TCP, with the agent's DNS wire-format crate) and from inside a pod (busybox nslookup).
//!
//! Needs root, Debian's CNI plugins and the registry tools (scripts/setup.sh installs them);
//! skips with a message where the machine lacks them.

mod common;

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream, UdpSocket};


use std::time::{Duration, Instant};

use agent::dns::proto::op::{Message, Query, ResponseCode};
use agent::dns::proto::rr::{Name, RData, RecordType};
use common::{free_port, text, TestServer, WITH_AGENT};
use common::node::{missing_prerequisite, wait_for, Bridge, Registry};

const GATEWAY: Ipv4Addr = Ipv4Addr::new(10, 42, 209, 1);
const CLUSTER_DNS: &str = "10.43.209.10";


fn question(name: &str, qtype: RecordType) -> Message {
    let mut m = Message::query();
    m.metadata.recursion_desired = true;
    m.add_query(Query::query(Name::from_ascii(name).unwrap(), qtype));
    m
}

/// One UDP question to the gateway's DNS server; `None` when no answer came in `timeout`.
fn ask_udp(name: &str, qtype: RecordType, timeout: Duration) -> Option<Message> {
    let q = question(name, qtype);
    let sock = UdpSocket::bind("0.0.0.0:0").unwrap();
    sock.set_read_timeout(Some(timeout)).unwrap();
    sock.send_to(&q.to_vec().unwrap(), SocketAddr::from((GATEWAY, 53))).ok()?;
    let mut buf = [0u8; 4096];
    let (n, _) = sock.recv_from(&mut buf).ok()?;
    let answer = Message::from_vec(&buf[..n]).unwrap();
    assert_eq!(answer.metadata.id, q.metadata.id, "answer to another question");
    Some(answer)
}

fn ask(name: &str, qtype: RecordType) -> Message {
    ask_udp(name, qtype, Duration::from_secs(5)).unwrap_or_else(|| panic!("no answer to {name} {qtype}"))
}

/// The same over TCP (length-prefixed).
fn ask_tcp(name: &str, qtype: RecordType) -> Message {
    let q = question(name, qtype).to_vec().unwrap();
    let mut s = TcpStream::connect_timeout(&SocketAddr::from((GATEWAY, 53)), Duration::from_secs(5)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut framed = (q.len() as u16).to_be_bytes().to_vec();
    framed.extend_from_slice(&q);
    s.write_all(&framed).unwrap();
    let mut len = [0u8; 2];
    s.read_exact(&mut len).unwrap();
    let mut buf = vec![0u8; u16::from_be_bytes(len) as usize];
    s.read_exact(&mut buf).unwrap();
    Message::from_vec(&buf).unwrap()
}

/// The answers' data as text, sorted (`10.43.0.5`, `0 100 80 web.default...`, ...).
fn data(m: &Message) -> Vec<String> {
    let mut v: Vec<String> = m.answers.iter().map(|r| r.data.to_string()).collect();
    v.sort();
    v
}

/// Polls a question until its answers are `want` (the caches follow the API within moments).
fn expect(name: &str, qtype: RecordType, want: &[&str]) -> Message {
    let mut want: Vec<String> = want.iter().map(|s| s.to_string()).collect();
    want.sort();
    let mut last = None;
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(15) {
        let m = ask(name, qtype);
        if m.metadata.response_code == ResponseCode::NoError && data(&m) == want {
            return m;
        }
        last = Some(m);
        std::thread::sleep(Duration::from_millis(300));
    }
    panic!("{name} {qtype}: wanted {want:?}, last answer {last:#?}");
}

#[test]
fn cluster_dns_answers_from_services_and_endpoint_slices() {
    if let Some(why) = missing_prerequisite() {
        eprintln!("SKIPPED: {why}");
        return;
    }
    let registry = Registry::start();
    let _bridge = Bridge("krt209".into());
    let s = TestServer::start_with(&[
        WITH_AGENT,
        "--node-name", "node-209",
        "--node-ip", "127.0.0.1",
        "--kubelet-port", &free_port().to_string(),
        "--cluster-cidr", "10.42.209.0/24",
        "--cni-bridge", "krt209",
        "--cluster-dns", CLUSTER_DNS,
    ]);
    let image = registry.image();

    // The kube-dns Service, at the configured address, with no selector.
    let svc = wait_for("the kube-dns Service", Duration::from_secs(30), || {
        let out = s.kubectl(&["get", "svc", "-n", "kube-system", "kube-dns", "-o", "json"]);
        out.status.success().then(|| serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap())
    });
    assert_eq!(svc["spec"]["clusterIP"], CLUSTER_DNS);
    assert!(svc["spec"]["selector"].is_null(), "{svc}");
    let ports: Vec<String> = svc["spec"]["ports"].as_array().unwrap().iter().map(|p| format!("{}/{}/{}", p["name"].as_str().unwrap(), p["port"], p["protocol"].as_str().unwrap())).collect();
    assert_eq!(ports, ["dns/53/UDP", "dns-tcp/53/TCP"]);

    // The node's EndpointSlice: its gateway address, once its server listens.
    let slice = wait_for("the node's kube-dns EndpointSlice", Duration::from_secs(60), || {
        let out = s.kubectl(&["get", "endpointslice", "-n", "kube-system", "kube-dns-node-209", "-o", "json"]);
        out.status.success().then(|| serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap())
    });
    assert_eq!(slice["metadata"]["labels"]["kubernetes.io/service-name"], "kube-dns");
    assert_eq!(slice["metadata"]["labels"]["endpointslice.kubernetes.io/managed-by"], "krust-agent");
    assert_eq!(slice["addressType"], "IPv4");
    assert_eq!(slice["endpoints"][0]["addresses"][0], GATEWAY.to_string());
    assert_eq!(slice["endpoints"][0]["nodeName"], "node-209");
    assert_eq!(slice["endpoints"][0]["conditions"]["ready"], true);
    assert_eq!(slice["ports"].as_array().unwrap().len(), 2);

    // Pods behind a headless Service (one with hostname/subdomain), a ClusterIP Service
    // with named ports, ExternalName Services.
    let manifests = format!(
        r#"
apiVersion: v1
kind: Pod
metadata: {{name: db-0, labels: {{app: db}}}}
spec:
  hostname: db-0
  subdomain: db
  terminationGracePeriodSeconds: 1
  containers: [{{name: c, image: "{image}", command: [sleep, "3600"]}}]
---
apiVersion: v1
kind: Pod
metadata: {{name: db-1, labels: {{app: db}}}}
spec:
  terminationGracePeriodSeconds: 1
  containers: [{{name: c, image: "{image}", command: [sleep, "3600"]}}]
---
apiVersion: v1
kind: Service
metadata: {{name: db}}
spec:
  clusterIP: None
  selector: {{app: db}}
  ports: [{{name: pg, port: 5432, protocol: TCP}}]
---
apiVersion: v1
kind: Service
metadata: {{name: web}}
spec:
  selector: {{app: web}}
  ports:
  - {{name: http, port: 80, protocol: TCP}}
  - {{name: syslog, port: 514, protocol: UDP}}
---
apiVersion: v1
kind: Service
metadata: {{name: ext}}
spec: {{type: ExternalName, externalName: example.org}}
---
apiVersion: v1
kind: Service
metadata: {{name: alias}}
spec: {{type: ExternalName, externalName: web.default.svc.cluster.local}}
"#
    );
    s.kubectl_stdin_ok(&["apply", "-f", "-"], &manifests);
    s.kubectl_ok(&["wait", "--for=condition=Ready", "pod/db-0", "pod/db-1", "--timeout=90s"]);
    let pod_ip = |p: &str| s.kubectl_ok(&["get", "pod", p, "-o", "jsonpath={.status.podIP}"]);
    let (ip0, ip1) = (pod_ip("db-0"), pod_ip("db-1"));
    let web_ip = s.kubectl_ok(&["get", "svc", "web", "-o", "jsonpath={.spec.clusterIP}"]);
    let d = "cluster.local";

    // A ClusterIP Service: its address (TTL 5, authoritative), no AAAA, SRV per named port.
    let m = expect(&format!("web.default.svc.{d}."), RecordType::A, &[&web_ip]);
    assert!(m.metadata.authoritative && m.metadata.recursion_available);
    assert_eq!(m.answers[0].ttl, 5);
    let m = ask(&format!("web.default.svc.{d}."), RecordType::AAAA);
    assert_eq!((m.metadata.response_code, m.answers.len()), (ResponseCode::NoError, 0));
    assert_eq!(m.authorities[0].record_type(), RecordType::SOA);
    expect(&format!("_http._tcp.web.default.svc.{d}."), RecordType::SRV, &[&format!("0 100 80 web.default.svc.{d}.")]);
    let m = expect(&format!("_syslog._udp.web.default.svc.{d}."), RecordType::SRV, &[&format!("0 100 514 web.default.svc.{d}.")]);
    assert_eq!(m.additionals[0].data.to_string(), web_ip, "the SRV target's address comes along");
    assert_eq!(ask_tcp(&format!("web.default.svc.{d}."), RecordType::A).answers[0].data.to_string(), web_ip, "over TCP");
    expect(&format!("kube-dns.kube-system.svc.{d}."), RecordType::A, &[CLUSTER_DNS]);

    // A headless Service: every ready pod, each by its hostname or dashed address; SRV too.
    expect(&format!("db.default.svc.{d}."), RecordType::A, &[&ip0, &ip1]);
    expect(&format!("db-0.db.default.svc.{d}."), RecordType::A, &[&ip0]);
    expect(&format!("{}.db.default.svc.{d}.", ip1.replace('.', "-")), RecordType::A, &[&ip1]);
    let m = expect(
        &format!("_pg._tcp.db.default.svc.{d}."),
        RecordType::SRV,
        &[&format!("0 50 5432 db-0.db.default.svc.{d}."), &format!("0 50 5432 {}.db.default.svc.{d}.", ip1.replace('.', "-"))],
    );
    assert_eq!(m.additionals.len(), 2);

    // ExternalName: a CNAME; one naming a cluster Service comes with that Service's address.
    expect(&format!("ext.default.svc.{d}."), RecordType::CNAME, &["example.org."]);
    let m = ask(&format!("alias.default.svc.{d}."), RecordType::A);
    let kinds: Vec<RecordType> = m.answers.iter().map(|r| r.record_type()).collect();
    assert_eq!(kinds, [RecordType::CNAME, RecordType::A], "{m:#?}");
    assert!(matches!(&m.answers[1].data, RData::A(a) if a.0.to_string() == web_ip));

    // Pods by dashed address; reverse names of ClusterIPs and headless endpoints.
    expect(&format!("10-42-209-77.default.pod.{d}."), RecordType::A, &["10.42.209.77"]);
    let reverse = |ip: &str| format!("{}.in-addr.arpa.", ip.split('.').rev().collect::<Vec<_>>().join("."));
    expect(&reverse(&web_ip), RecordType::PTR, &[&format!("web.default.svc.{d}.")]);
    expect(&reverse(&ip0), RecordType::PTR, &[&format!("db-0.db.default.svc.{d}.")]);

    // Unknown names in the zone: NXDOMAIN with the zone's SOA.
    for name in [format!("nope.default.svc.{d}."), format!("example.com.default.svc.{d}."), format!("x.y.{d}.")] {
        let m = ask(&name, RecordType::A);
        assert_eq!(m.metadata.response_code, ResponseCode::NXDomain, "{name}");
        assert!(m.metadata.authoritative);
        assert!(matches!(&m.authorities[0].data, RData::SOA(_)), "{m:#?}");
    }

    // A name outside the zone goes to the host's resolvers: some answer (or SERVFAIL) comes
    // back in time, never silence.
    let started = Instant::now();
    let m = ask_udp("krust-dns-test.invalid.", RecordType::A, Duration::from_secs(10)).expect("no answer to a forwarded name");
    assert!(started.elapsed() < Duration::from_secs(10));
    let rcode = m.metadata.response_code;
    assert!(matches!(rcode, ResponseCode::NXDomain | ResponseCode::ServFail | ResponseCode::NoError | ResponseCode::Refused), "{m:#?}");

    // From inside a pod, over the bridge: busybox nslookup asking the node's server.
    let out = wait_for("nslookup in a pod", Duration::from_secs(20), || {
        let out = s.kubectl(&["exec", "db-1", "--", "nslookup", "-type=a", &format!("web.default.svc.{d}"), &GATEWAY.to_string()]);
        let t = text(&out.stdout);
        (out.status.success() && t.contains(&web_ip)).then_some(t)
    });
    assert!(out.contains(&format!("web.default.svc.{d}")), "{out}");

    // A deleted Service is gone from DNS within moments.
    s.kubectl_ok(&["delete", "svc", "web"]);
    wait_for("web to be NXDOMAIN", Duration::from_secs(15), || {
        (ask(&format!("web.default.svc.{d}."), RecordType::A).metadata.response_code == ResponseCode::NXDomain).then_some(())
    });
    s.kubectl_ok(&["delete", "pod", "db-0", "db-1", "--grace-period=1", "--timeout=60s"]);
}
