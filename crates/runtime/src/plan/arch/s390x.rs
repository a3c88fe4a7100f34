//! s390x: s390-ccw-virtio, every device on CCW.

use super::{Accel, ArchLayout, ArchPolicy, host_or_max, strs, user_machine_options};
use crate::config::HypervisorConfig;
use qemu_config::{Machine, Transport};

pub(super) fn layout(cfg: &HypervisorConfig) -> ArchLayout {
    ArchLayout {
        machine_type: cfg.machine_type.clone(),
        transport: Transport::Ccw,
        root_bus: None,
        // Never nvdimm: the root is the first virtio-blk disk.
        nvdimm_root_params: None,
        blk_root_params: strs(&["root=/dev/vda1", "ro"]),
        console: "hvc0".into(),
        bridges: false,
        // Kata adds no RNG on s390x.
        rng: false,
        default_bios: None,
        maxmem_align_mib: 1,
    }
}

pub(super) fn policy(cfg: &HypervisorConfig, accel: Accel) -> ArchPolicy {
    let machine = Machine::new(cfg.machine_type.clone()).with_accel(accel.as_str());
    ArchPolicy {
        machine: user_machine_options(machine, cfg),
        cpu_model: host_or_max(accel),
        // Kata sets no s390x kernel parameters beyond the console and root.
        kernel_params: Vec::new(),
        globals: Vec::new(),
    }
}
