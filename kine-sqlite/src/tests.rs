//! Unit tests of each etcd semantic, run against a real database file.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use tempfile::TempDir;

use crate::{Backend, Event, EventKind, KeyValue, Options, SqliteBackend, StoreError, WatchStream};

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

async fn assert_quiet(w: &mut WatchStream) {
    assert!(
        tokio::time::timeout(Duration::from_millis(100), w.next())
            .await
            .is_err(),
        "unexpected event"
    );
}

#[tokio::test]
async fn revisions_and_versions() {
    let (_d, s) = open().await;
    assert_eq!(s.current_revision().await.unwrap(), 0);
    assert_eq!(s.create("/a", b"1".to_vec(), 0).await.unwrap(), 1);
    assert_eq!(s.create("/b", b"x".to_vec(), 0).await.unwrap(), 2);
    let out = s.update("/a", b"2".to_vec(), 1, 0).await.unwrap();
    assert_eq!(
        out,
        crate::CasOutcome {
            revision: 3,
            current: Some(kv("/a", 1, 3, 2, b"2", 0)),
            succeeded: true
        }
    );
    assert_eq!(
        s.get("/a", 0).await.unwrap(),
        (3, Some(kv("/a", 1, 3, 2, b"2", 0)))
    );
    let out = s.delete("/a", 3).await.unwrap();
    assert!(out.succeeded);
    assert_eq!(out.revision, 4);
    assert_eq!(out.current, Some(kv("/a", 1, 4, 2, b"2", 0)));
    assert_eq!(s.get("/a", 0).await.unwrap(), (4, None));
    // Re-create after delete: new create revision, version starts again at 1.
    assert_eq!(s.create("/a", b"3".to_vec(), 0).await.unwrap(), 5);
    assert_eq!(
        s.get("/a", 0).await.unwrap().1,
        Some(kv("/a", 5, 5, 1, b"3", 0))
    );
    assert_eq!(s.current_revision().await.unwrap(), 5);
}

#[tokio::test]
async fn create_only_if_absent() {
    let (_d, s) = open().await;
    s.create("/k", b"v".to_vec(), 0).await.unwrap();
    assert!(matches!(
        s.create("/k", b"w".to_vec(), 0).await,
        Err(StoreError::KeyExists)
    ));
    // The failed create consumed no revision.
    assert_eq!(s.current_revision().await.unwrap(), 1);
    assert_eq!(s.get("/k", 0).await.unwrap().1.unwrap().value, b"v");
}

#[tokio::test]
async fn failed_compares() {
    let (_d, s) = open().await;
    s.create("/k", b"v".to_vec(), 0).await.unwrap();
    let cur = Some(kv("/k", 1, 1, 1, b"v", 0));
    let out = s.update("/k", b"w".to_vec(), 7, 0).await.unwrap();
    assert_eq!(
        out,
        crate::CasOutcome {
            revision: 1,
            current: cur.clone(),
            succeeded: false
        }
    );
    let out = s.delete("/k", 9).await.unwrap();
    assert_eq!(
        out,
        crate::CasOutcome {
            revision: 1,
            current: cur,
            succeeded: false
        }
    );
    // Absent keys: failed, no current value.
    let out = s.update("/nope", b"w".to_vec(), 1, 0).await.unwrap();
    assert_eq!(
        out,
        crate::CasOutcome {
            revision: 1,
            current: None,
            succeeded: false
        }
    );
    let out = s.delete("/nope", 0).await.unwrap();
    assert_eq!(
        out,
        crate::CasOutcome {
            revision: 1,
            current: None,
            succeeded: false
        }
    );
    // Deleted keys count as absent.
    s.delete("/k", 0).await.unwrap();
    let out = s.update("/k", b"w".to_vec(), 1, 0).await.unwrap();
    assert_eq!(
        out,
        crate::CasOutcome {
            revision: 2,
            current: None,
            succeeded: false
        }
    );
    assert_eq!(s.current_revision().await.unwrap(), 2);
}

#[tokio::test]
async fn unconditional_delete() {
    let (_d, s) = open().await;
    s.create("/k", b"v".to_vec(), 0).await.unwrap();
    s.update("/k", b"w".to_vec(), 1, 0).await.unwrap();
    let out = s.delete("/k", 0).await.unwrap();
    assert!(out.succeeded);
    assert_eq!(out.current, Some(kv("/k", 1, 3, 2, b"w", 0)));
}

