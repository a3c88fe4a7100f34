//! The QEMU backend of [`Hypervisor`]: [`Qemu`], a handle a shim shares.
//!
//! A `Qemu` is cheap to clone (every clone is the same sandbox) and is
//! `Send + Sync`. Inside, the sandbox's mutable state ([`core::Core`]: the
//! locked folder, the record, the command connection) sits behind an async
//! mutex that each changing operation holds for its duration. The VM's end
//! (a watch channel), its events (a broadcast channel) and the snapshot the
//! getters read are outside that mutex, so `wait_vm`, `events`, `check` and
//! the getters never wait for a hotplug or a start.

mod coldplug;
pub mod core;
pub mod daemons;
pub mod hotplug;
pub(crate) mod launch;
mod lifecycle;
pub mod migrate;
pub mod record;
pub mod snapshot;
mod status;
mod supervision;

pub use lifecycle::{DEFAULT_POWERDOWN_GRACE, STOPPING, StopMode, TERM_GRACE};
pub use status::{peek, peek_record};
pub use supervision::Supervision;

use self::core::Core;
use crate::config::HypervisorConfig;
use crate::error::{HypervisorError, Result};
use crate::hypervisor::Hypervisor;
use crate::plan::{Layout, PlanInput};
use crate::state::{StateRoot, files};
use crate::types::*;
use record::QemuRecord;
use snapshot::SnapshotInfo;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex as SyncMutex};
use std::time::Duration;
use tokio::sync::{Mutex, broadcast, watch};

/// Default start timeout for `start_vm` callers that have none.
pub const DEFAULT_START_TIMEOUT: Duration = Duration::from_secs(30);
/// How many events a slow subscriber may fall behind before it misses some.
pub const EVENT_BUFFER: usize = 256;

/// A QEMU sandbox. Create it with [`Qemu::new`] (then `create_vm`) or
/// reattach with [`Qemu::attach`].
#[derive(Debug, Clone)]
pub struct Qemu {
    inner: Arc<Inner>,
}

/// What every clone of a handle shares.
#[derive(Debug)]
pub(crate) struct Inner {
    /// The sandbox's mutable state; one changing operation at a time.
    pub(crate) core: Mutex<Core>,
    /// What the getters read without waiting for an operation.
    pub(crate) snapshot: SyncMutex<Snapshot>,
    /// The VM's end, once known.
    pub(crate) exit: watch::Sender<Option<VmExit>>,
    /// The sandbox's events.
    pub(crate) events: broadcast::Sender<SandboxEvent>,
    /// Who watches the VM.
    pub(crate) supervision: Supervision,
    /// Whether a supervisor task of this process watches it.
    pub(crate) watching: std::sync::atomic::AtomicBool,
    /// Whether this handle has begun stopping the VM: a waiter on a VM
    /// another process supervises then reports a stop, not an unknown end,
    /// when the folder (and the exit recorded in it) went with the stop.
    pub(crate) stopping: std::sync::atomic::AtomicBool,
}

/// A copy of what the getters need, refreshed after each operation.
#[derive(Debug, Clone)]
pub(crate) struct Snapshot {
    pub(crate) config: HypervisorConfig,
    pub(crate) record: Option<QemuRecord>,
    pub(crate) dir: Option<std::path::PathBuf>,
    pub(crate) qmp: Option<qmp::Client>,
}

impl Qemu {
    /// A backend for a new sandbox under `root`, supervised in this process.
    pub fn new(root: StateRoot, config: HypervisorConfig) -> Qemu {
        Qemu::from_core(Core::new(root, config), Supervision::InProcess)
    }

    /// Reattach to an existing sandbox: lock its folder and load its state.
    /// The handle does not supervise the VM (whoever started it does); see
    /// [`Qemu::supervise`].
    pub async fn attach(root: StateRoot, id: &str) -> Result<Qemu> {
        let dir = root.open(id)?;
        let state: QemuRecord = dir.load()?;
        let mut core = Core::new(root, state.config.clone());
        core.dir = Some(dir);
        core.state = Some(state);
        Ok(Qemu::from_core(core, Supervision::None))
    }

    fn from_core(core: Core, supervision: Supervision) -> Qemu {
        let snapshot = Snapshot {
            config: core.config.clone(),
            record: core.state.clone(),
            dir: core.dir.as_ref().map(|d| d.path().to_path_buf()),
            qmp: None,
        };
        Qemu {
            inner: Arc::new(Inner {
                core: Mutex::new(core),
                snapshot: SyncMutex::new(snapshot),
                exit: watch::Sender::new(None),
                events: broadcast::Sender::new(EVENT_BUFFER),
                supervision,
                watching: Default::default(),
                stopping: Default::default(),
            }),
        }
    }

