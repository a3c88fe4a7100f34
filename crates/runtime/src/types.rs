//! The values a shim passes to and gets from the [`Hypervisor`](crate::Hypervisor)
//! trait: create options, devices and where the guest finds them, reports,
//! the agent socket, the VM's exit and its events.

use crate::config::AgentChannel;
pub use crate::host::process::ProcessExit;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;
use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::sync::Arc;

/// Lifecycle state of a sandbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum VmState {
    /// Created, not started.
    Created,
    /// QEMU runs the guest.
    Running,
    /// The guest is paused.
    Paused,
    /// QEMU is gone.
    Stopped,
}

impl fmt::Display for VmState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            VmState::Created => "created",
            VmState::Running => "running",
            VmState::Paused => "paused",
            VmState::Stopped => "stopped",
        })
    }
}

/// A sandbox's part in VM templating (set by [`crate::factory`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TemplateRole {
    /// The template VM: memory shared in the template file.
    Template,
    /// A clone: the template's memory mapped privately, device state migrated in.
    Clone,
}

/// Options for [`Hypervisor::create_vm`](crate::Hypervisor::create_vm).
#[derive(Debug, Clone, Default)]
pub struct CreateOptions {
    /// Host folder shared with the guest (virtio-fs or virtio-9p); default: the
    /// sandbox's `shared/`. A template VM always gets its own empty `shared/`.
    pub share: Option<PathBuf>,
    /// NICs the guest has from boot (cold-plugged, in order: `eth0`, `eth1`, ...).
    pub network: Vec<NetEndpoint>,
    /// `io.katacontainers.config.hypervisor.*` annotations; each must be
    /// allowed by `enable_annotations`, or the create fails naming it.
    pub annotations: BTreeMap<String, String>,
    /// The sandbox's part in templating; set by [`crate::factory`], which a
    /// config with `[factory] enable_template` must go through.
    pub template: Option<TemplateRole>,
}

/// A network endpoint for a NIC.
#[derive(Debug, Clone)]
pub enum NetEndpoint {
    /// A tap device by name (opened by the runtime; created if missing).
    Tap {
        /// Tap name.
        name: String,
        /// MAC address (default: random, locally administered).
        mac: Option<String>,
    },
    /// A tap the caller opened (for example in a pod's network namespace).
    TapFd {
        /// The tap fd (passed to QEMU; ours is closed after).
        fd: Arc<OwnedFd>,
        /// MAC address (default: random, locally administered).
        mac: Option<String>,
    },
}

impl NetEndpoint {
    /// The device to plug for this endpoint, with id `id` (empty: generated).
    pub fn into_device(self, id: String) -> DeviceSpec {
        match self {
            NetEndpoint::Tap { name, mac } => DeviceSpec::Net { id, tap: name, mac },
            NetEndpoint::TapFd { fd, mac } => DeviceSpec::NetFd { id, fd, mac },
        }
    }
}

/// Timings of a start, in milliseconds from the `start_vm` call.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct StartReport {
    /// QEMU spawned.
    pub spawn_ms: f64,
    /// QMP negotiated.
    pub qmp_ready_ms: f64,
}

/// How a stop ended QEMU.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum StopOutcome {
    /// The guest powered off after the ACPI powerdown, before any signal.
    Graceful,
    /// QEMU exited by itself while the stop waited (`wait_only`), or was
    /// already gone.
    Exited,
    /// QEMU ended on SIGTERM.
    Terminated,
    /// QEMU was killed (SIGKILL).
    Killed,
    /// There was no QEMU to stop (never started).
    NotRunning,
}

impl fmt::Display for StopOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            StopOutcome::Graceful => "graceful (ACPI powerdown)",
            StopOutcome::Exited => "exited by itself",
            StopOutcome::Terminated => "terminated (SIGTERM)",
            StopOutcome::Killed => "killed (SIGKILL)",
            StopOutcome::NotRunning => "not running",
        })
    }
}

/// QEMU's `SHUTDOWN` event, as a graceful stop saw it before QEMU exited.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShutdownSeen {
    /// Whether the guest initiated the shutdown (the event's `guest`).
    pub guest: bool,
    /// QEMU's reason: `guest-shutdown` when the guest powered itself off.
    pub reason: String,
}

/// What a stop did.
#[derive(Debug, Clone, Serialize)]
pub struct StopReport {
    /// How QEMU ended.
    pub outcome: StopOutcome,
    /// Milliseconds from the stop call until QEMU was gone.
    pub ms: f64,
    /// After an ACPI powerdown: QEMU's `SHUTDOWN` event, when it sent one
    /// before it exited (`guest: true, reason: "guest-shutdown"` when the
    /// guest answered the power button by powering off).
    pub shutdown: Option<ShutdownSeen>,
}

