//! Supervision wired to the backend: the in-process task a [`Qemu`] handle
//! starts with the VM, the detached helper the CLI runs, and what both do
//! when the VM ends (record the exit, stop the daemons, or tear the sandbox
//! down when a daemon died).

use super::core::Core;
use super::lifecycle::{STOPPING, StopMode, TERM_GRACE};
use super::record::QemuRecord;
use super::{Qemu, Snapshot};
use crate::error::{HypervisorError, Result};
use crate::host::process;
use crate::state::{StateRoot, files, read_state};
use crate::supervise::{self, Outcome, Watch};
use crate::types::{ExitReason, VmExit, VmState};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::time::Duration;
use tokio::sync::broadcast;
use tracing::{info, warn};

/// How long a waiter gives a detached supervisor to write the exit after
/// QEMU is gone.
const EXIT_RECORD_GRACE: Duration = Duration::from_secs(2);

/// Who watches a VM a handle starts.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Supervision {
    /// A task of this process (the default for a shim).
    #[default]
    InProcess,
    /// A detached process the runtime spawns as soon as QEMU is (while QEMU
    /// comes up): `program args... <sandbox id>`, in its own process group,
    /// stderr to the sandbox's `supervisor.log`. Its stdin is a pipe the
    /// runtime closes once QEMU's pid and the supervisor's own pid are
    /// saved together, so a crash of the runtime never leaves a supervisor
    /// that `stop` does not know of. It is expected to run
    /// [`Qemu::supervise`] (the CLI's `sandvm __supervise`).
    Detached {
        /// The program.
        program: PathBuf,
        /// Its arguments before the sandbox id.
        args: Vec<String>,
    },
    /// Nobody: the caller arranges supervision.
    None,
}

impl Supervision {
    /// Supervision by `sandvm __supervise ID` of the state root `root`,
    /// `sandvm` being the CLI binary at `program`.
    pub fn sandvm_detached(program: PathBuf, root: &StateRoot) -> Supervision {
        Supervision::Detached {
            program,
            args: vec![
                "--state-dir".into(),
                root.path().display().to_string(),
                "--log-level".into(),
                "info".into(),
                "__supervise".into(),
            ],
        }
    }

    /// Spawn the detached supervisor of sandbox `id` in `dir`, if this is
    /// [`Supervision::Detached`]: its pid, and the gate to drop once that
    /// pid is saved (the supervisor reads the state only after).
    pub(crate) fn spawn_detached(
        &self,
        dir: &Path,
        id: &str,
    ) -> Result<Option<(i32, std::io::PipeWriter)>> {
        use std::os::unix::process::CommandExt;
        let Supervision::Detached { program, args } = self else {
            return Ok(None);
        };
        let log_path = dir.join(files::SUPERVISOR_LOG);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .map_err(HypervisorError::io(log_path.display()))?;
        let (gate_r, gate_w) =
            std::io::pipe().map_err(HypervisorError::io("a pipe for the supervisor"))?;
        let child = std::process::Command::new(program)
            .args(args)
            .arg(id)
            .stdin(gate_r)
            .stdout(std::process::Stdio::null())
            .stderr(log)
            .process_group(0)
            .spawn()
            .map_err(HypervisorError::io(format!(
                "start the supervisor {}",
                program.display()
            )))?;
        let pid = child.id() as i32;
        let ticks = process::start_ticks(pid).unwrap_or_default();
        let pidfile = dir.join(files::SUPERVISOR_PID);
        std::fs::write(&pidfile, format!("{pid} {ticks}\n"))
            .map_err(HypervisorError::io(pidfile.display()))?;
        Ok(Some((pid, gate_w)))
    }
}

/// What to watch for the sandbox in `core`.
fn watch_of(dir: &Path, rec: &QemuRecord) -> Option<Watch> {
    let pid = rec.pid?;
    Some(Watch {
        id: rec.id.clone(),
        qemu: (pid, rec.pid_start_ticks),
        daemons: rec
            .recorded_daemons()
            .into_iter()
            .filter_map(|(n, p)| Some((n.to_string(), p.pid?, p.start_ticks)))
            .collect(),
        dump: rec
            .config
            .guest_memory_dump_path
            .clone()
            .map(|d| (d, rec.config.guest_memory_dump_paging)),
        stopping_marker: dir.join(STOPPING),
    })
}

