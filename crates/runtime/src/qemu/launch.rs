//! Spawning QEMU with a pre-bound QMP listener, and waiting for QMP.
//!
//! The runtime binds `qmp.sock` itself and hands the listening fd to QEMU as
//! fd 3 (`-chardev socket,fd=3,server=on`). It then connects at once: the
//! connection waits in the listen backlog until QEMU accepts, so there is no
//! polling for the socket to appear. QEMU's exit is watched on a pidfd at
//! the same time, so a QEMU that dies while starting fails the start at once,
//! with its stderr.

use crate::config::HypervisorConfig;
use crate::error::{HypervisorError, Result};
use crate::host::process;
use crate::host::security::{self, selinux, user};
use crate::host::spawn;
use crate::plan::QMP_FD;
use crate::state::files;
use std::os::fd::{OwnedFd, RawFd};
use std::os::unix::net::UnixListener;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

/// Bytes of QEMU's log kept in a start error.
const STDERR_TAIL: usize = 4096;

/// The tail of QEMU's log file.
pub fn stderr_tail(log: &Path) -> String {
    let Ok(bytes) = std::fs::read(log) else {
        return String::new();
    };
    let start = bytes.len().saturating_sub(STDERR_TAIL);
    String::from_utf8_lossy(&bytes[start..]).into_owned()
}

/// Bind a listener a child will inherit (QMP, events, a daemon's socket) at
/// `path`, removing a stale socket.
pub fn bind_listener(path: &Path) -> Result<UnixListener> {
    let _ = std::fs::remove_file(path);
    UnixListener::bind(path).map_err(HypervisorError::io(format!("bind {}", path.display())))
}

/// Most fds a child inherits (QMP, events, then the fds of cold-plugged taps and channels).
pub const MAX_FDS: usize = spawn::MAX_PASSED_FDS;

/// In the child, before exec: new session, the fds on 3, 4, ... in order,
/// every other fd above them marked close-on-exec, then the configured
/// identity. Allocates nothing (runs between fork and exec; only a child that
/// switches identity is forked, the others are spawned by `posix_spawn`).
fn child_setup(
    fds: [RawFd; MAX_FDS],
    count: usize,
    identity: &user::Identity,
) -> std::io::Result<()> {
    use nix::fcntl::{FcntlArg, fcntl};
    nix::unistd::setsid().map_err(std::io::Error::from)?;
    // Move every fd out of the way first, so that moving one onto its
    // target number can never clobber another that sits there.
    let mut high: [RawFd; MAX_FDS] = [-1; MAX_FDS];
    for i in 0..count {
        high[i] = fcntl(fds[i], FcntlArg::F_DUPFD_CLOEXEC(64)).map_err(std::io::Error::from)?;
    }
    for (i, fd) in high.iter().enumerate().take(count) {
        // dup2 leaves the target without CLOEXEC: QEMU inherits exactly these.
        nix::unistd::dup2(*fd, QMP_FD + i as RawFd).map_err(std::io::Error::from)?;
    }
    // SAFETY: close_range with CLOSE_RANGE_CLOEXEC only sets flags on the fds
    // above the listeners; async-signal-safe. Older kernels return
    // ENOSYS/EINVAL and every fd we opened is already O_CLOEXEC, so a failure
    // is harmless.
    #[allow(unsafe_code)]
    unsafe {
        libc::syscall(
            libc::SYS_close_range,
            (QMP_FD + count as RawFd) as libc::c_uint,
            libc::c_uint::MAX,
            libc::CLOSE_RANGE_CLOEXEC,
        );
    }
    user::switch_identity(identity)
}

/// Prepare the host side for a QEMU about to start in `dir`: warn about the
/// BPF JIT when seccomp is on, and hand the folder, the QMP socket and the
/// log to QEMU's identity when one is configured.
pub fn prepare(cfg: &HypervisorConfig, dir: &Path) -> Result<()> {
    security::warn_bpf_jit(cfg.seccomp_sandbox.is_some());
    if let (Some(_), Some(vars)) = (&cfg.firmware, &cfg.firmware_volume) {
        // The vars template is copied once per sandbox and never written.
        let copy = dir.join(crate::plan::devices::EFI_VARS);
        if !copy.exists() {
            std::fs::copy(vars, &copy).map_err(HypervisorError::io(format!(
                "copy {} to {}",
                vars.display(),
                copy.display()
            )))?;
        }
    }
    if let Some(u) = &cfg.qemu_user {
        let log = dir.join(files::QEMU_LOG);
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .map_err(HypervisorError::io(log.display()))?;
        user::prepare_dir(
            dir,
            &[
                files::QMP,
                files::EVENTS,
                files::QEMU_LOG,
                crate::plan::devices::EFI_VARS,
                // QEMU connects to the daemons' sockets.
                crate::plan::tpm::TPM_SOCKET,
                files::VHOST_VSOCK,
            ],
            u,
        )?;
    }
    Ok(())
}

