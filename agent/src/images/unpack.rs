//! Unpacking a layer blob (tar, gzip'd tar) into a directory usable as an overlayfs lowerdir:
//! OCI whiteouts become overlayfs whiteouts.

use std::fs;
use std::io::{self, BufRead, BufReader, Read};
use std::path::{Component, Path, PathBuf};

use sha2::{Digest as _, Sha256};

use super::ImageError;

const WHITEOUT_PREFIX: &str = ".wh.";
const OPAQUE_WHITEOUT: &str = ".wh..wh..opq";
const OPAQUE_XATTR: &str = "trusted.overlay.opaque";

fn io_err(context: impl Into<String>) -> impl FnOnce(io::Error) -> ImageError {
    let context = context.into();
    move |source| ImageError::Io { context, source }
}

/// A reader that hashes what passes through it.
struct HashingReader<R> {
    inner: R,
    hasher: Sha256,
    count: u64,
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.count += n as u64;
        Ok(n)
    }
}

/// `sha256:<hex>` of a file.
pub(crate) fn file_digest(path: &Path) -> Result<(String, u64), ImageError> {
    let f = fs::File::open(path).map_err(io_err(format!("opening {}", path.display())))?;
    let mut r = HashingReader {
        inner: f,
        hasher: Sha256::new(),
        count: 0,
    };
    io::copy(&mut r, &mut io::sink()).map_err(io_err(format!("reading {}", path.display())))?;
    Ok((
        format!("sha256:{}", hex::encode(r.hasher.finalize())),
        r.count,
    ))
}

/// `sha256:<hex>` of bytes.
pub(crate) fn bytes_digest(b: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(b)))
}

/// Unpacks the layer blob at `blob` (an uncompressed or gzip-compressed tar) into `dst`
/// (created if missing), turning OCI whiteouts into overlayfs ones: `.wh.NAME` becomes a
/// character device 0:0 named NAME, `.wh..wh..opq` the xattr `trusted.overlay.opaque=y` on
/// its directory. Modes, ownership, symlinks and hard links are kept. When `expected_digest`
/// (`sha256:<hex>`) is given, the blob must hash to it, or the error is `InvalidImage` (the
/// caller discards `dst`).
pub fn unpack_layer(
    blob: &Path,
    expected_digest: Option<&str>,
    dst: &Path,
) -> Result<(), ImageError> {
    let f = fs::File::open(blob).map_err(io_err(format!("opening layer {}", blob.display())))?;
    let mut br = BufReader::with_capacity(
        256 * 1024,
        HashingReader {
            inner: f,
            hasher: Sha256::new(),
            count: 0,
        },
    );
    fs::create_dir_all(dst).map_err(io_err(format!("creating {}", dst.display())))?;
    let head = br
        .fill_buf()
        .map_err(io_err(format!("reading {}", blob.display())))?;
    if head.starts_with(&[0x1f, 0x8b]) {
        unpack_tar(flate2::bufread::MultiGzDecoder::new(&mut br), dst)?;
    } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        return Err(ImageError::InvalidImage(format!(
            "layer {}: zstd-compressed layers are not supported",
            blob.display()
        )));
    } else {
        unpack_tar(&mut br, dst)?;
    }
    // Hash what the tar reader left unread (end-of-archive padding, the gzip trailer).
    io::copy(&mut br, &mut io::sink()).map_err(io_err(format!("reading {}", blob.display())))?;
    let got = format!("sha256:{}", hex::encode(br.into_inner().hasher.finalize()));
    if let Some(want) = expected_digest {
        if got != want {
            return Err(ImageError::InvalidImage(format!(
                "layer {}: digest mismatch: expected {want}, got {got}",
                blob.display()
            )));
        }
    }
    Ok(())
}

fn unpack_tar<R: Read>(r: R, dst: &Path) -> Result<(), ImageError> {
    let ctx = || format!("unpacking a layer into {}", dst.display());
    let mut ar = tar::Archive::new(r);
    ar.set_preserve_permissions(true);
    ar.set_preserve_ownerships(true);
    ar.set_preserve_mtime(true);
    ar.set_unpack_xattrs(true);
    ar.set_overwrite(true);
    for entry in ar.entries().map_err(io_err(ctx()))? {
        let mut entry = entry.map_err(io_err(ctx()))?;
        let path = entry.path().map_err(io_err(ctx()))?.into_owned();
        let Some(rel) = clean_path(&path) else {
            tracing::warn!(path = %path.display(), "skipping a layer entry outside the layer");
            continue;
        };
        if rel.as_os_str().is_empty() {
            continue; // "./" itself
        }
        let name = rel.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if let Some(hidden) = name.strip_prefix(WHITEOUT_PREFIX) {
            let parent = safe_dir(dst, rel.parent().unwrap_or(Path::new("")))?;
            if name == OPAQUE_WHITEOUT {
                xattr::set(&parent, OPAQUE_XATTR, b"y").map_err(io_err(format!(
                    "setting {OPAQUE_XATTR} on {}",
                    parent.display()
                )))?;
            } else if hidden.starts_with(WHITEOUT_PREFIX) || hidden.is_empty() {
                // Other AUFS metadata (.wh..wh.plnk, ...): nothing to do for overlayfs.
            } else {
                let target = parent.join(hidden);
                remove_any(&target)?;
                nix::sys::stat::mknod(
                    &target,
                    nix::sys::stat::SFlag::S_IFCHR,
                    nix::sys::stat::Mode::empty(),
                    nix::sys::stat::makedev(0, 0),
                )
                .map_err(|e| ImageError::Io {
                    context: format!("creating the whiteout {}", target.display()),
                    source: io::Error::from(e),
                })?;
            }
            continue;
        }
        entry.unpack_in(dst).map_err(io_err(format!(
            "unpacking {} into {}",
            rel.display(),
            dst.display()
        )))?;
    }
    Ok(())
}

/// The path of an entry relative to the layer root, or None when it climbs out of it.
fn clean_path(p: &Path) -> Option<PathBuf> {
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::CurDir | Component::RootDir => {}
            Component::ParentDir | Component::Prefix(_) => return None,
        }
    }
    Some(out)
}

/// `dst/rel`, created as directories where missing, refusing to follow symlinks (a layer's own
/// symlink could otherwise point a whiteout at the host).
fn safe_dir(dst: &Path, rel: &Path) -> Result<PathBuf, ImageError> {
    let mut cur = dst.to_path_buf();
    for c in rel.components() {
        cur.push(c);
        match fs::symlink_metadata(&cur) {
            Ok(m) if m.file_type().is_dir() => {}
            Ok(_) => {
                return Err(ImageError::InvalidImage(format!(
                    "layer whiteout under {}, which is not a directory",
                    cur.display()
                )))
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                fs::create_dir(&cur).map_err(io_err(format!("creating {}", cur.display())))?;
            }
            Err(e) => return Err(io_err(format!("inspecting {}", cur.display()))(e)),
        }
    }
    Ok(cur)
}

fn remove_any(p: &Path) -> Result<(), ImageError> {
    match fs::symlink_metadata(p) {
        Ok(m) if m.file_type().is_dir() => {
            fs::remove_dir_all(p).map_err(io_err(format!("removing {}", p.display())))
        }
        Ok(_) => fs::remove_file(p).map_err(io_err(format!("removing {}", p.display()))),
        Err(_) => Ok(()),
    }
}
