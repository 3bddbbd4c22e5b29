//! The watch cache: one store watch over every key feeds an in-memory copy of the latest
//! state and a window of recent events. Every API watch reads from it, so thousands of
//! watchers cost one store watch; `resourceVersion=0` lists, and consistent lists once the
//! cache has caught up with the store, are served from memory.
//!
//! A watcher follows the event window at its own pace: a slow one loses nothing while it
//! stays inside the window, and gets 410 Gone (then relists) once it falls out of it, as
//! upstream's cacher. If the store watch ends (a backend restart), the cache relists and
//! moves its window start past every older revision, so watchers resume through 410 and a
//! fresh list: none sees an event twice or misses one silently.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use futures::StreamExt;
use kine_sqlite::{Backend, Event, EventKind, KeyValue, StoreError};
use tokio::sync::{watch, OnceCell};

/// Every key the apiserver stores lives under this prefix.
const ROOT: &str = "/registry/";

/// Events kept for watchers that resume or lag, by default.
pub const DEFAULT_WINDOW: usize = 50_000;

/// Events below the window start are gone: the watcher must relist.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TooOld {
    /// The oldest revision a watch may still start after.
    pub oldest: i64,
}

struct Inner {
    objects: BTreeMap<String, KeyValue>,
    events: VecDeque<Event>,
    /// Every change up to this revision has been applied.
    revision: i64,
    /// Watches may resume after any revision >= this one.
    oldest: i64,
}

/// The cache over one backend.
pub struct WatchCache {
    backend: Arc<dyn Backend>,
    inner: RwLock<Inner>,
    progress: watch::Sender<i64>,
    started: OnceCell<()>,
    window: usize,
}

impl WatchCache {
    pub fn new(backend: Arc<dyn Backend>, window: usize) -> Arc<Self> {
        Arc::new(WatchCache {
            backend,
            inner: RwLock::new(Inner { objects: BTreeMap::new(), events: VecDeque::new(), revision: 0, oldest: 0 }),
            progress: watch::channel(0).0,
            started: OnceCell::new(),
            window: window.max(1),
        })
    }

    /// Fills the cache and starts following the store, once; later calls return at once.
    pub async fn ensure_started(self: &Arc<Self>) -> Result<(), StoreError> {
        self.started
            .get_or_try_init(|| async {
                let rev = self.relist().await?;
                tokio::spawn(Arc::clone(self).follow(rev));
                Ok::<(), StoreError>(())
            })
            .await
            .map(|_| ())
    }

    /// Replaces the cached state with a fresh list; the event window restarts after it.
    async fn relist(&self) -> Result<i64, StoreError> {
        let mut objects = BTreeMap::new();
        let mut start = ROOT.to_string();
        let mut revision = 0;
        loop {
            let page = self.backend.list(ROOT, &start, 1000, revision).await?;
            revision = page.revision;
            for kv in &page.kvs {
                objects.insert(kv.key.clone(), kv.clone());
            }
            match page.kvs.last() {
                Some(last) if page.more => start = format!("{}\0", last.key),
                _ => break,
            }
        }
        let mut inner = self.inner.write().expect("cache lock");
        inner.objects = objects;
        inner.events.clear();
        inner.revision = revision;
        inner.oldest = revision;
        drop(inner);
        self.progress.send_replace(revision);
        Ok(revision)
    }

    /// Applies the store's changes forever, relisting whenever the store watch ends.
    async fn follow(self: Arc<Self>, mut revision: i64) {
        loop {
            match self.backend.watch(ROOT, revision + 1).await {
                Ok(mut stream) => {
                    while let Some(batch) = stream.next().await {
                        match batch {
                            Ok(events) => revision = self.apply(events),
                            Err(e) => {
                                tracing::warn!(error = %e, "watch cache: store watch failed");
                                break;
                            }
                        }
                    }
                }
                Err(e) => tracing::warn!(error = %e, "watch cache: starting the store watch failed"),
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
            match self.relist().await {
                Ok(rev) => {
                    tracing::info!(revision = rev, "watch cache: resynced with the store");
                    revision = rev;
                }
                Err(e) => tracing::warn!(error = %e, "watch cache: relist failed"),
            }
        }
    }

    fn apply(&self, events: Vec<Event>) -> i64 {
        let mut inner = self.inner.write().expect("cache lock");
        for ev in events {
            match ev.kind {
                EventKind::Delete => inner.objects.remove(&ev.kv.key),
                _ => inner.objects.insert(ev.kv.key.clone(), ev.kv.clone()),
            };
            inner.revision = inner.revision.max(ev.kv.mod_revision);
            inner.events.push_back(ev);
        }
        while inner.events.len() > self.window {
            if let Some(ev) = inner.events.pop_front() {
                inner.oldest = ev.kv.mod_revision;
            }
        }
        let rev = inner.revision;
        drop(inner);
        self.progress.send_replace(rev);
        rev
    }

    /// The revision every cached change is applied up to.
    pub fn revision(&self) -> i64 {
        self.inner.read().expect("cache lock").revision
    }

    /// Waits until the cache has applied `revision` (false after `timeout`).
    pub async fn wait_for(&self, revision: i64, timeout: Duration) -> bool {
        let mut rx = self.progress.subscribe();
        tokio::time::timeout(timeout, rx.wait_for(|r| *r >= revision)).await.is_ok_and(|r| r.is_ok())
    }

    /// A receiver that changes whenever the cache moves on.
    pub fn subscribe(&self) -> watch::Receiver<i64> {
        self.progress.subscribe()
    }

    /// The live object at `key`, if the cache has it.
    pub fn get(&self, key: &str) -> Option<KeyValue> {
        self.inner.read().expect("cache lock").objects.get(key).cloned()
    }

    /// The live keys under `prefix`, and the revision they are current at.
    pub fn list(&self, prefix: &str) -> (i64, Vec<KeyValue>) {
        let inner = self.inner.read().expect("cache lock");
        let kvs = inner.objects.range(prefix.to_string()..).take_while(|(k, _)| k.starts_with(prefix)).map(|(_, v)| v.clone()).collect();
        (inner.revision, kvs)
    }

    /// Up to `max` events under `prefix` with revisions after `after`, and the revision the
    /// caller has then seen everything up to. `TooOld` when `after` fell out of the window.
    pub fn events_after(&self, prefix: &str, after: i64, max: usize) -> Result<(Vec<Event>, i64), TooOld> {
        let inner = self.inner.read().expect("cache lock");
        if after < inner.oldest {
            return Err(TooOld { oldest: inner.oldest });
        }
        let start = inner.events.partition_point(|e| e.kv.mod_revision <= after);
        let mut out = Vec::new();
        let mut seen = after;
        for ev in inner.events.range(start..) {
            if out.len() == max {
                return Ok((out, seen));
            }
            seen = ev.kv.mod_revision;
            if ev.kv.key.starts_with(prefix) {
                out.push(ev.clone());
            }
        }
        Ok((out, inner.revision.max(after)))
    }
}
