//! The QEMU backend of [`Hypervisor`].

pub mod arch;
pub mod build;
pub mod daemons;
pub mod extras;
pub mod hotplug;
mod launch;
pub mod pci;
pub mod template;

use crate::accel;
use crate::config::HypervisorConfig;
use crate::hypervisor::*;
use crate::process;
use crate::state::{STATE_VERSION, SandboxDir, SandboxState, StateRoot, VmState, files};
use arch::Accel;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use tracing::{info, warn};

/// How long `stop_vm` waits after `system_powerdown` before SIGTERM.
pub const DEFAULT_POWERDOWN_GRACE: Duration = Duration::from_secs(5);
/// How long SIGTERM is given before SIGKILL.
pub const TERM_GRACE: Duration = Duration::from_secs(3);
/// Timeout for QMP commands the runtime issues.
pub const QMP_TIMEOUT: Duration = Duration::from_secs(10);
/// Timeout for reattaching to a running VM's QMP socket.
pub const QMP_ATTACH_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a closed QMP connection waits for QEMU's exit to show: QEMU's
/// sockets close as it exits, a moment before its pid is gone.
pub const EXIT_SETTLE: Duration = Duration::from_secs(2);

/// How to stop a VM.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopMode {
    /// `system_powerdown`, wait up to the grace, then SIGTERM, then SIGKILL.
    Graceful(Duration),
    /// SIGKILL at once.
    Force,
    /// Wait for QEMU to exit by itself (up to the grace), then kill.
    WaitOnly(Duration),
}

