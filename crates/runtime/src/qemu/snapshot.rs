//! Snapshots of a running sandbox ([`Hypervisor::save_vm`](crate::Hypervisor::save_vm))
//! and their restore in a new QEMU ([`Qemu::restore`](super::Qemu::restore)).
//!
//! ```text
//! save:    stop ──migrate (all RAM, device state, daemons' state such as
//!          virtiofsd's and swtpm's) exec:cat>'<DIR>.partial/state'──> MIGRATION completed
//!          ──copy the sandbox's own share folder──> snapshot.json last ──rename──> DIR
//!          ──cont, or stop the sandbox
//! restore: check snapshot.json (version, files, QEMU major, machine, config)
//!          ──new sandbox folder, daemons started again──> QEMU with the same devices, -incoming defer
//!          ──replay the hotplugged devices (same ids, slots, sizes)──> migrate-incoming exec:cat DIR/state
//!          ──cont (when the guest ran at the save)
//! ```
//! The folder is written under a temporary name and renamed when complete,
//! so a crash never leaves a folder that looks like a snapshot.

use super::Qemu;
use super::core::Core;
use super::hotplug::{self, Replay, memory};
use super::lifecycle::StopMode;
use super::migrate::{Ram, load_uri, migrate, save_uri};
use super::record::{Proc, QemuRecord, unix_now};
use crate::config::HypervisorConfig;
use crate::error::{HypervisorError, Result};
use crate::plan::coldplug::ColdSpec;
use crate::types::{TemplateRole, VmState};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use tracing::{info, warn};

/// What a snapshot is, in the snapshot folder; written last.
pub const META_FILE: &str = "snapshot.json";
/// The migration stream (device state and guest RAM).
pub const STATE_FILE: &str = "state";
/// A copy of the sandbox's own share folder (when it shared its `shared/`).
pub const SHARE_DIR: &str = "shared";
/// Layout version of `snapshot.json`.
pub const SNAPSHOT_VERSION: u32 = 1;
/// How long a save or a restore may migrate.
pub const MIGRATE_TIMEOUT: Duration = Duration::from_secs(600);

/// What `snapshot.json` holds.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SnapshotMeta {
    /// Layout version (`SNAPSHOT_VERSION`, 1).
    pub version: u32,
    /// The sandvm that wrote it.
    pub sandvm: String,
    /// The QEMU that ran the guest (`10.0.2`).
    pub qemu_version: String,
    /// Its major version: a restore needs the same.
    pub qemu_major: u64,
    /// The machine type.
    pub machine_type: String,
    /// Unix time of the save, seconds.
    pub created_unix: u64,
    /// Whether the guest ran when it was saved (a restore resumes it).
    pub running: bool,
    /// Bytes of the migration stream.
    pub state_bytes: u64,
    /// Whether the sandbox's own share folder was copied into `shared/`.
    pub share_copied: bool,
    /// The sandbox as it was: config, layout, devices (pids cleared).
    pub record: QemuRecord,
}

/// What a save wrote.
#[derive(Debug, Clone, Serialize)]
pub struct SnapshotInfo {
    /// The snapshot folder.
    pub path: PathBuf,
    /// Bytes of the migration stream.
    pub state_bytes: u64,
    /// Guest memory at the save, MiB.
    pub memory_mib: u64,
    /// Milliseconds from the call to the complete snapshot.
    pub ms: f64,
}

/// What a restore did.
#[derive(Debug, Clone, Serialize)]
pub struct RestoreReport {
    /// The restored sandbox's id.
    pub id: String,
    /// Milliseconds from the call until the guest runs again.
    pub ms: f64,
}

/// Options for [`Qemu::restore`].
#[derive(Debug, Clone, Default)]
pub struct RestoreOptions {
    /// The restored sandbox's id (the caller chooses; it must be free).
    pub id: String,
    /// The config to restore with; default: the snapshot's. Any difference
    /// that changes the VM is refused, naming the key.
    pub config: Option<HypervisorConfig>,
    /// How long QEMU may take to come up.
    pub timeout: Option<Duration>,
    /// Who watches the restored VM.
    pub supervision: super::Supervision,
}

