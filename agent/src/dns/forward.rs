//! Names outside the cluster zone go to the host's resolvers (`/etc/resolv.conf`): the
//! client's query as it came, over UDP first, over TCP when the answer was truncated; the
//! upstream answer is relayed as it is.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};

/// How long one upstream server gets to answer one attempt.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(2);

/// The nameservers of a resolv.conf text, less the addresses given (our own, to avoid loops).
pub fn nameservers(resolv_conf: &str, exclude: &[IpAddr]) -> Vec<SocketAddr> {
    resolv_conf
        .lines()
        .filter_map(|l| {
            let mut words = l.split_whitespace();
            (words.next() == Some("nameserver")).then(|| words.next()).flatten()
        })
        // A scoped IPv6 address (fe80::1%eth0) is not parsed; such servers are skipped.
        .filter_map(|a| a.parse::<IpAddr>().ok())
        .filter(|ip| !exclude.contains(ip) && !ip.is_unspecified())
        .map(|ip| SocketAddr::new(ip, 53))
        .collect()
}

/// The upstream servers: `/etc/resolv.conf` read at each question (it is small, and may change).
#[derive(Clone, Debug)]
pub struct Upstreams {
    pub resolv_conf: std::path::PathBuf,
    /// Our own addresses (gateway, cluster DNS), never forwarded to.
    pub exclude: Vec<IpAddr>,
}

impl Upstreams {
    fn servers(&self) -> Vec<SocketAddr> {
        let text = std::fs::read_to_string(&self.resolv_conf).unwrap_or_default();
        nameservers(&text, &self.exclude)
    }

    /// The first upstream answer to `query` (raw DNS message). With `tcp_ok`, a truncated UDP
    /// answer is asked again over TCP; `max_len` bounds what a UDP client can take, so a TCP
    /// answer larger than that is not used (the truncated one is relayed: the client retries
    /// over TCP). `None` when no server answered in time.
    pub async fn forward(&self, query: &[u8], max_len: usize) -> Option<Vec<u8>> {
        if query.len() < 12 {
            return None;
        }
        for server in self.servers() {
            match udp_exchange(server, query).await {
                Some(answer) if truncated(&answer) => {
                    if let Some(full) = tcp_exchange(server, query).await {
                        if full.len() <= max_len {
                            return Some(full);
                        }
                    }
                    return Some(answer);
                }
                Some(answer) => return Some(answer),
                None => continue,
            }
        }
        None
    }
}

fn truncated(msg: &[u8]) -> bool {
    msg.len() >= 3 && msg[2] & 0x02 != 0
}

async fn udp_exchange(server: SocketAddr, query: &[u8]) -> Option<Vec<u8>> {
    let bind: SocketAddr = if server.is_ipv4() { ([0, 0, 0, 0], 0).into() } else { (std::net::Ipv6Addr::UNSPECIFIED, 0).into() };
    let sock = UdpSocket::bind(bind).await.ok()?;
    // Connected: the kernel drops datagrams from anyone but the server.
    sock.connect(server).await.ok()?;
    sock.send(query).await.ok()?;
    let mut buf = vec![0u8; 65535];
    let deadline = tokio::time::Instant::now() + ATTEMPT_TIMEOUT;
    loop {
        let n = tokio::time::timeout_at(deadline, sock.recv(&mut buf)).await.ok()?.ok()?;
        // The same ID as the question, else it is a stray: keep waiting.
        if n >= 12 && buf[..2] == query[..2] {
            buf.truncate(n);
            return Some(buf);
        }
    }
}

async fn tcp_exchange(server: SocketAddr, query: &[u8]) -> Option<Vec<u8>> {
    let exchange = async {
        let mut stream = TcpStream::connect(server).await.ok()?;
        let mut framed = (query.len() as u16).to_be_bytes().to_vec();
        framed.extend_from_slice(query);
        stream.write_all(&framed).await.ok()?;
        let mut len = [0u8; 2];
        stream.read_exact(&mut len).await.ok()?;
        let mut answer = vec![0u8; u16::from_be_bytes(len) as usize];
        stream.read_exact(&mut answer).await.ok()?;
        (answer.len() >= 12 && answer[..2] == query[..2]).then_some(answer)
    };
    tokio::time::timeout(ATTEMPT_TIMEOUT, exchange).await.ok()?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nameservers_from_resolv_conf() {
        let text = "# comment\nsearch example.org\nnameserver 10.255.255.53\nnameserver 10.43.0.10\nnameserver fe80::1%eth0\n nameserver 1.1.1.1\noptions ndots:2\n";
        let got = nameservers(text, &["10.43.0.10".parse().unwrap()]);
        assert_eq!(got, vec!["10.255.255.53:53".parse().unwrap(), "1.1.1.1:53".parse().unwrap()]);
    }

    #[tokio::test]
    async fn relays_udp_and_falls_back_to_tcp_on_truncation() {
        // A fake upstream on loopback: over UDP it answers truncated, over TCP in full.
        let udp = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let port = udp.local_addr().unwrap().port();
        let tcp = tokio::net::TcpListener::bind(("127.0.0.1", port)).await.unwrap();
        tokio::spawn(async move {
            let mut buf = [0u8; 512];
            let (n, from) = udp.recv_from(&mut buf).await.unwrap();
            let mut answer = buf[..n].to_vec();
            answer[2] |= 0x82; // QR + TC
            udp.send_to(&answer, from).await.unwrap();
        });
        tokio::spawn(async move {
            let (mut s, _) = tcp.accept().await.unwrap();
            let mut len = [0u8; 2];
            s.read_exact(&mut len).await.unwrap();
            let mut q = vec![0u8; u16::from_be_bytes(len) as usize];
            s.read_exact(&mut q).await.unwrap();
            q[2] |= 0x80;
            q.extend_from_slice(b"full");
            s.write_all(&(q.len() as u16).to_be_bytes()).await.unwrap();
            s.write_all(&q).await.unwrap();
        });
        let dir = tempfile::tempdir().unwrap();
        // resolv.conf names port 53 only: test the exchanges directly on the fake's port.
        let server: SocketAddr = ("127.0.0.1".parse::<IpAddr>().unwrap(), port).into();
        let query = [0x12, 0x34, 0x01, 0, 0, 1, 0, 0, 0, 0, 0, 0];
        let first = udp_exchange(server, &query).await.unwrap();
        assert!(truncated(&first));
        let full = tcp_exchange(server, &query).await.unwrap();
        assert!(full.ends_with(b"full") && full[..2] == query[..2]);
        // No server at all: no answer, quickly.
        std::fs::write(dir.path().join("resolv.conf"), "").unwrap();
        let none = Upstreams { resolv_conf: dir.path().join("resolv.conf"), exclude: vec![] };
        assert_eq!(none.forward(&query, 512).await, None);
    }
}
