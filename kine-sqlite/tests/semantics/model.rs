//! The randomized model test, generic over the backend: long random operation sequences
//! checked step by step against a simple in-memory history, with watchers running alongside
//! that must observe exactly the model's events.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use kine_sqlite::{CasOutcome, Event, EventKind, KeyValue, ListResult, StoreError};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::{Flavor, Store};

const KEYS: &[&str] = &[
    "/a", "/a/0", "/a/1", "/a/2", "/a/3", "/b/0", "/b/1", "/b/2", "/ab",
];
const PREFIXES: &[&str] = &["", "/a", "/a/", "/b/", "/c/"];

/// The reference: every state each key has had, and every event.
#[derive(Default)]
struct Model {
    rev: i64,
    compact: i64,
    /// Per key: (revision, state from that revision on).
    hist: BTreeMap<String, Vec<(i64, Option<KeyValue>)>>,
    events: Vec<Event>,
    leases: Vec<i64>,
}

impl Model {
    fn at(&self, key: &str, rev: i64) -> Option<KeyValue> {
        self.hist
            .get(key)?
            .iter()
            .rev()
            .find(|(r, _)| *r <= rev)
            .and_then(|(_, kv)| kv.clone())
    }

    fn cur(&self, key: &str) -> Option<KeyValue> {
        self.at(key, self.rev)
    }

    fn record(&mut self, ev: Event) {
        self.rev += 1;
        self.record_at_current(ev);
    }

    /// Records one more event at the current revision (a transaction's second change).
    fn record_at_current(&mut self, ev: Event) {
        assert_eq!(ev.kv.mod_revision, self.rev);
        let state = (ev.kind != EventKind::Delete).then(|| ev.kv.clone());
        self.hist
            .entry(ev.kv.key.clone())
            .or_default()
            .push((self.rev, state));
        self.events.push(ev);
    }

    /// Deletes all of `prevs` at one new revision (etcd's lease revoke), in key order.
    fn delete_all(&mut self, prevs: Vec<KeyValue>) {
        if prevs.is_empty() {
            return;
        }
        self.rev += 1;
        for prev in prevs {
            let mut kv = prev.clone();
            kv.mod_revision = self.rev;
            self.record_at_current(Event {
                kind: EventKind::Delete,
                kv,
                prev_kv: Some(prev),
            });
        }
    }

    fn delete(&mut self, prev: KeyValue) -> KeyValue {
        let mut kv = prev.clone();
        kv.mod_revision = self.rev + 1;
        self.record(Event {
            kind: EventKind::Delete,
            kv: kv.clone(),
            prev_kv: Some(prev),
        });
        kv
    }

    fn list(&self, prefix: &str, start: &str, limit: i64, rev: i64) -> ListResult {
        let mut kvs: Vec<KeyValue> = self
            .hist
            .keys()
            .filter(|k| k.starts_with(prefix) && k.as_str() >= start)
            .filter_map(|k| self.at(k, rev))
            .collect();
        let more = limit > 0 && kvs.len() as i64 > limit;
        if more {
            kvs.truncate(limit as usize);
        }
        ListResult {
            revision: rev,
            kvs,
            more,
        }
    }

    /// The expected error of a read at `rev`, if any.
    fn read_error(&self, rev: i64) -> Option<&'static str> {
        if rev > self.rev {
            Some("future")
        } else if rev != 0 && rev < self.compact {
            Some("compacted")
        } else {
            None
        }
    }
}

fn err_kind(e: &StoreError) -> &'static str {
    match e {
        StoreError::FutureRevision { .. } => "future",
        StoreError::Compacted { .. } => "compacted",
        StoreError::KeyExists => "exists",
        StoreError::LeaseNotFound(_) => "lease",
        other => panic!("unexpected error {other:?}"),
    }
}

/// How long etcd may take to sync a watcher that starts at a past revision (its loop runs
/// every 100 ms; generous for a loaded machine).
const ETCD_WATCHER_SYNC: Duration = Duration::from_secs(1);

