//! Kata-style TOML configuration: parse, report unused keys, validate.
//!
//! ```text
//! TOML file ──parse──> RawQemu (serde, Kata key names)
//!           ──validate──> HypervisorConfig (checked, typed, paths resolved)
//! ```

pub mod annotations;
pub mod extras;
mod keys;
mod raw;
mod types;
mod validate;

pub use keys::{
    FACTORY_KEYS, INERT_FACTORY_KEYS, INERT_QEMU_KEYS, Inert, InertKey, QEMU_KEYS, Refusal, Warning,
};
pub use types::*;
pub use validate::*;

use serde::Deserialize;
use std::path::{Path, PathBuf};

/// A configuration error. Each names the file and, where there is one, the key.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("Cannot read config {path}: {reason}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        reason: String,
    },
    /// The file is not valid TOML, or a value has the wrong type.
    #[error("{file}: key {key}: {reason} (line {line})")]
    Syntax {
        /// The file.
        file: String,
        /// The key on the offending line, dotted, or `?` when none.
        key: String,
        /// 1-based line.
        line: usize,
        /// The parser's message.
        reason: String,
    },
    /// A value is out of range, unknown, or refers to a missing or forbidden path.
    #[error("{file}: key {key}: {reason}")]
    Invalid {
        /// The file.
        file: String,
        /// The dotted key.
        key: String,
        /// Why.
        reason: String,
    },
    /// A Kata key that sandvm does not implement is set to a value that would
    /// do something (see [`INERT_QEMU_KEYS`]).
    #[error("{file}: key {key} = {value} {refusal}; sandvm accepts it only as {inert}")]
    Refused {
        /// The file.
        file: String,
        /// The dotted key.
        key: String,
        /// The value found, as TOML.
        value: String,
        /// The value sandvm accepts (the key's inert value).
        inert: String,
        /// Why any other value is refused.
        refusal: Refusal,
    },
    /// A key of `[hypervisor.qemu]` or `[factory]`, or outside any table, that
    /// neither Kata nor sandvm defines.
    #[error("{file}: key {key} is not a key of Kata or sandvm (a typo?)")]
    UnknownKey {
        /// The file.
        file: String,
        /// The dotted key.
        key: String,
    },
    /// The file has no `[hypervisor.qemu]` table.
    #[error("{file}: no [hypervisor.qemu] table")]
    NoQemuTable {
        /// The file.
        file: String,
    },
    /// An annotation is not allowed, not understood, or gives a bad value.
    #[error("Annotation {annotation}: {reason}")]
    Annotation {
        /// The annotation's full name.
        annotation: String,
        /// Why it is refused.
        reason: String,
    },
}

/// The host facts that some defaults depend on (`0` means "the host's").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HostInfo {
    /// Online CPUs.
    pub cpus: u32,
    /// Total RAM in MiB.
    pub mem_mib: u64,
    /// Default guest arch.
    pub arch: GuestArch,
    /// The host's online NUMA nodes, a bit per node (bit N: node N).
    pub numa_nodes: u64,
}

/// The host's online NUMA nodes as a bit mask, from
/// `/sys/devices/system/node/online` (`0`, `0-1`, `0,2-3`); node 0 alone
/// when the file is missing (a kernel without NUMA) or unreadable.
fn online_numa_nodes() -> u64 {
    std::fs::read_to_string("/sys/devices/system/node/online")
        .ok()
        .and_then(|s| validate::numa::node_set(s.trim()).ok())
        .filter(|m| *m != 0)
        .unwrap_or(1)
}

impl HostInfo {
    /// Read this host's CPUs and RAM.
    pub fn probe() -> HostInfo {
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get() as u32);
        let mem_mib = std::fs::read_to_string("/proc/meminfo")
            .ok()
            .and_then(|s| {
                s.lines()
                    .find(|l| l.starts_with("MemTotal:"))
                    .and_then(|l| l.split_whitespace().nth(1))
                    .and_then(|kb| kb.parse::<u64>().ok())
            })
            .map_or(4096, |kb| kb / 1024);
        HostInfo {
            cpus,
            mem_mib,
            numa_nodes: online_numa_nodes(),
            arch: GuestArch::host(),
        }
    }
}

