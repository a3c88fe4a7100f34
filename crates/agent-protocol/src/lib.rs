//! The sandvm host <-> guest agent protocol, shared by the shim and the agent.
//!
//! - [`health`] / [`health_ttrpc`]: the unversioned `sandvm.agent.Health`
//!   service (`Check`: health, protocol version, agent build version).
//! - [`agent`] / [`agent_ttrpc`]: the versioned `sandvm.agent.v1.AgentService`
//!   with Kata agent.proto's operation names. The OCI spec and process travel
//!   as JSON bytes.
//! - [`AgentEndpoint`] and [`connect`] / [`wait_ready`]: the host side, which
//!   reaches the agent over virtio-serial, hybrid vsock or kernel vsock and
//!   refuses an agent of another protocol version.
//! - [`sync`]: the session handshake that lets a virtio-serial port, which has
//!   no connections of its own, carry one clean ttrpc session per host
//!   connection (see `docs/agent.md`).
//!
//! Generated with ttrpc-codegen at build time (no `protoc`).

mod client;
mod endpoint;
pub mod sync;

pub use client::{
    AgentClient, AgentVersions, ConnectError, DEFAULT_CONNECT_TIMEOUT, DEFAULT_REQUEST_TIMEOUT,
    check_versions, connect, ctx, wait_ready,
};
pub use endpoint::AgentEndpoint;

/// Protocol version this crate speaks: the `N` of the `sandvm.agent.vN`
/// package. Bump it (and the package name) on any incompatible change.
pub const PROTOCOL_VERSION: u32 = 1;

/// Build version of this crate (shared by the agent and the host helper).
pub const BUILD_VERSION: &str = env!("CARGO_PKG_VERSION");

/// Default vsock port the agent listens on (Kata's).
pub const AGENT_VSOCK_PORT: u32 = 1024;

/// Name of the agent's virtio-serial port (`/dev/virtio-ports/<name>` in the guest).
pub const AGENT_SERIAL_PORT_NAME: &str = "agent.channel.0";

/// virtio-fs tag of the shared folder (Kata's).
pub const SHARED_FS_TAG: &str = "kataShared";

/// Where the agent mounts the shared folder in the guest (Kata's layout);
/// container `<id>`'s root is `<this>/<id>/rootfs`.
pub const GUEST_SHARED_DIR: &str = "/run/kata-containers/shared/containers";

/// Largest read a `ReadStdout`/`ReadStderr` may ask for.
pub const MAX_READ_LEN: u32 = 1024 * 1024;

/// Largest OCI spec or process JSON the agent accepts.
pub const MAX_SPEC_LEN: usize = 1024 * 1024;

/// Messages of the unversioned health service (generated).
#[allow(warnings, missing_docs, clippy::all, clippy::unwrap_used)]
pub mod health {
    include!(concat!(env!("OUT_DIR"), "/health.rs"));
}

/// ttrpc client and server of the health service (generated).
#[allow(warnings, missing_docs, clippy::all, clippy::unwrap_used)]
pub mod health_ttrpc {
    include!(concat!(env!("OUT_DIR"), "/health_ttrpc.rs"));
}

/// Messages of `sandvm.agent.v1` (generated).
#[allow(warnings, missing_docs, clippy::all, clippy::unwrap_used)]
pub mod agent {
    include!(concat!(env!("OUT_DIR"), "/agent.rs"));
}

/// ttrpc client and server of `sandvm.agent.v1.AgentService` (generated).
#[allow(warnings, missing_docs, clippy::all, clippy::unwrap_used)]
pub mod agent_ttrpc {
    include!(concat!(env!("OUT_DIR"), "/agent_ttrpc.rs"));
}

pub use protobuf;
pub use ttrpc;
