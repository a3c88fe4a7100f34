//! The TOML file as written: serde structs with Kata's key names.
//!
//! Every field is optional here; defaults are applied by
//! [`validate`](super::validate). Keys this module does not list are accepted
//! only at their inert value, or refused, by [`super::keys`]; never dropped silently.

use serde::Deserialize;

/// The `[hypervisor.qemu]` table.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct RawQemu {
    /// QEMU binary.
    pub path: Option<String>,
    /// Guest kernel.
    pub kernel: Option<String>,
    /// Guest initrd.
    pub initrd: Option<String>,
    /// Guest root image.
    pub image: Option<String>,
    /// Firmware (bios or OVMF code).
    pub firmware: Option<String>,
    /// Firmware volume (OVMF vars template).
    pub firmware_volume: Option<String>,
    /// Machine type.
    pub machine_type: Option<String>,
    /// Extra machine options, comma separated.
    pub machine_accelerators: Option<String>,
    /// CPU features, comma separated.
    pub cpu_features: Option<String>,
    /// Extra kernel parameters, space separated.
    pub kernel_params: Option<String>,
    /// Root filesystem type of the image.
    pub rootfs_type: Option<String>,
    /// Boot vCPUs.
    pub default_vcpus: Option<i64>,
    /// Maximum vCPUs.
    pub default_maxvcpus: Option<i64>,
    /// Boot memory, MiB.
    pub default_memory: Option<i64>,
    /// Maximum memory, MiB.
    pub default_maxmemory: Option<i64>,
    /// Memory hotplug slots.
    pub memory_slots: Option<i64>,
    /// Extra memory added to maxmem, MiB.
    pub memory_offset: Option<i64>,
    /// PCI bridges.
    pub default_bridges: Option<i64>,
    /// PCIe root ports.
    pub pcie_root_port: Option<i64>,
    /// virtio-mem memory hotplug.
    pub enable_virtio_mem: Option<bool>,
    /// Preallocate guest memory.
    pub enable_mem_prealloc: Option<bool>,
    /// Back guest memory with hugepages.
    pub enable_hugepages: Option<bool>,
    /// Directory for file-backed guest memory.
    pub file_mem_backend: Option<String>,
    /// Free page reporting through the balloon.
    pub reclaim_guest_freed_memory: Option<bool>,
    /// Shared filesystem kind.
    pub shared_fs: Option<String>,
    /// virtiofsd or nydusd binary.
    pub virtio_fs_daemon: Option<String>,
    /// virtio-fs cache mode.
    pub virtio_fs_cache: Option<String>,
    /// vhost-user-fs queue size.
    pub virtio_fs_queue_size: Option<i64>,
    /// virtiofsd's inode file handles (`never`, `prefer`, `mandatory`).
    pub virtio_fs_inode_file_handles: Option<String>,
    /// Extra arguments for the virtio-fs daemon.
    pub virtio_fs_extra_args: Option<Vec<String>>,
    /// 9p message size (`shared_fs = "virtio-9p"`).
    pub msize_9p: Option<i64>,
    /// Block device driver.
    pub block_device_driver: Option<String>,
    /// Block AIO mode.
    pub block_device_aio: Option<String>,
    /// Whether the cache options below are applied.
    pub block_device_cache_set: Option<bool>,
    /// O_DIRECT.
    pub block_device_cache_direct: Option<bool>,
    /// Ignore flush requests.
    pub block_device_cache_noflush: Option<bool>,
    /// Logical sector size of disks, bytes.
    pub block_device_logical_sector_size: Option<i64>,
    /// Physical sector size of disks, bytes.
    pub block_device_physical_sector_size: Option<i64>,
    /// Never use block devices for container rootfs.
    pub disable_block_device_use: Option<bool>,
    /// Iothreads for block devices.
    pub enable_iothreads: Option<bool>,
    /// Independent iothreads for virtio-blk disks.
    pub indep_iothreads: Option<i64>,
    /// Do not put the image on nvdimm.
    pub disable_image_nvdimm: Option<bool>,
    /// vIOMMU.
    pub enable_iommu: Option<bool>,
    /// iommu_platform on virtio devices.
    pub enable_iommu_platform: Option<bool>,
    /// pflash images.
    pub pflashes: Option<Vec<String>>,
    /// Where hotplugged VFIO devices go.
    pub hot_plug_vfio: Option<String>,
    /// Where cold-plugged VFIO devices go.
    pub cold_plug_vfio: Option<String>,
    /// Disable vhost-net.
    pub disable_vhost_net: Option<bool>,
    /// RNG source.
    pub entropy_source: Option<String>,
    /// QEMU -sandbox value.
    pub seccompsandbox: Option<String>,
    /// Do not label QEMU with SELinux.
    pub disable_selinux: Option<bool>,
    /// Run QEMU as a non-root user.
    pub rootless: Option<bool>,
    /// Debug output.
    pub enable_debug: Option<bool>,
    /// An extra monitor socket (`hmp`, `qmp`, `qmp-pretty`), with `enable_debug`.
    pub extra_monitor_socket: Option<String>,
    /// Skip nesting checks.
    pub disable_nesting_checks: Option<bool>,
    /// Where pvpanic dumps go.
    pub guest_memory_dump_path: Option<String>,
    /// Paging for guest memory dumps.
    pub guest_memory_dump_paging: Option<bool>,
    /// Legacy serial console instead of virtio-console.
    pub use_legacy_serial: Option<bool>,
    /// Allowed QEMU paths (globs).
    pub valid_hypervisor_paths: Option<Vec<String>>,
    /// Allowed daemon paths (globs).
    pub valid_virtio_fs_daemon_paths: Option<Vec<String>>,
    /// Allowed file memory backends (globs).
    pub valid_file_mem_backends: Option<Vec<String>>,
    /// Allowed entropy sources (globs).
    pub valid_entropy_sources: Option<Vec<String>>,
    /// sandvm: accelerator choice.
    pub accelerator: Option<String>,
    /// sandvm: guest architecture.
    pub guest_arch: Option<String>,
    /// vhost-user block/SCSI devices (needs hugepages).
    pub enable_vhost_user_store: Option<bool>,
    /// sandvm: uid QEMU runs as.
    pub qemu_uid: Option<i64>,
    /// sandvm: gid QEMU runs as.
    pub qemu_gid: Option<i64>,
    /// sandvm: supplementary groups of QEMU.
    pub qemu_groups: Option<Vec<i64>>,
    /// sandvm: SELinux exec label for QEMU.
    pub selinux_label: Option<String>,
    /// sandvm: seconds between the ACPI powerdown and the kill on stop.
    pub graceful_shutdown_timeout: Option<i64>,
    /// sandvm: raw QEMU arguments after ours, unchecked.
    pub qemu_extra_args: Option<Vec<String>>,
    /// sandvm: fw_cfg blobs.
    pub fw_cfg: Option<Vec<super::extras::RawFwCfg>>,
    /// sandvm: port forwards on a user-mode NIC.
    pub port_map: Option<Vec<super::extras::RawPortMap>>,
    /// sandvm: give the guest a TPM 2.0 emulated by swtpm.
    pub enable_tpm: Option<bool>,
    /// sandvm: the swtpm binary (default `/usr/bin/swtpm`).
    pub swtpm_path: Option<String>,
    /// sandvm: a guest reboot restarts the guest in the same QEMU (default
    /// false: QEMU runs with `-no-reboot` and a guest reboot ends the VM).
    pub allow_reboot: Option<bool>,
    pub enable_numa: Option<bool>,
    pub numa_mapping: Option<Vec<String>>,
    /// sandvm: the agent channel (`virtio-serial`, `hybrid-vsock`, `vsock`, `none`).
    pub agent_channel: Option<String>,
    /// sandvm: the guest's vsock port of the agent.
    pub agent_port: Option<i64>,
    /// sandvm: vhost-device-vsock, for `agent_channel = "hybrid-vsock"`.
    pub vsock_daemon: Option<String>,
    /// sandvm: allowed vhost-device-vsock paths (globs).
    pub valid_vsock_daemon_paths: Option<Vec<String>>,
    /// Annotations allowed to override keys (Kata's; regexes of key names).
    pub enable_annotations: Option<Vec<String>>,
}

/// The `[factory]` table.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct RawFactory {
    /// Boot from a VM template.
    pub enable_template: Option<bool>,
    /// Where the template lives.
    pub template_path: Option<String>,
    /// VMs the warm cache keeps ready.
    pub vm_cache_number: Option<i64>,
    /// The warm cache's socket.
    pub vm_cache_endpoint: Option<String>,
}
