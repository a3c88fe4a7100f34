//! PCI bridges and root ports, and Kata's PCI paths through them.

use super::Layout;
use super::arch::ArchLayout;
use super::pci::SlotAddr;
use crate::config::{GuestArch, HypervisorConfig};
use qemu_config::{Device, PciBridge, PciePciBridge, PcieRootPort};

/// PCI slot of the first bridge on the root bus (Kata's `bridgePCIStartAddr`).
pub const BRIDGE_START_ADDR: u32 = 2;
/// First chassis number of `pcie_root_port` root ports (bridges take 1 to 5).
pub const ROOT_PORT_CHASSIS: u32 = 10;
/// `mem-reserve` hint on hotplug root ports.
pub const ROOT_PORT_MEM_RESERVE: &str = "4M";
/// `pref64-reserve` hint on hotplug root ports.
pub const ROOT_PORT_PREF64_RESERVE: &str = "2M";
/// `mem-reserve` on the root port above a nested bridge (Kata's bridge hints).
pub const BRIDGE_MEM_RESERVE: &str = "1M";
/// `pref64-reserve` on the root port above a nested bridge.
pub const BRIDGE_PREF64_RESERVE: &str = "1M";
/// `io-reserve` on the root port above a nested bridge.
pub const BRIDGE_IO_RESERVE: &str = "4K";

/// Whether bridges are nested behind PCIe root ports: x86_64 q35 with
/// firmware, where the firmware does not reserve windows for a conventional
/// `pci-bridge` on the root complex (QEMU's docs/pcie.txt topology).
pub fn nested(cfg: &HypervisorConfig, arch: &ArchLayout) -> bool {
    cfg.guest_arch == GuestArch::X86_64
        && cfg.firmware.is_some()
        && arch.root_bus.as_deref() == Some("pcie.0")
}

/// Bus ids of the hotplug bridges, in order (what the slot allocator manages).
pub fn bridge_ids(cfg: &HypervisorConfig, arch: &ArchLayout) -> Vec<String> {
    if !arch.bridges || arch.root_bus.is_none() {
        return Vec::new();
    }
    (0..cfg.bridges)
        .map(|i| format!("pci-bridge-{i}"))
        .collect()
}

/// Kata's PCI path of a device on a bridge slot: the root-bus slot of the
/// bridge (and of its root port, when nested), then the device's slot, in hex.
pub fn pci_path(layout: &Layout, slot: &SlotAddr) -> String {
    let index = layout
        .bridges
        .iter()
        .position(|b| *b == slot.bridge)
        .unwrap_or(0) as u32;
    let root_slot = BRIDGE_START_ADDR + index;
    if layout.nested_bridges {
        format!("{root_slot:02x}/00/{:02x}", slot.slot)
    } else {
        format!("{root_slot:02x}/{:02x}", slot.slot)
    }
}

/// The bridge and root-port devices for this config and layout.
pub fn devices(cfg: &HypervisorConfig, layout: &Layout) -> Vec<Device> {
    let mut devices = Vec::new();
    let Some(root) = layout.arch.root_bus.clone().filter(|_| layout.arch.bridges) else {
        return devices;
    };
    for (i, id) in (0u32..).zip(layout.bridges.iter().cloned()) {
        let addr = Some(format!("{:x}", BRIDGE_START_ADDR + i));
        if layout.nested_bridges {
            let rp = format!("{id}-rp");
            devices.push(Device::PcieRootPort(PcieRootPort {
                id: rp.clone(),
                bus: Some(root.clone()),
                chassis: i + 1,
                slot: 0,
                addr,
                mem_reserve: Some(BRIDGE_MEM_RESERVE.into()),
                pref64_reserve: Some(BRIDGE_PREF64_RESERVE.into()),
                io_reserve: Some(BRIDGE_IO_RESERVE.into()),
                ..Default::default()
            }));
            devices.push(Device::PciePciBridge(PciePciBridge {
                id,
                bus: Some(rp),
                addr: None,
            }));
        } else {
            devices.push(Device::PciBridge(PciBridge {
                id,
                bus: Some(root.clone()),
                chassis_nr: i + 1,
                shpc: true,
                addr,
            }));
        }
    }
    if root == "pcie.0" {
        for i in 0..cfg.pcie_root_ports {
            devices.push(Device::PcieRootPort(PcieRootPort {
                id: format!("rp{i}"),
                bus: Some(root.clone()),
                chassis: ROOT_PORT_CHASSIS + i,
                slot: i,
                mem_reserve: Some(ROOT_PORT_MEM_RESERVE.into()),
                pref64_reserve: Some(ROOT_PORT_PREF64_RESERVE.into()),
                ..Default::default()
            }));
        }
    }
    devices
}
