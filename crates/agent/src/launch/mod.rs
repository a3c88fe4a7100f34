//! The launcher: `sandvm-agent __launch`, a fresh single-threaded process the
//! agent starts for every container and exec (as runc does with `runc init`):
//! fork and namespace calls are safe here, unlike in the multi-threaded agent.
//!
//! fd 3 is the sync socket to the agent (a [`LaunchConfig`] comes in;
//! [`LauncherMsg`]s go out); in create mode fd 4 is the start pipe. The
//! launcher joins the container's cgroup, makes or joins its namespaces, and
//! forks; it sends the child's pid, waits for the agent's one-byte ack (the
//! agent has registered the pid with its reaper) and exits, so the child is
//! re-parented to the agent (a subreaper). The child sets up the root (create
//! mode), reports `Ready` and waits for the start byte; then it sets up the
//! process and execs. fd 3 is close-on-exec, so the agent sees end-of-stream
//! when the exec succeeded, or an `Error` message when anything failed.

mod exec;
mod rootfs;

use std::fs;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::net::UnixStream;

use nix::sched::{CloneFlags, setns, unshare};
use nix::unistd::{ForkResult, fork, pipe};

use crate::config::{LaunchConfig, LaunchMode, LauncherMsg, Namespaces};
use crate::msg;

/// fd of the sync socket in the launcher.
pub const SYNC_FD: i32 = 3;
/// fd of the start pipe (create mode).
pub const START_FD: i32 = 4;

/// Entry point of `sandvm-agent __launch`; never returns.
#[allow(unsafe_code)]
pub fn main() -> ! {
    // SAFETY: close_range on fds we do not use; nothing holds them.
    unsafe { libc::syscall(libc::SYS_close_range, 5u32, u32::MAX, 0u32) };
    for fd in [SYNC_FD, START_FD] {
        // SAFETY: fcntl on a plain fd number; harmless if it is not open.
        unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) };
    }
    // SAFETY: the agent passes the sync socket as fd 3 and nothing else owns it.
    let mut sync = unsafe { UnixStream::from_raw_fd(SYNC_FD) };
    let code = match msg::recv::<_, LaunchConfig>(&mut sync) {
        Ok(Some(cfg)) => match run(&cfg, &mut sync) {
            Ok(()) => 0,
            Err(e) => {
                let _ = msg::send(&mut sync, &LauncherMsg::Error(e));
                1
            }
        },
        _ => 1,
    };
    std::process::exit(code)
}

fn run(cfg: &LaunchConfig, sync: &mut UnixStream) -> Result<(), String> {
    fs::write(cfg.cgroup.join("cgroup.procs"), "0")
        .map_err(|e| format!("joining cgroup {}: {e}", cfg.cgroup.display()))?;
    match &cfg.mode {
        LaunchMode::Create(c) => {
            let mut flags = CloneFlags::CLONE_NEWNS | ns_flags(&c.namespaces);
            flags.remove(CloneFlags::CLONE_NEWCGROUP);
            unshare(flags).map_err(|e| format!("unshare({flags:?}): {e}"))?;
            if c.namespaces.cgroup {
                unshare(CloneFlags::CLONE_NEWCGROUP)
                    .map_err(|e| format!("unshare(cgroup): {e}"))?;
            }
            let child = |sync: &mut UnixStream| -> Result<(), String> {
                let dev_tmpfs = rootfs::setup(c)?;
                if cfg.process.terminal {
                    take_pty(sync, dev_tmpfs)?;
                }
                msg::send(sync, &LauncherMsg::Ready).map_err(|e| format!("sending ready: {e}"))?;
                wait_start()?;
                exec::exec(&cfg.process)
            };
            fork_and_report(sync, child)
        }
        LaunchMode::Exec {
            init_pid,
            namespaces,
        } => {
            join(*init_pid, namespaces)?;
            fork_and_report(sync, |sync| {
                if cfg.process.terminal {
                    take_pty(sync, false)?;
                }
                exec::exec(&cfg.process)
            })
        }
    }
}

fn ns_flags(ns: &Namespaces) -> CloneFlags {
    let mut f = CloneFlags::empty();
    f.set(CloneFlags::CLONE_NEWPID, ns.pid);
    f.set(CloneFlags::CLONE_NEWIPC, ns.ipc);
    f.set(CloneFlags::CLONE_NEWUTS, ns.uts);
    f.set(CloneFlags::CLONE_NEWCGROUP, ns.cgroup);
    f
}

