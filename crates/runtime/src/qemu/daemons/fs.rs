//! The shared-fs daemon: settled at create (the share), spawned first in a
//! start, stopped after QEMU.

use super::{Pending, Ready, spawn};
use crate::config::HypervisorConfig;
use crate::error::{HypervisorError, Result};
use crate::plan::sharedfs::{self, DEFAULT_SHARE, DaemonKind, FS_API_SOCKET, FS_SOCKET};
use crate::qemu::core::Core;
use crate::qemu::record::{FsState, Proc};
use crate::state::{SandboxDir, check_socket_path};
use crate::types::TemplateRole;
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use tracing::info;

/// At `create`: check the daemon's socket paths and settle the share
/// (`share`, else `<dir>/shared/`, created). `None` without a shared fs.
/// A template VM (`role`) always gets a new empty `<dir>/shared/`: its
/// guest never mounts it, and each clone's QEMU serves the clone's own.
pub fn prepare(
    cfg: &HypervisorConfig,
    dir: &SandboxDir,
    share: Option<PathBuf>,
    role: Option<TemplateRole>,
) -> Result<Option<FsState>> {
    let Some(kind) = DaemonKind::of(cfg.shared_fs.kind) else {
        return Ok(None);
    };
    if kind.spawns() {
        for s in [FS_SOCKET, FS_API_SOCKET] {
            check_socket_path(&dir.file(s))?;
        }
    }
    let share = share.filter(|_| role != Some(TemplateRole::Template));
    let share = match share {
        Some(p) => {
            let p = std::path::absolute(&p).unwrap_or(p);
            if !p.is_dir() {
                return Err(HypervisorError::invalid(
                    "shared folder",
                    p.display().to_string(),
                    "not a folder",
                ));
            }
            p
        }
        None => {
            let p = dir.file(DEFAULT_SHARE);
            std::fs::create_dir(&p).map_err(HypervisorError::io(p.display()))?;
            p
        }
    };
    Ok(Some(FsState {
        kind,
        share,
        proc: Proc::default(),
    }))
}

impl Core {
    /// Spawn the sandbox's shared-fs daemon, if it has one, and record its pid.
    /// Called first in a start, so the daemon comes up while QEMU's start is prepared.
    pub(crate) fn start_fs_daemon(&mut self) -> Result<Option<Pending>> {
        let (dir, st) = self.parts("start the shared-fs daemon")?;
        let Some(fs) = st.fs.clone().filter(|f| f.kind.spawns()) else {
            return Ok(None);
        };
        let cfg = &st.config;
        let bin = cfg.shared_fs.daemon.clone().ok_or(HypervisorError::Config(
            crate::config::ConfigError::Invalid {
                file: cfg.source.display().to_string(),
                key: "hypervisor.qemu.virtio_fs_daemon".into(),
                reason: "no daemon configured".into(),
            },
        ))?;
        let log = dir.file(&fs.kind.log());
        let root = nix::unistd::geteuid().is_root();
        let (pid, ready) = match fs.kind {
            DaemonKind::Virtiofsd => {
                let sock = dir.file(FS_SOCKET);
                let listener = crate::qemu::launch::bind_listener(&sock)?;
                let args = sharedfs::virtiofsd_args(cfg, &fs.share, root);
                let pid = spawn(&bin, &args, &log, Some(listener.as_raw_fd()))?;
                (pid, Ready::Now)
            }
            DaemonKind::Virtio9p => return Ok(None),
            DaemonKind::Nydusd => {
                let args = sharedfs::nydusd_args(cfg, dir.path());
                let pid = spawn(&bin, &args, &log, None)?;
                (
                    pid,
                    Ready::Nydusd {
                        share: fs.share.clone(),
                    },
                )
            }
        };
        info!(daemon = fs.kind.name(), pid, share = %fs.share.display(), "shared-fs daemon spawned");
        let pending = Pending {
            name: fs.kind.name(),
            pid,
            dir: dir.path().to_path_buf(),
            log,
            ready,
        };
        if let Some(f) = self.state.as_mut().and_then(|s| s.fs.as_mut()) {
            f.proc = Proc::spawned(pid);
        }
        self.save()?;
        Ok(Some(pending))
    }

    /// Stop the shared-fs daemon (SIGTERM, then SIGKILL) and reap it.
    pub(crate) async fn stop_fs_daemon(&mut self) {
        if let Some(f) = self.state.as_mut().and_then(|s| s.fs.as_mut()) {
            super::stop(f.kind.name(), &mut f.proc, None).await;
        }
    }
}