fn bad(path: &Path, reason: impl Into<String>) -> HypervisorError {
    HypervisorError::Snapshot {
        path: path.display().to_string(),
        reason: reason.into(),
    }
}

/// The temporary name a snapshot is written under.
fn partial_path(dest: &Path) -> PathBuf {
    let name = dest
        .file_name()
        .map_or("snapshot".into(), |n| n.to_string_lossy().into_owned());
    dest.with_file_name(format!(".{name}.partial-{}", std::process::id()))
}

impl Core {
    /// Save the running sandbox into `dest` (which must not exist); then
    /// resume it, or stop it with `stop`.
    pub(crate) async fn save_snapshot(&mut self, dest: &Path, stop: bool) -> Result<SnapshotInfo> {
        let t0 = Instant::now();
        self.require_running("save a snapshot")?;
        let hybrid = self
            .parts("save a snapshot")?
            .1
            .agent
            .as_ref()
            .map(|a| a.kind)
            == Some(crate::config::AgentChannel::HybridVsock);
        if hybrid {
            return Err(HypervisorError::unsupported(
                "save a snapshot",
                "QEMU cannot migrate vhost-user-vsock (hypervisor.qemu.agent_channel = \"hybrid-vsock\"); \
                 use virtio-serial",
            ));
        }
        let st = self.parts("save a snapshot")?.1;
        let disposable = st.cold.iter().find_map(|d| match &d.spec {
            ColdSpec::Block {
                path,
                disposable: true,
                ..
            } => Some(path.display().to_string()),
            _ => None,
        });
        if let Some(path) = disposable {
            // Its writes live in an overlay QEMU made and unlinked: a restore
            // would silently see the image as it was before them.
            return Err(HypervisorError::unsupported(
                "save a snapshot",
                format!(
                    "the disposable disk {path} keeps its writes in a temporary overlay a snapshot cannot carry"
                ),
            ));
        }
        if dest.exists() {
            return Err(HypervisorError::invalid(
                "snapshot folder",
                dest.display().to_string(),
                "already exists",
            ));
        }
        let tmp = partial_path(dest);
        let _ = std::fs::remove_dir_all(&tmp);
        std::fs::create_dir_all(&tmp).map_err(HypervisorError::io(tmp.display()))?;
        let was_running = self.state.as_ref().map(|s| s.state) == Some(VmState::Running);
        let written = self.write_snapshot(&tmp, dest, was_running).await;
        let (state_bytes, memory_mib) = match written {
            Ok(v) => v,
            Err(e) => {
                let _ = std::fs::remove_dir_all(&tmp);
                let e = self.explain_exit("the save of a snapshot", e).await;
                if was_running && self.live_pid().is_some() {
                    self.resume_after_save().await;
                }
                return Err(e);
            }
        };
        info!(id = self.id(), path = %dest.display(), state_bytes, "snapshot saved");
        if stop {
            self.stop_with(StopMode::Force).await?;
        } else if was_running {
            self.resume_after_save().await;
        }
        Ok(SnapshotInfo {
            path: dest.to_path_buf(),
            state_bytes,
            memory_mib,
            ms: t0.elapsed().as_secs_f64() * 1e3,
        })
    }

    async fn resume_after_save(&mut self) {
        let resumed = match self.qmp().await {
            Ok(c) => c.cont().await.is_ok(),
            Err(_) => false,
        };
        if resumed {
            let _ = self.set_state(VmState::Running);
        } else {
            warn!(
                id = self.id(),
                "the guest could not be resumed after the save"
            );
        }
    }

