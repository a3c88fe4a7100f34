//! From the checked config to a `qemu_config::Config` for one sandbox.
//!
//! Pure apart from what the caller measured (the image size); the runtime
//! then renders it with `to_args()`.

use super::arch::{self, Accel};
use crate::config::{BlockDriver, GuestArch, HypervisorConfig, SharedFs};
use crate::state::files;
use qemu_config::*;
use std::path::Path;

/// fd number QEMU finds the pre-bound QMP listener on.
pub const QMP_FD: i32 = 3;
/// Chardev id of the QMP monitor.
pub const QMP_ID: &str = "qmp";
/// Chardev id of the console.
pub const CONSOLE_CHARDEV: &str = "charconsole0";
/// Chardev id of the supervisor's events monitor.
pub const EVENTS_ID: &str = "events";

/// The QMP monitor on fd 3, and the supervisor's events monitor on fd 4
/// when the config needs a supervisor.
pub fn qmp_monitors(cfg: &HypervisorConfig) -> Vec<QmpMonitor> {
    let mut v = vec![QmpMonitor {
        id: QMP_ID.into(),
        socket: QmpSocket::Fd(QMP_FD),
    }];
    if crate::supervise::needed(cfg) {
        v.push(QmpMonitor {
            id: EVENTS_ID.into(),
            socket: QmpSocket::Fd(QMP_FD + 1),
        });
    }
    v
}

/// Id of the boot memory backend when memory is file-backed.
pub const MEM_BACKEND_ID: &str = "dimm1";
/// Id of the SCSI controller (Kata's).
pub const SCSI_ID: &str = "scsi0";
/// Where hugepage-backed memory lives (Kata's).
pub const HUGEPAGES_DIR: &str = "/dev/hugepages";
/// Where virtio-fs puts shared memory when there is no file backend (Kata's fallback).
pub const SHM_DIR: &str = "/dev/shm";
/// PCI slot of the first bridge on the root bus (Kata's `bridgePCIStartAddr`).
pub const BRIDGE_START_ADDR: u32 = 2;
/// First chassis number of `pcie_root_port` root ports (bridges take 1 to 5).
pub const ROOT_PORT_CHASSIS: u32 = 10;
/// `mem-reserve` hint on hotplug root ports.
pub const ROOT_PORT_MEM_RESERVE: &str = "4M";
/// `pref64-reserve` hint on hotplug root ports.
pub const ROOT_PORT_PREF64_RESERVE: &str = "2M";
/// `mem-reserve` on the root port above a nested bridge (Kata's bridge hints).
pub const BRIDGE_MEM_RESERVE: &str = "1M";
/// `pref64-reserve` on the root port above a nested bridge.
pub const BRIDGE_PREF64_RESERVE: &str = "1M";
/// `io-reserve` on the root port above a nested bridge.
pub const BRIDGE_IO_RESERVE: &str = "4K";
/// nvdimm alignment QEMU needs for the backing file, MiB.
const NVDIMM_ALIGN_MIB: u64 = 2;

/// What one sandbox's command line is made from.
#[derive(Debug, Clone)]
pub struct BuildInput<'a> {
    /// The checked config.
    pub cfg: &'a HypervisorConfig,
    /// Sandbox id.
    pub id: &'a str,
    /// VM UUID.
    pub uuid: &'a str,
    /// Sandbox folder.
    pub dir: &'a Path,
    /// Accelerator decided for this start.
    pub accel: Accel,
    /// Size of the root image in bytes, when there is one.
    pub image_size: Option<u64>,
}

fn s(p: &Path) -> String {
    p.display().to_string()
}

fn round_up(v: u64, to: u64) -> u64 {
    v.div_ceil(to) * to
}

/// Whether the image goes on nvdimm on this arch and config.
pub fn image_on_nvdimm(cfg: &HypervisorConfig, policy: &arch::ArchPolicy) -> bool {
    cfg.image.is_some() && !cfg.disable_image_nvdimm && policy.nvdimm_root_params.is_some()
}

