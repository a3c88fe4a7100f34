//! The sandbox supervisor: what acts on a VM's events when no shim is watching.
//!
//! QEMU gets a second QMP monitor, `events.sock`, when the config asks for
//! something that must happen on an event. The supervisor holds that monitor
//! for the VM's whole life (the first one, `qmp.sock`, stays free for commands
//! from any process) and:
//!
//! - on `GUEST_PANICKED`, dumps guest memory as an ELF vmcore into
//!   `<guest_memory_dump_path>/<id>/`, then ends QEMU (`-action panic=pause`
//!   keeps the guest there until the dump is written);
//! - when the shared-fs daemon (virtiofsd, nydusd) or swtpm exits, logs it, ends QEMU
//!   and cleans the sandbox up, as Kata's `onQuit` does;
//! - exits when QEMU's monitor closes.
//!
//! The `sandvm` CLI runs it as a detached process; a shim that embeds the
//! runtime can run [`run`] in a task of its own instead.

use crate::config::HypervisorConfig;
use crate::state::files;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tracing::{error, info, warn};

/// Time allowed for a guest memory dump.
pub const DUMP_TIMEOUT: Duration = Duration::from_secs(600);

/// Errors of the supervisor.
#[derive(Debug, thiserror::Error)]
pub enum SuperviseError {
    /// The events monitor could not be reached.
    #[error("Supervisor cannot attach to {path}: {source}")]
    Attach {
        /// The socket.
        path: String,
        /// Why.
        #[source]
        source: qmp::Error,
    },
    /// A dump could not be written.
    #[error("Guest memory dump to {path} failed: {reason}")]
    Dump {
        /// The file.
        path: String,
        /// Why.
        reason: String,
    },
}

/// Whether a config needs a supervisor.
pub fn needed(cfg: &HypervisorConfig) -> bool {
    cfg.guest_memory_dump_path.is_some()
        || cfg.shared_fs.kind != crate::config::SharedFs::None
        || cfg.extras.swtpm.is_some()
}

/// Where a dump of sandbox `id` goes, named by the time of the panic.
pub fn dump_file(cfg_dir: &Path, id: &str, unix_secs: i64) -> PathBuf {
    cfg_dir.join(id).join(format!("vmcore-{unix_secs}.elf"))
}

/// Supervise the sandbox in `dir` until QEMU's events monitor closes.
pub async fn run(dir: &Path, id: &str, cfg: &HypervisorConfig) -> Result<(), SuperviseError> {
    let path = dir.join(files::EVENTS);
    let client = qmp::Client::connect(&path)
        .await
        .map_err(|source| SuperviseError::Attach {
            path: path.display().to_string(),
            source,
        })?;
    let mut events = client.events();
    info!(id, "supervising");
    // The shared-fs daemon (if any): its exit stops the sandbox.
    let daemon_exit = crate::qemu::daemons::wait_daemon_exit(dir);
    tokio::pin!(daemon_exit);
    // swtpm (if any): its exit stops the sandbox too.
    let tpm_exit = crate::qemu::daemons::swtpm::wait_exit(dir);
    tokio::pin!(tpm_exit);
    loop {
        let ev = tokio::select! {
            ev = events.recv() => ev,
            _ = client.closed() => break,
            fs = &mut daemon_exit => {
                crate::qemu::daemons::on_daemon_exit(&client, dir, id, &fs).await;
                break;
            }
            pid = &mut tpm_exit => {
                crate::qemu::daemons::swtpm::on_exit(&client, dir, id, pid).await;
                break;
            }
        };
        let ev = match ev {
            Ok(ev) => ev,
            Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                warn!(id, missed = n, "supervisor lagged behind QEMU's events");
                continue;
            }
            Err(tokio::sync::broadcast::error::RecvError::Closed) => break,
        };
        if ev.name == "GUEST_PANICKED" {
            error!(id, data = %ev.data, "guest panicked");
            if let Some(base) = &cfg.guest_memory_dump_path {
                let file = dump_file(base, id, ev.timestamp.0);
                match dump(&client, &file, cfg.guest_memory_dump_paging).await {
                    Ok(()) => info!(id, file = %file.display(), "guest memory dumped"),
                    Err(e) => error!(id, error = %e, "guest memory dump failed"),
                }
            }
            // The guest is dead: end QEMU; `sandvm stop` cleans up the rest.
            let _ = client.quit().await;
        }
    }
    info!(id, "QEMU's monitor closed; supervisor exits");
    Ok(())
}

async fn dump(client: &qmp::Client, file: &Path, paging: bool) -> Result<(), SuperviseError> {
    let err = |reason: String| SuperviseError::Dump {
        path: file.display().to_string(),
        reason,
    };
    if let Some(parent) = file.parent() {
        tokio::fs::create_dir_all(parent)
            .await
            .map_err(|e| err(e.to_string()))?;
    }
    client
        .with_timeout(Some(DUMP_TIMEOUT))
        .dump_guest_memory(paging, &format!("file:{}", file.display()), Some("elf"))
        .await
        .map_err(|e| err(e.to_string()))
}
