//! Disks: `blockdev-add` (honouring `block_device_aio` and the cache keys),
//! with the configured sector sizes (`logical_block_size`, `physical_block_size`),
//! then `virtio-blk-pci` on a bridge slot, `scsi-hd` on `scsi0.0`, or
//! `virtio-blk-ccw`; or an image as an `nvdimm` (`memory-backend-file`).
//! Removal: `device_del`, wait for `DEVICE_DELETED`, then `blockdev-del`
//! (or `object-del`).

use super::{HotplugState, Plan, PluggedDevice, QmpCall, Step, validate_device_id};
use crate::config::{BlockDriver, HypervisorConfig};
use crate::error::{HypervisorError, Result};
use crate::plan::arch::ArchLayout;
use crate::plan::devices::SCSI_ID;
use crate::types::DeviceKind;
use qemu_config::Transport;
use serde_json::{Map, Value, json};
use std::os::unix::fs::FileTypeExt;
use std::path::Path;

/// Node name of a disk's block backend.
pub fn node_name(id: &str) -> String {
    format!("drive-{id}")
}

/// The SCSI target and LUN of the `index`th disk on `scsi0` (Kata's `GetSCSIIdLun`).
pub fn scsi_id_lun(index: u32) -> (u32, u32) {
    (index / 256, index % 256)
}

/// Where hotplug goes on this arch: `Ok(true)` needs a bridge slot (PCI),
/// `Ok(false)` needs none (CCW).
pub fn needs_slot(arch: &ArchLayout, what: &str) -> Result<bool> {
    match arch.transport {
        Transport::Pci if arch.bridges => Ok(true),
        Transport::Ccw => Ok(false),
        _ => Err(HypervisorError::unsupported(
            format!("hotplug {what}"),
            format!(
                "machine {} has no hotplug bus (no PCI bridges, no CCW)",
                arch.machine_type
            ),
        )),
    }
}

/// The `blockdev-add` arguments for an image.
pub fn blockdev_args(cfg: &HypervisorConfig, node: &str, path: &Path, readonly: bool) -> Value {
    let is_dev = std::fs::metadata(path).is_ok_and(|m| m.file_type().is_block_device());
    let mut file = json!({
        "driver": if is_dev { "host_device" } else { "file" },
        "filename": path.display().to_string(),
        "aio": cfg.block.aio,
    });
    let mut raw = json!({
        "driver": "raw",
        "node-name": node,
        "read-only": readonly,
    });
    if cfg.block.cache_set {
        let cache = json!({
            "direct": cfg.block.cache_direct,
            "no-flush": cfg.block.cache_noflush,
        });
        file["cache"] = cache.clone();
        raw["cache"] = cache;
    }
    raw["file"] = file;
    raw
}

/// A disposable disk cannot be hotplugged: `blockdev-add` has no
/// `snapshot=on` (a throwaway overlay would have to be made by hand), so it
/// is refused, naming the option, rather than plugged writable.
pub fn refuse_disposable(path: &Path, disposable: bool) -> Result<()> {
    if !disposable {
        return Ok(());
    }
    Err(HypervisorError::unsupported(
        format!("hotplug {} as a disposable disk", path.display()),
        "blockdev-add has no snapshot=on; cold-plug it before start (add_device, `sandvm create --disk PATH:disposable`)",
    ))
}

