//! The container's OCI spec as the guest gets it: the root and the bind
//! mounts' sources point into the shared folder, host hooks, cgroup paths
//! and namespace paths are dropped. Only what must change changes.

use std::path::{Path, PathBuf};

use oci_spec::runtime::{Mount, Process, Spec};
use sandvm_agent_protocol::{GUEST_SHARED_DIR, MAX_SPEC_LEN};

/// Host paths whose bind mounts make no sense in a VM: the guest has its own.
const SYSTEM_PREFIXES: [&str; 3] = ["/proc", "/sys", "/dev"];

/// A spec or process the shim cannot pass on.
#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    /// Serialising or parsing JSON failed.
    #[error("Invalid OCI {what}")]
    Json {
        /// "spec" or "process".
        what: &'static str,
        /// serde's error.
        #[source]
        source: serde_json::Error,
    },
    /// The result is larger than the agent accepts.
    #[error("OCI {what} of {len} bytes is larger than the agent accepts ({MAX_SPEC_LEN})")]
    TooLarge {
        /// "spec" or "process".
        what: &'static str,
        /// Its size.
        len: usize,
    },
    /// A bind mount without a source.
    #[error("Bind mount at {destination} has no source")]
    NoSource {
        /// The mount's destination.
        destination: PathBuf,
    },
}

/// What happens to one mount of the spec.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MountPlan {
    /// Passed on as it is (proc, tmpfs, devpts, ...: the guest makes them).
    Keep,
    /// A host bind mount: shared into the guest, then its source rewritten.
    Share {
        /// The host source.
        source: PathBuf,
        /// `rbind`.
        recursive: bool,
        /// `ro`.
        readonly: bool,
    },
    /// `/dev/shm` bound from the host (CRI's pod shm): a tmpfs in the guest.
    GuestShm,
    /// A bind of a host system path (`/proc`, `/sys`, `/dev`): dropped.
    Drop,
}

fn is_bind(m: &Mount) -> bool {
    m.typ().as_deref() == Some("bind")
        || m.options()
            .iter()
            .flatten()
            .any(|o| o == "bind" || o == "rbind")
}

/// What to do with each mount of `spec`, in order.
pub fn plan_mounts(spec: &Spec) -> Result<Vec<MountPlan>, SpecError> {
    spec.mounts()
        .iter()
        .flatten()
        .map(|m| {
            if !is_bind(m) {
                return Ok(MountPlan::Keep);
            }
            let source = m.source().clone().ok_or_else(|| SpecError::NoSource {
                destination: m.destination().clone(),
            })?;
            if m.destination() == Path::new("/dev/shm") {
                return Ok(MountPlan::GuestShm);
            }
            if SYSTEM_PREFIXES.iter().any(|p| source.starts_with(p)) {
                return Ok(MountPlan::Drop);
            }
            let opts = m.options().clone().unwrap_or_default();
            Ok(MountPlan::Share {
                source,
                recursive: opts.iter().any(|o| o == "rbind"),
                readonly: opts.iter().any(|o| o == "ro"),
            })
        })
        .collect()
}

/// The guest's spec: `shared[i]` is the share-relative source of mount `i`
/// for each [`MountPlan::Share`] (in the same order as `plans`).
pub fn guest_spec(
    mut spec: Spec,
    gcid: &str,
    plans: &[MountPlan],
    shared: &[Option<String>],
) -> Result<Vec<u8>, SpecError> {
    if let Some(root) = spec.root_mut() {
        root.set_path(PathBuf::from(format!("{GUEST_SHARED_DIR}/{gcid}/rootfs")));
    }
    spec.set_hooks(None);
    if let Some(linux) = spec.linux_mut() {
        linux.set_cgroups_path(None);
        if let Some(ns) = linux.namespaces_mut() {
            for n in ns.iter_mut() {
                n.set_path(None);
            }
        }
    }
    let old = spec.mounts().clone().unwrap_or_default();
    let mut mounts = Vec::with_capacity(old.len());
    for (i, mut m) in old.into_iter().enumerate() {
        match plans.get(i) {
            Some(MountPlan::Keep) | None => {}
            Some(MountPlan::Drop) => {
                tracing::debug!(destination = %m.destination().display(), "host system bind mount dropped");
                continue;
            }
            Some(MountPlan::GuestShm) => {
                m.set_typ(Some("tmpfs".into()));
                m.set_source(Some("shm".into()));
                m.set_options(Some(
                    ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]
                        .map(String::from)
                        .to_vec(),
                ));
            }
            Some(MountPlan::Share { .. }) => {
                if let Some(Some(rel)) = shared.get(i) {
                    m.set_source(Some(PathBuf::from(rel)));
                }
            }
        }
        mounts.push(m);
    }
    spec.set_mounts(Some(mounts));
    let json = serde_json::to_vec(&spec).map_err(|source| SpecError::Json {
        what: "spec",
        source,
    })?;
    if json.len() > MAX_SPEC_LEN {
        return Err(SpecError::TooLarge {
            what: "spec",
            len: json.len(),
        });
    }
    Ok(json)
}

