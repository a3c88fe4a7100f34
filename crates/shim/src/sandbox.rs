//! One sandbox: its VM (the runtime's [`Qemu`] handle), its share folder,
//! and the agent in its guest. Booted by the first container of a shim,
//! torn down with the last one (or the pod's sandbox container), or when the
//! VM ends by itself.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use runtime::config::SharedFs;
use runtime::{
    AgentSocket, CreateOptions, ExitReason, Hypervisor, HypervisorConfig, NetEndpoint, Qemu,
    StateRoot, StopMode,
};
use sandvm_agent_protocol::agent::{
    CreateSandboxRequest, SetGuestDateTimeRequest, UpdateInterfaceRequest, UpdateRoutesRequest,
};
use sandvm_agent_protocol::agent_ttrpc::AgentServiceClient;
use sandvm_agent_protocol::{
    AgentClient, AgentEndpoint, ConnectError, DEFAULT_CONNECT_TIMEOUT, SHARED_FS_TAG, connect, ctx,
};
use tokio::sync::{Mutex, watch};

use crate::bundle::Record;
use crate::error::ShimError;
use crate::factory::{self, Origin};
use crate::network::{self, PodNetwork};
use crate::share::{Share, blocking};
use crate::vmcache;

/// Exit status of processes whose VM ended by itself (QEMU killed or
/// crashed, a guest panic, a daemon's death).
pub const VM_DIED_STATUS: u32 = 255;

/// Exit status of processes still running when the shim stops their VM
/// (128 + SIGKILL, as if killed).
pub const KILLED_STATUS: u32 = 137;

/// How long QEMU may take to come up (QMP negotiated).
pub(crate) const START_TIMEOUT: Duration = Duration::from_secs(60);

/// How long the guest may take to boot until its agent answers (TCG on a
/// loaded host is slow; a VM that dies meanwhile fails the wait at once).
pub(crate) const AGENT_TIMEOUT: Duration = Duration::from_secs(180);

/// While the guest boots, each attempt to reach the agent is this short: a
/// sync line sent before the guest opened its port is lost, and the next
/// attempt should not wait long for its answer.
const BOOT_ATTEMPT: Duration = Duration::from_millis(1500);

/// How long attempts stay short; later ones get
/// [`DEFAULT_CONNECT_TIMEOUT`] (a slow, loaded host).
const BOOT_PHASE: Duration = Duration::from_secs(20);

/// Pause between attempts.
const RETRY_PAUSE: Duration = Duration::from_millis(100);

/// Deadline of one short agent call.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(60);

/// What a sandbox boots from.
#[derive(Debug, Clone)]
pub struct BootSpec {
    /// The sandvm sandbox id.
    pub sid: String,
    /// The state root.
    pub root: StateRoot,
    /// The checked config.
    pub config: HypervisorConfig,
    /// `io.katacontainers.config.hypervisor.*` annotations.
    pub annotations: BTreeMap<String, String>,
    /// The guest's hostname ("" keeps the guest's).
    pub hostname: String,
    /// The pod's network namespace (`None`: host network, no NIC).
    pub netns: Option<PathBuf>,
    /// The bundle and the record written there for `sid`: rewritten when
    /// the sandbox is a VM from the cache, which keeps its own id.
    pub record: Option<(PathBuf, Record)>,
}

/// A running sandbox.
pub struct Sandbox {
    /// The sandvm sandbox id.
    pub sid: String,
    /// The VM.
    pub vm: Qemu,
    /// The agent's container and process service.
    pub agent: AgentServiceClient,
    /// The share folder.
    pub share: Share,
    /// QEMU's pid: the pid containerd sees for every task of the sandbox.
    pub pid: u32,
    /// How its VM started: a template clone or a cold boot.
    pub origin: Origin,
    /// `Some(status)` once the VM is gone: the status its processes get.
    ended: watch::Sender<Option<u32>>,
    torn_down: Mutex<bool>,
    network: Mutex<Option<PodNetwork>>,
}

impl std::fmt::Debug for Sandbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sandbox")
            .field("sid", &self.sid)
            .field("pid", &self.pid)
            .field("ended", &self.end_status())
            .finish_non_exhaustive()
    }
}

