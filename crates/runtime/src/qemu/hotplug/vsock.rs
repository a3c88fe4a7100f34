//! vsock: `vhost-vsock-pci` (or `-ccw`) with a guest CID. QEMU opens
//! `/dev/vhost-vsock` itself; where it is missing the error says so before
//! anything is touched.

use super::block::needs_slot;
use super::{DeviceKind, HotplugState, Plan, PluggedDevice, Step, validate_device_id};
use crate::hypervisor::{HypervisorError, Result};
use crate::qemu::arch::ArchPolicy;
use serde_json::Map;
use std::path::Path;

/// The host device vhost-vsock needs.
pub const VHOST_VSOCK: &str = "/dev/vhost-vsock";
/// Lowest CID a guest may have (0-2 are reserved).
pub const MIN_GUEST_CID: u32 = 3;

/// Check the host has vhost-vsock.
pub fn check_host(dev: &Path) -> Result<()> {
    if !dev.exists() {
        return Err(HypervisorError::Host(format!(
            "Cannot hotplug vsock: {} is missing (load the vhost_vsock module)",
            dev.display()
        )));
    }
    Ok(())
}

/// The steps for a vsock device, without the host check.
pub fn plan_unchecked(
    policy: &ArchPolicy,
    hp: &HotplugState,
    id: String,
    guest_cid: u32,
) -> Result<Plan> {
    let id = if id.is_empty() {
        hp.next_id("vsock")
    } else {
        id
    };
    validate_device_id(&id)?;
    if guest_cid < MIN_GUEST_CID || guest_cid == u32::MAX {
        return Err(HypervisorError::Host(format!(
            "Invalid guest CID {guest_cid}: must be at least {MIN_GUEST_CID} and below {}",
            u32::MAX
        )));
    }
    let slot = needs_slot(policy, "vsock")?;
    let driver = if slot {
        "vhost-vsock-pci"
    } else {
        "vhost-vsock-ccw"
    };
    let mut props = Map::new();
    props.insert("guest-cid".into(), guest_cid.into());
    let mut info = Map::new();
    info.insert("guest_cid".into(), guest_cid.into());
    Ok(Plan {
        record: PluggedDevice {
            id: id.clone(),
            kind: DeviceKind::Vsock,
            driver: driver.into(),
            slot: None,
            info,
            remove: Vec::new(),
        },
        steps: vec![Step::device(driver, &id, props)],
        fd: None,
        needs_slot: slot,
    })
}

/// The plan for a vsock device, after checking the host.
pub fn plan(policy: &ArchPolicy, hp: &HotplugState, id: String, guest_cid: u32) -> Result<Plan> {
    check_host(Path::new(VHOST_VSOCK))?;
    plan_unchecked(policy, hp, id, guest_cid)
}
