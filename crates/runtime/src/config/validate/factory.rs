//! `[factory]`: `enable_template`, `template_path`, `vm_cache_number`,
//! `vm_cache_endpoint`.

use super::Ctx;
use crate::config::ConfigError;
use crate::config::raw::RawFactory;
use crate::config::types::*;
use std::path::PathBuf;

/// Template folder when unset (Kata's).
pub const DEFAULT_TEMPLATE_PATH: &str = "/run/vc/vm/template";

/// The VM cache's socket when unset (Kata's).
pub const DEFAULT_VM_CACHE_ENDPOINT: &str = "/var/run/kata-containers/cache.sock";

/// Most VMs a cache may keep (each is a whole VM; the cache also refuses
/// more than the host's available memory holds when it starts).
pub const MAX_VM_CACHE: i64 = 64;

/// Longest Unix socket path.
const MAX_SOCKET_PATH: usize = 107;

pub(super) fn check(
    cx: &Ctx<'_>,
    factory: &RawFactory,
    shared_fs: SharedFs,
    file_mem_backend: Option<&PathBuf>,
) -> Result<FactoryConfig, ConfigError> {
    let f = FactoryConfig {
        enable_template: factory.enable_template.unwrap_or(false),
        template_path: cx
            .opt_path("factory.template_path", &factory.template_path)?
            .unwrap_or_else(|| PathBuf::from(DEFAULT_TEMPLATE_PATH)),
        vm_cache_number: cache_number(cx, factory.vm_cache_number)?,
        vm_cache_endpoint: cx
            .opt_path("factory.vm_cache_endpoint", &factory.vm_cache_endpoint)?
            .unwrap_or_else(|| PathBuf::from(DEFAULT_VM_CACHE_ENDPOINT)),
    };
    if f.vm_cache_endpoint.as_os_str().len() > MAX_SOCKET_PATH {
        return Err(cx.err(
            "factory.vm_cache_endpoint",
            format!(
                "{} is longer than a Unix socket path may be ({MAX_SOCKET_PATH} bytes)",
                f.vm_cache_endpoint.display()
            ),
        ));
    }
    // Kata's check: a template VM is built with shared file memory and its
    // clones with private memory; virtio-fs (its daemon maps guest memory)
    // and a file backend need share=on throughout, so neither works with
    // templating. virtio-9p is served inside QEMU and does.
    if f.enable_template && (shared_fs.has_daemon() || file_mem_backend.is_some()) {
        return Err(cx.err(
            "factory.enable_template",
            "VM templating has been enabled with either virtio-fs or file backed memory and this configuration will not work (use shared_fs = \"virtio-9p\" or \"none\")",
        ));
    }
    Ok(f)
}

fn cache_number(cx: &Ctx<'_>, n: Option<i64>) -> Result<u32, ConfigError> {
    match n.unwrap_or(0) {
        n @ 0..=MAX_VM_CACHE => Ok(u32::try_from(n).unwrap_or(0)),
        n => Err(cx.err(
            "factory.vm_cache_number",
            format!("{n} is not between 0 and {MAX_VM_CACHE}"),
        )),
    }
}
