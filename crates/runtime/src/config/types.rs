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

/// The shared filesystem between host and guest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum SharedFs {
    /// No shared filesystem.
    None,
    /// virtio-fs served by virtiofsd.
    VirtioFs,
    /// virtio-fs served by nydusd.
    VirtioFsNydus,
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
    /// Never use block devices for container rootfs.
    pub disable_block_device_use: bool,
    /// Iothreads for block controllers.
    pub iothreads: bool,
}

/// Shared filesystem settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SharedFsConfig {
    /// Kind.
    pub kind: SharedFs,
    /// Daemon binary (virtiofsd or nydusd); `None` only with `SharedFs::None`.
    pub daemon: Option<PathBuf>,
    /// Cache mode passed to the daemon.
    pub cache: String,
    /// DAX window size, MiB (0: none).
    pub cache_size_mib: u32,
    /// vhost-user-fs queue size.
    pub queue_size: u32,
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
}

/// The checked `[hypervisor.qemu]` and `[factory]` configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HypervisorConfig {
    /// The file this came from (absolute).
    pub source: PathBuf,
    /// QEMU binary.
    pub qemu_path: PathBuf,
    /// Guest kernel.
    pub kernel: PathBuf,
    /// Guest initrd.
    pub initrd: Option<PathBuf>,
    /// Guest root image.
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
    /// `-sandbox` value, if any.
    pub seccomp_sandbox: Option<String>,
    /// Skip SELinux labelling.
    pub disable_selinux: bool,
    /// Rootless QEMU.
    pub rootless: bool,
    /// Debug.
    pub debug: bool,
    /// Skip nesting checks.
    pub disable_nesting_checks: bool,
    /// pvpanic dump folder.
    pub guest_memory_dump_path: Option<PathBuf>,
    /// Paging in dumps.
    pub guest_memory_dump_paging: bool,
    /// Legacy serial console.
    pub use_legacy_serial: bool,
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
}
