//! SELinux: the exec label QEMU starts under.
//!
//! When the host has SELinux enabled and `disable_selinux` is false, the
//! label from `selinux_label` is set for the next exec of this thread
//! (`setexeccon`) just before QEMU is spawned, and the previous one is put
//! back right after ([`ExecLabel`] restores on drop). When the host has
//! SELinux disabled, that is logged and QEMU starts unlabelled.

use super::SecurityError;
use std::ffi::CString;
use tracing::{info, warn};

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

/// Whether the running kernel has SELinux enabled.
pub fn host_enabled() -> bool {
    !matches!(
        ::selinux::kernel_support(),
        ::selinux::KernelSupport::Unsupported
    )
}

/// An exec label set on this thread; dropping it restores the previous one.
#[derive(Debug)]
pub struct ExecLabel {
    previous: Option<CString>,
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
        let previous = ::selinux::SecurityContext::of_next_exec(false)
            .map_err(|e| err(e.to_string()))?
            .and_then(|c| c.to_c_string().ok().flatten().map(|c| c.into_owned()));
        let c = CString::new(label.as_str()).map_err(|e| err(e.to_string()))?;
        ::selinux::SecurityContext::from_c_str(&c, false)
            .set_for_next_exec()
            .map_err(|e| err(e.to_string()))?;
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
        let r = match &self.previous {
            Some(p) => ::selinux::SecurityContext::from_c_str(p, false).set_for_next_exec(),
            None => ::selinux::SecurityContext::set_default_context_for_next_exec(),
        };
        if let Err(e) = r {
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
        // This host has SELinux disabled; a skip must not call into libselinux.
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
