//! The devices every sandbox of a config has: bridges, the console, the
//! agent channel, the shared filesystem, the TPM, the root image, the RNG,
//! the SCSI controller, the balloon, the vIOMMU, pvpanic, user-mode
//! networking; and the firmware and seccomp options.

use super::{Layout, PlanInput, agent, bridges, sharedfs, tpm, usernet};
use crate::config::{
    BlockDriver, GuestArch, HypervisorConfig, SeccompAction, SeccompSandbox, SharedFs,
};
use crate::state::files;
use qemu_config::*;
use std::path::Path;

/// Chardev id of the console.
pub const CONSOLE_CHARDEV: &str = "charconsole0";
/// Id of the virtio-serial controller (console and agent ports).
pub const SERIAL_ID: &str = "serial0";
/// Id of the SCSI controller (Kata's).
pub const SCSI_ID: &str = "scsi0";
/// Drive and device id of the root image when it is a disk (not an nvdimm).
pub const ROOT_DISK_ID: &str = "rootdisk";
/// The sandbox's copy of the UEFI vars (made from `firmware_volume` at start).
pub const EFI_VARS: &str = "efivars.fd";

fn s(p: &Path) -> String {
    p.display().to_string()
}

/// CCW device numbers (`fe.0.XXXX`, Kata's devno addressing on s390x), in
/// the order devices are added. Other transports get none.
#[derive(Debug, Default)]
pub struct Devno(u32);

impl Devno {
    /// The next device number on CCW; `None` on other transports.
    pub fn next(&mut self, t: Transport) -> Option<String> {
        (t == Transport::Ccw).then(|| {
            let d = format!("fe.0.{:04x}", self.0);
            self.0 += 1;
            d
        })
    }
}

/// QEMU's `-sandbox` for the config's parsed `seccompsandbox`.
pub fn seccomp(sb: SeccompSandbox) -> Sandbox {
    let a = |v: Option<SeccompAction>| {
        v.map(|a| match a {
            SeccompAction::Allow => SandboxAction::Allow,
            SeccompAction::Deny => SandboxAction::Deny,
            SeccompAction::Children => SandboxAction::Children,
        })
    };
    Sandbox {
        obsolete: a(sb.obsolete),
        elevate_privileges: a(sb.elevate_privileges),
        spawn: a(sb.spawn),
        resource_control: a(sb.resource_control),
    }
}

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

/// `-bios` or the pflash drives: UEFI, the user's pflashes, the firmware or
/// the machine's default firmware (microvm's qboot).
pub fn boot_firmware(qc: &mut Config, cfg: &HypervisorConfig, layout: &Layout, dir: &Path) {
    for (i, p) in cfg.pflashes.iter().enumerate() {
        qc.pflash.push(Pflash {
            file: s(p),
            readonly: i == 0,
            unit: i as u32,
        });
    }
    let uefi = uefi_pflash(cfg, dir);
    if uefi.is_empty() {
        qc.bios = cfg
            .firmware
            .as_deref()
            .map(s)
            .or_else(|| layout.arch.default_bios.clone());
    } else {
        qc.pflash.extend(uefi);
    }
}

/// Add the config's devices to `qc`, in Kata's order (bridges first, so
/// they get the first slots).
pub fn add(qc: &mut Config, inp: &PlanInput<'_>, devno: &mut Devno) {
    let cfg = inp.cfg;
    let t = inp.layout.arch.transport;
    qc.devices.extend(bridges::devices(cfg, inp.layout));
    console(qc, cfg, inp.dir, t, devno);
    if let Some(kind) = inp.agent {
        agent::add(qc, cfg, inp.dir, kind, t, devno);
    }
    shared_fs(qc, inp, devno);
    if let Some((c, td, d)) = tpm::qemu_parts(cfg, inp.dir) {
        qc.chardevs.push(c);
        qc.tpmdevs.push(td);
        qc.devices.push(d);
    }
    root_image(qc, cfg, inp.layout, devno);
    platform(qc, cfg, t, devno);
    if let Some((netdev, nic)) = usernet::user_net(cfg, t, inp.uuid, devno.next(t)) {
        qc.netdevs.push(netdev);
        qc.devices.push(nic);
    }
}

/// The shared filesystem's device, in the same place in the device order
/// whatever its kind: vhost-user-fs for virtio-fs, an fsdev and virtio-9p
/// for 9p (on the sandbox's share, else `<dir>/shared`).
fn shared_fs(qc: &mut Config, inp: &PlanInput<'_>, devno: &mut Devno) {
    let cfg = inp.cfg;
    let t = inp.layout.arch.transport;
    match cfg.shared_fs.kind {
        SharedFs::None => {}
        SharedFs::VirtioFs | SharedFs::VirtioFsNydus => {
            let (c, d) = sharedfs::vhost_user_fs(cfg, inp.dir, t, devno.next(t));
            qc.chardevs.push(c);
            qc.devices.push(d);
        }
        SharedFs::Virtio9p => {
            let default = inp.dir.join(sharedfs::DEFAULT_SHARE);
            let share = inp.share.unwrap_or(&default);
            let (f, d) = sharedfs::virtio_9p(cfg, share, t, devno.next(t));
            qc.fsdevs.push(f);
            qc.devices.push(d);
        }
    }
}

