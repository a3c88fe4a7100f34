//! The container's root: mounts (resolved inside the root with openat2
//! RESOLVE_IN_ROOT, so a symlink in the image cannot send a mount outside),
//! /dev, pivot_root (or MS_MOVE + chroot on an initramfs guest), masked and
//! read-only paths, hostname.

use std::ffi::CString;
use std::fs;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::symlink;
use std::path::{Component, Path, PathBuf};

use nix::mount::{MntFlags, MsFlags, mount, umount2};
use nix::sys::stat::{Mode, SFlag, makedev, mknod, umask};
use nix::unistd::{Gid, Uid, chdir, chown, chroot, pivot_root, sethostname};

use crate::config::{ContainerConfig, DeviceConfig, MountConfig};

/// Standard device nodes of a tmpfs /dev: (name, major, minor).
const STD_DEVICES: [(&str, u64, u64); 6] = [
    ("null", 1, 3),
    ("zero", 1, 5),
    ("full", 1, 7),
    ("random", 1, 8),
    ("urandom", 1, 9),
    ("tty", 5, 0),
];

/// Sets up the root in the (new) mount namespace and changes into it;
/// says whether /dev is the container's own tmpfs.
pub fn setup(c: &ContainerConfig) -> Result<bool, String> {
    let none: Option<&str> = None;
    mount(none, "/", none, MsFlags::MS_REC | MsFlags::MS_PRIVATE, none)
        .map_err(|e| format!("making / private: {e}"))?;
    let root = &c.rootfs;
    mount(
        Some(root),
        root,
        none,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        none,
    )
    .map_err(|e| format!("binding the root {} onto itself: {e}", root.display()))?;
    let root_fd: OwnedFd = fs::File::open(root)
        .map_err(|e| format!("opening the root {}: {e}", root.display()))?
        .into();
    let mut dev_tmpfs = false;
    for m in &c.mounts {
        do_mount(&root_fd, m)
            .map_err(|e| format!("mount {} on {}: {e}", m.fstype, m.destination.display()))?;
        if m.destination == Path::new("/dev") && m.fstype == "tmpfs" {
            dev_tmpfs = true;
        }
    }
    change_root(root)?;
    if dev_tmpfs {
        populate_dev(&c.devices).map_err(|e| format!("populating /dev: {e}"))?;
    }
    for p in &c.masked_paths {
        mask(p).map_err(|e| format!("masking {}: {e}", p.display()))?;
    }
    for p in &c.readonly_paths {
        readonly(p).map_err(|e| format!("making {} read-only: {e}", p.display()))?;
    }
    if c.readonly_root {
        remount_ro(Path::new("/")).map_err(|e| format!("making the root read-only: {e}"))?;
    }
    if let Some(h) = &c.hostname {
        sethostname(h).map_err(|e| format!("sethostname {h:?}: {e}"))?;
    }
    Ok(dev_tmpfs)
}

fn fd_path(fd: &OwnedFd) -> PathBuf {
    PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd()))
}

fn do_mount(root_fd: &OwnedFd, m: &MountConfig) -> Result<(), String> {
    let none: Option<&str> = None;
    let is_dir = m.bind == 0
        || fs::metadata(&m.source)
            .map(|md| md.is_dir())
            .unwrap_or(true);
    let target = resolve(root_fd, &m.destination, Some(is_dir))
        .map_err(|e| format!("resolving the target: {e}"))?;
    let target = fd_path(&target);
    let flags = MsFlags::from_bits_truncate(m.flags);
    if m.bind > 0 {
        let rec = if m.bind == 2 {
            MsFlags::MS_REC
        } else {
            MsFlags::empty()
        };
        mount(Some(&m.source), &target, none, MsFlags::MS_BIND | rec, none)
            .map_err(|e| e.to_string())?;
        if !flags.is_empty() {
            mount(
                none,
                &target,
                none,
                MsFlags::MS_BIND | MsFlags::MS_REMOUNT | rec | flags,
                none,
            )
            .map_err(|e| format!("remount with {flags:?}: {e}"))?;
        }
    } else {
        let fstype = if m.fstype == "cgroup" {
            "cgroup2"
        } else {
            m.fstype.as_str()
        };
        let data = (!m.data.is_empty()).then_some(m.data.as_str());
        mount(Some(&m.source), &target, Some(fstype), flags, data).map_err(|e| e.to_string())?;
    }
    if m.propagation != 0 {
        mount(
            none,
            &target,
            none,
            MsFlags::from_bits_truncate(m.propagation),
            none,
        )
        .map_err(|e| format!("propagation: {e}"))?;
    }
    Ok(())
}

