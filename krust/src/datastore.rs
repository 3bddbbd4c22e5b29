//! Choosing and opening the datastore named by `--datastore-endpoint`.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use kine_sqlite::{Backend, SqliteBackend};

/// How often the datastore compacts and how many revisions of history it keeps; kine's
/// defaults are every 5 minutes, keeping the last 1000 revisions so that watchers a little
/// behind can still resume (`--datastore-compact-interval`, `--datastore-compact-retain`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Compaction {
    pub interval: Duration,
    pub keep: i64,
}

/// A parsed `--datastore-endpoint`.
#[derive(Debug, PartialEq, Eq)]
pub enum Endpoint {
    Sqlite(PathBuf),
}

impl Endpoint {
    /// Parses the flag as k3s does: empty means embedded SQLite at `default_db`;
    /// `sqlite://PATH[?options]` names another file. Other kinds are refused by name.
    pub fn parse(flag: Option<&str>, default_db: &Path) -> anyhow::Result<Endpoint> {
        let flag = flag.map(str::trim).unwrap_or_default();
        if flag.is_empty() {
            return Ok(Endpoint::Sqlite(default_db.to_path_buf()));
        }
        if let Some(rest) = flag.strip_prefix("sqlite://") {
            // kine accepts driver options after `?` (e.g. `?_journal=WAL`); our store sets
            // its own, so they are dropped.
            let path = rest.split('?').next().unwrap_or_default();
            if path.is_empty() {
                return Ok(Endpoint::Sqlite(default_db.to_path_buf()));
            }
            return Ok(Endpoint::Sqlite(PathBuf::from(path)));
        }
        let kind = match flag.split("://").next() {
            Some("http" | "https") => "etcd",
            Some("mysql") => "MySQL",
            Some("postgres" | "postgresql") => "PostgreSQL",
            Some("nats") => "NATS",
            _ => "this",
        };
        bail!("datastore endpoint {flag:?}: {kind} datastore is not supported yet; use the embedded SQLite (omit the flag) or sqlite://PATH")
    }
}

/// Opens the datastore and starts its background compaction.
pub async fn open(endpoint: &Endpoint, compaction: Compaction) -> anyhow::Result<Arc<dyn Backend>> {
    match endpoint {
        Endpoint::Sqlite(path) => {
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir)
                    .with_context(|| format!("creating {}", dir.display()))?;
            }
            let store = SqliteBackend::open(path)
                .await
                .with_context(|| format!("opening SQLite datastore {}", path.display()))?;
            // The task holds only a weak reference; it stops when the store is dropped.
            store.spawn_compactor(compaction.interval, compaction.keep);
            Ok(store)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints() {
        let def = Path::new("/d/server/db/state.db");
        assert_eq!(
            Endpoint::parse(None, def).unwrap(),
            Endpoint::Sqlite(def.into())
        );
        assert_eq!(
            Endpoint::parse(Some(""), def).unwrap(),
            Endpoint::Sqlite(def.into())
        );
        assert_eq!(
            Endpoint::parse(Some("sqlite:///tmp/x.db?_journal=WAL"), def).unwrap(),
            Endpoint::Sqlite("/tmp/x.db".into())
        );
        assert_eq!(
            Endpoint::parse(Some("sqlite://rel.db"), def).unwrap(),
            Endpoint::Sqlite("rel.db".into())
        );
        let err = Endpoint::parse(Some("https://10.0.0.1:2379"), def)
            .unwrap_err()
            .to_string();
        assert!(err.contains("etcd datastore is not supported yet"), "{err}");
        let err = Endpoint::parse(Some("foo"), def).unwrap_err().to_string();
        assert!(err.contains("not supported yet"), "{err}");
    }
}
