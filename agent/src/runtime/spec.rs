//! OCI runtime spec (config.json) for a container of a sandbox.

use std::path::Path;

use serde_json::{json, Value};

use super::{cgroups, ContainerSpec, RuntimeError, Sandbox};

pub(crate) const DEFAULT_PATH: &str =
    "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// containerd's default capability set.
pub(crate) const DEFAULT_CAPS: &[&str] = &[
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FSETID",
    "CAP_FOWNER",
    "CAP_MKNOD",
    "CAP_NET_RAW",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETFCAP",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT",
    "CAP_KILL",
    "CAP_AUDIT_WRITE",
];

pub(crate) const ALL_CAPS: &[&str] = &[
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_DAC_READ_SEARCH",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETPCAP",
    "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE",
    "CAP_NET_BROADCAST",
    "CAP_NET_ADMIN",
    "CAP_NET_RAW",
    "CAP_IPC_LOCK",
    "CAP_IPC_OWNER",
    "CAP_SYS_MODULE",
    "CAP_SYS_RAWIO",
    "CAP_SYS_CHROOT",
    "CAP_SYS_PTRACE",
    "CAP_SYS_PACCT",
    "CAP_SYS_ADMIN",
    "CAP_SYS_BOOT",
    "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE",
    "CAP_SYS_TIME",
    "CAP_SYS_TTY_CONFIG",
    "CAP_MKNOD",
    "CAP_LEASE",
    "CAP_AUDIT_WRITE",
    "CAP_AUDIT_CONTROL",
    "CAP_SETFCAP",
    "CAP_MAC_OVERRIDE",
    "CAP_MAC_ADMIN",
    "CAP_SYSLOG",
    "CAP_WAKE_ALARM",
    "CAP_BLOCK_SUSPEND",
    "CAP_AUDIT_READ",
    "CAP_PERFMON",
    "CAP_BPF",
    "CAP_CHECKPOINT_RESTORE",
];

const MASKED_PATHS: &[&str] = &[
    "/proc/acpi",
    "/proc/asound",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
];

const READONLY_PATHS: &[&str] = &[
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
];

fn normalize_cap(c: &str) -> String {
    let c = c.trim().to_ascii_uppercase();
    if c == "ALL" || c.starts_with("CAP_") {
        c
    } else {
        format!("CAP_{c}")
    }
}

/// The capability set: defaults (or all, when privileged), minus drops, plus adds.
pub(crate) fn capabilities(spec: &ContainerSpec) -> Result<Vec<String>, RuntimeError> {
    if spec.privileged {
        return Ok(all_current_caps());
    }
    let mut caps: Vec<String> = DEFAULT_CAPS.iter().map(|s| s.to_string()).collect();
    for d in spec.cap_drop.iter().map(|c| normalize_cap(c)) {
        if d == "ALL" {
            caps.clear();
        } else {
            caps.retain(|c| *c != d);
        }
    }
    for a in spec.cap_add.iter().map(|c| normalize_cap(c)) {
        if a == "ALL" {
            caps = all_current_caps();
        } else if !ALL_CAPS.contains(&a.as_str()) {
            return Err(RuntimeError::InvalidSpec(format!("unknown capability {a}")));
        } else if !caps.contains(&a) {
            caps.push(a);
        }
    }
    Ok(caps)
}

/// "All capabilities": those of ALL_CAPS this process may still hold (its bounding set), as
/// containerd's `WithAllCurrentCapabilities`. A capability outside it cannot be given to a
/// container, and asking libcontainer for it fails the start (seen where the machine itself
/// runs without CAP_SYS_RESOURCE).
fn all_current_caps() -> Vec<String> {
    let bounding = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find_map(|l| l.strip_prefix("CapBnd:").map(|v| u64::from_str_radix(v.trim(), 16).ok())))
        .flatten()
        .unwrap_or(u64::MAX);
    // ALL_CAPS is in capability number order (CAP_CHOWN = 0 ...).
    ALL_CAPS.iter().enumerate().filter(|(i, _)| bounding >> i & 1 == 1).map(|(_, c)| c.to_string()).collect()
}

/// The environment with a default PATH when none is given (libcontainer needs one to find the
/// executable).
pub(crate) fn env(spec: &ContainerSpec) -> Vec<String> {
    let mut env = spec.env.clone();
    if !env.iter().any(|e| e.starts_with("PATH=")) {
        env.insert(0, DEFAULT_PATH.to_string());
    }
    env
}

pub(crate) fn cwd(spec: &ContainerSpec) -> String {
    if spec.cwd.is_empty() {
        "/".to_string()
    } else {
        spec.cwd.clone()
    }
}

fn bind(source: &Path, destination: &str, read_only: bool) -> Value {
    let mut options = vec!["rbind", "rprivate"];
    if read_only {
        options.push("ro");
    }
    json!({"destination": destination, "type": "bind", "source": source, "options": options})
}

