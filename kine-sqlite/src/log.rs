//! The append-only log: kine's table layout and every SQL statement the store runs.
//!
//! Each row of `kine` is one event (create, update or delete) of one key, and its `id` is the
//! global revision of that event. The etcd semantics in [`crate::sqlite`] are written once over
//! the plain functions here, which take a `&Connection` (a `Transaction` derefs to one) so the
//! caller decides the transaction boundaries.
//!
//! Compared to kine's table there are two extra columns, `version` and `old_lease`: kine does not
//! track etcd's per-key version, and recomputing it by counting rows breaks once compaction
//! removes history; `old_lease` makes a row a self-contained event (its `prev_kv` can be built
//! without the previous row, which compaction may have removed).

use rusqlite::{params, Connection, OptionalExtension, Row as SqlRow};

use crate::backend::{Event, EventKind, KeyValue, LeaseId, Result, Revision, StoreError};

/// Schema, applied at every open; every statement is idempotent.
pub const SCHEMA: &[&str] = &[
    "CREATE TABLE IF NOT EXISTS kine (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        name TEXT NOT NULL,
        created INTEGER NOT NULL,
        deleted INTEGER NOT NULL,
        create_revision INTEGER NOT NULL,
        prev_revision INTEGER NOT NULL,
        lease INTEGER NOT NULL,
        value BLOB NOT NULL,
        old_value BLOB,
        version INTEGER NOT NULL,
        old_lease INTEGER NOT NULL DEFAULT 0
    )",
    // Point reads, range reads and the "is there a newer row" probes all walk (name, id).
    "CREATE INDEX IF NOT EXISTS kine_name_id_index ON kine (name, id)",
    // As in kine: two writers can never both append a successor of the same row.
    "CREATE UNIQUE INDEX IF NOT EXISTS kine_name_prev_revision_uindex ON kine (name, prev_revision)",
    // Lease revocation looks up keys by lease; most rows have none, hence the partial index.
    "CREATE INDEX IF NOT EXISTS kine_lease_index ON kine (lease) WHERE lease != 0",
    // Small key/value table instead of kine's `compact_rev_key` row, so that compaction does
    // not consume a revision. `compact_rev` is the oldest readable revision; `compacted_upto`
    // is how far the deletion of old rows has got (it trails `compact_rev` while a compaction
    // runs, and lets an interrupted compaction resume).
    "CREATE TABLE IF NOT EXISTS kine_meta (name TEXT PRIMARY KEY, value INTEGER NOT NULL) WITHOUT ROWID",
    "INSERT OR IGNORE INTO kine_meta (name, value) VALUES ('compact_rev', 0), ('compacted_upto', 0)",
    "CREATE TABLE IF NOT EXISTS kine_leases (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        ttl INTEGER NOT NULL,
        expires_at_ms INTEGER NOT NULL
    )",
    "CREATE INDEX IF NOT EXISTS kine_leases_expires_index ON kine_leases (expires_at_ms)",
];

/// Maps a rusqlite error into [`StoreError::Backend`] with a short description of what failed.
pub(crate) trait Ctx<T> {
    fn ctx(self, what: &str) -> Result<T>;
}

impl<T> Ctx<T> for rusqlite::Result<T> {
    fn ctx(self, what: &str) -> Result<T> {
        self.map_err(|e| StoreError::Backend(format!("sqlite: {what}: {e}")))
    }
}

/// One row of the log, i.e. one event.
#[derive(Clone, Debug)]
pub(crate) struct Row {
    pub id: Revision,
    pub name: String,
    pub created: bool,
    pub deleted: bool,
    pub create_revision: Revision,
    pub prev_revision: Revision,
    pub lease: LeaseId,
    /// The value after the event; for a delete, the last value.
    pub value: Vec<u8>,
    /// The value before the event (None for a create, or when not selected).
    pub old_value: Option<Vec<u8>>,
    /// The key's version after the event; for a delete, the last version.
    pub version: i64,
    pub old_lease: LeaseId,
}

/// Columns for reads of the current value: `old_value` is not loaded.
const READ_COLS: &str = "k.id, k.name, k.created, k.deleted, k.create_revision, k.prev_revision, \
                         k.lease, k.value, NULL, k.version, k.old_lease";
/// Columns for events, which need the previous value too.
const EVENT_COLS: &str = "k.id, k.name, k.created, k.deleted, k.create_revision, k.prev_revision, \
                          k.lease, k.value, k.old_value, k.version, k.old_lease";

