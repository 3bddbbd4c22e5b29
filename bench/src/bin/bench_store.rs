//! `bench-store`: the etcd v3 API workloads of krust's datastore (`krust kine`) beside a real
//! etcd, with the same client (`etcd-client`), plus raw SQLite transactions as the floor of
//! the put workloads. Run by `scripts/bench-store`, which starts both servers.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use clap::Parser;
use etcd_client::{Client, Compare, CompareOp, EventType, GetOptions, Txn, TxnOp, WatchOptions};
use krust_bench::{fmt_lat, fmt_ops, fmt_ratio, merge, print_table, run_workers, value, Rng, Stat};

#[derive(Parser, Debug, Clone)]
#[command(about = "etcd v3 API benchmark: krust kine vs etcd, with a raw SQLite floor")]
struct Args {
    /// krust's etcd endpoint (`krust kine --listen`), e.g. http://127.0.0.1:23790
    #[arg(long)]
    krust: Option<String>,
    /// etcd's client endpoint, e.g. http://127.0.0.1:23791
    #[arg(long)]
    etcd: Option<String>,
    /// Folder for the raw SQLite floor's database (same disk as the servers' data).
    #[arg(long)]
    sqlite_dir: Option<PathBuf>,
    /// Sequential puts (also the number of keys the range workloads read).
    #[arg(long, default_value_t = 1000)]
    seq_puts: usize,
    /// Puts in total across the concurrent clients (also the txn count).
    #[arg(long, default_value_t = 4000)]
    conc_puts: usize,
    /// Concurrent clients, each with its own connection.
    #[arg(long, default_value_t = 16)]
    clients: usize,
    /// Seconds each read workload runs.
    #[arg(long, default_value_t = 3.0)]
    read_secs: f64,
    /// Watchers on one prefix for the fan-out workload.
    #[arg(long, default_value_t = 1000)]
    watchers: usize,
    /// Puts whose events every watcher must receive.
    #[arg(long, default_value_t = 100)]
    watch_puts: usize,
    /// Watch streams per connection (watchers are spread over connections).
    #[arg(long, default_value_t = 50)]
    watchers_per_conn: usize,
    /// Value size in bytes (a small Kubernetes object).
    #[arg(long, default_value_t = 1024)]
    value_size: usize,
}

const W_SEQ: &str = "put, sequential (1 client)";
const W_CONC: &str = "put, concurrent";
const W_R1: &str = "range 1 key";
const W_RN: &str = "range N keys";
const W_TXN: &str = "txn CAS (compare mod_revision, put)";
const W_WATCH: &str = "watch fan-out (events delivered/s)";

type Results = Vec<(&'static str, Stat)>;

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    let mut targets: Vec<(&str, Results)> = Vec::new();
    for (name, ep) in [("krust", &args.krust), ("etcd", &args.etcd)] {
        if let Some(ep) = ep {
            eprintln!("== {name} at {ep}");
            let r = run_target(&args, ep).await.with_context(|| format!("benchmarking {name}"))?;
            targets.push((name, r));
        }
    }
    let floor = match &args.sqlite_dir {
        Some(dir) => {
            eprintln!("== raw SQLite in {}", dir.display());
            let a = args.clone();
            let dir = dir.clone();
            tokio::task::spawn_blocking(move || sqlite_floor(&a, &dir)).await??
        }
        None => Vec::new(),
    };

    let get = |t: &str, w: &str| -> Option<&Stat> {
        targets
            .iter()
            .find(|(n, _)| *n == t)
            .and_then(|(_, r)| r.iter().find(|(n, _)| *n == w).map(|(_, s)| s))
    };
    let fl = |w: &str| floor.iter().find(|(n, _)| *n == w).map(|(_, s)| s);
    let rows: Vec<Vec<String>> = [W_SEQ, W_CONC, W_R1, W_RN, W_TXN, W_WATCH]
        .iter()
        .map(|w| {
            let label = match *w {
                W_CONC => format!("put, concurrent ({} clients)", args.clients),
                W_R1 => format!("range 1 key ({} clients)", args.clients),
                W_RN => format!("range {} keys ({} clients)", args.seq_puts, args.clients),
                W_TXN => format!("txn CAS: compare mod_revision, put ({} clients)", args.clients),
                W_WATCH => format!(
                    "watch fan-out: {} puts x {} watchers (events/s)",
                    args.watch_puts, args.watchers
                ),
                _ => w.to_string(),
            };
            vec![
                label,
                fmt_ops(get("krust", w)),
                fmt_lat(get("krust", w)),
                fmt_ops(get("etcd", w)),
                fmt_lat(get("etcd", w)),
                fmt_ratio(get("krust", w), get("etcd", w)),
                fmt_ops(fl(w)),
                fmt_ratio(get("krust", w), fl(w)),
            ]
        })
        .collect();
    println!();
    println!(
        "etcd v3 API, {}-byte values; latency p50 / p99 in ms; ratio = krust / reference ops/s",
        args.value_size
    );
    println!();
    print_table(
        &[
            "workload",
            "krust ops/s",
            "krust p50 / p99",
            "etcd ops/s",
            "etcd p50 / p99",
            "krust/etcd",
            "raw SQLite ops/s",
            "krust/SQLite",
        ],
        &rows,
    );
    Ok(())
}

