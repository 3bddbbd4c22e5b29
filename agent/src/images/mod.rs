//! The node agent's image store: pulls images from OCI registries (mirrors and auth as in k3s's
//! `registries.yaml`), imports air-gap archives, and keeps unpacked layers for the runtime to
//! mount as overlayfs lowerdirs.
//!
//! On disk, under `root`:
//!
//! ```text
//! layers/sha256/<hex>/   one unpacked layer per blob digest, shared by every image using it;
//!                        created by unpacking into tmp/ and renaming (present = complete)
//! images.json            references → digest, and per digest the manifest, config and size
//! tmp/                   downloads and unpacks in progress (emptied by `open`)
//! ```
//!
//! One `ImageStore` per root: two processes must not share a root.

mod archive;
mod reference;
mod registries;
mod remote;
mod unpack;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use futures::TryStreamExt as _;
use oci_client::manifest::{OciDescriptor, OciImageManifest};
use serde::{Deserialize, Serialize};

pub use reference::PullPolicy;
pub use registries::{AuthConfig, Mirror, RegistriesConfig, RegistryConfig, TlsConfig};
pub use unpack::unpack_layer;

use reference::ImageRef;

/// Registry credentials (from an imagePullSecret or `registries.yaml`).
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub username: String,
    pub password: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("username", &self.username)
            .finish_non_exhaustive()
    }
}

/// An image present locally, ready for the runtime.
#[derive(Debug, Clone, PartialEq)]
pub struct Image {
    /// Normalized reference, e.g. `docker.io/library/busybox:latest`.
    pub reference: String,
    /// `sha256:<config digest>`.
    pub image_id: String,
    /// `<repo>@sha256:<manifest digest>` (of the index when the registry served one); goes into
    /// `containerStatuses[].imageID`.
    pub repo_digest: String,
    /// Unpacked layer directories, base first (overlayfs wants them reversed as lowerdirs).
    pub layers: Vec<PathBuf>,
    pub config: ImageConfig,
}

/// The parts of the image config the runtime uses.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageConfig {
    pub entrypoint: Vec<String>,
    pub cmd: Vec<String>,
    pub env: Vec<String>,
    pub working_dir: Option<String>,
    pub user: Option<String>,
}

impl ImageConfig {
    /// From the JSON of an OCI/Docker image config.
    pub fn from_json(config: &serde_json::Value) -> ImageConfig {
        let c = &config["config"];
        let strings = |v: &serde_json::Value| -> Vec<String> {
            v.as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|s| s.as_str().map(str::to_string))
                        .collect()
                })
                .unwrap_or_default()
        };
        let opt = |v: &serde_json::Value| v.as_str().filter(|s| !s.is_empty()).map(str::to_string);
        ImageConfig {
            entrypoint: strings(&c["Entrypoint"]),
            cmd: strings(&c["Cmd"]),
            env: strings(&c["Env"]),
            working_dir: opt(&c["WorkingDir"]),
            user: opt(&c["User"]),
        }
    }
}

/// An image for node.status.images.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageSummary {
    /// References and `repo@sha256:...` names.
    pub names: Vec<String>,
    /// Compressed size of the config and layers, as containerd reports it.
    pub size_bytes: u64,
}

#[derive(thiserror::Error, Debug)]
pub enum ImageError {
    /// Policy Never and the image is absent (kubelet reason ErrImageNeverPull).
    #[error("image {0} is not present and the pull policy is Never")]
    NeverPull(String),
    /// The registry does not know the image (manifest or repository unknown).
    #[error("image not found: {0}")]
    NotFound(String),
    /// The registry refused the credentials (or their absence).
    #[error("unauthorized: {0}")]
    Unauthorized(String),
    /// Any other registry or network failure.
    #[error("pulling failed: {0}")]
    Pull(String),
    #[error("invalid image reference: {0}")]
    InvalidReference(String),
    /// A malformed manifest, config, layer or archive, or a digest mismatch.
    #[error("invalid image: {0}")]
    InvalidImage(String),
    /// A malformed registries.yaml.
    #[error("registries config: {0}")]
    Config(String),
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
}

