//! The ttrpc services: argument checks, then the sandbox.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use sandvm_agent_protocol::agent::*;
use sandvm_agent_protocol::agent_ttrpc::AgentService;
use sandvm_agent_protocol::health::{CheckRequest, CheckResponse, check_response::ServingStatus};
use sandvm_agent_protocol::health_ttrpc::Health;
use sandvm_agent_protocol::{BUILD_VERSION, MAX_READ_LEN, MAX_SPEC_LEN, PROTOCOL_VERSION};
use ttrpc::r#async::TtrpcContext;

use crate::clock;
use crate::error::AgentError;
use crate::net;
use crate::process::Output;
use crate::sandbox::{DEFAULT_REMOVE_TIMEOUT, Sandbox, SharedFolder};
use crate::spec;
use crate::validate::check_exec_id;

/// Largest WriteStdin payload.
const MAX_WRITE_LEN: usize = 1024 * 1024;

/// Both services, over one sandbox.
#[derive(Debug, Clone)]
pub struct Service {
    sb: Arc<Sandbox>,
}

impl Service {
    /// Services for `sb`.
    pub fn new(sb: Arc<Sandbox>) -> Self {
        Self { sb }
    }
}

type R<T> = ttrpc::Result<T>;

fn done<T>(what: &str, r: Result<T, AgentError>) -> R<T> {
    r.map_err(|e| {
        tracing::warn!(request = what, error = %e, "request failed");
        e.into()
    })
}

/// A signal number 1..=64 (standard and real-time signals).
fn signal(n: u32) -> Result<i32, AgentError> {
    match i32::try_from(n) {
        Ok(n) if (1..=64).contains(&n) => Ok(n),
        _ => Err(AgentError::Invalid(format!("Invalid signal {n} (1..=64)"))),
    }
}

impl Service {
    async fn exec(&self, req: ExecProcessRequest) -> Result<(), AgentError> {
        check_exec_id(&req.exec_id)?;
        if req.exec_id.is_empty() {
            return Err(AgentError::Invalid("ExecProcess needs an exec id".into()));
        }
        if req.process_json.len() > MAX_SPEC_LEN {
            return Err(AgentError::Invalid(format!(
                "OCI process of {} bytes",
                req.process_json.len()
            )));
        }
        let p = spec::parse_process(&req.process_json)?;
        let c = self.sb.container(&req.container_id)?;
        c.exec(&self.sb.reaper, &req.exec_id, p).await
    }

    async fn signal(&self, req: SignalProcessRequest) -> Result<(), AgentError> {
        check_exec_id(&req.exec_id)?;
        let sig = signal(req.signal)?;
        let c = self.sb.container(&req.container_id)?;
        if req.all {
            for pid in c.cgroup.pids().await {
                let _ = crate::process::kill(pid, sig);
            }
            return Ok(());
        }
        let p = c.process(&req.exec_id)?;
        p.signal(sig)
            .map_err(|e| AgentError::io(format!("kill {} {sig}", p.pid), e))
    }

    async fn wait(&self, req: WaitProcessRequest) -> Result<i32, AgentError> {
        check_exec_id(&req.exec_id)?;
        let c = self.sb.container(&req.container_id)?;
        let status = c.process(&req.exec_id)?.wait().await;
        c.forget_if_finished(&req.exec_id);
        Ok(status)
    }

    async fn read(&self, req: ReadStreamRequest, which: Output) -> Result<Vec<u8>, AgentError> {
        check_exec_id(&req.exec_id)?;
        if req.len == 0 || req.len > MAX_READ_LEN {
            return Err(AgentError::Invalid(format!(
                "Read length {} (1..={MAX_READ_LEN})",
                req.len
            )));
        }
        let c = self.sb.container(&req.container_id)?;
        let data = c
            .process(&req.exec_id)?
            .read(which, req.len as usize)
            .await
            .map_err(|e| AgentError::io("reading output", e))?;
        if data.is_empty() {
            c.forget_if_finished(&req.exec_id);
        }
        Ok(data)
    }

    async fn write(&self, req: WriteStreamRequest) -> Result<u32, AgentError> {
        check_exec_id(&req.exec_id)?;
        if req.data.len() > MAX_WRITE_LEN {
            return Err(AgentError::Invalid(format!(
                "Write of {} bytes (limit {MAX_WRITE_LEN})",
                req.data.len()
            )));
        }
        let p = self
            .sb
            .container(&req.container_id)?
            .process(&req.exec_id)?;
        p.write_stdin(&req.data)
            .await
            .map_err(|e| AgentError::io("writing stdin", e))?;
        Ok(req.data.len() as u32)
    }

