//! The [`Hypervisor`] trait: what a container shim calls.
//!
//! Methods are `async` (native async fn in traits, so static dispatch; a
//! shim holds a concrete backend such as [`crate::qemu::Qemu`]). A method that
//! a backend does not implement yet returns [`HypervisorError::NotSupported`];
//! none panics.

use crate::config::{ConfigError, HypervisorConfig};
use crate::state::{SandboxState, StateError, VmState};
use serde::Serialize;
use std::path::PathBuf;
use std::time::Duration;

/// Errors of hypervisor operations.
#[derive(Debug, thiserror::Error)]
pub enum HypervisorError {
    /// Bad configuration.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// State store problem.
    #[error(transparent)]
    State(#[from] StateError),
    /// The operation is not implemented (yet) by this backend.
    #[error("{op} is not supported yet by the {backend} backend")]
    NotSupported {
        /// The operation.
        op: &'static str,
        /// The backend.
        backend: &'static str,
    },
    /// The operation does not fit the sandbox's current state.
    #[error("Sandbox {id} is {state}; cannot {op}")]
    WrongState {
        /// Sandbox id.
        id: String,
        /// Its state.
        state: VmState,
        /// The operation.
        op: &'static str,
    },
    /// The operation needs a created sandbox.
    #[error("No sandbox has been created or loaded; cannot {op}")]
    NoSandbox {
        /// The operation.
        op: &'static str,
    },
    /// QEMU could not be started, or died while starting. Carries its stderr.
    #[error("QEMU failed to start: {reason}{}", stderr_suffix(.stderr))]
    StartFailed {
        /// What went wrong.
        reason: String,
        /// The tail of QEMU's stderr.
        stderr: String,
    },
    /// A QMP operation failed.
    #[error("QMP {op}: {source}")]
    Qmp {
        /// The operation.
        op: &'static str,
        /// The QMP error.
        #[source]
        source: qmp::Error,
    },
    /// QEMU exited (or was killed) while an operation was talking to it:
    /// its QMP connection closed and its process is gone.
    #[error("QEMU (pid {pid}) exited during {op}")]
    QemuExited {
        /// QEMU's pid.
        pid: i32,
        /// What was going on.
        op: String,
        /// The error the operation saw (a closed QMP connection).
        #[source]
        source: Box<HypervisorError>,
    },
    /// An operation ran out of time.
    #[error("{op} timed out after {after:?}")]
    Timeout {
        /// The operation.
        op: &'static str,
        /// How long we waited.
        after: Duration,
    },
    /// The host cannot do what the config asks.
    #[error("Host: {0}")]
    Host(String),
    /// An I/O error on a named path or operation.
    #[error("{what}: {reason}")]
    Io {
        /// The path or operation.
        what: String,
        /// The error.
        reason: String,
    },
}

fn stderr_suffix(s: &str) -> String {
    if s.trim().is_empty() {
        String::new()
    } else {
        format!("\nQEMU stderr:\n{}", s.trim_end())
    }
}

impl HypervisorError {
    /// Wrap a QMP error with the operation it came from.
    pub fn qmp(op: &'static str) -> impl Fn(qmp::Error) -> HypervisorError {
        move |source| HypervisorError::Qmp { op, source }
    }

    /// Wrap an I/O error with what it was about.
    pub fn io(what: impl std::fmt::Display) -> impl Fn(std::io::Error) -> HypervisorError {
        let what = what.to_string();
        move |e| HypervisorError::Io {
            what: what.clone(),
            reason: e.to_string(),
        }
    }
}

/// Result of hypervisor operations.
pub type Result<T> = std::result::Result<T, HypervisorError>;

/// Options for [`Hypervisor::create_vm`].
#[derive(Debug, Clone, Default)]
pub struct CreateOptions {
    /// Host folder shared with the guest (virtio-fs); default: the sandbox's `shared/`.
    pub share: Option<PathBuf>,
}

/// Timings of a start, in milliseconds from the `start_vm` call.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct StartReport {
    /// QEMU spawned.
    pub spawn_ms: f64,
    /// QMP negotiated.
    pub qmp_ready_ms: f64,
}

/// What a backend can do.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Capabilities {
    /// Block devices can be hotplugged.
    pub block_hotplug: bool,
    /// Multiple queues for network devices.
    pub multi_queue: bool,
    /// A shared filesystem is available.
    pub fs_sharing: bool,
}

/// Where a sandbox's console is.
#[derive(Debug, Clone, Serialize)]
pub struct ConsoleInfo {
    /// The console socket (a virtconsole, or a serial port with `use_legacy_serial`).
    pub socket: PathBuf,
    /// Everything the guest printed.
    pub log: PathBuf,
}

