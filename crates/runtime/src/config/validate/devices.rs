//! Devices: the shared filesystem (`shared_fs`, `virtio_fs_*`), block
//! devices (`block_device_*`, `enable_iothreads`), VFIO ports and the RNG
//! (`entropy_source`).

use super::{Ctx, bool_or, k};
use crate::config::ConfigError;
use crate::config::raw::RawQemu;
use crate::config::types::*;
use std::path::PathBuf;

/// vhost-user-fs queue size when unset (Kata: 1024).
pub const DEFAULT_VIRTIO_FS_QUEUE_SIZE: u32 = 1024;
/// virtio-fs cache mode when unset (Kata: "auto").
pub const DEFAULT_VIRTIO_FS_CACHE: &str = "auto";
/// virtio-fs daemon when unset (Kata's).
pub const DEFAULT_VIRTIO_FS_DAEMON: &str = "/usr/libexec/virtiofsd";
/// 9p message size when unset or 0 (Kata: 8192).
pub const DEFAULT_MSIZE_9P: u32 = 8192;
/// Smallest and largest 9p message size sandvm accepts, bytes: one page to
/// 1 MiB (the guest's 9p client lowers a larger msize to its transport's
/// limit itself).
pub const MSIZE_9P_RANGE: (u32, u32) = (4096, 1_048_576);
/// Block AIO when unset (Kata: io_uring).
pub const DEFAULT_BLOCK_AIO: &str = "io_uring";
/// RNG source when unset.
pub const DEFAULT_ENTROPY_SOURCE: &str = "/dev/urandom";

/// The devices section, checked.
pub(super) struct Devices {
    pub shared_fs: SharedFsConfig,
    pub block: BlockConfig,
    pub hot_plug_vfio: VfioPort,
    pub cold_plug_vfio: VfioPort,
    pub entropy_source: PathBuf,
}

pub(super) fn check(cx: &Ctx<'_>, raw: &RawQemu) -> Result<Devices, ConfigError> {
    let entropy_source = cx
        .opt_path(&k("entropy_source"), &raw.entropy_source)?
        .unwrap_or_else(|| PathBuf::from(DEFAULT_ENTROPY_SOURCE));
    cx.allowed(
        &k("entropy_source"),
        &k("valid_entropy_sources"),
        &entropy_source,
        raw.valid_entropy_sources.as_deref().unwrap_or(&[]),
    )?;
    Ok(Devices {
        shared_fs: shared_fs(cx, raw)?,
        block: block(cx, raw)?,
        hot_plug_vfio: vfio(cx, "hot_plug_vfio", &raw.hot_plug_vfio)?,
        cold_plug_vfio: vfio(cx, "cold_plug_vfio", &raw.cold_plug_vfio)?,
        entropy_source,
    })
}

fn shared_fs_kind(cx: &Ctx<'_>, raw: &RawQemu) -> Result<SharedFs, ConfigError> {
    match raw.shared_fs.as_deref() {
        None | Some("") | Some("virtio-fs") => Ok(SharedFs::VirtioFs),
        Some("virtio-fs-nydus") => Ok(SharedFs::VirtioFsNydus),
        Some("none") => Ok(SharedFs::None),
        Some("virtio-9p") => Ok(SharedFs::Virtio9p),
        Some(o) => Err(cx.err(
            &k("shared_fs"),
            format!("unknown value {o:?}; expected virtio-fs, virtio-fs-nydus, virtio-9p or none"),
        )),
    }
}

