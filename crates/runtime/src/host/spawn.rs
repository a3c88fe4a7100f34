//! Spawning a detached child with `posix_spawn` (glibc: `clone(CLONE_VM |
//! CLONE_VFORK)`), so the parent's page tables are never copied.
//!
//! `std::process::Command` with a `pre_exec` closure must `fork`; on this
//! project's hosts (a VM whose page-table updates trap to its hypervisor) a
//! fork of the runtime costs milliseconds on the launch path. Everything a
//! detached QEMU or daemon needs but a configured identity can be said to
//! `posix_spawn` instead: a new session (`POSIX_SPAWN_SETSID`), stdin from
//! `/dev/null`, stdout and stderr onto a log, the passed fds onto 3, 4, ... in
//! order, every other fd closed (`posix_spawn_file_actions_addclosefrom_np`,
//! glibc 2.34), SIGPIPE back to its default (Rust ignores it) and an empty
//! signal mask. A child that must change uid/gid still goes through `fork`
//! (the launch module's `pre_exec` path).

use std::ffi::{CString, c_char, c_int};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// The first fd a passed fd lands on in the child.
pub const FIRST_PASSED_FD: RawFd = 3;

/// Most fds a child can be passed.
pub const MAX_PASSED_FDS: usize = 32;

#[allow(unsafe_code)]
unsafe extern "C" {
    /// The process's environment, passed on unchanged (as `Command` does).
    static environ: *const *const c_char;
}

/// Spawn `bin args` in its own session, stdin from `/dev/null`, stdout and
/// stderr onto `log` (an open file), `fds` on 3, 4, ... and no other fd.
/// Returns the pid. An exec failure (missing binary, no permission) is this
/// call's error, as glibc reports it from the child.
pub fn spawn_detached(
    bin: &Path,
    args: &[String],
    log: &OwnedFd,
    fds: &[RawFd],
) -> io::Result<i32> {
    if fds.len() > MAX_PASSED_FDS {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("at most {MAX_PASSED_FDS} fds can be passed"),
        ));
    }
    let argv = c_strings(bin, args)?;
    let mut argv_ptrs: Vec<*mut c_char> = argv.iter().map(|s| s.as_ptr().cast_mut()).collect();
    argv_ptrs.push(std::ptr::null_mut());
    // Copies of the passed fds above every target number (close-on-exec), so
    // that moving one onto its target can never clobber another.
    let high = fds
        .iter()
        .map(|fd| dup_high(*fd))
        .collect::<io::Result<Vec<_>>>()?;
    let mut actions = FileActions::new()?;
    actions.open_null(0)?;
    actions.dup2(log.as_raw_fd(), 1)?;
    actions.dup2(log.as_raw_fd(), 2)?;
    for (i, fd) in high.iter().enumerate() {
        actions.dup2(fd.as_raw_fd(), FIRST_PASSED_FD + i as RawFd)?;
    }
    actions.close_from(FIRST_PASSED_FD + fds.len() as RawFd)?;
    let attr = Attr::detached()?;
    let mut pid: libc::pid_t = 0;
    // SAFETY: every pointer is live for the call: the path and argv strings
    // (NUL-terminated, argv NULL-terminated), the initialised file actions
    // and attributes, and the process's environment.
    #[allow(unsafe_code)]
    let rc = unsafe {
        libc::posix_spawn(
            &mut pid,
            argv[0].as_ptr(),
            &actions.0,
            &attr.0,
            argv_ptrs.as_ptr(),
            environ.cast(),
        )
    };
    drop(high);
    match rc {
        0 => Ok(pid),
        e => Err(io::Error::from_raw_os_error(e)),
    }
}

/// The binary's path then the arguments, as C strings (argv[0] is the path).
fn c_strings(bin: &Path, args: &[String]) -> io::Result<Vec<CString>> {
    let nul =
        |what: &str| io::Error::new(io::ErrorKind::InvalidInput, format!("NUL byte in {what}"));
    let mut out =
        vec![CString::new(bin.as_os_str().as_bytes()).map_err(|_| nul("the binary's path"))?];
    for a in args {
        out.push(CString::new(a.as_bytes()).map_err(|_| nul("an argument"))?);
    }
    Ok(out)
}

