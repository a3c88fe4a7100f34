//! The plan: from (checked config, accelerator, folder layout, template role,
//! cold-plugged devices) to one `qemu_config::Config`. Pure: no I/O, no
//! process, no clock; what it needs from the host (the image's size) is
//! measured by the caller and recorded in the sandbox's [`Layout`].
//!
//! ```text
//! create: Layout::new(cfg, image size)      (accelerator-independent; saved in state.json)
//! start:  plan(PlanInput { cfg, layout, accel, dir, role, cold devices }) -> Config -> argv
//! ```
//! `sandvm cmdline`, start and hotplug use the same layout; the accelerator
//! only changes the machine options, the CPU model and a few globals.

pub mod agent;
pub mod arch;
pub mod bridges;
pub mod coldplug;
pub mod devices;
pub mod kernel;
pub mod memory;
pub mod pci;
pub mod sharedfs;
pub mod template;
pub mod tpm;
pub mod usernet;

use crate::config::{Accel, ExtraMonitor, HypervisorConfig};
use crate::state::files;
use crate::types::TemplateRole;
use qemu_config::*;
use serde::{Deserialize, Serialize};
use std::path::Path;

/// fd number QEMU finds the pre-bound QMP listener on.
pub const QMP_FD: i32 = 3;
/// fd number of the supervisor's events monitor listener.
pub const EVENTS_FD: i32 = 4;
/// First fd number of the fds cold-plugged devices pass (taps, channels).
pub const FIRST_DEVICE_FD: i32 = 5;
/// Chardev id of the QMP monitor.
pub const QMP_ID: &str = "qmp";
/// Chardev id of the supervisor's events monitor.
pub const EVENTS_ID: &str = "events";

/// The planned QEMU invocation is not valid (a bug, or a config that
/// combines options QEMU would refuse).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("The planned QEMU invocation is invalid: {0}")]
pub struct PlanError(#[from] pub qemu_config::ValidationError);

/// What a sandbox's machine looks like whatever the accelerator: fixed at
/// create, saved with the sandbox, used by start, cold plug and hotplug.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Layout {
    /// The arch's transport, buses and root device.
    pub arch: arch::ArchLayout,
    /// Size of the root image in bytes, when there is one.
    pub image_size: Option<u64>,
    /// Whether the image is on an nvdimm.
    pub image_on_nvdimm: bool,
    /// `maxmem`, MiB.
    pub maxmem_mib: u64,
    /// The most memory the guest can have, MiB (maxmem without the nvdimm image).
    pub memory_limit_mib: u64,
    /// The hotplug bridges' bus ids, in the order slots are handed out.
    pub bridges: Vec<String>,
    /// Whether each bridge sits behind its own PCIe root port (q35 with firmware).
    pub nested_bridges: bool,
}

impl Layout {
    /// The layout of `cfg` with a root image of `image_size` bytes.
    pub fn new(cfg: &HypervisorConfig, image_size: Option<u64>) -> Layout {
        let arch = arch::layout(cfg);
        let image_on_nvdimm = kernel::image_on_nvdimm(cfg, &arch);
        let nvdimm_mib = if image_on_nvdimm {
            memory::nvdimm_mib(image_size)
        } else {
            0
        };
        let maxmem_mib = memory::max_memory_mib(cfg, &arch, nvdimm_mib);
        let memory_limit_mib = maxmem_mib
            .saturating_sub(nvdimm_mib)
            .min(cfg.max_memory_mib + cfg.memory_offset_mib)
            .max(cfg.memory_mib);
        Layout {
            bridges: bridges::bridge_ids(cfg, &arch),
            nested_bridges: bridges::nested(cfg, &arch),
            arch,
            image_size,
            image_on_nvdimm,
            maxmem_mib,
            memory_limit_mib,
        }
    }
}

/// Everything one QEMU invocation is made from.
#[derive(Debug, Clone)]
pub struct PlanInput<'a> {
    /// The checked config (annotations applied).
    pub cfg: &'a HypervisorConfig,
    /// The sandbox's layout.
    pub layout: &'a Layout,
    /// The accelerator decided for this start.
    pub accel: Accel,
    /// Sandbox id.
    pub id: &'a str,
    /// VM UUID.
    pub uuid: &'a str,
    /// Sandbox folder (sockets, logs).
    pub dir: &'a Path,
    /// The host folder shared with the guest (the sandbox's record); `None`:
    /// `<dir>/shared`. Only virtio-9p puts it on QEMU's command line.
    pub share: Option<&'a Path>,
    /// The sandbox's part in templating.
    pub role: Option<TemplateRole>,
    /// The agent channel in effect (the config's, or a cold-plugged one).
    pub agent: Option<crate::config::AgentChannel>,
    /// Devices cold-plugged before start, placed.
    pub cold: &'a [coldplug::ColdDevice],
    /// Wait for an incoming migration (`-incoming defer`): a restore.
    pub incoming: bool,
}

/// The QMP monitor on fd 3 and the supervisor's events monitor on fd 4.
pub fn qmp_monitors() -> Vec<QmpMonitor> {
    vec![
        QmpMonitor {
            id: QMP_ID.into(),
            socket: QmpSocket::Fd(QMP_FD),
            mode: Default::default(),
        },
        QmpMonitor {
            id: EVENTS_ID.into(),
            socket: QmpSocket::Fd(EVENTS_FD),
            mode: Default::default(),
        },
    ]
}

