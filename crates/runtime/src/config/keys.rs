//! Which keys sandvm reads, which it accepts only when they would do
//! nothing, and warnings for the tables of other components.
//!
//! Every key of `[hypervisor.qemu]` and `[factory]` either works or is refused:
//!
//! - a key of [`QEMU_KEYS`] or [`FACTORY_KEYS`] is read and validated;
//! - a key of [`INERT_QEMU_KEYS`] or [`INERT_FACTORY_KEYS`] is a Kata key that
//!   sandvm does not implement. It is accepted only at its inert value (the one
//!   that turns the feature off); any other value is a [`ConfigError::Refused`]
//!   that names it;
//! - any other key is a [`ConfigError::UnknownKey`] (a typo, or a key of
//!   another Kata version).
//!
//! Tables of other components (`[agent.*]`, `[runtime]`, `[image]`, other
//! hypervisors) are not sandvm's to check: each is reported once as a [`Warning`].

use super::ConfigError;
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
    "virtio_fs_queue_size",
    "virtio_fs_inode_file_handles",
    "virtio_fs_extra_args",
    "msize_9p",
    "block_device_driver",
    "block_device_aio",
    "block_device_cache_set",
    "block_device_cache_direct",
    "block_device_cache_noflush",
    "block_device_logical_sector_size",
    "block_device_physical_sector_size",
    "disable_block_device_use",
    "enable_iothreads",
    "indep_iothreads",
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
    "extra_monitor_socket",
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
    "allow_reboot",
    "enable_numa",
    "numa_mapping",
    "agent_channel",
    "agent_port",
    "vsock_daemon",
    "valid_vsock_daemon_paths",
    "enable_annotations",
];

/// Keys of `[factory]` that sandvm reads.
pub const FACTORY_KEYS: &[&str] = &[
    "enable_template",
    "template_path",
    "vm_cache_number",
    "vm_cache_endpoint",
];

/// The value at which a key that sandvm does not implement does nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Inert {
    /// `false`.
    False,
    /// `true` (the key turns off something sandvm never turns on).
    True,
    /// `0`.
    Zero,
    /// `""`.
    EmptyStr,
    /// `[]`.
    EmptyList,
    /// `""` or one of these strings (defaults that mean "off").
    Str(&'static [&'static str]),
    /// Any value: the key only configures the feature of another key
    /// (named here), which sandvm refuses when it is on.
    Through(&'static str),
}

impl Inert {
    /// Whether `v` is this inert value.
    pub fn accepts(self, v: &toml::Value) -> bool {
        use toml::Value as V;
        match (self, v) {
            (Inert::False, V::Boolean(b)) => !b,
            (Inert::True, V::Boolean(b)) => *b,
            (Inert::Zero, V::Integer(n)) => *n == 0,
            (Inert::EmptyStr, V::String(s)) => s.is_empty(),
            (Inert::EmptyList, V::Array(a)) => a.is_empty(),
            (Inert::Str(ok), V::String(s)) => s.is_empty() || ok.contains(&s.as_str()),
            (Inert::Through(_), _) => true,
            _ => false,
        }
    }
}

impl fmt::Display for Inert {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Inert::False => write!(f, "false"),
            Inert::True => write!(f, "true"),
            Inert::Zero => write!(f, "0"),
            Inert::EmptyStr => write!(f, "\"\""),
            Inert::EmptyList => write!(f, "[]"),
            Inert::Str(ok) => {
                write!(f, "\"\"")?;
                ok.iter().try_for_each(|s| write!(f, " or {s:?}"))
            }
            Inert::Through(key) => write!(f, "any value while {key} is off"),
        }
    }
}

/// Why a key is refused when it is not at its inert value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// sandvm does not implement the feature (QEMU cannot express it here,
    /// or it belongs to a mode sandvm does not have).
    NotImplemented,
    /// The key changes the guest's security (confidential computing, isolation):
    /// booting without it would silently give a weaker VM.
    Security,
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refusal::NotImplemented => write!(f, "is not implemented by sandvm"),
            Refusal::Security => write!(
                f,
                "changes the guest's security and is not implemented by sandvm; refused rather than booting a weaker VM"
            ),
        }
    }
}