async fn connect(ep: &str) -> Result<Client> {
    let c = Client::connect([ep], None)
        .await
        .with_context(|| format!("connecting to {ep}"))?;
    Ok(c)
}

async fn clients(ep: &str, n: usize) -> Result<Vec<Client>> {
    let mut v = Vec::with_capacity(n);
    for _ in 0..n {
        let mut c = connect(ep).await?;
        // Establish the connection now, not inside the timed part.
        c.status().await.context("status")?;
        v.push(c);
    }
    Ok(v)
}

async fn run_target(args: &Args, ep: &str) -> Result<Results> {
    let mut out: Results = Vec::new();
    let val = Arc::new(value(args.value_size, 7));

    // Sequential puts: each waits for the previous one's commit (and fsync).
    {
        let mut c = connect(ep).await?;
        c.status().await?;
        let mut lat = Vec::with_capacity(args.seq_puts);
        let t0 = Instant::now();
        for i in 0..args.seq_puts {
            let t = Instant::now();
            c.put(format!("/bench/seq/{i:06}"), val.as_ref().clone(), None)
                .await?;
            lat.push(t.elapsed());
        }
        let s = Stat::new(args.seq_puts as u64, t0.elapsed(), lat);
        report(W_SEQ, &s);
        out.push((W_SEQ, s));
    }

    // Concurrent puts: `clients` connections, distinct keys.
    {
        let cs = clients(ep, args.clients).await?;
        let per = args.conc_puts / args.clients;
        let s = run_workers(cs, |w, mut c| {
            let val = val.clone();
            async move {
                let mut lat = Vec::with_capacity(per);
                for i in 0..per {
                    let t = Instant::now();
                    c.put(format!("/bench/conc/{w:03}/{i:06}"), val.as_ref().clone(), None)
                        .await?;
                    lat.push(t.elapsed());
                }
                Ok(lat)
            }
        })
        .await?;
        report(W_CONC, &s);
        out.push((W_CONC, s));
    }

    // Range of one key, random among the sequential puts' keys.
    let deadline = Duration::from_secs_f64(args.read_secs);
    let n = args.seq_puts as u64;
    {
        let cs = clients(ep, args.clients).await?;
        let s = run_workers(cs, |w, mut c| async move {
            let mut rng = Rng::new(w as u64 + 11);
            let mut lat = Vec::new();
            let end = Instant::now() + deadline;
            while Instant::now() < end {
                let k = format!("/bench/seq/{:06}", rng.below(n));
                let t = Instant::now();
                let r = c.get(k, None).await?;
                lat.push(t.elapsed());
                ensure!(r.kvs().len() == 1, "range of one key returned {}", r.kvs().len());
            }
            Ok(lat)
        })
        .await?;
        report(W_R1, &s);
        out.push((W_R1, s));
    }

    // Range of every sequential key (a LIST of N objects).
    {
        let cs = clients(ep, args.clients).await?;
        let s = run_workers(cs, |_, mut c| async move {
            let mut lat = Vec::new();
            let end = Instant::now() + deadline;
            while Instant::now() < end {
                let t = Instant::now();
                let r = c
                    .get("/bench/seq/", Some(GetOptions::new().with_prefix()))
                    .await?;
                lat.push(t.elapsed());
                ensure!(r.kvs().len() as u64 == n, "prefix range returned {}", r.kvs().len());
            }
            Ok(lat)
        })
        .await?;
        report(W_RN, &s);
        out.push((W_RN, s));
    }

    // Compare-and-swap updates, as the apiserver's GuaranteedUpdate: if the key's
    // mod_revision is still the one read, put the new value, else read it back.
    {
        let cs = clients(ep, args.clients).await?;
        let per = args.conc_puts / args.clients;
        let s = run_workers(cs, |w, mut c| {
            let val = val.clone();
            async move {
                let key = format!("/bench/cas/{w:03}");
                let r = c.put(key.clone(), val.as_ref().clone(), None).await?;
                let mut rev = r.header().context("no header")?.revision();
                let mut lat = Vec::with_capacity(per);
                for _ in 0..per {
                    let txn = Txn::new()
                        .when([Compare::mod_revision(key.clone(), CompareOp::Equal, rev)])
                        .and_then([TxnOp::put(key.clone(), val.as_ref().clone(), None)])
                        .or_else([TxnOp::get(key.clone(), None)]);
                    let t = Instant::now();
                    let r = c.txn(txn).await?;
                    lat.push(t.elapsed());
                    ensure!(r.succeeded(), "CAS on a key only this client writes failed");
                    rev = r.header().context("no header")?.revision();
                }
                Ok(lat)
            }
        })
        .await?;
        report(W_TXN, &s);
        out.push((W_TXN, s));
    }

    // Watch fan-out.
    {
        let s = watch_fanout(args, ep, &val).await?;
        report(W_WATCH, &s);
        out.push((W_WATCH, s));
    }
    Ok(out)
}

