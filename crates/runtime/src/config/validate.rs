//! From [`RawQemu`] to the checked [`HypervisorConfig`].
//!
//! Defaults follow Kata's. Every error names the file and the key.

use super::raw::{RawFactory, RawQemu};
use super::types::*;
use super::{ConfigError, HostInfo};
use std::path::{Path, PathBuf};

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
/// vhost-user-fs queue size when unset (Kata: 1024).
pub const DEFAULT_VIRTIO_FS_QUEUE_SIZE: u32 = 1024;
/// virtio-fs cache mode when unset (Kata: "auto").
pub const DEFAULT_VIRTIO_FS_CACHE: &str = "auto";
/// virtio-fs daemon when unset (Kata's).
pub const DEFAULT_VIRTIO_FS_DAEMON: &str = "/usr/libexec/virtiofsd";
/// Block AIO when unset (Kata: io_uring).
pub const DEFAULT_BLOCK_AIO: &str = "io_uring";
/// RNG source when unset.
pub const DEFAULT_ENTROPY_SOURCE: &str = "/dev/urandom";
/// Template folder when unset (Kata's).
pub const DEFAULT_TEMPLATE_PATH: &str = "/run/vc/vm/template";
/// Most vCPUs QEMU takes on any of our machines.
pub const MAX_VCPUS: u32 = 240;
/// Most MiB any memory key takes: 4 PiB, a 52-bit physical address space,
/// more than any host has. Keeps `maxmem`'s sum far from overflow.
pub const MAX_MEMORY_MIB: u64 = 1 << 32;
/// Most pflash units a q35 or virt machine has (code and vars).
pub const MAX_PFLASHES: usize = 2;

struct Ctx<'a> {
    file: &'a Path,
    dir: &'a Path,
}

impl Ctx<'_> {
    fn err(&self, key: &str, reason: impl Into<String>) -> ConfigError {
        ConfigError::Invalid {
            file: self.file.display().to_string(),
            key: key.to_string(),
            reason: reason.into(),
        }
    }

    /// Resolve a path against the config file's folder.
    fn path(&self, p: &str) -> PathBuf {
        let p = Path::new(p);
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            self.dir.join(p)
        }
    }

    fn opt_path(&self, key: &str, v: &Option<String>) -> Result<Option<PathBuf>, ConfigError> {
        match v.as_deref() {
            None | Some("") => Ok(None),
            Some(s) if s.contains('\n') || s.contains('\0') => {
                Err(self.err(key, "path contains a newline or NUL"))
            }
            Some(s) => Ok(Some(self.path(s))),
        }
    }

    fn count(&self, key: &str, v: Option<i64>, default: u32, max: u32) -> Result<u32, ConfigError> {
        match v {
            None | Some(0) => Ok(default),
            Some(n) if n < 0 => Err(self.err(key, format!("must not be negative (got {n})"))),
            Some(n) if n > max as i64 => {
                Err(self.err(key, format!("must be at most {max} (got {n})")))
            }
            Some(n) => Ok(n as u32),
        }
    }

    fn mib(&self, key: &str, v: Option<i64>, default: u64) -> Result<u64, ConfigError> {
        match v {
            None | Some(0) => Ok(default),
            Some(n) if n < 0 => Err(self.err(key, format!("must not be negative (got {n})"))),
            Some(n) if n as u64 > MAX_MEMORY_MIB => Err(self.err(
                key,
                format!("must be at most {MAX_MEMORY_MIB} MiB (4 PiB) (got {n})"),
            )),
            Some(n) => Ok(n as u64),
        }
    }

    /// A comma or space list whose items go to QEMU or the kernel as they are:
    /// no control characters (newline, NUL, escape...).
    fn printable(&self, key: &str, items: &[String]) -> Result<(), ConfigError> {
        match items.iter().find(|i| i.chars().any(char::is_control)) {
            Some(i) => Err(self.err(key, format!("{i:?} contains a control character"))),
            None => Ok(()),
        }
    }

    fn allowed(
        &self,
        key: &str,
        list_key: &str,
        path: &Path,
        globs: &[String],
    ) -> Result<(), ConfigError> {
        if globs.is_empty() {
            return Ok(());
        }
        for g in globs {
            let pat = glob::Pattern::new(g)
                .map_err(|e| self.err(list_key, format!("bad glob {g:?}: {e}")))?;
            if pat.matches_path(path) {
                return Ok(());
            }
        }
        Err(self.err(
            key,
            format!("{} is not allowed by {list_key} {globs:?}", path.display()),
        ))
    }
}

