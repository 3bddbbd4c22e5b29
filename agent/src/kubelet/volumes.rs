//! Pod volumes on the node, under `DATA_DIR/agent/pods/<uid>/volumes/`: emptyDir (a
//! folder, or tmpfs for `medium: Memory`), hostPath, and the projected kinds (configMap,
//! secret, downwardAPI, projected) written as files and rewritten when their sources
//! change, so updates reach running containers through their bind mounts.

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::{DownwardAPIVolumeFile, KeyToPath, Pod, Volume};

use crate::kubelet::spec::{field_value, resource_value};

#[derive(Debug, thiserror::Error)]
pub enum VolumeError {
    #[error("configmap {0:?} not found")]
    ConfigMapMissing(String),
    #[error("secret {0:?} not found")]
    SecretMissing(String),
    #[error("volume {name}: {message}")]
    Unsupported { name: String, message: String },
    #[error("volume {name}: {context}: {source}")]
    Io { name: String, context: String, source: std::io::Error },
}

/// What projected volumes draw on: the namespace's ConfigMaps and Secrets by name (binary
/// data merged in), `None` when absent.
#[derive(Default)]
pub struct VolumeSources {
    pub config_maps: BTreeMap<String, Option<BTreeMap<String, Vec<u8>>>>,
    pub secrets: BTreeMap<String, Option<BTreeMap<String, Vec<u8>>>>,
    /// Service account tokens by `<volume>/<path>` (see [`token_requests`]).
    pub tokens: BTreeMap<String, String>,
}

/// A projected service account token a pod's volumes ask for.
pub struct TokenWant {
    /// `<volume>/<path>`.
    pub key: String,
    pub audience: Option<String>,
    pub expiration_seconds: i64,
}

/// The service account tokens the pod's projected volumes need.
pub fn token_requests(pod: &Pod) -> Vec<TokenWant> {
    let mut out = Vec::new();
    for v in pod.spec.iter().flat_map(|s| s.volumes.iter().flatten()) {
        for src in v.projected.iter().flat_map(|p| p.sources.iter().flatten()) {
            if let Some(t) = &src.service_account_token {
                out.push(TokenWant {
                    key: format!("{}/{}", v.name, t.path),
                    audience: t.audience.clone().filter(|a| !a.is_empty()),
                    expiration_seconds: t.expiration_seconds.unwrap_or(3600),
                });
            }
        }
    }
    out
}

/// Names of the ConfigMaps and Secrets the pod's volumes project.
pub fn volume_refs(pod: &Pod) -> (Vec<String>, Vec<String>) {
    let mut cms = BTreeSet::new();
    let mut secrets = BTreeSet::new();
    for v in pod.spec.iter().flat_map(|s| s.volumes.iter().flatten()) {
        if let Some(c) = &v.config_map {
            cms.insert(c.name.clone());
        }
        if let Some(s) = &v.secret {
            secrets.extend(s.secret_name.clone());
        }
        for src in v.projected.iter().flat_map(|p| p.sources.iter().flatten()) {
            if let Some(c) = &src.config_map {
                cms.insert(c.name.clone());
            }
            if let Some(s) = &src.secret {
                secrets.insert(s.name.clone());
            }
        }
    }
    (cms.into_iter().collect(), secrets.into_iter().collect())
}

/// The host paths of a pod's volumes, by volume name.
#[derive(Debug, Default, Clone)]
pub struct PodVolumes {
    paths: BTreeMap<String, PathBuf>,
}

impl PodVolumes {
    pub fn path(&self, name: &str) -> Option<PathBuf> {
        self.paths.get(name).cloned()
    }
}

fn io(name: &str, context: impl Into<String>) -> impl FnOnce(std::io::Error) -> VolumeError + '_ {
    let context = context.into();
    move |source| VolumeError::Io { name: name.to_string(), context, source }
}

/// Creates (or refreshes) every volume of `pod` under `pod_dir`.
pub fn prepare(pod: &Pod, pod_dir: &Path, src: &VolumeSources, host_ip: &str, pod_ip: &str) -> Result<PodVolumes, VolumeError> {
    let mut out = PodVolumes::default();
    for v in pod.spec.iter().flat_map(|s| s.volumes.iter().flatten()) {
        let path = prepare_one(pod, v, pod_dir, src, host_ip, pod_ip)?;
        out.paths.insert(v.name.clone(), path);
    }
    Ok(out)
}