    async fn stats(&self, cid: &str) -> Result<StatsContainerResponse, AgentError> {
        let s = self.sb.container(cid)?.cgroup.stats().await;
        let mut r = StatsContainerResponse::new();
        r.cpu = Some(CpuStats {
            usage_usec: s.cpu.0,
            user_usec: s.cpu.1,
            system_usec: s.cpu.2,
            ..Default::default()
        })
        .into();
        r.memory = Some(MemoryStats {
            usage_bytes: s.memory,
            limit_bytes: s.memory_limit,
            anon_bytes: s.anon_file.0,
            file_bytes: s.anon_file.1,
            ..Default::default()
        })
        .into();
        r.pids = Some(PidsStats {
            current: s.pids.0,
            limit: s.pids.1,
            ..Default::default()
        })
        .into();
        Ok(r)
    }

    async fn freeze(&self, cid: &str, on: bool) -> Result<(), AgentError> {
        let c = self.sb.container(cid)?;
        if !c.running() {
            return Err(AgentError::State(format!("Container {cid} is not running")));
        }
        c.cgroup
            .freeze(on)
            .await
            .map_err(|e| AgentError::io(format!("freezing container {cid} ({on})"), e))
    }
}

#[async_trait]
impl AgentService for Service {
    async fn create_sandbox(&self, _: &TtrpcContext, r: CreateSandboxRequest) -> R<Empty> {
        done(
            "CreateSandbox",
            self.sb
                .create(
                    &r.sandbox_id,
                    &r.hostname,
                    &r.dns,
                    SharedFolder {
                        tag: &r.shared_fs_tag,
                        fs_type: &r.shared_fs_type,
                        msize_9p: r.msize_9p,
                    },
                )
                .await,
        )
        .map(|()| Empty::new())
    }

    async fn destroy_sandbox(&self, _: &TtrpcContext, _: DestroySandboxRequest) -> R<Empty> {
        done("DestroySandbox", self.sb.destroy().await).map(|()| Empty::new())
    }

    async fn create_container(&self, _: &TtrpcContext, r: CreateContainerRequest) -> R<Empty> {
        done(
            "CreateContainer",
            self.sb
                .create_container(&r.container_id, &r.oci_spec_json)
                .await,
        )
        .map(|()| Empty::new())
    }

    async fn start_container(&self, _: &TtrpcContext, r: StartContainerRequest) -> R<Empty> {
        let res = async { self.sb.container(&r.container_id)?.start().await }.await;
        done("StartContainer", res).map(|()| Empty::new())
    }

    async fn remove_container(&self, _: &TtrpcContext, r: RemoveContainerRequest) -> R<Empty> {
        let t = if r.timeout == 0 {
            DEFAULT_REMOVE_TIMEOUT
        } else {
            Duration::from_secs(r.timeout.min(3600).into())
        };
        done(
            "RemoveContainer",
            self.sb.remove_container(&r.container_id, t).await,
        )
        .map(|()| Empty::new())
    }

    async fn pause_container(&self, _: &TtrpcContext, r: PauseContainerRequest) -> R<Empty> {
        done("PauseContainer", self.freeze(&r.container_id, true).await).map(|()| Empty::new())
    }

    async fn resume_container(&self, _: &TtrpcContext, r: ResumeContainerRequest) -> R<Empty> {
        done("ResumeContainer", self.freeze(&r.container_id, false).await).map(|()| Empty::new())
    }

    async fn stats_container(
        &self,
        _: &TtrpcContext,
        r: StatsContainerRequest,
    ) -> R<StatsContainerResponse> {
        done("StatsContainer", self.stats(&r.container_id).await)
    }

    async fn list_processes(
        &self,
        _: &TtrpcContext,
        r: ListProcessesRequest,
    ) -> R<ListProcessesResponse> {
        let res = async { Ok(self.sb.container(&r.container_id)?.cgroup.pids().await) }.await;
        done("ListProcesses", res).map(|pids| ListProcessesResponse {
            pids,
            ..Default::default()
        })
    }

    async fn exec_process(&self, _: &TtrpcContext, r: ExecProcessRequest) -> R<Empty> {
        done("ExecProcess", self.exec(r).await).map(|()| Empty::new())
    }