fn split_list(s: &Option<String>, sep: char) -> Vec<String> {
    s.as_deref()
        .unwrap_or("")
        .split(sep)
        .map(str::trim)
        .filter(|x| !x.is_empty())
        .map(String::from)
        .collect()
}

fn bool_or(v: Option<bool>, d: bool) -> bool {
    v.unwrap_or(d)
}

/// Check `raw` and apply defaults. `file` is the config's path (for errors and
/// relative paths); `host` supplies the host's CPUs and RAM for the `0` defaults.
pub fn validate(
    file: &Path,
    raw: &RawQemu,
    factory: &RawFactory,
    host: &HostInfo,
) -> Result<HypervisorConfig, ConfigError> {
    let dir = file.parent().unwrap_or(Path::new("/"));
    let cx = Ctx { file, dir };
    let k = |name: &str| format!("hypervisor.qemu.{name}");

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

    let kernel = cx
        .opt_path(&k("kernel"), &raw.kernel)?
        .ok_or_else(|| cx.err(&k("kernel"), "is required"))?;
    let initrd = cx.opt_path(&k("initrd"), &raw.initrd)?;
    let image = cx.opt_path(&k("image"), &raw.image)?;
    let firmware = cx.opt_path(&k("firmware"), &raw.firmware)?;
    let firmware_volume = cx.opt_path(&k("firmware_volume"), &raw.firmware_volume)?;
    if firmware_volume.is_some() && firmware.is_none() {
        return Err(cx.err(
            &k("firmware_volume"),
            "needs firmware (the OVMF code) to go with the vars template",
        ));
    }

    let machine_type = match raw.machine_type.as_deref() {
        None | Some("") => default_machine(guest_arch).to_string(),
        Some(m) => {
            if !m
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
            {
                return Err(cx.err(&k("machine_type"), format!("invalid machine type {m:?}")));
            }
            if !machine_known(guest_arch, m) {
                return Err(cx.err(
                    &k("machine_type"),
                    format!(
                        "machine type {m:?} is not supported on {guest_arch}; expected {}",
                        known_machines(guest_arch)
                    ),
                ));
            }
            m.to_string()
        }
    };

    let rootfs_type = match raw.rootfs_type.as_deref() {
        None | Some("") | Some("ext4") => RootfsType::Ext4,
        Some("xfs") => RootfsType::Xfs,
        Some("erofs") => RootfsType::Erofs,
        Some(o) => {
            return Err(cx.err(
                &k("rootfs_type"),
                format!("unknown rootfs type {o:?}; expected ext4, xfs or erofs"),
            ));
        }
    };

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
    let memory_slots = cx.count(
        &k("memory_slots"),
        raw.memory_slots,
        DEFAULT_MEMORY_SLOTS,
        MAX_MEMORY_SLOTS,
    )?;
    let memory_offset_mib = cx.mib(&k("memory_offset"), raw.memory_offset, 0)?;
    let bridges = cx.count(
        &k("default_bridges"),
        raw.default_bridges,
        DEFAULT_BRIDGES,
        MAX_BRIDGES,
    )?;
    let pcie_root_ports = match raw.pcie_root_port {
        None => 0,
        Some(n) if !(0..=32).contains(&n) => {
            return Err(cx.err(&k("pcie_root_port"), format!("must be 0 to 32 (got {n})")));
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

    let shared_kind = match raw.shared_fs.as_deref() {
        None | Some("") | Some("virtio-fs") => SharedFs::VirtioFs,
        Some("virtio-fs-nydus") => SharedFs::VirtioFsNydus,
        Some("none") => SharedFs::None,
        Some("virtio-9p") => {
            return Err(cx.err(
                &k("shared_fs"),
                "virtio-9p is not supported by sandvm; use virtio-fs",
            ));
        }
        Some(o) => {
            return Err(cx.err(
                &k("shared_fs"),
                format!("unknown value {o:?}; expected virtio-fs, virtio-fs-nydus or none"),
            ));
        }
    };
    let daemon = cx
        .opt_path(&k("virtio_fs_daemon"), &raw.virtio_fs_daemon)?
        .unwrap_or_else(|| PathBuf::from(DEFAULT_VIRTIO_FS_DAEMON));
    if shared_kind != SharedFs::None {
        cx.allowed(
            &k("virtio_fs_daemon"),
            &k("valid_virtio_fs_daemon_paths"),
            &daemon,
            raw.valid_virtio_fs_daemon_paths.as_deref().unwrap_or(&[]),
        )?;
    }
    let cache = match raw.virtio_fs_cache.as_deref() {
        None | Some("") => DEFAULT_VIRTIO_FS_CACHE.to_string(),
        Some(c @ ("auto" | "always" | "never" | "metadata")) => c.to_string(),
        Some("none") => "never".to_string(),
        Some(o) => {
            return Err(cx.err(
                &k("virtio_fs_cache"),
                format!("unknown cache mode {o:?}; expected auto, always, never or metadata"),
            ));
        }
    };
    let cache_size_mib = cx.count(
        &k("virtio_fs_cache_size"),
        raw.virtio_fs_cache_size,
        0,
        1 << 20,
    )?;
    let queue_size = cx.count(
        &k("virtio_fs_queue_size"),
        raw.virtio_fs_queue_size,
        DEFAULT_VIRTIO_FS_QUEUE_SIZE,
        1024,
    )?;
    if !queue_size.is_power_of_two() {
        return Err(cx.err(
            &k("virtio_fs_queue_size"),
            format!("must be a power of two (got {queue_size})"),
        ));
    }

    let driver = match raw.block_device_driver.as_deref() {
        None | Some("") | Some("virtio-scsi") => BlockDriver::VirtioScsi,
        Some("virtio-blk") => BlockDriver::VirtioBlk,
        Some("virtio-blk-ccw") => BlockDriver::VirtioBlkCcw,
        Some("nvdimm") => BlockDriver::Nvdimm,
        Some(o) => return Err(cx.err(
            &k("block_device_driver"),
            format!(
                "unknown driver {o:?}; expected virtio-scsi, virtio-blk, virtio-blk-ccw or nvdimm"
            ),
        )),
    };
    let aio = match raw.block_device_aio.as_deref() {
        None | Some("") => DEFAULT_BLOCK_AIO.to_string(),
        Some(a @ ("threads" | "native" | "io_uring")) => a.to_string(),
        Some(o) => {
            return Err(cx.err(
                &k("block_device_aio"),
                format!("unknown AIO mode {o:?}; expected threads, native or io_uring"),
            ));
        }
    };

    let vfio = |key: &str, v: &Option<String>| -> Result<VfioPort, ConfigError> {
        Ok(match v.as_deref() {
            None | Some("") | Some("no-port") => VfioPort::NoPort,
            Some("bridge-port") => VfioPort::BridgePort,
            Some("root-port") => VfioPort::RootPort,
            Some("switch-port") => VfioPort::SwitchPort,
            Some(o) => return Err(cx.err(
                &k(key),
                format!(
                    "unknown port {o:?}; expected no-port, bridge-port, root-port or switch-port"
                ),
            )),
        })
    };
    let hot_plug_vfio = vfio("hot_plug_vfio", &raw.hot_plug_vfio)?;
    let cold_plug_vfio = vfio("cold_plug_vfio", &raw.cold_plug_vfio)?;

    let entropy_source = cx
        .opt_path(&k("entropy_source"), &raw.entropy_source)?
        .unwrap_or_else(|| PathBuf::from(DEFAULT_ENTROPY_SOURCE));
    cx.allowed(
        &k("entropy_source"),
        &k("valid_entropy_sources"),
        &entropy_source,
        raw.valid_entropy_sources.as_deref().unwrap_or(&[]),
    )?;

    let mut pflashes = Vec::new();
    for (i, p) in raw.pflashes.iter().flatten().enumerate() {
        let key = format!("{}[{i}]", k("pflashes"));
        if let Some(p) = cx.opt_path(&key, &Some(p.clone()))? {
            pflashes.push(p);
        }
    }

    let seccomp_sandbox = raw.seccompsandbox.clone().filter(|s| !s.trim().is_empty());
    if let Some(s) = &seccomp_sandbox {
        crate::qemu::build::parse_sandbox(s).map_err(|e| cx.err(&k("seccompsandbox"), e))?;
    }

    let accelerator = match raw.accelerator.as_deref() {
        None | Some("") | Some("auto") => Accelerator::Auto,
        Some("kvm") => Accelerator::Kvm,
        Some("tcg") => Accelerator::Tcg,
        Some(o) => {
            return Err(cx.err(
                &k("accelerator"),
                format!("unknown accelerator {o:?}; expected kvm, tcg or auto"),
            ));
        }
    };

    // The kernel splits its command line at any whitespace, as sandvm does.
    let kernel_params: Vec<String> = raw
        .kernel_params
        .as_deref()
        .unwrap_or("")
        .split_whitespace()
        .map(String::from)
        .collect();
    cx.printable(&k("kernel_params"), &kernel_params)?;
    if kernel_params
        .iter()
        .map(|p| p.matches('"').count())
        .sum::<usize>()
        % 2
        == 1
    {
        return Err(cx.err(
            &k("kernel_params"),
            "has an unbalanced double quote (the kernel would swallow what follows)",
        ));
    }
    let machine_accelerators = split_list(&raw.machine_accelerators, ',');
    cx.printable(&k("machine_accelerators"), &machine_accelerators)?;
    for opt in &machine_accelerators {
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
    let cpu_features = split_list(&raw.cpu_features, ',');
    cx.printable(&k("cpu_features"), &cpu_features)?;
    let virtio_fs_extra_args = raw.virtio_fs_extra_args.clone().unwrap_or_default();
    if let Some(a) = virtio_fs_extra_args
        .iter()
        .find(|a| a.contains('\n') || a.contains('\0'))
    {
        return Err(cx.err(
            &k("virtio_fs_extra_args"),
            format!("{a:?} contains a newline or NUL"),
        ));
    }

    // firmware_volume is refused above without firmware: together they are UEFI.
    let uefi = firmware_volume.is_some();
    check_pflashes(&cx, guest_arch, &machine_type, pflashes.len(), uefi)?;

    let qemu_user = qemu_user(&cx, raw)?;
    let selinux_label = match raw.selinux_label.as_deref() {
        None | Some("") => None,
        Some(l) if l.contains('\0') || l.contains('\n') => {
            return Err(cx.err(&k("selinux_label"), "contains a newline or NUL"));
        }
        Some(l) => Some(l.to_string()),
    };
    let hugepages = bool_or(raw.enable_hugepages, false);
    let vhost_user_store = bool_or(raw.enable_vhost_user_store, false);
    // Kata's check: vhost-user-blk/scsi daemons (SPDK) need shared hugepage memory.
    if vhost_user_store && !hugepages {
        return Err(cx.err(
            &k("enable_vhost_user_store"),
            "Vhost-user-blk/scsi is enabled without HugePages. This configuration will not work",
        ));
    }

    let factory = FactoryConfig {
        enable_template: factory.enable_template.unwrap_or(false),
        template_path: cx
            .opt_path("factory.template_path", &factory.template_path)?
            .unwrap_or_else(|| PathBuf::from(DEFAULT_TEMPLATE_PATH)),
    };
    // Kata's check: a template VM is built with shared file memory and its
    // clones with private memory; virtio-fs and a file backend need
    // share=on throughout, so neither works with templating.
    if factory.enable_template && (shared_kind != SharedFs::None || file_mem_backend.is_some()) {
        return Err(cx.err(
            "factory.enable_template",
            "VM templating has been enabled with either virtio-fs or file backed memory and this configuration will not work",
        ));
    }

    Ok(HypervisorConfig {
        source: file.to_path_buf(),
        qemu_path,
        kernel,
        initrd,
        image,
        firmware,
        firmware_volume,
        machine_type,
        machine_accelerators,
        cpu_features,
        kernel_params,
        rootfs_type,
        vcpus,
        max_vcpus,
        memory_mib,
        max_memory_mib,
        memory_slots,
        memory_offset_mib,
        bridges,
        pcie_root_ports,
        virtio_mem: bool_or(raw.enable_virtio_mem, false),
        mem_prealloc: bool_or(raw.enable_mem_prealloc, false),
        hugepages,
        file_mem_backend,
        reclaim_guest_freed_memory: bool_or(raw.reclaim_guest_freed_memory, false),
        shared_fs: SharedFsConfig {
            kind: shared_kind,
            daemon: (shared_kind != SharedFs::None).then_some(daemon),
            cache,
            cache_size_mib,
            queue_size,
            extra_args: virtio_fs_extra_args,
        },
        block: BlockConfig {
            driver,
            aio,
            cache_set: bool_or(raw.block_device_cache_set, false),
            cache_direct: bool_or(raw.block_device_cache_direct, false),
            cache_noflush: bool_or(raw.block_device_cache_noflush, false),
            disable_block_device_use: bool_or(raw.disable_block_device_use, false),
            iothreads: bool_or(raw.enable_iothreads, false),
        },
        disable_image_nvdimm: bool_or(raw.disable_image_nvdimm, false),
        iommu: bool_or(raw.enable_iommu, false),
        iommu_platform: bool_or(raw.enable_iommu_platform, false),
        pflashes,
        hot_plug_vfio,
        cold_plug_vfio,
        disable_vhost_net: bool_or(raw.disable_vhost_net, false),
        entropy_source,
        seccomp_sandbox,
        disable_selinux: bool_or(raw.disable_selinux, false),
        rootless: bool_or(raw.rootless, false),
        debug: bool_or(raw.enable_debug, false),
        disable_nesting_checks: bool_or(raw.disable_nesting_checks, false),
        guest_memory_dump_path: cx
            .opt_path(&k("guest_memory_dump_path"), &raw.guest_memory_dump_path)?,
        guest_memory_dump_paging: bool_or(raw.guest_memory_dump_paging, false),
        use_legacy_serial: bool_or(raw.use_legacy_serial, false),
        accelerator,
        guest_arch,
        factory,
        vhost_user_store,
        qemu_user,
        selinux_label,
        extras: super::extras::Extras {
            swtpm: super::extras::swtpm(
                raw.enable_tpm,
                raw.swtpm_path.as_deref(),
                guest_arch,
                &|key, reason| cx.err(&k(key), reason),
                &|p| cx.path(p),
            )?,
            ..super::extras::validate(
                raw.graceful_shutdown_timeout,
                raw.qemu_extra_args.as_deref(),
                raw.fw_cfg.as_deref(),
                raw.port_map.as_deref(),
                &|key, reason| cx.err(&k(key), reason),
                &|p| cx.path(p),
            )?
        },
    })
}

/// sandvm's `qemu_uid`, `qemu_gid` and `qemu_groups`: all or nothing for the
/// ids, and groups only with them.
fn qemu_user(cx: &Ctx<'_>, raw: &RawQemu) -> Result<Option<QemuUser>, ConfigError> {
    let k = |name: &str| format!("hypervisor.qemu.{name}");
    let id = |key: &str, v: i64| -> Result<u32, ConfigError> {
        u32::try_from(v)
            .ok()
            .filter(|v| *v != u32::MAX)
            .ok_or_else(|| cx.err(&k(key), format!("must be 0 to {} (got {v})", u32::MAX - 1)))
    };
    match (raw.qemu_uid, raw.qemu_gid) {
        (None, None) => {
            if raw.qemu_groups.as_ref().is_some_and(|g| !g.is_empty()) {
                return Err(cx.err(&k("qemu_groups"), "needs qemu_uid and qemu_gid"));
            }
            Ok(None)
        }
        (Some(_), None) => Err(cx.err(&k("qemu_gid"), "is required with qemu_uid")),
        (None, Some(_)) => Err(cx.err(&k("qemu_uid"), "is required with qemu_gid")),
        (Some(u), Some(g)) => {
            let mut groups = Vec::new();
            for (i, v) in raw.qemu_groups.iter().flatten().enumerate() {
                groups.push(id(&format!("qemu_groups[{i}]"), *v)?);
            }
            Ok(Some(QemuUser {
                uid: id("qemu_uid", u)?,
                gid: id("qemu_gid", g)?,
                groups,
            }))
        }
    }
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