fn map_row(r: &SqlRow<'_>) -> rusqlite::Result<Row> {
    Ok(Row {
        id: r.get(0)?,
        name: r.get(1)?,
        created: r.get::<_, i64>(2)? != 0,
        deleted: r.get::<_, i64>(3)? != 0,
        create_revision: r.get(4)?,
        prev_revision: r.get(5)?,
        lease: r.get(6)?,
        value: r.get(7)?,
        old_value: r.get(8)?,
        version: r.get(9)?,
        old_lease: r.get(10)?,
    })
}

impl Row {
    /// The key as stored by this row (for a delete: the last value, stamped with the delete's
    /// revision, as [`Event::kv`] documents).
    pub fn kv(&self) -> KeyValue {
        KeyValue {
            key: self.name.clone(),
            create_revision: self.create_revision,
            mod_revision: self.id,
            version: self.version,
            value: self.value.clone(),
            lease: self.lease,
        }
    }

    /// Converts the row into a watch event. `prev_kv` is rebuilt from the row alone.
    pub fn into_event(self) -> Event {
        let kind = if self.created {
            EventKind::Create
        } else if self.deleted {
            EventKind::Delete
        } else {
            EventKind::Update
        };
        let prev_kv = match kind {
            EventKind::Create => None,
            EventKind::Update => Some(KeyValue {
                key: self.name.clone(),
                create_revision: self.create_revision,
                mod_revision: self.prev_revision,
                version: self.version - 1,
                value: self.old_value.clone().unwrap_or_default(),
                lease: self.old_lease,
            }),
            EventKind::Delete => Some(KeyValue {
                key: self.name.clone(),
                create_revision: self.create_revision,
                mod_revision: self.prev_revision,
                version: self.version,
                value: self.value.clone(),
                lease: self.lease,
            }),
        };
        Event {
            kind,
            kv: self.kv(),
            prev_kv,
        }
    }
}

/// A half-open range of key names `[lower, upper)`; `upper == None` means unbounded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct KeyRange {
    pub lower: String,
    pub upper: Option<String>,
}

impl KeyRange {
    /// All keys starting with `prefix`.
    ///
    /// SQLite compares TEXT with memcmp, and UTF-8 byte order equals code point order, so the
    /// keys starting with `prefix` are exactly `[prefix, prefix_end(prefix))`. This is used
    /// instead of `LIKE`, which is case-insensitive and treats `%`/`_` specially.
    pub fn prefix(prefix: &str) -> Self {
        KeyRange {
            lower: prefix.to_owned(),
            upper: prefix_end(prefix),
        }
    }

    /// Narrows the lower bound to `start` when it is above it.
    pub fn starting_at(mut self, start: &str) -> Self {
        if start > self.lower.as_str() {
            self.lower = start.to_owned();
        }
        self
    }

    /// SQL condition on `k.name`, with `?1` the lower and `?2` the upper bound.
    fn sql(&self) -> &'static str {
        if self.upper.is_some() {
            "k.name >= ?1 AND k.name < ?2"
        } else {
            "k.name >= ?1"
        }
    }

    /// Whether `name` lies in the range (the same byte order SQLite uses).
    pub fn contains(&self, name: &str) -> bool {
        name >= self.lower.as_str() && self.upper.as_deref().is_none_or(|u| name < u)
    }

    fn upper_param(&self) -> &str {
        self.upper.as_deref().unwrap_or("")
    }
}

/// The smallest string greater than every string starting with `prefix` (None: no such bound,
/// i.e. the prefix is empty or made only of `char::MAX`).
pub(crate) fn prefix_end(prefix: &str) -> Option<String> {
    let mut chars: Vec<char> = prefix.chars().collect();
    while let Some(last) = chars.pop() {
        let next = match last as u32 + 1 {
            // Skip the surrogate range, which holds no chars.
            0xD800 => Some('\u{E000}'),
            n => char::from_u32(n),
        };
        if let Some(next) = next {
            chars.push(next);
            return Some(chars.into_iter().collect());
        }
    }
    None
}

