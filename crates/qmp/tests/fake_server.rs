//! Protocol faults from a fake QMP server (the only fake: QEMU cannot be
//! made to send garbage).
#![allow(missing_docs)]

use std::time::Duration;

use qmp::{Client, Error, ProtocolError};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};

const BOUND: Duration = Duration::from_secs(30);
const GREETING: &[u8] = b"{\"QMP\": {\"version\": {\"qemu\": {\"micro\": 0, \"minor\": 0, \"major\": 10}, \"package\": \"fake\"}, \"capabilities\": []}}\r\n";

struct Server {
    r: BufReader<OwnedReadHalf>,
    w: OwnedWriteHalf,
}

impl Server {
    async fn command(&mut self) -> Value {
        let mut line = String::new();
        self.r.read_line(&mut line).await.expect("read command");
        serde_json::from_str(&line).expect("command is JSON")
    }

    async fn send(&mut self, bytes: &[u8]) {
        self.w.write_all(bytes).await.expect("server write");
    }

    /// Reads `qmp_capabilities` and acknowledges it.
    async fn negotiate(&mut self) {
        let cmd = self.command().await;
        assert_eq!(cmd["execute"], "qmp_capabilities");
        assert!(cmd.get("arguments").is_none(), "no oob offered: {cmd}");
        self.reply(&cmd, "{}").await;
    }

    async fn reply(&mut self, cmd: &Value, ret: &str) {
        let line = format!("{{\"return\": {ret}, \"id\": {}}}\r\n", cmd["id"]);
        self.send(line.as_bytes()).await;
    }
}

/// A connected client plus the server end, after greeting and negotiation.
async fn pair() -> (Client, Server) {
    let (a, b) = UnixStream::pair().expect("socketpair");
    let (r, w) = b.into_split();
    let mut server = Server {
        r: BufReader::new(r),
        w,
    };
    let srv = async {
        server.send(GREETING).await;
        server.negotiate().await;
    };
    let (client, ()) = tokio::join!(Client::from_stream(a), srv);
    (client.expect("handshake"), server)
}

async fn bounded<T>(f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(BOUND, f).await.expect("bounded")
}

#[tokio::test]
async fn garbage_line_is_a_protocol_error_for_pending_calls() {
    let (client, mut server) = pair().await;
    let closed = client.closed();
    let call = tokio::spawn({
        let c = client.clone();
        async move { c.execute("query-status", None).await }
    });
    server.command().await;
    server.send(b"this is not json\r\n").await;
    let r = bounded(call).await.unwrap();
    assert!(
        matches!(r, Err(Error::Protocol(ProtocolError::Malformed(_)))),
        "{r:?}"
    );
    assert!(matches!(
        bounded(closed).await,
        Error::Protocol(ProtocolError::Malformed(_))
    ));
    assert_eq!(
        client.execute("query-status", None).await,
        Err(Error::Disconnected)
    );
}

#[tokio::test]
async fn non_utf8_and_unknown_kind_are_typed() {
    let (client, mut server) = pair().await;
    let call = tokio::spawn({
        let c = client.clone();
        async move { c.execute("x", None).await }
    });
    server.command().await;
    server.send(b"{\"return\": \"\xc3\x28\"}\n").await;
    assert_eq!(
        bounded(call).await.unwrap(),
        Err(Error::Protocol(ProtocolError::NotUtf8 { offset: 12 }))
    );

    let (client, mut server) = pair().await;
    let call = tokio::spawn({
        let c = client.clone();
        async move { c.execute("x", None).await }
    });
    server.command().await;
    server.send(b"{\"surprise\": 1}\n").await;
    assert_eq!(
        bounded(call).await.unwrap(),
        Err(Error::Protocol(ProtocolError::UnknownKind {
            keys: "surprise".into()
        }))
    );
}

#[tokio::test]
async fn close_in_mid_reply_gives_disconnected() {
    let (client, mut server) = pair().await;
    let call = tokio::spawn({
        let c = client.clone();
        async move { c.execute("query-status", None).await }
    });
    let cmd = server.command().await;
    let half = format!(
        "{{\"return\": {{\"status\": \"runn\", \"id\": {}",
        cmd["id"]
    );
    server.send(half.as_bytes()).await;
    drop(server);
    assert_eq!(bounded(call).await.unwrap(), Err(Error::Disconnected));
    assert_eq!(bounded(client.closed()).await, Error::Disconnected);
}

#[tokio::test]
async fn oversized_message_is_rejected() {
    let (client, mut server) = pair().await;
    let call = tokio::spawn({
        let c = client.clone();
        async move { c.execute("x", None).await }
    });
    server.command().await;
    let chunk = vec![b'a'; 1 << 20];
    let writer = tokio::spawn(async move {
        server.send(b"{\"return\": \"").await;
        for _ in 0..17 {
            if server.w.write_all(&chunk).await.is_err() {
                break;
            }
        }
        server
    });
    assert_eq!(
        bounded(call).await.unwrap(),
        Err(Error::Protocol(ProtocolError::TooLarge {
            limit: qmp::MAX_MESSAGE_SIZE
        }))
    );
    drop(bounded(writer).await);
}