/// vCPU thread ids, by vCPU index.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ThreadIds {
    /// (cpu-index, host thread id).
    pub vcpus: Vec<(u32, i32)>,
}

/// A device for `add_device` / `hotplug_add_device` (filled by the hotplug issue).
#[derive(Debug, Clone)]
pub enum DeviceSpec {
    /// A disk image.
    Block {
        /// Device id.
        id: String,
        /// Image path.
        path: PathBuf,
        /// Read-only.
        readonly: bool,
    },
    /// A tap device.
    Net {
        /// Device id.
        id: String,
        /// Tap name.
        tap: String,
        /// MAC address.
        mac: Option<String>,
    },
    /// A tap the caller opened (its fd is passed to QEMU; ours is closed after).
    NetFd {
        /// Device id (empty: generated).
        id: String,
        /// The tap fd.
        fd: std::sync::Arc<std::os::fd::OwnedFd>,
        /// MAC address (default: random, locally administered).
        mac: Option<String>,
    },
    /// One end of a cable: a `SOCK_DGRAM` socket (one end of a socketpair
    /// whose other end goes to another sandbox) as a NIC (`dgram` netdev).
    Cable {
        /// Device id (empty: generated, `cableN`).
        id: String,
        /// The socket (passed to QEMU; ours is closed after).
        fd: std::sync::Arc<std::os::fd::OwnedFd>,
        /// MAC address (default: random, locally administered).
        mac: Option<String>,
        /// The sandbox at the other end (recorded for display).
        peer: String,
    },
    /// vhost-vsock with a guest CID.
    Vsock {
        /// Device id (empty: generated).
        id: String,
        /// The guest's context id (at least 3).
        guest_cid: u32,
    },
    /// A host PCI device through VFIO (untested on hardware).
    Vfio {
        /// Device id (empty: generated).
        id: String,
        /// Host PCI address (`0000:01:00.0`) or `/sys/bus/pci/devices/...` path.
        host: String,
    },
}

/// The operations a shim drives.
#[allow(async_fn_in_trait)]
pub trait Hypervisor {
    /// Prepare a sandbox: validate assets, make its folder and state.
    async fn create_vm(&mut self, id: &str, opts: CreateOptions) -> Result<()>;
    /// Start the VM; returns when QMP is negotiated, or fails within `timeout`.
    async fn start_vm(&mut self, timeout: Duration) -> Result<StartReport>;
    /// Stop the VM (powerdown, SIGTERM, SIGKILL), reap it and remove its folder.
    /// With `wait_only`, only wait for QEMU to exit by itself, then clean up.
    async fn stop_vm(&mut self, wait_only: bool) -> Result<()>;
    /// Pause the guest.
    async fn pause_vm(&mut self) -> Result<()>;
    /// Resume the guest.
    async fn resume_vm(&mut self) -> Result<()>;
    /// Save the VM (snapshot to disk).
    async fn save_vm(&mut self) -> Result<()>;
    /// Cold-plug a device before start.
    async fn add_device(&mut self, dev: DeviceSpec) -> Result<()>;
    /// Hotplug a device into the running VM.
    async fn hotplug_add_device(&mut self, dev: DeviceSpec) -> Result<()>;
    /// Remove a hotplugged device.
    async fn hotplug_remove_device(&mut self, id: &str) -> Result<()>;
    /// Resize memory to `mib`; returns the size reached.
    async fn resize_memory(&mut self, mib: u64) -> Result<u64>;
    /// Resize vCPUs to `n`; returns (old, new).
    async fn resize_vcpus(&mut self, n: u32) -> Result<(u32, u32)>;
    /// Where the console is.
    async fn get_vm_console(&self) -> Result<ConsoleInfo>;
    /// Drop the QMP connection (the VM keeps running).
    async fn disconnect(&mut self);
    /// What this backend can do.
    fn capabilities(&self) -> Capabilities;
    /// The checked config.
    fn hypervisor_config(&self) -> &HypervisorConfig;
    /// vCPU thread ids.
    async fn get_thread_ids(&mut self) -> Result<ThreadIds>;
    /// Pids of QEMU and its daemons.
    fn get_pids(&self) -> Vec<i32>;
    /// Check that the VM answers.
    async fn check(&mut self) -> Result<()>;
    /// Remove what a failed create or start left.
    async fn cleanup(&mut self) -> Result<()>;
    /// The state to persist.
    fn save_state(&self) -> Result<SandboxState>;
    /// Adopt a persisted state (reattach).
    async fn load_state(&mut self, state: SandboxState) -> Result<()>;
}