    /// Who watches the VM once this handle starts it: in this process (the
    /// default), or nobody (the caller arranges it, as the CLI does with its
    /// detached helper).
    pub fn with_supervision(self, supervision: Supervision) -> Qemu {
        match Arc::try_unwrap(self.inner) {
            Ok(inner) => Qemu {
                inner: Arc::new(Inner {
                    supervision,
                    ..inner
                }),
            },
            Err(inner) => Qemu { inner },
        }
    }

    /// Kill whatever a sandbox left (by the pids in its state file, even a
    /// corrupt one, or the pidfile) and remove its folder. For `stop
    /// --force` when the state cannot be loaded.
    pub async fn force_cleanup(root: &StateRoot, id: &str) -> Result<()> {
        status::force_cleanup(root, id).await
    }

    /// The argv (`argv[0]` is the QEMU binary) a sandbox `id` of `config` gets
    /// under `accel`, without starting anything.
    pub fn render(
        config: &HypervisorConfig,
        root: &StateRoot,
        id: &str,
        accel: crate::config::Accel,
    ) -> Result<Vec<String>> {
        let qc = Qemu::planned(config, root, id, accel)?;
        let mut argv = vec![config.qemu_path.display().to_string()];
        argv.extend(qc.to_args());
        Ok(argv)
    }

    /// The QEMU invocation a sandbox `id` of `config` gets under `accel`.
    pub fn planned(
        config: &HypervisorConfig,
        root: &StateRoot,
        id: &str,
        accel: crate::config::Accel,
    ) -> Result<qemu_config::Config> {
        crate::state::validate_id(id)?;
        let dir = root.sandbox_dir(id);
        let image_size = config
            .image
            .as_ref()
            .and_then(|p| std::fs::metadata(p).ok())
            .map(|m| m.len());
        let layout = Layout::new(config, image_size);
        let uuid = uuid::Uuid::nil().to_string();
        Ok(crate::plan::plan(&PlanInput {
            cfg: config,
            layout: &layout,
            accel,
            id,
            uuid: &uuid,
            dir: &dir,
            share: None,
            role: None,
            agent: config.agent.channel,
            cold: &[],
            incoming: false,
        })?)
    }

    /// The sandbox id, once created or attached.
    pub fn id(&self) -> Option<String> {
        self.snap().record.map(|r| r.id)
    }

    /// The sandbox's record, once created or attached.
    pub fn record(&self) -> Option<QemuRecord> {
        self.snap().record
    }

    /// The sandbox folder.
    pub fn dir(&self) -> Option<std::path::PathBuf> {
        self.snap().dir
    }

    /// The sandbox's live processes by role: QEMU, then its helpers.
    pub fn processes(&self) -> Vec<(String, i32)> {
        let snap = self.snap();
        let mut v = Vec::new();
        if let Some(r) = &snap.record {
            if let Some(pid) = r.live_pid() {
                v.push(("qemu".to_string(), pid));
            }
            if let Some(pid) = r.supervisor_pid
                && crate::host::process::alive(pid, None)
            {
                v.push(("supervisor".to_string(), pid));
            }
            for (name, pid) in r.daemons() {
                v.push((name.to_string(), pid));
            }
        }
        v
    }

    /// Stop with an explicit mode (see [`StopMode`]). Idempotent.
    pub async fn stop_with(&self, mode: StopMode) -> Result<StopReport> {
        let mut core = self.inner.core.lock().await;
        self.inner.stopping.store(true, Ordering::SeqCst);
        let r = core.stop_with(mode).await;
        // a failed stop leaves a VM whose later end is not ours
        self.inner.stopping.store(r.is_ok(), Ordering::SeqCst);
        self.refresh(&core);
        r
    }

    /// Create sandbox `id` from a snapshot's record and start it, loading the
    /// snapshot. Leaves nothing behind on failure.
    pub(crate) async fn start_restored(
        &self,
        id: &str,
        meta: &snapshot::SnapshotMeta,
        src: &std::path::Path,
        timeout: Duration,
    ) -> Result<StartReport> {
        let mut core = self.inner.core.lock().await;
        core.create_restored(id, meta, src)?;
        let restore = lifecycle::Restore {
            src,
            running: meta.running,
        };
        let r = core
            .start(timeout, &self.inner.supervision, Some(restore))
            .await;
        self.refresh(&core);
        let (report, events) = r?;
        if let Some(client) = events {
            supervision::spawn(self, &core, client);
        }
        Ok(report)
    }

