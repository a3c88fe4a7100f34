//! The host side: reach the agent, check its versions, hand out typed clients.

use std::io;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::UnixStream;
use tokio::time::{Instant, sleep, timeout};
use ttrpc::r#async::Client;
use ttrpc::r#async::transport::Socket;

use crate::agent_ttrpc::AgentServiceClient;
use crate::endpoint::AgentEndpoint;
use crate::health::{CheckRequest, CheckResponse, check_response::ServingStatus};
use crate::health_ttrpc::HealthClient;
use crate::sync::{LineScanner, SYNC_OK_PREFIX, new_nonce, sync_line};
use crate::{BUILD_VERSION, PROTOCOL_VERSION};

/// Time one connection attempt (socket, handshake, `Check`) may take.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// A sensible per-request timeout for [`ctx`] (calls that do not wait on a process).
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// Pause between attempts of [`wait_ready`]; on virtio-serial it also lets the
/// guest see the host hang up before the next session starts.
const RETRY_PAUSE: Duration = Duration::from_millis(200);

/// Longest reply line of vhost-device-vsock's `CONNECT`.
const MAX_HYBRID_REPLY: usize = 64;

/// Why the agent could not be reached or was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// The socket could not be opened.
    #[error("Cannot connect to the agent at {endpoint}")]
    Connect {
        /// The endpoint, as text.
        endpoint: String,
        /// What the connect returned.
        #[source]
        source: io::Error,
    },
    /// A stage did not finish in time.
    #[error("Timed out after {after:?} reaching the agent at {endpoint} ({stage})")]
    Timeout {
        /// The endpoint, as text.
        endpoint: String,
        /// The time allowed.
        after: Duration,
        /// What was going on.
        stage: &'static str,
    },
    /// The connection broke during the handshake.
    #[error("Agent channel {endpoint} failed during {stage}")]
    Handshake {
        /// The endpoint, as text.
        endpoint: String,
        /// What was going on.
        stage: &'static str,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
    /// vhost-device-vsock did not answer `OK` to `CONNECT <port>`.
    #[error("Hybrid vsock {endpoint}: CONNECT refused (reply {reply:?}; is the agent listening?)")]
    HybridRefused {
        /// The endpoint, as text.
        endpoint: String,
        /// What came back instead of `OK <n>`.
        reply: String,
    },
    /// The `Check` call failed.
    #[error("Agent at {endpoint}: Check failed")]
    Check {
        /// The endpoint, as text.
        endpoint: String,
        /// The ttrpc error.
        #[source]
        source: ttrpc::Error,
    },
    /// The agent speaks another protocol version.
    #[error(
        "Agent protocol version mismatch: this host speaks sandvm.agent.v{host} (build {host_build}), \
         the agent speaks sandvm.agent.v{agent} (build {agent_build})"
    )]
    VersionMismatch {
        /// Our [`PROTOCOL_VERSION`].
        host: u32,
        /// Our [`BUILD_VERSION`].
        host_build: String,
        /// The agent's protocol version.
        agent: u32,
        /// The agent's build version.
        agent_build: String,
    },
    /// The agent answered `Check` but is not serving.
    #[error("Agent at {endpoint} is not serving (status {status})")]
    NotServing {
        /// The endpoint, as text.
        endpoint: String,
        /// The status it gave.
        status: i32,
    },
    /// [`wait_ready`]'s deadline passed.
    #[error("Agent at {endpoint} not ready within {after:?}")]
    NotReady {
        /// The endpoint, as text.
        endpoint: String,
        /// The deadline.
        after: Duration,
        /// The last attempt's error.
        #[source]
        last: Box<ConnectError>,
    },
}

/// The agent's versions, from `Check`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentVersions {
    /// Protocol version (the N of `sandvm.agent.vN`).
    pub protocol: u32,
    /// The agent's build version.
    pub build: String,
}

/// A connected, version-checked agent.
#[derive(Clone)]
pub struct AgentClient {
    /// The container and process operations.
    pub agent: AgentServiceClient,
    /// The health service.
    pub health: HealthClient,
    /// What the agent reported.
    pub versions: AgentVersions,
    /// Where it was reached.
    pub endpoint: AgentEndpoint,
}

impl std::fmt::Debug for AgentClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgentClient")
            .field("versions", &self.versions)
            .field("endpoint", &self.endpoint)
            .finish_non_exhaustive()
    }
}

/// A ttrpc context with `timeout`.
pub fn ctx(timeout: Duration) -> ttrpc::context::Context {
    ttrpc::context::with_timeout(i64::try_from(timeout.as_nanos()).unwrap_or(i64::MAX))
}

/// Compares the agent's `Check` answer with this crate's versions: a protocol
/// mismatch is an error naming both; a build difference alone is fine.
pub fn check_versions(resp: &CheckResponse) -> Result<AgentVersions, ConnectError> {
    if resp.protocol_version != PROTOCOL_VERSION {
        return Err(ConnectError::VersionMismatch {
            host: PROTOCOL_VERSION,
            host_build: BUILD_VERSION.to_string(),
            agent: resp.protocol_version,
            agent_build: resp.agent_version.clone(),
        });
    }
    Ok(AgentVersions {
        protocol: resp.protocol_version,
        build: resp.agent_version.clone(),
    })
}

