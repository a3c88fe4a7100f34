//! The guest console: interactive attach, send/expect for scripts, and the
//! wait for the guest's ready line.

use anyhow::{Context, Result};
use std::path::Path;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;

/// `--expect` did not match before the timeout.
#[derive(Debug, thiserror::Error)]
#[error("Console output did not match {pattern:?} within {after:?}")]
pub struct ExpectTimeout {
    /// The regex.
    pub pattern: String,
    /// The timeout.
    pub after: Duration,
}

async fn connect(sock: &Path) -> Result<UnixStream> {
    UnixStream::connect(sock)
        .await
        .with_context(|| format!("cannot connect to console {}", sock.display()))
}

/// Read from `stream` into `buf` until `done(buf)` or the deadline.
async fn read_until(
    stream: &mut UnixStream,
    buf: &mut String,
    timeout: Duration,
    done: impl Fn(&str) -> bool,
) -> Result<bool> {
    let deadline = tokio::time::Instant::now() + timeout;
    let mut chunk = [0u8; 4096];
    while !done(buf) {
        match tokio::time::timeout_at(deadline, stream.read(&mut chunk)).await {
            Err(_) => return Ok(false),
            Ok(Ok(0)) => anyhow::bail!("console closed (the VM stopped?)"),
            Ok(Ok(n)) => buf.push_str(&String::from_utf8_lossy(&chunk[..n])),
            Ok(Err(e)) => return Err(e).context("console read"),
        }
    }
    Ok(true)
}

/// Wait until the guest has printed `line`: in the log already, or on the socket.
pub async fn wait_ready(sock: &Path, log: &Path, line: &str, timeout: Duration) -> Result<()> {
    // Connect first, then read the log: whatever came before the connection is
    // in the log, whatever comes after arrives on the socket.
    let mut s = connect(sock).await?;
    let logged = tokio::fs::read_to_string(log).await.unwrap_or_default();
    if logged.contains(line) {
        return Ok(());
    }
    let mut buf = String::new();
    if read_until(&mut s, &mut buf, timeout, |b| b.contains(line)).await? {
        Ok(())
    } else {
        Err(ExpectTimeout {
            pattern: line.to_string(),
            after: timeout,
        }
        .into())
    }
}

/// Write `send` (plus a newline) and read until `expect` matches; returns what was read.
pub async fn send_expect(
    sock: &Path,
    send: Option<&str>,
    expect: Option<&str>,
    timeout: Duration,
) -> Result<String> {
    let re = expect
        .map(|p| {
            regex::Regex::new(&format!("(?m){p}"))
                .with_context(|| format!("bad --expect regex {p:?}"))
        })
        .transpose()?;
    let mut s = connect(sock).await?;
    if let Some(line) = send {
        s.write_all(format!("{line}\n").as_bytes())
            .await
            .context("console write")?;
    }
    let mut buf = String::new();
    match re {
        None => {
            // Nothing to wait for: collect briefly what the guest answers.
            let _ = read_until(&mut s, &mut buf, Duration::from_millis(500), |_| false).await;
            Ok(buf)
        }
        Some(re) => {
            if read_until(&mut s, &mut buf, timeout, |b| re.is_match(b)).await? {
                Ok(buf)
            } else {
                print!("{buf}");
                Err(ExpectTimeout {
                    pattern: re.as_str().trim_start_matches("(?m)").to_string(),
                    after: timeout,
                }
                .into())
            }
        }
    }
}

/// Attach the terminal to the console until Ctrl-] or the console closes.
pub async fn interactive(sock: &Path) -> Result<()> {
    use nix::sys::termios;
    let s = connect(sock).await?;
    let stdin_fd = std::io::stdin();
    let saved = termios::tcgetattr(&stdin_fd).ok();
    if let Some(t) = &saved {
        let mut raw = t.clone();
        termios::cfmakeraw(&mut raw);
        let _ = termios::tcsetattr(&stdin_fd, termios::SetArg::TCSANOW, &raw);
        eprint!("Connected to {}; Ctrl-] detaches.\r\n", sock.display());
    }
    let (mut rd, mut wr) = s.into_split();
    let to_guest = async {
        let mut stdin = tokio::io::stdin();
        let mut b = [0u8; 1024];
        loop {
            let n = stdin.read(&mut b).await?;
            if n == 0 {
                return Ok::<_, std::io::Error>(());
            }
            if let Some(i) = b[..n].iter().position(|&c| c == 0x1d) {
                wr.write_all(&b[..i]).await?;
                return Ok(());
            }
            wr.write_all(&b[..n]).await?;
        }
    };
    let from_guest = async {
        let mut out = tokio::io::stdout();
        tokio::io::copy(&mut rd, &mut out).await.map(|_| ())
    };
    let r = tokio::select! { r = to_guest => r, r = from_guest => r };
    if let Some(t) = &saved {
        let _ = termios::tcsetattr(&stdin_fd, termios::SetArg::TCSANOW, t);
        eprint!("\r\n");
    }
    r.context("console")
}
