//! Pod-level cgroup paths and their removal in every hierarchy.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::mounts::mountinfo;
use super::{IoContext, RuntimeError};

/// The parent of all krust pods in every hierarchy.
pub(crate) const CGROUP_PARENT: &str = "/krust/pods";

pub(crate) fn pod_cgroup_path(pod_id: &str) -> String {
    format!("{CGROUP_PARENT}/{pod_id}")
}

pub(crate) fn container_cgroup_path(pod_id: &str, container_id: &str) -> String {
    format!("{CGROUP_PARENT}/{pod_id}/{container_id}")
}

/// Mount points of every cgroup (v1) and cgroup2 hierarchy of this mount namespace.
pub(crate) fn hierarchies() -> Vec<(PathBuf, bool)> {
    mountinfo()
        .into_iter()
        .filter_map(|m| match m.fs_type.as_str() {
            "cgroup" => Some((m.mount_point, false)),
            "cgroup2" => Some((m.mount_point, true)),
            _ => None,
        })
        .collect()
}

/// Host paths of `cgroup_path` (e.g. `/krust/pods/<pod>`) in every hierarchy (existing or not).
pub(crate) fn host_paths(cgroup_path: &str) -> Vec<PathBuf> {
    let rel = cgroup_path.trim_start_matches('/');
    hierarchies()
        .into_iter()
        .map(|(mp, _)| mp.join(rel))
        .collect()
}

/// Removes `/krust/pods/<pod id>` (and everything below) in every hierarchy.
pub(crate) fn remove_pod_cgroups(pod_id: &str) -> Result<(), RuntimeError> {
    let mut first_err = None;
    for p in host_paths(&pod_cgroup_path(pod_id)) {
        if let Err(e) = remove_cgroup_tree(&p) {
            first_err.get_or_insert(e);
        }
    }
    match first_err {
        None => Ok(()),
        Some(e) => Err(e),
    }
}

/// rmdir bottom-up (cgroupfs files cannot be unlinked, so no `remove_dir_all`); retries EBUSY a
/// little while a just-killed process leaves the cgroup.
fn remove_cgroup_tree(dir: &Path) -> Result<(), RuntimeError> {
    let rd = match std::fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e).ctx(|| format!("reading {}", dir.display())),
    };
    for entry in rd.flatten() {
        if entry.file_type().map(|t| t.is_dir()).unwrap_or(false) {
            remove_cgroup_tree(&entry.path())?;
        }
    }
    let mut tries = 0;
    loop {
        match std::fs::remove_dir(dir) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) if e.raw_os_error() == Some(nix::libc::EBUSY) && tries < 50 => {
                tries += 1;
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => return Err(e).ctx(|| format!("removing cgroup {}", dir.display())),
        }
    }
}

/// Whether the container's memory cgroup recorded an OOM kill.
pub(crate) fn oom_killed(pod_id: &str, container_id: &str) -> bool {
    let rel = container_cgroup_path(pod_id, container_id);
    let rel = rel.trim_start_matches('/');
    for (mp, v2) in hierarchies() {
        let file = if v2 {
            mp.join(rel).join("memory.events")
        } else if mp.ends_with("memory") || mp.to_string_lossy().contains("memory") {
            mp.join(rel).join("memory.oom_control")
        } else {
            continue;
        };
        if let Ok(text) = std::fs::read_to_string(&file) {
            for line in text.lines() {
                let mut it = line.split_whitespace();
                if let (Some("oom_kill"), Some(n)) = (it.next(), it.next()) {
                    if n.parse::<u64>().unwrap_or(0) > 0 {
                        return true;
                    }
                }
            }
        }
    }
    false
}
