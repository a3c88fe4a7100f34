//! s390x: s390-ccw-virtio, every device on CCW.

use super::{Accel, ArchPolicy, strs, user_machine_options};

use crate::config::HypervisorConfig;
use qemu_config::{Machine, Transport};

pub(super) fn policy(cfg: &HypervisorConfig, accel: Accel) -> ArchPolicy {
    let machine = Machine::new(cfg.machine_type.clone()).with_accel(accel.as_str());
    ArchPolicy {
        machine: user_machine_options(machine, cfg),
        cpu_model: Some(if accel == Accel::Kvm { "host" } else { "max" }.to_string()),
        transport: Transport::Ccw,
        root_bus: None,
        // Kata sets no s390x kernel parameters beyond the console and root.
        kernel_params: Vec::new(),
        // Never nvdimm: the root is the first virtio-blk disk.
        nvdimm_root_params: None,
        blk_root_params: strs(&["root=/dev/vda1", "ro"]),
        console: "hvc0",
        bridges: false,
        // Kata adds no RNG on s390x.
        rng: false,
        default_bios: None,
        maxmem_align_mib: 1,
        globals: Vec::new(),
    }
}