/// The newest revision ever written: AUTOINCREMENT's high-water mark, which survives the
/// deletion of rows by compaction.
pub(crate) fn current_rev(c: &Connection) -> Result<Revision> {
    c.prepare_cached("SELECT COALESCE((SELECT seq FROM sqlite_sequence WHERE name = 'kine'), 0)")
        .and_then(|mut s| s.query_row([], |r| r.get(0)))
        .ctx("reading current revision")
}

pub(crate) fn meta_get(c: &Connection, name: &str) -> Result<i64> {
    c.prepare_cached("SELECT value FROM kine_meta WHERE name = ?1")
        .and_then(|mut s| s.query_row([name], |r| r.get(0)).optional())
        .map(|v| v.unwrap_or(0))
        .ctx("reading kine_meta")
}

pub(crate) fn meta_set(c: &Connection, name: &str, value: i64) -> Result<()> {
    c.prepare_cached("INSERT OR REPLACE INTO kine_meta (name, value) VALUES (?1, ?2)")
        .and_then(|mut s| s.execute(params![name, value]))
        .map(|_| ())
        .ctx("writing kine_meta")
}

/// The oldest readable revision.
pub(crate) fn compact_rev(c: &Connection) -> Result<Revision> {
    meta_get(c, "compact_rev")
}

/// The newest row of `name` with `id <= rev` (tombstones included).
pub(crate) fn latest(c: &Connection, name: &str, rev: Revision) -> Result<Option<Row>> {
    let sql = format!("SELECT {READ_COLS} FROM kine k WHERE k.name = ?1 AND k.id <= ?2 ORDER BY k.id DESC LIMIT 1");
    c.prepare_cached(&sql)
        .and_then(|mut s| s.query_row(params![name, rev], map_row).optional())
        .ctx("reading key")
}

/// A row to append; the revision is assigned by [`append`].
pub(crate) struct NewRow<'a> {
    pub name: &'a str,
    pub created: bool,
    pub deleted: bool,
    /// `None`: this row creates the key, so its create revision is its own id.
    pub create_revision: Option<Revision>,
    pub prev_revision: Revision,
    pub lease: LeaseId,
    pub value: &'a [u8],
    pub old_value: Option<&'a [u8]>,
    pub version: i64,
    pub old_lease: LeaseId,
}

/// Appends one event and returns its revision. Must run inside a write transaction.
///
/// The id is chosen explicitly as `current + 1` rather than left to AUTOINCREMENT, so that a
/// create can store its own revision as `create_revision` in the same statement. Both give the
/// same number: the write transaction holds SQLite's single write lock, and `sqlite_sequence`
/// (bumped by this insert) rolls back together with the row if the transaction fails, so
/// committed revisions have no holes.
pub(crate) fn append(c: &Connection, row: &NewRow<'_>) -> Result<Revision> {
    let id = current_rev(c)? + 1;
    c.prepare_cached(
        "INSERT INTO kine (id, name, created, deleted, create_revision, prev_revision, lease, value, \
         old_value, version, old_lease) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
    )
    .and_then(|mut s| {
        s.execute(params![
            id,
            row.name,
            row.created as i64,
            row.deleted as i64,
            row.create_revision.unwrap_or(id),
            row.prev_revision,
            row.lease,
            row.value,
            row.old_value,
            row.version,
            row.old_lease,
        ])
    })
    .ctx("appending to the log")?;
    Ok(id)
}

/// Live keys in `range` as of `rev`, in key order, at most `limit` (0 = all).
///
/// A row is the key's state at `rev` when no newer row of the same key has `id <= rev`. The
/// correlated `NOT EXISTS` walks the (name, id) index in key order, so a `LIMIT` stops the scan
/// early (a GROUP BY / MAX(id) form would read the whole range first).
pub(crate) fn list(
    c: &Connection,
    range: &KeyRange,
    rev: Revision,
    limit: i64,
) -> Result<Vec<Row>> {
    let sql = format!(
        "SELECT {READ_COLS} FROM kine k WHERE {} AND k.id <= ?3 AND k.deleted = 0 \
         AND NOT EXISTS (SELECT 1 FROM kine n WHERE n.name = k.name AND n.id > k.id AND n.id <= ?3) \
         ORDER BY k.name LIMIT ?4",
        range.sql()
    );
    let limit = if limit <= 0 { -1 } else { limit };
    let mut stmt = c.prepare_cached(&sql).ctx("preparing list")?;
    let rows = stmt
        .query_map(
            params![range.lower, range.upper_param(), rev, limit],
            map_row,
        )
        .and_then(|it| it.collect::<rusqlite::Result<Vec<_>>>())
        .ctx("listing keys")?;
    Ok(rows)
}

