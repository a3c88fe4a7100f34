//! Block, SCSI, NVDIMM and virtio-fs devices.

use serde::{Deserialize, Serialize};

use super::{Transport, head, tail};

/// `virtio-blk-pci` / `virtio-blk-ccw` / `virtio-blk-device`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct VirtioBlk {
    /// Transport.
    pub transport: Transport,
    /// Device id.
    pub id: String,
    /// `drive=`: the `-drive` id.
    pub drive: String,
    /// Bus.
    pub bus: Option<String>,
    /// PCI address (PCI only).
    pub addr: Option<String>,
    /// CCW device number, such as `fe.0.0001` (CCW only).
    pub devno: Option<String>,
    /// `scsi=on|off` — removed from upstream QEMU (9.1+); leave `None` there.
    pub scsi: Option<bool>,
    /// `config-wce=on|off`.
    pub config_wce: Option<bool>,
    /// `share-rw=on` when true.
    pub share_rw: bool,
    /// `iothread=`: an `iothread` object id.
    pub iothread: Option<String>,
    /// `serial=`.
    pub serial: Option<String>,
    /// `iommu_platform=on` when true.
    pub iommu_platform: bool,
    /// `disable-modern=on` when true (PCI only).
    pub disable_modern: bool,
    /// `romfile=` (PCI only; `Some("")` disables the option ROM).
    pub romfile: Option<String>,
    /// `logical_block_size=`, bytes.
    pub logical_block_size: Option<u32>,
    /// `physical_block_size=`, bytes.
    pub physical_block_size: Option<u32>,
    /// `bootindex=`: the firmware's boot order (0 first).
    pub bootindex: Option<u32>,
}

impl VirtioBlk {
    pub(crate) fn driver(&self) -> &'static str {
        self.transport
            .pick("virtio-blk-pci", "virtio-blk-ccw", "virtio-blk-device")
    }

    pub(crate) fn render(&self) -> String {
        let l = head(
            self.driver(),
            Some(&self.id),
            self.bus.as_deref(),
            self.addr.as_deref(),
        )
        .kv("drive", &self.drive)
        .opt_flag("scsi", self.scsi)
        .opt_flag("config-wce", self.config_wce)
        .on_if("share-rw", self.share_rw)
        .opt("iothread", self.iothread.as_deref())
        .opt("serial", self.serial.as_deref())
        .opt_num("logical_block_size", self.logical_block_size)
        .opt_num("physical_block_size", self.physical_block_size)
        .opt_num("bootindex", self.bootindex);
        tail(
            l,
            self.devno.as_deref(),
            self.disable_modern,
            self.iommu_platform,
            self.romfile.as_deref(),
        )
        .finish()
    }
}

/// `virtio-scsi-pci` / `virtio-scsi-ccw` / `virtio-scsi-device`; provides bus `<id>.0`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct VirtioScsi {
    /// Transport.
    pub transport: Transport,
    /// Device id.
    pub id: String,
    /// Bus.
    pub bus: Option<String>,
    /// PCI address (PCI only).
    pub addr: Option<String>,
    /// CCW device number (CCW only).
    pub devno: Option<String>,
    /// `iothread=`.
    pub iothread: Option<String>,
    /// `iommu_platform=on` when true.
    pub iommu_platform: bool,
    /// `disable-modern=on` when true (PCI only).
    pub disable_modern: bool,
    /// `romfile=` (PCI only).
    pub romfile: Option<String>,
}

impl VirtioScsi {
    pub(crate) fn driver(&self) -> &'static str {
        self.transport
            .pick("virtio-scsi-pci", "virtio-scsi-ccw", "virtio-scsi-device")
    }

    pub(crate) fn render(&self) -> String {
        let l = head(
            self.driver(),
            Some(&self.id),
            self.bus.as_deref(),
            self.addr.as_deref(),
        )
        .opt("iothread", self.iothread.as_deref());
        tail(
            l,
            self.devno.as_deref(),
            self.disable_modern,
            self.iommu_platform,
            self.romfile.as_deref(),
        )
        .finish()
    }
}

