//! The virtio-serial channel. The port is a character device, not a
//! listener: one byte stream for the life of the VM, with the host's
//! connection state visible only as POLLHUP (and `read` returning 0).
//!
//! The relay turns it into one clean ttrpc session per host connection:
//!
//! - While the host is away (POLLHUP), it waits for the next connection
//!   (edge-triggered epoll: the driver wakes the port's waiters on every host
//!   open and close).
//! - A connection starts in *sync* state: bytes are discarded until a
//!   `SANDVM-SYNC <nonce>` line ([`sandvm_agent_protocol::sync`]). Then a new
//!   in-memory duplex stream is handed to the ttrpc server as a fresh
//!   connection, `SANDVM-SYNC-OK <nonce>` goes back, and bytes are relayed.
//! - While relaying, host-to-guest bytes are tracked frame by frame (a ttrpc
//!   frame starts with a 4-byte big-endian length <= 4 MiB, so its first byte
//!   is 0). A non-zero byte at a frame boundary is a new host's sync line:
//!   the session is dropped and a new one starts. An oversized length is a
//!   corrupt stream: the session is dropped and the relay re-syncs.
//! - POLLHUP (`read` = 0) drops the session: the ttrpc server sees its
//!   connection close, and nothing of it reaches the next host.

use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};

use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags, EpollTimeout};
use std::path::Path;

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use sandvm_agent_protocol::sync::{
    FRAME_HEADER_LEN, LineScanner, MAX_FRAME_LEN, SYNC_PREFIX, sync_ok_line,
};
use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream, Interest};
use tokio::sync::mpsc;

/// Buffer of the in-memory stream between relay and ttrpc server.
const DUPLEX_BUF: usize = 256 * 1024;

/// An open virtio-serial port.
///
/// The port's fd sits in a private edge-triggered epoll set, and tokio
/// watches that epoll fd. (Registering the port itself with tokio does not
/// work: tokio keeps a POLLHUP as a final "closed" state, but on a port it
/// only means "no host right now"; the next connection would spin.) Every
/// host open or close, every arrival of data and every freed output buffer
/// wakes the port's waiters, which is an edge here.
#[derive(Debug)]
pub struct Port {
    fd: OwnedFd,
    ep: AsyncFd<EpollFd>,
}

/// An epoll instance tokio can watch.
#[derive(Debug)]
struct EpollFd(Epoll);

impl AsRawFd for EpollFd {
    fn as_raw_fd(&self) -> std::os::fd::RawFd {
        self.0.0.as_raw_fd()
    }
}

fn would_block(e: &nix::Error) -> bool {
    *e == nix::errno::Errno::EAGAIN
}

