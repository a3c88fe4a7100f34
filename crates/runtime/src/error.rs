//! [`HypervisorError`]: every way an operation of the runtime can fail.
//!
//! Each variant is one cause and keeps its source: the configuration, the
//! state store, the PCI slot allocator, the security setup, the rendered QEMU
//! invocation and the accelerator decision keep their own error types
//! (`#[from]`); a request the caller got wrong has its own variants.

use crate::config::ConfigError;
use crate::host::accel::AccelError;
use crate::host::security::SecurityError;
use crate::plan::PlanError;
use crate::plan::pci::PciError;
use crate::state::StateError;
use crate::types::{VmExit, VmState};
use std::time::Duration;

/// Errors of hypervisor operations.
#[derive(Debug, thiserror::Error)]
pub enum HypervisorError {
    /// Bad configuration, or an annotation that is not allowed.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// State store problem.
    #[error(transparent)]
    State(#[from] StateError),
    /// No PCI slot for a device.
    #[error(transparent)]
    Pci(#[from] PciError),
    /// The security setup (SELinux label, QEMU's identity) failed.
    #[error(transparent)]
    Security(#[from] SecurityError),
    /// The QEMU invocation planned from the config is not valid.
    #[error(transparent)]
    Plan(#[from] PlanError),
    /// The accelerator the config asks for cannot be used.
    #[error(transparent)]
    Accel(#[from] AccelError),
    /// The operation is not implemented (yet) by this backend.
    #[error("{op} is not supported yet by the {backend} backend")]
    NotSupported {
        /// The operation.
        op: &'static str,
        /// The backend.
        backend: &'static str,
    },
    /// The sandbox's machine or host cannot do this (e.g. hotplug on microvm).
    #[error("Cannot {what}: {reason}")]
    Unsupported {
        /// What was asked.
        what: String,
        /// Why it cannot be done here.
        reason: String,
    },
    /// A value the caller passed is not acceptable.
    #[error("Invalid {what} {value:?}: {reason}")]
    InvalidArgument {
        /// What kind of value (device id, MAC address, tap name, ...).
        what: &'static str,
        /// The value.
        value: String,
        /// Why.
        reason: String,
    },
    /// No device with this id in the sandbox.
    #[error("No device {id} in sandbox {sandbox} (see `sandvm devices`)")]
    NoSuchDevice {
        /// The device id.
        id: String,
        /// The sandbox.
        sandbox: String,
    },
    /// The device id is taken.
    #[error("Device id {id} is already in use in sandbox {sandbox}")]
    DeviceIdInUse {
        /// The device id.
        id: String,
        /// The sandbox.
        sandbox: String,
    },
    /// A resize outside what the config allows, or a limit of the machine reached.
    #[error("Cannot {what}: {reason}")]
    OutOfRange {
        /// What was asked (`resize memory to 9000 MiB`).
        what: String,
        /// The limit, naming the config key that sets it.
        reason: String,
    },
    /// The operation does not fit the sandbox's current state.
    #[error("Sandbox {id} is {state}; cannot {op}")]
    WrongState {
        /// Sandbox id.
        id: String,
        /// Its state.
        state: VmState,
        /// The operation.
        op: &'static str,
    },
    /// The operation needs a created sandbox.
    #[error("No sandbox has been created or loaded; cannot {op}")]
    NoSandbox {
        /// The operation.
        op: &'static str,
    },
    /// QEMU could not be started, or died while starting. Carries its stderr.
    #[error("QEMU failed to start: {reason}{}", tail_suffix("QEMU stderr", .stderr))]
    StartFailed {
        /// What went wrong.
        reason: String,
        /// The tail of QEMU's stderr.
        stderr: String,
    },
    /// A helper daemon (virtiofsd, nydusd, swtpm, vhost-device-vsock) failed.
    #[error("{daemon}: {reason}{}", tail_suffix("its log", .log))]
    Daemon {
        /// The daemon.
        daemon: &'static str,
        /// What went wrong.
        reason: String,
        /// The tail of its log.
        log: String,
    },
    /// A QMP operation failed.
    #[error("QMP {op}: {source}")]
    Qmp {
        /// The operation.
        op: &'static str,
        /// The QMP error.
        #[source]
        source: qmp::Error,
    },
    /// QEMU exited (or was killed) while an operation was talking to it:
    /// its QMP connection closed and its process is gone.
    #[error("QEMU (pid {pid}) exited during {op}")]
    QemuExited {
        /// QEMU's pid.
        pid: i32,
        /// What was going on.
        op: String,
        /// The error the operation saw (a closed QMP connection).
        #[source]
        source: Box<HypervisorError>,
    },
    /// The VM has ended (or is dead in place: a panicked or failed guest).
    #[error("Sandbox {id}: {exit}")]
    VmEnded {
        /// Sandbox id.
        id: String,
        /// How it ended.
        exit: VmExit,
    },
    /// A migration (template save, clone load) did not complete.
    #[error("{op} {uri}: migration {status}{}", desc_suffix(.desc))]
    Migration {
        /// `migrate` or `migrate-incoming`.
        op: &'static str,
        /// The migration URI.
        uri: String,
        /// The final status (`failed`, `cancelled`).
        status: String,
        /// QEMU's description of the failure.
        desc: String,
    },
    /// A snapshot cannot be written or restored: incomplete, damaged, or
    /// made for another QEMU, machine or config.
    #[error("Snapshot {path}: {reason}")]
    Snapshot {
        /// The snapshot folder.
        path: String,
        /// What is wrong (naming the key, file or version).
        reason: String,
    },
    /// An operation ran out of time.
    #[error("{op} timed out after {after:?}")]
    Timeout {
        /// The operation.
        op: &'static str,
        /// How long we waited.
        after: Duration,
    },
    /// An I/O error on a named path or operation.
    #[error("{what}: {source}")]
    Io {
        /// The path or operation.
        what: String,
        /// The error.
        #[source]
        source: std::io::Error,
    },
}

fn tail_suffix(what: &str, s: &str) -> String {
    if s.trim().is_empty() {
        String::new()
    } else {
        format!("\n{what}:\n{}", s.trim_end())
    }
}

fn desc_suffix(s: &str) -> String {
    if s.trim().is_empty() {
        String::new()
    } else {
        format!(": {}", s.trim())
    }
}

impl HypervisorError {
    /// Wrap a QMP error with the operation it came from.
    pub fn qmp(op: &'static str) -> impl Fn(qmp::Error) -> HypervisorError {
        move |source| HypervisorError::Qmp { op, source }
    }

    /// Wrap an I/O error with what it was about.
    pub fn io(what: impl std::fmt::Display) -> impl Fn(std::io::Error) -> HypervisorError {
        let what = what.to_string();
        move |source| HypervisorError::Io {
            what: what.clone(),
            source,
        }
    }

    /// An invalid caller value.
    pub fn invalid(
        what: &'static str,
        value: impl Into<String>,
        reason: impl Into<String>,
    ) -> HypervisorError {
        HypervisorError::InvalidArgument {
            what,
            value: value.into(),
            reason: reason.into(),
        }
    }

    /// Something this sandbox's machine or host cannot do.
    pub fn unsupported(what: impl Into<String>, reason: impl Into<String>) -> HypervisorError {
        HypervisorError::Unsupported {
            what: what.into(),
            reason: reason.into(),
        }
    }

    /// Whether this error says the QMP connection was lost (QEMU may be gone).
    pub fn is_lost_connection(&self) -> bool {
        matches!(
            self,
            HypervisorError::Qmp {
                source: qmp::Error::Disconnected | qmp::Error::Connect { .. },
                ..
            }
        )
    }
}

/// Result of hypervisor operations.
pub type Result<T> = std::result::Result<T, HypervisorError>;
