//! Kata's hypervisor annotations: `io.katacontainers.config.hypervisor.<key>`
//! overrides a key of `[hypervisor.qemu]` for one sandbox.
//!
//! An annotation applies only when its key name matches one of the regexes
//! in `enable_annotations` (anchored: `default_mem` does not allow
//! `default_memory`; Kata matches anywhere in the name). A path-valued
//! annotation must also match its `valid_*_paths` list, and that list must
//! not be empty: an annotation never reaches a path the file's owner did
//! not allow (Kata's rule against host code execution through annotations).
//! Keys whose value is a path without such a list (`kernel`, `image`,
//! `initrd`, `firmware`, ...) and the security keys are not annotatable.
//!
//! The overrides go into the parsed file and the whole config is checked
//! again, so an annotation meets exactly the checks the file does; an error
//! names the annotation. Other `io.katacontainers.*` annotations belong to
//! other components (the shim, the agent) and are left to them.

use super::types::HypervisorConfig;
use super::{ConfigError, from_doc};
use std::collections::BTreeMap;

/// The prefix of hypervisor annotations.
pub const PREFIX: &str = "io.katacontainers.config.hypervisor.";

/// How an annotation's string value becomes a TOML value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ty {
    /// A string.
    Str,
    /// An integer.
    Int,
    /// `true` or `false`.
    Bool,
    /// A JSON array of strings (`["--thread-pool-size=1"]`).
    StrList,
    /// A path that must match the named `valid_*` list.
    Path(&'static str),
    /// Appended to the file's value with a space (kernel parameters).
    Append,
}

/// Annotation name (after the prefix), the key it sets, and its type.
const ANNOTATABLE: &[(&str, &str, Ty)] = &[
    ("path", "path", Ty::Path("valid_hypervisor_paths")),
    (
        "virtio_fs_daemon",
        "virtio_fs_daemon",
        Ty::Path("valid_virtio_fs_daemon_paths"),
    ),
    (
        "file_mem_backend",
        "file_mem_backend",
        Ty::Path("valid_file_mem_backends"),
    ),
    (
        "entropy_source",
        "entropy_source",
        Ty::Path("valid_entropy_sources"),
    ),
    (
        "vsock_daemon",
        "vsock_daemon",
        Ty::Path("valid_vsock_daemon_paths"),
    ),
    ("kernel_params", "kernel_params", Ty::Append),
    ("machine_type", "machine_type", Ty::Str),
    ("machine_accelerators", "machine_accelerators", Ty::Str),
    ("cpu_features", "cpu_features", Ty::Str),
    ("default_vcpus", "default_vcpus", Ty::Int),
    ("default_max_vcpus", "default_maxvcpus", Ty::Int),
    ("default_maxvcpus", "default_maxvcpus", Ty::Int),
    ("default_memory", "default_memory", Ty::Int),
    ("default_maxmemory", "default_maxmemory", Ty::Int),
    ("memory_slots", "memory_slots", Ty::Int),
    ("memory_offset", "memory_offset", Ty::Int),
    ("default_bridges", "default_bridges", Ty::Int),
    ("pcie_root_port", "pcie_root_port", Ty::Int),
    ("enable_virtio_mem", "enable_virtio_mem", Ty::Bool),
    ("enable_mem_prealloc", "enable_mem_prealloc", Ty::Bool),
    ("enable_hugepages", "enable_hugepages", Ty::Bool),
    ("enable_iommu", "enable_iommu", Ty::Bool),
    ("enable_iommu_platform", "enable_iommu_platform", Ty::Bool),
    (
        "reclaim_guest_freed_memory",
        "reclaim_guest_freed_memory",
        Ty::Bool,
    ),
    ("shared_fs", "shared_fs", Ty::Str),
    ("virtio_fs_cache", "virtio_fs_cache", Ty::Str),
    ("virtio_fs_cache_size", "virtio_fs_cache_size", Ty::Int),
    ("virtio_fs_queue_size", "virtio_fs_queue_size", Ty::Int),
    ("virtio_fs_extra_args", "virtio_fs_extra_args", Ty::StrList),
    ("msize_9p", "msize_9p", Ty::Int),
    ("block_device_driver", "block_device_driver", Ty::Str),
    ("block_device_aio", "block_device_aio", Ty::Str),
    ("block_device_cache_set", "block_device_cache_set", Ty::Bool),
    (
        "block_device_cache_direct",
        "block_device_cache_direct",
        Ty::Bool,
    ),
    (
        "block_device_cache_noflush",
        "block_device_cache_noflush",
        Ty::Bool,
    ),
    (
        "disable_block_device_use",
        "disable_block_device_use",
        Ty::Bool,
    ),
    ("enable_iothreads", "enable_iothreads", Ty::Bool),
    ("disable_vhost_net", "disable_vhost_net", Ty::Bool),
    ("disable_image_nvdimm", "disable_image_nvdimm", Ty::Bool),
    ("use_legacy_serial", "use_legacy_serial", Ty::Bool),
    ("hotplug_vfio", "hot_plug_vfio", Ty::Str),
    ("hot_plug_vfio", "hot_plug_vfio", Ty::Str),
    ("cold_plug_vfio", "cold_plug_vfio", Ty::Str),
    ("enable_debug", "enable_debug", Ty::Bool),
    ("seccompsandbox", "seccompsandbox", Ty::Str),
    ("agent_channel", "agent_channel", Ty::Str),
];

