//! [`EtcdBackend`]: the [`Backend`] trait over a real etcd v3 cluster (`etcd-client`).
//!
//! Every method is one etcd request (or one transaction), so the semantics are etcd's own:
//!
//! * `create` = `Txn(If create_revision(key) == 0, Then put)`; `update` = `Txn(If
//!   mod_revision(key) == expected, Then put + range(key), Else range(key))`; `delete` =
//!   `Txn(If mod_revision(key) == expected, Then delete(prev_kv), Else range(key))`, or a plain
//!   `DeleteRange(prev_kv)` when `expected == 0`. A failed compare consumes no revision.
//! * Revisions are etcd's: a new cluster starts at revision 1 (not 0 as the SQLite store).
//! * `list` is a `Range` over `[max(prefix, start_key), prefix_end)`; `more` is etcd's.
//! * `watch` is an etcd watch with `prev_kv`. Several events may share one revision (a
//!   transaction, or a lease revoke that deletes many keys: etcd deletes them all at one
//!   revision, where the SQLite store spends one revision per key).
//! * `compact(rev)` is etcd's non-physical compaction.
//!
//! **The compact revision.** etcd does not report it (its `Status` has no such field), so
//! [`EtcdBackend::compact_revision`] discovers it: reads at a revision below it fail with
//! "required revision has been compacted", so the smallest readable revision is found with
//! probes (point reads of one absent key at a chosen revision), starting from a cached lower
//! bound that our own compactions and earlier probes raise. When nothing has been compacted
//! since the last call that is a single probe; otherwise a binary search. This also sees
//! compactions done by others (kube-apiserver, `etcdctl compact`, auto-compaction). When
//! revision 1 is readable and we know of no compaction, the answer is 0 ("nothing compacted").
//!
//! **Failures.** Requests that cannot have been applied (no connection to a member, or a
//! member without a leader: the client sets etcd's `require_leader`, so such members refuse
//! at once) are retried for up to [`RETRY_FOR`]; reads are also retried on every other
//! "unavailable" error. Watches that break (member killed, leader lost) are re-created from
//! the revision after the last delivered event, so a watch survives the loss of a member.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use etcd_client as ec;
use futures::StreamExt;
use tracing::{debug, warn};

use crate::backend::*;

/// How long a request that can safely be repeated is retried while the cluster is unreachable.
pub const RETRY_FOR: Duration = Duration::from_secs(30);

/// How long [`EtcdBackend::connect`] waits for the cluster to answer.
pub const CONNECT_WAIT: Duration = Duration::from_secs(10);

/// The key the compact-revision probes read. It is never written.
const PROBE_KEY: &[u8] = b"\0krust-compact-probe";

/// PEM files for a TLS connection to etcd (`--datastore-cafile/-certfile/-keyfile`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TlsFiles {
    /// CA that signed the etcd servers' certificates (required for `https://` endpoints).
    pub ca: Option<std::path::PathBuf>,
    /// Client certificate and key, for clusters that require client authentication.
    pub cert: Option<std::path::PathBuf>,
    pub key: Option<std::path::PathBuf>,
}

/// A [`Backend`] over a real etcd v3 cluster.
pub struct EtcdBackend {
    client: ec::Client,
    endpoints: Vec<String>,
    /// A lower bound of the cluster's compact revision (see the module docs).
    compact_floor: AtomicI64,
}

impl std::fmt::Debug for EtcdBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdBackend")
            .field("endpoints", &self.endpoints)
            .finish()
    }
}

/// What kind of request: decides which failures may be retried.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Read,
    Write,
}

