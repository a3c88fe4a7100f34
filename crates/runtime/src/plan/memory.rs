//! Guest memory: the `-m` topology, the boot memory backend (Kata's rules),
//! and the nvdimm image's share of `maxmem`.

use super::Layout;
use super::arch::ArchLayout;
use crate::config::numa::render_set;
use crate::config::{AgentChannel, HypervisorConfig};
use qemu_config::{Memory, NumaNode, Object};

/// Id of the boot memory backend when memory is file-backed.
pub const MEM_BACKEND_ID: &str = "dimm1";
/// Where hugepage-backed memory lives (Kata's).
pub const HUGEPAGES_DIR: &str = "/dev/hugepages";
/// Where shared memory lives when there is no file backend (Kata's fallback).
pub const SHM_DIR: &str = "/dev/shm";
/// nvdimm alignment QEMU needs for the backing file, MiB.
pub const NVDIMM_ALIGN_MIB: u64 = 2;

fn round_up(v: u64, to: u64) -> u64 {
    v.div_ceil(to) * to
}

/// MiB an nvdimm backed by an image of `image_size` bytes takes.
pub fn nvdimm_mib(image_size: Option<u64>) -> u64 {
    round_up(image_size.unwrap_or(0).div_ceil(1 << 20), NVDIMM_ALIGN_MIB)
}

/// maxmem in MiB: default_maxmemory + memory_offset + the nvdimm reserve,
/// aligned for the arch, never below the boot memory.
pub fn max_memory_mib(cfg: &HypervisorConfig, arch: &ArchLayout, nvdimm_mib: u64) -> u64 {
    let max = cfg.max_memory_mib + cfg.memory_offset_mib + nvdimm_mib;
    let a = arch.maxmem_align_mib.max(1);
    (max / a * a).max(cfg.memory_mib)
}

/// `-m`: boot memory, and the hotplug range when there is room above it.
/// No room (default_maxmemory = default_memory and no nvdimm, or ppc64le's
/// alignment ate it): no hotplug range, and no slots, which QEMU refuses
/// without one.
pub fn topology(cfg: &HypervisorConfig, layout: &Layout) -> Memory {
    if layout.maxmem_mib > cfg.memory_mib {
        Memory {
            size_mib: cfg.memory_mib,
            slots: Some(cfg.memory_slots),
            maxmem_mib: Some(layout.maxmem_mib),
        }
    } else {
        Memory::new(cfg.memory_mib)
    }
}

/// Whether another process maps guest memory (virtiofsd, nydusd, a
/// vhost-user daemon such as vhost-device-vsock): then memory is shared.
/// virtio-9p is served inside QEMU and needs none.
pub fn shared(cfg: &HypervisorConfig, agent: Option<AgentChannel>) -> bool {
    cfg.shared_fs.kind.has_daemon()
        || cfg.file_mem_backend.is_some()
        || cfg.vhost_user_store
        || agent == Some(AgentChannel::HybridVsock)
}

/// The boot memory backend, if the config needs one (Kata's rules):
/// hugepages win, then a file backend, then `/dev/shm` when another process
/// maps guest memory; `share=on` whenever one does.
pub fn backend(cfg: &HypervisorConfig, agent: Option<AgentChannel>) -> Option<Object> {
    backend_of(cfg, agent, MEM_BACKEND_ID, cfg.memory_mib)
}

/// [`backend`]'s choice for `size_mib` of memory, as object `id`.
fn backend_of(
    cfg: &HypervisorConfig,
    agent: Option<AgentChannel>,
    id: &str,
    size_mib: u64,
) -> Option<Object> {
    let share = shared(cfg, agent);
    let mem_path = if cfg.hugepages {
        Some(HUGEPAGES_DIR.to_string())
    } else if let Some(p) = &cfg.file_mem_backend {
        Some(p.display().to_string())
    } else if share {
        Some(SHM_DIR.to_string())
    } else {
        None
    };
    match mem_path {
        Some(mem_path) => Some(Object::MemoryBackendFile {
            id: id.into(),
            size_mib,
            mem_path,
            share: share.then_some(true),
            prealloc: cfg.mem_prealloc || cfg.hugepages,
            readonly: None,
            discard_data: None,
            align: None,
        }),
        None if cfg.mem_prealloc => Some(Object::MemoryBackendRam {
            id: id.into(),
            size_mib,
            share: None,
            prealloc: true,
        }),
        None => None,
    }
}

/// Id of guest NUMA node `n`'s memory backend.
pub fn numa_backend_id(n: usize) -> String {
    format!("numa-mem{n}")
}

/// `enable_numa`: a memory backend per guest node, bound (`policy=bind`) to
/// its host nodes, of the same kind [`backend`] would pick for the whole
/// memory (file-backed and shared when another process maps guest memory,
/// hugepages, preallocated), and the `-numa node` that uses it. The boot
/// memory is split evenly, the last node taking the remainder; the
/// possible vCPUs (`default_maxvcpus`) in contiguous ranges, the first
/// nodes taking one more when they do not divide evenly.
pub fn numa(cfg: &HypervisorConfig, agent: Option<AgentChannel>) -> (Vec<Object>, Vec<NumaNode>) {
    let n = cfg.numa.len() as u64;
    let base = cfg.memory_mib / n;
    let cpus = u64::from(cfg.max_vcpus);
    let mut next_cpu = 0u64;
    let mut objects = Vec::new();
    let mut nodes = Vec::new();
    for (i, hosts) in cfg.numa.iter().enumerate() {
        let last = i as u64 + 1 == n;
        let size = if last {
            cfg.memory_mib - base * (n - 1)
        } else {
            base
        };
        let id = numa_backend_id(i);
        objects.push(numa_object(cfg, agent, &id, size, *hosts));
        let take = cpus / n + u64::from((i as u64) < cpus % n);
        let range = match take {
            1 => format!("{next_cpu}"),
            t => format!("{next_cpu}-{}", next_cpu + t - 1),
        };
        next_cpu += take;
        nodes.push(NumaNode {
            nodeid: Some(i as u32),
            memdev: Some(id),
            cpus: Some(range),
        });
    }
    (objects, nodes)
}

/// One node's backend: [`backend_of`] for `size_mib` under `id`, with
/// `host-nodes` (one property per range) and `policy=bind` added.
fn numa_object(
    cfg: &HypervisorConfig,
    agent: Option<AgentChannel>,
    id: &str,
    size_mib: u64,
    hosts: u64,
) -> Object {
    let mut props = vec![("size".to_string(), format!("{size_mib}M"))];
    let qom_type = match backend_of(cfg, agent, id, size_mib) {
        Some(Object::MemoryBackendFile {
            mem_path,
            share,
            prealloc,
            ..
        }) => {
            props.push(("mem-path".into(), mem_path));
            if share == Some(true) {
                props.push(("share".into(), "on".into()));
            }
            if prealloc {
                props.push(("prealloc".into(), "on".into()));
            }
            "memory-backend-file"
        }
        Some(Object::MemoryBackendRam { prealloc: true, .. }) => {
            props.push(("prealloc".into(), "on".into()));
            "memory-backend-ram"
        }
        _ => "memory-backend-ram",
    };
    for range in render_set(hosts).split(',') {
        props.push(("host-nodes".into(), range.to_string()));
    }
    props.push(("policy".into(), "bind".into()));
    Object::Other {
        qom_type: qom_type.into(),
        id: id.into(),
        props,
    }
}
