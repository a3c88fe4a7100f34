//! Starting the launcher (`/proc/self/exe __launch`) and talking to it over
//! the sync socket. Blocking: call it from `spawn_blocking`.

use std::io::Write;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::Duration;

use nix::fcntl::OFlag;
use nix::unistd::pipe2;

use crate::config::{LaunchConfig, LaunchMode, LauncherMsg};
use crate::launch::{START_FD, SYNC_FD};
use crate::msg;
use crate::reaper::{ExitWatch, Reaper};

/// How long the launcher may take to report (root setup over virtio-fs
/// under TCG can be slow).
const LAUNCH_TIMEOUT: Duration = Duration::from_secs(60);

/// Serialises the creation of inheritable fds and the fork, so a launcher
/// never inherits another container's pipe or pty.
static SPAWN_LOCK: Mutex<()> = Mutex::new(());

/// The agent's ends of a process's stdio.
#[derive(Debug, Default)]
pub struct AgentIo {
    /// Write end of stdin (or a dup of the pty master).
    pub stdin: Option<OwnedFd>,
    /// Read end of stdout (or the pty master).
    pub stdout: Option<OwnedFd>,
    /// Read end of stderr (none with a terminal).
    pub stderr: Option<OwnedFd>,
    /// The pty master (for window size), with a terminal.
    pub pty: Option<OwnedFd>,
}

/// A launched process.
#[derive(Debug)]
pub struct Launched {
    /// Guest pid.
    pub pid: i32,
    /// Its exit status.
    pub exit: ExitWatch,
    /// The agent's stdio ends.
    pub io: AgentIo,
    /// Create mode: the sync socket and the start pipe, for [`start`].
    pub pending: Option<(UnixStream, OwnedFd)>,
}

fn err(what: &str, e: impl std::fmt::Display) -> String {
    format!("{what}: {e}")
}

/// Child-side and agent-side stdio. With a terminal the launcher opens the
/// pty in the container and sends the master back; the launcher's own stdio
/// is /dev/null until then.
fn make_stdio(terminal: bool) -> Result<([OwnedFd; 3], AgentIo), String> {
    if terminal {
        let null = || -> Result<OwnedFd, String> {
            let f = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open("/dev/null");
            f.map(OwnedFd::from).map_err(|e| err("/dev/null", e))
        };
        return Ok(([null()?, null()?, null()?], AgentIo::default()));
    }
    let p = || pipe2(OFlag::O_CLOEXEC).map_err(|e| err("pipe", e));
    let (in_r, in_w) = p()?;
    let (out_r, out_w) = p()?;
    let (err_r, err_w) = p()?;
    let io = AgentIo {
        stdin: Some(in_w),
        stdout: Some(out_r),
        stderr: Some(err_r),
        pty: None,
    };
    Ok(([in_r, out_w, err_w], io))
}

/// The agent's ends of a pty whose master the launcher sent.
fn pty_io(master: OwnedFd) -> Result<AgentIo, String> {
    let dup = |fd: &OwnedFd| fd.try_clone().map_err(|e| err("dup", e));
    Ok(AgentIo {
        stdin: Some(dup(&master)?),
        stdout: Some(dup(&master)?),
        stderr: None,
        pty: Some(master),
    })
}

