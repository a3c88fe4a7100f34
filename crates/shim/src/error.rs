//! The shim's errors, and how containerd sees them (ttrpc status codes that
//! containerd's errdefs understand: not found, already exists, failed
//! precondition, not implemented).

use containerd_shim_protos::ttrpc::{self, Code};

use crate::bundle::BundleError;
use crate::config::ConfigError;
use crate::mounts::MountError;
use crate::spec::SpecError;

/// Everything a task request can fail with.
#[derive(Debug, thiserror::Error)]
pub enum ShimError {
    /// No such container in this shim.
    #[error("Container {0} not found")]
    NoContainer(String),
    /// No such exec in the container.
    #[error("Exec {exec} of container {cid} not found")]
    NoExec {
        /// The container.
        cid: String,
        /// The exec id.
        exec: String,
    },
    /// The id is taken.
    #[error("{what} {id} already exists")]
    Exists {
        /// "Container" or "Exec".
        what: &'static str,
        /// The id.
        id: String,
    },
    /// The process has exited (containerd treats this as not found).
    #[error("Process {0} already finished")]
    Finished(String),
    /// The request does not fit the process's state.
    #[error("{0}")]
    State(String),
    /// A request sandvm does not implement.
    #[error("{0} is not implemented by sandvm")]
    NotImplemented(&'static str),
    /// A bad argument.
    #[error("Invalid {what}: {why}")]
    Invalid {
        /// What.
        what: &'static str,
        /// Why.
        why: String,
    },
    /// The sandbox's VM is gone.
    #[error("The sandbox VM of container {0} has ended")]
    VmEnded(String),
    /// The configuration.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The bundle.
    #[error(transparent)]
    Bundle(#[from] BundleError),
    /// The spec.
    #[error(transparent)]
    Spec(#[from] SpecError),
    /// A mount.
    #[error(transparent)]
    Mount(#[from] MountError),
    /// Mounting the container's root filesystem.
    #[error("Cannot mount the root filesystem at {target}")]
    Rootfs {
        /// Where.
        target: String,
        /// containerd-shim's mount error.
        #[source]
        source: containerd_shim::Error,
    },
    /// The VM (runtime) failed.
    #[error("Sandbox {sid}: {what} failed")]
    Hypervisor {
        /// The sandbox.
        sid: String,
        /// The operation.
        what: &'static str,
        /// The runtime's error (boxed: it is large).
        #[source]
        source: Box<runtime::HypervisorError>,
    },
    /// The agent could not be reached.
    #[error("Sandbox {sid}: the agent is not reachable")]
    Connect {
        /// The sandbox.
        sid: String,
        /// Why.
        #[source]
        source: sandvm_agent_protocol::ConnectError,
    },
    /// An agent call failed.
    #[error("Agent call {call} failed")]
    Agent {
        /// The call.
        call: &'static str,
        /// The ttrpc error.
        #[source]
        source: AgentCallError,
    },
    /// The pod's network (its namespace, the tap, the tc filters).
    #[error("Sandbox {sid}: pod networking failed")]
    Network {
        /// The sandbox.
        sid: String,
        /// Why.
        #[source]
        source: crate::network::NetError,
    },
    /// Opening a FIFO or another file.
    #[error("Cannot {what} {path}")]
    Io {
        /// What was done.
        what: &'static str,
        /// The path.
        path: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// A ttrpc error of an agent call, shown as the agent's status (code and
/// message) rather than ttrpc's debug form.
#[derive(Debug)]
pub struct AgentCallError(pub ttrpc::Error);

impl std::fmt::Display for AgentCallError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.0 {
            ttrpc::Error::RpcStatus(s) => write!(f, "{:?}: {}", s.code(), s.message()),
            e => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for AgentCallError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match &self.0 {
            ttrpc::Error::RpcStatus(_) => None,
            e => Some(e),
        }
    }
}

impl ShimError {
    /// An agent call error, for `map_err`.
    pub fn agent(call: &'static str) -> impl FnOnce(ttrpc::Error) -> ShimError {
        move |source| ShimError::Agent {
            call,
            source: AgentCallError(source),
        }
    }

    /// The ttrpc code containerd maps back to its error kinds.
    pub fn code(&self) -> Code {
        match self {
            ShimError::NoContainer(_) | ShimError::NoExec { .. } | ShimError::Finished(_) => {
                Code::NOT_FOUND
            }
            ShimError::Exists { .. } => Code::ALREADY_EXISTS,
            ShimError::State(_) | ShimError::VmEnded(_) => Code::FAILED_PRECONDITION,
            ShimError::NotImplemented(_) => Code::UNIMPLEMENTED,
            ShimError::Invalid { .. } | ShimError::Spec(_) => Code::INVALID_ARGUMENT,
            _ => Code::UNKNOWN,
        }
    }
}

/// The error and its sources, one line (containerd shows only the message).
pub fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let m = c.to_string();
        if !s.contains(&m) {
            s.push_str(": ");
            s.push_str(&m);
        }
        cur = c.source();
    }
    s
}

impl From<ShimError> for ttrpc::Error {
    fn from(e: ShimError) -> ttrpc::Error {
        ttrpc::Error::RpcStatus(ttrpc::get_status(e.code(), chain(&e)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn agent_statuses_read_as_code_and_message() {
        let st = ttrpc::get_status(Code::INTERNAL, "mount failed".to_string());
        let e = ShimError::agent("CreateContainer")(ttrpc::Error::RpcStatus(st));
        assert_eq!(
            chain(&e),
            "Agent call CreateContainer failed: INTERNAL: mount failed"
        );
    }

    #[test]
    fn codes_and_messages_reach_containerd() {
        let e = ShimError::Finished("c1".into());
        assert_eq!(e.code(), Code::NOT_FOUND);
        let io = ShimError::Io {
            what: "open",
            path: "/x/stdout".into(),
            source: std::io::Error::from_raw_os_error(libc::ENXIO),
        };
        let msg = chain(&io);
        assert!(msg.starts_with("Cannot open /x/stdout: "), "{msg}");
        match ttrpc::Error::from(ShimError::NotImplemented("Checkpoint")) {
            ttrpc::Error::RpcStatus(s) => {
                assert_eq!(s.code(), Code::UNIMPLEMENTED);
                assert!(s.message().contains("Checkpoint"));
            }
            other => panic!("{other:?}"),
        }
    }
}