impl Port {
    /// Opens the port non-blocking.
    #[allow(unsafe_code)]
    pub fn open(path: &Path) -> io::Result<Self> {
        use std::os::unix::fs::OpenOptionsExt;
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
            .open(path)?;
        let fd = OwnedFd::from(f);
        let ep = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC)?;
        let flags = EpollFlags::EPOLLIN | EpollFlags::EPOLLOUT | EpollFlags::EPOLLET;
        ep.add(&fd, EpollEvent::new(flags, 0))?;
        // SAFETY: the AsyncFd owns the epoll fd, which stays open while registered.
        let ep = unsafe { AsyncFd::register_with_interest(EpollFd(ep), Interest::READABLE) }?;
        Ok(Self { fd, ep })
    }

    /// The host is not connected (level check, no waiting).
    fn hup_now(&self) -> bool {
        let mut fds = [PollFd::new(self.fd.as_fd(), PollFlags::POLLIN)];
        match poll(&mut fds, PollTimeout::ZERO) {
            Ok(_) => fds[0]
                .revents()
                .is_some_and(|r| r.contains(PollFlags::POLLHUP)),
            Err(_) => false,
        }
    }

    /// Waits for the port's next event (an edge: connect, hang-up, data, room).
    async fn wait_event(&self) -> io::Result<()> {
        loop {
            let mut g = self.ep.readable().await?;
            let mut evs = [EpollEvent::empty(); 4];
            match self.ep.get_ref().0.wait(&mut evs, EpollTimeout::ZERO) {
                Ok(0) => g.clear_ready(),
                Ok(_) => return Ok(()),
                Err(nix::errno::Errno::EINTR) => {}
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Waits until a host is connected.
    pub async fn wait_connected(&self) -> io::Result<()> {
        while self.hup_now() {
            self.wait_event().await?;
        }
        Ok(())
    }

    /// One non-blocking read: `None` if nothing is there, `Some(0)` if the
    /// host hung up.
    fn try_read(&self, buf: &mut [u8]) -> io::Result<Option<usize>> {
        match nix::unistd::read(self.fd.as_raw_fd(), buf) {
            Ok(n) => Ok(Some(n)),
            Err(e) if would_block(&e) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// One non-blocking write: `None` if the port cannot take data now.
    fn try_write(&self, data: &[u8]) -> io::Result<Option<usize>> {
        match nix::unistd::write(&self.fd, data) {
            Ok(n) => Ok(Some(n)),
            Err(e) if would_block(&e) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Reads what is there, waiting for something; 0 = the host hung up.
    /// (Only for code that does not write at the same time.)
    pub async fn read(&self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            if let Some(n) = self.try_read(buf)? {
                return Ok(n);
            }
            self.wait_event().await?;
        }
    }

    /// Writes all of `data`; fails if the host hangs up first.
    /// (Only for code that does not read at the same time.)
    pub async fn write_all(&self, mut data: &[u8]) -> io::Result<()> {
        while !data.is_empty() {
            match self.try_write(data)? {
                Some(n) => data = &data[n..],
                None if self.hup_now() => {
                    return Err(io::Error::new(io::ErrorKind::BrokenPipe, "host hung up"));
                }
                None => self.wait_event().await?,
            }
        }
        Ok(())
    }
}

/// Where host-to-guest bytes stand relative to ttrpc frames.
#[derive(Debug, Default)]
pub struct FrameTracker {
    hdr: [u8; FRAME_HEADER_LEN],
    hdr_len: usize,
    remaining: usize,
}

/// What [`FrameTracker::feed`] found.
#[derive(Debug, PartialEq, Eq)]
pub enum Feed {
    /// All bytes belong to the session.
    Forward,
    /// `data[..at]` belongs to the session; `data[at..]` starts a sync line.
    Resync {
        /// Where the sync line starts.
        at: usize,
    },
    /// A frame header with an impossible length: the stream is corrupt.
    Corrupt,
}

impl FrameTracker {
    /// Follows `data` through frame headers and payloads.
    pub fn feed(&mut self, data: &[u8]) -> Feed {
        let mut i = 0;
        while i < data.len() {
            if self.remaining > 0 {
                let take = self.remaining.min(data.len() - i);
                self.remaining -= take;
                i += take;
                continue;
            }
            if self.hdr_len == 0 && data[i] != 0 {
                return Feed::Resync { at: i };
            }
            self.hdr[self.hdr_len] = data[i];
            self.hdr_len += 1;
            i += 1;
            if self.hdr_len == FRAME_HEADER_LEN {
                let len = u32::from_be_bytes([self.hdr[0], self.hdr[1], self.hdr[2], self.hdr[3]])
                    as usize;
                if len > MAX_FRAME_LEN {
                    return Feed::Corrupt;
                }
                self.remaining = len;
                self.hdr_len = 0;
            }
        }
        Feed::Forward
    }
}

/// How a relayed session ended.
enum End {
    /// The host hung up.
    Hup,
    /// A new sync line (these bytes start it) or a corrupt stream (empty).
    Resync(Vec<u8>),
}

/// Serves ttrpc sessions on the port forever; each session's server end goes
/// to `sessions` (the ttrpc server's listener).
pub async fn relay(port: Port, sessions: mpsc::Sender<DuplexStream>) -> io::Result<()> {
    loop {
        port.wait_connected().await?;
        tracing::debug!("serial: host connected");
        let mut carry = Vec::new();
        loop {
            let Some((nonce, rest)) = await_sync(&port, std::mem::take(&mut carry)).await? else {
                break;
            };
            let (ours, theirs) = tokio::io::duplex(DUPLEX_BUF);
            if sessions.send(theirs).await.is_err() {
                return Err(io::Error::other("the ttrpc server is gone"));
            }
            if let Err(e) = port.write_all(&sync_ok_line(&nonce)).await {
                tracing::debug!(error = %e, "serial: cannot answer the sync");
                break;
            }
            tracing::debug!(nonce, "serial: new session");
            match pump(&port, ours, rest).await? {
                End::Hup => break,
                End::Resync(bytes) => {
                    tracing::debug!("serial: session replaced");
                    carry = bytes;
                }
            }
        }
        tracing::debug!("serial: host hung up");
    }
}

/// Discards bytes until a sync line; `None` if the host hung up first.
async fn await_sync(port: &Port, first: Vec<u8>) -> io::Result<Option<(String, Vec<u8>)>> {
    let mut scan = LineScanner::new(SYNC_PREFIX);
    scan.push(&first);
    let mut buf = vec![0u8; 4096];
    loop {
        if let Some(mut nonce) = scan.next_nonce() {
            while let Some(n) = scan.next_nonce() {
                nonce = n; // only the newest sync matters
            }
            return Ok(Some((nonce, scan.take_rest())));
        }
        let n = port.read(&mut buf).await?;
        if n == 0 {
            return Ok(None);
        }
        scan.push(&buf[..n]);
    }
}

/// Relays one session until the host hangs up or a new session starts.
/// One loop drives both directions: port operations are tried until they
/// would block before waiting for the port's next edge, so no edge is lost.
async fn pump(port: &Port, session: DuplexStream, first: Vec<u8>) -> io::Result<End> {
    let (mut from_srv, mut to_srv) = tokio::io::split(session);
    let mut track = FrameTracker::default();
    let mut inbound: Vec<u8> = Vec::new(); // host -> server, not yet written
    let mut outbound: Vec<u8> = Vec::new(); // server -> host, not yet written
    let mut pbuf = vec![0u8; 64 * 1024];
    let mut sbuf = vec![0u8; 64 * 1024];
    if let Some(end) = accept_inbound(&mut track, &first, &mut inbound) {
        return Ok(end);
    }
    loop {
        if inbound.is_empty() {
            match port.try_read(&mut pbuf)? {
                Some(0) => return Ok(End::Hup),
                Some(n) => {
                    if let Some(end) = accept_inbound(&mut track, &pbuf[..n], &mut inbound) {
                        return Ok(end);
                    }
                    continue;
                }
                None => {}
            }
        }
        if !outbound.is_empty()
            && let Some(n) = port.try_write(&outbound)?
        {
            outbound.drain(..n);
            continue;
        }
        tokio::select! {
            r = port.wait_event() => r?,
            r = to_srv.write(&inbound), if !inbound.is_empty() => {
                let n = r?;
                inbound.drain(..n);
            }
            r = from_srv.read(&mut sbuf), if outbound.is_empty() => {
                let n = r?;
                if n == 0 {
                    // the server closed the session (protocol error): re-sync
                    return Ok(End::Resync(Vec::new()));
                }
                outbound.extend_from_slice(&sbuf[..n]);
            }
        }
    }
}

/// Feeds host bytes through the frame tracker into `inbound`; `Some` when
/// the session must end.
fn accept_inbound(track: &mut FrameTracker, data: &[u8], inbound: &mut Vec<u8>) -> Option<End> {
    match track.feed(data) {
        Feed::Forward => {
            inbound.extend_from_slice(data);
            None
        }
        Feed::Resync { at } => Some(End::Resync(data[at..].to_vec())),
        Feed::Corrupt => {
            tracing::warn!("serial: corrupt ttrpc frame header; re-syncing");
            Some(End::Resync(Vec::new()))
        }
    }
}

/// Echo mode on the port: every line received goes back.
pub async fn echo(port: Port) -> io::Result<()> {
    let mut buf = vec![0u8; 4096];
    loop {
        port.wait_connected().await?;
        let mut line = Vec::new();
        loop {
            let n = port.read(&mut buf).await?;
            if n == 0 {
                break;
            }
            for &b in &buf[..n] {
                line.push(b);
                if b == b'\n' || line.len() >= 64 * 1024 {
                    if port.write_all(&line).await.is_err() {
                        break; // the host hung up
                    }
                    line.clear();
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(payload: &[u8]) -> Vec<u8> {
        let mut f = (payload.len() as u32).to_be_bytes().to_vec();
        f.extend_from_slice(&[0, 0, 0, 1, 1, 0]);
        f.extend_from_slice(payload);
        f
    }

    #[test]
    fn tracks_frames_across_reads() {
        let mut t = FrameTracker::default();
        let two = [frame(b"hello"), frame(b"")].concat();
        for chunk in two.chunks(3) {
            assert_eq!(t.feed(chunk), Feed::Forward);
        }
        let mut data = frame(b"x");
        data.extend_from_slice(b"SANDVM-SYNC abc\n");
        assert_eq!(t.feed(&data), Feed::Resync { at: 11 });
    }

    #[test]
    fn a_sync_inside_a_payload_is_just_payload() {
        let mut t = FrameTracker::default();
        assert_eq!(t.feed(&frame(b"SANDVM-SYNC abc\n")), Feed::Forward);
    }

    #[test]
    fn impossible_lengths_are_corrupt() {
        let mut t = FrameTracker::default();
        let mut h = ((MAX_FRAME_LEN + 1) as u32).to_be_bytes().to_vec();
        h.extend_from_slice(&[0; 6]);
        // first byte is 0 (a length below 16 MiB), so this is a header
        assert_eq!(t.feed(&h), Feed::Corrupt);
    }
}
