//! containerd's Task service (task API v2) on [`Service`]: each request
//! logged, its errors turned into ttrpc statuses containerd understands.

use std::sync::Arc;

use async_trait::async_trait;
use containerd_shim::api::{
    CloseIORequest, ConnectRequest, ConnectResponse, CreateTaskRequest, CreateTaskResponse,
    DeleteRequest, DeleteResponse, Empty, ExecProcessRequest, KillRequest, PauseRequest,
    PidsRequest, PidsResponse, ResizePtyRequest, ResumeRequest, ShutdownRequest, StartRequest,
    StartResponse, StateRequest, StateResponse, StatsRequest, StatsResponse, UpdateTaskRequest,
    WaitRequest, WaitResponse,
};
use containerd_shim::{Task, TtrpcContext, TtrpcResult};
use containerd_shim_protos::api::CheckpointTaskRequest;
use containerd_shim_protos::protobuf::MessageField;
use containerd_shim_protos::types::task::ProcessInfo;

use crate::error::ShimError;
use crate::events::timestamp;
use crate::process::Stdio;
use crate::service::Service;
use crate::spec;

/// The shim's version, as Connect reports it.
pub const VERSION: &str = concat!("sandvm-shim ", env!("CARGO_PKG_VERSION"));

/// The ttrpc face of a [`Service`].
#[derive(Debug, Clone)]
pub struct TaskService {
    svc: Arc<Service>,
}

impl TaskService {
    /// The task service of `svc`.
    pub fn new(svc: Arc<Service>) -> Self {
        TaskService { svc }
    }
}

fn done<T>(what: &'static str, id: &str, r: Result<T, ShimError>) -> TtrpcResult<T> {
    r.map_err(|e| {
        tracing::warn!(request = what, id, error = %crate::error::chain(&e), "request failed");
        e.into()
    })
}

impl TaskService {
    async fn exec_req(&self, req: ExecProcessRequest) -> Result<(), ShimError> {
        let c = self.svc.container(&req.id)?;
        if req.exec_id.is_empty() {
            return Err(ShimError::Invalid {
                what: "exec id",
                why: "empty".into(),
            });
        }
        let json = req.spec.as_ref().map(|a| a.value.as_slice()).unwrap_or(&[]);
        let (json, tty) = spec::exec_process(json)?;
        let stdio = Stdio {
            stdin: req.stdin,
            stdout: req.stdout,
            stderr: req.stderr,
            terminal: req.terminal || tty,
        };
        c.add_exec(&req.exec_id, stdio, json).await
    }

    async fn delete_req(&self, req: &DeleteRequest) -> Result<DeleteResponse, ShimError> {
        let c = self.svc.container(&req.id)?;
        let (status, at) = if req.exec_id.is_empty() {
            if c.init.state() == crate::process::State::Running {
                return Err(ShimError::State(format!(
                    "Container {} is running; kill it first",
                    req.id
                )));
            }
            self.svc.delete_container(&c).await
        } else {
            c.delete_exec(&req.exec_id)?
        };
        Ok(DeleteResponse {
            pid: c.pid(),
            exit_status: status,
            exited_at: MessageField::some(timestamp(at)),
            ..Default::default()
        })
    }

    async fn stats_req(&self, req: &StatsRequest) -> Result<StatsResponse, ShimError> {
        let c = self.svc.container(&req.id)?;
        let m = c.metrics().await?;
        let any =
            containerd_shim::util::convert_to_any(Box::new(m)).map_err(|e| ShimError::Invalid {
                what: "metrics",
                why: e.to_string(),
            })?;
        Ok(StatsResponse {
            stats: MessageField::some(any),
            ..Default::default()
        })
    }
}

#[async_trait]
impl Task for TaskService {
    async fn state(&self, _: &TtrpcContext, req: StateRequest) -> TtrpcResult<StateResponse> {
        done("State", &req.id, self.svc.state(&req))
    }

    async fn create(
        &self,
        _: &TtrpcContext,
        req: CreateTaskRequest,
    ) -> TtrpcResult<CreateTaskResponse> {
        tracing::info!(id = %req.id, bundle = %req.bundle, "Create");
        let id = req.id.clone();
        done("Create", &id, self.svc.create(req).await)
    }

    async fn start(&self, _: &TtrpcContext, req: StartRequest) -> TtrpcResult<StartResponse> {
        tracing::info!(id = %req.id, exec = %req.exec_id, "Start");
        let r = async {
            let c = self.svc.container(&req.id)?;
            let pid = if req.exec_id.is_empty() {
                c.start_init().await?
            } else {
                c.start_exec(&req.exec_id).await?
            };
            Ok(StartResponse {
                pid,
                ..Default::default()
            })
        }
        .await;
        done("Start", &req.id, r)
    }

