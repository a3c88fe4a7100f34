//! Non-blocking pipe and pty fds on tokio (AsyncFd): a process's stdio as
//! the agent sees it.

use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};

use nix::fcntl::{FcntlArg, OFlag, fcntl};
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;

/// Registers `fd` with the runtime for reads and writes.
#[allow(unsafe_code)]
pub fn register(fd: OwnedFd) -> io::Result<AsyncFd<OwnedFd>> {
    // SAFETY: the AsyncFd owns the OwnedFd, so the fd stays open (and is not
    // reused) for as long as it is registered.
    Ok(unsafe { AsyncFd::register_with_interest(fd, Interest::READABLE | Interest::WRITABLE) }?)
}

/// One end of a pipe or a pty master.
#[derive(Debug)]
pub struct FdStream {
    fd: AsyncFd<OwnedFd>,
}

impl FdStream {
    /// Wraps `fd`, making it non-blocking.
    pub fn new(fd: OwnedFd) -> io::Result<Self> {
        let flags = OFlag::from_bits_truncate(fcntl(fd.as_raw_fd(), FcntlArg::F_GETFL)?);
        fcntl(fd.as_raw_fd(), FcntlArg::F_SETFL(flags | OFlag::O_NONBLOCK))?;
        Ok(Self { fd: register(fd)? })
    }

    /// Reads what is available, waiting until something is; 0 = end of
    /// stream (EIO from a pty master whose slave is closed counts as that).
    pub async fn read(&self, buf: &mut [u8]) -> io::Result<usize> {
        let r = self
            .fd
            .async_io(Interest::READABLE, |fd| {
                Ok(nix::unistd::read(fd.as_raw_fd(), buf)?)
            })
            .await;
        match r {
            Err(e) if e.raw_os_error() == Some(libc::EIO) => Ok(0),
            r => r,
        }
    }

    /// Writes all of `data`.
    pub async fn write_all(&self, mut data: &[u8]) -> io::Result<()> {
        while !data.is_empty() {
            let n = self
                .fd
                .async_io(Interest::WRITABLE, |fd| {
                    Ok(nix::unistd::write(fd.as_fd(), data)?)
                })
                .await?;
            data = &data[n..];
        }
        Ok(())
    }
}
