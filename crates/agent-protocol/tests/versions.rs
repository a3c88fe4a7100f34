//! The host helper against real ttrpc servers on Unix sockets (hybrid vsock
//! framing: `CONNECT <port>` then `OK <n>`, as vhost-device-vsock answers):
//! a matching agent connects, an agent of another protocol version is refused
//! with both versions named, and a silent endpoint ends in `NotReady`.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use sandvm_agent_protocol::health::{CheckRequest, CheckResponse, check_response::ServingStatus};
use sandvm_agent_protocol::health_ttrpc::{Health, create_health};
use sandvm_agent_protocol::{AgentEndpoint, ConnectError, PROTOCOL_VERSION, connect, wait_ready};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixListener;
use ttrpc::r#async::transport::Listener;
use ttrpc::r#async::{Server, TtrpcContext};

struct FakeAgent {
    protocol: u32,
}

#[async_trait]
impl Health for FakeAgent {
    async fn check(&self, _: &TtrpcContext, _: CheckRequest) -> ttrpc::Result<CheckResponse> {
        Ok(CheckResponse {
            status: ServingStatus::SERVING.into(),
            protocol_version: self.protocol,
            agent_version: "9.8.7".into(),
            ..Default::default()
        })
    }
}

/// A fake vhost-device-vsock + agent: answers `CONNECT` and serves ttrpc.
async fn serve(path: &std::path::Path, protocol: u32) -> Server {
    let l = UnixListener::bind(path).expect("bind the fake agent");
    let sessions = futures::stream::unfold(l, |l| async move {
        let (mut s, _) = l.accept().await.ok()?;
        let mut line = Vec::new();
        let mut b = [0u8; 1];
        while s.read_exact(&mut b).await.is_ok() && b[0] != b'\n' {
            line.push(b[0]);
        }
        assert_eq!(line, b"CONNECT 1024");
        s.write_all(b"OK 1073741824\n").await.ok()?;
        Some((Ok::<_, std::io::Error>(s), l))
    });
    let mut server = Server::new()
        .add_listener(Listener::new(sessions))
        .register_service(create_health(Arc::new(FakeAgent { protocol })));
    server.start().await.expect("start the fake agent");
    server
}

#[tokio::test]
async fn a_matching_agent_connects_and_another_version_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.sock");
    let bad = dir.path().join("bad.sock");
    let _g = serve(&good, PROTOCOL_VERSION).await;
    let _b = serve(&bad, PROTOCOL_VERSION + 1).await;

    let ep = AgentEndpoint::HybridVsock {
        path: good,
        port: 1024,
    };
    let c = connect(&ep, Duration::from_secs(5)).await.unwrap();
    assert_eq!(
        (c.versions.protocol, c.versions.build.as_str()),
        (PROTOCOL_VERSION, "9.8.7")
    );

    let ep = AgentEndpoint::HybridVsock {
        path: bad,
        port: 1024,
    };
    let e = wait_ready(&ep, Duration::from_secs(30)).await.unwrap_err();
    assert!(matches!(e, ConnectError::VersionMismatch { .. }), "{e:?}");
    let msg = e.to_string();
    assert!(
        msg.contains(&format!("sandvm.agent.v{PROTOCOL_VERSION}")),
        "{msg}"
    );
    assert!(
        msg.contains(&format!("sandvm.agent.v{}", PROTOCOL_VERSION + 1)),
        "{msg}"
    );
    assert!(msg.contains("9.8.7"), "{msg}");
}

#[tokio::test]
async fn a_silent_serial_endpoint_is_not_ready_by_the_deadline() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("silent.sock");
    let l = UnixListener::bind(&path).unwrap();
    // accepts and reads, never answers the sync line (a guest without agent)
    tokio::spawn(async move {
        let mut held = vec![];
        while let Ok((s, _)) = l.accept().await {
            held.push(s);
        }
    });
    let start = std::time::Instant::now();
    let e = wait_ready(
        &AgentEndpoint::Serial { path: path.clone() },
        Duration::from_secs(2),
    )
    .await
    .unwrap_err();
    assert!(
        start.elapsed() < Duration::from_secs(4),
        "took {:?}",
        start.elapsed()
    );
    let ConnectError::NotReady { last, .. } = &e else {
        panic!("{e:?}")
    };
    assert!(matches!(**last, ConnectError::Timeout { .. }), "{last:?}");
    assert!(e.to_string().contains(&path.display().to_string()), "{e}");
}
