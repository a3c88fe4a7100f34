//! The agent channel (sandvm's keys): `agent_channel`, `agent_port`,
//! `vsock_daemon`, `valid_vsock_daemon_paths`.

use super::{Ctx, k};
use crate::config::ConfigError;
use crate::config::raw::RawQemu;
use crate::config::types::*;
use std::path::PathBuf;

/// The agent's vsock port when unset (Kata's agent port).
pub const DEFAULT_AGENT_PORT: u32 = 1024;
/// vhost-device-vsock when unset.
pub const DEFAULT_VSOCK_DAEMON: &str = "/usr/libexec/vhost-device-vsock";

pub(super) fn check(
    cx: &Ctx<'_>,
    raw: &RawQemu,
    factory: &FactoryConfig,
) -> Result<AgentConfig, ConfigError> {
    let channel = match raw.agent_channel.as_deref() {
        None | Some("") | Some("virtio-serial") => Some(AgentChannel::VirtioSerial),
        Some("hybrid-vsock") => Some(AgentChannel::HybridVsock),
        Some("vsock") => Some(AgentChannel::Vsock),
        Some("none") => None,
        Some(o) => {
            return Err(cx.err(
                &k("agent_channel"),
                format!(
                    "unknown channel {o:?}; expected virtio-serial, hybrid-vsock, vsock or none"
                ),
            ));
        }
    };
    let port = match raw.agent_port {
        None | Some(0) => DEFAULT_AGENT_PORT,
        Some(p) if (1..i64::from(u32::MAX)).contains(&p) => p as u32,
        Some(p) => {
            return Err(cx.err(
                &k("agent_port"),
                format!("must be 1 to {} (got {p})", u32::MAX - 1),
            ));
        }
    };
    let vsock_daemon = cx
        .opt_path(&k("vsock_daemon"), &raw.vsock_daemon)?
        .unwrap_or_else(|| PathBuf::from(DEFAULT_VSOCK_DAEMON));
    if channel == Some(AgentChannel::HybridVsock) {
        cx.allowed(
            &k("vsock_daemon"),
            &k("valid_vsock_daemon_paths"),
            &vsock_daemon,
            raw.valid_vsock_daemon_paths.as_deref().unwrap_or(&[]),
        )?;
        // vhost-user needs guest memory shared with the daemon; a template
        // clone maps the template's memory privately.
        if factory.enable_template {
            return Err(cx.err(
                &k("agent_channel"),
                "hybrid-vsock needs shared guest memory, which VM templating's clones do not have; use virtio-serial",
            ));
        }
    }
    Ok(AgentConfig {
        channel,
        port,
        vsock_daemon,
    })
}
