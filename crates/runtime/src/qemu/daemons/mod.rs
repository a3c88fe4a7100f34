//! Shared-filesystem daemons: virtiofsd and nydusd (virtio-fs), started
//! before QEMU, recorded in `state.json`, watched by the supervisor and
//! reaped by `stop`.
//!
//! ```text
//! start_vm ──spawn daemon (setsid, stderr to <dir>/<daemon>.log)──> pid saved in state.json
//!          ──accel decision, QEMU argv, listeners (in parallel with the daemon's start)
//!          ──daemon ready: virtiofsd at once (pre-bound socket, like QMP),
//!                          nydusd when its sockets listen and the passthrough mount is made
//!          ──spawn QEMU (vhost-user-fs-pci, chardev to fs.sock, shared file memory)
//! ```
//!
//! The supervisor (see [`crate::supervise`]) waits on the daemon's pidfd; if
//! the daemon dies, it stops the sandbox and logs why, as Kata's `onQuit` does.

pub mod nydusd;
pub mod swtpm;
pub mod virtiofsd;

use super::{Qemu, StopMode, TERM_GRACE};
use crate::config::{HypervisorConfig, SharedFs};
use crate::hypervisor::{HypervisorError, Result};
use crate::process;
use crate::state::{SandboxDir, StateRoot, check_socket_path, files};
use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify};
use qemu_config::{Chardev, Device, Transport, VhostUserFs};
use serde::{Deserialize, Serialize};
use std::os::fd::{AsRawFd, RawFd};
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::io::unix::AsyncFd;
use tracing::{error, info, warn};

/// The guest mount tag of the share (Kata's).
pub const MOUNT_TAG: &str = "kataShared";
/// The vhost-user socket of the daemon, in the sandbox folder.
pub const FS_SOCKET: &str = "fs.sock";
/// nydusd's API socket, in the sandbox folder.
pub const FS_API_SOCKET: &str = "fs-api.sock";
/// The folder shared when `create` gets no `--share`, in the sandbox folder.
pub const DEFAULT_SHARE: &str = "shared";
/// Chardev id of the vhost-user socket.
pub const FS_CHARDEV: &str = "char-fs0";
/// Device id of the vhost-user-fs device.
pub const FS_DEVICE: &str = "vhost-user-fs0";
/// A wait with no practical end (the daemon's whole life).
const FOREVER: Duration = Duration::from_secs(10 * 365 * 24 * 3600);
/// How long a daemon may take to come up.
pub const DAEMON_READY_TIMEOUT: Duration = Duration::from_secs(10);

/// Which daemon serves the share.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DaemonKind {
    /// virtiofsd.
    Virtiofsd,
    /// nydusd in virtiofs mode with a passthrough mount.
    Nydusd,
}

impl DaemonKind {
    /// The daemon's name (and its log's stem).
    pub fn name(self) -> &'static str {
        match self {
            DaemonKind::Virtiofsd => "virtiofsd",
            DaemonKind::Nydusd => "nydusd",
        }
    }

    /// The daemon's log file in the sandbox folder.
    pub fn log(self) -> String {
        format!("{}.log", self.name())
    }

    fn of(kind: SharedFs) -> Option<DaemonKind> {
        match kind {
            SharedFs::None => None,
            SharedFs::VirtioFs => Some(DaemonKind::Virtiofsd),
            SharedFs::VirtioFsNydus => Some(DaemonKind::Nydusd),
        }
    }
}

/// The shared filesystem of a sandbox, as `state.json` keeps it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FsState {
    /// The daemon.
    pub kind: DaemonKind,
    /// The host folder shared with the guest.
    pub share: PathBuf,
    /// The daemon's pid once started.
    #[serde(default)]
    pub pid: Option<i32>,
    /// The daemon's start time (clock ticks since boot), to tell a reused pid.
    #[serde(default)]
    pub start_ticks: Option<u64>,
}

/// At `create`: check the daemon's socket paths and settle the share
/// (`--share`, else `<dir>/shared/`, created). `None` without a shared fs.
pub fn prepare(
    cfg: &HypervisorConfig,
    dir: &SandboxDir,
    share: Option<PathBuf>,
) -> Result<Option<FsState>> {
    let Some(kind) = DaemonKind::of(cfg.shared_fs.kind) else {
        return Ok(None);
    };
    for s in [FS_SOCKET, FS_API_SOCKET] {
        check_socket_path(&dir.file(s))?;
    }
    let share = match share {
        Some(p) => {
            let p = std::path::absolute(&p).unwrap_or(p);
            if !p.is_dir() {
                return Err(HypervisorError::Host(format!(
                    "--share {}: not a folder",
                    p.display()
                )));
            }
            p
        }
        None => {
            let p = dir.file(DEFAULT_SHARE);
            std::fs::create_dir(&p).map_err(HypervisorError::io(p.display()))?;
            p
        }
    };
    Ok(Some(FsState {
        kind,
        share,
        pid: None,
        start_ticks: None,
    }))
}

