//! One container: its cgroup, init process, execs, and the launch steps.

use std::collections::HashMap;
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use crate::cgroup::Cgroup;
use crate::config::{LaunchConfig, LaunchMode, Namespaces, ProcessConfig};
use crate::error::AgentError;
use crate::process::Process;
use crate::reaper::Reaper;
use crate::spawn::{self, Launched};
use crate::spec;
use crate::validate::check_inside;

/// Most execs one container may have at once.
pub const MAX_EXECS: usize = 1024;

/// A container in the guest.
#[derive(Debug)]
pub struct Container {
    /// Its id.
    pub id: String,
    /// Its cgroup.
    pub cgroup: Cgroup,
    /// The init process.
    pub init: Arc<Process>,
    namespaces: Namespaces,
    pending: Mutex<Option<(UnixStream, OwnedFd)>>,
    execs: Mutex<HashMap<String, Arc<Process>>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Runs a blocking launcher exchange off the async runtime.
async fn blocking<T: Send + 'static>(
    cid: &str,
    f: impl FnOnce() -> Result<T, String> + Send + 'static,
) -> Result<T, AgentError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| AgentError::Launch {
            cid: cid.to_string(),
            msg: format!("launch task failed: {e}"),
        })?
        .map_err(|msg| AgentError::Launch {
            cid: cid.to_string(),
            msg,
        })
}

impl Container {
    /// Checks and rewrites the spec, makes the cgroup, and launches the init
    /// process up to the point where it waits for StartContainer.
    pub async fn create(
        reaper: &Arc<Reaper>,
        cgroup_parent: &Path,
        shared: &Path,
        cid: &str,
        spec_json: &[u8],
    ) -> Result<Self, AgentError> {
        let plan = spec::rewrite(cid, spec_json, shared)?;
        let root = check_inside(
            shared,
            &format!("root of container {cid}"),
            &plan.container.rootfs,
        )?;
        if !root.is_dir() {
            return Err(AgentError::Invalid(format!(
                "Root of container {cid} ({}) is not a directory",
                root.display()
            )));
        }
        let mut container = plan.container;
        container.rootfs = root;
        for m in container.mounts.iter_mut().filter(|m| m.bind > 0) {
            let what = format!("mount source for {}", m.destination.display());
            m.source = check_inside(shared, &what, &m.source)?;
        }
        let namespaces = container.namespaces;
        let cgroup = Cgroup::create(cgroup_parent, cid, &plan.limits)
            .await
            .map_err(|e| AgentError::io(format!("creating the cgroup of container {cid}"), e))?;
        let cfg = LaunchConfig {
            cgroup: cgroup.path.clone(),
            mode: LaunchMode::Create(container),
            process: plan.process,
        };
        let r = Arc::clone(reaper);
        let launched = match blocking(cid, move || spawn::launch(&r, cfg)).await {
            Ok(l) => l,
            Err(e) => {
                if let Err(re) = cgroup.remove().await {
                    tracing::warn!(cid, error = %re, "cannot remove the cgroup of a failed container");
                }
                return Err(e);
            }
        };
        let pid = launched.pid;
        Self::assemble(cid, cgroup, namespaces, launched)
            .inspect(|_| tracing::info!(cid, pid, "container created"))
    }

    fn assemble(
        cid: &str,
        cgroup: Cgroup,
        namespaces: Namespaces,
        mut l: Launched,
    ) -> Result<Self, AgentError> {
        let pending = l.pending.take();
        let init = Process::new(l).map_err(|e| AgentError::io("setting up the init's stdio", e))?;
        Ok(Self {
            id: cid.to_string(),
            cgroup,
            init: Arc::new(init),
            namespaces,
            pending: Mutex::new(pending),
            execs: Mutex::new(HashMap::new()),
        })
    }

    /// Lets the init process exec.
    pub async fn start(&self) -> Result<(), AgentError> {
        let (sync, start) = lock(&self.pending).take().ok_or_else(|| {
            AgentError::State(format!("Container {} was already started", self.id))
        })?;
        blocking(&self.id, move || spawn::start(sync, start)).await?;
        tracing::info!(cid = %self.id, pid = self.init.pid, "container started");
        Ok(())
    }

    /// Started and its init still running.
    pub fn running(&self) -> bool {
        lock(&self.pending).is_none() && self.init.exited().is_none()
    }

    /// Starts a process in the container's namespaces and cgroup.
    pub async fn exec(
        &self,
        reaper: &Arc<Reaper>,
        exec_id: &str,
        process: ProcessConfig,
    ) -> Result<(), AgentError> {
        if !self.running() {
            return Err(AgentError::State(format!(
                "Container {} is not running",
                self.id
            )));
        }
        if self.cgroup.frozen().await {
            return Err(AgentError::State(format!(
                "Container {} is paused",
                self.id
            )));
        }
        {
            let execs = lock(&self.execs);
            if execs.contains_key(exec_id) {
                return Err(AgentError::Exists {
                    what: "exec",
                    id: exec_id.to_string(),
                });
            }
            if execs.len() >= MAX_EXECS {
                return Err(AgentError::State(format!(
                    "Container {} has {MAX_EXECS} execs already",
                    self.id
                )));
            }
        }
        let cfg = LaunchConfig {
            cgroup: self.cgroup.path.clone(),
            mode: LaunchMode::Exec {
                init_pid: self.init.pid,
                namespaces: self.namespaces,
            },
            process,
        };
        let r = Arc::clone(reaper);
        let launched = blocking(&self.id, move || spawn::launch(&r, cfg)).await?;
        let p =
            Process::new(launched).map_err(|e| AgentError::io("setting up the exec's stdio", e))?;
        tracing::info!(cid = %self.id, exec_id, pid = p.pid, "exec started");
        let mut execs = lock(&self.execs);
        if execs.contains_key(exec_id) {
            return Err(AgentError::Exists {
                what: "exec",
                id: exec_id.to_string(),
            });
        }
        execs.insert(exec_id.to_string(), Arc::new(p));
        Ok(())
    }

    /// The init ("") or an exec.
    pub fn process(&self, exec_id: &str) -> Result<Arc<Process>, AgentError> {
        if exec_id.is_empty() {
            return Ok(Arc::clone(&self.init));
        }
        lock(&self.execs)
            .get(exec_id)
            .cloned()
            .ok_or_else(|| AgentError::NotFound {
                what: "exec",
                id: exec_id.to_string(),
            })
    }

    /// Forgets an exec that has been waited for and drained.
    pub fn forget_if_finished(&self, exec_id: &str) {
        if exec_id.is_empty() {
            return;
        }
        let mut execs = lock(&self.execs);
        if execs.get(exec_id).is_some_and(|p| p.finished()) {
            execs.remove(exec_id);
            tracing::debug!(cid = %self.id, exec_id, "exec forgotten");
        }
    }

    /// Kills everything, waits for the init to be reaped, removes the cgroup.
    pub async fn destroy(&self, timeout: Duration) -> Result<(), AgentError> {
        lock(&self.pending).take(); // a never-started init reads EOF and exits
        self.cgroup.remove().await.map_err(|e| {
            AgentError::io(format!("removing the cgroup of container {}", self.id), e)
        })?;
        if tokio::time::timeout(timeout, self.init.wait())
            .await
            .is_err()
        {
            return Err(AgentError::State(format!(
                "Container {}: init (pid {}) not reaped in {timeout:?}",
                self.id, self.init.pid
            )));
        }
        tracing::info!(cid = %self.id, "container removed");
        Ok(())
    }
}
