//! The agent reaps every child: its own launchers, the container processes
//! re-parented to it (it is a subreaper), and their orphans. One task waits
//! for SIGCHLD and calls `waitpid(-1)`; exit statuses go to whoever
//! registered the pid. A pid is always registered before it can be reaped by
//! us: launchers are forked under the registry lock, and a launcher exits
//! (re-parenting its child to us) only after the agent registered that child.

use std::collections::HashMap;
use std::io;
use std::sync::{Arc, Mutex, MutexGuard};

use nix::errno::Errno;
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::watch;

/// Receives a process's exit status: `None` while it runs, then
/// `Some(code)` (128 + signal for a signal death, as runc reports).
pub type ExitWatch = watch::Receiver<Option<i32>>;

enum Waiter {
    Ignore,
    Watch(watch::Sender<Option<i32>>),
}

/// The registry of children whose exits someone wants.
#[derive(Default)]
pub struct Reaper {
    waiters: Mutex<HashMap<i32, Waiter>>,
}

impl Reaper {
    /// A reaper; call [`Reaper::start`] inside the runtime before spawning.
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<i32, Waiter>> {
        self.waiters.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Starts the SIGCHLD task.
    pub fn start(self: &Arc<Self>) -> io::Result<()> {
        let mut sig = signal(SignalKind::child())?;
        let me = Arc::clone(self);
        tokio::spawn(async move {
            loop {
                me.reap_all();
                if sig.recv().await.is_none() {
                    break;
                }
            }
        });
        Ok(())
    }

    /// Runs `spawn` (which forks a child and returns its pid) under the
    /// registry lock and registers the pid as one whose exit nobody awaits.
    pub fn spawn_ignored<T>(&self, spawn: impl FnOnce() -> io::Result<(T, i32)>) -> io::Result<T> {
        let mut w = self.lock();
        let (t, pid) = spawn()?;
        w.insert(pid, Waiter::Ignore);
        Ok(t)
    }

    /// Registers `pid` and returns its exit watch.
    pub fn watch(&self, pid: i32) -> ExitWatch {
        let (tx, rx) = watch::channel(None);
        self.lock().insert(pid, Waiter::Watch(tx));
        rx
    }

    fn reap_all(&self) {
        loop {
            let (pid, code) = match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::Exited(pid, code)) => (pid.as_raw(), code),
                Ok(WaitStatus::Signaled(pid, sig, _)) => (pid.as_raw(), 128 + sig as i32),
                Ok(WaitStatus::StillAlive) | Err(Errno::ECHILD) => return,
                Ok(_) => continue,
                Err(Errno::EINTR) => continue,
                Err(e) => {
                    tracing::warn!(error = %e, "waitpid");
                    return;
                }
            };
            match self.lock().remove(&pid) {
                Some(Waiter::Watch(tx)) => {
                    tracing::debug!(pid, code, "process exited");
                    let _ = tx.send(Some(code));
                }
                Some(Waiter::Ignore) => {}
                None => tracing::debug!(pid, code, "reaped an orphan"),
            }
        }
    }
}

/// Waits for the exit status on a watch.
pub async fn wait_exit(w: &mut ExitWatch) -> i32 {
    loop {
        if let Some(code) = *w.borrow_and_update() {
            return code;
        }
        if w.changed().await.is_err() {
            // the reaper dropped the sender without a status: should not happen
            return w.borrow().unwrap_or(255);
        }
    }
}

impl std::fmt::Debug for Reaper {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reaper")
            .field("registered", &self.lock().len())
            .finish()
    }
}