/// The kernel command line: arch, console, root, generic, then the user's (last wins).
pub fn kernel_params(cfg: &HypervisorConfig, policy: &arch::ArchPolicy) -> String {
    let mut p: Vec<String> = policy.kernel_params.clone();
    let console = if cfg.use_legacy_serial {
        "ttyS0"
    } else {
        policy.console
    };
    p.push(format!("console={console}"));
    p.push(if cfg.debug {
        "debug".into()
    } else {
        "quiet".into()
    });
    if cfg.image.is_some() {
        let root = if image_on_nvdimm(cfg, policy) {
            policy.nvdimm_root_params.clone().unwrap_or_default()
        } else {
            policy.blk_root_params.clone()
        };
        p.extend(root);
        p.push(format!("rootfstype={}", cfg.rootfs_type.as_str()));
    }
    p.push("panic=1".into());
    p.push(format!("nr_cpus={}", cfg.max_vcpus));
    p.extend(cfg.kernel_params.iter().cloned());
    p.join(" ")
}

/// maxmem in MiB: default_maxmemory + memory_offset + the nvdimm reserve, aligned for the arch.
pub fn max_memory_mib(inp: &BuildInput<'_>, policy: &arch::ArchPolicy) -> u64 {
    let cfg = inp.cfg;
    let nvdimm = if image_on_nvdimm(cfg, policy) {
        round_up(
            inp.image_size.unwrap_or(0).div_ceil(1 << 20),
            NVDIMM_ALIGN_MIB,
        )
    } else {
        0
    };
    let max = cfg.max_memory_mib + cfg.memory_offset_mib + nvdimm;
    let a = policy.maxmem_align_mib.max(1);
    (max / a * a).max(cfg.memory_mib)
}