    async fn signal_process(&self, _: &TtrpcContext, r: SignalProcessRequest) -> R<Empty> {
        done("SignalProcess", self.signal(r).await).map(|()| Empty::new())
    }

    async fn wait_process(
        &self,
        _: &TtrpcContext,
        r: WaitProcessRequest,
    ) -> R<WaitProcessResponse> {
        done("WaitProcess", self.wait(r).await).map(|status| WaitProcessResponse {
            status,
            ..Default::default()
        })
    }

    async fn write_stdin(&self, _: &TtrpcContext, r: WriteStreamRequest) -> R<WriteStreamResponse> {
        done("WriteStdin", self.write(r).await).map(|len| WriteStreamResponse {
            len,
            ..Default::default()
        })
    }

    async fn read_stdout(&self, _: &TtrpcContext, r: ReadStreamRequest) -> R<ReadStreamResponse> {
        done("ReadStdout", self.read(r, Output::Stdout).await).map(|data| ReadStreamResponse {
            data,
            ..Default::default()
        })
    }

    async fn read_stderr(&self, _: &TtrpcContext, r: ReadStreamRequest) -> R<ReadStreamResponse> {
        done("ReadStderr", self.read(r, Output::Stderr).await).map(|data| ReadStreamResponse {
            data,
            ..Default::default()
        })
    }

    async fn close_stdin(&self, _: &TtrpcContext, r: CloseStdinRequest) -> R<Empty> {
        let res = async {
            check_exec_id(&r.exec_id)?;
            self.sb
                .container(&r.container_id)?
                .process(&r.exec_id)?
                .close_stdin()
                .await;
            Ok(())
        }
        .await;
        done("CloseStdin", res).map(|()| Empty::new())
    }

    async fn tty_win_resize(&self, _: &TtrpcContext, r: TtyWinResizeRequest) -> R<Empty> {
        let res = async {
            check_exec_id(&r.exec_id)?;
            let (rows, cols) = (u16::try_from(r.row), u16::try_from(r.column));
            let (Ok(rows), Ok(cols)) = (rows, cols) else {
                return Err(AgentError::Invalid(format!(
                    "Window size {}x{} out of range",
                    r.row, r.column
                )));
            };
            let p = self.sb.container(&r.container_id)?.process(&r.exec_id)?;
            p.resize(rows, cols)
                .map_err(|e| AgentError::io("TIOCSWINSZ", e))
        }
        .await;
        done("TtyWinResize", res).map(|()| Empty::new())
    }

    async fn update_interface(&self, _: &TtrpcContext, r: UpdateInterfaceRequest) -> R<Interface> {
        let res = async {
            let i = r.interface.as_ref().ok_or_else(|| {
                AgentError::Invalid("UpdateInterface without an interface".into())
            })?;
            let plan = net::parse::nic_plan(i)?;
            Ok(net::apply::update_interface(&plan).await?)
        }
        .await;
        done("UpdateInterface", res)
    }

    async fn update_routes(&self, _: &TtrpcContext, r: UpdateRoutesRequest) -> R<Routes> {
        let res = async {
            let given = r
                .routes
                .as_ref()
                .map(|x| x.routes.clone())
                .unwrap_or_default();
            let plans = net::parse::route_plans(&given)?;
            let routes = net::apply::update_routes(&plans, &given).await?;
            Ok(Routes {
                routes,
                ..Default::default()
            })
        }
        .await;
        done("UpdateRoutes", res)
    }

    async fn set_guest_date_time(&self, _: &TtrpcContext, r: SetGuestDateTimeRequest) -> R<Empty> {
        let res = clock::wall_time(r.sec, r.usec).and_then(clock::set_realtime);
        done("SetGuestDateTime", res).map(|()| Empty::new())
    }
}

#[async_trait]
impl Health for Service {
    async fn check(&self, _: &TtrpcContext, r: CheckRequest) -> R<CheckResponse> {
        tracing::debug!(host_protocol = r.protocol_version, "Check");
        Ok(CheckResponse {
            status: ServingStatus::SERVING.into(),
            protocol_version: PROTOCOL_VERSION,
            agent_version: BUILD_VERSION.to_string(),
            ..Default::default()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signals_are_checked() {
        assert_eq!(signal(15).unwrap(), 15);
        assert_eq!(signal(64).unwrap(), 64);
        for bad in [0, 65, u32::MAX] {
            assert!(
                signal(bad)
                    .unwrap_err()
                    .to_string()
                    .contains("Invalid signal")
            );
        }
    }
}