/// One accepted override.
struct Override {
    annotation: String,
    key: &'static str,
    list: Option<&'static str>,
}

fn refuse(annotation: &str, reason: impl Into<String>) -> ConfigError {
    ConfigError::Annotation {
        annotation: annotation.to_string(),
        reason: reason.into(),
    }
}

/// `cfg` with the hypervisor annotations among `annotations` applied (the
/// others are ignored). Without any, `cfg` itself.
pub fn apply(
    cfg: &HypervisorConfig,
    annotations: &BTreeMap<String, String>,
) -> Result<HypervisorConfig, ConfigError> {
    let ours: Vec<(&String, &String)> = annotations
        .iter()
        .filter(|(k, _)| k.starts_with(PREFIX))
        .collect();
    if ours.is_empty() {
        return Ok(cfg.clone());
    }
    let Some(origin) = cfg.origin.0.as_ref() else {
        return Err(refuse(
            ours[0].0,
            format!(
                "annotations need the config file; load {} again",
                cfg.source.display()
            ),
        ));
    };
    let (mut doc, host) = (origin.0.clone(), origin.1);
    let qemu = qemu_table(&mut doc);
    let allowed = allow_list(qemu, ours[0].0)?;
    let mut overrides = Vec::new();
    for (name, value) in ours {
        overrides.push(apply_one(qemu, &allowed, name, value)?);
    }
    from_doc(&cfg.source, doc, &host).map_err(|e| blame(e, &overrides))
}

fn qemu_table(doc: &mut toml::Table) -> &mut toml::Table {
    let hv = doc
        .entry("hypervisor")
        .or_insert_with(|| toml::Value::Table(toml::Table::new()));
    if !hv.is_table() {
        *hv = toml::Value::Table(toml::Table::new());
    }
    let Some(hv) = hv.as_table_mut() else {
        unreachable!("made a table above")
    };
    let q = hv
        .entry("qemu")
        .or_insert_with(|| toml::Value::Table(toml::Table::new()));
    if !q.is_table() {
        *q = toml::Value::Table(toml::Table::new());
    }
    match q.as_table_mut() {
        Some(t) => t,
        None => unreachable!("made a table above"),
    }
}

/// The compiled `enable_annotations` regexes (anchored).
fn allow_list(qemu: &toml::Table, first: &str) -> Result<Vec<regex::Regex>, ConfigError> {
    let list = match qemu.get("enable_annotations") {
        None => Vec::new(),
        Some(toml::Value::Array(a)) => a.iter().filter_map(|v| v.as_str()).collect(),
        Some(_) => {
            return Err(refuse(
                first,
                "hypervisor.qemu.enable_annotations is not a list of strings",
            ));
        }
    };
    list.iter()
        .map(|re| {
            regex::Regex::new(&format!("^(?:{re})$")).map_err(|e| {
                refuse(
                    first,
                    format!("hypervisor.qemu.enable_annotations has a bad regex {re:?}: {e}"),
                )
            })
        })
        .collect()
}

