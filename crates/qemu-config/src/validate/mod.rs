//! [`Config::validate`](crate::Config::validate).
//!
//! Checks what QEMU would reject, or could misread: ids and their uniqueness
//! per family, bus and backend references, memory and CPU arithmetic, values
//! that cannot be escaped, and newline/NUL characters anywhere.

mod backends;
mod devices;

use std::collections::{HashMap, HashSet};

use crate::boot::{FW_CFG_MAX_NAME, FwCfgSource};
use crate::chardev::Chardev;
use crate::config::{Arg, Config};
use crate::device::{Device, RefKind};
use crate::error::ValidationError as E;
use crate::knobs::Incoming;
use crate::memory::MAX_RAM_SLOTS;
use crate::netdev::Netdev;
use crate::object::{Object, ObjectKind};

use backends::{check_chardevs, check_drives, check_memdevs, check_netdevs, check_objects};
use devices::check_devices;

/// QEMU's identifier rule (`id_wellformed`): an ASCII letter, then ASCII
/// letters, digits, `-`, `.` or `_`. QEMU sets no length limit.
pub fn is_valid_id(id: &str) -> bool {
    let mut bytes = id.bytes();
    match bytes.next() {
        Some(b) if b.is_ascii_alphabetic() => {}
        _ => return false,
    }
    bytes.all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'))
}

/// A driver, type or property name: non-empty ASCII letters, digits, `-`, `.`, `_`.
fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'))
}

fn invalid(field: impl Into<String>, value: impl Into<String>, reason: &'static str) -> E {
    E::InvalidValue {
        field: field.into(),
        value: value.into(),
        reason,
    }
}

fn token(field: &str, value: &str) -> Result<(), E> {
    if is_token(value) {
        Ok(())
    } else {
        Err(invalid(
            field,
            value,
            "must be letters, digits, '-', '.' or '_'",
        ))
    }
}

fn absolute(field: &str, path: &str) -> Result<(), E> {
    if path.starts_with('/') {
        Ok(())
    } else {
        Err(E::NotAbsolute {
            field: field.to_owned(),
            path: path.to_owned(),
        })
    }
}

fn non_empty(field: &str, value: &str) -> Result<(), E> {
    if value.is_empty() {
        Err(invalid(field, value, "must not be empty"))
    } else {
        Ok(())
    }
}

fn fd(field: &str, fd: i32) -> Result<(), E> {
    if fd < 0 {
        Err(invalid(
            field,
            fd.to_string(),
            "must be a non-negative file descriptor",
        ))
    } else {
        Ok(())
    }
}

fn range(field: impl Into<String>, value: u64, max: u64) -> Result<(), E> {
    if value > max {
        Err(E::OutOfRange {
            field: field.into(),
            value,
            max,
        })
    } else {
        Ok(())
    }
}

/// Ids of one family, checked for form and uniqueness.
fn ids<'a>(
    family: &'static str,
    ids: impl IntoIterator<Item = &'a str>,
) -> Result<HashSet<&'a str>, E> {
    let mut seen = HashSet::new();
    for id in ids {
        if !is_valid_id(id) {
            return Err(E::InvalidId {
                family,
                id: id.to_owned(),
            });
        }
        if !seen.insert(id) {
            return Err(E::DuplicateId {
                family,
                id: id.to_owned(),
            });
        }
    }
    Ok(seen)
}

/// Tracks which frontend uses each exclusive backend.
#[derive(Default)]
struct Users<'a> {
    map: HashMap<(RefKind, &'a str), String>,
}

impl<'a> Users<'a> {
    fn claim(&mut self, kind: RefKind, id: &'a str, user: String) -> Result<(), E> {
        if let Some(first) = self.map.get(&(kind, id)) {
            return Err(E::ReferenceInUse {
                kind: kind.name(),
                id: id.to_owned(),
                first: first.clone(),
                second: user,
            });
        }
        self.map.insert((kind, id), user);
        Ok(())
    }
}

/// The `-object`s by id, for typed lookups.
struct Objects<'a> {
    by_id: HashMap<&'a str, &'a Object>,
}