/// A QEMU sandbox. Create it with [`Qemu::new`] (then `create_vm`) or
/// reattach with [`Qemu::attach`].
#[derive(Debug)]
pub struct Qemu {
    root: StateRoot,
    config: HypervisorConfig,
    dir: Option<SandboxDir>,
    state: Option<SandboxState>,
    qmp: Option<qmp::Client>,
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl Qemu {
    /// A backend for a new sandbox under `root`.
    pub fn new(root: StateRoot, config: HypervisorConfig) -> Qemu {
        Qemu {
            root,
            config,
            dir: None,
            state: None,
            qmp: None,
        }
    }

    /// Reattach to an existing sandbox: lock its folder and load its state.
    pub async fn attach(root: StateRoot, id: &str) -> Result<Qemu> {
        let dir = root.open(id)?;
        let state = dir.load()?;
        Ok(Qemu {
            root,
            config: state.config.clone(),
            dir: Some(dir),
            state: Some(state),
            qmp: None,
        })
    }

    /// Read a sandbox's state without locking it (for status and list).
    pub fn peek(root: &StateRoot, id: &str) -> Result<SandboxState> {
        crate::state::validate_id(id)?;
        let path = root.sandbox_dir(id);
        if !path.is_dir() {
            return Err(crate::state::StateError::NotFound {
                id: id.into(),
                root: root.path().display().to_string(),
            }
            .into());
        }
        let bytes = std::fs::read(path.join(files::STATE))
            .map_err(HypervisorError::io(path.join(files::STATE).display()))?;
        let mut st: SandboxState =
            serde_json::from_slice(&bytes).map_err(|e| crate::state::StateError::Corrupt {
                path: path.join(files::STATE).display().to_string(),
                reason: e.to_string(),
            })?;
        if matches!(st.state, VmState::Running | VmState::Paused)
            && !st
                .pid
                .is_some_and(|p| process::alive(p, st.pid_start_ticks))
        {
            st.state = VmState::Stopped;
        }
        Ok(st)
    }

    /// Kill whatever a sandbox left (by the pid in a state file, even a corrupt
    /// one, or the pidfile) and remove its folder. For `stop --force` when the
    /// state cannot be loaded.
    pub async fn force_cleanup(root: &StateRoot, id: &str) -> Result<()> {
        let dir = root.open(id)?;
        if let Some(pid) = dir.salvage_pid()
            && process::alive(pid, None)
            && is_qemu(pid)
        {
            process::signal(pid, nix::sys::signal::Signal::SIGKILL);
            process::wait_exit(pid, TERM_GRACE).await;
        }
        daemons::salvage_kill(dir.path()).await;
        dir.remove()?;
        Ok(())
    }

    /// The sandbox id, once created or attached.
    pub fn id(&self) -> Option<&str> {
        self.dir.as_ref().map(|d| d.id())
    }

    /// The sandbox's state, once created or attached.
    pub fn state(&self) -> Option<&SandboxState> {
        self.state.as_ref()
    }

    /// The sandbox folder.
    pub fn dir(&self) -> Option<&Path> {
        self.dir.as_ref().map(|d| d.path())
    }

    /// Render the argv (argv[0] is the QEMU binary) for `id` without starting anything.
    pub fn render(
        config: &HypervisorConfig,
        root: &StateRoot,
        id: &str,
        accel: Accel,
    ) -> Result<Vec<String>> {
        crate::state::validate_id(id)?;
        let dir = root.sandbox_dir(id);
        let image_size = config
            .image
            .as_ref()
            .and_then(|p| std::fs::metadata(p).ok())
            .map(|m| m.len());
        let uuid = uuid::Uuid::nil().to_string();
        let qc = build::build(&build::BuildInput {
            cfg: config,
            id,
            uuid: &uuid,
            dir: &dir,
            accel,
            image_size,
        });
        qc.validate()
            .map_err(|e| HypervisorError::Host(format!("rendered QEMU config is invalid: {e}")))?;
        let mut argv = vec![config.qemu_path.display().to_string()];
        argv.extend(qc.to_args());
        Ok(argv)
    }

    fn parts(&self, op: &'static str) -> Result<(&SandboxDir, &SandboxState)> {
        match (&self.dir, &self.state) {
            (Some(d), Some(s)) => Ok((d, s)),
            _ => Err(HypervisorError::NoSandbox { op }),
        }
    }

    fn save(&self) -> Result<()> {
        let (dir, st) = self.parts("save state")?;
        dir.save(st)?;
        Ok(())
    }

    fn set_state(&mut self, s: VmState) -> Result<()> {
        if let Some(st) = self.state.as_mut() {
            st.state = s;
        }
        self.save()
    }

    fn wrong_state(&self, op: &'static str) -> HypervisorError {
        match (&self.dir, &self.state) {
            (Some(d), Some(s)) => HypervisorError::WrongState {
                id: d.id().to_string(),
                state: s.state,
                op,
            },
            _ => HypervisorError::NoSandbox { op },
        }
    }

    /// The live QMP connection, connecting to `qmp.sock` when needed.
    pub async fn qmp(&mut self) -> Result<&qmp::Client> {
        if self.qmp.as_ref().is_some_and(|c| c.is_closed()) {
            self.qmp = None;
        }
        if self.qmp.is_none() {
            let (dir, _) = self.parts("connect to QMP")?;
            let path = dir.file(files::QMP);
            let opts = qmp::ClientOptions {
                handshake_timeout: QMP_ATTACH_TIMEOUT,
                command_timeout: Some(QMP_TIMEOUT),
                ..Default::default()
            };
            let c = qmp::Client::connect_with(&path, opts)
                .await
                .map_err(HypervisorError::qmp("connect"))?;
            self.qmp = Some(c);
        }
        self.qmp.as_ref().ok_or(HypervisorError::NoSandbox {
            op: "connect to QMP",
        })
    }

    /// `e`, or, when it says the QMP connection closed (or could not be
    /// made) and this sandbox's QEMU is gone, [`HypervisorError::QemuExited`]
    /// naming `op`: the caller learns that QEMU died, not only that a socket
    /// closed. Waits at most [`EXIT_SETTLE`] for the exit to show.
    pub(crate) async fn explain_exit(&self, op: &str, e: HypervisorError) -> HypervisorError {
        match self
            .state
            .as_ref()
            .and_then(|s| Some((s.pid?, s.pid_start_ticks)))
        {
            Some((pid, ticks)) => exited_or(pid, ticks, op, e).await,
            None => e,
        }
    }

    fn live_pid(&self) -> Option<i32> {
        let st = self.state.as_ref()?;
        st.pid.filter(|p| process::alive(*p, st.pid_start_ticks))
    }

    /// Stop with an explicit mode. Idempotent: a stopped or vanished sandbox
    /// is cleaned up and `Ok`.
    pub async fn stop_with(&mut self, mode: StopMode) -> Result<()> {
        if self.dir.is_none() {
            return Ok(());
        }
        if let Some(pid) = self.live_pid() {
            let t0 = Instant::now();
            let exited = match mode {
                StopMode::Force => false,
                StopMode::WaitOnly(grace) => process::wait_exit(pid, grace).await,
                StopMode::Graceful(grace) => {
                    let asked = match self.qmp().await {
                        Ok(c) => c
                            .execute_with_timeout("system_powerdown", None, QMP_TIMEOUT)
                            .await
                            .map_err(|e| warn!(error = %e, "system_powerdown failed"))
                            .is_ok(),
                        Err(e) => {
                            warn!(error = %e, "no QMP for a graceful stop");
                            false
                        }
                    };
                    asked && process::wait_exit(pid, grace).await
                }
            };
            self.qmp = None;
            if !exited {
                let gone = if mode == StopMode::Force {
                    process::signal(pid, nix::sys::signal::Signal::SIGKILL);
                    process::wait_exit(pid, TERM_GRACE).await
                } else {
                    process::terminate(pid, TERM_GRACE).await
                };
                if !gone {
                    return Err(HypervisorError::Host(format!(
                        "QEMU pid {pid} survived SIGKILL"
                    )));
                }
            }
            info!(pid, ms = t0.elapsed().as_millis() as u64, "QEMU stopped");
        }
        self.qmp = None;
        self.stop_fs_daemon().await;
        self.stop_tpm().await;
        self.reap_supervisor().await;
        self.state = None;
        if let Some(dir) = self.dir.take() {
            dir.remove()?;
        }
        Ok(())
    }

    /// The sandbox's live processes by role: QEMU, then its helpers
    /// (supervisor, daemons). For stats and leak checks.
    pub fn processes(&self) -> Vec<(String, i32)> {
        let mut v = Vec::new();
        if let Some(pid) = self.live_pid() {
            v.push(("qemu".to_string(), pid));
        }
        if let Some(pid) = self.state.as_ref().and_then(|s| s.supervisor_pid)
            && process::alive(pid, None)
        {
            v.push(("supervisor".to_string(), pid));
        }
        if let (Some(pid), Some(fs)) = (
            self.fs_daemon_pid(),
            self.state.as_ref().and_then(|s| s.fs.as_ref()),
        ) {
            v.push((fs.kind.name().to_string(), pid));
        }
        if let Some(pid) = self.tpm_pid() {
            v.push(("swtpm".to_string(), pid));
        }
        v
    }

    /// The stop mode the config asks for: ACPI powerdown with the
    /// `graceful_shutdown_timeout` grace, or a kill at once when it is 0.
    pub fn graceful_mode(&self) -> StopMode {
        match self.config.extras.graceful_shutdown_secs {
            0 => StopMode::Force,
            n => StopMode::Graceful(Duration::from_secs(n.into())),
        }
    }

    /// Record the supervisor process watching this sandbox (see [`crate::supervise`]).
    pub fn set_supervisor(&mut self, pid: i32) -> Result<()> {
        if let Some(st) = self.state.as_mut() {
            st.supervisor_pid = Some(pid);
        }
        self.save()
    }

    /// The supervisor exits when QEMU's monitor closes; give it a moment, then kill it.
    async fn reap_supervisor(&mut self) {
        let Some(pid) = self.state.as_ref().and_then(|s| s.supervisor_pid) else {
            return;
        };
        if process::alive(pid, None) && !process::wait_exit(pid, TERM_GRACE).await {
            process::signal(pid, nix::sys::signal::Signal::SIGKILL);
            process::wait_exit(pid, TERM_GRACE).await;
        }
    }

    async fn start_inner(&mut self, timeout: Duration) -> Result<StartReport> {
        let t0 = Instant::now();
        // The shared-fs daemon first: it comes up while QEMU's start is prepared.
        let fs_daemon = self.start_fs_daemon()?;
        self.start_tpm()?;
        let (dir, st) = self.parts("start")?;
        let id = dir.id().to_string();
        let cfg = st.config.clone();
        let decision = accel::decide(
            cfg.accelerator,
            cfg.guest_arch,
            &cfg.qemu_path,
            self.root.path(),
        )
        .await
        .map_err(HypervisorError::Host)?;
        let image_size = match &cfg.image {
            Some(p) => Some(
                std::fs::metadata(p)
                    .map_err(HypervisorError::io(p.display()))?
                    .len(),
            ),
            None => None,
        };
        let mut qc = build::build(&build::BuildInput {
            cfg: &cfg,
            id: &id,
            uuid: &st.uuid,
            dir: dir.path(),
            accel: decision.accel,
            image_size,
        });
        template::apply(&mut qc, st);
        qc.validate()
            .map_err(|e| HypervisorError::Host(format!("rendered QEMU config is invalid: {e}")))?;
        let args = qc.to_args();
        let qmp_path = dir.file(files::QMP);
        let log = dir.file(files::QEMU_LOG);
        let listener = launch::bind_qmp(&qmp_path)?;
        let events = if crate::supervise::needed(&cfg) {
            Some(launch::bind_qmp(&dir.file(files::EVENTS))?)
        } else {
            None
        };
        launch::prepare(&cfg, dir.path())?;
        if let Some(d) = fs_daemon {
            d.ready(daemons::DAEMON_READY_TIMEOUT.min(timeout)).await?;
        }
        let listeners: Vec<&std::os::unix::net::UnixListener> =
            std::iter::once(&listener).chain(events.as_ref()).collect();
        let pid = launch::spawn(&cfg, &args, &listeners, &log)?;
        drop(events);
        drop(listener);
        let spawn_ms = t0.elapsed().as_secs_f64() * 1e3;
        let ticks = process::start_ticks(pid);
        {
            let st = self
                .state
                .as_mut()
                .ok_or(HypervisorError::NoSandbox { op: "start" })?;
            st.pid = Some(pid);
            st.pid_start_ticks = ticks;
            st.accelerator = Some(decision.accel.as_str().to_string());
            let mut argv = vec![cfg.qemu_path.display().to_string()];
            argv.extend(args);
            st.argv = argv;
        }
        // Persist the pid before waiting, so a crash of this process leaves a
        // state that `stop` can clean up.
        self.save()?;
        let client = launch::wait_qmp(pid, &qmp_path, &log, timeout).await?;
        let restored = match self.state.as_ref() {
            Some(st) => template::restore(&client, st, timeout).await,
            None => Ok(()),
        };
        if let Err(e) = restored {
            return Err(self
                .explain_exit("the load of the template's state", e)
                .await);
        }
        let qmp_ready_ms = t0.elapsed().as_secs_f64() * 1e3;
        if !cfg.extras.port_map.is_empty() {
            let ports = extras::bound_ports(&client).await?;
            if let Some(st) = self.state.as_mut() {
                st.ports = ports;
            }
        }
        self.qmp = Some(client);
        self.set_state(VmState::Running)?;
        self.hp_setup_virtio_mem().await?;
        info!(id, pid, accel = decision.accel.as_str(), reason = %decision.reason, qmp_ready_ms, "sandbox started");
        Ok(StartReport {
            spawn_ms,
            qmp_ready_ms,
        })
    }
}

/// `e` as [`HypervisorError::QemuExited`] when it is a lost QMP connection
/// and QEMU `pid` (started at `ticks`) is gone, or goes within [`EXIT_SETTLE`].
async fn exited_or(pid: i32, ticks: Option<u64>, op: &str, e: HypervisorError) -> HypervisorError {
    let lost = matches!(
        &e,
        HypervisorError::Qmp {
            source: qmp::Error::Disconnected | qmp::Error::Connect { .. },
            ..
        }
    );
    if !lost {
        return e;
    }
    // QEMU's sockets close as it exits, a moment before its pid is gone.
    let gone = !process::alive(pid, ticks) || process::wait_exit(pid, EXIT_SETTLE).await;
    if !gone {
        return e;
    }
    info!(pid, op, "QEMU exited during the operation");
    HypervisorError::QemuExited {
        pid,
        op: op.to_string(),
        source: Box::new(e),
    }
}

/// Whether `pid` runs a QEMU binary (guards kills by salvaged pids).
fn is_qemu(pid: i32) -> bool {
    std::fs::read_link(format!("/proc/{pid}/exe"))
        .map(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("qemu"))
        })
        .unwrap_or(false)
}

