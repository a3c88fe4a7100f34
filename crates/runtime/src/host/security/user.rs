//! Running QEMU as a configured uid, gid and supplementary groups
//! (sandvm's `qemu_uid`, `qemu_gid`, `qemu_groups`).
//!
//! The sandbox folder and the files the runtime creates in it for QEMU
//! (`qmp.sock`, `qemu.log`) are given to that identity with mode 0700, so
//! QEMU can create its console socket, console log and pidfile there and no
//! other user can reach any of them. The switch itself happens in the child
//! between fork and exec ([`switch_identity`]): groups, then gid, then uid.

use super::SecurityError;
use crate::config::QemuUser;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

/// Open `dir` to `user` without giving it away, and give it the named files.
///
/// The folder stays owned by the runtime; its group becomes the user's gid and
/// its mode `01770`. QEMU can create its own files there (console socket and
/// log, pidfile) through the group, but the sticky bit keeps it from
/// deleting, renaming or replacing files it does not own, such as
/// `state.json`, which holds the pid `stop` signals. Files that do not exist
/// (yet) are skipped; QEMU creates those itself.
pub fn prepare_dir(dir: &Path, files: &[&str], user: &QemuUser) -> Result<(), SecurityError> {
    let failed = |p: &Path, e: std::io::Error| SecurityError::Chown {
        path: p.display().to_string(),
        uid: user.uid,
        gid: user.gid,
        reason: e.to_string(),
    };
    std::os::unix::fs::chown(dir, None, Some(user.gid)).map_err(|e| failed(dir, e))?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(DIR_MODE))
        .map_err(|e| failed(dir, e))?;
    for f in files {
        let p = dir.join(f);
        match std::os::unix::fs::chown(&p, Some(user.uid), Some(user.gid)) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(failed(&p, e)),
        }
    }
    Ok(())
}

/// The sandbox folder's mode when QEMU runs as its own user: sticky, and
/// read, write and search for the owner (the runtime) and QEMU's group.
pub const DIR_MODE: u32 = 0o1770;

/// The ids as the C library takes them, computed before fork so the child
/// allocates nothing.
#[derive(Debug, Clone)]
pub struct Identity {
    uid: libc::uid_t,
    gid: libc::gid_t,
    groups: Vec<libc::gid_t>,
}

impl From<&QemuUser> for Identity {
    fn from(u: &QemuUser) -> Identity {
        Identity {
            uid: u.uid,
            gid: u.gid,
            groups: u.groups.clone(),
        }
    }
}

/// In the child before exec: set the supplementary groups, the gid, then the
/// uid (in that order: after setuid the others are no longer allowed).
/// Async-signal-safe: three syscalls on data prepared before fork.
pub fn switch_identity(id: &Identity) -> std::io::Result<()> {
    // SAFETY: setgroups reads `groups.len()` gids from a live slice; setgid
    // and setuid take plain integers. All three are async-signal-safe.
    #[allow(unsafe_code)]
    unsafe {
        if libc::setgroups(id.groups.len(), id.groups.as_ptr()) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        if libc::setgid(id.gid) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        if libc::setuid(id.uid) != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn prepare_dir_opens_the_folder_to_the_group_and_hands_over_files() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("sb");
        std::fs::create_dir(&dir).unwrap();
        std::fs::write(dir.join("qemu.log"), b"").unwrap();
        // Our own ids always work, root or not.
        let me = QemuUser {
            uid: nix::unistd::getuid().as_raw(),
            gid: nix::unistd::getgid().as_raw(),
            groups: vec![],
        };
        prepare_dir(&dir, &["qemu.log", "absent.sock"], &me).unwrap();
        let m = std::fs::metadata(&dir).unwrap();
        assert_eq!(m.mode() & 0o7777, DIR_MODE);
        assert_eq!((m.uid(), m.gid()), (me.uid, me.gid));
        if nix::unistd::getuid().is_root() {
            let nobody = QemuUser {
                uid: 65534,
                gid: 65534,
                groups: vec![],
            };
            prepare_dir(&dir, &["qemu.log"], &nobody).unwrap();
            let f = std::fs::metadata(dir.join("qemu.log")).unwrap();
            assert_eq!((f.uid(), f.gid()), (65534, 65534));
            // The folder itself stays ours; only its group is QEMU's.
            let m = std::fs::metadata(&dir).unwrap();
            assert_eq!((m.uid(), m.gid()), (me.uid, 65534));
        }
        let e = prepare_dir(&tmp.path().join("missing"), &[], &me).unwrap_err();
        assert!(e.to_string().contains("missing"), "{e}");
    }
}
