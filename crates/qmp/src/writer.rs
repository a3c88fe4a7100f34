//! The single writer task: every byte sent to QEMU goes through it, so a
//! command is always written whole even if its caller is cancelled.

use std::os::fd::OwnedFd;
use std::sync::Arc;

use tokio::io::AsyncWriteExt;
use tokio::net::unix::OwnedWriteHalf;
use tokio::sync::mpsc;

use crate::client::Shared;
use crate::error::Error;
use crate::fd::send_with_fds;

/// One encoded command, with fds to pass alongside it.
pub(crate) struct WriteRequest {
    pub(crate) bytes: Vec<u8>,
    pub(crate) fds: Vec<OwnedFd>,
}

/// Writes requests in the order received, coalescing queued ones into one
/// `write`. Ends when every sender is gone or a write fails.
pub(crate) async fn run(
    mut half: OwnedWriteHalf,
    mut rx: mpsc::UnboundedReceiver<WriteRequest>,
    shared: Arc<Shared>,
) {
    let mut buf: Vec<u8> = Vec::with_capacity(8192);
    let mut next: Option<WriteRequest> = None;
    let mut closed = shared.closed_watch();
    loop {
        let req = match next.take() {
            Some(r) => r,
            None => tokio::select! {
                r = rx.recv() => match r {
                    Some(r) => r,
                    None => break,
                },
                // The reader saw EOF or a protocol error: drop our half too,
                // so the socket is really closed.
                _ = closed.wait_for(Option::is_some) => break,
            },
        };
        let write = async {
            if req.fds.is_empty() {
                buf.clear();
                buf.extend_from_slice(&req.bytes);
                // Coalesce whatever else is already queued (up to an fd request).
                while buf.len() < 64 * 1024 {
                    match rx.try_recv() {
                        Ok(r) if r.fds.is_empty() => buf.extend_from_slice(&r.bytes),
                        Ok(r) => {
                            next = Some(r);
                            break;
                        }
                        Err(_) => break,
                    }
                }
                half.write_all(&buf).await
            } else {
                match send_with_fds(half.as_ref(), &req.bytes, &req.fds).await {
                    Ok(n) if n < req.bytes.len() => half.write_all(&req.bytes[n..]).await,
                    Ok(_) => Ok(()),
                    Err(e) => Err(e),
                }
            }
        };
        // A write blocked on a stopped QEMU must not outlive the connection.
        let result = tokio::select! {
            r = write => r,
            _ = closed.wait_for(Option::is_some) => break,
        };
        // `req.fds` (our duplicates) are closed here; QEMU has its own.
        if let Err(e) = result {
            tracing::warn!(error = %e, "QMP write failed");
            shared.close(Error::Disconnected);
            break;
        }
    }
    // Let QEMU see EOF once no client handle is left or the connection
    // failed; dropping `half` (with the reader's half) closes the socket.
    let _ = half.shutdown().await;
}
