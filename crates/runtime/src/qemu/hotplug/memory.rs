//! Memory: virtio-mem (with `enable_virtio_mem`) or pc-dimms.
//!
//! virtio-mem: at start, `object-add` a backend of (maxmem − memory), rounded
//! down to 4 MiB, with the boot memory's share/file/hugepage policy, then
//! `device_add` `virtio-mem-pci` on a bridge slot (`virtio-mem-ccw` on
//! s390x) with `requested-size=0`. A resize sets `requested-size` with
//! `qom-set` and waits for `MEMORY_DEVICE_SIZE_CHANGE` (and reads `size`
//! every [`SIZE_POLL`] between events, which QEMU throttles to one a second)
//! until `size` reaches the request or [`RESIZE_TIMEOUT`] passes; it reports
//! what was reached.
//!
//! pc-dimm: one dimm per grow, in blocks of the guest's memory block size,
//! bounded by `memory_slots` and maxmem. Shrinking is not supported.

use super::{Plan, PluggedDevice, QmpCall, Step, VirtioMemState, overcommit_help, run_steps};
use crate::config::{GuestArch, HypervisorConfig};
use crate::error::{HypervisorError, Result};
use crate::plan::Layout;
use crate::plan::arch::ArchLayout;
use crate::plan::memory::{HUGEPAGES_DIR, SHM_DIR, shared};
use crate::qemu::core::Core;
use crate::types::{DeviceKind, MemoryDevice, MemoryReport};
use qemu_config::Transport;
use serde_json::{Map, Value, json};
use std::time::Duration;
use tracing::{info, warn};

/// Device id of the virtio-mem device.
pub const VIRTIO_MEM_ID: &str = "vmem0";
/// Id of its memory backend.
pub const VIRTIO_MEM_BACKEND: &str = "vmem0-mem";
/// virtio-mem backends are sized in multiples of this, MiB (Kata's).
pub const VIRTIO_MEM_ALIGN_MIB: u64 = 4;
/// How long a resize waits for the guest to reach the requested size.
pub const RESIZE_TIMEOUT: Duration = Duration::from_secs(90);
/// How often a virtio-mem resize reads the device's `size` between events.
pub const SIZE_POLL: Duration = Duration::from_millis(50);

/// The guest's memory block size in MiB: pc-dimms are sized in these.
pub fn memory_block_mib(arch: GuestArch) -> u64 {
    match arch {
        GuestArch::Ppc64le => 256,
        _ => 128,
    }
}

/// The virtio-mem region, MiB: (limit − boot memory) rounded down to 4 MiB.
pub fn virtio_mem_region_mib(cfg: &HypervisorConfig, layout: &Layout) -> u64 {
    let r = layout.memory_limit_mib.saturating_sub(cfg.memory_mib);
    r / VIRTIO_MEM_ALIGN_MIB * VIRTIO_MEM_ALIGN_MIB
}

/// A memory backend of `size_mib` with the boot memory's policy: hugepages,
/// then a file backend, then `/dev/shm` for a shared fs; `share=on` when
/// another process maps guest memory. Returns (qom-type, properties).
pub fn backend(
    cfg: &HypervisorConfig,
    agent: Option<crate::config::AgentChannel>,
    size_mib: u64,
    prealloc: bool,
) -> (&'static str, Map<String, Value>) {
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
    let mut m = Map::new();
    m.insert("size".into(), (size_mib << 20).into());
    if share {
        m.insert("share".into(), true.into());
    }
    if prealloc {
        m.insert("prealloc".into(), true.into());
    }
    match mem_path {
        Some(p) => {
            m.insert("mem-path".into(), p.into());
            ("memory-backend-file", m)
        }
        None => ("memory-backend-ram", m),
    }
}

/// The steps that add the virtio-mem device (bus and addr added by the caller).
pub fn virtio_mem_steps(
    cfg: &HypervisorConfig,
    agent: Option<crate::config::AgentChannel>,
    arch: &ArchLayout,
    region_mib: u64,
) -> Vec<Step> {
    let (qom, props) = backend(cfg, agent, region_mib, false);
    let driver = if arch.transport == Transport::Ccw {
        "virtio-mem-ccw"
    } else {
        "virtio-mem-pci"
    };
    let mut dev = Map::new();
    dev.insert("memdev".into(), VIRTIO_MEM_BACKEND.into());
    dev.insert("requested-size".into(), 0.into());
    vec![
        Step::new(
            QmpCall::object_add(qom, VIRTIO_MEM_BACKEND, props),
            Some(QmpCall::new(
                "object-del",
                json!({ "id": VIRTIO_MEM_BACKEND }),
            )),
        ),
        Step::device(driver, VIRTIO_MEM_ID, dev),
    ]
}

