//! Create, start and stop, on the [`Core`] of one sandbox.

use super::Supervision;
use super::core::{Core, QMP_TIMEOUT};
use super::daemons::{DAEMON_READY_TIMEOUT, Pending};
use super::launch;
use super::record::QemuRecord;
use crate::config::{ConfigError, annotations};
use crate::error::{HypervisorError, Result};
use crate::host::{accel, process};
use crate::plan::{self, Layout, PlanInput};
use crate::state::files;
use crate::types::{CreateOptions, ShutdownSeen, StartReport, StopOutcome, StopReport, VmState};
use nix::sys::signal::Signal;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::time::{Duration, Instant};
use tokio::sync::broadcast;
use tracing::{info, warn};

/// How long `stop_vm` waits after `system_powerdown` before SIGTERM, when
/// the config sets no `graceful_shutdown_timeout`.
pub const DEFAULT_POWERDOWN_GRACE: Duration = Duration::from_secs(5);
/// How long SIGTERM is given before SIGKILL.
pub const TERM_GRACE: Duration = Duration::from_secs(3);
/// The marker a stop leaves in the folder, so a supervisor reports the end
/// as a stop rather than as the guest powering off.
pub const STOPPING: &str = "stopping";

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

/// A start that restores a snapshot.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Restore<'a> {
    /// The snapshot folder.
    pub src: &'a std::path::Path,
    /// Whether the guest ran at the save (resume it).
    pub running: bool,
}

/// The size of the root image, measured at create.
fn image_size(cfg: &crate::config::HypervisorConfig) -> Result<Option<u64>> {
    match &cfg.image {
        Some(p) => Ok(Some(
            std::fs::metadata(p)
                .map_err(HypervisorError::io(p.display()))?
                .len(),
        )),
        None => Ok(None),
    }
}

impl Core {
    /// Create the sandbox `id`: annotations, checks, folder, record, cold-plugged NICs.
    pub(crate) async fn create(&mut self, id: &str, opts: CreateOptions) -> Result<()> {
        if self.dir.is_some() {
            return Err(self.wrong_state("create"));
        }
        let cfg = annotations::apply(&self.config, &opts.annotations)?;
        if cfg.factory.enable_template && opts.template.is_none() {
            return Err(ConfigError::Invalid {
                file: cfg.source.display().to_string(),
                key: "factory.enable_template".into(),
                reason: "a templated sandbox is created through runtime::factory \
                         (factory::create_options), which checks the template"
                    .into(),
            }
            .into());
        }
        cfg.check_supported()?;
        cfg.check_assets()?;
        let layout = Layout::new(&cfg, image_size(&cfg)?);
        let dir = self.root.create(id)?;
        let mut rec = QemuRecord::new(id, cfg.clone(), layout);
        rec.template = opts.template;
        rec.annotations = opts.annotations.clone();
        let prepared = super::daemons::fs::prepare(&cfg, &dir, opts.share.clone(), opts.template)
            .and_then(|fs| {
                rec.fs = fs;
                dir.save(&rec).map_err(HypervisorError::from)
            });
        if let Err(e) = prepared {
            let _ = dir.remove();
            return Err(e);
        }
        self.config = cfg;
        self.dir = Some(dir);
        self.state = Some(rec);
        for ep in opts.network {
            if let Err(e) = self.cold_add(ep.into_device(String::new())) {
                self.discard();
                return Err(e);
            }
        }
        info!(id, "sandbox created");
        Ok(())
    }

    /// Remove a sandbox that never started (a failed create).
    fn discard(&mut self) {
        self.state = None;
        self.fds.clear();
        if let Some(dir) = self.dir.take() {
            let _ = dir.remove();
        }
    }

    /// Start QEMU (and its daemons first). On success, returns the timings
    /// and, with `events`, a connection to the events monitor for a
    /// supervisor. With `restore`, QEMU waits for the snapshot's stream.
    pub(crate) async fn start(
        &mut self,
        timeout: Duration,
        supervision: &Supervision,
        restore: Option<Restore<'_>>,
    ) -> Result<(StartReport, Option<qmp::Client>)> {
        match self.state.as_ref().map(|s| s.state) {
            Some(VmState::Created) => {}
            Some(_) => return Err(self.wrong_state("start")),
            None => return Err(HypervisorError::NoSandbox { op: "start" }),
        }
        match self.start_inner(timeout, supervision, restore).await {
            Ok(r) => Ok(r),
            Err(e) => {
                // Leave nothing behind: kill QEMU and the daemons, remove the folder.
                if let Err(c) = self.stop_with(StopMode::Force).await {
                    warn!(error = %c, "cleanup after a failed start");
                }
                Err(e)
            }
        }
    }