/// The plan for a disk `id` (empty: generated) from the image at `path`.
pub fn plan(
    cfg: &HypervisorConfig,
    arch: &ArchLayout,
    hp: &HotplugState,
    id: String,
    path: &Path,
    readonly: bool,
) -> Result<Plan> {
    let id = if id.is_empty() { hp.next_id("blk") } else { id };
    validate_device_id(&id)?;
    let mut info = Map::new();
    info.insert("path".into(), path.display().to_string().into());
    info.insert("readonly".into(), readonly.into());
    if cfg.block.driver == BlockDriver::Nvdimm {
        return nvdimm_plan(arch, id, path, readonly, info);
    }
    let node = node_name(&id);
    let add_node = Step::new(
        QmpCall::new("blockdev-add", blockdev_args(cfg, &node, path, readonly)),
        Some(QmpCall::new("blockdev-del", json!({ "node-name": node }))),
    );
    let mut props = Map::new();
    props.insert("drive".into(), node.clone().into());
    let sizes = [
        ("logical_block_size", cfg.block.logical_sector_size),
        ("physical_block_size", cfg.block.physical_sector_size),
    ];
    for (name, size) in sizes {
        if let Some(n) = size {
            props.insert(name.into(), n.into());
        }
    }
    let scsi = cfg.block.driver == BlockDriver::VirtioScsi && arch.transport != Transport::Mmio;
    let (driver, slot) = if scsi {
        let used: Vec<u64> = hp
            .devices
            .iter()
            .filter_map(|d| d.info.get("scsi_index").and_then(Value::as_u64))
            .collect();
        let index = (0u32..)
            .find(|i| !used.contains(&(*i as u64)))
            .unwrap_or_default();
        let (target, lun) = scsi_id_lun(index);
        props.insert("bus".into(), format!("{SCSI_ID}.0").into());
        props.insert("channel".into(), 0.into());
        props.insert("scsi-id".into(), target.into());
        props.insert("lun".into(), lun.into());
        info.insert("scsi_index".into(), index.into());
        ("scsi-hd", false)
    } else {
        let slot = needs_slot(arch, "a virtio-blk disk")?;
        if let Some(io) = crate::plan::devices::blk_iothread(cfg) {
            props.insert("iothread".into(), io.into());
        }
        let ccw = cfg.block.driver == BlockDriver::VirtioBlkCcw || !slot;
        (
            if ccw {
                "virtio-blk-ccw"
            } else {
                "virtio-blk-pci"
            },
            slot && !ccw,
        )
    };
    Ok(Plan {
        record: PluggedDevice {
            id: id.clone(),
            kind: DeviceKind::Block,
            driver: driver.into(),
            slot: None,
            info,
            placement: None,
            remove: Vec::new(),
            add: Vec::new(),
        },
        steps: vec![add_node, Step::device(driver, &id, props)],
        fd: None,
        needs_slot: slot,
    })
}

/// nvdimm alignment of the backend, bytes (QEMU's page size for file backends
/// would do; 2 MiB matches the boot nvdimm).
const NVDIMM_ALIGN: u64 = 2 << 20;

fn nvdimm_plan(
    arch: &ArchLayout,
    id: String,
    path: &Path,
    readonly: bool,
    mut info: Map<String, Value>,
) -> Result<Plan> {
    if !arch.has_nvdimm() {
        return Err(HypervisorError::unsupported(
            format!("hotplug {}", path.display()),
            format!(
                "block_device_driver = \"nvdimm\" but machine {} has no nvdimm",
                arch.machine_type
            ),
        ));
    }
    let len = std::fs::metadata(path)
        .map_err(HypervisorError::io(path.display()))?
        .len();
    let size = len / NVDIMM_ALIGN * NVDIMM_ALIGN;
    if size == 0 {
        return Err(HypervisorError::invalid(
            "nvdimm image",
            path.display().to_string(),
            "smaller than 2 MiB",
        ));
    }
    let mem = format!("mem-{id}");
    let mut o = Map::new();
    o.insert("mem-path".into(), path.display().to_string().into());
    o.insert("size".into(), size.into());
    o.insert("share".into(), true.into());
    o.insert("readonly".into(), readonly.into());
    let backend = Step::new(
        QmpCall::object_add("memory-backend-file", &mem, o),
        Some(QmpCall::new("object-del", json!({ "id": mem }))),
    );
    let mut props = Map::new();
    props.insert("memdev".into(), mem.into());
    if readonly {
        props.insert("unarmed".into(), true.into());
    }
    info.insert("size_mib".into(), (size >> 20).into());
    Ok(Plan {
        record: PluggedDevice {
            id: id.clone(),
            kind: DeviceKind::Nvdimm,
            driver: "nvdimm".into(),
            slot: None,
            info,
            placement: None,
            remove: Vec::new(),
            add: Vec::new(),
        },
        steps: vec![backend, Step::device("nvdimm", &id, props)],
        fd: None,
        needs_slot: false,
    })
}