/// `scsi-hd` on a virtio-scsi bus (`<controller id>.0`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScsiHd {
    /// Device id.
    pub id: String,
    /// `drive=`.
    pub drive: String,
    /// SCSI bus, such as `scsi0.0`.
    pub bus: Option<String>,
    /// `scsi-id=`.
    pub scsi_id: Option<u32>,
    /// `lun=`.
    pub lun: Option<u32>,
    /// `logical_block_size=`, bytes.
    pub logical_block_size: Option<u32>,
    /// `physical_block_size=`, bytes.
    pub physical_block_size: Option<u32>,
}

impl ScsiHd {
    pub(crate) fn render(&self) -> String {
        head("scsi-hd", Some(&self.id), self.bus.as_deref(), None)
            .kv("drive", &self.drive)
            .opt_num("scsi-id", self.scsi_id)
            .opt_num("lun", self.lun)
            .opt_num("logical_block_size", self.logical_block_size)
            .opt_num("physical_block_size", self.physical_block_size)
            .finish()
    }
}

/// `nvdimm` backed by a memory backend (needs `-machine nvdimm=on`, slots and maxmem).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Nvdimm {
    /// Device id.
    pub id: String,
    /// `memdev=`: a memory backend object id.
    pub memdev: String,
    /// `unarmed=on` when true (read-only to the guest).
    pub unarmed: bool,
}

impl Nvdimm {
    pub(crate) fn render(&self) -> String {
        head("nvdimm", Some(&self.id), None, None)
            .kv("memdev", &self.memdev)
            .on_if("unarmed", self.unarmed)
            .finish()
    }
}

/// Longest virtio-fs tag (bytes), from the virtio-fs config space.
pub const VIRTIO_FS_MAX_TAG: usize = 36;

/// `vhost-user-fs-pci` / `vhost-user-fs-ccw` / `vhost-user-fs-device` (virtio-fs).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct VhostUserFs {
    /// Transport.
    pub transport: Transport,
    /// Device id.
    pub id: String,
    /// `chardev=`: a socket chardev connected to virtiofsd.
    pub chardev: String,
    /// `tag=`: the mount tag (at most 36 bytes).
    pub tag: String,
    /// `queue-size=` (at most 65535).
    pub queue_size: Option<u32>,
    /// `cache-size=` (DAX window) — only in Kata's QEMU fork; upstream QEMU rejects it.
    pub cache_size: Option<String>,
    /// Bus.
    pub bus: Option<String>,
    /// PCI address (PCI only).
    pub addr: Option<String>,
    /// CCW device number (CCW only).
    pub devno: Option<String>,
    /// `iommu_platform=on` when true.
    pub iommu_platform: bool,
    /// `romfile=` (PCI only).
    pub romfile: Option<String>,
}

impl VhostUserFs {
    pub(crate) fn driver(&self) -> &'static str {
        self.transport.pick(
            "vhost-user-fs-pci",
            "vhost-user-fs-ccw",
            "vhost-user-fs-device",
        )
    }

    pub(crate) fn render(&self) -> String {
        let l = head(
            self.driver(),
            Some(&self.id),
            self.bus.as_deref(),
            self.addr.as_deref(),
        )
        .kv("chardev", &self.chardev)
        .kv("tag", &self.tag)
        .opt_num("queue-size", self.queue_size)
        .opt("cache-size", self.cache_size.as_deref());
        tail(
            l,
            self.devno.as_deref(),
            false,
            self.iommu_platform,
            self.romfile.as_deref(),
        )
        .finish()
    }
}

/// Longest virtio-9p mount tag (bytes): QEMU's `MAX_TAG_LEN` less its NUL.
pub const VIRTIO_9P_MAX_TAG: usize = 31;

/// `virtio-9p-pci` / `virtio-9p-ccw` / `virtio-9p-device`: a host folder
/// (an [`Fsdev`](crate::Fsdev)) served by QEMU itself.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Virtio9p {
    /// Transport.
    pub transport: Transport,
    /// Device id.
    pub id: String,
    /// `fsdev=`: the `-fsdev` id.
    pub fsdev: String,
    /// `mount_tag=`: the tag the guest mounts (at most 31 bytes).
    pub mount_tag: String,
    /// Bus.
    pub bus: Option<String>,
    /// PCI address (PCI only).
    pub addr: Option<String>,
    /// CCW device number (CCW only).
    pub devno: Option<String>,
    /// `iommu_platform=on` when true.
    pub iommu_platform: bool,
}