/// Id of the extra monitor's chardev.
pub const EXTRA_MONITOR_ID: &str = "extra-monitor";

/// The debug monitor of `extra_monitor_socket`, on [`files::EXTRA_MONITOR`]
/// in the sandbox folder, which QEMU binds.
fn extra_monitor(cfg: &HypervisorConfig, dir: &Path) -> Option<QmpMonitor> {
    let mode = match cfg.extra_monitor? {
        ExtraMonitor::Hmp => MonitorMode::Readline,
        ExtraMonitor::Qmp => MonitorMode::Control,
        ExtraMonitor::QmpPretty => MonitorMode::ControlPretty,
    };
    Some(QmpMonitor {
        id: EXTRA_MONITOR_ID.into(),
        socket: QmpSocket::Path(s(&dir.join(files::EXTRA_MONITOR))),
        mode,
    })
}

fn s(p: &Path) -> String {
    p.display().to_string()
}

/// Plan the QEMU invocation for one sandbox, and check it.
pub fn plan(inp: &PlanInput<'_>) -> Result<Config, PlanError> {
    let cfg = inp.cfg;
    let policy = arch::policy(cfg, inp.accel);
    let mut qc = Config::new(
        machine(cfg, inp.layout, &policy),
        smp(cfg),
        memory::topology(cfg, inp.layout),
    );
    qc.name = Some(format!("sandbox-{}", inp.id));
    qc.uuid = Some(inp.uuid.to_string());
    qc.cpu = policy.cpu_model.clone().map(|model| Cpu {
        model,
        features: cfg.cpu_features.clone(),
    });
    qc.globals = policy
        .globals
        .iter()
        .map(|(d, p, v)| Global::new(d, p, v))
        .collect();
    if !cfg.numa.is_empty() {
        // The boot memory is the NUMA nodes' backends (no machine backend).
        let (objects, nodes) = memory::numa(cfg, inp.agent);
        qc.objects.extend(objects);
        qc.numa = nodes;
    } else if let Some(o) = memory::backend(cfg, inp.agent) {
        qc.objects.push(o);
        qc.machine = qc.machine.clone().memory_backend(memory::MEM_BACKEND_ID);
    }
    // Without a kernel the firmware boots the image (the boot disk).
    qc.kernel = cfg.kernel.as_deref().map(|k| Kernel {
        path: s(k),
        initrd: cfg.initrd.as_deref().map(s),
        append: Some(kernel::params(cfg, inp.layout, &policy)),
    });
    devices::boot_firmware(&mut qc, cfg, inp.layout, inp.dir);
    qc.fw_cfg = usernet::fw_cfg(cfg);
    qc.knobs = Knobs {
        no_user_config: true,
        nodefaults: true,
        nographic: true,
        // A guest reboot ends the VM unless the config allows it.
        no_reboot: !cfg.allow_reboot,
        ..Knobs::default()
    };
    qc.rtc = (cfg.guest_arch == crate::config::GuestArch::X86_64
        && inp.layout.arch.machine_type != "microvm")
        .then(Rtc::default);
    qc.pidfile = Some(s(&inp.dir.join(files::PIDFILE)));
    qc.sandbox = cfg.seccomp_sandbox.map(devices::seccomp);
    qc.qmp = qmp_monitors();
    qc.qmp.extend(extra_monitor(cfg, inp.dir));
    // Keep a panicked guest until the supervisor has dumped it.
    qc.actions = vec![("panic".into(), "pause".into())];
    qc.extra_args = cfg.extras.extra_args.clone();
    let mut devno = devices::Devno::default();
    devices::add(&mut qc, inp, &mut devno);
    coldplug::add(&mut qc, inp);
    template::apply(&mut qc, cfg, inp.role);
    if inp.incoming {
        qc.incoming = Some(Incoming::Defer);
    }
    qc.validate()?;
    Ok(qc)
}

fn machine(cfg: &HypervisorConfig, layout: &Layout, policy: &arch::ArchPolicy) -> Machine {
    let mut m = policy.machine.clone();
    // nvdimm=on also when disks are hotplugged as nvdimms (block_device_driver = "nvdimm").
    let nvdimm_disks = cfg.block.driver == crate::config::BlockDriver::Nvdimm;
    if layout.image_on_nvdimm || (nvdimm_disks && layout.arch.has_nvdimm()) {
        m = m.nvdimm(true);
    }
    m
}

fn smp(cfg: &HypervisorConfig) -> Smp {
    Smp {
        cpus: cfg.vcpus,
        sockets: Some(cfg.max_vcpus),
        dies: None,
        cores: Some(1),
        threads: Some(1),
        maxcpus: Some(cfg.max_vcpus),
    }
}

/// The plan of a test sandbox `t` in `/run/sandvm/t` (for unit tests).
#[cfg(test)]
pub(crate) fn planned_for_test(
    cfg: &HypervisorConfig,
    accel: Accel,
    image_size: Option<u64>,
) -> Config {
    let layout = Layout::new(cfg, image_size);
    match plan(&PlanInput {
        cfg,
        layout: &layout,
        accel,
        id: "t",
        uuid: "00000000-0000-0000-0000-000000000000",
        dir: Path::new("/run/sandvm/t"),
        share: None,
        role: None,
        agent: cfg.agent.channel,
        cold: &[],
        incoming: false,
    }) {
        Ok(qc) => qc,
        Err(e) => panic!("{e}"),
    }
}

#[cfg(test)]
mod tests;
