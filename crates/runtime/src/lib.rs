//! sandvm's runtime: the library a container shim embeds to run one QEMU VM
//! per sandbox, from a Kata-style TOML config.
//!
//! A shim loads a config ([`load_config`]), makes a [`Qemu`] handle under a
//! state root, and drives it through the [`Hypervisor`] trait: create, cold
//! plug, start, hotplug, resize, wait, stop. The handle is `Send + Sync` and
//! cheap to clone; every method takes `&self`. Once started, a task of the
//! embedding process supervises the VM: [`Hypervisor::wait_vm`] says when and
//! why it ended, [`Hypervisor::events`] streams what happened to it, and a
//! dead daemon tears the sandbox down. [`Hypervisor::get_agent_socket`] says
//! how to reach the guest agent.
//!
//! ```no_run
//! use runtime::{CreateOptions, Hypervisor, Qemu, StateRoot, load_config};
//! use std::sync::Arc;
//! use std::time::Duration;
//!
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let loaded = load_config("configs/qemu-x86_64.toml".as_ref())?;
//! let vm = Arc::new(Qemu::new(StateRoot::from_env(), loaded.config));
//! vm.create_vm("demo", CreateOptions::default()).await?;
//! vm.start_vm(Duration::from_secs(30)).await?;
//!
//! // Wait for the end in one task while the shim works in others.
//! let waiter = tokio::spawn({
//!     let vm = Arc::clone(&vm);
//!     async move { vm.wait_vm().await }
//! });
//! println!("agent at {:?}", vm.get_agent_socket()?);
//! vm.check().await?;
//!
//! let stop = vm.stop_vm(false).await?;
//! println!("stopped: {}", stop.outcome);
//! println!("ended: {}", waiter.await??);
//! # Ok(())
//! # }
//! ```
//!
//! `docs/embedding.md` is the guide for shim authors: the events, the
//! locking rules, what each error means.

pub mod config;
mod error;
pub mod factory;
pub(crate) mod host;
mod hypervisor;
pub(crate) mod plan;
pub(crate) mod qemu;
pub(crate) mod state;
pub(crate) mod supervise;
mod types;

pub use config::{ConfigError, HypervisorConfig, Loaded, load};
pub use error::{HypervisorError, Result};
pub use hypervisor::Hypervisor;
pub use qemu::hotplug::{HotplugState, PluggedDevice};
pub use qemu::record::QemuRecord;
pub use qemu::snapshot::{RestoreOptions, RestoreReport, SnapshotInfo, SnapshotMeta};
pub use qemu::{DEFAULT_START_TIMEOUT, Qemu, StopMode, Supervision, peek, peek_record};
pub use state::{DEFAULT_STATE_ROOT, STATE_ROOT_ENV, StateError, StateRoot, validate_id};
pub use types::*;

/// Load and check a config file, probing the host for the `0` defaults.
/// Keys for other components come back as warnings, each once.
pub fn load_config(path: &std::path::Path) -> std::result::Result<Loaded, ConfigError> {
    config::load(path)
}

/// What the CLI and other tools need beyond a shim's API: the accelerator
/// probe, process figures, the plan of a config, cables.
pub mod tools {
    pub use crate::host::accel::{
        AccelError, Decision as AccelDecision, kvm_openable, probe_uncached as probe_accel,
    };
    pub use crate::host::stats::{ProcStats, proc_stats};
    pub use crate::qemu::hotplug::cable::socketpair as cable_socketpair;
    pub use crate::qemu::hotplug::net::open_tap;
    pub use crate::state::files;
    pub use crate::supervise::dump_file;

    /// The QEMU invocation planned for a sandbox `id` of `cfg` in `dir`
    /// under `accel` (no checks on `id` or `dir`: for tools and tests that
    /// start QEMU themselves).
    pub fn plan(
        cfg: &crate::HypervisorConfig,
        id: &str,
        uuid: &str,
        dir: &std::path::Path,
        accel: crate::config::Accel,
    ) -> Result<qemu_config::Config, crate::HypervisorError> {
        let image_size = cfg
            .image
            .as_ref()
            .and_then(|p| std::fs::metadata(p).ok())
            .map(|m| m.len());
        let layout = crate::plan::Layout::new(cfg, image_size);
        Ok(crate::plan::plan(&crate::plan::PlanInput {
            cfg,
            layout: &layout,
            accel,
            id,
            uuid,
            dir,
            share: None,
            role: None,
            agent: cfg.agent.channel,
            cold: &[],
            incoming: false,
        })?)
    }
}
