//! Cold plug ([`add_device`](crate::Hypervisor::add_device)): a device added
//! between create and start is placed at once (bridge slot, SCSI id and
//! LUN, CCW devno), recorded, and rendered onto QEMU's command line by the
//! plan ([`crate::plan::coldplug`]). It is also recorded with its removal
//! calls, like a hotplugged device, so it can be unplugged once the VM runs.

use super::core::Core;
use super::hotplug::net::{parse_mac, random_mac, use_vhost, validate_ifname};
use super::hotplug::vfio::host_prop;
use super::hotplug::{PluggedDevice, QmpCall, validate_device_id};
use super::record::AgentState;
use crate::config::{AgentChannel, BlockDriver, VfioPort};
use crate::error::{HypervisorError, Result};
use crate::plan::coldplug::{self, ColdDevice, ColdSpec};
use crate::types::{DeviceInfo, DeviceKind, DeviceSpec, VmState};
use qemu_config::Transport;
use serde_json::{Map, json};
use std::os::fd::OwnedFd;
use tracing::info;

impl Core {
    /// Cold-plug `dev` into a created sandbox.
    pub(crate) fn cold_add(&mut self, dev: DeviceSpec) -> Result<DeviceInfo> {
        if self.state.as_ref().map(|s| s.state) != Some(VmState::Created) {
            return Err(match self.state {
                Some(_) => self.wrong_state("cold-plug a device (hotplug it instead)"),
                None => HypervisorError::NoSandbox {
                    op: "cold-plug a device",
                },
            });
        }
        if let DeviceSpec::AgentChannel { kind } = dev {
            return self.cold_agent(kind);
        }
        let (id, kind, spec) = self.cold_spec(dev)?;
        let placed = self.place(id, kind, spec)?;
        let st = self.record_mut("cold-plug a device")?;
        let info = placed.info(&st.layout);
        st.hotplug.devices.push(removal_record(&placed, &info));
        st.cold.push(placed);
        if let Err(e) = self.save() {
            self.forget_cold(&info.id);
            return Err(e);
        }
        info!(id = %info.id, placement = %info.placement, "device cold-plugged");
        Ok(info)
    }

    /// The id, kind and spec of a device to cold-plug, checked.
    fn cold_spec(&mut self, dev: DeviceSpec) -> Result<(String, DeviceKind, ColdSpec)> {
        let cfg = self.config.clone();
        let (id, prefix, kind, spec) = match dev {
            DeviceSpec::Block {
                id,
                path,
                readonly,
                disposable,
            } => {
                if disposable && readonly {
                    return Err(HypervisorError::invalid(
                        "disposable disk",
                        path.display().to_string(),
                        "a disposable disk is writable (its writes are thrown away); drop readonly",
                    ));
                }
                if cfg.block.driver == BlockDriver::Nvdimm {
                    return Err(HypervisorError::unsupported(
                        format!("cold-plug {} as an nvdimm", path.display()),
                        "hotplug it, or set block_device_driver to virtio-blk or virtio-scsi",
                    ));
                }
                std::fs::metadata(&path).map_err(HypervisorError::io(path.display()))?;
                (
                    id,
                    "blk",
                    DeviceKind::Block,
                    ColdSpec::Block {
                        path,
                        readonly,
                        disposable,
                    },
                )
            }
            DeviceSpec::Net { id, tap, mac } => {
                validate_ifname(&tap)?;
                let mac = mac.as_deref().map(parse_mac).transpose()?;
                let spec = ColdSpec::Net {
                    mac: mac.unwrap_or_else(random_mac),
                    tap: Some(tap),
                    vhost: use_vhost(&cfg),
                };
                (id, "net", DeviceKind::Net, spec)
            }
            DeviceSpec::NetFd { id, fd, mac } => {
                let mac = mac.as_deref().map(parse_mac).transpose()?;
                let id = self.fresh_id(id, "net")?;
                self.keep_fd(&id, &fd, "dup tap fd")?;
                let spec = ColdSpec::Net {
                    mac: mac.unwrap_or_else(random_mac),
                    tap: None,
                    vhost: use_vhost(&cfg),
                };
                (id, "net", DeviceKind::Net, spec)
            }
            DeviceSpec::Cable { .. } => {
                return Err(HypervisorError::unsupported(
                    "cold-plug a cable",
                    "cables join two running sandboxes; hotplug it (`sandvm link`)",
                ));
            }
            DeviceSpec::Channel { id, name, fd } => {
                validate_port_name(&name)?;
                let st = self.parts("cold-plug a channel")?.1;
                let taken = st
                    .cold
                    .iter()
                    .any(|d| matches!(&d.spec, ColdSpec::Channel { name: n } if *n == name));
                if taken || name == crate::plan::agent::SERIAL_PORT_NAME {
                    return Err(HypervisorError::invalid(
                        "channel name",
                        name,
                        "another port of this sandbox has that name",
                    ));
                }
                let id = self.fresh_id(id, "chan")?;
                self.keep_fd(&id, &fd, "dup channel fd")?;
                return Ok((id, DeviceKind::Channel, ColdSpec::Channel { name }));
            }
            DeviceSpec::Vsock { id, guest_cid } => {
                super::hotplug::vsock::check_cid(guest_cid)?;
                super::hotplug::vsock::check_host(std::path::Path::new(
                    super::hotplug::vsock::VHOST_VSOCK,
                ))?;
                (
                    id,
                    "vsock",
                    DeviceKind::Vsock,
                    ColdSpec::Vsock { guest_cid },
                )
            }
            DeviceSpec::Vfio { id, host } => {
                host_prop(&host)?;
                let spec = ColdSpec::Vfio {
                    host,
                    root_port: None,
                };
                (id, "vfio", DeviceKind::Vfio, spec)
            }
            DeviceSpec::AgentChannel { .. } => unreachable!("handled by cold_agent"),
        };
        let id = self.fresh_id(id, prefix)?;
        Ok((id, kind, spec))
    }

