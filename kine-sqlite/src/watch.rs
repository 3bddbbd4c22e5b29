//! Watches: one task per watcher reading the log itself, so that no event is ever dropped.
//!
//! Each watcher remembers the last revision it has delivered (`last`) and repeatedly reads
//! `rows with id > last` in its key range, in bounded batches, into a bounded channel. A slow
//! consumer therefore only makes its own task wait on the channel (backpressure); the events
//! stay in the database meanwhile. When it has caught up, the task sleeps until the store's
//! revision (a `tokio::sync::watch`, bumped after each commit) moves past `last`.
//!
//! Why reading `id > last` cannot skip an event: revisions are assigned inside SQLite's single
//! write lock (`BEGIN IMMEDIATE`) as `current + 1`, and a rolled-back transaction also rolls
//! back the `sqlite_sequence` bump, so commits happen in revision order without holes. A read
//! snapshot that contains revision N+1 therefore contains N as well, and after a read at
//! snapshot revision S every event `<= S` has been seen: `last` may safely jump to S.
//!
//! The position (`last`) is shared with the writer, which after each commit moves caught-up
//! watchers past revisions outside their key range, as etcd does for its synced watchers.
//! So a write wakes only the watchers whose range it touches (one indexed query each), and a
//! watcher that is merely idle is never mistaken for one left behind by compaction. Only a
//! watcher that really lags (a slow consumer) can be compacted away.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use tokio::sync::mpsc;
use tracing::{debug, trace};

use crate::backend::{Event, Result, Revision, StoreError, WatchStream};
use crate::log::{self, KeyRange};
use crate::sqlite::{Db, WatchPosition};

/// Safety net: re-read even without a notification (e.g. writes by another process on the
/// same file, which this process is not told about).
const FALLBACK_POLL: Duration = Duration::from_secs(2);

/// Starts a watch of `prefix` from revision `start` (0 = after the current revision).
pub(crate) async fn watch(db: &Arc<Db>, prefix: &str, start: Revision) -> Result<WatchStream> {
    if start < 0 {
        return Err(StoreError::Unsupported("negative revision"));
    }
    let last = db
        .read(move |c| {
            let current = log::current_rev(c)?;
            if start == 0 {
                return Ok(current);
            }
            let compacted = log::compact_rev(c)?;
            if start < compacted {
                return Err(StoreError::Compacted {
                    requested: start,
                    compacted,
                });
            }
            // A start beyond the current revision is allowed (as in etcd): the watch
            // simply begins delivering once the store gets there.
            Ok(start - 1)
        })
        .await?;
    let (tx, mut rx) = mpsc::channel(db.opts().watch_queue.max(1));
    debug!(prefix, start, from = last, "watch started");
    let position = Arc::new(WatchPosition {
        range: KeyRange::prefix(prefix),
        pos: AtomicI64::new(last),
    });
    db.register_watcher(&position);
    db.active_watchers.fetch_add(1, Ordering::SeqCst);
    let guard = ActiveGuard(db.clone());
    tokio::spawn(run(guard, position, tx));
    let stream = futures::stream::poll_fn(move |cx| rx.poll_recv(cx));
    Ok(stream.boxed())
}

/// Decrements the active-watcher count when the task ends, however it ends.
struct ActiveGuard(Arc<Db>);

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        self.0.active_watchers.fetch_sub(1, Ordering::SeqCst);
    }
}

/// What one read of the log produced.
struct Poll {
    events: Vec<Event>,
    /// Every matching event up to here has been read.
    upto: Revision,
    /// The batch was full: read again right away.
    full: bool,
}

fn poll(c: &rusqlite::Connection, range: &KeyRange, last: Revision, batch: i64) -> Result<Poll> {
    let current = log::current_rev(c)?;
    let compacted = log::compact_rev(c)?;
    // Compaction keeps every row at or above its revision, so we are intact iff the next
    // revision we need is not below it.
    if last + 1 < compacted {
        return Err(StoreError::Compacted {
            requested: last + 1,
            compacted,
        });
    }
    if current <= last {
        return Ok(Poll {
            events: Vec::new(),
            upto: last,
            full: false,
        });
    }
    let rows = log::after(c, range, last, current, batch)?;
    let full = rows.len() as i64 >= batch;
    let upto = if full {
        rows.last().map_or(last, |r| r.id)
    } else {
        current
    };
    Ok(Poll {
        events: rows.into_iter().map(|r| r.into_event()).collect(),
        upto,
        full,
    })
}

async fn run(
    guard: ActiveGuard,
    position: Arc<WatchPosition>,
    tx: mpsc::Sender<Result<Vec<Event>>>,
) {
    let db = guard.0.clone();
    let batch = db.opts().watch_batch.max(1);
    let mut rev_rx = db.rev_tx.subscribe();
    loop {
        let from = position.pos.load(Ordering::SeqCst);
        let p = position.clone();
        match db.read(move |c| poll(c, &p.range, from, batch)).await {
            Err(e) => {
                debug!(error = %e, lower = %position.range.lower, "watch ends with an error");
                // Best effort: the consumer may already be gone.
                let _ = tx.send(Err(e)).await;
                return;
            }
            Ok(p) => {
                // Before the send: what matters for compaction is that the events have been
                // read out of the log; once in hand they no longer depend on it. `fetch_max`,
                // as the writer may have moved the position further meanwhile.
                position.pos.fetch_max(p.upto, Ordering::SeqCst);
                if !p.events.is_empty() {
                    trace!(n = p.events.len(), upto = p.upto, "watch batch");
                    // Waits while the consumer's queue is full; fails once it is dropped.
                    if tx.send(Ok(p.events)).await.is_err() {
                        return;
                    }
                }
                if p.full {
                    continue;
                }
            }
        }
        // Caught up: wait for a newer revision, the consumer going away, or the fallback.
        let fallback = tokio::time::sleep(FALLBACK_POLL);
        tokio::pin!(fallback);
        loop {
            // The writer moves positions before publishing the revision, so a revision
            // beyond our position means there is something in our range to read.
            let current = *rev_rx.borrow_and_update();
            if current > position.pos.load(Ordering::SeqCst) {
                break;
            }
            tokio::select! {
                _ = tx.closed() => return,
                changed = rev_rx.changed() => if changed.is_err() { return },
                _ = &mut fallback => break,
            }
        }
    }
}
