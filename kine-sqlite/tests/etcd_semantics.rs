//! [`EtcdBackend`] against a real etcd (Debian's `/usr/bin/etcd`): the same semantic
//! scenarios and randomized model as the SQLite store, plus a three-member cluster that loses a
//! member mid-run. Each test starts its own etcd on free loopback ports.
//!
//! Skipped (with a message) when `/usr/bin/etcd` is missing; scripts/setup.sh installs it.

#![cfg(feature = "etcd")]

mod etcd_harness;
mod semantics;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use etcd_harness::{etcd_available, EtcdCluster};
use futures::StreamExt;
use kine_sqlite::{Backend, EtcdBackend, EventKind, StoreError};
use semantics::{Store, ETCD};

async fn connect(cluster: &EtcdCluster) -> Arc<EtcdBackend> {
    EtcdBackend::connect(&cluster.endpoints(), None)
        .await
        .expect("connecting to etcd")
}

macro_rules! scenarios {
    ($($name:ident),* $(,)?) => {$(
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $name() {
            if !etcd_available(stringify!($name)) {
                return;
            }
            let etcd = EtcdCluster::single();
            let store = connect(&etcd).await;
            semantics::$name(store, semantics::ETCD).await;
        }
    )*};
}

scenarios!(
    revisions_and_versions,
    create_only_if_absent,
    failed_compares,
    unconditional_delete,
    reads_at_past_revisions,
    prefix_is_literal_and_case_sensitive,
    compaction,
    compaction_keeps_delete_at_target_for_watchers,
    watch_events_and_prev_kv,
    leases_revoke_and_expire,
    concurrent_cas_has_one_winner,
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_consumer_loses_nothing() {
    if !etcd_available("slow_consumer_loses_nothing") {
        return;
    }
    let etcd = EtcdCluster::single();
    let store = connect(&etcd).await;
    semantics::slow_consumer_loses_nothing(store, ETCD).await;
}

async fn model(seed: u64, steps: usize) {
    if !etcd_available("model") {
        return;
    }
    let etcd = EtcdCluster::single();
    let store = connect(&etcd).await;
    semantics::model::run_model(store, ETCD, None, seed, steps).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn model_seed_1() {
    model(1, 1500).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn model_seed_2() {
    model(2, 1500).await;
}

/// Every scenario against one three-member cluster, each in its own key namespace; after the
/// fourth, the raft leader is SIGKILLed, and the rest must pass on the two survivors.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_members_one_killed_mid_suite() {
    if !etcd_available("three_members_one_killed_mid_suite") {
        return;
    }
    let cluster = Arc::new(std::sync::Mutex::new(EtcdCluster::start(3)));
    let endpoints = cluster.lock().unwrap().endpoints();
    let store: Store = EtcdBackend::connect(&endpoints, None).await.unwrap();
    let killer = cluster.clone();
    semantics::run_all_namespaced(store.clone(), ETCD, move |i| {
        let killer = killer.clone();
        async move {
            if i == 3 {
                let mut c = killer.lock().unwrap();
                let leader = c.leader().expect("a leader");
                eprintln!("killing the leader, member {leader}");
                c.kill(leader);
            }
        }
    })
    .await;
    assert_eq!(
        cluster
            .lock()
            .unwrap()
            .members
            .iter()
            .filter(|m| m.alive())
            .count(),
        2
    );
}

/// Concurrent writers and a watcher on a three-member cluster; a member (the leader) is
/// SIGKILLed in the middle. Writes go on, and the watch (re-created transparently on a
/// survivor) delivers every change exactly once, in revision order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_members_writes_and_watches_survive_a_killed_member() {
    if !etcd_available("three_members_writes_and_watches_survive_a_killed_member") {
        return;
    }
    let mut cluster = EtcdCluster::start(3);
    let store = EtcdBackend::connect(&cluster.endpoints(), None)
        .await
        .unwrap();
    let start = store.current_revision().await.unwrap() + 1;
    let mut watch = store.watch("/load/", 0).await.unwrap();

    const WRITERS: usize = 4;
    const PER_WRITER: usize = 150;
    let mut tasks = Vec::new();
    for w in 0..WRITERS {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let mut errors = 0;
            for i in 0..PER_WRITER {
                let key = format!("/load/{w}/{i:04}");
                // A write cut off by the kill may or may not have been applied; retrying a
                // create of a unique key settles it (KeyExists: the first try was applied).
                let deadline = Instant::now() + Duration::from_secs(30);
                loop {
                    match store.create(&key, vec![w as u8], 0).await {
                        Ok(_) | Err(StoreError::KeyExists) => break,
                        Err(e) => {
                            errors += 1;
                            assert!(Instant::now() < deadline, "{key}: {e}");
                            tokio::time::sleep(Duration::from_millis(50)).await;
                        }
                    }
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            errors
        }));
    }
    // Kill the leader once some writes are through.
    let deadline = Instant::now() + Duration::from_secs(30);
    while store.count("/load/").await.unwrap().1 < (WRITERS * PER_WRITER / 3) as i64 {
        assert!(Instant::now() < deadline, "writers stuck");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let leader = cluster.leader().expect("a leader");
    cluster.kill(leader);
    let killed_at = store.current_revision().await.unwrap();
    eprintln!("killed the leader (member {leader}) at revision {killed_at}");
    let mut errors = 0;
    for t in tasks {
        errors += t.await.unwrap();
    }
    eprintln!("writers saw {errors} retried errors");

    let (end, count) = store.count("/load/").await.unwrap();
    assert_eq!(count, (WRITERS * PER_WRITER) as i64);
    assert!(end > killed_at, "no writes after the kill");

    // The watch saw every create, once each, in revision order, across the kill.
    let mut seen = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while seen.len() < WRITERS * PER_WRITER {
        let batch = tokio::time::timeout(deadline - Instant::now(), watch.next())
            .await
            .unwrap_or_else(|_| panic!("watch stalled at {} events", seen.len()))
            .expect("watch ended")
            .expect("watch error");
        seen.extend(batch);
    }
    assert!(seen.iter().all(|e| e.kind == EventKind::Create));
    let revs: Vec<i64> = seen.iter().map(|e| e.kv.mod_revision).collect();
    assert!(
        revs.windows(2).all(|w| w[0] < w[1]),
        "out of order or duplicated"
    );
    assert_eq!(revs.first().copied(), Some(start));
    assert_eq!(revs.last().copied(), Some(end));
    let keys: BTreeSet<_> = seen.iter().map(|e| e.kv.key.clone()).collect();
    assert_eq!(keys.len(), WRITERS * PER_WRITER);

    // And a new watch and a write still work on the survivors.
    let mut w2 = store.watch("/after/", 0).await.unwrap();
    let rev = store.create("/after/x", b"1".to_vec(), 0).await.unwrap();
    let ev = tokio::time::timeout(Duration::from_secs(10), w2.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(ev[0].kv.mod_revision, rev);
}

/// Connecting to nothing fails with the endpoints in the message, instead of hanging.
#[tokio::test]
async fn connect_to_nothing_fails() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let ep = format!("http://127.0.0.1:{port}");
    let started = Instant::now();
    let err = EtcdBackend::connect(std::slice::from_ref(&ep), None)
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains(&ep), "{err}");
    assert!(started.elapsed() < Duration::from_secs(60));
}
