//! The OCI spec the host sent, checked and rewritten for the guest: the root
//! comes from the shared folder, bind sources must be inside it, and hooks,
//! cgroup paths, seccomp and LSM labels (host things) are dropped.

use std::path::{Path, PathBuf};

use oci_spec::runtime::{LinuxNamespaceType, Mount, Process, Spec};

use crate::config::{
    Capabilities, ContainerConfig, DeviceConfig, MountConfig, Namespaces, ProcessConfig,
};
use crate::validate::{InvalidInput, clean_absolute, shared_source};

/// File system types a container may mount (anything else could reach
/// guest devices).
const ALLOWED_FSTYPES: [&str; 8] = [
    "bind", "proc", "sysfs", "tmpfs", "devpts", "mqueue", "cgroup", "cgroup2",
];

/// A spec or process the agent refuses.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SpecError {
    /// Not valid JSON for the type.
    #[error("Invalid OCI {what} JSON: {msg}")]
    Json {
        /// "spec" or "process".
        what: &'static str,
        /// serde's message.
        msg: String,
    },
    /// A bad path or id inside.
    #[error(transparent)]
    Input(#[from] InvalidInput),
    /// Something we do not support or allow.
    #[error("Unsupported OCI {field}: {why}")]
    Unsupported {
        /// The spec field.
        field: String,
        /// Why.
        why: String,
    },
}

/// cgroup limits from `linux.resources`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Limits {
    /// memory.max in bytes.
    pub memory: Option<u64>,
    /// pids.max.
    pub pids: Option<u64>,
    /// cpu.max as (quota, period) in µs.
    pub cpu: Option<(u64, u64)>,
}

/// The rewritten container.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    /// File system and namespaces.
    pub container: ContainerConfig,
    /// The init process.
    pub process: ProcessConfig,
    /// cgroup limits.
    pub limits: Limits,
}

/// Parses and rewrites a container's spec. `shared` is the guest's shared
/// folder; the root is `<shared>/<cid>/rootfs`.
pub fn rewrite(cid: &str, json: &[u8], shared: &Path) -> Result<Plan, SpecError> {
    let spec: Spec = serde_json::from_slice(json).map_err(|e| SpecError::Json {
        what: "spec",
        msg: e.to_string(),
    })?;
    let process = spec
        .process()
        .as_ref()
        .ok_or_else(|| unsupported("process", "missing"))?;
    let process = process_config(process)?;
    let linux = spec.linux().clone().unwrap_or_default();
    let namespaces = namespaces(&linux)?;
    let mut mounts = Vec::new();
    for m in spec.mounts().iter().flatten() {
        mounts.push(mount_config(m, shared)?);
    }
    let mut devices = Vec::new();
    for d in linux.devices().iter().flatten() {
        let path = clean_absolute("device path", d.path())?;
        if !path.starts_with("/dev") {
            return Err(unsupported(
                "linux.devices",
                &format!("{} is not under /dev", path.display()),
            ));
        }
        devices.push(DeviceConfig {
            path,
            kind: d.typ().as_str().chars().next().unwrap_or('c'),
            major: u64::try_from(d.major())
                .map_err(|_| unsupported("linux.devices", "negative major"))?,
            minor: u64::try_from(d.minor())
                .map_err(|_| unsupported("linux.devices", "negative minor"))?,
            mode: d.file_mode().unwrap_or(0o666) & 0o7777,
            uid: d.uid().unwrap_or(0),
            gid: d.gid().unwrap_or(0),
        });
    }
    let paths = |v: &Option<Vec<String>>, what: &str| -> Result<Vec<PathBuf>, SpecError> {
        v.iter()
            .flatten()
            .map(|p| Ok(clean_absolute(what, Path::new(p))?))
            .collect()
    };
    let hostname = spec.hostname().clone().filter(|h| !h.is_empty());
    if hostname
        .as_ref()
        .is_some_and(|h| h.len() > 64 || h.contains('\0'))
    {
        return Err(unsupported("hostname", "longer than 64 bytes or has NUL"));
    }
    let root = spec.root().as_ref();
    let container = ContainerConfig {
        rootfs: shared.join(cid).join("rootfs"),
        readonly_root: root.and_then(|r| r.readonly()).unwrap_or(false),
        namespaces,
        hostname,
        mounts,
        devices,
        masked_paths: paths(linux.masked_paths(), "masked path")?,
        readonly_paths: paths(linux.readonly_paths(), "readonly path")?,
    };
    Ok(Plan {
        container,
        process,
        limits: limits(&linux),
    })
}

