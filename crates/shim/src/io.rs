//! Standard I/O: the FIFOs (or `file://` URIs) containerd gives, pumped to
//! and from the agent with ReadStdout / ReadStderr / WriteStdin / CloseStdin.
//!
//! - Output FIFOs are opened read-write: the open never blocks and never
//!   fails for want of a reader, and a reader that goes away (a detached
//!   `ctr`) does not break the process's output (as runc's shim does).
//!   Closing them, at the end of the stream, is containerd's end of file.
//! - The stdin FIFO is opened read-only and non-blocking: it waits for a
//!   writer, and its end of file (the writer closed) becomes CloseStdin. With
//!   no stdin the process gets CloseStdin at once (an empty stdin, as
//!   /dev/null gives under runc).

use std::pin::Pin;
use std::sync::Arc;

use containerd_shim_protos::ttrpc::context::Context;
use sandvm_agent_protocol::agent::{CloseStdinRequest, ReadStreamRequest, WriteStreamRequest};
use sandvm_agent_protocol::agent_ttrpc::AgentServiceClient;
use tokio::io::{AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::unix::pipe;
use tokio::task::JoinHandle;

use crate::error::ShimError;
use crate::process::{Proc, Stdio};
use crate::sandbox::CALL_TIMEOUT;

/// Bytes asked for per ReadStdout/ReadStderr, and written per WriteStdin.
const CHUNK: u32 = 32 * 1024;

/// Where an output goes.
type Sink = Pin<Box<dyn AsyncWrite + Send>>;

/// A process's opened standard I/O, before the pumps start.
pub struct Opened {
    stdin: Option<pipe::Receiver>,
    stdout: Option<Sink>,
    stderr: Option<Sink>,
}

impl std::fmt::Debug for Opened {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Opened")
            .field("stdin", &self.stdin.is_some())
            .field("stdout", &self.stdout.is_some())
            .field("stderr", &self.stderr.is_some())
            .finish()
    }
}

fn io_err(what: &'static str, path: &str) -> impl FnOnce(std::io::Error) -> ShimError {
    let path = path.to_string();
    move |source| ShimError::Io { what, path, source }
}

/// Opens an output: a `file://` URI (appended to), a FIFO, or nothing.
async fn open_output(uri: &str) -> Result<Option<Sink>, ShimError> {
    if uri.is_empty() {
        return Ok(None);
    }
    if let Some(path) = uri.strip_prefix("file://") {
        let f = tokio::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .await
            .map_err(io_err("open the output file", path))?;
        return Ok(Some(Box::pin(f)));
    }
    if uri.contains("://") && !uri.starts_with("fifo://") {
        return Err(ShimError::Invalid {
            what: "stdio URI",
            why: format!("{uri}: only FIFOs and file:// are supported"),
        });
    }
    let path = uri.trim_start_matches("fifo://");
    let s = pipe::OpenOptions::new()
        .read_write(true)
        .open_sender(path)
        .map_err(io_err("open the output FIFO", path))?;
    Ok(Some(Box::pin(s)))
}

/// Opens what `stdio` names (all of it, before anything starts).
pub async fn open(stdio: &Stdio) -> Result<Opened, ShimError> {
    let stdin = if stdio.stdin.is_empty() {
        None
    } else {
        let path = stdio.stdin.trim_start_matches("fifo://");
        Some(
            pipe::OpenOptions::new()
                .open_receiver(path)
                .map_err(io_err("open the stdin FIFO", path))?,
        )
    };
    let stdout = open_output(&stdio.stdout).await?;
    let stderr = if stdio.terminal {
        None
    } else {
        open_output(&stdio.stderr).await?
    };
    Ok(Opened {
        stdin,
        stdout,
        stderr,
    })
}

/// Which output stream.
#[derive(Debug, Clone, Copy)]
enum Out {
    Stdout,
    Stderr,
}

/// Starts the pumps of process `p` of guest container `gcid`: returns the
/// output pump (done when stdout and stderr reached their end); the stdin
/// pump is kept by the process. With no stdin, stdin is closed now.
pub async fn start(
    agent: &AgentServiceClient,
    gcid: &str,
    p: &Arc<Proc>,
    opened: Opened,
) -> JoinHandle<()> {
    let target = (gcid.to_string(), p.guest_exec.clone());
    let out = tokio::spawn(pump_out(
        agent.clone(),
        target.clone(),
        Out::Stdout,
        opened.stdout,
    ));
    let err = (!p.stdio.terminal).then(|| {
        tokio::spawn(pump_out(
            agent.clone(),
            target.clone(),
            Out::Stderr,
            opened.stderr,
        ))
    });
    match opened.stdin {
        Some(rx) => p.keep(tokio::spawn(pump_in(
            agent.clone(),
            target,
            rx,
            Arc::clone(p),
        ))),
        None => close_stdin(agent, &target).await,
    }
    tokio::spawn(async move {
        let _ = out.await;
        if let Some(e) = err {
            let _ = e.await;
        }
    })
}