/// Opens `path` (absolute, inside the container) as an O_PATH fd, resolving
/// every component inside the root. With `create = Some(is_dir)` missing
/// components are made (directories, and the last one as a directory or an
/// empty file).
fn resolve(root_fd: &OwnedFd, path: &Path, create: Option<bool>) -> io::Result<OwnedFd> {
    let comps: Vec<&std::ffi::OsStr> = path
        .components()
        .filter_map(|c| {
            if let Component::Normal(n) = c {
                Some(n)
            } else {
                None
            }
        })
        .collect();
    let mut prefix = PathBuf::from(".");
    let mut parent = openat2(root_fd, &prefix)?;
    for (i, c) in comps.iter().enumerate() {
        prefix.push(c);
        match openat2(root_fd, &prefix) {
            Ok(fd) => parent = fd,
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) && create.is_some() => {
                let last = i + 1 == comps.len();
                let name = CString::new(c.as_encoded_bytes()).map_err(io::Error::other)?;
                make_entry(&parent, &name, !last || create == Some(true))?;
                parent = openat2(root_fd, &prefix)?;
            }
            Err(e) => return Err(e),
        }
    }
    Ok(parent)
}

#[allow(unsafe_code)]
fn make_entry(dir: &OwnedFd, name: &CString, is_dir: bool) -> io::Result<()> {
    // SAFETY: plain syscalls on a valid (O_PATH) dir fd and a NUL-terminated name.
    let rc = unsafe {
        if is_dir {
            libc::mkdirat(dir.as_raw_fd(), name.as_ptr(), 0o755)
        } else {
            let fd = libc::openat(
                dir.as_raw_fd(),
                name.as_ptr(),
                libc::O_CREAT | libc::O_EXCL | libc::O_WRONLY | libc::O_CLOEXEC,
                0o644,
            );
            if fd >= 0 { libc::close(fd) } else { fd }
        }
    };
    let err = io::Error::last_os_error();
    if rc < 0 && err.raw_os_error() != Some(libc::EEXIST) {
        Err(err)
    } else {
        Ok(())
    }
}

/// `struct open_how` of openat2(2).
#[repr(C)]
struct OpenHow {
    flags: u64,
    mode: u64,
    resolve: u64,
}