/// `watchers` watchers on one prefix (spread over connections, one gRPC stream each); one
/// client puts `watch_puts` keys under it, one after the other. Measures the time until every
/// watcher has every event (throughput = events delivered / s) and each event's latency from
/// its put being sent to its arrival at a watcher.
async fn watch_fanout(args: &Args, ep: &str, val: &Arc<Vec<u8>>) -> Result<Stat> {
    let prefix = format!("/bench/watch/{}/", std::process::id());
    let conns = clients(ep, args.watchers.div_ceil(args.watchers_per_conn.max(1))).await?;
    let puts = args.watch_puts;
    // Send times of each put, in nanoseconds since `base` (0 = not yet sent).
    let base = Instant::now();
    let sent: Arc<Vec<AtomicU64>> = Arc::new((0..puts).map(|_| AtomicU64::new(0)).collect());
    let mut tasks = Vec::with_capacity(args.watchers);
    let (ready_tx, mut ready_rx) = tokio::sync::mpsc::channel::<()>(args.watchers);
    for w in 0..args.watchers {
        let mut c = conns[w % conns.len()].clone();
        let mut stream = c
            .watch(prefix.clone(), Some(WatchOptions::new().with_prefix()))
            .await
            .with_context(|| format!("creating watcher {w}"))?;
        let sent = sent.clone();
        let prefix = prefix.clone();
        let ready_tx = ready_tx.clone();
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::with_capacity(puts);
            let mut seen = 0usize;
            let mut created = false;
            while seen < puts {
                let Some(resp) = stream.message().await? else {
                    bail!("watch stream ended after {seen} events");
                };
                if resp.created() && !created {
                    created = true;
                    let _ = ready_tx.send(()).await;
                }
                if resp.canceled() {
                    bail!("watch canceled: {}", resp.cancel_reason());
                }
                let now = base.elapsed().as_nanos() as u64;
                for ev in resp.events() {
                    if ev.event_type() != EventType::Put {
                        continue;
                    }
                    let kv = ev.kv().context("event without kv")?;
                    let key = kv.key_str()?;
                    let i: usize = key[prefix.len()..].parse()?;
                    let t = sent[i].load(Ordering::Acquire);
                    lat.push(Duration::from_nanos(now.saturating_sub(t)));
                    seen += 1;
                }
            }
            drop(stream);
            Ok::<_, anyhow::Error>(lat)
        }));
    }
    drop(ready_tx);
    for _ in 0..args.watchers {
        ready_rx
            .recv()
            .await
            .context("a watcher ended before it was created")?;
    }
    let mut c = connect(ep).await?;
    c.status().await?;
    let t0 = Instant::now();
    for (i, slot) in sent.iter().enumerate() {
        slot.store(base.elapsed().as_nanos() as u64, Ordering::Release);
        c.put(format!("{prefix}{i:06}"), val.as_ref().clone(), None)
            .await?;
    }
    let mut parts = Vec::new();
    for t in tasks {
        let lat = tokio::time::timeout(Duration::from_secs(120), t)
            .await
            .context("watchers did not get every event within 120 s")???;
        parts.push(lat);
    }
    let elapsed = t0.elapsed();
    let lat = merge(parts);
    Ok(Stat::new(lat.len() as u64, elapsed, lat))
}

fn report(w: &str, s: &Stat) {
    eprintln!(
        "   {w:<40} {:>10} ops/s   p50/p99 {} ms   ({} ops in {:.2} s)",
        fmt_ops(Some(s)),
        fmt_lat(Some(s)),
        s.ops,
        s.elapsed.as_secs_f64()
    );
}

// ---- raw SQLite floor ----

/// kine's log table, as krust's store declares it.
const SCHEMA: &str = "
    PRAGMA journal_mode=WAL;
    CREATE TABLE IF NOT EXISTS kine (
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
    );
    CREATE INDEX IF NOT EXISTS kine_name_id_index ON kine (name, id);
    CREATE UNIQUE INDEX IF NOT EXISTS kine_name_prev_revision_uindex ON kine (name, prev_revision);