/// Reads one output from the agent until its end, writing it to `sink`
/// (or dropping it when there is none: the process must not block).
async fn pump_out(
    agent: AgentServiceClient,
    (cid, exec): (String, String),
    which: Out,
    mut sink: Option<Sink>,
) {
    let req = ReadStreamRequest {
        container_id: cid.clone(),
        exec_id: exec.clone(),
        len: CHUNK,
        ..Default::default()
    };
    loop {
        // No deadline: a read waits until the process writes. The shim's
        // agent session lives as long as the sandbox (no stale reads of a
        // dropped session to end), and a client-side deadline could drop
        // output the agent returned just as it passed.
        let r = match which {
            Out::Stdout => agent.read_stdout(Context::default(), &req).await,
            Out::Stderr => agent.read_stderr(Context::default(), &req).await,
        };
        let data = match r {
            Ok(resp) if resp.data.is_empty() => break,
            Ok(resp) => resp.data,
            Err(e) => {
                tracing::debug!(cid, exec, ?which, error = %e, "output ends: agent read failed");
                break;
            }
        };
        if let Some(s) = sink.as_mut()
            && let Err(e) = s.write_all(&data).await
        {
            tracing::warn!(cid, exec, ?which, error = %e, "cannot write output; dropping the rest");
            sink = None;
        }
    }
    if let Some(mut s) = sink {
        let _ = s.flush().await;
    }
}

/// Forwards stdin to the agent until its end of file (or CloseIO), then
/// closes the process's stdin.
async fn pump_in(
    agent: AgentServiceClient,
    target: (String, String),
    mut rx: pipe::Receiver,
    p: Arc<Proc>,
) {
    let mut buf = vec![0u8; CHUNK as usize];
    loop {
        tokio::select! {
            r = rx.read(&mut buf) => match r {
                Ok(0) => break,
                Ok(n) => {
                    if !write_stdin(&agent, &target, &buf[..n]).await {
                        return;
                    }
                }
                Err(e) => {
                    tracing::debug!(cid = %target.0, error = %e, "stdin read failed");
                    break;
                }
            },
            () = p.close_stdin.notified() => {
                // what the writer sent before CloseIO still goes through
                while let Ok(n) = rx.try_read(&mut buf) {
                    if n == 0 || !write_stdin(&agent, &target, &buf[..n]).await {
                        break;
                    }
                }
                break;
            }
        }
    }
    close_stdin(&agent, &target).await;
}

async fn write_stdin(
    agent: &AgentServiceClient,
    (cid, exec): &(String, String),
    data: &[u8],
) -> bool {
    let req = WriteStreamRequest {
        container_id: cid.clone(),
        exec_id: exec.clone(),
        data: data.to_vec(),
        ..Default::default()
    };
    match agent
        .write_stdin(sandvm_agent_protocol::ctx(CALL_TIMEOUT), &req)
        .await
    {
        Ok(_) => true,
        Err(e) => {
            tracing::debug!(cid, exec, error = %e, "stdin write failed; stdin ends");
            false
        }
    }
}

async fn close_stdin(agent: &AgentServiceClient, (cid, exec): &(String, String)) {
    let req = CloseStdinRequest {
        container_id: cid.clone(),
        exec_id: exec.clone(),
        ..Default::default()
    };
    if let Err(e) = agent
        .close_stdin(sandvm_agent_protocol::ctx(CALL_TIMEOUT), &req)
        .await
    {
        tracing::debug!(cid, exec, error = %e, "CloseStdin failed");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn outputs_open_without_a_reader_and_bad_uris_fail() {
        let d = tempfile::tempdir().unwrap();
        let fifo = d.path().join("out");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::S_IRWXU).unwrap();
        let s = Stdio {
            stdout: fifo.display().to_string(),
            stderr: format!("file://{}", d.path().join("err.log").display()),
            ..Stdio::default()
        };
        let o = open(&s).await.unwrap();
        assert!(o.stdout.is_some() && o.stderr.is_some() && o.stdin.is_none());
        let bad = Stdio {
            stdout: "binary:///usr/bin/logger".into(),
            ..Stdio::default()
        };
        assert!(matches!(open(&bad).await, Err(ShimError::Invalid { .. })));
        let missing = Stdio {
            stdin: d.path().join("nope").display().to_string(),
            ..Stdio::default()
        };
        let e = open(&missing).await.unwrap_err();
        assert!(e.to_string().contains("nope"), "{e}");
    }
}
