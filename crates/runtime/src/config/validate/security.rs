//! Security keys: `seccompsandbox` (parsed once, here), `qemu_uid`,
//! `qemu_gid`, `qemu_groups`, `selinux_label`, the regexes of
//! `enable_annotations`, and `extra_monitor_socket` (a debug back door).

use super::{Ctx, k};
use crate::config::ConfigError;
use crate::config::raw::RawQemu;
use crate::config::types::*;

/// The security section, checked.
pub(super) struct Security {
    pub seccomp_sandbox: Option<SeccompSandbox>,
    pub qemu_user: Option<QemuUser>,
    pub selinux_label: Option<String>,
    pub extra_monitor: Option<ExtraMonitor>,
}

pub(super) fn check(cx: &Ctx<'_>, raw: &RawQemu) -> Result<Security, ConfigError> {
    let seccomp_sandbox = match raw.seccompsandbox.as_deref().map(str::trim) {
        None | Some("") => None,
        Some(s) => Some(
            SeccompSandbox::parse(s).map_err(|e| cx.err(&k("seccompsandbox"), e.to_string()))?,
        ),
    };
    // Checked here so a bad list fails at load, not at the first annotation.
    for re in raw.enable_annotations.iter().flatten() {
        regex::Regex::new(&format!("^(?:{re})$"))
            .map_err(|e| cx.err(&k("enable_annotations"), format!("bad regex {re:?}: {e}")))?;
    }
    let selinux_label = match raw.selinux_label.as_deref() {
        None | Some("") => None,
        Some(l) if l.contains('\0') || l.contains('\n') => {
            return Err(cx.err(&k("selinux_label"), "contains a newline or NUL"));
        }
        Some(l) => Some(l.to_string()),
    };
    Ok(Security {
        seccomp_sandbox,
        qemu_user: qemu_user(cx, raw)?,
        selinux_label,
        extra_monitor: extra_monitor(cx, raw)?,
    })
}

/// Kata's `extra_monitor_socket`: `hmp`, `qmp` or `qmp-pretty`, only with
/// `enable_debug` (Kata ignores it without; sandvm refuses it, naming the key).
fn extra_monitor(cx: &Ctx<'_>, raw: &RawQemu) -> Result<Option<ExtraMonitor>, ConfigError> {
    let key = k("extra_monitor_socket");
    let mode = match raw.extra_monitor_socket.as_deref() {
        None | Some("") => return Ok(None),
        Some("hmp") => ExtraMonitor::Hmp,
        Some("qmp") => ExtraMonitor::Qmp,
        Some("qmp-pretty") => ExtraMonitor::QmpPretty,
        Some(o) => {
            return Err(cx.err(
                &key,
                format!("unknown monitor {o:?}; expected hmp, qmp or qmp-pretty"),
            ));
        }
    };
    if raw.enable_debug != Some(true) {
        return Err(cx.err(
            &key,
            "needs enable_debug = true: whoever opens the socket controls QEMU",
        ));
    }
    Ok(Some(mode))
}

/// sandvm's `qemu_uid`, `qemu_gid` and `qemu_groups`: all or nothing for the
/// ids, and groups only with them.
fn qemu_user(cx: &Ctx<'_>, raw: &RawQemu) -> Result<Option<QemuUser>, ConfigError> {
    let id = |key: &str, v: i64| -> Result<u32, ConfigError> {
        u32::try_from(v)
            .ok()
            .filter(|v| *v != u32::MAX)
            .ok_or_else(|| cx.err(&k(key), format!("must be 0 to {} (got {v})", u32::MAX - 1)))
    };
    match (raw.qemu_uid, raw.qemu_gid) {
        (None, None) => {
            if raw.qemu_groups.as_ref().is_some_and(|g| !g.is_empty()) {
                return Err(cx.err(&k("qemu_groups"), "needs qemu_uid and qemu_gid"));
            }
            Ok(None)
        }
        (Some(_), None) => Err(cx.err(&k("qemu_gid"), "is required with qemu_uid")),
        (None, Some(_)) => Err(cx.err(&k("qemu_uid"), "is required with qemu_gid")),
        (Some(u), Some(g)) => {
            let mut groups = Vec::new();
            for (i, v) in raw.qemu_groups.iter().flatten().enumerate() {
                groups.push(id(&format!("qemu_groups[{i}]"), *v)?);
            }
            Ok(Some(QemuUser {
                uid: id("qemu_uid", u)?,
                gid: id("qemu_gid", g)?,
                groups,
            }))
        }
    }
}
