//! Mount primitives (blocking syscalls: callers run them off the async
//! threads) and `/proc/self/mountinfo`.

use std::io;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::mount::{MntFlags, MsFlags, mount, umount2};

/// A mount operation that failed.
#[derive(Debug, thiserror::Error)]
pub enum MountError {
    /// A mount(2)/umount(2) call failed.
    #[error("Cannot {what} {path}")]
    Sys {
        /// What was done.
        what: &'static str,
        /// The mount point.
        path: PathBuf,
        /// The errno.
        #[source]
        source: Errno,
    },
    /// A file operation around a mount failed.
    #[error("Cannot {what} {path}")]
    Io {
        /// What was done.
        what: &'static str,
        /// The path.
        path: PathBuf,
        /// The error.
        #[source]
        source: io::Error,
    },
    /// Mounts stay under a folder after unmounting them all.
    #[error("Still mounted under {dir} after unmounting: {left:?}")]
    StillMounted {
        /// The folder.
        dir: PathBuf,
        /// What is left.
        left: Vec<PathBuf>,
    },
}

fn sys(what: &'static str, path: &Path) -> impl FnOnce(Errno) -> MountError {
    let path = path.to_path_buf();
    move |source| MountError::Sys { what, path, source }
}

/// An io error around a mount.
pub fn io_err(what: &'static str, path: &Path) -> impl FnOnce(io::Error) -> MountError {
    let path = path.to_path_buf();
    move |source| MountError::Io { what, path, source }
}

const NONE: Option<&str> = None;

/// Bind-mounts `src` on `dst` (`recursive`: with its submounts).
pub fn bind(src: &Path, dst: &Path, recursive: bool) -> Result<(), MountError> {
    let mut flags = MsFlags::MS_BIND;
    if recursive {
        flags |= MsFlags::MS_REC;
    }
    mount(Some(src), dst, NONE, flags, NONE).map_err(sys("bind-mount onto", dst))
}

/// Makes the mount at `path` read-only (this mount only; its source stays).
pub fn remount_ro(path: &Path) -> Result<(), MountError> {
    let flags = MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY;
    mount(NONE, path, NONE, flags, NONE).map_err(sys("remount read-only", path))
}

/// Sets the propagation type of the mount at `path`.
pub fn propagation(path: &Path, kind: MsFlags) -> Result<(), MountError> {
    mount(NONE, path, NONE, kind, NONE).map_err(sys("change the propagation of", path))
}

/// Unmounts `path` once: a busy mount is detached (lazily unmounted); one
/// that is not mounted or gone is fine.
pub fn umount(path: &Path) -> Result<(), MountError> {
    match umount2(path, MntFlags::empty()) {
        Ok(()) | Err(Errno::EINVAL) | Err(Errno::ENOENT) => Ok(()),
        Err(Errno::EBUSY) => match umount2(path, MntFlags::MNT_DETACH) {
            Ok(()) | Err(Errno::EINVAL) | Err(Errno::ENOENT) => Ok(()),
            Err(e) => Err(sys("unmount", path)(e)),
        },
        Err(e) => Err(sys("unmount", path)(e)),
    }
}

/// Mount points at `dir` or below it, deepest first (a point mounted twice
/// is listed twice).
pub fn mounts_under(dir: &Path) -> Vec<PathBuf> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut v: Vec<PathBuf> = info
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(|m| PathBuf::from(unescape(m)))
        .filter(|m| m.starts_with(dir))
        .collect();
    // later mounts last in mountinfo: reverse keeps stacked ones in order
    v.reverse();
    v.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    v
}

/// Unmounts everything at or under `dir`, deepest first, until nothing is
/// left (bounded).
pub fn umount_all(dir: &Path) -> Result<(), MountError> {
    for _ in 0..16 {
        let left = mounts_under(dir);
        if left.is_empty() {
            return Ok(());
        }
        for m in &left {
            umount(m)?;
        }
    }
    let left = mounts_under(dir);
    if left.is_empty() {
        Ok(())
    } else {
        Err(MountError::StillMounted {
            dir: dir.to_path_buf(),
            left,
        })
    }
}

/// Whether something is mounted exactly at `path`.
pub fn is_mountpoint(path: &Path) -> bool {
    mounts_under(path).iter().any(|m| m == path)
}

/// Removes `dir` and everything in it, unless something is mounted in it
/// (a bind mount would let the removal reach host files).
pub fn remove_tree(dir: &Path) -> Result<(), MountError> {
    let left = mounts_under(dir);
    if !left.is_empty() {
        return Err(MountError::StillMounted {
            dir: dir.to_path_buf(),
            left,
        });
    }
    match std::fs::remove_dir_all(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io_err("remove", dir)(e)),
    }
}

/// Undoes mountinfo's octal escapes (`\040` for a space, ...).
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            out.push((b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0'));
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unescapes_mountinfo_paths() {
        assert_eq!(unescape("/a\\040b"), "/a b");
        assert_eq!(unescape("/plain"), "/plain");
        assert_eq!(unescape("/x\\01"), "/x\\01");
    }

    #[test]
    fn nothing_is_mounted_under_a_fresh_folder() {
        let d = tempfile::tempdir().unwrap();
        assert!(mounts_under(d.path()).is_empty());
        assert!(!is_mountpoint(d.path()));
        umount_all(d.path()).unwrap();
        std::fs::create_dir(d.path().join("x")).unwrap();
        remove_tree(&d.path().join("x")).unwrap();
        remove_tree(&d.path().join("gone")).unwrap();
    }
}
