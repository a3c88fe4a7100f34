//! `-device`: one struct per device family, gathered in [`Device`].

mod console;
mod misc;
mod net;
mod pci;
mod storage;

use serde::{Deserialize, Serialize};

pub use console::{VirtConsole, VirtSerialPort, VirtioSerial};
pub use misc::{
    Generic, IntelIommu, Pvpanic, PvpanicPci, TpmCrb, TpmTis, VirtioBalloon, VirtioMem, VirtioRng,
};
pub use net::{MIN_GUEST_CID, VhostVsock, VirtioNet};
pub use pci::{PciBridge, PciePciBridge, PcieRootPort, VfioPci};
pub use storage::{
    Nvdimm, ScsiHd, VIRTIO_9P_MAX_TAG, VIRTIO_FS_MAX_TAG, VhostUserFs, Virtio9p, VirtioBlk,
    VirtioScsi,
};

use crate::escape::OptList;

/// How a virtio device is attached.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Transport {
    /// virtio-pci (`*-pci`).
    #[default]
    Pci,
    /// virtio-ccw on s390x (`*-ccw`).
    Ccw,
    /// virtio-mmio (`*-device`), such as on microvm.
    Mmio,
}

impl Transport {
    /// Pick the driver name for this transport.
    pub fn pick(self, pci: &'static str, ccw: &'static str, mmio: &'static str) -> &'static str {
        match self {
            Transport::Pci => pci,
            Transport::Ccw => ccw,
            Transport::Mmio => mmio,
        }
    }

    /// A short name, for messages.
    pub fn name(self) -> &'static str {
        self.pick("pci", "ccw", "mmio")
    }
}

/// `driver,id=…,bus=…,addr=…`.
pub(crate) fn head(
    driver: &str,
    id: Option<&str>,
    bus: Option<&str>,
    addr: Option<&str>,
) -> OptList {
    OptList::new(driver)
        .opt("id", id)
        .opt("bus", bus)
        .opt("addr", addr)
}

/// The transport-specific tail common to virtio devices.
pub(crate) fn tail(
    l: OptList,
    devno: Option<&str>,
    disable_modern: bool,
    iommu_platform: bool,
    romfile: Option<&str>,
) -> OptList {
    l.opt("devno", devno)
        .on_if("disable-modern", disable_modern)
        .on_if("iommu_platform", iommu_platform)
        .opt("romfile", romfile)
}

/// One `-device`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Device {
    /// `pci-bridge`.
    PciBridge(PciBridge),
    /// `pcie-root-port`.
    PcieRootPort(PcieRootPort),
    /// `pcie-pci-bridge`.
    PciePciBridge(PciePciBridge),
    /// `virtio-blk-*`.
    VirtioBlk(VirtioBlk),
    /// `virtio-scsi-*`.
    VirtioScsi(VirtioScsi),
    /// `scsi-hd`.
    ScsiHd(ScsiHd),
    /// `nvdimm`.
    Nvdimm(Nvdimm),
    /// `virtio-net-*`.
    VirtioNet(VirtioNet),
    /// `vhost-user-fs-*`.
    VhostUserFs(VhostUserFs),
    /// `virtio-9p-*`.
    Virtio9p(Virtio9p),
    /// `vhost-vsock-*`.
    VhostVsock(VhostVsock),
    /// `virtio-serial-*`.
    VirtioSerial(VirtioSerial),
    /// `virtconsole`.
    VirtConsole(VirtConsole),
    /// `virtserialport`.
    VirtSerialPort(VirtSerialPort),
    /// `virtio-rng-*`.
    VirtioRng(VirtioRng),
    /// `virtio-balloon-*`.
    VirtioBalloon(VirtioBalloon),
    /// `pvpanic`.
    Pvpanic(Pvpanic),
    /// `pvpanic-pci`.
    PvpanicPci(PvpanicPci),
    /// `intel-iommu`.
    IntelIommu(IntelIommu),
    /// `virtio-mem-*`.
    VirtioMem(VirtioMem),
    /// `vfio-pci`.
    VfioPci(VfioPci),
    /// `tpm-tis`.
    TpmTis(TpmTis),
    /// `tpm-crb`.
    TpmCrb(TpmCrb),
    /// Any other driver.
    Generic(Generic),
}

macro_rules! from_variants {
    ($($v:ident),* $(,)?) => {
        $(impl From<$v> for Device {
            fn from(d: $v) -> Self {
                Device::$v(d)
            }
        })*
    };
}

