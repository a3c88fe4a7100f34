//! Which sandvm configuration a sandbox boots with, and loading it.
//!
//! Order: the config path in the task's runtime options (what `ctr run
//! --runtime-config-path` and the CRI plugin's `ConfigPath` send, as a
//! `runtimeoptions.v1.Options`), then [`DEFAULT_CONFIG`], then Kata's own
//! paths ([`KATA_CONFIGS`]). A Kata `configuration.toml` loads: tables of
//! other components (`[agent.kata]`, `[runtime]`) are warnings.

use std::path::{Path, PathBuf};

use containerd_shim_protos::protobuf::Message;
use containerd_shim_protos::protobuf::UnknownValueRef;
use containerd_shim_protos::protobuf::well_known_types::any::Any;
use containerd_shim_protos::protobuf::well_known_types::empty::Empty;
use runtime::HypervisorConfig;
use runtime::config::{AgentChannel, SharedFs};

/// sandvm's own default config path.
pub const DEFAULT_CONFIG: &str = "/etc/sandvm/configuration.toml";

/// Kata's config paths, tried after [`DEFAULT_CONFIG`].
pub const KATA_CONFIGS: [&str; 2] = [
    "/etc/kata-containers/configuration.toml",
    "/usr/share/defaults/kata-containers/configuration.toml",
];

/// Type of containerd's runtime options for runtimes other than runc
/// (`github.com/containerd/containerd/pkg/runtimeoptions/v1`).
pub const RUNTIME_OPTIONS_TYPE: &str = "runtimeoptions.v1.Options";

/// Field number of `config_path` in `runtimeoptions.v1.Options`.
const CONFIG_PATH_FIELD: u32 = 2;

/// Why no configuration could be had.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The options' bytes are not a protobuf message.
    #[error("Cannot decode the runtime options ({type_url})")]
    Options {
        /// The options' type.
        type_url: String,
        /// The decoder's error.
        #[source]
        source: containerd_shim_protos::protobuf::Error,
    },
    /// The options' config path is not UTF-8.
    #[error("The runtime options' config path is not UTF-8")]
    PathNotUtf8,
    /// No config path was given and no default file exists.
    #[error(
        "No sandvm configuration: the runtime options give no config path (ctr --runtime-config-path, CRI ConfigPath) and none of {tried:?} exists"
    )]
    NotFound {
        /// The paths tried.
        tried: Vec<String>,
    },
    /// The file does not load.
    #[error(transparent)]
    Load(#[from] runtime::ConfigError),
    /// The config shares no folder with the guest.
    #[error(
        "Config {path}: containers need a shared folder; set shared_fs = \"virtio-fs\" (and virtio_fs_daemon), or \"virtio-9p\""
    )]
    NoSharedFs {
        /// The config file.
        path: String,
    },
    /// The config has no agent channel.
    #[error("Config {path}: containers need the agent; agent_channel must not be \"none\"")]
    NoAgent {
        /// The config file.
        path: String,
    },
    /// Loading ran on a task that failed.
    #[error("Loading config {path} failed: {reason}")]
    Task {
        /// The config file.
        path: String,
        /// The join error.
        reason: String,
    },
}

/// The config path the runtime options carry, if any. Options of another
/// type (runc's) carry none.
pub fn config_path_from_options(opts: Option<&Any>) -> Result<Option<PathBuf>, ConfigError> {
    let Some(any) = opts else {
        return Ok(None);
    };
    let name = any.type_url.rsplit('/').next().unwrap_or_default();
    if name != RUNTIME_OPTIONS_TYPE {
        if !any.type_url.is_empty() {
            tracing::warn!(type_url = %any.type_url, "runtime options of another type; no config path in them");
        }
        return Ok(None);
    }
    // Decoded as an empty message: every field is then an unknown field, so
    // no generated type is needed for this two-string message.
    let msg = Empty::parse_from_bytes(&any.value).map_err(|source| ConfigError::Options {
        type_url: any.type_url.clone(),
        source,
    })?;
    match msg.special_fields.unknown_fields().get(CONFIG_PATH_FIELD) {
        Some(UnknownValueRef::LengthDelimited(b)) if !b.is_empty() => {
            let s = std::str::from_utf8(b).map_err(|_| ConfigError::PathNotUtf8)?;
            Ok(Some(PathBuf::from(s)))
        }
        _ => Ok(None),
    }
}

/// The config file to load: `explicit`, else the first default that exists.
pub async fn find(explicit: Option<PathBuf>) -> Result<PathBuf, ConfigError> {
    if let Some(p) = explicit {
        return Ok(p);
    }
    let mut tried = Vec::new();
    for p in std::iter::once(DEFAULT_CONFIG).chain(KATA_CONFIGS) {
        if tokio::fs::try_exists(p).await.unwrap_or(false) {
            return Ok(PathBuf::from(p));
        }
        tried.push(p.to_string());
    }
    Err(ConfigError::NotFound { tried })
}