impl ImageError {
    /// The kubelet's waiting reason for this failure.
    pub fn reason(&self) -> &'static str {
        match self {
            ImageError::NeverPull(_) => "ErrImageNeverPull",
            ImageError::InvalidReference(_) => "InvalidImageName",
            _ => "ErrImagePull",
        }
    }
}

fn io_err(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> ImageError {
    let context = context.into();
    move |source| ImageError::Io { context, source }
}

/// What is persisted per image (keyed by the digest a reference resolves to: the index's when
/// the registry served an index, else the manifest's).
#[derive(Debug, Clone, Serialize, Deserialize)]
struct ImageRecord {
    /// The platform manifest's digest.
    manifest_digest: String,
    manifest: OciImageManifest,
    config: serde_json::Value,
    size: u64,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct State {
    /// Normalized reference → image digest.
    refs: BTreeMap<String, String>,
    /// Image digest → record.
    images: BTreeMap<String, ImageRecord>,
}

struct Inner {
    root: PathBuf,
    registries: RegistriesConfig,
    state: Mutex<State>,
    locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

/// The image store; cheap to clone (shared state).
#[derive(Clone)]
pub struct ImageStore {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for ImageStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ImageStore")
            .field("root", &self.inner.root)
            .finish_non_exhaustive()
    }
}

static TMP_COUNTER: AtomicU64 = AtomicU64::new(0);

fn digest_hex(digest: &str) -> Result<&str, ImageError> {
    match digest.strip_prefix("sha256:") {
        Some(h)
            if h.len() == 64
                && h.bytes()
                    .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()) =>
        {
            Ok(h)
        }
        _ => Err(ImageError::InvalidImage(format!(
            "unsupported digest {digest:?}"
        ))),
    }
}

fn image_size(m: &OciImageManifest) -> u64 {
    let pos = |s: i64| u64::try_from(s).unwrap_or(0);
    pos(m.config.size) + m.layers.iter().map(|l| pos(l.size)).sum::<u64>()
}

impl ImageStore {
    /// Opens (creating if needed) the store at `root`, reading what an earlier agent left.
    pub fn open(root: PathBuf, registries: RegistriesConfig) -> Result<Self, ImageError> {
        // The registry client uses the process-wide rustls provider (ring, as kube's);
        // installing it is a no-op when the program already did.
        let _ = rustls::crypto::ring::default_provider().install_default();
        std::fs::create_dir_all(root.join("layers/sha256")).map_err(io_err(format!(
            "creating {}",
            root.join("layers/sha256").display()
        )))?;
        let tmp = root.join("tmp");
        if tmp.exists() {
            std::fs::remove_dir_all(&tmp).map_err(io_err(format!("clearing {}", tmp.display())))?;
        }
        std::fs::create_dir_all(&tmp).map_err(io_err(format!("creating {}", tmp.display())))?;
        let meta = root.join("images.json");
        let state = match std::fs::read(&meta) {
            Ok(b) => serde_json::from_slice(&b).unwrap_or_else(|e| {
                tracing::warn!(file = %meta.display(), error = %e, "unreadable image metadata; starting empty");
                State::default()
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => State::default(),
            Err(e) => return Err(io_err(format!("reading {}", meta.display()))(e)),
        };
        Ok(ImageStore {
            inner: Arc::new(Inner {
                root,
                registries,
                state: Mutex::new(state),
                locks: Mutex::new(HashMap::new()),
            }),
        })
    }

    /// The store's root directory.
    pub fn root(&self) -> &Path {
        &self.inner.root
    }

    /// Makes the image available locally per the policy and returns it. `secrets` are the
    /// pod's imagePullSecrets already decoded: (registry host, credentials).
    pub async fn ensure(
        &self,
        reference: &str,
        policy: PullPolicy,
        secrets: &[(String, Credentials)],
    ) -> Result<Image, ImageError> {
        let r = ImageRef::parse(reference)?;
        let key = r.normalized();
        let _guard = self.lock(format!("ref:{key}")).await;
        let local = self.lookup(&r);
        match (policy, local) {
            (PullPolicy::Never, Some((digest, rec)))
            | (PullPolicy::IfNotPresent, Some((digest, rec))) => {
                Ok(self.to_image(&r, &digest, &rec))
            }
            (PullPolicy::Never, None) => Err(ImageError::NeverPull(key)),
            (PullPolicy::IfNotPresent, None) => self.pull(&r, secrets).await,
            (PullPolicy::Always, Some((digest, rec))) => {
                let (remote, _) = remote::with_endpoints(
                    &self.inner.registries,
                    &r,
                    secrets,
                    |c, rf, auth| async move { c.fetch_manifest_digest(&rf, &auth).await },
                )
                .await?;
                if remote == digest {
                    tracing::debug!(image = %key, %digest, "image up to date");
                    // The tag may be known only through a digest lookup: record it.
                    self.record_ref(&key, &digest)?;
                    Ok(self.to_image(&r, &digest, &rec))
                } else {
                    self.pull(&r, secrets).await
                }
            }
            (PullPolicy::Always, None) => self.pull(&r, secrets).await,
        }
    }

    /// Imports every image archive in `dir` (k3s's air-gap convention, DATA_DIR/agent/images/):
    /// OCI archives (`skopeo copy ... oci-archive:`, `docker save` of Docker ≥ 25) and
    /// docker-archives, as `.tar`, `.tar.gz` or `.tgz`. Returns the references imported.
    /// Archives that fail are logged and skipped (see `import_archive` for the error).
    pub async fn import_dir(&self, dir: &Path) -> Result<Vec<String>, ImageError> {
        let mut files = Vec::new();
        let rd = match std::fs::read_dir(dir) {
            Ok(rd) => rd,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io_err(format!("reading {}", dir.display()))(e)),
        };
        for e in rd {
            let e = e.map_err(io_err(format!("reading {}", dir.display())))?;
            let name = e.file_name().to_string_lossy().into_owned();
            if [".tar", ".tar.gz", ".tgz"]
                .iter()
                .any(|s| name.ends_with(s))
            {
                files.push(e.path());
            } else if e.path().is_file() {
                tracing::debug!(file = %e.path().display(), "not an image archive (.tar, .tar.gz, .tgz); skipped");
            }
        }
        files.sort();
        let mut out = Vec::new();
        for f in files {
            match self.import_archive(&f).await {
                Ok(refs) => {
                    tracing::info!(archive = %f.display(), images = ?refs, "imported image archive");
                    out.extend(refs);
                }
                Err(e) => {
                    tracing::warn!(archive = %f.display(), error = %e, "importing image archive failed")
                }
            }
        }
        Ok(out)
    }

    /// Imports one image archive (see `import_dir`); returns the references it named.
    pub async fn import_archive(&self, path: &Path) -> Result<Vec<String>, ImageError> {
        archive::import(self, path).await
    }

    /// Images present, for node.status.images.
    pub fn list(&self) -> Vec<ImageSummary> {
        let st = self.inner.state.lock().unwrap_or_else(|e| e.into_inner());
        let mut names: BTreeMap<&str, BTreeSet<String>> = BTreeMap::new();
        for (reference, digest) in &st.refs {
            if !st.images.contains_key(digest) {
                continue;
            }
            let set = names.entry(digest.as_str()).or_default();
            set.insert(reference.clone());
            if let Ok(r) = ImageRef::parse(reference) {
                set.insert(format!("{}@{digest}", r.repo()));
            }
        }
        names
            .into_iter()
            .map(|(digest, names)| ImageSummary {
                names: names.into_iter().collect(),
                size_bytes: st.images[digest].size,
            })
            .collect()
    }

    // ---- internals ----

    async fn lock(&self, key: String) -> tokio::sync::OwnedMutexGuard<()> {
        let m = {
            let mut locks = self.inner.locks.lock().unwrap_or_else(|e| e.into_inner());
            locks.entry(key).or_default().clone()
        };
        m.lock_owned().await
    }

    pub(crate) fn tmp_path(&self, suffix: &str) -> PathBuf {
        let n = TMP_COUNTER.fetch_add(1, Ordering::Relaxed);
        self.inner
            .root
            .join("tmp")
            .join(format!("{}-{n}.{suffix}", std::process::id()))
    }

    fn layer_dir(&self, digest: &str) -> Result<PathBuf, ImageError> {
        Ok(self
            .inner
            .root
            .join("layers/sha256")
            .join(digest_hex(digest)?))
    }

    /// The local image for a reference (by digest for digest references), if all its layers
    /// are present.
    fn lookup(&self, r: &ImageRef) -> Option<(String, ImageRecord)> {
        let st = self.inner.state.lock().unwrap_or_else(|e| e.into_inner());
        let found = match &r.digest {
            Some(d) => st
                .images
                .get_key_value(d)
                .or_else(|| st.images.iter().find(|(_, rec)| &rec.manifest_digest == d)),
            None => st
                .refs
                .get(&r.normalized())
                .and_then(|d| st.images.get_key_value(d)),
        };
        let (digest, rec) = found?;
        let complete = rec.manifest.layers.iter().all(|l| {
            self.layer_dir(&l.digest)
                .map(|p| p.is_dir())
                .unwrap_or(false)
        });
        complete.then(|| (digest.clone(), rec.clone()))
    }

    fn to_image(&self, r: &ImageRef, digest: &str, rec: &ImageRecord) -> Image {
        Image {
            reference: r.normalized(),
            image_id: rec.manifest.config.digest.clone(),
            repo_digest: format!("{}@{digest}", r.repo()),
            layers: rec
                .manifest
                .layers
                .iter()
                .filter_map(|l| self.layer_dir(&l.digest).ok())
                .collect(),
            config: ImageConfig::from_json(&rec.config),
        }
    }

    fn save(&self, st: &State) -> Result<(), ImageError> {
        let path = self.inner.root.join("images.json");
        let tmp = self.tmp_path("images.json");
        let bytes = serde_json::to_vec(st).map_err(|e| ImageError::InvalidImage(e.to_string()))?;
        std::fs::write(&tmp, bytes).map_err(io_err(format!("writing {}", tmp.display())))?;
        std::fs::rename(&tmp, &path).map_err(io_err(format!("writing {}", path.display())))
    }

    fn record_ref(&self, reference: &str, digest: &str) -> Result<(), ImageError> {
        let mut st = self.inner.state.lock().unwrap_or_else(|e| e.into_inner());
        if st.refs.get(reference).map(String::as_str) == Some(digest) {
            return Ok(());
        }
        st.refs.insert(reference.to_string(), digest.to_string());
        self.save(&st)
    }

    /// Records an image whose layers are all unpacked, under `references`.
    pub(crate) fn record_image(
        &self,
        digest: &str,
        manifest_digest: &str,
        manifest: OciImageManifest,
        config: serde_json::Value,
        references: &[String],
    ) -> Result<(), ImageError> {
        let mut st = self.inner.state.lock().unwrap_or_else(|e| e.into_inner());
        let size = image_size(&manifest);
        st.images.insert(
            digest.to_string(),
            ImageRecord {
                manifest_digest: manifest_digest.to_string(),
                manifest,
                config,
                size,
            },
        );
        for r in references {
            st.refs.insert(r.clone(), digest.to_string());
        }
        // Images no reference points to any more (a tag moved) are forgotten; their layers stay.
        let used: BTreeSet<String> = st.refs.values().cloned().collect();
        st.images.retain(|d, _| used.contains(d));
        self.save(&st)
    }

    /// Unpacks the layer blob at `blob` (verified against `digest`) into the layer cache,
    /// unless already there. Holds the per-digest lock.
    pub(crate) async fn install_layer(
        &self,
        digest: &str,
        blob: PathBuf,
    ) -> Result<PathBuf, ImageError> {
        let dir = self.layer_dir(digest)?;
        if dir.is_dir() {
            return Ok(dir);
        }
        let _guard = self.lock(format!("layer:{digest}")).await;
        self.unpack_locked(digest, blob, dir).await
    }

    async fn unpack_locked(
        &self,
        digest: &str,
        blob: PathBuf,
        dir: PathBuf,
    ) -> Result<PathBuf, ImageError> {
        if dir.is_dir() {
            return Ok(dir);
        }
        let tmp = self.tmp_path("layer");
        let digest = digest.to_string();
        let dir2 = dir.clone();
        tokio::task::spawn_blocking(move || {
            let res = unpack::unpack_layer(&blob, Some(&digest), &tmp).and_then(|()| {
                std::fs::rename(&tmp, &dir2)
                    .map_err(io_err(format!("renaming into {}", dir2.display())))
            });
            if res.is_err() {
                let _ = std::fs::remove_dir_all(&tmp);
            }
            res
        })
        .await
        .map_err(|e| ImageError::Pull(format!("unpack task: {e}")))??;
        Ok(dir)
    }

    /// Downloads and unpacks the layer `desc` from `session` unless it is already present.
    async fn fetch_layer(
        &self,
        session: &remote::Session,
        desc: &OciDescriptor,
    ) -> Result<(), ImageError> {
        let dir = self.layer_dir(&desc.digest)?;
        if dir.is_dir() {
            return Ok(());
        }
        let _guard = self.lock(format!("layer:{}", desc.digest)).await;
        if dir.is_dir() {
            return Ok(());
        }
        let blob = self.tmp_path("blob");
        let res = async {
            let file = tokio::fs::File::create(&blob)
                .await
                .map_err(io_err(format!("creating {}", blob.display())))?;
            session
                .client
                .pull_blob(&session.reference, desc, file)
                .await
                .map_err(|e| remote::map_error(&session.reference, e))?;
            self.unpack_locked(&desc.digest, blob.clone(), dir).await
        }
        .await;
        let _ = tokio::fs::remove_file(&blob).await;
        res.map(|_| ())
    }

    async fn pull(
        &self,
        r: &ImageRef,
        secrets: &[(String, Credentials)],
    ) -> Result<Image, ImageError> {
        let key = r.normalized();
        tracing::info!(image = %key, "pulling image");
        let ((manifest, manifest_digest, list_digest), session) = remote::with_endpoints(
            &self.inner.registries,
            r,
            secrets,
            |c, rf, auth| async move { c.pull_image_manifest_and_list_digest(&rf, &auth).await },
        )
        .await?;
        let digest = list_digest.unwrap_or_else(|| manifest_digest.clone());
        if let Some(want) = &r.digest {
            if want != &digest && want != &manifest_digest {
                return Err(ImageError::InvalidImage(format!(
                    "{key}: registry served digest {digest}"
                )));
            }
        }
        let mut config = Vec::new();
        session
            .client
            .pull_blob(&session.reference, &manifest.config, &mut config)
            .await
            .map_err(|e| remote::map_error(&session.reference, e))?;
        let config: serde_json::Value = serde_json::from_slice(&config)
            .map_err(|e| ImageError::InvalidImage(format!("{key}: image config: {e}")))?;
        futures::stream::iter(manifest.layers.iter().map(Ok::<_, ImageError>))
            .try_for_each_concurrent(3, |l| self.fetch_layer(&session, l))
            .await?;
        // Keep the reference the user gave; a digest reference resolves to itself.
        let digest = r.digest.clone().unwrap_or(digest);
        self.record_image(
            &digest,
            &manifest_digest,
            manifest,
            config,
            std::slice::from_ref(&key),
        )?;
        let (digest, rec) = self
            .lookup(r)
            .ok_or_else(|| ImageError::Pull(format!("{key}: image vanished after the pull")))?;
        tracing::info!(image = %key, %digest, endpoint = %session.endpoint.host, "pulled image");
        Ok(self.to_image(r, &digest, &rec))
    }
}

#[allow(dead_code)]
fn _assert_send_sync() {
    fn is<T: Send + Sync + Clone>() {}
    is::<ImageStore>();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_from_json() {
        let v = serde_json::json!({"config": {"Cmd": ["sh"], "Env": ["PATH=/bin"], "WorkingDir": "", "User": "1000"}});
        let c = ImageConfig::from_json(&v);
        assert_eq!(c.cmd, vec!["sh"]);
        assert_eq!(c.env, vec!["PATH=/bin"]);
        assert!(c.entrypoint.is_empty());
        assert_eq!(c.working_dir, None);
        assert_eq!(c.user.as_deref(), Some("1000"));
    }
}
