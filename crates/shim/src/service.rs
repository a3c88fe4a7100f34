//! The task service containerd calls (task API v2): one per shim, holding
//! the shim's sandbox and its containers.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex as SyncMutex, MutexGuard};

use containerd_shim::asynchronous::ExitSignal;
use containerd_shim_protos::api::{self, CreateTaskRequest, CreateTaskResponse};
use runtime::StateRoot;
use tokio::sync::Mutex;

use crate::bundle::{self, Record, Role};
use crate::config;
use crate::container::Container;
use crate::create::{self, NewContainer};
use crate::error::ShimError;
use crate::events::Events;
use crate::ids;
use crate::mounts;
use crate::process::Stdio;
use crate::sandbox::{BootSpec, Sandbox};
use crate::share::{Share, blocking};

/// The shim's state behind the task service.
pub struct Service {
    /// containerd's namespace of this shim.
    pub namespace: String,
    /// Events to containerd.
    pub events: Arc<Events>,
    /// Set when the shim may exit.
    pub exit: Arc<ExitSignal>,
    /// The shim's ttrpc socket (removed when the shim exits).
    pub socket: String,
    /// The sandbox, once the first container booted it.
    sandbox: Mutex<Option<Arc<Sandbox>>>,
    containers: SyncMutex<HashMap<String, Arc<Container>>>,
}

fn lock<T>(m: &SyncMutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl std::fmt::Debug for Service {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Service")
            .field("namespace", &self.namespace)
            .field("containers", &self.count())
            .finish_non_exhaustive()
    }
}

impl Service {
    /// A service with no sandbox yet.
    pub fn new(namespace: String, events: Events, exit: Arc<ExitSignal>, socket: String) -> Self {
        Service {
            namespace,
            events: Arc::new(events),
            exit,
            socket,
            sandbox: Mutex::new(None),
            containers: SyncMutex::new(HashMap::new()),
        }
    }

    /// A container of this shim.
    pub fn container(&self, id: &str) -> Result<Arc<Container>, ShimError> {
        lock(&self.containers)
            .get(id)
            .cloned()
            .ok_or_else(|| ShimError::NoContainer(id.to_string()))
    }

    /// How many containers the shim holds.
    pub fn count(&self) -> usize {
        lock(&self.containers).len()
    }

    /// Create: boots the sandbox for its first container, then creates the
    /// container in it. Leaves nothing behind on failure.
    pub async fn create(&self, req: CreateTaskRequest) -> Result<CreateTaskResponse, ShimError> {
        if lock(&self.containers).contains_key(&req.id) {
            return Err(ShimError::Exists {
                what: "Container",
                id: req.id.clone(),
            });
        }
        if !req.checkpoint.is_empty() {
            return Err(ShimError::NotImplemented("Restoring a checkpoint"));
        }
        let bundle = PathBuf::from(&req.bundle);
        let spec = bundle::read_spec(&bundle).await?;
        let role = bundle::role(spec.annotations().as_ref());
        let group = match &role {
            Role::Member(sb) => sb.clone(),
            Role::Sandbox => req.id.clone(),
        };
        let root = StateRoot::from_env();
        let sid = ids::sandbox_id(&self.namespace, &group);
        let gcid = ids::guest_id(&req.id);
        let record = Record {
            sandbox_id: sid.clone(),
            state_root: root.path().to_path_buf(),
            share: Share::path_for(&root, &sid),
            guest_id: gcid.clone(),
        };
        record.write(&bundle).await?;
        create::check_sources(&spec).await?;
        let (rootfs, mounted) = create::mount_rootfs(&req, &bundle, &spec).await?;
        let terminal = req.terminal
            || spec
                .process()
                .as_ref()
                .and_then(|p| p.terminal())
                .unwrap_or(false);
        let n = NewContainer {
            id: req.id.clone(),
            gcid,
            bundle: bundle.clone(),
            spec,
            role,
            stdio: Stdio {
                stdin: req.stdin.clone(),
                stdout: req.stdout.clone(),
                stderr: req.stderr.clone(),
                terminal,
            },
            root: rootfs,
            rootfs_mounted: mounted,
            record,
        };
        let r = self.create_in_sandbox(&req, root, sid, n).await;
        if r.is_err() && mounted {
            let target = bundle.join("rootfs");
            if let Err(e) = blocking(move || mounts::umount_all(&target)).await {
                tracing::warn!(cid = %req.id, error = %e, "cannot unmount the root filesystem");
            }
        }
        r
    }

