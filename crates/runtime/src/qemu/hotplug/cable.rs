//! Cables: two sandboxes joined by a `socketpair(AF_UNIX, SOCK_DGRAM)`, one
//! end in each QEMU as a NIC, so the guests talk with no host network.
//!
//! Each end is a NIC like `net.rs`'s, on a `dgram` netdev instead of a tap:
//! `getfd` passes the socket, `netdev_add {"type":"dgram","local":{"type":
//! "fd","str":NAME}}` takes it over, `device_add virtio-net-pci` (or `-ccw`)
//! puts the NIC on a bridge slot. Each frame is one datagram. The record is a
//! [`DeviceKind::Net`] with `cable = <peer>` in its info, so `unplug` and
//! `stop` clean it up like any NIC. When one end goes (unplug, stop), the
//! other keeps a NIC whose frames go nowhere until it is unplugged too.

use super::net::{NetBackend, plan_with};
use super::{HotplugState, Plan};
use crate::error::{HypervisorError, Result};
use crate::plan::arch::ArchLayout;
use serde_json::Map;
use std::os::fd::OwnedFd;
use std::sync::Arc;

/// A pair of connected `SOCK_DGRAM` unix sockets, close-on-exec: one end for
/// each sandbox of a cable.
pub fn socketpair() -> Result<(OwnedFd, OwnedFd)> {
    use nix::sys::socket::{AddressFamily, SockFlag, SockType, socketpair};
    socketpair(
        AddressFamily::Unix,
        SockType::Datagram,
        None,
        SockFlag::SOCK_CLOEXEC,
    )
    .map_err(|e| HypervisorError::Io {
        what: "socketpair(AF_UNIX, SOCK_DGRAM) for a cable".into(),
        source: e.into(),
    })
}

/// The plan for one end of a cable to `peer` on the socket `fd`: a NIC like
/// `net.rs`'s on a `dgram` netdev, recorded with `cable = <peer>`.
pub fn plan(
    arch: &ArchLayout,
    hp: &HotplugState,
    id: String,
    fd: Arc<OwnedFd>,
    mac: Option<String>,
    peer: &str,
) -> Result<Plan> {
    let fd = fd
        .try_clone()
        .map_err(HypervisorError::io("dup cable socket"))?;
    let mut info = Map::new();
    info.insert("cable".into(), peer.into());
    plan_with(arch, hp, id, fd, mac, NetBackend::Dgram, info)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use crate::qemu::hotplug::net::steps;
    use nix::sys::socket::{getsockopt, sockopt};
    use serde_json::json;

    #[test]
    fn steps_pass_the_fd_to_a_dgram_netdev() {
        let s = steps("cable0", "02:00:00:00:00:01", NetBackend::Dgram, false);
        assert_eq!(s.len(), 3);
        assert_eq!(s[0].call.execute, "getfd");
        assert!(s[0].pass_fd && !s[0].undo_on_remove);
        assert_eq!(
            s[1].call.arguments,
            json!({"type": "dgram", "id": "netdev-cable0",
                   "local": {"type": "fd", "str": "fd-cable0"}})
        );
        assert_eq!(s[2].call.arguments["driver"], "virtio-net-pci");
        assert_eq!(s[2].call.arguments["netdev"], "netdev-cable0");
        assert_eq!(s[2].call.arguments["mac"], "02:00:00:00:00:01");
        assert_eq!(
            steps("c", "02:00:00:00:00:01", NetBackend::Dgram, true)[2]
                .call
                .arguments["driver"],
            "virtio-net-ccw"
        );
    }

    #[test]
    fn socketpair_is_datagram() {
        let (a, b) = socketpair().unwrap();
        for fd in [&a, &b] {
            assert_eq!(
                getsockopt(fd, sockopt::SockType).unwrap(),
                nix::sys::socket::SockType::Datagram
            );
        }
    }
}
