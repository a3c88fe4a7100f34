//! vhost-device-vsock: the host side of hybrid vsock (`agent_channel =
//! "hybrid-vsock"`). It serves QEMU's vhost-user-vsock device on
//! `vhost-vsock.sock` and the host's connections on `vsock.sock`
//! (`CONNECT <port>\n`, answered `OK <n>\n`). Spawned before QEMU; ready
//! when both sockets listen.

use super::{Pending, Ready, spawn};
use crate::config::AgentChannel;
use crate::error::Result;
use crate::plan::agent::vsock_daemon_args;
use crate::qemu::core::Core;
use crate::qemu::record::Proc;
use crate::state::files;
use tracing::info;

impl Core {
    /// Spawn vhost-device-vsock when the agent channel is hybrid vsock.
    pub(crate) fn start_vsock_daemon(&mut self) -> Result<Option<Pending>> {
        let (dir, st) = self.parts("start vhost-device-vsock")?;
        if st.agent.as_ref().map(|a| a.kind) != Some(AgentChannel::HybridVsock) {
            return Ok(None);
        }
        for f in [files::VHOST_VSOCK, files::VSOCK] {
            let _ = std::fs::remove_file(dir.file(f));
        }
        let bin = st.config.agent.vsock_daemon.clone();
        let log = dir.file(files::VSOCK_LOG);
        let pid = spawn(&bin, &vsock_daemon_args(dir.path()), &log, None)?;
        info!(pid, "vhost-device-vsock spawned");
        let pending = Pending {
            name: "vhost-device-vsock",
            pid,
            dir: dir.path().to_path_buf(),
            log,
            ready: Ready::Listening(vec![files::VHOST_VSOCK, files::VSOCK]),
        };
        if let Some(a) = self.state.as_mut().and_then(|s| s.agent.as_mut()) {
            a.daemon = Proc::spawned(pid);
        }
        self.save()?;
        Ok(Some(pending))
    }

    /// Stop vhost-device-vsock and reap it.
    pub(crate) async fn stop_vsock_daemon(&mut self) {
        if let Some(a) = self.state.as_mut().and_then(|s| s.agent.as_mut()) {
            super::stop("vhost-device-vsock", &mut a.daemon, None).await;
        }
    }
}