/// Loads and checks `path` (the runtime probes the host, so off the async
/// threads), logs its warnings, and checks what containers need.
pub async fn load(path: &Path) -> Result<HypervisorConfig, ConfigError> {
    let p = path.to_path_buf();
    let loaded = tokio::task::spawn_blocking(move || runtime::load_config(&p))
        .await
        .map_err(|e| ConfigError::Task {
            path: path.display().to_string(),
            reason: e.to_string(),
        })??;
    for w in &loaded.warnings {
        tracing::warn!(config = %path.display(), "{w}");
    }
    check(&loaded.config)?;
    Ok(loaded.config)
}

/// What a config must have to run containers.
pub fn check(cfg: &HypervisorConfig) -> Result<(), ConfigError> {
    let path = cfg.source.display().to_string();
    if cfg.shared_fs.kind == SharedFs::None {
        return Err(ConfigError::NoSharedFs { path });
    }
    if cfg.agent.channel.is_none() {
        return Err(ConfigError::NoAgent { path });
    }
    Ok(())
}

/// The agent channel's name, for logs.
pub fn channel_name(c: Option<AgentChannel>) -> &'static str {
    match c {
        Some(AgentChannel::VirtioSerial) => "virtio-serial",
        Some(AgentChannel::HybridVsock) => "hybrid-vsock",
        Some(AgentChannel::Vsock) => "vsock",
        None => "none",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `runtimeoptions.v1.Options { type_url = 1; config_path = 2 }` by hand.
    fn options(config_path: &str) -> Any {
        let mut v = vec![0x0a, 3, b'a', b'b', b'c', 0x12, config_path.len() as u8];
        v.extend_from_slice(config_path.as_bytes());
        Any {
            type_url: RUNTIME_OPTIONS_TYPE.into(),
            value: v,
            ..Default::default()
        }
    }

    /// A Kata-style file around fake assets (the runtime checks that they
    /// exist; QEMU must be installed: `make setup`).
    fn kata_file(dir: &Path, qemu_extra: &str) -> PathBuf {
        for f in ["vmlinuz", "initrd", "virtiofsd"] {
            std::fs::write(dir.join(f), "x").unwrap();
        }
        let text = format!(
            "[hypervisor.qemu]\npath = \"/usr/bin/qemu-system-x86_64\"\nkernel = \"vmlinuz\"\n\
             initrd = \"initrd\"\nmachine_type = \"q35\"\nvirtio_fs_daemon = \"virtiofsd\"\n{qemu_extra}\n\
             [agent.kata]\ndial_timeout = 45\n\n[runtime]\nsandbox_cgroup_only = true\n"
        );
        let p = dir.join("configuration.toml");
        std::fs::write(&p, text).unwrap();
        p
    }

    #[tokio::test]
    async fn a_kata_file_loads_and_containers_need_a_share_and_the_agent() {
        let d = tempfile::tempdir().unwrap();
        let ok = kata_file(d.path(), "shared_fs = \"virtio-fs\"");
        let cfg = load(&ok).await.unwrap();
        assert_eq!(cfg.shared_fs.kind, SharedFs::VirtioFs);
        let warnings = runtime::load_config(&ok).unwrap().warnings;
        let text: Vec<String> = warnings.iter().map(|w| w.to_string()).collect();
        assert!(text.iter().any(|w| w.contains("[agent.kata]")), "{text:?}");
        assert!(text.iter().any(|w| w.contains("[runtime]")), "{text:?}");

        let none = kata_file(d.path(), "shared_fs = \"none\"");
        let e = load(&none).await.unwrap_err();
        assert!(matches!(e, ConfigError::NoSharedFs { .. }), "{e}");
        assert!(e.to_string().contains("virtio-fs"), "{e}");

        let no_agent = kata_file(
            d.path(),
            "shared_fs = \"virtio-fs\"\nagent_channel = \"none\"",
        );
        let e = load(&no_agent).await.unwrap_err();
        assert!(matches!(e, ConfigError::NoAgent { .. }), "{e}");
        let e = load(&d.path().join("missing.toml")).await.unwrap_err();
        assert!(e.to_string().contains("missing.toml"), "{e}");
    }

    #[test]
    fn config_path_comes_from_runtimeoptions() {
        let any = options("/etc/x/configuration.toml");
        assert_eq!(
            config_path_from_options(Some(&any)).unwrap(),
            Some(PathBuf::from("/etc/x/configuration.toml"))
        );
        let mut prefixed = any.clone();
        prefixed.type_url = format!("type.googleapis.com/{RUNTIME_OPTIONS_TYPE}");
        assert!(config_path_from_options(Some(&prefixed)).unwrap().is_some());
        assert_eq!(config_path_from_options(None).unwrap(), None);
        let runc = Any {
            type_url: "containerd.runc.v1.Options".into(),
            value: vec![0x08, 1],
            ..Default::default()
        };
        assert_eq!(config_path_from_options(Some(&runc)).unwrap(), None);
        let empty = options("");
        assert_eq!(config_path_from_options(Some(&empty)).unwrap(), None);
        let bad = Any {
            type_url: RUNTIME_OPTIONS_TYPE.into(),
            value: vec![0x12, 50, b'x'],
            ..Default::default()
        };
        assert!(matches!(
            config_path_from_options(Some(&bad)),
            Err(ConfigError::Options { .. })
        ));
    }
}
