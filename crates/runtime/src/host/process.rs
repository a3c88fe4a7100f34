//! Host processes: identity (pid + start time), exit waits on a pidfd, signals.
//!
//! A sandbox's QEMU usually outlives the process that started it, so a later
//! process cannot `waitpid` it. It waits on a pidfd instead, which becomes
//! readable when the process exits: an event, not a poll loop.

use nix::sys::signal::{Signal, kill};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;
use serde::{Deserialize, Serialize};
use std::os::fd::{FromRawFd, OwnedFd};
use std::time::Duration;
use tokio::io::unix::AsyncFd;

/// The start time of `pid` in clock ticks since boot (field 22 of /proc/PID/stat).
pub fn start_ticks(pid: i32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces and parentheses: split after the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(19)?.parse().ok()
}

/// Whether `pid` is alive (not a zombie) and, when `ticks` is given, is the same process.
pub fn alive(pid: i32, ticks: Option<u64>) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    let Some(close) = stat.rfind(')') else {
        return false;
    };
    let mut fields = stat[close + 1..].split_whitespace();
    if fields.next() == Some("Z") {
        return false;
    }
    match ticks {
        Some(t) => fields.nth(18).and_then(|f| f.parse::<u64>().ok()) == Some(t),
        None => true,
    }
}

/// The live (not zombie) members of process group `pgid`, from `/proc`.
pub fn group_members(pgid: i32) -> Vec<i32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|&pid| {
            let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
                return false;
            };
            let Some(close) = stat.rfind(')') else {
                return false;
            };
            // After the command: state, ppid, pgrp.
            let f: Vec<&str> = stat[close + 1..].split_whitespace().take(3).collect();
            f.len() == 3 && f[0] != "Z" && f[2].parse() == Ok(pgid)
        })
        .collect()
}

/// Once the leader of process group `pgid` is gone (QEMU, which runs in
/// its own session): SIGKILL what is left of the group, helpers it forked
/// such as an `exec:` migration's `sh -c cat`, and wait up to `grace` for
/// each. Nothing is done while the leader lives. A group id stays reserved
/// while any member lives, so no unrelated process can be in that group.
pub async fn end_orphaned_group(pgid: i32, grace: Duration) {
    // One syscall in the common case: no process left in the group at all.
    if alive(pgid, None) || nix::sys::signal::killpg(Pid::from_raw(pgid), None).is_err() {
        return;
    }
    let left = group_members(pgid);
    for &pid in &left {
        signal(pid, Signal::SIGKILL);
    }
    for pid in left {
        wait_exit(pid, grace).await;
    }
}

/// Open a pidfd for `pid`. `None` if the process is gone.
fn pidfd_open(pid: i32) -> Option<OwnedFd> {
    // SAFETY: pidfd_open takes a pid and flags and returns a new fd or -1;
    // it touches no memory of ours.
    #[allow(unsafe_code)]
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        return None;
    }
    // SAFETY: the syscall just returned this fd to us and nothing else owns it.
    #[allow(unsafe_code)]
    Some(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// How a process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProcessExit {
    /// Exited with this status.
    Code(i32),
    /// Killed by this signal.
    Signal(i32),
    /// Not known (not this process's child, or reaped elsewhere).
    Unknown,
}

impl std::fmt::Display for ProcessExit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ProcessExit::Code(c) => write!(f, "exit status {c}"),
            ProcessExit::Signal(s) => {
                let name = Signal::try_from(*s).map_or("?", |s| s.as_str());
                write!(f, "killed by signal {s} ({name})")
            }
            ProcessExit::Unknown => f.write_str("status unknown"),
        }
    }
}

/// Reap `pid` if it is our child and has exited; harmless otherwise.
pub fn reap(pid: i32) {
    let _ = reap_status(pid);
}

