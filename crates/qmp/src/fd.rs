//! Passing file descriptors to QEMU with `SCM_RIGHTS`.

use std::io::{self, IoSlice};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};

use nix::sys::socket::{ControlMessage, MsgFlags, sendmsg};
use tokio::io::Interest;
use tokio::net::UnixStream;

/// Sends `bytes` with `fds` attached to the first byte, via `sendmsg(2)`.
///
/// Returns how many bytes were sent; the caller writes the rest normally
/// (ancillary data travels with the first segment only).
pub(crate) async fn send_with_fds(
    stream: &UnixStream,
    bytes: &[u8],
    fds: &[OwnedFd],
) -> io::Result<usize> {
    let raw: Vec<RawFd> = fds.iter().map(AsRawFd::as_raw_fd).collect();
    let sock = stream.as_raw_fd();
    stream
        .async_io(Interest::WRITABLE, || {
            let iov = [IoSlice::new(bytes)];
            let cmsg = [ControlMessage::ScmRights(&raw)];
            sendmsg::<()>(
                sock,
                &iov,
                &cmsg,
                MsgFlags::MSG_NOSIGNAL | MsgFlags::MSG_DONTWAIT,
                None,
            )
            .map_err(io::Error::from)
        })
        .await
}