/// A Kata key that sandvm accepts only at its inert value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InertKey {
    /// The key's name in its table.
    pub name: &'static str,
    /// The value that does nothing.
    pub inert: Inert,
    /// Why any other value is refused.
    pub refusal: Refusal,
}

const fn off(name: &'static str, inert: Inert) -> InertKey {
    InertKey {
        name,
        inert,
        refusal: Refusal::NotImplemented,
    }
}

const fn secure(name: &'static str, inert: Inert) -> InertKey {
    InertKey {
        name,
        inert,
        refusal: Refusal::Security,
    }
}

/// Keys of Kata's `[hypervisor.qemu]` (and its other hypervisors' keys, which
/// Kata's Go runtime also accepts there) that sandvm does not implement.
pub const INERT_QEMU_KEYS: &[InertKey] = &[
    secure("confidential_guest", Inert::False),
    secure("sev_snp_guest", Inert::False),
    secure("snp_id_block", Inert::EmptyStr),
    secure("snp_id_auth", Inert::EmptyStr),
    secure("snp_guest_policy", Inert::Through("sev_snp_guest")),
    secure(
        "tdx_quote_generation_service_socket_port",
        Inert::Through("confidential_guest"),
    ),
    secure("measurement_algo", Inert::Through("confidential_guest")),
    secure("kernel_verity_params", Inert::EmptyStr),
    secure("disable_guest_selinux", Inert::True),
    secure("jailer_path", Inert::EmptyStr),
    secure("valid_jailer_paths", Inert::EmptyList),
    off("disable_seccomp", Inert::False),
    off("virtio_fs_cache_size", Inert::Zero),
    off("enable_guest_swap", Inert::False),
    off("guest_hook_path", Inert::EmptyStr),
    off("guest_extension_images", Inert::EmptyList),
    off("pcie_switch_port", Inert::Zero),
    off("rx_rate_limiter_max_rate", Inert::Zero),
    off("tx_rate_limiter_max_rate", Inert::Zero),
    off("disk_rate_limiter_bw_max_rate", Inert::Zero),
    off("disk_rate_limiter_bw_one_time_burst", Inert::Zero),
    off("disk_rate_limiter_ops_max_rate", Inert::Zero),
    off("disk_rate_limiter_ops_one_time_burst", Inert::Zero),
    off("net_rate_limiter_bw_max_rate", Inert::Zero),
    off("net_rate_limiter_bw_one_time_burst", Inert::Zero),
    off("net_rate_limiter_ops_max_rate", Inert::Zero),
    off("net_rate_limiter_ops_one_time_burst", Inert::Zero),
    off(
        "vhost_user_store_path",
        Inert::Through("enable_vhost_user_store"),
    ),
    off(
        "valid_vhost_user_store_paths",
        Inert::Through("enable_vhost_user_store"),
    ),
    off("vhost_user_reconnect_timeout_sec", Inert::Zero),
    off("hypervisor_loglevel", Inert::Zero),
    off("remote_hypervisor_socket", Inert::EmptyStr),
    off("remote_hypervisor_timeout", Inert::Zero),
];

/// Keys of Kata's `[factory]` that sandvm does not implement (none now:
/// the VM cache is `sandvm-vmcache`).
pub const INERT_FACTORY_KEYS: &[InertKey] = &[];

/// A table of another component, which sandvm does not read. Never an error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Warning {
    /// A whole table for another component, e.g. `[agent.kata]`.
    IgnoredTable(String),
    /// A key of `[hypervisor.qemu]` set to a value other than its default
    /// that the chosen `shared_fs` does not use.
    UnusedKey {
        /// The dotted key.
        key: String,
        /// The `shared_fs` in effect.
        shared_fs: &'static str,
    },
}

