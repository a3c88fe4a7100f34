//! The checked configuration: what [`super::load`] returns.
//!
//! After validation there are no "empty means default" fields: every value is
//! resolved, typed and, for paths, absolute.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::path::PathBuf;

/// Guest architecture. Chooses the per-arch policy at run time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum GuestArch {
    /// x86_64 (q35 or microvm).
    X86_64,
    /// aarch64 (virt).
    Aarch64,
    /// ppc64le (pseries).
    Ppc64le,
    /// s390x (s390-ccw-virtio).
    S390x,
}

impl GuestArch {
    /// The arch this binary was built for.
    pub fn host() -> GuestArch {
        match std::env::consts::ARCH {
            "aarch64" => GuestArch::Aarch64,
            "powerpc64" => GuestArch::Ppc64le,
            "s390x" => GuestArch::S390x,
            _ => GuestArch::X86_64,
        }
    }

    /// Parse the names users write (`x86_64`, `amd64`, `arm64`, ...).
    pub fn parse(s: &str) -> Option<GuestArch> {
        Some(match s {
            "x86_64" | "amd64" => GuestArch::X86_64,
            "aarch64" | "arm64" => GuestArch::Aarch64,
            "ppc64le" | "ppc64" => GuestArch::Ppc64le,
            "s390x" => GuestArch::S390x,
            _ => return None,
        })
    }

    /// The QEMU binary name for this arch.
    pub fn qemu_binary(self) -> &'static str {
        match self {
            GuestArch::X86_64 => "qemu-system-x86_64",
            GuestArch::Aarch64 => "qemu-system-aarch64",
            GuestArch::Ppc64le => "qemu-system-ppc64",
            GuestArch::S390x => "qemu-system-s390x",
        }
    }
}

impl fmt::Display for GuestArch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            GuestArch::X86_64 => "x86_64",
            GuestArch::Aarch64 => "aarch64",
            GuestArch::Ppc64le => "ppc64le",
            GuestArch::S390x => "s390x",
        })
    }
}

/// How to pick the accelerator (sandvm's own key, `accelerator`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Accelerator {
    /// KVM, or fail.
    Kvm,
    /// TCG software emulation.
    Tcg,
    /// KVM when a probe guest proves it runs, else TCG with a warning.
    Auto,
}

/// The accelerator QEMU runs with, once decided (see `host::accel`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Accel {
    /// Hardware virtualisation.
    Kvm,
    /// Software emulation.
    Tcg,
}

impl Accel {
    /// QEMU's name.
    pub fn as_str(self) -> &'static str {
        match self {
            Accel::Kvm => "kvm",
            Accel::Tcg => "tcg",
        }
    }
}

/// The shared filesystem between host and guest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum SharedFs {
    /// No shared filesystem.
    None,
    /// virtio-fs served by virtiofsd.
    VirtioFs,
    /// virtio-fs served by nydusd.
    VirtioFsNydus,
    /// virtio-9p served by QEMU itself (no daemon, guest memory not shared).
    Virtio9p,
}

impl SharedFs {
    /// The config value (`shared_fs = "..."`).
    pub fn name(self) -> &'static str {
        match self {
            SharedFs::None => "none",
            SharedFs::VirtioFs => "virtio-fs",
            SharedFs::VirtioFsNydus => "virtio-fs-nydus",
            SharedFs::Virtio9p => "virtio-9p",
        }
    }

    /// Whether a daemon other than QEMU serves the share (virtio-fs):
    /// then it maps guest memory, which must be shared.
    pub fn has_daemon(self) -> bool {
        matches!(self, SharedFs::VirtioFs | SharedFs::VirtioFsNydus)
    }
}

/// Block device driver for disks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum BlockDriver {
    /// virtio-scsi controller with scsi-hd disks.
    VirtioScsi,
    /// virtio-blk (pci, ccw or mmio by arch and machine).
    VirtioBlk,
    /// virtio-blk-ccw (s390x).
    VirtioBlkCcw,
    /// nvdimm.
    Nvdimm,
}

/// Where VFIO devices are plugged (Kata's hot_plug_vfio / cold_plug_vfio).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum VfioPort {
    /// Not plugged.
    NoPort,
    /// On a PCI bridge.
    BridgePort,
    /// On a PCIe root port.
    RootPort,
    /// On a PCIe switch port (not supported yet; rendered as root port).
    SwitchPort,
}

