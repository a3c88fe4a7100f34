//! VFIO: `vfio-pci` with `host=<BDF>` (or `sysfsdev=`) onto a bridge slot,
//! a free PCIe root port or the root bus, per `hot_plug_vfio`.
//!
//! Untested on hardware: there is no assignable device on the machines this
//! was built on. The QMP sequence is unit-tested.

use super::{HotplugState, Plan, PluggedDevice, Step, validate_device_id};
use crate::config::{HypervisorConfig, VfioPort};
use crate::error::{HypervisorError, Result};
use crate::plan::arch::ArchLayout;
use crate::types::DeviceKind;
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
        return Err(HypervisorError::invalid(
            "VFIO host device",
            host,
            "expected a PCI address like 0000:01:00.0 or a /sys/bus/pci/devices path",
        ));
    }
    Ok(("host", host.to_string()))
}

/// The first PCIe root port (`rp<N>`) no device sits on, for `what`.
pub fn free_root_port(cfg: &HypervisorConfig, hp: &HotplugState, what: &str) -> Result<String> {
    let used: Vec<&str> = hp
        .devices
        .iter()
        .filter_map(|d| d.info.get("root_port").and_then(Value::as_str))
        .collect();
    (0..cfg.pcie_root_ports)
        .map(|i| format!("rp{i}"))
        .find(|p| !used.contains(&p.as_str()))
        .ok_or_else(|| HypervisorError::OutOfRange {
            what: format!("plug VFIO device {what}"),
            reason: format!(
                "all {} PCIe root ports are taken; raise hypervisor.qemu.pcie_root_port",
                cfg.pcie_root_ports
            ),
        })
}

/// The plan for VFIO device `id` from `host`.
pub fn plan(
    cfg: &HypervisorConfig,
    arch: &ArchLayout,
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
    if arch.transport != Transport::Pci {
        return Err(HypervisorError::unsupported(
            format!("plug VFIO device {host}"),
            format!("machine {} has no PCI", arch.machine_type),
        ));
    }
    let mut props = Map::new();
    props.insert(key.into(), value.into());
    let mut needs_slot = false;
    match cfg.hot_plug_vfio {
        VfioPort::BridgePort => needs_slot = true,
        VfioPort::RootPort | VfioPort::SwitchPort => {
            props.insert("bus".into(), free_root_port(cfg, hp, host)?.into());
        }
        VfioPort::NoPort => {
            if let Some(root) = &arch.root_bus {
                props.insert("bus".into(), root.clone().into());
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
            placement: None,
            remove: Vec::new(),
            add: Vec::new(),
        },
        steps: vec![Step::device("vfio-pci", &id, props)],
        fd: None,
        needs_slot,
    })
}