fn shared_fs(cx: &Ctx<'_>, raw: &RawQemu) -> Result<SharedFsConfig, ConfigError> {
    let kind = shared_fs_kind(cx, raw)?;
    let daemon = cx
        .opt_path(&k("virtio_fs_daemon"), &raw.virtio_fs_daemon)?
        .unwrap_or_else(|| PathBuf::from(DEFAULT_VIRTIO_FS_DAEMON));
    if kind.has_daemon() {
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
    let extra_args = raw.virtio_fs_extra_args.clone().unwrap_or_default();
    if let Some(a) = extra_args
        .iter()
        .find(|a| a.contains('\n') || a.contains('\0'))
    {
        return Err(cx.err(
            &k("virtio_fs_extra_args"),
            format!("{a:?} contains a newline or NUL"),
        ));
    }
    Ok(SharedFsConfig {
        inode_file_handles: inode_file_handles(cx, raw, kind)?,
        kind,
        msize_9p: msize_9p(cx, raw)?,
        daemon: kind.has_daemon().then_some(daemon),
        cache,
        queue_size,
        extra_args,
    })
}

/// `msize_9p`: 0 or unset for [`DEFAULT_MSIZE_9P`], else within
/// [`MSIZE_9P_RANGE`]. Checked whatever `shared_fs` is (Kata's files set it
/// with virtio-fs too), used only with virtio-9p.
fn msize_9p(cx: &Ctx<'_>, raw: &RawQemu) -> Result<u32, ConfigError> {
    let (min, max) = MSIZE_9P_RANGE;
    match raw.msize_9p {
        None | Some(0) => Ok(DEFAULT_MSIZE_9P),
        Some(n) if n >= min as i64 && n <= max as i64 => Ok(n as u32),
        Some(n) => Err(cx.err(
            &k("msize_9p"),
            format!("must be 0 (Kata's default, {DEFAULT_MSIZE_9P}) or from {min} to {max} bytes (got {n})"),
        )),
    }
}

/// `virtio_fs_inode_file_handles`: virtiofsd's modes; nydusd has none, so
/// anything but `never` with `virtio-fs-nydus` is an error.
fn inode_file_handles(
    cx: &Ctx<'_>,
    raw: &RawQemu,
    kind: SharedFs,
) -> Result<Option<String>, ConfigError> {
    let key = k("virtio_fs_inode_file_handles");
    let mode = match raw.virtio_fs_inode_file_handles.as_deref() {
        None | Some("") => return Ok(None),
        Some(m @ ("never" | "prefer" | "mandatory")) => m,
        Some(o) => {
            return Err(cx.err(
                &key,
                format!("unknown mode {o:?}; expected never, prefer or mandatory"),
            ));
        }
    };
    if kind == SharedFs::VirtioFsNydus && mode != "never" {
        return Err(cx.err(&key, "nydusd has no inode file handles; only virtiofsd"));
    }
    Ok(Some(mode.to_string()))
}

fn block(cx: &Ctx<'_>, raw: &RawQemu) -> Result<BlockConfig, ConfigError> {
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
    let logical = sector_size(
        cx,
        "block_device_logical_sector_size",
        raw.block_device_logical_sector_size,
    )?;
    let physical = sector_size(
        cx,
        "block_device_physical_sector_size",
        raw.block_device_physical_sector_size,
    )?;
    if let (Some(l), Some(p)) = (logical, physical)
        && l > p
    {
        return Err(cx.err(
            &k("block_device_logical_sector_size"),
            format!("{l} is larger than block_device_physical_sector_size {p}"),
        ));
    }
    Ok(BlockConfig {
        driver,
        aio,
        logical_sector_size: logical,
        physical_sector_size: physical,
        cache_set: bool_or(raw.block_device_cache_set, false),
        cache_direct: bool_or(raw.block_device_cache_direct, false),
        cache_noflush: bool_or(raw.block_device_cache_noflush, false),
        disable_block_device_use: bool_or(raw.disable_block_device_use, false),
        iothreads: bool_or(raw.enable_iothreads, false),
        indep_iothreads: cx.count(
            &k("indep_iothreads"),
            raw.indep_iothreads,
            0,
            MAX_INDEP_IOTHREADS,
        )?,
    })
}

/// Most independent iothreads (`indep_iothreads`): one per vCPU of the largest guest.
pub const MAX_INDEP_IOTHREADS: u32 = super::MAX_VCPUS;

/// Smallest and largest disk sector size, bytes (Kata's bounds).
pub const SECTOR_SIZES: (u32, u32) = (512, 65536);

/// A sector size: 0 or unset for QEMU's default, else a power of two within
/// [`SECTOR_SIZES`].
fn sector_size(cx: &Ctx<'_>, key: &str, v: Option<i64>) -> Result<Option<u32>, ConfigError> {
    let (min, max) = SECTOR_SIZES;
    match v {
        None | Some(0) => Ok(None),
        Some(n) if n >= min as i64 && n <= max as i64 && (n as u32).is_power_of_two() => {
            Ok(Some(n as u32))
        }
        Some(n) => Err(cx.err(
            &k(key),
            format!("must be 0 or a power of two from {min} to {max} (got {n})"),
        )),
    }
}

fn vfio(cx: &Ctx<'_>, key: &str, v: &Option<String>) -> Result<VfioPort, ConfigError> {
    Ok(match v.as_deref() {
        None | Some("") | Some("no-port") => VfioPort::NoPort,
        Some("bridge-port") => VfioPort::BridgePort,
        Some("root-port") => VfioPort::RootPort,
        Some("switch-port") => VfioPort::SwitchPort,
        Some(o) => {
            return Err(cx.err(
                &k(key),
                format!(
                    "unknown port {o:?}; expected no-port, bridge-port, root-port or switch-port"
                ),
            ));
        }
    })
}
