//! The sandbox's shared folder: what virtiofsd exports to the guest as
//! `kataShared`, laid out as Kata lays it out.
//!
//! ```text
//! <state root>/.shim/<sandbox id>/
//!   mounts/    the shim mounts here: <cid>/rootfs (the container's root),
//!              <cid>/binds/<n>-<name> (the spec's bind mounts). A bind mount
//!              of itself, private, then shared: its own peer group.
//!   shared/    a bind mount of mounts/, made a slave of it, then read-only.
//!              virtiofsd's --shared-dir. Every mount made in mounts/ appears
//!              here too, and in virtiofsd's mount namespace (its copy of
//!              shared/ is a slave of the same group), even after virtiofsd
//!              started; each keeps its own flags (a root stays writable).
//!   staging/   read-only bind mounts are made read-only here, privately,
//!              before they are bound into mounts/ (a remount does not
//!              propagate, a new mount does).
//! ```
//!
//! The guest mounts the tag at [`GUEST_SHARED_DIR`], so container `<cid>`'s
//! root is `<GUEST_SHARED_DIR>/<cid>/rootfs` there. The folder lives outside
//! the runtime's sandbox folder, whose removal must never reach a mount.
//! Everything here is blocking: callers use [`blocking`].

use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use nix::mount::MsFlags;
use runtime::StateRoot;

use crate::mounts::{self, MountError, io_err};

pub use sandvm_agent_protocol::GUEST_SHARED_DIR;

/// The folder under the state root that holds the shim's share folders
/// (a leading dot: never taken for a sandbox id).
pub const SHIM_DIR: &str = ".shim";

/// Runs blocking mount work off the async threads.
pub async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, MountError> + Send + 'static,
) -> Result<T, MountError> {
    tokio::task::spawn_blocking(f).await.unwrap_or_else(|e| {
        Err(MountError::Io {
            what: "run a mount task",
            path: PathBuf::new(),
            source: std::io::Error::other(e.to_string()),
        })
    })
}

/// One sandbox's share folder.
#[derive(Debug, Clone)]
pub struct Share {
    root: PathBuf,
}

fn mkdir(p: &Path) -> Result<(), MountError> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(p)
        .map_err(io_err("create", p))
}

impl Share {
    /// Where sandbox `sid`'s share folder is under `root`.
    pub fn path_for(root: &StateRoot, sid: &str) -> PathBuf {
        root.path().join(SHIM_DIR).join(sid)
    }

    /// The share folder at `path` (made or not).
    pub fn at(path: PathBuf) -> Share {
        Share { root: path }
    }

    /// Makes the folders and the mounts (see the module's documentation).
    /// A folder left by an earlier shim of the same sandbox is cleared
    /// first. On failure nothing is left mounted.
    pub fn create(path: PathBuf) -> Result<Share, MountError> {
        let share = Share { root: path };
        if share.root.exists() {
            tracing::warn!(dir = %share.root.display(), "stale share folder; clearing it");
            share.destroy()?;
        }
        share.setup().inspect_err(|_| {
            if let Err(e) = share.destroy() {
                tracing::warn!(error = %e, "cannot clear a share folder that failed to set up");
            }
        })?;
        Ok(share)
    }

    fn setup(&self) -> Result<(), MountError> {
        // `.shim` may be removed by another shim at any time (when it is
        // empty): retry the short path of creating it and ours.
        let mut tries = 0;
        loop {
            match mkdir(&self.root) {
                Err(MountError::Io { source, .. })
                    if source.kind() == std::io::ErrorKind::NotFound && tries < 5 =>
                {
                    tries += 1;
                }
                r => break r?,
            }
        }
        let (m, s) = (self.mounts(), self.shared());
        for d in [&m, &s, &self.staging()] {
            mkdir(d)?;
        }
        mounts::bind(&m, &m, false)?;
        mounts::propagation(&m, MsFlags::MS_PRIVATE)?;
        mounts::propagation(&m, MsFlags::MS_SHARED)?;
        mounts::bind(&m, &s, false)?;
        mounts::propagation(&s, MsFlags::MS_SLAVE)?;
        mounts::remount_ro(&s)
    }

    /// The share folder.
    pub fn path(&self) -> &Path {
        &self.root
    }

    /// What virtiofsd exports (`CreateOptions::share`).
    pub fn shared(&self) -> PathBuf {
        self.root.join("shared")
    }

    fn mounts(&self) -> PathBuf {
        self.root.join("mounts")
    }

    fn staging(&self) -> PathBuf {
        self.root.join("staging")
    }

    /// Container `gcid`'s folder in `mounts/`.
    fn container_dir(&self, gcid: &str) -> PathBuf {
        self.mounts().join(gcid)
    }

    /// Makes `src` (a folder) visible to the guest as container `gcid`'s root.
    pub fn add_rootfs(&self, gcid: &str, src: &Path, readonly: bool) -> Result<(), MountError> {
        let dst = self.container_dir(gcid).join("rootfs");
        mkdir(&dst)?;
        self.bind_into(src, &dst, false, readonly, "rootfs")
    }

