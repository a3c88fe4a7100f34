//! One container of the sandbox: its init, its execs, and what each task
//! request does to them through the agent.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use containerd_shim_protos::cgroups_v2::metrics::{CPUStat, MemoryStat, Metrics, PidsStat};
use containerd_shim_protos::protobuf::MessageField;
use containerd_shim_protos::ttrpc::context::Context;
use sandvm_agent_protocol::agent::{
    ExecProcessRequest, ListProcessesRequest, PauseContainerRequest, RemoveContainerRequest,
    ResumeContainerRequest, SignalProcessRequest, StartContainerRequest, StatsContainerRequest,
    TtyWinResizeRequest, WaitProcessRequest,
};
use sandvm_agent_protocol::ctx;
use tokio::task::JoinHandle;

use crate::bundle::Role;
use crate::error::ShimError;
use crate::events::Events;
use crate::ids;
use crate::io;
use crate::mounts;
use crate::process::{Proc, State, Stdio};
use crate::sandbox::{CALL_TIMEOUT, KILLED_STATUS, Sandbox, VM_DIED_STATUS};
use crate::share::blocking;

/// How long an exited process's output may take to drain before its exit
/// is reported anyway.
const OUTPUT_DRAIN: Duration = Duration::from_secs(5);

/// How long a process whose agent connection broke waits for the VM's end
/// to learn its status.
const ENDED_WAIT: Duration = Duration::from_secs(10);

/// A container.
#[derive(Debug)]
pub struct Container {
    /// containerd's id.
    pub id: String,
    /// The guest's id (its folder in the share).
    pub gcid: String,
    /// The bundle.
    pub bundle: PathBuf,
    /// Its place in a pod.
    pub role: Role,
    /// Its sandbox.
    pub sandbox: Arc<Sandbox>,
    /// The init process.
    pub init: Arc<Proc>,
    /// Whether the shim mounted `<bundle>/rootfs` (and unmounts it).
    pub rootfs_mounted: bool,
    /// Events to containerd.
    pub events: Arc<Events>,
    execs: Mutex<HashMap<String, Arc<Proc>>>,
    paused: AtomicBool,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The parts a new container is made of (see [`Container::new`]).
#[derive(Debug)]
pub struct Parts {
    /// containerd's id.
    pub id: String,
    /// The guest's id.
    pub gcid: String,
    /// The bundle.
    pub bundle: PathBuf,
    /// Its role.
    pub role: Role,
    /// Its sandbox.
    pub sandbox: Arc<Sandbox>,
    /// The init's standard I/O.
    pub stdio: Stdio,
    /// Whether the shim mounted the root.
    pub rootfs_mounted: bool,
    /// Events.
    pub events: Arc<Events>,
}

impl Container {
    /// A container whose init the agent has created.
    pub fn new(p: Parts) -> Container {
        Container {
            init: Arc::new(Proc::new("", String::new(), p.stdio, None)),
            id: p.id,
            gcid: p.gcid,
            bundle: p.bundle,
            role: p.role,
            sandbox: p.sandbox,
            rootfs_mounted: p.rootfs_mounted,
            events: p.events,
            execs: Mutex::new(HashMap::new()),
            paused: AtomicBool::new(false),
        }
    }

    /// The pid containerd sees: QEMU's.
    pub fn pid(&self) -> u32 {
        self.sandbox.pid
    }

    /// Paused by Pause (and not resumed).
    pub fn paused(&self) -> bool {
        self.paused.load(Ordering::SeqCst)
    }

    /// The init (`""`) or an exec.
    pub fn process(&self, exec_id: &str) -> Result<Arc<Proc>, ShimError> {
        if exec_id.is_empty() {
            return Ok(Arc::clone(&self.init));
        }
        lock(&self.execs)
            .get(exec_id)
            .cloned()
            .ok_or_else(|| ShimError::NoExec {
                cid: self.id.clone(),
                exec: exec_id.to_string(),
            })
    }

