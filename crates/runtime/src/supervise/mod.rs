//! Supervision: watching one running VM until it ends, and saying why.
//!
//! The watcher holds QEMU's second QMP monitor (`events.sock`; the first,
//! `qmp.sock`, stays free for commands) and waits on QEMU's and every
//! daemon's pidfd: events, no polling. It
//!
//! - publishes the QMP events that matter (and daemon deaths) as
//!   [`SandboxEvent`]s;
//! - on `GUEST_PANICKED`, dumps guest memory as an ELF vmcore into
//!   `<guest_memory_dump_path>/<id>/` (`-action panic=pause` keeps the guest
//!   there until the dump is written), then ends QEMU;
//! - on an internal error of the guest (run state `internal-error`), ends QEMU;
//! - when a daemon the VM needs (virtiofsd, nydusd, swtpm,
//!   vhost-device-vsock) dies, ends QEMU and asks for the sandbox to be
//!   torn down, as Kata's `onQuit` does;
//! - returns, when QEMU has exited, the [`VmExit`]: why, and QEMU's status
//!   (known when QEMU is this process's child).
//!
//! It neither locks nor changes the sandbox: the backend runs it in a task
//! of the embedding process ([`crate::Qemu`]'s in-process supervision) or in
//! the CLI's detached helper, and acts on its [`Outcome`].

use crate::host::process::{self, ProcessExit};
use crate::types::{ExitReason, SandboxEvent, VmExit};
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::sync::broadcast;
use tokio::task::JoinSet;
use tracing::{error, info, warn};

/// Time allowed for a guest memory dump.
pub const DUMP_TIMEOUT: Duration = Duration::from_secs(600);
/// How long QEMU gets to exit after `quit` before it is killed.
pub const QUIT_GRACE: Duration = Duration::from_secs(5);

/// What to watch.
#[derive(Debug, Clone)]
pub struct Watch {
    /// Sandbox id.
    pub id: String,
    /// QEMU's pid and start time.
    pub qemu: (i32, Option<u64>),
    /// The daemons: name, pid, start time.
    pub daemons: Vec<(String, i32, Option<u64>)>,
    /// Where a panicked guest's memory goes, and with paging.
    pub dump: Option<(PathBuf, bool)>,
    /// The file whose presence says the end is a stop by the runtime.
    pub stopping_marker: PathBuf,
}

/// How the VM ended, and whether its sandbox must be torn down now.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    /// Why and how.
    pub exit: VmExit,
    /// A daemon died: stop the sandbox and remove it.
    pub teardown: bool,
}

/// Where a dump of sandbox `id` goes, named by the time of the panic.
pub fn dump_file(base: &Path, id: &str, unix_secs: i64) -> PathBuf {
    base.join(id).join(format!("vmcore-{unix_secs}.elf"))
}

/// The event published for a QMP event, if it is one that matters.
pub fn map_event(ev: &qmp::Event) -> Option<SandboxEvent> {
    let s = |k: &str| ev.data_str(k).unwrap_or_default().to_string();
    Some(match ev.name.as_str() {
        "STOP" => SandboxEvent::Paused,
        "RESUME" => SandboxEvent::Resumed,
        "SHUTDOWN" => SandboxEvent::Shutdown {
            guest: ev
                .data
                .get("guest")
                .and_then(|g| g.as_bool())
                .unwrap_or(false),
            reason: s("reason"),
        },
        "RESET" => SandboxEvent::Reset,
        "GUEST_PANICKED" => SandboxEvent::GuestPanicked {
            info: ev.data.clone(),
        },
        "DEVICE_DELETED" => SandboxEvent::DeviceDeleted { id: s("device") },
        "BLOCK_IO_ERROR" => SandboxEvent::BlockIoError {
            device: if s("device").is_empty() {
                s("node-name")
            } else {
                s("device")
            },
            reason: s("reason"),
        },
        _ => return None,
    })
}

/// Why the VM is ending, when `ev` says it is: a `SHUTDOWN`, with the reason
/// it gives. A `RESET` never ends it: QEMU sends one only when it restarts
/// the guest (`allow_reboot`); under `-no-reboot` a guest reboot is a
/// `SHUTDOWN` whose reason is `guest-reset`.
fn ending_reason(ev: &qmp::Event) -> Option<ExitReason> {
    if ev.name != "SHUTDOWN" {
        return None;
    }
    match ev.data_str("reason") {
        Some("guest-shutdown") => Some(ExitReason::GuestPoweredOff),
        Some("guest-reset") => Some(ExitReason::GuestReset),
        Some("guest-panic") => Some(ExitReason::GuestPanicked { dump: None }),
        _ => None,
    }
}

