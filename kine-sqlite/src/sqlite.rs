//! [`SqliteBackend`]: etcd v3 semantics over the append-only log in [`crate::log`].
//!
//! Concurrency model: rusqlite is blocking, so every database call runs on tokio's blocking
//! pool (`spawn_blocking`). Writes go through one connection behind a `std::sync::Mutex` and run
//! in `BEGIN IMMEDIATE` transactions (taking SQLite's write lock up front, so a read-then-write
//! transaction can never fail half way with SQLITE_BUSY on lock upgrade). Reads use a small pool
//! of separate connections; in WAL mode they never block, nor are blocked by, the writer, and
//! each read runs in one transaction so that it sees a single consistent snapshot.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use rusqlite::{Connection, OpenFlags, Transaction, TransactionBehavior};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};

use crate::backend::{
    Backend, CasOutcome, KeyValue, LeaseId, LeaseInfo, ListResult, Result, Revision, StoreError,
    WatchStream,
};
use crate::log::{self, Ctx, KeyRange, NewRow, Row};

/// Tunables for [`SqliteBackend::open_with`]. [`Options::default`] is what [`SqliteBackend::open`]
/// uses.
#[derive(Clone, Debug)]
pub struct Options {
    /// `PRAGMA synchronous=FULL` when true (the default): every acknowledged write has been
    /// fsynced and survives power loss. `false` selects `NORMAL`, which in WAL mode still
    /// survives a crash of the process but may lose the last commits on power loss; meant for
    /// tests and throwaway clusters.
    pub synchronous_full: bool,
    /// How long a connection waits for a lock held by another connection or process.
    pub busy_timeout: Duration,
    /// How often expired leases are looked for.
    pub lease_sweep_interval: Duration,
    /// Maximum number of events a watcher reads per query (and sends per batch).
    pub watch_batch: i64,
    /// Batches a watcher may have queued for a slow consumer before it stops reading.
    pub watch_queue: usize,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            synchronous_full: true,
            busy_timeout: Duration::from_secs(10),
            lease_sweep_interval: Duration::from_secs(1),
            watch_batch: 500,
            watch_queue: 8,
        }
    }
}

/// Ids per compaction transaction: keeps each write-lock hold short so writers interleave.
const COMPACT_BATCH: i64 = 1000;
/// Idle read connections kept for reuse.
const MAX_IDLE_READERS: usize = 8;

/// The shared database state; watcher tasks hold it too, so it outlives the backend handle
/// while watches are open.
pub(crate) struct Db {
    path: PathBuf,
    opts: Options,
    writer: Mutex<Connection>,
    readers: Mutex<Vec<Connection>>,
    /// The newest committed revision, bumped after each write commits. Watchers wait on it.
    pub(crate) rev_tx: watch::Sender<Revision>,
    pub(crate) active_watchers: AtomicUsize,
    /// Positions of the running watchers (weak: a watcher's task owns its position).
    watch_positions: Mutex<Vec<Weak<WatchPosition>>>,
}

/// A watcher's key range and position, shared between its task and the writer.
///
/// Invariant: every event in `range` with revision `<= pos` has been read out of the log by
/// the watcher's task (and is queued, or about to be, for its consumer). The task raises `pos`
/// after each read of the log; the writer raises it past writes outside the range (see
/// [`Db::advance_watchers`]).
pub(crate) struct WatchPosition {
    pub(crate) range: KeyRange,
    pub(crate) pos: AtomicI64,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding the lock leaves the connection usable (an open transaction was
    // rolled back when it was dropped), so poisoning is ignored.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn open_connection(path: &Path, opts: &Options, read_only: bool) -> Result<Connection> {
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
        | OpenFlags::SQLITE_OPEN_CREATE
        | OpenFlags::SQLITE_OPEN_NO_MUTEX
        | OpenFlags::SQLITE_OPEN_URI;
    let conn =
        Connection::open_with_flags(path, flags).ctx(&format!("opening {}", path.display()))?;
    conn.busy_timeout(opts.busy_timeout)
        .ctx("setting busy timeout")?;
    let mode: String = conn
        .query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0))
        .ctx("enabling WAL")?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(StoreError::Backend(format!(
            "sqlite: could not enable WAL journal (got {mode})"
        )));
    }
    let sync = if opts.synchronous_full {
        "FULL"
    } else {
        "NORMAL"
    };
    conn.pragma_update(None, "synchronous", sync)
        .ctx("setting synchronous")?;
    if read_only {
        // Guards against a read path ever writing by mistake.
        conn.pragma_update(None, "query_only", true)
            .ctx("setting query_only")?;
    }
    conn.set_prepared_statement_cache_capacity(32);
    Ok(conn)
}