/// Starts a launcher for `cfg` and waits until the process exists (exec
/// mode: until it has exec'd; create mode: until its root is ready).
pub fn launch(reaper: &Reaper, cfg: LaunchConfig) -> Result<Launched, String> {
    let create = matches!(cfg.mode, LaunchMode::Create(_));
    let guard = SPAWN_LOCK.lock().unwrap_or_else(|p| p.into_inner());
    let terminal = cfg.process.terminal;
    let (child_io, mut io) = make_stdio(terminal)?;
    let (mut sync, child_sync) = UnixStream::pair().map_err(|e| err("socketpair", e))?;
    let start = if create {
        Some(pipe2(OFlag::O_CLOEXEC).map_err(|e| err("pipe", e))?)
    } else {
        None
    };
    let [cin, cout, cerr] = child_io;
    let mut cmd = Command::new("/proc/self/exe");
    cmd.arg("__launch")
        .env_clear()
        .stdin(Stdio::from(cin))
        .stdout(Stdio::from(cout))
        .stderr(Stdio::from(cerr));
    let fds = [
        Some(child_sync.as_raw_fd()),
        start.as_ref().map(|(r, _)| r.as_raw_fd()),
    ];
    install_fds(&mut cmd, fds);
    let child = reaper
        .spawn_ignored(|| {
            let c = cmd.spawn()?;
            let pid = i32::try_from(c.id()).unwrap_or(i32::MAX);
            Ok((c, pid))
        })
        .map_err(|e| err("starting the launcher", e))?;
    drop(cmd); // the child's stdio ends
    drop(child_sync);
    let (start_r, start_w) = start.map_or((None, None), |(r, w)| (Some(r), Some(w)));
    drop(start_r);
    drop(guard);
    drop(child); // never waited on: the reaper reaps it

    sync.set_read_timeout(Some(LAUNCH_TIMEOUT))
        .map_err(|e| err("socket timeout", e))?;
    msg::send(&mut sync, &cfg).map_err(|e| err("sending the launch config", e))?;
    let mut reader = msg::FdReader::new(&sync);
    let mut next =
        || msg::recv::<_, LauncherMsg>(&mut reader).map_err(|e| err("reading the launcher", e));
    let pid = match next()? {
        Some(LauncherMsg::Pid(pid)) => pid,
        Some(LauncherMsg::Error(e)) => return Err(e),
        other => return Err(format!("launcher said {other:?} instead of a pid")),
    };
    let exit = reaper.watch(pid);
    (&sync)
        .write_all(&[1])
        .map_err(|e| err("acking the pid", e))?;
    if terminal {
        let msg =
            msg::recv::<_, LauncherMsg>(&mut reader).map_err(|e| err("reading the launcher", e))?;
        match msg {
            Some(LauncherMsg::Pty) if !reader.fds.is_empty() => io = pty_io(reader.fds.remove(0))?,
            Some(LauncherMsg::Error(e)) => return Err(e),
            other => {
                return Err(format!(
                    "launcher said {other:?} instead of sending the pty"
                ));
            }
        }
    }
    let reply =
        msg::recv::<_, LauncherMsg>(&mut reader).map_err(|e| err("reading the launcher", e))?;
    match (reply, create) {
        (Some(LauncherMsg::Ready), true) => {}
        (None, false) => {}
        (Some(LauncherMsg::Error(e)), _) => return Err(e),
        (other, _) => return Err(format!("launcher said {other:?}")),
    }
    drop(reader);
    let pending = start_w.map(|w| (sync, w));
    Ok(Launched {
        pid,
        exit,
        io,
        pending,
    })
}

/// Create mode: lets the process exec and waits until it has (or failed to).
pub fn start(mut sync: UnixStream, start: OwnedFd) -> Result<(), String> {
    let mut f = std::fs::File::from(start);
    f.write_all(&[1])
        .map_err(|e| err("writing the start byte", e))?;
    drop(f);
    match msg::recv::<_, LauncherMsg>(&mut sync).map_err(|e| err("reading the launcher", e))? {
        None => Ok(()),
        Some(LauncherMsg::Error(e)) => Err(e),
        Some(other) => Err(format!("launcher said {other:?}")),
    }
}

/// In the forked child: move the sync socket to fd 3 and the start pipe to fd 4.
#[allow(unsafe_code)]
fn install_fds(cmd: &mut Command, fds: [Option<i32>; 2]) {
    // SAFETY: the closure runs in the forked child before exec and only
    // makes async-signal-safe syscalls (fcntl, dup2, close).
    unsafe {
        cmd.pre_exec(move || {
            let mut tmp = [-1i32; 2];
            for (i, fd) in fds.iter().enumerate() {
                if let Some(fd) = fd {
                    tmp[i] = libc::fcntl(*fd, libc::F_DUPFD_CLOEXEC, 10);
                    if tmp[i] < 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                }
            }
            for (t, target) in tmp.iter().zip([SYNC_FD, START_FD]) {
                if *t >= 0 && libc::dup2(*t, target) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
}