/// The agent's endpoint for the runtime's agent socket.
pub(crate) fn agent_endpoint(s: AgentSocket) -> AgentEndpoint {
    match s {
        AgentSocket::Serial { path } => AgentEndpoint::Serial { path },
        AgentSocket::HybridVsock { path, port } => AgentEndpoint::HybridVsock { path, port },
        AgentSocket::Vsock { cid, port } => AgentEndpoint::Vsock { cid, port },
    }
}

impl Sandbox {
    /// Makes the share folder, creates and starts the VM (or takes one from
    /// the warm VM cache), waits for the agent and creates the guest's
    /// sandbox; starts watching the VM. On failure nothing is left: no
    /// QEMU, daemon, folder or mount. A VM taken from the cache keeps its
    /// id: [`Sandbox::sid`] is then not `b.sid`.
    pub async fn boot(b: BootSpec) -> Result<Arc<Sandbox>, ShimError> {
        if let Some((id, vm)) = take_cached(&b).await {
            let share = Share::at(Share::path_for(&b.root, &id));
            match Self::boot_vm(&b, id.clone(), share, vm, Origin::Cached).await {
                Ok(sb) => return Ok(sb),
                Err(e) => {
                    tracing::warn!(id, error = %e, "the cached VM failed; booting one");
                    note_sandbox(&b, &b.sid).await?;
                }
            }
        }
        let sid = b.sid.clone();
        let path = Share::path_for(&b.root, &sid);
        let share = blocking(move || Share::create(path)).await?;
        let src = factory::choose(&sid, &b.config, &b.annotations);
        let vm = Qemu::new(b.root.clone(), src.config);
        Self::boot_vm(&b, sid, share, vm, src.origin).await
    }

    /// Wires the pod's network, brings VM `vm` up as `origin` says and
    /// readies its agent; on failure stops it and clears what it made.
    async fn boot_vm(
        b: &BootSpec,
        sid: String,
        share: Share,
        vm: Qemu,
        origin: Origin,
    ) -> Result<Arc<Sandbox>, ShimError> {
        let network = match &b.netns {
            None => None,
            Some(p) => match PodNetwork::setup(p).await {
                Ok(n) => Some(n),
                Err(source) => {
                    if let Err(e) = vm.stop_with(StopMode::Force).await {
                        tracing::warn!(sid, error = %e, "cannot stop the VM");
                    }
                    destroy_share(&sid, share).await;
                    return Err(ShimError::Network { sid, source });
                }
            },
        };
        let agent = match Self::start(&vm, &share, &sid, b, origin, network.as_ref()).await {
            Ok(a) => a,
            Err(e) => {
                if let Err(se) = vm.stop_with(StopMode::Force).await {
                    tracing::debug!(sid, error = %se, "cleanup of a failed boot");
                }
                if let Some(n) = network {
                    n.teardown().await;
                }
                destroy_share(&sid, share).await;
                return Err(e);
            }
        };
        let pid = vm
            .record()
            .and_then(|r| r.pid)
            .and_then(|p| u32::try_from(p).ok())
            .unwrap_or(0);
        let sb = Arc::new(Sandbox {
            sid,
            vm,
            agent,
            share,
            pid,
            origin,
            ended: watch::Sender::new(None),
            torn_down: Mutex::new(false),
            network: Mutex::new(network),
        });
        tokio::spawn(watch_vm(Arc::clone(&sb)));
        tracing::info!(sid = %sb.sid, pid, origin = origin.as_str(), "sandbox running");
        Ok(sb)
    }

