//! Entropy, balloon, panic, IOMMU, virtio-mem, TPM and generic devices.

use serde::{Deserialize, Serialize};

use super::{Transport, head, tail};
use crate::escape::{OptList, mib};

/// `virtio-rng-pci` / `virtio-rng-ccw` / `virtio-rng-device`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct VirtioRng {
    /// Transport.
    pub transport: Transport,
    /// Device id.
    pub id: String,
    /// `rng=`: an `rng-*` object id.
    pub rng: String,
    /// Bus.
    pub bus: Option<String>,
    /// PCI address (PCI only).
    pub addr: Option<String>,
    /// CCW device number (CCW only).
    pub devno: Option<String>,
    /// `iommu_platform=on` when true.
    pub iommu_platform: bool,
    /// `disable-modern=on` when true (PCI only).
    pub disable_modern: bool,
    /// `romfile=` (PCI only).
    pub romfile: Option<String>,
}

impl VirtioRng {
    pub(crate) fn driver(&self) -> &'static str {
        self.transport
            .pick("virtio-rng-pci", "virtio-rng-ccw", "virtio-rng-device")
    }

    pub(crate) fn render(&self) -> String {
        let l = head(
            self.driver(),
            Some(&self.id),
            self.bus.as_deref(),
            self.addr.as_deref(),
        )
        .kv("rng", &self.rng);
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

/// `virtio-balloon-pci` / `virtio-balloon-ccw` / `virtio-balloon-device`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct VirtioBalloon {
    /// Transport.
    pub transport: Transport,
    /// Device id.
    pub id: String,
    /// `free-page-reporting=on` when true.
    pub free_page_reporting: bool,
    /// `deflate-on-oom=on` when true.
    pub deflate_on_oom: bool,
    /// Bus.
    pub bus: Option<String>,
    /// PCI address (PCI only).
    pub addr: Option<String>,
    /// CCW device number (CCW only).
    pub devno: Option<String>,
    /// `iommu_platform=on` when true.
    pub iommu_platform: bool,
    /// `disable-modern=on` when true (PCI only).
    pub disable_modern: bool,
    /// `romfile=` (PCI only).
    pub romfile: Option<String>,
}

impl VirtioBalloon {
    pub(crate) fn driver(&self) -> &'static str {
        self.transport.pick(
            "virtio-balloon-pci",
            "virtio-balloon-ccw",
            "virtio-balloon-device",
        )
    }

    pub(crate) fn render(&self) -> String {
        let l = head(
            self.driver(),
            Some(&self.id),
            self.bus.as_deref(),
            self.addr.as_deref(),
        )
        .on_if("free-page-reporting", self.free_page_reporting)
        .on_if("deflate-on-oom", self.deflate_on_oom);
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

/// `pvpanic` (x86 ISA device).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pvpanic {
    /// Device id.
    pub id: String,
    /// `ioport=` (at most 0xffff; QEMU's default is 0x505).
    pub ioport: Option<u32>,
}

impl Pvpanic {
    pub(crate) fn render(&self) -> String {
        head("pvpanic", Some(&self.id), None, None)
            .opt_num("ioport", self.ioport)
            .finish()
    }
}

/// `pvpanic-pci`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PvpanicPci {
    /// Device id.
    pub id: String,
    /// Bus.
    pub bus: Option<String>,
    /// PCI address.
    pub addr: Option<String>,
}

impl PvpanicPci {
    pub(crate) fn render(&self) -> String {
        head(
            "pvpanic-pci",
            Some(&self.id),
            self.bus.as_deref(),
            self.addr.as_deref(),
        )
        .finish()
    }
}

/// `intel-iommu` (q35; `intremap=on` needs `kernel_irqchip=split`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct IntelIommu {
    /// Device id (optional).
    pub id: Option<String>,
    /// `intremap=on|off`.
    pub intremap: bool,
    /// `device-iotlb=on` when true.
    pub device_iotlb: bool,
    /// `caching-mode=on` when true.
    pub caching_mode: bool,
}

impl IntelIommu {
    pub(crate) fn render(&self) -> String {
        head("intel-iommu", self.id.as_deref(), None, None)
            .flag("intremap", self.intremap)
            .on_if("device-iotlb", self.device_iotlb)
            .on_if("caching-mode", self.caching_mode)
            .finish()
    }
}