impl<'a> Objects<'a> {
    fn get(&self, from: &str, kind: RefKind, id: &str) -> Result<&'a Object, E> {
        let obj = self.by_id.get(id).ok_or_else(|| E::UnknownReference {
            from: from.to_owned(),
            kind: kind.name(),
            id: id.to_owned(),
        })?;
        let (expected, name) = match kind {
            RefKind::Memdev => (ObjectKind::MemoryBackend, "a memory backend"),
            RefKind::Iothread => (ObjectKind::Iothread, "an iothread"),
            _ => (ObjectKind::Rng, "an rng backend"),
        };
        if obj.kind() != expected {
            return Err(E::WrongObjectType {
                from: from.to_owned(),
                id: id.to_owned(),
                expected: name,
                found: obj.qom_type().to_owned(),
            });
        }
        Ok(obj)
    }
}

/// `-action`: QEMU's events and the action names it takes.
fn check_actions(c: &Config) -> Result<(), E> {
    for (event, action) in &c.actions {
        let ok = match event.as_str() {
            "reboot" => ["reset", "shutdown"].contains(&action.as_str()),
            "shutdown" => ["poweroff", "pause"].contains(&action.as_str()),
            "panic" => ["pause", "shutdown", "exit-failure", "none"].contains(&action.as_str()),
            "watchdog" => [
                "reset",
                "shutdown",
                "poweroff",
                "pause",
                "debug",
                "none",
                "inject-nmi",
            ]
            .contains(&action.as_str()),
            _ => false,
        };
        if !ok {
            return Err(E::InvalidValue {
                field: "-action".into(),
                value: format!("{event}={action}"),
                reason: "not an event and action QEMU knows",
            });
        }
    }
    Ok(())
}

pub(crate) fn validate(c: &Config) -> Result<(), E> {
    check_chars(c)?;
    check_actions(c)?;
    check_machine_cpu(c)?;
    check_memory(c)?;

    // Id families, as QEMU keeps them.
    ids("object", c.objects.iter().map(Object::id))?;
    let chardev_ids = ids(
        "chardev",
        c.qmp
            .iter()
            .map(|q| q.id.as_str())
            .chain(c.chardevs.iter().map(Chardev::id)),
    )?;
    let netdev_ids = ids("netdev", c.netdevs.iter().map(Netdev::id))?;
    let drive_ids = ids("drive", c.drives.iter().map(|d| d.id.as_str()))?;
    let tpmdev_ids = ids("tpmdev", c.tpmdevs.iter().map(|t| t.id.as_str()))?;
    let fsdev_ids = ids("fsdev", c.fsdevs.iter().map(|f| f.id.as_str()))?;
    ids("device", c.devices.iter().filter_map(Device::id))?;

    let objects = Objects {
        by_id: c.objects.iter().map(|o| (o.id(), o)).collect(),
    };
    let mut users = Users::default();
    for q in &c.qmp {
        users.claim(RefKind::Chardev, &q.id, format!("QMP monitor {}", q.id))?;
    }

    check_objects(c)?;
    check_memdevs(c, &objects, &mut users)?;
    check_boot(c)?;
    check_misc(c)?;
    check_chardevs(c, &chardev_ids, &mut users)?;
    check_netdevs(c)?;
    check_drives(c)?;
    let known = devices::Known {
        chardevs: &chardev_ids,
        netdevs: &netdev_ids,
        drives: &drive_ids,
        tpmdevs: &tpmdev_ids,
        fsdevs: &fsdev_ids,
    };
    check_devices(c, &objects, &known, &mut users)
}

fn check_chars(c: &Config) -> Result<(), E> {
    let bad = |v: &str| v.contains(['\n', '\r', '\0']);
    for arg in c.args() {
        let (option, value) = match &arg {
            Arg::Flag(_) => continue,
            Arg::Opt(f, v) => ((*f).to_owned(), v),
            Arg::Extra(v) => ("extra argument".to_owned(), v),
        };
        if bad(value) {
            return Err(E::ForbiddenChar {
                option,
                value: value.clone(),
            });
        }
    }
    Ok(())
}