/// A loaded configuration and what in the file was not used.
#[derive(Debug, Clone)]
pub struct Loaded {
    /// The checked configuration.
    pub config: HypervisorConfig,
    /// Tables and keys sandvm ignored, each once.
    pub warnings: Vec<Warning>,
}

#[derive(Deserialize, Default)]
struct RawFile {
    #[serde(default)]
    hypervisor: RawHypervisor,
    #[serde(default)]
    factory: raw::RawFactory,
}

#[derive(Deserialize, Default)]
struct RawHypervisor {
    qemu: Option<raw::RawQemu>,
}

/// Read, parse and validate a config file, probing the host for defaults.
pub fn load(path: &Path) -> Result<Loaded, ConfigError> {
    load_with_host(path, &HostInfo::probe())
}

/// As [`load`], with the host facts given (for tests).
pub fn load_with_host(path: &Path, host: &HostInfo) -> Result<Loaded, ConfigError> {
    let abs = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    let text = std::fs::read_to_string(&abs).map_err(|e| ConfigError::Read {
        path: abs.display().to_string(),
        reason: e.to_string(),
    })?;
    parse_str(&abs, &text, host)
}

/// Parse and validate config text; `file` names it in errors and anchors relative paths.
pub fn parse_str(file: &Path, text: &str, host: &HostInfo) -> Result<Loaded, ConfigError> {
    let fname = file.display().to_string();
    let syntax = |e: toml::de::Error| {
        let (line, key) = locate(text, e.span());
        ConfigError::Syntax {
            file: fname.clone(),
            key,
            line,
            reason: e.message().to_string(),
        }
    };
    let doc: toml::Table = toml::from_str(text).map_err(syntax)?;
    let mut warnings = keys::unused(&doc);
    let raw: RawFile = toml::from_str(text).map_err(syntax)?;
    let config = from_raw(file, raw, doc, host)?;
    if let Some((doc, _)) = config.origin.0.as_deref() {
        warnings.extend(keys::unused_for(doc, config.shared_fs.kind));
    }
    Ok(Loaded { config, warnings })
}

/// Validate an already parsed file (`doc`), keeping it as the config's origin.
fn from_raw(
    file: &Path,
    raw: RawFile,
    doc: toml::Table,
    host: &HostInfo,
) -> Result<HypervisorConfig, ConfigError> {
    let qemu = raw.hypervisor.qemu.ok_or(ConfigError::NoQemuTable {
        file: file.display().to_string(),
    })?;
    keys::refuse_unimplemented(&file.display().to_string(), &doc)?;
    let mut config = validate::validate(file, &qemu, &raw.factory, host)?;
    config.origin = Origin(Some(std::sync::Arc::new((doc, *host))));
    Ok(config)
}

/// Validate a parsed table (used by [`annotations`] after its overrides).
/// A value of the wrong type is a [`ConfigError::Invalid`] naming its key.
fn from_doc(
    file: &Path,
    doc: toml::Table,
    host: &HostInfo,
) -> Result<HypervisorConfig, ConfigError> {
    let raw: RawFile =
        doc.clone()
            .try_into()
            .map_err(|e: toml::de::Error| ConfigError::Invalid {
                file: file.display().to_string(),
                key: "?".into(),
                reason: e.message().to_string(),
            })?;
    from_raw(file, raw, doc, host)
}

