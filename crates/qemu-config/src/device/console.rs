//! virtio-serial controller and its ports.

use serde::{Deserialize, Serialize};

use super::{Transport, head, tail};

/// `virtio-serial-pci` / `virtio-serial-ccw` / `virtio-serial-device`; provides bus `<id>.0`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct VirtioSerial {
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
    /// `iommu_platform=on` when true.
    pub iommu_platform: bool,
    /// `disable-modern=on` when true (PCI only).
    pub disable_modern: bool,
    /// `romfile=` (PCI only).
    pub romfile: Option<String>,
}

impl VirtioSerial {
    pub(crate) fn driver(&self) -> &'static str {
        self.transport.pick(
            "virtio-serial-pci",
            "virtio-serial-ccw",
            "virtio-serial-device",
        )
    }

    pub(crate) fn render(&self) -> String {
        let l = head(
            self.driver(),
            Some(&self.id),
            self.bus.as_deref(),
            self.addr.as_deref(),
        );
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

/// `virtconsole`: a console port (`hvc0`) on a virtio-serial bus.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct VirtConsole {
    /// Device id.
    pub id: String,
    /// `chardev=`.
    pub chardev: String,
    /// `name=`: the port name the guest sees.
    pub name: Option<String>,
}

impl VirtConsole {
    pub(crate) fn render(&self) -> String {
        head("virtconsole", Some(&self.id), None, None)
            .kv("chardev", &self.chardev)
            .opt("name", self.name.as_deref())
            .finish()
    }
}

/// `virtserialport`: a named port on a virtio-serial bus.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct VirtSerialPort {
    /// Device id.
    pub id: String,
    /// `chardev=`.
    pub chardev: String,
    /// `name=`, such as `org.qemu.guest_agent.0`.
    pub name: Option<String>,
}

impl VirtSerialPort {
    pub(crate) fn render(&self) -> String {
        head("virtserialport", Some(&self.id), None, None)
            .kv("chardev", &self.chardev)
            .opt("name", self.name.as_deref())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serial_and_ports_render() {
        let s = VirtioSerial {
            id: "serial0".into(),
            bus: Some("pcie.0".into()),
            disable_modern: true,
            romfile: Some(String::new()),
            ..Default::default()
        };
        assert_eq!(
            s.render(),
            "virtio-serial-pci,id=serial0,bus=pcie.0,disable-modern=on,romfile="
        );
        let c = VirtConsole {
            id: "console0".into(),
            chardev: "charconsole0".into(),
            name: None,
        };
        assert_eq!(c.render(), "virtconsole,id=console0,chardev=charconsole0");
        let p = VirtSerialPort {
            id: "port0".into(),
            chardev: "c".into(),
            name: Some("org.qemu.guest_agent.0".into()),
        };
        assert_eq!(
            p.render(),
            "virtserialport,id=port0,chardev=c,name=org.qemu.guest_agent.0"
        );
    }
}