    /// Pause, migrate into `tmp`, copy the share, write the metadata, rename.
    async fn write_snapshot(
        &mut self,
        tmp: &Path,
        dest: &Path,
        running: bool,
    ) -> Result<(u64, u64)> {
        let c = self.qmp().await?.clone();
        let version = c
            .query_version()
            .await
            .map_err(HypervisorError::qmp("query-version"))?;
        if running {
            c.stop().await.map_err(HypervisorError::qmp("stop"))?;
            self.set_state(VmState::Paused)?;
        }
        let state = tmp.join(STATE_FILE);
        migrate(&c, "migrate", &save_uri(&state), Ram::All, MIGRATE_TIMEOUT).await?;
        let (dir, rec) = self.parts("save a snapshot")?;
        let share_copied = match &rec.fs {
            Some(fs) if fs.share.starts_with(dir.path()) => {
                copy_tree(&fs.share, &tmp.join(SHARE_DIR)).await?;
                true
            }
            _ => false,
        };
        let state_bytes = std::fs::metadata(&state)
            .map_err(HypervisorError::io(state.display()))?
            .len();
        let mut record = rec.clone();
        clear_processes(&mut record);
        let meta = SnapshotMeta {
            version: SNAPSHOT_VERSION,
            sandvm: env!("CARGO_PKG_VERSION").into(),
            qemu_version: format!(
                "{}.{}.{}",
                version.qemu.major, version.qemu.minor, version.qemu.micro
            ),
            qemu_major: version.qemu.major as u64,
            machine_type: record.config.machine_type.clone(),
            created_unix: unix_now(),
            running,
            state_bytes,
            share_copied,
            record,
        };
        let memory_mib = meta.record.memory_mib();
        let json = serde_json::to_vec_pretty(&meta).map_err(|e| HypervisorError::Io {
            what: tmp.join(META_FILE).display().to_string(),
            source: e.into(),
        })?;
        let meta_path = tmp.join(META_FILE);
        std::fs::write(&meta_path, json).map_err(HypervisorError::io(meta_path.display()))?;
        std::fs::rename(tmp, dest).map_err(HypervisorError::io(dest.display()))?;
        Ok((state_bytes, memory_mib))
    }

    /// Make this (new) sandbox the one in `meta`: its folder, its record,
    /// its share.
    pub(crate) fn create_restored(
        &mut self,
        id: &str,
        meta: &SnapshotMeta,
        src: &Path,
    ) -> Result<()> {
        if self.dir.is_some() {
            return Err(self.wrong_state("restore"));
        }
        let dir = self.root.create(id)?;
        let mut rec = meta.record.clone();
        rec.id = id.to_string();
        rec.state = VmState::Created;
        rec.config = self.config.clone();
        if let Some(fs) = rec.fs.as_mut() {
            if meta.share_copied {
                let share = dir.file(crate::plan::sharedfs::DEFAULT_SHARE);
                if let Err(e) = copy_tree_sync(&src.join(SHARE_DIR), &share) {
                    let _ = dir.remove();
                    return Err(e);
                }
                fs.share = share;
            } else if !fs.share.is_dir() {
                let _ = dir.remove();
                return Err(bad(
                    src,
                    format!(
                        "the shared folder {} is gone; the guest's shared filesystem needs it",
                        fs.share.display()
                    ),
                ));
            }
        }
        if let Err(e) = dir.save(&rec) {
            let _ = dir.remove();
            return Err(e.into());
        }
        self.dir = Some(dir);
        self.state = Some(rec);
        Ok(())
    }

    /// After QEMU is up with `-incoming defer`: the hotplugged devices again,
    /// then the migration stream; resume when the guest ran at the save.
    pub(crate) async fn load_snapshot(
        &mut self,
        client: &qmp::Client,
        src: &Path,
        running: bool,
    ) -> Result<()> {
        self.replay(client).await?;
        migrate(
            client,
            "migrate-incoming",
            &load_uri(&src.join(STATE_FILE)),
            Ram::All,
            MIGRATE_TIMEOUT,
        )
        .await?;
        if running {
            client.cont().await.map_err(HypervisorError::qmp("cont"))?;
        }
        Ok(())
    }

