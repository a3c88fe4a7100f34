//! The private containerd's config file (version 2) and how it is started.

use std::path::{Path, PathBuf};

use super::{Containerd, RUNC, SANDVM, SYSTEM_PATH};
use crate::oci::TEST_IMAGE;

/// Plugins the tests never use, disabled so that containerd starts fast and
/// touches nothing outside its folder (`opt` would create `/opt/containerd`).
const DISABLED_PLUGINS: &[&str] = &[
    "io.containerd.snapshotter.v1.aufs",
    "io.containerd.snapshotter.v1.btrfs",
    "io.containerd.snapshotter.v1.devmapper",
    "io.containerd.snapshotter.v1.native",
    "io.containerd.snapshotter.v1.zfs",
    "io.containerd.internal.v1.opt",
    "io.containerd.internal.v1.tracing",
    "io.containerd.tracing.processor.v1.otlp",
];

/// The CRI plugin's id, disabled unless [`Options::cri`].
const CRI_PLUGIN: &str = "io.containerd.grpc.v1.cri";

/// A runtime handler for containerd's CRI plugin
/// (`[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.<handler>]`).
#[derive(Debug, Clone)]
pub struct CriRuntime {
    /// The handler name a RuntimeClass (or a CRI client's `runtime_handler`) gives.
    pub handler: String,
    /// The runtime containerd starts, e.g. [`SANDVM`].
    pub runtime_type: String,
    /// Pod annotations passed through to the runtime (globs).
    pub pod_annotations: Vec<String>,
    /// Raw TOML lines of the handler's `options` table, e.g.
    /// `ConfigPath = "/path/to/configuration.toml"`.
    pub options_toml: String,
}

impl CriRuntime {
    /// sandvm's handler `sandvm`: runtime [`SANDVM`], Kata's annotations passed
    /// through, and the shim's config file as the options' `ConfigPath`.
    pub fn sandvm(config_path: &Path) -> CriRuntime {
        CriRuntime {
            handler: "sandvm".into(),
            runtime_type: SANDVM.into(),
            pod_annotations: vec!["io.katacontainers.*".into()],
            options_toml: format!(
                "ConfigPath = {}\n",
                toml_str(&config_path.to_string_lossy())
            ),
        }
    }
}

/// How to start a private containerd. `Options::default()` is containerd with
/// runc only, no CRI.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Turn on containerd's CRI plugin (served on the same gRPC socket). Its
    /// default runtime is runc; images for it go into the `k8s.io` namespace.
    pub cri: bool,
    /// Runtime handlers for the CRI plugin besides `runc`.
    pub cri_runtimes: Vec<CriRuntime>,
    /// The CRI plugin's pod sandbox ("pause") image; default [`TEST_IMAGE`].
    pub cri_sandbox_image: Option<String>,
    /// Folders put first on containerd's PATH (and so its shims'): where
    /// containerd finds `containerd-shim-sandvm-v2`.
    pub path: Vec<PathBuf>,
    /// Extra environment for containerd, inherited by the shims it starts.
    /// `SANDVM_STATE_DIR` defaults to `<folder>/sv`, so sandvm's sandbox folders
    /// are private too and the leak check sees them.
    pub env: Vec<(String, String)>,
    /// Raw TOML appended to the generated config (new tables only).
    pub extra_toml: String,
    /// containerd's log level (default `info`).
    pub log_level: Option<String>,
}

impl Containerd {
    /// The CRI plugin's CNI config folder (private; empty until a test writes
    /// a conflist into it). The plugins are Debian's, in `/usr/lib/cni`.
    pub fn cni_conf_dir(&self) -> PathBuf {
        self.dir().join("cni")
    }

    /// The config this containerd runs with.
    pub(super) fn config_toml(&self) -> String {
        let d = self.dir.display();
        let mut disabled: Vec<&str> = DISABLED_PLUGINS.to_vec();
        if !self.opts.cri {
            disabled.push(CRI_PLUGIN);
        }
        let disabled: Vec<String> = disabled.iter().map(|p| toml_str(p)).collect();
        let level = self.opts.log_level.as_deref().unwrap_or("info");
        let mut t = format!(
            "# A private containerd for one test (tests/src/containerd/).\n\
             version = 2\nroot = \"{d}/root\"\nstate = \"{d}/state\"\n\
             disabled_plugins = [{}]\n\n\
             [grpc]\n  address = \"{d}/c.sock\"\n\n\
             [ttrpc]\n  address = \"{d}/t.sock\"\n\n\
             [debug]\n  address = \"{d}/d.sock\"\n  level = {}\n\n\
             [metrics]\n  address = \"\"\n",
            disabled.join(", "),
            toml_str(level),
        );
        if self.opts.cri {
            t.push_str(&self.cri_toml());
        }
        t.push('\n');
        t.push_str(&self.opts.extra_toml);
        t.push('\n');
        t
    }

    /// The CRI plugin's section: runc as the default handler, the caller's
    /// handlers, CNI from Debian's plugins with a private conf dir, and the
    /// streaming server on a free loopback port.
    fn cri_toml(&self) -> String {
        let cri = format!("plugins.{}", toml_str(CRI_PLUGIN));
        let sandbox = self.opts.cri_sandbox_image.as_deref().unwrap_or(TEST_IMAGE);
        let mut t = format!(
            "\n[{cri}]\n  sandbox_image = {}\n  stream_server_address = \"127.0.0.1\"\n  \
             stream_server_port = \"0\"\n  enable_selinux = false\n  disable_apparmor = true\n\
             [{cri}.containerd]\n  snapshotter = \"overlayfs\"\n  default_runtime_name = \"runc\"\n\
             [{cri}.containerd.runtimes.runc]\n  runtime_type = {}\n\
             [{cri}.cni]\n  bin_dir = \"/usr/lib/cni\"\n  conf_dir = {}\n",
            toml_str(sandbox),
            toml_str(RUNC),
            toml_str(&self.cni_conf_dir().to_string_lossy()),
        );
        for r in &self.opts.cri_runtimes {
            let h = format!("{cri}.containerd.runtimes.{}", toml_str(&r.handler));
            let ann: Vec<String> = r.pod_annotations.iter().map(|a| toml_str(a)).collect();
            t.push_str(&format!(
                "[{h}]\n  runtime_type = {}\n  pod_annotations = [{}]\n[{h}.options]\n{}\n",
                toml_str(&r.runtime_type),
                ann.join(", "),
                r.options_toml
            ));
        }
        t
    }

    /// PATH for containerd: the caller's folders, then the system's.
    pub(super) fn path_env(&self) -> String {
        let mut parts: Vec<String> = self
            .opts
            .path
            .iter()
            .map(|p| p.display().to_string())
            .collect();
        parts.push(SYSTEM_PATH.to_string());
        parts.join(":")
    }
}

/// Quote `s` as a TOML basic string.
fn toml_str(s: &str) -> String {
    let mut o = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => o.push_str("\\\""),
            '\\' => o.push_str("\\\\"),
            c if c.is_control() => o.push_str(&format!("\\u{:04X}", c as u32)),
            c => o.push(c),
        }
    }
    o.push('"');
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quotes_toml() {
        assert_eq!(toml_str("a\"b\\c"), "\"a\\\"b\\\\c\"");
    }
}
