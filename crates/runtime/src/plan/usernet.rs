//! Rendering of sandvm's extras (see `config::extras`): the user-mode NIC
//! with port forwards, fw_cfg blobs. Extra arguments go in as they are.

use crate::config::HypervisorConfig;
use crate::config::extras::{FwCfgBlob, Protocol};
use qemu_config::{Device, FwCfg, FwCfgSource, HostFwd, Netdev, Transport, VirtioNet};

/// Netdev id of the user-mode NIC.
pub const USER_NETDEV: &str = "usernet0";
/// Device id of the user-mode NIC.
pub const USER_NIC: &str = "usernic0";

/// A locally administered, unicast MAC derived from the sandbox UUID: stable
/// for the sandbox, distinct between sandboxes.
pub fn mac_from_uuid(uuid: &str) -> String {
    let hex: Vec<u8> = uuid
        .bytes()
        .filter(u8::is_ascii_hexdigit)
        .collect::<Vec<u8>>()
        .chunks(2)
        .filter_map(|c| u8::from_str_radix(std::str::from_utf8(c).ok()?, 16).ok())
        .collect();
    let mut b = [0u8; 6];
    for (i, v) in hex.iter().rev().take(6).enumerate() {
        b[5 - i] = *v;
    }
    b[0] = (b[0] & 0xfc) | 0x02;
    b.iter()
        .map(|x| format!("{x:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// The user-mode netdev and its virtio NIC, when `port_map` has forwards.
/// Host ports are bound on 127.0.0.1; port 0 lets the kernel choose a free
/// one when QEMU binds it, so no port is picked and released beforehand.
pub fn user_net(
    cfg: &HypervisorConfig,
    t: Transport,
    uuid: &str,
    devno: Option<String>,
) -> Option<(Netdev, Device)> {
    if cfg.extras.port_map.is_empty() {
        return None;
    }
    let hostfwds = cfg
        .extras
        .port_map
        .iter()
        .map(|f| HostFwd {
            protocol: match f.protocol {
                Protocol::Tcp => qemu_config::netdev::Protocol::Tcp,
                Protocol::Udp => qemu_config::netdev::Protocol::Udp,
            },
            host_addr: Some("127.0.0.1".into()),
            host_port: f.host,
            guest_addr: None,
            guest_port: f.guest,
        })
        .collect();
    let netdev = Netdev::User {
        id: USER_NETDEV.into(),
        hostfwds,
        net: None,
    };
    let nic = Device::VirtioNet(VirtioNet {
        transport: t,
        id: USER_NIC.into(),
        netdev: USER_NETDEV.into(),
        mac: Some(mac_from_uuid(uuid)),
        devno,
        iommu_platform: cfg.iommu_platform,
        ..Default::default()
    });
    Some((netdev, nic))
}

/// `-fw_cfg` items.
pub fn fw_cfg(cfg: &HypervisorConfig) -> Vec<FwCfg> {
    cfg.extras
        .fw_cfg
        .iter()
        .map(|(name, blob)| FwCfg {
            name: name.clone(),
            source: match blob {
                FwCfgBlob::File(p) => FwCfgSource::File(p.display().to_string()),
                FwCfgBlob::String(s) => FwCfgSource::String(s.clone()),
            },
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn macs_are_locally_administered_unicast_and_stable() {
        let a = mac_from_uuid("0b1c2d3e-4f50-6172-8394-a5b6c7d8e9f0");
        assert_eq!(a, mac_from_uuid("0b1c2d3e-4f50-6172-8394-a5b6c7d8e9f0"));
        let first = u8::from_str_radix(&a[..2], 16).unwrap();
        assert_eq!(first & 0x01, 0, "unicast");
        assert_eq!(first & 0x02, 0x02, "locally administered");
        assert_eq!(a.len(), 17);
        assert_ne!(a, mac_from_uuid("0b1c2d3e-4f50-6172-8394-a5b6c7d8e9f1"));
    }
}
