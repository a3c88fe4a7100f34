//! Device checks: buses, backend references, transports and per-device limits.

use std::collections::HashSet;

use super::{E, Objects, Users, fd, invalid, range, token};
use crate::config::Config;
use crate::device::{
    Device, MIN_GUEST_CID, RefKind, Transport, VIRTIO_9P_MAX_TAG, VIRTIO_FS_MAX_TAG,
};

/// Largest virtqueue QEMU allows for vhost-user-fs (`VIRTQUEUE_MAX_SIZE`).
const VHOST_USER_FS_MAX_QUEUE: u32 = 1024;

/// The ids of the non-object backend families.
pub(super) struct Known<'s, 'a> {
    pub(super) chardevs: &'s HashSet<&'a str>,
    pub(super) netdevs: &'s HashSet<&'a str>,
    pub(super) drives: &'s HashSet<&'a str>,
    pub(super) tpmdevs: &'s HashSet<&'a str>,
    pub(super) fsdevs: &'s HashSet<&'a str>,
}

/// A CCW device number: `cssid.ssid.devno` in hex, such as `fe.0.0001`.
fn valid_devno(devno: &str) -> bool {
    let hex = |s: &str, max: usize| {
        !s.is_empty() && s.len() <= max && s.bytes().all(|b| b.is_ascii_hexdigit())
    };
    match devno.split('.').collect::<Vec<_>>()[..] {
        [css, ss, dev] => hex(css, 2) && hex(ss, 1) && dev.len() == 4 && hex(dev, 4),
        _ => false,
    }
}

pub(super) fn check_devices<'a>(
    c: &'a Config,
    objects: &Objects<'a>,
    known: &Known<'_, '_>,
    users: &mut Users<'a>,
) -> Result<(), E> {
    let mut buses: HashSet<String> = HashSet::new();
    for d in &c.devices {
        let label = d.label();
        token("device driver", d.driver())?;
        if let Some(bus) = d.bus()
            && !c.machine.has_bus(bus)
            && !buses.contains(bus)
        {
            return Err(E::UnknownBus {
                device: label,
                bus: bus.to_owned(),
            });
        }
        let from = format!("Device {label}");
        for (kind, id) in d.references() {
            let exists = |set: &HashSet<&str>| {
                if set.contains(id) {
                    Ok(())
                } else {
                    Err(E::UnknownReference {
                        from: from.clone(),
                        kind: kind.name(),
                        id: id.to_owned(),
                    })
                }
            };
            match kind {
                RefKind::Drive => exists(known.drives)?,
                RefKind::Netdev => exists(known.netdevs)?,
                RefKind::Chardev => exists(known.chardevs)?,
                RefKind::Tpmdev => exists(known.tpmdevs)?,
                RefKind::Fsdev => exists(known.fsdevs)?,
                RefKind::Memdev | RefKind::Iothread | RefKind::Rng => {
                    objects.get(&from, kind, id)?;
                }
            }
            if !matches!(kind, RefKind::Iothread | RefKind::Rng) {
                users.claim(kind, id, format!("device {label}"))?;
            }
        }
        check_transport(d, &label)?;
        check_device(c, d, objects, &label)?;
        if let Some(b) = d.provided_bus() {
            buses.insert(b);
        }
    }
    Ok(())
}