#[allow(unsafe_code)]
fn openat2(root_fd: &OwnedFd, rel: &Path) -> io::Result<OwnedFd> {
    let path = CString::new(rel.as_os_str().as_encoded_bytes()).map_err(io::Error::other)?;
    let how = OpenHow {
        flags: (libc::O_PATH | libc::O_CLOEXEC) as u64,
        mode: 0,
        resolve: libc::RESOLVE_IN_ROOT | libc::RESOLVE_NO_MAGICLINKS,
    };
    // SAFETY: openat2 with a valid dirfd, a NUL-terminated path and an
    // open_how of the size we pass; the result is a new fd we own.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_openat2,
            root_fd.as_raw_fd(),
            path.as_ptr(),
            &how as *const OpenHow,
            std::mem::size_of::<OpenHow>(),
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel just returned this fd to us.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// pivot_root into `root`; on an initramfs guest (whose root cannot be
/// pivoted: EINVAL) move the root onto / and chroot, as runc's no-pivot mode.
fn change_root(root: &Path) -> Result<(), String> {
    chdir(root).map_err(|e| format!("chdir {}: {e}", root.display()))?;
    match pivot_root(".", ".") {
        Ok(()) => {
            umount2(".", MntFlags::MNT_DETACH)
                .map_err(|e| format!("detaching the old root: {e}"))?;
        }
        Err(nix::errno::Errno::EINVAL) => {
            let none: Option<&str> = None;
            mount(Some("."), "/", none, MsFlags::MS_MOVE, none)
                .map_err(|e| format!("moving the root onto /: {e}"))?;
            chroot(".").map_err(|e| format!("chroot: {e}"))?;
        }
        Err(e) => return Err(format!("pivot_root: {e}")),
    }
    chdir("/").map_err(|e| format!("chdir /: {e}"))
}

fn populate_dev(devices: &[DeviceConfig]) -> io::Result<()> {
    let old = umask(Mode::empty());
    let mut all: Vec<DeviceConfig> = STD_DEVICES
        .iter()
        .map(|&(n, major, minor)| DeviceConfig {
            path: Path::new("/dev").join(n),
            kind: 'c',
            major,
            minor,
            mode: 0o666,
            uid: 0,
            gid: 0,
        })
        .collect();
    all.extend(devices.iter().cloned());
    for d in &all {
        if let Some(p) = d.path.parent() {
            fs::create_dir_all(p)?;
        }
        let kind = match d.kind {
            'b' => SFlag::S_IFBLK,
            'p' => SFlag::S_IFIFO,
            _ => SFlag::S_IFCHR,
        };
        let _ = fs::remove_file(&d.path);
        mknod(
            &d.path,
            kind,
            Mode::from_bits_truncate(d.mode),
            makedev(d.major, d.minor),
        )?;
        chown(
            &d.path,
            Some(Uid::from_raw(d.uid)),
            Some(Gid::from_raw(d.gid)),
        )?;
    }
    for (link, to) in [
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
        ("ptmx", "pts/ptmx"),
    ] {
        let l = Path::new("/dev").join(link);
        if fs::symlink_metadata(&l).is_err() {
            symlink(to, &l)?;
        }
    }
    umask(old);
    Ok(())
}

fn mask(p: &Path) -> Result<(), String> {
    let none: Option<&str> = None;
    match fs::metadata(p) {
        Err(_) => Ok(()),
        Ok(md) if md.is_dir() => mount(Some("tmpfs"), p, Some("tmpfs"), MsFlags::MS_RDONLY, none)
            .map_err(|e| e.to_string()),
        Ok(_) => {
            mount(Some("/dev/null"), p, none, MsFlags::MS_BIND, none).map_err(|e| e.to_string())
        }
    }
}

fn readonly(p: &Path) -> Result<(), String> {
    if fs::symlink_metadata(p).is_err() {
        return Ok(());
    }
    let none: Option<&str> = None;
    mount(Some(p), p, none, MsFlags::MS_BIND | MsFlags::MS_REC, none).map_err(|e| e.to_string())?;
    remount_ro(p)
}

fn remount_ro(p: &Path) -> Result<(), String> {
    let none: Option<&str> = None;
    let base = MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY;
    if mount(none, p, none, base, none).is_ok() {
        return Ok(());
    }
    // a locked mount keeps its nosuid/nodev/noexec: pass them again
    let st = nix::sys::statvfs::statvfs(p).map_err(|e| e.to_string())?;
    let mut flags = base;
    for (f, m) in [
        (nix::sys::statvfs::FsFlags::ST_NOSUID, MsFlags::MS_NOSUID),
        (nix::sys::statvfs::FsFlags::ST_NODEV, MsFlags::MS_NODEV),
        (nix::sys::statvfs::FsFlags::ST_NOEXEC, MsFlags::MS_NOEXEC),
    ] {
        if st.flags().contains(f) {
            flags |= m;
        }
    }
    mount(none, p, none, flags, none).map_err(|e| e.to_string())
}