/// Parses and checks an OCI process (ExecProcess).
pub fn parse_process(json: &[u8]) -> Result<ProcessConfig, SpecError> {
    let p: Process = serde_json::from_slice(json).map_err(|e| SpecError::Json {
        what: "process",
        msg: e.to_string(),
    })?;
    process_config(&p)
}

fn unsupported(field: &str, why: &str) -> SpecError {
    SpecError::Unsupported {
        field: field.to_string(),
        why: why.to_string(),
    }
}

fn process_config(p: &Process) -> Result<ProcessConfig, SpecError> {
    let args = p.args().clone().unwrap_or_default();
    if args.is_empty() || args[0].is_empty() {
        return Err(unsupported("process.args", "empty"));
    }
    if args
        .iter()
        .chain(p.env().iter().flatten())
        .any(|a| a.contains('\0'))
    {
        return Err(unsupported("process.args/env", "contains NUL"));
    }
    let user = p.user();
    let rlimits = p
        .rlimits()
        .iter()
        .flatten()
        .map(|r| (name_of(&r.typ()), r.soft(), r.hard()))
        .collect();
    let capabilities = p.capabilities().as_ref().map(|c| {
        let set = |s: &Option<oci_spec::runtime::Capabilities>| -> Vec<String> {
            {
                let mut v: Vec<String> = s.iter().flatten().map(name_of).collect();
                v.sort();
                v
            }
        };
        Capabilities {
            bounding: set(c.bounding()),
            effective: set(c.effective()),
            permitted: set(c.permitted()),
            inheritable: set(c.inheritable()),
            ambient: set(c.ambient()),
        }
    });
    Ok(ProcessConfig {
        args,
        env: p.env().clone().unwrap_or_default(),
        cwd: clean_absolute("process.cwd", p.cwd())?,
        uid: user.uid(),
        gid: user.gid(),
        additional_gids: user.additional_gids().clone().unwrap_or_default(),
        username: user.username().clone().filter(|u| !u.is_empty()),
        umask: user.umask(),
        rlimits,
        capabilities,
        no_new_privileges: p.no_new_privileges().unwrap_or(false),
        terminal: p.terminal().unwrap_or(false),
        oom_score_adj: p.oom_score_adj(),
    })
}

/// The serde name of an OCI enum value (`CAP_CHOWN`, `RLIMIT_NOFILE`).
fn name_of<T: serde::Serialize>(v: &T) -> String {
    match serde_json::to_value(v) {
        Ok(serde_json::Value::String(s)) => s,
        _ => String::new(),
    }
}

fn namespaces(linux: &oci_spec::runtime::Linux) -> Result<Namespaces, SpecError> {
    let mut ns = Namespaces::default();
    for n in linux.namespaces().iter().flatten() {
        if let Some(p) = n.path() {
            tracing::warn!(path = %p.display(), kind = ?n.typ(), "namespace path ignored: a new namespace is made");
        }
        match n.typ() {
            LinuxNamespaceType::Pid => ns.pid = true,
            LinuxNamespaceType::Ipc => ns.ipc = true,
            LinuxNamespaceType::Uts => ns.uts = true,
            LinuxNamespaceType::Cgroup => ns.cgroup = true,
            LinuxNamespaceType::Mount | LinuxNamespaceType::Network => {}
            LinuxNamespaceType::User => {
                return Err(unsupported("linux.namespaces", "user namespaces"));
            }
            LinuxNamespaceType::Time => {
                return Err(unsupported("linux.namespaces", "time namespaces"));
            }
        }
    }
    Ok(ns)
}

fn limits(linux: &oci_spec::runtime::Linux) -> Limits {
    let Some(r) = linux.resources() else {
        return Limits::default();
    };
    let memory = r
        .memory()
        .as_ref()
        .and_then(|m| m.limit())
        .and_then(|l| u64::try_from(l).ok())
        .filter(|&l| l > 0);
    let pids = r
        .pids()
        .as_ref()
        .and_then(|p| u64::try_from(p.limit()).ok())
        .filter(|&l| l > 0);
    let cpu = r.cpu().as_ref().and_then(|c| {
        let quota = u64::try_from(c.quota()?).ok().filter(|&q| q > 0)?;
        Some((quota, c.period().unwrap_or(100_000)))
    });
    Limits { memory, pids, cpu }
}