/// Root filesystem type of `image`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum RootfsType {
    /// ext4.
    Ext4,
    /// xfs.
    Xfs,
    /// erofs.
    Erofs,
}

impl RootfsType {
    /// The name the kernel's `rootfstype=` takes.
    pub fn as_str(self) -> &'static str {
        match self {
            RootfsType::Ext4 => "ext4",
            RootfsType::Xfs => "xfs",
            RootfsType::Erofs => "erofs",
        }
    }
}

/// Block device options for disks.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BlockConfig {
    /// Driver.
    pub driver: BlockDriver,
    /// AIO mode: `threads`, `native` or `io_uring`.
    pub aio: String,
    /// Whether `direct` and `no_flush` are applied.
    pub cache_set: bool,
    /// cache.direct.
    pub cache_direct: bool,
    /// cache.no-flush.
    pub cache_noflush: bool,
    /// `logical_block_size` of cold- and hotplugged disks, bytes (`None`: QEMU's).
    pub logical_sector_size: Option<u32>,
    /// `physical_block_size` of cold- and hotplugged disks, bytes (`None`: QEMU's).
    pub physical_sector_size: Option<u32>,
    /// Never use block devices for container rootfs.
    pub disable_block_device_use: bool,
    /// Iothreads for block controllers.
    pub iothreads: bool,
    /// Independent iothreads made at boot (`indep_iothread_<n>`); with
    /// `iothreads`, virtio-blk disks run on the first.
    pub indep_iothreads: u32,
}

/// What the extra monitor socket speaks (Kata's `extra_monitor_socket`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ExtraMonitor {
    /// The human monitor (`hmp`).
    Hmp,
    /// QMP (`qmp`).
    Qmp,
    /// QMP with pretty-printed JSON (`qmp-pretty`).
    QmpPretty,
}

/// Shared filesystem settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SharedFsConfig {
    /// Kind.
    pub kind: SharedFs,
    /// The 9p message size the guest mounts with (`msize=`, bytes), from
    /// `msize_9p`; read only with [`SharedFs::Virtio9p`].
    pub msize_9p: u32,
    /// Daemon binary (virtiofsd or nydusd); `None` without a daemon
    /// (`SharedFs::None`, `SharedFs::Virtio9p`).
    pub daemon: Option<PathBuf>,
    /// Cache mode passed to the daemon.
    pub cache: String,
    /// vhost-user-fs queue size.
    pub queue_size: u32,
    /// virtiofsd's `--inode-file-handles` (`never`, `prefer`, `mandatory`);
    /// `None`: virtiofsd's default (`never`).
    pub inode_file_handles: Option<String>,
    /// Extra daemon arguments.
    pub extra_args: Vec<String>,
}

/// The identity QEMU runs as (sandvm's `qemu_uid`, `qemu_gid`, `qemu_groups`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QemuUser {
    /// User id.
    pub uid: u32,
    /// Primary group id.
    pub gid: u32,
    /// Supplementary groups (may be empty: then QEMU has none).
    pub groups: Vec<u32>,
}

/// Templating (`[factory]`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FactoryConfig {
    /// Boot from the template.
    pub enable_template: bool,
    /// The template's folder.
    pub template_path: PathBuf,
    /// VMs the warm VM cache (`sandvm-vmcache`) keeps ready; 0: no cache.
    pub vm_cache_number: u32,
    /// The cache's socket, where shims ask it for a VM.
    pub vm_cache_endpoint: PathBuf,
}