fn apply_one(
    qemu: &mut toml::Table,
    allowed: &[regex::Regex],
    name: &str,
    value: &str,
) -> Result<Override, ConfigError> {
    let short = &name[PREFIX.len()..];
    if !allowed.iter().any(|re| re.is_match(short)) {
        return Err(refuse(
            name,
            format!("{short} is not allowed by hypervisor.qemu.enable_annotations"),
        ));
    }
    let Some(&(_, key, ty)) = ANNOTATABLE.iter().find(|(a, _, _)| *a == short) else {
        return Err(refuse(
            name,
            format!("sandvm does not take {short} as an annotation"),
        ));
    };
    let v = match ty {
        Ty::Str | Ty::Path(_) => toml::Value::String(value.to_string()),
        Ty::Int => value
            .trim()
            .parse::<i64>()
            .map(toml::Value::Integer)
            .map_err(|_| refuse(name, format!("{value:?} is not an integer")))?,
        Ty::Bool => match value.trim() {
            "true" => toml::Value::Boolean(true),
            "false" => toml::Value::Boolean(false),
            _ => return Err(refuse(name, format!("{value:?} is not true or false"))),
        },
        Ty::StrList => {
            let items: Vec<String> = serde_json::from_str(value)
                .map_err(|_| refuse(name, format!("{value:?} is not a JSON array of strings")))?;
            toml::Value::Array(items.into_iter().map(toml::Value::String).collect())
        }
        Ty::Append => {
            let old = qemu.get(key).and_then(|v| v.as_str()).unwrap_or_default();
            toml::Value::String(format!("{old} {value}").trim().to_string())
        }
    };
    let list = match ty {
        Ty::Path(list) => {
            check_path(qemu, name, list, value)?;
            Some(list)
        }
        _ => None,
    };
    qemu.insert(key.to_string(), v);
    Ok(Override {
        annotation: name.to_string(),
        key,
        list,
    })
}

/// A path annotation must match a glob of its non-empty `valid_*` list.
fn check_path(qemu: &toml::Table, name: &str, list: &str, value: &str) -> Result<(), ConfigError> {
    let globs: Vec<&str> = match qemu.get(list) {
        Some(toml::Value::Array(a)) => a.iter().filter_map(|v| v.as_str()).collect(),
        _ => Vec::new(),
    };
    if globs.is_empty() {
        return Err(refuse(
            name,
            format!("a path annotation needs hypervisor.qemu.{list}, which is empty"),
        ));
    }
    let ok = globs.iter().any(|g| {
        glob::Pattern::new(g)
            .map(|p| p.matches_path(std::path::Path::new(value)))
            .unwrap_or(false)
    });
    if !ok {
        return Err(refuse(
            name,
            format!("{value} is not allowed by hypervisor.qemu.{list} {globs:?}"),
        ));
    }
    Ok(())
}

