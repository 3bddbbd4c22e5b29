//! Where the server keeps its state under the data dir, and how it writes files there.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::Context;

/// The layout of `DATA_DIR/server/`, modelled on k3s's.
#[derive(Debug, Clone)]
pub struct ServerPaths {
    pub root: PathBuf,
}

impl ServerPaths {
    pub fn new(data_dir: &Path) -> Self {
        ServerPaths {
            root: data_dir.join("server"),
        }
    }

    /// Certificates and keys.
    pub fn tls(&self) -> PathBuf {
        self.root.join("tls")
    }

    /// Kubeconfigs for clients of the API server.
    pub fn cred(&self) -> PathBuf {
        self.root.join("cred")
    }

    pub fn admin_kubeconfig(&self) -> PathBuf {
        self.cred().join("admin.kubeconfig")
    }

    /// The default embedded SQLite database.
    pub fn default_db(&self) -> PathBuf {
        self.root.join("db").join("state.db")
    }

    pub fn token(&self) -> PathBuf {
        self.root.join("token")
    }

    /// The full join token (`K10<CA hash>::server:<secret>`) for agents, as k3s's.
    pub fn node_token(&self) -> PathBuf {
        self.root.join("node-token")
    }
}

/// Writes `contents` to `path` with `mode`, atomically: a reader never sees a half-written
/// key or kubeconfig, and a crash mid-write leaves the old file in place.
pub fn write_atomic(path: &Path, contents: &[u8], mode: u32) -> anyhow::Result<()> {
    let dir = path
        .parent()
        .with_context(|| format!("{} has no parent folder", path.display()))?;
    fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let file_name = path.file_name().and_then(|n| n.to_str()).unwrap_or("file");
    let tmp = dir.join(format!(".{file_name}.tmp.{}", std::process::id()));
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        // The mode at creation keeps a private key from ever being world-readable.
        .mode(mode)
        .open(&tmp)
        .with_context(|| format!("creating {}", tmp.display()))?;
    file.write_all(contents)
        .with_context(|| format!("writing {}", tmp.display()))?;
    file.sync_all()
        .with_context(|| format!("syncing {}", tmp.display()))?;
    // `mode` at open is filtered by the umask; set it exactly as asked.
    fs::set_permissions(&tmp, fs::Permissions::from_mode(mode))
        .with_context(|| format!("setting mode {mode:o} on {}", tmp.display()))?;
    fs::rename(&tmp, path)
        .with_context(|| format!("moving {} to {}", tmp.display(), path.display()))
}

/// Reads a file if it exists; `None` when it does not.
pub fn read_if_exists(path: &Path) -> anyhow::Result<Option<String>> {
    match fs::read_to_string(path) {
        Ok(s) => Ok(Some(s)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atomic_write_sets_exact_mode() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a/b/key.pem");
        write_atomic(&path, b"secret", 0o600).unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"secret");
        assert_eq!(
            fs::metadata(&path).unwrap().permissions().mode() & 0o7777,
            0o600
        );
        write_atomic(&path, b"again", 0o644).unwrap();
        assert_eq!(
            fs::metadata(&path).unwrap().permissions().mode() & 0o7777,
            0o644
        );
        assert_eq!(read_if_exists(&path).unwrap().as_deref(), Some("again"));
        assert_eq!(read_if_exists(&dir.path().join("none")).unwrap(), None);
    }
}
