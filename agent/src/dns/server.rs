//! The DNS server's message handling (one question in, one answer out) and its UDP and TCP
//! listeners.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use hickory_proto::op::{Edns, Message, MessageType, OpCode, ResponseCode, DEFAULT_MAX_PAYLOAD_LEN};
use hickory_proto::rr::{DNSClass, Name, RecordType};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};

use super::forward::Upstreams;
use super::records::{Catalog, Outcome, Zone};

/// How long an idle TCP connection is kept.
const TCP_IDLE: Duration = Duration::from_secs(10);

/// Everything a question needs.
pub struct Handler {
    pub zone: Zone,
    pub catalog: Arc<dyn Catalog>,
    pub upstreams: Upstreams,
    /// Whether the caches have their first lists: before, zone questions get SERVFAIL
    /// rather than a wrong NXDOMAIN.
    pub ready: Arc<AtomicBool>,
}

#[derive(Clone, Copy, PartialEq, Debug)]
pub enum Transport {
    Udp,
    Tcp,
}

impl Handler {
    /// The answer to one raw DNS message, or `None` to drop it (not a query, unparsable).
    pub async fn handle(&self, raw: &[u8], transport: Transport) -> Option<Vec<u8>> {
        let request = match Message::from_vec(raw) {
            Ok(m) => m,
            Err(_) if raw.len() >= 12 && raw[2] & 0x80 == 0 => {
                let id = u16::from_be_bytes([raw[0], raw[1]]);
                return Message::error_msg(id, OpCode::Query, ResponseCode::FormErr).to_vec().ok();
            }
            Err(_) => return None,
        };
        if request.metadata.message_type != MessageType::Query {
            return None;
        }
        let max_len = match transport {
            Transport::Udp => request.max_payload() as usize,
            Transport::Tcp => u16::MAX as usize,
        };
        let mut response = Message::response(request.metadata.id, request.metadata.op_code);
        response.metadata.recursion_desired = request.metadata.recursion_desired;
        response.metadata.recursion_available = true;
        response.metadata.checking_disabled = request.metadata.checking_disabled;
        response.add_queries(request.queries.iter().cloned());
        if request.edns.is_some() {
            let mut edns = Edns::new();
            edns.set_max_payload(DEFAULT_MAX_PAYLOAD_LEN);
            response.set_edns(edns);
        }
        if request.metadata.op_code != OpCode::Query {
            response.metadata.response_code = ResponseCode::NotImp;
            return response.to_vec().ok();
        }
        let [query] = request.queries.as_slice() else {
            response.metadata.response_code = ResponseCode::FormErr;
            return response.to_vec().ok();
        };
        let outcome = if query.query_class() == DNSClass::IN || query.query_class() == DNSClass::ANY {
            self.zone.resolve(self.catalog.as_ref(), query.name(), query.query_type())
        } else {
            Outcome::Forward
        };
        let answer = match outcome {
            Outcome::Forward => {
                return Some(match self.upstreams.forward(raw, max_len).await {
                    Some(a) => a,
                    None => {
                        response.metadata.response_code = ResponseCode::ServFail;
                        response.to_vec().ok()?
                    }
                });
            }
            Outcome::Answer(_) if !self.ready.load(Ordering::Relaxed) => {
                response.metadata.response_code = ResponseCode::ServFail;
                return response.to_vec().ok();
            }
            Outcome::Answer(a) => a,
        };
        response.metadata.authoritative = true;
        response.metadata.response_code = answer.rcode;
        response.answers = answer.answers;
        response.additionals = answer.additionals;
        response.authorities = answer.authority;
        if let Some(target) = answer.chase {
            let (rcode, records) = self.chase(&target, query.query_type()).await;
            response.answers.extend(records);
            if rcode != ResponseCode::NoError {
                response.metadata.response_code = rcode;
            }
        }
        let bytes = response.to_vec().ok()?;
        if bytes.len() <= max_len {
            return Some(bytes);
        }
        // Too large for the client's UDP buffer: truncated, the client asks again over TCP.
        response.truncate().to_vec().ok().map(|mut b| {
            b[..2].copy_from_slice(&request.metadata.id.to_be_bytes());
            b
        })
    }

    /// The records of an ExternalName's target: from the zone when it is in it (one level),
    /// else from the upstream resolvers.
    async fn chase(&self, target: &Name, qtype: RecordType) -> (ResponseCode, Vec<hickory_proto::rr::Record>) {
        match self.zone.resolve(self.catalog.as_ref(), target, qtype) {
            Outcome::Answer(a) => (a.rcode, a.answers),
            Outcome::Forward => {
                let mut q = Message::query();
                q.metadata.recursion_desired = true;
                q.add_query(hickory_proto::op::Query::query(target.clone(), qtype));
                let Ok(raw) = q.to_vec() else { return (ResponseCode::ServFail, vec![]) };
                match self.upstreams.forward(&raw, u16::MAX as usize).await.and_then(|b| Message::from_vec(&b).ok()) {
                    Some(m) => (m.metadata.response_code, m.answers),
                    // The CNAME alone, as when the upstream cannot be reached.
                    None => (ResponseCode::NoError, vec![]),
                }
            }
        }
    }
}