";

fn open(path: &Path) -> Result<rusqlite::Connection> {
    let c = rusqlite::Connection::open(path)?;
    c.busy_timeout(Duration::from_secs(30))?;
    c.execute_batch(SCHEMA)?;
    c.pragma_update(None, "synchronous", "FULL")?;
    Ok(c)
}

/// One put as a transaction of the log: read the key's latest row, append its successor.
/// `expect` makes it a compare-and-swap on the latest row's id (the key's mod_revision).
fn sqlite_put(c: &mut rusqlite::Connection, key: &str, val: &[u8], expect: Option<i64>) -> Result<i64> {
    let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    let prev: Option<(i64, i64, i64)> = {
        let mut st = tx.prepare_cached(
            "SELECT id, create_revision, version FROM kine WHERE name = ?1 ORDER BY id DESC LIMIT 1",
        )?;
        let mut rows = st.query([key])?;
        match rows.next()? {
            Some(r) => Some((r.get(0)?, r.get(1)?, r.get(2)?)),
            None => None,
        }
    };
    if let Some(e) = expect {
        ensure!(prev.map(|p| p.0) == Some(e), "CAS failed");
    }
    let id: i64 = tx.query_row(
        "SELECT COALESCE((SELECT seq FROM sqlite_sequence WHERE name = 'kine'), 0) + 1",
        [],
        |r| r.get(0),
    )?;
    let (prev_rev, create_rev, version) = match prev {
        Some((p, cr, v)) => (p, cr, v + 1),
        None => (0, id, 1),
    };
    tx.prepare_cached(
        "INSERT INTO kine (id, name, created, deleted, create_revision, prev_revision, lease, value, \
         old_value, version, old_lease) VALUES (?1, ?2, ?3, 0, ?4, ?5, 0, ?6, NULL, ?7, 0)",
    )?
    .execute(rusqlite::params![id, key, (prev.is_none()) as i64, create_rev, prev_rev, val, version])?;
    tx.commit()?;
    Ok(id)
}

fn sqlite_floor(args: &Args, dir: &Path) -> Result<Results> {
    std::fs::create_dir_all(dir)?;
    let path = dir.join("floor.db");
    let val = value(args.value_size, 7);
    let mut out: Results = Vec::new();
    {
        let mut c = open(&path)?;
        let mut lat = Vec::with_capacity(args.seq_puts);
        let t0 = Instant::now();
        for i in 0..args.seq_puts {
            let t = Instant::now();
            sqlite_put(&mut c, &format!("/bench/seq/{i:06}"), &val, None)?;
            lat.push(t.elapsed());
        }
        let s = Stat::new(args.seq_puts as u64, t0.elapsed(), lat);
        report(W_SEQ, &s);
        out.push((W_SEQ, s));
    }
    // Concurrent: the clients' threads share one connection behind a mutex, the fastest way
    // to run single-key transactions from many threads (SQLite has one writer at a time; with
    // a connection per thread the losers of the lock sleep in the busy handler instead).
    let shared = Arc::new(std::sync::Mutex::new(open(&path)?));
    let threads = |cas: bool| -> Result<Stat> {
        let per = args.conc_puts / args.clients;
        let t0 = Instant::now();
        let handles: Vec<_> = (0..args.clients)
            .map(|w| {
                let val = val.clone();
                let c = shared.clone();
                std::thread::spawn(move || -> Result<Vec<Duration>> {
                    let put = |key: &str, expect: Option<i64>| -> Result<i64> {
                        let mut c = c.lock().unwrap_or_else(|p| p.into_inner());
                        sqlite_put(&mut c, key, &val, expect)
                    };
                    let mut lat = Vec::with_capacity(per);
                    let key = format!("/bench/cas/{w:03}");
                    let mut rev = if cas { Some(put(&key, None)?) } else { None };
                    for i in 0..per {
                        let t = Instant::now();
                        if cas {
                            rev = Some(put(&key, rev)?);
                        } else {
                            put(&format!("/bench/conc/{w:03}/{i:06}"), None)?;
                        }
                        lat.push(t.elapsed());
                    }
                    Ok(lat)
                })
            })
            .collect();
        let mut parts = Vec::new();
        for h in handles {
            parts.push(h.join().map_err(|_| anyhow::anyhow!("thread panicked"))??);
        }
        let lat = merge(parts);
        Ok(Stat::new(lat.len() as u64, t0.elapsed(), lat))
    };
    let s = threads(false)?;
    report(W_CONC, &s);
    out.push((W_CONC, s));
    let s = threads(true)?;
    report(W_TXN, &s);
    out.push((W_TXN, s));
    Ok(out)
}
