//! The narrow storage interface the apiserver uses, shaped after kine's `Backend`.
//!
//! Keys are `/registry/...` strings; values are opaque bytes. Every write gets the next
//! value of one global revision counter. A real-etcd backend implements the same trait.

use async_trait::async_trait;
use futures::stream::BoxStream;

/// A position in the store's single, global history. Revision 0 means "current".
pub type Revision = i64;

/// A lease identifier; 0 means "no lease".
pub type LeaseId = i64;

/// One key at one revision, as etcd's `mvccpb.KeyValue`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyValue {
    pub key: String,
    /// Revision at which the key was (last) created.
    pub create_revision: Revision,
    /// Revision of the last write to the key.
    pub mod_revision: Revision,
    /// Number of writes since creation (1 after create).
    pub version: i64,
    pub value: Vec<u8>,
    pub lease: LeaseId,
}

/// What happened to a key at one revision.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventKind {
    Create,
    Update,
    Delete,
}

/// One change, delivered by [`Backend::watch`] in revision order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    pub kind: EventKind,
    /// The key after the change. For a delete: the last value, with `mod_revision` set to the
    /// revision of the delete (so the apiserver can stamp the DELETED object's resourceVersion).
    pub kv: KeyValue,
    /// The key before the change (`None` for a create).
    pub prev_kv: Option<KeyValue>,
}

/// Result of a compare-and-swap write. A failed compare is a normal result, not an error.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CasOutcome {
    /// The store's revision after the call (the new write's revision when it succeeded).
    pub revision: Revision,
    /// The key's value now: the new value after a successful update, the unchanged current
    /// value after a failed compare, the deleted value after a successful delete, `None` if absent.
    pub current: Option<KeyValue>,
    pub succeeded: bool,
}

/// Result of a range read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListResult {
    /// The revision the read was served at.
    pub revision: Revision,
    pub kvs: Vec<KeyValue>,
    /// True when `limit` cut the result short.
    pub more: bool,
}

/// A lease's state, as etcd's `LeaseTimeToLive` reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaseInfo {
    pub id: LeaseId,
    /// The TTL the lease was granted with, in seconds (a keep-alive renews it to this).
    pub granted_ttl: i64,
    /// Seconds left before it expires (0 when due).
    pub remaining_ttl: i64,
    /// Keys attached to the lease; filled only when asked for.
    pub keys: Vec<String>,
}

/// Errors a backend may return. Few on purpose, as etcd's own.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("key already exists")]
    KeyExists,
    #[error("required revision {requested} has been compacted (compacted at {compacted})")]
    Compacted { requested: Revision, compacted: Revision },
    #[error("required revision {requested} is a future revision (current {current})")]
    FutureRevision { requested: Revision, current: Revision },
    #[error("lease {0} not found")]
    LeaseNotFound(LeaseId),
    #[error("unsupported: {0}")]
    Unsupported(&'static str),
    #[error("storage backend failed: {0}")]
    Backend(String),
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// A stream of event batches, in revision order, none lost or duplicated. Dropping it ends
/// the watch. An error item (e.g. `Compacted`) ends the stream.
pub type WatchStream = BoxStream<'static, Result<Vec<Event>>>;

/// The storage driver interface (kine's `Backend`). All methods are safe to call concurrently.
#[async_trait]
pub trait Backend: Send + Sync + 'static {
    /// Reads one key at `revision` (0 = current). `Ok((rev, None))` when absent.
    async fn get(&self, key: &str, revision: Revision) -> Result<(Revision, Option<KeyValue>)>;

    /// Creates `key` only if it is absent (or deleted); returns the new revision.
    /// `Err(KeyExists)` if it exists.
    async fn create(&self, key: &str, value: Vec<u8>, lease: LeaseId) -> Result<Revision>;

    /// Replaces `key` only if its current `mod_revision` equals `expected`.
    async fn update(&self, key: &str, value: Vec<u8>, expected: Revision, lease: LeaseId) -> Result<CasOutcome>;

    /// Deletes `key` if its current `mod_revision` equals `expected` (0 = unconditionally).
    async fn delete(&self, key: &str, expected: Revision) -> Result<CasOutcome>;

    /// Lists live keys starting with `prefix` and `>= start_key` (empty = from the prefix),
    /// in key order, at `revision` (0 = current), at most `limit` (0 = no limit).
    async fn list(&self, prefix: &str, start_key: &str, limit: i64, revision: Revision) -> Result<ListResult>;

    /// Counts live keys starting with `prefix` at the current revision.
    async fn count(&self, prefix: &str) -> Result<(Revision, i64)>;

    /// The newest revision.
    async fn current_revision(&self) -> Result<Revision>;

    /// The oldest revision still readable (reads below it fail with `Compacted`).
    async fn compact_revision(&self) -> Result<Revision>;

    /// Drops history older than `revision`, keeping every key's latest live value.
    async fn compact(&self, revision: Revision) -> Result<Revision>;

    /// Streams every change to keys starting with `prefix` whose revision is `>= start`
    /// (0 = changes after the current revision). `Err(Compacted)` if `start` is compacted.
    async fn watch(&self, prefix: &str, start: Revision) -> Result<WatchStream>;

    /// Grants a lease that expires `ttl_seconds` from now; keys written with it are deleted
    /// (with ordinary delete events) when it expires.
    async fn grant_lease(&self, ttl_seconds: i64) -> Result<LeaseId>;

    /// Revokes a lease now, deleting its keys.
    async fn revoke_lease(&self, lease: LeaseId) -> Result<()>;

    /// Size of the database in bytes.
    async fn db_size(&self) -> Result<i64>;

    /// Renews a lease: it now expires its granted TTL from now. Returns that TTL in seconds.
    /// `Err(LeaseNotFound)` if it does not exist (or has expired). Backends without it keep
    /// the default, which answers `Unsupported`.
    async fn keep_alive_lease(&self, lease: LeaseId) -> Result<i64> {
        let _ = lease;
        Err(StoreError::Unsupported("lease keep-alive"))
    }

    /// A lease's granted and remaining TTL, and its keys when `with_keys`.
    /// `Err(LeaseNotFound)` if it does not exist (or has expired).
    async fn lease_info(&self, lease: LeaseId, with_keys: bool) -> Result<LeaseInfo> {
        let _ = (lease, with_keys);
        Err(StoreError::Unsupported("lease time-to-live"))
    }

    /// The ids of all leases, in ascending order.
    async fn leases(&self) -> Result<Vec<LeaseId>> {
        Err(StoreError::Unsupported("lease listing"))
    }
}