/// Watch until QEMU exits. `client` is connected to the events monitor.
pub async fn watch(
    w: Watch,
    client: qmp::Client,
    events: broadcast::Sender<SandboxEvent>,
) -> Outcome {
    let (pid, _) = w.qemu;
    let mut qev = client.events();
    let mut events_open = true;
    let qemu_exit = process::wait_exit_status(pid);
    tokio::pin!(qemu_exit);
    let mut daemons = daemon_waits(&w.daemons);
    let mut reason: Option<ExitReason> = None;
    let mut teardown = false;
    info!(id = %w.id, pid, daemons = w.daemons.len(), "supervising");
    let status = loop {
        tokio::select! {
            st = &mut qemu_exit => break st,
            Some(Ok((name, dpid))) = daemons.join_next(), if !daemons.is_empty() => {
                error!(id = %w.id, daemon = %name, pid = dpid, "daemon exited; stopping the sandbox");
                let _ = events.send(SandboxEvent::DaemonDied { daemon: name.clone(), pid: dpid });
                if reason.is_none() {
                    reason = Some(ExitReason::DaemonDied { daemon: name, pid: dpid });
                    teardown = true;
                    end_qemu(&client, pid).await;
                }
            }
            ev = qev.recv(), if events_open => match ev {
                Ok(ev) => on_event(&w, &client, &events, &ev, &mut reason).await,
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    warn!(id = %w.id, missed = n, "supervisor lagged behind QEMU's events");
                }
                Err(broadcast::error::RecvError::Closed) => events_open = false,
            },
        }
    };
    daemons.abort_all();
    let stopped = w.stopping_marker.exists();
    let reason = match reason {
        Some(r @ (ExitReason::DaemonDied { .. } | ExitReason::GuestPanicked { .. })) => r,
        _ if stopped => ExitReason::Stopped,
        Some(r) => r,
        None => ExitReason::QemuExited,
    };
    let exit = VmExit {
        reason,
        qemu: Some(status),
    };
    info!(id = %w.id, %exit, "the VM ended");
    let _ = events.send(SandboxEvent::Exited(exit.clone()));
    Outcome { exit, teardown }
}

/// One task per daemon, each ending with (name, pid) when its daemon exits.
fn daemon_waits(daemons: &[(String, i32, Option<u64>)]) -> JoinSet<(String, i32)> {
    let mut set = JoinSet::new();
    for (name, pid, ticks) in daemons.iter().cloned() {
        set.spawn(async move {
            if process::alive(pid, ticks) {
                let _ = process::wait_exit_status(pid).await;
            }
            (name, pid)
        });
    }
    set
}

async fn on_event(
    w: &Watch,
    client: &qmp::Client,
    events: &broadcast::Sender<SandboxEvent>,
    ev: &qmp::Event,
    reason: &mut Option<ExitReason>,
) {
    if let Some(e) = map_event(ev) {
        let _ = events.send(e);
    }
    match ev.name.as_str() {
        "SHUTDOWN" if reason.is_none() => *reason = ending_reason(ev),
        "RESET" => {
            let why = ev.data_str("reason").unwrap_or_default();
            info!(id = %w.id, reason = why, "the guest was reset; QEMU restarts it (allow_reboot)");
        }
        "GUEST_PANICKED" => {
            error!(id = %w.id, data = %ev.data, "guest panicked");
            let dump = match &w.dump {
                Some((base, paging)) => {
                    let file = dump_file(base, &w.id, ev.timestamp.0);
                    match dump(client, &file, *paging).await {
                        Ok(()) => {
                            info!(id = %w.id, file = %file.display(), "guest memory dumped");
                            let _ = events.send(SandboxEvent::DumpWritten { path: file.clone() });
                            Some(file)
                        }
                        Err(e) => {
                            error!(id = %w.id, error = %e, "guest memory dump failed");
                            None
                        }
                    }
                }
                None => None,
            };
            *reason = Some(ExitReason::GuestPanicked { dump });
            // The guest is dead: end QEMU.
            end_qemu(client, w.qemu.0).await;
        }
        "STOP" => {
            let failed = client
                .query_status()
                .await
                .is_ok_and(|s| s.status == qmp::commands::RunState::InternalError);
            if failed && reason.is_none() {
                error!(id = %w.id, "QEMU stopped the guest on an internal error; ending it");
                *reason = Some(ExitReason::InternalError);
                end_qemu(client, w.qemu.0).await;
            }
        }
        _ => {}
    }
}