/// Builds config.json for `spec` in `sandbox` with the root filesystem at `rootfs`.
pub(crate) fn build(
    spec: &ContainerSpec,
    sandbox: &Sandbox,
    rootfs: &Path,
) -> Result<oci_spec::runtime::Spec, RuntimeError> {
    if spec.args.is_empty() {
        return Err(RuntimeError::InvalidSpec(
            "no command (args is empty)".into(),
        ));
    }
    let caps = capabilities(spec)?;
    let sys_ro = !spec.privileged;
    let mut mounts = vec![
        json!({"destination": "/proc", "type": "proc", "source": "proc", "options": ["nosuid", "noexec", "nodev"]}),
        json!({"destination": "/dev", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]}),
        json!({"destination": "/dev/pts", "type": "devpts", "source": "devpts", "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]}),
        json!({"destination": "/dev/shm", "type": "bind", "source": sandbox.shm_dir(), "options": ["rbind", "rprivate", "nosuid", "nodev", "noexec"]}),
        json!({"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue", "options": ["nosuid", "noexec", "nodev"]}),
        json!({"destination": "/sys", "type": "sysfs", "source": "sysfs", "options": if sys_ro { vec!["nosuid", "noexec", "nodev", "ro"] } else { vec!["nosuid", "noexec", "nodev"] }}),
        json!({"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup", "options": if sys_ro { vec!["nosuid", "noexec", "nodev", "relatime", "ro"] } else { vec!["nosuid", "noexec", "nodev", "relatime"] }}),
        bind(&sandbox.hosts_file(), "/etc/hosts", spec.readonly_rootfs),
        bind(
            &sandbox.hostname_file(),
            "/etc/hostname",
            spec.readonly_rootfs,
        ),
        bind(
            &sandbox.resolv_conf_file(),
            "/etc/resolv.conf",
            spec.readonly_rootfs,
        ),
    ];
    for m in &spec.mounts {
        if !m.destination.starts_with('/') {
            return Err(RuntimeError::InvalidSpec(format!(
                "mount destination {:?} is not absolute",
                m.destination
            )));
        }
        // A later mount of the same destination replaces a default one (e.g. /etc/hosts).
        mounts.retain(|x| x["destination"] != json!(m.destination));
        mounts.push(bind(&m.source, &m.destination, m.read_only));
    }

    let mut namespaces = vec![json!({"type": "pid"}), json!({"type": "mount"})];
    if let Some(net) = &sandbox.netns {
        namespaces.push(json!({"type": "network", "path": net}));
    }
    namespaces.push(json!({"type": "ipc", "path": sandbox.ipcns}));
    if let Some(uts) = &sandbox.utsns {
        namespaces.push(json!({"type": "uts", "path": uts}));
    }

    let mut resources = json!({
        "devices": [{"allow": spec.privileged, "access": "rwm"}],
    });
    if let Some(limit) = spec.memory_limit.filter(|l| *l > 0) {
        resources["memory"] = json!({"limit": limit});
    }
    let mut cpu = serde_json::Map::new();
    if let Some(s) = spec.cpu_shares.filter(|s| *s > 0) {
        cpu.insert("shares".into(), json!(s));
    }
    if let Some(q) = spec.cpu_quota.filter(|q| *q > 0) {
        cpu.insert("quota".into(), json!(q));
    }
    if let Some(p) = spec.cpu_period.filter(|p| *p > 0) {
        cpu.insert("period".into(), json!(p));
    }
    if !cpu.is_empty() {
        resources["cpu"] = Value::Object(cpu);
    }

    let mut linux = json!({
        "namespaces": namespaces,
        "cgroupsPath": cgroups::container_cgroup_path(&spec.pod_id, &spec.id),
        "resources": resources,
    });
    if !spec.privileged {
        linux["maskedPaths"] = json!(MASKED_PATHS);
        linux["readonlyPaths"] = json!(READONLY_PATHS);
    }

    let config = json!({
        "ociVersion": "1.0.2",
        "process": {
            "terminal": spec.tty,
            "user": {"uid": spec.uid, "gid": spec.gid, "additionalGids": spec.additional_gids},
            "args": spec.args,
            "env": env(spec),
            "cwd": cwd(spec),
            "capabilities": {"bounding": caps, "effective": caps, "permitted": caps},
            "noNewPrivileges": false,
        },
        "root": {"path": rootfs, "readonly": spec.readonly_rootfs},
        "mounts": mounts,
        "linux": linux,
    });
    serde_json::from_value(config)
        .map_err(|e| RuntimeError::InvalidSpec(format!("building the OCI spec: {e}")))
}

#[cfg(test)]
mod tests {
    use super::ALL_CAPS;

    #[test]
    fn all_caps_are_in_capability_number_order() {
        // `all_current_caps` reads bit i of CapBnd as ALL_CAPS[i] (linux/capability.h numbers).
        assert_eq!(ALL_CAPS.len(), 41);
        assert_eq!(ALL_CAPS[12], "CAP_NET_ADMIN");
        assert_eq!(ALL_CAPS[21], "CAP_SYS_ADMIN");
        assert_eq!(ALL_CAPS[24], "CAP_SYS_RESOURCE");
        assert_eq!(ALL_CAPS[27], "CAP_MKNOD");
        assert_eq!(ALL_CAPS[37], "CAP_AUDIT_READ");
        assert_eq!(ALL_CAPS[40], "CAP_CHECKPOINT_RESTORE");
    }
}
