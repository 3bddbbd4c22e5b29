//! Resource usage of pods and containers, read from their cgroups (v1 `cpuacct`/`memory`
//! controllers, or cgroup v2's `cpu.stat`/`memory.current`): what the kubelet's summary
//! API reports and `kubectl top` shows.

use std::path::{Path, PathBuf};

use super::cgroups::{container_cgroup_path, hierarchies, pod_cgroup_path};
use super::Runtime;

/// Cumulative CPU time and current memory of one cgroup.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    pub cpu_usage_ns: u64,
    pub memory_usage_bytes: u64,
    /// Usage minus inactive file cache: what the kubelet and the OOM killer care about.
    pub memory_working_set_bytes: u64,
    pub memory_rss_bytes: u64,
}

fn read_u64(p: &Path) -> Option<u64> {
    std::fs::read_to_string(p).ok()?.trim().parse().ok()
}

fn stat_field(p: &Path, key: &str) -> Option<u64> {
    std::fs::read_to_string(p).ok()?.lines().find_map(|l| {
        let (k, v) = l.split_once(' ')?;
        (k == key).then(|| v.trim().parse().ok()).flatten()
    })
}

/// The v1 hierarchy holding `controller` (e.g. `cpuacct` in `cpu,cpuacct`), if any.
fn v1_mount(controller: &str) -> Option<PathBuf> {
    hierarchies().into_iter().find_map(|(mp, v2)| {
        let name = mp.file_name()?.to_string_lossy().to_string();
        (!v2 && name.split(',').any(|c| c == controller)).then_some(mp)
    })
}

fn v2_mount() -> Option<PathBuf> {
    hierarchies().into_iter().find_map(|(mp, v2)| v2.then_some(mp))
}

/// Usage of the cgroup at `path` (e.g. `/krust/pods/<pod>`), whichever version has it.
pub fn cgroup_usage(path: &str) -> Option<Usage> {
    let rel = path.trim_start_matches('/');
    let cpu_v1 = v1_mount("cpuacct").and_then(|m| read_u64(&m.join(rel).join("cpuacct.usage")));
    let mem_v1 = v1_mount("memory").map(|m| m.join(rel)).filter(|d| d.join("memory.usage_in_bytes").exists());
    if let (Some(cpu), Some(mem)) = (cpu_v1, mem_v1) {
        let usage = read_u64(&mem.join("memory.usage_in_bytes")).unwrap_or(0);
        let stat = mem.join("memory.stat");
        let inactive = stat_field(&stat, "total_inactive_file").unwrap_or(0);
        return Some(Usage {
            cpu_usage_ns: cpu,
            memory_usage_bytes: usage,
            memory_working_set_bytes: usage.saturating_sub(inactive),
            memory_rss_bytes: stat_field(&stat, "total_rss").unwrap_or(0),
        });
    }
    let dir = v2_mount()?.join(rel);
    let cpu = stat_field(&dir.join("cpu.stat"), "usage_usec")? * 1000;
    let usage = read_u64(&dir.join("memory.current")).unwrap_or(0);
    let stat = dir.join("memory.stat");
    Some(Usage {
        cpu_usage_ns: cpu,
        memory_usage_bytes: usage,
        memory_working_set_bytes: usage.saturating_sub(stat_field(&stat, "inactive_file").unwrap_or(0)),
        memory_rss_bytes: stat_field(&stat, "anon").unwrap_or(0),
    })
}

/// The whole machine: CPU time of every core since boot (from /proc/stat) and memory in use
/// (MemTotal - MemAvailable).
pub fn node_usage() -> Option<Usage> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let cpu = stat.lines().find(|l| l.starts_with("cpu "))?;
    let fields: Vec<u64> = cpu.split_whitespace().skip(1).filter_map(|f| f.parse().ok()).collect();
    // user nice system (idle iowait) irq softirq steal: busy time, in USER_HZ (100/s).
    let busy: u64 = fields.iter().enumerate().filter(|(i, _)| *i != 3 && *i != 4 && *i < 8).map(|(_, v)| v).sum();
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok()?;
    let kb = |key: &str| meminfo.lines().find_map(|l| l.strip_prefix(key)?.trim().trim_end_matches("kB").trim().parse::<u64>().ok()).unwrap_or(0) * 1024;
    let used = kb("MemTotal:").saturating_sub(kb("MemAvailable:"));
    Some(Usage { cpu_usage_ns: busy * 10_000_000, memory_usage_bytes: used, memory_working_set_bytes: used, memory_rss_bytes: used })
}

impl Runtime {
    pub fn container_usage(&self, pod_id: &str, container_id: &str) -> Option<Usage> {
        cgroup_usage(&container_cgroup_path(pod_id, container_id))
    }

    pub fn pod_usage(&self, pod_id: &str) -> Option<Usage> {
        cgroup_usage(&pod_cgroup_path(pod_id))
    }
}