    /// Plug what had been hotplugged, with the same ids, slots and sizes.
    async fn replay(&mut self, c: &qmp::Client) -> Result<()> {
        let cfg = self.config.clone();
        let rec = self.parts("restore")?.1.clone();
        let agent = rec.agent.as_ref().map(|a| a.kind);
        if let Some(vm) = &rec.hotplug.virtio_mem {
            let mut plan = hotplug::Plan {
                record: hotplug::PluggedDevice::placeholder(&vm.id),
                steps: memory::virtio_mem_steps(&cfg, agent, &rec.layout.arch, vm.region_mib),
                fd: None,
                needs_slot: false,
            };
            if let Some(s) = &vm.slot {
                plan.place(s);
            }
            hotplug::run_steps(c, &plan.steps, None).await?;
        }
        for d in rec.hotplug.devices.iter().filter(|d| !d.add.is_empty()) {
            replay_device(c, d).await?;
        }
        if !rec.hotplug.vcpus.is_empty() {
            let slots = c
                .query_hotpluggable_cpus()
                .await
                .map_err(HypervisorError::qmp("query-hotpluggable-cpus"))?;
            let cpu_type = slots
                .first()
                .map(|s| s.cpu_type.clone())
                .unwrap_or_default();
            for cpu in &rec.hotplug.vcpus {
                c.device_add(&cpu_type, &cpu.id, cpu.props.clone())
                    .await
                    .map_err(|source| HypervisorError::Qmp {
                        op: "device_add (vCPU)",
                        source,
                    })?;
            }
        }
        Ok(())
    }
}

/// Replay one device's hotplug calls (a tap is opened again by its name).
async fn replay_device(c: &qmp::Client, d: &hotplug::PluggedDevice) -> Result<()> {
    let fd = match d.add.iter().any(|r| r.pass_fd) {
        false => None,
        true => match d.info.get("tap").and_then(|t| t.as_str()) {
            Some(tap) => Some(hotplug::net::open_tap(tap)?),
            None => {
                return Err(HypervisorError::unsupported(
                    format!("restore NIC {}", d.id),
                    "it was plugged from a file descriptor (a caller's tap or a cable), \
                     which a snapshot cannot reopen; unplug it before saving",
                ));
            }
        },
    };
    for Replay { call, pass_fd } in &d.add {
        let f = if *pass_fd { fd.as_ref() } else { None };
        hotplug::exec(c, call, f)
            .await
            .map_err(|e| hotplug::step_error(call, e))?;
    }
    Ok(())
}

/// A record without live processes (they belong to the saved sandbox).
fn clear_processes(rec: &mut QemuRecord) {
    rec.pid = None;
    rec.pid_start_ticks = None;
    rec.supervisor_pid = None;
    rec.argv.clear();
    if let Some(fs) = rec.fs.as_mut() {
        fs.proc = Proc::default();
    }
    rec.tpm = rec.tpm.map(|_| Proc::default());
    if let Some(a) = rec.agent.as_mut() {
        a.daemon = Proc::default();
    }
}

/// Read a snapshot's metadata and check that it is complete.
pub fn read_meta(src: &Path) -> Result<SnapshotMeta> {
    if !src.is_dir() {
        return Err(bad(src, "no such snapshot folder"));
    }
    let meta_path = src.join(META_FILE);
    let bytes = std::fs::read(&meta_path).map_err(|_| {
        bad(
            src,
            format!("{META_FILE} is missing: an incomplete or damaged snapshot"),
        )
    })?;
    let meta: SnapshotMeta = serde_json::from_slice(&bytes)
        .map_err(|e| bad(src, format!("{META_FILE} is unreadable: {e}")))?;
    if meta.version != SNAPSHOT_VERSION {
        return Err(bad(
            src,
            format!(
                "{META_FILE} version {} (this sandvm reads {SNAPSHOT_VERSION})",
                meta.version
            ),
        ));
    }
    let size = std::fs::metadata(src.join(STATE_FILE)).map(|m| m.len());
    match size {
        Ok(n) if n == meta.state_bytes => Ok(meta),
        Ok(n) => Err(bad(
            src,
            format!(
                "{STATE_FILE} has {n} bytes, {META_FILE} says {}: a damaged snapshot",
                meta.state_bytes
            ),
        )),
        Err(_) => Err(bad(src, format!("{STATE_FILE} is missing"))),
    }
}