/// `quit`, and SIGKILL if QEMU is still there after [`QUIT_GRACE`].
async fn end_qemu(client: &qmp::Client, pid: i32) {
    let _ = tokio::time::timeout(QUIT_GRACE, client.quit()).await;
    if !process::wait_exit(pid, QUIT_GRACE).await {
        warn!(pid, "QEMU did not quit; killing it");
        process::signal(pid, nix::sys::signal::Signal::SIGKILL);
    }
}

/// Errors of a guest memory dump.
#[derive(Debug, thiserror::Error)]
pub enum DumpError {
    /// The dump folder could not be made.
    #[error("Cannot create {path}: {source}")]
    Folder {
        /// The folder.
        path: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// QEMU's dump failed.
    #[error("Guest memory dump to {path}: {source}")]
    Qmp {
        /// The file.
        path: String,
        /// Why.
        #[source]
        source: qmp::Error,
    },
}

async fn dump(client: &qmp::Client, file: &Path, paging: bool) -> Result<(), DumpError> {
    if let Some(parent) = file.parent() {
        tokio::fs::create_dir_all(parent)
            .await
            .map_err(|source| DumpError::Folder {
                path: parent.display().to_string(),
                source,
            })?;
    }
    client
        .with_timeout(Some(DUMP_TIMEOUT))
        .dump_guest_memory(paging, &format!("file:{}", file.display()), Some("elf"))
        .await
        .map_err(|source| DumpError::Qmp {
            path: file.display().to_string(),
            source,
        })
}

/// The process exit reported for a QEMU that was not watched (its end was
/// not seen): nothing is known but that it is gone.
pub fn unwatched_exit() -> VmExit {
    VmExit {
        reason: ExitReason::QemuExited,
        qemu: Some(ProcessExit::Unknown),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use serde_json::json;

    fn ev(name: &str, data: serde_json::Value) -> qmp::Event {
        qmp::Event {
            name: name.into(),
            data,
            timestamp: (1, 0),
        }
    }

    #[test]
    fn qmp_events_map_to_sandbox_events() {
        assert_eq!(
            map_event(&ev(
                "SHUTDOWN",
                json!({"guest": true, "reason": "guest-shutdown"})
            )),
            Some(SandboxEvent::Shutdown {
                guest: true,
                reason: "guest-shutdown".into()
            })
        );
        assert_eq!(
            map_event(&ev(
                "DEVICE_DELETED",
                json!({"device": "blk0", "path": "/x"})
            )),
            Some(SandboxEvent::DeviceDeleted { id: "blk0".into() })
        );
        assert_eq!(map_event(&ev("RTC_CHANGE", json!({}))), None);
        let r = |reason: &str| ending_reason(&ev("SHUTDOWN", json!({ "reason": reason })));
        assert_eq!(r("guest-shutdown"), Some(ExitReason::GuestPoweredOff));
        assert_eq!(r("guest-reset"), Some(ExitReason::GuestReset));
        assert_eq!(r("host-signal"), None);
        // allow_reboot: QEMU restarts the guest and says RESET, which ends nothing.
        let reset = ev("RESET", json!({"guest": true, "reason": "guest-reset"}));
        assert_eq!(map_event(&reset), Some(SandboxEvent::Reset));
        assert_eq!(ending_reason(&reset), None);
    }

    #[test]
    fn exits_say_why_and_how() {
        let e = VmExit {
            reason: ExitReason::DaemonDied {
                daemon: "virtiofsd".into(),
                pid: 42,
            },
            qemu: Some(ProcessExit::Signal(9)),
        };
        let text = e.to_string();
        assert!(text.contains("virtiofsd (pid 42) died"), "{text}");
        assert!(text.contains("signal 9 (SIGKILL)"), "{text}");
        assert_eq!(
            dump_file(Path::new("/d"), "sb", 7),
            Path::new("/d/sb/vmcore-7.elf")
        );
    }
}
