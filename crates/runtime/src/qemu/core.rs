//! [`Core`]: one sandbox's mutable state inside the [`Qemu`](super::Qemu)
//! handle: the locked folder, the record, the QMP connection and the fds of
//! cold-plugged NICs. The handle keeps it behind an async mutex, so every
//! operation that changes the sandbox has it to itself.

use super::record::QemuRecord;
use crate::config::HypervisorConfig;
use crate::error::{HypervisorError, Result};
use crate::host::process;
use crate::state::{SandboxDir, StateRoot, files};
use crate::types::VmState;
use std::collections::BTreeMap;
use std::os::fd::OwnedFd;
use std::time::Duration;
use tracing::info;

/// Timeout for QMP commands the runtime issues.
pub const QMP_TIMEOUT: Duration = Duration::from_secs(10);
/// Timeout for reattaching to a running VM's QMP socket.
pub const QMP_ATTACH_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a closed QMP connection waits for QEMU's exit to show: QEMU's
/// sockets close as it exits, a moment before its pid is gone.
pub const EXIT_SETTLE: Duration = Duration::from_secs(2);

/// One sandbox's mutable state.
#[derive(Debug)]
pub struct Core {
    /// The state root.
    pub(crate) root: StateRoot,
    /// The checked config (annotations applied once created).
    pub(crate) config: HypervisorConfig,
    /// The locked sandbox folder, once created or attached.
    pub(crate) dir: Option<SandboxDir>,
    /// The record, once created or attached.
    pub(crate) state: Option<QemuRecord>,
    /// The command connection (`qmp.sock`).
    pub(crate) qmp: Option<qmp::Client>,
    /// Caller-opened fds of cold-plugged NICs, by device id, until start.
    pub(crate) fds: BTreeMap<String, OwnedFd>,
}

impl Core {
    /// A core for a new sandbox under `root`.
    pub(crate) fn new(root: StateRoot, config: HypervisorConfig) -> Core {
        Core {
            root,
            config,
            dir: None,
            state: None,
            qmp: None,
            fds: BTreeMap::new(),
        }
    }

    /// The folder and the record, or [`HypervisorError::NoSandbox`].
    pub(crate) fn parts(&self, op: &'static str) -> Result<(&SandboxDir, &QemuRecord)> {
        match (&self.dir, &self.state) {
            (Some(d), Some(s)) => Ok((d, s)),
            _ => Err(HypervisorError::NoSandbox { op }),
        }
    }

    /// The record, mutable.
    pub(crate) fn record_mut(&mut self, op: &'static str) -> Result<&mut QemuRecord> {
        self.state.as_mut().ok_or(HypervisorError::NoSandbox { op })
    }

    /// The sandbox id, or "-".
    pub(crate) fn id(&self) -> &str {
        self.dir.as_ref().map_or("-", |d| d.id())
    }

    /// Save the record.
    pub(crate) fn save(&self) -> Result<()> {
        let (dir, st) = self.parts("save state")?;
        dir.save(st)?;
        Ok(())
    }

    /// Set the lifecycle state and save.
    pub(crate) fn set_state(&mut self, s: VmState) -> Result<()> {
        if let Some(st) = self.state.as_mut() {
            st.state = s;
        }
        self.save()
    }

    /// The error for an operation that does not fit the current state.
    pub(crate) fn wrong_state(&self, op: &'static str) -> HypervisorError {
        match (&self.dir, &self.state) {
            (Some(d), Some(s)) => HypervisorError::WrongState {
                id: d.id().to_string(),
                state: s.state,
                op,
            },
            _ => HypervisorError::NoSandbox { op },
        }
    }

    /// Fail unless the VM runs (or is paused).
    pub(crate) fn require_running(&self, op: &'static str) -> Result<()> {
        match self.state.as_ref().map(|s| s.state) {
            Some(VmState::Running) | Some(VmState::Paused) => Ok(()),
            Some(_) => Err(self.wrong_state(op)),
            None => Err(HypervisorError::NoSandbox { op }),
        }
    }