    fn running(&self) -> Result<(), ShimError> {
        if self.sandbox.end_status().is_some() {
            return Err(ShimError::VmEnded(self.id.clone()));
        }
        Ok(())
    }

    /// Start: lets the init run.
    pub async fn start_init(&self) -> Result<u32, ShimError> {
        self.running()?;
        if self.init.state() != State::Created {
            return Err(ShimError::State(format!(
                "Container {} was started already",
                self.id
            )));
        }
        let req = StartContainerRequest {
            container_id: self.gcid.clone(),
            ..Default::default()
        };
        self.sandbox
            .agent
            .start_container(ctx(CALL_TIMEOUT), &req)
            .await
            .map_err(ShimError::agent("StartContainer"))?;
        self.init.set_running();
        self.events.start(&self.id, self.pid()).await;
        Ok(self.pid())
    }

    /// Exec: records a process to start later.
    pub async fn add_exec(
        &self,
        exec_id: &str,
        stdio: Stdio,
        spec: Vec<u8>,
    ) -> Result<(), ShimError> {
        self.running()?;
        {
            let mut execs = lock(&self.execs);
            if execs.contains_key(exec_id) {
                return Err(ShimError::Exists {
                    what: "Exec",
                    id: exec_id.to_string(),
                });
            }
            let p = Proc::new(exec_id, ids::guest_id(exec_id), stdio, Some(spec));
            execs.insert(exec_id.to_string(), Arc::new(p));
        }
        self.events.exec_added(&self.id, exec_id).await;
        Ok(())
    }

    /// Start of an exec: the agent runs it.
    pub async fn start_exec(self: &Arc<Self>, exec_id: &str) -> Result<u32, ShimError> {
        self.running()?;
        let p = self.process(exec_id)?;
        if p.state() != State::Created {
            return Err(ShimError::State(format!(
                "Exec {exec_id} was started already"
            )));
        }
        let opened = io::open(&p.stdio).await?;
        let req = ExecProcessRequest {
            container_id: self.gcid.clone(),
            exec_id: p.guest_exec.clone(),
            process_json: p.spec.clone().unwrap_or_default(),
            ..Default::default()
        };
        self.sandbox
            .agent
            .exec_process(ctx(CALL_TIMEOUT), &req)
            .await
            .map_err(ShimError::agent("ExecProcess"))?;
        p.set_running();
        let output = io::start(&self.sandbox.agent, &self.gcid, &p, opened).await;
        watch_exit(Arc::clone(self), Arc::clone(&p), output);
        self.events
            .exec_started(&self.id, exec_id, self.pid())
            .await;
        Ok(self.pid())
    }

    /// Kill: a signal to one process, or to all of the container's.
    pub async fn kill(&self, exec_id: &str, signal: u32, all: bool) -> Result<(), ShimError> {
        let p = self.process(exec_id)?;
        let name = if exec_id.is_empty() {
            &self.id
        } else {
            exec_id
        };
        if p.exit().is_some() || self.sandbox.end_status().is_some() {
            return Err(ShimError::Finished(name.to_string()));
        }
        if !exec_id.is_empty() && p.state() == State::Created {
            // never started: nothing runs in the guest
            p.set_exited(KILLED_STATUS);
            return Ok(());
        }
        let req = SignalProcessRequest {
            container_id: self.gcid.clone(),
            exec_id: p.guest_exec.clone(),
            signal,
            all,
            ..Default::default()
        };
        self.sandbox
            .agent
            .signal_process(ctx(CALL_TIMEOUT), &req)
            .await
            .map_err(ShimError::agent("SignalProcess"))?;
        Ok(())
    }

