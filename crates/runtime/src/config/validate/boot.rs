//! Boot assets, machine and command-line keys: `guest_arch`, `path`,
//! `kernel`, `initrd`, `image`, `firmware`, `firmware_volume`, `pflashes`,
//! `machine_type`, `rootfs_type`, `kernel_params`, `machine_accelerators`,
//! `cpu_features`, `accelerator`, and sandvm's reboot policy `allow_reboot`.

use super::{Ctx, MAX_PFLASHES, k, split_list};
use crate::config::raw::RawQemu;
use crate::config::types::*;
use crate::config::{ConfigError, HostInfo};
use std::path::PathBuf;

/// The boot section, checked.
pub(super) struct Boot {
    pub guest_arch: GuestArch,
    pub qemu_path: PathBuf,
    pub kernel: Option<PathBuf>,
    pub initrd: Option<PathBuf>,
    pub image: Option<PathBuf>,
    pub firmware: Option<PathBuf>,
    pub firmware_volume: Option<PathBuf>,
    pub machine_type: String,
    pub rootfs_type: RootfsType,
    pub pflashes: Vec<PathBuf>,
    pub kernel_params: Vec<String>,
    pub machine_accelerators: Vec<String>,
    pub cpu_features: Vec<String>,
    pub accelerator: Accelerator,
    /// `allow_reboot` (default false: `-no-reboot`).
    pub allow_reboot: bool,
}

pub(super) fn check(cx: &Ctx<'_>, raw: &RawQemu, host: &HostInfo) -> Result<Boot, ConfigError> {
    let guest_arch = match raw.guest_arch.as_deref() {
        None | Some("") => host.arch,
        Some(s) => GuestArch::parse(s).ok_or_else(|| {
            cx.err(
                &k("guest_arch"),
                format!("unknown arch {s:?}; expected x86_64, aarch64, ppc64le or s390x"),
            )
        })?,
    };
    let qemu_path = cx
        .opt_path(&k("path"), &raw.path)?
        .unwrap_or_else(|| PathBuf::from("/usr/bin").join(guest_arch.qemu_binary()));
    cx.allowed(
        &k("path"),
        &k("valid_hypervisor_paths"),
        &qemu_path,
        raw.valid_hypervisor_paths.as_deref().unwrap_or(&[]),
    )?;
    let kernel = cx.opt_path(&k("kernel"), &raw.kernel)?;
    let image = cx.opt_path(&k("image"), &raw.image)?;
    let initrd = cx.opt_path(&k("initrd"), &raw.initrd)?;
    let kernel_params = kernel_params(cx, raw)?;
    let machine_type = machine_type(cx, raw, guest_arch)?;
    let rootfs_type = rootfs_type(cx, raw)?;
    if kernel.is_none() {
        disk_boot(cx, guest_arch, &machine_type, &image, &initrd)?;
        no_kernel_command_line(cx, &kernel_params, rootfs_type)?;
    }
    let firmware = cx.opt_path(&k("firmware"), &raw.firmware)?;
    let firmware_volume = cx.opt_path(&k("firmware_volume"), &raw.firmware_volume)?;
    if firmware_volume.is_some() && firmware.is_none() {
        return Err(cx.err(
            &k("firmware_volume"),
            "needs firmware (the OVMF code) to go with the vars template",
        ));
    }
    let mut pflashes = Vec::new();
    for (i, p) in raw.pflashes.iter().flatten().enumerate() {
        let key = format!("{}[{i}]", k("pflashes"));
        if let Some(p) = cx.opt_path(&key, &Some(p.clone()))? {
            pflashes.push(p);
        }
    }
    // firmware_volume is refused above without firmware: together they are UEFI.
    let uefi = firmware_volume.is_some();
    check_pflashes(cx, guest_arch, &machine_type, pflashes.len(), uefi)?;
    Ok(Boot {
        guest_arch,
        qemu_path,
        kernel,
        initrd,
        image,
        firmware,
        firmware_volume,
        machine_type,
        rootfs_type,
        pflashes,
        kernel_params,
        machine_accelerators: machine_accelerators(cx, raw)?,
        cpu_features: {
            let f = split_list(&raw.cpu_features, ',');
            cx.printable(&k("cpu_features"), &f)?;
            f
        },
        accelerator: accelerator(cx, raw)?,
        allow_reboot: raw.allow_reboot.unwrap_or(false),
    })
}