fn check_machine_cpu(c: &Config) -> Result<(), E> {
    token("machine type", &c.machine.machine_type)?;
    for (k, _) in &c.machine.options {
        token("machine option", k)?;
    }
    if let Some(cpu) = &c.cpu {
        token("CPU model", &cpu.model)?;
        for f in &cpu.features {
            if f.is_empty() || f.contains(',') {
                return Err(invalid(
                    "CPU feature",
                    f,
                    "must be non-empty and contain no ',' (QEMU cannot escape it)",
                ));
            }
        }
    }
    let s = &c.smp;
    if s.cpus == 0 {
        return Err(E::ZeroCpus);
    }
    let product = match (s.sockets, s.cores, s.threads) {
        (Some(so), Some(co), Some(th)) => {
            Some(u64::from(so) * u64::from(s.dies.unwrap_or(1)) * u64::from(co) * u64::from(th))
        }
        _ => None,
    };
    if let (Some(product), Some(maxcpus)) = (product, s.maxcpus)
        && product != u64::from(maxcpus)
    {
        return Err(E::TopologyMismatch { product, maxcpus });
    }
    let maxcpus = s
        .maxcpus
        .map(u64::from)
        .or(product)
        .unwrap_or(u64::from(s.cpus));
    if u64::from(s.cpus) > maxcpus {
        return Err(E::CpusExceedMaxCpus {
            cpus: s.cpus,
            maxcpus: u32::try_from(maxcpus).unwrap_or(u32::MAX),
        });
    }
    Ok(())
}

fn check_memory(c: &Config) -> Result<(), E> {
    let m = &c.memory;
    if m.size_mib == 0 {
        return Err(E::ZeroMemory);
    }
    if let Some(max) = m.maxmem_mib
        && max < m.size_mib
    {
        return Err(E::MaxMemTooSmall {
            size_mib: m.size_mib,
            maxmem_mib: max,
        });
    }
    if let Some(slots) = m.slots {
        if slots > MAX_RAM_SLOTS {
            return Err(E::TooManySlots {
                slots,
                max: MAX_RAM_SLOTS,
            });
        }
        match m.maxmem_mib {
            None => return Err(E::SlotsWithoutHotplugRange { slots }),
            Some(max) if slots > 0 && max == m.size_mib => {
                return Err(E::SlotsWithoutHotplugRange { slots });
            }
            _ => {}
        }
    }
    Ok(())
}

fn check_boot(c: &Config) -> Result<(), E> {
    if let Some(k) = &c.kernel {
        non_empty("kernel path", &k.path)?;
    }
    let mut units = HashSet::new();
    for p in &c.pflash {
        absolute("pflash file", &p.file)?;
        if !units.insert(p.unit) {
            return Err(E::DuplicateId {
                family: "pflash unit",
                id: p.unit.to_string(),
            });
        }
    }
    let mut names = HashSet::new();
    for f in &c.fw_cfg {
        if f.name.is_empty() || f.name.len() > FW_CFG_MAX_NAME {
            return Err(invalid("fw_cfg name", &f.name, "must be 1 to 55 bytes"));
        }
        if !names.insert(f.name.as_str()) {
            return Err(E::DuplicateId {
                family: "fw_cfg",
                id: f.name.clone(),
            });
        }
        if let FwCfgSource::File(p) = &f.source {
            non_empty("fw_cfg file", p)?;
        }
    }
    Ok(())
}

fn check_misc(c: &Config) -> Result<(), E> {
    if c.knobs.daemonize && c.knobs.nographic {
        return Err(E::Conflict {
            a: "-daemonize".into(),
            b: "-nographic".into(),
        });
    }
    if c.knobs.serial_none && !c.serials.is_empty() {
        return Err(E::Conflict {
            a: "-serial none".into(),
            b: "-serial chardev".into(),
        });
    }
    for g in &c.globals {
        let simple = |s: &str| !s.is_empty() && s.len() <= 63 && !s.contains(['.', '=', ',']);
        if !simple(&g.driver) {
            return Err(invalid(
                "-global driver",
                &g.driver,
                "must be 1 to 63 bytes without '.', '=' or ','",
            ));
        }
        if g.property.is_empty() || g.property.len() > 63 || g.property.contains('=') {
            return Err(invalid(
                "-global property",
                &g.property,
                "must be 1 to 63 bytes without '='",
            ));
        }
    }
    if let Some(Incoming::Uri(u)) = &c.incoming {
        non_empty("-incoming URI", u)?;
    }
    for a in &c.add_fds {
        if a.fd < 3 {
            return Err(invalid("-add-fd fd", a.fd.to_string(), "must be 3 or more"));
        }
    }
    if let Some(p) = &c.pidfile {
        non_empty("pidfile", p)?;
    }
    Ok(())
}

/// Shared helpers for the validation tests.
#[cfg(test)]
mod test_util {
    use super::E;
    use crate::*;

    pub(super) fn s(v: &str) -> String {
        v.to_owned()
    }

    pub(super) fn base() -> Config {
        Config::new(Machine::new("q35"), Smp::new(1), Memory::new(512))
    }

    pub(super) fn err(c: &Config) -> E {
        c.validate().expect_err("config should be rejected")
    }

