//! Tests of what is particular to the SQLite store (physical compaction, its watcher tasks,
//! reopening). The etcd semantics themselves are tested backend-generically in
//! tests/semantics (run for this store by tests/sqlite_semantics.rs).

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use tempfile::TempDir;

use crate::{Backend, Event, KeyValue, Options, SqliteBackend, StoreError, WatchStream};

async fn open() -> (TempDir, Arc<SqliteBackend>) {
    let dir = tempfile::tempdir().unwrap();
    let opts = Options {
        // Durability is tested by the crash test; here fsyncs would only slow things down.
        synchronous_full: false,
        lease_sweep_interval: Duration::from_millis(50),
        ..Options::default()
    };
    let store = SqliteBackend::open_with(&dir.path().join("db.sqlite"), opts)
        .await
        .unwrap();
    (dir, store)
}

fn kv(key: &str, create: i64, modr: i64, version: i64, value: &[u8], lease: i64) -> KeyValue {
    KeyValue {
        key: key.into(),
        create_revision: create,
        mod_revision: modr,
        version,
        value: value.to_vec(),
        lease,
    }
}

/// Collects events from `w` until `n` have arrived (fails after 5 s).
async fn next_events(w: &mut WatchStream, n: usize) -> Vec<Event> {
    let mut out = Vec::new();
    while out.len() < n {
        let batch = tokio::time::timeout(Duration::from_secs(5), w.next())
            .await
            .expect("timed out waiting for events")
            .expect("watch stream ended")
            .expect("watch error");
        assert!(!batch.is_empty(), "empty batch");
        out.extend(batch);
    }
    assert_eq!(out.len(), n, "more events than expected");
    out
}

#[tokio::test]
async fn compaction() {
    let (_d, s) = open().await;
    s.create("/a", b"1".to_vec(), 0).await.unwrap(); // 1
    s.update("/a", b"2".to_vec(), 1, 0).await.unwrap(); // 2
    s.create("/b", b"1".to_vec(), 0).await.unwrap(); // 3
    s.delete("/b", 0).await.unwrap(); // 4
    s.create("/c", b"1".to_vec(), 0).await.unwrap(); // 5
    s.update("/a", b"3".to_vec(), 2, 0).await.unwrap(); // 6
    assert_eq!(s.log_rows().await.unwrap(), 6);

    assert_eq!(s.compact(5).await.unwrap(), 5);
    assert_eq!(s.compact_revision().await.unwrap(), 5);
    // Left: /a@2 (live at 5), /c@5, /a@6; gone: /a@1, /b@3 and its tombstone @4.
    assert_eq!(s.log_rows().await.unwrap(), 3);
    assert!(matches!(
        s.get("/a", 4).await,
        Err(StoreError::Compacted {
            requested: 4,
            compacted: 5
        })
    ));
    assert!(matches!(
        s.list("/", "", 0, 1).await,
        Err(StoreError::Compacted { .. })
    ));
    assert_eq!(
        s.get("/a", 5).await.unwrap().1,
        Some(kv("/a", 1, 2, 2, b"2", 0))
    );
    assert_eq!(s.get("/b", 5).await.unwrap().1, None);
    assert_eq!(s.list("/", "", 0, 5).await.unwrap().kvs.len(), 2);
    assert_eq!(
        s.get("/a", 0).await.unwrap().1,
        Some(kv("/a", 1, 6, 3, b"3", 0))
    );
    // Older or equal targets are no-ops; future ones fail.
    assert_eq!(s.compact(3).await.unwrap(), 5);
    assert!(matches!(
        s.compact(7).await,
        Err(StoreError::FutureRevision { .. })
    ));
    // Compacting to the current revision keeps the latest value of every live key.
    assert_eq!(s.compact(6).await.unwrap(), 6);
    assert_eq!(s.log_rows().await.unwrap(), 2);
    assert_eq!(s.list("/", "", 0, 0).await.unwrap().kvs.len(), 2);
    // The revision counter survives the deletion of rows; a re-create after compaction works.
    assert_eq!(s.create("/b", b"2".to_vec(), 0).await.unwrap(), 7);
    assert_eq!(
        s.get("/b", 0).await.unwrap().1,
        Some(kv("/b", 7, 7, 1, b"2", 0))
    );
}