impl Hypervisor for Qemu {
    async fn create_vm(&mut self, id: &str, _opts: CreateOptions) -> Result<()> {
        if self.dir.is_some() {
            return Err(self.wrong_state("create"));
        }
        self.config.check_supported()?;
        self.config.check_assets()?;
        let template = template::check_clone(&self.config)?;
        let dir = self.root.create(id)?;
        let fs = match daemons::prepare(&self.config, &dir, _opts.share) {
            Ok(fs) => fs,
            Err(e) => {
                let _ = dir.remove();
                return Err(e);
            }
        };
        let state = SandboxState {
            version: STATE_VERSION,
            id: id.to_string(),
            uuid: uuid::Uuid::new_v4().to_string(),
            state: VmState::Created,
            pid: None,
            pid_start_ticks: None,
            supervisor_pid: None,
            ports: Vec::new(),
            accelerator: None,
            argv: Vec::new(),
            config: self.config.clone(),
            created_unix: unix_now(),
            fs,
            tpm: None,
            template,
            hotplug: Default::default(),
            pci: pci::SlotAllocator::new(build::bridge_ids(
                &self.config,
                &arch::policy(&self.config, Accel::Tcg),
            )),
        };
        if let Err(e) = dir.save(&state) {
            let _ = dir.remove();
            return Err(e.into());
        }
        self.dir = Some(dir);
        self.state = Some(state);
        Ok(())
    }

