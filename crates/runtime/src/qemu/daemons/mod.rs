//! The sandbox's helper daemons: the shared-fs daemon (virtiofsd or
//! nydusd), swtpm and vhost-device-vsock. Each is spawned before QEMU,
//! detached, with its log in the sandbox folder; its pid is recorded in
//! `state.json`; the supervisor watches it; `stop` ends and reaps it.
//!
//! ```text
//! start_vm ──spawn the daemons (setsid, stderr to <dir>/<daemon>.log)──> pids saved
//!          ──accel decision, QEMU argv, listeners (while the daemons start)
//!          ──ready: virtiofsd and swtpm at once (pre-bound sockets, like QMP);
//!                   nydusd and vhost-device-vsock when their sockets listen
//!          ──spawn QEMU
//! ```
//! Command lines are planned in [`crate::plan`] (`sharedfs`, `tpm`, `agent`).

pub mod fs;
pub mod nydusd;
pub mod swtpm;
pub mod vsock;

use super::record::Proc;
use crate::error::{HypervisorError, Result};
use crate::host::process;
use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify};
use std::os::fd::{AsRawFd, RawFd};
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::io::unix::AsyncFd;
use tracing::{info, warn};

/// How long a daemon may take to come up.
pub const DAEMON_READY_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a daemon is given after SIGTERM before SIGKILL.
pub const DAEMON_TERM_GRACE: Duration = Duration::from_secs(3);

/// A daemon that was spawned and may not be serving yet.
#[derive(Debug)]
pub struct Pending {
    /// The daemon's name.
    pub name: &'static str,
    /// Its pid.
    pub pid: i32,
    /// The sandbox folder.
    pub dir: PathBuf,
    /// Its log.
    pub log: PathBuf,
    /// What to wait for.
    pub ready: Ready,
}