impl Db {
    /// Runs `f` in a read transaction on a pooled read connection. Blocking.
    fn read_blocking<T>(&self, f: impl FnOnce(&Connection) -> Result<T>) -> Result<T> {
        let pooled = lock(&self.readers).pop();
        let mut conn = match pooled {
            Some(c) => c,
            None => open_connection(&self.path, &self.opts, true)?,
        };
        let out = {
            // A deferred transaction: the snapshot is taken at the first read and held until
            // the end, so multi-statement reads (revision checks + the query) agree.
            let tx = conn.transaction().ctx("beginning read transaction")?;
            let out = f(&tx);
            drop(tx); // read-only: rollback is the same as commit
            out
        };
        let mut idle = lock(&self.readers);
        if idle.len() < MAX_IDLE_READERS {
            idle.push(conn);
        }
        out
    }

    /// Runs `f` in a `BEGIN IMMEDIATE` transaction on the write connection and commits it if `f`
    /// succeeds (an `Err` rolls back). Blocking. Watchers are woken after the commit.
    fn write_blocking<T>(&self, f: impl FnOnce(&Transaction<'_>) -> Result<T>) -> Result<T> {
        let mut conn = lock(&self.writer);
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .ctx("beginning write transaction")?;
        let before = log::current_rev(&tx)?;
        let out = f(&tx)?;
        let rev = log::current_rev(&tx)?;
        let written = if rev > before && self.has_watchers() {
            log::names_after(&tx, before)?
        } else {
            Vec::new()
        };
        tx.commit().ctx("committing")?;
        // Still under the writer lock, so positions and the published revision only grow.
        // Positions move first: a watcher woken by the new revision must already see them.
        self.advance_watchers(&written);
        self.rev_tx.send_if_modified(|cur| {
            if rev > *cur {
                *cur = rev;
                true
            } else {
                false
            }
        });
        Ok(out)
    }

    /// The lowest position among running watchers.
    pub(crate) fn oldest_watch_position(&self) -> Option<Revision> {
        let all = lock(&self.watch_positions);
        all.iter()
            .filter_map(|w| w.upgrade())
            .map(|w| w.pos.load(Ordering::SeqCst))
            .min()
    }

    fn has_watchers(&self) -> bool {
        !lock(&self.watch_positions).is_empty()
    }

    /// Registers a watcher's position so that writes outside its range advance it.
    pub(crate) fn register_watcher(&self, pos: &Arc<WatchPosition>) {
        let mut all = lock(&self.watch_positions);
        all.retain(|w| w.strong_count() > 0);
        all.push(Arc::downgrade(pos));
    }

    /// After a commit of `written` (revision, key) rows, in revision order: moves every
    /// watcher that had seen everything up to just before a revision past it, as long as
    /// the key is outside its range — so that a caught-up watcher stays caught up (and is
    /// not woken, nor later judged compacted) while writes go to other keys. This is what
    /// etcd does for its "synced" watchers.
    fn advance_watchers(&self, written: &[(Revision, String)]) {
        if written.is_empty() {
            return;
        }
        let mut all = lock(&self.watch_positions);
        all.retain(|w| {
            let Some(w) = w.upgrade() else { return false };
            for (rev, name) in written {
                if w.range.contains(name)
                    || w.pos
                        .compare_exchange(rev - 1, *rev, Ordering::SeqCst, Ordering::SeqCst)
                        .is_err()
                {
                    break;
                }
            }
            true
        });
    }

    pub(crate) async fn read<T, F>(self: &Arc<Self>, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T> + Send + 'static,
    {
        let db = self.clone();
        tokio::task::spawn_blocking(move || db.read_blocking(f))
            .await
            .map_err(|e| StoreError::Backend(format!("read task failed: {e}")))?
    }

    pub(crate) async fn write<T, F>(self: &Arc<Self>, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Transaction<'_>) -> Result<T> + Send + 'static,
    {
        let db = self.clone();
        tokio::task::spawn_blocking(move || db.write_blocking(f))
            .await
            .map_err(|e| StoreError::Backend(format!("write task failed: {e}")))?
    }

    pub(crate) fn opts(&self) -> &Options {
        &self.opts
    }
}

/// Resolves a requested read revision (0 = current) against the snapshot's bounds.
pub(crate) fn check_revision(c: &Connection, requested: Revision) -> Result<Revision> {
    if requested < 0 {
        return Err(StoreError::Unsupported("negative revision"));
    }
    let current = log::current_rev(c)?;
    if requested == 0 {
        return Ok(current);
    }
    if requested > current {
        return Err(StoreError::FutureRevision { requested, current });
    }
    let compacted = log::compact_rev(c)?;
    if requested < compacted {
        return Err(StoreError::Compacted {
            requested,
            compacted,
        });
    }
    Ok(requested)
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

fn check_lease(c: &Connection, lease: LeaseId) -> Result<()> {
    if lease != 0 && !log::lease_exists(c, lease)? {
        return Err(StoreError::LeaseNotFound(lease));
    }
    Ok(())
}

/// Appends the tombstone deleting the live key whose newest row is `prev`.
fn append_delete(c: &Connection, prev: &Row) -> Result<Revision> {
    log::append(
        c,
        &NewRow {
            name: &prev.name,
            created: false,
            deleted: true,
            create_revision: Some(prev.create_revision),
            prev_revision: prev.id,
            // A tombstone carries the last value, lease and version so the delete event (and
            // its prev_kv) can be built from this row alone.
            lease: prev.lease,
            value: &prev.value,
            old_value: Some(&prev.value),
            version: prev.version,
            old_lease: prev.lease,
        },
    )
}

/// Deletes every key of `lease` and the lease itself, in the caller's transaction.
/// Returns false when the lease does not exist.
fn revoke_in(c: &Connection, lease: LeaseId) -> Result<bool> {
    if !log::lease_exists(c, lease)? {
        return Ok(false);
    }
    for row in log::live_with_lease(c, lease)? {
        append_delete(c, &row)?;
    }
    log::lease_delete(c, lease)?;
    Ok(true)
}

/// A revisioned key-value store with etcd v3 semantics in one SQLite file (kine's design).
///
/// Open it with [`SqliteBackend::open`]; use it through the [`Backend`] trait. Opening spawns a
/// lease sweeper on the current tokio runtime; [`SqliteBackend::spawn_compactor`] adds periodic
/// compaction. Background tasks hold only a weak reference and stop once the last `Arc` to the
/// backend is dropped (open watch streams keep the database itself open until they are dropped).
pub struct SqliteBackend {
    db: Arc<Db>,
    /// Serializes compactions (each runs as several short transactions).
    compact_lock: tokio::sync::Mutex<()>,
}

impl std::fmt::Debug for SqliteBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteBackend")
            .field("path", &self.db.path)
            .finish_non_exhaustive()
    }
}

impl SqliteBackend {
    /// Opens (creating if needed) the database at `path` with [`Options::default`]:
    /// WAL journal, `synchronous=FULL`, schema applied, lease sweeper running.
    ///
    /// Async because it does its file I/O on the blocking pool and spawns the sweeper; it
    /// must be called from within a tokio runtime.
    pub async fn open(path: &Path) -> Result<Arc<SqliteBackend>> {
        Self::open_with(path, Options::default()).await
    }

    /// Like [`SqliteBackend::open`], with explicit [`Options`].
    pub async fn open_with(path: &Path, opts: Options) -> Result<Arc<SqliteBackend>> {
        let path = path.to_path_buf();
        let db = tokio::task::spawn_blocking(move || -> Result<Db> {
            let mut writer = open_connection(&path, &opts, false)?;
            let tx = writer
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .ctx("beginning schema transaction")?;
            for stmt in log::SCHEMA {
                tx.execute_batch(stmt).ctx("applying schema")?;
            }
            let rev = log::current_rev(&tx)?;
            tx.commit().ctx("committing schema")?;
            info!(path = %path.display(), revision = rev, "opened sqlite store");
            let (rev_tx, _) = watch::channel(rev);
            Ok(Db {
                path,
                opts,
                writer: Mutex::new(writer),
                readers: Mutex::new(Vec::new()),
                rev_tx,
                active_watchers: AtomicUsize::new(0),
                watch_positions: Mutex::new(Vec::new()),
            })
        })
        .await
        .map_err(|e| StoreError::Backend(format!("open task failed: {e}")))??;
        let backend = Arc::new(SqliteBackend {
            db: Arc::new(db),
            compact_lock: tokio::sync::Mutex::new(()),
        });
        backend.spawn_lease_sweeper();
        Ok(backend)
    }

    /// The database file this backend was opened on.
    pub fn path(&self) -> &Path {
        &self.db.path
    }

    /// Number of watch tasks currently running (a watch ends when its stream is dropped).
    pub fn active_watchers(&self) -> usize {
        self.db.active_watchers.load(Ordering::SeqCst)
    }

    /// The revision up to which every running watcher has read the log (`None` when no
    /// watch runs). A watcher only trails the current revision while it has unread events in
    /// its range, e.g. behind a slow consumer; compacting above this + 1 ends such watchers
    /// with `Compacted`.
    pub fn oldest_watch_position(&self) -> Option<Revision> {
        self.db.oldest_watch_position()
    }

    /// Number of rows in the log, history included (diagnostics and tests).
    pub async fn log_rows(&self) -> Result<i64> {
        self.db.read(log::row_count).await
    }

    /// Spawns a task that, every `interval`, compacts to `current - keep` revisions (kine's
    /// defaults: 5 minutes, keep 1000). It stops when the backend is dropped or the handle
    /// aborted. Must be called within a tokio runtime.
    pub fn spawn_compactor(self: &Arc<Self>, interval: Duration, keep: i64) -> JoinHandle<()> {
        let weak = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut ticker = tokio::time::interval(interval);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            ticker.tick().await; // the first tick is immediate
            loop {
                ticker.tick().await;
                let Some(this) = weak.upgrade() else { return };
                if let Err(e) = this.compact_keep(keep).await {
                    warn!(error = %e, "periodic compaction failed");
                }
            }
        })
    }