    async fn start_inner(
        &mut self,
        timeout: Duration,
        supervision: &Supervision,
        restore: Option<Restore<'_>>,
    ) -> Result<(StartReport, Option<qmp::Client>)> {
        let want_events = *supervision == Supervision::InProcess;
        let t0 = Instant::now();
        // The daemons first: they come up while QEMU's start is prepared.
        let mut pending: Vec<Pending> = Vec::new();
        pending.extend(self.start_fs_daemon()?);
        pending.extend(self.start_vsock_daemon()?);
        self.start_tpm()?;
        let (dir, st) = self.parts("start")?;
        let cfg = st.config.clone();
        let decision = accel::decide(
            cfg.accelerator,
            cfg.guest_arch,
            &cfg.qemu_path,
            self.root.path(),
        )
        .await?;
        let qc = plan::plan(&PlanInput {
            cfg: &cfg,
            layout: &st.layout,
            accel: decision.accel,
            id: dir.id(),
            uuid: &st.uuid,
            dir: dir.path(),
            share: st.fs.as_ref().map(|f| f.share.as_path()),
            role: st.template,
            agent: st.agent.as_ref().map(|a| a.kind),
            cold: &st.cold,
            incoming: restore.is_some(),
        })?;
        let args = qc.to_args();
        let qmp_path = dir.file(files::QMP);
        let log = dir.file(files::QEMU_LOG);
        let qmp_listener = launch::bind_listener(&qmp_path)?;
        let events_listener = launch::bind_listener(&dir.file(files::EVENTS))?;
        let taps = self.cold_tap_fds()?;
        for p in pending {
            p.ready(DAEMON_READY_TIMEOUT.min(timeout)).await?;
        }
        let (dir, _) = self.parts("start")?;
        launch::prepare(&cfg, dir.path())?;
        let mut fds: Vec<RawFd> = vec![qmp_listener.as_raw_fd(), events_listener.as_raw_fd()];
        fds.extend(taps.iter().map(AsRawFd::as_raw_fd));
        let pid = launch::spawn(&cfg, &args, &fds, &log)?;
        drop((qmp_listener, events_listener, taps));
        let spawn_ms = t0.elapsed().as_secs_f64() * 1e3;
        {
            let st = self.record_mut("start")?;
            st.pid = Some(pid);
            st.pid_start_ticks = process::start_ticks(pid);
            st.accelerator = Some(decision.accel.as_str().to_string());
            st.argv = std::iter::once(cfg.qemu_path.display().to_string())
                .chain(args)
                .collect();
        }
        // A detached supervisor is spawned now but reads the state only once
        // `gate` is dropped, after QEMU's pid and its own are saved together.
        let (dir, _) = self.parts("start")?;
        let gate = match supervision.spawn_detached(dir.path(), dir.id())? {
            Some((sup, gate)) => {
                self.record_mut("start")?.supervisor_pid = Some(sup);
                Some(gate)
            }
            None => None,
        };
        // Persist the pids before waiting, so a crash of this process leaves
        // a state that `stop` can clean up (QEMU and the supervisor).
        self.save()?;
        drop(gate);
        let client = launch::wait_qmp(pid, &qmp_path, &log, timeout).await?;
        let events = match want_events {
            true => Some(self.connect_events(pid, timeout).await?),
            false => None,
        };
        let qmp_ready_ms = t0.elapsed().as_secs_f64() * 1e3;
        let loaded = match restore {
            Some(r) => self.load_snapshot(&client, r.src, r.running).await,
            None => self.restore_clone(&client, timeout).await,
        };
        if let Err(e) = loaded {
            let what = match restore {
                Some(_) => "the load of the snapshot",
                None => "the load of the template's state",
            };
            return Err(self.explain_exit(what, e).await);
        }
        if !cfg.extras.port_map.is_empty() {
            let ports = bound_ports(&client).await?;
            self.record_mut("start")?.ports = ports;
        }
        self.qmp = Some(client);
        let paused = restore.is_some_and(|r| !r.running);
        self.set_state(if paused {
            VmState::Paused
        } else {
            VmState::Running
        })?;
        self.hp_setup_virtio_mem().await?;
        info!(id = self.id(), pid, accel = decision.accel.as_str(), reason = %decision.reason, qmp_ready_ms, "sandbox started");
        Ok((
            StartReport {
                spawn_ms,
                qmp_ready_ms,
            },
            events,
        ))
    }

