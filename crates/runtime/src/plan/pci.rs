//! Hotplug slots on the PCI bridges.
//!
//! Each `pci-bridge` (or, with firmware on x86_64, each `pcie-pci-bridge`)
//! offers [`SLOTS_PER_BRIDGE`] hotplug slots, numbered 1 to 30 as in Kata
//! (slot 0 is left to the bridge itself). The allocator hands a slot to a
//! device id and takes it back; it is saved in `state.json`, so a process
//! that reattaches to a running sandbox sees which slots are taken.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Hotplug slots per bridge (Kata's `pciBridgeMaxCapacity`).
pub const SLOTS_PER_BRIDGE: u32 = 30;

/// Errors of the slot allocator.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PciError {
    /// Every slot on every bridge is taken.
    #[error(
        "No free PCI slot for device {id}: all {slots} slots on {bridges} bridge(s) are taken; raise hypervisor.qemu.default_bridges (at most 5)"
    )]
    Exhausted {
        /// The device that asked.
        id: String,
        /// Bridges.
        bridges: usize,
        /// Slots in all.
        slots: usize,
    },
    /// The device id already holds a slot.
    #[error("Device {id} already holds PCI slot {slot} on {bridge}")]
    Duplicate {
        /// The device.
        id: String,
        /// Its bridge.
        bridge: String,
        /// Its slot.
        slot: u32,
    },
}

/// Where a device was put: the bridge (its bus id) and the slot on it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SlotAddr {
    /// Bus id of the bridge.
    pub bridge: String,
    /// Slot on that bridge (1..=30).
    pub slot: u32,
}

impl SlotAddr {
    /// The `addr=` value QEMU takes (hex slot).
    pub fn addr(&self) -> String {
        format!("{:x}", self.slot)
    }
}

/// One bridge and its taken slots (slot to device id).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BridgeSlots {
    /// Bus id of the bridge.
    pub id: String,
    /// Taken slots.
    pub taken: BTreeMap<u32, String>,
}

/// The hotplug slots of a sandbox.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SlotAllocator {
    /// The bridges, in the order slots are handed out.
    pub bridges: Vec<BridgeSlots>,
}

impl SlotAllocator {
    /// An allocator over bridges with these bus ids, every slot free.
    pub fn new<I: IntoIterator<Item = S>, S: Into<String>>(bridge_ids: I) -> SlotAllocator {
        SlotAllocator {
            bridges: bridge_ids
                .into_iter()
                .map(|id| BridgeSlots {
                    id: id.into(),
                    taken: BTreeMap::new(),
                })
                .collect(),
        }
    }

    /// Where `id` sits, if it holds a slot.
    pub fn find(&self, id: &str) -> Option<SlotAddr> {
        self.bridges.iter().find_map(|b| {
            b.taken
                .iter()
                .find(|(_, d)| d.as_str() == id)
                .map(|(s, _)| SlotAddr {
                    bridge: b.id.clone(),
                    slot: *s,
                })
        })
    }

    /// Give `id` the first free slot (first bridge first, lowest slot first).
    pub fn allocate(&mut self, id: &str) -> Result<SlotAddr, PciError> {
        if let Some(a) = self.find(id) {
            return Err(PciError::Duplicate {
                id: id.into(),
                bridge: a.bridge,
                slot: a.slot,
            });
        }
        for b in &mut self.bridges {
            if let Some(slot) = (1..=SLOTS_PER_BRIDGE).find(|s| !b.taken.contains_key(s)) {
                b.taken.insert(slot, id.to_string());
                return Ok(SlotAddr {
                    bridge: b.id.clone(),
                    slot,
                });
            }
        }
        Err(PciError::Exhausted {
            id: id.into(),
            bridges: self.bridges.len(),
            slots: self.bridges.len() * SLOTS_PER_BRIDGE as usize,
        })
    }

    /// Take `id`'s slot back (after an unplug or a failed hotplug).
    /// Returns where it was; `None` when it held none.
    pub fn release(&mut self, id: &str) -> Option<SlotAddr> {
        let a = self.find(id)?;
        for b in &mut self.bridges {
            if b.id == a.bridge {
                b.taken.remove(&a.slot);
            }
        }
        Some(a)
    }

    /// Free slots left in all.
    pub fn free(&self) -> usize {
        self.bridges
            .iter()
            .map(|b| SLOTS_PER_BRIDGE as usize - b.taken.len())
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hands_out_in_order_and_takes_back() {
        let mut a = SlotAllocator::new(["pci-bridge-0", "pci-bridge-1"]);
        assert_eq!(a.free(), 60);
        let s = a.allocate("d0").unwrap();
        assert_eq!(
            (s.bridge.as_str(), s.slot, s.addr()),
            ("pci-bridge-0", 1, "1".into())
        );
        assert_eq!(a.allocate("d1").unwrap().slot, 2);
        assert_eq!(a.release("d0").unwrap().slot, 1);
        assert_eq!(a.release("d0"), None);
        // The freed slot is reused first.
        assert_eq!(a.allocate("d2").unwrap().slot, 1);
        assert_eq!(a.find("d1").unwrap().slot, 2);
    }

    #[test]
    fn thirty_per_bridge_then_next_bridge_then_a_clear_error() {
        let mut a = SlotAllocator::new(["b0", "b1"]);
        for i in 0..30 {
            assert_eq!(a.allocate(&format!("x{i}")).unwrap().bridge, "b0");
        }
        let s = a.allocate("x30").unwrap();
        assert_eq!((s.bridge.as_str(), s.slot, s.addr()), ("b1", 1, "1".into()));
        for i in 31..60 {
            a.allocate(&format!("x{i}")).unwrap();
        }
        assert_eq!(a.free(), 0);
        let e = a.allocate("last").unwrap_err();
        assert_eq!(
            e,
            PciError::Exhausted {
                id: "last".into(),
                bridges: 2,
                slots: 60
            }
        );
        let msg = e.to_string();
        assert!(
            msg.contains("last") && msg.contains("default_bridges"),
            "{msg}"
        );
        // A failed hotplug gives its slot back, and the next one gets it.
        a.release("x45");
        assert_eq!(
            a.allocate("last").unwrap(),
            SlotAddr {
                bridge: "b1".into(),
                slot: 16
            }
        );
    }

    #[test]
    fn duplicates_and_no_bridges() {
        let mut a = SlotAllocator::new(["b0"]);
        a.allocate("d").unwrap();
        assert!(matches!(
            a.allocate("d"),
            Err(PciError::Duplicate { slot: 1, .. })
        ));
        let mut none = SlotAllocator::default();
        assert!(matches!(
            none.allocate("d"),
            Err(PciError::Exhausted { slots: 0, .. })
        ));
    }

    #[test]
    fn survives_a_json_round_trip() {
        let mut a = SlotAllocator::new(["b0"]);
        a.allocate("net0").unwrap();
        a.allocate("blk0").unwrap();
        let j = serde_json::to_string(&a).unwrap();
        let b: SlotAllocator = serde_json::from_str(&j).unwrap();
        assert_eq!(a, b);
        assert_eq!(b.find("blk0").unwrap().slot, 2);
    }
}
