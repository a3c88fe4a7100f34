//! The error type of the QMP client.

use crate::protocol::ProtocolError;

/// Result alias for QMP operations.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong talking QMP.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// Connecting to the QMP socket at `path` failed.
    #[error("Cannot connect to QMP socket {path}: {message}")]
    Connect {
        /// Socket path.
        path: String,
        /// OS error text.
        message: String,
    },
    /// The connection is closed (EOF, I/O error, or closed earlier).
    #[error("QMP connection closed")]
    Disconnected,
    /// No reply (or awaited event) arrived within the timeout.
    #[error("QMP command {command} timed out")]
    Timeout {
        /// The command that timed out.
        command: String,
    },
    /// QEMU answered the command with an error.
    #[error("QMP error {class}: {desc}")]
    Qmp {
        /// QMP error class, e.g. `GenericError`, `DeviceNotFound`.
        class: String,
        /// Human readable description from QEMU.
        desc: String,
    },
    /// QEMU sent something that is not valid QMP. Fatal for the connection.
    #[error("QMP protocol error: {0}")]
    Protocol(#[from] ProtocolError),
    /// The QEMU on the other end is older than [`crate::MIN_QEMU_VERSION`].
    #[error("QEMU {major}.{minor}.{micro} is too old: QMP client needs QEMU 5.0 or newer")]
    UnsupportedVersion {
        /// Major version.
        major: u64,
        /// Minor version.
        minor: u64,
        /// Micro version.
        micro: u64,
    },
    /// A reply had an unexpected shape for the typed helper.
    #[error("Unexpected reply to {command}: {message}")]
    Decode {
        /// The command whose reply did not decode.
        command: String,
        /// What serde said.
        message: String,
    },
    /// A caller-supplied argument is unusable (e.g. an fd that cannot be duplicated).
    #[error("Invalid argument {name}: {message}")]
    InvalidArgument {
        /// Argument name.
        name: String,
        /// Why it is invalid.
        message: String,
    },
}
