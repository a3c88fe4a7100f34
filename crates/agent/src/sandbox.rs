//! The sandbox: the guest-wide state behind the service (containers, the
//! shared folder, hostname and DNS).

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use nix::mount::{MntFlags, MsFlags, mount, umount2};
use sandvm_agent_protocol::GUEST_SHARED_DIR;

use crate::container::Container;
use crate::error::AgentError;
use crate::reaper::Reaper;
use crate::shared_fs::{SharedMount, shared_mount};

/// Most containers one sandbox may hold.
pub const MAX_CONTAINERS: usize = 256;

/// Default wait for a removed container's init to be reaped.
pub const DEFAULT_REMOVE_TIMEOUT: Duration = Duration::from_secs(10);

/// CreateSandbox's shared-folder fields, as given.
#[derive(Debug, Clone, Copy, Default)]
pub struct SharedFolder<'a> {
    /// Mount tag ("" = no shared folder).
    pub tag: &'a str,
    /// "" or "virtiofs", or "9p".
    pub fs_type: &'a str,
    /// 9p msize (0 = the default).
    pub msize_9p: u32,
}

/// Guest-wide agent state.
#[derive(Debug)]
pub struct Sandbox {
    /// Reaps every child.
    pub reaper: Arc<Reaper>,
    cgroup_parent: PathBuf,
    shared: PathBuf,
    containers: Mutex<HashMap<String, Arc<Container>>>,
    creating: Mutex<HashSet<String>>,
    sandbox_id: Mutex<Option<String>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Removes the id from `creating` when a create ends, however it ends.
struct Creating<'a>(&'a Sandbox, String);

impl Drop for Creating<'_> {
    fn drop(&mut self) {
        lock(&self.0.creating).remove(&self.1);
    }
}

impl Sandbox {
    /// A sandbox with containers' cgroups under `cgroup_parent`.
    pub fn new(reaper: Arc<Reaper>, cgroup_parent: PathBuf) -> Self {
        Self {
            reaper,
            cgroup_parent,
            shared: PathBuf::from(GUEST_SHARED_DIR),
            containers: Mutex::new(HashMap::new()),
            creating: Mutex::new(HashSet::new()),
            sandbox_id: Mutex::new(None),
        }
    }

    /// CreateSandbox: hostname, DNS and the shared folder (see
    /// [`shared_mount`] for `shared`'s tag, type and 9p msize).
    pub async fn create(
        &self,
        id: &str,
        hostname: &str,
        dns: &[String],
        shared: SharedFolder<'_>,
    ) -> Result<(), AgentError> {
        if !id.is_empty() {
            crate::validate::check_id("sandbox id", id)?;
        }
        let mount = shared_mount(shared.tag, shared.fs_type, shared.msize_9p)?;
        if !hostname.is_empty() {
            if hostname.len() > 64
                || !hostname
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-.".contains(&b))
            {
                return Err(AgentError::Invalid(format!(
                    "Invalid hostname {hostname:?}"
                )));
            }
            nix::unistd::sethostname(hostname).map_err(|e| AgentError::io("sethostname", e))?;
        }
        if !dns.is_empty() {
            if dns.iter().any(|l| l.contains('\n') || l.len() > 256) || dns.len() > 64 {
                return Err(AgentError::Invalid(
                    "Invalid dns lines (newlines, over 256 bytes or over 64 lines)".into(),
                ));
            }
            let text: String = dns.iter().map(|l| format!("{l}\n")).collect();
            if let Err(e) = tokio::fs::write("/etc/resolv.conf", text).await {
                tracing::warn!(error = %e, "cannot write /etc/resolv.conf (read-only guest root?)");
            }
        }
        if let Some(m) = &mount {
            self.mount_shared(m).await?;
        }
        *lock(&self.sandbox_id) = (!id.is_empty()).then(|| id.to_string());
        tracing::info!(
            sandbox_id = id,
            hostname,
            shared_fs_tag = shared.tag,
            shared_fs = mount.as_ref().map_or("none", |m| m.fstype),
            "sandbox created"
        );
        Ok(())
    }

