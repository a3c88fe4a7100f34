//! A container process as the agent holds it: pid, exit status, stdio.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::sync::Mutex;

use crate::reaper::{ExitWatch, wait_exit};
use crate::spawn::Launched;
use crate::stream::FdStream;

/// kill(2) with a raw signal number (nix's `Signal` has no real-time signals).
#[allow(unsafe_code)]
pub fn kill(pid: i32, sig: i32) -> io::Result<()> {
    // SAFETY: kill(2) takes plain integers and touches no memory of ours.
    if unsafe { libc::kill(pid, sig) } < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// Which output stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Output {
    /// stdout (or the terminal).
    Stdout,
    /// stderr (none with a terminal).
    Stderr,
}

/// One process: a container's init or an exec.
#[derive(Debug)]
pub struct Process {
    /// Guest pid.
    pub pid: i32,
    exit: ExitWatch,
    stdin: Mutex<Option<FdStream>>,
    stdout: Mutex<Option<FdStream>>,
    stderr: Mutex<Option<FdStream>>,
    pty: Option<OwnedFd>,
    stdout_eof: AtomicBool,
    stderr_eof: AtomicBool,
    waited: AtomicBool,
}

fn stream(fd: Option<OwnedFd>) -> io::Result<Option<FdStream>> {
    fd.map(FdStream::new).transpose()
}

impl Process {
    /// Takes over what the launcher produced.
    pub fn new(l: Launched) -> io::Result<Self> {
        let has_stderr = l.io.stderr.is_some();
        Ok(Self {
            pid: l.pid,
            exit: l.exit,
            stdin: Mutex::new(stream(l.io.stdin)?),
            stdout: Mutex::new(stream(l.io.stdout)?),
            stderr: Mutex::new(stream(l.io.stderr)?),
            pty: l.io.pty,
            stdout_eof: AtomicBool::new(false),
            stderr_eof: AtomicBool::new(!has_stderr),
            waited: AtomicBool::new(false),
        })
    }

    /// Waits for the exit status (128 + signal for a signal death).
    pub async fn wait(&self) -> i32 {
        let code = wait_exit(&mut self.exit.clone()).await;
        self.waited.store(true, Ordering::SeqCst);
        code
    }

    /// The exit status, if it has exited.
    pub fn exited(&self) -> Option<i32> {
        *self.exit.borrow()
    }

    /// Reads up to `len` bytes, waiting until some are available; empty at
    /// the end of the stream (or when there is no such stream).
    pub async fn read(&self, which: Output, len: usize) -> io::Result<Vec<u8>> {
        let (lock, eof) = match which {
            Output::Stdout => (&self.stdout, &self.stdout_eof),
            Output::Stderr => (&self.stderr, &self.stderr_eof),
        };
        let guard = lock.lock().await;
        let Some(s) = guard.as_ref() else {
            return Ok(vec![]);
        };
        let mut buf = vec![0u8; len];
        let n = s.read(&mut buf).await?;
        if n == 0 {
            eof.store(true, Ordering::SeqCst);
        }
        buf.truncate(n);
        Ok(buf)
    }

    /// Writes to stdin.
    pub async fn write_stdin(&self, data: &[u8]) -> io::Result<()> {
        let guard = self.stdin.lock().await;
        let s = guard
            .as_ref()
            .ok_or_else(|| io::Error::new(io::ErrorKind::BrokenPipe, "stdin is closed"))?;
        s.write_all(data).await
    }

    /// Closes stdin (the process reads end-of-file; with a terminal, the
    /// agent only drops its writer).
    pub async fn close_stdin(&self) {
        self.stdin.lock().await.take();
    }

    /// Sets the terminal's window size.
    #[allow(unsafe_code)]
    pub fn resize(&self, rows: u16, cols: u16) -> io::Result<()> {
        let pty = self.pty.as_ref().ok_or_else(|| {
            io::Error::new(io::ErrorKind::Unsupported, "the process has no terminal")
        })?;
        let ws = libc::winsize {
            ws_row: rows,
            ws_col: cols,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        // SAFETY: TIOCSWINSZ on our pty master with a valid winsize.
        let rc = unsafe {
            libc::ioctl(
                pty.as_raw_fd(),
                libc::TIOCSWINSZ,
                &ws as *const libc::winsize,
            )
        };
        if rc < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(())
        }
    }

    /// Sends signal `sig` (1..=64), unless it has exited (its pid may be reused).
    pub fn signal(&self, sig: i32) -> io::Result<()> {
        if self.exited().is_some() {
            return Ok(());
        }
        kill(self.pid, sig)
    }

    /// Waited for and both outputs drained: the agent may forget it.
    pub fn finished(&self) -> bool {
        self.waited.load(Ordering::SeqCst)
            && self.stdout_eof.load(Ordering::SeqCst)
            && self.stderr_eof.load(Ordering::SeqCst)
    }
}
