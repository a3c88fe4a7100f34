//! NICs: open the tap (`TUNSETIFF` on `/dev/net/tun`) or take the caller's
//! fd, pass it with `getfd`, `netdev_add` with the fd, then `device_add`
//! `virtio-net-pci` (or `-ccw`) with a MAC address. Removal mirrors it:
//! `device_del`, wait for `DEVICE_DELETED`, `netdev_del`.

use super::block::needs_slot;
use super::{HotplugState, Plan, PluggedDevice, QmpCall, Step, validate_device_id};
use crate::config::HypervisorConfig;
use crate::error::{HypervisorError, Result};
use crate::plan::arch::ArchLayout;
use crate::types::DeviceKind;
use serde_json::{Map, json};
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::Arc;

/// Where taps are opened.
pub const TUN_DEVICE: &str = "/dev/net/tun";
/// Longest interface name (IFNAMSIZ without the NUL).
pub const MAX_IFNAME: usize = 15;

const IFF_TAP: libc::c_short = 0x0002;
const IFF_NO_PI: libc::c_short = 0x1000;
const IFF_VNET_HDR: libc::c_short = 0x4000;
/// `_IOW('T', 202, int)`.
const TUNSETIFF: libc::c_ulong = 0x4004_54ca;

#[repr(C)]
struct IfReq {
    name: [libc::c_char; 16],
    flags: libc::c_short,
    _pad: [u8; 22],
}

/// Check a tap name: 1 to 15 bytes, no `/`, whitespace or NUL.
pub fn validate_ifname(name: &str) -> Result<()> {
    if name.is_empty()
        || name.len() > MAX_IFNAME
        || name
            .bytes()
            .any(|b| b == b'/' || b == 0 || b.is_ascii_whitespace())
    {
        return Err(HypervisorError::invalid(
            "tap name",
            name,
            format!("1 to {MAX_IFNAME} bytes without '/' or spaces"),
        ));
    }
    Ok(())
}

/// Open the tap `name` (created by the caller, e.g. `ip tuntap add NAME mode
/// tap`, or created here if it does not exist) with a virtio-net header.
pub fn open_tap(name: &str) -> Result<OwnedFd> {
    validate_ifname(name)?;
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(TUN_DEVICE)
        .map_err(HypervisorError::io(TUN_DEVICE))?;
    let mut req = IfReq {
        name: [0; 16],
        flags: IFF_TAP | IFF_NO_PI | IFF_VNET_HDR,
        _pad: [0; 22],
    };
    for (d, s) in req.name.iter_mut().zip(name.bytes()) {
        *d = s as libc::c_char;
    }
    #[allow(unsafe_code)]
    // SAFETY: `f` is an open /dev/net/tun fd and `req` is a properly sized,
    // initialised `struct ifreq` that lives across the call.
    let rc = unsafe { libc::ioctl(f.as_raw_fd(), TUNSETIFF as _, &mut req as *mut IfReq) };
    if rc < 0 {
        return Err(HypervisorError::Io {
            what: format!("open tap {name} (TUNSETIFF)"),
            source: std::io::Error::last_os_error(),
        });
    }
    Ok(OwnedFd::from(f))
}

/// A random locally administered unicast MAC address.
pub fn random_mac() -> String {
    let b = *uuid::Uuid::new_v4().as_bytes();
    let first = (b[0] & 0xfe) | 0x02;
    format!(
        "{first:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
        b[1], b[2], b[3], b[4], b[5]
    )
}

/// Check a MAC address: six hex pairs, not multicast. Returns it lower-cased.
pub fn parse_mac(mac: &str) -> Result<String> {
    let bad = |why: &str| HypervisorError::invalid("MAC address", mac, why);
    let parts: Vec<&str> = mac.split(':').collect();
    if parts.len() != 6 || parts.iter().any(|p| p.len() != 2) {
        return Err(bad("expected six hex pairs like 02:00:00:00:00:01"));
    }
    let bytes: Vec<u8> = parts
        .iter()
        .map(|p| u8::from_str_radix(p, 16))
        .collect::<std::result::Result<_, _>>()
        .map_err(|_| bad("not hexadecimal"))?;
    if bytes[0] & 1 == 1 {
        return Err(bad("a multicast address"));
    }
    Ok(mac.to_ascii_lowercase())
}

/// Whether QEMU should use vhost-net for this config on this host.
pub fn use_vhost(cfg: &HypervisorConfig) -> bool {
    !cfg.disable_vhost_net && std::path::Path::new("/dev/vhost-net").exists()
}

fn tap_backend(cfg: &HypervisorConfig) -> NetBackend {
    NetBackend::Tap {
        vhost: use_vhost(cfg),
    }
}