/// Build the QEMU invocation for one sandbox.
pub fn build(inp: &BuildInput<'_>) -> Config {
    let cfg = inp.cfg;
    let policy = arch::policy(cfg, inp.accel);
    let t = policy.transport;
    let nvdimm = image_on_nvdimm(cfg, &policy);
    let mut machine = policy.machine.clone();
    // nvdimm=on also when disks are hotplugged as nvdimms (block_device_driver = "nvdimm").
    if nvdimm || (cfg.block.driver == BlockDriver::Nvdimm && policy.nvdimm_root_params.is_some()) {
        machine = machine.nvdimm(true);
    }

    let mut objects = Vec::new();
    let mut devices = Vec::new();
    let mut chardevs = Vec::new();
    let mut devno = Devno::default();
    let mut globals: Vec<Global> = policy
        .globals
        .iter()
        .map(|(d, p, v)| Global::new(d, p, v))
        .collect();

    // Boot memory (Kata's rules): hugepages win, then a file backend or the
    // shared-memory folder virtio-fs needs; share=on whenever another process
    // (virtiofsd, a vhost-user daemon) maps guest memory.
    let backend = memory_backend(cfg);
    if let Some(o) = backend {
        objects.push(o);
        machine = machine.memory_backend(MEM_BACKEND_ID);
    }

    // PCI bridges, then root ports (Kata puts bridges first to get the first slots).
    devices.extend(bridge_devices(cfg, &policy));

    // Console: a virtconsole on a socket with a log, or the legacy serial port.
    chardevs.push(Chardev::Socket {
        id: CONSOLE_CHARDEV.into(),
        path: Some(s(&inp.dir.join(files::CONSOLE))),
        fd: None,
        server: true,
        wait: false,
        logfile: Some(s(&inp.dir.join(files::CONSOLE_LOG))),
        logappend: None,
    });
    let mut serials = Vec::new();
    if cfg.use_legacy_serial {
        serials.push(Serial {
            chardev: CONSOLE_CHARDEV.into(),
        });
    } else {
        devices.push(Device::VirtioSerial(VirtioSerial {
            transport: t,
            id: "serial0".into(),
            iommu_platform: cfg.iommu_platform,
            devno: devno.next(t),
            ..Default::default()
        }));
        devices.push(Device::VirtConsole(VirtConsole {
            id: "console0".into(),
            chardev: CONSOLE_CHARDEV.into(),
            name: None,
        }));
    }

    // virtio-fs: the daemon's vhost-user socket and vhost-user-fs (tag kataShared).
    if cfg.shared_fs.kind != SharedFs::None
        && let Some((c, d)) = super::daemons::vhost_user_fs(cfg, inp.dir, t, devno.next(t))
    {
        chardevs.push(c);
        devices.push(d);
    }

    // TPM: swtpm's control socket, the emulator backend and tpm-tis.
    let mut tpmdevs = Vec::new();
    if let Some((c, t, d)) = super::daemons::swtpm::qemu_parts(cfg, inp.dir) {
        chardevs.push(c);
        tpmdevs.push(t);
        devices.push(d);
    }

    // Root image on nvdimm.
    if let (true, Some(image)) = (nvdimm, &cfg.image) {
        let size_mib = round_up(
            inp.image_size.unwrap_or(0).div_ceil(1 << 20),
            NVDIMM_ALIGN_MIB,
        );
        objects.push(Object::MemoryBackendFile {
            id: "mem0".into(),
            size_mib,
            mem_path: s(image),
            share: Some(true),
            prealloc: false,
            readonly: Some(true),
            discard_data: None,
            align: None,
        });
        devices.push(Device::Nvdimm(Nvdimm {
            id: "nv0".into(),
            memdev: "mem0".into(),
            unarmed: true,
        }));
    }

    if cfg.iommu && t == Transport::Pci && cfg.guest_arch == crate::config::GuestArch::X86_64 {
        devices.push(Device::IntelIommu(IntelIommu {
            id: None,
            intremap: true,
            device_iotlb: true,
            caching_mode: true,
        }));
    }

    if cfg.guest_memory_dump_path.is_some() && cfg.guest_arch == crate::config::GuestArch::X86_64 {
        devices.push(Device::Pvpanic(Pvpanic {
            id: "pvpanic0".into(),
            ioport: None,
        }));
    }

    if policy.rng {
        objects.push(Object::RngRandom {
            id: "rng0".into(),
            filename: s(&cfg.entropy_source),
        });
        devices.push(Device::VirtioRng(VirtioRng {
            transport: t,
            id: "rng0-dev".into(),
            rng: "rng0".into(),
            iommu_platform: cfg.iommu_platform,
            devno: devno.next(t),
            ..Default::default()
        }));
    }

    if cfg.block.driver == BlockDriver::VirtioScsi && t != Transport::Mmio {
        let iothread = cfg.block.iothreads.then(|| "iothread-scsi0".to_string());
        if let Some(id) = &iothread {
            objects.push(Object::Iothread { id: id.clone() });
        }
        devices.push(Device::VirtioScsi(VirtioScsi {
            transport: t,
            id: SCSI_ID.into(),
            iothread,
            iommu_platform: cfg.iommu_platform,
            devno: devno.next(t),
            ..Default::default()
        }));
    }

    if cfg.reclaim_guest_freed_memory {
        devices.push(Device::VirtioBalloon(VirtioBalloon {
            transport: t,
            id: "balloon0".into(),
            free_page_reporting: true,
            deflate_on_oom: true,
            iommu_platform: cfg.iommu_platform,
            devno: devno.next(t),
            ..Default::default()
        }));
    }

    if cfg.iommu_platform {
        globals.push(Global::new("virtio-pci", "iommu_platform", "on"));
    }

    let mut netdevs = Vec::new();
    if !cfg.extras.port_map.is_empty()
        && let Some((netdev, nic)) = super::extras::user_net(cfg, t, inp.uuid, devno.next(t))
    {
        netdevs.push(netdev);
        devices.push(nic);
    }

    let smp = Smp {
        cpus: cfg.vcpus,
        sockets: Some(cfg.max_vcpus),
        dies: None,
        cores: Some(1),
        threads: Some(1),
        maxcpus: Some(cfg.max_vcpus),
    };
    // No room above boot memory (default_maxmemory = default_memory and no
    // nvdimm, or ppc64le's alignment ate it): no hotplug range, and no slots,
    // which QEMU refuses without one.
    let maxmem_mib = max_memory_mib(inp, &policy);
    let memory = if maxmem_mib > cfg.memory_mib {
        Memory {
            size_mib: cfg.memory_mib,
            slots: Some(cfg.memory_slots),
            maxmem_mib: Some(maxmem_mib),
        }
    } else {
        Memory::new(cfg.memory_mib)
    };

    let mut pflash = Vec::new();
    for (i, p) in cfg.pflashes.iter().enumerate() {
        pflash.push(Pflash {
            file: s(p),
            readonly: i == 0,
            unit: i as u32,
        });
    }
    // UEFI: firmware plus firmware_volume become the OVMF code (read-only)
    // and a per-sandbox copy of the vars, so the template is never written.
    let uefi = uefi_pflash(cfg, inp.dir);
    let bios = if uefi.is_empty() {
        cfg.firmware
            .as_deref()
            .map(s)
            .or_else(|| policy.default_bios.map(String::from))
    } else {
        pflash.extend(uefi);
        None
    };

    Config {
        name: Some(format!("sandbox-{}", inp.id)),
        uuid: Some(inp.uuid.to_string()),
        machine,
        cpu: policy.cpu_model.clone().map(|model| Cpu {
            model,
            features: cfg.cpu_features.clone(),
        }),
        smp,
        memory,
        numa: Vec::new(),
        objects,
        kernel: Some(Kernel {
            path: s(&cfg.kernel),
            initrd: cfg.initrd.as_deref().map(s),
            append: Some(kernel_params(cfg, &policy)),
        }),
        bios,
        pflash,
        fw_cfg: super::extras::fw_cfg(cfg),
        knobs: Knobs {
            no_user_config: true,
            nodefaults: true,
            nographic: true,
            no_reboot: true,
            ..Knobs::default()
        },
        rtc: (cfg.guest_arch == crate::config::GuestArch::X86_64
            && !policy.machine.machine_type.eq("microvm"))
        .then(Rtc::default),
        globals,
        pidfile: Some(s(&inp.dir.join(files::PIDFILE))),
        sandbox: cfg
            .seccomp_sandbox
            .as_deref()
            .and_then(|s| parse_sandbox(s).ok()),
        incoming: None,
        add_fds: Vec::new(),
        qmp: qmp_monitors(cfg),
        actions: if crate::supervise::needed(cfg) {
            // Keep a panicked guest until the supervisor has dumped it.
            vec![("panic".into(), "pause".into())]
        } else {
            Vec::new()
        },
        chardevs,
        serials,
        netdevs,
        devices,
        drives: Vec::new(),
        tpmdevs,
        extra_args: cfg.extras.extra_args.clone(),
    }
}

