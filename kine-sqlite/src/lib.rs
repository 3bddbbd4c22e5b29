//! A revisioned key-value store with etcd v3 semantics in one SQLite file, after kine.
//!
//! The apiserver talks to storage only through the [`Backend`] trait; [`SqliteBackend`] is the
//! embedded implementation: an append-only log table whose row ids are the global revisions,
//! with CAS writes, reads at past revisions, lossless watches, compaction and leases.
//!
//! ```no_run
//! # async fn demo() -> kine_sqlite::Result<()> {
//! use kine_sqlite::{Backend, SqliteBackend};
//! let store = SqliteBackend::open(std::path::Path::new("/var/lib/krust/state.db")).await?;
//! store.spawn_compactor(std::time::Duration::from_secs(300), 1000);
//! let rev = store.create("/registry/pods/default/a", b"{}".to_vec(), 0).await?;
//! let (_, kv) = store.get("/registry/pods/default/a", rev).await?;
//! assert!(kv.is_some());
//! # Ok(()) }
//! ```

pub mod backend;
pub mod grpc;
#[cfg(feature = "etcd")]
pub mod etcd;
mod log;
mod sqlite;
mod watch;

#[cfg(test)]
mod tests;

pub use backend::*;
pub use sqlite::{Options, SqliteBackend};
#[cfg(feature = "etcd")]
pub use etcd::{EtcdBackend, TlsFiles};
