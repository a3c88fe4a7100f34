//! Per-arch policy, chosen at run time from [`GuestArch`].
//!
//! Each arch says which machine, CPU model, device transport and kernel
//! parameters it uses. All four are rendered (and tested) on one x86_64 host.

mod aarch64;
mod ppc64le;
mod s390x;
mod x86_64;

use crate::config::{GuestArch, HypervisorConfig};
use qemu_config::{Machine, Transport};

/// The accelerator QEMU will run with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Accel {
    /// Hardware virtualisation.
    Kvm,
    /// Software emulation.
    Tcg,
}

impl Accel {
    /// QEMU's name.
    pub fn as_str(self) -> &'static str {
        match self {
            Accel::Kvm => "kvm",
            Accel::Tcg => "tcg",
        }
    }
}

/// What an arch contributes to the command line.
#[derive(Debug, Clone)]
pub struct ArchPolicy {
    /// The machine, with accelerator and arch options.
    pub machine: Machine,
    /// CPU model, if the arch sets one.
    pub cpu_model: Option<String>,
    /// Transport for virtio devices.
    pub transport: Transport,
    /// The bus cold-plugged PCI devices go on, if any.
    pub root_bus: Option<&'static str>,
    /// Arch kernel parameters (before the generic and user ones).
    pub kernel_params: Vec<String>,
    /// Root parameters when the image is on nvdimm; `None` when the arch has no nvdimm.
    pub nvdimm_root_params: Option<Vec<String>>,
    /// Root parameters when the image is a virtio-blk disk.
    pub blk_root_params: Vec<String>,
    /// Console device name in the guest.
    pub console: &'static str,
    /// Whether PCI bridges are supported.
    pub bridges: bool,
    /// Whether a virtio RNG is added.
    pub rng: bool,
    /// Firmware to use when none is configured (microvm's qboot).
    pub default_bios: Option<&'static str>,
    /// maxmem alignment in MiB (ppc64le rounds down to 256).
    pub maxmem_align_mib: u64,
    /// Globals for this arch and accelerator.
    pub globals: Vec<(String, String, String)>,
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
