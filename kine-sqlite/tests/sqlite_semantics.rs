//! The backend-generic semantic scenarios (semantics/mod.rs), run against the SQLite store.
//! The same scenarios run against a real etcd in etcd_semantics.rs.

mod semantics;

use std::time::Duration;

use kine_sqlite::{Options, SqliteBackend};
use semantics::Store;

async fn open() -> (tempfile::TempDir, Store) {
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

macro_rules! scenarios {
    ($($name:ident),* $(,)?) => {$(
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $name() {
            let (_dir, store) = open().await;
            semantics::$name(store, semantics::SQLITE).await;
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

/// All scenarios in one store, each in its own key namespace (as the etcd cluster test runs
/// them): checks that the scenarios do not depend on starting from an empty store.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn all_scenarios_in_one_store() {
    let (_dir, store) = open().await;
    semantics::run_all_namespaced(store, semantics::SQLITE, |_| async {}).await;
}
