//! [`QemuRecord`]: what the QEMU backend keeps in a sandbox's `state.json`.
//!
//! The state store ([`crate::state`]) saves and loads it atomically; any
//! process that reattaches reads it once, under the sandbox's lock.

use crate::config::{AgentChannel, HypervisorConfig};
use crate::host::process;
use crate::plan::Layout;
use crate::plan::coldplug::ColdDevice;
use crate::plan::pci::SlotAllocator;
use crate::plan::sharedfs::DaemonKind;
use crate::state::STATE_VERSION;
use crate::types::{TemplateRole, VmState};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::PathBuf;

/// A helper process of the sandbox: its pid and start time (to tell a reused pid).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Proc {
    /// Pid once started.
    #[serde(default)]
    pub pid: Option<i32>,
    /// Start time in clock ticks since boot.
    #[serde(default)]
    pub start_ticks: Option<u64>,
}

impl Proc {
    /// A process just spawned.
    pub fn spawned(pid: i32) -> Proc {
        Proc {
            pid: Some(pid),
            start_ticks: process::start_ticks(pid),
        }
    }

    /// Its pid, if it still runs (and is the same process).
    pub fn live(&self) -> Option<i32> {
        self.pid.filter(|p| process::alive(*p, self.start_ticks))
    }
}

/// The shared filesystem of a sandbox and its daemon (none for virtio-9p).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FsState {
    /// The daemon.
    pub kind: DaemonKind,
    /// The host folder shared with the guest.
    pub share: PathBuf,
    /// The daemon.
    #[serde(flatten)]
    pub proc: Proc,
}

/// The agent channel of a sandbox.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentState {
    /// The kind of channel.
    pub kind: AgentChannel,
    /// vhost-device-vsock, for hybrid vsock.
    #[serde(default)]
    pub daemon: Proc,
}

/// What `state.json` holds for a QEMU sandbox.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QemuRecord {
    /// Layout version (`STATE_VERSION`, 2).
    pub version: u32,
    /// Sandbox id.
    pub id: String,
    /// VM UUID.
    pub uuid: String,
    /// Lifecycle state.
    pub state: VmState,
    /// QEMU pid once started.
    pub pid: Option<i32>,
    /// QEMU's start time in clock ticks since boot (from /proc), to tell a
    /// reused pid from ours.
    pub pid_start_ticks: Option<u64>,
    /// The detached supervisor's pid, when the CLI started one.
    #[serde(default)]
    pub supervisor_pid: Option<i32>,
    /// Port forwards with the host ports QEMU actually bound.
    #[serde(default)]
    pub ports: Vec<crate::config::extras::PortForward>,
    /// The accelerator actually used.
    pub accelerator: Option<String>,
    /// The argv QEMU was started with.
    pub argv: Vec<String>,
    /// The checked config the sandbox was created from (annotations applied).
    pub config: HypervisorConfig,
    /// The annotations it was created with.
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
    /// Unix time of creation, seconds.
    pub created_unix: u64,
    /// The machine's layout, fixed at create.
    pub layout: Layout,
    /// Hotplug slots on the PCI bridges.
    #[serde(default)]
    pub pci: SlotAllocator,
    /// The shared filesystem and its daemon (virtiofsd or nydusd), if any.
    #[serde(default)]
    pub fs: Option<FsState>,
    /// The TPM emulator (swtpm), if the sandbox has a TPM.
    #[serde(default)]
    pub tpm: Option<Proc>,
    /// The agent channel, if the guest has one.
    #[serde(default)]
    pub agent: Option<AgentState>,
    /// The sandbox's part in VM templating, if any.
    #[serde(default)]
    pub template: Option<TemplateRole>,
    /// Devices cold-plugged before start.
    #[serde(default)]
    pub cold: Vec<ColdDevice>,
    /// What was hotplugged (devices, vCPUs, virtio-mem), so any process can undo it.
    #[serde(default)]
    pub hotplug: super::hotplug::HotplugState,
}

impl QemuRecord {
    /// A new record for a sandbox being created.
    pub fn new(id: &str, config: HypervisorConfig, layout: Layout) -> QemuRecord {
        QemuRecord {
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
            pci: SlotAllocator::new(layout.bridges.clone()),
            agent: config.agent.channel.map(|kind| AgentState {
                kind,
                daemon: Proc::default(),
            }),
            config,
            annotations: BTreeMap::new(),
            created_unix: unix_now(),
            layout,
            fs: None,
            tpm: None,
            template: None,
            cold: Vec::new(),
            hotplug: Default::default(),
        }
    }

    /// QEMU's pid, if it still runs.
    pub fn live_pid(&self) -> Option<i32> {
        self.pid
            .filter(|p| process::alive(*p, self.pid_start_ticks))
    }

    /// The helper daemons that run, by name: the shared-fs daemon, swtpm,
    /// vhost-device-vsock.
    pub fn daemons(&self) -> Vec<(&'static str, i32)> {
        let mut v = Vec::new();
        if let Some(fs) = &self.fs
            && let Some(pid) = fs.proc.live()
        {
            v.push((fs.kind.name(), pid));
        }
        if let Some(pid) = self.tpm.and_then(|t| t.live()) {
            v.push(("swtpm", pid));
        }
        if let Some(pid) = self.agent.as_ref().and_then(|a| a.daemon.live()) {
            v.push(("vhost-device-vsock", pid));
        }
        v
    }

    /// The helper daemons as recorded (pid and start time), live or not.
    pub fn recorded_daemons(&self) -> Vec<(&'static str, Proc)> {
        let mut v = Vec::new();
        if let Some(fs) = self.fs.as_ref().filter(|f| f.kind.spawns()) {
            v.push((fs.kind.name(), fs.proc));
        }
        if let Some(t) = self.tpm {
            v.push(("swtpm", t));
        }
        if let Some(a) = &self.agent
            && a.daemon.pid.is_some()
        {
            v.push(("vhost-device-vsock", a.daemon));
        }
        v
    }

    /// Boot memory plus hot-added memory, MiB.
    pub fn memory_mib(&self) -> u64 {
        self.config.memory_mib
            + self.hotplug.dimm_mib()
            + self.hotplug.virtio_mem.as_ref().map_or(0, |m| m.size_mib)
    }
}

/// Seconds since the epoch.
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
