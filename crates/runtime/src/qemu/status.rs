//! What any process can read about a sandbox without locking it, the health
//! check, the capabilities of a configured machine, and the salvage of a
//! sandbox whose state cannot be loaded.

use super::Qemu;
use super::record::QemuRecord;
use super::supervision::recorded_exit;
use crate::config::{BlockDriver, HypervisorConfig, SharedFs};
use crate::error::{HypervisorError, Result};
use crate::host::process;
use crate::state::{StateError, StateRoot, files, read_state};
use crate::types::{Capabilities, ExitReason, SandboxStatus, VmExit, VmState};
use qemu_config::Transport;

/// Read a sandbox's status without locking it (for `status` and `list`).
pub fn peek(root: &StateRoot, id: &str) -> Result<SandboxStatus> {
    let rec = peek_record(root, id)?;
    let dir = root.sandbox_dir(id);
    let mut state = rec.state;
    if matches!(state, VmState::Running | VmState::Paused) && rec.live_pid().is_none() {
        state = VmState::Stopped;
    }
    let agent = rec
        .agent
        .as_ref()
        .map(|a| crate::plan::agent::socket(a.kind, &rec.config, &dir, &rec.uuid));
    Ok(SandboxStatus {
        id: rec.id.clone(),
        state,
        pid: rec.live_pid(),
        uuid: rec.uuid.clone(),
        accelerator: rec.accelerator.clone(),
        config: rec.config.source.clone(),
        memory_mib: rec.memory_mib(),
        ports: rec.ports.clone(),
        agent,
        exit: recorded_exit(&dir),
        annotations: rec.annotations.clone(),
    })
}

/// Read a sandbox's whole record without locking it (devices, layout).
pub fn peek_record(root: &StateRoot, id: &str) -> Result<QemuRecord> {
    crate::state::validate_id(id)?;
    let dir = root.sandbox_dir(id);
    if !dir.is_dir() {
        return Err(StateError::NotFound {
            id: id.into(),
            root: root.path().display().to_string(),
        }
        .into());
    }
    Ok(read_state(&dir.join(files::STATE))?)
}

/// What the configured machine can do.
pub fn capabilities(cfg: &HypervisorConfig, rec: Option<&QemuRecord>) -> Capabilities {
    let layout = match rec {
        Some(r) => r.layout.clone(),
        None => crate::plan::Layout::new(cfg, None),
    };
    let t = layout.arch.transport;
    let bridges = !layout.bridges.is_empty();
    let hotplug_bus = (t == Transport::Pci && bridges) || t == Transport::Ccw;
    let scsi = cfg.block.driver == BlockDriver::VirtioScsi && t != Transport::Mmio;
    Capabilities {
        block_hotplug: hotplug_bus || scsi,
        net_hotplug: hotplug_bus,
        cpu_hotplug: t != Transport::Mmio && cfg.max_vcpus > cfg.vcpus,
        memory_hotplug: t != Transport::Mmio && layout.memory_limit_mib > cfg.memory_mib,
        // sandvm's NICs have one queue pair.
        multi_queue: false,
        fs_sharing: cfg.shared_fs.kind != SharedFs::None,
        agent_channel: rec.map_or(cfg.agent.channel.is_some(), |r| r.agent.is_some()),
    }
}

/// [`crate::Hypervisor::check`]: the VM has not ended, QMP answers, the
/// guest runs (not panicked, not failed), and every daemon is alive.
pub(super) async fn check(q: &Qemu) -> Result<()> {
    let id = q.id().unwrap_or_default();
    let ended = |exit: VmExit| HypervisorError::VmEnded {
        id: id.clone(),
        exit,
    };
    if let Some(exit) = q.inner().exit.borrow().clone() {
        return Err(ended(exit));
    }
    let rec = q
        .record()
        .ok_or(HypervisorError::NoSandbox { op: "check" })?;
    let status = q
        .command_client()
        .await?
        .query_status()
        .await
        .map_err(HypervisorError::qmp("query-status"))?;
    use qmp::commands::RunState;
    let failed = match status.status {
        RunState::GuestPanicked => Some(ExitReason::GuestPanicked { dump: None }),
        RunState::InternalError => Some(ExitReason::InternalError),
        RunState::Shutdown => Some(ExitReason::GuestPoweredOff),
        _ => None,
    };
    if let Some(reason) = failed {
        return Err(ended(VmExit { reason, qemu: None }));
    }
    for (name, p) in rec.recorded_daemons() {
        if p.pid.is_some() && p.live().is_none() {
            return Err(ended(VmExit {
                reason: ExitReason::DaemonDied {
                    daemon: name.to_string(),
                    pid: p.pid.unwrap_or_default(),
                },
                qemu: None,
            }));
        }
    }
    Ok(())
}