    /// Delete of an exec: it must have exited (or never started).
    pub fn delete_exec(&self, exec_id: &str) -> Result<(u32, SystemTime), ShimError> {
        let p = self.process(exec_id)?;
        let exit = match p.state() {
            State::Running => {
                return Err(ShimError::State(format!("Exec {exec_id} is still running")));
            }
            State::Created => (0, SystemTime::now()),
            State::Exited { status, at } => (status, at),
        };
        p.abort_tasks();
        lock(&self.execs).remove(exec_id);
        Ok(exit)
    }

    /// Delete of the init: the guest forgets the container, its mounts go.
    /// Processes still there exit as killed.
    pub async fn remove(&self) -> (u32, SystemTime) {
        if self.sandbox.end_status().is_none() {
            let req = RemoveContainerRequest {
                container_id: self.gcid.clone(),
                ..Default::default()
            };
            if let Err(e) = self
                .sandbox
                .agent
                .remove_container(ctx(CALL_TIMEOUT), &req)
                .await
            {
                tracing::warn!(cid = %self.id, error = %e, "RemoveContainer failed");
            }
        }
        let procs: Vec<Arc<Proc>> = lock(&self.execs).drain().map(|(_, p)| p).collect();
        for p in procs.iter().chain([&self.init]) {
            p.set_exited(KILLED_STATUS);
            p.abort_tasks();
        }
        let (share, gcid) = (self.sandbox.share.clone(), self.gcid.clone());
        if let Err(e) = blocking(move || share.remove_container(&gcid)).await {
            tracing::warn!(cid = %self.id, error = %e, "cannot unmount the container's share");
        }
        if self.rootfs_mounted {
            let root = self.bundle.join("rootfs");
            if let Err(e) = blocking(move || mounts::umount_all(&root)).await {
                tracing::warn!(cid = %self.id, error = %e, "cannot unmount the root filesystem");
            }
        }
        self.init
            .exit()
            .unwrap_or((KILLED_STATUS, SystemTime::now()))
    }

    /// Pause or Resume: freezes or thaws the container's processes.
    pub async fn set_paused(&self, on: bool) -> Result<(), ShimError> {
        self.running()?;
        let agent = &self.sandbox.agent;
        let gcid = self.gcid.clone();
        if on {
            let req = PauseContainerRequest {
                container_id: gcid,
                ..Default::default()
            };
            agent
                .pause_container(ctx(CALL_TIMEOUT), &req)
                .await
                .map_err(ShimError::agent("PauseContainer"))?;
            self.paused.store(true, Ordering::SeqCst);
            self.events.paused(&self.id).await;
        } else {
            let req = ResumeContainerRequest {
                container_id: gcid,
                ..Default::default()
            };
            agent
                .resume_container(ctx(CALL_TIMEOUT), &req)
                .await
                .map_err(ShimError::agent("ResumeContainer"))?;
            self.paused.store(false, Ordering::SeqCst);
            self.events.resumed(&self.id).await;
        }
        Ok(())
    }

    /// Pids: the container's processes, as pids of the guest.
    pub async fn pids(&self) -> Result<Vec<u32>, ShimError> {
        if self.sandbox.end_status().is_some() {
            return Ok(Vec::new());
        }
        let req = ListProcessesRequest {
            container_id: self.gcid.clone(),
            ..Default::default()
        };
        let r = self
            .sandbox
            .agent
            .list_processes(ctx(CALL_TIMEOUT), &req)
            .await
            .map_err(ShimError::agent("ListProcesses"))?;
        Ok(r.pids
            .into_iter()
            .filter_map(|p| u32::try_from(p).ok())
            .collect())
    }

