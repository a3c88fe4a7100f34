//! The container test image: busybox-static from Debian in an OCI image layout
//! archive, built by `scripts/build-oci-image.sh` (`make oci-image`; `make test`
//! and `make bench` run it first). There is no registry here: tests import the
//! archive into their private containerd (`Containerd::import_test_image`).

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::repo;

/// The reference name the archive's index gives the image
/// (`org.opencontainers.image.ref.name`); `ctr image import` names it so.
pub const TEST_IMAGE: &str = "sandvm.test/busybox:latest";

/// What `/etc/sandvm-image` holds in the test image: a process that reads it
/// sees the image's root, not the host's or the guest's.
pub const TEST_IMAGE_MARKER: &str = "sandvm-test-image busybox";

/// The test image's uid and name for its non-root user.
pub const TEST_IMAGE_USER: (u32, &str) = (1000, "user");

/// The test image archive, built (or found up to date) by
/// `scripts/build-oci-image.sh`; the script takes a lock, so tests running at
/// once share one build. A failure says `make setup`.
pub fn test_image_archive() -> PathBuf {
    let script = repo().join("scripts/build-oci-image.sh");
    let out = Command::new("bash")
        .arg(&script)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", script.display()));
    assert!(
        out.status.success(),
        "{} failed ({}); run `make setup` (it installs busybox-static and apt access), then `make oci-image`:\n{}",
        script.display(),
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let archive = repo().join("build/oci/busybox.oci.tar");
    assert!(
        archive.exists(),
        "{} is missing after {}: run `make oci-image`",
        archive.display(),
        script.display()
    );
    archive
}

/// The name [`pause_image_archive`]'s index gives its image.
pub const PAUSE_IMAGE: &str = "sandvm.test/pause:latest";

/// The command of [`PAUSE_IMAGE`]: a pod's sandbox ("pause") container must
/// run until it is stopped, while the test image's `/bin/sh` ends at once
/// (a CRI sandbox container has no stdin), which would end the pod.
pub const PAUSE_COMMAND: &[&str] = &["sleep", "2147483647"];

/// An OCI archive in `dir` holding the test image's layer under another name,
/// [`PAUSE_IMAGE`], whose config runs [`PAUSE_COMMAND`]: a CRI plugin's
/// `sandbox_image` made from the test image (there is no registry here for
/// `registry.k8s.io/pause`). Built from [`test_image_archive`] with `tar`.
pub fn pause_image_archive(dir: &Path) -> PathBuf {
    let src = test_image_archive();
    let layout = dir.join("pause-oci");
    let _ = std::fs::remove_dir_all(&layout);
    std::fs::create_dir_all(&layout).expect("cannot create the pause image's folder");
    run_tar(
        Command::new("tar")
            .arg("-xf")
            .arg(&src)
            .arg("-C")
            .arg(&layout),
    );
    let index: Value = read_json(&layout.join("index.json"));
    let manifest_digest = index["manifests"][0]["digest"]
        .as_str()
        .expect("the test image's index names no manifest");
    let mut manifest: Value = read_json(&blob_path(&layout, manifest_digest));
    let config_digest = manifest["config"]["digest"]
        .as_str()
        .expect("the test image's manifest names no config");
    let mut config: Value = read_json(&blob_path(&layout, config_digest));
    config["config"]["Cmd"] = serde_json::json!(PAUSE_COMMAND);
    let (digest, size) = put_blob(&layout, &serde_json::to_vec(&config).unwrap_or_default());
    manifest["config"]["digest"] = digest.into();
    manifest["config"]["size"] = size.into();
    let (digest, size) = put_blob(&layout, &serde_json::to_vec(&manifest).unwrap_or_default());
    let mut index = index;
    index["manifests"][0]["digest"] = digest.into();
    index["manifests"][0]["size"] = size.into();
    index["manifests"][0]["annotations"]["org.opencontainers.image.ref.name"] = PAUSE_IMAGE.into();
    std::fs::write(
        layout.join("index.json"),
        serde_json::to_vec(&index).unwrap_or_default(),
    )
    .expect("cannot write the pause image's index");
    let archive = dir.join("pause.oci.tar");
    run_tar(
        Command::new("tar")
            .arg("-cf")
            .arg(&archive)
            .arg("-C")
            .arg(&layout)
            .args(["oci-layout", "index.json", "blobs"]),
    );
    archive
}

fn run_tar(cmd: &mut Command) {
    let out = cmd.output().expect("cannot run tar");
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn read_json(p: &Path) -> Value {
    let text = std::fs::read(p).unwrap_or_else(|e| panic!("cannot read {}: {e}", p.display()));
    serde_json::from_slice(&text).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// `blobs/sha256/<hex>` of `sha256:<hex>`.
fn blob_path(layout: &Path, digest: &str) -> PathBuf {
    let hex = digest.strip_prefix("sha256:").unwrap_or(digest);
    layout.join("blobs/sha256").join(hex)
}

/// Store `data` as a blob; its digest (`sha256:<hex>`) and size.
fn put_blob(layout: &Path, data: &[u8]) -> (String, u64) {
    let hex: String = Sha256::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let digest = format!("sha256:{hex}");
    std::fs::write(blob_path(layout, &digest), data).expect("cannot write a blob");
    (digest, data.len() as u64)
}