/// A validation error about an overridden key names the annotation.
fn blame(e: ConfigError, overrides: &[Override]) -> ConfigError {
    let (key, reason) = match &e {
        ConfigError::Invalid { key, reason, .. } => (key, reason.clone()),
        ConfigError::Refused {
            key,
            value,
            inert,
            refusal,
            ..
        } => (key, format!("{value} {refusal}; only {inert} is accepted")),
        _ => return e,
    };
    let hit = overrides.iter().find(|o| {
        let full = format!("hypervisor.qemu.{}", o.key);
        *key == full
            || key.starts_with(&format!("{full}["))
            || o.list
                .is_some_and(|l| *key == format!("hypervisor.qemu.{l}"))
    });
    match hit {
        Some(o) => refuse(&o.annotation, format!("{key}: {reason}")),
        // A derived check failed (e.g. default_vcpus over an annotated max):
        // name every annotation, since together they made the config.
        None if key == "?" => refuse(
            &overrides
                .iter()
                .map(|o| o.annotation.as_str())
                .collect::<Vec<_>>()
                .join(", "),
            reason,
        ),
        None => e,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::config::{GuestArch, HostInfo, parse_str};
    use std::path::Path;

    const HOST: HostInfo = HostInfo {
        numa_nodes: 1,
        cpus: 4,
        mem_mib: 8192,
        arch: GuestArch::X86_64,
    };

    fn cfg(extra: &str) -> HypervisorConfig {
        let text = format!(
            "[hypervisor.qemu]\nkernel = \"/k\"\nshared_fs = \"none\"\ndefault_memory = 512\n{extra}\n"
        );
        parse_str(Path::new("/etc/sandvm/c.toml"), &text, &HOST)
            .unwrap()
            .config
    }

    fn ann(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (format!("{PREFIX}{k}"), v.to_string()))
            .collect()
    }

    fn refused(e: ConfigError) -> (String, String) {
        match e {
            ConfigError::Annotation { annotation, reason } => (annotation, reason),
            other => panic!("not an annotation error: {other}"),
        }
    }

    #[test]
    fn allowed_annotations_override_and_others_are_left_alone() {
        let c = cfg("enable_annotations = [\"default_memory\", \"kernel_params\"]");
        let mut a = ann(&[("default_memory", "768"), ("kernel_params", "quiet=0")]);
        a.insert("io.kubernetes.cri.container-type".into(), "sandbox".into());
        let o = apply(&c, &a).unwrap();
        assert_eq!(o.memory_mib, 768);
        assert_eq!(o.kernel_params, vec!["quiet=0".to_string()]);
        assert_eq!(apply(&c, &BTreeMap::new()).unwrap().memory_mib, 512);
    }

    #[test]
    fn an_annotation_outside_enable_annotations_is_refused_by_name() {
        let c = cfg("enable_annotations = [\"default_mem\"]");
        let (name, why) = refused(apply(&c, &ann(&[("default_memory", "768")])).unwrap_err());
        assert_eq!(name, format!("{PREFIX}default_memory"));
        assert!(why.contains("enable_annotations"), "{why}");
        let (name, _) = refused(apply(&cfg(""), &ann(&[("default_vcpus", "2")])).unwrap_err());
        assert!(name.ends_with("default_vcpus"));
    }

    #[test]
    fn path_annotations_need_a_matching_allowlist() {
        let c = cfg("enable_annotations = [\"path\"]");
        let (name, why) =
            refused(apply(&c, &ann(&[("path", "/usr/bin/qemu-system-x86_64")])).unwrap_err());
        assert!(name.ends_with("hypervisor.path"));
        assert!(why.contains("valid_hypervisor_paths"), "{why}");
        let c = cfg(
            "enable_annotations = [\"path\"]\nvalid_hypervisor_paths = [\"/usr/bin/qemu-system-*\"]",
        );
        let (_, why) = refused(apply(&c, &ann(&[("path", "/tmp/evil")])).unwrap_err());
        assert!(
            why.contains("/tmp/evil") && why.contains("valid_hypervisor_paths"),
            "{why}"
        );
        let o = apply(&c, &ann(&[("path", "/usr/bin/qemu-system-x86_64")])).unwrap();
        assert_eq!(o.qemu_path, Path::new("/usr/bin/qemu-system-x86_64"));
    }

    #[test]
    fn bad_values_and_unknown_keys_name_the_annotation() {
        let c = cfg("enable_annotations = [\".*\"]");
        for (k, v, want) in [
            ("default_memory", "lots", "not an integer"),
            ("enable_iommu", "yes", "true or false"),
            ("virtio_fs_extra_args", "--x", "JSON array"),
            ("kernel", "/boot/evil", "does not take"),
            ("qemu_uid", "0", "does not take"),
            ("default_vcpus", "9", "default_vcpus"),
            ("virtio_fs_cache_size", "1024", "only 0 is accepted"),
        ] {
            let (name, why) = refused(apply(&c, &ann(&[(k, v)])).unwrap_err());
            assert_eq!(name, format!("{PREFIX}{k}"), "{why}");
            assert!(why.contains(want), "{k}: {why}");
        }
    }
}
