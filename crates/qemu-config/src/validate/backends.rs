//! Backend checks: objects, memory backends, chardevs, netdevs and drives.

use std::collections::HashSet;

use super::{E, Objects, Users, absolute, fd, invalid, non_empty, token};
use crate::chardev::{Chardev, QmpSocket};
use crate::config::Config;
use crate::device::RefKind;
use crate::netdev::Netdev;
use crate::object::Object;

pub(super) fn check_objects(c: &Config) -> Result<(), E> {
    for o in &c.objects {
        if o.size_mib() == Some(0) {
            return Err(invalid(
                format!("object {} size", o.id()),
                "0M",
                "must be greater than 0",
            ));
        }
        match o {
            Object::MemoryBackendFile { mem_path, .. } => non_empty("mem-path", mem_path)?,
            Object::RngRandom { filename, .. } => non_empty("rng filename", filename)?,
            Object::Other {
                qom_type, props, ..
            } => {
                token("object type", qom_type)?;
                for (k, _) in props {
                    token("object property", k)?;
                }
            }
            _ => {}
        }
    }
    Ok(())
}

/// Machine `memory-backend` and NUMA `memdev` references, sizes and exclusivity.
pub(super) fn check_memdevs<'a>(
    c: &'a Config,
    objects: &Objects<'a>,
    users: &mut Users<'a>,
) -> Result<(), E> {
    let machine_backend = c.machine.get("memory-backend");
    if let Some(id) = machine_backend {
        let obj = objects.get("machine memory-backend", RefKind::Memdev, id)?;
        users.claim(RefKind::Memdev, id, "machine memory-backend".into())?;
        if obj.size_mib() != Some(c.memory.size_mib) {
            return Err(invalid(
                format!("size of memory backend {id}"),
                format!("{}M", obj.size_mib().unwrap_or(0)),
                "must equal the -m size",
            ));
        }
    }
    let mut nodeids = HashSet::new();
    let mut numa_mib = 0u64;
    for n in &c.numa {
        if let Some(id) = n.nodeid
            && !nodeids.insert(id)
        {
            return Err(E::DuplicateId {
                family: "NUMA node",
                id: id.to_string(),
            });
        }
        if let Some(cpus) = &n.cpus {
            let ok = match cpus.split_once('-') {
                Some((a, b)) => {
                    matches!((a.parse::<u32>(), b.parse::<u32>()), (Ok(a), Ok(b)) if a <= b)
                }
                None => cpus.parse::<u32>().is_ok(),
            };
            if !ok {
                return Err(invalid("NUMA cpus", cpus, "must be N or N-M with N <= M"));
            }
        }
        if let Some(memdev) = &n.memdev {
            if machine_backend.is_some() {
                return Err(E::Conflict {
                    a: "-machine memory-backend".into(),
                    b: "-numa memdev".into(),
                });
            }
            let obj = objects.get("NUMA node", RefKind::Memdev, memdev)?;
            users.claim(RefKind::Memdev, memdev, "NUMA node".into())?;
            numa_mib += obj.size_mib().unwrap_or(0);
        }
    }
    if numa_mib != 0 && numa_mib != c.memory.size_mib {
        return Err(invalid(
            "total NUMA memdev size",
            format!("{numa_mib}M"),
            "must equal the -m size",
        ));
    }
    Ok(())
}