/// Add `what`'s error text and, when the host refused memory, Kata's overcommit advice.
fn memory_error(what: String, e: HypervisorError) -> HypervisorError {
    let help = match &e {
        HypervisorError::Qmp { source, .. } => overcommit_help(source),
        _ => None,
    };
    HypervisorError::OutOfRange {
        what,
        reason: match help {
            Some(h) => format!("{e}; {h}"),
            None => e.to_string(),
        },
    }
}

impl Core {
    /// With `enable_virtio_mem`: add the virtio-mem device (called by start).
    pub(crate) async fn hp_setup_virtio_mem(&mut self) -> Result<()> {
        if !self.config.virtio_mem
            || self
                .state
                .as_ref()
                .is_some_and(|s| s.hotplug.virtio_mem.is_some())
        {
            return Ok(());
        }
        let cfg = self.config.clone();
        let st = self.record_mut("set up virtio-mem")?;
        let (layout, agent) = (st.layout.clone(), st.agent.as_ref().map(|a| a.kind));
        let arch = &layout.arch;
        if arch.transport == Transport::Mmio {
            return Err(HypervisorError::unsupported(
                "set up virtio-mem (hypervisor.qemu.enable_virtio_mem)",
                format!("machine {} has no PCI or CCW", cfg.machine_type),
            ));
        }
        let region = virtio_mem_region_mib(&cfg, &layout);
        if region == 0 {
            return Err(HypervisorError::OutOfRange {
                what: "set up virtio-mem (hypervisor.qemu.enable_virtio_mem)".into(),
                reason: "default_maxmemory must be above default_memory".into(),
            });
        }
        let mut plan = Plan {
            record: PluggedDevice {
                id: VIRTIO_MEM_ID.into(),
                kind: DeviceKind::Dimm,
                driver: String::new(),
                slot: None,
                info: Map::new(),
                placement: None,
                remove: Vec::new(),
                add: Vec::new(),
            },
            steps: virtio_mem_steps(&cfg, agent, arch, region),
            fd: None,
            needs_slot: arch.transport == Transport::Pci,
        };
        let slot = if plan.needs_slot {
            let st = self.record_mut("set up virtio-mem")?;
            let s = st.pci.allocate(VIRTIO_MEM_ID)?;
            plan.place(&s);
            Some(s)
        } else {
            None
        };
        let c = self.qmp().await?.clone();
        if let Err(e) = run_steps(&c, &plan.steps, None).await {
            self.release_slot(VIRTIO_MEM_ID);
            return Err(memory_error(
                format!("Adding {region} MiB of virtio-mem failed"),
                e,
            ));
        }
        self.record_mut("set up virtio-mem")?.hotplug.virtio_mem = Some(VirtioMemState {
            id: VIRTIO_MEM_ID.into(),
            memdev: VIRTIO_MEM_BACKEND.into(),
            region_mib: region,
            requested_mib: 0,
            size_mib: 0,
            slot,
        });
        self.save()?;
        info!(region_mib = region, "virtio-mem ready");
        Ok(())
    }

    /// Resize guest memory to `mib` in all; reports what was reached.
    pub(crate) async fn hp_resize_memory(&mut self, mib: u64) -> Result<MemoryReport> {
        self.require_running("resize memory")?;
        let vm = self
            .state
            .as_ref()
            .and_then(|s| s.hotplug.virtio_mem.clone());
        let (total_mib, device) = match vm {
            Some(vm) => (
                self.resize_virtio_mem(vm, mib).await?,
                MemoryDevice::VirtioMem,
            ),
            None => (self.grow_dimm(mib).await?, MemoryDevice::PcDimm),
        };
        Ok(MemoryReport {
            requested_mib: mib,
            total_mib,
            device,
        })
    }