    /// The stop mode the config asks for: ACPI powerdown with the
    /// `graceful_shutdown_timeout` grace, or a kill at once when it is 0.
    pub fn graceful_mode(&self) -> StopMode {
        match self.snap().config.extras.graceful_shutdown_secs {
            0 => StopMode::Force,
            n => StopMode::Graceful(Duration::from_secs(n.into())),
        }
    }

    /// Record the detached supervisor watching this sandbox (the CLI's helper).
    pub async fn set_supervisor(&self, pid: i32) -> Result<()> {
        let mut core = self.inner.core.lock().await;
        core.record_mut("record the supervisor")?.supervisor_pid = Some(pid);
        core.save()?;
        self.refresh(&core);
        Ok(())
    }

    /// The hotplug record (devices, vCPUs, virtio-mem).
    pub fn hotplugged(&self) -> Option<hotplug::HotplugState> {
        self.snap().record.map(|r| r.hotplug)
    }

    /// Pause the guest and save its device state to `path` (guest RAM that
    /// is shared and file-backed is left out: a template's). The VM stays
    /// paused. `what` names the save in errors. Used by [`crate::factory`]
    /// to make a template.
    pub async fn save_device_state(
        &self,
        path: &std::path::Path,
        what: &str,
        timeout: Duration,
    ) -> Result<()> {
        let mut core = self.inner.core.lock().await;
        let r = match core.save_device_state(path, timeout).await {
            Err(e) => Err(core.explain_exit(what, e).await),
            ok => ok,
        };
        self.refresh(&core);
        r
    }

    fn snap(&self) -> Snapshot {
        match self.inner.snapshot.lock() {
            Ok(s) => s.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }

    /// Copy what the getters read out of `core`.
    pub(crate) fn refresh(&self, core: &Core) {
        let snap = Snapshot {
            config: core.config.clone(),
            record: core.state.clone(),
            dir: core.dir.as_ref().map(|d| d.path().to_path_buf()),
            qmp: core.qmp.clone(),
        };
        match self.inner.snapshot.lock() {
            Ok(mut s) => *s = snap,
            Err(p) => *p.into_inner() = snap,
        }
    }
}

/// Run a changing operation on the handle's core: lock it, run `$body`
/// (with `$c` the core), explain a lost QMP connection as QEMU's exit,
/// refresh the snapshot.
macro_rules! op {
    ($self:ident, $what:expr, |$c:ident| $body:expr) => {{
        let mut core = $self.inner.core.lock().await;
        let $c = &mut *core;
        let r = match $body.await {
            Err(e) => Err(core.explain_exit($what, e).await),
            ok => ok,
        };
        $self.refresh(&core);
        r
    }};
}

impl Hypervisor for Qemu {
    type State = QemuRecord;

    async fn create_vm(&self, id: &str, opts: CreateOptions) -> Result<()> {
        let mut core = self.inner.core.lock().await;
        let r = core.create(id, opts).await;
        self.refresh(&core);
        r
    }

    async fn start_vm(&self, timeout: Duration) -> Result<StartReport> {
        let mut core = self.inner.core.lock().await;
        let r = core.start(timeout, &self.inner.supervision, None).await;
        self.refresh(&core);
        let (report, events) = r?;
        if let Some(client) = events {
            supervision::spawn(self, &core, client);
        }
        Ok(report)
    }

    async fn stop_vm(&self, wait_only: bool) -> Result<StopReport> {
        let mut core = self.inner.core.lock().await;
        let mode = if wait_only {
            StopMode::WaitOnly(DEFAULT_POWERDOWN_GRACE)
        } else {
            core.graceful_mode()
        };
        self.inner.stopping.store(true, Ordering::SeqCst);
        let r = core.stop_with(mode).await;
        // a failed stop leaves a VM whose later end is not ours
        self.inner.stopping.store(r.is_ok(), Ordering::SeqCst);
        self.refresh(&core);
        r
    }

    async fn pause_vm(&self) -> Result<()> {
        op!(self, "a pause", |c| c.pause())
    }

    async fn resume_vm(&self) -> Result<()> {
        op!(self, "a resume", |c| c.resume())
    }

    async fn save_vm(&self, dest: &std::path::Path, stop: bool) -> Result<SnapshotInfo> {
        let mut core = self.inner.core.lock().await;
        let r = core.save_snapshot(dest, stop).await;
        self.refresh(&core);
        r
    }

