//! An etcd v3 gRPC face over any [`Backend`], so that `etcdctl` and etcd client libraries can
//! use the store (kine's role, for krust's embedded datastore).
//!
//! Served: KV (Range, Put, DeleteRange, Txn, Compact), Watch, Lease (Grant, Revoke, KeepAlive,
//! TimeToLive, Leases), Cluster.MemberList and Maintenance.Status. The protobuf declarations are
//! krust's own (`proto/`), wire compatible with etcd's `etcdserverpb`/`mvccpb` packages.
//!
//! The [`Backend`] trait is narrower than etcd: writes are single-key compare-and-swaps. So a
//! `Txn` is accepted when it touches one key (compares on that key, at most one put or delete
//! of it per branch, plus reads of any range); anything else is answered `Unimplemented`,
//! naming the field. Multi-key deletes (`DeleteRange` with a range) delete key by key.
//! See the submodules for the details of each service.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tonic::Status;
use tracing::info;

use crate::backend::{Backend, KeyValue, ListResult, Revision, StoreError};

/// What callers need to configure TLS, without a tonic dependency of their own.
pub use tonic::transport::{Certificate, Identity, ServerTlsConfig};

mod cluster;
mod kv;
mod lease;
mod watch;

/// Code generated from `proto/` (see build.rs).
pub mod pb {
    pub mod mvccpb {
        tonic::include_proto!("mvccpb");
    }
    pub mod etcdserverpb {
        tonic::include_proto!("etcdserverpb");
    }
}

use pb::etcdserverpb::{
    cluster_server::ClusterServer, kv_server::KvServer, lease_server::LeaseServer,
    maintenance_server::MaintenanceServer, watch_server::WatchServer, ResponseHeader,
};

/// Identity and tunables of the served "cluster" (always one member).
#[derive(Clone, Debug)]
pub struct GrpcOptions {
    pub cluster_id: u64,
    pub member_id: u64,
    /// Member name reported by `MemberList`.
    pub name: String,
    /// Client URLs reported by `MemberList`; empty = `http://<listen address>`.
    pub client_urls: Vec<String>,
    /// Version string reported by `Status` (etcd clients parse it as an etcd version).
    pub version: String,
    /// How often a watcher created with `progress_notify` gets an empty progress response
    /// while it has no events (etcd's default: 10 minutes).
    pub progress_notify_interval: Duration,
    /// Serve over TLS (with client certificates when it names a client CA); `None`: h2c.
    pub tls: Option<tonic::transport::ServerTlsConfig>,
}

impl Default for GrpcOptions {
    fn default() -> Self {
        GrpcOptions {
            // "krust" / "kine" in ASCII: arbitrary but stable, and non-zero as etcd's are.
            cluster_id: 0x006b_7275_7374,
            member_id: 0x6b69_6e65,
            name: "krust-kine".to_owned(),
            client_urls: Vec::new(),
            version: "3.5.0".to_owned(),
            progress_notify_interval: Duration::from_secs(600),
            tls: None,
        }
    }
}

/// The etcd services over one backend. Cheap to clone.
#[derive(Clone)]
pub struct EtcdGrpc {
    backend: Arc<dyn Backend>,
    opts: Arc<GrpcOptions>,
}

impl EtcdGrpc {
    pub fn new(backend: Arc<dyn Backend>, opts: GrpcOptions) -> Self {
        EtcdGrpc {
            backend,
            opts: Arc::new(opts),
        }
    }

    /// All services, ready to be served by a tonic server (or merged into another router).
    pub fn routes(&self) -> tonic::service::Routes {
        let mut b = tonic::service::RoutesBuilder::default();
        b.add_service(KvServer::new(self.clone()))
            .add_service(WatchServer::new(self.clone()))
            .add_service(LeaseServer::new(self.clone()))
            .add_service(ClusterServer::new(self.clone()))
            .add_service(MaintenanceServer::new(self.clone()));
        b.routes()
    }

    fn header(&self, revision: Revision) -> Option<ResponseHeader> {
        Some(ResponseHeader {
            cluster_id: self.opts.cluster_id,
            member_id: self.opts.member_id,
            revision,
            raft_term: RAFT_TERM,
        })
    }
}

/// There is no raft: one fixed term.
const RAFT_TERM: u64 = 1;

/// A server ready to serve: its listener bound, its TLS settings checked.
pub struct Prepared {
    listener: TcpListener,
    router: tonic::transport::server::Router,
}

