//! `-machine`.

use serde::{Deserialize, Serialize};

use crate::escape::OptList;

/// `-machine <type>,accel=<accel>,<options…>`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Machine {
    /// Machine type: `q35`, `pc`, `virt`, `pseries`, `microvm`, `s390-ccw-virtio`, …
    pub machine_type: String,
    /// Accelerator(s), such as `kvm`, `tcg` or `kvm:tcg`.
    pub accel: Option<String>,
    /// Further machine properties, rendered in order (`nvdimm=on`, `gic-version=3`, …).
    pub options: Vec<(String, String)>,
}

/// The root buses a machine family provides.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RootBus {
    /// PCI Express root complex `pcie.0` (q35, arm virt).
    Pcie0,
    /// Conventional PCI root bus `pci.0` (pc/i440fx, pseries).
    Pci0,
    /// The s390 channel subsystem (`virtual-css`).
    VirtualCss,
    /// virtio-mmio transports only (`virtio-mmio-bus.N`, microvm).
    VirtioMmio,
    /// Unknown machine type: no root bus is assumed.
    Unknown,
}

impl Machine {
    /// A machine of the given type with no accelerator and no options.
    pub fn new(machine_type: impl Into<String>) -> Self {
        Self {
            machine_type: machine_type.into(),
            accel: None,
            options: Vec::new(),
        }
    }

    /// Set the accelerator.
    pub fn with_accel(mut self, accel: impl Into<String>) -> Self {
        self.accel = Some(accel.into());
        self
    }

    /// Append a `key=value` option (kept in order).
    pub fn option(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.options.push((key.into(), value.into()));
        self
    }

    fn on_off(self, key: &str, on: bool) -> Self {
        self.option(key, crate::escape::on_off(on))
    }

    /// `kernel_irqchip=on|off|split`.
    pub fn kernel_irqchip(self, mode: impl Into<String>) -> Self {
        self.option("kernel_irqchip", mode)
    }

    /// `gic-version=2|3|host|max` (arm virt).
    pub fn gic_version(self, version: impl Into<String>) -> Self {
        self.option("gic-version", version)
    }

    /// `memory-backend=<object id>`: back guest RAM with that memory backend.
    pub fn memory_backend(self, id: impl Into<String>) -> Self {
        self.option("memory-backend", id)
    }

    /// `nvdimm=on|off`.
    pub fn nvdimm(self, on: bool) -> Self {
        self.on_off("nvdimm", on)
    }

    /// `cap-<name>=<value>` (pseries capabilities, such as `cap("cfpc", "broken")`).
    pub fn cap(self, name: &str, value: impl Into<String>) -> Self {
        self.option(format!("cap-{name}"), value)
    }

    /// `x-option-roms=on|off` (microvm).
    pub fn x_option_roms(self, on: bool) -> Self {
        self.on_off("x-option-roms", on)
    }

    /// `pic=on|off` (microvm).
    pub fn pic(self, on: bool) -> Self {
        self.on_off("pic", on)
    }

    /// `pit=on|off` (microvm).
    pub fn pit(self, on: bool) -> Self {
        self.on_off("pit", on)
    }

    /// `rtc=on|off` (microvm).
    pub fn rtc(self, on: bool) -> Self {
        self.on_off("rtc", on)
    }

    /// `isa-serial=on|off` (microvm).
    pub fn isa_serial(self, on: bool) -> Self {
        self.on_off("isa-serial", on)
    }

    /// The value of the last option named `key`, if any.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.options
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// The kind of root bus this machine type provides.
    pub fn root_bus(&self) -> RootBus {
        let t = self.machine_type.as_str();
        if t == "q35" || t.starts_with("pc-q35") {
            RootBus::Pcie0
        } else if t == "pc" || t.starts_with("pc-i440fx") || t.starts_with("pc-") {
            RootBus::Pci0
        } else if t == "virt" || t.starts_with("virt-") {
            RootBus::Pcie0
        } else if t == "pseries" || t.starts_with("pseries-") {
            RootBus::Pci0
        } else if t == "microvm" {
            RootBus::VirtioMmio
        } else if t.starts_with("s390-ccw-virtio") {
            RootBus::VirtualCss
        } else {
            RootBus::Unknown
        }
    }

    /// Whether the machine provides a bus of this name.
    pub fn has_bus(&self, bus: &str) -> bool {
        match self.root_bus() {
            RootBus::Pcie0 => bus == "pcie.0",
            RootBus::Pci0 => bus == "pci.0",
            RootBus::VirtualCss => bus == "virtual-css",
            RootBus::VirtioMmio => bus
                .strip_prefix("virtio-mmio-bus.")
                .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit())),
            RootBus::Unknown => false,
        }
    }

    /// The `-machine` value.
    pub fn render(&self) -> String {
        OptList::new(&self.machine_type)
            .opt("accel", self.accel.as_deref())
            .pairs(&self.options)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_type_accel_and_options_in_order() {
        let m = Machine::new("q35")
            .with_accel("tcg")
            .nvdimm(true)
            .kernel_irqchip("split")
            .memory_backend("dimm1");
        assert_eq!(
            m.render(),
            "q35,accel=tcg,nvdimm=on,kernel_irqchip=split,memory-backend=dimm1"
        );
        assert_eq!(m.get("nvdimm"), Some("on"));
        assert_eq!(m.get("nope"), None);
    }

    #[test]
    fn helpers_render_known_options() {
        let m = Machine::new("microvm")
            .x_option_roms(false)
            .pit(false)
            .pic(false)
            .rtc(false)
            .isa_serial(false);
        assert_eq!(
            m.render(),
            "microvm,x-option-roms=off,pit=off,pic=off,rtc=off,isa-serial=off"
        );
        let p = Machine::new("pseries").cap("cfpc", "broken");
        assert_eq!(p.render(), "pseries,cap-cfpc=broken");
        assert_eq!(
            Machine::new("virt").gic_version("3").render(),
            "virt,gic-version=3"
        );
    }

    #[test]
    fn option_values_are_escaped() {
        let m = Machine::new("q35").option("dumpdtb", "/x,y");
        assert_eq!(m.render(), "q35,dumpdtb=/x,,y");
    }

    #[test]
    fn root_buses_by_machine_type() {
        assert!(Machine::new("q35").has_bus("pcie.0"));
        assert!(Machine::new("pc-q35-10.0").has_bus("pcie.0"));
        assert!(Machine::new("pc").has_bus("pci.0"));
        assert!(!Machine::new("pc").has_bus("pcie.0"));
        assert!(Machine::new("virt").has_bus("pcie.0"));
        assert!(Machine::new("pseries").has_bus("pci.0"));
        assert!(Machine::new("microvm").has_bus("virtio-mmio-bus.3"));
        assert!(!Machine::new("microvm").has_bus("pcie.0"));
        assert!(Machine::new("s390-ccw-virtio").has_bus("virtual-css"));
        assert!(!Machine::new("isapc2").has_bus("pci.0"));
    }
}