/// The sandbox's copy of the UEFI vars (made from `firmware_volume` at start).
pub const EFI_VARS: &str = "efivars.fd";

/// OVMF as two pflash drives: the code read-only, the sandbox's vars copy
/// writable. Empty unless both `firmware` and `firmware_volume` are set.
pub fn uefi_pflash(cfg: &HypervisorConfig, dir: &Path) -> Vec<Pflash> {
    match (&cfg.firmware, &cfg.firmware_volume) {
        (Some(code), Some(_)) => vec![
            Pflash {
                file: s(code),
                readonly: true,
                unit: 0,
            },
            Pflash {
                file: s(&dir.join(EFI_VARS)),
                readonly: false,
                unit: 1,
            },
        ],
        _ => Vec::new(),
    }
}

/// CCW device numbers (`fe.0.XXXX`, Kata's devno addressing on s390x), in
/// the order devices are added. Other transports get none.
#[derive(Debug, Default)]
struct Devno(u32);

impl Devno {
    fn next(&mut self, t: Transport) -> Option<String> {
        (t == Transport::Ccw).then(|| {
            let d = format!("fe.0.{:04x}", self.0);
            self.0 += 1;
            d
        })
    }
}

/// The boot memory backend, if the config needs one (Kata's rules).
pub fn memory_backend(cfg: &HypervisorConfig) -> Option<Object> {
    let shared_fs = cfg.shared_fs.kind != SharedFs::None;
    let share = shared_fs || cfg.file_mem_backend.is_some() || cfg.vhost_user_store;
    let mem_path = if cfg.hugepages {
        Some(HUGEPAGES_DIR.to_string())
    } else if let Some(p) = &cfg.file_mem_backend {
        Some(s(p))
    } else if shared_fs {
        Some(SHM_DIR.to_string())
    } else {
        None
    };
    match mem_path {
        Some(mem_path) => Some(Object::MemoryBackendFile {
            id: MEM_BACKEND_ID.into(),
            size_mib: cfg.memory_mib,
            mem_path,
            share: share.then_some(true),
            prealloc: cfg.mem_prealloc || cfg.hugepages,
            readonly: None,
            discard_data: None,
            align: None,
        }),
        None if cfg.mem_prealloc => Some(Object::MemoryBackendRam {
            id: MEM_BACKEND_ID.into(),
            size_mib: cfg.memory_mib,
            share: None,
            prealloc: true,
        }),
        None => None,
    }
}

