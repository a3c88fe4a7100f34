//! The write side: a caller writes its command's bytes straight to the
//! socket, under a lock, without a hop through another task.
//!
//! The write is non-blocking and happens before the caller's first `await`,
//! so a command is always written (or queued) whole even if its caller is
//! cancelled. Only when the socket cannot take the bytes at once (QEMU is
//! slow or stopped) does the rest go to a backlog, which a flusher task
//! writes out as the socket drains; while the backlog is not empty, later
//! commands join it, so bytes leave in the order their commands were sent.
//! Fds travel with `SCM_RIGHTS` on the first byte of their own command.

use std::collections::VecDeque;
use std::io::{self, IoSlice};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::{Arc, Mutex, MutexGuard};

use nix::sys::socket::{ControlMessage, MsgFlags, sendmsg};
use tokio::io::Interest;
use tokio::net::unix::OwnedWriteHalf;

use crate::client::Shared;
use crate::error::Error;

/// One command's bytes not yet (fully) written.
struct Chunk {
    bytes: Vec<u8>,
    /// Bytes of `bytes` already written.
    sent: usize,
    /// Fds to attach to the first byte; empty once it is written.
    fds: Vec<OwnedFd>,
}

#[derive(Default)]
struct Backlog {
    chunks: VecDeque<Chunk>,
    /// A flusher task is running.
    flushing: bool,
    /// The connection is closed: nothing more is written.
    closed: bool,
}

/// The socket's write half and its backlog.
pub(crate) struct Writer {
    half: OwnedWriteHalf,
    backlog: Mutex<Backlog>,
}

/// Why [`Writer::send`] did not take a command.
#[derive(Debug)]
pub(crate) enum SendError {
    /// The connection was closed before.
    Closed,
    /// The socket failed; the connection must be closed.
    Io(io::Error),
}