/// A virtconsole on a socket with a log, or the legacy serial port.
fn console(qc: &mut Config, cfg: &HypervisorConfig, dir: &Path, t: Transport, devno: &mut Devno) {
    qc.chardevs.push(Chardev::Socket {
        id: CONSOLE_CHARDEV.into(),
        path: Some(s(&dir.join(files::CONSOLE))),
        fd: None,
        server: true,
        wait: false,
        logfile: Some(s(&dir.join(files::CONSOLE_LOG))),
        logappend: None,
    });
    if cfg.use_legacy_serial {
        qc.serials.push(Serial {
            chardev: CONSOLE_CHARDEV.into(),
        });
        return;
    }
    let d = devno.next(t);
    super::agent::add_virtio_serial(qc, cfg, t, d);
    qc.devices.push(Device::VirtConsole(VirtConsole {
        id: "console0".into(),
        chardev: CONSOLE_CHARDEV.into(),
        name: None,
    }));
}

/// The root image: on an nvdimm (DAX where the arch has it), or a
/// read-only disk, the guest's first (`/dev/vda`), as Kata attaches it;
/// without a kernel, the disk the firmware boots (`bootindex=0`).
fn root_image(qc: &mut Config, cfg: &HypervisorConfig, layout: &Layout, devno: &mut Devno) {
    let Some(image) = &cfg.image else {
        return;
    };
    if layout.image_on_nvdimm {
        qc.objects.push(Object::MemoryBackendFile {
            id: "mem0".into(),
            size_mib: super::memory::nvdimm_mib(layout.image_size),
            mem_path: s(image),
            share: Some(true),
            prealloc: false,
            readonly: Some(true),
            discard_data: None,
            align: None,
        });
        qc.devices.push(Device::Nvdimm(Nvdimm {
            id: "nv0".into(),
            memdev: "mem0".into(),
            unarmed: true,
        }));
        return;
    }
    let t = layout.arch.transport;
    let mut drive = Drive::raw(ROOT_DISK_ID, s(image));
    drive.readonly = true;
    drive.aio = Some(cfg.block.aio.clone());
    qc.drives.push(drive);
    qc.devices.push(Device::VirtioBlk(VirtioBlk {
        transport: t,
        id: format!("{ROOT_DISK_ID}-dev"),
        drive: ROOT_DISK_ID.into(),
        bootindex: cfg.disk_boot().then_some(0),
        devno: devno.next(t),
        iommu_platform: cfg.iommu_platform,
        ..Default::default()
    }));
}

/// Id of the `n`th independent iothread (Kata's names).
pub fn indep_iothread(n: u32) -> String {
    format!("indep_iothread_{n}")
}

/// The iothread virtio-blk disks (cold- and hotplugged) run on: Kata's first
/// independent one, when `enable_iothreads` and `indep_iothreads` are set.
pub fn blk_iothread(cfg: &HypervisorConfig) -> Option<String> {
    (cfg.block.iothreads && cfg.block.indep_iothreads > 0).then(|| indep_iothread(0))
}

/// vIOMMU, pvpanic, RNG, SCSI controller, balloon, iommu_platform.
fn platform(qc: &mut Config, cfg: &HypervisorConfig, t: Transport, devno: &mut Devno) {
    let x86 = cfg.guest_arch == GuestArch::X86_64;
    if cfg.iommu && t == Transport::Pci && x86 {
        qc.devices.push(Device::IntelIommu(IntelIommu {
            id: None,
            intremap: true,
            device_iotlb: true,
            caching_mode: true,
        }));
    }
    if cfg.guest_memory_dump_path.is_some() && x86 {
        qc.devices.push(Device::Pvpanic(Pvpanic {
            id: "pvpanic0".into(),
            ioport: None,
        }));
    }
    if super::arch::layout(cfg).rng {
        qc.objects.push(Object::RngRandom {
            id: "rng0".into(),
            filename: s(&cfg.entropy_source),
        });
        qc.devices.push(Device::VirtioRng(VirtioRng {
            transport: t,
            id: "rng0-dev".into(),
            rng: "rng0".into(),
            iommu_platform: cfg.iommu_platform,
            devno: devno.next(t),
            ..Default::default()
        }));
    }
    qc.objects
        .extend((0..cfg.block.indep_iothreads).map(|i| Object::Iothread {
            id: indep_iothread(i),
        }));
    if cfg.block.driver == BlockDriver::VirtioScsi && t != Transport::Mmio {
        let iothread = cfg.block.iothreads.then(|| "iothread-scsi0".to_string());
        if let Some(id) = &iothread {
            qc.objects.push(Object::Iothread { id: id.clone() });
        }
        qc.devices.push(Device::VirtioScsi(VirtioScsi {
            transport: t,
            id: SCSI_ID.into(),
            iothread,
            iommu_platform: cfg.iommu_platform,
            devno: devno.next(t),
            ..Default::default()
        }));
    }
    if cfg.reclaim_guest_freed_memory {
        qc.devices.push(Device::VirtioBalloon(VirtioBalloon {
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
        qc.globals
            .push(Global::new("virtio-pci", "iommu_platform", "on"));
    }
}