#[tokio::test]
async fn old_qemu_is_refused() {
    let (a, mut b) = UnixStream::pair().unwrap();
    b.write_all(b"{\"QMP\": {\"version\": {\"qemu\": {\"micro\": 1, \"minor\": 12, \"major\": 4}, \"package\": \"\"}, \"capabilities\": [\"oob\"]}}\r\n")
        .await
        .unwrap();
    assert_eq!(
        bounded(Client::from_stream(a)).await.unwrap_err(),
        Error::UnsupportedVersion {
            major: 4,
            minor: 12,
            micro: 1
        }
    );
}

#[tokio::test]
async fn missing_greeting_and_eof_before_greeting() {
    let (a, mut b) = UnixStream::pair().unwrap();
    b.write_all(b"{\"return\": {}}\n").await.unwrap();
    assert_eq!(
        bounded(Client::from_stream(a)).await.unwrap_err(),
        Error::Protocol(ProtocolError::Unexpected("return"))
    );
    let (a, b) = UnixStream::pair().unwrap();
    drop(b);
    assert_eq!(
        bounded(Client::from_stream(a)).await.unwrap_err(),
        Error::Disconnected
    );
}

#[tokio::test]
async fn replies_out_of_order_are_matched_by_id() {
    let (client, mut server) = pair().await;
    let tasks: Vec<_> = (0..8)
        .map(|i| {
            let c = client.clone();
            tokio::spawn(async move { c.execute(&format!("cmd-{i}"), None).await })
        })
        .collect();
    // All eight are in flight at once: read them all before answering any.
    let mut cmds = Vec::new();
    for _ in 0..8 {
        cmds.push(server.command().await);
    }
    // An event and an unmatched reply in between are harmless.
    server
        .send(b"{\"event\": \"X\", \"timestamp\": {\"seconds\": 1, \"microseconds\": 2}}\n")
        .await;
    server.send(b"{\"return\": {}, \"id\": 999999}\n").await;
    for cmd in cmds.iter().rev() {
        let echo = format!("\"{}\"", cmd["execute"].as_str().unwrap());
        server.reply(cmd, &echo).await;
    }
    for (i, t) in tasks.into_iter().enumerate() {
        assert_eq!(
            bounded(t).await.unwrap(),
            Ok(Value::String(format!("cmd-{i}")))
        );
    }
    // Ids are unique.
    let mut ids: Vec<u64> = cmds.iter().map(|c| c["id"].as_u64().unwrap()).collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), 8);
}

#[tokio::test]
async fn event_before_reply_is_seen_by_execute_until() {
    let (client, mut server) = pair().await;
    let c = client.clone();
    let call = tokio::spawn(async move {
        c.execute_until("device_del", None, |e| e.is_device_deleted("d0"), BOUND)
            .await
    });
    let cmd = server.command().await;
    server
        .send(b"{\"event\": \"DEVICE_DELETED\", \"data\": {\"path\": \"/machine/peripheral/d1\", \"device\": \"d1\"}, \"timestamp\": {\"seconds\": 1, \"microseconds\": 2}}\n")
        .await;
    server
        .send(b"{\"event\": \"DEVICE_DELETED\", \"data\": {\"device\": \"d0\"}, \"timestamp\": {\"seconds\": 3, \"microseconds\": 4}}\n")
        .await;
    server.reply(&cmd, "{}").await;
    let (reply, ev) = bounded(call).await.unwrap().unwrap();
    assert_eq!(reply, serde_json::json!({}));
    assert_eq!(ev.data["device"], "d0");
    assert_eq!(ev.timestamp, (3, 4));
}

#[tokio::test]
async fn execute_until_fails_when_connection_closes() {
    let (client, mut server) = pair().await;
    let c = client.clone();
    let call = tokio::spawn(async move {
        c.execute_until("system_powerdown", None, |e| e.name == "SHUTDOWN", BOUND)
            .await
    });
    let cmd = server.command().await;
    server.reply(&cmd, "{}").await;
    drop(server);
    assert_eq!(bounded(call).await.unwrap(), Err(Error::Disconnected));
}

/// The runtime spawns QMP calls onto tokio: their futures must be `Send`.
#[allow(dead_code)]
fn futures_are_send(c: &Client, f: std::fs::File) {
    fn is_send<T: Send>(_: T) {}
    is_send(c.execute("x", None));
    is_send(c.query_status());
    is_send(c.device_del("d"));
    is_send(c.system_powerdown(qmp::PowerdownWait::Powerdown));
    is_send(c.getfd("f", f));
    is_send(c.execute_until("x", None, |_| true, BOUND));
    is_send(c.closed());
    is_send(Client::connect("/x"));
}