    /// The events monitor, for the in-process supervisor.
    async fn connect_events(&self, pid: i32, timeout: Duration) -> Result<qmp::Client> {
        let (dir, _) = self.parts("connect the events monitor")?;
        let log = dir.file(files::QEMU_LOG);
        launch::wait_qmp(pid, &dir.file(files::EVENTS), &log, timeout).await
    }

    /// The fds of cold-plugged devices, in the order the plan numbers them:
    /// named taps opened now, fds the caller passed to this handle (taps,
    /// channels).
    fn cold_tap_fds(&mut self) -> Result<Vec<OwnedFd>> {
        use crate::plan::coldplug::{ColdSpec, passes_fd};
        let cold = self.parts("start")?.1.cold.clone();
        let mut fds = Vec::new();
        for d in cold.iter().filter(|d| passes_fd(&d.spec)) {
            let fd = match &d.spec {
                ColdSpec::Net {
                    tap: Some(name), ..
                } => super::hotplug::net::open_tap(name)?,
                _ => self.fds.remove(&d.id).ok_or_else(|| {
                    HypervisorError::unsupported(
                        format!("start with device {}", d.id),
                        "its fd was given to another handle of this sandbox (a process \
                         that exited); remove the device and add it again",
                    )
                })?,
            };
            fds.push(fd);
        }
        Ok(fds)
    }

    /// Stop with an explicit mode. Idempotent: a stopped or vanished sandbox
    /// is cleaned up and `Ok`.
    pub(crate) async fn stop_with(&mut self, mode: StopMode) -> Result<StopReport> {
        let t0 = Instant::now();
        let Some(dir) = &self.dir else {
            return Ok(StopReport {
                outcome: StopOutcome::NotRunning,
                ms: 0.0,
                shutdown: None,
            });
        };
        let _ = std::fs::write(dir.file(STOPPING), b"");
        let (outcome, shutdown) = match self.live_pid() {
            Some(pid) => self.end_qemu(pid, mode).await?,
            None if self.state.as_ref().is_some_and(|s| s.pid.is_some()) => {
                (StopOutcome::Exited, None)
            }
            None => (StopOutcome::NotRunning, None),
        };
        let ms = t0.elapsed().as_secs_f64() * 1e3;
        self.qmp = None;
        if let Some(pid) = self.state.as_ref().and_then(|s| s.pid) {
            // QEMU's helpers (an `exec:` migration's `sh -c cat` when QEMU
            // died in mid-save) outlive it for as long as they drain.
            process::end_orphaned_group(pid, TERM_GRACE).await;
        }
        self.stop_fs_daemon().await;
        self.stop_vsock_daemon().await;
        self.stop_tpm().await;
        self.reap_supervisor().await;
        self.state = None;
        self.fds.clear();
        if let Some(dir) = self.dir.take() {
            dir.remove()?;
        }
        Ok(StopReport {
            outcome,
            ms,
            shutdown,
        })
    }

    /// End QEMU `pid` as `mode` says; how it ended and, after a powerdown
    /// it answered, QEMU's `SHUTDOWN` event.
    async fn end_qemu(
        &mut self,
        pid: i32,
        mode: StopMode,
    ) -> Result<(StopOutcome, Option<ShutdownSeen>)> {
        let t0 = Instant::now();
        let mut shutdown = None;
        let exited = match mode {
            StopMode::Force => None,
            StopMode::WaitOnly(grace) => process::wait_exit(pid, grace)
                .await
                .then_some(StopOutcome::Exited),
            StopMode::Graceful(grace) => match self.powerdown().await {
                Some(mut events) if process::wait_exit(pid, grace).await => {
                    shutdown = shutdown_event(&mut events).await;
                    Some(StopOutcome::Graceful)
                }
                _ => None,
            },
        };
        self.qmp = None;
        let outcome = match exited {
            Some(o) => o,
            None => kill(pid, mode).await?,
        };
        info!(pid, ms = t0.elapsed().as_millis() as u64, %outcome, ?shutdown, "QEMU stopped");
        Ok((outcome, shutdown))
    }

