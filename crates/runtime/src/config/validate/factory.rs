//! `[factory]`: `enable_template`, `template_path`.

use super::Ctx;
use crate::config::ConfigError;
use crate::config::raw::RawFactory;
use crate::config::types::*;
use std::path::PathBuf;

/// Template folder when unset (Kata's).
pub const DEFAULT_TEMPLATE_PATH: &str = "/run/vc/vm/template";

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
    };
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
