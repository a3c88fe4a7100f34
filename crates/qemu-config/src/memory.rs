//! `-m` and `-numa`.

use serde::{Deserialize, Serialize};

use crate::escape::{OptList, mib};

/// QEMU's limit on memory hotplug slots (`ACPI_MAX_RAM_SLOTS`).
pub const MAX_RAM_SLOTS: u32 = 256;

/// `-m <size>M,slots=…,maxmem=…M`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Memory {
    /// Boot memory in MiB (greater than 0).
    pub size_mib: u64,
    /// Memory hotplug slots (at most [`MAX_RAM_SLOTS`]; needs `maxmem_mib`).
    pub slots: Option<u32>,
    /// Maximum memory in MiB, including hotplugged memory.
    pub maxmem_mib: Option<u64>,
}

impl Memory {
    /// `size_mib` MiB, no hotplug.
    pub fn new(size_mib: u64) -> Self {
        Self {
            size_mib,
            slots: None,
            maxmem_mib: None,
        }
    }

    /// The `-m` value.
    pub fn render(&self) -> String {
        OptList::new(&mib(self.size_mib))
            .opt_num("slots", self.slots)
            .opt("maxmem", self.maxmem_mib.map(mib))
            .finish()
    }
}

/// `-numa node,nodeid=…,memdev=…,cpus=…`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NumaNode {
    /// NUMA node id.
    pub nodeid: Option<u32>,
    /// Memory backend object id for this node.
    pub memdev: Option<String>,
    /// CPU range, `N` or `N-M`.
    pub cpus: Option<String>,
}

impl NumaNode {
    /// The `-numa` value.
    pub fn render(&self) -> String {
        OptList::new("node")
            .opt_num("nodeid", self.nodeid)
            .opt("memdev", self.memdev.as_deref())
            .opt("cpus", self.cpus.as_deref())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_renders_mib() {
        let m = Memory {
            size_mib: 2048,
            slots: Some(10),
            maxmem_mib: Some(12288),
        };
        assert_eq!(m.render(), "2048M,slots=10,maxmem=12288M");
        assert_eq!(Memory::new(512).render(), "512M");
    }

    #[test]
    fn numa_node_renders() {
        let n = NumaNode {
            nodeid: Some(0),
            memdev: Some("dimm1".into()),
            cpus: Some("0-3".into()),
        };
        assert_eq!(n.render(), "node,nodeid=0,memdev=dimm1,cpus=0-3");
        assert_eq!(NumaNode::default().render(), "node");
    }
}