    async fn start_vm(&mut self, timeout: Duration) -> Result<StartReport> {
        match self.state.as_ref().map(|s| s.state) {
            Some(VmState::Created) => {}
            Some(_) => return Err(self.wrong_state("start")),
            None => return Err(HypervisorError::NoSandbox { op: "start" }),
        }
        match self.start_inner(timeout).await {
            Ok(r) => Ok(r),
            Err(e) => {
                // Leave nothing behind: kill QEMU if it runs, remove the folder.
                if let Err(c) = self.stop_with(StopMode::Force).await {
                    warn!(error = %c, "cleanup after a failed start");
                }
                Err(e)
            }
        }
    }

    async fn stop_vm(&mut self, wait_only: bool) -> Result<()> {
        let mode = if wait_only {
            StopMode::WaitOnly(DEFAULT_POWERDOWN_GRACE)
        } else {
            self.graceful_mode()
        };
        self.stop_with(mode).await
    }

    async fn pause_vm(&mut self) -> Result<()> {
        if self.state.as_ref().map(|s| s.state) != Some(VmState::Running) {
            return Err(self.wrong_state("pause"));
        }
        self.qmp()
            .await?
            .stop()
            .await
            .map_err(HypervisorError::qmp("stop"))?;
        self.set_state(VmState::Paused)
    }