#[tokio::test]
async fn reads_at_past_revisions() {
    let (_d, s) = open().await;
    s.create("/p/a", b"a1".to_vec(), 0).await.unwrap(); // 1
    s.create("/p/b", b"b1".to_vec(), 0).await.unwrap(); // 2
    s.update("/p/a", b"a2".to_vec(), 1, 0).await.unwrap(); // 3
    s.delete("/p/b", 0).await.unwrap(); // 4
    s.create("/p/c", b"c1".to_vec(), 0).await.unwrap(); // 5
    s.create("/q/x", b"x".to_vec(), 0).await.unwrap(); // 6

    assert_eq!(
        s.get("/p/a", 2).await.unwrap(),
        (6, Some(kv("/p/a", 1, 1, 1, b"a1", 0)))
    );
    assert_eq!(
        s.get("/p/b", 3).await.unwrap().1,
        Some(kv("/p/b", 2, 2, 1, b"b1", 0))
    );
    assert_eq!(s.get("/p/b", 4).await.unwrap().1, None);

    let names = |r: &crate::ListResult| r.kvs.iter().map(|k| k.key.clone()).collect::<Vec<_>>();
    let r = s.list("/p/", "", 0, 0).await.unwrap();
    assert_eq!(
        (r.revision, names(&r), r.more),
        (6, vec!["/p/a".to_string(), "/p/c".into()], false)
    );
    let r = s.list("/p/", "", 0, 3).await.unwrap();
    assert_eq!(r.revision, 3);
    assert_eq!(
        r.kvs,
        vec![kv("/p/a", 1, 3, 2, b"a2", 0), kv("/p/b", 2, 2, 1, b"b1", 0)]
    );
    let r = s.list("/p/", "", 1, 3).await.unwrap();
    assert_eq!((names(&r), r.more), (vec!["/p/a".to_string()], true));
    let r = s.list("/p/", "/p/b", 1, 3).await.unwrap();
    assert_eq!((names(&r), r.more), (vec!["/p/b".to_string()], false));
    let r = s.list("/p/", "/p/b", 0, 0).await.unwrap();
    assert_eq!(names(&r), vec!["/p/c".to_string()]);
    let r = s.list("", "", 0, 0).await.unwrap();
    assert_eq!(r.kvs.len(), 3);
    assert_eq!(s.count("/p/").await.unwrap(), (6, 2));
    assert_eq!(s.count("").await.unwrap(), (6, 3));
    assert_eq!(s.count("/z").await.unwrap(), (6, 0));

    assert!(matches!(
        s.get("/p/a", 7).await,
        Err(StoreError::FutureRevision {
            requested: 7,
            current: 6
        })
    ));
    assert!(matches!(
        s.list("/p/", "", 0, 9).await,
        Err(StoreError::FutureRevision { .. })
    ));
}

