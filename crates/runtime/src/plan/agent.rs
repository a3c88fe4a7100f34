//! The agent channel in the plan, and vhost-device-vsock's command line.
//!
//! - `virtio-serial`: a `virtserialport` named [`SERIAL_PORT_NAME`] on the
//!   sandbox's virtio-serial controller, its chardev a Unix socket QEMU
//!   serves in the sandbox folder ([`files::AGENT`]).
//! - `hybrid-vsock`: `vhost-user-vsock` connected to vhost-device-vsock,
//!   which serves the host side on [`files::VSOCK`] (`CONNECT <port>`).
//!   Guest memory is shared (see [`super::memory::shared`]).
//! - `vsock`: kernel `vhost-vsock` with a CID derived from the sandbox's
//!   UUID (needs `/dev/vhost-vsock`; rendered and unit-tested, not run here).

use super::devices::{Devno, SERIAL_ID};
use crate::config::{AgentChannel, HypervisorConfig};
use crate::state::files;
use crate::types::AgentSocket;
use qemu_config::*;
use std::path::Path;

/// The virtio-serial port name the agent opens (`/dev/virtio-ports/<name>`).
pub const SERIAL_PORT_NAME: &str = "agent.channel.0";
/// Chardev id of the agent's channel.
pub const AGENT_CHARDEV: &str = "charagent0";
/// Device id of the agent's channel.
pub const AGENT_DEVICE: &str = "agent0";
/// The guest CID vhost-device-vsock gives the guest (hybrid vsock is per VM).
pub const HYBRID_GUEST_CID: u32 = 3;
/// Lowest guest CID (0 to 2 are reserved).
pub const MIN_GUEST_CID: u32 = 3;

/// The guest CID for kernel vsock: derived from the UUID, at least 3.
pub fn vsock_cid(uuid: &str) -> u32 {
    let h = uuid.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    MIN_GUEST_CID + (h % u64::from(u32::MAX - MIN_GUEST_CID - 1)) as u32
}

/// How the host reaches the agent of a sandbox in `dir`.
pub fn socket(kind: AgentChannel, cfg: &HypervisorConfig, dir: &Path, uuid: &str) -> AgentSocket {
    match kind {
        AgentChannel::VirtioSerial => AgentSocket::Serial {
            path: dir.join(files::AGENT),
        },
        AgentChannel::HybridVsock => AgentSocket::HybridVsock {
            path: dir.join(files::VSOCK),
            port: cfg.agent.port,
        },
        AgentChannel::Vsock => AgentSocket::Vsock {
            cid: vsock_cid(uuid),
            port: cfg.agent.port,
        },
    }
}

/// vhost-device-vsock's arguments for a sandbox in `dir`.
pub fn vsock_daemon_args(dir: &Path) -> Vec<String> {
    vec![
        "--vm".into(),
        format!(
            "guest-cid={HYBRID_GUEST_CID},socket={},uds-path={}",
            dir.join(files::VHOST_VSOCK).display(),
            dir.join(files::VSOCK).display()
        ),
    ]
}

/// Whether the machine has a virtio-serial controller (the console's, or
/// one added for a port).
pub fn has_virtio_serial(qc: &Config) -> bool {
    qc.devices
        .iter()
        .any(|d| matches!(d, Device::VirtioSerial(_)))
}

/// Add the virtio-serial controller ports hang on, as [`SERIAL_ID`].
pub fn add_virtio_serial(
    qc: &mut Config,
    cfg: &HypervisorConfig,
    t: Transport,
    devno: Option<String>,
) {
    qc.devices.push(Device::VirtioSerial(VirtioSerial {
        transport: t,
        id: SERIAL_ID.into(),
        iommu_platform: cfg.iommu_platform,
        devno,
        ..Default::default()
    }));
}

/// Add the channel's chardev and device.
pub fn add(
    qc: &mut Config,
    cfg: &HypervisorConfig,
    dir: &Path,
    kind: AgentChannel,
    t: Transport,
    devno: &mut Devno,
) {
    match kind {
        AgentChannel::VirtioSerial => {
            if !has_virtio_serial(qc) {
                let d = devno.next(t);
                add_virtio_serial(qc, cfg, t, d);
            }
            qc.chardevs.push(Chardev::Socket {
                id: AGENT_CHARDEV.into(),
                path: Some(dir.join(files::AGENT).display().to_string()),
                fd: None,
                server: true,
                wait: false,
                logfile: None,
                logappend: None,
            });
            qc.devices.push(Device::VirtSerialPort(VirtSerialPort {
                id: AGENT_DEVICE.into(),
                chardev: AGENT_CHARDEV.into(),
                name: Some(SERIAL_PORT_NAME.into()),
            }));
        }
        AgentChannel::HybridVsock => {
            qc.chardevs.push(Chardev::Socket {
                id: AGENT_CHARDEV.into(),
                path: Some(dir.join(files::VHOST_VSOCK).display().to_string()),
                fd: None,
                server: false,
                wait: false,
                logfile: None,
                logappend: None,
            });
            let mut props = vec![("chardev".to_string(), AGENT_CHARDEV.to_string())];
            if let Some(d) = devno.next(t) {
                props.push(("devno".into(), d));
            }
            qc.devices.push(Device::Generic(Generic {
                driver: t
                    .pick(
                        "vhost-user-vsock-pci",
                        "vhost-user-vsock-ccw",
                        "vhost-user-vsock-device",
                    )
                    .into(),
                id: Some(AGENT_DEVICE.into()),
                props,
            }));
        }
        AgentChannel::Vsock => {
            let uuid = qc.uuid.clone().unwrap_or_default();
            qc.devices.push(Device::VhostVsock(VhostVsock {
                transport: t,
                id: AGENT_DEVICE.into(),
                guest_cid: vsock_cid(&uuid),
                vhostfd: None,
                bus: None,
                addr: None,
                devno: devno.next(t),
                iommu_platform: cfg.iommu_platform,
                disable_modern: false,
                romfile: None,
            }));
        }
    }
}