/// Whether bridges are nested behind PCIe root ports: x86_64 q35 with
/// firmware, where the firmware does not reserve windows for a conventional
/// `pci-bridge` on the root complex (QEMU's docs/pcie.txt topology).
pub fn nested_bridges(cfg: &HypervisorConfig, policy: &arch::ArchPolicy) -> bool {
    cfg.guest_arch == GuestArch::X86_64
        && cfg.firmware.is_some()
        && policy.root_bus == Some("pcie.0")
}

/// Bus ids of the hotplug bridges, in order (what the slot allocator manages).
pub fn bridge_ids(cfg: &HypervisorConfig, policy: &arch::ArchPolicy) -> Vec<String> {
    if !policy.bridges || policy.root_bus.is_none() {
        return Vec::new();
    }
    (0..cfg.bridges)
        .map(|i| format!("pci-bridge-{i}"))
        .collect()
}

/// The bridge and root-port devices for this config and arch.
pub fn bridge_devices(cfg: &HypervisorConfig, policy: &arch::ArchPolicy) -> Vec<Device> {
    let mut devices = Vec::new();
    let Some(root) = policy.root_bus.filter(|_| policy.bridges) else {
        return devices;
    };
    let nested = nested_bridges(cfg, policy);
    for (i, id) in (0u32..).zip(bridge_ids(cfg, policy)) {
        let addr = Some(format!("{:x}", BRIDGE_START_ADDR + i));
        if nested {
            let rp = format!("{id}-rp");
            devices.push(Device::PcieRootPort(PcieRootPort {
                id: rp.clone(),
                bus: Some(root.to_string()),
                chassis: i + 1,
                slot: 0,
                addr,
                mem_reserve: Some(BRIDGE_MEM_RESERVE.into()),
                pref64_reserve: Some(BRIDGE_PREF64_RESERVE.into()),
                io_reserve: Some(BRIDGE_IO_RESERVE.into()),
                ..Default::default()
            }));
            devices.push(Device::PciePciBridge(PciePciBridge {
                id,
                bus: Some(rp),
                addr: None,
            }));
        } else {
            devices.push(Device::PciBridge(PciBridge {
                id,
                bus: Some(root.to_string()),
                chassis_nr: i + 1,
                shpc: true,
                addr,
            }));
        }
    }
    if root == "pcie.0" {
        for i in 0..cfg.pcie_root_ports {
            devices.push(Device::PcieRootPort(PcieRootPort {
                id: format!("rp{i}"),
                bus: Some(root.to_string()),
                chassis: ROOT_PORT_CHASSIS + i,
                slot: i,
                mem_reserve: Some(ROOT_PORT_MEM_RESERVE.into()),
                pref64_reserve: Some(ROOT_PORT_PREF64_RESERVE.into()),
                ..Default::default()
            }));
        }
    }
    devices
}

/// Parse Kata's `seccompsandbox` string (`on,obsolete=deny,spawn=deny,...`).
pub fn parse_sandbox(spec: &str) -> Result<Sandbox, String> {
    let mut parts = spec.split(',');
    if parts.next() != Some("on") {
        return Err(format!("{spec:?} must start with \"on\""));
    }
    let mut sb = Sandbox {
        obsolete: None,
        elevate_privileges: None,
        spawn: None,
        resource_control: None,
    };
    for kv in parts {
        let (k, v) = kv
            .split_once('=')
            .ok_or_else(|| format!("{kv:?} is not key=value"))?;
        let action = match v {
            "allow" => SandboxAction::Allow,
            "deny" => SandboxAction::Deny,
            "children" if k == "elevateprivileges" => SandboxAction::Children,
            _ => return Err(format!("unknown action {v:?} for {k}")),
        };
        match k {
            "obsolete" => sb.obsolete = Some(action),
            "elevateprivileges" => sb.elevate_privileges = Some(action),
            "spawn" => sb.spawn = Some(action),
            "resourcecontrol" => sb.resource_control = Some(action),
            _ => return Err(format!("unknown key {k:?}")),
        }
    }
    Ok(sb)
}

#[cfg(test)]
#[path = "build_tests.rs"]
mod tests;