#[tokio::test]
async fn compactor_task_keeps_recent_history() {
    let (_d, s) = open().await;
    for i in 0..20 {
        s.create(&format!("/k{i}"), vec![], 0).await.unwrap();
    }
    let handle = s.spawn_compactor(Duration::from_millis(20), 5);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(s.compact_revision().await.unwrap(), 15);
    handle.abort();
}

#[tokio::test]
async fn dropping_the_stream_stops_the_task() {
    let (_d, s) = open().await;
    let w1 = s.watch("/", 0).await.unwrap();
    let w2 = s.watch("/", 0).await.unwrap();
    assert_eq!(s.active_watchers(), 2);
    drop(w1);
    // The idle task notices the closed channel without any write happening.
    for _ in 0..100 {
        if s.active_watchers() == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(s.active_watchers(), 1);
    // A task blocked on a full queue stops too.
    for i in 0..50 {
        s.create(&format!("/k{i}"), vec![], 0).await.unwrap();
    }
    drop(w2);
    for _ in 0..100 {
        if s.active_watchers() == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(s.active_watchers(), 0);
}

#[tokio::test]
async fn lagging_watcher_gets_compacted_error() {
    let dir = tempfile::tempdir().unwrap();
    let opts = Options {
        synchronous_full: false,
        watch_batch: 2,
        watch_queue: 1,
        ..Options::default()
    };
    let s = SqliteBackend::open_with(&dir.path().join("db"), opts)
        .await
        .unwrap();
    let mut w = s.watch("/", 0).await.unwrap();
    for i in 0..20 {
        s.create(&format!("/k{i:02}"), vec![], 0).await.unwrap();
    }
    // Let the task fill its queue of one batch and block on the second.
    tokio::time::sleep(Duration::from_millis(100)).await;
    s.compact(15).await.unwrap();
    let mut seen = Vec::new();
    let err = loop {
        match tokio::time::timeout(Duration::from_secs(5), w.next())
            .await
            .unwrap()
        {
            Some(Ok(b)) => seen.extend(b.into_iter().map(|e| e.kv.mod_revision)),
            Some(Err(e)) => break e,
            None => panic!("stream ended without an error"),
        }
    };
    assert!(
        matches!(err, StoreError::Compacted { compacted: 15, .. }),
        "{err:?}"
    );
    // What was delivered before the error was a gap-free prefix of the history.
    assert_eq!(seen, (1..=seen.len() as i64).collect::<Vec<_>>());
    assert!(w.next().await.is_none(), "an error ends the stream");
}

#[tokio::test]
async fn reopen_keeps_everything() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    let lease;
    {
        let s = SqliteBackend::open(&path).await.unwrap();
        lease = s.grant_lease(600).await.unwrap();
        s.create("/a", b"1".to_vec(), lease).await.unwrap();
        s.create("/b", b"1".to_vec(), 0).await.unwrap();
        s.delete("/b", 0).await.unwrap();
        s.compact(2).await.unwrap();
        assert!(s.db_size().await.unwrap() > 0);
    }
    let s = SqliteBackend::open(&path).await.unwrap();
    assert_eq!(s.current_revision().await.unwrap(), 3);
    assert_eq!(s.compact_revision().await.unwrap(), 2);
    assert_eq!(
        s.get("/a", 0).await.unwrap().1,
        Some(kv("/a", 1, 1, 1, b"1", lease))
    );
    assert_eq!(s.create("/c", vec![], lease).await.unwrap(), 4);
    s.revoke_lease(lease).await.unwrap();
    assert_eq!(s.count("/").await.unwrap(), (6, 0));
}

#[tokio::test]
async fn idle_watcher_survives_compaction_of_other_keys() {
    let (_d, s) = open().await;
    let mut w = s.watch("/quiet/", 0).await.unwrap();
    for i in 0..50 {
        s.create(&format!("/busy/{i}"), vec![], 0).await.unwrap();
    }
    // Writes outside its range move an idle watcher along without it having to poll.
    assert_eq!(s.oldest_watch_position(), Some(50));
    s.compact(50).await.unwrap();
    s.create("/quiet/x", vec![], 0).await.unwrap();
    let ev = next_events(&mut w, 1).await;
    assert_eq!(ev[0].kv.mod_revision, 51);
    drop(w);
}