/// Start the in-process supervisor of the VM `core` just started. The task
/// keeps only a weak reference to the handle: the sandbox's lock lives as
/// long as the caller's handles, and when they are all dropped the task
/// still watches and acts through a fresh attach.
pub(super) fn spawn(q: &Qemu, core: &Core, client: qmp::Client) {
    let (Some(dir), Some(rec)) = (&core.dir, &core.state) else {
        return;
    };
    let Some(w) = watch_of(dir.path(), rec) else {
        return;
    };
    q.inner().watching.store(true, Ordering::SeqCst);
    let events = q.inner().events.clone();
    let weak = std::sync::Arc::downgrade(&q.inner);
    let (root, id) = (core.root.clone(), rec.id.clone());
    tokio::spawn(async move {
        let out = supervise::watch(w, client, events).await;
        match weak.upgrade() {
            Some(inner) => finish(&Qemu { inner }, out).await,
            None => act_detached(root, &id, &out).await,
        }
    });
}

/// Act on the end of the VM, then tell every waiter.
async fn finish(q: &Qemu, out: Outcome) {
    if out.teardown {
        // A daemon died: tear the sandbox down first, so a waiter finds nothing left.
        let mut core = q.inner().core.lock().await;
        if let Err(e) = core.stop_with(StopMode::WaitOnly(TERM_GRACE)).await {
            warn!(error = %e, "teardown after a daemon's death");
        }
        q.refresh(&core);
        drop(core);
        q.inner().exit.send_replace(Some(out.exit));
        return;
    }
    q.inner().exit.send_replace(Some(out.exit.clone()));
    let mut core = q.inner().core.lock().await;
    core.on_qemu_exit(&out.exit).await;
    q.refresh(&core);
}

impl Core {
    /// QEMU has exited: record how, and stop its daemons. The folder stays
    /// until the sandbox is stopped (so status and wait can read the exit).
    pub(crate) async fn on_qemu_exit(&mut self, exit: &VmExit) {
        let Some(dir) = &self.dir else {
            return;
        };
        write_exit(dir.path(), exit);
        self.qmp = None;
        self.stop_fs_daemon().await;
        self.stop_vsock_daemon().await;
        self.stop_tpm().await;
        if let Some(st) = self.state.as_mut() {
            st.state = VmState::Stopped;
        }
        if let Err(e) = self.save() {
            warn!(error = %e, "recording the VM's exit");
        }
    }
}

/// Write `exit.json` into the sandbox folder (atomically), unless a stop is
/// removing the folder.
fn write_exit(dir: &Path, exit: &VmExit) {
    if dir.join(STOPPING).exists() || !dir.is_dir() {
        return;
    }
    let Ok(json) = serde_json::to_vec(exit) else {
        return;
    };
    let tmp = dir.join(".exit.json.tmp");
    let _ = std::fs::remove_file(&tmp);
    if std::fs::write(&tmp, json).is_ok() {
        let _ = std::fs::rename(&tmp, dir.join(files::EXIT));
    }
}

