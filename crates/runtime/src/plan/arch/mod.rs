//! Per-arch policy, chosen at run time from [`GuestArch`].
//!
//! Each arch says which machine, CPU model, device transport and kernel
//! parameters it uses. What does not depend on the accelerator (transport,
//! buses, root device, console) is the arch's [`ArchLayout`]: a sandbox
//! records it at create, so cold plug and hotplug use the layout it booted
//! with. The rest (machine options, CPU model, globals) is decided with the
//! accelerator at start. All four arches are rendered (and tested) on one
//! x86_64 host.

mod aarch64;
mod ppc64le;
mod s390x;
mod x86_64;

use crate::config::{Accel, GuestArch, HypervisorConfig};
use qemu_config::{Machine, Transport};
use serde::{Deserialize, Serialize};

/// What an arch and machine give a sandbox, whatever the accelerator.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArchLayout {
    /// The machine type.
    pub machine_type: String,
    /// Transport for virtio devices.
    pub transport: Transport,
    /// The bus cold-plugged PCI devices go on, if any.
    pub root_bus: Option<String>,
    /// Root parameters when the image is on nvdimm; `None` when the arch has no nvdimm.
    pub nvdimm_root_params: Option<Vec<String>>,
    /// Root parameters when the image is a virtio-blk disk.
    pub blk_root_params: Vec<String>,
    /// Console device name in the guest.
    pub console: String,
    /// Whether PCI bridges are supported.
    pub bridges: bool,
    /// Whether a virtio RNG is added.
    pub rng: bool,
    /// Firmware to use when none is configured (microvm's qboot).
    pub default_bios: Option<String>,
    /// maxmem alignment in MiB (ppc64le rounds down to 256).
    pub maxmem_align_mib: u64,
}

impl ArchLayout {
    /// Whether the machine has nvdimm.
    pub fn has_nvdimm(&self) -> bool {
        self.nvdimm_root_params.is_some()
    }
}

/// What an arch contributes to the command line under one accelerator.
#[derive(Debug, Clone)]
pub struct ArchPolicy {
    /// The machine, with accelerator and arch options.
    pub machine: Machine,
    /// CPU model, if the arch sets one.
    pub cpu_model: Option<String>,
    /// Arch kernel parameters (before the generic and user ones).
    pub kernel_params: Vec<String>,
    /// Globals for this arch and accelerator.
    pub globals: Vec<(String, String, String)>,
}

/// The layout for `cfg`'s guest arch and machine.
pub fn layout(cfg: &HypervisorConfig) -> ArchLayout {
    match cfg.guest_arch {
        GuestArch::X86_64 => x86_64::layout(cfg),
        GuestArch::Aarch64 => aarch64::layout(cfg),
        GuestArch::Ppc64le => ppc64le::layout(cfg),
        GuestArch::S390x => s390x::layout(cfg),
    }
}

/// The policy for `cfg`'s guest arch and machine under `accel`.
pub fn policy(cfg: &HypervisorConfig, accel: Accel) -> ArchPolicy {
    match cfg.guest_arch {
        GuestArch::X86_64 => x86_64::policy(cfg, accel),
        GuestArch::Aarch64 => aarch64::policy(cfg, accel),
        GuestArch::Ppc64le => ppc64le::policy(cfg, accel),
        GuestArch::S390x => s390x::policy(cfg, accel),
    }
}

fn strs(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

/// `host` under KVM, `max` under TCG.
fn host_or_max(accel: Accel) -> Option<String> {
    Some(if accel == Accel::Kvm { "host" } else { "max" }.to_string())
}

/// Machine options from the config's `machine_accelerators` (`k=v` or `k`).
fn user_machine_options(mut m: Machine, cfg: &HypervisorConfig) -> Machine {
    for opt in &cfg.machine_accelerators {
        m = match opt.split_once('=') {
            Some((k, v)) => m.option(k, v),
            None => m.option(opt.as_str(), "on"),
        };
    }
    m
}

#[cfg(test)]
mod tests;
