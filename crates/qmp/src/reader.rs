//! The read side: splitting the byte stream into lines and dispatching them.

use std::sync::Arc;

use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::sync::broadcast;

use crate::client::Shared;
use crate::error::Error;
use crate::events::Event;
use crate::protocol::{Message, ProtocolError, parse_message};

/// Why [`LineReader::next_line`] failed.
#[derive(Debug)]
pub(crate) enum ReadError {
    /// Underlying I/O error.
    Io(std::io::Error),
    /// The line exceeded the size limit, or EOF cut a line short.
    Protocol(ProtocolError),
}

/// Initial read buffer size.
const INITIAL_BUFFER: usize = 8192;
/// An idle buffer larger than this is shrunk back to [`INITIAL_BUFFER`].
const SHRINK_ABOVE: usize = 1 << 20;

/// Buffered reader that yields `\n`-terminated lines, bounded in size.
pub(crate) struct LineReader<R> {
    inner: R,
    buf: Vec<u8>,
    /// Start of unconsumed data.
    start: usize,
    /// End of valid data.
    end: usize,
    /// Bytes in `start..scanned` are known to hold no newline.
    scanned: usize,
    max: usize,
}

impl<R: AsyncRead + Unpin> LineReader<R> {
    pub(crate) fn new(inner: R, max: usize) -> Self {
        Self {
            inner,
            buf: vec![0; INITIAL_BUFFER],
            start: 0,
            end: 0,
            scanned: 0,
            max,
        }
    }

    /// Returns the next line (without `\n`), or `None` at a clean EOF.
    pub(crate) async fn next_line(&mut self) -> Result<Option<&[u8]>, ReadError> {
        loop {
            if let Some(pos) = self.buf[self.scanned..self.end]
                .iter()
                .position(|&b| b == b'\n')
            {
                let line_start = self.start;
                let line_end = self.scanned + pos;
                self.start = line_end + 1;
                self.scanned = self.start;
                if line_end - line_start > self.max {
                    return Err(ReadError::Protocol(ProtocolError::TooLarge {
                        limit: self.max,
                    }));
                }
                return Ok(Some(&self.buf[line_start..line_end]));
            }
            self.scanned = self.end;
            if self.end - self.start > self.max {
                return Err(ReadError::Protocol(ProtocolError::TooLarge {
                    limit: self.max,
                }));
            }
            if self.start == self.end {
                self.start = 0;
                self.end = 0;
                self.scanned = 0;
                // Give back memory after an unusually large message.
                if self.buf.len() > SHRINK_ABOVE {
                    self.buf = vec![0; INITIAL_BUFFER];
                }
            } else if self.end == self.buf.len() && self.start > 0 {
                self.buf.copy_within(self.start..self.end, 0);
                self.end -= self.start;
                self.scanned = self.end;
                self.start = 0;
            }
            if self.end == self.buf.len() {
                let grown = (self.buf.len() * 2).min(self.max + 2).max(self.end + 1);
                self.buf.resize(grown, 0);
            }
            let n = self
                .inner
                .read(&mut self.buf[self.end..])
                .await
                .map_err(ReadError::Io)?;
            if n == 0 {
                if self.buf[self.start..self.end]
                    .iter()
                    .all(u8::is_ascii_whitespace)
                {
                    return Ok(None);
                }
                return Err(ReadError::Protocol(ProtocolError::Truncated));
            }
            self.end += n;
        }
    }
}

/// Runs until the connection ends; then closes `shared` with the reason.
pub(crate) async fn run<R: AsyncRead + Unpin>(
    mut reader: LineReader<R>,
    shared: Arc<Shared>,
    events: broadcast::Sender<Event>,
) {
    let reason = loop {
        let line = match reader.next_line().await {
            Ok(Some(line)) => line,
            Ok(None) => {
                tracing::debug!("QMP connection reached EOF");
                break Error::Disconnected;
            }
            Err(ReadError::Io(e)) => {
                tracing::warn!(error = %e, "QMP read failed");
                break Error::Disconnected;
            }
            Err(ReadError::Protocol(ProtocolError::Truncated)) => {
                tracing::warn!("QMP connection closed in the middle of a message");
                break Error::Disconnected;
            }
            Err(ReadError::Protocol(e)) => {
                tracing::warn!(error = %e, "QMP protocol error");
                break Error::Protocol(e);
            }
        };
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        match parse_message(line) {
            Ok(Message::Return { id, value }) => shared.complete(id.as_ref(), Ok(value)),
            Ok(Message::Error { id, class, desc }) => {
                shared.complete(id.as_ref(), Err(Error::Qmp { class, desc }))
            }
            Ok(Message::Event(event)) => {
                tracing::debug!(event = %event.name, "QMP event");
                // No subscribers is fine.
                let _ = events.send(event);
            }
            Ok(Message::Greeting(_)) => {
                tracing::warn!("QMP greeting received mid-stream");
                break Error::Protocol(ProtocolError::Unexpected("greeting"));
            }
            Err(e) => {
                tracing::warn!(error = %e, "QMP protocol error");
                break Error::Protocol(e);
            }
        }
    };
    shared.close(reason);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn lines_across_reads_and_limit() {
        let data: &[u8] = b"{\"a\":1}\r\n\n{\"b\":2}\nxyz";
        let mut r = LineReader::new(data, 64);
        assert_eq!(r.next_line().await.unwrap(), Some(&b"{\"a\":1}\r"[..]));
        assert_eq!(r.next_line().await.unwrap(), Some(&b""[..]));
        assert_eq!(r.next_line().await.unwrap(), Some(&b"{\"b\":2}"[..]));
        assert!(matches!(
            r.next_line().await,
            Err(ReadError::Protocol(ProtocolError::Truncated))
        ));

        let long = [b'x'; 100];
        let mut r = LineReader::new(&long[..], 64);
        assert!(matches!(
            r.next_line().await,
            Err(ReadError::Protocol(ProtocolError::TooLarge { limit: 64 }))
        ));
    }

    #[tokio::test]
    async fn long_line_grows_buffer() {
        let mut data = vec![b'y'; 20000];
        data.push(b'\n');
        let mut r = LineReader::new(&data[..], 1 << 20);
        assert_eq!(r.next_line().await.unwrap().map(<[u8]>::len), Some(20000));
        assert!(r.next_line().await.unwrap().is_none());
    }
}