    async fn resume_vm(&mut self) -> Result<()> {
        if self.state.as_ref().map(|s| s.state) != Some(VmState::Paused) {
            return Err(self.wrong_state("resume"));
        }
        self.qmp()
            .await?
            .cont()
            .await
            .map_err(HypervisorError::qmp("cont"))?;
        self.set_state(VmState::Running)
    }

    async fn save_vm(&mut self) -> Result<()> {
        Err(HypervisorError::NotSupported {
            op: "save_vm",
            backend: "qemu",
        })
    }

    async fn add_device(&mut self, _dev: DeviceSpec) -> Result<()> {
        Err(HypervisorError::NotSupported {
            op: "add_device",
            backend: "qemu",
        })
    }

    async fn hotplug_add_device(&mut self, dev: DeviceSpec) -> Result<()> {
        match self.hp_add(dev).await {
            Err(e) => Err(self.explain_exit("a device hotplug", e).await),
            ok => ok,
        }
    }

    async fn hotplug_remove_device(&mut self, id: &str) -> Result<()> {
        match self.hp_remove(id).await {
            Err(e) => Err(self.explain_exit(&format!("the unplug of {id}"), e).await),
            ok => ok,
        }
    }

    async fn resize_memory(&mut self, mib: u64) -> Result<u64> {
        match self.hp_resize_memory(mib).await {
            Err(e) => Err(self.explain_exit("a memory resize", e).await),
            ok => ok,
        }
    }