impl fmt::Display for Warning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Warning::IgnoredTable(t) => write!(f, "Table [{t}] is not used by sandvm; ignored"),
            Warning::UnusedKey { key, shared_fs } => write!(
                f,
                "Key {key} is set but does nothing with shared_fs = {shared_fs:?}; ignored"
            ),
        }
    }
}

/// The virtio-fs keys and the value of each that means "the default"
/// (besides `""`, `0` and `[]`): set to anything else while `shared_fs` has
/// no daemon, they are reported as unused.
const VIRTIO_FS_KEYS: &[(&str, &str)] = &[
    (
        "virtio_fs_daemon",
        super::validate::DEFAULT_VIRTIO_FS_DAEMON,
    ),
    ("virtio_fs_cache", super::validate::DEFAULT_VIRTIO_FS_CACHE),
    ("virtio_fs_queue_size", "1024"),
    ("virtio_fs_inode_file_handles", ""),
    ("virtio_fs_extra_args", ""),
    ("valid_virtio_fs_daemon_paths", ""),
];

/// Whether a TOML value is unset-like (`""`, `0`, `[]`) or `default`.
fn is_default(v: &toml::Value, default: &str) -> bool {
    use toml::Value as V;
    match v {
        V::String(s) => s.is_empty() || s == default,
        V::Integer(n) => *n == 0 || n.to_string() == default,
        V::Array(a) => a.is_empty(),
        _ => false,
    }
}

/// Keys of `[hypervisor.qemu]` set to a non-default value that
/// `shared_fs` does not use: the virtio-fs keys without a virtio-fs daemon
/// (`none`, `virtio-9p`), `msize_9p` without virtio-9p. Accepted (Kata's
/// files set them whatever `shared_fs` is), but never silently.
pub fn unused_for(doc: &toml::Table, shared_fs: super::SharedFs) -> Vec<Warning> {
    let Some(q) = doc
        .get("hypervisor")
        .and_then(|h| h.get("qemu"))
        .and_then(|q| q.as_table())
    else {
        return Vec::new();
    };
    let msize = super::validate::DEFAULT_MSIZE_9P.to_string();
    let mut keys: Vec<(&str, &str)> = Vec::new();
    if !shared_fs.has_daemon() {
        keys.extend(VIRTIO_FS_KEYS);
    }
    if shared_fs != super::SharedFs::Virtio9p {
        keys.push(("msize_9p", &msize));
    }
    keys.into_iter()
        .filter(|(key, default)| q.get(*key).is_some_and(|v| !is_default(v, default)))
        .map(|(key, _)| Warning::UnusedKey {
            key: format!("hypervisor.qemu.{key}"),
            shared_fs: shared_fs.name(),
        })
        .collect()
}

/// List the tables of other components in a parsed file, each once.
pub fn unused(doc: &toml::Table) -> Vec<Warning> {
    let mut out = Vec::new();
    for (top, value) in doc {
        match (top.as_str(), value) {
            ("hypervisor", toml::Value::Table(hv)) => {
                let others = hv.iter().filter(|(n, v)| *n != "qemu" && v.is_table());
                out.extend(others.map(|(n, _)| Warning::IgnoredTable(format!("hypervisor.{n}"))));
            }
            ("factory", _) => {}
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
            _ => {}
        }
    }
    out
}

/// Refuse every key of `[hypervisor.qemu]` and `[factory]` that sandvm does not
/// read unless it is at its inert value, every unknown key there, and keys
/// outside any table (`file` names the file in the error).
pub fn refuse_unimplemented(file: &str, doc: &toml::Table) -> Result<(), ConfigError> {
    for (top, value) in doc {
        match (top.as_str(), value) {
            ("hypervisor", toml::Value::Table(hv)) => {
                for (name, v) in hv {
                    match (name.as_str(), v) {
                        ("qemu", toml::Value::Table(q)) => {
                            check_table(file, "hypervisor.qemu", q, QEMU_KEYS, INERT_QEMU_KEYS)?
                        }
                        (_, toml::Value::Table(_)) => {}
                        _ => return Err(unknown(file, &format!("hypervisor.{name}"))),
                    }
                }
            }
            ("factory", toml::Value::Table(f)) => {
                check_table(file, "factory", f, FACTORY_KEYS, INERT_FACTORY_KEYS)?
            }
            (_, toml::Value::Table(_)) => {}
            _ => return Err(unknown(file, top)),
        }
    }
    Ok(())
}