from_variants!(
    PciBridge,
    PcieRootPort,
    PciePciBridge,
    VirtioBlk,
    VirtioScsi,
    ScsiHd,
    Nvdimm,
    VirtioNet,
    VhostUserFs,
    Virtio9p,
    VhostVsock,
    VirtioSerial,
    VirtConsole,
    VirtSerialPort,
    VirtioRng,
    VirtioBalloon,
    Pvpanic,
    PvpanicPci,
    IntelIommu,
    VirtioMem,
    VfioPci,
    TpmTis,
    TpmCrb,
    Generic,
);

/// What kind of backend a device property names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RefKind {
    /// `drive=` → a `-drive` id.
    Drive,
    /// `netdev=` → a `-netdev` id.
    Netdev,
    /// `chardev=` → a `-chardev` (or QMP monitor) id.
    Chardev,
    /// `memdev=` → a memory backend `-object`.
    Memdev,
    /// `iothread=` → an `iothread` `-object`.
    Iothread,
    /// `rng=` → an `rng-*` `-object`.
    Rng,
    /// `tpmdev=` → a `-tpmdev` id.
    Tpmdev,
    /// `fsdev=` → a `-fsdev` id.
    Fsdev,
}

impl RefKind {
    /// The property name, for messages.
    pub fn name(self) -> &'static str {
        match self {
            RefKind::Drive => "drive",
            RefKind::Netdev => "netdev",
            RefKind::Chardev => "chardev",
            RefKind::Memdev => "memdev",
            RefKind::Iothread => "iothread",
            RefKind::Rng => "rng",
            RefKind::Tpmdev => "tpmdev",
            RefKind::Fsdev => "fsdev",
        }
    }
}

/// Which transport-specific fields a virtio device sets, for validation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TransportUse {
    /// The transport.
    pub transport: Transport,
    /// `addr` is set.
    pub addr: bool,
    /// `devno` is set.
    pub devno: bool,
    /// `disable-modern` is on.
    pub disable_modern: bool,
    /// `romfile` is set.
    pub romfile: bool,
    /// `vectors` is set.
    pub vectors: bool,
}

impl TransportUse {
    fn new(
        transport: Transport,
        addr: &Option<String>,
        devno: &Option<String>,
        disable_modern: bool,
        romfile: &Option<String>,
    ) -> Self {
        Self {
            transport,
            addr: addr.is_some(),
            devno: devno.is_some(),
            disable_modern,
            romfile: romfile.is_some(),
            vectors: false,
        }
    }
}

impl Device {
    /// The device id, when it has one.
    pub fn id(&self) -> Option<&str> {
        Some(match self {
            Device::PciBridge(d) => &d.id,
            Device::PcieRootPort(d) => &d.id,
            Device::PciePciBridge(d) => &d.id,
            Device::VirtioBlk(d) => &d.id,
            Device::VirtioScsi(d) => &d.id,
            Device::ScsiHd(d) => &d.id,
            Device::Nvdimm(d) => &d.id,
            Device::VirtioNet(d) => &d.id,
            Device::VhostUserFs(d) => &d.id,
            Device::Virtio9p(d) => &d.id,
            Device::VhostVsock(d) => &d.id,
            Device::VirtioSerial(d) => &d.id,
            Device::VirtConsole(d) => &d.id,
            Device::VirtSerialPort(d) => &d.id,
            Device::VirtioRng(d) => &d.id,
            Device::VirtioBalloon(d) => &d.id,
            Device::Pvpanic(d) => &d.id,
            Device::PvpanicPci(d) => &d.id,
            Device::IntelIommu(d) => return d.id.as_deref(),
            Device::VirtioMem(d) => &d.id,
            Device::VfioPci(d) => &d.id,
            Device::TpmTis(d) => &d.id,
            Device::TpmCrb(d) => &d.id,
            Device::Generic(d) => return d.id.as_deref(),
        })
    }

    /// The QEMU driver name.
    pub fn driver(&self) -> &str {
        match self {
            Device::PciBridge(_) => "pci-bridge",
            Device::PcieRootPort(_) => "pcie-root-port",
            Device::PciePciBridge(_) => "pcie-pci-bridge",
            Device::VirtioBlk(d) => d.driver(),
            Device::VirtioScsi(d) => d.driver(),
            Device::ScsiHd(_) => "scsi-hd",
            Device::Nvdimm(_) => "nvdimm",
            Device::VirtioNet(d) => d.driver(),
            Device::VhostUserFs(d) => d.driver(),
            Device::Virtio9p(d) => d.driver(),
            Device::VhostVsock(d) => d.driver(),
            Device::VirtioSerial(d) => d.driver(),
            Device::VirtConsole(_) => "virtconsole",
            Device::VirtSerialPort(_) => "virtserialport",
            Device::VirtioRng(d) => d.driver(),
            Device::VirtioBalloon(d) => d.driver(),
            Device::Pvpanic(_) => "pvpanic",
            Device::PvpanicPci(_) => "pvpanic-pci",
            Device::IntelIommu(_) => "intel-iommu",
            Device::VirtioMem(d) => d.driver(),
            Device::VfioPci(_) => "vfio-pci",
            Device::TpmTis(_) => "tpm-tis",
            Device::TpmCrb(_) => "tpm-crb",
            Device::Generic(d) => &d.driver,
        }
    }

