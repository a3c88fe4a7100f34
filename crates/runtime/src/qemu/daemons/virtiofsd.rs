//! virtiofsd's command line (Kata's, with the log on stderr instead of syslog).
//!
//! The runtime binds the vhost-user socket itself and hands it over as fd 3
//! (`--fd=3`, as Kata does), so QEMU can connect the moment it starts: the
//! connection waits in the listen backlog until virtiofsd accepts it.

use crate::config::HypervisorConfig;
use std::path::Path;

/// The fd virtiofsd finds its listening socket on.
pub const SOCKET_FD: i32 = 3;

/// virtiofsd's `--sandbox` for this host: `namespace` (mount, pid and net
/// namespaces, pivot_root) needs root; otherwise `none`.
pub fn sandbox_mode() -> &'static str {
    if nix::unistd::geteuid().is_root() {
        "namespace"
    } else {
        "none"
    }
}

/// The arguments: socket fd, shared folder, cache mode, sandbox mode, log
/// level, then `virtio_fs_extra_args` (which may override the sandbox mode).
pub fn args(cfg: &HypervisorConfig, share: &Path) -> Vec<String> {
    let fs = &cfg.shared_fs;
    let mut a = vec![
        format!("--fd={SOCKET_FD}"),
        format!("--shared-dir={}", share.display()),
        format!("--cache={}", fs.cache),
    ];
    let user_sandbox = fs.extra_args.iter().any(|x| x.starts_with("--sandbox"));
    if !user_sandbox {
        a.push(format!("--sandbox={}", sandbox_mode()));
    }
    a.push(format!(
        "--log-level={}",
        if cfg.debug { "debug" } else { "info" }
    ));
    a.extend(fs.extra_args.iter().cloned());
    a
}
