//! agent::images against a real registry (Debian's docker-registry, started through
//! scripts/registry.sh on a free loopback port) and real archives; no mocks.
//!
//! Needs docker-registry, umoci, skopeo, busybox-static and curl (installed with apt-get when
//! missing and possible; the registry tests are skipped with a message otherwise). Set
//! KRUST_REPO to the repository root when building this file outside the workspace.

use std::net::TcpListener;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use agent::images::{
    unpack_layer, Credentials, ImageError, ImageStore, PullPolicy, RegistriesConfig,
};

fn repo_root() -> PathBuf {
    match std::env::var("KRUST_REPO") {
        Ok(p) if !p.is_empty() => PathBuf::from(p),
        _ => Path::new(env!("CARGO_MANIFEST_DIR")).join(".."),
    }
}

fn script() -> PathBuf {
    repo_root().join("scripts/registry.sh")
}

fn have(cmd: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {cmd} >/dev/null 2>&1")])
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

fn tools_present() -> bool {
    ["docker-registry", "umoci", "skopeo", "curl"]
        .iter()
        .all(|c| have(c))
        && Path::new("/bin/busybox").exists()
}

/// Whether the registry tools are there, installing them with apt-get if needed (once).
fn tools() -> bool {
    static OK: OnceLock<bool> = OnceLock::new();
    *OK.get_or_init(|| {
        if tools_present() {
            return true;
        }
        let pkgs = [
            "docker-registry",
            "umoci",
            "skopeo",
            "busybox-static",
            "curl",
        ];
        let install = || {
            Command::new("apt-get")
                .args(["install", "-y", "-q"])
                .args(pkgs)
                .env("DEBIAN_FRONTEND", "noninteractive")
                .stdout(std::process::Stdio::null())
                .status()
                .map(|s| s.success())
                .unwrap_or(false)
        };
        if !install() {
            let _ = Command::new("apt-get")
                .args(["update", "-q"])
                .stdout(std::process::Stdio::null())
                .status();
            install();
        }
        if tools_present() {
            return true;
        }
        eprintln!(
            "SKIPPED: registry tests need docker-registry, umoci, skopeo, busybox-static and curl \
             (Debian packages), which could not be installed"
        );
        false
    })
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn run(args: &[&str]) {
    let out = Command::new("bash")
        .arg(script())
        .args(args)
        .output()
        .expect("running registry.sh");
    assert!(
        out.status.success(),
        "registry.sh {args:?} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A registry process; stopped on drop, even when the test fails.
struct Registry {
    port: u16,
    dir: tempfile::TempDir,
    running: bool,
}

impl Registry {
    fn start(htpasswd: Option<&Path>) -> Registry {
        let port = free_port();
        let dir = tempfile::tempdir().unwrap();
        let mut reg = Registry {
            port,
            dir,
            running: true,
        };
        let (p, d) = (
            port.to_string(),
            reg.dir.path().to_str().unwrap().to_string(),
        );
        let mut args = vec!["start", "--port", &p, "--dir", &d];
        let h;
        if let Some(path) = htpasswd {
            h = path.to_str().unwrap().to_string();
            args.extend(["--htpasswd", &h]);
        }
        let out = Command::new("bash")
            .arg(script())
            .args(&args)
            .output()
            .unwrap();
        if !out.status.success() {
            reg.running = false;
            panic!(
                "registry.sh start failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        reg
    }

    fn push_busybox(&self, creds: Option<&str>) {
        let p = self.port.to_string();
        let mut args = vec!["push-busybox", "--port", &p];
        if let Some(c) = creds {
            args.extend(["--creds", c]);
        }
        run(&args);
    }

    fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    fn stop(&mut self) {
        if self.running {
            self.running = false;
            let (p, d) = (
                self.port.to_string(),
                self.dir.path().to_str().unwrap().to_string(),
            );
            let _ = Command::new("bash")
                .arg(script())
                .args(["stop", "--port", &p, "--dir", &d])
                .output();
        }
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        self.stop();
    }
}

fn store(root: &Path, registries: RegistriesConfig) -> ImageStore {
    ImageStore::open(root.to_path_buf(), registries).unwrap()
}

/// The layer holding `rel`, searching top layer first.
fn find_in_layers(layers: &[PathBuf], rel: &str) -> Option<PathBuf> {
    layers
        .iter()
        .rev()
        .map(|l| l.join(rel))
        .find(|p| p.symlink_metadata().is_ok())
}

fn assert_busybox(img: &agent::images::Image) {
    assert!(
        img.image_id.starts_with("sha256:") && img.image_id.len() == 71,
        "{img:?}"
    );
    assert!(!img.layers.is_empty());
    let bb = find_in_layers(&img.layers, "bin/busybox").expect("bin/busybox in a layer");
    let meta = bb.metadata().unwrap();
    assert!(
        meta.is_file() && meta.permissions().mode() & 0o111 != 0,
        "busybox is executable"
    );
    let sh = find_in_layers(&img.layers, "bin/sh").expect("bin/sh");
    assert_eq!(std::fs::read_link(sh).unwrap(), Path::new("busybox"));
    let passwd =
        std::fs::read_to_string(find_in_layers(&img.layers, "etc/passwd").unwrap()).unwrap();
    assert!(passwd.starts_with("root:x:0:0:"));
    assert_eq!(img.config.cmd, vec!["sh".to_string()]);
    assert!(img.config.env.iter().any(|e| e.starts_with("PATH=")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pull_cache_and_policies() {
    if !tools() {
        return;
    }
    let mut reg = Registry::start(None);
    reg.push_busybox(None);
    let root = tempfile::tempdir().unwrap();
    let images = store(root.path(), RegistriesConfig::default());
    let reference = format!("{}/library/busybox:1.35", reg.host());

    // Never on an absent image.
    let err = images
        .ensure(&reference, PullPolicy::Never, &[])
        .await
        .unwrap_err();
    assert!(matches!(err, ImageError::NeverPull(_)), "{err:?}");
    assert_eq!(err.reason(), "ErrImageNeverPull");

    // Unknown tag and unknown repository.
    let err = images
        .ensure(
            &format!("{}/library/busybox:nope", reg.host()),
            PullPolicy::IfNotPresent,
            &[],
        )
        .await
        .unwrap_err();
    assert!(matches!(err, ImageError::NotFound(_)), "{err:?}");
    let err = images
        .ensure(
            &format!("{}/library/nothing:1", reg.host()),
            PullPolicy::Always,
            &[],
        )
        .await
        .unwrap_err();
    assert!(matches!(err, ImageError::NotFound(_)), "{err:?}");
    let err = images
        .ensure("Not A Reference", PullPolicy::IfNotPresent, &[])
        .await
        .unwrap_err();
    assert!(matches!(err, ImageError::InvalidReference(_)), "{err:?}");

    // Concurrent pulls of the same image (and of a second tag of it).
    let mut tasks = Vec::new();
    for i in 0..4 {
        let images = images.clone();
        let r = if i % 2 == 0 {
            reference.clone()
        } else {
            format!("{}/library/busybox:latest", reg.host())
        };
        tasks.push(tokio::spawn(async move {
            images.ensure(&r, PullPolicy::IfNotPresent, &[]).await
        }));
    }
    let mut pulled = Vec::new();
    for t in tasks {
        pulled.push(t.await.unwrap().unwrap());
    }
    let img = pulled[0].clone();
    assert_eq!(img.reference, reference);
    assert!(
        img.repo_digest
            .starts_with(&format!("{}/library/busybox@sha256:", reg.host())),
        "{img:?}"
    );
    assert_busybox(&img);
    for p in &pulled {
        assert_eq!(p.layers, img.layers);
        assert_eq!(p.image_id, img.image_id);
    }
    // Nothing left behind in tmp/.
    assert_eq!(
        std::fs::read_dir(root.path().join("tmp")).unwrap().count(),
        0
    );

    // node.status.images
    let list = images.list();
    assert_eq!(list.len(), 1, "{list:?}");
    assert!(list[0].names.contains(&reference));
    assert!(list[0].names.contains(&img.repo_digest));
    assert!(list[0].size_bytes > 500_000, "{list:?}");

    // Always with an unchanged image reuses it; a digest reference resolves locally.
    let again = images
        .ensure(&reference, PullPolicy::Always, &[])
        .await
        .unwrap();
    assert_eq!(again, img);
    let digest = img.repo_digest.split_once('@').unwrap().1.to_string();
    let by_digest = format!("{}/library/busybox@{digest}", reg.host());
    let d = images
        .ensure(&by_digest, PullPolicy::Never, &[])
        .await
        .unwrap();
    assert_eq!(d.layers, img.layers);
    assert_eq!(d.repo_digest, img.repo_digest);

    // With the registry gone: a restarted agent finds the image (IfNotPresent, Never) without
    // contacting the registry; Always fails with a pull error.
    reg.stop();
    let reopened = store(root.path(), RegistriesConfig::default());
    let cached = reopened
        .ensure(&reference, PullPolicy::IfNotPresent, &[])
        .await
        .unwrap();
    assert_eq!(cached, img);
    reopened
        .ensure(&reference, PullPolicy::Never, &[])
        .await
        .unwrap();
    let err = reopened
        .ensure(&reference, PullPolicy::Always, &[])
        .await
        .unwrap_err();
    assert!(matches!(err, ImageError::Pull(_)), "{err:?}");
    assert_eq!(err.reason(), "ErrImagePull");
    assert_eq!(reopened.list(), images.list());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mirror_from_registries_yaml() {
    if !tools() {
        return;
    }
    let reg = Registry::start(None);
    reg.push_busybox(None);
    let dir = tempfile::tempdir().unwrap();
    let yaml = dir.path().join("registries.yaml");
    std::fs::write(
        &yaml,
        format!(
            "mirrors:\n  docker.io:\n    endpoint:\n      - \"http://{}\"\n",
            reg.host()
        ),
    )
    .unwrap();
    let cfg = RegistriesConfig::load(&yaml).unwrap();
    let images = store(&dir.path().join("store"), cfg);
    let img = images
        .ensure("busybox:1.35", PullPolicy::IfNotPresent, &[])
        .await
        .unwrap();
    assert_eq!(img.reference, "docker.io/library/busybox:1.35");
    assert!(
        img.repo_digest
            .starts_with("docker.io/library/busybox@sha256:"),
        "{img:?}"
    );
    assert_busybox(&img);
    // Always checks the digest through the mirror and reuses the layers.
    let again = images
        .ensure("busybox:1.35", PullPolicy::Always, &[])
        .await
        .unwrap();
    assert_eq!(again, img);

    // A scheme-less loopback endpoint is plain HTTP too, and rewrites apply at the mirror.
    let cfg = RegistriesConfig::from_yaml(&format!(
        "mirrors:\n  registry.example.com:\n    endpoint: [\"{}\"]\n    rewrite:\n      \"^mirrored/(.*)$\": \"library/$1\"\n",
        reg.host()
    ))
    .unwrap();
    let images = store(&dir.path().join("store2"), cfg);
    let img = images
        .ensure(
            "registry.example.com/mirrored/busybox:latest",
            PullPolicy::Always,
            &[],
        )
        .await
        .unwrap();
    assert_eq!(
        img.reference,
        "registry.example.com/mirrored/busybox:latest"
    );
    assert_busybox(&img);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn import_oci_archive_air_gap() {
    if !tools() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let images_dir = dir.path().join("agent/images");
    std::fs::create_dir_all(&images_dir).unwrap();
    let archive = images_dir.join("busybox.tar");
    run(&["archive", archive.to_str().unwrap()]);
    std::fs::write(images_dir.join("README.txt"), "not an image").unwrap();

    let images = store(&dir.path().join("store"), RegistriesConfig::default());
    let refs = images.import_dir(&images_dir).await.unwrap();
    assert_eq!(refs, vec!["docker.io/library/busybox:1.35".to_string()]);
    // Present without any registry: policy Never works, by the short name too.
    let img = images
        .ensure("busybox:1.35", PullPolicy::Never, &[])
        .await
        .unwrap();
    assert_busybox(&img);
    assert!(img
        .repo_digest
        .starts_with("docker.io/library/busybox@sha256:"));
    assert_eq!(images.list().len(), 1);
    // Importing again is harmless.
    assert_eq!(images.import_dir(&images_dir).await.unwrap(), refs);
    assert_eq!(
        images
            .ensure("busybox:1.35", PullPolicy::Never, &[])
            .await
            .unwrap(),
        img
    );
}

// ---- hand-built archives and layers (no registry tools needed) ----

fn header(path: &str, kind: tar::EntryType, size: u64, mode: u32) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_path(path).unwrap();
    h.set_entry_type(kind);
    h.set_size(size);
    h.set_mode(mode);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(1_700_000_000);
    h.set_cksum();
    h
}

fn add_file(b: &mut tar::Builder<Vec<u8>>, path: &str, data: &[u8], mode: u32, owner: u64) {
    let mut h = header(path, tar::EntryType::Regular, data.len() as u64, mode);
    h.set_uid(owner);
    h.set_gid(owner);
    h.set_cksum();
    b.append(&h, data).unwrap();
}

fn add_dir(b: &mut tar::Builder<Vec<u8>>, path: &str) {
    b.append(
        &header(path, tar::EntryType::Directory, 0, 0o755),
        std::io::empty(),
    )
    .unwrap();
}

fn add_link(b: &mut tar::Builder<Vec<u8>>, path: &str, target: &str, kind: tar::EntryType) {
    let mut h = header(path, kind, 0, 0o777);
    h.set_link_name(target).unwrap();
    h.set_cksum();
    b.append(&h, std::io::empty()).unwrap();
}

fn sha256(b: &[u8]) -> String {
    use sha2::Digest as _;
    format!("sha256:{}", hex::encode(sha2::Sha256::digest(b)))
}

fn whiteout_layer() -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    add_dir(&mut b, "./");
    add_dir(&mut b, "etc/");
    add_file(&mut b, "etc/app.conf", b"x=1\n", 0o640, 1000);
    add_link(&mut b, "etc/app.link", "etc/app.conf", tar::EntryType::Link);
    add_link(&mut b, "etc/app.sym", "app.conf", tar::EntryType::Symlink);
    add_file(&mut b, ".wh.removed", b"", 0o644, 0);
    add_dir(&mut b, "opaque/");
    add_file(&mut b, "opaque/.wh..wh..opq", b"", 0o644, 0);
    add_file(&mut b, "opaque/new", b"n", 0o644, 0);
    add_file(&mut b, "deep/dir/.wh.gone", b"", 0o644, 0); // parent created on the way
    add_file(&mut b, "etc/.wh..wh.plnk", b"", 0o644, 0); // AUFS metadata: ignored
    b.into_inner().unwrap()
}

#[test]
fn whiteouts_become_overlay_whiteouts() {
    let dir = tempfile::tempdir().unwrap();
    let tar = whiteout_layer();
    let blob = dir.path().join("layer.tar");
    std::fs::write(&blob, &tar).unwrap();
    // gzip'd too: same result.
    let gz_blob = dir.path().join("layer.tar.gz");
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    std::io::Write::write_all(&mut enc, &tar).unwrap();
    let gz = enc.finish().unwrap();
    std::fs::write(&gz_blob, &gz).unwrap();

    for (blob, digest) in [(&blob, sha256(&tar)), (&gz_blob, sha256(&gz))] {
        let out = dir.path().join(format!("out-{}", &digest[7..19]));
        unpack_layer(blob, Some(&digest), &out).unwrap();

        let conf = out.join("etc/app.conf");
        let m = conf.metadata().unwrap();
        assert_eq!(m.permissions().mode() & 0o7777, 0o640);
        assert_eq!((m.uid(), m.gid()), (1000, 1000));
        assert_eq!(std::fs::read(&conf).unwrap(), b"x=1\n");
        assert_eq!(
            out.join("etc/app.link").metadata().unwrap().ino(),
            m.ino(),
            "hard link"
        );
        assert_eq!(
            std::fs::read_link(out.join("etc/app.sym")).unwrap(),
            Path::new("app.conf")
        );

        for wh in ["removed", "deep/dir/gone"] {
            let m = std::fs::symlink_metadata(out.join(wh)).unwrap();
            assert!(m.file_type().is_char_device(), "{wh} is a char device");
            assert_eq!(m.rdev(), 0, "{wh} is 0:0");
            assert!(!out
                .join(wh)
                .parent()
                .unwrap()
                .join(format!(
                    ".wh.{}",
                    Path::new(wh).file_name().unwrap().to_str().unwrap()
                ))
                .exists());
        }
        assert_eq!(
            xattr::get(out.join("opaque"), "trusted.overlay.opaque")
                .unwrap()
                .as_deref(),
            Some(&b"y"[..])
        );
        assert!(!out.join("opaque/.wh..wh..opq").exists());
        assert!(out.join("opaque/new").is_file());
        assert!(!out.join("etc/.wh..wh.plnk").exists());
    }

    // A wrong digest is refused.
    let err = unpack_layer(&blob, Some(&sha256(b"other")), &dir.path().join("bad")).unwrap_err();
    assert!(matches!(err, ImageError::InvalidImage(_)), "{err:?}");
}

#[tokio::test]
async fn import_docker_archive() {
    // docker save's format: manifest.json, the config, one uncompressed tar per layer.
    let layer = {
        let mut b = tar::Builder::new(Vec::new());
        add_dir(&mut b, "bin/");
        add_file(&mut b, "bin/hello", b"#!/bin/sh\necho hi\n", 0o755, 0);
        b.into_inner().unwrap()
    };
    let config = serde_json::json!({
        "architecture": "amd64", "os": "linux",
        "config": {"Entrypoint": ["/bin/hello"], "WorkingDir": "/work", "User": "65534"},
        "rootfs": {"type": "layers", "diff_ids": [sha256(&layer)]},
    });
    let config = serde_json::to_vec(&config).unwrap();
    let config_name = format!("{}.json", &sha256(&config)[7..]);
    let manifest = serde_json::json!([{
        "Config": config_name, "RepoTags": ["example.com/hello:v1", "hello:v1"], "Layers": ["abc/layer.tar"],
    }]);
    let mut b = tar::Builder::new(Vec::new());
    let m = serde_json::to_vec(&manifest).unwrap();
    add_file(&mut b, "manifest.json", &m, 0o644, 0);
    add_file(&mut b, &config_name, &config, 0o644, 0);
    add_dir(&mut b, "abc/");
    add_file(&mut b, "abc/layer.tar", &layer, 0o644, 0);
    let archive = b.into_inner().unwrap();

    let dir = tempfile::tempdir().unwrap();
    let images_dir = dir.path().join("images");
    std::fs::create_dir_all(&images_dir).unwrap();
    std::fs::write(images_dir.join("hello.tar"), archive).unwrap();
    std::fs::write(images_dir.join("broken.tar"), b"not a tar at all").unwrap();
    let images = store(&dir.path().join("store"), RegistriesConfig::default());
    // The broken archive is skipped by import_dir, and its error is visible through import_archive.
    let mut refs = images.import_dir(&images_dir).await.unwrap();
    refs.sort();
    assert_eq!(
        refs,
        vec![
            "docker.io/library/hello:v1".to_string(),
            "example.com/hello:v1".to_string()
        ]
    );
    assert!(images
        .import_archive(&images_dir.join("broken.tar"))
        .await
        .is_err());

    let img = images
        .ensure("hello:v1", PullPolicy::Never, &[])
        .await
        .unwrap();
    assert_eq!(img.config.entrypoint, vec!["/bin/hello".to_string()]);
    assert_eq!(img.config.working_dir.as_deref(), Some("/work"));
    assert_eq!(img.config.user.as_deref(), Some("65534"));
    assert_eq!(img.image_id, sha256(&config));
    assert!(img.layers[0].join("bin/hello").is_file());
    let list = images.list();
    assert_eq!(list.len(), 1);
    assert_eq!(list[0].names.len(), 4, "{list:?}"); // two references, two repo@digest names
}

#[test]
fn registries_yaml_load() {
    let dir = tempfile::tempdir().unwrap();
    assert_eq!(
        RegistriesConfig::load(&dir.path().join("none.yaml")).unwrap(),
        RegistriesConfig::default()
    );
    let p = dir.path().join("registries.yaml");
    std::fs::write(
        &p,
        "mirrors:\n  docker.io:\n    endpoint: [\"http://127.0.0.1:5000\"]\nconfigs:\n  \"127.0.0.1:5000\":\n    auth:\n      username: u\n      password: p\n    tls:\n      insecure_skip_verify: true\n",
    )
    .unwrap();
    let cfg = RegistriesConfig::load(&p).unwrap();
    assert_eq!(
        cfg.mirrors["docker.io"].endpoint,
        vec!["http://127.0.0.1:5000".to_string()]
    );
    let auth = cfg.configs["127.0.0.1:5000"].auth.clone().unwrap();
    assert_eq!(auth.username.as_deref(), Some("u"));
    std::fs::write(&p, "mirrors: {docker.io: {endpoint: 5}}").unwrap();
    assert!(matches!(
        RegistriesConfig::load(&p),
        Err(ImageError::Config(_))
    ));
}

/// htpasswd auth (needs `htpasswd` from apache2-utils for the bcrypt file).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registry_with_basic_auth() {
    if !tools() {
        return;
    }
    if !have("htpasswd") {
        let _ = Command::new("apt-get")
            .args(["install", "-y", "-q", "apache2-utils"])
            .env("DEBIAN_FRONTEND", "noninteractive")
            .stdout(std::process::Stdio::null())
            .status();
        if !have("htpasswd") {
            eprintln!(
                "SKIPPED: registry_with_basic_auth needs htpasswd (Debian package apache2-utils)"
            );
            return;
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let htpasswd = dir.path().join("htpasswd");
    let st = Command::new("htpasswd")
        .args(["-Bbc", htpasswd.to_str().unwrap(), "alice", "s3cret"])
        .output()
        .unwrap();
    assert!(st.status.success());
    let reg = Registry::start(Some(&htpasswd));
    reg.push_busybox(Some("alice:s3cret"));
    let reference = format!("{}/library/busybox:1.35", reg.host());

    let images = store(&dir.path().join("store"), RegistriesConfig::default());
    let err = images
        .ensure(&reference, PullPolicy::IfNotPresent, &[])
        .await
        .unwrap_err();
    assert!(matches!(err, ImageError::Unauthorized(_)), "{err:?}");
    let wrong = [(
        reg.host(),
        Credentials {
            username: "alice".into(),
            password: "nope".into(),
        },
    )];
    let err = images
        .ensure(&reference, PullPolicy::IfNotPresent, &wrong)
        .await
        .unwrap_err();
    assert!(matches!(err, ImageError::Unauthorized(_)), "{err:?}");
    // Pod pull secrets: a wrong one, then the right one.
    let secrets = [
        wrong[0].clone(),
        (
            format!("http://{}", reg.host()),
            Credentials {
                username: "alice".into(),
                password: "s3cret".into(),
            },
        ),
    ];
    let img = images
        .ensure(&reference, PullPolicy::Always, &secrets)
        .await
        .unwrap();
    assert_busybox(&img);

    // registries.yaml auth, through a mirror.
    let cfg = RegistriesConfig::from_yaml(&format!(
        "mirrors:\n  docker.io:\n    endpoint: [\"http://{h}\"]\nconfigs:\n  \"{h}\":\n    auth:\n      username: alice\n      password: s3cret\n",
        h = reg.host()
    ))
    .unwrap();
    let images = store(&dir.path().join("store2"), cfg);
    let img = images
        .ensure("busybox:latest", PullPolicy::Always, &[])
        .await
        .unwrap();
    assert_busybox(&img);
}