impl Writer {
    pub(crate) fn new(half: OwnedWriteHalf) -> Self {
        Self {
            half,
            backlog: Mutex::new(Backlog::default()),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Backlog> {
        // A panic while holding this lock leaves at worst a partly written
        // chunk, which the backlog still describes correctly.
        self.backlog.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The socket's fd (for `shutdown`).
    pub(crate) fn raw_fd(&self) -> RawFd {
        self.half.as_ref().as_raw_fd()
    }

    /// Writes one command now, or queues what the socket cannot take yet
    /// (starting the flusher). Never waits.
    pub(crate) fn send(
        &self,
        shared: &Arc<Shared>,
        bytes: Vec<u8>,
        fds: Vec<OwnedFd>,
    ) -> Result<(), SendError> {
        let mut st = self.lock();
        if st.closed {
            return Err(SendError::Closed);
        }
        let mut chunk = Chunk {
            bytes,
            sent: 0,
            fds,
        };
        if st.chunks.is_empty() {
            match self.write_chunk(&mut chunk) {
                Ok(()) if chunk.sent == chunk.bytes.len() => return Ok(()),
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(SendError::Io(e)),
            }
        }
        st.chunks.push_back(chunk);
        if !st.flushing {
            st.flushing = true;
            tokio::spawn(flush(shared.clone()));
        }
        Ok(())
    }

    /// One non-blocking write of what is left of `chunk` (with its fds if
    /// none of it is written yet); advances `chunk.sent`.
    fn write_chunk(&self, chunk: &mut Chunk) -> io::Result<()> {
        let rest = &chunk.bytes[chunk.sent..];
        let n = if chunk.fds.is_empty() {
            self.half.try_write(rest)?
        } else {
            let raw: Vec<RawFd> = chunk.fds.iter().map(AsRawFd::as_raw_fd).collect();
            let sock = self.raw_fd();
            self.half.as_ref().try_io(Interest::WRITABLE, || {
                let iov = [IoSlice::new(rest)];
                let cmsg = [ControlMessage::ScmRights(&raw)];
                sendmsg::<()>(
                    sock,
                    &iov,
                    &cmsg,
                    MsgFlags::MSG_NOSIGNAL | MsgFlags::MSG_DONTWAIT,
                    None,
                )
                .map_err(io::Error::from)
            })?
        };
        if n > 0 {
            // QEMU has its own copies now; ours are closed here.
            chunk.fds.clear();
        }
        chunk.sent += n;
        Ok(())
    }

    /// Writes queued chunks until the backlog is empty (`Ok(true)`, and the
    /// flusher is marked gone) or the socket is full (`Ok(false)`).
    fn drain(&self) -> io::Result<bool> {
        let mut st = self.lock();
        loop {
            if st.closed {
                st.flushing = false;
                return Ok(true);
            }
            let Some(chunk) = st.chunks.front_mut() else {
                st.flushing = false;
                return Ok(true);
            };
            match self.write_chunk(chunk) {
                Ok(()) if chunk.sent == chunk.bytes.len() => drop(st.chunks.pop_front()),
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) => {
                    st.flushing = false;
                    return Err(e);
                }
            }
        }
    }

    /// Stops all writing and drops the backlog (closing its fds).
    pub(crate) fn close(&self) {
        let chunks = {
            let mut st = self.lock();
            st.closed = true;
            std::mem::take(&mut st.chunks)
        };
        drop(chunks);
    }
}

/// Writes the backlog out as the socket drains; ends when it is empty or
/// the connection closes. A write blocked on a stopped QEMU never outlives
/// the connection.
async fn flush(shared: Arc<Shared>) {
    let mut closed = shared.closed_watch();
    loop {
        let writer = shared.writer();
        let ready = tokio::select! {
            r = writer.half.writable() => r,
            _ = closed.wait_for(Option::is_some) => return,
        };
        let result = ready.and_then(|()| writer.drain());
        match result {
            Ok(true) => return,
            Ok(false) => {}
            Err(e) => {
                tracing::warn!(error = %e, "QMP write failed");
                shared.close(Error::Disconnected);
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::{BufRead, BufReader, IoSliceMut, Write};
    use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};
    use std::os::unix::net::UnixStream as StdStream;
    use std::time::Duration;

    use nix::sys::socket::{ControlMessageOwned, MsgFlags, recvmsg};
    use serde_json::{Value, json};

    use crate::{Client, Error};

    const GREETING: &[u8] = b"{\"QMP\": {\"version\": {\"qemu\": {\"micro\": 0, \"minor\": 0, \"major\": 10}, \"package\": \"\"}, \"capabilities\": []}}\n";
    const BOUND: Duration = Duration::from_secs(30);

    /// A client on one end of a socketpair, negotiated by a blocking server
    /// thread, which then hands back its end.
    async fn pair() -> (Client, StdStream) {
        let (a, b) = tokio::net::UnixStream::pair().expect("socketpair");
        // A small send buffer, so the backlog tests fill it whatever the
        // host's default (the kernel doubles this value).
        nix::sys::socket::setsockopt(&a, nix::sys::socket::sockopt::SndBuf, &32768)
            .expect("SO_SNDBUF");
        let b = b.into_std().expect("std stream");
        b.set_nonblocking(false).expect("blocking");
        let server = std::thread::spawn(move || {
            let mut b = b;
            b.write_all(GREETING).expect("greeting");
            let mut line = String::new();
            BufReader::new(&b).read_line(&mut line).expect("negotiate");
            let cmd: Value = serde_json::from_str(&line).expect("JSON");
            writeln!(b, "{{\"return\": {{}}, \"id\": {}}}", cmd["id"]).expect("reply");
            b
        });
        let client = Client::from_stream(a).await.expect("handshake");
        (client, server.join().expect("server thread"))
    }

    /// Reads one byte per `recvmsg`, as QEMU's monitor does, until `lines`
    /// lines are in; returns them with the offsets (into all bytes read) of
    /// the bytes that carried fds, and the fds.
    #[allow(unsafe_code)]
    fn read_bytewise(s: &StdStream, lines: usize) -> (Vec<u8>, Vec<(usize, Vec<OwnedFd>)>) {
        let mut all = Vec::new();
        let mut fds = Vec::new();
        while all.iter().filter(|&&b| b == b'\n').count() < lines {
            let mut byte = [0u8; 1];
            let mut iov = [IoSliceMut::new(&mut byte)];
            let mut space = nix::cmsg_space!([RawFd; 4]);
            let msg = recvmsg::<()>(s.as_raw_fd(), &mut iov, Some(&mut space), MsgFlags::empty())
                .expect("recvmsg");
            assert_eq!(msg.bytes, 1, "peer closed");
            for c in msg.cmsgs().expect("cmsgs") {
                if let ControlMessageOwned::ScmRights(got) = c {
                    // SAFETY: the kernel just installed these fds for us.
                    let owned = got.into_iter().map(|f| unsafe { OwnedFd::from_raw_fd(f) });
                    fds.push((all.len(), owned.collect()));
                }
            }
            all.push(byte[0]);
        }
        (all, fds)
    }

    fn ids(lines: &[u8]) -> Vec<u64> {
        lines
            .split(|&b| b == b'\n')
            .filter(|l| !l.is_empty())
            .map(|l| {
                let v: Value = serde_json::from_slice(l).expect("whole JSON command");
                v["id"].as_u64().expect("id")
            })
            .collect()
    }

    fn reply_all(s: &mut StdStream, ids: &[u64]) {
        let mut out = Vec::new();
        for id in ids {
            out.extend_from_slice(format!("{{\"return\": {{}}, \"id\": {id}}}\n").as_bytes());
        }
        s.write_all(&out).expect("replies");
    }

    #[tokio::test]
    async fn direct_writes_keep_order_and_fds_ride_their_own_command() {
        let (client, server) = pair().await;
        let (keep, _peer) = StdStream::pair().expect("an fd to pass");
        let a = tokio::spawn({
            let c = client.clone();
            async move { c.execute("a", None).await }
        });
        let b = tokio::spawn({
            let c = client.clone();
            let fd = keep.as_fd().try_clone_to_owned().expect("dup");
            async move {
                c.execute_with_fds("getfd", Some(json!({"fdname": "x"})), &[fd])
                    .await
            }
        });
        let c = tokio::spawn({
            let c = client.clone();
            async move { c.execute("c", None).await }
        });
        let reader = std::thread::spawn(move || {
            let (bytes, fds) = read_bytewise(&server, 3);
            (server, bytes, fds)
        });
        let (mut server, bytes, fds) = tokio::task::spawn_blocking(move || reader.join())
            .await
            .expect("join")
            .expect("reader thread");
        let text = String::from_utf8(bytes.clone()).expect("UTF-8");
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[0].contains("\"execute\":\"a\""), "{text}");
        assert!(lines[1].contains("\"execute\":\"getfd\""), "{text}");
        assert!(lines[2].contains("\"execute\":\"c\""), "{text}");
        assert_eq!(fds.len(), 1, "one fd message");
        assert_eq!(fds[0].0, lines[0].len() + 1, "fd on getfd's first byte");
        assert_eq!(fds[0].1.len(), 1);
        reply_all(&mut server, &ids(&bytes));
        for t in [a, b, c] {
            let r = tokio::time::timeout(BOUND, t).await.expect("bounded");
            assert_eq!(r.expect("task"), Ok(json!({})));
        }
    }

    /// Commands the socket cannot take at once go to the backlog; they are
    /// written whole, in order (fds on their own command's first byte), even
    /// for callers cancelled in the meantime.
    #[tokio::test]
    async fn backlog_keeps_order_and_fds_when_the_socket_is_full() {
        let (client, server) = pair().await;
        let big = "y".repeat(4096);
        let (keep, _peer) = StdStream::pair().expect("an fd to pass");
        let mut tasks = Vec::new();
        for i in 0..200 {
            let c = client.clone();
            let arg = Some(json!({ "pad": big }));
            if i == 150 {
                let fd = keep.as_fd().try_clone_to_owned().expect("dup");
                tasks.push(tokio::spawn(async move {
                    c.execute_with_fds("getfd", arg, &[fd]).await
                }));
            } else {
                tasks.push(tokio::spawn(async move { c.execute("x", arg).await }));
            }
        }
        // Let every task write or queue its command; nobody reads yet, so
        // about 800 KiB cannot all fit in the socket buffer.
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(
            client.shared().writer().lock().flushing,
            "the socket buffer did not fill: no backlog to test"
        );
        // Cancel a few callers whose commands sit in the backlog.
        for t in &tasks[180..190] {
            t.abort();
        }
        let reader = std::thread::spawn(move || {
            let mut server = server;
            let mut r = BufReader::new(server.try_clone().expect("clone"));
            let mut ids = Vec::new();
            let mut getfd_at = None;
            for n in 0..200 {
                let mut line = String::new();
                r.read_line(&mut line).expect("line");
                let v: Value = serde_json::from_str(&line).expect("whole JSON command");
                if v["execute"] == "getfd" {
                    getfd_at = Some(n);
                }
                ids.push(v["id"].as_u64().expect("id"));
            }
            reply_all(&mut server, &ids);
            (server, ids, getfd_at)
        });
        let (_server, ids, getfd_at) = tokio::task::spawn_blocking(move || reader.join())
            .await
            .expect("join")
            .expect("reader thread");
        let mut sorted = ids.clone();
        sorted.sort_unstable();
        assert_eq!(ids, sorted, "written in the order sent");
        assert_eq!(getfd_at, Some(150));
        for (i, t) in tasks.into_iter().enumerate() {
            let r = tokio::time::timeout(BOUND, t).await.expect("bounded");
            match r {
                Ok(r) => assert_eq!(r, Ok(json!({}))),
                Err(e) => assert!(e.is_cancelled() && (180..190).contains(&i), "{e}"),
            }
        }
        assert!(!client.shared().writer().lock().flushing);
    }

    /// A peer that goes away with commands in the backlog fails them all,
    /// and the flusher ends.
    #[tokio::test]
    async fn disconnect_fails_pending_and_backlogged_commands() {
        let (client, server) = pair().await;
        let big = "z".repeat(4096);
        let tasks: Vec<_> = (0..200)
            .map(|_| {
                let c = client.with_timeout(None);
                let arg = Some(json!({ "pad": big }));
                tokio::spawn(async move { c.execute("x", arg).await })
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(client.shared().writer().lock().flushing);
        drop(server);
        for t in tasks {
            let r = tokio::time::timeout(BOUND, t).await.expect("bounded");
            assert_eq!(r.expect("task"), Err(Error::Disconnected));
        }
        assert_eq!(
            tokio::time::timeout(BOUND, client.closed()).await,
            Ok(Error::Disconnected)
        );
        assert!(client.shared().writer().lock().chunks.is_empty());
        assert_eq!(client.execute("y", None).await, Err(Error::Disconnected));
    }
}
