//! ppc64le: the pseries machine with Kata's cap options.

use super::{Accel, ArchLayout, ArchPolicy, strs, user_machine_options};
use crate::config::HypervisorConfig;
use qemu_config::{Machine, Transport};

/// pseries caps Kata sets (spectre mitigations off for guests it controls).
pub const CAPS: &[(&str, &str)] = &[
    ("cfpc", "broken"),
    ("sbbc", "broken"),
    ("ibs", "broken"),
    ("large-decr", "off"),
    ("ccf-assist", "off"),
];

/// Kata's ppc64le kernel parameters (the console is added by the builder).
pub const KERNEL_PARAMS: &[&str] = &[
    "rcupdate.rcu_expedited=1",
    "reboot=k",
    "cryptomgr.notests",
    "net.ifnames=0",
];

pub(super) fn layout(cfg: &HypervisorConfig) -> ArchLayout {
    ArchLayout {
        machine_type: cfg.machine_type.clone(),
        transport: Transport::Pci,
        root_bus: Some("pci.0".into()),
        // nvdimm without DAX: Kata turns DAX on only on x86_64 and arm64.
        nvdimm_root_params: Some(strs(&[
            "root=/dev/pmem0p1",
            "rootflags=data=ordered,errors=remount-ro",
            "ro",
        ])),
        blk_root_params: strs(&["root=/dev/vda1", "ro"]),
        console: "hvc0".into(),
        bridges: true,
        rng: true,
        default_bios: None,
        maxmem_align_mib: 256,
    }
}

pub(super) fn policy(cfg: &HypervisorConfig, accel: Accel) -> ArchPolicy {
    let mut machine = Machine::new(cfg.machine_type.clone()).with_accel(accel.as_str());
    for (k, v) in CAPS {
        machine = machine.cap(k, *v);
    }
    ArchPolicy {
        machine: user_machine_options(machine, cfg),
        cpu_model: (accel == Accel::Kvm).then(|| "host".to_string()),
        kernel_params: strs(KERNEL_PARAMS),
        globals: Vec::new(),
    }
}