/// `virtio-mem-pci` / `virtio-mem-ccw` (no MMIO variant).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct VirtioMem {
    /// Transport (PCI or CCW).
    pub transport: Transport,
    /// Device id.
    pub id: String,
    /// `memdev=`: a memory backend object id, sized to the hotpluggable maximum.
    pub memdev: String,
    /// `requested-size=` in MiB (at most the memdev size).
    pub requested_size_mib: u64,
    /// Bus.
    pub bus: Option<String>,
    /// PCI address (PCI only).
    pub addr: Option<String>,
    /// CCW device number (CCW only).
    pub devno: Option<String>,
    /// `node=`: NUMA node.
    pub node: Option<u32>,
}

impl VirtioMem {
    pub(crate) fn driver(&self) -> &'static str {
        self.transport
            .pick("virtio-mem-pci", "virtio-mem-ccw", "virtio-mem-device")
    }

    pub(crate) fn render(&self) -> String {
        let l = head(
            self.driver(),
            Some(&self.id),
            self.bus.as_deref(),
            self.addr.as_deref(),
        )
        .kv("memdev", &self.memdev)
        .kv("requested-size", mib(self.requested_size_mib))
        .opt_num("node", self.node);
        tail(l, self.devno.as_deref(), false, false, None).finish()
    }
}

/// `tpm-tis` (x86 ISA TPM front end).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TpmTis {
    /// Device id.
    pub id: String,
    /// `tpmdev=`: a `-tpmdev` id.
    pub tpmdev: String,
}

/// `tpm-crb` (x86 CRB TPM front end).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TpmCrb {
    /// Device id.
    pub id: String,
    /// `tpmdev=`: a `-tpmdev` id.
    pub tpmdev: String,
}

pub(crate) fn render_tpm(driver: &str, id: &str, tpmdev: &str) -> String {
    head(driver, Some(id), None, None)
        .kv("tpmdev", tpmdev)
        .finish()
}

/// Any other device: `<driver>,id=<id>,<props…>`. Not checked beyond ids, keys and characters.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Generic {
    /// Driver name.
    pub driver: String,
    /// Device id.
    pub id: Option<String>,
    /// Properties, rendered in order (`bus` here is checked like any other bus).
    pub props: Vec<(String, String)>,
}

impl Generic {
    pub(crate) fn render(&self) -> String {
        OptList::new(&self.driver)
            .opt("id", self.id.as_deref())
            .pairs(&self.props)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn misc_devices_render() {
        let r = VirtioRng {
            id: "rng0".into(),
            rng: "rng0".into(),
            ..Default::default()
        };
        assert_eq!(r.render(), "virtio-rng-pci,id=rng0,rng=rng0");
        let b = VirtioBalloon {
            transport: Transport::Mmio,
            id: "balloon0".into(),
            free_page_reporting: true,
            deflate_on_oom: true,
            ..Default::default()
        };
        assert_eq!(
            b.render(),
            "virtio-balloon-device,id=balloon0,free-page-reporting=on,deflate-on-oom=on"
        );
        assert_eq!(
            Pvpanic {
                id: "p".into(),
                ioport: Some(0x505)
            }
            .render(),
            "pvpanic,id=p,ioport=1285"
        );
        assert_eq!(
            PvpanicPci {
                id: "p".into(),
                bus: Some("pcie.0".into()),
                addr: None
            }
            .render(),
            "pvpanic-pci,id=p,bus=pcie.0"
        );
        let i = IntelIommu {
            id: None,
            intremap: true,
            device_iotlb: true,
            caching_mode: true,
        };
        assert_eq!(
            i.render(),
            "intel-iommu,intremap=on,device-iotlb=on,caching-mode=on"
        );
        let m = VirtioMem {
            id: "vmem0".into(),
            memdev: "vmemmem0".into(),
            requested_size_mib: 512,
            node: Some(0),
            ..Default::default()
        };
        assert_eq!(
            m.render(),
            "virtio-mem-pci,id=vmem0,memdev=vmemmem0,requested-size=512M,node=0"
        );
        assert_eq!(
            render_tpm("tpm-tis", "tpm", "tpm0"),
            "tpm-tis,id=tpm,tpmdev=tpm0"
        );
        let g = Generic {
            driver: "virtio-gpu-pci".into(),
            id: Some("gpu0".into()),
            props: vec![("xres".into(), "1024".into())],
        };
        assert_eq!(g.render(), "virtio-gpu-pci,id=gpu0,xres=1024");
    }
}