/// The exit a supervisor recorded in a sandbox folder, if any.
pub fn recorded_exit(dir: &Path) -> Option<VmExit> {
    let bytes = std::fs::read(dir.join(files::EXIT)).ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// [`crate::Hypervisor::wait_vm`]: from the in-process supervisor, or, when
/// this process does not supervise the VM, from QEMU's pidfd and the exit
/// the detached supervisor records.
pub(super) async fn wait(q: &Qemu) -> Result<VmExit> {
    let mut rx = q.inner().exit.subscribe();
    if let Some(e) = rx.borrow_and_update().clone() {
        return Ok(e);
    }
    if q.inner().watching.load(Ordering::SeqCst) {
        return match rx.wait_for(Option::is_some).await {
            Ok(e) => Ok(e.clone().unwrap_or_else(supervise::unwatched_exit)),
            Err(_) => Ok(supervise::unwatched_exit()),
        };
    }
    let snap: Snapshot = q.snap_for_wait();
    let (Some(rec), Some(dir)) = (snap.record, snap.dir) else {
        return Err(HypervisorError::NoSandbox {
            op: "wait for the VM",
        });
    };
    let mut exit = wait_unwatched(&rec, &dir).await?;
    if exit == supervise::unwatched_exit() && q.inner().stopping.load(Ordering::SeqCst) {
        // this handle stopped it, and the stop took the recorded exit
        exit.reason = ExitReason::Stopped;
    }
    q.inner().exit.send_replace(Some(exit.clone()));
    Ok(exit)
}

/// Wait for the end of a VM this process does not watch: QEMU's pidfd,
/// then the exit its supervisor records (or "exited, status unknown").
async fn wait_unwatched(rec: &QemuRecord, dir: &Path) -> Result<VmExit> {
    let Some(pid) = rec.pid else {
        return Err(HypervisorError::WrongState {
            id: rec.id.clone(),
            state: rec.state,
            op: "wait for the VM (it never started)",
        });
    };
    if process::alive(pid, rec.pid_start_ticks) {
        let _ = process::wait_exit_status(pid).await;
    }
    // The supervisor writes the exit once it has seen QEMU go.
    let deadline = tokio::time::Instant::now() + EXIT_RECORD_GRACE;
    Ok(loop {
        if let Some(e) = recorded_exit(dir) {
            break e;
        }
        if !dir.is_dir() || tokio::time::Instant::now() >= deadline {
            break supervise::unwatched_exit();
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    })
}

impl Qemu {
    fn snap_for_wait(&self) -> Snapshot {
        match self.inner().snapshot.lock() {
            Ok(s) => s.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }

    /// Wait until the VM of sandbox `id` ends, without taking its lock (so a
    /// stop from another process goes on), and say why.
    pub async fn wait_for(root: &StateRoot, id: &str) -> Result<VmExit> {
        crate::state::validate_id(id)?;
        let dir = root.sandbox_dir(id);
        if !dir.is_dir() {
            return Err(crate::state::StateError::NotFound {
                id: id.into(),
                root: root.path().display().to_string(),
            }
            .into());
        }
        let rec: QemuRecord = read_state(&dir.join(files::STATE))?;
        wait_unwatched(&rec, &dir).await
    }

    /// Supervise sandbox `id` from this process until its VM ends: the
    /// CLI's detached helper (`sandvm __supervise ID`). Records the exit,
    /// stops the daemons, or tears the sandbox down when a daemon died.
    /// It first reads this process's stdin to its end: the gate of
    /// [`Supervision::Detached`], which the spawning runtime closes once the
    /// pids are saved; run it with stdin closed or at `/dev/null` otherwise.
    pub async fn supervise(root: StateRoot, id: &str) -> Result<VmExit> {
        crate::state::validate_id(id)?;
        wait_gate().await;
        let dir = root.sandbox_dir(id);
        let rec: QemuRecord = read_state(&dir.join(files::STATE))?;
        let w = watch_of(&dir, &rec).ok_or(HypervisorError::WrongState {
            id: id.to_string(),
            state: rec.state,
            op: "supervise (it never started)",
        })?;
        let client = qmp::Client::connect(&dir.join(files::EVENTS))
            .await
            .map_err(HypervisorError::qmp("connect the events monitor"))?;
        let (events, _) = broadcast::channel(super::EVENT_BUFFER);
        let out = supervise::watch(w, client, events).await;
        act_detached(root, id, &out).await;
        Ok(out.exit)
    }
}

/// Wait until the runtime that spawned this supervisor closes its stdin
/// (after saving the pids), or dies; either way the state is then final.
async fn wait_gate() {
    use tokio::io::AsyncReadExt;
    let mut sink = Vec::new();
    let _ = tokio::io::stdin().read_to_end(&mut sink).await;
}

/// Act on the end of a VM whose handle is gone (or in another process):
/// record the exit, attach, then stop the daemons or tear down.
async fn act_detached(root: StateRoot, id: &str, out: &Outcome) {
    let dir = root.sandbox_dir(id);
    if !out.teardown {
        write_exit(&dir, &out.exit);
    }
    match Qemu::attach(root, id).await {
        Ok(q) => {
            let mut core = q.inner().core.lock().await;
            if out.teardown {
                if let Err(e) = core.stop_with(StopMode::WaitOnly(TERM_GRACE)).await {
                    warn!(id, error = %e, "teardown after a daemon's death");
                }
            } else {
                core.on_qemu_exit(&out.exit).await;
            }
        }
        // Busy: a `stop` is under way and cleans up; NotFound: already gone.
        Err(e) => info!(id, reason = %e, "sandbox not cleaned up by the supervisor"),
    }
}