    async fn resize_vcpus(&mut self, n: u32) -> Result<(u32, u32)> {
        match self.hp_resize_vcpus(n).await {
            Err(e) => Err(self.explain_exit("a vCPU resize", e).await),
            ok => ok,
        }
    }

    async fn get_vm_console(&self) -> Result<ConsoleInfo> {
        let (dir, _) = self.parts("get the console")?;
        Ok(ConsoleInfo {
            socket: dir.file(files::CONSOLE),
            log: dir.file(files::CONSOLE_LOG),
        })
    }

    async fn disconnect(&mut self) {
        self.qmp = None;
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            block_hotplug: true,
            multi_queue: true,
            fs_sharing: self.config.shared_fs.kind != crate::config::SharedFs::None,
        }
    }

    fn hypervisor_config(&self) -> &HypervisorConfig {
        &self.config
    }

    async fn get_thread_ids(&mut self) -> Result<ThreadIds> {
        let cpus = self
            .qmp()
            .await?
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
        self.live_pid()
            .into_iter()
            .chain(self.fs_daemon_pid())
            .chain(self.tpm_pid())
            .collect()
    }

    async fn check(&mut self) -> Result<()> {
        self.qmp()
            .await?
            .query_status()
            .await
            .map_err(HypervisorError::qmp("query-status"))?;
        Ok(())
    }

    async fn cleanup(&mut self) -> Result<()> {
        self.stop_with(StopMode::Force).await
    }

    fn save_state(&self) -> Result<SandboxState> {
        self.state
            .clone()
            .ok_or(HypervisorError::NoSandbox { op: "save state" })
    }

    async fn load_state(&mut self, state: SandboxState) -> Result<()> {
        if self.dir.is_none() {
            self.dir = Some(self.root.open(&state.id)?);
        }
        self.config = state.config.clone();
        self.state = Some(state);
        self.qmp = None;
        Ok(())
    }
}

/// Default start timeout for `start_vm` callers that have none.
pub const DEFAULT_START_TIMEOUT: Duration = Duration::from_secs(30);

/// Path helper for the CLI: the console socket of a sandbox.
pub fn console_socket(root: &StateRoot, id: &str) -> PathBuf {
    root.sandbox_dir(id).join(files::CONSOLE)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_lost_qmp_connection_of_a_dead_qemu_says_it_exited() {
        let lost = || HypervisorError::Qmp {
            op: "blockdev-add",
            source: qmp::Error::Disconnected,
        };
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let pid = child.id() as i32;
        let ticks = process::start_ticks(pid);
        // Still running: a lost connection stays what it is.
        let e = exited_or(pid, ticks, "a device hotplug", lost()).await;
        assert!(matches!(e, HypervisorError::Qmp { .. }), "{e:?}");
        // Not a lost connection: unchanged.
        let timeout = HypervisorError::Qmp {
            op: "blockdev-add",
            source: qmp::Error::Timeout {
                command: "blockdev-add".into(),
            },
        };
        let e = exited_or(pid, ticks, "a device hotplug", timeout).await;
        assert!(matches!(e, HypervisorError::Qmp { .. }), "{e:?}");
        child.kill().unwrap();
        child.wait().unwrap();
        let e = exited_or(pid, ticks, "a device hotplug", lost()).await;
        assert_eq!(
            e.to_string(),
            format!("QEMU (pid {pid}) exited during a device hotplug")
        );
        let source = std::error::Error::source(&e).unwrap().to_string();
        assert!(source.contains("blockdev-add"), "{source}");
    }
}
