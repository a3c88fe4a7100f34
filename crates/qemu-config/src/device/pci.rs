//! PCI topology devices and VFIO.

use serde::{Deserialize, Serialize};

use super::head;

/// `pci-bridge`: a conventional PCI bridge; provides bus `<id>`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PciBridge {
    /// Device id, also the name of the bus it provides.
    pub id: String,
    /// Parent bus.
    pub bus: Option<String>,
    /// `chassis_nr` (1..=255, unique per machine).
    pub chassis_nr: u32,
    /// `shpc=on|off` (standard hotplug controller).
    pub shpc: bool,
    /// PCI address on the parent bus.
    pub addr: Option<String>,
}

impl PciBridge {
    pub(crate) fn render(&self) -> String {
        head(
            "pci-bridge",
            Some(&self.id),
            self.bus.as_deref(),
            self.addr.as_deref(),
        )
        .num("chassis_nr", self.chassis_nr)
        .flag("shpc", self.shpc)
        .finish()
    }
}

/// `pcie-root-port`: one PCIe hotplug slot; provides bus `<id>`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PcieRootPort {
    /// Device id, also the name of the bus it provides.
    pub id: String,
    /// Parent bus (a PCIe root bus).
    pub bus: Option<String>,
    /// `chassis` (0..=255).
    pub chassis: u32,
    /// `slot` (0..=65535).
    pub slot: u32,
    /// `port` (0..=255).
    pub port: Option<u32>,
    /// `multifunction=on|off`.
    pub multifunction: Option<bool>,
    /// PCI address on the parent bus.
    pub addr: Option<String>,
    /// `mem-reserve`, such as `32M`.
    pub mem_reserve: Option<String>,
    /// `pref64-reserve`, such as `1G`.
    pub pref64_reserve: Option<String>,
    /// `io-reserve`, such as `4K` or `0`.
    pub io_reserve: Option<String>,
    /// `bus-reserve`.
    pub bus_reserve: Option<u32>,
}

impl PcieRootPort {
    pub(crate) fn render(&self) -> String {
        head(
            "pcie-root-port",
            Some(&self.id),
            self.bus.as_deref(),
            self.addr.as_deref(),
        )
        .num("chassis", self.chassis)
        .num("slot", self.slot)
        .opt_num("port", self.port)
        .opt_flag("multifunction", self.multifunction)
        .opt("mem-reserve", self.mem_reserve.as_deref())
        .opt("pref64-reserve", self.pref64_reserve.as_deref())
        .opt("io-reserve", self.io_reserve.as_deref())
        .opt_num("bus-reserve", self.bus_reserve)
        .finish()
    }
}

/// `pcie-pci-bridge`: a PCIe-to-PCI bridge; provides bus `<id>`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PciePciBridge {
    /// Device id, also the name of the bus it provides.
    pub id: String,
    /// Parent bus.
    pub bus: Option<String>,
    /// PCI address on the parent bus.
    pub addr: Option<String>,
}

impl PciePciBridge {
    pub(crate) fn render(&self) -> String {
        head(
            "pcie-pci-bridge",
            Some(&self.id),
            self.bus.as_deref(),
            self.addr.as_deref(),
        )
        .finish()
    }
}

/// `vfio-pci`: a host PCI device, given by `host` or `sysfsdev` (exactly one).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct VfioPci {
    /// Device id.
    pub id: String,
    /// Host address, such as `0000:01:00.0`.
    pub host: Option<String>,
    /// Sysfs path, such as `/sys/bus/mdev/devices/<uuid>`.
    pub sysfsdev: Option<String>,
    /// Bus.
    pub bus: Option<String>,
    /// PCI address.
    pub addr: Option<String>,
    /// `romfile=` (`Some("")` disables the option ROM).
    pub romfile: Option<String>,
}

impl VfioPci {
    pub(crate) fn render(&self) -> String {
        head(
            "vfio-pci",
            Some(&self.id),
            self.bus.as_deref(),
            self.addr.as_deref(),
        )
        .opt("host", self.host.as_deref())
        .opt("sysfsdev", self.sysfsdev.as_deref())
        .opt("romfile", self.romfile.as_deref())
        .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bridges_render() {
        let b = PciBridge {
            id: "pci-bridge-0".into(),
            bus: Some("pcie.0".into()),
            chassis_nr: 1,
            shpc: true,
            addr: Some("2".into()),
        };
        assert_eq!(
            b.render(),
            "pci-bridge,id=pci-bridge-0,bus=pcie.0,addr=2,chassis_nr=1,shpc=on"
        );
        let r = PcieRootPort {
            id: "rp0".into(),
            bus: Some("pcie.0".into()),
            chassis: 0,
            slot: 1,
            mem_reserve: Some("32M".into()),
            pref64_reserve: Some("1G".into()),
            ..Default::default()
        };
        assert_eq!(
            r.render(),
            "pcie-root-port,id=rp0,bus=pcie.0,chassis=0,slot=1,mem-reserve=32M,pref64-reserve=1G"
        );
        let p = PciePciBridge {
            id: "pb".into(),
            bus: Some("rp0".into()),
            addr: None,
        };
        assert_eq!(p.render(), "pcie-pci-bridge,id=pb,bus=rp0");
    }

    #[test]
    fn vfio_renders() {
        let v = VfioPci {
            id: "vfio0".into(),
            host: Some("0000:01:00.0".into()),
            bus: Some("rp0".into()),
            romfile: Some(String::new()),
            ..Default::default()
        };
        assert_eq!(
            v.render(),
            "vfio-pci,id=vfio0,bus=rp0,host=0000:01:00.0,romfile="
        );
    }
}