/// Find the line and dotted key at a byte span of TOML text.
fn locate(text: &str, span: Option<std::ops::Range<usize>>) -> (usize, String) {
    let Some(span) = span else {
        return (0, "?".into());
    };
    let start = span.start.min(text.len());
    let line_no = text[..start].matches('\n').count() + 1;
    let mut table = String::new();
    let mut key = None;
    for (i, line) in text.lines().enumerate() {
        let t = line.trim();
        if i + 1 > line_no {
            break;
        }
        if t.starts_with('[') {
            table = t.trim_matches(|c| c == '[' || c == ']').trim().to_string();
        }
        if i + 1 == line_no {
            key = t
                .split_once('=')
                .map(|(k, _)| k.trim().trim_matches('"').to_string());
        }
    }
    let key = match key {
        Some(k) if table.is_empty() => k,
        Some(k) => format!("{table}.{k}"),
        None if table.is_empty() => "?".into(),
        None => table,
    };
    (line_no, key)
}

impl HypervisorConfig {
    /// Whether the firmware boots `image` as a whole disk (no `kernel`:
    /// Nomad's `image_path`); the config check allows it only with an image
    /// on x86_64 q35.
    pub fn disk_boot(&self) -> bool {
        self.kernel.is_none() && self.image.is_some()
    }

    /// Refuse keys whose feature this build does not implement yet, naming the
    /// key, so that no feature in a config is silently ignored.
    pub fn check_supported(&self) -> Result<(), ConfigError> {
        let file = self.source.display().to_string();
        let no = |key: &str, reason: &str| {
            Err(ConfigError::Invalid {
                file: file.clone(),
                key: format!("hypervisor.qemu.{key}"),
                reason: format!("{reason} is not supported by sandvm yet"),
            })
        };
        if self.rootless {
            return no(
                "rootless",
                "rootless QEMU with a generated user (set qemu_uid and qemu_gid instead)",
            );
        }
        if self.vhost_user_store {
            return no("enable_vhost_user_store", "vhost-user block storage");
        }
        if self.cold_plug_vfio != VfioPort::NoPort {
            return no("cold_plug_vfio", "VFIO cold plug");
        }
        // Shared filesystems (virtiofsd, nydusd) and templating are built:
        // see qemu::daemons and qemu::template.
        Ok(())
    }

    /// Check that every asset the config names exists (QEMU, kernel, initrd,
    /// image, firmware, pflashes, the daemon, swtpm). Run before a VM is created.
    pub fn check_assets(&self) -> Result<(), ConfigError> {
        let file = self.source.display().to_string();
        let mut need: Vec<(String, &PathBuf)> =
            vec![("hypervisor.qemu.path".into(), &self.qemu_path)];
        let opts = [
            ("kernel", &self.kernel),
            ("initrd", &self.initrd),
            ("image", &self.image),
            ("firmware", &self.firmware),
            ("firmware_volume", &self.firmware_volume),
            ("virtio_fs_daemon", &self.shared_fs.daemon),
            ("file_mem_backend", &self.file_mem_backend),
            ("swtpm_path", &self.extras.swtpm),
        ];
        let vsock_daemon = (self.agent.channel == Some(AgentChannel::HybridVsock))
            .then_some(&self.agent.vsock_daemon);
        if let Some(p) = vsock_daemon {
            need.push(("hypervisor.qemu.vsock_daemon".into(), p));
        }
        for (key, p) in opts {
            if let Some(p) = p {
                need.push((format!("hypervisor.qemu.{key}"), p));
            }
        }
        for (i, p) in self.pflashes.iter().enumerate() {
            need.push((format!("hypervisor.qemu.pflashes[{i}]"), p));
        }
        if let Some((i, p)) = extras::missing_fw_cfg_file(&self.extras) {
            return Err(ConfigError::Invalid {
                file: file.clone(),
                key: format!("hypervisor.qemu.fw_cfg[{i}]"),
                reason: format!("{} does not exist", p.display()),
            });
        }
        for (key, p) in need {
            if !p.exists() {
                return Err(ConfigError::Invalid {
                    file: file.clone(),
                    key,
                    reason: format!(
                        "{} does not exist (run `make setup` and `make guest` for the bundled assets)",
                        p.display()
                    ),
                });
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