    async fn add_device(&self, dev: DeviceSpec) -> Result<DeviceInfo> {
        let mut core = self.inner.core.lock().await;
        let r = core.cold_add(dev);
        self.refresh(&core);
        r
    }

    async fn hotplug_add_device(&self, dev: DeviceSpec) -> Result<DeviceInfo> {
        op!(self, "a device hotplug", |c| c.hp_add(dev))
    }

    async fn hotplug_remove_device(&self, id: &str) -> Result<()> {
        let what = format!("the unplug of {id}");
        op!(self, &what, |c| c.hp_remove(id))
    }

    async fn resize_memory(&self, mib: u64) -> Result<MemoryReport> {
        op!(self, "a memory resize", |c| c.hp_resize_memory(mib))
    }

    async fn resize_vcpus(&self, n: u32) -> Result<(u32, u32)> {
        op!(self, "a vCPU resize", |c| c.hp_resize_vcpus(n))
    }

    fn get_vm_console(&self) -> Result<ConsoleInfo> {
        let dir = self.snap().dir.ok_or(HypervisorError::NoSandbox {
            op: "get the console",
        })?;
        Ok(ConsoleInfo {
            socket: dir.join(files::CONSOLE),
            log: dir.join(files::CONSOLE_LOG),
        })
    }

    fn get_agent_socket(&self) -> Result<AgentSocket> {
        let snap = self.snap();
        let (Some(rec), Some(dir)) = (snap.record, snap.dir) else {
            return Err(HypervisorError::NoSandbox {
                op: "get the agent socket",
            });
        };
        let Some(agent) = &rec.agent else {
            return Err(HypervisorError::unsupported(
                "reach the agent",
                "the sandbox has no agent channel (hypervisor.qemu.agent_channel = \"none\")",
            ));
        };
        Ok(crate::plan::agent::socket(
            agent.kind,
            &rec.config,
            &dir,
            &rec.uuid,
        ))
    }

    async fn wait_vm(&self) -> Result<VmExit> {
        supervision::wait(self).await
    }

    fn events(&self) -> broadcast::Receiver<SandboxEvent> {
        self.inner.events.subscribe()
    }

    async fn disconnect(&self) {
        let mut core = self.inner.core.lock().await;
        core.qmp = None;
        self.refresh(&core);
    }

    fn capabilities(&self) -> Capabilities {
        let snap = self.snap();
        status::capabilities(&snap.config, snap.record.as_ref())
    }

    fn hypervisor_config(&self) -> HypervisorConfig {
        self.snap().config
    }

    fn get_total_memory(&self) -> u64 {
        let snap = self.snap();
        snap.record
            .map_or(snap.config.memory_mib, |r| r.memory_mib())
    }

    async fn get_thread_ids(&self) -> Result<ThreadIds> {
        let c = self.command_client().await?;
        let cpus = c
            .query_cpus_fast()
            .await
            .map_err(HypervisorError::qmp("query-cpus-fast"))?;
        Ok(ThreadIds {
            vcpus: cpus
                .iter()
                .map(|c| (c.cpu_index as u32, c.thread_id as i32))
                .collect(),
        })
    }

    fn get_pids(&self) -> Vec<i32> {
        self.processes()
            .into_iter()
            .filter(|(role, _)| role != "supervisor")
            .map(|(_, pid)| pid)
            .collect()
    }

    async fn check(&self) -> Result<()> {
        status::check(self).await
    }

    async fn cleanup(&self) -> Result<()> {
        self.stop_with(StopMode::Force).await.map(drop)
    }

    fn save_state(&self) -> Result<QemuRecord> {
        self.snap()
            .record
            .ok_or(HypervisorError::NoSandbox { op: "save state" })
    }

    async fn load_state(&self, state: QemuRecord) -> Result<()> {
        let mut core = self.inner.core.lock().await;
        if core.dir.is_none() {
            core.dir = Some(core.root.open(&state.id)?);
        }
        core.config = state.config.clone();
        core.state = Some(state);
        core.qmp = None;
        self.refresh(&core);
        Ok(())
    }
}

impl Qemu {
    /// The command connection, from the snapshot when it is open, else
    /// connected under the operation lock.
    pub(crate) async fn command_client(&self) -> Result<qmp::Client> {
        if let Some(c) = self.snap().qmp.filter(|c| !c.is_closed()) {
            return Ok(c);
        }
        let mut core = self.inner.core.lock().await;
        let c = core.qmp().await?.clone();
        self.refresh(&core);
        Ok(c)
    }

    pub(crate) fn inner(&self) -> &Inner {
        &self.inner
    }
}
