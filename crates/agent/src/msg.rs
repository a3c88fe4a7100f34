//! Length-prefixed JSON messages on the agent <-> launcher sync socket
//! (blocking; used by the launcher and, off the async runtime, the agent).

use std::io::{self, IoSlice, IoSliceMut, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;

use nix::sys::socket::{ControlMessage, ControlMessageOwned, MsgFlags, recvmsg, sendmsg};

use serde::Serialize;
use serde::de::DeserializeOwned;

/// Largest message (a launch config with a large environment).
pub const MAX_MSG: usize = 4 << 20;

/// Writes one message.
pub fn send<W: Write, T: Serialize>(w: &mut W, msg: &T) -> io::Result<()> {
    let body = serde_json::to_vec(msg).map_err(io::Error::other)?;
    let len = u32::try_from(body.len()).map_err(io::Error::other)?;
    let mut buf = len.to_be_bytes().to_vec();
    buf.extend_from_slice(&body);
    w.write_all(&buf)
}

/// Reads one message; `Ok(None)` on a clean end of stream before it.
pub fn recv<R: Read, T: DeserializeOwned>(r: &mut R) -> io::Result<Option<T>> {
    let mut len = [0u8; 4];
    match r.read_exact(&mut len) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let len = u32::from_be_bytes(len) as usize;
    if len > MAX_MSG {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("message of {len} bytes"),
        ));
    }
    let mut body = vec![0u8; len];
    r.read_exact(&mut body)?;
    serde_json::from_slice(&body)
        .map(Some)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

/// Writes one message with `fd` attached (SCM_RIGHTS on its first byte).
pub fn send_with_fd<T: Serialize>(sock: &mut UnixStream, msg: &T, fd: RawFd) -> io::Result<()> {
    let body = serde_json::to_vec(msg).map_err(io::Error::other)?;
    let len = u32::try_from(body.len()).map_err(io::Error::other)?;
    let mut buf = len.to_be_bytes().to_vec();
    buf.extend_from_slice(&body);
    let fds = [fd];
    let cmsg = [ControlMessage::ScmRights(&fds)];
    let n = sendmsg::<()>(
        sock.as_raw_fd(),
        &[IoSlice::new(&buf)],
        &cmsg,
        MsgFlags::empty(),
        None,
    )?;
    sock.write_all(&buf[n..])
}

/// Reads a socket with recvmsg, keeping any fds that come along.
pub struct FdReader<'a> {
    sock: &'a UnixStream,
    /// fds received so far, in order.
    pub fds: Vec<OwnedFd>,
}

impl<'a> FdReader<'a> {
    /// A reader on `sock`.
    pub fn new(sock: &'a UnixStream) -> Self {
        Self {
            sock,
            fds: Vec::new(),
        }
    }
}

impl Read for FdReader<'_> {
    #[allow(unsafe_code)]
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let mut space = nix::cmsg_space!([RawFd; 4]);
        let mut iov = [IoSliceMut::new(buf)];
        let m = recvmsg::<()>(
            self.sock.as_raw_fd(),
            &mut iov,
            Some(&mut space),
            MsgFlags::MSG_CMSG_CLOEXEC,
        )?;
        let n = m.bytes;
        for c in m.cmsgs()? {
            if let ControlMessageOwned::ScmRights(fds) = c {
                // SAFETY: the kernel just installed these fds for us.
                self.fds.extend(
                    fds.into_iter()
                        .map(|fd| unsafe { OwnedFd::from_raw_fd(fd) }),
                );
            }
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::LauncherMsg;

    #[test]
    fn round_trip_and_clean_eof() {
        let mut buf = Vec::new();
        send(&mut buf, &LauncherMsg::Pid(42)).unwrap();
        send(&mut buf, &LauncherMsg::Error("x".into())).unwrap();
        let mut r = &buf[..];
        assert_eq!(
            recv::<_, LauncherMsg>(&mut r).unwrap(),
            Some(LauncherMsg::Pid(42))
        );
        assert_eq!(
            recv::<_, LauncherMsg>(&mut r).unwrap(),
            Some(LauncherMsg::Error("x".into()))
        );
        assert_eq!(recv::<_, LauncherMsg>(&mut r).unwrap(), None);
        let huge = (MAX_MSG as u32 + 1).to_be_bytes();
        assert!(recv::<_, LauncherMsg>(&mut &huge[..]).is_err());
    }

    #[test]
    fn fds_travel_with_messages() {
        let (mut a, b) = UnixStream::pair().unwrap();
        let f = std::fs::File::open("/proc/self/status").unwrap();
        send_with_fd(&mut a, &LauncherMsg::Pty, f.as_raw_fd()).unwrap();
        send(&mut a, &LauncherMsg::Ready).unwrap();
        let mut r = FdReader::new(&b);
        assert_eq!(
            recv::<_, LauncherMsg>(&mut r).unwrap(),
            Some(LauncherMsg::Pty)
        );
        assert_eq!(r.fds.len(), 1);
        assert_eq!(
            recv::<_, LauncherMsg>(&mut r).unwrap(),
            Some(LauncherMsg::Ready)
        );
        let mut text = String::new();
        std::fs::File::from(r.fds.remove(0))
            .read_to_string(&mut text)
            .unwrap();
        assert!(text.contains("Name:"));
    }
}
