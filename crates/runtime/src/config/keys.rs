//! Which keys sandvm reads, and warnings for the ones it does not.
//!
//! Kata config files carry keys for other components (`[agent.*]`,
//! `[runtime]`, other hypervisors) and QEMU keys that sandvm does not
//! implement. Each is reported once as a [`Warning`] that names it.

use std::fmt;

/// Keys of `[hypervisor.qemu]` that sandvm reads.
pub const QEMU_KEYS: &[&str] = &[
    "path",
    "kernel",
    "initrd",
    "image",
    "firmware",
    "firmware_volume",
    "machine_type",
    "machine_accelerators",
    "cpu_features",
    "kernel_params",
    "rootfs_type",
    "default_vcpus",
    "default_maxvcpus",
    "default_memory",
    "default_maxmemory",
    "memory_slots",
    "memory_offset",
    "default_bridges",
    "pcie_root_port",
    "enable_virtio_mem",
    "enable_mem_prealloc",
    "enable_hugepages",
    "file_mem_backend",
    "reclaim_guest_freed_memory",
    "shared_fs",
    "virtio_fs_daemon",
    "virtio_fs_cache",
    "virtio_fs_cache_size",
    "virtio_fs_queue_size",
    "virtio_fs_extra_args",
    "block_device_driver",
    "block_device_aio",
    "block_device_cache_set",
    "block_device_cache_direct",
    "block_device_cache_noflush",
    "disable_block_device_use",
    "enable_iothreads",
    "disable_image_nvdimm",
    "enable_iommu",
    "enable_iommu_platform",
    "pflashes",
    "hot_plug_vfio",
    "cold_plug_vfio",
    "disable_vhost_net",
    "entropy_source",
    "seccompsandbox",
    "disable_selinux",
    "rootless",
    "enable_debug",
    "disable_nesting_checks",
    "guest_memory_dump_path",
    "guest_memory_dump_paging",
    "use_legacy_serial",
    "valid_hypervisor_paths",
    "valid_virtio_fs_daemon_paths",
    "valid_file_mem_backends",
    "valid_entropy_sources",
    "accelerator",
    "guest_arch",
    "enable_vhost_user_store",
    "qemu_uid",
    "qemu_gid",
    "qemu_groups",
    "selinux_label",
    "graceful_shutdown_timeout",
    "qemu_extra_args",
    "fw_cfg",
    "port_map",
    "enable_tpm",
    "swtpm_path",
    "agent_channel",
    "agent_port",
    "vsock_daemon",
    "valid_vsock_daemon_paths",
    "enable_annotations",
];

/// Keys of `[factory]` that sandvm reads.
pub const FACTORY_KEYS: &[&str] = &["enable_template", "template_path"];

/// Something in the file that sandvm does not use. Never an error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Warning {
    /// A whole table for another component, e.g. `[agent.kata]`.
    IgnoredTable(String),
    /// A key sandvm does not implement, with its full dotted name.
    IgnoredKey(String),
}

impl fmt::Display for Warning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Warning::IgnoredTable(t) => write!(f, "Table [{t}] is not used by sandvm; ignored"),
            Warning::IgnoredKey(k) => write!(f, "Key {k} is not implemented by sandvm; ignored"),
        }
    }
}

/// Walk a parsed file and list everything sandvm will not read.
/// Known keys are removed from nothing: the caller deserializes the same table.
pub fn unused(doc: &toml::Table) -> Vec<Warning> {
    let mut out = Vec::new();
    for (top, value) in doc {
        match (top.as_str(), value) {
            ("hypervisor", toml::Value::Table(hv)) => {
                for (name, v) in hv {
                    match (name.as_str(), v) {
                        ("qemu", toml::Value::Table(q)) => {
                            unknown_keys(&mut out, "hypervisor.qemu", q, QEMU_KEYS)
                        }
                        _ => out.push(Warning::IgnoredTable(format!("hypervisor.{name}"))),
                    }
                }
            }
            ("factory", toml::Value::Table(f)) => {
                unknown_keys(&mut out, "factory", f, FACTORY_KEYS)
            }
            (_, toml::Value::Table(t)) => {
                // Report sub-tables such as [agent.kata] by their full name.
                let subs: Vec<_> = t.iter().filter(|(_, v)| v.is_table()).collect();
                if subs.is_empty() || subs.len() < t.len() {
                    out.push(Warning::IgnoredTable(top.clone()));
                }
                for (name, _) in subs {
                    out.push(Warning::IgnoredTable(format!("{top}.{name}")));
                }
            }
            _ => out.push(Warning::IgnoredKey(top.clone())),
        }
    }
    out
}

fn unknown_keys(out: &mut Vec<Warning>, prefix: &str, table: &toml::Table, known: &[&str]) {
    for key in table.keys() {
        if !known.contains(&key.as_str()) {
            out.push(Warning::IgnoredKey(format!("{prefix}.{key}")));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_other_components_and_unknown_keys_once_each() {
        let doc: toml::Table = toml::from_str(
            r#"
            [hypervisor.qemu]
            path = "/usr/bin/qemu"
            confidential_guest = false
            [hypervisor.clh]
            path = "x"
            [agent.kata]
            debug = true
            [runtime]
            internetworking_model = "tcfilter"
            [factory]
            enable_template = false
            vm_cache_number = 0
            "#,
        )
        .unwrap();
        let w = unused(&doc);
        assert!(w.contains(&Warning::IgnoredKey(
            "hypervisor.qemu.confidential_guest".into()
        )));
        assert!(w.contains(&Warning::IgnoredTable("hypervisor.clh".into())));
        assert!(w.contains(&Warning::IgnoredTable("agent.kata".into())));
        assert!(w.contains(&Warning::IgnoredTable("runtime".into())));
        assert!(w.contains(&Warning::IgnoredKey("factory.vm_cache_number".into())));
        assert!(!w.iter().any(|x| x.to_string().contains("qemu.path")));
        assert_eq!(w.len(), 5, "{w:?}");
    }
}
