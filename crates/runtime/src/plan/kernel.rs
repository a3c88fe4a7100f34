//! The kernel command line: the arch's parameters, the console, root
//! parameters when there is an image, the generic ones, then the user's
//! (last, so the user's win).

use super::Layout;
use super::arch::{ArchLayout, ArchPolicy};
use crate::config::HypervisorConfig;

/// Whether the image goes on nvdimm on this arch and config (never a disk
/// the firmware boots).
pub fn image_on_nvdimm(cfg: &HypervisorConfig, arch: &ArchLayout) -> bool {
    cfg.image.is_some() && !cfg.disk_boot() && !cfg.disable_image_nvdimm && arch.has_nvdimm()
}

/// The kernel command line: arch, console, root, generic, then the user's (last wins).
pub fn params(cfg: &HypervisorConfig, layout: &Layout, policy: &ArchPolicy) -> String {
    let mut p: Vec<String> = policy.kernel_params.clone();
    let console = if cfg.use_legacy_serial {
        "ttyS0"
    } else {
        layout.arch.console.as_str()
    };
    p.push(format!("console={console}"));
    p.push(if cfg.debug {
        "debug".into()
    } else {
        "quiet".into()
    });
    if cfg.image.is_some() {
        let root = if layout.image_on_nvdimm {
            layout.arch.nvdimm_root_params.clone().unwrap_or_default()
        } else {
            layout.arch.blk_root_params.clone()
        };
        p.extend(root);
        p.push(format!("rootfstype={}", cfg.rootfs_type.as_str()));
    }
    p.push("panic=1".into());
    p.push(format!("nr_cpus={}", cfg.max_vcpus));
    p.extend(cfg.kernel_params.iter().cloned());
    p.join(" ")
}