/// Connects once: opens the channel, runs its handshake, calls `Check` and
/// compares protocol versions. Each stage is bounded by `limit` in total.
pub async fn connect(
    endpoint: &AgentEndpoint,
    limit: Duration,
) -> Result<AgentClient, ConnectError> {
    let name = endpoint.to_string();
    let start = Instant::now();
    let left = || limit.saturating_sub(start.elapsed());
    let to = |stage| ConnectError::Timeout {
        endpoint: name.clone(),
        after: limit,
        stage,
    };
    let socket = timeout(left(), open(endpoint, &name))
        .await
        .map_err(|_| to("opening the channel"))??;
    let client = Client::new(socket);
    let health = HealthClient::new(client.clone());
    let req = CheckRequest {
        protocol_version: PROTOCOL_VERSION,
        ..Default::default()
    };
    let resp = timeout(left(), health.check(ctx(left()), &req))
        .await
        .map_err(|_| to("Check"))?
        .map_err(|source| ConnectError::Check {
            endpoint: name.clone(),
            source,
        })?;
    let versions = check_versions(&resp)?;
    if resp.status.value() != ServingStatus::SERVING as i32 {
        return Err(ConnectError::NotServing {
            endpoint: name,
            status: resp.status.value(),
        });
    }
    tracing::debug!(endpoint = %name, agent_build = %versions.build, "agent connected");
    Ok(AgentClient {
        agent: AgentServiceClient::new(client),
        health,
        versions,
        endpoint: endpoint.clone(),
    })
}

/// Retries [`connect`] until the agent answers or `deadline` passes (the
/// guest is booting). A version mismatch is final and returned at once.
pub async fn wait_ready(
    endpoint: &AgentEndpoint,
    deadline: Duration,
) -> Result<AgentClient, ConnectError> {
    let start = Instant::now();
    loop {
        let left = deadline.saturating_sub(start.elapsed());
        let attempt = left
            .min(DEFAULT_CONNECT_TIMEOUT)
            .max(Duration::from_millis(100));
        match connect(endpoint, attempt).await {
            Ok(c) => return Ok(c),
            Err(e @ ConnectError::VersionMismatch { .. }) => return Err(e),
            Err(e) if start.elapsed() + RETRY_PAUSE >= deadline => {
                return Err(ConnectError::NotReady {
                    endpoint: endpoint.to_string(),
                    after: deadline,
                    last: Box::new(e),
                });
            }
            Err(e) => tracing::debug!(error = %e, "agent not ready yet"),
        }
        sleep(RETRY_PAUSE).await;
    }
}

async fn open(endpoint: &AgentEndpoint, name: &str) -> Result<Socket, ConnectError> {
    let conn_err = |source| ConnectError::Connect {
        endpoint: name.to_string(),
        source,
    };
    match endpoint {
        AgentEndpoint::Serial { path } => {
            let mut s = UnixStream::connect(path).await.map_err(conn_err)?;
            serial_sync(&mut s, name).await?;
            Ok(Socket::new(s))
        }
        AgentEndpoint::HybridVsock { path, port } => {
            let mut s = UnixStream::connect(path).await.map_err(conn_err)?;
            hybrid_connect(&mut s, *port, name).await?;
            Ok(Socket::new(s))
        }
        AgentEndpoint::Vsock { cid, port } => Socket::connect(format!("vsock://{cid}:{port}"))
            .await
            .map_err(conn_err),
    }
}

/// The virtio-serial session handshake (see [`crate::sync`]).
async fn serial_sync<S: AsyncRead + AsyncWrite + Unpin>(
    s: &mut S,
    name: &str,
) -> Result<(), ConnectError> {
    let err = |stage, source| ConnectError::Handshake {
        endpoint: name.to_string(),
        stage,
        source,
    };
    let nonce = new_nonce();
    s.write_all(&sync_line(&nonce))
        .await
        .map_err(|e| err("sending the sync line", e))?;
    let mut scan = LineScanner::new(SYNC_OK_PREFIX);
    let mut buf = [0u8; 4096];
    loop {
        let n = s
            .read(&mut buf)
            .await
            .map_err(|e| err("reading the sync reply", e))?;
        if n == 0 {
            let eof = io::Error::new(io::ErrorKind::UnexpectedEof, "channel closed");
            return Err(err("reading the sync reply", eof));
        }
        scan.push(&buf[..n]);
        while let Some(got) = scan.next_nonce() {
            if got == nonce {
                if !scan.take_rest().is_empty() {
                    let e =
                        io::Error::new(io::ErrorKind::InvalidData, "bytes after the sync reply");
                    return Err(err("reading the sync reply", e));
                }
                return Ok(());
            }
        }
    }
}

