//! Crash test: a child process (this test binary, re-executed in "writer" mode) writes and
//! prints every acknowledged write; it is SIGKILLed mid-stream, and every acknowledged write
//! must then be in the reopened database. Two rounds, so that writing after recovering from a
//! crash is covered too.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use kine_sqlite::{Backend, SqliteBackend};

/// Set (to the database path) only in the re-executed child.
const CHILD_DB: &str = "KINE_SQLITE_CRASH_CHILD_DB";
/// Names the child's round, so its keys do not collide with the previous round's.
const CHILD_ROUND: &str = "KINE_SQLITE_CRASH_CHILD_ROUND";
const COUNTER: &str = "/crash/counter";

/// The writer. As a normal test it does nothing; the parent runs it with `CHILD_DB` set.
#[test]
fn crash_writer_child() {
    let Ok(db) = std::env::var(CHILD_DB) else {
        return;
    };
    let round = std::env::var(CHILD_ROUND).unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        // Default options: synchronous=FULL.
        let store = SqliteBackend::open(Path::new(&db)).await.unwrap();
        let started = Instant::now();
        let mut i = 0u64;
        // Bounded so an orphaned child cannot run forever; a vanished parent also ends it,
        // as printing to a closed pipe panics.
        while started.elapsed() < Duration::from_secs(60) {
            let key = format!("/crash/{round}/{i:08}");
            let rev = store
                .create(&key, i.to_string().into_bytes(), 0)
                .await
                .unwrap();
            emit(&format!("ACK create {rev} {key}"));
            // A CAS update of one shared key, to cover updates as well as creates.
            let (_, cur) = store.get(COUNTER, 0).await.unwrap();
            let value = format!("{round}-{i}").into_bytes();
            let rev = match cur {
                None => store.create(COUNTER, value.clone(), 0).await.unwrap(),
                Some(kv) => {
                    let out = store
                        .update(COUNTER, value.clone(), kv.mod_revision, 0)
                        .await
                        .unwrap();
                    assert!(out.succeeded);
                    out.revision
                }
            };
            emit(&format!(
                "ACK counter {rev} {}",
                String::from_utf8(value).unwrap()
            ));
            i += 1;
        }
    });
}

fn emit(line: &str) {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{line}").unwrap();
    out.flush().unwrap();
}

#[derive(Debug)]
enum Ack {
    Create { rev: i64, key: String },
    Counter { rev: i64, value: String },
}

fn parse(line: &str) -> Option<Ack> {
    let mut parts = line.strip_prefix("ACK ")?.split(' ');
    let (kind, rev, arg) = (
        parts.next()?,
        parts.next()?.parse().ok()?,
        parts.next()?.to_owned(),
    );
    match kind {
        "create" => Some(Ack::Create { rev, key: arg }),
        "counter" => Some(Ack::Counter { rev, value: arg }),
        _ => None,
    }
}

/// Runs one child writer on `db`, kills it with SIGKILL after `min_acks` acknowledgements,
/// and returns every acknowledgement it printed before dying.
fn run_and_kill(db: &PathBuf, round: u32, min_acks: usize) -> Vec<Ack> {
    let exe = std::env::current_exe().unwrap();
    let mut child = Command::new(exe)
        .args([
            "crash_writer_child",
            "--exact",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_DB, db)
        .env(CHILD_ROUND, round.to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawning the writer");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut acks = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while acks.len() < min_acks {
        assert!(Instant::now() < deadline, "writer too slow");
        let line = lines.next().expect("writer exited early").unwrap();
        acks.extend(parse(&line));
    }
    // Child::kill sends SIGKILL on Unix: no destructors, no clean shutdown.
    child.kill().unwrap();
    // Whatever it printed before dying was acknowledged too.
    for line in lines {
        let Ok(line) = line else { break };
        acks.extend(parse(&line));
    }
    let status = child.wait().unwrap();
    assert!(!status.success(), "writer should have been killed");
    acks
}

#[test]
fn acknowledged_writes_survive_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("crash.db");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    for (round, n) in [(1u32, 200usize), (2, 120)] {
        let acks = run_and_kill(&db, round, n);
        rt.block_on(verify(&db, &acks));
    }
}

async fn verify(db: &Path, acks: &[Ack]) {
    let store = SqliteBackend::open(db).await.unwrap();
    let current = store.current_revision().await.unwrap();
    let mut last_counter = None;
    for ack in acks {
        match ack {
            Ack::Create { rev, key } => {
                let (_, kv) = store.get(key, 0).await.unwrap();
                let kv = kv.unwrap_or_else(|| panic!("acknowledged {key} lost"));
                assert_eq!(kv.mod_revision, *rev, "{key}");
                assert_eq!(kv.create_revision, *rev, "{key}");
            }
            Ack::Counter { rev, value } => {
                // The counter's history is still there (no compaction ran): its value as of
                // the acknowledged revision is the acknowledged one.
                let (_, kv) = store.get(COUNTER, *rev).await.unwrap();
                assert_eq!(kv.unwrap().value, value.as_bytes(), "counter at {rev}");
                last_counter = Some(*rev);
            }
        }
        let rev = match ack {
            Ack::Create { rev, .. } | Ack::Counter { rev, .. } => *rev,
        };
        assert!(rev <= current);
    }
    // At most the write in flight at the kill (committed, not yet acknowledged) lies beyond.
    let (_, counter) = store.get(COUNTER, 0).await.unwrap();
    assert!(counter.unwrap().mod_revision >= last_counter.unwrap());
    assert!(
        current
            <= acks
                .iter()
                .map(|a| match a {
                    Ack::Create { rev, .. } | Ack::Counter { rev, .. } => *rev,
                })
                .max()
                .unwrap()
                + 1
    );
}
