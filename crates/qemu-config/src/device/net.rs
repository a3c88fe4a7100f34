//! Network and vsock devices.

use serde::{Deserialize, Serialize};

use super::{Transport, head, tail};

/// `virtio-net-pci` / `virtio-net-ccw` / `virtio-net-device`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct VirtioNet {
    /// Transport.
    pub transport: Transport,
    /// Device id.
    pub id: String,
    /// `netdev=`: the `-netdev` id.
    pub netdev: String,
    /// `mac=`, such as `52:54:00:12:34:56`.
    pub mac: Option<String>,
    /// Bus.
    pub bus: Option<String>,
    /// PCI address (PCI only).
    pub addr: Option<String>,
    /// CCW device number (CCW only).
    pub devno: Option<String>,
    /// `mq=on|off` (multiqueue).
    pub mq: Option<bool>,
    /// `vectors=` (MSI-X vectors; PCI only).
    pub vectors: Option<u32>,
    /// `iommu_platform=on` when true.
    pub iommu_platform: bool,
    /// `disable-modern=on` when true (PCI only).
    pub disable_modern: bool,
    /// `romfile=` (PCI only).
    pub romfile: Option<String>,
}

impl VirtioNet {
    pub(crate) fn driver(&self) -> &'static str {
        self.transport
            .pick("virtio-net-pci", "virtio-net-ccw", "virtio-net-device")
    }

    pub(crate) fn render(&self) -> String {
        let l = head(
            self.driver(),
            Some(&self.id),
            self.bus.as_deref(),
            self.addr.as_deref(),
        )
        .kv("netdev", &self.netdev)
        .opt("mac", self.mac.as_deref())
        .opt_flag("mq", self.mq)
        .opt_num("vectors", self.vectors);
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

/// `vhost-vsock-pci` / `vhost-vsock-ccw` / `vhost-vsock-device`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct VhostVsock {
    /// Transport.
    pub transport: Transport,
    /// Device id.
    pub id: String,
    /// `guest-cid=` (3 or more; 0–2 are reserved).
    pub guest_cid: u32,
    /// `vhostfd=`: an inherited `/dev/vhost-vsock` fd.
    pub vhostfd: Option<i32>,
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

/// Lowest usable vsock guest CID.
pub const MIN_GUEST_CID: u32 = 3;

impl VhostVsock {
    pub(crate) fn driver(&self) -> &'static str {
        self.transport
            .pick("vhost-vsock-pci", "vhost-vsock-ccw", "vhost-vsock-device")
    }

    pub(crate) fn render(&self) -> String {
        let l = head(
            self.driver(),
            Some(&self.id),
            self.bus.as_deref(),
            self.addr.as_deref(),
        )
        .num("guest-cid", self.guest_cid)
        .opt_num("vhostfd", self.vhostfd);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn virtio_net_renders() {
        let n = VirtioNet {
            id: "net0".into(),
            netdev: "tap0".into(),
            mac: Some("52:54:00:12:34:56".into()),
            bus: Some("pci-bridge-0".into()),
            addr: Some("1".into()),
            mq: Some(true),
            vectors: Some(6),
            romfile: Some(String::new()),
            ..Default::default()
        };
        assert_eq!(
            n.render(),
            "virtio-net-pci,id=net0,bus=pci-bridge-0,addr=1,netdev=tap0,mac=52:54:00:12:34:56,mq=on,vectors=6,romfile="
        );
    }

    #[test]
    fn vsock_renders() {
        let v = VhostVsock {
            transport: Transport::Ccw,
            id: "vsock0".into(),
            guest_cid: 3,
            vhostfd: Some(7),
            devno: Some("fe.0.0002".into()),
            ..Default::default()
        };
        assert_eq!(
            v.render(),
            "vhost-vsock-ccw,id=vsock0,guest-cid=3,vhostfd=7,devno=fe.0.0002"
        );
    }
}