    async fn mount_shared(&self, m: &SharedMount) -> Result<(), AgentError> {
        if mounted(&self.shared).await {
            return Ok(());
        }
        tokio::fs::create_dir_all(&self.shared)
            .await
            .map_err(|e| AgentError::io(format!("creating {}", self.shared.display()), e))?;
        mount(
            Some(m.tag.as_str()),
            &self.shared,
            Some(m.fstype),
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
            m.data.as_deref(),
        )
        .map_err(|e| {
            AgentError::io(
                format!("mounting {} on {}", m.describe(), self.shared.display()),
                e,
            )
        })
    }

    /// DestroySandbox: removes every container, unmounts the shared folder.
    pub async fn destroy(&self) -> Result<(), AgentError> {
        let all: Vec<Arc<Container>> = lock(&self.containers).values().cloned().collect();
        let mut first_err = None;
        for c in all {
            match c.destroy(DEFAULT_REMOVE_TIMEOUT).await {
                Ok(()) => {
                    lock(&self.containers).remove(&c.id);
                }
                Err(e) => {
                    tracing::warn!(cid = %c.id, error = %e, "cannot remove container");
                    first_err.get_or_insert(e);
                }
            }
        }
        if mounted(&self.shared).await {
            umount2(&self.shared, MntFlags::MNT_DETACH)
                .map_err(|e| AgentError::io("unmounting the shared folder", e))?;
        }
        tracing::info!("sandbox destroyed");
        first_err.map_or(Ok(()), Err)
    }

    /// CreateContainer.
    pub async fn create_container(&self, cid: &str, spec: &[u8]) -> Result<(), AgentError> {
        crate::validate::check_id("container id", cid)?;
        if spec.len() > sandvm_agent_protocol::MAX_SPEC_LEN {
            return Err(AgentError::Invalid(format!(
                "OCI spec of {} bytes (limit {})",
                spec.len(),
                sandvm_agent_protocol::MAX_SPEC_LEN
            )));
        }
        {
            let containers = lock(&self.containers);
            let mut creating = lock(&self.creating);
            if containers.contains_key(cid) || creating.contains(cid) {
                return Err(AgentError::Exists {
                    what: "container",
                    id: cid.to_string(),
                });
            }
            if containers.len() + creating.len() >= MAX_CONTAINERS {
                return Err(AgentError::State(format!(
                    "The sandbox has {MAX_CONTAINERS} containers already"
                )));
            }
            creating.insert(cid.to_string());
        }
        let _guard = Creating(self, cid.to_string());
        let c =
            Container::create(&self.reaper, &self.cgroup_parent, &self.shared, cid, spec).await?;
        lock(&self.containers).insert(cid.to_string(), Arc::new(c));
        Ok(())
    }

    /// Looks a container up (the id is checked first).
    pub fn container(&self, cid: &str) -> Result<Arc<Container>, AgentError> {
        crate::validate::check_id("container id", cid)?;
        lock(&self.containers)
            .get(cid)
            .cloned()
            .ok_or_else(|| AgentError::NotFound {
                what: "container",
                id: cid.to_string(),
            })
    }

    /// RemoveContainer.
    pub async fn remove_container(&self, cid: &str, timeout: Duration) -> Result<(), AgentError> {
        let c = self.container(cid)?;
        c.destroy(timeout).await?;
        lock(&self.containers).remove(cid);
        Ok(())
    }
}

async fn mounted(dir: &Path) -> bool {
    let mounts = tokio::fs::read_to_string("/proc/self/mounts")
        .await
        .unwrap_or_default();
    let d = dir.to_string_lossy();
    mounts
        .lines()
        .any(|l| l.split_whitespace().nth(1) == Some(&d))
}