/// Reap `pid` if it is our child and has exited, with its status.
pub fn reap_status(pid: i32) -> ProcessExit {
    match waitpid(Pid::from_raw(pid), Some(WaitPidFlag::WNOHANG)) {
        Ok(WaitStatus::Exited(_, code)) => ProcessExit::Code(code),
        Ok(WaitStatus::Signaled(_, sig, _)) => ProcessExit::Signal(sig as i32),
        _ => ProcessExit::Unknown,
    }
}

/// Wait (without a deadline) until `pid` exits, on a pidfd; its status when
/// it was our child and nobody else reaped it.
pub async fn wait_exit_status(pid: i32) -> ProcessExit {
    let Some(fd) = pidfd_open(pid) else {
        return ProcessExit::Unknown;
    };
    // SAFETY: `fd` is an OwnedFd moved into the AsyncFd, so it stays open and
    // is the same file description for the AsyncFd's whole life.
    #[allow(unsafe_code)]
    let registered = unsafe { AsyncFd::register_with_interest(fd, tokio::io::Interest::READABLE) };
    if let Ok(afd) = registered {
        let _ = afd.readable().await;
    }
    reap_status(pid)
}

/// Wait until `pid` exits, at most `timeout`. True when it has exited.
pub async fn wait_exit(pid: i32, timeout: Duration) -> bool {
    let Some(fd) = pidfd_open(pid) else {
        return true;
    };
    // SAFETY: `fd` is an OwnedFd moved into the AsyncFd, so it stays open and
    // is the same file description for the AsyncFd's whole life.
    #[allow(unsafe_code)]
    let registered = unsafe { AsyncFd::register_with_interest(fd, tokio::io::Interest::READABLE) };
    let Ok(afd) = registered else {
        return !alive(pid, None);
    };
    let exited = tokio::time::timeout(timeout, afd.readable()).await.is_ok();
    if exited {
        reap(pid);
    }
    exited
}

/// Send `sig` to `pid`; a vanished process is not an error.
pub fn signal(pid: i32, sig: Signal) {
    let _ = kill(Pid::from_raw(pid), sig);
}

/// SIGTERM, wait, then SIGKILL and wait. True when the process is gone.
pub async fn terminate(pid: i32, grace: Duration) -> bool {
    signal(pid, Signal::SIGTERM);
    if wait_exit(pid, grace).await {
        return true;
    }
    signal(pid, Signal::SIGKILL);
    wait_exit(pid, Duration::from_secs(10)).await
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A leader in its own group leaves a helper behind when it dies; the
    /// helper is ended only once the leader is gone.
    #[tokio::test]
    async fn an_orphaned_group_is_ended_after_its_leader() {
        let mut leader = tokio::process::Command::new("sh")
            .args(["-c", "sleep 300 & read x"])
            .stdin(std::process::Stdio::piped())
            .process_group(0)
            .spawn()
            .unwrap();
        let pgid = leader.id().unwrap() as i32;
        let helper = || group_members(pgid).into_iter().find(|&p| p != pgid);
        let mut found = None;
        for _ in 0..200 {
            found = helper();
            if found.is_some() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let sleeper = found.expect("the leader's helper in its group");
        end_orphaned_group(pgid, Duration::from_secs(1)).await;
        assert!(
            alive(sleeper, None),
            "nothing is ended while the leader lives"
        );
        drop(leader.stdin.take());
        leader.wait().await.unwrap();
        end_orphaned_group(pgid, Duration::from_secs(5)).await;
        assert!(!alive(sleeper, None), "the orphaned helper was ended");
        assert!(group_members(pgid).is_empty());
    }

    #[tokio::test]
    async fn waits_for_exit_on_a_pidfd_and_kills() {
        let mut child = tokio::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let pid = child.id().unwrap() as i32;
        let ticks = start_ticks(pid);
        assert!(ticks.is_some());
        assert!(alive(pid, ticks));
        assert!(
            !alive(pid, ticks.map(|t| t + 1)),
            "a different start time is a different process"
        );
        assert!(!wait_exit(pid, Duration::from_millis(100)).await);
        assert!(terminate(pid, Duration::from_secs(5)).await);
        let _ = child.wait().await;
        assert!(!alive(pid, ticks));
    }
}