    /// Brings the VM up (a cached one is resumed), plugs the pod's NICs,
    /// then [`Self::ready`].
    async fn start(
        vm: &Qemu,
        share: &Share,
        sid: &str,
        b: &BootSpec,
        origin: Origin,
        net: Option<&PodNetwork>,
    ) -> Result<AgentServiceClient, ShimError> {
        let taps: Vec<NetEndpoint> = net
            .iter()
            .flat_map(|n| &n.wired)
            .map(|w| NetEndpoint::TapFd {
                fd: Arc::clone(&w.fd),
                mac: Some(w.ep.mac.clone()),
            })
            .collect();
        // A cold boot has its NICs from boot (cold-plugged); a clone's
        // devices are the template's, and a cached VM runs already: their
        // NICs are hot-plugged once they run.
        let (cold, hot) = match origin {
            Origin::Cold => (taps, Vec::new()),
            Origin::Clone | Origin::Cached => (Vec::new(), taps),
        };
        if origin == Origin::Cached {
            vm.resume_vm()
                .await
                .map_err(hv(sid, "resume the cached VM"))?;
        } else {
            let opts = CreateOptions {
                share: Some(share.shared()),
                network: cold,
                annotations: b.annotations.clone(),
                template: origin.role(),
            };
            vm.create_vm(sid, opts).await.map_err(hv(sid, "create"))?;
            vm.start_vm(START_TIMEOUT).await.map_err(hv(sid, "start"))?;
        }
        for ep in hot {
            vm.hotplug_add_device(ep.into_device(String::new()))
                .await
                .map_err(hv(sid, "hot-plug a NIC"))?;
        }
        Self::ready(vm, sid, b, origin, net).await
    }

    /// Waits for the agent (the VM dying meanwhile ends the wait), sets a
    /// clone's or cached VM's clock, creates the guest's sandbox and
    /// configures its network.
    async fn ready(
        vm: &Qemu,
        sid: &str,
        b: &BootSpec,
        origin: Origin,
        net: Option<&PodNetwork>,
    ) -> Result<AgentServiceClient, ShimError> {
        let ep = agent_endpoint(
            vm.get_agent_socket()
                .map_err(hv(sid, "find the agent socket"))?,
        );
        tracing::info!(sid, endpoint = %ep, "waiting for the agent");
        let client = tokio::select! {
            r = wait_agent(&ep, AGENT_TIMEOUT) => r.map_err(|source| ShimError::Connect {
                sid: sid.to_string(),
                source,
            })?,
            exit = vm.wait_vm() => {
                let why = exit.map(|e| e.to_string()).unwrap_or_else(|e| e.to_string());
                return Err(ShimError::State(format!(
                    "Sandbox {sid}: the VM ended while it booted: {why}"
                )));
            }
        };
        tracing::info!(sid, agent = %client.versions.build, "agent ready");
        if origin != Origin::Cold {
            set_guest_clock(&client.agent).await?;
        }
        let fs = vm.hypervisor_config().shared_fs;
        let req = CreateSandboxRequest {
            sandbox_id: sid.to_string(),
            hostname: b.hostname.clone(),
            shared_fs_tag: SHARED_FS_TAG.to_string(),
            shared_fs_type: guest_fs_type(fs.kind).to_string(),
            msize_9p: fs.msize_9p,
            ..Default::default()
        };
        client
            .agent
            .create_sandbox(ctx(CALL_TIMEOUT), &req)
            .await
            .map_err(ShimError::agent("CreateSandbox"))?;
        if let Some(n) = net {
            configure_guest(&client.agent, n).await?;
        }
        Ok(client.agent)
    }

    /// Watches for the VM's end: resolves to `Some(status)` once it is gone.
    pub fn ended(&self) -> watch::Receiver<Option<u32>> {
        self.ended.subscribe()
    }

    /// The status processes get, once the VM is gone.
    pub fn end_status(&self) -> Option<u32> {
        *self.ended.borrow()
    }

    /// Stops the VM on purpose (its last container is deleted): processes
    /// still running exit as killed.
    pub async fn shutdown(&self) {
        self.teardown(KILLED_STATUS).await;
    }

    /// Marks the sandbox ended with `status`, kills QEMU (and its daemons),
    /// removes the sandbox folder and the share folder. Idempotent.
    async fn teardown(&self, status: u32) {
        let mut done = self.torn_down.lock().await;
        if *done {
            return;
        }
        self.ended.send_if_modified(|s| {
            if s.is_none() {
                *s = Some(status);
                true
            } else {
                false
            }
        });
        match self.vm.stop_with(StopMode::Force).await {
            Ok(r) => tracing::info!(sid = %self.sid, outcome = %r.outcome, "sandbox stopped"),
            Err(e) => tracing::warn!(sid = %self.sid, error = %e, "cannot stop the sandbox"),
        }
        if let Some(n) = self.network.lock().await.take() {
            n.teardown().await;
        }
        let share = self.share.clone();
        if let Err(e) = blocking(move || share.destroy()).await {
            tracing::warn!(sid = %self.sid, error = %e, "cannot clear the share folder");
        }
        *done = true;
    }
}