    /// Keep a copy of a caller's fd for device `id` until start passes it
    /// to QEMU.
    fn keep_fd(&mut self, id: &str, fd: &OwnedFd, what: &str) -> Result<()> {
        let owned = fd.try_clone().map_err(HypervisorError::io(what))?;
        self.fds.insert(id.to_string(), owned);
        Ok(())
    }

    /// `id`, or a generated `<prefix>N`, checked and free.
    fn fresh_id(&self, id: String, prefix: &str) -> Result<String> {
        let st = self.parts("cold-plug a device")?.1;
        if id.is_empty() {
            return Ok(st.hotplug.next_id(prefix));
        }
        validate_device_id(&id)?;
        if st.hotplug.id_taken(&id) && !self.fds.contains_key(&id) {
            return Err(HypervisorError::DeviceIdInUse {
                id,
                sandbox: st.id.clone(),
            });
        }
        Ok(id)
    }

    /// Place a device: a bridge slot on PCI, a SCSI id and LUN for scsi-hd,
    /// a devno on CCW, nothing on virtio-mmio.
    fn place(&mut self, id: String, kind: DeviceKind, mut spec: ColdSpec) -> Result<ColdDevice> {
        let cfg = self.config.clone();
        let st = self.record_mut("cold-plug a device")?;
        let t = st.layout.arch.transport;
        let scsi_disk = kind == DeviceKind::Block
            && cfg.block.driver == BlockDriver::VirtioScsi
            && t != Transport::Mmio;
        let mut dev = ColdDevice {
            id: id.clone(),
            kind,
            driver: String::new(),
            slot: None,
            scsi: None,
            devno: None,
            spec: spec.clone(),
        };
        if scsi_disk {
            let index = st.hotplug.next_scsi_index();
            dev.scsi = Some(super::hotplug::block::scsi_id_lun(index));
            dev.driver = "scsi-hd".into();
            return Ok(dev);
        }
        if kind == DeviceKind::Channel {
            // A port on the virtio-serial controller: no slot, no devno.
            dev.driver = "virtserialport".into();
            return Ok(dev);
        }
        if let ColdSpec::Vfio { root_port, .. } = &mut spec
            && matches!(
                cfg.cold_plug_vfio,
                VfioPort::RootPort | VfioPort::SwitchPort
            )
        {
            *root_port = Some(super::hotplug::vfio::free_root_port(
                &cfg,
                &st.hotplug,
                &id,
            )?);
            dev.spec = spec.clone();
        }
        match t {
            Transport::Pci
                if matches!(
                    &spec,
                    ColdSpec::Vfio {
                        root_port: Some(_),
                        ..
                    }
                ) => {}
            Transport::Pci if st.layout.bridges.is_empty() => {
                return Err(HypervisorError::unsupported(
                    format!("cold-plug {id}"),
                    "the machine has no PCI bridge (hypervisor.qemu.default_bridges)",
                ));
            }
            Transport::Pci => dev.slot = Some(st.pci.allocate(&id)?),
            Transport::Ccw => {
                let n = st.cold.iter().filter(|d| d.devno.is_some()).count();
                dev.devno = Some(coldplug::devno(n));
            }
            Transport::Mmio => {}
        }
        dev.driver = driver(kind, t, &cfg).into();
        Ok(dev)
    }