    async fn resize_virtio_mem(&mut self, vm: VirtioMemState, mib: u64) -> Result<u64> {
        let boot = self.config.memory_mib;
        if mib < boot || mib - boot > vm.region_mib {
            return Err(HypervisorError::OutOfRange {
                what: format!("resize memory to {mib} MiB"),
                reason: format!(
                    "must be {boot} (default_memory) to {} (default_maxmemory)",
                    boot + vm.region_mib
                ),
            });
        }
        let c = self.qmp().await?.clone();
        let path = format!("/machine/peripheral/{}", vm.id);
        let block = c
            .qom_get(&path, "block-size")
            .await
            .ok()
            .and_then(|v| v.as_u64())
            .filter(|b| *b > 0)
            .unwrap_or(2 << 20);
        let want = ((mib - boot) << 20).div_ceil(block) * block;
        let want = want.min(vm.region_mib << 20);
        // Subscribe before asking, so the event cannot be missed.
        let mut events = c.events();
        let size_now = |v: Value| v.as_u64().unwrap_or(0);
        let mut size = size_now(
            c.qom_get(&path, "size")
                .await
                .map_err(HypervisorError::qmp("qom-get size"))?,
        );
        c.qom_set(&path, "requested-size", want.into())
            .await
            .map_err(HypervisorError::qmp("qom-set requested-size"))?;
        let deadline = tokio::time::Instant::now() + RESIZE_TIMEOUT;
        // QEMU sends at most one MEMORY_DEVICE_SIZE_CHANGE per second per
        // device, so the event that reports the final size can come up to a
        // second after the guest got there; between events, `size` is read
        // every SIZE_POLL (one cheap QMP call).
        let mut poll = tokio::time::interval_at(tokio::time::Instant::now() + SIZE_POLL, SIZE_POLL);
        poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        while size != want {
            tokio::select! {
                _ = tokio::time::sleep_until(deadline) => {
                    warn!(
                        want,
                        size, "virtio-mem did not reach the requested size in time"
                    );
                    break;
                }
                _ = poll.tick() => {
                    size = size_now(
                        c.qom_get(&path, "size")
                            .await
                            .map_err(HypervisorError::qmp("qom-get size"))?,
                    );
                }
                ev = events.recv() => match ev {
                    Ok(ev) => {
                        if ev.name == "MEMORY_DEVICE_SIZE_CHANGE"
                            && ev.data_str("id") == Some(vm.id.as_str())
                        {
                            size = ev.data.get("size").and_then(Value::as_u64).unwrap_or(size);
                        }
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {
                        size = size_now(
                            c.qom_get(&path, "size")
                                .await
                                .map_err(HypervisorError::qmp("qom-get size"))?,
                        );
                    }
                    Err(_) => {
                        return Err(HypervisorError::Qmp {
                            op: "virtio-mem resize",
                            source: qmp::Error::Disconnected,
                        });
                    }
                },
            }
        }
        let size = size_now(
            c.qom_get(&path, "size")
                .await
                .map_err(HypervisorError::qmp("qom-get size"))?,
        );
        if let Some(v) = self
            .record_mut("resize memory")?
            .hotplug
            .virtio_mem
            .as_mut()
        {
            v.requested_mib = want >> 20;
            v.size_mib = size >> 20;
        }
        self.save()?;
        let reached = boot + (size >> 20);
        info!(requested = mib, reached, "memory resized (virtio-mem)");
        Ok(reached)
    }

    async fn grow_dimm(&mut self, mib: u64) -> Result<u64> {
        let cfg = self.config.clone();
        let st = self.record_mut("resize memory")?;
        let (hp, layout) = (st.hotplug.clone(), st.layout.clone());
        let agent = st.agent.as_ref().map(|a| a.kind);
        let cur = cfg.memory_mib + hp.dimm_mib();
        if mib == cur {
            return Ok(cur);
        }
        if mib < cur {
            return Err(HypervisorError::unsupported(
                format!("shrink memory to {mib} MiB"),
                "pc-dimm memory only grows; set enable_virtio_mem to shrink",
            ));
        }
        let blk = memory_block_mib(cfg.guest_arch);
        let add = (mib - cur).div_ceil(blk) * blk;
        let limit = layout.memory_limit_mib;
        if cur + add > limit {
            return Err(HypervisorError::OutOfRange {
                what: format!("grow memory to {mib} MiB"),
                reason: format!(
                    "{} MiB in {blk} MiB blocks would exceed maxmem ({limit} MiB; default_maxmemory)",
                    cur + add
                ),
            });
        }
        let used = hp
            .devices
            .iter()
            .filter(|d| matches!(d.kind, DeviceKind::Dimm | DeviceKind::Nvdimm))
            .count()
            + usize::from(layout.image_on_nvdimm);
        if used >= cfg.memory_slots as usize {
            return Err(HypervisorError::OutOfRange {
                what: "add a pc-dimm".into(),
                reason: format!(
                    "all {} memory slots are used; raise hypervisor.qemu.memory_slots",
                    cfg.memory_slots
                ),
            });
        }
        let id = hp.next_id("dimm");
        let mem = format!("mem-{id}");
        let (qom, props) = backend(&cfg, agent, add, cfg.mem_prealloc || cfg.hugepages);
        let mut dev = Map::new();
        dev.insert("memdev".into(), mem.clone().into());
        let steps = vec![
            Step::new(
                QmpCall::object_add(qom, &mem, props),
                Some(QmpCall::new("object-del", json!({ "id": mem }))),
            ),
            Step::device("pc-dimm", &id, dev),
        ];
        let c = self.qmp().await?.clone();
        let removal = run_steps(&c, &steps, None)
            .await
            .map_err(|e| memory_error(format!("Adding a {add} MiB pc-dimm failed"), e))?;
        let mut info = Map::new();
        info.insert("size_mib".into(), add.into());
        self.record_mut("resize memory")?
            .hotplug
            .devices
            .push(PluggedDevice {
                id: id.clone(),
                kind: DeviceKind::Dimm,
                driver: "pc-dimm".into(),
                slot: None,
                info,
                placement: None,
                remove: removal,
                add: super::Replay::of(&steps),
            });
        self.save()?;
        info!(id, add_mib = add, "memory grown (pc-dimm)");
        Ok(cur + add)
    }
}