    /// The bus the device plugs into, when given.
    pub fn bus(&self) -> Option<&str> {
        match self {
            Device::PciBridge(d) => d.bus.as_deref(),
            Device::PcieRootPort(d) => d.bus.as_deref(),
            Device::PciePciBridge(d) => d.bus.as_deref(),
            Device::VirtioBlk(d) => d.bus.as_deref(),
            Device::VirtioScsi(d) => d.bus.as_deref(),
            Device::ScsiHd(d) => d.bus.as_deref(),
            Device::VirtioNet(d) => d.bus.as_deref(),
            Device::VhostUserFs(d) => d.bus.as_deref(),
            Device::Virtio9p(d) => d.bus.as_deref(),
            Device::VhostVsock(d) => d.bus.as_deref(),
            Device::VirtioSerial(d) => d.bus.as_deref(),
            Device::VirtioRng(d) => d.bus.as_deref(),
            Device::VirtioBalloon(d) => d.bus.as_deref(),
            Device::PvpanicPci(d) => d.bus.as_deref(),
            Device::VirtioMem(d) => d.bus.as_deref(),
            Device::VfioPci(d) => d.bus.as_deref(),
            Device::Generic(d) => d
                .props
                .iter()
                .rev()
                .find(|(k, _)| k == "bus")
                .map(|(_, v)| v.as_str()),
            Device::Nvdimm(_)
            | Device::VirtConsole(_)
            | Device::VirtSerialPort(_)
            | Device::Pvpanic(_)
            | Device::IntelIommu(_)
            | Device::TpmTis(_)
            | Device::TpmCrb(_) => None,
        }
    }

    /// The bus this device provides to later devices, if any:
    /// `<id>` for PCI bridges and root ports, `<id>.0` for virtio-scsi and virtio-serial.
    pub fn provided_bus(&self) -> Option<String> {
        match self {
            Device::PciBridge(d) => Some(d.id.clone()),
            Device::PcieRootPort(d) => Some(d.id.clone()),
            Device::PciePciBridge(d) => Some(d.id.clone()),
            Device::VirtioScsi(d) => Some(format!("{}.0", d.id)),
            Device::VirtioSerial(d) => Some(format!("{}.0", d.id)),
            _ => None,
        }
    }

    /// The backends this device names (`drive=`, `netdev=`, `chardev=`, …).
    pub fn references(&self) -> Vec<(RefKind, &str)> {
        let mut refs = Vec::new();
        match self {
            Device::VirtioBlk(d) => {
                refs.push((RefKind::Drive, d.drive.as_str()));
                if let Some(io) = &d.iothread {
                    refs.push((RefKind::Iothread, io.as_str()));
                }
            }
            Device::VirtioScsi(d) => {
                if let Some(io) = &d.iothread {
                    refs.push((RefKind::Iothread, io.as_str()));
                }
            }
            Device::ScsiHd(d) => refs.push((RefKind::Drive, &d.drive)),
            Device::Nvdimm(d) => refs.push((RefKind::Memdev, &d.memdev)),
            Device::VirtioNet(d) => refs.push((RefKind::Netdev, &d.netdev)),
            Device::VhostUserFs(d) => refs.push((RefKind::Chardev, &d.chardev)),
            Device::Virtio9p(d) => refs.push((RefKind::Fsdev, &d.fsdev)),
            Device::VirtConsole(d) => refs.push((RefKind::Chardev, &d.chardev)),
            Device::VirtSerialPort(d) => refs.push((RefKind::Chardev, &d.chardev)),
            Device::VirtioRng(d) => refs.push((RefKind::Rng, &d.rng)),
            Device::VirtioMem(d) => refs.push((RefKind::Memdev, &d.memdev)),
            Device::TpmTis(d) => refs.push((RefKind::Tpmdev, &d.tpmdev)),
            Device::TpmCrb(d) => refs.push((RefKind::Tpmdev, &d.tpmdev)),
            _ => {}
        }
        refs
    }