fn mount_config(m: &Mount, shared: &Path) -> Result<MountConfig, SpecError> {
    let destination = clean_absolute("mount destination", m.destination())?;
    let what = format!("mount source for {}", destination.display());
    let (flags, propagation, data, bind) =
        parse_options(m.options().as_deref().unwrap_or_default());
    let mut fstype = m.typ().clone().unwrap_or_default();
    if bind > 0 || fstype == "bind" || fstype.is_empty() {
        if bind == 0 && fstype != "bind" {
            return Err(unsupported(
                "mounts",
                &format!("{} has no type", destination.display()),
            ));
        }
        fstype = "bind".to_string();
    }
    if !ALLOWED_FSTYPES.contains(&fstype.as_str()) {
        return Err(unsupported(
            "mounts",
            &format!("type {fstype} at {}", destination.display()),
        ));
    }
    let source = if fstype == "bind" {
        let src = m
            .source()
            .as_ref()
            .ok_or_else(|| unsupported("mounts", &format!("{what} missing")))?;
        shared_source(shared, &what, src)?
    } else {
        m.source().clone().unwrap_or_else(|| PathBuf::from(&fstype))
    };
    let bind = if fstype == "bind" { bind.max(1) } else { 0 };
    Ok(MountConfig {
        destination,
        fstype,
        source,
        flags,
        propagation,
        data,
        bind,
    })
}

