//! Where the host reaches the agent.

use std::fmt;
use std::path::PathBuf;

/// How the host reaches the agent of one sandbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AgentEndpoint {
    /// A Unix socket QEMU serves for the virtio-serial port
    /// [`AGENT_SERIAL_PORT_NAME`](crate::AGENT_SERIAL_PORT_NAME)
    /// (`-chardev socket,server=on` + `-device virtserialport`).
    Serial {
        /// The chardev's socket path.
        path: PathBuf,
    },
    /// Hybrid vsock: the Unix socket of vhost-device-vsock (`uds-path`); the
    /// host writes `CONNECT <port>\n`, reads `OK <n>\n`, and the stream is
    /// then the guest's vsock connection.
    HybridVsock {
        /// vhost-device-vsock's `uds-path`.
        path: PathBuf,
        /// The guest's vsock port, normally [`AGENT_VSOCK_PORT`](crate::AGENT_VSOCK_PORT).
        port: u32,
    },
    /// Kernel vsock (AF_VSOCK; needs `/dev/vhost-vsock` on the host).
    Vsock {
        /// The guest's context id.
        cid: u32,
        /// The guest's vsock port.
        port: u32,
    },
}

impl fmt::Display for AgentEndpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Serial { path } => write!(f, "virtio-serial socket {}", path.display()),
            Self::HybridVsock { path, port } => {
                write!(f, "hybrid vsock {} port {port}", path.display())
            }
            Self::Vsock { cid, port } => write!(f, "vsock cid {cid} port {port}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_names_the_endpoint() {
        let e = AgentEndpoint::HybridVsock {
            path: "/run/x/vsock.sock".into(),
            port: 1024,
        };
        assert_eq!(e.to_string(), "hybrid vsock /run/x/vsock.sock port 1024");
        let e = AgentEndpoint::Vsock { cid: 3, port: 1024 };
        assert_eq!(e.to_string(), "vsock cid 3 port 1024");
    }
}
