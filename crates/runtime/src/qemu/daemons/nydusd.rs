//! nydusd in virtiofs mode, as Kata runs it (the command line is
//! [`crate::plan::sharedfs::nydusd_args`]): once its sockets listen, the
//! share is mounted as a passthrough filesystem through the HTTP API, at
//! `/containers` (Kata's `sharedPathInGuest`): in the guest the shared folder
//! appears as `containers/` under the `kataShared` mount.

use super::{log_tail, wait_for_listeners};
use crate::error::{HypervisorError, Result};
use crate::plan::sharedfs::{FS_API_SOCKET, FS_SOCKET, NYDUS_MOUNTPOINT, NYDUS_PASSTHROUGH_FS};
use std::path::Path;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Wait for both sockets to listen, then mount the share through the API.
pub async fn ready(
    pid: i32,
    dir: &Path,
    share: &Path,
    log: &Path,
    timeout: Duration,
) -> Result<()> {
    let failed = |reason: String| HypervisorError::Daemon {
        daemon: "nydusd",
        reason,
        log: log_tail(log),
    };
    wait_for_listeners(dir, &[FS_API_SOCKET, FS_SOCKET], pid, timeout)
        .await
        .map_err(|e| failed(e.to_string()))?;
    let body = serde_json::json!({
        "fs_type": NYDUS_PASSTHROUGH_FS,
        "source": share.display().to_string(),
        "config": "",
    })
    .to_string();
    let (status, reply) = tokio::time::timeout(
        timeout,
        http(
            &dir.join(FS_API_SOCKET),
            "POST",
            &format!("/api/v1/mount?mountpoint={NYDUS_MOUNTPOINT}"),
            &body,
        ),
    )
    .await
    .map_err(|_| failed(format!("mount API did not answer within {timeout:?}")))?
    .map_err(|e| failed(format!("mount API: {e}")))?;
    if status != 204 {
        return Err(failed(format!(
            "passthrough mount of {} failed (HTTP {status}): {}",
            share.display(),
            reply.trim()
        )));
    }
    Ok(())
}

/// One HTTP/1.1 request over a Unix socket; returns the status and the body.
pub async fn http(
    sock: &Path,
    method: &str,
    path: &str,
    body: &str,
) -> std::io::Result<(u16, String)> {
    let mut s = tokio::net::UnixStream::connect(sock).await?;
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).await?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let n = s.read(&mut chunk).await?;
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(done) = complete(&buf) {
            buf.truncate(done);
            break;
        }
    }
    parse_response(&buf)
}

/// The length of a complete response in `buf` (headers plus Content-Length), if complete.
fn complete(buf: &[u8]) -> Option<usize> {
    let text = String::from_utf8_lossy(buf);
    let head_end = text.find("\r\n\r\n")? + 4;
    let len = text[..head_end]
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim()
                .eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse::<usize>().ok())?
        })
        .unwrap_or(0);
    (buf.len() >= head_end + len).then_some(head_end + len)
}

fn parse_response(buf: &[u8]) -> std::io::Result<(u16, String)> {
    let text = String::from_utf8_lossy(buf);
    let bad = || std::io::Error::new(std::io::ErrorKind::InvalidData, "not an HTTP response");
    let status = text
        .lines()
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|c| c.parse::<u16>().ok())
        .ok_or_else(bad)?;
    let body = text
        .find("\r\n\r\n")
        .map_or(String::new(), |i| text[i + 4..].to_string());
    Ok((status, body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn responses_are_parsed_and_completed() {
        let r = b"HTTP/1.1 204 \r\nServer: Nydus API\r\n\r\n";
        assert_eq!(complete(r), Some(r.len()));
        assert_eq!(parse_response(r).unwrap(), (204, String::new()));
        let r = b"HTTP/1.1 500 Internal\r\nContent-Length: 5\r\n\r\nbo";
        assert_eq!(complete(r), None);
        let r = b"HTTP/1.1 500 Internal\r\nContent-Length: 5\r\n\r\nboom!";
        assert_eq!(parse_response(r).unwrap(), (500, "boom!".into()));
        assert!(parse_response(b"garbage").is_err());
    }
}