/// A config without `kernel` boots its `image` as a whole disk through the
/// firmware (Nomad's `image_path`): only where the firmware boots a disk
/// (x86_64 q35), and with no initrd.
fn disk_boot(
    cx: &Ctx<'_>,
    arch: GuestArch,
    machine: &str,
    image: &Option<PathBuf>,
    initrd: &Option<PathBuf>,
) -> Result<(), ConfigError> {
    if image.is_none() {
        return Err(cx.err(
            &k("kernel"),
            "is required, unless an image is booted as a whole disk through the firmware",
        ));
    }
    if arch != GuestArch::X86_64 || machine == "microvm" {
        return Err(cx.err(
            &k("kernel"),
            format!(
                "is required on the {machine} machine ({arch}): a whole-disk boot (image, no \
                 kernel) needs a firmware that boots a disk, x86_64 q35 (SeaBIOS or OVMF)"
            ),
        ));
    }
    if initrd.is_some() {
        return Err(cx.err(
            &k("initrd"),
            "needs a kernel; a whole-disk boot (image, no kernel) loads what the disk's boot loader says",
        ));
    }
    Ok(())
}

/// A whole-disk boot's kernel command line is its boot loader's: the keys
/// that would write one are refused unless they would write nothing.
fn no_kernel_command_line(
    cx: &Ctx<'_>,
    params: &[String],
    rootfs: RootfsType,
) -> Result<(), ConfigError> {
    let why = "cannot apply to a whole-disk boot (image, no kernel): the disk's boot loader sets \
               the kernel command line";
    if !params.is_empty() {
        return Err(cx.err(&k("kernel_params"), why));
    }
    if rootfs != RootfsType::Ext4 {
        return Err(cx.err(&k("rootfs_type"), why));
    }
    Ok(())
}

fn machine_type(cx: &Ctx<'_>, raw: &RawQemu, arch: GuestArch) -> Result<String, ConfigError> {
    match raw.machine_type.as_deref() {
        None | Some("") => Ok(default_machine(arch).to_string()),
        Some(m) => {
            if !m
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
            {
                return Err(cx.err(&k("machine_type"), format!("invalid machine type {m:?}")));
            }
            if !machine_known(arch, m) {
                return Err(cx.err(
                    &k("machine_type"),
                    format!(
                        "machine type {m:?} is not supported on {arch}; expected {}",
                        known_machines(arch)
                    ),
                ));
            }
            Ok(m.to_string())
        }
    }
}

fn rootfs_type(cx: &Ctx<'_>, raw: &RawQemu) -> Result<RootfsType, ConfigError> {
    match raw.rootfs_type.as_deref() {
        None | Some("") | Some("ext4") => Ok(RootfsType::Ext4),
        Some("xfs") => Ok(RootfsType::Xfs),
        Some("erofs") => Ok(RootfsType::Erofs),
        Some(o) => Err(cx.err(
            &k("rootfs_type"),
            format!("unknown rootfs type {o:?}; expected ext4, xfs or erofs"),
        )),
    }
}

fn accelerator(cx: &Ctx<'_>, raw: &RawQemu) -> Result<Accelerator, ConfigError> {
    match raw.accelerator.as_deref() {
        None | Some("") | Some("auto") => Ok(Accelerator::Auto),
        Some("kvm") => Ok(Accelerator::Kvm),
        Some("tcg") => Ok(Accelerator::Tcg),
        Some(o) => Err(cx.err(
            &k("accelerator"),
            format!("unknown accelerator {o:?}; expected kvm, tcg or auto"),
        )),
    }
}

/// The kernel splits its command line at any whitespace, as sandvm does.
fn kernel_params(cx: &Ctx<'_>, raw: &RawQemu) -> Result<Vec<String>, ConfigError> {
    let params: Vec<String> = raw
        .kernel_params
        .as_deref()
        .unwrap_or("")
        .split_whitespace()
        .map(String::from)
        .collect();
    cx.printable(&k("kernel_params"), &params)?;
    let quotes: usize = params.iter().map(|p| p.matches('"').count()).sum();
    if quotes % 2 == 1 {
        return Err(cx.err(
            &k("kernel_params"),
            "has an unbalanced double quote (the kernel would swallow what follows)",
        ));
    }
    Ok(params)
}