/// A watch running alongside, collecting what it receives.
struct Watcher {
    prefix: String,
    start: i64,
    got: Arc<Mutex<Vec<Event>>>,
    task: tokio::task::JoinHandle<()>,
    created: Instant,
}

impl Watcher {
    async fn start(store: &Store, prefix: &str, start: i64, from: i64) -> Watcher {
        let mut stream = store.watch(prefix, start).await.unwrap();
        let got = Arc::new(Mutex::new(Vec::new()));
        let sink = got.clone();
        let task = tokio::spawn(async move {
            while let Some(batch) = stream.next().await {
                let batch = batch.expect("watch failed");
                assert!(!batch.is_empty());
                sink.lock().unwrap().extend(batch);
            }
        });
        Watcher {
            prefix: prefix.to_owned(),
            start: from,
            got,
            task,
            created: Instant::now(),
        }
    }

    fn expected<'a>(&'a self, model: &'a Model) -> impl Iterator<Item = &'a Event> + 'a {
        model
            .events
            .iter()
            .filter(|e| e.kv.key.starts_with(&self.prefix) && e.kv.mod_revision >= self.start)
    }

    /// Waits until every expected event below `below` has been received, then checks them.
    async fn sync(&self, model: &Model, below: i64) {
        let want: Vec<Event> = self
            .expected(model)
            .filter(|e| e.kv.mod_revision < below)
            .cloned()
            .collect();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let n = self.got.lock().unwrap().len();
            if n >= want.len() {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "watcher {:?} stuck at {n}/{}",
                self.prefix,
                want.len()
            );
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        let got = self.got.lock().unwrap();
        assert_eq!(
            &got[..want.len()],
            &want[..],
            "watcher {:?} from {}",
            self.prefix,
            self.start
        );
    }
}