/// Number of live keys in `range` at the newest revision.
pub(crate) fn count(c: &Connection, range: &KeyRange) -> Result<i64> {
    let sql = format!(
        "SELECT COUNT(*) FROM kine k WHERE {} AND k.deleted = 0 \
         AND NOT EXISTS (SELECT 1 FROM kine n WHERE n.name = k.name AND n.id > k.id)",
        range.sql()
    );
    // Here no later parameter makes SQLite count an unused `?2`, so pass it only when used.
    c.prepare_cached(&sql)
        .and_then(|mut s| match &range.upper {
            Some(upper) => s.query_row(params![range.lower, upper], |r| r.get(0)),
            None => s.query_row(params![range.lower], |r| r.get(0)),
        })
        .ctx("counting keys")
}

/// Events in `range` with `after < id <= upto`, in revision order, at most `limit`.
pub(crate) fn after(
    c: &Connection,
    range: &KeyRange,
    after: Revision,
    upto: Revision,
    limit: i64,
) -> Result<Vec<Row>> {
    let sql = format!(
        "SELECT {EVENT_COLS} FROM kine k WHERE k.id > ?3 AND k.id <= ?4 AND {} ORDER BY k.id LIMIT ?5",
        range.sql()
    );
    let mut stmt = c.prepare_cached(&sql).ctx("preparing watch read")?;
    let rows = stmt
        .query_map(
            params![range.lower, range.upper_param(), after, upto, limit],
            map_row,
        )
        .and_then(|it| it.collect::<rusqlite::Result<Vec<_>>>())
        .ctx("reading events")?;
    Ok(rows)
}

/// (revision, key) of every row above `after`, in revision order: what a write transaction
/// has just appended.
pub(crate) fn names_after(c: &Connection, after: Revision) -> Result<Vec<(Revision, String)>> {
    let mut stmt = c
        .prepare_cached("SELECT id, name FROM kine WHERE id > ?1 ORDER BY id")
        .ctx("preparing written rows")?;
    let rows = stmt
        .query_map([after], |r| Ok((r.get(0)?, r.get(1)?)))
        .and_then(|it| it.collect::<rusqlite::Result<Vec<_>>>())
        .ctx("reading written rows")?;
    Ok(rows)
}

/// One compaction step over the id window `[lo, hi]`, for a compaction to `target` (`hi <=
/// target`). Deletes (1) every row superseded by a row of the window — each row names its
/// predecessor in `prev_revision`, so these are exactly the rows with a successor `<= hi` — and
/// (2) tombstones of the window below `target`. Rows at or above `target` are never removed
/// (a predecessor is always older than its successor), so reads at `>= target` and watches
/// from `target` see complete history. Returns the number of rows deleted.
pub(crate) fn compact_window(
    c: &Connection,
    lo: Revision,
    hi: Revision,
    target: Revision,
) -> Result<usize> {
    c.prepare_cached(
        "DELETE FROM kine WHERE id IN (\
           SELECT prev_revision FROM kine WHERE id BETWEEN ?1 AND ?2 AND prev_revision != 0 \
           UNION ALL \
           SELECT id FROM kine WHERE id BETWEEN ?1 AND ?2 AND deleted != 0 AND id < ?3)",
    )
    .and_then(|mut s| s.execute(params![lo, hi, target]))
    .ctx("compacting")
}

/// Live keys (newest row not a tombstone) currently attached to `lease`.
pub(crate) fn live_with_lease(c: &Connection, lease: LeaseId) -> Result<Vec<Row>> {
    let sql = format!(
        "SELECT {READ_COLS} FROM kine k WHERE k.lease = ?1 AND k.lease != 0 AND k.deleted = 0 \
         AND NOT EXISTS (SELECT 1 FROM kine n WHERE n.name = k.name AND n.id > k.id) ORDER BY k.name"
    );
    let mut stmt = c.prepare_cached(&sql).ctx("preparing lease lookup")?;
    let rows = stmt
        .query_map([lease], map_row)
        .and_then(|it| it.collect::<rusqlite::Result<Vec<_>>>())
        .ctx("reading keys of a lease")?;
    Ok(rows)
}