/// Fields that the device's transport does not have, and device numbers.
fn check_transport(d: &Device, label: &str) -> Result<(), E> {
    let Some(t) = d.transport_use() else {
        return Ok(());
    };
    let forbidden: &[(&'static str, bool)] = match t.transport {
        Transport::Pci => &[("devno", t.devno)],
        Transport::Ccw => &[
            ("addr", t.addr),
            ("disable-modern", t.disable_modern),
            ("romfile", t.romfile),
            ("vectors", t.vectors),
        ],
        Transport::Mmio => &[
            ("addr", t.addr),
            ("devno", t.devno),
            ("disable-modern", t.disable_modern),
            ("romfile", t.romfile),
            ("vectors", t.vectors),
        ],
    };
    if let Some((field, _)) = forbidden.iter().find(|(_, set)| *set) {
        return Err(E::FieldNotForTransport {
            device: label.to_owned(),
            field,
            transport: t.transport.name(),
        });
    }
    let devno = match d {
        Device::VirtioBlk(x) => x.devno.as_deref(),
        Device::VirtioScsi(x) => x.devno.as_deref(),
        Device::VirtioNet(x) => x.devno.as_deref(),
        Device::VhostUserFs(x) => x.devno.as_deref(),
        Device::Virtio9p(x) => x.devno.as_deref(),
        Device::VhostVsock(x) => x.devno.as_deref(),
        Device::VirtioSerial(x) => x.devno.as_deref(),
        Device::VirtioRng(x) => x.devno.as_deref(),
        Device::VirtioBalloon(x) => x.devno.as_deref(),
        Device::VirtioMem(x) => x.devno.as_deref(),
        _ => None,
    };
    if let Some(devno) = devno
        && !valid_devno(devno)
    {
        return Err(invalid(
            "devno",
            devno,
            "must look like fe.0.0001 (cssid.ssid.devno, hex)",
        ));
    }
    Ok(())
}

/// Per-device limits and requirements.
fn check_device(c: &Config, d: &Device, objects: &Objects<'_>, label: &str) -> Result<(), E> {
    let missing = |item: String, what: &'static str| E::Missing { item, what };
    match d {
        Device::PciBridge(b) => {
            if b.chassis_nr == 0 {
                return Err(invalid(
                    format!("pci-bridge {label} chassis_nr"),
                    "0",
                    "must be 1 or more",
                ));
            }
            range(
                format!("pci-bridge {label} chassis_nr"),
                b.chassis_nr.into(),
                255,
            )?;
        }
        Device::PcieRootPort(r) => {
            range(
                format!("pcie-root-port {label} chassis"),
                r.chassis.into(),
                255,
            )?;
            range(format!("pcie-root-port {label} slot"), r.slot.into(), 65535)?;
            if let Some(port) = r.port {
                range(format!("pcie-root-port {label} port"), port.into(), 255)?;
            }
        }
        Device::Virtio9p(f) if f.mount_tag.is_empty() || f.mount_tag.len() > VIRTIO_9P_MAX_TAG => {
            return Err(invalid(
                "virtio-9p mount_tag",
                &f.mount_tag,
                "must be 1 to 31 bytes",
            ));
        }
        Device::VhostUserFs(f) => {
            if f.tag.is_empty() || f.tag.len() > VIRTIO_FS_MAX_TAG {
                return Err(invalid("virtio-fs tag", &f.tag, "must be 1 to 36 bytes"));
            }
            if let Some(q) = f.queue_size {
                range(
                    format!("vhost-user-fs {label} queue-size"),
                    q.into(),
                    VHOST_USER_FS_MAX_QUEUE.into(),
                )?;
                if !q.is_power_of_two() {
                    return Err(invalid(
                        "vhost-user-fs queue-size",
                        q.to_string(),
                        "must be a power of 2",
                    ));
                }
            }
        }
        Device::VhostVsock(v) => {
            if v.guest_cid < MIN_GUEST_CID {
                return Err(invalid(
                    "vsock guest-cid",
                    v.guest_cid.to_string(),
                    "must be 3 or more",
                ));
            }
            if let Some(f) = v.vhostfd {
                fd("vsock vhostfd", f)?;
            }
        }
        Device::Pvpanic(p) => {
            if let Some(port) = p.ioport {
                range(format!("pvpanic {label} ioport"), port.into(), 0xffff)?;
            }
        }
        Device::Nvdimm(_) => {
            if c.machine.get("nvdimm") != Some("on") {
                return Err(missing(
                    format!("nvdimm {label}"),
                    "machine option nvdimm=on",
                ));
            }
            if c.memory.slots.unwrap_or(0) == 0 || c.memory.maxmem_mib.is_none() {
                return Err(missing(
                    format!("nvdimm {label}"),
                    "memory slots and maxmem",
                ));
            }
        }
        Device::VirtioMem(m) => {
            if m.transport == Transport::Mmio {
                return Err(E::UnsupportedTransport {
                    device: label.to_owned(),
                    transport: "mmio",
                });
            }
            if c.memory.maxmem_mib.is_none() {
                return Err(missing(format!("virtio-mem {label}"), "maxmem"));
            }
            let size = objects
                .get(label, RefKind::Memdev, &m.memdev)?
                .size_mib()
                .unwrap_or(0);
            range(
                format!("virtio-mem {label} requested-size (MiB)"),
                m.requested_size_mib,
                size,
            )?;
        }
        Device::VfioPci(v) => match (&v.host, &v.sysfsdev) {
            (Some(_), Some(_)) => {
                return Err(E::Conflict {
                    a: format!("vfio-pci {label} host"),
                    b: "sysfsdev".into(),
                });
            }
            (None, None) => {
                return Err(missing(format!("vfio-pci {label}"), "host or sysfsdev"));
            }
            _ => {}
        },
        Device::Generic(g) => {
            for (k, _) in &g.props {
                token("device property", k)?;
            }
        }
        _ => {}
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::test_util::*;
    use super::*;
    use crate::*;

    #[test]
    fn devno_format() {
        assert!(valid_devno("fe.0.0001"));
        assert!(valid_devno("0.3.ffff"));
        for bad in ["fe.0.1", "fe.0.00001", "fe.00.0001", "x.0.0001", "fe.0", ""] {
            assert!(!valid_devno(bad), "{bad:?}");
        }
    }

    #[test]
    fn unknown_bus() {
        let mut c = base();
        c.devices.push(
            VirtioSerial {
                id: s("ser0"),
                bus: Some(s("pci.0")),
                ..Default::default()
            }
            .into(),
        );
        assert_eq!(
            err(&c),
            E::UnknownBus {
                device: s("ser0"),
                bus: s("pci.0")
            }
        );
        // A bus must be provided by an earlier device.
        let mut c = base();
        c.drives.push(Drive::raw("d0", "/img"));
        c.devices = vec![
            ScsiHd {
                id: s("hd0"),
                drive: s("d0"),
                bus: Some(s("scsi0.0")),
                ..Default::default()
            }
            .into(),
            VirtioScsi {
                id: s("scsi0"),
                ..Default::default()
            }
            .into(),
        ];
        assert_eq!(
            err(&c),
            E::UnknownBus {
                device: s("hd0"),
                bus: s("scsi0.0")
            }
        );
        c.devices.swap(0, 1);
        assert_eq!(c.validate(), Ok(()));
    }

    #[test]
    fn unknown_reference() {
        let mut c = base();
        c.devices.push(
            VirtioNet {
                id: s("nic0"),
                netdev: s("net0"),
                ..Default::default()
            }
            .into(),
        );
        assert_eq!(
            err(&c),
            E::UnknownReference {
                from: s("Device nic0"),
                kind: "netdev",
                id: s("net0")
            }
        );
        let mut c = base();
        c.devices.push(
            Virtio9p {
                id: s("p9"),
                fsdev: s("fs0"),
                mount_tag: s("kataShared"),
                ..Default::default()
            }
            .into(),
        );
        assert_eq!(
            err(&c),
            E::UnknownReference {
                from: s("Device p9"),
                kind: "fsdev",
                id: s("fs0")
            }
        );
        c.fsdevs.push(Fsdev {
            id: s("fs0"),
            path: s("/srv/share"),
            security_model: SecurityModel::None,
            multidevs: Some(Multidevs::Remap),
            readonly: false,
        });
        assert_eq!(c.validate(), Ok(()));
        let mut c = base();
        c.serials.push(Serial { chardev: s("nope") });
        assert_eq!(
            err(&c),
            E::UnknownReference {
                from: s("Serial port"),
                kind: "chardev",
                id: s("nope")
            }
        );
        let mut c = base();
        c.devices.push(
            TpmCrb {
                id: s("tpm"),
                tpmdev: s("tpm0"),
            }
            .into(),
        );
        assert!(matches!(
            err(&c),
            E::UnknownReference { kind: "tpmdev", .. }
        ));
        let mut c = base();
        c.machine = c.machine.memory_backend("ram0");
        assert!(matches!(
            err(&c),
            E::UnknownReference { kind: "memdev", .. }
        ));
    }

    #[test]
    fn wrong_object_type() {
        let mut c = base();
        c.objects.push(Object::Iothread { id: s("io0") });
        c.devices.push(
            VirtioRng {
                id: s("rng"),
                rng: s("io0"),
                ..Default::default()
            }
            .into(),
        );
        assert_eq!(
            err(&c),
            E::WrongObjectType {
                from: s("Device rng"),
                id: s("io0"),
                expected: "an rng backend",
                found: s("iothread")
            }
        );
    }

    #[test]
    fn reference_in_use() {
        let mut c = base();
        c.drives.push(Drive::raw("d0", "/img"));
        c.devices = vec![
            VirtioBlk {
                id: s("a"),
                drive: s("d0"),
                ..Default::default()
            }
            .into(),
            VirtioBlk {
                id: s("b"),
                drive: s("d0"),
                ..Default::default()
            }
            .into(),
        ];
        assert_eq!(
            err(&c),
            E::ReferenceInUse {
                kind: "drive",
                id: s("d0"),
                first: s("device a"),
                second: s("device b")
            }
        );
        let mut c = base();
        c.qmp.push(QmpMonitor {
            id: s("qmp"),
            socket: QmpSocket::Fd(3),
            mode: Default::default(),
        });
        c.serials.push(Serial { chardev: s("qmp") });
        assert!(matches!(
            err(&c),
            E::ReferenceInUse {
                kind: "chardev",
                ..
            }
        ));
    }

    #[test]
    fn out_of_range() {
        let mut c = base();
        c.devices.push(
            PcieRootPort {
                id: s("rp"),
                chassis: 256,
                ..Default::default()
            }
            .into(),
        );
        assert_eq!(
            err(&c),
            E::OutOfRange {
                field: s("pcie-root-port rp chassis"),
                value: 256,
                max: 255
            }
        );
        let mut c = base();
        c.memory.maxmem_mib = Some(2048);
        c.objects.push(ram("vm0", 1024));
        c.devices.push(
            VirtioMem {
                id: s("vmem"),
                memdev: s("vm0"),
                requested_size_mib: 2048,
                ..Default::default()
            }
            .into(),
        );
        assert!(matches!(
            err(&c),
            E::OutOfRange {
                value: 2048,
                max: 1024,
                ..
            }
        ));
        let mut c = base();
        c.devices.push(
            Pvpanic {
                id: s("p"),
                ioport: Some(0x10000),
            }
            .into(),
        );
        assert!(matches!(err(&c), E::OutOfRange { max: 0xffff, .. }));
    }

    #[test]
    fn transports() {
        let mut c = base();
        c.machine.machine_type = s("microvm");
        c.memory.maxmem_mib = Some(1024);
        c.objects.push(ram("vm0", 256));
        c.devices.push(
            VirtioMem {
                transport: Transport::Mmio,
                id: s("vmem"),
                memdev: s("vm0"),
                ..Default::default()
            }
            .into(),
        );
        assert_eq!(
            err(&c),
            E::UnsupportedTransport {
                device: s("vmem"),
                transport: "mmio"
            }
        );
        let mut c = base();
        c.machine.machine_type = s("s390-ccw-virtio");
        c.objects.push(Object::RngRandom {
            id: s("r"),
            filename: s("/dev/urandom"),
        });
        c.devices.push(
            VirtioRng {
                transport: Transport::Ccw,
                id: s("rng"),
                rng: s("r"),
                romfile: Some(String::new()),
                ..Default::default()
            }
            .into(),
        );
        assert_eq!(
            err(&c),
            E::FieldNotForTransport {
                device: s("rng"),
                field: "romfile",
                transport: "ccw"
            }
        );
        let mut c = base();
        c.objects.push(Object::RngRandom {
            id: s("r"),
            filename: s("/dev/urandom"),
        });
        c.devices.push(
            VirtioRng {
                id: s("rng"),
                rng: s("r"),
                devno: Some(s("fe.0.0001")),
                ..Default::default()
            }
            .into(),
        );
        assert!(matches!(
            err(&c),
            E::FieldNotForTransport { field: "devno", .. }
        ));
    }

    #[test]
    fn missing() {
        let mut c = base();
        c.chardevs.push(Chardev::Socket {
            id: s("c"),
            path: None,
            fd: None,
            server: true,
            wait: false,
            logfile: None,
            logappend: None,
        });
        assert_eq!(
            err(&c),
            E::Missing {
                item: s("Socket chardev c"),
                what: "a path or an fd"
            }
        );
        let mut c = base();
        c.objects.push(ram("m", 256));
        c.devices.push(
            Nvdimm {
                id: s("nv"),
                memdev: s("m"),
                unarmed: true,
            }
            .into(),
        );
        assert_eq!(
            err(&c),
            E::Missing {
                item: s("nvdimm nv"),
                what: "machine option nvdimm=on"
            }
        );
        c.machine = c.machine.nvdimm(true);
        assert!(matches!(
            err(&c),
            E::Missing {
                what: "memory slots and maxmem",
                ..
            }
        ));
        c.memory.slots = Some(1);
        c.memory.maxmem_mib = Some(1024);
        assert_eq!(c.validate(), Ok(()));
        let mut c = base();
        c.devices.push(
            VfioPci {
                id: s("v"),
                ..Default::default()
            }
            .into(),
        );
        assert!(matches!(
            err(&c),
            E::Missing {
                what: "host or sysfsdev",
                ..
            }
        ));
    }
}