/// What a NIC's netdev runs on; the fd is passed with `getfd` either way.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NetBackend {
    /// A tap, with or without vhost-net.
    Tap {
        /// `vhost=on` on the netdev.
        vhost: bool,
    },
    /// One end of a cable: a `SOCK_DGRAM` unix socket (see `cable.rs`).
    Dgram,
}

impl NetBackend {
    fn netdev_add(self, netdev: &str, fdname: &str) -> serde_json::Value {
        match self {
            NetBackend::Tap { vhost } => {
                json!({ "type": "tap", "id": netdev, "fd": fdname, "vhost": vhost })
            }
            NetBackend::Dgram => json!({
                "type": "dgram",
                "id": netdev,
                "local": { "type": "fd", "str": fdname },
            }),
        }
    }

    /// The prefix of generated ids, and the name used in errors.
    fn names(self) -> (&'static str, &'static str) {
        match self {
            NetBackend::Tap { .. } => ("net", "a NIC"),
            NetBackend::Dgram => ("cable", "a cable NIC"),
        }
    }
}

/// The steps for a NIC `id` on the fd named `fd-<id>`.
pub fn steps(id: &str, mac: &str, backend: NetBackend, ccw: bool) -> Vec<Step> {
    let fdname = format!("fd-{id}");
    let netdev = format!("netdev-{id}");
    let mut getfd = Step::new(
        QmpCall::new("getfd", json!({ "fdname": fdname })),
        Some(QmpCall::new("closefd", json!({ "fdname": fdname }))),
    );
    getfd.pass_fd = true;
    // netdev_add takes the named fd over: nothing to close after it.
    getfd.undo_on_remove = false;
    let netdev_add = Step::new(
        QmpCall::new("netdev_add", backend.netdev_add(&netdev, &fdname)),
        Some(QmpCall::new("netdev_del", json!({ "id": netdev }))),
    );
    let mut props = Map::new();
    props.insert("netdev".into(), netdev.into());
    props.insert("mac".into(), mac.into());
    vec![getfd, netdev_add, Step::device(nic_driver(ccw), id, props)]
}

fn nic_driver(ccw: bool) -> &'static str {
    if ccw {
        "virtio-net-ccw"
    } else {
        "virtio-net-pci"
    }
}

/// The plan for a NIC `id` (generated when empty) on `fd`; `info` is recorded
/// with the MAC added.
pub(super) fn plan_with(
    arch: &ArchLayout,
    hp: &HotplugState,
    id: String,
    fd: OwnedFd,
    mac: Option<String>,
    backend: NetBackend,
    mut info: Map<String, serde_json::Value>,
) -> Result<Plan> {
    let (prefix, what) = backend.names();
    let id = if id.is_empty() {
        hp.next_id(prefix)
    } else {
        id
    };
    validate_device_id(&id)?;
    let mac = match mac {
        Some(m) => parse_mac(&m)?,
        None => random_mac(),
    };
    let slot = needs_slot(arch, what)?;
    let steps = steps(&id, &mac, backend, !slot);
    info.insert("mac".into(), mac.into());
    Ok(Plan {
        record: PluggedDevice {
            id,
            kind: DeviceKind::Net,
            driver: nic_driver(!slot).into(),
            slot: None,
            info,
            placement: None,
            remove: Vec::new(),
            add: Vec::new(),
        },
        steps,
        fd: Some(fd),
        needs_slot: slot,
    })
}

/// The plan for a NIC on the tap `tap` (opened here).
pub fn plan_tap(
    cfg: &HypervisorConfig,
    arch: &ArchLayout,
    hp: &HotplugState,
    id: String,
    tap: &str,
    mac: Option<String>,
) -> Result<Plan> {
    // Check what can be checked before opening anything.
    if let Some(m) = &mac {
        parse_mac(m)?;
    }
    needs_slot(arch, "a NIC")?;
    let fd = open_tap(tap)?;
    let mut info = Map::new();
    info.insert("tap".into(), tap.into());
    plan_with(arch, hp, id, fd, mac, tap_backend(cfg), info)
}

/// The plan for a NIC on a tap fd the caller opened.
pub fn plan_fd(
    cfg: &HypervisorConfig,
    arch: &ArchLayout,
    hp: &HotplugState,
    id: String,
    fd: Arc<OwnedFd>,
    mac: Option<String>,
) -> Result<Plan> {
    let fd = fd.try_clone().map_err(HypervisorError::io("dup tap fd"))?;
    plan_with(arch, hp, id, fd, mac, tap_backend(cfg), Map::new())
}