    async fn delete(&self, _: &TtrpcContext, req: DeleteRequest) -> TtrpcResult<DeleteResponse> {
        tracing::info!(id = %req.id, exec = %req.exec_id, "Delete");
        done("Delete", &req.id, self.delete_req(&req).await)
    }

    async fn pids(&self, _: &TtrpcContext, req: PidsRequest) -> TtrpcResult<PidsResponse> {
        let r = async {
            let pids = self.svc.container(&req.id)?.pids().await?;
            Ok(PidsResponse {
                processes: pids
                    .into_iter()
                    .map(|pid| ProcessInfo {
                        pid,
                        ..Default::default()
                    })
                    .collect(),
                ..Default::default()
            })
        }
        .await;
        done("Pids", &req.id, r)
    }

    async fn pause(&self, _: &TtrpcContext, req: PauseRequest) -> TtrpcResult<Empty> {
        tracing::info!(id = %req.id, "Pause");
        let r = async { self.svc.container(&req.id)?.set_paused(true).await }.await;
        done("Pause", &req.id, r).map(|()| Empty::new())
    }

    async fn resume(&self, _: &TtrpcContext, req: ResumeRequest) -> TtrpcResult<Empty> {
        tracing::info!(id = %req.id, "Resume");
        let r = async { self.svc.container(&req.id)?.set_paused(false).await }.await;
        done("Resume", &req.id, r).map(|()| Empty::new())
    }

    async fn checkpoint(&self, _: &TtrpcContext, req: CheckpointTaskRequest) -> TtrpcResult<Empty> {
        done(
            "Checkpoint",
            &req.id,
            Err(ShimError::NotImplemented("Checkpoint")),
        )
    }

    async fn kill(&self, _: &TtrpcContext, req: KillRequest) -> TtrpcResult<Empty> {
        tracing::info!(id = %req.id, exec = %req.exec_id, signal = req.signal, all = req.all, "Kill");
        let r = async {
            let c = self.svc.container(&req.id)?;
            c.kill(&req.exec_id, req.signal, req.all).await
        }
        .await;
        done("Kill", &req.id, r).map(|()| Empty::new())
    }

    async fn exec(&self, _: &TtrpcContext, req: ExecProcessRequest) -> TtrpcResult<Empty> {
        tracing::info!(id = %req.id, exec = %req.exec_id, "Exec");
        let id = req.id.clone();
        done("Exec", &id, self.exec_req(req).await).map(|()| Empty::new())
    }

    async fn resize_pty(&self, _: &TtrpcContext, req: ResizePtyRequest) -> TtrpcResult<Empty> {
        let r = async {
            let c = self.svc.container(&req.id)?;
            c.resize(&req.exec_id, req.width, req.height).await
        }
        .await;
        done("ResizePty", &req.id, r).map(|()| Empty::new())
    }

    async fn close_io(&self, _: &TtrpcContext, req: CloseIORequest) -> TtrpcResult<Empty> {
        let r = (|| {
            let p = self.svc.container(&req.id)?.process(&req.exec_id)?;
            if req.stdin {
                p.close_stdin.notify_one();
            }
            Ok(())
        })();
        done("CloseIO", &req.id, r).map(|()| Empty::new())
    }

    async fn update(&self, _: &TtrpcContext, req: UpdateTaskRequest) -> TtrpcResult<Empty> {
        done("Update", &req.id, Err(ShimError::NotImplemented("Update")))
    }

    async fn wait(&self, _: &TtrpcContext, req: WaitRequest) -> TtrpcResult<WaitResponse> {
        let p = match self
            .svc
            .container(&req.id)
            .and_then(|c| c.process(&req.exec_id))
        {
            Ok(p) => p,
            Err(e) => return done("Wait", &req.id, Err(e)),
        };
        let (status, at) = p.wait().await;
        Ok(WaitResponse {
            exit_status: status,
            exited_at: MessageField::some(timestamp(at)),
            ..Default::default()
        })
    }

    async fn stats(&self, _: &TtrpcContext, req: StatsRequest) -> TtrpcResult<StatsResponse> {
        done("Stats", &req.id, self.stats_req(&req).await)
    }

    async fn connect(&self, _: &TtrpcContext, req: ConnectRequest) -> TtrpcResult<ConnectResponse> {
        let task_pid = self.svc.container(&req.id).map(|c| c.pid()).unwrap_or(0);
        Ok(ConnectResponse {
            shim_pid: std::process::id(),
            task_pid,
            version: VERSION.to_string(),
            ..Default::default()
        })
    }

    async fn shutdown(&self, _: &TtrpcContext, req: ShutdownRequest) -> TtrpcResult<Empty> {
        tracing::info!(id = %req.id, containers = self.svc.count(), "Shutdown");
        self.svc.shutdown().await;
        Ok(Empty::new())
    }
}
