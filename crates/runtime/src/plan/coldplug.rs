//! Cold plug: devices added between create and start, rendered onto the
//! QEMU command line so the guest sees them at boot.
//!
//! A cold device is placed when it is added (a bridge slot from the same
//! [`SlotAllocator`](super::pci::SlotAllocator) hotplug uses, a SCSI id and
//! LUN, or a CCW device number), so the caller learns where the guest will
//! find it before the VM exists. Taps and channels are passed to QEMU as
//! inherited fds, numbered from [`FIRST_DEVICE_FD`](super::FIRST_DEVICE_FD)
//! in the order the devices were added.

use super::devices::SCSI_ID;
use super::{FIRST_DEVICE_FD, Layout, PlanInput, bridges, pci::SlotAddr};
use crate::config::HypervisorConfig;
use crate::types::{DeviceInfo, DeviceKind, Placement};
use qemu_config::*;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// First CCW device number of cold-plugged devices (`fe.0.0100`): above the
/// numbers the sandbox's own devices take, so it is known when the device
/// is added.
pub const COLD_DEVNO_BASE: u32 = 0x100;

/// What a cold-plugged device is made from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum ColdSpec {
    /// A disk image.
    Block {
        /// Image path.
        path: PathBuf,
        /// Read-only.
        readonly: bool,
        /// Disposable: `snapshot=on,cache=unsafe` (writes go to a temporary
        /// overlay QEMU creates and unlinks at once; the image never changes).
        #[serde(default)]
        disposable: bool,
    },
    /// A NIC on a tap.
    Net {
        /// MAC address.
        mac: String,
        /// The tap's name, when the runtime opens it at start; `None` when
        /// the caller passed an open fd.
        tap: Option<String>,
        /// `vhost=on`.
        vhost: bool,
    },
    /// An extra serial channel on a caller's fd.
    Channel {
        /// The port's name in the guest.
        name: String,
    },
    /// Kernel vhost-vsock.
    Vsock {
        /// The guest's CID.
        guest_cid: u32,
    },
    /// A VFIO device.
    Vfio {
        /// Host PCI address or sysfs path.
        host: String,
        /// A PCIe root port (`rp<N>`) instead of a bridge slot.
        root_port: Option<String>,
    },
}

/// A cold-plugged device, placed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ColdDevice {
    /// Device id.
    pub id: String,
    /// What it is.
    pub kind: DeviceKind,
    /// The QEMU driver.
    pub driver: String,
    /// Its bridge slot, when it holds one.
    pub slot: Option<SlotAddr>,
    /// SCSI target id and LUN, for `scsi-hd`.
    pub scsi: Option<(u32, u32)>,
    /// CCW device number, on s390x.
    pub devno: Option<String>,
    /// What it is made from.
    pub spec: ColdSpec,
}

impl ColdDevice {
    /// Where the guest finds it.
    pub fn placement(&self, layout: &Layout) -> Placement {
        if let Some(s) = &self.slot {
            return Placement::Pci {
                path: bridges::pci_path(layout, s),
            };
        }
        if let Some((id, lun)) = self.scsi {
            return Placement::Scsi { id, lun };
        }
        if let Some(d) = &self.devno {
            return Placement::Ccw { devno: d.clone() };
        }
        match layout.arch.transport {
            Transport::Mmio => Placement::Mmio,
            _ => Placement::Auto,
        }
    }

    /// What the caller is told about it.
    pub fn info(&self, layout: &Layout) -> DeviceInfo {
        DeviceInfo {
            id: self.id.clone(),
            kind: self.kind,
            driver: self.driver.clone(),
            placement: self.placement(layout),
            mac: match &self.spec {
                ColdSpec::Net { mac, .. } => Some(mac.clone()),
                _ => None,
            },
        }
    }
}

/// The chardev id of a cold-plugged channel.
pub fn channel_chardev_id(id: &str) -> String {
    format!("chardev-{id}")
}

/// Whether a cold device passes an fd to QEMU (and so takes the next fd
/// number from [`FIRST_DEVICE_FD`]).
pub fn passes_fd(spec: &ColdSpec) -> bool {
    matches!(spec, ColdSpec::Net { .. } | ColdSpec::Channel { .. })
}

/// A channel: its fd in fd set `fd` (a set per channel, numbered by its
/// fd), a `pipe` chardev on `/dev/fdset/<fd>` (QEMU's pipe backend opens the
/// path read-write when no `.in`/`.out` pair exists, and an fd-set path
/// hands it a dup of the fd), and a named `virtserialport` on the
/// sandbox's virtio-serial controller (added when the sandbox has none).
fn channel(qc: &mut Config, inp: &PlanInput<'_>, id: &str, name: &str, fd: i32) {
    if !super::agent::has_virtio_serial(qc) {
        // Only with use_legacy_serial and no virtio-serial agent channel.
        super::agent::add_virtio_serial(qc, inp.cfg, inp.layout.arch.transport, None);
    }
    let set = fd as u32;
    qc.add_fds.push(AddFd {
        fd,
        set,
        opaque: Some(format!("channel {name}")),
    });
    qc.chardevs.push(Chardev::Pipe {
        id: channel_chardev_id(id),
        path: format!("/dev/fdset/{set}"),
    });
    qc.devices.push(Device::VirtSerialPort(VirtSerialPort {
        id: id.to_string(),
        chardev: channel_chardev_id(id),
        name: Some(name.to_string()),
    }));
}

