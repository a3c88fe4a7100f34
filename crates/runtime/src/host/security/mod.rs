//! Locking QEMU down: the seccomp hint, SELinux exec labels, and running
//! QEMU as a configured uid, gid and groups.
//!
//! See `docs/security.md` for the threat model.

pub mod selinux;
pub mod user;

use tracing::warn;

/// Where the kernel says whether the BPF JIT is on.
pub const BPF_JIT_ENABLE: &str = "/proc/sys/net/core/bpf_jit_enable";

/// Errors of the security setup. Each names the path or key involved.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SecurityError {
    /// The SELinux exec label could not be set or restored.
    #[error("Cannot set SELinux exec label {label:?} (hypervisor.qemu.selinux_label): {reason}")]
    Label {
        /// The label.
        label: String,
        /// Why.
        reason: String,
    },
    /// The sandbox folder could not be handed to QEMU's identity.
    #[error("Cannot give {path} to uid {uid} gid {gid} (hypervisor.qemu.qemu_uid): {reason}")]
    Chown {
        /// The path.
        path: String,
        /// Target uid.
        uid: u32,
        /// Target gid.
        gid: u32,
        /// Why.
        reason: String,
    },
}

/// The warning Kata gives when the seccomp sandbox is on but the BPF JIT is
/// off (every syscall then runs the filter interpreted). `jit` is the content
/// of [`BPF_JIT_ENABLE`], `None` when it cannot be read.
pub fn bpf_jit_warning(seccomp: bool, jit: Option<&str>) -> Option<String> {
    if !seccomp {
        return None;
    }
    match jit.map(str::trim) {
        None => Some(format!(
            "cannot read {BPF_JIT_ENABLE}; the seccomp sandbox may run its filter interpreted"
        )),
        Some("0") => Some(format!(
            "{BPF_JIT_ENABLE} is 0: turn the BPF JIT on to reduce the cost of QEMU's seccomp sandbox"
        )),
        Some(_) => None,
    }
}

/// Log [`bpf_jit_warning`] for this host.
pub fn warn_bpf_jit(seccomp: bool) {
    if !seccomp {
        return;
    }
    let jit = std::fs::read_to_string(BPF_JIT_ENABLE).ok();
    if let Some(w) = bpf_jit_warning(seccomp, jit.as_deref()) {
        warn!("{w}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bpf_jit_warning_only_with_seccomp_and_jit_off() {
        assert_eq!(bpf_jit_warning(false, Some("0\n")), None);
        assert_eq!(bpf_jit_warning(true, Some("1\n")), None);
        assert_eq!(bpf_jit_warning(true, Some("2")), None);
        let w = bpf_jit_warning(true, Some("0\n")).unwrap();
        assert!(w.contains("bpf_jit_enable is 0"), "{w}");
        let w = bpf_jit_warning(true, None).unwrap();
        assert!(w.contains("cannot read"), "{w}");
    }
}