    /// The live QMP connection, connecting to `qmp.sock` when needed.
    pub(crate) async fn qmp(&mut self) -> Result<&qmp::Client> {
        if self.qmp.as_ref().is_some_and(|c| c.is_closed()) {
            self.qmp = None;
        }
        if self.qmp.is_none() {
            let (dir, _) = self.parts("connect to QMP")?;
            let path = dir.file(files::QMP);
            let opts = qmp::ClientOptions {
                handshake_timeout: QMP_ATTACH_TIMEOUT,
                command_timeout: Some(QMP_TIMEOUT),
                ..Default::default()
            };
            let c = qmp::Client::connect_with(&path, opts)
                .await
                .map_err(HypervisorError::qmp("connect"))?;
            self.qmp = Some(c);
        }
        self.qmp.as_ref().ok_or(HypervisorError::NoSandbox {
            op: "connect to QMP",
        })
    }

    /// `e`, or, when it says the QMP connection closed (or could not be
    /// made) and this sandbox's QEMU is gone, [`HypervisorError::QemuExited`]
    /// naming `op`: the caller learns that QEMU died, not only that a socket
    /// closed. Waits at most [`EXIT_SETTLE`] for the exit to show.
    pub(crate) async fn explain_exit(&self, op: &str, e: HypervisorError) -> HypervisorError {
        match self
            .state
            .as_ref()
            .and_then(|s| Some((s.pid?, s.pid_start_ticks)))
        {
            Some((pid, ticks)) => exited_or(pid, ticks, op, e).await,
            None => e,
        }
    }

    /// QEMU's pid, if it runs.
    pub(crate) fn live_pid(&self) -> Option<i32> {
        self.state.as_ref()?.live_pid()
    }
}

/// `e` as [`HypervisorError::QemuExited`] when it is a lost QMP connection
/// and QEMU `pid` (started at `ticks`) is gone, or goes within [`EXIT_SETTLE`].
pub(crate) async fn exited_or(
    pid: i32,
    ticks: Option<u64>,
    op: &str,
    e: HypervisorError,
) -> HypervisorError {
    if !e.is_lost_connection() {
        return e;
    }
    // QEMU's sockets close as it exits, a moment before its pid is gone.
    let gone = !process::alive(pid, ticks) || process::wait_exit(pid, EXIT_SETTLE).await;
    if !gone {
        return e;
    }
    info!(pid, op, "QEMU exited during the operation");
    HypervisorError::QemuExited {
        pid,
        op: op.to_string(),
        source: Box::new(e),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[tokio::test]
    async fn a_lost_qmp_connection_of_a_dead_qemu_says_it_exited() {
        let lost = || HypervisorError::Qmp {
            op: "blockdev-add",
            source: qmp::Error::Disconnected,
        };
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let pid = child.id() as i32;
        let ticks = process::start_ticks(pid);
        // Still running: a lost connection stays what it is.
        let e = exited_or(pid, ticks, "a device hotplug", lost()).await;
        assert!(matches!(e, HypervisorError::Qmp { .. }), "{e:?}");
        // Not a lost connection: unchanged.
        let timeout = HypervisorError::Qmp {
            op: "blockdev-add",
            source: qmp::Error::Timeout {
                command: "blockdev-add".into(),
            },
        };
        let e = exited_or(pid, ticks, "a device hotplug", timeout).await;
        assert!(matches!(e, HypervisorError::Qmp { .. }), "{e:?}");
        child.kill().unwrap();
        child.wait().unwrap();
        let e = exited_or(pid, ticks, "a device hotplug", lost()).await;
        assert_eq!(
            e.to_string(),
            format!("QEMU (pid {pid}) exited during a device hotplug")
        );
        let source = std::error::Error::source(&e).unwrap().to_string();
        assert!(source.contains("blockdev-add"), "{source}");
    }
}