    /// The agent channel, cold-plugged into a sandbox whose config has none.
    fn cold_agent(&mut self, kind: AgentChannel) -> Result<DeviceInfo> {
        let st = self.record_mut("cold-plug the agent channel")?;
        if let Some(a) = &st.agent {
            return Err(HypervisorError::unsupported(
                "cold-plug an agent channel",
                format!(
                    "the sandbox already has one ({}; hypervisor.qemu.agent_channel)",
                    a.kind.as_str()
                ),
            ));
        }
        st.agent = Some(AgentState {
            kind,
            daemon: Default::default(),
        });
        let placement = match st.layout.arch.transport {
            Transport::Mmio => crate::types::Placement::Mmio,
            _ => crate::types::Placement::Auto,
        };
        self.save()?;
        Ok(DeviceInfo {
            id: crate::plan::agent::AGENT_DEVICE.into(),
            kind: DeviceKind::Agent,
            driver: kind.as_str().into(),
            placement,
            mac: None,
        })
    }

    /// Take a cold-plugged device out of the record (before start).
    pub(crate) fn forget_cold(&mut self, id: &str) {
        self.fds.remove(id);
        if let Some(st) = self.state.as_mut() {
            st.cold.retain(|d| d.id != id);
            st.hotplug.devices.retain(|d| d.id != id);
            st.pci.release(id);
        }
    }
}

/// Most bytes of a virtio-serial port name (the guest's
/// `/dev/virtio-ports/<name>` is a file name).
const MAX_PORT_NAME: usize = 64;

/// A port name the guest can use as a file name: letters, digits, `.`, `_`
/// and `-`, not starting with `.`, at most [`MAX_PORT_NAME`] bytes.
fn validate_port_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= MAX_PORT_NAME
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
    if ok {
        return Ok(());
    }
    Err(HypervisorError::invalid(
        "channel name",
        name,
        format!("use 1-{MAX_PORT_NAME} letters, digits, '.', '_' or '-', not starting with '.'"),
    ))
}

/// The QEMU driver of a cold-plugged device.
fn driver(kind: DeviceKind, t: Transport, cfg: &crate::config::HypervisorConfig) -> &'static str {
    let ccw_blk = cfg.block.driver == BlockDriver::VirtioBlkCcw;
    match kind {
        DeviceKind::Block if ccw_blk => "virtio-blk-ccw",
        DeviceKind::Block => t.pick("virtio-blk-pci", "virtio-blk-ccw", "virtio-blk-device"),
        DeviceKind::Net => t.pick("virtio-net-pci", "virtio-net-ccw", "virtio-net-device"),
        DeviceKind::Vsock => t.pick("vhost-vsock-pci", "vhost-vsock-ccw", "vhost-vsock-device"),
        DeviceKind::Vfio => "vfio-pci",
        _ => "",
    }
}

/// The record that lets a cold-plugged device be unplugged once the VM runs.
fn removal_record(d: &ColdDevice, info: &DeviceInfo) -> PluggedDevice {
    let mut remove = vec![QmpCall::new("device_del", json!({ "id": d.id }))];
    let mut extra = Map::new();
    extra.insert("cold".into(), true.into());
    match &d.spec {
        ColdSpec::Net { mac, tap, .. } => {
            remove.push(QmpCall::new(
                "netdev_del",
                json!({ "id": coldplug::netdev_id(&d.id) }),
            ));
            extra.insert("mac".into(), mac.clone().into());
            if let Some(t) = tap {
                extra.insert("tap".into(), t.clone().into());
            }
        }
        ColdSpec::Block {
            path,
            readonly,
            disposable,
        } => {
            extra.insert("path".into(), path.display().to_string().into());
            extra.insert("readonly".into(), (*readonly).into());
            extra.insert("disposable".into(), (*disposable).into());
            if let Some((id, lun)) = d.scsi {
                extra.insert("scsi_index".into(), (id * 256 + lun).into());
            }
        }
        ColdSpec::Vsock { guest_cid } => {
            extra.insert("guest_cid".into(), (*guest_cid).into());
        }
        ColdSpec::Channel { name } => {
            remove.push(QmpCall::new(
                "chardev-remove",
                json!({ "id": coldplug::channel_chardev_id(&d.id) }),
            ));
            extra.insert("name".into(), name.clone().into());
        }
        ColdSpec::Vfio { host, root_port } => {
            extra.insert("host".into(), host.clone().into());
            if let Some(rp) = root_port {
                extra.insert("root_port".into(), rp.clone().into());
            }
        }
    }
    PluggedDevice {
        id: d.id.clone(),
        kind: d.kind,
        driver: d.driver.clone(),
        slot: d.slot.clone(),
        info: extra,
        placement: Some(info.placement.clone()),
        remove,
        add: Vec::new(),
    }
}