/// The first key whose value differs between the snapshot's config and
/// `now`, ignoring where each was loaded from.
pub fn changed_key(
    then: &HypervisorConfig,
    now: &HypervisorConfig,
) -> Option<(String, String, String)> {
    let a = serde_json::to_value(then).ok()?;
    let b = serde_json::to_value(now).ok()?;
    diff(&a, &b, "").filter(|(k, _, _)| k != "source")
}

fn diff(
    a: &serde_json::Value,
    b: &serde_json::Value,
    at: &str,
) -> Option<(String, String, String)> {
    use serde_json::Value;
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            let keys: std::collections::BTreeSet<&String> = x.keys().chain(y.keys()).collect();
            keys.into_iter()
                .filter(|k| at.is_empty() && k.as_str() != "source" || !at.is_empty())
                .find_map(|k| {
                    let path = if at.is_empty() {
                        k.clone()
                    } else {
                        format!("{at}.{k}")
                    };
                    diff(
                        x.get(k).unwrap_or(&Value::Null),
                        y.get(k).unwrap_or(&Value::Null),
                        &path,
                    )
                })
        }
        _ if a == b => None,
        _ => Some((at.to_string(), a.to_string(), b.to_string())),
    }
}

/// The config key a field of [`HypervisorConfig`] comes from.
fn config_key(field: &str) -> String {
    let top = field.split('.').next().unwrap_or(field);
    let key = match top {
        "qemu_path" => "path",
        "vcpus" => "default_vcpus",
        "max_vcpus" => "default_maxvcpus",
        "memory_mib" => "default_memory",
        "max_memory_mib" => "default_maxmemory",
        "memory_offset_mib" => "memory_offset",
        "bridges" => "default_bridges",
        "pcie_root_ports" => "pcie_root_port",
        "virtio_mem" => "enable_virtio_mem",
        "mem_prealloc" => "enable_mem_prealloc",
        "hugepages" => "enable_hugepages",
        "iommu" => "enable_iommu",
        "iommu_platform" => "enable_iommu_platform",
        "debug" => "enable_debug",
        "seccomp_sandbox" => "seccompsandbox",
        "shared_fs" => "shared_fs (virtio_fs_*)",
        "block" => "block_device_*",
        "agent" => "agent_channel",
        "extras" => "the sandvm extras (port_map, fw_cfg, enable_tpm, ...)",
        "factory" => return format!("factory ({field})"),
        other => other,
    };
    format!("hypervisor.qemu.{key}")
}

/// The QEMU binary's major version, from `--version`.
async fn qemu_major(qemu: &Path) -> Result<u64> {
    let out = tokio::process::Command::new(qemu)
        .arg("--version")
        .output()
        .await
        .map_err(HypervisorError::io(format!("{} --version", qemu.display())))?;
    let text = String::from_utf8_lossy(&out.stdout);
    text.split_whitespace()
        .skip_while(|w| *w != "version")
        .nth(1)
        .and_then(|v| v.split('.').next())
        .and_then(|m| m.parse().ok())
        .ok_or_else(|| {
            HypervisorError::invalid("QEMU version", text.trim().to_string(), "not understood")
        })
}