/// Kill whatever a sandbox left (every pid its state file names, even a
/// corrupt one, and the pidfile's, each after checking it runs one of the
/// sandbox's binaries) and remove its folder.
pub(super) async fn force_cleanup(root: &StateRoot, id: &str) -> Result<()> {
    let dir = root.open(id)?;
    let _ = std::fs::write(dir.file(super::STOPPING), b"");
    for pid in dir.salvage_pids() {
        if process::alive(pid, None) && is_ours(pid) {
            process::signal(pid, nix::sys::signal::Signal::SIGKILL);
            process::wait_exit(pid, super::TERM_GRACE).await;
        }
    }
    end_supervisor(&dir.file(files::SUPERVISOR_PID)).await;
    dir.remove()?;
    Ok(())
}

/// The detached supervisor recorded in `pidfile` exits once QEMU is gone;
/// give it a moment, then kill it (its start time guards against reuse).
async fn end_supervisor(pidfile: &std::path::Path) {
    let Some((pid, ticks)) = std::fs::read_to_string(pidfile).ok().and_then(|s| {
        let mut f = s.split_whitespace().map(str::parse::<u64>);
        Some((f.next()?.ok()? as i32, f.next()?.ok()?))
    }) else {
        return;
    };
    if process::alive(pid, Some(ticks)) && !process::wait_exit(pid, super::TERM_GRACE).await {
        process::signal(pid, nix::sys::signal::Signal::SIGKILL);
        process::wait_exit(pid, super::TERM_GRACE).await;
    }
}

/// Whether `pid` runs QEMU or one of the sandbox daemons (guards kills by
/// salvaged pids).
fn is_ours(pid: i32) -> bool {
    const OURS: &[&str] = &["qemu", "virtiofsd", "nydusd", "swtpm", "vhost-device-vsock"];
    std::fs::read_link(format!("/proc/{pid}/exe")).is_ok_and(|p| {
        p.file_name().is_some_and(|n| {
            let n = n.to_string_lossy();
            OURS.iter().any(|o| n.starts_with(o))
        })
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::config::{GuestArch, HostInfo, parse_str};
    use std::path::Path;

    /// Capabilities of a config with 256 MiB boot memory and `extra`.
    fn caps(extra: &str) -> Capabilities {
        let host = HostInfo {
            numa_nodes: 1,
            cpus: 4,
            mem_mib: 8192,
            arch: GuestArch::X86_64,
        };
        let text = format!("[hypervisor.qemu]\nkernel = \"/k\"\ndefault_memory = 256\n{extra}\n");
        let cfg = parse_str(Path::new("/c.toml"), &text, &host)
            .unwrap()
            .config;
        capabilities(&cfg, None)
    }

    const ROOMY: &str = "shared_fs = \"none\"\ndefault_maxmemory = 1024\ndefault_maxvcpus = 2\n";

    #[test]
    fn capabilities_tell_the_truth_for_the_machine() {
        let q35 = caps(ROOMY);
        assert!(q35.block_hotplug && q35.net_hotplug && q35.cpu_hotplug && q35.memory_hotplug);
        assert!(!q35.multi_queue, "sandvm's NICs have one queue pair");
        assert!(!q35.fs_sharing && q35.agent_channel);
        let micro = caps(&format!(
            "{ROOMY}machine_type = \"microvm\"\nblock_device_driver = \"virtio-blk\""
        ));
        assert!(!micro.block_hotplug && !micro.net_hotplug && !micro.cpu_hotplug);
        assert!(!micro.memory_hotplug);
        let s390 = caps(&format!(
            "{ROOMY}guest_arch = \"s390x\"\nmachine_type = \"s390-ccw-virtio\""
        ));
        assert!(s390.block_hotplug && s390.net_hotplug);
        let fixed = caps(
            "shared_fs = \"none\"\ndefault_maxmemory = 256\ndefault_maxvcpus = 1\nagent_channel = \"none\"",
        );
        assert!(!fixed.memory_hotplug && !fixed.cpu_hotplug && !fixed.agent_channel);
        assert!(caps("shared_fs = \"virtio-fs\"").fs_sharing);
    }
}