pub(crate) fn lease_exists(c: &Connection, lease: LeaseId) -> Result<bool> {
    c.prepare_cached("SELECT 1 FROM kine_leases WHERE id = ?1")
        .and_then(|mut s| s.exists([lease]))
        .ctx("reading lease")
}

pub(crate) fn lease_insert(c: &Connection, ttl: i64, expires_at_ms: i64) -> Result<LeaseId> {
    c.prepare_cached("INSERT INTO kine_leases (ttl, expires_at_ms) VALUES (?1, ?2)")
        .and_then(|mut s| s.insert(params![ttl, expires_at_ms]))
        .ctx("granting lease")
}

pub(crate) fn lease_delete(c: &Connection, lease: LeaseId) -> Result<()> {
    c.prepare_cached("DELETE FROM kine_leases WHERE id = ?1")
        .and_then(|mut s| s.execute([lease]))
        .map(|_| ())
        .ctx("removing lease")
}

/// A lease's granted TTL (seconds) and expiry (ms since the epoch), if it exists.
pub(crate) fn lease_get(c: &Connection, lease: LeaseId) -> Result<Option<(i64, i64)>> {
    c.prepare_cached("SELECT ttl, expires_at_ms FROM kine_leases WHERE id = ?1")
        .and_then(|mut s| {
            s.query_row([lease], |r| Ok((r.get(0)?, r.get(1)?)))
                .optional()
        })
        .ctx("reading lease")
}

/// Moves a lease's expiry; returns false when the lease does not exist.
pub(crate) fn lease_set_expiry(c: &Connection, lease: LeaseId, expires_at_ms: i64) -> Result<bool> {
    c.prepare_cached("UPDATE kine_leases SET expires_at_ms = ?2 WHERE id = ?1")
        .and_then(|mut s| s.execute(params![lease, expires_at_ms]))
        .map(|n| n > 0)
        .ctx("renewing lease")
}

/// Every lease not yet revoked (expired ones included until the sweeper removes them).
pub(crate) fn lease_ids(c: &Connection) -> Result<Vec<LeaseId>> {
    let mut stmt = c
        .prepare_cached("SELECT id FROM kine_leases ORDER BY id")
        .ctx("preparing lease listing")?;
    let ids = stmt
        .query_map([], |r| r.get(0))
        .and_then(|it| it.collect::<rusqlite::Result<Vec<_>>>())
        .ctx("listing leases")?;
    Ok(ids)
}

/// Leases whose expiry is at or before `now_ms`.
pub(crate) fn expired_leases(c: &Connection, now_ms: i64) -> Result<Vec<LeaseId>> {
    let mut stmt = c
        .prepare_cached(
            "SELECT id FROM kine_leases WHERE expires_at_ms <= ?1 ORDER BY expires_at_ms",
        )
        .ctx("preparing lease sweep")?;
    let ids = stmt
        .query_map([now_ms], |r| r.get(0))
        .and_then(|it| it.collect::<rusqlite::Result<Vec<_>>>())
        .ctx("reading expired leases")?;
    Ok(ids)
}

/// Number of rows in the log (for tests and diagnostics).
pub(crate) fn row_count(c: &Connection) -> Result<i64> {
    c.query_row("SELECT COUNT(*) FROM kine", [], |r| r.get(0))
        .ctx("counting rows")
}

/// Database size in bytes (pages in use and free).
pub(crate) fn db_size(c: &Connection) -> Result<i64> {
    c.query_row(
        "SELECT page_count * page_size FROM pragma_page_count(), pragma_page_size()",
        [],
        |r| r.get(0),
    )
    .ctx("reading database size")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_end_increments_last_char() {
        assert_eq!(
            prefix_end("/registry/pods/").as_deref(),
            Some("/registry/pods0")
        );
        assert_eq!(prefix_end("a"), Some("b".to_owned()));
        assert_eq!(prefix_end(""), None);
        assert_eq!(prefix_end("a\u{10FFFF}").as_deref(), Some("b"));
        assert_eq!(prefix_end("\u{D7FF}").as_deref(), Some("\u{E000}"));
        assert_eq!(prefix_end("\u{10FFFF}"), None);
    }

    #[test]
    fn range_start_key_only_narrows() {
        let r = KeyRange::prefix("/a/").starting_at("/a/x");
        assert_eq!(r.lower, "/a/x");
        let r = KeyRange::prefix("/a/").starting_at("/");
        assert_eq!(r.lower, "/a/");
    }
}
