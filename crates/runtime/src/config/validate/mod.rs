//! From [`RawQemu`] to the checked [`HypervisorConfig`], one section at a
//! time: boot assets and machine (`boot.rs`), CPUs and memory
//! (`resources.rs`), devices and the shared filesystem (`devices.rs`),
//! security (`security.rs`), the factory (`factory.rs`) and the agent
//! channel (`agent.rs`).
//!
//! Defaults follow Kata's. Every error names the file and the key.

mod agent;
mod boot;
mod devices;
mod factory;
pub mod numa;
mod resources;
mod security;

pub use agent::{DEFAULT_AGENT_PORT, DEFAULT_VSOCK_DAEMON};
pub use boot::{default_machine, machine_known};
pub use devices::{
    DEFAULT_BLOCK_AIO, DEFAULT_ENTROPY_SOURCE, DEFAULT_MSIZE_9P, DEFAULT_VIRTIO_FS_CACHE,
    DEFAULT_VIRTIO_FS_DAEMON, DEFAULT_VIRTIO_FS_QUEUE_SIZE, MSIZE_9P_RANGE,
};
pub use factory::DEFAULT_TEMPLATE_PATH;
pub use resources::{
    DEFAULT_BRIDGES, DEFAULT_MEMORY_MIB, DEFAULT_MEMORY_SLOTS, DEFAULT_VCPUS, MAX_BRIDGES,
    MAX_MEMORY_MIB, MAX_MEMORY_SLOTS, MAX_VCPUS,
};

use super::raw::{RawFactory, RawQemu};
use super::types::*;
use super::{ConfigError, HostInfo};
use std::path::{Path, PathBuf};

/// Most pflash units a q35 or virt machine has (code and vars).
pub const MAX_PFLASHES: usize = 2;

/// The file being checked: names it in errors, anchors relative paths.
pub(super) struct Ctx<'a> {
    file: &'a Path,
    dir: &'a Path,
}

/// `hypervisor.qemu.<name>`.
pub(super) fn k(name: &str) -> String {
    format!("hypervisor.qemu.{name}")
}