    pub(super) fn socket(id: &str) -> Chardev {
        Chardev::Socket {
            id: s(id),
            path: Some(s("/run/x.sock")),
            fd: None,
            server: true,
            wait: false,
            logfile: None,
            logappend: None,
        }
    }

    pub(super) fn ram(id: &str, size_mib: u64) -> Object {
        Object::MemoryBackendRam {
            id: s(id),
            size_mib,
            share: None,
            prealloc: false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::test_util::*;
    use super::*;
    use crate::*;

    #[test]
    fn id_rule_matches_qemu() {
        assert!(is_valid_id("a"));
        assert!(is_valid_id("pci-bridge-0"));
        assert!(is_valid_id("scsi0.0_x"));
        assert!(is_valid_id(&"a".repeat(300)));
        for bad in ["", "0a", "-a", "a,b", "a b", "a=b", "é", "a/b", "#a"] {
            assert!(!is_valid_id(bad), "{bad:?}");
        }
    }

    #[test]
    fn invalid_id() {
        let mut c = base();
        c.chardevs.push(socket("1char"));
        assert_eq!(
            err(&c),
            E::InvalidId {
                family: "chardev",
                id: s("1char")
            }
        );
        let mut c = base();
        c.devices.push(
            IntelIommu {
                id: Some(s("a,b")),
                ..Default::default()
            }
            .into(),
        );
        assert_eq!(
            err(&c),
            E::InvalidId {
                family: "device",
                id: s("a,b")
            }
        );
    }

    #[test]
    fn duplicate_id_per_family() {
        let mut c = base();
        c.qmp.push(QmpMonitor {
            id: s("qmp"),
            socket: QmpSocket::Fd(3),
            mode: Default::default(),
        });
        c.chardevs.push(socket("qmp"));
        assert_eq!(
            err(&c),
            E::DuplicateId {
                family: "chardev",
                id: s("qmp")
            }
        );
        // The same id in two families is fine.
        let mut c = base();
        c.objects.push(Object::RngRandom {
            id: s("rng0"),
            filename: s("/dev/urandom"),
        });
        c.devices.push(
            VirtioRng {
                id: s("rng0"),
                rng: s("rng0"),
                ..Default::default()
            }
            .into(),
        );
        assert_eq!(c.validate(), Ok(()));
        let mut c = base();
        c.pflash = vec![
            Pflash {
                file: s("/a"),
                readonly: true,
                unit: 0,
            },
            Pflash {
                file: s("/b"),
                readonly: false,
                unit: 0,
            },
        ];
        assert_eq!(
            err(&c),
            E::DuplicateId {
                family: "pflash unit",
                id: s("0")
            }
        );
    }

    #[test]
    fn memory_checks() {
        let mut c = base();
        c.memory.size_mib = 0;
        assert_eq!(err(&c), E::ZeroMemory);
        let mut c = base();
        c.memory.maxmem_mib = Some(256);
        assert_eq!(
            err(&c),
            E::MaxMemTooSmall {
                size_mib: 512,
                maxmem_mib: 256
            }
        );
        let mut c = base();
        c.memory.slots = Some(2);
        assert_eq!(err(&c), E::SlotsWithoutHotplugRange { slots: 2 });
        c.memory.maxmem_mib = Some(512);
        assert_eq!(err(&c), E::SlotsWithoutHotplugRange { slots: 2 });
        c.memory.maxmem_mib = Some(1024);
        assert_eq!(c.validate(), Ok(()));
        c.memory.slots = Some(257);
        assert_eq!(
            err(&c),
            E::TooManySlots {
                slots: 257,
                max: 256
            }
        );
        c.memory.slots = Some(256);
        assert_eq!(c.validate(), Ok(()));
    }

    #[test]
    fn cpu_checks() {
        let mut c = base();
        c.smp.cpus = 0;
        assert_eq!(err(&c), E::ZeroCpus);
        let mut c = base();
        c.smp = Smp {
            cpus: 4,
            maxcpus: Some(2),
            ..Smp::new(4)
        };
        assert_eq!(
            err(&c),
            E::CpusExceedMaxCpus {
                cpus: 4,
                maxcpus: 2
            }
        );
        let mut c = base();
        c.smp = Smp {
            cpus: 1,
            sockets: Some(2),
            dies: Some(2),
            cores: Some(1),
            threads: Some(1),
            maxcpus: Some(2),
        };
        assert_eq!(
            err(&c),
            E::TopologyMismatch {
                product: 4,
                maxcpus: 2
            }
        );
        c.smp.maxcpus = Some(4);
        assert_eq!(c.validate(), Ok(()));
        // Without maxcpus, the topology gives it.
        c.smp.maxcpus = None;
        c.smp.cpus = 5;
        assert_eq!(
            err(&c),
            E::CpusExceedMaxCpus {
                cpus: 5,
                maxcpus: 4
            }
        );
        let mut c = base();
        c.cpu = Some(Cpu {
            model: s("host"),
            features: vec![s("+vmx,-foo")],
        });
        assert!(matches!(err(&c), E::InvalidValue { field, .. } if field == "CPU feature"));
    }

    #[test]
    fn forbidden_chars_anywhere() {
        let mut c = base();
        c.kernel = Some(Kernel {
            path: s("/k"),
            initrd: None,
            append: Some(s("a\nb")),
        });
        assert_eq!(
            err(&c),
            E::ForbiddenChar {
                option: s("-append"),
                value: s("a\nb")
            }
        );
        let mut c = base();
        c.extra_args.push(s("x\0"));
        assert_eq!(
            err(&c),
            E::ForbiddenChar {
                option: s("extra argument"),
                value: s("x\0")
            }
        );
        let mut c = base();
        c.drives.push(Drive::raw("d0", "/a\rb"));
        assert!(matches!(err(&c), E::ForbiddenChar { option, .. } if option == "-drive"));
    }

    #[test]
    fn invalid_values() {
        type Edit = Box<dyn Fn(&mut Config)>;
        let cases: Vec<(Edit, &str)> = vec![
            (
                Box::new(|c| c.machine.machine_type = s("q35,accel=kvm")),
                "machine type",
            ),
            (
                Box::new(|c| c.machine.options.push((s("a=b"), s("c")))),
                "machine option",
            ),
            (
                Box::new(|c| {
                    c.numa.push(NumaNode {
                        cpus: Some(s("3-1")),
                        ..Default::default()
                    })
                }),
                "NUMA cpus",
            ),
            (
                Box::new(|c| {
                    c.fw_cfg.push(FwCfg {
                        name: "o".repeat(56),
                        source: FwCfgSource::String(s("x")),
                    })
                }),
                "fw_cfg name",
            ),
            (
                Box::new(|c| c.globals.push(Global::new("a.b", "c", "d"))),
                "-global driver",
            ),
            (
                Box::new(|c| {
                    c.add_fds.push(AddFd {
                        fd: 1,
                        set: 1,
                        opaque: None,
                    })
                }),
                "-add-fd fd",
            ),
            (
                Box::new(|c| {
                    c.drives.push(Drive {
                        aio: Some(s("fast")),
                        ..Drive::raw("d", "/i")
                    });
                }),
                "drive aio",
            ),
            (
                Box::new(|c| {
                    c.drives.push(Drive {
                        cache: Some(s("fast")),
                        ..Drive::raw("d", "/i")
                    });
                }),
                "drive cache",
            ),
            (
                Box::new(|c| {
                    c.drives.push(Drive {
                        cache: Some(s("unsafe")),
                        cache_direct: Some(true),
                        ..Drive::raw("d", "/i")
                    });
                }),
                "drive cache",
            ),
            (
                Box::new(|c| {
                    c.devices.push(
                        VhostVsock {
                            id: s("v"),
                            guest_cid: 2,
                            ..Default::default()
                        }
                        .into(),
                    );
                }),
                "vsock guest-cid",
            ),
            (
                Box::new(|c| {
                    c.chardevs.push(socket("fs"));
                    c.devices.push(
                        VhostUserFs {
                            id: s("f"),
                            chardev: s("fs"),
                            tag: "t".repeat(37),
                            ..Default::default()
                        }
                        .into(),
                    );
                }),
                "virtio-fs tag",
            ),
            (
                Box::new(|c| {
                    c.fsdevs.push(crate::Fsdev {
                        id: s("fs9"),
                        path: s("/srv"),
                        security_model: crate::SecurityModel::None,
                        multidevs: None,
                        readonly: false,
                    });
                    c.devices.push(
                        crate::Virtio9p {
                            id: s("p9"),
                            fsdev: s("fs9"),
                            mount_tag: "t".repeat(32),
                            ..Default::default()
                        }
                        .into(),
                    );
                }),
                "virtio-9p mount_tag",
            ),
            (
                Box::new(|c| {
                    c.chardevs.push(socket("fs"));
                    c.devices.push(
                        VhostUserFs {
                            id: s("f"),
                            chardev: s("fs"),
                            tag: s("t"),
                            queue_size: Some(100),
                            ..Default::default()
                        }
                        .into(),
                    );
                }),
                "vhost-user-fs queue-size",
            ),
            (
                Box::new(|c| {
                    c.machine.machine_type = s("s390-ccw-virtio");
                    c.devices.push(
                        VirtioSerial {
                            transport: Transport::Ccw,
                            id: s("s"),
                            devno: Some(s("fe.0.1")),
                            ..Default::default()
                        }
                        .into(),
                    );
                }),
                "devno",
            ),
            (
                Box::new(|c| {
                    c.netdevs.push(Netdev::Tap {
                        id: s("t"),
                        fds: vec![3, 4],
                        vhost: true,
                        vhostfds: vec![5],
                        ifname: None,
                        script_none: false,
                    })
                }),
                "tap t vhostfds",
            ),
            (
                Box::new(|c| {
                    c.netdevs.push(Netdev::User {
                        id: s("u"),
                        hostfwds: vec![HostFwd {
                            protocol: Protocol::Tcp,
                            host_addr: Some(s("::1")),
                            host_port: 1,
                            guest_addr: None,
                            guest_port: 2,
                        }],
                        net: None,
                    })
                }),
                "hostfwd address",
            ),
            (
                Box::new(|c| {
                    c.objects.push(ram("m", 256));
                    c.numa.push(NumaNode {
                        memdev: Some(s("m")),
                        ..Default::default()
                    });
                }),
                "total NUMA memdev size",
            ),
            (
                Box::new(|c| {
                    c.objects.push(ram("m", 0));
                }),
                "object m size",
            ),
        ];
        for (edit, field) in cases {
            let mut c = base();
            edit(&mut c);
            match c.validate() {
                Err(E::InvalidValue { field: f, .. }) => assert_eq!(f, field),
                other => panic!("{field}: {other:?}"),
            }
        }
    }

    #[test]
    fn not_absolute() {
        let mut c = base();
        c.drives
            .push(Drive::raw("d0", "json:{\"file.filename\":\"/etc/shadow\"}"));
        assert_eq!(
            err(&c),
            E::NotAbsolute {
                field: s("drive d0 file"),
                path: s("json:{\"file.filename\":\"/etc/shadow\"}")
            }
        );
        let mut c = base();
        c.pflash.push(Pflash {
            file: s("OVMF.fd"),
            readonly: true,
            unit: 0,
        });
        assert!(matches!(err(&c), E::NotAbsolute { .. }));
    }

    #[test]
    fn conflicts() {
        let mut c = base();
        c.knobs.daemonize = true;
        c.knobs.nographic = true;
        assert_eq!(
            err(&c),
            E::Conflict {
                a: s("-daemonize"),
                b: s("-nographic")
            }
        );
        let mut c = base();
        c.knobs.daemonize = true;
        c.chardevs.push(Chardev::Stdio {
            id: s("io"),
            signal: None,
        });
        assert!(matches!(err(&c), E::Conflict { .. }));
        let mut c = base();
        c.objects.push(ram("m", 512));
        c.machine = c.machine.memory_backend("m");
        c.numa.push(NumaNode {
            memdev: Some(s("m")),
            ..Default::default()
        });
        assert_eq!(
            err(&c),
            E::Conflict {
                a: s("-machine memory-backend"),
                b: s("-numa memdev")
            }
        );
        let mut c = base();
        c.netdevs.push(Netdev::Tap {
            id: s("t"),
            fds: vec![3],
            vhost: false,
            vhostfds: vec![],
            ifname: Some(s("tap0")),
            script_none: false,
        });
        assert!(matches!(err(&c), E::Conflict { .. }));
    }

    #[test]
    fn actions_are_checked_and_rendered() {
        let mut c = Config::new(Machine::new("q35"), Smp::new(1), Memory::new(128));
        c.actions.push(("panic".into(), "pause".into()));
        c.validate().unwrap();
        let argv = c.to_args();
        let i = argv.iter().position(|a| a == "-action").unwrap();
        assert_eq!(argv[i + 1], "panic=pause");
        c.actions
            .push(("panic".into(), "pause,reboot=shutdown".into()));
        assert!(matches!(c.validate(), Err(E::InvalidValue { .. })));
    }
}