/// Spawn `bin args` detached (its own session) with stdout and stderr
/// appended to `log`, `fds` moved onto fds 3, 4, ... (every other fd closed
/// on exec), and, when given, under `identity`. Shared by QEMU and the helper
/// daemons (virtiofsd, nydusd, swtpm). Without an identity this is one
/// `posix_spawn` (no copy of the runtime's page tables, see
/// [`crate::host::spawn`]); a uid/gid switch needs a fork and `pre_exec`.
/// Returns the pid; an error names the binary.
pub(crate) fn spawn_detached(
    bin: &Path,
    args: &[String],
    log: &Path,
    fds: &[RawFd],
    identity: Option<user::Identity>,
) -> Result<i32> {
    if fds.len() > MAX_FDS {
        return Err(HypervisorError::unsupported(
            format!("start {}", bin.display()),
            format!(
                "at most {MAX_FDS} fds can be passed to it (too many cold-plugged NICs and channels)"
            ),
        ));
    }
    let logf = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .map_err(HypervisorError::io(log.display()))?;
    let cannot = |e: std::io::Error| HypervisorError::StartFailed {
        reason: format!("cannot execute {}: {e}", bin.display()),
        stderr: String::new(),
    };
    let Some(identity) = identity else {
        return spawn::spawn_detached(bin, args, &OwnedFd::from(logf), fds).map_err(cannot);
    };
    let errf = logf
        .try_clone()
        .map_err(HypervisorError::io(log.display()))?;
    let mut passed: [RawFd; MAX_FDS] = [-1; MAX_FDS];
    passed[..fds.len()].copy_from_slice(fds);
    let count = fds.len();
    let mut cmd = std::process::Command::new(bin);
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(logf)
        .stderr(errf);
    // SAFETY: child_setup only makes async-signal-safe calls (setsid, fcntl,
    // dup2, close_range, setgroups, setgid, setuid) on data prepared before
    // fork, and allocates nothing.
    #[allow(unsafe_code)]
    unsafe {
        cmd.pre_exec(move || child_setup(passed, count, &identity));
    }
    let child = cmd.spawn().map_err(cannot)?;
    // The child is waited for on a pidfd (by pid), here or in a later process.
    Ok(child.id() as i32)
}

/// Spawn QEMU detached (its own session), stdout and stderr to `log`, under
/// the configured uid/gid/groups and SELinux exec label, with `fds` on 3, 4,
/// ... in order. Returns the pid.
pub fn spawn(cfg: &HypervisorConfig, args: &[String], fds: &[RawFd], log: &Path) -> Result<i32> {
    let qemu = cfg.qemu_path.as_path();
    let identity = cfg.qemu_user.as_ref().map(user::Identity::from);
    // The exec label is per thread and for the next exec only; the guard puts
    // the previous one back as soon as QEMU is spawned.
    let decision = selinux::decide(
        selinux::host_enabled(),
        cfg.disable_selinux,
        cfg.selinux_label.as_deref(),
    );
    let label = selinux::ExecLabel::apply(&decision)?;
    let spawned = spawn_detached(qemu, args, log, fds, identity);
    drop(label);
    spawned
}

/// Connect to QMP and negotiate, racing QEMU's exit and a deadline.
pub async fn wait_qmp(
    pid: i32,
    qmp_path: &Path,
    log: &Path,
    timeout: Duration,
) -> Result<qmp::Client> {
    let opts = qmp::ClientOptions {
        handshake_timeout: timeout,
        ..Default::default()
    };
    let connect = qmp::Client::connect_with(qmp_path, opts);
    tokio::select! {
        r = connect => r.map_err(|e| HypervisorError::StartFailed {
            reason: format!("QMP handshake on {} failed: {e}", qmp_path.display()),
            stderr: stderr_tail(log),
        }),
        _ = process::wait_exit(pid, timeout + Duration::from_secs(1)) => {
            Err(HypervisorError::StartFailed {
                reason: if process::alive(pid, None) {
                    format!("QMP not ready after {timeout:?}")
                } else {
                    format!("QEMU (pid {pid}) exited before QMP was ready")
                },
                stderr: stderr_tail(log),
            })
        }
    }
}
