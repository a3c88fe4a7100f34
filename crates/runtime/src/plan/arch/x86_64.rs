//! x86_64: q35 (Kata's default) and microvm.

use super::{Accel, ArchLayout, ArchPolicy, host_or_max, strs, user_machine_options};
use crate::config::{HypervisorConfig, VfioPort};
use qemu_config::{Machine, Transport};

/// Kata's x86 kernel parameters.
pub const KERNEL_PARAMS: &[&str] = &[
    "tsc=reliable",
    "no_timer_check",
    "rcupdate.rcu_expedited=1",
    "i8042.direct=1",
    "i8042.dumbkbd=1",
    "i8042.nopnp=1",
    "i8042.noaux=1",
    "noreplace-smp",
    "reboot=k",
    "cryptomgr.notests",
    "net.ifnames=0",
    "pci=lastbus=0",
];

/// Turns the guest's DMA bounce buffer (swiotlb) off. QEMU maps hotpluggable
/// memory above 4 GiB, so the guest kernel reserves 64 MiB for bouncing DMA of
/// 32-bit devices; virtio devices without the platform IOMMU never use it.
pub const NO_SWIOTLB: &str = "swiotlb=noforce";

/// Whether the guest can do without swiotlb: no vIOMMU, no
/// `iommu_platform`, no VFIO device, and no `swiotlb=` of the user's.
pub fn swiotlb_unused(cfg: &HypervisorConfig) -> bool {
    !cfg.iommu
        && !cfg.iommu_platform
        && cfg.hot_plug_vfio == VfioPort::NoPort
        && cfg.cold_plug_vfio == VfioPort::NoPort
        && !cfg.kernel_params.iter().any(|p| p.starts_with("swiotlb="))
}

/// The TSC rate of a TCG guest (QEMU counts nanoseconds), for microvm.
pub const TCG_MICROVM_TSC: &str = "tsc_early_khz=1000000";

/// microvm's firmware (Debian's qemu-system-data).
pub const QBOOT: &str = "/usr/share/qemu/qboot.rom";

pub(super) fn layout(cfg: &HypervisorConfig) -> ArchLayout {
    let microvm = cfg.machine_type == "microvm";
    ArchLayout {
        machine_type: cfg.machine_type.clone(),
        transport: if microvm {
            Transport::Mmio
        } else {
            Transport::Pci
        },
        root_bus: (!microvm).then(|| "pcie.0".to_string()),
        nvdimm_root_params: (!microvm).then(|| {
            strs(&[
                "root=/dev/pmem0p1",
                "rootflags=dax,data=ordered,errors=remount-ro",
                "ro",
            ])
        }),
        blk_root_params: strs(&["root=/dev/vda1", "ro"]),
        console: "hvc0".into(),
        bridges: !microvm,
        rng: true,
        default_bios: microvm.then(|| QBOOT.to_string()),
        maxmem_align_mib: 1,
    }
}

pub(super) fn policy(cfg: &HypervisorConfig, accel: Accel) -> ArchPolicy {
    let microvm = cfg.machine_type == "microvm";
    let mut machine = Machine::new(cfg.machine_type.clone()).with_accel(accel.as_str());
    let mut kernel_params = strs(KERNEL_PARAMS);
    if microvm {
        machine = machine.x_option_roms(false);
        // Kata turns the legacy PIT and PIC off: under KVM the guest has
        // kvmclock and the in-kernel irqchip. Under TCG the guest needs the
        // PIT to calibrate its timers and hangs without it, so QEMU's
        // defaults stay.
        if accel == Accel::Kvm {
            machine = machine.pit(false).pic(false);
        } else {
            // microvm has no HPET or PM timer, so a TCG guest can only
            // calibrate its TSC against the PIT, which fails on a busy host
            // and then hangs the boot. TCG's TSC runs at 1 GHz: say so.
            kernel_params.push(TCG_MICROVM_TSC.to_string());
        }
        machine = machine.rtc(false).isa_serial(false);
        // microvm has no PCI: drop the PCI-only parameter.
        kernel_params.retain(|p| p != "pci=lastbus=0");
    } else if cfg.iommu {
        machine = machine.kernel_irqchip("split");
        kernel_params.extend(strs(&["intel_iommu=on", "iommu=pt"]));
    }
    if swiotlb_unused(cfg) {
        kernel_params.push(NO_SWIOTLB.to_string());
    }
    let mut globals = Vec::new();
    if accel == Accel::Kvm && !microvm {
        globals.push((
            "kvm-pit".into(),
            "lost_tick_policy".into(),
            "discard".into(),
        ));
    }
    ArchPolicy {
        machine: user_machine_options(machine, cfg),
        cpu_model: host_or_max(accel),
        kernel_params,
        globals,
    }
}