    /// The transport and transport-specific fields of a virtio device.
    pub fn transport_use(&self) -> Option<TransportUse> {
        Some(match self {
            Device::VirtioBlk(d) => {
                TransportUse::new(d.transport, &d.addr, &d.devno, d.disable_modern, &d.romfile)
            }
            Device::VirtioScsi(d) => {
                TransportUse::new(d.transport, &d.addr, &d.devno, d.disable_modern, &d.romfile)
            }
            Device::VirtioNet(d) => TransportUse {
                vectors: d.vectors.is_some(),
                ..TransportUse::new(d.transport, &d.addr, &d.devno, d.disable_modern, &d.romfile)
            },
            Device::VhostUserFs(d) => {
                TransportUse::new(d.transport, &d.addr, &d.devno, false, &d.romfile)
            }
            Device::Virtio9p(d) => TransportUse::new(d.transport, &d.addr, &d.devno, false, &None),
            Device::VhostVsock(d) => {
                TransportUse::new(d.transport, &d.addr, &d.devno, d.disable_modern, &d.romfile)
            }
            Device::VirtioSerial(d) => {
                TransportUse::new(d.transport, &d.addr, &d.devno, d.disable_modern, &d.romfile)
            }
            Device::VirtioRng(d) => {
                TransportUse::new(d.transport, &d.addr, &d.devno, d.disable_modern, &d.romfile)
            }
            Device::VirtioBalloon(d) => {
                TransportUse::new(d.transport, &d.addr, &d.devno, d.disable_modern, &d.romfile)
            }
            Device::VirtioMem(d) => TransportUse::new(d.transport, &d.addr, &d.devno, false, &None),
            _ => return None,
        })
    }

    /// A name for messages: the id, or the driver when there is none.
    pub fn label(&self) -> String {
        match self.id() {
            Some(id) => id.to_owned(),
            None => self.driver().to_owned(),
        }
    }

    /// The `-device` value.
    pub fn render(&self) -> String {
        match self {
            Device::PciBridge(d) => d.render(),
            Device::PcieRootPort(d) => d.render(),
            Device::PciePciBridge(d) => d.render(),
            Device::VirtioBlk(d) => d.render(),
            Device::VirtioScsi(d) => d.render(),
            Device::ScsiHd(d) => d.render(),
            Device::Nvdimm(d) => d.render(),
            Device::VirtioNet(d) => d.render(),
            Device::VhostUserFs(d) => d.render(),
            Device::Virtio9p(d) => d.render(),
            Device::VhostVsock(d) => d.render(),
            Device::VirtioSerial(d) => d.render(),
            Device::VirtConsole(d) => d.render(),
            Device::VirtSerialPort(d) => d.render(),
            Device::VirtioRng(d) => d.render(),
            Device::VirtioBalloon(d) => d.render(),
            Device::Pvpanic(d) => d.render(),
            Device::PvpanicPci(d) => d.render(),
            Device::IntelIommu(d) => d.render(),
            Device::VirtioMem(d) => d.render(),
            Device::VfioPci(d) => d.render(),
            Device::TpmTis(d) => misc::render_tpm("tpm-tis", &d.id, &d.tpmdev),
            Device::TpmCrb(d) => misc::render_tpm("tpm-crb", &d.id, &d.tpmdev),
            Device::Generic(d) => d.render(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accessors() {
        let d: Device = VirtioScsi {
            id: "scsi0".into(),
            bus: Some("pcie.0".into()),
            ..Default::default()
        }
        .into();
        assert_eq!(d.id(), Some("scsi0"));
        assert_eq!(d.driver(), "virtio-scsi-pci");
        assert_eq!(d.bus(), Some("pcie.0"));
        assert_eq!(d.provided_bus().as_deref(), Some("scsi0.0"));
        let d: Device = IntelIommu::default().into();
        assert_eq!(d.id(), None);
        assert_eq!(d.label(), "intel-iommu");
        let g: Device = Generic {
            driver: "e1000".into(),
            id: Some("e".into()),
            props: vec![("bus".into(), "pci.0".into())],
        }
        .into();
        assert_eq!(g.bus(), Some("pci.0"));
        assert_eq!(g.driver(), "e1000");
        let b: Device = VirtioBlk {
            id: "b".into(),
            drive: "d".into(),
            iothread: Some("io".into()),
            ..Default::default()
        }
        .into();
        assert_eq!(
            b.references(),
            vec![(RefKind::Drive, "d"), (RefKind::Iothread, "io")]
        );
        assert_eq!(b.transport_use().map(|t| t.transport), Some(Transport::Pci));
        let r: Device = PcieRootPort {
            id: "rp1".into(),
            ..Default::default()
        }
        .into();
        assert_eq!(r.provided_bus().as_deref(), Some("rp1"));
        assert_eq!(Transport::Mmio.name(), "mmio");
    }
}
