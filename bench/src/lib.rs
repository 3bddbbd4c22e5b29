//! Shared pieces of krust's benchmark drivers: measurements, percentiles and the result table.
//!
//! The drivers (`src/bin/`) are run by `scripts/bench-store` and `scripts/bench-api`. They
//! measure krust and a reference (etcd, a bare TLS handler, raw SQLite) in the same run and
//! report ratios; absolute numbers depend on the machine and are never asserted.

use std::time::Duration;

/// One workload's result on one target.
#[derive(Clone, Debug)]
pub struct Stat {
    /// Operations completed (for watch fan-out: events delivered).
    pub ops: u64,
    pub elapsed: Duration,
    /// Per-operation latencies (may be empty when not meaningful).
    pub lat: Vec<Duration>,
}

impl Stat {
    pub fn new(ops: u64, elapsed: Duration, mut lat: Vec<Duration>) -> Stat {
        lat.sort_unstable();
        Stat { ops, elapsed, lat }
    }

    pub fn ops_per_sec(&self) -> f64 {
        self.ops as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// The `q` quantile (0..=1) of the latencies, nearest-rank.
    pub fn quantile(&self, q: f64) -> Option<Duration> {
        if self.lat.is_empty() {
            return None;
        }
        let rank = ((q * self.lat.len() as f64).ceil() as usize).clamp(1, self.lat.len());
        Some(self.lat[rank - 1])
    }
}

/// Formats a rate with a sensible number of digits.
pub fn fmt_rate(r: f64) -> String {
    if r >= 100.0 {
        format!("{r:.0}")
    } else if r >= 10.0 {
        format!("{r:.1}")
    } else {
        format!("{r:.2}")
    }
}

/// Formats a latency in milliseconds.
pub fn fmt_ms(d: Option<Duration>) -> String {
    match d {
        None => "-".into(),
        Some(d) => {
            let ms = d.as_secs_f64() * 1e3;
            if ms >= 100.0 {
                format!("{ms:.0}")
            } else if ms >= 10.0 {
                format!("{ms:.1}")
            } else {
                format!("{ms:.2}")
            }
        }
    }
}

/// `p50 / p99` in ms, or `-`.
pub fn fmt_lat(s: Option<&Stat>) -> String {
    match s {
        Some(s) if !s.lat.is_empty() => {
            format!("{} / {}", fmt_ms(s.quantile(0.50)), fmt_ms(s.quantile(0.99)))
        }
        _ => "-".into(),
    }
}

/// `a / b` as `0.87x`, or `-`.
pub fn fmt_ratio(a: Option<&Stat>, b: Option<&Stat>) -> String {
    match (a, b) {
        (Some(a), Some(b)) if b.ops_per_sec() > 0.0 => {
            format!("{:.2}x", a.ops_per_sec() / b.ops_per_sec())
        }
        _ => "-".into(),
    }
}

pub fn fmt_ops(s: Option<&Stat>) -> String {
    s.map(|s| fmt_rate(s.ops_per_sec())).unwrap_or_else(|| "-".into())
}

/// Prints a Markdown table (it reads well in a terminal and pastes into docs).
pub fn print_table(header: &[&str], rows: &[Vec<String>]) {
    let mut width: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            width[i] = width[i].max(c.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        let cells: Vec<String> = cells
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let pad = width[i] - c.chars().count();
                if i == 0 {
                    format!("{c}{}", " ".repeat(pad))
                } else {
                    format!("{}{c}", " ".repeat(pad))
                }
            })
            .collect();
        println!("| {} |", cells.join(" | "));
    };
    line(header.iter().map(|h| h.to_string()).collect());
    println!(
        "|{}|",
        width
            .iter()
            .enumerate()
            .map(|(i, w)| if i == 0 {
                format!(":{}", "-".repeat(w + 1))
            } else {
                format!("{}:", "-".repeat(w + 1))
            })
            .collect::<Vec<_>>()
            .join("|")
    );
    for r in rows {
        line(r.clone());
    }
}

/// A tiny deterministic PRNG (xorshift64*), enough to pick keys.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    pub fn below(&mut self, n: u64) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D) % n.max(1)
    }
}

/// A value of `size` bytes shaped like a small JSON object (incompressible enough; neither
/// store compresses anyway).
pub fn value(size: usize, seed: u64) -> Vec<u8> {
    let mut rng = Rng::new(seed + 1);
    let mut v = b"{\"kind\":\"ConfigMap\",\"data\":\"".to_vec();
    while v.len() + 2 < size {
        v.push(b'a' + rng.below(26) as u8);
    }
    v.extend_from_slice(b"\"}");
    v.truncate(size.max(1));
    v
}

/// Merges latency vectors from workers.
pub fn merge(parts: Vec<Vec<Duration>>) -> Vec<Duration> {
    let mut all = Vec::with_capacity(parts.iter().map(Vec::len).sum());
    for p in parts {
        all.extend(p);
    }
    all
}

/// Runs `f` once per client concurrently; returns the wall time and every latency.
pub async fn run_workers<C, F, Fut>(clients: Vec<C>, f: F) -> anyhow::Result<Stat>
where
    F: Fn(usize, C) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<Vec<Duration>>> + Send + 'static,
{
    let t0 = std::time::Instant::now();
    let tasks: Vec<_> = clients.into_iter().enumerate().map(|(i, c)| tokio::spawn(f(i, c))).collect();
    let mut parts = Vec::new();
    for t in tasks {
        parts.push(t.await??);
    }
    let elapsed = t0.elapsed();
    let lat = merge(parts);
    Ok(Stat::new(lat.len() as u64, elapsed, lat))
}