/// vhost-device-vsock's hybrid handshake: `CONNECT <port>\n` -> `OK <n>\n`.
async fn hybrid_connect<S: AsyncRead + AsyncWrite + Unpin>(
    s: &mut S,
    port: u32,
    name: &str,
) -> Result<(), ConnectError> {
    let err = |stage, source| ConnectError::Handshake {
        endpoint: name.to_string(),
        stage,
        source,
    };
    s.write_all(format!("CONNECT {port}\n").as_bytes())
        .await
        .map_err(|e| err("sending CONNECT", e))?;
    // byte by byte: what follows the reply line is the guest's stream
    let mut line = Vec::new();
    let mut b = [0u8; 1];
    while line.len() < MAX_HYBRID_REPLY {
        let n = s
            .read(&mut b)
            .await
            .map_err(|e| err("reading the CONNECT reply", e))?;
        if n == 0 || b[0] == b'\n' {
            break;
        }
        line.push(b[0]);
    }
    let reply = String::from_utf8_lossy(&line).into_owned();
    if reply.starts_with("OK ") {
        Ok(())
    } else {
        Err(ConnectError::HybridRefused {
            endpoint: name.to_string(),
            reply,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sync::{SYNC_PREFIX, sync_ok_line};

    fn resp(protocol: u32, build: &str) -> CheckResponse {
        CheckResponse {
            status: ServingStatus::SERVING.into(),
            protocol_version: protocol,
            agent_version: build.to_string(),
            ..Default::default()
        }
    }

    #[test]
    fn version_mismatch_names_both_versions() {
        let e = check_versions(&resp(PROTOCOL_VERSION + 1, "9.9.9")).unwrap_err();
        let msg = e.to_string();
        assert!(
            msg.contains(&format!("sandvm.agent.v{PROTOCOL_VERSION}")),
            "{msg}"
        );
        assert!(
            msg.contains(&format!("sandvm.agent.v{}", PROTOCOL_VERSION + 1)),
            "{msg}"
        );
        assert!(
            msg.contains("9.9.9") && msg.contains(BUILD_VERSION),
            "{msg}"
        );
        let ok = check_versions(&resp(PROTOCOL_VERSION, "other-build")).unwrap();
        assert_eq!(ok.build, "other-build");
    }

    #[tokio::test]
    async fn serial_sync_skips_stale_bytes_and_other_nonces() {
        let (mut host, mut guest) = tokio::io::duplex(4096);
        let (stale_sent, stale_seen) = tokio::sync::oneshot::channel();
        let (release_tx, release) = tokio::sync::oneshot::channel::<()>();
        let g = tokio::spawn(async move {
            let mut scan = LineScanner::new(SYNC_PREFIX);
            let mut buf = [0u8; 256];
            let nonce = loop {
                let n = guest.read(&mut buf).await.unwrap();
                scan.push(&buf[..n]);
                if let Some(n) = scan.next_nonce() {
                    break n;
                }
            };
            guest
                .write_all(b"\0\0\0\x07stale reply of an old session")
                .await
                .unwrap();
            guest.write_all(&sync_ok_line("someoneelse")).await.unwrap();
            stale_sent.send(()).unwrap();
            release.await.unwrap();
            guest.write_all(&sync_ok_line(&nonce)).await.unwrap();
            guest
        });
        let sync = serial_sync(&mut host, "test");
        tokio::pin!(sync);
        // Stale bytes and another session's reply are there: no sync yet.
        tokio::select! {
            r = &mut sync => panic!("synced on a stale or foreign reply: {r:?}"),
            seen = stale_seen => seen.unwrap(),
        }
        let early = tokio::time::timeout(std::time::Duration::from_millis(200), &mut sync).await;
        assert!(early.is_err(), "synced on a foreign nonce: {early:?}");
        release_tx.send(()).unwrap();
        sync.await.unwrap();
        drop(g.await.unwrap());
    }

    #[tokio::test]
    async fn hybrid_connect_reads_only_the_reply_line() {
        let (mut host, mut dev) = tokio::io::duplex(4096);
        let d = tokio::spawn(async move {
            let mut buf = [0u8; 64];
            let n = dev.read(&mut buf).await.unwrap();
            assert_eq!(&buf[..n], b"CONNECT 1024\n");
            dev.write_all(b"OK 1073741824\nSTREAM").await.unwrap();
            dev
        });
        hybrid_connect(&mut host, 1024, "test").await.unwrap();
        let _dev = d.await.unwrap();
        let mut rest = [0u8; 6];
        host.read_exact(&mut rest).await.unwrap();
        assert_eq!(&rest, b"STREAM");
    }

    #[tokio::test]
    async fn hybrid_refusal_is_an_error_with_the_reply() {
        let (mut host, dev) = tokio::io::duplex(64);
        drop(dev);
        let e = hybrid_connect(&mut host, 1024, "x").await.unwrap_err();
        assert!(
            matches!(
                e,
                ConnectError::HybridRefused { .. } | ConnectError::Handshake { .. }
            ),
            "{e}"
        );
    }

    #[tokio::test]
    async fn connect_to_a_missing_socket_fails_clearly() {
        let e = connect(
            &AgentEndpoint::Serial {
                path: "/nonexistent/agent.sock".into(),
            },
            Duration::from_secs(1),
        )
        .await
        .unwrap_err();
        assert!(e.to_string().contains("/nonexistent/agent.sock"), "{e}");
    }
}