/// The error of runtime call `what` on sandbox `sid`.
fn hv(sid: &str, what: &'static str) -> impl FnOnce(runtime::HypervisorError) -> ShimError {
    let sid = sid.to_string();
    move |source| ShimError::Hypervisor {
        sid,
        what,
        source: Box::new(source),
    }
}

/// A VM from the warm cache, attached, when the config has a cache and the
/// sandbox asks for nothing its VMs lack; why not otherwise (logged). The
/// bundle's record names the VM from the moment it is taken, so `delete`
/// after a shim that died finds it.
async fn take_cached(b: &BootSpec) -> Option<(String, Qemu)> {
    let f = &b.config.factory;
    if f.vm_cache_number == 0 {
        return None;
    }
    if !b.annotations.is_empty() {
        tracing::warn!(sid = %b.sid, "hypervisor annotations: not taking a VM from the cache; booting one");
        return None;
    }
    let id = match vmcache::take(&f.vm_cache_endpoint, &b.config.source, b.root.path()).await {
        Ok(id) => id,
        Err(e) => {
            tracing::warn!(sid = %b.sid, error = %e, "no VM from the cache; booting one");
            return None;
        }
    };
    tracing::info!(sid = %b.sid, id, "took a VM from the cache");
    let got = match note_sandbox(b, &id).await {
        Ok(()) => attach_taken(&b.root, &id).await.map_err(|e| e.to_string()),
        Err(e) => Err(e.to_string()),
    };
    let why = match got {
        Ok(vm) if same_config(&vm.hypervisor_config(), &b.config) => return Some((id, vm)),
        Ok(vm) => {
            drop(vm);
            "its config is not the one this sandbox loaded (changed since the cache made it?)"
                .to_string()
        }
        Err(e) => e,
    };
    tracing::warn!(id, reason = %why, "cannot use the cached VM; booting one");
    discard(&b.root, &id).await;
    if let Err(e) = note_sandbox(b, &b.sid).await {
        tracing::warn!(sid = %b.sid, error = %e, "cannot record the sandbox in the bundle");
    }
    None
}

/// Whether a cached VM's config is the sandbox's, templating aside (the
/// cache boots cold when its template is missing).
fn same_config(vm: &HypervisorConfig, want: &HypervisorConfig) -> bool {
    let mut v = vm.clone();
    v.factory = want.factory.clone();
    v == *want
}

/// Records sandbox `id` in the bundle (when the spec names one): `delete`
/// reads it after a dead shim.
async fn note_sandbox(b: &BootSpec, id: &str) -> Result<(), ShimError> {
    let Some((bundle, rec)) = &b.record else {
        return Ok(());
    };
    rec.for_sandbox(&b.root, id).write(bundle).await?;
    Ok(())
}

/// How long a VM taken from the cache may stay busy: the cache lets go of
/// it as it answers, so only an instant's overlap is expected.
const ATTACH_WAIT: Duration = Duration::from_secs(5);

/// Attaches to cached VM `id`, waiting out a lock its server still holds.
async fn attach_taken(root: &StateRoot, id: &str) -> Result<Qemu, runtime::HypervisorError> {
    let start = tokio::time::Instant::now();
    loop {
        match Qemu::attach(root.clone(), id).await {
            Err(runtime::HypervisorError::State(runtime::StateError::Busy { .. }))
                if start.elapsed() < ATTACH_WAIT =>
            {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            r => return r,
        }
    }
}

/// Stops cached VM `id` the shim took but cannot use, and clears its
/// share folder.
async fn discard(root: &StateRoot, id: &str) {
    if let Err(e) = Qemu::force_cleanup(root, id).await {
        tracing::warn!(id, error = %e, "cannot stop a cached VM");
        return;
    }
    destroy_share(id, Share::at(Share::path_for(root, id))).await;
}

async fn destroy_share(sid: &str, share: Share) {
    if let Err(me) = blocking(move || share.destroy()).await {
        tracing::warn!(sid, error = %me, "cannot clear the share folder of a failed boot");
    }
}

/// The agent's name for the shared filesystem's type.
fn guest_fs_type(kind: SharedFs) -> &'static str {
    match kind {
        SharedFs::Virtio9p => "9p",
        _ => "virtiofs",
    }
}