/// Refuse a restore the snapshot was not made for: another QEMU major,
/// another machine, a changed config (naming the key).
pub async fn check_compatible(
    src: &Path,
    meta: &SnapshotMeta,
    cfg: &HypervisorConfig,
) -> Result<()> {
    if let Some((field, then, now)) = changed_key(&meta.record.config, cfg) {
        return Err(bad(
            src,
            format!(
                "the config changed since the save: {} ({field}) was {then}, is {now}",
                config_key(&field)
            ),
        ));
    }
    if meta.machine_type != cfg.machine_type {
        return Err(bad(
            src,
            format!(
                "made on machine {}, the config asks for {} (hypervisor.qemu.machine_type)",
                meta.machine_type, cfg.machine_type
            ),
        ));
    }
    let major = qemu_major(&cfg.qemu_path).await?;
    if major != meta.qemu_major {
        return Err(bad(
            src,
            format!(
                "made by QEMU {}, this is QEMU {major}.x ({}); QEMU restores only its own major version",
                meta.qemu_version,
                cfg.qemu_path.display()
            ),
        ));
    }
    if meta.record.template == Some(TemplateRole::Clone)
        && !crate::factory::template::inspect(&cfg.factory.template_path).is_complete()
    {
        return Err(bad(
            src,
            format!(
                "a clone of the template in {}, which is gone (factory.template_path)",
                cfg.factory.template_path.display()
            ),
        ));
    }
    Ok(())
}

/// Copy a folder tree (files, folders, symlinks), off the async threads.
async fn copy_tree(from: &Path, to: &Path) -> Result<()> {
    let (from, to) = (from.to_path_buf(), to.to_path_buf());
    tokio::task::spawn_blocking(move || copy_tree_sync(&from, &to))
        .await
        .map_err(|e| HypervisorError::Io {
            what: "copy of the share folder".into(),
            source: std::io::Error::other(e.to_string()),
        })?
}

fn copy_tree_sync(from: &Path, to: &Path) -> Result<()> {
    std::fs::create_dir_all(to).map_err(HypervisorError::io(to.display()))?;
    let entries = std::fs::read_dir(from).map_err(HypervisorError::io(from.display()))?;
    for e in entries {
        let e = e.map_err(HypervisorError::io(from.display()))?;
        let (src, dst) = (e.path(), to.join(e.file_name()));
        let ft = e.file_type().map_err(HypervisorError::io(src.display()))?;
        if ft.is_dir() {
            copy_tree_sync(&src, &dst)?;
        } else if ft.is_symlink() {
            let target = std::fs::read_link(&src).map_err(HypervisorError::io(src.display()))?;
            std::os::unix::fs::symlink(target, &dst).map_err(HypervisorError::io(dst.display()))?;
        } else if ft.is_file() {
            std::fs::copy(&src, &dst).map_err(HypervisorError::io(dst.display()))?;
        }
    }
    Ok(())
}

impl Qemu {
    /// Restore the snapshot in `src` as a new sandbox `opts.id` under
    /// `root`: a new QEMU with the same devices, its daemons started again,
    /// the guest running on from where it was. A failed restore leaves
    /// nothing behind.
    pub async fn restore(
        root: crate::state::StateRoot,
        src: &Path,
        opts: RestoreOptions,
    ) -> Result<(Qemu, RestoreReport)> {
        let t0 = Instant::now();
        let meta = read_meta(src)?;
        let cfg = match opts.config {
            Some(c) => c,
            None => meta.record.config.clone(),
        };
        check_compatible(src, &meta, &cfg).await?;
        let q = Qemu::new(root, cfg).with_supervision(opts.supervision);
        let timeout = opts.timeout.unwrap_or(super::DEFAULT_START_TIMEOUT);
        q.start_restored(&opts.id, &meta, src, timeout).await?;
        let report = RestoreReport {
            id: opts.id,
            ms: t0.elapsed().as_secs_f64() * 1e3,
        };
        info!(id = %report.id, src = %src.display(), ms = report.ms, "snapshot restored");
        Ok((q, report))
    }
}