/// Chardev shapes, plus `-serial` and `-tpmdev` references to chardevs.
pub(super) fn check_chardevs<'a>(
    c: &'a Config,
    chardev_ids: &HashSet<&str>,
    users: &mut Users<'a>,
) -> Result<(), E> {
    for q in &c.qmp {
        match &q.socket {
            QmpSocket::Path(p) => non_empty("QMP socket path", p)?,
            QmpSocket::Fd(f) => fd("QMP socket fd", *f)?,
        }
    }
    for ch in &c.chardevs {
        match ch {
            Chardev::Socket {
                id, path, fd: sfd, ..
            } => match (path, sfd) {
                (Some(_), Some(_)) => {
                    return Err(E::Conflict {
                        a: format!("chardev {id} path"),
                        b: "fd".into(),
                    });
                }
                (None, None) => {
                    return Err(E::Missing {
                        item: format!("Socket chardev {id}"),
                        what: "a path or an fd",
                    });
                }
                (Some(p), None) => non_empty("socket path", p)?,
                (None, Some(f)) => fd("socket fd", *f)?,
            },
            Chardev::File { path, .. } | Chardev::Pipe { path, .. } => {
                non_empty("chardev path", path)?;
            }
            Chardev::Stdio { id, .. } if c.knobs.daemonize => {
                return Err(E::Conflict {
                    a: format!("stdio chardev {id}"),
                    b: "-daemonize".into(),
                });
            }
            _ => {}
        }
    }
    let chardev_ref = |from: String, id: &str| {
        if chardev_ids.contains(id) {
            Ok(())
        } else {
            Err(E::UnknownReference {
                from,
                kind: "chardev",
                id: id.to_owned(),
            })
        }
    };
    for s in &c.serials {
        chardev_ref("Serial port".into(), &s.chardev)?;
        users.claim(RefKind::Chardev, &s.chardev, "serial port".into())?;
    }
    for t in &c.tpmdevs {
        chardev_ref(format!("Tpmdev {}", t.id), &t.chardev)?;
        users.claim(RefKind::Chardev, &t.chardev, format!("tpmdev {}", t.id))?;
    }
    Ok(())
}

pub(super) fn check_netdevs(c: &Config) -> Result<(), E> {
    for n in &c.netdevs {
        match n {
            Netdev::Tap {
                id,
                fds,
                vhost,
                vhostfds,
                ifname,
                script_none,
            } => {
                for f in fds.iter().chain(vhostfds) {
                    fd("tap fd", *f)?;
                }
                if !fds.is_empty() && (ifname.is_some() || *script_none) {
                    return Err(E::Conflict {
                        a: format!("tap {id} fds"),
                        b: if ifname.is_some() {
                            "ifname"
                        } else {
                            "script=no"
                        }
                        .into(),
                    });
                }
                if !vhostfds.is_empty() {
                    if !vhost {
                        return Err(E::Missing {
                            item: format!("Tap {id} with vhostfds"),
                            what: "vhost=on",
                        });
                    }
                    if vhostfds.len() != fds.len().max(1) {
                        return Err(invalid(
                            format!("tap {id} vhostfds"),
                            format!("{vhostfds:?}"),
                            "must have one fd per tap fd",
                        ));
                    }
                }
            }
            Netdev::User { hostfwds, .. } => {
                for h in hostfwds {
                    for a in [&h.host_addr, &h.guest_addr].into_iter().flatten() {
                        if a.is_empty() || a.contains([':', '-', ',']) {
                            return Err(invalid(
                                "hostfwd address",
                                a,
                                "must be a non-empty IPv4 address without ':', '-' or ','",
                            ));
                        }
                    }
                }
            }
            Netdev::Socket { fd: f, .. } => fd("socket netdev fd", *f)?,
            Netdev::Stream { path, .. } => non_empty("stream netdev path", path)?,
        }
    }
    Ok(())
}

pub(super) fn check_drives(c: &Config) -> Result<(), E> {
    for d in &c.drives {
        absolute(&format!("drive {} file", d.id), &d.file)?;
        token("drive format", &d.format)?;
        if let Some(aio) = &d.aio
            && !matches!(aio.as_str(), "threads" | "native" | "io_uring")
        {
            return Err(invalid(
                "drive aio",
                aio,
                "must be threads, native or io_uring",
            ));
        }
        if let Some(cache) = &d.cache {
            if !matches!(
                cache.as_str(),
                "writeback" | "none" | "writethrough" | "directsync" | "unsafe"
            ) {
                return Err(invalid(
                    "drive cache",
                    cache,
                    "must be writeback, none, writethrough, directsync or unsafe",
                ));
            }
            if d.cache_direct.is_some() || d.cache_no_flush.is_some() {
                return Err(invalid(
                    "drive cache",
                    cache,
                    "cannot go with cache.direct or cache.no-flush",
                ));
            }
        }
    }
    Ok(())
}