/// Runs `steps` random operations on `store` (which must be otherwise unused) and checks each
/// against the model. `watch_position` (SQLite only) says how far the slowest watcher has read.
pub async fn run_model(
    store: Store,
    flavor: Flavor,
    watch_position: Option<&(dyn Fn() -> Option<i64> + Sync)>,
    seed: u64,
    steps: usize,
) {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut m = Model {
        rev: store.current_revision().await.unwrap(),
        ..Model::default()
    };
    let first = m.rev + 1;
    let mut watchers = vec![
        Watcher::start(&store, "", first, first).await,
        Watcher::start(&store, "/a/", 0, first).await,
    ];

    for step in 0..steps {
        let key = KEYS[rng.gen_range(0..KEYS.len())];
        let ctx = format!("seed {seed} step {step}");
        match rng.gen_range(0..100) {
            0..=19 => {
                let lease = if rng.gen_bool(0.2) && !m.leases.is_empty() {
                    m.leases[rng.gen_range(0..m.leases.len())]
                } else {
                    0
                };
                let value = vec![rng.gen::<u8>(); rng.gen_range(0..4)];
                let got = store.create(key, value.clone(), lease).await;
                if m.cur(key).is_some() {
                    assert!(matches!(got, Err(StoreError::KeyExists)), "{ctx}: {got:?}");
                } else {
                    let rev = m.rev + 1;
                    assert_eq!(got.unwrap(), rev, "{ctx}");
                    let kv = KeyValue {
                        key: key.into(),
                        create_revision: rev,
                        mod_revision: rev,
                        version: 1,
                        value,
                        lease,
                    };
                    m.record(Event {
                        kind: EventKind::Create,
                        kv,
                        prev_kv: None,
                    });
                }
            }
            20..=39 => {
                let cur = m.cur(key);
                let expected = match (&cur, rng.gen_bool(0.7)) {
                    (Some(kv), true) => kv.mod_revision,
                    _ => rng.gen_range(0..=m.rev + 1),
                };
                let lease = if rng.gen_bool(0.2) && !m.leases.is_empty() {
                    m.leases[rng.gen_range(0..m.leases.len())]
                } else {
                    0
                };
                let value = vec![rng.gen::<u8>(); rng.gen_range(0..4)];
                let got = store
                    .update(key, value.clone(), expected, lease)
                    .await
                    .unwrap();
                let want = match cur {
                    Some(prev) if prev.mod_revision == expected => {
                        let kv = KeyValue {
                            key: key.into(),
                            create_revision: prev.create_revision,
                            mod_revision: m.rev + 1,
                            version: prev.version + 1,
                            value,
                            lease,
                        };
                        m.record(Event {
                            kind: EventKind::Update,
                            kv: kv.clone(),
                            prev_kv: Some(prev),
                        });
                        CasOutcome {
                            revision: m.rev,
                            current: Some(kv),
                            succeeded: true,
                        }
                    }
                    other => CasOutcome {
                        revision: m.rev,
                        current: other,
                        succeeded: false,
                    },
                };
                assert_eq!(got, want, "{ctx}");
            }
            40..=51 => {
                let cur = m.cur(key);
                let expected = match (&cur, rng.gen_range(0..3)) {
                    (_, 0) => 0,
                    (Some(kv), 1) => kv.mod_revision,
                    _ => rng.gen_range(1..=m.rev + 1),
                };
                let got = store.delete(key, expected).await.unwrap();
                let want = match cur {
                    Some(prev) if expected == 0 || prev.mod_revision == expected => {
                        let kv = m.delete(prev);
                        CasOutcome {
                            revision: m.rev,
                            current: Some(kv),
                            succeeded: true,
                        }
                    }
                    other => CasOutcome {
                        revision: m.rev,
                        current: other,
                        succeeded: false,
                    },
                };
                assert_eq!(got, want, "{ctx}");
            }
            52..=61 => {
                let rev = if rng.gen_bool(0.5) {
                    0
                } else {
                    rng.gen_range(1..=m.rev + 2)
                };
                let got = store.get(key, rev).await;
                match m.read_error(rev) {
                    Some(e) => assert_eq!(err_kind(&got.unwrap_err()), e, "{ctx}"),
                    None => {
                        let r = if rev == 0 { m.rev } else { rev };
                        assert_eq!(got.unwrap(), (m.rev, m.at(key, r)), "{ctx} get {key}@{rev}");
                    }
                }
            }
            62..=79 => {
                let prefix = PREFIXES[rng.gen_range(0..PREFIXES.len())];
                let start = if rng.gen_bool(0.3) {
                    KEYS[rng.gen_range(0..KEYS.len())]
                } else {
                    ""
                };
                let limit = if rng.gen_bool(0.5) {
                    0
                } else {
                    rng.gen_range(1..4)
                };
                let rev = if rng.gen_bool(0.4) {
                    0
                } else {
                    rng.gen_range(1..=m.rev + 1)
                };
                let got = store.list(prefix, start, limit, rev).await;
                match m.read_error(rev) {
                    Some(e) => assert_eq!(err_kind(&got.unwrap_err()), e, "{ctx}"),
                    None => {
                        let r = if rev == 0 { m.rev } else { rev };
                        assert_eq!(
                            got.unwrap(),
                            m.list(prefix, start, limit, r),
                            "{ctx} list {prefix:?} {start:?} {limit} @{rev}"
                        );
                    }
                }
            }
            80..=83 => {
                let prefix = PREFIXES[rng.gen_range(0..PREFIXES.len())];
                let want = m.list(prefix, "", 0, m.rev).kvs.len() as i64;
                assert_eq!(store.count(prefix).await.unwrap(), (m.rev, want), "{ctx}");
            }
            84..=87 => {
                // Compact somewhere between the current bound and the current revision; the
                // watchers must have read what is about to go.
                let target = rng.gen_range(m.compact.max(1)..=m.rev.max(1));
                if target > m.rev {
                    continue;
                }
                for w in &watchers {
                    w.sync(&m, target).await;
                }
                // Having delivered the events is not enough: each watcher must also have read
                // past any later writes to other keys that it has not polled yet.
                if let Some(position) = watch_position {
                    let deadline = Instant::now() + Duration::from_secs(10);
                    while position().unwrap() + 1 < target {
                        assert!(Instant::now() < deadline, "{ctx}: watchers stuck");
                        tokio::time::sleep(Duration::from_millis(1)).await;
                    }
                } else {
                    // etcd says nothing of a watcher's position, and cancels (ErrCompacted) a
                    // watcher created at a past revision that its sync loop (every 100 ms)
                    // has not caught up yet when compaction passes its start: give every new
                    // watcher time to be synced first.
                    for w in &watchers {
                        let age = w.created.elapsed();
                        if age < ETCD_WATCHER_SYNC {
                            tokio::time::sleep(ETCD_WATCHER_SYNC - age).await;
                        }
                    }
                }
                assert_eq!(
                    store.compact(target).await.unwrap(),
                    target.max(m.compact),
                    "{ctx}"
                );
                m.compact = m.compact.max(target);
                assert_eq!(store.compact_revision().await.unwrap(), m.compact);
            }
            88..=90 => {
                let lease = store.grant_lease(3600).await.unwrap();
                m.leases.push(lease);
            }
            91..=92 => {
                if m.leases.is_empty() {
                    continue;
                }
                let lease = m.leases.remove(rng.gen_range(0..m.leases.len()));
                store.revoke_lease(lease).await.unwrap();
                // Keys of the lease are deleted in key order, one revision each.
                let doomed: Vec<KeyValue> = m
                    .hist
                    .keys()
                    .filter_map(|k| m.cur(k))
                    .filter(|kv| kv.lease == lease)
                    .collect();
                if flavor.lease_revoke_one_revision {
                    m.delete_all(doomed);
                } else {
                    for kv in doomed {
                        m.delete(kv);
                    }
                }
                assert_eq!(store.current_revision().await.unwrap(), m.rev, "{ctx}");
            }
            93..=94 => {
                if watchers.len() < 6 {
                    // A new watcher from some still-readable revision (or from now).
                    let prefix = PREFIXES[rng.gen_range(0..PREFIXES.len())];
                    let from = rng.gen_range(m.compact.max(1)..=m.rev + 1);
                    let (start, from) = if rng.gen_bool(0.3) {
                        (0, m.rev + 1)
                    } else {
                        (from, from)
                    };
                    watchers.push(Watcher::start(&store, prefix, start, from).await);
                }
            }
            _ => {
                // Reads below the compact bound and above the current revision.
                if m.compact > 1 {
                    let got = store.get(key, m.compact - 1).await;
                    assert!(
                        matches!(got, Err(StoreError::Compacted { .. })),
                        "{ctx}: {got:?}"
                    );
                    let got = store.watch("", m.compact - 1).await;
                    assert!(matches!(got, Err(StoreError::Compacted { .. })), "{ctx}");
                }
                let got = store.list("", "", 0, m.rev + 1).await;
                assert!(
                    matches!(got, Err(StoreError::FutureRevision { .. })),
                    "{ctx}: {got:?}"
                );
            }
        }
        assert_eq!(store.current_revision().await.unwrap(), m.rev, "{ctx}");
    }

    // Every watcher saw exactly the model's events for its prefix, no more.
    for w in &watchers {
        w.sync(&m, i64::MAX).await;
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    for w in &watchers {
        let want: Vec<Event> = w.expected(&m).cloned().collect();
        assert_eq!(
            *w.got.lock().unwrap(),
            want,
            "seed {seed}: watcher {:?}",
            w.prefix
        );
        w.task.abort();
    }
    assert!(
        m.rev - first + 1 > steps as i64 / 10,
        "seed {seed}: too few writes ({})",
        m.rev
    );
}