    async fn create_in_sandbox(
        &self,
        req: &CreateTaskRequest,
        root: StateRoot,
        sid: String,
        n: NewContainer,
    ) -> Result<CreateTaskResponse, ShimError> {
        let (sb, booted) = self.sandbox_for(req, root.clone(), sid.clone(), &n).await?;
        if sb.sid != sid {
            // a VM from the cache keeps its id: `delete` must find that one
            let rec = n.record.for_sandbox(&root, &sb.sid);
            if let Err(e) = rec.write(&n.bundle).await {
                if booted {
                    sb.shutdown().await;
                    *self.sandbox.lock().await = None;
                }
                return Err(e.into());
            }
        }
        let stdio = n.stdio.clone();
        match create::create_container(&sb, &self.events, n).await {
            Ok(c) => {
                lock(&self.containers).insert(c.id.clone(), Arc::clone(&c));
                self.events
                    .create(&c.id, &req.bundle, &stdio, c.pid())
                    .await;
                Ok(CreateTaskResponse {
                    pid: c.pid(),
                    ..Default::default()
                })
            }
            Err(e) => {
                if booted {
                    sb.shutdown().await;
                    *self.sandbox.lock().await = None;
                }
                Err(e)
            }
        }
    }

    /// The shim's sandbox; the first container (a pod's sandbox container,
    /// or a container of its own) boots it.
    async fn sandbox_for(
        &self,
        req: &CreateTaskRequest,
        root: StateRoot,
        sid: String,
        n: &NewContainer,
    ) -> Result<(Arc<Sandbox>, bool), ShimError> {
        let mut slot = self.sandbox.lock().await;
        if let Some(sb) = slot.as_ref() {
            if sb.end_status().is_some() {
                return Err(ShimError::VmEnded(n.id.clone()));
            }
            return Ok((Arc::clone(sb), false));
        }
        if let Role::Member(pod) = &n.role {
            return Err(ShimError::State(format!(
                "Container {} belongs to pod {pod}, whose sandbox is not running in this shim",
                n.id
            )));
        }
        let explicit = config::config_path_from_options(req.options.as_ref())?;
        let path = config::find(explicit).await?;
        tracing::info!(cid = %n.id, sid, config = %path.display(), "booting the sandbox");
        let cfg = config::load(&path).await?;
        let annotations = bundle::hypervisor_annotations(n.spec.annotations().as_ref());
        let hostname = n.spec.hostname().clone().unwrap_or_default();
        let netns = crate::network::netns_path(&n.spec);
        let sb = Sandbox::boot(BootSpec {
            sid,
            root,
            config: cfg,
            annotations,
            hostname,
            netns,
            record: Some((n.bundle.clone(), n.record.clone())),
        })
        .await?;
        *slot = Some(Arc::clone(&sb));
        Ok((sb, true))
    }

    /// Delete of a container's init: removed from the guest and the shim;
    /// the sandbox goes with the pod's sandbox container or the last
    /// container.
    pub async fn delete_container(&self, c: &Arc<Container>) -> (u32, std::time::SystemTime) {
        let exit = c.remove().await;
        let last = {
            let mut map = lock(&self.containers);
            map.remove(&c.id);
            map.is_empty()
        };
        if c.role == Role::Sandbox || last {
            let mut slot = self.sandbox.lock().await;
            if let Some(sb) = slot.as_ref().filter(|sb| Arc::ptr_eq(sb, &c.sandbox)) {
                sb.shutdown().await;
                *slot = None;
            }
        }
        self.events.delete(&c.id, c.pid(), exit.0, exit.1).await;
        exit
    }

    /// Shutdown: with no container left, stops what is left and lets the
    /// shim exit.
    pub async fn shutdown(&self) {
        if self.count() > 0 {
            return;
        }
        if let Some(sb) = self.sandbox.lock().await.take() {
            sb.shutdown().await;
        }
        remove_socket(&self.socket).await;
        self.exit.signal();
    }

    /// The request's `exec_id`-named process's state for State.
    pub fn state(&self, req: &api::StateRequest) -> Result<api::StateResponse, ShimError> {
        use containerd_shim_protos::api::Status;
        let c = self.container(&req.id)?;
        let p = c.process(&req.exec_id)?;
        let mut r = api::StateResponse {
            id: req.id.clone(),
            bundle: c.bundle.display().to_string(),
            pid: c.pid(),
            stdin: p.stdio.stdin.clone(),
            stdout: p.stdio.stdout.clone(),
            stderr: p.stdio.stderr.clone(),
            terminal: p.stdio.terminal,
            exec_id: req.exec_id.clone(),
            ..Default::default()
        };
        let status = match p.state() {
            crate::process::State::Created => Status::CREATED,
            crate::process::State::Running if req.exec_id.is_empty() && c.paused() => {
                Status::PAUSED
            }
            crate::process::State::Running => Status::RUNNING,
            crate::process::State::Exited { status, at } => {
                r.exit_status = status;
                r.exited_at = Some(crate::events::timestamp(at)).into();
                Status::STOPPED
            }
        };
        r.status = status.into();
        Ok(r)
    }
}

/// Removes the shim's socket file (containerd's `unix://` address).
pub async fn remove_socket(address: &str) {
    let path = address.trim_start_matches("unix://");
    if path.is_empty() {
        return;
    }
    match tokio::fs::remove_file(path).await {
        Ok(()) => tracing::debug!(path, "socket removed"),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => tracing::warn!(path, error = %e, "cannot remove the shim's socket"),
    }
}