/// What a backend can do, for the configured machine.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Capabilities {
    /// Disks can be hotplugged (a PCI bridge, a SCSI controller or CCW).
    pub block_hotplug: bool,
    /// NICs can be hotplugged.
    pub net_hotplug: bool,
    /// vCPUs can be hotplugged.
    pub cpu_hotplug: bool,
    /// Memory can be hotplugged (virtio-mem or pc-dimm).
    pub memory_hotplug: bool,
    /// NICs have more than one queue pair.
    pub multi_queue: bool,
    /// A shared filesystem is available.
    pub fs_sharing: bool,
    /// The guest has an agent channel.
    pub agent_channel: bool,
}

/// Where a sandbox's console is.
#[derive(Debug, Clone, Serialize)]
pub struct ConsoleInfo {
    /// The console socket (a virtconsole, or a serial port with `use_legacy_serial`).
    pub socket: PathBuf,
    /// Everything the guest printed.
    pub log: PathBuf,
}

/// How to reach the guest agent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "mode", rename_all = "kebab-case")]
pub enum AgentSocket {
    /// A virtio-serial port: connect to the Unix socket QEMU serves; the
    /// stream is the port.
    Serial {
        /// The socket.
        path: PathBuf,
    },
    /// Hybrid vsock (vhost-device-vsock): connect to the Unix socket, write
    /// `CONNECT <port>\n`, read `OK <n>\n`; then the stream is the guest's
    /// vsock connection.
    HybridVsock {
        /// The socket.
        path: PathBuf,
        /// The guest's vsock port.
        port: u32,
    },
    /// Kernel vhost-vsock: an `AF_VSOCK` connection to the guest's CID.
    Vsock {
        /// The guest's context id.
        cid: u32,
        /// The guest's vsock port.
        port: u32,
    },
}

impl AgentSocket {
    /// The channel kind.
    pub fn kind(&self) -> AgentChannel {
        match self {
            AgentSocket::Serial { .. } => AgentChannel::VirtioSerial,
            AgentSocket::HybridVsock { .. } => AgentChannel::HybridVsock,
            AgentSocket::Vsock { .. } => AgentChannel::Vsock,
        }
    }
}

/// vCPU thread ids, by vCPU index.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ThreadIds {
    /// (cpu-index, host thread id).
    pub vcpus: Vec<(u32, i32)>,
}

/// A device for [`add_device`](crate::Hypervisor::add_device) (cold plug,
/// before start) and [`hotplug_add_device`](crate::Hypervisor::hotplug_add_device).
#[derive(Debug, Clone)]
pub enum DeviceSpec {
    /// A disk image or block device.
    Block {
        /// Device id (empty: generated).
        id: String,
        /// Image path.
        path: PathBuf,
        /// Read-only.
        readonly: bool,
        /// Disposable: the guest's writes go to a throwaway overlay and never
        /// reach the image (`snapshot=on,cache=unsafe`). Cold plug only: a
        /// hotplug of a disposable disk is refused.
        disposable: bool,
    },
    /// A tap device.
    Net {
        /// Device id (empty: generated).
        id: String,
        /// Tap name.
        tap: String,
        /// MAC address.
        mac: Option<String>,
    },
    /// A tap the caller opened (its fd is passed to QEMU; ours is closed after).
    NetFd {
        /// Device id (empty: generated).
        id: String,
        /// The tap fd.
        fd: Arc<OwnedFd>,
        /// MAC address (default: random, locally administered).
        mac: Option<String>,
    },
    /// One end of a cable: a `SOCK_DGRAM` socket (one end of a socketpair
    /// whose other end goes to another sandbox) as a NIC (`dgram` netdev).
    Cable {
        /// Device id (empty: generated, `cableN`).
        id: String,
        /// The socket (passed to QEMU; ours is closed after).
        fd: Arc<OwnedFd>,
        /// MAC address (default: random, locally administered).
        mac: Option<String>,
        /// The sandbox at the other end (recorded for display).
        peer: String,
    },
    /// An extra serial channel on an fd the caller passes (Monogon's
    /// `ExtraChardevs`): a `virtserialport` named `name` (the guest finds it
    /// by that name in `/sys/class/virtio-ports/*/name`; udev links it as
    /// `/dev/virtio-ports/<name>`), backed by the fd through QEMU's
    /// fd sets (`-add-fd`, a `pipe` chardev on `/dev/fdset/N`). The fd must
    /// be open for reading and writing (one end of a socketpair, say).
    /// Cold plug only.
    Channel {
        /// Device id (empty: generated, `chanN`).
        id: String,
        /// The port's name in the guest (letters, digits, `.`, `_`, `-`).
        name: String,
        /// The fd (passed to QEMU; ours is closed after).
        fd: Arc<OwnedFd>,
    },
    /// Kernel vhost-vsock with a guest CID (needs `/dev/vhost-vsock`).
    Vsock {
        /// Device id (empty: generated).
        id: String,
        /// The guest's context id (at least 3).
        guest_cid: u32,
    },
    /// The agent channel, when the config has none (cold plug only).
    AgentChannel {
        /// The kind of channel.
        kind: AgentChannel,
    },
    /// A host PCI device through VFIO (rendered; untested on hardware here).
    Vfio {
        /// Device id (empty: generated).
        id: String,
        /// Host PCI address (`0000:01:00.0`) or `/sys/bus/pci/devices/...` path.
        host: String,
    },
}