/// A clone's clock is the template's, stopped when the template was saved:
/// the agent sets it to the host's time (Kata's SetGuestDateTime).
async fn set_guest_clock(agent: &AgentServiceClient) -> Result<(), ShimError> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let req = SetGuestDateTimeRequest {
        sec: i64::try_from(now.as_secs()).unwrap_or(i64::MAX),
        usec: i64::from(now.subsec_micros()),
        ..Default::default()
    };
    agent
        .set_guest_date_time(ctx(CALL_TIMEOUT), &req)
        .await
        .map_err(ShimError::agent("SetGuestDateTime"))?;
    Ok(())
}

/// Asks the agent for the pod's interfaces (UpdateInterface, each found by
/// its MAC), then their routes (UpdateRoutes).
async fn configure_guest(agent: &AgentServiceClient, n: &PodNetwork) -> Result<(), ShimError> {
    for w in &n.wired {
        let req = UpdateInterfaceRequest {
            interface: Some(network::guest::interface(&w.ep)).into(),
            ..Default::default()
        };
        let got = agent
            .update_interface(ctx(CALL_TIMEOUT), &req)
            .await
            .map_err(ShimError::agent("UpdateInterface"))?;
        tracing::info!(nic = %got.name, mac = %got.hw_addr, mtu = got.mtu, "guest interface set");
    }
    let eps: Vec<_> = n.wired.iter().map(|w| &w.ep).collect();
    let routes = network::guest::routes(&eps);
    if !routes.routes.is_empty() {
        let req = UpdateRoutesRequest {
            routes: Some(routes).into(),
            ..Default::default()
        };
        agent
            .update_routes(ctx(CALL_TIMEOUT), &req)
            .await
            .map_err(ShimError::agent("UpdateRoutes"))?;
    }
    Ok(())
}

/// Retries [`connect`] until the agent answers `Check` (a version mismatch is
/// final), with short attempts while the guest boots.
pub(crate) async fn wait_agent(
    ep: &AgentEndpoint,
    deadline: Duration,
) -> Result<AgentClient, ConnectError> {
    let start = tokio::time::Instant::now();
    loop {
        let per = if start.elapsed() < BOOT_PHASE {
            BOOT_ATTEMPT
        } else {
            DEFAULT_CONNECT_TIMEOUT
        };
        let left = deadline.saturating_sub(start.elapsed());
        match connect(ep, per.min(left).max(RETRY_PAUSE)).await {
            Ok(c) => return Ok(c),
            Err(e @ ConnectError::VersionMismatch { .. }) => return Err(e),
            Err(e) if start.elapsed() + RETRY_PAUSE >= deadline => {
                return Err(ConnectError::NotReady {
                    endpoint: ep.to_string(),
                    after: deadline,
                    last: Box::new(e),
                });
            }
            Err(e) => tracing::debug!(error = %e, "agent not ready yet"),
        }
        tokio::time::sleep(RETRY_PAUSE).await;
    }
}

/// Waits for the VM's end; one the shim did not ask for ends every process
/// of the sandbox with [`VM_DIED_STATUS`] and tears the sandbox down.
async fn watch_vm(sb: Arc<Sandbox>) {
    match sb.vm.wait_vm().await {
        Ok(exit) if exit.reason == ExitReason::Stopped => {
            tracing::debug!(sid = %sb.sid, "VM stopped by the shim");
        }
        Ok(exit) => {
            tracing::warn!(sid = %sb.sid, %exit, "the sandbox VM ended");
            sb.teardown(VM_DIED_STATUS).await;
        }
        Err(e) => {
            tracing::warn!(sid = %sb.sid, error = %e, "cannot wait for the sandbox VM");
            sb.teardown(VM_DIED_STATUS).await;
        }
    }
}
