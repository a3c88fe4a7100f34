//! The shared filesystem: virtio-fs (the vhost-user-fs device QEMU gets,
//! and the command lines of the daemons that serve it: virtiofsd, nydusd in
//! virtiofs mode), or virtio-9p (an `-fsdev local` and a virtio-9p device,
//! served by QEMU itself, no daemon).
//!
//! virtiofsd gets its listening socket pre-bound as fd 3 (`--fd=3`, as Kata
//! does), so QEMU can connect the moment it starts. nydusd binds its own
//! sockets and mounts the share as a passthrough filesystem at
//! `/containers` through its API (Kata's `sharedPathInGuest`).

use crate::config::{HypervisorConfig, SharedFs};
use qemu_config::{
    Chardev, Device, Fsdev, Multidevs, SecurityModel, Transport, VhostUserFs, Virtio9p,
};
use serde::{Deserialize, Serialize};
use std::path::Path;

/// The guest mount tag of the share (Kata's).
pub const MOUNT_TAG: &str = "kataShared";
/// The vhost-user socket of the daemon, in the sandbox folder.
pub const FS_SOCKET: &str = "fs.sock";
/// nydusd's API socket, in the sandbox folder.
pub const FS_API_SOCKET: &str = "fs-api.sock";
/// The folder shared when `create` gets no `--share`, in the sandbox folder.
pub const DEFAULT_SHARE: &str = "shared";
/// Chardev id of the vhost-user socket.
pub const FS_CHARDEV: &str = "char-fs0";
/// Device id of the vhost-user-fs device.
pub const FS_DEVICE: &str = "vhost-user-fs0";
/// Fsdev id of the 9p share (Kata's).
pub const FS9P_FSDEV: &str = "extra-9p-kataShared";
/// Device id of the virtio-9p device.
pub const FS9P_DEVICE: &str = "virtio-9p0";
/// The fd virtiofsd finds its listening socket on.
pub const VIRTIOFSD_SOCKET_FD: i32 = 3;
/// Where nydusd mounts the passthrough filesystem inside the device (Kata's).
pub const NYDUS_MOUNTPOINT: &str = "/containers";
/// nydusd's filesystem type for a host folder.
pub const NYDUS_PASSTHROUGH_FS: &str = "passthrough_fs";
/// `--rlimit-nofile 0` leaves the fd limit alone (nydusd's default, 1,000,000,
/// is above many hosts' hard limit and makes it exit).
pub const NYDUS_RLIMIT_NOFILE: &str = "0";

/// Which process serves the share.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DaemonKind {
    /// virtiofsd.
    Virtiofsd,
    /// nydusd in virtiofs mode with a passthrough mount.
    Nydusd,
    /// No daemon: QEMU serves the share itself (virtio-9p); nothing is spawned.
    Virtio9p,
}

impl DaemonKind {
    /// The daemon's name (and its log's stem).
    pub fn name(self) -> &'static str {
        match self {
            DaemonKind::Virtiofsd => "virtiofsd",
            DaemonKind::Nydusd => "nydusd",
            DaemonKind::Virtio9p => "virtio-9p",
        }
    }

    /// Whether a daemon process is spawned (not for virtio-9p).
    pub fn spawns(self) -> bool {
        self != DaemonKind::Virtio9p
    }

    /// The daemon's log file in the sandbox folder.
    pub fn log(self) -> String {
        format!("{}.log", self.name())
    }

    /// What serves a shared filesystem kind's share; `None` without a share.
    pub fn of(kind: SharedFs) -> Option<DaemonKind> {
        match kind {
            SharedFs::None => None,
            SharedFs::VirtioFs => Some(DaemonKind::Virtiofsd),
            SharedFs::VirtioFsNydus => Some(DaemonKind::Nydusd),
            SharedFs::Virtio9p => Some(DaemonKind::Virtio9p),
        }
    }
}

/// The chardev and vhost-user-fs device QEMU needs for the share.
pub fn vhost_user_fs(
    cfg: &HypervisorConfig,
    dir: &Path,
    transport: Transport,
    devno: Option<String>,
) -> (Chardev, Device) {
    let chardev = Chardev::Socket {
        id: FS_CHARDEV.into(),
        path: Some(dir.join(FS_SOCKET).display().to_string()),
        fd: None,
        server: false,
        wait: false,
        logfile: None,
        logappend: None,
    };
    let dev = Device::VhostUserFs(VhostUserFs {
        transport,
        id: FS_DEVICE.into(),
        chardev: FS_CHARDEV.into(),
        tag: MOUNT_TAG.into(),
        queue_size: Some(cfg.shared_fs.queue_size),
        cache_size: None,
        bus: None,
        addr: None,
        devno,
        iommu_platform: cfg.iommu_platform,
        romfile: None,
    });
    (chardev, dev)
}