/// An exec's process (containerd sends it as JSON in an `Any`): checked,
/// passed on as it came.
pub fn exec_process(json: &[u8]) -> Result<(Vec<u8>, bool), SpecError> {
    if json.len() > MAX_SPEC_LEN {
        return Err(SpecError::TooLarge {
            what: "process",
            len: json.len(),
        });
    }
    let p: Process = serde_json::from_slice(json).map_err(|source| SpecError::Json {
        what: "process",
        source,
    })?;
    Ok((json.to_vec(), p.terminal().unwrap_or(false)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> Spec {
        serde_json::from_value(serde_json::json!({
            "ociVersion": "1.0.2",
            "process": {"args": ["sh"], "cwd": "/", "user": {"uid": 0, "gid": 0}},
            "root": {"path": "rootfs"},
            "hooks": {"prestart": [{"path": "/usr/bin/hook"}]},
            "mounts": [
                {"destination": "/proc", "type": "proc", "source": "proc"},
                {"destination": "/etc/hosts", "type": "bind", "source": "/var/lib/x/hosts", "options": ["rbind", "ro"]},
                {"destination": "/dev/shm", "type": "bind", "source": "/run/x/shm", "options": ["rbind"]},
                {"destination": "/sys/fs/cgroup", "type": "bind", "source": "/sys/fs/cgroup", "options": ["bind"]},
                {"destination": "/data", "source": "/srv/data", "options": ["bind", "rw"]}
            ],
            "linux": {"cgroupsPath": "/ns/c1", "namespaces": [{"type": "network", "path": "/var/run/netns/x"}, {"type": "pid"}]}
        }))
        .unwrap()
    }

    #[test]
    fn mounts_are_planned_by_kind() {
        let p = plan_mounts(&spec()).unwrap();
        assert_eq!(p[0], MountPlan::Keep);
        assert_eq!(
            p[1],
            MountPlan::Share {
                source: "/var/lib/x/hosts".into(),
                recursive: true,
                readonly: true
            }
        );
        assert_eq!(p[2], MountPlan::GuestShm);
        assert_eq!(p[3], MountPlan::Drop);
        assert!(matches!(
            &p[4],
            MountPlan::Share {
                readonly: false,
                recursive: false,
                ..
            }
        ));
    }

    #[test]
    fn the_guest_spec_points_into_the_share_and_drops_host_things() {
        let s = spec();
        let plans = plan_mounts(&s).unwrap();
        let shared = vec![
            None,
            Some("c1/binds/1-hosts".to_string()),
            None,
            None,
            Some("c1/binds/4-data".to_string()),
        ];
        let json = guest_spec(s, "c1", &plans, &shared).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&json).unwrap();
        assert_eq!(v["root"]["path"], format!("{GUEST_SHARED_DIR}/c1/rootfs"));
        assert!(v.get("hooks").is_none_or(|h| h.is_null()));
        assert!(v["linux"].get("cgroupsPath").is_none());
        assert!(v["linux"]["namespaces"][0].get("path").is_none());
        let m = v["mounts"].as_array().unwrap();
        assert_eq!(m.len(), 4);
        assert_eq!(m[1]["source"], "c1/binds/1-hosts");
        assert_eq!(m[2]["type"], "tmpfs");
        assert_eq!(m[3]["source"], "c1/binds/4-data");
    }

    #[test]
    fn exec_processes_are_checked() {
        let (j, tty) =
            exec_process(br#"{"args":["id"],"cwd":"/","terminal":true,"user":{"uid":0,"gid":0}}"#)
                .unwrap();
        assert!(tty && !j.is_empty());
        assert!(exec_process(b"{").is_err());
    }
}