impl Virtio9p {
    pub(crate) fn driver(&self) -> &'static str {
        self.transport
            .pick("virtio-9p-pci", "virtio-9p-ccw", "virtio-9p-device")
    }

    pub(crate) fn render(&self) -> String {
        let l = head(
            self.driver(),
            Some(&self.id),
            self.bus.as_deref(),
            self.addr.as_deref(),
        )
        .kv("fsdev", &self.fsdev)
        .kv("mount_tag", &self.mount_tag);
        tail(l, self.devno.as_deref(), false, self.iommu_platform, None).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn virtio_9p_per_transport() {
        let mut d = Virtio9p {
            id: "fs9p0".into(),
            fsdev: "fsdev0".into(),
            mount_tag: "kataShared".into(),
            ..Default::default()
        };
        assert_eq!(
            d.render(),
            "virtio-9p-pci,id=fs9p0,fsdev=fsdev0,mount_tag=kataShared"
        );
        d.transport = Transport::Ccw;
        d.devno = Some("fe.0.0002".into());
        assert_eq!(
            d.render(),
            "virtio-9p-ccw,id=fs9p0,fsdev=fsdev0,mount_tag=kataShared,devno=fe.0.0002"
        );
    }

    #[test]
    fn virtio_blk_per_transport() {
        let mut b = VirtioBlk {
            id: "blk0".into(),
            drive: "drive0".into(),
            bus: Some("rp0".into()),
            share_rw: true,
            serial: Some("s,n".into()),
            config_wce: Some(false),
            romfile: Some(String::new()),
            disable_modern: true,
            ..Default::default()
        };
        assert_eq!(
            b.render(),
            "virtio-blk-pci,id=blk0,bus=rp0,drive=drive0,config-wce=off,share-rw=on,serial=s,,n,disable-modern=on,romfile="
        );
        b.transport = Transport::Ccw;
        b.bus = None;
        b.romfile = None;
        b.disable_modern = false;
        b.devno = Some("fe.0.0001".into());
        assert_eq!(
            b.render(),
            "virtio-blk-ccw,id=blk0,drive=drive0,config-wce=off,share-rw=on,serial=s,,n,devno=fe.0.0001"
        );
        b.transport = Transport::Mmio;
        assert!(b.render().starts_with("virtio-blk-device,id=blk0,"));
        b.logical_block_size = Some(4096);
        b.physical_block_size = Some(4096);
        b.devno = None;
        assert_eq!(
            b.render(),
            "virtio-blk-device,id=blk0,drive=drive0,config-wce=off,share-rw=on,serial=s,,n,logical_block_size=4096,physical_block_size=4096"
        );
    }

    #[test]
    fn scsi_nvdimm_fs_render() {
        let s = VirtioScsi {
            id: "scsi0".into(),
            iothread: Some("io0".into()),
            ..Default::default()
        };
        assert_eq!(s.render(), "virtio-scsi-pci,id=scsi0,iothread=io0");
        let hd = ScsiHd {
            id: "hd0".into(),
            drive: "d0".into(),
            bus: Some("scsi0.0".into()),
            scsi_id: Some(0),
            lun: Some(1),
            ..Default::default()
        };
        assert_eq!(
            hd.render(),
            "scsi-hd,id=hd0,bus=scsi0.0,drive=d0,scsi-id=0,lun=1"
        );
        let sized = ScsiHd {
            logical_block_size: Some(512),
            physical_block_size: Some(4096),
            ..hd
        };
        assert_eq!(
            sized.render(),
            "scsi-hd,id=hd0,bus=scsi0.0,drive=d0,scsi-id=0,lun=1,logical_block_size=512,physical_block_size=4096"
        );
        let n = Nvdimm {
            id: "nv0".into(),
            memdev: "mem0".into(),
            unarmed: true,
        };
        assert_eq!(n.render(), "nvdimm,id=nv0,memdev=mem0,unarmed=on");
        let fs = VhostUserFs {
            id: "fs0".into(),
            chardev: "char-fs".into(),
            tag: "kataShared".into(),
            queue_size: Some(1024),
            ..Default::default()
        };
        assert_eq!(
            fs.render(),
            "vhost-user-fs-pci,id=fs0,chardev=char-fs,tag=kataShared,queue-size=1024"
        );
    }
}
