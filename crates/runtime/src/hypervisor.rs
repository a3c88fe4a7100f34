//! The [`Hypervisor`] trait: what a container shim calls.
//!
//! Every method takes `&self` and returns a `Send` future, so a shim holds
//! the backend in an `Arc`, moves clones of it into tasks, and waits on the
//! VM in one task while it hotplugs from another. The backend locks
//! internally, per operation: changes to one sandbox (create, start, stop,
//! hotplug, resize, pause) run one at a time; [`wait_vm`](Hypervisor::wait_vm),
//! [`events`](Hypervisor::events), [`check`](Hypervisor::check) and the
//! getters never wait for them. A method that a backend does not implement
//! returns [`HypervisorError::NotSupported`](crate::HypervisorError::NotSupported);
//! none panics.

use crate::config::HypervisorConfig;
use crate::error::Result;
use crate::types::*;
use std::future::Future;
use std::path::Path;
use std::time::Duration;
use tokio::sync::broadcast;

/// The operations a shim drives on one sandbox.
pub trait Hypervisor: Send + Sync {
    /// What [`save_state`](Hypervisor::save_state) returns: the backend's
    /// own record of the sandbox.
    type State: Send;

    /// Prepare a sandbox: apply the allowed annotations, check the assets,
    /// make its folder and state, cold-plug `opts.network`.
    fn create_vm(&self, id: &str, opts: CreateOptions) -> impl Future<Output = Result<()>> + Send;
    /// Start the VM; returns when QMP is negotiated, or fails within `timeout`
    /// leaving nothing behind. With in-process supervision (the default), a
    /// task starts watching QEMU and its daemons.
    fn start_vm(&self, timeout: Duration) -> impl Future<Output = Result<StartReport>> + Send;
    /// Stop the VM (powerdown, SIGTERM, SIGKILL), reap it and its daemons, and
    /// remove its folder. With `wait_only`, only wait for QEMU to exit by
    /// itself, then clean up. Idempotent.
    fn stop_vm(&self, wait_only: bool) -> impl Future<Output = Result<StopReport>> + Send;
    /// Pause the guest.
    fn pause_vm(&self) -> impl Future<Output = Result<()>> + Send;
    /// Resume the guest.
    fn resume_vm(&self) -> impl Future<Output = Result<()>> + Send;
    /// Save the running VM into the snapshot folder `dest` (which must not
    /// exist): guest memory, device and daemon state, the sandbox's record.
    /// Then resume it, or, with `stop`, stop it.
    fn save_vm(
        &self,
        dest: &Path,
        stop: bool,
    ) -> impl Future<Output = Result<crate::qemu::snapshot::SnapshotInfo>> + Send;
    /// Cold-plug a device: between create and start. It is on the QEMU
    /// command line, so the guest sees it at boot.
    fn add_device(&self, dev: DeviceSpec) -> impl Future<Output = Result<DeviceInfo>> + Send;
    /// Hotplug a device into the running VM; says where the guest finds it.
    fn hotplug_add_device(
        &self,
        dev: DeviceSpec,
    ) -> impl Future<Output = Result<DeviceInfo>> + Send;
    /// Remove a hotplugged or cold-plugged device.
    fn hotplug_remove_device(&self, id: &str) -> impl Future<Output = Result<()>> + Send;
    /// Resize memory to `mib` in all; says what was reached and with which device.
    fn resize_memory(&self, mib: u64) -> impl Future<Output = Result<MemoryReport>> + Send;
    /// Resize vCPUs to `n`; returns (old, new).
    fn resize_vcpus(&self, n: u32) -> impl Future<Output = Result<(u32, u32)>> + Send;
    /// Where the console is.
    fn get_vm_console(&self) -> Result<ConsoleInfo>;
    /// How to reach the guest agent.
    fn get_agent_socket(&self) -> Result<AgentSocket>;
    /// Resolves when the VM has ended, with why. Many callers may wait at once.
    fn wait_vm(&self) -> impl Future<Output = Result<VmExit>> + Send;
    /// A stream of the sandbox's events (subscribe before start to see them all).
    fn events(&self) -> broadcast::Receiver<SandboxEvent>;
    /// Drop the QMP connection (the VM keeps running).
    fn disconnect(&self) -> impl Future<Output = ()> + Send;
    /// What this backend can do for the configured machine.
    fn capabilities(&self) -> Capabilities;
    /// The checked config (with the sandbox's annotations applied).
    fn hypervisor_config(&self) -> HypervisorConfig;
    /// Boot memory plus hot-added memory, MiB.
    fn get_total_memory(&self) -> u64;
    /// vCPU thread ids.
    fn get_thread_ids(&self) -> impl Future<Output = Result<ThreadIds>> + Send;
    /// Pids of QEMU and its daemons.
    fn get_pids(&self) -> Vec<i32>;
    /// Check that the VM runs: QMP answers, the guest has not panicked or
    /// failed, and every daemon is alive.
    fn check(&self) -> impl Future<Output = Result<()>> + Send;
    /// Remove what a failed create or start left.
    fn cleanup(&self) -> impl Future<Output = Result<()>> + Send;
    /// The state to persist.
    fn save_state(&self) -> Result<Self::State>;
    /// Adopt a persisted state (reattach).
    fn load_state(&self, state: Self::State) -> impl Future<Output = Result<()>> + Send;
}