/// The checked `[hypervisor.qemu]` and `[factory]` configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HypervisorConfig {
    /// The file this came from (absolute).
    pub source: PathBuf,
    /// QEMU binary.
    pub qemu_path: PathBuf,
    /// Guest kernel; `None` boots `image` as a whole disk through the
    /// firmware (see [`HypervisorConfig::disk_boot`]).
    pub kernel: Option<PathBuf>,
    /// Guest initrd.
    pub initrd: Option<PathBuf>,
    /// Guest root image; with no kernel, the disk the firmware boots.
    pub image: Option<PathBuf>,
    /// Firmware.
    pub firmware: Option<PathBuf>,
    /// Firmware volume (vars template).
    pub firmware_volume: Option<PathBuf>,
    /// Machine type.
    pub machine_type: String,
    /// Extra machine options (each `key=value` or a flag).
    pub machine_accelerators: Vec<String>,
    /// CPU features (`+feat`, `-feat`, `feat=on`).
    pub cpu_features: Vec<String>,
    /// User kernel parameters, appended last.
    pub kernel_params: Vec<String>,
    /// Root filesystem type of `image`.
    pub rootfs_type: RootfsType,
    /// Boot vCPUs.
    pub vcpus: u32,
    /// Maximum vCPUs.
    pub max_vcpus: u32,
    /// Boot memory, MiB.
    pub memory_mib: u64,
    /// `enable_numa`: the guest's NUMA nodes, each the mask of host nodes
    /// (bit N: node N) its share of the boot memory is bound to; empty: no
    /// NUMA topology.
    pub numa: Vec<u64>,
    /// Maximum memory (before offset and reserves), MiB.
    pub max_memory_mib: u64,
    /// Memory hotplug slots.
    pub memory_slots: u32,
    /// Added to maxmem, MiB.
    pub memory_offset_mib: u64,
    /// PCI bridges.
    pub bridges: u32,
    /// PCIe root ports.
    pub pcie_root_ports: u32,
    /// virtio-mem.
    pub virtio_mem: bool,
    /// Preallocate memory.
    pub mem_prealloc: bool,
    /// Hugepages.
    pub hugepages: bool,
    /// File-backed memory folder.
    pub file_mem_backend: Option<PathBuf>,
    /// Free page reporting.
    pub reclaim_guest_freed_memory: bool,
    /// Shared filesystem.
    pub shared_fs: SharedFsConfig,
    /// Block devices.
    pub block: BlockConfig,
    /// Keep the image off nvdimm.
    pub disable_image_nvdimm: bool,
    /// vIOMMU.
    pub iommu: bool,
    /// iommu_platform on virtio devices.
    pub iommu_platform: bool,
    /// pflash images.
    pub pflashes: Vec<PathBuf>,
    /// VFIO hotplug port.
    pub hot_plug_vfio: VfioPort,
    /// VFIO cold-plug port.
    pub cold_plug_vfio: VfioPort,
    /// Disable vhost-net.
    pub disable_vhost_net: bool,
    /// RNG source.
    pub entropy_source: PathBuf,
    /// QEMU's seccomp sandbox (`seccompsandbox`), parsed; `None`: off.
    pub seccomp_sandbox: Option<SeccompSandbox>,
    /// Skip SELinux labelling.
    pub disable_selinux: bool,
    /// Rootless QEMU.
    pub rootless: bool,
    /// Debug.
    pub debug: bool,
    /// A second monitor on `extra-mon.sock` in the sandbox folder (only with
    /// `debug`: whoever opens it controls QEMU).
    pub extra_monitor: Option<ExtraMonitor>,
    /// Skip nesting checks.
    pub disable_nesting_checks: bool,
    /// pvpanic dump folder.
    pub guest_memory_dump_path: Option<PathBuf>,
    /// Paging in dumps.
    pub guest_memory_dump_paging: bool,
    /// Legacy serial console.
    pub use_legacy_serial: bool,
    /// sandvm's `allow_reboot`: a guest reboot restarts the guest in the same
    /// QEMU; when false (the default), QEMU runs with `-no-reboot` and a guest
    /// reboot ends the VM ([`crate::ExitReason::GuestReset`]).
    #[serde(default)]
    pub allow_reboot: bool,
    /// Accelerator policy.
    pub accelerator: Accelerator,
    /// Guest architecture.
    pub guest_arch: GuestArch,
    /// Templating.
    pub factory: FactoryConfig,
    /// vhost-user block/SCSI devices.
    #[serde(default)]
    pub vhost_user_store: bool,
    /// Run QEMU as this identity instead of the caller's.
    #[serde(default)]
    pub qemu_user: Option<QemuUser>,
    /// SELinux exec label for QEMU (used when the host has SELinux enabled).
    #[serde(default)]
    pub selinux_label: Option<String>,
    /// sandvm: port forwards, graceful-shutdown timeout, fw_cfg blobs, extra args.
    pub extras: super::extras::Extras,
    /// The channel to the guest agent (sandvm's `agent_channel`).
    #[serde(default)]
    pub agent: AgentConfig,
    /// Where the config came from, for annotations (not saved in state).
    #[serde(skip)]
    pub origin: Origin,
}

/// What a seccomp sandbox option says (QEMU's `-sandbox` actions).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SeccompAction {
    /// Allow the syscalls.
    Allow,
    /// Deny the syscalls.
    Deny,
    /// `elevateprivileges=children`.
    Children,
}