impl Ctx<'_> {
    pub(super) fn err(&self, key: &str, reason: impl Into<String>) -> ConfigError {
        ConfigError::Invalid {
            file: self.file.display().to_string(),
            key: key.to_string(),
            reason: reason.into(),
        }
    }

    /// Resolve a path against the config file's folder.
    pub(super) fn path(&self, p: &str) -> PathBuf {
        let p = Path::new(p);
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            self.dir.join(p)
        }
    }

    pub(super) fn opt_path(
        &self,
        key: &str,
        v: &Option<String>,
    ) -> Result<Option<PathBuf>, ConfigError> {
        match v.as_deref() {
            None | Some("") => Ok(None),
            Some(s) if s.contains('\n') || s.contains('\0') => {
                Err(self.err(key, "path contains a newline or NUL"))
            }
            Some(s) => Ok(Some(self.path(s))),
        }
    }

    pub(super) fn count(
        &self,
        key: &str,
        v: Option<i64>,
        default: u32,
        max: u32,
    ) -> Result<u32, ConfigError> {
        match v {
            None | Some(0) => Ok(default),
            Some(n) if n < 0 => Err(self.err(key, format!("must not be negative (got {n})"))),
            Some(n) if n > max as i64 => {
                Err(self.err(key, format!("must be at most {max} (got {n})")))
            }
            Some(n) => Ok(n as u32),
        }
    }

    pub(super) fn mib(&self, key: &str, v: Option<i64>, default: u64) -> Result<u64, ConfigError> {
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
    pub(super) fn printable(&self, key: &str, items: &[String]) -> Result<(), ConfigError> {
        match items.iter().find(|i| i.chars().any(char::is_control)) {
            Some(i) => Err(self.err(key, format!("{i:?} contains a control character"))),
            None => Ok(()),
        }
    }

    /// `path` must match one of `globs` (the `valid_*` list `list_key`);
    /// an empty list allows any path.
    pub(super) fn allowed(
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

pub(super) fn split_list(s: &Option<String>, sep: char) -> Vec<String> {
    s.as_deref()
        .unwrap_or("")
        .split(sep)
        .map(str::trim)
        .filter(|x| !x.is_empty())
        .map(String::from)
        .collect()
}

pub(super) fn bool_or(v: Option<bool>, d: bool) -> bool {
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
    let boot = boot::check(&cx, raw, host)?;
    let res = resources::check(&cx, raw, host)?;
    let numa = numa::check(&cx, raw, host, res.max_vcpus, res.memory_mib)?;
    let dev = devices::check(&cx, raw)?;
    let sec = security::check(&cx, raw)?;
    let factory = factory::check(
        &cx,
        factory,
        dev.shared_fs.kind,
        res.file_mem_backend.as_ref(),
    )?;
    if factory.enable_template && !numa.is_empty() {
        return Err(cx.err(
            &k("enable_numa"),
            "a VM template's memory is one file that every clone maps; it cannot be split into NUMA nodes (turn off [factory] enable_template)",
        ));
    }
    let agent = agent::check(&cx, raw, &factory)?;
    let extras = super::extras::Extras {
        swtpm: super::extras::swtpm(
            raw.enable_tpm,
            raw.swtpm_path.as_deref(),
            boot.guest_arch,
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
    };
    Ok(HypervisorConfig {
        source: file.to_path_buf(),
        qemu_path: boot.qemu_path,
        kernel: boot.kernel,
        initrd: boot.initrd,
        image: boot.image,
        firmware: boot.firmware,
        firmware_volume: boot.firmware_volume,
        machine_type: boot.machine_type,
        machine_accelerators: boot.machine_accelerators,
        cpu_features: boot.cpu_features,
        kernel_params: boot.kernel_params,
        rootfs_type: boot.rootfs_type,
        vcpus: res.vcpus,
        max_vcpus: res.max_vcpus,
        memory_mib: res.memory_mib,
        numa,
        max_memory_mib: res.max_memory_mib,
        memory_slots: res.memory_slots,
        memory_offset_mib: res.memory_offset_mib,
        bridges: res.bridges,
        pcie_root_ports: res.pcie_root_ports,
        virtio_mem: bool_or(raw.enable_virtio_mem, false),
        mem_prealloc: bool_or(raw.enable_mem_prealloc, false),
        hugepages: res.hugepages,
        file_mem_backend: res.file_mem_backend,
        reclaim_guest_freed_memory: bool_or(raw.reclaim_guest_freed_memory, false),
        shared_fs: dev.shared_fs,
        block: dev.block,
        disable_image_nvdimm: bool_or(raw.disable_image_nvdimm, false),
        iommu: bool_or(raw.enable_iommu, false),
        iommu_platform: bool_or(raw.enable_iommu_platform, false),
        pflashes: boot.pflashes,
        hot_plug_vfio: dev.hot_plug_vfio,
        cold_plug_vfio: dev.cold_plug_vfio,
        disable_vhost_net: bool_or(raw.disable_vhost_net, false),
        entropy_source: dev.entropy_source,
        seccomp_sandbox: sec.seccomp_sandbox,
        disable_selinux: bool_or(raw.disable_selinux, false),
        rootless: bool_or(raw.rootless, false),
        debug: bool_or(raw.enable_debug, false),
        extra_monitor: sec.extra_monitor,
        disable_nesting_checks: bool_or(raw.disable_nesting_checks, false),
        guest_memory_dump_path: cx
            .opt_path(&k("guest_memory_dump_path"), &raw.guest_memory_dump_path)?,
        guest_memory_dump_paging: bool_or(raw.guest_memory_dump_paging, false),
        use_legacy_serial: bool_or(raw.use_legacy_serial, false),
        allow_reboot: boot.allow_reboot,
        accelerator: boot.accelerator,
        guest_arch: boot.guest_arch,
        factory,
        vhost_user_store: res.vhost_user_store,
        qemu_user: sec.qemu_user,
        selinux_label: sec.selinux_label,
        extras,
        agent,
        origin: Origin::default(),
    })
}
