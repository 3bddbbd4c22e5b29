//! Choosing and opening the datastore named by `--datastore-endpoint`.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use kine_sqlite::{Backend, EtcdBackend, SqliteBackend, TlsFiles};

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
    /// An etcd cluster: its client URLs (`http://` or `https://`).
    Etcd(Vec<String>),
}

impl Endpoint {
    /// Parses the flag as k3s does: empty means embedded SQLite at `default_db`;
    /// `sqlite://PATH[?options]` names another file; `http(s)://HOST:PORT[,...]` is an etcd
    /// cluster. Other kinds are refused by name.
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
        if flag.starts_with("http://") || flag.starts_with("https://") {
            // k3s's form for etcd: one URL, or several separated by commas.
            let urls: Vec<String> = flag
                .split(',')
                .map(str::trim)
                .filter(|u| !u.is_empty())
                .map(str::to_owned)
                .collect();
            for url in &urls {
                let rest = url
                    .strip_prefix("http://")
                    .or_else(|| url.strip_prefix("https://"));
                match rest {
                    Some(host) if !host.is_empty() && !host.starts_with('/') => {}
                    _ => bail!("datastore endpoint {flag:?}: {url:?} is not an etcd URL such as https://10.0.0.1:2379"),
                }
            }
            return Ok(Endpoint::Etcd(urls));
        }
        let kind = match flag.split("://").next() {
            Some("mysql") => "MySQL",
            Some("postgres" | "postgresql") => "PostgreSQL",
            Some("nats") => "NATS",
            _ => "this",
        };
        bail!("datastore endpoint {flag:?}: {kind} datastore is not supported yet; use the embedded SQLite (omit the flag), sqlite://PATH or etcd (https://HOST:2379)")
    }
}

/// Opens the datastore and starts its background compaction.
pub async fn open(endpoint: &Endpoint, compaction: Compaction) -> anyhow::Result<Arc<dyn Backend>> {
    open_with(endpoint, &None, compaction).await
}

/// [`open`], with TLS files for an etcd datastore (`--datastore-cafile` ...).
pub async fn open_with(
    endpoint: &Endpoint,
    tls: &Option<TlsFiles>,
    compaction: Compaction,
) -> anyhow::Result<Arc<dyn Backend>> {
    if tls.is_some() && !matches!(endpoint, Endpoint::Etcd(_)) {
        bail!("--datastore-cafile/-certfile/-keyfile apply to an etcd datastore only");
    }
    match endpoint {
        Endpoint::Etcd(urls) => {
            let store = EtcdBackend::connect(urls, tls.clone())
                .await
                .with_context(|| format!("connecting to the etcd datastore {}", urls.join(",")))?;
            tracing::info!(endpoints = %urls.join(","), "using the etcd datastore");
            // As kube-apiserver does for etcd: compact old history periodically.
            store.spawn_compactor(compaction.interval, compaction.keep);
            Ok(store)
        }
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
        assert_eq!(
            Endpoint::parse(Some("https://10.0.0.1:2379"), def).unwrap(),
            Endpoint::Etcd(vec!["https://10.0.0.1:2379".into()])
        );
        assert_eq!(
            Endpoint::parse(Some("http://a:2379, http://b:2379,"), def).unwrap(),
            Endpoint::Etcd(vec!["http://a:2379".into(), "http://b:2379".into()])
        );
        let err = Endpoint::parse(Some("http://a:2379,mysql://x"), def)
            .unwrap_err()
            .to_string();
        assert!(err.contains("not an etcd URL"), "{err}");
        let err = Endpoint::parse(Some("mysql://u@tcp(h)/db"), def)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("MySQL datastore is not supported yet"),
            "{err}"
        );
        let err = Endpoint::parse(Some("foo"), def).unwrap_err().to_string();
        assert!(err.contains("not supported yet"), "{err}");
    }
}