/// How long a client may take over its TLS handshake before it is dropped.
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Builds the server over `listener`: fails here (not once serving) when the TLS
/// certificate, key or client CA are unusable.
pub fn prepare(
    listener: TcpListener,
    backend: Arc<dyn Backend>,
    mut opts: GrpcOptions,
) -> Result<Prepared, tonic::transport::Error> {
    let scheme = if opts.tls.is_some() { "https" } else { "http" };
    if opts.client_urls.is_empty() {
        if let Some(a) = listener.local_addr().ok() {
            opts.client_urls = vec![format!("{scheme}://{a}")];
        }
    }
    let mut builder = tonic::transport::Server::builder();
    if let Some(tls) = opts.tls.clone() {
        builder = builder.tls_config(tls.timeout(TLS_HANDSHAKE_TIMEOUT))?;
    }
    let svc = EtcdGrpc::new(backend, opts);
    let router = builder
        .http2_keepalive_interval(Some(Duration::from_secs(30)))
        .add_routes(svc.routes());
    Ok(Prepared { listener, router })
}

impl Prepared {
    /// Serves until `shutdown` resolves.
    pub async fn serve(
        self,
        shutdown: impl Future<Output = ()>,
    ) -> Result<(), tonic::transport::Error> {
        let addr: Option<SocketAddr> = self.listener.local_addr().ok();
        info!(addr = ?addr, "etcd v3 gRPC API ready");
        self.router
            .serve_with_incoming_shutdown(
                // Without TCP_NODELAY, small unary replies wait on Nagle's algorithm (~40 ms each).
                tonic::transport::server::TcpIncoming::from(self.listener).with_nodelay(Some(true)),
                shutdown,
            )
            .await
    }
}

/// Serves the etcd v3 API on `listener` (h2c, or TLS when `opts.tls` says so) until
/// `shutdown` resolves.
pub async fn serve(
    listener: TcpListener,
    backend: Arc<dyn Backend>,
    opts: GrpcOptions,
    shutdown: impl Future<Output = ()>,
) -> Result<(), tonic::transport::Error> {
    prepare(listener, backend, opts)?.serve(shutdown).await
}

// ---- errors ----

/// etcd's error strings (clients match on them, e.g. Go's `rpctypes`), with etcd's codes.
pub(crate) mod errs {
    pub const COMPACTED: &str = "etcdserver: mvcc: required revision has been compacted";
    pub const FUTURE_REV: &str = "etcdserver: mvcc: required revision is a future revision";
    pub const LEASE_NOT_FOUND: &str = "etcdserver: requested lease not found";
    pub const EMPTY_KEY: &str = "etcdserver: key is not provided";
    pub const KEY_NOT_FOUND: &str = "etcdserver: key not found";
    pub const VALUE_PROVIDED: &str = "etcdserver: value is provided";
    pub const LEASE_PROVIDED: &str = "etcdserver: lease is provided";
    pub const DUPLICATE_KEY: &str = "etcdserver: duplicate key given in txn request";
}

pub(crate) fn status(e: StoreError) -> Status {
    match e {
        StoreError::Compacted { .. } => Status::out_of_range(errs::COMPACTED),
        StoreError::FutureRevision { .. } => Status::out_of_range(errs::FUTURE_REV),
        StoreError::LeaseNotFound(_) => Status::not_found(errs::LEASE_NOT_FOUND),
        StoreError::KeyExists => Status::failed_precondition("kine-sqlite: key already exists"),
        StoreError::Unsupported(what) => Status::unimplemented(format!(
            "kine-sqlite: {what} is not supported by this backend"
        )),
        StoreError::Backend(msg) => Status::unavailable(format!("kine-sqlite: {msg}")),
    }
}

/// The answer for a request field this server does not implement.
pub(crate) fn unimplemented(what: &str) -> Status {
    Status::unimplemented(format!("kine-sqlite does not implement {what}"))
}

// ---- key ranges ----

/// An etcd key range (`key`, `range_end`) in terms of the backend's prefix listings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Span {
    /// Exactly one key (`range_end` empty).
    Key(String),
    /// Keys `k` with `k` starting with `prefix`, `k >= start`, and `k < end` when `end` is set.
    Range {
        prefix: String,
        start: String,
        end: Option<Vec<u8>>,
    },
    /// A range that contains nothing (`range_end <= key`).
    Empty,
}

pub(crate) fn key_string(key: &[u8]) -> Result<String, Status> {
    String::from_utf8(key.to_vec())
        .map_err(|_| Status::invalid_argument("kine-sqlite: keys must be valid UTF-8"))
}

/// The key following every key that starts with `prefix` (etcd's "prefix + 1"); `None` when
/// there is none (an empty or all-0xff prefix).
pub(crate) fn prefix_end(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}

impl Span {
    pub(crate) fn parse(key: &[u8], range_end: &[u8]) -> Result<Span, Status> {
        if key.is_empty() && range_end.is_empty() {
            return Err(Status::invalid_argument(errs::EMPTY_KEY));
        }
        let k = key_string(key)?;
        if range_end.is_empty() {
            return Ok(Span::Key(k));
        }
        if range_end == [0] {
            // `--from-key`: every key >= key (with key "\0": every key).
            return Ok(Span::Range {
                prefix: String::new(),
                start: k,
                end: None,
            });
        }
        if prefix_end(key).as_deref() == Some(range_end) {
            return Ok(Span::Range {
                prefix: k.clone(),
                start: k,
                end: None,
            });
        }
        if range_end <= key {
            return Ok(Span::Empty);
        }
        // General [key, range_end): every key in it shares the common prefix of both ends.
        let mut n = key
            .iter()
            .zip(range_end)
            .take_while(|(a, b)| a == b)
            .count();
        while !k.is_char_boundary(n) {
            n -= 1;
        }
        Ok(Span::Range {
            prefix: k[..n].to_owned(),
            start: k,
            end: Some(range_end.to_vec()),
        })
    }