    /// Press the ACPI power button (`system_powerdown`); QEMU's events from
    /// just before the press, or `None` when it could not be pressed.
    async fn powerdown(&mut self) -> Option<broadcast::Receiver<qmp::Event>> {
        let c = match self.qmp().await {
            Ok(c) => c,
            Err(e) => {
                warn!(error = %e, "no QMP for a graceful stop");
                return None;
            }
        };
        let events = c.events();
        match c
            .execute_with_timeout("system_powerdown", None, QMP_TIMEOUT)
            .await
        {
            Ok(_) => Some(events),
            Err(e) => {
                warn!(error = %e, "system_powerdown failed");
                None
            }
        }
    }

    /// The stop mode the config asks for: ACPI powerdown with the
    /// `graceful_shutdown_timeout` grace, or a kill at once when it is 0.
    pub(crate) fn graceful_mode(&self) -> StopMode {
        match self.config.extras.graceful_shutdown_secs {
            0 => StopMode::Force,
            n => StopMode::Graceful(Duration::from_secs(n.into())),
        }
    }

    /// The detached supervisor exits when QEMU's monitor closes; give it a
    /// moment, then kill it.
    async fn reap_supervisor(&mut self) {
        let Some(pid) = self.state.as_ref().and_then(|s| s.supervisor_pid) else {
            return;
        };
        if pid == std::process::id() as i32 {
            return;
        }
        if process::alive(pid, None) && !process::wait_exit(pid, TERM_GRACE).await {
            process::signal(pid, Signal::SIGKILL);
            process::wait_exit(pid, TERM_GRACE).await;
        }
    }

    /// Pause the guest.
    pub(crate) async fn pause(&mut self) -> Result<()> {
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

    /// Resume the guest.
    pub(crate) async fn resume(&mut self) -> Result<()> {
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
}

/// The `SHUTDOWN` event among QEMU's `events`, read until the connection
/// closes (QEMU has exited: everything it sent is there), at most
/// [`QMP_TIMEOUT`].
async fn shutdown_event(events: &mut broadcast::Receiver<qmp::Event>) -> Option<ShutdownSeen> {
    let find = async {
        loop {
            match events.recv().await {
                Ok(ev) if ev.name == "SHUTDOWN" => {
                    return Some(ShutdownSeen {
                        guest: ev.data.get("guest").and_then(|g| g.as_bool()) == Some(true),
                        reason: ev.data_str("reason").unwrap_or_default().to_string(),
                    });
                }
                Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    };
    tokio::time::timeout(QMP_TIMEOUT, find).await.ok().flatten()
}

/// SIGTERM then SIGKILL (or SIGKILL at once with [`StopMode::Force`]).
async fn kill(pid: i32, mode: StopMode) -> Result<StopOutcome> {
    if mode != StopMode::Force {
        process::signal(pid, Signal::SIGTERM);
        if process::wait_exit(pid, TERM_GRACE).await {
            return Ok(StopOutcome::Terminated);
        }
    }
    process::signal(pid, Signal::SIGKILL);
    if process::wait_exit(pid, Duration::from_secs(10)).await {
        return Ok(StopOutcome::Killed);
    }
    Err(HypervisorError::unsupported(
        format!("stop QEMU (pid {pid})"),
        "it survived SIGKILL (stuck in the kernel?)",
    ))
}

/// The host ports QEMU bound for the forwards, from HMP `info usernet`.
async fn bound_ports(client: &qmp::Client) -> Result<Vec<crate::config::extras::PortForward>> {
    let out = client
        .execute(
            "human-monitor-command",
            Some(serde_json::json!({ "command-line": "info usernet" })),
        )
        .await
        .map_err(HypervisorError::qmp("info usernet"))?;
    Ok(crate::config::extras::parse_usernet(
        out.as_str().unwrap_or_default(),
    ))
}