#[tokio::test]
async fn prefix_is_literal_and_case_sensitive() {
    let (_d, s) = open().await;
    for k in ["/a_b/1", "/aXb/1", "/A_b/2", "/a_b0", "/a_b/\u{10FFFF}"] {
        s.create(k, vec![], 0).await.unwrap();
    }
    let r = s.list("/a_b/", "", 0, 0).await.unwrap();
    let keys: Vec<_> = r.kvs.iter().map(|k| k.key.as_str()).collect();
    assert_eq!(keys, vec!["/a_b/1", "/a_b/\u{10FFFF}"]);
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
async fn compaction_keeps_delete_at_target_for_watchers() {
    let (_d, s) = open().await;
    s.create("/a", b"1".to_vec(), 0).await.unwrap(); // 1
    s.delete("/a", 0).await.unwrap(); // 2
    s.compact(2).await.unwrap();
    let mut w = s.watch("/", 2).await.unwrap();
    let ev = next_events(&mut w, 1).await;
    assert_eq!(ev[0].kind, EventKind::Delete);
    assert_eq!(ev[0].kv, kv("/a", 1, 2, 1, b"1", 0));
    assert_eq!(ev[0].prev_kv, Some(kv("/a", 1, 1, 1, b"1", 0)));
    assert!(matches!(
        s.watch("/", 1).await,
        Err(StoreError::Compacted {
            requested: 1,
            compacted: 2
        })
    ));
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
async fn watch_events_and_prev_kv() {
    let (_d, s) = open().await;
    s.create("/w/old", b"o".to_vec(), 0).await.unwrap(); // 1
    let mut w = s.watch("/w/", 0).await.unwrap();
    let mut other = s.watch("/x/", 0).await.unwrap();
    s.create("/w/a", b"1".to_vec(), 0).await.unwrap(); // 2
    s.update("/w/a", b"2".to_vec(), 2, 0).await.unwrap(); // 3
    s.create("/x/b", b"1".to_vec(), 0).await.unwrap(); // 4
    s.delete("/w/a", 3).await.unwrap(); // 5
    let ev = next_events(&mut w, 3).await;
    assert_eq!(
        ev,
        vec![
            Event {
                kind: EventKind::Create,
                kv: kv("/w/a", 2, 2, 1, b"1", 0),
                prev_kv: None
            },
            Event {
                kind: EventKind::Update,
                kv: kv("/w/a", 2, 3, 2, b"2", 0),
                prev_kv: Some(kv("/w/a", 2, 2, 1, b"1", 0))
            },
            Event {
                kind: EventKind::Delete,
                kv: kv("/w/a", 2, 5, 2, b"2", 0),
                prev_kv: Some(kv("/w/a", 2, 3, 2, b"2", 0))
            },
        ]
    );
    assert_quiet(&mut w).await;
    let ev = next_events(&mut other, 1).await;
    assert_eq!(ev[0].kv.key, "/x/b");

    // From a past revision: replays history, including what happened before the call.
    let mut w = s.watch("/w/", 1).await.unwrap();
    let ev = next_events(&mut w, 4).await;
    let revs: Vec<_> = ev.iter().map(|e| e.kv.mod_revision).collect();
    assert_eq!(revs, vec![1, 2, 3, 5]);
    assert_quiet(&mut w).await;

    // From a future revision: starts delivering once the store gets there.
    let mut w = s.watch("", 7).await.unwrap();
    s.create("/y/6", vec![], 0).await.unwrap(); // 6
    s.create("/y/7", vec![], 0).await.unwrap(); // 7
    let ev = next_events(&mut w, 1).await;
    assert_eq!(ev[0].kv.key, "/y/7");
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
async fn leases_revoke_and_expire() {
    let (_d, s) = open().await;
    assert!(matches!(
        s.create("/l/x", vec![], 42).await,
        Err(StoreError::LeaseNotFound(42))
    ));
    assert!(matches!(
        s.revoke_lease(42).await,
        Err(StoreError::LeaseNotFound(42))
    ));
    let lease = s.grant_lease(60).await.unwrap();
    assert!(lease > 0);
    s.create("/l/a", b"a".to_vec(), lease).await.unwrap(); // 1
    s.create("/l/b", b"b".to_vec(), 0).await.unwrap(); // 2
    let out = s.update("/l/b", b"b2".to_vec(), 2, lease).await.unwrap(); // 3
    assert_eq!(out.current.unwrap().lease, lease);
    s.create("/l/c", b"c".to_vec(), lease).await.unwrap(); // 4
    s.update("/l/c", b"c2".to_vec(), 4, 0).await.unwrap(); // 5: detached from the lease
    assert!(matches!(
        s.update("/l/c", vec![], 5, 999).await,
        Err(StoreError::LeaseNotFound(999))
    ));

    let mut w = s.watch("/l/", 0).await.unwrap();
    s.revoke_lease(lease).await.unwrap();
    let ev = next_events(&mut w, 2).await;
    assert!(ev.iter().all(|e| e.kind == EventKind::Delete));
    let keys: Vec<_> = ev.iter().map(|e| e.kv.key.as_str()).collect();
    assert_eq!(keys, vec!["/l/a", "/l/b"]);
    assert_eq!(ev[1].prev_kv.as_ref().unwrap().lease, lease);
    assert_eq!(s.get("/l/c", 0).await.unwrap().1.unwrap().value, b"c2");
    assert!(matches!(
        s.revoke_lease(lease).await,
        Err(StoreError::LeaseNotFound(_))
    ));
    assert!(matches!(
        s.create("/l/d", vec![], lease).await,
        Err(StoreError::LeaseNotFound(_))
    ));

    // Expiry through the background sweeper.
    let short = s.grant_lease(1).await.unwrap();
    s.create("/l/e", b"e".to_vec(), short).await.unwrap();
    let ev = tokio::time::timeout(Duration::from_secs(5), next_events(&mut w, 2))
        .await
        .unwrap();
    assert_eq!(
        (ev[0].kind, ev[0].kv.key.as_str()),
        (EventKind::Create, "/l/e")
    );
    assert_eq!(
        (ev[1].kind, ev[1].kv.key.as_str()),
        (EventKind::Delete, "/l/e")
    );
    assert_eq!(s.get("/l/e", 0).await.unwrap().1, None);
    assert!(matches!(
        s.revoke_lease(short).await,
        Err(StoreError::LeaseNotFound(_))
    ));
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_cas_has_one_winner() {
    let (_d, s) = open().await;
    s.create("/c", b"0".to_vec(), 0).await.unwrap();
    let mut tasks = Vec::new();
    for i in 0..8 {
        let s = s.clone();
        tasks.push(tokio::spawn(async move {
            s.update("/c", vec![i], 1, 0).await.unwrap().succeeded
        }));
    }
    let mut winners = 0;
    for t in tasks {
        winners += t.await.unwrap() as i32;
    }
    assert_eq!(winners, 1);
    assert_eq!(s.current_revision().await.unwrap(), 2);
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
