//! SELinux: the exec label QEMU starts under.
//!
//! When the host has SELinux enabled and `disable_selinux` is false, the
//! label from `selinux_label` is set for the next exec of this thread just
//! before QEMU is spawned, and the previous one is put back right after
//! ([`ExecLabel`] restores on drop). When the host has SELinux disabled, that
//! is logged and QEMU starts unlabelled.
//!
//! This speaks to the kernel directly, as libselinux's `setexeccon` does:
//! the label is written to `/proc/thread-self/attr/exec`, and SELinux is on
//! when its filesystem is mounted. Not linking libselinux (and its libpcre2)
//! spares every short-lived `sandvm` command their loading and constructor
//! (which reads `/proc/filesystems` at each exec).

use super::SecurityError;
use std::io::{Read, Write};
use tracing::{info, warn};

/// The calling thread's label for its next exec.
const EXEC_ATTR: &str = "/proc/thread-self/attr/exec";
/// Present when selinuxfs is mounted, i.e. SELinux is enabled.
const SELINUXFS_ENFORCE: &str = "/sys/fs/selinux/enforce";

/// What to do about the exec label.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Start QEMU under this label.
    Label(String),
    /// Leave the label alone, and why.
    Skip(&'static str),
}

/// Decide from the host's SELinux state and the config.
pub fn decide(host_enabled: bool, disable_selinux: bool, label: Option<&str>) -> Decision {
    if disable_selinux {
        return Decision::Skip("disable_selinux is set");
    }
    if !host_enabled {
        return Decision::Skip("SELinux is disabled on this host");
    }
    match label {
        Some(l) => Decision::Label(l.to_string()),
        None => Decision::Skip("no selinux_label is configured; QEMU inherits the caller's domain"),
    }
}

/// Whether the running kernel has SELinux enabled (selinuxfs mounted).
pub fn host_enabled() -> bool {
    std::path::Path::new(SELINUXFS_ENFORCE).exists()
}

/// The thread's exec label: `None` for the default (nothing set).
fn exec_label() -> std::io::Result<Option<Vec<u8>>> {
    let mut v = Vec::new();
    std::fs::File::open(EXEC_ATTR)?.read_to_end(&mut v)?;
    while v.last().is_some_and(|&b| b == 0 || b == b'\n') {
        v.pop();
    }
    Ok((!v.is_empty()).then_some(v))
}

/// Set the thread's exec label; `None` (an empty write) restores the default.
fn set_exec_label(label: Option<&[u8]>) -> std::io::Result<()> {
    let mut f = std::fs::OpenOptions::new().write(true).open(EXEC_ATTR)?;
    match label {
        Some(l) => {
            let mut buf = l.to_vec();
            buf.push(0);
            f.write_all(&buf)
        }
        // One write of zero bytes, as libselinux does: `write_all(&[])`
        // would issue no write at all.
        None => f.write(&[]).map(drop),
    }
}

/// An exec label set on this thread; dropping it restores the previous one.
#[derive(Debug)]
pub struct ExecLabel {
    previous: Option<Vec<u8>>,
    active: bool,
}

impl ExecLabel {
    /// Apply `decision` on this thread, for the next exec only.
    pub fn apply(decision: &Decision) -> Result<ExecLabel, SecurityError> {
        let label = match decision {
            Decision::Skip(why) => {
                info!("QEMU starts without an SELinux label: {why}");
                return Ok(ExecLabel {
                    previous: None,
                    active: false,
                });
            }
            Decision::Label(l) => l,
        };
        let err = |reason: String| SecurityError::Label {
            label: label.clone(),
            reason,
        };
        if label.as_bytes().contains(&0) {
            return Err(err("it contains a NUL byte".into()));
        }
        let previous = exec_label().map_err(|e| err(format!("read {EXEC_ATTR}: {e}")))?;
        set_exec_label(Some(label.as_bytes()))
            .map_err(|e| err(format!("write {EXEC_ATTR}: {e}")))?;
        Ok(ExecLabel {
            previous,
            active: true,
        })
    }
}

impl Drop for ExecLabel {
    fn drop(&mut self) {
        if !self.active {
            return;
        }
        if let Err(e) = set_exec_label(self.previous.as_deref()) {
            warn!(error = %e, "cannot restore the SELinux exec label");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decision_follows_host_and_config() {
        assert_eq!(
            decide(true, false, Some("system_u:system_r:container_t:s0")),
            Decision::Label("system_u:system_r:container_t:s0".into())
        );
        assert_eq!(
            decide(true, true, Some("x")),
            Decision::Skip("disable_selinux is set")
        );
        assert_eq!(
            decide(false, false, Some("x")),
            Decision::Skip("SELinux is disabled on this host")
        );
        assert!(
            matches!(decide(true, false, None), Decision::Skip(w) if w.contains("selinux_label"))
        );
    }

    #[test]
    fn skipping_touches_nothing() {
        // This host has SELinux disabled; a skip must not touch the exec label.
        let g = ExecLabel::apply(&Decision::Skip("test")).unwrap();
        assert!(!g.active);
        drop(g);
        if !host_enabled() {
            assert_eq!(
                decide(host_enabled(), false, Some("a_t")),
                Decision::Skip("SELinux is disabled on this host")
            );
        }
    }
}