fn prepare_one(pod: &Pod, v: &Volume, pod_dir: &Path, src: &VolumeSources, host_ip: &str, pod_ip: &str) -> Result<PathBuf, VolumeError> {
    let name = v.name.as_str();
    let dir = |kind: &str| pod_dir.join("volumes").join(kind).join(name);
    let fs_group = pod.spec.as_ref().and_then(|s| s.security_context.as_ref()).and_then(|c| c.fs_group).map(|g| g as u32);
    if let Some(e) = &v.empty_dir {
        let d = dir("empty-dir");
        std::fs::create_dir_all(&d).map_err(io(name, format!("creating {}", d.display())))?;
        if e.medium.as_deref() == Some("Memory") && !is_mountpoint(&d) {
            let size = e.size_limit.as_ref().map(|q| format!("size={}", controllers::scheduler::parse_quantity(&q.0, 1.0)));
            nix::mount::mount(Some("tmpfs"), &d, Some("tmpfs"), nix::mount::MsFlags::empty(), size.as_deref())
                .map_err(|e| VolumeError::Io { name: name.into(), context: "mounting tmpfs".into(), source: e.into() })?;
        }
        // World-writable, as upstream's emptyDir, so non-root containers can write; with an
        // fsGroup, owned by that group with setgid, so new files join it (SetVolumeOwnership).
        let mode = if fs_group.is_some() { 0o2777 } else { 0o777 };
        let _ = std::fs::set_permissions(&d, std::fs::Permissions::from_mode(mode));
        if let Some(g) = fs_group {
            nix::unistd::chown(&d, None, Some(nix::unistd::Gid::from_raw(g))).map_err(|e| VolumeError::Io { name: name.into(), context: "applying fsGroup".into(), source: e.into() })?;
        }
        return Ok(d);
    }
    if let Some(h) = &v.host_path {
        let p = PathBuf::from(&h.path);
        match h.type_.as_deref().unwrap_or("") {
            "DirectoryOrCreate" => std::fs::create_dir_all(&p).map_err(io(name, format!("creating {}", p.display())))?,
            "FileOrCreate" if !p.exists() => {
                if let Some(parent) = p.parent() {
                    std::fs::create_dir_all(parent).map_err(io(name, "creating the parent folder"))?;
                }
                std::fs::write(&p, b"").map_err(io(name, format!("creating {}", p.display())))?;
            }
            "Directory" if !p.is_dir() => return Err(unsupported(name, format!("hostPath type check failed: {} is not a directory", p.display()))),
            "File" if !p.is_file() => return Err(unsupported(name, format!("hostPath type check failed: {} is not a file", p.display()))),
            _ => {}
        }
        return Ok(p);
    }
    let mut files: BTreeMap<String, (Vec<u8>, u32)> = BTreeMap::new();
    let (kind, default_mode) = if let Some(c) = &v.config_map {
        let mode = c.default_mode.unwrap_or(0o644) as u32;
        match src.config_maps.get(&c.name).cloned().flatten() {
            Some(data) => project(&mut files, &data, c.items.as_deref(), mode, name)?,
            None if c.optional == Some(true) => {}
            None => return Err(VolumeError::ConfigMapMissing(c.name.clone())),
        }
        ("configmap", mode)
    } else if let Some(s) = &v.secret {
        let mode = s.default_mode.unwrap_or(0o644) as u32;
        let sname = s.secret_name.clone().unwrap_or_default();
        match src.secrets.get(&sname).cloned().flatten() {
            Some(data) => project(&mut files, &data, s.items.as_deref(), mode, name)?,
            None if s.optional == Some(true) => {}
            None => return Err(VolumeError::SecretMissing(sname)),
        }
        ("secret", mode)
    } else if let Some(d) = &v.downward_api {
        let mode = d.default_mode.unwrap_or(0o644) as u32;
        downward(&mut files, pod, d.items.as_deref().unwrap_or_default(), mode, host_ip, pod_ip);
        ("downward-api", mode)
    } else if let Some(p) = &v.projected {
        let mode = p.default_mode.unwrap_or(0o644) as u32;
        for s in p.sources.iter().flatten() {
            if let Some(c) = &s.config_map {
                match src.config_maps.get(&c.name).cloned().flatten() {
                    Some(data) => project(&mut files, &data, c.items.as_deref(), mode, name)?,
                    None if c.optional == Some(true) => {}
                    None => return Err(VolumeError::ConfigMapMissing(c.name.clone())),
                }
            }
            if let Some(sec) = &s.secret {
                match src.secrets.get(&sec.name).cloned().flatten() {
                    Some(data) => project(&mut files, &data, sec.items.as_deref(), mode, name)?,
                    None if sec.optional == Some(true) => {}
                    None => return Err(VolumeError::SecretMissing(sec.name.clone())),
                }
            }
            if let Some(d) = &s.downward_api {
                downward(&mut files, pod, d.items.as_deref().unwrap_or_default(), mode, host_ip, pod_ip);
            }
            if let Some(t) = &s.service_account_token {
                let token = src.tokens.get(&format!("{name}/{}", t.path)).ok_or_else(|| unsupported(name, format!("no service account token for {}", t.path)))?;
                // Tokens are credentials: readable by the owner only unless the mode says otherwise.
                files.insert(t.path.clone(), (token.clone().into_bytes(), p.default_mode.map_or(0o600, |m| m as u32)));
            }
            if s.cluster_trust_bundle.is_some() {
                return Err(unsupported(name, "clusterTrustBundle projections are not supported".into()));
            }
        }
        ("projected", mode)
    } else {
        return Err(unsupported(name, "only emptyDir, hostPath, configMap, secret, downwardAPI and projected volumes are supported".into()));
    };
    let _ = default_mode;
    let d = dir(kind);
    write_files(&d, &files, fs_group).map_err(io(name, format!("writing {}", d.display())))?;
    Ok(d)
}