/// A close-on-exec copy of `fd` numbered above every target of [`spawn_detached`].
fn dup_high(fd: RawFd) -> io::Result<OwnedFd> {
    let min = FIRST_PASSED_FD + MAX_PASSED_FDS as RawFd;
    // SAFETY: fcntl(F_DUPFD_CLOEXEC) on a caller's fd returns a new fd or -1.
    #[allow(unsafe_code)]
    let new = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, min) };
    if new < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `new` is a fresh fd this function owns.
    #[allow(unsafe_code)]
    Ok(unsafe { OwnedFd::from_raw_fd(new) })
}

/// Turn a posix_spawn* return code into a result.
fn check(rc: c_int) -> io::Result<()> {
    match rc {
        0 => Ok(()),
        e => Err(io::Error::from_raw_os_error(e)),
    }
}

/// `posix_spawn_file_actions_t`, destroyed on drop.
struct FileActions(libc::posix_spawn_file_actions_t);

#[allow(unsafe_code)]
impl FileActions {
    fn new() -> io::Result<Self> {
        // SAFETY: an all-zero posix_spawn_file_actions_t is a valid value
        // (plain integers and a null pointer), filled by init below.
        let mut a: libc::posix_spawn_file_actions_t = unsafe { std::mem::zeroed() };
        // SAFETY: init on a live struct.
        check(unsafe { libc::posix_spawn_file_actions_init(&mut a) })?;
        Ok(FileActions(a))
    }

    fn open_null(&mut self, fd: RawFd) -> io::Result<()> {
        // SAFETY: an initialised struct and a static NUL-terminated path.
        check(unsafe {
            libc::posix_spawn_file_actions_addopen(
                &mut self.0,
                fd,
                c"/dev/null".as_ptr(),
                libc::O_RDONLY,
                0,
            )
        })
    }

    fn dup2(&mut self, from: RawFd, to: RawFd) -> io::Result<()> {
        // SAFETY: an initialised struct; the fds are checked by the child's dup2.
        check(unsafe { libc::posix_spawn_file_actions_adddup2(&mut self.0, from, to) })
    }

    fn close_from(&mut self, from: RawFd) -> io::Result<()> {
        // SAFETY: an initialised struct.
        check(unsafe { libc::posix_spawn_file_actions_addclosefrom_np(&mut self.0, from) })
    }
}

impl Drop for FileActions {
    fn drop(&mut self) {
        // SAFETY: initialised in `new`, destroyed once.
        #[allow(unsafe_code)]
        unsafe {
            libc::posix_spawn_file_actions_destroy(&mut self.0);
        }
    }
}

/// `posix_spawnattr_t`, destroyed on drop.
struct Attr(libc::posix_spawnattr_t);

#[allow(unsafe_code)]
impl Attr {
    /// A new session, an empty signal mask, SIGPIPE at its default.
    fn detached() -> io::Result<Self> {
        // SAFETY: init fills the zeroed struct; the sigsets are initialised by
        // sigemptyset before use; every call gets the live struct.
        unsafe {
            let mut a: libc::posix_spawnattr_t = std::mem::zeroed();
            check(libc::posix_spawnattr_init(&mut a))?;
            let mut attr = Attr(a);
            let mut empty: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut empty);
            check(libc::posix_spawnattr_setsigmask(&mut attr.0, &empty))?;
            let mut pipe: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut pipe);
            libc::sigaddset(&mut pipe, libc::SIGPIPE);
            check(libc::posix_spawnattr_setsigdefault(&mut attr.0, &pipe))?;
            let flags = libc::POSIX_SPAWN_SETSID
                | libc::POSIX_SPAWN_SETSIGMASK as libc::c_short
                | libc::POSIX_SPAWN_SETSIGDEF as libc::c_short;
            check(libc::posix_spawnattr_setflags(&mut attr.0, flags))?;
            Ok(attr)
        }
    }
}