/// Answers UDP questions until dropped.
pub async fn serve_udp(socket: UdpSocket, handler: Arc<Handler>) {
    let socket = Arc::new(socket);
    let mut buf = vec![0u8; 4096];
    loop {
        let (n, from): (usize, SocketAddr) = match socket.recv_from(&mut buf).await {
            Ok(x) => x,
            Err(e) => {
                tracing::debug!(error = %e, "dns: udp receive");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let raw = buf[..n].to_vec();
        let (socket, handler) = (socket.clone(), handler.clone());
        // Forwarded questions wait on upstream servers: each question is its own task.
        tokio::spawn(async move {
            if let Some(answer) = handler.handle(&raw, Transport::Udp).await {
                let _ = socket.send_to(&answer, from).await;
            }
        });
    }
}

/// Answers TCP questions (two-byte length prefix, several per connection) until dropped.
pub async fn serve_tcp(listener: TcpListener, handler: Arc<Handler>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        tokio::spawn(tcp_connection(stream, handler.clone()));
    }
}

async fn tcp_connection(mut stream: TcpStream, handler: Arc<Handler>) {
    loop {
        let mut len = [0u8; 2];
        match tokio::time::timeout(TCP_IDLE, stream.read_exact(&mut len)).await {
            Ok(Ok(_)) => {}
            _ => return,
        }
        let mut raw = vec![0u8; u16::from_be_bytes(len) as usize];
        if !matches!(tokio::time::timeout(TCP_IDLE, stream.read_exact(&mut raw)).await, Ok(Ok(_))) {
            return;
        }
        let Some(answer) = handler.handle(&raw, Transport::Tcp).await else { return };
        let mut framed = (answer.len() as u16).to_be_bytes().to_vec();
        framed.extend_from_slice(&answer);
        if stream.write_all(&framed).await.is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_proto::op::Query;
    use k8s_openapi::api::core::v1::Service;
    use k8s_openapi::api::discovery::v1::EndpointSlice;

    struct Many;

    impl Catalog for Many {
        fn services(&self) -> Vec<Arc<Service>> {
            vec![Arc::new(serde_json::from_value(serde_json::json!({"metadata": {"name": "big", "namespace": "default"}, "spec": {"clusterIP": "None"}})).unwrap())]
        }
        fn slices(&self) -> Vec<Arc<EndpointSlice>> {
            let endpoints: Vec<_> = (1..=100).map(|i| serde_json::json!({"addresses": [format!("10.42.0.{i}")]})).collect();
            vec![Arc::new(
                serde_json::from_value(serde_json::json!({"metadata": {"name": "big-1", "namespace": "default", "labels": {"kubernetes.io/service-name": "big"}},
                    "addressType": "IPv4", "endpoints": endpoints}))
                .unwrap(),
            )]
        }
    }

    fn handler() -> Handler {
        let dir = std::env::temp_dir().join("krust-dns-test-no-resolv.conf");
        Handler {
            zone: Zone::new("cluster.local"),
            catalog: Arc::new(Many),
            upstreams: Upstreams { resolv_conf: dir, exclude: vec![] },
            ready: Arc::new(AtomicBool::new(true)),
        }
    }

    fn query(name: &str, qtype: RecordType) -> Vec<u8> {
        let mut m = Message::query();
        m.metadata.id = 77;
        m.metadata.recursion_desired = true;
        m.add_query(Query::query(Name::from_ascii(name).unwrap(), qtype));
        m.to_vec().unwrap()
    }

    #[tokio::test]
    async fn large_answers_are_truncated_over_udp_only() {
        let h = handler();
        let q = query("big.default.svc.cluster.local.", RecordType::A);
        let udp = Message::from_vec(&h.handle(&q, Transport::Udp).await.unwrap()).unwrap();
        assert!(udp.metadata.truncation);
        assert_eq!(udp.metadata.id, 77);
        assert!(udp.answers.is_empty());
        let tcp = Message::from_vec(&h.handle(&q, Transport::Tcp).await.unwrap()).unwrap();
        assert!(!tcp.metadata.truncation && tcp.metadata.authoritative);
        assert_eq!(tcp.answers.len(), 100);
    }

    #[tokio::test]
    async fn unanswerable_forwards_fail_and_unready_caches_do_not_deny() {
        let h = handler();
        let out = Message::from_vec(&h.handle(&query("example.org.", RecordType::A), Transport::Udp).await.unwrap()).unwrap();
        assert_eq!(out.metadata.response_code, ResponseCode::ServFail);
        h.ready.store(false, Ordering::Relaxed);
        let out = Message::from_vec(&h.handle(&query("nope.default.svc.cluster.local.", RecordType::A), Transport::Udp).await.unwrap()).unwrap();
        assert_eq!(out.metadata.response_code, ResponseCode::ServFail);
        assert_eq!(h.handle(b"short", Transport::Udp).await, None);
    }
}
