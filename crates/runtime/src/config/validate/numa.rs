//! `enable_numa` and `numa_mapping`: the guest's NUMA nodes and the host
//! nodes each one's memory is bound to.
//!
//! Each entry of `numa_mapping` is one guest node, written as the host nodes
//! its memory may come from (`"0"`, `"0-1"`, `"0,2"`). With `enable_numa`
//! and no mapping, the guest gets one node per online host node, bound to
//! it. The boot memory is split evenly across the guest nodes (the last
//! takes the remainder) and the vCPUs in contiguous ranges.

use super::{Ctx, k};
use crate::config::raw::RawQemu;
use crate::config::{ConfigError, HostInfo};

/// Most NUMA nodes sandvm addresses (host and guest): the bits of a `u64`.
pub const MAX_NODES: u32 = 64;

/// A host node set (`0`, `0-3`, `0,2-3`) as a bit mask; the reason when it
/// is not one.
pub fn node_set(text: &str) -> Result<u64, String> {
    let mut mask = 0u64;
    for part in text.split(',') {
        let (a, b) = match part.split_once('-') {
            Some((a, b)) => (a, b),
            None => (part, part),
        };
        let num = |s: &str| {
            s.trim()
                .parse::<u32>()
                .ok()
                .filter(|n| *n < MAX_NODES)
                .ok_or_else(|| {
                    format!("{part:?} is not a node number below {MAX_NODES} or a range N-M")
                })
        };
        let (a, b) = (num(a)?, num(b)?);
        if a > b {
            return Err(format!("{part:?} is a range whose start is above its end"));
        }
        (a..=b).for_each(|n| mask |= 1 << n);
    }
    Ok(mask)
}

/// The nodes of a mask, as `0-1,3`.
pub fn render_set(mask: u64) -> String {
    let mut out: Vec<String> = Vec::new();
    let mut n = 0;
    while n < MAX_NODES {
        if mask & (1 << n) == 0 {
            n += 1;
            continue;
        }
        let start = n;
        while n + 1 < MAX_NODES && mask & (1 << (n + 1)) != 0 {
            n += 1;
        }
        out.push(if start == n {
            format!("{n}")
        } else {
            format!("{start}-{n}")
        });
        n += 1;
    }
    out.join(",")
}

/// The guest's NUMA nodes, each as the mask of host nodes its memory is
/// bound to; empty when NUMA is off. `max_vcpus` and `memory_mib` bound the
/// node count (each node gets a vCPU and a MiB at least).
pub(super) fn check(
    cx: &Ctx<'_>,
    raw: &RawQemu,
    host: &HostInfo,
    max_vcpus: u32,
    memory_mib: u64,
) -> Result<Vec<u64>, ConfigError> {
    let mapping = raw.numa_mapping.as_deref().unwrap_or_default();
    if !raw.enable_numa.unwrap_or(false) {
        if !mapping.is_empty() {
            return Err(cx.err(&k("numa_mapping"), "is set but enable_numa is not true"));
        }
        return Ok(Vec::new());
    }
    let nodes: Vec<u64> = if mapping.is_empty() {
        (0..MAX_NODES)
            .filter(|n| host.numa_nodes & (1 << n) != 0)
            .map(|n| 1 << n)
            .collect()
    } else {
        let mut v = Vec::new();
        for (i, entry) in mapping.iter().enumerate() {
            let key = format!("{}[{i}]", k("numa_mapping"));
            let mask = node_set(entry).map_err(|why| cx.err(&key, why))?;
            let offline = mask & !host.numa_nodes;
            if offline != 0 {
                return Err(cx.err(
                    &key,
                    format!(
                        "host node(s) {} not online on this host (online: {})",
                        render_set(offline),
                        render_set(host.numa_nodes)
                    ),
                ));
            }
            v.push(mask);
        }
        v
    };
    let count = nodes.len();
    if count as u64 > u64::from(max_vcpus) || count as u64 > memory_mib {
        return Err(cx.err(
            &k("numa_mapping"),
            format!(
                "{count} guest nodes need at least {count} vCPUs (default_maxvcpus is {max_vcpus}) and {count} MiB"
            ),
        ));
    }
    Ok(nodes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_sets_parse_and_render() {
        assert_eq!(node_set("0"), Ok(1));
        assert_eq!(node_set("0-2,5"), Ok(0b100111));
        assert_eq!(render_set(0b100111), "0-2,5");
        assert_eq!(render_set(1 << 63), "63");
        for bad in ["", "a", "2-1", "64", "0-", "-1", "0,,1"] {
            assert!(node_set(bad).is_err(), "{bad:?}");
        }
    }
}