    pub(crate) fn contains(&self, key: &str) -> bool {
        match self {
            Span::Key(k) => k == key,
            Span::Range { prefix, start, end } => {
                key.starts_with(prefix.as_str())
                    && key >= start.as_str()
                    && end.as_deref().is_none_or(|e| key.as_bytes() < e)
            }
            Span::Empty => false,
        }
    }

    /// The prefix a backend watch must cover.
    pub(crate) fn watch_prefix(&self) -> &str {
        match self {
            Span::Key(k) => k,
            Span::Range { prefix, .. } => prefix,
            Span::Empty => "",
        }
    }
}

/// Reads the live keys of `span` at `revision` (0 = current), at most `limit` (0 = all).
/// `ListResult::revision` is the store's current revision (etcd's header revision).
pub(crate) async fn read_span(
    backend: &dyn Backend,
    span: &Span,
    limit: i64,
    revision: Revision,
) -> Result<ListResult, Status> {
    match span {
        Span::Key(k) => {
            let (rev, kv) = backend.get(k, revision).await.map_err(status)?;
            Ok(ListResult {
                revision: rev,
                kvs: kv.into_iter().collect(),
                more: false,
            })
        }
        Span::Empty => {
            let rev = backend.current_revision().await.map_err(status)?;
            if revision > rev {
                return Err(Status::out_of_range(errs::FUTURE_REV));
            }
            Ok(ListResult {
                revision: rev,
                kvs: Vec::new(),
                more: false,
            })
        }
        Span::Range { prefix, start, end } => {
            let limit = limit.max(0);
            // One more than asked tells whether the range goes on past the limit.
            let ask = if limit > 0 { limit + 1 } else { 0 };
            let res = backend
                .list(prefix, start, ask, revision)
                .await
                .map_err(status)?;
            let mut kvs: Vec<KeyValue> = match end {
                Some(e) => res
                    .kvs
                    .into_iter()
                    .take_while(|kv| kv.key.as_bytes() < e.as_slice())
                    .collect(),
                None => res.kvs,
            };
            let more = limit > 0 && kvs.len() as i64 > limit;
            if more {
                kvs.truncate(limit as usize);
            }
            let current = if revision == 0 {
                res.revision
            } else {
                backend.current_revision().await.map_err(status)?
            };
            Ok(ListResult {
                revision: current,
                kvs,
                more,
            })
        }
    }
}

/// Number of live keys in `span` at `revision`.
pub(crate) async fn count_span(
    backend: &dyn Backend,
    span: &Span,
    revision: Revision,
) -> Result<i64, Status> {
    if let Span::Range {
        prefix,
        start,
        end: None,
    } = span
    {
        if revision == 0 && prefix == start {
            return Ok(backend.count(prefix).await.map_err(status)?.1);
        }
    }
    Ok(read_span(backend, span, 0, revision).await?.kvs.len() as i64)
}

pub(crate) fn to_pb_kv(kv: &KeyValue) -> pb::mvccpb::KeyValue {
    pb::mvccpb::KeyValue {
        key: kv.key.as_bytes().to_vec(),
        create_revision: kv.create_revision,
        mod_revision: kv.mod_revision,
        version: kv.version,
        value: kv.value.clone(),
        lease: kv.lease,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spans() {
        assert_eq!(Span::parse(b"/a", b"").unwrap(), Span::Key("/a".into()));
        assert_eq!(
            Span::parse(b"/a", b"/b").unwrap(),
            Span::Range {
                prefix: "/a".into(),
                start: "/a".into(),
                end: None
            }
        );
        assert_eq!(
            Span::parse(b"/a", b"\0").unwrap(),
            Span::Range {
                prefix: "".into(),
                start: "/a".into(),
                end: None
            }
        );
        let s = Span::parse(b"/a/b", b"/a/d").unwrap();
        assert_eq!(
            s,
            Span::Range {
                prefix: "/a/".into(),
                start: "/a/b".into(),
                end: Some(b"/a/d".to_vec())
            }
        );
        assert!(
            s.contains("/a/b") && s.contains("/a/cz") && !s.contains("/a/d") && !s.contains("/a/a")
        );
        assert_eq!(Span::parse(b"/b", b"/a").unwrap(), Span::Empty);
        assert!(Span::parse(b"", b"").is_err());
        assert_eq!(prefix_end(b"a\xff"), Some(b"b".to_vec()));
        assert_eq!(prefix_end(b"\xff"), None);
    }
}
