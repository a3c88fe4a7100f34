//! aarch64: the virt machine.

use super::{Accel, ArchLayout, ArchPolicy, host_or_max, strs, user_machine_options};
use crate::config::HypervisorConfig;
use qemu_config::{Machine, Transport};

pub(super) fn layout(cfg: &HypervisorConfig) -> ArchLayout {
    ArchLayout {
        machine_type: cfg.machine_type.clone(),
        transport: Transport::Pci,
        root_bus: Some("pcie.0".into()),
        // No DAX on arm64 in Kata: the image goes on virtio-blk.
        nvdimm_root_params: None,
        blk_root_params: strs(&["root=/dev/vda1", "ro"]),
        console: "hvc0".into(),
        bridges: true,
        rng: true,
        default_bios: None,
        maxmem_align_mib: 1,
    }
}

pub(super) fn policy(cfg: &HypervisorConfig, accel: Accel) -> ArchPolicy {
    // KVM follows the host's GIC; TCG emulates GICv3.
    let gic = if accel == Accel::Kvm { "host" } else { "3" };
    let machine = Machine::new(cfg.machine_type.clone())
        .with_accel(accel.as_str())
        .gic_version(gic);
    ArchPolicy {
        machine: user_machine_options(machine, cfg),
        cpu_model: host_or_max(accel),
        kernel_params: strs(&["iommu.passthrough=0"]),
        globals: Vec::new(),
    }
}