    async fn compact_keep(&self, keep: i64) -> Result<()> {
        let (current, compacted) = self
            .db
            .read(|c| Ok((log::current_rev(c)?, log::compact_rev(c)?)))
            .await?;
        let target = current - keep.max(0);
        if target > compacted {
            self.compact(target).await?;
        }
        Ok(())
    }

    fn spawn_lease_sweeper(self: &Arc<Self>) {
        let weak: Weak<SqliteBackend> = Arc::downgrade(self);
        let interval = self.db.opts.lease_sweep_interval;
        tokio::spawn(async move {
            let mut ticker = tokio::time::interval(interval);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticker.tick().await;
                let Some(this) = weak.upgrade() else { return };
                if let Err(e) = this.sweep_leases().await {
                    warn!(error = %e, "lease sweep failed");
                }
            }
        });
    }

    /// Revokes every lease whose expiry has passed.
    async fn sweep_leases(&self) -> Result<()> {
        let now = now_ms();
        let expired = self.db.read(move |c| log::expired_leases(c, now)).await?;
        for lease in expired {
            // One transaction per lease keeps lock holds short; a lease revoked concurrently
            // is simply gone by then.
            let revoked = self.db.write(move |tx| revoke_in(tx, lease)).await?;
            if revoked {
                debug!(lease, "lease expired; its keys were deleted");
            }
        }
        Ok(())
    }
}