fn machine_accelerators(cx: &Ctx<'_>, raw: &RawQemu) -> Result<Vec<String>, ConfigError> {
    let opts = split_list(&raw.machine_accelerators, ',');
    cx.printable(&k("machine_accelerators"), &opts)?;
    for opt in &opts {
        // QEMU's option-name rule, which qemu-config enforces on the argv.
        let name = opt.split_once('=').map_or(opt.as_str(), |(name, _)| name);
        if name.is_empty()
            || !name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-._".contains(&b))
        {
            return Err(cx.err(
                &k("machine_accelerators"),
                format!("option name {name:?} must be letters, digits, '-', '.' or '_'"),
            ));
        }
    }
    Ok(opts)
}

/// How many pflash images the machine takes: aarch64 virt none or two (code
/// and vars), q35 at most two and none when `firmware` and `firmware_volume`
/// already fill both units, other machines none (QEMU refuses an unclaimed
/// `if=pflash` drive).
fn check_pflashes(
    cx: &Ctx<'_>,
    arch: GuestArch,
    machine: &str,
    n: usize,
    uefi: bool,
) -> Result<(), ConfigError> {
    let key = "hypervisor.qemu.pflashes";
    let has_pflash =
        arch == GuestArch::Aarch64 || (arch == GuestArch::X86_64 && machine != "microvm");
    if uefi && !has_pflash {
        return Err(cx.err(
            "hypervisor.qemu.firmware_volume",
            format!(
                "UEFI pflash drives need q35 or virt; the {machine} machine on {arch} has no pflash"
            ),
        ));
    }
    let q35 = has_pflash && arch == GuestArch::X86_64;
    match arch {
        _ if n == 0 => Ok(()),
        _ if uefi => Err(cx.err(
            key,
            "firmware and firmware_volume already use both pflash units; leave pflashes empty",
        )),
        GuestArch::Aarch64 if n == 1 => Err(cx.err(key, "two pflash images needed for arm64")),
        GuestArch::Aarch64 if n > MAX_PFLASHES => {
            Err(cx.err(key, "too many pflash images for arm64"))
        }
        GuestArch::Aarch64 => Ok(()),
        _ if q35 && n > MAX_PFLASHES => Err(cx.err(
            key,
            format!("{n} pflash images; {machine} has {MAX_PFLASHES} pflash units"),
        )),
        _ if q35 => Ok(()),
        _ => Err(cx.err(
            key,
            format!("the {machine} machine on {arch} has no pflash; leave pflashes empty"),
        )),
    }
}

/// Whether sandvm has a policy for machine type `m` on `arch`: the default
/// machine, its versioned forms (`pc-q35-9.2`, `virt-9.2`, `pseries-9.2`,
/// `s390-ccw-virtio-9.2`), and `microvm` on x86_64.
pub fn machine_known(arch: GuestArch, m: &str) -> bool {
    let versioned = |base: &str| {
        m.strip_prefix(base)
            .and_then(|v| v.strip_prefix('-'))
            .is_some_and(|v| !v.is_empty() && v.chars().all(|c| c.is_ascii_digit() || c == '.'))
    };
    match arch {
        GuestArch::X86_64 => m == "q35" || m == "microvm" || versioned("pc-q35"),
        other => m == default_machine(other) || versioned(default_machine(other)),
    }
}

fn known_machines(arch: GuestArch) -> &'static str {
    match arch {
        GuestArch::X86_64 => "q35 (or pc-q35-<version>) or microvm",
        GuestArch::Aarch64 => "virt (or virt-<version>)",
        GuestArch::Ppc64le => "pseries (or pseries-<version>)",
        GuestArch::S390x => "s390-ccw-virtio (or s390-ccw-virtio-<version>)",
    }
}

/// The machine type Kata uses by default on each arch.
pub fn default_machine(arch: GuestArch) -> &'static str {
    match arch {
        GuestArch::X86_64 => "q35",
        GuestArch::Aarch64 => "virt",
        GuestArch::Ppc64le => "pseries",
        GuestArch::S390x => "s390-ccw-virtio",
    }
}