    /// Stats: the container's cgroup in the guest, as cgroup v2 metrics.
    pub async fn metrics(&self) -> Result<Metrics, ShimError> {
        self.running()?;
        let req = StatsContainerRequest {
            container_id: self.gcid.clone(),
            ..Default::default()
        };
        let s = self
            .sandbox
            .agent
            .stats_container(ctx(CALL_TIMEOUT), &req)
            .await
            .map_err(ShimError::agent("StatsContainer"))?;
        let cpu = s.cpu.clone().unwrap_or_default();
        let mem = s.memory.clone().unwrap_or_default();
        let pids = s.pids.clone().unwrap_or_default();
        Ok(Metrics {
            cpu: MessageField::some(CPUStat {
                usage_usec: cpu.usage_usec,
                user_usec: cpu.user_usec,
                system_usec: cpu.system_usec,
                ..Default::default()
            }),
            memory: MessageField::some(MemoryStat {
                usage: mem.usage_bytes,
                usage_limit: mem.limit_bytes,
                anon: mem.anon_bytes,
                file: mem.file_bytes,
                ..Default::default()
            }),
            pids: MessageField::some(PidsStat {
                current: pids.current,
                limit: pids.limit,
                ..Default::default()
            }),
            ..Default::default()
        })
    }

    /// ResizePty: the terminal's new size.
    pub async fn resize(&self, exec_id: &str, width: u32, height: u32) -> Result<(), ShimError> {
        self.running()?;
        let p = self.process(exec_id)?;
        let req = TtyWinResizeRequest {
            container_id: self.gcid.clone(),
            exec_id: p.guest_exec.clone(),
            row: height,
            column: width,
            ..Default::default()
        };
        self.sandbox
            .agent
            .tty_win_resize(ctx(CALL_TIMEOUT), &req)
            .await
            .map_err(ShimError::agent("TtyWinResize"))?;
        Ok(())
    }
}

/// Watches process `p` until it exits (WaitProcess, or the VM's end), lets
/// its output drain, records the exit and publishes it.
pub fn watch_exit(c: Arc<Container>, p: Arc<Proc>, mut output: JoinHandle<()>) {
    tokio::spawn(async move {
        let status = wait_status(&c, &p).await;
        if tokio::time::timeout(OUTPUT_DRAIN, &mut output)
            .await
            .is_err()
        {
            tracing::debug!(cid = %c.id, exec = %p.exec_id, "output still open after the exit; closed");
            output.abort();
        }
        p.abort_tasks();
        if p.set_exited(status) {
            let id = if p.exec_id.is_empty() {
                &c.id
            } else {
                &p.exec_id
            };
            let at = p.exit().map_or_else(SystemTime::now, |e| e.1);
            tracing::info!(cid = %c.id, exec = %p.exec_id, status, "process exited");
            c.events.exit(&c.id, id, c.pid(), status, at).await;
        }
    });
}

async fn wait_status(c: &Container, p: &Proc) -> u32 {
    let req = WaitProcessRequest {
        container_id: c.gcid.clone(),
        exec_id: p.guest_exec.clone(),
        ..Default::default()
    };
    let ended = ended_status(&c.sandbox, None);
    let r = tokio::select! {
        // no deadline: the process runs as long as it runs
        r = c.sandbox.agent.wait_process(Context::default(), &req) => r,
        s = ended => return s,
    };
    match r {
        Ok(resp) => u32::try_from(resp.status).unwrap_or(VM_DIED_STATUS),
        Err(e) => {
            // the connection broke: the VM is going; take its status
            tracing::debug!(cid = %c.id, exec = %p.exec_id, error = %e, "WaitProcess failed");
            ended_status(&c.sandbox, Some(ENDED_WAIT)).await
        }
    }
}

/// The status the sandbox's end gives processes, once it has ended (within
/// `limit`, if given; [`VM_DIED_STATUS`] past it).
async fn ended_status(sb: &Sandbox, limit: Option<Duration>) -> u32 {
    let mut rx = sb.ended();
    let wait = async move {
        match rx.wait_for(Option::is_some).await {
            Ok(v) => v.unwrap_or(VM_DIED_STATUS),
            Err(_) => VM_DIED_STATUS,
        }
    };
    match limit {
        Some(l) => tokio::time::timeout(l, wait)
            .await
            .unwrap_or(VM_DIED_STATUS),
        None => wait.await,
    }
}