/// The drive id of a cold-plugged disk.
pub fn drive_id(id: &str) -> String {
    format!("drive-{id}")
}

/// The netdev id of a cold-plugged NIC.
pub fn netdev_id(id: &str) -> String {
    format!("netdev-{id}")
}

/// The next cold CCW device number after `taken` cold devices.
pub fn devno(taken: usize) -> String {
    format!("fe.0.{:04x}", COLD_DEVNO_BASE + taken as u32)
}

/// Add the cold-plugged devices to `qc`.
pub fn add(qc: &mut Config, inp: &PlanInput<'_>) {
    let t = inp.layout.arch.transport;
    // Devices that pass an fd (taps, channels) take 5, 6, ... in order.
    let mut next_fd = FIRST_DEVICE_FD;
    for d in inp.cold {
        let bus = d.slot.as_ref().map(|s| s.bridge.clone());
        let addr = d.slot.as_ref().map(SlotAddr::addr);
        match &d.spec {
            ColdSpec::Block {
                path,
                readonly,
                disposable,
            } => {
                let disk = Disk {
                    path,
                    readonly: *readonly,
                    disposable: *disposable,
                };
                block(qc, inp.cfg, d, t, &disk, bus, addr);
            }
            ColdSpec::Net { mac, vhost, .. } => {
                qc.netdevs.push(Netdev::Tap {
                    id: netdev_id(&d.id),
                    fds: vec![next_fd],
                    vhost: *vhost,
                    vhostfds: Vec::new(),
                    ifname: None,
                    script_none: false,
                });
                next_fd += 1;
                qc.devices.push(Device::VirtioNet(VirtioNet {
                    transport: t,
                    id: d.id.clone(),
                    netdev: netdev_id(&d.id),
                    mac: Some(mac.clone()),
                    bus,
                    addr,
                    devno: d.devno.clone(),
                    iommu_platform: inp.cfg.iommu_platform,
                    ..Default::default()
                }));
            }
            ColdSpec::Channel { name } => {
                channel(qc, inp, &d.id, name, next_fd);
                next_fd += 1;
            }
            ColdSpec::Vsock { guest_cid } => qc.devices.push(Device::VhostVsock(VhostVsock {
                transport: t,
                id: d.id.clone(),
                guest_cid: *guest_cid,
                vhostfd: None,
                bus,
                addr,
                devno: d.devno.clone(),
                iommu_platform: inp.cfg.iommu_platform,
                disable_modern: false,
                romfile: None,
            })),
            ColdSpec::Vfio { host, root_port } => {
                let sysfs = host.starts_with("/sys/");
                qc.devices.push(Device::VfioPci(VfioPci {
                    id: d.id.clone(),
                    host: (!sysfs).then(|| host.clone()),
                    sysfsdev: sysfs.then(|| host.clone()),
                    bus: root_port.clone().or(bus),
                    addr,
                    romfile: None,
                }));
            }
        }
    }
}

/// The backing of a cold-plugged disk.
struct Disk<'a> {
    path: &'a std::path::Path,
    readonly: bool,
    disposable: bool,
}

/// The `-drive` of a cold-plugged disk. A disposable one is
/// `snapshot=on,cache=unsafe` (Monogon's scratch disks): its writes never
/// reach the image, and nothing flushes them, so the `block_device_cache_*`
/// keys do not apply to it.
fn drive(cfg: &HypervisorConfig, id: String, disk: &Disk<'_>) -> Drive {
    let mut dr = Drive::raw(id, disk.path.display().to_string());
    dr.readonly = disk.readonly;
    dr.aio = Some(cfg.block.aio.clone());
    if disk.disposable {
        dr.snapshot = true;
        dr.cache = Some("unsafe".into());
    } else if cfg.block.cache_set {
        dr.cache_direct = Some(cfg.block.cache_direct);
        dr.cache_no_flush = Some(cfg.block.cache_noflush);
    }
    dr
}

fn block(
    qc: &mut Config,
    cfg: &HypervisorConfig,
    d: &ColdDevice,
    t: Transport,
    disk: &Disk<'_>,
    bus: Option<String>,
    addr: Option<String>,
) {
    let drive = drive_id(&d.id);
    let dr = self::drive(cfg, drive.clone(), disk);
    qc.drives.push(dr);
    if let Some((scsi_id, lun)) = d.scsi {
        qc.devices.push(Device::ScsiHd(ScsiHd {
            id: d.id.clone(),
            drive,
            bus: Some(format!("{SCSI_ID}.0")),
            scsi_id: Some(scsi_id),
            lun: Some(lun),
            logical_block_size: cfg.block.logical_sector_size,
            physical_block_size: cfg.block.physical_sector_size,
        }));
        return;
    }
    qc.devices.push(Device::VirtioBlk(VirtioBlk {
        transport: t,
        id: d.id.clone(),
        drive,
        bus,
        addr,
        devno: d.devno.clone(),
        iommu_platform: cfg.iommu_platform,
        logical_block_size: cfg.block.logical_sector_size,
        physical_block_size: cfg.block.physical_sector_size,
        iothread: super::devices::blk_iothread(cfg),
        ..Default::default()
    }));
}
