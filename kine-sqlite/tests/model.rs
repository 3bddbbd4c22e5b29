//! Randomized model test of the SQLite store (the model lives in semantics/model.rs and runs
//! against etcd too, in etcd_semantics.rs); plus the slow-consumer test.

mod semantics;

use std::sync::Arc;

use kine_sqlite::{Options, SqliteBackend};
use semantics::{model::run_model, Store, SQLITE};

async fn open() -> (tempfile::TempDir, Arc<SqliteBackend>) {
    let dir = tempfile::tempdir().unwrap();
    // Durability is the crash test's business; fsyncs would only slow this one down.
    let opts = Options {
        synchronous_full: false,
        ..Options::default()
    };
    let store = SqliteBackend::open_with(&dir.path().join("db"), opts)
        .await
        .unwrap();
    (dir, store)
}

async fn model(seed: u64) {
    let (_dir, store) = open().await;
    let position = {
        let store = store.clone();
        move || store.oldest_watch_position()
    };
    run_model(store as Store, SQLITE, Some(&position), seed, 1500).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn model_seed_1() {
    model(1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn model_seed_2() {
    model(2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn model_seed_3() {
    model(3).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn model_seed_4() {
    model(0xdead_beef).await;
}

/// 5000 changes are written while the watcher's consumer sleeps; afterwards every one of
/// them must arrive, in order, exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_consumer_loses_nothing() {
    let (_dir, store) = open().await;
    semantics::slow_consumer_loses_nothing(store, SQLITE).await;
}