impl Drop for Attr {
    fn drop(&mut self) {
        // SAFETY: initialised in `detached`, destroyed once.
        #[allow(unsafe_code)]
        unsafe {
            libc::posix_spawnattr_destroy(&mut self.0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use std::os::unix::net::UnixListener;

    fn log_file(dir: &Path) -> (OwnedFd, std::path::PathBuf) {
        let p = dir.join("log");
        let f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&p)
            .unwrap();
        (OwnedFd::from(f), p)
    }

    fn wait(pid: i32) -> i32 {
        let mut status = 0;
        // SAFETY: waiting for our own child.
        #[allow(unsafe_code)]
        let r = unsafe { libc::waitpid(pid, &mut status, 0) };
        assert_eq!(r, pid);
        libc::WEXITSTATUS(status)
    }

    #[test]
    fn child_gets_its_session_stdio_and_exactly_the_passed_fds() {
        let dir = tempfile::tempdir().unwrap();
        let (log, path) = log_file(dir.path());
        let l1 = UnixListener::bind(dir.path().join("a.sock")).unwrap();
        let l2 = UnixListener::bind(dir.path().join("b.sock")).unwrap();
        // A descriptor without close-on-exec must not leak into the child either.
        let leak = std::fs::File::open("/dev/null").unwrap();
        let leak_fd = OwnedFd::from(leak);
        // SAFETY: clears FD_CLOEXEC on an fd this test owns.
        #[allow(unsafe_code)]
        unsafe {
            libc::fcntl(leak_fd.as_raw_fd(), libc::F_SETFD, 0)
        };
        let script = "echo sid=$(cut -d' ' -f6 /proc/self/stat) pid=$$; \
                      ls /proc/self/fd | sort -n | tr '\\n' ' '; echo; \
                      readlink /proc/self/fd/3 /proc/self/fd/4; \
                      read x; echo stdin-rc=$?; \
                      grep SigBlk /proc/self/status; exit 7";
        let args = vec!["-c".to_string(), script.to_string()];
        let pid = spawn_detached(
            Path::new("/bin/sh"),
            &args,
            &log,
            &[l1.as_raw_fd(), l2.as_raw_fd()],
        )
        .unwrap();
        assert_eq!(wait(pid), 7);
        let mut out = String::new();
        std::fs::File::open(&path)
            .unwrap()
            .read_to_string(&mut out)
            .unwrap();
        assert!(out.contains(&format!("sid={pid} pid={pid}")), "{out}");
        // 0, 1, 2, the two passed sockets, and ls's own directory fd (3+2=5)
        let fd_line = out.lines().nth(1).unwrap();
        assert_eq!(
            fd_line.split_whitespace().collect::<Vec<_>>(),
            ["0", "1", "2", "3", "4", "5"],
            "{out}"
        );
        assert_eq!(out.matches("socket:[").count(), 2, "{out}");
        assert!(
            out.contains("stdin-rc=1"),
            "stdin is /dev/null (EOF): {out}"
        );
        assert!(out.contains("SigBlk:\t0000000000000000"), "{out}");
    }

    #[test]
    fn a_missing_binary_is_the_spawns_error() {
        let dir = tempfile::tempdir().unwrap();
        let (log, _) = log_file(dir.path());
        let e = spawn_detached(Path::new("/nonexistent/qemu"), &[], &log, &[]).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::NotFound, "{e}");
    }

    #[test]
    fn too_many_fds_and_nul_bytes_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let (log, _) = log_file(dir.path());
        let many = vec![0; MAX_PASSED_FDS + 1];
        assert!(spawn_detached(Path::new("/bin/true"), &[], &log, &many).is_err());
        let e =
            spawn_detached(Path::new("/bin/true"), &["a\0b".to_string()], &log, &[]).unwrap_err();
        assert!(e.to_string().contains("NUL"), "{e}");
    }
}
