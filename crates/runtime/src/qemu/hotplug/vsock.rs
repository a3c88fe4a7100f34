//! vsock: `vhost-vsock-pci` (or `-ccw`) with a guest CID. QEMU opens
//! `/dev/vhost-vsock` itself; where it is missing the error says so before
//! anything is touched.

use super::block::needs_slot;
use super::{HotplugState, Plan, PluggedDevice, Step, validate_device_id};
use crate::error::{HypervisorError, Result};
use crate::plan::arch::ArchLayout;
use crate::types::DeviceKind;
use serde_json::Map;
use std::path::Path;

/// The host device vhost-vsock needs.
pub const VHOST_VSOCK: &str = "/dev/vhost-vsock";
/// Lowest CID a guest may have (0-2 are reserved).
pub const MIN_GUEST_CID: u32 = 3;

/// Check the host has vhost-vsock.
pub fn check_host(dev: &Path) -> Result<()> {
    if !dev.exists() {
        return Err(HypervisorError::unsupported(
            "plug a vhost-vsock device",
            format!("{} is missing (load the vhost_vsock module)", dev.display()),
        ));
    }
    Ok(())
}

/// The steps for a vsock device, without the host check.
/// Check a guest CID: at least 3, below `u32::MAX`.
pub fn check_cid(guest_cid: u32) -> Result<()> {
    if guest_cid < MIN_GUEST_CID || guest_cid == u32::MAX {
        return Err(HypervisorError::invalid(
            "guest CID",
            guest_cid.to_string(),
            format!("must be at least {MIN_GUEST_CID} and below {}", u32::MAX),
        ));
    }
    Ok(())
}

pub fn plan_unchecked(
    arch: &ArchLayout,
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
    check_cid(guest_cid)?;
    let slot = needs_slot(arch, "vsock")?;
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
            placement: None,
            remove: Vec::new(),
            add: Vec::new(),
        },
        steps: vec![Step::device(driver, &id, props)],
        fd: None,
        needs_slot: slot,
    })
}

/// The plan for a vsock device, after checking the host.
pub fn plan(arch: &ArchLayout, hp: &HotplugState, id: String, guest_cid: u32) -> Result<Plan> {
    check_host(Path::new(VHOST_VSOCK))?;
    plan_unchecked(arch, hp, id, guest_cid)
}