/// setns into the container's namespaces (mount last: it changes our root).
fn join(pid: i32, ns: &Namespaces) -> Result<(), String> {
    let mut list = vec![];
    for (on, name, flag) in [
        (ns.cgroup, "cgroup", CloneFlags::CLONE_NEWCGROUP),
        (ns.ipc, "ipc", CloneFlags::CLONE_NEWIPC),
        (ns.uts, "uts", CloneFlags::CLONE_NEWUTS),
        (ns.pid, "pid", CloneFlags::CLONE_NEWPID),
        (true, "mnt", CloneFlags::CLONE_NEWNS),
    ] {
        if on {
            let f = fs::File::open(format!("/proc/{pid}/ns/{name}"))
                .map_err(|e| format!("opening the container's {name} namespace: {e}"))?;
            list.push((name, f, flag));
        }
    }
    for (name, f, flag) in list {
        setns(&f, flag).map_err(|e| format!("joining the container's {name} namespace: {e}"))?;
    }
    Ok(())
}

/// Forks. The parent reports the child's pid, waits for the agent's ack, lets
/// the child go and exits; the child runs `body` (which execs) and reports
/// its error if it returns.
#[allow(unsafe_code)]
fn fork_and_report(
    sync: &mut UnixStream,
    body: impl FnOnce(&mut UnixStream) -> Result<(), String>,
) -> Result<(), String> {
    let (go_r, go_w) = pipe().map_err(|e| format!("pipe: {e}"))?;
    // SAFETY: the launcher is single-threaded, so the child may do anything.
    match unsafe { fork() }.map_err(|e| format!("fork: {e}"))? {
        ForkResult::Parent { child } => {
            drop(go_r);
            msg::send(sync, &LauncherMsg::Pid(child.as_raw()))
                .map_err(|e| format!("sending pid: {e}"))?;
            let mut ack = [0u8; 1];
            sync.read_exact(&mut ack)
                .map_err(|e| format!("waiting for the agent's ack: {e}"))?;
            drop(go_w);
            std::process::exit(0)
        }
        ForkResult::Child => {
            drop(go_w);
            // wait until the parent has reported our pid and is going away
            let mut b = [0u8; 1];
            let _ = fs::File::from(go_r).read(&mut b);
            let err = match body(sync) {
                Ok(()) => "returned without exec".to_string(),
                Err(e) => e,
            };
            let _ = msg::send(sync, &LauncherMsg::Error(err));
            let _ = sync.flush();
            std::process::exit(127)
        }
    }
}

/// Opens a pty in the container's devpts (so `tty` names it there), sends
/// the master to the agent, makes the slave our stdio and, for a container's
/// init with its own /dev, binds it on /dev/console.
fn take_pty(sync: &mut UnixStream, console: bool) -> Result<(), String> {
    use nix::fcntl::OFlag;
    use nix::pty::{grantpt, posix_openpt, ptsname_r, unlockpt};
    let master = posix_openpt(OFlag::O_RDWR | OFlag::O_NOCTTY | OFlag::O_CLOEXEC)
        .map_err(|e| format!("opening /dev/ptmx in the container: {e}"))?;
    grantpt(&master).map_err(|e| format!("grantpt: {e}"))?;
    unlockpt(&master).map_err(|e| format!("unlockpt: {e}"))?;
    let name = ptsname_r(&master).map_err(|e| format!("ptsname: {e}"))?;
    let slave = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NOCTTY)
        .open(&name)
        .map_err(|e| format!("opening {name}: {e}"))?;
    if console {
        let none: Option<&str> = None;
        if !std::path::Path::new("/dev/console").exists() {
            fs::File::create("/dev/console").map_err(|e| format!("creating /dev/console: {e}"))?;
        }
        nix::mount::mount(
            Some(name.as_str()),
            "/dev/console",
            none,
            nix::mount::MsFlags::MS_BIND,
            none,
        )
        .map_err(|e| format!("binding {name} on /dev/console: {e}"))?;
    }
    msg::send_with_fd(sync, &LauncherMsg::Pty, master.as_raw_fd())
        .map_err(|e| format!("sending the pty: {e}"))?;
    drop(master);
    for fd in 0..3 {
        nix::unistd::dup2(slave.as_raw_fd(), fd).map_err(|e| format!("dup2 pty: {e}"))?;
    }
    Ok(())
}

/// Create mode: block until the agent writes the start byte (or closes the pipe).
#[allow(unsafe_code)]
fn wait_start() -> Result<(), String> {
    // SAFETY: fd 4 is the start pipe the agent passed; we own it from here.
    let mut f = fs::File::from(unsafe { OwnedFd::from_raw_fd(START_FD) });
    let mut b = [0u8; 1];
    match f.read(&mut b) {
        Ok(1) => Ok(()),
        Ok(_) => std::process::exit(0),
        Err(e) => Err(format!("waiting for start: {e} (fd {})", f.as_raw_fd())),
    }
}