/// The 9p share: `-fsdev local` on `share` (`security_model=none`: files
/// are created as QEMU's user; `multidevs=remap`: inode numbers stay unique
/// when the share holds other mounts), and the virtio-9p device with the
/// mount tag. Only the fsdev's path differs between a template and its
/// clones; the guest-visible device (id, tag, place) is the same.
pub fn virtio_9p(
    cfg: &HypervisorConfig,
    share: &Path,
    transport: Transport,
    devno: Option<String>,
) -> (Fsdev, Device) {
    let fsdev = Fsdev {
        id: FS9P_FSDEV.into(),
        path: share.display().to_string(),
        security_model: SecurityModel::None,
        multidevs: Some(Multidevs::Remap),
        readonly: false,
    };
    let dev = Device::Virtio9p(Virtio9p {
        transport,
        id: FS9P_DEVICE.into(),
        fsdev: FS9P_FSDEV.into(),
        mount_tag: MOUNT_TAG.into(),
        bus: None,
        addr: None,
        devno,
        iommu_platform: cfg.iommu_platform,
    });
    (fsdev, dev)
}

/// virtiofsd's `--sandbox` for a runtime with or without root:
/// `namespace` (mount, pid and net namespaces, pivot_root) needs root.
pub fn virtiofsd_sandbox(root: bool) -> &'static str {
    if root { "namespace" } else { "none" }
}

/// virtiofsd's arguments (Kata's, with the log on stderr instead of
/// syslog): socket fd, shared folder, cache mode, inode file handles when
/// set, sandbox mode, log level, then `virtio_fs_extra_args` (which may
/// override the sandbox mode).
pub fn virtiofsd_args(cfg: &HypervisorConfig, share: &Path, root: bool) -> Vec<String> {
    let fs = &cfg.shared_fs;
    let mut a = vec![
        format!("--fd={VIRTIOFSD_SOCKET_FD}"),
        format!("--shared-dir={}", share.display()),
        format!("--cache={}", fs.cache),
    ];
    if let Some(mode) = &fs.inode_file_handles {
        a.push(format!("--inode-file-handles={mode}"));
    }
    let user_sandbox = fs.extra_args.iter().any(|x| x.starts_with("--sandbox"));
    if !user_sandbox {
        a.push(format!("--sandbox={}", virtiofsd_sandbox(root)));
    }
    a.push(format!(
        "--log-level={}",
        if cfg.debug { "debug" } else { "info" }
    ));
    a.extend(fs.extra_args.iter().cloned());
    a
}

/// nydusd's arguments: virtiofs mode, log level, API and vhost-user
/// sockets, fd limit, then `virtio_fs_extra_args`.
pub fn nydusd_args(cfg: &HypervisorConfig, dir: &Path) -> Vec<String> {
    let mut a: Vec<String> = vec![
        "virtiofs".into(),
        "--log-level".into(),
        if cfg.debug { "debug" } else { "info" }.into(),
        "--apisock".into(),
        dir.join(FS_API_SOCKET).display().to_string(),
        "--sock".into(),
        dir.join(FS_SOCKET).display().to_string(),
    ];
    if !cfg
        .shared_fs
        .extra_args
        .iter()
        .any(|x| x.starts_with("--rlimit-nofile"))
    {
        a.extend(["--rlimit-nofile".into(), NYDUS_RLIMIT_NOFILE.into()]);
    }
    a.extend(cfg.shared_fs.extra_args.iter().cloned());
    a
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{GuestArch, HostInfo, parse_str};

    fn cfg(extra: &str) -> HypervisorConfig {
        let host = HostInfo {
            numa_nodes: 1,
            cpus: 2,
            mem_mib: 4096,
            arch: GuestArch::X86_64,
        };
        let text = format!("[hypervisor.qemu]\nkernel = \"/k\"\n{extra}\n");
        parse_str(Path::new("/etc/sandvm/t.toml"), &text, &host)
            .unwrap()
            .config
    }

    #[test]
    fn virtiofsd_gets_the_inode_file_handles_mode_when_set() {
        let share = Path::new("/run/sandvm/t/shared");
        let plain = virtiofsd_args(&cfg(""), share, true);
        assert!(
            !plain.iter().any(|a| a.contains("inode-file-handles")),
            "{plain:?}"
        );
        let a = virtiofsd_args(
            &cfg("virtio_fs_inode_file_handles = \"prefer\""),
            share,
            true,
        );
        assert_eq!(
            a[..4],
            [
                format!("--fd={VIRTIOFSD_SOCKET_FD}"),
                "--shared-dir=/run/sandvm/t/shared".to_string(),
                "--cache=auto".to_string(),
                "--inode-file-handles=prefer".to_string(),
            ]
        );
    }
}