#[async_trait]
impl Backend for SqliteBackend {
    async fn get(&self, key: &str, revision: Revision) -> Result<(Revision, Option<KeyValue>)> {
        let key = key.to_owned();
        self.db
            .read(move |c| {
                let rev = check_revision(c, revision)?;
                let kv = log::latest(c, &key, rev)?
                    .filter(|r| !r.deleted)
                    .map(|r| r.kv());
                // Like etcd, the header revision is the store's current one, even for a
                // read at a past revision.
                Ok((log::current_rev(c)?, kv))
            })
            .await
    }

    async fn create(&self, key: &str, value: Vec<u8>, lease: LeaseId) -> Result<Revision> {
        let key = key.to_owned();
        self.db
            .write(move |tx| {
                let prev = log::latest(tx, &key, i64::MAX)?;
                if prev.as_ref().is_some_and(|r| !r.deleted) {
                    return Err(StoreError::KeyExists);
                }
                check_lease(tx, lease)?;
                log::append(
                    tx,
                    &NewRow {
                        name: &key,
                        created: true,
                        deleted: false,
                        create_revision: None,
                        // The tombstone being replaced, if any (kine's convention).
                        prev_revision: prev.map_or(0, |r| r.id),
                        lease,
                        value: &value,
                        old_value: None,
                        version: 1,
                        old_lease: 0,
                    },
                )
            })
            .await
    }