impl EtcdBackend {
    /// Connects to the cluster at `endpoints` (`http://host:2379` or `https://...`, several for
    /// a cluster: requests are balanced over them) and checks that it answers.
    pub async fn connect(endpoints: &[String], tls: Option<TlsFiles>) -> Result<Arc<Self>> {
        if endpoints.is_empty() {
            return Err(StoreError::Backend("no etcd endpoints given".into()));
        }
        let mut opts = ec::ConnectOptions::new()
            .with_connect_timeout(Duration::from_secs(5))
            .with_keep_alive(Duration::from_secs(10), Duration::from_secs(5))
            .with_keep_alive_while_idle(true)
            .with_require_leader(true);
        let any_https = endpoints.iter().any(|e| e.starts_with("https://"));
        if tls.is_some() || any_https {
            opts = opts.with_tls(tls_options(&tls.unwrap_or_default())?);
        }
        let client = ec::Client::connect(endpoints, Some(opts))
            .await
            .map_err(|e| StoreError::Backend(format!("connecting to etcd {endpoints:?}: {e}")))?;
        let this = Arc::new(EtcdBackend {
            client,
            endpoints: endpoints.to_vec(),
            compact_floor: AtomicI64::new(0),
        });
        // Fail early (with the endpoints in the message) if nothing answers.
        match tokio::time::timeout(CONNECT_WAIT, this.current_revision()).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => {
                return Err(StoreError::Backend(format!(
                    "etcd {endpoints:?} does not answer: {e}"
                )))
            }
            Err(_) => {
                return Err(StoreError::Backend(format!(
                    "etcd {endpoints:?} does not answer (waited {CONNECT_WAIT:?})"
                )))
            }
        }
        Ok(this)
    }

    pub fn endpoints(&self) -> &[String] {
        &self.endpoints
    }

    /// Compacts every `interval`, keeping the last `keep` revisions (as kube-apiserver's and
    /// kine's compactors do). The task holds a weak reference and ends with the backend.
    pub fn spawn_compactor(
        self: &Arc<Self>,
        interval: Duration,
        keep: i64,
    ) -> tokio::task::JoinHandle<()> {
        let weak = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut ticker = tokio::time::interval(interval);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            ticker.tick().await;
            loop {
                ticker.tick().await;
                let Some(this) = weak.upgrade() else { return };
                let result = async {
                    let target = this.current_revision().await? - keep.max(0);
                    if target > this.compact_floor.load(Ordering::Relaxed) {
                        this.compact(target).await?;
                    }
                    Ok::<_, StoreError>(())
                }
                .await;
                if let Err(e) = result {
                    warn!(error = %e, "periodic etcd compaction failed");
                }
            }
        })
    }

    /// Runs `op` on a fresh client handle, retrying failures that are safe to retry for
    /// `kind` until [`RETRY_FOR`] has passed.
    async fn call<T, F, Fut>(
        &self,
        what: &str,
        kind: Kind,
        op: F,
    ) -> std::result::Result<T, ec::Error>
    where
        F: Fn(ec::Client) -> Fut,
        Fut: std::future::Future<Output = std::result::Result<T, ec::Error>>,
    {
        let deadline = Instant::now() + RETRY_FOR;
        let mut backoff = Duration::from_millis(20);
        loop {
            match op(self.client.clone()).await {
                Ok(v) => return Ok(v),
                Err(e) if retryable(&e, kind) && Instant::now() + backoff < deadline => {
                    debug!(error = %e, what, "etcd request failed; retrying");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_millis(500));
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Reads back a key after a write whose outcome is unknown. Values the apiserver writes
    /// are unique (they carry a uid and timestamps), so finding ours means it was applied.
    async fn read_back(&self, key: &str, first: ec::Error, what: &str) -> Result<Option<KeyValue>> {
        let deadline = Instant::now() + RETRY_FOR;
        loop {
            match self.range_one(key.as_bytes(), 0).await {
                Ok((_, kv)) => return Ok(kv),
                Err(e) if Instant::now() < deadline => {
                    debug!(error = %e, what, "reading back after an interrupted write");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(_) => return Err(self.map_err(first, what, 0).await),
            }
        }
    }

    /// A create interrupted in flight: applied if the key holds our value, else tried again.
    async fn settle_create(&self, key: &str, value: Vec<u8>, lease: LeaseId, first: ec::Error) -> Result<Revision> {
        match self.read_back(key, first, "create").await? {
            Some(kv) if kv.value == value => Ok(kv.mod_revision),
            Some(_) => Err(StoreError::KeyExists),
            None => Backend::create(self, key, value, lease).await,
        }
    }

    /// An update interrupted in flight: applied if the key holds our value at a newer
    /// revision; tried again if it is still at `expected`; else a failed compare.
    async fn settle_update(&self, key: &str, value: Vec<u8>, expected: Revision, lease: LeaseId, first: ec::Error) -> Result<CasOutcome> {
        match self.read_back(key, first, "update").await? {
            Some(kv) if kv.value == value && kv.mod_revision > expected => {
                Ok(CasOutcome { revision: kv.mod_revision, current: Some(kv), succeeded: true })
            }
            Some(kv) if kv.mod_revision == expected => Backend::update(self, key, value, expected, lease).await,
            current => {
                let revision = current.as_ref().map(|kv| kv.mod_revision).unwrap_or_default();
                Ok(CasOutcome { revision, current, succeeded: false })
            }
        }
    }

    /// Maps an etcd error of a request made at `revision` to a [`StoreError`].
    async fn map_err(&self, e: ec::Error, what: &str, revision: Revision) -> StoreError {
        match classify(&e) {
            Some(Known::Compacted) => {
                let compacted = self.compact_revision().await.unwrap_or(revision + 1);
                StoreError::Compacted {
                    requested: revision,
                    compacted,
                }
            }
            Some(Known::Future) => {
                let current = self.current_revision().await.unwrap_or(revision - 1);
                StoreError::FutureRevision {
                    requested: revision,
                    current,
                }
            }
            Some(Known::LeaseNotFound) => StoreError::LeaseNotFound(0),
            None => StoreError::Backend(format!("etcd {what}: {e}")),
        }
    }

    /// Reads `key` at `revision`; returns (header revision, kv).
    async fn range_one(
        &self,
        key: &[u8],
        revision: Revision,
    ) -> std::result::Result<(Revision, Option<KeyValue>), ec::Error> {
        let mut resp = self
            .call("get", Kind::Read, |mut c| {
                let key = key.to_vec();
                async move {
                    c.get(key, Some(ec::GetOptions::new().with_revision(revision)))
                        .await
                }
            })
            .await?;
        let rev = header_rev(resp.header());
        Ok((rev, resp.take_kvs().first().map(convert_kv)))
    }

    /// Whether a read at `revision` is refused as compacted.
    async fn is_compacted(&self, revision: Revision) -> Result<bool> {
        match self.range_one(PROBE_KEY, revision).await {
            Ok(_) => Ok(false),
            Err(e) => match classify(&e) {
                Some(Known::Compacted) => Ok(true),
                // Cannot happen for revision <= current; treat as readable.
                Some(Known::Future) => Ok(false),
                _ => Err(StoreError::Backend(format!(
                    "etcd probe of the compact revision: {e}"
                ))),
            },
        }
    }

    fn raise_floor(&self, rev: Revision) {
        self.compact_floor.fetch_max(rev, Ordering::Relaxed);
    }
}

fn tls_options(files: &TlsFiles) -> Result<ec::TlsOptions> {
    let read = |p: &std::path::Path| {
        std::fs::read(p).map_err(|e| StoreError::Backend(format!("reading {}: {e}", p.display())))
    };
    let mut tls = ec::TlsOptions::new();
    match &files.ca {
        Some(ca) => tls = tls.ca_certificate(ec::Certificate::from_pem(read(ca)?)),
        None => {
            return Err(StoreError::Backend(
                "a TLS connection to etcd needs the CA file that signed its certificates".into(),
            ))
        }
    }
    match (&files.cert, &files.key) {
        (Some(cert), Some(key)) => {
            tls = tls.identity(ec::Identity::from_pem(read(cert)?, read(key)?));
        }
        (None, None) => {}
        _ => {
            return Err(StoreError::Backend(
                "a client certificate needs both a certificate file and a key file".into(),
            ))
        }
    }
    Ok(tls)
}

enum Known {
    Compacted,
    Future,
    LeaseNotFound,
}

fn classify(e: &ec::Error) -> Option<Known> {
    let ec::Error::GRpcStatus(s) = e else {
        return None;
    };
    let msg = s.message();
    if msg.contains("required revision has been compacted") {
        Some(Known::Compacted)
    } else if msg.contains("required revision is a future revision") {
        Some(Known::Future)
    } else if msg.contains("requested lease not found") {
        Some(Known::LeaseNotFound)
    } else {
        None
    }
}

/// Whether a failed request may be sent again: for writes only when it cannot have been
/// applied; reads whenever the cluster was unavailable.
fn retryable(e: &ec::Error, kind: Kind) -> bool {
    match e {
        ec::Error::TransportError(_) => true,
        ec::Error::GRpcStatus(s) => {
            let msg = s.message().to_ascii_lowercase();
            let not_sent = msg.contains("no leader")
                || msg.contains("connect")
                || msg.contains("connection refused")
                || msg.contains("dns error")
                || msg.contains("not ready")
                || msg.contains("too many requests");
            match kind {
                Kind::Write => {
                    matches!(
                        s.code() as i32,
                        tonic_code::UNAVAILABLE | tonic_code::UNKNOWN
                    ) && not_sent
                }
                Kind::Read => {
                    s.code() as i32 == tonic_code::UNAVAILABLE
                        || not_sent
                        || msg.contains("leader changed")
                        || msg.contains("request timed out")
                        // A connection broken under the request (a member killed): reading
                        // again, on another member, is always safe.
                        || (s.code() as i32 == tonic_code::UNKNOWN && msg.contains("transport error"))
                }
            }
        }
        _ => false,
    }
}

/// Whether a failed write may have been applied all the same: the connection broke while
/// it was in flight (e.g. a member killed), so only reading the key back can tell.
fn ambiguous(e: &ec::Error) -> bool {
    match e {
        ec::Error::TransportError(_) => true,
        ec::Error::GRpcStatus(s) => matches!(s.code() as i32, tonic_code::UNKNOWN | tonic_code::UNAVAILABLE | tonic_code::DEADLINE_EXCEEDED),
        _ => false,
    }
}

/// gRPC status codes (`tonic::Code` discriminants).
mod tonic_code {
    pub const UNKNOWN: i32 = 2;
    pub const DEADLINE_EXCEEDED: i32 = 4;
    pub const UNAVAILABLE: i32 = 14;
}

fn header_rev(h: Option<&ec::ResponseHeader>) -> Revision {
    h.map(|h| h.revision()).unwrap_or_default()
}

fn convert_kv(kv: &ec::KeyValue) -> KeyValue {
    KeyValue {
        key: String::from_utf8_lossy(kv.key()).into_owned(),
        create_revision: kv.create_revision(),
        mod_revision: kv.mod_revision(),
        version: kv.version(),
        value: kv.value().to_vec(),
        lease: kv.lease(),
    }
}

/// The end of the key range of keys starting with `prefix` (etcd's `GetPrefixRangeEnd`):
/// `\0` ("to the end") for an empty prefix or one of only 0xff bytes.
fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(&last) = end.last() {
        if last < 0xff {
            *end.last_mut().unwrap() = last + 1;
            return end;
        }
        end.pop();
    }
    vec![0]
}

/// The range `[key, end)` of keys starting with `prefix` and `>= start_key`.
fn key_range(prefix: &str, start_key: &str) -> (Vec<u8>, Vec<u8>) {
    let mut key = prefix.as_bytes().to_vec();
    if start_key.as_bytes() > key.as_slice() {
        key = start_key.as_bytes().to_vec();
    }
    if key.is_empty() {
        // etcd refuses an empty key; "\0" is the smallest non-empty one.
        key = vec![0];
    }
    (key, prefix_end(prefix.as_bytes()))
}

fn txn_failure_kv(resp: &ec::TxnResponse) -> Option<KeyValue> {
    resp.op_responses().into_iter().find_map(|r| match r {
        ec::TxnOpResponse::Get(g) => g.kvs().first().map(convert_kv),
        _ => None,
    })
}

#[async_trait]
impl Backend for EtcdBackend {
    async fn get(&self, key: &str, revision: Revision) -> Result<(Revision, Option<KeyValue>)> {
        match self.range_one(key.as_bytes(), revision).await {
            Ok(v) => Ok(v),
            Err(e) => Err(self.map_err(e, "get", revision).await),
        }
    }

    async fn create(&self, key: &str, value: Vec<u8>, lease: LeaseId) -> Result<Revision> {
        let result = self
            .call("create", Kind::Write, |mut c| {
                let txn = ec::Txn::new()
                    .when([ec::Compare::create_revision(key, ec::CompareOp::Equal, 0)])
                    .and_then([ec::TxnOp::put(
                        key,
                        value.clone(),
                        Some(ec::PutOptions::new().with_lease(lease)),
                    )]);
                async move { c.txn(txn).await }
            })
            .await;
        match result {
            Ok(resp) if resp.succeeded() => Ok(header_rev(resp.header())),
            Ok(_) => Err(StoreError::KeyExists),
            Err(e) if ambiguous(&e) => self.settle_create(key, value, lease, e).await,
            Err(e) => match self.map_err(e, "create", 0).await {
                StoreError::LeaseNotFound(_) => Err(StoreError::LeaseNotFound(lease)),
                other => Err(other),
            },
        }
    }

    async fn update(
        &self,
        key: &str,
        value: Vec<u8>,
        expected: Revision,
        lease: LeaseId,
    ) -> Result<CasOutcome> {
        if expected <= 0 {
            // `mod_revision == 0` holds only for an absent key, which cannot be updated.
            let (revision, current) = self.get(key, 0).await?;
            return Ok(CasOutcome {
                revision,
                current,
                succeeded: false,
            });
        }
        let result = self
            .call("update", Kind::Write, |mut c| {
                let txn = ec::Txn::new()
                    .when([ec::Compare::mod_revision(
                        key,
                        ec::CompareOp::Equal,
                        expected,
                    )])
                    .and_then([
                        ec::TxnOp::put(
                            key,
                            value.clone(),
                            Some(ec::PutOptions::new().with_lease(lease)),
                        ),
                        ec::TxnOp::get(key, None),
                    ])
                    .or_else([ec::TxnOp::get(key, None)]);
                async move { c.txn(txn).await }
            })
            .await;
        match result {
            Ok(resp) => Ok(CasOutcome {
                revision: header_rev(resp.header()),
                current: txn_failure_kv(&resp),
                succeeded: resp.succeeded(),
            }),
            Err(e) if ambiguous(&e) => self.settle_update(key, value, expected, lease, e).await,
            Err(e) => match self.map_err(e, "update", 0).await {
                StoreError::LeaseNotFound(_) => Err(StoreError::LeaseNotFound(lease)),
                other => Err(other),
            },
        }
    }

    async fn delete(&self, key: &str, expected: Revision) -> Result<CasOutcome> {
        let result = self
            .call("delete", Kind::Write, |mut c| {
                let del = ec::TxnOp::delete(key, Some(ec::DeleteOptions::new().with_prev_key()));
                let txn = if expected == 0 {
                    ec::Txn::new().and_then([del])
                } else {
                    ec::Txn::new()
                        .when([ec::Compare::mod_revision(
                            key,
                            ec::CompareOp::Equal,
                            expected,
                        )])
                        .and_then([del])
                        .or_else([ec::TxnOp::get(key, None)])
                };
                async move { c.txn(txn).await }
            })
            .await;
        let resp = match result {
            Ok(r) => r,
            Err(e) => return Err(self.map_err(e, "delete", 0).await),
        };
        let revision = header_rev(resp.header());
        if !resp.succeeded() {
            return Ok(CasOutcome {
                revision,
                current: txn_failure_kv(&resp),
                succeeded: false,
            });
        }
        let deleted = resp.op_responses().into_iter().find_map(|r| match r {
            ec::TxnOpResponse::Delete(d) => d.prev_kvs().first().map(convert_kv),
            _ => None,
        });
        Ok(match deleted {
            Some(mut kv) => {
                kv.mod_revision = revision;
                CasOutcome {
                    revision,
                    current: Some(kv),
                    succeeded: true,
                }
            }
            // Nothing was there to delete (only possible unconditionally).
            None => CasOutcome {
                revision,
                current: None,
                succeeded: false,
            },
        })
    }

    async fn list(
        &self,
        prefix: &str,
        start_key: &str,
        limit: i64,
        revision: Revision,
    ) -> Result<ListResult> {
        let (key, end) = key_range(prefix, start_key);
        let result = self
            .call("list", Kind::Read, |mut c| {
                let opts = ec::GetOptions::new()
                    .with_range(end.clone())
                    .with_limit(limit.max(0))
                    .with_revision(revision);
                let key = key.clone();
                async move { c.get(key, Some(opts)).await }
            })
            .await;
        match result {
            Ok(mut resp) => {
                let current = header_rev(resp.header());
                let more = resp.more();
                Ok(ListResult {
                    revision: if revision > 0 { revision } else { current },
                    kvs: resp.take_kvs().iter().map(convert_kv).collect(),
                    more,
                })
            }
            Err(e) => Err(self.map_err(e, "list", revision).await),
        }
    }

    async fn count(&self, prefix: &str) -> Result<(Revision, i64)> {
        let (key, end) = key_range(prefix, "");
        let result = self
            .call("count", Kind::Read, |mut c| {
                let opts = ec::GetOptions::new()
                    .with_range(end.clone())
                    .with_count_only();
                let key = key.clone();
                async move { c.get(key, Some(opts)).await }
            })
            .await;
        match result {
            Ok(resp) => Ok((header_rev(resp.header()), resp.count())),
            Err(e) => Err(self.map_err(e, "count", 0).await),
        }
    }

    async fn current_revision(&self) -> Result<Revision> {
        // A linearizable read: its header carries the cluster's current revision.
        match self.range_one(PROBE_KEY, 0).await {
            Ok((rev, _)) => Ok(rev),
            Err(e) => Err(StoreError::Backend(format!("etcd current revision: {e}"))),
        }
    }

    async fn compact_revision(&self) -> Result<Revision> {
        let floor = self.compact_floor.load(Ordering::Relaxed);
        if !self.is_compacted(floor.max(1)).await? {
            return Ok(floor);
        }
        // Smallest readable revision in (floor, current]: the current one always is.
        let (mut lo, mut hi) = (floor.max(1), self.current_revision().await?);
        while hi - lo > 1 {
            let mid = lo + (hi - lo) / 2;
            if self.is_compacted(mid).await? {
                lo = mid;
            } else {
                hi = mid;
            }
        }
        self.raise_floor(hi);
        Ok(self.compact_floor.load(Ordering::Relaxed))
    }

    async fn compact(&self, revision: Revision) -> Result<Revision> {
        let result = self
            .call("compact", Kind::Read, |mut c| async move {
                // Compacting is idempotent: repeating it after an unclear failure is safe.
                c.compact(revision, None).await
            })
            .await;
        match result {
            Ok(_) => {
                self.raise_floor(revision);
                Ok(self.compact_floor.load(Ordering::Relaxed).max(revision))
            }
            // At or below the compact revision in force: a no-op, as for the SQLite store.
            Err(e) if matches!(classify(&e), Some(Known::Compacted)) => {
                self.compact_revision().await
            }
            Err(e) => Err(self.map_err(e, "compact", revision).await),
        }
    }

    async fn watch(&self, prefix: &str, start: Revision) -> Result<WatchStream> {
        // Resolve "now" with a linearizable read: the member serving the watch may lag.
        let start = if start > 0 {
            if self.is_compacted(start).await? {
                let compacted = self.compact_revision().await?;
                return Err(StoreError::Compacted {
                    requested: start,
                    compacted,
                });
            }
            start
        } else {
            self.current_revision().await? + 1
        };
        let (key, end) = key_range(prefix, "");
        let first = open_watch(&self.client, &key, &end, start).await?;
        let state = WatchState {
            client: self.client.clone(),
            key,
            end,
            next: start,
            stream: Some(first),
            done: false,
        };
        Ok(futures::stream::unfold(state, |mut st| async move {
            let item = st.next_batch().await?;
            Some((item, st))
        })
        .boxed())
    }

    async fn grant_lease(&self, ttl_seconds: i64) -> Result<LeaseId> {
        let result = self
            .call("lease grant", Kind::Write, |mut c| async move {
                c.lease_grant(ttl_seconds, None).await
            })
            .await;
        match result {
            Ok(resp) if resp.error().is_empty() => Ok(resp.id()),
            Ok(resp) => Err(StoreError::Backend(format!(
                "etcd lease grant: {}",
                resp.error()
            ))),
            Err(e) => Err(self.map_err(e, "lease grant", 0).await),
        }
    }

    async fn revoke_lease(&self, lease: LeaseId) -> Result<()> {
        let result = self
            .call("lease revoke", Kind::Write, |mut c| async move {
                c.lease_revoke(lease).await
            })
            .await;
        match result {
            Ok(_) => Ok(()),
            Err(e) => match self.map_err(e, "lease revoke", 0).await {
                StoreError::LeaseNotFound(_) => Err(StoreError::LeaseNotFound(lease)),
                other => Err(other),
            },
        }
    }

    async fn db_size(&self) -> Result<i64> {
        match self
            .call(
                "status",
                Kind::Read,
                |mut c| async move { c.status().await },
            )
            .await
        {
            Ok(s) => Ok(s.db_size()),
            Err(e) => Err(self.map_err(e, "status", 0).await),
        }
    }
}

/// Creates an etcd watch of `[key, end)` from `start` and waits for etcd to confirm it.
async fn open_watch(
    client: &ec::Client,
    key: &[u8],
    end: &[u8],
    start: Revision,
) -> Result<ec::WatchStream> {
    let opts = ec::WatchOptions::new()
        .with_range(end.to_vec())
        .with_start_revision(start)
        .with_prev_key()
        .with_progress_notify();
    let deadline = Instant::now() + RETRY_FOR;
    let mut stream = loop {
        match client
            .clone()
            .watch_client()
            .watch(key.to_vec(), Some(opts.clone()))
            .await
        {
            Ok(s) => break s,
            // Opening a watch changes nothing: retry while the cluster is unreachable.
            Err(e) if retryable(&e, Kind::Read) && Instant::now() < deadline => {
                debug!(error = %e, "opening an etcd watch failed; retrying");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => return Err(StoreError::Backend(format!("etcd watch: {e}"))),
        }
    };
    // The first response confirms the watch; from then on, every later write is seen.
    match stream.message().await {
        Ok(Some(resp)) if resp.created() && !resp.canceled() => Ok(stream),
        Ok(Some(resp)) if resp.compact_revision() > 0 => Err(StoreError::Compacted {
            requested: start,
            compacted: resp.compact_revision(),
        }),
        Ok(Some(resp)) => Err(StoreError::Backend(format!(
            "etcd refused the watch: {}",
            resp.cancel_reason()
        ))),
        Ok(None) => Err(StoreError::Backend("etcd closed the watch stream".into())),
        Err(e) => Err(StoreError::Backend(format!("etcd watch: {e}"))),
    }
}

struct WatchState {
    client: ec::Client,
    key: Vec<u8>,
    end: Vec<u8>,
    /// The revision of the next event to deliver.
    next: Revision,
    stream: Option<ec::WatchStream>,
    done: bool,
}

impl WatchState {
    /// The next batch, or `None` when the stream has ended (after an error item).
    async fn next_batch(&mut self) -> Option<Result<Vec<Event>>> {
        if self.done {
            return None;
        }
        let mut broken_since: Option<Instant> = None;
        loop {
            let Some(stream) = self.stream.as_mut() else {
                // Re-create a broken watch from where it stopped.
                match open_watch(&self.client, &self.key, &self.end, self.next).await {
                    Ok(s) => {
                        debug!(next = self.next, "etcd watch re-created");
                        self.stream = Some(s);
                        continue;
                    }
                    Err(e @ StoreError::Compacted { .. }) => return self.fail(e),
                    Err(e) => {
                        let since = *broken_since.get_or_insert_with(Instant::now);
                        if since.elapsed() > RETRY_FOR {
                            return self.fail(e);
                        }
                        tokio::time::sleep(Duration::from_millis(200)).await;
                        continue;
                    }
                }
            };
            let resp = match stream.message().await {
                Ok(Some(resp)) => resp,
                Ok(None) | Err(_) => {
                    // The member went away or lost its leader: resume elsewhere.
                    self.stream = None;
                    broken_since.get_or_insert_with(Instant::now);
                    continue;
                }
            };
            if resp.compact_revision() > 0 {
                return self.fail(StoreError::Compacted {
                    requested: self.next,
                    compacted: resp.compact_revision(),
                });
            }
            if resp.canceled() {
                // E.g. the member lost its leader (`require_leader`): resume elsewhere.
                debug!(
                    reason = resp.cancel_reason(),
                    "etcd canceled the watch; re-creating"
                );
                self.stream = None;
                broken_since.get_or_insert_with(Instant::now);
                continue;
            }
            // Progress notifications and other event-less responses carry nothing to deliver.
            let events: Vec<Event> = resp
                .events()
                .iter()
                .filter(|e| e.kv().is_some_and(|kv| kv.mod_revision() >= self.next))
                .map(convert_event)
                .collect();
            if let Some(last) = events.last() {
                self.next = last.kv.mod_revision + 1;
                return Some(Ok(events));
            }
        }
    }

    fn fail(&mut self, e: StoreError) -> Option<Result<Vec<Event>>> {
        self.done = true;
        self.stream = None;
        Some(Err(e))
    }
}

fn convert_event(e: &ec::Event) -> Event {
    let kv = e.kv().map(convert_kv).unwrap_or_else(|| KeyValue {
        key: String::new(),
        create_revision: 0,
        mod_revision: 0,
        version: 0,
        value: Vec::new(),
        lease: 0,
    });
    let prev_kv = e.prev_kv().map(convert_kv);
    match e.event_type() {
        ec::EventType::Put if kv.create_revision == kv.mod_revision => Event {
            kind: EventKind::Create,
            kv,
            prev_kv: None,
        },
        ec::EventType::Put => Event {
            kind: EventKind::Update,
            kv,
            prev_kv,
        },
        ec::EventType::Delete => {
            // etcd's delete event carries only the key and the delete's revision; the trait
            // wants the last value, stamped with the delete's revision.
            let kv = match &prev_kv {
                Some(prev) => KeyValue {
                    mod_revision: kv.mod_revision,
                    ..prev.clone()
                },
                None => kv,
            };
            Event {
                kind: EventKind::Delete,
                kv,
                prev_kv,
            }
        }
    }
}

#[cfg(test)]
mod unit {
    use super::*;

    #[test]
    fn ranges() {
        assert_eq!(prefix_end(b"/a/"), b"/a0".to_vec());
        assert_eq!(prefix_end(b"a\xff"), b"b".to_vec());
        assert_eq!(prefix_end(b"\xff\xff"), vec![0]);
        assert_eq!(prefix_end(b""), vec![0]);
        assert_eq!(key_range("/p/", ""), (b"/p/".to_vec(), b"/p0".to_vec()));
        assert_eq!(
            key_range("/p/", "/p/b"),
            (b"/p/b".to_vec(), b"/p0".to_vec())
        );
        assert_eq!(key_range("/p/", "/a"), (b"/p/".to_vec(), b"/p0".to_vec()));
        assert_eq!(key_range("", ""), (vec![0], vec![0]));
    }
}
