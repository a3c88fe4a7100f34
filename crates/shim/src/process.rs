//! A task process as the shim tracks it: a container's init or an exec,
//! its state, its standard I/O paths, and its exit.

use std::sync::Mutex;
use std::time::SystemTime;

use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;

/// The standard I/O containerd gave a process.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stdio {
    /// stdin FIFO ("" = none).
    pub stdin: String,
    /// stdout FIFO or `file://` URI ("" = none).
    pub stdout: String,
    /// stderr FIFO or `file://` URI ("" = none).
    pub stderr: String,
    /// A terminal (stdout carries it; there is no stderr).
    pub terminal: bool,
}

/// Where a process is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Made, not started.
    Created,
    /// Started.
    Running,
    /// Exited with a status at a time.
    Exited {
        /// Exit status (128 + signal for a signal).
        status: u32,
        /// When.
        at: SystemTime,
    },
}

/// One process.
#[derive(Debug)]
pub struct Proc {
    /// containerd's exec id ("" for the init).
    pub exec_id: String,
    /// The agent's exec id ("" for the init).
    pub guest_exec: String,
    /// Its standard I/O.
    pub stdio: Stdio,
    /// An exec's OCI process JSON (none for the init).
    pub spec: Option<Vec<u8>>,
    state: watch::Sender<State>,
    /// CloseIO: the stdin pump forwards what is buffered, then closes.
    pub close_stdin: Notify,
    tasks: Mutex<Vec<JoinHandle<()>>>,
}

impl Proc {
    /// A created process.
    pub fn new(exec_id: &str, guest_exec: String, stdio: Stdio, spec: Option<Vec<u8>>) -> Proc {
        Proc {
            exec_id: exec_id.to_string(),
            guest_exec,
            stdio,
            spec,
            state: watch::Sender::new(State::Created),
            close_stdin: Notify::new(),
            tasks: Mutex::new(Vec::new()),
        }
    }

    /// Its state now.
    pub fn state(&self) -> State {
        *self.state.borrow()
    }

    /// Created -> Running.
    pub fn set_running(&self) {
        self.state.send_if_modified(|s| {
            if *s == State::Created {
                *s = State::Running;
                true
            } else {
                false
            }
        });
    }

    /// Records the exit; false when it was recorded before.
    pub fn set_exited(&self, status: u32) -> bool {
        let at = SystemTime::now();
        self.state.send_if_modified(|s| {
            if matches!(s, State::Exited { .. }) {
                false
            } else {
                *s = State::Exited { status, at };
                true
            }
        })
    }

    /// The exit, once there is one.
    pub fn exit(&self) -> Option<(u32, SystemTime)> {
        match self.state() {
            State::Exited { status, at } => Some((status, at)),
            _ => None,
        }
    }

    /// Waits for the exit.
    pub async fn wait(&self) -> (u32, SystemTime) {
        let mut rx = self.state.subscribe();
        loop {
            if let State::Exited { status, at } = *rx.borrow_and_update() {
                return (status, at);
            }
            if rx.changed().await.is_err() {
                // the sender lives in self: unreachable, but never hang
                return (crate::sandbox::VM_DIED_STATUS, SystemTime::now());
            }
        }
    }

    /// Keeps a task of this process (I/O pumps), aborted by [`Proc::abort_tasks`].
    pub fn keep(&self, t: JoinHandle<()>) {
        self.tasks.lock().unwrap_or_else(|p| p.into_inner()).push(t);
    }

    /// Aborts the process's remaining tasks (its stdin pump after the exit).
    pub fn abort_tasks(&self) {
        for t in self
            .tasks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .drain(..)
        {
            t.abort();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_process_exits_once_and_waiters_see_it() {
        let p = std::sync::Arc::new(Proc::new("", String::new(), Stdio::default(), None));
        assert_eq!(p.state(), State::Created);
        let w = tokio::spawn({
            let p = p.clone();
            async move { p.wait().await.0 }
        });
        p.set_running();
        assert_eq!(p.state(), State::Running);
        assert!(p.set_exited(7));
        assert!(!p.set_exited(9));
        assert_eq!(w.await.unwrap(), 7);
        assert_eq!(p.exit().map(|e| e.0), Some(7));
        p.set_running();
        assert!(matches!(p.state(), State::Exited { status: 7, .. }));
    }
}