    async fn update(
        &self,
        key: &str,
        value: Vec<u8>,
        expected: Revision,
        lease: LeaseId,
    ) -> Result<CasOutcome> {
        let key = key.to_owned();
        self.db
            .write(move |tx| {
                let cur = log::latest(tx, &key, i64::MAX)?.filter(|r| !r.deleted);
                let cur = match cur {
                    Some(cur) if cur.id == expected => cur,
                    other => {
                        return Ok(CasOutcome {
                            revision: log::current_rev(tx)?,
                            current: other.map(|r| r.kv()),
                            succeeded: false,
                        })
                    }
                };
                // Like etcd, the lease is only checked on the path that writes.
                check_lease(tx, lease)?;
                let rev = log::append(
                    tx,
                    &NewRow {
                        name: &key,
                        created: false,
                        deleted: false,
                        create_revision: Some(cur.create_revision),
                        prev_revision: cur.id,
                        lease,
                        value: &value,
                        old_value: Some(&cur.value),
                        version: cur.version + 1,
                        old_lease: cur.lease,
                    },
                )?;
                Ok(CasOutcome {
                    revision: rev,
                    current: Some(KeyValue {
                        key,
                        create_revision: cur.create_revision,
                        mod_revision: rev,
                        version: cur.version + 1,
                        value,
                        lease,
                    }),
                    succeeded: true,
                })
            })
            .await
    }

    /// On success `current` is the deleted value stamped with the delete's revision as
    /// `mod_revision` (the same convention as a delete [`crate::Event`]); `create_revision`,
    /// `version`, `value` and `lease` are the deleted key's.
    async fn delete(&self, key: &str, expected: Revision) -> Result<CasOutcome> {
        let key = key.to_owned();
        self.db
            .write(move |tx| {
                let cur = log::latest(tx, &key, i64::MAX)?.filter(|r| !r.deleted);
                let cur = match cur {
                    Some(cur) if expected == 0 || cur.id == expected => cur,
                    other => {
                        return Ok(CasOutcome {
                            revision: log::current_rev(tx)?,
                            current: other.map(|r| r.kv()),
                            succeeded: false,
                        })
                    }
                };
                let rev = append_delete(tx, &cur)?;
                let mut kv = cur.kv();
                kv.mod_revision = rev;
                Ok(CasOutcome {
                    revision: rev,
                    current: Some(kv),
                    succeeded: true,
                })
            })
            .await
    }

    async fn list(
        &self,
        prefix: &str,
        start_key: &str,
        limit: i64,
        revision: Revision,
    ) -> Result<ListResult> {
        let range = KeyRange::prefix(prefix).starting_at(start_key);
        self.db
            .read(move |c| {
                let rev = check_revision(c, revision)?;
                let limit = limit.max(0);
                // One extra row tells whether the limit cut the result short.
                let mut rows = log::list(c, &range, rev, if limit > 0 { limit + 1 } else { 0 })?;
                let more = limit > 0 && rows.len() as i64 > limit;
                if more {
                    rows.truncate(limit as usize);
                }
                Ok(ListResult {
                    revision: rev,
                    kvs: rows.iter().map(Row::kv).collect(),
                    more,
                })
            })
            .await
    }

    async fn count(&self, prefix: &str) -> Result<(Revision, i64)> {
        let range = KeyRange::prefix(prefix);
        self.db
            .read(move |c| Ok((log::current_rev(c)?, log::count(c, &range)?)))
            .await
    }

    async fn current_revision(&self) -> Result<Revision> {
        self.db.read(log::current_rev).await
    }

    async fn compact_revision(&self) -> Result<Revision> {
        self.db.read(log::compact_rev).await
    }

