//! Importing image archives: OCI archives (a tar of an OCI image layout) and docker-archives
//! (`docker save`: manifest.json + config + layer tars).

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};

use oci_client::manifest::{
    ImageIndexEntry, OciDescriptor, OciImageIndex, OciImageManifest, IMAGE_CONFIG_MEDIA_TYPE,
    IMAGE_LAYER_GZIP_MEDIA_TYPE, IMAGE_LAYER_MEDIA_TYPE, OCI_IMAGE_MEDIA_TYPE,
};
use serde::Deserialize;

use super::reference::ImageRef;
use super::unpack::{bytes_digest, file_digest};
use super::{digest_hex, ImageError, ImageStore};

const CONTAINERD_NAME: &str = "io.containerd.image.name";
const OCI_REF_NAME: &str = "org.opencontainers.image.ref.name";

fn io_err(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> ImageError {
    let context = context.into();
    move |source| ImageError::Io { context, source }
}

fn invalid(archive: &Path, msg: impl std::fmt::Display) -> ImageError {
    ImageError::InvalidImage(format!("{}: {msg}", archive.display()))
}

pub(crate) async fn import(store: &ImageStore, archive: &Path) -> Result<Vec<String>, ImageError> {
    let dir = store.tmp_path("import");
    let res = import_inner(store, archive, &dir).await;
    let d = dir.clone();
    let _ = tokio::task::spawn_blocking(move || std::fs::remove_dir_all(d)).await;
    res
}

async fn import_inner(
    store: &ImageStore,
    archive: &Path,
    dir: &Path,
) -> Result<Vec<String>, ImageError> {
    {
        let (archive, dir) = (archive.to_path_buf(), dir.to_path_buf());
        tokio::task::spawn_blocking(move || extract(&archive, &dir))
            .await
            .map_err(|e| ImageError::InvalidImage(format!("extract task: {e}")))??;
    }
    if dir.join("index.json").is_file() {
        import_oci_layout(store, archive, dir).await
    } else if dir.join("manifest.json").is_file() {
        import_docker_archive(store, archive, dir).await
    } else {
        Err(invalid(
            archive,
            "neither an OCI archive (index.json) nor a docker-archive (manifest.json)",
        ))
    }
}

fn extract(archive: &Path, dir: &Path) -> Result<(), ImageError> {
    let f =
        std::fs::File::open(archive).map_err(io_err(format!("opening {}", archive.display())))?;
    let mut br = BufReader::new(f);
    let gz = br
        .fill_buf()
        .map_err(io_err(format!("reading {}", archive.display())))?
        .starts_with(&[0x1f, 0x8b]);
    std::fs::create_dir_all(dir).map_err(io_err(format!("creating {}", dir.display())))?;
    let res = if gz {
        tar::Archive::new(flate2::bufread::MultiGzDecoder::new(br)).unpack(dir)
    } else {
        tar::Archive::new(br).unpack(dir)
    };
    res.map_err(io_err(format!("extracting {}", archive.display())))
}

/// Reads the blob `digest` of an OCI layout, checking its digest.
fn read_blob(layout: &Path, digest: &str) -> Result<Vec<u8>, ImageError> {
    let path = layout.join("blobs/sha256").join(digest_hex(digest)?);
    let b = std::fs::read(&path).map_err(io_err(format!("reading blob {}", path.display())))?;
    let got = bytes_digest(&b);
    if got != digest {
        return Err(ImageError::InvalidImage(format!(
            "blob {digest}: content hashes to {got}"
        )));
    }
    Ok(b)
}

/// The image name an index entry carries, normalized; None for tag-only names.
fn entry_name(e: &ImageIndexEntry) -> Option<String> {
    let ann = e.annotations.as_ref()?;
    let name = ann.get(CONTAINERD_NAME).or_else(|| ann.get(OCI_REF_NAME))?;
    if !(name.contains('/') || name.contains(':') || name.contains('@')) {
        tracing::warn!(name = %name, "image archive entry named by a bare tag; not named");
        return None;
    }
    ImageRef::parse(name).ok().map(|r| r.normalized())
}

fn host_platform_pick(entries: &[ImageIndexEntry]) -> Option<String> {
    oci_client::client::current_platform_resolver(entries)
        .or_else(|| (entries.len() == 1).then(|| entries[0].digest.clone()))
}

async fn import_oci_layout(
    store: &ImageStore,
    archive: &Path,
    layout: &Path,
) -> Result<Vec<String>, ImageError> {
    let index: OciImageIndex = serde_json::from_slice(
        &std::fs::read(layout.join("index.json")).map_err(io_err("reading index.json"))?,
    )
    .map_err(|e| invalid(archive, format!("index.json: {e}")))?;
    let mut out = Vec::new();
    for entry in &index.manifests {
        let top = entry.digest.clone();
        // Follow nested indexes down to this platform's manifest.
        let mut digest = top.clone();
        let mut depth = 0;
        let (manifest, manifest_digest) = loop {
            let raw = read_blob(layout, &digest)?;
            let v: serde_json::Value = serde_json::from_slice(&raw)
                .map_err(|e| invalid(archive, format!("{digest}: {e}")))?;
            if v.get("manifests").is_some() {
                let idx: OciImageIndex = serde_json::from_value(v)
                    .map_err(|e| invalid(archive, format!("{digest}: {e}")))?;
                depth += 1;
                match host_platform_pick(&idx.manifests) {
                    Some(d) if depth < 4 => digest = d,
                    _ => {
                        return Err(invalid(
                            archive,
                            format!("{top}: no manifest for this platform"),
                        ))
                    }
                }
            } else {
                let m: OciImageManifest = serde_json::from_value(v)
                    .map_err(|e| invalid(archive, format!("{digest}: {e}")))?;
                break (m, digest);
            }
        };
        let config: serde_json::Value =
            serde_json::from_slice(&read_blob(layout, &manifest.config.digest)?)
                .map_err(|e| invalid(archive, format!("image config: {e}")))?;
        for l in &manifest.layers {
            let blob = layout.join("blobs/sha256").join(digest_hex(&l.digest)?);
            store.install_layer(&l.digest, blob).await?;
        }
        let names: Vec<String> = entry_name(entry).into_iter().collect();
        store.record_image(&top, &manifest_digest, manifest, config, &names)?;
        out.extend(names);
    }
    Ok(out)
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct DockerManifestEntry {
    config: String,
    #[serde(default)]
    repo_tags: Option<Vec<String>>,
    layers: Vec<String>,
}

fn inside(dir: &Path, rel: &str) -> Result<PathBuf, ImageError> {
    if rel.split('/').any(|c| c == "..") || rel.starts_with('/') {
        return Err(ImageError::InvalidImage(format!(
            "docker-archive path {rel:?} leaves the archive"
        )));
    }
    Ok(dir.join(rel))
}

async fn import_docker_archive(
    store: &ImageStore,
    archive: &Path,
    dir: &Path,
) -> Result<Vec<String>, ImageError> {
    let entries: Vec<DockerManifestEntry> = serde_json::from_slice(
        &std::fs::read(dir.join("manifest.json")).map_err(io_err("reading manifest.json"))?,
    )
    .map_err(|e| invalid(archive, format!("manifest.json: {e}")))?;
    let mut out = Vec::new();
    for e in entries {
        let config_raw = std::fs::read(inside(dir, &e.config)?)
            .map_err(io_err(format!("reading {}", e.config)))?;
        let config: serde_json::Value = serde_json::from_slice(&config_raw)
            .map_err(|err| invalid(archive, format!("{}: {err}", e.config)))?;
        let mut layers = Vec::new();
        for l in &e.layers {
            let path = inside(dir, l)?;
            let p2 = path.clone();
            let (digest, size, gz) =
                tokio::task::spawn_blocking(move || -> Result<_, ImageError> {
                    let (d, n) = file_digest(&p2)?;
                    let mut head = [0u8; 2];
                    let gz = std::io::Read::read_exact(
                        &mut std::fs::File::open(&p2)
                            .map_err(io_err(format!("opening {}", p2.display())))?,
                        &mut head,
                    )
                    .is_ok()
                        && head == [0x1f, 0x8b];
                    Ok((d, n, gz))
                })
                .await
                .map_err(|err| ImageError::InvalidImage(format!("hash task: {err}")))??;
            store.install_layer(&digest, path).await?;
            layers.push(OciDescriptor {
                media_type: if gz {
                    IMAGE_LAYER_GZIP_MEDIA_TYPE
                } else {
                    IMAGE_LAYER_MEDIA_TYPE
                }
                .to_string(),
                digest,
                size: size as i64,
                ..Default::default()
            });
        }
        let manifest = OciImageManifest {
            schema_version: 2,
            media_type: Some(OCI_IMAGE_MEDIA_TYPE.to_string()),
            config: OciDescriptor {
                media_type: IMAGE_CONFIG_MEDIA_TYPE.to_string(),
                digest: bytes_digest(&config_raw),
                size: config_raw.len() as i64,
                ..Default::default()
            },
            layers,
            ..Default::default()
        };
        let manifest_digest = bytes_digest(
            &serde_json::to_vec(&manifest)
                .map_err(|err| ImageError::InvalidImage(err.to_string()))?,
        );
        let names: Vec<String> = e
            .repo_tags
            .unwrap_or_default()
            .iter()
            .filter_map(|t| ImageRef::parse(t).ok().map(|r| r.normalized()))
            .collect();
        store.record_image(&manifest_digest, &manifest_digest, manifest, config, &names)?;
        out.extend(names);
    }
    Ok(out)
}