    /// Makes `src` (a file or a folder) visible to the guest for container
    /// `gcid`'s `n`th bind mount; returns its source as the guest's spec
    /// gives it (relative to the shared folder).
    pub fn add_bind(
        &self,
        gcid: &str,
        n: usize,
        src: &Path,
        recursive: bool,
        readonly: bool,
    ) -> Result<String, MountError> {
        let name = src
            .file_name()
            .map(|s| {
                s.to_string_lossy().replace(
                    |c: char| !c.is_ascii_alphanumeric() && c != '.' && c != '-',
                    "_",
                )
            })
            .unwrap_or_else(|| "root".into());
        let rel = format!("{gcid}/binds/{n}-{name}");
        let dst = self.mounts().join(&rel);
        let meta = std::fs::metadata(src).map_err(io_err("read", src))?;
        if meta.is_dir() {
            mkdir(&dst)?;
        } else {
            if let Some(parent) = dst.parent() {
                mkdir(parent)?;
            }
            std::fs::File::create(&dst).map_err(io_err("create", &dst))?;
        }
        self.bind_into(src, &dst, recursive, readonly, &format!("{gcid}-{n}"))?;
        Ok(rel)
    }

    /// Binds `src` onto `dst` in `mounts/`; a read-only mount is made
    /// read-only in `staging/` first, so that every copy of it is.
    fn bind_into(
        &self,
        src: &Path,
        dst: &Path,
        recursive: bool,
        readonly: bool,
        tag: &str,
    ) -> Result<(), MountError> {
        if !readonly {
            return mounts::bind(src, dst, recursive);
        }
        let stage = self.staging().join(tag);
        if src.is_dir() {
            mkdir(&stage)?;
        } else {
            std::fs::File::create(&stage).map_err(io_err("create", &stage))?;
        }
        let r = (|| {
            mounts::bind(src, &stage, recursive)?;
            mounts::remount_ro(&stage)?;
            mounts::bind(&stage, dst, recursive)
        })();
        mounts::umount_all(&stage)?;
        let _ = std::fs::remove_dir(&stage).or_else(|_| std::fs::remove_file(&stage));
        r
    }

    /// Unmounts and removes container `gcid`'s folder.
    pub fn remove_container(&self, gcid: &str) -> Result<(), MountError> {
        let dir = self.container_dir(gcid);
        mounts::umount_all(&dir)?;
        mounts::remove_tree(&dir)
    }

    /// Unmounts everything in the share folder and removes it (and `.shim`
    /// when that is empty). Idempotent.
    pub fn destroy(&self) -> Result<(), MountError> {
        mounts::umount_all(&self.root)?;
        mounts::remove_tree(&self.root)?;
        if let Some(parent) = self.root.parent() {
            // only when empty; another shim may be using it
            let _ = std::fs::remove_dir(parent);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mounted_ro(p: &Path) -> bool {
        nix::sys::statvfs::statvfs(p)
            .map(|s| s.flags().contains(nix::sys::statvfs::FsFlags::ST_RDONLY))
            .unwrap_or(false)
    }

    /// Needs root (mounts), as the shim does; `make test` runs as root.
    #[test]
    fn mounts_made_in_mounts_show_in_shared_with_their_own_flags() {
        assert!(
            nix::unistd::geteuid().is_root(),
            "this test mounts: run it as root (as make test does)"
        );
        let d = tempfile::tempdir().unwrap();
        let src = d.path().join("src");
        std::fs::create_dir(&src).unwrap();
        std::fs::write(src.join("marker"), "root").unwrap();
        let file = d.path().join("hosts");
        std::fs::write(&file, "127.0.0.1 x").unwrap();
        let share = Share::create(d.path().join(".shim/sb1")).unwrap();
        let shared = share.shared();
        assert!(mounted_ro(&shared), "shared/ is read-only at its top");
        share.add_rootfs("c1", &src, false).unwrap();
        let seen = shared.join("c1/rootfs");
        assert_eq!(
            std::fs::read_to_string(seen.join("marker")).unwrap(),
            "root"
        );
        assert!(!mounted_ro(&seen), "the root keeps its own rw flag");
        std::fs::write(seen.join("written"), "x").unwrap();
        assert!(src.join("written").exists());
        let rel = share.add_bind("c1", 3, &file, false, true).unwrap();
        assert_eq!(rel, "c1/binds/3-hosts");
        assert!(mounted_ro(&shared.join(&rel)), "a ro bind is ro in shared/");
        share.remove_container("c1").unwrap();
        assert!(!shared.join("c1").exists());
        assert!(src.join("marker").exists(), "unmounting kept the source");
        share.destroy().unwrap();
        assert!(mounts::mounts_under(d.path()).is_empty());
        assert!(!d.path().join(".shim").exists());
    }
}