    /// Compacts to `revision`: afterwards reads below it fail with `Compacted`, while reads at
    /// or above it and watches starting at it are unaffected. Superseded rows and tombstones
    /// are deleted in short transactions of at most 1000 revisions each. A `revision` at or
    /// below the current compact revision is a no-op; above the current revision it fails with
    /// `FutureRevision`. Returns the compact revision in force afterwards.
    async fn compact(&self, revision: Revision) -> Result<Revision> {
        let _serial = self.compact_lock.lock().await;
        // Step 1: publish the new bound first, so that from now on no reader relies on the
        // rows about to be deleted (a reader's snapshot either predates this commit and sees
        // no deletions, or sees the new bound and refuses reads below it).
        let (target, mut done) = self
            .db
            .write(move |tx| {
                let current = log::current_rev(tx)?;
                if revision > current {
                    return Err(StoreError::FutureRevision {
                        requested: revision,
                        current,
                    });
                }
                let old = log::compact_rev(tx)?;
                let target = revision.max(old);
                log::meta_set(tx, "compact_rev", target)?;
                Ok((target, log::meta_get(tx, "compacted_upto")?))
            })
            .await?;
        if let Some(oldest) = self.db.oldest_watch_position() {
            if oldest + 1 < target {
                warn!(
                    revision = target,
                    watcher_at = oldest,
                    "compaction overtakes a lagging watcher"
                );
            }
        }
        // Step 2: delete in windows; `compacted_upto` records progress in the same transaction,
        // so a compaction interrupted by a crash resumes where it stopped.
        let mut deleted = 0usize;
        while done < target {
            let (lo, hi) = (done, (done + COMPACT_BATCH).min(target));
            deleted += self
                .db
                .write(move |tx| {
                    let n = log::compact_window(tx, lo, hi, target)?;
                    log::meta_set(tx, "compacted_upto", hi)?;
                    Ok(n)
                })
                .await?;
            done = hi;
        }
        if deleted > 0 {
            info!(revision = target, deleted, "compacted");
        }
        Ok(target)
    }

    async fn watch(&self, prefix: &str, start: Revision) -> Result<WatchStream> {
        crate::watch::watch(&self.db, prefix, start).await
    }

    /// Lease ids are positive and never reused. A `ttl_seconds` below 1 is treated as 1.
    async fn grant_lease(&self, ttl_seconds: i64) -> Result<LeaseId> {
        let ttl = ttl_seconds.max(1);
        let expires = now_ms().saturating_add(ttl.saturating_mul(1000));
        self.db
            .write(move |tx| log::lease_insert(tx, ttl, expires))
            .await
    }

    async fn revoke_lease(&self, lease: LeaseId) -> Result<()> {
        if self.db.write(move |tx| revoke_in(tx, lease)).await? {
            Ok(())
        } else {
            Err(StoreError::LeaseNotFound(lease))
        }
    }

    async fn db_size(&self) -> Result<i64> {
        self.db.read(log::db_size).await
    }

    async fn keep_alive_lease(&self, lease: LeaseId) -> Result<i64> {
        let now = now_ms();
        self.db
            .write(move |tx| match log::lease_get(tx, lease)? {
                // An expired lease the sweeper has not reached yet is gone already.
                Some((ttl, expires)) if expires > now => {
                    log::lease_set_expiry(tx, lease, now.saturating_add(ttl.saturating_mul(1000)))?;
                    Ok(ttl)
                }
                _ => Err(StoreError::LeaseNotFound(lease)),
            })
            .await
    }

    async fn lease_info(&self, lease: LeaseId, with_keys: bool) -> Result<LeaseInfo> {
        let now = now_ms();
        self.db
            .read(move |c| match log::lease_get(c, lease)? {
                Some((ttl, expires)) if expires > now => {
                    let keys = if with_keys {
                        log::live_with_lease(c, lease)?
                            .into_iter()
                            .map(|r| r.name)
                            .collect()
                    } else {
                        Vec::new()
                    };
                    Ok(LeaseInfo {
                        id: lease,
                        granted_ttl: ttl,
                        // Rounded down, as etcd does.
                        remaining_ttl: (expires - now) / 1000,
                        keys,
                    })
                }
                _ => Err(StoreError::LeaseNotFound(lease)),
            })
            .await
    }

    async fn leases(&self) -> Result<Vec<LeaseId>> {
        self.db.read(log::lease_ids).await
    }
}