/// The chardev and vhost-user-fs device QEMU needs for the share, if any.
pub fn vhost_user_fs(
    cfg: &HypervisorConfig,
    dir: &Path,
    transport: Transport,
    devno: Option<String>,
) -> Option<(Chardev, Device)> {
    DaemonKind::of(cfg.shared_fs.kind)?;
    let chardev = Chardev::Socket {
        id: FS_CHARDEV.into(),
        path: Some(dir.join(FS_SOCKET).display().to_string()),
        fd: None,
        server: false,
        wait: false,
        logfile: None,
        logappend: None,
    };
    let dev = Device::VhostUserFs(VhostUserFs {
        transport,
        id: FS_DEVICE.into(),
        chardev: FS_CHARDEV.into(),
        tag: MOUNT_TAG.into(),
        queue_size: Some(cfg.shared_fs.queue_size),
        cache_size: None,
        bus: None,
        addr: None,
        devno,
        iommu_platform: cfg.iommu_platform,
        romfile: None,
    });
    Some((chardev, dev))
}

/// A daemon that was spawned and may not be serving yet.
#[derive(Debug)]
pub struct Pending {
    kind: DaemonKind,
    pid: i32,
    dir: PathBuf,
    share: PathBuf,
    log: PathBuf,
}

impl Pending {
    /// Wait until the daemon serves its vhost-user socket (nydusd: and the
    /// passthrough mount is made), failing at once if it exits.
    pub async fn ready(self, timeout: Duration) -> Result<()> {
        let r = match self.kind {
            // The listener was bound before the spawn: QEMU's connect waits in
            // its backlog, nothing to wait for.
            DaemonKind::Virtiofsd => Ok(()),
            DaemonKind::Nydusd => {
                nydusd::ready(self.pid, &self.dir, &self.share, &self.log, timeout).await
            }
        };
        if r.is_ok() {
            info!(
                daemon = self.kind.name(),
                pid = self.pid,
                "shared-fs daemon ready"
            );
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
    let cmd = super::launch::detached_command(bin, args, log, listener.as_slice(), None)?;
    super::launch::spawn_command(cmd, bin)
}

/// The tail of a daemon's log, for errors.
pub(crate) fn log_tail(log: &Path) -> String {
    super::launch::stderr_tail(log)
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
/// racing `pid`'s exit and `timeout`.
pub(crate) async fn wait_for_files(
    dir: &Path,
    names: &[&str],
    pid: i32,
    timeout: Duration,
) -> std::result::Result<(), String> {
    let ino = Inotify::init(InitFlags::IN_NONBLOCK | InitFlags::IN_CLOEXEC)
        .map_err(|e| format!("inotify: {e}"))?;
    ino.add_watch(dir, AddWatchFlags::IN_CREATE | AddWatchFlags::IN_MOVED_TO)
        .map_err(|e| format!("inotify watch on {}: {e}", dir.display()))?;
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
    let afd = registered.map_err(|e| format!("inotify: {e}"))?;
    let wait = async {
        loop {
            let mut guard = afd.readable().await.map_err(|e| e.to_string())?;
            match guard.get_inner().0.read_events() {
                Ok(_) => {}
                Err(nix::errno::Errno::EAGAIN) => {
                    guard.clear_ready();
                    continue;
                }
                Err(e) => return Err(format!("inotify read: {e}")),
            }
            if all_there() {
                return Ok(());
            }
        }
    };
    tokio::select! {
        r = wait => r,
        _ = process::wait_exit(pid, timeout) => Err(if process::alive(pid, None) {
            format!("not ready after {timeout:?}")
        } else {
            format!("exited (pid {pid}) before it was ready")
        }),
    }
}

/// Whether a Unix socket bound at `path` is listening, from `/proc/net/unix`
/// (the `__SO_ACCEPTCON` flag). Unlike a trial connect, this does not take
/// the daemon's one vhost-user connection.
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
) -> std::result::Result<(), String> {
    let deadline = tokio::time::Instant::now() + timeout;
    wait_for_files(dir, names, pid, timeout).await?;
    loop {
        if names.iter().all(|n| listening(&dir.join(n))) {
            return Ok(());
        }
        if !process::alive(pid, None) {
            return Err(format!("exited (pid {pid}) before it was ready"));
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(format!("sockets not listening after {timeout:?}"));
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

impl Qemu {
    /// Spawn the sandbox's shared-fs daemon, if it has one, and record its pid.
    /// Called first in a start, so the daemon comes up while QEMU's start is prepared.
    pub(super) fn start_fs_daemon(&mut self) -> Result<Option<Pending>> {
        let (dir, st) = self.parts("start the shared-fs daemon")?;
        let Some(fs) = st.fs.clone() else {
            return Ok(None);
        };
        let cfg = &st.config;
        let bin = cfg
            .shared_fs
            .daemon
            .clone()
            .ok_or_else(|| HypervisorError::Host("no virtio_fs_daemon configured".into()))?;
        let log = dir.file(&fs.kind.log());
        let pid = match fs.kind {
            DaemonKind::Virtiofsd => {
                let sock = dir.file(FS_SOCKET);
                let listener = super::launch::bind_qmp(&sock)?;
                let args = virtiofsd::args(cfg, &fs.share);
                let pid = spawn(&bin, &args, &log, Some(listener.as_raw_fd()))?;
                drop(listener);
                pid
            }
            DaemonKind::Nydusd => {
                let args = nydusd::args(cfg, dir.path());
                spawn(&bin, &args, &log, None)?
            }
        };
        info!(daemon = fs.kind.name(), pid, share = %fs.share.display(), "shared-fs daemon spawned");
        let pending = Pending {
            kind: fs.kind,
            pid,
            dir: dir.path().to_path_buf(),
            share: fs.share.clone(),
            log,
        };
        if let Some(f) = self.state.as_mut().and_then(|s| s.fs.as_mut()) {
            f.pid = Some(pid);
            f.start_ticks = process::start_ticks(pid);
        }
        self.save()?;
        Ok(Some(pending))
    }

    /// The daemon's pid, if it runs.
    pub fn fs_daemon_pid(&self) -> Option<i32> {
        let fs = self.state.as_ref()?.fs.as_ref()?;
        fs.pid.filter(|p| process::alive(*p, fs.start_ticks))
    }

    /// Stop the shared-fs daemon (SIGTERM, then SIGKILL) and reap it.
    pub(super) async fn stop_fs_daemon(&mut self) {
        let Some(pid) = self.fs_daemon_pid() else {
            return;
        };
        if !process::terminate(pid, TERM_GRACE).await {
            warn!(pid, "shared-fs daemon survived SIGKILL");
        }
        if let Some(f) = self.state.as_mut().and_then(|s| s.fs.as_mut()) {
            f.pid = None;
        }
    }
}

/// The daemon recorded in a sandbox's `state.json` (read without the lock).
pub fn recorded(dir: &Path) -> Option<FsState> {
    let bytes = std::fs::read(dir.join(files::STATE)).ok()?;
    let v: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    serde_json::from_value(v.get("fs")?.clone()).ok()
}

/// For `stop --force` on a corrupt state: kill the daemon whose pid the state
/// file still names, after checking that the pid runs virtiofsd or nydusd.
pub async fn salvage_kill(dir: &Path) {
    let Some(pid) = std::fs::read(dir.join(files::STATE))
        .ok()
        .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
        .and_then(|v| v.pointer("/fs/pid").and_then(|p| p.as_i64()))
        .map(|p| p as i32)
    else {
        return;
    };
    let is_daemon = std::fs::read_link(format!("/proc/{pid}/exe")).is_ok_and(|p| {
        p.file_name().is_some_and(|n| {
            let n = n.to_string_lossy();
            n.starts_with("virtiofsd") || n.starts_with("nydusd")
        })
    });
    if is_daemon && process::alive(pid, None) {
        process::signal(pid, nix::sys::signal::Signal::SIGKILL);
        process::wait_exit(pid, TERM_GRACE).await;
    }
}

/// Resolves when the sandbox's recorded daemon exits; never without one.
pub async fn wait_daemon_exit(dir: &Path) -> FsState {
    let Some(fs) = recorded(dir).filter(|f| f.pid.is_some()) else {
        return std::future::pending().await;
    };
    let pid = fs.pid.unwrap_or_default();
    if process::alive(pid, fs.start_ticks) {
        process::wait_exit(pid, FOREVER).await;
    }
    fs
}

/// What the supervisor does when the daemon dies (Kata's `onQuit`): log the
/// cause, end QEMU and clean the sandbox up, leaving no process or socket.
pub async fn on_daemon_exit(client: &qmp::Client, dir: &Path, id: &str, fs: &FsState) {
    error!(
        id,
        daemon = fs.kind.name(),
        pid = fs.pid,
        log = %dir.join(fs.kind.log()).display(),
        "shared-fs daemon exited; stopping the sandbox"
    );
    let _ = client.quit().await;
    let Some(root) = dir.parent().map(StateRoot::new) else {
        return;
    };
    match Qemu::attach(root, id).await {
        Ok(mut q) => {
            // This process is the supervisor: do not wait for ourselves.
            if let Some(st) = q.state.as_mut() {
                st.supervisor_pid = None;
            }
            if let Err(e) = q.stop_with(StopMode::WaitOnly(TERM_GRACE)).await {
                warn!(id, error = %e, "cleanup after the daemon's exit");
            }
        }
        // Busy: a `stop` is under way and cleans up; NotFound: already gone.
        Err(e) => info!(id, reason = %e, "sandbox not cleaned up by the supervisor"),
    }
}

#[cfg(test)]
mod tests {
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
        assert!(e.contains("exited"), "{e}");
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
        assert!(early.await.unwrap_err().contains("not listening"));
        let backlog = nix::sys::socket::Backlog::new(4).unwrap();
        nix::sys::socket::listen(&sock, backlog).unwrap();
        wait_for_listeners(tmp.path(), &["l.sock"], me, Duration::from_secs(5))
            .await
            .unwrap();
    }
}