fn unknown(file: &str, key: &str) -> ConfigError {
    ConfigError::UnknownKey {
        file: file.to_string(),
        key: key.to_string(),
    }
}

fn check_table(
    file: &str,
    prefix: &str,
    table: &toml::Table,
    known: &[&str],
    inert: &[InertKey],
) -> Result<(), ConfigError> {
    for (key, value) in table {
        if known.contains(&key.as_str()) {
            continue;
        }
        let Some(k) = inert.iter().find(|k| k.name == key) else {
            return Err(unknown(file, &format!("{prefix}.{key}")));
        };
        if !k.inert.accepts(value) {
            return Err(ConfigError::Refused {
                file: file.to_string(),
                key: format!("{prefix}.{key}"),
                value: value.to_string(),
                inert: k.inert.to_string(),
                refusal: k.refusal,
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc(text: &str) -> toml::Table {
        toml::from_str(text).unwrap()
    }

    fn refused(text: &str) -> ConfigError {
        refuse_unimplemented("/etc/sandvm/c.toml", &doc(text)).unwrap_err()
    }

    /// Every key accepted only at its inert value, with that value. A key
    /// added to either list must be added here too, on purpose.
    #[test]
    fn the_accept_only_when_inert_keys_are_exactly_these() {
        let qemu: Vec<String> = INERT_QEMU_KEYS
            .iter()
            .map(|k| format!("{} = {}", k.name, k.inert))
            .collect();
        assert_eq!(
            qemu,
            [
                "confidential_guest = false",
                "sev_snp_guest = false",
                "snp_id_block = \"\"",
                "snp_id_auth = \"\"",
                "snp_guest_policy = any value while sev_snp_guest is off",
                "tdx_quote_generation_service_socket_port = any value while confidential_guest is off",
                "measurement_algo = any value while confidential_guest is off",
                "kernel_verity_params = \"\"",
                "disable_guest_selinux = true",
                "jailer_path = \"\"",
                "valid_jailer_paths = []",
                "disable_seccomp = false",
                "virtio_fs_cache_size = 0",
                "enable_guest_swap = false",
                "guest_hook_path = \"\"",
                "guest_extension_images = []",
                "pcie_switch_port = 0",
                "rx_rate_limiter_max_rate = 0",
                "tx_rate_limiter_max_rate = 0",
                "disk_rate_limiter_bw_max_rate = 0",
                "disk_rate_limiter_bw_one_time_burst = 0",
                "disk_rate_limiter_ops_max_rate = 0",
                "disk_rate_limiter_ops_one_time_burst = 0",
                "net_rate_limiter_bw_max_rate = 0",
                "net_rate_limiter_bw_one_time_burst = 0",
                "net_rate_limiter_ops_max_rate = 0",
                "net_rate_limiter_ops_one_time_burst = 0",
                "vhost_user_store_path = any value while enable_vhost_user_store is off",
                "valid_vhost_user_store_paths = any value while enable_vhost_user_store is off",
                "vhost_user_reconnect_timeout_sec = 0",
                "hypervisor_loglevel = 0",
                "remote_hypervisor_socket = \"\"",
                "remote_hypervisor_timeout = 0",
            ]
        );
        let factory: Vec<String> = INERT_FACTORY_KEYS
            .iter()
            .map(|k| format!("{} = {}", k.name, k.inert))
            .collect();
        assert!(factory.is_empty(), "{factory:?}");
        let security: Vec<&str> = INERT_QEMU_KEYS
            .iter()
            .filter(|k| k.refusal == Refusal::Security)
            .map(|k| k.name)
            .collect();
        assert_eq!(
            security,
            [
                "confidential_guest",
                "sev_snp_guest",
                "snp_id_block",
                "snp_id_auth",
                "snp_guest_policy",
                "tdx_quote_generation_service_socket_port",
                "measurement_algo",
                "kernel_verity_params",
                "disable_guest_selinux",
                "jailer_path",
                "valid_jailer_paths",
            ]
        );
    }

    /// The keys of Kata's Go `hypervisor` and `factory` TOML structs
    /// (`pkg/katautils/config.go`, 3.x): each is read or accept-only-when-inert.
    #[test]
    fn every_kata_key_is_read_or_inert_and_no_key_is_both() {
        const KATA_HYPERVISOR: &[&str] = &[
            "path",
            "jailer_path",
            "kernel",
            "initrd",
            "image",
            "rootfs_type",
            "firmware",
            "firmware_volume",
            "machine_accelerators",
            "cpu_features",
            "kernel_params",
            "kernel_verity_params",
            "machine_type",
            "tdx_quote_generation_service_socket_port",
            "block_device_driver",
            "entropy_source",
            "shared_fs",
            "virtio_fs_daemon",
            "virtio_fs_cache",
            "vhost_user_store_path",
            "file_mem_backend",
            "guest_hook_path",
            "guest_memory_dump_path",
            "seccompsandbox",
            "block_device_aio",
            "remote_hypervisor_socket",
            "snp_id_block",
            "snp_id_auth",
            "snp_guest_policy",
            "measurement_algo",
            "valid_hypervisor_paths",
            "valid_jailer_paths",
            "valid_virtio_fs_daemon_paths",
            "virtio_fs_extra_args",
            "pflashes",
            "valid_vhost_user_store_paths",
            "valid_file_mem_backends",
            "valid_entropy_sources",
            "enable_annotations",
            "rx_rate_limiter_max_rate",
            "tx_rate_limiter_max_rate",
            "memory_offset",
            "default_maxmemory",
            "disk_rate_limiter_bw_max_rate",
            "disk_rate_limiter_bw_one_time_burst",
            "disk_rate_limiter_ops_max_rate",
            "disk_rate_limiter_ops_one_time_burst",
            "net_rate_limiter_bw_max_rate",
            "net_rate_limiter_bw_one_time_burst",
            "net_rate_limiter_ops_max_rate",
            "net_rate_limiter_ops_one_time_burst",
            "hypervisor_loglevel",
            "virtio_fs_cache_size",
            "virtio_fs_queue_size",
            "default_maxvcpus",
            "default_memory",
            "memory_slots",
            "default_bridges",
            "msize_9p",
            "remote_hypervisor_timeout",
            "default_vcpus",
            "block_device_cache_set",
            "block_device_cache_direct",
            "block_device_cache_noflush",
            "block_device_logical_sector_size",
            "block_device_physical_sector_size",
            "enable_vhost_user_store",
            "vhost_user_reconnect_timeout_sec",
            "disable_block_device_use",
            "enable_mem_prealloc",
            "reclaim_guest_freed_memory",
            "enable_hugepages",
            "enable_virtio_mem",
            "enable_iommu",
            "enable_iommu_platform",
            "enable_numa",
            "numa_mapping",
            "enable_debug",
            "disable_nesting_checks",
            "enable_iothreads",
            "indep_iothreads",
            "disable_image_nvdimm",
            "hot_plug_vfio",
            "cold_plug_vfio",
            "pcie_root_port",
            "pcie_switch_port",
            "disable_vhost_net",
            "guest_memory_dump_paging",
            "confidential_guest",
            "sev_snp_guest",
            "enable_guest_swap",
            "rootless",
            "disable_seccomp",
            "disable_selinux",
            "disable_guest_selinux",
            "use_legacy_serial",
            "extra_monitor_socket",
            "guest_extension_images",
        ];
        let inert = |list: &[InertKey], k: &str| list.iter().any(|i| i.name == k);
        for k in KATA_HYPERVISOR {
            assert!(
                QEMU_KEYS.contains(k) || inert(INERT_QEMU_KEYS, k),
                "Kata key {k} is neither read nor accept-only-when-inert"
            );
        }
        for k in [
            "template_path",
            "vm_cache_endpoint",
            "vm_cache_number",
            "enable_template",
        ] {
            assert!(
                FACTORY_KEYS.contains(&k) || inert(INERT_FACTORY_KEYS, k),
                "{k}"
            );
        }
        for k in INERT_QEMU_KEYS {
            assert!(!QEMU_KEYS.contains(&k.name), "{} is read and inert", k.name);
        }
        for k in INERT_FACTORY_KEYS {
            assert!(
                !FACTORY_KEYS.contains(&k.name),
                "{} is read and inert",
                k.name
            );
        }
    }

    #[test]
    fn inert_values_pass_and_others_are_refused_by_key() {
        let ok = doc(r#"
            [hypervisor.qemu]
            confidential_guest = false
            disable_guest_selinux = true
            virtio_fs_cache_size = 0
            guest_hook_path = ""
            vhost_user_store_path = "/var/run/kata-containers/vhost-user"
            [factory]
            vm_cache_number = 0
            vm_cache_endpoint = "/var/run/kata-containers/cache.sock"
            "#);
        refuse_unimplemented("f", &ok).unwrap();
        let cases = [
            (
                "[hypervisor.qemu]\nconfidential_guest = true",
                "hypervisor.qemu.confidential_guest",
                Refusal::Security,
            ),
            (
                "[hypervisor.qemu]\nsev_snp_guest = true",
                "hypervisor.qemu.sev_snp_guest",
                Refusal::Security,
            ),
            (
                "[hypervisor.qemu]\ndisable_guest_selinux = false",
                "hypervisor.qemu.disable_guest_selinux",
                Refusal::Security,
            ),
            (
                "[hypervisor.qemu]\nvirtio_fs_cache_size = 1024",
                "hypervisor.qemu.virtio_fs_cache_size",
                Refusal::NotImplemented,
            ),
            (
                "[hypervisor.qemu]\nenable_guest_swap = true",
                "hypervisor.qemu.enable_guest_swap",
                Refusal::NotImplemented,
            ),
        ];
        for (text, want, why) in cases {
            match refused(text) {
                ConfigError::Refused { key, refusal, .. } => {
                    assert_eq!((key.as_str(), refusal), (want, why), "{text}")
                }
                other => panic!("{text}: {other:?}"),
            }
        }
        let e = refused("[hypervisor.qemu]\nconfidential_guest = true").to_string();
        assert!(e.contains("/etc/sandvm/c.toml"), "{e}");
        assert!(
            e.contains("hypervisor.qemu.confidential_guest = true"),
            "{e}"
        );
        assert!(e.contains("only as false"), "{e}");
    }

    #[test]
    fn unknown_keys_are_refused_and_other_components_warned_once() {
        for (text, key) in [
            (
                "[hypervisor.qemu]\ndefualt_memory = 1",
                "hypervisor.qemu.defualt_memory",
            ),
            ("[factory]\nvm_cache = 1", "factory.vm_cache"),
            ("stray = 1\n[hypervisor.qemu]", "stray"),
            ("[hypervisor]\nqemu_path = \"x\"", "hypervisor.qemu_path"),
        ] {
            assert_eq!(
                refused(text),
                ConfigError::UnknownKey {
                    file: "/etc/sandvm/c.toml".into(),
                    key: key.into()
                },
                "{text}"
            );
        }
        let d = doc(r#"
            [hypervisor.qemu]
            path = "/usr/bin/qemu"
            [hypervisor.clh]
            path = "x"
            [agent.kata]
            debug = true
            [runtime]
            internetworking_model = "tcfilter"
            [factory]
            enable_template = false
            vm_cache_number = 0
            "#);
        refuse_unimplemented("f", &d).unwrap();
        let w = unused(&d);
        assert_eq!(
            w,
            [
                Warning::IgnoredTable("agent.kata".into()),
                Warning::IgnoredTable("hypervisor.clh".into()),
                Warning::IgnoredTable("runtime".into()),
            ]
        );
    }
}