/// What a plugged device is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DeviceKind {
    /// A disk (virtio-blk, scsi-hd).
    Block,
    /// An nvdimm backed by an image.
    Nvdimm,
    /// A NIC on a tap.
    Net,
    /// vhost-vsock.
    Vsock,
    /// A VFIO device.
    Vfio,
    /// A pc-dimm of hot-added memory.
    Dimm,
    /// The agent channel.
    Agent,
    /// An extra serial channel (`virtserialport` on a caller's fd).
    Channel,
}

impl fmt::Display for DeviceKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            DeviceKind::Block => "block",
            DeviceKind::Nvdimm => "nvdimm",
            DeviceKind::Net => "net",
            DeviceKind::Vsock => "vsock",
            DeviceKind::Vfio => "vfio",
            DeviceKind::Dimm => "dimm",
            DeviceKind::Agent => "agent",
            DeviceKind::Channel => "channel",
        })
    }
}

/// Where the guest finds a device, as Kata's agent needs it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "bus", rename_all = "lowercase")]
pub enum Placement {
    /// A PCI device. `path` is Kata's PCI path: the slot of each bridge on
    /// the way from the root bus, then the device's slot, in hex
    /// (`02/01`: slot 1 of the bridge in root slot 2).
    Pci {
        /// Kata's PCI path.
        path: String,
    },
    /// A SCSI disk on the sandbox's virtio-scsi controller.
    Scsi {
        /// SCSI target id.
        id: u32,
        /// LUN.
        lun: u32,
    },
    /// A CCW device (s390x).
    Ccw {
        /// Device number (`fe.0.0001`).
        devno: String,
    },
    /// An nvdimm (`/dev/pmemN`).
    Nvdimm {
        /// Its index among the guest's nvdimms.
        index: u32,
    },
    /// A virtio-mmio device (microvm), found in boot order.
    Mmio,
    /// QEMU picked the address (the guest enumerates it).
    Auto,
}

impl fmt::Display for Placement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Placement::Pci { path } => write!(f, "pci {path}"),
            Placement::Scsi { id, lun } => write!(f, "scsi {id}:{lun}"),
            Placement::Ccw { devno } => write!(f, "ccw {devno}"),
            Placement::Nvdimm { index } => write!(f, "nvdimm {index}"),
            Placement::Mmio => f.write_str("mmio"),
            Placement::Auto => f.write_str("auto"),
        }
    }
}

/// A device plugged into a sandbox and where the guest finds it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeviceInfo {
    /// Device id.
    pub id: String,
    /// What it is.
    pub kind: DeviceKind,
    /// The QEMU driver.
    pub driver: String,
    /// Where the guest finds it.
    pub placement: Placement,
    /// The MAC address, for a NIC.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<String>,
}

/// The memory device a resize used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum MemoryDevice {
    /// The virtio-mem device (grows and shrinks).
    VirtioMem,
    /// pc-dimms (grow only).
    PcDimm,
}

/// The result of a memory resize.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct MemoryReport {
    /// What was asked, MiB.
    pub requested_mib: u64,
    /// What the guest has now, MiB (boot memory plus what was added).
    pub total_mib: u64,
    /// The device used.
    pub device: MemoryDevice,
}

