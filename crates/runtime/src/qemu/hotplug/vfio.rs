//! VFIO: `vfio-pci` with `host=<BDF>` (or `sysfsdev=`) onto a bridge slot,
//! a free PCIe root port or the root bus, per `hot_plug_vfio`.
//!
//! Untested on hardware: there is no assignable device on the machines this
//! was built on. The QMP sequence is unit-tested.

use super::{DeviceKind, HotplugState, Plan, PluggedDevice, Step, validate_device_id};
use crate::config::{HypervisorConfig, VfioPort};
use crate::hypervisor::{HypervisorError, Result};
use crate::qemu::arch::ArchPolicy;
use qemu_config::Transport;
use serde_json::{Map, Value};

/// Check a host PCI address `[DDDD:]BB:DD.F` or a sysfs device path.
pub fn host_prop(host: &str) -> Result<(&'static str, String)> {
    if host.starts_with("/sys/") {
        return Ok(("sysfsdev", host.to_string()));
    }
    let ok = {
        let parts: Vec<&str> = host.split([':', '.']).collect();
        let hex = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_hexdigit());
        match parts.as_slice() {
            [d, b, s, f] => hex(d, 4) && hex(b, 2) && hex(s, 2) && hex(f, 1),
            [b, s, f] => hex(b, 2) && hex(s, 2) && hex(f, 1),
            _ => false,
        }
    };
    if !ok {
        return Err(HypervisorError::Host(format!(
            "Invalid VFIO host device {host:?}: expected a PCI address like 0000:01:00.0 or a /sys/bus/pci/devices path"
        )));
    }
    Ok(("host", host.to_string()))
}

/// The plan for VFIO device `id` from `host`.
pub fn plan(
    cfg: &HypervisorConfig,
    policy: &ArchPolicy,
    hp: &HotplugState,
    id: String,
    host: &str,
) -> Result<Plan> {
    let id = if id.is_empty() {
        hp.next_id("vfio")
    } else {
        id
    };
    validate_device_id(&id)?;
    let (key, value) = host_prop(host)?;
    if policy.transport != Transport::Pci {
        return Err(HypervisorError::Host(format!(
            "Cannot hotplug VFIO device {host}: machine {} has no PCI",
            policy.machine.machine_type
        )));
    }
    let mut props = Map::new();
    props.insert(key.into(), value.into());
    let mut needs_slot = false;
    match cfg.hot_plug_vfio {
        VfioPort::BridgePort => needs_slot = true,
        VfioPort::RootPort | VfioPort::SwitchPort => {
            // The first root port no hotplugged device sits on.
            let used: Vec<&str> = hp
                .devices
                .iter()
                .filter_map(|d| d.info.get("root_port").and_then(Value::as_str))
                .collect();
            let port = (0..cfg.pcie_root_ports)
                .map(|i| format!("rp{i}"))
                .find(|p| !used.contains(&p.as_str()))
                .ok_or_else(|| {
                    HypervisorError::Host(format!(
                        "No free PCIe root port for VFIO device {host}: all {} are taken; raise hypervisor.qemu.pcie_root_port",
                        cfg.pcie_root_ports
                    ))
                })?;
            props.insert("bus".into(), port.into());
        }
        VfioPort::NoPort => {
            if let Some(root) = policy.root_bus {
                props.insert("bus".into(), root.into());
            }
        }
    }
    let mut info = Map::new();
    info.insert("host".into(), host.into());
    if let Some(Value::String(b)) = props.get("bus")
        && b.starts_with("rp")
    {
        info.insert("root_port".into(), b.clone().into());
    }
    Ok(Plan {
        record: PluggedDevice {
            id: id.clone(),
            kind: DeviceKind::Vfio,
            driver: "vfio-pci".into(),
            slot: None,
            info,
            remove: Vec::new(),
        },
        steps: vec![Step::device("vfio-pci", &id, props)],
        fd: None,
        needs_slot,
    })
}
