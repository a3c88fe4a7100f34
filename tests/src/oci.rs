//! The container test image: busybox-static from Debian in an OCI image layout
//! archive, built by `scripts/build-oci-image.sh` (`make oci-image`; `make test`
//! and `make bench` run it first). There is no registry here: tests import the
//! archive into their private containerd (`Containerd::import_test_image`).

use std::path::PathBuf;
use std::process::Command;

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