/// Why a VM ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "reason", rename_all = "kebab-case")]
pub enum ExitReason {
    /// The guest powered itself off.
    GuestPoweredOff,
    /// The guest rebooted, which ends QEMU under `-no-reboot` (the default;
    /// with `allow_reboot` QEMU restarts the guest and the VM does not end).
    GuestReset,
    /// The guest panicked (pvpanic); `dump` is the memory dump, when one was written.
    GuestPanicked {
        /// The vmcore file.
        dump: Option<PathBuf>,
    },
    /// QEMU stopped the guest on an internal error (emulation failure).
    InternalError,
    /// The runtime stopped it (`stop_vm`).
    Stopped,
    /// QEMU exited or was killed from outside.
    QemuExited,
    /// A daemon the VM needs died, and the sandbox was stopped.
    DaemonDied {
        /// The daemon (`virtiofsd`, `nydusd`, `swtpm`, `vhost-device-vsock`).
        daemon: String,
        /// Its pid.
        pid: i32,
    },
}

/// The end of a VM: why, and how QEMU's process ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VmExit {
    /// Why.
    #[serde(flatten)]
    pub reason: ExitReason,
    /// QEMU's process exit, when it has exited.
    pub qemu: Option<ProcessExit>,
}

impl fmt::Display for VmExit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.reason {
            ExitReason::GuestPoweredOff => f.write_str("the guest powered off")?,
            ExitReason::GuestReset => {
                f.write_str("the guest rebooted (QEMU runs with -no-reboot; allow_reboot = true restarts it instead)")?
            }
            ExitReason::GuestPanicked { dump: Some(d) } => {
                write!(f, "the guest panicked; memory dump in {}", d.display())?
            }
            ExitReason::GuestPanicked { dump: None } => f.write_str("the guest panicked")?,
            ExitReason::InternalError => {
                f.write_str("QEMU stopped the guest on an internal error")?
            }
            ExitReason::Stopped => f.write_str("stopped by the runtime")?,
            ExitReason::QemuExited => f.write_str("QEMU exited")?,
            ExitReason::DaemonDied { daemon, pid } => {
                write!(f, "{daemon} (pid {pid}) died; the sandbox was stopped")?
            }
        }
        match self.qemu {
            Some(p) => write!(f, " (QEMU: {p})"),
            None => Ok(()),
        }
    }
}

/// Something that happened to a sandbox: the QMP events that matter, and
/// what its supervisor saw. See [`Hypervisor::events`](crate::Hypervisor::events).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "event", rename_all = "kebab-case")]
pub enum SandboxEvent {
    /// The guest stopped running (QMP `STOP`: pause, panic, error, migration).
    Paused,
    /// The guest runs again (QMP `RESUME`).
    Resumed,
    /// QMP `SHUTDOWN`: QEMU is about to exit (or the guest reset).
    Shutdown {
        /// Whether the guest asked for it.
        guest: bool,
        /// QEMU's reason (`guest-shutdown`, `host-signal`, ...).
        reason: String,
    },
    /// QMP `RESET`.
    Reset,
    /// QMP `GUEST_PANICKED`.
    GuestPanicked {
        /// The panic information QEMU gave.
        info: serde_json::Value,
    },
    /// A guest memory dump was written.
    DumpWritten {
        /// The vmcore file.
        path: PathBuf,
    },
    /// QMP `DEVICE_DELETED`: the guest released a device.
    DeviceDeleted {
        /// The device id (empty for devices without one).
        id: String,
    },
    /// QMP `BLOCK_IO_ERROR`.
    BlockIoError {
        /// The device or node.
        device: String,
        /// QEMU's reason.
        reason: String,
    },
    /// A daemon of the sandbox died.
    DaemonDied {
        /// The daemon.
        daemon: String,
        /// Its pid.
        pid: i32,
    },
    /// The VM ended (the last event).
    Exited(VmExit),
}

/// A sandbox's state as any process can read it, without locking it.
#[derive(Debug, Clone, Serialize)]
pub struct SandboxStatus {
    /// Sandbox id.
    pub id: String,
    /// Lifecycle state (`stopped` when QEMU is gone).
    pub state: VmState,
    /// QEMU's pid while it runs.
    pub pid: Option<i32>,
    /// VM UUID.
    pub uuid: String,
    /// The accelerator used.
    pub accelerator: Option<String>,
    /// The config file.
    pub config: PathBuf,
    /// Boot memory plus hot-added memory, MiB.
    pub memory_mib: u64,
    /// Port forwards with the host ports QEMU bound.
    pub ports: Vec<crate::config::extras::PortForward>,
    /// The agent socket, when the guest has a channel.
    pub agent: Option<AgentSocket>,
    /// How the VM ended, once it has (recorded by its supervisor).
    pub exit: Option<VmExit>,
    /// Annotations the sandbox was created with.
    pub annotations: BTreeMap<String, String>,
}
