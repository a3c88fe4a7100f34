//! CPUs, memory and buses: `default_vcpus`, `default_maxvcpus`,
//! `default_memory`, `default_maxmemory`, `memory_slots`, `memory_offset`,
//! `default_bridges`, `pcie_root_port`, `file_mem_backend`,
//! `enable_hugepages`, `enable_vhost_user_store`.

use super::{Ctx, bool_or, k};
use crate::config::raw::RawQemu;
use crate::config::{ConfigError, HostInfo};
use std::path::PathBuf;

/// Boot vCPUs when unset (Kata: 1).
pub const DEFAULT_VCPUS: u32 = 1;
/// Boot memory in MiB when unset (Kata: 2048).
pub const DEFAULT_MEMORY_MIB: u64 = 2048;
/// Memory hotplug slots when unset (Kata: 10).
pub const DEFAULT_MEMORY_SLOTS: u32 = 10;
/// PCI bridges when unset or 0 (Kata: 1).
pub const DEFAULT_BRIDGES: u32 = 1;
/// Most PCI bridges Kata allows.
pub const MAX_BRIDGES: u32 = 5;
/// QEMU's limit on memory slots (ACPI_MAX_RAM_SLOTS).
pub const MAX_MEMORY_SLOTS: u32 = 256;
/// Most vCPUs QEMU takes on any of our machines.
pub const MAX_VCPUS: u32 = 240;
/// Most MiB any memory key takes: 4 PiB, a 52-bit physical address space,
/// more than any host has. Keeps `maxmem`'s sum far from overflow.
pub const MAX_MEMORY_MIB: u64 = 1 << 32;
/// Most PCIe root ports.
pub const MAX_ROOT_PORTS: i64 = 32;

/// The resources section, checked.
pub(super) struct Resources {
    pub vcpus: u32,
    pub max_vcpus: u32,
    pub memory_mib: u64,
    pub max_memory_mib: u64,
    pub memory_slots: u32,
    pub memory_offset_mib: u64,
    pub bridges: u32,
    pub pcie_root_ports: u32,
    pub file_mem_backend: Option<PathBuf>,
    pub hugepages: bool,
    pub vhost_user_store: bool,
}

pub(super) fn check(
    cx: &Ctx<'_>,
    raw: &RawQemu,
    host: &HostInfo,
) -> Result<Resources, ConfigError> {
    let vcpus = cx.count(
        &k("default_vcpus"),
        raw.default_vcpus,
        DEFAULT_VCPUS,
        MAX_VCPUS,
    )?;
    let max_vcpus = cx.count(
        &k("default_maxvcpus"),
        raw.default_maxvcpus,
        host.cpus.clamp(1, MAX_VCPUS),
        MAX_VCPUS,
    )?;
    if vcpus > max_vcpus {
        return Err(cx.err(
            &k("default_vcpus"),
            format!("{vcpus} is more than default_maxvcpus ({max_vcpus})"),
        ));
    }
    let memory_mib = cx.mib(&k("default_memory"), raw.default_memory, DEFAULT_MEMORY_MIB)?;
    let max_memory_mib = cx.mib(&k("default_maxmemory"), raw.default_maxmemory, host.mem_mib)?;
    if memory_mib > max_memory_mib {
        return Err(cx.err(
            &k("default_memory"),
            format!("{memory_mib} MiB is more than default_maxmemory ({max_memory_mib} MiB)"),
        ));
    }
    let pcie_root_ports = match raw.pcie_root_port {
        None => 0,
        Some(n) if !(0..=MAX_ROOT_PORTS).contains(&n) => {
            return Err(cx.err(
                &k("pcie_root_port"),
                format!("must be 0 to {MAX_ROOT_PORTS} (got {n})"),
            ));
        }
        Some(n) => n as u32,
    };
    let file_mem_backend = cx.opt_path(&k("file_mem_backend"), &raw.file_mem_backend)?;
    if let Some(p) = &file_mem_backend {
        cx.allowed(
            &k("file_mem_backend"),
            &k("valid_file_mem_backends"),
            p,
            raw.valid_file_mem_backends.as_deref().unwrap_or(&[]),
        )?;
    }
    let hugepages = bool_or(raw.enable_hugepages, false);
    let vhost_user_store = bool_or(raw.enable_vhost_user_store, false);
    // Kata's check: vhost-user-blk/scsi daemons (SPDK) need shared hugepage memory.
    if vhost_user_store && !hugepages {
        return Err(cx.err(
            &k("enable_vhost_user_store"),
            "Vhost-user-blk/scsi is enabled without HugePages. This configuration will not work",
        ));
    }
    Ok(Resources {
        vcpus,
        max_vcpus,
        memory_mib,
        max_memory_mib,
        memory_slots: cx.count(
            &k("memory_slots"),
            raw.memory_slots,
            DEFAULT_MEMORY_SLOTS,
            MAX_MEMORY_SLOTS,
        )?,
        memory_offset_mib: cx.mib(&k("memory_offset"), raw.memory_offset, 0)?,
        bridges: cx.count(
            &k("default_bridges"),
            raw.default_bridges,
            DEFAULT_BRIDGES,
            MAX_BRIDGES,
        )?,
        pcie_root_ports,
        file_mem_backend,
        hugepages,
        vhost_user_store,
    })
}