fn unsupported(name: &str, message: String) -> VolumeError {
    VolumeError::Unsupported { name: name.to_string(), message }
}

/// Adds the keys of `data` (all, or the `items` chosen) as files.
fn project(files: &mut BTreeMap<String, (Vec<u8>, u32)>, data: &BTreeMap<String, Vec<u8>>, items: Option<&[KeyToPath]>, mode: u32, volume: &str) -> Result<(), VolumeError> {
    match items {
        None => {
            for (k, v) in data {
                files.insert(k.clone(), (v.clone(), mode));
            }
        }
        Some(items) => {
            for item in items {
                let Some(v) = data.get(&item.key) else {
                    return Err(unsupported(volume, format!("configmap references non-existent config key: {}", item.key)));
                };
                files.insert(item.path.clone(), (v.clone(), item.mode.map_or(mode, |m| m as u32)));
            }
        }
    }
    Ok(())
}

fn downward(files: &mut BTreeMap<String, (Vec<u8>, u32)>, pod: &Pod, items: &[DownwardAPIVolumeFile], mode: u32, host_ip: &str, pod_ip: &str) {
    for item in items {
        let value = if let Some(f) = &item.field_ref {
            field_value(pod, &f.field_path, host_ip, pod_ip)
        } else if let Some(r) = &item.resource_field_ref {
            let containers = pod.spec.as_ref().map(|s| s.containers.as_slice()).unwrap_or_default();
            match containers.iter().find(|c| Some(c.name.as_str()) == r.container_name.as_deref()).or(containers.first()) {
                Some(c) => resource_value(c, &r.resource, r.divisor.as_ref().map(|q| q.0.as_str())),
                None => String::new(),
            }
        } else {
            continue;
        };
        files.insert(item.path.clone(), (value.into_bytes(), item.mode.map_or(mode, |m| m as u32)));
    }
}

/// Makes `dir` hold exactly `files`: changed files are replaced by rename (a reader sees
/// the old or the new content, never half), stale ones removed. With an `fs_group`, files
/// belong to that group and are readable by it (upstream's read-only volume ownership:
/// mode | 0440), and the folder is the group's with setgid.
fn write_files(dir: &Path, files: &BTreeMap<String, (Vec<u8>, u32)>, fs_group: Option<u32>) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let group = fs_group.map(nix::unistd::Gid::from_raw);
    if group.is_some() {
        nix::unistd::chown(dir, None, group)?;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o2755 | 0o050))?;
    }
    for (rel, (data, mode)) in files {
        let mode = if group.is_some() { mode | 0o440 } else { *mode };
        if rel.starts_with('/') || rel.split('/').any(|p| p == "..") {
            continue;
        }
        let path = dir.join(rel);
        let same_mode = std::fs::metadata(&path).is_ok_and(|m| m.permissions().mode() & 0o777 == mode & 0o777);
        if same_mode && std::fs::read(&path).ok().as_deref() == Some(data.as_slice()) {
            continue;
        }
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        let tmp = path.with_file_name(format!(".{}.tmp", path.file_name().and_then(|n| n.to_str()).unwrap_or("f")));
        std::fs::write(&tmp, data)?;
        if group.is_some() {
            nix::unistd::chown(&tmp, None, group)?;
        }
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(mode & 0o777))?;
        std::fs::rename(&tmp, &path)?;
    }
    // Remove top-level entries no longer projected.
    let keep: BTreeSet<&str> = files.keys().map(|k| k.split('/').next().unwrap_or(k)).collect();
    for entry in std::fs::read_dir(dir)?.flatten() {
        let name = entry.file_name().to_string_lossy().to_string();
        if !keep.contains(name.as_str()) {
            let p = entry.path();
            let _ = if p.is_dir() { std::fs::remove_dir_all(&p) } else { std::fs::remove_file(&p) };
        }
    }
    Ok(())
}

fn is_mountpoint(dir: &Path) -> bool {
    let target = dir.to_string_lossy();
    std::fs::read_to_string("/proc/self/mountinfo").map(|m| m.lines().any(|l| l.split(' ').nth(4) == Some(&target))).unwrap_or(false)
}

/// Unmounts what `prepare` mounted and removes the pod's folder.
pub fn clean_up(pod_dir: &Path) {
    let prefix = pod_dir.to_string_lossy().to_string();
    let mounts: Vec<String> = std::fs::read_to_string("/proc/self/mountinfo")
        .map(|m| m.lines().filter_map(|l| l.split(' ').nth(4).map(String::from)).filter(|p| p.starts_with(&prefix)).collect())
        .unwrap_or_default();
    for m in mounts.iter().rev() {
        if let Err(e) = nix::mount::umount2(m.as_str(), nix::mount::MntFlags::MNT_DETACH) {
            tracing::warn!(mount = %m, error = %e, "unmounting a pod volume failed");
        }
    }
    if let Err(e) = std::fs::remove_dir_all(pod_dir) {
        if e.kind() != std::io::ErrorKind::NotFound {
            tracing::warn!(dir = %pod_dir.display(), error = %e, "removing the pod folder failed");
        }
    }
}