/// What makes a daemon ready.
#[derive(Debug)]
pub enum Ready {
    /// Nothing: its listener was bound before the spawn, so a client's
    /// connect waits in the backlog.
    Now,
    /// These sockets in the folder listen.
    Listening(Vec<&'static str>),
    /// nydusd: its sockets listen and the passthrough mount of `share` is made.
    Nydusd {
        /// The shared folder.
        share: PathBuf,
    },
}

impl Pending {
    /// Wait until the daemon serves, failing at once if it exits.
    pub async fn ready(self, timeout: Duration) -> Result<()> {
        let r = match &self.ready {
            Ready::Now => Ok(()),
            Ready::Listening(names) => wait_for_listeners(&self.dir, names, self.pid, timeout)
                .await
                .map_err(|e| HypervisorError::Daemon {
                    daemon: self.name,
                    reason: e.to_string(),
                    log: log_tail(&self.log),
                }),
            Ready::Nydusd { share } => {
                nydusd::ready(self.pid, &self.dir, share, &self.log, timeout).await
            }
        };
        if r.is_ok() {
            info!(daemon = self.name, pid = self.pid, "daemon ready");
        }
        r
    }
}

/// Spawn `bin args` detached (own session), stdout and stderr to `log`, with
/// `listener` (if any) as fd 3 and every other fd closed on exec.
pub(crate) fn spawn(
    bin: &Path,
    args: &[String],
    log: &Path,
    listener: Option<RawFd>,
) -> Result<i32> {
    super::launch::spawn_detached(bin, args, log, listener.as_slice(), None)
}

/// The tail of a daemon's log, for errors.
pub(crate) fn log_tail(log: &Path) -> String {
    super::launch::stderr_tail(log)
}

/// End a recorded daemon (SIGTERM, then SIGKILL) and reap it. With
/// `own_exit`, first give it a moment to end by itself (swtpm ends when
/// QEMU closes its connection).
pub(crate) async fn stop(name: &str, proc: &mut Proc, own_exit: Option<Duration>) {
    let Some(pid) = proc.live() else {
        proc.pid = None;
        return;
    };
    let gone = match own_exit {
        Some(d) => process::wait_exit(pid, d).await,
        None => false,
    };
    if !gone && !process::terminate(pid, DAEMON_TERM_GRACE).await {
        warn!(daemon = name, pid, "daemon survived SIGKILL");
    }
    proc.pid = None;
}

/// Why a daemon did not come up.
#[derive(Debug, thiserror::Error)]
pub enum WaitError {
    /// inotify could not watch the folder.
    #[error("inotify on {path}: {source}")]
    Inotify {
        /// The folder.
        path: String,
        /// Why.
        #[source]
        source: nix::errno::Errno,
    },
    /// Reading the event queue failed.
    #[error("waiting on inotify: {0}")]
    Io(#[source] std::io::Error),
    /// The daemon exited first.
    #[error("exited (pid {0}) before it was ready")]
    Exited(i32),
    /// The deadline passed.
    #[error("not ready after {0:?}")]
    Timeout(Duration),
    /// Its sockets exist but do not listen.
    #[error("sockets not listening after {0:?}")]
    NotListening(Duration),
}

/// An inotify instance as a raw fd, for tokio's reactor.
struct InotifyFd(Inotify);

impl AsRawFd for InotifyFd {
    fn as_raw_fd(&self) -> RawFd {
        use std::os::fd::AsFd;
        self.0.as_fd().as_raw_fd()
    }
}

/// Wait until `names` all exist in `dir`, on inotify events (no sleep loop),
/// racing `pid`'s exit and `timeout`. The error says what went wrong.
pub(crate) async fn wait_for_files(
    dir: &Path,
    names: &[&str],
    pid: i32,
    timeout: Duration,
) -> std::result::Result<(), WaitError> {
    let inotify_err = |source| WaitError::Inotify {
        path: dir.display().to_string(),
        source,
    };
    let ino = Inotify::init(InitFlags::IN_NONBLOCK | InitFlags::IN_CLOEXEC).map_err(inotify_err)?;
    ino.add_watch(dir, AddWatchFlags::IN_CREATE | AddWatchFlags::IN_MOVED_TO)
        .map_err(inotify_err)?;
    // Watch first, then look: a file created in between is seen either way.
    let all_there = || names.iter().all(|n| dir.join(n).exists());
    if all_there() {
        return Ok(());
    }
    // SAFETY: the Inotify is moved into the AsyncFd, so its fd stays open and
    // is the same file description for the AsyncFd's whole life.
    #[allow(unsafe_code)]
    let registered =
        unsafe { AsyncFd::register_with_interest(InotifyFd(ino), tokio::io::Interest::READABLE) };
    let afd = registered.map_err(|e| WaitError::Io(std::io::Error::other(e.to_string())))?;
    let wait = async {
        loop {
            let mut guard = afd.readable().await.map_err(WaitError::Io)?;
            match guard.get_inner().0.read_events() {
                Ok(_) => {}
                Err(nix::errno::Errno::EAGAIN) => {
                    guard.clear_ready();
                    continue;
                }
                Err(e) => return Err(inotify_err(e)),
            }
            if all_there() {
                return Ok(());
            }
        }
    };
    tokio::select! {
        r = wait => r,
        _ = process::wait_exit(pid, timeout) => Err(if process::alive(pid, None) {
            WaitError::Timeout(timeout)
        } else {
            WaitError::Exited(pid)
        }),
    }
}

/// Whether a Unix socket bound at `path` is listening, from `/proc/net/unix`
/// (the `__SO_ACCEPTCON` flag). Unlike a trial connect, this does not take
/// a daemon's one vhost-user connection.
pub(crate) fn listening(path: &Path) -> bool {
    let Ok(table) = std::fs::read_to_string("/proc/net/unix") else {
        return false;
    };
    listening_in(&table, path)
}

/// [`listening`] on a given `/proc/net/unix` text.
fn listening_in(table: &str, path: &Path) -> bool {
    const SO_ACCEPTCON: u32 = 0x0001_0000;
    let want = path.to_string_lossy();
    table.lines().skip(1).any(|l| {
        let cols: Vec<&str> = l.split_whitespace().collect();
        cols.len() >= 8
            && cols[7] == want
            && u32::from_str_radix(cols[3], 16).is_ok_and(|f| f & SO_ACCEPTCON != 0)
    })
}

/// Wait until every socket `names` in `dir` exists (inotify) and listens.
///
/// A daemon creates the socket file at `bind` and listens a moment later;
/// a client that connects in between is refused. That gap has no event to
/// wait on, so after the files appear this re-reads `/proc/net/unix` every
/// millisecond, racing `pid`'s exit and `timeout`.
pub(crate) async fn wait_for_listeners(
    dir: &Path,
    names: &[&str],
    pid: i32,
    timeout: Duration,
) -> std::result::Result<(), WaitError> {
    let deadline = tokio::time::Instant::now() + timeout;
    wait_for_files(dir, names, pid, timeout).await?;
    loop {
        if names.iter().all(|n| listening(&dir.join(n))) {
            return Ok(());
        }
        if !process::alive(pid, None) {
            return Err(WaitError::Exited(pid));
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(WaitError::NotListening(timeout));
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[tokio::test]
    async fn inotify_wait_sees_files_created_later_and_a_dead_daemon() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().to_path_buf();
        let mut sleeper = tokio::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let pid = sleeper.id().unwrap() as i32;
        let d2 = dir.clone();
        let maker = tokio::spawn(async move {
            tokio::task::yield_now().await;
            std::fs::write(d2.join("a.sock"), b"").unwrap();
            std::fs::write(d2.join("b.sock"), b"").unwrap();
        });
        wait_for_files(&dir, &["a.sock", "b.sock"], pid, Duration::from_secs(10))
            .await
            .unwrap();
        maker.await.unwrap();
        sleeper.kill().await.unwrap();
        let e = wait_for_files(&dir, &["never.sock"], pid, Duration::from_secs(10))
            .await
            .unwrap_err();
        assert!(matches!(e, WaitError::Exited(_)), "{e}");
    }

    #[test]
    fn listening_reads_the_accept_flag_of_the_bound_path() {
        let table = "Num       RefCount Protocol Flags    Type St Inode Path\n\
            0000000000000000: 00000002 00000000 00010000 0001 01 1001 /run/s/fs.sock\n\
            0000000000000000: 00000002 00000000 00000000 0001 01 1002 /run/s/api.sock\n\
            0000000000000000: 00000003 00000000 00000000 0001 03 1003\n";
        assert!(listening_in(table, Path::new("/run/s/fs.sock")));
        assert!(!listening_in(table, Path::new("/run/s/api.sock")));
        assert!(!listening_in(table, Path::new("/run/s/none.sock")));
    }

    #[tokio::test]
    async fn a_bound_socket_is_waited_for_until_it_listens() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("l.sock");
        let sock = nix::sys::socket::socket(
            nix::sys::socket::AddressFamily::Unix,
            nix::sys::socket::SockType::Stream,
            nix::sys::socket::SockFlag::SOCK_CLOEXEC,
            None,
        )
        .unwrap();
        let addr = nix::sys::socket::UnixAddr::new(&path).unwrap();
        nix::sys::socket::bind(sock.as_raw_fd(), &addr).unwrap();
        assert!(path.exists() && !listening(&path));
        let me = std::process::id() as i32;
        let early = wait_for_listeners(tmp.path(), &["l.sock"], me, Duration::from_millis(50));
        assert!(matches!(
            early.await.unwrap_err(),
            WaitError::NotListening(_)
        ));
        let backlog = nix::sys::socket::Backlog::new(4).unwrap();
        nix::sys::socket::listen(&sock, backlog).unwrap();
        wait_for_listeners(tmp.path(), &["l.sock"], me, Duration::from_secs(5))
            .await
            .unwrap();
    }
}
