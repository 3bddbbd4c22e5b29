//! /proc/self/mountinfo helpers and unmounting.

use std::path::{Path, PathBuf};

use nix::mount::{umount2, MntFlags};

use super::{IoContext, RuntimeError};

/// One line of /proc/self/mountinfo (the fields we use).
#[derive(Debug, Clone)]
pub(crate) struct MountInfo {
    pub mount_point: PathBuf,
    pub fs_type: String,
}

/// Undoes mountinfo's octal escapes (`\040` for a space, ...).
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 3 < b.len() {
            let oct = &b[i + 1..i + 4];
            if oct.iter().all(|c| (b'0'..=b'7').contains(c)) {
                let oct = std::str::from_utf8(oct).unwrap_or("");
                if let Ok(v) = u8::from_str_radix(oct, 8) {
                    out.push(v);
                    i += 4;
                    continue;
                }
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

pub(crate) fn mountinfo() -> Vec<MountInfo> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    text.lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split(' ').collect();
            let sep = fields.iter().position(|f| *f == "-")?;
            Some(MountInfo {
                mount_point: PathBuf::from(unescape(fields.get(4)?)),
                fs_type: fields.get(sep + 1)?.to_string(),
            })
        })
        .collect()
}

pub(crate) fn is_mounted(path: &Path) -> bool {
    mountinfo().iter().any(|m| m.mount_point == path)
}

/// Mount points at or under `dir`, deepest first.
pub(crate) fn mounts_under(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = mountinfo()
        .into_iter()
        .map(|m| m.mount_point)
        .filter(|p| p.starts_with(dir))
        .collect();
    v.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    v.dedup();
    v
}

/// Unmounts every mount stacked on `path` (no error when nothing is mounted there).
pub(crate) fn unmount_all(path: &Path) -> Result<(), RuntimeError> {
    for _ in 0..16 {
        if !is_mounted(path) {
            return Ok(());
        }
        match umount2(path, MntFlags::empty()) {
            Ok(()) => {}
            Err(nix::errno::Errno::EINVAL) | Err(nix::errno::Errno::ENOENT) => return Ok(()),
            Err(nix::errno::Errno::EBUSY) => {
                umount2(path, MntFlags::MNT_DETACH)
                    .ctx(|| format!("unmounting (detach) {}", path.display()))?;
            }
            Err(e) => return Err(e).ctx(|| format!("unmounting {}", path.display())),
        }
    }
    Ok(())
}

/// Unmounts everything at or under `dir`.
pub(crate) fn unmount_tree(dir: &Path) -> Result<(), RuntimeError> {
    for p in mounts_under(dir) {
        unmount_all(&p)?;
    }
    Ok(())
}

/// Removes `dir` after unmounting everything under it; no error when it does not exist.
pub(crate) fn remove_dir_unmounted(dir: &Path) -> Result<(), RuntimeError> {
    unmount_tree(dir)?;
    match std::fs::remove_dir_all(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e).ctx(|| format!("removing {}", dir.display())),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn unescape_octal() {
        assert_eq!(super::unescape("/a\\040b"), "/a b");
        assert_eq!(super::unescape("/plain"), "/plain");
        assert_eq!(super::unescape("/end\\"), "/end\\");
    }
}