/// Splits OCI mount options into (flags, propagation flags, data, bind kind).
pub fn parse_options(opts: &[String]) -> (u64, u64, String, u8) {
    use libc::*;
    let (mut flags, mut prop, mut bind) = (0u64, 0u64, 0u8);
    let mut data: Vec<&str> = Vec::new();
    for o in opts {
        let (set, clear): (u64, u64) = match o.as_str() {
            "ro" => (MS_RDONLY, 0),
            "rw" => (0, MS_RDONLY),
            "nosuid" => (MS_NOSUID, 0),
            "suid" => (0, MS_NOSUID),
            "nodev" => (MS_NODEV, 0),
            "dev" => (0, MS_NODEV),
            "noexec" => (MS_NOEXEC, 0),
            "exec" => (0, MS_NOEXEC),
            "sync" => (MS_SYNCHRONOUS, 0),
            "async" => (0, MS_SYNCHRONOUS),
            "dirsync" => (MS_DIRSYNC, 0),
            "noatime" => (MS_NOATIME, 0),
            "atime" => (0, MS_NOATIME),
            "nodiratime" => (MS_NODIRATIME, 0),
            "diratime" => (0, MS_NODIRATIME),
            "relatime" => (MS_RELATIME, 0),
            "norelatime" => (0, MS_RELATIME),
            "strictatime" => (MS_STRICTATIME, 0),
            "bind" => {
                bind = bind.max(1);
                continue;
            }
            "rbind" => {
                bind = 2;
                continue;
            }
            "private" | "rprivate" | "shared" | "rshared" | "slave" | "rslave" | "unbindable"
            | "runbindable" => {
                let base = match o.trim_start_matches('r') {
                    "private" => MS_PRIVATE,
                    "shared" => MS_SHARED,
                    "slave" => MS_SLAVE,
                    _ => MS_UNBINDABLE,
                };
                let rec = if o.starts_with('r') { MS_REC } else { 0 };
                prop = base | rec;
                continue;
            }
            _ => {
                data.push(o);
                continue;
            }
        };
        flags = (flags | set) & !clear;
    }
    (flags, prop, data.join(","), bind)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SHARED: &str = "/run/kata-containers/shared/containers";

    fn spec_with(extra: serde_json::Value) -> Vec<u8> {
        let mut v = serde_json::json!({
            "ociVersion": "1.0.2",
            "process": {"args": ["sh"], "cwd": "/", "user": {"uid": 0, "gid": 0}, "env": ["PATH=/bin"]},
            "root": {"path": "/host/path/rootfs", "readonly": true},
            "hostname": "c1",
            "hooks": {"prestart": [{"path": "/usr/bin/host-hook"}]},
            "mounts": [
                {"destination": "/proc", "type": "proc", "source": "proc"},
                {"destination": "/dev", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]}
            ],
            "linux": {"cgroupsPath": "/host/cgroup/path", "namespaces": [{"type": "pid"}, {"type": "mount"}, {"type": "network", "path": "/var/run/netns/x"}, {"type": "uts"}],
                      "maskedPaths": ["/proc/kcore"], "readonlyPaths": ["/proc/sys"],
                      "resources": {"memory": {"limit": 1048576}, "pids": {"limit": 20}}}
        });
        for (k, x) in extra.as_object().unwrap() {
            v[k] = x.clone();
        }
        serde_json::to_vec(&v).unwrap()
    }

    #[test]
    fn rewrite_takes_the_root_from_the_shared_folder_and_drops_host_things() {
        let p = rewrite("c1", &spec_with(serde_json::json!({})), Path::new(SHARED)).unwrap();
        assert_eq!(p.container.rootfs, Path::new(SHARED).join("c1/rootfs"));
        assert!(p.container.readonly_root);
        assert_eq!(p.container.hostname.as_deref(), Some("c1"));
        assert_eq!(
            p.container.namespaces,
            Namespaces {
                pid: true,
                ipc: false,
                uts: true,
                cgroup: false
            }
        );
        assert_eq!(p.container.mounts.len(), 2);
        let dev = &p.container.mounts[1];
        assert_eq!(dev.fstype, "tmpfs");
        assert_eq!(dev.data, "mode=755,size=65536k");
        assert_eq!(dev.flags, libc::MS_NOSUID | libc::MS_STRICTATIME);
        assert_eq!(
            p.limits,
            Limits {
                memory: Some(1048576),
                pids: Some(20),
                cpu: None
            }
        );
        assert_eq!(p.process.args, ["sh"]);
        assert_eq!(p.container.masked_paths, [PathBuf::from("/proc/kcore")]);
    }

    #[test]
    fn bind_sources_must_be_in_the_shared_folder() {
        let ok = serde_json::json!({"mounts": [{"destination": "/etc/resolv.conf", "type": "bind", "source": "c1-resolv.conf", "options": ["rbind", "ro"]}]});
        let p = rewrite("c1", &spec_with(ok), Path::new(SHARED)).unwrap();
        let m = &p.container.mounts[0];
        assert_eq!(m.source, Path::new(SHARED).join("c1-resolv.conf"));
        assert_eq!((m.bind, m.flags), (2, libc::MS_RDONLY));
        let host = serde_json::json!({"mounts": [{"destination": "/x", "type": "bind", "source": "/var/lib/host", "options": ["bind"]}]});
        let e = rewrite("c1", &spec_with(host), Path::new(SHARED)).unwrap_err();
        assert!(
            e.to_string().contains("not inside the shared folder"),
            "{e}"
        );
        let dotdot = serde_json::json!({"mounts": [{"destination": "/x/../../etc", "type": "tmpfs", "source": "t"}]});
        assert!(rewrite("c1", &spec_with(dotdot), Path::new(SHARED)).is_err());
    }

    #[test]
    fn dangerous_or_unsupported_things_are_refused() {
        let blk = serde_json::json!({"mounts": [{"destination": "/x", "type": "ext4", "source": "/dev/vda"}]});
        let e = rewrite("c1", &spec_with(blk), Path::new(SHARED)).unwrap_err();
        assert!(e.to_string().contains("type ext4"), "{e}");
        let userns = serde_json::json!({"linux": {"namespaces": [{"type": "user"}]}});
        assert!(rewrite("c1", &spec_with(userns), Path::new(SHARED)).is_err());
        assert!(matches!(
            rewrite("c1", b"{not json", Path::new(SHARED)),
            Err(SpecError::Json { .. })
        ));
        let noargs =
            serde_json::json!({"process": {"args": [], "cwd": "/", "user": {"uid": 0, "gid": 0}}});
        assert!(rewrite("c1", &spec_with(noargs), Path::new(SHARED)).is_err());
        let relcwd = serde_json::json!({"process": {"args": ["x"], "cwd": "tmp", "user": {"uid": 0, "gid": 0}}});
        assert!(rewrite("c1", &spec_with(relcwd), Path::new(SHARED)).is_err());
    }

    #[test]
    fn process_json_with_caps_and_rlimits() {
        let p = parse_process(
            br#"{"args":["id"],"cwd":"/tmp","terminal":true,"noNewPrivileges":true,
            "user":{"uid":1000,"gid":1000,"additionalGids":[5]},
            "capabilities":{"bounding":["CAP_CHOWN","CAP_KILL"],"effective":["CAP_KILL"]},
            "rlimits":[{"type":"RLIMIT_NOFILE","hard":1024,"soft":512}]}"#,
        )
        .unwrap();
        assert_eq!(
            (p.uid, p.gid, p.additional_gids.clone()),
            (1000, 1000, vec![5])
        );
        assert!(p.terminal && p.no_new_privileges);
        let caps = p.capabilities.unwrap();
        assert_eq!(caps.bounding, ["CAP_CHOWN", "CAP_KILL"]);
        assert!(caps.ambient.is_empty());
        assert_eq!(p.rlimits, [("RLIMIT_NOFILE".to_string(), 512, 1024)]);
    }

    #[test]
    fn options_split_into_flags_propagation_and_data() {
        let o: Vec<String> = ["ro", "nosuid", "rprivate", "newinstance", "ptmxmode=0666"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let (f, p, d, b) = parse_options(&o);
        assert_eq!(f, libc::MS_RDONLY | libc::MS_NOSUID);
        assert_eq!(p, libc::MS_PRIVATE | libc::MS_REC);
        assert_eq!(d, "newinstance,ptmxmode=0666");
        assert_eq!(b, 0);
    }
}