/// Kata's `seccompsandbox` string (`on,obsolete=deny,spawn=deny,...`), parsed
/// once at load; each option is `None` when the string leaves it out.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SeccompSandbox {
    /// `obsolete=`.
    pub obsolete: Option<SeccompAction>,
    /// `elevateprivileges=`.
    pub elevate_privileges: Option<SeccompAction>,
    /// `spawn=`.
    pub spawn: Option<SeccompAction>,
    /// `resourcecontrol=`.
    pub resource_control: Option<SeccompAction>,
}

/// What is wrong with a `seccompsandbox` string.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SeccompParseError {
    /// It does not start with `on`.
    #[error("{0:?} must start with \"on\"")]
    NotOn(String),
    /// An option is not `key=value`.
    #[error("{0:?} is not key=value")]
    NotKeyValue(String),
    /// An action QEMU does not take for this key.
    #[error("unknown action {action:?} for {key}")]
    Action {
        /// The key.
        key: String,
        /// The action.
        action: String,
    },
    /// A key QEMU's `-sandbox` does not have.
    #[error("unknown key {0:?}")]
    Key(String),
}

impl SeccompSandbox {
    /// Parse `on[,key=action]*`.
    pub fn parse(spec: &str) -> Result<SeccompSandbox, SeccompParseError> {
        let mut parts = spec.split(',');
        if parts.next() != Some("on") {
            return Err(SeccompParseError::NotOn(spec.to_string()));
        }
        let mut sb = SeccompSandbox::default();
        for kv in parts {
            let (k, v) = kv
                .split_once('=')
                .ok_or_else(|| SeccompParseError::NotKeyValue(kv.to_string()))?;
            let action = match v {
                "allow" => SeccompAction::Allow,
                "deny" => SeccompAction::Deny,
                "children" if k == "elevateprivileges" => SeccompAction::Children,
                _ => {
                    return Err(SeccompParseError::Action {
                        key: k.to_string(),
                        action: v.to_string(),
                    });
                }
            };
            match k {
                "obsolete" => sb.obsolete = Some(action),
                "elevateprivileges" => sb.elevate_privileges = Some(action),
                "spawn" => sb.spawn = Some(action),
                "resourcecontrol" => sb.resource_control = Some(action),
                _ => return Err(SeccompParseError::Key(k.to_string())),
            }
        }
        Ok(sb)
    }
}

/// The kind of channel between the host and the guest agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AgentChannel {
    /// A virtio-serial port named `agent.channel.0` on a Unix socket in the
    /// sandbox folder (no host daemon; works everywhere).
    VirtioSerial,
    /// vhost-user-vsock served by vhost-device-vsock, reached through its
    /// Unix socket (`CONNECT <port>`); guest memory is shared.
    HybridVsock,
    /// Kernel vhost-vsock (`/dev/vhost-vsock`), reached with `AF_VSOCK`.
    Vsock,
}

impl AgentChannel {
    /// The name the config uses.
    pub fn as_str(self) -> &'static str {
        match self {
            AgentChannel::VirtioSerial => "virtio-serial",
            AgentChannel::HybridVsock => "hybrid-vsock",
            AgentChannel::Vsock => "vsock",
        }
    }
}

/// The agent channel settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentConfig {
    /// The channel, or `None` (`agent_channel = "none"`): the guest has no agent.
    pub channel: Option<AgentChannel>,
    /// The guest's vsock port the agent listens on (hybrid and kernel vsock).
    pub port: u32,
    /// vhost-device-vsock, for `hybrid-vsock`.
    pub vsock_daemon: PathBuf,
}

impl Default for AgentConfig {
    fn default() -> Self {
        AgentConfig {
            channel: Some(AgentChannel::VirtioSerial),
            port: super::validate::DEFAULT_AGENT_PORT,
            vsock_daemon: PathBuf::from(super::validate::DEFAULT_VSOCK_DAEMON),
        }
    }
}

/// The parsed file a config came from and the host facts it was checked
/// against: what [`super::annotations`] re-validates with overrides.
/// Never saved; two configs compare equal whatever their origins.
#[derive(Debug, Clone, Default)]
pub struct Origin(pub(crate) Option<std::sync::Arc<(toml::Table, super::HostInfo)>>);

impl PartialEq for Origin {
    fn eq(&self, _: &Origin) -> bool {
        true
    }
}
